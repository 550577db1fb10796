"""A server whose spans go, through an SDK tracer provider of its own, into
an InMemorySpanExporter a test reads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import ServerThread


@contextlib.contextmanager
def traced_server_of(
    url: str, exporter: InMemorySpanExporter, **settings: Any
) -> Iterator[ServerThread]:
    """A server on the database at `url` (with `settings`) exporting its spans
    into `exporter`; closed, its provider shut down, after."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    running = ServerThread(url, tracer_provider=provider, **settings)
    try:
        yield running
    finally:
        running.close()
        provider.shutdown()
