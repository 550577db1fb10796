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
from sealtrail_server.store.changes import RETENTION_SUBJECT, token_subject
from tests.conftest import ServerThread
from tests.lock_waits import SHARED_SUBJECT_LOCK, SUBJECT_LOCK, until_waiting
from tests.tenant_rows import events_of_action


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
    assert events_of_action(sql, tenant, "retention.policy_updated") == 0


def test_a_revocation_waits_for_the_changes_its_token_is_making_and_those_after_it_are_refused(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
) -> None:
    """Recorded first, the revocation was in the log before the change it then
    waited for: the log said a revoked token made a change. Held by row locks,
    a token making overlapping changes put its revocation off for as long as
    it went on: PostgreSQL grants a new FOR SHARE while a FOR UPDATE waits."""
    admin = client_for(tenant)
    created = admin.create_token("admin", name="busy")
    token_id = created.token.token_id
    subject = f"{tenant}/{token_subject(token_id)}"
    with (
        AuditClient(server.target, token=created.secret, max_attempts=1) as busy,
        ThreadPoolExecutor(2) as pool,
    ):
        with sql.transaction():  # as a change the token is making holds its subject
            sql.execute(SHARED_SUBJECT_LOCK, [subject])
            revoking = pool.submit(admin.revoke_token, token_id)
            until_waiting(sql, revoking)
            assert events_of_action(sql, tenant, "api_token.revoked") == 0
            changing = pool.submit(busy.set_retention_policy, "1y")  # queues behind it
            until_waiting(sql, changing, sessions=2)
        assert revoking.result(timeout=30).token.HasField("revoke_time")
        with pytest.raises(UnauthenticatedError, match="revoked"):
            changing.result(timeout=30)
    assert events_of_action(sql, tenant, "api_token.revoked") == 1
    assert events_of_action(sql, tenant, "retention.policy_updated") == 0


def test_a_token_created_by_a_token_revoked_meanwhile_is_not_created(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
) -> None:
    """A caller revoked while its CreateToken waits for its token's lock makes
    no token, and leaves no record of one: the record is made in the
    creation's transaction, after its row, and rolls back with it (ADR 0075;
    recorded apart and first, it named a token that never existed)."""
    admin = client_for(tenant)
    created = admin.create_token("admin", name="stolen")
    token_id = created.token.token_id
    with (
        AuditClient(server.target, token=created.secret, max_attempts=1) as stolen,
        ThreadPoolExecutor(1) as pool,
    ):
        with sql.transaction():  # as a revocation does: the token's subject, then the row
            sql.execute(SUBJECT_LOCK, [f"{tenant}/{token_subject(token_id)}"])
            creating = pool.submit(stolen.create_token, "admin", name="successor")
            until_waiting(sql, creating)
            sql.execute("UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s", [token_id])
        with pytest.raises(UnauthenticatedError, match="revoked"):
            creating.result(timeout=30)
    names = sql.execute("SELECT name FROM api_tokens WHERE tenant_id = %s", [tenant]).fetchall()
    assert ("successor",) not in names
    assert events_of_action(sql, tenant, "api_token.created") == 1  # "stolen" only
