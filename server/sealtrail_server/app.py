"""Assembles and runs the service: database, migrations, appender, the
grpc.aio server with its interceptors (telemetry, then the guard), health and
reflection; and takes it down
in order on SIGTERM (health NOT_SERVING, in-flight calls finish, pending
appends commit, pool closes)."""

from __future__ import annotations

import asyncio
import atexit
import errno
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Final, NoReturn

import aiohttp
import grpc
import psycopg
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Tracer, TracerProvider
from psycopg_pool import PoolTimeout

from sealtrail.tlog import Signer
from sealtrail.v1 import audit_service_pb2

from . import __version__
from .alerts.evaluator import Evaluator
from .api.audited import FilterDetails
from .api.console_sessions import ConsoleSessions
from .api.convert import server_view
from .api.denials import Denials
from .api.guard import GuardInterceptor
from .api.health import HealthServicer
from .api.managed_sinks import ManagedSinks
from .api.registration import add_audit_log_service
from .api.servicer import AuditLogServicer
from .api.sink_records import SinkRecords
from .auth.last_use import LastUses
from .auth.tokens import Authenticator
from .backfill.credentials import CredentialBackfill
from .config import Settings
from .console.hosts import parse_allowed_hosts
from .console.oidc import PROVIDER_TIMEOUT, OidcConfig, Provider, Published
from .console.providers import issuer_compared
from .console.providers import providers as providers_by_tenant
from .console.recheck import Rechecks
from .console.server import Console
from .console.sign_in import MAX_PENDING, SignIn
from .console.sign_in import Tenant as SignInTenant
from .deployment_sink_job import DeploymentSinkJob
from .domain.access import Revoked
from .domain.networks import parse_networks
from .domain.purge_summaries import SummarySeal
from .domain.sealing import SecretBox
from .file_modes import check_data_dir, check_secret_file
from .forward.egress import EgressPolicy, OutboundClient
from .forward.forwarder import Forwarder
from .geoip import CountryLocator
from .integrity.checkpointer import Checkpointer
from .integrity.keys import KEY_FILE_NAME as SIGNING_KEY_FILE_NAME
from .integrity.keys import configured_signer, refuse_an_unchosen_key
from .integrity.signed_sizes import open_signed_sizes
from .key_files import DEV_TOKEN_FILE, GeneratedKeys
from .measures import meter_of
from .redaction_setup import KEY_FILE_NAME as REDACTION_KEY_FILE_NAME
from .redaction_setup import (
    data_dir_redaction_key,
    load_redaction_secret,
    load_redactor,
    refuse_another_redaction_key,
)
from .retention.erasure import Eraser
from .retention.pending_changes import change_recorder
from .retention.purge_record import purge_recorder
from .retention.purger import Purger
from .sealing_setup import KEY_FILE_NAME as SECRETS_KEY_FILE_NAME
from .sealing_setup import load_secrets_key, refuse_a_new_key
from .stopping import end_tasks
from .store import db_errors
from .store.appender import Appender
from .store.changes import Changes, refuse_if_erased_now
from .store.console_sessions import SessionsKept
from .store.console_sign_ins import SignInsKept, tenants_not_found
from .store.database import DEFAULT_CONNECT_TIMEOUT, Database, check_login, check_reachable
from .store.deployment_sinks import reseal_definitions
from .store.migrations import migrate_database
from .store.pool_metrics import measure_pool
from .store.probe_verdicts import ProbeVerdicts
from .store.sinks import reseal_secrets
from .store.tenant_settings import SettingsCache
from .store.tokens import find_principal, write_last_uses
from .store.urls import with_connection_limits
from .stream.hub import StreamHub
from .stream_scope import StreamScope
from .telemetry.interceptor import TelemetryInterceptor
from .tls import server_credentials

log = logging.getLogger(__name__)

# Health's changes, as the log says them: the cause named plainly, each that
# holds (`Database.probe_found`: of the database, or of this process's clock).
_NOT_SERVING: Final = "not serving (health NOT_SERVING): %s"
_SERVING_AGAIN: Final = "serving again (health SERVING)%s"

SERVICE_NAME = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"].full_name
# Large enough for a RecordBatch of 1,000 events at their size limit.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Its answer holds them as stored, ids, times and correlation added: a batch
# just under the limit must still be answered (clients accept as much). One
# whose answer could be larger still (redaction lengthens events) is refused
# before it is written (AuditLogServicer, helper-138).
MAX_RESPONSE_BYTES = 96 * 1024 * 1024
# Keepalive pings (docs/reliability.md). A client's are answered as often as
# every 10 s while its calls run, the server sending nothing meanwhile (the
# Python client's come after 30 s of silence): gRPC's default, 5 minutes apart,
# ended a long silent call, a VerifyLog's, with GOAWAY at a client's third.
# And the server pings a connection after 60 s without a frame from its client,
# which it drops if the answer takes 20 s: a client gone without a word (no
# FIN, no RST) held its streams' subscriptions until TCP gave up, ~15 minutes.
KEEPALIVE_OPTIONS: Final = (
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.ping_timeout_ms", 20_000),  # what gRPC's core reads of the two
    ("grpc.http2.max_pings_without_data", 0),
)

# A stopping server's streams get this long to end when told to; those still
# running then (their clients stopped reading) are ended with the calls, once
# they are all that is left. How often that is looked at.
_STREAMS_END_SECONDS = 1.0
_STREAMS_POLL_SECONDS = 0.1
# Exports still running this long before a stop's grace runs out (half the
# grace at most) are ended, SERVER_STOPPING: time for a reader to take what
# is left in its window, and then the status, before gRPC cancels what remains.
_EXPORTS_CUT_BEFORE_GRACE_SECONDS = 1.0


def connection_cap(most: int) -> int:
    """`most` (SEALTRAIL_MAX_CONNECTIONS), lowered to three quarters of the
    file descriptors the process may open, should it be above: connections
    that took them all left none for a database connection (helper-209). The
    other quarter is its database connections', its sinks', its console's and
    its files'."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or most <= soft * 3 // 4:
        return most
    cap = max(1, soft * 3 // 4)
    log.warning(
        "SEALTRAIL_MAX_CONNECTIONS=%d lowered to %d, three quarters of the process's"
        " file descriptor limit (%d): raise the limit (ulimit -n, LimitNOFILE) for more",
        most,
        cap,
        soft,
    )
    return cap


def _bound_as_grpc_binds(address: str) -> list[int | None] | None:
    """Each address HOST:PORT resolves to, bound as gRPC binds it
    (SO_REUSEADDR, no SO_REUSEPORT) and let go: the errno each was refused
    with, None for one bound; None if HOST:PORT does not resolve."""
    host, _, port = address.rpartition(":")
    try:
        found = socket.getaddrinfo(
            host.removeprefix("[").removesuffix("]"),
            int(port),
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
    except (OSError, UnicodeError, ValueError):
        return None
    refused: list[int | None] = []
    for family, kind, protocol, _, where in found:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as error:
                refused.append(error.errno)
            else:
                refused.append(None)
    return refused


def address_in_use(address: str) -> bool:
    """Whether another socket listens on every address HOST:PORT resolves to,
    found binding each as gRPC would (SO_REUSEADDR, no SO_REUSEPORT), so that
    the start refuses it in its own words: gRPC's refusal came after its C++
    log line (`E1206 ... add_port.cc:83] Failed to add port to server ...`),
    printed above them (helper-311). False where gRPC would say more (a port
    of 0, a host that does not resolve): gRPC binds it, or refuses it."""
    _, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return False
    refused = _bound_as_grpc_binds(address)
    if not refused:  # unresolved: gRPC's to refuse
        return False
    return all(errno_ == errno.EADDRINUSE for errno_ in refused)


def _listen_refused(address: str, why: str = "in use") -> str:
    return (
        f"cannot listen on {address}: {why} (set SEALTRAIL_LISTEN,"
        " or serve --listen, to another HOST:PORT)"
    )


# Why the system would not bind an address, in words that say what to change.
_NOT_BOUND: Final = {
    errno.EADDRNOTAVAIL: "no interface of this machine has that address",
    errno.EACCES: "a port below 1024 needs privileges this process lacks",
}


def why_not_bound(address: str) -> str:
    """Why gRPC refused `address`, not in use (`address_in_use`): found by
    binding it as gRPC would; "in use or invalid" left the reader to guess."""
    refused = _bound_as_grpc_binds(address)
    if refused is None:
        return "not a HOST:PORT this machine can resolve"
    for errno_ in refused:
        if errno_ in _NOT_BOUND:
            return _NOT_BOUND[errno_]
    return "gRPC could not bind it"


def _console_refused(address: str, why: object) -> str:
    return (
        f"cannot serve the console on {address}: {why} (set SEALTRAIL_CONSOLE_LISTEN, or"
        " serve --console, to another HOST:PORT; set empty, `make run` serves no console)"
    )


def refuse_ports_in_use(settings: Settings) -> None:
    """SystemExit, naming the setting, for a port of `settings` (gRPC's, the
    console's) another process listens on, before anything is started or
    changed: found only as they were bound, a second `make run` had made an
    embedded PostgreSQL, migrated it and generated keys first (helper-395). A
    port taken after this is still refused as it is bound."""
    console = settings.console_listen or ""
    listen_taken = address_in_use(settings.listen)
    console_taken = bool(console) and address_in_use(console)
    if listen_taken and console_taken:
        # Both at once: said one by one, a second `make run` took two starts
        # to learn what one could say.
        raise SystemExit(_both_refused(settings.listen, console))
    if listen_taken:
        raise SystemExit(_listen_refused(settings.listen))
    if console_taken:
        raise SystemExit(_console_refused(console, "in use"))


# How many ports past a taken one are tried for one to suggest instead.
_PORTS_TRIED: Final = 100


def _free_address_after(address: str, *, besides: set[str]) -> str:
    """The first HOST:PORT past `address`'s port that binds (as gRPC binds
    it), none of `besides`: a suggestion, which another process may take
    before it is used; `HOST:PORT` if none of the next _PORTS_TRIED binds."""
    host, _, port = address.rpartition(":")
    for next_port in range(int(port) + 1, min(int(port) + 1 + _PORTS_TRIED, 65536)):
        candidate = f"{host}:{next_port}"
        if candidate in besides:
            continue
        refused = _bound_as_grpc_binds(candidate)
        if refused and all(errno_ is None for errno_ in refused):
            return candidate
    return "HOST:PORT"


def _both_refused(listen: str, console: str) -> str:
    moved_listen = _free_address_after(listen, besides={console})
    moved_console = _free_address_after(console, besides={listen, moved_listen})
    return (
        f"cannot listen on {listen} nor serve the console on {console}: both in use (move"
        f" both: SEALTRAIL_LISTEN={moved_listen} SEALTRAIL_CONSOLE_LISTEN={moved_console}"
        " make run, or serve --listen and --console; set SEALTRAIL_CONSOLE_LISTEN empty,"
        " `make run` serves no console)"
    )


def _hung_up_again() -> None:
    log.debug("shutting down: SIGHUP again (a lost terminal sends it twice); the stop goes on")


def abandon_stop() -> NoReturn:
    """Exits now, status 1, without finishing a stop that waits after its
    calls ended (on a database that takes what is sent and never answers, a
    hung server or pooler). The exit handlers run first: logs are flushed, telemetry
    exported, an embedded PostgreSQL stopped. Every acknowledged event is
    committed; a write not yet answered is not kept, and its caller, never
    answered, retries it with its idempotency key."""
    log.critical("shutting down: exiting now, without finishing the stop")
    atexit._run_exitfuncs()  # what a normal exit runs, which os._exit skips
    os._exit(1)


def _read_keys_there(settings: Settings) -> None:
    """Reads each key configured, or kept in the data dir, generating none:
    a key file missing, unreadable or not a key stops the start before the
    database is reached, as the rest of what the process holds of its own."""
    keys: tuple[tuple[str | None, Path | None, str, Callable[[Settings], object]], ...] = (
        (settings.secrets_key, settings.secrets_key_file, SECRETS_KEY_FILE_NAME, load_secrets_key),
        (
            settings.signing_key,
            settings.signing_key_file,
            SIGNING_KEY_FILE_NAME,
            configured_signer,
        ),
        (
            settings.redaction_key,
            settings.redaction_key_file,
            REDACTION_KEY_FILE_NAME,
            load_redaction_secret,
        ),
    )
    for text, file, name, load in keys:
        if text or file is not None or (settings.data_dir / name).exists():
            load(settings)


def check_secret_files(settings: Settings) -> None:
    """Each secret file the settings name, and each the data dir holds (a
    key generated there, the development token), and the directory each is
    in (the data dir whether or not one is there yet), checked before any is read:
    SystemExit naming the first another user may replace or read
    (file_modes.check_secret_file)."""
    named: list[tuple[Path, str]] = [
        (path, f"SEALTRAIL_{name}_FILE")
        for name, path in (
            ("SIGNING_KEY", settings.signing_key_file),
            ("SECRETS_KEY", settings.secrets_key_file),
            ("REDACTION_KEY", settings.redaction_key_file),
            ("TLS_KEY", settings.tls_key_file),
            ("OIDC_CLIENT_SECRET", settings.oidc_client_secret_file),
            ("OIDC_PROVIDERS", settings.oidc_providers_file),
        )
        if path is not None
    ]
    for name, what in (
        (SIGNING_KEY_FILE_NAME, "the data dir's checkpoint signing key"),
        (SECRETS_KEY_FILE_NAME, "the data dir's secrets key"),
        (REDACTION_KEY_FILE_NAME, "the data dir's redaction key"),
        (DEV_TOKEN_FILE, "the development admin token"),
    ):
        named.append((settings.data_dir / name, what))
    check_data_dir(settings.data_dir)  # whose keys may be generated now
    for path, what in named:
        check_secret_file(path, named=what, allow_readable=settings.allow_readable_secrets)


class _ConnectionRefusals(logging.Filter):
    """Keeps the pool's warnings of connections the database refused off the
    log while it opens, the last one kept to say why it did not."""

    def __init__(self) -> None:
        super().__init__()
        self.last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("error connecting in"):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        self.last = " ".join(str(args[-1] if args else record.getMessage()).split())
        return False


class Service:
    """One running Sealtrail server process's worth of parts. With a
    `tracer_provider`, every call, append batch and statement is traced
    through it; without, nothing is (request ids and callers' trace ids
    still reach events and logs). With a `meter_provider`, its parts
    measure themselves through it (docs/metrics.md)."""

    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str,
        owner_database_url: str | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`owner_database_url` runs the migrations, retention and erasure; by
        default `database_url` does. `clock` (tests) stamps events and ages them."""
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        self._database_url = with_connection_limits(database_url)
        self._owner_database_url = with_connection_limits(owner_database_url or database_url)
        self._tracer: Tracer | None = (
            tracer_provider.get_tracer("sealtrail_server") if tracer_provider is not None else None
        )
        self._meter = meter_of(meter_provider, __version__)
        self._db: Database | None = None
        self._appender: Appender | None = None
        self._checkpointer: Checkpointer | None = None
        self.purger: Purger | None = None
        self.credential_backfill: CredentialBackfill | None = None
        self.forwarder: Forwarder | None = None
        self.console: Console | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.console_port = 0
        self._providers: dict[str, OidcConfig] = {}
        self._private_dir: str | None = None
        self.evaluator: Evaluator | None = None
        self.deployment_sinks: DeploymentSinkJob | None = None
        self.token_uses: LastUses | None = None
        self._hub: StreamHub | None = None
        self._guard: GuardInterceptor | None = None
        self._servicer: AuditLogServicer | None = None
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()
        self.port = 0

    async def start(self) -> int:
        """Open the database, migrate, and start serving; returns the bound port.
        If any step fails, what was already started is stopped again."""
        try:
            return await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self) -> int:
        settings = self.settings
        refuse_ports_in_use(settings)
        # What this process holds of its own (rules, certificates, keys), read
        # before the database is changed: a start refused for one of them
        # leaves the database as it was.
        egress = EgressPolicy.of(settings)
        try:
            outbound = OutboundClient(
                egress, timeout=settings.forward_timeout, ca_file=settings.forward_ca_file
            )
        except (OSError, ssl.SSLError) as error:
            raise SystemExit(f"SEALTRAIL_FORWARD_CA_FILE: {error}") from None
        check_secret_files(settings)
        # The console's providers, their secrets read (SystemExit if one cannot be).
        self._providers = providers_by_tenant(settings)
        credentials = server_credentials(settings)
        redactor = load_redactor(settings)
        locator = (
            None
            if settings.geoip_db is None
            else CountryLocator.at_start(
                settings.geoip_db, check_seconds=settings.geoip_check_seconds
            )
        )
        _read_keys_there(settings)
        # Then the database, reached and logged in to (which changes nothing
        # in it) before a key is generated: a first start that could not use
        # it (a closed port, a login refused, a login without the roles) left
        # keys of no deployment in the data dir, which the next start, on the
        # right database, took for its own.
        await check_login(self._database_url)
        if self._owner_database_url != self._database_url:
            await check_reachable(self._owner_database_url)
        # Then the keys, any of which may be generated here: removed again if
        # the start fails before the database takes them as the deployment's
        # (a migration refused, the pool's roles missing), or they were keys
        # of no deployment, which the next start took for its own.
        generated = GeneratedKeys()
        with generated.removed_on_failure():
            secret_box, data_dir_secrets_key = load_secrets_key(settings)
            signer = configured_signer(settings)
            # Where it notes what it signs: a directory of this process's too,
            # its refusal once migrated had changed the database (helper-296).
            signed_sizes = open_signed_sizes(settings, signer.verifier)
            redaction_secret = load_redaction_secret(settings)
        # Then what the database must agree with, checked before migrating:
        # a new release's process refused for its login or keys after it had
        # migrated left every process of the running release refused its
        # restart ("migrated by a newer release") (helper-203). A key refused
        # here is kept: the refusal names its file, a new key to choose
        # deliberately if the deployment's is lost.
        keys = (signer, secret_box, data_dir_secrets_key, redaction_secret)
        await self._refuse_keys_of_another(*keys, change=False)
        with generated.removed_on_failure():
            await migrate_database(  # which says each migration as it applies it
                self._owner_database_url,
                lock_attempts=settings.migration_lock_attempts,
                out_of_order=settings.migrations_out_of_order,
            )
            # The pool (whose login must assume the roles the migrations
            # made) before the keys are registered: from then on the database
            # names them, and they are kept whatever fails later.
            self._db = db = await self._open_pool()
        resealed, unopenable = await self._refuse_keys_of_another(*keys, change=True)
        if resealed:
            log.info("sealed the secrets of %d sinks under the current secrets key", resealed)
        for problem in unopenable:
            log.error("sink %s; it delivers nothing until its secrets are set again", problem)
        measure_pool(db, self._meter)
        db.clock_skew.measure(self._meter)
        # Before the appender: Sealtrail's own records follow the tenants' settings.
        settings_cache = SettingsCache(db, ttl=settings.settings_cache_seconds, tracer=self._tracer)
        self._appender = Appender(
            db,
            settings=settings_cache,
            max_wait=settings.append_max_wait,
            batch_events=settings.append_batch_events,
            max_pending_events=settings.append_max_pending_events,
            max_pending_bytes=settings.append_max_pending_bytes,
            store_tree_nodes=settings.store_tree_nodes,
            server_view=server_view,
            tracer=self._tracer,
            meter=self._meter,
            clock=self._clock,
        )
        self._appender.start()
        self._checkpointer = Checkpointer(
            db,
            signer,
            origin_prefix=settings.log_origin,
            interval=settings.checkpoint_interval,
            clock=self._clock,
            meter=self._meter,
            signed_sizes=signed_sizes,
        )
        await self._checkpointer.start()
        self.purger = Purger(
            self._owner_database_url,
            record=purge_recorder(db, self._appender, self._checkpointer, signer, self._clock),
            seal=SummarySeal(redaction_secret),
            interval=settings.retention_interval,
            batch_events=settings.retention_batch_events,
            min_days=settings.retention_min_days,
            clock=self._clock,
            clock_skew=db.clock_skew,
            meter=self._meter,
            record_applied=change_recorder(self._appender, self._clock),
        )
        self.purger.start()
        if settings.credential_backfill:
            self.credential_backfill = CredentialBackfill(
                self._owner_database_url,
                batch_rows=settings.credential_backfill_batch_rows,
                meter=self._meter,
            )
            self.credential_backfill.start()
        self._hub = StreamHub(
            db,
            database_url=self._database_url,
            queue_capacity=settings.stream_queue_capacity,
            queue_bytes=settings.stream_queue_bytes,
            stall_bytes=settings.stream_stall_bytes,
            max_per_tenant=settings.stream_max_per_tenant,
            max_per_process=settings.stream_max_per_process,
            meter=self._meter,
        )
        self._hub.start()
        self.forwarder = Forwarder(
            db,
            outbound,
            box=secret_box,
            poll_interval=settings.forward_poll_interval,
            lease_seconds=settings.forward_lease_seconds,
            backoff_base=settings.forward_backoff_base,
            max_sinks=settings.forward_max_sinks,
            meter=self._meter,
        )
        self._hub.watch(self.forwarder.wake)
        self.forwarder.start()
        names = FilterDetails(redactor, settings_cache, redaction_secret=redaction_secret)
        self.evaluator = Evaluator(
            db,
            self._appender,
            shown_name=names.text,
            poll_interval=settings.forward_poll_interval,
            lease_seconds=settings.forward_lease_seconds,
            max_tenants=settings.alert_max_tenants,
            sinks_changed=self.forwarder.sinks_changed,
            meter=self._meter,
            clock=self._clock,
        )
        self._hub.watch(self.evaluator.wake)
        self.evaluator.start()
        # Deployment-wide sinks: each tenant's instance (ADR 0070).
        definitions_resealed, definitions_unopenable = await reseal_definitions(
            self._owner_database_url, secret_box
        )
        if definitions_resealed:
            log.info(
                "sealed the secrets of %d deployment sinks under the current secrets key",
                definitions_resealed,
            )
        for problem in definitions_unopenable:
            log.error(
                "deployment sink %s; no tenant is given an instance of it until its secrets"
                " are set again (sealtrail-server sink update)",
                problem,
            )
        forwarder = self.forwarder
        # One budget of changes for the process (the servicer's and the pass's).
        changes = Changes(db)
        managed = ManagedSinks(
            changes,
            self._appender,
            SinkRecords(names, redaction_secret=redaction_secret),
            box=secret_box,
            clock=self._clock,
            changed=forwarder.sink_changed,
        )
        self.deployment_sinks = DeploymentSinkJob(
            db, managed, box=secret_box, interval=settings.deployment_sink_interval
        )
        self._hub.watch(self.deployment_sinks.wake)
        self.deployment_sinks.start()

        async def lookup(digest: bytes):  # type: ignore[no-untyped-def]
            # The token's name as its calls' records show it: redacted once a
            # lookup (the principal is cached), not once a record.
            found = await find_principal(db, digest)
            principal = found.principal if isinstance(found, Revoked) else found
            if principal is None or not principal.name:
                return found
            named = replace(principal, name=await names.text(principal.tenant_id, principal.name))
            return Revoked(named) if isinstance(found, Revoked) else named

        async def refuse_if_erased(tenant_id: str) -> None:
            await refuse_if_erased_now(db, tenant_id)

        async def write_uses(uses: Mapping[tuple[str, str], datetime]) -> None:
            await write_last_uses(db, uses)

        self.token_uses = LastUses(
            write_uses, clock=self._clock, interval=settings.token_last_use_interval
        )
        self.token_uses.start()
        authenticator = Authenticator(
            lookup,
            cache_seconds=settings.token_cache_seconds,
            max_cached=settings.token_cache_size,
            unknown_per_minute=settings.unknown_tokens_per_minute,
            wall_clock=self._clock,
            uses=self.token_uses,
            meter=self._meter,
        )
        # Sent by this process's console only: with it, the browser's address
        # and user agent stand for the call's in its records.
        console_key = secrets.token_urlsafe(32) if settings.console_listen else ""
        trusted_proxies = parse_networks(settings.trusted_proxies)
        denials = Denials(
            self._appender,
            clock=self._clock,
            window=timedelta(seconds=settings.access_denied_window),
        )
        self._guard = GuardInterceptor(
            authenticator,
            refuse_if_erased=refuse_if_erased,
            console_key=console_key,
            trusted_proxies=trusted_proxies,
            denials=denials,
            locate=None if locator is None else locator.country,
            names=names,
        )
        telemetry = TelemetryInterceptor(tracer=self._tracer, meter=self._meter)
        server = grpc.aio.server(
            interceptors=[
                # First: a stream's handler closed in its call's task, as the call ends.
                StreamScope(),
                telemetry,
                self._guard,
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
                # Else gRPC's default SO_REUSEPORT let a second server (a stale
                # one in a deploy) share the port, the kernel splitting calls.
                ("grpc.so_reuseport", 0),
                *KEEPALIVE_OPTIONS,
                # A connection without a call in flight (a live stream is one)
                # is closed, GOAWAY first; and the port holds so many at most,
                # closing more as they come. Else a peer that sent the HTTP/2
                # preface and answered pings was kept for good, and enough of
                # them, with no token, took every file descriptor (helper-209).
                ("grpc.max_connection_idle_ms", round(settings.connection_idle_seconds * 1000)),
                ("grpc.max_allowed_incoming_connections", connection_cap(settings.max_connections)),
            ],
        )
        self._servicer = AuditLogServicer(
            db=db,
            appender=self._appender,
            checkpointer=self._checkpointer,
            hub=self._hub,
            heartbeat_seconds=settings.stream_heartbeat_seconds,
            export_limit=settings.export_rate_limit,
            export_window=settings.export_rate_window,
            export_max_per_tenant=settings.export_max_per_tenant,
            export_max_per_process=settings.export_max_per_process,
            export_stall_seconds=settings.export_stall_seconds,
            key_read_window=timedelta(seconds=settings.key_read_window),
            count_timeout=settings.count_timeout,
            query_timeout=settings.query_timeout,
            settings_cache=settings_cache,
            redactor=redactor,
            redaction_secret=redaction_secret,
            authenticator=authenticator,
            eraser=Eraser(self._owner_database_url, self._checkpointer, clock=self._clock),
            forwarder=self.forwarder,
            egress=egress,
            secret_box=secret_box,
            evaluator=self.evaluator,
            retention_min_days=settings.retention_min_days,
            retention_shortening_delay=settings.retention_shortening_delay,
            tenant_erasure=settings.tenant_erasure,
            legal_hold_release=settings.legal_hold_release,
            denials=denials,
            in_flight_bytes=settings.record_max_in_flight_bytes,
            max_response_bytes=MAX_RESPONSE_BYTES,
            changes=changes,
            locator=locator,
            clock=self._clock,
        )
        add_audit_log_service(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if settings.console_listen:
            # The console calls this server as any client would, over a socket only
            # this process's user can reach, whatever TLS the public port needs.
            self._private_dir = tempfile.mkdtemp(prefix="sealtrail-console-")
            console_target = f"unix:{self._private_dir}/grpc.sock"
            try:
                server.add_insecure_port(console_target)
            except RuntimeError:  # a TMPDIR too long for a socket's path (107 bytes)
                raise SystemExit(
                    f"cannot listen on the console's private socket {console_target}:"
                    " set TMPDIR to a shorter directory"
                ) from None
        try:
            if address_in_use(settings.listen):  # refused as gRPC does, without its log line
                raise RuntimeError(f"{settings.listen} is in use")
            if credentials is None:
                self.port = server.add_insecure_port(settings.listen)
            else:
                self.port = server.add_secure_port(settings.listen, credentials)
        except RuntimeError:
            why = "in use" if address_in_use(settings.listen) else why_not_bound(settings.listen)
            raise SystemExit(_listen_refused(settings.listen, why)) from None
        telemetry.serving(settings.listen, self.port)
        await server.start()
        self._server = server
        if settings.console_listen:
            self.console = Console(
                console_target,
                listen=settings.console_listen,
                key=console_key,
                trusted_proxies=trusted_proxies,
                allowed_hosts=parse_allowed_hosts(settings.console_allowed_hosts),
                tracer=self._tracer,
                sign_in=self._sign_in(
                    settings,
                    db,
                    ConsoleSessions(
                        db, self._appender, changes, authenticator=authenticator, clock=self._clock
                    ),
                    authenticator,
                ),
            )
            try:
                self.console_port = await self.console.start()
            except OSError as error:
                raise SystemExit(_console_refused(settings.console_listen, error)) from None
        await db.learn_policies(timeout=max(settings.database_probe_interval, 1.0))
        # A clock off from the database's is refused from the start, not from
        # the probe's second look (ADR 0138); one answer put right serves.
        clock_off = db.clock_off_at_start()
        if (read := db.clock_skew.latest) is not None:
            log.info(
                "clock: this process's clock is %+.3f s from the database's at start"
                " (within %.3f s; negative: behind)",
                read.skew.total_seconds(),
                read.doubt,
            )
        if clock_off is not None:
            log.error(_NOT_SERVING, clock_off)
            db.reachable = False
        if db.reachable:
            await self._warn_of_console_tenants(db)
        await self._set_health(serving=db.reachable)
        self._watchdog = asyncio.create_task(self._watch_database(db), name="sealtrail-db-watch")
        return self.port

    async def _warn_of_console_tenants(self, db: Database) -> None:
        """A WARNING for each tenant the console signs in to that was erased,
        or has no token and no event (a typo of its id?): found at start,
        not first by a person signing in. The start goes on (ADR 0151): a
        tenant may be made after it, by its first token."""
        try:
            found = await tenants_not_found(db, list(self._providers))
        except psycopg.Error as error:
            log.warning(
                "console: the tenants it signs in to were not looked up: %s", db_errors.named(error)
            )
            return
        named_by = (
            "SEALTRAIL_OIDC_PROVIDERS_FILE"
            if self.settings.oidc_providers_file is not None
            else "SEALTRAIL_OIDC_TENANT"
        )
        for tenant_id, what in found.items():
            if what == "erased":
                log.warning(
                    "console: tenant %s (%s) was erased: no one can sign in to it",
                    tenant_id,
                    named_by,
                )
            else:
                log.warning(
                    "console: tenant %s (%s) has no token and no event: is its id misspelt? Its"
                    " people's sign-ins make tokens of it as it is written",
                    tenant_id,
                    named_by,
                )

    async def _open_pool(self) -> Database:
        """The pool, its SEALTRAIL_POOL_MIN_SIZE connections open; SystemExit
        naming the setting, and what the database last answered, if they are
        not within DEFAULT_CONNECT_TIMEOUT. It said "pool initialization
        incomplete after 5.0 sec", after a warning for each connection the
        database refused ("too many clients already"): hundreds (helper-296)."""
        settings = self.settings
        refusals = _ConnectionRefusals()
        pool_log = logging.getLogger("psycopg.pool")
        pool_log.addFilter(refusals)
        try:
            return await Database.open(
                self._database_url,
                min_size=settings.pool_min_size,
                max_size=settings.pool_max_size,
                tracer=self._tracer,
                clock=self._clock,
                max_clock_skew=settings.max_clock_skew,
            )
        except PoolTimeout:
            raise SystemExit(
                f"cannot open SEALTRAIL_POOL_MIN_SIZE={settings.pool_min_size} connections to"
                f" the database within {DEFAULT_CONNECT_TIMEOUT:g} s: "
                f"{refusals.last or 'it did not answer'} (lower the setting, or raise the"
                " database's max_connections or the CONNECTION LIMIT of its database or role)"
            ) from None
        finally:
            pool_log.removeFilter(refusals)

    def resources(self) -> dict[str, int]:
        """What a leak would grow: this loop's tasks, the pool's connections in
        use, live stream subscriptions, exports open. Call it on the service's loop."""
        stats = self._db.pool.get_stats() if self._db is not None else {}
        in_use = stats.get("pool_size", 0) - stats.get("pool_available", 0)
        if self._appender is not None:
            in_use -= self._appender.kept_connections  # kept between batches (ADR 0046)
        return {
            "tasks": len(asyncio.all_tasks()),
            "connections_in_use": in_use,
            "subscribers": self._hub.subscriber_count() if self._hub is not None else 0,
            "exports": self._servicer.exports_open.count() if self._servicer is not None else 0,
        }

    def _sign_in(
        self,
        settings: Settings,
        db: Database,
        sessions: ConsoleSessions,
        authenticator: Authenticator,
    ) -> SignIn | None:
        """The console's sign-in through the identity provider, if one is set;
        its sessions rechecked for tokens `authenticator` (the API's) takes."""
        if not self._providers:
            return None
        client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=PROVIDER_TIMEOUT),
            headers={"User-Agent": "sealtrail-console"},
        )
        tenants = []
        # What each issuer publishes, read once for its tenants: their clients
        # and settings stay each its own (`config`).
        published: dict[str, Published] = {}
        for tenant_id, config in self._providers.items():
            shared = published.setdefault(issuer_compared(config.issuer), Published())
            provider = Provider(config, client, published=shared)
            rechecks = None
            if config.recheck_seconds > 0:
                rechecks = Rechecks(
                    config, provider, sessions, SessionsKept(db, tenant_id=tenant_id)
                )
            kept = SignInsKept(db, tenant_id=tenant_id, most=MAX_PENDING)
            tenants.append(SignInTenant(config, provider, kept, rechecks))
        return SignIn(tenants, sessions, authenticator=authenticator)

    async def _set_health(self, *, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    async def _watch_database(self, db: Database) -> None:
        """Health follows the database: NOT_SERVING while it does not answer,
        takes no writes, its login may not work as the service's roles,
        they lack a grant the migrations make them, a table lacks the
        row-level security they give it, or this process's clock is further
        from its clock than SEALTRAIL_MAX_CLOCK_SKEW (calls then fail at once
        with UNAVAILABLE and RetryInfo), SERVING again once it does; the pool reconnects by itself.
        Down after two failed probes in a row (ProbeVerdicts), up after one.
        A call the database refused for the service's privileges has the
        probe look at once (`Database.look_now`), and, if it finds the
        refusal too, look again at once: the second of the two in a row was
        otherwise a tick away."""
        interval = self.settings.database_probe_interval
        verdicts = ProbeVerdicts()
        # What kept health NOT_SERVING, as the line that said so named it.
        refused_for = "" if db.reachable else db.probe_found
        while True:
            asked = await db.next_look(interval)
            try:
                answered = await db.probe(timeout=max(interval, 1.0))
                reachable = verdicts.after(answered)
                if asked and not answered and reachable:
                    db.look_now()
                if reachable == db.reachable:
                    continue
                if reachable:
                    log.warning(
                        _SERVING_AGAIN, f": no longer so: {refused_for}" * bool(refused_for)
                    )
                    db.reachable = True
                    await db.drop_broken()
                else:
                    # What the last of the failed probes found (each condition).
                    refused_for = db.probe_found
                    log.error(_NOT_SERVING, refused_for)
                    db.reachable = False
                await self._set_health(serving=reachable)
            except Exception:  # the watch must outlive whatever one round meets
                log.exception("database watch: unexpected failure")

    async def _refuse_keys_of_another(
        self,
        signer: Signer,
        secret_box: SecretBox,
        data_dir_secrets_key: Path | None,
        redaction_secret: bytes,
        *,
        change: bool,
    ) -> tuple[int, list[str]]:
        """Stops a start whose keys, taken from its data dir, are not those
        the database was used with (`refuse_an_unchosen_key`,
        `refuse_a_new_key`, `refuse_another_redaction_key`). With `change`,
        the first signing key and the redaction key's fingerprint are
        registered and the sinks' secrets sealed again; returns how many were,
        and the sinks whose secrets cannot be opened."""
        settings = self.settings
        if not settings.signing_key and settings.signing_key_file is None:
            key_file = settings.data_dir / SIGNING_KEY_FILE_NAME
            await refuse_an_unchosen_key(
                self._owner_database_url, signer, key_file, register=change
            )
        resealed, opened, unopenable = await reseal_secrets(
            self._owner_database_url, secret_box, change=change
        )
        if unopenable and not opened and data_dir_secrets_key is not None:
            refuse_a_new_key(data_dir_secrets_key, unopenable)
        await refuse_another_redaction_key(
            self._owner_database_url,
            redaction_secret,
            data_dir_redaction_key(settings),
            register=change,
        )
        return resealed, unopenable

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish, commit what is pending."""
        await self._health.enter_graceful_shutdown()  # health watches told, then ended
        if self.console is not None:
            await self.console.stop()
            self.console = None
        if self._hub is not None:
            # Streams never end on their own: each held the stop its whole
            # grace. Told to end now, their clients resume elsewhere.
            self._hub.end_streams()
        if self._server is not None:
            grace = self.settings.shutdown_grace if grace is None else grace
            stopping = asyncio.create_task(self._server.stop(grace))
            cut = asyncio.get_running_loop().call_later(
                grace - min(_EXPORTS_CUT_BEFORE_GRACE_SECONDS, grace / 2), self._cut_exports
            )
            try:
                await self._end_stuck_streams(stopping)
                await stopping
            finally:
                cut.cancel()
        if self.token_uses is not None:  # the calls have ended: all their uses are noted
            await self.token_uses.stop()
        if self.deployment_sinks is not None:
            await self.deployment_sinks.stop()
        if self.evaluator is not None:
            await self.evaluator.stop()
        if self.forwarder is not None:
            await self.forwarder.stop()
        if self._hub is not None:
            await self._hub.stop()
        if self.credential_backfill is not None:
            await self.credential_backfill.stop()
        if self.purger is not None:
            await self.purger.stop()
        if self._checkpointer is not None:
            await self._checkpointer.stop()
        if self._appender is not None:
            await self._appender.stop()
        # The watch ends last: a database gone down with the server (a compose
        # down, a node drain) is then found so, and each use the stop makes
        # fails at once, not after the pool's timeout (helper-202).
        await end_tasks([self._watchdog])
        self._watchdog = None
        if self._db is not None:
            await self._db.close()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    def _cut_exports(self) -> None:
        """Ends the exports still running as the grace is about to run out,
        as streams end (UNAVAILABLE, `SERVER_STOPPING`, with a retry delay and
        how to export the rest), their status sent while there is time: gRPC
        cancelled them as it ran out, in its own words ("Cancelling all calls")."""
        if self._servicer is not None:
            self._servicer.exports_open.cut_for_stop()

    async def _end_stuck_streams(self, stopping: asyncio.Task[None]) -> None:
        """Once the streams told to end had a moment to, and they are all that
        is left, end the calls at once, as when the grace runs out. A stream
        whose client stopped reading waits in gRPC to write, where neither its
        own end nor a cancel or an abort of its call reaches it: it held the
        stop for the whole grace (helper-136)."""
        if self._hub is None or self._guard is None:
            return
        loop = asyncio.get_running_loop()
        hurry_from = loop.time() + _STREAMS_END_SECONDS
        while not stopping.done():
            left = self._hub.subscriber_count()
            if left and left == self._guard.calls and loop.time() >= hurry_from:
                log.warning(
                    "shutting down: ending %d stream(s) whose clients stopped reading", left
                )
                await self.hurry_stop()
                return
            await asyncio.wait([stopping], timeout=_STREAMS_POLL_SECONDS)

    async def hurry_stop(self) -> None:
        """Ends the calls a stop in progress is waiting for, at once, as when
        its grace runs out."""
        if self._server is not None:
            await self._server.stop(0)

    async def run_until_signalled(
        self,
        ready: Callable[[], None] | None = None,
        *,
        once_stopped: Callable[[int, FrameType | None], None] | None = None,
    ) -> None:
        """Serves until SIGTERM, SIGINT or SIGHUP, then stops; a second
        SIGTERM or SIGINT ends the calls still in flight at once (an
        operator's second Ctrl-C), a third exits (`abandon_stop`). `ready` is
        called once a signal stops the server gracefully (else one sent just
        after it said so was not); the signals' handlers before are theirs
        again once it has stopped, or `once_stopped` is (a process that exits
        once stopped takes no signal then as its end: `serve`, cli.py).

        SIGHUP (its terminal or SSH session gone) killed it outright: calls
        in flight cut off, and the embedded PostgreSQL ran on after it. A
        signal ignored as it began (SIGHUP under `nohup`) stays ignored; no
        SIGHUP on Windows.
        Once it stops, SIGHUP hurries nothing: a closed terminal sends it
        twice at once (the kernel to its foreground process group, the
        shell to each of its jobs), and the second cut the calls off."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        hangup = getattr(signal, "SIGHUP", None)
        # One ignored as it began stays ignored: SIGHUP under `nohup`, SIGINT
        # in a shell script's background (`cmd &`) or under a supervisor
        # that ignores it, which stopped it all the same (helper-332).
        signals = tuple(
            signum
            for signum in (signal.SIGTERM, signal.SIGINT, hangup)
            if signum is not None and signal.getsignal(signum) != signal.SIG_IGN
        )
        before = {signum: signal.getsignal(signum) for signum in signals}
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        if ready is not None:
            ready()
        await stop.wait()
        log.info("shutting down: finishing in-flight calls (signal again to end them now)")
        hurried: list[asyncio.Task[None]] = []

        def hurry() -> None:
            if hurried:
                abandon_stop()
            log.warning("shutting down: ending in-flight calls now (signal again to exit now)")
            hurried.append(loop.create_task(self.hurry_stop()))

        for signum in signals:
            loop.add_signal_handler(signum, _hung_up_again if signum == hangup else hurry)
        try:
            await self.stop()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)  # which sets SIG_DFL
                signal.signal(signum, once_stopped or before[signum])
            await asyncio.gather(*hurried, return_exceptions=True)
