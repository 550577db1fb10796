"""The admin RPCs of API tokens: create (the secret shown once), list and
revoke, within the caller's tenant, each recorded in the log. A mixin of the
servicer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import grpc

from sealtrail.v1 import access_pb2 as pb
from sealtrail.v1 import event_pb2

from ..auth.tokens import Authenticator, rfc3339
from ..domain.access import Principal, Role, expiry_problem, token_name_problem
from ..domain.errors import InvalidArgument, NotFound
from ..domain.event import parse_uuid
from ..domain.filters import page_size
from ..domain.page_tokens import PageTokens
from ..store.appender import Appender
from ..store.changes import Changes, token_subject
from ..store.database import Database
from ..store.tokens import (
    IssuedToken,
    TokenInfo,
    create_token,
    list_tokens,
    mark_revoked,
    read_token,
)
from .audited import FilterDetails, record_access, weakening_severity
from .guard import current_principal

Context = grpc.aio.ServicerContext[Any, Any]

_ROLES: Final = {
    pb.ROLE_RECORDER: Role.RECORDER,
    pb.ROLE_READER: Role.READER,
    pb.ROLE_EXPORTER: Role.EXPORTER,
    pb.ROLE_ADMIN: Role.ADMIN,
}
_ROLE_NUMBERS: Final = {role.value: number for number, role in _ROLES.items()}


def _message(info: TokenInfo) -> pb.ApiToken:
    token = pb.ApiToken(token_id=info.token_id, role=_ROLE_NUMBERS[info.role], name=info.name)
    token.create_time.FromDatetime(info.created_at)
    if info.revoked_at is not None:
        token.revoke_time.FromDatetime(info.revoked_at)
    if info.expires_at is not None:
        token.expire_time.FromDatetime(info.expires_at)
    if info.last_used_at is not None:
        token.last_use_time.FromDatetime(info.last_used_at)
    return token


def _expiry(request: pb.CreateTokenRequest, *, now: datetime) -> datetime | None:
    """The new token's expiry, or None (it never expires)."""
    if not request.HasField("expire_time"):
        return None
    try:
        expires_at = request.expire_time.ToDatetime(UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.field(
            "expire_time", "is not a valid timestamp (years 1 to 9999)"
        ) from None
    if problem := expiry_problem(expires_at, now=now):
        raise InvalidArgument.field("expire_time", problem)
    return expires_at


def _fingerprint(tenant_id: str) -> str:
    # "v3": a page begins after the last token listed, named by its id (v2
    # counted the tokens listed; v1 held a serial): a page token of before is
    # refused, not read as another kind of place.
    return f"tokens/v3/{tenant_id}"


class TokenRpcs:
    _db: Database
    _changes: Changes
    _appender: Appender
    _clock: Callable[[], datetime]
    _page_tokens: PageTokens
    _filter_details: FilterDetails
    _authenticator: Authenticator | None

    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: Context
    ) -> pb.CreateTokenResponse:
        principal = current_principal()
        role = _ROLES.get(request.role)
        if role is None:
            raise InvalidArgument.field("role", "must be RECORDER, READER, EXPORTER or ADMIN")
        if problem := token_name_problem(request.name):
            raise InvalidArgument.field("name", problem)
        expires_at = _expiry(request, now=self._clock())
        if (ends := principal.expires_at) is not None and (expires_at is None or expires_at > ends):
            # A day's admin token made one that never expires, and lived on
            # through it (helper-176).
            raise InvalidArgument.field(
                "expire_time",
                f"must not outlive the token creating it: set it no later than {rfc3339(ends)}",
            )
        token_id = str(uuid.uuid4())
        details: dict[str, Any] = {"role": role.value}
        if expires_at is not None:
            details["expire_time"] = rfc3339(expires_at)

        async def create() -> tuple[IssuedToken, str]:
            # Read before the transaction: it may need a pooled connection of
            # its own (the tenant's settings), which a change holding one must
            # not wait for.
            name = await self._filter_details.text(principal.tenant_id, request.name)
            event_ids: list[str] = []

            async def record() -> None:
                # In the creation's transaction: the token and its record
                # commit together, or neither does. (Recorded first, in a
                # transaction of its own, a creation failing after it, or a
                # process frozen there whose session ended meanwhile, left
                # the record of a token that never existed; ADR 0075.)
                recorded = await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="api_token.created",
                    category=event_pb2.CATEGORY_SECURITY,
                    severity=weakening_severity(role is Role.ADMIN),  # a new admin credential
                    resource_type="api_token",
                    resource_id=token_id,
                    description=f"Created an API token with role {role.value}",
                    details={**details, "name": name},
                )
                event_ids.append(recorded.event_id)

            issued = await create_token(
                self._db,
                tenant_id=principal.tenant_id,
                role=role,
                name=request.name,
                token_id=token_id,
                caller=principal.token_id,
                expires_at=expires_at,
                record=record,
            )
            return issued, event_ids[0]

        # A caller going away does not stop it halfway.
        issued, event_id = await asyncio.shield(asyncio.ensure_future(create()))
        info = TokenInfo(
            issued.token_id,
            issued.tenant_id,
            role.value,
            request.name,
            issued.created_at,
            None,
            expires_at=issued.expires_at,
        )
        return pb.CreateTokenResponse(token=_message(info), secret=issued.secret, event_id=event_id)

    async def ListTokens(
        self, request: pb.ListTokensRequest, context: Context
    ) -> pb.ListTokensResponse:
        principal = current_principal()
        limit = page_size(request.page_size)
        fingerprint = _fingerprint(principal.tenant_id)
        after = None
        if request.page_token:
            [after] = self._page_tokens.decode_key(
                request.page_token, fingerprint=fingerprint, caller=principal.token_id, kinds=(str,)
            )
        rows = await list_tokens(
            self._db, tenant_id=principal.tenant_id, after=after, limit=limit + 1
        )
        page = rows[:limit]
        if not request.page_token:  # a listing is recorded once, not once per page
            await record_access(
                self._appender,
                principal,
                now=self._clock(),
                action="api_token.listed",
                category=event_pb2.CATEGORY_SECURITY,
                resource_type="api_token",
                description="Listed the API tokens",
            )
        return pb.ListTokensResponse(
            tokens=[_message(info) for info in page],
            next_page_token=(
                self._page_tokens.encode_key(
                    fingerprint=fingerprint, key=[page[-1].token_id], caller=principal.token_id
                )
                if len(rows) > limit
                else ""
            ),
        )

    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: Context
    ) -> pb.RevokeTokenResponse:
        principal = current_principal()
        token_id = parse_uuid(request.token_id)
        if token_id is None:
            raise InvalidArgument.field("token_id", "must be a UUID")
        # Its record, the revocation and this process's forgetting of the token
        # go together: a caller going away between the record and the
        # revocation left a token the log says was revoked, live.
        return await asyncio.shield(asyncio.ensure_future(self._revoke(principal, token_id)))

    async def _revoke(self, principal: Principal, token_id: str) -> pb.RevokeTokenResponse:
        # One revocation at a time: a second one finds the token revoked, and
        # answers it as it is, recording nothing (a retry whose answer was lost).
        tenant_id = principal.tenant_id
        # The token's subject, held before the record: the changes the token is
        # making end first, and those it begins now wait, then find it revoked
        # (`hold_live_token`).
        async with self._changes.exclusive(
            tenant_id, token_subject(token_id), caller=principal.token_id
        ) as conn:
            found = await read_token(conn, tenant_id=tenant_id, token_id=token_id)
            if found is None:
                raise NotFound("no token with that id in this tenant")
            if found.revoked_at is not None:
                # A retry whose answer was lost, here or on another process:
                # this one stops honouring the token now too (it trusted a
                # token it had cached for its interval, while answering it
                # revoked).
                self._forget(token_id)
                return pb.RevokeTokenResponse(token=_message(found))
            name = await self._filter_details.text(tenant_id, found.name)
            await mark_revoked(conn, token_id=token_id, tenant_id=tenant_id)
            revoked = await read_token(conn, tenant_id=tenant_id, token_id=token_id)
            # Recorded last, in the revocation's transaction: both commit, or
            # neither; the tenant's head, locked by the record, is held only
            # to the commit (ADR 0075).
            event_id = (
                await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="api_token.revoked",
                    category=event_pb2.CATEGORY_SECURITY,
                    resource_type="api_token",
                    resource_id=token_id,
                    description=f"Revoked an API token with role {found.role}",
                    details={"role": found.role, "name": name},
                )
            ).event_id
        # Committed: this process stops honouring it now (forgotten earlier, a
        # check meanwhile could have cached it again as live).
        self._forget(token_id)
        assert revoked is not None
        return pb.RevokeTokenResponse(token=_message(revoked), event_id=event_id)

    def _forget(self, token_id: str) -> None:
        if self._authenticator is not None:
            self._authenticator.forget(token_id)
