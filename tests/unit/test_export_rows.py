"""Rebuilding a CSV or JSON export's rows into records (sealtrail._export_rows):
the canonical form its C-encoded path writes held to RFC 8785's, and the
Python work each row costs held to a budget (counted, never timed)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

import pytest
import rfc8785
from hypothesis import example, given
from hypothesis import strategies as st

from sealtrail._export_check import rebuilt_rows
from sealtrail._export_rows import _day_and_time, canonical, walked_canonical
from sealtrail_server.export.formats import CsvEncoder, Encoder, JsonEncoder

SAFE: Final = 2**53 - 1  # rfc8785 refuses ints of magnitude 2**53 and more

# Any string JSON reads back, lone surrogates aside (an export is UTF-8):
# controls, U+2028, private use, astral planes, and what looks like a number.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12) | st.sampled_from(
    ["", "\x1f", '"', "\\", "\u2028", "\ue000", "\uffff", "\U0001f600", ":1.0", ",1e+21", "[-0.0"]
)
numbers = (
    st.integers(min_value=-SAFE, max_value=SAFE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 1e16, 1e21, 1e-7, 1e-6, 123456789012345.6, 2.0**53])
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=25,
)


@given(json_values)
@example({"\ue000": 1, "\U0001f600": 2})  # code points and UTF-16 sort these apart
@example([1.0, -0.0, 1e16, 1e-7, 9007199254740993, "1.0", 12.5])
def test_canonical_is_rfc_8785s_form_by_either_path(value: Any) -> None:
    """`canonical` writes most records by the C encoder and checks its text
    for what RFC 8785 writes otherwise (numbers, keys sorted by UTF-16 code
    units), which it walks: both must be JCS's form, and the same."""
    written = canonical(value)
    assert written == walked_canonical(value)
    if not _has_big_int(value):  # rfc8785 refuses them; the record writes their double
        assert written == rfc8785.dumps(value).decode()


def test_canonical_refuses_what_is_no_json_as_the_walk_does() -> None:
    for value in (math.inf, -math.inf, math.nan, {"a": [math.nan]}):
        with pytest.raises(ValueError):
            walked_canonical(value)
        with pytest.raises(ValueError):
            canonical(value)


two_digits = st.integers(min_value=0, max_value=99).map(lambda number: f"{number:02d}")


@given(st.integers(min_value=0, max_value=9999), two_digits, two_digits, two_digits, two_digits,
       two_digits)  # fmt: skip
@example(2024, "02", "29", "23", "59", "60")  # a leap day; a leap second
@example(2023, "02", "29", "00", "00", "00")
@example(0, "01", "01", "00", "00", "00")
def test_a_time_is_a_day_and_a_time_exactly_as_strptime_reads_one(
    year: int, month: str, day: str, hour: str, minute: str, second: str
) -> None:
    """`_day_and_time` stands in for `strptime(seconds, "%Y-%m-%dT%H:%M:%S")`
    (several microseconds a time, two a row) on a time's matched digits: it
    must refuse exactly what strptime refuses."""
    seconds = f"{year:04d}-{month}-{day}T{hour}:{minute}:{second}"
    try:
        datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S")
        read = True
    except ValueError:
        read = False
    try:
        _day_and_time(seconds)
        checked = True
    except ValueError:
        checked = False
    assert checked == read, seconds


def _has_big_int(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > SAFE
    if isinstance(value, list):
        return any(_has_big_int(item) for item in value)
    if isinstance(value, dict):
        return any(_has_big_int(item) for item in value.values())
    return False


def _record(seq: int) -> str:
    return json.dumps(
        {
            "v": 1,
            "tenant_id": "acme",
            "seq": seq,
            "id": f"0190a1b2-0000-7000-8000-{seq:012d}",
            "occurred_at": "2026-01-01T00:00:00.123456Z",
            "received_at": "2026-01-01T00:00:01.500000Z",
            "action": "report.download",
            "category": "data_access",
            "severity": "info",
            "outcome": "success",
            "description": f'Downloaded, "quoted" {seq}',
            "actor": {"type": "user", "id": f"user_{seq}", "roles": ["admin", "billing"]},
            "resource": {"type": "report", "id": f"r-{seq}", "name": "=SUM(A1)"},
            "context": {"ip": "10.0.0.1", "http_status_code": 200, "duration_ms": 12.5},
            "changes": [{"field": "role", "before": "viewer", "after": "admin"}],
            "details": {"n": seq, "nested": {"a": [1, 2.5, "x"]}, "cell": "-1"},
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def _api_event(record: str, leaf: bytes) -> dict[str, Any]:
    """The API's JSON mapping of `record`, as the JSON export writes an event."""
    r = json.loads(record)
    return {
        "id": r["id"], "seq": str(r["seq"]), "tenantId": r["tenant_id"],
        "receivedAt": "2026-01-01T00:00:01.500Z", "occurredAt": r["occurred_at"],
        "action": r["action"], "category": "CATEGORY_DATA_ACCESS",
        "severity": "SEVERITY_INFO", "outcome": "OUTCOME_SUCCESS",
        "description": r["description"],
        "actor": {"type": "ACTOR_TYPE_USER", "id": r["actor"]["id"], "roles": ["admin", "billing"]},
        "resource": r["resource"],
        "context": {"ip": "10.0.0.1", "httpStatusCode": 200, "durationMs": 12.5},
        "changes": r["changes"], "details": r["details"],
        "leafHash": __import__("base64").b64encode(leaf).decode(),
    }  # fmt: skip


_ROWS: Final = 200
# Python calls a row may cost as it is rebuilt and held to the server's
# writing (a CSV's, a JSON array's): the walk of each value took over 300.
_CALLS_PER_ROW: Final = 60


@pytest.mark.parametrize(
    ("kind", "new_encoder"),
    [
        ("text/csv", CsvEncoder),
        ("application/json", lambda: JsonEncoder(lambda record, leaf: _api_event(record, leaf))),
    ],
    ids=["csv", "json"],
)
def test_a_row_is_rebuilt_and_checked_in_a_bounded_number_of_python_calls(
    tmp_path: Path, kind: str, new_encoder: Callable[[], Encoder]
) -> None:
    """Each row's record was written by walking it in Python (RFC 8785 by
    hand, a JSON dump per string, twice for a CSV's JSON cells), 0.4 to 0.6
    ms a row: an hour for an auditor's 10M-row export. Counted in calls, not
    timed: a row's must stay within a small budget."""
    from sealtrail.tlog import leaf_hash

    encoder = new_encoder()
    content = encoder.start()
    for seq in range(1, _ROWS + 1):
        record = _record(seq)
        content += encoder.row(record, leaf_hash(record.encode()))
    content += encoder.end()
    export = tmp_path / "audit"
    export.write_bytes(content)
    rebuilt_rows(export, kind, "sealtrail.test/log/acme")  # imports and compiles, once

    calls = 0

    def count(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        rebuilt = rebuilt_rows(export, kind, "sealtrail.test/log/acme")
    finally:
        sys.setprofile(None)
    assert isinstance(rebuilt, tuple) and rebuilt[0] == _ROWS
    assert calls / _ROWS <= _CALLS_PER_ROW
