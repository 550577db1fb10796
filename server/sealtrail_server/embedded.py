"""The embedded default: a PostgreSQL server run by the `pgserver` package in
`<data_dir>/postgres`, reused across restarts, used when no database URL is
configured. It listens on a Unix socket only and stops when the last process
using it exits cleanly; a process that died without its exit handlers is
not waited for (it is forgotten at the next start)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from contextlib import AbstractContextManager
from pathlib import Path

log = logging.getLogger(__name__)


def embedded_database_exists(data_dir: Path) -> bool:
    """Whether `data_dir` holds an embedded database already (initdb's
    PG_VERSION, written once the cluster is made)."""
    return (data_dir / "postgres" / "PG_VERSION").is_file()


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded server; return its connection URL."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file, or a directory under one
        raise SystemExit(
            f"SEALTRAIL_DATA_DIR={str(data_dir)!r}: not a directory that can be made"
            f" ({error.strerror})"
        ) from None
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as on most servers.
        warnings.simplefilter("ignore", UserWarning)
        import pgserver
    lock = pgserver.PostgresServer._lock  # type: ignore[attr-defined]
    _forget_dead_handles(data_dir / "postgres", lock)
    get_server = pgserver.get_server  # type: ignore[attr-defined]
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded PostgreSQL in %s", data_dir / "postgres")
    return url


def _forget_dead_handles(pgdata: Path, lock: AbstractContextManager[object]) -> None:
    """Takes the processes that died off pgserver's list of those using its
    PostgreSQL (`.handle_pids.json`, a JSON list of pids, read and written
    under `lock`). pgserver stops PostgreSQL when the last process on it exits
    cleanly, and takes none off but that one: after one server died without
    its exit handlers (SIGKILL, a crash, a power loss), PostgreSQL was never
    stopped again (helper-140)."""
    handles = pgdata / ".handle_pids.json"
    with lock:
        try:
            pids = json.loads(handles.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # none yet; or not a list this reads, left to pgserver
        if not isinstance(pids, list):
            return
        alive = [pid for pid in pids if not isinstance(pid, int) or _alive(pid)]
        if alive != pids:
            gone = [pid for pid in pids if pid not in alive]
            log.info("embedded PostgreSQL: processes %s are gone, not waited for", gone)
            handles.write_text(json.dumps(alive), encoding="utf-8")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal: whether it exists
    except ProcessLookupError:
        return False
    except OSError:  # another user's, say: alive
        return True
    return True
