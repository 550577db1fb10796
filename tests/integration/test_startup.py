"""A server's start: on a port of its own, or refused with a message that
names what to put right, never a traceback (helper-125)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.sql import SQL, Identifier

from sealtrail import AuditClient, build_event
from sealtrail_server import cli
from sealtrail_server.app import Service
from sealtrail_server.config import Settings
from sealtrail_server.domain.access import Role, token_digest
from sealtrail_server.key_files import load_key_text
from sealtrail_server.store import tokens, urls
from sealtrail_server.store.database import Database
from sealtrail_server.store.tokens import create_token
from tests.command_output import own_output
from tests.conftest import ServerThread, database_of_its_own, database_with_no_schema
from tests.private_files import write_private
from tests.processes import ServerProcess
from tests.service_login import service_login_url


def test_a_port_another_server_listens_on_is_refused(
    server: ServerThread, migrated_database_url: str
) -> None:
    """gRPC's default SO_REUSEPORT let a second server (a stale one in a
    deploy) listen on the same port, the kernel splitting connections between
    the two, both saying they served (helper-125)."""
    taken = f"127.0.0.1:{server.port}"
    second = Service(
        replace(server.settings, listen=taken),
        database_url=server.settings.database_url,
        owner_database_url=migrated_database_url,
    )
    with pytest.raises(SystemExit, match=f"cannot listen on {taken}: in use") as refused:
        asyncio.run(second.start())  # what it started, stopped again
    assert "SEALTRAIL_LISTEN" in str(refused.value)  # what to change


def test_an_address_no_interface_has_is_refused_saying_so(
    server: ServerThread, migrated_database_url: str
) -> None:
    """An address of another machine (a typo, a copied config) was refused
    "in use or invalid", the reader left to guess which (helper-466)."""
    elsewhere = "192.0.2.1:50051"  # TEST-NET-1: no interface of this machine has it
    second = Service(
        replace(server.settings, listen=elsewhere),
        database_url=server.settings.database_url,
        owner_database_url=migrated_database_url,
    )
    said = f"cannot listen on {elsewhere}: no interface of this machine has that address (set"
    with pytest.raises(SystemExit, match=re.escape(said)):
        asyncio.run(second.start())


def test_a_port_in_use_is_refused_in_one_line_without_grpcs_own_error(
    server: ServerThread, migrated_database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A second `make run` beside the first printed gRPC's C++ log line
    (`E1206 ... add_port.cc:83] Failed to add port to server: No address
    added out of total 1 resolved for '127.0.0.1:50051' ...`) above the
    refusal, which says the same in words that name what to change
    (helper-311)."""
    taken = f"127.0.0.1:{server.port}"
    second = Service(
        replace(server.settings, listen=taken),
        database_url=server.settings.database_url,
        owner_database_url=migrated_database_url,
    )
    capfd.readouterr()
    with pytest.raises(SystemExit, match=f"cannot listen on {taken}: in use"):
        asyncio.run(second.start())
    printed = capfd.readouterr().err
    assert "add_port" not in printed and "Failed to add port" not in printed, printed


def test_a_console_port_in_use_is_refused_naming_what_to_change(
    server: ServerThread, migrated_database_url: str
) -> None:
    """`make run` serves the console on 127.0.0.1:8080: with that port taken
    (another `make run` given another SEALTRAIL_LISTEN, or any web server),
    the start said only `cannot serve the console on 127.0.0.1:8080: [Errno
    98] ... address already in use`, not how to move it or do without it, as
    the gRPC port's refusal does (helper-311)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        console = f"127.0.0.1:{taken.getsockname()[1]}"
        second = Service(
            replace(server.settings, listen="127.0.0.1:0", console_listen=console),
            database_url=server.settings.database_url,
            owner_database_url=migrated_database_url,
        )
        with pytest.raises(SystemExit, match=f"cannot serve the console on {console}") as refused:
            asyncio.run(second.start())  # what it started, stopped again
    said = str(refused.value)
    assert "in use" in said and "SEALTRAIL_CONSOLE_LISTEN" in said, said
    assert "empty" in said, said  # `make run` serves one unless told not to


def test_both_ports_in_use_are_refused_at_once_with_a_command_line_moving_both(
    server: ServerThread, sql: psycopg.Connection[Any]
) -> None:
    """A second `make run` beside the first was refused naming gRPC's port
    alone; moved, its next start was refused for the console's: two starts
    to learn what one could say, with the command line that moves both (a
    new user's walkthrough of the README)."""
    with (
        socket.create_server(("127.0.0.1", 0)) as grpc_port,
        socket.create_server(("127.0.0.1", 0)) as console_port,
    ):
        listen = f"127.0.0.1:{grpc_port.getsockname()[1]}"
        console = f"127.0.0.1:{console_port.getsockname()[1]}"
        settings = replace(server.settings, listen=listen, console_listen=console)
        said = f"cannot listen on {listen} nor serve the console on {console}: both in use"
        with database_with_no_schema(sql.info.dsn, "ports_taken") as fresh:
            refused = _refused_before_any_change(settings, fresh, said=re.escape(said))
    moved = re.search(
        r"SEALTRAIL_LISTEN=(127\.0\.0\.1:\d+) SEALTRAIL_CONSOLE_LISTEN=(127\.0\.0\.1:\d+) make run",
        refused,
    )
    assert moved is not None, refused
    assert len({listen, console, *moved.groups()}) == 4, refused  # neither of those taken


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("listen", "cannot listen on {}: in use"),
        ("console_listen", "cannot serve the console on {}"),
    ],
)
def test_a_port_in_use_is_refused_before_the_database_is_changed(
    server: ServerThread, sql: psycopg.Connection[Any], setting: str, said: str
) -> None:
    """A port another process listens on was found only once every migration
    had been applied (and keys generated): the README says such a start stops
    before it starts (helper-395)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        ports = {"listen": "127.0.0.1:0", "console_listen": None} | {setting: address}
        with database_with_no_schema(sql.info.dsn, "port_taken") as fresh:
            settings = replace(server.settings, **ports)
            _refused_before_any_change(settings, fresh, said=re.escape(said.format(address)))


def test_make_run_beside_another_refuses_its_port_before_making_a_database(
    tmp_path: Path,
) -> None:
    """A second `make run` (another data dir, the same port) started an
    embedded PostgreSQL, made and migrated a whole database in its data dir
    and generated its keys, then said the port was in use (helper-395)."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALTRAIL_")}
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env |= {"SEALTRAIL_DATA_DIR": str(data_dir), "SEALTRAIL_LISTEN": address}
        ran = subprocess.run(
            [sys.executable, "-m", "sealtrail_server", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert ran.returncode == 1, ran.stderr
    # In use, as found: not "in use or invalid", which left the reader to guess (helper-466).
    assert f"cannot listen on {address}: in use (set SEALTRAIL_LISTEN" in ran.stderr
    assert "SEALTRAIL_LISTEN" in ran.stderr
    assert not data_dir.exists() or list(data_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://127.0.0.1:1/sealtrail", "cannot use the database: connection failed"),
        ("postgres://:::bad", "cannot use the database: connection is bad"),
    ],
)
def test_a_database_the_server_cannot_use_is_named_not_traced(url: str, said: str) -> None:
    started = CliRunner().invoke(cli.main, ["serve"], env={"SEALTRAIL_DATABASE_URL": url})
    assert started.exit_code == 1
    assert f"Error: {said}" in started.output and "Traceback" not in started.output


@pytest.mark.parametrize("variable", ["SEALTRAIL_DATABASE_URL", "SEALTRAIL_OWNER_DATABASE_URL"])
def test_a_password_with_an_unescaped_at_sign_is_not_echoed(variable: str) -> None:
    """libpq took the password's text after its '@' for the host, and the
    error that named the host reached stderr (helper-140)."""
    env = {"SEALTRAIL_DATABASE_URL": "postgresql://u@127.0.0.1:1/sealtrail"}
    env[variable] = "postgresql://u:p@ss-w0rd@127.0.0.1:1/sealtrail"
    started = CliRunner().invoke(cli.main, ["serve"], env=env)
    assert started.exit_code == 1
    assert "ss-w0rd" not in started.output
    assert f"{variable}: an '@' in its user or password must be written %40" in started.output


def _given_bytes(
    command: list[str], given: str, value: bytes, **settings: bytes
) -> tuple[int, str]:
    """`python -m sealtrail_server COMMAND` given `value` (bytes, not UTF-8
    perhaps) as the flag or variable `given`, no SEALTRAIL_* variable of the
    environment but `settings`: its exit status and what it wrote to stderr."""
    env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    env = {k: v for k, v in env.items() if not k.startswith(b"SEALTRAIL_")}
    env.update({name.encode(): setting for name, setting in settings.items()})
    arguments = [os.fsencode(argument) for argument in ["-m", "sealtrail_server", *command]]
    if given.startswith("--"):
        arguments += [given.encode(), value]
    else:
        env[given.encode()] = value
    ran = subprocess.run(
        [sys.executable.encode(), *arguments], env=env, capture_output=True, timeout=60
    )
    return ran.returncode, ran.stderr.decode("utf-8", "replace")


@pytest.mark.parametrize(
    ("command", "given", "named"),
    [
        (["serve"], "SEALTRAIL_DATABASE_URL", "SEALTRAIL_DATABASE_URL"),
        (["serve"], "SEALTRAIL_OWNER_DATABASE_URL", "SEALTRAIL_OWNER_DATABASE_URL"),
        (["serve"], "--database-url", "SEALTRAIL_DATABASE_URL"),
        (["token", "list", "--tenant", "acme"], "--database-url", "SEALTRAIL_DATABASE_URL"),
    ],
)
def test_a_setting_with_a_byte_that_is_not_utf_8_is_named_not_traced(
    command: list[str], given: str, named: str
) -> None:
    """A database URL with a byte that is not UTF-8 (a password typed in a
    Latin-1 terminal, a file of another encoding sourced as the environment)
    ended `serve` and the operator's commands in a UnicodeEncodeError's
    traceback (`surrogates not allowed`) from the URL's parsing."""
    url = b"postgresql://alice:p\xe4ss@127.0.0.1:1/sealtrail"
    status, said = _given_bytes(
        command, given, url, SEALTRAIL_DATABASE_URL=b"postgresql://alice@127.0.0.1:1/sealtrail"
    )
    assert status == 1, said
    assert "Traceback" not in said, said
    head = "" if command == ["serve"] else "Error: "  # an operator command's, as its others
    assert said.strip().splitlines()[-1] == (
        f"{head}{named}: not UTF-8 text (a byte of another encoding)"
    )


@pytest.mark.parametrize("given", ["SEALTRAIL_DATA_DIR", "--data-dir"])
def test_a_data_dir_with_a_byte_that_is_not_utf_8_is_named_not_traced(
    tmp_path: Path, given: str
) -> None:
    """The embedded PostgreSQL's directory (a data dir named in a Latin-1
    shell, `données`) with a byte that is not UTF-8: `serve` ended in a
    UnicodeDecodeError's traceback from reading initdb's output, which quotes
    the path, and left a half-made cluster behind. A path setting, it passed
    the check of the text settings."""
    data_dir = os.fsencode(tmp_path) + b"/donn\xe9es"
    status, said = _given_bytes(["serve"], given, data_dir, SEALTRAIL_LISTEN=b"127.0.0.1:0")
    assert status == 1, said
    assert "Traceback" not in said, said
    assert said.strip().splitlines()[-1] == (
        "SEALTRAIL_DATA_DIR: not UTF-8 text (a byte of another encoding), which the embedded"
        " PostgreSQL's directory must be (or set SEALTRAIL_DATABASE_URL)"
    ), said
    assert not os.path.exists(data_dir), "nothing made there (initdb left postgres.initdb)"


_TOKEN_COMMANDS = [
    ["token", "create", "--tenant", "acme", "--role", "admin"],
    ["token", "list", "--tenant", "acme"],
    ["token", "revoke", "00000000-0000-0000-0000-000000000000"],
]


@pytest.mark.parametrize("command", _TOKEN_COMMANDS, ids=lambda c: c[1])
@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "postgresql://alice:pa%zzs3cret@127.0.0.1:1/db",
            "SEALTRAIL_DATABASE_URL (or _OWNER_DATABASE_URL) is not a valid PostgreSQL URL",
        ),
        ("host=127.0.0.1 port=1 password s3cretTail", "SEALTRAIL_DATABASE_URL (or _OWNER"),
        ("postgresql://alice:s3cret@127.0.0.1:1/db", "cannot use the database: connection failed"),
    ],
    ids=["bad-url", "bad-keywords", "unreachable"],
)
def test_a_token_command_names_a_database_it_cannot_use_without_its_url(
    command: list[str], url: str, said: str
) -> None:
    """`serve` said what was wrong; the token commands printed a traceback
    ending in libpq's complaint, which quoted the URL's password (helper-157)."""
    ran = CliRunner().invoke(cli.main, [*command, "--database-url", url])
    assert ran.exit_code == 1, ran.output
    assert f"Error: {said}" in ran.output
    assert "s3cret" not in ran.output and "Traceback" not in ran.output


def test_a_token_command_with_the_service_login_alone_says_to_set_the_owner_url(
    database_url: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """docs/database.md's application login cannot migrate a database with no
    schema yet: a traceback (InsufficientPrivilege), where `serve` names
    SEALTRAIL_OWNER_DATABASE_URL."""
    name = f"unmigrated_{tmp_path.name[-8:].lower()}"
    sql.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
    try:
        login = service_login_url(make_conninfo(database_url, dbname=name))
        for command in _TOKEN_COMMANDS:
            ran = CliRunner().invoke(cli.main, [*command, "--database-url", login])
            assert ran.exit_code == 1, ran.output
            # Only `token create` sets a fresh database up; the others refuse one.
            setting_up = command[1] == "create"
            said = "set SEALTRAIL_OWNER_DATABASE_URL" if setting_up else "no Sealtrail schema"
            assert said in ran.output, ran.output
            assert "Traceback" not in ran.output
    finally:
        sql.execute(SQL("DROP DATABASE {} WITH (FORCE)").format(Identifier(name)))


def test_operator_commands_need_only_the_service_login_on_a_current_schema(
    server: ServerThread, migrated_database_url: str, tenant: str
) -> None:
    """README: the commands run with the server's SEALTRAIL_DATABASE_URL. With
    only the service's login, `token list`, `tenant list` and `sink list`
    were refused as a migration needing the owner's URL, though the schema
    was current (helper-203): they only read, and the token commands write
    as the API does. What the owner alone may do says which URL it needs."""
    login = service_login_url(migrated_database_url)
    env = {
        "SEALTRAIL_DATABASE_URL": login,
        "SEALTRAIL_FORWARD_ALLOW_HTTP": "true",
        "SEALTRAIL_FORWARD_ALLOW_NETWORKS": "127.0.0.0/8",
    }

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli.main, list(args), env=env)

    made = run("token", "create", "--tenant", tenant, "--role", "reader")
    assert made.exit_code == 0, made.output
    for command in (
        ["token", "list", "--tenant", tenant],
        ["tenant", "list"],
        ["tenant", "erasures"],
        ["sink", "list"],
    ):
        ran = run(*command)
        assert ran.exit_code == 0, (command, ran.output)
    listed = run("tenant", "list", "--format", "json")
    assert tenant in {row["tenant"] for row in json.loads(listed.stdout)}

    for command in (
        ["sink", "create", "soc", "--kind", "webhook", "--url", "http://127.0.0.1:9/hook",
         "--generate-secret"],
        ["tenant", "erase", tenant, "--confirm", tenant],
    ):  # fmt: skip
        refused = run(*command)
        assert refused.exit_code == 1, (command, refused.output)
        assert "set SEALTRAIL_OWNER_DATABASE_URL" in refused.output, refused.output
        assert "Traceback" not in refused.output
    assert "soc" not in run("sink", "list").stdout
    assert run("token", "list", "--tenant", tenant).exit_code == 0  # not erased


def test_a_start_refused_for_lost_grants_with_the_owner_url_set_says_to_restore_again(
    database_url: str, tmp_path: Path
) -> None:
    """A dump restored into a cluster without the roles loses their grants;
    creating the roles after, as the first refusal says, the next start was
    told to set SEALTRAIL_OWNER_DATABASE_URL, which was set (helper-203)."""
    with database_of_its_own(database_url, "lost_grants") as restored:
        with psycopg.connect(restored, autocommit=True) as owner:
            owner.execute(
                "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM sealtrail_service, sealtrail_system"
            )
        env = {
            "SEALTRAIL_OWNER_DATABASE_URL": restored,
            "SEALTRAIL_DATABASE_URL": service_login_url(restored),
            "SEALTRAIL_DATA_DIR": str(tmp_path),
        }
        started = CliRunner().invoke(cli.main, ["serve", "--listen", "127.0.0.1:0"], env=env)
    assert started.exit_code == 1, started.output
    assert "permission denied for table" in started.output
    assert "set SEALTRAIL_OWNER_DATABASE_URL" not in started.output
    assert "grants" in started.output and "restore" in started.output
    assert "docs/operations.md" in started.output


def test_a_start_refused_for_lost_grants_on_one_superuser_url_says_to_restore_again(
    database_url: str, tmp_path: Path
) -> None:
    """The embedded PostgreSQL's case (docs/operations.md, Restoring: a dump
    restored into a new data dir before roles.sql ran): one URL, a superuser's,
    which owns the tables. The refusal of a service role's statement was told
    to set SEALTRAIL_OWNER_DATABASE_URL to an owner's or a superuser's, which
    it was already (helper-415)."""
    with database_of_its_own(database_url, "lost_grants_one_url") as restored:
        with psycopg.connect(restored, autocommit=True) as owner:
            owner.execute(
                "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM sealtrail_service, sealtrail_system"
            )
        env = {"SEALTRAIL_DATABASE_URL": restored, "SEALTRAIL_DATA_DIR": str(tmp_path)}
        started = CliRunner().invoke(cli.main, ["serve", "--listen", "127.0.0.1:0"], env=env)
    assert started.exit_code == 1, started.output
    assert "Error: the database refused a statement (permission denied for table" in started.output
    assert "SEALTRAIL_OWNER_DATABASE_URL" not in started.output, started.output
    assert "not the tables' owner" not in started.output, started.output
    assert "the service's roles lack their grants" in started.output
    assert "restore again once they exist (docs/operations.md, Restoring)" in started.output


def test_a_database_that_never_answers_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that takes the connection and says nothing (a hung server, a
    firewall dropping the rest) held a start for good: libpq waits as long as
    TCP does without a connect_timeout. One is set unless the URL sets one."""
    monkeypatch.setattr(urls, "CONNECT_TIMEOUT_SECONDS", 1)  # 10 s in service
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as mute:  # listens, never accepts
        url = f"postgresql://sealtrail@127.0.0.1:{mute.getsockname()[1]}/sealtrail"
        started = CliRunner().invoke(cli.main, ["serve"], env={"SEALTRAIL_DATABASE_URL": url})
    assert started.exit_code == 1
    assert "Error: cannot use the database" in started.output and "timeout" in started.output
    # The URL's own, or its service's.
    own = conninfo_to_dict(urls.with_connection_limits(f"{url}?connect_timeout=30"))
    assert own["connect_timeout"] == "30"
    assert urls.with_connection_limits(f"{url}?service=prod") == f"{url}?service=prod"


def test_a_connection_to_a_database_gone_silent_is_given_up_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partition (no reply, no reset) held a statement the 15 minutes TCP
    takes to give up, and an idle connection (the hub's LISTEN) for good:
    libpq's keepalives and TCP user timeout are set unless the URL sets its
    own (libpq applies them; packets cannot be dropped from a test)."""
    monkeypatch.delenv("PGSERVICE", raising=False)
    url = "postgresql://sealtrail@db.internal:5432/sealtrail"
    limited = conninfo_to_dict(urls.with_connection_limits(url))
    assert {name: int(str(limited[name])) for name in urls.SILENCE_LIMITS} == {
        "keepalives": 1,
        "keepalives_idle": 15,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,
    }
    own = conninfo_to_dict(urls.with_connection_limits(f"{url}?tcp_user_timeout=0&keepalives=0"))
    assert (own["tcp_user_timeout"], own["keepalives"], own["keepalives_idle"]) == ("0", "0", "15")


def test_an_owner_url_without_a_service_url_is_refused(tmp_path: Path) -> None:
    """The owner's database was migrated, then an embedded one served, which
    had no Sealtrail roles (helper-125). A flag's URL counts."""
    owner = {"SEALTRAIL_OWNER_DATABASE_URL": "postgresql://owner@127.0.0.1:1/sealtrail"}
    alone = CliRunner().invoke(cli.main, ["serve", "--data-dir", str(tmp_path)], env=owner)
    assert alone.exit_code == 1
    assert "SEALTRAIL_OWNER_DATABASE_URL needs SEALTRAIL_DATABASE_URL" in alone.output
    flagged = CliRunner().invoke(
        cli.main, ["serve", "--database-url", "postgresql://127.0.0.1:1/sealtrail"], env=owner
    )
    assert "cannot use the database" in flagged.output  # past the check, to the database


def test_a_data_dir_that_is_not_a_directory_is_named_not_traced(tmp_path: Path) -> None:
    """The embedded PostgreSQL's directory could not be made: a traceback (helper-140)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for data_dir in (a_file, a_file / "under"):
        started = CliRunner().invoke(cli.main, ["serve"], env={"SEALTRAIL_DATA_DIR": str(data_dir)})
        assert started.exit_code == 1, started.output
        assert f"SEALTRAIL_DATA_DIR={str(data_dir)!r}: not a directory" in started.output
        assert "Traceback" not in started.output


def test_a_data_dir_a_key_cannot_be_written_in_is_named_not_traced(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """With a database URL, the data dir holds only the keys a first start
    generates: one that could not be made (a file in the way; a read-only
    file system, as a container's) stopped the start with a traceback
    (helper-296). Keys are made once the database is reached, before it is
    changed."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    url = {"SEALTRAIL_DATABASE_URL": service_login_url(migrated_database_url)}
    no_keys: dict[str, str | None] = {
        f"SEALTRAIL_{name}_KEY": None for name in ("SECRETS", "SIGNING", "REDACTION")
    }
    for data_dir in (a_file, a_file / "under"):
        env = {**url, **no_keys, "SEALTRAIL_DATA_DIR": str(data_dir)}
        started = CliRunner().invoke(cli.main, ["serve"], env=env)
        assert started.exit_code == 1, started.output
        assert "Traceback" not in started.output and started.exception is not None
        said = own_output(started.output)
        assert said.startswith(
            f"cannot write the secrets key {data_dir / 'secrets-key'}"
            f" (SEALTRAIL_DATA_DIR={str(data_dir)!r}): "
        ), said
        assert "set SEALTRAIL_SECRETS_KEY (or _FILE)" in said
        assert said.count("\n") == 1  # one line


def test_a_key_file_that_cannot_be_read_names_its_setting(tmp_path: Path) -> None:
    def load(file: Path) -> tuple[str, str]:
        return load_key_text(
            text=None,
            file=file,
            default=tmp_path / "signing-key",
            setting="SEALTRAIL_SIGNING_KEY",
            generate=None,
            what="checkpoint signing key",
        )

    with pytest.raises(SystemExit, match=r"SEALTRAIL_SIGNING_KEY_FILE=.*missing: no such file"):
        load(tmp_path / "missing")
    with pytest.raises(SystemExit, match=r"_FILE=.*: cannot read the checkpoint signing key: Is a"):
        load(tmp_path)


def test_a_key_file_another_server_writes_first_is_the_one_both_use(tmp_path: Path) -> None:
    """Two servers starting together on a fresh data dir both found no key
    and generated one: the second to write crashed (FileExistsError), or
    read the first's file before its text was in and exited on a parse error
    (helper-139). Here the other server writes its key as this one generates
    its own, between the check and the write."""
    path = tmp_path / "signing-key"

    def generate_as_another_writes() -> str:
        path.write_text("the other server's key\n", encoding="utf-8")
        return "this server's key"

    text, source = load_key_text(
        text=None,
        file=None,
        default=path,
        setting="SEALTRAIL_SIGNING_KEY",
        generate=generate_as_another_writes,
        what="checkpoint signing key",
    )
    assert (text, source) == ("the other server's key\n", str(path))
    assert path.read_text(encoding="utf-8") == "the other server's key\n"
    assert [p.name for p in tmp_path.iterdir()] == ["signing-key"]  # no temporary file left


def test_a_key_is_generated_on_a_file_system_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some volumes (CIFS, some FUSE ones) refuse hard links: a key linked
    into place crashed the first start there (helper-147). It is then
    created in place, as before, readable by its owner alone."""

    def refused(source: object, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refused)
    _generated_whole_and_private(tmp_path / "signing-key")


def test_a_generated_key_file_is_written_whole_and_private(tmp_path: Path) -> None:
    _generated_whole_and_private(tmp_path / "keys" / "signing-key")


def _generated_whole_and_private(path: Path) -> None:
    """A key generated at `path`: the one used, written whole, readable by
    its owner alone, and nothing else left beside it."""
    text, _ = load_key_text(
        text=None,
        file=None,
        default=path,
        setting="SEALTRAIL_SIGNING_KEY",
        generate=lambda: "a new key",
        what="checkpoint signing key",
    )
    assert text == "a new key" and path.read_text(encoding="utf-8") == "a new key\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["signing-key"]


def test_a_start_refused_for_its_own_settings_leaves_the_database_untouched(
    server: ServerThread, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A signing key file missing was found only after every migration had
    been applied, and a secrets key generated (helper-125)."""
    with database_with_no_schema(sql.info.dsn, "untouched") as fresh:
        settings = replace(
            server.settings,
            signing_key=None,
            signing_key_file=tmp_path / "missing",
            secrets_key=None,
            data_dir=tmp_path,
        )
        _refused_before_any_change(settings, fresh, said="SEALTRAIL_SIGNING_KEY_FILE")


def _refused_before_any_change(settings: Settings, url: str, *, said: str) -> str:
    """A server of `settings` on the database at `url`, which has no schema,
    refuses to start, saying `said`, and leaves that database without a
    table: what it said, whole."""
    refused = Service(settings, database_url=url, owner_database_url=url)
    with pytest.raises(SystemExit, match=said) as stopped:
        asyncio.run(refused.start())
    with psycopg.connect(url) as untouched:
        assert untouched.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone() == (0,)
    return str(stopped.value)


def test_a_signed_checkpoints_dir_that_cannot_be_written_is_refused_before_migrating(
    server: ServerThread, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """It was opened after every migration had been applied, the signing key
    registered: a release's start refused for a directory of its own had
    changed the database the running release's processes restart on (helper-296)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with database_with_no_schema(sql.info.dsn, "unsigned") as fresh:
        settings = replace(server.settings, signed_checkpoints_dir=a_file / "under")
        _refused_before_any_change(
            settings, fresh, said="SEALTRAIL_SIGNED_CHECKPOINTS_DIR: cannot keep"
        )


def test_a_pool_the_database_cannot_hold_names_its_setting(
    server: ServerThread, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """SEALTRAIL_POOL_MIN_SIZE past the connections the database takes
    stopped the start saying "pool initialization incomplete after 5.0 sec",
    naming neither the setting nor what the database answered (helper-296)."""
    name = f"small_{tmp_path.name[-8:].lower()}"
    sql.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
    try:
        fresh = make_conninfo(sql.info.dsn, dbname=name)
        sql.execute(SQL("ALTER DATABASE {} CONNECTION LIMIT 3").format(Identifier(name)))
        settings = replace(server.settings, pool_min_size=5, pool_max_size=5)
        # Not a superuser's, whom no connection limit holds.
        login = service_login_url(fresh)
        refused = Service(settings, database_url=login, owner_database_url=fresh)

        async def start_and_stop() -> None:
            await refused.start()
            await refused.stop(grace=0)

        with pytest.raises(SystemExit) as stopped:
            asyncio.run(start_and_stop())
        said = str(stopped.value)
        assert said.startswith(
            "cannot open SEALTRAIL_POOL_MIN_SIZE=5 connections to the database within 5 s: "
        ), said
        assert "too many connections for database" in said
    finally:
        sql.execute(SQL("DROP DATABASE {} WITH (FORCE)").format(Identifier(name)))


def test_a_database_not_in_utf8_is_refused_at_start_before_any_change(
    migrated_database_url: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """`createdb` on a cluster made under LANG=C gives SQL_ASCII, whose text
    psycopg reads as bytes: `serve` ended in a 40-line TypeError from the
    partitions' code (helper-203)."""
    name = f"ascii_{tmp_path.name[-8:].lower()}"
    sql.execute(
        SQL(
            "CREATE DATABASE {} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ).format(Identifier(name))
    )
    try:
        ascii_url = make_conninfo(migrated_database_url, dbname=name)
        env = {"SEALTRAIL_DATABASE_URL": ascii_url, "SEALTRAIL_DATA_DIR": str(tmp_path)}
        started = CliRunner().invoke(cli.main, ["serve", "--listen", "127.0.0.1:0"], env=env)
        assert started.exit_code == 1, started.output
        assert "Traceback" not in started.output
        assert "Error: the database's encoding is SQL_ASCII; Sealtrail needs UTF8" in (
            started.output
        )
        assert "ENCODING 'UTF8'" in started.output  # how to make one
        with psycopg.connect(ascii_url) as untouched:
            assert untouched.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchone() == (0,)
    finally:
        sql.execute(SQL("DROP DATABASE {} WITH (FORCE)").format(Identifier(name)))


def test_two_servers_starting_at_once_issue_one_development_token(
    migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers starting together on a fresh embedded database both found
    no token and both made a development admin token; the file named one
    of them (helper-157). Here each count waits (a second at most) for the
    other's, as it did when both counted before either created."""
    counting = asyncio.Event()
    counted = 0
    count_tokens = tokens.count_tokens

    async def count_beside_the_other(db: Any) -> int:
        nonlocal counted
        found = await count_tokens(db)
        counted += 1
        if counted == 2:
            counting.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counting.wait(), 1.0)
        return found

    monkeypatch.setattr(tokens, "count_tokens", count_beside_the_other)
    settings = replace(Settings(), data_dir=tmp_path)
    with database_of_its_own(migrated_database_url, "dev_token") as own:

        async def start_two() -> None:
            await asyncio.gather(*(cli._issue_dev_token(settings, own) for _ in range(2)))

        asyncio.run(start_two())
        with psycopg.connect(own) as conn:
            digests = conn.execute("SELECT secret_sha256 FROM api_tokens").fetchall()
    written = (tmp_path / cli.DEV_TOKEN_FILE).read_text().strip()
    assert digests == [(token_digest(written),)]  # one token, the one in the file
    assert [p.name for p in tmp_path.iterdir()] == [cli.DEV_TOKEN_FILE]


def test_a_second_fresh_server_with_a_key_of_its_own_is_refused_before_either_signs(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """Two servers of a fresh deployment, each with a data dir of its own and
    no key configured: each registered its key at start, before either had
    signed, and both signed the same logs under two keys nobody chose
    (helper-191). The first key is the deployment's; the second is refused."""
    from sealtrail.tlog import Signer

    with database_of_its_own(migrated_database_url, "twokeys") as url:
        first = ServerThread(url, signing_key=None, data_dir=tmp_path / "a", checkpoint_interval=0)
        try:
            settings = replace(first.settings, data_dir=tmp_path / "b")
            second = Service(settings, database_url=first.settings.database_url,
                             owner_database_url=url)  # fmt: skip
            with pytest.raises(SystemExit) as stopped:
                asyncio.run(second.start())
        finally:
            first.close()
        deployments = Signer.parse((tmp_path / "a" / "signing-key").read_text()).verifier
        assert f"{deployments.name}+{deployments.key_id.hex()}" in str(stopped.value)


def test_a_server_whose_signing_key_file_is_lost_refuses_to_sign_on_under_a_new_key(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """A data dir restored without its `signing-key` made `serve` generate a
    new key and sign on with it: to an auditor, a key change nobody chose.
    A fresh deployment makes its key silently; one whose database holds
    checkpoints signed by other keys refuses, naming them, at every start,
    until the key is restored or a new one is configured deliberately (the
    rotation path: registered beside the old ones, its first checkpoint
    extending theirs)."""
    from sealtrail import AuditClient
    from sealtrail.tlog import Signer

    data_dir = tmp_path / "data"
    key_file = data_dir / "signing-key"
    with database_of_its_own(migrated_database_url, "lostkey") as url:
        first = ServerThread(url, signing_key=None, data_dir=data_dir)
        try:
            with AuditClient(first.target, token=first.token("t-keys")) as client:
                client.record(action="file.read", actor_id="ops")
                client.get_checkpoint(fresh=True)
        finally:
            first.close()
        original = Signer.parse(key_file.read_text()).verifier
        signed_by = f"{original.name}+{original.key_id.hex()}"

        key_file.unlink()  # a restore that forgot it
        settings = replace(first.settings, data_dir=data_dir)
        for _ in range(2):  # the key the first refused start made refuses the next
            refused = Service(settings, database_url=first.settings.database_url,
                              owner_database_url=url)  # fmt: skip
            with pytest.raises(SystemExit) as stopped:
                asyncio.run(refused.start())
            said = str(stopped.value)
            assert signed_by in said and str(key_file) in said, said
            assert "SEALTRAIL_SIGNING_KEY_FILE" in said and "docs/operations.md" in said
        new = Signer.parse(key_file.read_text()).verifier
        assert f"{new.name}+{new.key_id.hex()}" in said

        # Chosen: the new key named for one start, as a rotation is.
        chosen = ServerThread(url, signing_key=None, signing_key_file=key_file, data_dir=data_dir)
        try:
            with AuditClient(chosen.target, token=chosen.token("t-keys")) as client:
                client.record(action="file.write", actor_id="ops")
                client.get_checkpoint(fresh=True)  # extends the one the lost key signed
                keys = client.get_verifier_keys()
                assert [k.text for k in keys if k.active] == [new.text()]
                assert original.text() in {k.text for k in keys}
        finally:
            chosen.close()
        again = ServerThread(url, signing_key=None, data_dir=data_dir)  # registered now
        again.close()


def test_a_database_that_writes_times_in_another_datestyle_is_served(
    migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg reads times written in ISO only: on a database whose DateStyle
    is another (`SQL, DMY`, as some DBAs set it), a start made its months of
    events then failed on the first time it read, and so did every call and
    command. Every connection now asks for ISO, as a startup parameter of its
    own (PGDATESTYLE): asked in `options`, a pooler that takes none (PgBouncer
    before 1.20, Debian 12's) refused every connection, "unsupported startup
    parameter: options", where the server had been served through it."""
    monkeypatch.delenv("PGSERVICE", raising=False)
    monkeypatch.delenv("PGOPTIONS", raising=False)
    monkeypatch.delenv("PGDATESTYLE", raising=False)
    with (
        database_of_its_own(migrated_database_url, "datestyle") as direct,
        _pooler_without_options(direct) as (url, refused),
    ):
        with psycopg.connect(direct, autocommit=True) as owner:
            name = Identifier(str(owner.info.dbname))
            owner.execute(SQL("ALTER DATABASE {} SET DateStyle = 'SQL, DMY'").format(name))
        server = ServerThread(url)
        try:
            login = urls.with_connection_limits(service_login_url(url))
            database = server.run(Database.open(login, min_size=1, max_size=1))
            try:
                issued = server.run(create_token(database, tenant_id="t-dates", role=Role.ADMIN))
            finally:
                server.run(database.close())
            with AuditClient(server.target, token=issued.secret) as client:
                stored = client.record(build_event(action="doc.edit", actor_id="u-1")).event
                assert [event.seq for event in client.query()] == [stored.seq]
                assert client.get_event(stored.id) == stored
        finally:
            server.close()
        assert refused == []
    # The URL's own options and PGOPTIONS are sent as they are.
    given = "postgresql://sealtrail@db.internal/sealtrail?options=-c%20search_path%3Dlog"
    options = conninfo_to_dict(urls.with_connection_limits(given))["options"]
    assert options == "-c search_path=log"
    once = urls.with_connection_limits(given)
    assert urls.with_connection_limits(once) == once


@contextlib.contextmanager
def _pooler_without_options(url: str) -> Iterator[tuple[str, list[bytes]]]:
    """A pooler in front of the database at `url`, on 127.0.0.1, that takes
    no `options` startup parameter, as PgBouncer before 1.20: a connection
    asking for one is refused as PgBouncer 1.18 refuses it; the others are
    passed through. Yields its URL of the database, and the startup packets
    it refused."""
    target = conninfo_to_dict(url)
    socket_dir, port = str(target["host"]), int(target.get("port") or 5432)
    listener = socket.create_server(("127.0.0.1", 0))
    refused: list[bytes] = []

    def exactly(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            piece = conn.recv(size - len(data))
            if not piece:
                raise ConnectionError("closed")
            data += piece
        return data

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve(client: socket.socket) -> None:
        with client, contextlib.suppress(OSError):
            while True:
                head = exactly(client, 8)
                length, code = struct.unpack("!ii", head)
                body = exactly(client, length - 8)
                if code not in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                    break
                client.sendall(b"N")
            names = body.split(b"\0")[0::2]
            if b"options" in names:
                refused.append(head + body)
                error = b"SFATAL\0VFATAL\0C08P01\0Munsupported startup parameter: options\0\0"
                client.sendall(b"E" + struct.pack("!i", len(error) + 4) + error)
                return
            with socket.socket(socket.AF_UNIX) as upstream:
                upstream.connect(f"{socket_dir}/.s.PGSQL.{port}")
                upstream.sendall(head + body)
                back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
                back.start()
                pump(client, upstream)
                back.join(30)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                threading.Thread(target=serve, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield make_conninfo(url, host="127.0.0.1", port=listener.getsockname()[1]), refused
    finally:
        listener.close()


def test_a_start_that_cannot_use_its_database_generates_no_key(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """A first start with no key configured generated its signing, redaction
    and secrets keys in the data dir, then found it could not reach the
    database (a closed port, a login refused, a login without the roles):
    keys of no deployment were left behind, which the next start, on the
    right database, took for its own. The database is reached first; a start
    that then works generates them (real processes, as an operator runs them)."""
    stranger = f"sealtrail_stranger_{os.getpid()}"
    with psycopg.connect(migrated_database_url, autocommit=True) as admin:
        admin.execute(SQL("CREATE ROLE {} LOGIN PASSWORD 'x'").format(Identifier(stranger)))
    service = service_login_url(migrated_database_url)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_drop_role, migrated_database_url, stranger)
        data_dir = tmp_path / "data"
        no_keys = {f"SEALTRAIL_{name}_KEY": "" for name in ("SIGNING", "REDACTION", "SECRETS")}
        env = {**os.environ, **no_keys, "SEALTRAIL_DATA_DIR": str(data_dir)}
        env.pop("SEALTRAIL_SIGNED_CHECKPOINTS_DIR")  # the data dir's, as in service
        # The test cluster trusts every login: a user it does not know is
        # refused at login, as a wrong password is.
        unknown = f"sealtrail_unknown_{os.getpid()}"
        unusable = [  # the service's URL, the owner's, what the start says
            ("postgresql://sealtrail@127.0.0.1:1/sealtrail", "", "connection failed"),
            (make_conninfo(service, user=unknown), "", f'role "{unknown}" does not exist'),
            (make_conninfo(service, user=stranger, password="x"), "", "cannot work as"),
            (
                service,
                make_conninfo(migrated_database_url, user=unknown),
                f'role "{unknown}" does not exist',
            ),
        ]
        for url, owner_url, said in unusable:
            started = subprocess.run(
                [sys.executable, "-m", "sealtrail_server", "serve", "--listen", "127.0.0.1:0"],
                env={
                    **env,
                    "SEALTRAIL_DATABASE_URL": url,
                    "SEALTRAIL_OWNER_DATABASE_URL": owner_url,
                },
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert started.returncode == 1, started.stderr
            assert said in started.stderr and "Traceback" not in started.stderr, started.stderr
            assert "generated" not in started.stderr, started.stderr
            left = sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []
            assert left == [], (url, left)
        owner = cleanup.enter_context(database_with_no_schema(migrated_database_url, "firstkeys"))
        served = ServerProcess(
            owner,
            env={**no_keys, "SEALTRAIL_DATA_DIR": str(data_dir)},
        )
        try:
            assert served.proc.poll() is None
        finally:
            assert served.terminate() == 0, "".join(served.stderr)
        kept = {p.name for p in data_dir.iterdir()}
        assert {"signing-key", "redaction-key", "secrets-key"} <= kept, kept


def _drop_role(url: str, role: str) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(SQL("DROP ROLE IF EXISTS {}").format(Identifier(role)))


_KEYS = {
    "SIGNING": "checkpoint signing key",
    "REDACTION": "redaction key",
    "SECRETS": "secrets key",
}


@pytest.mark.parametrize("key", list(_KEYS))
def test_a_key_file_that_is_not_the_key_says_which_setting_and_what_to_do(
    key: str, tmp_path: Path
) -> None:
    """A key file missing, unreadable, or not holding a key stops the start
    naming the setting that named it, the file, and what to do, alike for
    the three keys. One holding too few hex digits was named by its path
    alone ("/etc/sealtrail/rk: the redaction key must be 64 hex digits"),
    the signing key's in the signing library's words, and none said what
    to do. Read before the database is reached (a closed port here)."""
    setting, what = f"SEALTRAIL_{key}_KEY", _KEYS[key]
    (tmp_path / "a-dir").mkdir()
    write_private(tmp_path / "short", "c0ffee\n")
    write_private(tmp_path / "not-text", b"\xff\xfe\n")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    base = {
        "SEALTRAIL_DATABASE_URL": "postgresql://sealtrail@127.0.0.1:1/sealtrail",
        "SEALTRAIL_DATA_DIR": str(data_dir),
        setting: None,
    }
    configured = {
        "missing": "no such file",
        "a-dir": f"cannot read the {what}: Is a directory",
        "not-text": f"cannot read the {what}: not text",
        "short": f"not a {what}",
    }
    for name, problem in configured.items():
        path = tmp_path / name
        env = {**base, f"{setting}_FILE": str(path)}
        started = CliRunner().invoke(cli.main, ["serve"], env=env)
        said = own_output(started.output)
        assert started.exit_code == 1 and "Traceback" not in said, said
        assert said.startswith(f"{setting}_FILE={path}: {problem}"), said
        assert f"set {setting}_FILE to a file the server's user can read" in said, said
        assert f"holding the deployment's {what}" in said, said
        assert said.count("\n") == 1, said  # one line
    kept = data_dir / {"SIGNING": "signing-key"}.get(key, f"{key.lower()}-key")
    write_private(kept, "c0ffee\n")  # a data dir's key damaged
    started = CliRunner().invoke(cli.main, ["serve"], env=base)
    said = own_output(started.output)
    assert started.exit_code == 1 and "Traceback" not in said, said
    assert said.startswith(f"{kept} (the data dir's {what}, none set in {setting} or"), said
    assert f"not a {what}" in said, said
    assert f"restore it from a backup, or set {setting} (or _FILE)" in said, said


@pytest.mark.parametrize("data_dir_before", ["none", "in use"])
def test_a_start_failing_after_its_keys_were_generated_removes_them(
    migrated_database_url: str, tmp_path: Path, data_dir_before: str
) -> None:
    """A first start that logged in, generated its keys, then failed (here
    its migrations refused: the owner's URL names a user who may create
    nothing) left keys of a deployment that never started in the data dir,
    which the next start took for its own. Those it generated are removed,
    as the database never took them as the deployment's (a real process);
    and so are the directories it made for them (the data dir itself, the
    signing key's `signed-checkpoints/<key id>`), left empty before: what
    was there before the start, a folder empty or not, stays."""
    stranger = f"sealtrail_stranger_{os.getpid()}"
    with psycopg.connect(migrated_database_url, autocommit=True) as admin:
        admin.execute(SQL("CREATE ROLE {} LOGIN PASSWORD 'x'").format(Identifier(stranger)))
    data_dir = tmp_path / "data"
    if data_dir_before == "in use":  # an operator's, which the start must not tidy
        (data_dir / "signed-checkpoints").mkdir(parents=True)
        (data_dir / "notes").mkdir()
        (data_dir / "notes" / "runbook.txt").write_text("restart with care\n")
    before = sorted(data_dir.rglob("*")) if data_dir.exists() else []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_drop_role, migrated_database_url, stranger)
        fresh = cleanup.enter_context(database_with_no_schema(migrated_database_url, "nokeys"))
        no_keys = {f"SEALTRAIL_{name}_KEY": "" for name in ("SIGNING", "REDACTION", "SECRETS")}
        env = {**os.environ, **no_keys, "SEALTRAIL_DATA_DIR": str(data_dir)}
        env.pop("SEALTRAIL_SIGNED_CHECKPOINTS_DIR")  # the data dir's, as in service
        started = subprocess.run(
            [sys.executable, "-m", "sealtrail_server", "serve", "--listen", "127.0.0.1:0"],
            env={
                **env,
                "SEALTRAIL_DATABASE_URL": service_login_url(fresh),
                "SEALTRAIL_OWNER_DATABASE_URL": make_conninfo(fresh, user=stranger, password="x"),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 1, started.stderr
        assert "Traceback" not in started.stderr, started.stderr
        assert "generated a new" in started.stderr, started.stderr  # after the login
        left = sorted(data_dir.rglob("*")) if data_dir.exists() else []
        assert left == before, started.stderr
        assert data_dir.exists() == (data_dir_before == "in use")
        assert started.stderr.count("generated by this start, which failed") == 3, started.stderr
