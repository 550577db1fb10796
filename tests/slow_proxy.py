"""A TCP proxy that passes what a client sends at `rate` bytes a second (a
slow or distant client uploading), and what the server sends at full speed.
Use it in `contextlib.closing`."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class SlowUploadProxy:
    def __init__(self, upstream: tuple[str, int], *, rate: int) -> None:
        self._upstream = upstream
        self._rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="slow-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self._upstream)
            for source, sink, rate in ((client, server, self._rate), (server, client, None)):
                threading.Thread(target=self._pump, args=(source, sink, rate), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, rate: int | None) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(16384 if rate else 1 << 20):
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
