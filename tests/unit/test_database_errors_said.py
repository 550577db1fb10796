"""No log line of the server says a database error whole.

PostgreSQL's error, as psycopg renders it (`str(error)`, `%s`), quotes the
values it refused: `DETAIL: Failing row contains (...)` is a refused row
whole (an event's actor, addresses and record; a token's digest), which the
server's log keeps where erasure never reaches. A line says it by
`store.db_errors.named` instead (primary message and SQLSTATE); a traceback
is cut by the log's formatters (telemetry/logs.py). This walks the server's
source for a logging or span call (`set_status`, `record_exception`, ...)
that says an error an `except` caught whole, where that `except` may catch
a database error (psycopg's, Exception, BaseException, an exception group,
a tuple or constant holding one): the error itself as an argument,
`str()`/`repr()` of it, in an f-string; or what was made to hold it or its
text first, later in the function (`last = error`, `for other in
group.exceptions`, `failures.append(error)`), or anywhere in the module for
an attribute of `self` (`self.last_error = str(error)`); or a span that
records an error escaping it whole, OpenTelemetry's default
(`start_as_current_span`, `use_span`, a `start_span` used by `with`, without
`record_exception=False, set_status_on_exception=False`)
(CONTRIBUTING.md, "Database errors")."""

from __future__ import annotations

import ast
import asyncio
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

import sealtrail_server
from sealtrail_server.api.servicer import _together
from tests.conftest import logged

PACKAGE = Path(sealtrail_server.__file__).parent
_LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})
_BROAD = frozenset({"Exception", "BaseException", "ExceptionGroup", "BaseExceptionGroup"})


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value
        elif (
            isinstance(node, ast.AnnAssign)
            and node.value is not None
            and isinstance(node.target, ast.Name)
        ):
            found[node.target.id] = node.value
    return found


def _from_psycopg(tree: ast.Module) -> set[str]:
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("psycopg")
        for alias in node.names
    }


def _may_be_a_database_error(
    caught: ast.expr | None, constants: dict[str, ast.expr], psycopg_names: set[str], depth: int = 0
) -> bool:
    if caught is None:  # a bare except
        return True
    if depth > 5:
        return False
    if isinstance(caught, ast.Tuple):
        return any(
            _may_be_a_database_error(each, constants, psycopg_names, depth + 1)
            for each in caught.elts
        )
    if isinstance(caught, ast.Starred):
        return _may_be_a_database_error(caught.value, constants, psycopg_names, depth + 1)
    if isinstance(caught, ast.Name):
        if caught.id in _BROAD or caught.id in psycopg_names:
            return True
        held = constants.get(caught.id)
        return held is not None and _may_be_a_database_error(
            held, constants, psycopg_names, depth + 1
        )
    if isinstance(caught, ast.Attribute):
        root: ast.expr = caught
        while isinstance(root, ast.Attribute):
            root = root.value
        return isinstance(root, ast.Name) and root.id == "psycopg"
    return False


def _is_a_logging_call(node: ast.Call) -> bool:
    called = node.func
    if not isinstance(called, ast.Attribute) or called.attr not in _LOG_METHODS:
        return False
    receiver = called.value
    name = (
        receiver.id
        if isinstance(receiver, ast.Name)
        else receiver.attr
        if isinstance(receiver, ast.Attribute)
        else ""
    )
    return "log" in name.lower()


# What holds an error whole, or its text: a group's members, its arguments,
# what it was raised from.
_HOLDING = frozenset({"exceptions", "args", "__cause__", "__context__"})
_SPAN_METHODS = frozenset(
    {"set_attribute", "set_attributes", "add_event", "record_exception", "set_status"}
)
_COLLECTING = frozenset({"append", "extend", "add", "insert", "appendleft"})


@dataclass(frozen=True)
class _Holders:
    """What holds a database error whole, or its text: `names` (the caught
    error's, in its handler; those assigned from it, in its function) and
    `kept`, the attributes of `self` assigned from it (anywhere in the module)."""

    names: frozenset[str]
    kept: frozenset[str]

    def more(self, names: set[str] | frozenset[str]) -> _Holders:
        return _Holders(self.names | names, self.kept)


def _says_whole(argument: ast.expr, held: _Holders) -> bool:
    """Whether `argument` renders an error `held` holds whole, or its text."""
    match argument:
        case ast.Name(id=name):
            return name in held.names
        case ast.Attribute(value=ast.Name(id="self"), attr=attr) if attr in held.kept:
            return True
        case ast.Attribute(value=value, attr=attr):
            return attr in _HOLDING and _says_whole(value, held)
        case ast.Subscript(value=value) | ast.Starred(value=value):
            return _says_whole(value, held)
        case ast.Call(func=ast.Name(id="str" | "repr" | "detailed" | "format"), args=args):
            return any(_says_whole(each, held) for each in args)
        case ast.Call(func=ast.Attribute(attr="format" | "join"), args=args, keywords=keywords):
            return any(_says_whole(each, held) for each in [*args, *(k.value for k in keywords)])
        case ast.JoinedStr(values=values):
            return any(
                isinstance(part, ast.FormattedValue) and _says_whole(part.value, held)
                for part in values
            )
        case ast.BinOp(left=left, right=right):
            return _says_whole(left, held) or _says_whole(right, held)
        case ast.IfExp(body=body, orelse=orelse):
            return _says_whole(body, held) or _says_whole(orelse, held)
        case ast.BoolOp(values=values):  # `error.diag.context or error`
            return any(_says_whole(each, held) for each in values)
        case ast.Tuple(elts=elts) | ast.List(elts=elts) | ast.Set(elts=elts):
            return any(_says_whole(each, held) for each in elts)
        case ast.Dict(values=values):
            return any(_says_whole(each, held) for each in values)
        case (
            ast.ListComp(elt=elt, generators=generators)
            | ast.GeneratorExp(elt=elt, generators=generators)
            | ast.SetComp(elt=elt, generators=generators)
        ):
            bound = {
                name
                for each in generators
                if _says_whole(each.iter, held)
                for name in _target_names(each.target)
            }
            return _says_whole(elt, held.more(bound))
    return False


def _target_names(target: ast.expr) -> set[str]:
    return {node.id for node in ast.walk(target) if isinstance(node, ast.Name)}


def _assigned(node: ast.AST, held: _Holders) -> tuple[set[str], set[str]]:
    """The names and `self` attributes `node` assigns an error `held` holds
    to, or its text: `last = error`, `self.last_error = str(error)`,
    `for other in group.exceptions`, `failures.append(error)`."""
    targets: list[ast.expr] = []
    match node:
        case ast.Assign(targets=assigned, value=value) if _says_whole(value, held):
            targets = assigned
        case (
            ast.AnnAssign(target=target, value=value)
            | ast.AugAssign(target=target, value=value)
            | ast.NamedExpr(target=target, value=value)
        ) if value is not None and _says_whole(value, held):
            targets = [target]
        case ast.For(target=target, iter=value) | ast.AsyncFor(target=target, iter=value) if (
            _says_whole(value, held)
        ):
            targets = [target]
        case ast.Call(func=ast.Attribute(value=target, attr=method), args=args) if (
            method in _COLLECTING and any(_says_whole(each, held) for each in args)
        ):
            targets = [target]
    names: set[str] = set()
    kept: set[str] = set()
    for target in targets:
        _bind(target, names, kept)
    return names, kept


def _bind(target: ast.expr, names: set[str], kept: set[str]) -> None:
    """What assigning to `target` (or adding to it) makes hold the value:
    a name, an attribute of `self`, the container of an item."""
    match target:
        case ast.Name(id=name):
            names.add(name)
        case ast.Attribute(value=ast.Name(id="self"), attr=attr):
            kept.add(attr)
        case ast.Subscript(value=value) | ast.Starred(value=value):
            _bind(value, names, kept)
        case ast.Tuple(elts=elts) | ast.List(elts=elts):
            for each in elts:
                _bind(each, names, kept)


def _is_a_span_call(node: ast.Call) -> bool:
    called = node.func
    if isinstance(called, ast.Name):
        return called.id == "Status"
    return isinstance(called, ast.Attribute) and (
        called.attr in _SPAN_METHODS or called.attr == "Status"
    )


def _says(node: ast.Call) -> list[ast.expr]:
    """What a logging or span call writes (a traceback, `exc_info`, aside)."""
    return [*node.args, *(k.value for k in node.keywords if k.arg != "exc_info")]


def _scopes(tree: ast.Module) -> list[ast.AST]:
    return [
        tree,
        *(
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        ),
    ]


def _own_nodes(scope: ast.AST) -> list[ast.AST]:
    """The nodes of `scope`, not those of the functions inside it."""
    found: list[ast.AST] = []
    left = list(ast.iter_child_nodes(scope))
    while left:
        node = left.pop()
        found.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            left.extend(ast.iter_child_nodes(node))
    return found


def _whole_database_errors(source: str) -> set[int]:
    tree = ast.parse(source)
    constants, psycopg_names = _module_constants(tree), _from_psycopg(tree)
    scopes = [(scope, _own_nodes(scope)) for scope in _scopes(tree)]
    kept: set[str] = set()
    found: set[int] = set()
    while True:  # until no more is kept in `self`: each pass may keep more
        kept_before = set(kept)
        found = set()
        for _, nodes in scopes:
            handlers = [
                (node, {id(each) for statement in node.body for each in ast.walk(statement)})
                for node in nodes
                if isinstance(node, ast.ExceptHandler)
                and node.name
                and _may_be_a_database_error(node.type, constants, psycopg_names)
            ]
            derived: set[str] = set()
            while True:  # until no more names are assigned from them
                before = set(derived)
                for node in nodes:
                    held = _Holders(frozenset(derived), frozenset(kept))
                    for handler, inside in handlers:
                        if id(node) in inside:
                            held = held.more({str(handler.name)})
                    names, attributes = _assigned(node, held)
                    derived |= names
                    kept |= attributes
                if derived == before:
                    break
            for node in nodes:
                if not isinstance(node, ast.Call):
                    continue
                if not (_is_a_logging_call(node) or _is_a_span_call(node)):
                    continue
                held = _Holders(frozenset(derived), frozenset(kept))
                for handler, inside in handlers:
                    if id(node) in inside:
                        held = held.more({str(handler.name)})
                if any(_says_whole(argument, held) for argument in _says(node)):
                    found.add(node.lineno)
        if kept == kept_before:
            return found


# Each records an error escaping its `with` block on the span, whole (an
# `exception` event with its message and traceback, and a status described
# `f"{type}: {error}"`), unless told not to; `start_span`'s span only when
# used as a context manager itself.
_RECORDING_ON_EXIT = frozenset({"start_as_current_span", "use_span"})
_RECORDING_FLAGS = ("record_exception", "set_status_on_exception")


def _records_what_escapes(node: ast.Call) -> bool:
    """Whether the span `node` starts or makes current records an error
    escaping it whole: `record_exception` or `set_status_on_exception` left
    at its default (True) or not passed as a literal False."""
    off = {
        k.arg for k in node.keywords if isinstance(k.value, ast.Constant) and k.value.value is False
    }
    return not off.issuperset(_RECORDING_FLAGS)


def _spans_recording_escapes(tree: ast.Module) -> set[int]:
    """The lines of span contexts that record an error escaping them whole:
    a database error raised inside says its DETAIL on the span, as if
    `span.record_exception(error)` had been written."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _records_what_escapes(node):
            called = node.func
            name = (
                called.attr
                if isinstance(called, ast.Attribute)
                else called.id
                if isinstance(called, ast.Name)
                else ""
            )
            if name in _RECORDING_ON_EXIT:
                found.add(node.lineno)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                started = item.context_expr
                if (
                    isinstance(started, ast.Call)
                    and isinstance(started.func, ast.Attribute)
                    and started.func.attr == "start_span"
                    and _records_what_escapes(started)
                ):
                    found.add(started.lineno)
    return found


def bare_database_errors_logged(source: str) -> Iterator[int]:
    """The line of each logging or span call in `source` that says a
    database error it caught whole: the error itself, or what holds it or
    its text (a name or an attribute of `self` assigned from it)."""
    yield from sorted(_whole_database_errors(source) | _spans_recording_escapes(ast.parse(source)))


def _handlers_walked(source: str) -> int:
    tree = ast.parse(source)
    constants, psycopg_names = _module_constants(tree), _from_psycopg(tree)
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.ExceptHandler)
        and node.name
        and _may_be_a_database_error(node.type, constants, psycopg_names)
    )


def test_the_sweep_finds_a_database_error_logged_whole() -> None:
    """The sweep itself: each way of saying the error whole is found, and
    `named(error)`, an error it cannot catch, or `exc_info` are not."""
    source = """
import psycopg
from psycopg.errors import CheckViolation
_REFUSED = (psycopg.errors.UniqueViolation, ValueError)
try:
    pass
except psycopg.Error as error:
    log.warning("refused: %s", error)                     # 8
    log.warning("refused: %s", named(error))
    log.error("refused", exc_info=error)
except CheckViolation as refused:
    self._log.error(f"refused: {refused}")                # 12
except _REFUSED as error:
    logger.info("refused: %s", str(error))                # 14
except (OSError, Exception) as error:
    log.warning("refused: %r", error)                     # 16
except KeyError as error:
    log.warning("unknown: %s", error)

def later(self):
    last = None
    for attempt in range(3):
        try:
            pass
        except psycopg.OperationalError as error:
            last = error
            why = f"attempt {attempt}: {named(error)}"
            self.last_error = str(error)
            failures.append(error)
        except KeyError as error:
            log.warning("unknown: %s", error)                 # caught by no sweep
    log.warning("gave up: %s", last)                          # 32
    said = "; ".join(str(each) for each in failures)
    log.warning("each: %s", said)                             # 34
    log.warning("why: %s", why)
    span.set_status(Status(StatusCode.ERROR, last))           # 36

def elsewhere(self):
    self._log.error("still failing: %s", self.last_error)    # 39
    error = "a text of its own"
    log.warning("%s", error)

async def together():
    try:
        pass
    except BaseExceptionGroup as failed:
        for other in failed.exceptions[1:]:
            log.warning("also failed: %r", other)             # 48
            log.warning("also failed: %s", named(other))
        span.record_exception(failed.exceptions[0])           # 50
    except psycopg.errors.LockNotAvailable as error:
        log.warning("waited: %s", error.diag.context or error)  # 52
        log.warning("waited: %s", error.diag.context and named(error))
"""
    assert list(bare_database_errors_logged(source)) == [
        *(8, 12, 14, 16, 32, 34, 36, 39, 48, 50, 52)
    ]


def test_the_sweep_finds_a_span_recording_what_escapes_it() -> None:
    """A span that records an error escaping it (OpenTelemetry's default)
    says a database error raised inside whole, though no line names it:
    `start_as_current_span`, `use_span`, a `start_span` used by `with`,
    unless both `record_exception` and `set_status_on_exception` are False."""
    source = """
with tracer.start_as_current_span("commit") as span:                       # 2
    pass
with tracer.start_as_current_span("commit", record_exception=False):       # 4
    pass
with tracer.start_as_current_span(
    "commit", record_exception=False, set_status_on_exception=False
):
    pass
with trace.use_span(span, end_on_exit=True):                               # 10
    pass
with use_span(span, record_exception=False, set_status_on_exception=False):
    pass
with tracer.start_span("read"):                                            # 14
    pass
span = tracer.start_span("read")
with tracer.start_span("read", record_exception=False, set_status_on_exception=False):
    pass
"""
    assert list(bare_database_errors_logged(source)) == [2, 4, 10, 14]


def test_no_log_line_of_the_server_says_a_database_error_whole() -> None:
    walked, found = 0, []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        source = path.read_text(encoding="utf-8")
        walked += _handlers_walked(source)
        found += [
            f"{path.relative_to(PACKAGE)}:{line}" for line in bare_database_errors_logged(source)
        ]
    assert walked > 30, walked  # the walk found the handlers (46 when written)
    assert not found, (
        "say them by store.db_errors.named(error), or a span's failure by its class "
        "(store/traced.py, span_failed):\n" + "\n".join(found)
    )


async def test_a_second_failure_of_a_query_is_logged_without_its_values(
    sql: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A query's first page is read while its own record is written; when
    both failed, the second failure was logged by `%r`, the database's error
    whole: its DETAIL, the values it refused, in the server's log. It is
    said by its primary message and SQLSTATE; the first is raised as it is."""
    secret = f"secret-{uuid.uuid4()}"
    sql.execute("CREATE TEMP TABLE refusing (k text PRIMARY KEY)")
    sql.execute("INSERT INTO refusing VALUES (%s)", [secret])
    refused: list[psycopg.Error] = []
    for _ in range(2):
        with pytest.raises(psycopg.errors.UniqueViolation) as raised:
            sql.execute("INSERT INTO refusing VALUES (%s)", [secret])
        refused.append(raised.value)
    both = asyncio.Event()

    async def failing(error: psycopg.Error) -> None:
        await both.wait()  # both wake at once, and fail before either is cancelled
        raise error

    async def fail_both() -> None:
        await asyncio.sleep(0)
        both.set()
        await _together(failing(refused[0]), failing(refused[1]))

    with caplog.at_level(logging.WARNING), pytest.raises(psycopg.errors.UniqueViolation) as first:
        await fail_both()
    assert first.value is refused[0]
    [also] = [
        r.getMessage()
        for r in logged(caplog, by="sealtrail_server.api.servicer")
        if "also failed" in r.getMessage()
    ]
    assert secret not in also and "DETAIL" not in also, also
    assert "UniqueViolation" in also and "(SQLSTATE 23505)" in also, also
