"""A gRPC status with details (google.rpc.Status), as the server sends one in
its trailers, for tests that answer the client's calls themselves."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2, message
from google.rpc import error_details_pb2, status_pb2


def status_of(code: grpc.StatusCode, text: str, *details: message.Message) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=text)
    for detail in details:
        status.details.add().Pack(detail)
    return status


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def status_trailers(status: status_pb2.Status) -> tuple[tuple[str, bytes], ...]:
    """The trailers that carry `status` (grpc-status-details-bin)."""
    return (("grpc-status-details-bin", status.SerializeToString()),)
