"""Ending a process's background tasks at its stop, in bounded time.

A cancellation can be swallowed without anyone meaning to: Python 3.11's
`asyncio.wait_for`, which psycopg_pool waits for a free connection with,
drops one that lands as the awaited thing completes. A task whose loop
goes on after a step (a pass that logs its failures and waits for the next)
then waits for its next step as if nothing had happened, and a stop that
cancelled it once waited for it for ever: `serve` refused a port already in
use, and hung, one start in two (helper-196). So every stop cancels again
each second, and leaves behind, loudly, a task that outlives `within`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Final

log = logging.getLogger(__name__)

# How long a stop waits for its tasks to end, and how often it cancels again.
STOP_SECONDS: Final = 10.0
_RECANCEL_SECONDS: Final = 1.0


async def cancelled_within(
    tasks: set[asyncio.Task[Any]], *, within: float
) -> set[asyncio.Task[Any]]:
    """Cancels `tasks` (again each second) until they end or `within` seconds
    pass; returns those still running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = tasks
    while pending and (left := deadline - loop.time()) > 0:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=min(_RECANCEL_SECONDS, left))
        for task in done:  # retrieved, as gather did: no "never retrieved" at exit
            if not task.cancelled():
                task.exception()
    return pending


async def end_tasks(
    tasks: Iterable[asyncio.Task[Any] | None], *, within: float = STOP_SECONDS
) -> None:
    """Cancel `tasks` (None: not started) until they end; one still running
    after `within` seconds is left behind, with an error saying where it
    waits, rather than holding the stop for ever."""
    for task in await cancelled_within({t for t in tasks if t is not None}, within=within):
        log.error(
            "%s did not end within %.1f s of its cancellation; left behind:\n%s",
            task.get_name(),
            within,
            where_it_waits(task),
        )


def where_it_waits(task: asyncio.Task[Any]) -> str:
    """Where `task` waits, down its chain of awaits (`Task.print_stack`
    shows only the task's own coroutine, not what it awaits)."""
    lines = []
    awaited: Any = task.get_coro()
    while awaited is not None and (frame := getattr(awaited, "cr_frame", None)) is not None:
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_qualname}')
        awaited = getattr(awaited, "cr_await", None)
    return "\n".join(lines)
