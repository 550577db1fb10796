"""`python -m bench.measures`: what a measure adds to a count (CountEvents'
`measure`), as ratios measured in one run, never absolute times.

One tenant's --events events are recorded through RecordBatch (so every row
is written as the appender writes it), over 40 actions and 50 actors, four
in five with a `context.duration_ms` (the fifth without: counted, not
measured). Then the SQL alone (`store.counts.count_statement`, run on one
connection, as the server runs it on its own): a count by action, and the
same count with each measure, taking turns so that drift favours neither;
each figure is the median of --calls runs, reported as a ratio to the count
alone; beside them a count by HTTP status, which reads each row's record as
a measure did before migration 0064 (ADR 0136), for what of a
measure's cost is that read. The groups each measure answers are checked
against ones computed here from what was recorded.

Durations are read off the `duration_ms` column (migration 0064, ADR 0149).
A second tenant holds the same events with that column NULL, as a log
appended before 0064 and not yet backfilled: its figures (`before 0064`)
read every record, as every measured count did before the column."""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, get_args

import psycopg

from sealtrail import AuditClient, build_event, build_filter
from sealtrail.v1 import event_pb2
from sealtrail_server.domain.counts import Measure
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.store.counts import count_statement

from . import environment

ACTIONS = 40
ACTORS = 50
BATCH = 1000


def _duration(n: int) -> float:
    """The `n`th event's duration in ms (0: none, one event in five)."""
    return 0.0 if n % 5 == 4 else float(1 + (n * 7919) % 5000) / 4


def _event(n: int) -> event_pb2.Event:
    ms = _duration(n)
    return build_event(
        action=f"api.call_{n % ACTIONS:02d}",
        actor_id=f"user_{n % ACTORS:04d}",
        http_route="/v1/things/{id}",
        http_status_code=200,
        **({"duration_ms": ms} if ms else {}),
    )


def load(client: AuditClient, events: int) -> float:
    """Records `events` events; seconds."""
    started = time.perf_counter()
    for start in range(0, events, BATCH):
        results = client.record_batch([_event(n) for n in range(start, min(events, start + BATCH))])
        failed = [r for r in results if r.error is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} events refused: {failed[0].error}")
    return time.perf_counter() - started


def _expected_max(events: int) -> dict[str, float]:
    """Each action's longest duration, computed here."""
    longest: dict[str, float] = defaultdict(float)
    for n in range(events):
        action = f"api.call_{n % ACTIONS:02d}"
        longest[action] = max(longest[action], _duration(n))
    return dict(longest)


def as_before_0064(conn: psycopg.Connection[Any], tenant: str) -> None:
    """The tenant's `duration_ms` column NULL, as a release before 0064
    appended its rows (the events trigger off for the session: a superuser's)."""
    conn.execute("SET session_replication_role = replica")
    conn.execute("UPDATE events SET duration_ms = NULL WHERE tenant_id = %s", [tenant])
    conn.execute("RESET session_replication_role")


def measure(
    conn: psycopg.Connection[Any], tenant: str, calls: int, before: str
) -> tuple[dict[str, float], dict[str, list[Any]]]:
    """Each figure's median seconds, the figures run in turns, and each
    figure's rows (of its last run); `before`, a tenant of the same events
    as before 0064."""
    statements: dict[str, tuple[Any, list[Any]]] = {
        "count by action": count_statement(tenant, EventFilter(), group_by="action", limit=1000)
    }
    statements["count by http_status"] = count_statement(
        tenant, EventFilter(), group_by="http_status", limit=1000
    )
    for name in get_args(Measure):
        statements[f"count by action, {name}"] = count_statement(
            tenant,
            EventFilter(),
            group_by="action",
            limit=1000,
            measure=name,
            duration_records=False,
        )
    for name in get_args(Measure):
        statements[f"before 0064, {name}"] = count_statement(
            before, EventFilter(), group_by="action", limit=1000, measure=name
        )

    def run(statement: tuple[Any, list[Any]]) -> Callable[[], list[Any]]:
        return lambda: conn.execute(*statement).fetchall()

    figures = {name: run(statement) for name, statement in statements.items()}
    rows = {name: call() for name, call in figures.items()}  # warm the caches and the plans
    times: dict[str, list[float]] = {name: [] for name in figures}
    for _ in range(calls):
        for name, call in figures.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(taken) for name, taken in times.items()}, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.measures", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="events in the tenant")
    parser.add_argument("--calls", type=int, default=8, help="runs per figure")
    parser.add_argument(
        "--covering",
        action="store_true",
        help="add duration_ms to the action index's INCLUDE first (ADR 0149's option)",
    )
    options = parser.parse_args(argv)
    if options.events < ACTIONS or options.calls < 1:
        parser.error(f"--events must be at least {ACTIONS}, --calls at least 1")
    with environment.temp_dir() as workdir, environment.database(workdir) as database:
        tenant, before = "bench-measures", "bench-measures-before-0064"
        with environment.server(database.url, workdir) as server:
            for name in (tenant, before):
                token = environment.create_token(database.url, name)
                with AuditClient(server.target, token=token) as client:
                    print(f"recording {options.events:,} events of {name} ...", flush=True)
                    print(f"  recorded in {load(client, options.events):.1f} s", flush=True)
                    assert client.count_events(build_filter()).total >= options.events
        with psycopg.connect(database.url, autocommit=True) as conn:
            as_before_0064(conn, before)
            if options.covering:
                conn.execute(
                    "CREATE INDEX events_action_measured ON events"
                    " (tenant_id, action text_pattern_ops, seq) INCLUDE (occurred_at, duration_ms)"
                )
            conn.execute("VACUUM ANALYZE events")
            seconds, rows = measure(conn, tenant, options.calls, before)
    longest = _expected_max(options.events)
    for figure in ("count by action, duration_max", "before 0064, duration_max"):
        found = {r[0]: r[4] for r in rows[figure] if r[0].startswith("api.")}
        if found != longest:
            raise RuntimeError(f"{figure}: the longest durations are not those recorded")
    baseline = seconds["count by action"]
    print(f"{'figure':<36} {'ratio':>7}  baseline (same run)")
    for name, taken in seconds.items():
        print(f"{name:<36} {taken / baseline:>7.2f}  count by action")


if __name__ == "__main__":
    main()
