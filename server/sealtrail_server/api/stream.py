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
import contextvars
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import grpc

from sealtrail.v1 import audit_service_pb2 as pb

from ..domain.errors import FailedPrecondition, InvalidArgument, Unavailable
from ..domain.event import (
    MAX_FUTURE_SKEW_SECONDS,
    MAX_SEQ,
    READ_RECORD_ACTIONS,
    checked_bound,
    format_timestamp,
)
from ..domain.filters import EventFilter, RecordMatcher
from ..domain.text_search import TextQuery, parse_query, websearch_text
from ..store.appender import Appender
from ..store.changes import refuse_if_erased_now, tenant_erased
from ..store.database import Connection, Database
from ..store.events import (
    StoredEvent,
    first_seq_received_since,
    received_range,
    stream_events,
)
from ..store.retention import first_kept_after, purged_between
from ..store.tree import tree_size
from ..stream.hub import (
    Delivery,
    EncodedEvent,
    LiveEvent,
    StreamEnding,
    StreamHub,
    Subscription,
)
from ..turns import Turns
from .audited import FilterDetails, record_access
from .convert import (
    UNREADABLE,
    element_prefix,
    event_from_data,
    event_from_record,
    request_filter,
    unreadable_record,
)
from .guard import current_principal, end_waiting_call
from .removals_said import RemovalsSaid

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


MAX_EVENTS_PER_MESSAGE = 1000
# An EventBatch holds at most this many bytes of events (one event, whatever
# its size, always goes): counted in events alone, 500 of 10 KB outgrew the
# 4 MiB a gRPC client receives by default, and a tail could never get past
# them, resuming into the same message every time (helper-64).
MAX_BATCH_BYTES = 1 << 20
# With announce_purged, removals are counted (one statement, by the index)
# every this many events a stream reads from the table, and where it ends.
_ANNOUNCED_EVERY = 1000
# The most bytes of encodings a stream reading the table holds before sending,
# and about how much of records one page of its read holds: a stream whose
# client stops reading keeps both, and 4 MiB and 8 MiB (with gRPC's share)
# came to 21 MB a stream, any reader token opening as many as it liked
# (helper-136). A live stream takes about as many bytes of records from its
# inbox at a time (helper-209).
_HELD_BYTES = MAX_BATCH_BYTES
_PAGE_BYTES = MAX_BATCH_BYTES
# Seqs a stream reads from the table at a time, saying where it got to
# (a heartbeat) when a heartbeat's time passed without a message.
_WINDOW_SEQS = 50_000
# Where an event's encoding goes in a response: alone, or in a batch.
_ALONE: Final = pb.StreamEventsResponse.DESCRIPTOR.fields_by_name["event"].number
_BATCH: Final = pb.StreamEventsResponse.DESCRIPTOR.fields_by_name["events"].number
_IN_BATCH: Final = pb.EventBatch.DESCRIPTOR.fields_by_name["events"].number


def _batch_limit(requested: int) -> int:
    """Events per message: 0 for one per message in `event` (the default)."""
    if requested < 0:
        raise InvalidArgument.field("max_events_per_message", "must not be negative")
    return min(requested, MAX_EVENTS_PER_MESSAGE)


class StreamRpcs:
    _db: Database
    _appender: Appender
    _clock: Callable[[], datetime]
    _hub: StreamHub
    _heartbeat_seconds: float
    _filter_details: FilterDetails
    _removals_said: RemovalsSaid

    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """The stream's responses as their encodings: events framed around the
        encoding each one has once per process (ADR 0043). Ended, for its
        client to resume, once its client has taken nothing for a heartbeat's
        time while the log grew by more than SEALTRAIL_STREAM_STALL_BYTES (ADR
        0076): until then it holds what it was sending and what queued behind."""
        principal = current_principal()
        tenant_id = principal.tenant_id
        event_filter = request_filter(request)
        limit = _batch_limit(request.max_events_per_message)
        start = _start_details(request, now=self._clock())  # checked before it is recorded
        # Subscribed before it is recorded: a stream refused for the limits
        # records nothing. Its own record then reaches it, and is skipped: as
        # before its position live, by its seq in a read of the table.
        matcher = RecordMatcher(event_filter, text=await self._text_query(tenant_id, event_filter))
        subscription = await self._hub.subscribe(tenant_id, matcher)
        subscription.on_stall(self._heartbeat_seconds, _ends_when_stalled(context, subscription))
        try:
            responses = self._streamed(request, subscription, event_filter, limit, start)
            async with aclosing(responses):
                async for response in responses:
                    subscription.writing()
                    try:
                        yield response
                    finally:
                        subscription.written()
        except StreamEnding:
            raise Unavailable(
                "the server is stopping: resume after the last seq received",
                retry_after=1.0,
                reason="SERVER_STOPPING",
            ) from None
        finally:
            self._hub.unsubscribe(subscription)

    async def _streamed(
        self,
        request: pb.StreamEventsRequest,
        subscription: Subscription,
        event_filter: EventFilter,
        limit: int,
        start: dict[str, Any],
    ) -> AsyncGenerator[bytes, None]:
        """The stream's responses: recorded, then its start, then what it reads
        from the table and what the hub delivers, without end."""
        principal = current_principal()
        tenant_id = principal.tenant_id
        if request.WhichOneof("start") == "after_seq":
            await self._cursor_within_the_log(tenant_id, request.after_seq)
        if subscription.ending:
            # The server is stopping: refused, as for the limits, with nothing
            # recorded (it was recorded, then ended at once).
            raise StreamEnding
        own = await record_access(
            self._appender,
            principal,
            now=self._clock(),
            action="audit_log.streamed",
            description="Subscribed to audit events",
            details={
                "filter": await self._filter_details(tenant_id, request.filter),
                "start": start,
            },
        )
        position = await self._start_position(tenant_id, request)
        # A client's cursor must not have missed an event retention removed
        # (from 0 is whatever is kept); checked with the first read.
        resumed = position if request.WhichOneof("start") == "after_seq" else 0
        yield _heartbeat(position)  # the client knows where it starts, even if idle
        # When the last message went: a heartbeat's time is counted from it
        # across the stream's reads of the table and its spells live.
        clock = asyncio.get_running_loop().time
        last_sent = clock()
        while True:
            if subscription.ending:  # ended while it read the table
                raise StreamEnding
            # Deliveries count again from here, so all that commits after the
            # size read below reaches the inbox; what is older, the table has.
            subscription.caught_up()
            size = await self._size(tenant_id, reached=position)
            caught_up_from = position
            # aclosing: a stream cancelled mid-read must give its cursor and
            # connection back now, not whenever the generator is collected.
            table = self._from_table(
                tenant_id,
                subscription,
                event_filter,
                position,
                size,
                limit,
                resumed=resumed,
                announce=request.announce_purged,
                own_seq=own.seq,
            )
            resumed = 0
            async with aclosing(table):
                async for read in table:
                    if isinstance(read, int):  # all up to it sent: a heartbeat's cursor
                        yield _heartbeat(read)
                    elif isinstance(read, pb.PurgedRange):
                        yield pb.StreamEventsResponse(purged=read).SerializeToString()
                    else:
                        for response in _responses(read, limit):
                            yield response
                    last_sent = clock()
            position = max(position, size)
            if (request.announce_purged and position > caught_up_from) or (
                clock() - last_sent >= self._heartbeat_seconds
            ):
                # Announced: its last range reaches `size`, and a client that
                # reconnects from here is not told of it again. Else a live
                # spell ended for the table when a heartbeat was due (the log
                # was ahead of it, as a busy log's is of its hub): counted
                # afresh, a stream that found it ahead at each look sent none.
                yield _heartbeat(position)
                last_sent = clock()
            live = self._live(
                tenant_id, subscription, event_filter, position, limit, last_sent=last_sent
            )
            async with aclosing(live):
                async for item in live:
                    if isinstance(item, int):
                        position = max(position, item)
                        yield _heartbeat(position)
                    else:
                        for response in _responses(item, limit):
                            yield response
                        position = item[-1].seq
                    last_sent = clock()

    async def _text_query(self, tenant_id: str, event_filter: EventFilter) -> TextQuery | None:
        """The filter's `text` as PostgreSQL parses it, as Query gives it
        (`websearch_text`), for its live events to be matched in the process
        (None: none, or one left to the database)."""
        if event_filter.text is None:
            return None
        async with self._db.connection(tenant_id) as conn:
            cursor = await conn.execute(
                "SELECT websearch_to_tsquery('simple', %s)::text",
                [websearch_text(event_filter.text)],
            )
            row = await cursor.fetchone()
        assert row is not None
        return parse_query(row[0])

    async def _size(self, tenant_id: str, *, reached: int = 0) -> int:
        """The log's size. Below `reached`, where the stream got to (or below
        1: the stream's own access record is in it), the log is gone (a purge
        keeps a log's size): TENANT_ERASED, which ends the stream, rather than
        heartbeats for a log that no longer exists."""
        async with self._db.connection(tenant_id) as conn:
            size = await tree_size(conn, tenant_id)
        if size < max(reached, 1):
            raise tenant_erased(tenant_id)
        return size

    async def _start_position(self, tenant_id: str, request: pb.StreamEventsRequest) -> int:
        size = await self._size(tenant_id)
        start = request.WhichOneof("start")
        if start is None:
            return size  # live only
        if start == "since":
            since = checked_bound(request.since.seconds, request.since.nanos, field="since")
            if request.announce_purged:
                # Tombstones keep no time: the events removed just before the
                # first kept one received since may have been received since,
                # so the stream starts after the last event kept from before,
                # as GetReceivedRange's period does, and announces them. The
                # seqs between are all removed: it sends the same events.
                found = await received_range(self._db, tenant_id=tenant_id, since=since, until=None)
                return found.first - 1
            return await first_seq_received_since(self._db, tenant_id=tenant_id, since=since) - 1
        if request.after_seq < 0:
            raise InvalidArgument.field("after_seq", "must not be negative")
        return request.after_seq  # within the log: `_cursor_within_the_log`

    async def _cursor_within_the_log(self, tenant_id: str, after_seq: int) -> None:
        """Refuse a cursor beyond the log as it is before the stream records
        itself, as an export's range is: checked after, against a log its own
        record (and any written meanwhile) had lengthened, a cursor one past
        the end (a restore cut the last event off) was taken, and its client
        missed the event next recorded at that seq; and the refused stream
        was recorded."""
        async with self._db.connection(tenant_id) as conn:
            size = await tree_size(conn, tenant_id)
        if after_seq > size:
            await refuse_if_erased_now(self._db, tenant_id)  # a log gone, not a short one
            raise FailedPrecondition(
                f"after_seq {after_seq} is beyond the log's size {size}",
                reason="BEYOND_LOG_SIZE",
                metadata={"tree_size": str(size)},
            )

    async def _from_table(
        self,
        tenant_id: str,
        subscription: Subscription,
        event_filter: EventFilter,
        position: int,
        upto: int,
        limit: int,
        *,
        resumed: int = 0,
        announce: bool = False,
        own_seq: int = 0,
    ) -> AsyncGenerator[list[EncodedEvent] | pb.PurgedRange | int, None]:
        """Matching events with position < seq <= upto from the table, in lists
        of up to `limit` (at least one); and, after a heartbeat's time without
        any, the seq up to which all are sent (a heartbeat's cursor): read in
        windows of _WINDOW_SEQS seqs, as a filter that matches little in a long
        log scanned it all first, in silence, and a client cut off meanwhile
        began the scan again (helper-121). `resumed`: a client's cursor, refused
        with PURGED if retention removed the event after it. That is checked
        after the first page is read, not before: a purge committed between a
        check and the read would go unseen, its events skipped unannounced.

        `announce`: the events retention removed in the range are announced
        instead: each gap between two events sent that had removals, in a
        PurgedRange of exactly that gap, sent between the two. They are
        counted from their tombstones once the events around them are read (so,
        again, a purge that committed before the read is seen), every
        _ANNOUNCED_EVERY events read and at the end. A cursor is then
        announced, not refused. Removals counted are first held to
        retention's records (ADR 0158): a range is announced as retention's
        only if it is, and the stream ends DATA_LOSS where it is not.

        It ends (StreamEnding) as soon as `subscription` is told to, whatever
        is left to read: a long replay otherwise held the server's stop for
        its whole grace (helper-136).

        `own_seq`: the stream's own access record, not sent. A stream from a
        cursor or a time reads it (it is written before the log's size is
        read), and no read shows itself: a Query's first page, a count and a
        live stream leave theirs out (helper-204)."""

        async def refuse_purged(conn: Connection) -> None:
            kept = await first_kept_after(conn, tenant_id, resumed)
            if kept is not None:
                # Said removed by retention only if it was (ADR 0158).
                await self._removals_said.refuse_unaccounted(
                    conn,
                    tenant_id,
                    after_seq=resumed,
                    upto_seq=kept - 1,
                )
                raise FailedPrecondition(
                    f"the events after seq {resumed} were removed by retention;"
                    f" the first one kept is seq {kept} (resume with after_seq {kept - 1})",
                    reason="PURGED",
                    metadata={"resume_after_seq": str(kept - 1)},
                )

        announced = position  # removals are announced up to here

        async def parts(
            events: list[EncodedEvent], through: int
        ) -> list[list[EncodedEvent] | pb.PurgedRange]:
            """`events`, the last of those read up to `through`, with (if
            `announce`) the removals after `announced` where they lie among them."""
            nonlocal announced
            if not announce or through <= announced:
                return [events]  # not asked, or nothing read since the last count
            async with self._db.connection(tenant_id) as conn:
                counts = await purged_between(
                    conn,
                    tenant_id,
                    after_seq=announced,
                    through_seq=through,
                    sent=[event.seq for event in events],
                )
                if any(counts):  # each PurgedRange says "retention removed": only if it did
                    await self._removals_said.refuse_unaccounted(
                        conn,
                        tenant_id,
                        after_seq=announced,
                        upto_seq=through,
                        refusing="refusing to announce the removals: ",
                    )
            after, announced = announced, through
            return list(_interleaved(events, counts, after_seq=after, through_seq=through))

        chunk = max(limit, _ANNOUNCED_EVERY) if announce else limit
        events: list[EncodedEvent] = []
        held = 0  # bytes of their encodings
        turns, sent = Turns(), time.perf_counter()
        first_page_check = refuse_purged if resumed and not announce else None
        for window_from in range(position, upto, _WINDOW_SEQS):
            window_to = min(window_from + _WINDOW_SEQS, upto)
            rows = stream_events(
                self._db,
                tenant_id=tenant_id,
                event_filter=event_filter,
                after_seq=window_from,
                upto_seq=window_to,
                page_bytes=_PAGE_BYTES,
                after_first_page=first_page_check,
            )
            first_page_check = None
            async with aclosing(rows):
                async for stored in rows:
                    if subscription.ending:
                        raise StreamEnding
                    if stored.seq == own_seq:
                        continue
                    events.append(encoded := _encoded_stored(stored))
                    held += len(encoded.data)
                    # Sent by count or by bytes: a thousand events of 60 KB held
                    # 60 MiB of encodings for one stream before anything was sent.
                    if len(events) >= chunk or held >= _HELD_BYTES:
                        for part in await parts(events, events[-1].seq):
                            yield part
                        events, held, turns = [], 0, Turns()
                        sent = time.perf_counter()
                    else:
                        # A page of large events took seconds to convert, every
                        # other call of the process waiting (helper-121).
                        await turns.take()
            if window_to < upto and time.perf_counter() - sent >= self._heartbeat_seconds:
                for part in await parts(events, window_to):
                    if part:
                        yield part
                events, held = [], 0
                yield window_to
                sent = time.perf_counter()
        for part in await parts(events, upto):
            if part:  # no event left, or none at all
                yield part

    async def _live(
        self,
        tenant_id: str,
        subscription: Subscription,
        event_filter: EventFilter,
        position: int,
        limit: int,
        *,
        last_sent: float,
    ) -> AsyncGenerator[list[EncodedEvent] | int, None]:
        """Matching events from the hub, a delivery's at a time, and positions
        to report as heartbeats: after a heartbeat's time without a message
        (the last went at `last_sent`, the event loop's time), whether or not
        the log grew meanwhile (a busy log none of whose events match is no
        reason to fall silent). Returns when the stream must read the table to
        catch up."""
        clock = asyncio.get_running_loop().time
        while not subscription.lagging:
            quiet_for = clock() - last_sent
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a
                # cancellation that lands as the delivery arrives (leased_work).
                async with asyncio.timeout(max(0.0, self._heartbeat_seconds - quiet_for)):
                    delivery = await subscription.next()
            except TimeoutError:
                if await self._size(tenant_id, reached=position) > position:
                    return  # a notification was lost: read the table
                yield position
                last_sent = clock()
                continue
            # Deliveries that queued while this stream was writing go out together,
            # about a message's bytes of records at a time (the rest stay queued).
            fresh, upto = unseen_events(delivery, subscription, position)
            sent = False
            matcher = subscription.matcher
            # Full-text search in the process too, on the words the hub read.
            if matcher.exact or (matcher.text is not None and all(map(_searchable, fresh))):
                # Sent by the megabyte, giving the process's other calls a turn
                # every TURN_SECONDS: encoding 1,000 events of 44 KB at once
                # held them for seconds (helper-136).
                events: list[EncodedEvent] = []
                held, turns = 0, Turns()
                for live in fresh:
                    # No filter: no need to ask of each.
                    if matcher.matches_all or _matches(matcher, live):
                        events.append(encoded := _encoded(live))
                        held += len(encoded.data)
                    if held >= _HELD_BYTES:
                        yield events
                        events, held, turns, sent = [], 0, Turns(), True
                    else:
                        await turns.take()
                if events:
                    yield events
                    sent = True
            elif fresh:  # full-text search the process cannot decide: the database does
                table = self._from_table(
                    tenant_id, subscription, event_filter, position, upto, limit
                )
                async with aclosing(table):
                    async for read in table:
                        if isinstance(read, list):  # no announcements asked here
                            yield read
                            sent = True
            position = max(position, upto)
            if sent:
                last_sent = clock()
            elif clock() - last_sent >= self._heartbeat_seconds:
                yield position
                last_sent = clock()


def _ends_when_stalled(context: Context, subscription: Subscription) -> Callable[[], None]:
    """What ends the stream of `subscription`, called by the hub once its
    client has taken nothing for a heartbeat's time while the log grew by
    more than SEALTRAIL_STREAM_STALL_BYTES (ADR 0076). It waits in gRPC's
    write, out of reach of anything but its task's cancellation (ADR 0072):
    UNAVAILABLE (`STREAM_STALLED`), after what it had been sent, which the
    clients resume from their cursor as they read on; what the stream holds,
    its place among the streams open and its subscription are given back
    now. Made in the call's task: the end runs there, in the call's context
    (the log line and the status name its request id)."""
    loop = asyncio.get_running_loop()
    call = asyncio.current_task()
    call_context = contextvars.copy_context()

    def end() -> None:
        log.info(
            "ending a live stream of tenant %s: its client took nothing while the log grew"
            " by more than %d bytes (SEALTRAIL_STREAM_STALL_BYTES); it may resume",
            subscription.tenant_id,
            subscription.stall_bytes,
        )
        error = Unavailable(
            "the stream was ended: its client took nothing while the log grew by more than"
            f" {subscription.stall_bytes} bytes (SEALTRAIL_STREAM_STALL_BYTES);"
            " resume after the last seq received",
            retry_after=1.0,
            reason="STREAM_STALLED",
        )
        end_waiting_call(context, call, error)

    def stalled() -> None:  # called from the hub's fetch, in its task
        loop.call_soon(end, context=call_context)

    return stalled


def unseen_events(
    first: Delivery, queued: Subscription, position: int
) -> tuple[list[LiveEvent], int]:
    """The events of `first` and of the deliveries queued behind it with a seq
    beyond `position`, and the position they all reach.

    Deliveries are taken until they hold _HELD_BYTES of records, the rest left
    queued: taken, they were the stream's own, which an overflow of its inbox
    does not drop, and a stream whose client stopped reading kept them all (up
    to the inbox's 16 MiB of records, with their parsed copies 140 MB for
    details of many small keys: helper-209).

    Each delivery is filtered by everything before it, the stream's position
    included: the hub may have fetched events that the stream then also read
    from the table (a new subscriber catches up while writers commit), so a
    delivery queued behind a stale one can repeat what the stream has sent."""
    fresh: list[LiveEvent] = []
    delivery: Delivery | None = first
    held = 0
    while delivery is not None:
        fresh.extend(e for e in delivery.events if e.stored.seq > position)
        position = max(position, delivery.upto)
        held += delivery.size
        delivery = queued.next_queued() if held < _HELD_BYTES else None
    return fresh, position


def _interleaved(
    events: list[EncodedEvent], counts: list[int], *, after_seq: int, through_seq: int
) -> Iterator[list[EncodedEvent] | pb.PurgedRange]:
    """`events` (read after `after_seq`, up to `through_seq`) in runs, each
    run after the PurgedRange of the removals just before it: counts[i] is
    of those before events[i], the last of those after the last event."""
    start, previous = 0, after_seq
    for i, event in enumerate(events):
        if counts[i]:
            if start < i:
                yield events[start:i]
            yield pb.PurgedRange(after_seq=previous, through_seq=event.seq - 1, count=counts[i])
            start = i
        previous = event.seq
    if start < len(events):
        yield events[start:]
    if counts[-1]:
        yield pb.PurgedRange(after_seq=previous, through_seq=through_seq, count=counts[-1])


def _start_details(request: pb.StreamEventsRequest, *, now: datetime) -> dict[str, Any]:
    """Where the stream starts, as its access record shows it; InvalidArgument
    for a start no log can have."""
    start = request.WhichOneof("start")
    if start == "after_seq":
        if not 0 <= request.after_seq <= MAX_SEQ:
            raise InvalidArgument.field("after_seq", f"must be 0 to {MAX_SEQ}")
        return {"after_seq": request.after_seq}
    if start == "since":
        since = checked_bound(request.since.seconds, request.since.nanos, field="since")
        if since > now + timedelta(seconds=MAX_FUTURE_SKEW_SECONDS):
            # The stream would start at the log's end and send what is received
            # before that time, which it was asked not to.
            raise InvalidArgument.field(
                "since", "is in the future; leave the start unset to follow from now"
            )
        return {"since": format_timestamp(since)}
    return {"live": True}


def _encoded_stored(stored: StoredEvent) -> EncodedEvent:
    """The event as streams send it, from its record; DATA_LOSS naming it if
    the record is no event (rewritten in the database), as Export says."""
    try:
        message = event_from_record(stored.record, stored.leaf_hash)
    except UNREADABLE as error:
        raise unreadable_record(stored.seq, error) from None
    return EncodedEvent(stored.seq, message.SerializeToString())


def _encoded(live: LiveEvent) -> EncodedEvent:
    """The event as streams send it, encoded by its first subscriber for all."""
    if live.encoded is None:
        try:
            message = event_from_data(live.record, live.stored.leaf_hash)
        except UNREADABLE as error:
            raise unreadable_record(live.stored.seq, error) from None
        live.encoded = EncodedEvent(live.stored.seq, message.SerializeToString())
    return live.encoded


def _matches(matcher: RecordMatcher, live: LiveEvent) -> bool:
    try:
        if not matcher.matches(live.record):
            return False
    except UNREADABLE as error:
        raise unreadable_record(live.stored.seq, error) from None
    if matcher.text is None:
        return True
    # A read's record has its own words unless the filter names reads (ADR 0012).
    words = live.words if matcher.searches_reads or live.read_words is None else live.read_words
    assert words is not None  # `_searchable`
    return matcher.text.matches(words)


def _searchable(live: LiveEvent) -> bool:
    """Whether the hub read (and could read) the words `text` searches in `live`."""
    return live.words is not None and (
        live.read_words is not None or live.record.get("action") not in READ_RECORD_ACTIONS
    )


def _responses(events: list[EncodedEvent], limit: int) -> Iterator[bytes]:
    """The encodings of the responses that send `events`: each alone (`limit`
    0), or in EventBatches of up to `limit` events and MAX_BATCH_BYTES (one
    event, whatever its size, always goes). Framed by hand around each event's
    encoding: building an EventBatch copied every event into it, and gRPC then
    serialized it, for every stream that sent it (ADR 0043)."""
    if not limit:
        for event in events:
            yield element_prefix(_ALONE, len(event.data)) + event.data
        return
    parts: list[bytes] = [b""]  # [0]: the batch's key and length, once they are known
    count = size = length = 0
    for event in events:
        if count and (count == limit or size + len(event.data) > MAX_BATCH_BYTES):
            parts[0] = element_prefix(_BATCH, length)
            yield b"".join(parts)
            parts, count, size, length = [b""], 0, 0, 0
        prefix = element_prefix(_IN_BATCH, len(event.data))
        parts += (prefix, event.data)
        count += 1
        size += len(event.data)
        length += len(prefix) + len(event.data)
    if count:
        parts[0] = element_prefix(_BATCH, length)
        yield b"".join(parts)


def _heartbeat(position: int) -> bytes:
    response = pb.StreamEventsResponse(heartbeat=pb.Heartbeat(cursor=position))
    response.heartbeat.server_time.FromDatetime(datetime.now(UTC))
    return response.SerializeToString()
