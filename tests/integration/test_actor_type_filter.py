"""`EventFilter.actor_types` and CountEvents by actor type: what API keys
(not people) did, which services acted, human admins' actions alone, in a
query, a count, a stream, an export (its signed filter checked offline), a
sink, an alert rule and the CLI (helper-409)."""

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
from tests.filter_checks import (
    NARROWED,
    NOT_NARROWED,
    descriptions_found,
    exported_and_checked,
    live_from_now,
    violations_refused,
)
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_export_check import refused_when_told
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# (actor, type sent): "" sends none, which is stored as user. Each event's
# description names its actor: an api_key actor's id is stored masked.
ACTORS = [
    ("ann", "user"),
    ("key_ci", "api_key"),
    ("billing-svc", "service"),
    ("sealtrail", "system"),
    ("bob", ""),
    ("key_tf", "api_key"),
]


def _login(actor: str, kind: str) -> event_pb2.Event:
    if kind:
        return build_event(action="user.login", actor_id=actor, actor_type=kind, description=actor)
    return build_event(action="user.login", actor_id=actor, description=actor)


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    client.record_batch([_login(actor, kind) for actor, kind in ACTORS])
    return client


@pytest.mark.parametrize(
    ("types", "found"),
    [
        (["api_key"], ["key_ci", "key_tf"]),
        (["service", "system"], ["billing-svc", "sealtrail"]),
        # Recorded without a type: stored, and found, as user.
        (["user"], ["ann", "bob"]),
        (["api_key", "api_key", "API_KEY"], ["key_ci", "key_tf"]),  # duplicates harmless
        ([], [actor for actor, _ in ACTORS]),
    ],
)
def test_events_of_the_actor_types_asked(
    recorded: AuditClient, types: list[str], found: list[str]
) -> None:
    event_filter = build_filter(actions="user.login", actor_types=types)
    assert descriptions_found(recorded, event_filter) == found


def test_an_unspecified_or_unknown_actor_type_is_refused_naming_it(client: AuditClient) -> None:
    for given, named in (
        ([event_pb2.ACTOR_TYPE_UNSPECIFIED], "filter.actor_types[0]"),
        ([event_pb2.ACTOR_TYPE_API_KEY, 42], "filter.actor_types[1]"),
    ):
        sent = event_pb2.EventFilter(actor_types=given)  # type: ignore[arg-type]
        assert [field for field, _ in violations_refused(client, sent)] == [named]
    with pytest.raises(ValueError, match="actor_types: unknown value 'robot'"):
        build_filter(actor_types="robot")


def test_counts_by_actor_type_keyed_by_the_records_names(recorded: AuditClient) -> None:
    counts = recorded.count_events(build_filter(actions="user.login"), group_by="actor_type")
    assert counts.total == 6
    assert [(g.key, g.count) for g in counts.groups] == [
        ("api_key", 2),
        ("user", 2),
        ("service", 1),
        ("system", 1),
    ]
    narrowed = recorded.count_events(
        build_filter(actions="user.login", actor_types=["api_key", "system"]),
        group_by="actor_type",
    )
    assert narrowed.total == 3
    assert [(g.key, g.count) for g in narrowed.groups] == [("api_key", 2), ("system", 1)]


def test_an_export_of_api_keys_alone_is_checked_offline_and_its_filter_held(
    recorded: AuditClient, tmp_path: Path
) -> None:
    """The actor types an export was filtered by are in its signed filter:
    check_export says them, and a manifest saying others, or none, is refused."""
    found, signed, kept = exported_and_checked(
        recorded,
        tmp_path / "keys.ndjson",
        build_filter(actions="user.login", actor_types="api_key"),
    )
    assert found == ["key_ci", "key_tf"]
    assert json.loads(signed)["actorTypes"] == ["ACTOR_TYPE_API_KEY"]
    refused_when_told(
        kept,
        signed.replace("ACTOR_TYPE_API_KEY", "ACTOR_TYPE_USER"),
        json.dumps({k: v for k, v in json.loads(signed).items() if k != "actorTypes"}),
    )


def test_a_live_stream_follows_services_alone(recorded: AuditClient) -> None:
    with live_from_now(recorded, build_filter(actions="user.login", actor_types="service")) as live:
        recorded.record(action="user.login", actor_id="hal", actor_type="api_key")
        recorded.record(action="user.login", actor_id="ida")
        recorded.record(action="user.login", actor_id="jobs-svc", actor_type="service")
        first = next(live)
    assert first.actor.id == "jobs-svc"


def test_a_sink_given_fewer_or_other_actor_types_is_narrowed(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(actor_types=["api_key", "service"])))
    assert list(client.get_sink(created.sink.id).filter.actor_types) == [
        event_pb2.ACTOR_TYPE_API_KEY,
        event_pb2.ACTOR_TYPE_SERVICE,
    ]

    def update(*types: str) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(actor_types=types))

    assert update("service", "api_key", "service") == NOT_NARROWED  # the same
    assert update("service", "api_key", "system") == NOT_NARROWED  # more
    assert update("service") == NARROWED
    assert update("user") == NARROWED
    assert update() == NOT_NARROWED  # every type
    assert update("api_key") == NARROWED


def test_an_alert_rule_on_services_fires_on_one_alone(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("service deletes", "match", filter=build_filter(actor_types="service"))
    )
    client.record(action="doc.delete", actor_id="ann", actor_type="user")
    client.record(action="doc.delete", actor_id="key_ci", actor_type="api_key")
    fires = client.record(action="doc.delete", actor_id="jobs-svc", actor_type="service")
    the_only_alert(client, rule.rule.id, fires.event)


def test_a_rule_taking_every_actor_type_is_told_to_name_its_events(client: AuditClient) -> None:
    every = build_filter(actor_types=["user", "api_key", "service", "system"])
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_alert_rule(build_alert_rule("all", "match", filter=every))
    assert [field for field, _ in caught.value.field_violations] == [
        "rule.match.filter.actor_types"
    ]


def test_the_cli_queries_and_counts_by_actor_type(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch([_login(actor, kind) for actor, kind in ACTORS])
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    found = CliRunner().invoke(
        cli.main,
        ["query", "--format", "jsonl", "--action", "user.login", "--actor-type", "api_key",
         "--actor-type", "SYSTEM"],
    env=env)  # fmt: skip
    assert found.exit_code == 0, found.output
    assert [json.loads(line)["description"] for line in found.output.splitlines()] == [
        "key_tf",
        "sealtrail",
        "key_ci",
    ]
    counted = CliRunner().invoke(
        cli.main, ["stats", "--action", "user.login", "--by", "actor_type", "--json"], env=env
    )
    assert counted.exit_code == 0, counted.output
    groups = {g["key"]: g["count"] for g in json.loads(counted.output)["groups"]}
    assert groups == {"api_key": 2, "user": 2, "service": 1, "system": 1}
    table = CliRunner().invoke(cli.main, ["stats", "--by", "actor-type"], env=env)
    assert table.exit_code == 0 and "api_key" in table.output, table.output
    refused = CliRunner().invoke(cli.main, ["query", "--actor-type", "robot"], env=env)
    assert refused.exit_code == 2 and "--actor-type" in refused.output
    rule = CliRunner().invoke(
        cli.main,
        ["alerts", "create", "keys", "--kind", "match", "--actor-type", "api_key"],
        env=env,
    )
    assert rule.exit_code == 0, rule.output
    (created,) = client.list_alert_rules()
    assert list(created.match.filter.actor_types) == [event_pb2.ACTOR_TYPE_API_KEY]
