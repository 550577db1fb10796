"""The purge job's own loop (`Purger._run`): when it looks for a due pass
and when it keeps up, whatever those steps meet. The steps themselves run
against a real database in tests/integration/test_retention.py; here they
are replaced by stand-ins that count their calls, so that the loop's timing
alone is under test (helper-93). Each test waits for what must happen, and
bounds what must not by the time that took, so a slow machine only makes it
wait longer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import pytest

from sealtrail_server.domain.purge_summaries import SummarySeal
from sealtrail_server.retention import purger as purger_module
from sealtrail_server.retention.purger import Purger


async def _nothing(_: object) -> None:
    return None


@dataclass
class _Calls:
    looks: list[float] = field(default_factory=list)  # when each ended, by the loop's clock
    upkeeps: list[float] = field(default_factory=list)  # when, by the loop's clock
    elapsed: float = 0.0


def _run_until(
    monkeypatch: pytest.MonkeyPatch,
    done: Callable[[_Calls], bool],
    *,
    interval: float,
    look: Exception | float,
    upkeep: Exception | bool,
    look_keeps_up: bool = False,
    look_finds_busy: bool = False,
    look_takes: float = 0.0,
    upkeep_period: float = 0.05,
    busy_look_again: float = 0.05,
    look_again_at_least: float = 0.05,
) -> _Calls:
    """The loop's calls until `done` says so (10 s at most), each step
    answering (or raising) as told."""
    monkeypatch.setattr(purger_module, "MONTHS_AHEAD_INTERVAL", upkeep_period)
    monkeypatch.setattr(purger_module, "BUSY_LOOK_AGAIN", busy_look_again)
    monkeypatch.setattr(purger_module, "LOOK_AGAIN_AT_LEAST", look_again_at_least)
    purger = Purger(
        "postgresql://unused",
        record=_nothing,
        seal=SummarySeal(b"k" * 32),
        interval=interval,
        first_pass_after=0.01,
    )
    calls = _Calls()

    async def looked() -> tuple[float, bool]:
        await asyncio.sleep(look_takes)
        calls.looks.append(asyncio.get_running_loop().time())
        if look_keeps_up:  # as a pass does, or a look that finds none due
            purger._kept_up_at = asyncio.get_running_loop().time()
        if isinstance(look, Exception):
            raise look
        return look, look_finds_busy

    async def kept_up() -> bool:
        calls.upkeeps.append(asyncio.get_running_loop().time())
        if isinstance(upkeep, Exception):
            raise upkeep
        return upkeep

    monkeypatch.setattr(purger, "_look", looked)
    monkeypatch.setattr(purger, "keep_up", kept_up)

    async def run() -> None:
        clock = asyncio.get_running_loop().time
        started = clock()
        purger.start()
        while not done(calls) and clock() - started < 10:
            await asyncio.sleep(0.005)
        calls.elapsed = clock() - started
        await purger.stop()
        assert done(calls), calls

    asyncio.run(run())
    return calls


def test_a_failing_upkeep_with_purging_off_is_tried_again_an_upkeep_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With interval 0 the wait after a failure was the interval: a database
    that refused connections had every process retry at once, for ever."""
    calls = _run_until(
        monkeypatch,
        lambda c: len(c.upkeeps) >= 3,
        interval=0,
        look=0.0,
        upkeep=OSError("refused"),
    )
    assert calls.looks == []
    assert min(later - earlier for earlier, later in pairwise(calls.upkeeps)) >= 0.04


def test_looks_that_keep_failing_leave_the_upkeep_its_hours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed look neither passed nor kept up: the upkeep still comes due
    (it was put off after every look, and the months ahead never created)."""
    calls = _run_until(
        monkeypatch,
        lambda c: len(c.upkeeps) >= 3,
        interval=1000,
        look=OSError("refused"),
        upkeep=True,
    )
    assert len(calls.looks) <= calls.elapsed / 0.05 + 2  # after a failure, a period later


def test_an_upkeep_the_job_kept_out_comes_back_sooner_than_its_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process held the job (its pass, its own upkeep): the upkeep
    comes back in five minutes, not an hour (here: 0.01 s, not 1 s)."""
    calls = _run_until(
        monkeypatch,
        lambda c: len(c.upkeeps) >= 3,
        interval=0,
        look=0.0,
        upkeep=False,
        upkeep_period=1.0,
        busy_look_again=0.01,
    )
    gaps = [later - earlier for earlier, later in pairwise(calls.upkeeps)]
    assert min(gaps) < 0.5, gaps


def test_a_look_that_kept_up_puts_the_upkeep_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass, or a look that finds none due, keeps up as it goes: no upkeep
    of its own until a period after it."""
    calls = _run_until(
        monkeypatch,
        lambda c: len(c.looks) >= 8,
        interval=0.05,
        look=0.05,
        look_keeps_up=True,
        upkeep=True,
        upkeep_period=0.2,
    )
    assert calls.upkeeps == []


def test_a_failed_look_is_tried_again_no_sooner_than_its_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an interval of a few seconds, a database that refused
    connections had every process try again, and warn, every interval (here
    the floor is 0.1 s, the interval 1 ms)."""
    calls = _run_until(
        monkeypatch,
        lambda c: len(c.looks) >= 4,
        interval=0.001,
        look=OSError("refused"),
        upkeep=True,
        upkeep_period=1000.0,
        look_again_at_least=0.1,
    )
    assert min(later - earlier for earlier, later in pairwise(calls.looks)) >= 0.09


def test_an_upkeep_due_when_a_look_found_the_job_held_waits_as_the_look_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The upkeep came due while a look was finding the job held (another
    process's pass): it connected again at once, to find it held too."""
    calls = _run_until(
        monkeypatch,
        lambda c: len(c.looks) >= 3,
        interval=1000,
        look=0.2,
        look_finds_busy=True,
        look_takes=0.1,
        upkeep=True,
        upkeep_period=0.05,
        busy_look_again=0.2,
    )
    assert calls.upkeeps == []
