"""API tokens: how they look, how they are stored, and how a presented one is
resolved to its principal.

A token is `stk_` and 43 base64url characters (256 random bits). Only its
SHA-256 is stored: tokens are random, so a fast hash is as strong as a slow one
and keeps authentication off the hot path's budget.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

from ..domain.errors import Unauthenticated
from .roles import Principal

TOKEN_PREFIX: Final = "stk_"
TENANT_ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_TOKEN_PATTERN: Final = re.compile(r"stk_[A-Za-z0-9_-]{43}")

TokenLookup = Callable[[bytes], Awaitable[Principal | None]]


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def valid_tenant_id(tenant_id: str) -> bool:
    return TENANT_ID_PATTERN.fullmatch(tenant_id) is not None


class Authenticator:
    """Resolves presented tokens to principals, caching hits for `cache_seconds`
    so a busy caller costs one database read per interval, not per call. A
    revoked token therefore stops working within that interval."""

    def __init__(
        self,
        lookup: TokenLookup,
        *,
        cache_seconds: float = 10.0,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._cache_seconds = cache_seconds
        self._max_cached = max_cached
        self._clock = clock
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing `authorization: Bearer <token>` metadata")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not _TOKEN_PATTERN.fullmatch(token.strip()):
            raise Unauthenticated("authorization must be `Bearer stk_...`")
        digest = token_digest(token.strip())
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = await self._lookup(digest)
        if principal is None:
            self._cache.pop(digest, None)
            raise Unauthenticated("unknown or revoked token")
        if len(self._cache) >= self._max_cached:
            self._cache.clear()
        self._cache[digest] = (principal, now + self._cache_seconds)
        return principal
