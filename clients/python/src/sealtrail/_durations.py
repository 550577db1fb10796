"""Durations as the command lines write them (90d, 12h, 2w, 1y, 30m, 45s),
read (`span_parts`) and shown (`span_text`) by one table of units, and a
refusal said alike (`not_a_span`); importable by both command lines without
click or the client. Every option that takes a length of time reads it here:
`--since`/`--until` (a duration ago), `--window`, `--timeout`, `--expires-in`,
`--unused-for`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

# ASCII digits alone: `\d` takes any script's, Arabic-Indic (U+0660-U+0669) or
# full-width (U+FF10-U+FF19) ones, which int() reads, and `--window` of 30 days
# written in Arabic-Indic digits was taken as 30 days.
_SPAN: Final = re.compile(r"([0-9]+)([smhdwy])")
_SPAN_UNIT: Final = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),  # a year of 365 days
}
# The units in whole seconds, the largest first: what `span_text` shows.
_LARGEST_FIRST: Final = sorted(
    ((name, int(unit.total_seconds())) for name, unit in _SPAN_UNIT.items()),
    key=lambda named: -named[1],
)


def span_parts(value: str) -> tuple[int, timedelta] | None:
    """A duration's count and unit (`90d`: 90, a day), None if `value` is
    not one; the caller multiplies, meeting OverflowError past any date."""
    span = _SPAN.fullmatch(value)
    if span is None:
        return None
    count, unit = span.groups()
    return int(count), _SPAN_UNIT[unit]


def not_a_span(value: str, forms: str) -> str:
    """The refusal of `value`, which is no duration (nor anything else the
    option takes): `forms` the examples it is given, such as `90d, 12h, 2w or
    1y`. A value with a digit other than 0-9 (Arabic-Indic, full-width) is
    told so."""
    refusal = f"{value!r} is not {forms}"
    return f"{refusal}: its digits must be 0-9" if foreign_digits(value) else refusal


def foreign_digits(value: str) -> bool:
    """Whether `value` has a decimal digit other than ASCII's 0-9."""
    return any(char.isdecimal() and not char.isascii() for char in value)


def span_text(seconds: int) -> str:
    """`seconds` as a duration is typed, in the largest unit that holds it
    whole: 600 `10m`, 5400 `90m`, 90 `90s`, 0 `0s`; `span_parts` reads it
    back as the same length. One unit, as the parser takes no `1h30m`."""
    if seconds < 0:
        raise ValueError(f"a length of time is never below 0: {seconds}")
    for name, size in _LARGEST_FIRST:
        if seconds % size == 0 and (seconds or size == 1):
            return f"{seconds // size}{name}"
    raise AssertionError("a second divides every whole number of seconds")


# How an age is said (`age_text`): each unit up to twice the next, whole.
_AGE_UNITS: Final = (("d", 86400), ("h", 3600), ("m", 60))


def age_text(seconds: float) -> str:
    """How long ago something was, by this host's clock, `seconds` before
    now: `8s ago`, `119s ago`, `2m ago`, `47h ago`, `2d ago` (whole units,
    each shown from twice its size, rounded down). A time this host has
    not reached (its clock behind the other's) by a second or more is
    said so, `3s ahead of this host's clock`; within a second it is `0s
    ago`, the clocks' rounding."""
    ahead = seconds <= -1
    whole = int(abs(seconds)) if ahead else max(0, int(seconds))
    amount = f"{whole}s"
    for name, size in _AGE_UNITS:
        if whole >= 2 * size:
            amount = f"{whole // size}{name}"
            break
    return f"{amount} ahead of this host's clock" if ahead else f"{amount} ago"
