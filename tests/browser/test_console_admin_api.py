"""The console's admin API without a browser: tokens, sinks, alert rules and
the legal hold changed through the same RPCs as the CLI's, with the browser's
token (an admin's succeeds and is recorded with the browser's address; a
reader's is refused by the API), bad input named, a stale etag refused, and
changes only by JSON with a bearer token, from the console's own origin."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest

from sealtrail import (
    AuditClient,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
    verify_erasure_receipt,
)
from sealtrail.tlog import Signer, generate_signer_key
from sealtrail.v1 import audit_service_pb2_grpc, event_pb2, integrity_pb2
from sealtrail_server.api.callers import CONSOLE_KEY_HEADER, ROLE_HEADER
from sealtrail_server.console.server import receipt_check
from tests.conftest import SIGNING_KEY, ServerThread, errors_logged
from tests.http_endpoint import Reply, endpoint

BROWSER = "Mozilla/5.0 (console admin test)"


def send(
    url: str,
    *,
    method: str = "GET",
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
    **headers: str,
) -> tuple[int, Any]:
    """Status and JSON answer of a request (`body` sent as JSON, `raw` as is)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent = {"User-Agent": BROWSER, **headers}
    if body is not None and "Content-Type" not in sent:
        sent["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            text = error.read()
            return error.code, json.loads(text) if text.startswith(b"{") else text


@pytest.fixture
def api(console_url: str) -> str:
    return console_url + "api/"


@pytest.fixture
def admin(console_server: ServerThread, tenant: str) -> str:
    return console_server.token(tenant, "admin")


@pytest.fixture
def reader(console_server: ServerThread, tenant: str) -> str:
    return console_server.token(tenant, "reader")


@pytest.fixture
def client(console_server: ServerThread, admin: str) -> Iterator[AuditClient]:
    with AuditClient(console_server.target, token=admin) as made:
        yield made


def recorded(client: AuditClient, action: str) -> event_pb2.Event:
    """The newest event of `action`, which must exist."""
    return next(iter(client.query(build_filter(actions=action), page_size=1)))


def from_the_browser(event: event_pb2.Event) -> bool:
    return (event.context.ip, event.context.user_agent) == ("127.0.0.1", BROWSER)


def webhook(client: AuditClient, name: str = "siem") -> dict[str, Any]:
    sink = build_sink(
        name,
        "webhook",
        url="http://127.0.0.1:9/hook",
        secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
        filter=build_filter(actions="doc.*", categories="data_access"),
        paused=True,
    )
    return {"id": client.create_sink(sink).sink.id}


def test_behind_a_trusted_proxy_a_change_is_recorded_with_the_browser_it_forwards_for(
    migrated_database_url: str, tenant: str
) -> None:
    """Behind a reverse proxy the console's TCP peer is the proxy; with
    SEALTRAIL_TRUSTED_PROXIES the record names the browser the proxy
    forwards for (the nearest address it did not add itself)."""
    server = ServerThread(
        migrated_database_url, console_listen="127.0.0.1:0", trusted_proxies="127.0.0.1"
    )
    try:
        admin = server.token(tenant, "admin")
        api = f"http://127.0.0.1:{server.service.console_port}/api/"
        status, created = send(
            api + "tokens",
            method="POST",
            token=admin,
            body={"role": "reader", "name": "behind the proxy"},
            **{"X-Forwarded-For": "203.0.113.9, 198.51.100.7"},
        )
        assert status == 200, created
        with AuditClient(server.target, token=admin) as client:
            assert recorded(client, "api_token.created").context.ip == "198.51.100.7"
    finally:
        server.close()


def test_signin_says_what_the_token_may_do(api: str, admin: str, reader: str) -> None:
    """The page shows its admin area to an admin only; a reader learns its
    role without a refused call recorded in the log on each sign-in."""
    assert send(api + "signin", token=admin) == (200, {"ok": True, "role": "admin"})
    assert send(api + "signin", token=reader) == (200, {"ok": True, "role": "reader"})


def test_an_admin_creates_lists_and_revokes_a_token(
    api: str, admin: str, client: AuditClient
) -> None:
    expiry = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    status, created = send(
        api + "tokens",
        method="POST",
        token=admin,
        body={"role": "reader", "name": "auditor laptop", "expire_time": expiry.isoformat()},
    )
    assert status == 200, created
    secret, token = created["secret"], created["token"]
    assert secret.startswith("stk_") and token["role"] == "ROLE_READER"
    assert token["name"] == "auditor laptop" and token["expire_time"].startswith(
        expiry.strftime("%Y-%m-%dT%H:%M:%S")
    )
    assert send(api + "events", token=secret)[0] == 200  # the secret works
    assert from_the_browser(recorded(client, "api_token.created"))

    status, listed = send(api + "tokens", token=admin)
    assert status == 200 and listed["next_page_token"] == ""
    [mine] = [t for t in listed["tokens"] if t["token_id"] == token["token_id"]]
    assert "secret" not in mine and "revoke_time" not in mine

    status, revoked = send(
        api + f"tokens/{token['token_id']}/revoke", method="POST", token=admin, body={}
    )
    assert status == 200 and "revoke_time" in revoked["token"] and revoked["event_id"]
    assert from_the_browser(recorded(client, "api_token.revoked"))
    listed = send(api + "tokens", token=admin)[1]
    [mine] = [t for t in listed["tokens"] if t["token_id"] == token["token_id"]]
    assert "revoke_time" in mine


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "owner", "name": "x"}, "role"),
        ({"name": "x"}, "role"),
        ({"role": "reader", "name": 7}, "name"),
        ({"role": "reader", "name": "x", "expire_time": "next week"}, "expire_time"),
        ({"role": "reader", "name": "x", "expire_time": "2001-01-01T00:00:00Z"}, "expire_time"),
        ({"role": "reader", "name": "x" * 300}, "name"),
    ],
)
def test_a_token_asked_for_wrongly_is_refused_naming_the_field(
    api: str, admin: str, body: dict[str, Any], field: str
) -> None:
    status, answer = send(api + "tokens", method="POST", token=admin, body=body)
    assert status == 400 and field in answer["error"], answer


def test_a_reader_may_change_nothing(
    api: str, reader: str, client: AuditClient, console_server: ServerThread
) -> None:
    """The console asks the API with the browser's token: the API refuses."""
    sink = webhook(client)
    rule_id = client.create_alert_rule(
        build_alert_rule("any login", "match", filter=build_filter(actions="user.login"))
    ).rule.id
    for method, path, body in (
        ("GET", "tokens", None),
        ("POST", "tokens", {"role": "admin", "name": "mine now"}),
        ("POST", f"tokens/{client.list_tokens()[0].token_id}/revoke", {}),
        ("GET", "sinks", None),
        ("POST", "sinks", {"sink": {"name": "mine", "chat": {"url": "http://127.0.0.1:9/x"}}}),
        ("PATCH", f"sinks/{sink['id']}", {"paused": False, "etag": '"x"'}),
        ("DELETE", f"sinks/{sink['id']}", {"etag": '"x"'}),
        ("GET", "alert-rules", None),
        ("PATCH", f"alert-rules/{rule_id}", {"disabled": True, "etag": '"x"'}),
        ("DELETE", f"alert-rules/{rule_id}", {"etag": '"x"'}),
        ("GET", "retention", None),
        ("PUT", "legal-hold", {"on": True, "reason": "mine", "etag": '"x"'}),
    ):
        status, answer = send(api + path, method=method, token=reader, body=body)
        assert (status, answer["code"]) == (403, "PERMISSION_DENIED"), (method, path, answer)
    assert [s.name for s in client.list_sinks()] == ["siem"] and len(client.list_alert_rules()) == 1
    assert not client.get_retention_policy().legal_hold.on


def test_an_admin_pauses_resumes_and_deletes_a_sink_as_last_read(
    api: str, admin: str, client: AuditClient
) -> None:
    sink_id = webhook(client)["id"]
    status, listed = send(api + "sinks", token=admin)
    assert status == 200
    [sink] = listed["sinks"]
    assert (sink["name"], sink["paused"], sink["webhook"]["url"]) == (
        "siem",
        True,
        "http://127.0.0.1:9/hook",
    )
    assert not sink["webhook"]["secrets"] and sink["webhook"]["secret_hints"]  # hints only
    read = sink["etag"]

    status, resumed = send(
        api + f"sinks/{sink_id}", method="PATCH", token=admin, body={"paused": False, "etag": read}
    )
    assert status == 200 and resumed["sink"]["paused"] is False, resumed
    assert resumed["sink"]["etag"] != read
    assert from_the_browser(recorded(client, "sink.updated"))
    assert client.get_sink(sink_id).webhook.url == "http://127.0.0.1:9/hook"  # only `paused`

    # A page that still shows the sink as first read cannot undo the change.
    status, stale = send(
        api + f"sinks/{sink_id}", method="PATCH", token=admin, body={"paused": True, "etag": read}
    )
    assert (status, stale["code"], stale["reason"]) == (409, "ABORTED", "ETAG_MISMATCH")
    assert not client.get_sink(sink_id).paused
    status, stale = send(
        api + f"sinks/{sink_id}", method="DELETE", token=admin, body={"etag": read}
    )
    assert (status, stale["reason"]) == (409, "ETAG_MISMATCH")

    current = resumed["sink"]["etag"]
    status, paused = send(
        api + f"sinks/{sink_id}",
        method="PATCH",
        token=admin,
        body={"paused": True, "etag": current},
    )
    assert status == 200 and paused["sink"]["paused"] is True
    status, deleted = send(
        api + f"sinks/{sink_id}",
        method="DELETE",
        token=admin,
        body={"etag": paused["sink"]["etag"]},
    )
    assert status == 200 and deleted["event_id"]
    assert from_the_browser(recorded(client, "sink.deleted"))
    assert send(api + "sinks", token=admin)[1]["sinks"] == []


def test_an_admin_creates_a_sink_from_the_apis_own_message(
    api: str, admin: str, client: AuditClient
) -> None:
    """The body is the API's Sink as JSON: every kind and field the API
    knows, no second definition of them to drift."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    sink = {
        "name": "hooks",
        "webhook": {"url": "http://127.0.0.1:9/hook", "secrets": [secret]},
        "filter": {"actions": ["doc.*"], "min_severity": "SEVERITY_WARNING"},
        "format": "PAYLOAD_FORMAT_OCSF",
        "paused": True,
    }
    status, created = send(
        api + "sinks", method="POST", token=admin, body={"sink": sink, "from_beginning": True}
    )
    assert status == 200, created
    assert created["sink"]["webhook"]["secret_hints"] == [secret[-4:]]
    assert secret not in json.dumps(created)
    assert from_the_browser(recorded(client, "sink.created"))
    [stored] = client.list_sinks()
    assert (stored.name, stored.paused, list(stored.filter.actions)) == ("hooks", True, ["doc.*"])
    assert stored.state.cursor_seq == 0  # from the beginning

    for body, said in (
        ({"sink": "hooks"}, "sink:"),
        ({"sink": {**sink, "colour": "red"}}, "sink:"),
        ({"sink": {**sink, "format": "PDF"}}, "sink:"),
        ({"sink": sink, "from_beginning": "yes"}, "from_beginning:"),
        ({"sink": {**sink, "webhook": {"url": "http://127.0.0.1:9/hook"}}}, "secrets"),
        ({"sink": {**sink, "name": ""}}, "name"),
    ):
        status, answer = send(api + "sinks", method="POST", token=admin, body=body)
        assert status == 400 and said in answer["error"], (body, answer)
    assert len(client.list_sinks()) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"paused": "yes", "etag": '"e"'}, "paused"),
        ({"etag": '"e"'}, "paused"),
        ({"paused": True}, "etag"),
        ({"paused": True, "etag": ""}, "etag"),
        ({"paused": True, "etag": 3}, "etag"),
    ],
)
def test_a_sink_changed_wrongly_is_refused_naming_the_field(
    api: str, admin: str, client: AuditClient, body: dict[str, Any], field: str
) -> None:
    """An etag is required: without one a stale page would change whatever
    the sink had become."""
    sink_id = webhook(client)["id"]
    status, answer = send(api + f"sinks/{sink_id}", method="PATCH", token=admin, body=body)
    assert status == 400 and answer["error"].startswith(f"{field}:"), answer


def test_an_unknown_sink_or_rule_is_404(api: str, admin: str) -> None:
    missing = "0190e8a4-0000-7000-8000-000000000000"
    for path in (f"sinks/{missing}", f"alert-rules/{missing}"):
        status, answer = send(api + path, method="DELETE", token=admin, body={"etag": '"e"'})
        assert (status, answer["code"]) == (404, "NOT_FOUND"), (path, answer)


def test_an_admin_disables_enables_and_deletes_an_alert_rule(
    api: str, admin: str, client: AuditClient
) -> None:
    sink_id = webhook(client, "pager")["id"]
    rule = build_alert_rule(
        "failed logins",
        "threshold",
        filter=build_filter(actions="user.login", outcomes="failure"),
        count=5,
        window_seconds=300,
        group_by="ip",
        sink_ids=[sink_id],
    )
    rule_id = client.create_alert_rule(rule).rule.id
    status, listed = send(api + "alert-rules", token=admin)
    assert status == 200
    [shown] = listed["rules"]
    assert shown["threshold"]["count"] == 5 and shown["sink_ids"] == [sink_id]
    read = shown["etag"]

    status, disabled = send(
        api + f"alert-rules/{rule_id}",
        method="PATCH",
        token=admin,
        body={"disabled": True, "etag": read},
    )
    assert status == 200 and disabled["rule"]["disabled"] is True, disabled
    assert from_the_browser(recorded(client, "alert_rule.updated"))
    [kept] = client.list_alert_rules()
    assert kept.threshold.count == 5 and list(kept.sink_ids) == [sink_id]  # only `disabled`

    status, stale = send(
        api + f"alert-rules/{rule_id}",
        method="PATCH",
        token=admin,
        body={"disabled": False, "etag": read},
    )
    assert (status, stale["code"], stale["reason"]) == (409, "ABORTED", "ETAG_MISMATCH")
    status, answer = send(
        api + f"alert-rules/{rule_id}", method="PATCH", token=admin, body={"etag": read}
    )
    assert status == 400 and answer["error"].startswith("disabled:")

    status, deleted = send(
        api + f"alert-rules/{rule_id}",
        method="DELETE",
        token=admin,
        body={"etag": disabled["rule"]["etag"]},
    )
    assert status == 200 and deleted["event_id"]
    assert from_the_browser(recorded(client, "alert_rule.deleted"))
    assert client.list_alert_rules() == []


def test_an_admin_places_and_releases_the_legal_hold(
    api: str, admin: str, client: AuditClient
) -> None:
    client.set_retention_policy(90)
    status, shown = send(api + "retention", token=admin)
    assert status == 200 and shown["policy"]["default_days"] == 90
    assert shown["legal_hold"].get("on", False) is False
    read = shown["legal_hold"]["etag"]

    status, answer = send(
        api + "legal-hold", method="PUT", token=admin, body={"on": True, "etag": read}
    )
    assert status == 400 and "reason" in answer["error"], answer  # the API's own check
    status, placed = send(
        api + "legal-hold",
        method="PUT",
        token=admin,
        body={"on": True, "reason": "matter 2026-114", "etag": read},
    )
    assert status == 200 and placed["legal_hold"]["on"] is True, placed
    assert from_the_browser(recorded(client, "retention.legal_hold_placed"))

    status, stale = send(
        api + "legal-hold", method="PUT", token=admin, body={"on": False, "etag": read}
    )
    assert (status, stale["reason"]) == (409, "ETAG_MISMATCH")
    assert client.get_retention_policy().legal_hold.on
    for body, field in (({"on": "off", "etag": read}, "on"), ({"on": False}, "etag")):
        status, answer = send(api + "legal-hold", method="PUT", token=admin, body=body)
        assert status == 400 and answer["error"].startswith(f"{field}:"), answer

    status, released = send(
        api + "legal-hold",
        method="PUT",
        token=admin,
        body={"on": False, "etag": placed["legal_hold"]["etag"]},
    )
    assert status == 200 and released["legal_hold"].get("on", False) is False
    assert from_the_browser(recorded(client, "retention.legal_hold_released"))


def test_the_hold_and_policy_asked_again_change_and_record_nothing(
    api: str, admin: str, client: AuditClient
) -> None:
    """As the API and the command lines answer them (docs/retention.md,
    "Asked again: the policy and the hold"): OK, with no event id (the page
    then says nothing changed), and nothing recorded; the policy's rules in
    another order are the same policy."""
    hold = send(api + "retention", token=admin)[1]["legal_hold"]
    body = {"on": False, "etag": hold["etag"]}
    status, released = send(api + "legal-hold", method="PUT", token=admin, body=body)
    assert status == 200 and not released["event_id"], released
    assert released["legal_hold"]["etag"] == hold["etag"]
    placed = client.set_legal_hold(True, reason="matter 9")
    body = {"on": True, "reason": "matter 9", "etag": placed.legal_hold.etag}
    status, again = send(api + "legal-hold", method="PUT", token=admin, body=body)
    assert status == 200 and not again["event_id"], again
    holds = ["retention.legal_hold_placed", "retention.legal_hold_released"]
    assert [e.id for e in client.query(build_filter(actions=holds))] == [placed.event_id]

    client.set_retention_policy(
        90, categories={"authentication": "1y"}, action_prefixes={"rag.*": 30}
    )
    read = send(api + "retention", token=admin)[1]["policy"]["etag"]
    reordered = policy_body(
        90,
        {"action_prefix": "rag.*", "days": 30},
        {"category": "CATEGORY_AUTHENTICATION", "days": 365},
        etag=read,
    )
    status, same = send(api + "retention", method="PUT", token=admin, body=reordered)
    assert status == 200 and not same["event_id"] and same["policy"]["etag"] == read, same
    assert len(list(client.query(build_filter(actions="retention.policy_updated")))) == 1


def test_a_release_the_operator_keeps_is_refused_with_the_servers_word(
    migrated_database_url: str, tenant: str
) -> None:
    guarded = ServerThread(
        migrated_database_url, console_listen="127.0.0.1:0", legal_hold_release="operator"
    )
    try:
        api = f"http://127.0.0.1:{guarded.service.console_port}/api/"
        admin = guarded.token(tenant)
        hold = send(api + "retention", token=admin)[1]["legal_hold"]
        status, placed = send(
            api + "legal-hold",
            method="PUT",
            token=admin,
            body={"on": True, "reason": "matter 7", "etag": hold["etag"]},
        )
        assert status == 200
        status, refused = send(
            api + "legal-hold",
            method="PUT",
            token=admin,
            body={"on": False, "etag": placed["legal_hold"]["etag"]},
        )
        assert (status, refused["reason"]) == (403, "HOLD_RELEASE_BY_OPERATOR")
        assert "operator releases legal holds" in refused["error"]
    finally:
        guarded.close()


def test_a_change_is_json_with_a_bearer_token_from_the_consoles_own_origin(
    api: str, admin: str, console_url: str, client: AuditClient
) -> None:
    """No form post, no cookie, no other site's page can make a change: the
    token travels only in the Authorization header the page's script sets."""
    body = {"role": "reader", "name": "x"}
    status, answer = send(api + "tokens", method="POST", body=body)
    assert status == 401  # no token
    status, answer = send(
        api + "tokens", method="POST", body=body, Cookie=f"token={admin}", Authorization=""
    )
    assert status == 401
    status, answer = send(
        api + "tokens",
        method="POST",
        token=admin,
        raw=b"role=reader&name=x",
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415 and "application/json" in answer["error"]
    for raw in (b"", b"not json", b"[1, 2]", b'"text"'):
        status, answer = send(
            api + "tokens",
            method="POST",
            token=admin,
            raw=raw,
            **{"Content-Type": "application/json"},
        )
        assert status == 400 and answer["error"].startswith("body:"), (raw, answer)
    status, _ = send(
        api + "tokens", method="POST", token=admin, body={**body, "name": "x" * 70_000}
    )
    assert status == 413  # no change of the page's is that large
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
        status, answer = send(api + "tokens", method="POST", token=admin, body=body, Origin=origin)
        assert status == 403 and "origin" in answer["error"], (origin, answer)
    status, answer = send(
        api + "tokens", method="POST", token=admin, body=body, **{"Sec-Fetch-Site": "cross-site"}
    )
    assert status == 403
    assert [t.name for t in client.list_tokens()] == [""]  # none was created
    own = console_url.rstrip("/")
    status, answer = send(
        api + "tokens",
        method="POST",
        token=admin,
        body=body,
        Origin=own,
        **{"Sec-Fetch-Site": "same-origin"},
    )
    assert status == 200, answer


@pytest.mark.parametrize("origin", ["null", "file://"])
def test_an_origin_naming_no_host_is_refused_even_with_an_empty_host_header(
    console_server: ServerThread, admin: str, client: AuditClient, origin: str
) -> None:
    """`Origin: null` (a sandboxed frame, a file) matched an empty `Host`
    header, and the change was made (helper-187). An empty `Host` is now
    refused before any origin is looked at (400, ADR 0102)."""
    body = b'{"role": "admin", "name": "from no origin"}'
    for host in (f"127.0.0.1:{console_server.service.console_port}", ""):
        connection = http.client.HTTPConnection(
            "127.0.0.1", console_server.service.console_port, timeout=10
        )
        try:
            connection.putrequest("POST", "/api/tokens", skip_host=True)
            for name, value in (
                ("Host", host),
                ("Origin", origin),
                ("Authorization", f"Bearer {admin}"),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
            ):
                connection.putheader(name, value)
            connection.endheaders(body)
            with connection.getresponse() as answer:
                status, said = answer.status, json.loads(answer.read())
        finally:
            connection.close()
        if host:
            assert status == 403 and "origin" in said["error"], (host, said)
        else:
            assert status == 400 and "Host" in said["error"], said
    assert [t.name for t in client.list_tokens()] == [""]  # none was created


@pytest.mark.parametrize("origin", ["http://[::1", "http://[", "https://x]:1["])
def test_an_origin_no_url_parser_reads_is_refused_not_a_failure(
    api: str, admin: str, client: AuditClient, origin: str
) -> None:
    """urlsplit raises ValueError on an unclosed IPv6 bracket: such an
    Origin was a 500 in plain text, logged as the console's own failure."""
    body = {"role": "admin", "name": "from a broken origin"}
    status, answer = send(api + "tokens", method="POST", token=admin, body=body, Origin=origin)
    assert status == 403 and "origin" in answer["error"], answer
    assert [t.name for t in client.list_tokens()] == [""]  # none was created


def test_a_body_over_64_kib_is_413_in_json_naming_the_body(api: str, admin: str) -> None:
    """It was aiohttp's plain-text 413, where every other error is JSON
    (helper-187)."""
    body = {"role": "reader", "name": "x" * 70_000}
    status, answer = send(api + "tokens", method="POST", token=admin, body=body)
    assert status == 413 and isinstance(answer, dict), answer
    assert answer["error"].startswith("body:") and "65536 bytes" in answer["error"]


_SOME_ID = "0190e8a4-0000-7000-8000-000000000000"


@pytest.mark.parametrize("signed_in", [True, False], ids=["admin", "made-up token"])
@pytest.mark.parametrize(
    ("method", "path", "raw"),
    [
        ("POST", "tokens", b"[" * 30_000 + b"]" * 30_000),
        (
            "POST",
            "sinks",
            b'{"sink": {"name": "n", "filter": {"actions": ' + b"[" * 3000 + b"]" * 3000 + b"}}}",
        ),
        ("POST", "alert-rules", b'{"rule": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3000 + b"}"),
        ("POST", "tokens", b'{"role": "reader", "name": "\\ud800"}'),
        ("PUT", "legal-hold", b'{"on": true, "reason": "\\udfff", "etag": "e"}'),
        ("PATCH", f"sinks/{_SOME_ID}", b'{"paused": true, "etag": "\\ud800"}'),
        ("DELETE", f"alert-rules/{_SOME_ID}", b'{"etag": "\\ud800"}'),
        ("POST", "retention/preview", b'{"policy": {"default_days": 30}, "etag": "\\ud800"}'),
        ("POST", f"sinks/{_SOME_ID}/replay", b'{"dead_letter_id": "\\ud800"}'),
    ],
    ids=[
        "nested 30000 deep",
        "sink filter nested",
        "rule nested",
        "lone surrogate in a token's name",
        "lone surrogate in a hold's reason",
        "lone surrogate in a sink's etag",
        "lone surrogate in a rule's etag",
        "lone surrogate in a policy's etag",
        "lone surrogate in a dead letter's id",
    ],
)
def test_a_body_nested_too_deep_or_with_a_lone_surrogate_is_400_naming_the_body(
    api: str,
    admin: str,
    caplog: pytest.LogCaptureFixture,
    signed_in: bool,
    method: str,
    path: str,
    raw: bytes,
) -> None:
    """Both were a 500 in plain text, logged as the server's own error with
    its traceback, whatever the token: the body is read before any call checks
    it (helper-187)."""
    token = admin if signed_in else "made-up"
    status, answer = send(
        api + path, method=method, token=token, raw=raw, **{"Content-Type": "application/json"}
    )
    assert status == 400 and answer["error"].startswith("body:"), answer
    assert answer["fields"][0]["field"] == "body"
    assert errors_logged(caplog) == []


def test_a_change_answers_only_its_method(api: str, admin: str) -> None:
    for method, path in (
        ("GET", "legal-hold"),
        ("PUT", "sinks"),
        ("PUT", "tokens"),
        ("HEAD", "tokens"),
        ("HEAD", "sinks"),
        ("HEAD", "retention"),
        ("GET", "erasure"),
        ("HEAD", "erasure"),
    ):
        status, _ = send(api + path, method=method, token=admin)
        assert status == 405, (method, path)


def test_only_the_console_is_told_the_tokens_role(
    console_server: ServerThread, reader: str
) -> None:
    """The role comes back in metadata to the console's calls alone: any
    other caller sending a key of its own is told nothing."""
    channel = grpc.insecure_channel(console_server.target)
    try:
        call = audit_service_pb2_grpc.AuditLogServiceStub(channel).GetVerifierKeys.with_call(
            integrity_pb2.GetVerifierKeysRequest(),
            metadata=(
                ("authorization", f"Bearer {reader}"),
                (CONSOLE_KEY_HEADER, "a guess"),
            ),
        )[1]
        assert ROLE_HEADER not in dict(call.initial_metadata())
    finally:
        channel.close()


# --- alert rules created and edited, sinks of every kind, replays, retention (ADR 0069) ----


def rule_body(name: str, kind: str, **settings: Any) -> dict[str, Any]:
    """A rule as the page sends it: the API's AlertRule as JSON, its filter in
    the event search's parameters."""
    filter_params = settings.pop("filter", {"actions": "user.login"})
    return {"rule": {"name": name, kind: settings}, "filter": filter_params}


def test_an_admin_creates_an_alert_rule_of_every_kind_filtered_as_a_search_is(
    api: str, admin: str, client: AuditClient
) -> None:
    sink_id = webhook(client, "pager")["id"]
    bodies = {
        "match": rule_body("new key", "match", filter={"actions": "api_key.create"}),
        "threshold": {
            "rule": {
                "name": "failed logins",
                "threshold": {"count": 5, "window_seconds": 300, "group_by": "ALERT_GROUP_BY_IP"},
                "severity": "SEVERITY_ERROR",
                "sink_ids": [sink_id],
            },
            "filter": {"actions": "user.login", "outcomes": "failure,denied"},
        },
        "new_ip": rule_body("new address", "new_ip", filter={"categories": "authentication"}),
        "new_country": rule_body("new country", "new_country", filter={}),
        "off_hours": rule_body(
            "night secrets",
            "off_hours",
            time_zone="Europe/Paris",
            start_hour=8,
            end_hour=19,
            working_days=[1, 2, 3, 4, 5],
            filter={"actions": "secret.*", "resource_type": "production"},
        ),
    }
    for kind, body in bodies.items():
        status, created = send(api + "alert-rules", method="POST", token=admin, body=body)
        assert status == 200, (kind, created)
        assert created["rule"]["name"] == body["rule"]["name"] and created["event_id"]
        assert from_the_browser(recorded(client, "alert_rule.created"))
    rules = {rule.name: rule for rule in client.list_alert_rules()}
    assert {rule.WhichOneof("condition") for rule in rules.values()} == set(bodies)
    failed = rules["failed logins"]
    assert (failed.threshold.count, failed.threshold.group_by) == (5, 2)
    assert list(failed.threshold.filter.actions) == ["user.login"]
    assert list(failed.threshold.filter.outcomes) == [
        event_pb2.OUTCOME_FAILURE,
        event_pb2.OUTCOME_DENIED,
    ]
    assert list(failed.sink_ids) == [sink_id] and failed.severity == event_pb2.SEVERITY_ERROR
    night = rules["night secrets"].off_hours
    assert (night.time_zone, night.start_hour, night.end_hour) == ("Europe/Paris", 8, 19)
    assert night.filter.resource_type == "production"
    assert list(rules["new address"].new_ip.filter.categories) == [
        event_pb2.CATEGORY_AUTHENTICATION
    ]


def test_an_admin_edits_an_alert_rule_as_last_read(
    api: str, admin: str, client: AuditClient
) -> None:
    sink_id = webhook(client, "pager")["id"]
    rule = build_alert_rule(
        "failed logins",
        "threshold",
        filter=build_filter(actions="user.login", outcomes="failure"),
        count=5,
        window_seconds=300,
        disabled=True,
    )
    read = client.create_alert_rule(rule).rule
    edit = {
        "rule": {
            "name": "failed logins, raised",
            "threshold": {"count": 10, "window_seconds": 600, "group_by": "ALERT_GROUP_BY_ACTOR"},
            "severity": "SEVERITY_CRITICAL",
            "sink_ids": [sink_id],
        },
        "filter": {"actions": "user.login,sso.login", "outcomes": "failure"},
        "etag": read.etag,
    }
    status, edited = send(api + f"alert-rules/{read.id}", method="PUT", token=admin, body=edit)
    assert status == 200, edited
    assert edited["rule"]["etag"] != read.etag and edited["event_id"]
    updated = recorded(client, "alert_rule.updated")
    assert from_the_browser(updated)
    assert updated.severity == event_pb2.SEVERITY_WARNING  # a count raised fires less
    [now] = client.list_alert_rules()
    assert (now.name, now.threshold.count, now.threshold.window_seconds) == (
        "failed logins, raised",
        10,
        600,
    )
    assert list(now.threshold.filter.actions) == ["user.login", "sso.login"]
    assert list(now.sink_ids) == [sink_id] and now.severity == event_pb2.SEVERITY_CRITICAL
    assert now.disabled  # the edit changes the definition, never whether it is on

    # Another kind replaces the condition whole.
    status, edited = send(
        api + f"alert-rules/{read.id}",
        method="PUT",
        token=admin,
        body={**rule_body("any login", "match"), "etag": edited["rule"]["etag"]},
    )
    assert status == 200, edited
    [now] = client.list_alert_rules()
    assert now.WhichOneof("condition") == "match" and list(now.sink_ids) == []

    # A page that still shows the rule as first read changes nothing.
    status, stale = send(api + f"alert-rules/{read.id}", method="PUT", token=admin, body=edit)
    assert (status, stale["code"], stale["reason"]) == (409, "ABORTED", "ETAG_MISMATCH")
    assert client.list_alert_rules()[0].name == "any login"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (rule_body("spike", "threshold", count=1, window_seconds=60), "rule.threshold.count"),
        (rule_body("", "match"), "rule.name"),
        (rule_body("x", "match", filter={}), "rule.match.filter"),
        (rule_body("x", "match", filter={"text": "secret"}), "rule.match.filter.text"),
        (rule_body("x", "off_hours", time_zone="Mars/Olympus", end_hour=9), "time_zone"),
        (rule_body("x", "match", filter={"categories": "gossip"}), "filter.categories"),
        (rule_body("x", "match", filter={"actions": 7}), "filter.actions"),
        (
            {**rule_body("x", "match"), "rule": {"name": "x", "match": {}, "sink_ids": ["n"]}},
            "rule.sink_ids[0]",
        ),
        ({"rule": {"name": "x", "match": {}, "colour": "red"}}, "rule"),
        ({"rule": {"name": "x", "match": {}}, "filter": {}, "extra": 1}, "extra"),
    ],
)
def test_an_alert_rule_asked_wrongly_names_the_field(
    api: str, admin: str, client: AuditClient, body: dict[str, Any], field: str
) -> None:
    """The page marks the field the API (or the console) names, rather than
    a failure that says nothing of what to put right."""
    status, answer = send(api + "alert-rules", method="POST", token=admin, body=body)
    assert status == 400, answer
    assert any(field in named["field"] for named in answer["fields"]), answer
    assert client.list_alert_rules() == []


def test_an_edit_needs_the_etag_and_leaves_disabled_to_its_own_change(
    api: str, admin: str, client: AuditClient
) -> None:
    read = client.create_alert_rule(
        build_alert_rule("any login", "match", filter=build_filter(actions="user.login"))
    ).rule
    path = api + f"alert-rules/{read.id}"
    status, answer = send(path, method="PUT", token=admin, body=rule_body("x", "match"))
    assert status == 400 and answer["error"].startswith("etag:"), answer
    body = {"rule": {"name": "x", "match": {}, "disabled": True}, "etag": read.etag}
    status, answer = send(path, method="PUT", token=admin, body=body)
    assert status == 400 and answer["fields"][0]["field"] == "rule.disabled", answer
    assert client.list_alert_rules()[0].name == "any login"


def test_an_admin_creates_splunk_datadog_and_elasticsearch_sinks_shown_by_hints(
    api: str, admin: str, client: AuditClient
) -> None:
    secret = "hec-" + secrets.token_hex(8)
    kinds = {
        "splunk": {"splunk_hec": {"url": "http://127.0.0.1:9", "token": secret, "index": "audit"}},
        "datadog": {"datadog_logs": {"api_key": secret, "tags": "env:prod"}},
        "elastic": {
            "elasticsearch": {"url": "http://127.0.0.1:9", "index": "audit", "api_key": secret}
        },
    }
    for name, destination in kinds.items():
        sink = {"name": name, **destination, "paused": True}
        status, created = send(api + "sinks", method="POST", token=admin, body={"sink": sink})
        assert status == 200, (name, created)
        assert secret not in json.dumps(created)
    status, listed = send(api + "sinks", token=admin)
    assert status == 200 and secret not in json.dumps(listed)
    shown = {sink["name"]: sink for sink in listed["sinks"]}
    assert shown["splunk"]["splunk_hec"]["token_hint"] == secret[-4:]
    assert shown["datadog"]["datadog_logs"]["api_key_hint"] == secret[-4:]
    assert shown["elastic"]["elasticsearch"]["api_key_hint"] == secret[-4:]
    status, answer = send(
        api + "sinks",
        method="POST",
        token=admin,
        body={"sink": {"name": "no key", "elasticsearch": {"url": "http://127.0.0.1:9"}}},
    )
    assert status == 400 and answer["fields"][0]["field"].startswith("sink.elasticsearch"), answer


def test_an_admin_replays_a_sink_by_window_seq_range_and_dead_letter(
    api: str, admin: str, client: AuditClient
) -> None:
    with endpoint() as receiver:
        # The first event is refused for good until the letter is parked: the
        # forwarder halves a refused batch until it is that event alone (a
        # refused first request alone held all that was ready, at times two).
        refusing = [True]
        receiver.responder = lambda received, index: Reply(
            400 if refusing[0] and b'"id":"poison"' in received.body else 200
        )
        sink = build_sink("siem", "webhook", url=receiver.url,
                          secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
                          filter=build_filter(actions="doc.*"))  # fmt: skip
        sink_id = client.create_sink(sink).sink.id
        try:
            seqs = [
                client.record(action="doc.read", actor_id=actor).event.seq
                for actor in ("poison", "u", "u")
            ]
            wait_until(lambda: client.get_sink(sink_id).state.dead_letters == 1)
            refusing[0] = False
            wait_until(lambda: client.get_sink(sink_id).state.cursor_seq >= seqs[-1])
            status, letters = send(api + f"sinks/{sink_id}/dead-letters", token=admin)
            assert status == 200, letters
            [letter] = letters["dead_letters"]
            assert int(letter["first_seq"]) == seqs[0] and letter["http_status"] == 400

            path = api + f"sinks/{sink_id}/replay"
            for body in (
                {"seq_range": {"first_seq": seqs[1], "last_seq": seqs[2]}},
                {
                    "window": {
                        "start_time": "2000-01-01T00:00:00Z",
                        "end_time": "2100-01-01T00:00:00Z",
                    }
                },
                {"dead_letter_id": letter["id"]},
            ):
                status, replayed = send(path, method="POST", token=admin, body=body)
                assert status == 200 and replayed["replay_id"], (body, replayed)
                assert from_the_browser(recorded(client, "sink.replay_requested"))
            wait_until(lambda: client.get_sink(sink_id).state.dead_letters == 0)

            for body, field in (
                ({}, "selection"),
                ({"seq_range": {"first_seq": 1}, "dead_letter_id": letter["id"]}, "body"),
                ({"sink_id": sink_id, "dead_letter_id": letter["id"]}, "sink_id"),
                ({"seq_range": {"first_seq": 5, "last_seq": 1}}, "seq_range"),
            ):
                status, answer = send(path, method="POST", token=admin, body=body)
                assert status == 400, (body, answer)
                assert any(field in named["field"] for named in answer["fields"]), (body, answer)
        finally:
            client.delete_sink(sink_id)


def wait_until(done: Any) -> None:
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, "never came to pass"
        time.sleep(0.05)


def policy_body(default_days: int, *rules: dict[str, Any], etag: str) -> dict[str, Any]:
    return {"policy": {"default_days": default_days, "rules": list(rules)}, "etag": etag}


def test_an_admin_previews_then_sets_the_retention_policy_shortening_named(
    api: str, admin: str, client: AuditClient
) -> None:
    client.set_retention_policy(365, categories={"authentication": "forever"})
    read = send(api + "retention", token=admin)[1]["policy"]["etag"]
    shorter = policy_body(
        90,
        {"category": "CATEGORY_AUTHENTICATION", "days": 365},
        {"action_prefix": "rag.*", "days": 30},
        etag=read,
    )
    status, preview = send(api + "retention/preview", method="POST", token=admin, body=shorter)
    assert status == 200, preview
    assert preview["shortened"] == [
        {"events": "default", "before_days": 365, "after_days": 90},
        {"events": "category:authentication", "before_days": 0, "after_days": 365},
        {"events": "action:rag.* (default)", "before_days": 365, "after_days": 30},
        {"events": "action:rag.* (category:authentication)", "before_days": 0, "after_days": 30},
    ]
    assert int(preview["events"]) == 0 and preview["legal_hold"] is False
    assert client.get_retention_policy().policy.default_days == 365  # nothing changed

    status, longer = send(
        api + "retention/preview", method="POST", token=admin, body=policy_body(0, etag=read)
    )
    assert status == 200 and longer["shortened"] == [], longer

    status, changed = send(api + "retention", method="PUT", token=admin, body=shorter)
    assert status == 200 and changed["event_id"], changed
    assert changed["policy"]["etag"] != read
    event = recorded(client, "retention.policy_updated")
    assert from_the_browser(event) and event.severity == event_pb2.SEVERITY_WARNING
    policy = client.get_retention_policy().policy
    assert policy.default_days == 90 and len(policy.rules) == 2

    status, stale = send(api + "retention", method="PUT", token=admin, body=shorter)
    assert (status, stale["code"], stale["reason"]) == (409, "ABORTED", "ETAG_MISMATCH")
    status, stale = send(api + "retention/preview", method="POST", token=admin, body=shorter)
    assert (status, stale["reason"]) == (409, "ETAG_MISMATCH")


def test_the_preview_judges_a_policy_under_the_tenants_plan_as_its_record_will(
    api: str, admin: str, client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Under a ceiling of 90 days (the operator's, ADR 0071) a policy of
    forever keeps events 90 days: 30 shortens them from 90, not from forever."""
    client.record(build_event(action="doc.edit", actor_id="u-1"))
    sql.execute(  # as `sealtrail-server tenant retention-limit --max-days 90` sets it
        "INSERT INTO retention_policies (tenant_id, max_days) VALUES (%s, 90)", [tenant]
    )
    status, shown = send(api + "retention", token=admin)
    assert status == 200 and shown["limits"]["max_days"] == 90, shown
    body = policy_body(30, etag=shown["policy"]["etag"])
    status, preview = send(api + "retention/preview", method="POST", token=admin, body=body)
    assert status == 200, preview
    assert preview["shortened"] == [{"events": "default", "before_days": 90, "after_days": 30}]


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"default_days": 40000, "rules": []}, "policy.default_days"),
        ({"default_days": 30, "rules": [{"action_prefix": "rag", "days": 1}]}, "policy.rules[0]"),
        ({"default_days": 30, "rules": [{"days": 1}]}, "policy.rules[0]"),
        ({"default_days": 30, "etag": '"x"'}, "policy.etag"),
        ({"default_days": "a month"}, "policy"),
    ],
)
def test_a_retention_policy_asked_wrongly_names_the_field(
    api: str, admin: str, client: AuditClient, policy: dict[str, Any], field: str
) -> None:
    read = send(api + "retention", token=admin)[1]["policy"]["etag"]
    for method, path in (("POST", "retention/preview"), ("PUT", "retention")):
        body = {"policy": policy, "etag": read}
        status, answer = send(api + path, method=method, token=admin, body=body)
        assert status == 400, (path, answer)
        assert any(named["field"].startswith(field) for named in answer["fields"]), answer
    assert client.get_retention_policy().policy.update_time.seconds == 0  # never set


def test_a_reader_may_make_none_of_the_new_changes(
    api: str, reader: str, client: AuditClient, tenant: str
) -> None:
    sink = webhook(client)
    rule_id = client.create_alert_rule(
        build_alert_rule("any login", "match", filter=build_filter(actions="user.login"))
    ).rule.id
    for method, path, body in (
        ("POST", "alert-rules", rule_body("mine", "match")),
        ("PUT", f"alert-rules/{rule_id}", {**rule_body("mine", "match"), "etag": '"x"'}),
        ("GET", f"sinks/{sink['id']}/dead-letters", None),
        ("POST", f"sinks/{sink['id']}/replay", {"seq_range": {"first_seq": 1, "last_seq": 1}}),
        ("POST", "retention/preview", policy_body(1, etag='"x"')),
        ("PUT", "retention", policy_body(1, etag='"x"')),
        ("PUT", f"sinks/{sink['id']}", sink_edit("mine", "webhook", {}, '"x"')),
        ("POST", "erasure", {"confirm_tenant_id": tenant}),
    ):
        status, answer = send(api + path, method=method, token=reader, body=body)
        assert (status, answer["code"]) == (403, "PERMISSION_DENIED"), (method, path, answer)
    assert [r.name for r in client.list_alert_rules()] == ["any login"]
    assert client.get_retention_policy().policy.default_days == 0
    assert [s.name for s in client.list_sinks()] == ["siem"]  # not erased, not renamed


# --- a sink edited, the tenant erased (ADR 0069, second addendum) ----------------------


def sink_edit(name: str, kind: str, destination: dict[str, Any], etag: str, **filter_: str) -> Any:
    """An edit as the page sends it: the API's Sink as JSON, its filter in the
    event search's parameters, with the etag the sink was read with."""
    return {"sink": {"name": name, kind: destination}, "filter": filter_, "etag": etag}


def test_an_admin_edits_a_sink_of_every_kind_its_credentials_kept_unless_typed_again(
    api: str, admin: str, client: AuditClient
) -> None:
    secret = "key-" + secrets.token_hex(8)
    made = {
        "hooks": build_sink(
            "hooks", "webhook", url="http://127.0.0.1:9/hook",
            secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
        ),
        "channel": build_sink("channel", "chat", url="http://127.0.0.1:9/services/T0/B0/abcdefghijklmnopq"),
        "splunk": build_sink("splunk", "splunk_hec", url="http://127.0.0.1:9", token=secret),
        "datadog": build_sink("datadog", "datadog_logs", api_key=secret),
        "elastic": build_sink(
            "elastic", "elasticsearch", url="http://127.0.0.1:9", index="audit", api_key=secret
        ),
    }  # fmt: skip
    for sink in made.values():
        sink.paused = True
        client.create_sink(sink)
    listed = {sink["name"]: sink for sink in send(api + "sinks", token=admin)[1]["sinks"]}
    edits = {
        "hooks": ("webhook", {"url": "http://127.0.0.1:9/hook"}),
        "channel": ("chat", {}),
        "splunk": ("splunk_hec", {"url": "http://127.0.0.1:9", "index": "security"}),
        "datadog": ("datadog_logs", {"service": "billing", "tags": "env:prod"}),
        "elastic": ("elasticsearch", {"url": "http://127.0.0.1:9", "index": "audit-2026"}),
    }
    for name, (kind, destination) in edits.items():
        read = listed[name]
        body = sink_edit(
            f"{name} 2", kind, destination, read["etag"], actions="doc.*", outcomes="failure"
        )
        status, edited = send(api + f"sinks/{read['id']}", method="PUT", token=admin, body=body)
        assert status == 200, (name, edited)
        assert edited["event_id"] and edited["sink"]["etag"] != read["etag"]
        assert from_the_browser(recorded(client, "sink.updated"))
        # Its credentials as they were, shown by the same hints; `paused` untouched.
        assert edited["sink"][kind] == {**read[kind], **destination}, name
        assert edited["sink"]["paused"] is True
    sinks = {sink.name: sink for sink in client.list_sinks()}
    assert set(sinks) == {f"{name} 2" for name in made}
    assert list(sinks["hooks 2"].filter.actions) == ["doc.*"]
    assert list(sinks["hooks 2"].filter.outcomes) == [event_pb2.OUTCOME_FAILURE]
    assert sinks["splunk 2"].splunk_hec.index == "security"
    assert sinks["splunk 2"].splunk_hec.token_hint == secret[-4:]
    assert (sinks["datadog 2"].datadog_logs.service, sinks["datadog 2"].datadog_logs.tags) == (
        "billing",
        "env:prod",
    )

    # A credential typed again replaces the old one.
    splunk = sinks["splunk 2"]
    again = "key-" + secrets.token_hex(8)
    body = sink_edit("splunk 2", "splunk_hec", {"url": "http://127.0.0.1:9", "token": again},
                     splunk.etag)  # fmt: skip
    status, edited = send(api + f"sinks/{splunk.id}", method="PUT", token=admin, body=body)
    assert status == 200 and edited["sink"]["splunk_hec"]["token_hint"] == again[-4:], edited
    assert again not in json.dumps(edited)
    assert list(client.get_sink(splunk.id).filter.actions) == []  # the filter is the edit's

    # A page that still shows the sink as first read changes nothing.
    status, stale = send(api + f"sinks/{splunk.id}", method="PUT", token=admin, body=body)
    assert (status, stale["code"], stale["reason"]) == (409, "ABORTED", "ETAG_MISMATCH")


def test_a_sink_moved_elsewhere_needs_its_secrets_typed_again(
    api: str, admin: str, client: AuditClient
) -> None:
    """A credential goes only where it was given for: the API refuses to
    send the kept one to a new URL, and the console says so as it does."""
    read = client.get_sink(webhook(client)["id"])
    moved = {"url": "http://127.0.0.1:9/elsewhere"}
    status, refused = send(
        api + f"sinks/{read.id}", method="PUT", token=admin,
        body=sink_edit("siem", "webhook", moved, read.etag),
    )  # fmt: skip
    assert (status, refused["reason"]) == (409, "SINK_SECRETS_REQUIRED"), refused
    assert "give its secrets again" in refused["error"]
    assert client.get_sink(read.id).webhook.url == "http://127.0.0.1:9/hook"
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    status, edited = send(
        api + f"sinks/{read.id}", method="PUT", token=admin,
        body=sink_edit("siem", "webhook", {**moved, "secrets": [secret]}, read.etag),
    )  # fmt: skip
    assert status == 200, edited
    assert edited["sink"]["webhook"]["secret_hints"] == [secret[-4:]]
    assert client.get_sink(read.id).webhook.url == "http://127.0.0.1:9/elsewhere"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"etag": None}, "etag"),
        ({"sink": {"name": "siem", "webhook": {}, "paused": False}}, "sink.paused"),
        ({"sink": {"name": "siem"}}, "sink.destination"),
        ({"sink": {"name": "", "webhook": {"url": "http://127.0.0.1:9/hook"}}}, "sink.name"),
        ({"sink": {"name": "siem", "webhook": {"url": "ftp://x"}}}, "sink.webhook.url"),
        ({"filter": {"categories": "gossip"}}, "filter.categories"),
        (
            {"sink": {"name": "s", "webhook": {}, "filter": {"actions": ["a"]}}},
            "sink.filter",
        ),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_sink_edited_wrongly_is_refused_naming_the_field(
    api: str, admin: str, client: AuditClient, change: dict[str, Any], field: str
) -> None:
    read = client.get_sink(webhook(client)["id"])
    body = {**sink_edit("siem", "webhook", {}, read.etag, actions="doc.*"), **change}
    body = {key: value for key, value in body.items() if value is not None}
    status, answer = send(api + f"sinks/{read.id}", method="PUT", token=admin, body=body)
    assert status == 400, answer
    assert any(named["field"].startswith(field) for named in answer["fields"]), answer
    assert client.get_sink(read.id).etag == read.etag  # nothing changed


def test_a_sink_is_created_with_the_searchs_filter_parameters(
    api: str, admin: str, client: AuditClient
) -> None:
    """The page's sink form holds the event search's own filter fields, as
    the rule form does: one filter form, read one way."""
    body = {
        "sink": {"name": "chat", "chat": {"url": "http://127.0.0.1:9/services/T0/B0/abcdefghijkl"}},
        "filter": {"actions": "user.login, sso.login", "categories": "authentication,security",
                   "min_severity": "warning", "actor": "alice@example.com"},
    }  # fmt: skip
    status, created = send(api + "sinks", method="POST", token=admin, body=body)
    assert status == 200, created
    [sink] = client.list_sinks()
    assert list(sink.filter.actions) == ["user.login", "sso.login"]
    assert list(sink.filter.categories) == [
        event_pb2.CATEGORY_AUTHENTICATION,
        event_pb2.CATEGORY_SECURITY,
    ]
    assert (sink.filter.min_severity, sink.filter.actor) == (
        event_pb2.SEVERITY_WARNING,
        "alice@example.com",
    )
    both = {**body, "sink": {**body["sink"], "filter": {"actions": ["x"]}}}
    status, answer = send(api + "sinks", method="POST", token=admin, body=both)
    assert status == 400 and answer["fields"][0]["field"] == "sink.filter", answer


def test_an_admin_erases_the_tenant_with_its_id_typed_back_and_is_shown_the_receipt(
    api: str, admin: str, client: AuditClient, tenant: str
) -> None:
    for actor in ("u-1", "u-2", "u-3"):
        client.record(build_event(action="doc.read", actor_id=actor))
    webhook(client)
    path = api + "erasure"

    status, refused = send(path, method="POST", token=admin, body={"confirm_tenant_id": "t-other"})
    assert status == 400 and refused["fields"][0]["field"] == "confirm_tenant_id", refused
    for body, field in (({}, "confirm_tenant_id"), ({"confirm_tenant_id": tenant, "x": 1}, "x")):
        status, answer = send(path, method="POST", token=admin, body=body)
        assert status == 400 and answer["fields"][0]["field"] == field, answer

    # A legal hold refuses it, in the server's words.
    client.set_legal_hold(True, reason="matter 7")
    status, held = send(path, method="POST", token=admin, body={"confirm_tenant_id": tenant})
    assert (status, held["code"], held["reason"]) == (409, "FAILED_PRECONDITION", "LEGAL_HOLD")
    assert "a legal hold is on" in held["error"]
    assert len(list(client.query(build_filter(actions="doc.read")))) == 3  # nothing removed
    client.set_legal_hold(False)

    status, erased = send(path, method="POST", token=admin, body={"confirm_tenant_id": tenant})
    assert status == 200, erased
    receipt = erased["receipt"]
    assert receipt["tenant_id"] == tenant and receipt["erased_by_token_id"]
    checkpoint = receipt["final_checkpoint"]
    assert int(receipt["final_tree_size"]) == int(checkpoint["tree_size"]) >= 5
    assert receipt["final_root_hash"] == checkpoint["root_hash"]
    assert checkpoint["note"].startswith(f"sealtrail.test/log/{tenant}\n")
    assert int(receipt["removed_rows"]["events"]) == int(receipt["final_tree_size"])
    assert int(receipt["removed_rows"]["sinks"]) == 1
    # The receipt signed as a whole, its signature checked by the console
    # with the keys the deployment registers (read before the erasure took
    # the token): the page says so, and that only a pinned key proves it.
    assert receipt["signed_receipt"].startswith("sealtrail erasure receipt v1\n")
    check = erased["check"]
    assert (check["signed"], check["verified"], check["problem"]) == (True, True, ""), check
    assert check["signed_by"] and check["signed_by"][0].startswith("sealtrail.test")
    # As the page downloads it, it verifies offline with the key an auditor pinned.
    pinned = Signer.parse(SIGNING_KEY).verifier.text()
    assert verify_erasure_receipt(json.dumps(receipt), key=pinned).tenant_id == tenant
    # The tenant's tokens are gone with it: this one signs in no more.
    assert send(api + "signin", token=admin)[0] == 401


def test_an_erasure_the_operator_keeps_is_refused_with_the_servers_word(
    migrated_database_url: str, tenant: str
) -> None:
    guarded = ServerThread(
        migrated_database_url, console_listen="127.0.0.1:0", tenant_erasure="operator"
    )
    try:
        api = f"http://127.0.0.1:{guarded.service.console_port}/api/"
        admin = guarded.token(tenant)
        status, refused = send(
            api + "erasure", method="POST", token=admin, body={"confirm_tenant_id": tenant}
        )
        assert (status, refused["reason"]) == (403, "ERASURE_BY_OPERATOR"), refused
        assert "operator erases tenants" in refused["error"]
        assert send(api + "signin", token=admin)[0] == 200
    finally:
        guarded.close()


def test_the_consoles_check_of_a_receipt_says_unsigned_and_edited_ones_apart(
    client: AuditClient, tenant: str
) -> None:
    """What the console says of a receipt, from a real one: signed and
    verified by the deployment's keys; one kept before receipts were signed
    (no signed receipt) is unsigned; one edited since it was signed, or
    signed by no registered key, is signed but does not verify, saying why."""
    client.record(build_event(action="doc.read", actor_id="u-1"))
    keys = [key.text for key in client.get_verifier_keys()]
    receipt = client.erase_tenant(tenant)
    assert receipt_check(receipt, keys)["verified"] is True

    unsigned = type(receipt)()
    unsigned.CopyFrom(receipt)
    unsigned.signed_receipt = ""
    check = receipt_check(unsigned, keys)
    assert (check["signed"], check["verified"], check["signed_by"]) == (False, False, [])
    assert "not signed" in check["problem"], check

    edited = type(receipt)()
    edited.CopyFrom(receipt)
    edited.final_tree_size += 1
    check = receipt_check(edited, keys)
    assert (check["signed"], check["verified"]) == (True, False)
    assert "final_tree_size" in check["problem"], check

    other = generate_signer_key("sealtrail.test/log").verifier.text()
    check = receipt_check(receipt, [other])
    assert (check["signed"], check["verified"]) == (True, False)
    assert "no given key" in check["problem"], check


def test_a_name_holding_an_invisible_or_bidi_character_is_refused_naming_the_field(
    api: str, admin: str, client: AuditClient
) -> None:
    """A zero-width space or a bidi override in a new name is the API's
    INVALID_ARGUMENT, which the console answers as a 400 naming the field and
    the character (docs/api.md, "Names")."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    hook = {"url": "http://127.0.0.1:9/hook", "secrets": [secret]}
    sink = {"name": "si\u200bem", "webhook": hook}
    asked = (
        ("sinks", {"sink": sink}, "sink.name", "U+200B"),
        ("alert-rules", rule_body("keys\u202e", "match"), "rule.name", "U+202E"),
        ("tokens", {"role": "reader", "name": "ci\u2067"}, "name", "U+2067"),
    )
    for path, body, field, said in asked:
        status, answer = send(api + path, method="POST", token=admin, body=body)
        assert status == 400, answer
        assert [named["field"] for named in answer["fields"]] == [field], answer
        assert said in answer["fields"][0]["description"], answer
    assert client.list_sinks() == [] and client.list_alert_rules() == []
