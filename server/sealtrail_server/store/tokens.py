"""API token rows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from ..domain.access import Principal, Revoked, Role, new_token, token_digest
from .changes import (
    DEFAULT_WAIT_SECONDS,
    changes_ended,
    connection_by,
    end_when_idle,
    hold_live_token,
    recorded_within,
    refuse_if_erased,
    share_erasure,
    tenant_erased,
)
from .database import Connection, Database


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token. `secret` is shown once and never stored."""

    token_id: str
    tenant_id: str
    role: Role
    secret: str
    created_at: datetime
    expires_at: datetime | None = None


async def create_token(
    db: Database,
    *,
    tenant_id: str,
    role: Role,
    name: str = "",
    token_id: str | None = None,
    caller: str | None = None,
    expires_at: datetime | None = None,
    record: Callable[[], Awaitable[object]] | None = None,
    within: Callable[[Connection, str], Awaitable[object]] | None = None,
) -> IssuedToken:
    """A new token (with `token_id`, else a new one) and its secret, shown once.
    `record`, the creation's record, is made in the creation's transaction
    (`recorded_within`): both commit, or neither.
    `within(conn, secret)`: what else is kept with the token or not at all
    (a console sign-in's one-time code, its session's row), written in the
    creation's transaction after the token's row and before its record.
    `caller`, the id of the token creating it (None for an operator), must
    still be live: a token revoked as it creates its successor creates none.
    `expires_at`: when it stops working (None: never), checked by the caller
    against its own clock (domain/access.expiry_problem).
    It waits DEFAULT_WAIT_SECONDS at most, for a pooled connection, an erasure
    in progress and the caller's token together, then Unavailable, nothing
    written: each waited its own, the pool's timeout and 5 s and 5 s more."""
    secret = new_token()
    token_id = token_id or str(uuid.uuid4())
    ended: list[Callable[[], None]] = []  # called once its transaction has ended
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEFAULT_WAIT_SECONDS

    def left() -> float:
        return max(deadline - loop.time(), 0.001)

    busy = (
        f"the token's creation waited more than {DEFAULT_WAIT_SECONDS:g} s for a connection to"
        " the database (this server process's are all in use); nothing was created; retry"
    )
    try:
        async with connection_by(db, tenant_id, deadline, busy=busy) as conn, conn.transaction():
            await end_when_idle(conn)  # a process frozen here holds the caller's token
            # An erasure of the tenant in progress is waited for (what is left
            # of the wait, holding a pooled connection): created before its
            # commit, the token would outlive it.
            await share_erasure(conn, tenant_id, seconds=left())
            # Before the caller's token, which it removed.
            await refuse_if_erased(conn, tenant_id)
            if caller is not None:
                await hold_live_token(conn, tenant_id, caller, seconds=left())
            row_values = [tenant_id, token_id, token_digest(secret), role.value, name, expires_at]
            cursor = await conn.execute(
                "INSERT INTO api_tokens"
                " (tenant_id, token_id, secret_sha256, role, name, expires_at)"
                " SELECT %s, %s, %s, %s, %s, %s WHERE NOT EXISTS"
                " (SELECT FROM tenant_erasures WHERE tenant_id = %s) RETURNING created_at",
                [*row_values, tenant_id],
            )
            row = await cursor.fetchone()
            if row is None:
                raise tenant_erased(tenant_id)
            if within is not None:
                await within(conn, secret)
            if record is not None:
                # Last: the tenant's head, which the record locks, is held only
                # to the commit, not while the token's row is written (ADR 0075).
                with recorded_within(conn, tenant_id, ended=ended):
                    await record()
    finally:
        changes_ended(ended)
    created_at = row[0]
    assert isinstance(created_at, datetime)
    return IssuedToken(token_id, tenant_id, role, secret, created_at, expires_at)


async def find_principal(db: Database, digest: bytes) -> Principal | Revoked | None:
    """The principal of the token with this SHA-256; Revoked if the token
    was revoked; None if there is no such token."""
    async with db.system_connection() as conn:
        cursor = await conn.execute(
            "SELECT tenant_id, token_id, role, name, revoked_at IS NOT NULL, expires_at"
            " FROM api_tokens WHERE secret_sha256 = %s",
            [digest],
        )
        row = await cursor.fetchone()
    if row is None:
        return None
    tenant_id, token_id, role, name, revoked, expires_at = row
    principal = Principal(
        tenant_id=str(tenant_id),
        token_id=str(token_id),
        role=Role(str(role)),
        name=str(name),
        expires_at=expires_at,
    )
    return Revoked(principal) if revoked else principal


async def live_token_tenant(db: Database, token_id: str) -> str | None:
    """The tenant of the live token `token_id`, whichever it is (an operator
    at the command line names a token, not its tenant)."""
    async with db.system_connection() as conn:
        cursor = await conn.execute(
            "SELECT tenant_id FROM api_tokens WHERE token_id = %s AND revoked_at IS NULL",
            [token_id],
        )
        row = await cursor.fetchone()
    return str(row[0]) if row else None


async def count_tokens(db: Database) -> int:
    async with db.system_connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM api_tokens")
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token_id: str
    tenant_id: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    serial: int = 0
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


_SELECT_TOKENS = (
    "SELECT token_id::text, tenant_id, role, name, created_at, revoked_at, serial,"
    " expires_at, last_used_at FROM api_tokens WHERE tenant_id = %s"
)


async def list_tokens(
    db: Database, *, tenant_id: str, after: str | None = None, limit: int | None = None
) -> list[TokenInfo]:
    """The tenant's tokens in creation order (serial), after the token
    `after` (a keyset: a page reads its own rows, not those before it)."""
    statement, params = tokens_statement(tenant_id, after=after, limit=limit)
    async with db.connection(tenant_id) as conn:
        cursor = await conn.execute(statement, params)
        return [TokenInfo(*row) for row in await cursor.fetchall()]


def tokens_statement(
    tenant_id: str, *, after: str | None, limit: int | None
) -> tuple[str, list[object]]:
    """list_tokens' statement and its parameters. A page is read after the
    last token it listed, found by its id: never by a count of those listed
    (OFFSET read every token before the page, and a token committed out of
    serial order shifted the count: the next page listed one token again), nor
    by a serial held in the page token, one counter for every tenant, which
    showed how many tokens other tenants made between two of one's own
    (helper-151). A tenant's tokens are never deleted but by its erasure."""
    keyset, params = "", list[object]([tenant_id])
    if after is not None:
        keyset = (
            " AND serial > (SELECT serial FROM api_tokens"
            " WHERE tenant_id = %s AND token_id = %s::uuid)"
        )
        params += [tenant_id, after]
    return _SELECT_TOKENS + keyset + " ORDER BY serial LIMIT %s", [*params, limit]


async def read_token(conn: Connection, *, tenant_id: str, token_id: str) -> TokenInfo | None:
    cursor = await conn.execute(_SELECT_TOKENS + " AND token_id = %s", [tenant_id, token_id])
    row = await cursor.fetchone()
    return TokenInfo(*row) if row else None


async def revoke_token(db: Database, *, token_id: str, tenant_id: str) -> bool:
    """Revoke a live token of `tenant_id`; False if it has no such live token.
    Revocations are tenant-scoped work: the cross-tenant role may not revoke,
    and no role may undo a revocation (migration 0027)."""
    async with db.connection(tenant_id) as conn:
        return await mark_revoked(conn, token_id=token_id, tenant_id=tenant_id)


async def mark_revoked(conn: Connection, *, token_id: str, tenant_id: str) -> bool:
    """revoke_token on a connection the caller holds (and commits)."""
    cursor = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now()"
        " WHERE token_id = %s AND revoked_at IS NULL AND tenant_id = %s RETURNING tenant_id",
        [token_id, tenant_id],
    )
    return await cursor.fetchone() is not None


# Forward only: several processes write the same token's use, each its own
# latest, in whatever order their writes arrive. A row another transaction
# holds (a revocation, an erasure, another process's write) is skipped, not
# waited for: this statement then waits for no lock at all, so it can never
# hold up, or deadlock with, the work that holds it; the use it skips is one
# interval's note of a token being revoked, erased or written at that moment.
_WRITE_LAST_USES = (
    "WITH used AS ("
    "SELECT t.tenant_id, t.token_id, u.used_at FROM api_tokens AS t"
    " JOIN unnest(%s::text[], %s::uuid[], %s::timestamptz[]) AS u (tenant_id, token_id, used_at)"
    " ON t.tenant_id = u.tenant_id AND t.token_id = u.token_id"
    " WHERE t.last_used_at IS NULL OR t.last_used_at < u.used_at"
    " FOR UPDATE OF t SKIP LOCKED)"
    " UPDATE api_tokens AS t SET last_used_at = used.used_at FROM used"
    " WHERE t.tenant_id = used.tenant_id AND t.token_id = used.token_id"
)


async def write_last_uses(db: Database, uses: Mapping[tuple[str, str], datetime]) -> None:
    """Each (tenant, token)'s last use, in one statement: what a process noted
    of every token it saw used since its last write (auth/last_use.py). A
    token erased since is left out by the join."""
    if not uses:
        return
    keys = list(uses)
    async with db.system_connection() as conn:
        await conn.execute(
            _WRITE_LAST_USES,
            [
                [tenant for tenant, _ in keys],
                [token for _, token in keys],
                [uses[key] for key in keys],
            ],
        )
