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

and, from v2 on (ADR 0130), first line `sealtrail export statement v2`:

    <SHA-256, hex, of the export's filter: its JSON (RFC 8785), as the
     export's `audit_log.exported` event records it; `{}` for none>
    <how many seqs of the range (of the log up to its tree size, without
     one) retention had removed when the export read them, decimal>

v1 signed no filter: a filtered export of a range (one actor's events of
seqs 2..5) read, offline, as the whole range; nor what retention had
removed: an unfiltered range with a purged seq read as one missing a row
for any other reason. A v1 statement still parses, its `filtered` and
`removed_count` None (not known); a server signs v2 only. A version beyond
v2 (`sealtrail export statement v3`) is a newer Sealtrail's, which this
client cannot read: NewerStatementError, saying to upgrade it, not "not an
export statement" as of one forged.

The manifest's checkpoint signs the log's size and root, and nothing of the
file: its digest and counts were the manifest's own word, and whoever held
the file rewrote both the file and its manifest into a pair that checked.
The first line tells a statement from a checkpoint (whose first line is its
origin, with a slash) and from an erasure receipt or a retention statement
(their own headers): one key signs them all, and none stands for another.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

from sealtrail.tlog._checkpoint import parse_size_and_root
from sealtrail.tlog._note import NoteError, refuse_newer, statement_lines

EXPORT_STATEMENT_HEADER: Final = "sealtrail export statement v2"
# A statement of a server before ADR 0130: it signs no filter.
EXPORT_STATEMENT_HEADER_V1: Final = "sealtrail export statement v1"
# The filter of an export of every event (of its range, if any): `{}`.
UNFILTERED_SHA256: Final = hashlib.sha256(b"{}").digest()
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


def _sha256(text: str) -> bytes:
    """The SHA-256 of `text`'s UTF-8 bytes (a lone surrogate, read from JSON,
    kept as such: no filter's digest)."""
    return hashlib.sha256(text.encode(errors="surrogatepass")).digest()


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
    # The SHA-256 of the filter's text, the manifest's `filter`
    # (UNFILTERED_SHA256: none); None: a statement v1, which signs none.
    filter_sha256: bytes | None = None
    # How many seqs of the range (of the log up to tree_size, without one)
    # retention had removed as the export read them; None: a statement v1.
    removed_count: int | None = None

    @property
    def filtered(self) -> bool | None:
        """Whether the export was of the events matching a filter, not of
        every event (of its range, if any); None if not known: a statement v1
        signs no filter."""
        if self.filter_sha256 is None:
            return None
        return self.filter_sha256 != UNFILTERED_SHA256

    @property
    def filter_hex(self) -> str | None:
        """`filter_sha256` in hex, as the note writes it."""
        return None if self.filter_sha256 is None else self.filter_sha256.hex()

    def text(self) -> str:
        """The note's text, to be signed: v2, or v1 without a filter's digest
        and a removed count (ValueError: one of them without the other)."""
        v2 = self.filter_sha256 is not None
        if v2 != (self.removed_count is not None):
            raise ValueError(
                "a statement v2 signs both filter_sha256 and removed_count, v1 neither"
            )
        return "".join(
            f"{line}\n"
            for line in (
                EXPORT_STATEMENT_HEADER if v2 else EXPORT_STATEMENT_HEADER_V1,
                self.origin,
                self.export_event_id,
                self.media_type,
                str(self.tree_size),
                base64.b64encode(self.root_hash).decode(),
                self.sha256.hex(),
                *(str(getattr(self, name)) for name in _COUNTS),
                *([self.filter_hex, str(self.removed_count)] if v2 else []),
            )
        )

    @classmethod
    def parse(cls, text: str) -> ExportStatement:
        """The statement in a note's text (as `open_note` returns it);
        NoteError if it is none (a checkpoint's, or another statement's),
        NewerStatementError if it is of a version beyond this client's."""
        refuse_newer(text, EXPORT_STATEMENT_HEADER, what="the export's statement")
        v1 = text.startswith(EXPORT_STATEMENT_HEADER_V1 + "\n")
        header = EXPORT_STATEMENT_HEADER_V1 if v1 else EXPORT_STATEMENT_HEADER
        lines = statement_lines(text, header, 12 if v1 else 14, what="export statement")
        filter_sha256 = removed_count = None
        if not v1:
            removed = lines.pop()
            if not _NUMBER.fullmatch(removed):
                raise NoteError(
                    f"the statement's removed_count {removed!r} is not a decimal number"
                )
            removed_count = int(removed)
            filter_hex = lines.pop()
            if not _SHA256.fullmatch(filter_hex):
                raise NoteError("the statement's filter_sha256 is not 64 lowercase hex digits")
            filter_sha256 = bytes.fromhex(filter_hex)
        origin, event_id, media_type, size, root, digest, *counts = lines
        if not origin or not event_id or not media_type:
            raise NoteError("an export statement names a log, an export event and a media type")
        tree_size, root_hash = parse_size_and_root(size, root, of="the statement's tree")
        if not _SHA256.fullmatch(digest):
            raise NoteError("the statement's sha256 is not 64 lowercase hex digits")
        for name, count in zip(_COUNTS, counts, strict=True):
            if not _NUMBER.fullmatch(count):
                raise NoteError(f"the statement's {name} {count!r} is not a decimal number")
        numbers = {name: int(count) for name, count in zip(_COUNTS, counts, strict=True)}
        sha256 = bytes.fromhex(digest)
        return cls(
            origin,
            event_id,
            media_type,
            tree_size,
            root_hash,
            sha256,
            filter_sha256=filter_sha256,
            removed_count=removed_count,
            **numbers,
        )

    def manifest_fields(self) -> dict[str, object]:
        """The fields a manifest (FILE.manifest.json) keeps of what this
        signs, as it keeps them (hashes as hex and base64, a range's only for
        an export of a seq range, a removed count only from v2)."""
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
        if self.removed_count is not None:
            fields["removed_count"] = self.removed_count
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
        # Of a statement v1, none: the manifest's would be its holder's word.
        if "removed_count" not in signed and "removed_count" in manifest:
            said = manifest["removed_count"]
            differ.append(f"removed_count {said} where the statement signs none")
        # The filter's text, which the statement signs by its digest; of a
        # statement v1 none (the manifest's would be its holder's word).
        said = manifest.get("filter")
        if self.filter_sha256 is None:
            if "filter" in manifest:
                differ.append(f"filter {said!r} where the statement signs none")
        elif not isinstance(said, str) or _sha256(said) != self.filter_sha256:
            differ.append(
                f"filter {said!r} where the statement signs a filter of sha256 {self.filter_hex}"
            )
        return differ
