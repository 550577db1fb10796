"""The bench's report says what it measured: nearest-rank percentiles, a p95
column, and a figure whose work failed marked FAILED (its ratios n/a) rather
than a rate of 0 judged MISSED or a "-" that reads like a figure not run."""

from __future__ import annotations

from typing import Any

import pytest

from bench.cpu import Watched
from bench.phases import FigureFailed, PhaseResult, percentile_ms, run_once
from bench.report import format_report
from tests.bench_facts import FACTS


def latency(name: str, p95: float, *, failure: str | None = None) -> PhaseResult:
    return PhaseResult(
        name=name,
        unit="queries/s",
        clients=1,
        in_flight=1,
        seconds=8.0,
        calls=800,
        events=0 if failure else 800,
        rate=0.0 if failure else 100.0,
        latency_p50_ms=None if failure else p95 / 2,
        latency_p99_ms=None if failure else p95 * 2,
        latency_p95_ms=None if failure else p95,
        errors={failure: 1} if failure else {},
        cpu={},
        failure=failure,
    )


@pytest.mark.parametrize(
    ("count", "fraction", "expected"),
    [
        (100, 0.95, 95),  # the 95th fastest, not the 96th
        (100, 0.50, 50),
        (100, 0.99, 99),
        (100, 0.29, 29),  # 0.29 * 100 is 28.999999999999996 in binary
        (10, 0.95, 10),  # the slowest of 10
        (20, 0.95, 19),
        (1, 0.50, 1),
    ],
)
def test_percentiles_are_nearest_rank(count: int, fraction: float, expected: int) -> None:
    ordered = [rank / 1000 for rank in range(1, count + 1)]  # rank r takes r ms
    assert percentile_ms(ordered, fraction) == pytest.approx(expected)


def test_no_latencies_have_no_percentile() -> None:
    assert percentile_ms([], 0.95) is None


def test_the_table_shows_each_figures_p95() -> None:
    report = format_report({"query-latest": latency("Query, latest 100", 4.0)}, FACTS)
    header = next(line for line in report.splitlines() if line.startswith("figure"))
    assert header.split()[-7:] == ["p50", "ms", "p95", "ms", "p99", "ms", "errors"]
    row = next(line for line in report.splitlines() if line.startswith("Query, latest 100"))
    assert row.split()[-4:] == ["2.0", "4.0", "8.0", "0"]


def test_a_failed_figure_is_failed_not_missed() -> None:
    results = {
        "sql-latest": latency("raw SQL, latest 100", 1.0),
        "query-latest": latency("Query, latest 100", 0.0, failure="the page lacked events"),
    }
    report = format_report(results, FACTS)
    ratio = next(line for line in report.splitlines() if line.startswith("raw SQL p95 / Query"))
    assert "MISSED" not in ratio and "failed" in ratio
    row = next(line for line in report.splitlines() if line.startswith("Query, latest 100"))
    assert "FAILED" in row
    assert report.splitlines()[-2:] == [
        "FAILED (the run exits 1): a figure whose work did not do what it should",
        "  Query, latest 100: the page lacked events",
    ]


def test_a_report_without_failures_says_none() -> None:
    report = format_report({"query-latest": latency("Query, latest 100", 4.0)}, FACTS)
    assert "FAILED" not in report


def test_run_once_marks_a_failed_work_or_check() -> None:
    watched = Watched(server=None, postmaster=None, clients=[])

    def fails(_notes: dict[str, Any]) -> int:
        raise FigureFailed("VerifyLog RECORD_MISSING at seq 3")

    def refuses(_notes: dict[str, Any], _count: int) -> None:
        raise FigureFailed("manifest says 10 bytes, got 9")

    failed = run_once("VerifyLog", "events/s", fails, watched)
    assert (failed.failure, failed.events) == ("VerifyLog RECORD_MISSING at seq 3", 0)
    checked = run_once("export", "rows/s", lambda _notes: 5, watched, check=refuses)
    assert checked.failure == "manifest says 10 bytes, got 9"
    passed = run_once("export", "rows/s", lambda _notes: 5, watched)
    assert (passed.failure, passed.events, passed.errors) == (None, 5, {})
