"""The secrets key that sinks' credentials are sealed with at rest
(domain/sealing.py): SEALTRAIL_SECRETS_KEY, or a file named by
SEALTRAIL_SECRETS_KEY_FILE, else <data_dir>/secrets-key, generated on first
start. Read once at startup."""

from __future__ import annotations

import secrets

from .config import Settings
from .domain.sealing import KEY_BYTES, SecretBox
from .key_files import load_key_text

KEY_FILE_NAME = "secrets-key"


def load_secret_box(settings: Settings) -> SecretBox:
    """The configured keys: 64 hex digits each, comma-separated while rotating
    (the new one first, sealing; the old ones still open what they sealed)."""
    text, source = load_key_text(
        text=settings.secrets_key,
        file=settings.secrets_key_file,
        default=settings.data_dir / KEY_FILE_NAME,
        setting="SEALTRAIL_SECRETS_KEY",
        generate=lambda: secrets.token_bytes(KEY_BYTES).hex(),
        what="secrets key",
    )
    keys = []
    for part in text.split(","):
        try:
            key = bytes.fromhex(part.strip())
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise SystemExit(
                f"{source}: each secrets key must be {KEY_BYTES * 2} hex digits"
                " (comma-separated while rotating, the new one first)"
            )
        keys.append(key)
    return SecretBox(keys)
