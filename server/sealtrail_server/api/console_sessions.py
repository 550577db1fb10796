"""What a console sign-in through the identity provider does in the log
(ADR 0140): mints an API token named after the person, revokes it at
sign-out or when the identity provider ends the session (a recheck, ADR 0140
as amended 2026-12-07), records a refusal. Each goes with its record, as the API's token
changes do (ADR 0075): `api_token.created` and `api_token.revoked`
attributed to the person (a `user` actor), `audit_log.access_denied` for
a person in none of the groups the console admits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sealtrail.v1 import event_pb2

from ..auth.tokens import Authenticator, rfc3339
from ..console.oidc import Person
from ..console.recheck import Ended
from ..console.sign_in import NAME_SUFFIX, Browser, KeptWith, Minted
from ..domain.access import Principal, Revoked, token_digest
from ..store.appender import Appender
from ..store.changes import Changes, token_subject
from ..store.database import Connection, Database
from ..store.tokens import create_token, find_principal, mark_revoked, read_token
from .audited import record_event, weakening_severity
from .denials import ACTION as ACCESS_DENIED

# Groups a record names at most (an IdP may name hundreds).
MAX_GROUPS_RECORDED = 50


class ConsoleSessions:
    """The service's side of the console's sign-ins (console/sign_in.Sessions)."""

    def __init__(
        self,
        db: Database,
        appender: Appender,
        changes: Changes,
        *,
        authenticator: Authenticator,
        clock: Callable[[], datetime],
    ) -> None:
        self._db = db
        self._appender = appender
        self._changes = changes
        self._authenticator = authenticator
        self._clock = clock

    def _who(self, person: Person, issuer: str) -> dict[str, Any]:
        return {
            "issuer": issuer,
            "subject": person.subject,
            "groups": list(person.groups[:MAX_GROUPS_RECORDED]),
        }

    async def _record(
        self,
        tenant_id: str,
        person: str,
        browser: Browser,
        *,
        now: datetime,
        action: str,
        description: str,
        severity: event_pb2.Severity.ValueType = event_pb2.SEVERITY_INFO,
        outcome: event_pb2.Outcome.ValueType = event_pb2.OUTCOME_SUCCESS,
        resource_type: str,
        resource_id: str,
        details: dict[str, Any],
    ) -> None:
        """Records a security event of `person` (a `user` actor, by the name the
        identity provider gave) from `browser`."""
        await record_event(
            self._appender,
            tenant_id,
            actor_type=event_pb2.ACTOR_TYPE_USER,
            actor_id=person,
            actor_display_name=person,
            ip=browser.ip,
            user_agent=browser.user_agent,
            now=now,
            action=action,
            description=description,
            category=event_pb2.CATEGORY_SECURITY,
            severity=severity,
            outcome=outcome,
            resource_type=resource_type,
            resource_id=resource_id,
            details=details,
        )

    async def mint(
        self,
        *,
        tenant_id: str,
        person: Person,
        issuer: str,
        seconds: float,
        browser: Browser,
        kept_with: KeptWith | None = None,
    ) -> Minted:
        assert person.role is not None
        role = person.role
        now = self._clock()
        expires_at = now + timedelta(seconds=seconds)
        name = person.name + NAME_SUFFIX
        token_id = str(uuid.uuid4())
        details = {
            "role": role.value,
            "expire_time": rfc3339(expires_at),
            "name": name,
            "sign_in": self._who(person, issuer),
        }

        async def record() -> None:
            await self._record(
                tenant_id,
                person.name,
                browser,
                now=now,
                action="api_token.created",
                description=(
                    f"Signed in to the console through the identity provider: created a"
                    f" console token with role {role.value}"
                ),
                severity=weakening_severity(role.value == "admin"),
                resource_type="api_token",
                resource_id=token_id,
                details=details,
            )

        async def keep(conn: Connection, secret: str) -> None:
            assert kept_with is not None
            await kept_with(conn, Minted(token_id, secret, role, name, expires_at))

        issued = await create_token(
            self._db,
            tenant_id=tenant_id,
            role=role,
            name=name,
            token_id=token_id,
            expires_at=expires_at,
            record=record,
            within=None if kept_with is None else keep,
        )
        return Minted(issued.token_id, issued.secret, role, name, expires_at)

    async def refused(
        self, *, tenant_id: str, person: Person, issuer: str, browser: Browser
    ) -> None:
        await self._record(
            tenant_id,
            person.name,
            browser,
            now=self._clock(),
            action=ACCESS_DENIED,
            description=(
                "Refused a console sign-in through the identity provider: the person is in none"
                " of the groups the console admits"
            ),
            severity=event_pb2.SEVERITY_WARNING,
            outcome=event_pb2.OUTCOME_DENIED,
            resource_type="console",
            resource_id=tenant_id,
            details={"reason": "no_group", "rpc": "console sign-in", **self._who(person, issuer)},
        )

    async def sign_out(self, secret: str, *, browser: Browser) -> str | None:
        """Revokes the token `secret` if a sign-in minted it; what stops it, else None."""
        found = await find_principal(self._db, token_digest(secret))
        if found is None or isinstance(found, Revoked):
            return None  # nothing left to revoke: signed out already
        if not found.name.endswith(NAME_SUFFIX):
            return "only a token a sign-in through the identity provider minted is revoked here"
        # Shielded: a browser going away mid-way leaves no record without its revocation.
        await asyncio.shield(asyncio.ensure_future(self._revoke(found, browser)))
        return None

    async def end(self, secret: str, *, ended: Ended, browser: Browser) -> None:
        """Revokes the console token `secret` because the identity provider
        ended its session (`ended` says how), with its record; nothing if it
        was revoked already."""
        found = await find_principal(self._db, token_digest(secret))
        if found is None or isinstance(found, Revoked) or not found.name.endswith(NAME_SUFFIX):
            return
        await asyncio.shield(asyncio.ensure_future(self._revoke(found, browser, ended=ended)))

    async def _revoke(
        self, principal: Principal, browser: Browser, *, ended: Ended | None = None
    ) -> None:
        tenant_id, token_id = principal.tenant_id, principal.token_id
        async with self._changes.exclusive(tenant_id, token_subject(token_id), caller=None) as conn:
            found = await read_token(conn, tenant_id=tenant_id, token_id=token_id)
            if found is None or found.revoked_at is not None:
                self._authenticator.forget(token_id)
                return
            await mark_revoked(conn, token_id=token_id, tenant_id=tenant_id)
            person = principal.name.removesuffix(NAME_SUFFIX)
            details: dict[str, Any] = {"role": found.role, "name": found.name}
            description = f"Signed out of the console: revoked its token with role {found.role}"
            if ended is not None:
                details |= {"ended_by": "identity_provider", "reason": ended.reason}
                if ended.groups is not None:
                    details["groups"] = list(ended.groups[:MAX_GROUPS_RECORDED])
                description = (
                    "The identity provider ended a console session: revoked its token with role"
                    f" {found.role} ({ended.said[:200]})"
                )
            await self._record(
                tenant_id,
                person,
                browser,
                now=self._clock(),
                action="api_token.revoked",
                description=description,
                resource_type="api_token",
                resource_id=token_id,
                details=details,
            )
        self._authenticator.forget(token_id)
