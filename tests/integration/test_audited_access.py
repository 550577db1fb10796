"""Reading the log and managing its tokens are recorded in the log, attributed
to the calling token, admins included; token management works over the API
within the caller's tenant only."""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import grpc
import psycopg
import pytest
import rfc8785
from google.protobuf import json_format

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
    build_event,
    build_filter,
)
from sealtrail.v1 import access_pb2, audit_service_pb2, audit_service_pb2_grpc, event_pb2
from sealtrail_server.domain.access import Role
from sealtrail_server.domain.event import EventDraft, ValidEvent, validate_event
from sealtrail_server.store.appended import Appended
from sealtrail_server.store.appender import Appender
from sealtrail_server.store.tokens import create_token, revoke_token, tokens_statement
from tests.conftest import ServerThread, run_operator, token_id_of
from tests.refused_inserts import inserts_refused


def _audit_events(sql: psycopg.Connection[Any], tenant: str) -> list[tuple[str, str]]:
    rows = sql.execute(
        "SELECT action, actor_id FROM events WHERE tenant_id = %s"
        " AND (action LIKE 'audit\\_log.%%' OR action LIKE 'api\\_token.%%') ORDER BY seq",
        [tenant],
    ).fetchall()
    return [(str(action), str(actor)) for action, actor in rows]


@pytest.mark.parametrize("role", ["reader", "exporter", "admin"])
def test_each_read_is_recorded_once_attributed_to_its_token(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], tmp_path: Path, role: str
) -> None:
    with AuditClient(server.target, token=server.token(tenant, "recorder")) as writer:
        writer.record_batch([build_event(action="doc.read", actor_id=f"u{i}") for i in range(12)])
    secret = server.token(tenant, role)
    token_id = token_id_of(sql, secret)
    with AuditClient(server.target, token=secret) as reader:
        pages = list(reader.query(build_filter(actions="doc.*"), page_size=5))  # 3 pages
        assert len(pages) == 12
        stream = reader.stream(build_filter(actions="doc.*"), after_seq=0)
        assert next(stream).action == "doc.read"
        stream.close()
        if role != "reader":
            reader.export(tmp_path / "out.csv", format="csv")
    recorded = _audit_events(sql, tenant)
    expected = ["audit_log.queried", "audit_log.streamed"]
    if role != "reader":
        expected.append("audit_log.exported")
    assert recorded == [(action, token_id) for action in expected]
    details = sql.execute(
        "SELECT record::jsonb -> 'details' FROM events WHERE tenant_id = %s"
        " AND action = 'audit_log.queried'",
        [tenant],
    ).fetchone()
    assert details is not None and details[0]["filter"] == {"actions": ["doc.*"]}
    # Its own events, canonicalised by the fast path, are in RFC 8785 form.
    records = sql.execute("SELECT record FROM events WHERE tenant_id = %s", [tenant]).fetchall()
    assert all(rfc8785.dumps(json.loads(record)) == record.encode() for (record,) in records)


def _own_record(sql: psycopg.Connection[Any], tenant: str, action: str) -> dict[str, Any]:
    [(record,)] = sql.execute(
        "SELECT record::jsonb FROM events WHERE tenant_id = %s AND action = %s", [tenant, action]
    ).fetchall()
    return dict(record)


def test_own_records_name_the_token_and_say_where_the_call_came_from(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """As a service's events do: who read the log, from which address, with
    which program (a security team asks "who downloaded the log, from where")."""
    issued = server.run(
        create_token(server.database, tenant_id=tenant, role=Role.READER, name="nightly report")
    )
    options = [("grpc.primary_user_agent", "report-job/2.1")]
    with grpc.insecure_channel(server.target, options=options) as channel:
        audit_service_pb2_grpc.AuditLogServiceStub(channel).Query(
            audit_service_pb2.QueryRequest(),
            # Only the console's own connection may say whose call it carries.
            metadata=[
                ("authorization", f"Bearer {issued.secret}"),
                ("x-sealtrail-client-ip", "203.0.113.9"),
                ("x-sealtrail-client-user-agent", "forged/1.0"),
            ],
            timeout=10,
        )
    record = _own_record(sql, tenant, "audit_log.queried")
    assert record["actor"] == {
        "type": "api_key",
        "id": issued.token_id,
        "display_name": "nightly report",
    }
    assert record["context"]["ip"] == "127.0.0.1"
    assert record["context"]["user_agent"].startswith("report-job/2.1 grpc-python")


def test_behind_a_trusted_proxy_own_records_carry_the_address_it_forwards_for(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Behind an ingress or a mesh sidecar every call's peer is the proxy: "who
    read the log from where" named the proxy. With SEALTRAIL_TRUSTED_PROXIES
    the record carries the client the proxy names in X-Forwarded-For, not one
    the client wrote before it (here the test's loopback connection is the
    proxy)."""
    server = ServerThread(migrated_database_url, trusted_proxies="127.0.0.0/8")
    try:
        issued = server.run(create_token(server.database, tenant_id=tenant, role=Role.READER))
        with grpc.insecure_channel(server.target) as channel:
            audit_service_pb2_grpc.AuditLogServiceStub(channel).Query(
                audit_service_pb2.QueryRequest(),
                metadata=[
                    ("authorization", f"Bearer {issued.secret}"),
                    ("x-forwarded-for", "203.0.113.9, 198.51.100.7"),
                ],
                timeout=10,
            )
    finally:
        server.close()
    record = _own_record(sql, tenant, "audit_log.queried")
    assert record["context"]["ip"] == "198.51.100.7"


def test_a_later_page_is_read_only_by_the_token_whose_first_page_was_recorded(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Later pages are not recorded: their token must come from a recorded
    first page of the same caller. A page token written by hand or handed to
    another token paged through the log with no record (helper-67)."""
    with AuditClient(server.target, token=server.token(tenant, "recorder")) as writer:
        writer.record_batch([build_event(action="doc.read", actor_id=f"u{i}") for i in range(6)])
    first_secret, other_secret = server.token(tenant, "reader"), server.token(tenant, "reader")
    with (
        AuditClient(server.target, token=first_secret) as first,
        AuditClient(server.target, token=other_secret) as other,
    ):
        page = first.query_page(build_filter(actions="doc.*"), page_size=2)
        assert first.query_page(
            build_filter(actions="doc.*"), page_size=2, page_token=page.next_page_token
        ).events
        with pytest.raises(InvalidArgumentError, match="issued to this caller") as refused:
            other.query_page(
                build_filter(actions="doc.*"), page_size=2, page_token=page.next_page_token
            )
        assert refused.value.field_violations[0][0] == "page_token"
    assert _audit_events(sql, tenant) == [("audit_log.queried", token_id_of(sql, first_secret))]


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_a_first_page_is_the_log_before_its_own_record_which_is_durable_when_it_answers(
    client: AuditClient,
    tenant: str,
    sql: psycopg.Connection[Any],
    order: Literal["newest", "oldest"],
) -> None:
    client.record_batch([build_event(action="doc.read", actor_id=f"u{i}") for i in range(7)])
    for queries_before in range(5):
        page = client.query_page(order=order, page_size=3 if order == "newest" else 1000)
        own = sql.execute(
            "SELECT max(seq) FROM events WHERE tenant_id = %s AND action = 'audit_log.queried'",
            [tenant],
        ).fetchone()
        assert own is not None and own[0] == 7 + queries_before + 1  # durable on answer
        seqs = [event.seq for event in page.events]
        if order == "newest":  # the 3 events just before its own record
            assert seqs == [own[0] - 1, own[0] - 2, own[0] - 3] and page.next_page_token
        else:  # the whole log before it, and nothing follows
            assert seqs == list(range(1, own[0])) and not page.next_page_token


def test_a_first_page_is_the_log_before_its_own_record_when_the_read_sees_it_and_more(
    server: ServerThread,
    client_for: Any,
    tenant: str,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    """The access record is written while the page is read (ADR 0023). Here the
    read is held until the record and three events after it have committed, so
    its snapshot holds them all: the answer, page after page, is still the log
    before the record."""
    client = client_for(tenant, max_attempts=1)
    client.record_batch([build_event(action="doc.read", actor_id=f"u{i}") for i in range(7)])
    this_month = sql.execute(
        "SELECT (SELECT tableoid::regclass::text FROM events WHERE tenant_id = %s LIMIT 1)",
        [tenant],
    ).fetchone()
    assert this_month is not None and this_month[0] != "events_default"  # else the lock holds all
    # The lock is released (locker closed) before the pool waits for the query.
    with ThreadPoolExecutor(1) as pool, psycopg.connect(migrated_database_url) as locker:
        # A query with no time bounds plans over every partition, so it waits
        # for this lock; appends go to this month's partition and do not.
        locker.execute("LOCK TABLE events_default IN ACCESS EXCLUSIVE MODE")
        answer = pool.submit(client.query_page, page_size=3)
        deadline = time.monotonic() + 30
        while _tree_size(sql, tenant) < 8:
            assert time.monotonic() < deadline and not answer.done()
            time.sleep(0.01)
        # Without idempotency keys, whose lookup would wait for the lock too.
        later = [_plain_event("doc.later") for _ in range(3)]
        assert all(isinstance(a, Appended) for a in server.run(_append(server, tenant, later)))
        assert not answer.done()
        locker.rollback()
        page = answer.result(timeout=30)
    # The read saw seqs 11 to 7 (three later events, its own record, one before):
    # one event is left to show, and the token leads on to the rest.
    assert [event.seq for event in page.events] == [7] and page.next_page_token
    seqs = [7]
    while page.next_page_token:
        page = client.query_page(page_size=3, page_token=page.next_page_token)
        seqs += [event.seq for event in page.events]
    assert seqs == [7, 6, 5, 4, 3, 2, 1]
    own = client.query_page(build_filter(actions="audit_log.queried"), order="oldest")
    assert [event.seq for event in own.events] == [8]


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_a_first_page_is_the_log_before_its_own_record_when_events_commit_after_the_read(
    client_for: Any,
    tenant: str,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
    order: Literal["newest", "oldest"],
) -> None:
    """The read's snapshot is taken before events queued ahead of the access
    record commit: they are in the log before the record, and the query's
    pages show them. The read saw neither them nor the record, and its pages,
    newest first, went on below what it saw; oldest first, ended there: a
    batch written while an investigator searched was on no page of the
    search (helper-272)."""
    client = client_for(tenant, max_attempts=1)
    client.record_batch([build_event(action="doc.read", actor_id=f"u{i}") for i in range(7)])
    with ThreadPoolExecutor(2) as pool, psycopg.connect(migrated_database_url) as locker:
        # The head's lock holds the batch, and the access record queued behind it.
        locker.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
        batch = pool.submit(
            client.record_batch, [build_event(action="doc.later", actor_id="u") for _ in range(3)]
        )
        deadline = time.monotonic() + 30
        while not _waiting_for_a_lock(sql):
            assert time.monotonic() < deadline and not batch.done()
            time.sleep(0.01)
        # Newest first, pages of three; oldest first, one the whole log fits.
        size = 3 if order == "newest" else 1000
        answer = pool.submit(client.query_page, page_size=size, order=order)
        time.sleep(0.5)  # the read is done, its snapshot without the batch
        assert not answer.done()
        locker.rollback()
        assert [result.event.seq for result in batch.result(timeout=30)] == [8, 9, 10]
        page = answer.result(timeout=30)
    seqs = [event.seq for event in page.events]
    while page.next_page_token:
        page = client.query_page(page_size=size, order=order, page_token=page.next_page_token)
        seqs += [event.seq for event in page.events]
    assert seqs == (list(range(10, 0, -1)) if order == "newest" else list(range(1, 11)))
    own = client.query_page(build_filter(actions="audit_log.queried"), order="oldest")
    assert [event.seq for event in own.events][:1] == [11]


def _waiting_for_a_lock(sql: psycopg.Connection[Any]) -> bool:
    row = sql.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE '%%chain_heads%%'"
    ).fetchone()
    return row is not None and row[0] > 0


def _plain_event(action: str) -> ValidEvent:
    return validate_event(EventDraft(action=action, actor_id="u"), now=datetime.now(UTC), path="e")


async def _append(server: ServerThread, tenant: str, events: list[ValidEvent]) -> list[Any]:
    appender = Appender(server.database)
    appender.start()
    try:
        return await appender.append(tenant, events)
    finally:
        await appender.stop()


def _tree_size(sql: psycopg.Connection[Any], tenant: str) -> int:
    row = sql.execute("SELECT tree_size FROM chain_heads WHERE tenant_id = %s", [tenant]).fetchone()
    return 0 if row is None else int(row[0])


def test_a_query_whose_record_the_database_refuses_answers_no_page(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    client = client_for(tenant, max_attempts=1)
    client.record(action="doc.read", actor_id="u")
    with (
        inserts_refused(sql, "events", tenant, action="audit_log.queried"),
        pytest.raises(UnavailableError),
    ):
        client.query_page()
    assert [event.action for event in client.query()] == ["doc.read"]


def test_a_token_whose_creation_cannot_be_recorded_is_never_created(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Created first and undone when its record failed, a token lived on,
    unrecorded, whenever the undo failed too (the database down for both)."""
    admin = client_for(tenant, max_attempts=1)
    tokens = "SELECT count(*) FROM api_tokens WHERE tenant_id = %s"
    before = sql.execute(tokens, [tenant]).fetchone()
    with (
        inserts_refused(sql, "events", tenant, action="api_token.created"),
        pytest.raises(UnavailableError),
    ):
        admin.create_token("admin")
    assert sql.execute(tokens, [tenant]).fetchone() == before
    assert admin.create_token("reader").token.role  # and the next one is created


def test_an_operators_token_that_cannot_be_created_leaves_no_record(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """`sealtrail-server token create` recorded the token's creation in a
    transaction of its own, committed before the token was made: a creation
    failing then left the record of a token that never existed. Both now
    commit together, as the API's (ADR 0075)."""
    with (
        inserts_refused(sql, "api_tokens", tenant),
        pytest.raises(psycopg.errors.RaiseException),
    ):
        run_operator(
            migrated_database_url, "token", "create", "--tenant", tenant, "--role", "admin"
        )
    created = "SELECT count(*) FROM events WHERE tenant_id = %s AND action = 'api_token.created'"
    assert sql.execute(created, [tenant]).fetchone() == (0,)
    made = run_operator(
        migrated_database_url, "token", "create", "--tenant", tenant, "--role", "admin"
    )
    assert made.exit_code == 0, made.output
    assert sql.execute(created, [tenant]).fetchone() == (1,)


def test_verify_log_is_recorded_with_its_outcome(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    client.record(action="doc.read", actor_id="u")
    assert client.verify_log().ok
    row = sql.execute(
        "SELECT record::jsonb FROM events WHERE tenant_id = %s AND action = 'audit_log.verified'",
        [tenant],
    ).fetchone()
    assert row is not None
    assert row[0]["details"] == {"ok": True, "verified_size": 1}
    assert row[0]["category"] == "security"


def test_tokens_are_managed_over_the_api_and_each_change_is_recorded(
    client_for: Any, tenant: str, server: ServerThread, sql: psycopg.Connection[Any]
) -> None:
    admin = client_for(tenant)
    created = admin.create_token("recorder", name="billing ingest")
    assert created.secret.startswith("stk_") and created.event_id
    assert created.token.role == access_pb2.ROLE_RECORDER
    with AuditClient(server.target, token=created.secret) as recorder:
        recorder.record(action="billing.charge", actor_id="svc")

    listed = admin.list_tokens()
    mine = [t for t in listed if t.token_id == created.token.token_id]
    assert [(t.name, t.HasField("revoke_time")) for t in mine] == [("billing ingest", False)]
    assert created.secret not in json_format.MessageToJson(
        access_pb2.ListTokensResponse(tokens=listed)
    )

    revoked = admin.revoke_token(created.token.token_id)
    assert revoked.token.HasField("revoke_time") and revoked.event_id
    with (
        AuditClient(server.target, token=created.secret, max_attempts=1) as recorder,
        pytest.raises(UnauthenticatedError),
    ):
        recorder.record(action="billing.charge", actor_id="svc")  # refused at once, here
    again = admin.revoke_token(created.token.token_id)  # a retry whose answer was lost
    # As it is, nothing recorded; but its last use, written behind the calls
    # within about 10 s (auth/last_use.py), may have come in between.
    for answer in (again, revoked):
        answer.token.ClearField("last_use_time")
    assert again.token == revoked.token and not again.event_id
    with pytest.raises(NotFoundError):
        admin.revoke_token(str(uuid.uuid4()))

    created_event = admin.get_event(created.event_id)
    assert created_event.action == "api_token.created"
    assert created_event.resource.id == created.token.token_id
    assert created_event.category == event_pb2.CATEGORY_SECURITY
    assert admin.get_event(revoked.event_id).action == "api_token.revoked"
    actions = [action for action, _ in _audit_events(sql, tenant)]
    assert actions.count("api_token.listed") == 1  # one listing, however many pages


def test_a_stream_ends_when_its_token_is_revoked_recorded_as_a_refusal(
    client_for: Any, tenant: str, server: ServerThread, sql: psycopg.Connection[Any]
) -> None:
    """A stream was authenticated once, at its start, and outlived its token's
    revocation for good (the console's live view, a departed employee's tail).
    Its end is recorded as a refused call is: the log did not say that the
    tail was still open when the token went."""
    admin = client_for(tenant)
    reader = admin.create_token("reader")
    with grpc.insecure_channel(server.target) as channel:
        stream = audit_service_pb2_grpc.AuditLogServiceStub(channel).StreamEvents(
            audit_service_pb2.StreamEventsRequest(),
            metadata=(("authorization", f"Bearer {reader.secret}"),),
            timeout=30,
        )
        assert next(stream).HasField("heartbeat")
        admin.revoke_token(reader.token.token_id)
        admin.record(action="doc.read", actor_id="u1")
        with pytest.raises(grpc.RpcError) as ended:
            for message in stream:
                # The revocation's own event comes before it applies: it may arrive.
                assert message.event.action != "doc.read", "an event reached a revoked token"
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    [(record,)] = sql.execute(
        "SELECT record::jsonb FROM events WHERE tenant_id = %s"
        " AND action = 'audit_log.access_denied'",
        [tenant],
    ).fetchall()
    assert record["actor"]["id"] == reader.token.token_id
    assert (record["details"]["rpc"], record["details"]["reason"]) == ("StreamEvents", "revoked")


def test_a_token_revoked_by_another_process_changes_nothing_meanwhile(
    client_for: Any, tenant: str, server: ServerThread
) -> None:
    """Another process's revocation reaches this one's cache within its
    interval; until then the token still reads, but may change nothing (a
    stolen admin token minted itself a successor in those seconds)."""
    admin = client_for(tenant)
    stolen = admin.create_token("admin")
    with AuditClient(server.target, token=stolen.secret, max_attempts=1) as thief:
        thief.get_retention_policy()  # now cached here
        server.run(revoke_token(server.database, token_id=stolen.token.token_id, tenant_id=tenant))
        thief.get_retention_policy()  # the cache's documented bound
        with pytest.raises(UnauthenticatedError):
            thief.create_token("admin")
        with pytest.raises(UnauthenticatedError):
            thief.set_legal_hold(True, reason="x")
        with pytest.raises(UnauthenticatedError):  # checked in the erasure's transaction
            thief.erase_tenant(tenant)
    assert len(admin.list_tokens()) == 2  # the admin's and the stolen one: no successor


def test_tokens_of_another_tenant_are_out_of_reach(client_for: Any, tenant: str) -> None:
    other = client_for(f"{tenant}-other").create_token("admin")
    admin = client_for(tenant)
    with pytest.raises(NotFoundError):
        admin.revoke_token(other.token.token_id)
    assert other.token.token_id not in {t.token_id for t in admin.list_tokens()}


def test_bad_token_requests_are_refused_clearly(client_for: Any, tenant: str) -> None:
    admin = client_for(tenant)
    for call, field in (
        (lambda: admin.revoke_token("not-a-uuid"), "token_id"),
        (lambda: admin._call(admin._stub.CreateToken, access_pb2.CreateTokenRequest()), "role"),
        (lambda: admin.create_token("reader", name="x" * 300), "name"),
        # printed by `sealtrail-server token list` to an operator's terminal
        (lambda: admin.create_token("reader", name="\x1b]0;owned\x07ops"), "name"),
    ):
        with pytest.raises(InvalidArgumentError) as refused:
            call()
        assert field in str(refused.value)


def test_token_pages_cover_every_token_once(client_for: Any, tenant: str) -> None:
    admin = client_for(tenant)
    ids = {admin.create_token("reader", name=f"t{i}").token.token_id for i in range(7)}
    seen: list[str] = []
    request = access_pb2.ListTokensRequest(page_size=3)
    while True:
        page = admin._call(admin._stub.ListTokens, request)
        assert len(page.tokens) <= 3
        seen.extend(t.token_id for t in page.tokens)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert ids <= set(seen) and len(seen) == len(set(seen)) == 8  # and the admin's own


def test_token_pages_tell_nothing_of_other_tenants(client_for: Any, tenant: str) -> None:
    """A page token's payload is signed, not hidden: it held the last
    token's serial, one counter for every tenant, so a tenant's admin counted
    the tokens other tenants created between two of its own (helper-151). It
    holds the id of the last token the page listed, which the page showed."""
    admin, other = client_for(tenant), client_for(f"{tenant}-other")
    for _ in range(5):  # after the admin's own token
        other.create_token("reader")
    admin.create_token("reader")
    admin.create_token("reader")
    places, listed = [], []
    request = access_pb2.ListTokensRequest(page_size=1)
    while (page := admin._call(admin._stub.ListTokens, request)).next_page_token:
        payload = page.next_page_token.partition(".")[0] + "=="
        places.append(json.loads(base64.urlsafe_b64decode(payload))["k"])
        listed.append([page.tokens[-1].token_id])
        request.page_token = page.next_page_token
    assert places == listed  # after its first token, then its second: nothing else


def test_a_token_listing_in_progress_repeats_nothing_committed_out_of_serial_order(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A token's serial is taken when its row is written, not when it
    commits: one created as a listing began, committed after a later one, came
    to be listed before it. A page token held a count of the tokens listed, so
    the next page began one token early and listed again the last one of the
    page before. A page now begins after the last token it listed: tokens
    created meanwhile, wherever their serial falls, repeat nothing."""
    admin = client_for(tenant)
    listed_first = [admin.create_token("reader", name="b").token.token_id]
    with sql.transaction():
        # A creation in flight: its serial taken, its row not yet committed.
        sql.execute(
            "INSERT INTO api_tokens (tenant_id, token_id, secret_sha256, role)"
            " VALUES (%s, %s, %s, 'reader')",
            [tenant, str(uuid.uuid4()), uuid.uuid4().bytes],
        )
        listed_first += [admin.create_token("reader", name=n).token.token_id for n in "yz"]
        first = admin._call(admin._stub.ListTokens, access_pb2.ListTokensRequest(page_size=3))
    created_between = admin.create_token("reader", name="w").token.token_id
    seen = [t.token_id for t in first.tokens]
    request = access_pb2.ListTokensRequest(page_size=3, page_token=first.next_page_token)
    while True:
        page = admin._call(admin._stub.ListTokens, request)
        seen.extend(t.token_id for t in page.tokens)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert len(seen) == len(set(seen)), f"listed twice: {seen}"
    assert set(listed_first) | {created_between} <= set(seen)


def test_a_page_of_tokens_reads_its_own_rows_not_those_before_it(
    tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A page of ListTokens skipped the tokens before it (OFFSET): the
    hundredth page of a tenant's tokens read all 10,000 before it. Explained
    as the service runs it, a page reads the rows it answers and one more."""
    ids = [str(uuid.uuid4()) for _ in range(2500)]
    with sql.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO api_tokens (tenant_id, token_id, secret_sha256, role)"
            " VALUES (%s, %s, %s, 'reader')",
            [(tenant, token_id, uuid.UUID(token_id).bytes) for token_id in ids],
        )
    sql.execute("ANALYZE api_tokens")
    statement, params = tokens_statement(tenant, after=ids[999], limit=101)
    sql.execute("SET enable_seqscan = off")  # as the service's connections
    plan = [line for (line,) in sql.execute(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, params  # type: ignore[operator]
    )]  # fmt: skip
    sql.execute("RESET enable_seqscan")
    read = [int(line.split("actual rows=")[1].split()[0]) for line in plan if "rows=" in line]
    assert max(read) <= 101, "\n".join(plan)
    assert not any("Sort" in line for line in plan), "\n".join(plan)
    assert [row[0] for row in sql.execute(statement, params)] == ids[1000:1101]  # type: ignore[arg-type]
