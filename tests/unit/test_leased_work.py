"""LeasedWork's own behaviour: a process that cannot renew its leases stops
working on their keys before another process may take them over, and starts
again once a claim succeeds."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable

import pytest

from sealtrail_server.domain.errors import SealtrailError
from sealtrail_server.leased_work import LeasedWork
from tests.conftest import logged


class _Steps:
    """Counts the steps of the one key's worker."""

    def __init__(self) -> None:
        self.count = 0

    async def step(self, key: str) -> float:
        self.count += 1
        return 0.01


def _work(claim: Callable[[], Awaitable[list[str]]], steps: _Steps) -> LeasedWork[str]:
    """Work on the keys `claim` returns: leases of 0.3 s, renewed every 0.1 s,
    fenced 0.15 s after the last successful claim."""

    async def release() -> None:
        return None

    return LeasedWork(
        "test",
        claim=claim,
        step=steps.step,
        release=release,
        tenant_of=lambda key: "t",
        poll_interval=0.02,
        lease_seconds=0.3,
    )


def test_work_stops_while_leases_cannot_be_renewed_and_resumes_after() -> None:
    async def run() -> tuple[int, int, int]:
        claims_fail = False
        steps = _Steps()

        async def claim() -> list[str]:
            if claims_fail:
                raise OSError("the database is away")
            return ["sink-1"]

        work = _work(claim, steps)
        work.start()
        try:
            await asyncio.sleep(0.2)
            working = steps.count
            claims_fail = True
            await asyncio.sleep(1.0)  # renewals fail past half a lease: the worker stops
            stopped_at = steps.count
            await asyncio.sleep(0.3)
            still = steps.count - stopped_at
            claims_fail = False
            await asyncio.sleep(0.3)
            return working, still, steps.count - stopped_at - still
        finally:
            await work.stop()

    working, while_fenced, after = asyncio.run(run())
    assert working > 0
    assert while_fenced == 0  # no step while the leases may belong to another process
    assert after > 0  # a successful claim starts the work again


def test_a_claim_that_hangs_does_not_keep_the_work_going() -> None:
    """A claim stuck on a dead connection neither fails nor succeeds, and
    cancelled takes seconds to end: the fence comes from the clock, half a
    lease after the last renewal, whatever the claim does."""

    async def run() -> tuple[int, int]:
        hang = False
        steps = _Steps()

        async def claim() -> list[str]:
            if hang:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    await asyncio.sleep(2)  # as psycopg does: cancel the query, wait, give up
                    raise
            return ["sink-1"]

        work = _work(claim, steps)
        work.start()
        try:
            await asyncio.sleep(0.2)
            hang = True
            await asyncio.sleep(1.0)
            stopped_at = steps.count
            await asyncio.sleep(0.3)
            return stopped_at, steps.count - stopped_at
        finally:
            await work.stop()

    stopped_at, while_hung = asyncio.run(run())
    assert stopped_at > 0 and while_hung == 0


def test_stop_waits_for_a_worker_whose_key_was_lost() -> None:
    """A worker cancelled because its key went elsewhere may take a while to
    end (it finishes what it was sending): stop() waits for it, so it does not
    outlive the server's loop."""

    async def run() -> tuple[bool, bool]:
        keys = ["sink-1"]
        ended = asyncio.Event()
        workers: list[asyncio.Task[None] | None] = []

        class _Slow(_Steps):
            async def step(self, key: str) -> float:
                workers.append(asyncio.current_task())
                try:
                    await asyncio.sleep(10)
                finally:
                    await asyncio.shield(asyncio.sleep(0.6))  # ending takes its time
                    ended.set()
                return 0.01

        async def claim() -> list[str]:
            return list(keys)

        work = _work(claim, _Slow())
        work.start()
        await asyncio.sleep(0.1)  # the worker is in its step
        keys.clear()  # the next renewal finds the key gone: the worker is cancelled
        await asyncio.sleep(0.3)  # renewals every 0.1 s
        worker = workers[0]
        assert worker is not None
        ending = worker.cancelling() > 0 and not ended.is_set()
        await work.stop()
        return ending, worker.done()

    ending_at_stop, done_at_stop = asyncio.run(run())
    assert ending_at_stop  # stop() came while the cancelled worker was still ending
    assert done_at_stop


def test_a_failing_step_backs_off_and_commits_do_not_cut_the_wait_short() -> None:
    """A step failing at once (the appender refusing OVERLOADED) ran again at
    every poll, and sooner at every commit of its tenant: during the very
    spikes alerting is for."""

    async def run() -> tuple[list[float], float]:
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def failing(key: str) -> float:
            times.append(loop.time())
            raise SealtrailError("refused: overloaded")

        async def claim() -> list[str]:
            return ["tenant-1"]

        async def release() -> None:
            return None

        work = LeasedWork(
            "test",
            claim=claim,
            step=failing,
            release=release,
            tenant_of=lambda key: key,
            poll_interval=0.02,
            lease_seconds=30,
        )
        work.start()
        try:
            deadline = loop.time() + 0.7
            while loop.time() < deadline:
                work.wake("tenant-1")  # a commit of the tenant, again and again
                await asyncio.sleep(0.005)
        finally:
            await work.stop()
        return times, work.retry_wait(3)

    times, third = asyncio.run(run())
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # 0.02, 0.04, 0.08, 0.16, 0.32 s: about five steps in 0.7 s, each wait longer
    assert 2 <= len(times) <= 7, gaps  # at every wake-up, it was over a hundred
    assert all(gap >= 0.015 * 2**i for i, gap in enumerate(gaps)), gaps
    assert third == 0.08


def test_stop_ends_a_worker_that_dropped_its_cancellation() -> None:
    """A worker can swallow a stop's cancellation without meaning to (Python
    3.11's `wait_for` did, when what it waited for completed as the cancel
    came): stop() cancels again until the worker ends, rather than waiting
    for ever on a task that goes on stepping."""

    async def run() -> int:
        dropped: list[bool] = []

        class _Dropping(_Steps):
            async def step(self, key: str) -> float:
                self.count += 1
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    if dropped:
                        raise
                    dropped.append(True)  # the cancellation lost, as wait_for lost it
                return 0.01

        steps = _Dropping()
        work = _work(lambda: _keys("sink-1"), steps)
        work.start()
        await asyncio.sleep(0.1)  # the worker is in its step
        async with asyncio.timeout(5):
            await work.stop()
        return len(dropped)

    assert asyncio.run(run()) == 1


def test_stop_leaves_behind_a_worker_that_never_ends_and_says_where_it_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker that ignores every cancellation must not hold the server's
    stop for ever: after `stop_seconds` stop() returns, logs where the worker
    waits, and keeps the leases (they lapse; another process takes over)."""

    async def run() -> tuple[bool, int]:
        released = asyncio.Event()
        releases: list[bool] = []
        workers: list[asyncio.Task[None] | None] = []

        class _Stubborn(_Steps):
            async def step(self, key: str) -> float | None:  # type: ignore[override]
                workers.append(asyncio.current_task())
                while not released.is_set():
                    with contextlib.suppress(asyncio.CancelledError):
                        await released.wait()
                return None  # released: the worker ends

        async def release() -> None:
            releases.append(True)

        work = LeasedWork(
            "test",
            claim=lambda: _keys("sink-1"),
            step=_Stubborn().step,
            release=release,
            tenant_of=lambda key: "t",
            poll_interval=0.02,
            lease_seconds=0.3,
        )
        work.start()
        await asyncio.sleep(0.1)
        async with asyncio.timeout(5):
            await work.stop(stop_seconds=0.5)
        worker = workers[0]
        assert worker is not None
        still_running = not worker.done()
        released.set()  # let it end before the loop closes
        await asyncio.gather(worker, return_exceptions=True)
        return still_running, len(releases)

    with caplog.at_level(logging.ERROR, logger="sealtrail_server.leased_work"):
        still_running, releases = asyncio.run(run())
    assert still_running
    assert releases == 0  # a worker may still step: the leases are left to lapse
    (record,) = [
        r
        for r in logged(caplog, by="sealtrail_server.leased_work")
        if "did not end" in r.getMessage()
    ]
    assert "test-sink-1" in record.getMessage()
    assert "_Stubborn.step" in record.getMessage()  # down to where it waits


async def _keys(*keys: str) -> list[str]:
    return list(keys)
