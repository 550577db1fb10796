"""A Query page whose filter no index yields (an action suffix, a word, an
actor of many) may read the tenant's whole log to fill a page: on a caller
without a deadline (the console's, grpcurl's, any gRPC client not setting
one), it ran until it had, minutes of a large log, holding one of the
connections every tenant's filtered pages, exports and stream catch-ups
share. It runs under a statement timeout of its own, as a count does."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from sealtrail import AuditClient, build_event, build_filter
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc
from tests.conftest import ServerThread

_EVENTS = 20_000


@pytest.fixture(scope="module")
def timed(migrated_database_url: str) -> Iterator[ServerThread]:
    # 1 ms: what reading 20,000 events cannot be done within, on any machine.
    server = ServerThread(migrated_database_url, query_timeout=0.001, checkpoint_interval=0)
    try:
        yield server
    finally:
        server.close()


def test_a_page_no_index_yields_stops_at_the_query_timeout_without_a_deadline(
    timed: ServerThread, tenant: str
) -> None:
    with AuditClient(timed.target, token=timed.token(tenant, "recorder")) as recorder:
        for _ in range(_EVENTS // 1000):
            recorder.record_batch(
                [build_event(action="invoice.pay", actor_id=f"u{n}") for n in range(1000)]
            )
    metadata = (("authorization", f"Bearer {timed.token(tenant, 'reader')}"),)
    nowhere = build_filter(actions="*.delete")  # read through every event, matching none
    with grpc.insecure_channel(timed.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Query(pb.QueryRequest(filter=nowhere), metadata=metadata)  # no deadline
        took = time.monotonic() - started
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value
        said = refused.value.details() or ""
        assert "SEALTRAIL_QUERY_TIMEOUT" in said and "narrow the time range" in said, said
        assert took < 30
        # A page one index yields is no such read: never cut short.
        page = stub.Query(
            pb.QueryRequest(filter=build_filter(actions="invoice.pay"), page_size=10),
            metadata=metadata,
        )
        assert len(page.events) == 10
