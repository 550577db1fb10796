"""The monthly partitions of events (ADR 0015): created months ahead, and
dropped once retention has emptied a past month of every event it removes
(ADR 0041). Both run as the tables' owner, in the retention pass."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import sql

from ..domain.retention import KEPT_FOR_GOOD

PARTITION_MONTHS_AHEAD: Final = 3
# The events no policy removes, as a LIKE pattern.
KEPT_FOR_GOOD_PATTERN: Final = KEPT_FOR_GOOD + "%"
_MONTHLY: Final = re.compile(r"events_(\d{4})_(\d{2})")

log = logging.getLogger(__name__)


# Records kept for good a month may hold to be retired: they are inserted again
# under an exclusive lock on `events`, which every statement waits for (about
# a second for this many). A pass records one per tenant it purges, so hourly
# passes leave ~720 a tenant a month, daily ones ~30. A month with more stays,
# said in the server's log. And the longest the move may hold the lock.
RETIRE_MAX_ROWS: Final = 50_000
_RETIRE_TIMEOUT: Final = "5s"

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
        next_month = await conn.execute(
            "SELECT to_regclass('events_' || to_char("
            "(coalesce(%s::timestamptz, now()) + interval '1 month') AT TIME ZONE 'UTC',"
            " 'YYYY_MM')) IS NULL",
            [now],
        )
        missing = await next_month.fetchone()
        # Next month's events would go to events_default, whose rows no month
        # can be created over: say so while there is time to act.
        level = logging.WARNING if missing and missing[0] else logging.INFO
        log.log(level, "partitions: events is busy; creating months ahead at the next pass")
        return 0
    return int(row[0]) if row else 0


async def retire_past_months(
    conn: psycopg.AsyncConnection[Any], *, now: datetime
) -> dict[str, int]:
    """Drop each monthly partition that ended more than a day before `now`
    and holds nothing but records kept for good (retention's own, which no
    policy removes); {name: rows kept} for each dropped. Those few rows move
    to `events_default` first, unchanged, in the drop's transaction: else one
    `retention.*` record would hold its month, and the disk it takes, for as
    long as the log lives (helper-58).

    `conn` is autocommit (VACUUM runs outside a transaction). Under the locks
    (`events`, then the month, the order every statement takes them in; a
    month whose locks are not free at once is left for the next pass) no row
    can arrive, and the month is read through its indexes only: VACUUM has
    just removed what retention deleted, so that is a few pages, where a scan
    of its heap would read every page the month ever had while every
    statement on `events` waits."""
    cursor = await conn.execute(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
    )
    retired: dict[str, int] = {}
    for (name,) in await cursor.fetchall():
        match = _MONTHLY.fullmatch(name)
        if match is None:
            continue  # events_default
        year, month = int(match[1]), int(match[2])
        ends = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        if ends > now - timedelta(days=1):
            continue
        table = sql.Identifier(name)
        # Most past months still hold events: the first one found says so, unlocked.
        if await _holds_events_not_kept(conn, table):
            continue
        await conn.execute(sql.SQL("VACUUM {}").format(table))
        kept = await _rows(conn, table)
        if kept > RETIRE_MAX_ROWS:
            log.warning(
                "partitions: %s holds %d records kept for good, more than the %d a pass moves"
                " under a lock on events: it stays (passes less often, such as daily with"
                " SEALTRAIL_RETENTION_INTERVAL=86400, leave fewer)",
                name,
                kept,
                RETIRE_MAX_ROWS,
            )
            continue
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('lock_timeout', %s, true)", [_LOCK_TIMEOUT])
                await conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)", [_RETIRE_TIMEOUT]
                )
                await conn.execute("SET LOCAL enable_seqscan = off")
                await conn.execute(
                    sql.SQL("LOCK TABLE ONLY events, {} IN ACCESS EXCLUSIVE MODE").format(table)
                )
                if await _holds_events_not_kept(conn, table):
                    continue
                retired[name] = await _move_kept_and_drop(conn, table)
        except psycopg.errors.LockNotAvailable:
            log.info("partitions: %s is busy; dropping it at the next pass", name)
        except psycopg.errors.QueryCanceled:
            log.warning("partitions: moving what %s keeps took too long; it stays", name)
    return retired


async def _rows(conn: psycopg.AsyncConnection[Any], table: sql.Identifier) -> int:
    """The month's rows, counted through an index (it was just vacuumed)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        cursor = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _holds_events_not_kept(conn: psycopg.AsyncConnection[Any], table: sql.Identifier) -> bool:
    cursor = await conn.execute(
        sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE action NOT LIKE %s)").format(table),
        [KEPT_FOR_GOOD_PATTERN],
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def _move_kept_and_drop(conn: psycopg.AsyncConnection[Any], table: sql.Identifier) -> int:
    """The month's rows into `events_default` (they are in no month's range
    once it is detached), then the month dropped; the rows moved."""
    await conn.execute(sql.SQL("ALTER TABLE events DETACH PARTITION {}").format(table))
    # Every stored column, in the table's order; generated ones are computed again.
    cursor = await conn.execute(
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = 'events'::regclass"
        " AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
    )
    columns = sql.SQL(", ").join(sql.Identifier(str(row[0])) for row in await cursor.fetchall())
    moved = await conn.execute(
        sql.SQL("INSERT INTO events ({columns}) SELECT {columns} FROM {month}").format(
            columns=columns, month=table
        )
    )
    await conn.execute(sql.SQL("DROP TABLE {}").format(table))
    return moved.rowcount
