"""What Record answers and Query shows of an event is its caller view (built
from the request, or from the validated body when values were normalised or
redacted) merged with the server's fields, for speed; it must be exactly what
reading the stored record gives (event_from_record)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealtrail.v1 import audit_service_pb2, event_pb2
from sealtrail_server.api.convert import (
    caller_view,
    encoded_response,
    event_draft,
    event_from_record,
    server_view,
    with_server_fields,
)
from sealtrail_server.domain.errors import InvalidArgument
from sealtrail_server.domain.event import ServerFields, finalize_record, validate_event
from sealtrail_server.domain.merkle import leaf_hash
from sealtrail_server.store.events import ShownEvent

NOW = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 22, 12, 0, 1, 654321, tzinfo=UTC)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


def _value(value: Any) -> struct_pb2.Value:
    holder = struct_pb2.Struct()
    holder.update({"v": value})
    return holder.fields["v"]


# A null sent as a NullValue number the enum does not name (proto3 enums are
# open): read, and stored, as null.
ODD_NULL = struct_pb2.Value(null_value=5)
# A field of a later version of the contract, which this server does not know.
UNKNOWN_FIELD = b"\xa8\x06\x01"  # field 101, varint 1


@st.composite
def events(draw: st.DrawFn) -> event_pb2.Event:
    event = event_pb2.Event(
        action=draw(st.sampled_from(["api_key.create", "member.invite", "Bad"])),
        category=draw(st.integers(0, 8)),
        severity=draw(st.integers(0, 4)),
        outcome=draw(st.integers(0, 3)),
        description=draw(st.text(max_size=10)),
        idempotency_key=draw(st.sampled_from(["", "k1"])),
        actor=event_pb2.Actor(
            type=draw(st.integers(0, 4)),
            id=draw(st.sampled_from(["u1", "user 2"])),
            email=draw(st.sampled_from(["", "a@b.c"])),
        ),
    )
    # Sub-messages set but possibly empty, as callers send them.
    if draw(st.booleans()):
        event.resource.SetInParent()
        event.resource.type = draw(st.sampled_from(["", "api_key"]))
    if draw(st.booleans()):
        event.context.SetInParent()
        event.context.ip = draw(st.sampled_from(["", "10.0.0.1", "2001:DB8::1"]))
        event.context.country = draw(st.sampled_from(["", "FR", "de", "Usa"]))
        event.context.trace_id = draw(st.sampled_from(["", "4BF92F3577B34DA6A3CE929D0E0E4736"]))
        event.context.request_id = draw(
            st.sampled_from(["", "8F14E45F-CEEA-467F-A9F3-8D0C9E6C2A11"])
        )
    if draw(st.booleans()):
        event.details.SetInParent()
        event.details.update(draw(st.dictionaries(st.text(max_size=5), json_values, max_size=4)))
        if draw(st.booleans()):
            event.details.fields["odd"].CopyFrom(ODD_NULL)
    for _ in range(draw(st.integers(0, 2))):
        change = event.changes.add(field=draw(st.sampled_from(["role", "tags"])))
        if draw(st.booleans()):
            change.before.CopyFrom(_value(draw(json_values)))
        if draw(st.booleans()):
            change.after.CopyFrom(_value(draw(json_values)))
        elif draw(st.booleans()):
            change.after.CopyFrom(ODD_NULL)
    if draw(st.booleans()):
        event.occurred_at.FromDatetime(NOW)
        event.occurred_at.nanos = draw(st.integers(0, 999_999_999))
    if draw(st.booleans()):  # output-only fields a caller should not set
        event.id, event.seq, event.tenant_id = str(uuid.uuid4()), 99, "other"
        event.leaf_hash = b"forged"
        event.received_at.FromDatetime(NOW)
    if draw(st.booleans()):
        event.MergeFromString(UNKNOWN_FIELD)
    return event


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.booleans())
def test_caller_view_with_server_fields_equals_stored_record(
    sent: event_pb2.Event, from_body: bool
) -> None:
    try:
        valid = validate_event(event_draft(sent, "event"), now=NOW)
    except InvalidArgument:
        return
    server = ServerFields("t-1", str(uuid.uuid4()), 7, "2026-11-22T12:00:01.654321Z")
    record = finalize_record(valid, server)
    leaf = leaf_hash(record)
    stored = event_from_record(record.decode(), leaf)
    # From the body, as for a redacted event, one with values normalised, or
    # one Sealtrail writes itself; else from the request when it may be.
    view = caller_view(valid) if from_body else caller_view(valid, sent=sent)
    serialized = view.SerializeToString()
    answer = with_server_fields(
        view,
        tenant_id=server.tenant_id,
        event_id=server.id,
        seq=server.seq,
        received_at=RECEIVED,
        leaf_hash=leaf,
    )
    assert answer == stored
    assert answer.SerializeToString(deterministic=True) == stored.SerializeToString(
        deterministic=True
    )
    # As Query reads it back: stored whole (ADR 0025), as the caller's part
    # onto the columns (ADR 0022), and from the record alone.
    whole = serialized + server_view(
        tenant_id=server.tenant_id,
        event_id=server.id,
        seq=server.seq,
        received_at=RECEIVED,
        leaf_hash=leaf,
    )
    encoded = encoded_response(
        audit_service_pb2.QueryResponse(next_page_token="next"),
        "events",
        [
            ShownEvent(server.seq, whole, None, None, None, None, None),
            ShownEvent(server.seq, None, server.id, RECEIVED, leaf, serialized, None),
            ShownEvent(server.seq, None, None, None, leaf, None, record.decode()),
        ],
        tenant_id=server.tenant_id,
    )
    shown = audit_service_pb2.QueryResponse.FromString(encoded)
    assert shown.next_page_token == "next"
    assert list(shown.events) == [stored] * 3


@given(st.datetimes(timezones=st.just(UTC)))
def test_record_times_read_back_exactly(moment: datetime) -> None:
    """Record times become Timestamps by arithmetic, not FromDatetime: the
    same instant for every time, before 1970 included."""
    text = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    record = json.dumps(
        {
            "action": "a.b",
            "actor": {"id": "u1", "type": "user"},
            "id": "x",
            "occurred_at": text,
            "outcome": "success",
            "received_at": text,
            "seq": 1,
            "severity": "info",
            "tenant_id": "t",
        }
    )
    expected = event_pb2.Event()
    expected.occurred_at.FromDatetime(moment)
    stored = event_from_record(record, b"")
    assert stored.occurred_at == expected.occurred_at
    assert stored.received_at == expected.occurred_at
