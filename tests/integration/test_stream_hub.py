"""The stream hub's own reads, in process, against the real database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg

from sealtrail_server.domain.event import EventDraft, validate_event
from sealtrail_server.domain.filters import EventFilter, RecordMatcher
from sealtrail_server.store.appended import Appended
from sealtrail_server.store.appender import Appender
from sealtrail_server.stream.hub import StreamHub
from tests.conftest import ServerThread
from tests.prepared_plans import (
    RUNS,
    Prepared,
    generic_plan,
    one_connection_database,
    prepared_statements,
    the_one,
)
from tests.service_login import service_login_url


def test_a_live_fetch_is_planned_once(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """Each commit's new rows are one range of the primary key, whatever its
    bounds, so one generic plan serves every fetch (ADR 0032). Left to choose,
    PostgreSQL planned each small fetch anew, across every partition's index,
    for longer than the fetch took."""

    async def run() -> tuple[Prepared, str]:
        async with one_connection_database(migrated_database_url) as db:
            hub = StreamHub(db, database_url=service_login_url(migrated_database_url))
            appender = Appender(server.database)
            try:
                subscription = await hub.subscribe(tenant, RecordMatcher(EventFilter()))
                hub.start()
                appender.start()
                for seq in range(1, RUNS + 1):
                    draft = EventDraft(action="hub.test", actor_id="u")
                    event = validate_event(draft, now=datetime.now(UTC), path="event")
                    [outcome] = await appender.append(tenant, [event])
                    assert isinstance(outcome, Appended) and outcome.seq == seq
                    delivery = await asyncio.wait_for(subscription.next(), 10)
                    assert [live.stored.seq for live in delivery.events] == [seq]
                    assert not subscription.lagging  # a failed fetch marks it
            finally:
                await appender.stop()
                await hub.stop()
            fetch = the_one(await prepared_statements(db, tenant), "seq <= $3")
            async with db.connection(tenant, generic_plans=True) as conn:
                return fetch, await generic_plan(conn, fetch, tenant, 10, 12)

    fetch, plan = server.run(run())
    assert fetch.planned_once
    assert "Index Scan using events_" in plan and "Seq Scan" not in plan, plan


def test_the_hub_listens_on_after_its_connections_died_under_it(
    server: ServerThread, tenant: str, migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """A database restart killed the LISTEN connection and the pooled ones:
    the LISTEN came back, but the read of each tenant's size that follows met
    a dead pooled connection, and its error ended the hub for good, without a
    word (helper-64). Every stream of the process then waited a heartbeat for
    each event. Only this hub's connections are killed: the process's other
    servers' (the session server's hub, which the tests after this one
    stream, forward and alert through) listen on undisturbed."""
    listening = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'"
    others = {pid for (pid,) in sql.execute(listening).fetchall()}

    async def run() -> None:
        async with one_connection_database(migrated_database_url) as db:
            hub = StreamHub(db, database_url=service_login_url(migrated_database_url))
            appender = Appender(server.database)

            async def delivered() -> list[int]:
                draft = EventDraft(action="hub.test", actor_id="u")
                event = validate_event(draft, now=datetime.now(UTC), path="event")
                [outcome] = await appender.append(tenant, [event])
                assert isinstance(outcome, Appended)
                while True:
                    delivery = await asyncio.wait_for(subscription.next(), 10)
                    if delivery.events and delivery.events[-1].stored.seq == outcome.seq:
                        return [live.stored.seq for live in delivery.events]

            try:
                subscription = await hub.subscribe(tenant, RecordMatcher(EventFilter()))
                hub.start()
                appender.start()
                assert await delivered() == [1]  # listening
                async with db.connection(tenant) as conn:
                    pooled = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
                assert pooled is not None
                killed = sql.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE pid = %s OR (query LIKE 'LISTEN %%' AND NOT pid = ANY(%s))",
                    [pooled[0], list(others)],
                ).fetchone()
                assert killed is not None and killed[0] >= 2
                # It reconnects after a second; its read of the log's size then
                # fails on the dead pooled connection, and marks the subscriber
                # lagging: what it missed is read from the table.
                for _ in range(60):
                    if subscription.lagging:
                        break
                    await asyncio.sleep(0.05)
                subscription.caught_up()  # as a stream does at its heartbeat
                assert (await delivered())[-1] == 2  # announced: the hub listens on
            finally:
                await appender.stop()
                await hub.stop()

    server.run(run())
    assert others and others <= {pid for (pid,) in sql.execute(listening).fetchall()}


def test_a_fetch_its_last_subscriber_left_is_held_until_it_ends(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """The last subscriber of a tenant leaving cancelled the tenant's fetch in
    progress and dropped it, its only reference (asyncio keeps none of its
    own): a fetch cancelled while its query ran awaits the query's cancel,
    and the collector could destroy it there ("Task was destroyed but it is
    pending!", its connection closed mid-cancel; seen in a full run, a browser
    leaving a stream); nor did a stop wait for it. The hub keeps each until
    it ends, and a stop waits for it."""

    async def run() -> None:
        async with (
            one_connection_database(migrated_database_url) as db,
            await psycopg.AsyncConnection.connect(migrated_database_url) as locker,
        ):
            hub = StreamHub(db, database_url=service_login_url(migrated_database_url))
            subscription = await hub.subscribe(tenant, RecordMatcher(EventFilter()))
            hub.start()
            try:
                # The fetch a notification starts waits at its read of the events.
                await locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                hub._notified(f"{tenant}:1")
                [fetch] = [t for t in asyncio.all_tasks() if _fetch_of(hub, t)]
                for _ in range(200):
                    blocked = await locker.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                    )
                    if (row := await blocked.fetchone()) and row[0]:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("the fetch never waited")
                hub.unsubscribe(subscription)  # the last: its fetch is cancelled
                assert not fetch.done()
            finally:
                await hub.stop()
                await locker.rollback()
            assert fetch.done()  # waited for, not left to the collector

    server.run(run())


def _fetch_of(hub: StreamHub, task: asyncio.Task[Any]) -> bool:
    """Whether `task` is a fetch of `hub` (not of the session server's)."""
    coro = task.get_coro()
    frame = getattr(coro, "cr_frame", None)
    return getattr(coro, "__qualname__", "") == "StreamHub._fetch" and (
        frame is not None and frame.f_locals.get("self") is hub
    )
