"""Every command of `sealtrail` and `sealtrail-server`, run through its real
parser with bad arguments from a bounded, seeded generator (the same in every
run): numbers that are no numbers or out of range, times no one can read,
choices not offered, files missing, empty or not text, text with NUL and
control characters, very long values. A command refused ends with a message
and a non-zero exit, never a traceback: no exception but click's own exit
leaves it. The client's commands talk to a real server, with an admin's
token of a tenant of their own; the server's to a database of their own."""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from sealtrail._cli import main as client_main
from sealtrail_server import cli as server_cli
from tests.conftest import REDACTION_SECRET, SECRETS_KEY, ServerThread, database_of_its_own

# Invocations per command: each a few milliseconds to a tenth of a second.
COUNT = 12
_TEXTS = (
    "", " ", "-", "--", "\x00", "a\x00b", "\x1b[31mred", "é\u202e", "x" * 5000, "-1", "0",
    "99999999999999999999", "1e999", "nan", "now", "7d", "99999999999d", "2026-13-45",
    "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "00000000-0000-0000-0000-000000000000",
    "not-a-uuid", "http://[::1", "https://127.0.0.1:1/", "{", "[]", '{"a": 1e999}', "1-0",
    "5-", "a.b", "*", "../../etc/passwd",
)  # fmt: skip
_NUMBERS = ("abc", "-1", "0", "1", "99999999999999999999", "", "1e3", "nan", "inf", "-inf")


def _leaves(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _leaves(sub, (*path, name))
    else:
        yield path


def _command(group: click.Command, path: tuple[str, ...]) -> click.Command:
    for name in path:
        assert isinstance(group, click.Group)
        group = group.commands[name]
    return group


def _value(rng: random.Random, param: click.Parameter, files: dict[str, Path]) -> str:
    kind = param.type
    if isinstance(kind, click.Choice):
        if rng.random() < 0.7:  # one offered, for the command to go further
            return str(rng.choice(list(kind.choices)))
        return rng.choice(("NOPE", "", "\x00"))
    if isinstance(kind, click.types.IntParamType | click.types.FloatParamType):
        if rng.random() < 0.4:
            return str(rng.choice((1, 2, 5, 60, 100, 1000)))
        return rng.choice(_NUMBERS)
    if isinstance(kind, click.Path | click.File):
        return str(rng.choice(list(files.values())))
    return rng.choice((*_TEXTS, *_NUMBERS, str(rng.choice(list(files.values())))))


def arguments(
    command: click.Command, path: tuple[str, ...], files: dict[str, Path]
) -> Iterator[list[str]]:
    """COUNT argument lists for `command`, the same in every run: its required
    parameters always, others at random, each value from a pool of bad ones
    (a choice or a number often a good one, for the command to go further)."""
    rng = random.Random(zlib.crc32(" ".join(path).encode()))
    for _ in range(COUNT):
        options: list[str] = []
        positional: list[str] = []
        for param in command.params:
            if param.name in ("help", "data_dir", "database_url"):
                continue
            if not param.required and rng.random() < 0.6:
                continue
            count = param.nargs if param.nargs > 0 else 1
            values = [_value(rng, param, files) for _ in range(count)]
            if isinstance(param, click.Argument):
                positional += values
            elif isinstance(param, click.Option):
                options += [param.opts[0]] if param.is_flag else [param.opts[0], *values]
        # A value starting with "-" is an argument only after "--".
        yield [*options, "--", *positional] if positional else options


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fuzzed-commands")
    made = {
        "missing": folder / "missing" / "file",
        "folder": folder,
        "empty": folder / "empty",
        "binary": folder / "binary",
        "not-utf8": folder / "not-utf8",
        "json": folder / "json",
    }
    made["empty"].write_bytes(b"")
    made["binary"].write_bytes(bytes(range(256)) * 4)
    made["not-utf8"].write_bytes(b'{"a": "\xff\xfe"}\n\xc3\x28\n')
    made["json"].write_text('{"action": "a.b", "actor": {"id": 5}}\n[1, 2]\n{"x": 1e999}\n')
    return made


def _failed_cleanly(result: Result, args: list[str]) -> None:
    said = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args!r} raised {result.exception!r}:\n{said}") from (
            result.exception
        )
    assert "Traceback" not in said, (args, said)
    if result.exit_code != 0:
        assert said.strip(), (args, "ended", result.exit_code, "saying nothing")


CLIENT_COMMANDS = [p for p in _leaves(client_main, ()) if p != ("tail",)]  # tail never ends


@pytest.mark.parametrize("path", CLIENT_COMMANDS, ids=" ".join)
def test_client_commands_refuse_bad_arguments_with_a_message(
    path: tuple[str, ...], server: ServerThread, tenant: str, files: dict[str, Path]
) -> None:
    token = server.token(tenant)
    command = _command(client_main, path)
    runner = CliRunner()
    for args in arguments(command, path, files):
        full = ["--server", server.target, "--token", token, *path, *args]
        result = runner.invoke(client_main, full, input="", catch_exceptions=True)
        _failed_cleanly(result, full)


@pytest.fixture(scope="module")
def own_database(migrated_database_url: str) -> Iterator[str]:
    """A database of the operator's commands' own: one the generator happened
    to make valid (a tenant erased, a deployment sink) changes no other test's."""
    with database_of_its_own(migrated_database_url, "fuzzed_commands") as url:
        yield url


# `serve` runs until stopped; the others act on a database of their own.
SERVER_COMMANDS = [p for p in _leaves(server_cli.main, ()) if p != ("serve",)]


@pytest.mark.parametrize("path", SERVER_COMMANDS, ids=" ".join)
def test_server_commands_refuse_bad_arguments_with_a_message(
    path: tuple[str, ...], own_database: str, files: dict[str, Path]
) -> None:
    env = {
        "SEALTRAIL_DATABASE_URL": own_database,
        "SEALTRAIL_REDACTION_KEY": REDACTION_SECRET.hex(),
        "SEALTRAIL_SECRETS_KEY": SECRETS_KEY.hex(),
    }
    command = _command(server_cli.main, path)
    for args in arguments(command, path, files):
        result = _operator(env, [*path, *args])
        _failed_cleanly(result, [*path, *args])


def _operator(env: dict[str, str], args: list[str]) -> Result:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner().invoke(server_cli.main, args, env=env, catch_exceptions=True)
    finally:
        root.handlers[:], root.level = handlers, level  # as run_operator keeps them
