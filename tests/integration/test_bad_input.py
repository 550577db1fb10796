"""Every class of bad input gets INVALID_ARGUMENT naming the field, over the
wire, and nothing of a rejected request is written."""

from __future__ import annotations

from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from sealtrail import build_sink
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc, event_pb2, forwarding_pb2, integrity_pb2
from sealtrail_server.api.integrity import IntegrityRpcs
from sealtrail_server.domain.errors import FieldViolation, InvalidArgument
from sealtrail_server.domain.filters import FilterDraft, validate_filter
from sealtrail_server.domain.text_search import websearch_text
from tests.conftest import ServerThread, logged

# A webhook signing secret: "whsec_" and 32 bytes of base64.
WEBHOOK_SECRET = "whsec_" + "a2V5" * 11


@pytest.fixture
def call(server: ServerThread, tenant: str) -> Any:
    """Calls an RPC by name with the raw stub; returns the RpcError it raised."""
    channel = grpc.insecure_channel(server.target)
    stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
    metadata = (("authorization", f"Bearer {server.token(tenant)}"),)

    def invoke(method: str, request: Any) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            getattr(stub, method)(request, metadata=metadata, timeout=30)
        return caught.value

    yield invoke
    channel.close()


def _bad_request(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The field violations of an INVALID_ARGUMENT answer's BadRequest."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    [details] = [v for k, v in error.trailing_metadata() if k == "grpc-status-details-bin"]
    bad = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad) for detail in status_pb2.Status.FromString(details).details)
    return [(v.field, v.description) for v in bad.field_violations]


def violations(error: grpc.RpcError) -> list[str]:
    return [field for field, _ in _bad_request(error)]


def valid_event(**changes: Any) -> event_pb2.Event:
    event = event_pb2.Event(action="api_key.create", actor=event_pb2.Actor(id="u_1"))
    for name, value in changes.items():
        target, _, attribute = name.rpartition("__")
        setattr(getattr(event, target) if target else event, attribute, value)
    return event


def nested_lists(depth: int) -> struct_pb2.Struct:
    """details = {"x": [[[...]]]} with `depth` lists: lists nest at two parser
    levels each, so they can exceed the 32-level limit within the parser's 100."""
    root = struct_pb2.Struct()
    value = root.fields["x"]
    for _ in range(depth):
        value = value.list_value.values.add()
    value.string_value = "deep"
    return root


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, encoded by hand."""
    tag, length = (number << 3) | 2, len(payload)
    encoded = bytearray([tag])
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(encoded) + payload


def record_request_nested(depth: int) -> bytes:
    """RecordRequest bytes whose details nest `depth` Structs: deeper than the
    protobuf parser accepts, so no message object can hold it."""
    struct = b""
    for _ in range(depth):
        value = _field(5, struct)  # Value.struct_value
        struct = _field(1, _field(1, b"x") + _field(2, value))  # Struct.fields entry
    event = _field(5, b"a.b") + _field(10, _field(2, b"u")) + _field(13, struct)
    return _field(1, event)


BAD_EVENTS: list[tuple[str, event_pb2.Event, str]] = [
    ("missing action", valid_event(action=""), "event.action"),
    ("malformed action", valid_event(action="DeleteUser"), "event.action"),
    ("action without verb", valid_event(action="user"), "event.action"),
    ("over-long action", valid_event(action="a." + "b" * 200), "event.action"),
    ("missing actor id", valid_event(actor__id=""), "event.actor.id"),
    ("unknown category", valid_event(category=42), "event.category"),
    ("unknown severity", valid_event(severity=9), "event.severity"),
    ("unknown outcome", valid_event(outcome=7), "event.outcome"),
    ("unknown actor type", valid_event(actor__type=5), "event.actor.type"),
    ("bad email", valid_event(actor__email="not-an-email"), "event.actor.email"),
    ("over-long description", valid_event(description="x" * 5000), "event.description"),
    ("NUL in description", valid_event(description="a\x00b"), "event.description"),
    ("bad ip", valid_event(context__ip="999.1.1.1"), "event.context.ip"),
    ("bad country", valid_event(context__country="FRA"), "event.context.country"),
    ("bad request id", valid_event(context__request_id="req-1"), "event.context.request_id"),
    ("bad trace id", valid_event(context__trace_id="xyz"), "event.context.trace_id"),
    ("zero trace id", valid_event(context__trace_id="0" * 32), "event.context.trace_id"),
    ("bad span id", valid_event(context__span_id="abc"), "event.context.span_id"),
    (
        "over-long idempotency key",
        valid_event(idempotency_key="k" * 200),
        "event.idempotency_key",
    ),
]


@pytest.mark.parametrize(("name", "event", "field"), BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_bad_event_field_is_named(
    call: Any, sql: psycopg.Connection[Any], tenant: str, name: str, event: Any, field: str
) -> None:
    assert violations(call("Record", pb.RecordRequest(event=event))) == [field]
    assert _rows(sql, tenant) == 0


def test_future_occurred_at_is_rejected(call: Any) -> None:
    event = valid_event()
    event.occurred_at.GetCurrentTime()
    event.occurred_at.seconds += 6 * 60
    assert violations(call("Record", pb.RecordRequest(event=event))) == ["event.occurred_at"]


def test_invalid_timestamp_is_rejected(call: Any) -> None:
    event = valid_event()
    event.occurred_at.CopyFrom(timestamp_pb2.Timestamp(seconds=-5))
    assert violations(call("Record", pb.RecordRequest(event=event))) == ["event.occurred_at"]


def test_details_too_deep_or_not_finite_are_rejected(call: Any) -> None:
    deep = valid_event()
    deep.details.CopyFrom(nested_lists(40))
    [field] = violations(call("Record", pb.RecordRequest(event=deep)))
    assert field.startswith("event.details.x")

    infinite = valid_event()
    infinite.details.fields["ratio"].number_value = float("inf")
    assert violations(call("Record", pb.RecordRequest(event=infinite))) == ["event.details.ratio"]


def test_a_detail_without_a_value_is_rejected(call: Any) -> None:
    event = valid_event()
    event.details.fields["empty"].Clear()  # a Value with none of its kinds set
    assert violations(call("Record", pb.RecordRequest(event=event))) == ["event.details.empty"]


def test_a_bad_value_under_a_key_with_a_dot_or_no_name_is_named_unambiguously(
    call: Any, server: ServerThread, tenant: str
) -> None:
    """A bad value's path wrote each key after a `.`: the key `a.b` read as
    `a` then `b` (`events[0].details.a.b.c` for either tree), and the empty
    key left a dangling `.`. Keys a plain `.` cannot carry are written in
    backticks, a backtick in them doubled (AIP-161's map keys)."""
    dotted, nested, empty, quoted = (valid_event() for _ in range(4))
    dotted.details.update({"a.b": {"c": float("nan")}})
    nested.details.update({"a": {"b": {"c": float("nan")}}})
    empty.details.update({"": [float("inf")]})
    quoted.details.update({"`x[0]`": float("inf")})
    with grpc.insecure_channel(server.target) as channel:
        answer = audit_service_pb2_grpc.AuditLogServiceStub(channel).RecordBatch(
            pb.RecordBatchRequest(events=[dotted, nested, empty, quoted]),
            metadata=(("authorization", f"Bearer {server.token(tenant)}"),),
            timeout=30,
        )
    assert [[v.field for v in r.error.field_violations] for r in answer.results] == [
        ["events[0].details.`a.b`.c"],
        ["events[1].details.a.b.c"],
        ["events[2].details.``[0]"],
        ["events[3].details.```x[0]```"],
    ]
    change = valid_event()
    change.changes.add(field="f").before.struct_value.update({"x.y": float("nan")})
    assert violations(call("Record", pb.RecordRequest(event=change))) == [
        "event.changes[0].before.`x.y`"
    ]


def test_a_request_the_parser_refuses_is_invalid_argument_not_internal(
    server: ServerThread, tenant: str
) -> None:
    with grpc.insecure_channel(server.target) as channel:
        record = channel.unary_unary("/sealtrail.v1.AuditLogService/Record")
        metadata = (("authorization", f"Bearer {server.token(tenant)}"),)
        for payload in (record_request_nested(200), b"\xff\xff\xff"):
            with pytest.raises(grpc.RpcError) as caught:
                record(payload, metadata=metadata, timeout=30)
            assert violations(caught.value) == ["request"]


def test_text_that_is_not_utf8_is_refused_naming_its_field(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """No protobuf class builds such a request, any client sending bytes
    does: it was refused naming `request` (or `events[1]`) whatever the field."""
    marker = "~marker~"
    batch = pb.RecordBatchRequest(events=[valid_event(), valid_event(resource__id=marker)])
    query = pb.QueryRequest(filter=event_pb2.EventFilter(actions=["a.b", marker]))
    sent = {
        "Record": (pb.RecordRequest(event=valid_event(actor__id=marker)), "event.actor.id"),
        "RecordBatch": (batch, "events[1].resource.id"),
        "Query": (query, "filter.actions[1]"),
    }
    metadata = (("authorization", f"Bearer {server.token(tenant)}"),)
    with grpc.insecure_channel(server.target) as channel:
        for method, (request, field) in sent.items():
            payload = request.SerializeToString().replace(marker.encode(), b"ok\xc3\x28\xff\x80ok")
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary(f"/sealtrail.v1.AuditLogService/{method}")(
                    payload, metadata=metadata, timeout=30
                )
            assert violations(caught.value) == [field], method
    assert sql.execute("SELECT count(*) FROM events WHERE tenant_id = %s", [tenant]).fetchone() == (
        0,
    )


def test_record_over_64_kib_is_rejected_without_using_a_seq(
    call: Any, client: Any, sql: psycopg.Connection[Any], tenant: str
) -> None:
    big = valid_event()
    for i in range(20):
        big.details.fields[f"blob{i}"].string_value = "x" * 4000
    assert violations(call("Record", pb.RecordRequest(event=big))) == ["event"]
    assert _rows(sql, tenant) == 0
    assert client.record(valid_event()).event.seq == 1


def test_an_event_megabytes_large_is_refused_unread(
    call: Any, server: ServerThread, sql: psycopg.Connection[Any], tenant: str
) -> None:
    """Refused before it is read, redacted or canonicalised (which held up every
    call of the process for seconds); in a batch, that entry alone."""
    huge = valid_event(description="ok")
    huge.details.fields["blob"].string_value = "a." * 1_000_000 + "="
    error = call("Record", pb.RecordRequest(event=huge))
    assert violations(error) == ["event"]
    assert "as sent" in error.details()
    with grpc.insecure_channel(server.target) as channel:
        answer = audit_service_pb2_grpc.AuditLogServiceStub(channel).RecordBatch(
            pb.RecordBatchRequest(events=[valid_event(), huge]),
            metadata=(("authorization", f"Bearer {server.token(tenant)}"),),
            timeout=30,
        )
    kept, refused = answer.results
    assert kept.event.seq == 1
    assert [v.field for v in refused.error.field_violations] == ["events[1]"]
    assert _rows(sql, tenant) == 1


def test_hundreds_of_bad_fields_still_name_the_first(call: Any) -> None:
    """Violations are capped, each cut short: a client refuses trailers over
    16 KiB and would have reported RESOURCE_EXHAUSTED instead."""
    event = valid_event()
    for _ in range(300):
        event.changes.add(field="")
    key = "k" * 20_000
    event.details.fields[key].string_value = "\x00"
    error = call("Record", pb.RecordRequest(event=event))
    named = violations(error)
    assert 1 <= len(named) <= 20 and named[0].startswith("event.")
    assert "more" in error.details()


def test_every_violation_of_one_event_is_reported(call: Any) -> None:
    event = valid_event(action="", actor__id="", context__ip="nope")
    assert sorted(violations(call("Record", pb.RecordRequest(event=event)))) == [
        "event.action",
        "event.actor.id",
        "event.context.ip",
    ]


def test_a_field_wrong_in_two_ways_is_named_once_for_its_first_fault(
    call: Any, server: ServerThread, tenant: str
) -> None:
    """A text too long or holding a NUL was checked again for its form, and the
    field named twice (`event.action: is 5000 characters long; ...;
    event.action: must be dotted lowercase ...`), in a batch's entry errors
    too. Each field is named once, for what is wrong with it first."""
    event = valid_event(action="A" * 5000, actor__email="x\x00y", context__ip="1.2.3.4\x00")
    expected = [
        ("event.action", "is 5000 characters long; the limit is 128"),
        ("event.actor.email", "must not contain NUL characters"),
        ("event.context.ip", "must not contain NUL characters"),
    ]
    error = call("Record", pb.RecordRequest(event=event))
    assert _bad_request(error) == expected
    assert error.details().count("event.action") == 1
    with grpc.insecure_channel(server.target) as channel:
        answer = audit_service_pb2_grpc.AuditLogServiceStub(channel).RecordBatch(
            pb.RecordBatchRequest(events=[valid_event(), event]),
            metadata=(("authorization", f"Bearer {server.token(tenant)}"),),
            timeout=30,
        )
    _, refused = answer.results
    assert [(v.field, v.description) for v in refused.error.field_violations] == [
        (field.replace("event.", "events[1].", 1), text) for field, text in expected
    ]


def test_an_elasticsearch_index_too_long_is_named_once_for_its_length(call: Any) -> None:
    """Said to be no valid index name (lowercase, ...) and at most 256 characters."""
    sink = build_sink("elastic", "elasticsearch", url="https://127.0.0.1:9/", index="a" * 300)
    error = call("CreateSink", forwarding_pb2.CreateSinkRequest(sink=sink))
    assert _bad_request(error) == [
        ("sink.elasticsearch.index", "must be at most 255 bytes in UTF-8")
    ]


def test_batch_size_must_be_1_to_1000(call: Any, sql: psycopg.Connection[Any], tenant: str) -> None:
    assert violations(call("RecordBatch", pb.RecordBatchRequest())) == ["events"]
    too_many = pb.RecordBatchRequest(events=[valid_event() for _ in range(1001)])
    assert violations(call("RecordBatch", too_many)) == ["events"]
    assert _rows(sql, tenant) == 0


def test_get_event_needs_a_uuid(call: Any) -> None:
    assert violations(call("GetEvent", pb.GetEventRequest(id="not-a-uuid"))) == ["id"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.QueryRequest(page_size=-1), "page_size"),
        (pb.QueryRequest(order=17), "order"),
        (pb.QueryRequest(page_token="%%%"), "page_token"),
        (pb.QueryRequest(filter=event_pb2.EventFilter(actions=["Bad"])), "filter.actions[0]"),
        (pb.QueryRequest(filter=event_pb2.EventFilter(categories=[99])), "filter.categories[0]"),
        (pb.QueryRequest(filter=event_pb2.EventFilter(min_severity=12)), "filter.min_severity"),
        (pb.QueryRequest(filter=event_pb2.EventFilter(request_id="r1")), "filter.request_id"),
        (pb.QueryRequest(filter=event_pb2.EventFilter(trace_id="t1")), "filter.trace_id"),
        (pb.QueryRequest(filter=event_pb2.EventFilter(text="½ ² ①")), "filter.text"),
        (
            pb.QueryRequest(
                filter=event_pb2.EventFilter(
                    occurred_after=timestamp_pb2.Timestamp(seconds=200),
                    occurred_before=timestamp_pb2.Timestamp(seconds=100),
                )
            ),
            "filter.occurred_before",
        ),
    ],
)
def test_bad_query_fields_are_named(call: Any, request_: pb.QueryRequest, field: str) -> None:
    assert violations(call("Query", request_)) == [field]


# Each kind of character: letters of every case and script, decimal digits,
# letter numbers (Roman numerals), numbers that are neither (fractions,
# superscripts, circled), marks, punctuation and symbols.
TEXTS = [
    "a", "\u00df", "\u01c5", "\u02b0", "\u3005", "\u4e2d", "\u0915", "\u00aa", "\u00b5",
    "7", "\u0663", "\u0661\u0662", "\U0001d7d8", "\u216b", "\u2170", "\u3007",
    "\u00bd", "\u00b2", "\u2460", "\u3280", "x\u00b2", "\u00bd b",
    "\u0301", "a\u0301", "_", "!?", "\u2014", "\u20ac", "\U0001f600",
    # Quotes: a phrase's markup and entities are no words (PostgreSQL's parser
    # reads tags and entities in it); outside quotes they are.
    '"!?"', '"a "!" b"', '"unclosed', '"', '""', '"<b>"', "<b>", '"&amp;"', "&amp;",
    '"</b>" "&#65;" "&#x41;"', '"<b x=1>" -"<br/>"', '"<!-- x -->"', '"<!doctype html>"',
    '"<?xml version=1?>"', '"<b x=\'a b\'>"', '"<b>x"', '"<1>"', '"<\u00e9>"', '"< b>"',
    '"</ b>"', '"<b/ >"', '"<b x<y>"', '"<!x>"', '"<-b>"', '"&1;"', '"&#x;"', '"&#6a;"',
    '"&amp"', '"& amp;"', '"&a-b;"', '"&_a;"', '"<_b>"', '"<:b>"', '"<b-c.d>"',
    # A dash standing alone is no operator, and no word (websearch_text).
    "-", "- -", " -- ", 'a - "<b>"', '- "<b>"', '"<b>" - x', "x -",
]  # fmt: skip


@pytest.mark.parametrize("text", TEXTS)
def test_a_text_is_refused_exactly_when_the_search_finds_no_word_in_it(
    sql: psycopg.Connection[Any], text: str
) -> None:
    """A text of numbers that are not digits (½, ², ①) was accepted and
    matched nothing: PostgreSQL's parser makes no word of them (helper-153)."""
    searched = websearch_text(text)  # what the server hands PostgreSQL
    row = sql.execute(
        "SELECT numnode(websearch_to_tsquery('simple', %s)) > 0", [searched]
    ).fetchone()
    assert row is not None
    try:
        validate_filter(FilterDraft(text=text))
    except InvalidArgument as refused:
        assert refused.violations == [FieldViolation("filter.text", "has no word to search for")]
        assert not row[0], "refused, but PostgreSQL finds a word in it"
    else:
        assert row[0], "accepted, but PostgreSQL finds no word in it: it matches nothing"


def _rows(sql: psycopg.Connection[Any], tenant: str) -> int:
    row = sql.execute("SELECT count(*) FROM events WHERE tenant_id = %s", [tenant]).fetchone()
    assert row is not None
    return int(row[0])


def test_a_bug_answers_internal_without_its_text_and_logs_it(
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tenant: str,
) -> None:
    """gRPC answered an exception the server did not expect UNKNOWN, with its
    text (which may quote stored rows), and logged it outside the call's span."""

    async def broken(*args: Any) -> Any:
        raise RuntimeError("row (alice, hunter2) is odd")

    monkeypatch.setattr(IntegrityRpcs, "GetVerifierKeys", broken)
    running = ServerThread(migrated_database_url)
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetVerifierKeys(
                    integrity_pb2.GetVerifierKeysRequest(),
                    metadata=(("authorization", f"Bearer {running.token(tenant)}"),),
                    timeout=30,
                )
    finally:
        running.close()
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in error.details() and "request id" in error.details()
    assert dict(error.trailing_metadata())["x-request-id"]
    [said] = [
        r
        for r in logged(caplog, by="sealtrail_server.api.guard")
        if "failed unexpectedly" in r.getMessage()
    ]
    assert said.exc_info is not None and "hunter2" in str(said.exc_info[1])


def test_bad_fields_named_in_wide_characters_still_fit_a_clients_trailers(call: Any) -> None:
    """Characters were counted, not bytes: a hundred bad keys of CJK or emoji
    made 33-44 KB of trailers, which clients refuse."""
    event = valid_event()
    for n in range(100):
        event.details.fields["鍵" * 40 + "😀" * 20 + str(n)].string_value = "\x00"
    error = call("Record", pb.RecordRequest(event=event))
    assert violations(error)[0].startswith("event.details.")
    size = sum(len(k) + len(v) for k, v in error.trailing_metadata())
    assert size < 8 * 1024, size


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (timestamp_pb2.Timestamp(seconds=-(10**12)), timestamp_pb2.Timestamp(seconds=1), "start"),
        (timestamp_pb2.Timestamp(seconds=1), timestamp_pb2.Timestamp(seconds=10**12), "end"),
        (timestamp_pb2.Timestamp(seconds=1, nanos=-1), timestamp_pb2.Timestamp(seconds=2), "start"),
    ],
)
def test_a_replay_window_no_time_can_hold_names_its_field(
    call: Any,
    client_for: Any,
    tenant: str,
    start: timestamp_pb2.Timestamp,
    end: timestamp_pb2.Timestamp,
    field: str,
) -> None:
    """Timestamp.ToDatetime raised ValueError past year 9999 or for bad nanos: INTERNAL."""
    sink = client_for(tenant).create_sink(
        build_sink("replayed", "webhook", url="http://127.0.0.1:9/h", secrets=[WEBHOOK_SECRET])
    )
    request = forwarding_pb2.ReplaySinkRequest(
        sink_id=sink.sink.id, window=forwarding_pb2.TimeWindow(start_time=start, end_time=end)
    )
    assert violations(call("ReplaySink", request)) == [f"window.{field}_time"]


@pytest.mark.parametrize(
    ("first", "last", "field"),
    [(0, 5, "first_seq"), (-4, 5, "first_seq"), (5, 2, "last_seq")],
)
def test_a_replay_seq_range_no_log_has_names_its_field(
    call: Any, client_for: Any, tenant: str, first: int, last: int, field: str
) -> None:
    """Refused by the server, whatever the log holds; both clients refuse it
    first, at the call (tests/unit/test_client_stream.py)."""
    client = client_for(tenant)
    client.record(action="one.event", actor_id="u")
    sink = client.create_sink(
        build_sink("replayed", "webhook", url="http://127.0.0.1:9/h", secrets=[WEBHOOK_SECRET])
    )
    request = forwarding_pb2.ReplaySinkRequest(
        sink_id=sink.sink.id, seq_range=forwarding_pb2.SeqRange(first_seq=first, last_seq=last)
    )
    assert violations(call("ReplaySink", request)) == [f"seq_range.{field}"]
    with pytest.raises(ValueError, match=r"^seq_range\[[01]\]: must "):
        client.replay_sink(sink.sink.id, seq_range=(first, last))


def test_numbers_the_search_index_cannot_hold_are_refused_naming_details(
    call: Any, server: ServerThread, sql: psycopg.Connection[Any], tenant: str
) -> None:
    """The events table indexes details' numbers as PostgreSQL writes them out
    in full: 1e-300 is a word of 302 characters. 5,000 such numbers, a 64 KB
    record within every limit, made the database refuse the insert (`string is
    too long for tsvector`): the batch commit was undone and written again one
    by one, an error logged, and the caller told only `event: was refused by
    the database as invalid`. A number repeated is one word: kept."""
    tiny = valid_event()
    for i in range(5000):
        tiny.details.fields["n"].list_value.values.add().number_value = (1 + i) * 1e-300
    error = call("Record", pb.RecordRequest(event=tiny))
    assert violations(error) == ["event.details"]
    assert "as strings" in error.details()
    with grpc.insecure_channel(server.target) as channel:
        answer = audit_service_pb2_grpc.AuditLogServiceStub(channel).RecordBatch(
            pb.RecordBatchRequest(events=[valid_event(), tiny]),
            metadata=(("authorization", f"Bearer {server.token(tenant)}"),),
            timeout=30,
        )
    kept, refused = answer.results
    assert kept.event.seq == 1
    assert [v.field for v in refused.error.field_violations] == ["events[1].details"]
    assert _rows(sql, tenant) == 1
    repeated = valid_event()
    for _ in range(5000):
        repeated.details.fields["n"].list_value.values.add().number_value = 1e-300
    with grpc.insecure_channel(server.target) as channel:
        stored = audit_service_pb2_grpc.AuditLogServiceStub(channel).Record(
            pb.RecordRequest(event=repeated),
            metadata=(("authorization", f"Bearer {server.token(tenant)}"),),
            timeout=30,
        )
    assert stored.event.seq == 2
