"""Counts and alerts per credential (`Actor.credential`: a spike in one API
key's use may mean it leaked), against a real server: CountEvents by
COUNT_GROUP_BY_CREDENTIAL keyed by kind, id and hint, with filters, and
events without a credential under ""; `sealtrail stats --by credential`, the
report's top credentials; a threshold grouped by credential firing for one
leaked key's burst and not for another key's ordinary use (helper-443)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    build_alert_rule,
    build_event,
    build_filter,
    credential_of_key,
)
from sealtrail import _cli as cli
from sealtrail.v1 import alerting_pb2, event_pb2
from tests.conftest import ServerThread
from tests.integration.test_actor_credential import _event
from tests.integration.test_alert_group_keys import marked, rules  # noqa: F401 (fixtures)
from tests.integration.test_alerting import TUESDAY, alerts, fired_by, json_details, settle

# (actor, credential kind, id, hint, events): "" kind sends no credential.
CALLS = [
    ("ci", "api_key", "key_leaked", "a1b2", 4),
    ("ci", "api_key", "key_other", "", 2),
    ("ann", "oauth_token", "key_leaked", "zz", 1),  # the same id, another kind
    ("ann", "", "", "", 3),  # no credential
    ("bob", "api_key", 'key/"odd", id', "", 1),  # an id JSON must escape
]


def _key(kind: str, credential_id: str, hint: str) -> str:
    return json.dumps([kind, credential_id, hint], separators=(",", ":"))


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    client.record_batch(
        [_event(*call[:4]) for call in CALLS for _ in range(call[4])]
        + [_event("ci", "api_key", "key_other", "")]  # hint-less: key_other has 3
    )
    return client


def _groups(client: AuditClient, event_filter: event_pb2.EventFilter, **count: Any) -> list[Any]:
    return [(g.key, g.count) for g in client.count_events(event_filter, **count).groups]


def test_a_count_by_credential_groups_by_kind_and_id_keyed_with_the_hint(
    recorded: AuditClient,
) -> None:
    deletes = build_filter(actions="repo.delete")
    counts = recorded.count_events(deletes, group_by="credential")
    assert [(g.key, g.count) for g in counts.groups] == [
        (_key("api_key", "key_leaked", "a1b2"), 4),
        ("", 3),
        (_key("api_key", "key_other", ""), 3),
        (_key("api_key", 'key/"odd", id', ""), 1),
        (_key("oauth_token", "key_leaked", "zz"), 1),
    ]
    assert counts.total == 12 and counts.total_groups == 5 and not counts.truncated
    assert credential_of_key(counts.groups[0].key) == ("api_key", "key_leaked", "a1b2")
    assert credential_of_key(counts.groups[3].key) == ("api_key", 'key/"odd", id', "")
    assert credential_of_key("") == ("", "", "")
    with pytest.raises(ValueError, match="credential"):
        credential_of_key('["repository","acme/web"]')  # a resource's key
    # The largest only, and how many there are in all.
    top = recorded.count_events(deletes, group_by="credential", limit=1)
    assert top.truncated and top.total_groups == 5 and top.total == 12


def test_a_count_by_credential_takes_every_filter(recorded: AuditClient) -> None:
    """By credential within one id (either kind), within an actor, and the
    other way: one credential's events by action."""
    leaked = build_filter(actions="repo.delete", credential_id="key_leaked")
    assert _groups(recorded, leaked, group_by="credential") == [
        (_key("api_key", "key_leaked", "a1b2"), 4),
        (_key("oauth_token", "key_leaked", "zz"), 1),
    ]
    ann = build_filter(actions="repo.delete", actor="ann")
    assert _groups(recorded, ann, group_by="credential") == [
        ("", 3),
        (_key("oauth_token", "key_leaked", "zz"), 1),
    ]
    assert _groups(recorded, leaked, group_by="actor") == [("ci", 4), ("ann", 1)]
    nothing = build_filter(actions="repo.delete", credential_id="key_none")
    assert recorded.count_events(nothing, group_by="credential").groups == ()


def test_a_count_by_credential_is_recorded_as_a_read_naming_it(recorded: AuditClient) -> None:
    recorded.count_events(build_filter(actions="repo.delete"), group_by="credential")
    [read] = recorded.query(build_filter(actions="audit_log.queried"), order="newest", limit=1)
    assert json.loads(json_details(read))["group_by"] == "credential"


def test_the_cli_counts_by_credential_in_three_columns(
    recorded: AuditClient, server: ServerThread, tenant: str
) -> None:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    shown = CliRunner().invoke(
        cli.main, ["stats", "--by", "credential", "--action", "repo.delete"], env=env
    )
    assert shown.exit_code == 0, shown.output
    rows = [
        [cell.strip() for cell in line[1:-1].split(line[0])]
        for line in shown.output.splitlines()
        if line[:1] in ("\u2503", "\u2502")  # a header's or a row's
    ]
    assert rows == [
        ["credential kind", "credential id", "hint", "events", "share"],
        ["api_key", "key_leaked", "...a1b2", "4", "33.3%"],
        ["(none)", "", "", "3", "25.0%"],
        ["api_key", "key_other", "", "3", "25.0%"],
        ["api_key", 'key/"odd", id', "", "1", "8.3%"],
        ["oauth_token", "key_leaked", "...zz", "1", "8.3%"],
    ]
    assert "total: 12 events" in shown.output


def test_a_report_lists_the_top_credentials(recorded: AuditClient) -> None:
    report = recorded.activity_report(build_filter(actions="repo.delete"), top=2)
    assert [(g.key, g.count) for g in report.top_credentials.groups] == [
        (_key("api_key", "key_leaked", "a1b2"), 4),
        ("", 3),
    ]
    assert report.top_credentials.distinct == 5
    listed = report.to_dict()["top_credentials"]
    assert listed["groups"][0] == {
        "key": _key("api_key", "key_leaked", "a1b2"),
        "kind": "api_key",
        "id": "key_leaked",
        "hint": "a1b2",
        "count": 4,
    }
    assert listed["groups"][1] == {"key": "", "kind": "", "id": "", "hint": "", "count": 3}
    markdown = report.to_markdown()
    assert "## Top 2 credentials of 5" in markdown
    assert "| api\\_key | key\\_leaked | ...a1b2 | 4 |" in markdown


def _record_on_tuesday(client: AuditClient, event: event_pb2.Event, second: float) -> None:
    """Records `event` as occurring `second`s after TUESDAY."""
    event.occurred_at.FromDatetime(TUESDAY + timedelta(seconds=second))
    client.record(event)


def _per_credential(
    name: str, event_filter: event_pb2.EventFilter, count: int
) -> alerting_pb2.AlertRule:
    """A threshold rule of `count` events within 60 s per credential."""
    return build_alert_rule(
        name,
        "threshold",
        filter=event_filter,
        count=count,
        window_seconds=60,
        group_by="credential",
    )


def _call(client: AuditClient, kind: str, credential_id: str, second: float) -> None:
    """A call of service `svc` with that credential (none for kind ""), the
    leaked key's with its hint, `second`s after TUESDAY."""
    event = _event("svc", kind, credential_id, "a1b2" if credential_id == "key_leaked" else "")
    _record_on_tuesday(client, event, second)


def test_a_threshold_per_credential_fires_for_the_leaked_key_alone(
    client: AuditClient,
    rules: Any,  # noqa: F811 (the fixture)
    marked: None,  # noqa: F811
) -> None:
    """One service acts with two keys: the leaked one's burst fires, the
    other's ordinary use beside it does not, nor do events without a
    credential, which a rule per actor would have counted together."""
    rule = rules(_per_credential("key burst", build_filter(actions="repo.delete"), 5))
    assert rule.threshold.group_by == alerting_pb2.ALERT_GROUP_BY_CREDENTIAL
    listed = {r.id: r for r in client.list_alert_rules()}[rule.id]
    assert listed.threshold.group_by == alerting_pb2.ALERT_GROUP_BY_CREDENTIAL
    for n in range(4):  # ordinary use: four a minute of the other key
        _call(client, "api_key", "key_other", 15 * n)
    for n in range(6):  # no credential: not counted
        _call(client, "", "", n)
    for n in range(4):  # the same id of another kind: its own group
        _call(client, "oauth_token", "key_leaked", n)
    for n in range(4):  # the leaked key: one short
        _call(client, "api_key", "key_leaked", 10 + n)
    settle(client)
    assert fired_by(client, rule.id) == []
    _call(client, "api_key", "key_leaked", 20)  # its fifth within the minute
    _call(client, "api_key", "key_other", 61)  # the other key: still ordinary
    settle(client)
    [fired] = fired_by(client, rule.id)
    assert fired["count"] == 5 and fired["window_seconds"] == 60
    assert fired["group"] == {"credential": {"kind": "api_key", "id": "key_leaked", "hint": "a1b2"}}
    [alert] = [event for event in alerts(client) if event.resource.id == rule.id]
    assert alert.description == (
        "Alert 'key burst': at least 5 events within 60 s for credential api_key key_leaked ...a1b2"
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"exact_actor_ids": True}, "rule.threshold.exact_actor_ids"),
        ({"group_by": 4}, "rule.threshold.group_by"),
    ],
)
def test_a_threshold_per_credential_refuses_what_it_cannot_take(
    client: AuditClient, changes: dict[str, Any], field: str
) -> None:
    rule = _per_credential("key burst", build_filter(actions="repo.delete"), 5)
    for name, value in changes.items():
        setattr(rule.threshold, name, value)
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_alert_rule(rule)
    assert [name for name, _ in refused.value.field_violations] == [field]
    assert client.list_alert_rules() == []


def test_a_threshold_and_a_spike_group_by_credential_and_no_other_kind(
    server: ServerThread, tenant: str
) -> None:
    with pytest.raises(ValueError, match="group_by"):
        build_alert_rule(
            "new key", "match", filter=build_filter(actions="repo.delete"),
            group_by="credential",
        )  # fmt: skip
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    refused = CliRunner().invoke(
        cli.main,
        ["alerts", "create", "every delete", "--kind", "match", "--action", "repo.delete",
         "--group-by", "credential"],
        env=env,
    )  # fmt: skip
    assert refused.exit_code == 2 and "--group-by" in refused.output, refused.output
    spike = CliRunner().invoke(
        cli.main,
        ["alerts", "create", "spike", "--kind", "spike", "--action", "repo.delete",
         "--window", "600", "--baseline-windows", "24", "--factor", "5", "--min-count", "20",
         "--group-by", "credential"],
        env=env,
    )  # fmt: skip
    assert spike.exit_code == 0, spike.output
    made = CliRunner().invoke(
        cli.main,
        ["alerts", "create", "key burst", "--kind", "threshold", "--action", "repo.delete",
         "--count", "5", "--window", "60", "--group-by", "credential"],
        env=env,
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    listed = CliRunner().invoke(cli.main, ["alerts"], env=env)
    assert "by credential" in listed.output, listed.output


def _plan_edit(client: AuditClient, key_id: str, route: str, field: str, second: float) -> None:
    """A PATCH of `route` by service `svc` with API key `key_id`, changing
    `field`, `second`s after TUESDAY."""
    event = build_event(
        action="plan.update",
        actor_id="svc",
        actor_type="api_key",
        credential_kind="api_key",
        credential_id=key_id,
        http_method="PATCH",
        http_route=route,
        http_status_code=200,
        changes=[(field, 1, 2)],
    )
    _record_on_tuesday(client, event, second)


def test_a_threshold_per_credential_of_a_route_and_a_changed_field_counts_both(
    client: AuditClient,
    rules: Any,  # noqa: F811 (the fixture)
    marked: None,  # noqa: F811
) -> None:
    """A threshold per credential whose filter names a route and a changed
    field (helper-449) counts a key's events of both alone, and its alert
    keeps the trigger's request in its details, not in a context of its own."""
    rule = rules(
        _per_credential(
            "limits raised",
            build_filter(http_routes="/v1/plans/{id}", changed_fields="rate_limit"),
            3,
        )
    )
    for n in range(3):
        _plan_edit(client, "key_a", "/v1/plans/{id}", "name", n)  # another field
        _plan_edit(client, "key_a", "/v1/teams/{id}", "rate_limit", n)  # another route
        _plan_edit(client, "key_b", "/v1/plans/{id}", "rate_limit", n + 0.5)  # three: fires
    _plan_edit(client, "key_a", "/v1/plans/{id}", "rate_limit", 4)
    _plan_edit(client, "key_a", "/v1/plans/{id}", "rate_limit", 5)  # two of both, six of either
    settle(client)
    assert [fired["group"] for fired in fired_by(client, rule.id)] == [
        {"credential": {"kind": "api_key", "id": "key_b", "hint": ""}}
    ]
    _plan_edit(client, "key_a", "/v1/plans/{id}", "rate_limit", 6)
    settle(client)
    fired = fired_by(client, rule.id)
    assert [each["group"]["credential"]["id"] for each in fired] == ["key_b", "key_a"]
    assert fired[1]["trigger_request"] == {
        "method": "PATCH",
        "route": "/v1/plans/{id}",
        "status": 200,
    }
    [alert] = [e for e in alerts(client) if e.resource.id == rule.id and "key_a" in e.description]
    assert not alert.context.http_route and not alert.changes
