"""A console sign-in through the identity provider (ADR 0140) that the
database cannot complete: the person is proven, but the token the callback
mints cannot be written, its table locked whole by another session (as
VACUUM FULL or ALTER TABLE lock it), on a database of the test's own. The
page says the sign-in could not be completed and to retry, answered 503
with a Retry-After; nothing is minted or recorded, and nothing of the
database's error reaches the page. Once the lock goes, the same browser
signs in.

The code's storage failing after the mint leaves no token either: the mint,
the session's row and the code's are one transaction."""

from __future__ import annotations

import contextlib
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


def _live_tokens(url: str) -> int:
    """The tenant's tokens that still work (not revoked, not expired)."""
    with psycopg.connect(url) as sql:
        row = sql.execute(
            "SELECT count(*) FROM api_tokens WHERE tenant_id = %s AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > now())",
            [TENANT],
        ).fetchone()
    assert row is not None
    return int(row[0])


@contextlib.contextmanager
def code_storage_blocked(url: str) -> Iterator[None]:
    """A one-time code cannot be stored: an expired row of the tenant, which
    storing a code removes first, held locked by another session (its lock
    outlasting the server's lock timeout), while the sign-ins under way,
    taken by their own digest, are not held up."""
    with psycopg.connect(url) as holder:
        key = holder.execute(
            "INSERT INTO console_sign_ins (tenant_id, digest, stage, expires_at, binding)"
            " VALUES (%s, sha256(gen_random_uuid()::text::bytea), 'begun',"
            " now() - interval '1 hour', sha256('b'::bytea)) RETURNING digest",
            [TENANT],
        ).fetchone()
        assert key is not None
        holder.commit()
        holder.execute(
            "SELECT FROM console_sign_ins WHERE tenant_id = %s AND digest = %s FOR UPDATE",
            [TENANT, key[0]],
        )
        try:
            yield
        finally:
            holder.rollback()
            holder.execute(
                "DELETE FROM console_sign_ins WHERE tenant_id = %s AND digest = %s",
                [TENANT, key[0]],
            )
            holder.commit()


def test_a_code_the_database_cannot_store_leaves_no_token(
    own: tuple[ServerThread, str],
) -> None:
    """Minted, then its code not stored: the token was never handed, and
    must not live on unused until its expiry (nor its session's row)."""
    server, url = own
    console = f"http://127.0.0.1:{server.service.console_port}"
    with httpx.Client(base_url=console, follow_redirects=False, timeout=DEADLINE) as browser:
        callback = to_callback(browser)
        live, before = _live_tokens(url), _minted(url)
        with code_storage_blocked(url):
            answer = browser.get(callback)
        assert answer.status_code == 503, answer.text
        assert "Your sign-in could not be completed" in answer.text
        for words in DATABASE_WORDS:
            assert words.lower() not in answer.text.lower(), words
        assert _live_tokens(url) == live, "a token no one was handed still works"
        assert _minted(url) == before, "a token no one was handed was kept"
        with psycopg.connect(url) as sql:
            sessions = sql.execute(
                "SELECT count(*) FROM console_sessions WHERE tenant_id = %s"
                " AND token_id NOT IN (SELECT token_id FROM api_tokens WHERE tenant_id = %s)",
                [TENANT, TENANT],
            ).fetchone()
        assert sessions == (0,), "a session's row outlived its token"

        # The row let go, a sign-in begun again completes.
        back = browser.get(to_callback(browser))
        assert back.status_code == 303, back.text
