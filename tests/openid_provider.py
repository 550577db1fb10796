"""A real OpenID provider on 127.0.0.1, for the console's sign-in tests: an
aiohttp app in a thread of its own serving discovery, its JWKS, an authorize
endpoint that signs the person in at once (redirecting back with a code),
and a token endpoint that checks the client's secret, the code and its PKCE
verifier, then issues an id_token signed with keys made by `cryptography`,
with a refresh token when `offline_access` was asked for; a refresh token is
taken once (rotated: each refresh gives a new one). What the next id_token
looks like, and how a refresh is answered, is the test's to change (`Issue`).
(`response_iss` names an issuer in its authorization responses, RFC 9207.)
`console_signing_in_through` starts a server whose console signs in through
it; `to_callback` walks a sign-in to the provider and back, as a browser would,
`signed_in` the whole of it, to the token the page is handed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from sealtrail_server.console.recheck import DUE_TIMES
from sealtrail_server.store.console_sign_ins import digest
from tests.conftest import ServerThread
from tests.private_files import write_private

CLIENT_ID = "sealtrail-console"
CLIENT_SECRET = "s3cret-of-the-console"


def _pem(private: Any) -> bytes:
    return bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issue:
    """How the provider's next id_tokens are made: claims set or replaced
    (None removes one), the algorithm, and the key id named (a published
    one's by default)."""

    email: str = "alice@example.com"
    email_verified: bool = True
    groups: list[str] = field(default_factory=lambda: ["audit-readers"])
    claims: dict[str, Any] = field(default_factory=dict)
    alg: str = "RS256"
    kid: str | None = None
    # Signed with an unpublished key under the published RSA key's id.
    forged: bool = False
    # Signed by the published Ed25519 key whatever `alg` names (an Ed25519
    # signature claiming another algorithm), under that key's id.
    edwards: bool = False
    # Whether a sign-in that asked for `offline_access` gets a refresh token.
    refresh_tokens: bool = True
    # How a refresh is answered: "grant" (a new id_token and refresh token),
    # "invalid_grant" (the person removed or disabled, the session revoked),
    # "unavailable" (a 503: the provider down), "no_id_token".
    refresh: str = "grant"
    # The nonce a refreshed id_token carries (None: none, as OpenID Connect
    # Core 12.2 advises).
    refresh_nonce: str | None = None


class OpenIdProvider:
    def __init__(self) -> None:
        self.rsa = RSAKey.import_key(_pem(rsa.generate_private_key(65537, 2048)))
        self.rsa.ensure_kid()
        self.ec = ECKey.import_key(_pem(ec.generate_private_key(ec.SECP256R1())))
        self.ec.ensure_kid()
        self.ed25519 = ed25519.Ed25519PrivateKey.generate()
        self.okp = OKPKey.import_key(_pem(self.ed25519))
        self.okp.ensure_kid()
        # Signs but is not published until `publish_unpublished` (a rotation).
        self.unpublished = RSAKey.import_key(_pem(rsa.generate_private_key(65537, 2048)))
        self.unpublished.ensure_kid()
        self.published = [self.rsa, self.ec, self.okp]
        self.issue = Issue()
        self.jwks_reads = 0
        self.discovery_reads = 0
        # The clients registered here (each with CLIENT_SECRET): another
        # tenant's console client of this issuer is added to them.
        self.client_ids = {CLIENT_ID}
        self.codes: dict[str, dict[str, str]] = {}
        # Refresh tokens not yet used, each to the sign-in it continues.
        self.refresh_tokens: dict[str, dict[str, str]] = {}
        self.refreshes = 0
        # Codes the token endpoint was asked to redeem (whether it did or not).
        self.redeem_requests = 0
        # The issuer named in each authorization response's `iss` (RFC 9207):
        # None names none, as a provider not supporting it does.
        self.response_iss: str | None = None
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OpenIdProvider:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/.well-known/openid-configuration", self._discovery),
                web.get("/jwks", self._jwks),
                web.get("/authorize", self._authorize),
                web.post("/token", self._token),
            ]
        )
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _discovery(self, request: web.Request) -> web.Response:
        self.discovery_reads += 1
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "email", "profile", "offline_access"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_reads += 1
        keys = [key.as_dict(private=False) for key in self.published]
        return web.json_response({"keys": keys})

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        """Signs the person in at once: back to `redirect_uri` with a code."""
        query = request.query
        assert query["response_type"] == "code" and query["client_id"] in self.client_ids
        assert query["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = dict(query)
        back = {"code": code, "state": query["state"]}
        if self.response_iss is not None:
            back["iss"] = self.response_iss
        raise web.HTTPFound(f"{query['redirect_uri']}?{urllib.parse.urlencode(back)}")

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        sent = request.headers.get("Authorization", "").removeprefix("Basic ")
        if form.get("grant_type") == "refresh_token":
            token = str(form.get("refresh_token", ""))
            held = self.refresh_tokens.get(token)
            return self._refreshed(token, sent == _basic(held))
        self.redeem_requests += 1
        asked = self.codes.pop(str(form.get("code", "")), None)
        if sent != _basic(asked):
            return web.json_response({"error": "invalid_client"}, status=401)
        verifier = str(form.get("code_verifier", ""))
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        if (
            asked is None
            or challenge != asked["code_challenge"]
            or form.get("redirect_uri") != asked["redirect_uri"]
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        answer = {"id_token": self.id_token(nonce=asked["nonce"], audience=asked["client_id"])}
        if self.issue.refresh_tokens and "offline_access" in asked["scope"].split():
            answer["refresh_token"] = self._refresh_token(asked)
        return web.json_response(answer)

    def _refresh_token(self, asked: dict[str, str]) -> str:
        token = secrets.token_urlsafe(24)
        self.refresh_tokens[token] = asked
        return token

    def _refreshed(self, token: str, client_authenticated: bool) -> web.Response:
        """A refresh (RFC 6749, 6): the token taken once, a new one given."""
        self.refreshes += 1
        if not client_authenticated:
            return web.json_response({"error": "invalid_client"}, status=401)
        how = self.issue.refresh
        if how == "unavailable":
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        asked = self.refresh_tokens.pop(token, None)
        if asked is None or how == "invalid_grant":
            return web.json_response(
                {"error": "invalid_grant", "error_description": "Session not active"}, status=400
            )
        answer = {"refresh_token": self._refresh_token(asked), "token_type": "Bearer"}
        if how != "no_id_token":
            nonce, audience = self.issue.refresh_nonce, asked["client_id"]
            answer["id_token"] = self.id_token(nonce=nonce, audience=audience)
        return web.json_response(answer)

    def id_token(self, *, nonce: str | None, audience: str = CLIENT_ID) -> str:
        issue = self.issue
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "sub": "00u1alice",
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "email": issue.email,
            "email_verified": issue.email_verified,
            "groups": issue.groups,
        }
        claims.update(issue.claims)
        claims = {name: value for name, value in claims.items() if value is not None}
        if issue.alg == "none":
            header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            return f"{header}.{_b64(json.dumps(claims).encode())}."
        if issue.edwards or issue.alg == "EdDSA":
            return self._signed_by_ed25519(issue, claims)
        if issue.alg == "HS256":  # keyed with the client secret, which the console holds
            key: Any = OctKey.import_key(CLIENT_SECRET.encode())
        else:
            key = {"RS256": self.rsa, "ES256": self.ec, "Ed25519": self.okp}[issue.alg]
        kid = issue.kid or key.kid or "client-secret"
        if issue.forged or issue.kid == self.unpublished.kid:
            key = self.unpublished
        header = {"alg": issue.alg, "typ": "JWT", "kid": kid}
        return jwt.encode(header, claims, key, algorithms=[issue.alg])

    def _signed_by_ed25519(self, issue: Issue, claims: dict[str, Any]) -> str:
        """A compact JWS (RFC 7515) signed by the published Ed25519 key under
        `issue.alg`, whatever it names: by hand, since joserfc warns of
        `EdDSA` (RFC 9864 deprecates the name) and signs no other
        algorithm's name with an Edwards key."""
        header = {"alg": issue.alg, "typ": "JWT", "kid": issue.kid or self.okp.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        return f"{signing_input}.{_b64(self.ed25519.sign(signing_input.encode()))}"


def _basic(asked: dict[str, str] | None) -> str:
    """The client_secret_basic credentials of the client that asked (the
    console's usual client where nothing asked: a code or refresh token
    unknown here)."""
    client = CLIENT_ID if asked is None else asked["client_id"]
    return base64.b64encode(f"{client}:{CLIENT_SECRET}".encode()).decode()


def free_port() -> int:
    """A port nothing listens on now: the console's, which its callback URL
    (registered with the provider) must name before it starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def console_signing_in_through(
    provider: OpenIdProvider, database_url: str, folder: Path, *, tenant: str, **settings: Any
) -> Iterator[ServerThread]:
    """A server whose console signs people in through `provider` into
    `tenant`: audit-admins are admins, audit-exporters and security
    exporters, audit-readers readers (`settings` adds or replaces settings)."""
    secret = write_private(folder / "client-secret", CLIENT_SECRET + "\n")
    port = free_port()
    defaults: dict[str, Any] = {
        "console_listen": f"127.0.0.1:{port}",
        "oidc_issuer": provider.issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret_file": secret,
        "oidc_redirect_url": f"http://127.0.0.1:{port}/auth/callback",
        "oidc_tenant": tenant,
        "oidc_admin_groups": "audit-admins",
        "oidc_exporter_groups": "audit-exporters, security",
        "oidc_reader_groups": "audit-readers",
        "oidc_session_seconds": 3600,
    }
    with ServerThread(database_url, **{**defaults, **settings}) as running:
        yield running


@contextmanager
def console_signing_in_per_tenant(
    providers: dict[str, OpenIdProvider],
    database_url: str,
    folder: Path,
    *,
    client_ids: dict[str, str] | None = None,
    **settings: Any,
) -> Iterator[ServerThread]:
    """A server whose console signs each tenant's people in through its own
    provider (`providers`, by tenant), listed in a providers file (ADR 0151)
    with the groups `console_signing_in_through` maps, each tenant's client
    its `client_ids` entry (CLIENT_ID by default); `settings` adds or
    replaces settings."""
    port = free_port()
    lines = []
    for tenant, provider in providers.items():
        secret = write_private(folder / f"{tenant}-client-secret", CLIENT_SECRET + "\n")
        lines += [
            f'[tenants."{tenant}"]',
            f'issuer = "{provider.issuer}"',
            f'client_id = "{(client_ids or {}).get(tenant, CLIENT_ID)}"',
            f'client_secret_file = "{secret.name}"',  # beside the file
            'admin_groups = ["audit-admins"]',
            'exporter_groups = "audit-exporters, security"',
            'reader_groups = ["audit-readers"]',
            "session_seconds = 3600",
            "",
        ]
    file = write_private(folder / "providers.toml", "\n".join(lines))
    defaults: dict[str, Any] = {
        "console_listen": f"127.0.0.1:{port}",
        "oidc_providers_file": file,
        "oidc_redirect_url": f"http://127.0.0.1:{port}/auth/callback",
    }
    with ServerThread(database_url, **{**defaults, **settings}) as running:
        yield running


def to_callback(browser: httpx.Client, *, tenant: str | None = None) -> str:
    """The URL the provider sends the browser back to, once signed in there
    (`browser` is the console's client, its base URL the console's; `tenant`:
    the organisation the sign-in begins for, where each has its provider)."""
    login = browser.get("/auth/login", params={} if tenant is None else {"tenant": tenant})
    assert login.status_code == 302, login.text
    at_provider = httpx.get(login.headers["Location"], follow_redirects=False, timeout=20)
    assert at_provider.status_code == 302
    return at_provider.headers["Location"]


def signed_in(browser: httpx.Client, *, tenant: str | None = None) -> dict[str, Any]:
    """The token a whole sign-in (to `tenant`'s provider) hands the page."""
    back = browser.get(to_callback(browser, tenant=tenant))
    assert back.status_code == 303, back.text
    location = back.headers["Location"]
    assert location.startswith("/#signin=")
    answer = browser.post("/auth/exchange", json={"code": location.removeprefix("/#signin=")})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    return dict(answer.json())


def events_of(browser: httpx.Client, token: str, action: str) -> list[dict[str, Any]]:
    """The events of `action` the console's search finds (read with `token`)."""
    answer = browser.get(
        "/api/events", params={"actions": action}, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    return [event for event in answer.json()["events"] if event["action"] == action]


def reads_of(sql: psycopg.Connection[Any], tenant: str, token_id: str) -> dict[str, dict[str, Any]]:
    """The records of the reads token `token_id` made in `tenant`, by action (the last of each)."""
    rows = sql.execute(
        "SELECT record::jsonb FROM events WHERE tenant_id = %s AND action LIKE 'audit_log.%%'"
        " AND record::jsonb -> 'actor' ->> 'id' = %s ORDER BY seq",
        [tenant, token_id],
    ).fetchall()
    return {row[0]["action"]: row[0] for row in rows}


def make_recheck_due(sql: psycopg.Connection[Any], tenant: str, token: str) -> None:
    """The recheck interval of the session of console token `token` has
    passed (its next check moved into the past, by the database's clock, and
    what the servers of this process remember of it forgotten, as time
    passing would make them ask: console/recheck.py DueTimes)."""
    moved = sql.execute(
        "UPDATE console_sessions SET next_check_at = now() - interval '1 second'"
        " WHERE tenant_id = %s AND digest = sha256(convert_to(%s, 'UTF8'))",
        [tenant, token],
    )
    assert moved.rowcount == 1, "no session of this token is rechecked"
    DUE_TIMES.forget(tenant, digest(token))
