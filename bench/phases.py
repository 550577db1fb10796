"""One measured figure ("phase"): start its client processes, run them through
warm-up and the window, and sum up what they saw; or, for work that is one
long call or a local computation (`run_once`), time it from start to end."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from . import cpu
from .load import Tally, Window, Workload, collect, go, start_clients, stop_clients


@dataclass(frozen=True)
class Timing:
    warmup: float
    duration: float


@dataclass
class PhaseResult:
    """What one figure measured inside its window (warm-up excluded).

    `rate` is events (or calls, or rows) completed per second; latencies are
    per call as the client saw them; `cpu` is where the CPU went (see cpu.py);
    `events_per_commit` is the appender's average group-commit size, from
    the distinct received_at values the window's events got (one per commit).
    """

    name: str
    unit: str
    clients: int
    in_flight: int
    seconds: float
    calls: int
    events: int
    rate: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    errors: dict[str, int]
    cpu: dict[str, float]
    events_per_commit: float | None = None
    latency_p95_ms: float | None = None
    failure: str | None = None  # a one-shot figure's FigureFailed: the run exits 1
    notes: dict[str, Any] = field(default_factory=dict)


def run_phase(
    name: str,
    unit: str,
    workloads: list[Workload],
    timing: Timing,
    *,
    server_pid: int | None,
    postmaster_pid: int | None,
) -> tuple[PhaseResult, Window]:
    """Run `workloads` (one client process each) together and sum them up."""
    result, _, window = run_beside(
        name,
        unit,
        workloads,
        [],
        timing,
        server_pid=server_pid,
        postmaster_pid=postmaster_pid,
    )
    return result, window


def run_beside(
    name: str,
    unit: str,
    workloads: list[Workload],
    beside: list[Workload],
    timing: Timing,
    *,
    server_pid: int | None,
    postmaster_pid: int | None,
    beside_name: str = "beside",
    beside_unit: str = "events/s",
) -> tuple[PhaseResult, PhaseResult, Window]:
    """Run `workloads` and `beside` (one client process each) together, from
    the same start, through the same warm-up and window; sum each list up
    apart: the figure is `workloads`', measured while `beside` loads the
    server. Both share the window's CPU, every client process counted."""
    clients = start_clients([*workloads, *beside])
    try:
        window = go(clients, timing.warmup, timing.duration)
        usage = cpu.measure(window, cpu.Watched(server_pid, postmaster_pid, clients.pids))
        tallies = collect(clients, window)
    finally:
        stop_clients(clients)
    mine, theirs = tallies[: len(workloads)], tallies[len(workloads) :]
    return (
        _summarize(name, unit, workloads, window, mine, usage),
        _summarize(beside_name, beside_unit, beside, window, theirs, usage),
        window,
    )


def _summarize(
    name: str,
    unit: str,
    workloads: list[Workload],
    window: Window,
    tallies: list[Tally],
    usage: dict[str, float],
) -> PhaseResult:
    latencies = sorted(latency for tally in tallies for latency in tally.latencies)
    errors: dict[str, int] = {}
    for tally in tallies:
        for kind, count in tally.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    events = sum(tally.events for tally in tallies)
    return PhaseResult(
        name=name,
        unit=unit,
        clients=len(workloads),
        in_flight=sum(workload.in_flight for workload in workloads),
        seconds=window.seconds,
        calls=sum(tally.calls for tally in tallies),
        events=events,
        rate=events / window.seconds,
        latency_p50_ms=percentile_ms(latencies, 0.50),
        latency_p99_ms=percentile_ms(latencies, 0.99),
        errors=errors,
        cpu=usage,
        latency_p95_ms=percentile_ms(latencies, 0.95),
    )


class FigureFailed(Exception):
    """The timed work ran but did not do what it should (e.g. a verification
    of an untampered log failed): reported in the figure's errors."""


# Whether timed work did what it should, once its timing is over: given its
# notes and count; raises FigureFailed if not.
Check = Callable[[dict[str, Any], int], None]


def run_once(
    name: str,
    unit: str,
    work: Callable[[dict[str, Any]], int],
    watched: cpu.Watched,
    *,
    in_flight: int = 1,
    check: Check | None = None,
) -> PhaseResult:
    """Time `work` once from start to end; it returns how many events (or
    records) it handled and may add notes. Its CPU is accounted as a window's.
    `check`, if given, looks at what it did after the timing, untimed."""
    notes: dict[str, Any] = {}
    failed: str | None = None
    with cpu.Meter(watched) as meter:
        started = time.perf_counter()
        try:
            count = work(notes)
        except FigureFailed as failure:
            count, failed = 0, str(failure)
        seconds = time.perf_counter() - started
    if check is not None and failed is None:
        try:
            check(notes, count)
        except FigureFailed as failure:
            count, failed = 0, str(failure)
    return PhaseResult(
        name=name,
        unit=unit,
        clients=1,
        in_flight=in_flight,
        seconds=seconds,
        calls=1,
        events=count,
        rate=count / seconds,
        latency_p50_ms=None,
        latency_p99_ms=None,
        errors={} if failed is None else {failed: 1},
        cpu=meter.usage,
        notes=notes,
        failure=failed,
    )


def percentile_ms(ordered: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of `ordered` seconds, in ms: the least
    value at or below which `fraction` of them lie: p95 of 100 calls is the
    95th fastest, of 10 calls the slowest. None of no values."""
    if not ordered:
        return None
    # round() keeps 0.29 * 100 (28.999999999999996) at rank 29.
    rank = max(1, math.ceil(round(fraction * len(ordered), 9)))
    return 1000 * ordered[rank - 1]


def events_per_commit(database_url: str, tenant: str, window: Window) -> float | None:
    """Average events per appender transaction among the tenant's events
    received in `window`: every event of one commit shares its received_at."""
    events, commits = events_written(database_url, tenant, window)
    return float(events / commits) if commits else None


def events_written(database_url: str, tenant: str, window: Window) -> tuple[int, int]:
    """How many of the tenant's events were received in `window`, and in how
    many commits (distinct received_at values)."""
    start = datetime.fromtimestamp(window.start, UTC)
    end = datetime.fromtimestamp(window.end, UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT received_at) FROM events"
            " WHERE tenant_id = %s AND received_at >= %s AND received_at < %s",
            [tenant, start, end],
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def settle(database_url: str) -> None:
    """Between figures: vacuum the events table and checkpoint, so work one
    figure left behind (autovacuum, GIN pending list, dirty pages) is not
    billed to the next. Skipped where the role may not do it.

    tree_nodes is deliberately left as the figures found it: proofs must be
    served well whatever statistics PostgreSQL has of it (it once planned a
    Hash Join over all of a tenant's nodes, ~70 ms a proof, until the table
    was analyzed), and the figures are there to catch that coming back."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in ("VACUUM (ANALYZE) events", "CHECKPOINT"):
            with contextlib.suppress(psycopg.Error):
                conn.execute(statement)


def database_facts(database_url: str) -> dict[str, str]:
    """The PostgreSQL version and the settings durability depends on."""
    facts: dict[str, str] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method"):
            row = conn.execute(f"SHOW {name}").fetchone()
            facts[name] = str(row[0]) if row else "?"
    return facts
