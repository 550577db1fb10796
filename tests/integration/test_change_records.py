"""A change's record is appended in the change's own transaction (ADR 0075):
what is routed there, and what must not be; and the appender around it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import queue
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
import pytest

from sealtrail import (
    AuditClient,
    PermissionDeniedError,
    SealtrailError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail.v1 import event_pb2, forwarding_pb2
from sealtrail_server.api.audited import record_event
from sealtrail_server.domain.errors import FailedPrecondition
from sealtrail_server.store.appender import Appender
from sealtrail_server.store.changes import Changes, recorded_within
from sealtrail_server.store.database import Database
from tests.conftest import ServerThread
from tests.http_endpoint import Endpoint, endpoint
from tests.service_login import service_login_url


@pytest.fixture
def receiver() -> Iterator[Endpoint]:
    with endpoint() as running:
        yield running


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def test_a_refusal_inside_a_change_is_recorded_though_the_change_rolls_back(
    server: ServerThread,
    client: AuditClient,
    sql: psycopg.Connection[Any],
    tenant: str,
    receiver: Endpoint,
) -> None:
    """A tenant admin's change of a managed sink is refused inside the change
    (under its lock), and the refusal recorded (ADR 0060) by a task the
    refusal starts. That task inherited the change's routing: the refusal's
    record was appended in the change's transaction and rolled back with it,
    and for the rest of its window no refusal of that token was recorded."""
    client.record(build_event(action="doc.edit", actor_id="u-1"))
    sink = client.create_sink(build_sink("kept", "webhook", url=receiver.url, secrets=[_secret()]))
    # As a deployment-wide sink's instance in this tenant (ADR 0070).
    sql.execute(
        "UPDATE sinks SET deployment_sink_id = gen_random_uuid(), deployment_revision = 1"
        " WHERE tenant_id = %s AND id = %s",
        [tenant, sink.sink.id],
    )
    try:
        with pytest.raises(PermissionDeniedError) as refused:
            client.update_sink(forwarding_pb2.Sink(id=sink.sink.id, paused=True), fields=["paused"])
        assert refused.value.reason == "SINK_MANAGED_BY_OPERATOR"
        rule = build_alert_rule("to it", "match", filter=build_filter(actions="doc.*"))
        rule.sink_ids.append(sink.sink.id)
        with pytest.raises(PermissionDeniedError) as refused:
            client.create_alert_rule(rule)
        assert refused.value.reason == "SINK_MANAGED_BY_OPERATOR"
        denied = list(client.query(build_filter(actions="audit_log.access_denied")))
        assert sorted(e.details["rpc"] for e in denied) == ["CreateAlertRule", "UpdateSink"]
        assert client.verify_log().ok
    finally:
        sql.execute("DELETE FROM sinks WHERE tenant_id = %s", [tenant])
        with contextlib.suppress(Exception):
            client.close()


def _dense(client: AuditClient) -> list[int]:
    """Every seq of the tenant's log, checked to run 1..N without a gap or a repeat."""
    seqs = sorted(e.seq for e in client.query(build_filter()))
    assert seqs == list(range(1, len(seqs) + 1)), "seqs not dense"
    return seqs


def _churn(
    recorders: list[Callable[[int], list[int]]],
    changers: list[Callable[[random.Random], object]],
    *,
    seconds: float,
    seed: int,
) -> tuple[list[int], list[BaseException], int]:
    """Each recorder (its round -> the seqs acknowledged) and each changer
    (a seeded draw of which change) run in a loop of its own thread for
    `seconds`: the seqs acknowledged, the failures, the changes made."""
    ends = time.monotonic() + seconds
    acknowledged: list[int] = []
    failures: list[BaseException] = []
    changes = [0]
    lock = threading.Lock()

    def record(recorder: Callable[[int], list[int]]) -> None:
        round_ = 0
        while time.monotonic() < ends:
            try:
                seqs = recorder(round_)
            except BaseException as error:
                with lock:
                    failures.append(error)
                return
            with lock:
                acknowledged.extend(seqs)
            round_ += 1

    def change(changer: Callable[[random.Random], object], draws: random.Random) -> None:
        while time.monotonic() < ends:
            try:
                changer(draws)
            except BaseException as error:
                with lock:
                    failures.append(error)
                return
            with lock:
                changes[0] += 1

    seeds = random.Random(seed)
    threads = [threading.Thread(target=record, args=(r,)) for r in recorders] + [
        threading.Thread(target=change, args=(c, random.Random(seeds.random()))) for c in changers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    assert not any(thread.is_alive() for thread in threads)
    return acknowledged, failures, changes[0]


def _changer(admin: AuditClient, *, hold: bool = True) -> Callable[[random.Random], object]:
    """A seeded change of the tenant's configuration, each recorded; a legal
    hold placed among them if `hold`."""

    def change(draws: random.Random) -> object:
        match draws.randrange(4 if hold else 3):
            case 0:
                return admin.set_retention_policy(draws.choice(["forever", 400, 500, 600]))
            case 1:
                return admin.set_redaction_mode(draws.choice(["replace", "hmac"]))
            case 2:
                made = admin.create_token("reader", name=f"n{draws.randrange(1000)}")
                return admin.revoke_token(made.token.token_id)
            case _:
                return admin.set_legal_hold(True, reason=f"case {draws.randrange(1000)}")

    return change


def _recorders(client: AuditClient, tag: str) -> list[Callable[[int], list[int]]]:
    def one(n: int) -> Callable[[int], list[int]]:
        def record(round_: int) -> list[int]:
            event = build_event(
                action="doc.edit", actor_id=f"u-{n}", idempotency_key=f"{tag}-{n}-{round_}"
            )
            return [client.record(event).event.seq]

        return record

    def batch(round_: int) -> list[int]:
        events = [
            build_event(action="doc.view", actor_id="b", idempotency_key=f"{tag}-b-{round_}-{i}")
            for i in range(20)
        ]
        results = client.record_batch(events)
        if errors := [r.error for r in results if r.error is not None]:
            raise errors[0]
        return [r.event.seq for r in results if r.event is not None]

    return [one(0), one(1), one(2), batch]


def test_records_and_changes_of_one_tenant_interleaved_in_one_process(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    """The changes append through the change's transaction while the
    process's appender writes the tenant's Records from the head it keeps:
    none is refused, none written twice, and the log verifies."""
    records = client_for(tenant, max_attempts=1)  # an UNAVAILABLE is seen, not retried
    admin = client_for(tenant)
    acknowledged, failures, changes = _churn(
        _recorders(records, "one"), [_changer(admin)], seconds=4.0, seed=231
    )
    assert not failures, failures
    assert changes > 3 and len(acknowledged) > 50
    assert len(set(acknowledged)) == len(acknowledged)
    assert set(acknowledged) <= set(_dense(admin))
    assert admin.verify_log().ok


@pytest.fixture
def other_server(migrated_database_url: str) -> Iterator[ServerThread]:
    """A second server process of the deployment, whose checkpointer signs
    every fifth of a second."""
    running = ServerThread(migrated_database_url, checkpoint_interval=0.2)
    try:
        yield running
    finally:
        running.close()


def test_records_changes_purges_and_checkpoints_of_one_tenant_through_two_processes(
    server: ServerThread, other_server: ServerThread, tenant: str
) -> None:
    """Each process records the tenant's events and changes its
    configuration, while one issues checkpoints and the other runs purge
    passes: no lock-order cycle (no DeadlockDetected, no INTERNAL, no
    refusal), each acknowledged record stored once, seqs dense, the log
    verifies."""
    clients: list[AuditClient] = []

    def client_of(on: ServerThread, **options: Any) -> AuditClient:
        made = AuditClient(on.target, token=on.token(tenant), **options)
        clients.append(made)
        return made

    def purge(_: random.Random) -> object:
        return server.run(server.service.purger.run_once())

    try:
        admin = client_of(server)
        acknowledged, failures, changes = _churn(
            _recorders(client_of(server, max_attempts=1), "a")
            + _recorders(client_of(other_server, max_attempts=1), "b"),
            [_changer(admin), _changer(client_of(other_server)), purge],
            seconds=5.0,
            seed=2310,
        )
        assert not failures, failures
        assert changes > 6 and len(acknowledged) > 100
        assert len(set(acknowledged)) == len(acknowledged)
        assert set(acknowledged) <= set(_dense(admin))
        assert admin.verify_log().ok
    finally:
        for made in clients:
            made.close()


def test_an_erasure_amid_records_and_changes_of_the_tenant_through_two_processes(
    server: ServerThread, other_server: ServerThread, tenant: str
) -> None:
    """An erasure waits for the changes in flight (each shares its lock,
    then holds the tenant's head from its record to its commit) and the
    appenders' writes: every caller is answered as documented (erased,
    being erased, or its token gone), never DeadlockDetected or INTERNAL;
    every record acknowledged before is within the erased log."""
    clients: list[AuditClient] = []

    def client_of(on: ServerThread, **options: Any) -> AuditClient:
        made = AuditClient(on.target, token=on.token(tenant), **options)
        clients.append(made)
        return made

    erasing = client_of(server)
    receipts: list[Any] = []

    def erase(draws: random.Random) -> object:
        time.sleep(1.0 + draws.random())
        receipts.append(erasing.erase_tenant(tenant))
        raise _Erased

    try:
        acknowledged, failures, _ = _churn(
            _recorders(client_of(server, max_attempts=1), "a")
            + _recorders(client_of(other_server, max_attempts=1), "b"),
            [
                _changer(client_of(server), hold=False),
                _changer(client_of(other_server), hold=False),
                erase,
            ],
            seconds=4.0,
            seed=2311,
        )
    finally:
        for made in clients:
            made.close()
    [receipt] = receipts
    assert acknowledged and max(acknowledged) <= receipt.final_tree_size
    for failure in failures:
        if isinstance(failure, _Erased):
            continue
        assert isinstance(failure, SealtrailError), repr(failure)
        assert "deadlock" not in str(failure).lower(), failure
        assert failure.code in {
            grpc.StatusCode.FAILED_PRECONDITION,  # TENANT_ERASED
            grpc.StatusCode.UNAVAILABLE,  # being erased
            grpc.StatusCode.UNAUTHENTICATED,  # its token erased
        }, failure


class _Erased(Exception):
    """The erasing thread's end."""


def _record_a_change(appender: Appender, tenant_id: str, *, key: str = "") -> Any:
    return record_event(
        appender,
        tenant_id,
        actor_type=event_pb2.ACTOR_TYPE_SYSTEM,
        actor_id="test",
        now=datetime.now(UTC),
        action="retention.policy_updated",
        description="a change",
        category=event_pb2.CATEGORY_CONFIGURATION,
        resource_type="retention_policy",
        resource_id=tenant_id,
        idempotency_key=key,
    )


def test_a_change_record_refused_leaves_its_transaction_as_it_was(
    migrated_database_url: str, client: AuditClient, tenant: str
) -> None:
    """Refused without a database error (the tenant erased), so that the
    transaction goes on if its caller catches the refusal: it goes on as the
    service role, seeing its tenant's rows alone, not as the system role the
    record was being written as, which sees every tenant's."""
    client.erase_tenant(tenant)

    async def run() -> tuple[str, str]:
        db = await Database.open(service_login_url(migrated_database_url), max_size=2)
        appender = Appender(db)
        appender.start()
        try:
            async with db.connection(tenant) as conn, conn.transaction():
                with (
                    recorded_within(conn, tenant),
                    pytest.raises(FailedPrecondition, match="was erased"),
                ):
                    await _record_a_change(appender, tenant)
                cursor = await conn.execute(
                    "SELECT current_user::text,"
                    " current_setting('idle_in_transaction_session_timeout')"
                )
                found = await cursor.fetchone()
                assert found is not None
                return str(found[0]), str(found[1])
        finally:
            await appender.stop()
            await db.close()

    assert asyncio.run(run()) == ("sealtrail_service", "0")


class _Stream:
    """A tenant's live stream of change records, consumed in a thread."""

    def __init__(self, client: AuditClient) -> None:
        self.received: queue.Queue[Any] = queue.Queue()
        subscribed = threading.Event()

        def run() -> None:
            with contextlib.suppress(SealtrailError):  # its client closed under it
                for event in client.stream(
                    build_filter(actions="retention.policy_updated"),
                    on_heartbeat=lambda _: subscribed.set(),
                ):
                    self.received.put(event)

        threading.Thread(target=run, daemon=True).start()
        assert subscribed.wait(30), "the stream never started"

    def take(self, count: int, timeout: float = 30) -> list[int]:
        return [self.received.get(timeout=timeout).seq for _ in range(count)]


def test_a_changes_records_reach_streams_as_it_commits_and_others_as_they_do(
    server: ServerThread, client_for: Callable[..., AuditClient], tenant: str
) -> None:
    """Two records of one change (one of them again under its key) are
    streamed once the change commits, not before; a record of another tenant
    made inside the change is its own, written and streamed at once; one a
    task started inside the change makes after it is written by the
    appender. The log of each verifies."""
    other = f"{tenant}-b"
    mine, theirs = client_for(tenant), client_for(other)
    mine.record(build_event(action="doc.edit", actor_id="u-1"))
    theirs.record(build_event(action="doc.edit", actor_id="u-1"))
    mine_streamed, theirs_streamed = _Stream(mine), _Stream(theirs)

    async def run() -> tuple[list[int], list[int], int]:
        db = await Database.open(service_login_url(server.settings.owner_database_url), max_size=3)
        appender = Appender(db)
        appender.start()
        try:
            async with Changes(db).exclusive(tenant, "test", caller=None):
                first = await _record_a_change(appender, tenant, key="k-1")
                again = await _record_a_change(appender, tenant, key="k-1")
                second = await _record_a_change(appender, tenant)
                assert again.deduplicated and again.seq == first.seq
                aside = await _record_a_change(appender, other)
                assert await asyncio.to_thread(theirs_streamed.take, 1) == [aside.seq]

                async def after_it() -> Any:
                    await asyncio.sleep(0.3)
                    return await _record_a_change(appender, tenant)

                later = asyncio.ensure_future(after_it())
                await asyncio.sleep(0.5)  # nothing of the change streamed meanwhile
                assert mine_streamed.received.empty()
            streamed = await asyncio.to_thread(mine_streamed.take, 2)
            return [first.seq, second.seq], streamed, (await later).seq
        finally:
            await appender.stop()
            await db.close()

    recorded, streamed, later = asyncio.run(run())
    assert streamed == recorded
    assert mine_streamed.take(1) == [later] and later == recorded[-1] + 1
    for client in (mine, theirs):
        _dense(client)
        assert client.verify_log().ok
