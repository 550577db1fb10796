"""SEALTRAIL_OIDC_PROVIDERS_FILE (ADR 0151): a file of OpenID providers, one
per tenant, read at start; each fault refused with the tenant and the key
named, before the server serves. Real files in a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sealtrail_server.config import Settings
from sealtrail_server.console.providers import providers
from sealtrail_server.domain.access import Role
from tests.private_files import write_private

GOOD = """
[tenants.acme]
issuer = "https://login.acme.example"
client_id = "sealtrail"
client_secret_file = "acme-secret"
admin_groups = ["audit-admins"]
reader_groups = "security, audit-readers"

[tenants.globex]
issuer = "https://globex.okta.example/oauth2/default"
client_id = "sealtrail-console"
client_secret_file = "globex-secret"
exporter_groups = ["exporters"]
session_seconds = 600
recheck_seconds = 0
provider_name = "Globex SSO"
groups_claim = "roles"
redirect_url = "https://globex-audit.example.com/auth/callback/globex"
"""


def _settings(folder: Path, text: str, *, name: str = "providers.toml", **env: str) -> Settings:
    write_private(folder / "acme-secret", "acme's secret\n")
    write_private(folder / "globex-secret", "globex's secret\n")
    file = write_private(folder / name, text)
    return Settings.load(
        {
            "SEALTRAIL_OIDC_PROVIDERS_FILE": str(file),
            "SEALTRAIL_OIDC_REDIRECT_URL": "https://audit.example.com/auth/callback",
            "SEALTRAIL_CONSOLE_LISTEN": "127.0.0.1:8080",
            # globex's redirect_url's host (a proxy's name for the console)
            "SEALTRAIL_CONSOLE_ALLOWED_HOSTS": "globex-audit.example.com",
            **env,
        }
    )


def test_a_file_gives_each_tenant_its_provider(tmp_path: Path) -> None:
    read = providers(_settings(tmp_path, GOOD, SEALTRAIL_OIDC_RECHECK_SECONDS="120"))
    assert set(read) == {"acme", "globex"}
    acme, globex = read["acme"], read["globex"]
    assert (acme.issuer, acme.client_id, acme.client_secret) == (
        "https://login.acme.example",
        "sealtrail",
        "acme's secret",
    )
    assert acme.groups == {
        Role.ADMIN: frozenset({"audit-admins"}),
        Role.EXPORTER: frozenset(),
        Role.READER: frozenset({"security", "audit-readers"}),
    }
    # What a tenant does not say, the SEALTRAIL_OIDC_* setting of its name does;
    # its redirect URL, that setting's callback of its own (ADR 0151).
    assert acme.redirect_url == "https://audit.example.com/auth/callback/acme"
    assert (acme.recheck_seconds, acme.session_seconds, acme.groups_claim) == (
        120,
        8 * 3600,
        "groups",
    )
    assert (globex.recheck_seconds, globex.session_seconds, globex.groups_claim) == (
        0,
        600,
        "roles",
    )
    assert globex.provider_name == "Globex SSO"
    assert globex.redirect_url == "https://globex-audit.example.com/auth/callback/globex"
    assert globex.client_secret == "globex's secret"


def test_a_json_file_is_read_as_json(tmp_path: Path) -> None:
    document: dict[str, Any] = {
        "tenants": {
            "acme": {
                "issuer": "https://login.acme.example",
                "client_id": "sealtrail",
                "client_secret_file": str(tmp_path / "acme-secret"),  # an absolute path
                "reader_groups": ["readers"],
            }
        }
    }
    read = providers(_settings(tmp_path, json.dumps(document), name="providers.json"))
    assert read["acme"].groups[Role.READER] == frozenset({"readers"})


def _entry(**changed: Any) -> str:
    entry: dict[str, Any] = {
        "issuer": "https://login.acme.example",
        "client_id": "sealtrail",
        "client_secret_file": "acme-secret",
        "reader_groups": ["readers"],
    }
    entry.update(changed)
    entry = {key: value for key, value in entry.items() if value is not None}
    return json.dumps({"tenants": {"acme": entry}})


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[tenants.acme\n", "not TOML"),
        ("issuer = 'x'\n", "must hold one table, `tenants`"),
        ("[tenants]\n", "`tenants` names no tenant"),
        ('[tenants."Acme Corp"]\nissuer = "x"\n', "tenant 'Acme Corp': not a tenant id"),
        (_entry(issuer=None), "tenant 'acme': key 'issuer' is required"),
        (_entry(client_id=""), "tenant 'acme': key 'client_id' is required"),
        (_entry(issuer="http://idp.example.com"), "tenant 'acme': key 'issuer' must be an https"),
        (_entry(isuer="https://x.example"), "tenant 'acme': unknown key 'isuer'"),
        (_entry(reader_groups=None), "tenant 'acme': list the groups admitted"),
        (_entry(admin_groups=[1]), "tenant 'acme': key 'admin_groups' must be a list"),
        (_entry(session_seconds=0), "tenant 'acme': key 'session_seconds' must be more than 0"),
        (_entry(recheck_seconds=-1), "tenant 'acme': key 'recheck_seconds' must be 0"),
        (_entry(recheck_seconds="300"), "key 'recheck_seconds' must be a number of seconds"),
        (_entry(session_seconds=86401), "key 'session_seconds' must be more than 0 and at most"),
        (_entry(provider_name="Okta\u202e"), "tenant 'acme': key 'provider_name' must be at most"),
        (
            _entry(redirect_url="https://audit.example.com/callback"),
            "tenant 'acme': key 'redirect_url' must be the console's /auth/callback",
        ),
        (_entry(client_secret_file="missing"), "tenant 'acme', client_secret_file (.*) cannot be"),
    ],
    ids=[
        *("not-toml", "no-tenants-table", "no-tenant", "bad-tenant-id", "no-issuer"),
        *("empty-client-id", "http-issuer", "unknown-key", "no-groups", "bad-groups"),
        *("zero-session", "negative-recheck", "text-seconds", "session-past-a-day"),
        *("hidden-provider-name", "not-the-callback", "no-secret-file"),
    ],
)
def test_a_fault_in_the_file_names_the_tenant_and_key(tmp_path: Path, text: str, said: str) -> None:
    name = "providers.json" if text.startswith("{") else "providers.toml"
    with pytest.raises(SystemExit, match=said) as refused:
        providers(_settings(tmp_path, text, name=name))
    assert str(refused.value).startswith("SEALTRAIL_OIDC_PROVIDERS_FILE")


def test_a_tenant_needs_a_redirect_url_from_the_file_or_the_setting(tmp_path: Path) -> None:
    settings = _settings(tmp_path, _entry(), name="providers.json", SEALTRAIL_OIDC_REDIRECT_URL="")
    with pytest.raises(SystemExit, match="tenant 'acme': key 'redirect_url' is needed, unless"):
        providers(settings)


def test_one_client_of_one_issuer_serves_one_tenant(tmp_path: Path) -> None:
    shared = GOOD.replace(
        "https://globex.okta.example/oauth2/default", "https://login.acme.example"
    )
    shared = shared.replace('client_id = "sealtrail-console"', 'client_id = "sealtrail"')
    with pytest.raises(SystemExit, match="tenant 'globex': issuer and client_id are tenant 'acme'"):
        providers(_settings(tmp_path, shared))


def test_an_empty_secret_file_is_refused_naming_its_tenant(tmp_path: Path) -> None:
    settings = _settings(tmp_path, GOOD)
    write_private(tmp_path / "globex-secret", "\n")
    with pytest.raises(SystemExit, match=r"tenant 'globex', client_secret_file .* is empty"):
        providers(settings)


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("SEALTRAIL_OIDC_ISSUER", "PROVIDERS_FILE and SEALTRAIL_OIDC_ISSUER are both set"),
        ("SEALTRAIL_OIDC_TENANT", "SEALTRAIL_OIDC_TENANT is set beside"),
        ("SEALTRAIL_OIDC_CLIENT_ID", "SEALTRAIL_OIDC_CLIENT_ID is set beside"),
        ("SEALTRAIL_OIDC_READER_GROUPS", "SEALTRAIL_OIDC_READER_GROUPS is set beside"),
    ],
)
def test_a_per_tenant_setting_beside_the_file_is_refused(
    tmp_path: Path, setting: str, said: str
) -> None:
    value = "https://idp.example.com" if setting.endswith("ISSUER") else "acme"
    with pytest.raises(SystemExit, match=said):
        _settings(tmp_path, GOOD, **{setting: value})


def test_the_file_signs_in_to_a_console_only(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="set SEALTRAIL_CONSOLE_LISTEN too"):
        _settings(tmp_path, GOOD, SEALTRAIL_CONSOLE_LISTEN="")


def test_an_unquoted_dotted_tenant_id_is_told_to_be_quoted(tmp_path: Path) -> None:
    dotted = GOOD.replace("[tenants.acme]", "[tenants.acme.corp]")
    with pytest.raises(
        SystemExit, match=r"tenant 'acme': 'corp' is a table.*\[tenants\.\"acme\.corp\"\]"
    ):
        providers(_settings(tmp_path, dotted))
    quoted = GOOD.replace("[tenants.acme]", '[tenants."acme.corp"]')
    assert set(providers(_settings(tmp_path, quoted))) == {"acme.corp", "globex"}


def test_a_json_file_naming_a_tenant_twice_is_refused(tmp_path: Path) -> None:
    entry = json.loads(_entry())["tenants"]["acme"]
    one = json.dumps(entry)
    twice = f'{{"tenants": {{"acme": {one}, "acme": {one}}}}}'
    with pytest.raises(SystemExit, match="names 'acme' twice"):
        providers(_settings(tmp_path, twice, name="providers.json"))


@pytest.mark.parametrize(
    "issuer",
    ["https://login.acme.example/", "https://LOGIN.Acme.example", "HTTPS://login.acme.example//"],
)
def test_one_issuer_however_written_with_one_client_serves_one_tenant(
    tmp_path: Path, issuer: str
) -> None:
    shared = GOOD.replace("https://globex.okta.example/oauth2/default", issuer)
    shared = shared.replace('client_id = "sealtrail-console"', 'client_id = "sealtrail"')
    with pytest.raises(SystemExit, match="tenant 'globex': issuer and client_id are tenant 'acme'"):
        providers(_settings(tmp_path, shared))


def test_a_secret_written_in_place_of_its_file_is_not_said(tmp_path: Path) -> None:
    secret = "Zq8xT2mVb9Lr4wPc7Ny1Kd6Hs3Jf5Ga0"
    with pytest.raises(SystemExit, match="tenant 'acme', client_secret_file") as refused:
        providers(_settings(tmp_path, _entry(client_secret_file=secret), name="providers.json"))
    assert secret not in str(refused.value)
    assert secret[:12] not in str(refused.value)


def test_a_tenants_redirect_url_on_a_host_the_console_does_not_serve_is_refused(
    tmp_path: Path,
) -> None:
    # globex's redirect_url is on globex-audit.example.com: its sign-in cookie,
    # set where the sign-in began, would never reach that host's callback.
    with pytest.raises(
        SystemExit,
        match=r"tenant 'globex': key 'redirect_url' is on globex-audit\.example\.com, a host the"
        r" console does not serve",
    ):
        providers(_settings(tmp_path, GOOD, SEALTRAIL_CONSOLE_ALLOWED_HOSTS=""))
    listed = _settings(tmp_path, GOOD, SEALTRAIL_CONSOLE_ALLOWED_HOSTS="globex-audit.example.com")
    assert providers(listed)["globex"].redirect_url.startswith("https://globex-audit.example.com/")
    on_the_console = _entry(redirect_url="http://127.0.0.1:8080/auth/callback")
    assert providers(_settings(tmp_path, on_the_console, name="providers.json"))["acme"]


def test_each_tenant_of_several_has_a_callback_of_its_own(tmp_path: Path) -> None:
    """A callback shared by the tenants let a hostile one's provider learn
    another's code (an OAuth mix-up: ADR 0151): where the file names several,
    each tenant's redirect URL is the console's /auth/callback/<its id>."""
    shared = GOOD.replace("/auth/callback/globex", "/auth/callback")
    with pytest.raises(
        SystemExit,
        match=r"tenant 'globex': key 'redirect_url' must be the console's"
        r" /auth/callback/globex",
    ):
        providers(_settings(tmp_path, shared))
    theirs = GOOD.replace(
        "https://globex-audit.example.com/auth/callback/globex",
        "https://audit.example.com/auth/callback/acme",
    )
    with pytest.raises(SystemExit, match=r"tenant 'globex': key 'redirect_url' must be"):
        providers(_settings(tmp_path, theirs))
    # The default keeps the setting's query, if it has one.
    queried = providers(
        _settings(
            tmp_path,
            GOOD,
            SEALTRAIL_OIDC_REDIRECT_URL="https://audit.example.com/auth/callback?from=idp",
        )
    )
    assert queried["acme"].redirect_url == "https://audit.example.com/auth/callback/acme?from=idp"


def test_a_file_of_one_tenant_may_keep_the_one_callback(tmp_path: Path) -> None:
    """Nothing to mix up: a file of one tenant signs in as the single
    provider does, at /auth/callback, or its own callback if it names it."""
    one = _settings(tmp_path, _entry(), name="providers.json")
    assert providers(one)["acme"].redirect_url == "https://audit.example.com/auth/callback"
    own = _entry(redirect_url="https://audit.example.com/auth/callback/acme")
    read = providers(_settings(tmp_path, own, name="providers.json"))
    assert read["acme"].redirect_url == "https://audit.example.com/auth/callback/acme"


@pytest.mark.parametrize("tenant", ["Acme", "acme corp", "x" * 64])
def test_the_single_providers_tenant_must_be_a_tenant_id(tmp_path: Path, tenant: str) -> None:
    with pytest.raises(SystemExit, match=r"SEALTRAIL_OIDC_TENANT .*not a tenant id"):
        Settings.load(
            {
                "SEALTRAIL_OIDC_ISSUER": "https://idp.example.com",
                "SEALTRAIL_OIDC_CLIENT_ID": "sealtrail",
                "SEALTRAIL_OIDC_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
                "SEALTRAIL_OIDC_REDIRECT_URL": "https://audit.example.com/auth/callback",
                "SEALTRAIL_OIDC_TENANT": tenant,
                "SEALTRAIL_OIDC_READER_GROUPS": "readers",
                "SEALTRAIL_CONSOLE_LISTEN": "127.0.0.1:8080",
            }
        )


# Redirect URLs no provider may be given: RFC 6749 3.1.2 forbids a fragment (a
# `#/auth/callback` once passed as the path), and a user and password in it
# cannot work (browsers strip or refuse them), nor can a port out of range.
_NOT_A_CALLBACK = [
    ("https://audit.example.com/auth/callback#x", "must have no fragment"),
    ("https://audit.example.com/auth/callback?from=idp#x", "must have no fragment"),
    ("https://audit.example.com/x#/auth/callback", "must have no fragment"),
    ("https://audit.example.com/auth/callback#", "must have no fragment"),
    ("https://ops:pw@audit.example.com/auth/callback", "must have no user or password"),
    ("https://ops@audit.example.com/auth/callback", "must have no user or password"),
    ("https://audit.example.com:99999/auth/callback", "must be an https:// URL"),
    ("/auth/callback", "must be an https:// URL"),
    ("http://audit.example.com/auth/callback", "must be an https:// URL"),
]
_NOT_A_CALLBACK_IDS = [
    *("fragment", "query-and-fragment", "path-in-fragment", "empty-fragment"),
    *("user-and-password", "user", "port-out-of-range", "relative", "http-not-loopback"),
]


@pytest.mark.parametrize(("url", "said"), _NOT_A_CALLBACK, ids=_NOT_A_CALLBACK_IDS)
def test_the_redirect_url_setting_is_refused_where_no_provider_may_take_it(
    tmp_path: Path, url: str, said: str
) -> None:
    single = {
        "SEALTRAIL_OIDC_ISSUER": "https://idp.example.com",
        "SEALTRAIL_OIDC_CLIENT_ID": "sealtrail",
        "SEALTRAIL_OIDC_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
        "SEALTRAIL_OIDC_REDIRECT_URL": url,
        "SEALTRAIL_OIDC_TENANT": "acme",
        "SEALTRAIL_OIDC_READER_GROUPS": "readers",
        "SEALTRAIL_CONSOLE_LISTEN": "127.0.0.1:8080",
    }
    with pytest.raises(SystemExit, match=f"SEALTRAIL_OIDC_REDIRECT_URL {said}"):
        Settings.load(single)
    # ... and beside a providers file, whose tenants' callbacks it is the default of.
    with pytest.raises(SystemExit, match=f"SEALTRAIL_OIDC_REDIRECT_URL {said}"):
        _settings(tmp_path, GOOD, SEALTRAIL_OIDC_REDIRECT_URL=url)


@pytest.mark.parametrize(("url", "said"), _NOT_A_CALLBACK, ids=_NOT_A_CALLBACK_IDS)
@pytest.mark.parametrize("several", [False, True], ids=["one-tenant", "several-tenants"])
def test_a_tenants_redirect_url_is_refused_where_no_provider_may_take_it(
    tmp_path: Path, url: str, said: str, several: bool
) -> None:
    # Its own callback's path where the file names several tenants.
    own = url.replace("/auth/callback", "/auth/callback/globex") if several else url
    text = (
        GOOD.replace("https://globex-audit.example.com/auth/callback/globex", own)
        if several
        else _entry(redirect_url=own)
    )
    tenant = "globex" if several else "acme"
    name = "providers.toml" if several else "providers.json"
    with pytest.raises(SystemExit, match=f"tenant '{tenant}': key 'redirect_url' {said}"):
        providers(_settings(tmp_path, text, name=name))


# Issuer URLs no provider has: OpenID Connect Discovery 1.0 (section 2) makes
# the issuer an https URL with no query or fragment; a user and password
# would be sent to the provider with every discovery and key read (and said
# in its refusals), and no issuer a provider names back holds one.
_NOT_AN_ISSUER = [
    ("https://idp.example.com/oauth2?tenant=acme", "must have no query"),
    ("https://idp.example.com/?", "must have no query"),
    ("https://idp.example.com/oauth2#default", "must have no fragment"),
    ("https://idp.example.com#", "must have no fragment"),
    ("https://idp.example.com/x?a=1#b", "must have no fragment"),
    ("https://ops:hunter2@idp.example.com", "must have no user or password"),
    ("https://ops@idp.example.com/oauth2/default", "must have no user or password"),
]
_NOT_AN_ISSUER_IDS = [
    *("query", "empty-query", "fragment", "empty-fragment", "query-and-fragment"),
    *("user-and-password", "user"),
]


@pytest.mark.parametrize(("url", "said"), _NOT_AN_ISSUER, ids=_NOT_AN_ISSUER_IDS)
def test_an_issuer_url_is_refused_where_discovery_allows_none(
    tmp_path: Path, url: str, said: str
) -> None:
    single = {
        "SEALTRAIL_OIDC_ISSUER": url,
        "SEALTRAIL_OIDC_CLIENT_ID": "sealtrail",
        "SEALTRAIL_OIDC_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
        "SEALTRAIL_OIDC_REDIRECT_URL": "https://audit.example.com/auth/callback",
        "SEALTRAIL_OIDC_TENANT": "acme",
        "SEALTRAIL_OIDC_READER_GROUPS": "readers",
        "SEALTRAIL_CONSOLE_LISTEN": "127.0.0.1:8080",
    }
    with pytest.raises(SystemExit, match=f"^SEALTRAIL_OIDC_ISSUER {said}") as refused:
        Settings.load(single)
    assert "hunter2" not in str(refused.value)  # the URL is not said back, its password with it
    # ... and a tenant's of a providers file, named with its key.
    with pytest.raises(SystemExit, match=f"tenant 'acme': key 'issuer' {said}") as refused:
        providers(_settings(tmp_path, _entry(issuer=url), name="providers.json"))
    assert "hunter2" not in str(refused.value)
