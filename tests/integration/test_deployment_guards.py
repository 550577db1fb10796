"""What an operator takes away from tenant admins (docs/retention.md,
"What the operator decides"): a retention floor no policy goes below, and
the purge keeps to even for a policy stored before it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, InvalidArgumentError, build_event, build_filter
from tests.clock import Clock
from tests.conftest import ServerThread

MIN_DAYS = 30


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def floored(migrated_database_url: str, clock: Clock) -> Iterator[ServerThread]:
    """A server whose deployment keeps events 30 days at least, on the test's clock."""
    server = ServerThread(
        migrated_database_url,
        clock=clock,
        checkpoint_interval=0,
        retention_min_days=MIN_DAYS,
    )
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def admin(floored: ServerThread, tenant: str) -> Iterator[AuditClient]:
    with AuditClient(floored.target, token=floored.token(tenant)) as client:
        yield client


def _fields(refused: pytest.ExceptionInfo[InvalidArgumentError]) -> dict[str, str]:
    return dict(refused.value.field_violations)


def test_a_policy_shorter_than_the_deployments_minimum_is_refused_naming_the_field(
    admin: AuditClient,
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        admin.set_retention_policy(1)
    assert list(_fields(refused)) == ["policy.default_days"]
    assert "at least 30 days" in _fields(refused)["policy.default_days"]
    assert "deployment" in _fields(refused)["policy.default_days"]
    with pytest.raises(InvalidArgumentError) as refused:
        admin.set_retention_policy(
            "forever", categories={"authentication": 7}, action_prefixes={"rag.*": 29}
        )
    assert set(_fields(refused)) == {"policy.rules[0].days", "policy.rules[1].days"}
    with pytest.raises(InvalidArgumentError):  # a preview is refused as the change would be
        admin.preview_retention_policy(1)
    assert admin.get_retention_policy().policy.default_days == 0  # nothing was stored
    assert not list(admin.query(build_filter(actions="retention.policy_updated")))
    # At the floor, and forever (0), pass.
    kept = admin.set_retention_policy(MIN_DAYS, categories={"authentication": "forever"})
    assert kept.policy.default_days == MIN_DAYS and kept.event_id


def test_a_policy_stored_before_the_floor_was_raised_removes_nothing_younger_than_it(
    floored: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
) -> None:
    """As if set while the deployment had no floor: a day, two and three."""
    rules = [{"category": "authentication", "days": 2}, {"action_prefix": "rag.", "days": 3}]
    sql.execute(
        "INSERT INTO retention_policies (tenant_id, default_days, rules, policy_updated_at)"
        " VALUES (%s, 1, %s, now())",
        [tenant, json.dumps(rules)],
    )
    actions = ("doc.edit", "user.login", "rag.query")
    categories = {"doc.edit": "configuration", "user.login": "authentication"}

    def record_each() -> list[int]:
        return [
            admin.record(
                build_event(action=a, actor_id="u-1", category=categories.get(a, "data_access"))
            ).event.seq
            for a in actions
        ]

    old = record_each()
    clock.advance(MIN_DAYS + 5)
    young = record_each()
    clock.advance(5)  # `old` is 40 days old, `young` 5: both past the policy's days

    assert floored.service.purger is not None
    floored.run(floored.service.purger.run_once())
    left = {e.seq for e in admin.query(build_filter(actions=list(actions)))}
    assert left == set(young)  # the floor's 30 days, not the policy's 1, 2 and 3
    assert not left & set(old)
