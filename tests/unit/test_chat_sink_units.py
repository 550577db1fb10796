"""The pure parts of chat sinks (ADR 0062): the line told of each event, its
escaping, messages within Slack's size, the URL kept secret, validation."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sealtrail_server.domain.chat_text import MAX_TEXT, line
from sealtrail_server.domain.sinks import (
    SinkDefinition,
    keep_secrets,
    recorded,
    redacted_destination,
    validate_sink,
)
from sealtrail_server.forward.destinations import PendingEvent, Sender, requests, verdict

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
URL = "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx"
CHAT = Sender("t-1", "s-1", "chat", "sealtrail_json", {"url": URL})


def record(seq: int = 1, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "action": "document.share",
        "actor": {"id": "alice", "type": "user"},
        "id": f"00000000-0000-7000-8000-{seq:012d}",
        "occurred_at": "2026-11-30T11:59:00.000000Z",
        "outcome": "success",
        "received_at": "2026-11-30T11:59:01.000000Z",
        "resource": {"type": "document", "id": "d-1"},
        "seq": seq,
        "severity": "info",
        "tenant_id": "t-1",
        "v": 1,
    }
    data.update(overrides)
    return data


def pending(data: dict[str, Any]) -> PendingEvent:
    text = json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return PendingEvent(data["seq"], text, hashlib.sha256(b"\0" + text.encode()).digest())


def test_an_event_is_told_in_one_line_that_finds_it() -> None:
    assert line(record(7)) == (
        "[info] document.share by alice on document/d-1 (success)"
        " at 2026-11-30T11:59:00.000000Z (tenant t-1, seq 7)"
    )
    bare = record(8, severity="error", outcome="failure")
    del bare["resource"]
    assert line(bare).startswith("[error] document.share by alice (failure) at ")


def test_an_alert_is_told_by_its_description_and_the_event_it_fired_on() -> None:
    alert = record(
        12,
        action="security.alert",
        severity="critical",
        description="Alert 'role change': member.role_changed by admin",
        details={"rule": "role change", "trigger_seq": 11},
    )
    assert line(alert) == (
        "\N{POLICE CARS REVOLVING LIGHT} [critical] Alert 'role change': member.role_changed"
        " by admin (tenant t-1, seq 12, fired on seq 11)"
    )


def test_caller_text_cannot_mention_link_or_start_a_line() -> None:
    told = line(
        record(
            actor={"id": "<!channel> @here @Everyone & co", "type": "user"},
            resource={"type": "doc", "id": "<https://evil.example|x>\nforged\u2028line"},
        )
    )
    assert "<" not in told and ">" not in told and "\n" not in told and "\u2028" not in told
    assert "by &lt;!channel&gt; @\u200bhere @\u200bEveryone &amp; co on doc/" in told
    assert "&lt;https://evil.example|x&gt; forged line (success)" in told
    assert "alice@example.com" in line(record(actor={"id": "alice@example.com"}))  # not a broadcast


def test_a_broadcast_followed_by_punctuation_is_broken_too() -> None:
    """Mattermost strips `.`, `-`, `:` and `_` off a mention's end, one at a
    time: `@channel_` and `@all_hands` notified everyone (helper-177)."""
    told = line(
        record(actor={"id": "@channel_ @all_hands @here__ @everyone: ops@allstate.example"})
    )
    assert "@\u200bchannel_ @\u200ball_hands @\u200bhere__ @\u200beveryone:" in told
    assert "ops@allstate.example" in told  # an address's @ starts no mention


def test_an_actor_or_resource_named_like_a_user_pages_no_one() -> None:
    """Mattermost and Rocket.Chat notify `@username` as written, after any
    punctuation (`(@bob)`, `x.@bob`): an event's actor or resource must never
    page a person. Each such `@` gets a zero-width space; an address's stays."""
    told = line(
        record(
            actor={"id": "@alice.smith", "type": "user"},
            resource={"type": "doc", "id": "(@bob) x.@carol, +@dave_2 @Émile ops@example.com"},
        )
    )
    assert "by @\u200balice.smith on doc/(@\u200bbob) x.@\u200bcarol," in told
    assert "+@\u200bdave_2 @\u200bÉmile ops@example.com (success)" in told
    assert line(record(actor={"id": "@ alone @@"})).count("\u200b") == 0  # no name follows


def test_text_direction_controls_cannot_reverse_the_rest_of_a_line() -> None:
    """U+202E and its kin would show the outcome, tenant and seq after an
    actor's id reversed: a spoofed line (helper-177)."""
    told = line(record(actor={"id": "admin\u202e\u2066\u200f\u061c", "type": "user"}))
    # Unicode's Bidi_Control characters, every one: the Arabic letter mark
    # (U+061C) is a right-to-left mark as U+200F is.
    assert not any(
        char in told
        for char in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    )


def test_a_long_value_is_cut_and_says_so() -> None:
    told = line(record(actor={"id": "a" * 5000}))
    assert "a" * 119 + "…" in told and "a" * 120 not in told
    assert told.endswith("(tenant t-1, seq 1)")


def test_a_chat_request_is_text_alone_one_line_per_event() -> None:
    [sent] = requests(CHAT, [pending(record(1)), pending(record(2))], now=NOW)
    assert sent.url == URL and sent.seqs == (1, 2)
    assert dict(sent.headers)["Content-Type"].startswith("application/json")
    assert json.loads(sent.body) == {"text": f"{line(record(1))}\n{line(record(2))}"}


@pytest.mark.parametrize(
    "value",
    ["x" * 110, "é" * 110, "&<>" * 36, '"\\' * 55, "\N{PILE OF POO}" * 110],
    ids=["ascii", "two-byte", "escaped-by-slack", "escaped-by-json", "four-byte"],
)
def test_many_events_go_in_several_messages_none_over_the_limit(value: str) -> None:
    events = [pending(record(n, actor={"id": f"{n}-{value}"})) for n in range(1, 301)]
    sent = requests(CHAT, events, now=NOW)
    assert len(sent) > 1
    told = [json.loads(request.body)["text"] for request in sent]
    assert all(len(text) <= MAX_TEXT for text in told)
    assert [one for text in told for one in text.split("\n")] == [
        line(json.loads(event.record)) for event in events
    ]
    assert [seq for request in sent for seq in request.seqs] == list(range(1, 301))


@pytest.mark.parametrize(
    ("status", "outcome", "needs_fixing"),
    [(200, "delivered", False), (429, "retry", False), (503, "retry", False),
     (404, "retry", True), (410, "retry", True), (403, "retry", True), (400, "park", False)],
)  # fmt: skip
def test_a_chat_services_answers_are_read_as_a_webhooks(
    status: int, outcome: str, needs_fixing: bool
) -> None:
    [sent] = requests(CHAT, [pending(record(1))], now=NOW)
    for kind in ("chat", "webhook"):
        read = verdict(kind, sent, status, b"channel_not_found", {}, now=NOW)
        assert (read.outcome, read.needs_fixing) == (outcome, needs_fixing), kind


def test_the_url_is_a_secret_shown_without_its_credential() -> None:
    destination = {"url": URL}
    assert redacted_destination("chat", destination) == {
        "url_hint": "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/…"
    }
    definition = SinkDefinition("ops", "chat", "sealtrail_json", {}, destination, False)
    logged = recorded(definition, b"k" * 32)["destination"]
    assert logged["url"] == "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/…"
    assert len(logged["url_fingerprint"]) == 16 and "abcdefghijklmnop" not in json.dumps(logged)
    assert keep_secrets("chat", {"url": ""}, destination) == destination


def test_a_chat_sink_is_validated_as_any_but_posts_text() -> None:
    def problems(**changes: Any) -> list[str]:
        definition: dict[str, Any] = {
            "name": "ops",
            "kind": "chat",
            "format": "sealtrail_json",
            "destination": {"url": URL},
        }
        return [v.field for v in validate_sink(**{**definition, **changes})]

    assert problems() == []
    teams = "https://prod-01.westus.logic.azure.com/workflows/abc/triggers/manual?sig=xyz"
    assert problems(destination={"url": teams}) == []  # a query carries Teams' signature
    assert problems(format="ocsf") == ["sink.format"]
    assert problems(destination={"url": "ftp://hooks.slack.com/x"}) == ["sink.chat.url"]
    assert problems(destination={}) == ["sink.chat.url"]
