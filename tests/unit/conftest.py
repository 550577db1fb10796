"""Fixtures of the unit tests that play the server to the sync client over
grpcio-testing's fake channel: the channel, and the client's sleeps (what it
would have waited, recorded instead of slept)."""

from __future__ import annotations

import grpc_testing
import pytest

from sealtrail.v1 import audit_service_pb2


@pytest.fixture
def channel() -> grpc_testing.Channel:
    """A fake channel serving AuditLogService: the test takes each call from it."""
    service = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
    return grpc_testing.channel([service], grpc_testing.strict_real_time())


@pytest.fixture
def sleeps() -> list[float]:
    return []
