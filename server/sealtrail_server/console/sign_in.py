"""Signing in to the console through the organisation's OpenID provider
(ADR 0140, docs/console.md "Signing in with your identity provider").

    GET  /auth/login      to the provider (302), this sign-in's state, nonce
                          and PKCE verifier kept here, bound to the browser
                          by a cookie that authorizes nothing
    GET  /auth/callback   the provider's answer: the state checked (once, in
                          the browser that began it), the code redeemed, the
                          id_token verified (oidc.py), a token of the mapped
                          role minted for the person; 303 to the page with a
                          one-time code in its fragment (no token in a URL)
    POST /auth/exchange   {"code"} -> the token, once, within a minute
    POST /auth/signout    the Authorization token, revoked if a sign-in minted it

(The console answers `GET /auth/config` whether or not a provider is set:
the page's sign-in form shows its button when one is, `described()`.)

What a sign-in mints is an API token (`alice@example.com (console)`), of
the tenant SEALTRAIL_OIDC_TENANT, expiring after the session's length: the
API decides every call with it as with any other token.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from aiohttp import web

from ..domain.access import Role, token_name_problem
from ..domain.errors import ResourceExhausted, SealtrailError, Unavailable
from ..domain.names import hidden_character
from .oidc import OidcConfig, Person, Provider, SignInRefused, person_of, pkce_pair

log = logging.getLogger(__name__)

COOKIE: Final = "sealtrail_signin"
# Seconds a sign-in may take at the provider, and a one-time code may wait.
SIGN_IN_SECONDS: Final = 600.0
CODE_SECONDS: Final = 60.0
# Sign-ins under way and codes not yet exchanged kept at most (the oldest go).
MAX_PENDING: Final = 10_000
# What a sign-in's token is named: `alice@example.com (console)`.
NAME_SUFFIX: Final = " (console)"
# What the page says of a sign-in the database could not complete (out of
# reach, a table locked whole, the server's connections all in use): the
# person was proven, nothing was minted; the provider signs them in again
# at once. Nothing of the database's own words (they name its tables and
# host): the server's log says what it was.
NOT_COMPLETED: Final = (
    "Your sign-in could not be completed: the audit log's database did not answer in"
    " time, and no token was created. Please sign in again in a few seconds."
)


@dataclass(frozen=True, slots=True)
class Browser:
    """Where a sign-in came from, for its records."""

    ip: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class Minted:
    token_id: str
    secret: str
    role: Role
    name: str
    expires_at: datetime


class Sessions(Protocol):
    """The service's side of a sign-in (api/console_sessions.py)."""

    async def mint(
        self, *, tenant_id: str, person: Person, issuer: str, seconds: float, browser: Browser
    ) -> Minted: ...

    async def refused(
        self, *, tenant_id: str, person: Person, issuer: str, browser: Browser
    ) -> None: ...

    async def sign_out(self, secret: str, *, browser: Browser) -> str | None: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    nonce: str
    verifier: str
    binding: bytes  # SHA-256 of the cookie's value
    until: float


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "replace")).digest()


def page(title: str, said: str, *, status: int) -> web.Response:
    """A plain page saying why a sign-in ended (no script, nothing fetched),
    its way back to the console's sign-in form first, then to try again."""
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>Sealtrail: {html.escape(title)}</title>"
        f"<main><h1>{html.escape(title)}</h1><p>{html.escape(said)}</p>"
        '<p><a href="/" id="back-to-sign-in">Back to the console\'s sign-in</a>, or'
        ' <a href="/auth/login">sign in through the identity provider again</a>.</p></main>'
    )
    return web.Response(text=body, status=status, content_type="text/html")


class SignIn:
    """The sign-in's routes and what it keeps between them (in memory: a
    sign-in begun on one process ends on it, behind a sticky proxy)."""

    def __init__(
        self,
        config: OidcConfig,
        provider: Provider,
        sessions: Sessions,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._provider = provider
        self._sessions = sessions
        self._clock = clock
        self._browser_of: Callable[[web.Request], Browser] = lambda request: Browser("", "")
        self._same_origin: Callable[[web.Request], None] = lambda request: None
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._codes: OrderedDict[bytes, tuple[Minted, float]] = OrderedDict()
        self._secure = config.redirect_url.startswith("https:")

    def routes(
        self,
        *,
        browser_of: Callable[[web.Request], Browser],
        same_origin: Callable[[web.Request], None],
    ) -> list[web.AbstractRouteDef]:
        """The routes, for a console that says where a request came from
        (`browser_of`) and refuses a change from another origin (`same_origin`)."""
        self._browser_of = browser_of
        self._same_origin = same_origin
        return [
            web.get("/auth/login", self._login, allow_head=False),
            web.get("/auth/callback", self._callback, allow_head=False),
            web.post("/auth/exchange", self._exchange),
            web.post("/auth/signout", self._sign_out),
        ]

    def described(self) -> dict[str, str]:
        """What the page's sign-in form says of the provider (GET /auth/config):
        its name for the button ("" says "your identity provider")."""
        return {"name": self._config.provider_name}

    async def close(self) -> None:
        await self._provider.session.close()

    def _forget_old(self) -> None:
        """Drops what has expired (kept in the order made), and the oldest past MAX_PENDING."""
        now = self._clock()
        pending, codes = self._pending, self._codes
        while pending and (len(pending) > MAX_PENDING or next(iter(pending.values())).until <= now):
            pending.popitem(last=False)
        while codes and (len(codes) > MAX_PENDING or next(iter(codes.values()))[1] <= now):
            codes.popitem(last=False)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        self._forget_old()
        state, nonce, binding = (secrets.token_urlsafe(32) for _ in range(3))
        verifier, challenge = pkce_pair()
        try:
            url = await self._provider.authorization_url(
                state=state, nonce=nonce, challenge=challenge
            )
        except SignInRefused as refused:
            return page("Cannot sign in", refused.said, status=refused.status)
        self._pending[state] = _Pending(
            nonce, verifier, _digest(binding), self._clock() + SIGN_IN_SECONDS
        )
        answer = web.Response(status=302, headers={"Location": url})
        answer.set_cookie(
            COOKIE,
            binding,
            max_age=int(SIGN_IN_SECONDS),
            path="/auth/",
            httponly=True,
            samesite="Lax",  # the provider's redirect back is a top-level GET: sent
            secure=self._secure,
        )
        return answer

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        self._forget_old()
        query = request.query
        pending = self._pending.pop(query.get("state", ""), None)
        if pending is None or pending.until <= self._clock():
            return page(
                "Sign-in refused",
                "This sign-in is unknown here, was used already, or began more than 10 minutes"
                " ago (its state does not match); sign in again.",
                status=400,
            )
        cookie = request.cookies.get(COOKIE, "")
        if not secrets.compare_digest(_digest(cookie), pending.binding):
            return page(
                "Sign-in refused",
                "This sign-in was begun in another browser (its cookie does not match); sign"
                " in again from this one.",
                status=400,
            )
        if not (error := query.get("error")) and not query.get("code"):
            return page("Sign-in refused", "The identity provider sent back no code.", status=400)
        if error:
            said = query.get("error_description", "")[:200]
            return page(
                "Sign-in refused",
                f"The identity provider refused the sign-in: {error[:60]}. {said}",
                status=401,
            )
        browser = self._browser_of(request)
        try:
            token = await self._provider.redeem(query.get("code", ""), pending.verifier)
            claims = await self._provider.verify(token, nonce=pending.nonce)
        except SignInRefused as refused:
            log.warning("a console sign-in was refused (%s): %s", refused.reason, refused.said)
            return page("Sign-in refused", refused.said[:300], status=refused.status)
        person = person_of(claims, self._config)
        if token_name_problem(person.name + NAME_SUFFIX) or hidden_character(person.name):
            return page(
                "Sign-in refused",
                "The identity provider names you with more than 246 characters, or with"
                " control or hidden characters, which no token's name may hold.",
                status=401,
            )
        try:
            return await self._signed_in(person, browser)
        except (Unavailable, ResourceExhausted) as failed:  # the database: retry
            log.warning(
                "a console sign-in could not be completed (%s): %s",
                failed.reason,
                failed.message[:200],
            )
            answer = page("Sign-in not completed", NOT_COMPLETED, status=503)
            answer.headers["Retry-After"] = str(max(1, math.ceil(failed.retry_after)))
            return answer
        except SealtrailError as failed:  # an erased tenant
            log.warning("a console sign-in could not be completed: %s", failed.reason)
            return page("Cannot sign in", str(failed)[:300], status=503)

    async def _signed_in(self, person: Person, browser: Browser) -> web.Response:
        tenant = self._config.tenant_id
        if person.role is None:
            await self._sessions.refused(
                tenant_id=tenant, person=person, issuer=self._config.issuer, browser=browser
            )
            return page(
                "No access to this console",
                f"You signed in as {person.name}, who is in none of the groups this console"
                " admits (SEALTRAIL_OIDC_ADMIN_GROUPS, _EXPORTER_GROUPS, _READER_GROUPS). Ask"
                " its operator to add one of your groups; the refusal was recorded.",
                status=403,
            )
        minted = await self._sessions.mint(
            tenant_id=tenant,
            person=person,
            issuer=self._config.issuer,
            seconds=self._config.session_seconds,
            browser=browser,
        )
        code = secrets.token_urlsafe(32)
        self._codes[_digest(code)] = (minted, self._clock() + CODE_SECONDS)
        answer = web.Response(status=303, headers={"Location": f"/#signin={code}"})
        answer.del_cookie(COOKIE, path="/auth/")
        # The page that follows is loaded without this URL's code as its referrer.
        answer.headers["Referrer-Policy"] = "no-referrer"
        return answer

    async def _exchange(self, request: web.Request) -> web.Response:
        self._same_origin(request)
        self._forget_old()
        body = await _json_object(request)
        code = body.get("code")
        kept = self._codes.pop(_digest(code), None) if isinstance(code, str) else None
        if kept is None or kept[1] <= self._clock():
            return web.json_response(
                {
                    "error": "this sign-in's code is unknown, was used already or is older than"
                    " a minute; sign in again",
                    "fields": [{"field": "code", "description": "unknown, used or expired"}],
                },
                status=400,
            )
        minted = kept[0]
        return web.json_response(
            {
                "token": minted.secret,
                "token_id": minted.token_id,
                "role": minted.role.value,
                "name": minted.name,
                "expire_time": minted.expires_at.isoformat().replace("+00:00", "Z"),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _sign_out(self, request: web.Request) -> web.Response:
        self._same_origin(request)
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            return web.json_response({"error": "sign out with the token to revoke"}, status=401)
        problem = await self._sessions.sign_out(secret, browser=self._browser_of(request))
        if problem is not None:
            return web.json_response({"error": problem}, status=400)
        return web.json_response({"ok": True})


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        value = json.loads(await request.text())
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "the body must be a JSON object"}),
            content_type="application/json",
        )
    return value
