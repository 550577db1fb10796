"""Every description of a field violation the server writes fits whole, and
every parameter the web console refuses (BadParameter, its 400 answers).

A description is cut at MAX_DESCRIPTION_BYTES (the error travels in gRPC
trailers, which clients refuse past a few KiB), and what a cut loses is its
end: where the wording says what to do ("...the period has not ended; leave
it…", helper-196). The cut is for what the server does not write (a
library's error, what the caller sent); every text of the server's own is
walked here, from its source, with each value in it at its widest."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from multidict import MultiDict

import sealtrail_server
from sealtrail_server.console.parameters import BadParameter
from sealtrail_server.console.server import _count_request as count_request
from sealtrail_server.domain.errors import MAX_DESCRIPTION_BYTES

PACKAGE = Path(sealtrail_server.__file__).parent
# A value no module constant gives: a time (datetime.isoformat, with
# microseconds and an offset) or else a number, as wide as the largest
# int64 (a seq, a size).
WIDEST_TIME = "2026-12-05T12:30:18.123456+00:00"
WIDEST_VALUE = str(2**63 - 1)


def _renderings(node: ast.expr, module: ModuleType) -> list[str] | None:
    """Each text `node` may be, its values at their widest; None if it is
    not a text written in place."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        text = ""
        for part in node.values:
            if isinstance(part, ast.Constant):
                text += str(part.value)
                continue
            assert isinstance(part, ast.FormattedValue)
            source = ast.unparse(part.value)
            try:  # a module's constant (MAX_RECORD_BYTES) as it is
                text += format(eval(source, vars(module)))
            except Exception:
                timely = any(word in source for word in ("isoformat", "rfc3339", "moment"))
                text += WIDEST_TIME if timely else WIDEST_VALUE
        return [text]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _renderings(node.left, module), _renderings(node.right, module)
        if left is None or right is None:
            return None
        return [a + b for a in left for b in right]
    if isinstance(node, ast.IfExp):
        body, orelse = _renderings(node.body, module), _renderings(node.orelse, module)
        return None if body is None or orelse is None else body + orelse
    return None


def _violation_helpers(tree: ast.Module) -> set[str]:
    """The module's `fail` functions that make a FieldViolation of their
    arguments (others, guard's `_fail`, do something else)."""
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name in ("fail", "_fail")
        and any(
            isinstance(call, ast.Call) and ast.unparse(call.func) == "FieldViolation"
            for call in ast.walk(node)
        )
    }


def _descriptions(tree: ast.Module) -> Iterator[ast.expr]:
    """The expressions of `tree` that are a violation's description: passed
    to InvalidArgument.field, FieldViolation or a helper that makes one, or
    the text of a `..._problem`/`..._error` a description is taken from, or a
    `{"field": ..., "description": ...}` the console answers itself. (The
    sign-in's pages and the console's refusals of a host are not
    descriptions: HTML pages and `error` sentences for people, never cut.)"""
    helpers = _violation_helpers(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "BadParameter" and node.args:
            yield node.args[0]  # the console's 400: its `error`, the parameter named first
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            called = ast.unparse(node.func)
            if (
                called.endswith("InvalidArgument.field")
                or called == "FieldViolation"
                or called.split(".")[-1] in helpers
            ):
                yield node.args[1]
        elif isinstance(node, ast.Dict) and {"field", "description"} <= {
            key.value for key in node.keys if isinstance(key, ast.Constant)
        }:
            # The console's own field violations, written as the API's are
            # (/auth/exchange's `fields`), not through BadParameter.
            yield next(
                value
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant) and key.value == "description"
            )
        elif isinstance(node, ast.FunctionDef) and node.name.endswith(
            ("_problem", "_error", "problem")
        ):
            for returned in ast.walk(node):
                if isinstance(returned, ast.Return) and returned.value is not None:
                    yield returned.value
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id.endswith(("_error", "problem"))
            for target in node.targets
        ):
            yield node.value


def test_every_description_the_server_writes_fits_whole_within_the_cut() -> None:
    walked, too_long = 0, []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name.startswith("cli") or path.name == "config.py":
            continue  # the operator's terminal, not a caller's violations
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = list(_descriptions(tree))
        if not found:
            continue
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = importlib.import_module(name)
        for node in found:
            for text in _renderings(node, module) or []:
                walked += 1
                if len(text.encode()) > MAX_DESCRIPTION_BYTES:
                    where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
                    too_long.append(f"{where}: {len(text.encode())} bytes: {text}")
    assert walked > 100, walked  # the walk found the descriptions (159 when written)
    assert not too_long, "\n".join(too_long)


def test_an_unknown_grouping_of_the_consoles_counts_is_named_shortly() -> None:
    """/api/counts' answer to an unknown `group_by` listed every grouping,
    well past the bound; it names the value (cut) and the page that lists them."""
    for given in ("week", "x" * 5000):
        with pytest.raises(BadParameter) as refused:
            count_request(MultiDict({"group_by": given}), field="count")
        said = str(refused.value)
        assert said.startswith("count: group_by: unknown 'x") or "'week'" in said, said
        assert "docs/console.md" in said and refused.value.field == "count", said
        assert len(said.encode()) <= MAX_DESCRIPTION_BYTES, said


def test_an_unknown_measure_of_the_consoles_counts_is_named_shortly() -> None:
    """/api/counts' `measure` (and a search's announced `count`) refuses a
    value CountMeasure has not, naming it cut, within the bound."""
    for given, field in (("p95", ""), ("x" * 5000, "count")):
        with pytest.raises(BadParameter) as refused:
            count_request(MultiDict({"group_by": "action", "measure": given}), field=field)
        said = str(refused.value)
        assert refused.value.field == (field or "measure"), said
        assert "measure: unknown" in said and "docs/console.md" in said, said
        assert len(said.encode()) <= MAX_DESCRIPTION_BYTES, said
