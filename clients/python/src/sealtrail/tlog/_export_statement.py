"""Export statements: what an export sent, signed by the key that signs its
log's checkpoints, as a C2SP signed note of its own kind (ADR 0129).

    sealtrail export statement v1
    <log origin>
    <export event id: the `audit_log.exported` event that records it>
    <media type>
    <tree size of the log it was taken from, decimal>
    <root hash of the log at that size, base64>
    <SHA-256 of the content, hex>
    <byte count>
    <row count>
    <first seq exported, 0 if none>
    <last seq exported, 0 if none>
    <first seq of the range asked for, 0 if none>
    <last seq of the range asked for, 0 if none>

The manifest's checkpoint signs the log's size and root, and nothing of the
file: its digest and counts were the manifest's own word, and whoever held
the file rewrote both the file and its manifest into a pair that checked.
The first line tells a statement from a checkpoint (whose first line is its
origin, with a slash) and from an erasure receipt or a retention statement
(their own headers): one key signs them all, and none stands for another.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, Final

from sealtrail.tlog._checkpoint import parse_size_and_root
from sealtrail.tlog._note import NoteError, statement_lines

EXPORT_STATEMENT_HEADER: Final = "sealtrail export statement v1"
_NUMBER = re.compile(r"0|[1-9][0-9]{0,19}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COUNTS: Final = (
    "byte_count",
    "row_count",
    "first_seq",
    "last_seq",
    "range_first_seq",
    "range_last_seq",
)


@dataclass(frozen=True, slots=True)
class ExportStatement:
    """What an export statement's signed note says; its fields are named as
    the manifest's (FILE.manifest.json) are."""

    origin: str
    export_event_id: str
    media_type: str
    tree_size: int
    root_hash: bytes
    sha256: bytes
    byte_count: int
    row_count: int
    first_seq: int
    last_seq: int
    range_first_seq: int
    range_last_seq: int

    def text(self) -> str:
        """The note's text, to be signed."""
        return "".join(
            f"{line}\n"
            for line in (
                EXPORT_STATEMENT_HEADER,
                self.origin,
                self.export_event_id,
                self.media_type,
                str(self.tree_size),
                base64.b64encode(self.root_hash).decode(),
                self.sha256.hex(),
                *(str(getattr(self, name)) for name in _COUNTS),
            )
        )

    @classmethod
    def parse(cls, text: str) -> ExportStatement:
        """The statement in a note's text (as `open_note` returns it);
        NoteError if it is none (a checkpoint's, or another statement's)."""
        lines = statement_lines(text, EXPORT_STATEMENT_HEADER, 12, what="export statement")
        origin, event_id, media_type, size, root, digest, *counts = lines
        if not origin or not event_id or not media_type:
            raise NoteError("an export statement names a log, an export event and a media type")
        tree_size, root_hash = parse_size_and_root(size, root, of="the statement's tree")
        if not _SHA256.fullmatch(digest):
            raise NoteError("the statement's sha256 is not 64 lowercase hex digits")
        for name, count in zip(_COUNTS, counts, strict=True):
            if not _NUMBER.fullmatch(count):
                raise NoteError(f"the statement's {name} {count!r} is not a decimal number")
        numbers = [int(count) for count in counts]
        sha256 = bytes.fromhex(digest)
        return cls(origin, event_id, media_type, tree_size, root_hash, sha256, *numbers)

    def manifest_fields(self) -> dict[str, object]:
        """The fields a manifest (FILE.manifest.json) keeps of what this
        signs, as it keeps them (hashes as hex and base64, a range's only for
        an export of a seq range)."""
        fields: dict[str, object] = {
            "export_event_id": self.export_event_id,
            "media_type": self.media_type,
            "tree_size": self.tree_size,
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "sha256": self.sha256.hex(),
            **{name: getattr(self, name) for name in _COUNTS},
        }
        if not self.range_last_seq:
            del fields["range_first_seq"], fields["range_last_seq"]
        return fields

    def differences(self, manifest: dict[str, Any]) -> list[str]:
        """What `manifest` (FILE.manifest.json, read as JSON) says otherwise
        than this signs, a phrase a field: `sha256 X where the statement
        signs Y`."""
        signed = self.manifest_fields()
        differ = []
        for name, value in signed.items():
            said = manifest.get(name)
            if said != value or type(said) is not type(value):
                differ.append(f"{name} {said} where the statement signs {value}")
        for name in ("range_first_seq", "range_last_seq"):
            if name not in signed and manifest.get(name, 0) != 0:
                differ.append(f"{name} {manifest.get(name)} where the statement signs none")
        return differ
