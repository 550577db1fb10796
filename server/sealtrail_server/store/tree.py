"""Reads of a tenant's Merkle tree: hashes of perfect subtrees (leaves from
events, interior nodes from tree_nodes), and the roots and RFC 9162 proofs
folded from them, each with one read of O(log n) rows."""

from __future__ import annotations

from typing import Any

import psycopg

from ..domain.errors import IntegrityFailure
from ..domain.proofs import (
    Node,
    Range,
    consistency_ranges,
    inclusion_ranges,
    nodes_of,
    range_hash,
)


async def read_nodes(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, nodes: set[Node]
) -> dict[Node, bytes]:
    """The hashes of `nodes`; IntegrityFailure if any is missing."""
    hashes: dict[Node, bytes] = {}
    leaves = [index + 1 for level, index in nodes if level == 0]
    interior = [(level, index) for level, index in nodes if level > 0]
    if leaves:
        cursor = await conn.execute(
            "SELECT seq, leaf_hash FROM events WHERE tenant_id = %s AND seq = ANY(%s)",
            [tenant_id, leaves],
        )
        for seq, leaf in await cursor.fetchall():
            hashes[(0, seq - 1)] = bytes(leaf)
    if interior:
        cursor = await conn.execute(
            # LATERAL: one primary-key probe per node whatever the statistics
            # say (a stale estimate once chose a hash join over the table).
            "SELECT k.level, k.idx, n.hash"
            " FROM unnest(%s::smallint[], %s::bigint[]) AS k(level, idx)"
            " CROSS JOIN LATERAL (SELECT hash FROM tree_nodes"
            "  WHERE tenant_id = %s AND level = k.level AND idx = k.idx) AS n",
            [[level for level, _ in interior], [index for _, index in interior], tenant_id],
        )
        for level, index, value in await cursor.fetchall():
            hashes[(level, index)] = bytes(value)
    missing = nodes - hashes.keys()
    if missing:
        raise IntegrityFailure(
            f"the Merkle tree of {tenant_id!r} lacks {len(missing)} stored hashes,"
            f" e.g. level {min(missing)[0]} index {min(missing)[1]}"
        )
    return hashes


async def tree_size(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> int:
    """The tenant's log size (0 before its first event)."""
    cursor = await conn.execute(
        "SELECT tree_size FROM chain_heads WHERE tenant_id = %s", [tenant_id]
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _range_hashes(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, ranges: list[Range]
) -> list[bytes]:
    hashes = await read_nodes(conn, tenant_id, nodes_of(ranges))
    return [range_hash(start, end, hashes) for start, end in ranges]


async def root_at(conn: psycopg.AsyncConnection[Any], tenant_id: str, size: int) -> bytes:
    [root] = await _range_hashes(conn, tenant_id, [(0, size)])
    return root


async def inclusion_proof(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, leaf_index: int, tree_size: int
) -> list[bytes]:
    return await _range_hashes(conn, tenant_id, inclusion_ranges(leaf_index, tree_size))


async def consistency_proof(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, old_size: int, new_size: int
) -> list[bytes]:
    return await _range_hashes(conn, tenant_id, consistency_ranges(old_size, new_size))
