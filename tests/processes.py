"""Sealtrail servers as separate processes, for tests that kill or race them."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from typing import IO

from .conftest import signed_checkpoints_dir_of
from .service_login import service_login_url

READY_PREFIX = "sealtrail: serving gRPC on "


def stop(process: subprocess.Popen[str], timeout: float = 60) -> None:
    """SIGTERM, and SIGKILL if it has not ended within `timeout`: a test
    leaves no process behind, whatever failed."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


class ServerProcess:
    """`python -m sealtrail_server serve` on 127.0.0.1 (port 0 unless given)."""

    def __init__(
        self,
        database_url: str,
        *,
        port: int = 0,
        start_timeout: float = 60,
        env: dict[str, str] | None = None,
        verbose: bool = False,
    ) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SEALTRAIL_OWNER_DATABASE_URL": database_url,
            "SEALTRAIL_SIGNED_CHECKPOINTS_DIR": str(signed_checkpoints_dir_of(database_url)),
            # As every test server: any may hold the lease of a test's sink.
            "SEALTRAIL_FORWARD_ALLOW_HTTP": "true",
            "SEALTRAIL_FORWARD_ALLOW_NETWORKS": "127.0.0.0/8",
            "SEALTRAIL_FORWARD_POLL_INTERVAL": "0.2",
            "SEALTRAIL_FORWARD_BACKOFF_BASE": "0.05",
            # As every in-process test server: no credential backfill of its
            # own, which would take the job's lock from a test's run_once() or
            # write another test's rows (ADR 0143).
            "SEALTRAIL_CREDENTIAL_BACKFILL": "false",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sealtrail_server",
                *(["--verbose"] if verbose else []),
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--database-url",
                service_login_url(database_url),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, None), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()
        self.target = self._wait_ready(start_timeout)
        self.port = int(self.target.rsplit(":", 1)[1])

    def _pump(self, stream: IO[str], keep: list[str] | None) -> None:
        for line in stream:
            if keep is None:
                self._lines.put(line)
            else:
                keep.append(line)

    def _wait_ready(self, timeout: float) -> str:
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise RuntimeError("server did not start:\n" + "".join(self.stderr)) from None
            if line.startswith(READY_PREFIX):
                return line.removeprefix(READY_PREFIX).strip()

    def next_line(self, timeout: float = 10) -> str:
        """The next line the server prints after the one it is ready with."""
        return self._lines.get(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown work at all, as in a crash."""
        self._end(signal.SIGKILL, 30)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM: graceful shutdown; returns the exit status."""
        return self._end(signal.SIGTERM, timeout)

    def _end(self, signum: int, timeout: float) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        status = self.proc.wait(timeout)
        for pump in self._pumps:
            pump.join(timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return status
