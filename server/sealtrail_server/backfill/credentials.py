"""The credential backfill (ADR 0143): the credential columns of the events
appended before migration 0056 (or by an older release's process during a
rolling upgrade), whose `credential_kind` is NULL, written from their
records, so that a count by credential and the `credential_id` filter read
columns, not records (ADR 0142); then, as the same job, the `duration_ms`
column of the events appended before migration 0064 whose record has a
duration (ADR 0149), so that a measured count reads the column.

One process of a deployment runs it at a time, as the purge job
(`retention/purger.py`): a session-level advisory lock on the owner's
connection, taken without a wait; a process that finds it held looks again
later. The job walks the tenants with unread rows (events_credential_unread)
and each one's rows in seq order, in batches of `batch_rows` of a short
transaction each, waiting at most LOCK_TIMEOUT for a row another
transaction holds, and pausing `pause` seconds between batches so that the
appender's writes are not starved. A tenant an erasure holds is skipped (its
rows are going); a batch that waited out its lock (a purge's batch holds
the rows) is tried again at the next look. Restartable: what is written is
written for good, and a run starts again from what is still NULL. Once none
is, it looks again hourly (an older release's process may still append).

A duration no double holds (`1e400` in a record written straight into the
database: no API call writes one) is found by its batch before it writes
(a check in SQL, not a failed UPDATE, so a restarted process finds it as
the first did): the row is left unwritten (read as no duration by the
counts, as its NULL column is), said once at WARNING by each process that
meets it and counted (`sealtrail.backfill.durations.unconvertible`), and
passed over by this process's later batches; it leaves nothing for the next
look to do."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from opentelemetry.metrics import Counter, Meter

from ..measures import no_meter
from ..stopping import end_tasks
from ..store.credential_backfill import (
    CREDENTIALS,
    DURATIONS,
    Backfilled,
    Batch,
    any_unread,
    backfill_batch,
    next_tenant,
)
from ..store.db_errors import named
from ..store.job_session import job_session

log = logging.getLogger(__name__)

# pg_advisory_lock key of the credential backfill ("sealcred" in ASCII).
LOCK_KEY: Final = 0x7365616C63726564
DEFAULT_BATCH_ROWS: Final = 1000
# Seconds between two batches: a batch of 1,000 rows takes some tens of
# milliseconds; the pause leaves the appender the database most of the time.
DEFAULT_PAUSE: Final = 0.2
# How long a batch waits for a row another transaction holds (a purge's
# batch, an erasure's delete), as the partitions' statements do.
LOCK_TIMEOUT: Final = "200ms"
# Seconds from a process's start to its first look.
FIRST_LOOK_AFTER: Final = 60.0
# Seconds before the next look: after a run that left nothing unread; after
# one that left rows (a tenant held by a purge or an erasure, a failure) or
# found the job held by another process.
LOOK_AGAIN: Final = 3600.0
LOOK_AGAIN_BUSY: Final = 300.0
# The failures metric's attribute naming the pass that failed: the
# credentials', the durations', or the job's own (its session and lock).
PASS: Final = "sealtrail.backfill.pass"
JOB: Final = "job"
PASSES: Final = (JOB, CREDENTIALS.pass_name, DURATIONS.pass_name)


@dataclass(frozen=True, slots=True)
class Run:
    """What one run did: rows written, and whether any row was left unread
    (a tenant skipped, or appended meanwhile by an older release)."""

    written: int
    left: bool


class CredentialBackfill:
    def __init__(
        self,
        owner_url: str,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        pause: float = DEFAULT_PAUSE,
        first_look_after: float = FIRST_LOOK_AFTER,
        lock_timeout: str = LOCK_TIMEOUT,
        meter: Meter | None = None,
    ) -> None:
        """`meter`: rows written, failures (docs/metrics.md)."""
        if batch_rows < 1 or pause < 0:
            raise ValueError("a backfill batch holds a row at least, and pauses 0 s or more")
        self._owner_url = owner_url
        self._batch_rows = batch_rows
        self._pause = pause
        self._first_look_after = first_look_after
        self._lock_timeout = lock_timeout
        self._task: asyncio.Task[None] | None = None
        meter = meter or no_meter()
        self._written = meter.create_counter(
            "sealtrail.backfill.credentials.rows",
            unit="{event}",
            description="Events whose credential columns this process's backfill wrote"
            " from their records.",
        )
        self._durations = meter.create_counter(
            "sealtrail.backfill.durations.rows",
            unit="{event}",
            description="Events whose duration_ms column this process's backfill wrote"
            " from their records.",
        )
        self._unconvertible_rows = meter.create_counter(
            "sealtrail.backfill.durations.unconvertible",
            unit="{event}",
            description="Events whose record's duration no double holds, left unwritten by"
            " this process's backfill (each logged once).",
        )
        self._unconvertible_rows.add(0)
        self._faults = meter.create_counter(
            "sealtrail.backfill.credentials.failures",
            unit="{failure}",
            description="Backfill runs and batches that failed (each logged), by pass.",
        )
        for pass_name in PASSES:
            self._faults.add(0, {PASS: pass_name})
        # The pass a run is in (for a run's failure), and the rows found
        # unconvertible, by tenant: skipped by later batches, said once.
        self._pass = JOB
        self._unconvertible: dict[str, set[int]] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sealtrail-credential-backfill")

    async def stop(self) -> None:
        await end_tasks([self._task])
        self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self._first_look_after)
        while True:
            again = LOOK_AGAIN_BUSY
            self._pass = JOB
            try:
                run = await self.run_once()
                if run is not None and not run.left:
                    again = LOOK_AGAIN
            except (psycopg.Error, OSError) as error:
                self._faults.add(1, {PASS: self._pass})
                log.warning(
                    "credential backfill: a run failed in its %s pass (%s); trying again in %.0f s",
                    self._pass,
                    named(error),
                    again,
                )
            except Exception:  # the job must outlive any one run
                self._faults.add(1, {PASS: self._pass})
                log.exception(
                    "credential backfill: a run failed in its %s pass; trying again in %.0f s",
                    self._pass,
                    again,
                )
            await asyncio.sleep(again)

    async def run_once(self) -> Run | None:
        """Every unread row written, tenant by tenant, batch by batch; None if
        another process holds the job."""
        async with self._job() as conn:
            if conn is None:
                return None
            return await self._run_tenants(conn)

    async def _run_tenants(self, conn: psycopg.AsyncConnection[Any]) -> Run:
        """The credential columns, then the durations (migration 0064, ADR
        0149): both written by the one job, under its one lock."""
        written, left = 0, False
        for columns, counter in ((CREDENTIALS, self._written), (DURATIONS, self._durations)):
            self._pass = columns.pass_name
            run = await self._run_columns(conn, columns, counter)
            written += run.written
            left = left or run.left
        return Run(written, left)

    async def _run_columns(
        self, conn: psycopg.AsyncConnection[Any], columns: Backfilled, counter: Counter
    ) -> Run:
        loop = asyncio.get_running_loop()
        written, skipped, tenant = 0, False, ""
        started = loop.time()
        while (found := await next_tenant(conn, tenant, columns)) is not None:
            tenant = found
            n, done = await self._tenant(conn, tenant, columns, counter)
            written += n
            skipped = skipped or not done
        known = [(t, seq) for t, seqs in self._unconvertible.items() for seq in seqs]
        left = skipped or await any_unread(conn, columns, frozenset(known))
        if written:
            log.info(
                "credential backfill: wrote the %s of %d events from their records in %.1f s%s",
                columns.said,
                written,
                loop.time() - started,
                "; some are left for the next run" if left else "; none is left",
            )
        return Run(written, left)

    async def _tenant(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant_id: str,
        columns: Backfilled,
        counter: Counter,
    ) -> tuple[int, bool]:
        """The tenant's unread rows written: how many, and whether all were
        (not if an erasure holds the tenant, or a batch waited out its lock
        or failed: left for the next run)."""
        written, after = 0, -1
        while True:
            try:
                batch = await self._batch(conn, tenant_id, after, columns)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as error:
                log.info(
                    "credential backfill: %s's rows are held (%s); left for the next run",
                    tenant_id,
                    named(error),
                )
                return written, False
            except psycopg.Error as error:
                if conn.broken:
                    raise
                self._faults.add(1, {PASS: columns.pass_name})
                log.warning(
                    "credential backfill: %s pass: a batch of %s failed (%s); left for the"
                    " next run",
                    columns.pass_name,
                    tenant_id,
                    named(error),
                )
                return written, False
            if batch is None:
                log.info("credential backfill: %s is being erased; skipped", tenant_id)
                return written, False
            if batch.last_seq is None:
                return written, True
            written += batch.written
            counter.add(batch.written)
            self._set_aside(tenant_id, batch.unconvertible)
            after = batch.last_seq
            await asyncio.sleep(self._pause)

    async def _batch(
        self, conn: psycopg.AsyncConnection[Any], tenant_id: str, after: int, columns: Backfilled
    ) -> Batch | None:
        """The tenant's next batch past `after`, the rows found unconvertible
        before passed over."""
        return await backfill_batch(
            conn,
            tenant_id,
            after=after,
            rows=self._batch_rows,
            lock_timeout=self._lock_timeout,
            columns=columns,
            skip=self._unconvertible.get(tenant_id, ()),
        )

    def _set_aside(self, tenant_id: str, seqs: tuple[int, ...]) -> None:
        """Rows whose value will not convert: said once, counted, and passed
        over by this process's later batches."""
        for seq in seqs:
            log.warning(
                "credential backfill: the duration of %s's event %d will not convert to a"
                " double (its record, written straight into the database, holds a number"
                " no double holds); left unwritten, its record read instead",
                tenant_id,
                seq,
            )
            self._unconvertible_rows.add(1)
            self._unconvertible.setdefault(tenant_id, set()).add(seq)

    def _job(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any] | None]:
        """The owner's connection holding the job's lock, or None if another
        process holds it."""
        return job_session(
            self._owner_url,
            lock_key=LOCK_KEY,
            application_name="sealtrail-credential-backfill",
            job="credential backfill",
        )
