"""The sync client's stream: where it resumes after a dropped connection,
against grpcio-testing's fake channel (the test plays the server)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import grpc_testing
import pytest

from sealtrail import AsyncAuditClient, AuditClient
from sealtrail.v1 import audit_service_pb2, event_pb2

SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
STREAM = SERVICE.methods_by_name["StreamEvents"]
Response = audit_service_pb2.StreamEventsResponse
REMOVED = audit_service_pb2.PurgedRange(after_seq=9, through_seq=12, count=2)


@pytest.fixture
def channel() -> grpc_testing.Channel:
    return grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())


@pytest.fixture
def client(channel: grpc_testing.Channel) -> Iterator[AuditClient]:
    with AuditClient(
        "unused", token="s3cret", channel=channel, sleep=lambda _: None, rng=random.Random(0)
    ) as client:
        yield client


def _events(*seqs: int) -> Response:
    return Response(
        events=audit_service_pb2.EventBatch(events=[event_pb2.Event(seq=s) for s in seqs])
    )


def test_a_message_of_a_newer_server_moves_no_cursor(
    client: AuditClient, channel: grpc_testing.Channel
) -> None:
    """A payload this client does not know (a newer server's: field 15 here)
    is passed over: the stream resumes after the last cursor it was given,
    not from the start of the log, and it is no heartbeat."""
    unknown = Response.FromString(b"\x7a\x00")  # field 15, length-delimited, empty
    assert unknown.WhichOneof("payload") is None
    heartbeats: list[int] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        ranges: list[audit_service_pb2.PurgedRange] = []
        stream = client.stream(after_seq=5, on_heartbeat=heartbeats.append, on_purged=ranges.append)
        first = pool.submit(next, stream)
        _, request, rpc = channel.take_unary_stream(STREAM)
        assert request.after_seq == 5 and request.announce_purged
        rpc.send_response(_events(6, 7))
        assert first.result(timeout=10).seq == 6
        assert next(stream).seq == 7
        following = pool.submit(next, stream)
        rpc.send_response(Response(heartbeat=audit_service_pb2.Heartbeat(cursor=9)))
        rpc.send_response(Response(purged=REMOVED))  # moves no cursor
        rpc.send_response(unknown)
        # Ended (OK: what was sent before is read first), the stream reconnects.
        rpc.terminate((), grpc.StatusCode.OK, "")
        _, resumed, rpc = channel.take_unary_stream(STREAM)
        assert resumed.after_seq == 9
        rpc.send_response(_events(10))
        assert following.result(timeout=10).seq == 10
        stream.close()
    assert heartbeats == [9] and ranges == [REMOVED]


async def test_the_async_stream_passes_a_message_of_a_newer_server_over() -> None:
    """The same with the async client, against a scripted server: a first
    stream sends events, a heartbeat and a message of a newer server, then
    ends; the second answers the request it was sent."""
    requests: list[audit_service_pb2.StreamEventsRequest] = []

    async def stream_events(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        requests.append(audit_service_pb2.StreamEventsRequest.FromString(request))
        if len(requests) == 1:
            yield _events(6).SerializeToString()
            yield Response(heartbeat=audit_service_pb2.Heartbeat(cursor=9)).SerializeToString()
            yield Response(purged=REMOVED).SerializeToString()
            yield b"\x7a\x00"  # field 15: a message of a newer server
        else:
            yield _events(10).SerializeToString()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE.full_name,
                {"StreamEvents": grpc.unary_stream_rpc_method_handler(stream_events)},
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AsyncAuditClient(f"127.0.0.1:{port}", token="s3cret") as client:
            heartbeats: list[int] = []
            ranges: list[audit_service_pb2.PurgedRange] = []
            stream = client.stream(
                after_seq=5, on_heartbeat=heartbeats.append, on_purged=ranges.append
            )
            assert [(await anext(stream)).seq for _ in range(2)] == [6, 10]
            await stream.aclose()
    finally:
        await server.stop(None)
    assert [(r.after_seq, r.announce_purged) for r in requests] == [(5, True), (9, True)]
    assert heartbeats == [9]
    assert ranges == [REMOVED]  # a range moves no cursor
