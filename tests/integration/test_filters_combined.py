"""Where the day's features meet: EventFilter.actor_prefix (ADR 0135) and
http_status_classes (ADR 0136) in one filter, across Query's pages, a
stream, a signed export checked offline, a sink's and a rule's filter, and
the CLI; and the typed HTTP request fields through an export imported
into another tenant (helper-432)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealtrail import AuditClient, build_alert_rule, build_event, build_filter, check_export
from sealtrail import _cli as cli
from sealtrail._convert import message_to_dict
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread
from tests.filter_checks import descriptions_found, live_from_now
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_export_check import KEY, refused_when_told
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# (description, actor id, status code: 0 none).
CALLS = [
    ("ext-ok", "ext-1", 200),
    ("ext-down", "ext-2", 503),
    ("staff-down", "emp-1", 500),
    ("ext-missing", "ext-3", 404),
    ("ext-none", "ext-4", 0),
    ("ext-broke", "ext-5", 502),
]


def _call(description: str, actor_id: str, status: int) -> event_pb2.Event:
    return build_event(
        action="api.call",
        actor_id=actor_id,
        description=description,
        http_method="get",
        http_route="/v1/things/{id}",
        http_status_code=status,
        duration_ms=2.5 if status else 0.0,
    )


@pytest.fixture
def calls(client: AuditClient) -> AuditClient:
    client.record_batch([_call(*each) for each in CALLS])
    return client


BOTH = {"actions": "api.call", "actor_prefix": "ext-", "http_status_classes": ["5xx", 404]}


def test_both_together_take_the_events_each_takes(calls: AuditClient) -> None:
    both = build_filter(**BOTH)  # type: ignore[arg-type]
    assert descriptions_found(calls, both) == ["ext-down", "ext-missing", "ext-broke"]
    assert calls.count_events(both).total == 3


def test_pages_of_both_follow_on_and_a_token_holds_to_its_filter(calls: AuditClient) -> None:
    both = build_filter(**BOTH)  # type: ignore[arg-type]
    first = calls.query_page(both, page_size=2, order="oldest")
    rest = calls.query_page(both, page_size=2, order="oldest", page_token=first.next_page_token)
    assert [e.description for e in (*first.events, *rest.events)] == [
        "ext-down",
        "ext-missing",
        "ext-broke",
    ]
    assert not rest.next_page_token
    other = build_filter(actions="api.call", actor_prefix="ext-", http_status_classes="5xx")
    with pytest.raises(Exception, match="page_token"):
        calls.query_page(other, page_size=2, order="oldest", page_token=first.next_page_token)


def test_a_live_stream_of_both_follows_the_events_each_takes(calls: AuditClient) -> None:
    client = calls
    with live_from_now(client, build_filter(**BOTH)) as live:  # type: ignore[arg-type]
        client.record_batch([_call(*each) for each in CALLS[:4]])
        first, second = next(live), next(live)
    assert [first.description, second.description] == ["ext-down", "ext-missing"]


def test_an_export_of_both_is_checked_offline_and_its_filter_held(
    calls: AuditClient, tmp_path: Path
) -> None:
    path = tmp_path / "both.ndjson"
    calls.export(path, manifest_file=True, filter=build_filter(**BOTH))  # type: ignore[arg-type]
    assert [json.loads(line)["description"] for line in path.read_text().splitlines()] == [
        "ext-down",
        "ext-missing",
        "ext-broke",
    ]
    kept = path.with_name(path.name + ".manifest.json")
    checked = check_export(kept, key=KEY)
    assert checked.filter is not None
    signed = json.loads(checked.filter)
    assert signed["actorPrefix"] == "ext-"
    assert signed["httpStatusClasses"] == ["5xx", "404"]  # as given
    refused_when_told(
        kept,
        checked.filter.replace("ext-", "emp-"),
        json.dumps({k: v for k, v in signed.items() if k != "httpStatusClasses"}),
        json.dumps({k: v for k, v in signed.items() if k != "actorPrefix"}),
    )


def test_a_sink_given_both_is_narrowed_by_either(client: AuditClient) -> None:
    created = client.create_sink(
        paused_webhook(build_filter(actor_prefix="ext-", http_status_classes=["5xx", "404"]))
    )

    def update(**criteria: object) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(**criteria))  # type: ignore[arg-type]

    info, narrowed = (
        (event_pb2.SEVERITY_INFO, []),
        (event_pb2.SEVERITY_WARNING, ["filter_narrowed"]),
    )
    assert update(actor_prefix="ext-", http_status_classes=["404", "5xx"]) == info
    assert update(actor_prefix="ex", http_status_classes=["4xx", "5xx"]) == info  # both wider
    assert update(actor_prefix="ex", http_status_classes=["5xx"]) == narrowed  # 404 lost
    assert update(actor_prefix="ext-1", http_status_classes=["4xx", "5xx"]) == narrowed
    assert update(http_status_classes=["4xx", "5xx"]) == info  # every actor
    assert update(actor_prefix="ex") == narrowed  # a prefix where there was none
    assert update(actor_prefix="e") == info  # every status, a shorter prefix
    assert update(actor_prefix="ex", http_status_classes=["503"]) == narrowed


def test_an_alert_rule_of_a_status_and_a_level_fires_on_that_status_alone(
    client: AuditClient,
) -> None:
    """A rule of `min_severity: info` and HTTP statuses watches the failed
    requests: the statuses narrow it. Refused as watching every event
    (min_severity info "takes every event"): the check of what narrows a rule
    knew every criterion but http_status_classes."""
    rule = client.create_alert_rule(
        build_alert_rule(
            "failures",
            "match",
            filter=build_filter(min_severity="info", http_status_classes="5xx"),
        )
    )
    client.record(_call("fine", "ext-1", 200))
    fires = client.record(_call("down", "ext-2", 503))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_queries_by_both_and_names_a_refused_status(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client_for(tenant).record_batch([_call(*each) for each in CALLS])
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    options = ["--action", "api.call", "--actor-prefix", "ext-", "--http-status", "5xx"]
    found = CliRunner().invoke(
        cli.main, ["query", "--format", "jsonl", "--order", "oldest", *options], env=env
    )
    assert found.exit_code == 0, found.output
    assert [json.loads(line)["description"] for line in found.output.splitlines()] == [
        "ext-down",
        "ext-broke",
    ]
    refused = CliRunner().invoke(cli.main, ["query", *options, "--http-status", "6xx"], env=env)
    assert refused.exit_code == 2, refused.output
    assert "--http-status 6xx: must be a class" in refused.output, refused.output


def test_an_export_of_requests_imported_into_another_tenant_keeps_them(
    server: ServerThread,
    tenant: str,
    calls: AuditClient,
    client_for: Callable[..., AuditClient],
    tmp_path: Path,
) -> None:
    exported = tmp_path / "calls.ndjson"
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    out = CliRunner().invoke(
        cli.main,
        ["export", "--format", "ndjson", "--action", "api.call", "-o", str(exported)],
        env=env,
    )
    assert out.exit_code == 0, out.output
    other = f"{tenant}-moved"
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(other)}
    shown = CliRunner().invoke(cli.main, ["import", str(exported)], env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == f"recorded {len(CALLS)} events from {exported}\n"

    assigned = ("id", "seq", "receivedAt", "leafHash", "tenantId", "recordedBy")
    before, after = (
        [
            {k: v for k, v in message_to_dict(event).items() if k not in assigned}
            for event in reader.query(build_filter(actions="api.call"), order="oldest")
        ]
        for reader in (calls, client_for(other))
    )
    assert after == before
    assert after[1]["context"]["httpStatusCode"] == 503
    assert after[1]["context"]["httpRoute"] == "/v1/things/{id}"
    both = build_filter(**BOTH)  # type: ignore[arg-type]
    assert descriptions_found(client_for(other), both) == descriptions_found(calls, both)
