"""Checking a checkpoint saved earlier against the log as it is today: an
auditor's proof that the log they saw was not rewritten since
(docs/integrity.md, "Checking a saved checkpoint").

Both checkpoints must be signed by a key the auditor holds, and the
consistency proof between them is verified here, against the roots the
signatures cover: the server's word (the roots it sends beside the proof)
counts for nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sealtrail._export import MANIFEST_SUFFIX
from sealtrail._words import counted
from sealtrail.tlog import (
    Checkpoint,
    NoteError,
    ProofError,
    Verifier,
    open_note,
    parse_checkpoint,
    verify_consistency,
)

if TYPE_CHECKING:
    from sealtrail.v1 import integrity_pb2

# What a bundle keeps its checkpoint in (_bundle_format.CHECKPOINT), and the field
# of an export's manifest (FILE.manifest.json) that holds one.
_BUNDLE_CHECKPOINT = "checkpoint.txt"
_MANIFEST_FIELD = "checkpoint"


class CheckpointError(Exception):
    """A saved checkpoint cannot be checked: it is malformed, no given key
    signed it (or today's), or no key was given. Neither consistent nor
    rewritten: nothing was proven either way."""


class OtherLogError(CheckpointError):
    """The saved checkpoint is of another log than the one the token reads:
    another tenant's (one key signs every tenant's checkpoints), or another
    deployment's origin."""


@dataclass(frozen=True)
class CheckpointCheck:
    """What checking a saved checkpoint found. `consistent`: the log of
    `saved_size` events the saved checkpoint signs is a prefix of today's of
    `latest_size`; else `reason` says what failed. `signed_by`: the given
    keys (verifier text) that signed today's checkpoint. `latest_issued_at`:
    when the server says it signed today's checkpoint (the latest, up to
    SEALTRAIL_CHECKPOINT_INTERVAL old unless asked `fresh`: so its size may
    be short of the events recorded since), None if it did not say; the
    server's word, which no signature covers."""

    consistent: bool
    origin: str
    saved_size: int
    latest_size: int
    signed_by: list[str]
    reason: str | None = None
    latest_issued_at: datetime | None = None


def verifiers_of(key: str | Sequence[str]) -> list[Verifier]:
    """The verifiers of `key` (one verifier key's text, or several: a log
    whose key was rotated). None given is refused: there is nothing else a
    saved checkpoint could be trusted by."""
    given = [key] if isinstance(key, str) else list(key)
    if not given:
        raise CheckpointError("verifier key: none given")
    try:
        return [Verifier.parse(text) for text in given]
    except NoteError as error:
        raise CheckpointError(f"verifier key: {error}") from None


def other_tenant(origin: str, tenant: str | None) -> str | None:
    """Why a log of `origin` is not `tenant`'s (one key signs every tenant's
    checkpoints, so another tenant's bundle or export checks as well), or
    None: it is, or no tenant was asked for."""
    logged = origin.rsplit("/", 1)[-1]
    if tenant is None or logged == tenant:
        return None
    return f"the log is tenant {logged!r}'s ({origin}), not {tenant!r}'s"


def signer_names(signed_by: Sequence[str]) -> str:
    """The names of the keys (verifier text) that signed a checkpoint, each
    once, as a verdict line ends with them."""
    return ", ".join(sorted({text.split("+", 1)[0] for text in signed_by}))


def _opened(note: str, verifiers: list[Verifier], what: str) -> tuple[Checkpoint, list[Verifier]]:
    try:
        text, signers = open_note(note, verifiers)
        return parse_checkpoint(text), signers
    except NoteError as error:
        raise CheckpointError(f"{what}: {error}") from None


@dataclass(frozen=True)
class SavedCheckpoint:
    """A saved checkpoint, its signature checked, to hold today's against."""

    checkpoint: Checkpoint
    verifiers: list[Verifier]
    # The given keys (verifier text) that signed it.
    signed_by: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, note: str, key: str | Sequence[str]) -> SavedCheckpoint:
        verifiers = verifiers_of(key)
        checkpoint, signers = _opened(note, verifiers, "saved checkpoint")
        return cls(checkpoint, verifiers, [signer.text() for signer in signers])

    def latest(self, note: str) -> tuple[Checkpoint, list[Verifier]]:
        """Today's checkpoint (`note`, as the server sent it), signed by a
        given key and of the saved checkpoint's log."""
        latest, signers = _opened(note, self.verifiers, "the log's latest checkpoint")
        if latest.origin != self.checkpoint.origin:
            raise OtherLogError(
                f"the saved checkpoint is of the log {self.checkpoint.origin}, and the"
                f" token's is {latest.origin}: check it with a token of its tenant"
            )
        return latest, signers

    def needs_proof(self, latest: Checkpoint) -> bool:
        """Whether a consistency proof is to be asked for: not between equal
        sizes (the roots must be equal), nor from the empty log (a prefix of
        any), nor to a log shorter than the saved one (cut back)."""
        return 0 < self.checkpoint.tree_size < latest.tree_size

    def verdict(
        self,
        latest: Checkpoint,
        signers: list[Verifier],
        proof: Sequence[bytes],
        *,
        issued_at: datetime | None = None,
    ) -> CheckpointCheck:
        """Whether `proof` shows the saved log a prefix of `latest`'s, which
        the server says it signed at `issued_at`."""
        saved = self.checkpoint
        reason: str | None = None
        if latest.tree_size < saved.tree_size:
            events = counted(latest.tree_size, "event")
            reason = f"the log is shorter than the saved checkpoint ({events})"
        else:
            try:
                verify_consistency(
                    old_size=saved.tree_size,
                    new_size=latest.tree_size,
                    old_root=saved.root_hash,
                    new_root=latest.root_hash,
                    proof=list(proof),
                )
            except ProofError as error:
                reason = str(error)
        return CheckpointCheck(
            consistent=reason is None,
            origin=saved.origin,
            saved_size=saved.tree_size,
            latest_size=latest.tree_size,
            signed_by=[signer.text() for signer in signers],
            reason=reason,
            latest_issued_at=issued_at,
        )


def issued_at_of(checkpoint: integrity_pb2.SignedCheckpoint) -> datetime | None:
    """When the server says it signed `checkpoint` (UTC), None if it does
    not say. Not a part of the signed note: a C2SP checkpoint holds no time."""
    if not checkpoint.HasField("issued_at"):
        return None
    return checkpoint.issued_at.ToDatetime(UTC)


def saved_checkpoint_text(path: Path) -> str:
    """The signed checkpoint saved at `path`: a file of `sealtrail checkpoint`
    output, a bundle's directory (its checkpoint.txt), or an export's
    manifest (FILE.manifest.json, its "checkpoint"); `-`: a checkpoint's
    text, read from stdin. A manifest read from stdin is refused: its file,
    beside it, cannot be found from there, and its checkpoint alone checked
    would have read as the export checked."""
    try:
        if str(path) == "-":
            text = sys.stdin.buffer.read().decode("utf-8")
        elif path.is_dir():
            return (path / _BUNDLE_CHECKPOINT).read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read the saved checkpoint: {error}") from None
    kind = _export_kind(text)
    if kind is not None:
        raise CheckpointError(
            f"stdin holds an export ({kind}), not a checkpoint: nothing in it is signed; an"
            " export is checked by its manifest, which signs its digest: save it as FILE"
            " beside its FILE.manifest.json and check that"
            if str(path) == "-"
            else f"{path} holds an export ({kind}), not a checkpoint: check its manifest,"
            f" {path}{MANIFEST_SUFFIX}, or offline: sealtrail verify {path} --key VKEY"
        )
    if not text.lstrip().startswith("{"):
        return text
    try:
        kept = json.loads(text)
        note = kept.get(_MANIFEST_FIELD)
    except (ValueError, AttributeError, RecursionError):
        note = None
    if str(path) == "-" and note is not None:
        raise CheckpointError(_manifest_from_stdin(kept))
    if not isinstance(note, str) or not note:
        where = "stdin" if str(path) == "-" else path
        raise CheckpointError(
            f"{where} is JSON without a {_MANIFEST_FIELD!r} of an export manifest"
        )
    return note


def _manifest_from_stdin(kept: dict[str, object]) -> str:
    """Why an export's manifest read from stdin is refused: its checkpoint
    alone was checked, its file not (none is found from stdin), and the
    verdict read as of the whole export."""
    named = kept.get("file")
    file = f"its file ({named})" if isinstance(named, str) and named else "its file"
    return (
        f"stdin holds an export's manifest, and {file} cannot be found from stdin to be"
        f" checked: give FILE{MANIFEST_SUFFIX} by its name, beside FILE (or, for its"
        f" checkpoint alone, pipe its {_MANIFEST_FIELD!r}: jq -r .{_MANIFEST_FIELD})"
    )


def _export_kind(text: str) -> str | None:
    """The format of the export `text` is ("CSV", "NDJSON", "JSON"), by its
    first line as the server writes it, or None: no checkpoint's first line
    (an origin) or manifest's (`{`) is one. A CSV's is its header (`seq,id,`
    first), a JSON array's `[` (`[]` of none), an NDJSON's an event (an
    object with its seq and id)."""
    end = text.find("\n")  # not split: the rest of an export of gigabytes copied
    first = (text if end < 0 else text[:end]).rstrip("\r")
    if first.startswith("seq,id,"):
        return "CSV"
    if first in ("[", "[]"):
        return "JSON"
    if first.startswith("{"):
        try:
            event = json.loads(first)
        except (ValueError, RecursionError):
            return None
        if isinstance(event, dict) and "seq" in event and "id" in event:
            return "NDJSON"
    return None
