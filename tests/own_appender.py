"""An appender of a test's own, beside the test server's: on a pool of its
own, with the lock timeout the test needs, and a first event of each tenant
given written (so that their heads exist); stopped and closed after."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sealtrail_server.store.appender import Appender
from sealtrail_server.store.database import Database
from tests.conftest import ServerThread
from tests.service_login import service_login_url


@contextlib.contextmanager
def own_appender(
    server: ServerThread,
    database_url: str,
    *tenants: str,
    first_event: Callable[[], Any],
    system_lock_timeout: float,
    max_wait: float,
    max_size: int = 2,
) -> Iterator[tuple[Database, Appender]]:
    """The database and the started appender, run on `server`'s loop;
    `first_event()` makes each tenant's first event."""
    db = server.run(
        Database.open(
            service_login_url(database_url),
            min_size=1,
            max_size=max_size,
            system_lock_timeout=system_lock_timeout,
        )
    )
    appender = Appender(db, max_wait=max_wait)

    async def begin() -> None:
        appender.start()
        for tenant in tenants:
            await appender.append(tenant, [first_event()])

    async def finish() -> None:
        await appender.stop()
        await db.close()

    try:
        server.run(begin())
        yield db, appender
    finally:
        server.run(finish())
