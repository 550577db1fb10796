"""Database spans: a psycopg cursor class that runs each statement (and each
COPY) in a CLIENT span named like `SELECT events`, with the statement's text
(Sealtrail's SQL is static or composed; values are never in it). Statements
run outside any recorded span (background tasks: the stream hub, the
checkpointer) start none: they would be traces of their own, and noise.

A statement that fails says so as OpenTelemetry's database conventions ask,
by its SQLSTATE (`db.response.status_code`, `error.type`) and an ERROR
status naming its error's class, never by the error's text: PostgreSQL's
quotes the values it refused (`Failing row contains (...)`, the whole row
and an event's record with it; `Key (...)=(...)`; a COPY's line), and a
tracing backend is no place for an event's contents, out of erasure's
reach."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import Any, Final

import psycopg
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
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


@contextmanager
def failures_by_class(span: Span) -> Iterator[None]:
    """An error escaping the block told on `span` by its SQLSTATE and class,
    never its text (see the module's docstring): for a span started with
    `record_exception=False, set_status_on_exception=False`, which would
    otherwise record it whole."""
    try:
        yield
    except Exception as error:  # as the SDK would, cancellations aside
        sqlstate = error.sqlstate if isinstance(error, psycopg.Error) else None
        if sqlstate:
            span.set_attribute("db.response.status_code", sqlstate)
        span.set_attribute("error.type", sqlstate or type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise


@contextmanager
def _statement_span(tracer: Tracer, text: str) -> Iterator[None]:
    """A CLIENT span for the statement `text`, current while it runs; its
    failure told by SQLSTATE and class (see the module's docstring)."""
    name, attributes = describe(text)
    with (
        tracer.start_as_current_span(
            name,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span,
        failures_by_class(span),
    ):
        yield


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
            with _statement_span(tracer, _text(query, self.connection)):
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
            with _statement_span(tracer, _text(statement, self.connection)):
                async with super().copy(statement, params, writer=writer) as copy:
                    yield copy

    return TracedCursor
