"""What a RecordBatch entry refused alone says (api/errors.py entry_error):
the same as the call would have, its retry delay included."""

from __future__ import annotations

from sealtrail._errors import from_entry_error
from sealtrail_server.api.errors import entry_error
from sealtrail_server.domain.errors import InvalidArgument, ResourceExhausted, Unavailable


def test_an_entry_refused_for_a_passing_reason_says_when_to_send_it_again() -> None:
    for refused in (
        Unavailable("the append failed; retry", retry_after=1.0),
        ResourceExhausted("too many events pending", retry_after=2.5),
    ):
        entry = entry_error(refused)
        assert entry.retry_delay.ToTimedelta().total_seconds() == refused.retry_after
        assert from_entry_error(entry).retry_after == refused.retry_after


def test_an_entry_refused_for_what_it_is_has_no_retry_delay() -> None:
    entry = entry_error(InvalidArgument.field("events[0].action", "is required"))
    assert not entry.HasField("retry_delay")
    assert from_entry_error(entry).retry_after is None
