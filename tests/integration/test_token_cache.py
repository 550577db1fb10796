"""What authenticating a call costs the database, counted by the server's
`sealtrail.tokens.lookups` (docs/metrics.md): a token is looked up once per
`SEALTRAIL_TOKEN_CACHE_SECONDS` on a process however busy it is, and a
caller sending tokens that do not exist cannot make every call a lookup."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sealtrail import AuditClient
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc, retention_pb2
from sealtrail_server.domain.access import (
    Principal,
    Role,
    new_token,
    token_digest,
    token_well_formed,
)
from sealtrail_server.store.tokens import create_token, find_principal, revoke_token
from tests.clock import Clock
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

    def call(self, token: str, *, source: str = "") -> grpc.StatusCode:
        """A Record with no event, refused INVALID_ARGUMENT once its token is
        accepted, before anything is written: the token's cost alone. From
        `source`, as a trusted proxy in front of the server tells it."""
        metadata = [("authorization", f"Bearer {token}")]
        if source:
            metadata.append(("x-forwarded-for", source))
        try:
            self.stub.Record(pb.RecordRequest(), metadata=metadata)
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


def test_an_unknown_token_is_looked_up_once_a_cache_interval(counted: Counted) -> None:
    """A client left with a token that does not exist (mistyped, or its
    tenant's erasure took it), retrying in a loop, costs one lookup."""
    unknown = new_token()
    for _ in range(20):
        assert counted.call(unknown) == grpc.StatusCode.UNAUTHENTICATED
    assert counted.lookups() == {"unknown": 1}


@pytest.fixture
def budgeted(migrated_database_url: str) -> Iterator[tuple[Counted, Clock]]:
    """A server behind a trusted proxy (the test) that looks up 5 unknown
    tokens a minute per caller address, on a clock the test moves."""
    clock = Clock()
    made = Counted(
        migrated_database_url,
        clock=clock,
        token_cache_seconds=3600,
        unknown_tokens_per_minute=5,
        trusted_proxies="127.0.0.1/32",
    )
    try:
        yield made, clock
    finally:
        made.close()


ATTACKER = "203.0.113.7"


def test_a_caller_sending_random_tokens_is_not_looked_up_for_each(
    budgeted: tuple[Counted, Clock], tenant: str
) -> None:
    """Every token made up anew was a lookup: a caller with no token at all
    could keep the pool busy at will. Past its budget of unknown tokens, a
    caller's tokens this process never saw are refused RESOURCE_EXHAUSTED
    unlooked, until its budget refills; other callers are not affected, a
    token created a moment ago by another process among them."""
    counted, clock = budgeted
    codes = [counted.call(new_token(), source=ATTACKER) for _ in range(40)]
    refused = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5 + [refused] * 35
    assert counted.lookups() == {"unknown": 5}
    created = counted.server.token(tenant, Role.RECORDER)  # by another process, as it were
    assert counted.call(created, source="198.51.100.1") == grpc.StatusCode.INVALID_ARGUMENT
    assert counted.call(created, source="2001:db8::1") == grpc.StatusCode.INVALID_ARGUMENT
    # Once seen, a token is no stranger to the attacker's address either.
    assert counted.call(created, source=ATTACKER) == grpc.StatusCode.INVALID_ARGUMENT
    # One unknown token more a twelfth of a minute.
    clock.advance(seconds=12)
    assert counted.call(new_token(), source=ATTACKER) == grpc.StatusCode.UNAUTHENTICATED
    assert counted.call(new_token(), source=ATTACKER) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert counted.lookups() == {"unknown": 6, "found": 1}


def test_an_ipv6_caller_is_budgeted_by_its_network(budgeted: tuple[Counted, Clock]) -> None:
    """A host given an IPv6 /64 has as many addresses as it likes: the
    budget is the network's."""
    counted, _ = budgeted
    codes = [counted.call(new_token(), source=f"2001:db8:0:1::{n:x}") for n in range(1, 8)]
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert counted.call(new_token(), source="2001:db8:0:2::1") == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_in_use_is_looked_up_again_over_budget(
    migrated_database_url: str, tenant: str
) -> None:
    """A token this process saw is looked up again as its cache interval
    ends, whatever its caller's budget: an attacker sharing an address
    with a service (a proxy that is not trusted) cannot lock it out."""
    counted = Counted(migrated_database_url, token_cache_seconds=0.001, unknown_tokens_per_minute=2)
    try:
        token = counted.server.token(tenant, Role.RECORDER)
        assert counted.call(token) == grpc.StatusCode.INVALID_ARGUMENT
        for _ in range(3):
            counted.call(new_token())
        assert counted.call(new_token()) == grpc.StatusCode.RESOURCE_EXHAUSTED
        for _ in range(3):
            assert counted.call(token) == grpc.StatusCode.INVALID_ARGUMENT
        assert counted.lookups()["found"] == 4
    finally:
        counted.close()


# A service's host that records for several tenants, each with tokens of its own.
SERVICE = "198.51.100.9"


def test_an_erased_tenants_tokens_spend_no_budget_of_their_callers(
    budgeted: tuple[Counted, Clock], tenant: str
) -> None:
    """A tenant's tokens the process saw in use are no strangers once its
    erasure took them: a fleet still calling with them (not told yet) is
    refused UNAUTHENTICATED, and spends no budget of unknown tokens. They
    spent it, each once a cache interval, and a host recording for several
    tenants (a shared service, or a NAT) was then refused RESOURCE_EXHAUSTED
    for another tenant's token it had not presented yet."""
    counted, _ = budgeted
    fleet = [counted.server.token(tenant, Role.RECORDER) for _ in range(6)]
    for token in fleet:
        assert counted.call(token, source=SERVICE) == grpc.StatusCode.INVALID_ARGUMENT
    admin = counted.server.token(tenant, Role.ADMIN)
    counted.stub.EraseTenant(
        retention_pb2.EraseTenantRequest(confirm_tenant_id=tenant),
        metadata=[("authorization", f"Bearer {admin}")],
    )
    for token in fleet:
        assert counted.call(token, source=SERVICE) == grpc.StatusCode.UNAUTHENTICATED
    other = counted.server.token(f"{tenant}-other", Role.RECORDER)
    assert counted.call(other, source=SERVICE) == grpc.StatusCode.INVALID_ARGUMENT


def test_tokens_erased_by_another_process_spend_no_budget_of_their_callers(
    migrated_database_url: str, tenant: str, server: ServerThread
) -> None:
    """As above, the erasure made by another process (or the operator's
    `sealtrail-server tenant erase`): this one finds each token gone as its
    cache interval ends, and again as the interval of that answer ends."""
    counted = Counted(
        migrated_database_url,
        clock=Clock(),  # the budgets refill on it: not at all
        token_cache_seconds=0.2,
        unknown_tokens_per_minute=5,
        trusted_proxies="127.0.0.1/32",
    )
    try:
        fleet = [counted.server.token(tenant, Role.RECORDER) for _ in range(6)]
        for token in fleet:
            assert counted.call(token, source=SERVICE) == grpc.StatusCode.INVALID_ARGUMENT
        with AuditClient(server.target, token=server.token(tenant, Role.ADMIN)) as admin:
            admin.erase_tenant(tenant)
        for _ in range(3):
            time.sleep(0.3)  # the cache's interval, then the interval of its answer
            for token in fleet:
                assert counted.call(token, source=SERVICE) == grpc.StatusCode.UNAUTHENTICATED
        other = counted.server.token(f"{tenant}-other", Role.RECORDER)
        assert counted.call(other, source=SERVICE) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        counted.close()


def test_a_revoked_token_is_looked_up_once_a_cache_interval(counted: Counted, tenant: str) -> None:
    """A fleet left with a token revoked (its secret rotated away), retrying
    in a loop, costs one lookup an interval, as an unknown token does: it was
    looked up on every call, the pool kept busy by a token that can never
    work again. Each call is still refused as revoked."""
    token = counted.server.token(tenant, Role.RECORDER)
    token_id = counted.server.run(_token_id(counted.server, token))
    assert counted.server.run(
        revoke_token(counted.server.database, token_id=token_id, tenant_id=tenant)
    )
    for _ in range(20):
        assert counted.call(token) == grpc.StatusCode.UNAUTHENTICATED
    assert counted.lookups() == {"revoked": 1}


def test_an_expired_token_is_looked_up_once_a_cache_interval(counted: Counted, tenant: str) -> None:
    """A fleet left with a token past its expiry costs one lookup an
    interval: each call is refused TOKEN_EXPIRED from what is cached."""
    issued = counted.server.run(
        create_token(
            counted.server.database,
            tenant_id=tenant,
            role=Role.RECORDER,
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
    )
    for _ in range(20):
        assert counted.call(issued.secret) == grpc.StatusCode.UNAUTHENTICATED
    assert counted.lookups() == {"found": 1}


async def _token_id(server: ServerThread, secret: str) -> str:
    found = await find_principal(server.database, token_digest(secret))
    assert isinstance(found, Principal)
    return found.token_id


def test_calls_with_the_pool_exhausted_share_a_lookup_and_are_told_unavailable(
    migrated_database_url: str, tenant: str
) -> None:
    """Every connection of the server's pool held (by work that outlasts the
    pool's wait): calls presenting a token to look up are answered
    UNAVAILABLE, never INTERNAL, and however many arrive together they queue
    one lookup for a connection, not one each."""
    counted = Counted(migrated_database_url, pool_min_size=2, pool_max_size=2)
    db = counted.server.service._db
    assert db is not None
    held = [counted.server.run(db.pool.getconn()) for _ in range(2)]
    try:
        token = counted.server.token(tenant, Role.RECORDER)
        metadata = [("authorization", f"Bearer {token}")]
        calls = [
            counted.stub.Record.future(pb.RecordRequest(), metadata=metadata) for _ in range(8)
        ]
        codes = [call.exception().code() for call in calls]  # type: ignore[union-attr]
        assert codes == [grpc.StatusCode.UNAVAILABLE] * 8
        assert counted.lookups() == {}  # none made it to the database
        # One lookup waited (the server's own jobs may have waited too): one a call was 8.
        assert db.checkout_timeouts < len(calls)
    finally:
        for conn in held:
            counted.server.run(db.pool.putconn(conn))
        counted.close()


def test_a_lookup_whose_connection_is_lost_answers_unavailable(
    counted: Counted, tenant: str, sql: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    """The database drops the lookup's session as it runs (a restart, a
    failover): the call is answered UNAVAILABLE, never INTERNAL, nothing is
    remembered of the token, and the next call looks it up and is served."""
    token = counted.server.token(tenant, Role.RECORDER)
    metadata = [("authorization", f"Bearer {token}")]
    with psycopg.connect(migrated_database_url) as blocker:
        # The lookup waits behind this lock, long enough to be found and ended.
        blocker.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
        call = counted.stub.Record.future(pb.RecordRequest(), metadata=metadata)
        deadline = time.monotonic() + 4
        pids: list[Any] = []
        while not pids and time.monotonic() < deadline:
            pids = sql.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                ["%FROM api_tokens WHERE secret_sha256%"],
            ).fetchall()
            time.sleep(0.01)
        assert len(pids) == 1, "the lookup never waited for the lock"
        sql.execute("SELECT pg_terminate_backend(%s)", [pids[0][0]])
        assert call.exception().code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[union-attr]
        blocker.rollback()
    assert counted.lookups() == {}
    assert counted.call(token) == grpc.StatusCode.INVALID_ARGUMENT
    assert counted.lookups() == {"found": 1}


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def _checksum_broken(token: str) -> str:
    """`token` with one character of its random part changed: the shape of
    a token, whose checksum fails (ADR 0111)."""
    changed = "A" if token[10] != "A" else "B"
    return token[:10] + changed + token[11:]


def _details(counted: Counted, token: str) -> tuple[grpc.StatusCode, str]:
    try:
        counted.stub.Record(pb.RecordRequest(), metadata=[("authorization", f"Bearer {token}")])
    except grpc.RpcError as error:
        return error.code(), error.details()  # type: ignore[no-any-return]
    raise AssertionError("an empty Record was accepted")


def test_a_token_whose_checksum_fails_is_refused_unlooked_as_an_unknown_one(
    counted: Counted, tenant: str
) -> None:
    """A token of the new shape whose checksum fails (mistyped, cut and
    pasted wrong, made up) is no token: it is refused before any lookup,
    in the words an unknown token is refused in, nothing more said."""
    token = counted.server.token(tenant, Role.RECORDER)
    broken = _checksum_broken(token)
    unknown = new_token()  # well formed, in no row
    assert _details(counted, unknown) == (UNAUTHENTICATED, "unknown or revoked token")
    for _ in range(3):
        assert _details(counted, broken) == _details(counted, unknown)
    assert counted.lookups() == {"unknown": 1}  # the well-formed one's
    assert counted.call(token) == grpc.StatusCode.INVALID_ARGUMENT


def test_tokens_whose_checksum_fails_spend_their_callers_budget(
    budgeted: tuple[Counted, Clock], tenant: str
) -> None:
    """Tokens made up with a failing checksum are unknown tokens: each spends
    its caller's budget as one looked up does (the caller past it is refused
    RESOURCE_EXHAUSTED for it as for any token unseen), though none costs a
    lookup; one retried in a loop spends it once."""
    counted, _ = budgeted
    mistyped = _checksum_broken(new_token())
    for _ in range(10):
        assert counted.call(mistyped, source=SERVICE) == grpc.StatusCode.UNAUTHENTICATED
    codes = [counted.call(_checksum_broken(new_token()), source=ATTACKER) for _ in range(8)]
    refused = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5 + [refused] * 3
    assert counted.call(new_token(), source=ATTACKER) == refused
    assert counted.lookups() == {}
    # The service's address spent one of its 5: it still presents new tokens.
    created = counted.server.token(tenant, Role.RECORDER)
    assert counted.call(created, source=SERVICE) == grpc.StatusCode.INVALID_ARGUMENT
    for _ in range(4):
        assert counted.call(new_token(), source=SERVICE) == grpc.StatusCode.UNAUTHENTICATED
    assert counted.call(new_token(), source=SERVICE) == refused


LEGACY = "stk_" + "3f9aK2mQ8xW1zR7tY4pL6nB0vC5dH9jG-_aB3cD4eF5g"[:43]


def test_a_token_issued_before_checksums_keeps_working(
    counted: Counted, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A token issued before ADR 0111 (`stk_` and 43 base64url characters,
    no checksum) is looked up as ever, and works; an unknown one of that
    shape is unknown, as before."""
    assert len(LEGACY) == 47
    token = counted.server.token(tenant, Role.RECORDER)
    sql.execute(
        "UPDATE api_tokens SET secret_sha256 = %s WHERE secret_sha256 = %s",
        [token_digest(LEGACY), token_digest(token)],
    )
    assert counted.call(LEGACY) == grpc.StatusCode.INVALID_ARGUMENT
    other = LEGACY[:-1] + ("A" if LEGACY[-1] != "A" else "B")
    assert _details(counted, other) == (UNAUTHENTICATED, "unknown or revoked token")
    assert counted.lookups() == {"found": 1, "unknown": 1}


def test_tokens_created_through_the_api_carry_a_checksum(server: ServerThread, tenant: str) -> None:
    with AuditClient(server.target, token=server.token(tenant, Role.ADMIN)) as admin:
        secret = admin.create_token("recorder", name="ci").secret
    assert re.fullmatch(r"stk_[0-9A-Za-z]{49}", secret)
    assert token_well_formed(secret)
    assert not token_well_formed(_checksum_broken(secret))
