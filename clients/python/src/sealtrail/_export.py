"""Writing an export to a file safely: into a temporary file beside the target,
checked against the manifest's byte count and SHA-256, then renamed, so an
interrupted export never leaves a truncated file that looks complete."""

from __future__ import annotations

import base64
import csv
import errno
import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Literal

from sealtrail._words import counted
from sealtrail.v1 import audit_service_pb2

ExportFormat = Literal["csv", "ndjson", "json"]
FORMATS: dict[str, audit_service_pb2.ExportFormat.ValueType] = {
    "csv": audit_service_pb2.EXPORT_FORMAT_CSV,
    "ndjson": audit_service_pb2.EXPORT_FORMAT_NDJSON,
    "json": audit_service_pb2.EXPORT_FORMAT_JSON,
}


def export_format(format: str) -> audit_service_pb2.ExportFormat.ValueType:
    """The ExportFormat named `format`; ValueError naming the known ones, as
    for a query's order (it was a KeyError, of the name alone)."""
    try:
        return FORMATS[format]
    except KeyError:
        raise ValueError(f"format: expected 'csv', 'ndjson' or 'json', got {format!r}") from None


_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


class ExportError(Exception):
    """An export ended without a manifest, or its content does not match it."""


def _name_beside(path: Path) -> Path:
    """A hidden name, not yet taken, beside `path`: `.NAME.` and 12 hex digits."""
    while True:
        name = (path.parent or Path(".")) / f".{path.name}.{secrets.token_hex(6)}"
        if not os.path.lexists(name):
            return name


def _sync_directory(path: Path) -> None:
    """The directory of `path` on disk, with the names changed in it: a rename
    is not durable, nor ordered with the next one, until it is. Windows has
    no such call (a directory cannot be opened so): there, nothing."""
    if os.name == "nt":
        return
    fd = os.open(path.parent or Path("."), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new file beside `path` (its descriptor, open to write, and its path)
    with the mode a plain write to `path` would leave: the mode of the file it
    replaces, else 0666 less the umask. mkstemp's 0600, renamed into place,
    left an export to a shared directory readable by its writer only."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    while True:
        temporary = _name_beside(path)
        try:
            # Created no more open than it ends (the umask may narrow it, the
            # chmod then sets it exactly): opened 0666 and narrowed after, a
            # private file's export was readable by others meanwhile (helper-147).
            created = 0o666 if mode is None else mode
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, created)
        except FileExistsError:  # a name taken: another
            continue
        try:
            if mode is not None:
                os.chmod(temporary, mode)
        except BaseException:  # refused (a mount that keeps no modes), a Ctrl-C: not left
            _discard(fd, temporary)
            raise
        return fd, temporary


def _discard(fd: int, path: Path) -> None:
    """A temporary file no ExportFile took: closed and removed."""
    os.close(fd)
    path.unlink(missing_ok=True)


MANIFEST_FORMAT = "sealtrail-export-manifest"
# The manifest's `version`, the newest `check_export` reads: a newer
# Sealtrail's manifest keeps its format's name and says a later version.
MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(path: Path) -> Path:
    """Where the manifest of an export to `path` is kept: FILE.manifest.json."""
    return path.with_name(path.name + MANIFEST_SUFFIX)


def _is_export_manifest(path: Path) -> bool:
    """Whether `path` holds an export's manifest (a file of
    `manifest_json`'s format), not some other file that took its name."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode) or path.lstat().st_size > 1 << 20:
            return False
        kept = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(kept, dict) and kept.get("format") == MANIFEST_FORMAT


def manifest_json(path: Path, manifest: audit_service_pb2.ExportManifest) -> str:
    """The server's manifest of the export at `path`, as kept beside it: its
    digest, counts and the log's signed checkpoint, which `sealtrail
    checkpoint --check` reads (hashes as `sha256sum` and the checkpoint show
    them: hex, base64), for an export of a seq range, that range, and the
    statement that signs them all (ADR 0129)."""
    kept: dict[str, object] = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "file": path.name,
        "media_type": manifest.media_type,
        "row_count": manifest.row_count,
        "byte_count": manifest.byte_count,
        "sha256": manifest.sha256.hex(),
        "first_seq": manifest.first_seq,
        "last_seq": manifest.last_seq,
        "tree_size": manifest.tree_size,
        "root_hash": base64.b64encode(manifest.root_hash).decode(),
        "checkpoint": manifest.checkpoint,
        "export_event_id": manifest.export_event_id,
    }
    if manifest.range_last_seq:
        # An export of a seq range holds that range only: without it, the file
        # passed for every (matching) event up to tree_size.
        kept["range_first_seq"] = manifest.range_first_seq
        kept["range_last_seq"] = manifest.range_last_seq
    if manifest.filter_json:
        # What it selected by (`{}`: every event), which the statement signs
        # from v2 on (ADR 0130): the exact text, as its digest is signed.
        kept["filter"] = manifest.filter_json
        # And how many seqs of its range (of the log, without one) retention
        # had removed (0 included), which v2 signs too: of an unfiltered
        # export, row_count + removed_count is the range's size.
        kept["removed_count"] = manifest.removed_count
    if manifest.statement:
        # What the key signs of the above (ADR 0129): unsigned, they were
        # rewritten with the file into a pair that checked.
        kept["statement"] = manifest.statement
    return json.dumps(kept, indent=2, ensure_ascii=False) + "\n"


# The most characters of a cell Excel keeps, counted as it counts them (UTF-16
# code units: a character outside the Basic Multilingual Plane, an emoji, is 2);
# it cuts a longer one short as it opens a CSV, without a word. A record may
# be 64 KiB, its details or changes cell about as long.
EXCEL_CELL_LIMIT = 32_767


def cells_past_excel(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The (seq, column) of each cell of the CSV export at `path` longer than
    Excel keeps (EXCEL_CELL_LIMIT), in the file's order, both as the file
    writes them (`[("12", "details")]`): what a spreadsheet user opening it
    sees cut short, though the file holds it whole. It reads the file, as
    written: an export is not slowed unless its caller asks. OSError if it
    cannot be read, UnicodeDecodeError if it is not UTF-8 (not the export)."""
    found: list[tuple[str, str]] = []
    with open(path, encoding="utf-8", newline="") as file:
        reader = csv.reader(file)
        try:
            columns = next(reader, [])
            for row in reader:
                for column, cell in zip(columns, row, strict=False):
                    # At least half as many characters as code units: most cells end here.
                    if len(cell) > EXCEL_CELL_LIMIT // 2 and _utf16_length(cell) > EXCEL_CELL_LIMIT:
                        found.append((row[0], column))
        except csv.Error:  # not the export's CSV (the file changed since): what was found
            pass
    return found


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _refuse_unless_a_file(path: Path) -> None:
    """ExportError if `path` names something other than a regular file (what
    it links to, for a link): a device (/dev/null), a pipe, a socket, a
    terminal (/dev/stdout). The checked export is renamed over the name,
    which replaced /dev/null, as root, with a file of the audit events
    readable by everyone, and /dev/stdout's link, nothing reaching the output."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # a new file (or a link to none): written as any
    except OSError:
        return  # what it is cannot be told: left to the write, which says why
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise ExportError(
            f"{path} is not a regular file (a device, a pipe or a terminal): an export is"
            " written to a file, which takes the name once complete and checked;"
            " name a file to write"
        )


class ExportFile:
    """Receives an export's messages and, on its manifest, puts the checked
    content at `path`. Use as a context manager: on error nothing is left.
    With `manifest_beside`, the manifest is kept too, at FILE.manifest.json
    (`manifest_path`): what lets whoever receives the file check later which
    log it came from."""

    def __init__(self, path: Path, *, manifest_beside: bool = False) -> None:
        self.path = path
        self._manifest_beside = manifest_beside
        if not (path.parent or Path(".")).is_dir():
            raise ExportError(f"{path.parent} is not a directory to write {path.name} in")
        _refuse_unless_a_file(path)
        fd, self._temporary = _temporary_beside(path)
        try:
            self._file = os.fdopen(fd, "wb")
        except BaseException:
            _discard(fd, self._temporary)
            raise
        self._digest = hashlib.sha256()
        self._bytes = 0
        self.rows = 0
        self.manifest: audit_service_pb2.ExportManifest | None = None

    def __enter__(self) -> ExportFile:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if not self._file.closed:
                self._file.close()  # fails too on a full disk, flushing what it buffered
        finally:
            if self.manifest is None:
                self._temporary.unlink(missing_ok=True)

    @property
    def bytes_written(self) -> int:
        return self._bytes

    def receive(self, message: audit_service_pb2.ExportResponse) -> None:
        self.rows = message.rows_so_far
        if message.WhichOneof("payload") == "chunk":
            self._file.write(message.chunk)
            self._digest.update(message.chunk)
            self._bytes += len(message.chunk)
        elif message.WhichOneof("payload") == "manifest":
            self._finish(message.manifest)

    def _finish(self, manifest: audit_service_pb2.ExportManifest) -> None:
        # On disk before it takes the name: a crash after the rename must not
        # leave an empty or partial file that looks like the whole export.
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if manifest.byte_count != self._bytes or manifest.sha256 != self._digest.digest():
            raise ExportError(
                f"received {counted(self._bytes, 'byte')} that do not match the manifest"
                f" ({counted(manifest.byte_count, 'byte')}, sha256 {manifest.sha256.hex()})"
            )
        if self._manifest_beside:
            self._put_in_place_with(manifest)
        else:
            self._put_in_place_alone()
        self.manifest = manifest

    def _put_in_place_alone(self) -> None:
        """The content takes its name, and the manifest an earlier export
        kept beside the file it replaces (FILE.manifest.json) goes: left, it
        described other content, its checkpoint good and its sha256 not the
        file's, what a file altered since its export looks like. It is
        moved aside first, on disk before the file takes its name, so that
        however the process ends the names hold the old pair or a file alone
        (the old, then the new); a rename that fails puts it back."""
        stale = manifest_path(self.path)
        aside: Path | None = None
        try:
            if _is_export_manifest(stale):
                if self.path.is_dir():  # not replaced: the manifest stays with it
                    raise IsADirectoryError(errno.EISDIR, "Is a directory", str(self.path))
                aside = _name_beside(stale)
                os.rename(stale, aside)
                _sync_directory(stale)
            try:
                os.replace(self._temporary, self.path)
            except BaseException:  # a failed rename, a Ctrl-C: as _put_in_place_with
                if aside is not None and not os.path.lexists(stale):
                    os.rename(aside, stale)
                    aside = None
                raise
            _sync_directory(self.path)
        finally:
            if aside is not None:
                aside.unlink(missing_ok=True)

    def _put_in_place_with(self, manifest: audit_service_pb2.ExportManifest) -> None:
        """The content and its manifest take their names, so that however the
        process ends (SIGKILL, power lost) the two names hold the old pair,
        the new pair, or a manifest alone: never a file beside a manifest
        that does not describe it. Two names cannot change in one step: the
        manifest took its name first, then the file, and a process killed
        between the two left the new manifest beside the old file, its
        checkpoint good and its sha256 not the file's, what a file altered
        since its export looks like. So the file being replaced is moved
        aside (kept, hidden, until the end: a manifest alone), the new
        manifest takes its name (still alone), then the file; each step on
        disk before the next. A step that fails, or is interrupted (Ctrl-C),
        puts the old file back."""
        kept = manifest_path(self.path)
        fd, written = _temporary_beside(kept)
        aside: Path | None = None
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(manifest_json(self.path, manifest).encode())
                file.flush()
                os.fsync(file.fileno())
            if self.path.is_dir():  # not moved aside: a directory is not replaced
                raise IsADirectoryError(errno.EISDIR, "Is a directory", str(self.path))
            if os.path.lexists(self.path):
                aside = _name_beside(self.path)
                os.rename(self.path, aside)
                _sync_directory(self.path)
            try:
                os.replace(written, kept)
                _sync_directory(kept)
                os.replace(self._temporary, self.path)
            # Any exception: a Ctrl-C (KeyboardInterrupt) deleted the old file,
            # moved aside, below, where a kill keeps it and a failed step puts it back.
            except BaseException:  # of an export that is not there (helper-197)
                if os.path.lexists(self._temporary):  # else the new pair stands
                    if not os.path.lexists(written):
                        kept.unlink(missing_ok=True)
                    if aside is not None and not os.path.lexists(self.path):
                        os.rename(aside, self.path)
                        aside = None
                raise
            _sync_directory(self.path)
        finally:
            written.unlink(missing_ok=True)
            if aside is not None:
                aside.unlink(missing_ok=True)

    def result(self) -> audit_service_pb2.ExportManifest:
        if self.manifest is None:
            raise ExportError("the export ended without its manifest")
        return self.manifest
