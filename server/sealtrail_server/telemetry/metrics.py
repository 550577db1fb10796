"""The meter provider, configured as tracing is (telemetry/tracing.py) by the
standard OTEL_* variables, and the Prometheus endpoint when one is asked for.

Metrics are on when OTEL_METRICS_EXPORTER names an exporter, or when an OTLP
endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or _METRICS_ENDPOINT), which then
implies `otlp`; and off when OTEL_SDK_DISABLED is true, when neither is set
(unlike the SDK's own default, `otlp`), or when it says `none` alone:
measurements nobody reads would only cost.

- `otlp` pushes every OTEL_METRIC_EXPORT_INTERVAL ms (60,000) over gRPC, or
  over HTTP when OTEL_EXPORTER_OTLP_METRICS_PROTOCOL (or _PROTOCOL) is
  `http/protobuf`.
- `prometheus` serves the text format for scraping at
  http://OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT/metrics
  (localhost:9464 by default; port 0 takes a free one, `Metrics.address`
  says which), from a thread of its own: a scrape never waits for the event
  loop, and a busy loop never fails a scrape. The process's own figures
  (memory, CPU, open files, start time; the garbage collector's) come with
  them, as prometheus_client describes them.
- `console` prints to stdout at the export interval; any other name is looked
  up among the installed `opentelemetry_metrics_exporter` entry points.

The resource is tracing's (service.name `sealtrail` by default). `env` picks
the exporters and the scrape address; each exporter reads its own settings
(endpoint, headers, interval) from the process's environment, as the SDK does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from wsgiref.simple_server import WSGIServer

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    ProcessCollector,
    start_http_server,
)

from .otel_env import exporter_names, exporter_plugin
from .tracing import service_resource

DEFAULT_PROMETHEUS_HOST: Final = "localhost"
DEFAULT_PROMETHEUS_PORT: Final = 9464  # OpenTelemetry's, registered with Prometheus


class MetricsConfigError(ValueError):
    """The OTEL_* variables ask for metrics that cannot be set up."""


@dataclass
class Metrics:
    """A meter provider, its readers, and where Prometheus scrapes (host,
    port; None without the `prometheus` exporter)."""

    provider: MeterProvider
    readers: tuple[MetricReader, ...] = ()
    address: tuple[str, int] | None = None
    _scrape_server: WSGIServer | None = field(default=None, repr=False)

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Stop serving scrapes, then export what the pushing readers hold,
        within `timeout_millis`."""
        if self._scrape_server is not None:
            self._scrape_server.shutdown()
            self._scrape_server.server_close()
            self._scrape_server = None
        self.provider.shutdown(timeout_millis=timeout_millis)


def metrics_exporter_names(env: Mapping[str, str]) -> list[str] | None:
    """The exporters the environment asks for ([] for `none`), or None when
    metrics are off."""
    return exporter_names(env, "metrics")


def metrics_from_env(env: Mapping[str, str], *, version: str = "") -> Metrics | None:
    """A meter provider exporting as the environment says, or None when metrics
    are off. Raises MetricsConfigError for an unknown exporter or protocol, a
    bad port, or an address the scrape endpoint cannot bind, before anything
    else is started."""
    names = metrics_exporter_names(env)
    if not names:
        return None
    readers: list[MetricReader] = []
    registry: CollectorRegistry | None = None
    address: tuple[str, int] | None = None
    server: WSGIServer | None = None
    try:
        for name in names:
            if name == "prometheus":
                registry = CollectorRegistry(auto_describe=True)
                ProcessCollector(registry=registry)
                GCCollector(registry=registry)
                readers.append(PrometheusMetricReader(registry=registry))
            else:
                readers.append(_reader(name, env))
        if registry is not None:
            server, address = _serve_scrapes(env, registry)
    except BaseException:
        for reader in readers:  # a pushing reader has started its thread
            reader.shutdown()
        raise
    provider = MeterProvider(metric_readers=readers, resource=service_resource(version))
    return Metrics(provider, tuple(readers), address, server)


def _serve_scrapes(
    env: Mapping[str, str], registry: CollectorRegistry
) -> tuple[WSGIServer, tuple[str, int]]:
    host = env.get("OTEL_EXPORTER_PROMETHEUS_HOST", "").strip() or DEFAULT_PROMETHEUS_HOST
    text = env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "").strip()
    try:
        port = int(text) if text else DEFAULT_PROMETHEUS_PORT
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise MetricsConfigError(
            f"OTEL_EXPORTER_PROMETHEUS_PORT={text!r} is not a port (0 to 65535; 0 takes a free one)"
        )
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise MetricsConfigError(
            f"cannot serve metrics on {host}:{port}"
            " (OTEL_EXPORTER_PROMETHEUS_HOST, OTEL_EXPORTER_PROMETHEUS_PORT):"
            f" {error.strerror or error}"
        ) from None
    return server, (host, server.server_port)


def _reader(name: str, env: Mapping[str, str]) -> MetricReader:
    loaded = exporter_plugin(env, "metrics", name, MetricsConfigError)
    try:
        if isinstance(loaded, type) and issubclass(loaded, MetricReader):
            reader: MetricReader = loaded()
            return reader
        exporter: MetricExporter = loaded()
    except Exception as error:  # settings its constructor refuses
        raise MetricsConfigError(
            f"OTEL_METRICS_EXPORTER names {name!r}, which cannot be started: {error}"
        ) from error
    try:
        return PeriodicExportingMetricReader(exporter)  # reads the interval itself
    except ValueError:
        exporter.shutdown()
        interval = env.get("OTEL_METRIC_EXPORT_INTERVAL", "")
        raise MetricsConfigError(
            f"OTEL_METRIC_EXPORT_INTERVAL: {interval!r} is not a number of milliseconds above 0"
        ) from None
