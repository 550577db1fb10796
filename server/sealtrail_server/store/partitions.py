"""The monthly partitions of events (ADR 0015): created months ahead, and
dropped once a past month holds no event (retention emptied it). Both run as
the tables' owner, in the retention pass."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import sql

PARTITION_MONTHS_AHEAD: Final = 3
_MONTHLY: Final = re.compile(r"events_(\d{4})_(\d{2})")

log = logging.getLogger(__name__)


# The longest a pass waits for a table lock. Statements queue behind a lock
# request, so a pass that waited behind a long reader (an Export, VerifyLog)
# would stall every Record meanwhile: it gives up instead, until the next pass.
_LOCK_TIMEOUT: Final = "200ms"


async def create_ahead(conn: psycopg.AsyncConnection[Any], *, now: datetime | None) -> int:
    """Create the missing partitions from this month to PARTITION_MONTHS_AHEAD
    months ahead of `now` (None: the database's clock); how many were created.
    0 as well if `events` could not be locked at once (the next pass tries)."""
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('lock_timeout', %s, true)", [_LOCK_TIMEOUT])
            cursor = await conn.execute(
                "SELECT sealtrail_create_event_partitions(t, t + make_interval(months => %s))"
                " FROM coalesce(%s::timestamptz, now()) AS t",
                [PARTITION_MONTHS_AHEAD, now],
            )
            row = await cursor.fetchone()
    except psycopg.errors.LockNotAvailable:
        log.info("partitions: events is busy; creating months ahead at the next pass")
        return 0
    return int(row[0]) if row else 0


async def drop_empty(conn: psycopg.AsyncConnection[Any], *, now: datetime) -> list[str]:
    """Drop each monthly partition that ended more than a day before `now`
    and holds no row; the names dropped. Locked first (`events`, then the
    month, the order every statement takes them in), so no row can arrive
    between the check and the drop; a month whose locks are not free at once
    is left for the next pass."""
    cursor = await conn.execute(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
    )
    dropped = []
    for (name,) in await cursor.fetchall():
        match = _MONTHLY.fullmatch(name)
        if match is None:
            continue  # events_default
        year, month = int(match[1]), int(match[2])
        ends = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        if ends > now - timedelta(days=1):
            continue
        table = sql.Identifier(name)
        if not await _empty(conn, table):  # most past months still hold rows: no lock
            continue
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('lock_timeout', %s, true)", [_LOCK_TIMEOUT])
                await conn.execute(
                    sql.SQL("LOCK TABLE ONLY events, {} IN ACCESS EXCLUSIVE MODE").format(table)
                )
                if await _empty(conn, table):
                    await conn.execute(sql.SQL("DROP TABLE {}").format(table))
                    dropped.append(name)
        except psycopg.errors.LockNotAvailable:
            log.info("partitions: %s is busy; dropping it at the next pass", name)
    return dropped


async def _empty(conn: psycopg.AsyncConnection[Any], table: sql.Identifier) -> bool:
    cursor = await conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(table))
    row = await cursor.fetchone()
    return bool(row and row[0])
