"""Receivers that misbehave at the socket level, on 127.0.0.1: what the sink
says of them, and that it says nothing it must keep."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC

import pytest

from sealtrail import AuditClient, build_event, build_sink
from sealtrail.v1 import forwarding_pb2
from tests.conftest import ServerThread, logged
from tests.http_endpoint import Received, Reply, endpoint
from tests.integration.test_forwarding import (
    SHARED,
    delivered_seqs,
    new_secret,
)
from tests.sink_states import wait_for_state


def _request(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """The head and body of the request `conn` sends (its body as long as
    Content-Length says, or as much as came); None if it closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


@contextlib.contextmanager
def _tcp_server(serve: Callable[[socket.socket, threading.Event], None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 whose each connection `serve` takes, in a
    thread of its own, with the event set as the server stops; its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn, stop), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@contextlib.contextmanager
def raw_receiver(answer: Callable[[bytes], bytes]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that reads each request's head and body and
    writes back `answer(request)` (raw bytes, HTTP or not), then closes; its port."""

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            if (request := _request(conn)) is not None:
                conn.sendall(answer(request[0] + b"\r\n\r\n" + request[1]))

    with _tcp_server(serve) as port:
        yield port


def test_a_receiver_echoing_the_request_never_shows_the_urls_secret(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A port that echoes what it is sent (a TCP echo, a service that is not
    HTTP) answers with the request's own first line, which the HTTP client
    names in its error: the path and query of the sink's URL."""
    token = "tok_SuperSecretToken1234567890"
    chat_path = "/services/T0123ABCD/B0456EFGH/ChatSecretPart0123456789"
    with raw_receiver(lambda request: request) as port, caplog.at_level(logging.INFO):
        webhook = sinks(build_sink("echoed", "webhook", url=f"http://127.0.0.1:{port}/hook?token={token}",
                                   secrets=[new_secret()], filter=SHARED))  # fmt: skip
        chat = sinks(build_sink("echoed chat", "chat", url=f"http://127.0.0.1:{port}{chat_path}",
                                filter=SHARED))  # fmt: skip
        client.record(build_event(action="document.share", actor_id="u"))
        failed = [wait_for_state(client, s.id, lambda s: s.state.last_error != "")
                  for s in (webhook, chat)]  # fmt: skip
    for sink in failed:  # what it said, all but the URL's secret parts
        assert sink.state.last_error.startswith(f"127.0.0.1:{port}: illegal status line")
    assert failed[0].state.last_error.endswith("POST /hook?… HTTP/1.1')")
    assert failed[1].state.last_error.endswith("POST /services/T0123ABCD/B0456EFGH/… HTTP/1.1')")
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("sealtrail_server")]
    assert any(f"127.0.0.1:{port}: illegal status line" in message for message in logged)
    for secret in (token, "ChatSecretPart0123456789"):
        assert not any(secret in message for message in logged)


@contextlib.contextmanager
def trickling_receiver(head: bytes, every: float) -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 that reads each request whole, answers `head`
    at once, then a byte of body every `every` seconds, for as long as the
    connection stays open; its port, and the requests' bodies."""
    bodies: list[bytes] = []

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            if (request := _request(conn)) is None:
                return
            bodies.append(request[1])
            conn.sendall(head)
            while not stop.wait(every):
                conn.sendall(b" ")

    with _tcp_server(serve) as port:
        yield port, bodies


def test_a_200_whose_body_never_ends_delivers_the_batch(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink]
) -> None:
    """A receiver that says 200 at once and then trickles a body that never
    ends (a byte every half second, never a read timeout): the status is the
    answer a webhook's delivery needs. Waiting for the body to end, the
    exchange met its deadline, the batch counted as failed, and it was sent
    again and again, the sink never getting past it."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    with trickling_receiver(head, every=0.5) as (port, bodies):
        sink = sinks(build_sink("trickled", "webhook", url=f"http://127.0.0.1:{port}/hook",
                                secrets=[new_secret()], filter=SHARED))  # fmt: skip
        client.record(build_event(action="document.share", actor_id="u"))
        done = wait_for_state(client, sink.id, lambda s: s.state.delivered_events == 1)
        assert done.state.lag_events == 0 and done.state.consecutive_failures == 0
        assert len(bodies) == 1  # taken once, not sent again


@pytest.mark.parametrize("asked", ["9999999999", "1796532560"], ids=["huge", "epoch"])
def test_a_retry_after_of_more_seconds_than_nine_digits_is_waited_for_five_minutes(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink], asked: str
) -> None:
    """Retry-After in seconds of ten digits or more (a destination asking for
    a very long wait, or, as some do, naming the Unix time to come back at)
    was ignored: the sink came back after its backoff alone, a second later,
    where a date however far ahead is waited for five minutes."""
    with endpoint() as receiver:
        receiver.responder = lambda received, index: Reply(503, b"busy", {"Retry-After": asked})
        sink = sinks(build_sink("told", "webhook", url=receiver.url, secrets=[new_secret()],
                                filter=SHARED))  # fmt: skip
        client.record(build_event(action="document.share", actor_id="u"))
        state = wait_for_state(client, sink.id, lambda s: s.state.consecutive_failures > 0).state
    wait = state.next_attempt_time.ToDatetime(UTC) - state.last_error_time.ToDatetime(UTC)
    assert 298 <= wait.total_seconds() <= 300.5, wait


def test_no_event_goes_to_a_sinks_old_url_once_its_move_is_acknowledged(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink]
) -> None:
    """A 403 of one event sends the events after it, each alone, to tell the
    sink's token from a firewall's rule (ADR 0054): up to 64 requests in one
    step. Moved to another URL while they went, the sink went on sending
    them to the old one, each after the move was acknowledged: events to a
    destination its admin had just taken them from. Only the request on its
    way when the sink changes goes by the old definition (docs/forwarding.md)."""
    with endpoint() as old, endpoint() as new:
        moved_after: list[int] = []  # the old URL's requests when the move was acknowledged

        def refuse_and_move_at_the_first_probe(received: Received, index: int) -> Reply:
            carried = delivered_seqs([received])
            if carried == [seqs[1]] and not moved_after:  # the first probe, after seqs[0]'s 403
                client.update_sink(
                    forwarding_pb2.Sink(id=sink.id, webhook=forwarding_pb2.WebhookDestination(
                        url=new.url, secrets=[new_secret()])),
                    fields=["webhook"],
                )  # fmt: skip
                moved_after.append(index + 1)
            return Reply(403, b"Forbidden")

        old.responder = refuse_and_move_at_the_first_probe
        sink = sinks(build_sink("moving", "webhook", url=old.url, secrets=[new_secret()],
                                filter=SHARED, paused=True))  # fmt: skip
        events = [build_event(action="document.share", actor_id=f"u-{n}") for n in range(6)]
        seqs = [result.event.seq for result in client.record_batch(events)]
        client.update_sink(forwarding_pb2.Sink(id=sink.id, paused=False), fields=["paused"])
        received = new.wait_for(lambda r: set(seqs) <= set(delivered_seqs(r)))
        assert sorted(set(delivered_seqs(received))) == seqs
        assert moved_after and len(old.requests()) == moved_after[0], [
            delivered_seqs([r]) for r in old.requests()
        ]


def test_a_503_whose_body_stalls_is_waited_for_as_its_retry_after_says(
    client: AuditClient, sinks: Callable[..., forwarding_pb2.Sink]
) -> None:
    """An overloaded receiver answers 503 with Retry-After at once, then
    dribbles its error page: waiting for the page to end, the exchange met
    its deadline with no answer, and the sink came back after its backoff
    alone (a second), not after the two minutes it was asked to wait."""
    head = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\nContent-Length: 100000\r\n\r\n"
    with trickling_receiver(head, every=0.5) as (port, _):
        sink = sinks(build_sink("overloaded", "webhook", url=f"http://127.0.0.1:{port}/hook",
                                secrets=[new_secret()], filter=SHARED))  # fmt: skip
        client.record(build_event(action="document.share", actor_id="u"))
        state = wait_for_state(client, sink.id, lambda s: s.state.consecutive_failures > 0).state
    assert state.last_error.startswith(f"HTTP 503 from 127.0.0.1:{port}"), state.last_error
    wait = state.next_attempt_time.ToDatetime(UTC) - state.last_error_time.ToDatetime(UTC)
    assert 118 <= wait.total_seconds() <= 120.5, wait


@pytest.mark.parametrize(
    "location", ["https://siem.example:99999/hook", "https://[::1/hook"], ids=["port", "ipv6"]
)
def test_a_redirect_to_no_url_is_a_failure_the_sink_shows(
    server: ServerThread,
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    caplog: pytest.LogCaptureFixture,
    location: str,
) -> None:
    """A redirect's Location is shown as the sink's URL is; one that is no
    URL (a port out of range, an IPv6 address without its bracket) made that
    raise: each attempt ended in a logged traceback, and the sink showed no
    error, no failure and no backoff, retried every few seconds for good."""
    head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
    with raw_receiver(lambda request: head) as port, caplog.at_level(logging.INFO):
        sink = sinks(build_sink("redirected", "webhook", url=f"http://127.0.0.1:{port}/hook",
                                secrets=[new_secret()], filter=SHARED))  # fmt: skip
        client.record(build_event(action="document.share", actor_id="u"))
        state = wait_for_state(client, sink.id, lambda s: s.state.last_error != "").state
    assert state.last_error == (
        f"HTTP 302 from 127.0.0.1:{port}: redirect to a location that is no URL not followed"
    )
    assert state.consecutive_failures >= 1
    assert not any(record.exc_info for record in logged(caplog, on=server))
