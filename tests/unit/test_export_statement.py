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


def test_a_statement_signs_the_filter_of_its_export() -> None:
    """A statement v1 signed the seqs, range and counts, not the filter: a
    filtered export of a range (one actor's events of seqs 2..5) read, offline,
    as the whole range. v2 signs the SHA-256 of the filter's text (RFC 8785
    JSON, `{}` for none), which the manifest keeps as `filter` (ADR 0130)."""
    text = '{"actor":"alice"}'
    filtered = replace(
        STATEMENT, filter_sha256=hashlib.sha256(text.encode()).digest(), removed_count=0
    )
    assert filtered.text().startswith("sealtrail export statement v2\n")
    assert filtered.text().endswith(f"\n5\n{hashlib.sha256(text.encode()).hexdigest()}\n0\n")
    assert ExportStatement.parse(filtered.text()) == filtered
    assert filtered.filtered is True
    whole = replace(STATEMENT, filter_sha256=hashlib.sha256(b"{}").digest(), removed_count=0)
    assert whole.filtered is False
    kept = {**filtered.manifest_fields(), "filter": text}
    assert filtered.differences(kept) == []
    assert filtered.differences({**kept, "filter": "{}"}) == [
        f"filter '{{}}' where the statement signs a filter of sha256 {filtered.filter_hex}"
    ]
    assert filtered.differences(filtered.manifest_fields()) == [
        f"filter None where the statement signs a filter of sha256 {filtered.filter_hex}"
    ]
    # v1 signs none: it parses, says nothing of a filter, and a manifest's is refused.
    assert STATEMENT.text().startswith("sealtrail export statement v1\n")
    assert ExportStatement.parse(STATEMENT.text()) == STATEMENT
    assert STATEMENT.filter_sha256 is None and STATEMENT.filtered is None
    assert STATEMENT.differences({**STATEMENT.manifest_fields(), "filter": "{}"}) == [
        "filter '{}' where the statement signs none"
    ]
    # A line too many or too few for its version, a digest not one.
    with pytest.raises(NoteError, match="has 15 lines"):
        ExportStatement.parse(STATEMENT.text().replace(" v1\n", " v2\n"))
    with pytest.raises(NoteError, match="has 13 lines"):
        ExportStatement.parse(filtered.text().replace(" v2\n", " v1\n"))
    with pytest.raises(NoteError, match="filter_sha256"):
        ExportStatement.parse(filtered.text()[:-4] + "G\n0\n")


def test_a_statement_signs_how_many_seqs_of_its_range_retention_removed() -> None:
    """An unfiltered export of a range with a purged seq read as one missing a
    row for any other reason: v2 signs, last, how many seqs of the range (of
    the log up to its size, without one) retention had removed as the export
    read them, which the manifest keeps as `removed_count` (ADR 0130)."""
    purged = replace(STATEMENT, filter_sha256=hashlib.sha256(b"{}").digest(), removed_count=3)
    assert purged.text().endswith(f"\n{hashlib.sha256(b'{}').hexdigest()}\n3\n")
    assert ExportStatement.parse(purged.text()) == purged
    kept = {**purged.manifest_fields(), "filter": "{}"}
    assert kept["removed_count"] == 3
    assert purged.differences(kept) == []
    assert purged.differences({**kept, "removed_count": 0}) == [
        "removed_count 0 where the statement signs 3"
    ]
    assert purged.differences({**kept, "removed_count": 3.0}) == [
        "removed_count 3.0 where the statement signs 3"
    ]
    # v1 signs none: not known, and a manifest's is refused (its holder's word).
    assert STATEMENT.removed_count is None
    assert "removed_count" not in STATEMENT.manifest_fields()
    assert STATEMENT.differences({**STATEMENT.manifest_fields(), "removed_count": 0}) == [
        "removed_count 0 where the statement signs none"
    ]
    # A v2 statement signs both, or it is no statement.
    with pytest.raises(ValueError, match="removed_count"):
        replace(purged, removed_count=None).text()
    with pytest.raises(NoteError, match="removed_count '-1' is not a decimal number"):
        ExportStatement.parse(purged.text()[:-2] + "-1\n")


@pytest.mark.parametrize("version", ["3", "10", "1000"])
def test_a_statement_of_a_version_beyond_this_clients_says_to_upgrade_it(version: str) -> None:
    """A statement v3 was `not an export statement: its text does not begin
    with 'sealtrail export statement v2'`, as one forged or of another kind:
    it is one a newer Sealtrail signed, which this client cannot read."""
    v2 = replace(STATEMENT, filter_sha256=hashlib.sha256(b"{}").digest(), removed_count=0).text()
    newer = v2.replace(" v2\n", f" v{version}\n", 1) + "a line it adds\n"
    with pytest.raises(
        NoteError,
        match=rf"^the export's statement is a v{version}, made by a newer Sealtrail: upgrade the"
        r" client$",
    ):
        ExportStatement.parse(newer)
    # No version, or none of a number, is no statement (nor is v0).
    for header in ("v0", "v02", "vx", "v", "v3 ", "v٣"):
        with pytest.raises(NoteError, match=r"^not an export statement"):
            ExportStatement.parse(v2.replace(" v2\n", f" {header}\n", 1))
