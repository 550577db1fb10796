"""Health asks what calls need: a server whose login may no longer work as
the service's roles serves no call, and says so (NOT_SERVING), on a cluster
of the test's own (roles are the cluster's)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from sealtrail import AuditClient, SealtrailError, UnavailableError
from tests.conftest import ServerThread
from tests.integration.test_database_outage import (
    NOT_SERVING,
    SERVING,
    Cluster,
    health,
    migrated_cluster,
    wait_for_health,
)
from tests.service_login import SERVICE_LOGIN


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with migrated_cluster() as made:
        yield made


@pytest.mark.parametrize("role", ["sealtrail_service", "sealtrail_system"])
def test_health_is_not_serving_while_the_login_cannot_work_as_a_role_calls_need(
    cluster: Cluster, role: str
) -> None:
    """The probe asked whether the database took writes, on a connection as
    it was: with the service's role revoked from its login (a DBA's cleanup,
    a restore into a cluster without the grants), every tenant's call failed
    while health said SERVING, and a load balancer kept sending them. The
    probe now works as each role for the moment of its question."""
    server = ServerThread(cluster.url, database_probe_interval=0.2, checkpoint_interval=0)
    try:
        tenants = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(2)]
        tokens = [server.token(tenant) for tenant in tenants]
        with AuditClient(server.target, token=tokens[0], max_attempts=1) as client:
            client.record(action="file.read", actor_id="ops")
        assert health(server.target) == SERVING

        grant(cluster, role, given=False)
        try:
            # A tenant the pool's connections have not worked for yet.
            with (
                AuditClient(server.target, token=tokens[1], max_attempts=1) as client,
                pytest.raises(SealtrailError),
            ):
                client.record(action="file.read", actor_id="ops")
            wait_for_health(server.target, NOT_SERVING, timeout=10)
            with (
                AuditClient(server.target, token=tokens[1], max_attempts=1) as client,
                pytest.raises(UnavailableError) as refused,
            ):
                client.record(action="file.read", actor_id="ops")
            assert refused.value.retry_after is not None
        finally:
            grant(cluster, role, given=True)
        wait_for_health(server.target, SERVING, timeout=10)
        for token in tokens:
            with AuditClient(server.target, token=token) as client:
                client.record(action="file.write", actor_id="ops")
    finally:
        server.close()


def grant(cluster: Cluster, role: str, *, given: bool) -> None:
    """`role` granted to the service's login again, or revoked, as its owner would."""
    statement = "GRANT {} TO {}" if given else "REVOKE {} FROM {}"
    with psycopg.connect(cluster.url, autocommit=True) as owner:
        owner.execute(
            sql.SQL(statement).format(sql.Identifier(role), sql.Identifier(SERVICE_LOGIN))
        )
