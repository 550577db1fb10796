"""A pooled connection one task keeps from use to use while its uses follow
each other closely (ADR 0046).

The appender is one task that writes batch after batch. Checking a connection
out of the shared pool for each batch cost the pool's own bookkeeping and,
whenever a read had used that connection last, a round trip to change its
scope (role, tenant, plans): psycopg_pool hands its connections out in turn,
so nearly every append after a read paid it. Kept, the connection stays in the
appender's scope, and a lone append costs one round trip.

The connection goes back to the pool when an error interrupts a use (the pool
then finds out whether it still works, and the error is the checkout's, as it
would be for a fresh one), when its task has been idle for KEEP_IDLE_SECONDS
(the task sees to that, and within 50 ms when another caller waits for the
pool), after a use when another caller waits or once it has been kept for
KEEP_AT_MOST_SECONDS, and while the database is marked unreachable.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

from psycopg import pq

from .database import Connection, Database

# How long a kept connection waits, unused, for its task's next use.
KEEP_IDLE_SECONDS: Final = 1.0
# How long it is kept at most, however busy: the pool then recycles it when
# it is old (its max_lifetime), as it does the connections it hands out.
KEEP_AT_MOST_SECONDS: Final = 60.0

Checkout = Callable[[], AbstractAsyncContextManager[Connection]]


class KeptConnection:
    """Checkouts of `checkout` (a `Database` context manager), kept between
    the uses of one task. Not for concurrent use: a use that begins while
    another is under way gets a checkout of its own."""

    def __init__(self, db: Database, checkout: Checkout) -> None:
        self._db = db
        self._checkout = checkout
        self._open: AbstractAsyncContextManager[Connection] | None = None
        self._conn: Connection | None = None
        self._kept_since = 0.0
        self._in_use = False

    @property
    def kept(self) -> bool:
        return self._conn is not None

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Connection]:
        """The kept connection, checked out first if none is kept."""
        if self._in_use:
            async with self._checkout() as conn:
                yield conn
            return
        if not self._db.reachable:
            # As a fresh checkout would be refused. The connection goes back
            # too: the pool's check after the outage (drop_broken) sees only
            # those it holds, and this one likely died with the database.
            await self._give_back(None)
            self._db.refuse_if_unreachable()
        if self._conn is not None and not _idle(self._conn):
            await self._give_back(None)  # no use leaves it so; checked all the same
        if self._conn is None:
            opened = self._checkout()
            self._conn = await opened.__aenter__()
            self._open = opened
            self._kept_since = time.monotonic()
        self._in_use = True
        try:
            yield self._conn
        except BaseException as error:
            self._in_use = False
            await self._give_back(error)
            raise
        self._in_use = False
        kept_for = time.monotonic() - self._kept_since
        if kept_for >= KEEP_AT_MOST_SECONDS or self._db.pool_has_waiters():
            await self.give_back()

    async def give_back(self) -> None:
        """Return the kept connection, if any, to the pool."""
        if not self._in_use:
            await self._give_back(None)

    async def _give_back(self, error: BaseException | None) -> None:
        opened, self._open, self._conn = self._open, None, None
        if opened is None:
            return
        if error is None:
            await opened.__aexit__(None, None, None)
        else:
            # The checkout sees the error as it would have: the pool discards a
            # broken connection, and a lost one becomes Unavailable.
            await opened.__aexit__(type(error), error, error.__traceback__)


def _idle(conn: Connection) -> bool:
    """Open, and in no transaction (its last use ended cleanly)."""
    return not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE
