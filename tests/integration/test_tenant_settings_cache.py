"""The tenant settings cache: a change made by this process applies here at
once, even when a read of the settings began before it and ends after it."""

from __future__ import annotations

import asyncio
import traceback
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from psycopg import sql

from sealtrail_server.domain.errors import Unavailable
from sealtrail_server.store.database import Database
from sealtrail_server.store.tenant_settings import SettingsCache, write_settings
from tests.conftest import ServerThread
from tests.held_database import HeldAfterReading
from tests.service_login import service_login_url

# What UpdateTenantSettings writes to turn HMAC mode on, the others as they were.
_HMAC: dict[str, Any] = {
    "redaction_mode": "hmac",
    "strict_actions": False,
    "personal_data_fields": (),
    "ip_recording": "full",
}


def test_a_read_that_began_before_a_change_here_does_not_put_the_old_settings_back(
    server: ServerThread, tenant: str
) -> None:
    """A Record's read of the settings began, UpdateTenantSettings committed
    HMAC mode and put it in the cache, then the read ended and put `replace`
    back: this process stored events in the old mode for the cache's whole
    time (helper-156)."""

    async def scenario() -> tuple[str, str]:
        held = HeldAfterReading(server.database)
        cache = SettingsCache(held, ttl=60)  # type: ignore[arg-type]
        reading = asyncio.create_task(cache.get(tenant))
        await held.read.wait()  # it read the settings as they were: the defaults
        async with server.database.connection(tenant) as conn:  # as UpdateTenantSettings
            changed = await write_settings(conn, tenant, **_HMAC)
        cache.put(tenant, changed)
        held.release.set()
        read = await reading
        return read.redaction_mode, (await cache.get(tenant)).redaction_mode

    read, then = server.run(scenario())
    assert read == "replace"  # true when it was read
    assert then == "hmac"


def test_settings_read_and_left_are_forgotten_once_stale(server: ServerThread, tenant: str) -> None:
    """Each tenant whose settings were read stayed in the cache for good,
    long after they were stale (100,000 tenants, each calling once, left
    some 30 MB in every process). Once past their time, they go as others are
    kept; and a tenant read again after is read afresh, as a new one is."""
    now = [0.0]

    async def scenario() -> tuple[int, int, str, str]:
        cache = SettingsCache(server.database, ttl=10, clock=lambda: now[0])
        for n in range(200):
            await cache.get(f"{tenant}-{n}")
        kept_while_fresh = len(cache)
        async with server.database.connection(tenant + "-0") as conn:  # as another process
            await write_settings(conn, tenant + "-0", **_HMAC)
        before = (await cache.get(tenant + "-0")).redaction_mode  # cached: not yet
        now[0] = 11.0
        await cache.get(tenant)
        kept_after = len(cache)
        return kept_while_fresh, kept_after, before, (await cache.get(tenant + "-0")).redaction_mode

    kept_while_fresh, kept_after, before, after = server.run(scenario())
    assert kept_while_fresh == 200
    assert kept_after == 1  # the tenant just read
    assert (before, after) == ("replace", "hmac")


class CountedConnections:
    """The database, counting the connections taken from it."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.taken = 0

    @asynccontextmanager
    async def connection(self, tenant_id: str) -> AsyncIterator[Any]:
        self.taken += 1
        async with self._db.connection(tenant_id) as conn:
            yield conn


def test_calls_missing_the_cache_at_once_share_one_read(server: ServerThread, tenant: str) -> None:
    """As a tenant's settings went stale, every Record in flight read them
    (64 calls, 64 reads, each waiting for a connection of the pool beside
    the appender's): one read now, its answer shared. A caller leaving
    before the answer does not end the read for the others."""
    now = [0.0]

    async def scenario() -> tuple[int, int, list[str]]:
        counted = CountedConnections(server.database)
        cache = SettingsCache(counted, ttl=10, clock=lambda: now[0])  # type: ignore[arg-type]
        await cache.get(tenant)
        now[0] = 11.0  # stale
        leaving = asyncio.create_task(cache.get(tenant))
        await asyncio.sleep(0)  # its read began
        staying = [asyncio.create_task(cache.get(tenant)) for _ in range(63)]
        leaving.cancel()
        read = await asyncio.gather(*staying)
        reads_at_expiry = counted.taken - 1
        await cache.get(tenant)  # fresh again: no read
        return reads_at_expiry, counted.taken - 1, [s.redaction_mode for s in read]

    at_expiry, after, modes = server.run(scenario())
    assert at_expiry == 1
    assert after == 1
    assert modes == ["replace"] * 63


def test_a_call_after_a_change_here_does_not_share_a_read_begun_before_it(
    server: ServerThread, tenant: str
) -> None:
    """Settings kept for no time (SEALTRAIL_SETTINGS_CACHE_SECONDS=0) are read
    on every call. A read began, UpdateTenantSettings committed HMAC mode
    here, then a Record began: it shared the read begun before the change and
    was answered `replace`, the change not applied at once on the process that
    made it. A call beginning after a change here reads afresh."""

    async def scenario() -> tuple[str, str]:
        held = HeldAfterReading(server.database)
        cache = SettingsCache(held, ttl=0)  # type: ignore[arg-type]
        before = asyncio.create_task(cache.get(tenant))
        await held.read.wait()  # it read the settings as they were: the defaults
        async with server.database.connection(tenant) as conn:  # as UpdateTenantSettings
            changed = await write_settings(conn, tenant, **_HMAC)
        cache.put(tenant, changed)
        after = asyncio.create_task(cache.get(tenant))  # a Record begun after the change
        await asyncio.sleep(0.1)
        held.release.set()
        return (await before).redaction_mode, (await after).redaction_mode

    before, after = server.run(scenario())
    assert before == "replace"  # true when it was read
    assert after == "hmac"


def test_a_shared_read_is_in_no_callers_trace_and_linked_to_each(
    tenant: str, migrated_database_url: str
) -> None:
    """The read shared by the calls missing a tenant's settings at once ran
    in a task that took the context of the call that began it: its statement
    was a span of that call's trace, and the other calls' traces showed
    nothing of the read they waited for. It is a trace of its own, as the
    appender's batches are, linked to each call it answers and each call to it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)

    async def scenario() -> None:
        db = await Database.open(
            service_login_url(migrated_database_url), min_size=1, max_size=2, tracer=tracer
        )
        try:
            cache = SettingsCache(db, ttl=10, tracer=tracer)

            async def call(name: str) -> None:
                with tracer.start_as_current_span(name):
                    await cache.get(tenant)

            await asyncio.wait_for(asyncio.gather(call("first"), call("second")), 30)
        finally:
            await db.close()

    asyncio.run(scenario())
    provider.shutdown()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    calls = [spans["first"], spans["second"]]
    statement = spans["SELECT tenant_settings"]
    assert statement.context is not None and statement.parent is not None
    assert statement.context.trace_id not in {c.context.trace_id for c in calls if c.context}
    [read] = [
        s for s in spans.values() if s.context and s.context.span_id == statement.parent.span_id
    ]
    assert read.parent is None  # a trace of its own
    linked = {link.context.span_id for link in read.links}
    assert linked == {c.context.span_id for c in calls if c.context}
    for call in calls:
        assert [link.context.span_id for link in call.links] == [read.context.span_id]


def test_each_call_sharing_a_failed_read_gets_an_exception_of_its_own(
    tenant: str, migrated_database_url: str
) -> None:
    """A shared read that failed raised its one exception object in every
    call waiting for it: each raise added that call's frames to the one
    traceback, and a call's error report showed the frames of unrelated
    calls. Each call now raises one of its own, whose cause is the read's."""

    async def scenario() -> list[BaseException]:
        db = await Database.open(service_login_url(migrated_database_url), min_size=1, max_size=2)
        db.reachable = False  # as probe() finds the database down
        try:
            cache = SettingsCache(db, ttl=10)

            async def call_of_one_caller() -> None:
                await cache.get(tenant)

            async def call_of_another() -> None:
                await cache.get(tenant)

            outcomes = await asyncio.wait_for(
                asyncio.gather(call_of_one_caller(), call_of_another(), return_exceptions=True), 30
            )
            return [o for o in outcomes if isinstance(o, BaseException)]
        finally:
            await db.close()

    one, another = asyncio.run(scenario())
    assert isinstance(one, Unavailable) and isinstance(another, Unavailable)
    assert one is not another
    assert one.__cause__ is not None and one.__cause__ is another.__cause__
    assert one.message == another.message == one.__cause__.message  # type: ignore[attr-defined]
    assert one.retry_after == another.retry_after > 0
    shared = [frame.name for frame in traceback.extract_tb(one.__cause__.__traceback__)]
    assert not {"call_of_one_caller", "call_of_another"} & set(shared), shared


class RefusingWithDetail:
    """The database, whose connections first run a statement PostgreSQL
    refuses with `detail` in its DETAIL, as a refused row is quoted there."""

    def __init__(self, db: Database, detail: str) -> None:
        self._db = db
        self._refusing = sql.SQL(
            "DO $$ BEGIN RAISE EXCEPTION 'refused' USING DETAIL = {}; END $$"
        ).format(sql.Literal(detail))

    @asynccontextmanager
    async def connection(self, tenant_id: str) -> AsyncIterator[Any]:
        async with self._db.connection(tenant_id) as conn:
            await conn.execute(self._refusing)
            yield conn


def test_a_failed_read_is_said_on_its_span_by_class_not_text(
    tenant: str, migrated_database_url: str
) -> None:
    """The read's span recorded an error escaping it as OpenTelemetry does
    by default: an `exception` event and a status with its text whole, the
    database's DETAIL with it, in a tracing backend out of erasure's reach.
    It says it by SQLSTATE and class, as a statement's span does."""
    secret = f"secret-{uuid.uuid4()}"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)

    async def scenario() -> BaseException | None:
        db = await Database.open(service_login_url(migrated_database_url), min_size=1, max_size=2)
        try:
            cache = SettingsCache(RefusingWithDetail(db, secret), ttl=10, tracer=tracer)  # type: ignore[arg-type]
            try:
                await asyncio.wait_for(cache.get(tenant), 30)
            except Exception as error:
                return error
            return None
        finally:
            await db.close()

    raised = asyncio.run(scenario())
    provider.shutdown()
    assert isinstance(raised, psycopg.errors.RaiseException), raised
    assert secret in str(raised)  # the database did say it
    [read] = [s for s in exporter.get_finished_spans() if s.name == "sealtrail.settings.read"]
    assert read.status.status_code is StatusCode.ERROR
    assert read.status.description == "RaiseException"
    assert read.attributes is not None and read.attributes["error.type"] == "P0001"
    said = repr([read.status, dict(read.attributes), [(e.name, e.attributes) for e in read.events]])
    assert secret not in said and "DETAIL" not in said, said
