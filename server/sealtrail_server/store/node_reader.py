"""Concurrent reads of Merkle tree hashes served by one query per batch
(ADR 0009): a read that arrives while a query runs waits for the next one,
which carries every read queued meanwhile. An idle reader queries at once, so
a lone caller pays no delay; a busy one pays one round trip per batch instead
of one per call.

Hashes of the upper levels are kept in memory once read: a stored node never
changes, and every proof of a tenant shares its top levels."""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque

from ..domain.proofs import Node
from .database import Database
from .tree import NodeRead, NodesRead, read_many

DEFAULT_MAX_BATCH = 128  # reads per query: bounds the query's size, not the wait
# Nodes of this level and above are cached: each covers 64 leaves, so a log of
# a million events has 31,000 of them (about 5 MB with their keys).
CACHED_LEVEL = 6
DEFAULT_CACHED_NODES = 65_536


class NodeReader:
    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        cached_nodes: int = DEFAULT_CACHED_NODES,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._cached_nodes = cached_nodes
        self._cache: dict[tuple[str, Node], bytes] = {}
        self._queue: deque[tuple[NodeRead, asyncio.Future[NodesRead]]] = deque()
        self._drain_task: asyncio.Task[None] | None = None

    async def read(self, read: NodeRead) -> NodesRead:
        """What `read` finds, read together with whatever else is queued."""
        tenant_id, cache = read.tenant_id, self._cache
        cached = {}
        for node in read.nodes:
            if node[0] >= CACHED_LEVEL and (value := cache.get((tenant_id, node))) is not None:
                cached[node] = value
        if cached:
            read = NodeRead(tenant_id, read.nodes - cached.keys(), read.record_seq)
        future: asyncio.Future[NodesRead] = asyncio.get_running_loop().create_future()
        self._queue.append((read, future))
        if self._drain_task is None:
            # In a context of its own: made in the first caller's, it read
            # every later caller's nodes inside that caller's span and with its
            # request id on its log lines.
            self._drain_task = asyncio.create_task(
                self._drain(), name="sealtrail-node-reader", context=contextvars.Context()
            )
        found = await future
        if len(cache) < self._cached_nodes:
            for node, value in found.hashes.items():
                if node[0] >= CACHED_LEVEL:
                    cache[(tenant_id, node)] = value
        if cached:
            found.hashes.update(cached)
        return found

    async def _drain(self) -> None:
        batch: list[tuple[NodeRead, asyncio.Future[NodesRead]]] = []
        try:
            while self._queue:
                batch = self._next_batch()
                tenant_id = batch[0][0].tenant_id
                try:
                    # Every node is a probe by key, so one generic plan serves
                    # every batch; planned for each batch's values, a proof's
                    # read cost three times as long (ADR 0032).
                    async with self._db.connection(tenant_id, generic_plans=True) as conn:
                        found = await read_many(conn, [read for read, _ in batch])
                except Exception as error:  # each caller gets it, Unavailable included
                    for _, future in batch:
                        if not future.done():  # a cancelled caller no longer waits
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, found, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._drain_task = None
            for _, future in [*batch, *self._queue]:  # only if this task was cancelled
                future.cancel()
            self._queue.clear()

    def _next_batch(self) -> list[tuple[NodeRead, asyncio.Future[NodesRead]]]:
        """Up to max_batch queued reads of the first one's tenant (a query sees
        one tenant's rows: ADR 0013); the others keep their places."""
        tenant_id = self._queue[0][0].tenant_id
        batch: list[tuple[NodeRead, asyncio.Future[NodesRead]]] = []
        others: list[tuple[NodeRead, asyncio.Future[NodesRead]]] = []
        while self._queue and len(batch) < self._max_batch:
            item = self._queue.popleft()
            (batch if item[0].tenant_id == tenant_id else others).append(item)
        self._queue.extendleft(reversed(others))
        return batch
