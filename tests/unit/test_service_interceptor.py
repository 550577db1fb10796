"""The service's interceptors wrap every method they are given, or refuse it."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from sealtrail_server.api.guard import GuardInterceptor
from sealtrail_server.auth.tokens import Authenticator


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def test_a_client_streaming_method_is_refused_rather_than_passed_unguarded() -> None:
    """Passed through, it would have run with no token checked and no tenant
    set (helper-67): none exists yet, and one added must be wrapped first."""

    async def lookup(digest: bytes) -> Any:
        return None

    guard = GuardInterceptor(Authenticator(lookup, cache_seconds=1))
    handler = grpc.stream_unary_rpc_method_handler(lambda requests, context: None)

    async def continuation(details: grpc.HandlerCallDetails) -> Any:
        return handler

    method = "/sealtrail.v1.AuditLogService/RecordStream"
    with pytest.raises(TypeError, match="RecordStream: client-streaming"):
        asyncio.run(guard.intercept_service(continuation, _Details(method)))
    # Other services' methods are not its to guard.
    other = asyncio.run(guard.intercept_service(continuation, _Details("/grpc.health.v1/X")))
    assert other is handler
