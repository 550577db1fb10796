"""Redaction as configured: the built-in rules plus the operator's, and the
secret each tenant's HMAC key is derived from. Read once at startup."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any, Final

import psycopg
import re2

from .config import Settings
from .domain.redaction import Redactor, names_nothing
from .domain.text_patterns import TextPattern, ValuePattern
from .file_modes import check_key_read
from .key_files import load_key_text, not_a_key
from .python_regex_on_re2 import translate
from .store.migrations import has_column

log = logging.getLogger(__name__)

KEY_FILE_NAME = "redaction-key"
_KEY_BYTES = 32
# The deployment's key's fingerprint: an HMAC of this label, which no
# tenant's key derivation (domain/redaction.tenant_key) uses, under the key.
_FINGERPRINT_LABEL: Final = b"sealtrail redaction key fingerprint v1\x00"
_FINGERPRINT_MARKER: Final = "redaction_key"  # its row of deployment_markers
_FIRST_FINGERPRINT: Final = (
    "INSERT INTO deployment_markers (name, fingerprint) VALUES (%s, %s) ON CONFLICT DO NOTHING"
)
_SET_FINGERPRINT: Final = (
    "INSERT INTO deployment_markers (name, fingerprint) VALUES (%s, %s)"
    " ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint, set_at = now()"
)


def load_redactor(settings: Settings) -> Redactor | None:
    """The configured rules; None when redaction is off."""
    if not settings.redaction:
        log.warning(
            "redaction is off (SEALTRAIL_REDACTION=false): every secret sent in an event is"
            " stored as sent, for good; for measuring redaction's cost, never in production"
        )
        return None
    names = [name.strip() for name in settings.redact_fields.split(",") if name.strip()]
    for name in names:
        if names_nothing(name):
            raise SystemExit(
                f"SEALTRAIL_REDACT_FIELDS: {name!r} is no name (keys are compared without"
                " `_ - .` and spaces): it would hide the value under every key"
            )
    patterns: list[ValuePattern] = []
    path = settings.redact_patterns_file
    if path is not None:
        try:
            configured = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise SystemExit(f"redaction patterns file {path}: {error}") from None
        if not isinstance(configured, dict):
            raise SystemExit(f"redaction patterns file {path}: must hold a JSON object")
        for rule, regex in configured.items():
            if not isinstance(regex, str):
                # str() made a list, a number, null or true a regex of its repr.
                raise SystemExit(
                    f"redaction pattern {rule!r} in {path}: must be a string (a Python regex),"
                    f" not {json.dumps(regex)[:80]}"
                )
            patterns.append(ValuePattern(rule, compile_pattern(rule, regex, path)))
    return Redactor().with_rules(field_names=names, patterns=patterns)


def compile_pattern(rule: str, regex: str, path: Path) -> TextPattern:
    """An operator's pattern (a Python regex), compiled by RE2 (google-re2)
    with Python's meaning (`python_regex_on_re2`): RE2 never backtracks, so
    no pattern's search can take time exponential in the text, as one such
    as `(a+)+b` does on Python's engine, which would hold the process on one
    long description. A pattern RE2 cannot run with that meaning (`$`,
    look-around, a backreference) runs on Python's engine, with a warning;
    one RE2 refuses for its size stops the server: on Python's engine, such
    as `(?:\\w+\\s?){1,1000}:` takes seconds on 25 characters (helper-156)."""
    try:
        compiled = re.compile(regex)
    except re.error as error:
        raise SystemExit(f"redaction pattern {rule!r} in {path}: {error}") from None
    except RecursionError:  # Python's compiler recurses by the groups' depth
        raise SystemExit(
            f"redaction pattern {rule!r} in {path}: its groups nest too deep to compile"
        ) from None
    if compiled.search("") is not None:
        raise SystemExit(
            f"redaction pattern {rule!r} in {path} matches the empty text: it would write"
            " its replacement between every two characters of every event"
        )
    translated = translate(regex)
    if translated is None:
        reason = (
            "RE2 reads otherwise what it means in Python ($, \\b or \\B, \\W or \\S or [:"
            " in a class, a backreference)"
        )
    else:
        try:
            return _on_re2(translated)
        except re2.error as error:
            reason = _re2_reason(error)
            if reason.startswith(_SIZE_REFUSALS):
                raise SystemExit(
                    f"redaction pattern {rule!r} in {path} is too large for RE2 ({reason}):"
                    " write it with smaller repeat counts (RE2 takes {n} up to 1000, and a"
                    " repeated \\w or \\d is a large Unicode class)"
                ) from None
            reason = f"RE2 lacks what it uses ({reason})"
    log.warning(
        "redaction pattern %r in %s cannot run on RE2: %s. It runs on Python's backtracking"
        " engine, where a search can take time exponential in the text; rewrite it to run it"
        " on RE2",
        rule,
        path,
        reason,
    )
    return compiled


# RE2's refusals of a pattern for its size, not for a feature it lacks.
_SIZE_REFUSALS: Final = ("pattern too large", "invalid repetition size")
# What one pattern may take when RE2's default (8 MiB) is too little: a
# bounded repeat of a Unicode class (`(?:\\w+\\s?){1,500}:`) needs more.
_LARGE_PATTERN_MEMORY: Final = 64 << 20


def _on_re2(translated: str) -> TextPattern:
    """`translated` compiled by RE2, with more memory if its default is too little."""
    options = re2.Options()
    options.log_errors = False  # refusals are reported with the rule's name
    try:
        compiled: TextPattern = re2.compile(translated, options)
    except re2.error as error:
        if not _re2_reason(error).startswith("pattern too large"):
            raise
        options.max_mem = _LARGE_PATTERN_MEMORY
        compiled = re2.compile(translated, options)
    return compiled


def _re2_reason(error: re2.error) -> str:
    """RE2's message (the bindings give it as bytes)."""
    reason = error.args[0] if error.args else error
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


def load_redaction_secret(settings: Settings) -> bytes:
    """The configured secret; generates and keeps one in the data dir if none is."""
    text, source = load_key_text(
        text=settings.redaction_key,
        file=settings.redaction_key_file,
        default=settings.data_dir / KEY_FILE_NAME,
        setting="SEALTRAIL_REDACTION_KEY",
        generate=lambda: secrets.token_bytes(_KEY_BYTES).hex(),
        what="redaction key",
    )
    return _parse(text, source)


def data_dir_redaction_key(settings: Settings) -> Path | None:
    """The data dir's key file, if the key comes from there (none configured):
    `refuse_another_redaction_key` checks such a key against the deployment's."""
    if settings.redaction_key or settings.redaction_key_file is not None:
        return None
    return settings.data_dir / KEY_FILE_NAME


async def refuse_another_redaction_key(
    owner_url: str, secret: bytes, key_file: Path | None, *, register: bool
) -> None:
    """Stops a start whose key came from the data dir (`key_file`; generated
    there, or read) while the database keeps the fingerprint of another: a
    process set up without the deployment's key stored HMACs of secrets
    unlike its peers', missed by HashSecret's searches, and refused a correct
    idempotent retry as a different event (helper-203). The first key a start
    brings is the deployment's; a configured one is the deployment's by
    choice (a rotation's included), and replaces the fingerprint. The key file
    stays, as the secrets key's does (sealing_setup.refuse_a_new_key). Without
    `register` (before the migrations) it only checks, and a database without
    fingerprints yet has none to check against."""
    fingerprint = redaction_key_fingerprint(secret)
    async with (
        await psycopg.AsyncConnection.connect(owner_url, autocommit=True) as conn,
        conn.transaction(),
    ):
        if not register and not await has_column(conn, "deployment_markers", "fingerprint"):
            return
        known = await _known_fingerprint(conn)
        if known == fingerprint or (key_file is None and not register):
            return
        if key_file is None:
            if known is not None:
                log.warning(
                    "the redaction key configured is not the one this deployment's servers"
                    " used until now: it is the deployment's from now on (a rotation). Every"
                    " process must have it: secrets' HMACs made under the other one no longer"
                    " match (docs/operations.md, Losing a key)"
                )
            await conn.execute(_SET_FINGERPRINT, [_FINGERPRINT_MARKER, fingerprint])
            return
        if known is None and register:
            await conn.execute(_FIRST_FINGERPRINT, [_FINGERPRINT_MARKER, fingerprint])
            known = await _known_fingerprint(conn)  # another process's, if it came first
        if known is None or known == fingerprint:
            return
    raise SystemExit(another_redaction_key(key_file))


def redaction_key_fingerprint(secret: bytes) -> bytes:
    """What the database keeps of the deployment's key (deployment_markers)."""
    return hmac.new(secret, _FINGERPRINT_LABEL, hashlib.sha256).digest()


async def recorded_redaction_fingerprint(conn: psycopg.AsyncConnection[Any]) -> bytes | None:
    """The deployment's key's fingerprint as the service's system role reads
    it (migration 0044); None if no start has registered one yet."""
    cursor = await conn.execute("SELECT fingerprint FROM redaction_key_fingerprint")
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else bytes(row[0])


def another_redaction_key(key_file: Path | None) -> str:
    """Why a process whose redaction key is not the deployment's stops:
    `key_file`, the data dir's it took (none configured), else a configured
    one, which only an operator's command refuses (a server's start makes it
    the deployment's, a rotation)."""
    if key_file is None:
        return (
            "the redaction key configured (SEALTRAIL_REDACTION_KEY or _FILE) is not the one"
            " this deployment's servers use: its HMACs of secrets would be unlike theirs, equal"
            " secrets would no longer correlate, and HashSecret's searches would miss them."
            " Set SEALTRAIL_REDACTION_KEY (or _FILE) to the deployment's redaction key as its"
            " servers have it (docs/scaling.md). A new key becomes the deployment's when a"
            " server starts with it configured (docs/operations.md, Losing a key)."
        )
    return (
        f"the redaction key in {key_file} is not the one this deployment's servers use,"
        " and none was configured: its HMACs of secrets would be unlike theirs, missed by"
        " HashSecret's searches, and a retry with an idempotency key landing here refused"
        " as another event. Set SEALTRAIL_REDACTION_KEY (or _FILE) to the deployment's"
        " redaction key as its other servers have it (docs/scaling.md), or restore it to"
        f" {key_file}. If it is lost, start a new one deliberately: name its file with"
        f" SEALTRAIL_REDACTION_KEY_FILE (this one, {key_file}, will do) on every process;"
        " secrets stored as HMACs before no longer match (docs/operations.md, Losing a key)."
    )


async def _known_fingerprint(conn: psycopg.AsyncConnection[Any]) -> bytes | None:
    cursor = await conn.execute(
        "SELECT fingerprint FROM deployment_markers WHERE name = %s", [_FINGERPRINT_MARKER]
    )
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else bytes(row[0])


def existing_redaction_secret(settings: Settings, *, checked: bool = False) -> bytes | None:
    """The configured secret, or the one a server keeps in the data dir; None
    if there is neither. For a command other than `serve`, which must not make
    one: the servers would not use it. The file it reads, and the data dir,
    checked first as a start checks them (`check_redaction_key_read`; not
    again if `checked` already): read unchecked, a key others could read or
    replace served `token create`, `tenant release-hold` and the `sink`
    commands."""
    configured = settings.redaction_key or settings.redaction_key_file
    if not configured and not (settings.data_dir / KEY_FILE_NAME).exists():
        return None
    if not checked:
        check_redaction_key_read(settings)
    return load_redaction_secret(settings)


def check_redaction_key_read(settings: Settings) -> None:
    """The redaction key's file that an operator command may read, and the
    data dir, checked as a start checks them (file_modes.check_key_read, and
    its escape hatch SEALTRAIL_ALLOW_READABLE_SECRETS): SystemExit naming
    what another user may read or replace. For a command that reads the key
    only for a tenant in hmac mode (a token's name, a hold's reason), before
    it connects, whatever the tenant's mode: checked after, and only in hmac
    mode, a bad file went unsaid until the day a tenant's mode was hmac. A
    file that is not there is left to its reader: a tenant in replace mode
    reads none, and needs none. Nothing with redaction off (none is read)."""
    if not settings.redaction:
        return
    check_key_read(
        text=settings.redaction_key,
        file=settings.redaction_key_file,
        data_dir=settings.data_dir,
        name=KEY_FILE_NAME,
        setting="SEALTRAIL_REDACTION_KEY",
        what="redaction key",
        allow_readable=settings.allow_readable_secrets,
    )


def _parse(text: str, source: str) -> bytes:
    try:
        secret = bytes.fromhex(text.strip())
    except ValueError:
        secret = b""
    if len(secret) != _KEY_BYTES:
        raise not_a_key(
            source,
            f"{_KEY_BYTES * 2} hex digits",
            setting="SEALTRAIL_REDACTION_KEY",
            what="redaction key",
        )
    return secret
