"""Writing an export to a file safely: into a temporary file beside the target,
checked against the manifest's byte count and SHA-256, then renamed, so an
interrupted export never leaves a truncated file that looks complete."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Literal

from sealtrail.v1 import audit_service_pb2

ExportFormat = Literal["csv", "ndjson", "json"]
FORMATS: dict[str, audit_service_pb2.ExportFormat.ValueType] = {
    "csv": audit_service_pb2.EXPORT_FORMAT_CSV,
    "ndjson": audit_service_pb2.EXPORT_FORMAT_NDJSON,
    "json": audit_service_pb2.EXPORT_FORMAT_JSON,
}


_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


class ExportError(Exception):
    """An export ended without a manifest, or its content does not match it."""


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
        temporary = (path.parent or Path(".")) / f".{path.name}.{secrets.token_hex(6)}"
        try:
            # Created no more open than it ends (the umask may narrow it, the
            # chmod then sets it exactly): opened 0666 and narrowed after, a
            # private file's export was readable by others meanwhile (helper-147).
            created = 0o666 if mode is None else mode
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, created)
        except FileExistsError:  # a name taken: another
            continue
        if mode is not None:
            os.chmod(temporary, mode)
        return fd, temporary


class ExportFile:
    """Receives an export's messages and, on its manifest, puts the checked
    content at `path`. Use as a context manager: on error nothing is left."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not (path.parent or Path(".")).is_dir():
            raise ExportError(f"{path.parent} is not a directory to write {path.name} in")
        fd, self._temporary = _temporary_beside(path)
        self._file = os.fdopen(fd, "wb")
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
                f"received {self._bytes} bytes that do not match the manifest"
                f" ({manifest.byte_count} bytes, sha256 {manifest.sha256.hex()})"
            )
        os.replace(self._temporary, self.path)
        self.manifest = manifest

    def result(self) -> audit_service_pb2.ExportManifest:
        if self.manifest is None:
            raise ExportError("the export ended without its manifest")
        return self.manifest
