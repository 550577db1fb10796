"""A server's metrics, scraped from its Prometheus endpoint as Prometheus
would: calls by method and status, the appender's batches, the pool, the
database's reachability, live streams, and the background work: forwarding,
alerts, checkpoints, retention (docs/metrics.md)."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import grpc
import psycopg
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import (
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    RpcFailedError,
    SealtrailError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc, forwarding_pb2
from sealtrail_server.domain.sinks import KINDS
from sealtrail_server.measures import CALL_SECONDS_BUCKETS
from sealtrail_server.store import clock_skew as clock_skew_module
from sealtrail_server.telemetry.metrics import Metrics, metrics_from_env
from tests.clock import Clock
from tests.conftest import ServerThread, database_of_its_own
from tests.http_endpoint import Received, Reply, endpoint
from tests.integration.test_database_outage import SERVING, health

RECORD = "sealtrail.v1.AuditLogService/Record"
RECORD_BATCH = "sealtrail.v1.AuditLogService/RecordBatch"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    made = metrics_from_env(
        {
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": "0",
        }
    )
    assert made is not None and made.address is not None
    yield made
    made.shutdown()


@pytest.fixture
def measured(migrated_database_url: str, metrics: Metrics) -> Iterator[ServerThread]:
    """A measured server that appends only what its calls ask: its evaluator
    and forwarder take no work of the shared database's other tenants."""
    server = ServerThread(
        migrated_database_url,
        meter_provider=metrics.provider,
        alert_max_tenants=0,
        forward_max_sinks=0,
    )
    yield server
    server.close()


def scrape(metrics: Metrics) -> Samples:
    """Every sample the endpoint serves, by name and labels (the scope's left out)."""
    assert metrics.address is not None
    host, port = metrics.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(
                (k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope_")
            )
            samples[(sample.name, labels)] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one series of `name` with exactly `labels`, which must be there."""
    found = samples.get((name, frozenset(labels.items())))
    assert found is not None, f"no {name}{labels} in {sorted({n for n, _ in samples})}"
    return found


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels` (0: none yet)."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


def calls(samples: Samples, method: str, status: str) -> float:
    return total(
        samples,
        "rpc_server_call_duration_seconds_count",
        rpc_system_name="grpc",
        rpc_method=method,
        rpc_response_status_code=status,
    )


def wait_for(read: Callable[[], float], expected: float, timeout: float = 20) -> None:
    """Until `read()` gives `expected`; a series not there yet is read again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            seen: object = read()
        except AssertionError as missing:
            seen = missing
        if seen == expected:
            return
        assert time.monotonic() < deadline, f"{seen} after {timeout} s, not {expected}"
        time.sleep(0.05)


def test_calls_are_counted_by_method_and_status_and_appends_by_batch(
    measured: ServerThread, metrics: Metrics, tenant: str
) -> None:
    client = AuditClient(measured.target, token=measured.token(tenant))
    try:
        before = scrape(metrics)
        client.record(build_event(action="metrics.one", actor_id="u", idempotency_key="k-1"))
        client.record(build_event(action="metrics.two", actor_id="u"))
        # Five written, and one refused alone: its key was the first event's.
        reused = build_event(action="metrics.other", actor_id="u", idempotency_key="k-1")
        batch = [build_event(action="metrics.many", actor_id="u") for _ in range(5)]
        answered = client.record_batch([*batch, reused])
        assert [entry.error is None for entry in answered] == [True] * 5 + [False]
        with pytest.raises(InvalidArgumentError):
            client.record(build_event(action="", actor_id="u"))
        # Measured as the call ends, just after its status was sent.
        refused = calls(before, RECORD, "INVALID_ARGUMENT") + 1
        wait_for(lambda: calls(scrape(metrics), RECORD, "INVALID_ARGUMENT"), refused)
        after = scrape(metrics)
    finally:
        client.close()

    def grown(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert calls(after, RECORD, "OK") - calls(before, RECORD, "OK") == 2
    assert calls(after, RECORD_BATCH, "OK") - calls(before, RECORD_BATCH, "OK") == 1
    # Each call waited for its own batch (nothing else was writing): 8 events in 3.
    written = {"sealtrail_append_outcome": "written"}
    assert grown("sealtrail_append_events_total", **written) == 7
    assert grown("sealtrail_append_events_total", sealtrail_append_outcome="failed") == 1
    assert grown("sealtrail_append_events_total") == 8
    assert grown("sealtrail_append_batch_size_sum") == 8
    assert grown("sealtrail_append_batch_size_count") == 3
    assert grown("sealtrail_append_batch_duration_seconds_count") == 3
    assert value(after, "sealtrail_append_pending") == 0
    assert value(after, "sealtrail_append_pending_size_bytes") == 0
    # Buckets of seconds (the SDK's own are of milliseconds: 0, 5, 10, ... 10000).
    record_ok = {
        "rpc_system_name": "grpc",
        "rpc_method": RECORD,
        "rpc_response_status_code": "OK",
    }
    bounds = {
        dict(labels)["le"]
        for (name, labels), _ in after.items()
        if name == "rpc_server_call_duration_seconds_bucket" and set(record_ok.items()) <= labels
    }
    assert bounds == {str(float(b)) for b in CALL_SECONDS_BUCKETS} | {"+Inf"}
    bucket = "rpc_server_call_duration_seconds_bucket"
    assert value(after, bucket, **record_ok, le="60.0") == calls(after, RECORD, "OK")


def test_a_changes_record_is_counted_as_the_appenders_are(
    measured: ServerThread, metrics: Metrics, tenant: str
) -> None:
    """Appended in the change's own transaction (ADR 0075), a change's record
    went uncounted: docs/metrics.md counts the service's own records, and
    its alert on failed appends missed the changes' records refused."""
    client = AuditClient(measured.target, token=measured.token(tenant))
    written = {"sealtrail_append_outcome": "written"}
    try:
        client.record(build_event(action="metrics.one", actor_id="u"))
        before = scrape(metrics)
        assert client.set_retention_policy(400).event_id
        assert client.set_redaction_mode("hmac").event_id
        after = scrape(metrics)
    finally:
        client.close()
    grown = total(after, "sealtrail_append_events_total", **written) - total(
        before, "sealtrail_append_events_total", **written
    )
    assert grown == 2


def test_a_call_cut_off_by_its_deadline_is_told_from_one_cancelled(
    measured: ServerThread, metrics: Metrics, tenant: str
) -> None:
    """The handler of either is cancelled alike; the time left tells them apart."""
    stream = "sealtrail.v1.AuditLogService/StreamEvents"
    metadata = (("authorization", f"Bearer {measured.token(tenant)}"),)
    with grpc.insecure_channel(measured.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        timed = stub.StreamEvents(pb.StreamEventsRequest(), metadata=metadata, timeout=1.0)
        with pytest.raises(grpc.RpcError) as ended:
            for _message in timed:
                pass
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        left = stub.StreamEvents(pb.StreamEventsRequest(), metadata=metadata, timeout=60)
        next(left)  # a heartbeat or an event: the server is serving it
        left.cancel()
    wait_for(lambda: calls(scrape(metrics), stream, "DEADLINE_EXCEEDED"), 1)
    wait_for(lambda: calls(scrape(metrics), stream, "CANCELLED"), 1)


def test_a_stream_that_lasts_hours_has_buckets_to_tell_how_many(
    measured: ServerThread, metrics: Metrics, tenant: str
) -> None:
    """A call's duration had buckets up to 60 s: a StreamEvents stream lives
    for minutes to hours (docs/streaming.md), and every one fell in +Inf, so
    no quantile of a stream's duration could be read. They go on to a day."""
    stream = "sealtrail.v1.AuditLogService/StreamEvents"
    metadata = (("authorization", f"Bearer {measured.token(tenant)}"),)
    with grpc.insecure_channel(measured.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        timed = stub.StreamEvents(pb.StreamEventsRequest(), metadata=metadata, timeout=0.5)
        with pytest.raises(grpc.RpcError):
            for _message in timed:
                pass
    wait_for(lambda: calls(scrape(metrics), stream, "DEADLINE_EXCEEDED"), 1)
    bounds = sorted(
        float(dict(labels)["le"])
        for (name, labels), _ in scrape(metrics).items()
        if name == "rpc_server_call_duration_seconds_bucket"
        and ("rpc_method", stream) in labels
        and dict(labels)["le"] != "+Inf"
    )
    assert bounds[-1] >= 24 * 3600, bounds  # a day
    # An hour's stream told from a minute's and from a day's.
    assert [b for b in bounds if 60 < b < 24 * 3600], bounds
    assert len([b for b in bounds if 600 <= b <= 4 * 3600]) >= 2, bounds


def test_a_request_that_cannot_be_parsed_is_measured_as_invalid_argument(
    measured: ServerThread, metrics: Metrics, tenant: str
) -> None:
    """The docs said such requests were not measured (helper-140): they reach
    the guard, which parses them, and are refused and measured as any other."""
    metadata = (("authorization", f"Bearer {measured.token(tenant)}"),)
    before = calls(scrape(metrics), RECORD, "INVALID_ARGUMENT")
    with grpc.insecure_channel(measured.target) as channel:
        raw = channel.unary_unary(f"/{RECORD}")  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as refused:
            raw(b"\xff\xff\xff\xff", metadata=metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    wait_for(lambda: calls(scrape(metrics), RECORD, "INVALID_ARGUMENT"), before + 1)


def test_the_pool_and_the_database_are_observed(measured: ServerThread, metrics: Metrics) -> None:
    samples = scrape(metrics)
    pool = {"db_client_connection_pool_name": "sealtrail"}
    used = value(samples, "db_client_connection_count", **pool, db_client_connection_state="used")
    idle = value(samples, "db_client_connection_count", **pool, db_client_connection_state="idle")
    assert used >= 0 and idle >= 0
    assert 1 <= used + idle <= measured.settings.pool_max_size
    assert value(samples, "db_client_connection_max", **pool) == (measured.settings.pool_max_size)
    assert value(samples, "db_client_connection_pending_requests", **pool) == 0
    assert value(samples, "db_client_connection_timeouts_total", **pool) == 0
    assert value(samples, "sealtrail_database_reachable") == 1
    # The process itself, as prometheus_client describes it.
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_start_time_seconds") > 0


def test_the_failures_the_documented_alerts_watch_are_counted_from_zero(
    measured: ServerThread, metrics: Metrics
) -> None:
    """docs/metrics.md's alerts (`increase(...) > 0`) see a failure only if its
    series is there before it: one that first appears at 1 has increased by
    nothing, and the first integrity failure paged no one (helper-203)."""
    samples = scrape(metrics)
    assert value(samples, "sealtrail_integrity_failures_total") == 0
    assert value(samples, "sealtrail_retention_failures_total") == 0
    assert value(samples, "sealtrail_forward_failures_total") == 0
    failed = {"sealtrail_append_outcome": "failed"}
    assert value(samples, "sealtrail_append_events_total", **failed) == 0
    for kind in KINDS:
        parked = {"sealtrail_sink_kind": kind, "sealtrail_forward_outcome": "dead_lettered"}
        assert value(samples, "sealtrail_forward_events_total", **parked) == 0


def test_live_streams_are_counted_while_they_last(
    measured: ServerThread, metrics: Metrics, tenant: str
) -> None:
    subscribers = "sealtrail_stream_subscribers"
    client = AuditClient(measured.target, token=measured.token(tenant))
    failures: list[BaseException] = []

    def tail(**options: Any) -> None:
        try:
            for _event in client.stream(**options):
                pass
        except SealtrailError:
            pass  # closed under it
        except BaseException as error:
            failures.append(error)

    reader = threading.Thread(target=tail, daemon=True)
    reader.start()
    try:
        wait_for(lambda: value(scrape(metrics), subscribers), 1)
    finally:
        client.close()
    reader.join(timeout=20)
    assert not reader.is_alive() and not failures
    wait_for(lambda: value(scrape(metrics), subscribers), 0)


@pytest.fixture
def alone(migrated_database_url: str, metrics: Metrics) -> Iterator[tuple[ServerThread, Clock]]:
    """A measured server on a database of its own and the test's clock: no
    other test server's forwarder, evaluator or checkpointer does its work.
    Checkpoints and purges only when asked."""
    clock = Clock()
    with database_of_its_own(migrated_database_url, "metrics") as url:
        server = ServerThread(
            url,
            meter_provider=metrics.provider,
            clock=clock,
            checkpoint_interval=0,
            retention_interval=0,
        )
        try:
            yield server, clock
        finally:
            server.close()


def test_forwarding_alerts_checkpoints_and_retention_are_measured(
    alone: tuple[ServerThread, Clock], metrics: Metrics, tenant: str
) -> None:
    server, clock = alone
    client = AuditClient(server.target, token=server.token(tenant))
    try:
        with endpoint() as receiver:

            def answer(received: Received, index: int) -> Reply:
                if index == 0:
                    return Reply(503, b"busy")
                carried = [e["seq"] for e in json.loads(received.body)["data"]["events"]]
                return Reply(400, b"bad payload") if poison in carried else Reply()

            receiver.responder = answer
            sink = client.create_sink(
                build_sink(
                    "measured",
                    "webhook",
                    url=receiver.url,
                    secrets=["whsec_" + base64.b64encode(b"k" * 32).decode()],
                    filter=build_filter(actions="document.*"),
                    paused=True,
                )
            ).sink
            results = client.record_batch(
                [build_event(action="document.share", actor_id="u") for _ in range(4)]
            )
            poison = results[1].event.seq
            client.update_sink(forwarding_pb2.Sink(id=sink.id, paused=False), fields=["paused"])
            webhook = {"sealtrail_sink_kind": "webhook"}
            wait_for(
                lambda: total(
                    scrape(metrics),
                    "sealtrail_forward_events_total",
                    **webhook,
                    sealtrail_forward_outcome="dead_lettered",
                ),
                1,
            )
            wait_for(lambda: value(scrape(metrics), "sealtrail_forward_lag", **webhook), 0)
            sinks = "sealtrail_forward_sinks"
            held = {**webhook, "sealtrail_sink_state": "current"}
            wait_for(lambda: value(scrape(metrics), sinks, **held), 1)
            samples = scrape(metrics)
            assert value(samples, sinks, **webhook, sealtrail_sink_state="behind") == 0
            assert value(samples, "sealtrail_forward_sinks_waiting") == 0
            client.delete_sink(sink.id)
            wait_for(lambda: total(scrape(metrics), sinks, **held), 0)
        delivered = {**webhook, "sealtrail_forward_outcome": "delivered"}
        assert total(samples, "sealtrail_forward_events_total", **delivered) == 3
        assert total(samples, "sealtrail_forward_failures_total") >= 1  # the 503, at least
        requests = "sealtrail_forward_request_duration_seconds_count"
        assert total(samples, requests, http_response_status_code="503", **webhook) == 1
        assert total(samples, requests, http_response_status_code="400", **webhook) >= 1
        assert total(samples, requests, http_response_status_code="200", **webhook) >= 1

        client.create_alert_rule(
            build_alert_rule("marker", "match", filter=build_filter(actions="test.marker"))
        )
        client.record(build_event(action="test.marker", actor_id="u"))
        wait_for(lambda: total(scrape(metrics), "sealtrail_alerts_raised_total"), 1)
        assert value(scrape(metrics), "sealtrail_alerts_tenants_waiting") == 0

        signed = "sealtrail_checkpoints_signed_total"
        assert total(scrape(metrics), signed) == 0  # a counter shows once it counted
        client.get_checkpoint(fresh=True)
        assert value(scrape(metrics), signed) == 1
        client.record(build_event(action="document.share", actor_id="u"))
        with psycopg.connect(server.settings.owner_database_url, autocommit=True) as tamper:
            tamper.execute("SET session_replication_role = replica")
            tamper.execute(
                "UPDATE events SET leaf_hash = sha256(leaf_hash) WHERE tenant_id = %s", [tenant]
            )
            tamper.execute("DELETE FROM tree_nodes WHERE tenant_id = %s", [tenant])
        with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
            client.get_checkpoint(fresh=True)
        assert refused.value.reason == "INTEGRITY_FAILURE"
        samples = scrape(metrics)
        assert value(samples, signed) == 1
        assert value(samples, "sealtrail_integrity_failures_total") == 1

        assert total(samples, "sealtrail_retention_last_pass_time_seconds") == 0  # none yet
        # Of a tenant of its own: a log changed behind the service is not purged.
        with AuditClient(server.target, token=server.token(f"{tenant}-kept")) as kept:
            kept.record(build_event(action="document.share", actor_id="u"))
            kept.set_retention_policy("30d")
        clock.advance(40)
        assert server.service.purger is not None
        passed = time.time()
        purged = server.run(server.service.purger.run_once())
        samples = scrape(metrics)
        assert sum(p.count for p in purged) > 0
        assert value(samples, "sealtrail_retention_events_purged_total") == sum(
            p.count for p in purged
        )
        assert value(samples, "sealtrail_retention_last_pass_time_seconds") >= passed
        assert total(samples, "sealtrail_retention_failures_total") == 0
    finally:
        client.close()


def test_a_clock_ahead_of_the_databases_is_measured(
    alone: tuple[ServerThread, Clock], metrics: Metrics
) -> None:
    """Passes by a clock ahead of the database's remove nothing
    (docs/retention.md): how far it is ahead is served, to alert on."""
    server, clock = alone
    purger = server.service.purger
    assert purger is not None
    ahead = "sealtrail_retention_clock_ahead_seconds"
    assert total(scrape(metrics), ahead) == 0  # absent before a pass
    server.run(purger.run_once())
    samples = scrape(metrics)
    assert value(samples, ahead) <= 0  # the test's clock stands still: behind
    passed = value(samples, "sealtrail_retention_last_pass_time_seconds")
    clock.run_ahead(2)
    server.run(purger.run_once())
    samples = scrape(metrics)
    assert 86400 < value(samples, ahead) <= 2 * 86400
    # The pass did not end: another process, its clock right, may run it.
    assert value(samples, "sealtrail_retention_last_pass_time_seconds") == passed


def test_the_health_probe_measures_how_far_apart_the_clocks_are_and_says_so_once(
    alone: tuple[ServerThread, Clock], metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """The health probe reads the database's clock in its own statement: how
    far this process's is ahead of it (negative: behind) is served, said at
    WARNING once when past the tolerance (naming both times), and once when
    back within it. Health stays SERVING with SEALTRAIL_MAX_CLOCK_SKEW 0
    (ServerThread's for a test's clock; test_clock_skew.py tests the bound):
    the log is right, its times off."""
    server, clock = alone
    skew = "sealtrail_clock_skew_seconds"

    def probed() -> float:
        return value(scrape(metrics), skew)

    def another_probe() -> None:  # a still clock: each probe moves how far apart
        seen = probed()
        wait_for(lambda: probed() != seen, True)

    def next_probes() -> None:
        another_probe()
        another_probe()

    def said() -> list[tuple[str, timedelta]]:
        """Each line said of the clocks: its words, and how far apart the
        two times it names are (this process's less the database's)."""
        named = r"this process's clock \((\S+)\) is (.+) the database's \((\S+)\)"
        found = [
            re.search(named, r.getMessage())
            for r in caplog.records
            if r.name == clock_skew_module.__name__
        ]
        return [
            (m[2], datetime.fromisoformat(m[1]) - datetime.fromisoformat(m[3])) for m in found if m
        ]

    with caplog.at_level(logging.INFO, logger=clock_skew_module.__name__):
        # The test's clock stands still, a hair behind the database's.
        wait_for(lambda: -300 < probed() <= 0, True)
        moved = 0.0
        try:
            clock.run_ahead(2)
            moved = 2
            wait_for(lambda: 86400 < probed() <= 2 * 86400, True)
            next_probes()
            assert health(server.target) == SERVING
            clock.run_ahead(-2)
            moved = 0
            wait_for(lambda: -300 < probed() <= 0, True)
            next_probes()
            clock.run_ahead(-1)
            moved = -1
            wait_for(lambda: -2 * 86400 < probed() < -86400, True)
            next_probes()
            assert health(server.target) == SERVING
        finally:
            clock.run_ahead(-moved)
        wait_for(lambda: -300 < probed() <= 0, True)
    lines = said()
    assert len(lines) == 4, lines
    (ahead, apart), (back, _), (behind, behind_by), (again, _) = lines
    assert ahead.endswith(" ahead of") and timedelta(days=1) < apart <= timedelta(days=2)
    assert back == again == "back within 0:05:00 of"
    assert behind.endswith(" behind") and -timedelta(days=2) < behind_by < -timedelta(days=1)


class _Recording(MeterProvider):
    """A provider whose meters note every instrument made (name -> kind,
    unit), whether or not it has measured anything yet."""

    def __init__(self, inner: MeterProvider) -> None:
        self._inner = inner
        self.made: dict[str, tuple[object, str]] = {}

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> Meter:
        meter = self._inner.get_meter(name, version, schema_url, attributes)
        made = self.made

        class Noting:  # the meter's every method, its create_* noting what they made
            def __getattr__(self, attribute: str) -> Any:
                found = getattr(meter, attribute)
                if not attribute.startswith("create_"):
                    return found

                def create(name: str, *args: Any, **kwargs: Any) -> Any:
                    instrument = found(name, *args, **kwargs)
                    made[name] = (instrument, kwargs.get("unit", ""))
                    return instrument

                return create

        return cast(Meter, Noting())


# docs/metrics.md's kinds, synchronous or observed.
_KINDS: dict[str, tuple[type, ...]] = {
    "histogram": (Histogram,),
    "counter": (Counter, ObservableCounter),
    "up-down": (UpDownCounter, ObservableUpDownCounter),
    "gauge": (ObservableGauge,),
}


def _unit_as_documented(unit: str) -> str:
    if unit in ("", "1"):
        return ""
    if unit == "By":
        return "bytes"
    if unit.startswith("{") and unit.endswith("}"):
        return unit[1:-1] + "s"
    return unit


def documented_instruments() -> dict[str, list[str]]:
    """docs/metrics.md's table of instruments: name -> its Prometheus name,
    kind and unit, attributes."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text("utf-8")
    section = text.split("\n## Instruments\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = [cells[1].strip("`"), *cells[2:4]]
    return rows


def test_every_instrument_is_documented_as_it_is_made(
    migrated_database_url: str, tenant: str
) -> None:
    """Each instrument the server makes is in docs/metrics.md's table, with
    its kind, unit, attributes and Prometheus name; each there is made."""
    registry = CollectorRegistry(auto_describe=True)
    memory = InMemoryMetricReader()
    sdk = SdkMeterProvider(metric_readers=[memory, PrometheusMetricReader(registry=registry)])
    provider = _Recording(sdk)
    server = ServerThread(
        migrated_database_url,
        meter_provider=provider,
        alert_max_tenants=0,
        forward_max_sinks=0,
        credential_backfill=True,  # its instruments made; its first look a minute off
    )
    try:
        with AuditClient(server.target, token=server.token(tenant)) as client:
            client.record(build_event(action="metrics.docs", actor_id="u"))
        documented = documented_instruments()
        made = provider.made
        assert sorted(set(made) - set(documented)) == [], "made, not documented"
        assert sorted(set(documented) - set(made)) == [], "documented, never made"
        wrong = []
        for name, (instrument, unit) in made.items():
            kind, _, documented_unit = documented[name][1].partition(", ")
            if not isinstance(instrument, _KINDS[kind]):
                wrong.append(f"{name}: not a {kind}")
            if _unit_as_documented(unit) != documented_unit:
                wrong.append(f"{name}: in {unit!r}, documented {documented_unit!r}")
        # Each attribute a measurement carried is its instrument's documented one.
        data = memory.get_metrics_data()
        assert data is not None
        carried: dict[str, set[str]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    keys = carried.setdefault(metric.name, set())
                    for point in metric.data.data_points:
                        keys.update(point.attributes or {})
        shorthand = {
            "db.client.connection.pool.name": "pool name",
            "sealtrail.sink.kind": "sink kind",
        }
        for name, keys in carried.items():
            attributes = documented[name][2]
            for key in sorted(keys):
                if f"`{key}`" not in attributes and shorthand.get(key, key) not in attributes:
                    wrong.append(f"{name}: carries {key}, not documented")
        # Prometheus shows each as named there.
        text = generate_latest(registry).decode()
        shown = {family.name for family in text_string_to_metric_families(text)}
        for name in carried:
            family = documented[name][0].removesuffix("_total")
            if family not in shown:
                wrong.append(f"{name}: shown by Prometheus as none of {sorted(shown)}")
        assert wrong == [], "\n".join(wrong)
    finally:
        server.close()
        sdk.shutdown()
