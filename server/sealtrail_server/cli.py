"""`sealtrail-server`: run the service, manage its tokens, and do what the
operator keeps from tenant admins (ADR 0058)."""

from __future__ import annotations

import asyncio
import atexit
import base64
import gc
import getpass
import importlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, NoReturn

import click

from sealtrail._durations import not_a_span, span_parts
from sealtrail._erased_by import OPERATOR_PREFIX
from sealtrail._terminal import terminal_safe

from . import __version__
from .alerts import ACTOR_ID as ALERTS_ACTOR
from .domain.access import Role, expiry_problem, token_name_problem, valid_tenant_id
from .domain.errors import SealtrailError, Unavailable
from .domain.event import MAX_ID, ChangeDraft, parse_uuid
from .embedded import embedded_database_exists, start_embedded_postgres
from .file_modes import check_kept_directory
from .key_files import DEV_TOKEN_FILE
from .stopping import cancelled_within, where_it_waits
from .telemetry.logs import LogFormat, configure_logging

# What the commands work with (gRPC, psycopg, protobuf, OpenTelemetry's SDK)
# each command imports as it runs: `--help` waited seconds for them all.
if TYPE_CHECKING:
    import psycopg
    from opentelemetry.sdk.trace import TracerProvider

    from sealtrail.v1 import event_pb2

    from .config import Settings
    from .integrity.checkpointer import RestoredLog
    from .store.database import Database
    from .store.tokens import IssuedToken, TokenInfo
    from .telemetry.metrics import Metrics

log = logging.getLogger(__name__)

DEV_TENANT = "dev"
# What an exit waits, at most, for the last metrics and spans to be exported.
TELEMETRY_SHUTDOWN_SECONDS = 3.0
# How long tasks left after a finished stop are cancelled, again and again,
# before the process exits without them.
LEFT_TASKS_SECONDS = 10.0
# Who runs an operator command, as its records in the tenants' logs name them.
OPERATOR_SETTING: Final = "SEALTRAIL_OPERATOR"
_OPERATOR_PREFIX: Final = OPERATOR_PREFIX  # as verify-erasure and tenant erasures read it
_MAX_OPERATOR: Final = MAX_ID - len(_OPERATOR_PREFIX)
# pg_advisory_lock key of the development token's issue ("sealtdev" in ASCII).
_DEV_TOKEN_LOCK = 0x7365616C74646576


def _setup_refused(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """What a database's setup refuses (its schema, encoding, roles, migrations):
    said in one line by `serve` and every operator command, not a traceback."""
    from .store.database import RolesMissing
    from .store.migrations import (
        MigrationBlocked,
        MigrationDiffers,
        MigrationFiles,
        MigrationsOutOfOrder,
        NewerSchema,
        NotUtf8,
        UnsafeSchema,
    )

    return (
        UnsafeSchema,
        NotUtf8,
        RolesMissing,
        MigrationBlocked,
        MigrationDiffers,
        MigrationFiles,
        MigrationsOutOfOrder,
        NewerSchema,
        *more,
    )


class _CommandsOfAModule(click.Group):
    """A group whose commands `module` adds to it as it is imported, which is
    imported when a command of the group is asked for (run, listed, or its
    help shown), not with this one: the `sink` commands share the client's
    filter and destination options, which `sealtrail-server --help` and every
    other command would import for nothing. The group's own help is here,
    for the main command's list."""

    def __init__(self, *args: Any, module: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.module = module

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        importlib.import_module(self.module)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        importlib.import_module(self.module)
        return super().list_commands(ctx)


@click.group(cls=_CommandsOfAModule, module="sealtrail_server.cli_sinks")
def sink() -> None:
    """Deployment-wide sinks: one destination (a central SOC's SIEM) that every
    tenant's events go to, tenants created later included, which tenants see
    but cannot change. Each tenant's instance is recorded in its own log."""


# Annotated: cli_sinks.py and cli_tenants.py import them back, and mypy cannot
# infer across the cycle.
_Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
_data_dir_option: _Decorator = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Embedded PostgreSQL data directory [env SEALTRAIL_DATA_DIR].",
)
_database_url_option: _Decorator = click.option(
    "--database-url", help="PostgreSQL URL; no embedded server [env SEALTRAIL_DATABASE_URL]."
)
_output_format_option: _Decorator = click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: aligned columns; json: one array of objects.",
)


class _Urls(NamedTuple):
    service: str  # what requests run through
    owner: str  # what migrates: the tables' owner, or a superuser
    embedded: bool
    migration_lock_attempts: int


def _database_urls(settings: Settings, *, create: bool = False) -> _Urls:
    """The URLs to use, starting the embedded server when none is configured;
    with `create` (`serve` alone), making it where the data dir has none."""
    from .store.urls import with_connection_limits

    if settings.owner_database_url and not settings.database_url:
        # Else the owner's database was migrated, then an embedded one served.
        raise click.ClickException(
            "SEALTRAIL_OWNER_DATABASE_URL needs SEALTRAIL_DATABASE_URL (or --database-url):"
            " the embedded PostgreSQL, used without one, has an owner of its own"
        )
    if not settings.database_url and not create and not embedded_database_exists(settings.data_dir):
        # An operator's shell whose data dir is not the server's made a new,
        # empty database, and a token the server did not know (helper-196).
        raise click.ClickException(
            f"no Sealtrail database in {settings.data_dir / 'postgres'}: run this with the"
            " server's SEALTRAIL_DATA_DIR (or --data-dir), or set SEALTRAIL_DATABASE_URL (or"
            " --database-url); only `sealtrail-server serve` makes a new one"
        )
    # Where the embedded database is, said by `serve` (`create`); an operator
    # command's stderr is its refusal's one line, or nothing: with -v alone.
    said_at = logging.INFO if create else logging.DEBUG
    given = settings.database_url or start_embedded_postgres(settings.data_dir, said_at=said_at)
    url = with_connection_limits(given)
    return _Urls(
        url,
        with_connection_limits(settings.owner_database_url or url),
        not settings.database_url,
        settings.migration_lock_attempts,
    )


# What a tenant id is, as the operator is told (domain.access.TENANT_ID_PATTERN).
TENANT_ID_RULE: Final = "1-63 characters of a-z 0-9 . _ - starting with a letter or digit"


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP in an operator's command, raised as a Ctrl-C is.
    `status`: 128 and the signal's number, as a shell reports it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.status = 128 + signum


class _Commands(click.Group):
    """The main command, which ends a command that Ctrl-C, SIGTERM or SIGHUP
    stopped in a line, `stopped by SIGINT`, with 130 (or 128 and the signal's
    number), as a shell reports it and as the `sealtrail` commands do: not
    click's "Aborted!" and 1, the status of any failure. `serve` too, stopped
    before it serves (once it serves, it stops gracefully on them: app.py
    `run_until_signalled`). And a command other than `serve` refused by a
    SystemExit of a message (a setting, the signing key or a file's mode
    that `key show`, `token create`, ... read as a start would) says it as
    every other refusal does, `Error: ...` and 1; `serve`'s start says it as
    a server's start does, the message alone."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SystemExit as refused:
            if isinstance(refused.code, str) and ctx.invoked_subcommand != "serve":
                raise click.ClickException(refused.code) from None
            raise
        except KeyboardInterrupt as interrupt:
            if not isinstance(interrupt, _Stopped) and sys.stderr.isatty():
                click.echo(err=True)  # past the terminal's ^C
            name = str(interrupt) if isinstance(interrupt, _Stopped) else "SIGINT"
            click.echo(f"stopped by {name}", err=True)
            ctx.exit(interrupt.status if isinstance(interrupt, _Stopped) else 130)


@click.group(cls=_Commands)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Sealtrail: an append-only, tamper-evident audit log service."""
    if ctx.invoked_subcommand != "serve":  # which records nothing as the operator
        _refuse_an_unfit_operator_name()
    _exit_on_ending_signals(ctx)
    # The format alone: the settings are read, and checked, by each command with its flags.
    json_lines = os.environ.get("SEALTRAIL_LOG_FORMAT") == "json"
    log_format: LogFormat = "json" if json_lines else "text"
    configure_logging(
        level=logging.DEBUG if verbose else logging.INFO, log_format=log_format, stream=sys.stderr
    )
    if not verbose:  # pgserver narrates every start step at INFO
        logging.getLogger("pgserver").setLevel(logging.WARNING)


@main.command()
@click.option("--listen", help="HOST:PORT to serve gRPC on [env SEALTRAIL_LISTEN].")
@click.option(
    "--console",
    "console_listen",
    help="HOST:PORT of the web console [env SEALTRAIL_CONSOLE_LISTEN].",
)
@_data_dir_option
@_database_url_option
@click.option(
    "--bench-no-tree-nodes",
    is_flag=True,
    hidden=True,
    help="make bench only: store no Merkle tree nodes; what is appended can never be verified.",
)
def serve(
    listen: str | None,
    console_listen: str | None,
    data_dir: Path | None,
    database_url: str | None,
    bench_no_tree_nodes: bool,
) -> None:
    """Run the gRPC service (and the web console, if asked) until SIGTERM, Ctrl-C or SIGHUP."""
    import psycopg

    from .app import refuse_ports_in_use
    from .config import Settings
    from .telemetry.metrics import MetricsConfigError, metrics_from_env
    from .telemetry.tracing import TracingConfigError, tracer_provider_from_env

    settings = Settings.load(
        listen=listen,
        console_listen=console_listen,
        data_dir=data_dir,
        database_url=database_url,
        store_tree_nodes=False if bench_no_tree_nodes else None,
    )
    # Before an embedded PostgreSQL is made or started for a server that cannot serve.
    refuse_ports_in_use(settings)
    try:
        tracer_provider = tracer_provider_from_env(os.environ, version=__version__)
    except TracingConfigError as error:
        raise click.ClickException(str(error)) from None
    try:
        metrics = metrics_from_env(os.environ, version=__version__)
    except MetricsConfigError as error:
        if tracer_provider is not None:
            tracer_provider.shutdown()
        raise click.ClickException(str(error)) from None

    def shut_down_telemetry() -> None:
        _shut_down_telemetry(metrics, tracer_provider)

    atexit.register(shut_down_telemetry)  # an abandoned stop's exit runs it too
    try:
        urls = _database_urls(settings, create=True)
        asyncio.run(_serve(settings, urls, tracer_provider, metrics))
    except _setup_refused() as error:
        raise click.ClickException(str(error)) from None
    except psycopg.Error as error:
        owner_url = bool(settings.owner_database_url)
        raise click.ClickException(_database_problem(error, owner_url=owner_url)) from None
    except Unavailable as error:
        # A refusal of the service's privileges is answered UNAVAILABLE in a
        # call (store/database.py `_refused`); at the start, what it was says
        # what to do (lost grants after a restore), where it escaped whole.
        cause = error.__cause__
        if isinstance(cause, psycopg.Error):
            owner_url = bool(settings.owner_database_url)
            said = _database_problem(cause, owner_url=owner_url, as_service_role=True)
            raise click.ClickException(said) from None
        raise click.ClickException(str(error)) from None
    finally:
        atexit.unregister(shut_down_telemetry)
        shut_down_telemetry()


def _exit_on_ending_signals(ctx: click.Context) -> None:
    """A command ended by SIGTERM (`timeout`, a container's stop) or SIGHUP
    (its terminal or SSH session gone) ends as a Ctrl-C does (`_Stopped`):
    status 128 + the signal, its exit handlers run. It died without them,
    and an embedded PostgreSQL it had started, or joined, ran on after every
    other process on the data dir had exited: an operator's command, and a
    server before it serves (helper-140 for SIGTERM; once it serves, it takes
    them itself: app.py `run_until_signalled`). A signal ignored when the
    command began (`nohup`) stays ignored; the handlers taken are given back
    when the command ends (run in a process that goes on, as a test's)."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may take a signal (a command run in a thread)
    for name in ("SIGTERM", "SIGHUP"):  # no SIGHUP on Windows
        signum = getattr(signal, name, None)
        if signum is None or signal.getsignal(signum) is not signal.SIG_DFL:
            continue
        signal.signal(signum, _stop)
        ctx.call_on_close(lambda signum=signum: _give_back(signum))


def _give_back(signum: int) -> None:
    """SIG_DFL again for `signum`, unless a served stop took it since: it
    keeps it through the exit handlers (`_exiting_already`)."""
    if signal.getsignal(signum) is _stop:
        signal.signal(signum, signal.SIG_DFL)


def _stop(signum: int, frame: object) -> NoReturn:
    raise _Stopped(signum)


def _shut_down_telemetry(metrics: Metrics | None, tracer_provider: TracerProvider | None) -> None:
    """Exports what the pushing readers and the span processors hold, for
    TELEMETRY_SHUTDOWN_SECONDS at most: each waited its exporter's whole
    timeout (10 s) for a collector that does not answer, the metrics' then
    the spans', past the stop's grace (helper-140). What is left is lost."""
    deadline = time.monotonic() + TELEMETRY_SHUTDOWN_SECONDS
    if metrics is not None:
        metrics.shutdown(timeout_millis=TELEMETRY_SHUTDOWN_SECONDS * 1000 / 2)
    if tracer_provider is not None:
        # Its shutdown takes no time limit: waited for in a thread, then left.
        flushing = threading.Thread(
            target=tracer_provider.shutdown, name="sealtrail-span-flush", daemon=True
        )
        flushing.start()
        flushing.join(max(0.0, deadline - time.monotonic()))


def _database_problem(
    error: psycopg.Error, *, owner_url: bool, as_service_role: bool = False
) -> str:
    """What a database error that stopped the server (or a command, before
    it began) says to whoever started it (a URL is never repeated: it may
    hold a password). `owner_url`: SEALTRAIL_OWNER_DATABASE_URL was set.
    `as_service_role`: a statement run as sealtrail_service or _system
    (store/database.py `_refused`), not one of the migrations."""
    import psycopg

    log.debug("the database error that stopped the start", exc_info=error)
    refused = isinstance(error, psycopg.errors.InsufficientPrivilege)
    if refused and not owner_url and not as_service_role:
        return (
            f"the database refused a statement of the migrations ({error.diag.message_primary}):"
            " its user is not the tables' owner; set SEALTRAIL_OWNER_DATABASE_URL to the"
            " owner's, or a superuser's (docs/database.md)"
        )
    if refused:
        # With the owner's URL set, told to set it (helper-203); and so was
        # one URL that owns the tables, the embedded superuser's (helper-415):
        # after a restore into a cluster without the roles, their grants are gone.
        # A migration's statement refused the owner's URL may mean it is not the owner's.
        not_owner = "; or SEALTRAIL_OWNER_DATABASE_URL's user is not the tables' owner"
        return (
            f"the database refused a statement ({error.diag.message_primary}): the service's"
            " roles lack their grants on the tables, as after a restore into a cluster without"
            " the roles (creating them after does not bring the grants back): restore again"
            " once they exist (docs/operations.md, Restoring)"
        ) + ("" if as_service_role else not_owner)
    if isinstance(error, psycopg.OperationalError):
        return f"cannot use the database: {' '.join(str(error).split()) or type(error).__name__}"
    if isinstance(error, psycopg.ProgrammingError) and error.sqlstate is None:
        return "SEALTRAIL_DATABASE_URL (or _OWNER_DATABASE_URL) is not a valid PostgreSQL URL"
    return f"the database failed the start: {error.diag.message_primary or type(error).__name__}"


async def _serve(
    settings: Settings,
    urls: _Urls,
    tracer_provider: TracerProvider | None,
    metrics: Metrics | None,
) -> None:
    from .app import Service

    service = Service(
        settings,
        database_url=urls.service,
        owner_database_url=urls.owner,
        tracer_provider=tracer_provider,
        meter_provider=metrics.provider if metrics is not None else None,
    )
    port = await service.start()
    try:
        if urls.embedded:
            await _issue_dev_token(settings, urls.service)
        _freeze_startup_objects()
        # A Ctrl-C meanwhile (asyncio.run's own handler cancels this task) is
        # taken here, not at the first wait of the serving, which it ended
        # after `serving gRPC on ...` without a stop.
        await asyncio.sleep(0)
    except BaseException:
        # A signal before it takes them as a stop (`run_until_signalled`)
        # stops what the start began, as one during the start does: the gRPC
        # server taking calls was left to the garbage collector once the
        # event loop had closed, the pool and the appender's writes with it.
        await service.stop(grace=0)
        raise

    def announce() -> None:
        host = settings.listen.rsplit(":", 1)[0]
        click.echo(f"sealtrail: serving gRPC on {host}:{port}")
        if service.console is not None:
            console_host = (settings.console_listen or "").rsplit(":", 1)[0] or "127.0.0.1"
            click.echo(f"sealtrail: console on http://{console_host}:{service.console_port}/")
        if metrics is not None and metrics.address is not None:
            metrics_host, metrics_port = metrics.address
            if ":" in metrics_host:  # an IPv6 address, as a URL holds one
                metrics_host = f"[{metrics_host}]"
            click.echo(f"sealtrail: metrics on http://{metrics_host}:{metrics_port}/metrics")

    await service.run_until_signalled(ready=announce, once_stopped=_exiting_already)
    await _end_what_is_left()


def _exiting_already(signum: int, frame: object) -> None:
    """A signal once the stop is done, taken as nothing more: the exit goes
    on (the tasks left ended, telemetry exported, the embedded PostgreSQL
    stopped, each bounded). A second SIGTERM from an orchestrator as the
    exit handlers stopped the embedded PostgreSQL killed the server outright
    (a Ctrl-C broke their stop with a traceback), PostgreSQL running on after
    its last process; just before, it exited 143 or 130, as if it had made
    no stop (helper-332)."""
    name = signal.Signals(signum).name
    log.info("shutting down: stopped already, exiting (%s changes nothing)", name)


async def _end_what_is_left(within: float = LEFT_TASKS_SECONDS) -> None:
    """`asyncio.run` cancels the tasks left when `_serve` returns once, then
    waits for them without a limit, past the signals that hurry a stop: a
    task that swallows its cancellation (a worker leased work left behind)
    held the process for ever (helper-191). Cancelled here again for a
    while, one still running makes the process exit as `abandon_stop` does,
    having said where it waits."""
    from .app import abandon_stop

    left = asyncio.all_tasks() - {asyncio.current_task()}
    stuck = await cancelled_within(left, within=within)
    for task in stuck:
        log.error("left running after the stop: %s\n%s", task.get_name(), where_it_waits(task))
    if stuck:
        abandon_stop()


def _freeze_startup_objects() -> None:
    """Keep what startup built (modules, protobuf descriptors, the pool, the
    servicers: it lives as long as the process) out of the cyclic garbage
    collector's full collections, which otherwise walk all of it every few
    hundred calls: 74-87 ms each, stalling every call in flight (ADR 0029)."""
    gc.collect()  # startup's own garbage is freed, not frozen with the rest
    gc.freeze()


async def _issue_dev_token(settings: Settings, url: str) -> None:
    """On the embedded database's first start, make an admin token to begin
    with; none once its tenant was erased (its id is retired), nor then ever
    again: the server starts all the same. One server at a time: two starting
    together both counted no token, and both made one (helper-157)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as lock:
        await lock.execute("SELECT pg_advisory_lock(%s)", [_DEV_TOKEN_LOCK])
        await _issue_dev_token_alone(settings, url)  # the session's end lets go of the lock


async def _issue_dev_token_alone(settings: Settings, url: str) -> None:
    from .store.database import Database
    from .store.tokens import count_tokens

    token_file = settings.data_dir / DEV_TOKEN_FILE
    db = await Database.open(url, min_size=1, max_size=1)
    try:
        if await count_tokens(db):
            if token_file.exists():  # the first start's output long gone
                click.echo(
                    f"sealtrail: the admin token its first start made for tenant {DEV_TENANT!r}"
                    f" is in {token_file}"
                )
            return
        issued = await _recorded_token(db, DEV_TENANT, Role.ADMIN, "development")
    except SealtrailError as error:
        if error.reason != "TENANT_ERASED":
            raise
        token_file.unlink(missing_ok=True)  # it names a token the erasure removed
        click.echo(
            f"sealtrail: no development token: {error}. Create a token of another tenant:"
            " sealtrail-server token create --tenant NAME --role admin",
            err=True,
        )
        return
    finally:
        await db.close()
    _write_private(token_file, issued.secret + "\n")
    click.echo(
        f"sealtrail: development admin token for tenant {DEV_TENANT!r} (also in {token_file}):\n"
        f"  {issued.secret}"
    )


def _write_private(path: Path, text: str) -> None:
    """`text` in `path`, readable by its owner alone, never for a moment by
    others; written beside it, then put in its place whole: a reader (or
    another writer) never finds it half-written, nor fails on it."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


@main.group()
def token() -> None:
    """Manage API tokens."""


def _expiry_after(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """--expires-in as the time it names, checked as the API checks a new
    token's expiry (the future, at most two years ahead)."""
    if value is None:
        return None
    parts = span_parts(value)
    if parts is None:
        raise click.BadParameter(not_a_span(value, "a duration like 90d, 12h, 2w or 1y"))
    count, unit = parts
    now = datetime.now(UTC)
    try:
        expires_at = now + count * unit
    except OverflowError:
        expires_at = datetime.max.replace(tzinfo=UTC)
    if problem := expiry_problem(expires_at, now=now):
        raise click.BadParameter(f"the expiry {problem}")
    return expires_at


@token.command("create")
@click.option("--tenant", required=True, help="Tenant (organization) the token acts for.")
@click.option(
    "--role", required=True, type=click.Choice([r.value for r in Role]), help="What it may do."
)
@click.option("--name", default="", help="A label to recognise the token by.")
@click.option(
    "--expires-in",
    "expires_at",
    callback=_expiry_after,
    metavar="DURATION",
    help="Stop working this long from now (90d, 12h, 2w; at most 2y). Default: never.",
)
@_data_dir_option
@_database_url_option
def token_create(
    tenant: str,
    role: str,
    name: str,
    expires_at: datetime | None,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Create a token; prints it alone on the last line. It is shown only once."""
    from .config import Settings
    from .redaction_setup import check_redaction_key_read

    if problem := token_name_problem(name):
        raise click.BadParameter(problem, param_hint="--name")
    if not valid_tenant_id(tenant):
        raise click.BadParameter(TENANT_ID_RULE, param_hint="--tenant")
    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    if name:  # redacted as the tenant's events are: perhaps with the key
        check_redaction_key_read(settings)
    urls = _database_urls(settings)
    issued = asyncio.run(_create_token(urls, settings, tenant, Role(role), name, expires_at))
    until = f", expiring at {expires_at:%Y-%m-%d %H:%M:%S} UTC" if expires_at else ""
    click.echo(
        f"token {issued.token_id} for tenant {tenant!r} with role {role!r}{until}:", err=True
    )
    click.echo(issued.secret)


async def _create_token(
    urls: _Urls,
    settings: Settings,
    tenant: str,
    role: Role,
    name: str,
    expires_at: datetime | None = None,
) -> IssuedToken:
    async with _database(urls, set_up=True) as db:  # a fresh setup may begin here
        recorded_name = await _redacted_name(db, settings, tenant, name)
        return await _recorded_token(
            db, tenant, role, name, recorded_name=recorded_name, expires_at=expires_at
        )


async def _redacted_name(db: Database, settings: Settings, tenant: str, name: str) -> str:
    """`name` (a token's, or a hold's reason) as the API records it
    (`FilterDetails.text`): redacted as the tenant's events are, in its mode.
    A name was committed to the log as typed, secret and all (helper-156).
    Where no redaction key is at hand, in replace mode's form: this command
    makes none, which no server would use."""
    from .domain.redaction import tenant_key
    from .redaction_setup import existing_redaction_secret, load_redactor
    from .store.tenant_settings import read_settings

    redactor = load_redactor(settings)
    if redactor is None or not name:
        return name
    async with db.connection(tenant) as conn:
        mode = (await read_settings(conn, tenant)).redaction_mode
    # The key's file checked before the command connected (`check_redaction_key_read`).
    secret = existing_redaction_secret(settings, checked=True) if mode == "hmac" else None
    if secret is not None:
        await refuse_another_redaction_key_here(db, settings, secret)
    key = tenant_key(secret, tenant) if secret is not None else None
    return str(redactor.redact({"details": {"text": name}}, hmac_key=key).body["details"]["text"])


async def refuse_another_redaction_key_here(
    db: Database, settings: Settings, secret: bytes
) -> None:
    """Stops a command about to redact with `secret`, the configured key or
    the data dir's, if the database keeps the fingerprint of another, in
    `serve`'s words (a configured key too: a command makes no rotation). It
    recorded HMACs under any key, unlike the servers', for the service's
    roles could not read the fingerprint (helper-215). None kept yet: no word,
    as `serve` says none."""
    from .redaction_setup import (
        another_redaction_key,
        data_dir_redaction_key,
        recorded_redaction_fingerprint,
        redaction_key_fingerprint,
    )

    async with db.system_connection() as conn:
        known = await recorded_redaction_fingerprint(conn)
    if known is not None and known != redaction_key_fingerprint(secret):
        raise click.ClickException(another_redaction_key(data_dir_redaction_key(settings)))


async def _recorded_token(
    db: Database,
    tenant: str,
    role: Role,
    name: str,
    *,
    recorded_name: str | None = None,
    expires_at: datetime | None = None,
) -> IssuedToken:
    """A new token, its creation recorded in the transaction that creates it
    (as the API does, ADR 0075): both commit, or neither; no token lives
    without its record, nor a record without its token.
    `recorded_name`: the name as the record shows it, if not as given."""
    from .api.audited import weakening_severity
    from .auth.tokens import rfc3339
    from .store.tokens import create_token

    token_id = str(uuid.uuid4())
    details: dict[str, Any] = {"role": role.value}
    if expires_at is not None:
        details["expire_time"] = rfc3339(expires_at)
    details["name"] = name if recorded_name is None else recorded_name

    async def record() -> None:
        await _record_operator_action(
            db,
            tenant,
            action="api_token.created",
            token_id=token_id,
            description=f"Created an API token with role {role.value}",
            details=details,
            severity=weakening_severity(role is Role.ADMIN),  # a new admin credential (ADR 0066)
        )

    return await create_token(
        db,
        tenant_id=tenant,
        role=role,
        name=name,
        token_id=token_id,
        expires_at=expires_at,
        record=record,
    )


def _operator() -> str:
    """Who ran the command, as its records in tenants' logs name them
    (`sealtrail-server:` and SEALTRAIL_OPERATOR, checked by `main`; else the
    user at this machine).
    In a container, `user@host` is `root@` a pod's id: nobody."""
    if named := os.environ.get(OPERATOR_SETTING, "").strip():
        return _OPERATOR_PREFIX + named
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{_OPERATOR_PREFIX}{user}@{socket.gethostname()}"


def _refuse_an_unfit_operator_name() -> None:
    named = os.environ.get(OPERATOR_SETTING, "").strip()
    # isprintable: no control or format character, no line break (U+2028), and
    # none of the surrogates that bytes other than UTF-8 decode to (helper-210).
    if len(named) > _MAX_OPERATOR or not named.isprintable():
        raise click.UsageError(
            f"{OPERATOR_SETTING}: the name of who runs the command, at most {_MAX_OPERATOR}"
            " printable characters of UTF-8"
        )
    if _OPERATOR_PREFIX + named == ALERTS_ACTOR:  # the records would pass for its alerts'
        raise click.UsageError(f"{OPERATOR_SETTING}: {named!r} is the alert evaluator's name")


async def _record_operator_action(
    db: Database,
    tenant: str,
    *,
    action: str,
    description: str,
    token_id: str | None = None,
    details: dict[str, Any] | None = None,
    category: event_pb2.Category.ValueType | None = None,  # None: CATEGORY_SECURITY
    severity: event_pb2.Severity.ValueType | None = None,  # None: SEVERITY_INFO
    resource_type: str = "api_token",
    changes: list[ChangeDraft] | None = None,
) -> None:
    """Token management (or a hold's release, a retention ceiling's change)
    from this command is recorded in
    the tenant's log as the API's is, attributed to the operator (a `system`
    actor) instead of a token, at the API's severity (a change that weakens
    the trail is a warning whoever makes it, ADR 0066)."""
    from sealtrail.v1 import event_pb2

    from .api.audited import record_event
    from .api.convert import server_view
    from .store.appender import Appender

    appender = Appender(db, server_view=server_view)
    appender.start()
    try:
        await record_event(
            appender,
            tenant,
            actor_type=event_pb2.ACTOR_TYPE_SYSTEM,
            actor_id=_operator(),
            now=datetime.now(UTC),
            action=action,
            description=description,
            category=event_pb2.CATEGORY_SECURITY if category is None else category,
            severity=event_pb2.SEVERITY_INFO if severity is None else severity,
            resource_type=resource_type,
            resource_id=token_id or "",
            details=details,
            changes=changes,
        )
    except SealtrailError as error:
        if error.reason == "TENANT_ERASED":
            raise  # what the caller tells apart (no development token then)
        raise click.ClickException(f"could not record {action}: {error}") from None
    finally:
        await appender.stop()


# What a command that sets nothing up says of a database with no schema.
NO_SCHEMA: Final = (
    "the database has no Sealtrail schema (no migration was ever applied to it): it is not"
    " the servers' database (check SEALTRAIL_DATABASE_URL, or --database-url), or nothing"
    " was set up on it yet (`sealtrail-server serve` or `token create` sets up a new one)"
)


@asynccontextmanager
async def _database(
    urls: _Urls, *, connections: int = 1, set_up: bool = False
) -> AsyncIterator[Database]:
    """A small pool for one command, on a database migrated by this release
    (or, with `set_up`, by this command, as the owner, when it had no schema
    yet: a fresh setup). One already migrated is only read: the service's
    login will do. Without `set_up`, a database with no schema is refused:
    `tenant list` on a mistyped URL made the whole schema there, then said
    it held no tenant."""
    import psycopg

    from .store.database import Database
    from .store.migrations import OlderSchema, has_a_schema, migrate_database, schema_is_current

    try:
        if not await schema_is_current(urls.service):
            if not set_up and not await has_a_schema(urls.service):
                raise click.ClickException(NO_SCHEMA)
            await migrate_database(
                urls.owner, lock_attempts=urls.migration_lock_attempts, only_fresh=True
            )
        db = await Database.open(urls.service, min_size=1, max_size=connections)
    except _setup_refused(OlderSchema) as error:  # said, not a traceback
        raise click.ClickException(str(error)) from None
    except psycopg.Error as error:  # as `serve` says it: libpq's text may quote the URL
        owner_url = urls.owner != urls.service
        raise click.ClickException(_database_problem(error, owner_url=owner_url)) from None
    try:
        yield db
    except SealtrailError as error:  # a refusal (an erased tenant's id): no traceback
        raise click.ClickException(str(error)) from None
    finally:
        await db.close()


@token.command("list")
@click.option("--tenant", required=True)
@_data_dir_option
@_database_url_option
def token_list(tenant: str, data_dir: Path | None, database_url: str | None) -> None:
    """List a tenant's tokens (never their secrets)."""
    from .config import Settings
    from .store.tokens import list_tokens

    if not valid_tenant_id(tenant):  # a NUL in it was psycopg's DataError, a traceback
        raise click.BadParameter(f"not a tenant id ({TENANT_ID_RULE})", param_hint="--tenant")
    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    urls = _database_urls(settings)

    async def run() -> list[TokenInfo]:
        async with _database(urls) as db:
            tokens = await list_tokens(db, tenant_id=tenant)
            if not tokens:  # a mistyped tenant: nothing to list, nor to record in a new log
                raise click.ClickException(f"tenant {tenant} has no tokens")
            await _record_operator_action(
                db, tenant, action="api_token.listed", description="Listed the API tokens"
            )
            return tokens

    now = datetime.now(UTC)
    for info in asyncio.run(run()):
        click.echo(
            f"{info.token_id}  {info.role:<8}  {_token_state(info, now):<24}"
            f"  {_when(info.expires_at, 'expires', 'never expires'):<24}"
            f"  {_when(info.last_used_at, 'last used', 'never used'):<26}"
            # A tenant's admin named it, perhaps before names were checked
            # for hidden and bidi characters (helper-263).
            f"  {terminal_safe(info.name)}"
        )


def _token_state(info: TokenInfo, now: datetime) -> str:
    if info.revoked_at is not None:
        return f"revoked {info.revoked_at.astimezone(UTC):%Y-%m-%d %H:%M}"
    if info.expires_at is not None and info.expires_at <= now:
        return f"expired {info.expires_at.astimezone(UTC):%Y-%m-%d %H:%M}"
    return "live"


def _when(moment: datetime | None, label: str, never: str) -> str:
    """`label` and `moment` in UTC to the minute, or `never`."""
    return f"{label} {moment.astimezone(UTC):%Y-%m-%d %H:%M}" if moment is not None else never


@token.command("revoke")
@click.argument("token_id")
@_data_dir_option
@_database_url_option
def token_revoke(token_id: str, data_dir: Path | None, database_url: str | None) -> None:
    """Revoke a token by its id; servers stop accepting it within their token cache time."""
    from .config import Settings
    from .redaction_setup import check_redaction_key_read
    from .store.changes import Changes, token_subject
    from .store.tokens import live_token_tenant, mark_revoked, read_token

    if parse_uuid(token_id) is None:
        raise click.BadParameter("must be a token id (a UUID)", param_hint="TOKEN_ID")
    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    check_redaction_key_read(settings)  # its name is redacted, perhaps with the key
    urls = _database_urls(settings)

    async def run() -> bool:
        async with _database(urls) as db:
            tenant = await live_token_tenant(db, token_id)
            if tenant is None:
                return False
            # Named in the record as the API names it: its role, and its name
            # redacted as the tenant's events are (it recorded neither). Read
            # first: a token's role and name never change, and the redaction
            # may read the tenant's settings on this command's one connection.
            async with db.connection(tenant) as conn:
                known = await read_token(conn, tenant_id=tenant, token_id=token_id)
            if known is None:
                return False
            name = await _redacted_name(db, settings, tenant, known.name)
            # As the API revokes: under the token's subject lock, which the
            # changes it is making hold shared (they end first; those it begins
            # now wait, then find it revoked), and recorded in its transaction,
            # last (a revocation is never without its event; ADR 0075).
            subject = token_subject(token_id)
            async with Changes(db).exclusive(tenant, subject, caller=None) as conn:
                found = await read_token(conn, tenant_id=tenant, token_id=token_id)
                if found is None or found.revoked_at is not None:
                    return False
                await mark_revoked(conn, token_id=token_id, tenant_id=tenant)
                await _record_operator_action(
                    db,
                    tenant,
                    action="api_token.revoked",
                    token_id=token_id,
                    description=f"Revoked an API token with role {found.role}",
                    details={"role": found.role, "name": name},
                )
            return True

    if not asyncio.run(run()):
        raise click.ClickException(f"no live token {token_id}")
    click.echo(f"revoked {token_id}")


@main.group()
def key() -> None:
    """The checkpoint signing key."""


@key.command("show")
@_data_dir_option
def key_show(data_dir: Path | None) -> None:
    """Print the verifier key of the signing key this server uses, for
    `sealtrail verify --key`. Where no key is configured and none is in the
    data directory yet, it fails rather than make one no server signs with."""
    from .config import Settings
    from .integrity.keys import checked_signer

    settings = Settings.load(data_dir=data_dir)
    signer = checked_signer(settings)
    click.echo(signer.verifier.text())


@key.command("restored")
@_output_format_option
@_data_dir_option
@_database_url_option
def key_restored(output: str, data_dir: Path | None, database_url: str | None) -> None:
    """List each tenant whose log does not extend what the signing key signed
    of it, as kept outside the database (SEALTRAIL_SIGNED_CHECKPOINTS_DIR):
    the database was restored from an older backup, a replica that lagged
    was promoted, or the log was cut back. For each: the size and root
    (base64) the key signed, the log's size now, and the sizes lost, from the
    first at which the key's checkpoints are not the log's to the size it
    signed; `rewritten`, a log as long as the key signed or longer that does
    not hold what it signed (nothing lost: a new key would sign the rewrite);
    or `erased`, a tenant whose erasure the key signed (at that size) that the
    database holds again. The key signs nothing more of those logs; the way on
    after a restore is a new key (docs/operations.md, Restoring an older
    backup).
    Tenants the database holds erased are left out. Exits 1 if what the key
    signed of a tenant cannot be read. Nothing is recorded in the tenants'
    logs."""
    from .config import Settings
    from .integrity.checkpointer import RESTORED_SCAN_BATCH, restored_logs
    from .integrity.keys import checked_signer
    from .integrity.signed_sizes import DIR_NAME as SIGNED_DIR_NAME
    from .integrity.signed_sizes import SETTING as SIGNED_SETTING
    from .integrity.signed_sizes import SignedSizes, SignedSizesError

    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    signer = checked_signer(settings)
    signed = SignedSizes(
        settings.signed_checkpoints_dir or settings.data_dir / SIGNED_DIR_NAME, signer.verifier
    )
    # As a start checks them; each file as it is read (SignedSizes).
    check_kept_directory(signed.directory, signed.key_directory, named=SIGNED_SETTING)
    unreadable: list[str] = []
    try:
        tenants = sorted(signed.tenants())
    except SignedSizesError as error:
        if not isinstance(error.__cause__, FileNotFoundError):
            raise click.ClickException(str(error)) from None
        tenants = []  # the key signed nothing here
    try:
        kept_erasures = signed.erasures()
    except SignedSizesError as error:
        unreadable.append(str(error))
        erased = {}
    else:  # a file that cannot be read said, every other erasure checked
        erased = kept_erasures.erased
        unreadable += [str(why) for _, why in sorted(kept_erasures.unreadable.items())]
    tenants = [tenant_id for tenant_id in tenants if tenant_id not in erased]

    def kept_sizes(some: list[str]) -> dict[str, tuple[int, bytes]]:
        kept = {}
        for tenant_id in some:
            try:
                size_and_root = signed.read(tenant_id)
            except SignedSizesError as error:
                unreadable.append(str(error))
                continue
            if size_and_root is not None:
                kept[tenant_id] = size_and_root
        return kept

    urls = _database_urls(settings)
    batch = RESTORED_SCAN_BATCH

    # A batch of files read (in a thread) while the database checks the one
    # before; how far it has got said on stderr, every ten batches and at the
    # end. Over 100,000 tenants it read them all, then asked, silent: 16-37 s.
    async def run() -> list[RestoredLog]:
        found: list[RestoredLog] = []
        async with _database(urls) as db, db.system_connection() as conn:
            found += await restored_logs(conn, signer.verifier, {}, erased)
            reading = asyncio.ensure_future(asyncio.to_thread(kept_sizes, tenants[:batch]))
            for start in range(0, len(tenants), batch):
                kept = await reading
                following = tenants[start + batch : start + 2 * batch]
                reading = asyncio.ensure_future(asyncio.to_thread(kept_sizes, following))
                found += await restored_logs(conn, signer.verifier, kept)
                checked = min(start + batch, len(tenants))
                if len(tenants) > batch and (checked % (10 * batch) == 0 or not following):
                    click.echo(
                        f"checked what the key signed of {checked:,} of {len(tenants):,} tenants",
                        err=True,
                    )
            await reading
        return sorted(found, key=lambda restored: restored.tenant_id)

    found = asyncio.run(run()) if tenants or erased else []
    rows = [
        {
            "tenant": restored.tenant_id,
            "signed_size": restored.signed_size,
            "signed_root": base64.b64encode(restored.signed_root).decode(),
            "log_size": restored.log_size,
            "lost_sizes": None
            if restored.erased or restored.rewritten
            else [restored.lost_from, restored.signed_size],
            "erased": restored.erased,
            "rewritten": restored.rewritten,
        }
        for restored in found
    ]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    elif not rows and unreadable:
        # Not "every tenant's": those whose files could not be read are unchecked.
        # On stdout, as every listing with nothing to list says so.
        click.echo("every other tenant's log extends what this key signed of it")
    elif not rows:
        click.echo("every tenant's log extends what this key signed of it")
    else:
        header = ["TENANT", "SIGNED", "LOG", "LOST", "SIGNED ROOT"]
        cells = [
            [
                str(row["tenant"]),
                str(row["signed_size"]),
                str(row["log_size"]),
                "erased"
                if restored.erased
                else "rewritten"
                if restored.rewritten
                else f"{restored.lost_from}..{restored.signed_size}",
                str(row["signed_root"]),
            ]
            for row, restored in zip(rows, found, strict=True)
        ]
        widths = [max(len(cell) for cell in column) for column in zip(header, *cells, strict=True)]
        for line in [header, *cells]:
            padded = [
                cell.rjust(width) if at in (1, 2) else cell.ljust(width)
                for at, (cell, width) in enumerate(zip(line, widths, strict=True))
            ]
            click.echo(terminal_safe("  ".join(padded).rstrip()))
    for problem in unreadable:
        # As every other refusal of an operator command says it (click's way).
        click.echo(f"Error: cannot read what the key signed: {terminal_safe(problem)}", err=True)
    if unreadable:
        raise SystemExit(1)


from .cli_tenants import tenant  # noqa: E402

main.add_command(sink)
main.add_command(tenant)
