"""`EventFilter.exclude_actions`: actions left out of a query, a count, a
stream, an export, a sink or an alert rule, in the forms `actions` takes.
Every read of the log is itself recorded (`audit_log.queried`, ...), so a
team's "recent activity" fills with its own searches: `audit_log.*` left out
shows the activity alone (helper-366)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealtrail import AuditClient, InvalidArgumentError, build_event, build_filter
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

ACTIONS = ["api_key.create", "api_key.read", "member.invite", "member.remove", "doc.read"]


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    client.record_batch([build_event(action=action, actor_id="u1") for action in ACTIONS])
    for _ in range(3):  # three searches, each recorded as audit_log.queried
        list(client.query(build_filter(actions="member.*")))
    return client


def _actions(client: AuditClient, event_filter: event_pb2.EventFilter) -> list[str]:
    return [event.action for event in client.query(event_filter, order="oldest")]


def test_the_log_s_own_records_of_reads_are_left_out(recorded: AuditClient) -> None:
    everything = _actions(recorded, event_pb2.EventFilter())
    assert everything.count("audit_log.queried") >= 3  # the searches, and this one's too
    activity = _actions(recorded, build_filter(exclude_actions="audit_log.*"))
    assert activity == ACTIONS


@pytest.mark.parametrize(
    ("actions", "excluded", "found"),
    [
        (
            (),
            ["api_key.read", "audit_log.queried"],
            ["api_key.create", "member.invite", "member.remove", "doc.read"],
        ),
        ((), ["*.read", "audit_log.*"], ["api_key.create", "member.invite", "member.remove"]),
        (["api_key.*"], ["*.read"], ["api_key.create"]),
        (["member.*", "doc.read"], ["member.remove"], ["member.invite", "doc.read"]),
        (["api_key.create"], ["api_key.*"], []),  # left out wins
    ],
)
def test_exact_prefix_and_suffix_actions_are_left_out_whatever_else_matches(
    recorded: AuditClient, actions: list[str], excluded: list[str], found: list[str]
) -> None:
    event_filter = build_filter(actions=actions, exclude_actions=excluded)
    assert _actions(recorded, event_filter) == found


def test_a_count_leaves_them_out_too(recorded: AuditClient) -> None:
    counts = recorded.count_events(
        build_filter(exclude_actions=["audit_log.*", "member.*"]), group_by="action"
    )
    assert counts.total == 3
    assert {group.key for group in counts.groups} == {"api_key.create", "api_key.read", "doc.read"}


def test_an_export_leaves_them_out_too(recorded: AuditClient, tmp_path: Path) -> None:
    path = tmp_path / "activity.ndjson"
    manifest = recorded.export(path, filter=build_filter(exclude_actions="audit_log.*"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["action"] for line in lines] == ACTIONS
    assert manifest.row_count == len(ACTIONS)


def test_a_live_stream_leaves_them_out(recorded: AuditClient) -> None:
    tree_size = recorded.get_checkpoint(fresh=True).tree_size
    live = recorded.stream(build_filter(exclude_actions="audit_log.*"), after_seq=tree_size)
    recorded.record(action="doc.read", actor_id="u2")  # the stream's own record comes first
    first = next(live)
    live.close()  # type: ignore[attr-defined]
    assert (first.action, first.actor.id) == ("doc.read", "u2")


def test_an_action_left_out_that_is_no_action_is_refused_naming_it(client: AuditClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        list(client.query(build_filter(exclude_actions=["audit_log.*", "Audit Log"])))
    assert [field for field, _ in caught.value.field_violations] == ["filter.exclude_actions[1]"]


def test_a_sink_filter_that_leaves_out_more_is_narrowed_and_a_warning(client: AuditClient) -> None:
    """A sink made to leave out what it forwarded is a change that weakens the
    audit trail (docs/api.md): recorded as a warning, as a narrower filter is."""
    created = client.create_sink(paused_webhook(build_filter(exclude_actions="audit_log.*")))
    stored = client.get_sink(created.sink.id)
    assert list(stored.filter.exclude_actions) == ["audit_log.*"]

    def update(excluded: list[str]) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(exclude_actions=excluded))

    assert update(["audit_log.*", "*.read"]) == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update(["audit_log.queried"]) == (event_pb2.SEVERITY_INFO, [])  # leaves out less
    assert update(["audit_log.*"]) == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update([]) == (event_pb2.SEVERITY_INFO, [])


def test_an_alert_rule_s_filter_leaves_them_out(client: AuditClient) -> None:
    from sealtrail import build_alert_rule

    rule = client.create_alert_rule(
        build_alert_rule(
            "keys", "match", filter=build_filter(actions="api_key.*", exclude_actions="*.read")
        )
    )
    client.record(action="api_key.read", actor_id="u1")
    fires = client.record(action="api_key.create", actor_id="u1")
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_leaves_them_out(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch([build_event(action=action, actor_id="u1") for action in ACTIONS])
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    list(client.query())  # one read recorded
    found = CliRunner().invoke(
        cli.main,
        [
            "query",
            "--format",
            "jsonl",
            "--exclude-action",
            "audit_log.*",
            "--exclude-action",
            "*.read",
        ],
        env=env,
    )
    assert found.exit_code == 0, found.output
    actions = {json.loads(line)["action"] for line in found.output.splitlines()}
    assert actions == {"api_key.create", "member.invite", "member.remove"}
    counted = CliRunner().invoke(
        cli.main, ["stats", "--by", "action", "--exclude-action", "audit_log.*"], env=env
    )
    assert counted.exit_code == 0, counted.output
    assert "audit_log" not in counted.output and "member.remove" in counted.output
