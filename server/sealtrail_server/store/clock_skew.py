"""This process's clock against the database's (docs/operations.md, "Clocks").

The process's clock stamps what it appends (`received_at`), the checkpoints it
signs and the receipts it gives; retention ages events by it. Every process of
a deployment shares the database, so the database's clock is the reference
they are compared with. The health probe reads it in its own statement
(store/database.py `_PROBE`), and `ClockSkew` keeps the latest reading, serves
how far apart the two clocks are as `sealtrail.clock.skew`, and says once when
they drift apart beyond the tolerance and once when they agree again.

A reading stays of use for a while after it is taken: the database's clock is
carried on by this process's monotonic clock, which no step of the wall clock
moves (`ClockReading.database_now`), so a jump of this process's clock since
is seen without asking the database again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, runtime_checkable

import psycopg
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .deployment_jobs import database_time

log = logging.getLogger(__name__)

# How far the two clocks may be apart before it is said, and before a
# retention pass by a clock that far ahead removes nothing: far more than
# hosts kept by NTP drift apart, far less than the day a retention limit
# counts in.
CLOCK_SKEW_TOLERANCE: Final = timedelta(minutes=5)
# Seconds this process's clock may move during a statement reading the
# database's, beyond what the monotonic clock moved, for the two to count as
# read at one time; further, it stepped (NTP, a test's clock moved) and the
# reading is not taken.
STEPPED: Final = 1.0
# Tries at reading both clocks at one time before one is taken as it is.
_READ_TRIES: Final = 3


@runtime_checkable
class FramedClock(Protocol):
    """A clock other than the host's (a test's, which moves when told): it
    says what a time the database's clock read is on its own terms, for the
    two to be compared. The host's clock takes the database's as read."""

    def __call__(self) -> datetime: ...

    def database_time(self, read: datetime) -> datetime: ...


def _host_clock() -> datetime:
    return datetime.now(UTC)


def _as_read(read: datetime) -> datetime:
    return read


def database_time_of(epoch: float) -> datetime:
    """The database's clock as `extract(epoch FROM clock_timestamp())` read it."""
    return datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True, slots=True)
class _Started:
    process: datetime
    monotonic: float


@dataclass(frozen=True, slots=True)
class ClockReading:
    """Both clocks read at once: this process's (`process`, halfway through
    the statement that read the database's) and the database's (`database`,
    on the process clock's terms), at `at` on the monotonic clock (halfway
    too)."""

    process: datetime
    database: datetime
    at: float
    # Half the statement's time on the monotonic clock: how far either way
    # `process` may be from the moment the database read its clock (a
    # round trip, and any stall of this process's loop, are not skew).
    doubt: float = 0.0

    @property
    def skew(self) -> timedelta:
        """How far this process's clock was ahead of the database's (negative: behind)."""
        return self.process - self.database

    def database_now(self, monotonic: float) -> datetime:
        """The database's clock at `monotonic`, carried on from the reading."""
        return self.database + timedelta(seconds=monotonic - self.at)

    def age(self, monotonic: float) -> float:
        return monotonic - self.at


class ClockSkew:
    """The latest reading of both clocks (`note`), said when they are apart
    by more than `tolerance` (again if how far moves by more than it) and when
    they agree again; served as a gauge (`measure`)."""

    def __init__(
        self,
        clock: Callable[[], datetime] | None = None,
        *,
        tolerance: timedelta = CLOCK_SKEW_TOLERANCE,
        bound: timedelta | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`bound`: how far apart the clocks may be before this process
        refuses to serve (`past_bound`); None, never (ADR 0138)."""
        self.clock = clock or _host_clock
        self._framed = self.clock.database_time if isinstance(self.clock, FramedClock) else _as_read
        self._tolerance = tolerance
        self.bound = bound
        self.monotonic = monotonic
        self.latest: ClockReading | None = None
        # How far apart the clocks were when last said beyond the tolerance;
        # None while they agree (or were never read).
        self._said: timedelta | None = None

    def started(self) -> _Started:
        """Both of this process's clocks, as a statement that reads the
        database's starts (`read`)."""
        return _Started(self.clock(), self.monotonic())

    def read(
        self, started: _Started, database_read: datetime, *, checked: bool = True
    ) -> ClockReading | None:
        """A reading of both clocks, of a statement `started` that read the
        database's as `database_read`, just answered; not kept. None (when
        `checked`) if this process's clock stepped during the statement (it
        moved further than the monotonic clock, by more than STEPPED): the
        two were not read at one time."""
        database = self._framed(database_read)
        after, ended = self.clock(), self.monotonic()
        moved = (after - started.process).total_seconds() - (ended - started.monotonic)
        if checked and abs(moved) > STEPPED:
            return None
        return ClockReading(
            started.process + (after - started.process) / 2,
            database,
            started.monotonic + (ended - started.monotonic) / 2,
            (ended - started.monotonic) / 2,
        )

    def note(self, reading: ClockReading) -> None:
        """Keeps `reading` as the latest, saying what changed."""
        self.latest = reading
        self._say(reading)

    def past_bound(self) -> str | None:
        """What is wrong, if this process's clock is now further from the
        database's than `bound`, beyond the doubt of the latest reading
        (carried on to now by the monotonic clock: a step of this process's
        clock since is seen); None if within it, not read yet, or no bound."""
        latest, bound = self.latest, self.bound
        if bound is None or latest is None:
            return None
        skew = self.clock() - latest.database_now(self.monotonic())
        if abs(skew.total_seconds()) - latest.doubt <= bound.total_seconds():
            return None
        how = "ahead of" if skew > timedelta() else "behind"
        return (
            f"this process's clock is {abs(skew.total_seconds()):.1f} s {how} the database's,"
            f" more than SEALTRAIL_MAX_CLOCK_SKEW ({bound.total_seconds():g} s) allows"
            " (docs/operations.md, Clocks)"
        )

    def fresh(self, within: float) -> ClockReading | None:
        """The latest reading if taken within `within` seconds, else None."""
        latest = self.latest
        return latest if latest is not None and latest.age(self.monotonic()) <= within else None

    def measure(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            "sealtrail.clock.skew",
            callbacks=[self._observe],
            unit="s",
            description="How far this process's clock was ahead of the database's at the"
            " health probe's last look (negative: behind).",
        )

    def _observe(self, _options: CallbackOptions) -> list[Observation]:
        latest = self.latest
        return [] if latest is None else [Observation(latest.skew.total_seconds())]

    def _say(self, reading: ClockReading) -> None:
        skew, said = reading.skew, self._said
        if abs(skew) <= self._tolerance:
            if said is not None:
                log.warning(
                    "clock: this process's clock (%s) is back within %s of the database's (%s)",
                    reading.process.isoformat(),
                    self._tolerance,
                    reading.database.isoformat(),
                )
                self._said = None
            return
        if said is not None and abs(skew - said) <= self._tolerance:
            return
        if skew > timedelta():
            how, what = "ahead of", "in the future, and retention passes remove nothing"
        else:
            how, what = "behind", "in the past"
        log.warning(
            "clock: this process's clock (%s) is %s %s the database's (%s), more than the %s"
            " tolerated: the events it appends are stamped that far %s, until it is put right"
            " (docs/operations.md, Clocks)",
            reading.process.isoformat(),
            abs(skew),
            how,
            reading.database.isoformat(),
            self._tolerance,
            what,
        )
        self._said = skew


async def read_clocks(conn: psycopg.AsyncConnection[Any], clocks: ClockSkew) -> ClockReading:
    """Both clocks (`ClockSkew.read`), the database's read on `conn`, one
    statement a try: read again if this process's clock stepped meanwhile,
    and taken as it is at the last try."""
    for attempt in range(_READ_TRIES):
        started = clocks.started()
        reading = clocks.read(started, await database_time(conn), checked=attempt < _READ_TRIES - 1)
        if reading is not None:
            return reading
    raise AssertionError("unreachable: the last try is not checked")
