"""The console's JSON API without a browser: it is the gRPC API's access, no
more (no token, a recorder's, another tenant's), and its errors are clear."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from sealtrail import AuditClient, build_event
from tests.conftest import ServerThread


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
            return answer.status, json.loads(body) if body.startswith(b"{") else body
    except urllib.error.HTTPError as error:
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
    assert status == 400 and "format" in body["error"]
    status, body = get(api + "proof?seq=999999", reader)
    assert status == 404
    for bad in ("proof?seq=%C2%B2", "proof?seq=99999999999999999999", "stream?after_seq=x"):
        status, body = get(api + bad, reader)  # "²" is a digit to str.isdigit, not to int()
        assert status == 400 and ("seq" in body["error"]), (bad, status, body)


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
