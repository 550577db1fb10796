"""Where the CPU went during a measurement window: the server process, the
PostgreSQL processes, the client processes (each in % of ONE core), and the
whole machine (in % of ALL its cores). A process near 100% of one core is
GIL- or CPU-bound; a machine near 100% has no idle core left for anyone.
"others" is what the rest of the machine used meanwhile (other programs,
the kernel): when it is large, the figures are noisy.

psutil comes with pgserver, the embedded PostgreSQL's package."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import psutil

from .load import Window


@dataclass(frozen=True)
class Watched:
    """The processes to account for; None when there is none (e.g. an external database)."""

    server: int | None
    postmaster: int | None
    clients: list[int]


def _cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """The process's CPU seconds; `reaped`: with those of its children that
    ended (and it waited for), as the postmaster's hold its backends'."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    spent = times.user + times.system
    return spent + times.children_user + times.children_system if reaped else spent


def _postgres_pids(postmaster: int | None) -> list[int]:
    if postmaster is None:
        return []
    try:
        children = psutil.Process(postmaster).children(recursive=True)
    except psutil.Error:
        return []
    return [postmaster, *(child.pid for child in children)]


def _snapshot(watched: Watched) -> dict[str, dict[int, float]]:
    server = [watched.server] if watched.server is not None else []
    return {
        group: {pid: _cpu_seconds(pid, reaped=pid == watched.postmaster) for pid in pids}
        for group, pids in (
            ("server", server),
            ("postgres", _postgres_pids(watched.postmaster)),
            ("clients", watched.clients),
            # This coordinating process, unless it is the client itself (Meter).
            ("bench", [] if os.getpid() in watched.clients else [os.getpid()]),
        )
    }


Sample = tuple[dict[str, dict[int, float]], Any]  # per-process CPU seconds, machine times


def _sample(watched: Watched) -> Sample:
    return _snapshot(watched), psutil.cpu_times()


def measure(window: Window, watched: Watched) -> dict[str, float]:
    """Sleep through `window`, sampling CPU at its start and end: percent of
    one core per group and for its busiest process, and machine busy and
    iowait percent of all cores."""
    time.sleep(max(0.0, window.start - time.time()))
    before = _sample(watched)
    time.sleep(max(0.0, window.end - time.time()))
    return _usage(before, _sample(watched), window.seconds)


class Meter:
    """The same accounting as `measure`, around work done in this process
    (one long call, a local computation) rather than over a timed window:

        with Meter(watched) as meter:
            work()
        meter.usage
    """

    def __init__(self, watched: Watched) -> None:
        self._watched = watched
        self.usage: dict[str, float] = {}

    def __enter__(self) -> Meter:
        self._started = time.perf_counter()
        self._before = _sample(self._watched)
        return self

    def __exit__(self, *exc_info: object) -> None:
        after = _sample(self._watched)
        self.usage = _usage(self._before, after, time.perf_counter() - self._started)


def _usage(before_sample: Sample, after_sample: Sample, elapsed: float) -> dict[str, float]:
    (before, machine_before), (after, machine_after) = before_sample, after_sample
    usage: dict[str, float] = {}
    ours = 0.0
    for group, pids in after.items():
        # A process born inside the window (e.g. autovacuum) counts from zero.
        spent = sum(seconds - before[group].get(pid, 0.0) for pid, seconds in pids.items())
        if group == "postgres":
            # A backend that ended in the window (a connection the work opened
            # and closed) is in the postmaster's children's times, the whole of
            # its life: what it had spent at the start is taken off.
            spent -= sum(seconds for pid, seconds in before[group].items() if pid not in pids)
        ours += spent
        if pids and group != "bench":
            usage[f"{group}_pct_of_core"] = 100 * spent / elapsed
            busiest = max(seconds - before[group].get(pid, 0.0) for pid, seconds in pids.items())
            usage[f"{group}_busiest_process_pct_of_core"] = 100 * busiest / elapsed
    total = sum(machine_after) - sum(machine_before)
    idle = machine_after.idle - machine_before.idle
    iowait = getattr(machine_after, "iowait", 0.0) - getattr(machine_before, "iowait", 0.0)
    if total > 0:
        busy = total - idle - iowait
        usage["machine_busy_pct"] = 100 * busy / total
        usage["machine_iowait_pct"] = 100 * iowait / total
        # Everything else the machine ran meanwhile: other programs, the kernel.
        usage["others_pct_of_core"] = max(0.0, 100 * (busy - ours) / elapsed)
    return usage


def wait_for_quiet(max_wait: float, busy_pct: float = 15.0) -> float:
    """Wait (up to `max_wait` s) until the machine is nearly idle before a
    figure starts, so another program's burst does not land in its window.
    Returns the busy percent last seen."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = psutil.cpu_percent(interval=0.5)
        if busy <= busy_pct or time.monotonic() >= deadline:
            return busy


# A process at this share of one core (or a machine at this share of all) is saturated.
SATURATED_PCT = 90.0


def limits(usage: dict[str, float]) -> str:
    """What was saturated in a window: the server process, a client process,
    a PostgreSQL process, all cores; "-" if nothing was (waits bound it)."""
    found = [
        label
        for key, label in (
            ("server_busiest_process_pct_of_core", "server"),
            ("clients_busiest_process_pct_of_core", "client"),
            ("postgres_busiest_process_pct_of_core", "postgres"),
            ("machine_busy_pct", "all cores"),
        )
        if usage.get(key, 0.0) >= SATURATED_PCT
    ]
    return ", ".join(found) or "-"
