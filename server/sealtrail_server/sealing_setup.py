"""The secrets key that sinks' credentials are sealed with at rest
(domain/sealing.py): SEALTRAIL_SECRETS_KEY, or a file named by
SEALTRAIL_SECRETS_KEY_FILE, else <data_dir>/secrets-key, generated on first
start. Read once at startup."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import NoReturn

from .config import Settings
from .domain.sealing import KEY_BYTES, SecretBox
from .file_modes import check_key_read
from .key_files import load_key_text, not_a_key

KEY_FILE_NAME = "secrets-key"


def load_secret_box(settings: Settings) -> SecretBox:
    """The configured keys: 64 hex digits each, comma-separated while rotating
    (the new one first, sealing; the old ones still open what they sealed)."""
    return load_secrets_key(settings)[0]


def checked_secret_box(settings: Settings) -> SecretBox:
    """`load_secret_box` for an operator command (`sink`), which reads the
    key outside a start: the file it reads, and the data dir, checked first
    as a start checks them (file_modes.py; SEALTRAIL_ALLOW_READABLE_SECRETS
    alike)."""
    check_key_read(
        text=settings.secrets_key,
        file=settings.secrets_key_file,
        data_dir=settings.data_dir,
        name=KEY_FILE_NAME,
        setting="SEALTRAIL_SECRETS_KEY",
        what="secrets key",
        allow_readable=settings.allow_readable_secrets,
    )
    return load_secret_box(settings)


def load_secrets_key(settings: Settings) -> tuple[SecretBox, Path | None]:
    """`load_secret_box`'s box, and the data dir's key file if the key came
    from there (None if it was configured): a start must not go on with a key
    of the data dir's beside sinks another process sealed (`refuse_a_new_key`)."""

    def generate() -> str:
        return secrets.token_bytes(KEY_BYTES).hex()

    path = settings.data_dir / KEY_FILE_NAME
    text, source = load_key_text(
        text=settings.secrets_key,
        file=settings.secrets_key_file,
        default=path,
        setting="SEALTRAIL_SECRETS_KEY",
        generate=generate,
        what="secrets key",
    )
    keys = []
    for part in text.split(","):
        try:
            key = bytes.fromhex(part.strip())
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise not_a_key(
                source,
                f"{KEY_BYTES * 2} hex digits, or several comma-separated while rotating,"
                " the new one first",
                setting="SEALTRAIL_SECRETS_KEY",
                what="secrets key",
            )
        keys.append(key)
    from_data_dir = not settings.secrets_key and settings.secrets_key_file is None
    return SecretBox(keys), path if from_data_dir else None


def refuse_a_new_key(key_file: Path, unopenable: list[str]) -> NoReturn:
    """Stops a start whose key came from the data dir (generated there, or
    read) and found sinks sealed under another, none under it: a process set
    up without the deployment's key (on a data dir of its own) would take
    sinks' leases and deliver nothing (helper-157). The key file stays: a
    process starting beside this one may have read it (helper-170), and every
    start with it says so."""
    many = len(unopenable) > 1
    raise SystemExit(
        f"{len(unopenable)} sink{'s' * many} of this database {'have' if many else 'has'}"
        " secrets sealed under a secrets key this server does not have, and none was"
        f" configured (nor in {key_file.parent}): every process of a deployment must share"
        " one. Set SEALTRAIL_SECRETS_KEY (or _FILE) to the deployment's secrets key"
        " (docs/scaling.md); if it is lost, to a new one, and give those sinks' secrets"
        f" again (docs/forwarding.md). The first: {unopenable[0]}"
    )
