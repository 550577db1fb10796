"""The events of API requests, and those of none: EventFilter.http_route_presence
finds the events that have a `context.http_route` (PRESENCE_PRESENT) or have
none (PRESENCE_ABSENT) wherever filters go: Query and its pages, CountEvents
(a count by route without its `(none)` row), a live stream, an export's
signed filter, the record of a read, sinks and alert rules, the CLI's
`--has-http-route` and `--no-http-route` (helper-557)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import json_format

from sealtrail import AuditClient, build_alert_rule, build_filter
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread
from tests.filter_checks import (
    NARROWED,
    NOT_NARROWED,
    cli_descriptions,
    cli_env,
    cli_output,
    descriptions_found,
    exported_and_checked,
    live_from_now,
    two_pages,
    violations_refused,
)
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_export_check import refused_when_told
from tests.integration.test_http_request_fields import _call
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

ONE = "/v1/templates/{id}"
PRESENT = event_pb2.PRESENCE_PRESENT
ABSENT = event_pb2.PRESENCE_ABSENT
# (description, route, duration in ms): "" and 0 for none; oldest first.
CALLS = [
    ("read", ONE, 12.5),
    ("list", "/v1/templates", 0),  # a request not timed
    ("job", "", 40.0),  # timed, of no request: a worker's run
    ("upload", "/v1/uploads", 900.0),
    ("cli", "", 0),  # neither
]
ROUTED = ["read", "list", "upload"]
UNROUTED = ["job", "cli"]


def _presence(presence: event_pb2.Presence.ValueType, **fields: object) -> event_pb2.EventFilter:
    return event_pb2.EventFilter(actions=["template.read"], http_route_presence=presence, **fields)  # type: ignore[arg-type]


@pytest.fixture
def calls(client: AuditClient) -> AuditClient:
    client.record_batch(
        [_call(description=name, http_route=route, duration_ms=duration)
         for name, route, duration in CALLS]
    )  # fmt: skip
    return client


@pytest.mark.parametrize(
    ("presence", "found"),
    [
        (PRESENT, ROUTED),
        (ABSENT, UNROUTED),
        (event_pb2.PRESENCE_UNSPECIFIED, [name for name, _, _ in CALLS]),
    ],
)
def test_events_with_a_route_or_without_one(
    calls: AuditClient, presence: event_pb2.Presence.ValueType, found: list[str]
) -> None:
    assert descriptions_found(calls, _presence(presence)) == found
    assert calls.count_events(_presence(presence)).total == len(found)


def test_a_count_by_route_of_api_requests_has_no_none_row(calls: AuditClient) -> None:
    """What the README's p95 per route asks: each route's requests, and no
    group of the events without one (the timed job among them)."""
    answer = calls.count_events(_presence(PRESENT), group_by="http_route", measure="duration_p95")
    assert sorted((g.key, g.count, g.measured) for g in answer.groups) == [
        ("/v1/templates", 1, 0),
        (ONE, 1, 1),
        ("/v1/uploads", 1, 1),
    ]
    unrouted = calls.count_events(_presence(ABSENT), group_by="http_route").groups
    assert [(g.key, g.count) for g in unrouted] == [("", 2)]


def test_with_routes_present_says_nothing_more_and_absent_is_refused(
    calls: AuditClient,
) -> None:
    routed = _presence(PRESENT, http_routes=[ONE, "/v1/uploads"])
    assert descriptions_found(calls, routed) == ["read", "upload"]
    refused = violations_refused(calls, _presence(ABSENT, http_routes=[ONE]))
    assert refused == [
        (
            "filter.http_route_presence",
            "absent, with http_routes, matches nothing: set one or the other",
        )
    ]


def test_an_unknown_presence_is_refused_naming_it(client: AuditClient) -> None:
    sent = event_pb2.EventFilter(http_route_presence=7)  # type: ignore[arg-type]
    assert violations_refused(client, sent) == [
        ("filter.http_route_presence", "unknown enum value 7")
    ]


def test_pages_follow_on_and_a_token_holds_to_its_presence(calls: AuditClient) -> None:
    found, token, last = two_pages(calls, _presence(PRESENT), page_size=2)
    assert found == ROUTED and not last
    with pytest.raises(Exception, match="page_token"):
        calls.query_page(_presence(ABSENT), page_size=2, order="oldest", page_token=token)
    with pytest.raises(Exception, match="page_token"):
        calls.query_page(
            _presence(event_pb2.PRESENCE_UNSPECIFIED), page_size=2, order="oldest", page_token=token
        )


def test_a_read_is_recorded_with_the_presence_it_asked(calls: AuditClient) -> None:
    descriptions_found(calls, _presence(ABSENT))
    (record,) = calls.query(build_filter(actions="audit_log.queried"))
    said = json_format.MessageToDict(record.details)["filter"]
    assert said == {"actions": ["template.read"], "httpRoutePresence": "PRESENCE_ABSENT"}


def test_an_export_of_requests_is_checked_offline_and_its_filter_held(
    calls: AuditClient, tmp_path: Path
) -> None:
    found, signed, kept = exported_and_checked(
        calls, tmp_path / "requests.ndjson", _presence(PRESENT)
    )
    assert found == ROUTED
    said = json.loads(signed)
    assert said["httpRoutePresence"] == "PRESENCE_PRESENT"
    refused_when_told(
        kept,
        json.dumps(said | {"httpRoutePresence": "PRESENCE_ABSENT"}),
        json.dumps({k: v for k, v in said.items() if k != "httpRoutePresence"}),
    )


@pytest.mark.parametrize(("presence", "first"), [(PRESENT, "routed"), (ABSENT, "unrouted")])
def test_a_live_stream_follows_requests_or_the_rest(
    calls: AuditClient, presence: event_pb2.Presence.ValueType, first: str
) -> None:
    client = calls  # a log with a checkpoint to start from
    with live_from_now(client, _presence(presence)) as live:
        for name in sorted(("routed", "unrouted"), key=lambda name: name == first):
            client.record(  # the one it does not follow first
                _call(description=name, http_route=ONE if name == "routed" else "", duration_ms=3.0)
            )
        found = next(live)
    assert found.description == first


def test_a_sink_given_a_presence_where_it_had_none_is_narrowed(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(http_routes=ONE)))

    def update(presence: event_pb2.Presence.ValueType, *routes: str) -> tuple[int, list[str]]:
        changed = event_pb2.EventFilter(http_routes=routes, http_route_presence=presence)
        return refiltered(client, created.sink.id, changed)

    assert update(PRESENT, ONE) == NOT_NARROWED  # says nothing more of a route's events
    assert update(PRESENT) == NOT_NARROWED  # every route: more
    assert update(event_pb2.PRESENCE_UNSPECIFIED) == NOT_NARROWED  # every event
    assert update(PRESENT) == NARROWED  # no longer those without a route
    assert update(ABSENT) == NARROWED  # others
    assert update(event_pb2.PRESENCE_UNSPECIFIED) == NOT_NARROWED
    assert update(ABSENT) == NARROWED
    assert update(PRESENT, ONE) == NARROWED


def test_an_alert_rule_of_a_level_and_no_request_fires_on_such_events_alone(
    client: AuditClient,
) -> None:
    """A rule of `min_severity: info` and PRESENCE_ABSENT watches what was
    done outside the API: the presence narrows it (not refused as watching
    every event)."""
    watched = event_pb2.EventFilter(
        min_severity=event_pb2.SEVERITY_INFO, http_route_presence=ABSENT, actions=["template.*"]
    )
    rule = client.create_alert_rule(build_alert_rule("outside the API", "match", filter=watched))
    client.record(_call(http_route=ONE))
    fires = client.record(_call(description="by hand"))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_queries_and_counts_requests_or_the_rest(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch(
        [_call(description=name, http_route=route, duration_ms=duration)
         for name, route, duration in CALLS]
    )  # fmt: skip
    env = cli_env(server, tenant)
    assert cli_descriptions(env, "--action", "template.read", "--has-http-route") == ROUTED
    assert cli_descriptions(env, "--action", "template.read", "--no-http-route") == UNROUTED
    answer = json.loads(
        cli_output(
            env, "stats", "--by", "http-route", "--action", "template.read", "--has-http-route",
            "--json",
        )
    )  # fmt: skip
    assert sorted(g["key"] for g in answer["groups"]) == ["/v1/templates", ONE, "/v1/uploads"]
    refused = cli_output(env, "query", "--no-http-route", "--http-route", ONE, exit_code=2)
    assert "--no-http-route" in refused and "matches nothing" in refused, refused
    assert "filter." not in refused, refused


def test_the_cli_changes_a_sinks_and_a_rules_filter_to_events_of_no_request(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    """`sinks update ID --no-http-route` and `alerts update ID --no-http-route`
    were "nothing to change": a flag given as false was taken for no filter
    option given (helper-569)."""
    client = client_for(tenant, "admin")
    env = cli_env(server, tenant)
    url = ["--url", "https://hooks.slack.com/services/T0/B0/secret"]
    made = cli_output(env, "sinks", "create", "ops", "--kind", "chat", *url, "--action", "s.*")
    sink_id = made.strip().splitlines()[-1]
    cli_output(env, "sinks", "update", sink_id, "--no-http-route")
    assert client.get_sink(sink_id).filter.http_route_presence == event_pb2.PRESENCE_ABSENT
    made = cli_output(env, "alerts", "create", "r", "--kind", "match", "--action", "doc.*")
    rule_id = made.strip().splitlines()[-1]
    cli_output(env, "alerts", "update", rule_id, "--no-http-route")
    [rule] = [rule for rule in client.list_alert_rules() if rule.id == rule_id]
    assert rule.match.filter.http_route_presence == event_pb2.PRESENCE_ABSENT
