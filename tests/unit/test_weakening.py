"""Which changes weaken the audit trail (domain/weakening.py): those after
which some event may be forwarded, alerted on or kept less than before, and
only those (ADR 0066)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from sealtrail_server.domain.alerts import Condition
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.domain.retention import RetentionLimits, RetentionPolicy, RetentionRule
from sealtrail_server.domain.sinks import SinkDefinition
from sealtrail_server.domain.weakening import (
    RuleSettings,
    Shortening,
    condition_narrows,
    filter_narrows,
    limit_shortenings,
    retention_shortenings,
    rule_weakenings,
    sink_weakenings,
)

JAN, FEB = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (EventFilter(actions=("doc.edit",)), EventFilter()),
        (EventFilter(actions=("doc.edit",)), EventFilter(actions=("doc.edit", "doc.share"))),
        (EventFilter(actions=("doc.edit",)), EventFilter(action_prefixes=("doc.",))),
        (EventFilter(action_prefixes=("doc.page.",)), EventFilter(action_prefixes=("doc.",))),
        (EventFilter(actions=("api_key.delete",)), EventFilter(action_suffixes=(".delete",))),
        (
            EventFilter(action_suffixes=(".member.delete",)),
            EventFilter(action_suffixes=(".delete",)),
        ),
        (EventFilter(categories=("security",)), EventFilter(categories=("security", "billing"))),
        (EventFilter(min_severity=3), EventFilter(min_severity=2)),
        (EventFilter(outcomes=("failure",)), EventFilter()),
        (EventFilter(country="KP"), EventFilter()),
        (EventFilter(country="KP", actor="u-1"), EventFilter(country="KP")),
        (EventFilter(ip="203.0.113.0/24"), EventFilter(ip="203.0.0.0/16")),
        (EventFilter(occurred_after=FEB), EventFilter(occurred_after=JAN)),
        (EventFilter(occurred_before=JAN), EventFilter(occurred_before=FEB)),
        (EventFilter(actor="u-1", text="invoice"), EventFilter(actor="u-1")),
        # Fewer actions left out: an exclusion dropped, or one within one before.
        (EventFilter(excluded_prefixes=("audit_log.",)), EventFilter()),
        (
            EventFilter(excluded_prefixes=("audit_log.",)),
            EventFilter(excluded_actions=("audit_log.queried",)),
        ),
        (
            EventFilter(excluded_prefixes=("audit_log.",)),
            EventFilter(excluded_prefixes=("audit_log.export.",)),
        ),
        (
            EventFilter(excluded_suffixes=(".read",)),
            EventFilter(excluded_suffixes=(".key.read",), excluded_actions=("doc.read",)),
        ),
        # An email domain dropped, in another case, or widened to its subdomains.
        (EventFilter(actor_email_domain="contractor.example"), EventFilter()),
        (
            EventFilter(actor_email_domain="Contractor.Example"),
            EventFilter(actor_email_domain="contractor.example"),
        ),
        (
            EventFilter(actor_email_domain="contractor.example"),
            EventFilter(actor_email_domain="*.contractor.example"),
        ),
        (
            EventFilter(actor_email_domain="*.eu.contractor.example"),
            EventFilter(actor_email_domain="*.Contractor.example"),
        ),
        # A user agent's text dropped, or a part of it (any agent holding the whole holds it).
        (EventFilter(user_agent="curl"), EventFilter()),
        (EventFilter(user_agent="python-requests"), EventFilter(user_agent="python")),
        (EventFilter(user_agent="curl/8"), EventFilter(user_agent="curl/8")),
        # Actor types dropped, or more of them.
        (EventFilter(actor_types=("api_key",)), EventFilter()),
        (EventFilter(actor_types=("api_key",)), EventFilter(actor_types=("api_key", "service"))),
        # Status codes dropped, more of them, or a code's class.
        (EventFilter(http_status_classes=("503",)), EventFilter()),
        (EventFilter(http_status_classes=("503",)), EventFilter(http_status_classes=("5xx",))),
        (
            EventFilter(http_status_classes=("429", "5xx")),
            EventFilter(http_status_classes=("429", "4xx", "5xx")),
        ),
        # Routes dropped, or more of them.
        (EventFilter(http_routes=("/v1/x",)), EventFilter()),
        (EventFilter(http_routes=("/v1/x",)), EventFilter(http_routes=("/v1/x", "/v1/y"))),
        # A route's presence dropped, the same, or said by routes before.
        (EventFilter(has_http_route=True), EventFilter()),
        (EventFilter(has_http_route=False), EventFilter(has_http_route=False)),
        (EventFilter(http_routes=("/v1/x",)), EventFilter(has_http_route=True)),
        # A least duration dropped, the same, or lower.
        (EventFilter(min_duration_ms=1000.0), EventFilter()),
        (EventFilter(min_duration_ms=1000.0), EventFilter(min_duration_ms=1000.0)),
        (EventFilter(min_duration_ms=1000.0), EventFilter(min_duration_ms=250.5)),
        # Changed fields dropped, or more of them.
        (EventFilter(changed_fields=("rate_limit",)), EventFilter()),
        (
            EventFilter(changed_fields=("rate_limit",)),
            EventFilter(changed_fields=("limits.rpm", "rate_limit")),
        ),
        # Countries or resource types dropped, or more of them; singular as a list of one.
        (EventFilter(countries=("DE", "FR")), EventFilter()),
        (EventFilter(countries=("DE",)), EventFilter(countries=("DE", "FR"))),
        (EventFilter(country="DE"), EventFilter(countries=("DE", "FR"))),
        (EventFilter(countries=("DE",)), EventFilter(country="DE")),
        (EventFilter(resource_types=("file",)), EventFilter(resource_types=("file", "source"))),
        (EventFilter(resource_type="file"), EventFilter(resource_types=("file", "source"))),
        (EventFilter(resource_types=("file", "source")), EventFilter()),
        # An actor prefix dropped or shorter, or the exact actor made a start of it.
        (EventFilter(actor_prefix="ali"), EventFilter()),
        (EventFilter(actor_prefix="alice"), EventFilter(actor_prefix="ali")),
        (EventFilter(actor_prefix="ali"), EventFilter(actor_prefix="ali")),
        (EventFilter(actor="Alice@Example.com"), EventFilter(actor_prefix="Alice@")),
        # Every severity level let through before, min_severity and severities together.
        (EventFilter(severities=(2,)), EventFilter(severities=(2, 4))),
        (EventFilter(severities=(2,)), EventFilter()),
        (EventFilter(min_severity=2), EventFilter(severities=(2, 3, 4))),
        (EventFilter(severities=(3, 4)), EventFilter(min_severity=3)),
        (EventFilter(severities=(1, 3), min_severity=2), EventFilter(severities=(3,))),
    ],
)
def test_a_filter_that_lets_through_all_it_did_does_not_narrow(
    before: EventFilter, after: EventFilter
) -> None:
    assert not filter_narrows(before, after)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (EventFilter(), EventFilter(actions=("doc.edit",))),
        (EventFilter(actions=("doc.edit", "doc.share")), EventFilter(actions=("doc.edit",))),
        (EventFilter(action_prefixes=("doc.",)), EventFilter(action_prefixes=("doc.page.",))),
        (EventFilter(action_prefixes=("doc.",)), EventFilter(actions=("doc.edit",))),
        (EventFilter(action_suffixes=(".delete",)), EventFilter(action_prefixes=("api_key.",))),
        (EventFilter(categories=("security", "billing")), EventFilter(categories=("security",))),
        (EventFilter(), EventFilter(categories=("security",))),
        (EventFilter(min_severity=2), EventFilter(min_severity=3)),
        (EventFilter(actor="u-1"), EventFilter(actor="u-2")),  # another: nothing proves it wider
        (EventFilter(), EventFilter(country="KP")),
        (EventFilter(country="KP"), EventFilter(country="IR")),
        (EventFilter(ip="203.0.0.0/16"), EventFilter(ip="203.0.113.0/24")),
        (EventFilter(ip="203.0.113.0/24"), EventFilter(ip="2001:db8::/32")),
        (EventFilter(occurred_after=JAN), EventFilter(occurred_after=FEB)),
        (EventFilter(), EventFilter(occurred_before=FEB)),
        (EventFilter(), EventFilter(recorded_by="0190a2b4-0000-7000-8000-000000000000")),
        # More actions left out, or others: an exclusion within one proves nothing wider.
        (EventFilter(), EventFilter(excluded_actions=("audit_log.queried",))),
        (
            EventFilter(excluded_actions=("audit_log.queried",)),
            EventFilter(excluded_prefixes=("audit_log.",)),
        ),
        (EventFilter(excluded_suffixes=(".key.read",)), EventFilter(excluded_suffixes=(".read",))),
        (EventFilter(excluded_prefixes=("doc.",)), EventFilter(excluded_suffixes=(".read",))),
        # An email domain asked, another, or subdomains no longer: a look-alike is no subdomain.
        (EventFilter(), EventFilter(actor_email_domain="contractor.example")),
        (
            EventFilter(actor_email_domain="*.contractor.example"),
            EventFilter(actor_email_domain="contractor.example"),
        ),
        (
            EventFilter(actor_email_domain="evilcontractor.example"),
            EventFilter(actor_email_domain="*.contractor.example"),
        ),
        (
            EventFilter(actor_email_domain="contractor.example"),
            EventFilter(actor_email_domain="*.eu.contractor.example"),
        ),
        # A user agent asked, another, or more of it.
        (EventFilter(), EventFilter(user_agent="curl")),
        (EventFilter(user_agent="curl"), EventFilter(user_agent="terraform")),
        (EventFilter(user_agent="python"), EventFilter(user_agent="python-requests")),
        # Actor types asked, fewer, or others.
        (EventFilter(), EventFilter(actor_types=("user",))),
        (EventFilter(actor_types=("api_key", "service")), EventFilter(actor_types=("service",))),
        (EventFilter(actor_types=("api_key",)), EventFilter(actor_types=("system",))),
        # Status codes asked, fewer, a code of a class taken before, or others.
        (EventFilter(), EventFilter(http_status_classes=("5xx",))),
        (EventFilter(http_status_classes=("5xx",)), EventFilter(http_status_classes=("503",))),
        (
            EventFilter(http_status_classes=("404", "5xx")),
            EventFilter(http_status_classes=("5xx",)),
        ),
        (EventFilter(http_status_classes=("4xx",)), EventFilter(http_status_classes=("5xx",))),
        # Routes asked where none were, fewer, or others (exactly: no
        # prefix covers another route, no case folded).
        (EventFilter(), EventFilter(http_routes=("/v1/x",))),
        (EventFilter(http_routes=("/v1/x", "/v1/y")), EventFilter(http_routes=("/v1/y",))),
        (EventFilter(http_routes=("/v1/x/y",)), EventFilter(http_routes=("/v1/x",))),
        (EventFilter(http_routes=("/v1/x",)), EventFilter(http_routes=("/V1/X",))),
        # A route's presence asked where none was, or the other one.
        (EventFilter(), EventFilter(has_http_route=True)),
        (EventFilter(), EventFilter(has_http_route=False)),
        (EventFilter(has_http_route=True), EventFilter(has_http_route=False)),
        (EventFilter(has_http_route=False), EventFilter(has_http_route=True)),
        (EventFilter(has_http_route=True), EventFilter(http_routes=("/v1/x",))),
        # A least duration asked where none was, or higher.
        (EventFilter(), EventFilter(min_duration_ms=0.5)),
        (EventFilter(min_duration_ms=1000.0), EventFilter(min_duration_ms=1000.5)),
        # Changed fields asked where none were, fewer, others, or a path's
        # first part for the path (no path is resolved: `limits` is not
        # `limits.rpm`).
        (EventFilter(), EventFilter(changed_fields=("rate_limit",))),
        (
            EventFilter(changed_fields=("limits.rpm", "rate_limit")),
            EventFilter(changed_fields=("rate_limit",)),
        ),
        (EventFilter(changed_fields=("role",)), EventFilter(changed_fields=("Role",))),
        (EventFilter(changed_fields=("limits.rpm",)), EventFilter(changed_fields=("limits",))),
        # Countries or resource types asked where none were, fewer, or others.
        (EventFilter(), EventFilter(countries=("DE", "FR"))),
        (EventFilter(countries=("DE", "FR")), EventFilter(countries=("DE",))),
        (EventFilter(countries=("DE", "FR")), EventFilter(country="FR")),
        (EventFilter(country="DE"), EventFilter(countries=("FR", "IT"))),
        (EventFilter(), EventFilter(resource_types=("file",))),
        (EventFilter(resource_types=("file", "source")), EventFilter(resource_types=("file",))),
        (EventFilter(resource_types=("file", "source")), EventFilter(resource_type="source")),
        # An actor prefix asked, longer, in other case (ids are compared as
        # given), or the exact actor asked for a prefix.
        (EventFilter(), EventFilter(actor_prefix="ali")),
        (EventFilter(actor_prefix="ali"), EventFilter(actor_prefix="alice")),
        (EventFilter(actor_prefix="ali"), EventFilter(actor_prefix="Ali")),
        (EventFilter(actor="alice"), EventFilter(actor_prefix="Ali")),
        (EventFilter(actor_prefix="ali"), EventFilter(actor="alice")),
        # Fewer severity levels let through.
        (EventFilter(), EventFilter(severities=(1, 2, 3))),
        (EventFilter(severities=(2, 4)), EventFilter(severities=(2,))),
        (EventFilter(min_severity=2), EventFilter(severities=(2, 4))),
        (EventFilter(severities=(1, 4)), EventFilter(severities=(1, 4), min_severity=2)),
    ],
)
def test_a_filter_that_may_let_through_less_narrows(
    before: EventFilter, after: EventFilter
) -> None:
    assert filter_narrows(before, after)


def _sink(**changes: Any) -> SinkDefinition:
    sink = SinkDefinition(
        name="siem",
        kind="splunk_hec",
        format="sealtrail_json",
        filter={},
        destination={"url": "https://hec.example/services", "token": "t1", "index": "audit"},
        paused=False,
    )
    return replace(sink, **changes)


def test_a_sink_weakens_paused_narrowed_or_moved_not_renamed_reformatted_or_rotated() -> None:
    narrow, wide = EventFilter(actions=("doc.edit",)), EventFilter()

    def weakenings(after: SinkDefinition, after_filter: EventFilter = wide) -> list[str]:
        return sink_weakenings(_sink(), after, before_filter=wide, after_filter=after_filter)

    assert weakenings(_sink(name="siem 2")) == []
    ocsf = {**_sink().destination, "sourcetype": "sealtrail:audit"}
    assert (
        sink_weakenings(
            _sink(destination=ocsf),
            _sink(destination=ocsf, format="ocsf"),
            before_filter=wide,
            after_filter=wide,
        )
        == []
    )  # its sourcetype set: a new format moves nothing
    rotated = {"url": "https://hec.example/services", "token": "t2", "index": "audit"}
    assert weakenings(_sink(destination=rotated)) == []
    assert weakenings(_sink(paused=True)) == ["paused"]
    assert weakenings(_sink(), narrow) == ["filter_narrowed"]
    moved = {"url": "https://hec.example/services", "token": "t1", "index": "scratch"}
    assert weakenings(_sink(destination=moved)) == ["destination_moved"]
    assert weakenings(_sink(kind="webhook", destination={"url": "https://hec.example/services"}))
    assert (
        sink_weakenings(_sink(paused=True), _sink(), before_filter=narrow, after_filter=wide) == []
    )  # resumed and widened: stronger


def test_a_sink_relabelled_out_of_saved_searches_weakens_naming_the_field() -> None:
    """Splunk's source and sourcetype, Datadog's service and tags are what
    saved searches look for: changed (as sent, defaults applied), the events
    leave them. A tag added, or a default written out, loses nothing."""
    wide = EventFilter()

    def weakenings(before: SinkDefinition, after: SinkDefinition) -> list[str]:
        return sink_weakenings(before, after, before_filter=wide, after_filter=wide)

    hec = _sink()
    labelled = {**hec.destination, "source": "sealtrail", "sourcetype": "sealtrail:audit"}
    assert weakenings(hec, _sink(destination=labelled)) == []
    assert weakenings(hec, _sink(destination={**labelled, "sourcetype": "ocsf"})) == [
        "sourcetype_changed"
    ]
    assert weakenings(hec, _sink(destination={**labelled, "source": "app", "index": "x"})) == [
        "destination_moved",
        "source_changed",
    ]
    assert weakenings(hec, _sink(format="ocsf")) == ["sourcetype_changed"]  # its default
    dd = _sink(
        kind="datadog_logs",
        destination={"api_key": "k", "service": "sealtrail", "tags": "env:prod,team:sec"},
    )
    default_site = {**dd.destination, "url": "https://http-intake.logs.datadoghq.com"}
    assert weakenings(dd, _sink(kind="datadog_logs", destination=default_site)) == []
    eu = {**dd.destination, "url": "https://http-intake.logs.datadoghq.eu"}
    assert weakenings(dd, _sink(kind="datadog_logs", destination=eu)) == ["destination_moved"]
    more = {**dd.destination, "service": "", "tags": "team:sec , env:prod,x:y"}
    assert weakenings(dd, _sink(kind="datadog_logs", destination=more)) == []
    fewer = {**dd.destination, "service": "audit", "tags": "env:prod"}
    assert weakenings(dd, _sink(kind="datadog_logs", destination=fewer)) == [
        "service_changed",
        "tags_changed",
    ]
    # Another kind is a move; its labels are not compared.
    assert weakenings(hec, dd) == ["destination_moved"]


def test_a_pager_given_another_routing_key_is_moved_to_another_service() -> None:
    """A PagerDuty sink's routing key names the service paged (ADR 0131):
    another one sends the on-call's pages elsewhere, as a moved URL would, so
    the change is a warning; a URL written out as its default moves nothing."""
    wide = EventFilter()
    pager = _sink(kind="pagerduty", destination={"routing_key": "a" * 32})

    def weakenings(after: dict[str, Any]) -> list[str]:
        moved = _sink(kind="pagerduty", destination=after)
        return sink_weakenings(pager, moved, before_filter=wide, after_filter=wide)

    assert weakenings({"routing_key": "b" * 32}) == ["destination_moved"]
    assert weakenings({"routing_key": "a" * 32, "url": "https://events.pagerduty.com"}) == []
    assert weakenings({"routing_key": "a" * 32, "source": "elsewhere"}) == []


def _rule(condition: Condition, **changes: Any) -> RuleSettings:
    rule = RuleSettings(condition=condition, severity="error", sink_ids=("s1",), disabled=False)
    return replace(rule, **changes)


THRESHOLD = Condition("threshold", EventFilter(actions=("user.login",)), count=5, window_seconds=60)
OFF_HOURS = Condition(
    "off_hours", EventFilter(action_prefixes=("secret.",)), start_hour=8, end_hour=18
)


@pytest.mark.parametrize(
    ("after", "narrows"),
    [
        (replace(THRESHOLD, count=4, window_seconds=120), False),
        (replace(THRESHOLD, count=6), True),
        (replace(THRESHOLD, window_seconds=59), True),
        (replace(THRESHOLD, group_by="actor"), True),
        (replace(THRESHOLD, filter=EventFilter(action_prefixes=("user.",))), False),
        (Condition("match", THRESHOLD.filter), True),  # another kind: not comparable
    ],
)
def test_a_threshold_that_may_fire_less_narrows(after: Condition, narrows: bool) -> None:
    assert condition_narrows(THRESHOLD, after) is narrows
    assert not condition_narrows(replace(THRESHOLD, group_by="ip"), replace(THRESHOLD))
    # Actor ids compared exactly, not as they read: `Admin` and `admin` apart (ADR 0110).
    by_actor = replace(THRESHOLD, group_by="actor")
    assert condition_narrows(by_actor, replace(by_actor, exact_actor_ids=True))
    assert not condition_narrows(replace(by_actor, exact_actor_ids=True), by_actor)


@pytest.mark.parametrize(
    ("after", "narrows"),
    [
        (replace(OFF_HOURS, start_hour=9, end_hour=17, working_days=(1, 2, 3)), False),
        (replace(OFF_HOURS, start_hour=7), True),
        (replace(OFF_HOURS, end_hour=19), True),
        (replace(OFF_HOURS, working_days=(1, 2, 3, 4, 5, 6)), True),
        (replace(OFF_HOURS, time_zone="Europe/Paris"), True),
    ],
)
def test_working_hours_that_grow_narrow_an_off_hours_rule(after: Condition, narrows: bool) -> None:
    assert condition_narrows(OFF_HOURS, after) is narrows


def test_a_rule_weakens_disabled_narrowed_quieter_or_routed_to_fewer_sinks() -> None:
    rule = _rule(THRESHOLD)
    assert rule_weakenings(rule, _rule(THRESHOLD, severity="critical", sink_ids=("s1", "s2"))) == []
    assert rule_weakenings(rule, _rule(THRESHOLD, disabled=True)) == ["disabled"]
    assert rule_weakenings(rule, _rule(THRESHOLD, severity="warning")) == ["severity_lowered"]
    assert rule_weakenings(rule, _rule(THRESHOLD, sink_ids=("s2",))) == ["sinks_removed"]
    assert rule_weakenings(_rule(THRESHOLD, disabled=True), rule) == []
    new_ip = Condition("new_ip", EventFilter())
    wider = _rule(replace(new_ip, filter=EventFilter()))
    assert rule_weakenings(_rule(new_ip), wider) == []
    learning_again = _rule(Condition("new_ip", EventFilter(categories=("authentication",))))
    assert rule_weakenings(learning_again, _rule(new_ip)) == ["origins_forgotten"]


def _policy(default: int, *rules: RetentionRule) -> RetentionPolicy:
    return RetentionPolicy(default, rules)


def test_a_period_made_shorter_or_a_rule_removed_to_a_shorter_one_is_found() -> None:
    security = RetentionRule(3650, category="security")
    billing = RetentionRule(0, action_prefix="billing.")
    assert retention_shortenings(_policy(0), _policy(365)) == [Shortening("default", 0, 365)]
    assert retention_shortenings(_policy(365), _policy(0)) == []
    assert retention_shortenings(_policy(365), _policy(730, security, billing)) == []
    assert retention_shortenings(_policy(730, security), _policy(730)) == [
        Shortening("category:security", 3650, 730)
    ]
    assert retention_shortenings(_policy(730, billing), _policy(730)) == [
        Shortening("action:billing.*", 0, 730)
    ]


def test_a_removed_prefix_whose_events_fall_back_by_category_names_each() -> None:
    """Removed, `billing.*` events fall back to their category's rule, or the default."""
    billing = RetentionRule(0, action_prefix="billing.")
    auth = RetentionRule(90, category="authentication")
    found = retention_shortenings(_policy(400, billing, auth), _policy(400, auth))
    assert found == [
        Shortening("action:billing.* (default)", 0, 400),
        Shortening("action:billing.* (category:authentication)", 0, 90),
    ]


def test_a_longer_prefix_removed_falls_back_to_the_shorter_prefix() -> None:
    rag = RetentionRule(30, action_prefix="rag.")
    rag_query = RetentionRule(365, action_prefix="rag.query.")
    assert retention_shortenings(_policy(0, rag, rag_query), _policy(0, rag)) == [
        Shortening("action:rag.query.*", 365, 30)
    ]
    assert retention_shortenings(_policy(0, rag), _policy(0, rag, rag_query)) == []


def test_under_the_deployments_floor_two_limits_are_equally_long() -> None:
    floor = RetentionLimits(30)
    assert retention_shortenings(_policy(10).within(floor), _policy(20).within(floor)) == []
    assert retention_shortenings(_policy(10).within(floor), _policy(0).within(floor)) == []


def test_a_ceiling_shortens_what_a_policy_keeps_longer_and_nothing_else() -> None:
    """Set by the operator over a policy of forever with a 30-day rule: the
    default and a year-long category are kept less long; clearing it, or a
    lower ceiling above every limit of a policy, shortens nothing."""
    policy = _policy(
        0,
        RetentionRule(30, action_prefix="rag."),
        RetentionRule(365, category="authentication"),
    )
    none, plan = RetentionLimits(), RetentionLimits(0, 90)
    assert limit_shortenings(policy, none, plan) == [
        Shortening("default", 0, 90),
        Shortening("category:authentication", 365, 90),
    ]
    assert limit_shortenings(policy, plan, none) == []
    short = _policy(30)
    assert limit_shortenings(short, RetentionLimits(0, 365), plan) == []


ABSENCE = Condition("absence", EventFilter(actor="billing"), window_seconds=900)


@pytest.mark.parametrize(
    ("after", "narrows"),
    [
        # Fires later, or never: a longer silence; more events keep it quiet
        # (another source's may).
        (replace(ABSENCE, window_seconds=3600), True),
        (replace(ABSENCE, filter=EventFilter()), True),
        # Fires sooner, or more often: a shorter silence, fewer events expected.
        (replace(ABSENCE, window_seconds=600), False),
        (replace(ABSENCE, filter=EventFilter(actor="billing", actions=("heartbeat",))), False),
    ],
)
def test_an_absence_rule_that_may_fire_later_narrows(after: Condition, narrows: bool) -> None:
    assert condition_narrows(ABSENCE, after) is narrows
