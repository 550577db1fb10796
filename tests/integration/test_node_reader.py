"""Batched reads of the Merkle tree against the real database: concurrent
inclusion proofs share queries and still verify, a cancelled caller leaves the
others their answers, and every stored hash is reached by a primary-key probe
whatever the planner's statistics say, on one generic plan."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, build_event
from sealtrail.tlog import Signer
from sealtrail_server.domain.errors import IntegrityFailure
from sealtrail_server.integrity.checkpointer import Checkpointer
from sealtrail_server.store import node_reader, tree
from sealtrail_server.store.node_reader import CACHED_LEVEL, NodeReader
from sealtrail_server.store.tree import NodeRead, inclusion_proof, inclusion_read
from tests.conftest import SIGNING_KEY, ServerThread
from tests.prepared_plans import (
    RUNS,
    Prepared,
    generic_plan,
    one_connection_database,
    prepared_statements,
    the_one,
)
from tests.rfc6962 import leaf, root_from_inclusion

EVENTS = 300  # deep enough for cached levels: 2**8 leaves lie under level 8


@pytest.fixture
def logged(client: AuditClient, tenant: str) -> str:
    for start in range(0, EVENTS, 100):
        client.record_batch(
            [build_event(action="reader.test", actor_id=f"u{start + i}") for i in range(100)]
        )
    return tenant


def _root(sql: psycopg.Connection[Any], tenant: str) -> bytes:
    row = sql.execute("SELECT root_hash FROM chain_heads WHERE tenant_id = %s", [tenant]).fetchone()
    assert row is not None
    return bytes(row[0])


def test_concurrent_proofs_share_queries_and_verify(
    server: ServerThread, logged: str, sql: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = NodeReader(server.database, max_batch=16)
    queries = 0
    real_read_many = tree.read_many

    async def prove_all() -> list[Any]:
        reads = [inclusion_read(logged, seq=seq, tree_size=EVENTS) for seq in range(1, EVENTS + 1)]
        found = await asyncio.gather(*(reader.read(read) for read in reads))
        return [
            inclusion_proof(read, result, tree_size=EVENTS)
            for read, result in zip(reads, found, strict=True)
        ]

    async def counting(conn: Any, reads: Any) -> Any:
        nonlocal queries
        queries += 1
        return await real_read_many(conn, reads)

    monkeypatch.setattr(node_reader, "read_many", counting)  # counted; the reads stay real
    cold = server.run(prove_all())
    cold_queries, queries = queries, 0
    warm = server.run(prove_all())
    root = _root(sql, logged)
    for proofs in (cold, warm):
        for seq, answer in enumerate(proofs, start=1):
            assert answer is not None and answer.record is not None
            assert answer.seq == seq
            assert leaf(answer.record.encode()) == answer.leaf_hash
            assert root_from_inclusion(seq - 1, EVENTS, answer.leaf_hash, answer.proof) == root
    # 300 concurrent reads in batches of at most 16, each query carrying a batch
    assert EVENTS / 16 <= cold_queries < EVENTS / 4
    assert cold == warm  # what the cache answers is what the table holds


def test_a_proofs_read_is_planned_once(
    server: ServerThread, logged: str, migrated_database_url: str
) -> None:
    """Every hash a proof needs is a probe by key, so one generic plan serves
    every read (ADR 0032). Left to choose, PostgreSQL planned each read anew for
    its values, three times as long as the read took on its generic plan."""

    async def run() -> tuple[Prepared, str]:
        async with one_connection_database(migrated_database_url) as db:
            reader = NodeReader(db)
            for seq in range(1, RUNS + 1):
                found = await reader.read(inclusion_read(logged, seq=seq, tree_size=EVENTS))
                assert not found.missing and found.record is not None
            read = the_one(await prepared_statements(db, logged), "UNION ALL")
            async with db.connection(logged, generic_plans=True) as conn:
                # tenants, then each leaf's tenant, seq and record flag, then
                # each interior node's tenant, level and index
                args = [logged], "{1}", "{7}", "{t}", "{1}", "{3}", "{2}"
                return read, await generic_plan(conn, read, *args)

    read, plan = server.run(run())
    assert read.planned_once
    assert "Seq Scan" not in plan, plan
    assert "Index Scan using events_" in plan and "Index Scan using tree_nodes" in plan, plan


def test_a_consistency_read_is_planned_once(
    server: ServerThread, logged: str, migrated_database_url: str
) -> None:
    """A consistency proof and its two roots: one read by key, on one generic
    plan (ADR 0032)."""

    async def run() -> list[Prepared]:
        async with one_connection_database(migrated_database_url) as db:
            for old_size in range(1, RUNS + 1):
                found = await tree.read_consistency(db, logged, old_size=old_size, new_size=EVENTS)
                assert found.proof and found.old_root != found.new_root
            return await prepared_statements(db, logged)

    assert the_one(server.run(run()), "UNION ALL").planned_once


def test_issuing_checkpoints_is_planned_once(
    server: ServerThread, client: AuditClient, logged: str, migrated_database_url: str
) -> None:
    """A new checkpoint reads the tree's root and its consistency with the
    last one, by key, on generic plans (ADR 0032)."""
    signer = Signer.parse(SIGNING_KEY)

    async def run() -> list[Prepared]:
        async with one_connection_database(migrated_database_url) as db:
            checkpointer = Checkpointer(
                db, signer, origin_prefix=server.settings.log_origin, interval=0
            )
            await checkpointer.start()
            sizes = []
            for _ in range(RUNS):
                await asyncio.to_thread(client.record, action="reader.test", actor_id="u")
                issued = await checkpointer.issue(logged)
                assert issued is not None
                sizes.append(issued.tree_size)
            assert sizes == list(range(EVENTS + 1, EVENTS + RUNS + 1))
            return await prepared_statements(db, logged)

    prepared = server.run(run())
    assert the_one(prepared, "UNION ALL").planned_once
    assert [p.statement for p in prepared if p.custom_plans] == []


def test_cached_levels_are_not_read_again(server: ServerThread, logged: str) -> None:
    reader = NodeReader(server.database)
    read = inclusion_read(logged, seq=1, tree_size=EVENTS)
    cached = {node for node in read.nodes if node[0] >= CACHED_LEVEL}
    assert cached  # the tree is deep enough for the test to mean something

    async def twice() -> tuple[Any, Any]:
        first = await reader.read(read)
        return first, await reader.read(read)

    first, second = server.run(twice())
    assert first.hashes == second.hashes and not second.missing
    assert len(reader._cache) == len(cached)


def test_a_cancelled_caller_leaves_the_others_their_answers(
    server: ServerThread, logged: str
) -> None:
    reader = NodeReader(server.database)

    async def run() -> list[Any]:
        reads = [inclusion_read(logged, seq=seq, tree_size=EVENTS) for seq in range(1, 41)]
        tasks = [asyncio.ensure_future(reader.read(read)) for read in reads]
        await asyncio.sleep(0)  # every read is queued, one query is on its way
        tasks[0].cancel()
        tasks[25].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = server.run(run())
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[25], asyncio.CancelledError)
    answered = [r for i, r in enumerate(results) if i not in (0, 25)]
    assert all(r.record is not None and not r.missing for r in answered)


def test_missing_hashes_fail_the_read_that_needs_them_only(
    server: ServerThread, logged: str
) -> None:
    reader = NodeReader(server.database)
    absent = NodeRead(logged, frozenset({(3, 10_000)}))  # beyond the log: never stored
    present = inclusion_read(logged, seq=7, tree_size=EVENTS)

    async def run() -> list[Any]:
        return list(await asyncio.gather(reader.read(absent), reader.read(present)))

    gone, found = server.run(run())
    assert gone.missing == {(3, 10_000)}
    assert inclusion_proof(present, found, tree_size=EVENTS) is not None
    with pytest.raises(IntegrityFailure, match="lacks 1 stored hashes"):
        inclusion_proof(
            NodeRead(logged, present.nodes | {(3, 10_000)}, present.record_seq),
            tree.NodesRead(found.hashes, found.record, frozenset({(3, 10_000)})),
            tree_size=EVENTS,
        )


def _scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    if "Relation Name" in plan:
        found.append((plan["Relation Name"], plan["Node Type"]))
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


def test_every_hash_is_read_by_a_primary_key_probe(
    logged: str, sql: psycopg.Connection[Any]
) -> None:
    # Fresh statistics of a small table, and hundreds of probes: what once led
    # the planner to a hash join over a whole table.
    sql.execute("ANALYZE events")
    sql.execute("ANALYZE tree_nodes")
    leaves = [(1, seq) for seq in range(1, 200)]
    nodes = [(1, level, index) for level in range(1, 8) for index in range(20)]
    params = {
        "tenants": [logged],
        "leaf_t": tree._array(t for t, _ in leaves),
        "seqs": tree._array(seq for _, seq in leaves),
        "with_record": tree._array("f" for _ in leaves),
        "node_t": tree._array(t for t, _, _ in nodes),
        "levels": tree._array(level for _, level, _ in nodes),
        "idxs": tree._array(index for _, _, index in nodes),
    }
    row = sql.execute("EXPLAIN (FORMAT JSON) " + tree._READ_NODES, params).fetchone()
    assert row is not None
    scans = _scans(row[0][0]["Plan"])
    # events is read through its monthly partitions (events_2026_11, ...).
    tables = {"events" if name.startswith("events_") else name for name, _ in scans}
    assert tables == {"events", "tree_nodes"}
    assert all(kind in ("Index Scan", "Index Only Scan") for _, kind in scans), scans
