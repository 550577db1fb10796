"""The outermost interceptor of every AuditLogService call: it reads the
caller's W3C trace context and `x-request-id` off the metadata, starts the
call's SERVER span (when tracing is on), keeps the call's correlation in a
contextvar for the servicer and the log lines, and sends the request id back
(trailing metadata of every answer; streams also send it in initial metadata,
before their first message). It runs before the guard, so refused calls are
traced and answered with their request id too.

A request id that is not a UUID is replaced by a new one, never refused: a
malformed correlation header must not cost an audit record. The span keeps
what was received (`sealtrail.request_id.invalid`). An invalid traceparent is
ignored (the W3C propagator drops it) and the call starts a trace of its own;
an invalid tracestate is dropped, its traceparent kept. Neither is logged: the
propagator's warnings, most quoting the caller's text, would be a line of the
server's log per call for anyone who can reach the port, token or none.
Health checks and reflection are not traced: probes would flood the traces.
A span names the call's ends as OpenTelemetry's conventions do (peer.py): the
connection's peer (`network.peer.address`, `.port`, `network.type`,
`network.transport`) and, over TCP, the address listened on (`server.address`,
`server.port`).

Every call's duration is measured (`rpc.server.call.duration`, OpenTelemetry's
RPC conventions: the method and the status it ended with), whatever the
tracing; health checks and reflection are not measured either."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Final, cast

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context as TraceContext
from opentelemetry.metrics import Histogram, Meter
from opentelemetry.trace import SpanKind, Status, Tracer
from opentelemetry.trace import StatusCode as SpanStatus

from ..domain.event import parse_request_id
from ..measures import CALL_SECONDS_BUCKETS, no_meter
from ..service_interceptor import Behavior, Handler, ServiceInterceptor
from .context import (
    REQUEST_ID_HEADER,
    correlation_of,
    new_request_id,
    set_correlation,
)
from .peer import Attributes, peer_attributes, server_attributes

log = logging.getLogger(__name__)

REQUEST_ID_ATTRIBUTE: Final = "sealtrail.request_id"
INVALID_REQUEST_ID_ATTRIBUTE: Final = "sealtrail.request_id.invalid"
_MAX_KEPT_INVALID = 128  # characters of an invalid request id kept on the span
# Codes that make a server span an error (OpenTelemetry gRPC conventions);
# the others are the caller's mistakes, not the server's.
_SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

# The most a call's trip from client to server may take: see _code.
_DEADLINE_SLACK: Final = 0.25  # seconds

# How calls end without a failure of their own: aborted with a status by the
# guard, cancelled by the client, or a stream closed early.
_ENDINGS: Final = (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit)

Context = grpc.aio.ServicerContext[Any, Any]


class _Call:
    """One call's telemetry, from its metadata to its end."""

    __slots__ = (
        "_attached",
        "_budget",
        "_durations",
        "_started",
        "_task",
        "_token",
        "method",
        "request_id",
        "span",
    )

    def __init__(
        self,
        method: str,
        span: trace.Span | None,
        attached: TraceContext | None,
        request_id: str,
        durations: Histogram,
        budget: float | None = None,
    ) -> None:
        """`budget`: the seconds its deadline left it as it began (None: none)."""
        self.method = method
        self._durations = durations
        self._budget = budget
        self.span = span
        self._attached = attached
        self._token = otel_context.attach(attached) if attached is not None else None
        self._task = _running_task()  # whose context the token belongs to
        self.request_id = request_id
        self._started = time.perf_counter()

    def end(self, context: Context, error: BaseException | None) -> None:
        code = _code(context, error, self._budget)
        span = self.span
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_ERRORS:
                span.set_status(Status(SpanStatus.ERROR, code.name))
            if error is not None and not isinstance(error, _ENDINGS):
                span.record_exception(error)
            span.end()
        elapsed = time.perf_counter() - self._started
        self._durations.record(
            elapsed,
            {
                "rpc.system.name": "grpc",
                "rpc.method": self.method,
                "rpc.response.status_code": code.name,
            },
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s in %.1f ms", self.method, code.name, elapsed * 1000)
        # A stream closed outside its call's task (by the garbage collector, had
        # StreamScope not closed it in the call's) runs in another task's context:
        # nothing of ours is attached there to undo.
        # That context may hold our trace context too (a task started while it
        # was attached inherits it), so the task is compared, not the value.
        if (
            self._token is not None
            and _running_task() is self._task
            and otel_context.get_current() is self._attached
        ):
            otel_context.detach(self._token)


def _running_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no event loop running here
        return None


def _code(
    context: Context, error: BaseException | None, budget: float | None = None
) -> grpc.StatusCode:
    """The status the call ends with: what an abort set, else what an
    exception or a normal return give. A call cut off as its deadline passed
    is cancelled here as one its client gave up on is: the time left tells
    them apart. The client's deadline passes first (the server's runs from
    when the call reached it), and the client then cancels the call: a
    cancellation within `_DEADLINE_SLACK` of the deadline, and in the last
    tenth of the call's `budget`, is its expiry."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        slack = _DEADLINE_SLACK if budget is None else min(_DEADLINE_SLACK, budget / 10)
        if remaining is not None and remaining <= slack:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


_TRACEPARENT: Final = "traceparent"

# Set while a call's trace context is read off its metadata: what the
# propagators warn of then is the caller's malformed header, not theirs.
_extracting: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sealtrail_extracting", default=False
)


class _CallersTraceContext(logging.Filter):
    """Drops the warnings a call's own trace headers cause (a tracestate
    member that is none, a traceparent or tracestate over the length bound):
    logged, each would be a line per call for any caller to write, most with
    its text. What the propagators log at other times passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _extracting.get()


def _extract(carrier: dict[str, str]) -> TraceContext:
    token = _extracting.set(True)
    try:
        return propagate.extract(carrier)
    finally:
        _extracting.reset(token)


# The W3C trace context propagator's logger, and that of TraceState, which it
# parses the tracestate with.
for _name in ("opentelemetry.trace.propagation.tracecontext", "opentelemetry.trace.span"):
    logging.getLogger(_name).addFilter(_CallersTraceContext())


class TelemetryInterceptor(ServiceInterceptor):
    """`tracer` None: no spans at all (tracing off); request ids and the
    caller's trace context still reach events and logs. `meter` None: no
    measurements."""

    def __init__(self, *, tracer: Tracer | None, meter: Meter | None = None) -> None:
        super().__init__()
        self._tracer = tracer
        self._durations = (meter or no_meter()).create_histogram(
            "rpc.server.call.duration",
            unit="s",
            description="How long each call took, from its metadata to its last message.",
            explicit_bucket_boundaries_advisory=CALL_SECONDS_BUCKETS,
        )
        # Sealtrail never reads baggage: parsing it costs a warning per bad entry.
        self._fields = frozenset(propagate.get_global_textmap().fields) - {"baggage"}
        self._server: Attributes = {}

    def serving(self, listen: str, port: int) -> None:
        """The address the server listens on (HOST:PORT as configured) and the
        port it bound: a span of a call over TCP names them (`server.address`,
        `server.port`). Calls over a Unix socket (the console's) name none."""
        self._server = server_attributes(listen, port)

    def _begin(self, context: Context, method: str) -> _Call:
        received: str | None = None
        carrier: dict[str, str] | None = None
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_HEADER:
                if received is None:
                    received = value if isinstance(value, str) else value.decode("latin-1")
            elif key in self._fields and isinstance(value, str):
                if carrier is None:
                    carrier = {}
                # A header sent twice is one list (W3C), but two parents are none.
                earlier = carrier.get(key)
                carrier[key] = value if earlier is None else f"{earlier},{value}"
        if carrier is not None and "," in carrier.get(_TRACEPARENT, ""):
            del carrier[_TRACEPARENT]
        parent = _extract(carrier) if carrier is not None else None
        caller = trace.get_current_span(parent).get_span_context() if parent else None
        request_id = parse_request_id(received) if received is not None else None
        invalid = received if received is not None and request_id is None else None
        if request_id is None:
            request_id = new_request_id()
        span: trace.Span | None = None
        current = parent
        if self._tracer is not None:
            service, _, name = method.partition("/")
            peer = peer_attributes(context.peer())
            span = self._tracer.start_span(
                method,
                context=parent,
                kind=SpanKind.SERVER,
                attributes={
                    "rpc.system": "grpc",
                    "rpc.service": service,
                    "rpc.method": name,
                    REQUEST_ID_ATTRIBUTE: request_id,
                    **peer,
                    **(self._server if "network.peer.port" in peer else {}),
                },
            )
            if invalid is not None:
                span.set_attribute(INVALID_REQUEST_ID_ATTRIBUTE, invalid[:_MAX_KEPT_INVALID])
            current = trace.set_span_in_context(span, parent)
        call = _Call(method, span, current, request_id, self._durations, context.time_remaining())
        own = span.get_span_context() if span is not None else trace.INVALID_SPAN_CONTEXT
        set_correlation(correlation_of(request_id, caller or trace.INVALID_SPAN_CONTEXT, own))
        context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
        return call

    def _wrap_unary(self, handler: Handler, method_path: str) -> Handler:
        method = method_path.removeprefix("/")
        inner = cast(Behavior, handler.unary_unary)

        async def traced(request: Any, context: Context) -> Any:
            call = self._begin(context, method)
            try:
                response = await inner(request, context)
            except BaseException as error:
                call.end(context, error)
                raise
            call.end(context, None)
            return response

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_stream(self, handler: Handler, method_path: str) -> Handler:
        method = method_path.removeprefix("/")
        inner = cast(Behavior, handler.unary_stream)

        async def traced(request: Any, context: Context) -> AsyncIterator[Any]:
            call = self._begin(context, method)
            try:
                await context.send_initial_metadata(((REQUEST_ID_HEADER, call.request_id),))
                responses = inner(request, context)
                async with aclosing(responses):  # a cancelled call closes the handler now
                    async for response in responses:
                        yield response
            except BaseException as error:
                call.end(context, error)
                raise
            call.end(context, None)

        return grpc.unary_stream_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
