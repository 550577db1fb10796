"""Several server processes on one database, driven at once by real clients
(docs/scaling.md): what each process writes, the others stream, answer
retries of and take work over from, SIGKILL or not."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, build_alert_rule, build_event, build_filter, build_sink
from sealtrail_server.forward import forwarder as forwarder_module
from tests.conftest import ServerThread, database_of_its_own, run_operator
from tests.http_endpoint import Endpoint, Reply, always_ok, endpoint
from tests.integration.test_log_integrity import assert_log_is_sound, run_writers
from tests.polls import until_true
from tests.processes import ServerProcess


def _whole_log(sql: psycopg.Connection[Any], tenant: str) -> int:
    row = sql.execute("SELECT tree_size FROM chain_heads WHERE tenant_id = %s", [tenant]).fetchone()
    assert row is not None
    return int(row[0])


def test_one_tenant_through_two_processes_with_each_retry_raced_to_the_other(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Each event is sent to both processes at once under one idempotency
    key (a retry landing on the other process while the first attempt is in
    flight): both are answered with the one event, stored once; the seqs are
    dense, the tree sound, and a live stream on one process sees every event
    of both, in order, once."""
    first, second = ServerThread(migrated_database_url), ServerThread(migrated_database_url)
    writers, each = 8, 25
    try:
        token = first.token(tenant)
        clients = [AuditClient(s.target, token=token, timeout=30) for s in (first, second)]
        reader = AuditClient(second.target, token=token, timeout=30)
        streamed: list[int] = []
        stream = reader.stream(after_seq=0)

        def read() -> None:
            for event in stream:
                streamed.append(event.seq)
                if len(streamed) == writers * each:
                    return

        streaming = threading.Thread(target=read, daemon=True)
        streaming.start()
        answers: dict[str, set[str]] = {}

        def send(client: AuditClient, event: Any, got: list[str]) -> None:
            got.append(client.record(event).event.id)

        def write(index: int) -> None:
            for n in range(each):
                key = f"w{index}-{n}-{uuid.uuid4()}"
                event = build_event(action="several.write", actor_id="w", idempotency_key=key)
                got: list[str] = []
                retry = threading.Thread(
                    target=send, args=(clients[(index + n + 1) % 2], event, got)
                )
                retry.start()
                send(clients[(index + n) % 2], event, got)
                retry.join(30)
                answers[key] = set(got)

        assert run_writers(writers, write) == []
        stored = dict(
            sql.execute(
                "SELECT idempotency_key, id::text FROM events WHERE tenant_id = %s"
                " AND action = 'several.write'",
                [tenant],
            ).fetchall()
        )
        assert {key: {event_id} for key, event_id in stored.items()} == answers
        size = _whole_log(sql, tenant)
        assert_log_is_sound(sql, tenant, size)
        streaming.join(30)
        (own,) = sql.execute(  # the stream's own record is not sent to it
            "SELECT seq FROM events WHERE tenant_id = %s AND action = 'audit_log.streamed'",
            [tenant],
        ).fetchone()  # type: ignore[misc]
        assert streamed == [seq for seq in range(1, size + 1) if seq != own]
        for client in clients:
            assert client.verify_log().ok
            client.close()
        reader.close()
    finally:
        second.close()
        first.close()


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    """No other test's server takes this one's leases."""
    with database_of_its_own(database_url, "several") as url:
        yield url


def _delivered(receiver: Endpoint) -> list[int]:
    return [e["seq"] for r in receiver.requests() for e in json.loads(r.body)["data"]["events"]]


def _alerted(sql: psycopg.Connection[Any], tenant: str) -> list[int]:
    rows = sql.execute(
        "SELECT (record::jsonb #>> '{details,trigger_seq}')::bigint FROM events"
        " WHERE tenant_id = %s AND action = 'security.alert' ORDER BY 1",
        [tenant],
    ).fetchall()
    return [seq for (seq,) in rows]


def test_sigkill_of_the_process_holding_the_leases_under_load(own_database: str) -> None:
    """Three processes; the one holding a sink's lease and the tenant's alert
    lease is killed (SIGKILL) while six writers record through all three,
    retrying each event on the next process under its key. The others take
    both leases over once they expire: every acknowledged event is stored
    once, as answered; every event is delivered (at least once), and every
    match alerted exactly once."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    made = run_operator(own_database, "token", "create", "--tenant", tenant, "--role", "admin")
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    env = {"SEALTRAIL_FORWARD_LEASE_SECONDS": "3", "SEALTRAIL_FORWARD_POLL_INTERVAL": "0.2"}
    processes = [ServerProcess(own_database, env=env)]
    clients: list[AuditClient] = []
    with endpoint() as receiver, psycopg.connect(own_database, autocommit=True) as sql:
        try:
            clients.append(AuditClient(processes[0].target, token=token, max_attempts=1))
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
            clients[0].create_sink(
                build_sink("soc", "webhook", url=receiver.url, secrets=[secret],
                           filter=build_filter(actions="several.*"))
            )  # fmt: skip
            clients[0].create_alert_rule(
                build_alert_rule("m", "match", filter=build_filter(actions="several.alert"))
            )
            clients[0].record(action="several.first", actor_id="a")
            leases = (
                "SELECT (SELECT lease_owner FROM sinks WHERE tenant_id = %(t)s) IS NOT NULL"
                " AND (SELECT lease_owner FROM alert_cursors WHERE tenant_id = %(t)s) IS NOT NULL"
            )
            until_true(sql, leases, {"t": tenant}, "the only process took no lease")
            processes += [ServerProcess(own_database, env=env) for _ in range(2)]
            clients += [AuditClient(p.target, token=token, max_attempts=1) for p in processes[1:]]
            acknowledged: dict[str, str] = {}
            stop = threading.Event()
            dead: set[int] = set()

            def write(index: int) -> None:
                n = 0
                while not stop.is_set():
                    key = f"w{index}-{n}"
                    event = build_event(
                        action="several.alert" if n % 5 == 0 else "several.plain",
                        actor_id=f"w{index}",
                        idempotency_key=key,
                    )
                    for attempt in range(6):
                        where = (index + n + attempt) % 3
                        if where in dead:
                            continue
                        try:
                            acknowledged[key] = clients[where].record(event).event.id
                            break
                        except Exception:
                            continue
                    n += 1

            writing = [threading.Thread(target=write, args=(i,)) for i in range(6)]
            for thread in writing:
                thread.start()
            time.sleep(2)
            dead.add(0)
            processes[0].kill()
            time.sleep(6)  # past the leases' 3 s
            stop.set()
            for thread in writing:
                thread.join(60)

            stored = dict(
                sql.execute(
                    "SELECT idempotency_key, id::text FROM events WHERE tenant_id = %s"
                    " AND action IN ('several.alert', 'several.plain')",
                    [tenant],
                ).fetchall()
            )
            assert {key: stored.get(key) for key in acknowledged} == acknowledged
            # Stored unanswered: at most each writer's last event, every try of it failed.
            assert len(stored) <= len(acknowledged) + len(writing)
            forwarded = [
                seq
                for (seq,) in sql.execute(
                    "SELECT seq FROM events WHERE tenant_id = %s AND action LIKE 'several.%%'"
                    " ORDER BY seq",
                    [tenant],
                ).fetchall()
            ]
            alerting = [
                seq
                for (seq,) in sql.execute(
                    "SELECT seq FROM events WHERE tenant_id = %s AND action = 'several.alert'"
                    " ORDER BY seq",
                    [tenant],
                ).fetchall()
            ]
            deadline = time.monotonic() + 60
            while not set(forwarded) <= set(_delivered(receiver)) or len(
                _alerted(sql, tenant)
            ) < len(alerting):
                assert time.monotonic() < deadline, "the leases were not taken over"
                time.sleep(0.1)
            assert set(_delivered(receiver)) == set(forwarded)
            time.sleep(1)  # an alert recorded twice would be in by now
            assert _alerted(sql, tenant) == alerting
            assert clients[1].verify_log().ok
        finally:
            for client in clients:
                client.close()
            for process in processes[1:]:
                process.terminate()
            processes[0].kill()
        assert_log_is_sound(sql, tenant, _whole_log(sql, tenant))


def test_a_sinks_backoff_runs_by_the_databases_clock_whatever_its_holders(
    own_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink's next attempt after a failure was stamped by the clock of the
    process that failed, and awaited by the clock of the one holding the sink
    next: a process an hour ahead made the sink wait an hour more once another
    took it over (its lease moved, or the process restarted with its clock
    put right), though its backoff was a fraction of a second. Lease times
    are the database's; the backoff's now is too."""
    ahead = timedelta(hours=1)
    real_now = forwarder_module._now
    skewed: set[asyncio.AbstractEventLoop] = set()

    def now() -> datetime:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        return real_now() + (ahead if loop in skewed else timedelta())

    monkeypatch.setattr(forwarder_module, "_now", now)
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    with endpoint() as receiver, psycopg.connect(own_database, autocommit=True) as sql:
        receiver.responder = lambda received, index: Reply(status=503)
        first = ServerThread(own_database)
        skewed.add(first.loop)
        try:
            with AuditClient(first.target, token=first.token(tenant), max_attempts=1) as client:
                secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
                client.create_sink(
                    build_sink("soc", "webhook", url=receiver.url, secrets=[secret])
                )  # fmt: skip
                client.record(action="clock.event", actor_id="a")
                failed = "SELECT consecutive_failures > 0 FROM sinks WHERE tenant_id = %s"
                until_true(sql, failed, [tenant], "the sink never failed", every=0.02)
        finally:
            first.close()  # its leases given up
        receiver.responder = always_ok
        refused = len(receiver.requests())
        second = ServerThread(own_database)
        try:
            receiver.wait_for(lambda got: len(got) > refused, timeout=15)
        finally:
            second.close()
