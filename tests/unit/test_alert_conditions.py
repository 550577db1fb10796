"""The pure parts of alerting: the threshold's sliding window and working hours."""

from __future__ import annotations

import bisect
import tracemalloc
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealtrail_server.domain import alerts
from sealtrail_server.domain.alerts import (
    MAX_GROUPS,
    Condition,
    KeptGroup,
    KeptWindow,
    ThresholdWindow,
    actor_group,
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


def test_a_late_burst_within_reach_counts_though_its_group_saw_a_newer_event() -> None:
    """A group's times were trimmed to a window behind its own newest, the
    late one just taken too: a burst two minutes late (well within the reach,
    a window and the skew) never fired once the group had one newer event,
    though it fired without it (helper-155). Times are kept back to the
    rule's cut-off instead: a window before the oldest event still counted."""
    window = ThresholdWindow(3, timedelta(seconds=60))
    assert window.observe("x", T0 + timedelta(seconds=120)) is None
    assert [window.observe("x", T0 + timedelta(seconds=s)) for s in (0, 5, 10, 15)] == [
        None,
        None,
        3,
        None,  # quiet for a window from the newest it counted
    ]


def test_a_late_trigger_quiets_its_group_from_the_newest_event_it_counted() -> None:
    """The same four events, the one at 95 s arriving third: quiet from its own
    time, the group fired again at 156 s, counting 100, 150 and 156 a second
    time: how many alerts a burst gave hung on arrival order (helper-122)."""
    in_order = ThresholdWindow(3, timedelta(seconds=60))
    assert [in_order.observe("a", T0 + timedelta(seconds=t)) for t in (95, 100, 150, 156)] == [
        None,
        None,
        3,
        None,
    ]
    late = ThresholdWindow(3, timedelta(seconds=60))
    assert [late.observe("a", T0 + timedelta(seconds=t)) for t in (100, 150, 95, 156)] == [
        None,
        None,
        3,
        None,
    ]


def test_an_event_a_little_late_is_judged_without_walking_every_time_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two sources a few milliseconds apart make late events the usual case:
    each walked every time its group kept (up to `count`, 100,000), in the
    server's event loop; 20,000 events took 47 s (helper-122). Counted here in
    searches, not timed."""
    searches = Counter[str]()

    class CountedBisect:
        def __getattr__(self, name: str) -> Callable[..., Any]:
            search = getattr(bisect, name)

            def counted(*args: Any, **kwargs: Any) -> Any:
                searches[name] += 1
                return search(*args, **kwargs)

            return counted

    window = ThresholdWindow(100_000, timedelta(days=1))
    for n in range(5_000):
        window.observe("a", T0 + timedelta(milliseconds=10 * n))
    monkeypatch.setattr(alerts, "bisect", CountedBisect())
    assert window.observe("a", T0 + timedelta(milliseconds=10 * 4_999 - 1)) is None
    assert sum(searches.values()) <= 6


def test_an_event_a_window_and_the_skew_before_the_rules_newest_is_passed_over() -> None:
    """The cut-off is the rule's, not each group's: what a group kept from an
    hour ago counted with its next late event when another group had been seen
    at the present, though a window rebuilt from the log had dropped it."""
    window = ThresholdWindow(2, timedelta(seconds=60))
    assert window.observe("late", T0) is None
    assert window.observe("current", T0 + timedelta(hours=1)) is None
    assert window.observe("late", T0 + timedelta(seconds=1)) is None  # passed over
    reach = timedelta(seconds=60 + 300)  # the window and the allowed clock skew
    assert window.observe("x", T0 + timedelta(hours=1) - reach) is None
    assert window.observe("x", T0 + timedelta(hours=1) - reach) == 2  # still counted


def test_a_replayed_event_fired_where_the_log_says_it_did() -> None:
    """A rebuilt window takes each decision from the log (an alert recorded
    for the event or not), whatever the events it replays would decide."""
    window = ThresholdWindow(3, timedelta(seconds=60))
    for second in range(3):
        window.replay("a", T0 + timedelta(seconds=second), fired=False)  # a count lowered since
    assert window.observe("a", T0 + timedelta(seconds=3)) == 4
    window.replay("b", T0, fired=True)  # its window held events before the replay's
    assert [window.observe("b", T0 + timedelta(seconds=s)) for s in (1, 2, 59)] == [None] * 3
    assert window.observe("b", T0 + timedelta(seconds=62)) == 3  # quiet for a window from it


@given(
    st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=40),
    st.integers(min_value=2, max_value=6),
)
def test_what_fires_is_what_a_look_at_every_window_holding_the_event_finds(
    seconds: list[int], count: int
) -> None:
    """The shortcuts (the newest event, too few nearby, one pass over the
    windows) decide as looking at every window would, over what a group keeps:
    the times back to a window before the oldest still counted (the newest
    less the reach, a window and the skew), the newest `count` of them."""
    span = timedelta(seconds=60)
    reach = span + timedelta(seconds=300)
    window = ThresholdWindow(count, span)
    kept: list[datetime] = []
    newest: datetime | None = None
    quiet_until: datetime | None = None
    for second in seconds:
        moment = T0 + timedelta(seconds=second)
        newest = moment if newest is None else max(newest, moment)
        if moment < newest - reach:
            assert window.observe("a", moment) is None  # passed over
            continue
        kept = sorted([*kept, moment])
        kept = [t for t in kept if t >= newest - reach - span]
        windows = [[t for t in kept if start <= t <= start + span] for start in kept]
        holding = [w for w in windows if w[0] <= moment <= w[0] + span]
        most = max(holding, key=len, default=[])
        expected = None
        if (quiet_until is None or moment >= quiet_until) and len(most) >= count:
            expected = len(most)
            quiet_until = most[-1] + span
        assert window.observe("a", moment) == expected
        kept = kept[-count:]


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 900)), max_size=80),
    st.sets(st.integers(0, 80)),
    st.integers(min_value=2, max_value=4),
)
def test_a_window_taken_up_as_kept_decides_as_the_one_that_went_on(
    events: list[tuple[str, int]], cuts: set[int], count: int
) -> None:
    """Kept (what changed since it last was) and taken up again at any point,
    a window decides every event after as the one that was never put down
    would, and holds what it does: the same groups, times and quiet periods,
    sweeps and evictions included (made frequent here: a sweep every 4
    events, 2 groups at most)."""
    span = timedelta(seconds=60)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(alerts, "_SWEEP_EVERY", 4)
        patch.setattr(alerts, "MAX_GROUPS", 2)
        went_on, window = ThresholdWindow(count, span), ThresholdWindow(count, span)
        store: dict[str, KeptGroup] = {}
        newest: int | None = None
        observed = 0

        def keep(window: ThresholdWindow) -> None:
            nonlocal newest, observed
            changes = window.changes()
            if changes is None:
                return
            if changes.whole:
                store.clear()
            for key in changes.dropped:  # perhaps never kept (come and gone since)
                store.pop(key, None)
            for group in changes.groups:  # copied, as a database keeps them
                times = None if group.times is None else array("q", group.times)
                store[group.key] = KeptGroup(group.key, times, group.seen, group.quiet_until)
            newest, observed = changes.newest, changes.observed
            window.kept()

        def taken_up() -> ThresholdWindow:
            window = ThresholdWindow(count, span)
            window.restore(KeptWindow(newest, observed, list(store.values())))
            return window

        for index, (key, second) in enumerate(events):
            if index in cuts:
                keep(window)
                window = taken_up()
            moment = T0 + timedelta(seconds=second)
            assert window.observe(key, moment) == went_on.observe(key, moment), index
        keep(window)
        assert window.changes() is None  # all kept
        restored = taken_up()
        for held in (window, restored):
            assert (held._groups, held._quiet, held._newest, held._observed) == (
                went_on._groups,
                went_on._quiet,
                went_on._newest,
                went_on._observed,
            )
            assert list(held._groups) == list(went_on._groups)  # in the order of eviction


def test_a_time_kept_takes_8_bytes() -> None:
    """A group keeps up to `count` times (100,000 at most), a rule up to
    10,000 groups: as datetimes in a list, 57 bytes each (helper-130)."""
    window = ThresholdWindow(100_000, timedelta(days=1))
    events = 20_000
    tracemalloc.start()
    try:
        for n in range(events):
            window.observe("a", T0 + timedelta(seconds=n))
        # What this test and the window's code allocated and still hold (the
        # times given, the window's store of them): other threads of a test
        # run allocate meanwhile too.
        mine = [tracemalloc.Filter(True, path) for path in (alerts.__file__, __file__)]
        held = sum(trace.size for trace in tracemalloc.take_snapshot().filter_traces(mine).traces)
    finally:
        tracemalloc.stop()
    assert held < events * 10


def test_groups_no_window_can_reach_are_dropped() -> None:
    """One group an address, as a rule grouped by IP meets them: those no
    event still counted can reach go (an event is counted up to a window and
    the five minutes of clock skew before the newest, with times a window
    before it), but one quiet since it fired."""
    window = ThresholdWindow(2, timedelta(seconds=60))
    window.observe("fired", T0)
    assert window.observe("fired", T0 + timedelta(seconds=1)) == 2
    for n in range(3000):
        window.observe(f"10.0.{n // 256}.{n % 256}", T0 + timedelta(seconds=2))
    later = T0 + timedelta(seconds=2 + 60 + 300 + 60 + 1)  # out of reach of the 3,000
    for n in range(2000):
        window.observe(f"later-{n}", later)
    assert window.groups() <= 2000 + 1 + 1  # the later ones, "fired" perhaps, none of the 3,000
    assert window.observe("fired", later) is None  # a new group: one event


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


def test_a_group_that_fired_stays_quiet_though_every_group_kept_is_quiet() -> None:
    """At the bound, with every group sampled quiet, eviction took a quiet
    one: its group fired again within its quiet window (helper-130)."""
    window = ThresholdWindow(2, timedelta(hours=1))
    moment = T0

    def observe(key: str) -> int | None:
        nonlocal moment
        moment += timedelta(milliseconds=1)
        return window.observe(key, moment)

    for n in range(MAX_GROUPS):
        assert [observe(f"10.0.{n // 256}.{n % 256}") for _ in range(2)] == [None, 2]
    assert observe("192.0.2.1") is None  # one group more: one goes
    assert window.groups() == MAX_GROUPS
    assert [observe("10.0.0.0") for _ in range(2)] == [None, None]  # the first, still quiet


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


@pytest.mark.parametrize("zone", ["localtime", "Factory", "Mars/Olympus_Mons", ""])
def test_a_time_zone_is_an_iana_zone_not_the_hosts_own(zone: str) -> None:
    """`localtime` named whatever zone the host was set to: one rule, judged
    differently on each host (helper-122). "" is UTC."""
    if not zone:
        assert validate_condition("off_hours", WATCHED, path="rule", end_hour=9).time_zone == "UTC"
        return
    with pytest.raises(InvalidArgument) as refused:
        validate_condition("off_hours", WATCHED, path="rule", time_zone=zone, end_hour=9)
    assert [v.field for v in refused.value.violations] == ["rule.off_hours.time_zone"]


def test_every_violation_is_named() -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_condition("threshold", EventFilter(), path="rule", count=0, window_seconds=0)
    assert [v.field for v in refused.value.violations] == [
        "rule.threshold.filter",
        "rule.threshold.count",
        "rule.threshold.window_seconds",
    ]


@pytest.mark.parametrize(
    ("typed", "group"),
    [
        ("ADMIN", "admin"),
        ("\uff21\uff44\uff4d\uff49\uff4e", "admin"),  # full-width
        ("ad\u200dmin\u2060\ufeff", "admin"),  # zero-width joiner, word joiner, BOM
        ("\u202eadmin\ufe0f ", "admin"),  # a bidi override, a variation selector, a space
        ("STRASSE", "strasse"),
        ("Stra\u00dfe", "strasse"),
        ("\ufb01le", "file"),  # a ligature
        ("a\u0345", "a\u03b9"),  # casefold makes it non-NFKC: normalised again
        ("\u0430dmin", "\u0430dmin"),  # a Cyrillic a: another letter, kept
        ("j smith", "j smith"),  # spaces within kept
    ],
)
def test_an_actor_id_is_grouped_as_it_reads_and_its_group_is_its_own(
    typed: str, group: str
) -> None:
    assert actor_group(typed) == group
    assert actor_group(group) == group  # a key re-keys to itself (a kept window's)
    by_actor = Condition("threshold", EventFilter(actions=("user.login",)), 2, 60, "actor")
    record = {"actor": {"id": typed}}
    assert group_key(by_actor, record) == group
    assert group_key(replace(by_actor, exact_actor_ids=True), record) == typed
