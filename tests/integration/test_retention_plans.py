"""Retention by plan (docs/retention.md, "A retention ceiling per tenant";
ADR 0071): the operator sets how long a tenant may keep its events at most
(`sealtrail-server tenant retention-limit`), recorded in the tenant's log;
the API refuses a policy that keeps longer, the purge applies the ceiling to a
policy stored before it, the legal hold still wins, and the tenant is told
its ceiling."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from google.protobuf import json_format

from sealtrail import AuditClient, InvalidArgumentError, build_event, build_filter
from sealtrail import _cli as client_cli
from sealtrail.v1 import event_pb2
from sealtrail_server import cli
from tests.clock import Clock
from tests.conftest import REDACTION_SECRET, SIGNING_KEY, ServerThread

FLOOR = 30  # the deployment's SEALTRAIL_RETENTION_MIN_DAYS
PLAN = 90  # the ceiling the tests' operator sets


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def planned(migrated_database_url: str, clock: Clock) -> Iterator[ServerThread]:
    """A server on the test's clock, with a deployment floor, purging only
    when told to."""
    server = ServerThread(
        migrated_database_url,
        clock=clock,
        checkpoint_interval=0,
        retention_min_days=FLOOR,
        retention_batch_events=3,  # several batches even for a few events
    )
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def admin(planned: ServerThread, tenant: str) -> Iterator[AuditClient]:
    with AuditClient(planned.target, token=planned.token(tenant)) as client:
        yield client


def operator(url: str, *args: str, floor: int = FLOOR) -> Result:
    """`sealtrail-server ARGS` on the test database, with the environment the
    test servers have (their keys and floor)."""
    env = {
        "SEALTRAIL_DATABASE_URL": url,
        "SEALTRAIL_SIGNING_KEY": SIGNING_KEY,
        "SEALTRAIL_REDACTION_KEY": REDACTION_SECRET.hex(),
        "SEALTRAIL_LOG_ORIGIN": "sealtrail.test/log",
        "SEALTRAIL_RETENTION_MIN_DAYS": str(floor),
    }
    return CliRunner().invoke(cli.main, list(args), env=env)


def limit(url: str, tenant: str, *args: str) -> Result:
    """`sealtrail-server tenant retention-limit TENANT ARGS`, which must succeed."""
    done = operator(url, "tenant", "retention-limit", tenant, *args)
    assert done.exit_code == 0, done.output
    return done


def purge(server: ServerThread) -> None:
    assert server.service.purger is not None
    server.run(server.service.purger.run_once())


def record(client: AuditClient, action: str, category: str = "configuration") -> int:
    return client.record(build_event(action=action, actor_id="u-1", category=category)).event.seq


def recorded(client: AuditClient, action: str) -> list[event_pb2.AuditEvent]:
    """The tenant's events of `action`, oldest first."""
    return sorted(client.query(build_filter(actions=action)), key=lambda event: event.seq)


def kept(client: AuditClient, actions: list[str]) -> set[int]:
    return {event.seq for event in client.query(build_filter(actions=actions))}


def _fields(refused: pytest.ExceptionInfo[InvalidArgumentError]) -> dict[str, str]:
    return dict(refused.value.field_violations)


def _details(event: event_pb2.AuditEvent) -> dict[str, Any]:
    details: dict[str, Any] = json_format.MessageToDict(event.details)
    return details


def test_the_operator_limits_a_tenants_retention_recorded_in_its_log_and_shown_to_it(
    admin: AuditClient, tenant: str, migrated_database_url: str
) -> None:
    admin.record(build_event(action="doc.edit", actor_id="u-1"))  # a log of its own
    assert not admin.get_retention_policy().limits.max_days  # no ceiling yet
    assert admin.get_retention_policy().limits.min_days == FLOOR

    done = limit(migrated_database_url, tenant, "--max-days", str(PLAN))
    assert f"limited to {PLAN} days" in done.stdout
    assert "default (forever -> 90 days)" in done.stderr  # what the next purge takes, said
    limits = admin.get_retention_policy().limits
    assert (limits.min_days, limits.max_days) == (FLOOR, PLAN)

    # Kept forever (no policy) becomes 90 days: it weakens the trail.
    [event] = recorded(admin, "retention.limit_changed")
    assert event.actor.type == event_pb2.ACTOR_TYPE_SYSTEM
    assert event.actor.id.startswith("sealtrail-server:")
    assert event.category == event_pb2.CATEGORY_CONFIGURATION
    assert event.severity == event_pb2.SEVERITY_WARNING
    details = _details(event)
    assert details["weakens"] == ["retention_shortened"]
    assert details["shortened"] == [{"events": "default", "before_days": 0, "after_days": PLAN}]
    [change] = event.changes
    assert change.field == "max_days"
    assert not change.HasField("before") or change.before.WhichOneof("kind") == "null_value"
    assert change.after.number_value == PLAN

    again = limit(migrated_database_url, tenant, "--max-days", str(PLAN))
    assert "already" in again.stdout  # nothing changed: nothing recorded
    assert len(recorded(admin, "retention.limit_changed")) == 1

    # A longer plan keeps nothing less long: INFO.
    limit(migrated_database_url, tenant, "--max-days", "365")
    # Cleared: no ceiling, so nothing is kept less long either.
    cleared = limit(migrated_database_url, tenant, "--none")
    assert "no longer limited" in cleared.stdout
    assert not admin.get_retention_policy().limits.max_days
    longer, none = recorded(admin, "retention.limit_changed")[1:]
    for info in (longer, none):
        assert info.severity == event_pb2.SEVERITY_INFO
        assert "weakens" not in _details(info)
    assert none.changes[0].before.number_value == 365
    assert none.changes[0].after.WhichOneof("kind") == "null_value"  # no ceiling
    # Forever is the tenant's to choose again.
    assert admin.set_retention_policy("forever", categories={"authentication": "2y"}).policy


def test_a_policy_longer_than_the_tenants_plan_is_refused_naming_each_field(
    admin: AuditClient, tenant: str, migrated_database_url: str
) -> None:
    admin.record(build_event(action="doc.edit", actor_id="u-1"))
    limit(migrated_database_url, tenant, "--max-days", str(PLAN))
    with pytest.raises(InvalidArgumentError) as refused:
        admin.set_retention_policy(
            365, categories={"authentication": "forever"}, action_prefixes={"rag.*": PLAN + 1}
        )
    fields = _fields(refused)
    assert set(fields) == {"policy.default_days", "policy.rules[0].days", "policy.rules[1].days"}
    for message in fields.values():
        assert f"must be at most {PLAN} days, this tenant's plan" in message
    with pytest.raises(InvalidArgumentError) as refused:  # forever (0) is longer than any plan
        admin.set_retention_policy("forever")
    assert list(_fields(refused)) == ["policy.default_days"]
    with pytest.raises(InvalidArgumentError) as refused:  # a preview as the change would be
        admin.preview_retention_policy(365)
    assert list(_fields(refused)) == ["policy.default_days"]
    # The floor still names its own refusals beside the plan's.
    with pytest.raises(InvalidArgumentError) as refused:
        admin.set_retention_policy(PLAN, categories={"authentication": 1})
    assert "at least 30 days" in _fields(refused)["policy.rules[0].days"]
    # Nothing was stored or recorded.
    assert admin.get_retention_policy().policy.default_days == 0
    assert not recorded(admin, "retention.policy_updated")
    # Within the plan, it passes.
    answer = admin.set_retention_policy(PLAN, categories={"authentication": FLOOR})
    assert answer.policy.default_days == PLAN and answer.event_id
    assert admin.preview_retention_policy(PLAN).policy.default_days == PLAN


def test_the_purge_applies_a_new_ceiling_to_a_stored_policy_keeping_newer_events(
    planned: ServerThread, admin: AuditClient, clock: Clock, tenant: str, migrated_database_url: str
) -> None:
    """A policy of forever (and a year for logins), set before the plan: the
    ceiling's 90 days apply to it, and its records say so."""
    admin.set_retention_policy("forever", categories={"authentication": "1y"})
    old = {record(admin, "doc.edit"), record(admin, "user.login", "authentication")}
    clock.advance(PLAN + 5)
    young = {record(admin, "doc.edit"), record(admin, "user.login", "authentication")}
    clock.advance(5)  # `old` are 100 days old, `young` 5
    limit(migrated_database_url, tenant, "--max-days", str(PLAN))
    # As the tenant set it: the ceiling rewrites no policy.
    assert admin.get_retention_policy().policy.default_days == 0

    purge(planned)
    assert kept(admin, ["doc.edit", "user.login"]) == young  # `old` gone, at 90 days
    assert not old & young
    [purged] = recorded(admin, "retention.purged")
    rules = _details(purged)["rules"]
    assert set(rules) == {"default", "category:authentication"}
    horizon = clock() - timedelta(days=PLAN)
    for rule in rules.values():
        assert rule["purged"] == 1
        assert datetime.fromisoformat(rule["received_before"]) == horizon

    # The ceiling cleared, the policy keeps what is left forever again.
    limit(migrated_database_url, tenant, "--none")
    clock.advance(PLAN + 5)
    purge(planned)
    assert kept(admin, ["doc.edit", "user.login"]) == young


def test_a_legal_hold_wins_over_the_ceiling(
    planned: ServerThread, admin: AuditClient, clock: Clock, tenant: str, migrated_database_url: str
) -> None:
    events = {record(admin, "doc.edit") for _ in range(3)}
    limit(migrated_database_url, tenant, "--max-days", str(PLAN))
    admin.set_legal_hold(True, reason="Case 12")
    clock.advance(PLAN + 10)
    purge(planned)
    assert kept(admin, ["doc.edit"]) == events
    assert not recorded(admin, "retention.purged")

    admin.set_legal_hold(False)
    purge(planned)
    assert kept(admin, ["doc.edit"]) == set()


def test_a_ceiling_below_the_floor_is_refused_and_one_stored_below_a_raised_floor_is_the_floor(
    planned: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    migrated_database_url: str,
    sql: psycopg.Connection[Any],
) -> None:
    admin.record(build_event(action="doc.edit", actor_id="u-1"))
    below = operator(migrated_database_url, "tenant", "retention-limit", tenant, "--max-days", "7")
    assert below.exit_code == 1
    assert "below this deployment's retention floor of 30 days" in below.output
    assert "SEALTRAIL_RETENTION_MIN_DAYS" in below.output
    assert not admin.get_retention_policy().limits.max_days
    assert not recorded(admin, "retention.limit_changed")

    # A ceiling of 7 days set while the floor was lower (or none): the floor
    # wins, removing nothing younger than it, and the tenant is told so.
    limit(migrated_database_url, tenant, "--max-days", str(PLAN))
    sql.execute("UPDATE retention_policies SET max_days = 7 WHERE tenant_id = %s", [tenant])
    assert admin.get_retention_policy().limits.max_days == FLOOR
    with pytest.raises(InvalidArgumentError) as refused:
        admin.set_retention_policy(FLOOR + 1)
    assert f"at most {FLOOR} days" in _fields(refused)["policy.default_days"]
    older = record(admin, "doc.edit")
    clock.advance(FLOOR - 10)
    younger = record(admin, "doc.edit")
    clock.advance(15)  # `older` is 35 days old, `younger` 15: both past the 7 days
    purge(planned)
    assert older not in kept(admin, ["doc.edit"])
    assert younger in kept(admin, ["doc.edit"])


def test_the_command_refuses_what_it_cannot_do(
    admin: AuditClient, tenant: str, migrated_database_url: str
) -> None:
    admin.record(build_event(action="doc.edit", actor_id="u-1"))
    both = operator(
        migrated_database_url, "tenant", "retention-limit", tenant, "--max-days", "90", "--none"
    )
    assert both.exit_code == 2 and "exactly one of --max-days and --none" in both.output
    neither = operator(migrated_database_url, "tenant", "retention-limit", tenant)
    assert neither.exit_code == 2
    for bad in ("0", "36501", "ninety"):
        refused = operator(
            migrated_database_url, "tenant", "retention-limit", tenant, "--max-days", bad
        )
        assert refused.exit_code == 2, refused.output
        assert "--max-days" in refused.output
    unknown = operator(
        migrated_database_url, "tenant", "retention-limit", f"{tenant}-x", "--max-days", "90"
    )
    assert unknown.exit_code == 1 and "has no log and no token" in unknown.output
    assert not recorded(admin, "retention.limit_changed")


def test_the_tenant_and_the_operator_see_the_ceiling(
    planned: ServerThread, admin: AuditClient, tenant: str, migrated_database_url: str
) -> None:
    admin.set_retention_policy(PLAN)
    limit(migrated_database_url, tenant, "--max-days", "365")

    env = {"SEALTRAIL_SERVER": planned.target, "SEALTRAIL_TOKEN": planned.token(tenant)}
    shown = CliRunner().invoke(client_cli.main, ["retention"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "limits: at least 30 days, at most 365 days (the operator's)" in shown.stdout

    listed = operator(migrated_database_url, "tenant", "list")
    assert listed.exit_code == 0, listed.output
    header, *lines = listed.stdout.splitlines()
    assert header.split()[-2:] == ["RETENTION", "LIMIT"]
    [row] = [line.split() for line in lines if line.startswith(f"{tenant} ")]
    assert row[-4:] == ["90", "days", "365", "days"]
    as_json = operator(migrated_database_url, "tenant", "list", "--format", "json")
    [entry] = [e for e in json.loads(as_json.stdout) if e["tenant"] == tenant]
    assert entry["retention_default_days"] == PLAN and entry["retention_max_days"] == 365

    limit(migrated_database_url, tenant, "--none")
    shown = CliRunner().invoke(client_cli.main, ["retention"], env=env)
    assert "limits: at least 30 days, no maximum" in shown.stdout
    listed = operator(migrated_database_url, "tenant", "list")
    [row] = [line.split() for line in listed.stdout.splitlines() if line.startswith(f"{tenant} ")]
    assert row[-1] == "none"
