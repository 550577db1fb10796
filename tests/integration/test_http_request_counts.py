"""Which endpoints fail or are slow (ADR 0136): CountEvents by the API
request's route and status code, EventFilter.min_duration_ms (the requests
that took at least so many milliseconds) wherever filters go, and the CLI's
`record --http-*`, `query`'s request column and `stats --by http-route`
(helper-431)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    build_alert_rule,
    build_filter,
    check_export,
)
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread
from tests.filter_checks import descriptions_found, live_from_now
from tests.integration.test_alerting import the_only_alert, wait_for_alerts
from tests.integration.test_export_check import KEY, refused_when_told
from tests.integration.test_http_request_fields import ROUTE, _call
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# (description, route, status code, duration in ms): 0 for none.
REQUESTS = [
    ("list", "/v1/templates", 200, 12),
    ("read", "/v1/templates/{id}", 200, 0.25),
    ("gone", "/v1/templates/{id}", 404, 999.999),
    ("slow", "/v1/templates/{id}", 503, 1000),
    ("upload", "/v1/uploads", 503, 2500.5),
    ("cli", "", 0, 0),  # no request
]


@pytest.fixture
def requests(client: AuditClient) -> AuditClient:
    client.record_batch(
        [
            _call(description=name, http_route=route, http_status_code=code, duration_ms=ms)
            for name, route, code, ms in REQUESTS
        ]
    )
    return client


def _groups(
    client: AuditClient, event_filter: event_pb2.EventFilter, **count: Any
) -> list[tuple[str, int]]:
    """The (key, count) pairs of a count's groups, in the answer's order."""
    return [(g.key, g.count) for g in client.count_events(event_filter, **count).groups]


def test_counts_by_route_and_by_status_the_ones_without_under_empty(
    requests: AuditClient,
) -> None:
    calls = build_filter(actions="template.read")
    assert requests.count_events(calls, group_by="http_route").total == len(REQUESTS)
    assert _groups(requests, calls, group_by="http_route") == [
        ("/v1/templates/{id}", 3),
        ("", 1),
        ("/v1/templates", 1),
        ("/v1/uploads", 1),
    ]
    assert _groups(requests, calls, group_by="http_status") == [
        ("200", 2),
        ("503", 2),
        ("", 1),
        ("404", 1),
    ]
    failing = build_filter(actions="template.read", http_status_classes="5xx")
    assert _groups(requests, failing, group_by="http_route") == [
        ("/v1/templates/{id}", 1),
        ("/v1/uploads", 1),
    ]
    slow = build_filter(actions="template.read", min_duration_ms=1000)
    assert _groups(requests, slow, group_by="http_route", limit=1) == [("/v1/templates/{id}", 1)]


@pytest.mark.parametrize(
    ("least", "found"),
    [
        (1000.0, ["slow", "upload"]),
        (999.999, ["gone", "slow", "upload"]),  # exactly the least is taken
        (0.25, ["list", "read", "gone", "slow", "upload"]),  # never one without a duration
        (12.0, ["list", "gone", "slow", "upload"]),
        (2500.75, []),
        (0.0, [name for name, *_ in REQUESTS]),  # unset: every event
    ],
)
def test_events_that_took_at_least_the_least(
    requests: AuditClient, least: float, found: list[str]
) -> None:
    event_filter = build_filter(actions="template.read", min_duration_ms=least)
    assert descriptions_found(requests, event_filter) == found
    assert requests.count_events(event_filter).total == len(found)


@pytest.mark.parametrize("bad", [-1.0, 86_400_000.0, math.inf, math.nan, 1e300])
def test_a_least_duration_out_of_range_is_refused_naming_it(
    client: AuditClient, bad: float
) -> None:
    sent = event_pb2.EventFilter(min_duration_ms=bad)
    for call in (lambda: list(client.query(sent)), lambda: client.count_events(sent)):
        with pytest.raises(InvalidArgumentError) as caught:
            call()
        assert [field for field, _ in caught.value.field_violations] == ["filter.min_duration_ms"]


def test_pages_of_slow_requests(requests: AuditClient) -> None:
    slow = build_filter(actions="template.read", min_duration_ms=999.999)
    first = requests.query_page(slow, page_size=2)
    assert [e.description for e in first.events] == ["upload", "slow"]
    rest = requests.query_page(slow, page_size=2, page_token=first.next_page_token)
    assert [e.description for e in rest.events] == ["gone"] and not rest.next_page_token


def test_an_export_of_slow_requests_is_checked_offline_and_its_filter_held(
    requests: AuditClient, tmp_path: Path
) -> None:
    path = tmp_path / "slow.ndjson"
    requests.export(
        path,
        manifest_file=True,
        filter=build_filter(actions="template.read", min_duration_ms=1000),
    )
    assert [json.loads(line)["description"] for line in path.read_text().splitlines()] == [
        "slow",
        "upload",
    ]
    kept = path.with_name(path.name + ".manifest.json")
    checked = check_export(kept, key=KEY)
    assert checked.filter is not None
    assert json.loads(checked.filter)["minDurationMs"] == 1000
    said = json.loads(checked.filter)
    refused_when_told(
        kept,
        json.dumps(said | {"minDurationMs": 10}),
        json.dumps({k: v for k, v in said.items() if k != "minDurationMs"}),
    )


def test_a_live_stream_follows_slow_requests_alone(requests: AuditClient) -> None:
    client = requests
    with live_from_now(client, build_filter(min_duration_ms=500)) as live:
        client.record(_call(description="fast", duration_ms=499.5))
        client.record(_call(description="none", http_status_code=200))
        client.record(_call(description="slow", duration_ms=500))
        first = next(live)
    assert first.description == "slow"


def test_a_sink_given_a_higher_least_duration_is_narrowed(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(min_duration_ms=1000)))
    assert client.get_sink(created.sink.id).filter.min_duration_ms == 1000

    def update(least: float) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(min_duration_ms=least))

    assert update(250.5) == (event_pb2.SEVERITY_INFO, [])  # lower: more events
    assert update(2000) == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update(0) == (event_pb2.SEVERITY_INFO, [])  # every event
    assert update(0.5) == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])


def test_an_alert_rule_on_slow_requests_fires_on_one_alone(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("slow", "match", filter=build_filter(min_duration_ms=5000))
    )
    client.record(_call(duration_ms=4999.999))
    client.record(_call(http_status_code=504))
    fires = client.record(_call(duration_ms=5000.5))
    the_only_alert(client, rule.rule.id, fires.event)


def test_an_alert_on_a_failed_request_is_no_request_of_its_own(client: AuditClient) -> None:
    """The alert a 5xx answer fires carries that request in its details, not
    as a request of its own: counts by status and route, and filters by
    status and duration, over every action take the request alone, not the
    alert beside it (helper-446)."""
    client.create_alert_rule(
        build_alert_rule("5xx", "match", filter=build_filter(http_status_classes="5xx"))
    )
    failed = client.record(
        _call(description="failed", http_route=ROUTE, http_status_code=503, duration_ms=1200)
    ).event
    client.record(_call(description="ok", http_route=ROUTE, http_status_code=200, duration_ms=3))
    wait_for_alerts(client, 1)
    every = build_filter()
    statuses = dict(_groups(client, every, group_by="http_status"))
    assert (statuses["503"], statuses["200"]) == (1, 1)
    assert dict(_groups(client, every, group_by="http_route"))[ROUTE] == 2
    for only in (build_filter(http_status_classes="5xx"), build_filter(min_duration_ms=1000)):
        assert [event.id for event in client.query(only)] == [failed.id]
        assert client.count_events(only).total == 1


def _env(server: ServerThread, tenant: str) -> dict[str, str]:
    return {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}


def test_the_cli_records_a_request_and_its_table_shows_it_in_one_column(
    server: ServerThread, tenant: str
) -> None:
    env = _env(server, tenant)
    recorded = CliRunner().invoke(
        cli.main,
        ["record", "--action", "api.call", "--actor-id", "key_ci", "--http-method", "get",
         "--http-route", "/v1/x", "--http-status", "404", "--duration-ms", "12"],
        env=env,
    )  # fmt: skip
    assert recorded.exit_code == 0, recorded.output
    context = json.loads(recorded.output)["context"]
    assert context == context | {
        "httpMethod": "GET",
        "httpRoute": "/v1/x",
        "httpStatusCode": 404,
        "durationMs": 12,
    }
    plain = ["record", "--action", "api.plain", "--actor-id", "u1"]
    assert CliRunner().invoke(cli.main, plain, env=env).exit_code == 0
    table = CliRunner().invoke(cli.main, ["query", "--action", "api.*"], env=env)
    assert table.exit_code == 0, table.output
    assert "request" in table.output and "GET /v1/x 404 12ms" in table.output
    alone = CliRunner().invoke(cli.main, ["query", "--action", "api.plain"], env=env)
    assert alone.exit_code == 0 and "api.plain" in alone.output, alone.output
    assert "request" not in alone.output  # no column where no event has a request
    for bad, flag in ((["--http-status", "600"], "--http-status"),
                      (["--http-route", "/v1/x?q=1"], "--http-route"),
                      (["--duration-ms", "-5"], "--duration-ms")):  # fmt: skip
        refused = CliRunner().invoke(cli.main, [*plain, *bad], env=env)
        assert refused.exit_code != 0 and flag in refused.output, refused.output


def test_the_cli_table_shows_an_alerts_trigger_request_marked_as_its_triggers(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    """An alert keeps its trigger's request in `details.trigger_request`, not
    in its context: its row's request cell was empty, the failing request an
    operator looks for unsaid. The table says it, marked as the trigger's;
    jsonl stays the record, its context holding no request."""
    client = client_for(tenant)
    client.create_alert_rule(
        build_alert_rule("5xx", "match", filter=build_filter(http_status_classes="5xx"))
    )
    client.record(
        _call(http_method="get", http_route=ROUTE, http_status_code=503, duration_ms=1200)
    )
    wait_for_alerts(client, 1)
    env = _env(server, tenant)
    rows = CliRunner().invoke(
        cli.main, ["query", "--action", "security.alert", "--action", "template.read"], env=env
    )
    assert rows.exit_code == 0, rows.output
    [alert] = [row for row in rows.output.splitlines() if "security.alert" in row]
    assert f"trigger: GET {ROUTE} 503 1200ms" in alert, rows.output
    [request] = [row for row in rows.output.splitlines() if "template.read" in row]
    assert f"GET {ROUTE} 503 1200ms" in request and "trigger:" not in request, rows.output
    lines = CliRunner().invoke(
        cli.main, ["query", "--action", "security.alert", "--format", "jsonl"], env=env
    )
    assert lines.exit_code == 0, lines.output
    [record] = [json.loads(line) for line in lines.output.splitlines()]
    assert "httpMethod" not in record.get("context", {})
    assert record["details"]["trigger_request"]["route"] == ROUTE


def test_the_cli_finds_slow_requests_and_counts_by_route_and_status(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch(
        [
            _call(description=name, http_route=route, http_status_code=code, duration_ms=ms)
            for name, route, code, ms in REQUESTS
        ]
    )
    env = _env(server, tenant)
    found = CliRunner().invoke(
        cli.main,
        ["query", "--format", "jsonl", "--action", "template.read", "--min-duration-ms", "1000"],
        env=env,
    )
    assert found.exit_code == 0, found.output
    assert [json.loads(line)["description"] for line in found.output.splitlines()] == [
        "upload",
        "slow",
    ]
    refused = CliRunner().invoke(cli.main, ["query", "--min-duration-ms", "-1"], env=env)
    assert refused.exit_code != 0 and "--min-duration-ms" in refused.output, refused.output
    for by, expected in (
        ("http-route", {"/v1/templates/{id}": 3, "": 1, "/v1/templates": 1, "/v1/uploads": 1}),
        ("http_status", {"200": 2, "503": 2, "": 1, "404": 1}),
    ):
        stats = CliRunner().invoke(
            cli.main, ["stats", "--action", "template.read", "--by", by, "--json"], env=env
        )
        assert stats.exit_code == 0, stats.output
        answer = json.loads(stats.output)
        assert {group["key"]: group["count"] for group in answer["groups"]} == expected
