"""Where an event came from, in the messages people read (docs/forwarding.md):
a chat line, a PagerDuty summary and an email's Subject and fields say the
address and its country, a country the server located from the address
(GeoIP, ADR 0134) marked as such, not passed off as the caller's word. The
requests as the forwarder sends them, from stored records."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.policy import default
from typing import Any

from sealtrail_server.domain.chat_text import ALERT_MARK
from sealtrail_server.forward.destinations import Sender, requests
from tests.unit.test_chat_sink_units import CHAT, NOW, pending, record

PAGERDUTY = Sender("t-1", "s-1", "pagerduty", "sealtrail_json", {"routing_key": "r" * 32})
EMAIL = Sender(
    "t-1",
    "s-1",
    "email",
    "sealtrail_json",
    {
        "host": "smtp.example.com",
        "port": 587,
        "security": "starttls",
        "from_address": "alerts@example.com",
        "to_addresses": ["oncall@example.com"],
    },
)
WHEN = "at 2026-11-30T11:59:00.000000Z"
LOCATED = {"ip": "81.2.69.7", "country": "FR", "country_source": "geoip"}
SENT = {"ip": "2a02:8100::1", "country": "JP", "country_source": "caller"}


def _records() -> list[dict[str, Any]]:
    """Located by the server, sent by the caller, recorded before the source
    was marked (the caller's), an address alone, a country alone, neither."""
    return [
        record(1, context=LOCATED),
        record(2, context=SENT),
        record(3, context={"ip": "81.2.69.9", "country": "BE"}),
        record(4, context={"ip": "10.1.2.3"}),
        record(5, context={"country": "DE", "country_source": "caller"}),
        record(6),
    ]


ORIGINS = [
    " from 81.2.69.7 (FR, located)",
    " from 2a02:8100::1 (JP)",
    " from 81.2.69.9 (BE)",
    " from 10.1.2.3",
    " from DE",
    "",
]


def _said(seq: int, origin: str) -> str:
    return f"[info] document.share by alice{origin} on document/d-1 (success) {WHEN}" + (
        f" (tenant t-1, seq {seq})"
    )


def test_a_chat_line_says_the_address_and_its_country_located_or_sent() -> None:
    [sent] = requests(CHAT, [pending(data) for data in _records()], now=NOW)
    assert json.loads(sent.body)["text"].split("\n") == [
        _said(seq, origin) for seq, origin in enumerate(ORIGINS, start=1)
    ]


def test_a_pages_summary_says_the_address_and_its_country_located_or_sent() -> None:
    summaries = [
        json.loads(sent.body)["payload"]["summary"]
        for data in _records()
        for sent in requests(PAGERDUTY, [pending(data)], now=NOW)
    ]
    assert summaries == [_said(seq, origin) for seq, origin in enumerate(ORIGINS, start=1)]


def test_a_mail_says_the_address_and_its_country_located_or_sent() -> None:
    fields = []
    for data in _records():
        [sent] = requests(EMAIL, [pending(data)], now=NOW)
        mail = message_from_bytes(sent.body, policy=default)
        assert mail["Subject"] == _said(data["seq"], ORIGINS[data["seq"] - 1])
        told = mail.get_content().splitlines()
        fields.append([f for f in told if f.startswith(("IP address:", "Country:"))])
    assert fields == [
        [
            "IP address: 81.2.69.7",
            "Country: FR (located by the server from the IP address, in its GeoIP database)",
        ],
        ["IP address: 2a02:8100::1", "Country: JP"],
        ["IP address: 81.2.69.9", "Country: BE"],
        ["IP address: 10.1.2.3"],
        ["Country: DE"],
        [],
    ]


def _alert(seq: int, context: dict[str, str] | None) -> dict[str, Any]:
    """A new-country rule's alert on the event at seq 9, with the context
    the evaluator copies from it (none: an alert of an event from nowhere)."""
    overrides: dict[str, Any] = {
        "action": "security.alert",
        "severity": "warning",
        "description": "Alert 'abroad': alice seen from a new country FR",
        "details": {"rule": "abroad", "trigger_seq": 9},
    }
    if context is not None:
        overrides["context"] = context
    return record(seq, **overrides)


ALERT_ORIGINS = [" from 81.2.69.7 (FR, located)", " from 2a02:8100::1 (JP)", ""]


def _alert_said(seq: int, origin: str) -> str:
    return (
        f"[warning] Alert 'abroad': alice seen from a new country FR{origin}"
        f" (tenant t-1, seq {seq}, fired on seq 9)"
    )


def _alerts() -> list[dict[str, Any]]:
    return [_alert(10, LOCATED), _alert(11, SENT), _alert(12, None)]


def test_an_alerts_line_says_where_its_trigger_came_from() -> None:
    [sent] = requests(CHAT, [pending(data) for data in _alerts()], now=NOW)
    assert json.loads(sent.body)["text"].split("\n") == [
        f"{ALERT_MARK} " + _alert_said(seq, origin)
        for seq, origin in zip((10, 11, 12), ALERT_ORIGINS, strict=True)
    ]


def test_an_alerts_page_and_mail_say_where_its_trigger_came_from() -> None:
    summaries, subjects, fields = [], [], []
    for data in _alerts():
        [page] = requests(PAGERDUTY, [pending(data)], now=NOW)
        summaries.append(json.loads(page.body)["payload"]["summary"])
        [sent] = requests(EMAIL, [pending(data)], now=NOW)
        mail = message_from_bytes(sent.body, policy=default)
        subjects.append(mail["Subject"])
        told = mail.get_content().splitlines()
        fields.append([f for f in told if f.startswith(("IP address:", "Country:"))])
    said = [_alert_said(seq, o) for seq, o in zip((10, 11, 12), ALERT_ORIGINS, strict=True)]
    assert summaries == said
    assert subjects == said
    assert fields == [
        [
            "IP address: 81.2.69.7",
            "Country: FR (located by the server from the IP address, in its GeoIP database)",
        ],
        ["IP address: 2a02:8100::1", "Country: JP"],
        [],
    ]
