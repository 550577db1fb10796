"""Settings refuse, at start, counts that would break the server."""

from __future__ import annotations

import pytest

from sealtrail_server.config import Settings

COUNTS = [
    "APPEND_BATCH_EVENTS",
    "STREAM_QUEUE_CAPACITY",
    "STREAM_STALL_BYTES",  # 0 would end every stream that waited to write
    "RETENTION_BATCH_EVENTS",
    "EXPORT_RATE_LIMIT",  # 0 refused every export (helper-125)
    "EXPORT_MAX_PER_TENANT",  # 0 would refuse every export
    "EXPORT_MAX_PER_PROCESS",
    "MAX_CONNECTIONS",  # 0 refused every connection
]


@pytest.mark.parametrize("name", COUNTS)
def test_a_count_of_zero_is_refused_by_name(name: str) -> None:
    with pytest.raises(SystemExit, match=f"SEALTRAIL_{name} must be at least 1"):
        Settings.load({f"SEALTRAIL_{name}": "0"})
    assert getattr(Settings.load({f"SEALTRAIL_{name}": "1"}), name.lower()) == 1


def test_the_exports_open_at_once_are_settings_with_the_limits_as_they_were() -> None:
    """4 a tenant and 50 a process were constants of the code (helper-209)."""
    settings = Settings.load({})
    assert (settings.export_max_per_tenant, settings.export_max_per_process) == (4, 50)
    env = {"SEALTRAIL_EXPORT_MAX_PER_TENANT": "2", "SEALTRAIL_EXPORT_MAX_PER_PROCESS": "7"}
    settings = Settings.load(env)
    assert (settings.export_max_per_tenant, settings.export_max_per_process) == (2, 7)
    with pytest.raises(SystemExit, match=r"SEALTRAIL_EXPORT_MAX_PER_TENANT='x' is not a valid"):
        Settings.load({"SEALTRAIL_EXPORT_MAX_PER_TENANT": "x"})


def test_an_export_stalled_for_five_minutes_is_ended_by_default() -> None:
    """A bound of the time a stopped reader holds its export (ADR 0072); past
    a day it would bound nothing."""
    assert Settings.load({}).export_stall_seconds == 300
    assert Settings.load({"SEALTRAIL_EXPORT_STALL_SECONDS": "0.5"}).export_stall_seconds == 0.5
    with pytest.raises(SystemExit, match="SEALTRAIL_EXPORT_STALL_SECONDS must be at most 86400"):
        Settings.load({"SEALTRAIL_EXPORT_STALL_SECONDS": "86401"})


def test_a_count_given_as_an_override_is_checked_too() -> None:
    with pytest.raises(SystemExit, match="SEALTRAIL_RETENTION_BATCH_EVENTS must be at least 1"):
        Settings.load({}, retention_batch_events=-5)


@pytest.mark.parametrize(("max_size", "min_size"), [("1", "1"), ("3", "4")])
def test_a_pool_too_small_for_a_change_and_its_record_is_refused(
    max_size: str, min_size: str
) -> None:
    env = {"SEALTRAIL_POOL_MAX_SIZE": max_size, "SEALTRAIL_POOL_MIN_SIZE": min_size}
    with pytest.raises(SystemExit, match="SEALTRAIL_POOL_MAX_SIZE must be at least 2"):
        Settings.load(env)


@pytest.mark.parametrize("raw", ["-1", "nan", "inf"])
@pytest.mark.parametrize("name", ["RETENTION_INTERVAL", "CHECKPOINT_INTERVAL", "APPEND_MAX_WAIT"])
def test_seconds_below_zero_or_not_finite_are_refused_by_name(name: str, raw: str) -> None:
    """A negative interval used to pass for 0 (off) without a word."""
    with pytest.raises(SystemExit, match=f"SEALTRAIL_{name} must be 0 or more seconds"):
        Settings.load({f"SEALTRAIL_{name}": raw})
    assert getattr(Settings.load({f"SEALTRAIL_{name}": "0"}), name.lower()) == 0


@pytest.mark.parametrize(
    "name",
    [
        "STREAM_HEARTBEAT_SECONDS",
        "FORWARD_POLL_INTERVAL",
        "CONNECTION_IDLE_SECONDS",
        "EXPORT_STALL_SECONDS",  # every export ended at its first chunk
    ],
)
def test_seconds_that_zero_would_make_a_loop_of_are_refused_at_zero(name: str) -> None:
    with pytest.raises(SystemExit, match=f"SEALTRAIL_{name} must be more than 0 seconds"):
        Settings.load({f"SEALTRAIL_{name}": "0"})


@pytest.mark.parametrize("raw", ["1e300", "86401"])
@pytest.mark.parametrize(
    "name", ["FORWARD_LEASE_SECONDS", "EXPORT_RATE_WINDOW", "CONNECTION_IDLE_SECONDS"]
)
def test_seconds_that_reach_a_database_interval_past_a_day_are_refused(name: str, raw: str) -> None:
    """A lease of 1e300 s passed, then every sink's and alert rule's claim
    failed with "timestamp out of range": nothing forwarded, no alert fired
    (helper-157); an export window so long failed every export alike."""
    with pytest.raises(SystemExit, match=f"SEALTRAIL_{name} must be at most 86400 seconds"):
        Settings.load({f"SEALTRAIL_{name}": raw})
    assert getattr(Settings.load({f"SEALTRAIL_{name}": "86400"}), name.lower()) == 86400


def test_a_key_read_window_past_a_day_is_refused() -> None:
    """1e12 seconds passed, then every GetEvent failed with INTERNAL: the
    window's end lay past the year 9999."""
    with pytest.raises(SystemExit, match="SEALTRAIL_KEY_READ_WINDOW must be at most 86400"):
        Settings.load({"SEALTRAIL_KEY_READ_WINDOW": "1e12"})
    assert Settings.load({"SEALTRAIL_KEY_READ_WINDOW": "0"}).key_read_window == 0


def test_a_count_timeout_is_more_than_zero_and_at_most_a_day() -> None:
    """0 would refuse every count; past 24.8 days PostgreSQL refuses the
    statement timeout itself, and every count failed."""
    assert Settings.load({}).count_timeout == 30
    assert Settings.load({"SEALTRAIL_COUNT_TIMEOUT": "2.5"}).count_timeout == 2.5
    with pytest.raises(SystemExit, match="SEALTRAIL_COUNT_TIMEOUT must be more than 0 seconds"):
        Settings.load({"SEALTRAIL_COUNT_TIMEOUT": "0"})
    with pytest.raises(SystemExit, match="SEALTRAIL_COUNT_TIMEOUT must be at most 86400"):
        Settings.load({"SEALTRAIL_COUNT_TIMEOUT": "3e6"})


def test_the_console_sessions_recheck_is_five_minutes_0_for_never_and_at_most_a_day() -> None:
    """It reaches a database interval (a session's next check): past a day
    it would fail every call of a session signed in through the provider."""
    assert Settings.load({}).oidc_recheck_seconds == 300
    assert Settings.load({"SEALTRAIL_OIDC_RECHECK_SECONDS": "0"}).oidc_recheck_seconds == 0
    with pytest.raises(SystemExit, match="SEALTRAIL_OIDC_RECHECK_SECONDS must be 0 or more"):
        Settings.load({"SEALTRAIL_OIDC_RECHECK_SECONDS": "-1"})
    with pytest.raises(SystemExit, match="SEALTRAIL_OIDC_RECHECK_SECONDS must be at most 86400"):
        Settings.load({"SEALTRAIL_OIDC_RECHECK_SECONDS": "1e300"})


def test_migrations_out_of_order_are_refused_unless_allowed() -> None:
    assert Settings.load({}).migrations_out_of_order is False
    allowed = Settings.load({"SEALTRAIL_MIGRATIONS_OUT_OF_ORDER": "true"})
    assert allowed.migrations_out_of_order is True


def test_migration_lock_attempts_take_0_for_no_limit_and_refuse_fewer() -> None:
    assert Settings.load({}).migration_lock_attempts == 12
    assert Settings.load({"SEALTRAIL_MIGRATION_LOCK_ATTEMPTS": "0"}).migration_lock_attempts == 0
    with pytest.raises(SystemExit, match="SEALTRAIL_MIGRATION_LOCK_ATTEMPTS must be 0 or more"):
        Settings.load({"SEALTRAIL_MIGRATION_LOCK_ATTEMPTS": "-1"})


@pytest.mark.parametrize("name", ["POOL_MIN_SIZE", "FORWARD_MAX_SINKS", "ALERT_MAX_TENANTS"])
def test_a_count_for_which_zero_means_none_refuses_less(name: str) -> None:
    """-1 sinks or tenants used to pass for none without a word (helper-125)."""
    assert getattr(Settings.load({f"SEALTRAIL_{name}": "0"}), name.lower()) == 0
    with pytest.raises(SystemExit, match=f"SEALTRAIL_{name} must be 0 or more"):
        Settings.load({f"SEALTRAIL_{name}": "-1"})


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1:70000", "the port must be 0 to 65535"),  # gRPC served on 4464
        ("localhost", "not HOST:PORT"),  # gRPC served on 443
        (":8080", "not HOST:PORT"),
        ("localhost:http", "not HOST:PORT"),
        ("127.0.0.1:²", "not HOST:PORT"),  # a digit to isdigit(), not to int() (helper-140)
    ],
)
@pytest.mark.parametrize("name", ["LISTEN", "CONSOLE_LISTEN"])
def test_an_address_to_listen_on_is_host_and_port(name: str, address: str, why: str) -> None:
    with pytest.raises(SystemExit, match=f"SEALTRAIL_{name}='{address}': {why}"):
        Settings.load({f"SEALTRAIL_{name}": address})
    for good in ("127.0.0.1:0", "[::1]:50051", "0.0.0.0:65535"):
        assert getattr(Settings.load({f"SEALTRAIL_{name}": good}), name.lower()) == good


@pytest.mark.parametrize("name", ["SIGNING_KEY", "REDACTION_KEY", "SECRETS_KEY"])
def test_a_key_given_both_as_text_and_as_a_file_is_refused(name: str) -> None:
    """The text won, and the file named beside it was never read."""
    env = {f"SEALTRAIL_{name}": "x", f"SEALTRAIL_{name}_FILE": "/etc/hostname"}
    with pytest.raises(
        SystemExit, match=f"set SEALTRAIL_{name} or SEALTRAIL_{name}_FILE, not both"
    ):
        Settings.load(env)


@pytest.mark.parametrize("origin", ["my log", "log+1", "log\x1b[2J", "log\x9b"])
def test_a_log_origin_that_cannot_name_a_key_is_refused(origin: str) -> None:
    with pytest.raises(SystemExit, match="SEALTRAIL_LOG_ORIGIN must be non-empty"):
        Settings.load({"SEALTRAIL_LOG_ORIGIN": origin})


def test_storing_no_tree_nodes_cannot_be_set_from_the_environment() -> None:
    """SEALTRAIL_STORE_TREE_NODES=false, the bench's and documented nowhere,
    left every event appended meanwhile without its Merkle nodes: VerifyLog
    reported tampering and no checkpoint could be signed again, for good
    (helper-157). Only the bench turns it off, as an override."""
    assert Settings.load({"SEALTRAIL_STORE_TREE_NODES": "false"}).store_tree_nodes is True
    assert Settings.load({}, store_tree_nodes=False).store_tree_nodes is False


@pytest.mark.parametrize("raw", ["-1", "36501", "30d"])
def test_a_retention_floor_that_is_not_a_number_of_days_is_refused_by_name(raw: str) -> None:
    with pytest.raises(SystemExit, match="SEALTRAIL_RETENTION_MIN_DAYS"):
        Settings.load({"SEALTRAIL_RETENTION_MIN_DAYS": raw})
    assert Settings.load({"SEALTRAIL_RETENTION_MIN_DAYS": "90"}).retention_min_days == 90
    assert Settings.load({}).retention_min_days == 0  # no floor


def test_who_erases_tenants_is_admin_or_operator() -> None:
    with pytest.raises(SystemExit, match="SEALTRAIL_TENANT_ERASURE='tenant' must be one of"):
        Settings.load({"SEALTRAIL_TENANT_ERASURE": "tenant"})
    assert Settings.load({}).tenant_erasure == "admin"  # as before
    assert Settings.load({"SEALTRAIL_TENANT_ERASURE": "operator"}).tenant_erasure == "operator"


def test_who_releases_legal_holds_is_admin_or_operator() -> None:
    with pytest.raises(SystemExit, match="SEALTRAIL_LEGAL_HOLD_RELEASE='nobody' must be one of"):
        Settings.load({"SEALTRAIL_LEGAL_HOLD_RELEASE": "nobody"})
    assert Settings.load({}).legal_hold_release == "admin"  # as before
    assert Settings.load({"SEALTRAIL_LEGAL_HOLD_RELEASE": "operator"}).legal_hold_release == (
        "operator"
    )


@pytest.mark.parametrize(
    "name", ["TRUSTED_PROXIES", "FORWARD_ALLOW_NETWORKS", "FORWARD_DENY_NETWORKS"]
)
@pytest.mark.parametrize("raw", ["10.0.0.0/8, proxy.internal", "10.0.0.1/8", "::1/200"])
def test_a_list_of_networks_naming_no_network_is_refused_by_name(name: str, raw: str) -> None:
    with pytest.raises(SystemExit, match=f"SEALTRAIL_{name}="):
        Settings.load({f"SEALTRAIL_{name}": raw})
    assert getattr(Settings.load({f"SEALTRAIL_{name}": "10.0.0.0/8, 192.0.2.7"}), name.lower())


# Counts written into statements (a LIMIT, a scan's window) or gRPC's options.
LARGE_COUNTS = [
    "FORWARD_MAX_SINKS",
    "ALERT_MAX_TENANTS",
    "RETENTION_BATCH_EVENTS",
    "MAX_CONNECTIONS",
    "POOL_MAX_SIZE",
    "MIGRATION_LOCK_ATTEMPTS",
]


@pytest.mark.parametrize("name", LARGE_COUNTS)
def test_a_count_past_a_32_bit_integer_is_refused_by_name(name: str) -> None:
    """SEALTRAIL_FORWARD_MAX_SINKS=100000000000000000000 started a server
    whose forwarder failed each claim ("bigint out of range") and delivered
    nothing, a traceback logged every poll (helper-296)."""
    with pytest.raises(SystemExit, match=f"SEALTRAIL_{name} must be at most 2147483647"):
        Settings.load({f"SEALTRAIL_{name}": str(2**31)})
    assert getattr(Settings.load({f"SEALTRAIL_{name}": str(2**31 - 1)}), name.lower()) == 2**31 - 1


def test_bytes_may_be_set_past_a_32_bit_integer() -> None:
    """The default in-flight memory, 2 GiB, is past one already."""
    assert Settings.load({}).record_max_in_flight_bytes == 2**31
    big = Settings.load({"SEALTRAIL_APPEND_MAX_PENDING_BYTES": str(2**40)})
    assert big.append_max_pending_bytes == 2**40


def test_a_query_timeout_is_more_than_zero_and_at_most_a_day() -> None:
    """0 would refuse every filtered page; past 24.8 days PostgreSQL refuses
    the statement timeout itself, and every filtered page failed."""
    assert Settings.load({}).query_timeout == 30
    assert Settings.load({"SEALTRAIL_QUERY_TIMEOUT": "2.5"}).query_timeout == 2.5
    with pytest.raises(SystemExit, match="SEALTRAIL_QUERY_TIMEOUT must be more than 0 seconds"):
        Settings.load({"SEALTRAIL_QUERY_TIMEOUT": "0"})
    with pytest.raises(SystemExit, match="SEALTRAIL_QUERY_TIMEOUT must be at most 86400"):
        Settings.load({"SEALTRAIL_QUERY_TIMEOUT": "3e6"})


@pytest.mark.parametrize(
    "raw", ["*", "*.example.com", "http://audit.example.com", "audit.example.com:x", "::1", "a b"]
)
def test_a_console_host_that_is_no_host_port_is_refused_at_start(raw: str) -> None:
    """Else it matched no request, and the console refused every one unsaid (ADR 0102)."""
    env = {"SEALTRAIL_CONSOLE_ALLOWED_HOSTS": f"localhost:8443, {raw}"}
    with pytest.raises(
        SystemExit, match=r"SEALTRAIL_CONSOLE_ALLOWED_HOSTS: .* \(host or host:port\)"
    ):
        Settings.load(env)
    assert Settings.load({"SEALTRAIL_CONSOLE_ALLOWED_HOSTS": " a.example., [::1]:80 ,"})


def test_the_clock_skew_bound_is_2_seconds_0_for_none_and_at_most_a_day() -> None:
    """SEALTRAIL_MAX_CLOCK_SKEW (ADR 0138): 0 turns the refusal off; below
    0, not finite, or past a day is refused naming it."""
    assert Settings.load({}).max_clock_skew == 2.0
    assert Settings.load({"SEALTRAIL_MAX_CLOCK_SKEW": "0"}).max_clock_skew == 0
    assert Settings.load({"SEALTRAIL_MAX_CLOCK_SKEW": "0.5"}).max_clock_skew == 0.5
    for raw in ("-1", "nan"):
        with pytest.raises(SystemExit, match="SEALTRAIL_MAX_CLOCK_SKEW must be 0 or more seconds"):
            Settings.load({"SEALTRAIL_MAX_CLOCK_SKEW": raw})
    with pytest.raises(SystemExit, match="SEALTRAIL_MAX_CLOCK_SKEW must be at most 86400"):
        Settings.load({"SEALTRAIL_MAX_CLOCK_SKEW": "86401"})
