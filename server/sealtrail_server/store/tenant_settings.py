"""Rows of per-tenant settings, and a short-lived cache of them for the write
path (a tenant without a row has the defaults). With `strict_actions` on, the
cache's settings carry the tenant's action catalogue too (each action and its
declared category): Record checks events against them without reading the
database per event, and a change of either reaches every process within the
cache's `ttl` (ADR 0148)."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

import psycopg
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, Tracer
from psycopg.rows import class_row

from ..domain.errors import unexpected_failure
from .database import Database
from .traced import failures_by_class

REDACTION_MODES: Final = ("replace", "hmac")


@dataclass(frozen=True, slots=True)
class TenantSettings:
    redaction_mode: str = "replace"
    updated_at: datetime | None = None
    strict_actions: bool = False
    # Field names whose values the tenant's events must not keep (ADR 0154).
    personal_data_fields: tuple[str, ...] = ()
    # How much of `context.ip` Record keeps (domain.ip_recording).
    ip_recording: str = "full"
    # With strict_actions, as the cache reads them: each action of the
    # catalogue and its declared category (None: any). Not read otherwise.
    catalog: Mapping[str, str | None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # A tuple whatever the row gave (a list): the write path keys its
        # redactors by it.
        object.__setattr__(self, "personal_data_fields", tuple(self.personal_data_fields))


DEFAULTS: Final = TenantSettings()
_COLUMNS: Final = "redaction_mode, updated_at, strict_actions, personal_data_fields, ip_recording"


async def read_settings(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> TenantSettings:
    cursor = conn.cursor(row_factory=class_row(TenantSettings))
    await cursor.execute(
        f"SELECT {_COLUMNS} FROM tenant_settings WHERE tenant_id = %s", [tenant_id]
    )
    return await cursor.fetchone() or DEFAULTS


async def with_catalog(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, settings: TenantSettings
) -> TenantSettings:
    """`settings` with the tenant's catalogue (each action, its declared
    category) if they are strict, as the write path checks events against
    it; as they are otherwise."""
    if not settings.strict_actions:
        return settings
    cursor = await conn.execute(
        "SELECT action, category FROM action_catalog WHERE tenant_id = %s", [tenant_id]
    )
    catalog = {action: category for action, category in await cursor.fetchall()}
    return replace(settings, catalog=catalog)


async def write_settings(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    *,
    redaction_mode: str,
    strict_actions: bool,
    personal_data_fields: tuple[str, ...],
    ip_recording: str,
) -> TenantSettings:
    cursor = conn.cursor(row_factory=class_row(TenantSettings))
    await cursor.execute(
        "INSERT INTO tenant_settings"
        " (tenant_id, redaction_mode, strict_actions, personal_data_fields, ip_recording)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE"
        " SET redaction_mode = excluded.redaction_mode,"
        " strict_actions = excluded.strict_actions,"
        " personal_data_fields = excluded.personal_data_fields,"
        " ip_recording = excluded.ip_recording, updated_at = now()"
        f" RETURNING {_COLUMNS}",
        [tenant_id, redaction_mode, strict_actions, list(personal_data_fields), ip_recording],
    )
    written = await cursor.fetchone()
    assert written is not None
    return written


class SettingsCache:
    """Each tenant's settings, read at most once per `ttl` seconds per process:
    a change made through another process applies here within `ttl`. Settings
    past their time are forgotten as others are kept (a tenant's next call
    reads them afresh either way): each tenant ever read stayed for good.

    Traced (a `tracer` given), a read shared by many calls is a
    `sealtrail.settings.read` span of its own trace, parent of its statement,
    linked to the span of each call it answers, and each of those to it (as
    the appender's batches are): it ran in the context of the call that began
    it, a span of that call's trace, and the others showed nothing of it."""

    def __init__(
        self,
        db: Database,
        *,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        tracer: Tracer | None = None,
    ) -> None:
        self._db = db
        self._ttl = ttl
        self._clock = clock
        self._tracer = tracer
        # Tenant -> (until when, its settings), the soonest stale first.
        self._entries: OrderedDict[str, tuple[float, TenantSettings]] = OrderedDict()
        # Bumped by each put: a read that began before it must not put back
        # what it replaced (helper-156).
        self._puts = 0
        # Tenant -> the read of its settings in progress, shared by callers.
        self._reading: dict[str, _Read] = {}

    async def get(self, tenant_id: str) -> TenantSettings:
        """The tenant's settings: kept ones, or one read shared by every call
        missing them meanwhile. As a busy tenant's settings went stale, each
        call in flight read them (64 calls, 64 reads, each waiting for a
        connection beside the appender's). A read that fails raises in each
        call an exception of its own, caused by the read's: the one object
        raised in every call gathered each call's frames in its traceback."""
        entry = self._entries.get(tenant_id)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        caller = trace.get_current_span() if self._tracer is not None else None
        if caller is not None and not caller.is_recording():
            caller = None
        reading = self._reading.get(tenant_id)
        if reading is None:
            reading = self._begin(tenant_id, caller)
        elif caller is not None and reading.span is not None and reading.span.is_recording():
            reading.span.add_link(caller.get_span_context())
        if caller is not None and reading.span is not None:
            caller.add_link(reading.span.get_span_context())
        # A caller leaving does not end the read the others wait for.
        await asyncio.wait([reading.task])
        read = reading.task
        if not read.cancelled() and (error := read.exception()) is not None:
            raise _own(error) from error
        return read.result()

    def _begin(self, tenant_id: str, caller: Span | None) -> _Read:
        """The read of the tenant's settings, in a task of its own, in a
        context of its own: no caller's span, nor any other of its context."""
        span = None
        if self._tracer is not None:
            span = self._tracer.start_span(
                "sealtrail.settings.read",
                context=otel_context.Context(),  # no parent: a trace of its own
                links=[Link(caller.get_span_context())] if caller is not None else None,
            )
        task = asyncio.create_task(self._read(tenant_id, span), context=contextvars.Context())
        reading = self._reading[tenant_id] = _Read(task, span)
        task.add_done_callback(lambda done: self._read_ended(tenant_id, done))
        return reading

    async def _read(self, tenant_id: str, span: Span | None) -> TenantSettings:
        if span is None:
            return await self._read_settings(tenant_id)
        # A failure said by its class, never its text (a database error's
        # quotes what it refused: CONTRIBUTING.md, "Database errors").
        with (
            trace.use_span(
                span, end_on_exit=True, record_exception=False, set_status_on_exception=False
            ),
            failures_by_class(span),
        ):
            return await self._read_settings(tenant_id)

    async def _read_settings(self, tenant_id: str) -> TenantSettings:
        puts = self._puts
        async with self._db.connection(tenant_id) as conn:
            settings = await with_catalog(conn, tenant_id, await read_settings(conn, tenant_id))
        if puts == self._puts:
            self._keep(tenant_id, settings)
        return settings  # true when read; not kept past a change made here since

    def _read_ended(self, tenant_id: str, read: asyncio.Task[TenantSettings]) -> None:
        reading = self._reading.get(tenant_id)
        if reading is not None and reading.task is read:
            del self._reading[tenant_id]
        if not read.cancelled():
            read.exception()  # retrieved, whether anyone still waits or not

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, tenant_id: str, settings: TenantSettings) -> None:
        """What this process just wrote applies here at once: to calls that
        begin after it, even with settings kept for no time (`ttl` 0), which
        shared a read begun before it and were answered the old settings."""
        self._puts += 1
        self._reading.pop(tenant_id, None)  # its callers keep it; no one joins it
        self._keep(tenant_id, settings)

    @property
    def puts(self) -> int:
        """How many puts and forgets this cache has had: taken before settings
        are read for `put_unless_changed`."""
        return self._puts

    def put_unless_changed(self, tenant_id: str, settings: TenantSettings, *, puts: int) -> None:
        """`put` of settings read when the cache had had `puts` puts and
        forgets, if it has had no other since; else `forget`. A change of the
        catalogue (SetActionDescription) committed after the read and
        forgotten before this is not undone by the older catalogue kept for
        `ttl`, and the tenant's next call reads its settings afresh: no read
        begun meanwhile keeps what it read either."""
        if puts == self._puts:
            self.put(tenant_id, settings)
        else:
            self.forget(tenant_id)

    def forget(self, tenant_id: str) -> None:
        """What this process just changed of what the settings carry (the
        catalogue) applies here at once: the tenant's next call reads them
        afresh, and no read begun before the change keeps what it read."""
        self._puts += 1
        self._reading.pop(tenant_id, None)
        self._entries.pop(tenant_id, None)

    def _keep(self, tenant_id: str, settings: TenantSettings) -> None:
        now = self._clock()
        entries = self._entries
        entries[tenant_id] = (now + self._ttl, settings)
        entries.move_to_end(tenant_id)
        # Each kept once and forgotten once: no sweep of every tenant.
        while entries and next(iter(entries.values()))[0] <= now:
            entries.popitem(last=False)


@dataclass(frozen=True, slots=True)
class _Read:
    """A read of a tenant's settings in progress, and its span (traced)."""

    task: asyncio.Task[TenantSettings]
    span: Span | None


def _own(error: BaseException) -> BaseException:
    """A copy of `error` (its type, arguments and attributes) for one caller
    to raise, with a traceback of its own."""
    try:
        own = type(error).__new__(type(error), *error.args)
        own.__dict__.update(vars(error))
    except (TypeError, AttributeError):  # a type that cannot be copied so
        return unexpected_failure()
    return own
