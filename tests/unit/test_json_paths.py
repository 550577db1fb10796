"""A value's path in a caller's JSON tree is written out only when shown:
written out for every value, one long key over a long list cost their
product (helper-63: a 256 KiB key over 64,000 nulls, 16 GiB of copying)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sealtrail.v1 import event_pb2
from sealtrail_server.api.convert import event_draft
from sealtrail_server.domain.json_path import path_text
from sealtrail_server.domain.redaction import Redactor

ITEMS = 16_000
LONG_KEY = 262_144
KEYS = ("k", "k" * LONG_KEY)


def _best_time(work: Callable[[], Any]) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def _event(key: str, item: Any) -> event_pb2.Event:
    event = event_pb2.Event(action="a.b", actor=event_pb2.Actor(id="u"))
    event.details.update({key: [item] * ITEMS})
    return event


def test_a_long_key_over_a_long_list_is_read_in_time_of_their_sum() -> None:
    """The ratio of the two times tells a sum (about 1x) from a product (about
    15x here) on a noisy machine."""
    short_event, long_event = _event("k", None), _event("k" * LONG_KEY, None)
    short = _best_time(lambda: event_draft(short_event, "event"))
    long = _best_time(lambda: event_draft(long_event, "event"))
    assert long < 4 * max(short, 1e-3)


def test_a_long_key_over_a_long_list_is_redacted_in_time_of_their_sum() -> None:
    redactor = Redactor()

    def redact(body: dict[str, Any]) -> None:
        assert len(redactor.redact(body).found) == ITEMS

    short_body, long_body = ({"details": {key: ["https://u:pw@db"] * ITEMS}} for key in KEYS)
    short = _best_time(lambda: redact(short_body))
    long = _best_time(lambda: redact(long_body))
    assert long < 4 * max(short, 1e-3)


def test_a_bad_value_is_still_named_by_its_whole_path() -> None:
    event = event_pb2.Event(action="a.b", actor=event_pb2.Actor(id="u"))
    event.details.update({"a": {"b": [1, {"c": "x\x00"}]}})
    violation = event_draft(event, "events[3]").json_error
    assert violation is not None and violation.field == "events[3].details.a.b[1].c"
    assert path_text((("details", "k"), 0)) == "details.k[0]"
