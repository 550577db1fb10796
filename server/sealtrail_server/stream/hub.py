"""The per-process hub that fans committed events out to live subscribers.

Every commit notifies `tenant:size` (store/appender.py). The hub LISTENs on one
connection; for a tenant with subscribers in this process it fetches the new
rows ONCE per notification and offers them to each subscriber. A subscriber
whose queue is full (in deliveries or in bytes) is marked lagging and its
queue dropped: it then reads from the table until it is current
(api/stream.py), so nothing is lost and nothing is buffered without bound.
Lost notifications (a dropped LISTEN connection) are covered the same way:
subscribers compare their position with the log's size at every heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from psycopg import sql

from sealtrail._words import counted

from ..domain.errors import ResourceExhausted, TenantLimitReached
from ..domain.event import MAX_RECORD_BYTES, READ_RECORD_ACTIONS
from ..domain.filters import RecordMatcher
from ..domain.text_search import Vector, parse_vector
from ..measures import no_meter
from ..stopping import end_tasks
from ..store.appender import NOTIFY_CHANNEL
from ..store.database import Database
from ..store.db_errors import named
from ..store.events import SEARCHED_VECTORS, StoredEvent, page_rows
from ..store.tree import tree_size
from ..turns import Turns

log = logging.getLogger(__name__)

_FETCH_ROWS = 1000
# About how many bytes of records a fetch reads: 1,000 rows of 44 KB were
# 44 MB, parsed in one go. Its rows are sized by the fetch before it.
_FETCH_BYTES = 4 * 1024 * 1024
_RECONNECT_SECONDS = 1.0
# When a stream refused for the limits may try again: a place frees when a
# stream ends, which is not often; sooner, a reconnecting crowd kept asking.
_FULL_RETRY_SECONDS = 5.0
# A LISTEN connection whose peer vanished without a word (a failover that
# moved the address, a NAT that forgot it) is found out in about a minute,
# not the operating system's two hours: until then no commit is announced.
_KEEPALIVES: Final[dict[str, Any]] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event as streams send it: its seq and its `Event` message's
    encoding, which responses are framed around (ADR 0043)."""

    seq: int
    data: bytes


@dataclass(slots=True)
class LiveEvent:
    """A committed event, its record parsed once for every subscriber; the API
    layer keeps what it sends in `encoded`, built once for them all too."""

    stored: StoredEvent
    record: dict[str, Any]
    encoded: EncodedEvent | None = None
    # The words a `text` filter searches, read by a fetch for a tenant with
    # such a subscriber (None else, or if they could not be read here): all
    # of them, and for a read's record those but its filter's (None for
    # other records). See domain/text_search.py.
    words: Vector | None = None
    read_words: Vector | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """Events of one fetch, the log position (seq) the fetch reached, and the
    size of the events' records in bytes (as stored: the parsed copies each
    event keeps beside its text take a few times that again)."""

    events: list[LiveEvent]
    upto: int
    size: int = 0


# What wakes a subscriber to end: its server is stopping.
_END: Final = Delivery([], 0)


class StreamEnding(Exception):
    """The server is stopping: the stream ends now, for its client to resume
    elsewhere (or here once it is back), not when the shutdown's grace ends."""


class Subscription:
    """One subscriber's inbox, bounded in deliveries (`capacity`) and in the
    bytes of their records (`max_bytes`): a fetch holds up to 1,000 records of
    up to 64 KiB, so a count of deliveries alone let a slow subscriber pin
    gigabytes. Overflowing either marks the subscriber lagging."""

    def __init__(
        self,
        tenant_id: str,
        matcher: RecordMatcher,
        *,
        capacity: int,
        max_bytes: int,
        stall_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.tenant_id = tenant_id
        self.matcher = matcher
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=capacity)
        self._max_bytes = max_bytes
        self._queued_bytes = 0
        self.lagging = False
        self.ending = False
        # A stall (see `writing`): the log may grow by `stall_bytes` of records
        # while the subscriber's client takes nothing for `_stall_seconds`.
        self.stall_bytes = stall_bytes
        self._stall_seconds = 0.0
        self._on_stalled: Callable[[], None] | None = None
        self._writing_since: float | None = None
        self._offered_since = 0  # bytes of records offered since `_writing_since`
        self.stalled = False

    def on_stall(self, seconds: float, ended: Callable[[], None]) -> None:
        """Call `ended()` once, and take nothing more, when the log has grown by
        more than the hub's stall bytes while one response waited at least
        `seconds` for the subscriber's client to take it (`writing`)."""
        self._stall_seconds = seconds
        self._on_stalled = ended

    def writing(self) -> None:
        """A response is handed to the subscriber's client, which may take it
        only as its flow-control window opens (never, if it stopped reading)."""
        self._writing_since = asyncio.get_running_loop().time()
        self._offered_since = 0

    def written(self) -> None:
        """The client took it (gRPC asked for the next response)."""
        self._writing_since = None

    def _stalls(self, delivery: Delivery) -> bool:
        """Whether `delivery` is past what the subscriber may have offered while
        its client takes nothing; if so it is told to end, its inbox dropped."""
        since = self._writing_since
        if since is None or self._on_stalled is None:
            return False
        self._offered_since += delivery.size
        if self._offered_since <= self.stall_bytes:
            return False
        if asyncio.get_running_loop().time() - since < self._stall_seconds:
            return False
        self.stalled = True
        self.fall_behind()
        self._on_stalled()
        return True

    def offer(self, delivery: Delivery) -> None:
        if self.ending or self.stalled or self._stalls(delivery):
            return
        if self.lagging:
            return
        # One delivery however large is taken into an empty inbox: a subscriber
        # keeping up is not sent to the table for the size of one fetch.
        over = self._queued_bytes + delivery.size > self._max_bytes and not self._queue.empty()
        if over or self._queue.full():
            self.fall_behind()
            return
        self._queue.put_nowait(delivery)
        self._queued_bytes += delivery.size

    def fall_behind(self) -> None:
        """The subscriber reads from the table instead: what it has queued is
        dropped (the table has it too), and nothing queues until it caught up.
        Not once it is told to end: that would drop the end with the rest."""
        if self.ending:
            return
        self.lagging = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queued_bytes = 0

    async def next(self) -> Delivery:
        """The oldest delivery, once there is one; StreamEnding once `end`."""
        delivery = await self._queue.get()
        if delivery is _END:
            raise StreamEnding
        self._queued_bytes -= delivery.size
        return delivery

    def end(self) -> None:
        """Wake the subscriber to end (StreamEnding from `next`)."""
        self.ending = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queued_bytes = 0
        self._queue.put_nowait(_END)

    def next_queued(self) -> Delivery | None:
        """The oldest delivery, if one is queued."""
        if self._queue.empty():
            return None
        delivery = self._queue.get_nowait()
        self._queued_bytes -= delivery.size
        return delivery

    def caught_up(self) -> None:
        """The subscriber read the table up to now: deliveries count again."""
        self.lagging = False


@dataclass(slots=True)
class _Tenant:
    fetched: int  # the hub has offered every event up to this seq
    target: int  # the latest size notified
    subscribers: set[Subscription] = field(default_factory=set)
    fetching: asyncio.Task[None] | None = None
    # Rows the next fetch reads at most: at first as if records were their largest.
    fetch_rows: int = page_rows(_FETCH_ROWS, _FETCH_BYTES, rows=1, size=MAX_RECORD_BYTES)


_ROWS: Final = (
    "SELECT seq, record, leaf_hash, octet_length(record) FROM events"
    " WHERE tenant_id = %s AND seq > %s AND seq <= %s ORDER BY seq"
)
_ROWS_WITH_WORDS: Final = (
    f"SELECT seq, record, leaf_hash, octet_length(record), {SEARCHED_VECTORS} FROM events"
    " WHERE tenant_id = %s AND seq > %s AND seq <= %s ORDER BY seq"
)


async def _rows(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, after: int, upto: int, *, words: bool
) -> list[tuple[Any, ...]]:
    """The tenant's rows of seqs `after` (excluded) to `upto`, in order; with
    `words`, each with the words a `text` filter searches (SEARCHED_VECTORS)."""
    if words:
        params = [list(READ_RECORD_ACTIONS), tenant_id, after, upto]
        cursor = await conn.execute(_ROWS_WITH_WORDS, params)
    else:
        cursor = await conn.execute(_ROWS, [tenant_id, after, upto])
    return await cursor.fetchall()


def _live_event(row: tuple[Any, ...]) -> LiveEvent:
    seq, record, leaf, _, *words = row
    event = LiveEvent(StoredEvent(seq, record, bytes(leaf)), json.loads(record))
    if words:
        searched, read_searched = words
        event.words = parse_vector(searched)
        event.read_words = None if read_searched is None else parse_vector(read_searched)
    return event


class StreamHub:
    def __init__(
        self,
        db: Database,
        *,
        database_url: str,
        queue_capacity: int = 64,
        queue_bytes: int = 16 * 1024 * 1024,
        stall_bytes: int = 4 * 1024 * 1024,
        max_per_tenant: int = 100,
        max_per_process: int = 1000,
        meter: Meter | None = None,
    ) -> None:
        self._db = db
        self._url = database_url
        self._capacity = queue_capacity
        self._queue_bytes = queue_bytes
        self._stall_bytes = stall_bytes
        self._max_per_tenant = max_per_tenant
        self._max_per_process = max_per_process
        self._tenants: dict[str, _Tenant] = {}
        # Fetches cancelled as their tenant's last subscriber left, until they
        # end: asyncio keeps no reference of its own, and one awaiting its
        # query's cancel was destroyed there by the collector, pending.
        self._cancelled_fetches: set[asyncio.Task[None]] = set()
        self._ending = False  # the server is stopping: every stream ends
        self._task: asyncio.Task[None] | None = None
        self._watchers: list[Callable[[str], None]] = []
        (meter or no_meter()).create_observable_up_down_counter(
            "sealtrail.stream.subscribers",
            callbacks=[self._observe_subscribers],
            unit="{subscriber}",
            description="Live StreamEvents subscriptions served by this process.",
        )

    def subscriber_count(self) -> int:
        """Live subscriptions in this process (a leak shows here)."""
        # A copy: a metrics reader calls this from its own thread.
        return sum(len(tenant.subscribers) for tenant in list(self._tenants.values()))

    def _observe_subscribers(self, _options: CallbackOptions) -> list[Observation]:
        return [Observation(self.subscriber_count())]

    def watch(self, callback: Callable[[str], None]) -> None:
        """Call `callback(tenant_id)` on every commit notification of any tenant."""
        self._watchers.append(callback)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="sealtrail-stream-hub")

    async def stop(self) -> None:
        tasks = [t.fetching for t in self._tenants.values() if t.fetching is not None]
        tasks.extend(self._cancelled_fetches)
        if self._task is not None:
            tasks.append(self._task)
        await end_tasks(tasks)
        self._task = None

    async def subscribe(self, tenant_id: str, matcher: RecordMatcher) -> Subscription:
        """A new subscriber; ResourceExhausted past the streams a tenant or
        the process may have: each stream whose client stops reading pins
        megabytes, and any reader token could open them without end."""
        subscription = Subscription(
            tenant_id,
            matcher,
            capacity=self._capacity,
            max_bytes=self._queue_bytes,
            stall_bytes=self._stall_bytes,
        )
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            async with self._db.connection(tenant_id) as conn:
                size = await tree_size(conn, tenant_id)
            tenant = self._tenants.setdefault(tenant_id, _Tenant(fetched=size, target=size))
        # Counted after the wait above, with nothing to wait for until it is added.
        if len(tenant.subscribers) >= self._max_per_tenant:
            raise TenantLimitReached(
                f"the tenant has {counted(len(tenant.subscribers), 'stream')} open on this server,"
                " the most it may; close one, or retry later",
                retry_after=_FULL_RETRY_SECONDS,
                reason="TOO_MANY_STREAMS",
                limit=self._max_per_tenant,
            )
        if self.subscriber_count() >= self._max_per_process:
            self._forget_if_unused(tenant_id)
            raise ResourceExhausted(
                "this server serves the most streams it may; retry later",
                retry_after=_FULL_RETRY_SECONDS,
                reason="TOO_MANY_STREAMS",
            )
        tenant.subscribers.add(subscription)
        if self._ending:
            subscription.end()
        return subscription

    def end_streams(self) -> None:
        """Every subscriber woken to end, and any still to come ended at once:
        the server is stopping."""
        self._ending = True
        for tenant in self._tenants.values():
            for subscription in tenant.subscribers:
                subscription.end()

    def unsubscribe(self, subscription: Subscription) -> None:
        tenant = self._tenants.get(subscription.tenant_id)
        if tenant is None:
            return
        tenant.subscribers.discard(subscription)
        self._forget_if_unused(subscription.tenant_id)

    def _forget_if_unused(self, tenant_id: str) -> None:
        tenant = self._tenants.get(tenant_id)
        if tenant is not None and not tenant.subscribers:
            if tenant.fetching is not None:
                tenant.fetching.cancel()
                self._cancelled_fetches.add(tenant.fetching)
                tenant.fetching.add_done_callback(self._cancelled_fetches.discard)
            del self._tenants[tenant_id]

    async def _listen(self) -> None:
        """Listens until stopped, whatever fails: had it ended, every stream
        of the process would have waited a heartbeat for each event, and the
        forwarder and the alert evaluator for their polls, unannounced."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, **_KEEPALIVES
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
                    for tenant_id in list(self._tenants):
                        await self._resync(tenant_id)  # what happened while not listening
                    async for notify in conn.notifies():
                        self._notified(notify.payload)
            except Exception as error:
                log.warning("stream hub: LISTEN connection lost (%s); reconnecting", named(error))
                await asyncio.sleep(_RECONNECT_SECONDS)

    async def _resync(self, tenant_id: str) -> None:
        try:
            async with self._db.connection(tenant_id) as conn:
                size = await tree_size(conn, tenant_id)
        except Exception as error:  # after an outage, a pooled connection may have died with it
            log.warning(
                "stream hub: could not read the log size of %r: %s", tenant_id, named(error)
            )
            self._lagging(tenant_id)
            return
        self._notified(f"{tenant_id}:{size}")

    def _lagging(self, tenant_id: str) -> None:
        """The tenant's subscribers read what they missed from the table at
        their next heartbeat."""
        tenant = self._tenants.get(tenant_id)
        for subscription in () if tenant is None else tenant.subscribers:
            subscription.fall_behind()

    def _notified(self, payload: str) -> None:
        tenant_id, _, size_text = payload.rpartition(":")
        for callback in self._watchers:
            callback(tenant_id)
        tenant = self._tenants.get(tenant_id)
        if tenant is None or not size_text.isdigit():
            return
        tenant.target = max(tenant.target, int(size_text))
        if tenant.fetching is None and tenant.target > tenant.fetched:
            tenant.fetching = asyncio.create_task(self._fetch(tenant_id, tenant))

    async def _believed(
        self, conn: psycopg.AsyncConnection[Any], tenant_id: str, tenant: _Tenant, upto: int
    ) -> int:
        """How far a fetch that found fewer rows than it asked for may move
        its subscribers: no further than the log's size. Anyone who may
        connect can NOTIFY the channel; a size claimed beyond the log's moved
        every live stream past events not yet written (helper-151). (Fewer
        rows up to a true size: events the purge removed already.)"""
        size = max(await tree_size(conn, tenant_id), tenant.fetched)
        if size >= upto:
            return upto
        log.warning(
            "stream hub: a notification said %r has %d events; it has %d (a NOTIFY sent"
            " from outside Sealtrail?)",
            tenant_id,
            tenant.target,
            size,
        )
        tenant.target = size
        return size

    async def _fetch(self, tenant_id: str, tenant: _Tenant) -> None:
        """One read per notification, offered to every subscriber of the
        tenant; of about _FETCH_BYTES at most, parsed giving the loop a turn
        every TURN_SECONDS: 1,000 records of 44 KB held every other call of
        the process for seconds (helper-136)."""
        try:
            while tenant.fetched < tenant.target and tenant.subscribers:
                upto = min(tenant.target, tenant.fetched + tenant.fetch_rows)
                # Read once for every subscriber that matches `text` here: each
                # asked the table about every delivery (domain/text_search.py).
                words = any(s.matcher.text is not None for s in tenant.subscribers)
                # A range of the primary key whatever its bounds: one generic
                # plan serves every fetch. Planned for each run's values, a
                # fetch of a few rows cost more planning than reading (ADR 0032).
                async with self._db.connection(tenant_id, generic_plans=True) as conn:
                    rows = await _rows(conn, tenant_id, tenant.fetched, upto, words=words)
                    if len(rows) < upto - tenant.fetched:
                        upto = await self._believed(conn, tenant_id, tenant, upto)
                        # Read again up to the size believed: commits that
                        # landed between the two statements are in that size
                        # and were not in the first read (helper-191).
                        rows = await _rows(conn, tenant_id, tenant.fetched, upto, words=words)
                events: list[LiveEvent] = []
                turns = Turns()
                for row in rows:
                    events.append(_live_event(row))
                    await turns.take()
                stored = sum(row[3] for row in rows)
                if rows:
                    tenant.fetch_rows = page_rows(
                        _FETCH_ROWS, _FETCH_BYTES, rows=len(rows), size=stored
                    )
                delivery = Delivery(events, upto, stored)
                for subscription in tenant.subscribers:
                    subscription.offer(delivery)
                tenant.fetched = upto
        except Exception as error:  # subscribers fall back to the table at their heartbeat
            log.warning("stream hub: fetch for %r failed: %s", tenant_id, named(error))
            with contextlib.suppress(Exception):
                for subscription in tenant.subscribers:
                    subscription.fall_behind()
        finally:
            tenant.fetching = None
