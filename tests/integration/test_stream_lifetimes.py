"""How long a server-streaming call (StreamEvents, Export) holds its places:
the tenant's and the process's stream and export limits, pooled connections,
its hub subscription, its page and cursor. gRPC does not close a handler's
generator when its call is cancelled while gRPC itself waits (to send a
response its client has not taken): the generator was closed once it was
collected, in another task, a moment after its call had ended. And how long
a live stream whose client stopped reading holds what it was sending (ADR 0076)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import grpc
import pytest

from sealtrail import AuditClient, build_event
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc
from tests.conftest import ServerThread

_CALLS = 50  # of each, streams and exports
_AT_ONCE = 10


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


def _subscribers(server: ServerThread) -> int:
    hub = server.service._hub
    assert hub is not None
    return hub.subscriber_count()


def test_a_live_stream_whose_client_takes_nothing_while_the_log_grows_is_ended_to_resume(
    migrated_database_url: str, tenant: str
) -> None:
    """A stream whose client stopped reading (a paused `sealtrail tail | less`)
    kept what it was sending, and a busy log's deliveries queued behind it,
    for as long as the pause lasted: with large events some 40 MB of parsed
    records a stream, for hours. Once its client has taken nothing for a
    heartbeat's time while the log grew by more than SEALTRAIL_STREAM_STALL_BYTES,
    it is ended, UNAVAILABLE (STREAM_STALLED), after what it had been sent:
    the client resumes from its cursor as it reads on, missing nothing."""
    server = ServerThread(
        migrated_database_url, stream_heartbeat_seconds=0.5, stream_stall_bytes=1 << 20
    )
    try:
        with (
            AuditClient(server.target, token=server.token(tenant, "reader")) as reader,
            AuditClient(server.target, token=server.token(tenant)) as writer,
        ):
            stub = audit_service_pb2_grpc.AuditLogServiceStub(reader._channel)
            paused = stub.StreamEvents(
                pb.StreamEventsRequest(max_events_per_message=500), metadata=reader._metadata
            )
            start = next(paused).heartbeat.cursor  # following live; not read again for now
            # And a tail of the client's own, paused after its first event.
            tail = reader.stream(after_seq=start)
            first = writer.record(action="doc.first", actor_id="u").event.seq
            assert next(tail).seq == first
            written = first
            deadline = time.monotonic() + 60
            # Until the transport's buffers are full and the log grew past the bound.
            while _subscribers(server):
                assert time.monotonic() < deadline, "the paused streams were never ended"
                results = writer.record_batch(
                    [
                        build_event(action="doc.edit", actor_id="u", description="x" * 4000)
                        for _ in range(500)
                    ]
                )
                written = results[-1].event.seq
                time.sleep(0.1)
            # Read on: what it had been sent, in order, then the end to resume from.
            seqs: list[int] = []
            with pytest.raises(grpc.RpcError) as ended:
                for message in paused:
                    seqs += [event.seq for event in message.events.events]
            assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "STREAM_STALLED" in str(ended.value.trailing_metadata())
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
            assert set(seqs) <= set(range(start + 1, written + 1))
            # The paused tail, read on, resumes by itself: every event, once.
            # (Its own audit_log.streamed, recorded as it connected after `first`,
            # is no event it is sent; its reconnect's comes after `written`.)
            rest = [next(tail).seq for _ in range(written - first - 1)]
            assert rest == list(range(first + 2, written + 1))
            tail.close()
    finally:
        server.close()
