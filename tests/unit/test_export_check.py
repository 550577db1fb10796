"""Counting an export's rows as `checkpoint --check FILE.manifest.json` does,
chunk by chunk, on what the server's encoders write."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sealtrail import CheckpointError, check_export
from sealtrail._checkpoint_check import saved_checkpoint_text
from sealtrail._export import MANIFEST_FORMAT
from sealtrail._export_check import _RowCounter
from sealtrail._export_rows import CSV_COLUMNS as VERIFIED_COLUMNS
from sealtrail_server.export.formats import CSV_COLUMNS as WRITTEN_COLUMNS
from sealtrail_server.export.formats import CsvEncoder, Encoder, JsonEncoder, NdjsonEncoder


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
