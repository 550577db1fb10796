"""Chat sinks (docs/forwarding.md, ADR 0062) against a real HTTP endpoint on
127.0.0.1 standing in for Slack's incoming webhook: what a channel is posted
(`{"text": ...}`, a readable line per event, an alert as its description),
that no event can mention or link, that a burst goes in several messages
within Slack's size, that the URL (the credential) is never shown whole,
refused URLs, failures retried and refusals parked as for any sink."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from google.protobuf import json_format

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    InvalidArgumentError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail.v1 import forwarding_pb2
from sealtrail_server.domain.event import format_timestamp
from tests.alerted_sinks import a_role_change_alerted
from tests.conftest import ServerThread
from tests.http_endpoint import Endpoint, Received, Reply, endpoint
from tests.sink_states import a_poisoned_event_parked, wait_for_state

CHAT_TEXT_LIMIT = 4000  # Slack's advice for a message's text
ALERT_MARK = "\N{POLICE CARS REVOLVING LIGHT}"


@pytest.fixture
def channel() -> Iterator[Endpoint]:
    """The chat service's incoming webhook."""
    with endpoint() as running:
        running.responder = lambda received, index: Reply(body=b"ok")
        yield running


def slack_url(channel: Endpoint) -> tuple[str, str]:
    """A URL shaped as Slack's (/services/T.../B.../<secret>) on `channel`,
    and its secret part."""
    secret = secrets.token_urlsafe(18)  # 24 characters, as Slack's
    return f"{channel.url}/services/T0123ABCD/B0456EFGH/{secret}", secret


def texts(received: list[Received]) -> list[str]:
    return [json.loads(request.body)["text"] for request in received]


def lines(received: list[Received]) -> list[str]:
    return [line for text in texts(received) for line in text.split("\n")]


def seq_of(line: str) -> int:
    found = re.search(r"seq (\d+)\)$", line)
    assert found, line
    return int(found[1])


def chat_sink(channel: Endpoint, name: str = "ops channel", **options: Any) -> forwarding_pb2.Sink:
    url, _ = slack_url(channel)
    options.setdefault("filter", build_filter(actions="document.*"))
    return build_sink(name, "chat", url=url, **options)


def test_a_channel_is_posted_one_readable_line_per_event(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    channel: Endpoint,
    tenant: str,
) -> None:
    sinks(chat_sink(channel))
    when = datetime.now(UTC).replace(microsecond=250000) - timedelta(minutes=5)
    shared = client.record(
        action="document.share", actor_id="alice", resource_type="document",
        resource_id="d-17", occurred_at=when,
    ).event.seq  # fmt: skip
    denied = client.record(
        action="document.delete", actor_id="mallory", resource_type="document",
        resource_id="d-18", severity="critical", outcome="denied", occurred_at=when,
    ).event.seq  # fmt: skip
    bare = client.record(action="document.list", actor_id="bob", occurred_at=when).event.seq
    client.record(action="other.thing", actor_id="carol")  # not the sink's
    received = channel.wait_for(lambda r: bare in [seq_of(line) for line in lines(r)])
    stamp = format_timestamp(when)
    assert lines(received) == [
        f"[info] document.share by alice on document/d-17 (success) at {stamp}"
        f" (tenant {tenant}, seq {shared})",
        f"[critical] document.delete by mallory on document/d-18 (denied) at {stamp}"
        f" (tenant {tenant}, seq {denied})",
        f"[info] document.list by bob (success) at {stamp} (tenant {tenant}, seq {bare})",
    ]
    for request in received:
        assert request.headers["content-type"].startswith("application/json")
        assert set(json.loads(request.body)) == {"text"}  # what Slack's webhooks take
        assert "webhook-signature" not in request.headers


def test_an_event_cannot_ping_the_channel_or_slip_in_a_link(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], channel: Endpoint
) -> None:
    sinks(chat_sink(channel))
    seq = client.record(
        action="document.share",
        actor_id="<!channel> & <@U024BE7LH>",
        resource_type="document",
        resource_id="<https://evil.example/login|Reset your password>",
    ).event.seq
    attempt = client.record(
        action="document.share", actor_id="@here @everyone\nforged line (seq 1)"
    ).event.seq
    received = channel.wait_for(lambda r: attempt in [seq_of(line) for line in lines(r)])
    [first, second] = [line for line in lines(received) if seq_of(line) in (seq, attempt)]
    assert "<" not in first and ">" not in first
    # The escaped `<@U…>` is text; its `@U024BE7LH` would still page a Mattermost user.
    assert "by &lt;!channel&gt; &amp; &lt;@\u200bU024BE7LH&gt; on document/" in first
    assert "&lt;https://evil.example/login|Reset your password&gt;" in first
    # Broadcasts written out (Mattermost, Discord) are broken; a newline is no new line.
    assert "@here" not in second and "@everyone" not in second
    assert "by @\u200bhere @\u200beveryone forged line (seq 1) (success)" in second


def test_a_burst_goes_in_several_messages_each_within_slacks_limit(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], channel: Endpoint
) -> None:
    sinks(chat_sink(channel))
    events = [
        build_event(action="document.share", actor_id=f"user-{n}", resource_type="document",
                    resource_id=f"{n:04d}-" + "x" * 100)
        for n in range(150)
    ]  # fmt: skip
    seqs = [result.event.seq for result in client.record_batch(events)]
    received = channel.wait_for(lambda r: seqs[-1] in [seq_of(line) for line in lines(r)])
    posted = lines(received)
    # Every event, once, in order, its line whole: split, nothing left out.
    assert [seq_of(line) for line in posted] == seqs
    for n, line in enumerate(posted):
        assert line.startswith(f"[info] document.share by user-{n} on document/{n:04d}-xxx")
    assert len(received) >= 150 * len(posted[0]) // CHAT_TEXT_LIMIT
    assert max(len(text) for text in texts(received)) <= CHAT_TEXT_LIMIT
    assert min(len(text.split("\n")) for text in texts(received)[:-1]) > 10  # filled, not one each


def test_the_url_is_a_secret_never_shown_whole(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    channel: Endpoint,
    sql: psycopg.Connection[Any],
    tenant: str,
) -> None:
    url, secret = slack_url(channel)
    created = sinks(build_sink("ops", "chat", url=url, filter=build_filter(actions="document.*")))
    host = channel.url.removeprefix("http://")
    hint = f"http://{host}/services/T0123ABCD/B0456EFGH/…"
    for shown in (created, client.get_sink(created.id), *client.list_sinks()):
        assert shown.WhichOneof("destination") == "chat"
        assert shown.chat.url == "" and shown.chat.url_hint == hint
        assert secret not in str(shown)
    # Nor kept in the clear, nor recorded in the log.
    [(stored,)] = sql.execute(
        "SELECT destination::text FROM sinks WHERE tenant_id = %s AND id = %s",
        [tenant, created.id],
    ).fetchall()
    assert secret not in stored
    [change] = client.query(build_filter(actions="sink.created"))
    details = json.dumps(json_format.MessageToDict(change.details), ensure_ascii=False)
    assert secret not in str(change) and hint in details
    # Delivered to the whole URL all the same.
    seq = client.record(action="document.share", actor_id="u").event.seq
    received = channel.wait_for(lambda r: seq in [seq_of(line) for line in lines(r)])
    assert received[-1].path == f"/services/T0123ABCD/B0456EFGH/{secret}"


def test_a_chat_sinks_url_is_kept_renamed_and_moved_only_when_given(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], channel: Endpoint
) -> None:
    sink = sinks(chat_sink(channel))
    # The URL left empty keeps the current one (as any sink's secrets).
    renamed = forwarding_pb2.Sink(id=sink.id, name="renamed", chat=forwarding_pb2.ChatDestination())
    kept = client.update_sink(renamed, fields=["name", "chat"]).sink
    assert kept.name == "renamed" and kept.chat.url_hint == sink.chat.url_hint
    with endpoint() as moved_to:
        url, secret = slack_url(moved_to)
        moved = forwarding_pb2.Sink(id=sink.id, chat=forwarding_pb2.ChatDestination(url=url))
        after = client.update_sink(moved, fields=["chat"]).sink
        assert secret not in str(after) and after.chat.url_hint.startswith(moved_to.url)
        seq = client.record(action="document.share", actor_id="u").event.seq
        moved_to.wait_for(lambda r: seq in [seq_of(line) for line in lines(r)])


def test_an_ocsf_sink_moved_to_a_chat_posts_lines(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], channel: Endpoint
) -> None:
    """A sink's format is the events' shape; a chat posts lines whatever it
    was: moving a sink to a chat with the destination alone named leaves OCSF
    behind, not refused for a format the caller did not send (helper-177)."""
    with endpoint() as siem:
        webhook = build_sink(
            "soc",
            "webhook",
            url=siem.url,
            secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
            format="ocsf",
            filter=build_filter(actions="document.*"),
        )
        sink = sinks(webhook)
        url, _ = slack_url(channel)
        moved = forwarding_pb2.Sink(id=sink.id, chat=forwarding_pb2.ChatDestination(url=url))
        after = client.update_sink(moved, fields=["chat"]).sink
    assert after.WhichOneof("destination") == "chat"
    assert after.format == forwarding_pb2.PAYLOAD_FORMAT_SEALTRAIL_JSON
    seq = client.record(action="document.share", actor_id="u").event.seq
    channel.wait_for(lambda r: seq in [seq_of(line) for line in lines(r)])


def test_an_async_client_makes_and_reads_a_chat_sink(
    server: ServerThread, tenant: str, channel: Endpoint
) -> None:
    async def main() -> None:
        async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
            made = (await audit.create_sink(chat_sink(channel, paused=True))).sink
            read = await audit.get_sink(made.id)
            assert read.WhichOneof("destination") == "chat" and read.chat.url_hint
            await audit.delete_sink(made.id)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.slack.com/services/T/B/x", "https"),
        ("hooks.slack.com/services/T/B/x", "https"),
        ("", "required"),
        ("https://user:pass@hooks.slack.com/services/T/B/x", "credentials"),
    ],
)
def test_a_chat_url_no_webhook_has_is_refused_naming_the_field(
    client: AuditClient, url: str, problem: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_sink(build_sink("ops", "chat", url=url))
    [(field, description)] = refused.value.field_violations
    assert field == "sink.chat.url" and problem in description


def test_a_chat_sink_refuses_ocsf_naming_the_format(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], channel: Endpoint
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_sink(chat_sink(channel, format="ocsf"))
    assert [field for field, _ in refused.value.field_violations] == ["sink.format"]
    sink = sinks(chat_sink(channel))
    ocsf = forwarding_pb2.Sink(id=sink.id, format=forwarding_pb2.PAYLOAD_FORMAT_OCSF)
    with pytest.raises(InvalidArgumentError) as refused:
        client.update_sink(ocsf, fields=["format"])
    assert [field for field, _ in refused.value.field_violations] == ["sink.format"]


def test_plain_http_and_internal_chat_urls_are_refused_by_default(
    migrated_database_url: str, tenant: str
) -> None:
    strict = ServerThread(
        migrated_database_url, forward_allow_http=False, forward_allow_networks=""
    )
    try:
        admin = AuditClient(strict.target, token=strict.token(tenant))
        for url, setting in (
            ("http://hooks.slack.com/services/T/B/x", "SEALTRAIL_FORWARD_ALLOW_HTTP"),
            ("https://127.0.0.1/hooks/abc", "SEALTRAIL_FORWARD_ALLOW_NETWORKS"),
            ("https://169.254.169.254/latest", "SEALTRAIL_FORWARD_ALLOW_NETWORKS"),
            ("https://10.1.2.3/hooks/abc", "SEALTRAIL_FORWARD_ALLOW_NETWORKS"),
        ):
            with pytest.raises(InvalidArgumentError) as refused:
                admin.create_sink(build_sink("ops", "chat", url=url))
            [(field, description)] = refused.value.field_violations
            assert field == "sink.chat.url" and setting in description, url
        admin.close()
    finally:
        strict.close()


def test_a_rate_limited_or_failing_channel_is_retried_until_it_takes_the_message(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], channel: Endpoint
) -> None:
    answers = [
        Reply(429, b"rate_limited", {"Retry-After": "0"}),
        Reply(503, b"upstream"),
        Reply(body=b"ok"),
    ]
    channel.responder = lambda received, index: answers[min(index, 2)]
    sink = sinks(chat_sink(channel))
    seq = client.record(action="document.share", actor_id="u").event.seq
    received = channel.wait_for(lambda r: len(r) >= 3)
    assert [seq_of(line) for line in lines(received)] == [seq] * 3  # the same message again
    state = wait_for_state(client, sink.id, lambda s: s.state.cursor_seq >= seq).state
    assert state.consecutive_failures == 0 and state.last_error == ""
    assert state.dead_letters == 0


@pytest.mark.parametrize("answer", ["redirect", "echo"])
def test_what_the_channel_answers_never_shows_the_url(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    channel: Endpoint,
    caplog: pytest.LogCaptureFixture,
    answer: str,
) -> None:
    """A redirect's Location (a trailing slash, https, a moved domain) and an
    error page that echoes the path ("Cannot POST /services/...") repeat the
    URL, its secret with it: the sink's error and the logs show it cut, as its
    hint is (helper-177)."""
    url, secret = slack_url(channel)
    path = url.removeprefix(channel.url)
    if answer == "redirect":
        channel.responder = lambda received, index: Reply(
            301, b"", {"Location": f"https://chat.example{path}/?token={secret}"}
        )
    else:
        channel.responder = lambda received, index: Reply(
            404, f"Cannot POST {received.path}?x={secret}".encode()
        )
    sink = sinks(build_sink("ops", "chat", url=url, filter=build_filter(actions="document.*")))
    client.record(action="document.share", actor_id="u")
    state = wait_for_state(client, sink.id, lambda s: bool(s.state.last_error)).state
    assert secret not in state.last_error
    assert ("HTTP 301" if answer == "redirect" else "Cannot POST") in state.last_error
    assert "/services/T0123ABCD/B0456EFGH/" in state.last_error  # where, without the secret
    assert not [r for r in caplog.records if secret in r.getMessage()]


def test_a_channel_that_is_gone_holds_the_events_and_says_why(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], channel: Endpoint
) -> None:
    """Slack answers 404 channel_not_found, 410 channel_is_archived: a refusal
    of the sink's URL, retried until it is put right, nothing parked."""
    channel.responder = lambda received, index: Reply(410, b"channel_is_archived")
    sink = sinks(chat_sink(channel))
    client.record(action="document.share", actor_id="u")
    state = wait_for_state(client, sink.id, lambda s: s.state.consecutive_failures >= 2).state
    assert "HTTP 410" in state.last_error and "channel_is_archived" in state.last_error
    assert "refusal of the sink's URL" in state.last_error
    assert state.dead_letters == 0


def test_a_message_the_channel_refuses_is_parked_as_a_dead_letter(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], channel: Endpoint
) -> None:
    """Slack answers 400 invalid_payload for a message it will never take: as
    for a webhook, the refused event is parked and the next ones go on."""

    def refuse_the_poisoned(received: Received, index: int) -> Reply:
        if "poisoned" in received.body.decode():
            return Reply(400, b"invalid_payload")
        return Reply(body=b"ok")

    channel.responder = refuse_the_poisoned
    sink = sinks(chat_sink(channel))
    a_poisoned_event_parked(
        client,
        sink.id,
        delivered=lambda after: channel.wait_for(
            lambda r: after in [seq_of(line) for line in lines(r)]
        ),
        status=400,
    )


def test_an_alert_rule_routed_to_a_chat_sink_posts_the_alert(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], channel: Endpoint, tenant: str
) -> None:
    # The three steps of docs/alerting.md: a chat sink for alerts only, a rule to it.
    sink = sinks(chat_sink(channel, name="alerts", filter=build_filter(actions="security.alert")))
    with a_role_change_alerted(client, sink.id, rule_name="role change <!channel>") as trigger:
        received = channel.wait_for(lambda r: any(ALERT_MARK in line for line in lines(r)))
        [alert] = [line for line in lines(received) if ALERT_MARK in line]
        [recorded] = client.query(build_filter(actions="security.alert"))
        assert alert == (
            f"{ALERT_MARK} [critical] Alert 'role change &lt;!channel&gt;':"
            f" member.role_changed by admin (tenant {tenant}, seq {recorded.seq},"
            f" fired on seq {trigger})"
        )


def test_an_alert_on_a_server_error_says_which_endpoint_failed(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], channel: Endpoint, tenant: str
) -> None:
    """A rule on 5xx answers, routed to a channel: its alert's line says the
    trigger's request (docs/forwarding.md), as the trigger's own line does."""
    sink = sinks(chat_sink(channel, name="errors", filter=build_filter(http_status_classes="5xx")))
    client.create_alert_rule(
        build_alert_rule(
            "5xx", "match", filter=build_filter(actions="order.read"), sink_ids=[sink.id]
        )
    )
    trigger = client.record(
        action="order.read", actor_id="alice", resource_type="order", resource_id="o-1",
        http_method="GET", http_route="/v1/orders/{id}", http_status_code=503, duration_ms=1200,
    ).event  # fmt: skip
    received = channel.wait_for(lambda r: any(ALERT_MARK in line for line in lines(r)))
    [recorded] = client.query(build_filter(actions="security.alert"))
    stamp = format_timestamp(trigger.occurred_at.ToDatetime(tzinfo=UTC))
    request = "via GET /v1/orders/{id} -&gt; 503 in 1200 ms"
    assert lines(received) == [
        f"[info] order.read by alice on order/o-1 {request} (success) at {stamp}"
        f" (tenant {tenant}, seq {trigger.seq})",
        f"{ALERT_MARK} [warning] Alert '5xx': order.read by alice {request}"
        f" (tenant {tenant}, seq {recorded.seq}, fired on seq {trigger.seq})",
    ]
