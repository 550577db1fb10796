"""Who a caller is: tenants, roles, principals, and what API tokens look like.

A token is `stk_` and 43 base64url characters (256 random bits). Only its
SHA-256 is stored: tokens are random, so a fast hash is as strong as a slow one
and keeps authentication off the hot path's budget.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from .event import MAX_FUTURE_SKEW_SECONDS, MAX_NAME
from .names import name_problem

TOKEN_PREFIX: Final = "stk_"
TOKEN_PATTERN: Final = re.compile(r"stk_[A-Za-z0-9_-]{43}")
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


def token_name_problem(name: str) -> str | None:
    """Why `name` cannot label a token, or None."""
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


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def valid_tenant_id(tenant_id: str) -> bool:
    return TENANT_ID_PATTERN.fullmatch(tenant_id) is not None
