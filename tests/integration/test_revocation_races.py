"""A revocation and the changes its token is making: the token is checked
when a call begins, but a change can wait seconds for its lock. A change
never completes after its token's revocation is recorded: one in flight ends
first, one waiting is refused."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, UnauthenticatedError
from sealtrail_server.store.changes import RETENTION_SUBJECT
from tests.conftest import ServerThread
from tests.lock_waits import SUBJECT_LOCK, until_blocked, until_waiting


def _recorded(sql: psycopg.Connection[Any], tenant: str, action: str) -> int:
    row = sql.execute(
        "SELECT count(*) FROM events WHERE tenant_id = %s AND action = %s", [tenant, action]
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_change_whose_token_is_revoked_while_it_waits_is_refused(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
) -> None:
    admin = client_for(tenant)
    created = admin.create_token("admin", name="revoked mid-change")
    with (
        AuditClient(server.target, token=created.secret, max_attempts=1) as doomed,
        ThreadPoolExecutor(1) as pool,
    ):
        with sql.transaction():  # another change of the policy, in flight
            sql.execute(SUBJECT_LOCK, [f"{tenant}/{RETENTION_SUBJECT}"])
            changing = pool.submit(doomed.set_retention_policy, "1y")
            until_waiting(sql, changing)  # admitted: its token was live
            admin.revoke_token(created.token.token_id)
        with pytest.raises(UnauthenticatedError, match="revoked"):
            changing.result(timeout=30)
    assert admin.get_retention_policy().policy.default_days == 0  # forever, as it was
    assert _recorded(sql, tenant, "retention.policy_updated") == 0


def test_a_revocation_waits_for_a_change_its_token_is_making_before_it_is_recorded(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Recorded first, the revocation was in the log before the change it
    then waited for: the log said a revoked token made a change."""
    admin = client_for(tenant)
    created = admin.create_token("admin", name="busy")
    token_id = created.token.token_id
    with ThreadPoolExecutor(1) as pool:
        with sql.transaction():  # as a change by that token holds it
            sql.execute("SELECT FROM api_tokens WHERE token_id = %s FOR SHARE", [token_id])
            revoking = pool.submit(admin.revoke_token, token_id)
            until_blocked(sql, revoking)
            assert _recorded(sql, tenant, "api_token.revoked") == 0
        assert revoking.result(timeout=30).token.HasField("revoke_time")
    assert _recorded(sql, tenant, "api_token.revoked") == 1


def test_a_token_created_by_a_token_revoked_meanwhile_is_not_created(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
) -> None:
    """CreateToken records first: a caller revoked between its record and the
    token's row leaves the record of a token that never existed, not a token."""
    admin = client_for(tenant)
    created = admin.create_token("admin", name="stolen")
    token_id = created.token.token_id
    with (
        AuditClient(server.target, token=created.secret, max_attempts=1) as stolen,
        ThreadPoolExecutor(1) as pool,
    ):
        with sql.transaction():  # as a revocation does: the token locked, then revoked
            sql.execute("SELECT FROM api_tokens WHERE token_id = %s FOR UPDATE", [token_id])
            creating = pool.submit(stolen.create_token, "admin", name="successor")
            until_blocked(sql, creating)
            sql.execute("UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s", [token_id])
        with pytest.raises(UnauthenticatedError, match="revoked"):
            creating.result(timeout=30)
    names = sql.execute("SELECT name FROM api_tokens WHERE tenant_id = %s", [tenant]).fetchall()
    assert ("successor",) not in names
    assert _recorded(sql, tenant, "api_token.created") == 2  # "stolen", "successor"
