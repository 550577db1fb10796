"""Slots of one shared capacity, split evenly among the keys that want them.

The forwarder's requests share one pool of outbound connections. A tenant
whose destinations are slow (or made slow on purpose) holds each of its
connections for up to a timeout; with a fixed cap per tenant, a few such
tenants together would still hold every connection, and every other tenant's
deliveries would wait behind them. Here a key (a tenant) holds at most
`per_key` slots, and no more than an even split of the capacity among the
keys holding or waiting for slots: the more tenants want connections, the
fewer each may take. A key above its share keeps what it holds (no request
is cut short) and takes no more until it is back under: a key that comes
while every slot is held takes the first one given back, at most one request
(a timeout) later."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class FairShare:
    def __init__(self, *, capacity: int, per_key: int) -> None:
        if capacity < 1 or per_key < 1:
            raise ValueError("capacity and per_key must be at least 1")
        self._capacity = capacity
        self._per_key = per_key
        self._held: Counter[Hashable] = Counter()
        self._waiting: Counter[Hashable] = Counter()
        self._changed = asyncio.Event()

    def share(self) -> int:
        """The most slots a key may hold now."""
        wanting = len(self._held.keys() | self._waiting.keys())
        return max(1, min(self._per_key, self._capacity // max(1, wanting)))

    def held(self, key: Hashable) -> int:
        return self._held[key]

    @asynccontextmanager
    async def slot(self, key: Hashable) -> AsyncIterator[None]:
        """Holds one of `key`'s slots for the block, once its share and the
        capacity allow."""
        self._waiting[key] += 1
        given = False
        try:
            while self._held[key] >= self.share() or self._held.total() >= self._capacity:
                await self._changed.wait()
            given = True
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
            if not given:  # cancelled: one key fewer may want slots, and shares grow
                self._signal()
        self._held[key] += 1
        try:
            yield
        finally:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]
            self._signal()

    def _signal(self) -> None:
        """Wakes every waiter to look again (each then waits on a new event)."""
        self._changed.set()
        self._changed = asyncio.Event()
