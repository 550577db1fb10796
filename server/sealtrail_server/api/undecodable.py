"""What a request protobuf could not parse is refused with: INVALID_ARGUMENT
naming the field at fault where one is. protobuf's own error names the
message type only ("Error parsing message with type ..."), and the commonest
case, text that is not UTF-8 in a string field (which no protobuf class
builds, but any client sending bytes can), named `request` whatever the field,
at any depth: the client was left to guess which of its values was at fault.
The encoding is read again here, by its wire format, for the first string
field whose bytes are no UTF-8."""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import descriptor
from google.protobuf.message import DecodeError

from ..domain.errors import InvalidArgument

_STRING: Final = descriptor.FieldDescriptor.TYPE_STRING
_MESSAGE: Final = descriptor.FieldDescriptor.TYPE_MESSAGE
# Well-known types whose inside is one value to the API: a detail in
# `event.details` is named by the validator as the details are, not by
# Struct's own fields (`fields`, `struct_value`).
_OPAQUE: Final = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
# protobuf's own parser stops at 100 levels of nesting.
_MAX_DEPTH: Final = 100


def refusal(message: Any, data: bytes, error: DecodeError, *, field: str) -> InvalidArgument:
    """Why `data` (an encoding of `message`, a message type's Descriptor,
    protobuf's or upb's; None if not known) is no request: the path of its
    first text that is not UTF-8 (under `field` unless that is `request`, the
    whole of it), else `field` with protobuf's own words."""
    found = _text_not_utf8(message, data) if message is not None else None
    if found is not None:
        path = found if field == "request" else f"{field}.{found}"
        return InvalidArgument.field(path, "is not UTF-8 text")
    return InvalidArgument.field(field, f"is not a valid message: {error}")


def _text_not_utf8(message: Any, data: bytes) -> str | None:
    try:
        return _walk(message, data, 0)
    except IndexError:  # an encoding cut short
        return None


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at
        if shift > 63:
            raise IndexError("a varint longer than ten bytes")


def _walk(message: Any, data: bytes, depth: int) -> str | None:
    """The path, within `message`, of the first string field of `data` whose
    text is not UTF-8; None if there is none (or the encoding is broken some
    other way: groups, which this API never uses, included)."""
    if depth > _MAX_DEPTH:
        return None
    seen: dict[int, int] = {}
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, at = _varint(data, at)
            continue
        if wire in (_FIXED64, _FIXED32):
            at += 8 if wire == _FIXED64 else 4
            continue
        if wire != _LENGTH:
            return None
        length, at = _varint(data, at)
        value, at = data[at : at + length], at + length
        if len(value) != length:
            return None
        field = message.fields_by_number.get(number)
        if field is None or field.type not in (_STRING, _MESSAGE):
            continue  # an unknown field, or packed numbers
        index = seen.get(number, 0)
        seen[number] = index + 1
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        name = f"{field.name}[{index}]" if field.is_repeated and not is_map else field.name
        if field.type == _STRING:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return name
            continue
        inner = _walk(field.message_type, value, depth + 1)
        if inner is not None:
            opaque = is_map or field.message_type.full_name in _OPAQUE
            return name if opaque else f"{name}.{inner}"
    return None
