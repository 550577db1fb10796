"""What the server says of an error the database gave: for its log, an
event's details, a dead letter or an answer.

PostgreSQL's error, as psycopg renders it whole (`str(error)`, a
traceback's last line), quotes the values it refused: `DETAIL: Failing row
contains (...)` is a refused row whole (an event's actor, addresses and
record with it), `Key (...)=(...)` a key's values, a COPY's `CONTEXT` its
line. None of that may leave the database by way of the server's log, where
erasure never reaches. `named(error)` keeps what tells an operator what
happened: the primary message, which names the relation and constraint,
and the SQLSTATE."""

from __future__ import annotations

import psycopg


def named(error: BaseException | None) -> str:
    """`error` as the log may say it: a database error by its primary message
    and SQLSTATE (`new row for relation "events_2026_05" violates check
    constraint "..." (SQLSTATE 23514)`), never its DETAIL or CONTEXT; an
    error of psycopg's own (the connection lost, which has no primary
    message) or any other exception as it is."""
    if error is None:
        return "no reason given"
    if not isinstance(error, psycopg.Error):
        return str(error)
    primary = error.diag.message_primary
    if primary is None:
        return str(error)
    return f"{primary} (SQLSTATE {error.sqlstate})" if error.sqlstate else primary
