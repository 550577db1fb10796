"""A match, threshold or off-hours rule must say which events it watches. The
empty filter was refused ("a rule on every event is noise"), but a filter
whose only criteria take every event (`min_severity: info`, every level or
outcome), leave a few actions out (`exclude_actions`) or bound only when
(`occurred_after`, `occurred_before`) was taken as narrowing it, and fired on
nearly every event (helper-375). Refused by the API naming the field and
why, by `sealtrail alerts` naming the option and by the console naming the
input; a rule stored before keeps firing, and its condition sent again
unchanged (an edit of its name) is taken. Against a real server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from google.protobuf import json_format

from sealtrail import AuditClient, InvalidArgumentError, build_alert_rule, build_filter
from sealtrail.v1 import alerting_pb2
from tests.alerts_cli import alerts_cli
from tests.conftest import ServerThread

LEVELS = ["info", "warning", "error", "critical"]
YESTERDAY = datetime.now(UTC) - timedelta(days=1)


@pytest.mark.parametrize(
    ("rule", "fields"),
    [
        (
            build_alert_rule("x", "match", filter=build_filter(exclude_actions="audit_log.*")),
            ["rule.match.filter.exclude_actions"],
        ),
        (
            build_alert_rule("x", "match", filter=build_filter(min_severity="info")),
            ["rule.match.filter.min_severity"],
        ),
        (
            build_alert_rule(
                "x",
                "threshold",
                filter=build_filter(min_severity="info"),
                count=5,
                window_seconds=60,
                group_by="ip",
            ),
            ["rule.threshold.filter.min_severity"],
        ),
        (
            build_alert_rule(
                "x",
                "off_hours",
                filter=build_filter(severities=LEVELS),
                start_hour=8,
                end_hour=18,
            ),
            ["rule.off_hours.filter.severities"],
        ),
        (
            build_alert_rule(
                "x", "match", filter=build_filter(outcomes=["success", "failure", "denied"])
            ),
            ["rule.match.filter.outcomes"],
        ),
        (
            build_alert_rule("x", "match", filter=build_filter(since=YESTERDAY)),
            ["rule.match.filter.occurred_after"],
        ),
        (
            build_alert_rule(
                "x",
                "match",
                filter=build_filter(exclude_actions="audit_log.*", min_severity="info"),
            ),
            ["rule.match.filter.min_severity", "rule.match.filter.exclude_actions"],
        ),
    ],
)
def test_a_rule_whose_filter_narrows_nothing_is_refused_naming_the_field(
    client: AuditClient, rule: alerting_pb2.AlertRule, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_alert_rule(rule)
    named = dict(refused.value.field_violations)
    assert sorted(named) == sorted(fields), named
    assert all("which events" in said for said in named.values()), named
    assert client.list_alert_rules() == []


def test_a_criterion_that_narrows_beside_them_is_enough(client: AuditClient) -> None:
    for name, kind, event_filter in (
        ("keys", "match", build_filter(actions="api_key.*", exclude_actions="*.read")),
        ("any login", "match", build_filter(actions="user.login", min_severity="info")),
        ("warnings", "match", build_filter(min_severity="warning")),
        ("some levels", "match", build_filter(severities=["info", "critical"])),
        ("failures", "match", build_filter(outcomes=["failure", "denied"])),
        # A new address or country needs no criterion, so none that narrows.
        ("new address", "new_ip", build_filter(exclude_actions="audit_log.*")),
    ):
        client.create_alert_rule(build_alert_rule(name, kind, filter=event_filter))  # type: ignore[arg-type]
    assert len(client.list_alert_rules()) == 6


def test_an_update_to_such_a_filter_is_refused_and_changes_nothing(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("logins", "match", filter=build_filter(actions="user.login"))
    ).rule
    rule.match.filter.CopyFrom(build_filter(exclude_actions="audit_log.*"))
    with pytest.raises(InvalidArgumentError) as refused:
        client.update_alert_rule(rule)
    assert [field for field, _ in refused.value.field_violations] == [
        "rule.match.filter.exclude_actions"
    ]
    [now] = client.list_alert_rules()
    assert list(now.match.filter.actions) == ["user.login"] and not now.match.filter.exclude_actions


def test_a_rule_stored_before_keeps_firing_and_may_be_renamed_with_its_condition(
    client: AuditClient, sql: psycopg.Connection[Any], tenant: str
) -> None:
    """Refused only as given: the evaluator takes such a rule up (as every rule,
    validated again) and an edit that sends its condition back unchanged (the
    console's form sends it whole) is not refused for it."""
    rule = client.create_alert_rule(
        build_alert_rule("all but reads", "match", filter=build_filter(actions="a.b"))
    ).rule
    sql.execute(
        "UPDATE alert_rules SET condition = %s WHERE tenant_id = %s AND id = %s",
        [
            json.dumps({"kind": "match", "filter": {"excludeActions": ["audit_log.*"]}}),
            tenant,
            rule.id,
        ],
    )
    fired_on = client.record(action="doc.edit", actor_id="u").event.id
    deadline = time.monotonic() + 20
    while not (alerts := list(client.query(build_filter(actions="security.alert")))):
        assert time.monotonic() < deadline, "no alert"
        time.sleep(0.05)
    triggers = [json_format.MessageToDict(alert.details)["trigger_event_id"] for alert in alerts]
    assert triggers == [fired_on]
    [stored] = client.list_alert_rules()
    stored.name = "all but the log's reads"
    renamed = client.update_alert_rule(stored).rule
    assert renamed.name == "all but the log's reads"
    assert list(renamed.match.filter.exclude_actions) == ["audit_log.*"]
    off = client.update_alert_rule(
        alerting_pb2.AlertRule(id=rule.id, disabled=True), fields=["disabled"]
    )
    assert off.rule.disabled


def test_the_cli_names_the_option(server: ServerThread, client: AuditClient, tenant: str) -> None:
    cli = alerts_cli(server, tenant)
    for options, named in (
        (["--exclude-action", "audit_log.*"], "--exclude-action"),
        (["--severity", "info"], "--severity"),
    ):
        code, output = cli("create", "x", "--kind", "match", *options)
        assert code == 2 and named in output and "which events" in output, output
    assert client.list_alert_rules() == []
    code, output = cli(
        "create", "x", "--kind", "match", "--action", "api_key.*", "--exclude-action", "*.read"
    )
    assert code == 0, output


def test_the_console_names_the_field(console_server: ServerThread, tenant: str) -> None:
    url = f"http://127.0.0.1:{console_server.service.console_port}/api/alert-rules"
    body = {"rule": {"name": "x", "match": {}}, "filter": {"exclude_actions": "audit_log.*"}}
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {console_server.token(tenant, 'admin')}",
            "Origin": f"http://127.0.0.1:{console_server.service.console_port}",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    with refused.value as error:
        assert error.code == 400
        answer = json.loads(error.read())
    assert [named["field"] for named in answer["fields"]] == [
        "rule.match.filter.exclude_actions"
    ], answer
    with AuditClient(console_server.target, token=console_server.token(tenant)) as admin:
        assert admin.list_alert_rules() == []
