"""Counting an export's rows as `checkpoint --check FILE.manifest.json` does,
chunk by chunk, on what the server's encoders write."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest

from sealtrail import CheckpointError, ExportMismatchError, check_export
from sealtrail._checkpoint_check import saved_checkpoint_text
from sealtrail._export import MANIFEST_FORMAT
from sealtrail._export_check import _RowCounter, rebuilt_rows
from sealtrail._export_rows import CSV_COLUMNS as VERIFIED_COLUMNS
from sealtrail._export_rows import written_cell
from sealtrail.tlog import TreeBuilder
from sealtrail_server.export.formats import CSV_COLUMNS as WRITTEN_COLUMNS
from sealtrail_server.export.formats import (
    CsvEncoder,
    Encoder,
    JsonEncoder,
    NdjsonEncoder,
    neutralise,
)


def _record(seq: int, description: str) -> str:
    return json.dumps(
        {
            "seq": seq,
            "id": f"id-{seq}",
            "occurred_at": "2026-01-01T00:00:00Z",
            "received_at": "2026-01-01T00:00:00Z",
            "action": "file.read",
            "severity": "info",
            "outcome": "success",
            "description": description,
            "actor": {"type": "user", "id": "ops"},
            "details": {"note": 'a "quoted"\nline'},
        }
    )


@pytest.mark.parametrize(
    "new_encoder",
    [CsvEncoder, NdjsonEncoder, lambda: JsonEncoder(lambda record, _: json.loads(record))],
    ids=["csv", "ndjson", "json"],
)
@pytest.mark.parametrize("rows", [0, 1, 3])
@pytest.mark.parametrize("chunk", [1, 2, 7, 1 << 20])
def test_rows_are_counted_across_chunks_and_line_breaks_in_cells(
    new_encoder: Callable[[], Encoder], rows: int, chunk: int
) -> None:
    """A CSV cell may hold line breaks and quotes (a description of two
    lines): a break inside quotes ends no row, however the chunks cut them."""
    encoder = new_encoder()
    descriptions = ['two\r\nlines, "quoted"', "\n", '"', "plain"]
    content = encoder.start()
    for seq in range(1, rows + 1):
        content += encoder.row(_record(seq, descriptions[seq % 4]), bytes(32))
    content += encoder.end()
    counter = _RowCounter(encoder.media_type)
    for start in range(0, len(content), chunk):
        counter.update(content[start : start + chunk])
    assert counter.rows() == rows


@pytest.mark.parametrize("read_by", [saved_checkpoint_text, check_export])
def test_a_manifest_read_from_stdin_is_refused_saying_to_name_it(
    monkeypatch: pytest.MonkeyPatch, read_by: Callable[..., object]
) -> None:
    """A manifest piped to `checkpoint --check -` had its checkpoint checked
    and its file not (none can be found from stdin), and the command said
    CONSISTENT, as of the whole export; `check_export("-")` said stdin was no
    export's manifest. Refused, saying why and what to give instead."""
    manifest = {"format": MANIFEST_FORMAT, "file": "audit.csv", "checkpoint": "log\n1\n"}
    stdin = io.TextIOWrapper(io.BytesIO(json.dumps(manifest).encode()), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    with pytest.raises(
        CheckpointError,
        match=r"^stdin holds an export's manifest, and its file \(audit\.csv\) cannot be found"
        r" from stdin to be checked: give FILE\.manifest\.json by its name, beside FILE",
    ):
        read_by(Path("-"), **({"key": "k"} if read_by is check_export else {}))


def test_the_verifier_knows_every_column_the_server_writes_in_a_csv_export() -> None:
    """The client rebuilds a CSV row into its record by its own list of the
    columns (it cannot import the server): a column the server adds must be
    added there too, or every export carrying it is reported not proven."""
    assert VERIFIED_COLUMNS == WRITTEN_COLUMNS


@pytest.mark.parametrize("kind", ["text/csv", "application/json"])
def test_a_file_that_cannot_be_read_as_its_rows_are_rebuilt_is_said_so_not_tampered(
    tmp_path: Path, kind: str
) -> None:
    """An OSError as the rows are rebuilt (the file gone, unreadable, a disk's
    fault after its digest was read) was a tampering verdict: `row 1 is no
    record's (FileNotFoundError): no export writes it so`. It is said as the
    I/O error it is."""
    gone = tmp_path / "audit.csv"
    with pytest.raises(
        ExportMismatchError, match=rf"^{re.escape(str(gone))} cannot be read: No such file"
    ):
        rebuilt_rows(gone, kind, "acme")


def test_a_csv_exports_header_is_read_once_as_its_rows_are_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows' rebuilding read a CSV export's header, and the check of the
    columns an older Sealtrail wrote opened the file again to read it once
    more. Read once, by the rows' reader."""
    export = tmp_path / "audit.csv"
    export.write_bytes(CsvEncoder().start())
    opened: list[Path] = []
    real_open = Path.open

    def open_counted(path: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_counted)
    assert rebuilt_rows(export, "text/csv", "acme") == (0, TreeBuilder().root())
    assert opened == [export]


# Each character a cell may start with, alone, before a sign, and after one.
_CELLS: Final = [
    text
    for code in range(0x3100)
    for text in (chr(code), chr(code) + "=1", "=" + chr(code), chr(code) * 2 + "+x")
] + ["", "'", "''x", " \u3000\ufeff-1", "a=1", "\u200b@x"]


def test_the_verifier_guards_a_cell_against_formulas_exactly_as_the_server_does() -> None:
    """The client holds a CSV cell to the server's writing of its value (a
    leading `'` where the server neutralises it, none elsewhere) by its own
    copy of the rule (it cannot import the server): the two must agree."""
    assert [written_cell(text) for text in _CELLS] == [neutralise(text) for text in _CELLS]
