"""Pages of many events (streams catching up, exports, forwarding, alerts) are
read through at most half the pool at once (`Database.bulk_connection`): many
readers catching up together, a restart's worth of streams resuming say, used
to take every pooled connection, and every append of the process waited
behind their pages, then failed."""

from __future__ import annotations

import asyncio

from sealtrail import AsyncAuditClient, build_event
from sealtrail_server.store.database import Database
from tests.conftest import ServerThread
from tests.service_login import service_login_url

_SETTLE = 0.3  # seconds in which readers that could get in would have


async def test_bulk_reads_take_at_most_half_the_pool(migrated_database_url: str) -> None:
    db = await Database.open(
        service_login_url(migrated_database_url), min_size=1, max_size=4, timeout=2
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

    try:
        readers = [asyncio.create_task(read()) for _ in range(5)]
        await asyncio.sleep(_SETTLE)
        assert inside == 2
        # The other half of the pool is free for everything else.
        async with db.connection("t-bulk") as one, db.system_connection() as other:
            await one.execute("SELECT 1")
            await other.execute("SELECT 1")
        release.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*readers)  # the others got their turn, none timed out
        assert most == 2
    finally:
        await db.close()


async def test_a_stream_catching_up_waits_for_a_bulk_read_while_appends_go_on(
    migrated_database_url: str, tenant: str
) -> None:
    server = ServerThread(migrated_database_url, pool_max_size=2)  # one bulk read at a time
    gate = server.service._db._bulk_reads
    try:
        async with AsyncAuditClient(server.target, token=server.token(tenant)) as client:
            first = await client.record(build_event(action="bulk.read", actor_id="u"))
            server.run(gate.acquire())  # another reader's page, as long as it takes
            try:
                received: list[int] = []

                async def catch_up() -> None:
                    async for event in client.stream(after_seq=0):
                        received.append(event.seq)
                        if event.seq >= first.event.seq:
                            return

                stream = asyncio.create_task(catch_up())
                await asyncio.sleep(_SETTLE)
                assert not received and not stream.done()
                async with asyncio.timeout(5):  # appends are not behind the reads
                    await client.record(build_event(action="bulk.read", actor_id="u"))
            finally:
                server.loop.call_soon_threadsafe(gate.release)
            async with asyncio.timeout(10):
                await stream
            assert received[-1] == first.event.seq
    finally:
        server.close()
