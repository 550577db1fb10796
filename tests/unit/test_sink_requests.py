"""Which API request an event was, in the messages people read
(docs/forwarding.md): a chat line, a PagerDuty summary and an email's
Subject say `GET /v1/orders/{id} -> 503 in 1200 ms` (the parts the event
records, nothing when it records none: ADR 0136), an alert its trigger's;
an email's body and a page's custom_details carry them as fields. The
requests as the forwarder sends them, from stored records."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.policy import default
from typing import Any

from sealtrail_server.domain.chat_text import ALERT_MARK, MAX_DESCRIPTION, MAX_VALUE
from sealtrail_server.domain.event import MAX_HTTP_ROUTE
from sealtrail_server.forward.destinations import PAGERDUTY_SUMMARY, Sender, requests
from tests.unit.test_chat_sink_units import CHAT, NOW, pending, record
from tests.unit.test_sink_origins import EMAIL, LOCATED, PAGERDUTY, WHEN

ROUTE = "/v1/orders/{id}"
FULL = {"http_method": "GET", "http_route": ROUTE, "http_status_code": 503, "duration_ms": 1200}


def _records() -> list[dict[str, Any]]:
    """Every part, with an origin, each part alone, a fraction of a
    millisecond, a status without a method or route, and none."""
    return [
        record(1, context=FULL),
        record(2, context={**LOCATED, **FULL, "duration_ms": 12.5}),
        record(3, context={"http_method": "POST"}),
        record(4, context={"http_route": ROUTE}),
        record(5, context={"http_status_code": 404}),
        record(6, context={"duration_ms": 0.0004}),
        record(7, context={"http_status_code": 429, "duration_ms": 3}),
        record(8, context={"ip": "10.1.2.3"}),
        record(9),
    ]


ORIGIN = " from 81.2.69.7 (FR, located)"
# Each record's origin and request as its line says them.
SAID = [
    ("", f" via GET {ROUTE} -> 503 in 1200 ms"),
    (ORIGIN, f" via GET {ROUTE} -> 503 in 12.5 ms"),
    ("", " via POST"),
    ("", f" via {ROUTE}"),
    ("", " via HTTP -> 404"),
    ("", " via HTTP in 0.0004 ms"),
    ("", " via HTTP -> 429 in 3 ms"),
    (" from 10.1.2.3", ""),
    ("", ""),
]


def _said(seq: int) -> str:
    origin, request = SAID[seq - 1]
    return (
        f"[info] document.share by alice{origin} on document/d-1{request} (success) {WHEN}"
        f" (tenant t-1, seq {seq})"
    )


def _chat(said: str) -> str:
    """`said` as a chat line says it: its arrow escaped as Slack asks."""
    return said.replace(" -> ", " -&gt; ")


def _pages(sender: Sender, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        json.loads(sent.body)["payload"]
        for data in records
        for sent in requests(sender, [pending(data)], now=NOW)
    ]


def _mails(records: list[dict[str, Any]]) -> list[Any]:
    return [
        message_from_bytes(sent.body, policy=default)
        for data in records
        for sent in requests(EMAIL, [pending(data)], now=NOW)
    ]


def _subject(mail: Any) -> str:
    """A mail's Subject, unfolded: a Subject folded right after `Subject:`
    (as the SMTP policy folds some of 79 characters or more) is read back by
    the standard library's parser with the fold's space before it."""
    return str(mail["Subject"]).lstrip()


def _request_fields(mail: Any) -> list[str]:
    return [
        told
        for told in mail.get_content().splitlines()
        if told.startswith(("HTTP method:", "HTTP route:", "HTTP status:", "Duration:"))
    ]


def test_a_chat_line_says_the_request_with_the_parts_recorded() -> None:
    [sent] = requests(CHAT, [pending(data) for data in _records()], now=NOW)
    assert json.loads(sent.body)["text"].split("\n") == [_chat(_said(seq)) for seq in range(1, 10)]


def test_a_pages_summary_and_a_mails_subject_say_the_request() -> None:
    said = [_said(seq) for seq in range(1, 10)]
    assert [page["summary"] for page in _pages(PAGERDUTY, _records())] == said
    assert [_subject(mail) for mail in _mails(_records())] == said


def test_a_mails_body_has_the_request_as_fields() -> None:
    assert [_request_fields(mail) for mail in _mails(_records())] == [
        ["HTTP method: GET", f"HTTP route: {ROUTE}", "HTTP status: 503", "Duration: 1200 ms"],
        ["HTTP method: GET", f"HTTP route: {ROUTE}", "HTTP status: 503", "Duration: 12.5 ms"],
        ["HTTP method: POST"],
        [f"HTTP route: {ROUTE}"],
        ["HTTP status: 404"],
        ["Duration: 0.0004 ms"],
        ["HTTP status: 429", "Duration: 3 ms"],
        [],
        [],
    ]
    told = _mails([record(1, context={**LOCATED, **FULL})])[0].get_content().splitlines()
    assert told[told.index("HTTP method: GET") - 2 : told.index("Duration: 1200 ms") + 1] == [
        "IP address: 81.2.69.7",
        "Country: FR (located by the server from the IP address, in its GeoIP database)",
        "HTTP method: GET",
        f"HTTP route: {ROUTE}",
        "HTTP status: 503",
        "Duration: 1200 ms",
    ]


def test_a_pages_custom_details_carry_the_request_as_fields() -> None:
    """As the sink's format writes the event: Sealtrail JSON's context, or
    OCSF's http_request, http_response and (the duration) unmapped."""
    [page] = _pages(PAGERDUTY, [record(1, context={**FULL, "duration_ms": 12.5})])
    assert page["custom_details"]["context"] == {**FULL, "duration_ms": 12.5}
    ocsf = Sender("t-1", "s-1", "pagerduty", "ocsf", PAGERDUTY.destination)
    [page] = _pages(ocsf, [record(1, context={**FULL, "duration_ms": 12.5})])
    details = page["custom_details"]
    assert details["http_request"] == {"http_method": "GET", "url": {"path": ROUTE}}
    assert details["http_response"] == {"code": 503}
    assert details["unmapped"]["duration_ms"] == 12.5


def test_caller_text_in_a_route_cannot_mention_or_link() -> None:
    route = "/v1/<!channel>/@here/{id}"
    [sent] = requests(CHAT, [pending(record(1, context={"http_route": route}))], now=NOW)
    assert " via /v1/&lt;!channel&gt;/@\u200bhere/{id} (success)" in json.loads(sent.body)["text"]
    [page] = _pages(PAGERDUTY, [record(1, context={"http_route": route})])
    assert " via /v1/<!channel>/@\u200bhere/{id} (success)" in page["summary"]


def test_a_long_route_is_cut_and_the_status_and_duration_kept() -> None:
    route = "/v1/" + "segment/" * 70 + "{id}"
    assert len(route) > MAX_VALUE
    [page] = _pages(PAGERDUTY, [record(1, context={**FULL, "http_route": route})])
    cut = route[: MAX_VALUE - 1] + "…"
    assert f" via GET {cut} -> 503 in 1200 ms (success) " in page["summary"]
    [mail] = _mails([record(1, context={**FULL, "http_route": route})])
    assert f"HTTP route: {route}" in _request_fields(mail)  # the field whole


def _alert(
    seq: int,
    context: dict[str, Any] | None,
    trigger_request: dict[str, Any] | None,
    **overrides: Any,
) -> dict[str, Any]:
    """A 5xx rule's alert on the event at seq 9, with what the evaluator
    copies from it: its origin in the alert's context, its request in
    `details.trigger_request` (none: an alert of an event of no request)."""
    details: dict[str, Any] = {"rule": "5xx", "trigger_seq": 9}
    if trigger_request is not None:
        details["trigger_request"] = trigger_request
    fields: dict[str, Any] = {
        "action": "security.alert",
        "severity": "error",
        "description": "Alert '5xx': order.read by alice",
        "details": details,
    }
    if context is not None:
        fields["context"] = context
    return record(seq, **{**fields, **overrides})


def _alert_said(seq: int, said: str) -> str:
    return f"[error] Alert '5xx': order.read by alice{said} (tenant t-1, seq {seq}, fired on seq 9)"


ALERT_SAID = [f"{ORIGIN} via GET {ROUTE} -> 503 in 1200 ms", f" via GET {ROUTE} -> 503", ""]


# FULL as an alert keeps its trigger's.
TRIGGER_REQUEST = {"method": "GET", "route": ROUTE, "status": 503, "duration_ms": 1200}


def _alerts() -> list[dict[str, Any]]:
    partial = {key: TRIGGER_REQUEST[key] for key in ("method", "route", "status")}
    return [
        _alert(10, LOCATED, TRIGGER_REQUEST),
        _alert(11, None, partial),
        _alert(12, None, None),
    ]


def test_an_alerts_line_page_and_mail_say_its_triggers_request() -> None:
    said = [_alert_said(seq, s) for seq, s in zip((10, 11, 12), ALERT_SAID, strict=True)]
    [sent] = requests(CHAT, [pending(data) for data in _alerts()], now=NOW)
    assert json.loads(sent.body)["text"].split("\n") == [f"{ALERT_MARK} {_chat(s)}" for s in said]
    assert [page["summary"] for page in _pages(PAGERDUTY, _alerts())] == said
    mails = _mails(_alerts())
    assert [_subject(mail) for mail in mails] == said
    assert [_request_fields(mail) for mail in mails] == [
        ["HTTP method: GET", f"HTTP route: {ROUTE}", "HTTP status: 503", "Duration: 1200 ms"],
        ["HTTP method: GET", f"HTTP route: {ROUTE}", "HTTP status: 503"],
        [],
    ]


def _details_line(mail: Any) -> dict[str, Any]:
    [told] = [t for t in mail.get_content().splitlines() if t.startswith("Details: ")]
    details: dict[str, Any] = json.loads(told.removeprefix("Details: "))
    return details


def test_an_alerts_mail_says_its_triggers_request_once() -> None:
    """As fields, not again in its Details line (the forwarded event below
    keeps its record whole); a part no field says stays there."""
    unnamed = {**TRIGGER_REQUEST, "protocol": "h2"}
    whole, partial, without, odd = _mails([*_alerts(), _alert(14, None, unnamed)])
    assert _details_line(whole) == {"rule": "5xx", "trigger_seq": 9}
    assert _details_line(partial) == {"rule": "5xx", "trigger_seq": 9}
    assert _details_line(without) == {"rule": "5xx", "trigger_seq": 9}
    assert _details_line(odd) == {
        "rule": "5xx",
        "trigger_seq": 9,
        "trigger_request": {"protocol": "h2"},
    }
    assert '"trigger_request"' in whole.get_content()  # the event as forwarded


def test_an_alert_says_no_request_of_its_own_context() -> None:
    """What an alert's context holds is not its trigger's request: an alert
    keeps that in its details, and a context's request (which no alert has)
    is not said as the trigger's."""
    stray = _alert(13, FULL, None)
    [page] = _pages(PAGERDUTY, [stray])
    assert page["summary"] == _alert_said(13, "")
    [mail] = _mails([stray])
    assert _request_fields(mail) == []
    [page] = _pages(PAGERDUTY, [_alert(10, LOCATED, TRIGGER_REQUEST)])
    assert "http_method" not in page["custom_details"]["context"]
    assert page["custom_details"]["details"]["trigger_request"] == TRIGGER_REQUEST


def test_the_longest_alert_page_keeps_its_request_status_and_seqs() -> None:
    """Every value at its longest: the summary still fits PagerDuty's 1,024
    characters uncut, the route cut, its status, duration and seqs kept."""
    context = {
        "ip": "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        "country": "FR",
        "country_source": "geoip",
    }
    trigger_request = {
        "method": "M" * 16,
        "route": "/" + "r" * (MAX_HTTP_ROUTE - 1),
        "status": 503,
        "duration_ms": 86_399_999.999,
    }
    seq = 2**63 - 1
    longest = _alert(
        seq,
        context,
        None,
        description="d" * MAX_DESCRIPTION * 2,
        tenant_id="t" * 63,
        details={"rule": "5xx", "trigger_seq": seq - 1, "trigger_request": trigger_request},
    )
    [page] = _pages(PAGERDUTY, [longest])
    summary = page["summary"]
    assert len(summary) <= PAGERDUTY_SUMMARY
    assert summary.endswith(
        f"… -> 503 in 86399999.999 ms (tenant {'t' * 63}, seq {seq}, fired on seq {seq - 1})"
    )
