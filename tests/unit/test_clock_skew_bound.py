"""When this process's clock counts as further from the database's than
SEALTRAIL_MAX_CLOCK_SKEW (store/clock_skew.py `ClockSkew.past_bound`, ADR
0138): beyond the reading's own doubt, carried on to now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sealtrail_server.store.clock_skew import ClockReading, ClockSkew

_NOW = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)


def _skew(*, off_by: float, doubt: float, bound: float | None = 2.0) -> str | None:
    """The verdict on a reading, just taken, of a process `off_by` seconds
    ahead of the database (behind, if negative) with `doubt`."""
    clocks = ClockSkew(
        lambda: _NOW,
        bound=None if bound is None else timedelta(seconds=bound),
        monotonic=lambda: 100.0,
    )
    clocks.note(ClockReading(_NOW, _NOW - timedelta(seconds=off_by), 100.0, doubt))
    return clocks.past_bound()


def test_a_clock_past_the_bound_either_way_is_named_with_how_far_and_the_setting() -> None:
    ahead = _skew(off_by=3, doubt=0.1)
    assert ahead is not None and "3.0 s ahead of the database's" in ahead
    assert "SEALTRAIL_MAX_CLOCK_SKEW (2 s)" in ahead
    behind = _skew(off_by=-30, doubt=0.1)
    assert behind is not None and "30.0 s behind the database's" in behind


def test_within_the_bound_or_within_the_readings_doubt_is_no_refusal() -> None:
    assert _skew(off_by=1.5, doubt=0.1) is None
    # 3 s apart as read, but the statement took 2.4 s: it may have been 1.8.
    assert _skew(off_by=3, doubt=1.2) is None
    assert _skew(off_by=-3, doubt=1.2) is None


def test_no_bound_is_never_a_refusal() -> None:
    assert _skew(off_by=86400, doubt=0, bound=None) is None


def test_a_step_of_the_process_clock_since_the_reading_is_seen() -> None:
    """The reading is carried on by the monotonic clock: a process clock
    stepped a minute forward since it, the database's not, is past the bound."""
    now = [_NOW]
    clocks = ClockSkew(lambda: now[0], bound=timedelta(seconds=2), monotonic=lambda: 100.0)
    clocks.note(ClockReading(_NOW, _NOW, 100.0, 0.01))
    assert clocks.past_bound() is None
    now[0] = _NOW + timedelta(minutes=1)
    stepped = clocks.past_bound()
    assert stepped is not None and "60.0 s ahead of" in stepped
