"""Signing in to the console through the organisation's OpenID provider
(ADR 0140, docs/console.md "Signing in with your identity provider"), one
of the SEALTRAIL_OIDC_* settings, or one per tenant of the providers file
(ADR 0151, providers.py).

    GET  /auth/login      ?tenant=ID (needed with several providers; without
                          it, the organisation the browser last signed in
                          to, else a page asking the organisation, which
                          `?another` asks always): to its provider (302),
                          this sign-in's state kept in the database, bound
                          to the browser by a cookie of its tenant that
                          authorizes nothing (it binds the tenant's 4 latest
                          sign-ins under way: two tabs at once end both);
                          its nonce and PKCE verifier derived from the two,
                          kept nowhere
    GET  /auth/callback   the provider's answer (/auth/callback/<tenant>,
                          each tenant's own, where each has its provider):
                          the state checked (its tenant the callback's; once,
                          in the browser that began it), the code redeemed,
                          the id_token verified (oidc.py), a token of the
                          mapped role minted for the person; 303 to the page
                          with a one-time code in its fragment (no token in
                          a URL)
    POST /auth/exchange   {"code"} -> the token, once, within a minute
    POST /auth/signout    the Authorization token, revoked if a sign-in minted it

Each call of the console's API with a token a sign-in minted first goes
through `rechecked` (recheck.py): past SEALTRAIL_OIDC_RECHECK_SECONDS, the
session is checked again with the provider, and ended if it says so.

(The console answers `GET /auth/config` whether or not a provider is set:
the page's sign-in form shows its button when one is, `described()`.)

What a sign-in mints is an API token (`alice@example.com (console)`), of
the sign-in's tenant, expiring after the session's length: the API decides
every call with it as with any other token.

A state and a one-time code name their tenant (`acme.<random>`) and are kept
in its rows alone: the callback redeems the code at that tenant's provider
only, and verifies the id_token against its issuer, client and keys, so an
id_token of one tenant's provider never gives a session on another. Which
provider issued the code, the state does not say: each tenant's provider
sends back to a callback of its own (its redirect URL), and one of another
tenant's state is refused there before any token request, as is an answer
naming another issuer (RFC 9207's `iss`). Else a hostile tenant's provider
could forward a person's sign-in to another's provider with an attacker's
request, and be given the code it issued to redeem (an OAuth mix-up: the
attacker's own sign-in then redeems it, as that person).

What a sign-in keeps between its requests is in the database
(store/console_sign_ins.py, ADR 0140 as amended 2026-12-07): behind several
server processes, any of them takes each of its requests, and each state and
code is taken once, whichever processes race for it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import html
import json
import logging
import math
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from aiohttp import web

from ..auth.tokens import Authenticator
from ..domain.access import SIGN_IN_NAME_SUFFIX, Role, token_name_problem
from ..domain.errors import (
    FailedPrecondition,
    ResourceExhausted,
    SealtrailError,
    Unauthenticated,
    Unavailable,
)
from ..domain.names import hidden_character
from ..store.console_sessions import Connection, Grant
from ..store.console_sign_ins import HandedToken, SignInsKept, digest
from .oidc import OidcConfig, Person, Provider, SignInRefused, person_of, pkce_challenge
from .providers import callback_tenant, issuer_compared
from .recheck import ENDED_REASON, Ended, Ends, Rechecks

log = logging.getLogger(__name__)

# The cookie binding a sign-in under way to its browser is named after its
# tenant (`sealtrail_signin.acme`): one browser signing in to two
# organisations at once keeps both (ADR 0151). A tenant id's characters
# ([a-z0-9._-]) are all a cookie name's.
COOKIE: Final = "sealtrail_signin"
# Sign-ins under way to one tenant its cookie binds at most: each its own
# random binding, '.'-joined, newest last, the oldest dropped past this, so
# two tabs signing in at once both end, and the cookie stays under 200 bytes.
MAX_BOUND: Final = 4
# A binding as `_login` makes one (token_urlsafe(32)): all a cookie's value keeps.
_BINDING: Final = re.compile(r"[A-Za-z0-9_-]{43}")
# The organisation a browser last signed in to, where each has its provider:
# its id alone, a hint (no secret, nothing authorized by it) that sends
# /auth/login to its provider again. Kept a year, and through a sign-out.
ORGANISATION_COOKIE: Final = "sealtrail_organisation"
ORGANISATION_SECONDS: Final = 365 * 86400
# Where a person who signed in to one organisation asks for another's form.
ANOTHER_ORGANISATION: Final = "/auth/login?another"
# Seconds a sign-in may take at the provider, and a one-time code may wait.
SIGN_IN_SECONDS: Final = 600.0
CODE_SECONDS: Final = 60.0
# Sign-ins under way and codes not yet exchanged kept at most, of each (the
# oldest go).
MAX_PENDING: Final = 10_000
# What a sign-in's token is named: `alice@example.com (console)`; reserved
# to it (no token a caller names may end so: token_name_problem).
NAME_SUFFIX: Final = SIGN_IN_NAME_SUFFIX
# What the page says of a sign-in the database could not complete (out of
# reach, a table locked whole, the server's connections all in use): the
# person was proven, nothing was minted; the provider signs them in again
# at once. Nothing of the database's own words (they name its tables and
# host): the server's log says what it was.
# Where `rechecked` keeps, on a request, the token of the session it let through.
_SESSION_SECRET: Final = web.RequestKey("sealtrail.console_session_secret", str)
# ... and its tenant's id,
_SESSION_TENANT: Final = web.RequestKey("sealtrail.console_session_tenant", str)
# ... and the bearer it could not authenticate for a cause not the token's
# (the database out of reach, its connections all in use): a stream under way
# authenticates it at its first check (`ended_meanwhile`).
_UNCHECKED_BEARER: Final = web.RequestKey("sealtrail.console_unchecked_bearer", str)
# ... and the person a sign-in minted the request's token for (its name less
# NAME_SUFFIX): what the console's calls for it say they are made on behalf of.
_PERSON: Final = web.RequestKey("sealtrail.console_person", str)
# The title of the page answering a sign-in to an erased tenant.
ERASED_TITLE: Final = "This organisation's audit log was erased"
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


# What is kept with a minted token in its creation's transaction (`on` the
# connection given): its one-time code, its session's row. Kept, or neither.
KeptWith = Callable[[Connection, Minted], Awaitable[None]]


class Sessions(Ends, Protocol):
    """The service's side of a sign-in (api/console_sessions.py)."""

    async def mint(
        self,
        *,
        tenant_id: str,
        person: Person,
        issuer: str,
        seconds: float,
        browser: Browser,
        kept_with: KeptWith | None = None,
    ) -> Minted: ...

    async def refused(
        self, *, tenant_id: str, person: Person, issuer: str, browser: Browser
    ) -> None: ...

    async def sign_out(self, secret: str, *, browser: Browser) -> str | None: ...


def _derived(cookie: str, state: str, what: bytes) -> str:
    """A sign-in's nonce or PKCE verifier (`what`), from its state and the
    browser's cookie: kept by no one, made again at the callback from what
    the browser brings, so a reader of the database, which keeps the
    cookie's digest alone, cannot redeem the sign-in's code (43 characters
    of base64url, 256 bits: a verifier as RFC 7636 asks)."""
    mac = hmac.new(
        cookie.encode("utf-8", "replace"),
        what + b"\0" + state.encode("utf-8", "replace"),
        hashlib.sha256,
    ).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def _over_https(config: OidcConfig) -> bool:
    """Whether the browser reaches the console over https (its redirect URL's
    scheme, in any case: `HTTPS://` is one), where its cookies are Secure."""
    return urllib.parse.urlsplit(config.redirect_url).scheme == "https"


def _bindings(cookie: str) -> list[str]:
    """The bindings of sign-ins under way a tenant's cookie holds, oldest
    first, MAX_BOUND at most; what else it holds (not one we made) ignored."""
    return [value for value in cookie.split(".") if _BINDING.fullmatch(value)][-MAX_BOUND:]


def _bind(answer: web.StreamResponse, config: OidcConfig, bindings: list[str]) -> None:
    """`answer` sets the browser's cookie of `config`'s tenant to `bindings`
    (its sign-ins still under way), or removes it where none is."""
    name = sign_in_cookie(config.tenant_id)
    if not bindings:
        answer.del_cookie(name, path="/auth/")
        return
    answer.set_cookie(
        name,
        ".".join(bindings),
        max_age=int(SIGN_IN_SECONDS),
        path="/auth/",
        httponly=True,
        samesite="Lax",  # the provider's redirect back is a top-level GET: sent
        secure=_over_https(config),
    )


def sign_in_cookie(tenant: str) -> str:
    """The name of the cookie binding a sign-in to `tenant` to its browser."""
    return f"{COOKIE}.{tenant}"


def login_path(tenant: str | None) -> str:
    """Where a sign-in through `tenant`'s provider begins (None: the page
    asking the organisation, or the console's one provider)."""
    if tenant is None:
        return "/auth/login"
    return "/auth/login?" + urllib.parse.urlencode({"tenant": tenant})


def _html(title: str, main: str, *, status: int) -> web.Response:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>Sealtrail: {html.escape(title)}</title>"
        f"<main><h1>{html.escape(title)}</h1>{main}</main>"
    )
    return web.Response(text=body, status=status, content_type="text/html")


def page(
    title: str,
    said: str,
    *,
    status: int,
    again: bool = True,
    tenant: str | None = None,
    several: bool = False,
) -> web.Response:
    """A plain page saying why a sign-in ended (no script, nothing fetched),
    its way back to the console's sign-in form first, then to try again
    through `tenant`'s provider, or (a console of `several`) another
    organisation's, the form alone where no tenant is known: /auth/login
    would go to the provider of the one the browser remembers (not `again`:
    a sign-in that cannot succeed, no way to try it)."""
    way_back = '<a href="/" id="back-to-sign-in">Back to the console\'s sign-in</a>'
    another = f'<a href="{ANOTHER_ORGANISATION}">sign in to another organisation</a>'
    if again and tenant is None and several:
        way_back += f", or {another}"
    elif again:
        link = (
            f'<a href="{html.escape(login_path(tenant))}">sign in through the identity'
            " provider again</a>"
        )
        if tenant is None:
            way_back += f", or {link}"
        else:
            way_back += f", {link}, or {another}"
    return _html(title, f"<p>{html.escape(said)}</p><p>{way_back}.</p>", status=status)


def organisation_page(*, said: str = "", status: int = 200) -> web.Response:
    """The page asking which organisation a person signs in to, where the
    console signs in through a provider per tenant (ADR 0151): a form that
    begins the sign-in at /auth/login?tenant=... (no script, nothing fetched).
    It lists no organisation, nor says the one the browser last signed in to
    (asked here, the person wants another); a visitor who names one learns
    whether it signs in here (a tenant id is no secret: ADR 0151)."""
    form = (
        '<form method="get" action="/auth/login">'
        '<label for="tenant">Your organisation\'s id</label> '
        '<input id="tenant" name="tenant" required autocomplete="organization"'
        ' autocapitalize="none" spellcheck="false" maxlength="63"> '
        '<button type="submit">Sign in</button></form>'
    )
    alert = f'<p role="alert">{html.escape(said)}</p>' if said else ""
    back = '<p><a href="/" id="back-to-sign-in">Back to the console\'s sign-in</a>.</p>'
    return _html("Sign in to your organisation", alert + form + back, status=status)


def erased_page(erased: FailedPrecondition) -> web.Response:
    """The answer to a sign-in to a tenant that was erased: 410 Gone, for
    good (an erased tenant's id is never used again), not a fault to retry;
    the erasure's own words (its tenant and time), nothing of the database's."""
    said = erased.message[:1].upper() + erased.message[1:200]
    return page(
        ERASED_TITLE,
        f"{said}. No one can sign in to it here until the console's operator points its"
        " sign-in at another tenant (SEALTRAIL_OIDC_TENANT, or the tenant's entry in"
        " SEALTRAIL_OIDC_PROVIDERS_FILE); nothing was created.",
        status=410,
        again=False,
    )


def erased_refusal(failed: FailedPrecondition) -> web.Response:
    """The page refusing a sign-in whose tenant was erased (logged), if
    `failed` says so; else `failed` raised again."""
    if not is_erased(failed):
        raise failed
    log.warning("a console sign-in was refused: %s", failed.message[:200])
    return erased_page(failed)


def is_erased(failed: SealtrailError) -> bool:
    """Whether `failed` refuses a sign-in because its tenant was erased."""
    return isinstance(failed, FailedPrecondition) and failed.reason == "TENANT_ERASED"


@dataclass(frozen=True, slots=True)
class Tenant:
    """One tenant's sign-in: its provider (`config` as the operator set it)
    and what its sign-ins keep; its sessions' rechecks (None: never)."""

    config: OidcConfig
    provider: Provider
    kept: SignInsKept
    rechecks: Rechecks | None = None


def _tenant_of(value: str) -> str:
    """The tenant a state or one-time code names: what comes before its last
    '.' (`acme.<random>`; the random part is base64url, which has none)."""
    return value.rpartition(".")[0]


def _bound(tenant: str) -> str:
    """A new state or one-time code of `tenant`: its id, '.', 256 random bits.
    Kept by its digest in that tenant's rows alone, so the tenant is bound
    into it: a state or code whose tenant part is changed is another value,
    found in no tenant's rows (ADR 0151)."""
    return f"{tenant}.{secrets.token_urlsafe(32)}"


class SignIn:
    """The sign-in's routes, through each tenant's provider (one, of the
    SEALTRAIL_OIDC_* settings, or one per tenant of the providers file);
    what they keep between them is the tenant's `kept`, in the database, so
    a sign-in begun at one process ends at any."""

    def __init__(
        self,
        tenants: list[Tenant],
        sessions: Sessions,
        *,
        authenticator: Authenticator | None = None,
    ) -> None:
        """Each tenant's sessions are rechecked (its `rechecks`) for a token
        `authenticator` (the API's) takes first (with rechecks, it must be
        given)."""
        assert tenants
        assert all(t.rechecks is None for t in tenants) or authenticator is not None
        self._tenants = {tenant.config.tenant_id: tenant for tenant in tenants}
        self._sessions = sessions
        self._authenticator = authenticator
        # Whether any tenant's sessions are rechecked (else a call costs no lookup).
        self._rechecking = any(t.rechecks is not None for t in tenants)
        self._no_refresh_token_logged = False
        self._browser_of: Callable[[web.Request], Browser] = lambda request: Browser("", "")
        self._same_origin: Callable[[web.Request], None] = lambda request: None

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
            web.get("/auth/callback/{tenant}", self._callback, allow_head=False),
            web.post("/auth/exchange", self._exchange),
            web.post("/auth/signout", self._sign_out),
        ]

    def _again(self, tenant_id: str | None) -> str | None:
        """The tenant a page's link to sign in again names: none where the
        console has one provider (its /auth/login goes there)."""
        return None if len(self._tenants) == 1 else tenant_id

    @property
    def _one(self) -> Tenant | None:
        """The console's tenant where it has one provider alone."""
        return next(iter(self._tenants.values())) if len(self._tenants) == 1 else None

    def described(self, request: web.Request) -> dict[str, str]:
        """What the page's sign-in form says of the provider (GET /auth/config):
        its name for the button ("" says "your identity provider"; so it is
        where each organisation has its own), and there the organisation the
        browser last signed in to, which the button goes to ("": none), for
        the form to offer another's."""
        one = self._one
        if one is not None:
            return {"name": one.config.provider_name}
        remembered = self._remembered(request)
        return {"name": "", "organisation": "" if remembered is None else remembered}

    def _remembered(self, request: web.Request) -> str | None:
        """The organisation the browser last signed in to (ORGANISATION_COOKIE),
        where each has its provider, if it still signs in here (an erased one
        is found so at its sign-in: `_login`)."""
        remembered = request.cookies.get(ORGANISATION_COOKIE, "")
        return remembered if self._one is None and remembered in self._tenants else None

    async def close(self) -> None:
        sessions = {id(t.provider.session): t.provider.session for t in self._tenants.values()}
        for session in sessions.values():
            await session.close()

    async def _login(self, request: web.Request) -> web.StreamResponse:
        # `?tenant=` (an empty field) asks none, as no `tenant` does: with one
        # provider, the query was not read before providers per tenant.
        asked = request.query.get("tenant", "").strip().lower()
        remembered = None
        if not asked:
            tenant = self._one
            if tenant is None:
                # The organisation this browser last signed in to, unless the
                # person asks for another's.
                if "another" in request.query or (remembered := self._remembered(request)) is None:
                    return organisation_page()
                tenant = self._tenants[remembered]
        else:
            if (found := self._tenants.get(asked)) is None:
                return organisation_page(
                    said=f"No organisation {asked[:63]!r} signs in to this console; check its"
                    " id (your administrator has it).",
                    status=404,
                )
            tenant = found
        tenant_id = tenant.config.tenant_id
        again = self._again(tenant_id)
        state, binding = _bound(tenant_id), secrets.token_urlsafe(32)
        nonce = _derived(binding, state, b"nonce")
        challenge = pkce_challenge(_derived(binding, state, b"pkce verifier"))
        try:
            # Kept first: an erased tenant is found so (forgotten, if
            # remembered) before its provider, which may be gone, is asked.
            await tenant.kept.begin(state, binding=digest(binding), seconds=SIGN_IN_SECONDS)
            url = await tenant.provider.authorization_url(
                state=state, nonce=nonce, challenge=challenge
            )
        except SignInRefused as refused:
            return page("Cannot sign in", refused.said, status=refused.status, tenant=again)
        except FailedPrecondition as failed:
            if remembered is not None and is_erased(failed):
                # A hint gone stale: asked which organisation, as at first.
                forgotten = organisation_page()
                forgotten.del_cookie(ORGANISATION_COOKIE, path="/auth/")
                return forgotten
            return erased_refusal(failed)
        except SealtrailError as failed:  # the database out of reach
            return page("Cannot sign in", str(failed)[:300], status=503, tenant=again)
        answer = web.Response(status=302, headers={"Location": url})
        # Beside the sign-ins to this tenant under way in this browser (another tab's).
        under_way = _bindings(request.cookies.get(sign_in_cookie(tenant_id), ""))
        _bind(answer, tenant.config, [*under_way, binding][-MAX_BOUND:])
        return answer

    @staticmethod
    def _mixed_up(tenant: Tenant, request: web.Request) -> str | None:
        """Why an authorization response for `tenant`'s sign-in (its state's)
        is not its provider's, if it is not: sent back to another tenant's
        callback than its redirect URL's, or naming another issuer (RFC 9207
        `iss`, where the provider names one). Its code would be redeemed at
        the tenant's token endpoint: a hostile tenant's provider, forwarding
        a sign-in to another's, would be given that one's code (ADR 0151)."""
        if request.match_info.get("tenant") != callback_tenant(tenant.config.redirect_url):
            return (
                "This sign-in came back to another organisation's callback than the one it"
                " began for; its code was not redeemed. Sign in again."
            )
        issuer = request.query.get("iss")
        if issuer is not None and issuer_compared(issuer) != issuer_compared(tenant.config.issuer):
            return (
                "This sign-in was answered by another identity provider than this"
                " organisation's (its iss differs); its code was not redeemed. Sign in again."
            )
        return None

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        state = query.get("state", "")
        # The state names its tenant, whose provider alone redeems its code
        # and whose rows alone may hold it (ADR 0151).
        tenant = self._tenants.get(_tenant_of(state))
        tenant_id = None if tenant is None else tenant.config.tenant_id
        again = self._again(tenant_id)
        several = self._one is None
        if tenant is not None and (mixed := self._mixed_up(tenant, request)):
            log.warning("a console sign-in to tenant %s was refused (mix_up): %s", tenant_id, mixed)
            return page("Sign-in refused", mixed, status=400, several=several)
        try:
            binding = await tenant.kept.take_begun(state) if tenant is not None else None
        except FailedPrecondition as failed:
            return erased_refusal(failed)
        except SealtrailError as failed:  # the database out of reach
            return page("Cannot sign in", str(failed)[:300], status=503, tenant=again)
        if binding is None or tenant is None:
            return page(
                "Sign-in refused",
                "This sign-in is unknown, was used already, or began more than 10 minutes"
                " ago (its state does not match); sign in again.",
                status=400,
                tenant=again,
                several=several,
            )
        # Its own tenant's cookie: another sign-in under way in this browser
        # to another tenant has a cookie of its own; to this one, a binding
        # of its own in it.
        under_way = _bindings(request.cookies.get(sign_in_cookie(tenant.config.tenant_id), ""))
        matched = [bound for bound in under_way if secrets.compare_digest(digest(bound), binding)]
        if not matched:
            said = (
                "This sign-in was begun in another browser (its cookie does not match); sign"
                " in again from this one."
            )
            if len(under_way) == MAX_BOUND:  # or dropped, the oldest, for a newer one
                said = (
                    "This sign-in was begun in another browser, or more sign-ins to this"
                    f" organisation began since in this one, which keeps the {MAX_BOUND}"
                    " latest; sign in again."
                )
            return page("Sign-in refused", said, status=400, tenant=again)
        cookie = matched[0]
        still_under_way = [bound for bound in under_way if bound != cookie]
        if not (error := query.get("error")) and not query.get("code"):
            return page(
                "Sign-in refused",
                "The identity provider sent back no code.",
                status=400,
                tenant=again,
            )
        if error:
            said = query.get("error_description", "")[:200]
            return page(
                "Sign-in refused",
                f"The identity provider refused the sign-in: {error[:60]}. {said}",
                status=401,
                tenant=again,
            )
        browser = self._browser_of(request)
        try:
            verifier = _derived(cookie, state, b"pkce verifier")
            tokens = await tenant.provider.redeem(query.get("code", ""), verifier)
            nonce = _derived(cookie, state, b"nonce")
            assert tokens.id_token is not None  # redeem's
            claims = await tenant.provider.verify(tokens.id_token, nonce=nonce)
        except SignInRefused as refused:
            log.warning(
                "a console sign-in to tenant %s was refused (%s): %s",
                tenant_id,
                refused.reason,
                refused.said,
            )
            return page("Sign-in refused", refused.said[:300], status=refused.status, tenant=again)
        person = person_of(claims, tenant.config)
        if token_name_problem(person.name + NAME_SUFFIX, sign_in=True) or hidden_character(
            person.name
        ):
            return page(
                "Sign-in refused",
                "The identity provider names you with more than 246 characters, or with"
                " control or hidden characters, which no token's name may hold.",
                status=401,
                tenant=again,
            )
        try:
            grant = None if tokens.refresh_token is None else Grant(tokens.refresh_token, nonce)
            return await self._signed_in(tenant, person, browser, grant, still_under_way)
        except (Unavailable, ResourceExhausted) as failed:  # the database: retry
            log.warning(
                "a console sign-in could not be completed (%s): %s",
                failed.reason,
                failed.message[:200],
            )
            answer = page("Sign-in not completed", NOT_COMPLETED, status=503, tenant=again)
            answer.headers["Retry-After"] = str(max(1, math.ceil(failed.retry_after)))
            return answer
        except FailedPrecondition as failed:
            # Erased for good: not a fault to retry (ADR 0140, 2026-12-07).
            return erased_refusal(failed)

    def _session_seconds(self, tenant: Tenant, grant: Grant | None) -> float:
        """How long a session's token lasts: the tenant's session seconds
        (SEALTRAIL_OIDC_SESSION_SECONDS), unless sessions are rechecked and
        the provider gave no refresh token to recheck it by: then as long as
        a recheck's bound (recheck.py)."""
        seconds = tenant.config.session_seconds
        if tenant.rechecks is None or grant is not None:
            return seconds
        bounded = min(seconds, tenant.rechecks.bound)
        if not self._no_refresh_token_logged:
            self._no_refresh_token_logged = True
            log.warning(
                "the identity provider of tenant %s gave a console sign-in no refresh token"
                " (does it list offline_access in scopes_supported, and allow it to this"
                " client?): its sessions cannot be checked again with it, and last %g s, not"
                " %g (the recheck's bound, 3 x the recheck seconds; logged once)",
                tenant.config.tenant_id,
                bounded,
                seconds,
            )
        return bounded

    async def _signed_in(
        self,
        tenant: Tenant,
        person: Person,
        browser: Browser,
        grant: Grant | None,
        still_under_way: list[str],
    ) -> web.Response:
        """The sign-in ended: its token minted, the browser sent to the page
        with its one-time code; its cookie keeps the bindings of the tenant's
        sign-ins `still_under_way` in this browser (other tabs')."""
        config = tenant.config
        if person.role is None:
            await self._sessions.refused(
                tenant_id=config.tenant_id, person=person, issuer=config.issuer, browser=browser
            )
            return page(
                "No access to this console",
                f"You signed in as {person.name}, who is in none of the groups this console"
                " admits (SEALTRAIL_OIDC_ADMIN_GROUPS, _EXPORTER_GROUPS, _READER_GROUPS, or"
                " the organisation's in the providers file). Ask its operator to add one of"
                " your groups; the refusal was recorded.",
                status=403,
                tenant=self._again(config.tenant_id),
            )
        code = _bound(config.tenant_id)
        rechecks = tenant.rechecks if grant is not None else None

        async def kept_with(conn: Connection, minted: Minted) -> None:
            # In the token's creation's transaction: the token is kept only
            # with its session's row and the code that hands it, or not at all.
            if rechecks is not None and grant is not None:
                await rechecks.keep(
                    minted.secret,
                    token_id=minted.token_id,
                    role=minted.role.value,
                    subject=person.subject,
                    expires_at=minted.expires_at,
                    grant=grant,
                    on=conn,
                )
            handed = HandedToken(
                minted.token_id, minted.secret, minted.role.value, minted.name, minted.expires_at
            )
            await tenant.kept.hand(code, handed, seconds=CODE_SECONDS, on=conn)

        await self._sessions.mint(
            tenant_id=config.tenant_id,
            person=person,
            issuer=config.issuer,
            seconds=self._session_seconds(tenant, grant),
            browser=browser,
            kept_with=kept_with,
        )
        answer = web.Response(status=303, headers={"Location": f"/#signin={code}"})
        _bind(answer, config, still_under_way)
        if self._one is None:
            # Where /auth/login goes next time, the organisation's id not asked again.
            answer.set_cookie(
                ORGANISATION_COOKIE,
                config.tenant_id,
                max_age=ORGANISATION_SECONDS,
                path="/auth/",
                httponly=True,  # the server reads it, and says it at /auth/config
                samesite="Lax",
                secure=_over_https(config),
            )
        # The page that follows is loaded without this URL's code as its referrer.
        answer.headers["Referrer-Policy"] = "no-referrer"
        return answer

    async def _exchange(self, request: web.Request) -> web.Response:
        self._same_origin(request)
        body = await _json_object(request)
        code = body.get("code")
        # The code names its tenant, in whose rows alone it is kept.
        tenant = self._tenants.get(_tenant_of(code)) if isinstance(code, str) else None
        try:
            handed = await tenant.kept.take_handed(code) if tenant and code else None
        except FailedPrecondition as failed:
            if not is_erased(failed):
                raise
            return web.json_response(
                {"error": failed.message, "code": "FAILED_PRECONDITION", "reason": failed.reason},
                status=410,
            )
        except SealtrailError as failed:  # the database out of reach
            return web.json_response({"error": str(failed)[:300]}, status=503)
        if handed is None or tenant is None:
            return web.json_response(
                {
                    "error": "this sign-in's code is unknown, was used already or is older than"
                    " a minute; sign in again",
                    "fields": [{"field": "code", "description": "unknown, used or expired"}],
                },
                status=400,
            )
        return web.json_response(
            {
                "token": handed.secret,
                "token_id": handed.token_id,
                "role": handed.role,
                "name": handed.name,
                "expire_time": handed.expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "tenant": tenant.config.tenant_id,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _sign_out(self, request: web.Request) -> web.Response:
        self._same_origin(request)
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            return web.json_response({"error": "sign out with the token to revoke"}, status=401)
        browser = self._browser_of(request)
        # Whose session it was, asked before the revocation (the API's lookup,
        # cached): its tenant's rechecks forget it.
        rechecks = None
        with contextlib.suppress(SealtrailError):
            if (session := await self._session_of(secret, browser)) is not None:
                rechecks = session[0].rechecks
        problem = await self._sessions.sign_out(secret, browser=browser)
        if problem is not None:
            return web.json_response({"error": problem}, status=400)
        if rechecks is not None:
            # The token is revoked: a row left (the database lost) goes at its expiry.
            with contextlib.suppress(SealtrailError):
                await rechecks.forget(secret)
        return web.json_response({"ok": True})

    async def rechecked(self, request: web.Request, browser: Browser) -> web.Response | None:
        """A call of the console's API with a token a sign-in minted: the
        person it was minted for kept on the request (`person`), and its
        session checked again with its tenant's provider if it is due
        (recheck.py): the 401 answering it if the provider ended the
        session, else None (the call goes on; a token of no session, a
        pasted one, too).

        Only for a token the API's authenticator takes, of a tenant this
        console signs in to, and named as a sign-in names its tokens: any
        other bearer (made up, revoked, expired, another tenant's, an API
        token pasted) is left to the API's own answer, and costs the recheck
        nothing (its lookup is the API's, cached for the call that follows).
        The token is kept on the request for a Live stream or an export to
        recheck as it runs; one the authenticator could not look up (the
        database's fault) too, for the stream to authenticate at its first
        check (`ended_meanwhile`)."""
        if self._authenticator is None:
            return None
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            return None
        try:
            session = await self._session_of(secret, browser)
        except Unauthenticated:  # unknown, revoked, expired: the API says so too
            return None
        except SealtrailError:
            # The database's fault, not the token's: the call goes on, and the
            # API authenticates the token itself (and records it, its name the
            # person's, with no `on_behalf_of`). A Live stream or an export
            # it opens authenticates it again at its first check: it ran for
            # hours unchecked when the API's lookup, just after, succeeded.
            if self._rechecking:
                request[_UNCHECKED_BEARER] = secret
            return None
        if session is None:
            return None
        tenant, request[_PERSON] = session
        if tenant.rechecks is None:
            return None
        request[_SESSION_SECRET] = secret
        request[_SESSION_TENANT] = tenant.config.tenant_id
        ended = await tenant.rechecks.check(secret, browser)
        if ended is None:
            return None
        return web.json_response(
            ended_answer(ended),
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="sealtrail"'},
        )

    async def _session_of(self, secret: str, browser: Browser) -> tuple[Tenant, str] | None:
        """The tenant this console signs in to whose token `secret` is, and
        the person a sign-in minted it for, if it is named as a sign-in names
        its tokens (one that may have a session to recheck): the name less
        NAME_SUFFIX, as the sign-in's own records name them (a verified
        email, else sub@issuer); None for any other token. Raises what the
        authenticator raises (Unauthenticated: the token's fault; else the
        database's)."""
        if self._authenticator is None:
            return None
        principal = await self._authenticator.authenticate(
            f"Bearer {secret}", caller=lambda: browser.ip
        )
        tenant = self._tenants.get(principal.tenant_id)
        person = principal.name.removesuffix(NAME_SUFFIX)
        if tenant is None or not person or person == principal.name:
            return None
        return tenant, person

    @staticmethod
    def person(request: web.Request) -> str | None:
        """The person the request's token was minted for (`rechecked` found
        it), whom the console's calls for it are made on behalf of; None for
        a pasted token, or one the database would not let it look up."""
        return request.get(_PERSON)

    async def ended_meanwhile(self, request: web.Request, browser: Browser) -> Ended | None:
        """For a request going on (a Live stream, an export) whose session
        `rechecked` let through: why the provider ended it since, if its
        recheck fell due and failed (its token revoked then), else None. No
        statement until the session is due (recheck.py, DueTimes). A bearer
        `rechecked` could not authenticate (the database's fault) is
        authenticated here first, at the first check it can be: the API's
        lookup for the call just cached it, so that costs no statement."""
        if not self._rechecking:
            return None
        secret = request.get(_SESSION_SECRET)
        if secret is None:
            unchecked = request.get(_UNCHECKED_BEARER)
            if unchecked is None:
                return None
            try:
                session = await self._session_of(unchecked, browser)
            except Unauthenticated:
                session = None
            except SealtrailError:  # the database again: at the next check
                return None
            del request[_UNCHECKED_BEARER]
            if session is None or (tenant := session[0]).rechecks is None:
                return None
            secret = request[_SESSION_SECRET] = unchecked
            request[_SESSION_TENANT] = tenant.config.tenant_id
        rechecks = self._tenants[request[_SESSION_TENANT]].rechecks
        assert rechecks is not None  # a session of a tenant whose sessions are rechecked
        return await rechecks.check(secret, browser)


def ended_answer(ended: Ended) -> dict[str, str]:
    """What answers a call (its 401's body) or ends a stream (its last line)
    whose session the identity provider ended."""
    return {
        "error": f"the identity provider ended this session: {ended.said}",
        "code": "UNAUTHENTICATED",
        "reason": ENDED_REASON,
    }


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
