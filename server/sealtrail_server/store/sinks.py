"""Rows of sinks, their dead letters and replays.

A sink's secrets are sealed on the way in and opened on the way out
(domain/sealing.py), bound to their tenant, sink and field: every function
that reads or writes a definition takes the deployment's SecretBox.

Definitions are read and written by admins' calls on tenant connections (the
service role); delivery state, leases, dead letters and replay cursors by the
forwarder on system connections. Every write of the forwarder names its lease
(`lease_owner = %s`): a process that lost its lease (paused too long, say)
cannot move a cursor another process now owns. Every statement of a delivery
also tries the tenant's erasure lock, shared (`_NOT_BEING_ERASED`): an
erasure locks the tenant's sinks and deletes their rows in one long
transaction, and a delivery step waiting for it would hold a pooled
connection meanwhile, one for each of up to 50 sinks (ADR 0036). Where the
try fails the statement does nothing, and says so, without waiting."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql

from ..domain.filters import EventFilter
from ..domain.sealing import SealError, SecretBox, is_sealed
from ..domain.sinks import KINDS, Kind, SinkDefinition, destination_url, with_secrets
from ..newer_objects import left_sealed, say_left_sealed
from .changes import erasure_lock_key, erasure_lock_key_of, try_share_condition
from .events import filter_conditions
from .migrations import has_table

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[Any]


def _not_being_erased(name: str | None = None) -> sql.Composed:
    """True, the tenant's erasure lock shared until the statement ends; false
    at once while an erasure holds it or waits for it. Its parameter, the
    `erasure_lock_key`: positional, or the one `name`d."""
    return try_share_condition(sql.Placeholder(name) if name else sql.SQL("%s"))


_NOT_BEING_ERASED: Final = _not_being_erased()


@dataclass(frozen=True, slots=True)
class SinkState:
    cursor_seq: int
    delivered_events: int
    last_delivery_at: datetime | None
    last_error: str
    last_error_at: datetime | None
    consecutive_failures: int
    next_attempt_at: datetime | None
    dead_letters: int
    pending_replays: int


@dataclass(frozen=True, slots=True)
class StoredSink:
    tenant_id: str
    id: str
    definition: SinkDefinition  # its secrets opened, those it could not left empty
    created_at: datetime
    updated_at: datetime
    state: SinkState
    # The secret fields that could not be opened, and why (their values are empty).
    unopened: tuple[tuple[str, str], ...] = ()
    # The deployment sink this is its tenant's instance of (a managed sink,
    # which the operator keeps: ADR 0070), and the definition's revision it
    # was last written from; None for the tenant's own sinks.
    deployment_sink_id: str | None = None
    deployment_revision: int | None = None

    @property
    def managed(self) -> bool:
        return self.deployment_sink_id is not None

    def unopened_text(self) -> str:
        return "; ".join(f"{field}: {why}" for field, why in self.unopened)


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: str
    sink_id: str
    first_seq: int
    last_seq: int
    event_count: int
    http_status: int
    error: str
    created_at: datetime
    bypass_filter: bool = False  # parked from a delivery that bypassed the sink's filter


@dataclass(frozen=True, slots=True)
class Replay:
    id: str
    first_seq: int
    last_seq: int
    occurred_after: datetime | None
    occurred_before: datetime | None
    dead_letter_id: str | None
    bypass_filter: bool
    cursor_seq: int


_SINK_COLUMNS: Final = (
    "s.tenant_id, s.id::text, s.name, s.kind, s.format, s.filter, s.destination, s.paused,"
    " s.created_at, s.updated_at, s.cursor_seq, s.delivered_events, s.last_delivery_at,"
    " s.last_error, s.last_error_at, s.consecutive_failures, s.next_attempt_at,"
    " (SELECT count(*) FROM sink_dead_letters AS d"
    "   WHERE d.tenant_id = s.tenant_id AND d.sink_id = s.id),"
    " (SELECT count(*) FROM sink_replays AS r"
    "   WHERE r.tenant_id = s.tenant_id AND r.sink_id = s.id),"
    " s.deployment_sink_id::text, s.deployment_revision"
)


def secret_place(owner: str, kind: str, destination: dict[str, Any], field: str) -> str:
    """What a sealed secret is bound to: its `owner` (`sinks/<tenant>/<sink>`,
    or a deployment sink's), kind, field and URL. Copied to another sink, or
    sent to another URL than the one it was given for, it does not open. A
    secret URL (a chat webhook's) is bound to the rest alone: as stored it is
    sealed, so it cannot name itself."""
    url = "" if field == "url" else destination_url(kind, destination)
    return f"{owner}/{kind}/{field} {url}"


def _place(tenant_id: str, sink_id: str, kind: str, destination: dict[str, Any], field: str) -> str:
    return secret_place(f"sinks/{tenant_id}/{sink_id}", kind, destination, field)


def sealed_destination(
    box: SecretBox, owner: str, kind: Kind, destination: dict[str, Any]
) -> dict[str, Any]:
    """`destination` with each secret sealed, bound to `owner` (`secret_place`)."""
    return with_secrets(
        kind,
        destination,
        lambda field, secret: box.seal(secret, place=secret_place(owner, kind, destination, field)),
    )


def opened_destination(
    box: SecretBox, owner: str, kind: Kind, destination: dict[str, Any]
) -> tuple[dict[str, Any], tuple[tuple[str, str], ...]]:
    """`destination` with each secret opened, and the fields that could not
    be, with why (their values left empty)."""
    problems: list[tuple[str, str]] = []

    def open_secret(field: str, value: str) -> str:
        try:
            return box.open(value, place=secret_place(owner, kind, destination, field))
        except SealError as error:
            problems.append((field, str(error)))
            return ""

    return with_secrets(kind, destination, open_secret), tuple(problems)


def _sink(row: tuple[Any, ...], box: SecretBox) -> StoredSink:
    (tenant_id, sink_id, name, kind, format, filter, destination, paused, created, updated,
     cursor, delivered, last_delivery, last_error, last_error_at, failures, next_attempt,
     dead_letters, replays, deployment_sink_id, deployment_revision) = row  # fmt: skip
    if kind in KINDS:
        owner = f"sinks/{tenant_id}/{sink_id}"
        opened, problems = opened_destination(box, owner, kind, destination)
    else:  # a newer release's kind (newer_objects.py): which fields are secrets is unknown
        opened, problems = {}, ()
    definition = SinkDefinition(name, kind, format, filter, opened, paused)
    state = SinkState(
        cursor, delivered, last_delivery, last_error, last_error_at, failures, next_attempt,
        dead_letters, replays,
    )  # fmt: skip
    return StoredSink(
        tenant_id, sink_id, definition, created, updated, state, problems,
        deployment_sink_id, deployment_revision,
    )  # fmt: skip


async def count_sinks(conn: Connection, tenant_id: str) -> int:
    """The tenant's own sinks: the managed ones (ADR 0070) are the operator's,
    and take nothing from the tenant's limit."""
    cursor = await conn.execute(
        "SELECT count(*) FROM sinks WHERE tenant_id = %s AND deployment_sink_id IS NULL",
        [tenant_id],
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def insert_sink(
    conn: Connection,
    tenant_id: str,
    sink_id: str,
    definition: SinkDefinition,
    *,
    box: SecretBox,
    cursor_seq: int,
    now: datetime,
    deployment_sink: tuple[str, int] | None = None,
) -> None:
    """`deployment_sink`: the (id, revision) of the deployment sink this is
    the tenant's instance of, for a managed sink."""
    deployment_sink_id, revision = deployment_sink or (None, None)
    await conn.execute(
        "INSERT INTO sinks (tenant_id, id, name, kind, format, filter, destination, paused,"
        " created_at, updated_at, cursor_seq, deployment_sink_id, deployment_revision)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            tenant_id,
            sink_id,
            *_definition_values(tenant_id, sink_id, definition, box),
            now,
            now,
            cursor_seq,
            deployment_sink_id,
            revision,
        ],
    )


def _definition_values(
    tenant_id: str, sink_id: str, definition: SinkDefinition, box: SecretBox
) -> list[Any]:
    return definition_values(definition, box=box, owner=f"sinks/{tenant_id}/{sink_id}")


def definition_values(definition: SinkDefinition, *, box: SecretBox, owner: str) -> list[Any]:
    """A definition's name, kind, format, filter, destination (its secrets
    sealed for `owner`) and paused, as a tenant's or the deployment's sink
    row stores them, in that order."""
    kind, destination = definition.kind, definition.destination
    return [
        definition.name,
        definition.kind,
        definition.format,
        json.dumps(definition.filter),
        json.dumps(sealed_destination(box, owner, kind, destination)),
        definition.paused,
    ]


_CLEAR_SEALED: Final = "sink_secrets_sealed"  # deployment_markers: plaintext sealed once


async def reseal_secrets(
    owner_url: str, box: SecretBox, *, change: bool = True
) -> tuple[int, int, list[str]]:
    """Seal again, under the sealing key, every sink secret sealed under a key
    being retired, and, on the first start that seals at all, those older
    versions stored in the clear; run as the owner at start. A value in the
    clear after that was planted: it is left as it is (refused when read).
    Each row changes only if it is still as read, so processes starting
    together, or an admin's update meanwhile, are not overwritten. Returns the
    number of sinks changed, the number with a secret sealed under the sealing
    key (already, or now), and the sinks with a secret that cannot be opened.
    Without `change` (before the migrations), it only counts, changing
    nothing; a database without sinks yet has none to count."""
    changed, opened, unopenable = 0, 0, []
    async with await psycopg.AsyncConnection.connect(owner_url, autocommit=True) as conn:
        if not change and not await has_table(conn, "sinks"):
            return 0, 0, []
        seal_clear = True  # also where the markers' table is still to be made
        if await has_table(conn, "deployment_markers"):
            cursor = await conn.execute(
                "SELECT FROM deployment_markers WHERE name = %s", [_CLEAR_SEALED]
            )
            seal_clear = await cursor.fetchone() is None
        cursor = await conn.execute("SELECT tenant_id, id::text, kind, destination FROM sinks")
        left = 0
        for tenant_id, sink_id, kind, destination in await cursor.fetchall():
            if left_sealed(log, kind, "sink secrets: tenant %s sink %s", tenant_id, sink_id):
                left += 1
                continue
            sealing: list[str] = []

            def reseal(field: str, value: str) -> str:
                sealing.append(field)  # noqa: B023
                if box.is_current(value):
                    return value
                place = _place(tenant_id, sink_id, kind, destination, field)  # noqa: B023
                if is_sealed(value) or not seal_clear:
                    value = box.open(value, place=place)  # SealError for planted plaintext
                return box.seal(value, place=place)

            try:
                resealed = with_secrets(kind, destination, reseal)
            except SealError as error:
                unopenable.append(f"{tenant_id}/{sink_id}: {error}")
                continue
            opened += bool(sealing)
            if resealed != destination and change:
                updated = await conn.execute(
                    "UPDATE sinks SET destination = %s"
                    " WHERE tenant_id = %s AND id = %s AND destination = %s",
                    [json.dumps(resealed), tenant_id, sink_id, json.dumps(destination)],
                )
                changed += updated.rowcount
        say_left_sealed(log, "sink", left)
        if seal_clear and change:
            await conn.execute(
                "INSERT INTO deployment_markers (name) VALUES (%s) ON CONFLICT DO NOTHING",
                [_CLEAR_SEALED],
            )
    return changed, opened, unopenable


async def read_sink(
    conn: Connection, tenant_id: str, sink_id: str, *, box: SecretBox
) -> StoredSink | None:
    cursor = await conn.execute(
        f"SELECT {_SINK_COLUMNS} FROM sinks AS s WHERE s.tenant_id = %s AND s.id = %s",
        [tenant_id, sink_id],
    )
    row = await cursor.fetchone()
    return None if row is None else _sink(row, box)


async def read_sink_cursor(conn: Connection, tenant_id: str, sink_id: str) -> int:
    """A sink's cursor, the last seq its live delivery is done with (the
    sink exists)."""
    cursor = await conn.execute(
        "SELECT cursor_seq FROM sinks WHERE tenant_id = %s AND id = %s", [tenant_id, sink_id]
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def read_sink_filter(conn: Connection, tenant_id: str, sink_id: str) -> dict[str, Any] | None:
    """A sink's filter (its API form), None if there is no such sink: as
    committed by a change in flight, which it waits for (FOR SHARE, so that
    an alert's routing and a filter change are one before the other)."""
    cursor = await conn.execute(
        "SELECT filter FROM sinks WHERE tenant_id = %s AND id = %s FOR SHARE", [tenant_id, sink_id]
    )
    row = await cursor.fetchone()
    return None if row is None else dict(row[0])


async def sink_managed(conn: Connection, tenant_id: str, sink_id: str) -> bool | None:
    """Whether the sink is a managed one (ADR 0070); None if there is no such sink."""
    cursor = await conn.execute(
        "SELECT deployment_sink_id IS NOT NULL FROM sinks WHERE tenant_id = %s AND id = %s",
        [tenant_id, sink_id],
    )
    row = await cursor.fetchone()
    return None if row is None else bool(row[0])


async def list_sinks(conn: Connection, tenant_id: str, *, box: SecretBox) -> list[StoredSink]:
    cursor = await conn.execute(
        f"SELECT {_SINK_COLUMNS} FROM sinks AS s WHERE s.tenant_id = %s"
        " ORDER BY s.created_at, s.id",
        [tenant_id],
    )
    return [_sink(row, box) for row in await cursor.fetchall()]


async def update_sink(
    conn: Connection,
    tenant_id: str,
    sink_id: str,
    definition: SinkDefinition,
    *,
    box: SecretBox,
    now: datetime,
    keep_destination: bool = False,
) -> None:
    """Replaces the definition; with `keep_destination`, all of it but its
    kind and destination, which stay as stored (secrets that could not be
    opened included). A changed sink is tried at once, whatever backoff its
    failures had earned."""
    if keep_destination:
        await conn.execute(
            "UPDATE sinks SET name = %s, format = %s, filter = %s, paused = %s, updated_at = %s,"
            " consecutive_failures = 0, next_attempt_at = NULL WHERE tenant_id = %s AND id = %s",
            [
                definition.name,
                definition.format,
                json.dumps(definition.filter),
                definition.paused,
                now,
                tenant_id,
                sink_id,
            ],
        )
        return
    await conn.execute(
        "UPDATE sinks SET name = %s, kind = %s, format = %s, filter = %s, destination = %s,"
        " paused = %s, updated_at = %s, consecutive_failures = 0, next_attempt_at = NULL"
        " WHERE tenant_id = %s AND id = %s",
        [*_definition_values(tenant_id, sink_id, definition, box), now, tenant_id, sink_id],
    )


async def update_sink_revision(
    conn: Connection, tenant_id: str, sink_id: str, revision: int
) -> None:
    """A managed sink is now as that revision of its deployment sink."""
    await conn.execute(
        "UPDATE sinks SET deployment_revision = %s WHERE tenant_id = %s AND id = %s",
        [revision, tenant_id, sink_id],
    )


async def delete_sink(conn: Connection, tenant_id: str, sink_id: str) -> bool:
    cursor = await conn.execute(
        "DELETE FROM sinks WHERE tenant_id = %s AND id = %s", [tenant_id, sink_id]
    )
    return cursor.rowcount == 1


async def list_dead_letters(
    conn: Connection,
    tenant_id: str,
    sink_id: str,
    *,
    after: tuple[datetime, int, str] | None = None,
    limit: int = 1000,
) -> list[DeadLetterRow]:
    """The sink's dead letters in their order, oldest first (when parked,
    then seq, then id: a total order, two parked at one instant on one seq
    when a replay of one was refused again), after the one whose key is
    `after` (a keyset: a page reads its own rows, not those before it)."""
    statement, params = dead_letters_statement(tenant_id, sink_id, after=after, limit=limit)
    cursor = await conn.execute(statement, params)
    return [DeadLetterRow(*row) for row in await cursor.fetchall()]


def dead_letters_statement(
    tenant_id: str, sink_id: str, *, after: tuple[datetime, int, str] | None, limit: int
) -> tuple[str, list[object]]:
    """list_dead_letters' statement and its parameters."""
    keyset, params = "", list[object]([tenant_id, sink_id])
    if after is not None:
        keyset = " AND (d.created_at, d.first_seq, d.id) > (%s, %s, %s::uuid)"
        params += after
    # The columns qualified: ORDER BY id alone sorts by the output column
    # `id::text` names, not by the uuid the keyset compares.
    statement = (
        "SELECT d.id::text, d.sink_id::text, d.first_seq, d.last_seq, d.event_count,"
        " d.http_status, d.error, d.created_at FROM sink_dead_letters AS d"
        " WHERE d.tenant_id = %s AND d.sink_id = %s"
        + keyset
        + " ORDER BY d.created_at, d.first_seq, d.id LIMIT %s"
    )
    return statement, [*params, limit]


async def read_dead_letter(
    conn: Connection, tenant_id: str, sink_id: str, dead_letter_id: str
) -> DeadLetterRow | None:
    cursor = await conn.execute(
        "SELECT id::text, sink_id::text, first_seq, last_seq, event_count, http_status, error,"
        " created_at, bypass_filter FROM sink_dead_letters"
        " WHERE tenant_id = %s AND sink_id = %s AND id = %s",
        [tenant_id, sink_id, dead_letter_id],
    )
    row = await cursor.fetchone()
    return None if row is None else DeadLetterRow(*row)


async def pending_replay_of(
    conn: Connection, tenant_id: str, sink_id: str, dead_letter_id: str
) -> str | None:
    """The id of a replay of the dead letter not yet finished, if any."""
    cursor = await conn.execute(
        "SELECT id::text FROM sink_replays"
        " WHERE tenant_id = %s AND sink_id = %s AND dead_letter_id = %s LIMIT 1",
        [tenant_id, sink_id, dead_letter_id],
    )
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def insert_replay(
    conn: Connection,
    tenant_id: str,
    sink_id: str,
    replay_id: str,
    *,
    first_seq: int,
    last_seq: int,
    occurred_after: datetime | None,
    occurred_before: datetime | None,
    dead_letter_id: str | None,
    bypass_filter: bool = False,
    now: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO sink_replays (tenant_id, sink_id, id, first_seq, last_seq, occurred_after,"
        " occurred_before, dead_letter_id, bypass_filter, cursor_seq, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            tenant_id,
            sink_id,
            replay_id,
            first_seq,
            last_seq,
            occurred_after,
            occurred_before,
            dead_letter_id,
            bypass_filter,
            first_seq - 1,
            now,
        ],
    )


async def seq_range_of_window(
    conn: Connection, tenant_id: str, start: datetime, end: datetime
) -> tuple[int, int]:
    """The smallest seq range holding every event that occurred in [start, end):
    (first, first - 1) when none did."""
    cursor = await conn.execute(
        "SELECT min(seq), max(seq) FROM events"
        " WHERE tenant_id = %s AND occurred_at >= %s AND occurred_at < %s",
        [tenant_id, start, end],
    )
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        return 1, 0
    return int(row[0]), int(row[1])


async def count_taken(
    conn: Connection,
    tenant_id: str,
    event_filter: EventFilter,
    *,
    first_seq: int,
    last_seq: int,
    at_most: int,
) -> int:
    """How many events of seqs first_seq to last_seq `event_filter` takes (a
    replay's, its window in it), counted up to `at_most` (no further: a
    replay of a year stops reading at it)."""
    conditions, params = filter_conditions(tenant_id, event_filter)
    cursor = await conn.execute(
        sql.SQL(
            "SELECT count(*) FROM (SELECT FROM events WHERE {} AND seq >= %s AND seq <= %s"
            " LIMIT %s) AS taken"
        ).format(sql.SQL(" AND ").join(conditions)),
        [*params, first_seq, last_seq, at_most],
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def first_kept_seq(conn: Connection, tenant_id: str, head: int) -> int:
    """The first seq of the tenant's log that retention has kept (`head` + 1,
    one past the log's end, if it kept none): one look at the events'
    (tenant_id, seq) index."""
    cursor = await conn.execute("SELECT min(seq) FROM events WHERE tenant_id = %s", [tenant_id])
    row = await cursor.fetchone()
    return head + 1 if row is None or row[0] is None else int(row[0])


# --- the forwarder's side (system connections) --------------------------------


# An erasure locks its tenant's sinks until it commits (minutes for a large
# tenant): renewing one of them waited that long, holding meanwhile the rows of
# every sink locked before it, past the lock timeout, at every try; the
# process's forwarding of every tenant stopped (helper-85). Those of a tenant
# being erased are left out before any row is locked, their leases to expire.
_RENEW_LEASES: Final = (
    sql.SQL(
        "UPDATE sinks SET lease_until = now() + make_interval(secs => %(lease)s)"
        " WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM sinks"
        "   WHERE lease_owner = %(owner)s AND NOT paused AND {not_being_erased}"
        "   ORDER BY tenant_id, id LIMIT %(limit)s FOR UPDATE)"
        " RETURNING tenant_id, id::text"
    )
    .format(not_being_erased=try_share_condition(erasure_lock_key_of(sql.Identifier("tenant_id"))))
    .as_string(None)
)


@dataclass(frozen=True, slots=True)
class Lease:
    tenant_id: str
    sink_id: str


async def claim_sinks(
    conn: Connection,
    *,
    owner: str,
    lease_seconds: float,
    limit: int,
    leave: Sequence[tuple[Lease, datetime]] = (),
) -> list[Lease]:
    """Renews this owner's leases, then leases sinks nobody holds up to
    `limit` in all; paused sinks, and those of a tenant being erased, are left
    alone. This owner's are renewed waiting for their rows (its own writes to
    them last milliseconds): skipped while locked, a sink being delivered was
    dropped, its delivery cut off midway, and at the limit a free sink took
    its place. Free sinks
    are taken without waiting (SKIP LOCKED), as other processes claim them
    too. Lease times are the database's: one clock for every process,
    however far theirs drift. `leave`: sinks, as defined at each time, that
    this owner leaves to another (a newer release's, newer_objects.py),
    taken again once their definition changes."""
    params = {"owner": owner, "lease": lease_seconds, "limit": limit}
    renewed = await conn.execute(_RENEW_LEASES, params)
    held = [Lease(tenant_id, sink_id) for tenant_id, sink_id in await renewed.fetchall()]
    if len(held) >= limit:
        return held
    taken = await conn.execute(
        "UPDATE sinks SET lease_owner = %(owner)s,"
        " lease_until = now() + make_interval(secs => %(lease)s)"
        " WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM sinks"
        "   WHERE NOT paused AND (lease_until IS NULL OR lease_until < now())"
        "   AND lease_owner IS DISTINCT FROM %(owner)s"
        f"   AND NOT EXISTS ({_LEFT_AS_DEFINED})"
        "   ORDER BY tenant_id, id LIMIT %(free)s FOR UPDATE SKIP LOCKED)"
        " RETURNING tenant_id, id::text",
        {**params, "free": limit - len(held), **_left_values(leave)},
    )
    return held + [Lease(tenant_id, sink_id) for tenant_id, sink_id in await taken.fetchall()]


# Of the sinks an owner leaves to another process (`claim_sinks`), those
# standing as they were defined when it left them (`_left_values`).
_LEFT_AS_DEFINED: Final = (
    "SELECT 1 FROM unnest(%(left_tenants)s::text[], %(left_ids)s::uuid[],"
    " %(left_at)s::timestamptz[]) AS l (tenant_id, id, at)"
    " WHERE l.tenant_id = sinks.tenant_id AND l.id = sinks.id AND l.at = sinks.updated_at"
)


def _left_values(leave: Sequence[tuple[Lease, datetime]]) -> dict[str, list[Any]]:
    return {
        "left_tenants": [lease.tenant_id for lease, _ in leave],
        "left_ids": [lease.sink_id for lease, _ in leave],
        "left_at": [at for _, at in leave],
    }


async def count_unleased(conn: Connection, *, leave: Sequence[tuple[Lease, datetime]] = ()) -> int:
    """Sinks to deliver that no process holds (a lease never taken, or
    expired), but those `leave` names as they stand (`claim_sinks`): no
    process of this release waits for room to take them."""
    cursor = await conn.execute(
        "SELECT count(*) FROM sinks WHERE NOT paused"
        f" AND (lease_until IS NULL OR lease_until < now()) AND NOT EXISTS ({_LEFT_AS_DEFINED})",
        _left_values(leave),
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def still_left(
    conn: Connection, leave: Sequence[tuple[Lease, datetime]]
) -> list[tuple[Lease, datetime]]:
    """Those of `leave` (`claim_sinks`) still standing as defined then: a
    sink deleted or changed since is no longer to be left as it was."""
    if not leave:
        return []
    cursor = await conn.execute(
        f"SELECT tenant_id, id::text, updated_at FROM sinks WHERE EXISTS ({_LEFT_AS_DEFINED})",
        _left_values(leave),
    )
    return [(Lease(tenant_id, sink_id), at) for tenant_id, sink_id, at in await cursor.fetchall()]


async def release_lease(conn: Connection, lease: Lease, *, owner: str) -> None:
    """Gives this owner's lease of one sink up (one it leaves to another process)."""
    await conn.execute(
        "UPDATE sinks SET lease_owner = NULL, lease_until = NULL"
        " WHERE tenant_id = %s AND id = %s AND lease_owner = %s",
        [lease.tenant_id, lease.sink_id, owner],
    )


async def release_leases(conn: Connection, *, owner: str) -> None:
    """Gives this owner's leases up, but of rows another transaction holds (as
    store/alerts.release_leases, for the same reason)."""
    await conn.execute(
        "UPDATE sinks SET lease_owner = NULL, lease_until = NULL"
        " WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM sinks WHERE lease_owner = %s"
        "   FOR UPDATE SKIP LOCKED)",
        [owner],
    )


async def read_leased(
    conn: Connection, lease: Lease, *, owner: str, box: SecretBox
) -> StoredSink | None:
    """The sink, if this owner still holds its lease, it is not paused and
    its tenant is not being erased (then nothing of it is read or sent)."""
    cursor = await conn.execute(
        sql.SQL(
            f"SELECT {_SINK_COLUMNS} FROM sinks AS s WHERE s.tenant_id = %s AND s.id = %s"
            " AND s.lease_owner = %s AND NOT s.paused AND {}"
        ).format(_NOT_BEING_ERASED),
        [lease.tenant_id, lease.sink_id, owner, erasure_lock_key(lease.tenant_id)],
    )
    row = await cursor.fetchone()
    return None if row is None else _sink(row, box)


async def advance(
    conn: Connection,
    lease: Lease,
    *,
    owner: str,
    from_seq: int,
    to_seq: int,
    delivered: int,
    now: datetime,
    defined_at: datetime,
) -> bool:
    """Moves the cursor from `from_seq` to `to_seq`, and clears the failure
    state if it `delivered` any event: a range of nothing the filter takes
    says nothing of the destination, and clearing it there had a replay
    refused at every try (a revoked token) start its backoff anew at each
    step, about a second apart, for as long as other events came in
    (helper-100). False if the lease or the cursor changed meanwhile, the sink was
    changed since its definition of `defined_at` was read (what was sent went
    by the old filter and destination: the range is sent again by the new),
    or the tenant is being erased."""
    cursor = await conn.execute(
        sql.SQL(
            "UPDATE sinks SET cursor_seq = %s, delivered_events = delivered_events + %s,"
            " last_delivery_at = CASE WHEN %s > 0 THEN %s ELSE last_delivery_at END,"
            " last_error = CASE WHEN %s > 0 THEN '' ELSE last_error END,"
            " consecutive_failures = CASE WHEN %s > 0 THEN 0 ELSE consecutive_failures END,"
            " next_attempt_at = NULL"
            " WHERE tenant_id = %s AND id = %s AND lease_owner = %s AND cursor_seq = %s"
            " AND updated_at = %s AND {}"
        ).format(_NOT_BEING_ERASED),
        [
            to_seq,
            delivered,
            delivered,
            now,
            delivered,
            delivered,
            lease.tenant_id,
            lease.sink_id,
            owner,
            from_seq,
            defined_at,
            erasure_lock_key(lease.tenant_id),
        ],
    )
    return cursor.rowcount == 1


async def changed_since(
    conn: Connection, lease: Lease, *, owner: str, defined_at: datetime
) -> bool:
    """Whether the sink, still leased to `owner`, was changed since its
    definition of `defined_at` was read."""
    cursor = await conn.execute(
        "SELECT updated_at <> %s FROM sinks WHERE tenant_id = %s AND id = %s AND lease_owner = %s",
        [defined_at, lease.tenant_id, lease.sink_id, owner],
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def as_read(conn: Connection, lease: Lease, *, owner: str, defined_at: datetime) -> bool:
    """Whether the sink is still leased to `owner`, as its definition of
    `defined_at` was read: not changed, nor deleted."""
    cursor = await conn.execute(
        "SELECT 1 FROM sinks WHERE tenant_id = %s AND id = %s AND lease_owner = %s"
        " AND updated_at = %s",
        [lease.tenant_id, lease.sink_id, owner, defined_at],
    )
    return await cursor.fetchone() is not None


async def record_failure(
    conn: Connection,
    lease: Lease,
    *,
    owner: str,
    defined_at: datetime,
    error: str,
    retry_in: float,
) -> bool:
    """Records a failed attempt and when to try again, `retry_in` seconds
    from now by the database's clock, as leases are: whichever process holds
    the sink next waits for it by that clock (`seconds_until`), not by its
    own. Stamped by the failing process's clock, a process an hour ahead made
    the next holder wait an hour more. False, nothing done,
    if this owner lost the lease, the tenant is being erased, or the sink was
    changed since its definition of `defined_at` was read (the failure is the
    old definition's: a token since fixed must not hold the new one back)."""
    cursor = await conn.execute(
        sql.SQL(
            "UPDATE sinks SET last_error = %s, last_error_at = clock_timestamp(),"
            " consecutive_failures = consecutive_failures + 1,"
            " next_attempt_at = clock_timestamp() + make_interval(secs => %s)"
            " WHERE tenant_id = %s AND id = %s AND lease_owner = %s AND updated_at = %s AND {}"
        ).format(_NOT_BEING_ERASED),
        [
            error,
            retry_in,
            lease.tenant_id,
            lease.sink_id,
            owner,
            defined_at,
            erasure_lock_key(lease.tenant_id),
        ],
    )
    return cursor.rowcount == 1


async def seconds_until(conn: Connection, at: datetime) -> float:
    """Seconds from now to `at` by the database's clock (negative once past)."""
    cursor = await conn.execute(
        "SELECT extract(epoch FROM %s::timestamptz - clock_timestamp())::float8", [at]
    )
    row = await cursor.fetchone()
    assert row is not None
    return float(row[0])


@dataclass(frozen=True, slots=True)
class Parking:
    """Events to park as one dead letter, and why."""

    first_seq: int
    last_seq: int
    event_count: int
    http_status: int
    error: str


async def park(
    conn: Connection,
    lease: Lease,
    letters: Sequence[Parking],
    *,
    owner: str,
    defined_at: datetime,
    bypass_filter: bool,
    now: datetime,
) -> bool:
    """Parks each of `letters` as a dead letter, all in one statement, in
    the caller's transaction that moves the cursor over them; False,
    nothing done, if this owner lost the lease, the tenant is being erased,
    or the sink was changed since its definition of `defined_at` was read
    (the events are then sent again, by the new one, and parked again if
    refused again: a letter of what the old one was refused, replayed, would
    send them twice)."""
    cursor = await conn.execute(
        sql.SQL(
            "INSERT INTO sink_dead_letters (tenant_id, sink_id, id, first_seq, last_seq,"
            " event_count, http_status, error, bypass_filter, created_at)"
            " SELECT %(tenant)s, %(sink)s::uuid, l.id, l.first_seq, l.last_seq,"
            " l.event_count, l.http_status, l.error, %(bypass)s, %(now)s"
            " FROM unnest(%(id)s::uuid[], %(first)s::bigint[], %(last)s::bigint[],"
            "   %(count)s::int[], %(status)s::int[], %(error)s::text[])"
            "   AS l(id, first_seq, last_seq, event_count, http_status, error)"
            # The sink's row held, so a DeleteSink committing meanwhile leaves
            # nothing parked rather than failing the letters' foreign key; held
            # shared, so an UpdateSink's change of it under way is waited for
            # and its updated_at read once committed. (The forwarder's move of
            # the cursor, earlier in the transaction, holds it already.)
            " WHERE EXISTS (SELECT FROM sinks WHERE tenant_id = %(tenant)s"
            "   AND id = %(sink)s::uuid AND lease_owner = %(owner)s"
            "   AND updated_at = %(defined_at)s AND {} FOR SHARE)"
        ).format(_not_being_erased("erasure")),
        {
            "tenant": lease.tenant_id,
            "sink": lease.sink_id,
            "bypass": bypass_filter,
            "now": now,
            "id": [uuid.uuid4() for _ in letters],
            "first": [letter.first_seq for letter in letters],
            "last": [letter.last_seq for letter in letters],
            "count": [letter.event_count for letter in letters],
            "status": [letter.http_status for letter in letters],
            "error": [letter.error for letter in letters],
            "owner": owner,
            "defined_at": defined_at,
            "erasure": erasure_lock_key(lease.tenant_id),
        },
    )
    return cursor.rowcount == len(letters)


async def oldest_replay(conn: Connection, lease: Lease) -> Replay | None:
    """The sink's oldest pending replay, the one a step delivers a batch of;
    one row, however many wait (an alert a sink's filter does not take adds
    one each, and a destination down for hours gathers them)."""
    cursor = await conn.execute(
        "SELECT id::text, first_seq, last_seq, occurred_after, occurred_before,"
        " dead_letter_id::text, bypass_filter, cursor_seq FROM sink_replays"
        " WHERE tenant_id = %s AND sink_id = %s ORDER BY created_at, id LIMIT 1",
        [lease.tenant_id, lease.sink_id],
    )
    row = await cursor.fetchone()
    return None if row is None else Replay(*row)


async def advance_replay(
    conn: Connection,
    lease: Lease,
    replay: Replay,
    *,
    owner: str,
    to_seq: int,
    delivered: int,
    now: datetime,
    defined_at: datetime,
) -> bool:
    """Moves a replay's cursor and counts what it delivered; a finished replay
    (and its dead letter) goes, and a seq range's the dead letters it passed
    over. One statement, so all of it or none: False,
    nothing done, if the sink's lease or the replay's cursor changed meanwhile
    (another process delivers it now), the sink was changed since its
    definition of `defined_at` was read, or the tenant is being erased."""
    move = "DELETE FROM sink_replays" if to_seq >= replay.last_seq else (
        "UPDATE sink_replays SET cursor_seq = %(to)s"
    )  # fmt: skip
    cursor = await conn.execute(
        sql.SQL(
            # The sink's row first, as DeleteSink takes it before its cascade
            # reaches the replay and the letter (no lock cycle with it).
            "WITH moved AS (" + move + " WHERE tenant_id = %(tenant)s AND sink_id = %(sink)s"
            "   AND id = %(replay)s AND cursor_seq = %(from)s AND EXISTS (SELECT FROM sinks"
            "   WHERE tenant_id = %(tenant)s AND id = %(sink)s AND lease_owner = %(owner)s"
            "   AND updated_at = %(defined_at)s AND {not_being_erased} FOR NO KEY UPDATE)"
            "   RETURNING dead_letter_id),"
            # A finished replay of a dead letter takes the letter with it (when
            # it moved, which shares the erasure's lock for the statement).
            " delivered AS (DELETE FROM sink_dead_letters AS d USING moved AS m"
            "   WHERE %(finished)s AND d.tenant_id = %(tenant)s AND d.sink_id = %(sink)s"
            "   AND d.id = m.dead_letter_id),"
            # A seq range's replay sent the events of every letter it passed
            # over as the letter's replay would (the same filter, or none):
            # left, the letter's replay sent them again (helper-148). Those
            # it parks again are parked anew, after this statement.
            " covered AS (DELETE FROM sink_dead_letters AS d"
            "   WHERE %(ranged)s AND EXISTS (SELECT FROM moved)"
            "   AND d.tenant_id = %(tenant)s AND d.sink_id = %(sink)s"
            "   AND d.first_seq > %(from)s AND d.last_seq <= %(to)s"
            "   AND (%(bypass)s OR NOT d.bypass_filter) RETURNING d.id),"
            # Replays of those letters not yet started (replays go oldest first).
            " unneeded AS (DELETE FROM sink_replays AS r USING covered AS c"
            "   WHERE r.tenant_id = %(tenant)s AND r.sink_id = %(sink)s"
            "   AND r.dead_letter_id = c.id),"
            " counted AS (UPDATE sinks SET delivered_events = delivered_events + %(count)s,"
            "   last_delivery_at = %(now)s, last_error = '', consecutive_failures = 0,"
            "   next_attempt_at = NULL WHERE tenant_id = %(tenant)s AND id = %(sink)s"
            "   AND %(count)s > 0 AND EXISTS (SELECT FROM moved))"
            " SELECT count(*) FROM moved"
        ).format(not_being_erased=_not_being_erased("erasure")),
        {
            "to": to_seq,
            "tenant": lease.tenant_id,
            "sink": lease.sink_id,
            "replay": replay.id,
            "from": replay.cursor_seq,
            "owner": owner,
            "erasure": erasure_lock_key(lease.tenant_id),
            "finished": to_seq >= replay.last_seq,
            "ranged": replay.dead_letter_id is None
            and replay.occurred_after is None
            and replay.occurred_before is None,
            "bypass": replay.bypass_filter,
            "count": delivered,
            "now": now,
            "defined_at": defined_at,
        },
    )
    row = await cursor.fetchone()
    return row is not None and row[0] == 1
