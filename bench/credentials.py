"""`python -m bench.credentials`: what a count by credential and a Query by
`credential_id` cost beside their neighbours by actor (ADR 0142), as ratios
measured in one run, never absolute times.

One tenant's --events events are recorded through RecordBatch (so every row
is written as the appender writes it), over 50 actors and 60 credentials of
three kinds (a fifth of the events have none), plus a rare actor and a rare
credential of RARE events each, and --heavy events (interleaved among the
others) of one heavy actor, every one of them with one heavy credential.
Then, taking turns so that drift favours neither: CountEvents by actor and
by credential over the whole tenant; a page of the latest 100 events of a
common actor and of a common credential; of the rare actor and the rare
credential (where a filter no index serves reads the whole tenant to find
them); and of the heavy actor and the heavy credential (where a page that
reads every match before it sorts them reads all --heavy). Each figure is
the median of --calls calls, reported as a ratio to its companion by actor.

With --before-0056 the tenant's rows are then made as a release before
migration 0056 appended them (credential columns NULL: read off their
records, ADR 0142), measured so, backfilled by the credential backfill
(ADR 0143), and measured again: each figure's ratio before and after, in the
same run (the server's own backfill turned off meanwhile)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any, Literal

import psycopg

from sealtrail import AuditClient, build_event, build_filter
from sealtrail.v1 import event_pb2
from sealtrail_server.backfill.credentials import CredentialBackfill

from . import environment

ACTORS = 50
CREDENTIALS = 60
KINDS = ("api_key", "oauth_token", "session")
RARE = 20
BATCH = 1000
HEAVY_ACTOR = "user_heavy"
HEAVY_CREDENTIAL = "key_heavy"


def _event(n: int) -> event_pb2.Event:
    """The `n`th event: actor n % 50; credential n % 60 for four in five."""
    actor = f"user_{n % ACTORS:04d}"
    if n % 5 == 4:
        return build_event(action="document.share", actor_id=actor)
    c = n % CREDENTIALS
    return build_event(
        action="document.share",
        actor_id=actor,
        actor_type="api_key",
        credential_kind=KINDS[c % len(KINDS)],
        credential_id=f"key_{c:03d}",
        credential_hint=f"{c:04d}"[-4:] if c % 2 else "",
        resource_type="document",
        resource_id=f"doc_{n % 997:05d}",
        details={"bytes": n % 4096, "shared_with": "team"},
    )


def _heavy(n: int) -> event_pb2.Event:
    """The `n`th event of the heavy actor, all with the heavy credential."""
    return build_event(
        action="document.share",
        actor_id=HEAVY_ACTOR,
        actor_type="api_key",
        credential_kind="api_key",
        credential_id=HEAVY_CREDENTIAL,
        resource_type="document",
        resource_id=f"doc_{n % 997:05d}",
    )


def load(client: AuditClient, events: int, heavy: int) -> float:
    """Records `events` events, the rare actor's and credential's, and
    `heavy` of the heavy actor and credential spread evenly among them;
    seconds."""
    started = time.perf_counter()
    pending: list[event_pb2.Event] = []
    recorded_heavy = 0
    for n in range(events):
        pending.append(_event(n))
        # As many heavy events as n's share of `heavy` says are due by now.
        while recorded_heavy < heavy * (n + 1) // events:
            pending.append(_heavy(recorded_heavy))
            recorded_heavy += 1
        if n % (events // RARE) == 0:
            pending.append(build_event(action="document.share", actor_id="user_rare"))
            pending.append(
                build_event(
                    action="document.share",
                    actor_id=f"user_{n % ACTORS:04d}",
                    credential_kind="api_key",
                    credential_id="key_rare",
                )
            )
        if len(pending) >= BATCH:
            _record(client, pending)
            pending = []
    if pending:
        _record(client, pending)
    return time.perf_counter() - started


def _record(client: AuditClient, events: list[event_pb2.Event]) -> None:
    for start in range(0, len(events), BATCH):
        results = client.record_batch(events[start : start + BATCH])
        failed = [r for r in results if r.error is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} events refused: {failed[0].error}")


def _median(call: Callable[[], Any], calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def in_turns(figures: dict[str, Callable[[], Any]], calls: int) -> dict[str, float]:
    """Each figure's median seconds over `calls` calls, once warm (the caches
    and the plans), the figures measured in turns: five rounds of each in
    turn, the median of the rounds' medians (the machine's noise spread
    over all of them alike)."""
    for call in figures.values():
        call()
    found: dict[str, list[float]] = {name: [] for name in figures}
    rounds = 5
    for _ in range(rounds):
        for name, call in figures.items():
            found[name].append(_median(call, max(1, calls // rounds)))
    return {name: statistics.median(times) for name, times in found.items()}


def measure(client: AuditClient, calls: int) -> dict[str, float]:
    """Each figure's median seconds, the pairs measured in turns."""

    def count(by: Literal["actor", "credential"]) -> Callable[[], Any]:
        return lambda: client.count_events(build_filter(), group_by=by, limit=1000)

    def page(event_filter: event_pb2.EventFilter) -> Callable[[], Any]:
        return lambda: list(client.query(event_filter, limit=100))

    figures: dict[str, Callable[[], Any]] = {
        "count by actor": count("actor"),
        "count by credential": count("credential"),
        "query by actor": page(build_filter(actor="user_0007")),
        "query by credential_id": page(build_filter(credential_id="key_007")),
        "query by rare actor": page(build_filter(actor="user_rare")),
        "query by rare credential_id": page(build_filter(credential_id="key_rare")),
        "query by heavy actor": page(build_filter(actor=HEAVY_ACTOR)),
        "query by heavy credential_id": page(build_filter(credential_id=HEAVY_CREDENTIAL)),
    }
    return in_turns(figures, calls)


def as_before_0056(database_url: str, tenant: str) -> int:
    """The tenant's rows made as a release before migration 0056 appended
    them (credential columns NULL), the events trigger off for the session
    (`session_replication_role`, a superuser's); how many. Then ANALYZE."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        cursor = conn.execute(
            "UPDATE events SET credential_kind = NULL, credential_id = NULL,"
            " credential_hint = NULL WHERE tenant_id = %s",
            [tenant],
        )
        conn.execute("SET session_replication_role = DEFAULT")
        conn.execute("VACUUM ANALYZE events")
        return cursor.rowcount


def backfill(database_url: str) -> float:
    """The credential backfill run to its end (no pause between batches),
    then VACUUM ANALYZE; seconds the backfill took."""
    started = time.perf_counter()
    run = asyncio.run(CredentialBackfill(database_url, pause=0).run_once())
    seconds = time.perf_counter() - started
    if run is None or run.left:
        raise RuntimeError(f"the backfill left rows: {run}")
    print(f"  backfilled {run.written:,} events in {seconds:.1f} s", flush=True)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE events")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.credentials", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events in the tenant")
    parser.add_argument(
        "--heavy", type=int, default=100_000, help="events of the heavy actor and credential"
    )
    parser.add_argument("--calls", type=int, default=25, help="calls per figure")
    parser.add_argument(
        "--before-0056",
        action="store_true",
        help="measure the rows as appended before migration 0056, then after the backfill",
    )
    options = parser.parse_args(argv)
    if options.events < RARE or options.calls < 1 or options.heavy < 1:
        parser.error(f"--events must be at least {RARE}, --heavy and --calls at least 1")
    with environment.temp_dir() as workdir, environment.database(workdir) as database:
        tenant = "bench-credentials"
        token = environment.create_token(database.url, tenant)
        settings = {"SEALTRAIL_CREDENTIAL_BACKFILL": "false"}
        with environment.server(database.url, workdir, settings=settings) as server:
            client = AuditClient(server.target, token=token)
            runs: list[tuple[str, dict[str, float]]] = []
            try:
                total = options.events + options.heavy
                print(f"recording {total:,} events ...", flush=True)
                seconds_taken = load(client, options.events, options.heavy)
                print(f"  recorded in {seconds_taken:.1f} s", flush=True)
                if options.before_0056:
                    made = as_before_0056(database.url, tenant)
                    print(f"  {made:,} events made as appended before 0056", flush=True)
                    runs.append(("before the backfill", measure(client, options.calls)))
                    backfill(database.url)
                    runs.append(("after the backfill", measure(client, options.calls)))
                else:
                    runs.append(("", measure(client, options.calls)))
            finally:
                client.close()
    for title, seconds in runs:
        if title:
            print(title)
        _report(seconds)


def _report(seconds: dict[str, float]) -> None:
    pairs = (
        ("count by credential", "count by actor"),
        ("query by credential_id", "query by actor"),
        ("query by rare credential_id", "query by rare actor"),
        ("query by heavy credential_id", "query by heavy actor"),
    )
    print(f"{'figure':<30} {'ratio':>7}  baseline (same run)")
    for figure, baseline in pairs:
        ratio = seconds[figure] / seconds[baseline]
        print(f"{figure:<30} {ratio:>7.2f}  {baseline}")


if __name__ == "__main__":
    main()
