"""A sink's delivery state as the tests of every sink kind wait on it, and
the walk they share for an event the destination refuses for good: parked as
a dead letter, once, while the events after it are delivered."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sealtrail import AuditClient
from sealtrail.v1 import forwarding_pb2


def wait_for_state(
    client: AuditClient, sink_id: str, done: Callable[[forwarding_pb2.Sink], bool]
) -> forwarding_pb2.Sink:
    deadline = time.monotonic() + 30
    while True:
        sink = client.get_sink(sink_id)
        if done(sink):
            return sink
        assert time.monotonic() < deadline, f"sink state never reached: {sink.state}"
        time.sleep(0.05)


@dataclass(frozen=True)
class Parked:
    """What `a_poisoned_event_parked` saw: the two events' seqs, the sink's
    state once it had parked the one, and its dead letter."""

    poisoned: int
    after: int
    state: forwarding_pb2.SinkState
    letter: forwarding_pb2.DeadLetter


def a_poisoned_event_parked(
    client: AuditClient, sink_id: str, *, delivered: Callable[[int], object], status: int
) -> Parked:
    """Records an event by the actor `poisoned` (the one the test's destination
    refuses for good) and a fine one after it; waits for `delivered(after)`
    (the destination's own wait for the fine one) and for the sink to hold one
    dead letter with its cursor past both: that letter is the poisoned event
    alone, refused with `status`."""
    poisoned = client.record(action="document.share", actor_id="poisoned").event.seq
    after = client.record(action="document.share", actor_id="fine").event.seq
    delivered(after)
    state = wait_for_state(
        client, sink_id, lambda s: s.state.dead_letters == 1 and s.state.cursor_seq >= after
    ).state
    [letter] = client.list_dead_letters(sink_id)
    assert (letter.first_seq, letter.last_seq, letter.http_status) == (poisoned, poisoned, status)
    return Parked(poisoned=poisoned, after=after, state=state, letter=letter)
