"""The monthly partitions of events (ADR 0015): created months ahead, and
dropped once a past month holds no event (retention emptied it). Both run as
the tables' owner, in the retention pass."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import sql

PARTITION_MONTHS_AHEAD: Final = 3
_MONTHLY: Final = re.compile(r"events_(\d{4})_(\d{2})")


async def create_ahead(conn: psycopg.AsyncConnection[Any], *, now: datetime | None) -> int:
    """Create the missing partitions from this month to PARTITION_MONTHS_AHEAD
    months ahead of `now` (None: the database's clock); how many were created."""
    cursor = await conn.execute(
        "SELECT sealtrail_create_event_partitions(t, t + make_interval(months => %s))"
        " FROM coalesce(%s::timestamptz, now()) AS t",
        [PARTITION_MONTHS_AHEAD, now],
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def drop_empty(conn: psycopg.AsyncConnection[Any], *, now: datetime) -> list[str]:
    """Drop each monthly partition that ended more than a day before `now`
    and holds no row; the names dropped. Locked first, so no row can arrive
    between the check and the drop."""
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
        async with conn.transaction():
            await conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
            empty = await conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(table))
            row = await empty.fetchone()
            if row and row[0]:
                await conn.execute(sql.SQL("DROP TABLE {}").format(table))
                dropped.append(name)
    return dropped
