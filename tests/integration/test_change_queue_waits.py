"""How long a change waits for the changes ahead of it in its own server
process: as long as for one in another process (ADR 0093)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, UnavailableError
from sealtrail_server.domain.access import Role
from sealtrail_server.domain.errors import Unavailable
from sealtrail_server.domain.event import EventDraft, validate_event
from sealtrail_server.store.changes import (
    DEFAULT_WAIT_SECONDS,
    ERASURE_SUBJECT,
    RETENTION_SUBJECT,
    Changes,
)
from sealtrail_server.store.database import Database, change_connections
from sealtrail_server.store.tokens import create_token
from tests.conftest import ServerThread
from tests.lock_waits import SUBJECT_LOCK, until_blocked, until_waiting
from tests.own_appender import own_appender
from tests.service_login import service_login_url
from tests.tenant_rows import events_of_action

BUSY = "another change of {} is still being applied; retry"


def test_changes_queued_in_one_process_wait_as_long_as_one_of_another_process(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
) -> None:
    """The retention policy's subject held by another process (the test's
    session), three calls changing it through one server, each with a 30 s
    deadline. The first waited for the subject's lock 5 s, and was answered
    UNAVAILABLE, retry; the others queued behind it in the process, on a lock
    of its own, with no bound but their deadlines: 10 and 15 s, each then
    waiting its own 5 s for the database's lock (a longer holder: to the
    deadline, DEADLINE_EXCEEDED). Each is now answered as the first is,
    5 s after it began."""
    calls = 3

    def change(client: AuditClient) -> tuple[float, UnavailableError]:
        started = time.monotonic()
        with pytest.raises(UnavailableError) as refused:
            client.set_retention_policy("1y")
        return time.monotonic() - started, refused.value

    clients = [client_for(tenant, timeout=30, max_attempts=1) for _ in range(calls)]
    clients[0].list_tokens()  # connected: the calls begin together
    # The subject held by a change of another process (the test's session).
    with ThreadPoolExecutor(calls) as pool, sql.transaction():
        sql.execute(SUBJECT_LOCK, [f"{tenant}/{RETENTION_SUBJECT}"])
        first = pool.submit(change, clients[0])
        until_waiting(sql, first)
        answers = [first] + [pool.submit(change, client) for client in clients[1:]]
        outcomes = [answer.result(timeout=60) for answer in answers]
    waits = [round(waited, 1) for waited, _ in outcomes]
    assert max(waits) < DEFAULT_WAIT_SECONDS + 2.5, f"the changes waited {waits} s"
    for _, refused in outcomes:
        assert refused.message == BUSY.format(RETENTION_SUBJECT)
        assert refused.retry_after is not None and refused.retry_after > 0
    # Nothing of them applied or recorded.
    assert clients[0].get_retention_policy().policy.default_days == 0
    assert events_of_action(sql, tenant, "retention.policy_updated") == 0


def test_a_change_whose_turn_took_its_wait_is_answered_that_another_change_is_being_applied(
    tenant: str, migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """Two changes of the subject in one process, another process holding it.
    The second queued behind the first its whole wait, less the moment
    between their starts; the first's connection, once it gave up, went to a
    caller queued at the pool, and the second, out of time at once, was
    answered that it had waited more than its wait "for a connection to the
    database" (the CI of d78d7481, its pool busy with other tests' work). It
    waited for its turn: it is answered so, as the first is."""
    wait = 1.0

    async def run() -> list[str]:
        db = await Database.open(
            service_login_url(migrated_database_url), min_size=2, max_size=2, timeout=5.0
        )
        changes = Changes(db, wait_seconds=wait)
        held = await db.pool.getconn()

        async def change() -> str:
            with pytest.raises(Unavailable) as refused:
                async with changes.exclusive(tenant, RETENTION_SUBJECT, caller=None):
                    pass
            return refused.value.message

        async def until(ready: Callable[[dict[str, int]], bool]) -> None:
            while not ready(db.pool.get_stats()):
                await asyncio.sleep(0.005)

        try:
            first = asyncio.create_task(change())
            await until(lambda stats: stats.get("pool_available", 0) == 0)
            # A caller queued at the pool, first to have the connection back.
            queued = asyncio.create_task(db.pool.getconn(timeout=10))
            await until(lambda stats: stats.get("requests_waiting", 0) == 1)
            second = asyncio.create_task(change())
            messages = [await first, await second]
            await db.pool.putconn(await queued)
            await db.pool.putconn(held)
            return messages
        finally:
            await db.close()

    with sql.transaction():
        sql.execute(SUBJECT_LOCK, [f"{tenant}/{RETENTION_SUBJECT}"])
        messages = asyncio.run(asyncio.wait_for(run(), 60))
    assert messages == [BUSY.format(RETENTION_SUBJECT)] * 2


def test_changes_queued_behind_one_of_their_process_held_mid_change_wait_at_most_their_wait(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A change of the tenant's settings held mid-transaction (its row locked
    by the test's session, as by a purge or a process frozen holding it), four
    more of them queued behind it in the same process. Each held change is
    bounded (its wait, 1 s here), but the queue was not: the last of the four
    waited for every one ahead, 5 s. A change now waits at most its wait for
    those ahead of it in its process, then for the row, as one of another
    process does for the subject's lock."""
    wait = 1.0
    changes = Changes(server.database, wait_seconds=wait)
    sql.execute(
        "INSERT INTO tenant_settings (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", [tenant]
    )

    async def change() -> tuple[float, Unavailable]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Unavailable) as refused:
            async with changes.exclusive(tenant, "settings", caller=None) as conn:
                await conn.execute(
                    "UPDATE tenant_settings SET updated_at = now() WHERE tenant_id = %s", [tenant]
                )
        return loop.time() - started, refused.value

    async def queued() -> list[tuple[float, Unavailable]]:
        return await asyncio.wait_for(asyncio.gather(*(change() for _ in range(4))), 30)

    with sql.transaction():
        sql.execute("SELECT FROM tenant_settings WHERE tenant_id = %s FOR UPDATE", [tenant])
        held = asyncio.run_coroutine_threadsafe(change(), server.loop)
        until_blocked(sql, held, waiter="sealtrail", running="UPDATE tenant_settings")
        outcomes = server.run(queued(), timeout=60)
        held.result(timeout=30)
    waits = [round(waited, 1) for waited, _ in outcomes]
    # One of them may find its turn just before its wait is out, then waits
    # its wait again, for the row, as one of another process would.
    assert max(waits) < 2 * wait + 1.2, f"the queued changes waited {waits} s"
    assert [r.message for _, r in outcomes].count(BUSY.format("settings")) >= 3
    assert all(r.retry_after > 0 for _, r in outcomes)


def test_a_change_waiting_for_the_changes_share_of_the_pool_waits_at_most_its_wait(
    server: ServerThread, tenant: str
) -> None:
    """As many changes of other subjects in progress in the process as it
    lets hold a connection at once (half its pool): one more waited for one
    of them to end, with no bound but its caller's deadline. It waits its wait,
    then is answered UNAVAILABLE, retry."""
    wait = 0.5
    changes = Changes(server.database, wait_seconds=wait)
    holders = change_connections(server.database.pool.max_size)

    async def run() -> tuple[float, Unavailable | None]:
        loop = asyncio.get_running_loop()
        release = asyncio.Event()
        entered: list[str] = []

        async def hold(subject: str) -> None:
            async with changes.exclusive(tenant, subject, caller=None):
                entered.append(subject)
                await release.wait()

        held = [asyncio.create_task(hold(f"held/{n}")) for n in range(holders)]
        while len(entered) < holders:
            await asyncio.sleep(0.01)
        loop.call_later(4, release.set)  # before the test fails outright
        started = loop.time()
        try:
            async with changes.exclusive(tenant, "another", caller=None):
                refused = None
        except Unavailable as error:
            refused = error
        waited = loop.time() - started
        release.set()
        await asyncio.gather(*held)
        return waited, refused

    waited, refused = server.run(run(), timeout=60)
    assert refused is not None, f"the change waited {waited:.1f} s, then was made"
    assert waited < wait + 1.5
    assert "changes" in refused.message and refused.message.endswith("; retry")
    assert refused.retry_after > 0


def test_a_change_waiting_for_a_connection_of_its_pool_waits_at_most_what_is_left_of_its_wait(
    tenant: str, migrated_database_url: str
) -> None:
    """The pool held empty (appends, reads and sweeps holding every
    connection), a change had its turn at once, then waited for a pooled
    connection as long as the pool lets anyone wait (its timeout, 5 s here),
    on top of its own wait, and was answered in the pool's words. Its wait
    now bounds that too: it is refused UNAVAILABLE, retry, when its wait is
    out, nothing written."""
    wait = 0.5

    async def run() -> tuple[float, Unavailable | None]:
        db = await Database.open(
            service_login_url(migrated_database_url), min_size=2, max_size=2, timeout=5.0
        )
        try:
            changes = Changes(db, wait_seconds=wait)
            held = [await db.pool.getconn() for _ in range(2)]
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                async with changes.exclusive(tenant, "settings", caller=None) as conn:
                    await conn.execute(
                        "INSERT INTO tenant_settings (tenant_id, redaction_mode)"
                        " VALUES (%s, 'hmac')",
                        [tenant],
                    )
                refused = None
            except Unavailable as error:
                refused = error
            waited = loop.time() - started
            for conn in held:
                await db.pool.putconn(conn)
            return waited, refused
        finally:
            await db.close()

    waited, refused = asyncio.run(asyncio.wait_for(run(), 60))
    assert refused is not None, f"the change waited {waited:.1f} s, then was made"
    assert waited < wait + 1.0, f"the change waited {waited:.1f} s"
    assert "for a connection" in refused.message and refused.message.endswith("; retry")
    assert refused.retry_after > 0


def test_an_append_of_the_changes_own_tenant_through_the_appender_inside_it_is_refused(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """A change awaiting `Appender.append` (not `append_within`) of its own
    tenant: once the change had recorded itself, the append waited for the
    change to end, which waited for the append, until its caller's deadline
    (ADR 0087); before, it was written outside the change's transaction, and
    stayed if the change rolled back. It is refused at once, a mistake no test
    of such code can miss; another tenant's append, or one from a task of its
    own (a refusal recorded in a change, api/denials.py), is written."""
    other = f"{tenant}-other"

    async def run() -> tuple[list[str], Any, Any]:
        refused: list[str] = []
        async with changes.exclusive(tenant, "settings", caller=None) as conn:
            for record in (False, True):
                if record:
                    await appender.append_within(conn, tenant, [_event("change")])
                try:  # in this task: wait_for would run it in a task of its own
                    async with asyncio.timeout(5):
                        await appender.append(tenant, [_event("inside")])
                except AssertionError as error:
                    refused.append(str(error))
            [beside] = await appender.append(other, [_event("beside")])
            own = asyncio.create_task(appender.append(tenant, [_event("own_task")]))
        [later] = await asyncio.wait_for(own, 10)
        return refused, beside, later

    with own_appender(
        server, migrated_database_url, tenant, other, first_event=lambda: _event("before"),
        system_lock_timeout=3, max_wait=0.01, max_size=4,
    ) as (db, appender):  # fmt: skip
        changes = Changes(db, wait_seconds=5)
        refused, beside, later = server.run(run(), timeout=60)
    assert len(refused) == 2 and all("append_within" in message for message in refused)
    assert beside.seq == 2 and later.seq == 3  # after the change's record (seq 2)


def _event(action: str) -> Any:
    draft = EventDraft(action=f"queue_waits.{action}", actor_id="u")
    return validate_event(draft, now=datetime.now(UTC), path=action)


def test_a_token_creation_waits_at_most_its_wait_for_a_connection_and_an_erasure_together(
    tenant: str, migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """Token creation outside a change (`create_token`) waited for a pooled
    connection as long as the pool lets anyone (its timeout), then up to its
    5 s for an erasure in progress, then up to 5 s more for its caller's
    token: about twice its bound and more. The pool held empty 4 s and an
    erasure held throughout, it was answered after some 9 s; its 5 s now
    bound the waits together, answered UNAVAILABLE, retry, nothing written."""

    async def run() -> tuple[float, Unavailable | None]:
        db = await Database.open(
            service_login_url(migrated_database_url), min_size=2, max_size=2, timeout=5.0
        )
        try:
            held = [await db.pool.getconn() for _ in range(2)]

            async def give_back() -> None:
                await asyncio.sleep(4.0)
                for conn in held:
                    await db.pool.putconn(conn)

            giving_back = asyncio.create_task(give_back())
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                await create_token(db, tenant_id=tenant, role=Role.READER, token_id=TOKEN_ID)
                refused = None
            except Unavailable as error:
                refused = error
            waited = loop.time() - started
            await giving_back
            return waited, refused
        finally:
            await db.close()

    with sql.transaction():
        sql.execute(SUBJECT_LOCK, [f"{tenant}/{ERASURE_SUBJECT}"])  # an erasure in progress
        waited, refused = asyncio.run(asyncio.wait_for(run(), 60))
    assert refused is not None, f"the token was created after {waited:.1f} s"
    assert waited < DEFAULT_WAIT_SECONDS + 1.5, f"the creation waited {waited:.1f} s"
    assert refused.retry_after > 0
    written = sql.execute("SELECT count(*) FROM api_tokens WHERE token_id = %s", [TOKEN_ID])
    assert written.fetchone() == (0,)


TOKEN_ID = "0b6f1c9e-6a43-4c8e-9d0e-262000000001"
