"""A live subscriber's inbox is bounded in deliveries and in the bytes of their
records: past either bound the subscriber lags (reads the table instead), and
the inbox holds nothing more."""

from __future__ import annotations

import asyncio

import pytest

from sealtrail_server.domain.filters import EventFilter, RecordMatcher
from sealtrail_server.store.events import StoredEvent
from sealtrail_server.stream.hub import Delivery, LiveEvent, StreamEnding, Subscription


def _delivery(seq: int, size: int) -> Delivery:
    return Delivery([LiveEvent(StoredEvent(seq, "{}", b""), {})], seq, size)


def _inbox(*, capacity: int = 64, max_bytes: int = 1000) -> Subscription:
    return Subscription("t", RecordMatcher(EventFilter()), capacity=capacity, max_bytes=max_bytes)


def _drained(inbox: Subscription) -> list[int]:
    seqs = []
    while (delivery := inbox.next_queued()) is not None:
        seqs.append(delivery.upto)
    return seqs


def test_deliveries_past_the_byte_budget_make_the_subscriber_lag() -> None:
    inbox = _inbox(max_bytes=1000)
    inbox.offer(_delivery(1, 600))
    inbox.offer(_delivery(2, 400))  # 1,000: at the budget, still taken
    assert not inbox.lagging
    inbox.offer(_delivery(3, 1))
    assert inbox.lagging and _drained(inbox) == []
    inbox.offer(_delivery(4, 1))  # lagging: nothing queues until it caught up
    assert _drained(inbox) == []
    inbox.caught_up()
    inbox.offer(_delivery(5, 1000))  # the budget is whole again
    assert _drained(inbox) == [5]


def test_bytes_read_are_given_back() -> None:
    inbox = _inbox(max_bytes=1000)
    for seq in range(1, 11):
        inbox.offer(_delivery(seq, 600))
        assert asyncio.run(inbox.next()).upto == seq  # read as it comes: never over
    assert not inbox.lagging


def test_one_delivery_larger_than_the_budget_is_taken_into_an_empty_inbox() -> None:
    inbox = _inbox(max_bytes=1000)
    inbox.offer(_delivery(1, 5000))  # one fetch of large records
    assert not inbox.lagging
    inbox.offer(_delivery(2, 1))
    assert inbox.lagging and _drained(inbox) == []


def test_the_count_of_deliveries_still_bounds_the_inbox() -> None:
    inbox = _inbox(capacity=2, max_bytes=1 << 20)
    inbox.offer(_delivery(1, 1))
    inbox.offer(_delivery(2, 1))
    inbox.offer(_delivery(3, 1))
    assert inbox.lagging and _drained(inbox) == []


def test_falling_behind_drops_what_was_queued_and_its_bytes() -> None:
    """The hub marks a subscriber lagging when a fetch fails or a notification
    was lost: what it had queued is dropped with its bytes, not kept pinned."""
    inbox = _inbox(max_bytes=1000)
    inbox.offer(_delivery(1, 900))
    inbox.fall_behind()
    assert inbox.lagging and _drained(inbox) == []
    inbox.caught_up()
    inbox.offer(_delivery(2, 900))
    inbox.offer(_delivery(3, 100))  # 1,000: the 900 dropped no longer counts
    assert not inbox.lagging and _drained(inbox) == [2, 3]


def test_a_stream_told_to_end_still_ends_when_a_failed_fetch_then_drops_its_inbox() -> None:
    """A failed fetch or resync after the stop's `end` (likely when the
    database is what restarts) dropped the end with the inbox: the stream
    waited for its next heartbeat, then failed as UNAVAILABLE on a database
    read instead of ending as the server stopping (helper-136)."""
    inbox = _inbox()
    inbox.end()
    inbox.fall_behind()

    async def woken() -> None:
        await asyncio.wait_for(inbox.next(), 5)

    with pytest.raises(StreamEnding):
        asyncio.run(woken())


def test_a_subscriber_whose_client_takes_nothing_is_ended_once_the_log_moved_on() -> None:
    """ADR 0076: a heartbeat's time (here 0.05 s) and the stall bytes both
    passed while a response waits for the client; then it is told to end,
    once, and holds nothing more."""

    async def run() -> None:
        ended: list[bool] = []
        inbox = Subscription(
            "t", RecordMatcher(EventFilter()), capacity=64, max_bytes=1 << 20, stall_bytes=1000
        )
        inbox.on_stall(0.05, lambda: ended.append(True))
        inbox.offer(_delivery(1, 5000))  # not writing: queued as ever
        inbox.writing()
        inbox.offer(_delivery(2, 5000))  # past the bytes, but not yet the time
        assert not ended and not inbox.stalled
        await asyncio.sleep(0.06)
        inbox.offer(_delivery(3, 1))
        assert ended == [True] and inbox.stalled and _drained(inbox) == []
        inbox.offer(_delivery(4, 1))  # nothing more, and told once
        inbox.caught_up()
        inbox.offer(_delivery(5, 1))
        assert ended == [True] and _drained(inbox) == []

    asyncio.run(run())


def test_a_client_that_takes_what_it_is_sent_is_never_ended_for_a_stall() -> None:
    async def run() -> None:
        ended: list[bool] = []
        inbox = Subscription(
            "t", RecordMatcher(EventFilter()), capacity=64, max_bytes=1 << 20, stall_bytes=1000
        )
        inbox.on_stall(0.05, lambda: ended.append(True))
        inbox.writing()
        await asyncio.sleep(0.06)
        inbox.offer(_delivery(1, 1000))  # waited long, but the log grew by the bound only
        inbox.written()
        inbox.offer(_delivery(2, 5000))  # not waiting for its client
        for seq in range(3, 6):  # each response taken: counted afresh
            inbox.writing()
            inbox.offer(_delivery(seq, 900))
            await asyncio.sleep(0.06)
            inbox.written()
        assert not ended and not inbox.stalled
        assert _drained(inbox) == [1, 2, 3, 4, 5]

    asyncio.run(run())
