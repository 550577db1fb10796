"""A deployment-wide job's session: the owner's connection holding the job's
advisory lock, so that one process of the deployment runs the job at a time
(the retention purge, the credential backfill); every other process skips its
pass meanwhile."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg

log = logging.getLogger(__name__)

# The session ends itself when its process stops answering (paused, hung, cut
# off): the database then rolls back what it was doing and lets go of the
# job's lock, which would otherwise keep every other process from the job until
# TCP gives up. In a transaction a job never idles but between statements;
# outside one, between its batches.
IDLE_IN_TRANSACTION: Final = "1min"
IDLE_SESSION: Final = "10min"  # PostgreSQL 14 and later


@asynccontextmanager
async def job_session(
    owner_url: str, *, lock_key: int, application_name: str, job: str
) -> AsyncIterator[psycopg.AsyncConnection[Any] | None]:
    """The owner's connection holding the job's lock (`lock_key`), or None if
    another process holds it; `job` names it in the log."""
    async with await psycopg.AsyncConnection.connect(
        owner_url, autocommit=True, application_name=application_name
    ) as conn:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", [lock_key])
        row = await cursor.fetchone()
        if not (row and row[0]):
            log.debug("%s: another process holds the job; skipping", job)
            yield None
            return
        await conn.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
            [IDLE_IN_TRANSACTION],
        )
        if conn.info.server_version >= 140000:
            await conn.execute(
                "SELECT set_config('idle_session_timeout', %s, false)", [IDLE_SESSION]
            )
        try:
            yield conn
        finally:
            # A session the database ended (its timeouts) let go of the lock
            # with it: no error of the unlock may replace what is raised.
            with contextlib.suppress(psycopg.Error):
                await conn.execute("SELECT pg_advisory_unlock(%s)", [lock_key])
