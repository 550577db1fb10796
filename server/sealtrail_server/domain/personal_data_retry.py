"""Whether a retry is the request an earlier attempt stored, but for a change
of the tenant's personal-data names since (ADR 0154): one of the two bodies
holds `[REDACTED:personal_data]` where the other holds a value, the value
being what the names of then, or of now, replace. A value so replaced
matches whatever stood there, as a secret stored `[REDACTED:…]` does across
a change of redaction mode (helper-80, helper-81): resending an event with
guesses under its key tells nothing of it. Everything else must be equal.

In HMAC mode a personal value is written as its HMAC, which tells values
apart as it does secrets: no such leeway there."""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any, Final

from .canonical import canonical_json
from .redaction import PERSONAL_DATA_RULE

MARK: Final = f"[REDACTED:{PERSONAL_DATA_RULE}]"
# A string holding the mark, as a pattern of what stood there before it.
_MARKED_PART: Final = re.compile(re.escape(MARK))
# What a mark in text stands for, as the text rules take a value: a quoted
# one to its closing quote, any other to a space or a separator. Possessive:
# a caller's text of many marks is matched in time of its length.
_QUOTED_VALUE: Final = r"(?:[^\\\"']|\\.)++"
_BARE_VALUE: Final = r"[^\s\"'&,;]++"


def alike_but_personal_data(one: Any, other: Any) -> bool:
    """Whether two JSON values (an event's asserted parts) are equal but for
    values one of them holds as `MARK`."""
    if one == MARK or other == MARK:
        return True
    if isinstance(one, dict) and isinstance(other, dict):
        return one.keys() == other.keys() and all(
            alike_but_personal_data(value, other[key]) for key, value in one.items()
        )
    if isinstance(one, list) and isinstance(other, list):
        return len(one) == len(other) and all(
            alike_but_personal_data(a, b) for a, b in zip(one, other, strict=True)
        )
    if isinstance(one, str) and isinstance(other, str):
        for marked, plain in ((one, other), (other, one)):
            if MARK in marked:
                return _as_marked(marked).fullmatch(plain) is not None
        return one == other
    # Compared as they are hashed: Python's == holds True == 1.
    return canonical_json(one, plain=False) == canonical_json(other, plain=False)


def _as_marked(text: str) -> re.Pattern[str]:
    """`text` as a pattern in which each mark stands for a value as the text
    rules take one (`ssn=[REDACTED:personal_data]` for `ssn=123-45-6789`),
    and no more: `for Ann` after it must stay `for Ann`."""
    parts = _MARKED_PART.split(text)
    pattern = re.escape(parts[0])
    for before, part in pairwise(parts):
        quoted = before.endswith(('"', "'"))
        pattern += (_QUOTED_VALUE if quoted else _BARE_VALUE) + re.escape(part)
    return re.compile(pattern)
