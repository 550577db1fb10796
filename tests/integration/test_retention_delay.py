"""A retention change that keeps any events less long waits
SEALTRAIL_RETENTION_SHORTENING_DELAY before it applies (ADR 0163): one stolen
admin token cannot shorten the log's history at once. Until then the purge
removes nothing either policy keeps; the change is shown pending, can be
cancelled, survives a restart, and takes effect, recorded, at the first pass
after its delay; one that keeps everything as long or longer applies at once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from sealtrail import AuditClient, NotFoundError, build_event, build_filter
from sealtrail import _cli as cli
from tests.clock import Clock
from tests.conftest import ServerThread, run_operator

DELAY = timedelta(days=7)


@contextlib.contextmanager
def delayed_server(database_url: str, clock: Clock) -> Iterator[ServerThread]:
    server = ServerThread(
        database_url,
        clock=clock,
        checkpoint_interval=0,
        retention_shortening_delay=DELAY.total_seconds(),
    )
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def delayed(migrated_database_url: str, clock: Clock) -> Iterator[ServerThread]:
    with delayed_server(migrated_database_url, clock) as server:
        yield server


@pytest.fixture
def admin(delayed: ServerThread, tenant: str) -> Iterator[AuditClient]:
    with AuditClient(delayed.target, token=delayed.token(tenant)) as client:
        yield client
        client.set_retention_policy()  # keeps everything again: a lengthening, at once


def purge(server: ServerThread) -> None:
    assert server.service.purger is not None
    server.run(server.service.purger.run_once())


def old_event(client: AuditClient, clock: Clock) -> str:
    """An event ten days old."""
    event_id = client.record(build_event(action="doc.edit", actor_id="u-1")).event.id
    clock.advance(10)
    return event_id


def kept(client: AuditClient, event_id: str) -> bool:
    try:
        client.get_event(event_id)
    except NotFoundError:
        return False
    return True


def recorded(client: AuditClient, action: str) -> list[str]:
    return [event.description for event in client.query(build_filter(actions=action))]


def test_a_shortening_waits_out_the_delay_then_purges(
    delayed: ServerThread, admin: AuditClient, clock: Clock
) -> None:
    event_id = old_event(admin, clock)
    asked = clock()
    changed = admin.set_retention_policy(1)
    assert changed.event_id
    assert changed.policy.default_days == 0  # still in force
    pending = changed.pending_change
    assert pending.policy.default_days == 1
    assert pending.effective_time.ToDatetime().replace(tzinfo=asked.tzinfo) == asked + DELAY
    assert [(s.events, s.before_days, s.after_days) for s in pending.shortened] == [
        ("default", 0, 1)
    ]
    shown = admin.get_retention_policy()
    assert shown.policy.default_days == 0
    assert shown.pending_change.policy.default_days == 1
    assert shown.pending_change.effective_time == pending.effective_time
    purge(delayed)
    assert kept(admin, event_id)
    clock.advance(6.9)
    purge(delayed)
    assert kept(admin, event_id)
    assert not recorded(admin, "retention.policy_change_applied")
    clock.advance(0.2)
    purge(delayed)
    assert not kept(admin, event_id)
    assert recorded(admin, "retention.policy_change_applied")
    now = admin.get_retention_policy()
    assert now.policy.default_days == 1 and not now.HasField("pending_change")


def test_a_lengthening_applies_at_once(
    delayed: ServerThread, admin: AuditClient, clock: Clock
) -> None:
    admin.set_retention_policy(5)
    clock.advance(8)
    purge(delayed)  # the shortening, applied
    assert admin.get_retention_policy().policy.default_days == 5
    changed = admin.set_retention_policy(30)
    assert changed.event_id and not changed.HasField("pending_change")
    assert changed.policy.default_days == 30
    assert admin.get_retention_policy().policy.default_days == 30


def test_a_change_that_lengthens_one_rule_and_shortens_another_keeps_the_longer_of_each(
    delayed: ServerThread, admin: AuditClient, clock: Clock
) -> None:
    admin.set_retention_policy(5)
    clock.advance(8)
    purge(delayed)
    edited = admin.record(build_event(action="doc.edit", actor_id="u-1")).event.id
    login = admin.record(build_event(action="user.login", actor_id="u-1")).event.id
    clock.advance(10)
    # doc.* from 5 days to forever; the rest from 5 days to 2: it waits.
    changed = admin.set_retention_policy(2, action_prefixes={"doc.*": 0})
    assert changed.HasField("pending_change")
    purge(delayed)
    assert kept(admin, edited)  # the pending change keeps it forever
    assert not kept(admin, login)  # both remove it: the policy in force's 5 days passed


def test_a_cancelled_change_leaves_the_old_policy(
    delayed: ServerThread, admin: AuditClient, clock: Clock
) -> None:
    event_id = old_event(admin, clock)
    admin.set_retention_policy(1)
    again = admin.set_retention_policy(1)
    assert not again.event_id  # the change pending, asked again: nothing recorded
    cancelled = admin.set_retention_policy()  # the policy in force
    assert cancelled.event_id and not cancelled.HasField("pending_change")
    assert "cancelled" in admin.get_event(cancelled.event_id).description
    assert not admin.get_retention_policy().HasField("pending_change")
    clock.advance(8)
    purge(delayed)
    assert kept(admin, event_id)
    assert admin.get_retention_policy().policy.default_days == 0


def test_a_pending_change_survives_a_restart(
    migrated_database_url: str, tenant: str, clock: Clock
) -> None:
    with (
        delayed_server(migrated_database_url, clock) as first,
        AuditClient(first.target, token=first.token(tenant)) as client,
    ):
        event_id = old_event(client, clock)
        effective = client.set_retention_policy(1).pending_change.effective_time
    with (
        delayed_server(migrated_database_url, clock) as second,
        AuditClient(second.target, token=second.token(tenant)) as client,
    ):
        shown = client.get_retention_policy().pending_change
        assert shown.policy.default_days == 1 and shown.effective_time == effective
        clock.advance(8)
        purge(second)
        assert not kept(client, event_id)
        client.set_retention_policy()


def test_the_operator_applies_a_pending_change_at_once(
    delayed: ServerThread, admin: AuditClient, tenant: str, clock: Clock
) -> None:
    event_id = old_event(admin, clock)
    admin.set_retention_policy(1)
    url = delayed.settings.owner_database_url
    assert url is not None
    done = run_operator(url, "tenant", "retention-apply", tenant)
    assert done.exit_code == 0, done.output
    assert admin.get_retention_policy().policy.default_days == 1
    assert recorded(admin, "retention.policy_change_applied")
    purge(delayed)
    assert not kept(admin, event_id)
    nothing = run_operator(url, "tenant", "retention-apply", tenant)
    assert nothing.exit_code == 0 and "nothing" in nothing.output


def test_the_cli_shows_a_pending_change_and_cancels_it(
    delayed: ServerThread, admin: AuditClient, tenant: str
) -> None:
    env = {"SEALTRAIL_SERVER": delayed.target, "SEALTRAIL_TOKEN": delayed.token(tenant)}

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli.main, ["retention", *args], env=env)

    set_ = run("set", "30d", "--category", "authentication=1y", "--yes")
    assert set_.exit_code == 0, set_.output
    assert set_.stdout.startswith("policy change scheduled: it takes effect ")
    shown = run()
    assert "pending change, effective " in shown.stdout, shown.output
    assert "  default: 30 days\n  category authentication: 365 days\n" in shown.stdout
    cancelled = run("cancel")
    assert cancelled.stdout == "pending policy change cancelled\n", cancelled.output
    assert "pending change" not in run().stdout
    assert run("cancel").stdout == "no pending policy change; nothing recorded\n"
    assert admin.get_retention_policy().policy.default_days == 0
