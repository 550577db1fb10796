"""A `statement_timeout` of the database or the service's role (a DBA's guard
against runaway queries) does not cut the appender's writes short: a large
batch's COPY runs while the server builds and hashes its records, giving other
calls their turns, so it lasted as long as the server's own work took, and a
batch cut short was cut short again at every retry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.abc import Query

from sealtrail_server.domain.errors import Unavailable
from sealtrail_server.domain.event import EventDraft, ValidEvent, validate_event
from sealtrail_server.store.appended import Appended
from sealtrail_server.store.appender import Appender
from sealtrail_server.store.database import Database
from tests.conftest import ServerThread, database_of_its_own
from tests.own_appender import own_appender
from tests.service_login import service_login_url

_TIMEOUT = "200ms"


@contextlib.contextmanager
def _guarded(migrated_database_url: str, timeout: str) -> Iterator[str]:
    """A database of its own whose sessions start with `timeout` as their
    statement timeout: its URL (a superuser's)."""
    with database_of_its_own(migrated_database_url, "statement_timeout") as url:
        with psycopg.connect(url, autocommit=True) as admin:
            name = admin.info.dbname
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET statement_timeout = {}").format(
                    sql.Identifier(name), sql.Literal(timeout)
                )
            )
        yield url


@pytest.fixture
def guarded_database(server: ServerThread, migrated_database_url: str) -> Iterator[Database]:
    """A database of its own whose sessions start with a short statement timeout."""
    with _guarded(migrated_database_url, _TIMEOUT) as url:
        db = server.run(Database.open(service_login_url(url), min_size=2, max_size=4))
        try:
            yield db
        finally:
            server.run(db.close())


def _event(n: int) -> ValidEvent:
    details = {f"detail_{i}": "x" * 40 for i in range(300)}
    draft = EventDraft(action="timeout.test", actor_id=f"u{n}", details=details)
    return validate_event(draft, now=datetime.now(UTC), path=f"events[{n}]")


def test_a_large_batch_outlasting_a_statement_timeout_is_written(
    server: ServerThread, guarded_database: Database, tenant: str
) -> None:
    async def run() -> tuple[list[Any], str]:
        async with guarded_database.system_connection() as conn:
            row = await (await conn.execute("SHOW statement_timeout")).fetchone()
            assert row is not None
        appender = Appender(guarded_database)
        appender.start()
        try:
            return await appender.append(tenant, [_event(n) for n in range(400)]), str(row[0])
        finally:
            await appender.stop()

    outcomes, timeout = server.run(run(), timeout=60)
    assert timeout == _TIMEOUT  # the guard is in force for the appender's sessions
    assert [outcome.seq for outcome in outcomes if isinstance(outcome, Appended)] == list(
        range(1, 401)
    )


def test_a_head_held_past_a_statement_timeout_fails_its_tenant_alone(
    server: ServerThread, guarded_database: Database, tenant: str
) -> None:
    """A statement timeout shorter than the lock timeout ends the wait for a
    head another session holds (a process frozen mid-append) before the lock
    timeout does: the whole batch, every tenant in it, was answered
    UNAVAILABLE, and the held tenant's retries failed their batches again.
    It is a wait for a head as the lock timeout's is: its tenant alone is
    refused, for a while, and the rest written."""
    other = f"{tenant}-other"
    appender = Appender(guarded_database, max_wait=0.2)

    async def run() -> list[Any]:
        appender.start()
        try:
            for each in (tenant, other):
                await appender.append(each, [_event(0)])
            async with (
                guarded_database.system_connection() as holder,
                holder.transaction(),
            ):
                await holder.execute(
                    "SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant]
                )
                return await asyncio.gather(
                    *(appender.append(each, [_event(1)]) for each in (tenant, other)),
                    return_exceptions=True,
                )
        finally:
            await appender.stop()

    held, written = server.run(run(), timeout=60)
    assert isinstance(held, Unavailable) and held.retry_after >= 10, held
    assert isinstance(written, list) and written[0].seq == 2, written


def test_a_write_from_a_kept_head_outlasting_a_statement_timeout_is_written_under_lock(
    server: ServerThread, guarded_database: Database, migrated_database_url: str, tenant: str
) -> None:
    """A write from a kept head is one statement, under the statement timeout.
    Cut short (a trigger makes each insert into events take longer here), it
    is written again once, under lock, which runs free of the timeout: it was
    answered UNAVAILABLE, as was each retry."""
    with psycopg.connect(
        psycopg.conninfo.make_conninfo(migrated_database_url, dbname=_dbname(guarded_database)),
        autocommit=True,
    ) as admin:
        admin.execute(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(0.4); RETURN NULL; END $$"
        )
        admin.execute(
            "CREATE TRIGGER slow_insert BEFORE INSERT ON events"
            " FOR EACH STATEMENT EXECUTE FUNCTION slow_insert()"
        )
    appender = Appender(guarded_database)

    async def run() -> list[Any]:
        appender.start()
        try:
            await appender.append(tenant, [_event(0)])  # under lock: its head made
            return await appender.append(tenant, [_event(1)])  # from its kept head
        finally:
            await appender.stop()

    [written] = server.run(run(), timeout=60)
    assert isinstance(written, Appended) and written.seq == 2


def _dbname(db: Database) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(db.pool.conninfo)["dbname"])


def test_a_statement_timeout_below_the_look_for_held_heads_leaves_it_its_lock_timeout(
    server: ServerThread, migrated_database_url: str, tenant: str
) -> None:
    """The look for the heads another session holds waits 100 ms at most for
    a lock on their whole table: a statement timeout shorter than that cut
    it short, and the batch was failed as if the database were unavailable
    ("see the log"). It runs free of the statement timeout, as the writes
    under lock do, and the batch is told the heads' table is locked."""
    with (
        _guarded(migrated_database_url, "40ms") as url,
        own_appender(
            server, url, tenant, first_event=lambda: _event(0),
            system_lock_timeout=0.2, max_wait=0.01,
        ) as (_, appender),
    ):  # fmt: skip
        with psycopg.connect(url) as holder:
            holder.execute("LOCK TABLE chain_heads IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(Unavailable) as refused:
                server.run(appender.append(tenant, [_event(1)]), timeout=30)
        assert "chain_heads" in refused.value.message, refused.value.message
        [written] = server.run(appender.append(tenant, [_event(2)]))  # let go
        assert written.seq == 2


def test_a_call_cut_short_by_the_statement_timeout_is_said_so(
    server: ServerThread, guarded_database: Database, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A statement the database cut short after its statement_timeout was
    logged as "a call's connection failed", and answered as the database
    unavailable: an operator looked for an outage. Said as what it is, on
    every checkout, the pool's and a connection of its own."""
    _said_cut_short_on_every_checkout(
        server, guarded_database, tenant, caplog, "SELECT pg_sleep(1)"
    )


def _said_cut_short_on_every_checkout(
    server: ServerThread,
    guarded_database: Database,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
    statement: Query,
) -> list[str]:
    """`statement`, run on every checkout of `guarded_database` (the pool's
    and a connection of its own), is refused as cut short by the
    statement_timeout, with a time to retry after, and logged once each as
    such, never as a connection that failed: the lines logged."""

    async def run() -> list[Unavailable]:
        refused: list[Unavailable] = []
        for checkout in (
            lambda: guarded_database.connection(tenant),
            guarded_database.system_connection,
            guarded_database.own_system_connection,
        ):
            try:
                async with checkout() as conn:
                    await conn.execute(statement)
            except Unavailable as error:
                refused.append(error)
        return refused

    with caplog.at_level(logging.WARNING, logger="sealtrail_server.store.database"):
        refused = server.run(run(), timeout=60)
    assert len(refused) == 3
    for error in refused:
        assert "statement_timeout" in error.message and error.retry_after > 0, error
    said = [r.getMessage() for r in caplog.records if r.name == "sealtrail_server.store.database"]
    assert len(said) == 3 and all("statement_timeout" in line for line in said), said
    assert not any("failed" in line for line in said), said
    return said


# What PostgreSQL says, with `lc_messages = 'de_DE.UTF-8'`, for a statement its
# statement_timeout cut short (its de.po; the embedded cluster is built
# without NLS, so a PL/pgSQL RAISE says it, with the same SQLSTATE, 57014).
_GERMAN_STATEMENT_TIMEOUT = "storniere Anfrage wegen Zeitüberschreitung der Anweisung"


def test_a_statement_cut_short_is_said_so_whatever_the_language_of_the_database(
    server: ServerThread, guarded_database: Database, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A statement timeout was told by the English words of its message: a
    database whose lc_messages is German, French, ... says them in its own
    language, and its statement timeouts were logged as "a call's connection
    failed" and answered as the database unavailable again. Its SQLSTATE
    (57014, query_canceled) tells, in any language."""
    raise_it = sql.SQL(
        "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'query_canceled', MESSAGE = {}; END $$"
    ).format(sql.Literal(_GERMAN_STATEMENT_TIMEOUT))

    said = _said_cut_short_on_every_checkout(server, guarded_database, tenant, caplog, raise_it)
    assert all(_GERMAN_STATEMENT_TIMEOUT in line for line in said), said  # its own words


def test_a_statement_an_operator_cancelled_is_not_said_to_be_a_connection_failure(
    server: ServerThread, migrated_database_url: str, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator's pg_cancel_backend (57014 as well) was logged as "a call's
    connection failed" and answered as the database unavailable: an operator
    who had just cancelled a runaway statement was sent to look for an outage."""
    with _guarded(migrated_database_url, "0") as url:
        db = server.run(Database.open(service_login_url(url), min_size=1, max_size=2))

        async def run() -> Unavailable | None:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
                try:
                    async with db.connection(tenant) as conn:
                        pid = conn.info.backend_pid

                        async def cancel() -> None:
                            while True:  # once the statement runs
                                row = await (
                                    await admin.execute(
                                        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                                        " WHERE pid = %s AND query LIKE '%%pg_sleep%%'"
                                        " AND state = 'active'",
                                        [pid],
                                    )
                                ).fetchone()
                                if row is not None and row[0]:
                                    return
                                await asyncio.sleep(0.01)

                        canceller = asyncio.ensure_future(cancel())
                        try:
                            await conn.execute("SELECT pg_sleep(30)")
                        finally:
                            await canceller
                except Unavailable as error:
                    return error
            return None

        try:
            with caplog.at_level(logging.WARNING, logger="sealtrail_server.store.database"):
                refused = server.run(run(), timeout=60)
        finally:
            server.run(db.close())
    assert refused is not None and refused.retry_after > 0
    assert "cancelled" in refused.message, refused
    said = [r.getMessage() for r in caplog.records if r.name == "sealtrail_server.store.database"]
    assert len(said) == 1 and "cancel" in said[0] and "failed" not in said[0], said
