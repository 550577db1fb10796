"""grpc.health.v1, whose Watch streams end once the server stops.

gRPC's own servicer sends them NOT_SERVING and keeps them open: gRPC's
client-side health checking holds one on each connection, and each held the
stop for its whole grace, as StreamEvents once did (helper-140)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus
SERVING: Status = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Status = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: Status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """The status of each service set, "" (the server's) SERVING at first.
    Once `enter_graceful_shutdown` has run, every one is NOT_SERVING for good,
    and each Watch, told so, ends UNAVAILABLE, for its client to watch
    another server."""

    def __init__(self) -> None:
        self._status: dict[str, Status] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._stopping = False

    async def Check(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ],
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ],
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """Each change of the service's status (SERVICE_UNKNOWN while it has
        none), written outside the lock: a client that reads slowly holds up
        no `set`."""
        sent: Status | None = None
        while True:
            status, stopping = await self._next(request, sent)
            if status != sent:
                yield health_pb2.HealthCheckResponse(status=status)
                sent = status
            if stopping:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    async def set(self, service: str, status: Status) -> None:
        """The status `service` is watched and checked with; none once stopping."""
        async with self._changed:
            if not self._stopping:
                self._status[service] = status
                self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, for good; every Watch told, then ended."""
        async with self._changed:
            self._stopping = True
            self._status = dict.fromkeys(self._status, NOT_SERVING)
            self._changed.notify_all()

    async def _next(
        self, request: health_pb2.HealthCheckRequest, sent: Status | None
    ) -> tuple[Status, bool]:
        """The status once it is not `sent`, or the server stops; and whether it stops."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._now(request) != sent or self._stopping)
            return self._now(request), self._stopping

    def _now(self, request: health_pb2.HealthCheckRequest) -> Status:
        return self._status.get(request.service, SERVICE_UNKNOWN)
