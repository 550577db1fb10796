"""Issue 5's figure: Record with tracing on. A third server process traces
every call (OTEL_TRACES_SAMPLER=always_on) and exports its spans over OTLP/gRPC
to the sink here, a collector that only counts what it receives: the server
pays for making, batching, encoding and sending every span, as it would in
production, and the collector's own work is not the server's."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2

SERVER_KIND = trace_pb2.Span.SPAN_KIND_SERVER


@dataclass
class Received:
    """What the sink was sent: every span, and the start times of the SERVER spans."""

    spans: int = 0
    server_starts: list[int] = field(default_factory=list)  # unix nanoseconds
    lock: threading.Lock = field(default_factory=threading.Lock)

    def server_spans_between(self, start: float, end: float) -> int:
        low, high = int(start * 1e9), int(end * 1e9)
        with self.lock:
            return sum(1 for started in self.server_starts if low <= started < high)


class _Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        spans, starts = 0, []
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                spans += len(scope.spans)
                starts += [s.start_time_unix_nano for s in scope.spans if s.kind == SERVER_KIND]
        with self.received.lock:
            self.received.spans += spans
            self.received.server_starts += starts
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def sink() -> Iterator[tuple[str, Received]]:
    """An OTLP/gRPC trace collector on 127.0.0.1 that keeps only counts;
    yields its endpoint and what it received."""
    received = Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Sink(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(0)


def traced_settings(endpoint: str) -> Mapping[str, str]:
    """The OTEL_* variables of the traced server: every call sampled, spans
    exported over OTLP/gRPC to `endpoint`."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAME": "sealtrail-bench",
    }


def unexported_settings() -> Mapping[str, str]:
    """The OTEL_* variables of a server that traces every call and exports
    nothing: issue 5's "100% sampling, no-op exporter"."""
    return {
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAME": "sealtrail-bench",
    }


def traceparent() -> str:
    """A sampled W3C trace context of a new trace, as a traced caller sends."""
    trace_id = int.from_bytes(os.urandom(16)) or 1
    span_id = int.from_bytes(os.urandom(8)) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-01"
