"""The purge job: passes over every tenant whose retention policy removes
anything (each tenant's part in `tenant_pass.py`: events removed in batches,
each one's leaf hash kept as a tombstone so proofs and VerifyLog still reach
the same roots, ADR 0014), and records each tenant's purge. Each pass also
creates the months of event partitions ahead, and drops past months left
empty (ADR 0015).

A deployment passes once every `interval` seconds, whatever its number of
processes (ADR 0048): each process looks a minute after it starts (so that
processes replaced more often than the interval still purge), and passes if
the deployment's last pass ended an interval ago or more (`deployment_jobs`,
by the database's clock), else looks again when it will have. A session-level
advisory lock on the owner's connection lets one process run the job at a
time. Every process also keeps up, at least hourly, purging on or off: it
creates the months ahead and records the purges a pass could not.

A tenant's purge is recorded in its own log as a `retention.purged` event
with counts and seq ranges, after the batches commit. Until then its summary
is kept beside the batches, in their transactions (`retention_pending_purges`,
one row a tenant): the upkeep, and each pass first and again before it ends,
records what a crashed or refused record left, under the same idempotency
key, so every removal is recorded exactly once; a tenant whose summary still
cannot be recorded is not purged further until it is.

A pass purges by this process's clock, and a removal is for good: it first
reads the database's clock, and while this process's runs ahead of it by
more than CLOCK_AHEAD_TOLERANCE (a VM resumed with a stale offset, a wrong
NTP server) it removes nothing, says so once, and leaves the pass to the next
look (or another process): docs/retention.md, "A clock ahead". It compares
them again before each step that removes anything (a batch, the origins
forgotten, the months retired), by a reading at most CLOCK_READING_FRESH old
(the health probe's, or its own), carried on by the monotonic clock: a clock
that jumps ahead during a long pass stops its removals at the next step."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar

import psycopg
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from psycopg.pq import TransactionStatus

from ..domain.errors import Aborted, ResourceExhausted, SealtrailError, Unavailable
from ..domain.purge_summaries import SummarySeal
from ..measures import no_meter
from ..stopping import end_tasks
from ..store.changes import ERASURE_SUBJECT, share_subjects
from ..store.clock_skew import CLOCK_SKEW_TOLERANCE, ClockReading, ClockSkew, read_clocks
from ..store.db_errors import named
from ..store.deployment_jobs import note_ended, seconds_since_ended
from ..store.job_session import job_session
from ..store.partitions import create_ahead, retire_past_months
from ..store.retention import (
    PendingPurge,
    forget_origins,
    forget_pending_purge,
    locked_policy,
    pending_purges,
    tenants_with_changes_due,
    tenants_with_expiry,
)
from .pending_changes import RecordApplied, apply_change
from .tenant_pass import TenantPurge, purge_tenant

log = logging.getLogger(__name__)

# How recording a purge went: recorded; to try again later (the appender
# refused it for now; or its tenant was erased since, its summary with it); or
# never, as its summary stands.
_Outcome = Literal["recorded", "later", "never"]
# A summary left to record as it stands: tenant, purge and seal (the service's
# seal changes with the contents; one put right in place bears a new one).
_Identity = tuple[str, str, bytes | None]


_T = TypeVar("_T")

# pg_advisory_lock key of the purge job ("sealpurg" in ASCII).
LOCK_KEY: Final = 0x7365616C70757267
DEFAULT_BATCH_EVENTS: Final = 5000
# A selection with no mark (new to the policy) is read from the tenant's first
# event, this many batches' worth of seqs a batch at most: where few events
# match (a rare category), a batch limited by its matches alone would read the
# tenant's whole log while holding the policy row a legal hold waits for.
SCAN_WINDOW_BATCHES: Final = 50
# Seconds between a process's upkeeps (the months ahead; purges left to
# record) at most, passes due or not, purging on or off.
MONTHS_AHEAD_INTERVAL: Final = 3600.0
# Seconds from a process's start to its first look at whether a pass is due
# (at most the interval).
FIRST_PASS_AFTER: Final = 60.0
# Seconds between looks while another process holds the job (passing, or in
# its upkeep), at most the interval (but LOOK_AGAIN_AT_LEAST).
BUSY_LOOK_AGAIN: Final = 300.0
# Seconds at least before a look that failed (the database unreachable) or
# found the job held is made again, however short the interval: a connection
# attempt a minute per process at most, not one an interval.
LOOK_AGAIN_AT_LEAST: Final = 60.0
# How far the database's clock may have gone back since the last pass ended
# (an NTP step, a failover to a standby) for that pass still to count as just
# ended; further back, a pass is due.
CLOCK_STEPPED_BACK: Final = 3600.0
# How far this process's clock may be ahead of the database's for a pass to
# purge: far more than hosts kept by NTP drift apart, far less than the day a
# retention limit counts in. Further ahead, a pass removes nothing.
CLOCK_AHEAD_TOLERANCE: Final = CLOCK_SKEW_TOLERANCE
# Seconds a reading of both clocks (the health probe's, every second or so,
# or the pass's own) serves the check before each removing step; an older
# one is read again on the job's connection.
CLOCK_READING_FRESH: Final = 30.0
# Its name in `deployment_jobs`.
PURGE_JOB: Final = "retention purge"

# Records a tenant's purge in its log (api/audited.record_event, wired in app.py).
RecordPurge = Callable[[TenantPurge], Awaitable[None]]


class Purger:
    def __init__(
        self,
        owner_url: str,
        *,
        record: RecordPurge,
        seal: SummarySeal,
        interval: float = 86400.0,
        first_pass_after: float = FIRST_PASS_AFTER,
        batch_events: int = DEFAULT_BATCH_EVENTS,
        scan_window: int | None = None,  # seqs; None: SCAN_WINDOW_BATCHES batches
        min_days: int = 0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock_skew: ClockSkew | None = None,
        meter: Meter | None = None,
        record_applied: RecordApplied | None = None,
    ) -> None:
        """`min_days`: the deployment's retention floor, which the purge keeps
        to whatever a policy stored before it says. `record_applied`: records
        a pending policy change taking effect, which each pass makes so of
        those due before it purges (ADR 0163); None: none are. `clock_skew`: the health
        probe's readings of both clocks, of `clock` (else the pass reads
        them itself). `meter`: events purged,
        faults met, when this process last ended a pass (docs/metrics.md)."""
        self._owner_url = owner_url
        self.record = record  # how a purge is recorded in its tenant's log
        self._seal = seal  # of the summaries kept until then
        self._interval = interval
        self._first_pass_after = first_pass_after
        if batch_events < 1 or (scan_window is not None and scan_window < 1):
            raise ValueError("a purge's batches and windows must hold an event at least")
        self._batch_events = batch_events
        self._scan_window = scan_window or batch_events * SCAN_WINDOW_BATCHES
        self._min_days = min_days
        self._record_applied = record_applied
        self._clock = clock
        self._clocks = clock_skew or ClockSkew(clock)
        # The pass's own last reading of both clocks.
        self._reading: ClockReading | None = None
        # Whether the pass under way stopped removing for a clock ahead.
        self._stopped = False
        # How far this process's clock was ahead of the database's at its last
        # pass's look at both (negative: behind), for the gauge; and, while
        # passes remove nothing for it, how far it was when last said.
        self._ahead: timedelta | None = None
        self._ahead_said: timedelta | None = None
        self._task: asyncio.Task[None] | None = None
        # Summaries that will never be recorded as they stand (not this
        # service's, unreadable, refused), said at ERROR already: an upkeep
        # passes over them without a word.
        self._stuck: set[_Identity] = set()
        # When this process last kept up (the event loop's clock).
        self._kept_up_at = -math.inf
        # When the deployment's last pass ended, as this process last saw
        # (Unix time, for the gauge): its own, or any process's it looked up.
        self._pass_ended_at: float | None = None
        meter = meter or no_meter()
        self._purged_events = meter.create_counter(
            "sealtrail.retention.events.purged",
            unit="{event}",
            description="Events whose payloads this process's passes removed.",
        )
        self._faults = meter.create_counter(
            "sealtrail.retention.failures",
            unit="{failure}",
            description="Passes, upkeeps and steps of them that failed (each logged).",
        )
        self._faults.add(0)  # there before the first: docs/metrics.md's alert
        meter.create_observable_gauge(
            "sealtrail.retention.last_pass.time",
            callbacks=[self._observe_pass_ended],
            unit="s",
            description="When the deployment's last retention pass ended (Unix time).",
        )
        meter.create_observable_gauge(
            "sealtrail.retention.clock.ahead",
            callbacks=[self._observe_ahead],
            unit="s",
            description="How far this process's clock was ahead of the database's at its"
            " last retention pass (negative: behind); past"
            f" {CLOCK_AHEAD_TOLERANCE.total_seconds():.0f}, passes remove nothing.",
        )

    def _observe_pass_ended(self, _options: CallbackOptions) -> list[Observation]:
        ended = self._pass_ended_at
        return [] if ended is None else [Observation(ended)]

    def _observe_ahead(self, _options: CallbackOptions) -> list[Observation]:
        ahead = self._ahead
        return [] if ahead is None else [Observation(ahead.total_seconds())]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sealtrail-purger")

    async def stop(self) -> None:
        await end_tasks([self._task])
        self._task = None

    async def _run(self) -> None:
        # The upkeep (the months ahead, purges left unrecorded) runs at least
        # every MONTHS_AHEAD_INTERVAL, with purging off (interval 0) or passes
        # further apart: without the months, new events would land in the
        # default partition, and their month could never be created.
        clock = asyncio.get_running_loop().time
        next_look = (
            clock() + min(self._first_pass_after, self._interval)
            if self._interval > 0
            else math.inf  # purging off
        )
        next_upkeep = clock() + MONTHS_AHEAD_INTERVAL
        while True:
            await asyncio.sleep(max(0.0, min(next_look, next_upkeep) - clock()))
            looking = clock() >= next_look
            if not looking and clock() < next_upkeep:  # woken a hair early
                continue
            what, kept_up, busy = ("pass" if looking else "upkeep"), self._kept_up_at, False
            # After a failure (the database unreachable), within the hour.
            again = (
                self._look_again_within(MONTHS_AHEAD_INTERVAL) if looking else MONTHS_AHEAD_INTERVAL
            )
            try:
                if looking:
                    again, busy = await self._look()
                elif not await self.keep_up():
                    again = BUSY_LOOK_AGAIN
            except (psycopg.Error, OSError, SealtrailError) as error:
                self._faults.add(1)
                log.warning(
                    "retention: %s failed (%s); retrying within the hour", what, named(error)
                )
            except Exception:  # the job must outlive any one pass
                self._faults.add(1)
                log.exception("retention: %s failed; retrying within the hour", what)
            if looking:
                next_look = clock() + again
            if self._kept_up_at != kept_up:  # by a look (a pass, or one not due) or not
                next_upkeep = self._kept_up_at + MONTHS_AHEAD_INTERVAL
            elif not looking:
                next_upkeep = clock() + again
            elif busy and next_upkeep <= clock():
                # The look found the job held: an upkeep now would find it so too.
                next_upkeep = clock() + BUSY_LOOK_AGAIN

    async def keep_up(self) -> bool:
        """What every process does at least hourly, a pass due or not: the
        months ahead created, and the purges a pass could not record (the
        appender refused it, a crash) recorded; until they are, the tenant's
        complete bundles do not verify offline. False if another process
        holds the job (its pass, or its own upkeep)."""
        async with self._job() as conn:
            if conn is None:
                return False
            await self._keep_up(conn)
            return True

    async def run_when_due(self) -> float:
        """A pass, if the deployment's last one (by any process) ended an
        interval ago or more, else the upkeep; the seconds until this process
        looks again."""
        again, _ = await self._look()
        return again

    async def _look(self) -> tuple[float, bool]:
        """`run_when_due`, and whether another process held the job."""
        clock = asyncio.get_running_loop().time
        async with self._job() as conn:
            if conn is None:  # another process's pass ends, and is noted, first
                return self._look_again_within(BUSY_LOOK_AGAIN), True
            since = await seconds_since_ended(conn, PURGE_JOB)
            if since is not None:  # by any process: every one reports the deployment's
                self._pass_ended_at = time.time() - max(since, 0.0)
            if since is not None and -CLOCK_STEPPED_BACK <= since < self._interval:
                # Not due; a clock gone back a little leaves the pass as just ended.
                until_due, started = self._interval - max(since, 0.0), clock()
                await self._keep_up(conn)
                return max(0.0, until_due - (clock() - started)), False
            await self._pass(conn)
        if self._ahead_said is not None:  # a pass that removed nothing: soon again
            return self._look_again_within(BUSY_LOOK_AGAIN), False
        return self._interval, False

    def _look_again_within(self, longest: float) -> float:
        """When to look again after a look that failed or found the job held:
        an interval later, but a minute at least and `longest` at most."""
        return min(max(self._interval, LOOK_AGAIN_AT_LEAST), longest)

    async def run_once(self) -> list[TenantPurge]:
        """One pass over every tenant whose policy removes anything, due or
        not; nothing if another process holds the job's lock, and no removal
        if this process's clock is ahead of the database's (the upkeep's
        records of earlier passes' purges only)."""
        async with self._job() as conn:
            return [] if conn is None else await self._pass(conn)

    async def _keep_up(
        self, conn: psycopg.AsyncConnection[Any], *, in_pass: bool = False
    ) -> tuple[list[TenantPurge], set[str]]:
        """The upkeep, holding the job's lock on `conn` (also a pass's first
        step): see `_record_left_over` for what it returns."""
        await self._contained(
            conn, "creating the months ahead", create_ahead(conn, now=self._clock())
        )
        left_over = await self._record_left_over(conn, in_pass=in_pass)
        self._kept_up_at = asyncio.get_running_loop().time()
        return left_over

    async def _record_left_over(
        self, conn: psycopg.AsyncConnection[Any], *, in_pass: bool
    ) -> tuple[list[TenantPurge], set[str]]:
        """The purges passes left unrecorded, recorded (holding the job's lock
        on `conn`), and the tenants whose summary still is not (not to be
        purged further: its row would be replaced). A summary that will never
        be recorded as it stands (not this service's, unreadable, refused for
        good) is said at ERROR when this process first meets it and at each
        pass, not at every upkeep."""
        done, unrecorded = [], set()
        pendings = await pending_purges(conn)
        identities = [(p.tenant_id, p.purge_id, p.mac) for p in pendings]
        self._stuck &= set(identities)  # gone, or put right
        for pending, identity in zip(pendings, identities, strict=True):
            tenant_id = pending.tenant_id
            if identity in self._stuck and not in_pass:
                unrecorded.add(tenant_id)
                continue
            if pending.sealed_by(self._seal):
                outcome, left = await self._record_left(conn, pending)
            else:  # not this service's: left for an operator to look at
                log.error(
                    "retention: the summary of a purge of %s left to record (%s) does not"
                    " bear the service's seal: not recorded, and the tenant not purged"
                    " while it is there. Written behind the service's back, or by an"
                    " earlier release (docs/retention.md)",
                    tenant_id,
                    pending.purge_id,
                )
                outcome, left = "never", None
            if left is not None and outcome == "recorded":
                done.append(left)
                continue
            unrecorded.add(tenant_id)
            if outcome == "never":
                self._stuck.add(identity)
            else:
                self._stuck.discard(identity)
        return done, unrecorded

    async def _pass(self, conn: psycopg.AsyncConnection[Any]) -> list[TenantPurge]:
        """A pass, holding the job's lock on `conn`; its end noted for every
        process of the deployment; or, if this process's clock is ahead of the
        database's, the upkeep alone, its end not noted."""
        now = self._clock()
        if await self._clock_ahead(conn, now):
            return (await self._keep_up(conn))[0]
        self._stopped = False
        done, unrecorded = await self._keep_up(conn, in_pass=True)
        await self._apply_changes_due(conn, now)
        for tenant_id in await tenants_with_expiry(conn):
            if not await self._may_remove(conn, now):
                break
            # Apart: a fault in either leaves the other to do.
            await self._contained(
                conn,
                f"forgetting what alert rules learned of {tenant_id}",
                self._forget_origins(conn, tenant_id),
            )
            if tenant_id in unrecorded:
                continue
            purged = await self._contained(
                conn, f"the pass over {tenant_id}", self._purge_recorded(conn, tenant_id)
            )
            if purged is not None:
                done.append(purged)
            if self._stopped:
                break
        if self._stopped or not await self._may_remove(conn, now):
            # A clock gone ahead during the pass: it ends here, not noted as
            # ended, left for a process whose clock is right (or the next look).
            return done
        retired = await self._contained(
            conn, "dropping emptied months", retire_past_months(conn, now=now)
        )
        for name, kept in (retired or {}).items():
            log.info(
                "retention: dropped the partition %s, moving the %d records kept for good"
                " it held to events_default",
                name,
                kept,
            )
        await note_ended(conn, PURGE_JOB)
        self._pass_ended_at = time.time()
        # What could not be recorded during the pass (the appender refused it)
        # is tried again before its end, not an upkeep after it.
        retried = None
        try:
            retried = await self._contained(
                conn,
                "recording what the pass could not",
                self._record_left_over(conn, in_pass=False),
            )
        except Exception as error:
            if not conn.closed:  # left in a transaction: rolled back as the job ends
                raise
            log.warning(  # the connection was lost; the pass has ended all the same
                "retention: the pass ended, but recording what it could not failed (%s);"
                " the upkeep tries again within the hour",
                named(error),
                exc_info=not isinstance(error, psycopg.OperationalError),
            )
        return [*done, *(retried[0] if retried else [])]

    async def _clock_ahead(self, conn: psycopg.AsyncConnection[Any], now: datetime) -> bool:
        """Whether this process's clock (`now`) is ahead of the database's,
        read now on `conn`, by more than CLOCK_AHEAD_TOLERANCE (`_judged_ahead`)."""
        self._reading = await read_clocks(conn, self._clocks)
        return self._judged_ahead(now, self._reading)

    async def _may_remove(self, conn: psycopg.AsyncConnection[Any], now: datetime) -> bool:
        """Whether a step of the pass under way, by `now`, may remove what it
        would: not if this process's clock (`now`, or as it reads since, if
        later) is ahead of the database's by more than the tolerance, by the
        freshest reading of both (the probe's or the pass's own) if at most
        CLOCK_READING_FRESH old, else one read now on `conn`. Once refused,
        refused for the rest of the pass (`_stopped`)."""
        if self._stopped:
            return False
        monotonic = self._clocks.monotonic()
        fresh = [
            r
            for r in (self._reading, self._clocks.latest)
            if r is not None and r.age(monotonic) <= CLOCK_READING_FRESH
        ]
        if fresh:
            reading = max(fresh, key=lambda r: r.at)
        else:
            reading = self._reading = await read_clocks(conn, self._clocks)
        self._stopped = self._judged_ahead(max(now, self._clock()), reading)
        return not self._stopped

    def _judged_ahead(self, now: datetime, reading: ClockReading) -> bool:
        """Whether this process's clock (`now`) is ahead of the database's (as
        `reading` carries it on to now) by more than CLOCK_AHEAD_TOLERANCE: a
        pass by it would remove events that much before their time. Said when
        it starts, when how far moves by more than the tolerance, and when it
        ends; not at every pass."""
        database = reading.database_now(self._clocks.monotonic())
        self._ahead = ahead = now - database
        said = self._ahead_said
        if ahead <= CLOCK_AHEAD_TOLERANCE:
            if said is not None:
                log.info(
                    "retention: this process's clock (%s) is back within %s of the database's"
                    " (%s): passes purge again",
                    now.isoformat(),
                    CLOCK_AHEAD_TOLERANCE,
                    database.isoformat(),
                )
                self._ahead_said = None
            return False
        if said is None or abs(ahead - said) > CLOCK_AHEAD_TOLERANCE:
            log.warning(
                "retention: this process's clock (%s) is %s ahead of the database's (%s),"
                " more than the %s tolerated: its passes purge nothing, which would remove"
                " events that much early, until it is put right (docs/retention.md)",
                now.isoformat(),
                ahead,
                database.isoformat(),
                CLOCK_AHEAD_TOLERANCE,
            )
            self._ahead_said = ahead
        return True

    async def _contained(
        self, conn: psycopg.AsyncConnection[Any], what: str, step: Awaitable[_T]
    ) -> _T | None:
        """`step` of the pass, or None if it failed: one tenant's fault (its
        batch rolled back; what earlier batches removed is noted, to record)
        stops no other's purge, whether the database refused a statement or a
        flaw of this code met its data; nor does a fault of the months'
        upkeep. A fault that broke the connection, or left it in a transaction
        (its rollback failed: the next batches would be savepoints of it, and
        the purges recorded of them might never commit), ends the pass; the
        next starts on a new connection."""
        try:
            return await step
        except Exception:
            if conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
                raise
            self._faults.add(1)
            log.exception("retention: %s failed; going on", what)
            return None

    async def _record_left(
        self, conn: psycopg.AsyncConnection[Any], pending: PendingPurge
    ) -> tuple[_Outcome, TenantPurge | None]:
        """The purge a pass left unrecorded, recorded now if it can be. One
        tenant's fault stops no other's (see `_contained`): a statement the
        database refused is tried again later; a summary this code cannot
        read, never as it stands."""
        try:
            left = TenantPurge.from_summary(pending.tenant_id, pending.purge_id, pending.summary)
            log.warning("retention: recording the purge of %s a pass left", pending.tenant_id)
            return await self._recorded(conn, left), left
        except Exception as error:
            if conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
                raise
            self._faults.add(1)
            log.exception("retention: the pass over %s failed; going on", pending.tenant_id)
            return ("later" if isinstance(error, psycopg.Error) else "never"), None

    async def _purge_recorded(
        self, conn: psycopg.AsyncConnection[Any], tenant_id: str
    ) -> TenantPurge | None:
        """The tenant's expired events purged; the purge if it removed
        anything and was recorded."""
        purged = await purge_tenant(
            conn,
            tenant_id,
            seal=self._seal,
            batch_events=self._batch_events,
            scan_window=self._scan_window,
            min_days=self._min_days,
            clock=self._clock,
            may_remove=lambda now: self._may_remove(conn, now),
            on_batch=self._purged_events.add,  # each batch as it commits
        )
        if not purged.count:
            return None
        log.info(
            "retention: purged %d events of %s (seq %d..%d)",
            purged.count,
            tenant_id,
            purged.first_seq,
            purged.last_seq,
        )
        return purged if await self._recorded(conn, purged) == "recorded" else None

    def _job(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any] | None]:
        """The owner's connection holding the job's lock, or None if another
        process holds it. Its session ends itself if this process stops
        answering (store/job_session), so a batch's lock on a policy row, which
        a legal hold being placed waits for, goes with it."""
        return job_session(
            self._owner_url,
            lock_key=LOCK_KEY,
            application_name="sealtrail-retention",
            job="retention purge",
        )

    async def _recorded(self, conn: psycopg.AsyncConnection[Any], purged: TenantPurge) -> _Outcome:
        """Record the purge in its tenant's log, then let go of its summary;
        else the summary is kept, to try again later (the appender refused it
        for now), or never as it stands: then said no more until a pass (its
        summary as this service sealed it joins the quiet ones)."""
        outcome = await self._record(conn, purged)
        if outcome == "never":
            seal = self._seal.seal(purged.tenant_id, purged.purge_id, purged.details())
            self._stuck.add((purged.tenant_id, purged.purge_id, seal))
        return outcome

    async def _record(self, conn: psycopg.AsyncConnection[Any], purged: TenantPurge) -> _Outcome:
        try:
            await self.record(purged)
        except SealtrailError as error:
            if error.reason == "TENANT_ERASED":
                # Erased since its batches: the erasure removed its summary
                # with the rest of its rows, and its log will take nothing.
                log.info(
                    "retention: %s was erased before its purge was recorded; nothing is"
                    " left to record",
                    purged.tenant_id,
                )
                return "later"
            if error.reason == "IDEMPOTENCY_KEY_REUSED":
                # Recorded already, with other counts: not the summary this
                # service last wrote of that purge (an earlier version copied
                # back, helper-87). Kept for an operator; VerifyLog ignores it.
                log.error(
                    "retention: the summary of purge %s of %s left to record differs from its"
                    " record in the log: not this service's last; not recorded, and the"
                    " tenant not purged while it is there",
                    purged.purge_id,
                    purged.tenant_id,
                )
                return "never"
            if isinstance(error, (Unavailable, ResourceExhausted, Aborted)):
                log.warning(
                    "retention: cannot record the purge of %s yet: %s", purged.tenant_id, error
                )
                return "later"
            log.error(
                "retention: the log refused the purge of %s (%s): not recorded, and the tenant"
                " not purged while its summary is there (docs/retention.md)",
                purged.tenant_id,
                error,
            )
            return "never"
        await forget_pending_purge(conn, purged.tenant_id, purged.purge_id)
        return "recorded"

    async def _apply_changes_due(self, conn: psycopg.AsyncConnection[Any], now: datetime) -> None:
        """The pending policy changes due by `now` made the policies in force
        and recorded, each tenant's apart (one's fault stops no other's, nor
        the pass: its change waits for the next)."""
        if self._record_applied is None:
            return
        for tenant_id in await tenants_with_changes_due(conn, now=now):
            await self._contained(
                conn,
                f"applying the retention change of {tenant_id}",
                apply_change(
                    conn, tenant_id, now=now, min_days=self._min_days, record=self._record_applied
                ),
            )

    async def _forget_origins(self, conn: psycopg.AsyncConnection[Any], tenant_id: str) -> None:
        """What alert rules learned of the tenant's actors (an address, a
        country) and have not seen for the default retention is personal data
        kept no longer than the events: forgotten, unless a hold is on or the
        default keeps everything. A day is added to the retention: a last
        sighting moves at most once a day, so one seen within the retention is
        never forgotten."""
        async with conn.transaction():
            await share_subjects(conn, [tenant_id], ERASURE_SUBJECT)
            stored = await locked_policy(conn, tenant_id)
            limits = stored.limits(min_days=self._min_days)
            default_days = stored.policy.within(limits).default_days
            if stored.pending is not None:  # the longer of both, as the events' (ADR 0163)
                waiting = stored.pending.policy.within(limits).default_days
                default_days = 0 if not (default_days and waiting) else max(default_days, waiting)
            if stored.hold.on or not default_days:
                return
            cutoff = self._clock() - timedelta(days=default_days + 1)
            forgotten = await forget_origins(conn, tenant_id, seen_before=cutoff)
        if forgotten:
            log.info("retention: forgot %d origins alert rules learned of %s", forgotten, tenant_id)
