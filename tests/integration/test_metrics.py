"""A server's metrics, scraped from its Prometheus endpoint as Prometheus
would: calls by method and status, the appender's batches, the pool, the
database's reachability and live streams (docs/metrics.md)."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sealtrail import AuditClient, InvalidArgumentError, SealtrailError, build_event
from sealtrail_server.telemetry.metrics import Metrics, metrics_from_env
from tests.conftest import ServerThread

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
    server = ServerThread(migrated_database_url, meter_provider=metrics.provider)
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
    return samples.get((name, frozenset(labels.items())), 0.0)


def calls(samples: Samples, method: str, status: str) -> float:
    return value(
        samples,
        "rpc_server_call_duration_seconds_count",
        rpc_system_name="grpc",
        rpc_method=method,
        rpc_response_status_code=status,
    )


def wait_for(read: Callable[[], float], expected: float, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (seen := read()) != expected:
        assert time.monotonic() < deadline, f"{seen} after {timeout} s, not {expected}"
        time.sleep(0.05)


def test_calls_are_counted_by_method_and_status_and_appends_by_batch(
    measured: ServerThread, metrics: Metrics, tenant: str
) -> None:
    client = AuditClient(measured.target, token=measured.token(tenant))
    try:
        before = scrape(metrics)
        client.record(build_event(action="metrics.one", actor_id="u"))
        client.record(build_event(action="metrics.two", actor_id="u"))
        client.record_batch([build_event(action="metrics.many", actor_id="u") for _ in range(5)])
        with pytest.raises(InvalidArgumentError):
            client.record(build_event(action="", actor_id="u"))
        after = scrape(metrics)
    finally:
        client.close()

    def grown(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert calls(after, RECORD, "OK") - calls(before, RECORD, "OK") == 2
    assert calls(after, RECORD_BATCH, "OK") - calls(before, RECORD_BATCH, "OK") == 1
    assert calls(after, RECORD, "INVALID_ARGUMENT") - calls(before, RECORD, "INVALID_ARGUMENT") == 1
    # Each call waited for its own transaction (nothing else was writing): 7 events in 3.
    assert grown("sealtrail_append_batch_size_sum") == 7
    assert grown("sealtrail_append_batch_size_count") == 3
    assert grown("sealtrail_append_batch_duration_seconds_count") == 3
    assert value(after, "sealtrail_append_pending") == 0
    # A call's duration lands in a bucket of seconds, not of milliseconds.
    assert value(
        after,
        "rpc_server_call_duration_seconds_bucket",
        rpc_system_name="grpc",
        rpc_method=RECORD,
        rpc_response_status_code="OK",
        le="10.0",
    ) == calls(after, RECORD, "OK")


def test_the_pool_and_the_database_are_observed(measured: ServerThread, metrics: Metrics) -> None:
    samples = scrape(metrics)
    pool = {"db_client_connection_pool_name": "sealtrail"}
    used = value(samples, "db_client_connection_count", **pool, db_client_connection_state="used")
    idle = value(samples, "db_client_connection_count", **pool, db_client_connection_state="idle")
    assert used >= 0 and idle >= 1
    assert used + idle <= measured.settings.pool_max_size
    assert value(samples, "db_client_connection_max", **pool) == (measured.settings.pool_max_size)
    assert value(samples, "db_client_connection_pending_requests", **pool) == 0
    assert ("db_client_connection_timeouts_total", frozenset(pool.items())) in samples
    assert value(samples, "sealtrail_database_reachable") == 1


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
