"""The bundle writer's own behaviour, without a server: proofs asked in a
bounded window, answered in order."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from sealtrail._bundle import in_order


def test_proofs_are_asked_a_bounded_window_ahead_and_answered_in_order() -> None:
    """pool.map submitted a future per seq before the first answer: about a
    kilobyte each, gigabytes for a log of millions."""
    drawn = 0

    def seqs() -> Iterator[int]:
        nonlocal drawn
        for seq in range(1, 20_001):
            drawn += 1
            yield seq

    answered = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for answer in in_order(pool, lambda seq: seq * 2, seqs(), ahead=16):
            answered.append(answer)
            assert drawn - len(answered) <= 16
    assert answered == [seq * 2 for seq in range(1, 20_001)]
