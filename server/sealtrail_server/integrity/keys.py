"""The checkpoint signing key: from SEALTRAIL_SIGNING_KEY (its text), from
SEALTRAIL_SIGNING_KEY_FILE, or else `<data dir>/signing-key`, generated there on
first start (of the deployment: not where the database holds checkpoints other
keys signed, `refuse_an_unchosen_key`). Key text is the C2SP signed-note signer form
`PRIVATE+KEY+<name>+<hex key id>+<base64 key>`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from sealtrail.tlog import NoteError, Signer, Verifier, generate_signer_key

from ..file_modes import check_key_read
from ..key_files import load_key_text, not_a_key
from ..store.checkpoints import register_key
from ..store.migrations import has_table

if TYPE_CHECKING:
    from ..config import Settings

# pg_advisory_xact_lock key of a data dir's key's check ("sealtkey" in ASCII).
_KEY_CHOICE_LOCK = 0x7365616C746B6579

KEY_FILE_NAME = "signing-key"


def configured_signer(settings: Settings, *, create: bool = True) -> Signer:
    """The signer the settings configure (SEALTRAIL_SIGNING_KEY, _FILE, or the
    data dir's key), as `load_signer` loads it."""
    return load_signer(
        key_text=settings.signing_key,
        key_file=settings.signing_key_file,
        data_dir=settings.data_dir,
        name=settings.log_origin,
        create=create,
    )


def checked_signer(settings: Settings) -> Signer:
    """`configured_signer` (none created) for a command that reads the key
    outside a start (`key show`, `key restored`, `tenant erase`): the file it
    reads, and the data dir, checked first as a start checks them
    (file_modes.py; SEALTRAIL_ALLOW_READABLE_SECRETS alike)."""
    check_key_read(
        text=settings.signing_key,
        file=settings.signing_key_file,
        data_dir=settings.data_dir,
        name=KEY_FILE_NAME,
        setting="SEALTRAIL_SIGNING_KEY",
        what="checkpoint signing key",
        allow_readable=settings.allow_readable_secrets,
    )
    return configured_signer(settings, create=False)


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
        raise not_a_key(
            source, str(error), setting="SEALTRAIL_SIGNING_KEY", what="checkpoint signing key"
        ) from None


async def refuse_an_unchosen_key(
    owner_url: str, signer: Signer, key_file: Path, *, register: bool = True
) -> None:
    """Stops a start whose key came from the data dir (generated there, or
    read) while the database knows other signing keys and not this one: a
    data dir restored without its key, or a second server set up without the
    deployment's, would sign the log on under a key nobody chose, which an
    auditor sees as a fork or a key change. The first key of a fresh
    deployment is registered here, under a lock, so that of two fresh servers
    started at once with data dirs of their own the second is refused too
    (helper-191: each registered its key before either had signed, and both
    signed). The key file stays, as the secrets key's does
    (sealing_setup.refuse_a_new_key): every start with it says so, until the
    deployment's key is restored or this one is configured, as a rotation is.
    Without `register` (before the migrations), it only checks, and a
    database without the table yet has no key to check against."""
    async with (
        await psycopg.AsyncConnection.connect(owner_url, autocommit=True) as conn,
        conn.transaction(),
    ):
        if not register and not await has_table(conn, "signing_keys"):
            return
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_KEY_CHOICE_LOCK])
        cursor = await conn.execute("SELECT verifier FROM signing_keys ORDER BY first_used_at")
        known = [Verifier.parse(verifier) for (verifier,) in await cursor.fetchall()]
        if not known and register:
            await register_key(conn, signer.verifier)
    if not known or signer.verifier in known:
        return
    raise SystemExit(
        f"the checkpoint signing key in {key_file} ({_named(signer.verifier)}) is none of"
        " the signing keys of this database, which the deployment's servers sign with"
        f" ({', '.join(map(_named, known))}): signing on with it would show auditors a key"
        f" change nobody chose. Restore the deployment's key to {key_file} (from the data"
        " dir's backup), or set SEALTRAIL_SIGNING_KEY (or _FILE) to it as its other servers"
        " have it. If it is lost, start a new key deliberately: name its file with"
        f" SEALTRAIL_SIGNING_KEY_FILE (this one, {key_file}, will do) and give auditors its"
        " verifier key (sealtrail-server key show); the server registers it beside the old"
        " ones and signs on only where the log extends their checkpoints"
        " (docs/operations.md, Losing a key)."
    )


def _named(key: Verifier) -> str:
    return f"{key.name}+{key.key_id.hex()}"
