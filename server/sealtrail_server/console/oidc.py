"""The console's relying party of an OpenID provider (ADR 0140): the
authorization code flow with PKCE (S256), a confidential client, and the
id_token it answers verified with joserfc against the provider's published
keys. What it proves, a person and their groups, becomes a role here.

    SignInRefused           a sign-in ended without a person (`reason`, `said`)
    ├── ProviderFailed      the provider could not be read or refused the code
    ├── RefreshRefused      the provider refused a session's refresh token
    │                       (invalid_grant: the person removed or disabled there,
    │                       the session revoked)
    └── (reason "no_group") a person was proven, in none of the groups admitted

Each refusal's `said` is a sentence for the page; none quotes a token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidKeyCurveError, JoseError, MissingClaimError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import KeySet, OKPKey
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry

from ..domain.access import Role

# The only signatures taken: asymmetric, published in the JWKS. `none` proves
# nothing; HS* would be checked with the client secret, which the console
# holds too, and so could forge. Ed25519 is EdDSA by its fully specified
# name (RFC 9864).
ALGORITHMS: Final = ("RS256", "ES256", "EdDSA", "Ed25519")


class _EdDSAOfEd25519(JWSAlgModel):
    """`EdDSA` verified as `Ed25519` is (an OKP key of curve Ed25519, no
    other), the console's only Edwards curve. RFC 9864 deprecates the
    polymorphic name, for which joserfc warns (SecurityWarning) at every
    verification, out of the log's reach (an error where warnings are), and
    takes an Ed448 key under it; providers still sign with it."""

    name = "EdDSA"
    description = "EdDSA using the Ed25519 parameter set (RFC 8037, RFC 9864)"
    key_type = "OKP"

    def check_key(self, key: OKPKey) -> None:
        super().check_key(key)
        if key.curve_name != "Ed25519":
            raise InvalidKeyCurveError("Key for 'EdDSA' not supported, only 'Ed25519' allowed")

    def sign(self, msg: bytes, key: OKPKey) -> bytes:
        raise NotImplementedError("the console verifies id_tokens; it signs none")

    def verify(self, msg: bytes, sig: bytes, key: OKPKey) -> bool:
        public = key.get_op_key("verify")
        if not isinstance(public, Ed25519PublicKey):
            return False
        try:
            public.verify(sig, msg)
        except InvalidSignature:
            return False
        return True


def _signatures(algorithm: str) -> JWSRegistry:
    """joserfc's registry taking `algorithm` alone, `EdDSA` as `_EdDSAOfEd25519`
    (in this registry's algorithms, not joserfc's, which others may use)."""
    registry = JWSRegistry(algorithms=[algorithm])
    registry.algorithms = {**JWSRegistry.algorithms, "EdDSA": _EdDSAOfEd25519()}
    return registry


# Seconds of clock difference taken on `exp`, `iat` and `nbf`.
LEEWAY_SECONDS: Final = 60
# Seconds the discovery document and the keys are trusted before they are
# read again (an unknown `kid` reads the keys at once, once a minute at most).
CACHE_SECONDS: Final = 3600.0
REFETCH_SECONDS: Final = 60.0
# Seconds each request to the provider may take.
PROVIDER_TIMEOUT: Final = 10.0
# Bytes of a provider's answer read at most.
MAX_ANSWER: Final = 1024 * 1024
SCOPES: Final = "openid email profile"
# Asked for besides, when sessions are rechecked and the provider lists it
# (scopes_supported): what most providers give a refresh token for.
OFFLINE_SCOPE: Final = "offline_access"
# Roles from the most to the least: a person in several lists gets the first.
_ORDER: Final = (Role.ADMIN, Role.EXPORTER, Role.READER)


class SignInRefused(Exception):
    """A sign-in that ends without a person: `reason` (a word, recorded), `said`
    (a sentence for the page)."""

    def __init__(self, reason: str, said: str, *, status: int = 401) -> None:
        super().__init__(said)
        self.reason = reason
        self.said = said
        self.status = status


class ProviderFailed(SignInRefused):
    """The provider could not be read, or refused the code (502)."""

    def __init__(self, said: str) -> None:
        super().__init__("provider", said, status=502)


class RefreshRefused(SignInRefused):
    """The provider refused a refresh token (`invalid_grant`, RFC 6749 5.2):
    the person removed or disabled there, the session revoked or expired."""

    def __init__(self, said: str) -> None:
        super().__init__("refresh_refused", said)


@dataclass(frozen=True, slots=True)
class Tokens:
    """What the token endpoint answered: an id_token (a refresh may give
    none), and a refresh token if it gave one."""

    id_token: str | None
    refresh_token: str | None


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """What the operator set (SEALTRAIL_OIDC_*, docs/console.md)."""

    issuer: str
    client_id: str
    client_secret: str
    redirect_url: str
    tenant_id: str
    groups: dict[Role, frozenset[str]]
    groups_claim: str = "groups"
    session_seconds: float = 8 * 3600.0
    # Seconds between a session's rechecks with the provider (0: never).
    recheck_seconds: float = 300.0
    # What the console's button calls the provider ("" : "your identity provider").
    provider_name: str = ""


@dataclass(frozen=True, slots=True)
class Person:
    """Who the provider proved: `name` (a verified email, else sub@issuer),
    `subject`, the groups the token named, and the role they map to."""

    name: str
    subject: str
    groups: tuple[str, ...]
    role: Role | None


def pkce_challenge(verifier: str) -> str:
    """A PKCE code verifier's S256 challenge (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def role_of(groups: tuple[str, ...], mapping: dict[Role, frozenset[str]]) -> Role | None:
    """The highest role one of `groups` is listed for; None if none is."""
    for role in _ORDER:
        if mapping.get(role, frozenset()) & set(groups):
            return role
    return None


def person_of(claims: dict[str, Any], config: OidcConfig) -> Person:
    """The person an id_token's verified claims name."""
    subject = str(claims["sub"])
    email = claims.get("email")
    if isinstance(email, str) and email and claims.get("email_verified") is True:
        name = email
    else:  # an unverified email is anyone's to claim
        name = f"{subject}@{config.issuer}"
    named = claims.get(config.groups_claim, [])
    if isinstance(named, str):
        named = [named]
    groups = tuple(str(g) for g in named) if isinstance(named, list) else ()
    return Person(name=name, subject=subject, groups=groups, role=role_of(groups, config.groups))


def _header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact token, unverified (to choose its key)."""
    try:
        part = token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, IndexError):
        header = None
    if not isinstance(header, dict):
        raise SignInRefused("malformed", "the identity provider's id_token is no signed token")
    return header


@dataclass
class _Cached:
    value: dict[str, Any]
    read_at: float


@dataclass
class Published:
    """What an issuer publishes, its discovery document and keys, as last
    read (None: not yet), shared by the Providers of its tenants (one per
    issuer as compared, providers.issuer_compared): of a thousand tenants of
    one provider, each read and cached them for itself, a thousand times.
    Nothing of a tenant's client is in it."""

    discovery: _Cached | None = None
    keys: _Cached | None = None
    keys_refetched: float = -REFETCH_SECONDS
    # The reads under way, by what they read.
    _reading: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    async def read_once(
        self, what: str, read: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """`read()`, or the read of `what` under way: the tenants that miss
        the cache at once wait for one read, and each has its answer or its
        failure (not a lock's turn each: with the provider down, the last
        of them waited out every timeout before its own). A caller
        cancelled leaves the read to the others."""
        under_way = self._reading.get(what)
        if under_way is None:
            under_way = self._reading[what] = asyncio.ensure_future(read())

            def done(future: asyncio.Future[dict[str, Any]]) -> None:
                if self._reading.get(what) is future:
                    del self._reading[what]
                if not future.cancelled():
                    future.exception()  # said to each caller, not left unretrieved

            under_way.add_done_callback(done)
        return await asyncio.shield(under_way)

    def reading(self, what: str) -> bool:
        """Whether a read of `what` is under way (`read_once` joins it)."""
        return what in self._reading


@dataclass
class Provider:
    """The provider at `config.issuer`, for the client of `config`: its
    discovery document and keys read when first needed and cached in
    `published` (shared by the tenants of the issuer: `clock`, monotonic
    seconds, the same for them)."""

    config: OidcConfig
    session: aiohttp.ClientSession
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    published: Published = field(default_factory=Published)

    async def _get(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self.session.get(url, allow_redirects=False) as answer:
                if answer.status != 200:
                    raise ProviderFailed(f"the identity provider's {what} answered {answer.status}")
                body = await answer.content.read(MAX_ANSWER)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ProviderFailed(
                f"the identity provider's {what} could not be read ({type(error).__name__})"
            ) from None
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ProviderFailed(f"the identity provider's {what} is no JSON object")
        return value

    async def discovery(self) -> dict[str, Any]:
        """The provider's metadata (OpenID Connect Discovery 1.0), its issuer
        checked against this tenant's (the cache is shared by tenants whose
        issuers compare equal, which may be spelt otherwise: one not spelt
        as the document names it is refused, as it was by a read of its own)."""
        published = self.published
        cached = published.discovery
        if cached is not None and self.clock() - cached.read_at < CACHE_SECONDS:
            return self._of_this_issuer(cached.value)
        value = self._of_this_issuer(await published.read_once("discovery", self._read_discovery))
        # Kept once this tenant finds it its issuer's: one naming another is
        # read again at the next sign-in, as before it was shared.
        published.discovery = _Cached(value, self.clock())
        return value

    async def _read_discovery(self) -> dict[str, Any]:
        """The discovery document, read; ProviderFailed if it lacks an
        endpoint the sign-in goes to."""
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        value = await self._get(url, "discovery document")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(value.get(name), str):
                raise ProviderFailed(f"the identity provider's discovery document has no {name}")
        return value

    def _of_this_issuer(self, value: dict[str, Any]) -> dict[str, Any]:
        """A discovery document, if it names this tenant's issuer as spelt
        here (tenants sharing it may spell their issuers otherwise, equal as
        compared); else ProviderFailed."""
        if value.get("issuer") != self.config.issuer:
            raise ProviderFailed(
                "the identity provider's discovery document names another issuer than the"
                " one set (SEALTRAIL_OIDC_ISSUER, or the tenant's in the providers file)"
            )
        return value

    async def authorization_url(self, *, state: str, nonce: str, challenge: str) -> str:
        discovered = await self.discovery()
        endpoint = str(discovered["authorization_endpoint"])
        scopes = SCOPES
        listed = discovered.get("scopes_supported")
        if self.config.recheck_seconds > 0 and isinstance(listed, list) and OFFLINE_SCOPE in listed:
            scopes += " " + OFFLINE_SCOPE
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_url,
                "scope": scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def _key_set(self, *, fresh: bool) -> KeySet:
        """The issuer's keys, read again if `fresh` or stale."""
        published = self.published
        cached = published.keys
        if fresh or cached is None or self.clock() - cached.read_at >= CACHE_SECONDS:
            url = str((await self.discovery())["jwks_uri"])

            async def read() -> dict[str, Any]:
                return await self._get(url, "keys (jwks_uri)")

            cached = published.keys = _Cached(await published.read_once("keys", read), self.clock())
        try:
            return KeySet.import_key_set(cached.value)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError):
            raise ProviderFailed("the identity provider's keys (jwks_uri) are no JWK set") from None

    async def _key(self, kid: str | None) -> Any:
        """The published key `kid` names; the keys are read again once if
        none does (the provider rotated them), a minute apart at most for the
        issuer. Within the minute, the keys are looked in again as another
        tenant's sign-in of the issuer reads them again (its read joined), or
        as last read (it may have read them since these)."""
        keys = await self._key_set(fresh=False)
        for attempt in (0, 1):
            try:
                return keys.get_by_kid(kid)
            except JoseError:
                if attempt:
                    break
                published = self.published
                fresh = self.clock() - published.keys_refetched >= REFETCH_SECONDS
                if fresh:
                    published.keys_refetched = self.clock()
                # Another tenant's reading them again is joined, not left.
                keys = await self._key_set(fresh=fresh or published.reading("keys"))
        raise SignInRefused(
            "unknown_key",
            "the id_token is signed with a key the identity provider does not publish"
            f" (kid {str(kid)[:40]!r})",
        )

    async def _token_endpoint(self, form: dict[str, str], what: str) -> tuple[int, dict[str, Any]]:
        """The token endpoint's status and JSON object for `form`
        (client_secret_basic); ProviderFailed if it cannot be reached."""
        endpoint = str((await self.discovery())["token_endpoint"])
        # client_secret_basic: each form-encoded first (RFC 6749, 2.3.1).
        pair = ":".join(
            urllib.parse.quote_plus(part)
            for part in (self.config.client_id, self.config.client_secret)
        )
        auth = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
        try:
            async with self.session.post(
                endpoint, data=form, headers=auth, allow_redirects=False
            ) as answer:
                body = await answer.content.read(MAX_ANSWER)
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ProviderFailed(
                f"the identity provider's token endpoint could not be reached for {what}"
                f" ({type(error).__name__})"
            ) from None
        try:
            value = json.loads(body)
        except ValueError:
            value = {}
        return status, value if isinstance(value, dict) else {}

    @staticmethod
    def _tokens(value: dict[str, Any]) -> Tokens:
        token, refresh = value.get("id_token"), value.get("refresh_token")
        return Tokens(
            token if isinstance(token, str) else None,
            refresh if isinstance(refresh, str) and refresh else None,
        )

    async def redeem(self, code: str, verifier: str) -> Tokens:
        """The id_token (and refresh token, if any) the token endpoint gives
        for `code`."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_url,
            "code_verifier": verifier,
        }
        status, value = await self._token_endpoint(form, "the sign-in's code")
        if status != 200:
            said = str(value.get("error", ""))[:60] or f"status {status}"
            raise ProviderFailed(f"the identity provider refused the sign-in's code ({said})")
        tokens = self._tokens(value)
        if tokens.id_token is None:
            raise ProviderFailed("the identity provider's token endpoint answered no id_token")
        return tokens

    async def refresh(self, refresh_token: str) -> Tokens:
        """What the token endpoint gives for a session's refresh token
        (OpenID Connect Core 1.0, 12): RefreshRefused if the provider
        refuses it (invalid_grant), ProviderFailed if it cannot answer."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        status, value = await self._token_endpoint(form, "a session's refresh")
        error = str(value.get("error", ""))[:60]
        if status in (400, 401) and error == "invalid_grant":
            said = str(value.get("error_description", ""))[:80]
            raise RefreshRefused(
                "the identity provider refused to renew the session (invalid_grant"
                + (f": {said})" if said else ")")
            )
        if status != 200:
            raise ProviderFailed(
                f"the identity provider did not renew the session ({error or f'status {status}'})"
            )
        return self._tokens(value)

    async def verify(self, token: str, *, nonce: str, renewed: bool = False) -> dict[str, Any]:
        """The claims of `token`, an id_token, once its signature (by a
        published key, in one of ALGORITHMS), issuer, audience, expiry and
        nonce are checked (OpenID Connect Core 1.0, 3.1.3.7). `renewed`: one
        a refresh answered, which need not name a nonce, but one it names
        must be the sign-in's (12.2)."""
        header = _header(token)
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise SignInRefused(
                "algorithm",
                f"the id_token is signed with {str(algorithm)[:20]!r}, not one of"
                f" {', '.join(ALGORITHMS)}",
            )
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(token, key, registry=_signatures(str(algorithm))).claims
        except JoseError:
            raise SignInRefused(
                "signature", "the id_token's signature does not verify with the provider's key"
            ) from None
        registry = JWTClaimsRegistry(
            now=lambda: int(self.wall_clock()),
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": self.config.issuer},
            aud={"essential": True, "value": self.config.client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": not renewed, "value": nonce},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise SignInRefused("expired", "the id_token has expired") from None
        except MissingClaimError as error:
            raise SignInRefused(
                "claims", f"the id_token lacks a claim: {error.description}"
            ) from None
        except JoseError as error:
            said = {
                "nonce": "the id_token is not this sign-in's (its nonce differs)",
                "aud": "the id_token is for another client (its audience is not the client id set)",
                "iss": "the id_token is from another issuer than the one set",
            }
            claim = str(getattr(error, "claim", ""))
            raise SignInRefused(
                claim or "claims", said.get(claim, f"the id_token was refused: {error.error}")
            ) from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.config.client_id:
            raise SignInRefused(
                "aud", "the id_token is for several clients, not authorized for this one"
            )
        return claims
