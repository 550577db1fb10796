"""Which endpoints fail or are slow, followed from a count to its events:
EventFilter.http_routes (ADR 0136) finds the events whose API request was
served by any of the routes given, each exactly as recorded (no prefix, no
case folding), wherever filters go: Query and its pages, CountEvents, a live
stream, an export's signed filter, sinks and alert rules, the CLI's
`--http-route` (helper-434)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

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
    violations_refused,
)
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_export_check import refused_when_told
from tests.integration.test_http_request_fields import _call
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

ONE = "/v1/templates/{id}"
# (description, route, status code): "" and 0 for none; oldest first.
CALLS = [
    ("list", "/v1/templates", 200),
    ("read", ONE, 200),
    ("gone", ONE, 404),
    ("down", ONE, 503),
    ("upper", "/V1/Templates/{id}", 503),  # another route: no case folding
    ("trailing", ONE + "/", 503),  # another route: no slash dropped
    ("upload", "/v1/uploads", 503),
    ("cli", "", 0),  # no request
]


@pytest.fixture
def calls(client: AuditClient) -> AuditClient:
    client.record_batch(
        [_call(description=name, http_route=route, http_status_code=code)
         for name, route, code in CALLS]
    )  # fmt: skip
    return client


@pytest.mark.parametrize(
    ("routes", "found"),
    [
        ([ONE], ["read", "gone", "down"]),
        ([ONE, "/v1/uploads", ONE], ["read", "gone", "down", "upload"]),  # a duplicate
        (["/V1/Templates/{id}"], ["upper"]),
        (["/v1/templates"], ["list"]),  # no prefix: not its subroutes
        (["/v1"], []),
        (["/v1/templates/7"], []),  # the template is recorded, not the path
        ([], [name for name, _, _ in CALLS]),  # an event without a route too
    ],
)
def test_events_of_the_routes_asked_exactly(
    calls: AuditClient, routes: list[str], found: list[str]
) -> None:
    event_filter = build_filter(actions="template.read", http_routes=routes)
    assert descriptions_found(calls, event_filter) == found
    assert calls.count_events(event_filter).total == len(found)


def test_a_failing_endpoint_is_followed_from_its_count_to_its_events(
    calls: AuditClient,
) -> None:
    """The count says which route fails most; its key, given back as a
    route, finds exactly the events it counted."""
    failing = build_filter(actions="template.read", http_status_classes="5xx")
    groups = calls.count_events(failing, group_by="http_route").groups
    counted = {group.key: group.count for group in groups}
    assert counted == {ONE: 1, "/V1/Templates/{id}": 1, ONE + "/": 1, "/v1/uploads": 1}
    for route, count in counted.items():
        narrowed = build_filter(
            actions="template.read", http_status_classes="5xx", http_routes=route
        )
        assert calls.count_events(narrowed).total == count
        (event,) = calls.query(narrowed)
        assert event.context.http_route == route


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ("", "is empty: give a route, e.g. /v1/users/{id}"),
        ("/v1/x?id=7", "must not hold a query string (`?`): send the path"),
        ("/v1/\x00", "must not contain control characters"),
        ("/v1/x\n", "must not contain control characters"),
        ("/" + "x" * 512, "is 513 characters long; the limit is 512"),
    ],
)
def test_a_route_no_event_can_hold_is_refused_naming_it(
    client: AuditClient, bad: str, said: str
) -> None:
    sent = event_pb2.EventFilter(http_routes=[ONE, bad])
    assert violations_refused(client, sent) == [("filter.http_routes[1]", said)]


def test_more_routes_than_the_limit_are_refused_naming_the_list(client: AuditClient) -> None:
    sent = event_pb2.EventFilter(http_routes=[f"/v1/r{n}" for n in range(101)])
    (violation,) = violations_refused(client, sent)
    assert violation == ("filter.http_routes", "has 101 values; the limit is 100")


def test_pages_of_a_route_follow_on_and_a_token_holds_to_its_routes(
    calls: AuditClient,
) -> None:
    routed = build_filter(actions="template.read", http_routes=[ONE, "/v1/uploads"])
    first = calls.query_page(routed, page_size=3)
    assert [e.description for e in first.events] == ["upload", "down", "gone"]
    rest = calls.query_page(routed, page_size=3, page_token=first.next_page_token)
    assert [e.description for e in rest.events] == ["read"] and not rest.next_page_token
    other = build_filter(actions="template.read", http_routes=[ONE])
    with pytest.raises(Exception, match="page_token"):
        calls.query_page(other, page_size=3, page_token=first.next_page_token)


def test_an_export_of_a_route_is_checked_offline_and_its_filter_held(
    calls: AuditClient, tmp_path: Path
) -> None:
    found, signed, kept = exported_and_checked(
        calls, tmp_path / "route.ndjson", build_filter(actions="template.read", http_routes=ONE)
    )
    assert found == ["read", "gone", "down"]
    said = json.loads(signed)
    assert said["httpRoutes"] == [ONE]
    refused_when_told(
        kept,
        json.dumps(said | {"httpRoutes": ["/V1/Templates/{id}"]}),
        json.dumps({k: v for k, v in said.items() if k != "httpRoutes"}),
    )


def test_a_live_stream_follows_one_route_alone(calls: AuditClient) -> None:
    client = calls  # a log with a checkpoint to start from
    with live_from_now(client, build_filter(http_routes=ONE)) as live:
        client.record(_call(description="other", http_route="/v1/uploads"))
        client.record(_call(description="upper", http_route=ONE.upper()))
        client.record(_call(description="none", http_status_code=503))
        client.record(_call(description="this", http_route=ONE))
        first = next(live)
    assert first.description == "this"


def test_a_sink_given_fewer_or_other_routes_is_narrowed(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(http_routes=[ONE, "/v1/uploads"])))
    assert list(client.get_sink(created.sink.id).filter.http_routes) == [ONE, "/v1/uploads"]

    def update(*routes: str) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(http_routes=routes))

    assert update("/v1/uploads", ONE) == NOT_NARROWED  # the same
    assert update(ONE, "/v1/uploads", "/v1/templates") == NOT_NARROWED  # more
    assert update(ONE) == NARROWED
    assert update() == NOT_NARROWED  # every event
    assert update("/v1/templates") == NARROWED  # a prefix is another route
    assert update("/V1/TEMPLATES/{ID}") == NARROWED


def test_an_alert_rule_of_a_route_and_a_level_fires_on_that_route_alone(
    client: AuditClient,
) -> None:
    """A rule of `min_severity: info` and a route watches that endpoint: the
    route narrows it (not refused as watching every event)."""
    rule = client.create_alert_rule(
        build_alert_rule(
            "templates", "match", filter=build_filter(min_severity="info", http_routes=ONE)
        )
    )
    client.record(_call(http_route="/v1/uploads"))
    client.record(_call(http_route=ONE + "/"))
    fires = client.record(_call(http_route=ONE))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_queries_and_counts_by_route_and_names_a_refused_one(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch(
        [_call(description=name, http_route=route, http_status_code=code)
         for name, route, code in CALLS]
    )  # fmt: skip
    env = cli_env(server, tenant)
    options = ["--action", "template.read", "--http-route", ONE, "--http-route", "/v1/uploads"]
    assert cli_descriptions(env, *options) == ["read", "gone", "down", "upload"]
    answer = json.loads(
        cli_output(env, "stats", "--by", "http-status", "--http-route", ONE, "--json")
    )
    assert answer["total"] == 3
    assert sorted((g["key"], g["count"]) for g in answer["groups"]) == [
        ("200", 1),
        ("404", 1),
        ("503", 1),
    ]
    refused = cli_output(
        env, "query", "--http-route", ONE, "--http-route", "/v1/x?id=7", exit_code=2
    )
    # Quoted as a shell would take it back (`?` is a glob character).
    assert "  --http-route '/v1/x?id=7': must not hold a query string" in refused, refused
    assert "filter." not in refused, refused
