"""One-dimensional array parameters of a known element type, dumped in
PostgreSQL's binary array format without psycopg's discovery of each list.

psycopg dumps a Python list by first finding what its elements are (and, for
ints, the smallest type that holds them all) and then choosing a dumper; all of
it in Python, for every list of every statement. The appender's one-statement
write (store/appender.py) sends about thirty such lists: converting them took
about 250 us for a lone event and 360 us for ten, on the event loop that serves
every call (a quarter of what PostgreSQL then takes to run and commit the
statement). A list wrapped in one of these classes says its element
type, and its dumper writes it directly: the header, then each element's
length and bytes (-1 for NULL).

The classes are registered with psycopg's global adapters when this module is
imported, so every connection made after that dumps them.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

import psycopg
from psycopg import postgres
from psycopg.abc import AdaptContext
from psycopg.adapt import Dumper
from psycopg.pq import Format

_HEAD = struct.Struct("!iiIii")  # dimensions, has NULL, element oid; length, lower bound
_EMPTY_HEAD = struct.Struct("!iiI")
_LENGTH = struct.Struct("!i")
_INT8 = struct.Struct("!iq")  # an int8 element: its length (8), then its value
_FLOAT8 = struct.Struct("!id")  # a float8 element: its length (8), then its value
_NULL = _LENGTH.pack(-1)


class TextArray(list[str | None]):
    """A list to send as text[]."""


class Int8Array(list[int | None]):
    """A list to send as bigint[] (the statement may cast it to smallint[])."""


class ByteaArray(list[bytes | None]):
    """A list to send as bytea[]."""


class Float8Array(list[float | None]):
    """A list to send as float8[]."""


class _ArrayDumper(Dumper):
    format = Format.BINARY
    element: ClassVar[str]

    def __init__(self, cls: type, context: AdaptContext | None = None):
        super().__init__(cls, context)
        info = postgres.types[self.element]
        self.oid = info.array_oid
        self._element_oid = info.oid

    def dump(self, obj: list[Any]) -> bytes:
        if not obj:
            return _EMPTY_HEAD.pack(0, 0, self._element_oid)
        parts = [b""]
        has_null = 0
        for item in obj:
            if item is None:
                parts.append(_NULL)
                has_null = 1
            else:
                parts.append(self._element_bytes(item))
        parts[0] = _HEAD.pack(1, has_null, self._element_oid, len(obj), 1)
        return b"".join(parts)

    def _element_bytes(self, item: Any) -> bytes:
        """The element's length, then its binary form."""
        raise NotImplementedError


class _TextArrayDumper(_ArrayDumper):
    element = "text"

    def __init__(self, cls: type, context: AdaptContext | None = None):
        super().__init__(cls, context)
        connection = self.connection
        encoding = connection.info.encoding if connection is not None else "utf-8"
        # As psycopg's own str dumper: SQL_ASCII takes any bytes, UTF-8 ones.
        self._encoding = "utf-8" if encoding == "ascii" else encoding

    def _element_bytes(self, item: Any) -> bytes:
        data: bytes = item.encode(self._encoding)
        return _LENGTH.pack(len(data)) + data


class _Int8ArrayDumper(_ArrayDumper):
    element = "int8"

    def _element_bytes(self, item: Any) -> bytes:
        try:
            return _INT8.pack(8, item)
        except struct.error:
            # What PostgreSQL answers psycopg's numeric for it: the appender
            # fails that event alone, as for any value the database refuses.
            raise psycopg.errors.NumericValueOutOfRange(
                f"{item} is out of range for type bigint"
            ) from None


class _ByteaArrayDumper(_ArrayDumper):
    element = "bytea"

    def _element_bytes(self, item: Any) -> bytes:
        data = bytes(item)  # a memoryview's length in bytes, not in its items
        return _LENGTH.pack(len(data)) + data


class _Float8ArrayDumper(_ArrayDumper):
    element = "float8"

    def _element_bytes(self, item: Any) -> bytes:
        return _FLOAT8.pack(8, item)


psycopg.adapters.register_dumper(TextArray, _TextArrayDumper)
psycopg.adapters.register_dumper(Int8Array, _Int8ArrayDumper)
psycopg.adapters.register_dumper(ByteaArray, _ByteaArrayDumper)
psycopg.adapters.register_dumper(Float8Array, _Float8ArrayDumper)


def text_array_literal(items: list[str] | None) -> str | None:
    """`items` as a text[] literal (`{"admin","bill,ing"}`), each element
    quoted and its `"` and `\\` escaped, so that any text reads back as itself;
    None for None or none. For a text[] column sent where an array of arrays
    cannot be (a row of unnest(), a COPY's text row)."""
    if not items:
        return None
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"
