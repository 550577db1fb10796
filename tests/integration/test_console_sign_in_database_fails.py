"""A console sign-in through the identity provider (ADR 0140) that the
database cannot complete: the person is proven, but the token the callback
mints cannot be written, its table locked whole by another session (as
VACUUM FULL or ALTER TABLE lock it), on a database of the test's own. The
page says the sign-in could not be completed and to retry, answered 503
with a Retry-After; nothing is minted or recorded, and nothing of the
database's error reaches the page. Once the lock goes, the same browser
signs in."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.conftest import ServerThread, database_of_its_own
from tests.integration.test_locked_tables import locked
from tests.openid_provider import OpenIdProvider, console_signing_in_through, to_callback

TENANT = f"t-oidc-db-{uuid.uuid4().hex[:8]}"
# Far past the lock timeout: only a sign-in that waits for the lock's end reaches it.
DEADLINE = 30.0
# Words of PostgreSQL's that a page must never carry.
DATABASE_WORDS = ("lock timeout", "LockNotAvailable", "55P03", "api_tokens", "canceling statement")


@pytest.fixture(scope="module")
def own(
    migrated_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, str]]:
    with (
        OpenIdProvider() as provider,
        database_of_its_own(migrated_database_url, "sign_in_fails") as url,
        console_signing_in_through(
            provider, url, tmp_path_factory.mktemp("oidc"), tenant=TENANT
        ) as running,
    ):
        yield running, url


def _minted(url: str) -> tuple[int, int]:
    """The tenant's tokens, and its records of a token's creation."""
    with psycopg.connect(url) as sql:
        row = sql.execute(
            "SELECT (SELECT count(*) FROM api_tokens WHERE tenant_id = %s),"
            " (SELECT count(*) FROM events WHERE tenant_id = %s"
            "  AND action = 'api_token.created')",
            [TENANT, TENANT],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_a_sign_in_the_database_cannot_complete_says_to_retry(
    own: tuple[ServerThread, str],
) -> None:
    server, url = own
    console = f"http://127.0.0.1:{server.service.console_port}"
    with httpx.Client(base_url=console, follow_redirects=False, timeout=DEADLINE) as browser:
        callback = to_callback(browser)
        before = _minted(url)
        with locked(url, "api_tokens"):
            began = time.monotonic()
            answer = browser.get(callback)
            waited = time.monotonic() - began
        assert answer.status_code == 503, answer.text
        assert waited < DEADLINE / 2, "the sign-in waited for the lock to go"
        assert answer.headers["Content-Type"].startswith("text/html")
        assert int(answer.headers["Retry-After"]) >= 1
        assert "Your sign-in could not be completed" in answer.text
        assert "sign in again in a few seconds" in answer.text
        assert '<a href="/auth/login">' in answer.text
        for words in DATABASE_WORDS:
            assert words.lower() not in answer.text.lower(), words
        assert _minted(url) == before, "a sign-in that could not complete minted a token"

        # The lock gone, a sign-in begun again completes.
        back = browser.get(to_callback(browser))
        assert back.status_code == 303, back.text
        tokens, records = _minted(url)
        assert (tokens, records) == (before[0] + 1, before[1] + 1)
