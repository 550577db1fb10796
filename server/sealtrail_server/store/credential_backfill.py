"""The credential columns of events appended before migration 0056, and the
duration of those appended before 0064, written from their records in
batches (ADR 0143, ADR 0149): the UPDATEs the events trigger admits
(migrations 0059, 0064), which derives the same values itself and refuses
any other. Run on the owner's connection (`backfill/credentials.py`): no
other role holds UPDATE on events."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

from .changes import erasure_lock_key, try_share_condition
from .events import DURATION_READ, DURATION_UNREAD, RECORD_CREDENTIAL


@dataclass(frozen=True, slots=True)
class Backfilled:
    """Columns a backfill writes from the records (ADR 0143, ADR 0149): a
    row's condition while they are unread (the predicate of its partial
    index), what the batch reads of each row (`b`), the SET of them, and
    the condition of a row read that can be written (`b`'s)."""

    name: str
    unread: str
    read: str
    assign: str
    writable: str
    # What a run's log line says it wrote, and the pass's name on the
    # failures metric (`sealtrail.backfill.pass`, docs/metrics.md).
    said: str
    pass_name: str


# The credential columns (migration 0059, events_credential_unread): the
# kind ('' for none), the id and the hint (NULL for none).
CREDENTIALS: Final = Backfilled(
    name="credential",
    unread="credential_kind IS NULL",
    read=RECORD_CREDENTIAL + " AS c",
    assign="credential_kind = coalesce(b.c ->> 'kind', ''), credential_id = b.c ->> 'id',"
    " credential_hint = b.c ->> 'hint'",
    writable="true",
    said="credential columns",
    pass_name="credentials",
)
# The duration (migration 0064, events_duration_unread), of the rows whose
# record has one (a JSON number). A number no double holds (`1e400`: no API
# call writes one, validate_event wants a finite number under a day; a row
# written straight into the database could) reads as none (DURATION_READ):
# the batch writes the others and says that row's seq (`unconvertible`),
# left unwritten, found so by each process that reads it, not by a failure.
DURATIONS: Final = Backfilled(
    name="duration",
    unread=DURATION_UNREAD,
    read=DURATION_READ + " AS d",
    assign="duration_ms = b.d",
    writable="b.d IS NOT NULL",
    said="duration column",
    pass_name="durations",
)

# The next tenant (in the order of its index, after the one given) with a row whose
# columns are unread: the first entry of the unread index past it in each
# partition, merged.
_NEXT_TENANT: Final = (
    "SELECT tenant_id FROM events WHERE {unread} AND tenant_id > %s ORDER BY tenant_id LIMIT 1"
)
# Up to so many unread rows of any tenant (`any_unread`).
_SOME_UNREAD: Final = "SELECT tenant_id, seq FROM events WHERE {unread} LIMIT %s"
# One batch of a tenant's unread rows past a seq, in seq order (on the unread
# index), each given what its record says, as the appender writes it. A row
# the purge or an erasure removed meanwhile is skipped, not updated; so is
# one of `skip` (found unconvertible before), and one whose value will not
# convert (not `writable`: the trigger admits no NULL).
_BATCH: Final = (
    "UPDATE events AS e SET {assign}"
    " FROM (SELECT seq, received_at, {read} FROM events"
    " WHERE tenant_id = %(tenant)s AND {unread} AND seq > %(after)s"
    " AND seq <> ALL(%(skip)s::bigint[]) ORDER BY seq LIMIT %(rows)s) AS b"
    " WHERE e.tenant_id = %(tenant)s AND e.seq = b.seq AND e.received_at = b.received_at"
    " AND {unread}"  # of e: b has none of its columns
    " AND {writable} RETURNING e.seq"
)
# What the batch selected is at most this many rows: the seq it read up to
# (a row it skipped as removed meanwhile is not read again), and the seqs of
# those whose value will not convert, found before the UPDATE, not by it
# failing (what the credential pass reads is left unevaluated: `writable`
# is true, `b.c` unused).
_READ_UP_TO: Final = (
    "SELECT max(seq), coalesce(array_agg(seq ORDER BY seq) FILTER (WHERE NOT ({writable})), '{{}}')"
    " FROM (SELECT seq, {read} FROM events WHERE tenant_id = %(tenant)s"
    " AND {unread} AND seq > %(after)s AND seq <> ALL(%(skip)s::bigint[])"
    " ORDER BY seq LIMIT %(rows)s) AS b"
)


def _statement(template: str, columns: Backfilled) -> sql.Composed:
    """`template` of `columns`: static text of the module's constants."""
    return sql.SQL(template).format(
        unread=sql.SQL(columns.unread),
        read=sql.SQL(columns.read),
        assign=sql.SQL(columns.assign),
        writable=sql.SQL(columns.writable),
    )


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch of a tenant: how many rows it wrote, the last seq it read
    (None: the tenant had none left past `after`), and the seqs of the rows
    it read whose record's value will not convert, left unwritten."""

    written: int
    last_seq: int | None
    unconvertible: tuple[int, ...] = ()


async def next_tenant(
    conn: psycopg.AsyncConnection[Any], after: str, columns: Backfilled = CREDENTIALS
) -> str | None:
    """The first tenant past `after` ("" for the first of all)
    with a row whose `columns` are unread; None if none is."""
    cursor = await conn.execute(_statement(_NEXT_TENANT, columns), [after])
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def any_unread(
    conn: psycopg.AsyncConnection[Any],
    columns: Backfilled = CREDENTIALS,
    known: Collection[tuple[str, int]] = (),
) -> bool:
    """Whether any row of any tenant has its `columns` unread, other than
    those `known` (tenant, seq: found unconvertible, left as they are)."""
    cursor = await conn.execute(_statement(_SOME_UNREAD, columns), [len(known) + 1])
    return any((str(tenant), int(seq)) not in known for tenant, seq in await cursor.fetchall())


async def backfill_batch(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    *,
    after: int,
    rows: int,
    lock_timeout: str,
    columns: Backfilled = CREDENTIALS,
    skip: Collection[int] = (),
) -> Batch | None:
    """Up to `rows` of the tenant's unread rows past seq `after` (but those
    of `skip`), written in one transaction on `conn` (autocommit, the
    owner's), each waiting at most `lock_timeout` for a row another
    transaction holds (a purge's batch, an erasure). None, writing nothing,
    if an erasure of the tenant holds or waits for its lock: its rows are
    going anyway. A row whose value will not convert is found before the
    UPDATE (`writable`), left unwritten and said in the Batch."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
        shared = sql.SQL("SELECT {}").format(
            try_share_condition(sql.Literal(erasure_lock_key(tenant_id)))
        )
        cursor = await conn.execute(shared)
        row = await cursor.fetchone()
        if not (row and row[0]):
            return None
        params = {"tenant": tenant_id, "after": after, "rows": rows, "skip": sorted(skip)}
        cursor = await conn.execute(_statement(_READ_UP_TO, columns), params)
        read = await cursor.fetchone()
        if read is None or read[0] is None:
            return Batch(0, None)
        cursor = await conn.execute(_statement(_BATCH, columns), params)
        written = len(await cursor.fetchall())
        return Batch(written, int(read[0]), tuple(int(seq) for seq in read[1]))
