"""A retry across a change of a tenant's personal-data names (ADR 0154): a
value one body holds as `[REDACTED:personal_data]` matches whatever the other
holds there, and nothing else may differ."""

from __future__ import annotations

from typing import Any

import pytest

from sealtrail_server.domain.personal_data_retry import MARK, alike_but_personal_data


@pytest.mark.parametrize(
    ("one", "other", "alike"),
    [
        ({"ssn": MARK, "name": "Ann"}, {"ssn": "123-45-6789", "name": "Ann"}, True),
        ({"ssn": MARK, "name": "Ann"}, {"ssn": "1", "name": "Bo"}, False),
        ({"ssn": MARK}, {"ssn": {"a": [1, True]}}, True),  # a value whole, any kind
        ({"ssn": MARK}, {"ssn": "1", "extra": 1}, False),
        (f"ssn={MARK} for Ann", "ssn=123-45-6789 for Ann", True),
        (f"ssn={MARK} for Ann", "ssn=1 for Bo for Ann", False),  # no wider than a value
        (f'a="{MARK}" and b={MARK}', 'a="1 \\" Main" and b=2', True),
        ({"flag": True}, {"flag": 1}, False),  # as hashed, not as Python's ==
        ([MARK, "x"], ["1", "y"], False),
    ],
)
def test_alike_but_for_personal_data(one: Any, other: Any, alike: bool) -> None:
    assert alike_but_personal_data(one, other) is alike
    assert alike_but_personal_data(other, one) is alike


def test_many_marks_are_matched_in_time_of_the_texts_length() -> None:
    marked = " ".join(f"a={MARK}" for _ in range(500))
    assert not alike_but_personal_data(marked, "a=1 " * 499 + "b=1")
