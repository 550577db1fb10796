"""Delivers each sink's events at least once, in seq order, from its cursor in
PostgreSQL (ADR 0016).

Every process runs one Forwarder. It leases sinks (a row lease that expires,
renewed while held, so exactly one live process delivers a given sink and a
dead one's sinks are taken over after `lease_seconds`) and runs one task per
leased sink. A task reads the next matching events past the cursor, sends
them in the kind's requests, and moves the cursor only once every request
succeeded or its events were parked as a dead letter: a crash or an outage
re-sends, never skips. Failures back off exponentially with jitter (Retry-After
honoured), up to five minutes. A request the destination refuses (a 4xx
other than those retried) goes again in halves, down to the events it
refuses alone, which alone are parked; after a 413 (too large) the requests
of that stream (the live events, or a replay) stay that small a while. An
event refused alone after halving, or as too large, is parked if the
destination took other requests (only smaller ones, for a 413), else
retried with backoff (a destination refusing everything is at fault, not its
events), and parked after a few failures (what the destination was seen to
take lives in `memory.DestinationMemory`). A 403 of one event is sent again,
and parked if refused again, once one of the next few, sent alone, is taken
(a firewall's rule against it); else it is retried as a refusal of the
sink's token. Commits wake the tasks of their tenant (the stream hub's
notifications); a poll covers anything missed."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Final

import httpcore
import psycopg
from opentelemetry.metrics import Meter

from ..api.convert import filter_from_json
from ..domain.event import MAX_RECORD_BYTES
from ..domain.filters import EventFilter
from ..domain.sealing import SecretBox
from ..fair_share import FairShare
from ..leased_work import LeasedWork, WaitingForRoom, new_owner
from ..newer_objects import NEWER, sink_not_understood
from ..store import sinks as store
from ..store.database import Connection, Database
from ..store.events import StoredEvent, stream_events
from ..store.sinks import Parking
from ..store.tree import tree_size
from . import mail
from .destinations import (
    ANSWER_BYTES,
    FORBIDDEN,
    LIMITS,
    READ_PER_BYTE,
    Outgoing,
    PendingEvent,
    Sender,
    Verdict,
    answered,
    explained,
    forbidden_alone,
    needs_body,
    requests,
    unanswered,
    verdict,
)
from .egress import Answer, EgressDenied, OutboundClient, Unresolvable
from .measures import ForwardingMeasures
from .memory import LONE_REFUSAL_RETRIES, DestinationMemory, Stream

log = logging.getLogger(__name__)

BACKOFF_CAP: Final = 300.0
# Requests in flight at once for one tenant's sinks, at most, of the process's
# shared outbound connections; fewer while many tenants want them (FairShare):
# a tenant whose destinations are slow (or made slow on purpose) holds up its
# own deliveries, never every other tenant's.
TENANT_REQUESTS: Final = 10
# How long a cursor's move may sit idle in its transaction, between two of its
# statements, before PostgreSQL ends its session and rolls it back. The move
# holds the sink's row (and shares the tenant's erasure lock) to its commit: a
# process frozen there (SIGSTOP, `docker pause`, a debugger) held them for as
# long as it stayed frozen, and the sink's changes and the tenant's erasure,
# through any process, waited or failed meanwhile. Between its statements a
# move does nothing but note its letters. As a change's (store/changes.py).
IDLE_IN_MOVE_SECONDS = 30.0
_TRANSPORT_ERRORS: Final = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    EgressDenied,
    OSError,
)


# Rows of the first page a step reads: at most 4 MiB of the largest records.
_FIRST_PAGE: Final = 64
# Why an event refused alone with a 403 is parked once the sink's credentials
# were seen to be good (ADR 0054).
_THE_EVENTS: Final = "a refusal of this event (a web application firewall's rule), not of the sink"


def _size(record: str) -> int:
    return len(record) if record.isascii() else len(record.encode())


def _page(events: int, budget: int, average: float) -> int:
    """Rows to read for `budget` bytes of records of `average` size, at most
    `events`: a little over, so that one page fills a request."""
    return max(1, min(events, int(budget / average * 1.1) + 1))


def backoff(failures: int, *, base: float, chance: random.Random) -> float:
    """Seconds before attempt `failures + 1`: exponential, capped, with the
    upper half jittered so that sinks failing together do not retry together."""
    delay = min(BACKOFF_CAP, base * 2.0 ** min(failures, 30))
    return delay / 2 + chance.uniform(0, delay / 2)


class _Refused(Exception):
    """A write of the step did nothing: the sink's lease was lost, its tenant
    is being erased (the store's writes then do nothing rather than wait), or
    its definition changed since the step read it, of `defined_at`."""

    def __init__(self, defined_at: datetime) -> None:
        super().__init__()
        self.defined_at = defined_at


@dataclass(frozen=True, slots=True)
class _NoAnswer:
    """Why a request got no answer."""

    error: str
    needs_fixing: bool  # only someone can end it (an address the egress policy refuses)


@dataclass(frozen=True, slots=True)
class _Sent:
    """What became of a request's events: every event up to `upto` is dealt
    with, `delivered` of them taken, and `letters` hold those refused, parked
    in the transaction that moves the stream's cursor over them."""

    upto: int
    delivered: int
    letters: tuple[Parking, ...] = ()


def _now() -> datetime:
    # Wall-clock time, not the service's clock: webhook timestamps and the
    # times a sink's state shows are about real time, whatever clock stamps
    # events. Leases and backoff run by the database's clock instead, which
    # every process shares however far theirs drift.
    return datetime.now(UTC)


class Forwarder:
    def __init__(
        self,
        db: Database,
        client: OutboundClient,
        *,
        box: SecretBox,
        poll_interval: float = 1.0,
        lease_seconds: float = 30.0,
        backoff_base: float = 1.0,
        max_sinks: int = 1000,
        tenant_requests: int = TENANT_REQUESTS,
        meter: Meter | None = None,
    ) -> None:
        """`meter`: events delivered and parked, requests, failures, and how far
        behind each sink held here is (docs/metrics.md)."""
        self._db = db
        self._memory = DestinationMemory()  # what each sink's destination was seen to do
        self._record_sizes: dict[str, float] = {}  # sink -> its records' recent average size
        self._waiting = WaitingForRoom(
            log, prefix="forwarder", held="delivers %d sinks", limit="SEALTRAIL_FORWARD_MAX_SINKS"
        )
        self._slots = FairShare(capacity=client.max_connections, per_key=tenant_requests)
        self._client = client
        self._box = box
        self._poll = poll_interval
        self._lease_seconds = lease_seconds
        self._backoff_base = backoff_base
        self._max_sinks = max_sinks
        # Sinks left to a newer release's processes (newer_objects.py), as
        # defined when this one met them: not claimed again until changed.
        self._left: dict[store.Lease, datetime] = {}
        self.owner = new_owner()
        self._chance = random.Random()
        self._work: LeasedWork[store.Lease] = LeasedWork(
            "forwarder",
            claim=self._claim,
            step=self._step,
            release=self._release,
            tenant_of=lambda lease: lease.tenant_id,
            poll_interval=poll_interval,
            lease_seconds=lease_seconds,
        )
        # Events, requests, failures, and how far behind the sinks held here are.
        self._measures = ForwardingMeasures(
            meter,
            kept_for=max(lease_seconds, poll_interval * 10),
            sinks_waiting=lambda: self._waiting.count,
        )

    def start(self) -> None:
        if self._max_sinks > 0:
            self._work.start()

    async def stop(self) -> None:
        await self._work.stop()
        await self._client.close()
        self._measures.clear()  # no sink is held here any more

    def sinks_changed(self) -> None:
        """Sinks were created, changed or given replays here: look for sinks
        to deliver now rather than at the next lease renewal."""
        self._work.claim_soon()

    def sink_changed(self, tenant_id: str) -> None:
        """sinks_changed, and the tenant's sinks held here look again at once."""
        self._work.claim_soon()
        self._work.wake(tenant_id)

    def wake(self, tenant_id: str) -> None:
        """Events were committed in `tenant_id`'s log."""
        self._work.wake(tenant_id)

    async def _claim(self) -> list[store.Lease]:
        leave = list(self._left.items())
        async with self._db.system_connection() as conn:
            leases = await store.claim_sinks(
                conn,
                owner=self.owner,
                lease_seconds=self._lease_seconds,
                limit=self._max_sinks,
                leave=leave,
            )
            full = len(leases) >= self._max_sinks
            # Those left now, not at the claim: a step leaving one meanwhile
            # (`_leave`, which notes it before it gives the lease up) had it
            # counted as waiting for room, a sink no process of this release takes.
            left_now = list(self._left.items())
            waiting = await store.count_unleased(conn, leave=left_now) if full else 0
            standing = set(await store.still_left(conn, leave))
        self._waiting.saw(len(leases), waiting, what="sink")
        # A sink left, deleted or changed since, is forgotten (met again if changed).
        for lease, at in leave:
            if (lease, at) not in standing and self._left.get(lease) == at:
                del self._left[lease]
        held = {lease.sink_id for lease in leases}
        self._memory.keep_only(held)
        for sink_id in [sink_id for sink_id in self._record_sizes if sink_id not in held]:
            del self._record_sizes[sink_id]
        self._measures.keep_only(held)
        return leases

    async def _release(self) -> None:
        async with self._db.system_connection() as conn:
            await store.release_leases(conn, owner=self.owner)

    async def _step(self, lease: store.Lease) -> float | None:
        """One batch of a sink: the seconds to wait before the next (0: go on
        at once), or None when this process no longer delivers the sink."""
        try:
            return await self._deliver(lease)
        except _Refused as refused:
            return await self._after_refused_move(lease, refused.defined_at)

    async def _deliver(self, lease: store.Lease) -> float | None:
        async with self._db.system_connection() as conn:
            sink = await store.read_leased(conn, lease, owner=self.owner, box=self._box)
            replay = await store.oldest_replay(conn, lease) if sink else None
        if sink is None:
            self._measures.forget(lease.sink_id)
            return None
        newer = sink_not_understood(sink.definition.kind, sink.definition.filter)
        if newer is not None:
            await self._leave(lease, sink.updated_at, newer)
            return None
        due = sink.state.next_attempt_at
        async with self._db.connection(lease.tenant_id) as conn:
            head = await tree_size(conn, lease.tenant_id)
            # By the database's clock, which set it (store.record_failure).
            wait = None if due is None else await store.seconds_until(conn, due)
        cursor = sink.state.cursor_seq
        # Seen at each step, waiting (a backoff, secrets to set) or not.
        self._measures.lag(lease.sink_id, sink.definition.kind, head - cursor)
        if wait is not None and wait > 0:
            return min(wait, self._poll * 5)
        if sink.unopened:  # nothing is sent, or parked, until its secrets can be used
            failures = sink.state.consecutive_failures
            problem = sink.unopened_text()  # each field named: "secrets: why", "token: why"
            await self._failed(
                lease, sink.updated_at, failures, problem, retry_after=None, needs_fixing=True
            )
            return 0.0
        definition = sink.definition
        sender = Sender(
            lease.tenant_id,
            lease.sink_id,
            definition.kind,
            definition.format,
            definition.destination,
        )
        event_filter = filter_from_json(definition.filter)
        progressed = False
        failures = sink.state.consecutive_failures
        if cursor < head:
            sent = await self._send_range(
                sender, lease, sink.updated_at, failures, event_filter, cursor, head
            )
            if sent is None:
                # The failure set next_attempt_at, and the next step waits for
                # it; or the request goes again at once, smaller.
                return 0.0
            moved = await self._move(
                lease,
                sink.updated_at,
                sent,
                lambda conn: store.advance(
                    conn,
                    lease,
                    owner=self.owner,
                    from_seq=cursor,
                    to_seq=sent.upto,
                    delivered=sent.delivered,
                    now=_now(),
                    defined_at=sink.updated_at,
                ),
                bypass_filter=False,
            )
            if not moved:
                return await self._after_refused_move(lease, sink.updated_at)
            self._measures.sent(definition.kind, sent.delivered, sent.letters)
            self._measures.lag(lease.sink_id, definition.kind, head - sent.upto)
            progressed = True
            if sent.delivered:  # as `advance` left it: a replay failing next backs off anew
                failures = 0
        if replay is not None:  # a batch of it each step: live traffic never starves it
            base = EventFilter() if replay.bypass_filter else event_filter
            window = replace(
                base,
                occurred_after=_later(base.occurred_after, replay.occurred_after),
                occurred_before=_earlier(base.occurred_before, replay.occurred_before),
            )
            replayed = await self._send_range(
                sender,
                lease,
                sink.updated_at,
                failures,
                window,
                replay.cursor_seq,
                replay.last_seq,
                replay_id=replay.id,
            )
            if replayed is None:
                return 0.0
            moved = await self._move(
                lease,
                sink.updated_at,
                replayed,
                lambda conn: store.advance_replay(
                    conn,
                    lease,
                    replay,
                    owner=self.owner,
                    to_seq=replayed.upto,
                    delivered=replayed.delivered,
                    now=_now(),
                    defined_at=sink.updated_at,
                ),
                bypass_filter=replay.bypass_filter,
            )
            if not moved:
                return await self._after_refused_move(lease, sink.updated_at)
            self._measures.sent(definition.kind, replayed.delivered, replayed.letters)
            if replayed.upto >= replay.last_seq:  # done: what its requests met goes with it
                self._memory.forget_stream((lease.sink_id, replay.id))
            progressed = True
        return 0.0 if progressed else self._poll

    async def _move(
        self,
        lease: store.Lease,
        defined_at: datetime,
        sent: _Sent,
        move: Callable[[Connection], Awaitable[bool]],
        *,
        bypass_filter: bool,
    ) -> bool:
        """The stream's cursor moved over `sent` (by `move`) and its letters
        parked, in one transaction: both or neither. Parked first and alone,
        a crash, a lease lost or an UpdateSink committed before the move left
        a dead letter of events then sent again: delivered, or parked twice
        (helper-103). `bypass_filter`: the events were read past the sink's
        filter (a replay that bypasses it), and are replayed so."""
        moved = False
        async with self._db.system_connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                [f"{max(1, round(IDLE_IN_MOVE_SECONDS * 1000))}ms"],
            )
            if not await move(conn):
                raise psycopg.Rollback
            # The move locked the sink's row and checked its lease, definition
            # and erasure lock: the park cannot find them changed (defensive).
            if sent.letters and not await store.park(
                conn,
                lease,
                sent.letters,
                owner=self.owner,
                defined_at=defined_at,
                bypass_filter=bypass_filter,
                now=_now(),
            ):
                raise psycopg.Rollback
            moved = True
        if moved and sent.letters:  # once committed: a letter rolled back is not one
            _log_parked(lease.sink_id, sent)
        return moved

    async def _after_refused_move(self, lease: store.Lease, defined_at: datetime) -> float | None:
        """After a cursor that would not move, or a failure or dead letter
        that was not recorded: at once again if the sink was changed while its
        batch was sent (the range goes again, by the new filter and
        destination: at least once, never skipped; and neither a dead letter
        nor a backoff is left of what the old definition met), else None (the
        lease went, or the tenant is being erased: another step would only
        send the batch again)."""
        async with self._db.system_connection() as conn:
            changed = await store.changed_since(
                conn, lease, owner=self.owner, defined_at=defined_at
            )
        return 0.0 if changed else None

    async def _leave(self, lease: store.Lease, defined_at: datetime, newer: str) -> None:
        """Leaves a sink a newer release made to a process of it: nothing sent,
        parked or recorded of it, its lease given up and not taken again here
        until its definition changes; said once."""
        if self._left.get(lease) != defined_at:
            log.warning(
                "forwarder: tenant %s sink %s was %s release (%s not known to this one);"
                " left to a process that knows it",
                lease.tenant_id, lease.sink_id, NEWER, newer,
            )  # fmt: skip
        self._left[lease] = defined_at
        self._measures.forget(lease.sink_id)
        async with self._db.system_connection() as conn:
            await store.release_lease(conn, lease, owner=self.owner)

    async def _send_range(
        self,
        sender: Sender,
        lease: store.Lease,
        defined_at: datetime,
        failures: int,
        event_filter: EventFilter,
        after: int,
        upto: int,
        *,
        replay_id: str | None = None,
    ) -> _Sent | None:
        """Sends the next matching events in (after, upto], a request's worth:
        what became of them (see _Sent); None after a failure worth retrying
        (recorded), or a request to send again smaller. `defined_at`: when
        the sink's definition the step read was made. `replay_id`: the replay
        sent (None: the live cursor's events)."""
        stream = (lease.sink_id, replay_id)
        limit, max_bytes = self._memory.limits(sender.kind, stream, defined_at)
        # Read once a connection is free: read before, a batch (up to 8 MiB)
        # was held by every sink waiting for one, memory growing with a slow
        # tenant's sinks, not with its requests in flight (helper-148).
        async with self._slots.slot(lease.tenant_id):
            read_bytes = max_bytes * READ_PER_BYTE[sender.kind]
            events, exhausted = await self._read(
                lease, event_filter, after, upto, limit, read_bytes
            )
            if not events:
                return _Sent(upto, 0)
            pending = [PendingEvent(e.seq, e.record, e.leaf_hash) for e in events]
            # Built and signed once a connection is free: a request that waited
            # for one still carries the time it is sent, which receivers check
            # (a webhook's timestamp, within five minutes).
            # One request a step, its events then dealt with (delivered or parked):
            # a later request of the same read failing must not send this one again.
            [first, *rest] = requests(
                sender, pending, now=_now(), max_events=limit, max_bytes=max_bytes
            )
            answer = await self._exchange(sender, first)
        # Alone because it was all there was to send, or because the kind
        # sends each event alone (PagerDuty's, an alert per event: ADR 0131),
        # not because a search halved the requests down to it.
        alone_by_choice = len(events) == 1 and (exhausted or LIMITS[sender.kind][0] == 1)
        if isinstance(answer, Answer) and forbidden_alone(
            sender.kind, first, answer.status, answer.body
        ):
            told = await self._whose_403(sender, lease, stream, defined_at, event_filter,
                                         pending[0], first, answer, upto)  # fmt: skip
            if isinstance(told, Verdict):  # a probe met a failure: the sink's, retried
                await self._failed(lease, defined_at, failures, told.error,
                                   retry_after=told.retry_after,
                                   needs_fixing=told.needs_fixing)  # fmt: skip
                return None
            if told is not None:
                return told
        settled = await self._settle(
            sender,
            lease,
            stream,
            defined_at,
            failures,
            first,
            answer,
            alone_by_choice=alone_by_choice,
        )
        if settled is None:
            return None
        delivered, letters = settled
        if rest:
            return _Sent(first.seqs[-1], delivered, letters)
        return _Sent(upto if exhausted else events[-1].seq, delivered, letters)

    async def _whose_403(
        self,
        sender: Sender,
        lease: store.Lease,
        stream: Stream,
        defined_at: datetime,
        event_filter: EventFilter,
        event: PendingEvent,
        refused: Outgoing,
        answer: Answer,
        upto: int,
    ) -> _Sent | Verdict | None:
        """After a 403 of `event` alone: whether the sink's credentials are
        good, the events after it sent each alone to tell (ADR 0054; 3 at its
        first try, twice as many at each next, up to 64). One taken, those
        refused before it are sent once more, alone, and parked if refused
        again (a web application firewall's rule against what they hold), and
        the cursor moves to it. Else, if the destination took another request
        of the sink since this event was first refused (a replay's event, with
        none after it to send), the event is parked. A Verdict: a probe met a
        failure (retried, as it says); None: nothing proves the credentials
        good, and the 403 is retried as theirs."""
        probes = self._memory.note_lone_403(stream, defined_at, event.seq)
        # Bytes enough for as many events of the largest records.
        got, _ = await self._read(lease, event_filter, event.seq, upto, probes,
                                  probes * MAX_RECORD_BYTES)  # fmt: skip
        refused_alone = [event]
        for stored in got:
            probe = PendingEvent(stored.seq, stored.record, stored.leaf_hash)
            sent, reply, result = await self._alone(sender, lease, defined_at, probe)
            if isinstance(reply, Answer) and forbidden_alone(
                sender.kind, sent, reply.status, reply.body
            ):
                refused_alone.append(probe)
                continue
            if result.outcome == "delivered":  # taken (an Elasticsearch item maybe not)
                self._memory.note_outcome(lease.sink_id, defined_at, sent, 1, result.status)
                again = await self._send_again(
                    sender, lease, defined_at, refused_alone, taken=probe.seq
                )
                if isinstance(again, Verdict):
                    return again
                delivered, letters = again
                letters += tuple(_item_letters(result))
                self._memory.regrow(stream, defined_at, sender.kind, reset=True)  # searched
                return _Sent(probe.seq, delivered + 1 - len(result.refused), letters)
            if result.outcome != "retry":  # refused otherwise: proves nothing
                break
            why = (
                f"; sent alone after seq {event.seq}, refused alone (HTTP 403), to tell"
                " whether the sink's credentials or that event were refused"
            )
            return replace(result, error=explained(result.error, why))
        if not self._memory.taken_since_first_403(stream, defined_at, event.seq):
            return None
        why = f"; refused alone again while the destination took other requests: {_THE_EVENTS}"
        error = explained(answered(refused, answer.status, answer.body), why)
        self._memory.note_outcome(lease.sink_id, defined_at, refused, 0, FORBIDDEN)
        self._memory.regrow(stream, defined_at, sender.kind, reset=True)
        return _Sent(event.seq, 0, (Parking(event.seq, event.seq, 1, FORBIDDEN, error),))

    async def _send_again(
        self,
        sender: Sender,
        lease: store.Lease,
        defined_at: datetime,
        refused_alone: list[PendingEvent],
        *,
        taken: int,
    ) -> tuple[int, tuple[Parking, ...]] | Verdict:
        """The events refused before `taken` with a 403, sent once more each,
        alone: how many were taken this time (delivered after `taken`, out of
        order, as a replay of their dead letters would be: a 403 that comes
        and goes, a token not yet on every node behind a load balancer, must
        not park events the destination takes), and the dead letters of those
        refused again. A Verdict if one met a failure (no answer, a 429, a
        5xx, a refusal of the sink's token): the step's events go again,
        after it, for none is to be parked for a failure of the moment."""
        delivered = 0
        letters: list[Parking] = []
        for event in refused_alone:
            sent, reply, result = await self._alone(sender, lease, defined_at, event)
            if result.outcome == "delivered":
                self._memory.note_outcome(lease.sink_id, defined_at, sent, 1, result.status)
                delivered += 1 - len(result.refused)
                letters += _item_letters(result)
            elif isinstance(reply, Answer) and forbidden_alone(
                sender.kind, sent, reply.status, reply.body
            ):
                why = f"; refused alone twice, seq {taken} after it taken meanwhile: {_THE_EVENTS}"
                error = explained(answered(sent, reply.status, reply.body), why)
                letters.append(Parking(event.seq, event.seq, 1, reply.status, error))
            elif result.outcome == "park":  # refused otherwise, alone, as others are taken
                letters.append(Parking(event.seq, event.seq, 1, result.status, result.error))
            else:
                error = explained(result.error, _sent_again(event, taken))
                return replace(result, error=error)
        return delivered, tuple(letters)

    async def _alone(
        self, sender: Sender, lease: store.Lease, defined_at: datetime, event: PendingEvent
    ) -> tuple[Outgoing, Answer | _NoAnswer, Verdict]:
        """`event` sent in a request of its own, the answer, and what it means
        (no answer: a failure, retried). _Refused, nothing sent, if the sink
        is no longer as the step read it, of `defined_at`: a probe, or a
        second try, is one of up to 65 requests of a step, and the sink's
        URL or token changed, or the sink deleted, meanwhile, the rest went
        to the old destination, each after the change was acknowledged. Only
        the request on its way when the sink changes goes by the old
        definition."""
        async with self._db.system_connection() as conn:
            unchanged = await store.as_read(conn, lease, owner=self.owner, defined_at=defined_at)
        if not unchanged:
            raise _Refused(defined_at)
        async with self._slots.slot(lease.tenant_id):
            [sent] = requests(sender, [event], now=_now())  # signed once a connection is free
            reply = await self._exchange(sender, sent)
        if isinstance(reply, _NoAnswer):
            return sent, reply, Verdict("retry", 0, reply.error, needs_fixing=reply.needs_fixing)
        result = verdict(sender.kind, sent, reply.status, reply.body, reply.headers, now=_now())
        return sent, reply, result

    async def _read(
        self,
        lease: store.Lease,
        event_filter: EventFilter,
        after: int,
        upto: int,
        limit: int,
        max_bytes: int,
    ) -> tuple[list[StoredEvent], bool]:
        """The matching events after `after`, up to a request's worth (`limit`
        events, or records of `max_bytes` in all); and whether they are all
        there are up to `upto`. Read in pages sized by the sink's records so
        far (one page a step, in the steady state): a backlog of large events
        is read about a request at a time, not 1,000 rows of up to 64 KiB
        each. (Records much larger than the sink's recent ones still arrive
        in one page of as many rows as those would fill.)"""
        events: list[StoredEvent] = []
        size = 0
        average = self._record_sizes.get(lease.sink_id)
        page = _page(limit, max_bytes, average) if average else min(limit, _FIRST_PAGE)
        while True:
            stream = stream_events(
                self._db,
                tenant_id=lease.tenant_id,
                event_filter=event_filter,
                after_seq=events[-1].seq if events else after,
                upto_seq=upto,
                fetch_rows=page,
                page_bytes=None,  # sized here, by the sink's records: read as asked
            )
            got = 0
            async with contextlib.aclosing(stream):
                async for event in stream:
                    events.append(event)
                    got += 1
                    size += _size(event.record)
                    if len(events) == limit or size >= max_bytes:
                        self._record_sizes[lease.sink_id] = size / len(events)
                        return events, False
                    if got == page:
                        break
            if events:
                self._record_sizes[lease.sink_id] = size / len(events)
            if got < page:
                return events, True
            page = _page(limit - len(events), max_bytes - size, size / len(events))

    async def _exchange(self, sender: Sender, outgoing: Outgoing) -> Answer | _NoAnswer:
        """The destination's answer to `outgoing`, or why there is none."""
        started = time.perf_counter()
        try:
            if sender.kind == "email":  # SMTP, not HTTP (ADR 0133)
                answer = await mail.send(
                    self._client.policy,
                    self._client.trust,
                    sender.destination,
                    outgoing.body,
                    timeout=self._client.timeout,
                    tenant_id=sender.tenant_id,
                )
                self._measures.request(sender.kind, started, {"smtp.status_code": answer.status})
                return answer
            answer = await self._client.post(
                outgoing.url,
                headers=outgoing.headers,
                body=outgoing.body,
                keep=ANSWER_BYTES[sender.kind],
                needs_body=partial(needs_body, sender.kind),
                tenant_id=sender.tenant_id,
            )
        except _TRANSPORT_ERRORS as error:
            # An address the egress policy refuses stays refused until the
            # sink's URL or the policy changes; a name that does not resolve
            # (not yet in DNS, lookups all busy) may the next time.
            needs_fixing = isinstance(error, EgressDenied) and not isinstance(error, Unresolvable)
            self._measures.request(sender.kind, started, {"error.type": type(error).__name__})
            said = str(error) or type(error).__name__
            return _NoAnswer(unanswered(outgoing, said), needs_fixing)
        self._measures.request(sender.kind, started, {"http.response.status_code": answer.status})
        return answer

    async def _settle(
        self,
        sender: Sender,
        lease: store.Lease,
        stream: Stream,
        defined_at: datetime,
        failures: int,
        outgoing: Outgoing,
        answer: Answer | _NoAnswer,
        *,
        alone_by_choice: bool,
    ) -> tuple[int, tuple[Parking, ...]] | None:
        """What the answer to `outgoing` makes of its events: how many were
        delivered, and the dead letters of those refused (parked as the
        cursor moves over them), or None after a failure worth retrying
        (recorded) or an answer that they go again in smaller requests."""
        if isinstance(answer, _NoAnswer):
            await self._failed(
                lease,
                defined_at,
                failures,
                answer.error,
                retry_after=None,
                needs_fixing=answer.needs_fixing,
            )
            return None
        result = verdict(
            sender.kind, outgoing, answer.status, answer.body, answer.headers, now=_now()
        )
        if result.outcome == "retry":
            await self._failed(
                lease,
                defined_at,
                failures,
                result.error,
                retry_after=result.retry_after,
                needs_fixing=result.needs_fixing,
            )
            return None
        if result.outcome == "split":
            # Not a failure: no backoff, the same events go again at once, in
            # halves, down to one event a request (parked if refused alone,
            # unless DestinationMemory.note_refusal says otherwise).
            self._memory.halve(stream, defined_at, outgoing)
            log.warning("forwarder: sink %s: %d events in %d bytes not taken (%s); sending"
                        " at most half as many", lease.sink_id, len(outgoing.seqs),
                        len(outgoing.body), result.error)  # fmt: skip
            return None
        seqs = outgoing.seqs
        all_refused = result.outcome == "delivered" and len(result.refused) == len(seqs)
        why, refusals = self._memory.note_refusal(
            stream,
            defined_at,
            outgoing,
            result,
            all_refused=all_refused,
            alone_by_choice=alone_by_choice,
        )
        if why:
            error = result.error or f"every event refused ({result.refused[0].error})"
            error = explained(
                error,
                f"; {len(seqs)} event(s) in {len(outgoing.body)} bytes, and {why}:"
                f" retried, parked after {LONE_REFUSAL_RETRIES + 1} refusals",
            )
            if all_refused and len(seqs) > 1:  # fewer at each try: small in the end
                self._memory.halve(stream, defined_at, outgoing)
            # Backed off by its own refusals, not the sink's failures, which
            # parks do not clear: a run of events refused one after another
            # would otherwise wait longer at each, up to five minutes apiece.
            await self._failed(lease, defined_at, refusals - 1, error, retry_after=None)
            return None
        if result.outcome == "park":
            letters = [Parking(seqs[0], seqs[-1], len(seqs), result.status, result.error)]
            delivered = 0
        else:
            letters = _item_letters(result)
            delivered = len(seqs) - len(letters)
        # Noted before the letters are committed with the cursor's move: if
        # that fails, the request goes again, as after any failure, having at
        # worst counted a park in a row or reset its stream's halving.
        self._memory.note_outcome(lease.sink_id, defined_at, outgoing, delivered, result.status)
        # A lone event taken after failures ends a wait (a token put right),
        # not a search for the destination's size: the kind's limits again.
        # A bulk parked after it was held keeps its halving: reset, the next
        # would go at the kind's size, an eighth of it parked every few
        # seconds, not an event (helper-104).
        held_bulk = all_refused and refusals > LONE_REFUSAL_RETRIES
        search_ended = result.outcome == "park" or (all_refused and not held_bulk)
        reset = search_ended or (delivered == len(seqs) == 1 and failures > 0)
        self._memory.regrow(stream, defined_at, sender.kind, reset=reset)
        return delivered, tuple(letters)

    async def _failed(
        self,
        lease: store.Lease,
        defined_at: datetime,
        failures: int,
        error: str,
        *,
        retry_after: float | None,
        needs_fixing: bool = False,
    ) -> None:
        """Records the failure and when to try again; _Refused if it could
        not be (the step then ends, or goes again at once by a definition
        changed meanwhile, which the failure may not be of). `needs_fixing`:
        only someone can end it (a token refused), so it is logged as a
        WARNING, as the dead letters it no longer makes were, not as INFO."""
        delay = backoff(failures, base=self._backoff_base, chance=self._chance)
        if retry_after is not None:
            delay = max(delay, min(retry_after, BACKOFF_CAP))
        log.log(logging.WARNING if needs_fixing else logging.INFO,
                "forwarder: sink %s failed (%s); retrying in %.1f s",
                lease.sink_id, error, delay)  # fmt: skip
        async with self._db.system_connection() as conn:
            recorded = await store.record_failure(
                conn,
                lease,
                owner=self.owner,
                defined_at=defined_at,
                error=error[:1024],
                retry_in=delay,
            )
        if not recorded:
            raise _Refused(defined_at)
        self._measures.failure()


def _item_letters(result: Verdict) -> list[Parking]:
    """The dead letters of the events an Elasticsearch bulk answer refused."""
    return [Parking(r.seq, r.seq, 1, r.status, r.error) for r in result.refused]


def _sent_again(event: PendingEvent, taken: int) -> str:
    return (
        f"; seq {event.seq} sent again, alone, after seq {taken} was taken (it was refused"
        " alone with a 403)"
    )


def _log_parked(sink_id: str, sent: _Sent) -> None:
    first = sent.letters[0]
    if len(sent.letters) == 1 and not sent.delivered:
        log.warning("forwarder: sink %s parked seq %d-%d (HTTP %d): %s", sink_id,
                    first.first_seq, first.last_seq, first.http_status, first.error)  # fmt: skip
    else:  # refused one by one (a bulk's items), or alone beside events taken (403s)
        log.warning("forwarder: sink %s parked %d of its events alone, %d delivered"
                    " (seq %d first: %s)", sink_id, len(sent.letters), sent.delivered,
                    first.first_seq, first.error)  # fmt: skip


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)
