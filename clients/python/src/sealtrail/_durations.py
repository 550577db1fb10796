"""Durations as the command lines write them (90d, 12h, 2w, 1y, 30m, 45s),
importable by both command lines without click or the client."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

_SPAN: Final = re.compile(r"(\d+)([smhdwy])")
_SPAN_UNIT: Final = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),  # a year of 365 days
}


def span_parts(value: str) -> tuple[int, timedelta] | None:
    """A duration's count and unit (`90d`: 90, a day), None if `value` is
    not one; the caller multiplies, meeting OverflowError past any date."""
    span = _SPAN.fullmatch(value)
    if span is None:
        return None
    count, unit = span.groups()
    return int(count), _SPAN_UNIT[unit]
