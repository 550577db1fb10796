"""An erasure and what may run beside it: a legal hold being placed, a
process creating the tenant's head for its first append or a token, a purge
pass, a sink's delivery, a second erasure, and a deadlock PostgreSQL breaks
by failing one. Each interleaving is forced by holding, in a transaction of
the test's own, the lock the other side takes, until the erasure (or the
append) is seen waiting for it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from sealtrail import (
    AuditClient,
    RpcFailedError,
    UnavailableError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail._erased_by import OPERATOR_PREFIX
from sealtrail_server.alerts.evaluator import Evaluator
from sealtrail_server.domain.errors import (
    MAX_DESCRIPTION_BYTES,
    FailedPrecondition,
    IntegrityFailure,
    Unavailable,
)
from sealtrail_server.domain.event import MAX_ID, EventDraft, validate_event
from sealtrail_server.domain.purge_summaries import SummarySeal
from sealtrail_server.forward.egress import EgressPolicy, OutboundClient
from sealtrail_server.forward.forwarder import Forwarder
from sealtrail_server.retention.purger import Purger
from sealtrail_server.sealing_setup import load_secret_box
from sealtrail_server.store import alerts as alert_store
from sealtrail_server.store.appended import Appended
from sealtrail_server.store.appender import Appender
from sealtrail_server.store.changes import ERASURE_SUBJECT, RETENTION_SUBJECT
from tests.clock import Clock
from tests.conftest import REDACTION_SECRET, ServerThread, database_of_its_own
from tests.http_endpoint import Received, Reply, endpoint
from tests.lock_waits import SUBJECT_LOCK, count_now, until, until_blocked, until_waiting
from tests.processes import stop
from tests.tenant_rows import rows_of

# The longest name SEALTRAIL_OPERATOR may give, past `sealtrail-server:` (cli.py).
_WIDEST_OPERATOR = MAX_ID - len(OPERATOR_PREFIX)
# The deployment's seal of purge summaries (the test servers' redaction secret).
SEAL = SummarySeal(REDACTION_SECRET)


def _erase_uncommitted(sql: psycopg.Connection[Any], tenant: str) -> None:
    """In `sql`'s transaction, as an erasure does: its lock, then its receipt
    (the rows it removes in between do not matter here)."""
    sql.execute(SUBJECT_LOCK, [f"{tenant}/{ERASURE_SUBJECT}"])
    sql.execute(
        "INSERT INTO tenant_erasures (tenant_id, erased_at, erased_by, final_tree_size,"
        " final_root_hash, final_checkpoint, removed_rows)"
        " VALUES (%s, now(), 'test', 0, sha256(''), '', '{}')",
        [tenant],
    )


async def _first_append(server: ServerThread, tenant: str) -> list[Any]:
    """An event appended to `tenant` by a new appender: a process that never
    saw the tenant, which creates its head."""
    event = validate_event(EventDraft(action="doc.edit", actor_id="u"), now=datetime.now(UTC))
    appender = Appender(server.database)
    appender.start()
    try:
        return await appender.append(tenant, [event])
    finally:
        await appender.stop()


def test_an_erasure_waits_for_a_hold_being_placed_and_is_refused_by_it(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    admin = client_for(tenant)
    admin.record(action="doc.edit", actor_id="u")
    with ThreadPoolExecutor(1) as pool:
        with sql.transaction():  # as SetLegalHold does: its lock, then the row
            sql.execute(SUBJECT_LOCK, [f"{tenant}/{RETENTION_SUBJECT}"])
            sql.execute(
                "INSERT INTO retention_policies (tenant_id, legal_hold, legal_hold_reason)"
                " VALUES (%s, true, 'Case 9')",
                [tenant],
            )
            erasing = pool.submit(admin.erase_tenant, tenant)
            until_waiting(sql, erasing)
        with pytest.raises(RpcFailedError) as refused:
            erasing.result(timeout=30)
    assert refused.value.reason == "LEGAL_HOLD"
    assert admin.query_page(page_size=1).events  # nothing was erased


def test_an_erasure_is_waited_for_past_the_timeout_of_other_calls(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A large tenant's erasure takes minutes: the client waits for it past
    its own timeout for calls (here 1 s), where a call cut off at its
    deadline is cancelled by the server and its erasure rolled back. It is
    made to last by a change of the tenant it waits for."""
    admin = client_for(tenant, timeout=1.0)
    admin.record(action="doc.edit", actor_id="u")
    with ThreadPoolExecutor(1) as pool:
        with sql.transaction():  # a change of the tenant's retention, under way
            sql.execute(SUBJECT_LOCK, [f"{tenant}/{RETENTION_SUBJECT}"])
            erasing = pool.submit(admin.erase_tenant, tenant)
            until_waiting(sql, erasing)
            time.sleep(1.5)  # past the client's timeout
        receipt = erasing.result(timeout=30)
    assert receipt.tenant_id == tenant and receipt.final_tree_size >= 1


def test_no_head_is_created_for_a_tenant_being_erased(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Refused at once while the erasure runs (retry: it may yet fail), and
    for good once it has committed."""

    def first_append() -> Any:
        return asyncio.run_coroutine_threadsafe(_first_append(server, tenant), server.loop).result(
            timeout=30
        )

    with sql.transaction():
        _erase_uncommitted(sql, tenant)
        with pytest.raises(Unavailable, match="is being erased; retry") as during:
            first_append()
    with pytest.raises(FailedPrecondition) as after:
        first_append()
    assert during.value.retry_after == 1.0
    assert after.value.reason == "TENANT_ERASED"
    heads = sql.execute("SELECT count(*) FROM chain_heads WHERE tenant_id = %s", [tenant])
    assert heads.fetchone() == (0,)


def test_an_erasure_waiting_for_a_hold_change_lets_the_change_record_itself(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
) -> None:
    """A hold change holds its lock while the appender records it: the
    erasure takes that lock before its own, so an appender new to the tenant
    is not held up by it. (A tenant with no head yet: the appender takes the
    erasure's lock, shared, to create it.)"""
    admin = client_for(tenant)
    with ThreadPoolExecutor(1) as pool:
        with sql.transaction():  # a hold change, holding its lock, about to record
            sql.execute(SUBJECT_LOCK, [f"{tenant}/{RETENTION_SUBJECT}"])
            erasing = pool.submit(admin.erase_tenant, tenant)
            until_waiting(sql, erasing)
            appending = asyncio.run_coroutine_threadsafe(_first_append(server, tenant), server.loop)
            [recorded] = appending.result(timeout=30)  # not held up by the erasure
        assert isinstance(recorded, Appended), recorded
        receipt = erasing.result(timeout=30)
    assert receipt.final_tree_size >= 1  # the change's record is in the erased log


def test_a_purge_waits_for_an_erasure_of_the_tenant(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    """(The pass runs over every tenant of the test database, on a clock 11 days
    ahead: other tests' tenants are done with by then.)
    A purge batch takes the erasure's subject, shared, before it locks any
    row. An erasure holds it before its first row: the batch waits for it.
    Had the batch locked its rows first, the erasure's DELETE would wait for
    them while the batch waited for the erasure, and PostgreSQL would fail one."""
    admin = client_for(tenant)
    for _ in range(3):
        admin.record(action="doc.edit", actor_id="u")
    admin.set_retention_policy(10)
    assert server.service.purger is not None
    eleven_days_on = Clock()
    eleven_days_on.advance(11)  # the database's clock with it: a clock ahead purges nothing
    purger = Purger(
        migrated_database_url,
        record=server.service.purger.record,
        seal=SEAL,
        batch_events=2,
        clock=eleven_days_on,
    )
    count = "SELECT count(*) FROM events WHERE tenant_id = %s"
    [(stored,)] = sql.execute(count, [tenant]).fetchall()
    with sql.transaction():  # as an erasure does, before its first row
        sql.execute(SUBJECT_LOCK, [f"{tenant}/{ERASURE_SUBJECT}"])
        purging = asyncio.run_coroutine_threadsafe(purger.run_once(), server.loop)
        until_waiting(sql, purging)
        assert sql.execute(count, [tenant]).fetchone() == (stored,)  # nothing removed yet
    [purged] = [p for p in purging.result(timeout=30) if p.tenant_id == tenant]
    assert purged.count == stored - 1  # all but the policy's record: retention's own
    kept = sql.execute("SELECT action FROM events WHERE tenant_id = %s ORDER BY seq", [tenant])
    assert [action for (action,) in kept] == ["retention.policy_updated", "retention.purged"]


def test_a_purge_whose_tenant_is_erased_before_its_record_is_no_integrity_failure(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(On a clock 11 days ahead, as above.) The pass's batches commit, then
    the tenant is erased before their `retention.purged` event is recorded:
    an ordinary race, which left the purge unrecorded as it must, but said
    at ERROR that the log refused it and the tenant would not be purged while
    its summary was there, and, through the checkpointer, counted an
    integrity failure saying the database was restored or its rows removed
    behind the service's back (the alert docs/metrics.md pages on). The
    tenant is gone: the purge is let go, said at INFO, and nothing is left."""
    admin = client_for(tenant)
    for _ in range(3):
        admin.record(action="doc.edit", actor_id="u")
    admin.set_retention_policy(10)
    assert server.service.purger is not None
    real = server.service.purger.record
    eleven_days_on = Clock()
    eleven_days_on.advance(11)  # the database's clock with it: a clock ahead purges nothing

    async def erased_first(purged: Any) -> None:
        if purged.tenant_id == tenant:
            await asyncio.to_thread(admin.erase_tenant, tenant)
        await real(purged)

    purger = Purger(
        migrated_database_url,
        record=erased_first,
        seal=SEAL,
        batch_events=2,
        clock=eleven_days_on,
    )
    with caplog.at_level(logging.INFO):
        passed = asyncio.run_coroutine_threadsafe(purger.run_once(), server.loop).result(30)
    assert [p for p in passed if p.tenant_id == tenant] == []
    alarms = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [m for m in alarms if tenant in m], alarms
    assert f"retention: {tenant} was erased before its purge was recorded" in caplog.text
    assert not any(rows_of(sql, tenant).values())
    # The next pass has nothing of it left to record, nor to say.
    caplog.clear()
    asyncio.run_coroutine_threadsafe(purger.run_once(), server.loop).result(30)
    assert tenant not in caplog.text


def test_an_erasure_the_database_fails_is_unavailable_and_erases_nothing(
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = client_for(tenant, max_attempts=1)  # the clients retry an erasure: not here
    admin.record(action="doc.edit", actor_id="u")
    erasure_waits = (
        "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
        " WHERE NOT l.granted AND a.application_name = 'sealtrail-erasure'"
    )
    with ThreadPoolExecutor(1) as pool:
        with sql.transaction():
            # The erasure runs the deadlock check long before this session would.
            sql.execute("SET LOCAL deadlock_timeout = '60s'")
            sql.execute("SELECT 1 FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
            erasing = pool.submit(admin.erase_tenant, tenant)
            until(lambda: count_now(sql, erasure_waits) > 0, erasing)  # it waits for the head
            # ... and this waits for the erasure's lock: a cycle, which the
            # erasure's check finds (after the default 1 s), failing the erasure.
            sql.execute(SUBJECT_LOCK, [f"{tenant}/{ERASURE_SUBJECT}"])
        with pytest.raises(UnavailableError, match="the erasure failed, retry it") as failed:
            erasing.result(timeout=30)
    assert admin.query_page(page_size=1).events  # nothing was erased
    # The database's own words (its processes, or its host and role) stay in the server's log.
    assert "deadlock" not in str(failed.value) and "deadlock detected" in caplog.text


def test_a_token_created_during_an_erasure_is_refused_and_never_exists(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A creation is recorded before its token is made, and an append to a
    tenant being erased is refused at once: UNAVAILABLE with a retry delay,
    whose retry finds the tenant erased. Neither the token nor its record
    is left."""
    admin = client_for(tenant, max_attempts=1)
    with sql.transaction():
        _erase_uncommitted(sql, tenant)
        with pytest.raises(UnavailableError, match="is being erased; retry") as refused:
            admin.create_token("reader")
    assert refused.value.retry_after == 1.0
    with pytest.raises(RpcFailedError) as retried:
        admin.create_token("reader")
    assert retried.value.reason == "TENANT_ERASED"
    tokens = sql.execute("SELECT count(*) FROM api_tokens WHERE tenant_id = %s", [tenant])
    assert tokens.fetchone() == (1,)  # the admin's own, which the test's erasure kept
    recorded = sql.execute(
        "SELECT count(*) FROM events WHERE tenant_id = %s AND action = 'api_token.created'",
        [tenant],
    )
    assert recorded.fetchone() == (0,)


def test_a_checkpoint_signed_as_its_tenant_is_erased_is_refused_as_erased(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """An erasure that commits between the checkpointer's reads of the head
    and of the latest checkpoint leaves it a head to sign with none of its
    hashes: TENANT_ERASED, not the tampering (DATA_LOSS) the same state
    would be without the receipt. That state, as those reads find it, is set
    here: the window is too narrow to meet on purpose."""
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        admin.record(action="doc.edit", actor_id="u")
        admin.get_checkpoint(fresh=True)
        admin.record(action="doc.edit", actor_id="u")  # grown: a checkpoint to sign
    with sql.transaction():
        sql.execute("SET LOCAL sealtrail.removal = 'erasure'")
        sql.execute("DELETE FROM tree_nodes WHERE tenant_id = %s", [tenant])
        sql.execute("DELETE FROM checkpoints WHERE tenant_id = %s", [tenant])
    checkpointer = server.service._checkpointer
    assert checkpointer is not None
    with pytest.raises(IntegrityFailure):  # no receipt: tampered with
        server.run(checkpointer.issue(tenant))
    sql.execute(
        "INSERT INTO tenant_erasures (tenant_id, erased_at, erased_by, final_tree_size,"
        " final_root_hash, final_checkpoint, removed_rows)"
        " VALUES (%s, now(), 'test', 0, sha256(''), '', '{}')",
        [tenant],
    )
    with pytest.raises(IntegrityFailure):  # a head still there: a receipt excuses nothing
        server.run(checkpointer.issue(tenant))
    with sql.transaction():  # as the erasure leaves it, the head read before it committed
        sql.execute("SET LOCAL sealtrail.removal = 'erasure'")
        sql.execute("DELETE FROM chain_heads WHERE tenant_id = %s", [tenant])
    assert server.run(checkpointer.issue(tenant)) is None  # read after: nothing to sign
    with pytest.raises(FailedPrecondition) as refused:  # what a read before it failed on
        server.run(checkpointer._refuse_if_erased_meanwhile(tenant))
    assert refused.value.reason == "TENANT_ERASED"


def test_an_erasure_whose_final_checkpoint_row_signs_another_head_signs_the_head_afresh(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A log that has not grown since its latest checkpoint is erased with
    that one, as stored, as its final checkpoint. Its note swapped for an
    older one's (signed, of a smaller tree), its size and root columns left
    stating the head, the receipt paired the head's root with a note that
    does not sign it, and the erasure removed all that could show it
    (helper-85). The signed note is what is checked: the row, which does not
    sign what it says, is set aside and the head signed afresh (ADR 0159), so
    the receipt's final checkpoint signs the head it states."""
    from sealtrail.tlog import Signer, open_note, parse_checkpoint
    from tests.conftest import SIGNING_KEY

    with AuditClient(server.target, token=server.token(tenant)) as admin:
        admin.record(action="doc.edit", actor_id="u")
        older = admin.get_checkpoint(fresh=True)
        admin.record(action="doc.edit", actor_id="u")
        assert admin.get_checkpoint(fresh=True).tree_size == 2
        with sql.transaction():
            sql.execute("SET LOCAL session_replication_role = replica")  # past the refusal
            sql.execute(
                "UPDATE checkpoints SET note = %s WHERE tenant_id = %s AND tree_size = 2",
                [older.note, tenant],
            )
        receipt = admin.erase_tenant(tenant)
    verifier = Signer.parse(SIGNING_KEY).verifier
    signed = parse_checkpoint(open_note(receipt.final_checkpoint.note, [verifier])[0])
    assert (signed.tree_size, signed.root_hash) == (2, receipt.final_root_hash)
    assert receipt.final_tree_size == 2
    assert not any(rows_of(sql, tenant).values())  # the row set aside too


def test_a_second_erasure_answers_the_receipt_of_the_first(
    server: ServerThread, tenant: str, migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """A second click, or a retry whose answer was lost, on another process
    that still knows the caller's token: the receipt is the only thing left,
    and nothing else returns it."""
    other = ServerThread(migrated_database_url, token_cache_seconds=300)
    secret = server.token(tenant)
    try:
        with (
            AuditClient(server.target, token=secret) as first,
            AuditClient(other.target, token=secret) as second,
        ):
            first.record(action="doc.edit", actor_id="u")
            second.list_tokens()  # its token is known there
            receipt = first.erase_tenant(tenant)
            # Kept before its checkpoint's time was (migration 0024): no whole
            # receipt, refused (which leaves the token trusted there).
            kept_time = (
                "UPDATE tenant_erasures SET final_checkpoint_issued_at = %s WHERE tenant_id = %s"
            )
            sql.execute(kept_time, [None, tenant])
            with pytest.raises(RpcFailedError) as refused:
                second.erase_tenant(tenant)
            # An operator's (`tenant erase`) named as the receipts name one,
            # its name cut to keep the refusal within 100 bytes.
            by_operator = []
            erased_by = "UPDATE tenant_erasures SET erased_by = %s WHERE tenant_id = %s"
            for name in ("ann@bastion", "é" * _WIDEST_OPERATOR):
                sql.execute(erased_by, [OPERATOR_PREFIX + name, tenant])
                with pytest.raises(RpcFailedError) as refused_again:
                    second.erase_tenant(tenant)
                by_operator.append(refused_again.value.message)
            sql.execute(erased_by, [receipt.erased_by_token_id, tenant])
            sql.execute(kept_time, [receipt.final_checkpoint.issued_at.ToDatetime(UTC), tenant])
            again = second.erase_tenant(tenant)
    finally:
        other.close()
    assert again == receipt and receipt.final_checkpoint.note
    assert refused.value.reason == "TENANT_ERASED"
    assert f"by token {receipt.erased_by_token_id}" in str(refused.value)
    named, widest = by_operator
    assert " by operator ann@bastion;" in named and "sealtrail-server:" not in named, named
    assert " by operator éé" in widest and widest.endswith("…; see tenant_erasures"), widest
    for said in (refused.value.message, *by_operator):
        assert len(said.encode()) <= MAX_DESCRIPTION_BYTES, said


def _operator_process(database_url: str, operator: str, *args: str) -> subprocess.Popen[str]:
    """`sealtrail-server ARGS` in a process of its own, run by SEALTRAIL_OPERATOR
    `operator`, with the test servers' keys (this process's environment)."""
    env = {**os.environ, "SEALTRAIL_DATABASE_URL": database_url, "SEALTRAIL_OPERATOR": operator}
    return subprocess.Popen(
        [sys.executable, "-m", "sealtrail_server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_of_two_operators_erasing_a_tenant_at_once_the_one_that_erased_nothing_says_so(
    server: ServerThread, tenant: str, migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """Two `sealtrail-server tenant erase` of one tenant at once, each its own
    process: the one that waited for the other's erasure answers its receipt,
    and said "erased tenant ..." as the one that erased it did. It says that
    the tenant was erased already, when and by whom, and that it erased
    nothing; exit 0 for both (the tenant is erased, the receipt printed)."""
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        admin.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(3)])
    command = ("tenant", "erase", tenant, "--confirm", tenant)
    processes = {
        name: _operator_process(migrated_database_url, name, *command) for name in ("alice", "bob")
    }
    try:
        with ThreadPoolExecutor(2) as pool:
            runs = {
                name: pool.submit(process.communicate, timeout=60)
                for name, process in processes.items()
            }
            with sql.transaction():  # a change of the tenant's retention, under way
                sql.execute(SUBJECT_LOCK, [f"{tenant}/{RETENTION_SUBJECT}"])
                until_waiting(sql, runs["alice"], sessions=2, seconds=60)  # both erasures
            said = {name: run.result(timeout=60) for name, run in runs.items()}
    finally:
        for process in processes.values():
            stop(process)
    for name, process in processes.items():
        assert process.returncode == 0, said[name]
    receipts = {name: json.loads(out) for name, (out, _) in said.items()}
    assert receipts["alice"] == receipts["bob"]  # the one receipt of the one erasure
    receipt = receipts["alice"]
    eraser = receipt["erasedByTokenId"].removeprefix("sealtrail-server:")
    [other] = {"alice", "bob"} - {eraser}
    events = int(receipt["finalTreeSize"])
    assert f"erased tenant {tenant!r} ({events} events); keep this receipt:" in said[eraser][1]
    late = said[other][1]
    assert "erased tenant" not in late, late
    assert (
        f"tenant {tenant!r} was erased already, at {receipt['eraseTime'][:19]}Z by"
        f" operator {eraser} ({events} events); this command erased nothing."
        " Its receipt:"
    ) in late, late


def _change_settings(admin: AuditClient) -> None:
    admin.set_redaction_mode("hmac")


def _change_retention(admin: AuditClient) -> None:
    admin.set_retention_policy("1y")


@pytest.mark.parametrize("change", [_change_settings, _change_retention])
def test_a_change_made_during_an_erasure_waits_for_it_and_is_refused(
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
    change: Callable[[AuditClient], None],
) -> None:
    admin = client_for(tenant)
    # A log already begun: the change's event would not wait to create its head.
    admin.record(action="doc.edit", actor_id="u")
    # Signed now, so the periodic checkpointer (every 10 s) has nothing to sign
    # between the two counts: it once added a row the change was blamed for.
    admin.get_checkpoint(fresh=True)
    before = rows_of(sql, tenant)
    with ThreadPoolExecutor(1) as pool:
        with sql.transaction():
            _erase_uncommitted(sql, tenant)
            changing = pool.submit(change, admin)
            until_waiting(sql, changing)
        with pytest.raises(RpcFailedError) as refused:
            changing.result(timeout=30)
    assert refused.value.reason == "TENANT_ERASED"
    assert rows_of(sql, tenant) == before  # no row written, no event recorded


def test_an_erasure_waits_for_a_change_in_flight_and_removes_its_row(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """The change has read and is recording its event; the erasure must not
    run its DELETEs before the change's row commits (an INSERT it would miss)."""
    admin = client_for(tenant)
    admin.record(action="doc.edit", actor_id="u")
    assert rows_of(sql, tenant)["tenant_settings"] == 0  # the change inserts its row
    erasure_waits_for_a_change = (
        "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
        " WHERE NOT l.granted AND l.locktype = 'advisory'"
        " AND a.application_name = 'sealtrail-erasure'"
    )
    with ThreadPoolExecutor(2) as pool:
        with sql.transaction():  # the change's event waits for the log's head
            sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
            changing = pool.submit(_change_settings, admin)
            until_blocked(sql, changing, waiter="sealtrail")
            erasing = pool.submit(admin.erase_tenant, tenant)
            until(lambda: count_now(sql, erasure_waits_for_a_change) > 0, erasing)
        changing.result(timeout=30)
        receipt = erasing.result(timeout=30)
    assert receipt.removed_rows["tenant_settings"] == 1
    assert not any(rows_of(sql, tenant).values()), rows_of(sql, tenant)


def test_an_erasure_waits_for_a_rule_in_use_before_it_deletes_what_the_rule_learned(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Learning an origin holds its rule (FOR SHARE), then writes the origin's
    row. Had the erasure deleted that row before waiting for the rule, each
    would wait for the other: it waits for the rule first."""
    admin = client_for(tenant)
    rule = admin.create_alert_rule(
        build_alert_rule("new address", "new_ip", filter=build_filter(actions="user.login"))
    ).rule
    sql.execute(
        "INSERT INTO alert_known_ips (tenant_id, rule_id, actor_id, ip, first_seen_at)"
        " VALUES (%s, %s, 'alice', '198.51.100.1', now())",
        [tenant, rule.id],
    )
    with ThreadPoolExecutor(1) as pool:
        with sql.transaction():  # as store/alerts.learn_origin does
            sql.execute(
                "SELECT FROM alert_rules WHERE tenant_id = %s AND id = %s FOR SHARE",
                [tenant, rule.id],
            )
            erasing = pool.submit(admin.erase_tenant, tenant)
            until_blocked(sql, erasing, waiter="sealtrail-erasure")
            sql.execute(  # alice seen again from the address
                "UPDATE alert_known_ips SET last_seen_at = now() WHERE tenant_id = %s", [tenant]
            )
        receipt = erasing.result(timeout=30)
    assert receipt.removed_rows["alert_known_ips"] == 1
    assert not any(rows_of(sql, tenant).values()), rows_of(sql, tenant)


def test_a_first_append_while_an_erasure_queues_behind_a_change_is_refused_not_stalled(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    """A change holds the erasure's lock, shared, while the appender records
    its event; an erasure queues for it. Were the appender, creating the
    tenant's head, to wait for that lock, it would queue behind the erasure,
    which waits for the change, which waits for the appender: a cycle
    PostgreSQL cannot see, every append of the process stalled until the
    erasure's lock wait ran out. The appender only tries the lock."""
    share = "SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, x'5EA1C4A9'::int::bigint))"

    def erase(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():  # takes the lock once the change has committed
            conn.execute(SUBJECT_LOCK, [f"{tenant}/{ERASURE_SUBJECT}"])

    with (
        ThreadPoolExecutor(1) as pool,
        psycopg.connect(migrated_database_url, autocommit=True) as eraser,
    ):
        with sql.transaction():  # the change, in flight
            sql.execute(share, [f"{tenant}/{ERASURE_SUBJECT}"])
            erasing = pool.submit(erase, eraser)
            until_waiting(sql, erasing)
            appending = asyncio.run_coroutine_threadsafe(_first_append(server, tenant), server.loop)
            with pytest.raises(Unavailable, match=f"tenant {tenant!r} is being erased; retry"):
                appending.result(timeout=10)
        erasing.result(timeout=10)
    assert rows_of(sql, tenant)["chain_heads"] == 0


def test_appends_of_a_tenant_being_erased_are_refused_at_once_and_others_go_on(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """An erasure holds its lock and the tenant's head for as long as deleting
    the tenant's rows takes (minutes, for a large one). Were the appender to
    wait for that head, every append of the process, of any tenant, would
    wait with it: it tries the erasure's lock first, and refuses the tenant."""
    erased, other = client_for(tenant, max_attempts=1), client_for(f"{tenant}-other")
    erased.record(action="doc.edit", actor_id="u")  # a head the process keeps in memory
    other.record(action="doc.edit", actor_id="u")
    with ThreadPoolExecutor(2) as pool, sql.transaction():
        # As an erasure does: its lock, then the head, then (here: never) its DELETEs.
        sql.execute(SUBJECT_LOCK, [f"{tenant}/{ERASURE_SUBJECT}"])
        sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
        refused = pool.submit(erased.record, action="doc.edit", actor_id="u")
        with pytest.raises(UnavailableError, match="is being erased; retry"):
            refused.result(timeout=10)
        written = pool.submit(other.record, action="doc.view", actor_id="u")
        assert written.result(timeout=10).event.seq == 2
    # The erasure rolled back: the tenant appends again, from its head as it was.
    assert erased.record(action="doc.view", actor_id="u").event.seq == 2


def test_a_batch_of_several_tenants_writes_all_but_the_one_being_erased(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """The locked path, where a batch holds its other tenants' heads: the one
    being erased is skipped, not waited for, and the others are written in
    the same transaction."""
    other = f"{tenant}-other"
    warmed, locked = threading.Event(), threading.Event()

    def event() -> Any:
        return validate_event(EventDraft(action="doc.edit", actor_id="u"), now=datetime.now(UTC))

    async def append_both() -> tuple[Any, Any, int]:
        appender = Appender(server.database)
        appender.start()
        try:
            for name in (tenant, other):  # heads this process then knows
                await appender.append(name, [event()])
            warmed.set()
            assert await asyncio.to_thread(locked.wait, 10)
            erased, written = await asyncio.gather(
                appender.append(tenant, [event()]),
                appender.append(other, [event()]),
                return_exceptions=True,
            )
            return erased, written, appender._small._last_batch_calls
        finally:
            await appender.stop()

    appending = asyncio.run_coroutine_threadsafe(append_both(), server.loop)
    assert warmed.wait(10)
    with sql.transaction():  # as an erasure does: its lock, then the head
        sql.execute(SUBJECT_LOCK, [f"{tenant}/{ERASURE_SUBJECT}"])
        sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
        locked.set()
        refused, [appended], calls = appending.result(timeout=10)
    assert calls == 2  # one batch, of both tenants
    assert isinstance(refused, Unavailable) and "being erased" in refused.message
    assert isinstance(appended, Appended) and appended.seq == 2


def test_a_batch_for_a_tenant_being_erased_is_unavailable_whole_with_a_retry_delay(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Not an error per entry (no RetryInfo, and clients retry no entry): the
    call fails as a whole, and a client's retry then finds the tenant erased."""
    admin = client_for(tenant, max_attempts=1)
    with sql.transaction():
        _erase_uncommitted(sql, tenant)
        with pytest.raises(UnavailableError, match="is being erased; retry") as refused:
            admin.record_batch(
                [
                    build_event(action="doc.edit", actor_id="u"),
                    build_event(action="doc.view", actor_id="u"),
                ]
            )
    assert refused.value.retry_after == 1.0
    with pytest.raises(RpcFailedError) as retired:
        admin.record_batch([build_event(action="doc.edit", actor_id="u")])
    assert retired.value.reason == "TENANT_ERASED"


class _RolledBack(Exception):
    """Ends a test's transaction by rolling it back."""


def _forwarder(server: ServerThread) -> Forwarder:
    """A forwarder of `server`'s, to the tests' endpoints, that the test drives."""
    outbound = OutboundClient(
        EgressPolicy(allow_http=True, allowed=(ipaddress.ip_network("127.0.0.0/8"),))
    )
    return Forwarder(server.database, outbound, box=load_secret_box(server.settings))


def test_a_delivery_under_way_ends_rather_than_wait_for_an_erasure(
    migrated_database_url: str, tenant: str
) -> None:
    """An erasure locks the tenant's sinks first, then deletes them, in one
    transaction that lasts minutes for a large tenant. A delivery step waiting
    for it would hold a pooled connection (one for each of up to 50 sinks):
    it ends instead, sends nothing more, and if the erasure fails, delivery
    resumes where its cursor was."""
    # A database of its own, with forwarding off: only this test's forwarder delivers.
    with (
        database_of_its_own(migrated_database_url, "erasing") as url,
        endpoint() as receiver,
        psycopg.connect(url, autocommit=True) as sql,
    ):
        server = ServerThread(url, forward_max_sinks=0, alert_max_tenants=0)
        try:
            with AuditClient(server.target, token=server.token(tenant)) as admin:
                admin.create_sink(
                    build_sink("siem", "webhook", url=receiver.url,
                               secrets=["whsec_" + "A" * 44], filter=build_filter(actions="doc.*"))
                )  # fmt: skip
                seqs = [admin.record(action="doc.edit", actor_id="u").event.seq for _ in range(3)]
            sending, answer = threading.Event(), threading.Event()

            def hold_the_first(received: Received, index: int) -> Reply:
                if index == 0:
                    sending.set()
                    answer.wait(10)
                return Reply()

            receiver.responder = hold_the_first
            forwarder = _forwarder(server)
            [lease] = server.run(forwarder._claim())
            stepping = asyncio.run_coroutine_threadsafe(forwarder._step(lease), server.loop)
            assert sending.wait(10)  # its request is on its way
            with pytest.raises(_RolledBack), sql.transaction():
                # As an erasure does: its lock, then the rows other tables reference.
                sql.execute(SUBJECT_LOCK, [f"{tenant}/{ERASURE_SUBJECT}"])
                sql.execute("SELECT FROM sinks WHERE tenant_id = %s FOR UPDATE", [tenant])
                answer.set()
                assert stepping.result(timeout=5) is None  # not waiting to move its cursor
                assert server.run(forwarder._step(lease), timeout=5) is None
                assert len(receiver.received) == 1  # nothing read or sent meanwhile
                raise _RolledBack  # the erasure failed
            assert server.run(forwarder._step(lease)) == 0.0
            server.run(forwarder.stop())
        finally:
            server.close()
    sent = [[e["seq"] for e in json.loads(r.body)["data"]["events"]] for r in receiver.received]
    assert sent == [seqs, seqs]  # the first request's events again: at least once


def test_a_lease_renewal_leaves_out_the_sinks_of_a_tenant_being_erased(
    unevaluated: tuple[ServerThread, str], tenant: str
) -> None:
    """An erasure locks its tenant's sinks until it commits. A forwarder
    renewing its leases waited for them, holding the rows of the sinks it had
    locked before (other tenants'), past its lock timeout, at every try: the
    process forwarded nothing for any tenant until the erasure ended
    (helper-85). It renews the others' at once, and leaves that one to expire."""
    server, url = unevaluated
    bystander, erased = f"{tenant}-a", f"{tenant}-z"  # the bystander's row is locked first
    with endpoint() as receiver, psycopg.connect(url, autocommit=True) as sql:
        for each in (bystander, erased):
            with AuditClient(server.target, token=server.token(each)) as admin:
                admin.create_sink(
                    build_sink("siem", "webhook", url=receiver.url,
                               secrets=["whsec_" + "A" * 44], filter=build_filter())
                )  # fmt: skip
        forwarder = _forwarder(server)
        leased = server.run(forwarder._claim())
        assert sorted(lease.tenant_id for lease in leased) == [bystander, erased]
        with pytest.raises(_RolledBack), sql.transaction():
            # As an erasure does: its lock, then the rows other tables reference.
            sql.execute(SUBJECT_LOCK, [f"{erased}/{ERASURE_SUBJECT}"])
            sql.execute("SELECT FROM sinks WHERE tenant_id = %s FOR UPDATE", [erased])
            renewed = server.run(forwarder._claim(), timeout=3)  # its lock timeout is 5 s
            assert [lease.tenant_id for lease in renewed] == [bystander]
            raise _RolledBack
        server.run(forwarder.stop())


@pytest.fixture
def unevaluated(migrated_database_url: str) -> Iterator[tuple[ServerThread, str]]:
    """A server whose own evaluator and forwarder are off, on a database of its
    own (no other server's evaluator or forwarder takes its tenants), and that
    database's URL: the test runs evaluation or delivery steps itself."""
    with database_of_its_own(migrated_database_url, "erasing") as url:
        server = ServerThread(url, forward_max_sinks=0, alert_max_tenants=0)
        try:
            yield server, url
        finally:
            server.close()


@contextlib.contextmanager
def _evaluating(server: ServerThread) -> Iterator[Evaluator]:
    """An evaluator with an appender of its own; its leases given up after."""
    appender = Appender(server.database)

    async def start() -> None:
        appender.start()  # in the server's loop

    server.run(start())
    evaluator = Evaluator(server.database, appender)
    try:
        yield evaluator
    finally:
        server.run(evaluator._release())
        server.run(appender.stop())


def _alerts_counted(admin: AuditClient) -> tuple[int, list[int]]:
    """The alerts the rules counted, and the seqs of the events that fired those recorded."""
    recorded = admin.query(build_filter(actions="security.alert"), order="oldest")
    triggers = [int(event.details.fields["trigger_seq"].number_value) for event in recorded]
    return sum(rule.fired for rule in admin.list_alert_rules()), triggers


def test_an_evaluation_step_begun_during_an_erasure_reads_and_waits_for_nothing(
    unevaluated: tuple[ServerThread, str], tenant: str
) -> None:
    """An erasure locks the tenant's rules and deletes its rows in one
    transaction that lasts minutes for a large tenant; an evaluation step
    waiting for it would hold a pooled connection all along. A step that
    begins meanwhile reads nothing and ends; learning an origin is refused and
    a cursor move does nothing, each at once; if the erasure fails, the next
    step fires what the ended one did not."""
    server, url = unevaluated
    with (
        AuditClient(server.target, token=server.token(tenant)) as admin,
        psycopg.connect(url, autocommit=True) as sql,
        _evaluating(server) as evaluator,
    ):
        logins = build_filter(actions="user.login")
        keys = build_filter(actions="api_key.*")
        admin.create_alert_rule(build_alert_rule("keys", "match", filter=keys))
        new_ip = admin.create_alert_rule(build_alert_rule("new address", "new_ip", filter=logins))
        created = admin.record(action="api_key.create", actor_id="u").event.seq
        assert tenant in server.run(evaluator._claim())
        [(cursor,)] = sql.execute(
            "SELECT cursor_seq FROM alert_cursors WHERE tenant_id = %s", [tenant]
        ).fetchall()

        async def learn() -> tuple[bool, bool]:
            async with server.database.system_connection() as conn:
                rule = await alert_store.read_rule(conn, tenant, new_ip.rule.id)
                assert rule is not None
                now = datetime.now(UTC)
                return await alert_store.learn_origin(
                    conn, rule, "alice", "198.51.100.1", seq=created, at=now, received=now
                )

        async def advance() -> bool:
            async with server.database.system_connection() as conn:
                return await alert_store.advance(
                    conn, tenant, owner=evaluator.owner, from_seq=cursor, to_seq=created
                )

        with pytest.raises(_RolledBack), sql.transaction():
            # As an erasure does: its lock, the rows other tables reference,
            # then the deletes (alert_cursors first).
            sql.execute(SUBJECT_LOCK, [f"{tenant}/{ERASURE_SUBJECT}"])
            sql.execute("SELECT FROM alert_rules WHERE tenant_id = %s FOR UPDATE", [tenant])
            sql.execute("DELETE FROM alert_cursors WHERE tenant_id = %s", [tenant])
            assert server.run(evaluator._step(tenant), timeout=5) is None
            with pytest.raises(Unavailable, match="being erased"):
                server.run(learn(), timeout=5)
            assert server.run(advance(), timeout=5) is False
            raise _RolledBack  # the erasure failed
        assert _alerts_counted(admin) == (0, [])
        assert server.run(evaluator._step(tenant)) == 0.0
        assert _alerts_counted(admin) == (1, [created])


def test_an_alert_recorded_as_an_erasure_begins_is_counted_when_the_step_runs_again(
    unevaluated: tuple[ServerThread, str], tenant: str
) -> None:
    """A step that recorded an alert, then found the tenant being erased, is
    refused rather than wait for the erasure's lock on the rule to count it;
    if the erasure fails, the step runs again and counts that alert, once."""
    server, url = unevaluated
    appending = (
        "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
    )
    advisory_wait = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    with (
        AuditClient(server.target, token=server.token(tenant)) as admin,
        psycopg.connect(url, autocommit=True) as sql,
        psycopg.connect(url, autocommit=True) as erasure,
        _evaluating(server) as evaluator,
        ThreadPoolExecutor(1) as pool,
    ):
        keys = build_filter(actions="api_key.*")
        admin.create_alert_rule(build_alert_rule("keys", "match", filter=keys))
        created = admin.record(action="api_key.create", actor_id="u").event.seq
        assert tenant in server.run(evaluator._claim())
        with pytest.raises(_RolledBack), erasure.transaction():
            with sql.transaction():
                # The tenant's head held: the alert's append waits for it.
                sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
                stepping = asyncio.run_coroutine_threadsafe(evaluator._step(tenant), server.loop)
                until(lambda: count_now(sql, appending) > 0, stepping)
                # An erasure begins: it holds the rules (here before its lock,
                # which waits for the share the append holds).
                erasure.execute("SELECT FROM alert_rules WHERE tenant_id = %s FOR UPDATE", [tenant])
                locking = pool.submit(
                    erasure.execute, SUBJECT_LOCK, [f"{tenant}/{ERASURE_SUBJECT}"]
                )
                waiting = advisory_wait + " AND pid = %s"
                until(lambda: count_now(sql, waiting, [erasure.info.backend_pid]) > 0, locking)
            locking.result(timeout=10)  # the alert is recorded; the erasure holds its lock
            with pytest.raises(Unavailable, match="being erased"):
                stepping.result(timeout=5)  # not waiting to count it
            raise _RolledBack  # the erasure failed
        assert _alerts_counted(admin) == (0, [created])
        assert server.run(evaluator._step(tenant)) == 0.0
        assert _alerts_counted(admin) == (1, [created])
