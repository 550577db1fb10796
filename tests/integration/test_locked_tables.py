"""A table another session locks whole (VACUUM FULL, ALTER TABLE, pg_repack,
LOCK TABLE), on a database of the test's own: reads wait for it at most the
lock timeout, then answer UNAVAILABLE with a retry delay. They waited without
limit: an Export sent nothing, not even an error, for as long as the lock was
held, and VerifyLog and GetInclusionProof ran to their deadlines (helper-202)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from psycopg import sql

from sealtrail import AuditClient, UnavailableError
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc
from sealtrail_server.store.database import Database
from tests.conftest import ServerThread, database_of_its_own, logged
from tests.integration.test_database_outage import SERVING, health
from tests.integration.test_health_roles import _BY_TENANT, owner, said_of
from tests.service_login import service_login_url

# Far past the lock timeout, well within the test's: only a hang reaches it.
DEADLINE = 30.0
# What the watch gives each probe (database_probe_interval 0.2: max(0.2, 1.0)).
PROBE_TIMEOUT = 1.0


@pytest.fixture
def own_server(migrated_database_url: str) -> Iterator[tuple[ServerThread, str]]:
    with database_of_its_own(migrated_database_url, "locked_tables") as url:
        running = ServerThread(url)
        try:
            yield running, url
        finally:
            running.close()


@contextlib.contextmanager
def locked(url: str, table: str) -> Iterator[None]:
    """`table` locked whole by another session, as VACUUM FULL locks it."""
    with psycopg.connect(url) as holder:
        holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
        holder.rollback()


def test_reads_of_a_locked_table_answer_unavailable_after_the_lock_timeout(
    own_server: tuple[ServerThread, str], caplog: pytest.LogCaptureFixture
) -> None:
    """...and each is logged by PostgreSQL's primary message and the lock it
    waited on, never by the error whole (its CONTEXT may quote a statement)."""
    server, url = own_server
    caplog.set_level(logging.WARNING, logger="sealtrail_server.store.database")
    token = server.token(f"t-{uuid.uuid4().hex[:8]}")
    with AuditClient(server.target, token=token, max_attempts=1) as client:
        for _ in range(3):
            client.record(action="doc.edit", actor_id="u")
        client.get_checkpoint(fresh=True)
        with locked(url, "events"):
            began = time.monotonic()
            with grpc.insecure_channel(server.target) as channel:
                export = audit_service_pb2_grpc.AuditLogServiceStub(channel).Export(
                    audit_service_pb2.ExportRequest(format=audit_service_pb2.EXPORT_FORMAT_NDJSON),
                    metadata=[("authorization", f"Bearer {token}")],
                    timeout=DEADLINE,
                )
                with pytest.raises(grpc.RpcError) as refused:
                    list(export)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
            assert time.monotonic() - began < DEADLINE / 2
            with pytest.raises(UnavailableError) as verify_refused:
                client.verify_log(timeout=DEADLINE)
            assert "lock" in verify_refused.value.message
        with locked(url, "checkpoints"):
            with pytest.raises(UnavailableError) as proof_refused:
                client.get_inclusion_proof(seq=1)
            retry_after: Any = proof_refused.value.retry_after
            assert retry_after is not None and retry_after > 0
        assert client.verify_log().ok
        assert client.get_inclusion_proof(seq=1).tree_size >= 3
    waits = [
        record.getMessage()
        for record in logged(caplog, by="sealtrail_server.store.database", on=server)
        if "past its lock timeout" in record.getMessage()
    ]
    assert waits and all("(SQLSTATE 55P03)" in said for said in waits), waits
    assert not any("SELECT" in said or "SQL statement" in said for said in waits), waits


def probed_in_time(server: ServerThread) -> bool:
    """What the server's own probe answers, asked now, within its timeout."""
    db = server.service._db
    assert db is not None
    began = time.monotonic()
    answered = server.run(db.probe(timeout=PROBE_TIMEOUT))
    assert time.monotonic() - began < PROBE_TIMEOUT, "the probe waited out its timeout"
    return answered


def test_health_stays_serving_while_a_table_is_locked_at_the_start(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock on events at the moment a server starts (a long VACUUM FULL, an
    ALTER TABLE, a pg_dump's wait queue) kept the probe from printing the
    policies' expressions, which locks their tables (pg_get_expr): the start
    waited its whole timeout to learn them, and each probe after it waited
    behind the lock past its own, health NOT_SERVING though nothing was wrong
    with the policies. Their check now waits on the lock briefly, says once
    that it does, keeps its last verdict (SERVING: none yet), and learns them
    at a probe once the lock is gone; the probe's other questions answer."""
    caplog.set_level(logging.INFO, logger="sealtrail_server.store.database")
    with (
        database_of_its_own(migrated_database_url, "locked_start") as url,
        contextlib.ExitStack() as running,
    ):
        with locked(url, "events"):
            server = running.enter_context(
                ServerThread(url, database_probe_interval=0.2, checkpoint_interval=0)
            )
            for _ in range(3):  # past the two failed probes that take it for down
                assert probed_in_time(server), server.service._db and server.service._db.probe_found
            assert health(server.target) == SERVING
            assert said_of(caplog, "policies on events waits for a lock") == 1
            # Another table's policy rewritten meanwhile is found all the same.
            owner(url, "ALTER POLICY tenant_isolation ON api_tokens USING (true)")
            try:
                assert not probed_in_time(server)
                assert said_of(caplog, "policy tenant_isolation on api_tokens has USING true") == 1
            finally:
                owner(url, "ALTER POLICY tenant_isolation ON api_tokens USING (" + _BY_TENANT + ")")
            assert probed_in_time(server)
        # The lock gone, its policies are checked, and known as listed from then on.
        assert probed_in_time(server)
        assert said_of(caplog, "checked the row-level security policies on events again") == 1
        with locked(url, "events"):
            assert probed_in_time(server)
        assert said_of(caplog, "waits for a lock") == 1
        assert health(server.target) == SERVING


def test_the_policy_check_under_a_lock_keeps_its_last_verdict(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A policy found rewritten stays so while its table is locked (its
    expression cannot be printed then): the check waits, the verdict is
    kept, NOT_SERVING; the lock gone and the policy restored, SERVING. A
    lock on a table whose policies are known as listed is not waited for."""
    caplog.set_level(logging.INFO, logger="sealtrail_server.store.database")
    with database_of_its_own(migrated_database_url, "locked_verdict") as url:

        async def probes() -> tuple[bool, bool, bool, bool]:
            db = await Database.open(service_login_url(url), min_size=1, max_size=2)
            try:
                await db.learn_policies(timeout=PROBE_TIMEOUT)
                with locked(url, "events"):
                    known_answers = await db.probe(timeout=PROBE_TIMEOUT)
                owner(url, "ALTER POLICY tenant_isolation ON events USING (true)")
                try:
                    rewritten = await db.probe(timeout=PROBE_TIMEOUT)
                    with locked(url, "events"):
                        began = time.monotonic()
                        kept = await db.probe(timeout=PROBE_TIMEOUT)
                        assert time.monotonic() - began < PROBE_TIMEOUT, "waited out its timeout"
                finally:
                    owner(url, "ALTER POLICY tenant_isolation ON events USING (" + _BY_TENANT + ")")
                restored = await db.probe(timeout=PROBE_TIMEOUT)
                return known_answers, rewritten, kept, restored
            finally:
                await db.close()

        known_answers, rewritten, kept, restored = asyncio.run(probes())
        assert known_answers
        assert not rewritten and not kept
        assert restored
        assert said_of(caplog, "policy tenant_isolation on events has USING true") == 1


# A page's statement timeout shorter than the probe's wait for a lock: long
# enough that a statement setting the probe's own (SET LOCAL, microseconds) is
# never cut short by it on a loaded machine, as 1 ms could be.
_PAGE_TIMEOUT = 0.05


def test_the_probe_runs_under_its_own_timeouts_whatever_its_connection_last_ran(
    migrated_database_url: str,
) -> None:
    """The probe asks on a pooled connection, in the scope its last user left
    it: after a Query page's statement timeout of 1 ms (a caller's deadline
    nearly spent, or SEALTRAIL_QUERY_TIMEOUT), its statements ran under that
    1 ms, and were cut short while its check of the policies waited briefly
    for a lock on events. The probe then took a connection of its own, as if
    no pooled one were free: where one cannot be had (here the database takes
    no new connections; a distant database's slow login, a connection limit
    reached), it failed, and two such probes in a row take the database for
    down, though every pooled connection works."""
    with database_of_its_own(migrated_database_url, "probe_scope") as url:
        name = sql.Identifier(psycopg.conninfo.conninfo_to_dict(url)["dbname"])

        def allow_connections(allowed: bool) -> None:
            with psycopg.connect(migrated_database_url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                        name, sql.Literal(allowed)
                    )
                )

        async def probe_after_a_tiny_timeout() -> tuple[bool, str]:
            db = await Database.open(service_login_url(url), min_size=1, max_size=1)
            try:
                async with db.connection("t-probe", statement_timeout=_PAGE_TIMEOUT) as conn:
                    await conn.execute("SELECT 1")
                with locked(url, "events"):
                    allow_connections(False)
                    try:
                        # Time to spare on a loaded machine: the page's timeout is what decides.
                        answered = await db.probe(timeout=5 * PROBE_TIMEOUT)
                    finally:
                        allow_connections(True)
                async with db.connection("t-probe", statement_timeout=_PAGE_TIMEOUT) as conn:
                    left = await (await conn.execute("SHOW statement_timeout")).fetchone()
                return answered, str(left and left[0])
            finally:
                await db.close()

        answered, left = asyncio.run(probe_after_a_tiny_timeout())
        assert answered
        assert left == "50ms"  # the page's scope as it was: the probe changed none of it


def test_no_pooled_connection_keeps_a_timeout_that_could_cut_the_probes_first_statement(
    migrated_database_url: str,
) -> None:
    """The probe sets its own timeouts by a first statement in its message,
    and PostgreSQL times that statement (and the message's parse) by the
    statement_timeout in force when the message arrives (postgres.c,
    exec_simple_query: start_xact_command arms it before the parse; it is
    re-armed between statements only): after a Query page's 1 ms, the SET
    itself ran under 1 ms and, on a loaded machine, could be cut, and the
    probe failed for no reason of health. A connection given back after a
    scope whose statement timeout is below the floor is now reset to the
    database's own there and then (a pooled connection the reset cannot reach
    is discarded): the probe's first statement never runs under it. Seen by
    SHOW, the probe's way, on the very connection the page had."""
    with database_of_its_own(migrated_database_url, "probe_reset") as url:

        async def after_a_tiny_timeout() -> tuple[str, str, str]:
            db = await Database.open(service_login_url(url), min_size=1, max_size=1)
            try:
                async with db.connection("t-probe", statement_timeout=0.001) as conn:
                    paged = await (await conn.execute("SHOW statement_timeout")).fetchone()
                async with db.pool.connection() as conn:  # as the probe takes it
                    probed = await (await conn.execute("SHOW statement_timeout")).fetchone()
                async with db.connection("t-probe", statement_timeout=0.001) as conn:
                    again = await (await conn.execute("SHOW statement_timeout")).fetchone()
                return str(paged and paged[0]), str(probed and probed[0]), str(again and again[0])
            finally:
                await db.close()

        paged, probed, again = asyncio.run(after_a_tiny_timeout())
        assert paged == "1ms"
        assert probed != "1ms"  # the database's own (0 here)
        assert again == "1ms"  # the page's scope given again where asked
