"""`EventFilter.severities`: exact severity levels in a query, a count, a
stream, an export, a sink or an alert rule. `min_severity` alone could not ask
for "warnings only" or "info and critical"; with it, both must hold
(helper-370)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealtrail import (
    AuditClient,
    EventCount,
    InvalidArgumentError,
    build_alert_rule,
    build_event,
    build_filter,
)
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

LEVELS = ["info", "warning", "error", "critical"]


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    """One doc.* event of each level, twice, in order."""
    client.record_batch(
        [build_event(action=f"doc.{level}", actor_id="u1", severity=level) for level in LEVELS * 2]
    )
    return client


def _actions(client: AuditClient, **criteria: object) -> list[str]:
    event_filter = build_filter(actions="doc.*", **criteria)  # type: ignore[arg-type]
    return [event.action for event in client.query(event_filter, order="oldest")]


@pytest.mark.parametrize(
    ("criteria", "found"),
    [
        ({"severities": "warning"}, ["warning"]),
        ({"severities": ["info", "critical"]}, ["info", "critical"]),
        ({"severities": ["critical", "info", "critical"]}, ["info", "critical"]),
        ({"severities": LEVELS}, LEVELS),
        # Both must hold: the levels given at min_severity or above.
        ({"severities": ["info", "error"], "min_severity": "warning"}, ["error"]),
        (
            {"severities": ["warning", "critical"], "min_severity": "warning"},
            ["warning", "critical"],
        ),
    ],
)
def test_exact_levels_are_matched_and_with_min_severity_both_hold(
    recorded: AuditClient, criteria: dict[str, object], found: list[str]
) -> None:
    assert _actions(recorded, **criteria) == [f"doc.{level}" for level in found * 2]


def test_a_count_matches_the_levels_too(recorded: AuditClient) -> None:
    counts = recorded.count_events(
        build_filter(actions="doc.*", severities=["info", "critical"]), group_by="severity"
    )
    assert counts.total == 4
    assert counts.groups == (EventCount("info", 2), EventCount("critical", 2))


def test_an_export_matches_the_levels_too(recorded: AuditClient, tmp_path: Path) -> None:
    path = tmp_path / "warnings.ndjson"
    manifest = recorded.export(path, filter=build_filter(severities="warning"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["action"] for line in lines] == ["doc.warning", "doc.warning"]
    assert manifest.row_count == 2


def test_a_live_stream_matches_the_levels(recorded: AuditClient) -> None:
    tree_size = recorded.get_checkpoint(fresh=True).tree_size
    live = recorded.stream(build_filter(severities=["warning", "critical"]), after_seq=tree_size)
    recorded.record_batch(
        [build_event(action=f"doc.{level}", actor_id="u2", severity=level) for level in LEVELS]
    )
    first, second = next(live), next(live)
    live.close()  # type: ignore[attr-defined]
    assert [first.action, second.action] == ["doc.warning", "doc.critical"]


@pytest.mark.parametrize(
    ("severities", "min_severity", "field"),
    [
        ([event_pb2.SEVERITY_WARNING, event_pb2.SEVERITY_UNSPECIFIED], 0, "filter.severities[1]"),
        ([9], 0, "filter.severities[0]"),
        # Both must hold, and no level would: refused, not an empty answer.
        ([event_pb2.SEVERITY_INFO, event_pb2.SEVERITY_WARNING], 3, "filter.severities"),
    ],
)
def test_a_level_that_is_none_or_matches_nothing_is_refused_naming_it(
    client: AuditClient, severities: list[int], min_severity: int, field: str
) -> None:
    event_filter = event_pb2.EventFilter(severities=severities, min_severity=min_severity)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError) as caught:
        list(client.query(event_filter))
    assert [name for name, _ in caught.value.field_violations] == [field]


def test_build_filter_refuses_a_level_that_is_none() -> None:
    with pytest.raises(ValueError, match="severities"):
        build_filter(severities=["warning", "notice"])


def test_a_sink_filter_that_lets_fewer_levels_through_is_narrowed(client: AuditClient) -> None:
    """Forwarding fewer levels weakens the audit trail: a warning, as any
    narrower filter; the same levels written the other way are no change."""
    created = client.create_sink(paused_webhook(build_filter(min_severity="warning")))

    def update(**criteria: object) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(**criteria))  # type: ignore[arg-type]

    narrowed = (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    kept = (event_pb2.SEVERITY_INFO, [])
    assert update(severities=["warning", "error", "critical"]) == kept  # the same levels
    assert update(severities=["warning", "critical"]) == narrowed  # error no longer
    assert update(severities=["warning", "critical", "info"]) == kept  # info more
    assert update(severities=["info", "warning", "critical"], min_severity="warning") == narrowed
    assert update() == kept
    assert list(client.get_sink(created.sink.id).filter.severities) == []


def test_an_alert_rule_s_filter_matches_the_levels(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("warnings", "match", filter=build_filter(severities="warning"))
    )
    client.record(action="doc.edit", actor_id="u1", severity="critical")
    fires = client.record(action="doc.edit", actor_id="u1", severity="warning")
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_matches_exact_levels_and_keeps_severity_the_minimum(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch(
        [build_event(action=f"doc.{level}", actor_id="u1", severity=level) for level in LEVELS]
    )
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}

    def actions(*options: str) -> list[str]:
        found = CliRunner().invoke(
            cli.main,
            ["query", "--format", "jsonl", "--order", "oldest", "--action", "doc.*", *options],
            env=env,
        )
        assert found.exit_code == 0, found.output
        return [json.loads(line)["action"] for line in found.output.splitlines()]

    assert actions("--exact-severity", "info", "--exact-severity", "CRITICAL") == [
        "doc.info",
        "doc.critical",
    ]
    assert actions("--severity", "error") == ["doc.error", "doc.critical"]
    both = ("--severity", "warning", "--exact-severity", "info", "--exact-severity", "error")
    assert actions(*both) == ["doc.error"]
    counted = CliRunner().invoke(
        cli.main, ["stats", "--by", "severity", "--exact-severity", "warning"], env=env
    )
    assert counted.exit_code == 0, counted.output
    assert "warning" in counted.output and "critical" not in counted.output
