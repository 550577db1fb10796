"""Per-request correlation values, kept in a contextvar by the telemetry
interceptor for the servicer (events) and for log lines: the request id and
the caller's span."""

from __future__ import annotations

import contextvars
import os
from typing import Final

from opentelemetry import trace

from ..domain.event import NO_CORRELATION, Correlation

REQUEST_ID_HEADER: Final = "x-request-id"
_correlation: contextvars.ContextVar[Correlation] = contextvars.ContextVar(
    "sealtrail_correlation", default=NO_CORRELATION
)


# A version-4 UUID's fixed bits: its version (4) and its variant (RFC 4122).
_UUID4_KEPT: Final = ~(0xF << 76) & ~(0x3 << 62) & ((1 << 128) - 1)
_UUID4_SET: Final = (0x4 << 76) | (0x2 << 62)


def new_request_id() -> str:
    """A random (version 4) UUID, lowercase and hyphenated: what `uuid.uuid4()`
    spells, from the same 16 bytes of `os.urandom`, a third of its cost. A
    UUID object built and written per call was 1% of a Record's server CPU."""
    bits = int.from_bytes(os.urandom(16)) & _UUID4_KEPT | _UUID4_SET
    hexed = f"{bits:032x}"
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def correlation_of(
    request_id: str, caller: trace.SpanContext, own: trace.SpanContext
) -> Correlation:
    """The call's correlation: the caller's span when it sent a valid trace
    context, else the server's own span for the call when that one is recorded
    (so it exists in a tracing backend), else no trace at all."""
    span = caller if caller.is_valid else own if own.is_valid and own.trace_flags.sampled else None
    if span is None:
        return Correlation(request_id=request_id)
    return Correlation(
        request_id=request_id,
        trace_id=trace.format_trace_id(span.trace_id),
        span_id=trace.format_span_id(span.span_id),
    )


def set_correlation(correlation: Correlation) -> None:
    """For the call being served; each gRPC call runs in a task (and context) of its own."""
    _correlation.set(correlation)


def current_correlation() -> Correlation:
    """The correlation of the call being served (all empty outside one)."""
    return _correlation.get()


def current_request_id() -> str:
    """The request id of the call being served ("" outside one)."""
    return _correlation.get().request_id


def response_metadata() -> tuple[tuple[str, str], ...]:
    """What every answer carries back: the request id the call was served under."""
    request_id = _correlation.get().request_id
    return ((REQUEST_ID_HEADER, request_id),) if request_id else ()
