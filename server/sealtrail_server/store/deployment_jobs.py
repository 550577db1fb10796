"""When each scheduled job of the deployment last ended (`deployment_jobs`), by
the database's clock: every process of a deployment reads the same time, and
no host's clock (a test's, or one set a year ahead) can put off the others'
passes (ADR 0048). The job's owner connection, holding the job's advisory
lock, reads and writes it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg


async def seconds_since_ended(conn: psycopg.AsyncConnection[Any], job: str) -> float | None:
    """Seconds since `job` last ended (negative if the database's clock went
    back since); None if it never has."""
    # The clock read outside the table's query: with Citus, where this table
    # is a reference table, a query of it may run on a worker, whose clock is
    # not the coordinator's that `note_ended` writes with (not tried on Citus).
    cursor = await conn.execute(
        "SELECT extract(epoch FROM clock_timestamp() - (SELECT last_ended_at"
        " FROM deployment_jobs WHERE name = %s))::float8",
        [job],
    )
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def database_time(conn: psycopg.AsyncConnection[Any]) -> datetime:
    """What the database's clock reads now (`clock_timestamp()`, whatever the
    transaction), read as seconds: a session's DateStyle other than ISO
    writes a time psycopg cannot read."""
    cursor = await conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
    row = await cursor.fetchone()
    assert row is not None
    return datetime.fromtimestamp(row[0], UTC)


async def note_ended(conn: psycopg.AsyncConnection[Any], job: str) -> None:
    """`job` ended now (a function in VALUES: with Citus, the coordinator's
    clock)."""
    await conn.execute(
        "INSERT INTO deployment_jobs (name, last_ended_at) VALUES (%s, clock_timestamp())"
        " ON CONFLICT (name) DO UPDATE SET last_ended_at = excluded.last_ended_at",
        [job],
    )
