"""The pure parts of alerting: the threshold's sliding window and working hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sealtrail_server.domain.alerts import (
    MAX_GROUPS,
    Condition,
    ThresholdWindow,
    group_key,
    outside_working_hours,
    validate_condition,
)
from sealtrail_server.domain.errors import InvalidArgument
from sealtrail_server.domain.filters import EventFilter

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
WATCHED = EventFilter(actions=("secret.read",))


def test_the_threshold_fires_at_the_count_within_the_window_then_stays_quiet_for_one() -> None:
    window = ThresholdWindow(3, timedelta(seconds=60))
    assert window.observe("a", T0) is None
    assert window.observe("a", T0 + timedelta(seconds=30)) is None
    assert window.observe("b", T0 + timedelta(seconds=31)) is None  # another group
    assert window.observe("a", T0 + timedelta(seconds=59)) == 3
    assert window.observe("a", T0 + timedelta(seconds=70)) is None  # quiet
    assert window.observe("a", T0 + timedelta(seconds=100)) is None
    # A window after firing, three more within 60 s fire again.
    assert window.observe("a", T0 + timedelta(seconds=125)) == 3


def test_events_further_apart_than_the_window_never_add_up() -> None:
    window = ThresholdWindow(3, timedelta(seconds=60))
    for n in range(10):
        assert window.observe("a", T0 + timedelta(seconds=31 * n)) is None


def test_events_arriving_out_of_order_count_by_when_they_occurred() -> None:
    window = ThresholdWindow(3, timedelta(seconds=60))
    assert window.observe("a", T0 + timedelta(seconds=50)) is None
    assert window.observe("a", T0) is None
    assert window.observe("a", T0 + timedelta(seconds=20)) == 3


def test_a_late_event_counts_with_what_shares_a_window_with_it_not_with_later_ones() -> None:
    """Backdated: the events at 0 s and 100 s are a window apart, so the three
    never share one; a late one that completes a window does fire."""
    window = ThresholdWindow(3, timedelta(seconds=60))
    assert window.observe("a", T0 + timedelta(seconds=50)) is None
    assert window.observe("a", T0 + timedelta(seconds=100)) is None
    assert window.observe("a", T0) is None  # 0, 50, 100: no 60 s hold all three
    late = ThresholdWindow(3, timedelta(seconds=60))
    assert late.observe("a", T0 + timedelta(seconds=100)) is None
    assert late.observe("a", T0 + timedelta(seconds=120)) is None
    assert late.observe("a", T0 + timedelta(seconds=90)) == 3  # 90-150 holds all three


def test_groups_no_window_can_reach_are_dropped() -> None:
    """One group an address, as a rule grouped by IP meets them: those a
    window behind the newest events go, but one quiet since it fired."""
    window = ThresholdWindow(2, timedelta(seconds=60))
    window.observe("fired", T0)
    assert window.observe("fired", T0 + timedelta(seconds=1)) == 2
    for n in range(3000):
        window.observe(f"10.0.{n // 256}.{n % 256}", T0 + timedelta(seconds=2))
    for n in range(2000):  # a window and more later
        window.observe(f"later-{n}", T0 + timedelta(seconds=120))
    assert window.groups() <= 2000 + 1 + 1  # the later ones, "fired" perhaps, none of the 3,000
    assert window.observe("fired", T0 + timedelta(seconds=121)) is None  # a new group: one event


def test_a_rule_keeps_at_most_its_bound_of_groups_the_least_recent_going_first() -> None:
    """With a window of days, sweeps keep every address seen in it: one a
    request, for a run that takes a new one each time."""
    window = ThresholdWindow(13, timedelta(days=7))
    window.observe("kept", T0)
    for n in range(MAX_GROUPS + 500):
        window.observe(f"addr-{n}", T0 + timedelta(seconds=1))
        if n % 1000 == 0:
            window.observe("kept", T0 + timedelta(seconds=2))  # seen lately: stays
    assert window.groups() == MAX_GROUPS
    # Its 13th event: 1, then 11 while the others came, then this one.
    assert window.observe("kept", T0 + timedelta(seconds=3)) == 13


def test_a_flood_of_one_event_groups_does_not_push_out_the_one_it_hides() -> None:
    """Least recently seen first out, 10,000 failed logins on random names
    between two on the real target evicted the target's group every time: it
    never reached its count. Nor may a group that just fired go (it would fire
    again inside its quiet window). (A group of one event is as any of the
    flood's, and may go.)"""
    window = ThresholdWindow(5, timedelta(days=1))
    assert [window.observe("fired", T0) for _ in range(5)] == [None, None, None, None, 5]
    assert window.observe("target", T0) is None
    for attempt in range(1, 4):
        assert window.observe("target", T0 + timedelta(seconds=attempt)) is None
        for n in range(MAX_GROUPS + 10):
            window.observe(f"noise-{attempt}-{n}", T0 + timedelta(seconds=attempt))
    assert window.groups() == MAX_GROUPS
    assert window.observe("target", T0 + timedelta(seconds=4)) == 5  # all its events counted
    assert window.observe("fired", T0 + timedelta(seconds=5)) is None  # still quiet


def test_a_rule_grouped_by_ip_counts_an_ipv6_slash_64_as_one() -> None:
    """Each attempt from a new address of the same /64 was a group of its own:
    the count was never reached."""
    rule = Condition(
        kind="threshold", filter=EventFilter(), group_by="ip", count=3, window_seconds=60
    )
    keys = {
        group_key(rule, {"context": {"ip": ip}, "actor": {"id": "u"}})
        for ip in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2:aaaa:bbbb:cccc:dddd")
    }
    assert keys == {"2001:db8:1:2::/64"}
    assert group_key(rule, {"context": {"ip": "203.0.113.7"}, "actor": {"id": "u"}}) == (
        "203.0.113.7"
    )
    assert group_key(rule, {"context": {"ip": "::ffff:203.0.113.7"}, "actor": {"id": "u"}}) == (
        "203.0.113.7"
    )


@pytest.mark.parametrize(
    ("local", "outside"),
    [
        ("2026-11-24T09:00:00+01:00", False),  # Tuesday, first working minute
        ("2026-11-24T17:59:59+01:00", False),
        ("2026-11-24T18:00:00+01:00", True),
        ("2026-11-24T08:59:59+01:00", True),
        ("2026-11-28T12:00:00+01:00", True),  # Saturday
        ("2026-07-07T09:30:00+02:00", False),  # summer time
        ("2026-07-07T08:30:00+02:00", True),
    ],
)
def test_working_hours_are_judged_in_the_rules_time_zone(local: str, outside: bool) -> None:
    condition = validate_condition(
        "off_hours", WATCHED, path="rule", time_zone="Europe/Paris", start_hour=9, end_hour=18
    )
    occurred = datetime.fromisoformat(local).astimezone(UTC)
    assert outside_working_hours(condition, occurred) is outside


def test_working_days_can_be_chosen() -> None:
    condition = validate_condition(
        "off_hours", WATCHED, path="rule", start_hour=0, end_hour=24, working_days=(6, 7)
    )
    assert outside_working_hours(condition, T0)  # a Tuesday
    assert not outside_working_hours(condition, T0 + timedelta(days=4))  # Saturday


def test_every_violation_is_named() -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_condition("threshold", EventFilter(), path="rule", count=0, window_seconds=0)
    assert [v.field for v in refused.value.violations] == [
        "rule.threshold.filter",
        "rule.threshold.count",
        "rule.threshold.window_seconds",
    ]
