"""Health asks what calls need: a server whose login may no longer work as
the service's roles, on a cluster of the test's own (roles are the
cluster's), or whose roles lack a grant the migrations made them, on a
database of the test's own (grants are the database's), serves no call, and
says so (NOT_SERVING)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Final, LiteralString

import psycopg
import pytest
from psycopg import sql

from sealtrail import AuditClient, UnavailableError
from tests.conftest import ServerThread, database_of_its_own
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
    cluster: Cluster, role: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe asked whether the database took writes, on a connection as
    it was: with the service's role revoked from its login (a DBA's cleanup,
    a restore into a cluster without the grants), every tenant's call failed
    while health said SERVING, and a load balancer kept sending them. The
    probe now works as each role for the moment of its question, and the log
    says so once (it said so at each of the two failed probes in a row that
    take the database for down)."""
    caplog.set_level(logging.WARNING, logger="sealtrail_server.store.database")
    server = ServerThread(cluster.url, database_probe_interval=0.2, checkpoint_interval=0)
    try:
        tenants = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(2)]
        tokens = [server.token(tenant) for tenant in tenants]
        with AuditClient(server.target, token=tokens[0], max_attempts=1) as client:
            client.record(action="file.read", actor_id="ops")
        assert health(server.target) == SERVING

        grant(cluster, role, given=False)
        try:
            # A tenant the pool's connections have not worked for yet: where
            # the database refuses the role, the call is answered as health's
            # NOT_SERVING answers it (it was INTERNAL: helper-397). A pooled
            # connection already working as the role keeps it (PostgreSQL checks
            # membership when the role is set, and a connection's scope is set
            # only when it changes), so the call may still be taken: taken, or
            # refused so, never INTERNAL.
            with AuditClient(server.target, token=tokens[1], max_attempts=1) as client:
                try:
                    client.record(action="file.read", actor_id="ops")
                except UnavailableError as refused:
                    assert refused.reason == "DATABASE_UNAVAILABLE"
                    assert refused.retry_after is not None
            wait_for_health(server.target, NOT_SERVING, timeout=10)
            with (
                AuditClient(server.target, token=tokens[1], max_attempts=1) as client,
                pytest.raises(UnavailableError) as refused,
            ):
                client.record(action="file.read", actor_id="ops")
            assert refused.value.retry_after is not None
            assert said_of(caplog, "cannot work as the service's roles") == 1
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


@pytest.mark.parametrize(
    ("role", "revoked", "said"),
    [
        ("sealtrail_system", "INSERT ON events", "sealtrail_system lacks INSERT on events"),
        (
            "sealtrail_service",
            "UPDATE (revoked_at) ON api_tokens",
            "sealtrail_service lacks UPDATE on api_tokens (revoked_at)",
        ),
        ("sealtrail_service", "SELECT ON events", "sealtrail_service lacks SELECT on events"),
    ],
)
def test_health_is_not_serving_while_a_role_lacks_a_grant_the_migrations_made(
    database_url: str, caplog: pytest.LogCaptureFixture, role: str, revoked: str, said: str
) -> None:
    """With a table's grant revoked from one of the service's roles (`REVOKE
    INSERT ON events FROM sealtrail_system`: every Record fails), health said
    SERVING: the probe asked only whether the login could work as the roles.
    It now checks each grant the migrations make them (role_grants.py): the
    log names the role and the grant, once; calls are answered UNAVAILABLE
    with a retry delay, in words that do not name it; and the server serves
    again by itself once the grant is back."""
    caplog.set_level(logging.WARNING, logger="sealtrail_server.store.database")
    with (
        database_of_its_own(database_url, "sealtrail_grants") as url,
        ServerThread(url, database_probe_interval=0.2, checkpoint_interval=0) as server,
    ):
        token = server.token(f"t-{uuid.uuid4().hex[:8]}")
        with AuditClient(server.target, token=token, max_attempts=1) as client:
            client.record(action="file.read", actor_id="ops")
        assert health(server.target) == SERVING

        privilege(url, f"REVOKE {revoked} FROM {{}}", role)
        try:
            wait_for_health(server.target, NOT_SERVING, timeout=10)
            # Two probes in a row found it missing (ProbeVerdicts): said once.
            assert said_of(caplog, said) == 1
            line = next(r.getMessage() for r in caplog.records if said in r.getMessage())
            assert line.startswith("database: ") and "docs/database.md" in line
            with (
                AuditClient(server.target, token=token, max_attempts=1) as client,
                pytest.raises(UnavailableError) as refused,
            ):
                client.record(action="file.read", actor_id="ops")
            assert refused.value.retry_after is not None
            answered = str(refused.value)
            assert role not in answered and revoked.split(" ON ")[-1] not in answered
        finally:
            privilege(url, f"GRANT {revoked} TO {{}}", role)
        wait_for_health(server.target, SERVING, timeout=10)
        assert any("hold every grant they need again" in r.getMessage() for r in caplog.records)
        with AuditClient(server.target, token=token) as client:
            client.record(action="file.write", actor_id="ops")


def privilege(url: str, statement: str, role: str) -> None:
    """`statement` (a GRANT or REVOKE of the tests' own words, `{}` the role)
    run as the tables' owner would."""
    with psycopg.connect(url, autocommit=True) as owner:
        owner.execute(sql.SQL(statement).format(sql.Identifier(role)))  # type: ignore[arg-type]


def said_of(caplog: pytest.LogCaptureFixture, words: str) -> int:
    """How many of the server's log lines say `words` (once the server has
    found what they say two probes in a row: none may say it again)."""
    return sum(words in r.getMessage() for r in caplog.records)


def not_serving_for(caplog: pytest.LogCaptureFixture, cause: str) -> int:
    """How many of the server's lines turned health NOT_SERVING for `cause`
    (`not serving (health NOT_SERVING): ...`, the cause's words at its end)."""
    return sum(
        message.startswith("not serving (health NOT_SERVING): ") and message.endswith(cause)
        for message in (r.getMessage() for r in caplog.records)
    )


def test_a_listed_column_dropped_is_named_in_the_log(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A column role_grants.py lists, dropped (`ALTER TABLE api_tokens DROP
    COLUMN last_used_at`), failed the probe's statement: health went down,
    rightly (every authenticated call writes it), but the log said nothing of
    what was missing. The probe, its statement failed, asks the catalog which
    listed table or column no longer exists, and the log names it, once; the
    column back with its grant, the server serves again by itself."""
    caplog.set_level(logging.WARNING, logger="sealtrail_server.store.database")
    with (
        database_of_its_own(database_url, "sealtrail_dropped") as url,
        ServerThread(url, database_probe_interval=0.2, checkpoint_interval=0) as server,
    ):
        token = server.token(f"t-{uuid.uuid4().hex[:8]}")
        assert health(server.target) == SERVING

        owner(url, "ALTER TABLE api_tokens DROP COLUMN last_used_at")
        wait_for_health(server.target, NOT_SERVING, timeout=10)
        gone = "api_tokens (last_used_at)"
        assert said_of(caplog, gone) == 1, [r.getMessage() for r in caplog.records]
        line = next(r.getMessage() for r in caplog.records if gone in r.getMessage())
        assert line.startswith("database: ") and "no longer exists" in line, line
        assert "docs/database.md" in line, line

        owner(url, "ALTER TABLE api_tokens ADD COLUMN last_used_at timestamptz")
        privilege(url, "GRANT UPDATE (last_used_at) ON api_tokens TO {}", "sealtrail_system")
        wait_for_health(server.target, SERVING, timeout=10)
        assert said_of(caplog, gone) == 1
        with AuditClient(server.target, token=token) as client:
            client.record(action="file.write", actor_id="ops")


# The tenant policy's expression, as the migrations write it (0012).
_BY_TENANT: Final = "tenant_id = current_setting('sealtrail.tenant', true)"


def owner(url: str, statement: LiteralString) -> None:
    """`statement` run as the tables' owner would."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


@pytest.mark.parametrize(
    ("removed", "restored", "said"),
    [
        (
            "ALTER TABLE events DISABLE ROW LEVEL SECURITY",
            "ALTER TABLE events ENABLE ROW LEVEL SECURITY",
            "row-level security is disabled on events",
        ),
        (
            "DROP POLICY tenant_isolation ON api_tokens",
            "SELECT sealtrail_isolate_by_tenant('api_tokens')",
            "policy tenant_isolation on api_tokens no longer exists",
        ),
        # Rewritten in place: every tenant is shown every tenant's rows.
        (
            "ALTER POLICY tenant_isolation ON events USING (true) WITH CHECK (true)",
            f"ALTER POLICY tenant_isolation ON events USING ({_BY_TENANT})"
            f" WITH CHECK ({_BY_TENANT})",
            "policy tenant_isolation on events has USING true, not",
        ),
        (
            "ALTER POLICY tenant_isolation ON events TO PUBLIC",
            "ALTER POLICY tenant_isolation ON events TO sealtrail_service",
            "policy tenant_isolation on events applies to public, not sealtrail_service",
        ),
        # Dropped and made again, restrictive and for reads only: writes are
        # checked by no policy of the service's.
        (
            "DROP POLICY tenant_isolation ON events; CREATE POLICY tenant_isolation ON events"
            f" AS RESTRICTIVE FOR SELECT TO sealtrail_service USING ({_BY_TENANT})",
            "DROP POLICY tenant_isolation ON events; SELECT sealtrail_isolate_by_tenant('events')",
            "policy tenant_isolation on events is RESTRICTIVE, not PERMISSIVE",
        ),
        # Permissive policies are OR-ed: one more widens what each tenant sees.
        (
            "CREATE POLICY open ON events USING (true)",
            "DROP POLICY open ON events",
            "policy open on events is not one the migrations make",
        ),
    ],
)
def test_health_is_not_serving_while_a_table_lacks_the_row_security_the_migrations_made(
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    removed: LiteralString,
    restored: LiteralString,
    said: str,
) -> None:
    """Row-level security disabled on a tenant's table (`ALTER TABLE events
    DISABLE ROW LEVEL SECURITY`) showed every tenant every tenant's rows, and
    its policy dropped refused every row to the service, while health said
    SERVING: the probe asked nothing of it. It now checks that each table the
    migrations put under row-level security still has it, and each policy
    they create still exists (row_security.py): NOT_SERVING (no call is
    served, so none shows another tenant's rows), the log naming the table
    or policy once, and serving again by itself once it is restored."""
    caplog.set_level(logging.WARNING)
    with (
        database_of_its_own(database_url, "sealtrail_rls") as url,
        ServerThread(url, database_probe_interval=0.2, checkpoint_interval=0) as server,
    ):
        tenants = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(2)]
        tokens = [server.token(tenant) for tenant in tenants]
        with AuditClient(server.target, token=tokens[0], max_attempts=1) as client:
            client.record(action="file.read", actor_id="ops")
        assert health(server.target) == SERVING

        owner(url, removed)
        try:
            wait_for_health(server.target, NOT_SERVING, timeout=10)
            assert said_of(caplog, said) == 1, [r.getMessage() for r in caplog.records]
            line = next(r.getMessage() for r in caplog.records if said in r.getMessage())
            assert line.startswith("database: ") and "docs/database.md" in line, line
            # The watch's own line says which condition holds.
            assert not_serving_for(caplog, "row-level security the migrations made") == 1
            with (
                AuditClient(server.target, token=tokens[1], max_attempts=1) as client,
                pytest.raises(UnavailableError) as refused,
            ):
                list(client.query())
            assert refused.value.reason == "DATABASE_UNAVAILABLE"
            # The log names what differs; the answer to calls names nothing of it.
            answered = str(refused.value)
            named = ("events", "api_tokens", "tenant_isolation", "policy", "row-level", "USING")
            assert not any(word in answered for word in named), answered
        finally:
            owner(url, restored)
        wait_for_health(server.target, SERVING, timeout=10)
        assert said_of(caplog, said) == 1
        assert said_of(caplog, "row-level security as the migrations made it again") == 1
        with AuditClient(server.target, token=tokens[1]) as client:
            client.record(action="file.write", actor_id="ops")
            # Its own rows only, as before: tenant 0's file.read is not among them.
            actions = {e.action for e in client.query()}
            assert "file.write" in actions and "file.read" not in actions, actions


def test_a_listed_table_dropped_is_said_to_no_longer_exist(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A table role_grants.py lists, gone (dropped, or renamed aside as here),
    was logged as `lacks SELECT on tenant_erasures`, as if a grant had been
    revoked. It is said as a dropped column is: no longer exists. The
    watch's NOT_SERVING line says so too."""
    caplog.set_level(logging.WARNING)
    with (
        database_of_its_own(database_url, "sealtrail_gone") as url,
        ServerThread(url, database_probe_interval=0.2, checkpoint_interval=0) as server,
    ):
        token = server.token(f"t-{uuid.uuid4().hex[:8]}")
        assert health(server.target) == SERVING

        owner(url, "ALTER TABLE tenant_erasures RENAME TO tenant_erasures_aside")
        try:
            wait_for_health(server.target, NOT_SERVING, timeout=10)
            lines = [r.getMessage() for r in caplog.records]
            gone = [line for line in lines if "tenant_erasures, which the migrations" in line]
            assert len(gone) == 1, lines
            assert "no longer exists" in gone[0] and "docs/database.md" in gone[0], gone
            assert not any("lacks SELECT on tenant_erasures" in line for line in lines), lines
            assert not any("security is disabled on tenant_erasures" in line for line in lines)
            assert not_serving_for(caplog, "no longer exists") == 1, lines
        finally:
            owner(url, "ALTER TABLE tenant_erasures_aside RENAME TO tenant_erasures")
        wait_for_health(server.target, SERVING, timeout=10)
        with AuditClient(server.target, token=token) as client:
            client.record(action="file.write", actor_id="ops")
