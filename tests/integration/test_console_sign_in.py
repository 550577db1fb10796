"""Signing in to the console through an OpenID provider (ADR 0140): a real
provider on 127.0.0.1 (tests/openid_provider.py) and the real console,
driven as a browser drives them (redirects followed by hand, the sign-in's
cookie kept). A sign-in mints a token of the role the person's groups map
to, which the API then takes; each id_token the console must not trust is
refused with its reason and mints nothing."""

from __future__ import annotations

import hashlib
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from sealtrail import AuditClient, InvalidArgumentError
from sealtrail_server.app import check_secret_files
from sealtrail_server.config import Settings
from tests.conftest import ServerThread, run_operator, token_id_of
from tests.openid_provider import (
    CLIENT_SECRET,
    Issue,
    OpenIdProvider,
    console_signing_in_through,
    events_of,
    free_port,
    reads_of,
    signed_in,
    to_callback,
)
from tests.private_files import write_private

TENANT = f"t-oidc-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        yield running


@pytest.fixture(scope="module")
def server_of_console(
    migrated_database_url: str, provider: OpenIdProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    with console_signing_in_through(
        provider, migrated_database_url, tmp_path_factory.mktemp("oidc"), tenant=TENANT
    ) as running:
        yield running


@pytest.fixture(scope="module")
def console(server_of_console: ServerThread) -> str:
    return f"http://127.0.0.1:{server_of_console.service.console_port}"


@pytest.fixture(scope="module")
def another_process(
    migrated_database_url: str,
    provider: OpenIdProvider,
    console: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The console of a second server process on the same database, behind
    the same callback URL (a load balancer's): its base URL."""
    with console_signing_in_through(
        provider,
        migrated_database_url,
        tmp_path_factory.mktemp("oidc-other"),
        tenant=TENANT,
        oidc_redirect_url=f"{console}/auth/callback",
    ) as running:
        yield f"http://127.0.0.1:{running.service.console_port}"


@pytest.fixture
def browser(console: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=console, follow_redirects=False, timeout=20) as client:
        yield client


@pytest.fixture(autouse=True)
def issue_as_usual(provider: OpenIdProvider) -> None:
    provider.issue = Issue()


def _tokens(sql: psycopg.Connection[Any]) -> int:
    row = sql.execute("SELECT count(*) FROM api_tokens WHERE tenant_id = %s", [TENANT]).fetchone()
    assert row is not None
    return int(row[0])


def test_a_sign_in_mints_a_token_of_the_role_its_groups_map_to(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    before = _tokens(sql)
    login = browser.get("/auth/login")
    asked = urllib.parse.parse_qs(urllib.parse.urlsplit(login.headers["Location"]).query)
    assert asked["code_challenge_method"] == ["S256"]
    # offline_access: the provider lists it, and sessions are rechecked by its refresh token.
    assert asked["scope"] == ["openid email profile offline_access"]
    assert {"state", "nonce", "code_challenge"} <= asked.keys()
    assert (
        "HttpOnly" in login.headers["Set-Cookie"] and "Path=/auth/" in login.headers["Set-Cookie"]
    )

    minted = signed_in(browser)
    assert minted["role"] == "reader"
    assert minted["name"] == "alice@example.com (console)"
    assert _tokens(sql) == before + 1
    token = minted["token"]
    checked = browser.get("/api/signin", headers={"Authorization": f"Bearer {token}"})
    assert checked.json() == {"ok": True, "role": "reader"}

    (created,) = [
        event
        for event in events_of(browser, token, "api_token.created")
        if event["resource"]["id"] == minted["token_id"]
    ]
    assert created["actor"]["type"] == "ACTOR_TYPE_USER"
    assert created["actor"]["id"] == "alice@example.com"
    assert created["details"]["sign_in"] == {
        "issuer": provider.issuer,
        "subject": "00u1alice",
        "groups": ["audit-readers"],
    }
    assert created["details"]["role"] == "reader"


def test_the_one_time_code_hands_the_token_over_once(browser: httpx.Client) -> None:
    back = browser.get(to_callback(browser))
    code = back.headers["Location"].removeprefix("/#signin=")
    assert browser.post("/auth/exchange", json={"code": code}).status_code == 200
    again = browser.post("/auth/exchange", json={"code": code})
    assert again.status_code == 400
    assert "used already" in again.json()["error"]


@pytest.mark.parametrize(
    ("groups", "role"),
    [
        (["audit-admins", "audit-readers"], "admin"),
        (["security"], "exporter"),
        (["audit-readers", "security"], "exporter"),
    ],
)
def test_the_highest_role_of_the_groups_is_minted(
    browser: httpx.Client, provider: OpenIdProvider, groups: list[str], role: str
) -> None:
    provider.issue = Issue(groups=groups)
    token = signed_in(browser)["token"]
    checked = browser.get("/api/signin", headers={"Authorization": f"Bearer {token}"})
    assert checked.json() == {"ok": True, "role": role}


def test_an_unverified_email_names_the_subject_at_the_issuer(
    browser: httpx.Client, provider: OpenIdProvider
) -> None:
    provider.issue = Issue(email="ceo@example.com", email_verified=False)
    assert signed_in(browser)["name"] == f"00u1alice@{provider.issuer} (console)"


@pytest.mark.parametrize("alg", ["ES256", "Ed25519", "EdDSA"])
def test_ec_and_edwards_signatures_are_taken(
    browser: httpx.Client, provider: OpenIdProvider, alg: str
) -> None:
    """An Ed25519 key signs under either name: `Ed25519`, fully specified
    (RFC 9864), or `EdDSA`, the polymorphic name it deprecates, which
    providers still sign with (joserfc names its keys `Ed25519`)."""
    provider.issue = Issue(alg=alg)
    assert signed_in(browser)["role"] == "reader"


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_an_edwards_signature_claiming_another_algorithm_is_refused(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any], alg: str
) -> None:
    """Signed by the published Ed25519 key, under its id, its header naming
    an algorithm that key is not for: refused as a signature that does not
    verify, nothing minted."""
    provider.issue = Issue(alg=alg, edwards=True)
    answer = _refused(browser, sql, to_callback(browser))
    assert answer.status_code == 401
    assert "signature does not verify" in answer.text


def _refused(browser: httpx.Client, sql: psycopg.Connection[Any], callback: str) -> httpx.Response:
    before = _tokens(sql)
    answer = browser.get(callback)
    assert answer.headers["Content-Type"].startswith("text/html")
    assert _tokens(sql) == before, "a refused sign-in minted a token"
    return answer


@pytest.mark.parametrize(
    ("issue", "status", "said"),
    [
        (Issue(claims={"nonce": "another sign-in's"}), 401, "its nonce differs"),
        (Issue(claims={"aud": "another-client"}), 401, "is for another client"),
        (Issue(claims={"iss": "https://idp.example.net"}), 401, "from another issuer"),
        (
            Issue(claims={"exp": int(time.time()) - 600, "iat": int(time.time()) - 900}),
            401,
            "has expired",
        ),
        (
            Issue(alg="none"),
            401,
            "signed with &#x27;none&#x27;, not one of RS256, ES256, EdDSA, Ed25519",
        ),
        (Issue(alg="HS256"), 401, "signed with &#x27;HS256&#x27;"),
        (Issue(claims={"sub": None}), 401, "lacks a claim"),
        (Issue(email="admin\u202e@example.com"), 401, "control or hidden characters"),
        (Issue(email="a" * 240 + "@example.com"), 401, "more than 246 characters"),
    ],
    ids=[
        *("nonce", "audience", "issuer", "expired", "alg-none", "alg-hs256", "no-subject"),
        *("hidden-character", "long-name"),
    ],
)
def test_an_id_token_not_to_trust_is_refused(
    browser: httpx.Client,
    provider: OpenIdProvider,
    sql: psycopg.Connection[Any],
    issue: Issue,
    status: int,
    said: str,
) -> None:
    provider.issue = issue
    answer = _refused(browser, sql, to_callback(browser))
    assert answer.status_code == status
    assert said in answer.text


def test_a_forged_signature_is_refused(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    """Signed by another key under a published key's id."""
    provider.issue = Issue(forged=True)
    answer = _refused(browser, sql, to_callback(browser))
    assert answer.status_code == 401
    assert "signature does not verify" in answer.text


def test_an_unknown_key_is_looked_up_again_then_refused(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    signed_in(browser)  # the keys are read and cached
    reads = provider.jwks_reads
    provider.issue = Issue(kid=provider.unpublished.kid)
    answer = _refused(browser, sql, to_callback(browser))
    assert answer.status_code == 401
    assert "a key the identity provider does not publish" in answer.text
    assert provider.jwks_reads == reads + 1, "the keys were not read again for an unknown kid"


def test_a_wrong_state_is_refused(browser: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    callback = to_callback(browser)
    parts = urllib.parse.urlsplit(callback)
    query = dict(urllib.parse.parse_qsl(parts.query), state="forged-state")
    answer = _refused(browser, sql, parts._replace(query=urllib.parse.urlencode(query)).geturl())
    assert answer.status_code == 400
    assert "its state does not match" in answer.text
    # ... and a state is good once: the right one, used now, is refused next time.
    assert browser.get(callback).status_code == 303
    assert _refused(browser, sql, callback).status_code == 400


@pytest.mark.parametrize("order", ["first-first", "last-first"])
def test_two_sign_ins_begun_at_once_in_one_browser_both_end(
    browser: httpx.Client, order: str
) -> None:
    """Two tabs of one browser signing in to one organisation at once: the
    second's cookie keeps the first's binding beside its own, so each
    callback ends its sign-in, whichever comes back first."""
    callbacks = [to_callback(browser), to_callback(browser)]
    if order == "last-first":
        callbacks.reverse()
    for callback in callbacks:
        back = browser.get(callback)
        assert back.status_code == 303, back.text
        code = back.headers["Location"].removeprefix("/#signin=")
        assert browser.post("/auth/exchange", json={"code": code}).status_code == 200
    assert f"sealtrail_signin.{TENANT}" not in browser.cookies  # none left under way


def test_a_sign_in_five_others_began_after_in_one_browser_is_refused_saying_so(
    browser: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    """The cookie keeps the four latest sign-ins under way to its tenant (its
    size bounded): the oldest of five is refused, saying why; the rest end."""
    callbacks = [to_callback(browser) for _ in range(5)]
    assert len(browser.cookies[f"sealtrail_signin.{TENANT}"]) < 200
    answer = _refused(browser, sql, callbacks[0])
    assert answer.status_code == 400
    assert "more sign-ins to this organisation began since" in answer.text
    assert '<a href="/auth/login">' in answer.text  # and it may begin again
    for callback in callbacks[1:]:
        assert browser.get(callback).status_code == 303


def test_a_sign_in_ended_in_another_browser_is_refused(
    browser: httpx.Client, console: str, sql: psycopg.Connection[Any]
) -> None:
    callback = to_callback(browser)
    with httpx.Client(base_url=console, follow_redirects=False, timeout=20) as other:
        answer = _refused(other, sql, callback)
    assert answer.status_code == 400
    assert "begun in another browser" in answer.text


def test_a_person_in_no_admitted_group_is_refused_and_recorded(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    provider.issue = Issue(email="mallory@example.com", groups=["sales"])
    answer = _refused(browser, sql, to_callback(browser))
    assert answer.status_code == 403
    assert "You signed in as mallory@example.com, who is in none of the groups" in answer.text
    provider.issue = Issue()
    token = signed_in(browser)["token"]
    denied = [
        event
        for event in events_of(browser, token, "audit_log.access_denied")
        if event["actor"]["id"] == "mallory@example.com"
    ]
    assert denied, "the refusal was not recorded"
    assert denied[0]["outcome"] == "OUTCOME_DENIED"
    assert denied[0]["details"]["reason"] == "no_group"
    assert denied[0]["details"]["groups"] == ["sales"]


def test_signing_out_revokes_the_minted_token(
    browser: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    minted = signed_in(browser)
    auth = {"Authorization": f"Bearer {minted['token']}"}
    assert browser.post("/auth/signout", headers=auth).json() == {"ok": True}
    assert browser.get("/api/signin", headers=auth).status_code == 401
    row = sql.execute(
        "SELECT revoked_at IS NOT NULL FROM api_tokens WHERE token_id = %s",
        [minted["token_id"]],
    ).fetchone()
    assert row == (True,)
    # Again: nothing left to revoke, and no error.
    assert browser.post("/auth/signout", headers=auth).json() == {"ok": True}
    reader = signed_in(browser)["token"]
    (revoked,) = [
        event
        for event in events_of(browser, reader, "api_token.revoked")
        if event["resource"]["id"] == minted["token_id"]
    ]
    assert revoked["actor"]["id"] == "alice@example.com"


def test_signing_out_leaves_a_pasted_token_alone(
    browser: httpx.Client, server_of_console: ServerThread
) -> None:
    pasted = server_of_console.token(TENANT, "reader")
    answer = browser.post("/auth/signout", headers={"Authorization": f"Bearer {pasted}"})
    assert answer.status_code == 400
    assert "only a token a sign-in" in answer.json()["error"]


def test_the_page_learns_it_may_sign_in_through_the_provider(
    browser: httpx.Client, console_server: ServerThread
) -> None:
    """GET /auth/config, asked before any sign-in: the provider's name for
    the button ("" where unset), or null on a console without one."""
    assert browser.get("/auth/config").json() == {"identity_provider": {"name": ""}}
    port = console_server.service.console_port
    without = httpx.get(f"http://127.0.0.1:{port}/auth/config", timeout=20)
    assert without.status_code == 200
    assert without.json() == {"identity_provider": None}


def test_a_refusal_page_leads_back_to_the_consoles_sign_in(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    provider.issue = Issue(groups=["sales"])
    answer = _refused(browser, sql, to_callback(browser))
    assert '<a href="/" id="back-to-sign-in">Back to the console\'s sign-in</a>' in answer.text
    assert '<a href="/auth/login">' in answer.text


def test_a_half_set_sign_in_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="set SEALTRAIL_OIDC_CLIENT_ID too"):
        Settings.load({"SEALTRAIL_OIDC_ISSUER": "https://idp.example.com"})
    env = {
        "SEALTRAIL_OIDC_ISSUER": "http://idp.example.com",
        "SEALTRAIL_OIDC_CLIENT_ID": "c",
        "SEALTRAIL_OIDC_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
        "SEALTRAIL_OIDC_REDIRECT_URL": "https://audit.example.com/auth/callback",
        "SEALTRAIL_OIDC_TENANT": "acme",
        "SEALTRAIL_OIDC_READER_GROUPS": "g",
        "SEALTRAIL_CONSOLE_LISTEN": "127.0.0.1:8080",
    }
    with pytest.raises(SystemExit, match="SEALTRAIL_OIDC_ISSUER must be an https:// URL"):
        Settings.load(env)
    with pytest.raises(SystemExit, match="list the groups admitted"):
        Settings.load(
            {
                **env,
                "SEALTRAIL_OIDC_ISSUER": "https://idp.example.com",
                "SEALTRAIL_OIDC_READER_GROUPS": "",
            }
        )
    assert Settings.load({**env, "SEALTRAIL_OIDC_ISSUER": "https://idp.example.com"}).oidc_tenant
    with pytest.raises(SystemExit, match="SEALTRAIL_OIDC_PROVIDER_NAME must be at most 60"):
        Settings.load(
            {
                **env,
                "SEALTRAIL_OIDC_ISSUER": "https://idp.example.com",
                "SEALTRAIL_OIDC_PROVIDER_NAME": "Okta\u202e",
            }
        )


def test_an_https_redirect_url_in_capitals_still_makes_the_sign_in_cookie_secure(
    migrated_database_url: str, provider: OpenIdProvider, tmp_path: Path
) -> None:
    """A scheme is read in any case (`HTTPS://`, which the start's check
    takes): the sign-in's cookie is Secure all the same, sent over https alone."""
    port = free_port()
    with console_signing_in_through(
        provider,
        migrated_database_url,
        tmp_path,
        tenant=TENANT,
        console_listen=f"127.0.0.1:{port}",
        oidc_redirect_url=f"HTTPS://127.0.0.1:{port}/auth/callback",
    ) as running:
        console = f"http://127.0.0.1:{running.service.console_port}"
        login = httpx.get(f"{console}/auth/login", follow_redirects=False, timeout=20)
    assert login.status_code == 302, login.text
    set_cookie = login.headers["Set-Cookie"]
    assert set_cookie.startswith(f"sealtrail_signin.{TENANT}=")
    assert "secure" in {part.strip().lower() for part in set_cookie.split(";")}


def test_a_client_secret_others_may_read_is_refused_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    secret = write_private(tmp_path / "client-secret", CLIENT_SECRET, mode=0o644)
    settings = Settings(data_dir=data_dir, oidc_client_secret_file=secret)
    with pytest.raises(SystemExit, match="SEALTRAIL_OIDC_CLIENT_SECRET_FILE"):
        check_secret_files(settings)
    secret.chmod(0o600)
    check_secret_files(settings)


def test_a_signed_in_search_and_its_counts_are_one_record(browser: httpx.Client) -> None:
    """A token a sign-in minted searches as a pasted one does (ADR 0137,
    helper-449): a first page announcing its counts, by changed field and
    route, then the counts naming its view, are one record of that token."""
    minted = signed_in(browser)
    bearer = {"Authorization": f"Bearer {minted['token']}"}
    search = {"changed_fields": "rate_limit", "http_routes": "/v1/plans/{id}"}
    announced = [{"group_by": "day"}, {"group_by": "credential", "limit": "10"}]
    page = browser.get(
        "/api/events",
        params=[*search.items(), *(("count", urllib.parse.urlencode(c)) for c in announced)],
        headers=bearer,
    )
    assert page.status_code == 200, page.text
    view = page.json()["view"]
    for count in announced:
        counted = browser.get(
            "/api/counts", params={**search, **count, "view": view}, headers=bearer
        )
        assert counted.status_code == 200, counted.text
    mine = [
        event
        for event in events_of(browser, minted["token"], "audit_log.queried")
        if event["actor"]["id"] == minted["token_id"]
    ]
    # The read of them just made sees the log before its own record.
    [searched] = mine
    assert searched["details"]["filter"] == {
        "changedFields": ["rate_limit"],
        "httpRoutes": ["/v1/plans/{id}"],
    }
    assert searched["details"]["counts"] == [
        {"group_by": "day", "limit": 1000},
        {"group_by": "credential", "limit": 10},
    ]


def test_a_signed_in_persons_reads_say_on_whose_behalf(
    browser: httpx.Client,
    provider: OpenIdProvider,
    server_of_console: ServerThread,
    sql: psycopg.Connection[Any],
) -> None:
    """Each call the console makes for a session a sign-in began says the
    person it is made for (ADR 0146, addendum 2026-12-07): the name the
    sign-in's own records give them (a verified email, else sub@issuer),
    percent-encoded where it is not ASCII; the token stays the actor. A
    pasted token's calls say no one."""
    provider.issue = Issue(email="jos\u00e9@example.com", groups=["audit-exporters"])
    minted = signed_in(browser)
    bearer = {"Authorization": f"Bearer {minted['token']}"}
    assert browser.get("/api/events", params={"actions": "x.*"}, headers=bearer).status_code == 200
    counted = browser.get("/api/counts", params={"group_by": "action"}, headers=bearer)
    assert counted.status_code == 200, counted.text
    exported = browser.get("/api/export", params={"format": "ndjson"}, headers=bearer)
    assert exported.status_code == 200 and '"manifest"' in exported.text, exported.text
    reads = reads_of(sql, TENANT, minted["token_id"])
    assert set(reads) == {"audit_log.queried", "audit_log.exported"}  # a count is a query
    for record in reads.values():
        assert record["details"]["on_behalf_of"] == "jos\u00e9@example.com"
        assert record["actor"]["type"] == "api_key"

    pasted = server_of_console.token(TENANT, "reader")
    searched = browser.get(
        "/api/events", params={"actions": "x.*"}, headers={"Authorization": f"Bearer {pasted}"}
    )
    assert searched.status_code == 200
    [queried] = reads_of(sql, TENANT, token_id_of(sql, pasted)).values()
    assert "on_behalf_of" not in queried["details"]


def test_a_token_named_as_a_sign_in_names_its_tokens_is_refused(
    server_of_console: ServerThread, migrated_database_url: str
) -> None:
    """The console tells a sign-in's token by its name (` (console)`, ADR
    0146): the suffix is reserved, so that no token a caller names (an
    admin's CreateToken, the operator's `token create`) can say on whose
    behalf its calls are made. Refused naming `name`; the sign-in's own
    tokens still take it (test_a_person_signs_in_and_the_console_holds_a_token_for_them)."""
    admin = AuditClient(server_of_console.target, token=server_of_console.token(TENANT))
    with admin, pytest.raises(InvalidArgumentError) as refused:
        admin.create_token("reader", name="bob@example.com (console)")
    [(field, said)] = refused.value.field_violations
    assert field == "name" and "(console)" in said, said
    operator = run_operator(
        migrated_database_url,
        *["token", "create", "--role", "reader", "--tenant", TENANT],
        *["--name", "bob@example.com (console)"],
    )
    assert operator.exit_code != 0
    assert "--name" in operator.output and "(console)" in operator.output, operator.output


# Signing in behind several server processes (ADR 0140, 2026-12-07): what a
# sign-in keeps between its requests is in the database, so any process may
# take each of them, once.


def _to(url: str, console: str) -> str:
    """`url` (a path, or the callback URL naming the first console) sent to `console`."""
    target = urllib.parse.urlsplit(console)
    return urllib.parse.urlsplit(url)._replace(scheme=target.scheme, netloc=target.netloc).geturl()


def _digest_of(query_value: str, url: str) -> bytes:
    """The SHA-256 of the value `query_value` of `url`'s query."""
    [value] = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)[query_value]
    return hashlib.sha256(value.encode()).digest()


def _code_of(back: httpx.Response) -> str:
    assert back.status_code == 303, back.text
    return back.headers["Location"].removeprefix("/#signin=")


def _kept(sql: psycopg.Connection[Any], digest: bytes) -> int:
    row = sql.execute(
        "SELECT count(*) FROM console_sign_ins WHERE tenant_id = %s AND digest = %s",
        [TENANT, digest],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_sign_in_begun_at_one_process_ends_at_another(
    browser: httpx.Client, console: str, another_process: str
) -> None:
    callback = to_callback(browser)  # begun at the first process
    code = _code_of(browser.get(_to(callback, another_process)))
    answer = browser.post(_to("/auth/exchange", console), json={"code": code})
    assert answer.status_code == 200, answer.text
    token = answer.json()["token"]
    checked = browser.get("/api/signin", headers={"Authorization": f"Bearer {token}"})
    assert checked.json() == {"ok": True, "role": "reader"}

    # And the other way round, the code exchanged where the sign-in began.
    login = browser.get(_to("/auth/login", another_process))
    at_provider = httpx.get(login.headers["Location"], follow_redirects=False, timeout=20)
    code = _code_of(browser.get(at_provider.headers["Location"]))
    answer = browser.post(_to("/auth/exchange", another_process), json={"code": code})
    assert answer.status_code == 200, answer.text


def test_a_state_and_a_code_are_taken_once_by_two_processes_racing(
    browser: httpx.Client, console: str, another_process: str, sql: psycopg.Connection[Any]
) -> None:
    before = _tokens(sql)
    callback = to_callback(browser)
    with ThreadPoolExecutor(2) as pool:
        backs = list(pool.map(browser.get, [callback, _to(callback, another_process)]))
    assert sorted(back.status_code for back in backs) == [303, 400], [b.text for b in backs]
    assert _tokens(sql) == before + 1
    [refused] = [back for back in backs if back.status_code == 400]
    assert "was used already" in refused.text
    assert _kept(sql, _digest_of("state", callback)) == 0

    [code] = [_code_of(back) for back in backs if back.status_code == 303]
    exchanges = [_to("/auth/exchange", console), _to("/auth/exchange", another_process)]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda url: browser.post(url, json={"code": code}), exchanges))
    assert sorted(answer.status_code for answer in answers) == [200, 400]
    [second] = [answer for answer in answers if answer.status_code == 400]
    assert second.json()["fields"] == [{"field": "code", "description": "unknown, used or expired"}]
    # Used once, at either: refused at both after.
    for url in exchanges:
        assert browser.post(url, json={"code": code}).status_code == 400


def test_an_expired_state_or_code_is_refused_and_removed(
    browser: httpx.Client, another_process: str, sql: psycopg.Connection[Any]
) -> None:
    def expire(digest: bytes) -> None:
        assert _kept(sql, digest) == 1
        sql.execute(
            "UPDATE console_sign_ins SET expires_at = now() - interval '1 second'"
            " WHERE tenant_id = %s AND digest = %s",
            [TENANT, digest],
        )

    before = _tokens(sql)
    callback = to_callback(browser)
    expire(_digest_of("state", callback))
    answer = _refused(browser, sql, _to(callback, another_process))
    assert answer.status_code == 400
    assert "began more than 10 minutes ago" in answer.text
    assert _kept(sql, _digest_of("state", callback)) == 0  # removed on use
    assert _tokens(sql) == before

    code = _code_of(browser.get(to_callback(browser)))
    digest = hashlib.sha256(code.encode()).digest()
    expire(digest)
    answer = browser.post(_to("/auth/exchange", another_process), json={"code": code})
    assert answer.status_code == 400
    assert "older than a minute" in answer.json()["error"]
    assert _kept(sql, digest) == 0


def test_what_a_sign_in_keeps_holds_no_secret_of_it(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    """A reader of the database learns no state, nonce, PKCE verifier, cookie,
    one-time code or token from the table (ADR 0140, 2026-12-07)."""

    def row_of(digest: bytes) -> str:
        row = sql.execute(
            "SELECT c::text FROM console_sign_ins AS c WHERE tenant_id = %s AND digest = %s",
            [TENANT, digest],
        ).fetchone()
        assert row is not None
        return str(row[0])

    login = browser.get("/auth/login")
    asked = urllib.parse.parse_qs(urllib.parse.urlsplit(login.headers["Location"]).query)
    [state], [nonce] = asked["state"], asked["nonce"]
    begun = row_of(hashlib.sha256(state.encode()).digest())
    cookie = browser.cookies[f"sealtrail_signin.{TENANT}"]  # named after its tenant
    for secret in (state, nonce, cookie):
        assert secret not in begun and secret.encode().hex() not in begun

    at_provider = httpx.get(login.headers["Location"], follow_redirects=False, timeout=20)
    code = _code_of(browser.get(at_provider.headers["Location"]))
    handed = row_of(hashlib.sha256(code.encode()).digest())
    token = browser.post("/auth/exchange", json={"code": code}).json()["token"]
    for secret in (code, token):
        assert secret not in handed and secret.encode().hex() not in handed


def test_a_new_sign_in_removes_expired_ones(
    browser: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    """Sign-ins abandoned at the provider do not stay: the next one sweeps them."""
    stale = [hashlib.sha256(uuid.uuid4().bytes).digest() for _ in range(3)]
    for digest in stale:
        sql.execute(
            "INSERT INTO console_sign_ins (tenant_id, digest, stage, expires_at, binding)"
            " VALUES (%s, %s, 'begun', now() - interval '1 minute', %s)",
            [TENANT, digest, digest],
        )
    assert browser.get("/auth/login").status_code == 302
    assert [_kept(sql, digest) for digest in stale] == [0, 0, 0]


def test_a_console_of_one_provider_takes_an_empty_tenant_or_its_own(
    browser: httpx.Client, provider: OpenIdProvider
) -> None:
    """As before providers per tenant: `?tenant=` (an empty form field) is no
    tenant asked; its own tenant goes there too; another tenant is 404."""
    for asked in ({"tenant": ""}, {"tenant": TENANT}, {"tenant": f" {TENANT.upper()} "}):
        login = browser.get("/auth/login", params=asked)
        assert login.status_code == 302, (asked, login.text)
        assert login.headers["Location"].startswith(f"{provider.issuer}/authorize?")
    assert browser.get("/auth/login", params={"tenant": "t-other"}).status_code == 404
