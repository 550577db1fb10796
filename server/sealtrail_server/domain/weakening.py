"""Which changes weaken the audit trail: Sealtrail records them at severity
warning, the rest at info, so that a SIEM rule "severity >= warning from
Sealtrail" pages on them (ADR 0066, docs/api.md "Changes that weaken the
audit trail").

A change weakens when, after it, some event could be forwarded, alerted on or
kept less than before: a sink paused, narrowed or moved; an alert rule
disabled, made to fire less or less loudly, or routed to fewer sinks; a
retention period shortened (by the tenant's policy, or by the operator's
ceiling on it). Each function answers *why*, as short reasons the
record's `details.weakens` lists; none: the change does not weaken. Where
the answer cannot be proved (two filters that overlap, a time zone swapped
for another), the change counts as weakening: a warning too many costs a
look, one too few a blind spot.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Final

from .alerts import NEW_ORIGIN_KINDS, Condition
from .event import CATEGORIES, SEVERITIES, email_key
from .filters import EventFilter
from .retention import RetentionLimits, RetentionPolicy
from .sinks import DEFAULT_URLS, SinkDefinition, destination_url

_SEVERITY_RANKS: Final = {name: rank for rank, name in SEVERITIES.items()}
# A threshold's groups, finest last: counted per group, a finer one fires
# later or never; actor and ip are not comparable, so either way weakens.
_GROUP_COARSE: Final = "none"


def filter_narrows(before: EventFilter, after: EventFilter) -> bool:
    """Whether `after` may match an event `before` matched no longer: True
    unless every criterion of `after` is one of `before`'s or wider (a
    criterion dropped, more actions, categories or outcomes, fewer actions left
    out, more severity levels (of min_severity and severities together), a wider
    time range or network, a part of the user agent's text, more actor types, countries or
    resource types (`country` and `resource_type` each a list of one), more
    status codes (a class covering a code), more routes, a route's presence
    dropped (or kept, routes before saying it), a shorter start of the actor's id or email
    (of `actor_prefix`, or of the exact `actor` before), a lower least duration, more
    changed fields, fewer details required: of `details_equals`, a subset of its entries, more
    actor roles).
    A filter is a conjunction, so that proves every event `before` matches matches `after` too."""
    return not all(
        (
            _time_widens(after.occurred_after, before.occurred_after, later_is_wider=False),
            _time_widens(after.occurred_before, before.occurred_before, later_is_wider=True),
            _actions_widen(before, after),
            _exclusions_widen(before, after),
            _set_widens(before.categories, after.categories),
            _levels(after) >= _levels(before),
            _set_widens(before.outcomes, after.outcomes),
            _set_widens(before.actor_types, after.actor_types),
            # `country: DE` is `countries: [DE]`, and so for resource types.
            _set_widens(before.any_country(), after.any_country()),
            _set_widens(before.any_resource_type(), after.any_resource_type()),
            _statuses_widen(before.http_status_classes, after.http_status_classes),
            _set_widens(before.http_routes, after.http_routes),
            _route_presence_widens(before, after),
            _minimum_widens(before.min_duration_ms, after.min_duration_ms),
            _set_widens(before.changed_fields, after.changed_fields),
            # Entries ANDed: fewer (each kept as it was) take as many events.
            set(after.details_equals) <= set(before.details_equals),
            _set_widens(before.actor_roles, after.actor_roles),
            _ip_widens(before.ip, after.ip),
            _domain_widens(before, after),
            _agent_widens(before.user_agent, after.user_agent),
            _actor_prefix_widens(before, after),
            *(
                _same_or_dropped(getattr(before, name), getattr(after, name))
                for name in (
                    "actor",
                    "resource_id",
                    "request_id",
                    "trace_id",
                    "text",
                    "recorded_by",
                    "credential_id",
                    "credential_kind",
                )
            ),
        )
    )


def _levels(f: EventFilter) -> frozenset[int]:
    """The severity levels `f` lets through: `min_severity` and above, of
    `severities` if it names some (both must hold)."""
    return frozenset(
        rank
        for rank in SEVERITIES
        if rank >= f.min_severity and (not f.severities or rank in f.severities)
    )


def _time_widens(after: Any, before: Any, *, later_is_wider: bool) -> bool:
    if after is None:
        return True
    if before is None:
        return False
    return bool(after >= before if later_is_wider else after <= before)


def _set_widens(before: tuple[str, ...], after: tuple[str, ...]) -> bool:
    return not after or (bool(before) and set(before) <= set(after))


def _statuses_widen(before: tuple[str, ...], after: tuple[str, ...]) -> bool:
    """Whether `after`'s status classes and codes take every code `before`'s
    took: each of those kept, or a code's class (`503` under `5xx`)."""
    if not after:
        return True
    return bool(before) and all(value in after or f"{value[0]}xx" in after for value in before)


def _route_presence_widens(before: EventFilter, after: EventFilter) -> bool:
    """Whether `after`'s route presence takes every event `before` took:
    none asked, or the same as `before`'s, whose routes say present."""
    if after.has_http_route is None:
        return True
    return after.has_http_route == (True if before.http_routes else before.has_http_route)


def _minimum_widens(before: float | None, after: float | None) -> bool:
    """Whether `after`'s least duration takes every event `before`'s took:
    dropped, or no higher."""
    return after is None or (before is not None and after <= before)


def _same_or_dropped(before: str | None, after: str | None) -> bool:
    return after is None or after == before


def _ip_widens(before: str | None, after: str | None) -> bool:
    if after is None:
        return True
    if before is None:
        return False
    inner, outer = ipaddress.ip_network(before), ipaddress.ip_network(after)
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def _actor_prefix_widens(before: EventFilter, after: EventFilter) -> bool:
    """Every actor `before` lets through, `after`'s `actor_prefix` does: none
    asked, or a start, as given, of `before`'s prefix or exact `actor` (an id
    or email that is or starts with it starts with `after`'s, in any case
    for the email)."""
    if after.actor_prefix is None:
        return True
    start = before.actor_prefix if before.actor_prefix is not None else before.actor
    return start is not None and start.startswith(after.actor_prefix)


def _domain_widens(before: EventFilter, after: EventFilter) -> bool:
    """Every actor email domain `before` lets through, `after` does: none
    asked, the same in any case, or `*.` a domain `before`'s is or is under."""
    if after.actor_email_domain is None:
        return True
    if before.actor_email_domain is None:
        return False
    inner, outer = email_key(before.actor_email_domain), email_key(after.actor_email_domain)
    return inner == outer or (
        outer.startswith("*.") and ("." + inner.removeprefix("*.")).endswith(outer[1:])
    )


def _agent_widens(before: str | None, after: str | None) -> bool:
    """Every user agent `before` lets through, `after` does: none asked, or
    a part of `before`'s text (an agent containing `python-requests`
    contains `python`). Both as EventFilter keeps them, A-Z lowered."""
    return after is None or (before is not None and after in before)


def _actions_widen(before: EventFilter, after: EventFilter) -> bool:
    """Every action `before` lets through, `after` lets through."""
    if not (after.actions or after.action_prefixes or after.action_suffixes):
        return True
    if not (before.actions or before.action_prefixes or before.action_suffixes):
        return False
    return (
        all(
            action in after.actions
            or action.startswith(after.action_prefixes)
            or action.endswith(after.action_suffixes)
            for action in before.actions
        )
        and all(prefix.startswith(after.action_prefixes) for prefix in before.action_prefixes)
        and all(suffix.endswith(after.action_suffixes) for suffix in before.action_suffixes)
    )


def _exclusions_widen(before: EventFilter, after: EventFilter) -> bool:
    """Every action `after` leaves out (`exclude_actions`), `before` left out."""
    return (
        all(before.excludes(action) for action in after.excluded_actions)
        and all(prefix.startswith(before.excluded_prefixes) for prefix in after.excluded_prefixes)
        and all(suffix.endswith(before.excluded_suffixes) for suffix in after.excluded_suffixes)
    )


def sink_weakenings(
    before: SinkDefinition,
    after: SinkDefinition,
    *,
    before_filter: EventFilter,
    after_filter: EventFilter,
) -> list[str]:
    """Why changing sink `before` into `after` weakens it: `paused` (it
    delivers nothing until resumed), `filter_narrowed` (`filter_narrows`),
    `destination_moved` (its kind, URL or index changed: the events go where
    the SIEM that read them does not look), and, of the same kind, `<field>_changed`
    for each label its saved searches find the events by that changed as sent
    (Splunk's `source` and `sourcetype`, Datadog's `service`; `tags_changed`
    when a Datadog tag is taken away). A new name, a secret, a tag added, or a
    default written out does not weaken it; a new format does only where it
    changes a default sourcetype."""
    reasons = []
    if after.paused and not before.paused:
        reasons.append("paused")
    if filter_narrows(before_filter, after_filter):
        reasons.append("filter_narrowed")
    if _where(before) != _where(after):
        reasons.append("destination_moved")
    if before.kind == after.kind:
        old, new = _labels(before), _labels(after)
        reasons.extend(f"{name}_changed" for name in old if old[name] != new[name])
        if not _tags(before) <= _tags(after):
            reasons.append("tags_changed")
    return reasons


def _where(sink: SinkDefinition) -> tuple[str, str, str, str]:
    """Where `sink`'s events go: its kind, URL (as sent, a default when
    empty), index, and the service a PagerDuty routing key pages (ADR 0131):
    another key sends the on-call's pages elsewhere, as another URL would,
    where another token or API key reaches the same destination; an email
    sink's recipients, likewise (ADR 0133)."""
    destination = sink.destination
    default = DEFAULT_URLS.get(sink.kind, "")
    service = destination.get("routing_key") or "" if sink.kind == "pagerduty" else ""
    if sink.kind == "email":  # whose inboxes (ADR 0133)
        service = ",".join(sorted(a.lower() for a in destination.get("to_addresses") or []))
    url = destination_url(sink.kind, destination) or default
    return sink.kind, url, destination.get("index") or "", service


def _labels(sink: SinkDefinition) -> dict[str, str]:
    """The labels a SIEM's saved searches find `sink`'s events by, as the
    forwarder sends them (forward/destinations.py: a default when empty)."""
    destination = sink.destination
    if sink.kind == "splunk_hec":
        default_type = "ocsf" if sink.format == "ocsf" else "sealtrail:audit"
        return {
            "source": destination.get("source") or "sealtrail",
            "sourcetype": destination.get("sourcetype") or default_type,
        }
    if sink.kind == "datadog_logs":
        return {"service": destination.get("service") or "sealtrail"}
    return {}


def _tags(sink: SinkDefinition) -> set[str]:
    """A Datadog sink's tags (`env:prod,team:security`); a search finds an
    entry by any of them, so only one taken away loses it."""
    tags = (sink.destination.get("tags") or "") if sink.kind == "datadog_logs" else ""
    return {tag.strip() for tag in tags.split(",") if tag.strip()}


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """What of an alert rule decides whether, how loudly and where it fires."""

    condition: Condition
    severity: str
    sink_ids: tuple[str, ...]
    disabled: bool


def rule_weakenings(before: RuleSettings, after: RuleSettings) -> list[str]:
    """Why changing alert rule `before` into `after` weakens it: `disabled`,
    `condition_narrowed` (`condition_narrows`), `origins_forgotten` (a new-IP
    or new-country rule's condition changed: it forgets where each actor was
    seen, and stays silent at each one's next address or country),
    `severity_lowered` (its alerts fall below a SIEM's severity rule),
    `sinks_removed` (its alerts no longer reach a sink). A new name, or a
    rule widened, raised or given sinks, does not weaken it."""
    reasons = []
    if after.disabled and not before.disabled:
        reasons.append("disabled")
    if condition_narrows(before.condition, after.condition):
        reasons.append("condition_narrowed")
    if before.condition.kind in NEW_ORIGIN_KINDS and _as_compared(before.condition) != (
        _as_compared(after.condition)
    ):
        reasons.append("origins_forgotten")
    if _SEVERITY_RANKS[after.severity] < _SEVERITY_RANKS[before.severity]:
        reasons.append("severity_lowered")
    if set(before.sink_ids) - set(after.sink_ids):
        reasons.append("sinks_removed")
    return reasons


def _as_compared(condition: Condition) -> Condition:
    """`condition` with `country: DE` as `countries: [DE]` (and so for resource
    types): the same events, which a new-origin rule keeps what it learned of."""
    f = condition.filter
    return replace(
        condition,
        filter=replace(
            f,
            country=None,
            countries=f.any_country(),
            resource_type=None,
            resource_types=f.any_resource_type(),
        ),
    )


def condition_narrows(before: Condition, after: Condition) -> bool:
    """Whether the rule may fire where it fired before no longer: another kind
    of condition, a narrower filter, or a threshold's count raised, window
    shortened or groups made finer, a spike's factor or fewest events raised
    or its window, baseline, grouping or comparison of actor ids changed (another
    average, which may be higher),
    or working hours that grow (earlier start, later end, more working days,
    another time zone). An absence rule's is the other way about: a wider
    filter (more events keep it quiet: another source's may) or a longer
    window."""
    if before.kind != after.kind:
        return True
    if before.kind == "absence":
        return after.window_seconds > before.window_seconds or filter_narrows(
            after.filter, before.filter
        )
    if filter_narrows(before.filter, after.filter):
        return True
    if before.kind == "threshold":
        return (
            after.count > before.count
            or after.window_seconds < before.window_seconds
            or (after.group_by != before.group_by and after.group_by != _GROUP_COARSE)
            or (after.exact_actor_ids and not before.exact_actor_ids)  # groups made finer
        )
    if before.kind == "spike":
        return (
            after.factor > before.factor
            or after.min_count > before.min_count
            # Grouped otherwise: a group's burst may drown in the tenant's
            # traffic, or the tenant's in many small groups.
            or after.group_by != before.group_by
            # An actor's ids told apart, or made one: either average may be higher.
            or after.exact_actor_ids != before.exact_actor_ids
            or after.window_seconds != before.window_seconds
            or after.baseline_windows != before.baseline_windows
        )
    if before.kind == "off_hours":
        return (
            after.time_zone != before.time_zone
            or after.start_hour < before.start_hour
            or after.end_hour > before.end_hour
            or not set(after.working_days) <= set(before.working_days)
        )
    return False


@dataclass(frozen=True, slots=True)
class Shortening:
    """Events a policy change keeps less long: which (`events`, as the policy
    names their rule) and their days before and after (0: forever)."""

    events: str
    before_days: int
    after_days: int

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "before_days": self.before_days,
            "after_days": self.after_days,
        }


def retention_shortenings(before: RetentionPolicy, after: RetentionPolicy) -> list[Shortening]:
    """The events `after` keeps less long than `before` (both as the purge
    applies them: `RetentionPolicy.within` the operator's limits), by the
    rule that keeps them: a default, category or action-prefix limit made
    shorter, forever made a number of days, a rule removed whose events fall
    back to a shorter one (a longer prefix's, their category's, the default).

    Exact: an event's limit depends only on which of the policies' action
    prefixes its action starts with, and on its category; so one action per
    prefix (the prefix itself, which no longer prefix matches) and none, each
    with every category and none, stand for every event there is."""
    prefixes = sorted(
        {r.action_prefix for p in (before, after) for r in p.rules if r.action_prefix}
    )
    ruled = {r.category for p in (before, after) for r in p.rules if r.category}
    categories: list[str | None] = [*sorted(CATEGORIES.values()), None]
    found: list[Shortening] = []
    for action in ["", *prefixes]:
        pairs = {c: (_days(before, action, c), _days(after, action, c)) for c in categories}
        shorter = {c: pair for c, pair in pairs.items() if _shorter(*pair)}
        if not shorter:
            continue
        selector = f"action:{action}*" if action else ""
        if action and len(set(pairs.values())) == 1:
            found.append(Shortening(selector, *pairs[None]))
            continue
        for category, (old, new) in shorter.items():
            name = f"category:{category}" if category in ruled else "default"
            events = f"{selector} ({name})" if selector else name
            if all(s.events != events for s in found):  # "default" stands for many categories
                found.append(Shortening(events, old, new))
    return found


def limit_shortenings(
    policy: RetentionPolicy, before: RetentionLimits, after: RetentionLimits
) -> list[Shortening]:
    """The events the tenant's stored `policy` keeps less long once the
    operator's limits go from `before` to `after`: a ceiling set or lowered
    below what the policy keeps (forever included), judged as a policy change
    is, on the policy as the purge applies it under each. A ceiling lowered
    but still above every limit of the policy shortens nothing: what is kept
    is the same, and a later policy that keeps longer is refused, not
    shortened."""
    return retention_shortenings(policy.within(before), policy.within(after))


def _days(policy: RetentionPolicy, action: str, category: str | None) -> int:
    """How long `policy` keeps an event of `action` and `category`: its
    longest matching action prefix's limit, else its category's, else the
    default (domain/retention.py)."""
    matching = [r for r in policy.rules if r.action_prefix and action.startswith(r.action_prefix)]
    if matching:
        return max(matching, key=lambda r: len(r.action_prefix or "")).days
    for rule in policy.rules:
        if rule.category is not None and rule.category == category:
            return rule.days
    return policy.default_days


def _shorter(before: int, after: int) -> bool:
    """Whether a limit of `after` days keeps less than one of `before` (0: forever)."""
    return after != 0 and (before == 0 or after < before)
