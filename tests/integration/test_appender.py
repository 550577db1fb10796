"""The appender's group commit and its isolation of bad submissions, against
the real database."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any

import psycopg

from sealtrail_server.domain.errors import InvalidArgument
from sealtrail_server.domain.event import EventDraft, validate_event
from sealtrail_server.domain.merkle import append_leaf, frontier_root, leaf_hash
from sealtrail_server.store.appender import Appended, Appender
from tests.conftest import ServerThread


def _event(path: str, **fields: Any) -> Any:
    draft = EventDraft(action="appender.test", actor_id="u", **fields)
    return validate_event(draft, now=datetime.now(UTC), path=path)


def test_an_event_the_database_refuses_fails_alone(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    good = _event("events[0]")
    # NUL passes no validation; forced in here, the database refuses it.
    bad = dataclasses.replace(good, body={**good.body, "description": "a\x00b"}, path="events[1]")

    async def run() -> list[Any]:
        appender = Appender(server.database)
        appender.start()
        try:
            return await asyncio.gather(
                appender.append(tenant, [good, bad]), appender.append(f"{tenant}-b", [good])
            )
        finally:
            await appender.stop()

    [mixed, neighbour] = server.run(run())
    assert isinstance(mixed[0], Appended) and mixed[0].seq == 1
    assert isinstance(mixed[1], InvalidArgument)
    assert [v.field for v in mixed[1].violations] == ["events[1]"]
    assert isinstance(neighbour[0], Appended)
    counts = sql.execute(
        "SELECT tenant_id, count(*) FROM events WHERE tenant_id IN (%s, %s) GROUP BY 1",
        [tenant, f"{tenant}-b"],
    ).fetchall()
    assert dict(counts) == {tenant: 1, f"{tenant}-b": 1}


def test_concurrent_appends_share_transactions(server: ServerThread, tenant: str) -> None:
    async def run() -> list[Any]:
        appender = Appender(server.database, max_wait=0.05, batch_events=64)
        appender.start()
        try:
            return await asyncio.gather(
                *(appender.append(tenant, [_event("event")]) for _ in range(50))
            )
        finally:
            await appender.stop()

    results = [outcome for [outcome] in server.run(run())]
    assert sorted(r.seq for r in results) == list(range(1, 51))
    # One transaction stamps one received time: far fewer than 50 commits.
    assert len({r.received_at for r in results}) <= 5


def test_a_lone_caller_does_not_wait_for_company(server: ServerThread, tenant: str) -> None:
    """With nobody else writing, the wait for more callers would only delay the
    answer: a lone append commits at once, however long max_wait is."""

    async def run() -> list[Any]:
        appender = Appender(server.database, max_wait=600, batch_events=64)
        appender.start()
        try:
            answers = []
            for _ in range(3):  # each after the previous one's lone commit
                answers.append(
                    await asyncio.wait_for(appender.append(tenant, [_event("event")]), 30)
                )
            return answers
        finally:
            await appender.stop()

    assert [outcome.seq for [outcome] in server.run(run())] == [1, 2, 3]


def test_small_and_large_batches_store_the_same_rows_nodes_and_heads(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A batch of up to 64 events is written in one statement, a larger one by
    COPY (appender._ONE_STATEMENT_EVENTS): the log is the same either way."""
    sizes = [1, 64, 65, 3]  # one statement, one statement, COPY, one statement

    async def run() -> None:
        appender = Appender(server.database)
        appender.start()
        try:
            for size in sizes:
                events = [
                    _event(f"events[{i}]", actor_email=f"u{i}@example.com" if i % 2 else "")
                    for i in range(size)
                ]
                views = [bytes([i % 256]) * 3 if i % 3 else None for i in range(size)]
                outcomes = await appender.append(tenant, events, views)
                assert all(isinstance(outcome, Appended) for outcome in outcomes)
        finally:
            await appender.stop()

    server.run(run())
    rows = sql.execute(
        "SELECT seq, actor_email, caller_view, record, leaf_hash FROM events"
        " WHERE tenant_id = %s ORDER BY seq",
        [tenant],
    ).fetchall()
    expected_views = [
        bytes([i % 256]) * 3 if i % 3 else None for size in sizes for i in range(size)
    ]
    assert [seq for seq, *_ in rows] == list(range(1, sum(sizes) + 1))
    assert [view for _, _, view, _, _ in rows] == expected_views
    assert [email for _, email, *_ in rows] == [
        f"u{i}@example.com" if i % 2 else None for size in sizes for i in range(size)
    ]
    frontier: list[bytes] = []
    nodes: set[tuple[int, int, bytes]] = set()
    for size, (_, _, _, record, leaf) in enumerate(rows):
        assert bytes(leaf) == leaf_hash(record.encode())
        nodes.update(append_leaf(frontier, size, bytes(leaf)))
    stored_nodes = sql.execute(
        "SELECT level, idx, hash FROM tree_nodes WHERE tenant_id = %s", [tenant]
    ).fetchall()
    assert {(level, idx, bytes(node)) for level, idx, node in stored_nodes} == nodes
    head = sql.execute(
        "SELECT tree_size, root_hash FROM chain_heads WHERE tenant_id = %s", [tenant]
    ).fetchone()
    assert head is not None and (head[0], bytes(head[1])) == (len(rows), frontier_root(frontier))
