"""`EventFilter.country` and CountEvents by country: "everything from KP this
week", "sign-ins per country", in a query, a count, a stream, an export, a
sink, an alert rule and the CLI (helper-369)."""

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

# (actor, country sent): stored upper case; "" sends none.
SIGN_INS = [("ann", "FR"), ("bob", "kp"), ("cy", "Kp"), ("dee", ""), ("eve", "fr"), ("fay", "DE")]


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    client.record_batch(
        [build_event(action="user.login", actor_id=a, country=c) for a, c in SIGN_INS]
    )
    return client


def _actors(client: AuditClient, event_filter: event_pb2.EventFilter) -> list[str]:
    return [e.actor.id for e in client.query(event_filter, order="oldest")]


@pytest.mark.parametrize(
    ("country", "found"), [("KP", ["bob", "cy"]), ("kp", ["bob", "cy"]), ("fR", ["ann", "eve"])]
)
def test_events_from_one_country_in_any_case(
    recorded: AuditClient, country: str, found: list[str]
) -> None:
    assert _actors(recorded, build_filter(actions="user.login", country=country)) == found


def test_a_country_that_is_no_code_is_refused_naming_the_field(client: AuditClient) -> None:
    for bad in ("FRA", "F", "K1", " KP", "ÉS"):
        with pytest.raises(InvalidArgumentError) as caught:
            list(client.query(build_filter(country=bad)))
        assert [field for field, _ in caught.value.field_violations] == ["filter.country"], bad


def test_counts_per_country_put_events_without_one_under_the_empty_key(
    recorded: AuditClient,
) -> None:
    counts = recorded.count_events(build_filter(actions="user.login"), group_by="country")
    assert counts.total == len(SIGN_INS)
    assert [(g.key, g.count) for g in counts.groups] == [("FR", 2), ("KP", 2), ("", 1), ("DE", 1)]
    kp = recorded.count_events(build_filter(country="kp"), group_by="actor")
    assert {g.key for g in kp.groups} == {"bob", "cy"}


def test_an_export_holds_one_country(recorded: AuditClient, tmp_path: Path) -> None:
    path = tmp_path / "kp.ndjson"
    manifest = recorded.export(path, filter=build_filter(country="KP"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["actor"]["id"] for line in lines] == ["bob", "cy"]
    assert manifest.row_count == 2


def test_a_live_stream_follows_one_country(recorded: AuditClient) -> None:
    with live_from_now(recorded, build_filter(country="kp")) as live:
        recorded.record(action="user.login", actor_id="gus", country="FR")
        recorded.record(action="user.login", actor_id="hal")
        recorded.record(action="user.login", actor_id="ida", country="KP")
        first = next(live)
    assert first.actor.id == "ida"


def test_a_sink_that_forwards_one_country_more_or_another_is_narrowed(
    client: AuditClient,
) -> None:
    created = client.create_sink(paused_webhook(build_filter(country="kp")))
    assert client.get_sink(created.sink.id).filter.country == "kp"  # kept as sent

    def update(country: str) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(country=country))

    assert update("KP") == (event_pb2.SEVERITY_INFO, [])  # the same country
    assert update("IR") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update("") == (event_pb2.SEVERITY_INFO, [])
    assert update("KP") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])


def test_an_alert_rule_on_one_country_fires_on_it_alone(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("kp", "match", filter=build_filter(actions="user.login", country="kp"))
    )
    client.record(action="user.login", actor_id="u1", country="FR")
    client.record(action="user.login", actor_id="u1")
    fires = client.record(action="user.login", actor_id="u1", country="KP")
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_queries_and_counts_by_country(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch(
        [build_event(action="user.login", actor_id=a, country=c) for a, c in SIGN_INS]
    )
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    found = CliRunner().invoke(
        cli.main, ["query", "--format", "jsonl", "--country", "kp", "--order", "oldest"], env=env
    )
    assert found.exit_code == 0, found.output
    assert [json.loads(line)["actor"]["id"] for line in found.output.splitlines()] == ["bob", "cy"]
    counted = CliRunner().invoke(
        cli.main, ["stats", "--by", "country", "--action", "user.login", "--json"], env=env
    )
    assert counted.exit_code == 0, counted.output
    groups = {g["key"]: g["count"] for g in json.loads(counted.output)["groups"]}
    assert groups == {"FR": 2, "KP": 2, "": 1, "DE": 1}
    refused = CliRunner().invoke(cli.main, ["query", "--country", "France"], env=env)
    assert refused.exit_code != 0 and "country" in refused.output
    rule = CliRunner().invoke(
        cli.main,
        ["alerts", "create", "KP", "--kind", "match", "--action", "user.login", "--country", "KP"],
        env=env,
    )
    assert rule.exit_code == 0, rule.output
    (created,) = client.list_alert_rules()
    assert created.match.filter.country == "KP"
