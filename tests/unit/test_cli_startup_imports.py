"""`sealtrail --help` and `sealtrail-server --help`, the main command's or a
subcommand's, import none of the heavy modules only the commands work with
(gRPC, protobuf, cryptography; the server's psycopg, OpenTelemetry's SDK and
joserfc, the gRPC server and the console with them): they took seconds to
import on a busy machine, before a line of help was printed. Each command
imports them as it runs; the options whose choices are a proto enum's names
hold them as fixed tuples (tests/unit/test_cli_choices.py keeps them equal)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tests.unit.test_client_exports import HEAVY

_ROOT = Path(__file__).resolve().parents[2]

# The console script's entry point, called as its generated wrapper calls it;
# what it printed and which of HEAVY it imported, as JSON on the last line.
_PROGRAM = textwrap.dedent(
    """
    import contextlib, importlib, io, json, sys

    module, _, function = {target!r}.partition(":")
    sys.argv = [{name!r}, *{arguments!r}, "--help"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            getattr(importlib.import_module(module), function)()
        except SystemExit as ended:
            status = ended.code
    loaded = sorted(name for name in {heavy!r} if name in sys.modules)
    print(json.dumps({{"status": status, "help": printed.getvalue(), "loaded": loaded}}))
    """
)


def _entry_point(pyproject: Path, name: str) -> str:
    target: str = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["scripts"][name]
    return target


@pytest.mark.parametrize(
    ("pyproject", "name", "arguments"),
    [
        *(
            ("pyproject.toml", "sealtrail-server", arguments)
            for arguments in (
                [],
                ["serve"],
                ["token", "create"],
                ["key", "restored"],
                ["tenant", "list"],
                ["sink"],
                ["sink", "create"],
                ["sink", "update"],
            )
        ),
        *(
            ("clients/python/pyproject.toml", "sealtrail", arguments)
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
    pyproject: str, name: str, arguments: list[str]
) -> None:
    target = _entry_point(_ROOT / pyproject, name)
    program = _PROGRAM.format(target=target, name=name, arguments=arguments, heavy=HEAVY)
    ended = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert ended.returncode == 0, ended.stderr
    said = json.loads(ended.stdout.splitlines()[-1])
    assert said["status"] == 0 and said["help"].startswith("Usage: "), said
    assert said["loaded"] == [], f"{name} {' '.join(arguments)} --help imported {said['loaded']}"
