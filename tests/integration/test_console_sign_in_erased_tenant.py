"""A console that signs people in (ADR 0140) to a tenant that was erased:
erasure is permanent, so the person is told so (410 Gone, a page that says
this organisation's audit log was erased), not that the database failed and
to try again (503). Nothing is minted, nothing says to retry, and nothing of
the database's words reaches the page; whether the erasure came before the
sign-in began or while the person was at the identity provider."""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.conftest import ServerThread
from tests.integration.test_console_sign_in_database_fails import DATABASE_WORDS
from tests.integration.test_erasure_receipts import erased
from tests.openid_provider import OpenIdProvider, console_signing_in_through, to_callback


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        yield running


@pytest.fixture
def signing_in(
    migrated_database_url: str, provider: OpenIdProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, str, httpx.Client]]:
    """A console signing people in to a tenant of its own (to be erased),
    and a browser at it."""
    tenant = f"t-oidc-erased-{uuid.uuid4().hex[:8]}"
    with console_signing_in_through(
        provider, migrated_database_url, tmp_path_factory.mktemp("erased"), tenant=tenant
    ) as running:
        console = f"http://127.0.0.1:{running.service.console_port}"
        with httpx.Client(base_url=console, follow_redirects=False, timeout=20) as browser:
            yield running, tenant, browser


def _says_erased(answer: httpx.Response) -> None:
    assert answer.status_code == 410, answer.text
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "Retry-After" not in answer.headers
    said = html.unescape(answer.text)
    assert "This organisation's audit log was erased" in said
    assert "cannot be used again" in said
    # No way back into a sign-in that cannot succeed, nor a word of trying again.
    assert "/auth/login" not in said
    assert "again in" not in said and "try again" not in said.lower()
    for words in (*DATABASE_WORDS, "database", "tenant_erasures", "FailedPrecondition"):
        assert words.lower() not in said.lower(), words


def _nothing_minted(sql: psycopg.Connection[object], tenant: str) -> None:
    row = sql.execute(
        "SELECT (SELECT count(*) FROM api_tokens WHERE tenant_id = %s),"
        " (SELECT count(*) FROM console_sign_ins WHERE tenant_id = %s),"
        " (SELECT count(*) FROM console_sessions WHERE tenant_id = %s)",
        [tenant, tenant, tenant],
    ).fetchone()
    assert row == (0, 0, 0)


def test_a_sign_in_to_an_erased_tenant_is_told_so_at_once(
    signing_in: tuple[ServerThread, str, httpx.Client], sql: psycopg.Connection[object]
) -> None:
    """Refused at /auth/login: not sent to the provider for nothing."""
    server, tenant, browser = signing_in
    erased(server, tenant)
    _says_erased(browser.get("/auth/login"))
    _nothing_minted(sql, tenant)


def test_a_tenant_erased_during_a_sign_in_is_told_so_at_the_callback(
    signing_in: tuple[ServerThread, str, httpx.Client], sql: psycopg.Connection[object]
) -> None:
    server, tenant, browser = signing_in
    callback = to_callback(browser)
    erased(server, tenant)
    _says_erased(browser.get(callback))
    _nothing_minted(sql, tenant)
