"""The log under concurrency: gapless per-tenant seq, a Merkle root that
matches an independent computation, and a table no statement can rewrite."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient
from tests.processes import ServerProcess
from tests.rfc6962 import leaf, mth


def assert_log_is_sound(sql: psycopg.Connection[Any], tenant: str, expected: int) -> None:
    """Seq 1..expected with no gap or repeat, each leaf the hash of its record,
    and the head's root the RFC 6962 root of the leaves in seq order."""
    rows = sql.execute(
        "SELECT seq, record, leaf_hash FROM events WHERE tenant_id = %s ORDER BY seq", [tenant]
    ).fetchall()
    assert [seq for seq, _, _ in rows] == list(range(1, expected + 1))
    leaves = []
    for seq, record, leaf_hash in rows:
        assert bytes(leaf_hash) == leaf(record.encode()), f"leaf of seq {seq}"
        leaves.append(bytes(leaf_hash))
    size, root = sql.execute(
        "SELECT tree_size, root_hash FROM chain_heads WHERE tenant_id = %s", [tenant]
    ).fetchone()  # type: ignore[misc]
    assert size == expected
    assert bytes(root) == mth(leaves)


def run_writers(
    count: int, write: Callable[[int], None], *, timeout: float = 120
) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            write(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return errors


def test_32_concurrent_writers_over_3_tenants(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    tenants = [f"{tenant}-{i}" for i in range(3)]
    clients = [client_for(tenants[i % 3], "recorder") for i in range(32)]
    per_writer = 15

    def write(index: int) -> None:
        for n in range(per_writer):
            if n % 5 == 4:
                clients[index].record_batch([_event(f"w{index}.{n}.{k}") for k in range(3)])
            else:
                clients[index].record(_event(f"w{index}.{n}"))

    assert run_writers(32, write) == []
    batches = per_writer // 5  # three events each, instead of one
    events_per_writer = per_writer + batches * 2
    for i, name in enumerate(tenants):
        assert_log_is_sound(sql, name, len(range(i, 32, 3)) * events_per_writer)


def test_two_server_processes_appending_to_one_tenant_stay_consistent(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any], server: Any
) -> None:
    token = server.token(tenant, "recorder")
    processes = [ServerProcess(migrated_database_url) for _ in range(2)]
    try:
        clients = [AuditClient(p.target, token=token) for p in processes]

        def write(index: int) -> None:
            client = clients[index % 2]
            for n in range(25):
                client.record(_event(f"p{index}.{n}"))
            client.record_batch([_event(f"p{index}.batch.{k}") for k in range(20)])

        assert run_writers(8, write) == []
        for client in clients:
            client.close()
    finally:
        for process in processes:
            process.terminate()
    assert_log_is_sound(sql, tenant, 8 * 45)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET action = 'forged.action' WHERE tenant_id = %s",
        "DELETE FROM events WHERE tenant_id = %s",
        "TRUNCATE events",
    ],
)
def test_events_cannot_be_updated_deleted_or_truncated(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any], statement: str
) -> None:
    client.record(_event("kept"))
    params = [tenant] if "%s" in statement else None
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        sql.execute(statement, params)  # type: ignore[arg-type]
    assert sql.execute("SELECT action FROM events WHERE tenant_id = %s", [tenant]).fetchall() == [
        ("integrity.check",)
    ]


def _event(key: str) -> Any:
    from sealtrail import build_event

    return build_event(
        action="integrity.check",
        actor_id="writer",
        description=f"event {key}",
        idempotency_key=f"{key}-{uuid.uuid4()}",
    )
