"""The tenant settings cache: a change made by this process applies here at
once, even when a read of the settings began before it and ends after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sealtrail_server.store.database import Database
from sealtrail_server.store.tenant_settings import SettingsCache, write_settings
from tests.conftest import ServerThread


class HeldAfterReading:
    """The database, whose connections, once their statements have run, are
    given back only when `release` is set: a read held between its answer
    and what is done with it."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    @asynccontextmanager
    async def connection(self, tenant_id: str) -> AsyncIterator[Any]:
        async with self._db.connection(tenant_id) as conn:
            yield conn
        self.read.set()
        await self.release.wait()


def test_a_read_that_began_before_a_change_here_does_not_put_the_old_settings_back(
    server: ServerThread, tenant: str
) -> None:
    """A Record's read of the settings began, UpdateTenantSettings committed
    HMAC mode and put it in the cache, then the read ended and put `replace`
    back: this process stored events in the old mode for the cache's whole
    time (helper-156)."""

    async def scenario() -> tuple[str, str]:
        held = HeldAfterReading(server.database)
        cache = SettingsCache(held, ttl=60)  # type: ignore[arg-type]
        reading = asyncio.create_task(cache.get(tenant))
        await held.read.wait()  # it read the settings as they were: the defaults
        async with server.database.connection(tenant) as conn:  # as UpdateTenantSettings
            changed = await write_settings(conn, tenant, redaction_mode="hmac")
        cache.put(tenant, changed)
        held.release.set()
        read = await reading
        return read.redaction_mode, (await cache.get(tenant)).redaction_mode

    read, then = server.run(scenario())
    assert read == "replace"  # true when it was read
    assert then == "hmac"
