"""No log line of the server says a database error whole.

PostgreSQL's error, as psycopg renders it (`str(error)`, `%s`), quotes the
values it refused: `DETAIL: Failing row contains (...)` is a refused row
whole (an event's actor, addresses and record; a token's digest), which the
server's log keeps where erasure never reaches. A line says it by
`store.db_errors.named` instead (primary message and SQLSTATE); a traceback
is cut by the log's formatters (telemetry/logs.py). This walks the server's
source for a logging call, inside an `except` that may catch a database
error (psycopg's, Exception, BaseException, a tuple or constant holding
one), that passes the caught error bare: as an argument, `str()`/`repr()`
of it, or in an f-string (CONTRIBUTING.md, "Database errors")."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import sealtrail_server

PACKAGE = Path(sealtrail_server.__file__).parent
_LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})
_BROAD = frozenset({"Exception", "BaseException"})


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


def _says_whole(argument: ast.expr, error: str) -> bool:
    """Whether `argument` renders the error named `error` whole."""
    if isinstance(argument, ast.Name):
        return argument.id == error
    if (
        isinstance(argument, ast.Call)
        and isinstance(argument.func, ast.Name)
        and argument.func.id in {"str", "repr", "detailed"}
    ):
        return any(_says_whole(each, error) for each in argument.args)
    if isinstance(argument, ast.JoinedStr):
        return any(
            isinstance(part, ast.FormattedValue) and _says_whole(part.value, error)
            for part in argument.values
        )
    if isinstance(argument, ast.BinOp):
        return _says_whole(argument.left, error) or _says_whole(argument.right, error)
    return False


def bare_database_errors_logged(source: str) -> Iterator[int]:
    """The line of each logging call in `source` that passes a database
    error it caught bare."""
    tree = ast.parse(source)
    constants, psycopg_names = _module_constants(tree), _from_psycopg(tree)
    for handler in ast.walk(tree):
        if not isinstance(handler, ast.ExceptHandler) or not handler.name:
            continue
        if not _may_be_a_database_error(handler.type, constants, psycopg_names):
            continue
        for statement in handler.body:
            for node in ast.walk(statement):
                if not isinstance(node, ast.Call) or not _is_a_logging_call(node):
                    continue
                said = [*node.args, *(k.value for k in node.keywords if k.arg != "exc_info")]
                if any(_says_whole(argument, handler.name) for argument in said):
                    yield node.lineno


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
"""
    assert list(bare_database_errors_logged(source)) == [8, 12, 14, 16]


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
    assert not found, "say them by store.db_errors.named(error):\n" + "\n".join(found)
