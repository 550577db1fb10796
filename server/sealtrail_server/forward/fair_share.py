"""Slots of one shared capacity, handed out fairly among the keys that want them.

The forwarder's requests share one pool of outbound connections. A tenant
whose destinations are slow (or made slow on purpose) holds each of its
connections until its request ends, at worst at its deadline; with only a
fixed cap per tenant,
a few such tenants together held every connection, and every other tenant's
deliveries waited behind them (ADR 0037).

Here a key (a tenant) holds at most `per_key` slots. Its share is an even
split of the capacity among the keys holding or waiting for slots. A slot
given back goes to a waiting key under its share, the one holding fewest
first, so a key that comes while every slot is held gets one of the first
given back; only when no key under its share waits does a slot go to a key
over it (no slot stays idle while a key could use it). A key over its share
keeps what it holds: no request is cut short.

Slots are handed over, not raced for: a released slot is assigned to the
waiter chosen, and only that waiter is woken."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class FairShare:
    def __init__(self, *, capacity: int, per_key: int) -> None:
        if capacity < 1 or per_key < 1:
            raise ValueError("capacity and per_key must be at least 1")
        self._capacity = capacity
        self._per_key = per_key
        self._held: Counter[Hashable] = Counter()
        self._waiters: dict[Hashable, deque[asyncio.Future[None]]] = {}

    def share(self, *, including: Hashable | None = None) -> int:
        """The slots a key may count on now, whatever the others want (with
        `including` counted among the keys that want slots)."""
        wanting = self._held.keys() | self._waiters.keys()
        if including is not None:
            wanting |= {including}
        return max(1, min(self._per_key, self._capacity // max(1, len(wanting))))

    def held(self, key: Hashable) -> int:
        return self._held[key]

    @asynccontextmanager
    async def slot(self, key: Hashable) -> AsyncIterator[None]:
        """Holds one of `key`'s slots for the block, once it is given one."""
        if key not in self._waiters and self._may_take(key):
            self._held[key] += 1
        else:
            await self._wait(key)
        try:
            yield
        finally:
            self._give_back(key)

    async def _wait(self, key: Hashable) -> None:
        given: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, deque()).append(given)
        try:
            await given
        except asyncio.CancelledError:
            if given.done() and not given.cancelled():
                self._give_back(key)  # assigned just as the wait was cancelled
            else:
                self._forget(key, given)
                self._hand_out()  # one key fewer may want slots
            raise

    def _may_take(self, key: Hashable) -> bool:
        """Whether a free slot may go to `key` now (it has no waiter queued)."""
        if self._held.total() >= self._capacity or self._held[key] >= self._per_key:
            return False
        share = self.share(including=key)
        return self._held[key] < share or not any(
            self._held[other] < share for other in self._waiters
        )

    def _give_back(self, key: Hashable) -> None:
        self._held[key] -= 1
        if not self._held[key]:
            del self._held[key]
        self._hand_out()

    def _hand_out(self) -> None:
        """Assigns free slots to waiters: keys under their share first, the
        one holding fewest first; then, slots still free, keys over it."""
        while self._waiters and self._held.total() < self._capacity:
            share = self.share()
            candidates = [k for k in self._waiters if self._held[k] < self._per_key]
            if not candidates:
                return
            key = min(candidates, key=lambda k: (self._held[k] >= share, self._held[k]))
            given = self._waiters[key].popleft()
            if not self._waiters[key]:
                del self._waiters[key]
            self._held[key] += 1
            given.set_result(None)

    def _forget(self, key: Hashable, given: asyncio.Future[None]) -> None:
        queue = self._waiters.get(key)
        if queue is not None and given in queue:
            queue.remove(given)
            if not queue:
                del self._waiters[key]
