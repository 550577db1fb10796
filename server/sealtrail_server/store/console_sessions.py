"""The console's sessions that a sign-in through the identity provider began,
as the recheck with the provider needs them (migration 0058, ADR 0140 as
amended 2026-12-07):

    keep(secret, ...)          at the callback: the session, its refresh token sealed
    claim(secret)              at a call: the session if its recheck is due, taken
                               by this process for LEASE_SECONDS (None: not due,
                               another process rechecks it, or no such session)
    confirmed(secret, ...)     the provider confirmed the person: next check later
    failed(secret, ...)        the provider could not be asked: whether trust ran out
    forget(secret)             the session ended (signed out, or by the provider)
    due_in(secret)             seconds until the session's next check (a read, no
                               claim: what a process remembers it by, recheck.py)

Rows are keyed by the SHA-256 of the console token's secret (what the browser
presents), in the console's tenant. The refresh token (and the sign-in's
nonce) is sealed (AES-GCM) under a key derived from that secret: a reader of
the table cannot use it, and the server can only during a call of the
browser's. Every time is the database's clock, the same for every process.
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg

from .console_sign_ins import console_connection, digest, seal, unseal
from .database import Database

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[Any]

# Seconds a process that claimed a recheck has to finish it before another
# may (the provider's two requests, of PROVIDER_TIMEOUT each, and a margin).
LEASE_SECONDS: Final = 30.0
# Sessions whose token expired that a new row removes at most.
SWEPT_AT_ONCE: Final = 100
# What the sealing key is derived under (HMAC-SHA256 keyed by the token's secret).
_SEALING: Final = b"sealtrail console session: the provider's refresh token"

_KEPT: Final = (
    "WITH swept AS (DELETE FROM console_sessions WHERE tenant_id = %(tenant)s AND digest IN ("
    "  SELECT digest FROM console_sessions WHERE tenant_id = %(tenant)s"
    "  AND token_expires_at <= now() ORDER BY token_expires_at LIMIT %(swept)s))"
    " INSERT INTO console_sessions (tenant_id, digest, token_id, token_role, subject,"
    " token_expires_at, confirmed_at, next_check_at, sealed)"
    " VALUES (%(tenant)s, %(digest)s, %(token_id)s, %(role)s, %(subject)s, %(expires_at)s,"
    " now(), now() + make_interval(secs => %(seconds)s), %(sealed)s)"
)
# Due, and taken for the lease: of processes racing for it, one has it.
_CLAIMED: Final = (
    "UPDATE console_sessions SET next_check_at = now() + make_interval(secs => %s)"
    " WHERE tenant_id = %s AND digest = %s AND next_check_at <= now()"
    " AND token_expires_at > now()"
    " RETURNING token_id::text, token_role, subject, sealed, failures"
)
# Seconds until the next check of a session whose token is still valid.
_DUE_IN: Final = (
    "SELECT extract(epoch FROM next_check_at - now())::float8 FROM console_sessions"
    " WHERE tenant_id = %s AND digest = %s AND token_expires_at > now()"
)
_CONFIRMED: Final = (
    "UPDATE console_sessions SET confirmed_at = now(), failures = 0,"
    " next_check_at = now() + make_interval(secs => %s), sealed = coalesce(%s, sealed)"
    " WHERE tenant_id = %s AND digest = %s"
)
# One more failure; whether the provider last confirmed the person longer ago
# than the bound.
_FAILED: Final = (
    "UPDATE console_sessions SET failures = failures + 1,"
    " next_check_at = now() + make_interval(secs => %s)"
    " WHERE tenant_id = %s AND digest = %s"
    " RETURNING failures, confirmed_at + make_interval(secs => %s) <= now()"
)
_FORGOTTEN: Final = "DELETE FROM console_sessions WHERE tenant_id = %s AND digest = %s"


@dataclass(frozen=True, slots=True)
class Grant:
    """What the provider gave a session to be renewed by: its refresh token,
    and the nonce of the sign-in (a refreshed id_token that names one must
    name it: OpenID Connect Core 1.0, 12.2)."""

    refresh_token: str
    nonce: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """A session whose recheck this process has taken."""

    token_id: str
    role: str
    subject: str
    grant: Grant | None  # None: not sealed under this token (a row written by hand)
    failures: int


def _sealed(secret: str, token_id: str, grant: Grant) -> bytes:
    plain = json.dumps({"refresh_token": grant.refresh_token, "nonce": grant.nonce})
    return seal(secret, _SEALING, token_id, plain.encode())


class SessionsKept:
    """The console's sessions of `tenant_id` that are rechecked."""

    def __init__(self, db: Database, *, tenant_id: str) -> None:
        self._db = db
        self._tenant_id = tenant_id

    def _connection(self, doing: str) -> AbstractAsyncContextManager[Connection]:
        return console_connection(
            self._db,
            self._tenant_id,
            doing=f"console session: {doing}",
            refusal="the database did not answer for this session; try again",
        )

    async def keep(
        self,
        secret: str,
        *,
        token_id: str,
        role: str,
        subject: str,
        expires_at: datetime,
        grant: Grant,
        seconds: float,
        on: Connection | None = None,
    ) -> None:
        """Keeps the session of the token `secret`, its first recheck due
        after `seconds`; `on`: in that connection's transaction (the token's
        creation's, so that both are kept or neither), else on its own."""
        row = {
            "tenant": self._tenant_id,
            "swept": SWEPT_AT_ONCE,
            "digest": digest(secret),
            "token_id": token_id,
            "role": role,
            "subject": subject,
            "expires_at": expires_at,
            "seconds": seconds,
            "sealed": _sealed(secret, token_id, grant),
        }
        if on is not None:
            await on.execute(_KEPT, row)
            return
        async with self._connection("keeping a session") as conn:
            await conn.execute(_KEPT, row)

    async def claim(self, secret: str) -> Claimed | None:
        """The session of `secret` if its recheck is due, taken by this
        process for LEASE_SECONDS; None if it is not due, another process
        holds it, or the token began no rechecked session (a pasted one)."""
        async with self._connection("claiming a recheck") as conn:
            cursor = await conn.execute(_CLAIMED, [LEASE_SECONDS, self._tenant_id, digest(secret)])
            row = await cursor.fetchone()
        if row is None:
            return None
        token_id, role, subject, sealed, failures = row
        opened = unseal(secret, _SEALING, token_id, bytes(sealed))
        grant = None
        if opened is not None:
            kept = json.loads(opened)
            grant = Grant(str(kept["refresh_token"]), str(kept["nonce"]))
        return Claimed(token_id, role, subject, grant, int(failures))

    async def due_in(self, secret: str) -> float | None:
        """Seconds until the next check of the session of `secret` (at most
        0: due now); None if the token began no rechecked session or has
        expired."""
        async with self._connection("reading when a recheck is due") as conn:
            cursor = await conn.execute(_DUE_IN, [self._tenant_id, digest(secret)])
            row = await cursor.fetchone()
        return None if row is None else float(row[0])

    async def confirmed(
        self, secret: str, *, token_id: str, grant: Grant | None, seconds: float
    ) -> None:
        """The provider confirmed the person: the next recheck after
        `seconds`, with the refresh token it gave (`grant`; None: the one kept)."""
        sealed = None if grant is None else _sealed(secret, token_id, grant)
        async with self._connection("confirming a session") as conn:
            await conn.execute(_CONFIRMED, [seconds, sealed, self._tenant_id, digest(secret)])

    async def failed(self, secret: str, *, retry: float, bound: float) -> tuple[int, bool]:
        """A recheck the provider could not answer: tried again after
        `retry`; the failures in a row, and whether the provider last
        confirmed the person more than `bound` seconds ago."""
        async with self._connection("counting a failed recheck") as conn:
            cursor = await conn.execute(_FAILED, [retry, self._tenant_id, digest(secret), bound])
            row = await cursor.fetchone()
        return (0, False) if row is None else (int(row[0]), bool(row[1]))

    async def forget(self, secret: str) -> None:
        """The session of `secret` ended: its row (and refresh token) gone."""
        async with self._connection("forgetting a session") as conn:
            await conn.execute(_FORGOTTEN, [self._tenant_id, digest(secret)])
