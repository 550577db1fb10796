"""The CLI's time parser and how options become filters and events; no server involved."""

from __future__ import annotations

import io
import json
import signal
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import click
import grpc
import pytest
from click.testing import CliRunner
from google.protobuf import json_format, timestamp_pb2
from opentelemetry import trace

import sealtrail
from sealtrail import RecordResult, build_event, build_filter
from sealtrail import _cli as cli
from sealtrail import _client as client_module
from sealtrail._cli_import import _with_full_enum_names
from sealtrail._cli_ranges import PeriodParam, SeqRangeParam
from sealtrail._convert import (
    BatchEntryResult,
    NanosecondTime,
    batch_request,
    enum_value,
    record_request,
)
from sealtrail.v1 import audit_service_pb2, event_pb2
from sealtrail_server.config import Settings

NOW = datetime(2026, 11, 22, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T10:00:00Z", datetime(2026, 11, 22, 10, tzinfo=UTC)),
        ("2026-11-22T12:00:00+02:00", datetime(2026, 11, 22, 10, tzinfo=UTC)),
        ("2026-11-22T10:00:00.250Z", datetime(2026, 11, 22, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2026-11-22", datetime(2026, 11, 22, tzinfo=UTC)),
        ("15m", NOW - timedelta(minutes=15)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("45s", NOW - timedelta(seconds=45)),
        # The units of every other duration option (`_durations.span_parts`).
        ("2w", NOW - timedelta(weeks=2)),
        ("1y", NOW - timedelta(days=365)),
        ("now", NOW),
    ],
)
def test_parse_time_accepts_timestamps_dates_and_durations(text: str, expected: datetime) -> None:
    parsed = cli.parse_time(text, now=NOW)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["yesterday", "2026-11-22T10:00:00", "15", "-5m", "2026-13-01"])
def test_parse_time_rejects_ambiguous_or_unknown_input(text: str) -> None:
    with pytest.raises(ValueError):
        cli.parse_time(text, now=NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22t10:00:00z", datetime(2026, 11, 22, 10, tzinfo=UTC)),
        ("2026-11-22T10:00:00.250z", datetime(2026, 11, 22, 10, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_rfc_3339_lower_case_t_and_z_are_read_as_capitals(text: str, expected: datetime) -> None:
    """RFC 3339 (5.6) lets T and Z be written t and z. A lower-case z was
    refused, --since '...z' told it "is not an RFC 3339 time", which it is."""
    assert cli.parse_time(text) == expected
    nanos = cli.parse_time("2026-11-22t10:00:00.123456789z")
    assert _sent(nanos) == (1_795_341_600, 123456789)


def test_a_time_typed_to_the_nanosecond_is_sent_to_the_nanosecond() -> None:
    """A datetime holds microseconds: the digits past them were dropped, so
    the API's own rule for a bound between two microseconds never applied
    (helper-204). The ninth digit is the last a Timestamp holds."""
    since = cli.parse_time("2025-11-24T17:00:00.0000015+01:00")
    until = cli.parse_time("2025-11-24T16:00:00.123456789Z")
    sent = build_filter(since=since, until=until)
    assert (sent.occurred_after.seconds, sent.occurred_after.nanos) == (1_764_000_000, 1500)
    assert (sent.occurred_before.seconds, sent.occurred_before.nanos) == (1_764_000_000, 123456789)
    # A datetime as before, and 500 ns past its microsecond (helper-215).
    assert isinstance(since, NanosecondTime) and since.nanosecond == 500
    assert since.replace(nanosecond=0) == datetime(2025, 11, 24, 16, 0, 0, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="nanosecond"):
        cli.parse_time("2025-11-24T16:00:00.1234567891Z")


def _sent(moment: datetime) -> tuple[int, int]:
    stamp = build_filter(since=moment).occurred_after
    return stamp.seconds, stamp.nanos


def test_an_iso_8601_decimal_comma_keeps_its_nanoseconds_too() -> None:
    """`16:00:00,123456789Z` (ISO 8601's decimal comma, which fromisoformat
    takes) was cut to 16:00:00.123456 without a word: only the RFC 3339 form
    with a point was read to the nanosecond, and a tenth digit was not
    refused either (helper-215)."""
    assert _sent(cli.parse_time("2025-11-24T16:00:00,123456789Z")) == (1_764_000_000, 123456789)
    assert _sent(cli.parse_time("2025-11-24 16:00:00,0000015Z")) == (1_764_000_000, 1500)
    with pytest.raises(ValueError, match="nanosecond"):
        cli.parse_time("2025-11-24T16:00:00,1234567891Z")


@pytest.mark.parametrize(
    "text",
    [
        "2025-11-24T18:00:00.123456789+0200",
        "2025-11-24T18:00:00.123456789+02",
        "2025-11-24T18:00:00.123456789+02:00:00",
        "2025-11-24T16:00:00.123456789-0000",
        "20251124T160000.123456789Z",
        "2025-W48-1T16:00:00.123456789Z",
    ],
)
def test_digits_past_the_microsecond_in_another_iso_form_are_refused_not_cut(text: str) -> None:
    """fromisoformat reads these ISO 8601 forms, and cut each to the
    microsecond without a word (a bound then the earlier microsecond, where
    the API takes the later): RFC 3339's form, in which the CLI reads the
    nanoseconds, is asked for instead (helper-215)."""
    with pytest.raises(ValueError, match="RFC 3339"):
        cli.parse_time(text)


def test_a_utc_offset_with_a_fraction_of_a_second_reaches_the_timestamp_whole() -> None:
    """ISO 8601 offsets may have seconds and their fraction, and Timestamp's
    FromDatetime added the local time's microseconds to the UTC second: the
    offset's fraction went missing (here half a second, then a microsecond).
    Python 3.11's fromisoformat reads an offset of a fraction alone
    (+00:00:00.5) as none: the CLI refuses such offsets, RFC 3339 has none
    (helper-215)."""
    half = timezone(timedelta(hours=2, seconds=30, microseconds=500_000))
    assert _sent(datetime(2025, 11, 24, 16, 0, 0, 250_000, tzinfo=half)) == (
        1_763_992_769,
        750_000_000,
    )
    odd = timezone(timedelta(hours=-1, microseconds=1))  # -00:59:59.999999
    assert _sent(datetime(2025, 11, 24, 15, tzinfo=odd)) == (1_763_999_999, 999_999_000)
    for text in ("2025-11-24T16:00:00.25+00:00:00.5", "2025-11-24T16:00:00.25+02:00:30.5"):
        with pytest.raises(ValueError, match="offset"):
            cli.parse_time(text)


def test_a_nanosecond_time_keeps_its_nanoseconds_through_what_a_datetime_does() -> None:
    """A NanosecondTime's astimezone (to another zone), replace and
    timedelta arithmetic made one with no nanoseconds, and it compared
    equal to the microsecond before it, so code handling a bound cut it to
    the earlier microsecond as the API never does (helper-215)."""
    typed = cli.parse_time("2025-11-24T16:00:00.123456789Z")
    assert isinstance(typed, NanosecondTime)
    wire = (1_764_000_000, 123456789)
    paris = timezone(timedelta(hours=1))
    assert _sent(typed.astimezone(paris)) == wire
    assert _sent(typed.astimezone(paris).astimezone(UTC)) == wire
    assert _sent(typed.replace(tzinfo=UTC)) == wire
    assert _sent(typed.replace(tzinfo=paris)) == (1_763_996_400, 123456789)
    assert _sent(typed.replace(microsecond=0)) == (1_764_000_000, 0)
    assert _sent(typed.replace(nanosecond=5)) == (1_764_000_000, 123456005)
    assert _sent(typed + timedelta(hours=1)) == (1_764_003_600, 123456789)
    assert _sent(timedelta(hours=1) + typed) == (1_764_003_600, 123456789)
    assert _sent(typed - timedelta(seconds=1)) == (1_763_999_999, 123456789)
    cut = datetime(2025, 11, 24, 16, 0, 0, 123456, tzinfo=UTC)
    assert typed != cut and cut != typed
    assert cut < typed and typed > cut and typed >= cut and cut <= typed
    assert not typed < cut and not typed <= cut
    assert max(cut, typed) is typed and sorted([typed, cut]) == [cut, typed]
    same = cli.parse_time("2025-11-24T17:00:00.123456789+01:00")
    assert same == typed and hash(same) == hash(typed)
    assert typed.replace(nanosecond=0) == cut and hash(typed.replace(nanosecond=0)) == hash(cut)
    assert typed - cut == timedelta(0)  # a timedelta holds microseconds, as said
    assert typed.isoformat() == "2025-11-24T16:00:00.123456789+00:00"
    assert str(typed.astimezone(paris)) == "2025-11-24 17:00:00.123456789+01:00"


@pytest.mark.parametrize(
    "text", ["\u0663\u0660m", "\uff13\uff10d", "2\u0660\u0662\u0666-01-01", "\u0967w"]
)
def test_a_time_with_digits_other_than_ascii_is_refused_saying_so(text: str) -> None:
    """`--since \u0663\u0660m` (Arabic-Indic digits) went back 30 minutes, and
    `\uff13\uff10d` (full-width) 30 days: a regular expression's `\\d` takes
    any script's digits. Refused, as a date in them was, saying why."""
    with pytest.raises(ValueError, match="its digits must be 0-9"):
        cli.parse_time(text, now=NOW)


@pytest.mark.parametrize("text", ["now", "24h", "2w", "1y"])
def test_a_time_ahead_is_no_duration_of_any_unit(text: str) -> None:
    """`--expires-at 2w` was read as a date and refused as no RFC 3339 time,
    where `--expires-at 24h` was pointed at --expires-in: every unit now."""
    with pytest.raises(click.BadParameter, match="--expires-in"):
        cli._Time(ahead=True).convert(text, None, None)


def test_a_duration_past_the_year_one_is_a_value_error_not_a_crash() -> None:
    for text in ("99999999999d", "800000d", "3000y", "999999999999999999999w"):
        with pytest.raises(ValueError, match="before the year 1"):
            cli.parse_time(text, now=NOW)
    # A time in range but for its offset: no Timestamp can hold it.
    for text in ("0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"):
        with pytest.raises(ValueError, match="before the year 1 or after 9999"):
            cli.parse_time(text, now=NOW)


@pytest.mark.parametrize(
    ("target", "local"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/run/sealtrail.sock", True),
        ("audit.internal:443", False),
        ("10.0.0.7:50051", False),
        ("[2001:db8::1]:50051", False),
        ("dns:///audit.internal:443", False),
    ],
)
def test_only_loopback_and_unix_targets_are_this_machine(target: str, local: bool) -> None:
    assert cli.on_this_machine(target) is local


def test_a_token_is_not_sent_in_plain_text_off_this_machine(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    env = {"SEALTRAIL_SERVER": "audit.internal:443", "SEALTRAIL_TOKEN": "s3cret"}
    refused = CliRunner().invoke(cli.main, ["query"], env=env)
    assert refused.exit_code == 2 and "--tls" in refused.output and "s3cret" not in refused.output
    assert fake_client == []
    local = CliRunner().invoke(cli.main, ["query"], env={**env, "SEALTRAIL_SERVER": "127.0.0.1:1"})
    assert local.exit_code == 0, local.output


@pytest.mark.parametrize(
    ("data_dir", "xdg", "saved"),
    [
        ("/srv/st data", "/x", "'/srv/st data/dev-admin-token'"),
        (None, "/home/a/.data", "/home/a/.data/sealtrail/dev-admin-token"),
        # The server expands ~ in SEALTRAIL_DATA_DIR: $(cat '~/st/...') read no file.
        ("~/st", "/x", "/home/u/st/dev-admin-token"),
    ],
)
def test_no_token_is_said_with_where_one_comes_from(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
    data_dir: str | None,
    xdg: str,
    saved: str,
) -> None:
    """`env -u SEALTRAIL_TOKEN sealtrail query` said `Missing option
    '--token' (or SEALTRAIL_TOKEN).` and no more: not the token `make run`
    saved, nor how one is made (a new user's walkthrough of the README)."""
    env = {
        "SEALTRAIL_SERVER": "127.0.0.1:1",
        "SEALTRAIL_TOKEN": None,
        "SEALTRAIL_DATA_DIR": data_dir,
        "XDG_DATA_HOME": xdg,
        "HOME": "/home/u",
    }
    refused = CliRunner().invoke(cli.main, ["query"], env=env)
    assert refused.exit_code == 2, refused.output
    assert "Missing option '--token' (or SEALTRAIL_TOKEN)." in refused.output
    said = " ".join(refused.output.split())  # as wrapped or not
    assert f"export SEALTRAIL_TOKEN=$(cat {saved})" in said, said
    assert "sealtrail-server token create --tenant TENANT --role ROLE" in said, said
    assert fake_client == []


@pytest.mark.parametrize("token", ["s3cr\u00e9t", "s3cret\n", "s3\x00cret", "s3\x1bcret"])
def test_a_token_no_header_can_carry_is_a_usage_error_not_internal(
    fake_client: list[tuple[str, Any, dict[str, Any]]], token: str
) -> None:
    """gRPC refuses a header value that is not printable ASCII before it is
    sent: such a token (a line break pasted with it) failed every command with
    "INTERNAL: Invalid metadata", as if the server had failed."""
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1"}
    refused = CliRunner().invoke(cli.main, ["--token", token, "query"], env=env)
    assert refused.exit_code == 2, refused.output
    assert "--token (SEALTRAIL_TOKEN) is not a token" in refused.output
    assert "s3" not in refused.output  # the secret is not repeated
    assert fake_client == []


@pytest.mark.parametrize("server", ["127.0.0.1", "localhost", "[::1]"])
def test_a_server_without_a_port_is_a_usage_error_not_a_call_to_port_443(
    fake_client: list[tuple[str, Any, dict[str, Any]]], server: str
) -> None:
    """gRPC dials a lone host on 443, TLS's port: `--server 127.0.0.1` failed
    as "UNAVAILABLE ... 127.0.0.1:443: Connection refused" (helper-196)."""
    env = {"SEALTRAIL_SERVER": server, "SEALTRAIL_TOKEN": "s3cret"}
    refused = CliRunner().invoke(cli.main, ["query"], env=env)
    assert refused.exit_code == 2, refused.output
    assert f"--server {server} (SEALTRAIL_SERVER) has no port" in refused.output
    assert "HOST:PORT" in refused.output
    assert fake_client == []
    for target in (f"{server}:50051", "unix:/run/sealtrail.sock", "dns:///localhost:50051"):
        given = CliRunner().invoke(cli.main, ["--server", target, "--insecure", "query"], env=env)
        assert given.exit_code == 0, (target, given.output)
    opened = [target for call, target, _ in fake_client if call == "open"]
    assert opened == [f"{server}:50051", "unix:/run/sealtrail.sock", "dns:///localhost:50051"]


def test_a_server_without_a_port_over_tls_is_dialled_on_443(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over TLS, gRPC's port for a lone host, 443, is TLS's own (a server
    behind a TLS proxy): it is not refused."""
    opened: list[str] = []

    class Recording(FakeClient):
        def __init__(self, target: str, *, token: str, **connection: Any) -> None:
            opened.append(target)

    monkeypatch.setattr(client_module, "AuditClient", Recording)
    env = {"SEALTRAIL_SERVER": "audit.internal", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(cli.main, ["--tls", "query"], env=env)
    assert result.exit_code == 0, result.output
    assert opened == ["audit.internal"]


def test_a_client_certificate_is_tls_off_this_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """mTLS alone (no --tls, no --ca-file) was refused as plain text, though
    AuditClient sends a client certificate over TLS."""
    opened: list[dict[str, Any]] = []

    class Recording(FakeClient):
        def __init__(self, target: str, *, token: str, **connection: Any) -> None:
            opened.append(connection)

    monkeypatch.setattr(client_module, "AuditClient", Recording)
    cert, key = "-----BEGIN CERTIFICATE-----\n", "-----BEGIN PRIVATE KEY-----\n"
    (tmp_path / "c.pem").write_text(cert)
    (tmp_path / "k.pem").write_text(key)
    env = {"SEALTRAIL_SERVER": "audit.internal:443", "SEALTRAIL_TOKEN": "s3cret"}
    args = ["--cert-file", str(tmp_path / "c.pem"), "--key-file", str(tmp_path / "k.pem"), "query"]
    result = CliRunner().invoke(cli.main, args, env=env)
    assert result.exit_code == 0, result.output
    expected = [(cert.encode(), key.encode())]
    assert [(o["client_certificate"], o["client_key"]) for o in opened] == expected


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("SEALTRAIL_TLS_CA_FILE", "{tmp}/nowhere.pem", "File '{tmp}/nowhere.pem' does not exist"),
        ("SEALTRAIL_CLIENT_CERT_FILE", "{tmp}", "File '{tmp}' is a directory"),
        ("SEALTRAIL_CLIENT_KEY_FILE", "{tmp}/no.key", "File '{tmp}/no.key' does not exist"),
        ("SEALTRAIL_TLS", "maybe", "'maybe' is not a valid boolean"),
        ("SEALTRAIL_INSECURE", "maybe", "'maybe' is not a valid boolean"),
    ],
)
def test_a_bad_value_from_the_environment_names_its_variable(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
    tmp_path: Path,
    variable: str,
    value: str,
    said: str,
) -> None:
    """A bad path (or flag) in SEALTRAIL_TLS_CA_FILE and the other variables
    was refused naming only its option, `Invalid value for '--ca-file'`: one
    not on the command line, set in a profile or a CI job's environment. The
    variable is named too when the value came from it; only the option when
    it came from the command line."""
    option = {
        "SEALTRAIL_TLS_CA_FILE": "--ca-file",
        "SEALTRAIL_CLIENT_CERT_FILE": "--cert-file",
        "SEALTRAIL_CLIENT_KEY_FILE": "--key-file",
        "SEALTRAIL_TLS": "--tls",
        "SEALTRAIL_INSECURE": "--insecure",
    }[variable]
    value, said = value.format(tmp=tmp_path), said.format(tmp=tmp_path)
    (tmp_path / "c.pem").write_text(_PEM)
    (tmp_path / "k.pem").write_text(_PEM)
    # Its partner, where it needs one, given well.
    partners = {
        "SEALTRAIL_CLIENT_CERT_FILE": {"SEALTRAIL_CLIENT_KEY_FILE": str(tmp_path / "k.pem")},
        "SEALTRAIL_CLIENT_KEY_FILE": {"SEALTRAIL_CLIENT_CERT_FILE": str(tmp_path / "c.pem")},
    }
    env = {"SEALTRAIL_TOKEN": "s3cret", variable: value, **partners.get(variable, {})}
    refused = CliRunner().invoke(cli.main, ["query"], env=env)
    assert refused.exit_code == 2, refused.output
    assert f"Invalid value for '{option}' (from {variable}): {said}" in refused.output
    assert fake_client == []
    if option in ("--tls", "--insecure"):
        return  # a flag takes no value on the command line
    given = CliRunner().invoke(cli.main, [option, value, "query"], env={"SEALTRAIL_TOKEN": "s"})
    assert given.exit_code == 2, given.output
    assert f"Invalid value for '{option}': {said}" in given.output


def test_every_option_set_from_the_environment_names_its_variable_when_bad() -> None:
    """Every option with an environment variable, in every command, is one
    whose bad value from there names the variable (a new one included)."""

    def options(command: click.Command) -> Iterator[click.Parameter]:
        yield from command.params
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                yield from options(sub)

    with_a_variable = [param for param in options(cli.main) if param.envvar]
    assert len(with_a_variable) >= 7
    assert [p.name for p in with_a_variable if not isinstance(p, cli._Option)] == []


# What the CLI takes as PEM (gRPC reads it when it connects).
_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("option", "variable"),
    [
        ("--ca-file", "SEALTRAIL_TLS_CA_FILE"),
        ("--cert-file", "SEALTRAIL_CLIENT_CERT_FILE"),
        ("--key-file", "SEALTRAIL_CLIENT_KEY_FILE"),
    ],
)
def test_a_tls_file_that_is_not_pem_is_refused_naming_it(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
    tmp_path: Path,
    option: str,
    variable: str,
) -> None:
    """A CA, certificate or key file that is not PEM (DER, a file given in its
    place) was taken: gRPC then logged its own errors ("Cannot load server
    root certificates", "Handshaker factory creation failed") and the call
    failed UNAVAILABLE, "failed to connect to all addresses", as if the
    server were down. It is refused before any call, naming the file (and
    the variable it came from)."""
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x01\x0a")
    pem = tmp_path / "good.pem"
    pem.write_text(_PEM)
    given = {"--ca-file": pem, "--cert-file": pem, "--key-file": pem} | {option: der}
    env = {"SEALTRAIL_TOKEN": "s3cret", variable: str(der)}
    args = [
        flag_value
        for flag, path in given.items()
        if flag != option
        for flag_value in (flag, str(path))
    ]
    refused = CliRunner().invoke(cli.main, [*args, "query"], env=env)
    assert refused.exit_code == 2, refused.output
    assert f"Invalid value for '{option}' (from {variable}): {der} is not PEM" in refused.output
    refused = CliRunner().invoke(
        cli.main, [*args, option, str(der), "query"], env={"SEALTRAIL_TOKEN": "s"}
    )
    assert refused.exit_code == 2, refused.output
    assert f"Invalid value for '{option}': {der} is not PEM" in refused.output
    assert fake_client == []


def test_a_client_certificate_without_its_key_names_the_variable_it_came_from(
    fake_client: list[tuple[str, Any, dict[str, Any]]], tmp_path: Path
) -> None:
    """A client certificate in SEALTRAIL_CLIENT_CERT_FILE, without its key, was
    refused as `--cert-file and --key-file go together.`, naming an option
    the command did not have."""
    (tmp_path / "c.pem").write_text(_PEM)
    env = {"SEALTRAIL_TOKEN": "s3cret", "SEALTRAIL_CLIENT_CERT_FILE": str(tmp_path / "c.pem")}
    refused = CliRunner().invoke(cli.main, ["query"], env=env)
    assert refused.exit_code == 2, refused.output
    assert (
        "--cert-file (from SEALTRAIL_CLIENT_CERT_FILE) and --key-file go together."
        in refused.output
    )
    given = CliRunner().invoke(cli.main, ["--key-file", str(tmp_path / "c.pem"), "query"])
    assert given.exit_code == 2, given.output
    assert "Error: --cert-file and --key-file go together." in given.output
    assert fake_client == []


def test_a_query_cut_short_by_its_limit_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    events = [event_pb2.Event(seq=seq) for seq in (3, 2, 1)]
    assert [event.seq for event in cli._at_most(events, 2)] == [3, 2]
    assert "more events match" in capsys.readouterr().err
    assert [event.seq for event in cli._at_most(events, 3)] == [3, 2, 1]
    assert capsys.readouterr().err == ""


def test_build_filter_maps_every_criterion() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    until = datetime(2026, 11, 2, 1, tzinfo=timezone(timedelta(hours=1)))
    built = build_filter(
        actions=["api_key.*", "member.invite"],
        actor="alice@example.com",
        resource_type="api_key",
        resource_id="k_1",
        categories=["security", "data_access"],
        min_severity="warning",
        outcomes="denied",
        since=since,
        until=until,
        request_id="r_1",
        trace_id="t_1",
        text="rotate -test",
    )
    assert built == event_pb2.EventFilter(
        actions=["api_key.*", "member.invite"],
        actor="alice@example.com",
        resource_type="api_key",
        resource_id="k_1",
        categories=[event_pb2.CATEGORY_SECURITY, event_pb2.CATEGORY_DATA_ACCESS],
        min_severity=event_pb2.SEVERITY_WARNING,
        outcomes=[event_pb2.OUTCOME_DENIED],
        occurred_after=timestamp_pb2.Timestamp(seconds=int(since.timestamp())),
        occurred_before=timestamp_pb2.Timestamp(seconds=int(since.timestamp()) + 86400),
        request_id="r_1",
        trace_id="t_1",
        text="rotate -test",
    )


def test_build_filter_without_criteria_matches_everything() -> None:
    assert build_filter() == event_pb2.EventFilter()


def test_build_filter_names_the_field_of_an_unknown_enum_value() -> None:
    with pytest.raises(ValueError, match="categories: unknown value 'secret'"):
        build_filter(categories=["security", "secret"])
    with pytest.raises(ValueError, match="since: datetime must be timezone-aware"):
        build_filter(since=datetime(2026, 11, 1))


def test_an_integer_a_json_number_would_round_is_refused_where_it_is() -> None:
    with pytest.raises(ValueError, match=r"details\.a\.b\[1\]: 9007199254740993 is beyond"):
        build_event(action="a.b", actor_id="u", details={"a": {"b": [1, 2**53 + 1]}})
    with pytest.raises(ValueError, match=r"changes\[quota\]\.after: -9007199254740993"):
        build_event(action="a.b", actor_id="u", changes=[("quota", 1, -(2**53) - 1)])
    with pytest.raises(ValueError, match=r"details\.x: nan is not a JSON number"):
        build_event(action="a.b", actor_id="u", details={"x": float("nan")})
    event = build_event(action="a.b", actor_id="u", details={"n": 2**53, "t": True})
    assert json_format.MessageToDict(event.details) == {"n": float(2**53), "t": True}


def test_objects_and_arrays_nest_no_deeper_than_the_service_takes() -> None:
    """Deeper, an event could not even be copied (protobuf's decoding limit):
    a DecodeError traceback, where the service names the field."""

    def nested(levels: int) -> Any:
        value: Any = 1
        for _ in range(levels):
            value = {"a": value}
        return value

    build_event(action="a.b", actor_id="u", details=nested(32))
    with pytest.raises(ValueError, match=r"details(\.a){32}: nests deeper than 32 levels"):
        build_event(action="a.b", actor_id="u", details=nested(33))
    build_event(action="a.b", actor_id="u", changes=[("x", [nested(30)], None)])
    with pytest.raises(ValueError, match=r"changes\[x\]\.before\[0\](\.a){30}: nests deeper"):
        build_event(action="a.b", actor_id="u", changes=[("x", [nested(31)], None)])
    deep = event_pb2.Event(action="a.b")  # built by hand, past build_event's check
    json_format.ParseDict(nested(60), deep.details, max_recursion_depth=200)
    with pytest.raises(ValueError, match="nest at most 32 levels"):
        record_request(deep)
    with pytest.raises(ValueError, match="nest at most 32 levels"):
        batch_request([deep])


class FakeClient:
    """Stands in for AuditClient and keeps what the CLI asked of it."""

    calls: ClassVar[list[tuple[str, Any, dict[str, Any]]]] = []

    def __init__(self, target: str, *, token: str, **connection: Any) -> None:
        assert connection == {
            "tls": False,
            "root_certificates": None,
            "client_certificate": None,
            "client_key": None,
        }  # no TLS option given
        self.calls.append(("open", target, {"token": token}))

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def query(self, event_filter: event_pb2.EventFilter, **kw: Any) -> Iterator[event_pb2.Event]:
        self.calls.append(("query", event_filter, kw))
        yield event_pb2.Event(seq=3, action="api_key.create")

    def record(self, event: event_pb2.Event) -> RecordResult:
        # With the trace its call would carry (the CLI's environment's).
        context = trace.get_current_span().get_span_context()
        self.calls.append(("record", event, {"trace_id": context.trace_id}))
        return RecordResult(event=event, deduplicated=False)

    def record_batch(self, events: list[event_pb2.Event]) -> list[Any]:
        self.calls.append(("record_batch", list(events), {}))
        return [BatchEntryResult(event=event, error=None, deduplicated=False) for event in events]

    def hash_secret(self, value: str) -> str:
        self.calls.append(("hash_secret", value, {}))
        return "hmac-sha256:00"

    def stream(self, event_filter: event_pb2.EventFilter, **kw: Any) -> Iterator[event_pb2.Event]:
        self.calls.append(("stream", event_filter, kw))
        yield event_pb2.Event(seq=4, action="api_key.delete")

    def export(self, path: Any, **kw: Any) -> audit_service_pb2.ExportManifest:
        self.calls.append(("export", kw.pop("filter"), {"format": kw["format"]}))
        return audit_service_pb2.ExportManifest(row_count=1)


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, dict[str, Any]]]:
    FakeClient.calls = []
    monkeypatch.setattr(client_module, "AuditClient", FakeClient)
    return FakeClient.calls


def invoke(*args: str) -> Any:
    env = {
        "SEALTRAIL_SERVER": "audit.internal:443",
        "SEALTRAIL_TOKEN": "s3cret",
        "SEALTRAIL_INSECURE": "1",  # what these check is the mapping, not the channel
    }
    return CliRunner().invoke(cli.main, list(args), env=env)


def test_query_options_become_a_filter(fake_client: list[tuple[str, Any, dict[str, Any]]]) -> None:
    result = invoke(
        "query",
        "--action", "api_key.*",
        "--action", "member.invite",
        "--category", "security",
        "--severity", "error",
        "--outcome", "denied",
        "--since", "2026-11-22",
        "--search", "rotate",
        "--limit", "5",
        "--order", "oldest",
        "--format", "jsonl",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert fake_client[0] == ("open", "audit.internal:443", {"token": "s3cret"})
    _, event_filter, kw = fake_client[1]
    assert event_filter == event_pb2.EventFilter(
        actions=["api_key.*", "member.invite"],
        categories=[event_pb2.CATEGORY_SECURITY],
        min_severity=event_pb2.SEVERITY_ERROR,
        outcomes=[event_pb2.OUTCOME_DENIED],
        occurred_after=timestamp_pb2.Timestamp(
            seconds=int(datetime(2026, 11, 22, tzinfo=UTC).timestamp())
        ),
        text="rotate",
    )
    assert kw == {"order": "oldest", "page_size": 6, "limit": 6}  # one more tells of more
    assert result.output == '{"seq": "3", "action": "api_key.create"}\n'


def test_query_limit_0_lists_every_match(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    """A file to import held at most what --limit said, with no way to ask for all."""
    result = invoke("query", "--limit", "0", "--order", "oldest", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert fake_client[1][2] == {"order": "oldest", "page_size": 1000}  # no limit
    assert result.output == '{"seq": "3", "action": "api_key.create"}\n'  # and no "more" note


def test_record_options_become_an_event(fake_client: list[tuple[str, Any, dict[str, Any]]]) -> None:
    result = invoke(
        "record",
        "--action", "api_key.create",
        "--actor-id", "u_1",
        "--actor-type", "api_key",
        "--category", "security",
        "--details", '{"scopes": ["read"]}',
        "--idempotency-key", "k-1",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    _, event, _ = fake_client[1]
    assert event.actor == event_pb2.Actor(id="u_1", type=event_pb2.ACTOR_TYPE_API_KEY)
    assert event.category == event_pb2.CATEGORY_SECURITY
    assert json_format.MessageToDict(event.details) == {"scopes": ["read"]}
    assert event.idempotency_key == "k-1"
    assert result.output == json_format.MessageToJson(event, indent=None) + "\n"


RECORD = ["record", "--action", "a.b", "--actor-id", "u"]


def test_record_changes_are_text_as_given_or_json(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    """A JSON-or-text guess turned 1.10 into 1.1 and one field's 00501 and
    10001 into a text and a number: text is --change, JSON --change-json."""
    result = invoke(
        *RECORD,
        "--change", "version", "1.10", "1.2",
        "--change", "zip", "00501", "true",
        "--change-json", "quota", "10", "20",
        "--change-json", "note", "null", '"hi"',
        "--change-json", "tags", "[]", '["ops"]',
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _, event, _ = fake_client[1]
    assert [json_format.MessageToDict(change) for change in event.changes] == [
        {"field": "version", "before": "1.10", "after": "1.2"},
        {"field": "zip", "before": "00501", "after": "true"},
        {"field": "quota", "before": 10.0, "after": 20.0},
        {"field": "note", "after": "hi"},  # null: there was none
        {"field": "tags", "before": [], "after": ["ops"]},
    ]


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--change-json", "x", "member", "1"], "--change-json"),  # text is quoted in JSON
        (["--change-json", "x", "NaN", "1"], "--change-json"),
        (["--change-json", "x", "12345678901234567890", "1"], "--change-json"),
        (["--change-json", "x", _nested(32), "1"], "--change-json"),  # the service's limit
        (["--change-json", "x", _nested(2000), "1"], "--change-json"),  # Python's own
        (["--details", '{"a":' * 33 + "1" + "}" * 33], "--details"),
        (["--details", '{"a":' * 2000 + "1" + "}" * 2000], "--details"),
    ],
)
def test_a_change_or_details_no_event_carries_is_a_usage_error(
    fake_client: list[tuple[str, Any, dict[str, Any]]], extra: list[str], option: str
) -> None:
    result = invoke(*RECORD, *extra)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 2 and f"'{option}'" in result.output, result.output
    assert fake_client == []


@pytest.mark.parametrize("trace_id", [[], ["--trace-id", ""]], ids=["none", "empty"])
def test_a_span_id_needs_its_trace_id(
    fake_client: list[tuple[str, Any, dict[str, Any]]], trace_id: list[str]
) -> None:
    result = invoke(*RECORD, *trace_id, "--span-id", "00f067aa0ba902b7")
    assert result.exit_code == 2 and "--span-id goes with --trace-id" in result.output
    assert fake_client == []


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("environment", "sent", "warned"),
    [
        ({"TRACEPARENT": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}, int(TRACE_ID, 16), False),
        ({"TRACEPARENT": f"00-{TRACE_ID}-00f067aa0ba902b7-01\n"}, int(TRACE_ID, 16), False),
        ({"TRACEPARENT": "garbage"}, 0, True),
        ({"TRACESTATE": "vendor=1"}, 0, False),  # no trace to carry it
        ({}, 0, False),
    ],
    ids=["valid", "newline", "malformed", "tracestate-alone", "none"],
)
def test_record_carries_the_environments_trace(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
    sent: int,
    warned: bool,
) -> None:
    for name in ("TRACEPARENT", "TRACESTATE"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(
        cli.main,
        RECORD,
        env={"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret", **environment},
    )
    assert result.exit_code == 0, result.output
    assert fake_client[1][2] == {"trace_id": sent}
    assert ("warning: TRACEPARENT is no W3C traceparent" in result.output) is warned
    assert not trace.get_current_span().get_span_context().is_valid  # detached after


@pytest.mark.parametrize(
    ("stdin", "hashed"),
    [
        (b"hunter2\n", "hunter2"),
        (b"hunter2\r\n", "hunter2"),  # saved on Windows
        (b"hunter2", "hunter2"),
        (b"hunter2\n\n", "hunter2\n"),  # one line ending removed, no more
        (b"hunter2\r", "hunter2\r"),  # no line ending
        (b"\xef\xbb\xbfhunter2\r\n", "hunter2"),  # saved by Notepad as UTF-8
        ("caf\u00e9\n".encode(), "caf\u00e9"),
    ],
)
def test_hash_secret_reads_one_line_of_utf8_from_stdin(
    fake_client: list[tuple[str, Any, dict[str, Any]]], stdin: bytes, hashed: str
) -> None:
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(cli.main, ["hash-secret"], input=stdin, env=env)
    assert (result.exit_code, result.output) == (0, "hmac-sha256:00\n")
    assert fake_client[1][:2] == ("hash_secret", hashed)


@pytest.mark.parametrize(("stdin", "error"), [(b"", "no secret"), (b"caf\xe9", "not UTF-8")])
def test_hash_secret_refuses_no_secret_or_one_not_utf8(
    fake_client: list[tuple[str, Any, dict[str, Any]]], stdin: bytes, error: str
) -> None:
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(cli.main, ["hash-secret"], input=stdin, env=env)
    assert result.exit_code == 2 and error in result.output
    assert [call[0] for call in fake_client] == ["open"]


def test_import_sends_batches_of_its_size_without_what_the_service_assigns(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    lines = [
        json.dumps({"id": f"id-{n}", "seq": n, "tenantId": "other", "leafHash": "AAAA",
                    "receivedAt": "2026-01-01T00:00:00Z", "action": "doc.edit",
                    "actor": {"id": "u"}, "idempotencyKey": f"k-{n}"})
        for n in range(5)
    ]  # fmt: skip
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(
        cli.main, ["import", "--batch-size", "2"], input="\n".join(lines) + "\n", env=env
    )
    assert (result.exit_code, result.output) == (0, "recorded 5 events from stdin\n")
    batches = [events for name, events, _ in fake_client if name == "record_batch"]
    assert [len(events) for events in batches] == [2, 2, 1]
    sent = [event for events in batches for event in events]
    assert [event.idempotency_key for event in sent] == [f"k-{n}" for n in range(5)]
    assigned = [(e.id, e.seq, e.tenant_id, e.leaf_hash, e.HasField("received_at")) for e in sent]
    assert assigned == [("", 0, "", b"", False)] * 5


def test_an_import_reads_each_line_as_json_once(
    fake_client: list[tuple[str, Any, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each line was read as JSON to rewrite its enum values, then read again
    by json_format.Parse (and each short enum value looked up by listing its
    enum's names): the better part of an import's time, which ran at half a
    RecordBatch loop's rate."""
    loads = json.loads
    read: list[object] = []

    def counting(text: str | bytes, **options: Any) -> Any:
        read.append(text)
        return loads(text, **options)

    lines = [
        {"action": "member.invite", "actor": {"id": "u", "type": "service"}, "category": "member"},
        {"action": "member.invite", "actor": {"id": "u"}, "severity": "SEVERITY_WARNING"},
        {"action": "member.invite", "actor": {"id": "u"}},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines * 10)
    monkeypatch.setattr(json, "loads", counting)  # json_format's too
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(cli.main, ["import"], input=text, env=env)
    assert (result.exit_code, result.output) == (0, "recorded 30 events from stdin\n")
    assert len(read) == 30  # each line once
    [sent] = [events for name, events, _ in fake_client if name == "record_batch"]
    assert [(e.category, e.actor.type, e.severity) for e in sent[:3]] == [
        (event_pb2.CATEGORY_MEMBER, event_pb2.ACTOR_TYPE_SERVICE, 0),
        (0, 0, event_pb2.SEVERITY_WARNING),
        (0, 0, 0),
    ]


@pytest.mark.parametrize("given", ["short", "x" * 65, "an id: with a colon"])
def test_an_import_id_that_no_import_printed_is_refused(
    fake_client: list[tuple[str, Any, dict[str, Any]]], given: str
) -> None:
    """Its keys would be guessable (a short id), longer than a key's 128
    characters for a long file, or not one an import prints."""
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(cli.main, ["import", "--import-id", given], input="", env=env)
    assert result.exit_code == 2 and "is not an import's id" in result.output
    assert fake_client == []


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        # Its answer may have been lost after the service committed.
        (
            sealtrail.UnavailableError("down", code=grpc.StatusCode.UNAVAILABLE),
            "; lines 4 to 5, sent when it stopped, may have been recorded",
        ),
        # Refused at once, as a whole: nothing of it was written.
        (sealtrail.InvalidArgumentError("down", code=grpc.StatusCode.INVALID_ARGUMENT), ""),
    ],
    ids=["unavailable", "invalid"],
)
def test_an_import_cut_short_says_how_far_it_went(
    monkeypatch: pytest.MonkeyPatch, failure: sealtrail.SealtrailError, said: str
) -> None:
    """Only the error was printed: whoever imports again from where it
    stopped (lines without keys would be recorded twice) had to guess. The
    lines of the call that failed, if it may have recorded them, are named."""

    class FailingSecond(FakeClient):
        def record_batch(self, events: list[event_pb2.Event]) -> list[Any]:
            if any(call[0] == "record_batch" for call in self.calls):
                raise failure
            return super().record_batch(events)

    FakeClient.calls = []
    monkeypatch.setattr(client_module, "AuditClient", FailingSecond)
    lines = "".join(
        json.dumps({"action": "doc.edit", "actor": {"id": "u"}}) + "\n" for _ in range(4)
    )
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(
        cli.main,
        ["import", "--batch-size", "2", "--import-id", "import-of-tests-1"],
        input="\n" + lines,
        env=env,
    )
    assert result.exit_code == (1 if said else 2)  # INVALID_ARGUMENT: a usage error
    assert result.stdout == ""
    assert result.stderr.splitlines()[:2] == [
        # Line 1 is blank.
        "recorded 2 events from stdin; every line up to 3 was dealt with"
        + said
        + "; to go on, import it again with --import-id import-of-tests-1: no line is recorded"
        " twice",
        f"error: {failure.code.name}: down",
    ]


def test_an_import_stopped_by_ctrl_c_says_how_far_it_went(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Interrupted(FakeClient):
        def record_batch(self, events: list[event_pb2.Event]) -> list[Any]:
            if any(call[0] == "record_batch" for call in self.calls):
                raise KeyboardInterrupt
            return super().record_batch(events)

    FakeClient.calls = []
    monkeypatch.setattr(client_module, "AuditClient", Interrupted)
    line = json.dumps({"action": "doc.edit", "actor": {"id": "u"}}) + "\n"
    lines = line * 3
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    args = ["import", "--batch-size", "2", "--import-id", "import-of-tests-1"]
    result = CliRunner().invoke(cli.main, args, input=lines, env=env)
    assert result.exit_code == 130
    assert result.stderr == (
        "recorded 2 events from stdin; every line up to 2 was dealt with;"
        " line 3, sent when it stopped, may have been recorded"  # stopped mid-call
        "; to go on, import it again with --import-id import-of-tests-1: no line is recorded"
        " twice\n"
    )


def test_an_import_names_each_line_refused_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    class Answering(FakeClient):
        def record_batch(self, events: list[event_pb2.Event]) -> list[Any]:
            self.calls.append(("record_batch", list(events), {}))
            results = []
            for index, event in enumerate(events):
                if event.action == "bad":
                    refusal = sealtrail.InvalidArgumentError(
                        "invalid request",
                        code=grpc.StatusCode.INVALID_ARGUMENT,
                        field_violations=[(f"events[{index}].action", "must be dotted")],
                    )
                    results.append(BatchEntryResult(event=None, error=refusal, deduplicated=False))
                else:
                    seen = event.idempotency_key == "seen"
                    results.append(BatchEntryResult(event=event, error=None, deduplicated=seen))
            return results

    FakeClient.calls = []
    monkeypatch.setattr(client_module, "AuditClient", Answering)
    lines = [
        {"action": "doc.edit", "actor": {"id": "u"}},
        {"action": "bad", "actor": {"id": "u"}},
        "not json",
        {"action": "doc.edit", "actor": {"id": "u"}, "idempotencyKey": "seen"},
        {"action": "doc.edit", "actor": {"id": "u"}, "details": {"x": "y" * 600_000}},
        {"action": "bad", "actor": {"id": "u"}},
        "[]",  # json_format.Parse takes it for an empty Event
    ]
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(cli.main, ["import", "--batch-size", "2"], input=text, env=env)
    assert result.exit_code == 3, result.output
    assert result.stdout == (
        "recorded 1 event, 1 event already recorded from stdin; 5 lines refused\n"
    )
    # Each as it is met: a line that is no event as it is read, ahead of its batch.
    assert sorted(line.split(":")[0] for line in result.stderr.splitlines()) == [
        "line 2", "line 3", "line 5", "line 6", "line 7",
    ]  # fmt: skip
    assert "line 2: INVALID_ARGUMENT: action: must be dotted" in result.stderr  # not events[1]
    assert "line 5: 600" in result.stderr and "an event is at most 524288" in result.stderr


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_an_import_of_a_utf16_file_says_it_reads_utf8(
    fake_client: list[tuple[str, Any, dict[str, Any]]], encoding: str
) -> None:
    """`sealtrail query --format jsonl > events.ndjson` in Windows PowerShell
    5.1 writes UTF-16: every line of it was refused, each as "not an Event:
    one JSON object a line", exit 3, though the file looked right."""
    line = json.dumps({"action": "doc.edit", "actor": {"id": "u"}}) + "\r\n"
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    given = (line * 3).encode(encoding)
    result = CliRunner().invoke(cli.main, ["import"], input=given, env=env)
    assert result.exit_code == 2, result.output
    assert "SOURCE is UTF-16 or UTF-32" in result.output
    assert "not an Event" not in result.output
    assert [call[0] for call in fake_client] == ["open"]


@pytest.mark.parametrize("first", ["[", "[]"], ids=["array", "empty-array"])  # []: of nothing
def test_an_import_of_an_exports_json_array_says_what_to_import_instead(
    fake_client: list[tuple[str, Any, dict[str, Any]]], first: str
) -> None:
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(cli.main, ["import"], input=first + "\n", env=env)
    assert result.exit_code == 2 and "a JSON array" in result.output
    assert "export's --format ndjson" in result.output
    assert "query --format jsonl --order oldest" in result.output
    assert [call[0] for call in fake_client] == ["open"]


def test_an_import_refuses_a_stored_record_of_a_version_it_does_not_read(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    """An export's NDJSON is read as the events its records store (version
    1); a record of another version is refused by its line, naming it, not
    as Parse's "no field named v"."""
    actor = {"id": "u", "type": "user"}
    record = {"tenant_id": "t", "seq": 1, "action": "doc.edit", "actor": actor}
    lines = [{"v": 1, **record}, {"v": 2, **record}, {"v": True, **record}]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    env = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(cli.main, ["import"], input=text, env=env)
    assert result.exit_code == 3, result.output
    assert result.stderr.splitlines() == [
        "line 2: a stored record of version 2: this client reads version 1's",
        "line 3: a stored record of version true: this client reads version 1's",
    ]
    [sent] = [events for name, events, _ in fake_client if name == "record_batch"]
    assert [(e.action, e.actor.type, e.tenant_id, e.seq) for e in sent] == [
        ("doc.edit", event_pb2.ACTOR_TYPE_USER, "", 0)
    ]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["query", "--since", "last week"], "--since"),
        (["query", "--category", "secret"], "--category"),
        (["record", "--action", "a.b", "--actor-id", "u", "--details", "{oops"], "--details"),
        (["record", "--action", "a.b", "--actor-id", "u", "--details", "[1]"], "--details"),
        (["record", "--action", "a.b", "--actor-id", "u", "--severity", "huge"], "--severity"),
        (
            ["record", "--action", "a.b", "--actor-id", "u", "--details", '{"n": 2e99999}'],
            "--details",
        ),
        (
            [
                "record",
                "--action",
                "a.b",
                "--actor-id",
                "u",
                "--details",
                '{"id": 9007199254740993}',
            ],
            "--details",
        ),
    ],
)
def test_bad_input_is_a_usage_error_naming_the_option(
    fake_client: list[tuple[str, Any, dict[str, Any]]], args: list[str], option: str
) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert f"'{option}'" in result.output
    assert fake_client == []


def test_a_missing_token_is_a_usage_error(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    result = CliRunner().invoke(cli.main, ["query"], env={"SEALTRAIL_TOKEN": ""})
    assert result.exit_code == 2
    assert "--token" in result.output
    assert fake_client == []


def test_a_command_gives_back_the_signal_handlers_it_took(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    """A command takes SIGTERM and SIGHUP, to clean up as after a Ctrl-C, for
    as long as it runs: run in a process that goes on (a test, a script
    calling main), it leaves them as they were; one ignored (nohup) it
    leaves ignored."""
    before = signal.getsignal(signal.SIGTERM)
    previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    seen: list[Any] = []

    def while_it_runs(criteria: dict[str, Any]) -> event_pb2.EventFilter:
        seen.extend(signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP))
        return build_filter()

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cli, "_filter", while_it_runs)
            result = CliRunner().invoke(cli.main, ["--token", "stk_x", "query"])
        assert result.exit_code == 0, result.output
        assert seen[0] not in (before, signal.SIG_DFL) and seen[1] == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == before
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous_hup)


def test_a_command_runs_where_the_platform_has_no_sighup(
    fake_client: list[tuple[str, Any, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows has SIGTERM but no SIGHUP (the client runs there: an export's
    directory is not synced on it). Every command looked `signal.SIGHUP` up
    to take it, and failed with AttributeError before doing anything; it
    takes SIGTERM alone there."""
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.delattr(signal, "SIGHUP")
    seen: list[Any] = []

    def while_it_runs(criteria: dict[str, Any]) -> event_pb2.EventFilter:
        seen.append(signal.getsignal(signal.SIGTERM))
        return build_filter()

    monkeypatch.setattr(cli, "_filter", while_it_runs)
    result = CliRunner().invoke(cli.main, ["--token", "stk_x", "query"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert seen and seen[0] not in (before, signal.SIG_DFL)
    assert signal.getsignal(signal.SIGTERM) == before


CORRELATION = event_pb2.EventFilter(
    request_id="5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11", trace_id="4bf92f3577b34da6a3ce929d0e0e4736"
)


@pytest.mark.parametrize(
    ("command", "call"),
    [
        (["query"], "query"),
        (["tail", "--from-seq", "0"], "stream"),
        (["export", "--format", "csv", "-o", "{tmp}/out.csv"], "export"),
    ],
)
def test_request_and_trace_ids_filter_query_tail_and_export(
    fake_client: list[tuple[str, Any, dict[str, Any]]],
    command: list[str],
    call: str,
    tmp_path: Path,
) -> None:
    result = invoke(
        *(part.format(tmp=tmp_path) for part in command),
        "--request-id", CORRELATION.request_id,
        "--trace-id", CORRELATION.trace_id,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [entry[:2] for entry in fake_client[1:]] == [(call, CORRELATION)]


def test_a_credential_comes_from_a_file_or_stdin_off_the_command_line(tmp_path: Path) -> None:
    """A sink's token given as its value is in every user's process list."""
    from sealtrail._cli_destination_options import read_credential

    token_file = tmp_path / "hec-token.txt"
    token_file.write_text("hec-0123\n")

    @click.command()
    @click.option("--token", callback=read_credential)
    @click.option("--secret", multiple=True, callback=read_credential)
    def show(token: str | None, secret: tuple[str, ...]) -> None:
        click.echo(f"{token}|{','.join(secret)}")

    runner = CliRunner()
    result = runner.invoke(show, ["--token", f"@{token_file}", "--secret", "-"], input="whsec_a\n")
    assert result.output == "hec-0123|whsec_a\n"
    assert runner.invoke(show, ["--token", "plain"]).output == "plain|\n"
    missing = runner.invoke(show, ["--token", f"@{tmp_path / 'nope'}"])
    assert missing.exit_code == 2 and "cannot read" in missing.output


def test_a_command_that_never_connects_is_not_stopped_by_the_plain_text_guard(
    tmp_path: Path,
) -> None:
    """`sealtrail verify` reads files only: a shell set up for a remote server
    without TLS made it a usage error about a token it never sends."""
    env = {"SEALTRAIL_SERVER": "audit.internal:443", "SEALTRAIL_TOKEN": "s3cret"}
    result = CliRunner().invoke(cli.main, ["verify", str(tmp_path)], env=env)
    assert result.exit_code == 1 and "not this machine" not in result.output


def test_an_error_says_its_reason_details_and_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the code and message were printed: a PURGED stream's resume point
    and the id the server's logs know the call by were lost."""

    class Refusing(FakeClient):
        def query(
            self, event_filter: event_pb2.EventFilter, **kw: Any
        ) -> Iterator[event_pb2.Event]:
            raise sealtrail.RpcFailedError(
                "events up to seq 40 were removed by retention",
                code=grpc.StatusCode.FAILED_PRECONDITION,
                reason="PURGED",
                metadata={"resume_after_seq": "40"},
                request_id="5f0c6a52-5a3e-4d6b-9f7e-2b8f3c1d9e21",
            )

    monkeypatch.setattr(client_module, "AuditClient", Refusing)
    result = invoke("query")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: FAILED_PRECONDITION (PURGED): events up to seq 40 were removed by retention",
        "  resume_after_seq: 40",
        "  request id: 5f0c6a52-5a3e-4d6b-9f7e-2b8f3c1d9e21",
    ]


def test_a_server_that_is_not_there_is_said_with_what_to_do(tmp_path: Path) -> None:
    """A new user whose server is not running, or listens elsewhere, read
    "UNAVAILABLE: failed to connect to all addresses; ... Connection refused"
    and no more: nothing said to start it or where the CLI had looked. A real
    port nothing listens on (bound, never listening) refuses the connection."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        server = f"127.0.0.1:{closed.getsockname()[1]}"
        env = {"SEALTRAIL_SERVER": server, "SEALTRAIL_TOKEN": "s3cret"}
        result = CliRunner().invoke(cli.main, ["query", "--since", "1h"], env=env)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("error: UNAVAILABLE: failed to connect"), lines
    assert (
        f"  no server answers at {server}: start one (make run), or name the address it"
        " listens on with --server (SEALTRAIL_SERVER)"
    ) in lines


@pytest.mark.parametrize(
    "char",
    [
        "\u061c",  # Arabic letter mark
        "\u200b",  # zero-width space
        "\u200d",  # zero-width joiner
        "\u2060",  # word joiner
        "\u2064",  # invisible plus
        "\ufeff",  # byte-order mark
        "\u180e",  # Mongolian vowel separator
        "\u00ad",  # soft hyphen
        "\U000e0041",  # tag latin capital letter A
        "\U000e007f",  # cancel tag
        "\u3164",  # Hangul filler
        "\x85",  # next line (C1)
        "\u2028",  # line separator
    ],
)
def test_terminal_safe_escapes_every_character_that_shows_nothing(char: str) -> None:
    shown = cli.terminal_safe(f"ad{char}min")
    assert shown == "ad" + char.encode("unicode_escape").decode("ascii") + "min"


def test_terminal_safe_keeps_the_letters_of_every_script() -> None:
    text = (
        "Zo\u00eb \u65e5\u672c \u0645\u0631\u062d\u0628\u0627"
        " \u0928\u092e\u0938\u094d\u0924\u0947 e\u0301 \U0001f600"
    )
    assert cli.terminal_safe(text) == text


def test_an_enum_value_of_look_alike_letters_is_refused_naming_the_field() -> None:
    """ "api_\u212aey" (a Kelvin sign) lowers to api_key, and then upper() kept
    the sign: enum.Value raised a ValueError naming nothing, and `sealtrail
    import` died with a traceback, its earlier lines unsent (helper-170)."""
    with pytest.raises(ValueError, match="type: unknown value"):
        enum_value(event_pb2.ActorType, "api_\u212aey", field="type")
    line = b'{"action": "a.b", "actor": {"id": "u", "type": "api_\\u212aey"}}'
    # Its value left as it is, for Parse to refuse, that line alone.
    assert _with_full_enum_names(line) == json.loads(line)


def test_an_import_line_with_a_key_twice_is_left_for_the_parser_to_refuse() -> None:
    """Rewriting a short enum value read the line as a dict, keeping the last
    of a repeated key: a line Parse refuses ("duplicate key") was recorded
    with one of its two actions (helper-170)."""
    line = b'{"action": "member.add", "action": "member.remove", "category": "member"}'
    assert _with_full_enum_names(line) == line


@pytest.mark.parametrize(
    ("given", "since", "until"),
    [
        ("2026-11", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("2028-02-29", datetime(2028, 2, 29, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)),
        ("2026-12-31", datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("2026", datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_period_by_receipt_is_a_utc_year_month_or_day_to_the_next(
    given: str, since: datetime, until: datetime
) -> None:
    assert PeriodParam().convert(given, None, None) == (since, until)


@pytest.mark.parametrize("given", ["2026-11-31", "2026-00", "26-11", "November", "2026-11-5"])
def test_a_period_that_is_no_year_month_or_day_is_refused(given: str) -> None:
    with pytest.raises(click.BadParameter, match="is not a UTC year, month or day"):
        PeriodParam().convert(given, None, None)


@pytest.mark.parametrize(
    ("given", "expected"), [("3-8", (3, 8)), ("1200..3400", (1200, 3400)), ("7-7", (7, 7))]
)
def test_a_seq_range_is_first_and_last_included(given: str, expected: tuple[int, int]) -> None:
    assert SeqRangeParam().convert(given, None, None) == expected


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("8-3", "after the last"),
        ("0-3", "1 or more"),
        ("3", "not FIRST-LAST"),
        ("-3-4", "not"),
        # Past the largest seq a log reaches: no request carries 2**63 (a bare
        # "Value out of range", or a traceback), and no log holds 2**53.
        (f"1-{2**53}", r"the last seq 9007199254740992 is past the largest \(9007199254740991\)"),
        (f"{2**63}-{2**64}", f"the last seq {2**64} is past the largest"),
    ],
)
def test_a_seq_range_out_of_order_or_malformed_is_refused(given: str, says: str) -> None:
    with pytest.raises(click.BadParameter, match=says):
        SeqRangeParam().convert(given, None, None)


@pytest.mark.parametrize("text", ["90d", "12h", "now"])
def test_an_expiry_at_a_duration_is_refused_pointing_at_expires_in(text: str) -> None:
    """`--expires-at 90d` read as 90 days ago, and the server refused "must be
    in the future": a time is asked for, and a duration points at --expires-in
    (helper-176)."""
    result = CliRunner().invoke(
        cli.main,
        ["tokens", "create", "--role", "recorder", "--expires-at", text],
        env={"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": "stk_x"},
    )
    assert result.exit_code == 2
    assert "--expires-in" in result.output and "no time ahead" in result.output


def test_an_export_writes_no_progress_line_where_stderr_is_no_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every export, and every export's error, began its stderr with an empty
    line where stderr was a log or a pipe: the progress line, cleared
    (helper-196). It is drawn on a terminal only."""

    class Exporting(FakeClient):
        def export(self, out: Path, **kw: Any) -> Any:
            kw["progress"](1, 10)
            if out.name == "refused.csv":
                raise sealtrail.ExportError("the export was cut short")
            out.write_text("seq\n", encoding="utf-8")
            return audit_service_pb2.ExportManifest(
                row_count=1, byte_count=4, sha256=bytes(32), tree_size=1
            )

    monkeypatch.setattr(client_module, "AuditClient", Exporting)
    env = {"SEALTRAIL_SERVER": "127.0.0.1:50051", "SEALTRAIL_TOKEN": "s3cret"}
    done = CliRunner().invoke(cli.main, ["export", "-o", str(tmp_path / "a.csv")], env=env)
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("exported 1 event") and done.stderr == ""
    failed = CliRunner().invoke(cli.main, ["export", "-o", str(tmp_path / "refused.csv")], env=env)
    assert failed.exit_code == 1
    assert failed.stderr == "Error: the export was cut short\n"


class _CtrlCAtThePrompt(io.BytesIO):
    """A terminal's input, where the user presses Ctrl-C at the question."""

    def isatty(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if size == 0:  # click's look at what kind of stream it is
            return b""
        raise KeyboardInterrupt

    read1 = read

    def readline(self, size: int | None = -1, /) -> bytes:
        raise KeyboardInterrupt


def test_ctrl_c_in_any_command_or_at_its_prompt_exits_130(
    fake_client: list[tuple[str, Any, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in a command other than export, bundle, tail and import, or at a
    question (`hash-secret`'s, `retention set`'s), printed click's bare
    `Aborted!` and exited 1, as any failure does. It exits 130, as a shell
    reports a command Ctrl-C ended, and as those do."""
    env = {"SEALTRAIL_TOKEN": "s3cret"}
    asked = CliRunner().invoke(cli.main, ["hash-secret"], input=_CtrlCAtThePrompt(), env=env)
    assert (asked.exit_code, "Aborted!" in asked.output) == (130, False), asked.output
    assert asked.output.endswith("stopped by SIGINT\n"), asked.output

    def interrupted(self: FakeClient, event: event_pb2.Event) -> RecordResult:
        raise KeyboardInterrupt

    monkeypatch.setattr(FakeClient, "record", interrupted)
    recorded = CliRunner().invoke(cli.main, ["record", "--action", "a", "--actor-id", "u"], env=env)
    assert (recorded.exit_code, recorded.output) == (130, "stopped by SIGINT\n")


@pytest.mark.parametrize("command", [["tokens"], ["tokens", "list"]])
def test_unused_for_says_how_coarse_last_use_is_as_the_server_is_set(command: list[str]) -> None:
    """`--unused-for` said last use is written "at most once a minute": the
    default only, which the server's SEALTRAIL_TOKEN_LAST_USE_INTERVAL
    changes (up to a day). It names the setting, with its default."""
    shown = CliRunner().invoke(cli.main, [*command, "--help"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "once a minute" not in text
    assert "SEALTRAIL_TOKEN_LAST_USE_INTERVAL" in text
    assert f"({Settings().token_last_use_interval:g} s unless set" in text


def test_tail_refuses_a_start_past_the_largest_seq_as_a_usage_error() -> None:
    """The client refuses a stream's start past the largest seq at the call
    (a ValueError, which tail did not catch: a traceback); the option's range
    says so first, naming it, before any connection."""
    result = invoke("tail", "--from-seq", str(2**53))
    assert result.exit_code == 2, (result.output, result.exception)
    assert "--from-seq" in result.output and "9007199254740991" in result.output
