"""The appender's group commit and its isolation of bad submissions, against
the real database."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import secrets
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sealtrail.v1 import event_pb2
from sealtrail_server.api.convert import server_view
from sealtrail_server.domain.errors import InvalidArgument, ResourceExhausted, Unavailable
from sealtrail_server.domain.event import (
    MAX_RECORD_BYTES,
    EventDraft,
    ServerFields,
    finalize_record,
    format_timestamp,
    validate_event,
)
from sealtrail_server.domain.merkle import append_leaf, frontier_root, leaf_hash
from sealtrail_server.store import appender as appender_module
from sealtrail_server.store.appended import Appended
from sealtrail_server.store.appender import _ONE_STATEMENT_EVENTS, Appender
from sealtrail_server.store.database import Database
from sealtrail_server.store.events import time_once_appended
from tests.conftest import ServerThread, database_of_its_own, logged
from tests.lock_waits import count_now, until
from tests.own_appender import own_appender
from tests.prepared_plans import (
    RUNS,
    Prepared,
    one_connection_database,
    prepared_statements,
    the_one,
)
from tests.service_login import service_login_url


def _event(path: str, **fields: Any) -> Any:
    draft = EventDraft(action="appender.test", actor_id="u", **fields)
    return validate_event(draft, now=datetime.now(UTC), path=path)


async def _one_batch(appender: Appender, *tenants: str) -> list[Any]:
    """An event of each of `tenants`, appended at once: one batch; an error as its answer."""
    return await asyncio.gather(
        *(appender.append(each, [_event("event")]) for each in tenants),
        return_exceptions=True,
    )


@pytest.mark.parametrize("refused_for", ["a NUL", "an index entry over a page"])
def test_an_event_the_database_refuses_fails_alone(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], refused_for: str
) -> None:
    """Whatever the database refuses an event for, its neighbours land and it
    is INVALID_ARGUMENT. An index entry over a page (an id that redaction
    made long) is an operational error to psycopg: it failed every caller
    and tenant of the batch as UNAVAILABLE, and again at each retry."""
    good = _event("events[0]")
    # Neither passes validation; forced in here, the database refuses them.
    if refused_for == "a NUL":
        bad = dataclasses.replace(
            good, body={**good.body, "description": "a\x00b"}, path="events[1]"
        )
    else:
        bad = dataclasses.replace(good, resource_id=secrets.token_hex(2000), path="events[1]")

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


@pytest.mark.parametrize("whole_views", [True, False], ids=["whole views", "caller views"])
def test_small_and_large_batches_store_the_same_rows_nodes_and_heads(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], whole_views: bool
) -> None:
    """A batch of up to _ONE_STATEMENT_EVENTS events is written in one
    statement, a larger one by COPY: the log is the same either way, each
    column what its record says, each view the caller's followed by the
    server's fields (ADR 0025), or, with no `server_view`, the caller's alone."""
    # one statement, one statement, COPY, one statement
    sizes = [1, _ONE_STATEMENT_EVENTS, _ONE_STATEMENT_EVENTS + 1, 3]

    def event(i: int) -> Any:
        return _event(
            f"events[{i}]",
            occurred_at=(1_700_000_000 + i, 123_456_789),
            severity=1 + i % 4,
            category=i % 4,
            actor_email=f"U{i}@Example.com" if i % 2 else "",
            resource_type="doc" if i % 3 else "",
            resource_id=f"d{i}",
            request_id=str(uuid.uuid4()) if i % 2 else "",
            trace_id=uuid.uuid4().hex if i % 3 else "",
            idempotency_key=f"key-{uuid.uuid4()}" if i % 4 else "",
        )

    def view(i: int) -> bytes | None:
        return bytes([i % 256]) * 3 if i % 3 else None

    async def run() -> None:
        appender = Appender(server.database, server_view=server_view if whole_views else None)
        appender.start()
        try:
            for size in sizes:
                outcomes = await appender.append(
                    tenant, [event(i) for i in range(size)], [view(i) for i in range(size)]
                )
                assert all(isinstance(outcome, Appended) for outcome in outcomes)
        finally:
            await appender.stop()

    server.run(run())
    # Every column as its record has it (severity, category: by name there).
    mismatched = sql.execute(
        "SELECT seq FROM events, LATERAL (SELECT record::jsonb AS r) AS j WHERE tenant_id = %s"
        " AND (id::text IS DISTINCT FROM r ->> 'id'"
        " OR occurred_at IS DISTINCT FROM (r ->> 'occurred_at')::timestamptz"
        " OR received_at IS DISTINCT FROM (r ->> 'received_at')::timestamptz"
        " OR action IS DISTINCT FROM r ->> 'action'"
        " OR category IS DISTINCT FROM r ->> 'category'"
        " OR outcome IS DISTINCT FROM r ->> 'outcome'"
        " OR actor_id IS DISTINCT FROM r -> 'actor' ->> 'id'"
        # Lowered (ADR 0067): ASCII here, which lower() lowers as str.lower() does.
        " OR actor_email IS DISTINCT FROM lower(r -> 'actor' ->> 'email')"
        " OR resource_type IS DISTINCT FROM r -> 'resource' ->> 'type'"
        " OR resource_id IS DISTINCT FROM r -> 'resource' ->> 'id'"
        " OR request_id::text IS DISTINCT FROM r -> 'context' ->> 'request_id'"
        " OR trace_id IS DISTINCT FROM r -> 'context' ->> 'trace_id'"
        " OR idempotency_key IS DISTINCT FROM r ->> 'idempotency_key'"
        " OR seq IS DISTINCT FROM (r ->> 'seq')::bigint)",
        [tenant],
    ).fetchall()
    assert mismatched == []
    rows = sql.execute(
        "SELECT seq, severity, caller_view, event_view, id::text, received_at, leaf_hash"
        " FROM events WHERE tenant_id = %s ORDER BY seq",
        [tenant],
    ).fetchall()
    indexes = [i for size in sizes for i in range(size)]
    assert [seq for seq, *_ in rows] == list(range(1, len(indexes) + 1))
    assert [severity for _, severity, *_ in rows] == [1 + i % 4 for i in indexes]
    views = [(caller, whole) for _, _, caller, whole, *_ in rows]
    if not whole_views:
        assert views == [(view(i), None) for i in indexes]
    else:
        assert views == [
            (None, None)
            if view(i) is None
            else (
                None,
                view(i)
                + server_view(
                    tenant_id=tenant,
                    event_id=event_id,
                    seq=seq,
                    received_at=received_at,
                    leaf_hash=bytes(leaf),
                ),
            )
            for i, (seq, _, _, _, event_id, received_at, leaf) in zip(indexes, rows, strict=True)
        ]
    assert _whole_log_size(sql, tenant) == len(indexes)


def test_appenders_of_two_processes_keep_one_log_per_tenant(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Each appender writes a tenant it wrote last without a lock, from the
    head it kept (ADR 0024). Another process's appender moves that head; the
    write then finds the head moved, writes nothing, and writes again under
    lock: never a second event at a seq, never a gap or a broken tree."""
    tenants = [tenant, f"{tenant}-b", f"{tenant}-c"]

    async def run() -> tuple[list[int], list[Any]]:
        first, second = Appender(server.database), Appender(server.database)
        first.start()
        second.start()
        try:
            # Taking turns: every write after the first two finds its kept head moved.
            turns = []
            for appender in [first, second] * 3:
                [outcome] = await appender.append(tenant, [_event("event")])
                turns.append(outcome.seq)
            # Both at once, over three tenants, in batches of one to three.
            together = await asyncio.gather(
                *(
                    appender.append(
                        tenants[i % 3], [_event(f"events[{j}]") for j in range(i % 3 + 1)]
                    )
                    for i in range(60)
                    for appender in (first, second)
                )
            )
            return turns, [outcome for outcomes in together for outcome in outcomes]
        finally:
            await first.stop()
            await second.stop()

    turns, together = server.run(run())
    assert turns == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(outcome, Appended) for outcome in together)
    # 40 appends of each tenant, of 1, 2 and 3 events
    assert [_whole_log_size(sql, t) for t in tenants] == [6 + 40, 80, 120]


def test_the_tenants_a_process_knows_are_bounded_and_a_forgotten_one_is_written_as_new(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], monkeypatch: Any
) -> None:
    """The tenants whose head a process has seen are kept as its heads are,
    the least recently written making room: each tenant ever written stayed
    for good (some 10 MB for 100,000 tenants, helper-226). A tenant forgotten
    is written as a tenant never seen: its head created if need be, then
    locked."""
    monkeypatch.setattr(appender_module, "_KEPT_HEADS", 2)
    tenants = [f"{tenant}-{i}" for i in range(5)]

    async def run() -> tuple[int, list[int]]:
        appender = Appender(server.database)
        appender.start()
        try:
            for name in tenants:
                await appender.append(name, [_event("event")])
            known = max(len(lane._known_tenants) for lane in (appender._small, appender._large))
            again = [(await appender.append(name, [_event("again")]))[0].seq for name in tenants]
            return known, again
        finally:
            await appender.stop()

    known, again = server.run(run())
    assert known == 2
    assert again == [2] * 5
    assert [_whole_log_size(sql, name) for name in tenants] == [2] * 5


def test_a_tenant_the_process_wrote_last_is_written_without_a_lock(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """The statements of each commit, as spans: a write from a kept head is
    the one statement (no head lock; its idempotency keys looked up in it);
    when another process moved the head, that statement writes nothing and the
    batch is written under lock (ADR 0024), as when a key is found stored."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)

    def statements() -> list[str]:
        names = [s.name for s in exporter.get_finished_spans() if s.name.split()[0].isupper()]
        exporter.clear()
        return names

    async def run() -> list[list[str]]:
        db = await Database.open(
            service_login_url(migrated_database_url), min_size=1, max_size=2, tracer=tracer
        )
        traced, other = Appender(db, tracer=tracer), Appender(server.database)
        traced.start()
        other.start()
        seen = []
        try:
            for appender in (traced, traced, other, traced, traced):
                [outcome] = await appender.append(tenant, [_event("event")])
                assert isinstance(outcome, Appended)
                seen.append(statements())
            keyed = _event("event", idempotency_key=f"key-{uuid.uuid4()}")
            for _ in range(2):  # written, then retried
                [outcome] = await traced.append(tenant, [keyed])
                assert isinstance(outcome, Appended)
                seen.append(statements())
        finally:
            await traced.stop()
            await other.stop()
            await db.close()
        return seen

    first, kept, moved, retried, kept_again, keyed, replayed = server.run(run())
    assert first[-2:] == ["SELECT chain_heads", "UPDATE chain_heads"]  # locked: the head unknown
    assert kept == kept_again == ["UPDATE chain_heads"]
    assert moved == []  # another process's appender (untraced)
    assert retried == ["UPDATE chain_heads", "SELECT chain_heads", "UPDATE chain_heads"]
    assert keyed == ["UPDATE chain_heads"]  # its key looked up by the write itself
    # Found stored: nothing written, and the key's own lookup answers with the event,
    # no lock taken (helper-78).
    assert replayed == ["UPDATE chain_heads", "SELECT events"]


def test_a_write_from_a_head_kept_before_a_periods_time_was_read_is_written_under_lock(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """A range of a period reads its time while it rewrites the tenant's head
    as it is (a new row version; store/events.py, `time_once_appended`), here
    from another pool, as another process would. The write from the head
    kept before it writes nothing, and is written under lock, stamped after
    the time read: a write stamped before it that had not yet taken the head
    cannot commit into the period after its range. The next is from the
    kept head again."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)

    def statements() -> list[str]:
        names = [s.name for s in exporter.get_finished_spans() if s.name.split()[0].isupper()]
        exporter.clear()
        return names

    async def run() -> tuple[list[list[str]], datetime, datetime]:
        db = await Database.open(
            service_login_url(migrated_database_url), min_size=1, max_size=2, tracer=tracer
        )
        traced = Appender(db, tracer=tracer)
        traced.start()
        seen = []
        try:
            for _ in range(2):  # the head unknown, then kept
                await traced.append(tenant, [_event("event")])
                seen.append(statements())
            read = await time_once_appended(
                server.database, tenant_id=tenant, clock=lambda: datetime.now(UTC), seconds=5
            )
            for _ in range(2):
                [outcome] = await traced.append(tenant, [_event("event")])
                assert isinstance(outcome, Appended)
                seen.append(statements())
                if len(seen) == 3:
                    received = outcome.received_at
        finally:
            await traced.stop()
            await db.close()
        return seen, read, received

    (_, kept, fenced, kept_again), read, received = server.run(run())
    assert kept == kept_again == ["UPDATE chain_heads"]
    assert fenced == ["UPDATE chain_heads", "SELECT chain_heads", "UPDATE chain_heads"]
    assert received > read  # stamped anew, under the lock


def test_the_appenders_statements_are_planned_once(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """Every statement the appender runs reads and writes by key, so one
    generic plan serves every run (ADR 0032). Left to choose, PostgreSQL planned
    the idempotency-key lookup anew for each run, across every partition's index,
    for longer than the lookup took."""

    async def run() -> list[Prepared]:
        async with one_connection_database(migrated_database_url) as db:
            appender = Appender(db)
            appender.start()
            try:
                # Twice RUNS: the write's Merkle nodes are none at every other
                # leaf, which psycopg counts as another statement.
                for _ in range(2 * RUNS):
                    event = _event("event", idempotency_key=f"key-{uuid.uuid4()}")
                    [outcome] = await appender.append(tenant, [event])
                    assert isinstance(outcome, Appended)
                    # Its retry: found by the write's own lookup, answered by the
                    # locked path's (_FIND_KEYS).
                    [again] = await appender.append(tenant, [event])
                    assert isinstance(again, Appended) and again.deduplicated
            finally:
                await appender.stop()
            return await prepared_statements(db, tenant)

    prepared = server.run(run())
    assert the_one(prepared, "SELECT k.tenant_id").planned_once  # the key lookup, under lock
    # The write, which looks its keys up itself when written from a kept head.
    assert any(
        p.generic_plans
        for p in prepared
        if "CROSS JOIN LATERAL" in p.statement and "updated AS" in p.statement
    )
    assert [p.statement for p in prepared if p.custom_plans] == []


def _whole_log_size(sql: psycopg.Connection[Any], tenant: str) -> int:
    """The tenant's size, once its events are checked to be seq 1..size, each
    leaf its record's hash, and its stored Merkle nodes and head exactly what
    those leaves make."""
    rows = sql.execute(
        "SELECT seq, record, leaf_hash FROM events WHERE tenant_id = %s ORDER BY seq", [tenant]
    ).fetchall()
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
    frontier: list[bytes] = []
    nodes: set[tuple[int, int, bytes]] = set()
    for size, (_, record, leaf) in enumerate(rows):
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
    return len(rows)


def _views(count: int) -> list[bytes]:
    """Caller views of 100 bytes or so each."""
    return [event_pb2.Event(description="x" * 96).SerializeToString()] * count


@pytest.mark.parametrize(
    "bound",
    [{"max_pending_events": 2}, {"max_pending_bytes": 2 * len(_views(1)[0])}],
    ids=["events", "bytes"],
)
def test_an_overloaded_appender_refuses_with_a_retry_delay_and_writes_nothing(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], bound: dict[str, int]
) -> None:
    """Callers queued without bound behind a slow commit (a head locked
    elsewhere, a flood of batches) until their deadlines passed, and their
    retries queued more. Past the limit (in events, or in bytes: events may
    be of 64 KiB) a call is refused at once, with when to retry, and nothing
    of it is written."""
    appender = Appender(server.database, max_wait=0.0, batch_events=1, **bound)

    async def begin() -> None:
        appender.start()
        await appender.append(tenant, [_event("event")], _views(1))  # its head exists

    server.run(begin())
    tasks: list[asyncio.Task[Any]] = []

    async def overload() -> BaseException | None:
        tasks.append(asyncio.create_task(appender.append(tenant, [_event("a")], _views(1))))
        await asyncio.sleep(0)  # handed in
        while appender._small._pending.events:  # taken, and waiting for the head's lock
            await asyncio.sleep(0.01)
        queued = appender.append(tenant, [_event("b"), _event("c")], _views(2))
        tasks.append(asyncio.create_task(queued))
        while appender._small._pending.events < 2:
            await asyncio.sleep(0.01)
        try:
            await appender.append(tenant, [_event("d")], _views(1))
        except ResourceExhausted as refused:
            return refused
        return None

    with sql.transaction():
        sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
        refused = server.run(overload())
    assert isinstance(refused, ResourceExhausted) and refused.retry_after > 0
    assert refused.reason == "OVERLOADED"  # not the export rate, after which bundles prove

    async def finish() -> list[Any]:
        try:
            return await asyncio.gather(*tasks)
        finally:
            await appender.stop()

    written = [outcome.seq for outcomes in server.run(finish()) for outcome in outcomes]
    assert written == [2, 3, 4]  # the queued ones, and not the refused one


def test_a_head_held_elsewhere_fails_its_tenant_alone_and_is_not_waited_for_again(
    server: ServerThread,
    tenant: str,
    migrated_database_url: str,
    sql: psycopg.Connection[Any],
) -> None:
    """A process frozen mid-append keeps its head's lock until TCP gives up
    (hours); one appender task writes every tenant of a process, so each of
    them waited as long. The wait is bounded; the tenant held is refused
    (UNAVAILABLE, retry later) and, for a while, without another wait; the
    rest of its batch is written."""
    other = f"{tenant}-other"
    with own_appender(
        server, migrated_database_url, tenant, other, first_event=lambda: _event("event"),
        system_lock_timeout=0.2, max_wait=0.2,
    ) as (_, appender):  # fmt: skip
        with sql.transaction():
            sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
            held, [written] = server.run(_one_batch(appender, tenant, other), timeout=30)
        assert isinstance(held, Unavailable) and held.retry_after >= 10
        assert written.seq == 2  # its neighbour in the batch
        # Let go now, but not tried again for a while: no wait for a frozen process.
        with pytest.raises(Unavailable):
            server.run(appender.append(tenant, [_event("event")]))
        assert sql.execute(
            "SELECT tree_size FROM chain_heads WHERE tenant_id = %s", [tenant]
        ).fetchone() == (1,)


def test_a_head_let_go_after_the_lock_timeout_fails_no_one(
    server: ServerThread,
    tenant: str,
    migrated_database_url: str,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A head held a little past the lock timeout (a change committing, an
    append of another process), let go before the appender looked which
    heads were held: none was, and the whole batch, every tenant's events in
    it, was failed UNAVAILABLE. It is written now. (The look is made to take
    a second here, for the test to let the head go meanwhile.)"""
    slow_look = "SELECT set_config('lock_timeout', '100ms', true), pg_sleep(1)"
    monkeypatch.setattr(appender_module, "_HEADS_HELD_LOCK_TIMEOUT", slow_look)
    other = f"{tenant}-other"
    looking = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND state = 'active' AND query LIKE %s"
    )
    with own_appender(
        server, migrated_database_url, tenant, other, first_event=lambda: _event("event"),
        system_lock_timeout=0.3, max_wait=0.2,
    ) as (_, appender):  # fmt: skip
        with sql.transaction():
            sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
            batch = asyncio.run_coroutine_threadsafe(
                _one_batch(appender, tenant, other), server.loop
            )
            until(lambda: count_now(sql, looking, ["%pg_sleep(1)%"]) > 0, batch)
        answers = batch.result(timeout=30)
    assert [answer[0].seq for answer in answers] == [2, 2], answers


def test_a_lock_on_every_head_fails_the_batch_plainly(
    server: ServerThread, migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock on the heads' whole table (VACUUM FULL, ALTER TABLE, pg_repack
    on chain_heads): the look for the heads held, after the lock timeout,
    waited it out again, and its failure was logged as a bug ("unexpected
    failure", with a traceback) and answered "the append failed" (helper-202)."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    with (
        database_of_its_own(migrated_database_url, "heads_locked") as own_url,
        own_appender(
            server, own_url, tenant, first_event=lambda: _event("event"),
            system_lock_timeout=0.2, max_wait=0.01,
        ) as (_, appender),
    ):  # fmt: skip
        with psycopg.connect(own_url) as holder:
            holder.execute("LOCK TABLE chain_heads IN ACCESS EXCLUSIVE MODE")
            with caplog.at_level(logging.WARNING), pytest.raises(Unavailable) as refused:
                server.run(appender.append(tenant, [_event("event")]), timeout=30)
        assert "chain_heads" in refused.value.message and refused.value.retry_after > 0
        assert not [r.getMessage() for r in logged(caplog, on=server) if r.exc_info]
        [written] = server.run(appender.append(tenant, [_event("event")]))  # let go
        assert written.seq == 2


def test_a_retry_from_a_kept_head_needs_no_lock(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A retry's key, found by the write's own lookup, sent its whole batch to
    the locked path: with the head's row held by another session (a process
    frozen mid-append), the retry failed after the lock timeout where it had
    been answered at once (helper-78). It is looked up apart and answered
    from the kept head again, without a statement or a lock."""

    async def write() -> tuple[Appender, Any, Appended]:
        appender = Appender(server.database)
        appender.start()
        keyed = _event("keyed", idempotency_key=f"key-{uuid.uuid4()}")
        [stored] = await appender.append(tenant, [keyed])
        await appender.append(tenant, [_event("after")])  # the head kept is the latest
        assert isinstance(stored, Appended)
        return appender, keyed, stored

    appender, keyed, stored = server.run(write())
    try:
        with sql.transaction():
            sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
            [again] = server.run(appender.append(tenant, [keyed]))
    finally:
        server.run(appender.stop())
    assert isinstance(again, Appended) and again.deduplicated and again.seq == stored.seq


def test_a_retry_whose_event_the_batch_cannot_write_is_answered_with_the_stored_one(
    server: ServerThread, tenant: str
) -> None:
    """Stored at the record limit, an event is one byte over it once its seq
    has one more digit: its retry wrote nothing, so no statement looked its
    key up, and it was answered INVALID_ARGUMENT, not with the stored event
    (helper-78)."""
    now = datetime.now(UTC)

    def at_the_limit(seq: int) -> Any:
        pad = MAX_RECORD_BYTES - 400
        while True:
            event = _event("large", idempotency_key="at-the-limit", details={"p": "x" * pad})
            fields = ServerFields(tenant, str(uuid.uuid4()), seq, format_timestamp(now))
            size = len(finalize_record(event, fields))
            if size == MAX_RECORD_BYTES:
                return event
            pad += MAX_RECORD_BYTES - size

    async def run() -> tuple[Any, Any]:
        appender = Appender(server.database)
        appender.start()
        try:
            for _ in range(8):
                await appender.append(tenant, [_event("small")])
            event = at_the_limit(9)
            [stored] = await appender.append(tenant, [event])
            await appender.append(tenant, [_event("small")])  # seq 10: the retry's would be 11
            [again] = await appender.append(tenant, [event])
            return stored, again
        finally:
            await appender.stop()

    stored, again = server.run(run())
    assert isinstance(stored, Appended) and stored.seq == 9
    assert isinstance(again, Appended) and again.deduplicated and again.seq == 9


# --- the lane for large submissions (ADR 0002's addendum) ------------------------------

_LARGE = [b"x" * 1000]  # over `large_bytes=1000`: a large submission in these tests


@contextlib.asynccontextmanager
async def _small_lane_held(
    appender: Appender, sql: psycopg.Connection[Any], blocker: str
) -> AsyncIterator[asyncio.Task[Any]]:
    """The small lane held on `blocker`'s head, which `sql` locks: a write of
    `blocker`'s taken by the lane and waiting for the lock, till the end of
    the block, when the lock goes. That write (its task)."""
    with sql.transaction():
        sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [blocker])
        held = asyncio.create_task(appender.append(blocker, [_event("held")], [b"v"]))
        await asyncio.sleep(0)  # handed in
        while appender._small._pending.events:  # taken, and waiting for the lock
            await asyncio.sleep(0.01)
        yield held


async def _lanes(url: str, *, pool: int = 4, **options: Any) -> tuple[Database, Appender]:
    """An appender over a pool of `pool`, which waits 2 s for a connection."""
    db = await Database.open(service_login_url(url), min_size=1, max_size=pool, timeout=2)
    appender = Appender(db, large_bytes=1000, **options)
    appender.start()
    return db, appender


def test_a_large_submission_given_up_by_its_caller_still_leads_its_tenants_writes(
    server: ServerThread, migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A large RecordBatch's caller may give up (its deadline) while its batch
    is written. Its tenant was then forgotten by the large lane: its next
    Record went to the small lane, waited there for the head the large lane
    held, with every tenant of its batch, and the tenant was refused for 30 s
    as held by another server process. It follows the batch still being
    written, in the large lane (helper-164)."""
    other = f"{tenant}-other"

    async def run() -> list[Any]:
        db, appender = await _lanes(migrated_database_url)
        try:
            for name in (tenant, other):
                await appender.append(name, [_event("first")], [b"v"])
            with sql.transaction():  # the large write waits for the head, as a long one
                sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
                large = asyncio.create_task(appender.append(tenant, [_event("large")], _LARGE))
                await asyncio.sleep(0.05)
                large.cancel()  # its caller's deadline
                behind = asyncio.create_task(appender.append(tenant, [_event("s")], [b"v"]))
                beside = await appender.append(other, [_event("s")], [b"v"])
                assert not behind.done()
            return [beside, await behind, await appender.append(tenant, [_event("t")], [b"v"])]
        finally:
            await appender.stop()
            await db.close()

    beside, behind, later = server.run(run(), timeout=60)
    assert [beside[0].seq, behind[0].seq, later[0].seq] == [2, 3, 4]  # the large one: seq 2


def test_a_large_submission_waits_for_its_tenants_small_writes_already_handed_in(
    server: ServerThread, migrated_database_url: str, tenant: str
) -> None:
    """A small submission of the tenant handed to the small lane just before
    its large one: the large lane locked the head first, and the small lane's
    batch waited for it with every tenant in it (helper-164). The large one
    waits for the small lane's writes of its tenant instead."""
    other = f"{tenant}-other"

    async def run() -> list[Any]:
        db, appender = await _lanes(migrated_database_url, max_wait=0.1)  # waits for company
        try:
            for name in (tenant, other):
                await appender.append(name, [_event("first")], [b"v"])
            small = asyncio.create_task(appender.append(tenant, [_event("s")], [b"v"]))
            beside = asyncio.create_task(appender.append(other, [_event("s")], [b"v"]))
            await asyncio.sleep(0)
            large = await appender.append(tenant, [_event("large")], _LARGE)
            return [await small, await beside, large]
        finally:
            await appender.stop()
            await db.close()

    small, beside, large = server.run(run(), timeout=60)
    assert [small[0].seq, beside[0].seq, large[0].seq] == [2, 2, 3]


def test_a_tenants_backlog_of_small_writes_is_not_ahead_of_another_tenants_record(
    server: ServerThread, migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A tenant sending RecordBatches of 1,000 small events faster than they
    were written kept thousands waiting in the small lane, each one under 1 MiB:
    another tenant's Record waited behind them all, in a commit of 5,000
    events, 1.3 s rather than 2 ms. A submission whose tenant's backlog in the
    small lane reaches the large lane's bounds (here 4 events) is written by
    the large lane, with that tenant's next ones, in order. Here the small
    lane is held on a third tenant's head while the backlog builds."""
    quiet, blocker = f"{tenant}-quiet", f"{tenant}-blocker"

    async def run() -> list[Any]:
        db, appender = await _lanes(migrated_database_url, large_events=4)
        try:
            for name in (tenant, quiet, blocker):
                await appender.append(name, [_event("first")], [b"v"])
            async with _small_lane_held(appender, sql, blocker) as held:
                backlog = []
                for n in range(3):
                    two = [_event(f"b{n}"), _event(f"c{n}")]
                    backlog.append(asyncio.create_task(appender.append(tenant, two, [b"v"] * 2)))
                    await asyncio.sleep(0.01)
                record = asyncio.create_task(appender.append(quiet, [_event("q")], [b"v"]))
                await asyncio.sleep(0.01)
            answered = await record
            assert not backlog[-1].done()  # not in the quiet tenant's commit
            return [answered, *(await asyncio.gather(*backlog)), await held]
        finally:
            await appender.stop()
            await db.close()

    answered, *backlog, _held = server.run(run(), timeout=60)
    assert answered[0].seq == 2
    assert [[outcome.seq for outcome in each] for each in backlog] == [[2, 3], [4, 5], [6, 7]]


def test_writes_waiting_to_follow_their_tenants_backlog_count_in_the_pending_limits(
    server: ServerThread, migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A write bound for the large lane waits for its tenant's writes in the
    small lane first, and its tenant's next ones wait with it: uncounted there,
    a flood of batches went on waiting without bound rather than being refused
    OVERLOADED past the tenant's half of SEALTRAIL_APPEND_MAX_PENDING_EVENTS."""
    blocker = f"{tenant}-blocker"

    async def run() -> tuple[int, list[Any]]:
        db, appender = await _lanes(migrated_database_url, large_events=2, max_pending_events=6)
        tasks: list[asyncio.Task[Any]] = []
        try:
            for name in (tenant, blocker):
                await appender.append(name, [_event("first")], [b"v"])
            async with _small_lane_held(appender, sql, blocker) as held:
                for n in range(6):
                    one = appender.append(tenant, [_event(f"e{n}")], [b"v"])
                    tasks.append(asyncio.create_task(one))
                    await asyncio.sleep(0.01)
                waiting = appender._waiting_of(tenant)[0]
            await held
            return waiting, await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await appender.stop()
            await db.close()

    waiting, outcomes = server.run(run(), timeout=60)
    assert waiting <= 3  # the tenant's half
    refused = [outcome for outcome in outcomes if isinstance(outcome, ResourceExhausted)]
    assert len(refused) == 3 and all(each.reason == "OVERLOADED" for each in refused)
    written = [outcome[0].seq for outcome in outcomes if isinstance(outcome, list)]
    assert written == [2, 3, 4]


def test_a_large_write_leaves_the_small_lane_its_connection(
    server: ServerThread, migrated_database_url: str, tenant: str
) -> None:
    """On a pool of 3, bulk reads (a stream catching up) and a change each
    hold their share: the large lane took the connection left for the small
    lane, whose batch then failed UNAVAILABLE for want of one (helper-164). It
    takes its connection within the bulk share, and waits for it there."""
    other = f"{tenant}-other"

    async def run() -> Any:
        db, appender = await _lanes(migrated_database_url, pool=3)
        try:
            await appender.append(other, [_event("first")], [b"v"])
            async with db.bulk_connection(tenant), db.connection(tenant):  # a reader, a change
                large = asyncio.create_task(appender.append(tenant, [_event("large")], _LARGE))
                await asyncio.sleep(0.05)
                beside = await appender.append(other, [_event("s")], [b"v"])
                assert not large.done()
            await large
            return beside
        finally:
            await appender.stop()
            await db.close()

    assert server.run(run(), timeout=60)[0].seq == 2


def test_on_a_pool_of_two_every_write_goes_by_one_lane(
    server: ServerThread, migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A pool of 2 has no room for a second lane beside the changes' share
    and the connection left for the appender: a large write there waits in
    the one lane, behind what is before it, as all writes did."""
    other = f"{tenant}-other"

    async def run() -> list[Any]:
        db, appender = await _lanes(migrated_database_url, pool=2)
        try:
            await appender.append(other, [_event("first")], [b"v"])
            with sql.transaction():
                sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [other])
                held = asyncio.create_task(appender.append(other, [_event("held")], [b"v"]))
                await asyncio.sleep(0.05)
                large = asyncio.create_task(appender.append(tenant, [_event("large")], _LARGE))
                await asyncio.sleep(0.05)
                assert not large.done()  # behind the held batch, in the one lane
            return [await held, await large]
        finally:
            await appender.stop()
            await db.close()

    server.run(run(), timeout=60)


def test_the_pending_limits_hold_for_both_lanes_together(
    server: ServerThread, migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """SEALTRAIL_APPEND_MAX_PENDING_EVENTS bounds what a process holds, as
    documented: each lane counted only its own, twice the bound in all
    (helper-164)."""
    large_tenant = f"{tenant}-large"

    async def run() -> tuple[int, list[Any]]:
        db, appender = await _lanes(migrated_database_url, max_pending_events=3)
        tasks: list[asyncio.Task[Any]] = []
        try:
            for name in (tenant, large_tenant):
                await appender.append(name, [_event("first")], [b"v"])
            with sql.transaction():
                sql.execute(
                    "SELECT FROM chain_heads WHERE tenant_id = ANY(%s) FOR UPDATE",
                    [[tenant, large_tenant]],
                )
                for name, views in [(tenant, [b"v"]), (large_tenant, _LARGE)] * 4:
                    tasks.append(asyncio.create_task(appender.append(name, [_event("e")], views)))
                    await asyncio.sleep(0.02)
                waiting = appender._waiting()[0]
            return waiting, await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await appender.stop()
            await db.close()

    waiting, outcomes = server.run(run(), timeout=60)
    assert waiting <= 3
    assert any(isinstance(outcome, ResourceExhausted) for outcome in outcomes)


def test_a_lock_on_the_events_table_is_waited_for_once_and_named(
    server: ServerThread, migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock on the events table itself (an operator's `LOCK TABLE events`),
    not on the heads: the write waited out the lock timeout, found no head
    held, was written again and waited it out again (about 10 s by default),
    then was answered "a tenant's log was locked elsewhere". It waits once,
    and the answer and the log say which table is locked, and by whom."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    lock_timeout = 1.5
    with (
        database_of_its_own(migrated_database_url, "events_locked") as own_url,
        own_appender(
            server, own_url, tenant, first_event=lambda: _event("event"),
            system_lock_timeout=lock_timeout, max_wait=0.01,
        ) as (_, appender),
    ):  # fmt: skip
        with psycopg.connect(own_url, application_name="the-operator") as holder:
            holder.execute("LOCK TABLE events")
            began = time.monotonic()
            with caplog.at_level(logging.WARNING), pytest.raises(Unavailable) as refused:
                server.run(appender.append(tenant, [_event("event")]), timeout=30)
            took = time.monotonic() - began
            pid = holder.info.backend_pid
        told = refused.value.message
        assert "events table" in told and str(pid) in told and "the-operator" in told, told
        assert refused.value.retry_after > 0
        assert took < 1.8 * lock_timeout, took  # once, not twice
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "events table" in said and str(pid) in said, said
        [written] = server.run(appender.append(tenant, [_event("event")]))  # let go
        assert written.seq == 2


def test_a_batch_answered_is_not_held_by_the_appender(migrated_database_url: str) -> None:
    """A lane kept what its last write sent with its commit (its callers'
    submissions, their events and records, for a stop that cuts a write off
    mid-commit) until its next batch began: an idle process held its last
    batch, up to a large lane's one submission however large, for as long as
    it stayed idle. Once a batch is answered, nothing of it is held."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    details = {f"detail_{i}": secrets.token_hex(100) for i in range(150)}  # ~30 KB a record

    async def run() -> int:
        db = await Database.open(service_login_url(migrated_database_url), min_size=1, max_size=4)
        appender = Appender(db)
        appender.start()
        try:
            await appender.append(tenant, [_event("first")])  # its head made
            tracemalloc.start(1)
            try:
                events = [_event(f"events[{n}]", details=details) for n in range(100)]
                answered = await appender.append(tenant, events)
                assert [outcome.seq for outcome in answered] == list(range(2, 102))
                del events, answered
                # A step of its own: the one the answer woke holds its future.
                await asyncio.sleep(0)
                gc.collect()
                snapshot = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
        finally:
            await appender.stop()
            await db.close()
        # What the server's code allocated for the batch and still holds.
        held = snapshot.filter_traces([tracemalloc.Filter(True, "*sealtrail_server*")])
        return sum(stat.size for stat in held.statistics("filename"))

    held = asyncio.run(run())
    assert held < 1_000_000, f"{held} bytes of a batch of some 3 MB still held"
