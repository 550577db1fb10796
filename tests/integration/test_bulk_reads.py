"""Pages of many events (streams catching up, exports, forwarding, alerts) are
read on at most `bulk_connections` of the pool at once
(`Database.bulk_connection`): many readers catching up together, a restart's
worth of streams resuming say, used to take every pooled connection and queue
for more, ahead of every append of the process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from sealtrail import AsyncAuditClient, build_event
from sealtrail_server.store.database import Database, bulk_connections, change_connections
from tests.conftest import ServerThread
from tests.service_login import service_login_url

_SETTLE = 0.3  # seconds in which readers that could get in would have


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "not reached in 10 s"
        await asyncio.sleep(0.01)


def test_changes_and_bulk_reads_always_leave_the_appender_a_connection() -> None:
    assert [bulk_connections(size) for size in (2, 3, 4, 10, 11)] == [1, 1, 1, 4, 5]
    for size in range(3, 101):
        assert change_connections(size) + bulk_connections(size) < size, size


async def test_bulk_reads_take_at_most_their_share_of_the_pool(
    migrated_database_url: str,
) -> None:
    share = bulk_connections(6)
    db = await Database.open(
        service_login_url(migrated_database_url), min_size=6, max_size=6, timeout=2
    )
    inside = most = 0
    release = asyncio.Event()

    async def read() -> None:
        nonlocal inside, most
        async with db.bulk_connection("t-bulk") as conn:
            inside += 1
            most = max(most, inside)
            await conn.execute("SELECT 1")
            await release.wait()
            inside -= 1

    readers = [asyncio.create_task(read()) for _ in range(share + 3)]
    try:
        await _until(lambda: inside == share)
        await asyncio.sleep(_SETTLE)
        assert inside == share
        # What the share leaves is free for everything else.
        async with db.connection("t-bulk") as one, db.system_connection() as other:
            await one.execute("SELECT 1")
            await other.execute("SELECT 1")
    finally:
        release.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*readers)  # the others got their turn, none timed out
        await db.close()
    assert most == share


async def test_streams_catching_up_wait_their_turn_while_appends_and_changes_go_on(
    migrated_database_url: str, tenant: str
) -> None:
    server = ServerThread(migrated_database_url, pool_max_size=4)  # one bulk read at a time
    db = server.service._db
    assert db is not None and bulk_connections(4) == 1
    entered, done = threading.Event(), threading.Event()

    async def slow_page() -> None:
        """Another reader's page, on a pooled connection, as long as it takes."""
        async with db.bulk_connection(tenant):
            entered.set()
            while not done.is_set():
                await asyncio.sleep(0.01)

    try:
        async with AsyncAuditClient(server.target, token=server.token(tenant)) as client:
            first = (await client.record(build_event(action="bulk.read", actor_id="u"))).event
            page = asyncio.run_coroutine_threadsafe(slow_page(), server.loop)
            assert await asyncio.to_thread(entered.wait, 10)
            try:
                received: list[list[int]] = [[] for _ in range(4)]  # more than the pool

                async def catch_up(seqs: list[int]) -> None:
                    async for event in client.stream(after_seq=0):
                        seqs.append(event.seq)
                        if event.seq >= first.seq:
                            return

                streams = [asyncio.create_task(catch_up(seqs)) for seqs in received]
                await asyncio.sleep(_SETTLE)
                assert not any(received) and not any(stream.done() for stream in streams)
                async with asyncio.timeout(5):  # neither waits behind the readers
                    await client.record(build_event(action="bulk.read", actor_id="u"))
                    await client.set_legal_hold(True, reason="bulk reads")
            finally:
                done.set()
                page.result(10)
            async with asyncio.timeout(10):
                await asyncio.gather(*streams)
            assert all(seqs[-1] == first.seq for seqs in received)
    finally:
        server.close()


async def test_a_tenants_bulk_read_goes_before_another_tenants_queue(
    migrated_database_url: str,
) -> None:
    """One tenant's many readers (its streams resuming, its exports) hold the
    whole share and queue for more: another tenant's reader used to wait
    behind every one of them. It now gets the next connection given back."""
    share = bulk_connections(10)
    db = await Database.open(
        service_login_url(migrated_database_url), min_size=2, max_size=10, timeout=2
    )
    order: list[str] = []
    releases = [asyncio.Event() for _ in range(share + 4)]

    async def read(tenant: str, release: asyncio.Event) -> None:
        async with db.bulk_connection(tenant) as conn:
            order.append(tenant)
            await conn.execute("SELECT 1")
            await release.wait()

    readers = [asyncio.create_task(read("t-busy", releases[n])) for n in range(share + 3)]
    try:
        await _until(lambda: len(order) == share)
        await asyncio.sleep(_SETTLE)  # the busy tenant's further readers queue first
        readers.append(asyncio.create_task(read("t-other", releases[-1])))
        await asyncio.sleep(_SETTLE)
        assert order == ["t-busy"] * share  # the share is held
        releases[0].set()  # one connection given back
        await _until(lambda: len(order) == share + 1)
        assert order[-1] == "t-other"
    finally:
        for release in releases:
            release.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*readers)
        await db.close()
