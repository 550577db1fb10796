"""The checkpoint signing key: from SEALTRAIL_SIGNING_KEY (its text), from
SEALTRAIL_SIGNING_KEY_FILE, or else `<data dir>/signing-key`, generated there on
first start. Key text is the C2SP signed-note signer form
`PRIVATE+KEY+<name>+<hex key id>+<base64 key>`."""

from __future__ import annotations

from pathlib import Path

from sealtrail.tlog import NoteError, Signer, generate_signer_key

from ..key_files import load_key_text

KEY_FILE_NAME = "signing-key"


def load_signer(
    *,
    key_text: str | None,
    key_file: Path | None,
    data_dir: Path,
    name: str,
    create: bool = True,
) -> Signer:
    """The configured signer; generates and keeps one in `data_dir` if none is
    (unless not to `create`: then SystemExit)."""
    text, source = load_key_text(
        text=key_text,
        file=key_file,
        default=data_dir / KEY_FILE_NAME,
        setting="SEALTRAIL_SIGNING_KEY",
        generate=(lambda: generate_signer_key(name).text()) if create else None,
        what="checkpoint signing key",
    )
    return _parse(text, source)


def _parse(text: str, source: str) -> Signer:
    try:
        return Signer.parse(text)
    except NoteError as error:
        raise SystemExit(f"{source}: {error}") from None
