"""A pooled connection comes back to the pool however its holder ends: a
call cancelled twice (its client gone, then a stop's or a task group's
cancel) left `pool.connection()` while it gave the connection back, and the
pool lost it for good; four such calls, and a pool of ten had six. The full
suite once saw four lost on the shared server (test_client_disconnects)."""

from __future__ import annotations

import asyncio

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
