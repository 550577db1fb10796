"""A console sign-in provider per tenant (ADR 0151): two real OpenID
providers on 127.0.0.1 (tests/openid_provider.py), one per tenant, listed in
SEALTRAIL_OIDC_PROVIDERS_FILE, and the real console driven as a browser
drives it. Each tenant's people sign in through their own provider to a
token of their own tenant; a sign-in begun for one tenant never ends in a
session of the other (its state, its code, its provider's id_token)."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sealtrail_server.config import Settings
from sealtrail_server.store.console_sign_ins import tenants_not_found
from sealtrail_server.store.database import Database
from tests.conftest import ServerThread, logged
from tests.integration.test_erasure_receipts import erased
from tests.openid_provider import (
    CLIENT_ID,
    Issue,
    OpenIdProvider,
    console_signing_in_per_tenant,
    events_of,
    free_port,
    make_recheck_due,
    signed_in,
    to_callback,
)
from tests.service_login import service_login_url

ACME = f"t-acme-{uuid.uuid4().hex[:8]}"
GLOBEX = f"t-globex-{uuid.uuid4().hex[:8]}"
# Erased by the test of an erased tenant alone.
INITECH = f"t-initech-{uuid.uuid4().hex[:8]}"
# The cookie remembering the organisation a browser last signed in to.
ORGANISATION_COOKIE = "sealtrail_organisation"


@pytest.fixture(scope="module")
def acme_provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        yield running


@pytest.fixture(scope="module")
def globex_provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        yield running


@pytest.fixture(scope="module")
def initech_provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        yield running


@pytest.fixture(scope="module")
def console_server(
    migrated_database_url: str,
    acme_provider: OpenIdProvider,
    globex_provider: OpenIdProvider,
    initech_provider: OpenIdProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerThread]:
    with console_signing_in_per_tenant(
        {ACME: acme_provider, GLOBEX: globex_provider, INITECH: initech_provider},
        migrated_database_url,
        tmp_path_factory.mktemp("oidc-tenants"),
    ) as running:
        yield running


@pytest.fixture
def browser(console_server: ServerThread) -> Iterator[httpx.Client]:
    console = f"http://127.0.0.1:{console_server.service.console_port}"
    with httpx.Client(base_url=console, follow_redirects=False, timeout=20) as client:
        yield client


@pytest.fixture(autouse=True)
def issue_as_usual(acme_provider: OpenIdProvider, globex_provider: OpenIdProvider) -> None:
    acme_provider.issue = Issue()
    globex_provider.issue = Issue()


def _code_of(back: httpx.Response) -> str:
    """The one-time code a callback's redirect hands the page."""
    return back.headers["Location"].removeprefix("/#signin=")


def _remembering(browser: httpx.Client, tenant: str) -> None:
    """`browser` as if it had last signed in to `tenant` (its only cookie)."""
    browser.cookies.clear()
    browser.cookies.set(ORGANISATION_COOKIE, tenant, domain="127.0.0.1", path="/auth/")


def _tokens(sql: psycopg.Connection[Any], tenant: str) -> int:
    row = sql.execute("SELECT count(*) FROM api_tokens WHERE tenant_id = %s", [tenant]).fetchone()
    assert row is not None
    return int(row[0])


def _tenant_of_token(sql: psycopg.Connection[Any], token_id: str) -> str:
    row = sql.execute("SELECT tenant_id FROM api_tokens WHERE token_id = %s", [token_id]).fetchone()
    assert row is not None
    return str(row[0])


def _with_query(url: str, **changed: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query), **changed)
    return parts._replace(query=urllib.parse.urlencode(query)).geturl()


def _no_token_minted(
    browser: httpx.Client, sql: psycopg.Connection[Any], url: str
) -> httpx.Response:
    """`url` (a callback) followed, with no token minted in either tenant."""
    before = (_tokens(sql, ACME), _tokens(sql, GLOBEX))
    answer = browser.get(url)
    assert answer.headers["Content-Type"].startswith("text/html")
    assert (_tokens(sql, ACME), _tokens(sql, GLOBEX)) == before, "a refused sign-in minted"
    return answer


def test_each_tenant_signs_in_through_its_own_provider(
    browser: httpx.Client,
    acme_provider: OpenIdProvider,
    globex_provider: OpenIdProvider,
    sql: psycopg.Connection[Any],
) -> None:
    globex_provider.issue = Issue(email="bob@globex.example", groups=["audit-admins"])
    for tenant, provider, name, role in (
        (ACME, acme_provider, "alice@example.com", "reader"),
        (GLOBEX, globex_provider, "bob@globex.example", "admin"),
    ):
        login = browser.get("/auth/login", params={"tenant": tenant})
        assert login.status_code == 302
        assert login.headers["Location"].startswith(f"{provider.issuer}/authorize?")
        minted = signed_in(browser, tenant=tenant)
        assert minted["tenant"] == tenant
        assert (minted["role"], minted["name"]) == (role, f"{name} (console)")
        assert _tenant_of_token(sql, minted["token_id"]) == tenant
        (created,) = [
            event
            for event in events_of(browser, minted["token"], "api_token.created")
            if event["resource"]["id"] == minted["token_id"]
        ]
        assert created["details"]["sign_in"]["issuer"] == provider.issuer


def test_a_sign_in_without_an_organisation_asks_for_one(browser: httpx.Client) -> None:
    asked = browser.get("/auth/login")
    assert asked.status_code == 200
    assert '<form method="get" action="/auth/login">' in asked.text
    assert 'name="tenant"' in asked.text
    # It lists no organisation: which use this console is not the visitor's to learn.
    assert all(tenant not in asked.text for tenant in (ACME, GLOBEX, INITECH))
    unknown = browser.get("/auth/login", params={"tenant": "t-hooli"})
    assert unknown.status_code == 404
    assert "No organisation &#x27;t-hooli&#x27; signs in to this console" in unknown.text
    assert '<form method="get" action="/auth/login">' in unknown.text
    # The page's button names no provider: each organisation has its own;
    # nor an organisation, this browser having signed in to none.
    assert browser.get("/auth/config").json() == {
        "identity_provider": {"name": "", "organisation": ""}
    }


def test_a_browser_signs_in_again_to_the_organisation_it_last_signed_in_to(
    browser: httpx.Client, globex_provider: OpenIdProvider
) -> None:
    """The organisation's id is asked once: a sign-in remembers it (a cookie
    holding the id alone), and /auth/login goes to its provider after, until
    the person asks for another organisation's."""
    back = browser.get(to_callback(browser, tenant=GLOBEX))
    assert back.status_code == 303
    (remembered,) = [
        cookie
        for cookie in back.headers.get_list("Set-Cookie")
        if cookie.startswith(f"{ORGANISATION_COOKIE}=")
    ]
    attributes = {part.strip().partition("=")[0].lower() for part in remembered.split(";")}
    assert f"{ORGANISATION_COOKIE}={GLOBEX};" in remembered
    assert "samesite=lax" in remembered.lower() and "path=/auth/" in remembered.lower()
    assert {"max-age", "httponly"} <= attributes
    assert "secure" not in attributes  # served over http here
    max_age = int(remembered.lower().partition("max-age=")[2].partition(";")[0])
    assert max_age >= 30 * 86400
    login = browser.get("/auth/login")
    assert login.status_code == 302
    assert login.headers["Location"].startswith(f"{globex_provider.issuer}/authorize?")
    # The page's button says which; "another organisation" asks the id again.
    assert browser.get("/auth/config").json() == {
        "identity_provider": {"name": "", "organisation": GLOBEX}
    }
    another = browser.get("/auth/login", params={"another": ""})
    assert another.status_code == 200
    assert '<form method="get" action="/auth/login">' in another.text
    # Signing out forgets the session, not the organisation: it is a hint.
    minted = browser.post("/auth/exchange", json={"code": _code_of(back)}).json()
    signed_out = browser.post(
        "/auth/signout", headers={"Authorization": f"Bearer {minted['token']}"}
    )
    assert signed_out.json() == {"ok": True}
    assert browser.cookies.get(ORGANISATION_COOKIE) == GLOBEX
    assert browser.get("/auth/login").status_code == 302
    # A sign-in to another organisation remembers that one instead.
    signed_in(browser, tenant=ACME)
    assert browser.cookies.get(ORGANISATION_COOKIE) == ACME


def test_a_console_served_over_https_remembers_the_organisation_in_a_secure_cookie(
    migrated_database_url: str,
    acme_provider: OpenIdProvider,
    globex_provider: OpenIdProvider,
    tmp_path: Path,
) -> None:
    """Behind a TLS-terminating proxy (an https redirect URL), the cookies a
    sign-in sets are Secure: the browser sends them over https alone."""
    port = free_port()
    with console_signing_in_per_tenant(
        {ACME: acme_provider, GLOBEX: globex_provider},
        migrated_database_url,
        tmp_path,
        console_listen=f"127.0.0.1:{port}",
        oidc_redirect_url=f"https://127.0.0.1:{port}/auth/callback",
    ) as running:
        console = f"http://127.0.0.1:{running.service.console_port}"
        with httpx.Client(base_url=console, follow_redirects=False, timeout=20) as browser:
            login = browser.get("/auth/login", params={"tenant": ACME})
            assert "secure" in login.headers["Set-Cookie"].lower()
            binding = login.cookies[f"sealtrail_signin.{ACME}"]
            at_provider = httpx.get(login.headers["Location"], follow_redirects=False, timeout=20)
            # What the proxy hands on, the cookie as the browser sends it over https.
            callback = at_provider.headers["Location"].replace("https:", "http:", 1)
            back = browser.get(callback, headers={"Cookie": f"sealtrail_signin.{ACME}={binding}"})
    assert back.status_code == 303, back.text
    (remembered,) = [
        cookie
        for cookie in back.headers.get_list("Set-Cookie")
        if cookie.startswith(f"{ORGANISATION_COOKIE}=")
    ]
    assert "secure" in {part.strip().lower() for part in remembered.split(";")}


def test_a_remembered_organisation_that_signs_in_here_no_more_is_ignored(
    browser: httpx.Client,
) -> None:
    for stale in ("t-hooli", "x" * 100, ""):
        _remembering(browser, stale)
        asked = browser.get("/auth/login")
        assert asked.status_code == 200, stale
        assert '<form method="get" action="/auth/login">' in asked.text
        assert browser.get("/auth/config").json() == {
            "identity_provider": {"name": "", "organisation": ""}
        }


def test_sign_ins_to_two_organisations_at_once_in_one_browser_both_end(
    browser: httpx.Client,
) -> None:
    """Each sign-in under way has a cookie of its own tenant: beginning one
    to globex leaves the one to acme begun before it as it was."""
    to_acme = to_callback(browser, tenant=ACME)
    to_globex = to_callback(browser, tenant=GLOBEX)
    for url, tenant in ((to_acme, ACME), (to_globex, GLOBEX)):
        back = browser.get(url)
        assert back.status_code == 303, back.text
        exchanged = browser.post("/auth/exchange", json={"code": _code_of(back)})
        assert exchanged.json()["tenant"] == tenant


def test_two_sign_ins_to_one_organisation_beside_one_to_another_all_end(
    browser: httpx.Client,
) -> None:
    """Two tabs signing in to acme at once, a third to globex: acme's cookie
    binds both of its own (ADR 0151), globex's its one; each ends."""
    begun = [(to_callback(browser, tenant=tenant), tenant) for tenant in (ACME, GLOBEX, ACME)]
    for url, tenant in begun:
        back = browser.get(url)
        assert back.status_code == 303, back.text
        exchanged = browser.post("/auth/exchange", json={"code": _code_of(back)})
        assert exchanged.json()["tenant"] == tenant


def test_a_sign_in_is_bound_by_its_own_tenants_cookie_alone(
    browser: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    """The cookie of a sign-in under way to globex does not stand for one to
    acme: acme's, gone from the browser, refuses acme's callback."""
    to_acme = to_callback(browser, tenant=ACME)
    to_callback(browser, tenant=GLOBEX)
    (acme_cookie,) = [name for name in browser.cookies if ACME in name]
    del browser.cookies[acme_cookie]
    answer = _no_token_minted(browser, sql, to_acme)
    assert answer.status_code == 400
    assert "begun in another browser" in answer.text
    # Its way back: acme's provider again, or another organisation's.
    assert f'href="/auth/login?tenant={ACME}"' in answer.text
    assert 'href="/auth/login?another"' in answer.text


def test_a_state_moved_to_another_tenant_is_refused(
    browser: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    callback = to_callback(browser, tenant=ACME)
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))["state"]
    assert state.startswith(f"{ACME}.")
    moved = _with_query(callback, state=GLOBEX + state.removeprefix(ACME))
    # ... and to its tenant's callback (at acme's, the path refuses it first).
    moved = moved.replace(f"/auth/callback/{ACME}?", f"/auth/callback/{GLOBEX}?", 1)
    answer = _no_token_minted(browser, sql, moved)
    assert answer.status_code == 400
    assert "its state does not match" in answer.text
    # A refusal's way back begins at its tenant's provider again.
    assert f'href="/auth/login?tenant={GLOBEX}"' in answer.text
    # The state as it was still ends the sign-in, in its own tenant.
    assert browser.get(callback).status_code == 303


def test_a_code_of_one_tenants_provider_gives_no_session_on_another(
    browser: httpx.Client,
    acme_provider: OpenIdProvider,
    globex_provider: OpenIdProvider,
    sql: psycopg.Connection[Any],
) -> None:
    """A sign-in begun for globex, its authorization asked of acme's provider
    instead (the same client id there): acme's code, brought back with
    globex's state, is redeemed at globex's provider alone, which refuses it."""
    login = browser.get("/auth/login", params={"tenant": GLOBEX})
    to_globex = login.headers["Location"]
    to_acme = to_globex.replace(globex_provider.issuer, acme_provider.issuer, 1)
    at_acme = httpx.get(to_acme, follow_redirects=False, timeout=20)
    assert at_acme.status_code == 302
    answer = _no_token_minted(browser, sql, at_acme.headers["Location"])
    assert answer.status_code == 502
    assert "refused the sign-in&#x27;s code (invalid_grant)" in answer.text


class Hostile(OpenIdProvider):
    """A hostile tenant's provider: it sends whoever signs in here on to
    another provider's authorize endpoint, with an attacker's request
    (`forward`) and this sign-in's state, and records the codes the console
    asks it to redeem."""

    def __init__(self) -> None:
        super().__init__()
        self.forward = ""
        self.redeemed: list[str] = []

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(_with_query(self.forward, state=request.query["state"]))

    async def _token(self, request: web.Request) -> web.Response:
        self.redeemed.append(str((await request.post()).get("code", "")))
        return web.json_response({"error": "invalid_grant"}, status=400)


def test_a_hostile_tenants_provider_never_learns_another_tenants_code(
    migrated_database_url: str, acme_provider: OpenIdProvider, tmp_path: Path
) -> None:
    """An OAuth mix-up: a victim's sign-in to the hostile tenant (EVIL) is
    forwarded by EVIL's provider to acme's, with an attacker's own request
    for acme. Acme's code comes back with the victim's EVIL state: redeemed
    at EVIL's token endpoint, EVIL learnt it, and the attacker redeemed it in
    their own sign-in to acme, a session as the victim. Each tenant has a
    callback of its own (`/auth/callback/<tenant>`, the redirect URL its
    provider knows), and a state brought to another's is refused there."""
    evil = f"t-evil-{uuid.uuid4().hex[:8]}"
    hostile = Hostile()
    with (
        hostile,
        console_signing_in_per_tenant(
            {ACME: acme_provider, evil: hostile}, migrated_database_url, tmp_path
        ) as running,
    ):
        console = f"http://127.0.0.1:{running.service.console_port}"
        with (
            httpx.Client(base_url=console, follow_redirects=False, timeout=20) as attacker,
            httpx.Client(base_url=console, follow_redirects=False, timeout=20) as victim,
        ):
            # The attacker begins a sign-in to acme, and stops before its provider.
            theirs = attacker.get("/auth/login", params={"tenant": ACME})
            assert theirs.status_code == 302
            hostile.forward = theirs.headers["Location"]
            # The victim signs in to EVIL (a link); EVIL's provider forwards.
            to_evil = victim.get("/auth/login", params={"tenant": evil})
            to_acme = httpx.get(to_evil.headers["Location"], follow_redirects=False, timeout=20)
            back = httpx.get(to_acme.headers["Location"], follow_redirects=False, timeout=20)
            callback = back.headers["Location"]  # acme's code, the victim's EVIL state
            answer = victim.get(callback)
    assert hostile.redeemed == [], "the console gave acme's code to EVIL's provider"
    assert urllib.parse.urlsplit(callback).path == f"/auth/callback/{ACME}"
    assert answer.status_code == 400, answer.text
    assert "another organisation" in answer.text
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))["code"]
    assert code in acme_provider.codes, "acme's code was redeemed"


def test_each_tenants_provider_sends_back_to_a_callback_of_its_own(
    browser: httpx.Client, console_server: ServerThread
) -> None:
    console = f"http://127.0.0.1:{console_server.service.console_port}"
    for tenant in (ACME, GLOBEX):
        login = browser.get("/auth/login", params={"tenant": tenant})
        asked = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(login.headers["Location"]).query))
        assert asked["redirect_uri"] == f"{console}/auth/callback/{tenant}"


def test_a_state_brought_to_another_tenants_callback_is_refused_before_its_code_is_redeemed(
    browser: httpx.Client, acme_provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    callback = to_callback(browser, tenant=ACME)
    redeemed = acme_provider.redeem_requests
    elsewhere = callback.replace(f"/auth/callback/{ACME}?", f"/auth/callback/{GLOBEX}?", 1)
    answer = _no_token_minted(browser, sql, elsewhere)
    assert answer.status_code == 400
    assert "came back to another organisation&#x27;s callback" in answer.text
    assert 'href="/auth/login?another"' in answer.text
    bare = callback.replace(f"/auth/callback/{ACME}?", "/auth/callback?", 1)
    assert _no_token_minted(browser, sql, bare).status_code == 400
    assert acme_provider.redeem_requests == redeemed
    # Refused before it was taken: at its own callback, it ends the sign-in.
    assert browser.get(callback).status_code == 303


def test_an_authorization_response_naming_another_issuer_is_refused(
    browser: httpx.Client,
    acme_provider: OpenIdProvider,
    globex_provider: OpenIdProvider,
    sql: psycopg.Connection[Any],
) -> None:
    """RFC 9207: where a provider names itself in its authorization response
    (`iss`), the console takes the response only from the tenant's issuer
    (compared as issuers are: case of scheme and host, a trailing slash)."""
    try:
        acme_provider.response_iss = acme_provider.issuer.upper() + "/"
        assert signed_in(browser, tenant=ACME)["tenant"] == ACME
        # A sign-in to globex, its authorization asked of acme's provider.
        login = browser.get("/auth/login", params={"tenant": GLOBEX})
        to_acme = login.headers["Location"].replace(globex_provider.issuer, acme_provider.issuer)
        at_acme = httpx.get(to_acme, follow_redirects=False, timeout=20)
        redeemed = globex_provider.redeem_requests
        answer = _no_token_minted(browser, sql, at_acme.headers["Location"])
    finally:
        acme_provider.response_iss = None
    assert answer.status_code == 400, answer.text
    assert "another identity provider than this organisation" in answer.text
    assert globex_provider.redeem_requests == redeemed


def test_a_callback_of_no_organisation_offers_another_organisation(
    browser: httpx.Client,
) -> None:
    """A state naming no tenant of the file: the page's way back is the form
    asking the organisation, not /auth/login (which goes, for a browser
    remembering one, to that one's provider)."""
    _remembering(browser, ACME)
    answer = browser.get("/auth/callback", params={"state": "t-hooli.abc", "code": "x"})
    assert answer.status_code == 400
    assert 'href="/auth/login?another"' in answer.text
    assert 'href="/auth/login"' not in answer.text


def test_an_id_token_of_another_tenants_issuer_is_refused(
    browser: httpx.Client,
    acme_provider: OpenIdProvider,
    globex_provider: OpenIdProvider,
    sql: psycopg.Connection[Any],
) -> None:
    globex_provider.issue = Issue(claims={"iss": acme_provider.issuer})
    answer = _no_token_minted(browser, sql, to_callback(browser, tenant=GLOBEX))
    assert answer.status_code == 401
    assert "from another issuer" in answer.text


def test_a_code_moved_to_another_tenant_is_refused(browser: httpx.Client) -> None:
    back = browser.get(to_callback(browser, tenant=ACME))
    assert back.status_code == 303
    code = back.headers["Location"].removeprefix("/#signin=")
    moved = browser.post("/auth/exchange", json={"code": GLOBEX + code.removeprefix(ACME)})
    assert moved.status_code == 400
    assert "unknown" in moved.json()["error"]
    assert browser.post("/auth/exchange", json={"code": code}).json()["tenant"] == ACME


def test_each_tenants_sessions_are_rechecked_with_its_own_provider(
    browser: httpx.Client,
    acme_provider: OpenIdProvider,
    globex_provider: OpenIdProvider,
    sql: psycopg.Connection[Any],
) -> None:
    acme = signed_in(browser, tenant=ACME)["token"]
    globex = signed_in(browser, tenant=GLOBEX)["token"]
    # globex's provider has removed its person; acme's has not.
    globex_provider.issue = Issue(refresh="invalid_grant")
    refreshes = acme_provider.refreshes, globex_provider.refreshes
    for tenant, token in ((ACME, acme), (GLOBEX, globex)):
        make_recheck_due(sql, tenant, token)
    kept = browser.get("/api/signin", headers={"Authorization": f"Bearer {acme}"})
    assert kept.json() == {"ok": True, "role": "reader"}
    ended = browser.get("/api/signin", headers={"Authorization": f"Bearer {globex}"})
    assert ended.status_code == 401
    assert ended.json()["reason"] == "IDENTITY_PROVIDER_ENDED_SESSION"
    assert (acme_provider.refreshes, globex_provider.refreshes) == (
        refreshes[0] + 1,
        refreshes[1] + 1,
    )


def test_signing_out_ends_the_session_of_its_own_tenant(
    browser: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    minted = signed_in(browser, tenant=GLOBEX)
    bearer = {"Authorization": f"Bearer {minted['token']}"}
    sessions = "SELECT count(*) FROM console_sessions WHERE tenant_id = %s AND token_id = %s"
    assert sql.execute(sessions, [GLOBEX, minted["token_id"]]).fetchone() == (1,)
    assert browser.post("/auth/signout", headers=bearer).json() == {"ok": True}
    assert browser.get("/api/signin", headers=bearer).status_code == 401
    assert sql.execute(sessions, [GLOBEX, minted["token_id"]]).fetchone() == (0,)


def test_a_providers_file_beside_the_single_issuer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="PROVIDERS_FILE and SEALTRAIL_OIDC_ISSUER are both set"):
        Settings.load(
            {
                "SEALTRAIL_OIDC_PROVIDERS_FILE": str(tmp_path / "providers.toml"),
                "SEALTRAIL_OIDC_ISSUER": "https://idp.example.com",
                "SEALTRAIL_CONSOLE_LISTEN": "127.0.0.1:8080",
            }
        )


def test_an_erased_tenant_is_told_so_and_the_others_sign_in(
    browser: httpx.Client, console_server: ServerThread, sql: psycopg.Connection[Any]
) -> None:
    begun = to_callback(browser, tenant=INITECH)  # at the provider as the erasure comes
    erased(console_server, INITECH)
    for answer in (
        browser.get("/auth/login", params={"tenant": INITECH}),
        browser.get(begun),
    ):
        assert answer.status_code == 410, answer.text
        assert "This organisation&#x27;s audit log was erased" in answer.text
        assert "/auth/login" not in answer.text
    assert _tokens(sql, INITECH) == 0
    assert signed_in(browser, tenant=ACME)["tenant"] == ACME
    # A browser that last signed in to it is asked its organisation again.
    _remembering(browser, INITECH)
    asked = browser.get("/auth/login")
    assert asked.status_code == 200, asked.text
    assert '<form method="get" action="/auth/login">' in asked.text
    assert browser.cookies.get(ORGANISATION_COOKIE) is None


def test_a_remembered_organisation_erased_is_forgotten_though_its_provider_is_gone(
    migrated_database_url: str, acme_provider: OpenIdProvider, tmp_path: Path
) -> None:
    """The erasure is found before the provider is asked its discovery
    document: a decommissioned provider of an erased tenant answered each
    visit with a 502, the remembered organisation never forgotten."""
    gone_tenant = f"t-gone-{uuid.uuid4().hex[:8]}"
    gone = OpenIdProvider().__enter__()
    with console_signing_in_per_tenant(
        {ACME: acme_provider, gone_tenant: gone}, migrated_database_url, tmp_path
    ) as running:
        gone.__exit__(None, None, None)  # the erased organisation's provider, decommissioned
        erased(running, gone_tenant)
        console = f"http://127.0.0.1:{running.service.console_port}"
        with httpx.Client(base_url=console, follow_redirects=False, timeout=20) as browser:
            asked = browser.get("/auth/login", params={"tenant": gone_tenant})
            assert asked.status_code == 410, asked.text
            _remembering(browser, gone_tenant)
            forgotten = browser.get("/auth/login")
            assert forgotten.status_code == 200, forgotten.text
            assert '<form method="get" action="/auth/login">' in forgotten.text
            assert browser.cookies.get(ORGANISATION_COOKIE) is None


def test_a_tenant_of_the_file_unknown_or_erased_is_warned_of_at_start(
    console_server: ServerThread,
    migrated_database_url: str,
    acme_provider: OpenIdProvider,
    globex_provider: OpenIdProvider,
    initech_provider: OpenIdProvider,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A typo of a tenant's id, or an erased tenant, is said at start (the
    start goes on: a tenant may be made later), not first at a sign-in."""
    known, typo, gone = (f"t-{what}-{uuid.uuid4().hex[:8]}" for what in ("known", "typo", "gone"))
    console_server.token(known)
    erased(console_server, gone)
    with (
        caplog.at_level(logging.WARNING, logger="sealtrail_server"),
        console_signing_in_per_tenant(
            {known: acme_provider, typo: globex_provider, gone: initech_provider},
            migrated_database_url,
            tmp_path,
        ) as running,
    ):
        said = [r.getMessage() for r in logged(caplog, by="sealtrail_server", on=running)]
        assert running.service.console_port
    (of_typo,) = [line for line in said if typo in line]
    assert "no token and no event" in of_typo
    (of_gone,) = [line for line in said if gone in line]
    assert "was erased" in of_gone
    assert not [line for line in said if known in line]


def test_the_tenants_of_the_file_are_looked_up_at_start_in_one_statement(
    console_server: ServerThread, migrated_database_url: str
) -> None:
    """The start's look at the file's tenants (erased? no token and no
    event?) asked the database once a tenant, one after another: about a
    second of the start at the 1,000 tenants a file may name. One statement
    asks it of them all."""
    known, typo, gone = (f"t-{what}-{uuid.uuid4().hex[:8]}" for what in ("known", "typo", "gone"))
    console_server.token(known)
    erased(console_server, gone)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)

    async def scenario() -> dict[str, str]:
        url = service_login_url(migrated_database_url)
        db = await Database.open(url, min_size=1, max_size=2, tracer=tracer)
        try:
            with tracer.start_as_current_span("start"):
                return await tenants_not_found(db, [known, typo, gone])
        finally:
            await db.close()

    assert asyncio.run(scenario()) == {typo: "unused", gone: "erased"}
    provider.shutdown()
    texts = [
        str((span.attributes or {}).get("db.query.text")) for span in exporter.get_finished_spans()
    ]
    assert len([text for text in texts if "tenant_erasures" in text]) == 1


def test_tenants_of_one_issuer_read_its_discovery_document_and_keys_once(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """Each tenant's provider read and cached the issuer's discovery document
    and keys for itself: tenants of one issuer (its organisations' clients
    of one provider) read them once each, a thousand times for a thousand.
    Read once for the issuer; each tenant's sign-in still goes by its own
    client (its id at the authorization endpoint, its id_token's audience)."""
    north, south = (f"t-{what}-{uuid.uuid4().hex[:8]}" for what in ("north", "south"))
    clients = {north: CLIENT_ID, south: "sealtrail-console-south"}
    with OpenIdProvider() as shared:
        shared.client_ids.add(clients[south])
        with console_signing_in_per_tenant(
            {north: shared, south: shared}, migrated_database_url, tmp_path, client_ids=clients
        ) as running:
            console = f"http://127.0.0.1:{running.service.console_port}"
            with httpx.Client(base_url=console, follow_redirects=False, timeout=20) as browser:
                for tenant in (north, south):
                    login = browser.get("/auth/login", params={"tenant": tenant})
                    assert login.status_code == 302, login.text
                    asked = urllib.parse.parse_qs(
                        urllib.parse.urlsplit(login.headers["Location"]).query
                    )
                    assert asked["client_id"] == [clients[tenant]]
                minted = [signed_in(browser, tenant=tenant) for tenant in (north, south)]
    assert [token["tenant"] for token in minted] == [north, south]
    assert (shared.discovery_reads, shared.jwks_reads) == (1, 1)
