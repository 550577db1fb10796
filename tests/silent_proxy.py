"""A TCP proxy whose connections can be silenced: the bytes each way dropped,
both sockets kept open (a NAT's or a load balancer's dropped state, a network
partition: no FIN, no RST). Connections made after `silence` pass; after
`partition`, they are silenced too. Given an `upload_rate`, what clients
send passes at that many bytes a second (a slow or distant client). The
upstream is a TCP address or a Unix socket's path. Use it in
`contextlib.closing`."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class SilentProxy:
    def __init__(self, upstream: tuple[str, int] | str, *, upload_rate: int | None = None) -> None:
        self._upstream = upstream
        self._upload_rate = upload_rate
        self._partitioned = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._silenced: set[socket.socket] = set()
        self._sockets: list[socket.socket] = []
        self.connections = 0
        threading.Thread(target=self._accept, name="silent-proxy", daemon=True).start()

    def silence(self) -> None:
        """Drop every byte of the connections open now, from now on."""
        with self._lock:
            self._silenced.update(self._sockets)

    def partition(self) -> None:
        """Drop every byte of every connection, open now or made later."""
        with self._lock:
            self._partitioned = True
            self._silenced.update(self._sockets)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            if isinstance(self._upstream, str):
                server = socket.socket(socket.AF_UNIX)
                server.connect(self._upstream)
            else:
                server = socket.create_connection(self._upstream)
            with self._lock:
                self.connections += 1
                self._sockets += [client, server]
                if self._partitioned:
                    self._silenced.update([client, server])
            for source, sink, rate in ((client, server, self._upload_rate), (server, client, None)):
                threading.Thread(target=self._pump, args=(source, sink, rate), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, rate: int | None) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(16384 if rate else 65536):
                if source not in self._silenced:
                    sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def database_upstream(url: str) -> tuple[str, int] | str:
    """Where the database of `url` listens: a TCP address or a Unix socket."""
    params = conninfo_to_dict(url)
    host, port = str(params.get("host") or "/tmp"), int(params.get("port") or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


def through(proxy: SilentProxy, url: str) -> str:
    """`url`, reaching its database through `proxy`."""
    return make_conninfo(url, host="127.0.0.1", port=int(proxy.target.rsplit(":", 1)[1]))
