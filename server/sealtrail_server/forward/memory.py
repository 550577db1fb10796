"""What a process learnt of each sink's destination from its answers, and the
rules that read it: how large a request the destination takes (halved at a
refusal, growing back as requests are taken, ADR 0052), whether an event it
refuses alone is at fault or the destination refuses everything, and whether
a 403 of one event is the event's (ADR 0054).

Kept in memory, per sink (and per stream of it: the live cursor's events and
each replay search their own requests), and only while the sink's definition
is the one it was learnt under: a sink changed, or delivered by another
process now, starts again from its kind's limits and no history. Nothing here
does I/O; the Forwarder asks and tells."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from ..domain.sinks import Kind
from .destinations import LIMITS, TOO_LARGE, Outgoing, Verdict

# Requests a destination takes at a size smaller than its kind's (after a 413)
# before the sink's requests double again: a destination's own limit is found
# again now and then (one 413 and a resend), not paid for on every request.
_REGROW_AFTER: Final = 4
# Refusals of an event halved down to alone, or sent alone as too large (413),
# by a destination not seen taking requests, or none since _PARKED_IN_A_ROW
# were parked (for a 413: or seen taking one as large), retried before it is
# parked all the same.
LONE_REFUSAL_RETRIES: Final = 3
# Requests parked with no request taken since, after which the next event
# refused alone (or bulk request refused item by item) is retried as above: a
# destination that took requests, then refuses every one (a receiver's new
# validation), would otherwise have each event of the backlog searched for
# and parked at once (helper-101).
_PARKED_IN_A_ROW: Final = 2
# The events after one refused alone with a 403 sent each alone to tell whose
# refusal it is (ADR 0054): this many at its first try, twice as many at each
# next try of the same event, up to _MOST_PROBES. A run of events a firewall
# refuses (a user's queries, each holding SQL) is probed past in a few tries;
# a token refused costs at most that many requests a retry, backed off.
_FIRST_PROBES: Final = 3
_MOST_PROBES: Final = 64

# One stream of a sink's events: its live cursor (None) or a replay (its id).
# Each searches its own requests: a park in one must not undo the other's
# halving, nor reset its count of refusals (helper-103).
Stream = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class _Smaller:
    """What a stream's destination was found to take (a 413, a bulk answer too
    long to keep), or the halves of a refused request in which the events
    refused are looked for: at most this much a request, while its
    definition is the one of `defined_at`."""

    defined_at: datetime
    events: int
    bytes: int
    taken: int = 0  # requests of this size the destination took (or refused one by one)


class DestinationMemory:
    """One process's memory of the destinations of the sinks it delivers.
    Methods named `note_*` record what happened; `note_refusal` and
    `note_lone_403` also answer what to make of it, and so does
    `taken_since_first_403`, which records its first call's baseline."""

    def __init__(self) -> None:
        self._smaller: dict[Stream, _Smaller] = {}  # its requests' limits, found smaller
        # sink -> the largest request its destination took, under the definition of when
        self._largest_taken: dict[str, tuple[datetime, int]] = {}
        # the request (by its first seq) last held after refusals, and how often
        self._held_refusals: dict[Stream, tuple[datetime, int, int]] = {}
        # sink -> requests parked since its destination last took one
        self._parked_in_a_row: dict[str, tuple[datetime, int]] = {}
        # sink -> requests its destination took, under the definition of when
        self._requests_taken: dict[str, tuple[datetime, int]] = {}
        # the event (its seq) last refused alone with a 403, its tries so far, and
        # _requests_taken at its first try whose probes proved nothing nor failed
        self._forbidden: dict[Stream, tuple[datetime, int, int, int | None]] = {}

    def keep_only(self, sinks: set[str]) -> None:
        """Forgets every sink but these: deleted, or delivered elsewhere now."""
        for by_sink in (self._largest_taken, self._parked_in_a_row, self._requests_taken):
            for sink_id in [sink_id for sink_id in by_sink if sink_id not in sinks]:
                del by_sink[sink_id]
        for by_stream in (self._smaller, self._held_refusals, self._forbidden):
            for stream in [stream for stream in by_stream if stream[0] not in sinks]:
                del by_stream[stream]

    def forget_stream(self, stream: Stream) -> None:
        """A replay done: what its requests met goes with it."""
        self._smaller.pop(stream, None)
        self._held_refusals.pop(stream, None)
        self._forbidden.pop(stream, None)

    def limits(self, kind: Kind, stream: Stream, defined_at: datetime) -> tuple[int, int]:
        """A request's most events and bytes for the stream: its kind's, or
        less where its destination was found to take less."""
        events, size = LIMITS[kind]
        smaller = self._smaller.get(stream)
        if smaller is None:
            return events, size
        if smaller.defined_at != defined_at:  # a changed sink starts again from its kind's
            del self._smaller[stream]
            return events, size
        return min(events, smaller.events), min(size, smaller.bytes)

    def halve(self, stream: Stream, defined_at: datetime, sent: Outgoing) -> None:
        """The stream's requests from now on: at most half the events and half
        the bytes of `sent`, which its destination would not take: too large,
        or holding events it refuses, which the halves single out. Kept while
        the definition is the same (in this process), growing back as they
        are taken (regrow): each batch the same size would be refused again."""
        self._smaller[stream] = _Smaller(
            defined_at, max(1, len(sent.seqs) // 2), max(1, len(sent.body) // 2)
        )

    def regrow(self, stream: Stream, defined_at: datetime, kind: Kind, *, reset: bool) -> None:
        """After a request the destination took (or whose events it refused
        one by one): the stream's requests grow back towards its kind's limits,
        doubling after each _REGROW_AFTER taken at a size. `reset` (an event
        parked alone: most likely the one too large, or refused; a bulk
        parked at first sight; or a lone event taken after failures): they
        are the kind's again at once, for the events after it must not go one
        by one for good. A lone event taken otherwise counts as any request
        taken, not as a reset: a destination that takes one event at a time
        (a firewall's limit on the body's size) had every next event searched
        for from the kind's limits down (helper-101)."""
        smaller = self._smaller.get(stream)
        if smaller is None or smaller.defined_at != defined_at:
            return
        events, size = LIMITS[kind]
        if reset or (smaller.events * 2 >= events and smaller.bytes * 2 >= size):
            del self._smaller[stream]  # back to the kind's limits
            return
        if smaller.taken + 1 < _REGROW_AFTER:
            self._smaller[stream] = replace(smaller, taken=smaller.taken + 1)
            return
        self._smaller[stream] = _Smaller(
            defined_at, min(events, smaller.events * 2), min(size, smaller.bytes * 2)
        )

    def note_outcome(
        self, sink_id: str, defined_at: datetime, outgoing: Outgoing, delivered: int, status: int
    ) -> None:
        """What the destination did with a request whose events were dealt
        with: the largest it took, or one more parked with nothing taken
        since (a 413 aside: it says nothing of the events' content)."""
        if delivered:
            taken = self._requests_taken.get(sink_id)
            count = taken[1] + 1 if taken is not None and taken[0] == defined_at else 1
            self._requests_taken[sink_id] = (defined_at, count)
            largest = self._largest_taken.get(sink_id)
            if largest is None or largest[0] != defined_at or largest[1] < len(outgoing.body):
                self._largest_taken[sink_id] = (defined_at, len(outgoing.body))
            self._parked_in_a_row.pop(sink_id, None)
        elif status != TOO_LARGE:
            in_a_row = self._parked_in_a_row.get(sink_id)
            count = in_a_row[1] + 1 if in_a_row is not None and in_a_row[0] == defined_at else 1
            self._parked_in_a_row[sink_id] = (defined_at, count)

    def note_refusal(
        self,
        stream: Stream,
        defined_at: datetime,
        outgoing: Outgoing,
        result: Verdict,
        *,
        all_refused: bool,
        alone_by_choice: bool,
    ) -> tuple[str, int]:
        """Counts a refusal that would park `result`'s events (of one event, or
        of each item of a bulk): why they are retried instead ("": parked),
        and how often they were refused so far."""
        if result.outcome == "park":
            return self._not_alone_at_fault(
                stream, defined_at, outgoing, result.status, alone_by_choice=alone_by_choice
            )
        if all_refused:
            return self._every_item_held(stream, defined_at, outgoing)
        return "", 0

    def note_lone_403(self, stream: Stream, defined_at: datetime, seq: int) -> int:
        """Records a try of the event `seq` refused alone with a 403 (its first,
        unless it was the stream's last one so refused), and says how many of
        the events after it to send alone to tell whose refusal it is: more at
        each try, so that a run of events a firewall refuses is probed past."""
        last = self._forbidden.get(stream)
        if last is None or last[:2] != (defined_at, seq):
            self._forbidden[stream] = (defined_at, seq, 1, None)
            return _FIRST_PROBES
        tries = last[2] + 1
        self._forbidden[stream] = (defined_at, seq, tries, last[3])
        return min(_FIRST_PROBES << min(tries - 1, 8), _MOST_PROBES)

    def taken_since_first_403(self, stream: Stream, defined_at: datetime, seq: int) -> bool:
        """After a try of `seq` (note_lone_403) whose probes proved nothing and
        met no failure: whether the destination took a request of the sink
        (any stream) since the first such try, which this one is if there was
        none (recorded): then the sink's credentials are good, and the 403 is
        the event's. A try whose probe was taken does not count: the token
        may have been refused since (helper-114)."""
        last = self._forbidden.get(stream)
        if last is None or last[:2] != (defined_at, seq):
            return False  # not noted: nothing to compare with
        taken = self._requests_taken.get(stream[0])
        taken_now = taken[1] if taken is not None and taken[0] == defined_at else 0
        if last[3] is None:
            self._forbidden[stream] = (defined_at, seq, last[2], taken_now)
            return False
        return taken_now != last[3]

    def _not_alone_at_fault(
        self,
        stream: Stream,
        defined_at: datetime,
        outgoing: Outgoing,
        status: int,
        *,
        alone_by_choice: bool,
    ) -> tuple[str, int]:
        """Why an event refused alone may not be at fault, and how often it
        was refused so far. The destination was not seen taking any request
        (under this definition, by this process), or took none since the
        last _PARKED_IN_A_ROW were parked, so it may refuse every one (a
        proxy's limit set to nothing, a receiver that takes no payload of the
        sink's format, or one that has just stopped taking any); or, refused
        as too large (413), it took one as large. Parking it would then drain
        the backlog into dead letters, an event every few requests, without a
        pause: it is a failure, retried with backoff. Asked of an event halved
        down to alone, or too large: one sent alone because it was all there
        was to send is parked at once, as a batch of one, whatever was taken
        (no search multiplied the requests). "" when it is at fault, or after
        LONE_REFUSAL_RETRIES retries of it all the same: an event refused by
        a destination first met after a restart must not stop the sink."""
        if len(outgoing.seqs) != 1 or (status != TOO_LARGE and alone_by_choice):
            return "", 0
        refusals = self._count_refusal(stream, defined_at, outgoing.seqs[0])
        if refusals > LONE_REFUSAL_RETRIES:
            return "", refusals
        largest = self._largest_taken.get(stream[0])
        if largest is None or largest[0] != defined_at:
            return "this destination was not seen taking any request", refusals
        if status == TOO_LARGE:
            if largest[1] >= len(outgoing.body):
                return f"this destination took a request of {largest[1]} bytes", refusals
            return "", refusals
        return self._took_nothing_since_parking(stream[0], defined_at), refusals

    def _every_item_held(
        self, stream: Stream, defined_at: datetime, outgoing: Outgoing
    ) -> tuple[str, int]:
        """Why a bulk request whose every event the destination refused, one
        by one, is not parked yet, and how often it was refused so far: it
        took nothing since the last _PARKED_IN_A_ROW were parked, so it may
        refuse every event (a mapping that no longer fits the sink's events);
        retried as a lone event is, then parked all the same."""
        refusals = self._count_refusal(stream, defined_at, outgoing.seqs[0])
        if refusals > LONE_REFUSAL_RETRIES:
            return "", refusals
        return self._took_nothing_since_parking(stream[0], defined_at), refusals

    def _count_refusal(self, stream: Stream, defined_at: datetime, seq: int) -> int:
        """How often in a row the request starting at `seq` was refused, this
        one included. Counted here, not as the sink's failures, which a step
        that moves the live cursor (with nothing to send) set back to none
        while a replay's event was refused (helper-77)."""
        last = self._held_refusals.get(stream)
        refusals = last[2] + 1 if last is not None and last[:2] == (defined_at, seq) else 1
        self._held_refusals[stream] = (defined_at, seq, refusals)
        return refusals

    def _took_nothing_since_parking(self, sink_id: str, defined_at: datetime) -> str:
        in_a_row = self._parked_in_a_row.get(sink_id)
        if in_a_row is None or in_a_row[0] != defined_at or in_a_row[1] < _PARKED_IN_A_ROW:
            return ""
        return f"this destination took no request since the last {in_a_row[1]} were parked"
