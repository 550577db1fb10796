"""A change records itself last, in its transaction (ADR 0075): the record
locks the tenant's head until the change commits, so every append of the
tenant, in every process, waits for whatever the change does after it. Made
first, a change that then waited for its row (another session's lock, a
purge batch, a slow disk) held the tenant's appends for as long, and they
were refused UNAVAILABLE after 5 s. Made last, they wait for its commit only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, build_alert_rule, build_filter, build_sink
from tests.lock_waits import until_blocked
from tests.two_processes import two_processes

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


def _revoke_one(
    client: AuditClient, sql: psycopg.Connection[Any], tenant: str
) -> Callable[[], Any]:
    """A revocation whose row write waits for the test's lock of that row."""
    token_id = client.create_token("reader").token.token_id
    sql.execute("SELECT FROM api_tokens WHERE token_id = %s FOR SHARE", [token_id])
    return lambda: client.revoke_token(token_id)


_CHANGES: dict[str, tuple[str, str, str, Callable[..., Callable[[], Any]]]] = {
    # name: (lock taken by the test, the statement of the change that waits
    # for it, the change's action, the change)
    "retention-policy": (
        "LOCK TABLE retention_policies IN SHARE MODE",
        "INSERT INTO retention_policies",
        "retention.policy_updated",
        lambda client, sql, tenant: lambda: client.set_retention_policy(30),
    ),
    "legal-hold": (
        "LOCK TABLE retention_policies IN SHARE MODE",
        "INSERT INTO retention_policies",
        "retention.legal_hold_placed",
        lambda client, sql, tenant: lambda: client.set_legal_hold(True, reason="case 7"),
    ),
    "settings": (
        "LOCK TABLE tenant_settings IN SHARE MODE",
        "INSERT INTO tenant_settings",
        "tenant.settings_updated",
        lambda client, sql, tenant: lambda: client.set_redaction_mode("hmac"),
    ),
    "token-revocation": ("", "UPDATE api_tokens", "api_token.revoked", _revoke_one),
    "sink": (
        # Every server's forwarder renews its leases about every second, and
        # waits on the table too: not taken for the change.
        "LOCK TABLE sinks IN SHARE MODE",
        "INSERT INTO sinks",
        "sink.created",
        lambda client, sql, tenant: (
            lambda: client.create_sink(
                build_sink("soc", "webhook", url="http://127.0.0.1:9/soc", secrets=[SECRET])
            )
        ),
    ),
    "alert-rule": (
        "LOCK TABLE alert_rules IN SHARE MODE",
        "INSERT INTO alert_rules",
        "alert_rule.created",
        lambda client, sql, tenant: (
            lambda: client.create_alert_rule(
                build_alert_rule("m", "match", filter=build_filter(actions="x.alert"))
            )
        ),
    ),
}


@pytest.mark.parametrize("change", list(_CHANGES))
def test_a_change_waiting_for_its_write_holds_no_append_of_its_tenant(
    migrated_database_url: str, sql: psycopg.Connection[Any], change: str
) -> None:
    """A change of the tenant through one process waits at its write (a lock
    the test holds); an append of the tenant through another goes through
    meanwhile, and the change's record, made once it is written, comes after."""
    lock, statement, action, make = _CHANGES[change]
    # The first process changes, the second appends.
    with two_processes(migrated_database_url, second_timeout=3) as both:
        tenant, second = both.tenant, both.second
        second.record(action="x.before", actor_id="a")
        with sql.transaction():
            if lock:
                sql.execute(lock)
            run = make(both.first, sql, tenant)
            pending = both.pool.submit(run)
            until_blocked(sql, pending, waiter="sealtrail", running=statement)
            started = time.monotonic()
            appended = second.record(action="x.meanwhile", actor_id="a").event.seq
            waited = time.monotonic() - started
            assert not pending.done()
        assert waited < 2, f"the append waited {waited:.1f} s behind the change"
        pending.result(timeout=60)
        (recorded,) = sql.execute(
            "SELECT seq FROM events WHERE tenant_id = %s AND action = %s", [tenant, action]
        ).fetchone()  # type: ignore[misc]
        assert recorded > appended
