"""The appender's array parameters (store/arrays.py) reach PostgreSQL as the
same values psycopg's own list dumping sends, for every kind of column the
appender writes, NULLs, empty arrays and edge values included."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg.adapt import PyFormat
from psycopg.sql import SQL

from sealtrail_server.store import arrays
from sealtrail_server.store.arrays import ByteaArray, Int8Array, TextArray

CASES = [
    (TextArray, "text", ["a", "", None, "é ü 漢 😀", "x" * 100_000, "'\"{},\\ NULL"]),
    (TextArray, "text", []),
    (TextArray, "text", [None]),
    (TextArray, "uuid", [str(uuid.uuid4()), None, "00000000-0000-0000-0000-000000000000"]),
    (TextArray, "timestamptz", ["2026-01-02T03:04:05.123456Z", None, "1970-01-01T00:00:00Z"]),
    (Int8Array, "bigint", [0, -1, 1, 2**63 - 1, -(2**63), None]),
    (Int8Array, "bigint", []),
    (Int8Array, "bigint", [None]),
    (Int8Array, "smallint", [0, 1, 32767, -32768, None]),
    (ByteaArray, "bytea", [b"", b"\x00\xff", None, bytes(range(256)), b"z" * 70_000]),
    (ByteaArray, "bytea", []),
    (ByteaArray, "bytea", [None, memoryview(b"view")]),
]


@pytest.mark.parametrize(("array", "kind", "values"), CASES)
def test_an_array_arrives_as_psycopg_would_send_it(
    sql: psycopg.Connection[Any], array: type[list[Any]], kind: str, values: list[Any]
) -> None:
    # The array's own dumper, not psycopg's for lists (a TextArray is a list).
    assert sql.adapters.get_dumper(array, PyFormat.BINARY).__module__ == arrays.__name__
    # The values, and the array's shape (its lower bound, whether it holds NULL).
    statement = SQL(
        "SELECT a, array_lower(a, 1), array_position(a, NULL) IS NOT NULL"
        " FROM (SELECT %b::{}[] AS a) AS sent"
    ).format(SQL(kind))
    [sent] = sql.execute(statement, [array(values)]).fetchall()
    [as_psycopg] = sql.execute(statement, [list(values)]).fetchall()
    assert sent == as_psycopg
    assert len(sent[0]) == len(values)


def test_a_value_postgresql_refuses_is_refused_as_it_would_be(
    sql: psycopg.Connection[Any],
) -> None:
    """A NUL in text, an int outside smallint: the same refusal as psycopg's
    own dumping gets, which the appender turns into one event's error."""
    for array, kind, values in (
        (TextArray, "text", ["a\x00b"]),
        (Int8Array, "smallint", [40_000]),
        (Int8Array, "bigint", [2**63]),
    ):
        statement = SQL("SELECT %b::{}[]").format(SQL(kind))
        with pytest.raises(psycopg.DataError) as ours:
            sql.execute(statement, [array(values)])
        with pytest.raises(psycopg.DataError) as psycopgs:
            sql.execute(statement, [list(values)])
        assert type(ours.value) is type(psycopgs.value)
