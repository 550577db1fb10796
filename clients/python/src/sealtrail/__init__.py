"""Python client and CLI of Sealtrail, the append-only, tamper-evident audit log service."""

from sealtrail._async_client import AsyncAuditClient
from sealtrail._bundle import SeqRange, received_range, write_bundle
from sealtrail._bundle_check import verify_bundle
from sealtrail._bundle_format import BundleError, BundleSummary
from sealtrail._checkpoint_check import CheckpointCheck, CheckpointError, OtherLogError
from sealtrail._client import AuditClient
from sealtrail._convert import (
    BatchEntryResult,
    EventCount,
    EventCounts,
    EventFields,
    GroupBy,
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
    "EventCount",
    "EventCounts",
    "EventFields",
    "EventLoopError",
    "ExportError",
    "ExportFormat",
    "GroupBy",
    "InvalidArgumentError",
    "NotFoundError",
    "Order",
    "OtherLogError",
    "PermissionDeniedError",
    "RecordResult",
    "ResourceExhaustedError",
    "RpcFailedError",
    "SealtrailError",
    "SeqRange",
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
    "received_range",
    "request_id",
    "verify_bundle",
    "write_bundle",
]
