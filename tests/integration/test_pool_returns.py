"""A pooled connection comes back to the pool however its holder ends: a
call cancelled twice (its client gone, then a stop's or a task group's
cancel) left `pool.connection()` while it gave the connection back, and the
pool lost it for good; four such calls, and a pool of ten had six. The full
suite once saw four lost on the shared server (test_client_disconnects)."""

from __future__ import annotations

import asyncio
import gc

from sealtrail_server.store.database import Database
from tests.cancels import cancelled_twice
from tests.service_login import service_login_url

_ROUNDS = 200


async def test_calls_cancelled_twice_give_every_connection_back(
    migrated_database_url: str,
) -> None:
    db = await Database.open(service_login_url(migrated_database_url), min_size=4, max_size=4)
    try:

        async def call() -> None:  # a statement in a transaction, as changes make
            async with db.connection("t-returns") as conn, conn.transaction():
                await conn.execute("SELECT pg_sleep(0.02)")
                await conn.execute("SELECT 1")

        # Cancelled anywhere: waiting for a connection, mid-statement, in the
        # rollback, and again while each gives its connection back.
        await cancelled_twice(call, calls=8, rounds=_ROUNDS, within=0.03, seed=7)
        async with asyncio.timeout(10):  # every connection is back, or replaced
            while (stats := db.pool.get_stats())["pool_available"] < 4:
                await asyncio.sleep(0.05)
        assert stats["pool_size"] == 4, stats
        async with db.connection("t-returns") as conn:  # and the pool serves
            await conn.execute("SELECT 1")
    finally:
        await db.close()


def test_a_task_dropped_holding_a_connection_gives_it_back_as_it_is_collected(
    migrated_database_url: str,
) -> None:
    """A task left pending as its loop stopped (a stop's, in the full suite) is
    closed by the garbage collector, with no loop running: the return in a
    task of its own could not start there ("no current event loop"; "coroutine
    ignored GeneratorExit" where a loop ran), and the connection was lost."""
    loop = asyncio.new_event_loop()
    try:
        url = service_login_url(migrated_database_url)
        db = loop.run_until_complete(Database.open(url, min_size=1, max_size=2))
        held = asyncio.Event()

        async def hold() -> None:
            async with db.connection("t-dropped"):
                held.set()
                await asyncio.Event().wait()  # for ever

        task = loop.create_task(hold())
        loop.run_until_complete(held.wait())
        del task  # dropped, never cancelled
        gc.collect()
        stats = db.pool.get_stats()
        assert stats["pool_size"] == stats["pool_available"], stats
        loop.run_until_complete(db.close())
    finally:
        loop.close()
