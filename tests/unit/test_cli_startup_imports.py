"""`sealtrail --help` and `sealtrail-server --help`, the main command's or a
subcommand's, import none of the heavy modules only the commands work with
(gRPC, protobuf, cryptography; the server's psycopg, OpenTelemetry's SDK and
joserfc, the gRPC server and the console with them): they took seconds to
import on a busy machine, before a line of help was printed. Each command
imports them as it runs; the options whose choices are a proto enum's names
hold them as fixed tuples (tests/unit/test_cli_choices.py keeps them equal).

Nor do they import rich (the client's tables, its export's progress) or the
OpenTelemetry API (the trace a traced job hands the client), nor does a
`sealtrail` command that needs neither (`verify` of a bundle, offline); nor
does `sealtrail-server --help` import redaction (its hundreds of compiled
patterns), the server's settings or the email package's header registry (an
email sink's addresses); nor does any, the `sink` commands' included, import
the client's command line, whose filter and destination options `sink create`
shares from modules of their own (helper-539: `sink --help` imported it all)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_bundle_text import FORGER, _forge
from tests.unit.test_client_exports import HEAVY

_ROOT = Path(__file__).resolve().parents[2]
# Past HEAVY, what each command line's start leaves to the commands that use it.
_CLIENT_LATER = (*HEAVY, "rich", "opentelemetry")
# email.headerregistry: an email sink's addresses, read as a sink is checked.
_SERVER_LATER = (
    *HEAVY,
    "rich",
    "sealtrail_server.domain.redaction",
    "sealtrail_server.config",
    "email.headerregistry",
)
# The client's command line (all its commands), whose filter and destination
# options `sink create|update` share from modules of their own: the `sink`
# commands' help imports none of it, and the other commands' not even the sink
# commands' module.
_CLIENT_COMMAND_LINE = ("sealtrail._cli", "sealtrail._cli_sinks")
_SINK_COMMANDS_LATER = (*_SERVER_LATER, *_CLIENT_COMMAND_LINE)
_OTHER_COMMANDS_LATER = (*_SINK_COMMANDS_LATER, "sealtrail_server.cli_sinks")

# The console script's entry point, called as its generated wrapper calls it;
# its exit status, what it printed and which of `later` it imported, as JSON
# on the last line.
_PROGRAM = textwrap.dedent(
    """
    import contextlib, importlib, io, json, sys

    module, _, function = {target!r}.partition(":")
    sys.argv = [{name!r}, *{arguments!r}]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            getattr(importlib.import_module(module), function)()
        except SystemExit as ended:
            status = ended.code
    loaded = sorted(name for name in {later!r} if name in sys.modules)
    print(json.dumps({{"status": status, "printed": printed.getvalue(), "loaded": loaded}}))
    """
)


def _entry_point(pyproject: Path, name: str) -> str:
    target: str = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["scripts"][name]
    return target


def _run(pyproject: str, name: str, arguments: list[str], later: tuple[str, ...]) -> Any:
    """What the command `name` of `pyproject` said, run with `arguments`."""
    target = _entry_point(_ROOT / pyproject, name)
    program = _PROGRAM.format(target=target, name=name, arguments=arguments, later=later)
    ended = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert ended.returncode == 0, ended.stderr
    return json.loads(ended.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("pyproject", "name", "arguments", "later"),
    [
        *(
            ("pyproject.toml", "sealtrail-server", arguments, _OTHER_COMMANDS_LATER)
            for arguments in (
                [],
                ["serve"],
                ["token", "create"],
                ["key", "restored"],
                ["tenant", "list"],
            )
        ),
        *(
            ("pyproject.toml", "sealtrail-server", arguments, _SINK_COMMANDS_LATER)
            for arguments in (["sink"], ["sink", "create"], ["sink", "update"], ["sink", "list"])
        ),
        *(
            ("clients/python/pyproject.toml", "sealtrail", arguments, _CLIENT_LATER)
            for arguments in (
                [],
                ["query"],
                ["tail"],
                ["record"],
                ["stats"],
                ["report"],
                ["export"],
                ["bundle"],
                ["import"],
                ["alerts", "create"],
                ["sinks", "create"],
                ["tokens", "create"],
                ["retention", "set"],
                ["verify-log"],
            )
        ),
    ],
)
def test_help_imports_none_of_the_heavy_modules(
    pyproject: str, name: str, arguments: list[str], later: tuple[str, ...]
) -> None:
    said = _run(pyproject, name, [*arguments, "--help"], later)
    assert said["status"] == 0 and said["printed"].startswith("Usage: "), said
    assert said["loaded"] == [], f"{name} {' '.join(arguments)} --help imported {said['loaded']}"


def test_a_command_that_prints_no_table_imports_neither_rich_nor_opentelemetry(
    tmp_path: Path,
) -> None:
    """`sealtrail verify` of a bundle, offline against the key given: no
    table, no call to a server to carry a trace to."""
    bundle = _forge(tmp_path / "bundle", "sealtrail.local/log/acme")
    arguments = ["verify", str(bundle), "--key", FORGER.verifier.text()]
    said = _run("clients/python/pyproject.toml", "sealtrail", arguments, ("rich", "opentelemetry"))
    assert said["status"] == 0 and said["printed"].startswith("OK: 1 record (seq 1..1)"), said
    assert said["loaded"] == [], f"sealtrail verify imported {said['loaded']}"
