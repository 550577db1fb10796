"""Connections to the gRPC port that carry no call: one that sent the HTTP/2
preface and answers the server's pings, and opens no stream, was kept for
good, and nothing capped how many were kept. No token was needed to take
every file descriptor of the process, its database connections' included
(helper-209). The limits are small here (seconds and counts), as a test
server's settings."""

from __future__ import annotations

import logging
import resource
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sealtrail import AuditClient
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc
from sealtrail_server.app import connection_cap
from tests.conftest import ServerThread

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS, _PING, _GOAWAY = 4, 6, 7
_ACK = 1
# Far longer than the idle time set here, far shorter than forever.
_CLOSED_WITHIN = 10.0


def _frame(kind: int, flags: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", 0) + payload
    )


class _Peer:
    """A raw HTTP/2 connection that sends the preface and its (empty)
    SETTINGS, answers the server's SETTINGS and PINGs, and opens no stream."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=_CLOSED_WITHIN)
        self.socket.sendall(_PREFACE + _frame(_SETTINGS, 0))
        self._buffer = b""
        self.kinds: list[int] = []

    def close(self) -> None:
        self.socket.close()

    def answer_until_closed(self, within: float) -> bool:
        """Whether the server closed the connection within `within` seconds
        (answering its frames meanwhile)."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            self.socket.settimeout(left)
            try:
                data = self.socket.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
            self._answer(data)
        return False

    def _answer(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                return
            kind, flags = self._buffer[3], self._buffer[4]
            payload, self._buffer = self._buffer[9 : 9 + length], self._buffer[9 + length :]
            self.kinds.append(kind)
            try:
                if kind == _SETTINGS and not flags & _ACK:
                    self.socket.sendall(_frame(_SETTINGS, _ACK))
                elif kind == _PING and not flags & _ACK:
                    self.socket.sendall(_frame(_PING, _ACK, payload))
            except OSError:  # closed by the server meanwhile: seen at the next read
                return


def _served(server: ServerThread) -> bool:
    with grpc.insecure_channel(server.target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def quick(migrated_database_url: str) -> Iterator[ServerThread]:
    with ServerThread(
        migrated_database_url, connection_idle_seconds=0.5, stream_heartbeat_seconds=0.2
    ) as running:
        yield running


@pytest.fixture
def few(migrated_database_url: str) -> Iterator[ServerThread]:
    with ServerThread(migrated_database_url, max_connections=3) as running:
        yield running


def test_a_connection_that_makes_no_call_is_closed_after_the_idle_time(
    quick: ServerThread,
) -> None:
    with closing(_Peer(quick.port)) as peer:
        assert peer.answer_until_closed(_CLOSED_WITHIN)
        assert _GOAWAY in peer.kinds  # told why, not just dropped
    assert _served(quick)


def test_connections_past_the_most_allowed_are_closed_at_once(few: ServerThread) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(closing(_Peer(few.port))) for _ in range(3)]
        for peer in held:  # each answered: the server holds it
            assert not peer.answer_until_closed(0.2) and _SETTINGS in peer.kinds
        extra = stack.enter_context(closing(_Peer(few.port)))
        assert extra.answer_until_closed(_CLOSED_WITHIN)
        assert extra.kinds == []  # closed before a frame
    # Room again once the server saw them go.
    deadline = time.monotonic() + _CLOSED_WITHIN
    while True:
        try:
            assert _served(few)
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_live_stream_outlasts_the_idle_time(quick: ServerThread, tenant: str) -> None:
    """A stream is a call in flight, however long its connection carries
    nothing else: the idle time never ends it."""
    with (
        grpc.insecure_channel(quick.target) as channel,
        AuditClient(quick.target, token=quick.token(tenant, "recorder")) as writer,
    ):
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        stream = stub.StreamEvents(
            audit_service_pb2.StreamEventsRequest(),
            metadata=[("authorization", f"Bearer {quick.token(tenant, 'reader')}")],
            timeout=30,
        )
        began = time.monotonic()
        for _ in stream:  # heartbeats, every 0.2 s
            if time.monotonic() - began > 4 * 0.5:
                break
        seq = writer.record(action="doc.edit", actor_id="u").event.seq
        for message in stream:
            if message.HasField("event") and message.event.seq == seq:
                break
        stream.cancel()


def test_a_cap_above_the_file_descriptor_limit_is_lowered_below_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connections that took every file descriptor left none for a database
    connection: the cap keeps a quarter of them for the rest. Only this
    thread's records are read, where connection_cap runs: the module's
    servers log from threads of their own (a warning of theirs on a loaded
    machine is not the cap's)."""

    def warned() -> list[str]:
        here = threading.get_ident()
        return [record.getMessage() for record in caplog.records if record.thread == here]

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    with caplog.at_level(logging.WARNING):
        assert connection_cap(10) == 10
        assert warned() == []
        assert connection_cap(2 * soft) == soft * 3 // 4
    assert ["SEALTRAIL_MAX_CONNECTIONS" in message for message in warned()] == [True]
