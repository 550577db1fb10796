"""The bench's record-beside-batch figure: it alternates with its baseline,
Record, and the report gives their latency ratios and the large batches' notes."""

from __future__ import annotations

from bench.__main__ import LATENCY_FIGURES, PHASES, median_round, round_order
from bench.phases import PhaseResult
from bench.report import format_report
from tests.bench_facts import FACTS


def result(name: str, p50: float, p99: float, **notes: object) -> PhaseResult:
    return PhaseResult(
        name=name,
        unit="events/s",
        clients=1,
        in_flight=64,
        seconds=8.0,
        calls=800,
        events=800,
        rate=100.0,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        errors={},
        cpu={},
        notes=dict(notes),
    )


def beside(p99: float, commits: int = 2) -> PhaseResult:
    return result(
        "Record beside large RecordBatch",
        30.0,
        p99,
        large_batch_events=200,
        large_batch_details=3000,
        large_batch_bytes=10_444_300,
        large_batch_calls_answered=1,
        large_batch_p50_ms=3100.0,
        large_batch_max_ms=3100.0,
        large_batch_events_written=200 * commits,
        large_batch_commits=commits,
        large_batch_events_per_s=25.0 * commits,
        large_batch_mb_per_s=1.31 * commits,
        large_batch_errors={},
    )


def test_it_runs_beside_record_in_the_other_order_every_other_round() -> None:
    figures = list(PHASES)
    assert figures.index("record-beside-batch") == figures.index("record") + 1
    even = round_order(figures, 2)
    assert even.index("record-beside-batch") == even.index("record") - 1


def test_its_median_round_is_the_one_of_median_p99() -> None:
    assert "record-beside-batch" in LATENCY_FIGURES
    runs = [beside(900.0), beside(300.0), beside(600.0)]
    runs[0].rate = 1.0  # by rate this round would be the lowest
    assert median_round("record-beside-batch", runs) == 2


def test_the_report_gives_its_ratios_to_record_and_the_batches_notes() -> None:
    report = format_report(
        {"record": result("Record", 20.0, 100.0), "record-beside-batch": beside(250.0)},
        FACTS,
    )
    assert "Record p50 beside large batches / alone      1.50" in report
    assert "Record p99 beside large batches / alone      2.50" in report
    assert "200 events of 3,000 details (10.4 MB)" in report
    assert "400 events in 2 commits, 50 events/s (2.6 MB/s)" in report
    assert "no large batch was written" not in report


def test_the_report_says_when_no_large_batch_was_written_in_the_window() -> None:
    report = format_report({"record-beside-batch": beside(250.0, commits=0)}, FACTS)
    assert "NOTE: no large batch was written in the window" in report
