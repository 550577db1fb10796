"""`EventFilter.user_agent`: the events of scripts hitting the API with an
unusual client (`curl`, `python-requests`, `Terraform`), the user agent
containing a text in any case, in a query, a count, a stream, an export (its
signed filter too), a sink, an alert rule and the CLI (helper-378)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

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
from tests.filter_checks import live_from_now
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# (actor, user agent sent): "" sends none.
CALLS = [
    ("ann", "curl/8.5.0"),
    ("bob", "python-requests/2.31.0"),
    ("cy", "Terraform/1.7.4 (+https://www.terraform.io) terraform-provider-acme/2.0"),
    ("dee", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) Safari/605.1.15"),
    ("eve", ""),
    ("fay", "LibCURL-agent/1.0 50%_off\\tool"),
    ("gus", "Äpp/1.0"),
]


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    client.record_batch(
        [build_event(action="user.login", actor_id=a, user_agent=u) for a, u in CALLS]
    )
    return client


def _actors(client: AuditClient, event_filter: event_pb2.EventFilter) -> list[str]:
    return [e.actor.id for e in client.query(event_filter, order="oldest")]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("curl", ["ann", "fay"]),
        ("CURL", ["ann", "fay"]),
        ("python-requests", ["bob"]),
        ("terraform", ["cy"]),
        ("Mac OS X 14_2", ["dee"]),
        # LIKE's metacharacters are themselves: `%` and `_` no wildcards, `\` no escape.
        ("%", ["fay"]),
        ("0%_O", ["fay"]),
        ("_", ["dee", "fay"]),
        ("\\t", ["fay"]),
        ("f\\", ["fay"]),
        # A to Z in either case; another letter as recorded.
        ("Äpp", ["gus"]),
        ("äpp", []),
        ("wget", []),
    ],
)
def test_events_whose_user_agent_contains_a_text_in_any_case(
    recorded: AuditClient, text: str, found: list[str]
) -> None:
    assert _actors(recorded, build_filter(actions="user.login", user_agent=text)) == found


def test_a_user_agent_too_long_or_with_control_characters_is_refused_naming_it(
    client: AuditClient,
) -> None:
    for bad in ("a" * 257, "curl\n", "\tcurl", "curl\x00", "x\x7f"):
        with pytest.raises(InvalidArgumentError) as caught:
            list(client.query(build_filter(user_agent=bad)))
        assert [field for field, _ in caught.value.field_violations] == ["filter.user_agent"]
    assert list(client.query(build_filter(actions="user.login", user_agent="a" * 256))) == []


def test_counts_of_one_client(recorded: AuditClient) -> None:
    counts = recorded.count_events(
        build_filter(actions="user.login", user_agent="CuRl"), group_by="actor"
    )
    assert counts.total == 2
    assert {g.key for g in counts.groups} == {"ann", "fay"}


def test_an_export_holds_one_client_and_signs_the_filter(
    recorded: AuditClient, tmp_path: Path
) -> None:
    path = tmp_path / "curl.ndjson"
    manifest = recorded.export(path, filter=build_filter(actions="user.login", user_agent="Curl"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["actor"]["id"] for line in lines] == ["ann", "fay"]
    assert manifest.row_count == 2
    assert json.loads(manifest.filter_json)["userAgent"] == "Curl"  # as sent


def test_a_live_stream_follows_one_client(recorded: AuditClient) -> None:
    with live_from_now(
        recorded, build_filter(actions="user.login", user_agent="terraform")
    ) as live:
        recorded.record(action="user.login", actor_id="hal", user_agent="curl/8.5.0")
        recorded.record(action="user.login", actor_id="ida")
        recorded.record(action="user.login", actor_id="jo", user_agent="HashiCorp-TERRAFORM/1.8")
        first = next(live)
    assert first.actor.id == "jo"


def test_a_sink_given_a_client_or_more_of_its_text_is_narrowed(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(user_agent="Python-Requests")))
    assert client.get_sink(created.sink.id).filter.user_agent == "Python-Requests"  # as sent

    def update(text: str) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(user_agent=text))

    assert update("python-requests") == (event_pb2.SEVERITY_INFO, [])  # the same, any case
    assert update("python") == (event_pb2.SEVERITY_INFO, [])  # a part: every agent it took
    assert update("python-requests/2") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update("curl") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update("") == (event_pb2.SEVERITY_INFO, [])
    assert update("curl") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])


def test_an_alert_rule_on_one_client_fires_on_it_alone(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("curl", "match", filter=build_filter(user_agent="curl"))
    )
    client.record(action="user.login", actor_id="u1", user_agent="Mozilla/5.0")
    client.record(action="user.login", actor_id="u1")
    fires = client.record(action="user.login", actor_id="u1", user_agent="curl/7.88.1")
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_queries_by_user_agent(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch(
        [build_event(action="user.login", actor_id=a, user_agent=u) for a, u in CALLS]
    )
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    found = CliRunner().invoke(
        cli.main,
        ["query", "--format", "jsonl", "--action", "user.login", "--user-agent", "Terraform"],
        env=env,
    )
    assert found.exit_code == 0, found.output
    assert [json.loads(line)["actor"]["id"] for line in found.output.splitlines()] == ["cy"]
    counted = CliRunner().invoke(
        cli.main, ["stats", "--action", "user.login", "--user-agent", "curl", "--json"], env=env
    )
    assert counted.exit_code == 0, counted.output
    assert json.loads(counted.output)["total"] == 2
    refused = CliRunner().invoke(cli.main, ["query", "--user-agent", "x" * 257], env=env)
    assert refused.exit_code == 2 and "--user-agent: is 257 characters long" in refused.output
    rule = CliRunner().invoke(
        cli.main, ["alerts", "create", "curl", "--kind", "match", "--user-agent", "curl"], env=env
    )
    assert rule.exit_code == 0, rule.output
    (created,) = client.list_alert_rules()
    assert created.match.filter.user_agent == "curl"
