"""A real HTTP server on 127.0.0.1 standing in for a SIEM or webhook receiver:
it records every request it is sent and answers as a test scripts it."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lowercase names
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a timeout, when long enough)


Responder = Callable[[Received, int], Reply]  # the request, and how many came before it


def always_ok(received: Received, index: int) -> Reply:
    return Reply()


class Endpoint:
    """`tls`: (certificate chain, key) PEM files to serve HTTPS with."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.received: list[Received] = []
        self.responder: Responder = always_ok
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender went away mid-request (a process killed while
                    # sending): nothing was delivered, and nothing is answered.
                    self.close_connection = True
                    return
                received = Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with endpoint._lock:
                    index = len(endpoint.received)
                    endpoint.received.append(received)
                    responder = endpoint.responder
                reply = responder(received, index)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout being tested)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(
        self, done: Callable[[list[Received]], bool], timeout: float = 30.0
    ) -> list[Received]:
        """The requests so far, once `done(requests)`; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.requests()
            if done(received):
                return received
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"endpoint: condition not met after {timeout} s; {len(received)} requests"
                )
            time.sleep(0.02)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def endpoint(tls: tuple[Path, Path] | None = None) -> Iterator[Endpoint]:
    running = Endpoint(tls)
    try:
        yield running
    finally:
        running.close()
