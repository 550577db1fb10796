"""Where the day's features meet: EventFilter.actor_prefix (ADR 0135) and
http_status_classes (ADR 0136) in one filter, across Query's pages, a
stream, a signed export checked offline, a sink's and a rule's filter, and
the CLI; and the typed HTTP request fields through an export imported
into another tenant (helper-432). EventFilter.http_routes and
changed_fields in one filter, likewise, and in the CLI's sink, rule and
stats commands (helper-449)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealtrail import AuditClient, build_alert_rule, build_event, build_filter, check_export
from sealtrail import _cli as cli
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
    having_recorded,
    live_from_now,
    token_refused,
    two_pages,
)
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_cli_import import as_sent
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
    return having_recorded(client, _call, CALLS)


BOTH = {"actions": "api.call", "actor_prefix": "ext-", "http_status_classes": ["5xx", 404]}


def test_both_together_take_the_events_each_takes(calls: AuditClient) -> None:
    both = build_filter(**BOTH)  # type: ignore[arg-type]
    assert descriptions_found(calls, both) == ["ext-down", "ext-missing", "ext-broke"]
    assert calls.count_events(both).total == 3


def test_pages_of_both_follow_on_and_a_token_holds_to_its_filter(calls: AuditClient) -> None:
    both = build_filter(**BOTH)  # type: ignore[arg-type]
    found, token, end = two_pages(calls, both, page_size=2)
    assert found == ["ext-down", "ext-missing", "ext-broke"]
    assert not end
    other = build_filter(actions="api.call", actor_prefix="ext-", http_status_classes="5xx")
    token_refused(calls, other, token, page_size=2)


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
    having_recorded(client_for(tenant), _call, CALLS)
    env = cli_env(server, tenant)
    options = ["--action", "api.call", "--actor-prefix", "ext-", "--http-status", "5xx"]
    assert cli_descriptions(env, *options) == ["ext-down", "ext-broke"]
    refused = cli_output(env, "query", *options, "--http-status", "6xx", exit_code=2)
    assert "--http-status 6xx: must be a class" in refused, refused


def test_an_export_of_requests_imported_into_another_tenant_keeps_them(
    server: ServerThread,
    tenant: str,
    calls: AuditClient,
    client_for: Callable[..., AuditClient],
    tmp_path: Path,
) -> None:
    exported = tmp_path / "calls.ndjson"
    env = cli_env(server, tenant)
    cli_output(env, "export", "--format", "ndjson", "--action", "api.call", "-o", str(exported))
    other = f"{tenant}-moved"
    env = cli_env(server, other)
    shown = CliRunner().invoke(cli.main, ["import", str(exported)], env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == f"recorded {len(CALLS)} events from {exported}\n"

    before, after = (
        as_sent(reader, build_filter(actions="api.call")) for reader in (calls, client_for(other))
    )
    assert after == before
    assert after[1]["context"]["httpStatusCode"] == 503
    assert after[1]["context"]["httpRoute"] == "/v1/things/{id}"
    both = build_filter(**BOTH)  # type: ignore[arg-type]
    assert descriptions_found(client_for(other), both) == descriptions_found(calls, both)


# (description, route: "" none, the fields its changes name): the requests
# that changed a plan, and others that share one of route or field alone.
EDITS = [
    ("plan-rate", "/v1/plans/{id}", ("rate_limit",)),
    ("plan-name", "/v1/plans/{id}", ("name",)),
    ("team-rate", "/v1/teams/{id}", ("rate_limit",)),
    ("plan-rpm", "/v1/plans/{id}", ("limits.rpm", "name")),
    ("unrouted-rate", "", ("rate_limit",)),
    ("plan-read", "/v1/plans/{id}", ()),
]
ROUTE_AND_FIELD = {"http_routes": "/v1/plans/{id}", "changed_fields": ["rate_limit", "limits.rpm"]}


def _edit(description: str, route: str, fields: tuple[str, ...]) -> event_pb2.Event:
    return build_event(
        action="plan.update",
        actor_id="alice",
        description=description,
        http_method="patch" if route else "",
        http_route=route,
        changes=[(name, 1, 2) for name in fields],
    )


@pytest.fixture
def edits(client: AuditClient) -> AuditClient:
    return having_recorded(client, _edit, EDITS)


def test_a_route_and_a_changed_field_take_the_events_both_take(edits: AuditClient) -> None:
    both = build_filter(**ROUTE_AND_FIELD)  # type: ignore[arg-type]
    assert descriptions_found(edits, both) == ["plan-rate", "plan-rpm"]
    assert edits.count_events(both).total == 2
    found, token, _ = two_pages(edits, both, page_size=1)
    assert found == ["plan-rate", "plan-rpm"]
    # A token holds to both: either alone is another filter.
    for either in (
        {"http_routes": "/v1/plans/{id}"},
        {"changed_fields": ["rate_limit", "limits.rpm"]},
    ):
        token_refused(edits, build_filter(**either), token, page_size=1)  # type: ignore[arg-type]


def test_a_live_stream_of_a_route_and_a_changed_field_follows_both(edits: AuditClient) -> None:
    client = edits
    with live_from_now(client, build_filter(**ROUTE_AND_FIELD)) as live:  # type: ignore[arg-type]
        client.record_batch([_edit(*each) for each in EDITS])
        first, second = next(live), next(live)
    assert [first.description, second.description] == ["plan-rate", "plan-rpm"]


def test_an_export_of_a_route_and_a_changed_field_signs_both(
    edits: AuditClient, tmp_path: Path
) -> None:
    both = build_filter(**ROUTE_AND_FIELD)  # type: ignore[arg-type]
    exported, signed, kept = exported_and_checked(edits, tmp_path / "plans.ndjson", both)
    assert exported == ["plan-rate", "plan-rpm"]
    said = json.loads(signed)
    assert said == {"httpRoutes": ["/v1/plans/{id}"], "changedFields": ["rate_limit", "limits.rpm"]}
    refused_when_told(
        kept,
        json.dumps({"httpRoutes": ["/v1/plans/{id}"]}),
        json.dumps({"changedFields": ["rate_limit", "limits.rpm"]}),
        signed.replace("limits.rpm", "limits"),
    )


def test_a_sink_of_a_route_and_a_changed_field_is_narrowed_by_either(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(**ROUTE_AND_FIELD)))  # type: ignore[arg-type]

    def update(**criteria: object) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(**criteria))  # type: ignore[arg-type]

    fields = ["rate_limit", "limits.rpm"]
    assert update(http_routes="/v1/plans/{id}", changed_fields=fields[::-1]) == NOT_NARROWED
    assert update(changed_fields=fields) == NOT_NARROWED  # every route
    assert update(http_routes="/v1/plans/{id}", changed_fields=fields) == NARROWED  # a route again
    assert update(http_routes="/v1/plans/{id}") == NOT_NARROWED  # every field
    assert update(http_routes="/v1/plans/{id}", changed_fields="rate_limit") == NARROWED
    both_routes = ["/v1/plans/{id}", "/v1/teams/{id}"]
    assert update(http_routes=both_routes, changed_fields=[*fields, "name"]) == NOT_NARROWED
    assert update(http_routes="/v1/teams/{id}", changed_fields=[*fields, "name"]) == NARROWED


def test_a_rule_of_a_route_a_changed_field_and_a_level_fires_on_both_alone(
    client: AuditClient,
) -> None:
    """`min_severity: info` takes every event; the route and the field
    name which events the rule watches, and it fires on an event of both."""
    rule = client.create_alert_rule(
        build_alert_rule(
            "plan limits",
            "match",
            filter=build_filter(min_severity="info", **ROUTE_AND_FIELD),  # type: ignore[arg-type]
        )
    )
    client.record_batch(
        [_edit(*each) for each in EDITS if each[0] not in ("plan-rate", "plan-rpm")]
    )
    fires = client.record(_edit(*EDITS[0]))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_takes_a_route_and_a_changed_field_in_every_filter_command(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    """query, stats, sinks create and alerts create each take both options,
    and name a refused value by its option whichever of the two it is."""
    client = client_for(tenant)
    having_recorded(client, _edit, EDITS)
    env = cli_env(server, tenant)
    both = ["--http-route", "/v1/plans/{id}", "--changed-field", "rate_limit",
            "--changed-field", "limits.rpm"]  # fmt: skip
    assert cli_descriptions(env, *both) == ["plan-rate", "plan-rpm"]
    assert json.loads(cli_output(env, "stats", "--by", "http-route", *both, "--json"))["total"] == 2
    cli_output(env, "sinks", "create", "plans", "--kind", "webhook",
               "--url", "https://siem.example/hook", "--generate-secret", *both)  # fmt: skip
    cli_output(env, "alerts", "create", "plans", "--kind", "match", *both)
    wanted = {"http_routes": ["/v1/plans/{id}"], "changed_fields": ["rate_limit", "limits.rpm"]}
    for kept in (client.list_sinks()[0].filter, client.list_alert_rules()[0].match.filter):
        assert {
            "http_routes": list(kept.http_routes),
            "changed_fields": list(kept.changed_fields),
        } == wanted
    bad = ["--http-route", "/v1/x?id=7", "--changed-field", "rate_limit", "--changed-field", ""]
    for command in (["query"], ["alerts", "create", "bad", "--kind", "match"]):
        refused = cli_output(env, *command, *bad, exit_code=2)
        assert "--http-route '/v1/x?id=7': must not hold a query string" in refused
        assert "--changed-field '': is empty" in refused, refused
        assert "filter." not in refused, refused
