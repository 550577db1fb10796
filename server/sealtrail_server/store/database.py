"""The connection pool, and the one place database outages become `Unavailable`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from opentelemetry.trace import Tracer
from psycopg_pool import AsyncConnectionPool

from ..domain.errors import Unavailable
from .traced import traced_cursor_class

# How long a caller waits for a connection before being told to retry.
DEFAULT_CONNECT_TIMEOUT = 5.0
RETRY_AFTER_SECONDS = 1.0


class Database:
    """An open pool of autocommit connections to one PostgreSQL database."""

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]):
        self.pool = pool

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
        wait: bool = True,
        tracer: Tracer | None = None,
    ) -> Database:
        """`tracer`: every statement run inside a recorded span becomes a
        child span of it (store/traced.py); None, no database spans."""
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": "sealtrail"}
        if tracer is not None:
            kwargs["cursor_factory"] = traced_cursor_class(tracer)
        pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs=kwargs,
            open=False,
        )
        await pool.open(wait=wait, timeout=timeout if wait else 30.0)
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
        """A pooled connection; an unreachable database raises Unavailable."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as error:
            # PoolTimeout is an OperationalError too: no connection in time.
            raise Unavailable(
                f"the database is unavailable: {error}".strip(), retry_after=RETRY_AFTER_SECONDS
            ) from error
