"""A call whose database connection fails is UNAVAILABLE with a retry delay,
its answer saying only that: the database's own words (which may name its
host, port, role or processes) stay in the server's log (helper-119)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import pytest

from sealtrail_server.domain.errors import SEE_THE_LOG, Unavailable
from sealtrail_server.store.database import Database
from tests.service_login import service_login_url


async def test_a_lost_connection_answers_unavailable_without_the_databases_words(
    migrated_database_url: str, sql: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.open(service_login_url(migrated_database_url), min_size=1, max_size=2)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(Unavailable) as refused:
            async with db.connection("t-lost") as conn:
                cursor = await conn.execute("SELECT pg_backend_pid()")
                [pid] = await cursor.fetchone() or [None]
                sql.execute("SELECT pg_terminate_backend(%s)", [pid])
                await conn.execute("SELECT 1")
        assert refused.value.retry_after > 0
        assert refused.value.message == f"the database is unavailable; {SEE_THE_LOG}"
        assert "terminating connection" in caplog.text  # what the database said
        async with db.connection("t-lost") as conn:  # the pool goes on without it
            await conn.execute("SELECT 1")
    finally:
        await db.close()


async def test_no_free_connection_says_so(migrated_database_url: str) -> None:
    db = await Database.open(
        service_login_url(migrated_database_url), min_size=1, max_size=1, timeout=0.2
    )
    try:
        async with db.connection("t-busy"):
            with pytest.raises(Unavailable, match="couldn't get a connection") as refused:
                async with db.connection("t-busy"):
                    pass
        assert db.checkout_timeouts == 1 and refused.value.retry_after > 0
    finally:
        await db.close()


async def test_a_transaction_ended_for_idling_answers_unavailable(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL ends a session idle in a transaction past an operator's
    idle_in_transaction_session_timeout (SQLSTATE 25P03, which psycopg does
    not class as an OperationalError): worth a retry, as any lost connection
    (helper-202)."""
    db = await Database.open(service_login_url(migrated_database_url), min_size=1, max_size=2)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(Unavailable) as refused:
            async with db.connection("t-idle") as conn, conn.transaction():
                await conn.execute("SET LOCAL idle_in_transaction_session_timeout = '50ms'")
                await asyncio.sleep(0.5)
                await conn.execute("SELECT 1")
        assert refused.value.retry_after > 0
        assert refused.value.message == f"the database is unavailable; {SEE_THE_LOG}"
        async with db.connection("t-idle") as conn:  # the pool goes on without it
            await conn.execute("SELECT 1")
    finally:
        await db.close()
