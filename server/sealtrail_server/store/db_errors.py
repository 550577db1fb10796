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

from typing import Final

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


# What the database answers a statement of the service's when the deployment
# is not as the migrations made it, which an operator mends with no release of
# the server, and the health probe checks (store/database.py, `_PROBE`): a
# privilege of the service's roles revoked, or either role from its login
# (42501, insufficient_privilege; a row-level security policy dropped says
# so too), a table or column the migrations made and grant them dropped
# (42P01, 42703). Answered INTERNAL, as a bug, clients did not retry, until
# the probe took the database for down (helper-397). Not an undefined
# function or any other error of a statement's text (42883, 42601): those the
# probe does not check, and a server whose statements name what its schema
# never had is a bug, INTERNAL as ever.
_DEPLOYMENT_REFUSALS: Final = (
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
)


def refuses_the_deployment(error: BaseException) -> bool:
    """Whether `error` is the database refusing the service's roles what the
    migrations grant them (`_DEPLOYMENT_REFUSALS`)."""
    return isinstance(error, _DEPLOYMENT_REFUSALS)
