"""A live stream merges the hub's queued deliveries without repeating what it
has sent: a new subscriber reads the table while the hub already fetches, so
its first deliveries can hold events the table gave it (a CI run once saw
seqs 219-223 twice after a server restart)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from sealtrail_server.api.stream import unseen_events
from sealtrail_server.domain.filters import EventFilter, RecordMatcher
from sealtrail_server.store.events import StoredEvent
from sealtrail_server.stream.hub import Delivery, LiveEvent, Subscription


def _delivery(first: int, last: int) -> Delivery:
    """The hub's fetch of seqs first..last."""
    events = [LiveEvent(StoredEvent(seq, "{}", b""), {}) for seq in range(first, last + 1)]
    return Delivery(events, last)


def _merged(deliveries: list[Delivery], position: int) -> tuple[list[int], int]:
    queued = Subscription("t", RecordMatcher(EventFilter()), capacity=64, max_bytes=1 << 20)
    for delivery in deliveries[1:]:
        queued.offer(delivery)
    fresh, upto = unseen_events(deliveries[0], queued, position)
    assert queued.next_queued() is None and not queued.lagging
    return [live.stored.seq for live in fresh], upto


def test_a_delivery_behind_a_stale_one_does_not_repeat_what_the_table_sent() -> None:
    # The stream read the table up to 223; the hub had fetched 214-218, then 219-228.
    assert _merged([_delivery(214, 218), _delivery(219, 228)], 223) == (
        list(range(224, 229)),
        228,
    )


def test_deliveries_wholly_behind_the_stream_give_nothing_and_keep_its_position() -> None:
    assert _merged([_delivery(1, 5), _delivery(6, 9)], 12) == ([], 12)


@given(
    cuts=st.lists(st.integers(1, 200), min_size=1, max_size=12, unique=True),
    start=st.integers(0, 50),
    data=st.data(),
)
def test_every_event_beyond_the_position_goes_out_once_in_order(
    cuts: list[int], start: int, data: st.DataObject
) -> None:
    # The hub's deliveries are contiguous from where it began for the tenant;
    # the stream's position is anywhere from there to the last delivery's end.
    bounds = [start, *sorted(start + cut for cut in cuts)]
    deliveries = [_delivery(low + 1, high) for low, high in pairwise(bounds)]
    position = data.draw(st.integers(start, bounds[-1]))
    assert _merged(deliveries, position) == (list(range(position + 1, bounds[-1] + 1)), bounds[-1])
