"""A server calls its database down after two failed probes in a row, not one
(a probe runs out whenever the server's own loop stalls past its timeout),
and serves it again after one probe that answers."""

from __future__ import annotations

from sealtrail_server.store.probe_verdicts import FAILED_PROBES_FOR_DOWN, ProbeVerdicts


def verdicts(*answers: bool) -> list[bool]:
    watch = ProbeVerdicts()
    return [watch.after(answered) for answered in answers]


def test_one_failed_probe_among_answers_leaves_the_database_served() -> None:
    assert verdicts(True, False, True, False, True) == [True] * 5


def test_failed_probes_in_a_row_take_it_down_and_one_answer_brings_it_back() -> None:
    assert FAILED_PROBES_FOR_DOWN == 2
    assert verdicts(False, False, False, True, False, True) == [
        True,
        False,
        False,
        True,  # back at once
        True,  # one failure again: still served
        True,
    ]
