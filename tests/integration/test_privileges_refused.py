"""A call the database refuses for the service's privileges (a grant revoked
from `sealtrail_service` or `sealtrail_system` by a DBA, SQLSTATE 42501) is
answered UNAVAILABLE with a retry delay, as health's NOT_SERVING answers it,
not INTERNAL: Record, Query and an admin RPC alike, in the moments before the
health probe looks (helper-397). Nothing of a refused Record is written, the
log names the role and what the database said, once, and the probe is asked
to look at once rather than at its next tick."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, UnavailableError
from tests.conftest import ServerThread, database_of_its_own
from tests.integration.test_database_outage import NOT_SERVING, SERVING, wait_for_health
from tests.integration.test_health_roles import privilege, said_of

DATABASE_LOGGER = "sealtrail_server.store.database"
GUARD_LOGGER = "sealtrail_server.api.guard"


def record(client: AuditClient) -> object:
    return client.record(action="file.read", actor_id="ops", idempotency_key="once")


def query(client: AuditClient) -> object:
    return list(client.query())


def list_tokens(client: AuditClient) -> object:
    return client.list_tokens()


# What each RPC needs that the test revokes: read on a call's path, as the
# service's role, for a tenant none of the server's caches knows yet.
CASES = [
    pytest.param(record, "sealtrail_service", "SELECT ON tenant_settings", id="Record"),
    pytest.param(query, "sealtrail_service", "SELECT ON events", id="Query"),
    pytest.param(list_tokens, "sealtrail_service", "SELECT ON api_tokens", id="ListTokens"),
]


def events_of(url: str, tenant_id: str) -> int:
    """The tenant's events, as the tables' owner counts them."""
    with psycopg.connect(url, autocommit=True) as owner:
        row = owner.execute("SELECT count(*) FROM events WHERE tenant_id = %s", [tenant_id])
        counted = row.fetchone()
    assert counted is not None
    return int(counted[0])


def refused(server: ServerThread, token: str, call: Callable[[AuditClient], Any]) -> Any:
    """What `call` is answered, made once, with no retry."""
    with (
        AuditClient(server.target, token=token, max_attempts=1) as client,
        pytest.raises(UnavailableError) as answered,
    ):
        call(client)
    return answered.value


@pytest.mark.parametrize(("call", "role", "revoked"), CASES)
def test_a_call_refused_for_a_privilege_is_unavailable_until_it_is_granted_again(
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    call: Callable[[AuditClient], Any],
    role: str,
    revoked: str,
) -> None:
    """Before the probe noticed (two probes in a row), the call met the
    database's refusal itself, and the guard answered INTERNAL, logging a
    traceback. The probe's interval here is long enough that the call meets
    it first."""
    caplog.set_level(logging.WARNING)
    relation = revoked.split(" ON ")[-1]
    with (
        database_of_its_own(database_url, "sealtrail_refused") as url,
        ServerThread(url, database_probe_interval=3, checkpoint_interval=0) as server,
    ):
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        token = server.token(tenant)
        privilege(url, f"REVOKE {revoked} FROM {{}}", role)
        try:
            first, again = refused(server, token, call), refused(server, token, call)
            for answer in (first, again):
                assert answer.retry_after is not None
                assert answer.reason == "DATABASE_UNAVAILABLE"
                assert role not in answer.message and relation not in answer.message
            # The call's answer is the one health's NOT_SERVING gives.
            assert first.message == again.message
            said = f"{role} was refused: permission denied for table {relation} (SQLSTATE 42501)"
            assert said_of(caplog, said) == 1, [r.getMessage() for r in caplog.records]
            assert not [r for r in caplog.records if r.name == GUARD_LOGGER]
            wait_for_health(server.target, NOT_SERVING, timeout=10)
            if call is record:
                assert events_of(url, tenant) == 0
        finally:
            privilege(url, f"GRANT {revoked} TO {{}}", role)
        wait_for_health(server.target, SERVING, timeout=10)
        with AuditClient(server.target, token=token) as client:
            call(client)
        if call is record:  # written once, under the key refused before
            with AuditClient(server.target, token=token) as client:
                record(client)
            assert events_of(url, tenant) == 1


def test_a_refusal_has_the_probe_look_at_once(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe's next tick is a minute away: health goes NOT_SERVING in
    moments all the same, the refusal having asked it to look (and, found,
    to look again at once: two probes in a row decide)."""
    caplog.set_level(logging.WARNING)
    with (
        database_of_its_own(database_url, "sealtrail_refused") as url,
        ServerThread(url, database_probe_interval=60, checkpoint_interval=0) as server,
    ):
        token = server.token(f"t-{uuid.uuid4().hex[:8]}")
        assert said_of(caplog, "was refused") == 0
        privilege(url, "REVOKE SELECT ON tenant_settings FROM {}", "sealtrail_service")
        try:
            refused(server, token, record)
            wait_for_health(server.target, NOT_SERVING, timeout=10)
            assert said_of(caplog, "sealtrail_service lacks SELECT on tenant_settings") == 1
        finally:
            privilege(url, "GRANT SELECT ON tenant_settings TO {}", "sealtrail_service")
