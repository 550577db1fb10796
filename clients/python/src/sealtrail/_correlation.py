"""Correlation of every call with the caller's request and trace.

Interceptors on both clients add to each call's metadata:
- `traceparent` (and `tracestate`) from the caller's current OpenTelemetry
  context, through the globally configured propagator (W3C trace context by
  default; OTEL_PROPAGATORS), never `baggage`, which is the caller's own.
  Only the API is needed: with no SDK installed, a context the caller's
  framework put there still goes out.
- `x-request-id`: the one set with `request_id(...)` for the calls inside it,
  else a new UUID per call.
Metadata the caller passed itself is never replaced, and a caller who passed
a trace header gets none of the current context's (which belong to another
trace).

The server stores the request id, trace id and span id with every event the
call records (unless the event carries its own), so a trace leads to its audit
events and back (docs/correlation.md).

A service that reads the log for people of its own says on whose behalf with
`x-sealtrail-on-behalf-of`: the client's `on_behalf_of=`, or, for the calls
inside it, `on_behalf_of(...)`. Unlike the ids above it goes with the token
(`person_metadata`), on any channel: a person silently left out of the
record is what the header is there to prevent."""

from __future__ import annotations

import contextvars
import logging
import re
import urllib.parse
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import grpc
from opentelemetry import propagate

REQUEST_ID_HEADER: Final = "x-request-id"
ON_BEHALF_OF_HEADER: Final = "x-sealtrail-on-behalf-of"
# As long as an event's actor id may be, without the characters the server
# refuses in one given on behalf of (C0 and C1 controls).
MAX_PERSON = 256
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UUID: Final = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sealtrail_request_id", default=None
)

Metadata = Sequence[tuple[str, str | bytes]]

if TYPE_CHECKING:  # generic only in grpc-stubs
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
    _AioUnaryUnaryBase = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _AioUnaryStreamBase = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.UnaryStreamClientInterceptor
    _AioUnaryUnaryBase = grpc.aio.UnaryUnaryClientInterceptor
    _AioUnaryStreamBase = grpc.aio.UnaryStreamClientInterceptor


log = logging.getLogger("sealtrail")


def _normalized(value: str | uuid.UUID) -> str | None:
    if isinstance(value, uuid.UUID):
        return str(value)
    text = value.strip().lower()
    if not _UUID.fullmatch(text) or ("-" in text and len(text) != 36):
        return None
    return str(uuid.UUID(text))


@contextmanager
def request_id(value: str | uuid.UUID | None = None, *, strict: bool = False) -> Iterator[str]:
    """Send `value` as the `x-request-id` of every call made inside, from this
    thread or task and the tasks it starts. Yields the id. Use it where your
    own request starts, with your request's id, so the audit events of the
    request carry it::

        with sealtrail.request_id(incoming.headers.get("x-request-id")):
            audit.record(...)

    A UUID (hyphens optional) is sent as it is; None, or anything else (a
    proxy's `req-abc`, an empty header), is replaced by a new UUID, as the
    server would: a malformed header your caller sent must not cost you the
    request or its audit record. `strict=True` raises ValueError instead."""
    chosen = None if value is None else _normalized(value)
    if chosen is None:
        if value is not None:
            if strict:
                raise ValueError(f"a request id must be a UUID, not {value!r}")
            log.debug("request id %r is not a UUID; sending a new one", value)
        chosen = str(uuid.uuid4())
    token = _request_id.set(chosen)
    try:
        yield chosen
    finally:
        _request_id.reset(token)


def current_request_id() -> str | None:
    """The request id set by the innermost `request_id(...)` block, if any."""
    return _request_id.get()


class _Unset:
    """No `on_behalf_of(...)` block: the client's own `on_behalf_of=` holds."""


_UNSET: Final = _Unset()
_person: contextvars.ContextVar[str | _Unset | None] = contextvars.ContextVar(
    "sealtrail_on_behalf_of", default=_UNSET
)


def checked_person(person: str) -> str:
    """`person` if the server takes it as the one a call is made on behalf
    of (as an event's actor id: 1 to 256 characters, no control character);
    ValueError otherwise."""
    if not isinstance(person, str) or not person:
        raise ValueError("on_behalf_of must be a person's id: a non-empty string")
    if len(person) > MAX_PERSON:
        raise ValueError(
            f"on_behalf_of is {len(person)} characters long; the limit is {MAX_PERSON}"
        )
    if _CONTROL.search(person):
        raise ValueError("on_behalf_of must not contain control characters")
    try:
        person.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: a byte of argv or os.environ not in UTF-8
        raise ValueError("on_behalf_of must be UTF-8 text: it holds a byte that is not") from None
    return person


def _header_value(person: str) -> str:
    """`person` as the header carries it: printable ASCII as it is, `%`, a
    space (which HTTP may trim at either end) and any other character
    percent-encoded as UTF-8 (gRPC sends ASCII alone)."""
    return "".join(
        c if c.isascii() and c.isprintable() and c not in "% " else urllib.parse.quote(c, safe="")
        for c in person
    )


@contextmanager
def on_behalf_of(person: str | None) -> Iterator[None]:
    """Say that the calls made inside, from this thread or task and the tasks
    it starts, are made on behalf of `person` (your user's id), whatever the
    client's own `on_behalf_of=`; None: on no one's. Sealtrail's records of
    those calls (`audit_log.queried`, `.exported`, a refusal...) carry it in
    `details.on_behalf_of`, as your service's word: the token stays the
    actor. Use it where your request for that user starts::

        with sealtrail.on_behalf_of(request.user.id):
            page = audit.query_page(...)

    A query's or a stream's first call is the one recorded: iterate inside
    the block. ValueError for an id the server would refuse."""
    token = _person.set(None if person is None else checked_person(person))
    try:
        yield
    finally:
        _person.reset(token)


def on_behalf_of_metadata(person: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata a client sends for its `on_behalf_of=` (`person`; None:
    none); ValueError for an id the server would refuse."""
    if person is None:
        return ()
    return ((ON_BEHALF_OF_HEADER, _header_value(checked_person(person))),)


def person_metadata(metadata: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """A call's metadata (a client's, with its own `on_behalf_of=`), with the
    person of the innermost `on_behalf_of(...)` block instead, if any."""
    person = _person.get()
    if isinstance(person, _Unset):
        return tuple(metadata)
    kept = tuple(item for item in metadata if item[0] != ON_BEHALF_OF_HEADER)
    return kept + on_behalf_of_metadata(person)


def correlation_metadata(existing: Metadata | None) -> list[tuple[str, str]]:
    """The metadata to add to a call that already has `existing`."""
    present = {key for key, _ in existing or ()}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    # The caller's baggage (user ids, tenant names) is for its own services:
    # Sealtrail reads none of it, so none of it leaves for Sealtrail.
    carrier.pop("baggage", None)
    # Baggage is not a trace: a caller's own may go with the current trace.
    own_trace = not present.isdisjoint(propagate.get_global_textmap().fields - {"baggage"})
    added = [] if own_trace else list(carrier.items())
    if REQUEST_ID_HEADER not in present:
        added.append((REQUEST_ID_HEADER, _request_id.get() or str(uuid.uuid4())))
    return added


class _CallDetails(
    namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """A sync call's details with other metadata (grpc.ClientCallDetails is abstract)."""


def _with_correlation(details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
    metadata = list(details.metadata or ())
    return _CallDetails(
        details.method,
        details.timeout,
        [*metadata, *correlation_metadata(metadata)],
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


class CorrelationInterceptor(_UnaryUnary, _UnaryStream):
    """For a sync channel: `grpc.intercept_channel(channel, CorrelationInterceptor())`.
    AuditClient does this to every channel it uses."""

    def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(_with_correlation(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(_with_correlation(client_call_details), request)


def _with_aio_correlation(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    existing = list(details.metadata or ())
    metadata = grpc.aio.Metadata(*existing, *correlation_metadata(existing))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _AioUnaryUnary(_AioUnaryUnaryBase):
    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_aio_correlation(client_call_details), request)


class _AioUnaryStream(_AioUnaryStreamBase):
    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_aio_correlation(client_call_details), request)


AioCorrelationInterceptor = _AioUnaryUnary | _AioUnaryStream


def aio_correlation_interceptors() -> list[AioCorrelationInterceptor]:
    """For an asyncio channel: `grpc.aio.insecure_channel(target,
    interceptors=aio_correlation_interceptors())`. AsyncAuditClient's own
    channel has them; a channel passed to it is used as it was made."""
    return [_AioUnaryUnary(), _AioUnaryStream()]
