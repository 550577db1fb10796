"""How long a server-streaming call (StreamEvents, Export) holds its places:
the tenant's and the process's stream and export limits, pooled connections,
its hub subscription, its page and cursor. gRPC does not close a handler's
generator when its call is cancelled while gRPC itself waits (to send a
response its client has not taken): the generator was closed once it was
collected, in another task, a moment after its call had ended."""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from sealtrail import AuditClient, build_event
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc
from tests.conftest import ServerThread

_CALLS = 50  # of each, streams and exports
_AT_ONCE = 10


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector off: what a call holds must come back as
    its call ends, not whenever something collects its generator."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def _held(server: ServerThread) -> dict[str, int]:
    """On the server's loop: its calls, and the places they hold."""
    guard = server.service._guard
    assert guard is not None
    return {
        "calls": guard.calls,
        **server.service.resources(),
    }


def test_cancelled_streams_and_exports_give_their_places_back_as_they_end(
    migrated_database_url: str, tenant: str, no_collector: None
) -> None:
    server = ServerThread(
        migrated_database_url,
        export_max_per_tenant=_CALLS,
        export_max_per_process=_CALLS,
        export_rate_limit=10 * _CALLS,
    )
    try:
        token = server.token(tenant)
        metadata = (("authorization", f"Bearer {token}"),)
        with AuditClient(server.target, token=token) as client:
            # Some 3 MB of log: more than a call's flow-control window, so that
            # a client that stops reading leaves its handler waiting in gRPC.
            for _ in range(3):
                client.record_batch(
                    [
                        build_event(action="doc.edit", actor_id="u", description="x" * 1000)
                        for _ in range(1000)
                    ]
                )

        async def read() -> dict[str, int]:
            return _held(server)

        deadline = time.monotonic() + 20
        while (baseline := server.run(read()))["calls"] or baseline["subscribers"]:
            assert time.monotonic() < deadline, f"calls before the test still open: {baseline}"
            time.sleep(0.05)

        # What the calls held each time the guard stopped counting one: a
        # call's task ends after its handler, and each stream and export holds
        # one place, so the places held are never more than the calls counted.
        guard = server.service._guard
        assert guard is not None
        ended = guard._ended
        held_as_ended: list[tuple[int, int, int]] = []

        def ended_and_seen(call: asyncio.Task[Any]) -> None:
            ended(call)
            held = server.service.resources()
            held_as_ended.append((guard.calls, held["subscribers"], held["exports"]))

        guard._ended = ended_and_seen  # type: ignore[method-assign]

        async def cancelled_at_random_points() -> None:
            timing = random.Random(224)
            async with grpc.aio.insecure_channel(server.target) as channel:
                stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)

                async def call(n: int) -> None:
                    responses: Any
                    if n % 2:
                        responses = stub.Export(
                            pb.ExportRequest(format=pb.EXPORT_FORMAT_CSV), metadata=metadata
                        )
                    else:
                        start = {"after_seq": 0} if n % 4 else {}  # a replay, or live only
                        responses = stub.StreamEvents(
                            pb.StreamEventsRequest(**start), metadata=metadata
                        )
                    # Reads a few responses, then stops reading: cancelled while
                    # it reads, or while the server waits for it to read on.
                    try:
                        for _ in range(timing.randrange(4)):
                            await responses.read()
                        await asyncio.sleep(1.0)
                    finally:
                        responses.cancel()  # a task's cancel alone leaves its call open

                for _ in range(2 * _CALLS // _AT_ONCE):
                    calls = [asyncio.create_task(call(n)) for n in range(_AT_ONCE)]
                    await asyncio.sleep(0.2 + timing.random() * 0.5)
                    for task in calls:
                        task.cancel()
                    await asyncio.gather(*calls, return_exceptions=True)

        asyncio.run(cancelled_at_random_points())

        # Within a bounded time, every count is back where it was...
        deadline = time.monotonic() + 5
        while True:
            now = server.run(read())
            if (
                not now["calls"]
                and now["subscribers"] == baseline["subscribers"]
                and now["exports"] == baseline["exports"]
                and now["connections_in_use"] <= baseline["connections_in_use"]
                and now["tasks"] <= baseline["tasks"] + 3
            ):
                break
            assert time.monotonic() < deadline, f"still held: {now} (before: {baseline})"
            time.sleep(0.05)
        # ... and each call had given its place back as it ended.
        assert len(held_as_ended) >= 2 * _CALLS
        overheld = [
            (calls, streams, exports)
            for calls, streams, exports in held_as_ended
            if streams + exports > calls
        ]
        assert not overheld, "(calls, streams, exports) as a call ended"
    finally:
        server.close()
