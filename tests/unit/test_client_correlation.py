"""The client's correlation interceptors on their own: what metadata each call
gets, sync and asyncio, and that the API alone (no SDK) is enough."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import grpc
import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import sealtrail
from sealtrail import CorrelationInterceptor, aio_correlation_interceptors

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
METHOD = "/sealtrail.v1.AuditLogService/Record"


def caller_span() -> NonRecordingSpan:
    """A span of the calling application, as its own tracing would set it."""
    return NonRecordingSpan(
        SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    )


class Details:
    """grpc.ClientCallDetails as grpc passes it to an interceptor."""

    def __init__(self, metadata: Any = None) -> None:
        self.method = METHOD
        self.timeout = 5.0
        self.metadata = metadata
        self.credentials = None
        self.wait_for_ready = True
        self.compression = None


def sent(metadata: Any = None) -> dict[str, list[str]]:
    """The metadata a sync call goes out with, by key."""
    seen: list[Any] = []

    def continuation(details: Any, request: Any) -> str:
        seen.append(details)
        return "response"

    assert CorrelationInterceptor().intercept_unary_unary(continuation, Details(metadata), 1) == (
        "response"
    )
    [details] = seen
    assert (details.method, details.timeout, details.wait_for_ready) == (METHOD, 5.0, True)
    result: dict[str, list[str]] = {}
    for key, value in details.metadata:
        result.setdefault(key, []).append(value)
    return result


def test_a_call_inside_a_span_and_a_request_carries_both() -> None:
    with trace.use_span(caller_span()), sealtrail.request_id(uuid.UUID(int=7)) as request_id:
        metadata = sent((("authorization", "Bearer t"),))
        assert sealtrail.current_request_id() == request_id
    assert metadata == {
        "authorization": ["Bearer t"],
        "traceparent": [TRACEPARENT],
        "x-request-id": ["00000000-0000-0000-0000-000000000007"],
    }
    assert sealtrail.current_request_id() is None


def test_the_callers_baggage_is_not_sent() -> None:
    """Sealtrail reads no baggage; the caller's (user ids, say) stays with it."""
    token = otel_context.attach(baggage.set_baggage("user.email", "ann@example.com"))
    try:
        with trace.use_span(caller_span()):
            metadata = sent()
    finally:
        otel_context.detach(token)
    assert "baggage" not in metadata and metadata["traceparent"] == [TRACEPARENT]


def test_outside_a_span_and_a_request_a_call_gets_a_new_request_id_and_no_trace() -> None:
    first, second = sent(), sent()
    assert "traceparent" not in first
    ids = [first["x-request-id"][0], second["x-request-id"][0]]
    assert ids[0] != ids[1]
    assert all(str(uuid.UUID(value)) == value for value in ids)


def test_metadata_the_caller_set_is_kept() -> None:
    own = (("x-request-id", "mine"), ("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-00"))
    with trace.use_span(caller_span()), sealtrail.request_id():
        metadata = sent(own)
    assert metadata == {"x-request-id": ["mine"], "traceparent": [own[1][1]]}


def test_a_caller_who_sent_a_trace_header_gets_none_of_the_current_contexts() -> None:
    """The current context's tracestate and baggage belong to another trace."""
    own = (("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"),)
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with trace.use_span(caller_span()):
            metadata = sent(own)
    finally:
        otel_context.detach(token)
    assert set(metadata) == {"traceparent", "x-request-id"}
    assert metadata["traceparent"] == [own[0][1]]


def test_streams_are_intercepted_too() -> None:
    seen: list[Any] = []
    with sealtrail.request_id() as request_id:
        CorrelationInterceptor().intercept_unary_stream(
            lambda details, request: seen.append(details), Details(), 1
        )
    assert ("x-request-id", request_id) in seen[0].metadata


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("5F0C6F0E-8D1A-4C35-9A57-2B7C1C0D9E11", "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"),
        ("5f0c6f0e8d1a4c359a572b7c1c0d9e11", "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"),
    ],
)
def test_request_id_normalises_a_uuid(given: str, expected: str) -> None:
    with sealtrail.request_id(given) as chosen:
        assert chosen == expected


@pytest.mark.parametrize("given", ["req-42", "", "5f0c6f0e-8d1a4c35-9a57-2b7c1c0d9e11"])
def test_request_id_replaces_what_is_not_a_uuid(given: str) -> None:
    """As the server does: a malformed header an application passes on from its
    own caller must not fail the application's request, nor cost its record."""
    with sealtrail.request_id(given) as chosen:
        assert str(uuid.UUID(chosen)) == chosen
        assert sealtrail.current_request_id() == chosen
    with (
        pytest.raises(ValueError, match="must be a UUID"),
        sealtrail.request_id(given, strict=True),
    ):
        pass


def test_request_ids_of_concurrent_tasks_stay_apart() -> None:
    async def one(index: int) -> tuple[str, str]:
        with sealtrail.request_id() as chosen:
            await asyncio.sleep(0.01 * (3 - index))
            return chosen, sealtrail.current_request_id() or ""

    async def main() -> list[tuple[str, str]]:
        return await asyncio.gather(*(one(i) for i in range(3)))

    for chosen, seen in asyncio.run(main()):
        assert chosen == seen


def test_the_asyncio_interceptors_add_the_same_metadata() -> None:
    unary, stream = aio_correlation_interceptors()
    assert isinstance(unary, grpc.aio.UnaryUnaryClientInterceptor)
    assert isinstance(stream, grpc.aio.UnaryStreamClientInterceptor)
    seen: list[Any] = []

    async def continuation(details: Any, request: Any) -> str:
        seen.append(details)
        return "call"

    async def main() -> None:
        details = grpc.aio.ClientCallDetails(
            METHOD, 5.0, grpc.aio.Metadata(("authorization", "Bearer t")), None, None
        )
        with trace.use_span(caller_span()), sealtrail.request_id() as request_id:
            assert await unary.intercept_unary_unary(continuation, details, 1) == "call"
            assert await stream.intercept_unary_stream(continuation, details, 1) == "call"
        for made in seen:
            assert isinstance(made.metadata, grpc.aio.Metadata)
            assert list(made.metadata) == [
                ("authorization", "Bearer t"),
                ("traceparent", TRACEPARENT),
                ("x-request-id", request_id),
            ]

    asyncio.run(main())
    assert len(seen) == 2


def test_the_client_needs_only_the_opentelemetry_api() -> None:
    """With the SDK impossible to import, the client still loads and sends a
    trace context that the caller's (API-only) context holds."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["opentelemetry.sdk"] = None  # as if not installed
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
        import sealtrail
        from sealtrail._correlation import correlation_metadata
        span = NonRecordingSpan(SpanContext({TRACE_ID}, {SPAN_ID}, False, TraceFlags(1)))
        with trace.use_span(span), sealtrail.request_id() as request_id:
            metadata = dict(correlation_metadata(()))
        assert metadata == {{"traceparent": "{TRACEPARENT}", "x-request-id": request_id}}
        assert not any(name.startswith("opentelemetry.sdk.") for name in sys.modules)
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
