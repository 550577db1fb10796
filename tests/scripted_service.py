"""A grpc.aio server on 127.0.0.1 answering the AuditLogService's methods
with scripted handlers (raw bytes in and out): for the clients' own
behaviour against a real server that fails, resets or answers as a test
says, where a grpc_testing channel cannot (the async client)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from sealtrail.v1 import audit_service_pb2

SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]


@contextlib.asynccontextmanager
async def scripted(handlers: dict[str, grpc.RpcMethodHandler]) -> AsyncIterator[str]:
    """A server whose methods named in `handlers` are theirs (the others
    UNIMPLEMENTED), started on a port of its own; its target."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
