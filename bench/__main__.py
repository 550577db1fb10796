"""`python -m bench` (`make bench`): measure every figure in one run, print
the tables, write bench/results/latest.json. Exits 0 even when a target is
missed (the table says MISSED); only a failure to run exits non-zero."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
import psycopg

from sealtrail import AuditClient
from sealtrail.tlog import generate_signer_key

from . import (
    console,
    cpu,
    environment,
    export,
    forwarding,
    integrity,
    retention,
    scale,
    stream,
    tracing,
)
from .load import Window, Workload, batch_bytes
from .metrics import metrics_scraped, metrics_settings
from .phases import (
    PhaseResult,
    Timing,
    database_facts,
    events_per_commit,
    events_written,
    run_beside,
    run_once,
    run_phase,
    settle,
)
from .report import format_report, write_json

# The order they run in. After the first four, issue 3's figures, each next
# to its baseline: Record with proofs stored (the usual server) and without
# (a second server, `serve --bench-no-tree-nodes`); GetInclusionProof;
# raw read vs VerifyLog; raw hashlib vs verify_bundle. Then issue 4's: stream
# delivery (its baseline, the RecordBatch acks, is measured in its window);
# raw cursor CSV vs Export. Then issue 5's: Record with tracing off (the usual
# server) and on (a third server exporting every span to a counting sink;
# a fifth tracing every call and exporting nothing, as issue 5 specifies),
# all from callers that send a traceparent and x-request-id. Then issue 6's:
# Record with redaction (the usual server) and without (a fourth server with
# SEALTRAIL_REDACTION=false). Then issue 7's: batched raw DELETEs of expired
# rows vs the retention purge of as many (tombstones kept); with --scale-events
# loaded, Query latency beside the same SQL run directly, Query's second page
# (no access record) and a lone durable commit, the two parts of a first page;
# the same second page of one event and an empty call one at a time, the parts
# of a second page that do not grow with it; and the floor of a day's Query
# (its SQL, an empty call, the client's parse), the least any server could take.
# Then issue 8's: forwarding a log to a local webhook beside reading, encoding
# and POSTing it here; lag to the webhook at 1,000 events/s beside the acks.
# Then issue 9's: the console's first rows in headless Chromium with 1M events
# in the tenant, beside the same Query made from here. (record-beside-batch
# runs next to its baseline, record: Record of one tenant while another sends
# large RecordBatch calls back to back, ADR 0002's last addendum.)
PHASES = (
    "empty",
    "record",
    "record-beside-batch",
    "copy",
    "batch",
    "record-proofs",
    "record-noproofs",
    "proofs",
    "rawread",
    "verifylog",
    "bundlehash",
    "bundle",
    "stream",
    "rawcsv",
    "export",
    "record-untraced",
    "record-traced",
    "record-spans",
    "record-redacted",
    "record-unredacted",
    "record-unmeasured",
    "record-measured",
    "rawdelete",
    "purge",
    "sql-latest",
    "sql-latest-generic",
    "sql-latest-page",
    "query-latest",
    "query-next",
    "query-one",
    "empty-one",
    "sql-commit",
    "sql-day",
    "sql-day-page",
    "query-day",
    "floor-day",
    "floor-latest",
    "rawpost",
    "forward",
    "forward-lag",
    "console-query",
    "console-load",
)
# A figure and its baseline run in the other order every other round, so
# drift over the run (a growing table, a warming cache) favours neither.
PAIRS = (
    ("record", "record-beside-batch"),
    ("record-proofs", "record-noproofs"),
    ("rawread", "verifylog"),
    ("bundlehash", "bundle"),
    ("rawcsv", "export"),
    ("record-untraced", "record-traced"),
    ("record-unredacted", "record-redacted"),
    ("record-unmeasured", "record-measured"),
    ("rawdelete", "purge"),
    ("sql-latest", "query-latest"),
    ("sql-day", "query-day"),
    ("rawpost", "forward"),
    ("console-query", "console-load"),
)
NEEDS_LOG = frozenset({"proofs", "rawread", "verifylog", "bundlehash", "bundle"})
NEEDS_BUNDLE = frozenset({"bundlehash", "bundle"})
NEEDS_EXPORT_LOG = frozenset({"rawcsv", "export", "rawpost", "forward"})
NEEDS_CONSOLE_LOG = frozenset({"console-query", "console-load"})
NEEDS_SCALE = frozenset(
    {
        "sql-latest",
        "sql-latest-generic",
        "sql-latest-page",
        "query-latest",
        "query-next",
        "query-one",
        "sql-day",
        "sql-day-page",
        "query-day",
        "floor-day",
        "floor-latest",
    }
)
# Measured in the same window as a figure, as its baseline: reported next to it.
COMPANIONS = {"stream": "stream-ack", "forward-lag": "forward-ack"}
# Figures whose median round is the one with the median p99 latency, not rate.
LATENCY_FIGURES = frozenset({"stream", "forward-lag", "record-beside-batch"})
MIN_PROOF_LOG = 10_000  # issue 3: proofs are served from a log of at least this many events
MAX_BATCH = 1000  # the server's RecordBatch limit
QUIET_PCT = 15.0  # machine busy percent under which a figure may start
# record-beside-batch's large batches: 200 events of 3,000 small details, about
# 10 MB a call, well past the appender's LARGE_SUBMISSION_BYTES (1 MiB).
LARGE_BATCH_EVENTS = 200
LARGE_BATCH_DETAILS = 3000
KEY_NAME = "bench.local/log"  # the run's checkpoint signing key, shared by its servers


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
    parser.add_argument(
        "--skip",
        nargs="+",
        choices=PHASES,
        default=[],
        help="run every figure but these (e.g. bundlehash bundle: no bundle to write)",
    )
    parser.add_argument(
        "--integrity-events",
        type=int,
        default=100_000,
        help="events in the log that proofs, VerifyLog and the bundle are measured over",
    )
    parser.add_argument(
        "--subscribers", type=int, default=50, help="StreamEvents subscribers of the stream figure"
    )
    parser.add_argument(
        "--stream-clients",
        type=int,
        default=5,
        help="client processes the subscribers are spread over",
    )
    parser.add_argument(
        "--stream-rate",
        type=int,
        default=1000,
        help="events/s recorded while the subscribers listen (paced RecordBatch calls)",
    )
    parser.add_argument(
        "--stream-batch-size", type=int, default=50, help="events per paced RecordBatch"
    )
    parser.add_argument(
        "--export-events",
        type=int,
        default=100_000,
        help="events in the log that Export and its raw cursor baseline read",
    )
    parser.add_argument(
        "--purge-events",
        type=int,
        default=100_000,
        help="expired events the retention purge and its raw DELETE baseline each remove",
    )
    parser.add_argument(
        "--scale-events",
        type=int,
        default=10_000_000,
        help="events over 100 tenants and 90 days under the Query latency figures",
    )
    options = parser.parse_args(argv)
    options.figures = [
        figure
        for figure in PHASES
        if figure in (options.only or PHASES) and figure not in options.skip
    ]
    if not options.figures:
        parser.error("--only and --skip leave no figure to run")
    if options.integrity_events < 1:
        parser.error("--integrity-events must be at least 1")
    if "proofs" in options.figures and options.integrity_events < MIN_PROOF_LOG:
        parser.error(f"proofs needs --integrity-events of at least {MIN_PROOF_LOG:,}")
    if not 1 <= options.batch_size <= MAX_BATCH:
        parser.error(f"--batch-size must be 1 to {MAX_BATCH}")
    if min(options.concurrency, options.batch_concurrency, options.clients, options.rounds) < 1:
        parser.error("--concurrency, --batch-concurrency, --clients, --rounds must be at least 1")
    if min(options.subscribers, options.stream_clients, options.stream_rate) < 1:
        parser.error("--subscribers, --stream-clients, --stream-rate must be at least 1")
    if not 1 <= options.stream_batch_size <= min(MAX_BATCH, options.stream_rate):
        parser.error(f"--stream-batch-size must be 1 to {MAX_BATCH} and at most --stream-rate")
    if options.export_events < 1:
        parser.error("--export-events must be at least 1")
    fewest = scale.fewest_events(options.figures)
    if options.scale_events < fewest:  # else a page's assertion fails mid-run
        parser.error(f"{', '.join(sorted(NEEDS_SCALE & set(options.figures)))} need"
                     f" --scale-events of at least {fewest:,} (a page in each tenant)")  # fmt: skip
    if options.duration <= 0 or options.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return options


def split(total: int, parts: int) -> list[int]:
    """`total` calls in flight shared as evenly as can be by at most `parts` clients."""
    parts = min(parts, total)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def round_order(figures: list[str], number: int) -> list[str]:
    """`figures` in run order for round `number`: each pair swapped in even rounds."""
    order = list(figures)
    if number % 2 == 0:
        for first, second in PAIRS:
            if first in order and second in order:
                i, j = order.index(first), order.index(second)
                order[i], order[j] = order[j], order[i]
    return order


def median_round(figure: str, runs: list[PhaseResult]) -> int:
    """Which round is the median (the lower middle one of an even count): by
    rate, or for a latency figure by p99; every round's value is kept in its
    notes."""
    if figure in LATENCY_FIGURES:
        key, values = "p99_ms_by_round", [run.latency_p99_ms or 0.0 for run in runs]
    else:
        key, values = "rates_by_round", [run.rate for run in runs]
    chosen = sorted(range(len(runs)), key=values.__getitem__)[(len(runs) - 1) // 2]
    if len(runs) > 1:
        runs[chosen].notes[key] = values
    return chosen


class Bench:
    """One run's figures against one database and (for gRPC figures) one server,
    plus a second one storing no tree nodes for record-noproofs."""

    def __init__(
        self,
        options: argparse.Namespace,
        database: environment.Database,
        server: environment.Server | None,
        *,
        bare_server: environment.Server | None = None,
        traced_server: environment.Server | None = None,
        spans_server: environment.Server | None = None,
        unredacted_server: environment.Server | None = None,
        measured_server: environment.Server | None = None,
        spans: tracing.Received | None = None,
        verifier_key: str = "",
        workdir: Path,
    ) -> None:
        self.options = options
        self.database = database
        self.server = server
        self.bare_server = bare_server
        self.traced_server = traced_server
        self.spans_server = spans_server
        self.unredacted_server = unredacted_server
        self.measured_server = measured_server
        self.spans = spans
        self.verifier_key = verifier_key
        self.workdir = workdir
        self.timing = Timing(options.warmup, options.duration)
        self.run_id = uuid.uuid4().hex[:8]
        self.round = 1  # keys and COPY tenants differ per round: nothing repeats
        self._tokens: dict[str, str] = {}
        # Made once, when a figure first needs them; not measured (but see `once`).
        self.log: integrity.IntegrityLog | None = None
        self.bundle: Path | None = None
        self.export_log: integrity.IntegrityLog | None = None
        self.scale_log: scale.ScaleLog | None = None
        self.console_token: str | None = None
        self._scale_clients_made: dict[str, AuditClient] = {}
        self.once: dict[str, PhaseResult] = {}  # figures timed once per run: writing the bundle
        # Baselines measured with a figure (see COMPANIONS), one per round.
        self.companions: dict[str, list[PhaseResult]] = {}

    def tenant(self, figure: str) -> str:
        """A tenant of this run's own: runs against a shared database never collide."""
        return f"bench-{self.run_id}-{figure}"

    def token(self, figure: str) -> str:
        if figure not in self._tokens:
            self._tokens[figure] = environment.create_token(self.database.url, self.tenant(figure))
        return self._tokens[figure]

    def run(self, figure: str) -> PhaseResult:
        if figure in NEEDS_LOG and self.log is None:
            self.log = self._make_log()
        if figure in NEEDS_BUNDLE and self.bundle is None:
            self.bundle = self._write_bundle()
        if figure in NEEDS_SCALE and self.scale_log is None:
            count = self.options.scale_events
            print(f"loading {count:,} events over {scale.TENANTS} tenants ...", flush=True)
            self.scale_log = scale.load(self.database.url, self.run_id, count)
            print(f"  loaded in {self.scale_log.seconds:.1f} s", flush=True)
        if figure in NEEDS_CONSOLE_LOG and self.console_token is None:
            tenant = self.tenant("console")
            print(f"loading {console.EVENTS:,} events into one tenant ...", flush=True)
            seconds = scale.load_tenant(self.database.url, tenant, console.EVENTS)
            print(f"  loaded in {seconds:.1f} s", flush=True)
            self.console_token = self.token("console")
        if figure in NEEDS_EXPORT_LOG and self.export_log is None:
            self.export_log = self._make_log("export", self.options.export_events)
        self._settle_and_wait(figure)
        measure = {
            "empty": self.empty_call,
            "record": self.record,
            "record-beside-batch": self.record_beside_batch,
            "copy": self.raw_copy,
            "batch": self.record_batch,
            "record-proofs": self.record_proofs,
            "record-noproofs": self.record_noproofs,
            "proofs": self.inclusion_proofs,
            "rawread": self.raw_read,
            "verifylog": self.verify_log,
            "bundlehash": self.hash_bundle,
            "bundle": self.verify_bundle,
            "stream": self.stream_delivery,
            "rawcsv": self.raw_csv,
            "export": self.export_csv,
            "record-untraced": self.record_untraced,
            "record-traced": self.record_traced,
            "record-spans": self.record_spans,
            "record-redacted": self.record_redacted,
            "record-unredacted": self.record_unredacted,
            "record-unmeasured": self.record_unmeasured,
            "record-measured": self.record_measured,
            "rawdelete": self.raw_delete,
            "purge": self.purge,
            "sql-latest": self.sql_latest,
            "sql-latest-generic": self.sql_latest_generic,
            "sql-latest-page": self.sql_latest_page,
            "query-latest": self.query_latest,
            "query-next": self.query_next,
            "query-one": self.query_one,
            "empty-one": self.empty_one,
            "sql-commit": self.sql_commit,
            "sql-day": self.sql_day,
            "sql-day-page": self.sql_day_page,
            "query-day": self.query_day,
            "floor-day": self.floor_day,
            "floor-latest": self.floor_latest,
            "rawpost": self.raw_post,
            "forward": self.forward,
            "forward-lag": self.forward_lag,
            "console-query": self.console_query,
            "console-load": self.console_load,
        }[figure]
        print(f"round {self.round}: measuring {figure} ...", file=sys.stderr, flush=True)
        return measure()

    def _settle_and_wait(self, figure: str) -> None:
        settle(self.database.url)
        busy = cpu.wait_for_quiet(self.options.quiet_wait, QUIET_PCT)
        if busy > QUIET_PCT:
            print(f"machine {busy:.0f}% busy before {figure}; measuring anyway", file=sys.stderr)

    def _grpc_workloads(
        self,
        kind: str,
        token: str,
        in_flight: int,
        *,
        server: environment.Server | None = None,
        label: str | None = None,
        tree_size: int = 0,
        traced: bool = False,
    ) -> list[Workload]:
        server = server or self.server
        assert server is not None
        return [
            Workload(
                kind,
                in_flight=n,
                batch_size=self.options.batch_size,
                target=server.target,
                token=token,
                key_prefix=f"{self.run_id}-r{self.round}-{label or kind}-c{i}",
                tree_size=tree_size,
                traced=traced,
            )
            for i, n in enumerate(split(in_flight, self.options.clients))
        ]

    def _run(
        self,
        name: str,
        unit: str,
        workloads: list[Workload],
        server: environment.Server | None = None,
    ) -> tuple[PhaseResult, Window]:
        server = server or self.server
        return run_phase(
            name,
            unit,
            workloads,
            self.timing,
            server_pid=server.pid if server else None,
            postmaster_pid=self.database.postmaster_pid,
        )

    def _watched(self) -> cpu.Watched:
        """For figures timed once: the server, PostgreSQL, and this process as the client."""
        server = self.server.pid if self.server else None
        return cpu.Watched(server, self.database.postmaster_pid, [os.getpid()])

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

    def record_beside_batch(self) -> PhaseResult:
        """Record as `record` measures it (same clients, calls in flight and
        events), on a tenant of its own, while another tenant's client sends
        RecordBatch calls of LARGE_BATCH_EVENTS events of LARGE_BATCH_DETAILS
        small details (about 10 MB) back to back, one in flight, from the
        same start: what a large batch costs another tenant's Record (the
        appender writes it in a lane of its own, ADR 0002's last addendum).
        Its baseline is `record`, of the same round; the batches' own rate
        and latency are in its notes."""
        figure = "record-beside-batch"
        assert self.server is not None
        workloads = self._grpc_workloads(
            "record", self.token(figure), self.options.concurrency, label=figure
        )
        batches = Workload(
            "batch",
            batch_size=LARGE_BATCH_EVENTS,
            details=LARGE_BATCH_DETAILS,
            target=self.server.target,
            token=self.token("large-batch"),
            key_prefix=f"{self.run_id}-r{self.round}-large-batch",
        )
        size = batch_bytes(batches)  # before the clients start: not in the window
        result, beside, window = run_beside(
            "Record beside large RecordBatch",
            "events/s",
            workloads,
            [batches],
            self.timing,
            server_pid=self.server.pid,
            postmaster_pid=self.database.postmaster_pid,
            beside_name=f"RecordBatch ({LARGE_BATCH_EVENTS} x {LARGE_BATCH_DETAILS:,} details)",
        )
        result.events_per_commit = events_per_commit(self.database.url, self.tenant(figure), window)
        # A call may take longer than the window: what the database received
        # in it says the batches' rate even when few of their answers fall in it.
        written, commits = events_written(self.database.url, self.tenant("large-batch"), window)
        result.notes.update(
            large_batch_events=LARGE_BATCH_EVENTS,
            large_batch_details=LARGE_BATCH_DETAILS,
            large_batch_bytes=size,
            large_batch_calls_answered=beside.calls,
            large_batch_p50_ms=beside.latency_p50_ms,
            large_batch_max_ms=beside.latency_p99_ms,  # of a few calls: the slowest
            large_batch_events_written=written,
            large_batch_commits=commits,
            large_batch_events_per_s=round(written / window.seconds, 1),
            large_batch_mb_per_s=round(
                written / window.seconds * size / LARGE_BATCH_EVENTS / 1e6, 2
            ),
            large_batch_errors=beside.errors,
        )
        return result

    # --- issue 3: proofs, VerifyLog, offline bundles --------------------------

    def record_proofs(self) -> PhaseResult:
        """Record as above, on the usual server: Merkle nodes stored with each commit."""
        return self._record_on(self.server, "record-proofs", "Record, proofs stored")

    def record_noproofs(self) -> PhaseResult:
        """Record on a second server over the same database, started with
        --bench-no-tree-nodes (and no periodic checkpoints, which
        need the nodes): what Record costs without proof storage."""
        return self._record_on(self.bare_server, "record-noproofs", "Record, no proofs stored")

    def _record_on(
        self,
        server: environment.Server | None,
        figure: str,
        name: str,
        *,
        traced: bool = False,
    ) -> PhaseResult:
        return self._record_window(server, figure, name, traced=traced)[0]

    def _record_window(
        self,
        server: environment.Server | None,
        figure: str,
        name: str,
        *,
        traced: bool = False,
    ) -> tuple[PhaseResult, Window]:
        workloads = self._grpc_workloads(
            "record",
            self.token(figure),
            self.options.concurrency,
            server=server,
            label=figure,
            traced=traced,
        )
        result, window = self._run(name, "events/s", workloads, server)
        result.events_per_commit = events_per_commit(self.database.url, self.tenant(figure), window)
        return result, window

    # --- issue 6: redaction ---------------------------------------------------

    def record_redacted(self) -> PhaseResult:
        """Record on the usual server: every event scanned for secrets (the
        bench's events hold none, so this is the price every event pays)."""
        return self._record_on(self.server, "record-redacted", "Record, redaction on")

    def record_unredacted(self) -> PhaseResult:
        """Record on a fourth server started with SEALTRAIL_REDACTION=false."""
        return self._record_on(self.unredacted_server, "record-unredacted", "Record, redaction off")

    # --- metrics ---------------------------------------------------------------

    def record_unmeasured(self) -> PhaseResult:
        """Record on the usual server (no OTEL_* settings: no metrics)."""
        return self._record_on(self.server, "record-unmeasured", "Record, metrics off")

    def record_measured(self) -> PhaseResult:
        """The same calls on a sixth server serving its metrics for Prometheus,
        scraped every second meanwhile (Prometheus's default is every 15 s):
        what measuring every call and batch, and answering scrapes, cost."""
        server = self.measured_server
        assert server is not None and server.metrics_url is not None
        with metrics_scraped(server.metrics_url, every=1.0) as scrapes:
            result = self._record_on(server, "record-measured", "Record, metrics on, scraped 1/s")
        result.notes["scrapes"] = scrapes.count
        result.notes["scrape_ms_max"] = round(scrapes.longest * 1000, 1)
        result.notes["scrape_bytes"] = scrapes.size
        return result

    # --- issue 5: tracing -----------------------------------------------------

    def record_untraced(self) -> PhaseResult:
        """Record on the usual server (no OTEL_* settings: no spans), from
        callers sending a traceparent and an x-request-id with each call."""
        return self._record_on(self.server, "record-untraced", "Record, tracing off", traced=True)

    def record_traced(self) -> PhaseResult:
        """The same calls on a third server tracing every call at 100%
        sampling and exporting the spans over OTLP/gRPC to a counting sink.
        Notes how many of the window's calls the sink got a server span of."""
        assert self.spans is not None
        result, window = self._record_window(
            self.traced_server, "record-traced", "Record, tracing on (100%)", traced=True
        )
        time.sleep(6)  # the batch span processor sends at least every 5 s
        result.notes["calls"] = result.calls
        result.notes["server_spans_of_window"] = self.spans.server_spans_between(
            window.start, window.end
        )
        result.notes["spans_exported_so_far"] = self.spans.spans
        return result

    def record_spans(self) -> PhaseResult:
        """Issue 5's own configuration: the same calls on a fifth server that
        traces every call at 100% sampling (spans made, attributes set, ended)
        and exports them nowhere (OTEL_TRACES_EXPORTER=none): the price of the
        instrumentation itself, without record-traced's OTLP encoding."""
        return self._record_on(
            self.spans_server,
            "record-spans",
            "Record, tracing on (100%), no export",
            traced=True,
        )

    def inclusion_proofs(self) -> PhaseResult:
        """GetInclusionProof of random seqs of the integrity log at its last
        checkpoint's size, with as many calls in flight as Record."""
        log = self._the_log()
        workloads = self._grpc_workloads(
            "proof", log.token, self.options.concurrency, tree_size=log.size
        )
        result, _ = self._run(f"GetInclusionProof (size {log.size:,})", "proofs/s", workloads)
        return result

    def raw_read(self) -> PhaseResult:
        """Baseline for VerifyLog: this process reads the log's rows and hashes each record."""
        log = self._the_log()
        with psycopg.connect(self.database.url) as conn:
            work = integrity.raw_read(conn, log.tenant)
            return run_once(
                f"raw read + hashlib ({log.size:,} rows)", "rows/s", work, self._watched()
            )

    def verify_log(self) -> PhaseResult:
        """One VerifyLog call over the integrity log (admin token)."""
        log = self._the_log()
        assert self.server is not None
        with AuditClient(
            self.server.target,
            token=log.token,
            timeout=integrity.LONG_CALL_TIMEOUT,
            max_attempts=1,
        ) as client:
            client.get_verifier_keys()  # the channel is connected before the timing starts
            work = integrity.verify_log(client, log.size)
            return run_once(f"VerifyLog ({log.size:,} events)", "events/s", work, self._watched())

    def hash_bundle(self) -> PhaseResult:
        """Baseline for verify_bundle: SHA-256 of each line of the bundle's two files."""
        assert self.bundle is not None
        work = integrity.hash_bundle(self.bundle)
        return run_once("raw hashlib of the bundle", "records/s", work, self._watched())

    def verify_bundle(self) -> PhaseResult:
        """The offline verifier over the complete bundle, trusting only the run's key."""
        assert self.bundle is not None
        work = integrity.verify(self.bundle, self.verifier_key)
        name = f"verify_bundle ({self._the_log().size:,} records)"
        return run_once(name, "records/s", work, self._watched())

    def _the_log(self) -> integrity.IntegrityLog:
        assert self.log is not None
        return self.log

    def _make_log(
        self, figure: str = "integrity", events: int | None = None
    ) -> integrity.IntegrityLog:
        """A tenant's log of `events` (default --integrity-events) events, in
        RecordBatch calls of 1,000: the integrity log, or the export log."""
        assert self.server is not None
        events = events or self.options.integrity_events
        print(f"making the {figure} log: {events:,} events ...", file=sys.stderr, flush=True)
        log = integrity.make_log(
            self.server.target,
            tenant=self.tenant(figure),
            token=self.token(figure),
            events=events,
            key_prefix=f"{self.run_id}-{figure}",
        )
        print(f"  made in {log.seconds:.1f} s", file=sys.stderr, flush=True)
        return log

    def _write_bundle(self) -> Path:
        """write_bundle with no filter (one Export, the proofs computed by the
        writer); timed once and reported as bundle-write."""
        assert self.server is not None
        log = self._the_log()
        path = self.workdir / "bundle"
        self._settle_and_wait("bundle-write")
        print(f"writing the bundle: {log.size:,} records ...", file=sys.stderr, flush=True)
        with AuditClient(self.server.target, token=log.token) as client:
            self.once["bundle-write"] = result = run_once(
                "write_bundle (16 threads)",
                "records/s",
                integrity.write(client, path),
                self._watched(),
                in_flight=16,  # write_bundle's default workers
            )
        print(f"  written in {result.seconds:.1f} s", file=sys.stderr, flush=True)
        return path

    # --- issue 4: StreamEvents, Export ----------------------------------------

    def stream_delivery(self) -> PhaseResult:
        """--subscribers StreamEvents calls (no filter, live start) on one
        tenant while paced RecordBatch calls record --stream-rate events/s:
        latency from each event's acknowledgement to each subscriber. The
        acks themselves, from the same window, are its baseline (stream-ack)."""
        assert self.server is not None
        load = stream.StreamLoad(
            target=self.server.target,
            token=self.token("stream"),
            subscribers=self.options.subscribers,
            processes=self.options.stream_clients,
            rate=self.options.stream_rate,
            batch_size=self.options.stream_batch_size,
            key_prefix=f"{self.run_id}-r{self.round}-stream",
        )
        watched = cpu.Watched(self.server.pid, self.database.postmaster_pid, [])
        delivery, acks, window = stream.run(load, self.timing, watched)
        per_commit = events_per_commit(self.database.url, self.tenant("stream"), window)
        delivery.events_per_commit = acks.events_per_commit = per_commit
        self.companions.setdefault(COMPANIONS["stream"], []).append(acks)
        return delivery

    # --- issue 7: Query at scale ----------------------------------------------

    def _scale_clients(self) -> dict[str, AuditClient]:
        assert self.scale_log is not None and self.server is not None
        if not self._scale_clients_made:
            for tenant in self.scale_log.tenants:
                token = environment.create_token(self.database.url, tenant)
                self._scale_clients_made[tenant] = AuditClient(self.server.target, token=token)
        return self._scale_clients_made

    def query_latest(self) -> PhaseResult:
        """Query: the latest 100 events of one action of a tenant (one call at a time)."""
        assert self.scale_log is not None
        call = scale.latest_by_query(self.scale_log, self._scale_clients())
        return scale.measure("Query, latest 100 of an action", call, self._watched())

    def sql_latest(self) -> PhaseResult:
        """Baseline: the same SQL, run directly on the same database."""
        return self._latest_by_sql("raw SQL, latest 100 of an action", plan_cache_mode="auto")

    def sql_latest_generic(self) -> PhaseResult:
        """The same SQL with a generic plan, as Query runs it (ADR 0027), though
        as the URL's user like sql-latest (no row-level security): about the
        database's part of Query's page, where sql-latest adds the planning
        PostgreSQL does at each run for a client that asks nothing else."""
        return self._latest_by_sql(
            "raw SQL, latest 100 of an action, generic plan", plan_cache_mode="force_generic_plan"
        )

    def sql_latest_page(self) -> PhaseResult:
        """The page's SELECT alone (scale._bare_page): the raw SQL of the
        figures measured before sql-latest ran Query's whole statement."""
        assert self.scale_log is not None
        with psycopg.connect(self.database.url, autocommit=True) as conn:
            call = scale.latest_page_by_sql(self.scale_log, conn)
            return scale.measure("raw SQL, the page alone, latest 100", call, self._watched())

    def _latest_by_sql(self, name: str, *, plan_cache_mode: str) -> PhaseResult:
        assert self.scale_log is not None
        with psycopg.connect(self.database.url, autocommit=True) as conn:
            conn.execute("SELECT set_config('plan_cache_mode', %s, false)", [plan_cache_mode])
            call = scale.latest_by_sql(self.scale_log, conn)
            return scale.measure(name, call, self._watched())

    def query_next(self) -> PhaseResult:
        """Query's second page of the same: no access record (only a first page
        writes one), so Query's own cost beside the raw SQL."""
        assert self.scale_log is not None
        call = scale.next_page_by_query(self.scale_log, self._scale_clients())
        return scale.measure("Query, next 100 of an action", call, self._watched())

    def query_one(self) -> PhaseResult:
        """The same second page of one event: Query's cost that does not grow
        with the page (gRPC, interceptors, filter, SQL of one row)."""
        assert self.scale_log is not None
        call = scale.next_page_by_query(self.scale_log, self._scale_clients(), page_size=1)
        return scale.measure("Query, next 1 of an action", call, self._watched())

    def empty_one(self) -> PhaseResult:
        """An empty call (health Check), one at a time: gRPC's part of any call."""
        assert self.server is not None
        call = scale.empty_call(self.server.target)
        return scale.measure("empty call, one at a time", call, self._watched())

    def sql_commit(self) -> PhaseResult:
        """A lone durable commit: what a first page's access record waits for."""
        with psycopg.connect(self.database.url, autocommit=True) as conn:
            call = scale.lone_commit(conn)
            return scale.measure("raw SQL, a lone commit", call, self._watched())

    def query_day(self) -> PhaseResult:
        """Query: one day of a tenant, newest first, a page of 1,000."""
        assert self.scale_log is not None
        call = scale.day_by_query(self.scale_log, self._scale_clients())
        return scale.measure("Query, one day of a tenant", call, self._watched())

    def sql_day(self) -> PhaseResult:
        assert self.scale_log is not None
        with psycopg.connect(self.database.url, autocommit=True) as conn:
            call = scale.day_by_sql(self.scale_log, conn)
            return scale.measure("raw SQL, one day of a tenant", call, self._watched())

    def sql_day_page(self) -> PhaseResult:
        """The page's SELECT alone, as sql_latest_page."""
        assert self.scale_log is not None
        with psycopg.connect(self.database.url, autocommit=True) as conn:
            call = scale.day_page_by_sql(self.scale_log, conn)
            return scale.measure("raw SQL, the page alone, one day", call, self._watched())

    def floor_day(self) -> PhaseResult:
        """The least a Query of one day could take: its raw SQL, framed, an
        empty call, and the client's parse (scale.day_floor)."""
        assert self.scale_log is not None and self.server is not None
        with psycopg.connect(self.database.url, autocommit=True) as conn:
            call = scale.day_floor(self.scale_log, conn, self.server.target)
            return scale.measure("floor of Query, one day of a tenant", call, self._watched())

    def floor_latest(self) -> PhaseResult:
        """The least a Query of the latest 100 of an action could take: its raw
        SQL with Query's generic plan, framed, an empty call, and the client's
        parse (scale.latest_floor)."""
        assert self.scale_log is not None and self.server is not None
        with psycopg.connect(self.database.url, autocommit=True) as conn:
            conn.execute("SELECT set_config('plan_cache_mode', 'force_generic_plan', false)")
            call = scale.latest_floor(self.scale_log, conn, self.server.target)
            return scale.measure("floor of Query, latest 100 of an action", call, self._watched())

    # --- issue 9: the console -------------------------------------------------

    def console_load(self) -> PhaseResult:
        """The console's first rows, in headless Chromium, with 1M events in the tenant."""
        assert self.server is not None and self.server.console_url is not None
        assert self.console_token is not None
        return console.first_rows(self.server.console_url, self.console_token, self._watched())

    def console_query(self) -> PhaseResult:
        """Baseline: the console's first Query, as a gRPC call from this process."""
        assert self.server is not None and self.console_token is not None
        return console.query_page(self.server.target, self.console_token, self._watched())

    # --- issue 8: forwarding --------------------------------------------------

    def raw_post(self) -> PhaseResult:
        """Baseline for forward: the export log's rows read, encoded as webhook
        requests by the server's encoder and POSTed by this process."""
        log = self._the_export_log()
        endpoint = forwarding.Endpoint()
        try:
            work = forwarding.post_log(self.database.url, log.tenant, endpoint)
            return run_once("raw read + POST", "events/s", work, self._watched())
        finally:
            endpoint.close()

    def forward(self) -> PhaseResult:
        """A webhook sink created from_beginning on the export log: events/s to the last arrival."""
        log = self._the_export_log()
        assert self.server is not None
        endpoint = forwarding.Endpoint()
        try:
            work = forwarding.forward_log(self.server.target, log.token, log.size, endpoint)
            return run_once(f"forward to a webhook ({log.size:,}+ events)", "events/s", work,
                            self._watched())  # fmt: skip
        finally:
            endpoint.close()

    def forward_lag(self) -> PhaseResult:
        """Lag from acknowledgement to arrival at a webhook, --stream-rate events/s
        recorded; the acks from the same window are its baseline (forward-ack)."""
        assert self.server is not None
        tenant = f"forward-lag-r{self.round}"
        token = self.token(tenant)
        load = stream.StreamLoad(
            target=self.server.target,
            token=token,
            subscribers=0,
            processes=0,
            rate=self.options.stream_rate,
            batch_size=self.options.stream_batch_size,
            key_prefix=f"{self.run_id}-r{self.round}-forward",
        )
        endpoint = forwarding.Endpoint()
        try:
            watched = cpu.Watched(self.server.pid, self.database.postmaster_pid, [])
            delivery, acks, _ = forwarding.lag(
                self.server.target, token, load, self.timing, watched, endpoint
            )
        finally:
            endpoint.close()
        self.companions.setdefault(COMPANIONS["forward-lag"], []).append(acks)
        return delivery

    # --- issue 7: retention ---------------------------------------------------

    def raw_delete(self) -> PhaseResult:
        """Baseline for the purge: batched DELETEs of a tenant's expired rows."""
        tenant = self.tenant(f"rawdelete-r{self.round}")
        count = self.options.purge_events
        retention.load_expired(self.database.url, tenant, count)
        work = retention.raw_delete(self.database.url, tenant)
        return run_once(f"raw DELETE ({count:,} rows, 5,000/txn)", "rows/s", work, self._watched())

    def purge(self) -> PhaseResult:
        """The retention purge of as many expired events, tombstones kept."""
        tenant = self.tenant(f"purge-r{self.round}")
        count = self.options.purge_events
        retention.load_expired(self.database.url, tenant, count)
        work = retention.purge(self.database.url, tenant)
        check = retention.check_purge(self.database.url, tenant, count)
        name = f"retention purge ({count:,} events)"
        return run_once(name, "events/s", work, self._watched(), check=check)

    def raw_csv(self) -> PhaseResult:
        """Baseline for Export: this process reads the export log's rows
        through a server-side cursor and writes them with the server's CsvEncoder."""
        log = self._the_export_log()
        with psycopg.connect(self.database.url) as conn:
            work = export.raw_csv(conn, log.tenant)
            return run_once("raw cursor + CsvEncoder", "rows/s", work, self._watched())

    def export_csv(self) -> PhaseResult:
        """One Export (CSV, no filter) of the export log, this process reading every chunk."""
        log = self._the_export_log()
        assert self.server is not None
        with export.connect(self.server.target) as channel:
            work = export.export_csv(channel, log.token)
            return run_once(f"Export CSV ({log.size:,}+ events)", "rows/s", work, self._watched())

    def _the_export_log(self) -> integrity.IntegrityLog:
        assert self.export_log is not None
        return self.export_log

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
    figures: list[str],
    database: environment.Database,
    workdir: Path,
    settings: dict[str, str],
) -> Iterator[environment.Server | None]:
    if set(figures) <= {"copy"}:
        yield None
        return
    forwarding_to_the_bench = {
        **settings,
        "SEALTRAIL_FORWARD_MAX_SINKS": "1000",
        "SEALTRAIL_FORWARD_ALLOW_HTTP": "true",
        "SEALTRAIL_FORWARD_ALLOW_NETWORKS": "127.0.0.0/8",
        "SEALTRAIL_CONSOLE_LISTEN": "127.0.0.1:0",
    }
    with environment.server(database.url, workdir, settings=forwarding_to_the_bench) as server:
        yield server


@contextlib.contextmanager
def _bare_server_if_needed(
    figures: list[str],
    database: environment.Database,
    workdir: Path,
    settings: dict[str, str],
) -> Iterator[environment.Server | None]:
    """The second server, storing no Merkle nodes, for record-noproofs."""
    if "record-noproofs" not in figures:
        yield None
        return
    bare = {**settings, "SEALTRAIL_CHECKPOINT_INTERVAL": "0"}
    with environment.server(
        database.url, workdir, name="bare-server", settings=bare, flags=["--bench-no-tree-nodes"]
    ) as server:
        yield server


@contextlib.contextmanager
def _traced_server_if_needed(
    figures: list[str],
    database: environment.Database,
    workdir: Path,
    settings: dict[str, str],
) -> Iterator[tuple[environment.Server | None, tracing.Received | None]]:
    """The third server, tracing every call into a counting OTLP sink, for record-traced."""
    if "record-traced" not in figures:
        yield None, None
        return
    with tracing.sink() as (endpoint, received):
        traced = {**settings, **tracing.traced_settings(endpoint)}
        with environment.server(
            database.url, workdir, name="traced-server", settings=traced
        ) as server:
            yield server, received


@contextlib.contextmanager
def _spans_server_if_needed(
    figures: list[str],
    database: environment.Database,
    workdir: Path,
    settings: dict[str, str],
) -> Iterator[environment.Server | None]:
    """The fifth server, tracing every call and exporting nothing, for record-spans."""
    if "record-spans" not in figures:
        yield None
        return
    spans_only = {**settings, **tracing.unexported_settings()}
    with environment.server(
        database.url, workdir, name="spans-server", settings=spans_only
    ) as server:
        yield server


@contextlib.contextmanager
def _measured_server_if_needed(
    figures: list[str],
    database: environment.Database,
    workdir: Path,
    settings: dict[str, str],
) -> Iterator[environment.Server | None]:
    """The sixth server, serving its metrics for Prometheus, for record-measured."""
    if "record-measured" not in figures:
        yield None
        return
    measured = {**settings, **metrics_settings()}
    with environment.server(
        database.url, workdir, name="measured-server", settings=measured
    ) as server:
        yield server


@contextlib.contextmanager
def _unredacted_server_if_needed(
    figures: list[str],
    database: environment.Database,
    workdir: Path,
    settings: dict[str, str],
) -> Iterator[environment.Server | None]:
    """The fourth server, redacting nothing, for record-unredacted."""
    if "record-unredacted" not in figures:
        yield None
        return
    bare = {**settings, "SEALTRAIL_REDACTION": "false"}
    with environment.server(
        database.url, workdir, name="unredacted-server", settings=bare
    ) as server:
        yield server


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM unwinds the run as Ctrl-C does: its servers and embedded
    PostgreSQL are stopped and its temp dir removed (else they outlive it)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    figures = options.figures
    rounds: dict[str, list[PhaseResult]] = {figure: [] for figure in figures}
    signer = generate_signer_key(KEY_NAME)
    with environment.temp_dir() as workdir, environment.database(workdir) as database:
        # Every server of the run signs with one key, and keeps nothing in $HOME.
        settings = {
            "SEALTRAIL_SIGNING_KEY": signer.text(),
            "SEALTRAIL_DATA_DIR": str(workdir / "data"),
            # Export's rate limit (30 a minute per tenant) is not what is measured.
            "SEALTRAIL_EXPORT_RATE_LIMIT": "1000000",
            # Only the main server forwards (below), to the bench's endpoint on 127.0.0.1.
            "SEALTRAIL_FORWARD_MAX_SINKS": "0",
        }
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
            "integrity_events": options.integrity_events,
            "subscribers": options.subscribers,
            "stream_clients": options.stream_clients,
            "stream_rate": options.stream_rate,
            "stream_batch_size": options.stream_batch_size,
            "export_events": options.export_events,
            "verifier_key": signer.verifier.text(),
        }
        with (
            _server_if_needed(figures, database, workdir, settings) as server,
            _bare_server_if_needed(figures, database, workdir, settings) as bare_server,
            _traced_server_if_needed(figures, database, workdir, settings) as (
                traced_server,
                spans,
            ),
            _spans_server_if_needed(figures, database, workdir, settings) as spans_server,
            _unredacted_server_if_needed(figures, database, workdir, settings) as unredacted_server,
            _measured_server_if_needed(figures, database, workdir, settings) as measured_server,
        ):
            bench = Bench(
                options,
                database,
                server,
                bare_server=bare_server,
                traced_server=traced_server,
                spans_server=spans_server,
                unredacted_server=unredacted_server,
                measured_server=measured_server,
                spans=spans,
                verifier_key=signer.verifier.text(),
                workdir=workdir,
            )
            for number in range(1, options.rounds + 1):
                bench.round = number
                for figure in round_order(figures, number):
                    rounds[figure].append(bench.run(figure))
        for name, made in (("integrity_log", bench.log), ("export_log", bench.export_log)):
            if made is not None:
                log = asdict(made)
                del log["token"]
                facts[name] = log
    results: dict[str, PhaseResult] = {}
    for figure, runs in rounds.items():
        chosen = median_round(figure, runs)
        if figure in COMPANIONS:  # its baseline first, from the same round
            results[COMPANIONS[figure]] = bench.companions[COMPANIONS[figure]][chosen]
        results[figure] = runs[chosen]
    results.update(bench.once)
    print(format_report(results, facts))
    path = write_json(results, facts)
    print(f"\nresults: {path}")
    return 1 if any(result.failure for result in results.values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # its servers and database stopped on the way out
        print("bench: stopped by SIGINT", file=sys.stderr)
        sys.exit(130)
