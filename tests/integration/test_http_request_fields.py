"""The HTTP request an event records (RequestContext's http_method,
http_route, http_status_code and duration_ms; ADR 0136): kept in the record
only when set, checked naming the field, shown by Record, Query and every
export format, and found by EventFilter.http_status_classes wherever filters
go (helper-427)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.protobuf import json_format

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    build_alert_rule,
    build_event,
    build_filter,
)
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread
from tests.filter_checks import (
    NARROWED,
    NOT_NARROWED,
    descriptions_found,
    exported_and_checked,
    live_from_now,
    violations_refused,
)
from tests.integration.test_alerting import the_only_alert, wait_for_alerts
from tests.integration.test_export_check import refused_when_told
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

ROUTE = "/v1/templates/{id}"


def _call(**fields: object) -> event_pb2.Event:
    return build_event(action="template.read", actor_id="key_ci", **fields)  # type: ignore[arg-type]


def test_the_request_is_recorded_and_shown_as_sent_the_method_in_upper_case(
    client: AuditClient,
) -> None:
    answer = client.record(
        _call(http_method="post", http_route=ROUTE, http_status_code=503, duration_ms=12.5)
    ).event
    (found,) = client.query(build_filter(actions="template.read"))
    for shown in (answer, found):
        assert shown.context.http_method == "POST"
        assert shown.context.http_route == ROUTE
        assert shown.context.http_status_code == 503
        assert shown.context.duration_ms == 12.5
    assert found == answer


# What the server fills in from the call itself (the request id, the span).
CORRELATION = ("request_id", "trace_id", "span_id")


def _contexts(path: Path) -> list[dict[str, object]]:
    """Each exported record's context without the correlation ids."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [
        {k: v for k, v in record.get("context", {}).items() if k not in CORRELATION}
        for record in records
    ]


def test_an_event_without_them_keeps_its_record_as_before(
    client: AuditClient, tmp_path: Path
) -> None:
    client.record(_call(ip="203.0.113.9"))
    client.record(_call(duration_ms=-0.0))  # -0 is 0: not measured
    path = tmp_path / "plain.ndjson"
    client.export(path, filter=build_filter(actions="template.read"))
    assert _contexts(path) == [{"ip": "203.0.113.9"}, {}]
    (_, second) = client.query(build_filter(actions="template.read"), order="oldest")
    assert math.copysign(1, second.context.duration_ms) == 1
    assert not second.context.http_method and not second.context.http_status_code


def test_the_record_and_its_exports_hold_them_typed(client: AuditClient, tmp_path: Path) -> None:
    client.record(_call(http_method="GET", http_route=ROUTE, http_status_code=200, duration_ms=3.0))
    client.record(_call(http_method="DELETE", http_status_code=404, duration_ms=1e-7))
    ndjson, table = tmp_path / "calls.ndjson", tmp_path / "calls.csv"
    client.export(ndjson, filter=build_filter(actions="template.read"))
    client.export(table, format="csv", filter=build_filter(actions="template.read"))
    # Numbers as JSON numbers: a whole duration written as an integer (RFC 8785).
    assert '"duration_ms":3,"http_method":"GET"' in ndjson.read_text(encoding="utf-8")
    assert _contexts(ndjson) == [
        {"duration_ms": 3, "http_method": "GET", "http_route": ROUTE, "http_status_code": 200},
        {"duration_ms": 1e-7, "http_method": "DELETE", "http_status_code": 404},
    ]
    with table.open(newline="") as opened:
        header, *rows = list(csv.reader(opened))
    # Appended after every column there was: their positions stay (the roles' came after).
    at = header.index("country_source")
    assert header[at : at + 5] == [
        "country_source",
        "http_method",
        "http_route",
        "http_status_code",
        "duration_ms",
    ]
    assert [row[at + 1 : at + 5] for row in rows] == [
        ["GET", ROUTE, "200", "3"],
        ["DELETE", "", "404", "1e-7"],
    ]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"http_method": "GET /"}, "http_method"),
        ({"http_method": "X" * 17}, "http_method"),
        ({"http_method": "GÉT"}, "http_method"),
        ({"http_route": "/v1/search?q=alice@example.com"}, "http_route"),
        ({"http_route": "/v1/a\nb"}, "http_route"),
        ({"http_route": "/" * 513}, "http_route"),
        ({"http_status_code": 99}, "http_status_code"),
        ({"http_status_code": 600}, "http_status_code"),
        ({"duration_ms": -1.0}, "duration_ms"),
        ({"duration_ms": math.nan}, "duration_ms"),
        ({"duration_ms": math.inf}, "duration_ms"),
        ({"duration_ms": 86_400_000.0}, "duration_ms"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(
    client: AuditClient, fields: dict[str, object], named: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.record(_call(**fields))
    assert [field for field, _ in caught.value.field_violations] == [f"event.context.{named}"]


def test_the_longest_route_and_a_duration_under_a_day_are_kept_and_views_check(
    client: AuditClient,
) -> None:
    """Query's view matches the record whether it was copied from the request
    or built from the body (a secret redacted out of details, a token out of
    the route's path)."""
    route = "/" + "a" * 511
    answer = client.record(_call(http_route=route, duration_ms=86_399_999.999)).event
    assert answer.context.http_route == route
    assert answer.context.duration_ms == 86_399_999.999
    built = client.record(
        _call(
            http_method="patch",
            http_route="/v1/hooks/ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            http_status_code=201,
            duration_ms=0.25,
            details={"db": {"password": "p4ss"}},
        )
    ).event
    assert (built.context.http_method, built.context.duration_ms) == ("PATCH", 0.25)
    assert built.context.http_route == "/v1/hooks/[REDACTED:github_token]"
    checked = client.verify_log(check_views=True)
    assert checked.ok and checked.views_verified == 2


# (description, status code sent: 0 sends none).
CALLS = [
    ("ok", 200),
    ("missing", 404),
    ("throttled", 429),
    ("broke", 500),
    ("down", 503),
    ("cli", 0),
]


@pytest.fixture
def calls(client: AuditClient) -> AuditClient:
    client.record_batch([_call(description=name, http_status_code=code) for name, code in CALLS])
    return client


@pytest.mark.parametrize(
    ("classes", "found"),
    [
        (["5xx"], ["broke", "down"]),
        (["5XX", "429"], ["throttled", "broke", "down"]),
        (["404", "404", "4xx"], ["missing", "throttled"]),  # duplicates, a code in its class
        (["2xx"], ["ok"]),
        (["1xx", "302"], []),
        ([], [name for name, _ in CALLS]),  # an event without a status too
    ],
)
def test_events_of_the_statuses_asked(
    calls: AuditClient, classes: list[str], found: list[str]
) -> None:
    event_filter = build_filter(actions="template.read", http_status_classes=classes)
    assert descriptions_found(calls, event_filter) == found


def test_a_status_that_is_no_class_or_code_is_refused_naming_it(client: AuditClient) -> None:
    sent = event_pb2.EventFilter(http_status_classes=["5xx", "600", "5xxx"])
    assert [field for field, _ in violations_refused(client, sent)] == [
        "filter.http_status_classes[1]",
        "filter.http_status_classes[2]",
    ]


def test_counts_and_pages_of_failed_requests(calls: AuditClient) -> None:
    failed = build_filter(actions="template.read", http_status_classes=[500, "503"])
    assert calls.count_events(failed).total == 2
    first = calls.query_page(failed, page_size=1)
    assert [e.description for e in first.events] == ["down"]
    rest = calls.query_page(failed, page_size=1, page_token=first.next_page_token)
    assert [e.description for e in rest.events] == ["broke"]


def test_an_export_of_server_errors_is_checked_offline_and_its_filter_held(
    calls: AuditClient, tmp_path: Path
) -> None:
    found, signed, kept = exported_and_checked(
        calls,
        tmp_path / "errors.ndjson",
        build_filter(actions="template.read", http_status_classes="5xx"),
    )
    assert found == ["broke", "down"]
    assert json.loads(signed)["httpStatusClasses"] == ["5xx"]
    refused_when_told(
        kept,
        signed.replace("5xx", "4xx"),
        json.dumps({k: v for k, v in json.loads(signed).items() if k != "httpStatusClasses"}),
    )


def test_a_live_stream_follows_server_errors_alone(calls: AuditClient) -> None:
    client = calls
    with live_from_now(client, build_filter(http_status_classes="5xx")) as live:
        client.record(_call(description="fine", http_status_code=204))
        client.record(_call(description="none"))
        client.record(_call(description="failed", http_status_code=502))
        first = next(live)
    assert first.description == "failed"


def test_a_sink_given_fewer_statuses_is_narrowed(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(http_status_classes=["5xx", "429"])))
    assert list(client.get_sink(created.sink.id).filter.http_status_classes) == ["5xx", "429"]

    def update(*classes: str) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(http_status_classes=classes))

    assert update("429", "5xx") == NOT_NARROWED  # the same
    assert update("4xx", "5xx") == NOT_NARROWED  # more: 429 in its class
    assert update("5xx") == NARROWED
    assert update() == NOT_NARROWED  # every event
    assert update("503") == NARROWED


def test_an_alert_rule_on_server_errors_fires_on_one_alone(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("5xx", "match", filter=build_filter(http_status_classes="5xx"))
    )
    client.record(_call(http_status_code=200))
    client.record(_call(http_status_code=499))
    fires = client.record(_call(http_status_code=500))
    the_only_alert(client, rule.rule.id, fires.event)


def test_an_alert_carries_its_triggers_request_in_its_details(client: AuditClient) -> None:
    """An alert carries its trigger's request, so that its chat line, page and
    mail say which endpoint failed: the parts the trigger recorded, typed, in
    `details.trigger_request`, never in its context (an alert is no request:
    a count by status or route must not take it; docs/alerting.md)."""
    rule = client.create_alert_rule(
        build_alert_rule("5xx", "match", filter=build_filter(http_status_classes="5xx"))
    ).rule
    full = client.record(
        _call(http_method="get", http_route=ROUTE, http_status_code=503, duration_ms=1200)
    ).event
    partial = client.record(_call(http_status_code=500, duration_ms=12.5)).event
    fired = wait_for_alerts(client, 2)
    assert [json_format.MessageToDict(a.details)["trigger_event_id"] for a in fired] == [
        full.id,
        partial.id,
    ]
    assert all(a.resource.id == rule.id for a in fired)
    assert [json_format.MessageToDict(a.details)["trigger_request"] for a in fired] == [
        {"method": "GET", "route": ROUTE, "status": 503, "duration_ms": 1200},
        {"status": 500, "duration_ms": 12.5},
    ]
    assert [
        (a.context.http_method, a.context.http_route, a.context.http_status_code,
         a.context.duration_ms)
        for a in fired
    ] == [("", "", 0, 0), ("", "", 0, 0)]  # fmt: skip
    assert client.verify_log(check_views=True).ok


def test_the_cli_queries_by_http_status(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch([_call(description=name, http_status_code=code) for name, code in CALLS])
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    found = CliRunner().invoke(
        cli.main,
        ["query", "--format", "jsonl", "--action", "template.read", "--http-status", "5xx",
         "--http-status", "429"],
        env=env,
    )  # fmt: skip
    assert found.exit_code == 0, found.output
    lines = [json.loads(line) for line in found.output.splitlines()]
    assert [line["description"] for line in lines] == ["down", "broke", "throttled"]
    assert lines[0]["context"]["httpStatusCode"] == 503
    refused = CliRunner().invoke(cli.main, ["query", "--http-status", "6xx"], env=env)
    assert refused.exit_code != 0 and "--http-status 6xx: must be a class" in refused.output, (
        refused.output
    )
