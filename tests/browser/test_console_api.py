"""The console's JSON API without a browser: it is the gRPC API's access, no
more (no token, a recorder's, another tenant's), and its errors are clear."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import logging
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from click.testing import CliRunner
from google.protobuf import json_format
from psycopg import sql as pgsql

from sealtrail import AuditClient, build_event, build_filter
from sealtrail import _cli as client_cli
from sealtrail_server.auth.tokens import MALFORMED_TOKEN
from sealtrail_server.console import server as console_module
from sealtrail_server.store import counts as store_counts
from tests.conftest import ServerThread, errors_logged


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
            return answer.status, json.loads(body) if body.startswith(b"{") else body
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.fixture
def api(console_url: str) -> str:
    return console_url + "api/"


def test_the_page_is_served_with_a_strict_policy(console_url: str) -> None:
    with urllib.request.urlopen(console_url, timeout=10) as answer:
        page = answer.read().decode()
        policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "<script" in page and "http://" not in page and "https://" not in page  # no CDN


def test_no_token_a_recorder_and_bad_parameters_are_refused(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    assert get(api + "events")[0] == 401
    status, body = get(api + "events", console_server.token(tenant, "recorder"))
    assert status == 403 and body["code"] == "PERMISSION_DENIED"
    reader = console_server.token(tenant, "reader")
    status, body = get(api + "events?categories=nonsense", reader)
    assert status == 400 and "categories" in body["error"]
    status, body = get(api + "events?occurred_after=yesterday", reader)
    assert status == 400 and "occurred_after" in body["error"]
    status, body = get(api + "export?format=pdf", console_server.token(tenant, "exporter"))
    assert status == 400 and body["error"] == "format: csv, ndjson or json", body
    status, body = get(api + "proof?seq=999999", reader)
    assert status == 404
    for bad in ("proof?seq=%C2%B2", "proof?seq=99999999999999999999", "stream?after_seq=x"):
        status, body = get(api + bad, reader)  # "²" is a digit to str.isdigit, not to int()
        assert status == 400 and ("seq" in body["error"]), (bad, status, body)


@pytest.mark.parametrize(
    ("time", "status"),
    [
        ("2026-12-01T00:00:00Z", 200),
        ("2026-12-01t00:00:00z", 200),  # RFC 3339 allows either case
        ("2026-12-01T01:00:00.123456789+01:00", 200),
        ("2026-12-01T00:00:00", 400),  # no offset: taken as UTC, unsaid
        ("2026-12-01 00:00", 400),
        ("2026-12-01", 400),
        ("20261201", 400),
        ("2026-W48-2", 400),
    ],
)
def test_times_are_rfc_3339_with_an_offset(
    api: str, console_server: ServerThread, tenant: str, time: str, status: int
) -> None:
    """ISO 8601 forms RFC 3339 has not (week dates, basic format, no offset)
    were taken, and a lower-case `t`/`z`, which it allows, refused (helper-150)."""
    reader = console_server.token(tenant, "reader")
    for name in ("occurred_after", "occurred_before"):
        answer, body = get(api + f"events?{urllib.parse.urlencode({name: time})}", reader)
        assert answer == status, (name, time, body)
        if status == 400:
            assert name in body["error"] and "RFC 3339" in body["error"]


def test_a_time_to_the_nanosecond_bounds_as_the_api_s_own_bound_does(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """A bound was cut to the microsecond before it was sent: one between two
    took the earlier, where the API takes the later (helper-204)."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        event = build_event(action="doc.read", actor_id="u-at-1us")
        event.occurred_at.seconds, event.occurred_at.nanos = 1_764_000_000, 1000
        c.record(event)
    reader = console_server.token(tenant, "reader")

    def found(name: str, time: str) -> list[str]:
        query = urllib.parse.urlencode({"actions": "doc.read", name: time})
        status, body = get(api + f"events?{query}", reader)
        assert status == 200, body
        return [e["actor"]["id"] for e in body["events"]]

    assert found("occurred_after", "2025-11-24T16:00:00.0000015Z") == []
    assert found("occurred_before", "2025-11-24T16:00:00.0000015Z") == ["u-at-1us"]
    # Past the ninth digit, no Timestamp holds it: refused, not cut.
    status, body = get(api + "events?occurred_after=2025-11-24T16:00:00.1234567891Z", reader)
    assert status == 400 and "occurred_after" in body["error"]


def test_a_token_sees_its_own_tenant_only(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    writer = AuditClient(console_server.target, token=console_server.token(tenant, "recorder"))
    writer.record(action="api_key.create", actor_id="u-1")
    writer.close()
    mine = get(api + "events?actions=api_key.create", console_server.token(tenant, "reader"))[1]
    assert [e["action"] for e in mine["events"]] == ["api_key.create"]
    theirs = get(
        api + "events?actions=api_key.create", console_server.token(f"{tenant}-b", "reader")
    )
    assert theirs[1]["events"] == []
    # What the console read is recorded in the reader's log, as any Query.
    queried = get(api + "events?actions=audit_log.queried", console_server.token(tenant, "reader"))
    assert len(queried[1]["events"]) >= 1


def test_whole_numbers_in_details_are_integers_in_the_api(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """/api/events and /api/stream wrote `"trigger_seq": 83.0` (protobuf holds
    every number in details as a double), where exports write 83 (helper-165)."""
    writer = AuditClient(console_server.target, token=console_server.token(tenant, "recorder"))
    writer.record(action="numbers.seen", actor_id="u", details={"trigger_seq": 83, "ratio": 0.5})
    writer.close()
    reader = console_server.token(tenant, "reader")
    request = urllib.request.Request(api + "events?actions=numbers.seen")
    request.add_header("Authorization", f"Bearer {reader}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        page = answer.read().decode()
    assert re.search(r'"trigger_seq": 83[,}]', page) and re.search(r'"ratio": 0.5[,}]', page)
    [event] = json.loads(page)["events"]
    request = urllib.request.Request(api + f"stream?after_seq={int(event['seq']) - 1}")
    request.add_header("Authorization", f"Bearer {reader}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        line = answer.readline().decode()
        while line == "\n":  # a heartbeat
            line = answer.readline().decode()
    assert re.search(r'"trigger_seq": 83[,}]', line) and re.search(r'"ratio": 0.5[,}]', line)


def _headers(url: str, token: str | None = None, **extra: str) -> Any:
    request = urllib.request.Request(url, headers=extra)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.headers
    except urllib.error.HTTPError as error:
        return error.headers


def test_every_answer_is_kept_from_caches_frames_and_sniffing(
    console_url: str, api: str, console_server: ServerThread, tenant: str
) -> None:
    """Only the page had these: audit data in /api answers could stay in a
    browser's disk cache."""
    reader = console_server.token(tenant, "reader")
    for headers in (
        _headers(console_url),
        _headers(api + "events", reader),
        _headers(api + "events"),  # 401
        _headers(api + "events?categories=nonsense", reader),  # 400
        _headers(console_url + "static/console.js"),
    ):
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_a_request_id_that_is_no_uuid_is_replaced_not_a_failure(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    reader = console_server.token(tenant, "reader")
    status, _ = get_with(api + "events", reader, {"X-Request-Id": "req-\u00e9\u00e9"})
    assert status == 200


def get_with(url: str, token: str, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={**headers, "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, answer.read()


def test_what_the_console_reads_is_recorded_with_the_browsers_address_and_user_agent(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """The console calls the API over a Unix socket: its records named no
    address, and its own gRPC user agent, until it passed the browser's on."""
    reader = console_server.token(tenant, "reader")
    status, _ = get_with(api + "events", reader, {"User-Agent": "Mozilla/5.0 (console test)"})
    assert status == 200
    with AuditClient(console_server.target, token=console_server.token(tenant)) as admin:
        [queried] = admin.query(build_filter(actions="audit_log.queried"), page_size=1)
    assert (queried.context.ip, queried.context.user_agent) == (
        "127.0.0.1",
        "Mozilla/5.0 (console test)",
    )


def test_an_export_is_its_chunks_then_its_manifest_which_they_match(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """Relayed as raw bytes, a cut export could pass for a complete one and its
    manifest never reached the page: each piece is a line, the manifest the
    last, and an error after the start is a line too."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as writer:
        writer.record_batch([build_event(action="doc.read", actor_id=f"u{n}") for n in range(300)])
    url = api + "export?format=csv&actions=doc.read"
    status, body = get_with(url, console_server.token(tenant), {})
    assert status == 200
    lines = [json.loads(line) for line in body.decode().splitlines()]
    *chunks, last = lines
    data = b"".join(base64.b64decode(line["chunk"]) for line in chunks)
    manifest = last["manifest"]
    assert int(manifest["row_count"]) == 300 and int(manifest["byte_count"]) == len(data)
    assert base64.b64decode(manifest["sha256"]) == hashlib.sha256(data).digest()
    assert data.decode().count("doc.read") == 300


def test_an_export_as_json_is_the_apis_json_array_in_chunks(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`sealtrail export --format json` and the Export RPC have it; the console
    answered 400 "format: csv or ndjson". Relayed as the others are, a chunk
    a line as it comes, never gathered whole (helper-375)."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as writer:
        writer.record_batch([build_event(action="doc.read", actor_id=f"u{n}") for n in range(300)])
    status, body = get_with(
        api + "export?format=json&actions=doc.read", console_server.token(tenant), {}
    )
    assert status == 200, body
    *chunks, last = [json.loads(line) for line in body.decode().splitlines()]
    assert len(chunks) > 1  # each chunk relayed as it came
    data = b"".join(base64.b64decode(line["chunk"]) for line in chunks)
    manifest = last["manifest"]
    assert int(manifest["row_count"]) == 300 and int(manifest["byte_count"]) == len(data)
    assert base64.b64decode(manifest["sha256"]) == hashlib.sha256(data).digest()
    events = json.loads(data)
    assert [event["action"] for event in events] == ["doc.read"] * 300
    assert {event["actor"]["id"] for event in events} == {f"u{n}" for n in range(300)}
    assert "leafHash" in events[0]  # the API's JSON mapping, as `sealtrail export` writes it


def _raw(url: str, *, method: str = "GET", **headers: str) -> tuple[int, Any, bytes]:
    """Status, headers and body of a request whatever its status."""
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def test_what_the_api_refuses_the_console_refuses_clearly(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """helper-124: times past the years a timestamp holds were a 500 in plain
    text; a repeated parameter kept its first value unsaid; a token gRPC
    cannot carry was a 500, a lower-case scheme gRPC takes a 401, and no 401
    said how to authenticate. helper-517: a malformed token was said to be a
    wrong scheme."""
    reader = console_server.token(tenant, "reader")
    for bad in (
        "events?occurred_after=0001-01-01T00:00:00%2B01:00",
        "events?occurred_before=9999-12-31T23:30:00-01:00",
    ):
        status, body = get(api + bad, reader)
        assert status == 400 and "out of range" in body["error"], (bad, body)
    status, body = get(api + "events?actions=a.one&actions=b.two", reader)
    assert status == 400 and body["error"].startswith("actions: given more than once")
    for authorization in ("Bearer stk_\u00e9", "Bearer \u00ff", "Basic x", "Bearer "):
        status, headers, body = _raw(api + "events", Authorization=authorization)
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="sealtrail"')
        assert json.loads(body) == {"error": "sign in with a token"}
    assert _raw(api + "events", Authorization=f"bearer {reader}")[0] == 200
    # A token of the wrong shape: the API's words, which read as the console's.
    for malformed in ("stk_bogus", reader[:30]):
        status, body = get(api + "events", malformed)
        assert (status, body["code"]) == (401, "UNAUTHENTICATED"), body
        assert body["error"] == MALFORMED_TOKEN, body


def test_a_parameter_the_search_does_not_take_is_refused_naming_it(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """helper-466: `events?action=member.*` (the command line's `--action`; the
    search's parameter is `actions`) answered the whole log, unfiltered, as
    if the filter had been applied: a parameter no search takes is a 400
    naming it, with the one meant where its plural is."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        client.record(action="member.invite", actor_id="ann")
    reader = console_server.token(tenant, "reader")
    for path in (
        "events?action=member.*",
        "counts?group_by=day&action=member.*",
        "stream?after_seq=1&action=member.*",
    ):
        status, body = get(api + path, reader)
        assert status == 400, (path, status, body)
        assert body["error"] == "action: no such parameter; did you mean actions?", body
        assert body["fields"] == [
            {"field": "action", "description": "no such parameter; did you mean actions?"}
        ]
    status, body = get(api + "export?format=csv&sice=1h", console_server.token(tenant, "exporter"))
    assert (status, body["error"]) == (400, "sice: no such parameter (docs/console.md lists them)")
    status, body = get(api + "events?" + urllib.parse.urlencode({"a:b\n" * 20: "x"}), reader)
    assert status == 400 and len(body["error"].encode()) <= 100, body
    count = urllib.parse.quote("group_by=action&limt=5")
    status, body = get(api + f"events?count={count}", reader)
    assert (status, body["error"]) == (
        400,
        "count: limt: no such parameter (docs/console.md lists them)",
    ), body
    # What the page sends is taken: a filter, a page's own parameters.
    query = urllib.parse.urlencode(
        {"actions": "member.*", "count": "group_by=day&time_zone=UTC", "occurred_after": ""}
    )
    status, body = get(api + "events?" + query, reader)
    assert status == 200 and [e["action"] for e in body["events"]] == ["member.invite"], body


def test_values_listed_with_spaces_after_their_commas_are_each_a_value(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`user.login, sso.login` as people type it was refused (" sso.login" is
    no action), in the search and in an alert rule's filter, which is parsed
    as the search's."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        client.record(action="sso.login", actor_id="ann")
    reader = console_server.token(tenant, "reader")
    query = urllib.parse.urlencode({"actions": "user.login, sso.login", "outcomes": "success, "})
    status, body = get(api + f"events?{query}", reader)
    assert status == 200, body
    assert [event["action"] for event in body["events"]] == ["sso.login"]
    status, body = get(api + "events?" + urllib.parse.urlencode({"categories": " , "}), reader)
    assert status == 200  # no value: no criterion, as an empty parameter


def test_a_detail_parameter_is_checked_as_the_api_checks_details_equals(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`detail` (KEY=VALUE, comma-separated) is the filter's `details_equals`
    in every call that takes a filter; what the API would refuse is a 400
    naming `detail`, within the API's 100 bytes."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        client.record(action="key.read", actor_id="ann", details={"env": "prod", "n": 3})
        client.record(action="key.read", actor_id="bob", details={"env": "dev", "n": 3})
    reader = console_server.token(tenant, "reader")
    query = urllib.parse.urlencode({"detail": "env=prod, n=3"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 200 and [e["actor"]["id"] for e in body["events"]] == ["ann"], body
    status, body = get(api + f"counts?group_by=actor&{query}", reader)
    assert status == 200 and [g["key"] for g in body["groups"]] == ["ann"], body
    for bad, said in (
        ("env", "'env' is no KEY=VALUE"),
        ("=prod", "empty key"),
        ("env=a,env=b", "given twice"),
        ("k" * 65 + "=v", "limit is 64"),
        ("k=" + "v" * 257, "limit is 256"),
        (",".join(f"k{n}=v" for n in range(9)), "limit is 8"),
        ("k=a\x00b", "NUL"),
    ):
        path = "events?" + urllib.parse.urlencode({"detail": bad})
        status, body = get(api + path, reader)
        assert status == 400 and said in body["error"], (bad, body)
        [field] = body["fields"]
        assert field["field"] == "detail" and len(body["error"].encode()) <= 100, body
    status, body = get(api + "events?detail=a%3D1&detail=b%3D2", reader)
    assert status == 400 and body["error"].startswith("detail: given more than once")


def test_an_actor_roles_parameter_finds_the_events_of_any_role(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`actor_roles` (comma-separated, each trimmed) is the filter's
    `actor_roles` in every call that takes a filter: any of them, exactly;
    a role the API refuses is a 400 naming it."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        client.record(action="invoice.refund", actor_id="ann", actor_roles=["billing", "admin"])
        client.record(action="invoice.refund", actor_id="bob", actor_roles=["Admin"])
        client.record(action="invoice.refund", actor_id="cy", actor_roles=["support"])
    reader = console_server.token(tenant, "reader")
    query = urllib.parse.urlencode({"actor_roles": "admin, support"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 200 and sorted(e["actor"]["id"] for e in body["events"]) == ["ann", "cy"]
    assert body["events"][-1]["actor"]["roles"] == ["billing", "admin"], body
    status, body = get(api + f"counts?group_by=actor&{query}", reader)
    assert status == 200 and sorted(g["key"] for g in body["groups"]) == ["ann", "cy"], body
    status, body = get(api + "events?" + urllib.parse.urlencode({"actor_roles": "x" * 129}), reader)
    assert status == 400 and "129 characters" in body["error"], body
    assert len(body["error"].encode()) <= 100, body


def test_a_head_of_the_api_runs_nothing(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """A HEAD ran the call: an export recorded and counted against the
    tenant's quota, with no body to show for it (helper-124)."""
    exporter = console_server.token(tenant, "exporter")
    for path in ("export?format=csv", "events", "stream"):
        status, _, _ = _raw(api + path, method="HEAD", Authorization=f"Bearer {exporter}")
        assert status == 405, path
    recorded = get(
        api + "events?actions=audit_log.exported", console_server.token(tenant, "reader")
    )
    assert recorded[1]["events"] == []


def test_a_refusal_to_retry_says_when(migrated_database_url: str, tenant: str) -> None:
    """The API's RetryInfo was dropped: a 429 said nothing of when to come
    back (helper-124)."""
    limited = ServerThread(migrated_database_url, console_listen="127.0.0.1:0", export_rate_limit=1)
    try:
        url = f"http://127.0.0.1:{limited.service.console_port}/api/export?format=csv"
        exporter = {"Authorization": f"Bearer {limited.token(tenant, 'exporter')}"}
        assert _raw(url, **exporter)[0] == 200
        status, headers, body = _raw(url, **exporter)
        assert (status, json.loads(body)["code"]) == (429, "RESOURCE_EXHAUSTED")
        assert 1 <= int(headers["Retry-After"]) <= 60
    finally:
        limited.close()


@pytest.fixture
def own_console(
    migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ServerThread]]:
    """Starts a server whose console holds at most `connections` at once,
    `per_address` from one address, each idle `idle` seconds at most."""
    started: list[ServerThread] = []

    def start(
        *, connections: int = 256, per_address: int = 32, idle: float = 15.0, **settings: Any
    ) -> ServerThread:
        monkeypatch.setattr(console_module, "MAX_CONNECTIONS", connections)
        monkeypatch.setattr(console_module, "MAX_CONNECTIONS_PER_ADDRESS", per_address)
        monkeypatch.setattr(console_module, "IDLE_SECONDS", idle)
        started.append(
            ServerThread(
                migrated_database_url,
                console_listen="127.0.0.1:0",
                **{"stream_heartbeat_seconds": 0.2, **settings},
            )
        )
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.close()


@contextlib.contextmanager
def _streaming(server: ServerThread, token: str) -> Iterator[http.client.HTTPResponse]:
    connection = http.client.HTTPConnection("127.0.0.1", server.service.console_port, timeout=30)
    try:
        connection.request("GET", "/api/stream", headers={"Authorization": f"Bearer {token}"})
        with connection.getresponse() as answer:  # its file holds the socket open too
            assert answer.status == 200
            answer.readline()  # a heartbeat: it is under way
            yield answer
    finally:
        connection.close()


def test_a_stop_ends_open_streams_with_a_last_line(
    own_console: Callable[..., ServerThread], tenant: str
) -> None:
    """A live view never ends on its own: the stop waited for it 60 s, then 60
    more (helper-124), and the browser got no word of why it ended."""
    server = own_console()
    with _streaming(server, server.token(tenant, "reader")) as live:
        server.run(server.service.console.stop())  # type: ignore[union-attr]
        *_, last = live.read().splitlines()
    assert json.loads(last)["code"] == "UNAVAILABLE"


def test_a_browser_leaving_a_stream_is_no_error(
    own_console: Callable[..., ServerThread], tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = own_console()
    with _streaming(server, server.token(tenant, "reader")):
        pass
    time.sleep(1)  # heartbeats written meanwhile to the connection gone
    assert errors_logged(caplog) == []


def test_a_stop_after_a_browser_left_its_stream_is_no_error(
    own_console: Callable[..., ServerThread], tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser closed while Live was on, then the server stopped before the
    next heartbeat found the connection gone: the stop's last line, written to
    the closed connection, was logged as an ERROR ("Cannot write to closing
    transport") with a traceback, an error no one could act on."""
    server = own_console(stream_heartbeat_seconds=60)  # no heartbeat finds it gone first
    with _streaming(server, server.token(tenant, "reader")):
        pass
    time.sleep(0.3)  # the console has seen the connection close
    caplog.set_level(logging.DEBUG, logger=console_module.__name__)
    server.run(server.service.console.stop())  # type: ignore[union-attr]
    assert errors_logged(caplog) == []
    said = [r.getMessage() for r in caplog.records if r.name == console_module.__name__]
    assert any("stream" in line and "gone" in line for line in said), said


def _half_requests(port: int, count: int, stack: contextlib.ExitStack) -> list[socket.socket]:
    """`count` connections that sent half a request line and wait."""
    sent = []
    for _ in range(count):
        connection = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
        connection.sendall(b"GET /api/ev")
        sent.append(connection)
    return sent


def test_connections_past_the_most_held_are_refused(
    own_console: Callable[..., ServerThread],
) -> None:
    """Enough connections that sent half a request took every file descriptor
    the process had, its gRPC API's included (helper-124)."""
    port = own_console(connections=3).service.console_port
    with contextlib.ExitStack() as stack:
        _half_requests(port, 3, stack)
        [extra] = _half_requests(port, 1, stack)
        assert extra.recv(100).startswith(b"HTTP/1.1 503 ")
    # Room again once the console saw them go.
    deadline = time.monotonic() + 10
    while (status := _raw(f"http://127.0.0.1:{port}/")[0]) == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 200


def _status_from(source: str, port: int) -> int:
    """The status of a GET of the page from the address `source` (on loopback)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as c:
        c.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        return int(c.recv(100).split()[1])


def test_connections_from_one_address_past_its_share_are_refused(
    own_console: Callable[..., ServerThread],
) -> None:
    """One peer with no token held every connection the console had, and
    everyone else got 503 (helper-209)."""
    port = own_console(connections=6, per_address=3).service.console_port
    with contextlib.ExitStack() as stack:
        _half_requests(port, 3, stack)  # from 127.0.0.1
        [extra] = _half_requests(port, 1, stack)
        answer = extra.recv(100)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: " in answer
        assert _status_from("127.0.0.2", port) == 200  # another address has room
    # Room again from the first once the console saw its connections go.
    deadline = time.monotonic() + 10
    while (status := _status_from("127.0.0.1", port)) == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 200


def test_a_trusted_proxy_may_hold_more_than_one_address_s_share(
    own_console: Callable[..., ServerThread],
) -> None:
    """Every browser behind a proxy comes from its address."""
    port = own_console(
        connections=6, per_address=3, trusted_proxies="127.0.0.1"
    ).service.console_port
    with contextlib.ExitStack() as stack:
        _half_requests(port, 3, stack)
        assert _status_from("127.0.0.1", port) == 200


def test_a_connection_idle_too_long_is_closed(own_console: Callable[..., ServerThread]) -> None:
    """One that sent half a request line was held for good (helper-124)."""
    port = own_console(idle=0.5).service.console_port
    with contextlib.ExitStack() as stack:
        [idle] = _half_requests(port, 1, stack)
        assert idle.recv(100) == b""  # closed by the console


def _half_bodies(port: int, count: int, stack: contextlib.ExitStack) -> list[socket.socket]:
    """`count` changes that sent their headers, with a made-up token, and part
    of their body, then wait."""
    sent = []
    for _ in range(count):
        connection = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
        connection.sendall(
            f"POST /api/tokens HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
            + b"Authorization: Bearer made-up\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"role":'
        )
        sent.append(connection)
    return sent


def test_a_body_that_stops_arriving_is_answered_408_and_its_connection_closed(
    own_console: Callable[..., ServerThread],
) -> None:
    """A change whose body never finished arriving held its connection for
    good, whatever the idle limit: enough of them, with a made-up token,
    and the console answered 503 to everyone (helper-187)."""
    port = own_console(connections=2, idle=0.5).service.console_port
    page = f"http://127.0.0.1:{port}/"
    with contextlib.ExitStack() as stack:
        held = _half_bodies(port, 2, stack)
        assert _raw(page)[0] == 503  # every connection is taken
        for connection in held:
            connection.settimeout(15)
            answer = b""
            while chunk := connection.recv(1000):  # to its end: closed by the console
                answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), answer
            assert b"connection: close" in head.lower()
            assert json.loads(body)["error"].startswith("body:")
        # Room again once the console saw them go.
        deadline = time.monotonic() + 10
        while (status := _raw(page)[0]) == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == 200


def test_a_request_no_http_parser_reads_is_the_client_s_error_not_the_server_s(
    console_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone who reaches the port sends these (a scanner, a broken proxy):
    each was logged as the server's own error, with a traceback, and a client
    could fill the log with them before any token was asked for."""
    port = int(urllib.parse.urlsplit(console_url).port or 0)
    malformed = (
        b"GET /api/events?actions=" + b"a" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 9000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nno header\r\n\r\n",
        b"POST /api/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    for request in malformed:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(request)
            assert connection.recv(100).split()[1] == b"400", request[:40]
    assert errors_logged(caplog) == []


def test_a_request_no_http_parser_reads_is_answered_without_its_bytes_and_kept_from_sniffing(
    console_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's answer quoted the bytes it could not read (a path, a header
    line, a bearer token in it) in text/plain without the headers every other
    answer has (nosniff, the CSP's frame-ancestors, no-store), and its DEBUG
    line logged them: the token of a malformed Authorization header too."""
    port = int(urllib.parse.urlsplit(console_url).port or 0)
    token = "stk_" + "s3cr3t" * 4
    markup = b"<script>alert(1)</script>"
    malformed = (
        b"GET /" + markup * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + markup * 400 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() + b"\x01\r\n\r\n",
        b"POST /api/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: " + markup + b"\r\n\r\n",
        b"G" + markup + b"ET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    caplog.set_level(logging.DEBUG, logger=console_module.__name__)
    for request in malformed:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(request)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split()[1] == b"400", answer[:200]
        assert b"<script>" not in body and token.encode() not in body, body
        headers = head.decode("latin-1").lower()
        assert "x-content-type-options: nosniff" in headers, head
        assert "frame-ancestors 'none'" in headers and "cache-control: no-store" in headers, head
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "<script>" not in logged and token not in logged, logged
    assert errors_logged(caplog) == []


def test_a_console_on_another_address_than_loopback_is_warned_of(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """It serves plain HTTP: a browser's token crosses the network in clear.
    Started on every address, nothing said so."""
    warnings = []
    for listen in ("127.0.0.1:0", "localhost:0", "0.0.0.0:0"):
        caplog.clear()
        running = ServerThread(migrated_database_url, console_listen=listen)
        try:
            console = [r for r in caplog.records if r.name.startswith("sealtrail_server.console")]
            warnings.append([r.getMessage() for r in console if r.levelno == logging.WARNING])
        finally:
            running.close()
    assert warnings[:2] == [[], []], warnings
    [warning] = warnings[2]
    assert "0.0.0.0" in warning and "plain HTTP" in warning and "TLS" in warning, warning


def test_a_search_as_long_as_the_api_takes_is_taken(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """100 actions of up to 128 characters each: a URL over 8 KiB, refused
    by the console's HTTP parser in plain text, which named no parameter, and
    the page said "400 Bad Request"."""
    reader = console_server.token(tenant, "reader")
    actions = [f"{'a' * 100}.action_{i:03}" for i in range(101)]
    status, body = get(api + "events?actions=" + ",".join(actions[:100]), reader)
    assert status == 200, (status, body)
    status, body = get(api + "events?actions=" + ",".join(actions), reader)
    assert status == 400 and body["fields"][0]["field"] == "filter.actions", body


def _searched(api: str, token: str, query: dict[str, str]) -> list[dict[str, Any]]:
    """Every event the console's search finds for `query`, page after page."""
    found: list[dict[str, Any]] = []
    page_token = ""
    while True:
        paged = {**query, "page_token": page_token} if page_token else query
        status, body = get(api + f"events?{urllib.parse.urlencode(paged)}", token)
        assert status == 200, body
        found += body["events"]
        page_token = body["next_page_token"]
        if not page_token:
            return found


@pytest.mark.parametrize(("zone", "offset"), [("Asia/Kolkata", "+05:30"), ("", "Z")])
def test_counts_per_hour_and_day_are_what_the_search_finds_in_each(
    api: str, console_server: ServerThread, tenant: str, zone: str, offset: str
) -> None:
    """The activity chart's counts (ADR 0108): /api/counts reads the search's
    filter as /api/events does, and each hour or day of the zone asked for
    (UTC's without one) counts exactly the events the search finds in it."""
    start = datetime(2026, 11, 28, 17, 50, tzinfo=UTC)  # 23:20 in Kolkata: its days differ
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for minutes, action, outcome in [
            (0, "chart.read", "failure"),
            (5, "chart.read", "failure"),
            (9, "chart.write", "failure"),
            (40, "chart.read", "failure"),  # 18:30 UTC, 00:00 the next day in Kolkata
            (41, "chart.read", "success"),  # not matched: its outcome
            (70, "other.read", "failure"),  # not matched: its action
            (130, "chart.read", "denied"),
            (1450, "chart.write", "failure"),
            (3000, "chart.read", "failure"),
        ]:
            event = build_event(action=action, actor_id="u-chart", outcome=outcome)
            event.occurred_at.FromDatetime(start + timedelta(minutes=minutes))
            c.record(event)
    reader = console_server.token(tenant, "reader")
    search = {
        "actions": "chart.*",
        "outcomes": "failure, denied",
        "occurred_after": "2026-11-28T17:55:00Z",  # within an hour: that hour counts part of it
        "occurred_before": "2026-12-01T00:00:00Z",
    }
    found = _searched(api, reader, search)
    assert len(found) == 6
    where = ZoneInfo(zone or "UTC")
    for unit in ("hour", "day"):
        query = {**search, "group_by": unit, **({"time_zone": zone} if zone else {})}
        status, answer = get(api + f"counts?{urllib.parse.urlencode(query)}", reader)
        assert status == 200, answer
        expected: Counter[datetime] = Counter()
        for event in found:
            local = datetime.fromisoformat(event["occurred_at"]).astimezone(where)
            kept = {"minute": 0, "second": 0, "microsecond": 0}
            expected[local.replace(**kept, **({"hour": 0} if unit == "day" else {}))] += 1
        keys = [group["key"] for group in answer["groups"]]
        assert all(key.endswith(offset) for key in keys), keys
        counted = {datetime.fromisoformat(g["key"]): g["count"] for g in answer["groups"]}
        assert counted == expected, (unit, answer)
        assert keys == sorted(keys)  # in time order
        assert answer["total"] == len(found) and not answer["truncated"]
        assert answer["tree_size"] >= max(int(event["seq"]) for event in found)


def test_counts_refuse_what_the_search_refuses_and_a_grouping_they_do_not_draw(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    reader = console_server.token(tenant, "reader")
    assert get(api + "counts?group_by=day")[0] == 401
    status, body = get(api + "counts?group_by=day", console_server.token(tenant, "recorder"))
    assert status == 403 and body["code"] == "PERMISSION_DENIED"
    for query, field in [
        ("group_by=week", "group_by"),
        ("actions=a", "group_by"),
        ("group_by=day&group_by=hour", "group_by"),
        ("group_by=day&categories=nonsense", "categories"),
        ("group_by=day&occurred_after=yesterday", "occurred_after"),
        ("group_by=day&time_zone=Mars/Olympus", "time_zone"),
    ]:
        status, body = get(api + f"counts?{query}", reader)
        assert status == 400 and [f["field"] for f in body["fields"]] == [field], (query, body)


# A grouping of /api/counts -> the search's parameter its values filter by (the
# Breakdown panel's click), each value as the search takes it.
_BREAKDOWNS = {
    "action": "actions",
    "actor": "actor",
    "actor_type": "actor_types",
    "resource_type": "resource_type",
    "country": "country",
    "outcome": "outcomes",
    "severity": "severities",
    "category": "categories",
}


def test_counts_by_each_field_are_what_the_search_by_each_value_finds(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """The Breakdown panel's counts: /api/counts per action, actor, actor
    type, resource type, country, outcome, severity and category, largest first, each value
    finding with its search parameter exactly the events counted under it
    (the panel's click narrows the search so); events without the field
    under "". `limit` is the API's, passed on: a negative one is its refusal."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for actor, action, kind, country, outcome, severity, category in [
            ("u-ann", "doc.read", "doc", "FR", "success", "info", "data_access"),
            ("u-ann", "doc.read", "doc", "FR", "success", "info", "data_access"),
            ("u-ann", "doc.delete", "doc", "FR", "failure", "warning", "data_access"),
            ("u-bob", "doc.read", "folder", "KP", "denied", "critical", "security"),
            ("u-bob", "doc.share", "", "", "success", "info", ""),
        ]:
            fields: dict[str, Any] = {"action": action, "actor_id": actor, "outcome": outcome}
            fields |= {"severity": severity} | ({"category": category} if category else {})
            fields |= {"resource_type": kind, "resource_id": "r1"} if kind else {}
            fields |= {"country": country} if country else {}
            fields |= {"actor_type": "service"} if actor == "u-bob" else {}
            fields |= {"actor_email": "ann@example.com"} if actor == "u-ann" else {}
            c.record(**fields)
    reader = console_server.token(tenant, "reader")
    search = {"actions": "doc.*"}
    expected = {
        "action": [("doc.read", 3), ("doc.delete", 1), ("doc.share", 1)],
        "actor": [("u-ann", 3), ("u-bob", 2)],
        "actor_type": [("user", 3), ("service", 2)],  # u-ann's recorded without one
        "resource_type": [("doc", 3), ("", 1), ("folder", 1)],
        "country": [("FR", 3), ("", 1), ("KP", 1)],
        "outcome": [("success", 3), ("denied", 1), ("failure", 1)],
        "severity": [("info", 3), ("warning", 1), ("critical", 1)],  # ties by rank
        "category": [("data_access", 3), ("", 1), ("security", 1)],
    }
    for grouping, parameter in _BREAKDOWNS.items():
        query = urllib.parse.urlencode({**search, "group_by": grouping, "limit": "10"})
        status, answer = get(api + f"counts?{query}", reader)
        assert status == 200, (grouping, answer)
        groups = [(group["key"], group["count"]) for group in answer["groups"]]
        assert groups == expected[grouping], (grouping, groups)
        assert answer["total"] == 5 and answer["total_groups"] == len(groups)
        # Who each actor is beside its id (the API's `label`); no other grouping's.
        labelled = [group["label"] for group in answer["groups"] if "label" in group]
        assert labelled == (["ann@example.com", ""] if grouping == "actor" else []), grouping
        for key, counted in groups:
            if key:  # "" is no value a search takes: events without the field
                found = _searched(api, reader, {**search, parameter: key})
                assert len(found) == counted, (grouping, key, found)
    # The largest groups only, and how many there are in all.
    query = urllib.parse.urlencode({**search, "group_by": "actor", "limit": "1"})
    status, answer = get(api + f"counts?{query}", reader)
    assert status == 200, answer
    assert answer["groups"] == [{"key": "u-ann", "count": 3, "label": "ann@example.com"}]
    assert answer["truncated"] and answer["total_groups"] == 2
    for limit, field in [
        ("-1", "limit"),
        ("ten", "limit"),
        ("1e3", "limit"),
        ("2147483648", "limit"),
    ]:
        status, body = get(api + f"counts?group_by=action&limit={limit}", reader)
        assert status == 400 and [f["field"] for f in body["fields"]] == [field], (limit, body)
    for grouping in ("Action", "resource_id"):  # not the name of a grouping
        status, body = get(api + f"counts?group_by={grouping}", reader)
        assert status == 400 and [f["field"] for f in body["fields"]] == ["group_by"], body
    status, body = get(api + "counts?group_by=action&limit=1&limit=2", reader)
    assert status == 400 and [f["field"] for f in body["fields"]] == ["limit"], body


def test_counts_by_ip_resource_and_recording_token_are_what_their_search_finds(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """Who did it, from which IP: the Breakdown's `group_by=ip` (an address
    mapped into IPv6 counted as its IPv4 one, IPv6 written as PostgreSQL
    writes it), `resource` (the pair as a JSON array: a `/` in either part
    keeps two resources apart) and `recorded_by` (the recording token's id),
    each value finding with its search parameters exactly the events counted
    under it, as the panel's click narrows the search; "" for events without
    one."""
    first, second = (console_server.token(tenant, "recorder") for _ in range(2))
    for token, ip, kind, resource_id in [
        (first, "203.0.113.7", "repository", "acme/web"),
        (first, "::ffff:203.0.113.7", "repository", "acme/web"),
        (first, "203.0.113.7", "repository/acme", "web"),  # "type/id" would be the same
        (second, "2001:DB8:0::0:1", "repository", ""),  # a type alone: no id to search by
        (second, "", "", ""),
    ]:
        with AuditClient(console_server.target, token=token) as c:
            c.record(action="doc.read", actor_id="u-ann", ip=ip, resource_type=kind,
                     resource_id=resource_id)  # fmt: skip
    reader = console_server.token(tenant, "reader")
    search = {"actions": "doc.*"}

    def counted(grouping: str) -> list[tuple[str, int]]:
        query = urllib.parse.urlencode({**search, "group_by": grouping, "limit": "10"})
        status, answer = get(api + f"counts?{query}", reader)
        assert status == 200 and answer["total"] == 5, (grouping, answer)
        return [(group["key"], group["count"]) for group in answer["groups"]]

    assert counted("ip") == [("203.0.113.7", 3), ("", 1), ("2001:db8::1", 1)]
    for key, count in counted("ip")[::2]:
        assert len(_searched(api, reader, {**search, "ip": key})) == count, key
    assert counted("resource") == [
        ('["repository","acme/web"]', 2),
        ("", 1),
        ('["repository",""]', 1),
        ('["repository/acme","web"]', 1),
    ]
    for key, count in (counted("resource")[0], counted("resource")[3]):
        kind, resource_id = json.loads(key)
        found = _searched(
            api, reader, {**search, "resource_type": kind, "resource_id": resource_id}
        )
        assert [(e["resource"]["type"], e["resource"]["id"]) for e in found] == [
            (kind, resource_id)
        ] * count
    tokens = counted("recorded_by")
    assert [count for _, count in tokens] == [3, 2] and all(key for key, _ in tokens)
    for key, count in tokens:
        found = _searched(api, reader, {**search, "recorded_by": key})
        assert [event["recorded_by"]["token_id"] for event in found] == [key] * count


def test_a_count_past_its_time_says_to_narrow_the_range(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """CountEvents refused for its time (SEALTRAIL_COUNT_TIMEOUT) is the
    console's 409 in the API's words: narrow the time range."""
    own = ServerThread(migrated_database_url, console_listen="127.0.0.1:0", count_timeout=0.5)
    try:
        url = f"http://127.0.0.1:{own.service.console_port}/api/counts?group_by=day"
        reader = own.token(tenant, "reader")
        # A count of every month reads events_default too: held, the count waits for it.
        with sql.transaction():
            sql.execute("LOCK TABLE events_default IN ACCESS EXCLUSIVE MODE")
            status, body = get(url, reader)
        assert status == 409 and body["code"] == "FAILED_PRECONDITION", body
        assert body["reason"] == "COUNT_TIMEOUT" and "narrow the time range" in body["error"]
    finally:
        own.close()


def test_a_count_the_browser_left_ends_and_lets_the_next_one_run(
    api: str,
    console_server: ServerThread,
    tenant: str,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tenant runs one count at a time, and the console went on with a
    count after the browser had left it (a filter applied again, the tab
    closed): the page's next count, that of the filter it now shows, was
    refused (429) until the one nobody would read had ended, up to
    SEALTRAIL_COUNT_TIMEOUT on a large log. The count ends with its browser."""
    running = store_counts.count_statement
    slow_ones = [True]  # the first count is slow (a large log); the next ones are not

    def slow(tenant_id: str, *args: Any, **kwargs: Any) -> Any:
        query, params = running(tenant_id, *args, **kwargs)
        if tenant_id != tenant or not slow_ones:
            return query, params
        slow_ones.pop()
        held = pgsql.SQL("SELECT q.* FROM ({}) AS q CROSS JOIN pg_sleep(20.5)")
        return held.format(query), params

    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="door.open", actor_id="u-kim")  # a log with nothing is not counted
    monkeypatch.setattr(store_counts, "count_statement", slow)
    reader = console_server.token(tenant, "reader")
    left = http.client.HTTPConnection("127.0.0.1", console_server.service.console_port, timeout=30)
    left.request("GET", "/api/counts?group_by=day", headers={"Authorization": f"Bearer {reader}"})
    deadline = time.monotonic() + 20
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE state = 'active'"
            " AND query LIKE '%%pg_sleep(20.5)%%' AND pid <> pg_backend_pid()"
        ).fetchall():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    left.close()  # the browser leaves
    started = time.monotonic()
    while (answer := get(api + "counts?group_by=day", reader))[0] == 429:
        assert time.monotonic() - started < 10, answer
        time.sleep(0.2)
    assert answer[0] == 200, answer
    # ... and its statement with it, which held a connection of the bulk reads' share.
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        while conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE state = 'active'"
            " AND query LIKE '%%pg_sleep(20.5)%%' AND pid <> pg_backend_pid()"
        ).fetchall():
            assert time.monotonic() - started < 10
            time.sleep(0.05)


def test_actions_left_out_are_left_out_of_the_search_and_the_count(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`exclude_actions=audit_log.*` shows the activity without the log's own
    records of the searches that looked at it (helper-366)."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        client.record(action="doc.read", actor_id="ann")
        client.record(action="doc.share", actor_id="ann")
    reader = console_server.token(tenant, "reader")
    assert get(api + "events", reader)[0] == 200  # recorded: audit_log.queried
    query = urllib.parse.urlencode({"exclude_actions": "audit_log.*, *.read"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 200, body
    assert [event["action"] for event in body["events"]] == ["doc.share"]
    status, body = get(api + "events?" + urllib.parse.urlencode({"exclude_actions": "Doc"}), reader)
    assert status == 400 and "exclude_actions" in json.dumps(body), body


def test_one_country_is_searched_and_a_country_that_is_no_code_refused(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`country=kp`: the events from KP, as the API's filter finds them (helper-369)."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        client.record(action="user.login", actor_id="ann", country="FR")
        client.record(action="user.login", actor_id="bob", country="KP")
        client.record(action="user.login", actor_id="cy")
    reader = console_server.token(tenant, "reader")
    status, body = get(api + "events?" + urllib.parse.urlencode({"country": "kp"}), reader)
    assert status == 200, body
    assert [event["actor"]["id"] for event in body["events"]] == ["bob"]
    status, body = get(api + "events?" + urllib.parse.urlencode({"country": "KPX"}), reader)
    assert status == 400 and "country" in json.dumps(body), body


def test_an_actor_email_domain_finds_anyone_at_it_and_no_look_alike(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`actor_email_domain=contractor.example`: a vendor's people, in any
    case, not `evilcontractor.example` (helper-371)."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for email in ("Bob@Contractor.Example", "eve@evilcontractor.example"):
            client.record(action="doc.read", actor_id=email.split("@")[0], actor_email=email)
    reader = console_server.token(tenant, "reader")
    query = urllib.parse.urlencode({"actor_email_domain": "CONTRACTOR.example"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 200, body
    assert [event["actor"]["id"] for event in body["events"]] == ["Bob"]
    query = urllib.parse.urlencode({"actor_email_domain": "bob@contractor.example"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 400 and "actor_email_domain" in json.dumps(body), body


def test_exact_severities_are_searched_and_counted(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`severities=info,critical` asks what `min_severity` could not: those
    levels, none between (helper-370); an unknown one is a 400 naming it."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for level in ("info", "warning", "error", "critical"):
            client.record(action=f"doc.{level}", actor_id="ann", severity=level)
    reader = console_server.token(tenant, "reader")
    query = urllib.parse.urlencode({"actions": "doc.*", "severities": "info, critical"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 200, body
    assert [event["action"] for event in body["events"]] == ["doc.critical", "doc.info"]
    query = urllib.parse.urlencode({"severities": "warning,notice"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 400 and "severities" in json.dumps(body), body


def test_a_user_agent_text_finds_its_clients_and_a_control_character_is_refused(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`user_agent=CURL`: the events of curl, in any case, `%` no wildcard (helper-378)."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        client.record(action="user.login", actor_id="ann", user_agent="curl/8.5.0")
        client.record(action="user.login", actor_id="bob", user_agent="Mozilla/5.0")
        client.record(action="user.login", actor_id="cy", user_agent="50%_off")
        client.record(action="user.login", actor_id="dee")
    reader = console_server.token(tenant, "reader")
    for text, found in (("CURL", ["ann"]), ("0%_", ["cy"]), ("%", ["cy"])):
        query = urllib.parse.urlencode({"user_agent": text, "actions": "user.login"})
        status, body = get(api + f"events?{query}", reader)
        assert status == 200, body
        assert [event["actor"]["id"] for event in body["events"]] == found, text
    status, body = get(api + "events?" + urllib.parse.urlencode({"user_agent": "curl\n"}), reader)
    assert status == 400 and "user_agent" in json.dumps(body), body


def test_actor_types_find_their_actors_and_an_unknown_one_is_refused(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`actor_types=service,system`: what no person did (helper-409); a type
    that is none, or UNSPECIFIED, is a 400 naming it."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for kind in ("user", "api_key", "service", "system"):
            client.record(action=f"doc.{kind}", actor_id="a1", actor_type=kind)
    reader = console_server.token(tenant, "reader")
    query = urllib.parse.urlencode({"actions": "doc.*", "actor_types": "service, SYSTEM"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 200, body
    assert [event["action"] for event in body["events"]] == ["doc.system", "doc.service"]
    for bad in ("robot", "unspecified"):
        query = urllib.parse.urlencode({"actor_types": bad})
        status, body = get(api + f"events?{query}", reader)
        assert status == 400 and "actor_types" in json.dumps(body), body


def test_countries_and_resource_types_find_any_listed_and_a_bad_one_is_refused(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`countries=DE,FR` and `resource_types=source,file`: any of them
    (helper-414); a bad value is a 400 naming it by index."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for country, kind in (("DE", "source"), ("FR", "file"), ("US", "file"), ("FR", "qa")):
            client.record(
                action=f"doc.{country.lower()}{kind}", actor_id="a1", country=country,
                resource_type=kind, resource_id="r1",
            )  # fmt: skip
    reader = console_server.token(tenant, "reader")
    query = urllib.parse.urlencode({"countries": "de, fr", "resource_types": "source,file"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 200, body
    assert [event["action"] for event in body["events"]] == ["doc.frfile", "doc.desource"]
    for bad in ({"countries": "DE,Germany"}, {"resource_types": "file,a\x00"}):
        status, body = get(api + "events?" + urllib.parse.urlencode(bad), reader)
        field = next(iter(bad))
        assert status == 400 and f"{field}[1]" in json.dumps(body), body


def test_http_status_classes_find_failed_requests_and_a_bad_one_is_refused(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`http_status_classes=5xx,429` (helper-427); a value that is no class
    or code is a 400 naming it. The events' context carries the request."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for code in (200, 429, 404, 503):
            client.record(action=f"api.s{code}", actor_id="k1", http_status_code=code,
                          http_method="get", duration_ms=1.5)  # fmt: skip
    reader = console_server.token(tenant, "reader")
    query = urllib.parse.urlencode({"actions": "api.*", "http_status_classes": "5xx, 429"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 200, body
    assert [event["action"] for event in body["events"]] == ["api.s503", "api.s429"]
    assert body["events"][0]["context"]["http_status_code"] == 503
    assert body["events"][0]["context"]["http_method"] == "GET"
    for bad in ("6xx", "5xx;"):
        query = urllib.parse.urlencode({"http_status_classes": bad})
        status, body = get(api + f"events?{query}", reader)
        assert status == 400 and "http_status_classes" in json.dumps(body), body


def test_http_routes_find_the_calls_of_those_endpoints_and_a_bad_one_is_refused(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`http_routes=/v1/a/{id}, /v1/b` (helper-434): each exactly as recorded,
    and counted by route as the Breakdown counts them; a route no event can
    hold (a query string) is a 400 naming it by its index."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for route in ("/v1/a/{id}", "/v1/A/{id}", "/v1/b", "/v1/b/c"):
            client.record(action="api.call", actor_id="k1", http_route=route,
                          description=route)  # fmt: skip
    reader = console_server.token(tenant, "reader")
    query = urllib.parse.urlencode({"http_routes": "/v1/a/{id}, /v1/b"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 200, body
    assert [event["description"] for event in body["events"]] == ["/v1/b", "/v1/a/{id}"]
    status, body = get(api + f"counts?group_by=http_route&{query}", reader)
    assert status == 200, body
    assert sorted((g["key"], g["count"]) for g in body["groups"]) == [
        ("/v1/a/{id}", 1), ("/v1/b", 1)
    ]  # fmt: skip
    query = urllib.parse.urlencode({"http_routes": "/v1/b,/v1/a?id=7"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 400 and "http_routes[1]" in json.dumps(body), body


def test_an_actor_prefix_finds_the_actors_starting_so_and_a_bad_one_is_refused(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`actor_prefix=ali`: ids starting so as given, emails in any case,
    every character itself (helper-426); with `actor` a 400 naming it, and
    what the Actor field's suggestions ask: the actors starting so, counted."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for actor_id, email in (("alice", ""), ("Alina", ""), ("u1", "ALI@x.example"), ("a%", "")):
            client.record(action="doc.read", actor_id=actor_id, actor_email=email)
    reader = console_server.token(tenant, "reader")
    status, body = get(api + "events?actor_prefix=ali", reader)
    assert status == 200, body
    assert [event["actor"]["id"] for event in body["events"]] == ["u1", "alice"]
    status, body = get(api + "events?actor_prefix=" + urllib.parse.quote("a%"), reader)
    assert status == 200 and [e["actor"]["id"] for e in body["events"]] == ["a%"], body
    status, body = get(api + "counts?group_by=actor&limit=10&actor_prefix=Ali", reader)
    assert status == 200, body
    assert sorted(group["key"] for group in body["groups"]) == ["Alina", "u1"]  # ids as given
    status, body = get(api + "events?actor=alice&actor_prefix=ali", reader)
    assert status == 400 and "actor_prefix" in json.dumps(body), body


def test_slow_requests_are_found_and_counted_per_route_and_status(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`min_duration_ms=1000` (helper-431): the requests that took a second
    or longer; the Breakdown's `group_by=http_route` and `http_status`, ""
    for events without one; a value that is no number the console's 400, one
    out of range the API's, each naming `min_duration_ms`."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for route, code, ms in (("/v1/a", 200, 12.5), ("/v1/a", 503, 1000),
                                ("/v1/b", 503, 2500), ("", 0, 0)):  # fmt: skip
            client.record(action="api.call", actor_id="k1", http_route=route,
                          http_status_code=code, duration_ms=ms)  # fmt: skip
    reader = console_server.token(tenant, "reader")
    slow = {"actions": "api.call", "min_duration_ms": "1000"}
    status, body = get(api + "events?" + urllib.parse.urlencode(slow), reader)
    assert status == 200, body
    assert [e["context"]["duration_ms"] for e in body["events"]] == [2500, 1000]
    for grouping, expected in (
        ("http_route", [("/v1/a", 2), ("", 1), ("/v1/b", 1)]),
        ("http_status", [("503", 2), ("", 1), ("200", 1)]),
    ):
        query = urllib.parse.urlencode({"actions": "api.call", "group_by": grouping})
        status, body = get(api + f"counts?{query}", reader)
        assert status == 200, body
        assert [(g["key"], g["count"]) for g in body["groups"]] == expected
    query = urllib.parse.urlencode(slow | {"group_by": "http_route"})
    status, body = get(api + f"counts?{query}", reader)
    assert [(g["key"], g["count"]) for g in body["groups"]] == [("/v1/a", 1), ("/v1/b", 1)]
    for bad in ("fast", "-5", "1e3", "86400000"):
        query = urllib.parse.urlencode({"min_duration_ms": bad})
        status, body = get(api + f"events?{query}", reader)
        assert status == 400 and "min_duration_ms" in json.dumps(body), (bad, body)


def test_api_requests_or_the_rest_are_found_by_a_route_present_or_absent(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`http_route_presence=present|absent` (helper-557), the API's enum by
    its short name in any case: the Breakdown per route of API requests has
    no `""` row; another value is the console's 400 naming it."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for route, ms in (("/v1/a", 12.5), ("", 40.0), ("/v1/b", 0)):
            client.record(action="api.call", actor_id="k1", http_route=route, duration_ms=ms)
    reader = console_server.token(tenant, "reader")
    for presence, routes in (("present", ["/v1/b", "/v1/a"]), ("ABSENT", [None])):
        search = {"actions": "api.call", "http_route_presence": presence}
        status, body = get(api + "events?" + urllib.parse.urlencode(search), reader)
        assert status == 200, body
        assert [e.get("context", {}).get("http_route") for e in body["events"]] == routes
    query = urllib.parse.urlencode(
        {"actions": "api.call", "http_route_presence": "present", "group_by": "http_route"}
    )
    status, body = get(api + f"counts?{query}", reader)
    assert status == 200, body
    assert sorted((g["key"], g["count"]) for g in body["groups"]) == [("/v1/a", 1), ("/v1/b", 1)]
    for bad in ("yes", "unspecified_x", "1"):
        query = urllib.parse.urlencode({"http_route_presence": bad})
        status, body = get(api + f"events?{query}", reader)
        assert status == 400 and "http_route_presence" in json.dumps(body), (bad, body)


def _look(
    api: str, token: str, search: dict[str, str], *, grouping: str = "action"
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """One search of the page (console.js `reload`): its first page, which
    announces the counts its page draws beside it (`count`), then the chart's
    count and the Breakdown panel's, each naming the view the page answered."""
    chart = {"group_by": "day", "time_zone": "Asia/Kolkata"}
    panel = {"group_by": grouping, "limit": "10"}
    announced = [("count", urllib.parse.urlencode(chart)), ("count", urllib.parse.urlencode(panel))]
    status, page = get(
        api + f"events?{urllib.parse.urlencode([*search.items(), *announced])}", token
    )
    assert status == 200, page
    view = {"view": page["view"]} if "view" in page else {}
    counted = []
    for count in (chart, panel):
        status, answer = get(
            api + f"counts?{urllib.parse.urlencode({**search, **count, **view})}", token
        )
        assert status == 200, answer
        counted.append(answer)
    return page, counted[0], counted[1]


def _reads(console_server: ServerThread, tenant: str) -> list[Any]:
    """The tenant's records of reads (`audit_log.queried`), oldest first, but
    for those of this function's own Queries (of that action alone)."""
    mine = {"actions": ["audit_log.queried"]}
    with AuditClient(console_server.target, token=console_server.token(tenant)) as admin:
        read = admin.query(build_filter(actions="audit_log.queried"), order="oldest")
        return [r for r in read if json_format.MessageToDict(r.details)["filter"] != mine]


def test_one_search_of_the_console_is_one_record_saying_all_it_read(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """The page's search is a Query and two counts (the chart's, the Breakdown
    panel's): each was an `audit_log.queried` of its own, three records with one
    filter for one look (ADR 0137). Now the first page's record says the counts
    its view makes, and those counts are not recorded again."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for actor in ("u-ann", "u-bob", "u-ann"):
            c.record(action="look.read", actor_id=actor)
    reader = console_server.token(tenant, "reader")
    search = {"actions": "look.*,audit_log.queried"}
    page, chart, panel = _look(api, reader, search, grouping="actor")
    reads = _reads(console_server, tenant)
    assert len(reads) == 1, [dict(read.details) for read in reads]
    [record] = reads
    details = json_format.MessageToDict(record.details)
    assert details["filter"] == {"actions": ["look.*", "audit_log.queried"]}
    assert details["order"] == "newest"
    assert details["counts"] == [
        {"group_by": "day", "limit": 1000, "time_zone": "Asia/Kolkata"},
        {"group_by": "actor", "limit": 10},
    ]
    # The page, the chart and the panel read one log: the one before the record.
    assert len(page["events"]) == 3
    assert chart["total"] == panel["total"] == 3
    assert chart["tree_size"] == panel["tree_size"] == record.seq - 1
    assert {g["key"]: g["count"] for g in panel["groups"]} == {"u-ann": 2, "u-bob": 1}


def test_a_read_the_view_does_not_cover_is_recorded_as_its_own(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """A view covers the counts its first page's record says, once each, for
    its own token and filter: any other read naming it is recorded, and so
    are a Query through gRPC, the CLI's query and a search of another filter."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="look.read", actor_id="u-ann")
    reader, other = console_server.token(tenant, "reader"), console_server.token(tenant, "reader")
    search = {"actions": "look.*"}
    panel = {"group_by": "action", "limit": "10"}
    status, page = get(
        api
        + f"events?{urllib.parse.urlencode({**search, 'count': urllib.parse.urlencode(panel)})}",
        reader,
    )
    assert status == 200 and page["view"], page
    assert len(_reads(console_server, tenant)) == 1
    for token, asked in [
        (other, {**search, **panel}),  # another token
        (reader, {"actions": "look.write", **panel}),  # another filter
        (reader, {**search, "group_by": "actor", "limit": "10"}),  # a count not announced
        (reader, {**search, **panel}),  # the one announced: covered, once
        (reader, {**search, **panel}),  # ... and not twice
    ]:
        status, answer = get(
            api + f"counts?{urllib.parse.urlencode({**asked, 'view': page['view']})}", token
        )
        assert status == 200, answer
    reads = _reads(console_server, tenant)
    assert [json_format.MessageToDict(r.details).get("group_by") for r in reads] == [
        None,
        "action",
        "action",
        "actor",
        "action",
    ], reads
    assert len({r.actor.id for r in reads}) == 2
    # A view's id is the console's to name: a bad one is refused, naming it.
    status, answer = get(
        api + f"counts?{urllib.parse.urlencode({**search, **panel, 'view': 'a b'})}", reader
    )
    assert status == 400 and answer["fields"][0]["field"] == "view", answer
    # A search of a changed filter, a Query through gRPC and the CLI's query: each its own.
    _look(api, reader, {"actions": "look.read"})
    with AuditClient(console_server.target, token=reader) as client:
        assert len(list(client.query(build_filter(actions="look.*")))) == 1
    env = {"SEALTRAIL_SERVER": console_server.target, "SEALTRAIL_TOKEN": reader}
    done = CliRunner().invoke(client_cli.main, ["query", "--action", "look.*"], env=env)
    assert done.exit_code == 0, done.output
    later = _reads(console_server, tenant)[len(reads) :]
    assert [json_format.MessageToDict(r.details)["filter"] for r in later] == [
        {"actions": ["look.read"]},
        {"actions": ["look.*"]},
        {"actions": ["look.*"]},
    ], later
    assert "counts" in json_format.MessageToDict(later[0].details)


def test_counts_by_credential_narrow_the_search_by_its_id(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """The Breakdown by credential (helper-443): `group_by=credential`, each
    key its kind, id and hint as a JSON array ("" for events without one),
    its id finding with `credential_id` the events counted under it."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for kind, key_id, hint in (("api_key", "key_a", "a1b2"), ("api_key", "key_a", "a1b2"),
                                   ("api_key", "key_b", ""), ("", "", "")):  # fmt: skip
            credential = {"credential_kind": kind, "credential_id": key_id} if kind else {}
            credential |= {"credential_hint": hint} if hint else {}
            client.record(action="api.call", actor_id="svc", **credential)
    reader = console_server.token(tenant, "reader")
    search = {"actions": "api.call"}
    query = urllib.parse.urlencode(search | {"group_by": "credential"})
    status, body = get(api + f"counts?{query}", reader)
    assert status == 200, body
    groups = [(g["key"], g["count"]) for g in body["groups"]]
    assert groups == [('["api_key","key_a","a1b2"]', 2), ("", 1), ('["api_key","key_b",""]', 1)]
    for key, counted in groups:
        if key:
            found = _searched(api, reader, {**search, "credential_id": json.loads(key)[1]})
            assert len(found) == counted, (key, found)


def test_changed_fields_find_who_changed_a_field_and_a_bad_one_is_refused(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """`changed_fields=rate_limit,limits.rpm` (helper-444): the events with a
    change of any of them, each exactly as recorded; a name with a NUL (the
    one character Record refuses in a field's name) is a 400 naming it."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for action, field in (("plan.a", "rate_limit"), ("plan.b", "limits.rpm"),
                              ("plan.c", "limits"), ("plan.d", "Rate_Limit")):  # fmt: skip
            client.record(action=action, actor_id="u1", changes=[(field, 1, 2)])
    reader = console_server.token(tenant, "reader")
    query = urllib.parse.urlencode(
        {"actions": "plan.*", "changed_fields": "rate_limit, limits.rpm"}
    )
    status, body = get(api + f"events?{query}", reader)
    assert status == 200, body
    assert [event["action"] for event in body["events"]] == ["plan.b", "plan.a"]
    query = urllib.parse.urlencode({"changed_fields": "role,a\x00b"})
    status, body = get(api + f"events?{query}", reader)
    assert status == 400 and "changed_fields[1]" in json.dumps(body), body


@pytest.mark.parametrize(
    ("grouping", "keys"),
    [
        ("credential", {'["api_key","key_a","a1b2"]': 1, '["api_key","key_b",""]': 1}),
        ("ip", {"203.0.113.9": 1, "2001:db8::1": 1}),
        ("resource", {'["plan","p1"]': 1, '["plan","p/2"]': 1}),
    ],
)
def test_a_search_of_a_route_and_a_changed_field_by_a_new_grouping_is_one_record(
    api: str, console_server: ServerThread, tenant: str, grouping: str, keys: dict[str, int]
) -> None:
    """A search narrowed by `http_routes` and `changed_fields` (helper-449),
    its Breakdown by credential, IP address or resource: one record (ADR
    0137), its details the filter's two lists as the API names them and the
    count by that grouping; the panel's keys as the count by it keys them."""
    events = [
        ("/v1/plans/{id}", "rate_limit", "key_a", "a1b2", "203.0.113.9", "p1"),
        ("/v1/plans/{id}", "limits.rpm", "key_b", "", "2001:db8:0:0::1", "p/2"),
        ("/v1/teams/{id}", "rate_limit", "key_c", "", "198.51.100.1", "t1"),  # another route
        ("/v1/plans/{id}", "name", "key_d", "", "198.51.100.2", "p3"),  # another field
    ]
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for route, field, key_id, hint, ip, resource_id in events:
            credential = {"credential_hint": hint} if hint else {}
            c.record(action="plan.update", actor_id="svc", http_route=route, ip=ip,
                     changes=[(field, 1, 2)], resource_type="plan", resource_id=resource_id,
                     credential_kind="api_key", credential_id=key_id, **credential)  # fmt: skip
    reader = console_server.token(tenant, "reader")
    search = {"http_routes": "/v1/plans/{id}", "changed_fields": "rate_limit, limits.rpm"}
    page, chart, panel = _look(api, reader, search, grouping=grouping)
    assert len(page["events"]) == 2 and chart["total"] == panel["total"] == 2
    assert {g["key"]: g["count"] for g in panel["groups"]} == keys
    [record] = _reads(console_server, tenant)
    details = json_format.MessageToDict(record.details)
    assert details["filter"] == {
        "httpRoutes": ["/v1/plans/{id}"],
        "changedFields": ["rate_limit", "limits.rpm"],
    }
    assert details["counts"][1] == {"group_by": grouping, "limit": 10}
    assert panel["tree_size"] == record.seq - 1


def test_a_search_by_recording_token_and_a_changed_field_is_one_record(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """The Breakdown by recording token of a search of a changed field: one
    record (ADR 0137), keyed by the recorders' token ids."""
    recorder = console_server.token(tenant, "recorder")
    with AuditClient(console_server.target, token=recorder) as c:
        recorded = c.record(action="plan.update", actor_id="svc", changes=[("rate_limit", 1, 2)])
        c.record(action="plan.update", actor_id="svc", changes=[("name", 1, 2)])
    reader = console_server.token(tenant, "reader")
    page, _, panel = _look(api, reader, {"changed_fields": "rate_limit"}, grouping="recorded_by")
    assert [event["id"] for event in page["events"]] == [recorded.event.id]
    assert {g["key"]: g["count"] for g in panel["groups"]} == {
        recorded.event.recorded_by.token_id: 1
    }
    [record] = _reads(console_server, tenant)
    details = json_format.MessageToDict(record.details)
    assert details["filter"] == {"changedFields": ["rate_limit"]}
    assert details["counts"][1] == {"group_by": "recorded_by", "limit": 10}
