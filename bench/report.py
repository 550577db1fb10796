"""The printed tables and bench/results/latest.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import cpu
from .phases import PhaseResult

RESULTS_DIR = Path(__file__).parent / "results"
# Above this share of one core used by other programs, say the figures are noisy.
NOISY_OTHERS_PCT = 20.0


@dataclass(frozen=True)
class Ratio:
    """A figure divided by its in-run baseline, and the target it should reach
    (None: the figure's target is absolute, see GOALS). Rates by default; a
    latency ratio (`measure` latency_p99_ms) is the figure's p99 over the
    baseline's, so there lower is better."""

    name: str
    figure: str
    baseline: str
    target: float | None
    measure: str = "rate"  # a PhaseResult attribute

    def value(self, results: dict[str, PhaseResult]) -> float | None:
        if self.figure not in results or self.baseline not in results:
            return None
        if results[self.figure].failure or results[self.baseline].failure:
            return None
        figure = getattr(results[self.figure], self.measure)
        baseline = getattr(results[self.baseline], self.measure)
        return figure / baseline if baseline and figure is not None else None

    @property
    def of_times(self) -> bool:
        return self.measure != "rate"


RATIOS = (
    Ratio("Record / empty call", "record", "empty", 0.50),
    Ratio("RecordBatch / raw COPY", "batch", "copy", 0.40),
    # Another tenant's large RecordBatch calls, back to back, beside Record
    # (ADR 0002's last addendum: they are written in a lane of their own).
    Ratio(
        "Record p50 beside large batches / alone",
        "record-beside-batch",
        "record",
        None,
        "latency_p50_ms",
    ),
    Ratio(
        "Record p99 beside large batches / alone",
        "record-beside-batch",
        "record",
        None,
        "latency_p99_ms",
    ),
    # Issue 3's figures.
    Ratio("Record with proofs / without", "record-proofs", "record-noproofs", 0.90),
    Ratio("inclusion proofs / empty call", "proofs", "empty", None),
    Ratio("VerifyLog / raw read", "verifylog", "rawread", None),
    Ratio("verify_bundle / raw hashlib", "bundle", "bundlehash", None),
    # Writing a complete bundle: one Export, proofs computed by the writer.
    Ratio("write_bundle / raw read", "bundle-write", "rawread", None),
    # Issue 4's.
    Ratio("stream p99 / RecordBatch ack p99", "stream", "stream-ack", None, "latency_p99_ms"),
    Ratio("Export CSV / raw cursor CSV", "export", "rawcsv", 0.60),
    # Issue 5's.
    # Issue 5's target is for its configuration: 100% sampling, no export.
    Ratio("Record traced, no export / untraced", "record-spans", "record-untraced", 0.85),
    Ratio("Record traced, OTLP export / untraced", "record-traced", "record-untraced", None),
    Ratio("Record redacted / unredacted", "record-redacted", "record-unredacted", 0.80),
    # What metrics cost: every call and batch measured, scraped every second.
    Ratio("Record with metrics scraped / without", "record-measured", "record-unmeasured", None),
    # Issue 7's.
    Ratio("retention purge / raw DELETE", "purge", "rawdelete", None),
    # Query within 2x of the same SQL run directly: the SQL's p95 over Query's.
    Ratio(
        "raw SQL p95 / Query p95, latest 100", "sql-latest", "query-latest", 0.5, "latency_p95_ms"
    ),
    Ratio("raw SQL p95 / Query p95, one day", "sql-day", "query-day", 0.5, "latency_p95_ms"),
    # The same over the page's SELECT alone, without the first page's byte cut
    # and log size: the raw SQL of the figures measured before the bench took
    # Query's whole statement (kept comparable with them).
    Ratio(
        "page SQL p95 / Query p95, latest 100",
        "sql-latest-page",
        "query-latest",
        None,
        "latency_p95_ms",
    ),
    Ratio("page SQL p95 / Query p95, one day", "sql-day-page", "query-day", None, "latency_p95_ms"),
    # The best that ratio could be: the SQL over the least any Query of it costs
    # (the SQL, an empty call, the client's parse); and how near Query is to that.
    Ratio("raw SQL p95 / floor p95, one day", "sql-day", "floor-day", None, "latency_p95_ms"),
    Ratio("floor p95 / Query p95, one day", "floor-day", "query-day", None, "latency_p95_ms"),
    Ratio(
        "raw SQL p95 / floor p95, latest 100", "sql-latest", "floor-latest", None, "latency_p95_ms"
    ),
    Ratio(
        "floor p95 / Query p95, latest 100", "floor-latest", "query-latest", None, "latency_p95_ms"
    ),
    # The same with the generic plan Query gives that statement (ADR 0027).
    Ratio(
        "raw SQL generic p95 / Query p95, latest 100",
        "sql-latest-generic",
        "query-latest",
        None,
        "latency_p95_ms",
    ),
    # Where a first page's time goes: Query without its access record (a second
    # page), and the lone durable commit that record waits for (ADR 0012 addendum).
    Ratio("raw SQL p95 / Query next page p95", "sql-latest", "query-next", None, "latency_p95_ms"),
    # And where a second page's time goes: Query's cost for a page of one event,
    # and gRPC's alone (an empty call); the rest grows with the page.
    Ratio("Query next 1 p95 / next 100 p95", "query-one", "query-next", None, "latency_p95_ms"),
    Ratio("empty call p95 / Query next 100 p95", "empty-one", "query-next", None, "latency_p95_ms"),
    Ratio(
        "lone commit p95 / Query p95, latest 100",
        "sql-commit",
        "query-latest",
        None,
        "latency_p95_ms",
    ),
    # Issue 8's: forwarding to a webhook on this machine.
    Ratio("forward / raw read + POST", "forward", "rawpost", None),
    # Issue 9's: the console's first rows against the Query behind them.
    Ratio(
        "Query p95 / console first rows p95",
        "console-query",
        "console-load",
        None,
        "latency_p95_ms",
    ),
    Ratio(
        "forward lag p99 / RecordBatch ack p99",
        "forward-lag",
        "forward-ack",
        None,
        "latency_p99_ms",
    ),
)


@dataclass(frozen=True)
class Goal:
    """An absolute target of issue 3's or 4's: a figure's rate (or seconds, or
    p99 latency) against a limit. Reported, never asserted: this machine's
    speed is not a contract."""

    name: str
    figure: str
    measure: str  # "rate", "seconds" or "latency_p99_ms", a PhaseResult attribute
    at_least: bool  # met when value >= limit; else when value < limit
    limit: float
    unit: str

    def value(self, results: dict[str, PhaseResult]) -> float | None:
        result = results.get(self.figure)
        value = None if result is None else getattr(result, self.measure)
        if result is None or not result.events or value is None:  # not run, or failed
            return None
        return float(value)

    def met(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value < self.limit

    def target(self) -> str:
        return f"{'>=' if self.at_least else '<'} {self.limit:,g} {self.unit}"


GOALS = (
    Goal("inclusion proofs served", "proofs", "rate", True, 2_000, "proofs/s"),
    Goal("VerifyLog", "verifylog", "rate", True, 100_000, "events/s"),
    Goal("offline verify_bundle", "bundle", "seconds", False, 10, "s"),
    Goal("stream delivery p99", "stream", "latency_p99_ms", False, 100, "ms"),
    Goal("Query p95, latest 100 of an action", "query-latest", "latency_p95_ms", False, 50, "ms"),
    Goal("Query p95, one day of a tenant", "query-day", "latency_p95_ms", False, 50, "ms"),
    Goal("console first rows p95, 1M events", "console-load", "latency_p95_ms", False, 1000, "ms"),
)


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _rounds(rounds: int) -> str:
    return f" (median of {rounds} rounds)" if rounds > 1 else ""


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3g}"


def _verdict(ratio: Ratio, value: float | None) -> str:
    if value is None:
        return "n/a (baseline or figure not run, or failed)"
    if ratio.target is None and ratio.of_times:
        return f"no ratio target; {value:,.1f}x the baseline's"
    if ratio.target is None:
        return f"no ratio target; {1 / value:,.1f}x the baseline's time" if value else "-"
    return "ok" if value >= ratio.target else "MISSED"


def _one_shot(result: PhaseResult) -> bool:
    """Timed once from start to end (phases.run_once), not over a window."""
    return result.latency_p50_ms is None and result.calls == 1


def format_report(results: dict[str, PhaseResult], facts: dict[str, Any]) -> str:
    """The three tables: throughput, ratios against their targets, CPU."""
    lines = [
        f"Sealtrail benchmark: {facts['duration']:g} s per figure after {facts['warmup']:g} s"
        f" warm-up{_rounds(facts['rounds'])}, {facts['concurrency']} calls in flight from"
        f" {facts['clients']} client process(es), {facts['cpus']} CPUs,"
        f" PostgreSQL {facts['database']['server_version']}"
        f" (fsync={facts['database']['fsync']},"
        f" synchronous_commit={facts['database']['synchronous_commit']})",
        "",
        f"{'figure':<40} {'rate':>20} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  errors",
    ]
    for result in results.values():
        errors = ", ".join(f"{k}={v}" for k, v in result.errors.items()) or "0"
        rate = "FAILED" if result.failure else f"{_number(result.rate, 0)} {result.unit}"
        lines.append(
            f"{result.name:<40} {rate:>20} {_number(result.latency_p50_ms):>8}"
            f" {_number(result.latency_p95_ms):>8} {_number(result.latency_p99_ms):>8}  {errors}"
        )
    lines += _integrity_notes(results, facts)
    lines += _stream_export_notes(results, facts)
    lines += _beside_batch_notes(results)
    lines += ["", f"{'ratio':<40} {'value':>8} {'target':>8}  verdict"]
    for ratio in RATIOS:
        if ratio.figure not in results and ratio.baseline not in results:
            continue
        value = ratio.value(results)
        target = "-" if ratio.target is None else f">= {ratio.target:.2f}"
        lines.append(f"{ratio.name:<40} {_ratio(value):>8} {target:>8}  {_verdict(ratio, value)}")
    goals = [goal for goal in GOALS if goal.figure in results]
    if goals:
        lines += [
            "",
            f"{'absolute target (issues 3, 4, 7, 9)':<40} {'value':>20} {'target':>20}  verdict",
        ]
    for goal in goals:
        value = goal.value(results)
        shown = "-" if value is None else f"{_number(value, 0 if goal.at_least else 2)} {goal.unit}"
        verdict = "n/a (failed)" if value is None else "ok" if goal.met(value) else "MISSED"
        lines.append(f"{goal.name:<40} {shown:>20} {goal.target():>20}  {verdict}")
    lines += [
        "",
        f"CPU in the window: server, postgres, clients, others in % of one core;"
        f" machine, iowait in % of all {facts['cpus']} cores; saturated: >= 90%"
        " (a process of one core, the machine of all)",
        f"{'figure':<40} {'server':>7} {'postgres':>9} {'clients':>8} {'others':>7}"
        f" {'machine':>8} {'iowait':>7} {'events/commit':>14}  saturated",
    ]
    for result in results.values():
        usage = result.cpu
        lines.append(
            f"{result.name:<40} {_number(usage.get('server_pct_of_core'), 0):>7}"
            f" {_number(usage.get('postgres_pct_of_core'), 0):>9}"
            f" {_number(usage.get('clients_pct_of_core'), 0):>8}"
            f" {_number(usage.get('others_pct_of_core'), 0):>7}"
            f" {_number(usage.get('machine_busy_pct'), 0):>8}"
            f" {_number(usage.get('machine_iowait_pct'), 0):>7}"
            f" {_number(result.events_per_commit):>14}  {cpu.limits(usage)}"
        )
    noisiest = max((r.cpu.get("others_pct_of_core", 0.0) for r in results.values()), default=0)
    if noisiest > NOISY_OTHERS_PCT:
        lines += [
            "",
            f"NOTE: other programs used up to {noisiest:.0f}% of a core during a window;"
            " the figures are noisy. Rerun on a quiet machine.",
        ]
    failed = [result for result in results.values() if result.failure]
    if failed:
        lines += ["", "FAILED (the run exits 1): a figure whose work did not do what it should"]
        lines += [f"  {result.name}: {result.failure}" for result in failed]
    return "\n".join(lines)


def _integrity_notes(results: dict[str, PhaseResult], facts: dict[str, Any]) -> list[str]:
    """The integrity log the figures ran over, and the figures timed once."""
    lines: list[str] = []
    log = facts.get("integrity_log")
    if log:
        sizes = " and ".join(f"{size:,}" for size in log["signed_sizes"])
        lines += [
            "",
            f"integrity log: {log['size']:,} events, recorded in RecordBatch calls of 1,000 in"
            f" {log['seconds']:.1f} s; checkpoints signed on demand at {sizes} (and every"
            " 10 s by the server)",
        ]
    once = [result for result in results.values() if _one_shot(result)]
    if once:
        lines += ["timed once each, from start to end:"]
    for result in once:
        unit = result.unit.removesuffix("/s")
        extra = "".join(
            f", {key.replace('_', ' ')} {value:,}"
            for key, value in result.notes.items()
            if isinstance(value, int)
        )
        lines.append(
            f"  {result.name:<38} {result.events:>9,} {unit:<7} in {result.seconds:7.2f} s{extra}"
        )
    return lines


def _stream_export_notes(results: dict[str, PhaseResult], facts: dict[str, Any]) -> list[str]:
    """What the stream figure's subscribers got, and the log Export read."""
    lines: list[str] = []
    delivery, acks = results.get("stream"), results.get("stream-ack")
    if delivery is not None and acks is not None:
        notes = delivery.notes
        expected = notes["events_acked_in_window"]
        got = (
            f"all {notes['subscribers_with_all']}"
            if notes["subscribers_with_all"] == delivery.in_flight
            else f"{notes['subscribers_with_all']} of {delivery.in_flight}"
        )
        lines += [
            "",
            f"stream: {delivery.in_flight} subscribers in {delivery.clients} processes, one"
            f" connection each; {facts['stream_rate']:,} events/s in RecordBatch calls of"
            f" {facts['stream_batch_size']} started on schedule ({acks.calls} answered in the"
            f" window, {acks.notes['calls_started_late']} started late)",
            f"  {expected:,} events acknowledged in the window: {got} subscribers got every one"
            f" (fewest {notes['fewest_received']:,}); missing {notes['missing_deliveries']:,},"
            f" duplicate {notes['duplicate_deliveries']:,}, out of order"
            f" {notes['out_of_order_deliveries']:,}; delivered before the ack reached the"
            f" recorder {notes['deliveries_before_ack']:,}; slowest"
            f" {_number(notes['latency_max_ms'])} ms",
        ]
    log = facts.get("export_log")
    if log and ("export" in results or "rawcsv" in results):
        lines += [
            "",
            f"export log: {log['size']:,} events (plus one audit_log.exported event per export),"
            f" recorded in RecordBatch calls of 1,000 in {log['seconds']:.1f} s",
        ]
    return lines


def _beside_batch_notes(results: dict[str, PhaseResult]) -> list[str]:
    """What the large batches beside record-beside-batch's Record did."""
    result = results.get("record-beside-batch")
    if result is None:
        return []
    notes = result.notes
    errors = ", ".join(f"{k}={v}" for k, v in notes["large_batch_errors"].items()) or "0"
    lines = [
        "",
        f"record beside large batches: another tenant's RecordBatch calls of"
        f" {notes['large_batch_events']} events of {notes['large_batch_details']:,} details"
        f" ({notes['large_batch_bytes'] / 1e6:.1f} MB), back to back, one in flight;",
        f"  written in the window: {notes['large_batch_events_written']:,} events in"
        f" {notes['large_batch_commits']} commits, {notes['large_batch_events_per_s']:,.0f}"
        f" events/s ({notes['large_batch_mb_per_s']:.1f} MB/s); calls answered in it:"
        f" {notes['large_batch_calls_answered']}, p50 {_number(notes['large_batch_p50_ms'], 0)}"
        f" ms, slowest {_number(notes['large_batch_max_ms'], 0)} ms; errors {errors}",
    ]
    if not notes["large_batch_commits"]:
        lines.append(
            "  NOTE: no large batch was written in the window: Record did not run beside"
            " one. Rerun with a longer --duration."
        )
    return lines


def write_json(results: dict[str, PhaseResult], facts: dict[str, Any]) -> Path:
    """bench/results/latest.json: the run's facts, every figure, the ratios
    and issues 3's and 4's absolute targets."""
    RESULTS_DIR.mkdir(exist_ok=True)
    document = {
        "run": facts,
        "figures": {key: asdict(result) for key, result in results.items()},
        "ratios": {ratio.name: _ratio_json(ratio, results) for ratio in RATIOS},
        "targets": {goal.name: _goal_json(goal, results) for goal in GOALS},
    }
    path = RESULTS_DIR / "latest.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _ratio_json(ratio: Ratio, results: dict[str, PhaseResult]) -> dict[str, Any]:
    value = ratio.value(results)
    met = None if value is None or ratio.target is None else value >= ratio.target
    return {"value": value, "target": ratio.target, "met": met}


def _goal_json(goal: Goal, results: dict[str, PhaseResult]) -> dict[str, Any]:
    value = goal.value(results)
    return {
        "figure": goal.figure,
        "value": value,
        "target": goal.target(),
        "met": None if value is None else goal.met(value),
    }
