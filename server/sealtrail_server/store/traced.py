"""Database spans: a psycopg cursor class that runs each statement (and each
COPY) in a CLIENT span named like `SELECT events`, with the statement's text
(Sealtrail's SQL is static or composed; values are never in it). Statements
run outside any recorded span (background tasks: the stream hub, the
checkpointer) start none: they would be traces of their own, and noise."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, Final

import psycopg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer
from psycopg import sql

_OPERATION: Final = re.compile(r"\s*(\w+)")
# A statement of common table expressions is named for its first data change
# and the table it changes (`WITH updated AS (UPDATE chain_heads ...` is
# `UPDATE chain_heads`; a row lock, `FOR UPDATE`, is none), else as a query.
_DATA_CHANGE: Final = re.compile(
    r'\b(INSERT\s+INTO|(?<!FOR\s)(?<!KEY\s)UPDATE|DELETE\s+FROM)\s+"?([a-z_][a-z0-9_]*)\b', re.I
)
# A table's name, bare or quoted (as sql.Identifier writes it). A name called
# after FROM is a function's (`extract(epoch FROM clock_timestamp() ...)`,
# `FROM unnest(...)`); after INTO or COPY, a column list may follow.
_TARGET: Final = re.compile(
    r'\b(?:(?:FROM|JOIN)\s+"?([a-z_][a-z0-9_]*)\b(?!"?\s*\()'
    r'|(?:INTO|UPDATE|COPY)\s+"?([a-z_][a-z0-9_]*)\b)',
    re.I,
)
_NOT_TABLES: Final = frozenset({"stdin", "stdout", "unnest", "lateral", "select"})


@lru_cache(maxsize=512)
def describe(text: str) -> tuple[str, dict[str, str]]:
    """A statement's span name and attributes, from its text."""
    match = _OPERATION.match(text)
    operation = match.group(1).upper() if match else "SQL"
    table = None
    if operation == "WITH":
        change = _DATA_CHANGE.search(text)
        if change is None:
            operation = "SELECT"
        else:
            operation, table = change.group(1).split()[0].upper(), change.group(2).lower()
    if table is None:
        targets = (found[found.lastindex or 0].lower() for found in _TARGET.finditer(text))
        table = next((name for name in targets if name not in _NOT_TABLES), None)
    attributes = {
        "db.system.name": "postgresql",
        "db.operation.name": operation,
        "db.query.text": text,
    }
    if table is None:
        return operation, attributes
    attributes["db.collection.name"] = table
    return f"{operation} {table}", attributes


def _text(query: Any, conn: psycopg.AsyncConnection[Any]) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode(errors="replace")
    if isinstance(query, sql.Composable):
        return query.as_string(conn)
    return str(query)


def traced_cursor_class(tracer: Tracer) -> type[psycopg.AsyncCursor[Any]]:
    """An AsyncCursor class whose statements are spans of `tracer`, for a
    connection's `cursor_factory`."""

    class TracedCursor(psycopg.AsyncCursor[Any]):
        async def execute(
            self,
            query: Any,
            params: Any = None,
            *,
            prepare: bool | None = None,
            binary: bool | None = None,
        ) -> TracedCursor:
            if not trace.get_current_span().is_recording():
                await super().execute(query, params, prepare=prepare, binary=binary)
                return self
            name, attributes = describe(_text(query, self.connection))
            with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
                await super().execute(query, params, prepare=prepare, binary=binary)
            return self

        @asynccontextmanager
        async def copy(
            self, statement: Any, params: Any = None, *, writer: Any = None
        ) -> AsyncIterator[psycopg.AsyncCopy]:
            if not trace.get_current_span().is_recording():
                async with super().copy(statement, params, writer=writer) as copy:
                    yield copy
                return
            name, attributes = describe(_text(statement, self.connection))
            with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
                async with super().copy(statement, params, writer=writer) as copy:
                    yield copy

    return TracedCursor
