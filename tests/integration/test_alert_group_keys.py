"""A threshold grouped by actor against a real server: the forms of one
username its attacker can type (case, full-width letters, an invisible
character) count as one group, the alert naming the forms seen; a rule that
asks for exact ids keeps them apart; and the group survives a restart."""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, InvalidArgumentError, build_alert_rule, build_filter
from sealtrail.v1 import alerting_pb2
from sealtrail_server.store import alerts as alert_store
from tests.conftest import ServerThread, database_of_its_own
from tests.integration.test_alerting import (  # the fixtures too
    TUESDAY,
    _wait_until_evaluated,
    fired_by,
    json_details,
    settle,
    wait_for_alerts,
)

Rule = alerting_pb2.AlertRule
FAILED = build_filter(actions="user.login", outcomes="failure")
# What a brute force of `admin` may type, as the application records it.
FORMS = ["Admin", "admin", "ADMIN", "\uff41\uff44\uff4d\uff49\uff4e", "admin\u200b"]


@pytest.fixture
def rules(client: AuditClient) -> Iterator[Callable[[Rule], Rule]]:
    created: list[str] = []

    def create(rule: Rule) -> Rule:
        made = client.create_alert_rule(rule).rule
        created.append(made.id)
        return made

    yield create
    for rule_id in created:
        client.delete_alert_rule(rule_id)


@pytest.fixture
def marked(rules: Callable[[Rule], Rule]) -> None:
    """A rule on `test.marker`, so that settle() knows when evaluation caught up."""
    rules(build_alert_rule("marker", "match", filter=build_filter(actions="test.marker")))


def _fail(client: AuditClient, actor: str, second: int) -> None:
    at = TUESDAY + timedelta(seconds=second)
    client.record(action="user.login", actor_id=actor, outcome="failure", occurred_at=at)


def test_the_forms_of_one_username_count_as_one_actor(
    client: AuditClient, rules: Any, marked: None
) -> None:
    rule = rules(
        build_alert_rule(
            "brute force", "threshold", filter=FAILED, count=5, window_seconds=600,
            group_by="actor",
        )
    )  # fmt: skip
    for second, form in enumerate(FORMS):
        _fail(client, form, second)
    settle(client)
    [fired] = fired_by(client, rule.id)
    assert fired["count"] == 5
    assert fired["group"] == {"actor": "admin"}
    assert fired["forms"] == FORMS
    # The events themselves stay as recorded.
    recorded = [event.actor.id for event in client.query(FAILED, order="oldest")]
    assert recorded == FORMS


def test_a_rule_on_exact_actor_ids_keeps_their_forms_apart(
    client: AuditClient, rules: Any, marked: None
) -> None:
    """Ids whose case matters (base64) are not merged when the rule says so."""
    rule = rules(
        build_alert_rule(
            "exact", "threshold", filter=FAILED, count=2, window_seconds=600,
            group_by="actor", exact_actor_ids=True,
        )
    )  # fmt: skip
    assert rule.threshold.exact_actor_ids
    for second, actor in enumerate(["aGVsbG8", "AgvSBg8", "aGVsbG8"]):
        _fail(client, actor, second)
    settle(client)
    [fired] = fired_by(client, rule.id)
    assert fired["group"] == {"actor": "aGVsbG8"} and "forms" not in fired
    with pytest.raises(InvalidArgumentError, match="exact_actor_ids"):
        client.create_alert_rule(
            build_alert_rule(
                "by ip", "threshold", filter=FAILED, count=2, window_seconds=60,
                group_by="ip", exact_actor_ids=True,
            )
        )  # fmt: skip


def test_a_window_kept_under_exact_ids_is_taken_up_folded_after_a_restart(
    migrated_database_url: str, tenant: str
) -> None:
    """A window a release before kept (its groups the ids as recorded, no
    forms) is re-keyed by the server that takes it up: two failures before
    the restart and three after are one burst of five. On a database of its
    own, so that no other test's server takes the tenant over."""
    with database_of_its_own(migrated_database_url, "folded") as url:
        first = ServerThread(url)
        try:
            with AuditClient(first.target, token=first.token(tenant)) as client:
                rule = client.create_alert_rule(
                    build_alert_rule(
                        "brute force", "threshold", filter=FAILED, count=5, window_seconds=600,
                        group_by="actor",
                    )
                ).rule  # fmt: skip
                for second, form in enumerate(FORMS[:2]):
                    _fail(client, form, second)
                _wait_until_evaluated(url, tenant)
        finally:
            first.close()
        with psycopg.connect(url, autocommit=True) as sql:
            [(key, times, seen, forms)] = sql.execute(
                "SELECT group_key, times, seen, forms FROM alert_rule_window_groups"
                " WHERE tenant_id = %s",
                [tenant],
            ).fetchall()
            assert (key, forms) == ("admin", FORMS[:2])
            # As the release before kept them: a group an id as recorded.
            both = alert_store._unpacked(bytes(times))
            sql.execute("DELETE FROM alert_rule_window_groups WHERE tenant_id = %s", [tenant])
            for n, form in enumerate(FORMS[:2]):
                sql.execute(
                    "INSERT INTO alert_rule_window_groups"
                    " (tenant_id, rule_id, group_key, times, seen) VALUES (%s, %s, %s, %s, %s)",
                    [tenant, rule.id, form, alert_store._packed(array("q", both[n : n + 1])),
                     seen - 1 + n],
                )  # fmt: skip
        second_server = ServerThread(url)
        try:
            with AuditClient(second_server.target, token=second_server.token(tenant)) as client:
                for second, form in enumerate(FORMS[2:], start=2):
                    _fail(client, form, second)
                [alert] = wait_for_alerts(client, 1)
                details = json.loads(json_details(alert))
                assert (alert.resource.id, details["count"]) == (rule.id, 5)
                assert details["group"] == {"actor": "admin"}
                assert details["forms"] == FORMS
                assert alert.description.endswith("for actor admin (5 forms)")
        finally:
            second_server.close()
