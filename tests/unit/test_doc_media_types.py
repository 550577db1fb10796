"""The media types the docs show an export's manifest or statement carrying
are those the server writes (server/sealtrail_server/export/formats.py): an
auditor comparing a statement's `media_type` line with the doc's sample read
`text/csv; charset=utf-8` where the server signs `text/csv` (helper-554)."""

from __future__ import annotations

import re
from pathlib import Path

from sealtrail_server.export.formats import Encoder

ROOT = Path(__file__).resolve().parents[2]
# A media type as a doc writes one: `type/subtype`, and its parameters if any.
MEDIA_TYPE = re.compile(r"\b(?:text|application)/[\w.+-]+(?:; ?[\w-]+=[\w.-]+)*")


def _written() -> set[str]:
    return {encoder.media_type for encoder in Encoder.__subclasses__()}


def test_the_server_writes_a_media_type_per_format() -> None:
    assert _written() == {"text/csv", "application/x-ndjson", "application/json"}


def test_every_media_type_a_doc_says_an_export_carries_is_one_the_server_writes() -> None:
    shown: dict[str, str] = {}
    for doc in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))]:
        for number, line in enumerate(doc.read_text("utf-8").splitlines(), 1):
            if "media_type" in line:
                for found in MEDIA_TYPE.findall(line):
                    shown[f"{doc.name}:{number}"] = found
    assert shown, "no doc shows an export's media_type: the check checks nothing"
    assert {where: kind for where, kind in shown.items() if kind not in _written()} == {}
