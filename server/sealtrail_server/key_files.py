"""Secrets the server keeps (the checkpoint signing key, the redaction secret):
given as text in a setting, or in a file named by another, or else generated
on first start and kept in the data dir (mode 0600, never overwritten)."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)


def load_key_text(
    *,
    text: str | None,
    file: Path | None,
    default: Path,
    setting: str,
    generate: Callable[[], str] | None,
    what: str,
) -> tuple[str, str]:
    """The key's text and where it came from (for error messages): `text`
    (named `setting`), else `file`, which must exist, else `default`, written
    with `generate()` if it does not exist yet (with None, it must exist)."""
    if text:
        return text, setting
    path = file or default
    if file is not None and not file.exists():
        raise SystemExit(f"{setting}_FILE: the {what} file {file} does not exist")
    named = f"{setting}_FILE" if file is not None else "the data dir"
    if path.exists():
        return _read(path, what=what, named=named), str(path)
    if generate is None:
        raise SystemExit(
            f"no {what} at {path}: a server creates it at its first start there;"
            f" run this where the server runs, or name the key with {setting}(_FILE)"
        )
    generated = generate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        created = _create(path, generated + "\n")
    except OSError as error:
        # A file in the way, a read-only file system (a container's): a
        # traceback stopped the start (helper-296).
        raise SystemExit(
            f"cannot write the {what} {path} (SEALTRAIL_DATA_DIR={str(path.parent)!r}):"
            f" {error.strerror or error}; make that directory writable, or set {setting}"
            " (or _FILE) to the deployment's key"
        ) from None
    if not created:
        # A server starting beside this one wrote it first: its key is the one.
        return _read(path, what=what, named=named), str(path)
    log.warning("generated a new %s in %s", what, path)
    return generated, str(path)


def _read(path: Path, *, what: str, named: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "not text"
        raise SystemExit(f"cannot read the {what} {path} ({named}): {why}") from None


def _create(path: Path, text: str) -> bool:
    """Writes `text` to `path` unless it exists (then False). Written whole to
    a temporary file beside it (mode 0600) and linked into place: another
    server starting on the same data dir never reads it half-written, and the
    first to link wins (a rename would replace a key another already uses).
    Where the file system has no hard links, created in place (helper-147)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.link(temporary, path)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        return _create_in_place(path, text)
    finally:
        os.unlink(temporary)
    return True


# What link() says on a file system without hard links (CIFS, some FUSE ones).
_NO_HARD_LINKS: Final = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV})


def _create_in_place(path: Path, text: str) -> bool:
    """`_create` where links cannot be made: created exclusively (the first
    wins) and written after, so a server starting at that very moment may
    read it empty and stop, and start again."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return True
