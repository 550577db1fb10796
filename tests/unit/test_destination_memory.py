"""What the forwarder learns of a sink's destination, and the rules that read
it (forward/memory.py): request sizes halved and grown back, lone refusals
held or parked, a 403 shown to be the event's by a request taken since."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sealtrail_server.forward.destinations import LIMITS, Outgoing, Verdict
from sealtrail_server.forward.memory import LONE_REFUSAL_RETRIES, DestinationMemory, Stream

DEFINED = datetime(2026, 12, 1, tzinfo=UTC)
LIVE = ("s-1", None)
REPLAY = ("s-1", "r-1")
KIND_EVENTS, KIND_BYTES = LIMITS["webhook"]


def outgoing(*seqs: int, size: int = 1000) -> Outgoing:
    return Outgoing("https://h.example/", [], b"x" * size, seqs, tuple(f"e{s}" for s in seqs))


def held(memory: DestinationMemory, seq: int, *, alone_by_choice: bool = False) -> tuple[str, int]:
    """Why a lone event refused with a 400 is retried, not parked, and its refusals."""
    refused = Verdict("park", 400, "HTTP 400")
    return memory.note_refusal(
        LIVE, DEFINED, outgoing(seq), refused, all_refused=False, alone_by_choice=alone_by_choice
    )


def test_a_refused_request_halves_the_streams_requests_and_they_grow_back() -> None:
    memory = DestinationMemory()
    memory.halve(LIVE, DEFINED, outgoing(*range(1, 101), size=40_000))
    assert memory.limits("webhook", LIVE, DEFINED) == (50, 20_000)
    assert memory.limits("webhook", REPLAY, DEFINED) == (KIND_EVENTS, KIND_BYTES)  # its own
    for _ in range(3):  # taken at that size: not yet larger
        memory.regrow(LIVE, DEFINED, "webhook", reset=False)
    assert memory.limits("webhook", LIVE, DEFINED) == (50, 20_000)
    memory.regrow(LIVE, DEFINED, "webhook", reset=False)  # the fourth doubles them
    assert memory.limits("webhook", LIVE, DEFINED) == (100, 40_000)
    memory.regrow(LIVE, DEFINED, "webhook", reset=True)  # an event parked alone
    assert memory.limits("webhook", LIVE, DEFINED) == (KIND_EVENTS, KIND_BYTES)


def test_a_changed_definition_starts_from_the_kinds_limits() -> None:
    memory = DestinationMemory()
    memory.halve(LIVE, DEFINED, outgoing(1, 2, 3, 4))
    later = DEFINED + timedelta(seconds=1)
    assert memory.limits("webhook", LIVE, later) == (KIND_EVENTS, KIND_BYTES)
    assert memory.limits("webhook", LIVE, DEFINED) == (KIND_EVENTS, KIND_BYTES)  # forgotten


def test_an_event_refused_alone_is_held_until_the_destination_is_seen_taking_requests() -> None:
    memory = DestinationMemory()
    assert held(memory, 7) == ("this destination was not seen taking any request", 1)
    memory.note_outcome("s-1", DEFINED, outgoing(5, 6), delivered=2, status=200)
    assert held(memory, 7) == ("", 2)  # parked: its refusal is its own
    # Alone because it was all there was: parked at once, whatever was seen.
    assert held(DestinationMemory(), 7, alone_by_choice=True) == ("", 0)


def test_a_lone_refusal_is_parked_after_its_retries_all_the_same() -> None:
    memory = DestinationMemory()
    answers = [held(memory, 7) for _ in range(LONE_REFUSAL_RETRIES + 1)]
    assert [bool(why) for why, _ in answers] == [True] * LONE_REFUSAL_RETRIES + [False]
    assert answers[-1][1] == LONE_REFUSAL_RETRIES + 1


def test_requests_parked_in_a_row_hold_the_next_lone_refusal() -> None:
    memory = DestinationMemory()
    memory.note_outcome("s-1", DEFINED, outgoing(1), delivered=1, status=200)
    memory.note_outcome("s-1", DEFINED, outgoing(2), delivered=0, status=400)
    memory.note_outcome("s-1", DEFINED, outgoing(3), delivered=0, status=413)  # says nothing
    assert held(memory, 4) == ("", 1)
    memory.note_outcome("s-1", DEFINED, outgoing(4), delivered=0, status=400)
    assert held(memory, 5) == ("this destination took no request since the last 2 were parked", 1)


def lone_403(memory: DestinationMemory, stream: Stream, seq: int, when: datetime = DEFINED) -> bool:
    """A try of `seq` refused with a 403 whose probes proved nothing: whether
    the destination took a request since its first such try."""
    memory.note_lone_403(stream, when, seq)
    return memory.taken_since_first_403(stream, when, seq)


def test_a_403_is_the_events_once_a_request_is_taken_since_its_first() -> None:
    memory = DestinationMemory()
    memory.note_outcome("s-1", DEFINED, outgoing(1), delivered=1, status=200)
    assert not lone_403(memory, REPLAY, 9)  # its first refusal
    assert not lone_403(memory, REPLAY, 9)  # nothing taken since
    memory.note_outcome("s-1", DEFINED, outgoing(10), delivered=1, status=200)  # the live one
    assert lone_403(memory, REPLAY, 9)
    # Another event, or another definition, starts again.
    assert not lone_403(memory, REPLAY, 11)
    later = DEFINED + timedelta(seconds=1)
    memory.note_outcome("s-1", later, outgoing(12), delivered=1, status=200)
    assert not lone_403(memory, REPLAY, 11, later)


def test_a_probe_taken_at_a_try_that_then_failed_proves_nothing_later() -> None:
    """A probe taken, then the event's second try answered 503: the step
    failed, and the token may be refused by the next try, every probe
    refused. The probe taken before must not park the event (helper-114)."""
    memory = DestinationMemory()
    memory.note_lone_403(LIVE, DEFINED, 9)
    memory.note_outcome("s-1", DEFINED, outgoing(10), delivered=1, status=200)  # the probe
    assert not lone_403(memory, LIVE, 9)  # every probe refused now
    assert not lone_403(memory, LIVE, 9)


def test_each_try_of_a_403_probes_twice_as_far_up_to_64() -> None:
    memory = DestinationMemory()
    probes = [memory.note_lone_403(LIVE, DEFINED, 9) for _ in range(9)]
    assert probes == [3, 6, 12, 24, 48, 64, 64, 64, 64]
    assert memory.note_lone_403(LIVE, DEFINED, 10) == 3  # another event


def test_what_was_learnt_of_a_sink_no_longer_delivered_here_goes() -> None:
    memory = DestinationMemory()
    memory.halve(LIVE, DEFINED, outgoing(1, 2))
    memory.halve(("s-2", None), DEFINED, outgoing(1, 2))
    memory.note_outcome("s-1", DEFINED, outgoing(1), delivered=1, status=200)
    assert held(memory, 7) == ("", 1)  # counted, and the destination was seen taking one
    assert not lone_403(memory, LIVE, 9)
    memory.keep_only({"s-2"})
    assert memory.limits("webhook", LIVE, DEFINED) == (KIND_EVENTS, KIND_BYTES)
    assert memory.limits("webhook", ("s-2", None), DEFINED) == (1, 500)
    # Seen taking nothing now, and the refusal counted anew.
    assert held(memory, 7) == ("this destination was not seen taking any request", 1)
    memory.note_outcome("s-1", DEFINED, outgoing(10), delivered=1, status=200)
    assert not lone_403(memory, LIVE, 9)  # its first again

    memory.halve(REPLAY, DEFINED, outgoing(1, 2))
    assert not lone_403(memory, REPLAY, 11)
    memory.note_outcome("s-1", DEFINED, outgoing(12), delivered=1, status=200)
    memory.forget_stream(REPLAY)  # done
    assert memory.limits("webhook", REPLAY, DEFINED) == (KIND_EVENTS, KIND_BYTES)
    assert not lone_403(memory, REPLAY, 11)


def test_a_lone_413_is_held_while_the_destination_took_as_large() -> None:
    memory = DestinationMemory()
    too_large = Verdict("park", 413, "HTTP 413")
    memory.note_outcome("s-1", DEFINED, outgoing(1, 2, size=5000), delivered=2, status=200)

    def refused(seq: int, size: int) -> tuple[str, int]:
        return memory.note_refusal(LIVE, DEFINED, outgoing(seq, size=size), too_large,
                                   all_refused=False, alone_by_choice=True)  # fmt: skip

    assert refused(3, 5000) == ("this destination took a request of 5000 bytes", 1)
    assert refused(4, 6000) == ("", 1)  # larger than any it took: too large, parked


def test_a_bulk_refused_item_by_item_is_held_after_parks_in_a_row() -> None:
    memory = DestinationMemory()
    bulk = outgoing(1, 2, 3)
    every_item = Verdict("delivered", 200)  # the forwarder sees every item refused
    assert memory.note_refusal(LIVE, DEFINED, bulk, every_item, all_refused=True,
                               alone_by_choice=False) == ("", 1)  # fmt: skip
    memory.note_outcome("s-1", DEFINED, bulk, delivered=0, status=200)
    memory.note_outcome("s-1", DEFINED, outgoing(4, 5), delivered=0, status=200)
    why, refusals = memory.note_refusal(LIVE, DEFINED, outgoing(6, 7), every_item,
                                        all_refused=True, alone_by_choice=False)  # fmt: skip
    assert (why, refusals) == ("this destination took no request since the last 2 were parked", 1)


def test_requests_regrow_to_the_kinds_limits_under_their_definition_only() -> None:
    memory = DestinationMemory()
    memory.halve(LIVE, DEFINED, outgoing(*range(1, KIND_EVENTS + 1), size=KIND_BYTES))
    later = DEFINED + timedelta(seconds=1)
    for _ in range(4):
        memory.regrow(LIVE, later, "webhook", reset=False)  # another definition's: nothing
    assert memory.limits("webhook", LIVE, DEFINED) == (KIND_EVENTS // 2, KIND_BYTES // 2)
    memory.regrow(LIVE, DEFINED, "webhook", reset=False)  # half the kind's: back to it
    assert memory.limits("webhook", LIVE, DEFINED) == (KIND_EVENTS, KIND_BYTES)


def test_streams_count_their_refusals_apart_and_share_what_was_taken() -> None:
    memory = DestinationMemory()
    refused = Verdict("park", 400, "HTTP 400")

    def lone(stream: tuple[str, str | None]) -> tuple[str, int]:
        return memory.note_refusal(stream, DEFINED, outgoing(7), refused, all_refused=False,
                                   alone_by_choice=False)  # fmt: skip

    assert lone(LIVE)[1] == 1 and lone(LIVE)[1] == 2
    assert lone(REPLAY) == ("this destination was not seen taking any request", 1)
    memory.note_outcome("s-1", DEFINED, outgoing(1), delivered=1, status=200)  # the live one's
    assert lone(REPLAY) == ("", 2)  # the destination took a request of the sink
