"""The sync client's stream: where it resumes after a dropped connection,
against grpcio-testing's fake channel (the test plays the server)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc_testing
import pytest

from sealtrail import AsyncAuditClient, AuditClient, PermissionDeniedError, UnavailableError
from sealtrail._retry import RetryPolicy
from sealtrail.v1 import audit_service_pb2, event_pb2
from tests.scripted_service import scripted

SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
STREAM = SERVICE.methods_by_name["StreamEvents"]
Response = audit_service_pb2.StreamEventsResponse
REMOVED = audit_service_pb2.PurgedRange(after_seq=9, through_seq=12, count=2)


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
        rpc.send_response(Response(purged=REMOVED))  # 10-12 removed: past them
        rpc.send_response(unknown)
        # Ended (OK: what was sent before is read first), the stream reconnects,
        # past the range it was told of: not announced twice.
        rpc.terminate((), grpc.StatusCode.OK, "")
        _, resumed, rpc = channel.take_unary_stream(STREAM)
        assert resumed.after_seq == 12
        rpc.send_response(_events(13))
        assert following.result(timeout=10).seq == 13
        stream.close()
    assert heartbeats == [9] and ranges == [REMOVED]


def _client(channel: grpc_testing.Channel, sleeps: list[float]) -> AuditClient:
    return AuditClient(
        "unused", token="s3cret", channel=channel, max_attempts=3, max_backoff=2.0,
        sleep=sleeps.append, rng=random.Random(0),
    )  # fmt: skip


def test_a_stream_that_never_connects_gives_up_as_a_call_does(
    channel: grpc_testing.Channel,
) -> None:
    """A wrong address, a server that is not there: an error to report after
    max_attempts, not a wait without end."""
    sleeps: list[float] = []
    with _client(channel, sleeps) as client, ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(next, client.stream(after_seq=5))
        for _ in range(3):
            _, _, rpc = channel.take_unary_stream(STREAM)
            rpc.terminate((), grpc.StatusCode.UNAVAILABLE, "connection refused")
        with pytest.raises(UnavailableError):
            first.result(timeout=10)
    assert len(sleeps) == 2


def _connected(
    client: AuditClient, channel: grpc_testing.Channel, pool: ThreadPoolExecutor
) -> tuple[Iterator[event_pb2.Event], Future[event_pb2.Event], Any]:
    """A stream from `after_seq=5` whose call was answered with a heartbeat,
    read (a fake call drops what is unread when it ends): the stream, its
    first event to come, and the fake call."""
    beat = threading.Event()
    stream = client.stream(after_seq=5, on_heartbeat=lambda _: beat.set())
    first = pool.submit(next, stream)
    _, _, rpc = channel.take_unary_stream(STREAM)
    rpc.send_response(Response(heartbeat=audit_service_pb2.Heartbeat(cursor=5)))
    assert beat.wait(10)
    return stream, first, rpc


def test_a_stream_reconnects_past_the_attempts_a_call_is_given(
    channel: grpc_testing.Channel,
) -> None:
    """A call gives up after max_attempts; a stream that has connected runs
    until its caller stops it, so it keeps reconnecting from its cursor
    through a server's restart (here ten refusals against three attempts),
    max_backoff apart at most. An error not worth retrying still ends it."""
    sleeps: list[float] = []
    with _client(channel, sleeps) as client, ThreadPoolExecutor(max_workers=1) as pool:
        stream, first, rpc = _connected(client, channel, pool)
        rpc.terminate((), grpc.StatusCode.UNAVAILABLE, "stopping")  # connected, then lost
        for _ in range(10):
            _, request, rpc = channel.take_unary_stream(STREAM)
            assert request.after_seq == 5
            rpc.terminate((), grpc.StatusCode.UNAVAILABLE, "restarting")
        _, request, rpc = channel.take_unary_stream(STREAM)
        rpc.send_response(_events(6))
        assert first.result(timeout=10).seq == 6
        following = pool.submit(next, stream)
        rpc.terminate((), grpc.StatusCode.PERMISSION_DENIED, "revoked")
        with pytest.raises(PermissionDeniedError):
            following.result(timeout=10)
    assert len(sleeps) == 11 and max(sleeps) <= 2.0


def test_a_stream_the_server_ends_is_reconnected_after_a_backoff(
    channel: grpc_testing.Channel,
) -> None:
    """Sealtrail never ends a stream with OK, but a proxy or another server
    may: the stream reconnected at once, without a wait, as fast as the
    server ended it (thousands of calls a second, each recorded). An end is
    now a failure worth retrying: waited for and counted as one, so the
    waits grow while it makes no progress, and a stream that never received
    a message gives up after max_attempts as a call does (helper-137)."""
    sleeps: list[float] = []
    with _client(channel, sleeps) as client, ThreadPoolExecutor(max_workers=1) as pool:
        stream, first, rpc = _connected(client, channel, pool)
        for _ in range(6):  # connected, then ended again and again
            rpc.terminate((), grpc.StatusCode.OK, "")
            _, request, rpc = channel.take_unary_stream(STREAM)
            assert request.after_seq == 5
        rpc.send_response(_events(6))
        assert first.result(timeout=10).seq == 6
        stream.close()
        assert len(sleeps) == 6 and max(sleeps) <= 2.0
        never = pool.submit(next, client.stream(after_seq=5))
        for _ in range(3):
            _, _, rpc = channel.take_unary_stream(STREAM)
            rpc.terminate((), grpc.StatusCode.OK, "")
        with pytest.raises(UnavailableError, match="ended the stream"):
            never.result(timeout=10)
    assert len(sleeps) == 6 + 2


def test_a_backoff_never_overflows_however_many_attempts() -> None:
    error = UnavailableError("down", code=grpc.StatusCode.UNAVAILABLE)
    policy = RetryPolicy(max_backoff=5.0, rng=random.Random(0))
    assert 0 <= (policy.backoff(100_000, error, bounded=False) or -1) <= 5.0
    assert policy.backoff(100_000, error) is None  # a call's attempts are bounded


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
            yield _events(13).SerializeToString()

    async with (
        _scripted(stream_events) as target,
        AsyncAuditClient(target, token="s3cret") as client,
    ):
        heartbeats: list[int] = []
        ranges: list[audit_service_pb2.PurgedRange] = []
        stream = client.stream(after_seq=5, on_heartbeat=heartbeats.append, on_purged=ranges.append)
        assert [(await anext(stream)).seq for _ in range(2)] == [6, 13]
        await stream.aclose()
    # Past the range it was told of (10-12): a reconnect does not announce it again.
    assert [(r.after_seq, r.announce_purged) for r in requests] == [(5, True), (12, True)]
    assert heartbeats == [9]
    assert ranges == [REMOVED]


async def test_the_async_stream_reconnects_past_the_attempts_a_call_is_given() -> None:
    """The same with the async client: a scripted server connects, fails,
    refuses ten times (UNAVAILABLE) against three attempts, then sends an
    event."""
    requests: list[audit_service_pb2.StreamEventsRequest] = []

    async def stream_events(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        requests.append(audit_service_pb2.StreamEventsRequest.FromString(request))
        if len(requests) == 1:  # connected, then lost
            yield Response(heartbeat=audit_service_pb2.Heartbeat(cursor=5)).SerializeToString()
        if len(requests) <= 11:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        yield _events(6).SerializeToString()

    sleeps = await _first_event_after_retries(stream_events)
    assert [r.after_seq for r in requests] == [5] * 12
    assert len(sleeps) == 11 and max(sleeps) <= 2.0


async def test_an_async_stream_the_server_ends_is_reconnected_after_a_backoff() -> None:
    """The same with the async client: a scripted server sends a heartbeat
    and ends the stream (OK), ends the next five at once, then sends an
    event; each end is waited after."""
    requests: list[audit_service_pb2.StreamEventsRequest] = []

    async def stream_events(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        requests.append(audit_service_pb2.StreamEventsRequest.FromString(request))
        if len(requests) == 1:
            yield Response(heartbeat=audit_service_pb2.Heartbeat(cursor=5)).SerializeToString()
        if len(requests) >= 7:
            yield _events(6).SerializeToString()

    sleeps = await _first_event_after_retries(stream_events)
    assert [r.after_seq for r in requests] == [5] * 7
    assert len(sleeps) == 6 and max(sleeps) <= 2.0


async def _first_event_after_retries(
    stream_events: Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], AsyncIterator[bytes]],
) -> list[float]:
    """Streams from `after_seq=5` with an async client of the scripted
    server (3 attempts a call, backoff at most 2 s) until its first event,
    seq 6; the waits it took between attempts."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with (
        _scripted(stream_events) as target,
        AsyncAuditClient(
            target, token="s3cret", max_attempts=3, max_backoff=2.0, sleep=sleep
        ) as client,
    ):
        stream = client.stream(after_seq=5)
        assert (await anext(stream)).seq == 6
        await stream.aclose()
    return sleeps


@contextlib.asynccontextmanager
async def _scripted(
    stream_events: Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], AsyncIterator[bytes]],
) -> AsyncIterator[str]:
    """A grpc.aio server on 127.0.0.1 whose StreamEvents is `stream_events`
    (raw bytes in and out); its target."""
    handler = grpc.unary_stream_rpc_method_handler(stream_events)
    async with scripted({"StreamEvents": handler}) as target:
        yield target


def test_a_stream_asked_to_start_after_a_seq_and_at_a_time_is_refused() -> None:
    """It started after the seq and ignored `since` without a word; the
    command line refuses the two (helper-197's suspicion). No server: the
    refusal comes at the call, not at the first event read (a generator's
    check ran then: a stream made at start-up and read later failed far
    from its mistake, or never if never read)."""
    since = datetime(2026, 1, 1, tzinfo=UTC)
    with (
        AuditClient("127.0.0.1:9", token="t", max_attempts=1) as client,
        pytest.raises(ValueError, match="after_seq or since, not both"),
    ):
        client.stream(after_seq=5, since=since)


async def test_an_async_stream_asked_to_start_after_a_seq_and_at_a_time_is_refused() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    async with AsyncAuditClient("127.0.0.1:9", token="t", max_attempts=1) as client:
        with pytest.raises(ValueError, match="after_seq or since, not both"):
            client.stream(after_seq=5, since=since)


def test_a_pager_or_an_export_with_an_order_or_format_it_has_none_of_is_refused_at_the_call() -> (
    None
):
    """query(order="oldest-first") and export_stream(format="xml") were
    refused at their first item, as generators' checks run: a pager made in
    one place and read in another failed there. No server: refused first."""
    with AuditClient("127.0.0.1:9", token="t", max_attempts=1) as client:
        with pytest.raises(ValueError, match="order: expected 'newest' or 'oldest'"):
            client.query(order="oldest-first")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="format: expected 'csv', 'ndjson' or 'json'"):
            client.export_stream(format="xml")  # type: ignore[arg-type]


async def test_an_async_pager_or_export_with_an_order_or_format_it_has_none_of_is_refused() -> None:
    async with AsyncAuditClient("127.0.0.1:9", token="t", max_attempts=1) as client:
        with pytest.raises(ValueError, match="order: expected 'newest' or 'oldest'"):
            client.query(order="oldest-first")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="format: expected 'csv', 'ndjson' or 'json'"):
            client.export_stream(format="xml")  # type: ignore[arg-type]


def test_a_query_with_a_negative_limit_is_refused_not_answered_empty() -> None:
    """query(limit=-1), perhaps meant as "no limit", yielded nothing at all,
    as if nothing matched, without a call. No server: refused at the call."""
    with AuditClient("127.0.0.1:9", token="t", max_attempts=1) as client:
        with pytest.raises(ValueError, match=r"limit: must be 0 or more \(None: every match"):
            client.query(limit=-1)
        assert list(client.query(limit=0)) == []  # no call: nothing asked for


async def test_an_async_query_with_a_negative_limit_is_refused() -> None:
    async with AsyncAuditClient("127.0.0.1:9", token="t", max_attempts=1) as client:
        with pytest.raises(ValueError, match=r"limit: must be 0 or more \(None: every match"):
            client.query(limit=-1)
        assert [event async for event in client.query(limit=0)] == []


# Arguments the server refuses, INVALID_ARGUMENT on the field named, each as
# the call that takes them, and the start of the client's own refusal.
_REFUSED_SEQS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "stream(after_seq=-1)": (
        lambda client: client.stream(after_seq=-1),
        r"^after_seq: must be 0 or more",
    ),
    "query(page_size=-5)": (
        lambda client: client.query(page_size=-5),
        r"^page_size: must be 0 or more",
    ),
    "query_page(page_size=-5)": (
        lambda client: client.query_page(page_size=-5),
        r"^page_size: must be 0 or more",
    ),
    "export_stream(first_seq=5, last_seq=2)": (
        lambda client: client.export_stream(first_seq=5, last_seq=2),
        r"^first_seq: must not be greater than last_seq \(2\), not 5$",
    ),
    "export_stream(first_seq=5)": (
        lambda client: client.export_stream(first_seq=5),
        r"^last_seq: must be given with first_seq",
    ),
    "export_stream(last_seq=5)": (
        lambda client: client.export_stream(last_seq=5),
        r"^first_seq: must be 1 or more with last_seq, not 0$",
    ),
    "export_stream(first_seq=-1, last_seq=5)": (
        lambda client: client.export_stream(first_seq=-1, last_seq=5),
        r"^first_seq: must be 1 or more with last_seq, not -1$",
    ),
    "export_stream(first_seq=5, last_seq=-3)": (
        lambda client: client.export_stream(first_seq=5, last_seq=-3),
        r"^last_seq: must be 0 or more",
    ),
    "list_purged_leaves(tree_size=-1)": (
        lambda client: client.list_purged_leaves(tree_size=-1),
        r"^tree_size: must be 0 or more",
    ),
    "list_purged_leaves(after_seq=-1)": (
        lambda client: client.list_purged_leaves(after_seq=-1),
        r"^after_seq: must be 0 or more",
    ),
    "stream(after_seq=2**53)": (
        lambda client: client.stream(after_seq=2**53),
        r"^after_seq: must be at most 9007199254740991 \(the largest seq\), not 9007199254740992$",
    ),
    "count_events(limit=-5)": (
        lambda client: client.count_events(limit=-5),
        r"^limit: must be 0 or more \(0: 50 groups\), not -5$",
    ),
    "get_checkpoint(tree_size=-1)": (
        lambda client: client.get_checkpoint(tree_size=-1),
        r"^tree_size: must be 0 or more \(0: the latest checkpoint\), not -1$",
    ),
    "get_inclusion_proof(seq=-3)": (
        lambda client: client.get_inclusion_proof(seq=-3),
        r"^seq: must be 1 to 9007199254740991, not -3$",
    ),
    "get_inclusion_proof(seq=2**53)": (
        lambda client: client.get_inclusion_proof(seq=2**53),
        r"^seq: must be 1 to 9007199254740991, not 9007199254740992$",
    ),
    "get_inclusion_proof(seq=1, tree_size=-1)": (
        lambda client: client.get_inclusion_proof(seq=1, tree_size=-1),
        r"^tree_size: must be 0 or more \(0: the latest checkpoint\), not -1$",
    ),
    "get_inclusion_proof(event_id=..., tree_size=-1)": (
        lambda client: client.get_inclusion_proof(
            event_id="0190f1c2-0000-7000-8000-000000000001", tree_size=-1
        ),
        r"^tree_size: must be 0 or more",
    ),
    "get_inclusion_proof(seq=10, tree_size=5)": (
        lambda client: client.get_inclusion_proof(seq=10, tree_size=5),
        r"^tree_size: must be at least the event's seq \(10\), not 5$",
    ),
    "get_consistency_proof(old_size=0)": (
        lambda client: client.get_consistency_proof(old_size=0),
        r"^old_size: must be 1 or more, not 0$",
    ),
    "get_consistency_proof(old_size=-2, new_size=5)": (
        lambda client: client.get_consistency_proof(old_size=-2, new_size=5),
        r"^old_size: must be 1 or more, not -2$",
    ),
    "get_consistency_proof(old_size=3, new_size=-1)": (
        lambda client: client.get_consistency_proof(old_size=3, new_size=-1),
        r"^new_size: must be 0 or more \(0: the latest checkpoint\), not -1$",
    ),
    "get_consistency_proof(old_size=7, new_size=5)": (
        lambda client: client.get_consistency_proof(old_size=7, new_size=5),
        r"^new_size: must not be smaller than old_size \(7\), not 5$",
    ),
    # Past what an int64 carries, where the server refuses any (no log is so
    # large): protobuf raised a bare "Value out of range", naming nothing.
    "get_checkpoint(tree_size=2**63)": (
        lambda client: client.get_checkpoint(tree_size=2**63),
        rf"^tree_size: must be at most {2**63 - 1} \(the largest the request carries\),"
        rf" not {2**63}$",
    ),
    "get_inclusion_proof(seq=5, tree_size=2**63)": (
        lambda client: client.get_inclusion_proof(seq=5, tree_size=2**63),
        r"^tree_size: must be at most 9223372036854775807 ",
    ),
    "get_consistency_proof(old_size=2**63)": (
        lambda client: client.get_consistency_proof(old_size=2**63),
        r"^old_size: must be at most 9223372036854775807 ",
    ),
    "get_consistency_proof(old_size=3, new_size=2**64)": (
        lambda client: client.get_consistency_proof(old_size=3, new_size=2**64),
        rf"^new_size: must be at most 9223372036854775807 .*, not {2**64}$",
    ),
    "list_purged_leaves(tree_size=2**63)": (
        lambda client: client.list_purged_leaves(tree_size=2**63),
        r"^tree_size: must be at most 9223372036854775807 ",
    ),
    "export_stream(first_seq=1, last_seq=2**63)": (
        lambda client: client.export_stream(first_seq=1, last_seq=2**63),
        r"^last_seq: must be at most 9223372036854775807 ",
    ),
    "export_stream(first_seq=2**63, last_seq=2**64)": (
        lambda client: client.export_stream(first_seq=2**63, last_seq=2**64),
        r"^last_seq: must be at most 9223372036854775807 ",
    ),
    "replay_sink(seq_range=(2**63, 2**63))": (
        lambda client: client.replay_sink("s", seq_range=(2**63, 2**63)),
        r"^seq_range\[0\]: must be at most 9223372036854775807 ",
    ),
    "replay_sink(seq_range=(0, 5))": (
        lambda client: client.replay_sink("s", seq_range=(0, 5)),
        r"^seq_range\[0\]: must be 1 or more, not 0$",
    ),
    "replay_sink(seq_range=(5, 2))": (
        lambda client: client.replay_sink("s", seq_range=(5, 2)),
        r"^seq_range\[1\]: must be at least seq_range\[0\] \(5\), not 2$",
    ),
}


@pytest.mark.parametrize("call", list(_REFUSED_SEQS))
async def test_a_seq_or_page_size_the_server_refuses_is_refused_at_the_call(call: str) -> None:
    """stream(after_seq=-1), query(page_size=-5), export_stream with its
    first seq after its last and list_purged_leaves(tree_size=-1) were sent
    as they were: the server refused them (a stream's at its first event),
    where the clients refuse their other bad arguments themselves, at the
    call, naming them. Both clients refuse these so too, each as the server
    would (the same field named), with a ValueError. No server: refused first."""
    make, says = _REFUSED_SEQS[call]
    with (
        AuditClient("127.0.0.1:9", token="t", max_attempts=1) as client,
        pytest.raises(ValueError, match=says),
    ):
        make(client)
    async with AsyncAuditClient("127.0.0.1:9", token="t", max_attempts=1) as aclient:
        with pytest.raises(ValueError, match=says):
            refused = make(aclient)
            if asyncio.iscoroutine(refused):  # query_page: refused as it is awaited
                await refused


def test_seqs_and_page_sizes_the_server_takes_are_not_refused() -> None:
    """0 is the server's default (a page's size, the whole log, the log now),
    and a range of one seq is a range: none of them refused."""
    with AuditClient("127.0.0.1:9", token="t", max_attempts=1) as client:
        client.stream(after_seq=0).close()
        client.query(page_size=0)
        client.export_stream(first_seq=3, last_seq=3).close()
        client.export_stream().close()
        client.list_purged_leaves(tree_size=0, after_seq=0)


@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.count_events(limit=0),
        lambda client: client.count_events(limit=5000),  # lowered to 1,000 by the server
        lambda client: client.get_checkpoint(tree_size=0),
        lambda client: client.get_checkpoint(tree_size=2**60),  # none signed: NOT_FOUND
        lambda client: client.get_inclusion_proof(seq=9007199254740991),
        lambda client: client.get_inclusion_proof(seq=5, tree_size=5),
        lambda client: client.get_inclusion_proof(seq=5, tree_size=0),
        lambda client: client.get_consistency_proof(old_size=7, new_size=7),
        lambda client: client.get_consistency_proof(old_size=7),  # to the latest
        lambda client: client.replay_sink("s", seq_range=(3, 3)),
        lambda client: client.stream(after_seq=9007199254740991),
        # Past what the field carries (int32): the server lowers any size past
        # its maximum, and so is sent the largest the field carries.
        lambda client: client.count_events(limit=2**31),
        lambda client: client.query_page(page_size=2**31),
    ],
)
async def test_sizes_and_seqs_the_server_takes_are_sent(call: Callable[[Any], Any]) -> None:
    """What the server takes (0 for the latest or the default, a size equal
    to the seq, old_size equal to new_size, a range of one seq, the largest
    seq, a page size past the largest the server gives) is not refused:
    sent, it fails only for want of a server."""
    with AuditClient("127.0.0.1:9", token="t", max_attempts=1) as client:
        try:
            answer = call(client)
        except UnavailableError:
            pass
        else:
            answer.close()  # a stream: not read
    async with AsyncAuditClient("127.0.0.1:9", token="t", max_attempts=1) as aclient:
        answer = call(aclient)
        if asyncio.iscoroutine(answer):
            with pytest.raises(UnavailableError):
                await answer
        else:
            await answer.aclose()


def test_a_page_size_past_what_its_field_carries_is_sent_as_the_largest_it_carries() -> None:
    """page_size and a count's limit are int32s, which the server lowers to
    its maximum past it: protobuf refused 2**31 with "Value out of range",
    naming nothing."""
    from sealtrail._convert import count_request, query_request

    assert query_request(None, "newest", 2**31, "").page_size == 2**31 - 1
    assert query_request(None, "newest", 10**30, "").page_size == 2**31 - 1
    assert query_request(None, "newest", 2**31 - 1, "").page_size == 2**31 - 1
    assert count_request(None, "", 2**40).limit == 2**31 - 1
    assert count_request(None, "", 1000).limit == 1000


@pytest.mark.parametrize("after_seq", [2**63, 10**30])
async def test_purged_leaves_after_a_seq_past_what_its_field_carries_are_asked_for(
    after_seq: int,
) -> None:
    """The server answers no leaf after any seq past the log, 2**63 - 1 too:
    one past what the field carries (int64) is sent as that, not refused by
    protobuf with a bare "Value out of range" as the leaves are first read;
    so is a replay's last seq, which the server lowers to the sink's cursor."""
    from sealtrail._convert import replay_request

    with (
        AuditClient("127.0.0.1:9", token="t", max_attempts=1) as client,
        pytest.raises(UnavailableError),
    ):
        list(client.list_purged_leaves(after_seq=after_seq))
    async with AsyncAuditClient("127.0.0.1:9", token="t", max_attempts=1) as aclient:
        with pytest.raises(UnavailableError):
            [leaf async for leaf in aclient.list_purged_leaves(after_seq=after_seq)]
    replay = replay_request("s", seq_range=(3, after_seq))
    assert (replay.seq_range.first_seq, replay.seq_range.last_seq) == (3, 2**63 - 1)
