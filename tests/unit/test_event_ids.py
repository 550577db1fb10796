"""Event ids name the millisecond their event was received (ADR 0031)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from sealtrail_server.domain.event_ids import event_id_minter, received_within

RECEIVED = datetime(2026, 12, 2, 1, 30, 15, 123456, tzinfo=UTC)


def test_an_id_names_the_millisecond_its_event_was_received() -> None:
    event_id = event_id_minter(RECEIVED)()
    assert uuid.UUID(event_id).version == 7
    assert str(uuid.UUID(event_id)) == event_id
    assert received_within(event_id) == (
        datetime(2026, 12, 2, 1, 30, 15, 123000, tzinfo=UTC),
        datetime(2026, 12, 2, 1, 30, 15, 124000, tzinfo=UTC),
    )


def test_the_ids_of_one_instant_differ() -> None:
    """A batch's events share their received time, and one minter."""
    mint = event_id_minter(RECEIVED)
    assert len({mint() for _ in range(10_000)}) == 10_000


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    )
)
def test_every_received_time_falls_in_the_millisecond_its_id_names(received: datetime) -> None:
    window = received_within(event_id_minter(received)())
    assert window is not None
    start, end = window
    assert start <= received < end
    assert end - start == timedelta(milliseconds=1)


def test_an_id_that_names_no_time_is_looked_for_everywhere() -> None:
    assert received_within(str(uuid.uuid4())) is None  # not a UUIDv7
    assert received_within("ffffffff-ffff-7fff-bfff-ffffffffffff") is None  # the year 10889
