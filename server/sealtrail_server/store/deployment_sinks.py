"""Rows of deployment sinks: the definitions the operator keeps (ADR 0070),
and what their tenants' instances (managed rows of `sinks`) look like from
across tenants. Read and written on system connections only: no tenant's
connection sees a definition, nor its secrets, which are sealed as a tenant
sink's are (bound to the definition instead of a tenant's sink).

A definition changes under its lock (`DEFINITION_SUBJECT`), held by the
command changing it or by the process reconciling its instances: the two
never write one definition's instances at once."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg

from ..domain.sealing import SealError, SecretBox
from ..domain.sinks import KINDS, SinkDefinition, with_secrets
from ..newer_objects import left_sealed, say_left_sealed, sink_not_understood
from .sinks import definition_values, opened_destination, secret_place

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[Any]


def definition_subject(definition_id: str) -> str:
    """The lock subject (store/changes.py, of no tenant) of a definition."""
    return f"deployment_sink/{definition_id}"


def _owner(definition_id: str) -> str:
    """What the definition's sealed secrets are bound to."""
    return f"deployment_sinks/{definition_id}"


@dataclass(frozen=True, slots=True)
class DeploymentSink:
    id: str
    definition: SinkDefinition  # its secrets opened, those it could not left empty
    from_start: bool
    revision: int
    changed_by: str
    created_at: datetime
    updated_at: datetime
    deleting: bool
    # The secret fields that could not be opened, and why (their values are empty).
    unopened: tuple[tuple[str, str], ...] = ()
    # Where each tenant's log stood at its creation is kept (migration 0046):
    # not for a definition made before.
    starts_kept: bool = True
    # What of it this release does not know, a newer release having made it
    # (newer_objects.py): None if nothing. Such a definition is left to a
    # process that knows it: its secrets unopened, no instance of it made,
    # changed or removed here.
    newer: str | None = None


@dataclass(frozen=True, slots=True)
class Instance:
    """A tenant's managed sink, as seen across tenants."""

    tenant_id: str
    sink_id: str
    revision: int
    cursor_seq: int
    head_seq: int
    delivered_events: int
    dead_letters: int
    last_error: str


_COLUMNS: Final = (
    "id::text, name, kind, format, filter, destination, paused, from_start, revision,"
    " changed_by, created_at, updated_at, deleted_at IS NOT NULL, starts_kept"
)


def _row(row: tuple[Any, ...], box: SecretBox) -> DeploymentSink:
    (definition_id, name, kind, format, filter, destination, paused, from_start, revision,
     changed_by, created, updated, deleting, starts_kept) = row  # fmt: skip
    if kind in KINDS:
        opened, problems = opened_destination(box, _owner(definition_id), kind, destination)
    else:  # a newer release's kind (newer_objects.py): which fields are secrets is unknown
        opened, problems = {}, ()
    return DeploymentSink(
        definition_id,
        SinkDefinition(name, kind, format, filter, opened, paused),
        from_start,
        revision,
        changed_by,
        created,
        updated,
        deleting,
        problems,
        starts_kept,
        sink_not_understood(kind, filter),
    )


def new_id() -> str:
    """A new definition's id: chosen before its row is written, so that its
    command holds its lock before any process can see it."""
    return str(uuid.uuid4())


async def insert_definition(
    conn: Connection,
    definition_id: str,
    definition: SinkDefinition,
    *,
    box: SecretBox,
    from_start: bool,
    changed_by: str,
) -> bool:
    """Whether the definition was written: False if its name is taken. On
    `conn`, the tables' owner's (it reads every tenant's log head). Not
    `from_start`: with where each tenant's log stands, in the same statement
    (one snapshot), where the instances `sink create` does not make start
    (`instance_start`). Its time of creation was compared with the events'
    receipt: the clocks of the servers that recorded them, not the database's
    (a server 2 minutes behind lost the sink those minutes' events).

    The heads are read FOR KEY SHARE: a tenant's erasure, which locks its head
    and deletes it, is waited for, and its head skipped once it commits. Read
    from the snapshot alone, an erasure past its DELETEs but not committed
    left the erased tenant's start behind it, a row of the tenant in no
    tenant's table any more (helper-256). The lock conflicts with no append's
    (the appender holds the heads FOR NO KEY UPDATE): appends and this go on
    past each other."""
    cursor = await conn.execute(
        "WITH made AS (INSERT INTO deployment_sinks (id, name, kind, format, filter,"
        " destination, paused, from_start, changed_by, created_at, updated_at, starts_kept)"
        " VALUES (%(id)s, %(name)s, %(kind)s, %(format)s, %(filter)s, %(destination)s,"
        " %(paused)s, %(from_start)s, %(changed_by)s, now(), now(), true)"
        " ON CONFLICT (name) DO NOTHING RETURNING id),"
        " starts AS (INSERT INTO deployment_sink_starts (tenant_id, deployment_sink_id, tree_size)"
        " SELECT h.tenant_id, made.id, h.tree_size FROM made, chain_heads AS h"
        " WHERE NOT %(from_start)s FOR KEY SHARE OF h)"
        " SELECT count(*) FROM made",
        dict(
            zip(
                ("name", "kind", "format", "filter", "destination", "paused"),
                definition_values(definition, box=box, owner=_owner(definition_id)),
                strict=True,
            ),
            id=definition_id,
            from_start=from_start,
            changed_by=changed_by,
        ),
    )
    row = await cursor.fetchone()
    return row is not None and row[0] == 1


async def instance_start(conn: Connection, tenant_id: str, definition_id: str) -> int:
    """Where the tenant's log stood as the definition was created (0: it had
    none then), on `conn`, the tenant's: of a definition that keeps them."""
    cursor = await conn.execute(
        "SELECT tree_size FROM deployment_sink_starts"
        " WHERE tenant_id = %s AND deployment_sink_id = %s",
        [tenant_id, definition_id],
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def forget_instance_start(conn: Connection, tenant_id: str, definition_id: str) -> None:
    """The tenant's start of the definition, not needed once its instance is made."""
    await conn.execute(
        "DELETE FROM deployment_sink_starts WHERE tenant_id = %s AND deployment_sink_id = %s",
        [tenant_id, definition_id],
    )


async def find_definition(
    conn: Connection, name_or_id: str, *, box: SecretBox
) -> DeploymentSink | None:
    """The definition named `name_or_id`, or with that id. None for a text
    with a NUL, which no name holds (PostgreSQL refuses it in a parameter:
    the operator's mistyped name was a traceback)."""
    if "\x00" in name_or_id:
        return None
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM deployment_sinks WHERE name = %s OR id::text = %s"
        " ORDER BY name = %s DESC LIMIT 1",
        [name_or_id, name_or_id, name_or_id],
    )
    row = await cursor.fetchone()
    return None if row is None else _row(row, box)


async def list_definitions(conn: Connection, *, box: SecretBox) -> list[DeploymentSink]:
    cursor = await conn.execute(f"SELECT {_COLUMNS} FROM deployment_sinks ORDER BY name")
    return [_row(row, box) for row in await cursor.fetchall()]


async def definition_ids(conn: Connection) -> list[str]:
    """Every definition's id, those being deleted included."""
    cursor = await conn.execute("SELECT id::text FROM deployment_sinks ORDER BY created_at, id")
    return [definition_id for (definition_id,) in await cursor.fetchall()]


async def update_definition(
    conn: Connection,
    definition_id: str,
    definition: SinkDefinition,
    *,
    box: SecretBox,
    changed_by: str,
) -> int:
    """Replaces the definition; its new revision."""
    cursor = await conn.execute(
        "UPDATE deployment_sinks SET name = %s, kind = %s, format = %s, filter = %s,"
        " destination = %s, paused = %s, changed_by = %s, updated_at = now(),"
        " revision = revision + 1 WHERE id = %s RETURNING revision",
        [
            *definition_values(definition, box=box, owner=_owner(definition_id)),
            changed_by,
            definition_id,
        ],
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def name_taken(conn: Connection, name: str, *, other_than: str) -> bool:
    cursor = await conn.execute(
        "SELECT FROM deployment_sinks WHERE name = %s AND id <> %s", [name, other_than]
    )
    return await cursor.fetchone() is not None


async def mark_deleting(conn: Connection, definition_id: str, *, changed_by: str) -> None:
    """The definition is going: no instance is made of it any more, and each
    reconciliation removes those left until the row goes too."""
    await conn.execute(
        "UPDATE deployment_sinks SET deleted_at = coalesce(deleted_at, now()), changed_by = %s"
        " WHERE id = %s",
        [changed_by, definition_id],
    )


async def delete_definition(conn: Connection, definition_id: str) -> None:
    await conn.execute("DELETE FROM deployment_sinks WHERE id = %s", [definition_id])


async def instances(conn: Connection, definition_id: str) -> list[Instance]:
    """The definition's instances, by tenant, with their delivery state."""
    cursor = await conn.execute(
        "SELECT s.tenant_id, s.id::text, s.deployment_revision, s.cursor_seq,"
        " coalesce(h.tree_size, 0), s.delivered_events,"
        " (SELECT count(*) FROM sink_dead_letters AS d"
        "   WHERE d.tenant_id = s.tenant_id AND d.sink_id = s.id), s.last_error"
        " FROM sinks AS s LEFT JOIN chain_heads AS h ON h.tenant_id = s.tenant_id"
        " WHERE s.deployment_sink_id = %s ORDER BY s.tenant_id",
        [definition_id],
    )
    return [Instance(*row) for row in await cursor.fetchall()]


async def instances_not_at(
    conn: Connection, definition_id: str, revision: int | None
) -> list[tuple[str, str]]:
    """The (tenant, sink id) of the definition's instances written from
    another revision than `revision` (None: every instance). What a pass
    plans from, every 30 s on every server: none of `instances`' delivery
    state, which counts each instance's dead letters."""
    cursor = await conn.execute(
        "SELECT tenant_id, id::text FROM sinks WHERE deployment_sink_id = %s"
        " AND deployment_revision IS DISTINCT FROM coalesce(%s, -1) ORDER BY tenant_id",
        [definition_id, revision],
    )
    return [(tenant_id, sink_id) for tenant_id, sink_id in await cursor.fetchall()]


async def tenants_without(conn: Connection, definition_id: str) -> list[str]:
    """The tenants with a log and no instance of the definition, erased ones
    aside (an erasure removes their log too; a log begun after it is refused)."""
    cursor = await conn.execute(
        "SELECT h.tenant_id FROM chain_heads AS h WHERE NOT EXISTS (SELECT FROM sinks AS s"
        "   WHERE s.tenant_id = h.tenant_id AND s.deployment_sink_id = %s)"
        " AND NOT EXISTS (SELECT FROM tenant_erasures AS e WHERE e.tenant_id = h.tenant_id)"
        " ORDER BY h.tenant_id",
        [definition_id],
    )
    return [tenant_id for (tenant_id,) in await cursor.fetchall()]


async def tenants_with_logs(conn: Connection) -> set[str]:
    cursor = await conn.execute("SELECT tenant_id FROM chain_heads")
    return {tenant_id for (tenant_id,) in await cursor.fetchall()}


async def reseal_definitions(owner_url: str, box: SecretBox) -> tuple[int, list[str]]:
    """Seal again, under the sealing key, every definition's secret sealed
    under a key being retired (store/sinks.reseal_secrets does the tenants'
    sinks, instances included); run as the owner at start. Each row changes
    only if it is still as read. Returns the number changed and the
    definitions with a secret that cannot be opened."""
    changed, unopenable, left = 0, [], 0
    async with await psycopg.AsyncConnection.connect(owner_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT id::text, name, kind, destination FROM deployment_sinks"
        )
        for definition_id, name, kind, destination in await cursor.fetchall():
            if left_sealed(log, kind, "deployment sink secrets: %s (%s)", name, definition_id):
                left += 1
                continue

            def reseal(field: str, value: str) -> str:
                if box.is_current(value):
                    return value
                place = secret_place(_owner(definition_id), kind, destination, field)  # noqa: B023
                return box.seal(box.open(value, place=place), place=place)  # none in the clear

            try:
                resealed = with_secrets(kind, destination, reseal)
            except SealError as error:
                unopenable.append(f"{name} ({definition_id}): {error}")
                continue
            if resealed != destination:
                updated = await conn.execute(
                    "UPDATE deployment_sinks SET destination = %s"
                    " WHERE id = %s AND destination = %s",
                    [json.dumps(resealed), definition_id, json.dumps(destination)],
                )
                changed += updated.rowcount
        say_left_sealed(log, "deployment sink", left)
    return changed, unopenable
