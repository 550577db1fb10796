"""Records made at most once per slot (a token and an RPC) and window, for
what is done too often to record each time: reads by key (ADR 0040) and
refusals (ADR 0060). The first occurrence of a window starts its record; the
others of that window share it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..store.appended import Appended


@dataclass(frozen=True, slots=True)
class _Covered:
    """One slot's occurrences, covered by one record until `until`."""

    since: datetime
    until: datetime
    record: asyncio.Future[Appended]


class OnceAWindow:
    """The record covering each slot's occurrences in the current window."""

    def __init__(self, *, clock: Callable[[], datetime], window: timedelta) -> None:
        self._clock = clock
        self.window = window
        self._covered: dict[Hashable, _Covered] = {}
        self._next_sweep: datetime | None = None

    @property
    def seconds(self) -> float:
        """The window as configured: 0.5 s said 0 s when cut to an int (helper-135)."""
        window = self.window.total_seconds()
        return int(window) if window.is_integer() else window

    def covering(
        self, slot: Hashable, record: Callable[[datetime], Awaitable[Appended]]
    ) -> asyncio.Future[Appended]:
        """The record covering an occurrence in `slot` now: the window's, or
        `record(now)` started as the window's first."""
        now = self._clock()
        covered = self._covered.get(slot)
        # A clock set back starts a new window rather than stretching one.
        if covered is None or not covered.since <= now < covered.until:
            self._sweep(now)
            covered = self._cover(slot, record, now)
        return covered.record

    def _cover(
        self, slot: Hashable, record: Callable[[datetime], Awaitable[Appended]], now: datetime
    ) -> _Covered:
        started = asyncio.ensure_future(record(now))
        covered = _Covered(since=now, until=now + self.window, record=started)
        self._covered[slot] = covered
        started.add_done_callback(lambda done: self._settled(slot, covered, done))
        return covered

    def _settled(self, slot: Hashable, covered: _Covered, done: asyncio.Future[Appended]) -> None:
        # Retrieved here so that a record no caller waits for any more does not
        # end as an unretrieved exception; a failed record covers nothing, and
        # the next occurrence tries again.
        failed = done.cancelled() or done.exception() is not None
        if failed and self._covered.get(slot) is covered:
            del self._covered[slot]

    def _sweep(self, now: datetime) -> None:
        """Forgets ended windows, once a window: the map holds the slots seen
        lately, not every slot ever seen."""
        if self._next_sweep is not None and now < self._next_sweep:
            return
        self._covered = {
            slot: covered
            for slot, covered in self._covered.items()
            if covered.since <= now < covered.until or not covered.record.done()
        }
        self._next_sweep = now + self.window
