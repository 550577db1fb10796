"""Slots of one shared capacity, handed out fairly among the keys that want them.

Three users: the forwarder's outbound connections, the pooled connections
pages of many events are read on (`store.database.Database.bulk_connection`),
and the long reads among them (`store.long_reads.LongReads`), each keyed by
tenant. The forwarder's requests share one pool of outbound
connections. A tenant
whose destinations are slow (or made slow on purpose) holds each of its
connections until its request ends, at worst at its deadline; with only a
fixed cap per tenant,
a few such tenants together held every connection, and every other tenant's
deliveries waited behind them (ADR 0037).

Here a key (a tenant) holds at most `per_key` slots. Its share is an even
split of the capacity among the keys holding or waiting for slots. A slot
given back goes to a waiting key under its share: the one holding fewest,
and of those the one given a slot longest ago (a key that comes first of
all), so keys under their share take turns and none is passed over for
good. Only when no key under its share waits does a slot go to a key over
it: no slot stays idle while a key could use it. A key over its share keeps
what it holds: no request is cut short.

Slots are handed over, not raced for: a released slot is assigned to the
waiter chosen, and only that waiter is woken."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager


class FairShare:
    def __init__(self, *, capacity: int, per_key: int) -> None:
        if capacity < 1 or per_key < 1:
            raise ValueError("capacity and per_key must be at least 1")
        self._capacity = capacity
        self._per_key = per_key
        self._held: Counter[Hashable] = Counter()
        self._waiters: dict[Hashable, deque[asyncio.Future[None]]] = {}
        # When each key holding or waiting for slots was last given one (a
        # count of slots given), for turns among keys holding as few.
        self._given_at: dict[Hashable, int] = {}
        self._given = 0

    def share(self) -> int:
        """The slots a key may count on now, whatever the others want."""
        wanting = len(self._held.keys() | self._waiters.keys())
        return max(1, min(self._per_key, self._capacity // max(1, wanting)))

    def held(self, key: Hashable) -> int:
        return self._held[key]

    def in_use(self) -> int:
        return self._held.total()

    def queued(self) -> int:
        """Requests waiting for a slot."""
        return sum(len(queue) for queue in self._waiters.values())

    @asynccontextmanager
    async def slot(self, key: Hashable) -> AsyncIterator[None]:
        """Holds one of `key`'s slots for the block, once it is given one."""
        if self._free_for(key):
            self._take(key)
        else:
            await self._wait(key)
        try:
            yield
        finally:
            self._give_back(key)

    @contextmanager
    def slot_now(self, key: Hashable) -> Iterator[bool]:
        """Holds one of `key`'s slots for the block if one is free now (True),
        ahead of no waiting request; else none, and does not wait (False)."""
        if not self._free_for(key):
            yield False
            return
        self._take(key)
        try:
            yield True
        finally:
            self._give_back(key)

    def _free_for(self, key: Hashable) -> bool:
        # A slot is free only while every waiting key has its most (hand-out
        # keeps it so), unless this key's own requests already queue.
        return (
            key not in self._waiters
            and self._held.total() < self._capacity
            and self._held[key] < self._per_key
        )

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
                self._hand_out()  # for a request that queued behind this one
            raise

    def _take(self, key: Hashable) -> None:
        self._held[key] += 1
        self._given += 1
        self._given_at[key] = self._given

    def _give_back(self, key: Hashable) -> None:
        self._held[key] -= 1
        if not self._held[key]:
            del self._held[key]
            self._forget_if_idle(key)
        self._hand_out()

    def _hand_out(self) -> None:
        """Assigns free slots to waiters: keys under their share first, the
        one holding fewest, then the one given a slot longest ago, first;
        then, slots still free, keys over their share."""
        while self._waiters and self._held.total() < self._capacity:
            share = self.share()
            candidates = [k for k in self._waiters if self._held[k] < self._per_key]
            if not candidates:
                return
            key = min(
                candidates,
                key=lambda k: (self._held[k] >= share, self._held[k], self._given_at.get(k, 0)),
            )
            given = self._waiters[key].popleft()
            if not self._waiters[key]:
                del self._waiters[key]
            if given.done():  # cancelled, its task not yet run to take it out
                self._forget_if_idle(key)
                continue
            self._take(key)
            given.set_result(None)

    def _forget(self, key: Hashable, given: asyncio.Future[None]) -> None:
        queue = self._waiters.get(key)
        if queue is not None and given in queue:
            queue.remove(given)
            if not queue:
                del self._waiters[key]
                self._forget_if_idle(key)

    def _forget_if_idle(self, key: Hashable) -> None:
        if key not in self._held and key not in self._waiters:
            self._given_at.pop(key, None)
