"""RecordBatch calls of many or large events, within every documented limit:
the server keeps serving its other calls while it handles one (helper-138)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import event_pb2
from sealtrail_server import app

from ..conftest import ServerThread
from ..lock_waits import until_blocked

SERVICE = "/sealtrail.v1.AuditLogService/"


def many_keys_event(n: int, keys: int) -> event_pb2.Event:
    """An event of `keys` small details: the costliest shape to validate."""
    event = event_pb2.Event(action="doc.updated", idempotency_key=f"k{n}")
    event.actor.id = "u"
    for j in range(keys):
        event.details.fields[f"k{j}"].string_value = f"v{j}"
    return event


def encoded_batch(events: int, keys: int, first: int = 0) -> bytes:
    """The encoding of a RecordBatchRequest of `events` events of `keys`
    details each, their idempotency keys numbered from `first`."""
    return pb.RecordBatchRequest(
        events=[many_keys_event(n, keys) for n in range(first, first + events)]
    ).SerializeToString()


class LoopWatch:
    """Measures, in the server's event loop, the most CPU time its thread
    spent between two turns of a waiting task, while the `with` block runs:
    how long one piece of work held the loop.

    CPU time of the loop's thread, not the clock's: on a shared machine the
    clock also counts the slices the thread waited for a core or for the
    GIL (a few ms each, and tens of ms beside busy processes), which a long
    batch meets more often than a short one, whatever the code does. A batch
    handled without a turn is CPU time of the loop's thread all the same
    (seconds for 300 events), so it is still seen. `wall` keeps the clock's
    longest gap, for the message."""

    def __init__(self, server: ServerThread) -> None:
        self._server = server
        self.longest = 0.0
        self.wall = 0.0
        self._stop = False

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        last, last_cpu = loop.time(), time.thread_time()  # the loop's thread
        while not self._stop:
            await asyncio.sleep(0.001)
            now, now_cpu = loop.time(), time.thread_time()
            self.longest = max(self.longest, now_cpu - last_cpu)
            self.wall = max(self.wall, now - last - 0.001)
            last, last_cpu = now, now_cpu

    def __enter__(self) -> LoopWatch:
        # A full collection's pause grows with the process's heap, whatever
        # runs: the test's own objects (and the server's) are kept out of it.
        gc.collect()
        gc.freeze()
        self._task = asyncio.run_coroutine_threadsafe(self._watch(), self._server.loop)
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._task.result(10)
        gc.unfreeze()

    def __repr__(self) -> str:
        return f"LoopWatch(longest={self.longest:.4f} s of CPU, wall={self.wall:.4f} s)"


def send(server: ServerThread, tenant: str, request: bytes, method: str = "RecordBatch") -> bytes:
    """RecordBatch (or `method`) with `request` as it is, and its answer as
    received: the test parses and serializes nothing meanwhile (its thread
    would take the server's turn)."""
    options = [("grpc.max_send_message_length", 100 << 20)]
    options.append(("grpc.max_receive_message_length", 200 << 20))
    with grpc.insecure_channel(server.target, options=options) as channel:
        call = channel.unary_unary(
            SERVICE + method,
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        token = server.token(tenant, "recorder")
        answer: bytes = call(request, metadata=(("authorization", f"Bearer {token}"),), timeout=300)
        return answer


def test_a_batch_of_many_details_gives_other_calls_their_turn(
    server: ServerThread, tenant: str
) -> None:
    """A RecordBatch of 1,000 events of 3,000 small details (52 MB) held the
    event loop for 15 s: other tenants' calls timed out and the database
    probe marked the database unreachable. Here the longest the loop waits
    while a batch of 300 such events is handled is compared with that while
    one of 10 is: it does not grow with the batch."""
    small, large = encoded_batch(10, 3000), encoded_batch(300, 3000)
    send(server, f"{tenant}-warm", small)
    with LoopWatch(server) as baseline:
        answer = pb.RecordBatchResponse.FromString(send(server, f"{tenant}-small", small))
    assert all(result.HasField("event") for result in answer.results)
    with LoopWatch(server) as watched:
        encoded = send(server, tenant, large)
    answer = pb.RecordBatchResponse.FromString(encoded)
    assert len(answer.results) == 300
    assert all(result.HasField("event") for result in answer.results)
    assert watched.longest < 4 * baseline.longest, (watched, baseline)


def test_a_batch_padded_with_unknown_fields_gives_other_calls_their_turn(
    server: ServerThread, tenant: str
) -> None:
    """The entries of a RecordBatch were found by a reader of the encoding in
    Python, which walked 64 MiB of two-byte unknown fields around one entry
    for 16 s without a turn; protobuf's own parser skips them in C, as it did
    before (helper-147). Compared with a batch of one entry alone."""
    entry = pb.RecordBatchRequest(events=[many_keys_event(0, 1)]).SerializeToString()
    padding = b"\x10\x00" * (4 << 20)  # field 2, a varint 0: 8 MiB of unknown fields
    send(server, f"{tenant}-warm", entry)
    with LoopWatch(server) as baseline:
        send(server, f"{tenant}-alone", entry)
    with LoopWatch(server) as watched:
        answer = pb.RecordBatchResponse.FromString(send(server, tenant, entry + padding))
    assert [result.HasField("event") for result in answer.results] == [True]
    assert watched.longest < 4 * baseline.longest + 0.05, (watched, baseline)


@pytest.mark.parametrize(
    ("suffix", "accepted"),
    [
        (b"\x1b\x08\x01\x1c", True),  # an unknown group (field 3), as protobuf keeps one
        (b"\x80\x80\x80\x80\x10\x00", False),  # field number 2^29: past protobuf's largest
    ],
    ids=["unknown-group", "field-number-too-large"],
)
def test_a_batch_is_read_as_protobuf_reads_it(
    server: ServerThread, tenant: str, suffix: bytes, accepted: bool
) -> None:
    """What protobuf takes as a RecordBatchRequest, and nothing else: the
    Python reader refused unknown groups and took field numbers past the
    largest (helper-147)."""
    request = pb.RecordBatchRequest(events=[many_keys_event(0, 1)]).SerializeToString() + suffix
    if accepted:
        assert len(pb.RecordBatchResponse.FromString(send(server, tenant, request)).results) == 1
        return
    with pytest.raises(grpc.RpcError) as refused:
        send(server, tenant, request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request" in (refused.value.details() or "")


@pytest.fixture(scope="module")
def budgeted(migrated_database_url: str) -> Iterator[ServerThread]:
    """A server whose Record and RecordBatch calls may hold 1 byte at once:
    any call is taken alone, none beside another."""
    running = ServerThread(migrated_database_url, record_max_in_flight_bytes=1)
    try:
        yield running
    finally:
        running.close()


def test_writes_past_the_memory_budget_are_refused_before_they_are_parsed(
    budgeted: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Eight RecordBatch calls of 52 MB at once took the server 7 GiB: each
    was parsed and validated whatever the others held. A process now counts
    what its Record and RecordBatch calls hold, from their size as received
    (before it parses them, so a call refused costs its bytes alone), and refuses a
    call past SEALTRAIL_RECORD_MAX_IN_FLIGHT_BYTES with a retry delay. One
    call alone is taken however large."""
    send(budgeted, tenant, encoded_batch(3, 100))  # alone, over the budget: taken
    with ThreadPoolExecutor(1) as pool, sql.transaction():
        sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
        first = pool.submit(send, budgeted, tenant, encoded_batch(3, 100, first=3))
        until_blocked(sql, first, waiter="sealtrail")  # in flight, waiting for the tenant's head
        for method in ("RecordBatch", "Record"):
            with pytest.raises(grpc.RpcError) as refused:
                send(budgeted, f"{tenant}-other", b"\xff\xff\xff", method)  # unparsable
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, method
            status = rpc_status.from_call(refused.value)
            assert status is not None
            retry = error_details_pb2.RetryInfo()
            assert any(detail.Unpack(retry) for detail in status.details)
            assert retry.retry_delay.ToNanoseconds() > 0
            info = error_details_pb2.ErrorInfo()
            assert any(detail.Unpack(info) for detail in status.details)
            assert info.reason == "OVERLOADED"
    answer = pb.RecordBatchResponse.FromString(first.result(30))
    assert all(result.HasField("event") for result in answer.results)
    # Once it is answered, the budget is free again.
    with pytest.raises(grpc.RpcError) as invalid:
        send(budgeted, tenant, b"\xff\xff\xff")
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def secrets_event(n: int, keys: int) -> event_pb2.Event:
    """An event of `keys` one-letter passwords: each answered (and stored) as
    `[REDACTED:field_name]`, the event grows to twice its size and more."""
    event = event_pb2.Event(action="doc.updated", idempotency_key=f"s{n}")
    event.actor.id = "u"
    for j in range(keys):
        event.details.fields[f"{j}pwd"].string_value = "x"
    return event


def test_a_batch_whose_answer_would_be_too_large_is_refused_before_it_is_written(
    migrated_database_url: str,
    tenant: str,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch within every limit whose answer (its events as stored, ids and
    times added, secrets redacted into longer text) is over what the server
    may send was committed, and its answer never arrived (RESOURCE_EXHAUSTED
    "Sent message larger than max"), nor that of any retry, deduplicated into
    the same answer (helper-138). It is refused, naming `events`, and nothing
    of it is written. (The limit, 96 MiB, is shrunk here to 1 MiB.)"""
    monkeypatch.setattr(app, "MAX_RESPONSE_BYTES", 1 << 20)
    small = ServerThread(migrated_database_url)
    try:
        request = pb.RecordBatchRequest(events=[secrets_event(n, 1000) for n in range(40)])
        assert request.ByteSize() < 1 << 20
        for _attempt in range(2):
            with pytest.raises(grpc.RpcError) as refused:
                send(small, tenant, request.SerializeToString())
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "events:" in str(refused.value.details())
            assert "split the batch" in str(refused.value.details())
        stored = sql.execute("SELECT count(*) FROM events WHERE tenant_id = %s", [tenant])
        assert stored.fetchone() == (0,)
        half = pb.RecordBatchRequest(events=request.events[:15])
        answer = pb.RecordBatchResponse.FromString(send(small, tenant, half.SerializeToString()))
        assert all(result.HasField("event") for result in answer.results)
    finally:
        small.close()


def record(server: ServerThread, tenant: str, n: int, timeout: float) -> bytes:
    """Record of one small event of `tenant`, its answer as encoded."""
    request = pb.RecordRequest(event=many_keys_event(n, 1)).SerializeToString()
    options = [("grpc.max_receive_message_length", 200 << 20)]
    with grpc.insecure_channel(server.target, options=options) as channel:
        call = channel.unary_unary(
            SERVICE + "Record",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        token = server.token(tenant, "recorder")
        answer: bytes = call(
            request, metadata=(("authorization", f"Bearer {token}"),), timeout=timeout
        )
        return answer


def test_a_large_batch_being_written_holds_up_no_other_tenant(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """One appender wrote every tenant's events, a batch at a time: while a
    RecordBatch of 46 MB took PostgreSQL 15 s to write, every other tenant's
    Record waited as long, and timed out. A large submission (1 MiB of events
    or more) is now written by a lane of its own, with the writes of its
    tenant that follow it, in their order; other tenants' writes go on beside
    it. Here its write is held by a lock on its tenant's head for as long as
    the test likes, and another tenant records meanwhile."""
    other = f"{tenant}-other"
    send(server, tenant, encoded_batch(1, 1))  # the tenant's head exists
    large = encoded_batch(40, 3000, first=1)
    assert len(large) > 1 << 20
    with ThreadPoolExecutor(2) as pool:
        with sql.transaction():
            sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
            batch = pool.submit(send, server, tenant, large)
            until_blocked(sql, batch, waiter="sealtrail")
            # A small write of the same tenant after it waits behind it, in its lane.
            behind = pool.submit(record, server, tenant, 100, 60)
            time.sleep(0.2)
            assert pb.RecordResponse.FromString(record(server, other, 0, 4)).event.seq == 1
            assert not batch.done() and not behind.done()
        results = pb.RecordBatchResponse.FromString(batch.result(60)).results
        assert [result.event.seq for result in results] == list(range(2, 42))
        assert pb.RecordResponse.FromString(behind.result(60)).event.seq == 42
