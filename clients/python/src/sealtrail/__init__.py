"""Python client and CLI of Sealtrail, the append-only, tamper-evident audit log service."""

from sealtrail._async_client import AsyncAuditClient
from sealtrail._client import AuditClient
from sealtrail._convert import BatchEntryResult, RecordResult, build_event, build_filter
from sealtrail._errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RpcFailedError,
    SealtrailError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)
from sealtrail._export import ExportError

__all__ = [
    "AlreadyExistsError",
    "AsyncAuditClient",
    "AuditClient",
    "BatchEntryResult",
    "ExportError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "RecordResult",
    "ResourceExhaustedError",
    "RpcFailedError",
    "SealtrailError",
    "UnauthenticatedError",
    "UnavailableError",
    "build_event",
    "build_filter",
    "from_rpc_error",
]
