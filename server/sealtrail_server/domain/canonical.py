"""The canonical byte form of a record: RFC 8785 (JCS) JSON.

JCS differs from `json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)` in only two places: the text of non-integral or huge
numbers, and the order of keys holding characters at or above U+E000 (JCS
sorts by UTF-16 code units, Python by code points). Records without either,
which is nearly all of them, take the C-accelerated `json` path, about six
times faster than the pure-Python `rfc8785` package; the rest go through
`rfc8785`. Property tests hold the two paths equal.

A caller's values are judged as the API reads them off protobuf (api/convert.py);
the values of Sealtrail's own events (access records, alerts), built in Python,
by `plain_value`.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

# Integral floats below this magnitude print the same as Python ints in JCS.
_MAX_EXACT_INT = 2**53
# The fast path's encoder, made once: `json.dumps` given any argument makes a
# JSONEncoder per call, about 3 of the 13 us a record of the bench's took.
_PLAIN_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
)


def canonical_json(value: Any, *, plain: bool) -> bytes:
    """`value` in RFC 8785 form. `plain` promises it holds no float and no
    dict key with a character at or above U+E000 (see `plain_number`)."""
    if plain:
        return _PLAIN_ENCODER.encode(value).encode()
    return bytes(rfc8785.dumps(value))


def plain_number(number: float) -> int | None:
    """The int a JSON number canonicalises like, or None if it must stay a float."""
    if number.is_integer() and -_MAX_EXACT_INT < number < _MAX_EXACT_INT:
        return int(number)
    return None


def plain_numbers(value: Any) -> Any:
    """`value` (JSON off protobuf, from MessageToDict) with each float
    `plain_number` makes an int made one: a google.protobuf.Value holds every
    number as a double, which MessageToDict writes `83.0` where the record,
    and so exports and sinks, write 83. ±2**53 too, which the record writes
    as digits (a double holds it exactly), as the client's plain_numbers does."""
    if isinstance(value, float):
        if value.is_integer() and -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
            return int(value)
        return value
    if isinstance(value, dict):
        return {key: plain_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_numbers(item) for item in value]
    return value


def plain_value(value: Any) -> bool:
    """Whether `value`, a JSON value built in Python (not read off protobuf),
    canonicalises through the fast path: no float, no int outside JCS's range,
    no key `plain_key` refuses. Any other type is left to `rfc8785`, which
    refuses it as before."""
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return -_MAX_EXACT_INT < value < _MAX_EXACT_INT
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and plain_key(key) and plain_value(item)
            for key, item in value.items()
        )
    if isinstance(value, (list, tuple)):
        return all(plain_value(item) for item in value)
    return False


def plain_key(key: str) -> bool:
    """Whether Python's code-point order sorts `key` as JCS's UTF-16 order does."""
    return key.isascii() or max(key) < "\ue000"
