"""The appender keeps its connection from batch to batch (ADR 0046), and gives
it back when it idles, when another caller waits for the pool, when a write
fails, and when it stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from sealtrail_server.domain.errors import Unavailable
from sealtrail_server.domain.event import EventDraft, ValidEvent, validate_event
from sealtrail_server.store import appender as appender_module
from sealtrail_server.store import kept as kept_module
from sealtrail_server.store.appender import Appender
from sealtrail_server.store.database import Database
from tests.conftest import ServerThread
from tests.service_login import service_login_url


def _event() -> ValidEvent:
    return validate_event(
        EventDraft(action="kept.test", actor_id="u"), now=datetime.now(UTC), path="event"
    )


@contextlib.asynccontextmanager
async def _started(appender: Appender) -> AsyncIterator[None]:
    """`appender` running in the calling loop; stopped after, which gives its
    connection back."""
    appender.start()
    try:
        yield
    finally:
        await appender.stop()


async def _append(appender: Appender, tenant: str) -> Any:
    """One event appended: its outcome, or the Unavailable it met."""
    try:
        return await appender.append(tenant, [_event()])
    except Unavailable as error:
        return error


async def _backend_pid(db: Database, tenant: str) -> int:
    """The backend of whichever connection a read of `tenant` checks out."""
    async with db.connection(tenant) as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def small_pool(
    server: ServerThread, migrated_database_url: str, sql: psycopg.Connection[Any]
) -> Iterator[Database]:
    """A pool of two connections, with a short wait for one (3 s); opened
    after `sql`, whose backend is thus older than the pool's."""
    db = server.run(
        Database.open(service_login_url(migrated_database_url), min_size=2, max_size=2, timeout=3.0)
    )
    yield db
    server.run(db.close())


def _in_use(db: Database) -> int:
    stats = db.pool.get_stats()
    return int(stats.get("pool_size", 0) - stats.get("pool_available", 0))


def test_batches_are_written_on_one_connection_that_reads_never_get(
    server: ServerThread,
    small_pool: Database,
    tenant: str,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between batches the appender keeps its connection, in its scope: reads
    of other tenants in between all get the other one."""
    monkeypatch.setattr(appender_module, "KEEP_IDLE_SECONDS", 3600.0)  # however slow a round
    appender = Appender(small_pool)

    async def written_and_read() -> tuple[int, set[int]]:
        await appender.append(tenant, [_event()])
        # Two reads: were the connections handed out in turn, one would get the writer's.
        read = {await _backend_pid(small_pool, f"{tenant}-{n}") for n in range(2)}
        return _writer_pid(sql), read

    async def start() -> None:
        appender.start()
        await appender.append(tenant, [_event()])  # its head made, under lock: COMMIT last

    writers: set[int] = set()
    readers: set[int] = set()
    server.run(start())
    try:
        for _ in range(5):
            writer, reader = server.run(written_and_read())
            writers.add(writer)
            readers |= reader
    finally:
        server.run(appender.stop())
    assert len(writers) == 1 and len(readers) == 1
    assert writers.isdisjoint(readers)
    assert _in_use(small_pool) == 0  # stopped: given back


def _writer_pid(sql: psycopg.Connection[Any]) -> int:
    """The backend of the test's pool (started after `sql`'s) that ran the
    latest write from a kept head (pg_stat_activity shows each backend's last
    statement)."""
    sql.execute("SELECT pg_stat_clear_snapshot()")
    row = sql.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_start > (SELECT backend_start FROM pg_stat_activity"
        "   WHERE pid = pg_backend_pid())"
        " AND query LIKE 'WITH seen AS%' ORDER BY state_change DESC LIMIT 1"
    ).fetchone()
    assert row is not None, "no appender statement seen"
    return int(row[0])


def test_an_idle_appender_gives_its_connection_back(
    server: ServerThread, small_pool: Database, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(appender_module, "KEEP_IDLE_SECONDS", 0.3)
    appender = Appender(small_pool)

    async def run() -> tuple[int, int]:
        async with _started(appender):
            await appender.append(tenant, [_event()])
            kept = _in_use(small_pool)
            await asyncio.sleep(1.0)
            return kept, _in_use(small_pool)

    assert server.run(run()) == (1, 0)


def test_a_connection_kept_its_longest_goes_back_after_its_next_use(
    server: ServerThread, small_pool: Database, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However busy the appender, the pool gets its connection back now and
    then, to recycle it when it is old."""
    monkeypatch.setattr(kept_module, "KEEP_AT_MOST_SECONDS", 0.0)
    appender = Appender(small_pool)

    async def run() -> int:
        async with _started(appender):
            await appender.append(tenant, [_event()])
            return _in_use(small_pool)

    assert server.run(run()) == 0


def test_a_caller_waiting_for_the_pool_gets_the_kept_connection_at_once(
    server: ServerThread, small_pool: Database, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the other connection held, a read waits for the pool: the idle
    appender gives its connection back well before it would for idling (an
    hour here), and before the read's wait (3 s) runs out."""
    monkeypatch.setattr(appender_module, "KEEP_IDLE_SECONDS", 3600.0)
    appender = Appender(small_pool)

    async def run() -> int:
        async with _started(appender):
            await appender.append(tenant, [_event()])
            async with small_pool.connection(tenant):  # the pool's other connection
                read = await _backend_pid(small_pool, tenant)  # waits for the kept one
            await appender.append(tenant, [_event()])  # checks one out again
            return read

    assert server.run(run(), timeout=30) > 0


def test_a_write_that_fails_gives_the_connection_back_and_the_next_gets_a_new_one(
    server: ServerThread,
    small_pool: Database,
    tenant: str,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kept connection's backend ends (a restart, a network cut): that
    batch is UNAVAILABLE, as on any lost connection, and is given back to
    the pool, which drops it; the next batch is written on a live one."""
    monkeypatch.setattr(appender_module, "KEEP_IDLE_SECONDS", 3600.0)  # kept, however slow
    appender = Appender(small_pool)

    async def start() -> None:
        appender.start()
        for _ in range(2):  # its head made under lock, then written from the kept head
            await appender.append(tenant, [_event()])

    server.run(start())
    try:
        pid = _writer_pid(sql)
        sql.execute("SELECT pg_terminate_backend(%s)", [pid])
        lost = server.run(_append(appender, tenant))
        assert isinstance(lost, Unavailable)
        [written] = server.run(_append(appender, tenant))
        assert written.seq == 3
        assert _writer_pid(sql) != pid
    finally:
        server.run(appender.stop())


def test_a_database_marked_unreachable_gets_the_kept_connection_back(
    server: ServerThread, small_pool: Database, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the database is marked unreachable an append is refused at once,
    as a fresh checkout would be, and the kept connection goes back to the
    pool: the check after the outage sees only the pool's, and one kept
    through it would fail the first batch after (helper-86)."""
    monkeypatch.setattr(appender_module, "KEEP_IDLE_SECONDS", 3600.0)
    appender = Appender(small_pool)

    async def run() -> tuple[int, Any]:
        async with _started(appender):
            await appender.append(tenant, [_event()])
            small_pool.reachable = False
            try:
                refused = await _append(appender, tenant)
                given_back = _in_use(small_pool)
            finally:
                small_pool.reachable = True
            await appender.append(tenant, [_event()])
            return given_back, refused

    given_back, refused = server.run(run())
    assert isinstance(refused, Unavailable)
    assert given_back == 0
