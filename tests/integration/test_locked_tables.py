"""A table another session locks whole (VACUUM FULL, ALTER TABLE, pg_repack,
LOCK TABLE), on a database of the test's own: reads wait for it at most the
lock timeout, then answer UNAVAILABLE with a retry delay. They waited without
limit: an Export sent nothing, not even an error, for as long as the lock was
held, and VerifyLog and GetInclusionProof ran to their deadlines (helper-202)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest

from sealtrail import AuditClient, UnavailableError
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc
from tests.conftest import ServerThread, database_of_its_own

# Far past the lock timeout, well within the test's: only a hang reaches it.
DEADLINE = 30.0


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
    own_server: tuple[ServerThread, str],
) -> None:
    server, url = own_server
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
