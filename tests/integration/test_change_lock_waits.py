"""How long a change waits for a lock another session holds, at any step of
its transaction, and what its caller is told when that is too long."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, UnavailableError
from sealtrail_server.domain.errors import Unavailable
from sealtrail_server.domain.event import EventDraft, validate_event
from sealtrail_server.store.changes import Changes
from tests.conftest import ServerThread
from tests.lock_waits import until_blocked
from tests.own_appender import own_appender


def test_a_change_waiting_for_a_row_another_session_holds_is_answered_unavailable(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A token's revocation whose row another session holds (here, the test's
    transaction; a frozen process's until its session idles out) waited with
    no limit: the lock timeout bounded the change's first waits only (its
    subject's lock, the erasure's, the caller's token), then was reset to
    the database's default, none. The caller got DEADLINE_EXCEEDED at its
    deadline, or nothing, ever, without one. It waits as long as for the
    subject's lock, and is answered UNAVAILABLE, retry, naming the table."""
    with AuditClient(
        server.target, token=server.token(tenant, "admin"), timeout=30, max_attempts=1
    ) as client:
        token_id = client.create_token("reader").token.token_id
        with sql.transaction():
            sql.execute("SELECT FROM api_tokens WHERE token_id = %s FOR SHARE", [token_id])
            started = time.monotonic()
            with pytest.raises(UnavailableError) as refused:
                client.revoke_token(token_id)
            waited = time.monotonic() - started
        assert waited < 20, f"the revocation waited {waited:.1f} s"
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
        assert "api_tokens" in refused.value.message
        # Nothing of it was applied or recorded; once the row is let go, it is.
        assert not _token(client, token_id).HasField("revoke_time")
        assert client.revoke_token(token_id).event_id
        assert _token(client, token_id).HasField("revoke_time")


def _token(client: AuditClient, token_id: str) -> Any:
    [token] = [t for t in client.list_tokens() if t.token_id == token_id]
    return token


def test_every_wait_of_a_change_is_bounded_by_its_wait(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A statement of the change, after its locks are taken, waiting for a row
    another session holds: given up after the change's wait, not the
    database's default (none)."""
    changes = Changes(server.database, wait_seconds=0.3)
    sql.execute(
        "INSERT INTO tenant_settings (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", [tenant]
    )

    async def change() -> None:
        async with changes.exclusive(tenant, "settings", caller=None) as conn:
            await conn.execute(
                "UPDATE tenant_settings SET updated_at = now() WHERE tenant_id = %s", [tenant]
            )

    with sql.transaction():
        sql.execute("SELECT FROM tenant_settings WHERE tenant_id = %s FOR UPDATE", [tenant])
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            server.run(asyncio.wait_for(change(), 10))
        waited = time.monotonic() - started
    assert waited < 5
    assert "tenant_settings" in refused.value.message and refused.value.retry_after > 0


def test_a_changes_record_waits_for_the_head_as_long_as_the_appender_is_configured_to(
    server: ServerThread, tenant: str, migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """A change's record (append_within) waited for the tenant's head the
    fixed 5 s of SYSTEM_LOCK_TIMEOUT, whatever the database's connections were
    opened with (`system_lock_timeout`), which the appender's other writes
    wait. It waits as they do."""

    async def change() -> None:
        async with changes.exclusive(tenant, "settings", caller=None) as conn:
            await appender.append_within(conn, tenant, [_event("change")])

    with own_appender(
        server, migrated_database_url, tenant, first_event=lambda: _event("before"),
        system_lock_timeout=0.3, max_wait=0.01, max_size=4,
    ) as (db, appender):  # fmt: skip
        changes = Changes(db, wait_seconds=30)
        with sql.transaction():
            sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
            started = time.monotonic()
            with pytest.raises(Unavailable, match="being written by another process"):
                server.run(asyncio.wait_for(change(), 20))
            waited = time.monotonic() - started
        assert waited < 2.5, f"the change's record waited {waited:.1f} s for the head"


def _event(action: str) -> Any:
    draft = EventDraft(action=f"lock_waits.{action}", actor_id="u")
    return validate_event(draft, now=datetime.now(UTC), path=action)


def test_appends_of_a_tenant_whose_change_holds_its_head_wait_for_it_alone(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """A change's record holds the tenant's head until the change ends. The
    appender's write of a batch holding that tenant waited for it, every
    other tenant of the batch (of the process) with it; past the lock timeout
    it answered the tenant's events as held by another process that stopped
    answering, and refused its appends for 30 s more, though the change was
    this process's own and ended a moment later. The tenant's appends now
    wait for the change to end, and are written after its record; the
    others' are written meanwhile."""
    other = f"{tenant}-other"

    async def run() -> tuple[Any, Any, Any, Any, float, bool]:
        loop = asyncio.get_running_loop()
        async with changes.exclusive(tenant, "settings", caller=None) as conn:
            [recorded] = await appender.append_within(conn, tenant, [_event("change")])
            during = asyncio.create_task(appender.append(tenant, [_event("during")]))
            started = loop.time()
            [neighbour] = await appender.append(other, [_event("during")])
            waited = loop.time() - started
            await asyncio.sleep(0.5)  # the tenant's append, meanwhile, waits
            waiting = not during.done()
        [meanwhile] = await asyncio.wait_for(during, 20)
        [after] = await appender.append(tenant, [_event("after")])
        return recorded, meanwhile, neighbour, after, waited, waiting

    with own_appender(
        server, migrated_database_url, tenant, other, first_event=lambda: _event("before"),
        system_lock_timeout=3, max_wait=0.2, max_size=4,
    ) as (db, appender):  # fmt: skip
        changes = Changes(db, wait_seconds=30)
        recorded, meanwhile, neighbour, after, waited, waiting = server.run(run(), timeout=60)
    assert (recorded.seq, meanwhile.seq, after.seq) == (2, 3, 4)
    assert neighbour.seq == 2 and waited < 1.5, f"the other tenant waited {waited:.1f} s"
    assert waiting


def test_a_batch_taken_before_a_change_held_its_tenants_head_waits_for_the_change(
    server: ServerThread, tenant: str, migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """A batch already being written when a change of one of its tenants took
    that tenant's head (here: the batch held up by another tenant's head, the
    test's) waited for the change past the lock timeout, and the tenant was
    refused for 30 s as held by a process that stopped answering. Its
    submissions now wait for the change to end, then are written after its
    record; the rest of the batch is written after the lock timeout, as before."""
    first, changed = f"{tenant}-a", f"{tenant}-b"  # locked in this order
    recorded: Future[Any] = Future()

    async def both() -> tuple[asyncio.Task[Any], asyncio.Task[Any]]:
        return (
            asyncio.create_task(appender.append(first, [_event("batch")])),
            asyncio.create_task(appender.append(changed, [_event("batch")])),
        )

    async def change(neighbour: asyncio.Task[Any]) -> None:
        async with changes.exclusive(changed, "settings", caller=None) as conn:
            [record] = await appender.append_within(conn, changed, [_event("change")])
            recorded.set_result(record)
            await neighbour  # the batch goes on while the change is open

    with own_appender(
        server, migrated_database_url, first, changed, first_event=lambda: _event("before"),
        system_lock_timeout=4, max_wait=0.2, max_size=4,
    ) as (db, appender):  # fmt: skip
        changes = Changes(db, wait_seconds=30)
        with sql.transaction():
            sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [first])
            neighbour, waiting = server.run(both())
            batch = asyncio.run_coroutine_threadsafe(asyncio.wait([neighbour]), server.loop)
            until_blocked(sql, batch)
            changing = asyncio.run_coroutine_threadsafe(change(neighbour), server.loop)
            record = recorded.result(timeout=10)
        changing.result(timeout=30)
        [written] = server.run(asyncio.wait_for(waiting, 20))
        [after] = server.run(appender.append(changed, [_event("after")]))
        [beside] = server.run(asyncio.wait_for(neighbour, 1))
    assert (record.seq, written.seq, after.seq) == (2, 3, 4)
    assert beside.seq == 2


def test_an_erasure_waiting_for_a_head_another_session_holds_is_answered_unavailable(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """An erasure waited for its locks at most 10 s, then for the tenant's
    head, and each row it removes, with no limit: behind a process frozen in
    the middle of an append's COPY (which keeps the head until it is woken or
    killed), EraseTenant sent nothing until its caller's deadline (an hour).
    Every lock wait of the erasure gives up after the 10 s, answered
    UNAVAILABLE, retry, naming the table; nothing is erased."""
    with AuditClient(
        server.target, token=server.token(tenant, "admin"), timeout=60, max_attempts=1
    ) as client:
        client.record(action="x.before", actor_id="a")
        with sql.transaction():
            sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
            started = time.monotonic()
            with pytest.raises(UnavailableError) as refused:
                client.erase_tenant(tenant, timeout=40)
            waited = time.monotonic() - started
        assert waited < 30, f"the erasure waited {waited:.1f} s"
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
        assert "chain_heads" in refused.value.message
        assert client.record(action="x.after", actor_id="a").event.seq == 2  # not erased
        assert client.erase_tenant(tenant).final_tree_size >= 2
