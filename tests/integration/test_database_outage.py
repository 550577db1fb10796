"""PostgreSQL stopped and started again under load, on a cluster of the test's
own: meanwhile the server answers UNAVAILABLE with RetryInfo at once and its
health is NOT_SERVING; then it reconnects by itself, health is SERVING again,
every acknowledged event is there exactly once and the log verifies."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql
from psycopg.conninfo import make_conninfo

from sealtrail import AuditClient, UnavailableError, build_event, build_sink
from sealtrail_server.store.database import DEFAULT_CONNECT_TIMEOUT, Database
from sealtrail_server.store.migrations import migrate
from tests.conftest import ServerThread, copy_of_cluster

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SECRET = "whsec_" + "A" * 44


class Cluster:
    """A PostgreSQL cluster (pgserver's binaries) that a test may stop and
    start: made by its own initdb, or started on a copy of `initdb` (conftest
    `initdb_cluster`), a cluster as new."""

    def __init__(self, base: Path | None = None, *, initdb: Path | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        self._pgserver = pgserver
        self.data = Path(tempfile.mkdtemp(prefix="sealtrail-outage-pg-", dir=base))
        if initdb is not None:
            self.data.rmdir()  # the copy is made in its place, its modes and owner kept
            copy_of_cluster(initdb, self.data)
        self._server = pgserver.get_server(self.data, cleanup_mode="delete")
        self.url = self._server.get_uri()
        self._socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l",
                     str(self._server.log), "start")  # fmt: skip

    def running(self) -> bool:
        try:
            self._pg_ctl("status")
        except Exception:  # pg_ctl status exits non-zero when no server runs
            return False
        return True

    def _pg_ctl(self, *args: str) -> None:
        # As pgserver itself runs it: as its own system user when we are root.
        # (That fork, beside the test server's gRPC threads, is why gRPC's fork
        # support is off: ADR 0030.)
        user = self._server.system_user
        self._pgserver.pg_ctl(list(args), pgdata=self.data, user=user, timeout=30)

    def close(self) -> None:
        self._server.cleanup()
        shutil.rmtree(self.data, ignore_errors=True)


@contextlib.contextmanager
def migrated_cluster(*, initdb: Path | None = None) -> Iterator[Cluster]:
    """A Cluster of the test's own (on a copy of `initdb` if given), migrated;
    closed after."""
    made = Cluster(initdb=initdb)

    async def migrated() -> None:
        async with await psycopg.AsyncConnection.connect(made.url, autocommit=True) as conn:
            await migrate(conn)

    try:
        asyncio.run(migrated())
        yield made
    finally:
        made.close()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with migrated_cluster() as made:
        yield made


def health(target: str) -> Any:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


def wait_for_health(target: str, status: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while health(target) != status:
        assert time.monotonic() < deadline, f"health never became {status}"
        time.sleep(0.1)


@pytest.fixture
def outage_server(cluster: Cluster) -> Iterator[ServerThread]:
    running = ServerThread(cluster.url, database_probe_interval=0.2)
    try:
        yield running
    finally:
        running.close()


def test_a_database_restart_under_load_loses_nothing(
    cluster: Cluster, outage_server: ServerThread
) -> None:
    server = outage_server
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = server.token(tenant, "recorder")
    admin_token = server.token(tenant)  # made now: the test's own pool dies with the outage
    acknowledged: dict[str, str] = {}
    stop = threading.Event()

    def write(worker: int) -> None:
        # Clients retry UNAVAILABLE with the same idempotency key, as a real one would.
        with AuditClient(server.target, token=token, max_attempts=1000, max_backoff=0.5) as client:
            n = 0
            while not stop.is_set():
                key = f"{worker}-{n}"
                result = client.record(
                    build_event(action="doc.edit", actor_id="u", idempotency_key=key)
                )
                acknowledged[key] = result.event.id
                n += 1

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    try:
        for writer in writers:
            writer.start()
        time.sleep(1.0)
        cluster.stop()
        wait_for_health(server.target, NOT_SERVING)
        with AuditClient(server.target, token=token, max_attempts=1) as once:
            with pytest.raises(UnavailableError) as refused:
                once.record(action="doc.edit", actor_id="u")
            assert refused.value.retry_after is not None and refused.value.retry_after > 0
        during = len(acknowledged)
        time.sleep(1.0)
        cluster.start()
        wait_for_health(server.target, SERVING)
        deadline = time.monotonic() + 30
        while len(acknowledged) < during + 50:  # writing again
            assert time.monotonic() < deadline, "writes did not resume"
            time.sleep(0.1)
    finally:
        stop.set()
        for writer in writers:
            writer.join(60)
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, id::text FROM events WHERE tenant_id = %s", [tenant]
        ).fetchall()
    stored = dict(rows)
    assert len(stored) == len(rows)  # no key twice
    assert {k: stored.get(k) for k in acknowledged} == acknowledged  # every ack, as answered
    with AuditClient(server.target, token=admin_token) as admin:
        assert admin.verify_log().ok


@pytest.fixture
def few_slots(cluster: Cluster) -> Cluster:
    """`cluster` with 20 connection slots, fewer for a test to take."""
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET max_connections = 20")
    cluster.stop()
    cluster.start()
    return cluster


@contextlib.contextmanager
def every_slot_taken(cluster: Cluster) -> Iterator[None]:
    """Every connection slot held, the superuser's reserved ones too."""
    held: list[psycopg.Connection[Any]] = []
    try:
        while True:
            try:
                held.append(psycopg.connect(cluster.url, autocommit=True))
            except psycopg.OperationalError as full:
                assert "too many clients" in str(full)
                break
        yield
    finally:
        for conn in held:
            conn.close()


def test_a_database_at_max_connections_is_still_served(few_slots: Cluster) -> None:
    """The probe opened a connection of its own each time: with PostgreSQL's
    connection slots all taken (other clients, more replicas than planned),
    it was refused, and the server, whose pooled connections all worked, said
    NOT_SERVING and refused every call (helper-140)."""
    server = ServerThread(few_slots.url, database_probe_interval=0.2)
    try:
        token = server.token(f"t-{uuid.uuid4().hex[:8]}", "recorder")
        with AuditClient(server.target, token=token, max_attempts=1) as client:
            client.record(action="doc.edit", actor_id="u")
            with every_slot_taken(few_slots):
                time.sleep(10 * 0.2)  # ten probes
                assert health(server.target) == SERVING
                client.record(action="doc.edit", actor_id="u")  # on the pool's connections
    finally:
        server.close()


def test_a_database_that_refuses_a_connection_for_want_of_slots_answers(
    few_slots: Cluster,
) -> None:
    """With no pooled connection free (all busy with load), the probe opens
    one of its own: refused for want of a slot, the database has answered."""

    async def probe_with_the_pool_busy() -> bool:
        db = await Database.open(few_slots.url, min_size=1, max_size=1)
        try:
            async with db.pool.connection():  # its only one, busy
                with every_slot_taken(few_slots):
                    return await db.probe(timeout=1.0)
        finally:
            await db.close()

    assert asyncio.run(probe_with_the_pool_busy())


@pytest.mark.parametrize("limited", ["role", "database"])
def test_a_database_that_refuses_a_connection_for_a_connection_limit_answers(
    cluster: Cluster, limited: str
) -> None:
    """A CONNECTION LIMIT of the service's role or database (a DBA's share of
    max_connections for it) refuses a connection as max_connections does
    (SQLSTATE 53300), in other words: "too many connections for role". With
    its pooled connections all busy with load, the probe took that refusal
    for an outage, and two probes on the server refused every call, health
    NOT_SERVING, though its pooled connections all worked (as at
    max_connections before helper-140)."""
    login = f"sealtrail_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.url, autocommit=True) as owner:
        owner.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER CONNECTION LIMIT {}"
                " IN ROLE sealtrail_service, sealtrail_system"
            ).format(sql.Identifier(login), sql.Literal(1 if limited == "role" else -1))
        )
        if limited == "database":  # the superuser's connections are not limited
            database = owner.execute("SELECT current_database()").fetchone()
            assert database is not None
            owner.execute(
                sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 1").format(sql.Identifier(database[0]))
            )
    url = make_conninfo(cluster.url, user=login)

    async def probe_with_the_pool_busy() -> bool:
        db = await Database.open(url, min_size=1, max_size=1)
        try:
            async with db.pool.connection():  # its only one, busy
                return await db.probe(timeout=1.0)
        finally:
            await db.close()

    assert asyncio.run(probe_with_the_pool_busy())


def test_a_stop_just_after_the_database_went_down_is_not_held_by_it(cluster: Cluster) -> None:
    """PostgreSQL stopped with the server (a compose down, a node drain), a
    moment before its SIGTERM: the stop ended the database watch first, so
    the server, still taking the database for reachable, waited the pool's
    timeout at each use the stop made (token uses, forwarding, checkpoints,
    pending appends): about 25 s, past docker stop's 10 (helper-202)."""

    def stop_after_some_work(database_down: bool) -> float:
        server = ServerThread(cluster.url)
        try:
            tenant = f"t-{uuid.uuid4().hex[:8]}"
            with AuditClient(server.target, token=server.token(tenant)) as client:
                sink = build_sink(
                    "audit", "webhook", url="http://127.0.0.1:9/hook", secrets=[SECRET]
                )
                client.create_sink(sink)
                client.record(action="doc.edit", actor_id="u")
        finally:
            if database_down:
                cluster.stop()
            began = time.monotonic()
            server.close()
        return time.monotonic() - began

    healthy = stop_after_some_work(database_down=False)
    down = stop_after_some_work(database_down=True)
    # One use may still wait the pool's timeout (5 s): it asked for a
    # connection before the watch found the database down. Not one per use.
    assert down < healthy + DEFAULT_CONNECT_TIMEOUT + 3, f"{healthy:.1f} s, then {down:.1f} s"
