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
    """The key's text and where it came from, for `not_a_key`: `text`
    (`setting`), else `file`, which must exist (`SETTING_FILE=file`), else
    `default` (its path), written with `generate()` if it does not exist yet
    (with None, it must exist)."""
    if text:
        return text, setting
    path = file or default
    source = f"{setting}_FILE={file}" if file is not None else str(default)
    if file is not None and not file.exists():
        raise SystemExit(f"{source}: no such file; {_configured_fix(setting, what)}")
    if path.exists():
        return _read(path, source, setting=setting, what=what), source
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
        return _read(path, source, setting=setting, what=what), source
    log.warning("generated a new %s in %s", what, path)
    return generated, source


def not_a_key(source: str, detail: str, *, setting: str, what: str) -> SystemExit:
    """Why a start stops on a key's text (`source` as `load_key_text` gives
    it) that is not a key: the setting that gave it, its file, `detail` (what
    a key is), and what to do, alike for every key (helper-362)."""
    if source == setting:
        fix = f"set it to the deployment's {what} (or {setting}_FILE to a file holding it)"
        return SystemExit(f"{setting}: not a {what} ({detail}); {fix}")
    if source.startswith(f"{setting}_FILE="):
        return SystemExit(f"{source}: not a {what} ({detail}); {_configured_fix(setting, what)}")
    return SystemExit(
        f"{_in_data_dir(source, setting, what)}: not a {what} ({detail}); restore it from a"
        f" backup, or set {setting} (or _FILE) to the deployment's {what}"
    )


def _configured_fix(setting: str, what: str) -> str:
    return (
        f"set {setting}_FILE to a file the server's user can read, holding the deployment's"
        f" {what} (or {setting} to its text)"
    )


def _in_data_dir(path: str, setting: str, what: str) -> str:
    return f"{path} (the data dir's {what}, none set in {setting} or {setting}_FILE)"


def _read(path: Path, source: str, *, setting: str, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "not text"
    if source != str(path):  # named by SETTING_FILE
        raise SystemExit(
            f"{source}: cannot read the {what}: {why}; {_configured_fix(setting, what)}"
        )
    raise SystemExit(
        f"{_in_data_dir(source, setting, what)}: cannot read the {what}: {why}; make it a file"
        f" the server's user can read, or set {setting} (or _FILE) to the deployment's {what}"
    )


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
