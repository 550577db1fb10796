"""The checkpoint signing key: from SEALTRAIL_SIGNING_KEY (its text), from
SEALTRAIL_SIGNING_KEY_FILE, or else `<data dir>/signing-key`, generated there on
first start. Key text is the C2SP signed-note signer form
`PRIVATE+KEY+<name>+<hex key id>+<base64 key>`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sealtrail.tlog import NoteError, Signer, generate_signer_key

log = logging.getLogger(__name__)

KEY_FILE_NAME = "signing-key"


def load_signer(
    *, key_text: str | None, key_file: Path | None, data_dir: Path, name: str
) -> Signer:
    """The configured signer; generates and keeps one in `data_dir` if none is."""
    if key_text:
        return _parse(key_text, "SEALTRAIL_SIGNING_KEY")
    path = key_file or data_dir / KEY_FILE_NAME
    if path.exists():
        return _parse(path.read_text(), str(path))
    if key_file is not None:
        raise SystemExit(f"signing key file {key_file} does not exist")
    signer = generate_signer_key(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(signer.text() + "\n")
    log.warning("generated a new checkpoint signing key in %s", path)
    return signer


def _parse(text: str, source: str) -> Signer:
    try:
        return Signer.parse(text)
    except NoteError as error:
        raise SystemExit(f"{source}: {error}") from None
