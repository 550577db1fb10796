"""A console search as one look, one access record (ADR 0137).

The console's search is a Query's first page and the counts its page draws
beside it (the activity chart's, the Breakdown panel's). Each was recorded as
a read of its own, three `audit_log.queried` records with one filter for one
look. Now the first page announces the counts its view will make
(VIEW_COUNTS_HEADER, a CountEventsRequest each, its filter the Query's), its
record says them in its details (`counts`), and its answer names the view
(VIEW_HEADER, in the trailing metadata). A count that names the view is not
recorded again when all of these hold, else it is recorded as any count:

- the call carries the console's key (the console alone announces or names a
  view; from anyone else both headers are ignored);
- the view was opened by the same token, of the same tenant;
- its filter is the Query's, exactly, and its grouping, limit, time zone,
  measure and details keys are one of the counts announced, not yet counted (each counts once);
- it starts within VIEW_SECONDS of the record.

The view's id is random (128 bits), made by the server and given only in the
answer to the first page, so it is never guessed or chosen. Views are kept in
the process that recorded the first page, which is the one its console calls.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError

from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import event_pb2

# On a first page (console -> server): a count the view will make, one value each.
VIEW_COUNTS_HEADER: Final = "x-sealtrail-view-counts-bin"
# In a first page's trailing metadata (server -> console), and on each count of the view.
VIEW_HEADER: Final = "x-sealtrail-view"
# Seconds after the record within which a count of the view may start: the
# chart's count and then the panel's, each in its turn behind a count of the
# tenant's already running (SEALTRAIL_COUNT_TIMEOUT, 30 s by default).
VIEW_SECONDS: Final = 60.0
# Counts one view may announce: the page makes two.
MAX_VIEW_COUNTS: Final = 4
# Views kept at once in a process; past it the oldest is forgotten (its counts
# are then recorded as their own: more records, never fewer).
MAX_VIEWS: Final = 10_000

# A count as announced and as made: its grouping, its limit (as the API
# lowers it), its time zone, its measure (CountMeasure, 0 for none) and the
# details keys it groups by and measures ("" for none): a count by another
# key is another count, recorded as its own.
CountShape = tuple[int, int, str, int, str, str]


@dataclass(slots=True)
class _View:
    tenant_id: str
    token_id: str
    event_filter: event_pb2.EventFilter
    counts: list[CountShape]
    record_seq: int
    opened: float


class Views:
    """The views this process recorded, for the counts that name them."""

    def __init__(
        self, *, seconds: float = VIEW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._seconds = seconds
        self._clock = clock
        self._views: OrderedDict[str, _View] = OrderedDict()

    def open(
        self,
        *,
        tenant_id: str,
        token_id: str,
        event_filter: event_pb2.EventFilter,
        counts: list[CountShape],
        record_seq: int,
    ) -> str:
        """A new view, recorded at `record_seq` with `counts` in its details; its id."""
        self._forget_expired()
        while len(self._views) >= MAX_VIEWS:
            self._views.popitem(last=False)
        view_id = secrets.token_urlsafe(16)
        kept = event_pb2.EventFilter()
        kept.CopyFrom(event_filter)
        self._views[view_id] = _View(
            tenant_id, token_id, kept, list(counts), record_seq, self._clock()
        )
        return view_id

    def covering(
        self,
        view_id: str,
        *,
        tenant_id: str,
        token_id: str,
        event_filter: event_pb2.EventFilter,
        count: CountShape,
    ) -> int | None:
        """The seq of the record that says this count (which it then no
        longer covers), or None if it must be recorded as its own."""
        self._forget_expired()
        view = self._views.get(view_id)
        if (
            view is None
            or (view.tenant_id, view.token_id) != (tenant_id, token_id)
            or view.event_filter != event_filter
            or count not in view.counts
        ):
            return None
        view.counts.remove(count)
        if not view.counts:
            del self._views[view_id]
        return view.record_seq

    def _forget_expired(self) -> None:
        now = self._clock()
        while self._views:
            view_id, view = next(iter(self._views.items()))
            if now - view.opened <= self._seconds:
                return
            del self._views[view_id]


def announced_counts(values: list[str | bytes]) -> list[pb.CountEventsRequest]:
    """The counts a first page announces (VIEW_COUNTS_HEADER's values), the
    first MAX_VIEW_COUNTS; one that is no CountEventsRequest, or that names a
    filter of its own, is none (its count is then recorded as its own)."""
    counts: list[pb.CountEventsRequest] = []
    for value in values[:MAX_VIEW_COUNTS]:
        if not isinstance(value, bytes):
            continue
        request = pb.CountEventsRequest()
        try:
            request.ParseFromString(value)
        except DecodeError:
            continue
        if not request.HasField("filter"):
            counts.append(request)
    return counts
