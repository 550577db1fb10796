"""A connection that reads what has already arrived without a turn of the
event loop (ADR 0028).

psycopg runs each statement as a generator that yields whenever it would
block, and an async connection hands every such wait to the event loop:
register the socket, run the loop once, unregister. libpq reads at most its
16 KB input buffer at a time, so a result of 450 KB (a page of 1,000 events)
takes about 30 waits even when all of it is already in the socket, at some
75 us of loop each. `EagerConnection` first asks the socket, with a poll that
does not block, whether what the generator waits for is there; if it is, the
generator goes on at once. It waits on the loop as before when nothing has
arrived, and once one wait has read for BUSY_BUDGET seconds without a turn of
the loop, so that no other task waits long for it (waits that end without one
are bounded together by psycopg's own 5 ms check)."""

from __future__ import annotations

import select
import time
from typing import Any, Final, TypeVar

import psycopg
from psycopg.abc import PQGen
from psycopg.waiting import Ready, Wait

RV = TypeVar("RV")

# The longest a connection reads without letting the loop run other tasks.
BUSY_BUDGET: Final = 0.002


class EagerConnection(psycopg.AsyncConnection[tuple[Any, ...]]):
    """An async connection whose reads go on without the loop while their data
    has arrived (see the module docstring)."""

    async def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        # psycopg's own interval and timeout, whatever its defaults.
        return await super().wait(read_eagerly(gen, self.pgconn.socket), *args, **kwargs)


def read_eagerly(gen: PQGen[RV], fileno: int, *, budget: float = BUSY_BUDGET) -> PQGen[RV]:
    """`gen`, resumed at once instead of yielding a wait to read `fileno`
    while that socket is readable now, for at most `budget` seconds after it
    last yielded. Any other wait (to write, or to read or write) is yielded as
    it is: psycopg already tries a write at once."""
    readable = select.poll()
    readable.register(fileno, select.POLLIN)
    try:
        waiting = next(gen)
        resumed = time.monotonic()
        while True:
            if waiting == Wait.R and time.monotonic() - resumed < budget and _has_data(readable):
                waiting = gen.send(Ready.R)
                continue
            ready = yield waiting
            resumed = time.monotonic()
            waiting = gen.send(ready)
    except StopIteration as done:
        result: RV = done.value
        return result


def _has_data(readable: select.poll) -> bool:
    """Whether the one socket registered has data now. Only POLLIN counts: an
    error or a closed descriptor (POLLERR, POLLNVAL) is for the loop's wait to
    report, not a read for libpq to retry until the budget runs out."""
    return any(events & select.POLLIN for _, events in readable.poll(0))
