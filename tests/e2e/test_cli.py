"""The two command-line tools, run as a user would run them."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import click
import psutil
import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import sealtrail
import sealtrail_server
from sealtrail import AuditClient, build_filter
from sealtrail_server.cli import NO_SCHEMA
from sealtrail_server.domain.redaction import hmac_token, tenant_key
from tests.conftest import REDACTION_SECRET, ServerThread, copy_of_cluster, run_operator
from tests.http_endpoint import Reply, endpoint
from tests.processes import READY_PREFIX, ServerProcess, stop

BIN = Path(sys.executable).parent


def run(
    *args: str, env: dict[str, str] | None = None, check: bool = True, stdin: str | None = None
) -> Any:
    """`args` run to completion; with `check`, a failure says what the command
    printed (CalledProcessError alone names only its exit status)."""
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        input=stdin,
    )
    if check and done.returncode:
        printed = f"stdout: {done.stdout}\nstderr: {done.stderr}"
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}\n{printed}")
    return done


def admin_token(migrated_database_url: str, tenant: str) -> str:
    """An admin token of `tenant`, made as `sealtrail-server token create`
    makes one, in this process: the command's own run, a process of its own,
    is tested where it is the subject (test_a_revoked_token_is_refused), and
    a process's start (its imports, seconds on a busy machine) for each test's
    token was a third of this module's time."""
    created = run_operator(
        migrated_database_url, "token", "create", "--tenant", tenant, "--role", "admin"
    )
    assert created.exit_code == 0, created.output
    token = str(created.stdout.strip().splitlines()[-1])
    assert token.startswith("stk_")
    return token


@pytest.fixture(scope="module")
def cli_server(migrated_database_url: str) -> Iterator[ServerProcess]:
    """`sealtrail-server serve` as a process, shared by the module's tests of
    the client's command line: each has a tenant of its own, and none stops
    or configures it (a test of the server's own settings or stop starts
    its own). One start per test was the other third of the module's time."""
    process = ServerProcess(migrated_database_url)
    try:
        yield process
    finally:
        process.terminate()


@pytest.fixture
def cli_env(cli_server: ServerProcess, migrated_database_url: str, tenant: str) -> dict[str, str]:
    """The environment of `sealtrail` as an admin of the test's own tenant."""
    assert cli_server.proc.poll() is None, "".join(cli_server.stderr)  # an earlier test's end
    token = admin_token(migrated_database_url, tenant)
    return {"SEALTRAIL_SERVER": cli_server.target, "SEALTRAIL_TOKEN": token}


@pytest.fixture(scope="module")
def verifier_key() -> str:
    """The deployment's checkpoint verifier key, as `sealtrail-server key
    show` prints it (from SEALTRAIL_SIGNING_KEY, the same for the whole test
    session): once per module, not a process's start per test."""
    return str(run("sealtrail-server", "key", "show").stdout.strip())


def test_serve_serves_metrics_where_the_environment_says(
    migrated_database_url: str, tenant: str
) -> None:
    token = admin_token(migrated_database_url, tenant)
    process = ServerProcess(
        migrated_database_url,
        env={
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": "0",
        },
    )
    try:
        announced = re.fullmatch(
            r"sealtrail: metrics on (http://127\.0\.0\.1:\d+/metrics)\n", process.next_line()
        )
        assert announced is not None
        env = {"SEALTRAIL_SERVER": process.target, "SEALTRAIL_TOKEN": token}
        run("sealtrail", "record", "--action", "metrics.seen", "--actor-id", "ops", env=env)
        with urllib.request.urlopen(announced[1], timeout=10) as answer:
            scraped = answer.read().decode()
        [recorded] = [
            line
            for line in scraped.splitlines()
            if line.startswith("rpc_server_call_duration_seconds_count{")
            and 'rpc_method="sealtrail.v1.AuditLogService/Record"' in line
        ]
        assert 'rpc_response_status_code="OK"' in recorded and recorded.endswith("} 1.0")
        assert f'otel_scope_version="{sealtrail_server.__version__}"' in recorded
    finally:
        assert process.terminate() == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(announced[1], timeout=10)


def test_serve_refuses_metrics_it_cannot_serve_before_it_starts() -> None:
    refused = run(
        "sealtrail-server", "serve", "--listen", "127.0.0.1:0",
        env={"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "http"},
        check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr == (
        "Error: OTEL_EXPORTER_PROMETHEUS_PORT='http' is not a port (0 to 65535; 0 takes a free"
        " one)\n"
    )


def test_record_prints_the_stored_event_and_query_finds_it(cli_env: dict[str, str]) -> None:
    recorded = run(
        "sealtrail",
        "record",
        "--action",
        "api_key.create",
        "--actor-id",
        "user_1",
        "--actor-email",
        "ann@example.com",
        "--resource-type",
        "api_key",
        "--resource-id",
        "k_1",
        "--category",
        "security",
        "--severity",
        "warning",
        "--description",
        "created a deploy key",
        "--details",
        '{"scopes": ["deploy"], "ttl_days": 30}',
        "--request-id",
        "1b4e28ba-2fa1-11d2-883f-0016541e29a3",
        env=cli_env,
    )
    [line] = recorded.stdout.splitlines()
    event = json.loads(line)
    # seq 1 is the token's creation (api_token.created), recorded by sealtrail-server
    assert event["action"] == "api_key.create" and event["seq"] == "2"
    assert event["category"] == "CATEGORY_SECURITY"
    assert event["details"] == {"scopes": ["deploy"], "ttl_days": 30}
    assert event["context"]["requestId"] == "1b4e28ba-2fa1-11d2-883f-0016541e29a3"

    run("sealtrail", "record", "--action", "member.invite", "--actor-id", "u2", env=cli_env)
    found = run(
        "sealtrail", "query", "--action", "api_key.*", "--format", "jsonl", env=cli_env
    ).stdout.splitlines()
    assert [json.loads(x)["id"] for x in found] == [event["id"]]
    table = run("sealtrail", "query", "--since", "1h", env=cli_env).stdout
    assert "member.invite" in table and "api_key.create" in table

    # A script run again records its event under its own key once: the
    # second run answers the first's event, where each run's time made it
    # another event under that key (ALREADY_EXISTS).
    deploy = ("sealtrail", "record", "--action", "deploy.finish", "--actor-id", "ci",
              "--idempotency-key", "deploy-42")  # fmt: skip
    first, again = (json.loads(run(*deploy, env=cli_env).stdout) for _ in range(2))
    assert again == first


def test_whole_numbers_in_details_are_printed_as_integers(cli_env: dict[str, str]) -> None:
    """`query --format jsonl` printed `"trigger_seq": 83.0` (protobuf holds
    every number in details as a double), where exports print 83 (helper-165)."""
    details = '{"trigger_seq": 83, "ratio": 0.5, "deep": [{"n": -2}]}'
    recorded = run("sealtrail", "record", "--action", "numbers.seen", "--actor-id", "u",
                   "--details", details, "--change-json", "quota", "10", "20",
                   env=cli_env).stdout  # fmt: skip
    queried = run("sealtrail", "query", "--action", "numbers.seen", "--format", "jsonl",
                  env=cli_env).stdout  # fmt: skip
    event_id = json.loads(recorded)["id"]
    got = run("sealtrail", "get", event_id, env=cli_env).stdout
    for printed in (recorded, queried, got):
        assert re.search(r'"trigger_seq": 83[,}]', printed) and re.search(r'"n": -2[,}]', printed)
        assert re.search(r'"before": 10[,}]', printed) and re.search(r'"after": 20[,}]', printed)
        assert json.loads(printed)["details"] == {
            "trigger_seq": 83,
            "ratio": 0.5,
            "deep": [{"n": -2}],
        }


def test_a_table_shows_what_the_log_holds_as_text_never_as_terminal_codes(
    cli_env: dict[str, str],
) -> None:
    """Any recorder writes actor ids; a table printed them to the auditor's
    terminal as given: an escape sequence cleared the screen, retitled the
    window or hid what followed, and rich's markup made links (helper-146)."""
    hostile = "x\x1b[2J\u202e[link=https://evil.example]admin[/link]"
    run("sealtrail", "record", "--action", "doc.edit", "--actor-id", hostile, env=cli_env)
    table = run("sealtrail", "query", "--action", "doc.*", env=cli_env).stdout
    assert "\x1b" not in table and "\u202e" not in table
    assert "x\\x1b[2J\\u202e[link=https://evil.example]admin[/link]" in table


def test_a_table_shows_each_invisible_character_of_the_log_escaped(
    cli_env: dict[str, str],
) -> None:
    """The table escaped a list of bidi controls and let every other
    character that draws nothing through: an actor of a zero-width space
    or word joiner showed as `admin`, and tag characters hid a whole word
    (helper-320). What the console marks, the table escapes."""
    actor = "ad\u200bmin\u2060\u061c\ufeff\u180e\u3164"
    resource = "doc\U000e0068\U000e0069\u00ad"
    run(
        "sealtrail", "record", "--action", "doc.view", "--actor-id", actor,
        "--resource-type", "doc", "--resource-id", resource, env=cli_env,
    )  # fmt: skip
    table = run("sealtrail", "query", "--action", "doc.view", env=cli_env).stdout
    assert "ad\\u200bmin\\u2060\\u061c\\ufeff\\u180e\\u3164" in table
    assert "doc/doc\\U000e0068\\U000e0069\\xad" in table
    hidden = [char for char in table if char in actor + resource and not char.isascii()]
    assert hidden == []


def test_a_refusal_names_the_options_the_user_gave_not_the_apis_fields(
    cli_env: dict[str, str],
) -> None:
    """A value the server refused was named by its field in the API,
    `filter.occurred_before`, `event.context.ip`: words of no option of the
    command (helper-320)."""
    bounds = run(
        "sealtrail", "query", "--since", "2026-02-01", "--until", "2026-01-01",
        env=cli_env, check=False,
    )  # fmt: skip
    assert bounds.returncode == 2, bounds.stderr
    assert "  --until: must be later than --since" in bounds.stderr, bounds.stderr
    assert "occurred_" not in bounds.stderr and "filter." not in bounds.stderr, bounds.stderr
    search = run("sealtrail", "stats", "--search", "!!!", env=cli_env, check=False)
    assert "  --search: has no word to search for" in search.stderr, search.stderr
    address = run(
        "sealtrail", "record", "--action", "doc.edit", "--actor-id", "u_1", "--ip", "nowhere",
        env=cli_env, check=False,
    )  # fmt: skip
    assert address.returncode == 2, address.stderr
    assert "  --ip: must be an IPv4 or IPv6 address" in address.stderr, address.stderr
    assert "event." not in address.stderr and "context." not in address.stderr, address.stderr


def test_record_takes_every_field_of_an_event_and_the_environments_trace(
    cli_env: dict[str, str],
) -> None:
    """A shell records what a service can: the before/after of each field
    changed, names as shown, when it happened; and a script run in a traced
    job (TRACEPARENT) has its events lead to that job's trace."""
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traced = {**cli_env, "TRACEPARENT": f"00-{trace_id}-{span_id}-01"}
    recorded = run(
        "sealtrail", "record", "--action", "member.role_change", "--actor-id", "u_1",
        "--actor-display-name", "Alice Martin", "--resource-type", "member",
        "--resource-id", "m_7", "--resource-name", "Bob",
        "--change", "role", "member", "admin", "--change-json", "quota", "10", "20",
        "--change-json", "tags", "[]", '["ops"]', "--change-json", "note", "null", '"hi"',
        "--occurred-at", "2026-01-02T03:04:05Z", env=traced,
    )  # fmt: skip
    event = json.loads(recorded.stdout)
    assert event["actor"]["displayName"] == "Alice Martin"
    assert event["resource"]["name"] == "Bob"
    assert event["changes"] == [
        {"field": "role", "before": "member", "after": "admin"},
        {"field": "quota", "before": 10, "after": 20},
        {"field": "tags", "before": [], "after": ["ops"]},
        {"field": "note", "after": "hi"},  # null: there was none before
    ]
    assert event["occurredAt"] == "2026-01-02T03:04:05Z"
    assert (event["context"]["traceId"], event["context"]["spanId"]) == (trace_id, span_id)
    found = run("sealtrail", "query", "--trace-id", trace_id, "--format", "jsonl", env=cli_env)
    assert [json.loads(line)["id"] for line in found.stdout.splitlines()] == [event["id"]]

    # Its own ids win over the environment's.
    own_trace, own_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    recorded = run(
        "sealtrail", "record", "--action", "member.invite", "--actor-id", "u_1",
        "--trace-id", own_trace, "--span-id", own_span, env=traced,
    )  # fmt: skip
    context = json.loads(recorded.stdout)["context"]
    assert (context["traceId"], context["spanId"]) == (own_trace, own_span)

    failed = run(
        "sealtrail", "record", "--action", "a.b", "--actor-id", "u",
        "--change-json", "n", "12345678901234567890", "1", env=cli_env, check=False,
    )  # fmt: skip
    assert failed.returncode == 2
    assert "'--change-json'" in failed.stderr and "changes[n].before" in failed.stderr


def test_bad_input_is_reported_with_the_field_and_exit_2(cli_env: dict[str, str]) -> None:
    failed = run(
        "sealtrail", "record", "--action", "Bad Action", "--actor-id", "u", env=cli_env, check=False
    )
    assert failed.returncode == 2
    assert "INVALID_ARGUMENT" in failed.stderr and "  --action: must be" in failed.stderr


def test_embedded_server_prints_a_dev_token_and_keeps_data_across_restarts() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="sealtrail-e2e-"))
    with contextlib.ExitStack() as running:
        running.callback(shutil.rmtree, data_dir, ignore_errors=True)  # once all have stopped
        first = _serve_embedded(data_dir, running)
        token = (data_dir / "dev-admin-token").read_text().strip()
        assert token in first["stdout"]
        env = {"SEALTRAIL_SERVER": first["target"], "SEALTRAIL_TOKEN": token}
        run("sealtrail", "record", "--action", "server.start", "--actor-id", "ops", env=env)
        stop(first["process"])

        second = _serve_embedded(data_dir, running)
        assert "development admin token" not in second["stdout"]
        # No new token, but where the first is: a restart said nothing of it,
        # and its secret had scrolled away with the first start's output.
        assert token not in second["stdout"]
        assert f"is in {data_dir / 'dev-admin-token'}" in second["stdout"]
        env["SEALTRAIL_SERVER"] = second["target"]
        found = run("sealtrail", "query", "--format", "jsonl", env=env).stdout.splitlines()
        # newest first; the development token's creation is recorded as any token's
        assert [json.loads(x)["action"] for x in found] == ["server.start", "api_token.created"]
        # What its key signed is kept in the data dir (ADR 0080).
        run("sealtrail", "checkpoint", "--fresh", env=env)
        assert list((data_dir / "signed-checkpoints").glob("*/dev"))

        # Once its tenant is erased (its id retired), there is no development
        # token to make, and the server still starts, saying so.
        run("sealtrail", "erase-tenant", "--confirm", "dev", env=env)
        stop(second["process"])
        third = _serve_embedded(data_dir, running)
        assert "development admin token" not in third["stdout"]
        assert "no development token: tenant 'dev' was erased" in third["stderr"]()
        assert not (data_dir / "dev-admin-token").exists()
        refused = run(
            "sealtrail-server", "token", "create", "--tenant", "dev", "--role", "admin",
            env={"SEALTRAIL_DATA_DIR": str(data_dir)}, check=False,
        )  # fmt: skip
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "tenant 'dev' was erased" in refused.stderr


def test_an_operator_command_on_a_data_dir_with_no_database_refuses_to_make_one(
    tmp_path: Path,
) -> None:
    """`token create` in a shell whose SEALTRAIL_DATA_DIR (or HOME, under sudo)
    was not the server's made a new, empty embedded database there, and printed
    a token the running server did not know (helper-196). Only `serve` makes
    one; the others say where they looked."""
    commands = [
        ["token", "create", "--tenant", "dev", "--role", "admin"],
        ["token", "list", "--tenant", "dev"],
        ["tenant", "list"],
        ["sink", "list"],
    ]
    for command in commands:
        refused = run(
            "sealtrail-server", *command, env={"SEALTRAIL_DATA_DIR": str(tmp_path)}, check=False
        )
        assert refused.returncode == 1, (command, refused.stdout, refused.stderr)
        assert f"no Sealtrail database in {tmp_path / 'postgres'}" in refused.stderr
        assert "SEALTRAIL_DATABASE_URL" in refused.stderr
        assert "stk_" not in refused.stdout
        assert not (tmp_path / "postgres").exists(), command


def test_an_operator_command_on_the_embedded_database_says_only_what_it_was_asked(
    initdb_cluster: Path,
) -> None:
    """Every operator command on the embedded PostgreSQL logged `INFO ...
    embedded PostgreSQL in <dir>` on stderr, above its one line `Error: ...`
    or beside its listing; and a first start logged a line per migration
    (63 of them) before its development token. `serve` says where its
    database is and its migrations in one line; an operator command says
    where its database is with -v."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        env = {"SEALTRAIL_DATA_DIR": str(data_dir)}
        refused = run("sealtrail-server", "tenant", "list", env=env, check=False)
        assert (refused.returncode, refused.stderr) == (1, f"Error: {NO_SCHEMA}\n")

        said = _serve_embedded(data_dir, running)["stderr"]()
        assert f"embedded PostgreSQL in {data_dir / 'postgres'}" in said, said
        # The summary line's form alone: a migration still at work after 5 s on a
        # busy machine adds an `applying migration NNNN_name: at work` line.
        summary = re.compile(r"applying \d+ migrations, 0001_\w+\.\.\d{4}_\w+$")
        migrating = [line for line in said.splitlines() if summary.search(line)]
        assert len(migrating) == 1, said

        listed = run("sealtrail-server", "tenant", "erasures", env=env)
        assert (listed.stdout, listed.stderr) == ("no tenant was erased: no erasure receipts\n", "")
        verbose = run("sealtrail-server", "-v", "tenant", "erasures", env=env)
        assert f"embedded PostgreSQL in {data_dir / 'postgres'}" in verbose.stderr


def test_the_embedded_postgresql_stops_after_a_server_that_did_not_exit_cleanly(
    initdb_cluster: Path,
) -> None:
    """pgserver stops its PostgreSQL when the last process on its list of
    handles exits. A server killed (SIGKILL, a crash, a power loss) stayed on
    that list for good, and PostgreSQL ran on after every clean stop after it;
    a SIGTERM during a start skipped the exit handlers that take a server off
    it (helper-140)."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        pgdata = data_dir / "postgres"
        handles = pgdata / ".handle_pids.json"
        crashed = _serve_embedded(data_dir, running)["process"]
        crashed.kill()
        crashed.wait(30)
        clean = _serve_embedded(data_dir, running)["process"]
        clean.terminate()
        assert clean.wait(60) == 0
        assert not (pgdata / "postmaster.pid").exists(), "PostgreSQL still runs"

        # A SIGTERM once a start holds its handle, before it serves.
        starting = subprocess.Popen(
            [str(BIN / "sealtrail-server"), "serve", "--listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "SEALTRAIL_DATA_DIR": str(data_dir)},
        )
        running.callback(stop, starting)
        deadline = time.monotonic() + 60
        while starting.pid not in _handle_pids(handles):
            assert time.monotonic() < deadline and starting.poll() is None
            time.sleep(0.005)
        starting.terminate()
        assert starting.wait(60) == 128 + signal.SIGTERM  # as a shell says of one killed by it
        assert _handle_pids(handles) == []
        assert not (pgdata / "postmaster.pid").exists(), "PostgreSQL still runs"


# The migrations' advisory lock (store/migrations.py, "sealtrai" in ASCII),
# which every start takes: held here, a start waits for it, and is stopped there.
_MIGRATIONS_LOCK = 0x7365616C74726169


def test_a_server_stopped_before_it_serves_says_so_and_lets_go_of_the_embedded_postgresql(
    initdb_cluster: Path,
) -> None:
    """`serve` stopped before it serves (its migrations waiting, say): by
    SIGHUP (its terminal or SSH session gone), it died outright, its exit
    handlers skipped, and the embedded PostgreSQL it had joined ran on after
    every other process on the data dir had stopped; by Ctrl-C, it printed
    click's "Aborted!" and exited 1, the status of any failure; by SIGTERM, 143
    without a word. Each ends as an operator's command does (docs/operations.md):
    `stopped by SIG...`, 128 and the signal's number, its handle let go."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        pgdata = data_dir / "postgres"
        handles = pgdata / ".handle_pids.json"
        serving, url = _serving_embedded(data_dir, running)
        with psycopg.connect(url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", [_MIGRATIONS_LOCK])
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                said_file = data_dir / f"starting-{signum.name}.err"
                with said_file.open("w") as said_to:
                    starting = subprocess.Popen(
                        [str(BIN / "sealtrail-server"), "serve", "--listen", "127.0.0.1:0"],
                        stdout=subprocess.DEVNULL,
                        stderr=said_to,
                        env={**os.environ, "SEALTRAIL_DATA_DIR": str(data_dir)},
                    )
                running.callback(stop, starting)
                deadline = time.monotonic() + 60
                while "waiting for their lock" not in said_file.read_text():
                    assert time.monotonic() < deadline and starting.poll() is None
                    time.sleep(0.01)
                assert starting.pid in _handle_pids(handles)
                starting.send_signal(signum)
                status = starting.wait(60)
                said = said_file.read_text()
                assert status == 128 + signum, said
                assert said.splitlines()[-1] == f"stopped by {signum.name}", said
                assert "Aborted!" not in said and "Traceback" not in said, said
                assert starting.pid not in _handle_pids(handles)
        serving.terminate()
        assert serving.wait(60) == 0
        assert _handle_pids(handles) == []
        assert not (pgdata / "postmaster.pid").exists(), "PostgreSQL still runs"


# `sealtrail-server serve` as its console script runs it, a signal sent to
# itself as it freezes what its start built (cli.py `_freeze_startup_objects`):
# after its service has started, before it takes the signals as a stop.
_SIGNAL_AFTER_ITS_START: Final = """
import gc, os, signal, sys
freeze = gc.freeze
def signalled():
    os.kill(os.getpid(), signal.{name})
    freeze()
gc.freeze = signalled
sys.argv = ["sealtrail-server", "serve", "--listen", "127.0.0.1:0"]
from sealtrail_server.entry import main
main()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_server_stopped_after_its_start_before_it_serves_stops_what_it_started(
    signum: signal.Signals, initdb_cluster: Path
) -> None:
    """A signal after the service had started (its gRPC server taking calls,
    its appender and pool open), before the server took the signals as a
    stop (its dev token made, its startup objects frozen): SIGTERM exited
    143 without stopping any of it, the gRPC server left to the garbage
    collector once the event loop had closed (`Exception ignored in:
    <function Server.__del__>`, `coroutine 'AioServer.shutdown' was never
    awaited`); Ctrl-C (asyncio.run's handler cancelling the start) reached
    it as it began to serve: it said `serving gRPC on ...`, then exited 130
    without a stop. Each stops what it started, as a start stopped earlier
    does, and says so."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        pgdata = data_dir / "postgres"
        said_file, printed_file = data_dir / "serve.err", data_dir / "serve.out"
        with said_file.open("w") as said_to, printed_file.open("w") as printed_to:
            starting = subprocess.Popen(
                [sys.executable, "-c", _SIGNAL_AFTER_ITS_START.format(name=signum.name)],
                stdout=printed_to,
                stderr=said_to,
                env={**os.environ, "SEALTRAIL_DATA_DIR": str(data_dir)},
            )
        running.callback(stop, starting)
        status = starting.wait(90)
        said, printed = said_file.read_text(), printed_file.read_text()
        assert status == 128 + signum, said
        assert said.splitlines()[-1] == f"stopped by {signum.name}", said
        assert "Exception ignored" not in said and "never awaited" not in said, said
        assert "serving gRPC" not in printed, printed
        assert _handle_pids(pgdata / ".handle_pids.json") == []
        assert not (pgdata / "postmaster.pid").exists(), "PostgreSQL still runs"


def test_a_serving_server_that_loses_its_terminal_stops_as_on_sigterm(initdb_cluster: Path) -> None:
    """`sealtrail-server serve` (or `make run`) in a terminal or an SSH session
    that went away gets SIGHUP: it died outright, its calls in flight cut off,
    telemetry unsent, and the embedded PostgreSQL ran on after it, the last
    process on the data dir (docs/operations.md: it stops when the last one
    exits). It stops as on SIGTERM: gracefully, status 0."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        pgdata = data_dir / "postgres"
        served = _serve_embedded(data_dir, running)
        served["process"].send_signal(signal.SIGHUP)
        assert served["process"].wait(60) == 0, served["stderr"]()
        assert "shutting down" in served["stderr"](), served["stderr"]()
        assert _handle_pids(pgdata / ".handle_pids.json") == []
        assert not (pgdata / "postmaster.pid").exists(), "PostgreSQL still runs"


def test_a_serving_server_whose_terminal_closes_stops_gracefully_on_both_its_sighups(
    initdb_cluster: Path,
) -> None:
    """A terminal closed under a server in the foreground of an interactive
    shell sends it SIGHUP twice at once: the kernel to the terminal's
    foreground process group, and the shell, as it exits, to each of its
    jobs. The second hurried the stop as a second Ctrl-C does (`ending
    in-flight calls now`): the calls in flight were cut off. Only a second
    SIGTERM or Ctrl-C hurries it."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        served = _serve_embedded(data_dir, running)
        served["process"].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30  # the second once the first is taken, not merged with it
        while "finishing in-flight calls" not in served["stderr"]():
            assert time.monotonic() < deadline, served["stderr"]()
            time.sleep(0.001)
        served["process"].send_signal(signal.SIGHUP)
        assert served["process"].wait(60) == 0, served["stderr"]()
        said = served["stderr"]()
        assert "finishing in-flight calls" in said, said
        assert "ending in-flight calls now" not in said, said


def test_a_server_started_under_nohup_serves_on_after_a_sighup(initdb_cluster: Path) -> None:
    """Under `nohup`, SIGHUP is ignored from the start: the server, which
    stops on SIGHUP otherwise, serves on after one, and stops on SIGTERM."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        served = _serve_embedded(data_dir, running, under=("nohup",))
        served["process"].send_signal(signal.SIGHUP)
        time.sleep(1.0)  # a stop it began would refuse calls by now
        token = (data_dir / "dev-admin-token").read_text().strip()
        with AuditClient(served["target"], token=token, max_attempts=1) as client:
            client.record(action="doc.edit", actor_id="u")
        assert served["process"].poll() is None
        served["process"].terminate()
        assert served["process"].wait(60) == 0, served["stderr"]()


# `sealtrail-server serve` as its console script runs it, sending itself a
# signal once its graceful stop is done: as the tasks left are ended
# (cli.py `_end_what_is_left`), or as the exit handlers stop the embedded
# PostgreSQL (pgserver's, run at exit), the moment an orchestrator's
# second SIGTERM, or a second Ctrl-C, comes.
_SIGNAL_AFTER_ITS_STOP: Final = """
import os, signal, sys
import pgserver.postgres_server
import sealtrail_server.cli as cli
def signalled():
    os.kill(os.getpid(), signal.{name})
if {at!r} == "exit handlers":
    stop_postgresql = pgserver.postgres_server.PostgresServer._cleanup
    def cleanup(server):
        signalled()
        stop_postgresql(server)
    pgserver.postgres_server.PostgresServer._cleanup = cleanup
else:
    end_what_is_left = cli._end_what_is_left
    async def end_left(*args, **kwargs):
        signalled()
        await end_what_is_left(*args, **kwargs)
    cli._end_what_is_left = end_left
sys.argv = ["sealtrail-server", "serve", "--listen", "127.0.0.1:0"]
from sealtrail_server.entry import main
main()
"""


@pytest.mark.parametrize("at", ["stop done", "exit handlers"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_after_the_stop_is_done_lets_the_exit_finish(
    signum: signal.Signals, at: str, initdb_cluster: Path
) -> None:
    """A signal once the graceful stop was done (its handlers given back):
    as the exit handlers stopped the embedded PostgreSQL, a SIGTERM killed
    the server outright, and a SIGINT broke off their stop with a traceback
    (`Exception ignored in atexit callback`): either way PostgreSQL ran on
    after its last process, the server left on its list; just before, it
    exited 143 or 130, `stopped by SIG...`, as if no stop had been made.
    The exit finishes, status 0 as after any graceful stop, nothing left
    running."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        pgdata = data_dir / "postgres"
        said_file = data_dir / "serve.err"
        with said_file.open("w") as said_to:
            serving = subprocess.Popen(
                [sys.executable, "-c", _SIGNAL_AFTER_ITS_STOP.format(name=signum.name, at=at)],
                stdout=subprocess.PIPE,
                stderr=said_to,
                text=True,
                env={
                    **{
                        k: v
                        for k, v in os.environ.items()
                        if k != "SEALTRAIL_SIGNED_CHECKPOINTS_DIR"
                    },
                    "SEALTRAIL_DATA_DIR": str(data_dir),
                    "PYTHONUNBUFFERED": "1",
                },
            )
        running.callback(stop, serving)
        assert serving.stdout is not None
        for line in serving.stdout:
            if line.startswith(READY_PREFIX):
                break
        serving.stdout.close()
        serving.send_signal(signal.SIGTERM)
        status = serving.wait(60)
        said = said_file.read_text()
        assert status == 0, said
        assert "Traceback" not in said and "stopped by" not in said, said
        assert f"stopped already, exiting ({signum.name} changes nothing)" in said, said
        assert _handle_pids(pgdata / ".handle_pids.json") == []
        assert not (pgdata / "postmaster.pid").exists(), "PostgreSQL still runs"
        assert not list(pgdata.glob(".s.PGSQL.*")), "its socket files are left"


def test_a_server_started_with_ctrl_c_ignored_serves_on_after_one(initdb_cluster: Path) -> None:
    """A server started with SIGINT ignored (in the background of a shell
    script, `cmd &`, or by a supervisor that ignores it) stopped on a SIGINT
    sent to its process group all the same: the handlers it took as it
    began to serve overrode the ignore, as SIGHUP's under `nohup` never
    was. It serves on after one, and stops on SIGTERM."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        served = _serve_embedded(
            data_dir, running, under=("sh", "-c", "trap '' INT; exec \"$@\"", "sh")
        )
        served["process"].send_signal(signal.SIGINT)
        time.sleep(1.0)  # a stop it began would refuse calls by now
        token = (data_dir / "dev-admin-token").read_text().strip()
        with AuditClient(served["target"], token=token, max_attempts=1) as client:
            client.record(action="doc.edit", actor_id="u")
        assert served["process"].poll() is None
        assert "shutting down" not in served["stderr"](), served["stderr"]()
        served["process"].terminate()
        assert served["process"].wait(60) == 0, served["stderr"]()


def test_an_operator_command_ended_by_a_signal_says_so_and_lets_go_of_the_embedded_postgresql(
    initdb_cluster: Path,
) -> None:
    """The embedded PostgreSQL stops when the last process on the data dir
    exits, SIGTERM included (docs/operations.md). An operator's command ended
    by SIGTERM (`timeout 30 sealtrail-server ...`, a container's stop) or
    SIGHUP (its SSH session lost) died without its exit handlers: it stayed
    on pgserver's list, and PostgreSQL ran on after every other process on
    the data dir had stopped (a copy of the data dir then was no backup).
    It exits as a shell says of one killed by the signal, its handle let go,
    saying what stopped it; Ctrl-C too, which printed click's "Aborted!" and
    exited 1, the status of any failure."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        pgdata = data_dir / "postgres"
        handles = pgdata / ".handle_pids.json"
        serving, url = _serving_embedded(data_dir, running)
        # The watcher outside the holder's transactions, which would see the
        # statistics of their start (pg_stat_activity) throughout.
        with (
            psycopg.connect(url, autocommit=True) as holder,
            psycopg.connect(url, autocommit=True) as watcher,
        ):
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                # The command waits for the tenants' heads, which this session holds.
                holder.execute("BEGIN")
                holder.execute("LOCK TABLE chain_heads IN ACCESS EXCLUSIVE MODE")
                command = subprocess.Popen(
                    [str(BIN / "sealtrail-server"), "tenant", "list"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "SEALTRAIL_DATA_DIR": str(data_dir)},
                )
                running.callback(stop, command)
                deadline = time.monotonic() + 60
                # The command's own statement, not the server's: its background
                # work waits on chain_heads too, maybe before the command runs.
                waiting = (
                    "SELECT EXISTS (SELECT FROM pg_locks AS l JOIN pg_stat_activity AS a"
                    " USING (pid) WHERE NOT l.granted AND l.relation = 'chain_heads'::regclass"
                    " AND a.query LIKE '%LEFT JOIN retention_policies AS p%')"
                )
                while watcher.execute(waiting).fetchone() != (True,):
                    assert time.monotonic() < deadline and command.poll() is None
                    time.sleep(0.01)
                assert command.pid in _handle_pids(handles)
                command.send_signal(signum)
                _, said = command.communicate(timeout=60)
                assert command.returncode == 128 + signum, said
                assert said.splitlines()[-1] == f"stopped by {signum.name}", said
                assert "Aborted!" not in said and "Traceback" not in said
                holder.execute("ROLLBACK")
                assert command.pid not in _handle_pids(handles)
        serving.terminate()
        assert serving.wait(60) == 0
        assert _handle_pids(handles) == []
        assert not (pgdata / "postmaster.pid").exists(), "PostgreSQL still runs"


def test_a_postmaster_pid_naming_a_process_that_is_not_its_postgresql_is_not_trusted(
    initdb_cluster: Path,
) -> None:
    """PostgreSQL killed with its server (a kill of the whole group, the OOM
    killer, a power loss) leaves its postmaster.pid behind, and by the next
    start its pid can be another process's (a container's pids begin again at
    1). pgserver took that process for PostgreSQL: the start failed ("Connection
    refused" on a socket nobody listened on), and its exit, to stop "its"
    PostgreSQL, killed that process, whatever it was (helper-271)."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        pgdata = data_dir / "postgres"
        pid_file = pgdata / "postmaster.pid"
        crashed = _serve_embedded(data_dir, running)["process"]
        postmaster = int(pid_file.read_text().split()[0])
        crashed.kill()
        crashed.wait(30)
        os.kill(postmaster, signal.SIGKILL)
        _wait_until_gone(postmaster)
        # PostgreSQL's user's, as when not run as root: a process PostgreSQL may signal.
        as_postgresql = "pgserver" if os.geteuid() == 0 else None
        bystander = subprocess.Popen(["sleep", "300"], user=as_postgresql)
        running.callback(stop, bystander)
        # As left, but for its pid, now the bystander's (the socket's lock file too).
        for lock_file in [pid_file, *pgdata.glob(".s.PGSQL.*.lock")]:
            left = lock_file.read_text().splitlines()
            lock_file.write_text("\n".join([str(bystander.pid), *left[1:]]) + "\n")

        restarted = _serve_embedded(data_dir, running)["process"]
        restarted.terminate()
        assert restarted.wait(60) == 0
        assert bystander.poll() is None, "the process named in the stale postmaster.pid was killed"
        assert not pid_file.exists(), "PostgreSQL still runs"


def test_a_first_start_stopped_while_its_database_is_made_leaves_none_half_made() -> None:
    """A SIGTERM (or Ctrl-C) while the first start's initdb ran left half a
    cluster in `postgres/`, its PG_VERSION written early: every start after
    it skipped initdb and failed (database "postgres" does not exist), until
    the operator found and deleted the directory (helper-271)."""
    with _embedded_data_dir() as (data_dir, running):
        starting = subprocess.Popen(
            [str(BIN / "sealtrail-server"), "serve", "--listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "SEALTRAIL_DATA_DIR": str(data_dir)},
        )
        running.callback(stop, starting)
        deadline = time.monotonic() + 60
        while not (_initdb_runs_in(data_dir) and list(data_dir.glob("*/PG_VERSION"))):
            assert time.monotonic() < deadline and starting.poll() is None
            time.sleep(0.005)
        starting.terminate()
        assert starting.wait(60) == 128 + signal.SIGTERM
        assert not _initdb_runs_in(data_dir)

        restarted = _serve_embedded(data_dir, running)
        assert "development admin token" in restarted["stdout"]


def test_a_data_dir_whose_path_a_shell_would_split_runs_its_postgresql() -> None:
    """pgserver hands PostgreSQL its socket directory, the data dir, through
    pg_ctl's shell unquoted: a data dir with a space in its path (a home
    "/home/Jo Smith", macOS's "Application Support") or a quote never started,
    `postgres: invalid argument: "Smith/..."` under a traceback (helper-271)."""
    with _embedded_data_dir("sealtrail e2e o'neil ") as (data_dir, running):
        pgdata = data_dir / "postgres"
        first = _serve_embedded(data_dir, running)
        token = (data_dir / "dev-admin-token").read_text().strip()
        env = {"SEALTRAIL_SERVER": first["target"], "SEALTRAIL_TOKEN": token}
        run("sealtrail", "record", "--action", "server.start", "--actor-id", "ops", env=env)
        first["process"].terminate()
        assert first["process"].wait(60) == 0
        assert not (pgdata / "postmaster.pid").exists(), "PostgreSQL still runs"


def test_an_embedded_postgresql_that_does_not_start_is_named_with_its_reason(
    initdb_cluster: Path,
) -> None:
    """An embedded PostgreSQL that would not start (a setting mistyped in its
    postgresql.conf, a data dir of another PostgreSQL major version) stopped
    the server with a traceback of pg_ctl's command line, after the whole of
    PostgreSQL's log, every start it ever made, and nowhere what failed
    (helper-271)."""
    with _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running):
        pgdata = data_dir / "postgres"
        first = _serve_embedded(data_dir, running)["process"]
        first.terminate()
        assert first.wait(60) == 0
        with (pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("max_connections = 10O\n")

        refused = run("sealtrail-server", "serve", "--listen", "127.0.0.1:0",
            env={"SEALTRAIL_DATA_DIR": str(data_dir)}, check=False,
        )  # fmt: skip
        assert refused.returncode == 1
        assert "Traceback" not in refused.stderr
        said = refused.stderr.strip().splitlines()
        assert len(said) == 1, refused.stderr
        assert said[0].startswith(f"the embedded PostgreSQL in {pgdata} did not start: ")
        assert 'invalid value for parameter "max_connections": "10O"' in said[0]
        assert f"(its log: {pgdata / 'log'})" in said[0]


def _initdb_runs_in(data_dir: Path) -> bool:
    """Whether an initdb runs on a directory in `data_dir`."""
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "initdb" and str(data_dir) in " ".join(
            process.info["cmdline"] or []
        ):
            return True
    return False


OPERATIONS_MD: Final = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _operations_sh(containing: str) -> str:
    """The `sh` block of docs/operations.md that holds `containing`, as an
    operator copies it (its `.venv/bin/python` this test's interpreter)."""
    blocks = re.findall(r"```sh\n(.*?)```", OPERATIONS_MD.read_text("utf-8"), re.DOTALL)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"{len(found)} sh blocks of docs/operations.md hold {containing!r}"
    return found[0].replace(".venv/bin/python", sys.executable)


def test_an_embedded_backup_restored_into_a_new_data_dir_as_the_operations_doc_shows(
    initdb_cluster: Path,
) -> None:
    """docs/operations.md's embedded backup (`pg_dump` and `pg_dumpall` over
    the socket postmaster.pid names) and its restore into a new data dir
    (PostgreSQL started alone, roles.sql, pg_restore, the keys and the
    current signed-checkpoints copied in), each block run as printed: the
    server on the new data dir serves the log whole, signed by the same key,
    and a checkpoint saved before the backup is consistent with it."""
    backup = _operations_sh('"$PGBIN/pg_dump" -Fc')
    restore = _operations_sh('"$PGBIN/pg_restore"')
    serve_line = "SEALTRAIL_DATA_DIR=$NEW sealtrail-server serve\n"
    assert restore.endswith(serve_line), restore  # run below as a process of the test's
    restore = restore.removesuffix(serve_line)
    # `make run`'s deployment: its three keys generated in its data dir.
    keys = ("SEALTRAIL_SIGNING_KEY", "SEALTRAIL_REDACTION_KEY", "SEALTRAIL_SECRETS_KEY")
    in_data_dir = dict.fromkeys(keys, "")
    with (
        _embedded_data_dir(cluster=initdb_cluster) as (data_dir, running),
        _embedded_data_dir("sealtrail-e2e-restored-") as (new_dir, running_new),
        tempfile.TemporaryDirectory(prefix="sealtrail-e2e-backup-") as kept,
    ):
        served = _serve_embedded(data_dir, running, env=in_data_dir)
        token = (data_dir / "dev-admin-token").read_text().strip()
        env = {"SEALTRAIL_SERVER": served["target"], "SEALTRAIL_TOKEN": token}
        for actor in ("alice", "bob", "carol"):
            run("sealtrail", "record", "--action", "user.login", "--actor-id", actor, env=env)
        saved = Path(kept) / "saved-checkpoint"
        saved.write_text(run("sealtrail", "checkpoint", "--fresh", env=env).stdout)
        data_env = {**in_data_dir, "SEALTRAIL_DATA_DIR": str(data_dir)}
        verifier = run("sealtrail-server", "key", "show", env=data_env).stdout.strip()
        for name in ("signing-key", "redaction-key", "secrets-key"):  # kept apart, as the doc says
            shutil.copy2(data_dir / name, Path(kept) / name)

        # The deployment's own directory: the restore's `cp` reads the keys from it.
        shell_env = {**os.environ, **data_env, "NEW": str(new_dir)}
        done = subprocess.run(
            ["bash", "-e", "-c", backup + restore],
            cwd=kept, capture_output=True, text=True, timeout=300, env=shell_env,
        )  # fmt: skip
        assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
        assert (Path(kept) / "sealtrail.dump").stat().st_size > 0
        assert "CREATE ROLE sealtrail_system" in (Path(kept) / "roles.sql").read_text()
        running_new.callback(_stop_postmaster, new_dir / "postgres")  # started alone above
        stop(served["process"])

        restored = _serve_embedded(new_dir, running_new, env=in_data_dir)
        env["SEALTRAIL_SERVER"] = restored["target"]
        verified = run("sealtrail", "verify-log", env=env).stdout
        assert verified.startswith("OK: 4 records"), verified  # the dev token's, and three
        new_env = {**in_data_dir, "SEALTRAIL_DATA_DIR": str(new_dir)}
        assert run("sealtrail-server", "key", "show", env=new_env).stdout.strip() == verifier
        checked = run("sealtrail", "checkpoint", "--check", str(saved), "--key", verifier, env=env)
        assert checked.stdout.startswith("CONSISTENT: the saved log of 4 events"), checked.stdout
        run("sealtrail", "record", "--action", "user.logout", "--actor-id", "alice", env=env)
        bundle = Path(kept) / "bundle"
        run("sealtrail", "bundle", "-o", str(bundle), env=env)
        proved = run("sealtrail", "verify", "--key", verifier, str(bundle), env=env).stdout
        assert proved.startswith("OK: "), proved
        stop(restored["process"])
        assert not (new_dir / "postgres" / "postmaster.pid").exists(), "PostgreSQL still runs"


def _wait_until_gone(pid: int) -> None:
    """Until process `pid` has ended (a zombie nobody reaps counts as ended)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.05)


def test_the_embedded_postgresql_started_as_the_docs_show_warns_of_nothing() -> None:
    """Where XDG_RUNTIME_DIR is unset (most servers, `sudo`, cron), importing
    pgserver made platformdirs print `RuntimeDirWarning: XDG_RUNTIME_DIR is
    not set, falling back to /tmp/runtime-0` and the line of code it came
    from: on stderr around the PGBIN line of docs/operations.md's backup and
    the start of PostgreSQL alone of its restore, a warning of nothing wrong
    (the fallback is where PostgreSQL's lock goes, as the doc says). Neither
    prints one now, nor a server's start on the embedded database."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    pgbin = next(
        line
        for line in _operations_sh('"$PGBIN/pg_dump" -Fc').splitlines()
        if line.startswith("PGBIN=")
    )
    restore = _operations_sh('"$PGBIN/pg_restore"')
    start_alone = restore[: restore.index('"$PGBIN/psql"')]
    with _embedded_data_dir("sealtrail-e2e-alone-") as (new_dir, running):
        done = subprocess.run(
            ["bash", "-e", "-c", f'{pgbin}\necho "$PGBIN"\n{start_alone}'],
            capture_output=True, text=True, timeout=120, env={**env, "NEW": str(new_dir)},
        )  # fmt: skip
        assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
        assert done.stderr == "", done.stderr
        assert (Path(done.stdout.strip()) / "pg_dump").is_file(), done.stdout
        assert (new_dir / "postgres" / "postmaster.pid").is_file()  # started, and left running
        _stop_postmaster(new_dir / "postgres")
        served = _serve_embedded(new_dir, running, env={"XDG_RUNTIME_DIR": ""})
        said = served["stderr"]()
        assert "Warning" not in said and "XDG_RUNTIME_DIR" not in said, said


@contextlib.contextmanager
def _embedded_data_dir(
    prefix: str = "sealtrail-e2e-", *, cluster: Path | None = None
) -> Iterator[tuple[Path, contextlib.ExitStack]]:
    """A new data dir, and the stack its test's processes go on: on leaving,
    they are stopped, then the PostgreSQL they started if it still runs, and
    the data dir removed. With `cluster` (`initdb_cluster`), a copy of it is
    the data dir's `postgres/` (conftest `copy_of_cluster`): the first start
    makes none."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    if cluster is not None:
        copy_of_cluster(cluster, data_dir / "postgres")
    with contextlib.ExitStack() as running:
        running.callback(shutil.rmtree, data_dir, ignore_errors=True)  # once all have stopped
        running.callback(_stop_postmaster, data_dir / "postgres")  # if the test left it running
        yield data_dir, running


def _handle_pids(handles: Path) -> list[int]:
    """The pids on pgserver's list ([] while it is being written)."""
    try:
        pids: list[int] = json.loads(handles.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return pids


def _stop_postmaster(pgdata: Path) -> None:
    """Stops (fast shutdown) the PostgreSQL this test's servers started, if it runs."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _serving_embedded(
    data_dir: Path, running: contextlib.ExitStack
) -> tuple[subprocess.Popen[str], str]:
    """`_serve_embedded`'s process, keeping the embedded PostgreSQL up, and
    the URL of its superuser, over its socket."""
    serving = _serve_embedded(data_dir, running)["process"]
    socket_dir = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[4]
    return serving, f"postgresql://postgres@/postgres?host={socket_dir}"


def _serve_embedded(
    data_dir: Path,
    running: contextlib.ExitStack,
    *,
    under: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`sealtrail-server serve` on `data_dir`'s embedded database, once
    serving, stopped when `running` ends if not before: its process, target,
    stdout so far, and a reader of its stderr (kept in a file of `data_dir`:
    a pipe nobody reads would fill and stall it). `under`: a command it is
    run under (`nohup`); `env`: variables set (or, empty, unset) besides."""
    stderr_path = data_dir / f"serve-{time.monotonic_ns()}.err"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*under, str(BIN / "sealtrail-server"), "serve", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={
                # A deployment of its own: what its key signed kept in its data
                # dir, as by default, not in the test session's directory.
                **{k: v for k, v in os.environ.items() if k != "SEALTRAIL_SIGNED_CHECKPOINTS_DIR"},
                "SEALTRAIL_DATA_DIR": str(data_dir),
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            },
        )
    running.callback(stop, process)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(READY_PREFIX):
            break
    process.stdout.close()

    def read_stderr() -> str:
        return stderr_path.read_text()

    assert lines and lines[-1].startswith(READY_PREFIX), f"did not serve: {read_stderr()}"
    target = lines[-1].removeprefix(READY_PREFIX).strip()

    return {"process": process, "target": target, "stdout": "".join(lines), "stderr": read_stderr}


def test_bundle_and_verify_from_the_command_line(
    cli_env: dict[str, str],
    tmp_path: Path,
    migrated_database_url: str,
    tenant: str,
    verifier_key: str,
) -> None:
    for action in ("api_key.create", "member.invite", "api_key.rotate"):
        run("sealtrail", "record", "--action", action, "--actor-id", "ops", env=cli_env)
    key = verifier_key
    written = run(
        "sealtrail", "bundle", "--action", "api_key.*", "-o", str(tmp_path / "b"), env=cli_env
    )
    # seq 1 is the token's creation (api_token.created)
    assert "wrote 2 records (seq 2..4)" in written.stdout
    verified = run("sealtrail", "verify", str(tmp_path / "b"), "--key", key, "--tenant", tenant)
    assert verified.stdout.startswith("OK: 2 records (seq 2..4)")
    assert "partial bundle" in verified.stderr  # records left out would not be noticed
    whole_required = run(
        "sealtrail", "verify", str(tmp_path / "b"), "--key", key, "--complete", check=False
    )
    assert whole_required.returncode == 1
    assert whole_required.stderr.startswith("FAILED: a partial bundle (2 records of ")
    elsewhere = run(
        "sealtrail", "verify", str(tmp_path / "b"), "--key", key, "--tenant", "other", check=False
    )
    assert elsewhere.returncode == 1 and "not 'other'" in elsewhere.stderr

    records = tmp_path / "b" / "records.ndjson"
    records.write_text(records.read_text().replace("api_key.rotate", "api_key.delete"))
    failed = run("sealtrail", "verify", str(tmp_path / "b"), "--key", key, check=False)
    assert failed.returncode == 1
    assert failed.stderr.startswith("FAILED: record 2 (seq 4)")

    # the token's creation, three records, the bundle's query (audit_log.queried) and
    # its proofs read by key (audit_log.read_by_key); checkpoints: the bundle's, and any
    # a server's checkpointer signed meanwhile
    verified_log = run("sealtrail", "verify-log", env=cli_env).stdout
    assert re.match(r"OK: 6 records and \d+ checkpoints? verified", verified_log), verified_log
    # and what Query shows of each (ADR 0022), now with that verify-log's access record
    with_views = run("sealtrail", "verify-log", "--check-views", env=cli_env).stdout
    assert re.match(r"OK: 7 records, 7 views and \d+ checkpoints? verified", with_views), with_views

    # the whole log, which --complete requires
    run("sealtrail", "bundle", "-o", str(tmp_path / "whole"), env=cli_env)
    whole = run("sealtrail", "verify", str(tmp_path / "whole"), "--key", key, "--complete")
    assert whole.stdout.startswith("OK: ") and "the complete log with no gap" in whole.stdout


def test_a_range_bundle_from_the_command_line_proves_the_range_complete(
    cli_env: dict[str, str], tmp_path: Path, tenant: str, verifier_key: str
) -> None:
    with AuditClient(cli_env["SEALTRAIL_SERVER"], token=cli_env["SEALTRAIL_TOKEN"]) as client:
        client.record_batch(
            [sealtrail.build_event(action="doc.edit", actor_id=f"u{i}") for i in range(10)]
        )  # seqs 2..11: seq 1 is the token's creation
    key = verifier_key
    out = str(tmp_path / "b")
    written = run("sealtrail", "bundle", "--seq", "3-8", "-o", out, env=cli_env)
    assert "wrote 6 records (seq 3..8)" in written.stdout
    assert "the range seq 3..8 is complete" in written.stdout
    verified = run("sealtrail", "verify", out, "--key", key, "--tenant", tenant, "--seq", "4-8")
    assert verified.stdout.startswith("OK: 6 records (seq 3..8)"), verified.stdout
    assert "the range seq 3..8 is complete and consistent with the signed checkpoint" in (
        verified.stdout
    )
    assert "partial" not in verified.stderr
    wider = run("sealtrail", "verify", out, "--key", key, "--seq", "2-8", check=False)
    assert wider.returncode == 1
    assert wider.stderr.startswith("FAILED: the bundle does not prove seq 2..8 complete")
    whole = run("sealtrail", "verify", out, "--key", key, "--complete", check=False)
    assert whole.returncode == 1
    assert whole.stderr.startswith("FAILED: a range bundle (seq 3..8 complete) where --complete")

    records, proofs = tmp_path / "b" / "records.ndjson", tmp_path / "b" / "proofs.ndjson"
    kept = records.read_text().splitlines(keepends=True)
    records.write_text("".join(kept[:2] + kept[3:]))
    proven = proofs.read_text().splitlines(keepends=True)
    proofs.write_text("".join(proven[:2] + proven[3:]))
    manifest = json.loads((tmp_path / "b" / "bundle.json").read_text())
    (tmp_path / "b" / "bundle.json").write_text(json.dumps({**manifest, "count": 5}))
    gap = run("sealtrail", "verify", out, "--key", key, check=False)
    assert gap.returncode == 1
    assert gap.stderr.startswith("FAILED: seq 5: missing (record 3 has seq 6)")


@pytest.mark.parametrize(
    ("options", "status", "says"),
    [
        (["--seq", "8-3"], 2, "the first seq 8 is after the last 3"),
        (["--seq", "3"], 2, "is not FIRST-LAST"),
        # Beyond the log: the option as typed, not the API's last_seq (helper-350).
        (["--seq", "3-500"], 1, "Error: --seq 3-500: the log ends at seq "),
        (["--seq", "3..500"], 1, "Error: --seq 3..500: the log ends at seq "),
        (["--seq", "3-5", "--action", "doc.edit"], 2, "takes no filter"),
        (["--seq", "3-5", "--received", "2026-11"], 2, "each choose the range"),
        (["--received", "2026-13"], 2, "is not a UTC year, month or day"),
        (["--received-until", "1h"], 2, "--received-until needs --received-since"),
        (["--received", "this month"], 2, "the period has not ended"),
        (["--received", "last month"], 1, "no event was received from"),
    ],
)
def test_a_range_bundle_asked_for_wrongly_is_refused_saying_why(
    cli_env: dict[str, str], tmp_path: Path, options: list[str], status: int, says: str
) -> None:
    now = datetime.now(UTC)
    months = {
        "this month": now.strftime("%Y-%m"),
        "last month": (now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m"),
    }
    options = [months.get(option, option) for option in options]
    refused = run(
        "sealtrail", "bundle", *options, "-o", str(tmp_path / "b"), env=cli_env, check=False
    )
    assert refused.returncode == status, refused.stderr
    assert says in refused.stderr
    assert not (tmp_path / "b").exists()


def test_a_bundle_of_a_period_not_yet_ended_names_the_option_for_the_period_so_far(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The README's `bundle --received 2026-11`, run on the current month, said
    the API's words cut short ("...the period has not ended; leave it…"): the
    command line has no `until` to leave unset (helper-196)."""
    start = datetime.now(UTC).replace(day=1)
    refused = run(
        "sealtrail",
        "bundle",
        "--received",
        start.strftime("%Y-%m"),
        "-o",
        str(tmp_path / "b"),
        env=cli_env,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert f"--received-since {start:%Y-%m-%d} bundles it so far" in refused.stderr
    assert "…" not in refused.stderr
    written = run(
        "sealtrail",
        "bundle",
        "--received-since",
        f"{start:%Y-%m-%d}",
        "-o",
        str(tmp_path / "b"),
        env=cli_env,
    )
    assert "is complete, chosen by receipt time" in written.stdout


def test_the_readmes_bundle_and_verify_run_as_written_on_a_new_server(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """The README's `sealtrail bundle --received 2026-11 -o nov-audit`, run on
    a server started since (a new user's), found no event received in
    November, and its `sealtrail verify nov-audit` failed again (helper-517):
    the README's three commands, run as written on a tenant whose log began
    today, pin the key, write a bundle and verify it with the key pinned."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = [
        line.split("  #")[0].strip()
        for line in readme.splitlines()
        if line.startswith(("sealtrail keys ", "sealtrail bundle ", "sealtrail verify "))
    ]
    assert [line.split()[1] for line in lines] == ["keys", "bundle", "verify"], lines
    keys, bundle, verify = lines
    assert keys == "sealtrail keys > vkey.txt", keys
    pinned = tmp_path / "vkey.txt"
    pinned.write_text(run("sealtrail", "keys", env=cli_env).stdout)
    assert pinned.read_text().splitlines()[0] == verifier_key  # the active key first
    bundle_words = shlex.split(bundle)
    verify_words = shlex.split(verify.replace('"$(head -1 vkey.txt)"', "KEY"))
    out = bundle_words[bundle_words.index("-o") + 1]
    assert out in verify_words

    def placed(words: list[str]) -> list[str]:
        """The words, the bundle's directory in `tmp_path`, the pinned key given."""
        first_key = pinned.read_text().splitlines()[0]
        return [
            str(tmp_path / out) if word == out else first_key if word == "KEY" else word
            for word in words
        ]

    run("sealtrail", "record", "--action", "member.invite", "--actor-id", "u_42", env=cli_env)
    written = run(*placed(bundle_words), env=cli_env, check=False)
    assert written.returncode == 0, written.stderr
    verified = run(*placed(verify_words), check=False)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("OK: "), verified.stdout
    assert "complete" in verified.stdout, verified.stdout


def test_a_bundle_of_what_was_received_says_how_its_range_was_chosen(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    with AuditClient(cli_env["SEALTRAIL_SERVER"], token=cli_env["SEALTRAIL_TOKEN"]) as client:
        client.record_batch([sealtrail.build_event(action="doc.edit", actor_id="u")] * 4)
    key = verifier_key
    out = str(tmp_path / "b")
    written = run("sealtrail", "bundle", "--received-since", "1h", "-o", out, env=cli_env)
    assert "the range seq 1..5 is complete, chosen by receipt time" in written.stdout
    verified = run("sealtrail", "verify", out, "--key", key)
    assert re.search(
        r"the range seq 1\.\.5 is complete, chosen by receipt time: the events received from"
        r" \S+Z to \S+Z and consistent with the signed checkpoint",
        verified.stdout,
    ), verified.stdout
    # seq 6, the bundle's own export, shows the range ends where the period did
    assert "warning" not in verified.stderr, verified.stderr


def test_a_bundle_is_written_and_verified_in_a_locale_that_is_not_utf_8(
    cli_env: dict[str, str], tmp_path: Path, tenant: str, verifier_key: str
) -> None:
    """A bundle's checkpoint has non-ASCII (the signature lines' em dash): its
    files are UTF-8 whatever the machine's locale, or an auditor's Windows or
    C-locale machine could not write or read a good bundle."""
    run("sealtrail", "record", "--action", "api_key.create", "--actor-id", "ops", env=cli_env)
    key = verifier_key
    ascii_only = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    out = str(tmp_path / "b")
    run("sealtrail", "bundle", "-o", out, env={**cli_env, **ascii_only})
    verified = run("sealtrail", "verify", out, "--key", key, "--tenant", tenant, env=ascii_only)
    assert verified.stdout.startswith("OK: "), verified.stderr


def test_a_revoked_token_is_refused(cli_env: dict[str, str], migrated_database_url: str) -> None:
    created = run(
        "sealtrail-server",
        "token",
        "create",
        "--tenant",
        "revocation-test",
        "--role",
        "reader",
        "--database-url",
        migrated_database_url,
    )
    token_id = created.stderr.split()[1]
    run("sealtrail-server", "token", "revoke", token_id, "--database-url", migrated_database_url)
    listed = run(
        "sealtrail-server",
        "token",
        "list",
        "--tenant",
        "revocation-test",
        "--database-url",
        migrated_database_url,
    ).stdout
    assert token_id in listed and "revoked" in listed
    env = {**cli_env, "SEALTRAIL_TOKEN": created.stdout.strip().splitlines()[-1]}
    refused = run("sealtrail", "query", env=env, check=False)
    assert refused.returncode == 2 and "UNAUTHENTICATED" in refused.stderr
    with psycopg.connect(migrated_database_url) as conn:
        recorded = conn.execute(
            "SELECT action, resource_id, record::jsonb -> 'actor' ->> 'type' FROM events"
            " WHERE tenant_id = 'revocation-test' ORDER BY seq"
        ).fetchall()
    assert recorded == [
        ("api_token.created", token_id, "system"),
        ("api_token.revoked", token_id, "system"),
        ("api_token.listed", None, "system"),
        # The revoked token's attempt, in its tenant's log (ADR 0060).
        ("audit_log.access_denied", "revocation-test", "api_key"),
    ]
    # A mistyped tenant: said so, and no log begun for it with a listing's record.
    mistyped = run(
        "sealtrail-server", "token", "list", "--tenant", "revocation-tset",
        "--database-url", migrated_database_url, check=False,
    )  # fmt: skip
    assert mistyped.returncode == 1 and "has no tokens" in mistyped.stderr
    with psycopg.connect(migrated_database_url) as conn:
        begun = conn.execute("SELECT count(*) FROM events WHERE tenant_id = 'revocation-tset'")
        assert begun.fetchone() == (0,)


def test_a_refusal_with_a_retry_delay_says_when_to_retry(
    migrated_database_url: str, tenant: str, tmp_path: Path
) -> None:
    """An export past the tenant's rate is refused with the rest of the
    window as its retry delay: the command says it, not only the rate
    (the delay was dropped, and a user could only guess, helper-217)."""
    token = admin_token(migrated_database_url, tenant)
    process = ServerProcess(migrated_database_url, env={"SEALTRAIL_EXPORT_RATE_LIMIT": "1"})
    try:
        env = {"SEALTRAIL_SERVER": process.target, "SEALTRAIL_TOKEN": token}
        run("sealtrail", "export", "-o", str(tmp_path / "first.ndjson"), env=env)
        refused = run(
            "sealtrail", "export", "-o", str(tmp_path / "second.ndjson"), env=env, check=False
        )
    finally:
        process.terminate()
    assert refused.returncode == 1
    assert "RESOURCE_EXHAUSTED (EXPORT_RATE_LIMITED)" in refused.stderr
    assert "at most 1 export per 60 s per tenant" in refused.stderr  # not "1 exports"
    told = re.search(r"^  retry after: (\d+(?:\.\d)?) s$", refused.stderr, re.MULTILINE)
    assert told is not None, refused.stderr
    assert 50 <= float(told[1]) <= 60  # the window's rest: 60 s less the first export's age
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "second.ndjson").exists()


def test_export_and_tail_from_the_command_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    for action in ("file.read", "file.write"):
        run("sealtrail", "record", "--action", action, "--actor-id", "ops", env=cli_env)
    out = tmp_path / "audit.csv"
    exported = run(
        "sealtrail", "export", "--format", "csv", "--action", "file.*", "-o", str(out), env=cli_env
    )
    assert exported.stdout.startswith("exported 2 events")
    assert out.read_text().splitlines()[0].startswith("seq,id,occurred_at")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    bundled = tmp_path / "bundle"
    bundled.mkdir()  # a new or empty directory, as `sealtrail bundle` takes
    run("sealtrail", "export", "--format", "bundle", "-o", str(bundled), env=cli_env)
    refused = run(
        "sealtrail", "export", "--format", "csv", "-o", str(bundled), env=cli_env, check=False
    )
    assert refused.returncode == 2 and "is a directory" in refused.stderr
    a_file = run(
        "sealtrail", "export", "--format", "bundle", "-o", str(out), env=cli_env, check=False
    )
    assert a_file.returncode == 2 and "is not a directory" in a_file.stderr
    for command in ("export", "bundle"):  # a reason, not a traceback
        # /proc takes no file or directory of ours, even root's (as CI runs).
        unwritable = run("sealtrail", command, "-o", "/proc/audit", env=cli_env, check=False)
        assert unwritable.returncode == 1, unwritable.stderr
        assert "cannot write" in unwritable.stderr and "Traceback" not in unwritable.stderr
    # Without --key, against the bundle's own keys: consistent, not authentic.
    unkeyed = run("sealtrail", "verify", str(bundled), check=False)
    assert unkeyed.returncode == 3 and unkeyed.stdout.startswith("SELF-CONSISTENT: ")
    assert "not authenticated" in unkeyed.stderr

    tail = subprocess.Popen(
        [str(BIN / "sealtrail"), "tail", "--from-seq", "0", "--action", "file.*"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **cli_env},
    )
    try:
        assert tail.stdout is not None
        lines = [json.loads(tail.stdout.readline()) for _ in range(2)]
        assert [line["action"] for line in lines] == ["file.read", "file.write"]
        run("sealtrail", "record", "--action", "file.delete", "--actor-id", "ops", env=cli_env)
        assert json.loads(tail.stdout.readline())["action"] == "file.delete"
        tail.send_signal(signal.SIGINT)  # Ctrl-C: ended, as a shell reports it
        assert tail.wait(30) == 130
    finally:
        if tail.poll() is None:
            tail.terminate()
            tail.wait(30)
        if tail.stdout is not None:
            tail.stdout.close()


@pytest.fixture
def json_logging_server(migrated_database_url: str, tenant: str) -> Iterator[ServerProcess]:
    """A server process logging JSON lines at debug level (one line per call)."""
    process = ServerProcess(
        migrated_database_url, env={"SEALTRAIL_LOG_FORMAT": "json"}, verbose=True
    )
    try:
        yield process
    finally:
        process.terminate()


def test_trace_and_request_ids_lead_from_the_command_line_to_events_and_log_lines(
    json_logging_server: ServerProcess, migrated_database_url: str, tenant: str, tmp_path: Path
) -> None:
    env = {
        "SEALTRAIL_SERVER": json_logging_server.target,
        "SEALTRAIL_TOKEN": admin_token(migrated_database_url, tenant),
    }
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    request_id = "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"
    # An application's span, as its tracing would have set it: the API alone.
    span = NonRecordingSpan(SpanContext(int(trace_id, 16), 0xF067AA0BA902B7, False, TraceFlags(1)))
    with AuditClient(env["SEALTRAIL_SERVER"], token=env["SEALTRAIL_TOKEN"]) as client:
        client.record(action="job.start", actor_id="cron")  # in no trace
        with trace.use_span(span), sealtrail.request_id(request_id):
            client.record(action="job.step", actor_id="cron")
            client.record(action="job.finish", actor_id="cron")
        client.record(action="job.start", actor_id="cron")

    def ids(stdout: str) -> list[str]:
        return [json.loads(line)["action"] for line in stdout.splitlines()]

    queried = run("sealtrail", "query", "--trace-id", trace_id, "--format", "jsonl", env=env)
    assert ids(queried.stdout) == ["job.finish", "job.step"]
    by_request = run(
        "sealtrail", "query", "--request-id", request_id, "--order", "oldest", "--format", "jsonl",
        env=env,
    )  # fmt: skip
    assert ids(by_request.stdout) == ["job.step", "job.finish"]
    assert {json.loads(line)["context"]["spanId"] for line in by_request.stdout.splitlines()} == {
        "00f067aa0ba902b7"
    }
    out = tmp_path / "job.ndjson"
    run(
        "sealtrail", "export", "--format", "ndjson", "--trace-id", trace_id, "-o", str(out), env=env
    )
    assert [json.loads(line)["action"] for line in out.read_text().splitlines()] == [
        "job.step",
        "job.finish",
    ]

    tail = subprocess.Popen(
        [str(BIN / "sealtrail"), "tail", "--from-seq", "0", "--request-id", request_id],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    try:
        assert tail.stdout is not None
        assert [json.loads(tail.stdout.readline())["action"] for _ in range(2)] == [
            "job.step",
            "job.finish",
        ]
        # Live: an event of another request is skipped, the next of this one shows.
        run("sealtrail", "record", "--action", "job.other", "--actor-id", "cron", env=env)
        run(
            "sealtrail", "record", "--action", "job.retry", "--actor-id", "cron",
            "--request-id", request_id, env=env,
        )  # fmt: skip
        assert json.loads(tail.stdout.readline())["action"] == "job.retry"
    finally:
        tail.terminate()
        tail.wait(30)
        if tail.stdout is not None:
            tail.stdout.close()

    json_logging_server.terminate()
    # Every line Python logs is JSON (gRPC's C core may add lines like "I1122 05:38:30.3 ...").
    lines = [
        json.loads(line)
        for line in json_logging_server.stderr
        if not re.match(r"[IWEF]\d{4} ", line)
    ]
    calls = [line for line in lines if line.get("request_id") == request_id]
    assert [line["message"].split(" in ")[0] for line in calls[:2]] == [
        "sealtrail.v1.AuditLogService/Record OK",
        "sealtrail.v1.AuditLogService/Record OK",
    ]
    assert {line["trace_id"] for line in calls[:2]} == {trace_id}
    assert all(line["level"] == "DEBUG" for line in calls[:2])


def test_retention_legal_hold_and_erasure_from_the_command_line(
    cli_env: dict[str, str], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    assert run("sealtrail", "retention", env=cli_env).stdout.startswith("default: forever")
    bad = run("sealtrail", "retention", "set", "90d", "--action", "rag=5", env=cli_env, check=False)
    assert bad.returncode == 2 and "--action rag=5: must be a prefix" in bad.stderr
    scripted = run("sealtrail", "retention", "set", "90d", env=cli_env, check=False)
    assert scripted.returncode == 2  # forever to 90 days, from a script: not unless --yes
    assert "keeps events less long than now; pass --yes" in scripted.stderr
    run(
        "sealtrail", "retention", "set", "90d", "--category", "authentication=1y",
        "--action", "rag.*=30", "--yes", env=cli_env,
    )  # fmt: skip
    shown = run("sealtrail", "retention", env=cli_env).stdout
    assert "default: 90 days" in shown and "category authentication: 365 days" in shown
    assert "actions rag.*: 30 days" in shown and "legal hold: off" in shown
    [etag] = [line.removeprefix("etag: ") for line in shown.splitlines() if line.startswith("etag")]
    dry = run("sealtrail", "retention", "set", "30d", "--etag", etag, "--dry-run", env=cli_env)
    assert dry.stdout.startswith("would remove 0 events now\n  default: 0 events (30 days:")
    assert run("sealtrail", "retention", env=cli_env).stdout == shown  # a dry run changes nothing
    run("sealtrail", "retention", "set", "30d", "--etag", etag, "--yes", env=cli_env)
    stale = run("sealtrail", "retention", "set", "1y", "--etag", etag, env=cli_env, check=False)
    assert stale.returncode == 1 and "changed since that etag was read" in stale.stderr
    assert "default: 30 days" in run("sealtrail", "retention", env=cli_env).stdout
    run("sealtrail", "legal-hold", "on", "--reason", "Case 7", env=cli_env)
    assert "legal hold: on (Case 7)" in run("sealtrail", "retention", env=cli_env).stdout
    held = run("sealtrail", "erase-tenant", "--confirm", tenant, env=cli_env, check=False)
    assert held.returncode == 1 and "legal hold" in held.stderr
    run("sealtrail", "legal-hold", "off", env=cli_env)
    receipt = json.loads(run("sealtrail", "erase-tenant", "--confirm", tenant, env=cli_env).stdout)
    assert receipt["tenantId"] == tenant and int(receipt["finalTreeSize"]) >= 4
    assert sql.execute("SELECT count(*) FROM events WHERE tenant_id = %s", [tenant]).fetchone() == (
        0,
    )


def test_retention_takes_days_weeks_and_years_as_other_commands_take_durations(
    cli_env: dict[str, str],
) -> None:
    """`retention set 7d` and `2y` were refused ("not one of 30d, 90d, 180d, 1y,
    forever"), while `7` was taken and every other command takes `7d` (helper-165)."""
    run("sealtrail", "retention", "set", "7d", "--category", "authentication=2y",
        "--action", "rag.*=2w", "--yes", env=cli_env)  # fmt: skip
    shown = run("sealtrail", "retention", env=cli_env).stdout
    assert "default: 7 days" in shown and "category authentication: 730 days" in shown
    assert "actions rag.*: 14 days" in shown
    bad = run("sealtrail", "retention", "set", "7h", "--yes", env=cli_env, check=False)
    assert bad.returncode == 2
    assert "'7h' is not days (e.g. 90 or 90d), weeks (2w), years (1y) or forever" in bad.stderr


def test_an_admin_sets_and_clears_personal_data_fields_from_the_command_line(
    cli_env: dict[str, str],
) -> None:
    """`sealtrail settings --personal-data-fields` (ADR 0154): set, shown,
    applied to the next event, cleared with ''; its help says stored events
    are not rewritten."""
    helped = run("sealtrail", "settings", "--help", env=cli_env).stdout
    assert "not rewritten" in " ".join(helped.split())
    changed = run("sealtrail", "settings", "--personal-data-fields", "ssn, phone", env=cli_env)
    assert changed.stdout.startswith("settings updated\n")
    assert "personal data fields: ssn, phone\n" in changed.stdout
    details = '{"ssn": "123-45-6789"}'
    recorded = run("sealtrail", "record", "--action", "customer.update", "--actor-id", "u",
                   "--details", details, env=cli_env)  # fmt: skip
    event = json.loads(recorded.stdout)
    assert event["details"] == {"ssn": "[REDACTED:personal_data]"}
    refused = run("sealtrail", "settings", "--personal-data-fields", "ssn,_", env=cli_env,
                  check=False)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "--personal-data-fields[1] '_': is no name" in refused.stderr, refused.stderr
    cleared = run("sealtrail", "settings", "--personal-data-fields", "", env=cli_env)
    assert "personal data fields: none\n" in cleared.stdout
    assert "personal data fields: none\n" in run("sealtrail", "settings", env=cli_env).stdout


def test_an_admin_sets_ip_recording_from_the_command_line(cli_env: dict[str, str]) -> None:
    """`sealtrail settings --ip-recording` (ADR 0154): set, shown, applied to
    the next event; its help says stored events are not rewritten."""
    helped = " ".join(run("sealtrail", "settings", "--help", env=cli_env).stdout.split())
    assert "--ip-recording [full|truncated|none]" in helped
    assert helped.count("not rewritten") == 2  # beside each of the two lists of what is kept
    changed = run("sealtrail", "settings", "--ip-recording", "truncated", env=cli_env)
    assert "ip recording: truncated\n" in changed.stdout
    event = json.loads(run("sealtrail", "record", "--action", "user.login", "--actor-id", "u",
                           "--ip", "198.51.100.77", env=cli_env).stdout)  # fmt: skip
    assert event["context"]["ip"] == "198.51.100.0"
    run("sealtrail", "settings", "--ip-recording", "none", env=cli_env)
    assert "ip recording: none\n" in run("sealtrail", "settings", env=cli_env).stdout


def test_an_admin_changes_several_settings_in_one_update_from_the_command_line(
    cli_env: dict[str, str],
) -> None:
    """`sealtrail settings` refused two changes together ("give one change at
    a time"), where UpdateTenantSettings takes several in one field mask: they
    are made in one update, one record of it, or none of them is; a refused
    name of --personal-data-fields is named by its index and value, as the
    server's `settings.personal_data_fields[i]` names it, not by the option
    alone, which left the user to find which of the names it was."""

    def updates() -> int:
        found = run("sealtrail", "query", "--action", "tenant.settings_updated", "--format",
                    "jsonl", "--limit", "0", env=cli_env).stdout  # fmt: skip
        return len(found.splitlines())

    before = updates()
    changed = run("sealtrail", "settings", "--personal-data-fields", "ssn,phone",
                  "--ip-recording", "truncated", "--strict-actions", "on", env=cli_env)  # fmt: skip
    assert changed.stdout.startswith("settings updated\n"), changed.stdout
    for line in (
        "strict actions: on",
        "personal data fields: ssn, phone",
        "ip recording: truncated",
    ):
        assert f"{line}\n" in changed.stdout, changed.stdout
    assert updates() == before + 1  # one update, one record of it
    refused = run("sealtrail", "settings", "--ip-recording", "none", "--personal-data-fields",
                  "email, _ ,-", env=cli_env, check=False)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "--personal-data-fields[1] '_': is no name" in refused.stderr, refused.stderr
    assert "--personal-data-fields[2] '-': is no name" in refused.stderr, refused.stderr
    shown = run("sealtrail", "settings", env=cli_env).stdout
    assert "ip recording: truncated\n" in shown and "personal data fields: ssn, phone\n" in shown
    assert updates() == before + 1


def test_a_tenants_admin_manages_tokens_and_settings_from_the_command_line(
    cli_env: dict[str, str],
) -> None:
    """What `sealtrail-server token` does with the database's URL, a tenant's
    admin does with its token alone; and reads one event, its settings, and
    the HMAC of a secret to search for."""
    created = run("sealtrail", "tokens", "create", "--role", "recorder", "--name", "billing",
                  env=cli_env)  # fmt: skip
    secret = created.stdout.strip()
    assert secret.startswith("stk_") and "\n" not in secret  # alone: TOKEN=$(...) works
    [token_id] = re.findall(r"^token (\S+) with role recorder:$", created.stderr, re.MULTILINE)
    recorder = {**cli_env, "SEALTRAIL_TOKEN": secret}
    event = json.loads(run("sealtrail", "record", "--action", "invoice.pay", "--actor-id", "u",
                           env=recorder).stdout)  # fmt: skip
    assert json.loads(run("sealtrail", "get", event["id"], env=cli_env).stdout) == event
    listed = run("sealtrail", "tokens", env=cli_env).stdout
    assert token_id in listed and "billing" in listed and "recorder" in listed

    revoked = run("sealtrail", "tokens", "revoke", token_id, env=cli_env)
    assert revoked.stdout.startswith(f"token {token_id} revoked at ")
    refused = run("sealtrail", "record", "--action", "invoice.pay", "--actor-id", "u",
                  env=recorder, check=False)  # fmt: skip
    assert refused.returncode == 2 and "UNAUTHENTICATED" in refused.stderr
    missing = run("sealtrail", "get", str(uuid.uuid4()), env=cli_env, check=False)
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr

    shown = run("sealtrail", "settings", env=cli_env).stdout
    assert shown.startswith(
        "redaction mode: replace\nstrict actions: off\npersonal data fields: none\n"
        "ip recording: full\nupdated: never\netag: "
    )
    etag = shown.splitlines()[-1].removeprefix("etag: ")
    changed = run("sealtrail", "settings", "redaction-mode", "hmac", "--etag", etag, env=cli_env)
    assert changed.stdout == "settings updated\n"
    stale = run("sealtrail", "settings", "redaction-mode", "replace", "--etag", etag,
                env=cli_env, check=False)  # fmt: skip
    assert stale.returncode == 1 and "changed since that etag was read" in stale.stderr
    assert run("sealtrail", "settings", env=cli_env).stdout.startswith("redaction mode: hmac\n")
    hashed = run("sealtrail", "hash-secret", env=cli_env, stdin="hunter2\n").stdout.strip()
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{64}", hashed)
    run("sealtrail", "record", "--action", "user.login", "--actor-id", "u",
        "--details", '{"password": "hunter2"}', env=cli_env)  # fmt: skip
    found = run("sealtrail", "query", "--search", hashed, "--action", "user.login",
                "--format", "jsonl", env=cli_env)  # fmt: skip
    [login] = [json.loads(line) for line in found.stdout.splitlines()]
    assert login["details"] == {"password": hashed}


def test_events_queried_from_one_log_are_imported_into_another_once(
    cli_env: dict[str, str], migrated_database_url: str, tmp_path: Path
) -> None:
    """A backfill: the lines `query --format jsonl` prints are recorded in
    another tenant's log, received now, with new ids and seqs; imported
    again, each is recorded once; a line that is no event, or one the
    service refuses, is named and the rest go on."""
    for action in ("member.invite", "member.remove", "member.invite"):
        run("sealtrail", "record", "--action", action, "--actor-id", "u_1", env=cli_env)
    queried = run("sealtrail", "query", "--action", "member.*", "--order", "oldest",
                  "--limit", "0", "--format", "jsonl", env=cli_env).stdout  # fmt: skip
    source = tmp_path / "backfill.ndjson"
    source.write_text(queried + "not json\n\n" + '{"action": "Bad", "actor": {"id": "u"}}\n')
    other = {**cli_env, "SEALTRAIL_TOKEN": admin_token(migrated_database_url, "imported-into")}

    imported = run("sealtrail", "import", str(source), env=other, check=False)
    assert imported.returncode == 3  # went through the file, refusing lines
    assert imported.stdout == f"recorded 3 events from {source}; 2 lines refused\n"
    assert imported.stderr.splitlines()[0].startswith("line 4: not an Event")
    assert imported.stderr.splitlines()[1].startswith("line 6: INVALID_ARGUMENT: action: ")
    original = [json.loads(line) for line in queried.splitlines()]
    copied = [
        json.loads(line)
        for line in run("sealtrail", "query", "--action", "member.*", "--order", "oldest",
                        "--format", "jsonl", env=other).stdout.splitlines()
    ]  # fmt: skip
    kept = ("action", "occurredAt", "actor", "idempotencyKey")
    assert [{k: e[k] for k in kept} for e in copied] == [{k: e[k] for k in kept} for e in original]
    assert [e["tenantId"] for e in copied] == ["imported-into"] * 3
    assert [int(e["seq"]) for e in copied] == [2, 3, 4]  # after its token's creation
    assert {e["id"] for e in copied}.isdisjoint(e["id"] for e in original)

    again = run("sealtrail", "import", "-", env=other, check=False, stdin=queried)
    assert (again.returncode, again.stdout) == (0, "recorded 0 events, 3 events already recorded"
                                                   " from stdin\n")  # fmt: skip
    # A line with a key but no time: recorded at its first import's time, and
    # the same event when imported again.
    keyed = '{"action": "member.invite", "actor": {"id": "u_2"}, "idempotencyKey": "bf-1"}\n'
    first = run("sealtrail", "import", "-", env=other, stdin=keyed, check=False)
    second = run("sealtrail", "import", "-", env=other, stdin=keyed, check=False)
    assert first.stdout == "recorded 1 event from stdin\n", first.stderr
    assert second.stdout == "recorded 0 events, 1 event already recorded from stdin\n", (
        second.stderr
    )


def test_an_import_takes_enum_values_as_the_command_line_flags_do(
    cli_env: dict[str, str],
) -> None:
    """`"category": "member"` was refused ("Invalid enum value member"): an
    import line took only proto JSON's CATEGORY_MEMBER, while `--category
    member` is how every command writes it (helper-165)."""
    lines = (
        '{"action": "member.invite", "actor": {"id": "u_1", "type": "service"},'
        ' "category": "member", "severity": "Warning", "outcome": "failure"}\n'
        '{"action": "member.remove", "actor": {"id": "u_2"}, "category": "CATEGORY_MEMBER"}\n'
        '{"action": "member.invite", "actor": {"id": "u_3"}, "category": "members"}\n'
    )
    imported = run("sealtrail", "import", "-", env=cli_env, stdin=lines, check=False)
    assert imported.returncode == 3, imported.stderr
    assert imported.stdout == "recorded 2 events from stdin; 1 line refused\n"
    assert imported.stderr.startswith("line 3: not an Event: Failed to parse category field")
    found = run("sealtrail", "query", "--category", "member", "--order", "oldest",
                "--format", "jsonl", env=cli_env).stdout  # fmt: skip
    events = [json.loads(line) for line in found.splitlines()]
    assert [e["actor"] for e in events] == [
        {"id": "u_1", "type": "ACTOR_TYPE_SERVICE"},
        {"id": "u_2", "type": "ACTOR_TYPE_USER"},
    ]
    assert (events[0]["severity"], events[0]["outcome"]) == ("SEVERITY_WARNING", "OUTCOME_FAILURE")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_import_from_a_pipe_waiting_for_lines_is_stopped_saying_how_far_it_went(
    cli_env: dict[str, str], stop: signal.Signals
) -> None:
    """The thread reading ahead (the next batch is read while the last is
    sent) waits on the pipe for a fourth line when the import is stopped.
    Reading stdin's own file, it held that file's lock, and Python aborted at
    exit, after saying how far the import went: "Fatal Python error: could not
    acquire lock for <_io.BufferedReader name='<stdin>'>", SIGABRT where
    Ctrl-C ends an import with 130 (and SIGTERM with 143)."""
    line = json.dumps({"action": "import.waiting", "actor": {"id": "u"}}) + "\n"
    importing = subprocess.Popen(
        [str(BIN / "sealtrail"), "import", "--batch-size", "2", "--import-id", "a-pipe-import-id"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **cli_env},
    )
    try:
        assert importing.stdin is not None
        importing.stdin.write((line * 3).encode())
        importing.stdin.flush()  # and left open: the import waits for a fourth line
        with AuditClient(cli_env["SEALTRAIL_SERVER"], token=cli_env["SEALTRAIL_TOKEN"]) as client:
            deadline = time.monotonic() + 60
            while len(client.query_page(build_filter(actions="import.waiting")).events) < 2:
                assert time.monotonic() < deadline, "the first batch was never recorded"
                time.sleep(0.05)
        importing.send_signal(stop)
        importing.wait(60)  # stdin left open: no end of file ends the reading
        assert importing.stdout is not None and importing.stderr is not None
        out, err = importing.stdout.read(), importing.stderr.read()
    finally:
        if importing.poll() is None:
            importing.kill()
            importing.wait(60)
        for pipe in (importing.stdin, importing.stdout, importing.stderr):
            if pipe is not None:
                pipe.close()
    assert (importing.returncode, out) == (128 + stop, b""), err
    go_on = b"; to go on, import it again with --import-id a-pipe-import-id: no line is recorded"
    assert err in (
        b"recorded 2 events from stdin; every line up to 2 was dealt with" + go_on + b" twice\n",
        # Stopped before the first call's answer, stored already, reached it.
        b"recorded 0 events from stdin; every line up to 0 was dealt with;"
        b" lines 1 to 2, sent when it stopped, may have been recorded" + go_on + b" twice\n",
    )


def test_sinks_from_the_command_line(cli_env: dict[str, str]) -> None:
    with endpoint() as receiver:
        receiver.responder = lambda received, index: Reply(400) if index == 0 else Reply()
        created = run(
            "sealtrail", "sinks", "create", "siem", "--kind", "webhook", "--url", receiver.url,
            "--generate-secret", "--action", "document.*", env=cli_env,
        )  # fmt: skip
        sink_id = created.stdout.strip()
        assert "signing secret (shown once): whsec_" in created.stderr
        run("sealtrail", "record", "--action", "document.share", "--actor-id", "u-1", env=cli_env)
        receiver.wait_for(lambda r: len(r) >= 1)
        listed = run("sealtrail", "sinks", "dead-letters", sink_id, env=cli_env)
        for _ in range(100):
            if "400" in listed.stdout:
                break
            time.sleep(0.1)
            listed = run("sealtrail", "sinks", "dead-letters", sink_id, env=cli_env)
        assert "400" in listed.stdout
        shown = json.loads(run("sealtrail", "sinks", "show", sink_id, env=cli_env).stdout)
        assert shown["name"] == "siem" and "secrets" not in shown["webhook"]
        run("sealtrail", "sinks", "pause", sink_id, env=cli_env)
        assert "paused" in run("sealtrail", "sinks", env=cli_env).stdout
        run("sealtrail", "sinks", "resume", sink_id, env=cli_env)
        old = created.stderr.split("signing secret (shown once): ")[1].split()[0]
        rotated = run(
            "sealtrail", "sinks", "update", sink_id, "--name", "siem 2", "--secret", old,
            "--generate-secret", "--action", "document.share", env=cli_env,
        )  # fmt: skip
        new = rotated.stderr.split("signing secret (shown once): ")[1].split()[0]
        shown = json.loads(run("sealtrail", "sinks", "show", sink_id, env=cli_env).stdout)
        assert shown["name"] == "siem 2" and shown["filter"]["actions"] == ["document.share"]
        assert shown["webhook"]["url"] == receiver.url and not shown.get("paused")
        assert shown["webhook"]["secretHints"] == [old[-4:], new[-4:]]
        nothing = run("sealtrail", "sinks", "update", sink_id, env=cli_env, check=False)
        assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
        wrong = run(
            "sealtrail", "sinks", "update", sink_id, "--token", "t", env=cli_env, check=False
        )
        assert wrong.returncode == 2 and "webhook sink takes no token" in wrong.stderr
        replayed = run("sealtrail", "sinks", "replay", sink_id, "--seq", "1-1", env=cli_env)
        assert "requested" in replayed.stdout
        bad = run("sealtrail", "sinks", "replay", sink_id, env=cli_env, check=False)
        assert bad.returncode == 2 and "exactly one" in bad.stderr
        # Deleted only as it was read: a change made since (here, a pause) is not deleted unseen.
        etag = json.loads(run("sealtrail", "sinks", "show", sink_id, env=cli_env).stdout)["etag"]
        run("sealtrail", "sinks", "pause", sink_id, env=cli_env)
        stale = run(
            "sealtrail", "sinks", "delete", sink_id, "--etag", etag, env=cli_env, check=False
        )
        assert stale.returncode != 0 and "sealtrail sinks show" in stale.stderr
        etag = json.loads(run("sealtrail", "sinks", "show", sink_id, env=cli_env).stdout)["etag"]
        run("sealtrail", "sinks", "delete", sink_id, "--etag", etag, env=cli_env)
        missing = run("sealtrail", "sinks", "show", sink_id, env=cli_env, check=False)
        assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr


def test_a_chat_sink_from_the_command_line_never_shows_its_url(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """docs/alerting.md's chat channel: the URL read from a file (it is the
    credential), never printed back by `show` or the list."""
    with endpoint() as channel, endpoint() as moved_to:
        secret = uuid.uuid4().hex[:24]
        (tmp_path / "slack-url.txt").write_text(f"{channel.url}/services/T01/B02/{secret}\n")
        created = run(
            "sealtrail", "sinks", "create", "ops", "--kind", "chat",
            "--url", f"@{tmp_path / 'slack-url.txt'}", "--action", "document.*", env=cli_env,
        )  # fmt: skip
        sink_id = created.stdout.strip()
        recorded = run(
            "sealtrail", "record", "--action", "document.share", "--actor-id", "u-1", env=cli_env
        )
        [request] = channel.wait_for(lambda r: len(r) >= 1)
        assert request.path == f"/services/T01/B02/{secret}"
        text = json.loads(request.body)["text"]
        assert text.startswith("[info] document.share by u-1 (success) at ")
        assert "seq " in text and recorded.returncode == 0
        shown = run("sealtrail", "sinks", "show", sink_id, env=cli_env).stdout
        assert json.loads(shown)["chat"] == {"urlHint": f"{channel.url}/services/T01/B02/…"}
        listed = run("sealtrail", "sinks", env=cli_env).stdout
        assert "chat" in listed and secret not in listed and secret not in shown
        wrong = run(
            "sealtrail", "sinks", "update", sink_id, "--index", "x", env=cli_env, check=False
        )
        assert wrong.returncode == 2 and "chat sink takes no index" in wrong.stderr
        moved = f"{moved_to.url}/hooks/{uuid.uuid4().hex}"
        run("sealtrail", "sinks", "update", sink_id, "--url", "-", env=cli_env, stdin=moved + "\n")
        shown = run("sealtrail", "sinks", "show", sink_id, env=cli_env).stdout
        assert json.loads(shown)["chat"] == {"urlHint": f"{moved_to.url}/hooks/…"}
        run("sealtrail", "record", "--action", "document.share", "--actor-id", "u-2", env=cli_env)
        [moved_request] = moved_to.wait_for(lambda r: len(r) >= 1)
        assert "by u-2" in json.loads(moved_request.body)["text"]
        run("sealtrail", "sinks", "delete", sink_id, env=cli_env)


def test_a_generated_secret_is_shown_only_for_a_sink_the_server_took(
    cli_env: dict[str, str],
) -> None:
    """`--generate-secret` printed "signing secret (shown once)" before the
    call: a sink the server then refused (or an update it refused, the old
    secret kept) left a receiver set up with a secret nothing signs with (helper-165)."""
    refused = run(
        "sealtrail", "sinks", "create", "siem", "--kind", "webhook",
        "--url", "http://10.0.0.1/hook", "--generate-secret", env=cli_env, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr
    assert "whsec_" not in refused.stderr + refused.stdout
    with endpoint() as receiver:
        created = run(
            "sealtrail", "sinks", "create", "siem", "--kind", "webhook", "--url", receiver.url,
            "--generate-secret", env=cli_env,
        )  # fmt: skip
        sink_id = created.stdout.strip()
        assert "signing secret (shown once): whsec_" in created.stderr
        not_updated = run(
            "sealtrail", "sinks", "update", sink_id, "--generate-secret",
            "--url", "http://10.0.0.1/hook", env=cli_env, check=False,
        )  # fmt: skip
        assert not_updated.returncode == 2 and "INVALID_ARGUMENT" in not_updated.stderr
        assert "whsec_" not in not_updated.stderr + not_updated.stdout
        wrong_kind = run(
            "sealtrail", "sinks", "create", "hec", "--kind", "splunk_hec", "--url", receiver.url,
            "--token", "t", "--generate-secret", env=cli_env, check=False,
        )  # fmt: skip
        assert wrong_kind.returncode == 2 and "whsec_" not in wrong_kind.stderr


def test_a_generated_secret_is_shown_when_the_call_may_have_applied_unanswered() -> None:
    """A sink made with `--generate-secret` whose answer is lost (the server
    gone, a deadline) may exist and sign with a secret nobody was shown, to be
    rotated blind: the CLI shows it, saying the sink may not exist."""
    with contextlib.closing(socket.socket()) as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    env = {"SEALTRAIL_SERVER": f"127.0.0.1:{port}", "SEALTRAIL_TOKEN": "st_unused"}
    unanswered = run(
        "sealtrail", "sinks", "create", "siem", "--kind", "webhook",
        "--url", "https://hooks.example.com/audit", "--generate-secret", env=env, check=False,
    )  # fmt: skip
    assert unanswered.returncode != 0 and "UNAVAILABLE" in unanswered.stderr
    assert "signing secret (shown once): whsec_" in unanswered.stderr
    assert "may have" in unanswered.stderr  # not to be set up on a receiver unchecked
    rotation_unanswered = run(
        "sealtrail", "sinks", "update", "sink-1", "--generate-secret", env=env, check=False,
    )  # fmt: skip
    assert rotation_unanswered.returncode != 0 and "whsec_" not in rotation_unanswered.stderr


def test_a_sink_is_updated_only_if_unchanged_since_its_etag_was_read(
    cli_env: dict[str, str],
) -> None:
    """`retention set` and `legal-hold` take the --etag their show printed;
    `sinks update` had none, so an admin's change overwrote one made since they
    looked (helper-165)."""
    created = run(
        "sealtrail", "sinks", "create", "siem", "--kind", "splunk_hec",
        "--url", "https://siem.example.com:8088", "--token", "hec-1", env=cli_env,
    )  # fmt: skip
    sink_id = created.stdout.strip()
    etag = json.loads(run("sealtrail", "sinks", "show", sink_id, env=cli_env).stdout)["etag"]
    run("sealtrail", "sinks", "update", sink_id, "--name", "siem 2", "--etag", etag, env=cli_env)
    for change in (["--name", "siem 3"], ["--index", "audit"]):
        stale = run("sealtrail", "sinks", "update", sink_id, *change, "--etag", etag,
                    env=cli_env, check=False)  # fmt: skip
        assert stale.returncode == 1, stale.stderr
        assert "changed since that etag was read" in stale.stderr
        assert "sealtrail sinks show" in stale.stderr
    shown = json.loads(run("sealtrail", "sinks", "show", sink_id, env=cli_env).stdout)
    assert shown["name"] == "siem 2" and "index" not in shown["splunkHec"]
    run("sealtrail", "sinks", "update", sink_id, "--index", "audit", "--etag", shown["etag"],
        env=cli_env)  # fmt: skip
    assert (
        json.loads(run("sealtrail", "sinks", "show", sink_id, env=cli_env).stdout)["splunkHec"][
            "index"
        ]
        == "audit"
    )


def test_a_sink_replays_the_last_hour_up_to_now(cli_env: dict[str, str]) -> None:
    """`replay --since 1h` was refused ("give --since and --until together"),
    and so was `--until now`: the window ends now unless --until says
    otherwise, and `now` is a time like 1h (helper-165)."""
    run("sealtrail", "record", "--action", "document.share", "--actor-id", "u-1",
        "--occurred-at", "30m", env=cli_env)  # fmt: skip
    with endpoint() as receiver:
        sink_id = run(
            "sealtrail", "sinks", "create", "siem", "--kind", "webhook", "--url", receiver.url,
            "--secret", "whsec_" + "A" * 44, "--action", "document.*", env=cli_env,
        ).stdout.strip()  # fmt: skip
        for window in (["--since", "1h"], ["--since", "2h", "--until", "now"]):
            replayed = run("sealtrail", "sinks", "replay", sink_id, *window, env=cli_env,
                           check=False)  # fmt: skip
            assert replayed.returncode == 0, replayed.stderr
            assert "requested" in replayed.stdout

        def shared(received: list[Any]) -> int:
            events = [e for r in received for e in json.loads(r.body)["data"]["events"]]
            return sum(event["action"] == "document.share" for event in events)

        assert shared(receiver.wait_for(lambda r: shared(r) >= 2)) == 2  # once by each
        alone = run("sealtrail", "sinks", "replay", sink_id, "--until", "now", env=cli_env,
                    check=False)  # fmt: skip
        assert alone.returncode == 2 and "--until goes with --since" in alone.stderr


def test_a_sink_credential_read_from_a_file_or_stdin_loses_a_byte_order_mark(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A token file saved by Notepad starts with a UTF-8 byte-order mark: it
    was kept in the token, and the server refused it as no token at all
    ("is required ... visible ASCII"), as `hash-secret` does not (helper-137)."""
    saved = tmp_path / "hec.txt"
    saved.write_bytes(b"\xef\xbb\xbf0f3c1e2a-hec-token\r\n")
    created = run(
        "sealtrail", "sinks", "create", "siem", "--kind", "splunk_hec",
        "--url", "https://siem.example.com:8088", "--token", f"@{saved}", env=cli_env,
        check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    sink_id = created.stdout.strip()
    updated = run(
        "sealtrail", "sinks", "update", sink_id, "--token", "-", env=cli_env,
        stdin="\ufeffnew-hec-token-1234\n", check=False,
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    shown = json.loads(run("sealtrail", "sinks", "show", sink_id, env=cli_env).stdout)
    assert shown["splunkHec"]["tokenHint"] == "1234"


def test_alert_rules_from_the_command_line(cli_env: dict[str, str]) -> None:
    made = run(
        "sealtrail", "alerts", "create", "failed logins", "--kind", "threshold",
        "--action", "user.login", "--outcome", "failure", "--count", "3", "--window", "60",
        "--group-by", "ip", "--alert-severity", "error", env=cli_env,
    )  # fmt: skip
    rule_id = made.stdout.strip()
    for _ in range(3):
        run(
            "sealtrail", "record", "--action", "user.login", "--actor-id", "u-1",
            "--outcome", "failure", "--ip", "203.0.113.5", env=cli_env,
        )  # fmt: skip
    for _ in range(200):
        listed = run("sealtrail", "alerts", env=cli_env).stdout
        if "failed logins" in listed and " 1 " in listed:
            break
        time.sleep(0.1)
    # The window as typed, in its largest whole unit: `--window 60` is a minute.
    assert "threshold: 3 in 1m by ip" in listed and " error " in listed and " 1 " in listed
    found = run(
        "sealtrail", "query", "--action", "security.alert", "--format", "jsonl", env=cli_env
    )
    assert "203.0.113.5" in found.stdout
    bad = run("sealtrail", "alerts", "create", "x", "--kind", "match", env=cli_env, check=False)
    assert bad.returncode == 2 and "rule.match.filter" in bad.stderr
    run(
        "sealtrail", "alerts", "update", rule_id, "--count", "5", "--group-by", "actor",
        "--alert-severity", "critical", env=cli_env,
    )  # fmt: skip
    listed = run("sealtrail", "alerts", env=cli_env).stdout
    assert "threshold: 5 in 1m by actor" in listed and "critical" in listed
    run("sealtrail", "alerts", "update", rule_id, "--group-by", "none", env=cli_env)
    listed = run("sealtrail", "alerts", env=cli_env).stdout
    assert "threshold: 5 in 1m" in listed and "1m by" not in listed  # no "by" left ungrouped
    renamed = run("sealtrail", "alerts", "update", rule_id, "--name", "brute force", env=cli_env)
    assert renamed.stdout == f"{rule_id} updated\n"
    wrong = run("sealtrail", "alerts", "update", rule_id, "--time-zone", "UTC", env=cli_env,
                check=False)  # fmt: skip
    assert wrong.returncode == 2 and "--time-zone: only with an off_hours rule" in wrong.stderr
    nothing = run("sealtrail", "alerts", "update", rule_id, env=cli_env, check=False)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    run("sealtrail", "alerts", "update", rule_id, "--name", "failed logins", env=cli_env)
    assert run("sealtrail", "alerts", "disable", rule_id, env=cli_env).stdout.endswith("disabled\n")
    assert "failed logins (disabled)" in run("sealtrail", "alerts", env=cli_env).stdout
    run("sealtrail", "alerts", "enable", rule_id, env=cli_env)
    assert "(disabled)" not in run("sealtrail", "alerts", env=cli_env).stdout
    bad_id = run("sealtrail", "alerts", "disable", "nope", env=cli_env, check=False)
    assert bad_id.returncode == 2 and "  RULE_ID: must be an alert rule id" in bad_id.stderr
    unknown = "00000000-0000-4000-8000-000000000000"
    gone = run("sealtrail", "alerts", "disable", unknown, env=cli_env, check=False)
    assert gone.returncode == 2 and f"NOT_FOUND: no alert rule {unknown}" in gone.stderr
    # Found missing by the command line itself (it reads the rule's kind first): the same.
    not_read = run("sealtrail", "alerts", "update", unknown, "--count", "5", env=cli_env,
                   check=False)  # fmt: skip
    assert not_read.returncode == 2 and f"no alert rule {unknown}" in not_read.stderr
    # Deleted only as it was read: one disabled since is not deleted unseen.
    etag = json.loads(run("sealtrail", "alerts", "show", rule_id, env=cli_env).stdout)["etag"]
    run("sealtrail", "alerts", "disable", rule_id, env=cli_env)
    stale = run("sealtrail", "alerts", "delete", rule_id, "--etag", etag, env=cli_env, check=False)
    assert stale.returncode != 0 and "sealtrail alerts show" in stale.stderr
    etag = json.loads(run("sealtrail", "alerts", "show", rule_id, env=cli_env).stdout)["etag"]
    run("sealtrail", "alerts", "delete", rule_id, "--etag", etag, env=cli_env)
    assert "failed logins" not in run("sealtrail", "alerts", env=cli_env).stdout


def test_an_alert_rule_is_shown_whole_with_its_filter_and_sinks(cli_env: dict[str, str]) -> None:
    """`sealtrail alerts` lists neither a rule's filter nor its sinks, and
    `alerts update --action ...` replaces the whole filter: an admin edited a
    filter they could not see (helper-165)."""
    sink_id = run(
        "sealtrail", "sinks", "create", "siem", "--kind", "splunk_hec",
        "--url", "https://siem.example.com:8088", "--token", "hec-1", env=cli_env,
    ).stdout.strip()  # fmt: skip
    rule_id = run(
        "sealtrail", "alerts", "create", "failed logins", "--kind", "threshold",
        "--action", "user.login", "--outcome", "failure", "--count", "3", "--window", "60",
        "--alert-severity", "error", "--sink", sink_id, env=cli_env,
    ).stdout.strip()  # fmt: skip
    shown = json.loads(run("sealtrail", "alerts", "show", rule_id, env=cli_env).stdout)
    assert shown["id"] == rule_id and shown["name"] == "failed logins"
    assert shown["threshold"]["filter"] == {
        "actions": ["user.login"],
        "outcomes": ["OUTCOME_FAILURE"],
    }
    assert shown["threshold"]["count"] == 3 and shown["threshold"]["windowSeconds"] == 60
    assert shown["sinkIds"] == [sink_id] and shown["severity"] == "SEVERITY_ERROR"
    assert shown["disabled"] is False and shown["etag"]
    run("sealtrail", "alerts", "disable", rule_id, env=cli_env)
    assert json.loads(run("sealtrail", "alerts", "show", rule_id, env=cli_env).stdout)["disabled"]
    unknown = "00000000-0000-4000-8000-000000000000"
    missing = run("sealtrail", "alerts", "show", unknown, env=cli_env, check=False)
    assert missing.returncode == 2 and f"no alert rule {unknown}" in missing.stderr
    helped = run("sealtrail", "alerts", "update", "--help", env=cli_env).stdout
    assert "replace the whole filter" in " ".join(helped.split())
    assert "sealtrail alerts show" in helped


def test_a_token_name_from_the_command_line_is_redacted_as_the_api_redacts_it(
    client: AuditClient, migrated_database_url: str, tenant: str, tmp_path: Path
) -> None:
    """`token create --name` committed the name to the log as typed, where
    CreateToken redacts it: a token named after the secret it replaces kept
    that secret in clear for good (helper-156). In HMAC mode with no key at
    hand, the command writes replace mode's `[REDACTED:…]`, and makes no key."""
    secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    name = f"replaces {secret}"

    def create(key: str = "") -> None:
        run(
            "sealtrail-server", "token", "create", "--tenant", tenant, "--role", "reader",
            "--name", name, "--database-url", migrated_database_url,
            env={"SEALTRAIL_DATA_DIR": str(tmp_path), "SEALTRAIL_REDACTION_KEY": key},
        )  # fmt: skip

    client.create_token("reader", name=name)
    create()
    client.set_redaction_mode("hmac")
    client.create_token("reader", name=name)
    create(key=REDACTION_SECRET.hex())
    create()  # no key here
    with psycopg.connect(migrated_database_url) as conn:
        recorded = conn.execute(
            "SELECT record::jsonb -> 'actor' ->> 'type', record::jsonb -> 'details' ->> 'name'"
            " FROM events WHERE tenant_id = %s AND action = 'api_token.created' ORDER BY seq",
            [tenant],
        ).fetchall()
    replaced = "replaces [REDACTED:github_token]"
    hashed = f"replaces {hmac_token(tenant_key(REDACTION_SECRET, tenant), secret)}"
    assert recorded == [
        ("api_key", replaced),
        ("system", replaced),
        ("api_key", hashed),
        ("system", hashed),
        ("system", replaced),
    ]
    assert not (tmp_path / "redaction-key").exists()


def test_a_saved_checkpoint_is_checked_against_the_log_today_from_the_command_line(
    cli_env: dict[str, str], tmp_path: Path, migrated_database_url: str, verifier_key: str
) -> None:
    """An auditor saves `sealtrail checkpoint`'s output (or keeps a bundle);
    later `checkpoint --check` proves the log they saw is a prefix of
    today's, or says it was rewritten since, exiting 1 as a failed verify."""
    from sealtrail.tlog import (
        Checkpoint,
        Signer,
        format_checkpoint,
        generate_signer_key,
        sign_note,
    )
    from tests.conftest import SIGNING_KEY

    for action in ("file.read", "file.write"):
        run("sealtrail", "record", "--action", action, "--actor-id", "ops", env=cli_env)
    key = verifier_key
    saved = tmp_path / "saved.txt"
    saved.write_text(run("sealtrail", "checkpoint", "--fresh", env=cli_env).stdout)
    size = int(saved.read_text().splitlines()[1])
    run("sealtrail", "bundle", "-o", str(tmp_path / "b"), env=cli_env)
    run("sealtrail", "record", "--action", "file.delete", "--actor-id", "ops", env=cli_env)

    checked = run(
        "sealtrail", "checkpoint", "--check", str(saved), "--key", key, "--fresh", env=cli_env
    )
    assert re.fullmatch(
        rf"CONSISTENT: the saved log of {size} events is a prefix of today's \d+"
        r" \(sealtrail\.test/log/t-\w+\): the latest checkpoint, signed"
        r" \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+s ago\) by sealtrail\.test/log\n",
        checked.stdout,
    ), checked.stdout
    of_bundle = run("sealtrail", "checkpoint", "--check", str(tmp_path / "b"), "--key", key,
                    env=cli_env)  # fmt: skip
    assert of_bundle.stdout.startswith("CONSISTENT: the saved log of ")

    # What the log was when the auditor saved it, and is no longer.
    origin = saved.read_text().splitlines()[0]
    signer = Signer.parse(SIGNING_KEY)
    forked = tmp_path / "forked.txt"
    forked.write_text(sign_note(format_checkpoint(Checkpoint(origin, size, bytes(32))), signer))
    rewritten = run("sealtrail", "checkpoint", "--check", str(forked), "--key", key,
                    env=cli_env, check=False)  # fmt: skip
    assert rewritten.returncode == 1 and rewritten.stdout == ""
    assert rewritten.stderr.startswith(
        f"FAILED: the log was rewritten since the saved checkpoint: its {size} events are not"
        " a prefix of today's "
    ), rewritten.stderr
    # Which checkpoint of today's: the latest, when signed and how long ago.
    assert re.search(r"\), the latest checkpoint, signed \S+Z \(\d+s ago\): ", rewritten.stderr)

    # Another log's (its origin a forger's text, shown escaped), or no key: refused.
    elsewhere = tmp_path / "elsewhere.txt"
    other = "sealtrail.test/log/\u202eevil"
    elsewhere.write_text(sign_note(format_checkpoint(Checkpoint(other, 1, bytes(32))), signer))
    refused = run("sealtrail", "checkpoint", "--check", str(elsewhere), "--key", key,
                  env=cli_env, check=False)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "is of the log sealtrail.test/log/\\u202eevil" in refused.stderr
    assert "\u202e" not in refused.stderr
    stranger = generate_signer_key("sealtrail.test/log").verifier.text()
    unsigned = run("sealtrail", "checkpoint", "--check", str(saved), "--key", stranger,
                   env=cli_env, check=False)  # fmt: skip
    assert unsigned.returncode == 1
    assert unsigned.stderr.startswith("FAILED: saved checkpoint: no signature by a known key")
    keyless = run("sealtrail", "checkpoint", "--check", str(saved), env=cli_env, check=False)
    assert keyless.returncode == 2 and "--check needs --key" in keyless.stderr


def test_a_saved_checkpoint_is_checked_from_stdin(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """`checkpoint --check -` reads the saved checkpoint from stdin, as the
    CLI's other file arguments take `-`: piped from where the auditor keeps
    it (a vault, another host), a checkpoint's text; an export's manifest is
    refused (its file cannot be found from stdin)."""
    run("sealtrail", "record", "--action", "file.read", "--actor-id", "ops", env=cli_env)
    saved = run("sealtrail", "checkpoint", "--fresh", env=cli_env).stdout
    out = tmp_path / "audit.csv"
    run("sealtrail", "export", "--action", "file.*", "-o", str(out), env=cli_env)
    run("sealtrail", "record", "--action", "file.write", "--actor-id", "ops", env=cli_env)
    key = verifier_key

    checked = run("sealtrail", "checkpoint", "--check", "-", "--key", key, "--fresh",
                  env=cli_env, stdin=saved)  # fmt: skip
    assert checked.stdout.startswith("CONSISTENT: the saved log of "), checked.stderr
    # A manifest's file cannot be found from stdin: it was CONSISTENT, its
    # checkpoint alone checked, as if of the export. Refused, saying what to give.
    manifest = (tmp_path / "audit.csv.manifest.json").read_text()
    of_manifest = run("sealtrail", "checkpoint", "--check", "-", "--key", key,
                      env=cli_env, stdin=manifest, check=False)  # fmt: skip
    assert (of_manifest.returncode, of_manifest.stdout) == (1, ""), of_manifest.stdout
    assert of_manifest.stderr.startswith(
        "FAILED: stdin holds an export's manifest, and its file (audit.csv) cannot be found"
        " from stdin to be checked: give FILE.manifest.json by its name, beside FILE"
    ), of_manifest.stderr
    named = run("sealtrail", "checkpoint", "--check", str(tmp_path / "audit.csv.manifest.json"),
                "--key", key, env=cli_env)  # fmt: skip
    assert named.stdout.startswith("CONSISTENT: the saved log of ")
    assert "MATCHES: " in named.stdout
    empty = run("sealtrail", "checkpoint", "--check", "-", "--key", key,
                env=cli_env, stdin="", check=False)  # fmt: skip
    assert empty.returncode == 1 and empty.stderr.startswith("FAILED: "), empty.stderr


# Where `sealtrail verify FILE` would reach a server if it tried to: none
# listens on port 1, and it has no token.
OFFLINE: Final = {"SEALTRAIL_SERVER": "127.0.0.1:1", "SEALTRAIL_TOKEN": ""}


def test_keys_prints_the_verifier_keys_as_verify_takes_them(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """A tenant had no way to the verifier key but `sealtrail-server key show`,
    on the server's host (helper-554). `sealtrail keys` prints each key that
    signed a checkpoint, the active one first, one a line, as `verify --key`
    takes it; on stderr when each was first used and that a key from the
    service audited is to be compared with one pinned otherwise."""
    run("sealtrail", "record", "--action", "file.read", "--actor-id", "ops", env=cli_env)
    out = tmp_path / "audit.ndjson"
    run("sealtrail", "export", "-o", str(out), env=cli_env)
    listed = run("sealtrail", "keys", env=cli_env)
    assert listed.stdout == f"{verifier_key}\n", listed.stdout
    name, key_id, _ = verifier_key.split("+", 2)
    assert re.match(
        rf"{re.escape(name)}\+{key_id}: active \(signs new checkpoints\), first used"
        r" \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n",
        listed.stderr,
    ), listed.stderr
    assert "compare" in listed.stderr and "pinned" in listed.stderr, listed.stderr
    (key,) = listed.stdout.splitlines()
    verified = run("sealtrail", "verify", str(out), "--key", key, env=OFFLINE)
    assert verified.stdout.startswith("MATCHES: "), verified.stdout


def test_verify_of_a_filtered_export_says_its_events_match_the_filter_not_the_whole_log(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """`sealtrail verify q4.csv` of an export by time said `signed: the whole
    log of 308 events, filtered by {"occurredAfter":...}`: an auditor
    skimming read "the whole log" (helper-554). It names the log's size as
    that, the events as those matching the filter, and says, on stderr,
    that their completeness is the service's word and that the filter's
    times are when the events occurred by their callers' clocks: a period
    by received time is proven complete by `bundle --received`."""
    run("sealtrail", "record", "--action", "file.read", "--actor-id", "ops", env=cli_env)
    out = tmp_path / "q4.csv"
    run("sealtrail", "export", "--since", "2020-01-01", "-o", str(out), env=cli_env)
    size = json.loads(Path(f"{out}.manifest.json").read_text(encoding="utf-8"))["tree_size"]
    verified = run("sealtrail", "verify", str(out), "--key", verifier_key, env=OFFLINE)
    assert "whole log" not in verified.stdout, verified.stdout
    signed = verified.stdout.split("; signed: ", 1)[1].split("; of ", 1)[0]
    assert re.fullmatch(
        rf"the events of the log \(size {size}\) matching"
        r' \{"occurredAfter":"2020-01-01T00:00:00Z"\}, as the service selected them',
        signed,
    ), signed
    assert (
        "nor that it holds every event matching its filter, which is the service's word; a"
        " filter's times are when the events occurred, by their callers' clocks: a bundle of"
        " a period by received time proves it holds every event of the period (sealtrail"
        " bundle --received PERIOD -o DIR, and verify it)"
    ) in " ".join(verified.stderr.split()), verified.stderr


def test_verify_checks_an_export_offline_against_its_manifest(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """`sealtrail verify audit.csv` (an export, not a bundle's directory) was
    refused by click, `Directory '...' is a file`, exit 2, saying nothing of
    what to do; `checkpoint --check` asks the service. It checks the file
    against the manifest beside it and its signed statement, with no
    server, and says what that leaves unchecked."""
    run("sealtrail", "record", "--action", "file.read", "--actor-id", "ops", env=cli_env)
    key = verifier_key
    for format in ("csv", "ndjson", "json"):
        out = tmp_path / f"audit.{format}"
        run("sealtrail", "export", "--format", format, "-o", str(out), env=cli_env)
        verified = run("sealtrail", "verify", str(out), "--key", key, env=OFFLINE)
        size = json.loads(Path(f"{out}.manifest.json").read_text(encoding="utf-8"))["tree_size"]
        # Every row is rebuilt into the record as hashed (NDJSON's lines are
        # it): the root over them is the signed one's.
        proven = re.escape(", each record in the signed tree (its root recomputed)")
        assert re.fullmatch(
            rf"MATCHES: {re.escape(str(out))} is the export its manifest describes: \d+ rows?,"
            rf" [\d,]+ bytes, sha256 [0-9a-f]{{64}}; signed: the whole log of {size} events?,"
            rf" unfiltered{proven}; of sealtrail\.test/log/t-\w+ at size {size}, checkpoint"
            r" signed by"
            r" sealtrail\.test/log\n",
            verified.stdout,
        ), (verified.stdout, verified.stderr)
        assert verified.stderr == (
            "not checked offline: that the log was not rewritten since (sealtrail checkpoint"
            f" --check {out}.manifest.json --key VKEY, against the service)\n"
        ), verified.stderr
    # A filtered export carries no proofs: what it leaves unproven is said.
    some = tmp_path / "some.csv"
    run("sealtrail", "export", "--format", "csv", "--actor", "ops", "-o", str(some), env=cli_env)
    filtered = run("sealtrail", "verify", str(some), "--key", key, env=OFFLINE)
    assert ' matching {"actor":"ops"}, as the service selected them; of ' in filtered.stdout
    assert filtered.stderr.startswith(
        "not proven: that each row is the log's record, not the service's word of it: a"
        " filtered export carries no inclusion proofs (to prove each event, write a bundle"
        " with the same filter: sealtrail bundle -o DIR, and verify it); nor that it holds"
    ), filtered.stderr
    assert "\nnot checked offline: that the log was not rewritten since" in filtered.stderr
    # Its manifest given for it, or kept elsewhere (--manifest): the same check.
    out = tmp_path / "audit.csv"
    manifest = Path(f"{out}.manifest.json")
    given = run("sealtrail", "verify", str(manifest), "--key", key, env=OFFLINE)
    assert given.stdout.startswith(f"MATCHES: {out} is the export its manifest describes: ")
    kept = tmp_path / "kept" / "manifest.json"
    kept.parent.mkdir()
    shutil.copy(manifest, kept)
    elsewhere = run("sealtrail", "verify", str(out), "--manifest", str(kept), "--key", key,
                    env=OFFLINE)  # fmt: skip
    assert elsewhere.stdout.startswith(f"MATCHES: {out} is the export its manifest describes: ")
    # Another tenant's export checks as well under the one key: --tenant holds it to one.
    tenant = (
        json.loads(manifest.read_text(encoding="utf-8"))["statement"]
        .splitlines()[1]
        .rsplit("/", 1)[-1]
    )
    run("sealtrail", "verify", str(out), "--key", key, "--tenant", tenant, env=OFFLINE)
    other = run("sealtrail", "verify", str(out), "--key", key, "--tenant", "other", env=OFFLINE,
                check=False)  # fmt: skip
    assert (other.returncode, other.stdout) == (1, "")
    assert other.stderr == (
        f"FAILED: the export's statement: the log is tenant {tenant!r}'s"
        f" (sealtrail.test/log/{tenant}), not 'other''s\n"
    )


def test_verify_of_an_export_fails_naming_what_differs(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """One byte of the file, the manifest's words, or the key: each FAILED,
    one line on stderr, nothing on stdout, exit 1, as `checkpoint --check`
    says it. No manifest beside the file: FAILED, naming it and how to get
    one; no --key: refused, exit 2 (the manifest's own signer proves
    nothing)."""
    from sealtrail.tlog import generate_signer_key

    run("sealtrail", "record", "--action", "file.read", "--actor-id", "ops", env=cli_env)
    key = verifier_key
    out = tmp_path / "audit.ndjson"
    run("sealtrail", "export", "--format", "ndjson", "-o", str(out), env=cli_env)
    manifest = Path(f"{out}.manifest.json")
    exported, kept = out.read_bytes(), manifest.read_text(encoding="utf-8")

    def failed(*args: str) -> str:
        done = run("sealtrail", "verify", *args, env=OFFLINE, check=False)
        assert (done.returncode, done.stdout) == (1, ""), (done.stdout, done.stderr)
        assert done.stderr.startswith("FAILED: ") and done.stderr.count("\n") == 1, done.stderr
        return str(done.stderr)

    flipped = bytearray(exported)
    flipped[len(flipped) // 2] ^= 0x01
    out.write_bytes(bytes(flipped))
    assert failed(str(out), "--key", key).startswith(
        f"FAILED: {out} is not the export audit.ndjson.manifest.json describes: sha256 "
    )
    out.write_bytes(exported)

    edited = json.loads(kept)
    edited["row_count"] += 1
    manifest.write_text(json.dumps(edited), encoding="utf-8")
    assert failed(str(out), "--key", key).startswith(
        "FAILED: audit.ndjson.manifest.json does not say what its signed statement does: "
    )
    manifest.write_text(kept, encoding="utf-8")

    stranger = generate_signer_key("sealtrail.test/log").verifier.text()
    assert failed(str(out), "--key", stranger).startswith(
        "FAILED: saved checkpoint: no signature by a known key verifies this note"
    )

    alone = tmp_path / "alone" / "audit.ndjson"
    alone.parent.mkdir()
    alone.write_bytes(exported)
    assert failed(str(alone), "--key", key) == (
        f"FAILED: {alone} has no manifest beside it ({alone}.manifest.json), the signed"
        " statement of the export it checks against: give it (--manifest PATH), or export"
        " again with `sealtrail export -o FILE`, which keeps FILE.manifest.json beside FILE\n"
    )
    keyless = run("sealtrail", "verify", str(out), env=OFFLINE, check=False)
    assert keyless.returncode == 2 and keyless.stdout == "", keyless.stdout
    assert "an export needs --key, the log's published verifier key" in keyless.stderr
    # The options that hold a bundle to a range are a bundle's: refused.
    ranged = run("sealtrail", "verify", str(out), "--key", key, "--complete", env=OFFLINE,
                 check=False)  # fmt: skip
    assert ranged.returncode == 2 and "--complete checks a bundle" in ranged.stderr


def test_an_export_given_for_a_checkpoint_is_refused_naming_its_manifest(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """An export piped to `checkpoint --check -` (or its file given for its
    manifest) was read as a checkpoint: `saved checkpoint: the note holds
    the control character U+000D` of a CSV, `a signed note is text, ...` of
    JSON, `stdin is JSON without a 'checkpoint'` of NDJSON. Nothing in it is
    signed (its manifest's statement signs its digest): refused, naming it
    an export and what to check instead."""
    run("sealtrail", "record", "--action", "file.read", "--actor-id", "ops", env=cli_env)
    key = verifier_key
    for format, shown in (("csv", "CSV"), ("ndjson", "NDJSON"), ("json", "JSON")):
        out = tmp_path / f"audit.{format}"
        run("sealtrail", "export", "--format", format, "-o", str(out), env=cli_env)
        piped = run("sealtrail", "checkpoint", "--check", "-", "--key", key,
                    env=cli_env, stdin=out.read_text(), check=False)  # fmt: skip
        assert (piped.returncode, piped.stdout, piped.stderr) == (1, "", (
            f"FAILED: stdin holds an export ({shown}), not a checkpoint: nothing in it is"
            " signed; an export is checked by its manifest, which signs its digest: save it"
            " as FILE beside its FILE.manifest.json and check that\n"
        )), piped.stderr  # fmt: skip
        given = run("sealtrail", "checkpoint", "--check", str(out), "--key", key,
                    env=cli_env, check=False)  # fmt: skip
        assert (given.returncode, given.stdout, given.stderr) == (1, "", (
            f"FAILED: {out} holds an export ({shown}), not a checkpoint: check its manifest,"
            f" {out}.manifest.json, or offline: sealtrail verify {out} --key VKEY\n"
        )), given.stderr  # fmt: skip
    # An export of one event, NDJSON: one line of JSON, whole (no manifest's).
    one = tmp_path / "one.ndjson"
    run("sealtrail", "export", "--format", "ndjson", "--seq", "1-1", "-o", str(one), env=cli_env)
    single = run("sealtrail", "checkpoint", "--check", "-", "--key", key,
                 env=cli_env, stdin=one.read_text(), check=False)  # fmt: skip
    assert single.stderr.startswith("FAILED: stdin holds an export (NDJSON), not a checkpoint")


def test_export_of_a_seq_range_from_the_command_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`sealtrail export` had no way to bound an export by seq, which the API
    has (first_seq, last_seq) and `sealtrail bundle` has (--seq): --seq
    FIRST-LAST exports the events of that range, both included, in any
    format, its manifest naming the range, with or without a filter."""
    with AuditClient(cli_env["SEALTRAIL_SERVER"], token=cli_env["SEALTRAIL_TOKEN"]) as client:
        results = client.record_batch(
            [
                sealtrail.build_event(action=f"file.{('read', 'write')[n % 2]}", actor_id="ops")
                for n in range(30)
            ]
        )
        assert all(result.error is None for result in results)
    out = tmp_path / "range.csv"
    exported = run("sealtrail", "export", "--format", "csv", "--seq", "10-20", "-o", str(out),
                   env=cli_env)  # fmt: skip
    assert exported.stdout.startswith("exported 11 events"), exported.stdout
    assert "of seq 10..20" in exported.stdout, exported.stdout
    rows = [row.split(",") for row in out.read_text().splitlines()[1:]]
    assert [int(row[0]) for row in rows] == list(range(10, 21))
    kept = json.loads((tmp_path / "range.csv.manifest.json").read_text())
    assert (kept["range_first_seq"], kept["range_last_seq"]) == (10, 20)
    assert (kept["first_seq"], kept["last_seq"], kept["row_count"]) == (10, 20, 11)
    # With a filter: the matching events of the range (the API's first_seq, last_seq).
    reads = tmp_path / "reads.ndjson"
    run("sealtrail", "export", "--format", "ndjson", "--seq", "10..20", "--action", "file.read",
        "-o", str(reads), env=cli_env)  # fmt: skip
    records = [json.loads(line) for line in reads.read_text().splitlines()]
    assert [r["seq"] for r in records] == [int(row[0]) for row in rows if row[4] == "file.read"]
    assert len(records) in (5, 6)
    # As a bundle, as `sealtrail bundle --seq` writes it: the range proven complete.
    bundled = tmp_path / "bundle"
    proven = run("sealtrail", "export", "--format", "bundle", "--seq", "5-8", "-o", str(bundled),
                 env=cli_env)  # fmt: skip
    assert "the range seq 5..8 is complete" in proven.stdout, proven.stdout
    # Refused before any call as `bundle --seq` refuses it; beyond the log, by the server.
    backwards = run("sealtrail", "export", "--seq", "20-10", "-o", str(out), env=cli_env,
                    check=False)  # fmt: skip
    assert backwards.returncode == 2 and "the first seq 20 is after the last 10" in backwards.stderr
    beyond = run("sealtrail", "export", "--seq", "5-500", "-o", str(tmp_path / "x.csv"),
                 env=cli_env, check=False)  # fmt: skip
    assert beyond.returncode == 1 and "BEYOND_LOG_SIZE" in beyond.stderr, beyond.stderr
    assert "Traceback" not in beyond.stderr and not (tmp_path / "x.csv").exists()
    # The option as typed, not the API's `last_seq 500 is beyond the log's size` (helper-350).
    assert re.search(r": --seq 5-500: the log ends at seq \d+\n", beyond.stderr), beyond.stderr
    assert "last_seq" not in beyond.stderr and "tree_size" not in beyond.stderr
    as_bundle = run("sealtrail", "export", "--format", "bundle", "--seq", "5..500",
                    "-o", str(tmp_path / "xb"), env=cli_env, check=False)  # fmt: skip
    assert as_bundle.returncode == 1, as_bundle.stderr
    assert re.search(r"^Error: --seq 5\.\.500: the log ends at seq \d+$", as_bundle.stderr, re.M)
    assert not (tmp_path / "xb").exists()


def test_export_of_what_was_received_in_a_period_from_the_command_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`sealtrail export` had no period by receipt time, which `sealtrail
    bundle` has (--received, --received-since/--received-until): it takes them
    in the same words, exports the (matching) events of the seq range the
    server finds for the period (Export's first_seq, last_seq, as --seq) and
    refuses what bundle refuses, in the same words."""
    with AuditClient(cli_env["SEALTRAIL_SERVER"], token=cli_env["SEALTRAIL_TOKEN"]) as client:
        results = client.record_batch(
            [
                sealtrail.build_event(action=f"file.{('read', 'write')[n % 2]}", actor_id="ops")
                for n in range(6)
            ]
        )
        assert all(result.error is None for result in results)
        last = max(result.event.seq for result in results if result.event is not None)
    out = tmp_path / "period.ndjson"
    exported = run("sealtrail", "export", "--received-since", "1h", "-o", str(out), env=cli_env)
    assert f"of seq 1..{last}" in exported.stdout, exported.stdout
    assert "the events received from " in exported.stdout, exported.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, last + 1))
    kept = json.loads((tmp_path / "period.ndjson.manifest.json").read_text())
    assert (kept["range_first_seq"], kept["range_last_seq"]) == (1, last)
    # With a filter, unlike bundle: the matching events of the period's range.
    reads = tmp_path / "reads.csv"
    run("sealtrail", "export", "--received-since", "1h", "--received-until", "now",
        "--action", "file.read", "-o", str(reads), env=cli_env)  # fmt: skip
    assert len(reads.read_text().splitlines()) == 1 + 3
    # As a bundle: `sealtrail bundle --received-since`'s range, proven complete.
    bundled = tmp_path / "bundle"
    proven = run("sealtrail", "export", "--format", "bundle", "--received-since", "1h",
                 "-o", str(bundled), env=cli_env)  # fmt: skip
    assert "is complete, chosen by receipt time" in proven.stdout, proven.stdout
    now = datetime.now(UTC)
    this_month = now.strftime("%Y-%m")
    last_month = (now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    for options, status, says in (
        (["--received", this_month], 2,
         f"--received: the period has not ended; --received-since {now:%Y-%m}-01 exports it"),
        (["--received", last_month], 1, "no event was received from"),
        (["--received", "2026-13"], 2, "is not a UTC year, month or day"),
        (["--received-until", "1h"], 2, "--received-until needs --received-since"),
        (["--seq", "1-2", "--received-since", "1h"], 2, "each choose the range"),
    ):  # fmt: skip
        refused = run("sealtrail", "export", *options, "-o", str(tmp_path / "x.csv"),
                      env=cli_env, check=False)  # fmt: skip
        assert refused.returncode == status, refused.stderr
        assert says in refused.stderr, refused.stderr
        assert not (tmp_path / "x.csv").exists()


def test_export_and_bundle_say_a_period_by_receipt_time_in_the_same_words() -> None:
    """The options of a period by receipt time are bundle's, shared: one help."""
    from sealtrail._cli import main

    def helps(name: str) -> dict[str, str | None]:
        command = main.commands[name]
        return {
            option.opts[0]: option.help
            for option in command.params
            if isinstance(option, click.Option) and option.opts[0].startswith("--received")
        }

    bundle, export = helps("bundle"), helps("export")
    assert set(export) == {"--received", "--received-since", "--received-until"}
    assert export["--received-since"] == bundle["--received-since"]
    assert export["--received-until"] == bundle["--received-until"]
    assert [p.type.name for p in main.commands["export"].params if p.name == "received"] == [
        "PERIOD"
    ]


def test_an_export_the_server_cuts_as_it_stops_says_what_the_command_can_do(
    migrated_database_url: str, tenant: str, tmp_path: Path
) -> None:
    """A stopping server ends an export still running, saying how to export
    the rest: first_seq one past the last seq received. `sealtrail export`
    passed that on, though it keeps nothing of a cut export (no partial file)
    and had no option of that name: it says what is left and what to do."""
    server = ServerThread(migrated_database_url)
    try:
        token = server.token(tenant)
        with AuditClient(server.target, token=token) as client:
            blob = "x" * 60_000  # 12 MB in all: more than the windows and buffers hold
            for start in range(0, 200, 50):
                results = client.record_batch(
                    [
                        sealtrail.build_event(action="bulk.item", actor_id="u", details={"b": blob})
                        for _ in range(start, start + 50)
                    ]
                )
                assert all(result.error is None for result in results)
        out = tmp_path / "audit.ndjson"
        exporting = subprocess.Popen(
            [str(BIN / "sealtrail"), "export", "--format", "ndjson", "-o", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token},
        )
        try:
            exports = server.service._servicer.exports_open  # type: ignore[union-attr]
            deadline = time.monotonic() + 60
            # Under way: its first chunks written to the hidden file it fills.
            while not any(p.stat().st_size for p in tmp_path.glob(".audit.ndjson.*")):
                assert time.monotonic() < deadline and exporting.poll() is None
                time.sleep(0.005)
            exporting.send_signal(signal.SIGSTOP)  # it reads no more: the export waits
            assert exports.count() == 1

            async def cut() -> None:  # as a stop does, as its grace is about to run out
                exports.cut_for_stop()

            server.run(cut())
            exporting.send_signal(signal.SIGCONT)
            stdout, stderr = exporting.communicate(timeout=60)
        finally:
            exporting.kill()
    finally:
        server.close()
    assert exporting.returncode == 1, (stdout, stderr)
    assert "UNAVAILABLE (SERVER_STOPPING)" in stderr, stderr
    assert f"no partial file was left at {out}" in stderr, stderr
    assert "export again" in stderr, stderr
    # Not the API's words for a client that kept what it received.
    assert "first_seq" not in stderr and "last_seq" not in stderr, stderr
    assert "retry after: 1 s" in stderr, stderr
    assert "Traceback" not in stderr and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_csv_export_warns_of_cells_longer_than_a_spreadsheet_keeps(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Excel keeps at most 32,767 characters of a cell and cuts the rest
    without a word as it opens a CSV; a record may be 64 KiB. The export
    writes such a cell whole, and says which cells are so, on stderr."""
    import hashlib

    with AuditClient(cli_env["SEALTRAIL_SERVER"], token=cli_env["SEALTRAIL_TOKEN"]) as client:
        events = [
            sealtrail.build_event(action="doc.long", actor_id="u", details={"b": "x" * size})
            for size in (100, 40_000, 32_700, 20_000)
        ]
        # 32,009 characters, 1,000 of them outside the Basic Multilingual Plane:
        # 33,009 as Excel counts them (UTF-16 code units, an emoji 2).
        events[3] = sealtrail.build_event(
            action="doc.long", actor_id="u", details={"b": "\U0001f600" * 1_000 + "x" * 31_000}
        )
        seqs = []
        for result in client.record_batch(events):
            assert result.event is not None, result.error
            seqs.append(result.event.seq)
    out = tmp_path / "long.csv"
    exported = run("sealtrail", "export", "--format", "csv", "--action", "doc.long", "-o",
                   str(out), env=cli_env)  # fmt: skip
    assert exported.stdout.startswith("exported 4 events"), exported.stdout
    said = exported.stderr
    assert said.startswith("warning: 2 cells are longer than 32,767 characters"), said
    assert f"seq {seqs[1]} (details)" in said and f"seq {seqs[3]} (details)" in said, said
    assert f"seq {seqs[2]} " not in said and "Excel" in said, said
    # The file holds them whole: its bytes are the manifest's.
    kept = json.loads((tmp_path / "long.csv.manifest.json").read_text())
    assert kept["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert "x" * 40_000 in out.read_text()
    # None so long, nothing said; nor of an NDJSON export, which no spreadsheet opens.
    short = run("sealtrail", "export", "--format", "csv", "--seq", f"{seqs[0]}-{seqs[0]}",
                "-o", str(tmp_path / "short.csv"), env=cli_env)  # fmt: skip
    assert short.stderr == ""
    ndjson = run("sealtrail", "export", "--format", "ndjson", "--action", "doc.long",
                 "-o", str(tmp_path / "long.ndjson"), env=cli_env)  # fmt: skip
    assert ndjson.stderr == ""


def test_an_export_leaves_its_manifest_and_checkpoint_for_an_auditor_to_check_later(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """A CSV handed to an auditor proves nothing by itself: beside it the
    export writes FILE.manifest.json, the server's manifest (its digest, the
    log's size) with the signed checkpoint, which `checkpoint --check` takes."""
    import hashlib

    for action in ("file.read", "file.write"):
        run("sealtrail", "record", "--action", action, "--actor-id", "ops", env=cli_env)
    out = tmp_path / "audit.csv"
    run("sealtrail", "export", "--format", "csv", "--action", "file.*", "-o", str(out), env=cli_env)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.csv", "audit.csv.manifest.json"]
    manifest = json.loads((tmp_path / "audit.csv.manifest.json").read_text())
    assert manifest["file"] == "audit.csv" and manifest["media_type"].startswith("text/csv")
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (manifest["row_count"], manifest["byte_count"]) == (2, out.stat().st_size)
    assert manifest["checkpoint"].split("\n")[1] == str(manifest["tree_size"])

    run("sealtrail", "record", "--action", "file.delete", "--actor-id", "ops", env=cli_env)
    key = verifier_key
    checked = run("sealtrail", "checkpoint", "--check", str(tmp_path / "audit.csv.manifest.json"),
                  "--key", key, "--fresh", env=cli_env)  # fmt: skip
    assert checked.stdout.startswith(
        f"CONSISTENT: the saved log of {manifest['tree_size']} events is a prefix of today's"
    )


def test_checking_an_exports_manifest_checks_the_file_beside_it(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """`checkpoint --check FILE.manifest.json` holds FILE to the manifest's
    byte count, SHA-256 and rows: a byte altered, a file cut short or another
    export's manifest passed as CONSISTENT, exit 0, its checkpoint good."""
    run("sealtrail", "record", "--action", "file.read", "--actor-id", "ops",
        "--description", 'two\r\nlines, "quoted"', env=cli_env)  # fmt: skip
    run("sealtrail", "record", "--action", "file.write", "--actor-id", "ops", env=cli_env)
    out, other = tmp_path / "audit.csv", tmp_path / "other.csv"
    run("sealtrail", "export", "--format", "csv", "--action", "file.*", "-o", str(out), env=cli_env)
    run("sealtrail", "export", "--format", "csv", "--action", "file.read", "-o", str(other),
        env=cli_env)  # fmt: skip
    key = verifier_key
    kept = tmp_path / "audit.csv.manifest.json"
    exported = out.read_bytes()
    manifest = json.loads(kept.read_text())

    def check() -> Any:
        return run("sealtrail", "checkpoint", "--check", str(kept), "--key", key,
                   env=cli_env, check=False)  # fmt: skip

    intact = check()
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.splitlines()[1] == (
        f"MATCHES: {out} is the export its manifest describes: 2 rows,"
        f" {len(exported):,} bytes, sha256 {manifest['sha256']}; signed: the events of the"
        f' log (size {manifest["tree_size"]}) matching {{"actions":["file.*"]}}, as the service'
        " selected them"
    )
    altered = bytearray(exported)
    altered[-5] ^= 1  # a hex digit of the last row's leaf hash, or near it
    out.write_bytes(altered)
    one_byte = check()
    assert (one_byte.returncode, one_byte.stdout) == (1, ""), one_byte.stdout
    assert one_byte.stderr == (
        f"FAILED: {out} is not the export audit.csv.manifest.json describes: sha256"
        f" {hashlib.sha256(altered).hexdigest()} where it says {manifest['sha256']}\n"
    )
    out.write_bytes(exported[: exported.rindex(b"\r\n", 0, -2) + 2])  # its last row gone
    cut = check()
    assert cut.returncode == 1 and cut.stderr.startswith(
        f"FAILED: {out} is not the export audit.csv.manifest.json describes:"
        f" {len(out.read_bytes()):,} bytes where it says {len(exported):,} bytes; sha256 "
    ), cut.stderr
    assert cut.stderr.endswith("; 1 row where it says 2 rows\n"), cut.stderr
    out.write_bytes(exported)
    shutil.copy(tmp_path / "other.csv.manifest.json", kept)
    swapped = check()
    assert swapped.returncode == 1 and swapped.stderr.startswith(
        f"FAILED: {out} is not the export audit.csv.manifest.json (a manifest of other.csv)"
        " describes: "
    ), swapped.stderr
    # Padded past what was read of it, or its format taken out: still a
    # manifest, its file checked (they passed as a checkpoint alone).
    out.write_bytes(altered)
    kept.write_text(" " * (1 << 20) + json.dumps(manifest))
    padded = check()
    assert padded.returncode == 1 and "is not the export" in padded.stderr, padded.stdout
    kept.write_text(json.dumps({**manifest, "format": None}))
    unformatted = check()
    assert (unformatted.returncode, unformatted.stderr) == (1, (
        f"FAILED: {kept} is JSON but no export manifest (its format is not"
        " 'sealtrail-export-manifest' of version 1)\n"
    )), unformatted.stdout  # fmt: skip
    kept.write_text(json.dumps(manifest))
    out.unlink()
    gone = check()
    assert gone.returncode == 1 and gone.stderr == (
        f"FAILED: {out}, the export audit.csv.manifest.json describes, cannot be read:"
        " No such file or directory\n"
    ), gone.stderr


def test_checking_an_exports_manifest_holds_its_sizes_to_its_signed_checkpoint(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """The manifest's tree_size, root_hash and seqs are its own words beside
    the checkpoint that signs them: edited to say the export covers less or
    other than that checkpoint's log, it passed, the file matching it."""
    for action in ("file.read", "file.write"):
        run("sealtrail", "record", "--action", action, "--actor-id", "ops", env=cli_env)
    out = tmp_path / "audit.csv"
    run("sealtrail", "export", "--format", "csv", "-o", str(out), env=cli_env)
    key = verifier_key
    kept = tmp_path / "audit.csv.manifest.json"
    manifest = json.loads(kept.read_text())
    size = manifest["tree_size"]

    def check(**edits: object) -> Any:
        kept.write_text(json.dumps({**manifest, **edits}))
        return run("sealtrail", "checkpoint", "--check", str(kept), "--key", key,
                   env=cli_env, check=False)  # fmt: skip

    assert check().returncode == 0
    smaller = check(tree_size=size - 1)
    assert (smaller.returncode, smaller.stdout) == (1, ""), smaller.stdout
    assert smaller.stderr == (
        f"FAILED: audit.csv.manifest.json does not say what its signed checkpoint does:"
        f" tree_size {size - 1} where the checkpoint signs {size}\n"
    )
    other_root = base64.b64encode(bytes(32)).decode()
    rooted = check(root_hash=other_root)
    assert rooted.returncode == 1 and rooted.stderr.endswith(
        f": root_hash {other_root} where the checkpoint signs {manifest['root_hash']}\n"
    ), rooted.stderr
    beyond = check(last_seq=size + 1, range_first_seq=1, range_last_seq=size + 5)
    assert beyond.returncode == 1 and beyond.stderr.endswith(
        f": last_seq {size + 1} beyond the checkpoint's {size} events;"
        f" range_last_seq {size + 5} beyond the checkpoint's {size} events\n"
    ), beyond.stderr


def test_an_exports_file_and_manifest_rewritten_together_are_refused(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """The manifest's sha256, counts and seqs were its own word, unsigned:
    whoever held the pair altered the file and wrote the manifest to match it
    (a byte changed and its sha256, a row cut and its counts), and `checkpoint
    --check` said MATCHES. They are signed now, in the manifest's statement,
    by the log's key; one without a statement (an older server's) is refused."""
    from sealtrail.tlog import generate_signer_key, sign_note

    for action in ("file.read", "file.write"):
        run("sealtrail", "record", "--action", action, "--actor-id", "ops", env=cli_env)
    out, other = tmp_path / "audit.csv", tmp_path / "other.csv"
    run("sealtrail", "export", "--format", "csv", "--action", "file.*", "-o", str(out), env=cli_env)
    run("sealtrail", "export", "--format", "csv", "--action", "file.read", "-o", str(other),
        env=cli_env)  # fmt: skip
    key = verifier_key
    kept = tmp_path / "audit.csv.manifest.json"
    exported, manifest = out.read_bytes(), json.loads(kept.read_text())
    statement = manifest["statement"]
    assert statement.startswith("sealtrail export statement v2\n"), statement

    def check(content: bytes, **edits: object) -> Any:
        out.write_bytes(content)
        kept.write_text(json.dumps({k: v for k, v in {**manifest, **edits}.items() if v != ...}))
        return run("sealtrail", "checkpoint", "--check", str(kept), "--key", key,
                   env=cli_env, check=False)  # fmt: skip

    assert check(exported).returncode == 0
    altered = bytearray(exported)
    altered[-5] ^= 1
    forged = hashlib.sha256(altered).hexdigest()
    one_byte = check(altered, sha256=forged)
    assert (one_byte.returncode, one_byte.stdout) == (1, ""), one_byte.stdout
    assert one_byte.stderr == (
        "FAILED: audit.csv.manifest.json does not say what its signed statement does:"
        f" sha256 {forged} where the statement signs {manifest['sha256']}\n"
    )
    cut = exported[: exported.rindex(b"\r\n", 0, -2) + 2]  # its last row gone
    shorter = check(cut, sha256=hashlib.sha256(cut).hexdigest(), byte_count=len(cut),
                    row_count=1, last_seq=manifest["first_seq"])  # fmt: skip
    assert shorter.returncode == 1 and shorter.stderr.startswith(
        "FAILED: audit.csv.manifest.json does not say what its signed statement does:"
        f" sha256 {hashlib.sha256(cut).hexdigest()} where the statement signs"
        f" {manifest['sha256']}; byte_count {len(cut)} where the statement signs"
        f" {len(exported)}; row_count 1 where the statement signs 2; last_seq"
    ), shorter.stderr
    # A manifest with no statement: an older server's, or one taken out.
    unsigned = check(altered, sha256=forged, statement=...)
    assert (unsigned.returncode, unsigned.stderr) == (1, (
        "FAILED: audit.csv.manifest.json holds no signed statement of its export (a manifest"
        " from a server that signed none, or one taken out): its sha256, counts and seqs are"
        " its own word; export again from an up-to-date server\n"
    )), unsigned.stderr  # fmt: skip
    # Another export's statement, another key's, or a checkpoint in its place.
    others = json.loads((tmp_path / "other.csv.manifest.json").read_text())["statement"]
    swapped = check(exported, statement=others)
    assert swapped.returncode == 1 and swapped.stderr.startswith(
        "FAILED: audit.csv.manifest.json does not say what its signed statement does: "
    ), swapped.stderr
    assert "export_event_id" in swapped.stderr and "sha256" in swapped.stderr
    text = statement.split("\n\n")[0] + "\n"
    stranger = check(exported, statement=sign_note(text, generate_signer_key("sealtrail.test/log")))
    assert (stranger.returncode, stranger.stderr) == (
        1, "FAILED: the export's statement: no signature by a known key verifies this note\n"
    ), stranger.stderr  # fmt: skip
    as_checkpoint = check(exported, statement=manifest["checkpoint"])
    assert as_checkpoint.returncode == 1 and as_checkpoint.stderr.startswith(
        "FAILED: the export's statement: not an export statement"
    ), as_checkpoint.stderr


def test_checking_an_export_says_the_signed_range_and_filter(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """MATCHES said the file was the export its manifest described, and no
    more: a filtered export of seqs 2..5 (one actor's) read as the whole
    range, and a genuinely signed pair of another range than the one asked
    for looked the same, unless the auditor read the manifest's JSON. It says
    the signed seqs and the filter now (ADR 0130); of a statement v1 (an older
    server's), that its filter is not known."""
    from dataclasses import replace

    from sealtrail.tlog import ExportStatement, Signer, sign_note
    from tests.conftest import SIGNING_KEY

    for actor in ("ops", "alice", "ops", "alice", "ops"):
        run("sealtrail", "record", "--action", "file.read", "--actor-id", actor, env=cli_env)
    whole, some, log = tmp_path / "whole.csv", tmp_path / "some.csv", tmp_path / "log.csv"
    run("sealtrail", "export", "--format", "csv", "--seq", "2-5", "-o", str(whole), env=cli_env)
    run("sealtrail", "export", "--format", "csv", "--seq", "2-5", "--actor", "alice",
        "-o", str(some), env=cli_env)  # fmt: skip
    run("sealtrail", "export", "--format", "csv", "-o", str(log), env=cli_env)
    key = verifier_key

    def matches(out: Path) -> str:
        checked = run("sealtrail", "checkpoint", "--check", f"{out}.manifest.json",
                      "--key", key, env=cli_env, check=False)  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        line: str = checked.stdout.splitlines()[1]
        assert line.startswith(f"MATCHES: {out} is the export its manifest describes: "), line
        return line.split("; ", 1)[1]

    assert matches(whole) == "signed: seqs 2..5, unfiltered"
    assert matches(some) == (
        'signed: the events of seqs 2..5 matching {"actor":"alice"}, as the service selected them'
    )
    size = json.loads((tmp_path / "log.csv.manifest.json").read_text())["tree_size"]
    # Of the whole log unfiltered, its rows are rebuilt into their records and
    # the root over them recomputed (a CSV's as an NDJSON's).
    assert matches(log) == (
        f"signed: the whole log of {size} events, unfiltered, each record in the signed tree"
        " (its root recomputed)"
    )

    # The filter edited: its digest is signed.
    kept = tmp_path / "some.csv.manifest.json"
    manifest = json.loads(kept.read_text())
    kept.write_text(json.dumps({**manifest, "filter": "{}"}))
    edited = run("sealtrail", "checkpoint", "--check", str(kept), "--key", key,
                 env=cli_env, check=False)  # fmt: skip
    assert (edited.returncode, edited.stdout) == (1, ""), edited.stdout
    assert edited.stderr == (
        "FAILED: some.csv.manifest.json does not say what its signed statement does: filter"
        " '{}' where the statement signs a filter of sha256"
        f" {hashlib.sha256(manifest['filter'].encode()).hexdigest()}\n"
    ), edited.stderr
    # A statement v1, as a server before ADR 0130 signed it: it checks, its filter unknown.
    text, _ = manifest["statement"].split("\n\n", 1)
    old = replace(ExportStatement.parse(text + "\n"), filter_sha256=None, removed_count=None)
    v1 = {k: v for k, v in manifest.items() if k not in ("filter", "removed_count")}
    v1["statement"] = sign_note(old.text(), Signer.parse(SIGNING_KEY))
    kept.write_text(json.dumps(v1))
    assert matches(some) == (
        "signed: seqs 2..5, filter not signed (a statement v1: filtered or not, not known)"
    )


def test_an_export_is_checked_with_a_later_checkpoint_against_one_log_today(
    cli_env: dict[str, str], tmp_path: Path, verifier_key: str
) -> None:
    """An auditor holding an export and a checkpoint saved later gives both:
    each is checked against one checkpoint of today's log, so the export's
    log is shown a prefix of the later one. A second --check was dropped,
    click keeping the last: a rewritten first one passed unseen."""
    from sealtrail.tlog import Checkpoint, Signer, format_checkpoint, sign_note
    from tests.conftest import SIGNING_KEY

    run("sealtrail", "record", "--action", "file.read", "--actor-id", "ops", env=cli_env)
    out = tmp_path / "audit.csv"
    run("sealtrail", "export", "--format", "csv", "-o", str(out), env=cli_env)
    run("sealtrail", "record", "--action", "file.write", "--actor-id", "ops", env=cli_env)
    later = tmp_path / "later.txt"
    later.write_text(run("sealtrail", "checkpoint", "--fresh", env=cli_env).stdout)
    run("sealtrail", "record", "--action", "file.delete", "--actor-id", "ops", env=cli_env)
    key = verifier_key
    kept = tmp_path / "audit.csv.manifest.json"
    exported, held = json.loads(kept.read_text())["tree_size"], int(later.read_text().split()[1])

    both = run("sealtrail", "checkpoint", "--check", str(kept), "--check", str(later),
               "--key", key, "--fresh", env=cli_env)  # fmt: skip
    lines = both.stdout.splitlines()
    today = re.fullmatch(
        rf"CONSISTENT: the saved log of {exported} events of {re.escape(str(kept))} is a"
        r" prefix of today's (\d+) \(sealtrail\.test/log/t-\w+\): the latest checkpoint,"
        r" signed \S+Z \(\d+s ago\) by sealtrail\.test/log",
        lines[0],
    )
    assert today is not None, both.stdout
    assert lines[1].startswith(
        f"CONSISTENT: the saved log of {held} events of {later} is a prefix of today's {today[1]} ("
    ), both.stdout
    assert lines[2].startswith(f"MATCHES: {out} is the export its manifest describes: ")

    # A checkpoint of the log that is not, signed with the log's key, given first.
    origin = later.read_text().splitlines()[0]
    forked = tmp_path / "forked.txt"
    forked.write_text(
        sign_note(format_checkpoint(Checkpoint(origin, held, bytes(32))), Signer.parse(SIGNING_KEY))
    )
    one_rewritten = run("sealtrail", "checkpoint", "--check", str(forked), "--check", str(kept),
                        "--key", key, env=cli_env, check=False)  # fmt: skip
    assert one_rewritten.returncode == 1, one_rewritten.stdout
    assert one_rewritten.stderr.startswith(
        f"FAILED: the log was rewritten since the saved checkpoint {forked}: its {held}"
        " events are not a prefix of today's "
    ), one_rewritten.stderr
