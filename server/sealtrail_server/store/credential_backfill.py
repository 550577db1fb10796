"""The credential columns of events appended before migration 0056, written
from their records in batches (ADR 0143): the one UPDATE the events trigger
admits (migration 0059), which derives the same values itself and refuses
any other. Run on the owner's connection (`backfill/credentials.py`): no
other role holds UPDATE on events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

from .changes import erasure_lock_key, try_share_condition
from .events import RECORD_CREDENTIAL

# The next tenant (in the order of its index, after the one given) with a row whose
# credential columns are unread: the first entry of events_credential_unread
# past it in each partition, merged.
_NEXT_TENANT: Final = (
    "SELECT tenant_id FROM events WHERE credential_kind IS NULL AND tenant_id > %s"
    " ORDER BY tenant_id LIMIT 1"
)
_ANY_UNREAD: Final = "SELECT EXISTS (SELECT FROM events WHERE credential_kind IS NULL)"
# One batch of a tenant's unread rows past a seq, in seq order (on
# events_credential_unread), each given what its record says, as the appender
# writes it: the kind ('' for none), the id and the hint (NULL for none). A
# row the purge or an erasure removed meanwhile is skipped, not updated.
_BATCH: Final = (
    "UPDATE events AS e SET credential_kind = coalesce(c ->> 'kind', ''),"
    " credential_id = c ->> 'id', credential_hint = c ->> 'hint'"
    " FROM (SELECT seq, received_at, " + RECORD_CREDENTIAL + " AS c FROM events"
    " WHERE tenant_id = %(tenant)s AND credential_kind IS NULL AND seq > %(after)s"
    " ORDER BY seq LIMIT %(rows)s) AS b"
    " WHERE e.tenant_id = %(tenant)s AND e.seq = b.seq AND e.received_at = b.received_at"
    " AND e.credential_kind IS NULL"
    " RETURNING e.seq"
)
# What the batch selected is at most this many rows: the seq it read up to
# (a row it skipped as removed meanwhile is not read again).
_READ_UP_TO: Final = (
    "SELECT max(seq) FROM (SELECT seq FROM events WHERE tenant_id = %(tenant)s"
    " AND credential_kind IS NULL AND seq > %(after)s ORDER BY seq LIMIT %(rows)s) AS b"
)


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch of a tenant: how many rows it wrote, and the last seq it
    read (None: the tenant had none left past `after`)."""

    written: int
    last_seq: int | None


async def next_tenant(conn: psycopg.AsyncConnection[Any], after: str) -> str | None:
    """The first tenant past `after` ("" for the first of all)
    with a row whose credential columns are unread; None if none is."""
    cursor = await conn.execute(_NEXT_TENANT, [after])
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def any_unread(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether any row of any tenant has its credential columns unread."""
    cursor = await conn.execute(_ANY_UNREAD)
    row = await cursor.fetchone()
    return bool(row and row[0])


async def backfill_batch(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    *,
    after: int,
    rows: int,
    lock_timeout: str,
) -> Batch | None:
    """Up to `rows` of the tenant's unread rows past seq `after`, written in
    one transaction on `conn` (autocommit, the owner's), each waiting at most
    `lock_timeout` for a row another transaction holds (a purge's batch, an
    erasure). None, writing nothing, if an erasure of the tenant holds or
    waits for its lock: its rows are going anyway."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
        shared = sql.SQL("SELECT {}").format(
            try_share_condition(sql.Literal(erasure_lock_key(tenant_id)))
        )
        cursor = await conn.execute(shared)
        row = await cursor.fetchone()
        if not (row and row[0]):
            return None
        params = {"tenant": tenant_id, "after": after, "rows": rows}
        cursor = await conn.execute(_READ_UP_TO, params)
        read = await cursor.fetchone()
        last_seq = None if read is None or read[0] is None else int(read[0])
        if last_seq is None:
            return Batch(0, None)
        cursor = await conn.execute(_BATCH, params)
        written = len(await cursor.fetchall())
    return Batch(written, last_seq)
