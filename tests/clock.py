"""A clock for servers under test: it starts at the real time and moves only
when the test moves it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class Clock:
    """A clock the test moves forward (or back); it starts at the real time."""

    def __init__(self) -> None:
        self._now = datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, days: float = 0, *, seconds: float = 0) -> None:
        with self._lock:
            self._now += timedelta(days=days, seconds=seconds)
