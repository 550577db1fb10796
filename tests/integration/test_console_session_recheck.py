"""Console sessions follow the identity provider (ADR 0140, addendum
2026-12-07): a session a sign-in began is checked again with the provider,
by its refresh token, at the browser's first call after
SEALTRAIL_OIDC_RECHECK_SECONDS; a person removed there, or in none of the
console's groups any more, or given another role, is signed out at once, the
token revoked with a record saying the identity provider ended it. A real
provider (tests/openid_provider.py) and the real console; "after the
interval" is made so by moving the session's next check into the past in its
row (the database's clock decides it), not by waiting."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from sealtrail import AuditClient, build_event
from tests.conftest import ServerThread
from tests.lock_waits import until, until_blocked
from tests.openid_provider import (
    Issue,
    OpenIdProvider,
    console_signing_in_through,
    events_of,
    make_recheck_due,
    reads_of,
    signed_in,
)

TENANT = f"t-recheck-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        yield running


@pytest.fixture(scope="module")
def server_of_console(
    migrated_database_url: str, provider: OpenIdProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    with console_signing_in_through(
        provider, migrated_database_url, tmp_path_factory.mktemp("recheck"), tenant=TENANT
    ) as running:
        yield running


@pytest.fixture
def browser(server_of_console: ServerThread) -> Iterator[httpx.Client]:
    console = f"http://127.0.0.1:{server_of_console.service.console_port}"
    with httpx.Client(base_url=console, follow_redirects=False, timeout=20) as client:
        yield client


@pytest.fixture(autouse=True)
def issue_as_usual(provider: OpenIdProvider) -> None:
    provider.issue = Issue()


def _due(sql: psycopg.Connection[Any], minted: dict[str, Any]) -> None:
    make_recheck_due(sql, TENANT, minted["token"])


def _revoked(sql: psycopg.Connection[Any], token_id: str) -> bool:
    row = sql.execute(
        "SELECT revoked_at IS NOT NULL FROM api_tokens WHERE token_id = %s", [token_id]
    ).fetchone()
    assert row is not None
    return bool(row[0])


def _search(browser: httpx.Client, token: str) -> httpx.Response:
    return browser.get(
        "/api/events", params={"actions": "x.y"}, headers={"Authorization": f"Bearer {token}"}
    )


def _ended_record(
    browser: httpx.Client, server_of_console: ServerThread, token_id: str
) -> dict[str, Any]:
    admin = server_of_console.token(TENANT, "admin")
    (revoked,) = [
        event
        for event in events_of(browser, admin, "api_token.revoked")
        if event["resource"]["id"] == token_id
    ]
    return revoked


def test_a_person_removed_at_the_provider_is_signed_out_at_the_next_recheck(
    browser: httpx.Client,
    provider: OpenIdProvider,
    server_of_console: ServerThread,
    sql: psycopg.Connection[Any],
) -> None:
    minted = signed_in(browser)
    token = minted["token"]
    assert _search(browser, token).status_code == 200

    provider.issue.refresh = "invalid_grant"  # removed, disabled, or the session revoked
    _due(sql, minted)
    refused = _search(browser, token)
    assert refused.status_code == 401
    assert "the identity provider ended this session" in refused.json()["error"]
    assert refused.json()["reason"] == "IDENTITY_PROVIDER_ENDED_SESSION"
    assert _revoked(sql, minted["token_id"])
    # Refused by the API itself from now on, whatever the console does.
    assert (
        browser.get("/api/signin", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )

    record = _ended_record(browser, server_of_console, minted["token_id"])
    assert record["actor"]["type"] == "ACTOR_TYPE_USER"
    assert record["actor"]["id"] == "alice@example.com"
    assert record["details"]["ended_by"] == "identity_provider"
    assert record["details"]["reason"] == "refresh_refused"
    assert record["details"]["role"] == "reader"


def _session(sql: psycopg.Connection[Any], token_id: str) -> dict[str, Any] | None:
    cursor = sql.execute(
        "SELECT failures, next_check_at > now() AS later, sealed, s::text AS whole"
        " FROM console_sessions AS s WHERE tenant_id = %s AND token_id = %s",
        [TENANT, token_id],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([column.name for column in cursor.description or ()], row, strict=True))


def test_a_session_not_due_is_not_rechecked(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    minted = signed_in(browser)
    provider.issue.refresh = "invalid_grant"
    before = provider.refreshes
    assert _search(browser, minted["token"]).status_code == 200
    assert provider.refreshes == before
    assert not _revoked(sql, minted["token_id"])


def test_a_person_still_in_the_same_role_goes_on_with_the_refresh_token_renewed(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    minted = signed_in(browser)
    first = _session(sql, minted["token_id"])
    assert first is not None and first["later"]
    before = provider.refreshes
    _due(sql, minted)
    assert _search(browser, minted["token"]).status_code == 200
    assert provider.refreshes == before + 1
    renewed = _session(sql, minted["token_id"])
    assert renewed is not None and renewed["later"] and renewed["failures"] == 0
    # The provider rotates refresh tokens: the new one is kept (sealed anew).
    assert renewed["sealed"] != first["sealed"]
    # Not due again until the interval has passed once more.
    assert _search(browser, minted["token"]).status_code == 200
    assert provider.refreshes == before + 1
    # And the renewed refresh token is the one the next recheck uses.
    _due(sql, minted)
    assert _search(browser, minted["token"]).status_code == 200
    assert provider.refreshes == before + 2
    assert not _revoked(sql, minted["token_id"])


@pytest.mark.parametrize(
    ("groups", "reason"),
    [(["audit-admins"], "role_changed"), (["audit-exporters"], "role_changed"), ([], "no_group")],
)
def test_a_person_whose_groups_changed_is_signed_out(
    browser: httpx.Client,
    provider: OpenIdProvider,
    server_of_console: ServerThread,
    sql: psycopg.Connection[Any],
    groups: list[str],
    reason: str,
) -> None:
    """Another role (up or down) is a new sign-in's to give: the session
    ends, as it does for a person in no admitted group any more."""
    minted = signed_in(browser)
    provider.issue.groups = groups
    _due(sql, minted)
    refused = _search(browser, minted["token"])
    assert refused.status_code == 401
    assert refused.json()["reason"] == "IDENTITY_PROVIDER_ENDED_SESSION"
    assert _revoked(sql, minted["token_id"])
    assert _session(sql, minted["token_id"]) is None
    record = _ended_record(browser, server_of_console, minted["token_id"])
    assert record["details"]["reason"] == reason
    assert record["details"]["groups"] == groups


def test_a_renewed_id_token_of_another_sign_in_ends_the_session(
    browser: httpx.Client,
    provider: OpenIdProvider,
    server_of_console: ServerThread,
    sql: psycopg.Connection[Any],
) -> None:
    """A refreshed id_token may name no nonce; one it names must be the
    sign-in's (OpenID Connect Core 1.0, 12.2)."""
    minted = signed_in(browser)
    provider.issue.refresh_nonce = "not-this-sign-ins"
    _due(sql, minted)
    assert _search(browser, minted["token"]).status_code == 401
    record = _ended_record(browser, server_of_console, minted["token_id"])
    assert record["details"]["reason"] == "not_verified"


def test_a_provider_down_keeps_the_session_until_the_bound(
    browser: httpx.Client,
    provider: OpenIdProvider,
    server_of_console: ServerThread,
    sql: psycopg.Connection[Any],
) -> None:
    minted = signed_in(browser)
    provider.issue.refresh = "unavailable"
    _due(sql, minted)
    before = provider.refreshes
    assert _search(browser, minted["token"]).status_code == 200  # a transient failure
    assert provider.refreshes == before + 1
    failed = _session(sql, minted["token_id"])
    assert failed is not None and failed["failures"] == 1 and failed["later"]

    # Unconfirmed for three intervals (15 minutes): the next failed recheck ends it.
    sql.execute(
        "UPDATE console_sessions SET confirmed_at = now() - interval '901 seconds'"
        " WHERE tenant_id = %s AND token_id = %s",
        [TENANT, minted["token_id"]],
    )
    _due(sql, minted)
    refused = _search(browser, minted["token"])
    assert refused.status_code == 401
    assert "has not confirmed the person" in refused.json()["error"]
    assert _revoked(sql, minted["token_id"])
    record = _ended_record(browser, server_of_console, minted["token_id"])
    assert record["details"]["reason"] == "unconfirmed"


def test_a_provider_back_in_time_resets_the_failures(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    minted = signed_in(browser)
    provider.issue.refresh = "unavailable"
    _due(sql, minted)
    assert _search(browser, minted["token"]).status_code == 200
    provider.issue.refresh = "grant"
    _due(sql, minted)
    assert _search(browser, minted["token"]).status_code == 200
    session = _session(sql, minted["token_id"])
    assert session is not None and session["failures"] == 0


def test_the_refresh_token_is_never_kept_in_clear(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    known = set(provider.refresh_tokens)
    minted = signed_in(browser)
    [refresh_token] = set(provider.refresh_tokens) - known
    session = _session(sql, minted["token_id"])
    assert session is not None
    for secret in (refresh_token, minted["token"]):
        assert secret not in session["whole"]
        assert secret.encode().hex() not in session["whole"]
        assert secret.encode() not in bytes(session["sealed"])


def test_signing_out_forgets_the_session(
    browser: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    minted = signed_in(browser)
    assert _session(sql, minted["token_id"]) is not None
    auth = {"Authorization": f"Bearer {minted['token']}"}
    assert browser.post("/auth/signout", headers=auth).json() == {"ok": True}
    assert _session(sql, minted["token_id"]) is None


def test_without_a_refresh_token_a_session_lasts_the_recheck_bound(
    browser: httpx.Client, provider: OpenIdProvider, sql: psycopg.Connection[Any]
) -> None:
    """A provider that gives no refresh token cannot be asked again: the
    session lasts three intervals (15 minutes), not SEALTRAIL_OIDC_SESSION_SECONDS."""
    provider.issue.refresh_tokens = False
    minted = signed_in(browser)
    assert _session(sql, minted["token_id"]) is None
    row = sql.execute(
        "SELECT expires_at - now() FROM api_tokens WHERE token_id = %s", [minted["token_id"]]
    ).fetchone()
    assert row is not None
    assert 0 < row[0].total_seconds() <= 900  # not the session's 3600


def test_recheck_zero_is_the_old_behaviour(
    migrated_database_url: str,
    provider: OpenIdProvider,
    sql: psycopg.Connection[Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with console_signing_in_through(
        provider,
        migrated_database_url,
        tmp_path_factory.mktemp("no-recheck"),
        tenant=TENANT,
        oidc_recheck_seconds=0,
    ) as running:
        console = f"http://127.0.0.1:{running.service.console_port}"
        with httpx.Client(base_url=console, follow_redirects=False, timeout=20) as browser:
            login = browser.get("/auth/login")
            assert "offline_access" not in login.headers["Location"]
            minted = signed_in(browser)
            assert _session(sql, minted["token_id"]) is None
            provider.issue.refresh = "invalid_grant"
            before = provider.refreshes
            assert _search(browser, minted["token"]).status_code == 200
            assert provider.refreshes == before
            # Its reads say on whose behalf, with no session kept to recheck.
            queried = reads_of(sql, TENANT, minted["token_id"])["audit_log.queried"]
            assert queried["details"]["on_behalf_of"] == "alice@example.com"
            row = sql.execute(
                "SELECT expires_at - now() FROM api_tokens WHERE token_id = %s",
                [minted["token_id"]],
            ).fetchone()
            assert row is not None and row[0].total_seconds() > 900  # the whole session


@pytest.fixture
def updates_counted(sql: psycopg.Connection[Any]) -> Iterator[Callable[[], int]]:
    """The UPDATE statements run on console_sessions from now on (a
    statement-level trigger, so an UPDATE that matched no row counts too)."""
    sql.execute("CREATE TABLE recheck_updates_counted (at timestamptz)")
    sql.execute(
        "CREATE FUNCTION recheck_update_counted() RETURNS trigger LANGUAGE plpgsql"
        " SECURITY DEFINER SET search_path = public AS"
        " $$ BEGIN INSERT INTO recheck_updates_counted VALUES (now()); RETURN NULL; END $$"
    )
    sql.execute(
        "CREATE TRIGGER recheck_update_counted AFTER UPDATE ON console_sessions"
        " FOR EACH STATEMENT EXECUTE FUNCTION recheck_update_counted()"
    )

    def counted() -> int:
        row = sql.execute("SELECT count(*) FROM recheck_updates_counted").fetchone()
        assert row is not None
        return int(row[0])

    try:
        yield counted
    finally:
        sql.execute("DROP TRIGGER recheck_update_counted ON console_sessions")
        sql.execute("DROP FUNCTION recheck_update_counted()")
        sql.execute("DROP TABLE recheck_updates_counted")


def test_a_call_not_due_runs_no_update(
    browser: httpx.Client,
    server_of_console: ServerThread,
    provider: OpenIdProvider,
    sql: psycopg.Connection[Any],
    updates_counted: Callable[[], int],
) -> None:
    """What the process remembers of when a session is due spares the
    database a claim at each call; the database still decides when it is.
    A pasted API token (not named as a sign-in names its tokens) is never
    looked up for a session."""
    minted = signed_in(browser)
    pasted = server_of_console.token(TENANT, "reader")  # began no session
    for _ in range(3):
        assert _search(browser, minted["token"]).status_code == 200
        assert _search(browser, pasted).status_code == 200
    assert updates_counted() == 0
    before = updates_counted()
    for _ in range(3):
        assert _search(browser, minted["token"]).status_code == 200
        assert _search(browser, pasted).status_code == 200
    assert updates_counted() == before

    # Due: claimed (one UPDATE), rechecked (one more), then remembered again.
    provider.issue.refresh = "grant"
    refreshes = provider.refreshes
    _due(sql, minted)
    moved = updates_counted()  # the test's own UPDATE that made it due
    for _ in range(3):
        assert _search(browser, minted["token"]).status_code == 200
    assert provider.refreshes == refreshes + 1
    assert updates_counted() == moved + 2


def test_bearers_no_token_stands_for_cost_no_recheck(
    browser: httpx.Client, updates_counted: Callable[[], int]
) -> None:
    """The recheck runs for a token the API authenticates only: a caller
    sending made-up bearers costs it no statement (a claim each, before)."""
    before = updates_counted()
    for n in range(4):
        made_up = ("stk_" + uuid.uuid4().hex * 2, f"not-a-token-{n}")[n % 2]
        assert _search(browser, made_up).status_code == 401
    assert updates_counted() == before


# Seconds a stream is read for at most: past the heartbeat (5 s) at which it is checked.
STREAM_DEADLINE = 30.0


def _streamed_lines(stream: httpx.Response) -> Iterator[dict[str, Any]]:
    """The stream's lines (heartbeats left out), read for STREAM_DEADLINE at most."""
    deadline = time.monotonic() + STREAM_DEADLINE
    for line in stream.iter_lines():
        assert time.monotonic() < deadline, "the stream went on past its deadline"
        if line.strip():
            yield json.loads(line)


def test_an_open_live_stream_ends_when_the_provider_ends_its_session(
    browser: httpx.Client,
    provider: OpenIdProvider,
    server_of_console: ServerThread,
    sql: psycopg.Connection[Any],
    updates_counted: Callable[[], int],
) -> None:
    """Rechecked while it is open, not only as it starts: its last line says
    the provider ended the session, as an API call's 401 does, and costs no
    statement per event streamed until the session is due."""
    minted = signed_in(browser)
    auth = {"Authorization": f"Bearer {minted['token']}"}
    recorder = server_of_console.token(TENANT, "recorder")
    with (
        browser.stream("GET", "/api/stream", params={"actions": "live.x"}, headers=auth) as live,
        AuditClient(server_of_console.target, token=recorder) as client,
    ):
        assert live.status_code == 200
        lines = _streamed_lines(live)
        before = updates_counted()
        for n in range(3):
            client.record(action="live.x", actor_id=f"u{n}")
            assert next(lines)["actor"]["id"] == f"u{n}"
        assert updates_counted() == before, "a statement per streamed event"

        provider.issue.refresh = "invalid_grant"
        _due(sql, minted)
        last = next(line for line in lines if "error" in line)
        assert last["reason"] == "IDENTITY_PROVIDER_ENDED_SESSION"
        assert last["code"] == "UNAUTHENTICATED"
        assert "the identity provider ended this session" in last["error"]
        assert list(lines) == []  # the stream ended with it
    assert _revoked(sql, minted["token_id"])


# The lock one issuer of a tenant's checkpoints holds (integrity/checkpointer.py),
# taken as the session's own: an export issues its checkpoint after it is recorded,
# before it reads a row.
ISSUER_LOCK = "hashtextextended(%s, 7)"


def _exported(browser: httpx.Client, auth: dict[str, str]) -> list[dict[str, Any]]:
    """An export's lines (the console's NDJSON), read to its end."""
    params = {"format": "csv", "actions": "recheck.exported"}
    with browser.stream("GET", "/api/export", params=params, headers=auth) as answer:
        assert answer.status_code == 200, answer.read()
        return list(_streamed_lines(answer))


def test_an_export_under_way_ends_when_the_provider_ends_its_session(
    browser: httpx.Client,
    provider: OpenIdProvider,
    server_of_console: ServerThread,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
    updates_counted: Callable[[], int],
) -> None:
    """Rechecked at each of its messages once due, as Live is: an export begun
    just before its session fell due went on to its manifest (a download of
    hours, after the provider ended the session). Here it falls due once its
    chunks have come, while the export waits to end (its erasure check held
    up); the rest is not sent, and its last line says why, with no manifest."""
    with AuditClient(
        server_of_console.target, token=server_of_console.token(TENANT, "recorder")
    ) as client:
        for batch in range(4):  # about 200 KB of CSV: chunks of 64 KiB before its end
            client.record_batch(
                [
                    build_event(
                        action="recheck.exported",
                        actor_id=f"u{batch}-{n}",
                        details={"note": "x" * 300},
                    )
                    for n in range(100)
                ]
            )
    provider.issue.groups = ["audit-exporters"]
    minted = signed_in(browser)
    auth = {"Authorization": f"Bearer {minted['token']}"}
    before = updates_counted()
    with (
        psycopg.connect(migrated_database_url, autocommit=True) as holder,
        ThreadPoolExecutor(1) as pool,
    ):
        holder.execute(f"SELECT pg_advisory_lock({ISSUER_LOCK})", [TENANT])
        try:
            export = pool.submit(_exported, browser, auth)
            until_blocked(holder, export, waiter="sealtrail", running="SELECT pg_advisory")
            with holder.transaction():
                # Its rows read and sent, the export waits here to end.
                holder.execute("LOCK TABLE tenant_erasures IN ACCESS EXCLUSIVE MODE")
                holder.execute(f"SELECT pg_advisory_unlock({ISSUER_LOCK})", [TENANT])
                until_blocked(holder, export, waiter="sealtrail", running="SELECT erased_at FROM")
                assert updates_counted() == before, "a statement per chunk not due"
                provider.issue.refresh = "invalid_grant"
                _due(sql, minted)
        finally:
            holder.execute("SELECT pg_advisory_unlock_all()")
        lines = export.result(timeout=STREAM_DEADLINE)
    *chunks, last = lines
    assert chunks and all("chunk" in line for line in chunks), [list(c) for c in chunks]
    assert "manifest" not in last, "the export went on to its end"
    assert last["reason"] == "IDENTITY_PROVIDER_ENDED_SESSION", last
    assert last["code"] == "UNAUTHENTICATED"
    assert "the identity provider ended this session" in last["error"]
    assert _revoked(sql, minted["token_id"])


# A token's lookup (store/tokens.py find_principal), as pg_stat_activity shows it.
LOOKING_UP = "SELECT tenant_id, token_id, role, name, revoked_at"


def _lookups_held(holder: psycopg.Connection[Any]) -> set[tuple[int, Any]]:
    """The token lookups waiting for a lock `holder` holds, each (its
    session, when its statement began): one ended and another begun differ."""
    holder.execute("SELECT pg_stat_clear_snapshot()")
    return set(
        holder.execute(
            "SELECT pid, query_start FROM pg_stat_activity"
            " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid)) AND starts_with(query, %s)",
            [LOOKING_UP],
        ).fetchall()
    )


def test_a_live_stream_whose_first_lookup_failed_is_rechecked_as_it_runs(
    browser: httpx.Client,
    provider: OpenIdProvider,
    server_of_console: ServerThread,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    """The console's own lookup of the token failing for a moment (the
    database's, not the token's fault) while the API's, just after, found
    it: the stream opened with no session to recheck, and ran for hours
    after the provider ended it. Here the table of tokens is held until the
    console's lookup gives up (its lock timeout), then let go as the API's
    waits."""
    minted = signed_in(browser)
    auth = {"Authorization": f"Bearer {minted['token']}"}
    recorder = server_of_console.token(TENANT, "recorder")
    opened = threading.Event()

    def live() -> list[dict[str, Any]]:
        params = {"actions": "live.looked_up", "after_seq": str(warm_up.event.seq)}
        with browser.stream("GET", "/api/stream", params=params, headers=auth) as answer:
            assert answer.status_code == 200, answer.read()
            read = []
            for line in _streamed_lines(answer):
                read.append(line)
                opened.set()
                if "error" in line:
                    break
            return read

    with (
        psycopg.connect(migrated_database_url, autocommit=True) as holder,
        ThreadPoolExecutor(1) as pool,
        AuditClient(server_of_console.target, token=recorder) as client,
    ):
        # u1 is the stream's first message however late it opens.
        warm_up = client.record(action="live.warm_up", actor_id="u0")
        client.record(action="live.looked_up", actor_id="u1")
        with holder.transaction():
            holder.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
            stream = pool.submit(live)
            until(lambda: bool(_lookups_held(holder)), stream)
            first = _lookups_held(holder)
            # The console's gave up (Unavailable); the API's own lookup waits.
            until(lambda: bool(_lookups_held(holder) - first), stream)
        assert opened.wait(STREAM_DEADLINE), stream.result(timeout=60)

        provider.issue.refresh = "invalid_grant"
        _due(sql, minted)
        client.record(action="live.looked_up", actor_id="u2")  # a message: it is checked
        lines = stream.result(timeout=2 * STREAM_DEADLINE)  # its own deadline first
    assert lines[0]["actor"]["id"] == "u1"
    assert lines[-1]["reason"] == "IDENTITY_PROVIDER_ENDED_SESSION", lines[-1]
    assert "the identity provider ended this session" in lines[-1]["error"]
    assert _revoked(sql, minted["token_id"])
