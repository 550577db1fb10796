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
from .events import StoredEvent


async def read_nodes(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, nodes: set[Node]
) -> dict[Node, bytes]:
    """The hashes of `nodes`; IntegrityFailure if any is missing."""
    hashes, _ = await _read(conn, tenant_id, nodes, record_seq=0)
    return hashes


async def _read(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, nodes: set[Node], *, record_seq: int
) -> tuple[dict[Node, bytes], str | None]:
    """The hashes of `nodes` and the record of `record_seq` (0: none), in one
    round trip. Leaves come from events; interior nodes by LATERAL primary-key
    probes, whatever the statistics say (a stale estimate once chose a hash join
    over the whole table)."""
    leaves = [index + 1 for level, index in nodes if level == 0]
    interior = [(level, index) for level, index in nodes if level > 0]
    cursor = await conn.execute(
        "SELECT 0::smallint, seq - 1, leaf_hash, CASE WHEN seq = %(record)s THEN record END"
        " FROM events WHERE tenant_id = %(tenant)s AND seq = ANY(%(seqs)s)"
        " UNION ALL"
        " SELECT k.level, k.idx, n.hash, NULL"
        " FROM unnest(%(levels)s::smallint[], %(idxs)s::bigint[]) AS k(level, idx)"
        # LIMIT 1 keeps the planner from flattening the LATERAL into a join.
        " CROSS JOIN LATERAL (SELECT hash FROM tree_nodes"
        "  WHERE tenant_id = %(tenant)s AND level = k.level AND idx = k.idx LIMIT 1) AS n",
        {
            "tenant": tenant_id,
            "record": record_seq,
            "seqs": leaves,
            "levels": [level for level, _ in interior],
            "idxs": [index for _, index in interior],
        },
    )
    hashes: dict[Node, bytes] = {}
    record = None
    for level, index, value, text in await cursor.fetchall():
        hashes[(level, index)] = bytes(value)
        if text is not None:
            record = text
    missing = nodes - hashes.keys()
    if missing and record_seq and (0, record_seq - 1) in missing:
        return hashes, None  # the event itself is not there: the caller says NOT_FOUND
    if missing:
        raise IntegrityFailure(
            f"the Merkle tree of {tenant_id!r} lacks {len(missing)} stored hashes,"
            f" e.g. level {min(missing)[0]} index {min(missing)[1]}"
        )
    return hashes, record


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
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, seq: int, tree_size: int
) -> tuple[StoredEvent, list[bytes]] | None:
    """The event `seq` and its inclusion proof at `tree_size`, in one round
    trip; None if the log has no such event."""
    ranges = inclusion_ranges(seq - 1, tree_size)
    leaf = (0, seq - 1)
    hashes, record = await _read(conn, tenant_id, nodes_of(ranges) | {leaf}, record_seq=seq)
    if record is None:
        return None
    proof = [range_hash(start, end, hashes) for start, end in ranges]
    return StoredEvent(seq, record, hashes[leaf]), proof


async def consistency_proof(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, old_size: int, new_size: int
) -> list[bytes]:
    return await _range_hashes(conn, tenant_id, consistency_ranges(old_size, new_size))
