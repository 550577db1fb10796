"""Turns of the event loop for long synchronous work: a loop over many items
gives way to the process's other calls once it has held the loop for
TURN_SECONDS, not after every item (a turn costs a trip through the loop, which
a small call, of one item, should not pay)."""

from __future__ import annotations

import asyncio
import time
from typing import Final

# The longest one call's loop holds the event loop before it gives way. A
# RecordBatch of 1,000 events of 3,000 small details took 15 s of CPU without
# a turn: other calls timed out and the database probe (1 s) failed (helper-138).
TURN_SECONDS: Final = 0.01


class Turns:
    """Gives way (`await turns.take()`) once TURN_SECONDS have passed since
    it was made or last gave way; otherwise costs a clock read."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since = time.perf_counter()

    async def take(self) -> None:
        if time.perf_counter() - self._since >= TURN_SECONDS:
            await asyncio.sleep(0)
            self._since = time.perf_counter()
