"""Python client and CLI of Sealtrail, the append-only, tamper-evident audit log service."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what a type checker and an IDE see; imported when first used
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
        Measure,
        Order,
        RecordResult,
        build_alert_rule,
        build_event,
        build_filter,
        build_sink,
        credential_of_key,
        message_to_dict,
        resource_key,
        resource_of_key,
    )
    from sealtrail._correlation import (
        CorrelationInterceptor,
        aio_correlation_interceptors,
        current_request_id,
        on_behalf_of,
        request_id,
    )
    from sealtrail._erasure_check import (
        ErasureReceiptCheck,
        ErasureReceiptError,
        NewerReceiptError,
        ReceiptKeyError,
        ReceiptMismatchError,
        ReceiptSignatureError,
        UnsignedReceiptError,
        verify_erasure_receipt,
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
    from sealtrail._export import EXCEL_CELL_LIMIT, ExportError, ExportFormat, cells_past_excel
    from sealtrail._export_check import (
        ExportCheck,
        ExportMismatchError,
        RowNotOfItsLeafError,
        check_export,
    )
    from sealtrail._report import (
        ActivityReport,
        ReportedCheckpoint,
        ReportedCredential,
        ReportedEvent,
        TopGroups,
    )

__all__ = [
    "EXCEL_CELL_LIMIT",
    "AbortedError",
    "ActivityReport",
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
    "ErasureReceiptCheck",
    "ErasureReceiptError",
    "EventCount",
    "EventCounts",
    "EventFields",
    "EventLoopError",
    "ExportCheck",
    "ExportError",
    "ExportFormat",
    "ExportMismatchError",
    "GroupBy",
    "InvalidArgumentError",
    "Measure",
    "NewerReceiptError",
    "NotFoundError",
    "Order",
    "OtherLogError",
    "PermissionDeniedError",
    "ReceiptKeyError",
    "ReceiptMismatchError",
    "ReceiptSignatureError",
    "RecordResult",
    "ReportedCheckpoint",
    "ReportedCredential",
    "ReportedEvent",
    "ResourceExhaustedError",
    "RowNotOfItsLeafError",
    "RpcFailedError",
    "SealtrailError",
    "SeqRange",
    "TopGroups",
    "UnauthenticatedError",
    "UnavailableError",
    "UnsignedReceiptError",
    "aio_correlation_interceptors",
    "build_alert_rule",
    "build_event",
    "build_filter",
    "build_sink",
    "cells_past_excel",
    "check_export",
    "credential_of_key",
    "current_request_id",
    "from_rpc_error",
    "message_to_dict",
    "on_behalf_of",
    "received_range",
    "request_id",
    "resource_key",
    "resource_of_key",
    "verify_bundle",
    "verify_erasure_receipt",
    "write_bundle",
]

# Where each public name is defined: imported on first use (PEP 562), so that
# `import sealtrail._terminal` (the command line's cheap modules) does not
# import the whole client, gRPC and protobuf with it.
_HOMES: dict[str, str] = {
    "EXCEL_CELL_LIMIT": "sealtrail._export",
    "AbortedError": "sealtrail._errors",
    "ActivityReport": "sealtrail._report",
    "AlreadyExistsError": "sealtrail._errors",
    "AsyncAuditClient": "sealtrail._async_client",
    "AuditClient": "sealtrail._client",
    "BatchEntryResult": "sealtrail._convert",
    "BundleError": "sealtrail._bundle_format",
    "BundleSummary": "sealtrail._bundle_format",
    "CheckpointCheck": "sealtrail._checkpoint_check",
    "CheckpointError": "sealtrail._checkpoint_check",
    "ClientClosedError": "sealtrail._errors",
    "CorrelationInterceptor": "sealtrail._correlation",
    "ErasureReceiptCheck": "sealtrail._erasure_check",
    "ErasureReceiptError": "sealtrail._erasure_check",
    "EventCount": "sealtrail._convert",
    "EventCounts": "sealtrail._convert",
    "EventFields": "sealtrail._convert",
    "EventLoopError": "sealtrail._errors",
    "ExportCheck": "sealtrail._export_check",
    "ExportError": "sealtrail._export",
    "ExportFormat": "sealtrail._export",
    "ExportMismatchError": "sealtrail._export_check",
    "GroupBy": "sealtrail._convert",
    "InvalidArgumentError": "sealtrail._errors",
    "Measure": "sealtrail._convert",
    "NewerReceiptError": "sealtrail._erasure_check",
    "NotFoundError": "sealtrail._errors",
    "Order": "sealtrail._convert",
    "OtherLogError": "sealtrail._checkpoint_check",
    "PermissionDeniedError": "sealtrail._errors",
    "ReceiptKeyError": "sealtrail._erasure_check",
    "ReceiptMismatchError": "sealtrail._erasure_check",
    "ReceiptSignatureError": "sealtrail._erasure_check",
    "RecordResult": "sealtrail._convert",
    "ReportedCheckpoint": "sealtrail._report",
    "ReportedCredential": "sealtrail._report",
    "ReportedEvent": "sealtrail._report",
    "ResourceExhaustedError": "sealtrail._errors",
    "RowNotOfItsLeafError": "sealtrail._export_check",
    "RpcFailedError": "sealtrail._errors",
    "SealtrailError": "sealtrail._errors",
    "SeqRange": "sealtrail._bundle",
    "TopGroups": "sealtrail._report",
    "UnauthenticatedError": "sealtrail._errors",
    "UnavailableError": "sealtrail._errors",
    "UnsignedReceiptError": "sealtrail._erasure_check",
    "aio_correlation_interceptors": "sealtrail._correlation",
    "build_alert_rule": "sealtrail._convert",
    "build_event": "sealtrail._convert",
    "build_filter": "sealtrail._convert",
    "build_sink": "sealtrail._convert",
    "cells_past_excel": "sealtrail._export",
    "check_export": "sealtrail._export_check",
    "credential_of_key": "sealtrail._convert",
    "current_request_id": "sealtrail._correlation",
    "from_rpc_error": "sealtrail._errors",
    "message_to_dict": "sealtrail._convert",
    "on_behalf_of": "sealtrail._correlation",
    "received_range": "sealtrail._bundle",
    "request_id": "sealtrail._correlation",
    "resource_key": "sealtrail._convert",
    "resource_of_key": "sealtrail._convert",
    "verify_bundle": "sealtrail._bundle_check",
    "verify_erasure_receipt": "sealtrail._erasure_check",
    "write_bundle": "sealtrail._bundle",
}


# Hidden from type checkers, which would take any name (`from sealtrail import
# Typo`) as one of its answers: they see the imports above.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value  # looked up here directly from now on
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
