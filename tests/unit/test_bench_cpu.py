"""The bench's CPU accounting (bench/cpu.py) of PostgreSQL: a backend that
starts and ends inside the timed work still counts as PostgreSQL's."""

from __future__ import annotations

import time

import psutil
import psycopg

from bench import cpu


def test_a_connection_opened_and_closed_within_the_work_counts_as_postgres(
    migrated_database_url: str,
) -> None:
    """raw DELETE and the purge open their connection in the work they time:
    its backend was gone when the work ended, and its CPU was nobody's
    (postgres 0% of a core, "others" high, the run called noisy)."""
    with psycopg.connect(migrated_database_url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        postmaster = psutil.Process(row[0]).ppid()
    started = time.perf_counter()
    with cpu.Meter(cpu.Watched(None, postmaster, [])) as meter:
        with psycopg.connect(migrated_database_url) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            backend = psutil.Process(row[0])
            conn.execute("SELECT count(*) FROM generate_series(1, 2000000)")
            times = backend.cpu_times()
        psutil.wait_procs([backend], timeout=5)  # exited (and reaped)
    elapsed = time.perf_counter() - started  # a little more than the meter's
    spent = (times.user + times.system) * 100 / elapsed
    assert spent > 1.0
    assert meter.usage["postgres_pct_of_core"] >= spent * 0.9
