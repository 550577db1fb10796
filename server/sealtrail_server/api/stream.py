"""The StreamEvents RPC: replay from a start position, then follow live, with
no gap and no duplicate.

A stream keeps `position`: every event with a smaller or equal seq has been
considered (sent if it matched). It catches up by reading the table with the
filter in SQL, then takes the hub's deliveries, skipping what it has seen.
When it lags (its inbox overflowed), when a heartbeat finds the log ahead of it
(a lost notification), or for a full-text filter, it reads the table again.
Heartbeats carry `position`, from which a client resumes exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import grpc

from sealtrail.v1 import audit_service_pb2 as pb

from ..domain.errors import FailedPrecondition, InvalidArgument
from ..domain.event import timestamp_from_parts
from ..domain.filters import EventFilter, RecordMatcher, validate_filter
from ..store.database import Database
from ..store.events import StoredEvent, first_seq_received_since, stream_events
from ..store.tree import tree_size
from ..stream.hub import StreamHub, Subscription
from .convert import event_from_record, filter_draft
from .guard import current_principal

Context = grpc.aio.ServicerContext[Any, Any]


class StreamRpcs:
    _db: Database
    _hub: StreamHub
    _heartbeat_seconds: float

    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: Context
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        tenant_id = current_principal().tenant_id
        event_filter = (
            validate_filter(filter_draft(request.filter))
            if request.HasField("filter")
            else EventFilter()
        )
        matcher = RecordMatcher(event_filter)
        subscription = await self._hub.subscribe(tenant_id, matcher)
        try:
            position = await self._start_position(tenant_id, request)
            yield _heartbeat(position)  # the client knows where it starts, even if idle
            while True:
                # Deliveries count again from here, so all that commits after the
                # size read below reaches the inbox; what is older, the table has.
                subscription.caught_up()
                size = await self._size(tenant_id)
                # aclosing: a stream cancelled mid-read must give its cursor and
                # connection back now, not whenever the generator is collected.
                table = self._from_table(tenant_id, event_filter, position, size)
                async with aclosing(table):
                    async for stored in table:
                        yield _event(stored)
                position = max(position, size)
                live = self._live(tenant_id, subscription, event_filter, position)
                async with aclosing(live):
                    async for item in live:
                        if isinstance(item, StoredEvent):
                            yield _event(item)
                            position = item.seq
                        else:
                            position = max(position, item)
                            yield _heartbeat(position)
        finally:
            self._hub.unsubscribe(subscription)

    async def _size(self, tenant_id: str) -> int:
        async with self._db.connection() as conn:
            return await tree_size(conn, tenant_id)

    async def _start_position(self, tenant_id: str, request: pb.StreamEventsRequest) -> int:
        size = await self._size(tenant_id)
        start = request.WhichOneof("start")
        if start is None:
            return size  # live only
        if start == "since":
            since = timestamp_from_parts(request.since.seconds, request.since.nanos)
            return await first_seq_received_since(self._db, tenant_id=tenant_id, since=since) - 1
        if request.after_seq < 0:
            raise InvalidArgument.field("after_seq", "must not be negative")
        if request.after_seq > size:
            raise FailedPrecondition(
                f"after_seq {request.after_seq} is beyond the log's size {size}",
                reason="BEYOND_LOG_SIZE",
            )
        return request.after_seq

    def _from_table(
        self, tenant_id: str, event_filter: EventFilter, position: int, upto: int
    ) -> AsyncGenerator[StoredEvent, None]:
        return stream_events(
            self._db,
            tenant_id=tenant_id,
            event_filter=event_filter,
            after_seq=position,
            upto_seq=upto,
        )

    async def _live(
        self,
        tenant_id: str,
        subscription: Subscription,
        event_filter: EventFilter,
        position: int,
    ) -> AsyncGenerator[StoredEvent | int, None]:
        """Matching events from the hub, and positions to report as heartbeats.
        Returns when the stream must read the table to catch up."""
        while not subscription.lagging:
            try:
                delivery = await asyncio.wait_for(subscription.queue.get(), self._heartbeat_seconds)
            except TimeoutError:
                if await self._size(tenant_id) > position:
                    return  # a notification was lost: read the table
                yield position
                continue
            fresh = [e for e in delivery.events if e.stored.seq > position]
            if subscription.matcher.exact:
                for live in fresh:
                    if subscription.matcher.matches(live.record):
                        yield live.stored
            elif fresh:  # full-text search: let the database decide
                table = self._from_table(tenant_id, event_filter, position, delivery.upto)
                async with aclosing(table):
                    async for stored in table:
                        yield stored
            position = max(position, delivery.upto)


def _event(stored: StoredEvent) -> pb.StreamEventsResponse:
    return pb.StreamEventsResponse(event=event_from_record(stored.record, stored.leaf_hash))


def _heartbeat(position: int) -> pb.StreamEventsResponse:
    response = pb.StreamEventsResponse(heartbeat=pb.Heartbeat(cursor=position))
    response.heartbeat.server_time.FromDatetime(datetime.now(UTC))
    return response
