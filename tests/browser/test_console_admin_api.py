"""The console's admin API without a browser: tokens, sinks, alert rules and
the legal hold changed through the same RPCs as the CLI's, with the browser's
token (an admin's succeeds and is recorded with the browser's address; a
reader's is refused by the API), bad input named, a stale etag refused, and
changes only by JSON with a bearer token, from the console's own origin."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from sealtrail import AuditClient, build_alert_rule, build_filter, build_sink
from sealtrail.v1 import audit_service_pb2_grpc, event_pb2, integrity_pb2
from sealtrail_server.api.callers import CONSOLE_KEY_HEADER, ROLE_HEADER
from tests.conftest import ServerThread

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
    [event] = client.query(build_filter(actions=action), page_size=1)
    return event


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


def test_a_change_answers_only_its_method(api: str, admin: str) -> None:
    for method, path in (
        ("GET", "legal-hold"),
        ("PUT", "sinks"),
        ("PUT", "tokens"),
        ("HEAD", "tokens"),
        ("HEAD", "sinks"),
        ("HEAD", "retention"),
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
