"""A server process frozen mid-append (SIGSTOP, `docker pause`, a debugger, a
host swapping hard) beside others on one database (docs/scaling.md)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import secrets
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from sealtrail import (
    AuditClient,
    SealtrailError,
    UnavailableError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail.v1 import alerting_pb2, forwarding_pb2
from sealtrail_server.alerts import evaluator as evaluator_module
from sealtrail_server.domain.purge_summaries import SummarySeal
from sealtrail_server.forward import forwarder as forwarder_module
from sealtrail_server.integrity import checkpointer as checkpointer_module
from sealtrail_server.integrity import signed_sizes as signed_sizes_module
from sealtrail_server.retention.purger import LOCK_KEY, Purger
from sealtrail_server.store import appender as appender_module
from sealtrail_server.store import changes as changes_module
from tests.conftest import REDACTION_SECRET, ServerThread, signed_checkpoints_dir_of
from tests.http_endpoint import endpoint
from tests.integration.test_log_integrity import assert_log_is_sound
from tests.lock_waits import count_now, until, until_blocked
from tests.polls import until_true
from tests.two_processes import TwoProcesses, two_processes

FROZEN_SECONDS = 12  # past the other process's lock timeout (5 s), and its answer
SEAL = SummarySeal(REDACTION_SECRET)


def _frozen_waiting(
    sql: psycopg.Connection[Any],
    both: TwoProcesses,
    lock: str,
    call: Callable[..., Any],
    *args: Any,
    waiter: str = "sealtrail",
    running: str = "",
    **kwargs: Any,
) -> Future[Any]:
    """`call(*args, **kwargs)`, a call through the first process, run once
    `lock` is taken here, in a transaction; once the call waits for it (a
    session of application_name `waiter`, running a statement beginning with
    `running`), the first process is frozen (FROZEN_SECONDS) as this lets go,
    whatever the call holds still held."""
    with sql.transaction():
        sql.execute(lock)
        pending = both.pool.submit(call, *args, **kwargs)
        until_blocked(sql, pending, waiter=waiter, running=running)
        both.first_server.loop.call_soon_threadsafe(time.sleep, FROZEN_SECONDS)
    return pending


@pytest.mark.parametrize("known", [False, True], ids=["first-write-here", "written-here-before"])
def test_a_process_frozen_holding_a_head_lets_it_go_and_the_others_append(
    migrated_database_url: str,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    known: bool,
) -> None:
    """Frozen with its transaction open, a process's session stayed for as long
    as its host's TCP answered for it (for ever, if only the process stopped:
    its kernel keeps the connection alive), and with it the tenant's head:
    every other process refused the tenant's appends, UNAVAILABLE, for as long.
    The session now ends itself once idle in its transaction that long, and
    the others append; the frozen one's batch, rolled back, was never answered
    as written. Its first write of the tenant creates the head; a later one
    (more than 64 events: no write from a kept head) only locks it."""
    monkeypatch.setattr(appender_module, "IDLE_IN_WRITE_SECONDS", 1.0)
    with two_processes(migrated_database_url, "recorder") as both:
        first, second = both.first, both.second
        before = []
        if known:
            first.record(action="frozen.before", actor_id="a")
            before.append("frozen.before")
        second.record(action="frozen.before", actor_id="b")  # the last to write
        before.append("frozen.before")
        batch = [build_event(action="frozen.first", actor_id="a") for _ in range(65)]
        # The frozen process's batch takes the head, then waits at the insert
        # of its tree's nodes: frozen there, its session goes idle in its
        # transaction, the head still locked, once this lets go.
        pending = _frozen_waiting(
            sql,
            both,
            "LOCK TABLE tree_nodes IN SHARE MODE",
            first.record_batch,
            batch if known else batch[:1],
        )
        started = time.monotonic()
        stored = second.record(action="frozen.other", actor_id="b").event
        assert time.monotonic() - started < FROZEN_SECONDS
        with pytest.raises(UnavailableError):
            pending.result(timeout=60)
        assert first.record(action="frozen.again", actor_id="a").event.seq == stored.seq + 1
        rows = sql.execute(
            "SELECT action FROM events WHERE tenant_id = %s ORDER BY seq", [both.tenant]
        ).fetchall()
        assert [action for (action,) in rows] == [*before, "frozen.other", "frozen.again"]
        assert_log_is_sound(sql, both.tenant, len(rows))


def test_a_process_frozen_signing_a_checkpoint_lets_the_others_sign(
    migrated_database_url: str, sql: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One issuer per tenant at a time, across processes: the issuer's lock
    (held in its transaction) was held by a process frozen while signing for
    as long as it stayed frozen, and every other process's fresh checkpoint of
    the tenant, its exports and the checkpointer's passes failed meanwhile.
    The session now ends itself once idle in that transaction as long as an
    append's would, and the others sign."""
    monkeypatch.setattr(checkpointer_module, "IDLE_IN_ISSUE_SECONDS", 1.0)
    with two_processes(migrated_database_url, checkpoint_interval=0) as both:
        both.first.record(action="frozen.event", actor_id="a")
        # The frozen process takes the issuer's lock, then waits to read the
        # checkpoints: frozen there, its session goes idle in its
        # transaction, the lock still held, once this lets go.
        pending = _frozen_waiting(
            sql,
            both,
            "LOCK TABLE checkpoints IN ACCESS EXCLUSIVE MODE",
            both.first.get_checkpoint,
            # Not the session server's checkpointer, whose pass (every 10 s)
            # waits on the table too: frozen then, the first process held
            # nothing, and signed once woken.
            # Its first read of them: the rows beyond its log (ADR 0156).
            running="SELECT count(*), coalesce(max(tree_size), 0) FROM checkpoints",
            fresh=True,
        )
        started = time.monotonic()
        signed = both.second.get_checkpoint(fresh=True)
        assert time.monotonic() - started < FROZEN_SECONDS
        with pytest.raises(UnavailableError):
            pending.result(timeout=60)
        (size,) = sql.execute(
            "SELECT tree_size FROM chain_heads WHERE tenant_id = %s", [both.tenant]
        ).fetchone()  # type: ignore[misc]
        assert signed.tree_size == size


def test_a_process_frozen_noting_what_the_key_signed_does_not_put_it_back_once_woken(
    migrated_database_url: str, sql: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The largest checkpoint the key signed of a log is kept in a file that
    every process of the data dir shares (ADR 0080), read and replaced under
    the tenant's issuer lock. A process frozen between the two (SIGSTOP, or an
    fsync that hangs on shared storage) lost that lock with its session once
    idle in its transaction; another process signed a larger checkpoint and
    kept it; woken, the first put its smaller size back over it, and the key's
    guard against a restored database forgot what it had signed since."""
    frozen, woken = threading.Event(), threading.Event()
    replace = signed_sizes_module._replace

    def freezing_replace(path: Any, text: str) -> None:
        if path.name == both.tenant and text.startswith("2 ") and not frozen.is_set():
            frozen.set()
            woken.wait(60)
        replace(path, text)

    monkeypatch.setattr(signed_sizes_module, "_replace", freezing_replace)
    with two_processes(migrated_database_url, checkpoint_interval=0) as both:
        both.first.record(action="frozen.event", actor_id="a")
        both.first.get_checkpoint(fresh=True)
        both.first.record(action="frozen.event", actor_id="a")
        pending = both.pool.submit(both.first.get_checkpoint, fresh=True)
        assert frozen.wait(30), "the first process never noted size 2"
        # Its session ended as its idle timeout ends it, letting go of the lock.
        (ended,) = sql.execute(
            "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a"
            " JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted"
            " CROSS JOIN hashtextextended(%s, 7) AS k"
            " WHERE a.state = 'idle in transaction'"
            " AND l.classid::bigint = (k >> 32) & 4294967295 AND l.objid::bigint = k & 4294967295",
            [both.tenant],
        ).fetchone()  # type: ignore[misc]
        assert ended == 1
        both.second.record(action="frozen.other", actor_id="b")
        with ThreadPoolExecutor(1) as other:
            signing = other.submit(both.second.get_checkpoint, fresh=True)
            with contextlib.suppress(TimeoutError):
                signing.result(timeout=2)  # waits for the frozen one, or not
            woken.set()
            signed = signing.result(timeout=60)
        with pytest.raises(UnavailableError):
            pending.result(timeout=60)
        assert signed.tree_size == 3
        (kept,) = signed_checkpoints_dir_of(migrated_database_url).glob(f"*/{both.tenant}")
        size, root = kept.read_text().split()
        assert (int(size), base64.b64decode(root)) == (3, signed.root_hash)


@pytest.mark.parametrize(
    ("table", "mode", "action"),
    [
        ("retention_policies", "ACCESS EXCLUSIVE", "retention.policy_updated"),
        ("retention_policies", "SHARE", "retention.policy_updated"),
        ("api_tokens", "SHARE", "api_token.created"),
    ],
    ids=["policy-before-its-read", "policy-at-its-write", "token-at-its-insert"],
)
def test_a_process_frozen_mid_change_lets_its_token_be_revoked_and_records_nothing_undone(
    migrated_database_url: str,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    table: str,
    mode: str,
    action: str,
) -> None:
    """A change holds its subject's lock and, shared, its calling token's
    (a revocation waits for the changes the token is making). A process
    frozen mid-change held both for as long as it stayed frozen: the token's
    revocation through any other process failed meanwhile. Ended once idle
    that long, the frozen change, woken, went on to record itself through its
    own appender and then failed to apply: the log said a revoked token
    changed the policy, which it never did. The change is now recorded in its
    own transaction, last, so both or neither commit. Frozen before it reads
    the policy (ACCESS EXCLUSIVE), or as it writes it (SHARE), or as it
    inserts a token it creates, each before its record."""
    monkeypatch.setattr(changes_module, "IDLE_IN_CHANGE_SECONDS", 1.0, raising=False)
    with two_processes(migrated_database_url, second_token=True) as both:
        first, second = both.first, both.second
        first.record(action="frozen.before", actor_id="a")
        (token_id,) = sql.execute(
            "SELECT token_id::text FROM api_tokens WHERE tenant_id = %s"
            " ORDER BY created_at LIMIT 1",
            [both.tenant],
        ).fetchone()  # type: ignore[misc]
        lock = f"LOCK TABLE {table} IN {mode} MODE"
        if table == "api_tokens":
            pending = _frozen_waiting(sql, both, lock, first.create_token, "reader")
        else:
            pending = _frozen_waiting(sql, both, lock, first.set_retention_policy, 30)
        started = time.monotonic()
        revoked = second.revoke_token(token_id)
        assert time.monotonic() - started < FROZEN_SECONDS
        assert revoked.event_id
        with pytest.raises(SealtrailError):
            pending.result(timeout=60)
        assert second.get_retention_policy().policy.default_days == 0  # forever
        assert len(second.list_tokens()) == 2
        rows = sql.execute(
            "SELECT action FROM events WHERE tenant_id = %s ORDER BY seq", [both.tenant]
        ).fetchall()
        actions = [recorded for (recorded,) in rows]
        assert action not in actions
        assert actions.count("api_token.revoked") == 1
        assert_log_is_sound(sql, both.tenant, len(rows))


def test_a_purge_pass_cancelled_twice_on_a_frozen_backend_lets_the_job_go_at_once(
    migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """The purge job's lock is held by its session (pg_advisory_lock), so
    it must end with the job's connection, not with the garbage collector. A
    pass cancelled twice (the server stopping, then stopping harder) while
    its backend stood frozen (SIGSTOP: a database host swapping hard) cuts
    psycopg's wait for the cancel request it sent, on the way out of the
    job's unlock and its connection's rollback, which only catches
    Exception: whichever of them it cuts, the connection must still be
    closed, and another session take the job as soon as the backend wakes.
    (Seen to hold with psycopg 3.2 and 3.3: the rollback of the job's
    connection, in autocommit, never waits; a cancel cut in a query's wait
    leaves it ACTIVE, so the unlock and rollback fail at once, and close.)"""

    async def nothing_to_record(_purged: Any) -> None:
        raise AssertionError("nothing is purged")

    purger = Purger(migrated_database_url, record=nothing_to_record, seal=SEAL)
    held = (
        "SELECT a.pid FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s"
        " AND (l.classid::bigint << 32 | l.objid::bigint) = %s"
    )

    async def cancelled_twice() -> asyncio.Task[list[Any]]:
        pass_ = asyncio.create_task(purger.run_once())
        deadline = time.monotonic() + 10
        while not (row := sql.execute(held, ["sealtrail-retention", LOCK_KEY]).fetchone()):
            assert time.monotonic() < deadline and not pass_.done(), "the pass took no lock"
            await asyncio.sleep(0.001)
        (pid,) = row
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(0.3)  # the pass waits for its frozen backend
            assert not pass_.done()
            for _ in range(2):
                pass_.cancel()
                await asyncio.sleep(0.3)
            assert pass_.done()
        finally:
            os.kill(pid, signal.SIGCONT)
        return pass_

    cancelled = asyncio.run(cancelled_twice())  # kept: its frames hold what it held
    assert cancelled.cancelled()
    deadline = time.monotonic() + 5
    with psycopg.connect(migrated_database_url, autocommit=True) as other:
        while not other.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the cancelled pass still holds the job"
            time.sleep(0.05)
        other.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    del cancelled


def test_a_process_frozen_mid_erasure_lets_the_tenant_write_and_erases_nothing(
    migrated_database_url: str,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An erasure holds the tenant's retention and erasure locks from its
    first statements to its commit: every change of the tenant waits for it
    (then UNAVAILABLE), and every append of it is refused as being erased. A
    process frozen mid-erasure held them for as long as it stayed frozen; the
    erasure's session now ends itself once idle in its transaction as long
    as a change's would, and the tenant is written through the others. The
    frozen erasure, woken, fails (UNAVAILABLE) and erases nothing."""
    monkeypatch.setattr(changes_module, "IDLE_IN_CHANGE_SECONDS", 1.0)
    with two_processes(migrated_database_url) as both:
        tenant, second = both.tenant, both.second
        both.first.record(action="frozen.before", actor_id="a")
        # The erasure takes its locks, then waits to read the receipts kept:
        # frozen there, its session goes idle in its transaction, the locks
        # still held, once this lets go.
        pending = _frozen_waiting(
            sql,
            both,
            "LOCK TABLE tenant_erasures IN ACCESS EXCLUSIVE MODE",
            both.first.erase_tenant,
            tenant,
            waiter="sealtrail-erasure",
            timeout=60,
        )
        time.sleep(3)  # the idle timeout, and a margin
        started = time.monotonic()
        second.record(action="frozen.other", actor_id="b")
        assert second.set_retention_policy(30).event_id
        assert time.monotonic() - started < FROZEN_SECONDS - 3
        with pytest.raises(UnavailableError):
            pending.result(timeout=60)
        assert not sql.execute(
            "SELECT FROM tenant_erasures WHERE tenant_id = %s", [tenant]
        ).fetchone()
        rows = sql.execute(
            "SELECT action FROM events WHERE tenant_id = %s ORDER BY seq", [tenant]
        ).fetchall()
        actions = [action for (action,) in rows]
        assert actions[0] == "frozen.before" and "frozen.other" in actions
        assert_log_is_sound(sql, tenant, len(rows))


# The call `until` waits beside when what it waits for is the server's own
# work (a forwarder's move, an evaluator's count), not a call of the test's:
# pending for ever, `until`'s own 10 s its clock. A `time.sleep(30)` submitted
# to the test's pool was one, and the pool's exit waited out its 30 s.
_NEVER_DONE: Future[Any] = Future()


def _blocked_running(sql: psycopg.Connection[Any], pending: Future[Any], start: str) -> None:
    """Returns once a session whose statement begins with `start` waits for a
    lock this one holds."""
    blocked = (
        "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
        " AND query LIKE %s"
    )
    until(lambda: count_now(sql, blocked, [start + "%"]) > 0, pending)


def test_a_process_frozen_moving_a_sinks_cursor_lets_the_sink_be_changed(
    migrated_database_url: str,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A forwarder moves its sink's cursor over what it delivered, in a
    transaction holding the sink's row (and sharing the tenant's erasure
    lock) to its commit. A process frozen there held them for as long as it
    stayed frozen: the sink's UpdateSink and DeleteSink, through any other
    process, failed UNAVAILABLE meanwhile (and the tenant's erasure). The
    move's session now ends itself once idle in its transaction; the move is
    rolled back, so the events are sent again (at least once)."""
    monkeypatch.setattr(forwarder_module, "IDLE_IN_MOVE_SECONDS", 1.0, raising=False)
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    frozen = ServerThread(migrated_database_url)
    token = frozen.token(tenant, "admin")
    other: ServerThread | None = None
    try:
        with (
            endpoint() as receiver,
            AuditClient(frozen.target, token=token, timeout=60, max_attempts=1) as first,
            ThreadPoolExecutor(1) as pool,
        ):
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
            sink = first.create_sink(
                build_sink("soc", "webhook", url=receiver.url, secrets=[secret])
            ).sink
            first.record(action="frozen.before", actor_id="a")
            receiver.wait_for(lambda received: len(received) >= 1)
            other = ServerThread(migrated_database_url)  # the lease is the frozen one's
            with sql.transaction():
                # The frozen process's move waits for the sink's row: frozen
                # there, its session goes idle in its transaction, the row
                # locked, once this lets go.
                sql.execute("SELECT FROM sinks WHERE tenant_id = %s FOR SHARE", [tenant])
                pending = pool.submit(first.record, action="frozen.moved", actor_id="a")
                assert pending.result(timeout=30).event.seq
                _blocked_running(sql, _NEVER_DONE, "UPDATE sinks SET cursor_seq")
                frozen.loop.call_soon_threadsafe(time.sleep, FROZEN_SECONDS)
            with AuditClient(other.target, token=token, timeout=60, max_attempts=1) as second:
                started = time.monotonic()
                renamed = forwarding_pb2.Sink(id=sink.id, name="renamed")
                second.update_sink(renamed, fields=["name"])
                assert time.monotonic() - started < FROZEN_SECONDS
                assert second.get_sink(sink.id).name == "renamed"
            receiver.wait_for(
                lambda received: sum(b"frozen.moved" in r.body for r in received) >= 1, timeout=60
            )
    finally:
        if other is not None:
            other.close()
        frozen.close()


def test_a_process_frozen_counting_an_alert_lets_its_rule_be_changed(
    migrated_database_url: str,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An evaluator counts a rule's alert and routes it in a transaction
    holding the rule's row to its commit. A process frozen there held it for
    as long as it stayed frozen: the rule's changes and deletion, through any
    other process, waited for the whole freeze. The count's session now ends
    itself once idle in its transaction; the alert, recorded, is counted by
    the step run again."""
    monkeypatch.setattr(evaluator_module, "IDLE_IN_COUNT_SECONDS", 1.0, raising=False)
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    frozen = ServerThread(migrated_database_url)
    token = frozen.token(tenant, "admin")
    other: ServerThread | None = None
    try:
        with AuditClient(frozen.target, token=token, timeout=60, max_attempts=1) as first:
            rule = first.create_alert_rule(
                build_alert_rule("m", "match", filter=build_filter(actions="frozen.alert"))
            ).rule
            first.record(action="frozen.before", actor_id="a")
            leased = "SELECT lease_owner IS NOT NULL FROM alert_cursors WHERE tenant_id = %s"
            until_true(sql, leased, [tenant], "the process took no lease")
            other = ServerThread(migrated_database_url)  # the lease is the frozen one's
            with sql.transaction():
                # The frozen process's count waits for the rule's row: frozen
                # there, its session goes idle in its transaction, the row
                # locked, once this lets go.
                sql.execute("SELECT FROM alert_rules WHERE tenant_id = %s FOR SHARE", [tenant])
                assert first.record(action="frozen.alert", actor_id="a").event.seq
                _blocked_running(sql, _NEVER_DONE, "UPDATE alert_rules SET fired")
                frozen.loop.call_soon_threadsafe(time.sleep, FROZEN_SECONDS)
            with AuditClient(other.target, token=token, timeout=60, max_attempts=1) as second:
                started = time.monotonic()
                renamed = alerting_pb2.AlertRule(id=rule.id, name="renamed")
                second.update_alert_rule(renamed, fields=["name"])
                assert time.monotonic() - started < FROZEN_SECONDS
            fired = "SELECT fired FROM alert_rules WHERE tenant_id = %s"
            deadline = time.monotonic() + 60
            while sql.execute(fired, [tenant]).fetchone() != (1,):
                assert time.monotonic() < deadline, "the alert was never counted"
                time.sleep(0.05)
    finally:
        if other is not None:
            other.close()
        frozen.close()


def test_a_process_frozen_noting_what_the_key_signed_holds_up_no_answer_of_a_log_not_grown(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A log that has not grown since its checkpoint needs nothing noted of
    what the key signed: its size is kept already. The tenant's file lock was
    taken all the same, so a process frozen amid a write of it (here, the lock
    held from another open file) made every fresh checkpoint, export and proof
    of the log wait out LOCK_WAIT_SECONDS and fail UNAVAILABLE, as a read-only
    directory failed them outright, though nothing was to be written."""
    monkeypatch.setattr(signed_sizes_module, "LOCK_WAIT_SECONDS", 1.0)
    client = client_for(tenant, max_attempts=1)
    client.record(build_event(action="frozen.event", actor_id="a"))
    signed = client.get_checkpoint(fresh=True)
    assert signed.tree_size == 1
    (lock,) = signed_checkpoints_dir_of(migrated_database_url).glob(f"*/.locks/{tenant}")
    with lock.open("a") as frozen:  # another open file: its flock stands for a process's
        fcntl.flock(frozen, fcntl.LOCK_EX)
        started = time.monotonic()
        again = client.get_checkpoint(fresh=True)
        assert time.monotonic() - started < 1.0
        assert (again.tree_size, again.root_hash) == (1, signed.root_hash)
        # A larger size is still noted under the lock only: refused meanwhile.
        client.record(build_event(action="frozen.event", actor_id="a"))
        with pytest.raises(UnavailableError):
            client.get_checkpoint(fresh=True)
    assert client.get_checkpoint(fresh=True).tree_size == 2
