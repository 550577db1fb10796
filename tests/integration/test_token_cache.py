"""What authenticating a call costs the database, counted by the server's
`sealtrail.tokens.lookups` (docs/metrics.md): a token is looked up once per
`SEALTRAIL_TOKEN_CACHE_SECONDS` on a process however busy it is, and a
caller sending tokens that do not exist cannot make every call a lookup."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc
from sealtrail_server.domain.access import Role, new_token
from tests.conftest import ServerThread

LOOKUPS = "sealtrail.tokens.lookups"
OUTCOME = "sealtrail.token.lookup.outcome"


class Counted:
    """A server on a meter the test reads, and a channel to it."""

    def __init__(self, database_url: str, **settings: object) -> None:
        self.reader = InMemoryMetricReader()
        self.server = ServerThread(
            database_url, meter_provider=MeterProvider(metric_readers=[self.reader]), **settings
        )
        self.channel = grpc.insecure_channel(self.server.target)
        self.stub = audit_service_pb2_grpc.AuditLogServiceStub(self.channel)

    def call(self, token: str) -> grpc.StatusCode:
        """A Record with no event, refused INVALID_ARGUMENT once its token is
        accepted, before anything is written: the token's cost alone."""
        try:
            self.stub.Record(pb.RecordRequest(), metadata=[("authorization", f"Bearer {token}")])
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
        raise AssertionError("an empty Record was accepted")

    def lookups(self) -> dict[str, int]:
        """Lookups so far, by outcome."""
        data = self.reader.get_metrics_data()
        found: dict[str, int] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == LOOKUPS:
                        for point in metric.data.data_points:
                            outcome = str((point.attributes or {})[OUTCOME])
                            found[outcome] = int(point.value)  # type: ignore[union-attr]
        return found

    def close(self) -> None:
        self.channel.close()
        self.server.close()


@pytest.fixture
def counted(migrated_database_url: str) -> Iterator[Counted]:
    made = Counted(migrated_database_url, token_cache_seconds=3600)
    try:
        yield made
    finally:
        made.close()


def test_each_lookup_is_counted_by_its_outcome(counted: Counted, tenant: str) -> None:
    token = counted.server.token(tenant, Role.RECORDER)
    for _ in range(3):
        assert counted.call(token) == grpc.StatusCode.INVALID_ARGUMENT
    assert counted.lookups() == {"found": 1}  # then cached
    assert counted.call(new_token()) == grpc.StatusCode.UNAUTHENTICATED
    assert counted.lookups() == {"found": 1, "unknown": 1}


def test_a_full_cache_keeps_the_tokens_in_use(migrated_database_url: str, tenant: str) -> None:
    """A process that sees more tokens than its cache holds (many tenants,
    each calling now and then) drops the one used longest ago: a busy token
    stays cached. The cache was emptied instead each time it filled, and
    every token in use was looked up again."""
    counted = Counted(migrated_database_url, token_cache_seconds=3600, token_cache_size=4)
    try:
        busy = counted.server.token(tenant, Role.RECORDER)
        assert counted.call(busy) == grpc.StatusCode.INVALID_ARGUMENT
        others = [counted.server.token(f"{tenant}-{n}", Role.RECORDER) for n in range(12)]
        busy_lookups = 0
        for other in others:
            assert counted.call(other) == grpc.StatusCode.INVALID_ARGUMENT
            before = counted.lookups()["found"]
            assert counted.call(busy) == grpc.StatusCode.INVALID_ARGUMENT
            busy_lookups += counted.lookups()["found"] - before
        assert busy_lookups == 0
        assert counted.lookups() == {"found": 13}  # each token once
    finally:
        counted.close()
