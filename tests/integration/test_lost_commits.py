"""The appender's connection lost while its batch commits: the server cannot
tell from the error whether the commit landed, so it asks the database, and
answers a batch that landed as written (an event without an idempotency key
was answered UNAVAILABLE, and its caller's retry recorded it twice)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from sealtrail_server.domain.event import EventDraft, ValidEvent, validate_event
from sealtrail_server.store.appended import Appended
from sealtrail_server.store.appender import Appender
from sealtrail_server.store.database import Database
from tests.integration.test_database_outage import Cluster, migrated_cluster
from tests.rfc6962 import leaf, mth
from tests.service_login import service_login_url


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A cluster of the test's own: waiting for a standby is set for all of it."""
    with migrated_cluster() as made:
        yield made


def _event() -> ValidEvent:  # no idempotency key: a retry could not find it
    draft = EventDraft(action="lost.commit", actor_id="u")
    return validate_event(draft, now=datetime.now(UTC), path="event")


@asynccontextmanager
async def _commits_held(su: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """Every commit waits for a standby that never comes, after it committed
    locally: a backend ended there has committed, and its client never hears."""
    await su.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
    await su.execute("SELECT pg_reload_conf()")
    await asyncio.sleep(0.5)  # every backend has read it
    try:
        yield
    finally:
        await su.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await su.execute("SELECT pg_reload_conf()")


@asynccontextmanager
async def _appender_of(url: str, tenants: list[str]) -> AsyncIterator[Appender]:
    """An appender on the cluster, each of `tenants` given one event by it:
    one tenant's next write alone is then written from its kept head."""
    db = await Database.open(service_login_url(url), min_size=2, max_size=4)
    appender = Appender(db)
    appender.start()
    try:
        for tenant in tenants:
            await appender.append(tenant, [_event()])
        yield appender
    finally:
        await appender.stop()
        await db.close()


def _one_each(appender: Appender, tenants: list[str]) -> asyncio.Future[list[Any]]:
    """An event of each of `tenants` appended at once: the answers, errors too."""
    return asyncio.gather(
        *(appender.append(tenant, [_event()]) for tenant in tenants), return_exceptions=True
    )


async def _end_the_waiting_commit(su: psycopg.AsyncConnection[Any]) -> None:
    for _ in range(200):
        cursor = await su.execute("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
        if rows := await cursor.fetchall():
            [(pid,)] = rows
            await su.execute("SELECT pg_terminate_backend(%s)", [pid])
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no commit waited for the standby")


async def _lost_commit(url: str, tenants: list[str]) -> tuple[list[Any], list[Any]]:
    """One event of each of `tenants` appended (after one each before, so the
    first is written from its kept head), its commit's answer lost: the
    answers, and the events stored."""
    su = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with _appender_of(url, tenants) as appender:
        async with _commits_held(su):
            answers = _one_each(appender, tenants)
            await _end_the_waiting_commit(su)
            answered = await answers
        for tenant in tenants:  # the chain goes on from the head stored
            [after] = await appender.append(tenant, [_event()])
            assert after.seq == 3
    cursor = await su.execute(
        "SELECT tenant_id, seq, id::text, leaf_hash, record FROM events ORDER BY tenant_id, seq"
    )
    stored = await cursor.fetchall()
    cursor = await su.execute("SELECT tenant_id, tree_size, root_hash FROM chain_heads")
    heads = await cursor.fetchall()
    await su.close()
    # Each tenant's log as a verifier sees it: its head is the Merkle root
    # (RFC 6962) of its records, in seq order, and no event is there twice.
    assert len(heads) == len(tenants)
    for tenant, size, root in heads:
        records = [row[4].encode() for row in stored if row[0] == tenant]
        assert size == len(records) == 3
        assert bytes(root) == mth([leaf(record) for record in records])
    return answered, [row[:4] for row in stored]


def _as_stored(tenant: str, answer: Any) -> tuple[str, int, str, bytes]:
    assert isinstance(answer, list), answer
    [appended] = answer
    assert isinstance(appended, Appended)
    return tenant, appended.seq, str(appended.event_id), appended.leaf_hash


def test_a_write_from_a_kept_head_whose_commit_was_lost_is_answered_as_written(
    cluster: Cluster,
) -> None:
    """One tenant's write from its kept head is one statement, its own commit."""
    [answer], stored = asyncio.run(_lost_commit(cluster.url, ["t1"]))
    assert len(stored) == 3
    assert _as_stored("t1", answer) == stored[1]


def test_a_batch_of_several_tenants_whose_commit_was_lost_is_answered_as_written(
    cluster: Cluster,
) -> None:
    """Several tenants' batch is written under lock, and COMMITted."""
    answers, stored = asyncio.run(_lost_commit(cluster.url, ["t1", "t2"]))
    assert len(stored) == 6
    assert _as_stored("t1", answers[0]) == stored[1]
    assert _as_stored("t2", answers[1]) == stored[4]


async def _stopped_mid_commit(url: str, tenants: list[str]) -> tuple[list[Any], list[Any], float]:
    """One event of each of `tenants` appended (after one each before), the
    appender stopped while its commit waits for the standby: the answers,
    the events stored, and how long the stop took."""
    su = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with _appender_of(url, tenants) as appender, _commits_held(su):
        answers = _one_each(appender, tenants)
        await _until_a_commit_waits(su)
        began = time.monotonic()
        # Its grace runs out: the write is cancelled, and psycopg cancels
        # the wait for the standby, after the commit landed locally.
        await appender.stop(timeout=0.5)
        took = time.monotonic() - began
        answered = await answers
    cursor = await su.execute(
        "SELECT tenant_id, seq, id::text, leaf_hash FROM events ORDER BY tenant_id, seq"
    )
    stored = await cursor.fetchall()
    await su.close()
    return answered, stored, took


async def _until_a_commit_waits(su: psycopg.AsyncConnection[Any]) -> None:
    for _ in range(200):
        cursor = await su.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        )
        row = await cursor.fetchone()
        if row is not None and row[0]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no commit waited for the standby")


@pytest.mark.parametrize("tenants", [["t1"], ["t1", "t2"]], ids=["kept-head", "under-lock"])
def test_a_write_the_stop_cut_off_as_it_committed_is_answered_as_written(
    cluster: Cluster, tenants: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A stop whose time ran out mid-commit answered the batch "the server
    stopped during the write, which may or may not have committed" without
    asking: the database is asked (within a bound) and a write that landed
    is answered as written."""
    with caplog.at_level(logging.WARNING):
        answers, stored, took = asyncio.run(_stopped_mid_commit(cluster.url, tenants))
    assert len(stored) == 2 * len(tenants)  # every write committed
    for n, (tenant, answer) in enumerate(zip(tenants, answers, strict=True)):
        assert _as_stored(tenant, answer) == stored[2 * n + 1]
    assert took < 10, took
    assert any(
        "stopped" in r.getMessage() and "committed" in r.getMessage() for r in caplog.records
    )


async def _lost_mid_commit_under_a_statement_timeout(url: str) -> list[Any]:
    """Two tenants' batch (written under lock) whose connection the server
    loses as its COMMIT waits for the standby, the session going on holding
    the heads for longer than the database's 200 ms statement_timeout before
    it commits: the answers."""
    su = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await su.execute("ALTER DATABASE postgres SET statement_timeout = '200ms'")
    tenants = ["t1", "t2"]
    try:
        async with _appender_of(url, tenants) as appender:
            async with _commits_held(su):
                answers = _one_each(appender, tenants)
                await _until_a_commit_waits(su)
                # The connection lost on the server's side alone: the session
                # that sent the COMMIT goes on waiting, the heads locked.
                kept = appender._small._kept  # the connection the lane writes on
                assert kept is not None and kept._conn is not None
                with socket.socket(fileno=os.dup(kept._conn.pgconn.socket)) as lost:
                    lost.shutdown(socket.SHUT_RDWR)
                # The server asks whether it landed, waiting for the heads...
                for _ in range(200):
                    cursor = await su.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND application_name = 'sealtrail'"
                    )
                    row = await cursor.fetchone()
                    if row is not None and row[0]:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("nobody waited for the heads")
                # ... past the statement timeout, which ends no wait for a lock
                # of the appender's (the lock timeout, 5 s, does).
                await asyncio.sleep(0.6)
            answered = await answers  # the standby no longer waited for: committed
            for tenant in tenants:
                [after] = await appender.append(tenant, [_event()])
                assert after.seq == 3
    finally:
        await su.close()
    return answered


def test_a_lost_commit_is_asked_about_free_of_the_statement_timeout(cluster: Cluster) -> None:
    """Whether a write whose connection was lost committed is asked once its
    session has let the heads go, which it does only once its commit ends:
    a statement_timeout of the database's or role's shorter than that cut
    the wait short, and the write, committed, was answered UNAVAILABLE (its
    keyless events recorded again by their callers' retries). The wait is the
    lock timeout's, as the appender's other waits for heads are."""
    answers = asyncio.run(_lost_mid_commit_under_a_statement_timeout(cluster.url))
    for tenant, answer in zip(["t1", "t2"], answers, strict=True):
        assert isinstance(answer, list), answer
        [appended] = answer
        assert isinstance(appended, Appended) and appended.seq == 2, (tenant, appended)
