"""Hostile input for every RPC, generated from the service's own descriptors:
random and boundary values in every field (unknown enum numbers, negative and
extreme integers, odd strings, timestamps out of range, deep and wide
details), garbage bytes where a request should be, and oversized values. The
server must answer every one with a status a client can act on (never
INTERNAL or UNKNOWN), stay healthy, and write nothing for a rejected Record.

CI runs a bounded number of examples per RPC; `make soak` sets
SEALTRAIL_HOSTILE_EXAMPLES for many more."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealtrail.v1 import audit_service_pb2
from tests.conftest import ServerThread, errors_logged

SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
EXAMPLES = int(os.environ.get("SEALTRAIL_HOSTILE_EXAMPLES", "25"))
# What a hostile request may get: anything but the server's own failure.
SERVER_FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
MAX_DEPTH = 4

F = descriptor.FieldDescriptor
INT32 = st.one_of(
    st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1)
)
INT64 = st.one_of(
    st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]), st.integers(-(2**63), 2**63 - 1)
)
UINT32 = st.one_of(st.sampled_from([0, 1, 2**32 - 1]), st.integers(0, 2**32 - 1))
UINT64 = st.one_of(st.sampled_from([0, 1, 2**64 - 1]), st.integers(0, 2**64 - 1))
TEXT = st.one_of(
    st.sampled_from(["", " ", "*", "a.b", "\x00", "é\u202e", "x" * 5000, "../../etc/passwd",
                     "00000000-0000-0000-0000-000000000000", "2026-11-30T00:00:00Z"]),
    st.text(max_size=40),
)  # fmt: skip
SCALARS: dict[int, st.SearchStrategy[Any]] = {
    F.TYPE_INT32: INT32, F.TYPE_SINT32: INT32, F.TYPE_SFIXED32: INT32,
    F.TYPE_INT64: INT64, F.TYPE_SINT64: INT64, F.TYPE_SFIXED64: INT64,
    F.TYPE_UINT32: UINT32, F.TYPE_FIXED32: UINT32,
    F.TYPE_UINT64: UINT64, F.TYPE_FIXED64: UINT64,
    F.TYPE_BOOL: st.booleans(),
    F.TYPE_DOUBLE: st.floats(), F.TYPE_FLOAT: st.floats(width=32),
    F.TYPE_STRING: TEXT,
    F.TYPE_BYTES: st.binary(max_size=80),
    F.TYPE_ENUM: INT32,  # known and unknown numbers alike
}  # fmt: skip


def _value(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    return SCALARS[field.type]


@st.composite
def _fill(draw: st.DrawFn, message_descriptor: descriptor.Descriptor, depth: int) -> Message:
    message = message_factory.GetMessageClass(message_descriptor)()
    if depth > MAX_DEPTH:
        return message
    for field in message_descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.is_repeated:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                key_field, value_field = (
                    field.message_type.fields_by_name["key"],
                    field.message_type.fields_by_name["value"],
                )
                for _ in range(draw(st.integers(0, 3))):
                    key = draw(SCALARS[key_field.type])
                    target = getattr(message, field.name)
                    if value_field.type == F.TYPE_MESSAGE:
                        target[key].CopyFrom(draw(_value(value_field, depth)))
                    else:
                        target[key] = draw(SCALARS[value_field.type])
                continue
            getattr(message, field.name).extend(draw(st.lists(_value(field, depth), max_size=3)))
        elif field.type == F.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(draw(_value(field, depth)))
        else:
            setattr(message, field.name, draw(_value(field, depth)))
    return message


def messages(
    message_descriptor: descriptor.Descriptor, depth: int = 0
) -> st.SearchStrategy[Message]:
    return _fill(message_descriptor, depth)


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        server.target, options=[("grpc.max_send_message_length", 80 * 1024 * 1024)]
    ) as opened:
        yield opened


@pytest.fixture(scope="module")
def hostile_tenant() -> str:
    return "t-hostile"


@pytest.fixture(scope="module")
def admin(server: ServerThread, hostile_tenant: str) -> str:
    return server.token(hostile_tenant)


def call(
    channel: grpc.Channel, method: descriptor.MethodDescriptor, payload: bytes, token: str
) -> grpc.StatusCode:
    """The status of one call with a raw request body (the first message of a stream)."""
    path = f"/{SERVICE.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(payload, metadata=metadata, timeout=20)
            next(iter(stream), None)
            stream.cancel()
        else:
            channel.unary_unary(path)(payload, metadata=metadata, timeout=20)
    except grpc.RpcError as error:
        code = error.code()
        assert isinstance(code, grpc.StatusCode)
        return code
    return grpc.StatusCode.OK


def head(sql: psycopg.Connection[Any], tenant: str) -> int:
    row = sql.execute(
        "SELECT coalesce(max(seq), 0) FROM events WHERE tenant_id = %s", [tenant]
    ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The server (in this process) logs no error: no servicer raised, the appender held."""
    yield
    assert errors_logged(caplog, during="call") == []


def assert_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
def test_random_requests_never_fail_the_server(
    method: descriptor.MethodDescriptor,
    channel: grpc.Channel,
    admin: str,
    hostile_tenant: str,
    sql: psycopg.Connection[Any],
) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(messages(method.input_type))
    def check(request: Message) -> None:
        before = head(sql, hostile_tenant)
        status = call(channel, method, request.SerializeToString(), admin)
        assert status not in SERVER_FAILURES, (method.name, status, request)
        if method.name in ("Record", "RecordBatch") and status != grpc.StatusCode.OK:
            assert head(sql, hostile_tenant) == before  # a rejected write writes nothing

    check()
    assert_serving(channel)


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
def test_garbage_bytes_are_a_clear_refusal(
    method: descriptor.MethodDescriptor, channel: grpc.Channel, admin: str
) -> None:
    for payload in (
        b"\xff\xff\xff\xff",
        b"\x0a\xff\xff\xff\xff\x0f",
        b"\x12\x02\xc3\x28",
        bytes(range(256)),
    ):
        status = call(channel, method, payload, admin)
        assert status not in SERVER_FAILURES, (method.name, payload, status)
    assert_serving(channel)


def test_oversized_and_deeply_nested_values_are_refused(
    channel: grpc.Channel, admin: str, hostile_tenant: str, sql: psycopg.Connection[Any]
) -> None:
    record = next(m for m in SERVICE.methods if m.name == "Record")
    huge = audit_service_pb2.RecordRequest()
    huge.event.action = "a." + "x" * 70_000
    huge.event.actor.id = "u"
    deep = audit_service_pb2.RecordRequest()
    deep.event.action = "a.b"
    deep.event.actor.id = "u"
    value = deep.event.details.fields["d"]
    for _ in range(90):  # protobuf's own parser stops at 100 levels
        value = value.struct_value.fields["d"]
    value.string_value = "bottom"
    wide = audit_service_pb2.RecordRequest()
    wide.event.action = "a.b"
    wide.event.actor.id = "u"
    for n in range(20_000):
        wide.event.details.fields[f"k{n}"].string_value = "v" * 10
    before = head(sql, hostile_tenant)
    for request in (huge, deep, wide):
        assert (
            call(channel, record, request.SerializeToString(), admin)
            == grpc.StatusCode.INVALID_ARGUMENT
        )
    too_big = b"\x0a" + b"\xff\xff\xff\x1f" + b"x" * (70 * 1024 * 1024)  # past the message limit
    assert call(channel, record, too_big, admin) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert head(sql, hostile_tenant) == before
    assert_serving(channel)
