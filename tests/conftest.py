"""Shared fixtures: a real PostgreSQL (embedded in a temp dir, or
SEALTRAIL_TEST_DATABASE_URL) migrated once per session, and a real Sealtrail
gRPC server on 127.0.0.1 port 0, run in a background thread with its own event
loop. Tests stay independent by using tenants of their own."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

# First, before the client imports grpc: importing it turns gRPC's fork support
# off, without which a pg_ctl forked beside a test server's busy gRPC threads
# died by SIGSEGV before it ran (ADR 0030).
import sealtrail_server  # noqa: F401

# isort: split
import psycopg
import pytest
from click.testing import CliRunner, Result
from hypothesis import settings
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from psycopg.sql import SQL, Identifier

from sealtrail import AuditClient
from sealtrail.tlog import generate_signer_key
from sealtrail_server import cli as server_cli
from sealtrail_server.app import Service
from sealtrail_server.config import Settings
from sealtrail_server.domain.access import Role
from sealtrail_server.embedded import _make_the_cluster_whole, quietly_imported_pgserver
from sealtrail_server.stopping import where_it_waits
from sealtrail_server.store import migrations as store_migrations
from sealtrail_server.store.database import Database
from sealtrail_server.store.migrations import migrate
from sealtrail_server.store.tokens import create_token
from sealtrail_server.telemetry import logs

from .service_login import service_login_url

T = TypeVar("T")

# Shared, noisy machines: no per-example deadline (tests stay bounded by
# max_examples and pytest-timeout instead). Examples are drawn from a seed fixed
# per test, so a run is repeatable and CI cannot fail on a draw no one saw
# before; SEALTRAIL_HYPOTHESIS=explore draws fresh examples to hunt for new ones.
settings.register_profile("sealtrail", deadline=None, derandomize=True)
settings.register_profile("explore", deadline=None, derandomize=False)
settings.load_profile(os.environ.get("SEALTRAIL_HYPOTHESIS", "sealtrail"))

# One checkpoint signing key for every server of the test session, in-thread or
# subprocess, as several replicas of one deployment would share theirs.
SIGNING_KEY = generate_signer_key("sealtrail.test/log").text()
os.environ["SEALTRAIL_SIGNING_KEY"] = SIGNING_KEY
# And one log origin: the session's in-thread server signs every tenant's log
# that grew, the subprocesses' tenants' too, and a subprocess of another origin
# then found checkpoints of the same log under two names.
os.environ["SEALTRAIL_LOG_ORIGIN"] = "sealtrail.test/log"
# And one directory of what the key signed of each log (ADR 0080), as the
# processes of one data dir share theirs: never the user's own data dir.
SIGNED_CHECKPOINTS_DIR = tempfile.mkdtemp(prefix="sealtrail-test-signed-")
atexit.register(shutil.rmtree, SIGNED_CHECKPOINTS_DIR, ignore_errors=True)
os.environ["SEALTRAIL_SIGNED_CHECKPOINTS_DIR"] = SIGNED_CHECKPOINTS_DIR


def signed_checkpoints_dir_of(database_url: str) -> Path:
    """What the key signed of the logs of one database (ADR 0080), shared by
    the servers and commands on it, as a deployment's processes share theirs.
    One directory for every test's database made each server's start read
    the files of every tenant the run had signed, and refuse them all at
    once as restored (0.55 s a start at 1,200 tenants: minutes a CI run)."""
    name = psycopg.conninfo.conninfo_to_dict(database_url).get("dbname") or "postgres"
    return Path(SIGNED_CHECKPOINTS_DIR) / str(name)


# A test run started with SIGINT ignored (`pytest ... &` in a script, `nohup`,
# a CI runner's background job) passed that on to every process its tests
# start: a command sent SIGINT (a Ctrl-C) as it imported its modules never
# took it, and served until the test's timeout (tests/unit/
# test_interrupted_start.py: three failures, a minute apiece). Python's own
# handler again, as in a terminal: a process the tests start gets SIGINT's
# default. A test of a server started with it ignored ignores it there
# (`trap '' INT`).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REDACTION_SECRET = bytes(range(32))
os.environ["SEALTRAIL_REDACTION_KEY"] = REDACTION_SECRET.hex()
SECRETS_KEY = bytes(range(100, 132))  # seals sinks' secrets at rest
os.environ["SEALTRAIL_SECRETS_KEY"] = SECRETS_KEY.hex()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The session's database: in a temp dir of its own, or the one at
    SEALTRAIL_TEST_DATABASE_URL. `make test` runs the tests in several
    processes (pytest-xdist); each has a database of its own, so that what a
    test sets for the whole deployment meets no other process's tests. The
    template the process's databases of their own copy (`migrated_template`)
    is dropped after; an embedded cluster goes whole."""
    url = os.environ.get("SEALTRAIL_TEST_DATABASE_URL")
    if url:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        try:
            if worker is None:
                yield url
            else:
                with database_of_its_own(url, f"sealtrail_test_{worker}") as own_url:
                    yield own_url
        finally:
            drop_templates(url)
        return
    pgserver = quietly_imported_pgserver()  # platformdirs: no XDG_RUNTIME_DIR
    data_dir = Path(tempfile.mkdtemp(prefix="sealtrail-test-pg-"))
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def initdb_cluster() -> Iterator[Path]:
    """A PostgreSQL cluster as a first start's initdb makes it in a data dir
    (embedded.py `_make_the_cluster_whole`), never started: copied
    (`copy_of_cluster`) where a test needs a cluster of its own but not one
    made before its eyes, which then starts on it as on a data dir whose
    cluster was made (an embedded server's first start still makes its
    Sealtrail database, keys and development token). An initdb per test was
    seconds of each on a busy machine."""
    made = Path(tempfile.mkdtemp(prefix="sealtrail-test-cluster-"))
    try:
        quietly_imported_pgserver()  # as a start imports it, before initdb
        _make_the_cluster_whole(made / "postgres", contextlib.nullcontext())
        yield made / "postgres"
    finally:
        shutil.rmtree(made, ignore_errors=True)


def copy_of_cluster(cluster: Path, pgdata: Path) -> None:
    """A copy of `cluster` (`initdb_cluster`) made at `pgdata`, which must not
    exist yet, its files' owner and modes kept (PostgreSQL's user, when run as
    root; 0700, without which PostgreSQL refuses to start)."""
    subprocess.run(["cp", "-a", str(cluster), str(pgdata)], check=True)


@pytest.fixture(scope="session")
def migrated_database_url(database_url: str) -> str:
    migrate_database(database_url)
    return database_url


def migrate_database(url: str, *, out_of_order: bool = False) -> None:
    """Every migration applied to the database at `url`; with `out_of_order`,
    one missing below those applied too (a test that took one away)."""

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn, out_of_order=out_of_order)

    asyncio.run(run())


def run_operator(
    database_url: str, *args: str, env: Mapping[str, str | None] | None = None
) -> Result:
    """`sealtrail-server ARGS` on `database_url`, as the deployment's operator
    runs it: with the deployment's keys, forwarding to loopback allowed; `env`
    changes that environment (None unsets a variable)."""
    env = {
        "SEALTRAIL_DATABASE_URL": database_url,
        "SEALTRAIL_SIGNED_CHECKPOINTS_DIR": str(signed_checkpoints_dir_of(database_url)),
        "SEALTRAIL_REDACTION_KEY": REDACTION_SECRET.hex(),
        "SEALTRAIL_SECRETS_KEY": SECRETS_KEY.hex(),
        "SEALTRAIL_FORWARD_ALLOW_HTTP": "true",
        "SEALTRAIL_FORWARD_ALLOW_NETWORKS": "127.0.0.0/8",
        **(env or {}),
    }
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with _servers_unheard():
            return CliRunner().invoke(server_cli.main, list(args), env=env, catch_exceptions=False)
    finally:
        # The command configures logging as a process does (basicConfig with
        # force), which took pytest's own handlers, caplog's among them, for
        # the rest of the test (helper-193).
        root.handlers[:], root.level = handlers, level


# The loop threads of the test servers running in this process.
_SERVER_THREADS: set[int] = set()


@contextlib.contextmanager
def _servers_unheard() -> Iterator[None]:
    """The logging a command configures (telemetry/logs.py) writes none of
    the records of the servers running beside it in the test's process: an
    operator's command runs in a process of its own, and a test comparing
    its stderr whole met a checkpointer's ERROR of another test's tenant."""
    made = logs.log_handler

    def handler_of_the_command(*args: Any, **kwargs: Any) -> logging.Handler:
        handler = made(*args, **kwargs)
        handler.addFilter(lambda record: record.thread not in _SERVER_THREADS)
        return handler

    logs.log_handler = handler_of_the_command
    try:
        yield
    finally:
        logs.log_handler = made


@pytest.fixture(autouse=True)
def loggers_as_they_were() -> Iterator[None]:
    """Every logger's level as it was before the test, after it. A command run
    in the test's process (`run_operator`, or click's CliRunner on the
    server's CLI) configures logging as a process does, and quietens
    OpenTelemetry's loggers of callers' headers (telemetry/logs.py) for good:
    a later test of those warnings met them silenced, and could not fail."""
    manager = logging.Logger.manager
    levels = {
        name: logger.level
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


@contextlib.contextmanager
def deployment_operator(database_url: str) -> Iterator[Callable[..., Result]]:
    """`sealtrail-server ARGS` on `database_url` (`run_operator`); every
    deployment sink made meanwhile is deleted after."""

    def run(*args: str) -> Result:
        return run_operator(database_url, *args)

    yield run
    listed = run("sink", "list", "--format", "json")
    for definition in json.loads(listed.stdout):
        run("sink", "delete", definition["id"], "--confirm", definition["name"])


_OWN_DATABASE_MIGRATIONS = 0x5EA17E57  # an advisory lock key of the tests' own

# Each cluster's migrated template (`migrated_template`), by where it listens
# and as whom (`_cluster_of`): made on the first call of this process.
_TEMPLATES: dict[tuple[tuple[str, str], ...], str] = {}
_TEMPLATES_MADE = threading.Lock()


def _cluster_of(url: str) -> tuple[tuple[str, str], ...]:
    """The cluster of the database at `url`, and as whom: its URL but its name."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    params.pop("dbname", None)
    return tuple(sorted((key, str(value)) for key, value in params.items()))


@contextlib.contextmanager
def _new_database(url: str, prefix: str, *, template: str | None = None) -> Iterator[str]:
    """The URL of a new database beside the one at `url`, a copy of
    `template` if given (else empty); dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    create = SQL("CREATE DATABASE {}").format(Identifier(name))
    if template is not None:
        create = SQL("{} TEMPLATE {}").format(create, Identifier(template))
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(create)
    try:
        yield psycopg.conninfo.make_conninfo(url, dbname=name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(SQL("DROP DATABASE {} WITH (FORCE)").format(Identifier(name)))


@contextlib.contextmanager
def database_with_no_schema(url: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database (no migration applied) beside the one
    at `url`; dropped after."""
    with _new_database(url, prefix) as new_url:
        yield new_url


@contextlib.contextmanager
def database_of_its_own(url: str, prefix: str) -> Iterator[str]:
    """A new, migrated database beside the one at `url` (for a test that needs
    the whole events table to itself: its own statistics); dropped after.
    A copy (CREATE DATABASE ... TEMPLATE) of the cluster's migrated template,
    which no session ever uses: as a database migrated afresh, every row and
    grant of the migrations in it and nothing else, but made in a fraction
    of the time (a migration per test was most of these tests' time). Only
    `schema_migrations.applied_at` tells: the template's migration's times."""
    with _new_database(url, prefix, template=migrated_template(url)) as own_url:
        yield own_url


# The migrations as imported, before any test points MIGRATIONS_DIR elsewhere.
_RELEASE_MIGRATIONS = store_migrations.MIGRATIONS_DIR


def migrated_template(url: str) -> str:
    """The name of a database on the cluster of `url` with every migration
    applied, that no session may connect to (ALLOW_CONNECTIONS false): what
    `database_of_its_own` copies. Made on the first call for the cluster in
    this process (each pytest-xdist worker makes its own), dropped at the
    session's end (`drop_templates`)."""
    cluster = _cluster_of(url)
    with _TEMPLATES_MADE:
        if cluster not in _TEMPLATES:
            _TEMPLATES[cluster] = _made_template(url)
        return _TEMPLATES[cluster]


def _made_template(url: str) -> str:
    name = f"sealtrail_template_{uuid.uuid4().hex[:12]}"
    quoted = Identifier(name)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(SQL("CREATE DATABASE {}").format(quoted))
        try:
            # The migrations create and grant roles, which the whole cluster
            # shares: two test processes migrating at once on one cluster
            # (SEALTRAIL_TEST_DATABASE_URL) would race there. One at a time.
            admin.execute("SELECT pg_advisory_lock(%s)", [_OWN_DATABASE_MIGRATIONS])
            try:
                with _the_releases_migrations():
                    migrate_database(psycopg.conninfo.make_conninfo(url, dbname=name))
            finally:
                admin.execute("SELECT pg_advisory_unlock(%s)", [_OWN_DATABASE_MIGRATIONS])
            # A database is copied only while no session is in it ("source
            # database is being accessed by other users"): none may connect
            # from now on, and the migration's, closed by its client, is ended
            # and waited for, should its backend not have exited yet.
            admin.execute(SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(quoted))
            _end_sessions_in(admin, name)
        except BaseException:
            admin.execute(SQL("DROP DATABASE {} WITH (FORCE)").format(quoted))
            raise
    return name


@contextlib.contextmanager
def _the_releases_migrations() -> Iterator[None]:
    """MIGRATIONS_DIR as this release ships it while the template is
    migrated: a test that points it at one migration more before its first
    database of its own (test_migration_digests, _order, _locks) must not
    leave that migration in the template every later test copies."""
    pointed = store_migrations.MIGRATIONS_DIR
    store_migrations.MIGRATIONS_DIR = _RELEASE_MIGRATIONS
    try:
        yield
    finally:
        store_migrations.MIGRATIONS_DIR = pointed


def _end_sessions_in(admin: psycopg.Connection[Any], name: str) -> None:
    """Every session in database `name` ended, and gone, before this returns.
    Before PostgreSQL 14, which cannot wait for it, CREATE DATABASE waits
    (5 s at most) for a session ending."""
    if admin.info.server_version < 140000:
        return
    admin.execute(
        "SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity WHERE datname = %s",
        [name],
    )
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
    ).fetchone()
    assert row == (0,), f"sessions left in the template {name} after 30 s: {row}"


def drop_templates(url: str) -> None:
    """The migrated template of the cluster of `url` dropped, if this
    process made one (`migrated_template`)."""
    with _TEMPLATES_MADE:
        name = _TEMPLATES.pop(_cluster_of(url), None)
    if name is not None:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(SQL("DROP DATABASE {} WITH (FORCE)").format(Identifier(name)))


async def _end_leftover_tasks() -> None:
    leftover = asyncio.all_tasks() - {asyncio.current_task()}
    for task in leftover:
        task.cancel()
    if leftover:
        ended, _ = await asyncio.wait(leftover, timeout=10)
        for task in ended:  # retrieved: none is reported as never retrieved
            if not task.cancelled():
                task.exception()


class ServerThread:
    """A Sealtrail server in a thread of its own, with its own event loop. It
    migrates through `database_url` and serves through the service's login
    role (service_login_url)."""

    def __init__(
        self,
        database_url: str,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        clock: Callable[[], datetime] | None = None,
        **settings: Any,
    ) -> None:
        defaults: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "signing_key": SIGNING_KEY,
            "redaction_key": REDACTION_SECRET.hex(),
            "secrets_key": SECRETS_KEY.hex(),
            "log_origin": "sealtrail.test/log",
            "signed_checkpoints_dir": signed_checkpoints_dir_of(database_url),
            # Every test server may forward to the tests' endpoints on 127.0.0.1
            # (any of them may hold a sink's lease), and retries come quickly.
            "forward_allow_http": True,
            "forward_allow_networks": "127.0.0.0/8",
            "forward_poll_interval": 0.2,
            "forward_backoff_base": 0.05,
            "forward_timeout": 2.0,
            # No pass of the purge job of its own (a minute after start): one
            # at a random moment would take the job's lock from a test's pass.
            # Tests run passes when they mean to (`purger.run_once()`).
            "retention_interval": 0,
            # Nor of the credential backfill (ADR 0143): tests run it when they
            # mean to (`credential_backfill.run_once()`), with rows of their own.
            "credential_backfill": False,
            # A retention change that keeps less applies at once, as the tests
            # written before it waited expect (ADR 0163): the tests of the
            # delay set one (test_retention_delay.py).
            "retention_shortening_delay": 0,
            # Every test calls from 127.0.0.1, most on the session's server: one
            # test's unknown tokens (an erased tenant's) would spend another's
            # budget. Tests of the budget set one (test_token_cache.py).
            "unknown_tokens_per_minute": 0,
        }
        if clock is not None:
            # A test's clock (tests/clock.py `Clock`) stands still while the
            # database's moves on: past SEALTRAIL_MAX_CLOCK_SKEW the server
            # would refuse every call. Tests of that bound set it.
            defaults["max_clock_skew"] = 0
        service_url = service_login_url(database_url)
        self.settings = Settings(
            database_url=service_url,
            owner_database_url=database_url,
            **{**defaults, **settings},
        )
        self.loop = asyncio.new_event_loop()
        self.service = Service(
            self.settings,
            database_url=service_url,
            owner_database_url=database_url,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            clock=clock,
        )
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        assert self._thread.ident is not None
        _SERVER_THREADS.add(self._thread.ident)
        self.port = self.run(self.service.start())
        self.target = f"127.0.0.1:{self.port}"
        self.database = self.run(Database.open(service_url, min_size=1, max_size=2))

    @property
    def thread_id(self) -> int | None:
        """The thread its loop runs in (`threading.get_ident()` there), which
        a log record names (`LogRecord.thread`)."""
        return self._thread.ident

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def call(self, function: Callable[[], T], timeout: float = 60) -> T:
        """`function()` run on the server's loop, whose state it reads: from
        the test's thread, a sum over a dict the loop changes meanwhile
        could end in "dictionary changed size during iteration"."""

        async def called() -> T:
            return function()

        return self.run(called(), timeout)

    def _tasks_waiting(self) -> str:
        """Where each task of the server's loop waits, down its chain of awaits."""
        return "\n".join(
            f"{task.get_name()}:\n{where_it_waits(task)}" for task in asyncio.all_tasks(self.loop)
        )

    def token(self, tenant_id: str, role: Role | str = Role.ADMIN) -> str:
        issued = self.run(create_token(self.database, tenant_id=tenant_id, role=Role(role)))
        return issued.secret

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.run(self.database.close())
        try:
            self.run(self.service.stop(grace=1))
        except TimeoutError:
            # A stop that never ends has been seen under the full suite's load
            # only: say where each of the server's tasks waits.
            raise AssertionError(f"the server did not stop:\n{self._tasks_waiting()}") from None
        # A task the stop left (none seen in a test run alone) would be
        # destroyed pending at some later test's garbage collection, and fail it.
        self.run(_end_leftover_tasks(), timeout=15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        _SERVER_THREADS.discard(self._thread.ident or 0)
        self.loop.close()


@pytest.fixture(scope="session")
def server(migrated_database_url: str) -> Iterator[ServerThread]:
    with ServerThread(migrated_database_url) as running:
        yield running


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """Where `traced_server` exports its spans, for a module's tests."""
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def traced_server(
    migrated_database_url: str, exporter: InMemorySpanExporter
) -> Iterator[ServerThread]:
    """A server exporting its spans into `exporter`, for a module's tests."""
    # Here, not at the top: tests.traced_server imports this module's ServerThread.
    from .traced_server import traced_server_of

    with traced_server_of(migrated_database_url, exporter) as running:
        yield running


@pytest.fixture(scope="module")
def console_server(migrated_database_url: str) -> Iterator[ServerThread]:
    """A server with its console on, for a module's tests."""
    with ServerThread(migrated_database_url, console_listen="127.0.0.1:0") as running:
        yield running


# Its passes report each log of the database that does not check out, and
# tests elsewhere break logs on purpose (restores, tampering): any test's
# server, started after one of those ran in its process, reports them.
CHECKPOINTER_LOGGER = "sealtrail_server.integrity.checkpointer"


def logged(
    caplog: pytest.LogCaptureFixture,
    *,
    by: str = "",
    on: ServerThread | None = None,
    during: Literal["setup", "call", "teardown"] | None = None,
) -> list[logging.LogRecord]:
    """The records logged in this process during the test (`during` one of
    its phases, else the phase running) by the logger `by` or one below it
    (`by.x`; every logger unless told), and on `on`'s loop alone if given.
    Every server of the test's process logs into caplog, not the test's
    alone: the session's (its checkpointer's reports on logs other tests
    broke, its forwarder's retries), a module's, an earlier test's leftover
    task. A test reads its own component's, or its own server's."""
    records = caplog.records if during is None else caplog.get_records(during)
    return [
        r
        for r in records
        if (not by or r.name == by or r.name.startswith(f"{by}."))
        and (on is None or r.thread == on.thread_id)
    ]


def errors_logged(
    caplog: pytest.LogCaptureFixture,
    *,
    by: str = "",
    during: Literal["setup", "call", "teardown"] | None = None,
) -> list[str]:
    """The errors logged in this process during the test (`during` one of its
    phases, "setup", "call" or "teardown"; else the phase running) by loggers
    whose names start with `by`, the checkpointer's reports on the logs aside."""
    records = caplog.records if during is None else caplog.get_records(during)
    return [
        r.getMessage()
        for r in records
        if r.levelno >= logging.ERROR and r.name.startswith(by) and r.name != CHECKPOINTER_LOGGER
    ]


@pytest.fixture
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The servers in this process log no error of their own while the test
    runs (a module's tests take it with `pytestmark =
    pytest.mark.usefixtures(...)`). Checked after it, in the teardown, where
    `caplog.records` holds the teardown's records alone: the call's are asked
    for by name."""
    yield
    assert errors_logged(caplog, by="sealtrail", during="call") == []


@pytest.fixture
def silent() -> Iterator[str]:
    """host:port of a listener that takes connections and never answers: a
    call to it stays in flight."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def tenant() -> str:
    """A tenant no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector off: what a call holds must come back as
    its call ends (its caller stops, or is cancelled), not whenever something
    collects the call or its generator."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


@contextlib.contextmanager
def clients_of(server: ServerThread) -> Iterator[Callable[..., AuditClient]]:
    """Makes sync clients of `server` for (tenant, role, client options), an
    admin's unless told; closes each on leaving."""
    made: list[AuditClient] = []

    def make(tenant_id: str, role: Role | str = Role.ADMIN, **options: Any) -> AuditClient:
        client = AuditClient(server.target, token=server.token(tenant_id, role), **options)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.close()


@pytest.fixture
def client_for(server: ServerThread) -> Iterator[Callable[..., AuditClient]]:
    """Makes sync clients for (tenant, role); closes them after the test."""
    with clients_of(server) as make:
        yield make


@pytest.fixture
def client(client_for: Callable[..., AuditClient], tenant: str) -> AuditClient:
    """An admin client of this test's own tenant."""
    return client_for(tenant)


def token_id_of(sql: psycopg.Connection[Any], secret: str) -> str:
    """The id of the token whose secret is `secret`, as its events name it."""
    row = sql.execute(
        "SELECT token_id::text FROM api_tokens WHERE secret_sha256 = %s",
        [hashlib.sha256(secret.encode()).digest()],
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def sql(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A direct (superuser) connection to the test database."""
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        yield conn
