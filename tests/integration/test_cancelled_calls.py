"""Calls cancelled at any moment (their client gone, their deadline past)
leave the server's own counts as they found them. The guard counts each
call from its headers; one cancelled before its handler ran (its request
still arriving, say) was never uncounted, and a stopping server, which ends
stuck streams once they are all the calls left, then never found them so."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import grpc

from sealtrail import AuditClient, build_event
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc
from tests.conftest import ServerThread
from tests.silent_proxy import SilentProxy

_ROUNDS = 20


def _calls(server: ServerThread) -> int:
    guard = server.service._guard
    assert guard is not None
    return guard.calls


def _settled_calls(server: ServerThread, timeout: float = 10) -> int:
    """The guard's count of calls once none is left, or what it is after `timeout`."""
    deadline = time.monotonic() + timeout
    while (calls := _calls(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return calls


def test_calls_cancelled_at_any_moment_are_no_longer_counted(
    migrated_database_url: str, tenant: str
) -> None:
    server = ServerThread(migrated_database_url)
    try:
        token = server.token(tenant)
        metadata = (("authorization", f"Bearer {token}"),)
        with AuditClient(server.target, token=token) as client:
            client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(500)])
        assert _settled_calls(server) == 0
        # A batch whose request is still arriving when its client gives up.
        with (
            contextlib.closing(
                SilentProxy(("127.0.0.1", server.port), upload_rate=200_000)
            ) as proxy,
            grpc.insecure_channel(proxy.target) as slow,
        ):
            batch = pb.RecordBatchRequest()
            for n in range(100):
                event = batch.events.add(action="doc.slow", description="y" * 10_000)
                event.actor.id = "u"
                event.idempotency_key = f"slow-{n}"
            upload = audit_service_pb2_grpc.AuditLogServiceStub(slow).RecordBatch.future(
                batch, metadata=metadata, timeout=60
            )  # about 1 MB, 5 s on its way
            deadline = time.monotonic() + 5
            while not _calls(server):  # its headers arrived
                assert time.monotonic() < deadline, "the batch's call never began"
                time.sleep(0.01)
            upload.cancel()
        assert _settled_calls(server) == 0

        async def cancelled_at_random() -> None:
            timing = random.Random(3)
            async with grpc.aio.insecure_channel(server.target) as channel:
                stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)

                async def call(kind: int) -> None:
                    if kind == 0:
                        async for _ in stub.Export(
                            pb.ExportRequest(format=pb.EXPORT_FORMAT_CSV), metadata=metadata
                        ):
                            pass
                    elif kind == 1:
                        async for _ in stub.StreamEvents(
                            pb.StreamEventsRequest(after_seq=0), metadata=metadata
                        ):
                            pass
                    elif kind == 2:
                        await stub.CountEvents(pb.CountEventsRequest(), metadata=metadata)
                    else:
                        await stub.Query(pb.QueryRequest(page_size=200), metadata=metadata)

                for _ in range(_ROUNDS):
                    calls = [asyncio.create_task(call(n % 4)) for n in range(8)]
                    await asyncio.sleep(timing.random() * 0.05)
                    for task in calls:
                        task.cancel()
                    await asyncio.gather(*calls, return_exceptions=True)

        asyncio.run(cancelled_at_random())
        assert _settled_calls(server) == 0
    finally:
        server.close()
