"""`python -m bench.roles`: what "what did admins do in the last day / week"
costs with `actor_roles` read off its column (migration 0065, no index, ADR
0152; run on a build before it, off each record, ADR 0150), beside a
question of as many events that an index answers (one actor's, `actor`) and
beside the same time range unfiltered, as ratios
measured in one run, never absolute times.

One tenant's --events events are recorded through RecordBatch, their
occurred_at spread evenly over the last 7 days, over 100 actors: one in 20
events is done by an admin (roles `admin` and `billing`), the rest with
`member` or no role; one actor ("user_busy") does as many events as the
admins do in all. Then, taking turns: a count and a page of the latest 100
over the last day and the last week, by role, by the busy actor and with no
filter but the time range. Each figure is the median of --calls calls."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sealtrail import AuditClient, build_event, build_filter
from sealtrail.v1 import event_pb2

from . import environment
from .credentials import _record, in_turns

ACTORS = 100
ADMIN_EVERY = 20
BUSY = "user_busy"
WEEK = timedelta(days=7)
BATCH = 1000


def _event(n: int, events: int, now: datetime) -> event_pb2.Event:
    """The `n`th event: an admin's one in ADMIN_EVERY, the busy actor's as
    often, else a member's or a roleless actor's; its time n's share of the
    week before `now`."""
    occurred = now - WEEK + WEEK * (n + 0.5) / events
    if n % ADMIN_EVERY == 0:
        actor, roles = f"admin_{n % 7}", ["admin", "billing"]
    elif n % ADMIN_EVERY == 1:
        actor, roles = BUSY, ["member"]
    else:
        actor, roles = f"user_{n % ACTORS:04d}", ["member"] if n % 2 else []
    return build_event(
        action="document.share",
        actor_id=actor,
        actor_roles=roles,
        occurred_at=occurred,
        resource_type="document",
        resource_id=f"doc_{n % 997:05d}",
        details={"bytes": n % 4096},
    )


def load(client: AuditClient, events: int) -> float:
    """Records `events` events over the last week; seconds."""
    started = time.perf_counter()
    now = datetime.now(UTC) - timedelta(minutes=1)
    for start in range(0, events, BATCH):
        _record(client, [_event(n, events, now) for n in range(start, min(events, start + BATCH))])
    return time.perf_counter() - started


def measure(client: AuditClient, calls: int) -> dict[str, float]:
    """Each figure's median seconds, the figures measured in turns."""
    now = datetime.now(UTC)

    def count(since: timedelta, **criteria: Any) -> Callable[[], Any]:
        event_filter = build_filter(since=now - since, **criteria)
        return lambda: client.count_events(event_filter)

    def page(since: timedelta, **criteria: Any) -> Callable[[], Any]:
        event_filter = build_filter(since=now - since, **criteria)
        return lambda: list(client.query(event_filter, limit=100))

    day = timedelta(days=1)
    figures: dict[str, Callable[[], Any]] = {}
    for span, since in (("day", day), ("week", WEEK)):
        figures |= {
            f"count, role admin, last {span}": count(since, actor_roles="admin"),
            f"count, busy actor, last {span}": count(since, actor=BUSY),
            f"count, all, last {span}": count(since),
            f"page, role admin, last {span}": page(since, actor_roles="admin"),
            f"page, busy actor, last {span}": page(since, actor=BUSY),
            f"page, all, last {span}": page(since),
        }
    return in_turns(figures, calls)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.roles", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="events in the tenant")
    parser.add_argument("--calls", type=int, default=25, help="calls per figure")
    options = parser.parse_args(argv)
    if options.events < ADMIN_EVERY or options.calls < 1:
        parser.error(f"--events must be at least {ADMIN_EVERY}, --calls at least 1")
    with environment.temp_dir() as workdir, environment.database(workdir) as database:
        tenant = "bench-roles"
        token = environment.create_token(database.url, tenant)
        with environment.server(database.url, workdir) as server:
            client = AuditClient(server.target, token=token)
            try:
                print(f"recording {options.events:,} events ...", flush=True)
                print(f"  recorded in {load(client, options.events):.1f} s", flush=True)
                seconds = measure(client, options.calls)
            finally:
                client.close()
    print(f"{'figure':<30} {'ratio':>7}  baseline (same run)")
    for span in ("day", "week"):
        for kind in ("count", "page"):
            figure = f"{kind}, role admin, last {span}"
            for baseline in (f"{kind}, busy actor, last {span}", f"{kind}, all, last {span}"):
                ratio = seconds[figure] / seconds[baseline]
                print(f"{figure:<30} {ratio:>7.2f}  {baseline}")


if __name__ == "__main__":
    main()
