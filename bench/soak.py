"""`make soak`: a server under mixed traffic for a while (default 10 minutes),
sampled at intervals: events recorded per second, Record latency p50/p99,
Query latency p99, the server's RSS, threads and open files, and the
database connections it holds. Afterwards every acknowledged event is checked
to be stored once, and the figures are judged: nothing may grow without
bound (the last quarter of the run against the second).

Traffic, from this process's threads: writers Record into TENANTS tenants
(one call at a time each, idempotency keys kept to check afterwards), a
RecordBatch writer, readers running Query, live StreamEvents subscribers, and
an Export every EXPORT_EVERY seconds."""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg

from sealtrail import AuditClient, build_event, build_filter

from . import environment

TENANTS = 20
WRITERS = 8
READERS = 2
STREAMS = 3
EXPORT_EVERY = 30.0


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: dict[tuple[str, str], str] = field(default_factory=dict)
    record_latencies: list[float] = field(default_factory=list)
    query_latencies: list[float] = field(default_factory=list)
    streamed: int = 0
    exports: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def take(self) -> tuple[int, list[float], list[float]]:
        with self.lock:
            records, queries = self.record_latencies, self.query_latencies
            self.record_latencies, self.query_latencies = [], []
        return len(records), records, queries


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def _loop(stop: threading.Event, tally: Tally, kind: str, body: Callable[[], None]) -> None:
    while not stop.is_set():
        try:
            body()
        except Exception as error:  # counted and reported; the soak goes on
            tally.error(f"{kind}: {type(error).__name__}")
            time.sleep(0.2)


def _start(threads: list[threading.Thread], target: Callable[..., None], *args: Any) -> None:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    threads.append(thread)


def run(duration: float, interval: float) -> int:
    with environment.temp_dir() as workdir, environment.database(workdir) as database:
        settings = {"SEALTRAIL_DATA_DIR": str(workdir / "data")}
        with environment.server(database.url, workdir, settings=settings) as server:
            return _soak(server, database.url, duration, interval)


def _soak(server: environment.Server, database_url: str, duration: float, interval: float) -> int:
    tenants = [f"soak-{n:02d}" for n in range(TENANTS)]
    tokens = {tenant: environment.create_token(database_url, tenant) for tenant in tenants}
    tally = Tally()
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def writer(number: int) -> None:
        tenant = tenants[number % TENANTS]
        counter = [0]
        with AuditClient(server.target, token=tokens[tenant], max_attempts=20) as client:

            def one() -> None:
                counter[0] += 1
                key = f"w{number}-{counter[0]}"
                begun = time.perf_counter()
                result = client.record(
                    build_event(
                        action="document.share",
                        actor_id=f"u{number}",
                        ip="203.0.113.7",
                        idempotency_key=key,
                    )
                )
                with tally.lock:
                    tally.record_latencies.append(time.perf_counter() - begun)
                    tally.acknowledged[(tenant, key)] = result.event.id

            _loop(stop, tally, "record", one)

    def batcher() -> None:
        tenant = tenants[0]
        with AuditClient(server.target, token=tokens[tenant], max_attempts=20) as client:

            def one() -> None:
                stamp = time.monotonic_ns()
                events = [
                    build_event(action="api.call", actor_id="svc", idempotency_key=f"b{stamp}-{i}")
                    for i in range(200)
                ]
                for event, result in zip(events, client.record_batch(events), strict=True):
                    if result.event is not None:
                        with tally.lock:
                            tally.acknowledged[(tenant, event.idempotency_key)] = result.event.id
                time.sleep(0.5)

            _loop(stop, tally, "batch", one)

    def reader(number: int) -> None:
        tenant = tenants[number % TENANTS]
        with AuditClient(server.target, token=tokens[tenant]) as client:

            def one() -> None:
                begun = time.perf_counter()
                client.query_page(build_filter(actions="document.*"), page_size=100)
                with tally.lock:
                    tally.query_latencies.append(time.perf_counter() - begun)
                time.sleep(0.2)

            _loop(stop, tally, "query", one)

    def streamer(number: int) -> None:
        tenant = tenants[number % TENANTS]
        with AuditClient(server.target, token=tokens[tenant]) as client:

            def one() -> None:
                for _ in client.stream():
                    with tally.lock:
                        tally.streamed += 1
                    if stop.is_set():
                        return

            _loop(stop, tally, "stream", one)

    def exporter() -> None:
        tenant = tenants[1]
        with AuditClient(server.target, token=tokens[tenant]) as client:

            def one() -> None:
                stop.wait(EXPORT_EVERY)
                if stop.is_set():
                    return
                chunks = client.export_stream(format="ndjson")
                for _ in chunks:
                    pass
                with tally.lock:
                    tally.exports += 1

            _loop(stop, tally, "export", one)

    for number in range(WRITERS):
        _start(threads, writer, number)
    _start(threads, batcher)
    for number in range(READERS):
        _start(threads, reader, number)
    for number in range(STREAMS):
        _start(threads, streamer, number)
    _start(threads, exporter)

    process = psutil.Process(server.pid)
    samples: list[dict[str, float]] = []
    print(f"soak: {duration:.0f} s of mixed traffic, sampled every {interval:.0f} s", flush=True)
    header = (f"{'t s':>6} {'Record/s':>9} {'Record p50':>11} {'p99 ms':>7} {'Query p99':>10}"
              f" {'RSS MiB':>8} {'threads':>8} {'files':>6} {'db conns':>9}")  # fmt: skip
    print(header, flush=True)
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() - started < duration:
            time.sleep(interval)
            count, records, queries = tally.take()
            [(connections,)] = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sealtrail'"
            ).fetchall()
            sample = {
                "t": time.monotonic() - started,
                "rate": count / interval,
                "p50": _percentile(records, 0.50),
                "p99": _percentile(records, 0.99),
                "q99": _percentile(queries, 0.99),
                "rss": process.memory_info().rss / 2**20,
                "threads": float(process.num_threads()),
                "files": float(process.num_fds()),
                "connections": float(connections),
            }
            samples.append(sample)
            print(f"{sample['t']:>6.0f} {sample['rate']:>9,.0f} {sample['p50']:>11.1f}"
                  f" {sample['p99']:>7.1f} {sample['q99']:>10.1f} {sample['rss']:>8.1f}"
                  f" {sample['threads']:>8.0f} {sample['files']:>6.0f}"
                  f" {sample['connections']:>9.0f}", flush=True)  # fmt: skip
    stop.set()
    for thread in threads:
        thread.join(5)  # a stream waits for its next event; daemon threads end with us
    return _verdict(samples, tally, database_url)


def _verdict(samples: list[dict[str, float]], tally: Tally, database_url: str) -> int:
    failed = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        stored = {
            (tenant, key): event_id
            for tenant, key, event_id in conn.execute(
                "SELECT tenant_id, idempotency_key, id::text FROM events"
                " WHERE tenant_id LIKE 'soak-%%' AND idempotency_key IS NOT NULL"
            ).fetchall()
        }
    lost = [key for key, event_id in tally.acknowledged.items() if stored.get(key) != event_id]
    print(f"\nacknowledged {len(tally.acknowledged):,} events: {len(lost)} missing or changed;"
          f" streamed {tally.streamed:,} deliveries; {tally.exports} exports;"
          f" errors {tally.errors or 'none'}")  # fmt: skip
    if lost:
        failed.append(f"{len(lost)} acknowledged events missing")
    if len(samples) >= 8:
        quarter = len(samples) // 4
        for name, allowed in (("rss", 1.25), ("threads", 1.25), ("files", 1.25),
                              ("connections", 1.5)):  # fmt: skip
            early = statistics.median(s[name] for s in samples[quarter : 2 * quarter])
            late = statistics.median(s[name] for s in samples[-quarter:])
            growth = late / early if early else 1.0
            print(f"{name}: second quarter {early:,.1f}, last quarter {late:,.1f} ({growth:.2f}x)")
            if growth > allowed:
                failed.append(f"{name} grew {growth:.2f}x")
    else:
        print("(too few samples to judge growth: run longer)")
    print("soak:", "FAILED: " + "; ".join(failed) if failed else "ok")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    options = parser.parse_args()
    return run(options.duration, options.interval)


if __name__ == "__main__":
    raise SystemExit(main())
