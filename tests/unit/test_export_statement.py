"""An export's statement (ADR 0129) is a note of its own kind: the key that
signs it signs checkpoints, erasure receipts and retention statements too, and
none may be read as another."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from sealtrail.tlog import (
    ErasureStatement,
    ExportStatement,
    NoteError,
    PurgeStatement,
    parse_checkpoint,
)

STATEMENT = ExportStatement(
    origin="sealtrail.test/log/acme",
    export_event_id="0193a1b2-0000-7000-8000-000000000001",
    media_type="text/csv; charset=utf-8",
    tree_size=12,
    root_hash=bytes(range(32)),
    sha256=hashlib.sha256(b"a,b\n").digest(),
    byte_count=4,
    row_count=1,
    first_seq=3,
    last_seq=3,
    range_first_seq=2,
    range_last_seq=5,
)


def test_a_statement_reads_back_as_signed_and_as_nothing_else() -> None:
    text = STATEMENT.text()
    assert ExportStatement.parse(text) == STATEMENT
    for parse in (parse_checkpoint, ErasureStatement.parse, PurgeStatement.parse):
        with pytest.raises(NoteError):
            parse(text)
    with pytest.raises(NoteError, match="not an export statement"):
        ExportStatement.parse("sealtrail.test/log/acme\n12\n" + text.split("\n")[5] + "\n")


def test_a_manifest_is_held_to_each_field_the_statement_signs() -> None:
    kept = {"file": "audit.csv", "checkpoint": "...", **STATEMENT.manifest_fields()}
    assert STATEMENT.differences(kept) == []
    assert STATEMENT.differences({**kept, "row_count": 2, "range_last_seq": 6}) == [
        "row_count 2 where the statement signs 1",
        "range_last_seq 6 where the statement signs 5",
    ]
    # A whole number written as 1.0, or a range the export was not of.
    whole = replace(STATEMENT, range_first_seq=0, range_last_seq=0)
    assert whole.differences({**whole.manifest_fields(), "row_count": 1.0}) == [
        "row_count 1.0 where the statement signs 1"
    ]
    assert whole.differences({**whole.manifest_fields(), "range_last_seq": 4}) == [
        "range_last_seq 4 where the statement signs none"
    ]
