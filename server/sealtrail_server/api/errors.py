"""Maps the domain's exception tree (sealtrail_server.domain.errors) to gRPC:
one status code per error class, with google.rpc ErrorInfo (domain
"sealtrail"), BadRequest field violations and RetryInfo as status details."""

from __future__ import annotations

from typing import Final

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sealtrail.v1 import audit_service_pb2

from ..domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    IntegrityFailure,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SealtrailError,
    Unauthenticated,
    Unavailable,
)

ERROR_DOMAIN: Final = "sealtrail"

_CODES: Final[dict[type[SealtrailError], int]] = {
    InvalidArgument: code_pb2.INVALID_ARGUMENT,
    NotFound: code_pb2.NOT_FOUND,
    AlreadyExists: code_pb2.ALREADY_EXISTS,
    Unauthenticated: code_pb2.UNAUTHENTICATED,
    PermissionDenied: code_pb2.PERMISSION_DENIED,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    Aborted: code_pb2.ABORTED,
    IntegrityFailure: code_pb2.DATA_LOSS,
    ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    Unavailable: code_pb2.UNAVAILABLE,
}


def _code(error: SealtrailError) -> int:
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return int(code_pb2.INTERNAL)


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status(error: SealtrailError) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
    )
    details = [_packed(info)]
    if isinstance(error, InvalidArgument):
        details.append(
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, ResourceExhausted | Unavailable):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=_code(error), message=error.message, details=details)


def grpc_status(error: SealtrailError) -> grpc.Status:
    return rpc_status.to_status(rich_status(error))


def entry_error(error: SealtrailError) -> audit_service_pb2.EntryError:
    """The error of one RecordBatch entry."""
    violations = error.violations if isinstance(error, InvalidArgument) else []
    entry = audit_service_pb2.EntryError(
        code=_code(error),
        message=error.message,
        reason=error.reason,
        field_violations=[
            audit_service_pb2.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ],
    )
    if isinstance(error, ResourceExhausted | Unavailable):  # as a call's RetryInfo
        entry.retry_delay.FromNanoseconds(int(error.retry_after * 1e9))
    return entry
