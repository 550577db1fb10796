"""The server's settings: one frozen object, read once at the edge from
SEALTRAIL_* environment variables and command-line flags (flags win).

Tracing has no settings here: the standard OTEL_* variables configure it
(telemetry/tracing.py), as any OpenTelemetry deployment expects."""

from __future__ import annotations

import ipaddress
import math
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from .console.hosts import parse_allowed_hosts
from .domain.access import valid_tenant_id
from .domain.networks import parse_networks
from .domain.retention import MAX_DAYS

# Attempts at each migration at start by default (store/migrations.py).
MIGRATION_LOCK_ATTEMPTS: Final = 12


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "sealtrail"


@dataclass(frozen=True, kw_only=True)
class Settings:
    # Address the gRPC server listens on; port 0 picks a free port.
    listen: str = "127.0.0.1:50051"
    # PostgreSQL URL; when unset an embedded PostgreSQL runs in data_dir.
    database_url: str | None = None
    # PostgreSQL URL of the tables' owner, which runs the migrations, the
    # retention purge and erasures; when unset, database_url's user does (a
    # superuser, or the owner itself). Requests never run as the owner, but
    # the process holds this URL (docs/database.md says what that means).
    owner_database_url: str | None = None
    # Where the embedded PostgreSQL keeps its data (and the dev admin token).
    data_dir: Path = field(default_factory=default_data_dir)
    pool_min_size: int = 2
    pool_max_size: int = 10
    # Seconds between checks that the database answers (health follows them).
    database_probe_interval: float = 1.0
    # Seconds this process's clock may be off from the database's, either
    # way, read at start and by each probe, before health says NOT_SERVING and
    # calls are refused (ADR 0138): its events' received_at would be out of
    # order with their seqs. 0: never refused (still measured and logged).
    max_clock_skew: float = 2.0
    # Group commit: wait up to this long for more events, or until this many wait.
    append_max_wait: float = 0.005
    append_batch_events: int = 64
    # Events handed in and not yet being written beyond which Record is refused
    # (RESOURCE_EXHAUSTED, retry shortly) rather than left to miss its deadline.
    append_max_pending_events: int = 20_000
    # ... or bytes of those events (as the API serialized them).
    append_max_pending_bytes: int = 256 * 1024 * 1024
    # Memory the Record and RecordBatch calls being handled may hold (parsed,
    # validated, redacted), counted before a request is parsed as a multiple of
    # its size (api/in_flight.py); a call past it is refused (RESOURCE_EXHAUSTED,
    # retry shortly). A call is taken whatever its size when no other is.
    record_max_in_flight_bytes: int = 2 * 1024 * 1024 * 1024
    # How long a resolved token is trusted before it is looked up again.
    token_cache_seconds: float = 10.0
    # Resolved tokens a process keeps at most; past it, the one used longest
    # ago makes room.
    token_cache_size: int = 10_000
    # Tokens that do not exist a caller (an IP address; an IPv6 /64) may
    # present per minute, each a lookup; past it, its tokens this process
    # has not seen are refused (RESOURCE_EXHAUSTED) unlooked. 0: no limit.
    unknown_tokens_per_minute: int = 60
    # A token's last use is written at most once per this many seconds per
    # process (at most a day), behind its calls (ADR 0064): its
    # `last_use_time` is that coarse. 0 notes every call, still written
    # at most once per token every 10 s.
    token_last_use_interval: float = 60.0
    # Seconds in-flight calls get to finish on SIGTERM.
    shutdown_grace: float = 10.0
    # Seconds a gRPC connection may go without a call in flight (a live stream
    # is one) before the server closes it (GOAWAY); clients reconnect at their
    # next call. One that never made a call was kept for good (helper-209).
    connection_idle_seconds: float = 300.0
    # gRPC connections the public port holds at once (each a file descriptor);
    # past it, new ones are closed as they come. Lowered at start to three
    # quarters of the process's file descriptor limit, should it be above.
    max_connections: int = 10_000
    # TLS: the server's certificate chain and key (PEM files); with a client CA
    # as well, clients must present a certificate it signed (mutual TLS).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Checkpoint origins are `<log_origin>/<tenant>`; also the signing key's name.
    log_origin: str = "sealtrail.local/log"
    # Seconds between checkpoints of a growing log (0: only on demand).
    checkpoint_interval: float = 10.0
    # The signing key's text, or a file holding it; else <data_dir>/signing-key.
    signing_key: str | None = None
    signing_key_file: Path | None = None
    # Where the largest checkpoint the key signed of each tenant's log is kept,
    # outside the database (ADR 0080); else <data_dir>/signed-checkpoints.
    # Every process that signs with the key should share it (docs/integrity.md).
    signed_checkpoints_dir: Path | None = None
    # False only to measure what storing Merkle nodes costs (make bench, by
    # `serve --bench-no-tree-nodes`; never read from the environment): proofs,
    # checkpoints and VerifyLog need the nodes, and events appended without
    # them can never be proven or verified.
    store_tree_nodes: bool = True
    # Seconds between heartbeats of an idle stream.
    stream_heartbeat_seconds: float = 5.0
    # Hub deliveries a stream may have waiting before it reads the table instead.
    stream_queue_capacity: int = 64
    # ... and bytes of their records (one delivery however large is taken).
    stream_queue_bytes: int = 16 * 1024 * 1024
    # Bytes of records (as stored) the log may grow by while a live stream's client
    # takes nothing, for a heartbeat's time at least, before the stream is ended
    # (UNAVAILABLE, STREAM_STALLED), what it holds given back; its client resumes
    # from its cursor as it reads on (ADR 0076).
    stream_stall_bytes: int = 4 * 1024 * 1024
    # Streams open at once on this server, of one tenant and of all: past
    # either, StreamEvents is refused (RESOURCE_EXHAUSTED, retry later). Each
    # stream whose client stops reading pins a few MB of memory.
    stream_max_per_tenant: int = 100
    stream_max_per_process: int = 1000
    # Exports allowed per tenant within a sliding window of this many seconds
    # (at most a day).
    export_rate_limit: int = 30
    export_rate_window: float = 60.0
    # Exports open at once on this server, of one tenant and of all: past
    # either, Export is refused (RESOURCE_EXHAUSTED, TOO_MANY_EXPORTS, retry
    # later) before it is recorded. Each export holds its page of records and
    # gRPC's buffers, about 6 MB, while it runs.
    export_max_per_tenant: int = 4
    export_max_per_process: int = 50
    # Seconds an export may wait to hand a chunk to the transport (its client
    # not reading, or gone silent) before it is ended (ABORTED, EXPORT_STALLED),
    # its place and memory given back (ADR 0072); a reader that takes a chunk
    # (64 KiB) within them, however slowly in all, is never cut. At most a day.
    export_stall_seconds: float = 300.0
    # Reads by key (GetEvent, GetInclusionProof) are recorded once per token,
    # RPC and process within this many seconds (at most a day); 0 records
    # every read.
    key_read_window: float = 600.0
    # Seconds a CountEvents may count for; past them it is refused
    # (FAILED_PRECONDITION, COUNT_TIMEOUT: narrow the time range). A count
    # reads every match, and holds a connection while it does.
    count_timeout: float = 30.0
    # Seconds a Query page of any filter but none or one exact action (an
    # action suffix, a word, an actor) may read for; past them it is refused
    # (FAILED_PRECONDITION, QUERY_TIMEOUT: narrow the time range or the
    # filter). Such a page may read the tenant's whole log to fill itself.
    query_timeout: float = 30.0
    # A token refused (its role may not call the RPC, or it was revoked) is
    # recorded once per token, RPC and process within this many seconds (at
    # most a day); 0 records every refusal.
    access_denied_window: float = 600.0
    # Secrets are redacted before anything is stored (docs/redaction.md); False
    # only to measure what redaction costs (make bench).
    redaction: bool = True
    # More denied field names (comma-separated), and a JSON file of more value
    # patterns ({"rule_name": "regex", ...}), on top of the built-in rules.
    redact_fields: str = ""
    redact_patterns_file: Path | None = None
    # The secret each tenant's HMAC redaction key is derived from (64 hex
    # digits), or a file holding it; else <data_dir>/redaction-key. Every
    # process of a deployment must share it, as they share the signing key.
    redaction_key: str | None = None
    redaction_key_file: Path | None = None
    # The key sinks' credentials are sealed with at rest (64 hex digits; several,
    # comma-separated and the new one first, while rotating), or a file holding
    # it; else <data_dir>/secrets-key. Every process of a deployment must share it.
    secrets_key: str | None = None
    secrets_key_file: Path | None = None
    # A secret file (a key, the TLS key) readable by group or others is taken,
    # with a warning at start, rather than refused (file_modes.py): for a
    # mount whose mode cannot be set. One writable by them is refused all the same.
    allow_readable_secrets: bool = False
    # Seconds a tenant's settings are trusted before they are read again.
    settings_cache_seconds: float = 10.0
    # Seconds between passes of the retention purge, for the whole deployment
    # (0: never); events removed per transaction. One process purges at a time.
    retention_interval: float = 86400.0
    retention_batch_events: int = 5000
    # The deployment's retention floor in days (0: none): no tenant's policy
    # may keep events for less (forever always passes), and the purge keeps
    # to it even for a policy stored before it was raised.
    retention_min_days: int = 0
    # Seconds a change of a tenant's policy that keeps any events less long
    # waits before it applies (ADR 0163; 0: none): meanwhile the purge keeps
    # each event as long as the longer of both policies says, and an admin
    # may cancel it. A change that keeps everything as long or longer
    # applies at once. At most MAX_DAYS days.
    retention_shortening_delay: float = 7 * 86400.0
    # Whether the credential backfill runs (ADR 0143): the credential columns
    # of events appended before migration 0056 written from their records, by
    # one process of the deployment at a time, this many rows a transaction.
    credential_backfill: bool = True
    credential_backfill_batch_rows: int = 1000
    # Who erases a tenant: "admin", its admin token over the API (EraseTenant);
    # or "operator", `sealtrail-server tenant erase` alone, the API refusing.
    tenant_erasure: str = "admin"
    # Who releases a tenant's legal hold: "admin", its admin token over the API
    # (SetLegalHold); or "operator", `sealtrail-server tenant release-hold`
    # alone (an admin still places one).
    legal_hold_release: str = "admin"
    # Attempts at each migration at start, each waiting 2 s at most for a
    # lock (about two minutes in all); 0: wait for its locks without a limit.
    migration_lock_attempts: int = MIGRATION_LOCK_ATTEMPTS
    # Whether a start applies a migration lower than one the database has (a
    # hotfix build took a later one alone); off, it refuses such a database.
    migrations_out_of_order: bool = False
    # Forwarding to sinks (docs/forwarding.md). Destinations must be public
    # https endpoints: plain http only when allowed, internal addresses (private,
    # loopback, link-local such as cloud metadata) only inside an allowed network
    # (comma-separated CIDRs); denied networks are refused even when public.
    forward_allow_http: bool = False
    forward_allow_networks: str = ""
    forward_deny_networks: str = ""
    # Seconds each request may take to connect, send or answer.
    forward_timeout: float = 10.0
    # PEM certificates of CAs trusted for destinations besides the system's
    # (an internal SIEM with a private CA).
    forward_ca_file: Path | None = None
    # Seconds an idle sink waits before looking for events again (commits wake it sooner).
    forward_poll_interval: float = 1.0
    # Seconds a process's lease on a sink lasts unless renewed; another process
    # takes over a dead one's sinks after it (at most a day).
    forward_lease_seconds: float = 30.0
    # Seconds before the first retry of a failed delivery; each failure doubles it (to 300).
    forward_backoff_base: float = 1.0
    # Sinks this process delivers at most; 0: none (a process that only serves calls).
    forward_max_sinks: int = 1000
    # Seconds between a process's looks for tenants whose log began without an
    # instance of each deployment-wide sink (ADR 0070); a tenant's first
    # commit seen by the process makes it look sooner.
    deployment_sink_interval: float = 30.0
    # Tenants whose alert rules this process evaluates at most (0: none); the
    # forwarding poll interval and lease length apply to them as well.
    alert_max_tenants: int = 1000
    # The web console's HOST:PORT (docs/console.md); unset: no console.
    console_listen: str | None = None
    # Proxies in front of the gRPC server and the console (comma-separated
    # addresses or CIDRs): a call from one is recorded with the client its
    # X-Forwarded-For names (docs/api.md); from anyone else, with its peer's.
    trusted_proxies: str = ""
    # Names the console answers under besides its own (comma-separated
    # host[:port]): a proxy's public name, a port published under another
    # number (ADR 0102, docs/console.md). Any other Host is 421.
    console_allowed_hosts: str = ""
    # Signing in to the console through an OpenID provider (ADR 0140,
    # docs/console.md): its issuer URL (unset: tokens are pasted, as before),
    # this console's client id there, a file holding the client secret, the
    # console's callback URL as the browser reaches it (registered with the
    # provider), and the tenant whose tokens a sign-in mints.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_file: Path | None = None
    oidc_redirect_url: str = ""
    oidc_tenant: str = ""
    # The provider's groups (comma-separated) whose people sign in with each
    # role (the highest listed for any of theirs); in none: refused.
    oidc_admin_groups: str = ""
    oidc_exporter_groups: str = ""
    oidc_reader_groups: str = ""
    # The id_token claim that lists a person's groups.
    oidc_groups_claim: str = "groups"
    # Seconds a sign-in's token lasts (at most a day).
    oidc_session_seconds: float = 8 * 3600.0
    # Seconds between a console session's rechecks with the provider, by its
    # refresh token, at the browser's next call (0: never; at most a day).
    oidc_recheck_seconds: float = 300.0
    # The provider's name on the console's button ("Sign in with Okta"); unset,
    # "Sign in with your identity provider".
    oidc_provider_name: str = ""
    # A file of OpenID providers, one per tenant (TOML, or JSON by a .json
    # name; ADR 0151, docs/console.md): each tenant's people sign in through
    # their own. Not with SEALTRAIL_OIDC_ISSUER; _REDIRECT_URL, _GROUPS_CLAIM,
    # _SESSION_SECONDS, _RECHECK_SECONDS and _PROVIDER_NAME are its tenants'
    # defaults. Read at start.
    oidc_providers_file: Path | None = None
    # A MaxMind DB format file (GeoLite2 Country or City, DB-IP lite, IPinfo)
    # the server locates clients' countries in: an event with a context.ip and
    # no context.country gets the country of its address, marked as located
    # by the server (ADR 0134). Read at start; reopened when it changes.
    geoip_db: Path | None = None
    # Seconds between looks at it for a new version (tests set less).
    geoip_check_seconds: float = 60.0
    # Server log lines: "text", or "json" (one object per line); both carry
    # the request id and trace id of the call they were logged in.
    log_format: str = "text"

    @classmethod
    def load(cls, env: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        """Settings from SEALTRAIL_<FIELD> variables, then non-None `overrides`."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name in _OVERRIDES_ONLY:
                continue
            raw = env.get(f"SEALTRAIL_{spec.name.upper()}")
            if raw:
                values[spec.name] = _parse(spec.type, raw, spec.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = replace(cls(), **values)
        for spec in fields(settings):
            text = getattr(settings, spec.name)
            if isinstance(text, str) and not _utf_8(text):
                # A byte that is not UTF-8 (a password typed in a Latin-1
                # terminal) decodes to a surrogate: a database URL holding
                # one ended in a UnicodeEncodeError's traceback (helper-332).
                raise SystemExit(
                    f"SEALTRAIL_{spec.name.upper()}: not UTF-8 text (a byte of another encoding)"
                )
        if not settings.database_url and not _utf_8(str(settings.data_dir)):
            # The embedded PostgreSQL's directory, which its commands print
            # and its socket's URL holds: initdb's output quoting it ended
            # `serve` in a UnicodeDecodeError's traceback. A path like any
            # other to Python's files, so refused only where it is that.
            raise SystemExit(
                "SEALTRAIL_DATA_DIR: not UTF-8 text (a byte of another encoding), which the"
                " embedded PostgreSQL's directory must be (or set SEALTRAIL_DATABASE_URL)"
            )
        for name in _AT_LEAST_ONE:
            if getattr(settings, name) < 1:
                raise SystemExit(f"SEALTRAIL_{name.upper()} must be at least 1")
        for spec in fields(settings):
            value = getattr(settings, spec.name)
            # Seconds, all of them: a negative one would pass for 0 ("off", for
            # an interval) without a word, and nan or inf for anything at all.
            if spec.type in ("float", float) and not (math.isfinite(value) and value >= 0):
                raise SystemExit(f"SEALTRAIL_{spec.name.upper()} must be 0 or more seconds")
        for name in _NOT_NEGATIVE:
            if getattr(settings, name) < 0:
                raise SystemExit(f"SEALTRAIL_{name.upper()} must be 0 or more")
        for spec in fields(settings):
            count = spec.type in ("int", int) and not spec.name.endswith("_bytes")
            if count and getattr(settings, spec.name) > _MOST_COUNT:
                raise SystemExit(f"SEALTRAIL_{spec.name.upper()} must be at most {_MOST_COUNT}")
        for name in ("listen", "console_listen"):
            address = getattr(settings, name)
            if address is not None and (why := _address_problem(address)):
                raise SystemExit(f"SEALTRAIL_{name.upper()}={address!r}: {why}")
        for name in ("trusted_proxies", "forward_allow_networks", "forward_deny_networks"):
            try:
                parse_networks(getattr(settings, name))
            except ValueError as error:
                raise SystemExit(
                    f"SEALTRAIL_{name.upper()}={getattr(settings, name)!r}: {error}"
                ) from None
        try:
            parse_allowed_hosts(settings.console_allowed_hosts)
        except ValueError as error:
            raise SystemExit(f"SEALTRAIL_CONSOLE_ALLOWED_HOSTS: {error}") from None
        if settings.oidc_providers_file is not None and (why := providers_file_problem(settings)):
            raise SystemExit(why)
        if settings.oidc_issuer and (why := oidc_problem(settings)):
            raise SystemExit(why)
        for name in ("database_url", "owner_database_url"):
            if _at_in_userinfo(getattr(settings, name) or ""):
                # libpq took what follows it for the host, and named that host
                # (a part of the password) in its error (helper-140).
                raise SystemExit(
                    f"SEALTRAIL_{name.upper()}: an '@' in its user or password must be written %40"
                )
        for name in ("signing_key", "redaction_key", "secrets_key"):
            if getattr(settings, name) and getattr(settings, f"{name}_file"):
                # Else the text won, and the file named beside it was never read.
                raise SystemExit(
                    f"set SEALTRAIL_{name.upper()} or SEALTRAIL_{name.upper()}_FILE, not both"
                )
        origin = settings.log_origin
        if not origin or any(c.isspace() or c == "+" or not c.isprintable() for c in origin):
            # It names the signing key too, whose name cannot hold either; nor
            # control characters, which no signed note may hold.
            raise SystemExit(
                "SEALTRAIL_LOG_ORIGIN must be non-empty, without spaces, '+' or control characters"
            )
        if settings.retention_min_days > MAX_DAYS:
            raise SystemExit(
                f"SEALTRAIL_RETENTION_MIN_DAYS must be at most {MAX_DAYS} days (0: no floor)"
            )
        if settings.retention_shortening_delay > MAX_DAYS * DAY:
            raise SystemExit(
                f"SEALTRAIL_RETENTION_SHORTENING_DELAY must be at most {MAX_DAYS * int(DAY)}"
                f" seconds ({MAX_DAYS} days; 0: none)"
            )
        for name in _AT_MOST_A_DAY:
            if getattr(settings, name) > DAY:
                raise SystemExit(f"SEALTRAIL_{name.upper()} {AT_MOST_A_DAY_SAID}")
        for name in _MORE_THAN_ZERO:
            if getattr(settings, name) <= 0:
                raise SystemExit(f"SEALTRAIL_{name.upper()} must be more than 0 seconds")
        if settings.pool_max_size < max(2, settings.pool_min_size):
            # A change holds one connection while the appender records it in another.
            raise SystemExit(
                "SEALTRAIL_POOL_MAX_SIZE must be at least 2 and at least SEALTRAIL_POOL_MIN_SIZE"
            )
        return settings


# Seconds a setting of _AT_MOST_A_DAY may be at most (a providers file's
# session and recheck seconds too), and what a refusal says of it.
DAY: Final = 86400.0
AT_MOST_A_DAY_SAID: Final = "must be at most 86400 seconds (a day)"

# Seconds that reach the database as an interval from now (a lease's end, a
# window's start): past the timestamps' range, every statement using them
# failed after the start (helper-157); the key read window's end lay past
# the year 9999. More than a day is no use to any of them. Nor to a count's
# statement timeout, which PostgreSQL refuses past 24.8 days (in ms, an int),
# nor to the connections' idle time, which gRPC takes in ms, an int too.
_AT_MOST_A_DAY = (
    "token_last_use_interval",
    "max_clock_skew",  # past a day, retention would have purged a day early
    "connection_idle_seconds",
    "key_read_window",
    "access_denied_window",
    "forward_lease_seconds",
    "export_rate_window",
    "export_stall_seconds",  # no database interval: past a day it bounds nothing
    "count_timeout",
    "query_timeout",
    "deployment_sink_interval",
    "oidc_session_seconds",
    "oidc_recheck_seconds",
)

# Counts (bytes aside) reach statements (a LIMIT, a scan's window added to a
# sequence number) and gRPC's options (a C int): past a 32-bit integer, the
# server started, and its forwarder and alert evaluator failed every claim
# ("bigint out of range"), delivering nothing (helper-296). No count needs more.
_MOST_COUNT: Final = 2**31 - 1

# Fields only the bench sets, as overrides: a variable left in a deployment's
# environment turned off what the log's integrity rests on (helper-157).
_OVERRIDES_ONLY: Final = frozenset({"store_tree_nodes", "geoip_check_seconds"})

# Counts that 0 would break (a purge batch of 0 events, say, would never end).
_AT_LEAST_ONE = (
    "append_batch_events",
    "append_max_pending_events",
    "append_max_pending_bytes",
    "record_max_in_flight_bytes",
    "stream_queue_capacity",
    "stream_queue_bytes",
    "stream_stall_bytes",  # 0 ended every stream that waited a heartbeat to write
    "stream_max_per_tenant",  # 0 refused every stream
    "stream_max_per_process",
    "retention_batch_events",
    "credential_backfill_batch_rows",
    "export_rate_limit",  # 0 refused every export
    "export_max_per_tenant",  # 0 would refuse every export
    "export_max_per_process",
    "max_connections",  # 0 refused every connection
    "token_cache_size",
)

# Counts for which 0 means none (a pool kept empty, a process that forwards
# or evaluates nothing, a wait without a limit); less means nothing.
_NOT_NEGATIVE = (
    "pool_min_size",
    "migration_lock_attempts",
    "retention_min_days",  # no floor
    "forward_max_sinks",
    "alert_max_tenants",
    "unknown_tokens_per_minute",  # no limit
)

# Seconds that 0 would turn into a loop without a pause (a heartbeat, a
# probe, a poll), a lease that ends as it begins, a delivery or an export
# window that cannot be; the other intervals take 0 for "off".
_MORE_THAN_ZERO = (
    "database_probe_interval",
    "connection_idle_seconds",  # every connection closed at once
    "stream_heartbeat_seconds",
    "export_rate_window",
    "export_stall_seconds",  # every export ended at its first chunk
    "forward_timeout",
    "count_timeout",
    "query_timeout",
    "forward_poll_interval",
    "forward_lease_seconds",
    "forward_backoff_base",
    "deployment_sink_interval",
    "oidc_session_seconds",
)


# What a tenant id that is none is told (SEALTRAIL_OIDC_TENANT, a providers file's).
TENANT_ID_SAID: Final = (
    "not a tenant id (a lowercase letter or digit, then those, '.', '_', '-'; 1-63)"
)

# Characters of SEALTRAIL_OIDC_PROVIDER_NAME at most: a button's words.
MAX_PROVIDER_NAME: Final = 60


def oidc_url_problem(url: str) -> bool:
    """Whether `url` is no URL a provider or the console's callback may have:
    https://, or http:// on a loopback address only."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # a port out of range (or no number) is no URL's
    except ValueError:
        return True
    loopback = host == "localhost" or _is_loopback(host)
    return not host or not (parts.scheme == "https" or (parts.scheme == "http" and loopback))


def provider_name_problem(name: str) -> str | None:
    """What is wrong with a provider's name for the console's button."""
    if len(name) > MAX_PROVIDER_NAME or not name.isprintable():
        return f"must be at most {MAX_PROVIDER_NAME} characters, none of them a control character"
    return None


# What a sign-in URL holding a user or password is told (an issuer's, a callback's).
_NO_USER_SAID: Final = "must have no user or password (user:pw@host)"


def _https_problem(url: str) -> str | None:
    """What is wrong with a URL of the console's sign-in for its scheme and host."""
    if oidc_url_problem(url):
        return "must be an https:// URL (http:// on a loopback address only)"
    return None


def issuer_problem(url: str) -> str | None:
    """What is wrong with a provider's issuer URL: not https, or a query or a
    fragment, which OpenID Connect Discovery 1.0 (section 2) forbids an issuer
    (its discovery document's URL is the issuer's and a path), or a user and
    password, which would go to the provider with every discovery and key read."""
    if why := _https_problem(url):
        return why
    if "#" in url:
        return "must have no fragment (#...): an issuer may not (OpenID Connect Discovery 1.0)"
    if "?" in url:
        return "must have no query (?...): an issuer may not (OpenID Connect Discovery 1.0)"
    if "@" in urllib.parse.urlsplit(url).netloc:  # _https_problem found it a URL
        return _NO_USER_SAID
    return None


def callback_url_problem(url: str) -> str | None:
    """What is wrong with a URL for the console's callback (any tenant's):
    not https, or a fragment, which RFC 6749 3.1.2 forbids a redirection
    endpoint (`#/auth/callback` once passed for the path), or a user and
    password, which browsers strip or refuse (and would be a secret given to
    every provider). A query it may have (RFC 6749 3.1.2)."""
    if why := _https_problem(url):
        return why
    if "#" in url:
        return "must have no fragment (#...): a redirect URL may not (RFC 6749 3.1.2)"
    if "@" in urllib.parse.urlsplit(url).netloc:  # _https_problem found it a URL
        return _NO_USER_SAID
    return None


def redirect_url_problem(url: str) -> str | None:
    """What is wrong with the console's callback URL as a provider is given it."""
    if why := callback_url_problem(url):
        return why
    if not urllib.parse.urlsplit(url).path.endswith("/auth/callback"):
        return "must be the console's /auth/callback"
    return None


# The settings a providers file gives per tenant, refused beside it.
_PER_TENANT: Final = (
    "client_id",
    "client_secret_file",
    "tenant",
    "admin_groups",
    "exporter_groups",
    "reader_groups",
)


def providers_file_problem(settings: Settings) -> str | None:
    """What keeps the console's sign-in through SEALTRAIL_OIDC_PROVIDERS_FILE
    from working, of the settings alone (the file is read at start)."""
    if settings.oidc_issuer:
        return (
            "SEALTRAIL_OIDC_PROVIDERS_FILE and SEALTRAIL_OIDC_ISSUER are both set: set one"
            " (the file names each tenant's issuer)"
        )
    for name in _PER_TENANT:
        if getattr(settings, f"oidc_{name}"):
            return (
                f"SEALTRAIL_OIDC_{name.upper()} is set beside SEALTRAIL_OIDC_PROVIDERS_FILE:"
                " give it per tenant in the file"
            )
    if not settings.console_listen:
        return (
            "SEALTRAIL_OIDC_PROVIDERS_FILE signs in to the console: set"
            " SEALTRAIL_CONSOLE_LISTEN too"
        )
    url = settings.oidc_redirect_url
    if url and (why := redirect_url_problem(url)):
        return f"SEALTRAIL_OIDC_REDIRECT_URL {why}"
    if why := provider_name_problem(settings.oidc_provider_name):
        return f"SEALTRAIL_OIDC_PROVIDER_NAME {why}"
    return None


def oidc_problem(settings: Settings) -> str | None:
    """What keeps the console's sign-in through SEALTRAIL_OIDC_ISSUER from working."""
    for name in ("client_id", "client_secret_file", "redirect_url", "tenant"):
        if not getattr(settings, f"oidc_{name}"):
            return f"SEALTRAIL_OIDC_ISSUER is set: set SEALTRAIL_OIDC_{name.upper()} too"
    if not settings.console_listen:
        return "SEALTRAIL_OIDC_ISSUER signs in to the console: set SEALTRAIL_CONSOLE_LISTEN too"
    if not valid_tenant_id(settings.oidc_tenant):
        return f"SEALTRAIL_OIDC_TENANT {settings.oidc_tenant[:80]!r} is {TENANT_ID_SAID}"
    if why := issuer_problem(settings.oidc_issuer):
        return f"SEALTRAIL_OIDC_ISSUER {why}"
    if why := redirect_url_problem(settings.oidc_redirect_url):
        return f"SEALTRAIL_OIDC_REDIRECT_URL {why}"
    if why := provider_name_problem(settings.oidc_provider_name):
        return f"SEALTRAIL_OIDC_PROVIDER_NAME {why}"
    if not any(
        getattr(settings, f"oidc_{role}_groups").strip() for role in ("admin", "exporter", "reader")
    ):
        return (
            "SEALTRAIL_OIDC_ISSUER is set: list the groups admitted in SEALTRAIL_OIDC_ADMIN_GROUPS,"
            " _EXPORTER_GROUPS or _READER_GROUPS"
        )
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address_problem(address: str) -> str | None:
    """What is wrong with a HOST:PORT to listen on (gRPC read a port out of
    range modulo 65536, and took a lone host for one on port 443)."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not (port.isascii() and port.isdigit()):  # '²' is a digit
        return "not HOST:PORT (a port of 0 picks a free one)"
    if int(port) > 65535:
        return "the port must be 0 to 65535"
    return None


def _utf_8(text: str) -> bool:
    """Whether `text` holds none of the surrogates bytes that are not UTF-8
    decode to (os.environ's and sys.argv's surrogateescape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _at_in_userinfo(url: str) -> bool:
    """Whether a postgresql:// URL has more than one '@' before its path: libpq
    ends the user and password at the first."""
    scheme, found, rest = url.partition("://")
    if not found or scheme not in ("postgresql", "postgres"):
        return False  # keywords (host=... password=...), which hold an '@' as it is
    return rest.split("/", 1)[0].count("@") > 1


# Settings that take one of a few words.
_CHOICES: dict[str, tuple[str, ...]] = {
    "log_format": ("text", "json"),
    "tenant_erasure": ("admin", "operator"),
    "legal_hold_release": ("admin", "operator"),
}


def _parse(kind: Any, raw: str, name: str) -> Any:
    if name in _CHOICES:
        if raw not in _CHOICES[name]:
            raise SystemExit(
                f"SEALTRAIL_{name.upper()}={raw!r} must be one of {', '.join(_CHOICES[name])}"
            )
        return raw
    try:
        if kind in ("bool", bool):
            if raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
                raise ValueError
            return raw.lower() in ("1", "true", "yes")
        if kind in ("int", int):
            return int(raw)
        if kind in ("float", float):
            return float(raw)
        if "Path" in str(kind):
            return Path(raw).expanduser()
    except ValueError:
        raise SystemExit(f"SEALTRAIL_{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
