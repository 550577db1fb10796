"""Query's response is encoded from the stored views, not built and serialized
(ADR 0026): for views in field order the bytes must be exactly those protobuf
sends (stored views, whose server fields come last, must parse equal to it:
test_answer_equals_record), and an unreadable view must still be found, and
named."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from sealtrail.v1 import audit_service_pb2, event_pb2
from sealtrail_server.api.convert import encoded_response
from sealtrail_server.domain.errors import IntegrityFailure
from sealtrail_server.store.events import ShownEvent


def _whole(seq: int, description: str = "") -> ShownEvent:
    view = event_pb2.Event(seq=seq, tenant_id="t-1", description=description)
    return ShownEvent(seq, view.SerializeToString(), None, None, None, None, None)


def _as_protobuf_sends(rows: list[ShownEvent], token: str) -> bytes:
    response = audit_service_pb2.QueryResponse(next_page_token=token)
    for row in rows:
        assert row.event_view is not None
        response.events.add().MergeFromString(row.event_view)
    return response.SerializeToString()


def _encoded(rows: list[ShownEvent], token: str = "") -> bytes:
    response = audit_service_pb2.QueryResponse(next_page_token=token)
    return encoded_response(response, "events", rows, tenant_id="t-1")


def _whole_of_length(seq: int, length: int) -> ShownEvent:
    """A whole view of exactly `length` bytes."""
    for padding in range(length, max(length - 16, -1), -1):
        row = _whole(seq, "x" * padding)
        assert row.event_view is not None
        if len(row.event_view) == length:
            return row
    raise AssertionError(f"no view of {length} bytes")


# Views either side of each length where the length's varint grows a byte.
@pytest.mark.parametrize("length", [127, 128, 16383, 16384, 2_097_151, 2_097_152])
def test_a_view_of_any_length_is_framed_as_protobuf_frames_it(length: int) -> None:
    rows = [_whole(1), _whole_of_length(2, length), _whole(3, "y")]
    assert _encoded(rows, "next") == _as_protobuf_sends(rows, "next")


@given(st.lists(st.text(max_size=300), max_size=20), st.text(max_size=40))
def test_a_page_encodes_to_the_bytes_protobuf_sends(descriptions: list[str], token: str) -> None:
    rows = [_whole(seq, text) for seq, text in enumerate(descriptions, start=1)]
    assert _encoded(rows, token) == _as_protobuf_sends(rows, token)


def test_an_empty_page_is_its_token_alone() -> None:
    assert _encoded([]) == b""
    assert (
        _encoded([], "t")
        == audit_service_pb2.QueryResponse(next_page_token="t").SerializeToString()
    )


def test_an_unreadable_view_is_named_by_its_seq() -> None:
    unreadable = ShownEvent(2, b"\xff", None, None, None, None, None)
    with pytest.raises(IntegrityFailure, match="the stored view of seq 2 cannot be read"):
        _encoded([_whole(1), unreadable, _whole(3)])


def _nested_lists(depth: int) -> struct_pb2.Value:
    value = struct_pb2.Value(string_value="bottom")
    for _ in range(depth):
        value = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[value]))
    return value


def test_a_view_readable_alone_but_too_deep_in_a_page_is_named_by_its_seq() -> None:
    """Inside a response a view is one level deeper than alone, nearer protobuf's
    nesting limit: a view rewritten to nest that deep is found too."""
    for depth in range(20, 200):
        change = event_pb2.Change(field="f", before=_nested_lists(depth))
        view = event_pb2.Event(seq=2, changes=[change]).SerializeToString()
        event_pb2.Event.FromString(view)  # reads alone, at every depth tried
        framed = audit_service_pb2.QueryResponse(events=[event_pb2.Event.FromString(view)])
        try:
            audit_service_pb2.QueryResponse.FromString(framed.SerializeToString())
        except DecodeError:
            break
    else:
        raise AssertionError("no depth reads alone but not in a response")
    too_deep = ShownEvent(2, view, None, None, None, None, None)
    with pytest.raises(IntegrityFailure, match="the stored view of seq 2 cannot be read"):
        _encoded([_whole(1), too_deep, _whole(3)])


def test_a_response_that_holds_events_already_is_refused() -> None:
    response = audit_service_pb2.QueryResponse(events=[event_pb2.Event(seq=9)])
    with pytest.raises(ValueError, match=r"response\.events must be empty"):
        encoded_response(response, "events", [_whole(1)], tenant_id="t-1")
