"""What a deployment-wide job's session (store/job_session) sets, read from
the session itself."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg


async def session_timeouts(
    job: Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[Any] | None]],
) -> list[str]:
    """The idle timeouts of the session `job()` holds its lock in:
    idle_in_transaction_session_timeout, then idle_session_timeout where the
    database has it (PostgreSQL 14 and later)."""
    async with job() as conn:
        assert conn is not None
        names = ["idle_in_transaction_session_timeout"]
        if conn.info.server_version >= 140000:
            names.append("idle_session_timeout")
        cursor = await conn.execute(
            "SELECT current_setting(name) FROM unnest(%s::text[]) AS name", [names]
        )
        return [value for (value,) in await cursor.fetchall()]
