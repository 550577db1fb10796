"""Reads that hold a connection of the bulk reads' share (`bulk_connections`,
`Database.bulk_connection`) for their whole run, not a page's: counts (up to
SEALTRAIL_COUNT_TIMEOUT), VerifyLog (minutes of a large log) and retention
previews (up to a million events). Pages of many events (exports, stream
catch-ups, forwarding, filtered Query pages) hold one only while a page is
read, and find one as long as one is left: these readers of every kind
share one capacity, the share's connections but one (`long_read_capacity`).
Each kind apart left that one, and together they took the whole share
(three verifications and a count of a pool of 10), and every tenant's pages
waited until one ended (helper-266).

A count or a preview finding the capacity used is refused at once,
RESOURCE_EXHAUSTED with a retry delay (the clients wait and retry), rather
than queued without bound where its client's deadline would end it; a
tenant runs one of each at a time, and of all kinds together the capacity
but one (one, when the capacity is one): a pool of 10 runs three, and one
tenant's admin running a count, a preview and a verification held them all,
every other tenant's counts and previews refused for as long (a large log's
verification takes minutes). VerifyLog, which the clients do not retry,
waits its turn instead (`turn`), fairly among tenants."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Final, Literal

from ..domain.errors import ResourceExhausted
from ..fair_share import FairShare
from .database import bulk_connections

# What a long read refused for want of room is told to wait before it asks again.
LONG_READ_RETRY_SECONDS: Final = 1.0

Refusable = Literal["count", "preview"]
# What a refused one is told: (the tenant's one at a time, the server's all in use).
_REFUSALS: Final[dict[Refusable, tuple[str, str]]] = {
    "count": (
        "your tenant runs one count at a time and one is running; count again when it ends",
        "count again shortly",
    ),
    "preview": (
        "your tenant previews one retention policy at a time and one is running;"
        " preview again when it ends",
        "preview again shortly",
    ),
}


def long_read_capacity(pool_size: int) -> int:
    """The long reads a process with a pool of `pool_size` runs at once, of
    every kind together: all of its bulk share but one, which exports,
    stream catch-ups, filtered Query pages and large batches always find
    (one, when the share is one)."""
    return max(1, bulk_connections(pool_size) - 1)


class LongReads:
    """The long reads a process runs: at most `capacity` at once, of all
    tenants and kinds together."""

    def __init__(self, *, capacity: int) -> None:
        self.capacity = capacity
        self.per_tenant = max(1, capacity - 1)
        self._slots = FairShare(capacity=capacity, per_key=self.per_tenant)
        self._running: Counter[tuple[Refusable, str]] = Counter()

    @contextmanager
    def admitted(self, tenant_id: str, kind: Refusable) -> Iterator[None]:
        """Holds one of the capacity for a `kind` of `tenant_id`'s for the
        block; ResourceExhausted if the tenant's one of that kind runs, or the
        capacity is in use (or promised to a verification waiting for it)."""
        one_at_a_time, again = _REFUSALS[kind]
        if self._running[kind, tenant_id]:
            raise ResourceExhausted(one_at_a_time, retry_after=LONG_READ_RETRY_SECONDS)
        with self._slots.slot_now(tenant_id) as taken:
            if not taken and self._slots.held(tenant_id) >= self.per_tenant:
                raise ResourceExhausted(
                    f"your tenant runs {self.per_tenant} long reads at once on this server"
                    " (counts, log verifications, retention previews), the most one tenant"
                    f" may, and they are running; {again}",
                    retry_after=LONG_READ_RETRY_SECONDS,
                )
            if not taken:
                raise ResourceExhausted(
                    f"this server runs {self.capacity} long reads at once (counts, log"
                    f" verifications, retention previews), and they are running; {again}",
                    retry_after=LONG_READ_RETRY_SECONDS,
                )
            self._running[kind, tenant_id] += 1
            try:
                yield
            finally:
                del self._running[kind, tenant_id]

    @asynccontextmanager
    async def turn(self, tenant_id: str) -> AsyncIterator[None]:
        """Holds one of the capacity for `tenant_id` for the block, once its
        turn comes (FairShare: a tenant holding fewer goes first)."""
        async with self._slots.slot(tenant_id):
            yield
