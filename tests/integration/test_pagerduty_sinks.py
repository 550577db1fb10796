"""PagerDuty sinks (docs/forwarding.md, ADR 0131) against a real HTTP endpoint
on 127.0.0.1 standing in for PagerDuty's Events API v2: an alert rule's
firing paged as one `trigger` with the alert's fields, a request sent again
after a 5xx under the same dedup_key (so PagerDuty adds to the alert rather
than page twice), a 400 (an invalid event) parked and not retried, a 429's
Retry-After waited, a 400 naming the routing key held rather than parked, and
the routing key (a credential) never shown."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from google.protobuf import json_format

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    build_filter,
    build_sink,
)
from sealtrail import _cli as client_cli
from sealtrail.v1 import event_pb2, forwarding_pb2
from tests.alerted_sinks import a_role_change_alerted
from tests.conftest import ServerThread
from tests.http_endpoint import Endpoint, Received, Reply, endpoint
from tests.sink_states import a_poisoned_event_parked, wait_for_state

ACCEPTED = Reply(202, b'{"status":"success","message":"Event processed","dedup_key":"x"}')
INVALID = Reply(
    400,
    b'{"status":"invalid event","message":"Event object is invalid",'
    b'"errors":["\'payload.summary\' is missing or blank"]}',
)


@pytest.fixture
def pagerduty() -> Iterator[Endpoint]:
    """The Events API: 202 to whatever it is sent, unless a test says otherwise."""
    with endpoint() as running:
        running.responder = lambda received, index: ACCEPTED
        yield running


@pytest.fixture
def routing_key() -> str:
    return secrets.token_hex(16)  # 32 characters, as an integration key's


def pagerduty_sink(
    pagerduty: Endpoint, routing_key: str, actions: str = "document.*", **options: Any
) -> forwarding_pb2.Sink:
    return build_sink(
        "on-call",
        "pagerduty",
        url=pagerduty.url,
        routing_key=routing_key,
        filter=build_filter(actions=actions),
        **options,
    )


def pages(received: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in received]


def paged_seqs(received: list[Received]) -> list[int]:
    return [page["payload"]["custom_details"]["seq"] for page in pages(received)]


def test_an_alert_rule_firing_pages_once_with_the_alerts_fields(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    pagerduty: Endpoint,
    routing_key: str,
    tenant: str,
) -> None:
    # docs/alerting.md's steps: a PagerDuty sink for alerts only, a rule to it.
    sink = sinks(pagerduty_sink(pagerduty, routing_key, actions="security.alert"))
    with a_role_change_alerted(client, sink.id, rule_name="role change <admin> & co") as trigger:
        [received] = pagerduty.wait_for(lambda r: len(r) >= 1)  # the alert's alone
        [alert] = client.query(build_filter(actions="security.alert"))
        wait_for_state(client, sink.id, lambda s: s.state.delivered_events == 1)
    assert received.path == "/v2/enqueue"
    assert received.headers["content-type"] == "application/json"
    page = json.loads(received.body)
    details = page["payload"].pop("custom_details")
    assert page == {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": f"sealtrail:{tenant}:{alert.id}",
        "payload": {
            # Plain text: PagerDuty shows `&amp;` as it is written.
            "summary": f"[critical] Alert 'role change <admin> & co': member.role_changed"
            f" by admin (tenant {tenant}, seq {alert.seq}, fired on seq {trigger})",
            "source": "sealtrail",
            "severity": "critical",
            "timestamp": details["occurred_at"],
            "group": tenant,
            "class": "security.alert",
        },
    }
    # The alert itself, as the log holds it: what a responder checks it by.
    assert details["id"] == alert.id and details["seq"] == alert.seq
    assert details["details"]["trigger_seq"] == trigger and len(details["leaf_hash"]) == 64
    assert len(pagerduty.requests()) == 1


@pytest.mark.parametrize(
    ("severity", "sent"),
    [("info", "info"), ("warning", "warning"), ("error", "error"), ("critical", "critical")],
)
def test_each_severity_pages_as_pagerdutys_own(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    pagerduty: Endpoint,
    routing_key: str,
    severity: str,
    sent: str,
) -> None:
    sinks(pagerduty_sink(pagerduty, routing_key, source="audit.example.com"))
    seq = client.record(action="document.share", actor_id="u", severity=severity).event.seq
    [page] = pages(pagerduty.wait_for(lambda r: len(r) >= 1))
    assert page["payload"]["severity"] == sent and page["payload"]["source"] == "audit.example.com"
    assert page["payload"]["custom_details"]["seq"] == seq


def test_a_page_sent_again_after_a_5xx_carries_the_same_dedup_key(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    pagerduty: Endpoint,
    routing_key: str,
) -> None:
    """A request whose answer was a 5xx (or lost) may have opened the alert:
    sent again under the same dedup_key, PagerDuty adds to that alert instead
    of paging a second time."""
    answers = [Reply(503, b"upstream"), Reply(500, b"oops"), ACCEPTED]
    pagerduty.responder = lambda received, index: answers[min(index, 2)]
    sink = sinks(pagerduty_sink(pagerduty, routing_key))
    seq = client.record(action="document.share", actor_id="u").event.seq
    received = pagerduty.wait_for(lambda r: len(r) >= 3)
    assert paged_seqs(received) == [seq] * 3
    assert len({page["dedup_key"] for page in pages(received)}) == 1
    assert [request.body for request in received] == [received[0].body] * 3
    state = wait_for_state(client, sink.id, lambda s: s.state.cursor_seq >= seq).state
    assert state.consecutive_failures == 0 and state.dead_letters == 0
    assert state.delivered_events == 1


def test_an_event_pagerduty_calls_invalid_is_parked_and_not_sent_again(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    pagerduty: Endpoint,
    routing_key: str,
) -> None:
    """PagerDuty's 400 (an invalid event) is not to be retried: the event is
    parked as a dead letter, once, and the next ones page."""

    def refuse_the_poisoned(received: Received, index: int) -> Reply:
        return INVALID if b"poisoned" in received.body else ACCEPTED

    pagerduty.responder = refuse_the_poisoned
    sink = sinks(pagerduty_sink(pagerduty, routing_key))
    parked = a_poisoned_event_parked(
        client,
        sink.id,
        delivered=lambda after: pagerduty.wait_for(lambda r: after in paged_seqs(r)),
        status=400,
    )
    assert parked.state.consecutive_failures == 0
    assert "payload.summary" in parked.letter.error and routing_key not in parked.letter.error
    # not sent again
    assert paged_seqs(pagerduty.requests()) == [parked.poisoned, parked.after]


def test_a_refused_routing_key_holds_the_events_instead_of_parking_them(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    pagerduty: Endpoint,
    routing_key: str,
) -> None:
    """A 400 that names the routing key (a key deleted at PagerDuty) would
    refuse every event: parked, the whole backlog became dead letters; it is
    retried until the sink is given a key PagerDuty takes (ADR 0051)."""
    pagerduty.responder = lambda received, index: Reply(
        400,
        b'{"status":"invalid event","message":"Event object is invalid",'
        b'"errors":["Invalid routing key"]}',
    )
    sink = sinks(pagerduty_sink(pagerduty, routing_key))
    client.record(action="document.share", actor_id="u")
    state = wait_for_state(client, sink.id, lambda s: s.state.consecutive_failures >= 2).state
    assert state.dead_letters == 0
    assert (
        "HTTP 400" in state.last_error and "refusal of the sink's routing key" in state.last_error
    )


def test_a_429_is_retried_after_the_wait_pagerduty_asks_for(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    pagerduty: Endpoint,
    routing_key: str,
) -> None:
    arrived: list[float] = []
    lock = threading.Lock()

    def throttle_once(received: Received, index: int) -> Reply:
        with lock:
            arrived.append(time.monotonic())
        return Reply(429, b"", {"Retry-After": "2"}) if index == 0 else ACCEPTED

    pagerduty.responder = throttle_once
    sink = sinks(pagerduty_sink(pagerduty, routing_key))
    seq = client.record(action="document.share", actor_id="u").event.seq
    received = pagerduty.wait_for(lambda r: len(r) >= 2)
    # The tests' backoff is 50 ms: only Retry-After made the second wait 2 s.
    assert arrived[1] - arrived[0] >= 1.9
    assert paged_seqs(received) == [seq, seq]
    assert pages(received)[0]["dedup_key"] == pages(received)[1]["dedup_key"]
    state = wait_for_state(client, sink.id, lambda s: s.state.cursor_seq >= seq).state
    assert state.dead_letters == 0 and state.delivered_events == 1


def test_the_routing_key_is_never_shown(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    pagerduty: Endpoint,
    routing_key: str,
    sql: psycopg.Connection[Any],
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An error page that echoes what it was sent, the key in it too, until
    # the test has read the sink's error.
    seen = threading.Event()
    pagerduty.responder = lambda received, index: (
        ACCEPTED if seen.is_set() else Reply(500, b"could not process " + received.body)
    )
    created = sinks(pagerduty_sink(pagerduty, routing_key))
    for shown in (created, client.get_sink(created.id), *client.list_sinks()):
        assert shown.WhichOneof("destination") == "pagerduty"
        assert shown.pagerduty.routing_key == ""
        assert shown.pagerduty.routing_key_hint == routing_key[-4:]
        assert routing_key not in str(shown)
    # Nor kept in the clear, nor recorded in the log.
    [(stored,)] = sql.execute(
        "SELECT destination::text FROM sinks WHERE tenant_id = %s AND id = %s",
        [tenant, created.id],
    ).fetchall()
    assert routing_key not in stored
    [change] = client.query(build_filter(actions="sink.created"))
    recorded = json.dumps(json_format.MessageToDict(change.details))
    assert routing_key not in str(change) and routing_key[-4:] not in recorded
    assert "routing_key_fingerprint" in recorded
    # Nor in the sink's error, nor in the logs, when the answer echoes it.
    seq = client.record(action="document.share", actor_id="u").event.seq
    state = wait_for_state(client, created.id, lambda s: bool(s.state.last_error)).state
    assert "HTTP 500" in state.last_error and routing_key not in state.last_error
    seen.set()
    wait_for_state(client, created.id, lambda s: s.state.cursor_seq >= seq)
    assert not [r for r in caplog.records if routing_key in r.getMessage()]
    # Sent whole all the same.
    assert pages(pagerduty.requests())[-1]["routing_key"] == routing_key


def test_a_routing_key_pagerduty_would_refuse_is_refused_naming_the_field(
    client: AuditClient, pagerduty: Endpoint
) -> None:
    for key in ("", "short", "x" * 31 + " "):
        with pytest.raises(InvalidArgumentError) as refused:
            client.create_sink(pagerduty_sink(pagerduty, key))
        assert "sink.pagerduty.routing_key" in str(refused.value), key


def test_the_cli_makes_a_pagerduty_sink_its_key_read_from_a_file(
    server: ServerThread,
    client: AuditClient,
    tenant: str,
    pagerduty: Endpoint,
    routing_key: str,
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "routing-key"
    key_file.write_text(routing_key + "\n")
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "admin")}
    done = CliRunner().invoke(
        client_cli.main,
        ["sinks", "create", "on-call", "--kind", "pagerduty", "--url", pagerduty.url,
         "--routing-key", f"@{key_file}", "--action", "security.alert"],
        env=env,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    sink_id = done.stdout.strip()  # stderr says where the sink starts
    try:
        sink = client.get_sink(sink_id)
        assert sink.pagerduty.url == pagerduty.url
        assert sink.pagerduty.routing_key_hint == routing_key[-4:]
        assert list(sink.filter.actions) == ["security.alert"]
        shown = CliRunner().invoke(client_cli.main, ["sinks", "show", sink_id], env=env)
        assert shown.exit_code == 0 and routing_key not in shown.output
    finally:
        client.delete_sink(sink_id)


def test_another_routing_key_is_recorded_as_a_move_of_the_pager(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    pagerduty: Endpoint,
    routing_key: str,
) -> None:
    """The routing key names the service paged: a new one sends the on-call's
    pages elsewhere, so its change is a WARNING naming `destination_moved`,
    as a moved URL is; a change of its source is not."""
    sink = sinks(pagerduty_sink(pagerduty, routing_key, paused=True))
    other = secrets.token_hex(16)
    client.update_sink(pagerduty_sink(pagerduty, other, paused=True, sink_id=sink.id))
    client.update_sink(
        pagerduty_sink(pagerduty, "", paused=True, sink_id=sink.id, source="elsewhere")
    )
    updates = client.query(build_filter(actions="sink.updated"))
    moved, relabelled = sorted(updates, key=lambda event: event.seq)
    assert moved.severity == event_pb2.SEVERITY_WARNING
    assert list(json_format.MessageToDict(moved.details)["weakens"]) == ["destination_moved"]
    assert other not in str(moved) and routing_key not in str(moved)
    assert relabelled.severity != event_pb2.SEVERITY_WARNING
    assert "weakens" not in json_format.MessageToDict(relabelled.details)
