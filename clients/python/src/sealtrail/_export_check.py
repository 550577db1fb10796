"""Checking an exported file against the manifest kept beside it
(FILE.manifest.json): its byte count, SHA-256 and rows, read in chunks
(constant memory at any size). What `sealtrail checkpoint --check
FILE.manifest.json` does before it checks the manifest's checkpoint against
the log: without it, a file altered or cut short since its export passed, its
manifest's checkpoint good (docs/integrity.md, "Checking an export")."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from sealtrail._checkpoint_check import CheckpointError, SavedCheckpoint, saved_checkpoint_text
from sealtrail._export import MANIFEST_FORMAT, MANIFEST_SUFFIX, MANIFEST_VERSION, ExportError
from sealtrail._export_rows import (
    CsvRecords,
    NamedTwiceError,
    RowWrittenOtherwiseError,
    UnknownFieldsError,
    json_records,
)
from sealtrail._words import counted
from sealtrail.tlog import (
    Checkpoint,
    ExportStatement,
    NewerStatementError,
    NoteError,
    TreeBuilder,
    Verifier,
    leaf_hash,
    newer_sealtrails,
    open_note,
)
from sealtrail.v1 import audit_service_pb2

_CHUNK = 1 << 20
# The longest line the tree's leaves are read from: no record comes near it
# (64 KiB at most); past it, the root is not recomputed (the file's digest,
# which the statement signs, then fails it in any case).
_LONGEST_LINE = 4 << 20


class ExportMismatchError(CheckpointError):
    """The exported file is not what its manifest describes (altered, cut
    short, another export's), or cannot be read."""


class RowNotOfItsLeafError(ExportMismatchError, ExportError):
    """A row of a CSV or JSON export that is not the record its own
    leaf_hash is of: `seq`, its seq. Its cells say another event, or its
    record was changed in the database after its leaf was hashed (which a
    server since helper-575 refuses to export). An ExportError too: what
    `AuditClient.export` raises of the file it wrote."""

    def __init__(self, message: str, *, seq: int) -> None:
        super().__init__(message)
        self.seq = seq


@dataclass(frozen=True)
class ExportCheck:
    """An exported file found as its manifest describes it: `path`, the
    file; `rows` counted in it (None for a format not known here),
    `byte_count` and `sha256` (hex) read from it; `statement`, what the
    log's key signs of the export (its seqs, a range's, its export event,
    its filter's digest); `checkpoint`, the manifest's signed checkpoint (its
    text), for `check_checkpoint` to hold the log today to; `filter`, what
    the export selected its events by, as signed (ADR 0130): its JSON text,
    `{}` for every event (of its range, if any), None from a statement v1
    (an older server's), which signs no filter; `removed`, how many seqs of
    its range (of the log up to its tree size, without one) retention had
    removed as the export read them, as signed (None from a statement v1);
    `signed_by`, the given keys (verifier text) that signed its checkpoint;
    `root_recomputed`, whether its rows are shown the signed tree's leaves,
    the root over them the checkpoint's: an export of the whole log,
    unfiltered, none removed by retention (an NDJSON's lines the records as
    hashed; a CSV's or a JSON array's rows rebuilt into them); `unproven`,
    else, why its rows are not proven the log's records (a filtered export
    carries no inclusion proofs, ...): they are the service's word."""

    path: Path
    rows: int | None
    byte_count: int
    sha256: str
    statement: ExportStatement
    checkpoint: str
    filter: str | None = None
    signed_by: tuple[str, ...] = ()
    root_recomputed: bool = False
    unproven: str | None = None

    @property
    def filtered(self) -> bool | None:
        """Whether the export holds only the events matching a filter (True),
        or every event of its range, or of the log up to its tree size
        (False; those retention removed aside); None if not known, its
        statement (v1) signing no filter."""
        return self.statement.filtered

    @property
    def removed(self) -> int | None:
        """How many seqs of the export's range (of the log up to its tree
        size, without one) retention had removed when the export read them,
        as its statement signs it; None if not known (a statement v1)."""
        return self.statement.removed_count

    @property
    def selected(self) -> str:
        """What the key signs the export selected, in words: unfiltered, its
        seqs (`seqs 2..5, unfiltered`, `the whole log of 57 events,
        unfiltered`); filtered, the events of them matching its filter (`the
        events of seqs 2..5 matching {"actor":"alice"}, as the service selected
        them`, `the events of the log (size 57) matching ...`); of a statement
        v1, the filter not known; with how many of its seqs retention had
        removed, if any (`1 removed by retention`), as `sealtrail checkpoint
        --check` ends its MATCHES line. An export handed over is of what it
        says here, not of what was asked for."""
        signed = self.statement
        if signed.range_last_seq:
            seqs = f"seqs {signed.range_first_seq}..{signed.range_last_seq}"
        else:
            seqs = f"the whole log of {counted(signed.tree_size, 'event', grouped=True)}"
        if self.filter is None:
            return f"{seqs}, filter not signed (a statement v1: filtered or not, not known)"
        removed = f", {self.removed:,} removed by retention" if self.removed else ""
        if self.root_recomputed:
            return f"{seqs}, unfiltered, each record in the signed tree (its root recomputed)"
        if not self.filtered:
            return f"{seqs}, unfiltered{removed}"
        # Not "the whole log of N, filtered by": skimmed, it read as the whole
        # log (helper-554). The size is the log's; the events, the service's
        # selection, which nothing offline shows complete (`unproven` says so).
        of = seqs if signed.range_last_seq else f"the log (size {signed.tree_size:,})"
        return f"the events of {of} matching {self.filter}{removed}, as the service selected them"


def check_export(
    manifest: str | os.PathLike[str],
    *,
    key: str | Sequence[str],
    file: str | os.PathLike[str] | None = None,
) -> ExportCheck:
    """The export an export's manifest describes (`manifest`, the path of
    FILE.manifest.json, as `export(..., manifest_file=True)` and `sealtrail
    export` keep it; `file`, FILE where it is not beside it), held to it,
    offline, as `sealtrail verify FILE` does, and `sealtrail checkpoint
    --check FILE.manifest.json` before it asks the server: the manifest's
    checkpoint signed by `key` (verifier key text, or several for a log whose
    key was rotated), its words that checkpoint's, its statement signed by
    `key` and its words the statement's, FILE's bytes, SHA-256 and rows the
    manifest's. ExportMismatchError naming what differs (or a manifest that
    is none), CheckpointError for a checkpoint no key signed (both
    CheckpointErrors). Whether the log since extends the export's:
    `client.check_checkpoint(found.checkpoint, key=key)`."""
    path = Path(manifest)
    note = saved_checkpoint_text(path)
    kept = export_manifest(path)
    if kept is None:
        raise ExportMismatchError(
            f"{path} is no export's manifest (a checkpoint's text, a bundle's directory):"
            f" give FILE{MANIFEST_SUFFIX}, beside FILE"
        )
    saved = SavedCheckpoint.open(note, key)
    given = None if file is None else Path(file)
    found = _checked_file(path, given, kept, saved.checkpoint, saved.verifiers, note)
    return replace(found, signed_by=tuple(saved.signed_by))


def export_manifest(path: Path) -> dict[str, Any] | None:
    """The export manifest at `path` (a file of `sealtrail export`'s
    FILE.manifest.json format), or None: a checkpoint's text, a bundle's
    directory, stdin. Any JSON there is read as one, whole, as its checkpoint
    was (`saved_checkpoint_text`): one padded past what was read, or its
    format taken out, passed as a checkpoint alone, its file unchecked. One
    of a version beyond MANIFEST_VERSION is a newer Sealtrail's:
    ExportMismatchError saying to upgrade the client, which before read it
    as a version 1 whatever it had come to mean."""
    if str(path) == "-" or path.is_dir():
        return None
    try:
        text = path.read_bytes().decode("utf-8")
        if not text.lstrip().startswith("{"):
            return None
        kept = json.loads(text, object_pairs_hook=_once_each)
    except _NamedTwiceError as twice:
        raise ExportMismatchError(
            f"{path} names {twice.name!r} twice: JSON readers keep one or the other,"
            " and no server writes it so"
        ) from None
    except (OSError, ValueError, RecursionError):
        return None  # as its checkpoint could not be read from it, which said why
    if isinstance(kept, dict) and kept.get("format") == MANIFEST_FORMAT:
        version = kept.get("version")
        if type(version) is int and version == MANIFEST_VERSION:
            return kept
        if type(version) is int and version > MANIFEST_VERSION:
            raise ExportMismatchError(newer_sealtrails(path.name, version))
    raise ExportMismatchError(
        f"{path} is JSON but no export manifest (its format is not {MANIFEST_FORMAT!r} of"
        f" version {MANIFEST_VERSION})"
    )


class _NamedTwiceError(Exception):
    """A JSON object naming a member twice (`name`), refused as it is read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members, each name once: a manifest naming `filter`
    twice, `{}` first and the signed filter last, was read by its last (as
    Python and jq read it) and passed, and whoever read the first (an eye, a
    reader keeping it) saw it unfiltered."""
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise _NamedTwiceError(name)
        members[name] = value
    return members


def exported_file(manifest_path: Path, manifest: dict[str, Any]) -> Path:
    """The file a manifest describes: FILE for FILE.manifest.json (the two
    renamed together keep the pair), else the file it names, beside it."""
    name = manifest_path.name
    if name.endswith(MANIFEST_SUFFIX) and len(name) > len(MANIFEST_SUFFIX):
        return manifest_path.with_name(name[: -len(MANIFEST_SUFFIX)])
    named = manifest.get("file")
    if not isinstance(named, str) or not Path(named).name:
        raise ExportMismatchError(
            f"{manifest_path} names no file: name it FILE{MANIFEST_SUFFIX}, beside FILE"
        )
    return manifest_path.with_name(Path(named).name)


class _RowCounter:
    """The rows of an export as the server writes them, counted chunk by
    chunk: CSV records end at a line break outside quotes (a cell may hold
    one), after a header; NDJSON's each end a line; JSON's array puts each
    event on a line of its own between `[` and `]`."""

    def __init__(self, media_type: object) -> None:
        kind = str(media_type).split(";", 1)[0].strip().lower()
        self.kind = kind if kind in ("text/csv", "application/x-ndjson", "application/json") else ""
        self._breaks = 0
        self._quoted = False

    def update(self, chunk: bytes) -> None:
        if self.kind != "text/csv":
            self._breaks += chunk.count(b"\n")
            return
        # Between quotes, in and out of a quoted cell by turns ("" inside one
        # goes out and back in, between no break).
        parts = chunk.split(b'"')
        self._breaks += b"".join(parts[1 if self._quoted else 0 :: 2]).count(b"\n")
        self._quoted ^= len(parts) % 2 == 0

    def rows(self) -> int | None:
        if self.kind == "text/csv":
            return max(self._breaks - 1, 0)  # the header's line
        if self.kind == "application/json":
            return max(self._breaks - 2, 0)  # "[" ... "\n]\n"; none: "[]\n"
        if self.kind == "application/x-ndjson":
            return self._breaks
        return None


def _unsigned_claims(manifest: dict[str, Any], checkpoint: Checkpoint) -> list[str]:
    """What the manifest says of the log that its checkpoint does not sign:
    another size or root, seqs beyond its size."""
    differences = []
    size = checkpoint.tree_size
    said = manifest.get("tree_size")
    if said != size:
        differences.append(f"tree_size {said} where the checkpoint signs {size}")
    signed = base64.b64encode(checkpoint.root_hash).decode()
    said = manifest.get("root_hash")
    if said != signed:
        differences.append(f"root_hash {said} where the checkpoint signs {signed}")
    for field in ("first_seq", "last_seq", "range_first_seq", "range_last_seq"):
        seq = manifest.get(field, 0)
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            differences.append(f"{field} {seq!r}, not a seq")
        elif seq > size:
            differences.append(f"{field} {seq} beyond the checkpoint's {counted(size, 'event')}")
    return differences


def _signed_statement(
    manifest_path: Path,
    manifest: dict[str, Any],
    checkpoint: Checkpoint,
    verifiers: list[Verifier],
) -> ExportStatement:
    """The manifest's statement (ADR 0129), signed by one of `verifiers`, of
    `checkpoint`'s log; ExportMismatchError if there is none (an older
    server's manifest), or if no such key signed it."""
    note = manifest.get("statement")
    if not isinstance(note, str) or not note:
        raise ExportMismatchError(
            f"{manifest_path.name} holds no signed statement of its export (a manifest from a"
            " server that signed none, or one taken out): its sha256, counts and seqs are its"
            " own word; export again from an up-to-date server"
        )
    try:
        text, _ = open_note(note, verifiers)
        statement = ExportStatement.parse(text)
    except NewerStatementError as error:  # signed by the log's key: a newer server's
        raise ExportMismatchError(str(error)) from None
    except NoteError as error:
        raise ExportMismatchError(f"the export's statement: {error}") from None
    if statement.origin != checkpoint.origin:
        raise ExportMismatchError(
            f"the export's statement is of the log {statement.origin}, and its checkpoint of"
            f" {checkpoint.origin}"
        )
    return statement


def _check_counts(manifest_path: Path, statement: ExportStatement) -> None:
    """ExportMismatchError if what the statement signs of the export's seqs
    and rows no export reads: seqs exported outside its range, more rows than
    seqs between the first and the last exported, rows of no seq; of an
    unfiltered export, rows and seqs removed by retention other than its
    range's size (the log up to its tree size, without one): a row missing
    from the log otherwise than by retention, which the server read and
    signed as it found it; of a filtered one, more than its size (a filter
    selects some of the range). A statement v1 signs no removed count: its
    seqs alone are held."""
    impossible = _impossible_seqs(statement)
    if impossible is not None:
        raise ExportMismatchError(
            f"{manifest_path.name}: its statement signs {impossible}, which no export reads"
        )
    if statement.removed_count is None:
        return
    if statement.range_last_seq:
        seqs = f"seqs {statement.range_first_seq}..{statement.range_last_seq}"
        size = statement.range_last_seq - statement.range_first_seq + 1
    else:
        seqs, size = "the whole log", statement.tree_size
    rows, removed = statement.row_count, statement.removed_count
    gap = size - rows - removed
    if gap == 0 or (gap > 0 and statement.filtered):
        return
    raise ExportMismatchError(
        f"{manifest_path.name}: its statement signs"
        f" {'a filtered' if statement.filtered else 'an unfiltered'} export of {seqs}"
        f" ({counted(size, 'seq', grouped=True)}) of {counted(rows, 'row', grouped=True)}"
        f" and {removed:,} removed by retention: "
        + (
            f"{counted(gap, 'seq', grouped=True)} neither exported nor removed by retention"
            if gap > 0
            else f"{counted(-gap, 'seq', grouped=True)} too many"
        )
    )


def _impossible_seqs(statement: ExportStatement) -> str | None:
    """What the statement signs of its first and last seqs exported, its
    rows and its range, in words, if no export could read it so; else None."""
    first, last, rows = statement.first_seq, statement.last_seq, statement.row_count
    range_first, range_last = statement.range_first_seq, statement.range_last_seq
    if range_last and not 0 < range_first <= range_last:
        return f"the range {range_first}..{range_last}, of no seq"
    if (first == 0) != (last == 0) or first > last:
        return f"seqs {first}..{last} exported"
    if range_last and first and not range_first <= first <= last <= range_last:
        return f"seqs {first}..{last} exported of the range {range_first}..{range_last}"
    if not first:
        return f"{counted(rows, 'row', grouped=True)} of no seq" if rows else None
    if not rows:
        return f"no row, of seqs {first}..{last}"
    span = last - first + 1
    if rows > span:
        return (
            f"{counted(rows, 'row', grouped=True)} of seqs {first}..{last}"
            f" ({counted(span, 'seq', grouped=True)})"
        )
    return None


def _checked_file(
    manifest_path: Path,
    given: Path | None,
    manifest: dict[str, Any],
    checkpoint: Checkpoint,
    verifiers: list[Verifier],
    note: str,
) -> ExportCheck:
    """The file `manifest` (read from `manifest_path`, `checkpoint` its
    checkpoint, its signature checked) describes (`given`, or the one beside
    it, `exported_file`), read whole, held to the
    manifest's byte count, SHA-256 and row count; ExportMismatchError naming
    each that differs, or what the manifest says of the log that the
    checkpoint does not sign, or of the export that its statement, signed by
    one of `verifiers`, does not (unsigned, its words are a forger's as
    well: whoever holds the file rewrites both)."""
    claims = _unsigned_claims(manifest, checkpoint)
    if claims:
        raise ExportMismatchError(
            f"{manifest_path.name} does not say what its signed checkpoint does: "
            + "; ".join(claims)
        )
    statement = _signed_statement(manifest_path, manifest, checkpoint, verifiers)
    claims = statement.differences(manifest)
    if claims:
        raise ExportMismatchError(
            f"{manifest_path.name} does not say what its signed statement does: "
            + "; ".join(claims)
        )
    _check_counts(manifest_path, statement)
    path = exported_file(manifest_path, manifest) if given is None else given
    unproven = _unproven(statement)
    digest = hashlib.sha256()
    size = 0
    counter = _RowCounter(manifest.get("media_type"))
    saved_again = _SavedAgain(counter.kind)
    leaves = _LeafRoot(counter.kind, unproven is None)
    try:
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                counter.update(chunk)
                saved_again.update(chunk)
                leaves.update(chunk)
    except OSError as error:
        raise ExportMismatchError(
            f"{path}, the export {manifest_path.name} describes, cannot be read:"
            f" {error.strerror or error}"
        ) from None
    # Signed (`differences` held it to the statement's digest), or none.
    signed_filter = manifest.get("filter") if statement.filter_sha256 is not None else None
    found = ExportCheck(
        path, counter.rows(), size, digest.hexdigest(), statement, note, signed_filter,
        unproven=unproven,
    )  # fmt: skip
    differences = []
    if found.byte_count != manifest.get("byte_count"):
        differences.append(
            f"{counted(found.byte_count, 'byte', grouped=True)} where it says"
            f" {_shown(manifest.get('byte_count'), 'byte')}"
        )
    if found.sha256 != manifest.get("sha256"):
        differences.append(f"sha256 {found.sha256} where it says {manifest.get('sha256')}")
    if found.rows is not None and found.rows != manifest.get("row_count"):
        differences.append(
            f"{counted(found.rows, 'row', grouped=True)} where it says"
            f" {_shown(manifest.get('row_count'), 'row')}"
        )
    if differences:
        named = manifest.get("file")
        whose = f" (a manifest of {named})" if isinstance(named, str) and named != path.name else ""
        raise ExportMismatchError(
            f"{path} is not the export {manifest_path.name}{whose} describes: "
            + "; ".join(differences + saved_again.signs())
        )
    # The file is the one the statement signs: each row's cells must hash to
    # its own leaf_hash, whatever the filter (that needs nothing but the row);
    # of the whole log, its leaves are the signed tree's too.
    recomputed: tuple[int, bytes] | str | None
    if counter.kind == "application/x-ndjson":
        recomputed = leaves.root()  # its lines are the records: no leaf of their own
    else:
        recomputed = rebuilt_rows(path, counter.kind, checkpoint.origin)
    if unproven is not None:
        return found
    if recomputed is None:
        return replace(found, unproven=f"its lines are not the records as hashed ({counter.kind})")
    if isinstance(recomputed, str):
        return replace(found, unproven=recomputed)
    count, root = recomputed
    if (count, root) != (checkpoint.tree_size, checkpoint.root_hash):
        raise ExportMismatchError(
            f"{path.name}'s records are not the log its checkpoint signs: the root over their"
            f" {counted(count, 'leaf', 'leaves')} is {base64.b64encode(root).decode()} where"
            f" the checkpoint signs {base64.b64encode(checkpoint.root_hash).decode()}"
        )
    return replace(found, root_recomputed=True, unproven=None)


def _unproven(statement: ExportStatement) -> str | None:
    """Why an export's rows cannot be proven the log's records, offline, from
    what it carries; None if they can: of the whole log, unfiltered, none
    removed by retention, its rows are every leaf of its checkpoint's tree.
    An export carries no inclusion proofs (ExportManifest has none): a bundle
    does."""
    if statement.filtered is None:
        return (
            "its statement (v1) signs no filter, so whether it holds every event is not known"
            " (write a bundle: sealtrail bundle -o DIR, and verify it)"
        )
    if statement.filtered:
        return (
            "a filtered export carries no inclusion proofs (to prove each event, write a bundle"
            " with the same filter: sealtrail bundle -o DIR, and verify it); nor that it holds"
            " every event matching its filter, which is the service's word; a filter's times"
            " are when the events occurred, by their callers' clocks: a bundle of a period by"
            " received time proves it holds every event of the period (sealtrail bundle"
            " --received PERIOD -o DIR, and verify it)"
        )
    first, last = statement.range_first_seq, statement.range_last_seq
    if last:
        return (
            f"an export of seqs {first}..{last} carries no inclusion proofs (to prove each"
            f" event, and the range complete, write a range bundle: sealtrail bundle --seq"
            f" {first}-{last} -o DIR, and verify it)"
        )
    if statement.removed_count or statement.row_count != statement.tree_size:
        return (
            f"{counted(statement.removed_count or 0, 'event', grouped=True)} retention removed"
            " are leaves the export does not carry, so the root cannot be recomputed (write a"
            " bundle, which holds them: sealtrail bundle -o DIR, and verify it)"
        )
    return None


def rebuilt_rows(path: Path, media_type: str, origin: str) -> tuple[int, bytes] | str | None:
    """The number of a CSV or JSON export's rows (`media_type`, of the log
    of checkpoint origin `origin`) and the root over them, each rebuilt into
    the record it shows (_export_rows), read row by row in constant memory,
    each row's leaf held to its own leaf_hash, filtered or not
    (ExportMismatchError naming its seq: its cells another event's than the
    leaf's, the record rewritten in the database after its leaf), each row
    held to the server's writing of that record (ExportMismatchError naming
    its seq and what is written otherwise: a JSON key twice, a formula guard
    taken off, a time in another zone, ...); ExportMismatchError saying so
    for a file that cannot be read; a str saying why the rows cannot be
    rebuilt (a newer Sealtrail's fields); None for a format not known here."""
    kind = media_type.split(";", 1)[0].strip().lower()
    rows: Iterable[tuple[str, bytes, bytes]]
    csv_rows = CsvRecords(path, origin.rsplit("/", 1)[-1]) if kind == "text/csv" else None
    if csv_rows is not None:
        rows = csv_rows
    elif kind == "application/json":
        rows = json_records(path)
    else:
        return None
    tree = TreeBuilder()
    try:
        for seq, record, shown in rows:
            leaf = leaf_hash(record)
            older = None if csv_rows is None else csv_rows.first_missing
            if leaf != shown and older is not None:
                # An older Sealtrail's columns may not hold every key of a
                # record (one a later column carries): not proof of tampering.
                return (
                    f"its columns end before {older}: an older Sealtrail's export, whose row"
                    f" of seq {seq} rebuilds into no record of its leaf_hash (a key its"
                    " columns do not hold)"
                )
            if leaf != shown:
                raise RowNotOfItsLeafError(
                    f"{path.name}'s row of seq {seq} is not the record its leaf_hash is of:"
                    " its cells say another event, or its record was changed in the database"
                    " after its leaf was hashed (VerifyLog finds it)",
                    seq=int(seq),
                )
            tree.append(leaf)
    except UnknownFieldsError as error:
        return f"{error}: its rows cannot be rebuilt into records here (upgrade the client)"
    except OSError as error:  # the disk's, not the file's: said as what it is
        raise ExportMismatchError(f"{path} cannot be read: {error.strerror or error}") from None
    except NamedTwiceError as twice:
        raise ExportMismatchError(
            f"{path.name}'s {_row(twice, tree.size)} {twice.what}: JSON readers keep one or"
            " the other, and no server writes it so"
        ) from None
    except RowWrittenOtherwiseError as otherwise:
        raise ExportMismatchError(
            f"{path.name}'s {_row(otherwise, tree.size)} is not the server's writing:"
            f" {otherwise.what}"
        ) from None
    except csv.Error as error:
        if "field limit" in str(error):
            raise ExportMismatchError(
                f"{path.name}'s row {tree.size + 1} has a cell over"
                f" {csv.field_size_limit():,} characters, longer than any the server writes"
                " (a record is at most 64 KiB)"
            ) from None
        raise ExportMismatchError(
            f"{path.name}'s row {tree.size + 1} is not CSV as the server writes it ({error})"
        ) from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise ExportMismatchError(
            f"{path.name}'s row {tree.size + 1} is no record's ({type(error).__name__}): no"
            " export writes it so"
        ) from None
    return tree.size, tree.root()


def hold_rows_to_their_leaves(path: Path, manifest: audit_service_pb2.ExportManifest) -> None:
    """Each row of the CSV or JSON export at `path`, of `manifest`, rebuilt
    into the record it shows and held to its own leaf_hash and to the
    server's writing, as `sealtrail verify` does (`rebuilt_rows`):
    RowNotOfItsLeafError naming the seq of the first that is not the record
    its leaf_hash is of, ExportMismatchError for one the server writes
    otherwise. Nothing of an NDJSON export (its lines carry no leaf of their
    own), nor of rows this client cannot rebuild (a newer server's fields)."""
    rebuilt_rows(path, manifest.media_type, manifest.checkpoint.split("\n", 1)[0])


def _row(error: RowWrittenOtherwiseError, before: int) -> str:
    """The row `error` is of, in words: by its seq, else by its place among
    the rows (`before` rebuilt before it)."""
    if error.place is not None:
        return error.place
    return f"row {before + 1}" if error.seq is None else f"row of seq {error.seq}"


class _LeafRoot:
    """The root of the tree over an NDJSON export's lines, each a record as
    hashed, built line by line in O(log n) memory; only of an export whose
    lines are every leaf of its checkpoint's tree (`applies`)."""

    def __init__(self, kind: str, whole_log: bool) -> None:
        self.applies = kind == "application/x-ndjson" and whole_log
        self._tree = TreeBuilder()
        self._pending = b""

    def update(self, chunk: bytes) -> None:
        if not self.applies:
            return
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            self._tree.append(leaf_hash(line))
        if len(self._pending) > _LONGEST_LINE:
            self.applies = False

    def root(self) -> tuple[int, bytes] | None:
        """(leaves, root), or None: not an export whose root is recomputed,
        or one ending in a line cut short (no export does)."""
        if not self.applies or self._pending:
            return None
        return self._tree.size, self._tree.root()


class _SavedAgain:
    """Signs of an export opened and saved again by a spreadsheet or an
    editor, which keeps every row and changes the bytes the key signed: a
    byte order mark first (no export writes one), or line ends other than the
    format's (a CSV's are CRLF, its header's too; NDJSON and JSON end lines in
    LF and escape a CR in a string, so hold none)."""

    _BOM = b"\xef\xbb\xbf"
    _NAMES: Final = {"text/csv": "a CSV", "application/x-ndjson": "an NDJSON"}

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._head = b""
        self._cr = False

    def update(self, chunk: bytes) -> None:
        if len(self._head) < _CHUNK and b"\n" not in self._head:
            self._head += chunk[:_CHUNK]
        self._cr = self._cr or b"\r" in chunk

    def signs(self) -> list[str]:
        found = []
        if self._head.startswith(self._BOM):
            found.append("it begins with a byte order mark, which no export does")
        header, newline, _ = self._head.partition(b"\n")
        if self.kind == "text/csv" and newline and not header.endswith(b"\r"):
            found.append("its lines end in LF, a CSV export's in CRLF")
        elif self.kind in ("application/x-ndjson", "application/json") and self._cr:
            of = self._NAMES.get(self.kind, "a JSON")
            found.append(f"its lines end in CRLF, {of} export's in LF")
        if found:
            found[-1] += " (saved again by a spreadsheet or an editor?)"
        return found


def _shown(value: object, noun: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return counted(value, noun, grouped=True)
    return f"{value!r} {noun}s" if value is not None else f"no {noun} count"
