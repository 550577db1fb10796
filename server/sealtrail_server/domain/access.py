"""Who a caller is: tenants, roles, principals, and what API tokens look like.

A token is `stk_`, 43 random base62 characters (256 bits) and 6 base62
characters of their CRC-32, a checksum that a secret scanner can check to
find tokens with few false positives, and the server before any lookup (ADR
0111). Tokens issued before it are `stk_` and 43 base64url characters, no
checksum: told apart by their length, they keep working. Only a token's
SHA-256 is stored: tokens are random, so a fast hash is as strong as a slow
one and keeps authentication off the hot path's budget.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from .event import MAX_FUTURE_SKEW_SECONDS, MAX_NAME
from .names import name_problem

TOKEN_PREFIX: Final = "stk_"
BASE62: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase
TOKEN_RANDOM_CHARACTERS: Final = 43  # 62 ** 43 > 2 ** 256
TOKEN_CHECKSUM_CHARACTERS: Final = 6  # 62 ** 6 > 2 ** 32
# A token as issued since ADR 0111, and one issued before it.
CHECKSUMMED_TOKEN_PATTERN: Final = re.compile(r"stk_[0-9A-Za-z]{49}")
LEGACY_TOKEN_PATTERN: Final = re.compile(r"stk_[A-Za-z0-9_-]{43}")
# Either: the shape of a token, its checksum unchecked.
TOKEN_PATTERN: Final = re.compile(r"stk_(?:[0-9A-Za-z]{49}|[A-Za-z0-9_-]{43})")
TENANT_ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# How far ahead a token's expiry may lie: two years, a rotation period no
# security policy we know of exceeds, and which still makes a token created
# "for good" say when it is to be looked at again (ADR 0064).
MAX_TOKEN_LIFETIME: Final = timedelta(days=730)


class Role(StrEnum):
    RECORDER = "recorder"  # writes events
    READER = "reader"  # reads and tails events, proofs and checkpoints
    EXPORTER = "exporter"  # a reader that may also export
    ADMIN = "admin"  # everything, settings and tokens included


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a token: its tenant is the only one it can touch.
    `name`: the token's name as Sealtrail's own records show it (redacted as
    the tenant's events are), their `actor.display_name`. `expires_at`: when
    the token stops working (None: never), kept with the principal so that a
    cached one is refused from that moment, not from the cache's next lookup."""

    tenant_id: str
    token_id: str
    role: Role
    name: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Revoked:
    """A token presented after its revocation: whose it was, so that its
    refusal can be recorded in its tenant's log."""

    principal: Principal


# What the console's sign-in adds to the person's name in the name of each
# token it mints (`alice@example.com (console)`): the console tells a
# sign-in's token by it (ADR 0146), so no token a caller names may end so.
SIGN_IN_NAME_SUFFIX: Final = " (console)"


def token_name_problem(name: str, *, sign_in: bool = False) -> str | None:
    """Why `name` cannot label a token, or None. Unless the console's sign-in
    names it (`sign_in`), it may not end with SIGN_IN_NAME_SUFFIX."""
    if not sign_in and name.endswith(SIGN_IN_NAME_SUFFIX):
        reserved = SIGN_IN_NAME_SUFFIX.strip()
        return f"must not end with {reserved!r}: the console's sign-in names its tokens so"
    return name_problem(name, limit=MAX_NAME, required=False)


def expiry_problem(expires_at: datetime, *, now: datetime) -> str | None:
    """Why a new token cannot expire at `expires_at`, or None. The longest
    lifetime is allowed the clock difference an event's time is (5 minutes):
    `--expires-in 2y`, worked out on a client whose clock ran a second ahead
    of the server's, was refused (helper-176)."""
    if expires_at <= now:
        return "must be in the future"
    if expires_at > now + MAX_TOKEN_LIFETIME + timedelta(seconds=MAX_FUTURE_SKEW_SECONDS):
        return f"must be at most {MAX_TOKEN_LIFETIME.days} days ahead"
    return None


def token_checksum(random_part: str) -> str:
    """CRC-32 (IEEE, zlib's) of `random_part` (ASCII) in 6 base62 digits,
    most significant first ("0" for zero), as docs/api.md describes it."""
    value = zlib.crc32(random_part.encode("ascii"))
    digits = []
    for _ in range(TOKEN_CHECKSUM_CHARACTERS):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def new_token() -> str:
    """A new token's secret: `stk_`, 43 random base62 characters and their checksum."""
    random_part = "".join(secrets.choice(BASE62) for _ in range(TOKEN_RANDOM_CHARACTERS))
    return TOKEN_PREFIX + random_part + token_checksum(random_part)


def token_well_formed(token: str) -> bool:
    """Whether `token` can be a token: one issued before checksums (ADR
    0111), or one whose checksum holds. (Whether it exists is the database's
    to say.)"""
    if LEGACY_TOKEN_PATTERN.fullmatch(token):
        return True
    if not CHECKSUMMED_TOKEN_PATTERN.fullmatch(token):
        return False
    end = len(TOKEN_PREFIX) + TOKEN_RANDOM_CHARACTERS
    return token_checksum(token[len(TOKEN_PREFIX) : end]) == token[end:]


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def valid_tenant_id(tenant_id: str) -> bool:
    return TENANT_ID_PATTERN.fullmatch(tenant_id) is not None
