"""Every RPC fuzzed with a bounded, seeded generator of its own (a fixed seed
per RPC, a fixed count: the same requests in every run), sent as raw bytes
through a generic call, so that what protobuf's own classes refuse to build
reaches the server too: invalid UTF-8 in a string field at any depth, unknown
fields, a oneof's members both on the wire, edge numbers, timestamps and
durations out of range, unknown enum numbers, garbled page tokens and masks.

Each answer is one a client can act on: never INTERNAL or UNKNOWN; an
INVALID_ARGUMENT names its fields (a BadRequest, each violation naming one),
the very field whose text is not UTF-8; a refused Record or RecordBatch leaves
the tenant's log as it was. test_hostile_input.py draws whole messages with
hypothesis; this one goes below protobuf's classes, and reads the answers'
details."""

from __future__ import annotations

import base64
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from sealtrail.v1 import audit_service_pb2
from tests.conftest import ServerThread

# The server (in this process) logs no error: no servicer raised.
pytestmark = pytest.mark.usefixtures("no_server_errors")
SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
# Requests per RPC: each a few milliseconds, an RPC's all within a few seconds.
COUNT = 40
SERVER_FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
MAX_DEPTH = 3
F = descriptor.FieldDescriptor

_INT32 = (0, 1, -1, 2, 50, 1000, 1001, 2**31 - 1, -(2**31))
_INT64 = (*_INT32, 2**53 + 1, 2**63 - 1, -(2**63))
_UINT32 = (0, 1, 2, 1000, 1001, 2**32 - 1)
_UINT64 = (*_UINT32, 2**63, 2**64 - 1)
_FLOATS = (0.0, -0.0, 1.5, -1.0, 1e308, float("inf"), float("-inf"), float("nan"))
_TEXTS = (
    "", " ", "a", "a.b", "api_key.create", "*", "*.delete", "\x00", "a\x00b", "\x01\x7f\x1b[0m",
    "é\u202e\u2028", "\U0001f600", "x" * 257, "y" * 5000, "../../etc/passwd", "%s%n",
    "00000000-0000-0000-0000-000000000000", "01a24806-8cd2-70ad-99be-6a5568cb88e3",
    "2026-11-30T00:00:00Z", "9999-12-31T23:59:59Z", "http://127.0.0.1:1/", "http://[::1",
    "'; DROP TABLE events; --", "\\", '"', "-1", "1e999", "SELECT", "stk_", "Bearer x",
)  # fmt: skip
# Timestamps and durations out of range as well as in it (RFC 3339's years
# 1 to 9999: -62135596800 to 253402300799 seconds).
_SECONDS = (0, 1, -1, 1_700_000_000, 253402300799, 253402300800, -62135596800, -62135596801,
            315576000001, 2**63 - 1, -(2**63))  # fmt: skip
_NANOS = (0, 1, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31))
_MASK_PATHS = ("", "*", "name", "filter", "paused", "no_such_field", "a.b.c", "name,filter", " ")


def _token(rng: random.Random) -> str:
    """A garbled page token, cursor or etag."""
    raw = rng.randbytes(rng.choice((0, 1, 16, 48, 300)))
    return rng.choice(
        (
            base64.urlsafe_b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
            base64.b64encode(raw).decode() + "!",
            raw.hex(),
            rng.choice(_TEXTS),
        )
    )


def _scalar(rng: random.Random, field: descriptor.FieldDescriptor) -> Any:
    kind = field.type
    if kind in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return rng.choice((*_INT32, rng.randint(-(2**31), 2**31 - 1)))
    if kind in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return rng.choice((*_INT64, rng.randint(-(2**63), 2**63 - 1)))
    if kind in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return rng.choice(_UINT32)
    if kind in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return rng.choice(_UINT64)
    if kind == F.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return rng.choice(_FLOATS)
    if kind == F.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return rng.choice((*known, max(known) + 1, 99, -1, 2**31 - 1))
    if kind == F.TYPE_BYTES:
        return rng.randbytes(rng.choice((0, 1, 32, 100)))
    assert kind == F.TYPE_STRING
    name = field.name
    if "token" in name or "cursor" in name or name == "etag":
        return _token(rng)
    return rng.choice(_TEXTS)


@dataclass
class _Marks:
    """Strings set to unique markers, with the path of the field holding each."""

    rng: random.Random
    paths: dict[str, str]

    def mark(self, path: str) -> str:
        text = f"~{self.rng.getrandbits(64):016x}~"
        self.paths[text] = path
        return text


def _fill(
    rng: random.Random, message: Message, depth: int, marks: _Marks | None, path: str
) -> None:
    if depth > MAX_DEPTH:
        return
    full_name = message.DESCRIPTOR.full_name
    if full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        message.seconds = rng.choice(_SECONDS)  # type: ignore[attr-defined]
        message.nanos = rng.choice(_NANOS)  # type: ignore[attr-defined]
        return
    if full_name == "google.protobuf.FieldMask":
        paths = [rng.choice(_MASK_PATHS) for _ in range(rng.randint(0, 3))]
        message.paths.extend(paths)  # type: ignore[attr-defined]
        return
    if full_name in ("google.protobuf.Struct", "google.protobuf.ListValue"):
        marks = None  # one value to the API: named as a whole (api/undecodable.py)
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.45:
            continue
        here = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(message, field.name)
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(rng.randint(0, 3)):
                key = _scalar(rng, field.message_type.fields_by_name["key"])
                if value_field.type == F.TYPE_MESSAGE:
                    _fill(rng, target[key], depth + 1, None, here)
                else:
                    target[key] = _scalar(rng, value_field)
            continue
        if field.is_repeated:
            items = getattr(message, field.name)
            for n in range(rng.choice((0, 1, 2, 3))):
                if field.type == F.TYPE_MESSAGE:
                    _fill(rng, items.add(), depth + 1, marks, f"{here}[{n}]")
                elif field.type == F.TYPE_STRING and marks is not None and rng.random() < 0.3:
                    items.append(marks.mark(f"{here}[{n}]"))
                else:
                    items.append(_scalar(rng, field))
        elif field.type == F.TYPE_MESSAGE:
            _fill(rng, getattr(message, field.name), depth + 1, marks, here)
            if not message.HasField(field.name):
                getattr(message, field.name).SetInParent()
        elif field.type == F.TYPE_STRING and marks is not None and rng.random() < 0.3:
            setattr(message, field.name, marks.mark(here))
        else:
            setattr(message, field.name, _scalar(rng, field))


def _new(method: descriptor.MethodDescriptor) -> Message:
    return message_factory.GetMessageClass(method.input_type)()


@dataclass(frozen=True)
class Fuzzed:
    """A request's bytes, and the field whose text in them is no UTF-8 ("": none)."""

    payload: bytes
    invalid_utf8: str = ""


# Bytes that are no UTF-8, as long as a marker: a lone continuation byte, a
# truncated sequence, an encoded surrogate, an overlong NUL, a byte never valid.
_NOT_UTF8 = (b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\x80", b"\xff")


def fuzzed(method: descriptor.MethodDescriptor) -> Iterator[Fuzzed]:
    """COUNT requests for `method`, the same in every run."""
    rng = random.Random(zlib.crc32(method.full_name.encode()))
    for n in range(COUNT):
        marks = _Marks(rng, {})
        message = _new(method)
        _fill(rng, message, 0, marks, "")
        payload = message.SerializeToString()
        kind = n % 4
        sent = sorted(mark for mark in marks.paths if mark.encode() in payload)
        if kind == 0 and sent:
            # One marked field's text made no UTF-8 (its length kept), the others
            # plain; of those sent (a oneof's member set before another is not).
            chosen = rng.choice(sent)
            bad = rng.choice(_NOT_UTF8)
            garbled = (b"ok" + bad * 18)[: len(chosen.encode())]
            yield Fuzzed(payload.replace(chosen.encode(), garbled), marks.paths[chosen])
            continue
        if kind == 1:
            # Unknown fields of every wire type, before and after the known ones.
            unknown = (
                b"\xb8\x9c\x01\x05"  # field 2503, varint
                + b"\xc2\x9c\x01\x03abc"  # field 2504, length-delimited
                + b"\xcd\x9c\x01\x00\x00\x80\x7f"  # field 2505, fixed32
                + b"\xd1\x9c\x01"
                + bytes(8)  # field 2506, fixed64
            )
            payload = unknown + payload + unknown
        elif kind == 2:
            # Another request merged into this one (a oneof's members both on
            # the wire, the last one kept; repeated fields joined).
            other = _new(method)
            _fill(rng, other, 0, None, "")
            payload += other.SerializeToString()
        yield Fuzzed(payload)


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as opened:
        yield opened


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str
    fields: list[str] | None  # a BadRequest's violations' fields, None if no BadRequest


def call(
    channel: grpc.Channel, method: descriptor.MethodDescriptor, payload: bytes, token: str
) -> Answer:
    path = f"/{SERVICE.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(payload, metadata=metadata, timeout=20)
            next(iter(stream), None)  # a heartbeat or a chunk first, else its error
            stream.cancel()
        else:
            channel.unary_unary(path)(payload, metadata=metadata, timeout=20)
    except grpc.RpcError as error:
        code = error.code()
        if code == grpc.StatusCode.CANCELLED:  # cancelled here, after a first message
            return Answer(grpc.StatusCode.OK, "", None)
        return Answer(code, error.details() or "", _violations(error))
    return Answer(grpc.StatusCode.OK, "", None)


def _violations(error: grpc.RpcError) -> list[str] | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return [v.field for v in bad.field_violations]
    return None


def log_size(sql: psycopg.Connection[Any], tenant: str) -> int:
    row = sql.execute("SELECT count(*) FROM events WHERE tenant_id = %s", [tenant]).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
def test_fuzzed_requests_get_clear_answers(
    method: descriptor.MethodDescriptor,
    channel: grpc.Channel,
    server: ServerThread,
    tenant: str,
    sql: psycopg.Connection[Any],
) -> None:
    token = server.token(tenant)
    writes = method.name in ("Record", "RecordBatch")
    for request in fuzzed(method):
        before = log_size(sql, tenant) if writes else 0
        answer = call(channel, method, request.payload, token)
        seen = (method.name, answer, request.invalid_utf8, request.payload[:200])
        assert answer.code not in SERVER_FAILURES, seen
        if answer.code == grpc.StatusCode.INVALID_ARGUMENT:
            assert answer.fields and all(answer.fields), seen
        if request.invalid_utf8:
            assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, seen
            assert answer.fields == [request.invalid_utf8], seen
        if writes and answer.code != grpc.StatusCode.OK:
            assert log_size(sql, tenant) == before, seen  # nothing of a refused write
