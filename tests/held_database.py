"""A database whose connections are given back only when a test says so: a
read, or a change, held between its statements' end and what is done with
their answer (the settings cache's put of what it read, UpdateTenantSettings'
put of what it wrote)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sealtrail_server.store.database import Database


class HeldAfterReading:
    """The database, whose connections, once their statements have run (and,
    in a transaction, committed), are given back only when `release` is
    set: a read held between its answer and what is done with it. Its pool
    is the database's, for what sizes itself by it (store/changes.py)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    @property
    def pool(self) -> Any:
        return self._db.pool

    @asynccontextmanager
    async def connection(self, tenant_id: str, **options: Any) -> AsyncIterator[Any]:
        async with self._db.connection(tenant_id, **options) as conn:
            yield conn
        self.read.set()
        await self.release.wait()
