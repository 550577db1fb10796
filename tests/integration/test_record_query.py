"""Record, RecordBatch, GetEvent and Query through a real server and database."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import descriptor_pool, json_format
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from sealtrail import (
    AlreadyExistsError,
    AuditClient,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RpcFailedError,
    UnauthenticatedError,
    build_event,
    build_filter,
    message_to_dict,
)
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc, event_pb2
from sealtrail_server.domain.access import Role
from sealtrail_server.domain.event_ids import event_id_minter, received_within
from sealtrail_server.store import appender as appender_module
from sealtrail_server.store.events import _GET_EVENT_RECEIVED
from tests.conftest import ServerThread

REQUEST_ID = "8f14e45f-ceea-467f-a9f3-8d0c9e6c2a11"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
OCCURRED = datetime(2026, 11, 20, 9, 30, 15, 123456, tzinfo=UTC)
NOV_2 = datetime(2026, 11, 2, tzinfo=UTC)


def full_event(**overrides: object) -> event_pb2.Event:
    fields: dict[str, object] = {
        "action": "api_key.create",
        "occurred_at": OCCURRED,
        "category": "security",
        "severity": "warning",
        "outcome": "success",
        "description": "Alice created the API key ci-deploy",
        "actor_type": "user",
        "actor_id": "user_42",
        "actor_email": "alice@example.com",
        "actor_display_name": "Alice Example",
        "resource_type": "api_key",
        "resource_id": "key_7",
        "resource_name": "ci-deploy",
        "changes": [("scopes", None, ["read", "write"]), ("expires_in_days", 30, 90)],
        "details": {"environment": "production", "ttl": 90, "ratio": 0.5, "tags": ["a", "b"]},
        "ip": "203.0.113.9",
        "user_agent": "curl/8.5.0",
        "country": "NL",
        "request_id": REQUEST_ID,
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "idempotency_key": f"key-{uuid.uuid4()}",
    }
    fields.update(overrides)
    return build_event(**fields)  # type: ignore[arg-type]


def test_record_round_trips_every_field(client: AuditClient, tenant: str) -> None:
    sent = full_event()
    result = client.record(sent)
    stored = result.event

    assert not result.deduplicated
    assert uuid.UUID(stored.id).version == 7
    assert stored.seq == 1
    assert stored.tenant_id == tenant
    assert stored.received_at.seconds > 0
    # Every caller field comes back as sent.
    for name in ("action", "category", "severity", "outcome", "description", "idempotency_key"):
        assert getattr(stored, name) == getattr(sent, name), name
    assert stored.occurred_at == sent.occurred_at
    assert stored.actor == sent.actor
    assert stored.resource == sent.resource
    assert list(stored.changes) == list(sent.changes)
    assert stored.details == sent.details
    # ... and the server says the country is the caller's (output only).
    assert stored.context.country_source == event_pb2.COUNTRY_SOURCE_CALLER
    as_sent = event_pb2.RequestContext()
    as_sent.CopyFrom(stored.context)
    as_sent.ClearField("country_source")
    assert as_sent == sent.context

    [queried] = list(client.query())  # before GetEvent, whose read is recorded
    assert queried == stored
    assert client.get_event(stored.id) == stored


def test_leaf_hash_is_over_the_stored_canonical_record(
    client: AuditClient, tenant: str, sql: object
) -> None:
    stored = client.record(full_event()).event
    record, leaf = sql.execute(  # type: ignore[attr-defined]
        "SELECT record, leaf_hash FROM events WHERE tenant_id = %s AND seq = 1", [tenant]
    ).fetchone()
    assert bytes(leaf) == stored.leaf_hash == hashlib.sha256(b"\x00" + record.encode()).digest()
    parsed = json.loads(record)
    # RFC 8785: sorted keys, no whitespace, integral numbers without a fraction.
    assert record == json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert parsed["details"]["ttl"] == 90 and '"ttl":90' in record
    assert parsed["tenant_id"] == tenant and parsed["seq"] == 1 and parsed["v"] == 1


# Whole numbers, a fraction, the bounds a client takes (±2^53, as a double holds
# them exactly) and just inside, nested, and in a change.
NUMBERS = {
    "trigger_seq": 83,
    "ratio": 0.5,
    "edge": 2**53 - 1,
    "top": 2**53,
    "bottom": -(2**53),
    "deep": [{"n": -2}],
}


def test_whole_numbers_in_details_read_back_as_integers_as_exports_write_them(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A google.protobuf.Value holds every number as a double, and
    MessageToDict wrote `trigger_seq: 83.0`, where exports and sinks (the
    stored record) write 83: `message_to_dict` writes them as the record does
    (helper-165); ±2^53 too, which it kept as floats (helper-197)."""
    stored = client.record(
        build_event(action="a.b", actor_id="u", details=NUMBERS, changes=[("n", 1, 2)])
    ).event
    read = message_to_dict(stored)
    [record] = sql.execute(
        "SELECT record FROM events WHERE tenant_id = %s AND id = %s", [tenant, stored.id]
    ).fetchone()  # type: ignore[misc]
    assert json.dumps(read["details"], sort_keys=True, separators=(",", ":")) == json.dumps(
        json.loads(record)["details"], sort_keys=True, separators=(",", ":")
    )
    assert read["details"]["trigger_seq"] == 83 and type(read["details"]["trigger_seq"]) is int
    assert read["details"]["deep"] == [{"n": -2}] and type(read["details"]["ratio"]) is float
    assert [type(read["details"][bound]) for bound in ("top", "bottom")] == [int, int]
    assert read["changes"] == [{"field": "n", "before": 1, "after": 2}]
    assert read["seq"] == str(stored.seq)  # otherwise as MessageToDict writes it


def test_the_answer_to_record_is_the_event_as_stored(client: AuditClient) -> None:
    """Responses are built from the request; they must match what reads return."""
    normalised = full_event(
        trace_id=TRACE_ID.upper(),
        span_id=SPAN_ID.upper(),
        request_id=REQUEST_ID.upper(),
        ip="2001:DB8::1",
        country="nl",
        details={"n": 30.0, "half": 0.5, "none": None, "big": 1e300, "nested": {"l": [1, "x"]}},
        changes=[("limit", 10.0, None)],
    )
    normalised.occurred_at.nanos = 123_456_789
    normalised.severity, normalised.outcome = 0, 0
    normalised.actor.type = 0
    defaulted = event_pb2.Event(action="member.invite", actor=event_pb2.Actor(id="u1"))

    answers = [client.record(normalised).event, client.record(defaulted).event]
    answers += [r.event for r in client.record_batch([full_event(ip="::FFFF:1.2.3.4"), defaulted])]
    for answer in answers:
        assert answer is not None
        assert client.get_event(answer.id) == answer
    assert answers[0].occurred_at.nanos == 123_456_000
    assert answers[0].context.trace_id == TRACE_ID
    assert answers[0].context.country == "NL"
    # Query shows each from the view stored beside its record, GetEvent from
    # the record itself (ADR 0022, 0025): the same events.
    shown = client.query(build_filter(actions=["api_key.create", "member.invite"]), order="oldest")
    assert list(shown) == answers


def test_defaults_fill_severity_outcome_actor_type_and_time(client: AuditClient) -> None:
    before = datetime.now(UTC)
    raw = event_pb2.Event(action="member.invite", actor=event_pb2.Actor(id="u1"))
    stored = client.record(raw).event
    assert stored.severity == event_pb2.SEVERITY_INFO
    assert stored.outcome == event_pb2.OUTCOME_SUCCESS
    assert stored.actor.type == event_pb2.ACTOR_TYPE_USER
    assert stored.category == event_pb2.CATEGORY_UNSPECIFIED
    assert stored.occurred_at.ToDatetime(UTC) >= before - timedelta(seconds=1)


def test_output_only_fields_of_the_request_are_ignored(client: AuditClient, tenant: str) -> None:
    sent = full_event()
    sent.id, sent.seq, sent.tenant_id = str(uuid.uuid4()), 999, "someone-else"
    sent.leaf_hash = b"\x01" * 32
    stored = client.record(sent).event
    assert (stored.seq, stored.tenant_id) == (1, tenant)
    assert stored.id != sent.id and stored.leaf_hash != sent.leaf_hash


def _varint(number: int) -> bytes:
    encoded = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        encoded.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(encoded)


# Fields a newer client may send that this server's proto has no number for: a
# number (field 20000) and a text (field 20001), appended to a message's bytes.
UNKNOWN_FIELDS = _varint(20000 << 3) + _varint(7) + _varint(20001 << 3 | 2) + _varint(5) + b"newer"


def test_fields_the_server_does_not_know_are_dropped_and_the_event_recorded(
    client: AuditClient, server: ServerThread, tenant: str
) -> None:
    """What docs/api.md (Compatibility) promises a newer client: fields this
    server does not know, in the request, the event or a message in it, are
    not refused but dropped; the event is recorded of the fields it knows,
    and is the same event as one sent without them (a retry by an older
    client is a repeat, not ALREADY_EXISTS)."""
    plain = full_event()
    newer = event_pb2.Event.FromString(plain.SerializeToString() + UNKNOWN_FIELDS)
    newer.context.CopyFrom(
        event_pb2.RequestContext.FromString(plain.context.SerializeToString() + UNKNOWN_FIELDS)
    )
    assert newer.SerializeToString().count(UNKNOWN_FIELDS) == 2  # sent, as a newer client would
    first = client.record(newer)
    assert not first.deduplicated
    again = client.record(plain)
    assert again.deduplicated and again.event == first.event
    [batched] = client.record_batch([newer])
    assert batched.deduplicated and batched.event == first.event
    stored = client.get_event(first.event.id)
    assert stored == first.event and b"newer" not in stored.SerializeToString()
    assert (stored.action, stored.context.ip) == (plain.action, plain.context.ip)

    request = audit_service_pb2.RecordRequest.FromString(
        audit_service_pb2.RecordRequest(event=full_event()).SerializeToString() + UNKNOWN_FIELDS
    )
    with grpc.insecure_channel(server.target) as channel:
        answer = audit_service_pb2_grpc.AuditLogServiceStub(channel).Record(
            request, metadata=(("authorization", f"Bearer {server.token(tenant)}"),), timeout=30
        )
    assert answer.event.action == "api_key.create" and answer.event.id != first.event.id


def test_reflection_describes_the_fields_this_server_knows(server: ServerThread) -> None:
    """How a newer client learns whether a server takes a field (docs/api.md,
    Compatibility): the server's reflection gives the messages it was built
    with, field by field."""
    with grpc.insecure_channel(server.target) as channel:
        described = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        event = described.FindMessageTypeByName("sealtrail.v1.Event")
        assert {(f.name, f.number) for f in event.fields} == {
            (f.name, f.number) for f in event_pb2.Event.DESCRIPTOR.fields
        }
        assert "context" in event.fields_by_name and 20000 not in event.fields_by_number


def test_repeated_idempotency_key_returns_the_original(client: AuditClient) -> None:
    sent = full_event()
    first = client.record(sent)
    again = client.record(sent)
    assert again.deduplicated and not first.deduplicated
    assert again.event == first.event
    assert len(list(client.query())) == 1


def test_an_event_sent_again_under_the_callers_key_without_a_time_is_the_same(
    client: AuditClient,
) -> None:
    """Another run of a script that records its deploy under its own key, no
    time given: the client stamped each call's time, so the second run was
    another event under that key (ALREADY_EXISTS). It is the same event now,
    at the time the service first received it; a time given again is
    compared as given."""
    deploy = build_event(action="deploy.finish", actor_id="ci", idempotency_key="deploy-42")
    first = client.record(deploy)
    time.sleep(0.01)  # the repeat comes later
    again = client.record(deploy)
    assert again.deduplicated and again.event == first.event
    batch = client.record_batch([deploy])
    assert batch[0].deduplicated and batch[0].event == first.event
    later = event_pb2.Event()
    later.CopyFrom(deploy)
    later.occurred_at.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(AlreadyExistsError):
        client.record(later)


def test_idempotency_key_reused_for_another_event_is_refused(client: AuditClient) -> None:
    sent = full_event()
    client.record(sent)
    with pytest.raises(AlreadyExistsError) as caught:
        client.record(full_event(idempotency_key=sent.idempotency_key, description="other"))
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    # true is not 1, though Python's == holds True == 1.
    at = datetime.now(UTC)

    def admin(flag: object) -> event_pb2.Event:
        return build_event(
            action="a.b", actor_id="u", idempotency_key="k-bool", details={"admin": flag}
        )

    first = admin(1)
    first.occurred_at.FromDatetime(at)
    assert not client.record(first).deduplicated
    assert client.record(first).deduplicated
    second = admin(True)
    second.occurred_at.FromDatetime(at)
    with pytest.raises(AlreadyExistsError):
        client.record(second)


@pytest.mark.parametrize("number", [1e20, 2.0**60, -(2.0**53), 9.007199254740993e15, 1e300])
def test_an_event_with_a_number_past_2_53_sent_again_is_the_same(
    client: AuditClient, number: float
) -> None:
    """Stored as digits (RFC 8785 writes 1e20 as 100000000000000000000), such a
    number was read back as an int that RFC 8785 refuses: every repeat of the
    event failed, and with it every call committed in the same batch
    (helper-120)."""
    sent = build_event(
        action="quota.set", actor_id="u", idempotency_key="k-big", details={"bytes": number}
    )
    sent.occurred_at.FromDatetime(datetime.now(UTC))
    first = client.record(sent)
    again = client.record(sent)
    assert again.deduplicated and again.event == first.event
    other = build_event(action="quota.set", actor_id="u", details={"bytes": number + 1})
    results = client.record_batch([other, sent])
    assert [r.error for r in results] == [None, None]
    assert results[1].deduplicated and results[1].event == first.event
    changed = event_pb2.Event()
    changed.CopyFrom(sent)
    changed.details["bytes"] = number * 2
    with pytest.raises(AlreadyExistsError):
        client.record(changed)


def test_a_repeat_that_cannot_be_compared_fails_alone(
    client: AuditClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug comparing a repeated event with its first fails that event
    (INTERNAL, as any bug), not every call committed beside it."""
    repeated = full_event()
    client.record(repeated)

    def broken(*args: Any) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(appender_module, "repeated_key_outcome", broken)
    results = client.record_batch([full_event(action="member.invite"), repeated])
    assert results[0].error is None and results[0].event is not None
    assert isinstance(results[1].error, RpcFailedError)
    assert results[1].error.code == grpc.StatusCode.INTERNAL


def test_record_batch_answers_each_entry_in_order(client: AuditClient) -> None:
    duplicate = full_event()
    client.record(duplicate)
    entries = [
        full_event(action="member.invite"),
        event_pb2.Event(action="Not An Action", actor=event_pb2.Actor(id="u")),
        duplicate,
        full_event(action="member.remove"),
    ]
    results = client.record_batch(entries)

    assert [r.error is None for r in results] == [True, False, True, True]
    assert results[0].event is not None and results[0].event.seq == 2
    assert results[3].event is not None and results[3].event.seq == 3
    assert results[2].deduplicated and results[2].event is not None
    assert results[2].event.seq == 1
    error = results[1].error
    assert isinstance(error, InvalidArgumentError)
    assert [field for field, _ in error.field_violations] == ["events[1].action"]
    assert [e.action for e in client.query(order="oldest")] == [
        "api_key.create",
        "member.invite",
        "member.remove",
    ]


def test_record_batch_with_the_same_new_key_twice_stores_it_once(client: AuditClient) -> None:
    event = full_event()
    results = client.record_batch([event, event])
    assert results[0].event == results[1].event
    assert [r.deduplicated for r in results] == [False, True]
    assert len(list(client.query())) == 1


def test_get_event_of_another_tenant_is_not_found(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    mine = client_for(tenant)
    theirs = client_for(f"{tenant}-other")
    stored = mine.record(full_event()).event
    with pytest.raises(NotFoundError) as foreign:
        theirs.get_event(stored.id)
    with pytest.raises(NotFoundError) as absent:
        theirs.get_event(str(uuid.uuid4()))
    assert foreign.value.code == absent.value.code == grpc.StatusCode.NOT_FOUND
    assert foreign.value.reason == absent.value.reason
    # Their log holds only their own reads: the attempts, recorded (ADR 0040).
    assert [event.action for event in theirs.query()] == ["audit_log.read_by_key"]


def test_get_event_reads_the_one_partition_its_id_names(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """An id names the millisecond its event was received, so the lookup is
    pruned to that month's partition (ADR 0031), not one probe per month kept."""
    stored = client.record(full_event()).event
    window = received_within(stored.id)
    assert window is not None
    assert window[0] <= stored.received_at.ToDatetime(UTC) < window[1]
    params = {
        "tenant": tenant,
        "id": stored.id,
        "received_from": window[0],
        "received_until": window[1],
    }
    explain = "EXPLAIN " + _GET_EVENT_RECEIVED.as_string(sql)
    plan = "\n".join(row[0] for row in sql.execute(explain, params))
    assert set(re.findall(r"events_(?:\d{4}_\d{2}|default)", plan)) == {
        f"events_{window[0]:%Y_%m}"
    }, plan
    assert client.get_event(stored.id) == stored


def test_get_event_finds_an_event_whose_id_names_another_time(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Ids minted before they named the received time (from another clock)
    are looked for in every partition."""
    stored = client.record(full_event()).event
    elsewhen = event_id_minter(datetime(2020, 1, 1, tzinfo=UTC))()
    sql.execute("SET session_replication_role = replica")  # past the refusal of UPDATE
    # Its row and its record name the id alike, as such an event's do: an id
    # column naming another record is refused (helper-219).
    (record,) = sql.execute(
        "SELECT record FROM events WHERE tenant_id = %s AND seq = %s", [tenant, stored.seq]
    ).fetchone()  # type: ignore[misc]
    record = record.replace(f'"id":"{stored.id}"', f'"id":"{elsewhen}"')
    leaf = hashlib.sha256(b"\x00" + record.encode()).digest()
    sql.execute(
        "UPDATE events SET id = %s, record = %s, leaf_hash = %s WHERE tenant_id = %s AND seq = %s",
        [elsewhen, record, leaf, tenant, stored.seq],
    )
    expected = event_pb2.Event()
    expected.CopyFrom(stored)
    expected.id, expected.leaf_hash = elsewhen, leaf
    assert client.get_event(elsewhen) == expected
    with pytest.raises(NotFoundError):
        client.get_event(stored.id)


def test_tenants_have_separate_logs(client_for: Callable[..., AuditClient], tenant: str) -> None:
    a, b = client_for(f"{tenant}-a"), client_for(f"{tenant}-b")
    assert [a.record(full_event()).event.seq for _ in range(3)] == [1, 2, 3]
    assert b.record(full_event()).event.seq == 1
    assert {e.tenant_id for e in a.query()} == {f"{tenant}-a"}
    assert len(list(b.query())) == 1


@pytest.fixture
def populated(client: AuditClient) -> dict[str, event_pb2.Event]:
    """A small log with one distinguishing value per filter field."""
    base = datetime(2026, 11, 1, tzinfo=UTC)
    specs = {
        "create": dict(action="api_key.create", category="security", severity="info"),
        "rotate": dict(action="api_key.rotate", category="security", severity="critical"),
        "invite": dict(
            action="member.invite",
            category="member",
            outcome="denied",
            actor_id="bob",
            actor_email="bob@example.com",
            resource_type="member",
            resource_id="m_9",
            description="Invitation refused for contractor",
            details={"reason": "domain not allowed", "attempts": 3},
        ),
        "login": dict(
            action="session.login",
            category="authentication",
            outcome="failure",
            severity="warning",
            request_id="0c1f6b2e-3f5a-4c8d-9e7f-112233445566",
            trace_id="0af7651916cd43dd8448eb211c80319c",
        ),
    }
    stored = {}
    for index, (name, spec) in enumerate(specs.items()):
        fields = {
            "actor_id": "alice",
            "actor_email": "alice@example.com",
            "occurred_at": base + timedelta(days=index),
            "resource_type": "api_key",
            "resource_id": "key_1",
            **spec,
        }
        stored[name] = client.record(**fields).event  # type: ignore[arg-type]
    return stored


@pytest.mark.parametrize(
    ("filter_fields", "expected"),
    [
        ({}, ["login", "invite", "rotate", "create"]),
        ({"actions": "api_key.create"}, ["create"]),
        ({"actions": "api_key.*"}, ["rotate", "create"]),
        ({"actions": ["member.invite", "session.*"]}, ["login", "invite"]),
        ({"categories": ["member", "authentication"]}, ["login", "invite"]),
        ({"min_severity": "warning"}, ["login", "rotate"]),
        ({"min_severity": "critical"}, ["rotate"]),
        ({"outcomes": ["denied", "failure"]}, ["login", "invite"]),
        ({"actor": "bob"}, ["invite"]),
        ({"actor": "bob@example.com"}, ["invite"]),
        ({"resource_type": "member"}, ["invite"]),
        ({"resource_type": "api_key", "resource_id": "key_1"}, ["login", "rotate", "create"]),
        ({"resource_id": "m_9"}, ["invite"]),
        ({"request_id": "0C1F6B2E-3F5A-4C8D-9E7F-112233445566"}, ["login"]),
        ({"trace_id": "0af7651916cd43dd8448eb211c80319c"}, ["login"]),
        ({"text": "contractor"}, ["invite"]),
        ({"text": "domain allowed"}, ["invite"]),
        ({"text": "3"}, ["invite"]),
        ({"text": "nothing-matches-this"}, []),
        ({"since": NOV_2}, ["login", "invite", "rotate"]),
        ({"until": NOV_2}, ["create"]),
        ({"since": NOV_2, "until": NOV_2 + timedelta(days=2)}, ["invite", "rotate"]),
        ({"actions": "api_key.*", "min_severity": "critical"}, ["rotate"]),
    ],
)
def test_every_filter_field_selects_exactly_its_events(
    client: AuditClient,
    populated: dict[str, event_pb2.Event],
    filter_fields: dict[str, object],
    expected: list[str],
) -> None:
    names = {event.id: name for name, event in populated.items()}
    found = client.query(build_filter(**filter_fields))  # type: ignore[arg-type]
    assert [names[event.id] for event in found] == expected


def test_a_filter_as_wide_as_time_is_answered(client: AuditClient, tmp_path: Path) -> None:
    """The earliest and latest times a Timestamp holds (a client's "everything")
    bound a filter as any others do: in a Query, an Export and a stream."""
    seq = client.record(action="doc.edit", actor_id="u").event.seq
    everything = build_filter(
        since=datetime(1, 1, 1, 0, 1, tzinfo=UTC), until=datetime(9999, 12, 31, tzinfo=UTC)
    )
    assert seq in [event.seq for event in client.query(everything)]
    assert client.export(tmp_path / "all.ndjson", filter=everything).row_count >= 1
    stream = client.stream(everything, after_seq=seq - 1)
    assert next(stream).seq == seq
    stream.close()


def test_query_pages_cover_every_event_once_in_both_orders(client: AuditClient) -> None:
    client.record_batch([full_event(action="page.item") for _ in range(23)])
    newest = list(client.query(page_size=5))
    oldest = list(client.query(order="oldest", page_size=7))
    assert [e.seq for e in newest] == list(range(23, 0, -1))
    # each query recorded itself once, after its first page (seqs 24 and 25);
    # the second one's later pages saw both
    assert [e.seq for e in oldest] == list(range(1, 26))
    assert [e.action for e in oldest[-2:]] == ["audit_log.queried"] * 2


def test_page_tokens_end_with_an_empty_token_and_respect_page_size(client: AuditClient) -> None:
    client.record_batch([full_event(action="page.item") for _ in range(10)])
    first = client.query_page(page_size=4)
    assert [e.seq for e in first.events] == [10, 9, 8, 7] and first.next_page_token
    second = client.query_page(page_size=6, page_token=first.next_page_token)
    assert [e.seq for e in second.events] == [6, 5, 4, 3, 2, 1]
    assert second.next_page_token == ""


def test_page_size_defaults_to_50_and_caps_at_1000(client: AuditClient) -> None:
    client.record_batch([full_event(action="page.item") for _ in range(1000)])
    client.record_batch([full_event(action="page.item") for _ in range(5)])
    assert len(client.query_page(page_size=0).events) == 50
    capped = client.query_page(page_size=5000)
    assert len(capped.events) == 1000 and capped.next_page_token


def test_page_token_is_bound_to_filter_order_and_tenant(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    mine = client_for(tenant)
    mine.record_batch([full_event(action="page.item") for _ in range(5)])
    token = mine.query_page(page_size=2).next_page_token

    other_filter = build_filter(actions="page.item")
    with pytest.raises(InvalidArgumentError) as caught:
        mine.query_page(other_filter, page_size=2, page_token=token)
    assert caught.value.field_violations[0][0] == "page_token"
    with pytest.raises(InvalidArgumentError):
        mine.query_page(page_size=2, page_token=token, order="oldest")
    with pytest.raises(InvalidArgumentError):
        client_for(f"{tenant}-x").query_page(page_size=2, page_token=token)
    with pytest.raises(InvalidArgumentError):
        mine.query_page(page_size=2, page_token="not-a-token")


def test_json_mapping_of_a_stored_event_parses_back(client: AuditClient) -> None:
    stored = client.record(full_event()).event
    text = json_format.MessageToJson(stored)
    assert json_format.Parse(text, event_pb2.Event()) == stored


def test_missing_bad_and_revoked_tokens_are_unauthenticated(
    server: ServerThread, tenant: str
) -> None:
    from sealtrail_server.store.tokens import create_token, revoke_token

    issued = server.run(create_token(server.database, tenant_id=tenant, role=Role.ADMIN))
    assert server.run(revoke_token(server.database, token_id=issued.token_id, tenant_id=tenant))
    with (
        AuditClient(server.target, token=issued.secret, max_attempts=1) as revoked,
        pytest.raises(UnauthenticatedError),
    ):
        revoked.record(full_event())
    for token in ("", "stk_" + "A" * 43, "Basic xyz"):
        with (
            AuditClient(server.target, token=token, max_attempts=1) as anonymous,
            pytest.raises(UnauthenticatedError),
        ):
            anonymous.record(full_event())
    with grpc.insecure_channel(server.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Query(audit_service_pb2.QueryRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("recorder", {"record", "record_batch"}),
        ("reader", {"get_event", "query"}),
        ("admin", {"record", "record_batch", "get_event", "query"}),
    ],
)
def test_roles_allow_only_their_methods(
    client_for: Callable[..., AuditClient], tenant: str, role: str, allowed: set[str]
) -> None:
    seed = client_for(tenant).record(full_event()).event
    caller = client_for(tenant, role)
    calls = {
        "record": lambda: caller.record(full_event()),
        "record_batch": lambda: caller.record_batch([full_event()]),
        "get_event": lambda: caller.get_event(seed.id),
        "query": lambda: list(caller.query()),
    }
    for name, call in calls.items():
        if name in allowed:
            call()
        else:
            with pytest.raises(PermissionDeniedError):
                call()
