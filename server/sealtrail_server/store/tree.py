"""Reads of a tenant's Merkle tree: hashes of perfect subtrees (leaves from
events, interior nodes from tree_nodes), and the roots and RFC 9162 proofs
folded from them, each with one read of O(log n) rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from ..domain.errors import IntegrityFailure
from ..domain.event import named_in_record, record_names_seq
from ..domain.merkle import leaf_hash
from ..domain.proofs import (
    Node,
    Range,
    consistency_ranges,
    inclusion_ranges,
    nodes_of,
    range_hash,
)
from .database import Database


@dataclass(frozen=True)
class NodeRead:
    """One tenant's stored hashes of `nodes`, and the record of `record_seq`
    (0: none) read along with them."""

    tenant_id: str
    nodes: frozenset[Node]
    record_seq: int = 0


@dataclass(frozen=True)
class NodesRead:
    """What a NodeRead found: the hashes, and the record if one was asked for
    and exists (a leaf with no record was removed by retention: its hash is
    its tombstone's); `missing` lists the nodes the store lacks."""

    hashes: dict[Node, bytes]
    record: str | None
    missing: frozenset[Node]


_READ_NODES = (
    # Leaves come from events, interior nodes from tree_nodes, every one by a
    # LATERAL primary-key probe whatever the statistics say (a stale estimate
    # once chose a hash join over the whole table); LIMIT 1 keeps the planner
    # from flattening a LATERAL into a join. The events probe is a range from
    # the key (see events.KEY_PROBE): only the primary key serves it, so
    # statistics taken when a tenant was tiny cannot send it through another
    # (tenant_id, ...) index, row by row. A leaf whose event
    # retention removed comes from its tombstone (tree_nodes level 0), with no
    # record. Tenants are named once, in %(tenants)s, and referred to by their
    # position in it.
    "SELECT k.t, 0::smallint, k.seq - 1,"
    "  coalesce(e.leaf_hash, (SELECT hash FROM tree_nodes"
    "   WHERE tenant_id = (%(tenants)s::text[])[k.t] AND level = 0 AND idx = k.seq - 1)),"
    "  CASE WHEN k.with_record THEN e.record END"
    " FROM unnest(%(leaf_t)s::int[], %(seqs)s::bigint[], %(with_record)s::bool[])"
    "  AS k(t, seq, with_record)"
    " LEFT JOIN LATERAL (SELECT leaf_hash, record FROM"
    "  (SELECT seq, leaf_hash, record FROM events"
    "   WHERE tenant_id = (%(tenants)s::text[])[k.t] AND seq >= k.seq"
    "   ORDER BY seq LIMIT 1) AS p"
    "  WHERE p.seq = k.seq) AS e ON true"
    " UNION ALL"
    " SELECT k.t, k.level, k.idx, n.hash, NULL"
    " FROM unnest(%(node_t)s::int[], %(levels)s::smallint[], %(idxs)s::bigint[])"
    "  AS k(t, level, idx)"
    " CROSS JOIN LATERAL (SELECT hash FROM tree_nodes"
    "  WHERE tenant_id = (%(tenants)s::text[])[k.t] AND level = k.level AND idx = k.idx"
    "  LIMIT 1) AS n"
)


def _array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal of numbers or booleans: passed as text and
    cast in the query, it costs far less to send than a list adapted item by
    item (a proof read carries a few dozen)."""
    return "{" + ",".join(map(str, values)) + "}"


async def read_many(
    conn: psycopg.AsyncConnection[Any], reads: Sequence[NodeRead]
) -> list[NodesRead]:
    """Every read of `reads` in one round trip, each node fetched once however
    many reads share it."""
    tenants: dict[str, int] = {}  # tenant -> its position in the query (from 1)
    leaves: dict[tuple[int, int], bool] = {}  # (tenant position, seq) -> with its record
    interior: set[tuple[int, int, int]] = set()
    for read in reads:
        t = tenants.setdefault(read.tenant_id, len(tenants) + 1)
        for level, index in read.nodes:
            if level == 0:
                leaves.setdefault((t, index + 1), False)
            else:
                interior.add((t, level, index))
        if read.record_seq:
            leaves[(t, read.record_seq)] = True
    cursor = await conn.execute(
        _READ_NODES,
        {
            "tenants": list(tenants),
            "leaf_t": _array(t for t, _ in leaves),
            "seqs": _array(seq for _, seq in leaves),
            "with_record": _array("t" if with_record else "f" for with_record in leaves.values()),
            "node_t": _array(t for t, _, _ in interior),
            "levels": _array(level for _, level, _ in interior),
            "idxs": _array(index for _, _, index in interior),
        },
    )
    found: dict[tuple[int, Node], bytes] = {}
    records: dict[tuple[int, int], str] = {}
    for t, level, index, value, record in await cursor.fetchall():
        if value is None:
            continue  # neither an event nor a tombstone: missing
        found[(t, (level, index))] = value
        if record is not None:
            records[(t, index + 1)] = record
    results = []
    for read in reads:
        t = tenants[read.tenant_id]
        hashes = {}
        missing = []
        for node in read.nodes:
            value = found.get((t, node))
            if value is None:
                missing.append(node)
            else:
                hashes[node] = value
        record = records.get((t, read.record_seq)) if read.record_seq else None
        results.append(NodesRead(hashes, record, frozenset(missing)))
    return results


def lacking(tenant_id: str, missing: frozenset[Node]) -> IntegrityFailure:
    """The failure of a read that found stored hashes missing."""
    level, index = min(missing)
    return IntegrityFailure(
        f"the Merkle tree of {tenant_id!r} lacks {len(missing)} stored hashes,"
        f" e.g. level {level} index {index}"
    )


async def read_nodes(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, nodes: set[Node]
) -> dict[Node, bytes]:
    """The hashes of `nodes`; IntegrityFailure if any is missing."""
    [found] = await read_many(conn, [NodeRead(tenant_id, frozenset(nodes))])
    if found.missing:
        raise lacking(tenant_id, found.missing)
    return found.hashes


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


def inclusion_read(tenant_id: str, *, seq: int, tree_size: int) -> NodeRead:
    """The read an inclusion proof of `seq` at `tree_size` needs: its path's
    nodes, its own leaf and its record."""
    nodes = nodes_of(inclusion_ranges(seq - 1, tree_size)) | {(0, seq - 1)}
    return NodeRead(tenant_id, frozenset(nodes), record_seq=seq)


@dataclass(frozen=True, slots=True)
class ProvenLeaf:
    """An event's leaf and its inclusion proof; `record` is None when
    retention removed the event and only its leaf hash remains."""

    seq: int
    record: str | None
    leaf_hash: bytes
    proof: list[bytes]


def inclusion_proof(read: NodeRead, found: NodesRead, *, tree_size: int) -> ProvenLeaf:
    """The leaf of `read` and its inclusion proof at `tree_size`, from what
    its read found. IntegrityFailure if its leaf or hashes of its path are
    missing (the caller knows the seq within the log: its leaf was there), or
    its record is not the one its leaf hashes (the proof would vouch for a
    record it does not cover)."""
    seq = read.record_seq
    if found.missing:
        raise lacking(read.tenant_id, found.missing)
    leaf = found.hashes[(0, seq - 1)]
    if found.record is not None:
        record = found.record.encode()
        if leaf_hash(record) != leaf:
            raise IntegrityFailure(
                f"the record of {read.tenant_id!r} at seq {seq} is not the one its leaf hashes"
            )
        if not record_names_seq(record, seq):
            # Moved with its leaf hash (helper-219): the proof of this seq
            # leads elsewhere than that record's leaf, to another root.
            raise IntegrityFailure(
                f"the record of {read.tenant_id!r} at seq {seq} names seq"
                f" {named_in_record(found.record, 'seq')}: it was moved from its place in the log"
            )
    proof = [
        range_hash(start, end, found.hashes) for start, end in inclusion_ranges(seq - 1, tree_size)
    ]
    return ProvenLeaf(seq, found.record, leaf, proof)


async def consistency_proof(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, old_size: int, new_size: int
) -> list[bytes]:
    return await _range_hashes(conn, tenant_id, consistency_ranges(old_size, new_size))


@dataclass(frozen=True, slots=True)
class Consistency:
    """A consistency proof between two sizes of a log, and the log's root at each."""

    proof: list[bytes]
    old_root: bytes
    new_root: bytes


async def read_consistency(
    db: Database, tenant_id: str, *, old_size: int, new_size: int
) -> Consistency:
    """The proof that the log at `old_size` is a prefix of the log at
    `new_size`, and both roots, in one read. Every hash is read by key, so on a
    generic plan (ADR 0032)."""
    ranges = [*consistency_ranges(old_size, new_size), (0, old_size), (0, new_size)]
    async with db.connection(tenant_id, generic_plans=True) as conn:
        *proof, old_root, new_root = await _range_hashes(conn, tenant_id, ranges)
    return Consistency(proof, old_root, new_root)


async def removed_in(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, first_seq: int, last_seq: int
) -> int:
    """How many events of [first_seq, last_seq] retention removed: their
    tombstones (tree_nodes level 0, index seq - 1) counted on the primary
    key's index, bounded by the range."""
    cursor = await conn.execute(
        "SELECT count(*) FROM tree_nodes WHERE tenant_id = %s AND level = 0"
        " AND idx >= %s AND idx < %s",
        [tenant_id, first_seq - 1, last_seq],
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def purged_leaves(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, after_seq: int, upto_seq: int, limit: int
) -> list[tuple[int, bytes]]:
    """(seq, leaf hash) of the events retention removed in (after_seq, upto_seq],
    at most `limit`, in seq order: their tombstones, tree_nodes level 0."""
    cursor = await conn.execute(
        "SELECT idx + 1, hash FROM tree_nodes WHERE tenant_id = %s AND level = 0"
        " AND idx >= %s AND idx < %s ORDER BY idx LIMIT %s",
        [tenant_id, after_seq, upto_seq, limit],
    )
    return [(int(seq), bytes(leaf)) for seq, leaf in await cursor.fetchall()]
