"""Event ids: UUIDv7 minted from the time their event was received, so that
an id names the millisecond of its `received_at`, the key the events table is
partitioned by (ADR 0031). A lookup by id then reads the one partition that
millisecond falls in, not every month the log has kept."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import uuid_utils

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)
_MICROSECOND: Final = timedelta(microseconds=1)


def event_id_minter(received: datetime) -> Callable[[], str]:
    """What mints the ids of events received at `received` (an aware datetime;
    a batch's events share it): each a new UUIDv7 whose timestamp is that
    time's milliseconds since the epoch, kept apart by random bits. The time
    is converted once, not once an event (the Record path mints one each)."""
    nanoseconds = (received - _EPOCH) // _MICROSECOND * 1000

    def mint() -> str:
        # uuid_utils' own UUID, not its stdlib-compatible one: its text costs
        # about a tenth as much.
        return str(uuid_utils.uuid7(nanoseconds=nanoseconds))

    return mint


def received_within(event_id: str) -> tuple[datetime, datetime] | None:
    """The millisecond (start included, end excluded) in which the event
    `event_id` (a UUID in text) was received, if `event_id_minter` minted it;
    None for an id that is no UUIDv7, or whose millisecond a datetime cannot
    hold (past 9999-12-31 23:59:59.998).
    (An id minted before ids named that time may name another.)"""
    digits = event_id.replace("-", "")
    if digits[12] != "7":  # the version nibble
        return None
    try:
        start = _EPOCH + timedelta(milliseconds=int(digits[:12], 16))  # the first 48 bits
        return start, start + _MILLISECOND
    except OverflowError:  # 48 bits of milliseconds reach the year 10889
        return None
