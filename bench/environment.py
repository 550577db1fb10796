"""What the benchmark runs against: a PostgreSQL database (embedded in a temp
dir unless SEALTRAIL_BENCH_DATABASE_URL is set), migrated, and Sealtrail
servers as separate processes started through their own command line, with
settings given as SEALTRAIL_* environment variables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from sealtrail_server.embedded import quietly_imported_pgserver
from sealtrail_server.store.migrations import migrate

DATABASE_URL_ENV = "SEALTRAIL_BENCH_DATABASE_URL"
_SERVING = "sealtrail: serving gRPC on "
_CONSOLE = "sealtrail: console on "
_METRICS = "sealtrail: metrics on "
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Database:
    """A migrated database: its URL and, when embedded, the postmaster's pid."""

    url: str
    postmaster_pid: int | None


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    """A scratch directory for the run, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="sealtrail-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def database(workdir: Path) -> Iterator[Database]:
    """SEALTRAIL_BENCH_DATABASE_URL, or an embedded PostgreSQL stopped and
    deleted on exit; migrated either way."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        _migrate(url)
        yield Database(url, None)
        return
    pgserver = quietly_imported_pgserver()  # platformdirs: no XDG_RUNTIME_DIR
    server = pgserver.get_server(workdir / "postgres", cleanup_mode="delete")
    try:
        url = server.get_uri()
        _migrate(url)
        yield Database(url, server.get_pid())
    finally:
        server.cleanup()


def _migrate(url: str) -> None:
    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)

    asyncio.run(run())


def _sealtrail_server(*args: str) -> list[str]:
    return [sys.executable, "-m", "sealtrail_server", *args]


def create_token(database_url: str, tenant: str) -> str:
    """A new admin token for `tenant`, made by `sealtrail_server token create`."""
    done = subprocess.run(
        _sealtrail_server(
            "token", "create", "--tenant", tenant, "--role", "admin", "--database-url", database_url
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"token create failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class Server:
    """A running Sealtrail server process."""

    process: subprocess.Popen[Any]
    target: str
    console_url: str | None = None  # with SEALTRAIL_CONSOLE_LISTEN set
    metrics_url: str | None = None  # with OTEL_METRICS_EXPORTER=prometheus

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def server(
    database_url: str,
    workdir: Path,
    *,
    name: str = "server",
    settings: Mapping[str, str] | None = None,
    flags: Sequence[str] = (),
) -> Iterator[Server]:
    """`sealtrail_server serve` on a free port, with `settings` (SEALTRAIL_*
    and OTEL_* variables) added to its environment, and `flags` to its
    command line (those with no variable); SIGTERM and wait on exit.
    OTEL_* variables of this process are not passed on: a server traces only
    when its settings say so. Its stdout and stderr go to `workdir`/`name`.out
    and .err (shown if it fails)."""
    out_path, err_path = workdir / f"{name}.out", workdir / f"{name}.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            _sealtrail_server(
                "serve", "--listen", "127.0.0.1:0", "--database-url", database_url, *flags
            ),
            stdout=out,
            stderr=err,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
                **(settings or {}),
            },
        )
    try:
        expect_console = bool((settings or {}).get("SEALTRAIL_CONSOLE_LISTEN"))
        expect_metrics = "prometheus" in (settings or {}).get("OTEL_METRICS_EXPORTER", "")
        target, console, metrics = _wait_until_serving(
            process, out_path, err_path, expect_console, expect_metrics
        )
        yield Server(process, target, console, metrics)
    finally:
        _stop(process)


def _wait_until_serving(
    process: subprocess.Popen[Any],
    out: Path,
    err: Path,
    expect_console: bool,
    expect_metrics: bool,
) -> tuple[str, str | None, str | None]:
    """The HOST:PORT the server prints once it serves (and its console's and
    metrics' URLs)."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        lines = out.read_text(encoding="utf-8").splitlines()
        target = next(
            (x.removeprefix(_SERVING).strip() for x in lines if x.startswith(_SERVING)), None
        )
        console = next(
            (x.removeprefix(_CONSOLE).strip() for x in lines if x.startswith(_CONSOLE)), None
        )
        metrics = next(
            (x.removeprefix(_METRICS).strip() for x in lines if x.startswith(_METRICS)), None
        )
        if (
            target is not None
            and (console is not None or not expect_console)
            and (metrics is not None or not expect_metrics)
        ):
            return target, console, metrics
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = "\n".join(err.read_text(encoding="utf-8").splitlines()[-20:])
    raise RuntimeError(f"the server did not start (exit code {process.poll()}):\n{tail}")


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
