"""The asyncio client against a real server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from sealtrail import (
    AbortedError,
    AsyncAuditClient,
    AuditClient,
    EventLoopError,
    NotFoundError,
    build_event,
    build_filter,
    build_sink,
)
from tests.conftest import ServerThread


async def test_async_client_records_and_reads(server: ServerThread, tenant: str) -> None:
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        results = await asyncio.gather(
            *(audit.record(action="file.read", actor_id=f"u{i}") for i in range(40))
        )
        assert sorted(r.event.seq for r in results) == list(range(1, 41))

        batch = await audit.record_batch(
            [build_event(action="file.write", actor_id="bulk") for _ in range(10)]
        )
        assert [entry.event.seq for entry in batch if entry.event] == list(range(41, 51))

        stored = await audit.get_event(results[0].event.id)
        assert stored == results[0].event
        writes = [e.seq async for e in audit.query(build_filter(actions="file.write"))]
        assert writes == list(range(50, 40, -1))
        first_five = [e.seq async for e in audit.query(order="oldest", page_size=2, limit=5)]
        assert first_five == [1, 2, 3, 4, 5]
        with pytest.raises(NotFoundError):
            await audit.get_event("01890a5d-ac96-774b-bcce-b302099a8057")


async def test_async_client_changes_retention_on_condition_of_an_etag(
    server: ServerThread, tenant: str
) -> None:
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        read = await audit.get_retention_policy()
        changed = await audit.set_retention_policy("1y", etag=read.policy.etag)
        assert changed.policy.default_days == 365
        with pytest.raises(AbortedError, match="changed since etag"):
            await audit.set_retention_policy("30d", etag=read.policy.etag)
        placed = await audit.set_legal_hold(True, reason="Case 3", etag=read.legal_hold.etag)
        with pytest.raises(AbortedError):
            await audit.set_legal_hold(False, etag=read.legal_hold.etag)
        released = await audit.set_legal_hold(False, etag=placed.legal_hold.etag)
        assert not released.legal_hold.on
        preview = await audit.preview_retention_policy("30d", etag=changed.policy.etag)
        assert [(rule.rule, rule.days) for rule in preview.rules] == [("default", 30)]
        assert (preview.events, preview.at_least) == (0, False)  # its events are all of today
        assert (await audit.get_retention_policy()).policy.default_days == 365


@pytest.mark.parametrize("client_kind", ["sync", "async"])
async def test_a_batch_of_a_few_megabytes_is_answered(
    server: ServerThread, tenant: str, client_kind: str
) -> None:
    """The answer of 600 events of 10 KB is 6 MB: over gRPC's default 4 MiB a
    client accepts, so the client refused the answer to a batch the server
    had recorded, and its retry got the same answer."""
    large = [
        build_event(action="file.write", actor_id="bulk", details={"blob": f"{n}" + "x" * 10_000})
        for n in range(600)
    ]
    if client_kind == "sync":
        with AuditClient(server.target, token=server.token(tenant)) as client:
            results = await asyncio.to_thread(client.record_batch, large)
    else:
        async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
            results = await audit.record_batch(large)
    assert [entry.event.details["blob"][:3] for entry in results[:2]] == ["0xx", "1xx"]
    assert len({entry.event.seq for entry in results}) == 600


def test_an_async_client_serves_one_event_loop_after_another(
    server: ServerThread, tenant: str
) -> None:
    """A client made once (at a module's import, say) and used under one
    `asyncio.run` after another, as a job runner or per-test loops do: its
    channel was the first loop's, and every call in a later loop failed with
    RuntimeError "Event loop is closed" (helper-137)."""
    client = AsyncAuditClient(server.target, token=server.token(tenant))

    async def record() -> int:
        return (await client.record(action="job.run", actor_id="u")).event.seq

    async def record_and_close() -> int:
        try:
            return await record()
        finally:
            await client.close()

    assert [asyncio.run(record()), asyncio.run(record()), asyncio.run(record_and_close())] == [
        1,
        2,
        3,
    ]


def test_an_async_client_used_by_two_running_loops_at_once_says_so(
    server: ServerThread, tenant: str
) -> None:
    """Its channel cannot serve both, and closing it under the other loop
    would cancel that loop's calls: a clear error, not a RuntimeError from
    deep in grpc."""
    client = AsyncAuditClient(server.target, token=server.token(tenant))
    other = asyncio.new_event_loop()
    runner = threading.Thread(target=other.run_forever)
    runner.start()
    try:
        first = asyncio.run_coroutine_threadsafe(client.record(action="a.b", actor_id="u"), other)
        assert first.result(timeout=30).event.seq == 1
        with pytest.raises(EventLoopError, match="one AsyncAuditClient per event loop"):
            asyncio.run(client.record(action="a.b", actor_id="u"))
        asyncio.run_coroutine_threadsafe(client.close(), other).result(timeout=30)
    finally:
        other.call_soon_threadsafe(other.stop)
        runner.join()
        other.close()


async def test_async_client_checks_a_saved_checkpoint(server: ServerThread, tenant: str) -> None:
    from sealtrail.tlog import Signer
    from tests.conftest import SIGNING_KEY

    key = Signer.parse(SIGNING_KEY).verifier.text()
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        await audit.record_batch([build_event(action="file.read", actor_id="u") for _ in range(5)])
        saved = (await audit.get_checkpoint(fresh=True)).note
        await audit.record(action="file.write", actor_id="u")
        check = await audit.check_checkpoint(saved, key=key, fresh=True)
    assert check.consistent and (check.saved_size, check.latest_size) == (5, 6)


async def test_async_client_reads_a_sinks_oldest_dead_letters_alone(
    server: ServerThread, client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """`limit` reads the oldest dead letters alone, in one call, as the sinks
    table reads why the oldest was parked."""
    made = build_sink("siem", "webhook", url="https://hooks.example.com/audit",
                      secrets=["whsec_" + "A" * 43 + "="], paused=True)  # fmt: skip
    sink = client.create_sink(made).sink
    for seq, error in ((1, "first refused"), (2, "then refused")):
        sql.execute(
            "INSERT INTO sink_dead_letters (tenant_id, sink_id, id, first_seq, last_seq,"
            " event_count, http_status, error, created_at)"
            " VALUES (%s, %s, gen_random_uuid(), %s, %s, 1, 422, %s, now() + %s * interval '1s')",
            [tenant, sink.id, seq, seq, error, seq],
        )
    async with AsyncAuditClient(server.target, token=server.token(tenant, "admin")) as audit:
        [oldest] = await audit.list_dead_letters(sink.id, limit=1)
        assert oldest.error == "first refused"
        every = await audit.list_dead_letters(sink.id)
        assert [letter.error for letter in every] == ["first refused", "then refused"]
        with pytest.raises(ValueError, match="limit: must be 1 to 1000"):
            await audit.list_dead_letters(sink.id, limit=1001)
    client.delete_sink(sink.id)
