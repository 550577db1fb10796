"""The embedded default: a PostgreSQL server run by the `pgserver` package in
`<data_dir>/postgres`, reused across restarts, used when no database URL is
configured. It listens on a Unix socket only and stops when the last process
using it exits cleanly; a process that died without its exit handlers is
not waited for (it is forgotten at the next start)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import warnings
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType, SimpleNamespace

import psutil

log = logging.getLogger(__name__)

# Characters a shell reads for more than themselves, besides white space.
_READ_BY_A_SHELL = frozenset("\"'\\$`;&|<>()*?[]{}#~!")

# The system user pgserver runs PostgreSQL as when it runs as root.
_PGSERVER_USER = "pgserver"


def quietly_imported_pgserver() -> ModuleType:
    """The `pgserver` package, imported without the warning platformdirs
    gives as it is (a RuntimeDirWarning, `XDG_RUNTIME_DIR is not set,
    falling back to /tmp/runtime-0`, with the line of code it came from):
    pgserver's class body asks platformdirs for the user's runtime directory
    (where its lock file goes), and most servers, `sudo` and cron have no
    XDG_RUNTIME_DIR. The fallback is where docs/operations.md says the lock
    is: nothing to tell. Only platformdirs' UserWarnings are left out (a
    RuntimeDirWarning is one; older platformdirs warned none); any other
    warning of the import is shown as it would be."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"platformdirs(\.|$)")
        import pgserver
    return pgserver


def postgres_bin() -> Path:
    """The directory of the embedded PostgreSQL's programs (pg_dump, psql,
    pg_restore), which the `pgserver` package ships: docs/operations.md's
    `PGBIN`, printed without pgserver's import's warning."""
    quietly_imported_pgserver()
    import pgserver._commands

    return Path(pgserver._commands.POSTGRES_BIN_PATH)


def start_alone(pgdata: Path | str) -> None:
    """Starts the embedded PostgreSQL on `pgdata` (made first, where there is
    none), left running once this process exits: docs/operations.md's
    restore into a new data dir, which the server joins, then stops when it
    exits. Said without pgserver's import's warning."""
    pgserver = quietly_imported_pgserver()
    pgserver.get_server(Path(pgdata), cleanup_mode=None)


def embedded_database_exists(data_dir: Path) -> bool:
    """Whether `data_dir` holds an embedded database already (initdb's
    PG_VERSION, written once the cluster is made)."""
    return (data_dir / "postgres" / "PG_VERSION").is_file()


def start_embedded_postgres(data_dir: Path, *, said_at: int = logging.INFO) -> str:
    """Start (or join) the embedded server; return its connection URL. Where
    it is, is logged at `said_at`: a server's start says it; an operator's
    command, whose stderr is its one line of `Error: ...`, at DEBUG (-v)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file, or a directory under one
        raise SystemExit(
            f"SEALTRAIL_DATA_DIR={str(data_dir)!r}: not a directory that can be made"
            f" ({error.strerror})"
        ) from None
    pgserver = quietly_imported_pgserver()
    _socket_directories_a_shell_need_not_quote()
    pgdata = data_dir / "postgres"
    log_file = pgdata / "log"  # PostgreSQL's, every start's appended
    try:
        logged_before = log_file.stat().st_size
    except OSError:
        logged_before = 0
    pgserver_log = logging.getLogger("pgserver")
    failures = _PgserverFailures()
    if not pgserver_log.isEnabledFor(logging.DEBUG):  # -v shows them
        pgserver_log.addFilter(failures)
    try:
        lock = pgserver.PostgresServer._lock
        _forget_dead_handles(pgdata, lock)
        _forget_stale_lock_files(pgdata, lock)
        _make_the_cluster_whole(pgdata, lock)
        get_server = pgserver.get_server
        server = get_server(pgdata, cleanup_mode="stop")
    except (subprocess.SubprocessError, OSError) as error:
        said = _said_of_this_start(log_file, logged_before) or failures.said() or [str(error)]
        within = " within 10 s" if isinstance(error, subprocess.TimeoutExpired) else ""
        where = f" (its log: {log_file})" if log_file.is_file() else ""  # none before initdb
        raise SystemExit(
            f"the embedded PostgreSQL in {pgdata} did not start{within}: {'; '.join(said)}{where}"
        ) from None
    finally:
        pgserver_log.removeFilter(failures)
    url: str = server.get_uri()
    log.log(said_at, "embedded PostgreSQL in %s", pgdata)
    return url


# PostgreSQL's log lines that tell of any start, not of what failed one.
_ROUTINE = re.compile(
    r"LOG: (starting PostgreSQL|listening on|database system is shut down|redirecting log)"
)
# What PostgreSQL's log puts before each line's severity: time, zone, [pid].
_LOG_LINE_PREFIX = re.compile(r"^\S+ \S+ \S+ \[\d+\] ")


def _said_of_this_start(log_file: Path, offset: int) -> list[str]:
    """What PostgreSQL logged past `offset` (this start's), but what every
    start logs; the last lines, on one line each."""
    try:
        with log_file.open("rb") as logged:
            logged.seek(offset)
            text = logged.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = [_one_line(line) for line in text.splitlines()]
    return [line for line in lines if line and not _ROUTINE.match(line)][-6:]


def _one_line(logged: str) -> str:
    """A line PostgreSQL logged (or printed), without its time and pid."""
    return " ".join(_LOG_LINE_PREFIX.sub("", logged).split())


class _PgserverFailures(logging.Filter):
    """Keeps pgserver's errors (a failed command's output, and after a failed
    start the whole of PostgreSQL's log: every start it ever made) off the
    log: a failed start says what failed in one line (start_embedded_postgres),
    from PostgreSQL's log, else from a failed command's standard error, kept
    here. Its other records pass."""

    def __init__(self) -> None:
        super().__init__()
        self.stderr: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        if "stderr:\n" in message:  # "Failed postgres command ...": what it printed
            printed = message.rsplit("stderr:\n", 1)[1].rsplit("\n---", 1)[0]
            self.stderr += [_one_line(line) for line in printed.splitlines()]
        return False

    def said(self) -> list[str]:
        return [line for line in self.stderr if line][-6:]


def _socket_directories_a_shell_need_not_quote() -> None:
    """pgserver hands PostgreSQL its socket directory, the data dir unless its
    path is too long for a socket's, through pg_ctl's shell unquoted
    (`-o "-k <dir>"`): a data dir whose path has a space (a home "/home/Jo
    Smith", macOS's "Application Support"), a quote or another character a
    shell reads never started (helper-271). Such a data dir's socket goes
    where pgserver puts one too long: its runtime directory, in a directory
    named by a hash of the data dir's path."""
    import pgserver.postgres_server as postgres_server

    choose = postgres_server.find_suitable_socket_dir  # type: ignore[attr-defined]
    if getattr(choose, "sealtrail_quoting", False):
        return

    def choose_one_unquoted(pgdata: Path, runtime_path: Path) -> Path:
        if _unquoted(str(pgdata)):
            chosen: Path = choose(pgdata, runtime_path)
            return chosen
        if not _unquoted(str(runtime_path)):
            raise SystemExit(
                f"the embedded PostgreSQL's socket can be neither in {pgdata} nor in"
                f" {runtime_path}: each path holds a character a shell reads (a space, a"
                " quote): set SEALTRAIL_DATA_DIR, or XDG_RUNTIME_DIR, to one without"
            )
        digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:10]
        of_its_own = runtime_path / f"sealtrail-{digest}"
        of_its_own.mkdir(parents=True, exist_ok=True)
        chosen = choose(of_its_own, runtime_path)
        return chosen

    choose_one_unquoted.sealtrail_quoting = True  # type: ignore[attr-defined]
    postgres_server.find_suitable_socket_dir = choose_one_unquoted  # type: ignore[attr-defined]


def _unquoted(path: str) -> bool:
    """Whether a shell reads `path` as the one word it is, unquoted."""
    return not any(c.isspace() or c in _READ_BY_A_SHELL for c in path)


def _make_the_cluster_whole(pgdata: Path, lock: AbstractContextManager[object]) -> None:
    """Makes the PostgreSQL cluster (initdb) in `<pgdata>.initdb`, then renames
    it `pgdata`, where there is none yet: a first start stopped while initdb ran
    (SIGTERM, Ctrl-C) left half a cluster in `pgdata`, its PG_VERSION written
    early, and every start after it skipped initdb and failed (helper-271).
    What such a start left in `<pgdata>.initdb` is made again."""
    if (pgdata / "PG_VERSION").is_file():
        return
    making = pgdata.with_name(f"{pgdata.name}.initdb")
    with lock:
        if (pgdata / "PG_VERSION").is_file():  # another start made it meanwhile
            return
        if making.exists():
            log.warning("embedded PostgreSQL: %s, left by a start cut off, made again", making)
            _end_initdb_left_running(making)  # a start killed outright leaves it writing there
            shutil.rmtree(making)
        making.mkdir()
        # pgserver's initdb step alone (as its own user when run as root), on
        # what it reads of a server: its directory, system user and superuser.
        import pgserver.utils  # imported already, quietly: start_embedded_postgres
        from pgserver.postgres_server import PostgresServer

        root = os.name == "posix" and os.geteuid() == 0
        if root:
            pgserver.utils.ensure_user_exists(_PGSERVER_USER)
        making_server = SimpleNamespace(
            pgdata=making.resolve(),
            system_user=_PGSERVER_USER if root else None,
            postgres_user="postgres",
        )
        # The attributes it reads, not a server: none is started here.
        PostgresServer.ensure_pgdata_inited(making_server)  # type: ignore[arg-type]
        try:
            os.rename(making, pgdata)  # an empty `pgdata` (a pgserver's before) is replaced
        except OSError as error:
            raise SystemExit(
                f"{pgdata} is not empty and holds no PostgreSQL cluster (no PG_VERSION):"
                " what a first start cut off left there, or not the data dir meant; move it"
                f" away, or set SEALTRAIL_DATA_DIR to the server's ({error.strerror})"
            ) from None


def _end_initdb_left_running(making: Path) -> None:
    """Kills an initdb left making a cluster in `making` by a start killed
    outright (SIGKILL): it went on writing there, and on failing removed what
    was there, the cluster made again after it included."""
    for process in psutil.process_iter():
        arguments = _command_line(process.pid)
        if arguments and Path(arguments[0]).name == "initdb" and _runs_on(arguments, making):
            with contextlib.suppress(psutil.Error):  # gone already; or not this user's
                process.kill()
                process.wait(10)


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


def _forget_stale_lock_files(pgdata: Path, lock: AbstractContextManager[object]) -> None:
    """Removes PostgreSQL's lock files (`postmaster.pid`, and its socket's
    `.s.PGSQL.<port>.lock`) that name a process that is not a PostgreSQL on
    `pgdata`, when none runs on it. PostgreSQL killed with its server (a kill
    of the process group, the OOM killer, a power loss) leaves them behind,
    and by the next start their pid can be another process's (a container's
    pids begin again at 1), or a zombie nobody reaped. pgserver took that
    process for its PostgreSQL: the start failed on a socket nobody listened
    on, and its exit, stopping "its" PostgreSQL, killed that process; and
    PostgreSQL refused to start while it lived (helper-271). A pid no process
    has is left to PostgreSQL, which removes such a file itself."""
    pid_file = pgdata / "postmaster.pid"
    with lock:
        try:
            lines = pid_file.read_text(encoding="utf-8").splitlines()
        except OSError:
            return  # none (or unreadable: left to pgserver and PostgreSQL)
        socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else pgdata
        files = [pid_file, *sorted(socket_dir.glob(".s.PGSQL.*.lock"))]
        stale = {file: pid for file in files if (pid := _another_process_named(file, pgdata))}
        if not stale:
            return
        for process in psutil.process_iter():
            running = _command_line(process.pid)
            if running and _runs_on(running, pgdata):
                return  # a PostgreSQL runs there, whatever the files say: left to it
        for file, pid in stale.items():
            log.warning(
                "embedded PostgreSQL: %s names process %d, which is not PostgreSQL: removed"
                " (left by a PostgreSQL that did not stop)",
                file,
                pid,
            )
            file.unlink(missing_ok=True)


def _another_process_named(lock_file: Path, pgdata: Path) -> int | None:
    """The pid `lock_file` names (its first line) if a process has it that is
    not a PostgreSQL on `pgdata` (a zombie included); else None."""
    try:
        pid = int(lock_file.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None  # gone, or not one this reads: left to PostgreSQL
    named = _command_line(pid)
    if named is None or _runs_on(named, pgdata):
        return None  # no such process (PostgreSQL's to judge), or PostgreSQL, or cannot tell
    return pid


def _command_line(pid: int) -> list[str] | None:
    """Process `pid`'s arguments: none for a zombie (it has ended, and runs
    nothing); None if there is no such process, or they cannot be read."""
    try:
        arguments: list[str] = psutil.Process(pid).cmdline()
    except psutil.ZombieProcess:  # before NoSuchProcess, its base class
        return []
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return arguments


def _runs_on(arguments: list[str], pgdata: Path) -> bool:
    """Whether a process of these arguments names `pgdata` (as pgserver's
    PostgreSQL does: `postgres -D <pgdata> ...`)."""
    return str(pgdata.resolve()) in arguments or str(pgdata) in arguments


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal: whether it exists
    except ProcessLookupError:
        return False
    except OSError:  # another user's, say: alive
        return True
    return True
