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
    """A figure divided by its in-run baseline, and the target it should reach."""

    name: str
    figure: str
    baseline: str
    target: float

    def value(self, results: dict[str, PhaseResult]) -> float | None:
        if self.figure not in results or self.baseline not in results:
            return None
        baseline = results[self.baseline].rate
        return results[self.figure].rate / baseline if baseline else None


RATIOS = (
    Ratio("Record / empty call", "record", "empty", 0.50),
    Ratio("RecordBatch / raw COPY", "batch", "copy", 0.40),
)


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _rounds(rounds: int) -> str:
    return f" (median of {rounds} rounds)" if rounds > 1 else ""


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a (baseline or figure not run)"
    return "ok" if value >= target else "MISSED"


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
        f"{'figure':<40} {'rate':>20} {'p50 ms':>8} {'p99 ms':>8}  errors",
    ]
    for result in results.values():
        errors = ", ".join(f"{k}={v}" for k, v in result.errors.items()) or "0"
        lines.append(
            f"{result.name:<40} {_number(result.rate, 0) + ' ' + result.unit:>20}"
            f" {_number(result.latency_p50_ms):>8} {_number(result.latency_p99_ms):>8}  {errors}"
        )
    lines += ["", f"{'ratio':<40} {'value':>8} {'target':>8}  verdict"]
    for ratio in RATIOS:
        value = ratio.value(results)
        lines.append(
            f"{ratio.name:<40} {_number(value, 2):>8} {'>= ' + format(ratio.target, '.2f'):>8}"
            f"  {_verdict(value, ratio.target)}"
        )
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
    return "\n".join(lines)


def write_json(results: dict[str, PhaseResult], facts: dict[str, Any]) -> Path:
    """bench/results/latest.json: the run's facts, every figure and the ratios."""
    RESULTS_DIR.mkdir(exist_ok=True)
    document = {
        "run": facts,
        "figures": {key: asdict(result) for key, result in results.items()},
        "ratios": {ratio.name: _ratio_json(ratio, results) for ratio in RATIOS},
    }
    path = RESULTS_DIR / "latest.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _ratio_json(ratio: Ratio, results: dict[str, PhaseResult]) -> dict[str, Any]:
    value = ratio.value(results)
    met = None if value is None else value >= ratio.target
    return {"value": value, "target": ratio.target, "met": met}
