"""A server down when a call begins and back while the call is being retried is
reached by the call's retries: each retry after UNAVAILABLE finds its connection
tried again, not failed at once by gRPC while it waits out its own backoff before
trying the address again (1 s at first, longer than a call's first four waits)."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections.abc import Iterator

import pytest

from sealtrail import AsyncAuditClient, AuditClient
from tests.conftest import ServerThread


class Restarting:
    """A server's address that refuses its first connection (closed as it
    comes, as a server process stopped or not yet listening closes it), then
    passes every later one to `upstream`: a server back at once."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="restarting", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            if self.connections == 1:
                client.close()
                continue
            try:
                server = socket.create_connection(self._upstream)
            except OSError:  # the server behind is gone: down again
                client.close()
                continue
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accept() waiting
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class _Jitter(random.Random):
    """Each wait a fixed share of its ceiling (0.3): the call's 5 attempts
    within 0.45 s of its first, as often with the client's own random jitter
    (its waits are at most 1.5 s in all, on average 0.75 s)."""

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * 0.3


@pytest.fixture
def restarting(server: ServerThread) -> Iterator[Restarting]:
    with contextlib.closing(Restarting(server.target)) as address:
        yield address


def test_a_call_reaches_a_server_back_while_it_is_retried(
    server: ServerThread, tenant: str, restarting: Restarting
) -> None:
    token = server.token(tenant)
    with AuditClient(restarting.target, token=token, rng=_Jitter()) as client:
        recorded = client.record(action="server.back", actor_id="u_1")
    assert recorded.event.action == "server.back"
    assert restarting.connections >= 2


async def test_an_async_call_reaches_a_server_back_while_it_is_retried(
    server: ServerThread, tenant: str, restarting: Restarting
) -> None:
    token = server.token(tenant)
    async with AsyncAuditClient(restarting.target, token=token, rng=_Jitter()) as client:
        recorded = await client.record(action="server.back", actor_id="u_1")
    assert recorded.event.action == "server.back"
    assert restarting.connections >= 2
