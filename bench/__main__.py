"""`python -m bench` (`make bench`): measure every figure in one run, print
the tables, write bench/results/latest.json. Exits 0 even when a target is
missed (the table says MISSED); only a failure to run exits non-zero."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from . import cpu, environment
from .load import Window, Workload
from .phases import (
    PhaseResult,
    Timing,
    database_facts,
    events_per_commit,
    run_phase,
    settle,
)
from .report import format_report, write_json

PHASES = ("empty", "record", "copy", "batch")  # the order they run in
MAX_BATCH = 1000  # the server's RecordBatch limit
QUIET_PCT = 15.0  # machine busy percent under which a figure may start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per figure")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="calls in flight for empty call and Record"
    )
    parser.add_argument(
        "--batch-size", type=int, default=500, help="events per RecordBatch and rows per COPY"
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=4, help="RecordBatch calls in flight"
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=1,
        help="client processes sharing the calls in flight (same for empty call and Record)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every figure this many times, alternating; report each one's median",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait, before each figure, for other programs to leave the CPU idle",
    )
    parser.add_argument(
        "--only", nargs="+", choices=PHASES, help="run only these figures (ratios need both)"
    )
    options = parser.parse_args(argv)
    if not 1 <= options.batch_size <= MAX_BATCH:
        parser.error(f"--batch-size must be 1 to {MAX_BATCH}")
    if min(options.concurrency, options.batch_concurrency, options.clients, options.rounds) < 1:
        parser.error("--concurrency, --batch-concurrency, --clients, --rounds must be at least 1")
    if options.duration <= 0 or options.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return options


def split(total: int, parts: int) -> list[int]:
    """`total` calls in flight shared as evenly as can be by at most `parts` clients."""
    parts = min(parts, total)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def median_result(runs: list[PhaseResult]) -> PhaseResult:
    """The round with the median rate (the lower middle one of an even count);
    every round's rate is kept in its notes."""
    chosen = sorted(runs, key=lambda run: run.rate)[(len(runs) - 1) // 2]
    if len(runs) > 1:
        chosen.notes["rates_by_round"] = [run.rate for run in runs]
    return chosen


class Bench:
    """One run's figures against one database and (for gRPC figures) one server."""

    def __init__(
        self,
        options: argparse.Namespace,
        database: environment.Database,
        server: environment.Server | None,
    ) -> None:
        self.options = options
        self.database = database
        self.server = server
        self.timing = Timing(options.warmup, options.duration)
        self.run_id = uuid.uuid4().hex[:8]
        self.round = 1  # keys and COPY tenants differ per round: nothing repeats
        self._tokens: dict[str, str] = {}

    def tenant(self, figure: str) -> str:
        """A tenant of this run's own: runs against a shared database never collide."""
        return f"bench-{self.run_id}-{figure}"

    def token(self, figure: str) -> str:
        if figure not in self._tokens:
            self._tokens[figure] = environment.create_token(self.database.url, self.tenant(figure))
        return self._tokens[figure]

    def run(self, figure: str) -> PhaseResult:
        settle(self.database.url)
        busy = cpu.wait_for_quiet(self.options.quiet_wait, QUIET_PCT)
        if busy > QUIET_PCT:
            print(f"machine {busy:.0f}% busy before {figure}; measuring anyway", file=sys.stderr)
        measure = {
            "empty": self.empty_call,
            "record": self.record,
            "copy": self.raw_copy,
            "batch": self.record_batch,
        }[figure]
        print(f"round {self.round}: measuring {figure} ...", file=sys.stderr, flush=True)
        return measure()

    def _grpc_workloads(self, kind: str, token: str, in_flight: int) -> list[Workload]:
        assert self.server is not None
        return [
            Workload(
                kind,
                in_flight=n,
                batch_size=self.options.batch_size,
                target=self.server.target,
                token=token,
                key_prefix=f"{self.run_id}-r{self.round}-{kind}-c{i}",
            )
            for i, n in enumerate(split(in_flight, self.options.clients))
        ]

    def _run(self, name: str, unit: str, workloads: list[Workload]) -> tuple[PhaseResult, Window]:
        return run_phase(
            name,
            unit,
            workloads,
            self.timing,
            server_pid=self.server.pid if self.server else None,
            postmaster_pid=self.database.postmaster_pid,
        )

    def empty_call(self) -> PhaseResult:
        """Baseline for Record: health Check on the same server, with the same
        clients, metadata and calls in flight; the cost of gRPC alone."""
        workloads = self._grpc_workloads("empty", self.token("record"), self.options.concurrency)
        result, _ = self._run("empty call (health Check)", "calls/s", workloads)
        return result

    def record(self) -> PhaseResult:
        """Durable Record calls, one realistic event each, answered after commit."""
        workloads = self._grpc_workloads("record", self.token("record"), self.options.concurrency)
        result, window = self._run("Record", "events/s", workloads)
        result.events_per_commit = events_per_commit(
            self.database.url, self.tenant("record"), window
        )
        return result

    def record_batch(self) -> PhaseResult:
        """RecordBatch calls of --batch-size realistic events, a few in flight."""
        workloads = self._grpc_workloads(
            "batch", self.token("batch"), self.options.batch_concurrency
        )
        name = f"RecordBatch ({self.options.batch_size}/call)"
        result, window = self._run(name, "events/s", workloads)
        result.events_per_commit = events_per_commit(
            self.database.url, self.tenant("batch"), window
        )
        return result

    def raw_copy(self) -> PhaseResult:
        """Baseline for RecordBatch: what the database ingests with nothing in
        front of it. One connection COPYs equivalent rows into the same events
        table, one transaction of --batch-size rows at a time."""
        workload = Workload(
            "copy",
            batch_size=self.options.batch_size,
            database_url=self.database.url,
            tenant=self.tenant(f"copy-r{self.round}"),
            key_prefix=f"{self.run_id}-r{self.round}-copy",
        )
        name = f"raw COPY ({self.options.batch_size} rows/txn)"
        result, _ = self._run(name, "rows/s", [workload])
        result.events_per_commit = float(self.options.batch_size)
        return result


@contextlib.contextmanager
def _server_if_needed(
    figures: list[str], database: environment.Database, workdir: Path
) -> Iterator[environment.Server | None]:
    if set(figures) <= {"copy"}:
        yield None
        return
    with environment.server(database.url, workdir) as server:
        yield server


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    figures = [figure for figure in PHASES if figure in (options.only or PHASES)]
    rounds: dict[str, list[PhaseResult]] = {figure: [] for figure in figures}
    with environment.temp_dir() as workdir, environment.database(workdir) as database:
        facts: dict[str, Any] = {
            "duration": options.duration,
            "warmup": options.warmup,
            "concurrency": options.concurrency,
            "batch_size": options.batch_size,
            "batch_concurrency": options.batch_concurrency,
            "clients": options.clients,
            "rounds": options.rounds,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "platform": platform.platform(),
            "database": database_facts(database.url),
            "embedded_database": database.postmaster_pid is not None,
        }
        with _server_if_needed(figures, database, workdir) as server:
            bench = Bench(options, database, server)
            for number in range(1, options.rounds + 1):
                bench.round = number
                for figure in figures:
                    rounds[figure].append(bench.run(figure))
    results = {figure: median_result(runs) for figure, runs in rounds.items()}
    print(format_report(results, facts))
    path = write_json(results, facts)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
