"""Metrics are set up as the OTEL_* variables say (telemetry/metrics.py)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from importlib.metadata import EntryPoint, EntryPoints

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpExporter,
)
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)

from sealtrail_server.telemetry import otel_env
from sealtrail_server.telemetry.metrics import (
    Metrics,
    MetricsConfigError,
    metrics_exporter_names,
    metrics_from_env,
)
from sealtrail_server.telemetry.tracing import TracingConfigError, tracer_provider_from_env

SCRAPE_HERE = {"OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": "0"}


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, None),
        ({"OTEL_METRICS_EXPORTER": "none"}, []),
        ({"OTEL_METRICS_EXPORTER": "Prometheus, otlp,prometheus"}, ["prometheus", "otlp"]),
        ({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_SDK_DISABLED": "TRUE"}, None),
    ],
)
def test_metrics_are_off_unless_an_exporter_or_endpoint_is_configured(
    env: dict[str, str], names: list[str] | None
) -> None:
    assert metrics_exporter_names(env) == names


@pytest.mark.parametrize("env", [{}, {"OTEL_METRICS_EXPORTER": "none"}])
def test_no_metrics_by_default_or_when_none_are_asked_for(env: dict[str, str]) -> None:
    assert metrics_from_env(env) is None


def exporter_kind(reader: MetricReader) -> type:
    if isinstance(reader, PeriodicExportingMetricReader):
        return type(reader._exporter)
    return type(reader)


@pytest.mark.parametrize(
    ("env", "kinds"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, [GrpcExporter]),
        ({"OTEL_METRICS_EXPORTER": "none,console"}, [ConsoleMetricExporter]),
        (
            {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            [HttpExporter],
        ),
        (
            {
                "OTEL_METRICS_EXPORTER": "otlp,console,prometheus",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
                **SCRAPE_HERE,
            },
            [GrpcExporter, ConsoleMetricExporter, PrometheusMetricReader],
        ),
    ],
)
def test_the_readers_are_those_the_environment_names(
    env: dict[str, str], kinds: list[type]
) -> None:
    metrics = metrics_from_env(env, version="9.9")
    assert metrics is not None
    try:
        assert [exporter_kind(reader) for reader in metrics.readers] == kinds
        assert (metrics.address is not None) == (PrometheusMetricReader in kinds)
    finally:
        metrics.shutdown()


def scrape(metrics: Metrics) -> str:
    assert metrics.address is not None
    host, port = metrics.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def test_the_scrape_endpoint_serves_until_shut_down() -> None:
    metrics = metrics_from_env({"OTEL_METRICS_EXPORTER": "prometheus", **SCRAPE_HERE})
    assert metrics is not None and metrics.address is not None
    try:
        meter = metrics.provider.get_meter("sealtrail_server")
        meter.create_counter("sealtrail.probe", unit="{call}").add(3, {"kind": "test"})
        text = scrape(metrics)
        assert 'sealtrail_probe_total{kind="test",otel_scope_name="sealtrail_server"' in text
        assert 'service_name="sealtrail"' in text  # target_info: the resource
        assert "process_resident_memory_bytes" in text  # the process's own
    finally:
        metrics.shutdown()
    with pytest.raises(urllib.error.URLError):
        scrape(metrics)


def test_two_servers_in_one_process_keep_their_own_metrics() -> None:
    first = metrics_from_env({"OTEL_METRICS_EXPORTER": "prometheus", **SCRAPE_HERE})
    second = metrics_from_env({"OTEL_METRICS_EXPORTER": "prometheus", **SCRAPE_HERE})
    assert first is not None and second is not None
    try:
        first.provider.get_meter("m").create_counter("sealtrail.first").add(1)
        second.provider.get_meter("m").create_counter("sealtrail.second").add(1)
        assert "sealtrail_first_total" in scrape(first)
        assert "sealtrail_first_total" not in scrape(second)
    finally:
        first.shutdown()
        second.shutdown()


@pytest.mark.parametrize("port", ["http", "-1", "65536"])
def test_a_port_that_is_not_one_is_a_clear_error(port: str) -> None:
    with pytest.raises(MetricsConfigError, match=f"OTEL_EXPORTER_PROMETHEUS_PORT='{port}'"):
        metrics_from_env(
            {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": port}
        )


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        }
        with pytest.raises(MetricsConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            metrics_from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_METRICS_EXPORTER": "statsd"}, "'statsd', which is not installed; known: .*otlp"),
        ({"OTEL_METRICS_EXPORTER": "console,statsd"}, "'statsd', which is not installed"),
        (
            {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "^OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported",
        ),
        (
            {
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json",
            },
            "^OTEL_EXPORTER_OTLP_METRICS_PROTOCOL='http/json' is not supported",
        ),
    ],
)
def test_an_unknown_exporter_or_protocol_is_a_clear_error(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(MetricsConfigError, match=message):
        metrics_from_env(env)


@pytest.mark.parametrize(
    ("variable", "value", "build"),
    [
        ("OTEL_METRIC_EXPORT_INTERVAL", "0", "metrics"),
        ("OTEL_BSP_SCHEDULE_DELAY", "-1", "traces"),
    ],
)
def test_an_interval_the_sdk_refuses_is_named_not_traced(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, build: str
) -> None:
    """The SDK reads these itself, and its ValueError ended `serve` in a
    traceback (helper-140)."""
    monkeypatch.setenv(variable, value)
    if build == "metrics":
        with pytest.raises(MetricsConfigError, match=f"^{variable}: "):
            metrics_from_env({"OTEL_METRICS_EXPORTER": "console"})
    else:
        with pytest.raises(TracingConfigError, match=f"^{variable}: "):
            tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "console"})


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ("no_such_module:Exporter", "'broken', which cannot be loaded: No module named"),
        ("json:loads", "'broken', which cannot be started: "),  # needs an argument
    ],
)
def test_an_exporter_that_cannot_be_loaded_or_started_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, plugin: str, message: str
) -> None:
    def installed(group: str, name: str | None = None) -> EntryPoints:
        found = EntryPoints([EntryPoint("broken", plugin, group)])
        return found.select(name=name) if name is not None else found

    monkeypatch.setattr(otel_env, "entry_points", installed)
    with pytest.raises(MetricsConfigError, match=f"^OTEL_METRICS_EXPORTER names {message}"):
        metrics_from_env({"OTEL_METRICS_EXPORTER": "broken"})
    with pytest.raises(TracingConfigError, match=f"^OTEL_TRACES_EXPORTER names {message}"):
        tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "broken"})
