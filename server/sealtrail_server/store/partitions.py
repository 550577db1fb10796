"""The monthly partitions of events (ADR 0015): created months ahead (over
any rows events_default took of them meanwhile, ADR 0049), and dropped once
retention has emptied a past month of every event it removes (ADR 0041).
Both run as the tables' owner, in the retention pass."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Final

import psycopg
from psycopg import sql

from ..domain.retention import KEPT_FOR_GOOD
from .db_errors import named

PARTITION_MONTHS_AHEAD: Final = 3
# The events no policy removes, as a LIKE pattern.
KEPT_FOR_GOOD_PATTERN: Final = KEPT_FOR_GOOD + "%"
_MONTHLY: Final = re.compile(r"events_(\d{4})_(\d{2})")

# events_default's CHECK that it holds no row of the months about to be
# created (ADR 0047): PostgreSQL then creates them without scanning it under
# the lock on events. It lives from just before their creation to its commit.
OUTSIDE_MONTHS: Final = "events_default_outside_months"
# A month is named in it only while its start is further ahead than this: no
# row can be received in it before then, and a check left behind by a failed
# creation is dropped in time for the month's rows to land in events_default.
_NAMED_AHEAD: Final = timedelta(days=1)

log = logging.getLogger(__name__)


# Rows a pass moves between a month and events_default: they are inserted
# again under an exclusive lock on `events`, which every statement waits for
# (about a second for this many). A month retired moves the records kept for
# good it holds: a pass records one per tenant it purges, and a deployment
# passes once an interval (ADR 0048): daily passes, the default, leave ~30 a
# tenant a month, hourly ones ~720. A month created moves in what
# events_default took of it while it was missing (ADR 0049). Past this, the
# month stays as it is, said in the server's log. And the longest any of the
# move's statements may hold the lock.
MOVE_MAX_ROWS: Final = 50_000
_MOVE_TIMEOUT: Final = "5s"

# What sealtrail_create_event_partitions (migration 0020) writes a month's
# bounds in: it formats them as text, which PostgreSQL then reads back. In
# another DateStyle ('SQL', 'Postgres', 'German') a time is written with its
# zone's abbreviation, and read back by PostgreSQL's own table of them: India's
# IST as Israel's, 3.5 hours off. The months then started and ended at 03:30
# UTC, and a month created later in ISO overlapped the one before it: its
# creation failed, at every start and every pass.
PARTITION_BOUNDS_DATESTYLE: Final = "ISO"

# The longest a pass waits for a table lock. Statements queue behind a lock
# request, so a pass that waited behind a long reader (an Export, VerifyLog)
# would stall every Record meanwhile: it gives up instead, until the next pass.
_LOCK_TIMEOUT: Final = "200ms"
# The longest the check's validation waits for its lock, which stops no read
# or write. A VACUUM or ANALYZE of events_default (autovacuum's gives way
# within a second, unless it prevents wraparound) or another VALIDATE may hold
# it: the months are then created with the scan.
_VALIDATE_LOCK_TIMEOUT: Final = "5s"

# Sessions creating the months take turns, under this advisory lock (the
# database's, for as long as one creates them): a start, under the
# migrations' lock, and another process's upkeep, under the job's, both
# found them missing, and the one behind met the other's locks, or its
# dropped check, and said at WARNING that events was busy or that
# events_default held rows of the months, though the other had just created
# them. The one behind now waits, up to _CREATION_WAIT, and finds them there.
_CREATION_LOCK: Final = 0x7365616C6D6F6E74
_CREATION_WAIT: Final = "10s"


async def create_ahead(conn: psycopg.AsyncConnection[Any], *, now: datetime | None) -> int:
    """Create the missing partitions from this month to PARTITION_MONTHS_AHEAD
    months ahead of `now` (None: the database's clock); how many were created.
    0 as well if `events` could not be locked at once, or another session was
    creating months for longer than _CREATION_WAIT (the next pass tries)."""
    if now is None:
        # As seconds: a session's DateStyle other than ISO writes a time that
        # psycopg cannot read.
        cursor = await conn.execute("SELECT extract(epoch FROM now())::float8")
        row = await cursor.fetchone()
        assert row is not None
        now = datetime.fromtimestamp(row[0], UTC)
    now = now.astimezone(UTC)
    this_month = datetime(now.year, now.month, 1, tzinfo=UTC)
    wanted = [_months_after(this_month, n) for n in range(PARTITION_MONTHS_AHEAD + 1)]
    if not await _missing(conn, wanted):
        return 0
    if not await _take_the_creation_lock(conn):
        level = logging.WARNING if wanted[1] in await _missing(conn, wanted) else logging.INFO
        log.log(
            level,
            "partitions: another session has been creating months for %s; creating months"
            " ahead at the next pass",
            _CREATION_WAIT,
        )
        return 0
    try:
        # Created by the session this one waited for, as a rule.
        if not (missing := await _missing(conn, wanted)):
            log.debug("partitions: the months ahead were created by another session meanwhile")
            return 0
        return await _create(conn, now=now, wanted=wanted, missing=missing)
    finally:
        if not conn.closed:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [_CREATION_LOCK])


async def _missing(conn: psycopg.AsyncConnection[Any], wanted: list[datetime]) -> list[datetime]:
    """Which of the months `wanted` have no partition."""
    existing = set((await _monthly_partitions(conn)).values())
    return [month for month in wanted if month not in existing]


async def _take_the_creation_lock(conn: psycopg.AsyncConnection[Any]) -> bool:
    """The lock of the months' creation taken, for the session, within
    _CREATION_WAIT; False if another session held it all that time."""
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('lock_timeout', %s, true)", [_CREATION_WAIT])
            await conn.execute("SELECT pg_advisory_lock(%s)", [_CREATION_LOCK])
    except psycopg.errors.LockNotAvailable:
        return False
    return True


async def _create(
    conn: psycopg.AsyncConnection[Any],
    *,
    now: datetime,
    wanted: list[datetime],
    missing: list[datetime],
) -> int:
    """`create_ahead` of the months `missing` of those `wanted` (this month
    first), holding the creation's lock."""
    this_month = wanted[0]
    # What events_default took of them already (a clock ahead): no check can
    # name such a month, and none can be created over its rows but by moving
    # them in (ADR 0049). None if uncounted: every month is tried as before.
    occupied = await _occupied_months(conn, missing)
    apart = set(occupied or ())
    if ahead := [m for m in missing if m > now + _NAMED_AHEAD and m not in apart]:
        await _name_in_the_default_check(conn, ahead)
    created = 0
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('lock_timeout', %s, true)", [_LOCK_TIMEOUT])
            await _bounds_in_utc(conn)
            for month in missing:
                if month not in apart:
                    cursor = await conn.execute(
                        "SELECT sealtrail_create_event_partitions(%s, %s)", [month, month]
                    )
                    row = await cursor.fetchone()
                    created += int(row[0]) if row else 0
            await _drop_the_default_check(conn)  # under the lock a creation holds
    except psycopg.errors.LockNotAvailable:
        # Next month's events would go to events_default, whose rows no month
        # can be created over: say so while there is time to act.
        level = logging.WARNING if wanted[1] in missing else logging.INFO
        log.log(level, "partitions: events is busy; creating months ahead at the next pass")
        await _drop_the_default_check_at_once(conn)
        return 0
    except psycopg.Error:
        with contextlib.suppress(psycopg.Error):  # the connection may be what failed
            await _drop_the_default_check_at_once(conn)
        raise
    for month, held in sorted((occupied or {}).items()):
        if month == this_month and not held.others:
            # What retiring this month left, by a clock a day or more ahead of
            # `now`: taken back, it would be retired again at the next pass.
            log.warning(
                "partitions: events_default holds only records kept for good of %s, as"
                " its retirement leaves them: it is not created over them (is a"
                " process's clock a day or more behind another's?)",
                f"{month:%Y-%m}",
            )
            continue
        created += await _create_over_its_rows(conn, month, held.rows)
    return created


@dataclass(frozen=True, slots=True)
class _Held:
    """What events_default holds of a month: its rows, and how many of them
    are not records kept for good."""

    rows: int
    others: int


async def _occupied_months(
    conn: psycopg.AsyncConnection[Any], months: list[datetime]
) -> dict[datetime, _Held] | None:
    """What events_default holds of each of `months` that it holds rows of:
    one scan of it, beside reads and writes, whenever months are missing.
    None if it could not be counted (a statement timeout of the role)."""
    try:
        cursor = await conn.execute(
            "SELECT date_trunc('month', received_at, 'UTC'), count(*),"
            " count(*) FILTER (WHERE action NOT LIKE %s) FROM events_default"
            " WHERE received_at >= %s AND received_at < %s GROUP BY 1",
            [KEPT_FOR_GOOD_PATTERN, min(months), _months_after(max(months), 1)],
        )
        counted = await cursor.fetchall()
    except psycopg.Error as error:
        if conn.closed:
            raise
        log.warning(
            "partitions: cannot count what events_default holds of the months to create"
            " (%s); they are created as before",
            named(error),
        )
        return None
    held = {month.astimezone(UTC): _Held(rows, others) for month, rows, others in counted}
    return {month: held[month] for month in months if month in held}


class _MoveRefused(Exception):
    """The move is rolled back: the month stays missing, its rows where they were."""


async def _create_over_its_rows(
    conn: psycopg.AsyncConnection[Any], month: datetime, rows: int
) -> bool:
    """`month` created, with the `rows` events_default took of it while it
    was missing (received by a process whose clock ran ahead) moved into it
    unchanged, in one transaction under the locks on `events` and
    events_default, which every statement waits for: two scans of
    events_default (the move's, and the creation's, which no check can
    spare) and the rows inserted again. Else no month could ever be created
    over them, and all of its events would go to events_default, which is
    never dropped and which no query's time bound prunes. False if there are
    more than MOVE_MAX_ROWS, or the locks are not free at once, or the move
    fails or takes too long: the month stays missing, as before, said in the
    server's log."""
    name, end = f"events_{month:%Y_%m}", _months_after(month, 1)
    if rows > MOVE_MAX_ROWS:
        log.warning(
            "partitions: events_default holds %d rows received in %s, more than the %d a"
            " pass moves under a lock on events: %s is not created, and its events go to"
            " events_default (docs/retention.md)",
            rows,
            f"{month:%Y-%m}",
            MOVE_MAX_ROWS,
            name,
        )
        return False
    columns = sql.SQL(", ").join(await _stored_columns(conn))
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('lock_timeout', %s, true)", [_LOCK_TIMEOUT])
            await conn.execute("SELECT set_config('statement_timeout', %s, true)", [_MOVE_TIMEOUT])
            await conn.execute("SET LOCAL sealtrail.removal = 'retention'")
            await _bounds_in_utc(conn)
            await conn.execute("LOCK TABLE ONLY events, events_default IN ACCESS EXCLUSIVE MODE")
            cursor = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
            if (exists := await cursor.fetchone()) and exists[0]:
                return False  # another process created it since
            await conn.execute(
                sql.SQL(
                    "CREATE TEMPORARY TABLE sealtrail_moving ON COMMIT DROP AS"
                    " SELECT {} FROM events_default WITH NO DATA"
                ).format(columns)
            )
            taken = await conn.execute(
                sql.SQL(
                    "WITH taken AS (DELETE FROM events_default"
                    " WHERE received_at >= {month} AND received_at < {end} RETURNING {columns})"
                    " INSERT INTO sealtrail_moving SELECT * FROM taken"
                ).format(month=sql.Literal(month), end=sql.Literal(end), columns=columns)
            )
            if taken.rowcount > MOVE_MAX_ROWS:  # more came since they were counted
                raise _MoveRefused(f"{taken.rowcount} rows, more than {MOVE_MAX_ROWS}")
            await _drop_the_default_check(conn)
            cursor = await conn.execute(
                "SELECT sealtrail_create_event_partitions(%s, %s)", [month, month]
            )
            if not (row := await cursor.fetchone()) or not row[0]:
                raise _MoveRefused("PostgreSQL did not create it")
            await conn.execute(
                sql.SQL("INSERT INTO events ({}) SELECT * FROM sealtrail_moving").format(columns)
            )
    except psycopg.errors.LockNotAvailable:
        log.info("partitions: events is busy; creating %s at the next pass", name)
        return False
    except (psycopg.Error, _MoveRefused) as error:
        if conn.closed:
            raise
        log.warning(
            "partitions: %s not created over the rows events_default took of it (%s); they"
            " stay there, and the next pass tries again",
            name,
            named(error),
        )
        return False
    log.log(
        logging.WARNING if taken.rowcount else logging.INFO,  # none: erased since
        "partitions: created %s over the %d rows events_default took of it while it was"
        " missing (a process's clock ahead); they moved into it unchanged",
        name,
        taken.rowcount,
    )
    return True


async def _name_in_the_default_check(
    conn: psycopg.AsyncConnection[Any], months: list[datetime]
) -> None:
    """Make events_default's check name `months`, about to be created: added
    NOT VALID under a brief lock of events_default alone, then validated by a
    scan that stops no read or write. If it cannot be, events_default is left
    with no check, and creating the months scans it, as it did before."""
    name = sql.Identifier(OUTSIDE_MONTHS)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('lock_timeout', %s, true)", [_LOCK_TIMEOUT])
            await conn.execute(
                sql.SQL(
                    "ALTER TABLE events_default DROP CONSTRAINT IF EXISTS {name},"
                    " ADD CONSTRAINT {name} CHECK ({outside}) NOT VALID"
                ).format(name=name, outside=_outside(months))
            )
    except psycopg.errors.LockNotAvailable:
        log.info("partitions: events_default is busy; the months ahead are created with a scan")
        return
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('lock_timeout', %s, true)", [_VALIDATE_LOCK_TIMEOUT]
            )
            await conn.execute(
                sql.SQL("ALTER TABLE events_default VALIDATE CONSTRAINT {}").format(name)
            )
    except psycopg.Error as error:
        # A row received in a month not yet created (a clock that ran ahead)
        # is refused by the check meanwhile: it must not stay.
        log.warning(
            "partitions: events_default holds rows of a month to create, or is busy (%s);"
            " the months ahead are created with a scan",
            error.diag.message_primary or type(error).__name__,
        )
        await _drop_the_default_check_at_once(conn)


async def _drop_the_default_check_at_once(conn: psycopg.AsyncConnection[Any]) -> None:
    """The check dropped, if there is one and events_default can be locked at
    once; else it stays until a later pass creates the months or replaces it,
    hourly, from a day before the first it names starts (_NAMED_AHEAD)."""
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('lock_timeout', %s, true)", [_LOCK_TIMEOUT])
            await _drop_the_default_check(conn)
    except psycopg.errors.LockNotAvailable:
        log.warning(
            "partitions: events_default is busy; its check of the months ahead goes at the"
            " next pass"
        )


async def _drop_the_default_check(conn: psycopg.AsyncConnection[Any]) -> None:
    """events_default left with no check of the months (it then takes any row
    no month's partition takes); in the caller's transaction, if any. Without
    a check, no lock is taken (readers would queue behind its request)."""
    cursor = await conn.execute(
        "SELECT FROM pg_constraint WHERE conrelid = 'events_default'::regclass AND conname = %s",
        [OUTSIDE_MONTHS],
    )
    if await cursor.fetchone() is not None:
        await conn.execute(
            sql.SQL("ALTER TABLE events_default DROP CONSTRAINT IF EXISTS {}").format(
                sql.Identifier(OUTSIDE_MONTHS)
            )
        )


async def _bounds_in_utc(conn: psycopg.AsyncConnection[Any]) -> None:
    """Months created in the caller's transaction get UTC bounds, whatever the
    session's DateStyle (PARTITION_BOUNDS_DATESTYLE)."""
    await conn.execute("SELECT set_config('DateStyle', %s, true)", [PARTITION_BOUNDS_DATESTYLE])


def _outside(months: Iterable[datetime]) -> sql.Composable:
    """A condition on received_at that holds outside each of `months` (month
    starts, UTC): the ranges between runs of consecutive months, a form
    PostgreSQL's prover reads as excluding each of them."""
    runs: list[list[datetime]] = []
    for start in sorted(months):
        end = _months_after(start, 1)
        if runs and runs[-1][1] == start:
            runs[-1][1] = end
        else:
            runs.append([start, end])
    below, above = sql.SQL("received_at < {}"), sql.SQL("received_at >= {}")
    arms = [below.format(sql.Literal(runs[0][0]))]
    arms += [
        sql.SQL("({} AND {})").format(
            above.format(sql.Literal(end)), below.format(sql.Literal(next_start))
        )
        for (_, end), (next_start, _) in pairwise(runs)
    ]
    arms.append(above.format(sql.Literal(runs[-1][1])))
    return sql.SQL(" OR ").join(arms)


def _months_after(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


async def _monthly_partitions(conn: psycopg.AsyncConnection[Any]) -> dict[str, datetime]:
    """{name: month start} of each monthly partition of events."""
    cursor = await conn.execute(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
    )
    months = {}
    for (name,) in await cursor.fetchall():
        if match := _MONTHLY.fullmatch(name):  # not events_default
            months[name] = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
    return months


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
    retired: dict[str, int] = {}
    for name, month in (await _monthly_partitions(conn)).items():
        if _months_after(month, 1) > now - timedelta(days=1):
            continue
        table = sql.Identifier(name)
        # Most past months still hold events: the first one found says so, unlocked.
        if await _holds_events_not_kept(conn, table):
            continue
        await conn.execute(sql.SQL("VACUUM {}").format(table))
        kept = await _rows(conn, table)
        if kept > MOVE_MAX_ROWS:
            log.warning(
                "partitions: %s holds %d records kept for good, more than the %d a pass moves"
                " under a lock on events: it stays (passes less often leave fewer: a longer"
                " SEALTRAIL_RETENTION_INTERVAL)",
                name,
                kept,
                MOVE_MAX_ROWS,
            )
            continue
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('lock_timeout', %s, true)", [_LOCK_TIMEOUT])
                await conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)", [_MOVE_TIMEOUT]
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
    # A check a failed creation left on events_default may name the month.
    await _drop_the_default_check(conn)
    columns = sql.SQL(", ").join(await _stored_columns(conn))
    moved = await conn.execute(
        sql.SQL("INSERT INTO events ({columns}) SELECT {columns} FROM {month}").format(
            columns=columns, month=table
        )
    )
    await conn.execute(sql.SQL("DROP TABLE {}").format(table))
    return moved.rowcount


async def _stored_columns(conn: psycopg.AsyncConnection[Any]) -> list[sql.Identifier]:
    """Every stored column of events, in the table's order: what a move
    inserts again (generated ones are computed again)."""
    cursor = await conn.execute(
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = 'events'::regclass"
        " AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
    )
    return [sql.Identifier(str(row[0])) for row in await cursor.fetchall()]
