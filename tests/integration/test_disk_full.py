"""PostgreSQL out of disk: its data directory on a small filesystem the test
mounts (tmpfs; root, as in CI), filled up under writes. Meanwhile calls fail
clearly (UNAVAILABLE with RetryInfo, never INTERNAL) and no batch is stored in
part; once space returns (and PostgreSQL runs again, restarted if it stopped),
writes succeed, every acknowledged event is there and the log verifies."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, SealtrailError, build_event
from sealtrail_server.store.migrations import migrate
from tests.conftest import ServerThread
from tests.integration.test_database_outage import Cluster

SIZE_MB = 256


@pytest.fixture
def small_disk() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("mounting the test's small filesystem needs root (CI runs as root)")
    mount = Path(tempfile.mkdtemp(prefix="sealtrail-small-disk-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}M", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


@pytest.fixture
def cluster_on_small_disk(small_disk: Path) -> Iterator[Cluster]:
    cluster = Cluster(base=small_disk)

    async def migrated() -> None:
        async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
            await migrate(conn)

    asyncio.run(migrated())
    try:
        yield cluster
    finally:
        cluster.close()


def free_mb(path: Path) -> float:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize / 2**20


def test_a_full_disk_fails_calls_clearly_and_recovers(
    cluster_on_small_disk: Cluster, small_disk: Path
) -> None:
    cluster = cluster_on_small_disk
    server = ServerThread(cluster.url, database_probe_interval=0.2)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token, admin_token = server.token(tenant, "recorder"), server.token(tenant)
    filler = small_disk / "filler"
    try:
        # Leave a few MB: writes of 48 KB events soon meet the end of the disk.
        spare = max(0.0, free_mb(small_disk) - 24)
        with filler.open("wb") as out:
            out.write(b"\0" * int(spare * 2**20))
        acknowledged: dict[str, int] = {}
        refusals: list[SealtrailError] = []
        with AuditClient(server.target, token=token, max_attempts=1, timeout=20) as client:
            for batch in range(400):
                events = [
                    build_event(action="doc.upload", actor_id="u", idempotency_key=f"{batch}-{n}",
                                details={"blob": secrets.token_hex(24_000)})  # incompressible
                    for n in range(20)
                ]  # fmt: skip
                try:
                    results = client.record_batch(events)
                except SealtrailError as error:
                    refusals.append(error)
                    if len(refusals) >= 3:
                        break
                    time.sleep(0.5)
                    continue
                for event, result in zip(events, results, strict=True):
                    assert result.event is not None, result.error
                    acknowledged[event.idempotency_key] = result.event.seq
        assert refusals, "the disk never filled"
        for error in refusals:
            assert error.code.name in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"), error
            assert error.retry_after is not None
        filler.unlink()
        if not cluster.running():
            cluster.start()  # PostgreSQL may have stopped itself: the operator's restart
        deadline = time.monotonic() + 60
        with AuditClient(server.target, token=token, max_attempts=30, max_backoff=1.0) as client:
            while True:
                try:
                    client.record(action="doc.after", actor_id="u")
                    break
                except SealtrailError:
                    assert time.monotonic() < deadline, "writes did not resume"
                    time.sleep(0.5)
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            rows: list[Any] = conn.execute(
                "SELECT idempotency_key, seq FROM events"
                " WHERE tenant_id = %s AND action = 'doc.upload'",
                [tenant],
            ).fetchall()
        stored = dict(rows)
        assert {k: stored.get(k) for k in acknowledged} == acknowledged
        per_batch: dict[str, int] = {}
        for key in stored:
            per_batch[key.split("-")[0]] = per_batch.get(key.split("-")[0], 0) + 1
        assert set(per_batch.values()) <= {20}  # no batch stored in part
        with AuditClient(server.target, token=admin_token) as admin:
            assert admin.verify_log().ok
    finally:
        filler.unlink(missing_ok=True)
        server.close()
