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

from sealtrail import AuditClient, InvalidArgumentError, build_alert_rule, build_filter, build_sink
from sealtrail.v1 import alerting_pb2
from sealtrail_server.alerts.evaluator import Evaluator
from tests.alerts_cli import alerts_cli
from tests.clock import Clock
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
from tests.refused_inserts import updates_refused

__all__ = ["marked", "own_sql", "rules", "unevaluated"]  # fixtures

WINDOW = 600
BASELINE = 6
FAILED = build_filter(actions="user.login", outcomes="failure")
# The start of a ten-minute window (aligned to the epoch, as the rule's are)
# a day ago: its baseline's windows are the hour before it.
NOW = datetime.now(UTC)
SPIKE = datetime.fromtimestamp((NOW.timestamp() - 86400) // WINDOW * WINDOW, UTC)
SPIKE_TEXT = SPIKE.strftime("%Y-%m-%dT%H:%M:%SZ")


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
    assert "spike: 2.5x the average of 24 windows of 10m, at least 20" in said, said


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


def _to_the_end(server: ServerThread, evaluator: Evaluator, tenant: str) -> None:
    """Steps `evaluator` (its lease claimed) through the tenant's log, to its end."""
    while server.run(evaluator._step(tenant)) == 0.0:
        pass


def test_a_spike_alert_recorded_by_a_step_that_failed_before_counting_it_is_counted_and_queued(
    unevaluated: ServerThread, own_sql: psycopg.Connection[Any], tenant: str
) -> None:
    """A step records a spike's alert, then fails before the rule counts it
    and queues it for the rule's sinks (the database refuses the count). Run
    again from the same cursor, the step found that alert and took the
    window as fired: the alert was never counted nor sent. The alert found
    was set off by this same event: it is counted and queued, once."""
    server = unevaluated
    with (
        AuditClient(server.target, token=server.token(tenant)) as client,
        _appender_of(server) as appender,
    ):
        siem = client.create_sink(
            # Its filter does not take alerts: the rule queues each for it.
            build_sink("siem", "webhook", url="http://127.0.0.1:9/", filter=FAILED,
                       secrets=["whsec_" + "A" * 44])
        ).sink  # fmt: skip
        rule = client.create_alert_rule(spike_rule(sink_ids=[siem.id])).rule
        evaluator = Evaluator(server.database, appender)
        try:
            assert tenant in server.run(evaluator._claim())
            for window in range(-BASELINE, 0):
                logins(client, window, 2)
            logins(client, 0, 10)
            with (
                updates_refused(own_sql, "alert_rules", tenant, where="NEW.fired > OLD.fired"),
                pytest.raises(psycopg.Error, match="refused by the test"),
            ):
                server.run(evaluator._step(tenant))
            [recorded] = fired_by(client, rule.id)  # recorded, yet neither counted nor queued
            assert [r.fired for r in client.list_alert_rules()] == [0]
            _to_the_end(server, evaluator, tenant)
        finally:
            server.run(evaluator._release())
        [fired] = fired_by(client, rule.id)
        assert fired == recorded and fired["count"] == 10
        assert [r.fired for r in client.list_alert_rules()] == [1]
        [alert] = [event.seq for event in alerts(client) if event.resource.id == rule.id]
        queued = "SELECT first_seq FROM sink_replays WHERE tenant_id = %s"
        assert own_sql.execute(queued, [tenant]).fetchall() == [(alert,)]  # for its sink, once


def test_a_rule_enabled_again_fires_no_second_alert_in_a_window_and_counts_from_its_start(
    client: AuditClient, rules: Any, marked: None
) -> None:
    """One alert a window a rule, whatever it went through: disabled and
    enabled again within a window that fired, it stays quiet there. And its
    window counts the events it watched, those recorded since it was enabled
    again, not those recorded while it was off (the baseline, history, counts
    every event)."""
    rule = rules(spike_rule())
    for window in range(-BASELINE, 0):
        logins(client, window, 2)  # an average of 2: a line of 10
    logins(client, 0, 10)
    settle(client)
    assert [fired["count"] for fired in fired_by(client, rule.id)] == [10]

    def off_and_on(while_off: int) -> None:
        client.update_alert_rule(alerting_pb2.AlertRule(id=rule.id, disabled=True),
                                 fields=["disabled"])  # fmt: skip
        logins(client, 1, while_off)
        settle(client)
        client.update_alert_rule(alerting_pb2.AlertRule(id=rule.id, disabled=False),
                                 fields=["disabled"])  # fmt: skip

    off_and_on(0)
    logins(client, 0, 12)  # 22 in the window, 12 since the rule was enabled again
    settle(client)
    assert [fired["window_start"] for fired in fired_by(client, rule.id)] == [SPIKE_TEXT]
    # The next window: its baseline 2 x 5 + 22 = 32, a line of 26.7. Its 20
    # events recorded while the rule was off are not counted: 26 recorded
    # since it was enabled again are not yet the line; the 27th fires.
    off_and_on(20)
    logins(client, 1, 26)
    settle(client)
    assert len(fired_by(client, rule.id)) == 1
    logins(client, 1, 1)
    settle(client)
    [_, later] = fired_by(client, rule.id)
    assert later["count"] == 27 and later["baseline_average"] == round(32 / 6, 3)


def test_a_backdated_import_into_a_window_before_the_newest_judged_fires_nothing_after_a_restart(
    unevaluated: ServerThread, tenant: str
) -> None:
    """Only the newest window judged fires (ADR 0132). A process that takes
    the rule up (a restart, a lease moved) knew no window judged before, and
    an import of history backdated into an older window fired there. It
    fires nothing; the newest window's spike still does."""
    server = unevaluated
    with (
        AuditClient(server.target, token=server.token(tenant)) as client,
        _appender_of(server) as appender,
    ):
        rule = client.create_alert_rule(spike_rule()).rule
        before, after = Evaluator(server.database, appender), Evaluator(server.database, appender)
        try:
            assert tenant in server.run(before._claim())
            for window in range(-BASELINE, 0):
                logins(client, window, 2)
            logins(client, 1, 2)  # the newest window judged: the one after SPIKE's
            _to_the_end(server, before, tenant)
            server.run(before._release())  # a restart
            assert tenant in server.run(after._claim())
            logins(client, 0, 15)  # an import, backdated into SPIKE's window
            _to_the_end(server, after, tenant)
            assert fired_by(client, rule.id) == []
            # The newest window: its baseline 2 x 5 + 15 = 25, a line of 20.8.
            logins(client, 1, 19)
            _to_the_end(server, after, tenant)
            [fired] = fired_by(client, rule.id)
        finally:
            server.run(before._release())
            server.run(after._release())
        assert fired["count"] == 21
        assert fired["window_start"] == (SPIKE + timedelta(seconds=WINDOW)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )


def test_a_baseline_reaching_into_what_retention_removed_averages_only_what_it_kept(
    migrated_database_url: str, tenant: str
) -> None:
    """A month of failed logins, 3 a day, of which retention keeps 10 days
    (a rule for `user.*`; the tenant's other events, its policy's record
    among them, kept for ever): a day of 14 is under 5x the 3 a day there
    were, and does not fire. Averaged over the 25 days the tenant's history
    spans, the 30 kept would be 1.2 a day, and 10 would fire (a false spike
    every time retention removed the baseline's older windows). Each event
    occurs and is received by the server's clock, which the test moves."""
    clock = Clock()
    with (
        database_of_its_own(migrated_database_url, "spike_retention") as url,
        ServerThread(url, clock=clock, retention_interval=0) as server,
        AuditClient(server.target, token=server.token(tenant)) as client,
    ):
        client.set_retention_policy("forever", action_prefixes={"user.*": 10})
        client.create_alert_rule(
            build_alert_rule("marker", "match", filter=build_filter(actions="test.marker"))
        )
        rule = client.create_alert_rule(spike_rule(window_seconds=86400, baseline_windows=30)).rule
        for day in range(25):
            for n in range(3):
                client.record(
                    action="user.login", actor_id=f"u{day}-{n}", outcome="failure",
                    occurred_at=clock(),
                )  # fmt: skip
            clock.advance(1)
        assert server.service.purger is not None
        [purged] = [
            p for p in server.run(server.service.purger.run_once()) if p.tenant_id == tenant
        ]
        assert purged.count >= 40  # the logins of 15 days or so
        for n in range(14):
            client.record(
                action="user.login", actor_id=f"spike-{n}", outcome="failure", occurred_at=clock()
            )
        settle(client)
        assert fired_by(client, rule.id) == []
        for n in range(20):
            client.record(
                action="user.login", actor_id=f"more-{n}", outcome="failure", occurred_at=clock()
            )
        settle(client)
        [fired] = fired_by(client, rule.id)
        assert fired["baseline_windows"] <= 11
        assert fired["baseline_average"] >= 2.5


def test_a_spike_on_a_user_agent_counts_in_sql_what_the_live_matcher_takes(
    client: AuditClient, rules: Any, marked: None
) -> None:
    """A rule whose filter names a user agent: the window's first matching
    event is counted in SQL, each later one by the evaluator's matcher; both
    take `curl` in any case of A-Z and nothing else (another client's logins
    in the same windows, a `curl` in no user agent). The alert's count is
    exactly the matching events, and it fires at the 10th, not before."""
    rule = rules(spike_rule(filter=build_filter(actions="user.login", user_agent="Curl")))

    def calls(window: int, agents: list[str]) -> None:
        start = SPIKE + timedelta(seconds=window * WINDOW)
        for n, agent in enumerate(agents):
            client.record(
                action="user.login", actor_id=f"a{n}", outcome="failure", user_agent=agent,
                occurred_at=start + timedelta(seconds=n),
            )  # fmt: skip

    for window in range(-BASELINE, 0):
        calls(window, ["curl/8.4.0", "python-requests/2.31", "CURL/7.1", "Mozilla/5.0"])
    # An average of 2: the line is 10. A first event the rule does not take,
    # then 9 it takes among as many it does not.
    calls(0, ["python-requests/2.31", *["cUrL/8.4.0", "Go-http-client/1.1"] * 9])
    settle(client)
    assert fired_by(client, rule.id) == []
    calls(0, ["Wget/1.21", "libcurl-agent/1.0"])
    settle(client)
    [fired] = fired_by(client, rule.id)
    assert fired["count"] == 10 and fired["baseline_average"] == 2.0


def test_a_spike_whose_alert_retention_purged_does_not_fire_again_in_its_window_after_a_restart(
    migrated_database_url: str, tenant: str
) -> None:
    """The window fired; retention then purged its alert (`security.*` kept a
    day, the logins for ever), and the server restarted. A next server finds
    no alert for the window (the lookup that says it fired), counts the
    window again at a login backdated into it, and is over the line: it must
    not fire a second time there. It does not: the purged alert's tombstone
    is purged time, and a baseline is never counted across purged time (ADR
    0132), so that window has no history left and fires nothing. The rule's
    `fired` stays 1."""
    clock = Clock()
    with database_of_its_own(migrated_database_url, "spike_alert_purged") as url:
        with (
            ServerThread(url, clock=clock) as first,
            AuditClient(first.target, token=first.token(tenant)) as client,
        ):
            client.set_retention_policy("forever", action_prefixes={"security.*": 1})
            rule = client.create_alert_rule(spike_rule()).rule
            _spike_then_more(client, rule.id, url, tenant)
            clock.advance(2)
            assert first.service.purger is not None
            [purged] = [
                p for p in first.run(first.service.purger.run_once()) if p.tenant_id == tenant
            ]
            assert purged.count == 1  # the alert, and only it
            assert fired_by(client, rule.id) == []
        with (
            ServerThread(url, clock=clock) as second,
            AuditClient(second.target, token=second.token(tenant)) as client,
        ):
            logins(client, 0, 10)  # the window over its line again, counted anew
            _wait_until_evaluated(url, tenant)
            assert fired_by(client, rule.id) == []
            [listed] = [r for r in client.list_alert_rules() if r.id == rule.id]
            assert listed.fired == 1
