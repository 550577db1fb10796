"""Spike rules against a real server (ADR 0132): a window's matching events at
least `factor` times the average of the windows before it, and at least
`min_count`, fire once; steady traffic at the same volume, a spike below
`min_count` and a tenant with no history in the baseline's windows do not;
bad settings are refused naming the field, by the API and by `sealtrail
alerts create`. Events are backdated into windows a day ago (occurred_at),
as the threshold's tests place theirs, so no test waits for time to pass."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, InvalidArgumentError, build_alert_rule, build_filter
from sealtrail.v1 import alerting_pb2
from sealtrail_server.alerts.evaluator import Evaluator
from tests.alerts_cli import alerts_cli
from tests.conftest import ServerThread, database_of_its_own
from tests.integration.test_alerting import (
    _appender_of,
    _wait_until_evaluated,
    alerts,
    fired_by,
    marked,
    own_sql,
    rules,
    settle,
    unevaluated,
)

__all__ = ["marked", "own_sql", "rules", "unevaluated"]  # fixtures

WINDOW = 600
BASELINE = 6
FAILED = build_filter(actions="user.login", outcomes="failure")
# The start of a ten-minute window (aligned to the epoch, as the rule's are)
# a day ago: its baseline's windows are the hour before it.
NOW = datetime.now(UTC)
SPIKE = datetime.fromtimestamp((NOW.timestamp() - 86400) // WINDOW * WINDOW, UTC)


def spike_rule(**settings: Any) -> alerting_pb2.AlertRule:
    given: dict[str, Any] = {
        "window_seconds": WINDOW, "baseline_windows": BASELINE, "factor": 5.0, "min_count": 10,
        "filter": FAILED,
    } | settings  # fmt: skip
    return build_alert_rule("login spike", "spike", **given)


def logins(client: AuditClient, window: int, count: int, action: str = "user.login") -> None:
    """`count` failed logins spread over the window `window` windows after
    SPIKE's (negative: one of the baseline's)."""
    start = SPIKE + timedelta(seconds=window * WINDOW)
    for n in range(count):
        at = start + timedelta(seconds=n * (WINDOW - 1) / max(count, 1))
        client.record(action=action, actor_id=f"u{n}", outcome="failure", occurred_at=at)


def test_a_spike_fires_once_with_its_count_baseline_and_factor(
    client: AuditClient, rules: Any, marked: None
) -> None:
    rule = rules(spike_rule())
    for window in range(-BASELINE, 0):
        logins(client, window, 2)  # an average of 2 a window: the line is 5 x 2 = 10
    logins(client, 0, 9)
    settle(client)
    assert fired_by(client, rule.id) == []  # 9: below the line
    logins(client, 0, 6)  # the 10th fires; the rest of the spike does not again
    settle(client)
    [fired] = fired_by(client, rule.id)
    assert fired["count"] == 10
    assert fired["baseline_average"] == 2.0 and fired["baseline_windows"] == BASELINE
    assert fired["factor"] == 5.0 and fired["min_count"] == 10
    assert fired["window_seconds"] == WINDOW
    assert fired["window_start"] == SPIKE.strftime("%Y-%m-%dT%H:%M:%SZ")
    [alert] = [event for event in alerts(client) if event.resource.id == rule.id]
    assert "10 events in 600 s" in alert.description
    assert "5x or more the average 2.0 of the 6 windows before" in alert.description
    [listed] = [r for r in client.list_alert_rules() if r.id == rule.id]
    assert listed.spike.factor == 5.0 and listed.spike.baseline_windows == BASELINE


def test_steady_traffic_at_the_same_volume_does_not_fire(
    client: AuditClient, rules: Any, marked: None
) -> None:
    rule = rules(spike_rule())
    for window in range(-BASELINE, 1):
        logins(client, window, 15)  # 15 each window, the spike's volume: 1x the average
    settle(client)
    assert fired_by(client, rule.id) == []


def test_a_spike_below_min_count_does_not_fire_and_at_it_does(
    client: AuditClient, rules: Any, marked: None
) -> None:
    rule = rules(spike_rule(min_count=8))
    logins(client, -BASELINE, 1, action="user.logout")  # history, but no failed login in it
    logins(client, 0, 7)  # from 0 to 7 in the night: infinitely more, but fewer than 8
    settle(client)
    assert fired_by(client, rule.id) == []
    logins(client, 0, 1)
    settle(client)
    [fired] = fired_by(client, rule.id)
    assert fired["count"] == 8 and fired["baseline_average"] == 0.0


def test_with_no_history_in_the_baseline_it_does_not_fire_and_with_less_averages_what_exists(
    client: AuditClient, rules: Any, marked: None
) -> None:
    rule = rules(spike_rule())
    logins(client, 0, 30)  # nothing of the tenant's in the hour before: no baseline
    settle(client)
    assert fired_by(client, rule.id) == []
    # The next window has one before it (the one above, 30 events): averaged
    # over that one window, not over six, 160 is 5.3x, not 32x, the average.
    logins(client, 1, 149)
    settle(client)
    assert fired_by(client, rule.id) == []
    logins(client, 1, 1)
    settle(client)
    [fired] = fired_by(client, rule.id)
    assert fired["baseline_windows"] == 1 and fired["baseline_average"] == 30.0
    assert fired["count"] == 150


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"window_seconds": 59}, "rule.spike.window_seconds"),
        ({"window_seconds": 86401}, "rule.spike.window_seconds"),
        ({"baseline_windows": 0}, "rule.spike.baseline_windows"),
        ({"baseline_windows": 1001}, "rule.spike.baseline_windows"),
        ({"window_seconds": 86400, "baseline_windows": 36}, "rule.spike.baseline_windows"),
        ({"factor": 1.0}, "rule.spike.factor"),
        ({"factor": 1000.5}, "rule.spike.factor"),
        ({"factor": math.nan}, "rule.spike.factor"),
        ({"min_count": 0}, "rule.spike.min_count"),
        ({"min_count": 100_001}, "rule.spike.min_count"),
        ({"filter": build_filter()}, "rule.spike.filter"),
        (
            {"filter": build_filter(exclude_actions="audit_log.*")},
            "rule.spike.filter.exclude_actions",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_field(
    client: AuditClient, settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_alert_rule(spike_rule(**settings))
    named = dict(refused.value.field_violations)
    assert list(named) == [field], named
    assert client.list_alert_rules() == []


def test_the_cli_creates_and_lists_a_spike_rule_and_names_a_bad_option(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    cli = alerts_cli(server, tenant)
    common = ["--kind", "spike", "--action", "user.login", "--outcome", "failure"]
    code, said = cli("create", "spike", *common, "--window", "600", "--baseline-windows",
                     "24", "--factor", "5", "--min-count", "0")  # fmt: skip
    assert code != 0 and "--min-count: must be 1 to 100,000" in said, said
    code, said = cli("create", "spike", *common, "--count", "5")
    assert code == 2 and "--count" in said and "only with --kind threshold" in said, said
    code, said = cli("create", "spike", *common, "--window", "600", "--baseline-windows",
                     "24", "--factor", "5", "--min-count", "20")  # fmt: skip
    assert code == 0, said
    [rule] = client.list_alert_rules()
    assert (rule.spike.window_seconds, rule.spike.baseline_windows) == (600, 24)
    assert (rule.spike.factor, rule.spike.min_count) == (5.0, 20)
    code, said = cli("update", rule.id, "--factor", "2.5")
    assert code == 0, said
    code, said = cli()
    assert "spike: 2.5x the average of 24 windows of 600 s, at least 20" in said, said


def _spike_then_more(client: AuditClient, rule_id: str, url: str, tenant: str) -> None:
    """The baseline (2 a window) and a spike of 15 in SPIKE's window, which
    fires once, evaluated to the end."""
    for window in range(-BASELINE, 0):
        logins(client, window, 2)
    logins(client, 0, 15)
    _wait_until_evaluated(url, tenant)
    [fired] = fired_by(client, rule_id)
    assert fired["window_start"] == SPIKE.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fired_again_only_in_the_next_window(
    client: AuditClient, rule_id: str, url: str, tenant: str
) -> None:
    """More of the spike in its window, evaluated by a process that took the
    rule up since: no second alert there; then a spike in the next window
    fires (its baseline 2 x 5 + 25 = 35 in 6 windows: a line of 29.2, the 30th)."""
    logins(client, 0, 10)
    _wait_until_evaluated(url, tenant)
    assert [fired["window_start"] for fired in fired_by(client, rule_id)] == [
        SPIKE.strftime("%Y-%m-%dT%H:%M:%SZ")
    ]
    logins(client, 1, 30)
    _wait_until_evaluated(url, tenant)
    later = (SPIKE + timedelta(seconds=WINDOW)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [(fired["window_start"], fired["count"]) for fired in fired_by(client, rule_id)] == [
        (SPIKE.strftime("%Y-%m-%dT%H:%M:%SZ"), 10),
        (later, 30),
    ]


def test_a_spike_fired_before_a_restart_does_not_fire_again_in_its_window_after_it(
    migrated_database_url: str, tenant: str
) -> None:
    """A server fires a spike and stops; the next server, on the same
    database, evaluates more of the same window's events (its count taken
    again in SQL, over the line): the rule's alerts say that window fired,
    and it stays quiet there; the next window's spike fires."""
    with database_of_its_own(migrated_database_url, "spike_restart") as url:
        first = ServerThread(url)
        try:
            with AuditClient(first.target, token=first.token(tenant)) as client:
                rule = client.create_alert_rule(spike_rule()).rule
                _spike_then_more(client, rule.id, url, tenant)
        finally:
            first.close()
        second = ServerThread(url)
        try:
            with AuditClient(second.target, token=second.token(tenant)) as client:
                _fired_again_only_in_the_next_window(client, rule.id, url, tenant)
        finally:
            second.close()


def test_a_spike_fired_before_its_lease_moved_does_not_fire_again_in_its_window(
    unevaluated: ServerThread, own_sql: psycopg.Connection[Any], tenant: str
) -> None:
    """As across a restart, across a lease that moves to another process of
    the same database while the first still runs (its lease lapsed: a
    partition, a stall)."""
    server = unevaluated
    with (
        AuditClient(server.target, token=server.token(tenant)) as client,
        _appender_of(server) as appender,
    ):
        here, elsewhere = Evaluator(server.database, appender), Evaluator(server.database, appender)
        try:
            rule = client.create_alert_rule(spike_rule()).rule
            assert tenant in server.run(here._claim())
            for window in range(-BASELINE, 0):
                logins(client, window, 2)
            logins(client, 0, 15)
            while server.run(here._step(tenant)) == 0.0:
                pass  # to the end of the log
            assert len(fired_by(client, rule.id)) == 1
            own_sql.execute(
                "UPDATE alert_cursors SET lease_until = now() - interval '1 second'"
                " WHERE tenant_id = %s",
                [tenant],
            )
            assert tenant in server.run(elsewhere._claim())
            logins(client, 0, 10)
            while server.run(elsewhere._step(tenant)) == 0.0:
                pass
            assert len(fired_by(client, rule.id)) == 1  # that window fired already
            logins(client, 1, 30)
            while server.run(elsewhere._step(tenant)) == 0.0:
                pass
            assert [fired["count"] for fired in fired_by(client, rule.id)] == [10, 30]
        finally:
            server.run(here._release())
            server.run(elsewhere._release())
