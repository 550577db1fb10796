"""Exceptions raised by the Sealtrail client, and their mapping from gRPC statuses.

SealtrailError                 every failed call; .code, .message, .reason, .metadata,
│                              .request_id (what the server's log and span know it by)
├── InvalidArgumentError       INVALID_ARGUMENT; .field_violations
├── NotFoundError              NOT_FOUND
├── AlreadyExistsError         ALREADY_EXISTS
├── UnauthenticatedError       UNAUTHENTICATED
├── PermissionDeniedError      PERMISSION_DENIED
├── AbortedError               ABORTED (a change on condition of an etag lost a race,
│                              or an export whose reader stopped was ended)
├── ResourceExhaustedError     RESOURCE_EXHAUSTED; .retry_after
├── UnavailableError           UNAVAILABLE; .retry_after
└── RpcFailedError             any other status (INTERNAL, DEADLINE_EXCEEDED, ...)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import grpc
from google.rpc import error_details_pb2, status_pb2

from sealtrail._correlation import REQUEST_ID_HEADER, current_request_id, person_metadata
from sealtrail._words import detailed
from sealtrail.v1 import audit_service_pb2

_DETAILS_KEY = "grpc-status-details-bin"
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ClientClosedError(ValueError):
    """A call on a client after its `close()`: no call is made. (A ValueError, as
    an operation on a closed file is.)"""

    def __init__(self) -> None:
        super().__init__("the client is closed")


class EventLoopError(RuntimeError):
    """A call on an AsyncAuditClient from an event loop while another loop,
    running in another thread, still uses its channel: a grpc.aio channel
    serves the loop it was made in, and closing it under the other would
    cancel that loop's calls. No call is made."""

    def __init__(self) -> None:
        super().__init__(
            "the client's channel serves an event loop still running in another thread:"
            " use one AsyncAuditClient per event loop"
        )


class SealtrailError(Exception):
    """A call failed with a non-OK status.

    `reason` is the machine-readable reason of the google.rpc.ErrorInfo detail ("" without one),
    `retry_after` the seconds of its google.rpc.RetryInfo (None without one) and
    `field_violations` the (field, description) pairs of its google.rpc.BadRequest, and
    `metadata` the ErrorInfo's metadata: what a program needs beside the reason (for
    reason PURGED, `resume_after_seq`; for BEYOND_LOG_SIZE, `tree_size`).
    `retried` is whether the client retried the call before this error: an earlier
    attempt, whose answer was lost, may have taken effect.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode,
        reason: str = "",
        retry_after: float | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.retry_after = retry_after
        self.field_violations = list(field_violations)
        self.metadata = dict(metadata or {})
        self.request_id = request_id
        self.retried = False

    def __str__(self) -> str:
        return detailed(self.code.name, self.message)


class InvalidArgumentError(SealtrailError):
    """The request was invalid; `field_violations` says which fields and why."""


class NotFoundError(SealtrailError):
    """The requested event does not exist in the caller's tenant."""


class AlreadyExistsError(SealtrailError):
    """The entity to create already exists."""


class UnauthenticatedError(SealtrailError):
    """The token is missing, malformed or unknown."""


class PermissionDeniedError(SealtrailError):
    """The token does not allow this call."""


class AbortedError(SealtrailError):
    """A change made on condition of an etag found the resource changed since it
    was read (reason ETAG_MISMATCH): nothing was changed; read it again. Or an
    export whose reader took no chunk for the server's stall setting was ended
    (reason EXPORT_STALLED): export again."""


class ResourceExhaustedError(SealtrailError):
    """A quota or rate limit was hit; `retry_after` says when to try again, if known."""


class UnavailableError(SealtrailError):
    """The service could not be reached or is shutting down; the call can be retried."""


class RpcFailedError(SealtrailError):
    """The call failed with a status no other exception stands for."""


_CLASSES: dict[grpc.StatusCode, type[SealtrailError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def from_rpc_error(err: grpc.RpcError) -> SealtrailError:
    """Converts a failed call (sync or grpc.aio) into the matching SealtrailError."""
    code = err.code()
    reason, retry_after, violations, info_metadata, request_id = "", None, [], {}, ""
    # Sync calls give _Metadatum pairs, grpc.aio ones plain tuples: both unpack as (key, value).
    metadata = cast(Iterable[tuple[str, str | bytes]], err.trailing_metadata() or ())
    for key, value in metadata:
        if key == REQUEST_ID_HEADER and isinstance(value, str):
            request_id = value
        if key == _DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            info = error_details_pb2.ErrorInfo()
            retry = error_details_pb2.RetryInfo()
            bad = error_details_pb2.BadRequest()
            for detail in status.details:
                # Unpack answers False when the detail is of another type.
                if detail.Unpack(info):
                    reason, info_metadata = info.reason, dict(info.metadata)
                elif detail.Unpack(retry):
                    retry_after = retry.retry_delay.ToNanoseconds() / 1e9
                elif detail.Unpack(bad):
                    violations = [(v.field, v.description) for v in bad.field_violations]
    return _make(
        code, err.details() or "", reason, retry_after, violations, info_metadata, request_id
    )


def failed_call(err: grpc.RpcError, *, sent_id: str, retried: bool) -> SealtrailError:
    """`from_rpc_error` for an attempt of a call or a stream: whether it was
    retried before, and the request id it was sent with when the server's
    trailer has none (a failure to connect, a deadline, a proxy's answer);
    `sent_id` "" where the client cannot know it (a channel given to it)."""
    error = from_rpc_error(err)
    error.retried = retried
    error.request_id = error.request_id or sent_id
    return error


def closed_during_call(*, sent_id: str, retried: bool) -> RpcFailedError:
    """What a call the client's own close() cut raises, in both clients'
    words (grpc's are its channel's: "Channel closed!")."""
    error = RpcFailedError(
        "the client was closed during the call",
        code=grpc.StatusCode.CANCELLED,
        request_id=sent_id,
    )
    error.retried = retried
    return error


def stream_ended(*, sent_id: str, retried: bool) -> UnavailableError:
    """What a stream the server ended (status OK) is taken for: a failure worth
    retrying, waited for as one. Sealtrail's server never ends a stream, but a
    proxy or another server may, and a stream that reconnected at once did so
    as fast as it was ended (helper-137)."""
    error = UnavailableError(
        "the server ended the stream", code=grpc.StatusCode.UNAVAILABLE, request_id=sent_id
    )
    error.retried = retried
    return error


def stream_metadata(
    metadata: Sequence[tuple[str, str]], *, owns_channel: bool
) -> tuple[tuple[tuple[str, str], ...], str]:
    """A stream's metadata with its request id, and that id: the caller's
    (`request_id(...)`), else a new one, sent with every attempt (a stream
    reconnecting is one request). On a channel given to the client, which is
    used as it is (its interceptors may send ids of their own), none is
    added, and none is claimed (""). The person of an `on_behalf_of(...)`
    block replaces the client's own, on any channel (person_metadata)."""
    metadata = person_metadata(metadata)
    if not owns_channel:
        return metadata, ""
    sent_id = current_request_id() or str(uuid.uuid4())
    return (*metadata, (REQUEST_ID_HEADER, sent_id)), sent_id


def from_entry_error(entry: audit_service_pb2.EntryError) -> SealtrailError:
    """Converts the error of one RecordBatch entry into the matching SealtrailError."""
    code = _CODES.get(entry.code, grpc.StatusCode.UNKNOWN)
    violations = [(v.field, v.description) for v in entry.field_violations]
    delay = (
        entry.retry_delay.ToTimedelta().total_seconds() if entry.HasField("retry_delay") else None
    )
    return _make(code, entry.message, entry.reason, delay, violations)


def _make(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    retry_after: float | None,
    violations: Iterable[tuple[str, str]],
    metadata: Mapping[str, str] | None = None,
    request_id: str = "",
) -> SealtrailError:
    cls = _CLASSES.get(code, RpcFailedError)
    return cls(
        message,
        code=code,
        reason=reason,
        retry_after=retry_after,
        field_violations=list(violations),
        metadata=metadata,
        request_id=request_id,
    )
