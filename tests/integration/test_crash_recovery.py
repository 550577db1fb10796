"""A server killed with SIGKILL under load loses no acknowledged event, and the
client's retries (same idempotency key) add no duplicate."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg

from sealtrail import AuditClient, build_event
from tests.integration.test_log_integrity import assert_log_is_sound
from tests.processes import ServerProcess

WRITERS = 6
KILLS = 3


def test_sigkill_under_load_loses_no_acknowledged_event(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any], server: Any
) -> None:
    token = server.token(tenant, "recorder")
    process = ServerProcess(migrated_database_url)
    port = process.port
    acknowledged: dict[str, str] = {}  # idempotency key -> event id
    attempted: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(index: int) -> None:
        # Generous retries: each restart leaves the port dark for a second or two.
        with AuditClient(
            process.target, token=token, timeout=5, max_attempts=60, max_backoff=0.25
        ) as client:
            n = 0
            while not stop.is_set():
                key = f"w{index}-{n}-{uuid.uuid4()}"
                with lock:
                    attempted.add(key)
                try:
                    stored = client.record(
                        build_event(action="crash.test", actor_id=f"w{index}", idempotency_key=key)
                    ).event
                except BaseException as error:
                    errors.append(error)
                    return
                with lock:
                    acknowledged[key] = stored.id
                n += 1

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(KILLS):
            _wait_for_more(acknowledged, lock, 40)
            process.kill()
            process = ServerProcess(migrated_database_url, port=port)
        _wait_for_more(acknowledged, lock, 40)
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
        process.terminate()

    assert errors == []
    rows = sql.execute(
        "SELECT idempotency_key, id::text FROM events WHERE tenant_id = %s", [tenant]
    ).fetchall()
    stored = dict(rows)
    # Each stored event is one a writer attempted; at most the last attempt of
    # each writer (in flight when stopped) is stored without acknowledgement.
    assert set(stored) <= attempted
    assert len(stored) <= len(acknowledged) + WRITERS
    missing = {key for key in acknowledged if stored.get(key) != acknowledged[key]}
    assert missing == set(), "acknowledged events are missing or changed"
    assert len(acknowledged) >= (KILLS + 1) * 40
    assert_log_is_sound(sql, tenant, len(rows))


def _wait_for_more(acknowledged: dict[str, str], lock: threading.Lock, more: int) -> None:
    with lock:
        target = len(acknowledged) + more
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            if len(acknowledged) >= target:
                return
        time.sleep(0.01)
    raise AssertionError("writers made no progress")
