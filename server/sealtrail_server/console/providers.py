"""The console's OpenID providers, one per tenant (ADR 0151): read at start
from SEALTRAIL_OIDC_PROVIDERS_FILE (TOML; JSON when its name ends .json),
or made of the single provider's SEALTRAIL_OIDC_* settings.

    [tenants.acme]
    issuer = "https://login.acme.example/oauth2/default"
    client_id = "sealtrail-console"
    client_secret_file = "acme-client-secret"   # beside this file, if relative
    admin_groups = ["audit-admins"]
    reader_groups = "security, audit-readers"   # a list, or comma-separated
    # optional: exporter_groups, groups_claim, session_seconds,
    # recheck_seconds, provider_name, redirect_url

A tenant id holding a dot is quoted (`[tenants."acme.corp"]`): TOML reads
`[tenants.acme.corp]` as a table `corp` inside tenant `acme`.

A tenant's optional keys default to the SEALTRAIL_OIDC_* setting of the same
name. Its redirect URL, where the file names several tenants, is a callback
of its own, `/auth/callback/<tenant>` (SEALTRAIL_OIDC_REDIRECT_URL's, by
default): with one for all, a hostile tenant's provider could forward a
sign-in to another's, and have that one's code redeemed at its own token
endpoint (an OAuth mix-up, ADR 0151). What is wrong with
the file is a `ProvidersFileError` naming the tenant and the key; the
caller says it with the file's setting and stops.
"""

from __future__ import annotations

import json
import math
import tomllib
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ..config import (
    AT_MOST_A_DAY_SAID,
    DAY,
    TENANT_ID_SAID,
    Settings,
    callback_url_problem,
    issuer_problem,
    provider_name_problem,
    redirect_url_problem,
)
from ..domain.access import Role, valid_tenant_id
from ..file_modes import check_secret_file
from .hosts import parse_allowed_hosts, served_at_start, url_host
from .oidc import OidcConfig

# Tenants a file names at most: each costs a provider's discovery and keys.
MAX_TENANTS: Final = 1000

_REQUIRED: Final = ("issuer", "client_id", "client_secret_file")
_GROUPS: Final = {
    "admin_groups": Role.ADMIN,
    "exporter_groups": Role.EXPORTER,
    "reader_groups": Role.READER,
}
_OPTIONAL: Final = (
    "groups_claim",
    "session_seconds",
    "recheck_seconds",
    "provider_name",
    "redirect_url",
)
_KEYS: Final = frozenset((*_REQUIRED, *_GROUPS, *_OPTIONAL))


class ProvidersFileError(ValueError):
    """What is wrong with the providers file (a sentence naming where)."""


# Characters of a secret file's path a refusal quotes at most where no file
# is there: the setting may hold the secret itself, pasted in its place.
_SHOWN_OF_NO_FILE: Final = 6


def read_text(path: Path, *, named: str) -> str:
    """The text of the file at `path` (`named`: what names it); SystemExit if
    it cannot be read. A path where no file is may be a secret written in
    place of its file's path: only its first characters are said."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        shown = str(path)
        if isinstance(error, FileNotFoundError) and len(path.name) > _SHOWN_OF_NO_FILE:
            shown = f"{path.name[:_SHOWN_OF_NO_FILE]}..., no such file: the path of the file"
            shown += " holding the secret, not the secret"
        raise SystemExit(f"{named} ({shown}) cannot be read: {type(error).__name__}") from None


def read_secret(path: Path, *, named: str) -> str:
    """A client secret read from its file (`named`: what names it); SystemExit
    if it cannot be read or is empty."""
    secret = read_text(path, named=named).strip()
    if not secret:
        raise SystemExit(f"{named} ({path}) is empty")
    return secret


def groups_of(listed: str | list[str]) -> frozenset[str]:
    """The groups of a list, or of a comma-separated one."""
    groups = listed.split(",") if isinstance(listed, str) else listed
    return frozenset(group.strip() for group in groups if group.strip())


def issuer_compared(issuer: str) -> str:
    """An issuer URL as compared with another: its scheme and host in lower
    case, without trailing slashes (`https://IdP.example/` is
    `https://idp.example`)."""
    parts = urllib.parse.urlsplit(issuer)
    return parts._replace(
        scheme=parts.scheme.lower(), netloc=parts.netloc.lower(), path=parts.path.rstrip("/")
    ).geturl()


def single_provider(settings: Settings) -> OidcConfig:
    """The console's one provider, of SEALTRAIL_OIDC_ISSUER and the settings
    beside it (config.oidc_problem checked them), its secret read."""
    assert settings.oidc_client_secret_file is not None  # config.oidc_problem
    return OidcConfig(
        issuer=settings.oidc_issuer,
        client_id=settings.oidc_client_id,
        client_secret=read_secret(
            settings.oidc_client_secret_file, named="SEALTRAIL_OIDC_CLIENT_SECRET_FILE"
        ),
        redirect_url=settings.oidc_redirect_url,
        tenant_id=settings.oidc_tenant,
        groups={
            Role.ADMIN: groups_of(settings.oidc_admin_groups),
            Role.EXPORTER: groups_of(settings.oidc_exporter_groups),
            Role.READER: groups_of(settings.oidc_reader_groups),
        },
        groups_claim=settings.oidc_groups_claim,
        session_seconds=settings.oidc_session_seconds,
        recheck_seconds=settings.oidc_recheck_seconds,
        provider_name=settings.oidc_provider_name.strip(),
    )


def providers(settings: Settings) -> dict[str, OidcConfig]:
    """The console's providers by tenant: the file's, the single provider's,
    or none (SystemExit saying what is wrong). Each secret file the file
    names is checked as the key files are (file_modes.py) before it is read,
    as the file itself was (app.check_secret_files): whoever may replace it
    chooses who signs in as an admin."""
    path = settings.oidc_providers_file
    if path is None:
        if not settings.oidc_issuer:
            return {}
        config = single_provider(settings)
        return {config.tenant_id: config}
    named = "SEALTRAIL_OIDC_PROVIDERS_FILE"  # checked as a secret file is (app.py)
    text = read_text(path, named=named)

    def secret_of(tenant: str, secret_file: Path) -> str:
        what = f"{named}, tenant {tenant!r}, client_secret_file"
        check_secret_file(secret_file, named=what, allow_readable=settings.allow_readable_secrets)
        return read_secret(secret_file, named=what)

    try:
        return parse_providers(
            text,
            json_file=path.suffix.lower() == ".json",
            settings=settings,
            folder=path.parent,
            secret_of=secret_of,
        )
    except ProvidersFileError as error:
        raise SystemExit(f"{named} ({path}): {error}") from None


def parse_providers(
    text: str,
    *,
    json_file: bool,
    settings: Settings,
    folder: Path,
    secret_of: Callable[[str, Path], str],
) -> dict[str, OidcConfig]:
    """The tenants' providers a file's `text` names, each client secret
    read by `secret_of(tenant, path)` (a relative path under `folder`) once
    the rest of its tenant is found right; ProvidersFileError if it is not a
    file of them."""
    try:
        document: Any = (
            json.loads(text, object_pairs_hook=_once_each) if json_file else tomllib.loads(text)
        )
    except ProvidersFileError:
        raise
    except (ValueError, tomllib.TOMLDecodeError) as error:
        kind = "JSON" if json_file else "TOML"
        raise ProvidersFileError(f"not {kind}: {str(error)[:200]}") from None
    if not isinstance(document, dict) or set(document) != {"tenants"}:
        raise ProvidersFileError(
            "must hold one table, `tenants`, of one table per tenant ([tenants.acme])"
        )
    tenants = document["tenants"]
    if not isinstance(tenants, dict) or not tenants:
        raise ProvidersFileError("`tenants` names no tenant: add one ([tenants.acme])")
    if len(tenants) > MAX_TENANTS:
        raise ProvidersFileError(f"names {len(tenants)} tenants, more than {MAX_TENANTS}")
    configs: dict[str, OidcConfig] = {}
    issued: dict[tuple[str, str], str] = {}
    several = len(tenants) > 1
    for tenant, entry in tenants.items():
        config = _tenant(
            str(tenant),
            entry,
            settings=settings,
            folder=folder,
            secret_of=secret_of,
            several=several,
        )
        # One client of one issuer for two tenants: a person of one signs in to both.
        # The issuer as compared: `https://idp.example/` is `https://idp.example`.
        compared = (issuer_compared(config.issuer), config.client_id)
        other = issued.setdefault(compared, config.tenant_id)
        if other != config.tenant_id:
            raise ProvidersFileError(
                f"tenant {tenant!r}: issuer and client_id are tenant {other!r}'s too; give each"
                " tenant a client of its own"
            )
        configs[config.tenant_id] = config
    return configs


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each named once (json keeps the last of
    a key named twice: a tenant's second entry silently won)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ProvidersFileError(f"names {key[:80]!r} twice: keep one")
        found[key] = value
    return found


def _tenant(
    tenant: str,
    entry: Any,
    *,
    settings: Settings,
    folder: Path,
    secret_of: Callable[[str, Path], str],
    several: bool,
) -> OidcConfig:
    where = f"tenant {tenant[:80]!r}"
    if not valid_tenant_id(tenant):
        raise ProvidersFileError(f"{where}: {TENANT_ID_SAID}")
    if not isinstance(entry, dict):
        raise ProvidersFileError(f"{where}: must be a table of its provider's keys")
    if tables := sorted(str(key) for key, value in entry.items() if isinstance(value, dict)):
        # `[tenants.acme.corp]`: TOML reads tenant `acme`, a table `corp` in it.
        dotted = f"{tenant}.{tables[0]}"[:80]
        raise ProvidersFileError(
            f"{where}: {tables[0][:60]!r} is a table, not a key: quote a tenant id holding a"
            f' dot ([tenants."{dotted}"])'
        )
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ProvidersFileError(
            f"{where}: unknown key {str(unknown[0])[:60]!r} (known: {', '.join(sorted(_KEYS))})"
        )
    for key in _REQUIRED:
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ProvidersFileError(f"{where}: key {key!r} is required, a non-empty string")

    def text(key: str, default: str) -> str:
        value = entry.get(key, default)
        if not isinstance(value, str):
            raise ProvidersFileError(f"{where}: key {key!r} must be a string")
        return value.strip()

    def seconds(key: str, default: float, *, zero: bool) -> float:
        value = entry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProvidersFileError(f"{where}: key {key!r} must be a number of seconds")
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero) or value > DAY:
            least = "0" if zero else "more than 0"
            said = AT_MOST_A_DAY_SAID.removeprefix("must be ")
            raise ProvidersFileError(f"{where}: key {key!r} must be {least} and {said}")
        return float(value)

    issuer = text("issuer", "")
    if why := issuer_problem(issuer):
        raise ProvidersFileError(f"{where}: key 'issuer' {why}")
    default = settings.oidc_redirect_url  # config.providers_file_problem checked it
    if default and several:
        default = tenant_callback(default, tenant)
    redirect_url = text("redirect_url", default)
    if not redirect_url:
        raise ProvidersFileError(
            f"{where}: key 'redirect_url' is needed, unless SEALTRAIL_OIDC_REDIRECT_URL is set"
        )
    if why := _callback_problem(redirect_url, tenant, several=several):
        raise ProvidersFileError(f"{where}: key 'redirect_url' {why}")
    if "redirect_url" in entry and (why := _unserved(redirect_url, settings)):
        raise ProvidersFileError(f"{where}: key 'redirect_url' {why}")
    provider_name = text("provider_name", settings.oidc_provider_name)
    if why := provider_name_problem(provider_name):
        raise ProvidersFileError(f"{where}: key 'provider_name' {why}")
    groups_claim = text("groups_claim", settings.oidc_groups_claim)
    if not groups_claim:
        raise ProvidersFileError(f"{where}: key 'groups_claim' must name a claim")
    groups: dict[Role, frozenset[str]] = {}
    for key, role in _GROUPS.items():
        listed = entry.get(key, [])
        if isinstance(listed, str) or (
            isinstance(listed, list) and all(isinstance(group, str) for group in listed)
        ):
            groups[role] = groups_of(listed)
        else:
            raise ProvidersFileError(
                f"{where}: key {key!r} must be a list of group names, or a comma-separated string"
            )
    if not any(groups.values()):
        raise ProvidersFileError(
            f"{where}: list the groups admitted in admin_groups, exporter_groups or reader_groups"
        )
    session_seconds = seconds("session_seconds", settings.oidc_session_seconds, zero=False)
    recheck_seconds = seconds("recheck_seconds", settings.oidc_recheck_seconds, zero=True)
    return OidcConfig(
        issuer=issuer,
        client_id=text("client_id", ""),
        client_secret=secret_of(tenant, folder / text("client_secret_file", "")),
        redirect_url=redirect_url,
        tenant_id=tenant,
        groups=groups,
        groups_claim=groups_claim,
        session_seconds=session_seconds,
        recheck_seconds=recheck_seconds,
        provider_name=provider_name,
    )


def tenant_callback(redirect_url: str, tenant: str) -> str:
    """The console's callback URL `redirect_url` (its /auth/callback) made
    `tenant`'s own: /auth/callback/<tenant>, any query kept."""
    parts = urllib.parse.urlsplit(redirect_url)
    return parts._replace(path=f"{parts.path}/{tenant}").geturl()


def callback_tenant(redirect_url: str) -> str | None:
    """The tenant a callback URL is the own of (/auth/callback/<tenant>), or
    None (/auth/callback: the console's one provider's)."""
    path = urllib.parse.urlsplit(redirect_url).path
    head, _, last = path.rpartition("/")
    return last if head.endswith("/auth/callback") else None


def _callback_problem(redirect_url: str, tenant: str, *, several: bool) -> str | None:
    """Why `redirect_url` cannot be `tenant`'s: /auth/callback/<tenant> where
    the file names several tenants (so no two share one), else that or the
    console's /auth/callback."""
    if why := callback_url_problem(redirect_url):
        return why
    named = callback_tenant(redirect_url)
    if named == tenant or (not several and redirect_url_problem(redirect_url) is None):
        return None
    if several:
        return f"must be the console's /auth/callback/{tenant} (each tenant's its own)"
    return f"must be the console's /auth/callback, or /auth/callback/{tenant}"


def _unserved(redirect_url: str, settings: Settings) -> str | None:
    """Why a tenant's own `redirect_url` cannot end its sign-ins, if it
    cannot: on a host the console does not serve. Its sign-in cookie is set,
    host-only, where the sign-in began (sign_in.py): a callback on another
    host than SEALTRAIL_OIDC_REDIRECT_URL's must be one of the console's, its
    people beginning their sign-in there."""
    host = url_host(redirect_url)  # redirect_url_problem found it a URL with a host
    default = settings.oidc_redirect_url
    if default and url_host(default) == host:
        return None
    listed = parse_allowed_hosts(settings.console_allowed_hosts)
    if served_at_start(host, listen=settings.console_listen or "", listed=listed):
        return None
    return (
        f"is on {host[0][:80]}, a host the console does not serve: list it in"
        " SEALTRAIL_CONSOLE_ALLOWED_HOSTS (its people begin their sign-in there)"
    )
