"""Secrets the server keeps (the checkpoint signing key, the redaction secret):
given as text in a setting, or in a file named by another, or else generated
on first start and kept in the data dir (mode 0600, never overwritten)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

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
    if path.exists():
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as error:
            named = f"{setting}_FILE" if file is not None else "the data dir"
            why = error.strerror if isinstance(error, OSError) else "not text"
            raise SystemExit(f"cannot read the {what} {path} ({named}): {why}") from None
    if generate is None:
        raise SystemExit(
            f"no {what} at {path}: a server creates it at its first start there;"
            f" run this where the server runs, or name the key with {setting}(_FILE)"
        )
    generated = generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(generated + "\n")
    log.warning("generated a new %s in %s", what, path)
    return generated, str(path)
