"""Absence rules against a real server (ADR 0162): no matching event received
for a window fires once, from the rule's start or the last matching event,
by the server's clock; events arriving keep it quiet, a silence that goes on
fires nothing more, a matching event re-arms it, and a process that takes the
tenant up (a restart) does not fire the same silence again. Bad settings are
refused naming the field, by the API and by `sealtrail alerts create`. The
test moves the server's clock and runs the evaluation steps itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sealtrail import AuditClient, InvalidArgumentError, build_alert_rule, build_filter
from sealtrail.v1 import alerting_pb2
from sealtrail_server.alerts.evaluator import Evaluator
from sealtrail_server.store.appender import Appender
from tests.alerts_cli import alerts_cli
from tests.clock import Clock
from tests.conftest import ServerThread
from tests.integration.test_alerting import _appender_of, _stepped, fired_by

WINDOW = 900
HEARTBEAT = build_filter(actions="billing.heartbeat")


def absence_rule(**settings: Any) -> alerting_pb2.AlertRule:
    given: dict[str, Any] = {"filter": HEARTBEAT, "window_seconds": WINDOW} | settings
    return build_alert_rule("billing silent", "absence", **given)


class _Steps:
    """Evaluation steps of one tenant by an evaluator on the test's clock;
    `restart()` takes the tenant up by a new one, as a restarted process."""

    def __init__(self, server: ServerThread, appender: Appender, clock: Clock, tenant: str):
        self._server, self._appender, self._clock, self._tenant = server, appender, clock, tenant
        self._evaluator = self._new()

    def _new(self) -> Evaluator:
        evaluator = Evaluator(self._server.database, self._appender, clock=self._clock)
        assert self._tenant in self._server.run(evaluator._claim())
        return evaluator

    def __call__(self, times: int = 1) -> None:
        for _ in range(times):
            self._server.run(self._evaluator._step(self._tenant))

    def restart(self) -> None:
        self._server.run(self._evaluator._release())
        self._evaluator = self._new()

    def close(self) -> None:
        self._server.run(self._evaluator._release())


@contextmanager
def _absence(
    migrated_database_url: str, tenant: str, name: str
) -> Iterator[tuple[Clock, AuditClient, _Steps]]:
    clock = Clock()
    with (
        _stepped(migrated_database_url, name, clock, tenant) as (_, server, client),
        _appender_of(server) as appender,
    ):
        steps: _Steps | None = None
        try:
            client.create_alert_rule(absence_rule())  # the tenant has a rule to be claimed by
            steps = _Steps(server, appender, clock, tenant)
            yield clock, client, steps
        finally:
            if steps is not None:
                steps.close()


def _heartbeat(client: AuditClient) -> int:
    return client.record(action="billing.heartbeat", actor_id="billing").event.seq


def test_a_silence_of_a_window_fires_once_and_a_matching_event_rearms_it(
    migrated_database_url: str, tenant: str
) -> None:
    with _absence(migrated_database_url, tenant, "absence_fires") as (clock, client, step):
        [rule] = client.list_alert_rules()
        step()
        clock.advance(seconds=WINDOW - 1)
        step()
        assert fired_by(client, rule.id) == []  # a new rule never fires for the past
        beat = _heartbeat(client)
        clock.advance(seconds=WINDOW - 1)
        client.record(action="billing.invoice", actor_id="billing")  # not what it expects
        step()
        assert fired_by(client, rule.id) == []  # a window less a second since the heartbeat
        clock.advance(seconds=1)
        step()
        [fired] = fired_by(client, rule.id)
        assert fired["window_seconds"] == WINDOW and fired["last_event_seq"] == beat
        assert fired["condition"] == "absence"
        clock.advance(seconds=WINDOW * 3)  # the silence goes on: no alert storm
        step(3)
        assert len(fired_by(client, rule.id)) == 1
        again = _heartbeat(client)  # re-armed: quiet for a window, then fires once more
        clock.advance(seconds=WINDOW - 1)
        step()
        assert len(fired_by(client, rule.id)) == 1
        clock.advance(seconds=1)
        step(2)
        assert [alert["last_event_seq"] for alert in fired_by(client, rule.id)] == [beat, again]
        [listed] = client.list_alert_rules()
        assert listed.fired == 2 and listed.absence.window_seconds == WINDOW


def test_events_arriving_within_each_window_never_fire_it(
    migrated_database_url: str, tenant: str
) -> None:
    with _absence(migrated_database_url, tenant, "absence_steady") as (clock, client, step):
        [rule] = client.list_alert_rules()
        for _ in range(5):
            clock.advance(seconds=WINDOW - 60)
            _heartbeat(client)
            step()
        assert fired_by(client, rule.id) == []


def test_a_process_taking_the_tenant_up_does_not_fire_the_same_silence_again(
    migrated_database_url: str, tenant: str
) -> None:
    with _absence(migrated_database_url, tenant, "absence_restart") as (clock, client, step):
        [rule] = client.list_alert_rules()
        clock.advance(seconds=WINDOW)
        step()
        [fired] = fired_by(client, rule.id)
        assert "last_event_seq" not in fired  # silent since the rule's start
        step.restart()
        clock.advance(seconds=WINDOW)
        step(2)
        assert len(fired_by(client, rule.id)) == 1
        [listed] = client.list_alert_rules()
        assert listed.fired == 1


def test_a_rule_enabled_again_starts_its_window_then(
    migrated_database_url: str, tenant: str
) -> None:
    with _absence(migrated_database_url, tenant, "absence_enabled") as (clock, client, step):
        [rule] = client.list_alert_rules()
        rule.etag = ""  # whatever it is now, at each change
        rule.disabled = True
        client.update_alert_rule(rule, fields=["disabled"])
        marker = client.create_alert_rule(  # keeps the tenant claimed meanwhile
            build_alert_rule("marker", "match", filter=build_filter(actions="test.marker"))
        ).rule
        clock.advance(seconds=WINDOW * 4)
        step()
        rule.disabled = False
        client.update_alert_rule(rule, fields=["disabled"])
        step()
        assert fired_by(client, rule.id) == []  # four windows silent, but off meanwhile
        clock.advance(seconds=WINDOW)
        step()
        assert len(fired_by(client, rule.id)) == 1
        client.delete_alert_rule(marker.id)


def test_a_changed_condition_starts_its_window_then(
    migrated_database_url: str, tenant: str
) -> None:
    """What it expects now was not expected before: its silence until the
    change is none of the rule's."""
    with _absence(migrated_database_url, tenant, "absence_changed") as (clock, client, step):
        [rule] = client.list_alert_rules()
        clock.advance(seconds=WINDOW - 60)
        step()
        rule.etag = ""
        rule.absence.filter.CopyFrom(build_filter(actions="billing.ping"))
        client.update_alert_rule(rule, fields=["absence"])
        clock.advance(seconds=60)
        step()
        assert fired_by(client, rule.id) == []  # a window since its creation, not its change
        clock.advance(seconds=WINDOW - 60)
        step()
        assert len(fired_by(client, rule.id)) == 1


def test_a_rule_changed_from_absence_to_threshold_takes_its_alerts_up(
    migrated_database_url: str, tenant: str
) -> None:
    """A threshold rebuilding its window reads the rule's alerts' keys for
    their triggers: an absence alert's names none, and is passed over."""
    with _absence(migrated_database_url, tenant, "absence_to_threshold") as (clock, client, step):
        [rule] = client.list_alert_rules()
        _heartbeat(client)
        clock.advance(seconds=WINDOW)
        step()
        assert len(fired_by(client, rule.id)) == 1
        changed = build_alert_rule(
            "billing burst", "threshold", filter=HEARTBEAT, count=2, window_seconds=WINDOW
        )
        changed.id = rule.id
        client.update_alert_rule(changed, fields=["name", "threshold"])
        beat = _heartbeat(client)  # a window after the first: two within it
        step()  # the window rebuilt from the log, the absence alert among the rule's
        assert [alert.get("trigger_seq") for alert in fired_by(client, rule.id)] == [None, beat]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"window_seconds": 59}, "rule.absence.window_seconds"),
        ({"window_seconds": 7 * 86400 + 1}, "rule.absence.window_seconds"),
        ({"filter": build_filter(text="billing")}, "rule.absence.filter.text"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(
    client: AuditClient, settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_alert_rule(absence_rule(**settings))
    assert field in [name for name, _ in refused.value.field_violations]


def test_an_absence_rule_on_any_event_is_taken(client: AuditClient) -> None:
    """Any event of the tenant: a tenant whose one source went quiet."""
    made = client.create_alert_rule(absence_rule(filter=None)).rule
    assert made.WhichOneof("condition") == "absence"
    client.delete_alert_rule(made.id)


def test_the_cli_creates_an_absence_rule(server: ServerThread, tenant: str) -> None:
    cli = alerts_cli(server, tenant)
    code, output = cli(
        "create", "billing silent", "--kind", "absence", "--window", "15m",
        "--action", "billing.heartbeat",
    )  # fmt: skip
    assert code == 0, output
    code, listed = cli("list")
    assert code == 0 and "absence: none for 15m" in listed
    code, refused = cli("create", "too short", "--kind", "absence", "--window", "30s")
    assert code != 0 and "--window" in refused
