"""Clients that go away mid-call (a RecordBatch past its deadline, a stream and
an export dropped after their first message), many times over: the server is
left with no more tasks, connections in use or stream subscriptions than
before, and its memory does not keep growing."""

from __future__ import annotations

import time

import grpc
import psutil

from sealtrail import AuditClient, build_event
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc
from tests.conftest import ServerThread

ROUNDS = 30


def resources(server: ServerThread) -> dict[str, int]:
    async def read() -> dict[str, int]:
        return server.service.resources()

    return server.run(read())


def settled(server: ServerThread, baseline: dict[str, int], timeout: float = 20) -> dict[str, int]:
    """The resources once they are back to the baseline (a little slack for
    tasks the server starts on its own, such as a commit in flight)."""
    deadline = time.monotonic() + timeout
    while True:
        now = resources(server)
        if (
            now["tasks"] <= baseline["tasks"] + 3
            and now["connections_in_use"] <= baseline["connections_in_use"]
            and now["subscribers"] <= baseline["subscribers"]
        ):
            return now
        assert time.monotonic() < deadline, f"still held: {now} (before: {baseline})"
        time.sleep(0.1)


def quiet(server: ServerThread, timeout: float = 20) -> dict[str, int]:
    """The resources once no stream is subscribed: an earlier test's stream,
    cancelled, leaves the hub a moment later, and a baseline taken before
    then is one subscriber too many."""
    deadline = time.monotonic() + timeout
    while (now := resources(server))["subscribers"]:
        assert time.monotonic() < deadline, f"streams still subscribed: {now}"
        time.sleep(0.1)
    return now


def test_clients_that_leave_mid_call_leave_nothing_behind(
    server: ServerThread, tenant: str
) -> None:
    token = server.token(tenant)
    metadata = (("authorization", f"Bearer {token}"),)
    with AuditClient(server.target, token=token) as client:
        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(500)])
    baseline = quiet(server)
    memory = psutil.Process()
    rss_before = memory.memory_info().rss
    with grpc.insecure_channel(server.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        for round_ in range(ROUNDS):
            batch = pb.RecordBatchRequest()
            for n in range(1000):
                event = batch.events.add(action="doc.bulk", idempotency_key=f"{round_}-{n}")
                event.actor.id = "u"
            try:  # gone before the answer: the server may still commit, never half
                stub.RecordBatch(batch, metadata=metadata, timeout=0.005)
            except grpc.RpcError as error:
                assert error.code() in (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED,
                )
            stream = stub.StreamEvents(pb.StreamEventsRequest(after_seq=0), metadata=metadata)
            next(stream)
            stream.cancel()
            export = stub.Export(pb.ExportRequest(format=pb.EXPORT_FORMAT_CSV), metadata=metadata)
            next(export)
            export.cancel()
    after = settled(server, baseline)
    assert after["subscribers"] == baseline["subscribers"]
    # Memory: the test process hosts the server; 30 rounds of 1,000-event batches,
    # streams and exports may warm caches but must not hold each call's data.
    assert memory.memory_info().rss - rss_before < 150 * 2**20
    # Every half-sent batch is whole or absent: each key at most once, each batch all or none.
    with AuditClient(server.target, token=token) as client:
        keys = [e.idempotency_key for e in client.query(order="oldest") if e.action == "doc.bulk"]
    assert len(keys) == len(set(keys))
    per_round: dict[str, int] = {}
    for key in keys:
        per_round[key.split("-")[0]] = per_round.get(key.split("-")[0], 0) + 1
    assert set(per_round.values()) <= {1000}
