"""A process's background tasks end at its stop, in bounded time, even when a
cancellation was swallowed on the way (stopping.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import pytest

from sealtrail_server.deployment_sink_job import DeploymentSinkJob
from sealtrail_server.stopping import end_tasks


def test_a_deployment_sink_job_whose_pass_swallowed_the_cancellation_still_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`serve` refused a port already in use and then hung, one start in two
    (helper-196): the pass's first connection came from psycopg_pool, which
    waits with Python 3.11's `wait_for`, which drops a cancellation landing as
    the connection is handed over. The pass ended as if nothing had happened,
    the job waited for its next one, and the stop waited for the job for ever."""
    passes: list[bool] = []

    async def swallowing(self: DeploymentSinkJob) -> None:
        passes.append(True)
        with contextlib.suppress(asyncio.CancelledError):  # as wait_for lost it
            await asyncio.sleep(3600)

    monkeypatch.setattr(DeploymentSinkJob, "run_pass", swallowing)

    async def run() -> bool:
        job = DeploymentSinkJob(cast(Any, None), cast(Any, None), box=cast(Any, None), interval=30)
        job.start()
        while not passes:
            await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await job.stop()
        return job._task is None

    assert asyncio.run(run())
    assert passes == [True]  # ended in its wait, not by passing again


def test_a_task_that_never_ends_is_left_behind_saying_where_it_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> bool:
        released = asyncio.Event()

        async def stubborn() -> None:
            while not released.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await released.wait()

        task = asyncio.create_task(stubborn(), name="stubborn")
        await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await end_tasks([task, None], within=0.3)
        left_running = not task.done()
        released.set()
        await task
        return left_running

    with caplog.at_level(logging.ERROR, logger="sealtrail_server.stopping"):
        assert asyncio.run(run())
    # Its own logger's: other servers of the test's process log into caplog too.
    [said] = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and r.name == "sealtrail_server.stopping"
    ]
    assert said.startswith("stubborn did not end within 0.3 s of its cancellation")
    assert "in test_a_task_that_never_ends_is_left_behind_saying_where_it_waits.<locals>" in said
