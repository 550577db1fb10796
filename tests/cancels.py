"""Calls cancelled at random moments, then cancelled again while they clean
up: how a call ends when its client leaves and a stop's, a timeout's or a
task group's cancel follows. Whatever they held must come back."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any


async def cancelled_twice(
    call: Callable[[], Coroutine[Any, Any, Any]],
    *,
    calls: int,
    rounds: int,
    within: float,
    seed: int,
) -> None:
    """`rounds` times, `calls` runs of `call` at once, each cancelled at a
    moment within `within` seconds (waiting, connecting, mid-statement,
    reading), then again 0-3 ms later, while it cleans up."""
    timing = random.Random(seed)
    for _ in range(rounds):
        tasks = [asyncio.create_task(call()) for _ in range(calls)]
        await asyncio.sleep(timing.random() * within)
        for task in tasks:
            task.cancel()
        await asyncio.sleep(timing.random() * 0.003)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
