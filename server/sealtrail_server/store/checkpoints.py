"""Rows of signed checkpoints and of the keys that signed them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from sealtrail.tlog import Verifier


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    tenant_id: str
    tree_size: int
    root_hash: bytes
    note: str
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class StoredKey:
    verifier: str
    first_used_at: datetime


async def latest_checkpoint(
    conn: psycopg.AsyncConnection[Any], tenant_id: str
) -> StoredCheckpoint | None:
    cursor = conn.cursor(row_factory=class_row(StoredCheckpoint))
    await cursor.execute(
        "SELECT tenant_id, tree_size, root_hash, note, issued_at FROM checkpoints"
        " WHERE tenant_id = %s ORDER BY tree_size DESC LIMIT 1",
        [tenant_id],
    )
    return await cursor.fetchone()


async def latest_checkpoints(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, limit: int, at_most: int | None = None
) -> list[StoredCheckpoint]:
    """The tenant's `limit` largest stored checkpoints (of sizes up to
    `at_most`, if given), the largest first."""
    cursor = conn.cursor(row_factory=class_row(StoredCheckpoint))
    # Two statements, not `%s IS NULL OR ...`: a generic plan of that reads
    # every row beyond the bound before the first within it.
    if at_most is None:
        await cursor.execute(
            "SELECT tenant_id, tree_size, root_hash, note, issued_at FROM checkpoints"
            " WHERE tenant_id = %s ORDER BY tree_size DESC LIMIT %s",
            [tenant_id, limit],
        )
    else:
        await cursor.execute(
            "SELECT tenant_id, tree_size, root_hash, note, issued_at FROM checkpoints"
            " WHERE tenant_id = %s AND tree_size <= %s ORDER BY tree_size DESC LIMIT %s",
            [tenant_id, at_most, limit],
        )
    return await cursor.fetchall()


async def checkpoints_beyond(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, size: int
) -> tuple[int, int]:
    """How many stored checkpoints of the tenant claim a size beyond `size`,
    and the largest size claimed (0, 0 if none)."""
    cursor = await conn.execute(
        "SELECT count(*), coalesce(max(tree_size), 0) FROM checkpoints"
        " WHERE tenant_id = %s AND tree_size > %s",
        [tenant_id, size],
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def checkpoint_at(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, tree_size: int
) -> StoredCheckpoint | None:
    cursor = conn.cursor(row_factory=class_row(StoredCheckpoint))
    await cursor.execute(
        "SELECT tenant_id, tree_size, root_hash, note, issued_at FROM checkpoints"
        " WHERE tenant_id = %s AND tree_size = %s",
        [tenant_id, tree_size],
    )
    return await cursor.fetchone()


async def all_checkpoints(
    conn: psycopg.AsyncConnection[Any], tenant_id: str
) -> list[StoredCheckpoint]:
    cursor = conn.cursor(row_factory=class_row(StoredCheckpoint))
    await cursor.execute(
        "SELECT tenant_id, tree_size, root_hash, note, issued_at FROM checkpoints"
        " WHERE tenant_id = %s ORDER BY tree_size",
        [tenant_id],
    )
    return await cursor.fetchall()


async def insert_checkpoint(
    conn: psycopg.AsyncConnection[Any],
    checkpoint: StoredCheckpoint,
    *,
    key: Verifier,
) -> None:
    await conn.execute(
        "INSERT INTO checkpoints"
        " (tenant_id, tree_size, root_hash, note, key_name, key_id, issued_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, tree_size) DO NOTHING",
        [
            checkpoint.tenant_id,
            checkpoint.tree_size,
            checkpoint.root_hash,
            checkpoint.note,
            key.name,
            key.key_id,
            checkpoint.issued_at,
        ],
    )


async def refuse_checkpoint(
    conn: psycopg.AsyncConnection[Any], checkpoint: StoredCheckpoint, *, why: str
) -> bool:
    """`checkpoint`'s row, if it still holds what was read of it, moved out of
    `checkpoints` into `checkpoints_refused` with `why` (migration 0067, ADR
    0159); whether it moved. `conn` a system connection."""
    cursor = await conn.execute(
        "SELECT sealtrail_refuse_checkpoint(%s, %s, %s, %s, %s)",
        [checkpoint.tenant_id, checkpoint.tree_size, checkpoint.root_hash, checkpoint.note, why],
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


@dataclass(frozen=True, slots=True)
class RefusedCheckpoint:
    """A row the signer moved out of `checkpoints`: its note did not sign
    what the row says (ADR 0159)."""

    tree_size: int
    why: str
    refused_at: datetime


async def first_refused_checkpoint(
    conn: psycopg.AsyncConnection[Any], tenant_id: str
) -> RefusedCheckpoint | None:
    """The smallest of the tenant's rows the signer set aside as forged."""
    cursor = conn.cursor(row_factory=class_row(RefusedCheckpoint))
    await cursor.execute(
        "SELECT tree_size, why, refused_at FROM checkpoints_refused WHERE tenant_id = %s"
        " ORDER BY tree_size, refused_at LIMIT 1",
        [tenant_id],
    )
    return await cursor.fetchone()


async def register_key(conn: psycopg.AsyncConnection[Any], key: Verifier) -> None:
    await conn.execute(
        "INSERT INTO signing_keys (key_name, key_id, verifier) VALUES (%s, %s, %s)"
        " ON CONFLICT (key_name, key_id) DO NOTHING",
        [key.name, key.key_id, key.text()],
    )


async def known_keys(conn: psycopg.AsyncConnection[Any]) -> list[StoredKey]:
    cursor = conn.cursor(row_factory=class_row(StoredKey))
    await cursor.execute("SELECT verifier, first_used_at FROM signing_keys ORDER BY first_used_at")
    return await cursor.fetchall()


async def tenants_grown_since_checkpoint(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Tenants whose head no stored checkpoint is at (its size and root), or
    with one stored beyond it: the signer tells which rows its key signed
    (ADR 0156). The largest row's size was taken for the latest checkpoint's:
    a superuser's row at size 10^12 hid the tenant from every pass (helper-555)."""
    cursor = await conn.execute(
        "SELECT h.tenant_id FROM chain_heads h"
        " WHERE (h.tree_size > 0 AND NOT EXISTS (SELECT FROM checkpoints c"
        "   WHERE c.tenant_id = h.tenant_id AND c.tree_size = h.tree_size"
        "   AND c.root_hash = h.root_hash))"
        " OR EXISTS (SELECT FROM checkpoints c"
        "   WHERE c.tenant_id = h.tenant_id AND c.tree_size > h.tree_size)"
        " ORDER BY h.tenant_id"
    )
    return [row[0] for row in await cursor.fetchall()]
