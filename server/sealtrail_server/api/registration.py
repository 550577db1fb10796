"""The AuditLogService's registration on a gRPC server: the generated one,
except that Query, StreamEvents, Record and RecordBatch answer with their
responses already encoded (ADRs 0026 and 0043), and Record and RecordBatch take their
requests as received: they count them before parsing them, RecordBatch's an
entry at a time (helper-138).

Query's events are stored as their encoded views. Parsing a page of them into
a QueryResponse only to serialize it again cost more than reading the page
from PostgreSQL, so Query builds the response's bytes itself. A stream's
events are encoded once per process, whichever number of streams send them,
and each stream's responses are framed around those encodings. Record and
RecordBatch answer with the views the appender stored, framed likewise. These
methods are served with a serializer that sends the bytes as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from sealtrail.v1 import audit_service_pb2_grpc

from .servicer import AuditLogServicer

# The methods whose servicer returns the response's encoding, not a message.
_ENCODED_RESPONSES = ("Query", "StreamEvents", "Record", "RecordBatch")
# The methods whose servicer takes the request's encoding, not a message: it
# counts the request's size before parsing it (api/in_flight.py), RecordBatch's
# in parts, giving other calls their turn (helper-138).
_ENCODED_REQUESTS = ("Record", "RecordBatch")


def add_audit_log_service(servicer: AuditLogServicer, server: grpc.aio.Server) -> None:
    """Register `servicer` on `server` as the generated add_*_to_server does,
    with the methods in _ENCODED_RESPONSES sending the bytes they return and
    those in _ENCODED_REQUESTS given the bytes received."""
    generated = _GeneratedRegistration()
    audit_service_pb2_grpc.add_AuditLogServiceServicer_to_server(servicer, generated)  # type: ignore[arg-type]
    handlers = dict(generated.handlers)
    for method in _ENCODED_RESPONSES:
        # A namedtuple (grpc._utilities.RpcMethodHandler): everything else as generated.
        handlers[method] = handlers[method]._replace(  # type: ignore[attr-defined]
            response_serializer=_as_encoded
        )
    for method in _ENCODED_REQUESTS:
        handlers[method] = handlers[method]._replace(  # type: ignore[attr-defined]
            request_deserializer=_as_encoded
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(generated.service, handlers),)
    )
    # As the generated code does (grpcio >= 1.63; not in grpc-stubs yet).
    server.add_registered_method_handlers(generated.service, handlers)  # type: ignore[attr-defined]


def _as_encoded(message: bytes) -> bytes:
    return message


class _GeneratedRegistration:
    """Stands in for the server while the generated code registers the
    service, and keeps the method handlers it gives."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, generic_handlers: object) -> None:
        """Ignored: they are built again from the method handlers."""

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.service = service
        self.handlers = handlers
