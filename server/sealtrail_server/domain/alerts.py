"""Alert rules: their validation, and the pure parts of deciding that one
fires (the threshold's sliding window, working hours). Which events reach
them, and what a firing records, is the evaluator's (alerts/)."""

from __future__ import annotations

import bisect
import functools
import ipaddress
import itertools
import json
import unicodedata
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import FieldViolation, InvalidArgument
from .event import ACTOR_TYPES, MAX_FUTURE_SKEW_SECONDS, OUTCOMES, network_address

# Re-exported: reserved in domain/event.py; never evaluated itself (no alert on an alert).
from .event import ALERT_ACTION as ALERT_ACTION
from .filters import SEVERITY_RANKS, EventFilter
from .zones import is_time_zone, not_a_time_zone

MAX_RULES_PER_TENANT: Final = 100
MAX_RULE_NAME: Final = 128
MAX_THRESHOLD_COUNT: Final = 100_000
MAX_WINDOW_SECONDS: Final = 7 * 24 * 3600
# A spike rule's bounds (ADR 0132): its window, the windows its baseline
# averages and how far back they reach, its factor and its fewest events.
MIN_SPIKE_WINDOW: Final = 60
MAX_SPIKE_WINDOW: Final = 24 * 3600
MAX_BASELINE_WINDOWS: Final = 1000
MAX_BASELINE_SECONDS: Final = 35 * 24 * 3600
MAX_SPIKE_FACTOR: Final = 1000.0
MAX_SPIKE_MIN_COUNT: Final = 100_000
# An absence rule's silence (ADR 0162): at least a minute, as the evaluator
# looks once a poll and a source's own batching delays its events by seconds;
# at most the threshold's longest window.
MIN_ABSENCE_WINDOW: Final = 60

ConditionKind = Literal[
    "match", "threshold", "spike", "absence", "new_ip", "new_country", "off_hours"
]
# The kinds that learn where each actor is seen from, and alert on somewhere new.
NEW_ORIGIN_KINDS: Final = ("new_ip", "new_country")
# The kinds whose filter may be empty: every event with an address or a
# country, or (absence) any event of the tenant, expected to keep coming.
ANY_EVENT_KINDS: Final = (*NEW_ORIGIN_KINDS, "absence")
GroupBy = Literal["none", "actor", "ip", "credential"]
# What a threshold or spike may count by, besides all together ("none").
GROUPINGS: Final = ("actor", "ip", "credential")
# A grouped spike's grouping as its rule's condition is stored: a key only
# grouped spikes carry (ADR 0147's addendum). A process of the release before
# knows `group_by` (a threshold's) and reads none of a spike's: stored under
# it, a grouped spike would be judged ungrouped there during a rolling
# upgrade. A key it does not know, it leaves the rule to a process that knows.
SPIKE_GROUP_BY: Final = "spike_group_by"


def condition_shown(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored condition as answers and change records name its settings
    (and as it is validated): a grouped spike's grouping as `group_by`, as a
    threshold's. Any other, as stored."""
    if SPIKE_GROUP_BY not in stored:
        return stored
    return {("group_by" if key == SPIKE_GROUP_BY else key): value for key, value in stored.items()}


@dataclass(frozen=True, slots=True)
class Condition:
    """A validated condition; the fields of its kind are set."""

    kind: ConditionKind
    filter: EventFilter
    count: int = 0
    window_seconds: int = 0
    group_by: GroupBy = "none"
    # Grouped by actor: ids compared exactly as recorded, not folded (`actor_group`).
    exact_actor_ids: bool = False
    time_zone: str = "UTC"
    start_hour: int = 0
    end_hour: int = 24
    working_days: tuple[int, ...] = (1, 2, 3, 4, 5)
    baseline_windows: int = 0
    factor: float = 0.0
    min_count: int = 0


def validate_condition(
    kind: str | None,
    event_filter: EventFilter,
    *,
    path: str,
    count: int = 0,
    window_seconds: int = 0,
    group_by: str = "none",
    exact_actor_ids: bool = False,
    time_zone: str = "",
    start_hour: int = 0,
    end_hour: int = 0,
    working_days: tuple[int, ...] = (),
    baseline_windows: int = 0,
    factor: float = 0.0,
    min_count: int = 0,
    stored: bool = False,
) -> Condition:
    """A condition checked, raising InvalidArgument naming each bad field.
    `stored`: one taken and stored before (`watches_no_events` refused only
    as given: a rule stored before it was keeps firing)."""
    violations: list[FieldViolation] = []

    def fail(name: str, description: str) -> None:
        violations.append(FieldViolation(f"{path}.{kind}.{name}", description))

    if kind not in ("match", "threshold", "spike", "absence", *NEW_ORIGIN_KINDS, "off_hours"):
        raise InvalidArgument.field(path, "one condition is required")
    if event_filter.text is not None:
        fail("filter.text", "full-text search cannot be used in alert rules")
    if kind not in ANY_EVENT_KINDS and event_filter == EventFilter():
        fail("filter", "at least one criterion is required (a rule on every event is noise)")
    elif kind not in ANY_EVENT_KINDS and not stored:
        for name, description in watches_no_events(event_filter):
            fail(f"filter.{name}", description)
    if kind == "threshold":
        if not 2 <= count <= MAX_THRESHOLD_COUNT:
            fail("count", f"must be 2 to {MAX_THRESHOLD_COUNT:,}")
        if not 1 <= window_seconds <= MAX_WINDOW_SECONDS:
            fail("window_seconds", f"must be 1 to {MAX_WINDOW_SECONDS:,} (7 days)")
    if kind == "absence" and not MIN_ABSENCE_WINDOW <= window_seconds <= MAX_WINDOW_SECONDS:
        fail("window_seconds", f"must be {MIN_ABSENCE_WINDOW} to {MAX_WINDOW_SECONDS:,} (7 days)")
    if kind in ("threshold", "spike") and exact_actor_ids and group_by != "actor":
        fail("exact_actor_ids", "applies only to a rule grouped by actor")
    if kind == "spike":
        if not MIN_SPIKE_WINDOW <= window_seconds <= MAX_SPIKE_WINDOW:
            fail("window_seconds", f"must be {MIN_SPIKE_WINDOW} to {MAX_SPIKE_WINDOW:,} (a day)")
        if not 1 <= baseline_windows <= MAX_BASELINE_WINDOWS:
            fail("baseline_windows", f"must be 1 to {MAX_BASELINE_WINDOWS:,}")
        elif window_seconds >= MIN_SPIKE_WINDOW and (
            baseline_windows * window_seconds > MAX_BASELINE_SECONDS
        ):
            fail("baseline_windows", "with window_seconds, must reach at most 35 days back")
        # `not <=` refuses NaN too.
        if not (1.0 < factor <= MAX_SPIKE_FACTOR):
            fail("factor", f"must be more than 1 and at most {MAX_SPIKE_FACTOR:,.0f}")
        if not 1 <= min_count <= MAX_SPIKE_MIN_COUNT:
            fail("min_count", f"must be 1 to {MAX_SPIKE_MIN_COUNT:,}")
    zone = time_zone or "UTC"
    if kind == "off_hours":
        if not is_time_zone(zone):
            fail("time_zone", not_a_time_zone(time_zone))
        if not 0 <= start_hour <= 23:
            fail("start_hour", "must be 0 to 23")
        if not start_hour < end_hour <= 24:
            fail("end_hour", "must be after start_hour, at most 24")
        if any(not 1 <= day <= 7 for day in working_days):
            fail("working_days", "days are 1 (Monday) to 7 (Sunday)")
    if violations:
        raise InvalidArgument(violations)
    return Condition(
        kind=cast(ConditionKind, kind),
        filter=event_filter,
        count=count,
        window_seconds=window_seconds,
        group_by=cast(GroupBy, group_by if group_by in GROUPINGS else "none"),
        exact_actor_ids=exact_actor_ids,
        time_zone=zone,
        start_hour=start_hour,
        end_hour=end_hour,
        working_days=tuple(sorted(set(working_days))) or (1, 2, 3, 4, 5),
        baseline_windows=baseline_windows,
        factor=factor,
        min_count=min_count,
    )


_NAME_THE_EVENTS: Final = (
    "; name which events the rule watches (actions, categories, outcomes, actor, resource,"
    " ip, country...): a rule on nearly every event is noise, and better a sink"
)


def watches_no_events(event_filter: EventFilter) -> list[tuple[str, str]]:
    """The criteria of a filter that say nothing of which events it takes,
    and why, if it has no other: levels or outcomes that take every event,
    actions only left out (every other action taken), bounds of when alone.
    Empty if any criterion narrows which events it takes (or it has none:
    the empty filter is refused as such)."""
    f = event_filter
    levels = {rank for rank in SEVERITY_RANKS.values() if rank >= f.min_severity}
    if f.severities:
        levels &= set(f.severities)
    narrows = (
        f.actions or f.action_prefixes or f.action_suffixes or f.categories
        or (f.outcomes and set(f.outcomes) != set(OUTCOMES.values()))
        or (f.actor_types and set(f.actor_types) != set(ACTOR_TYPES.values()))
        or f.countries or f.resource_types or f.http_status_classes or f.http_routes
        or f.changed_fields or f.details_equals or f.actor_roles
        or levels != set(SEVERITY_RANKS.values())
        or any(value is not None for value in (
            f.actor, f.resource_type, f.resource_id, f.request_id, f.trace_id, f.text,
            f.recorded_by, f.ip, f.country, f.actor_email_domain, f.user_agent,
            f.credential_id, f.credential_kind, f.actor_prefix, f.min_duration_ms,
            f.has_http_route,
        ))
    )  # fmt: skip
    if narrows:
        return []
    said = []
    if f.min_severity:
        said.append(("min_severity", "info takes every event (each is info or above)"))
    if f.severities:
        said.append(("severities", "take every level, so every event"))
    if f.outcomes:
        said.append(("outcomes", "take every outcome, so every event"))
    if f.actor_types:
        said.append(("actor_types", "take every actor type, so every event"))
    if f.excluded_actions or f.excluded_prefixes or f.excluded_suffixes:
        said.append(("exclude_actions", "leaves actions out but takes every other event"))
    if f.occurred_after is not None:
        said.append(("occurred_after", "bounds when, not which events, it takes"))
    if f.occurred_before is not None:
        said.append(("occurred_before", "bounds when, not which events, it takes"))
    return [(name, description + _NAME_THE_EVENTS) for name, description in said]


def reads_countries(condition: dict[str, Any]) -> bool:
    """Whether a stored condition reads events' `context.country`: a
    new-country rule's does, and so does any whose filter names a country
    (`country`, `countries`)."""
    event_filter = condition.get("filter") or {}
    return condition.get("kind") == "new_country" or bool(
        event_filter.get("country") or event_filter.get("countries")
    )


def origin_of(kind: ConditionKind, record: dict[str, Any]) -> str | None:
    """Where a new-origin rule sees the event's actor from: its network
    (new_ip: an IPv4 address, an IPv6 address's /64) or its country
    (new_country); None if the event does not say."""
    context = record.get("context", {})
    if kind == "new_ip":
        ip = context.get("ip")
        return network_of(str(ip)) if ip else None
    country = context.get("country")
    return str(country) if country else None


def group_key(condition: Condition, record: dict[str, Any]) -> str | None:
    """What a threshold or spike counts this event under; None: not counted."""
    if condition.group_by == "actor":
        actor = str(record["actor"]["id"])
        return actor if condition.exact_actor_ids else actor_group(actor)
    if condition.group_by == "ip":
        ip = record.get("context", {}).get("ip")
        return network_of(str(ip)) if ip else None
    if condition.group_by == "credential":
        return credential_group(record)
    return ""


def credential_group(record: dict[str, Any]) -> str | None:
    """The group a threshold grouped by credential counts an event under: the
    credential's kind and id as a JSON array (`["api_key","key_8f3a2c"]`:
    an id may hold any character, so no separator keeps the two apart);
    None for an event without a credential (not counted). The hint plays no
    part: a client that sends it on some events and not others acts with
    one key."""
    credential = record.get("actor", {}).get("credential")
    if not credential:
        return None
    kind, credential_id = str(credential.get("kind", "")), str(credential.get("id", ""))
    return json.dumps([kind, credential_id], ensure_ascii=False, separators=(",", ":"))


# Code points that show nothing, removed from an actor id before it is
# compared: format characters (zero-width space and joiners, word joiner, BOM,
# bidi marks), and the other default-ignorable ones that are not (the
# combining grapheme joiner, Hangul fillers, variation selectors).
_IGNORED: Final = frozenset(
    [0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0, *range(0x180B, 0x1810), *range(0xFE00, 0xFE10),
     *range(0xE0100, 0xE01F0)]
)  # fmt: skip


def _shown(text: str) -> str:
    return "".join(
        char for char in text if ord(char) not in _IGNORED and unicodedata.category(char) != "Cf"
    )


def actor_group(actor_id: str) -> str:
    """The group a threshold grouped by actor counts an actor id under (ADR
    0110): what the id reads as, whatever form it was typed in. Characters
    that show nothing removed, compatibility forms made plain (NFKC:
    full-width `A` is `A`, the `fi` ligature `fi`), case folded (`ADMIN`, `Admin`, `admin`;
    `Straße` and `STRASSE`), normalised again, and the spaces either side
    trimmed. Applied until it changes nothing, so that a group's key is its
    own group (a window kept with keys of another kind is re-keyed by it).
    The event keeps its id as recorded; only the grouping compares them so."""
    key = actor_id
    for _ in range(4):
        folded = unicodedata.normalize(
            "NFKC", unicodedata.normalize("NFKC", _shown(key)).casefold()
        ).strip()
        if folded == key:
            break
        key = folded
    return key


# What str.strip() trims (actor_group trims ids so): Unicode's spaces as Python has them.
ID_SPACES: Final = "".join(char for char in map(chr, range(0x3001)) if char.isspace())


# Letters whose lowercase collations disagree on, where ids hold them: past
# ASCII (`À`, `Σ`, `Ж`: C and POSIX lowercase ASCII alone), `I` (a Turkish or
# Azeri collation's is a dotless i, U+0131), `Σ` ending a word (ICU's is a
# final sigma, `ς`) and `Ì` (ICU's Lithuanian keeps the dot of `i`, U+0307).
# NFKC as it is; `\u039f` a Greek capital omicron.
CASED_SAMPLE: Final = "ÌÀΣЖI\u039fΣ"


def lowers_as_actor_group(lowered: str) -> bool:
    """Whether a database's `lower()` lowercases as actor_group does, each
    character alone, by what it made of CASED_SAMPLE (`lowered`): where it
    does not, a fold the database makes of an id is not actor_group's
    (`IЖ` is `ıж` under a Turkish collation, `ΟΔΟΣ` is `οδος` under ICU's,
    where actor_group makes them `iж` and `οδοσ`), and the forms of a
    grouped spike's ids are folded by Python alone (store.alerts)."""
    return lowered == actor_group(CASED_SAMPLE)


@functools.cache
def folded_apart() -> str:
    """The characters of an actor id for which a fold of NFKC, a lowercase of
    each character alone and NFKC again (what a database's `lower()` and
    `normalize()` can do) may not be actor_group's: those it removes (format
    characters, the other ignorable ones), and those whose compatibility
    form's case fold is no single lowercase character (`ß` folds to `ss`,
    a final sigma to a medial one, `İ` to `i` and a dot, Cherokee small letters to capitals). An id
    without any, in its form as recorded or its NFKC form, folds alike both
    ways (tests/integration/test_spike_groups.py asks the database of every
    character Unicode assigns). Computed once, when a spike first needs it."""
    apart = []
    for code in range(1, 0x110000):
        char = chr(code)
        category = unicodedata.category(char)
        if category in ("Cn", "Cs", "Co"):  # unassigned, surrogates, private use
            continue
        compatible = unicodedata.normalize("NFKC", char)
        if (
            category == "Cf"
            or code in _IGNORED
            or compatible.casefold() != compatible.lower()
            or any(len(each.lower()) != 1 for each in compatible)
        ):
            apart.append(char)
    return "".join(apart)


def network_of(ip: str) -> str:
    """An IPv6 address's /64, a site's or a host's whole share (an attacker
    takes a new address from it for every attempt; a device's privacy address
    changes within it every day); an IPv4 address itself, and an IPv4-mapped
    one as IPv4. Written as PostgreSQL writes the network (migration 0030
    turned the addresses learned before into these): lowercase, the longest
    run of two or more zero groups shortened to `::`, no zone."""
    address = network_address(ip)
    if address is None:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


# A group's times: occurred_at in microseconds since the epoch (a datetime's
# own precision), 8 bytes each where a list of datetimes took 57 (helper-130).
_TIMES: Final = "q"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def _microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


@dataclass(slots=True)
class _Group:
    times: array[int] = field(default_factory=lambda: array(_TIMES))  # sorted
    seen: int = 0  # the window's `observed` when an event of it was last taken
    forms: tuple[str, ...] = ()  # the ids as recorded that it counted (actor_group)


@dataclass(frozen=True, slots=True)
class KeptGroup:
    """A group of a threshold's window as it is kept: its times (microseconds,
    sorted; None for a group kept only for its quiet period), when it was
    last seen (the window's count of events taken then: the order of
    eviction), until when it is quiet (None: it is not), and the forms of
    the actor id it counted, as recorded (a group of folded actor ids)."""

    key: str
    times: array[int] | None
    seen: int | None
    quiet_until: int | None
    forms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KeptWindow:
    """A threshold's window as it is kept (ADR 0086): the newest time it has
    taken (None: none), how many events it has taken, and its groups."""

    newest: int | None
    observed: int
    groups: list[KeptGroup]


@dataclass(frozen=True, slots=True)
class WindowChanges:
    """What changed in a window since it was last kept: `whole`, every group
    (none of it was kept: `groups` are all it holds); else the groups that
    changed, and the keys of those it dropped."""

    whole: bool
    newest: int | None
    observed: int
    groups: list[KeptGroup]
    dropped: list[str]


# An event may occur this long after it is received (domain/event.py).
_SKEW: Final = timedelta(seconds=MAX_FUTURE_SKEW_SECONDS)
# Observations between two sweeps of the groups no window can reach any more.
_SWEEP_EVERY: Final = 1024
# Groups a threshold rule keeps at most. Sweeps bound them by a window's worth
# of distinct keys, which for a rule grouped by IP with a window of days is
# unbounded: an address a request. Past it, of the least recently seen (this
# many of them), the group with the fewest events goes: a flood of one-event
# keys cannot push out the group it hides. A group that fired keeps its quiet
# period apart, where eviction never reaches: evicted, it fired again within
# it (helper-130).
MAX_GROUPS: Final = 10_000
# The forms of an actor id a group of folded ids keeps, the first seen: what
# its alert names (an attacker's thousand spellings need not all be listed).
MAX_FORMS: Final = 8
_EVICTION_SAMPLE: Final = 64


@dataclass(slots=True)
class ThresholdWindow:
    """One threshold rule's sliding windows, by group, in memory. `observe`
    says whether an event makes its group reach the count within a window
    that holds it; a group that fired is quiet until a window has passed
    since. An event that occurred more than a window and the allowed clock
    skew (its `reach`) before the newest the rule has seen is passed over.
    Memory stays bounded: a group keeps its newest `count` times (in
    microseconds, 8 bytes each), and groups no event still to be counted can
    reach are dropped now and then (a rule grouped by IP meets every address
    of a credential-stuffing run).

    The cut-off is the rule's, not each group's, so that what an event still
    to come is judged by lies a few windows back from the newest event, and a
    window rebuilt from the log's recent events (`replay`) judges it as the
    window that saw them all (docs/alerting.md, the rebuild's bound).

    It is kept as it is (`changes`, `kept`) and taken up again from that
    (`restore`): the same groups, in the same order, with the same times and
    quiet periods, so the window taken up decides as this one would have,
    whatever retention purged of the log since (ADR 0086)."""

    count: int
    window: timedelta
    # The key of a group as it is now counted (actor_group for folded actor
    # ids): a window kept under other keys is taken up re-keyed (`restore`).
    key_of: Callable[[str], str] | None = None
    _groups: dict[str, _Group] = field(default_factory=dict)
    # Until when each group that fired is quiet; kept until no event still to
    # be counted can fall in it, so at most one a group that fired lately.
    _quiet: dict[str, int] = field(default_factory=dict)
    _newest: int | None = None
    _observed: int = 0
    # The keys of the groups changed or dropped since the window was last
    # kept, and its newest and observed then; all of it when it never was
    # (`_whole`).
    _changed: set[str] = field(default_factory=set)
    _whole: bool = True
    _kept_at: tuple[int | None, int] = (None, 0)
    _span: int = field(init=False)  # the window, and its reach, in microseconds
    _reach: int = field(init=False)

    def __post_init__(self) -> None:
        self._span = self.window // _MICROSECOND
        self._reach = self.reach // _MICROSECOND

    @property
    def reach(self) -> timedelta:
        """How far before the newest event seen an event is still counted."""
        return self.window + _SKEW

    def observe(self, key: str, occurred_at: datetime, form: str | None = None) -> int | None:
        """The number of events in the window when this one fires, of those
        kept (the count, or one more: a lower bound of the burst); else None.
        An event that arrives late (backdated) counts with the events kept
        that share a window with it, not with later ones a window apart.
        `form`: the actor id as recorded, of a group of folded ids (`forms`)."""
        return self._take(key, _microseconds(occurred_at), None, form)

    def replay(
        self, key: str, occurred_at: datetime, *, fired: bool, form: str | None = None
    ) -> None:
        """Takes an event evaluated before, as `observe` took it, but whether
        its group fired there is given (an alert was recorded for it or not),
        not decided again: from the log's events within its bound, a window
        so rebuilt stands as the one that evaluated them all."""
        self._take(key, _microseconds(occurred_at), fired, form)

    def forms(self, key: str) -> tuple[str, ...]:
        """The forms of the actor id the group counted, as recorded, in the
        order first seen (at most MAX_FORMS)."""
        group = self._groups.get(key)
        return () if group is None else group.forms

    def _take(self, key: str, occurred_at: int, fired: bool | None, form: str | None) -> int | None:
        self._sweep(occurred_at)
        assert self._newest is not None
        if occurred_at < self._newest - self._reach:
            return None  # backdated out of every window still to be judged
        # Moved to the end on every event: the dict is least recently seen first.
        group = self._groups.pop(key, None)
        if group is None:
            group = _Group()
            if len(self._groups) >= MAX_GROUPS:
                self._evict_one()
        self._groups[key] = group
        group.seen = self._observed
        if form is not None and form not in group.forms and len(group.forms) < MAX_FORMS:
            group.forms += (form,)
        if not self._whole:
            self._changed.add(key)
        times = group.times
        bisect.insort(times, occurred_at)
        # Back to a window before the oldest event still counted: trimmed a
        # window behind the group's own newest, a late burst well within the
        # reach was dropped as it came once the group had one newer event
        # (helper-155).
        del times[: bisect.bisect_left(times, self._newest - self._reach - self._span)]
        if fired is None:  # decided now
            quiet = key in self._quiet and occurred_at < self._quiet[key]
            within, newest = (
                (0, occurred_at) if quiet else self._most_in_a_window_with(times, occurred_at)
            )
            fired = within >= self.count
        elif fired:  # as decided when it was evaluated, quiet from the same window
            within, newest = self._most_in_a_window_with(times, occurred_at)
        del times[: -self.count]  # the newest `count` are all a decision needs
        if not fired:
            return None
        # Quiet for a window from the newest event counted: from a late
        # trigger's own time, the rest of its burst fired again (helper-122).
        self._quiet[key] = newest + self._span
        return within

    def _most_in_a_window_with(self, times: array[int], moment: int) -> tuple[int, int]:
        """The most of `times` one window holding `moment` holds (of the
        windows that start at a time at most a window before it, and at or
        before it), and the newest time that window holds; for the newest
        event, the window that ends at it. Fewer than the count, and not the
        most, when no window can hold the count."""
        first = bisect.bisect_left(times, moment - self._span)
        last = bisect.bisect_right(times, moment)
        if last == len(times):  # the newest, as events in order are: nothing after it
            return last - first, moment
        # Every window holding `moment` lies within a window either side of it:
        # with fewer than the count there, none reaches it. So an event a few
        # milliseconds late (two sources' clocks) costs two searches, not a
        # walk of every time kept, up to `count` of them (helper-122).
        reach = bisect.bisect_right(times, moment + self._span)
        if reach - first < self.count:
            return reach - first, moment
        best, newest, end = 0, moment, first
        for start in range(first, last):  # the window starting at each time; its end moves on
            while end < reach and times[end] <= times[start] + self._span:
                end += 1
            if end - start > best:
                best, newest = end - start, times[end - 1]
        return best, newest

    def _sweep(self, occurred_at: int) -> None:
        """Now and then, drops the groups that no event still to be counted
        can reach (every time kept a window before the oldest such event can
        occur), and the quiet periods that end before it."""
        if self._newest is None or occurred_at > self._newest:
            self._newest = occurred_at
        self._observed += 1
        if self._observed % _SWEEP_EVERY:
            return
        oldest_counted = self._newest - self._reach
        groups, quiet = self._groups, self._quiet
        self._groups = {
            key: group
            for key, group in groups.items()
            if group.times[-1] >= oldest_counted - self._span
        }
        self._quiet = {key: until for key, until in quiet.items() if until > oldest_counted}
        if not self._whole:
            self._changed.update(groups.keys() - self._groups.keys())
            self._changed.update(quiet.keys() - self._quiet.keys())

    def _evict_one(self) -> None:
        sample = itertools.islice(self._groups.items(), _EVICTION_SAMPLE)
        key, _ = min(sample, key=lambda item: len(item[1].times))
        del self._groups[key]
        if not self._whole:
            self._changed.add(key)

    def groups(self) -> int:
        """How many groups are kept."""
        return len(self._groups)

    def _kept_group(self, key: str) -> KeptGroup | None:
        group = self._groups.get(key)
        quiet = self._quiet.get(key)
        if group is None and quiet is None:
            return None
        if group is None:
            return KeptGroup(key, None, None, quiet)
        return KeptGroup(key, group.times, group.seen, quiet, group.forms)

    def changes(self) -> WindowChanges | None:
        """What changed since the window was last kept (`kept`), or taken up
        (`restore`); None if nothing did."""
        if not (self._whole or self._changed) and self._kept_at == (self._newest, self._observed):
            return None
        keys = (self._groups.keys() | self._quiet.keys()) if self._whole else self._changed
        groups, dropped = [], []
        for key in sorted(keys):
            kept = self._kept_group(key)
            if kept is None:
                dropped.append(key)
            else:
                groups.append(kept)
        return WindowChanges(self._whole, self._newest, self._observed, groups, dropped)

    def kept(self) -> None:
        """The `changes` last read are kept (committed): none are left."""
        self._changed.clear()
        self._whole = False
        self._kept_at = (self._newest, self._observed)

    def unkept(self) -> None:
        """What was kept of the window is gone: `changes` is all of it."""
        self._whole = True

    def restore(self, kept: KeptWindow) -> None:
        """Takes the window up as it was kept: as it stood then, every group
        in its place. Kept under other keys (a window of exact actor ids, as
        every window was before ADR 0110, taken up by a rule that folds
        them), its groups are re-keyed, those that now share a key merged:
        their times (the newest `count`), the later quiet period and last
        sighting, their forms. What changed so is kept at the next step."""
        self._newest, self._observed = kept.newest, kept.observed
        self._groups, self._quiet = {}, {}
        rekeyed: set[str] = set()
        for old in sorted(kept.groups, key=lambda group: group.seen or 0):  # least recent first
            key = old.key if self.key_of is None else self.key_of(old.key)
            if key != old.key:
                rekeyed |= {old.key, key}
            if old.quiet_until is not None:
                self._quiet[key] = max(self._quiet.get(key, old.quiet_until), old.quiet_until)
            if old.times is None or old.seen is None:
                continue
            # Kept without forms (exact ids): its key is the one form it counted.
            forms = old.forms or ((old.key,) if self.key_of is not None else ())
            group = self._groups.pop(key, None)
            if group is None:
                group = _Group(array(_TIMES, old.times), old.seen, forms[:MAX_FORMS])
            else:  # merged
                group.times = array(_TIMES, sorted([*group.times, *old.times])[-self.count :])
                group.seen = max(group.seen, old.seen)
                new = tuple(form for form in forms if form not in group.forms)
                group.forms = (group.forms + new)[:MAX_FORMS]
            self._groups[key] = group  # at the end: the most recently seen
        self.kept()
        self._changed = rekeyed


def outside_working_hours(condition: Condition, occurred_at: datetime) -> bool:
    try:
        local = occurred_at.astimezone(ZoneInfo(condition.time_zone))
    except ZoneInfoNotFoundError:
        local = occurred_at
    if local.isoweekday() not in condition.working_days:
        return True
    return not condition.start_hour <= local.hour < condition.end_hour
