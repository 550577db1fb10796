"""What a console sign-in through the identity provider keeps between its
requests (migration 0057, ADR 0140 as amended 2026-12-07), in the database,
so that any of several server processes takes each request of it:

    begin(state, binding)    a sign-in under way, from GET /auth/login
    take_begun(state)        its cookie's digest, once, at the callback
    hand(code, token)        the minted token, sealed, for the page
    take_handed(code)        the token, once, at POST /auth/exchange

Rows are keyed by the SHA-256 of the state or one-time code, never the
value; each is taken by a DELETE ... RETURNING, so of two processes asked
for the same one at once, one has it and the other finds nothing. A row past
`expires_at` (the database's clock, the same for every process) is removed
when it is asked for and refused; each new row first removes at most
SWEPT_AT_ONCE of the tenant's expired rows, and the oldest of its stage past
`most` (kept at most, as the process kept in memory before).

The token is sealed (AES-GCM) under a key derived from the one-time code,
which only the browser holds: a reader of the table cannot open it, nor
find the code from its digest."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..domain.errors import Unavailable
from .arrays import TextArray
from .changes import tenant_erased
from .database import RETRY_AFTER_SECONDS, Database
from .db_errors import named

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[Any]
Stage = Literal["begun", "handed"]

# Expired rows a new one removes at most (the rest go with the next).
SWEPT_AT_ONCE: Final = 100
# What the sealing key is derived under (HMAC-SHA256 keyed by the code).
_SEALING: Final = b"sealtrail console sign-in: the token's sealing key"
_NONCE_BYTES: Final = 12

# Expired rows of the tenant, and the oldest of the stage beyond the newest
# `most`, at most SWEPT_AT_ONCE of each; then the new row, unless the tenant
# was erased (its rows went with it; none is made again).
_ADDED: Final = (
    "WITH swept AS (DELETE FROM console_sign_ins WHERE tenant_id = %(tenant)s AND digest IN ("
    "  (SELECT digest FROM console_sign_ins WHERE tenant_id = %(tenant)s"
    "   AND expires_at <= now() ORDER BY expires_at LIMIT %(swept)s)"
    "  UNION ALL"
    "  (SELECT digest FROM console_sign_ins WHERE tenant_id = %(tenant)s AND stage = %(stage)s"
    "   ORDER BY expires_at DESC OFFSET %(most)s LIMIT %(swept)s)))"
    " INSERT INTO console_sign_ins (tenant_id, digest, stage, expires_at, binding, token_id,"
    " token_role, token_name, token_expires_at, sealed_token)"
    " SELECT %(tenant)s, %(digest)s, %(stage)s, now() + make_interval(secs => %(seconds)s),"
    " %(binding)s, %(token_id)s, %(role)s, %(name)s, %(token_expires_at)s, %(sealed)s"
    " WHERE NOT EXISTS (SELECT FROM tenant_erasures WHERE tenant_id = %(tenant)s)"
)
# When the tenant was erased, if it was (its id is never used again).
_ERASED_AT: Final = "SELECT erased_at FROM tenant_erasures WHERE tenant_id = %s"
# Taken once, expired or not; whether it still was in time.
_TAKEN: Final = (
    "DELETE FROM console_sign_ins WHERE tenant_id = %s AND digest = %s AND stage = %s"
    " RETURNING expires_at > now(), binding, token_id::text, token_role, token_name,"
    " token_expires_at, sealed_token"
)


# Of each tenant named, whether it was erased, and whether it has a token or
# an event (a tenant is made by its first token: `sealtrail-server token
# create`): one statement for all, across tenants (the system role's).
_FOUND: Final = (
    "SELECT t.id, EXISTS (SELECT FROM tenant_erasures e WHERE e.tenant_id = t.id),"
    " EXISTS (SELECT FROM api_tokens a WHERE a.tenant_id = t.id)"
    " OR EXISTS (SELECT FROM chain_heads h WHERE h.tenant_id = t.id)"
    " FROM unnest(%s::text[]) WITH ORDINALITY AS t(id, n) ORDER BY n"  # as the file lists them
)


async def tenants_not_found(db: Database, tenant_ids: list[str]) -> dict[str, str]:
    """Of the tenants the console signs in to, those a sign-in would fail
    or find empty: "erased", or "unused" (no token, no event: a typo of its
    id, or a tenant not made yet). One statement for them all: asked a
    tenant at a time, on a connection scoped to each, the start took about
    a second more at the 1,000 tenants a providers file may name. Raises
    psycopg.Error."""
    async with db.system_connection() as conn:
        cursor = await conn.execute(_FOUND, [TextArray(tenant_ids)])
        rows = await cursor.fetchall()
    found: dict[str, str] = {}
    for tenant_id, was_erased, used in rows:
        if was_erased:
            found[str(tenant_id)] = "erased"
        elif not used:
            found[str(tenant_id)] = "unused"
    return found


def digest(value: str) -> bytes:
    """The SHA-256 a state, code or cookie is kept by."""
    return hashlib.sha256(value.encode("utf-8", "replace")).digest()


@dataclass(frozen=True, slots=True)
class HandedToken:
    """A minted token as the exchange hands it to the page."""

    token_id: str
    secret: str
    role: str
    name: str
    expires_at: datetime


def seal(secret: str, label: bytes, associated: str, plain: bytes) -> bytes:
    """`plain` sealed (AES-GCM, a random 96-bit nonce first) under
    HMAC-SHA256 of `label` keyed by `secret`, bound to `associated`."""
    key = hmac.new(secret.encode("utf-8", "replace"), label, hashlib.sha256).digest()
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plain, associated.encode())


def unseal(secret: str, label: bytes, associated: str, sealed: bytes) -> bytes | None:
    """What `seal` sealed; None if it was not sealed under these (a row
    written by hand, another secret)."""
    key = hmac.new(secret.encode("utf-8", "replace"), label, hashlib.sha256).digest()
    try:
        return AESGCM(key).decrypt(
            sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated.encode()
        )
    except InvalidTag:
        return None


def _sealed(code: str, token_id: str, secret: str) -> bytes:
    return seal(code, _SEALING, token_id, secret.encode())


def _opened(code: str, token_id: str, sealed: bytes) -> str | None:
    opened = unseal(code, _SEALING, token_id, sealed)
    return None if opened is None else opened.decode()


@asynccontextmanager
async def console_connection(
    db: Database, tenant_id: str, *, doing: str, refusal: str
) -> AsyncIterator[Connection]:
    """The tenant's connection for the console's sign-ins and sessions: a
    database error logged by its name only (`doing` failed), and answered as
    Unavailable saying `refusal`, with a retry delay."""
    try:
        async with db.connection(tenant_id) as conn:
            yield conn
    except psycopg.Error as error:
        log.warning("%s failed: %s", doing, named(error))
        raise Unavailable(refusal, retry_after=RETRY_AFTER_SECONDS) from None


class SignInsKept:
    """A console's sign-ins under way and codes not yet exchanged, of
    `tenant_id`, `most` of each kept at most."""

    def __init__(self, db: Database, *, tenant_id: str, most: int) -> None:
        self._db = db
        self._tenant_id = tenant_id
        self._most = most

    def _connection(self, doing: str) -> AbstractAsyncContextManager[Connection]:
        return console_connection(
            self._db,
            self._tenant_id,
            doing=f"console sign-in: {doing}",
            refusal="the database did not keep this sign-in; try again",
        )

    async def _refuse_if_erased(self, conn: Connection) -> None:
        """FailedPrecondition (TENANT_ERASED) if the tenant was erased."""
        cursor = await conn.execute(_ERASED_AT, [self._tenant_id])
        if erased := await cursor.fetchone():
            raise tenant_erased(self._tenant_id, at=erased[0])

    async def _add(self, conn: Connection, stage: Stage, **row: Any) -> None:
        """Adds a row of `stage`; FailedPrecondition (TENANT_ERASED), none
        added, if the tenant was erased."""
        values = {
            "binding": None,
            "token_id": None,
            "role": None,
            "name": None,
            "token_expires_at": None,
            "sealed": None,
            **row,
        }
        cursor = await conn.execute(
            _ADDED,
            {
                "tenant": self._tenant_id,
                "stage": stage,
                "swept": SWEPT_AT_ONCE,
                "most": self._most,
                **values,
            },
        )
        if cursor.rowcount == 0:
            await self._refuse_if_erased(conn)

    async def _take(self, conn: Connection, stage: Stage, key: bytes) -> tuple[Any, ...] | None:
        """The row of `stage` kept by `key`, taken; None if there is none (or
        it expired). FailedPrecondition (TENANT_ERASED) if there is none
        because the tenant was erased (its rows went with it): asked only
        then, a sign-in refused."""
        cursor = await conn.execute(_TAKEN, [self._tenant_id, key, stage])
        row = await cursor.fetchone()
        if row is None:
            await self._refuse_if_erased(conn)
        return row if row is not None and row[0] else None

    async def begin(self, state: str, *, binding: bytes, seconds: float) -> None:
        """Keeps a sign-in begun with `state` for `seconds`, bound to the
        browser whose cookie has the digest `binding`."""
        async with self._connection("keeping a sign-in begun") as conn:
            await self._add(conn, "begun", digest=digest(state), seconds=seconds, binding=binding)

    async def take_begun(self, state: str) -> bytes | None:
        """The binding of the sign-in begun with `state`, which no one can take
        after; None if there is none, or it expired (then removed)."""
        async with self._connection("taking a sign-in begun") as conn:
            row = await self._take(conn, "begun", digest(state))
        return None if row is None else bytes(row[1])

    async def hand(
        self, code: str, token: HandedToken, *, seconds: float, on: Connection | None = None
    ) -> None:
        """Keeps `token` for `seconds`, for whoever brings `code`; `on`: in
        that connection's transaction (the token's creation's, so that a
        token is kept only with its code, ADR 0140 as amended 2026-12-07),
        else on a connection of its own."""
        row = {
            "digest": digest(code),
            "seconds": seconds,
            "token_id": token.token_id,
            "role": token.role,
            "name": token.name,
            "token_expires_at": token.expires_at,
            "sealed": _sealed(code, token.token_id, token.secret),
        }
        if on is not None:
            await self._add(on, "handed", **row)
            return
        async with self._connection("keeping a sign-in's code") as conn:
            await self._add(conn, "handed", **row)

    async def take_handed(self, code: str) -> HandedToken | None:
        """The token kept for `code`, which no one can take after; None if
        there is none, or it expired (then removed)."""
        async with self._connection("taking a sign-in's code") as conn:
            row = await self._take(conn, "handed", digest(code))
        if row is None:
            return None
        token_id, role, name, expires_at, sealed = row[2:]
        secret = _opened(code, token_id, bytes(sealed))
        if secret is None:
            return None
        return HandedToken(token_id, secret, role, name, expires_at)
