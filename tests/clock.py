"""A clock for servers under test: it starts at the real time and moves only
when the test moves it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class Clock:
    """A clock the test moves forward (or back); it starts at the real time.

    `advance` moves the whole world the server lives in, its database's
    clock with it: what the database reads (`clock_timestamp()`, real) is
    seen shifted as far (`database_time`, what the purge job compares its
    clock with). `run_ahead` moves this process's clock alone, as a host
    whose clock is wrong would (docs/retention.md)."""

    def __init__(self) -> None:
        self._now = datetime.now(UTC)
        # How far the world (the database's clock with it) was moved.
        self._world_moved = timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, days: float = 0, *, seconds: float = 0) -> None:
        with self._lock:
            self._now += timedelta(days=days, seconds=seconds)
            self._world_moved += timedelta(days=days, seconds=seconds)

    def run_ahead(self, days: float = 0, *, seconds: float = 0) -> None:
        """This process's clock moved (back, if negative), the database's not."""
        with self._lock:
            self._now += timedelta(days=days, seconds=seconds)

    def database_time(self, read: datetime) -> datetime:
        """What the database's clock says, on this clock's terms, given what it
        read (its real clock, which moves on in real time as this one does
        not: a pass sees its process's clock behind by as long as the test
        ran, on the safe side)."""
        with self._lock:
            return read + self._world_moved


class OffsetClock:
    """The real time, off by as much as the test says (`off_by`): a host
    whose clock runs ahead of the database's (behind, if negative). Unlike
    `Clock` it moves on in real time, as the database's does, so the two stay
    as far apart as set however long the test runs."""

    def __init__(self, seconds: float = 0) -> None:
        self._offset = timedelta(seconds=seconds)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def off_by(self, seconds: float) -> None:
        with self._lock:
            self._offset = timedelta(seconds=seconds)
