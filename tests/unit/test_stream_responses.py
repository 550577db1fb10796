"""A stream's responses are framed by hand around each event's encoding, not
built as messages and serialized (ADR 0043): they must parse equal to what
protobuf sends for the same events, alone or batched (byte for byte where an
event has no map field, whose entries protobuf writes in no fixed order), and
batches must keep both their bounds (events a message, bytes a batch)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealtrail import build_event
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import event_pb2
from sealtrail_server.api.stream import MAX_BATCH_BYTES, _responses
from sealtrail_server.stream.hub import EncodedEvent


def _event(seq: int, description: str = "") -> EncodedEvent:
    message = event_pb2.Event(seq=seq, tenant_id="t-1", description=description)
    return EncodedEvent(seq, message.SerializeToString())


def _of_length(seq: int, length: int) -> EncodedEvent:
    """An event whose encoding is exactly `length` bytes."""
    for padding in range(length, max(length - 16, -1), -1):
        event = _event(seq, "x" * padding)
        if len(event.data) == length:
            return event
    raise AssertionError(f"no event of {length} bytes")


def _as_protobuf_sends(events: list[EncodedEvent], limit: int) -> list[bytes]:
    messages = [event_pb2.Event.FromString(event.data) for event in events]
    if not limit:
        return [pb.StreamEventsResponse(event=message).SerializeToString() for message in messages]
    responses, batch, size = [], [], 0
    for message in messages:
        if batch and (len(batch) == limit or size + message.ByteSize() > MAX_BATCH_BYTES):
            responses.append(pb.StreamEventsResponse(events=pb.EventBatch(events=batch)))
            batch, size = [], 0
        batch.append(message)
        size += message.ByteSize()
    if batch:
        responses.append(pb.StreamEventsResponse(events=pb.EventBatch(events=batch)))
    return [response.SerializeToString() for response in responses]


# Events either side of each length where the length's varint grows a byte.
@pytest.mark.parametrize("length", [127, 128, 16383, 16384, 2_097_151, 2_097_152])
@pytest.mark.parametrize("limit", [0, 1, 500])
def test_an_event_of_any_length_is_framed_as_protobuf_frames_it(length: int, limit: int) -> None:
    events = [_event(1), _of_length(2, length), _event(3, "y")]
    assert list(_responses(events, limit)) == _as_protobuf_sends(events, limit)


@given(
    st.lists(st.text(max_size=300), max_size=30),
    st.sampled_from([0, 1, 2, 7, 1000]),
)
def test_responses_are_the_bytes_protobuf_sends(descriptions: list[str], limit: int) -> None:
    events = [_event(seq, text) for seq, text in enumerate(descriptions, start=1)]
    assert list(_responses(events, limit)) == _as_protobuf_sends(events, limit)


@given(
    st.lists(
        st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=8),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from([0, 1, 5, 1000]),
)
def test_events_with_details_parse_equal_to_what_protobuf_sends(
    details: list[dict[str, str]], limit: int
) -> None:
    messages = [build_event(action="a.b", actor_id="u", details=fields) for fields in details]
    events = [EncodedEvent(seq, m.SerializeToString()) for seq, m in enumerate(messages, start=1)]
    sent = [pb.StreamEventsResponse.FromString(r) for r in _responses(events, limit)]
    expected = [pb.StreamEventsResponse.FromString(r) for r in _as_protobuf_sends(events, limit)]
    assert sent == expected


def _batch_sizes(events: list[EncodedEvent], limit: int) -> list[int]:
    return [
        len(pb.StreamEventsResponse.FromString(r).events.events) for r in _responses(events, limit)
    ]


def test_a_batch_holds_at_most_its_limit_of_events_and_of_bytes() -> None:
    assert _batch_sizes([_event(seq) for seq in range(1, 8)], 3) == [3, 3, 1]
    third = MAX_BATCH_BYTES // 3
    large = [_of_length(seq, third) for seq in range(1, 8)]
    assert _batch_sizes(large, 1000) == [3, 3, 1]
    # One event over the bound still goes, alone.
    huge = [_event(1), _of_length(2, MAX_BATCH_BYTES + 1), _event(3)]
    assert _batch_sizes(huge, 1000) == [1, 1, 1]
