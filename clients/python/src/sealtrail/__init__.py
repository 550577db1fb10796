"""Python client and CLI of Sealtrail, the append-only, tamper-evident audit log service."""

from sealtrail._async_client import AsyncAuditClient
from sealtrail._bundle import BundleError, BundleSummary, verify_bundle, write_bundle
from sealtrail._checkpoint_check import CheckpointCheck, CheckpointError, OtherLogError
from sealtrail._client import AuditClient
from sealtrail._convert import (
    BatchEntryResult,
    EventFields,
    Order,
    RecordResult,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
    message_to_dict,
)
from sealtrail._correlation import (
    CorrelationInterceptor,
    aio_correlation_interceptors,
    current_request_id,
    request_id,
)
from sealtrail._errors import (
    AbortedError,
    AlreadyExistsError,
    ClientClosedError,
    EventLoopError,
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
from sealtrail._export import ExportError, ExportFormat

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "AsyncAuditClient",
    "AuditClient",
    "BatchEntryResult",
    "BundleError",
    "BundleSummary",
    "CheckpointCheck",
    "CheckpointError",
    "ClientClosedError",
    "CorrelationInterceptor",
    "EventFields",
    "EventLoopError",
    "ExportError",
    "ExportFormat",
    "InvalidArgumentError",
    "NotFoundError",
    "Order",
    "OtherLogError",
    "PermissionDeniedError",
    "RecordResult",
    "ResourceExhaustedError",
    "RpcFailedError",
    "SealtrailError",
    "UnauthenticatedError",
    "UnavailableError",
    "aio_correlation_interceptors",
    "build_alert_rule",
    "build_event",
    "build_filter",
    "build_sink",
    "current_request_id",
    "from_rpc_error",
    "message_to_dict",
    "request_id",
    "verify_bundle",
    "write_bundle",
]
