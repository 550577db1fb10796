"""Each of the command line's modules (`sealtrail._cli_*`) imports in a fresh
interpreter, first of the package's: a test or a program that needs one of
them (`_cli_spans`' duration types, `_cli_destination_options`, which the
server's sink commands share) works whether or not `sealtrail._cli` was
imported before it. And the main command it leaves has every command, as
the console script's does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sealtrail

# The modules, as the package holds them (a new one is checked as it lands).
_MODULES = sorted(path.stem for path in Path(sealtrail.__file__).parent.glob("_cli_*.py"))
# The main command's commands, as JSON on the last line, when `module` was
# imported first (then the command line, which it may not have imported).
_PROGRAM = (
    "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
    "print(json.dumps(sorted(importlib.import_module('sealtrail._cli').main.commands)))"
)


def _commands_after(module: str) -> list[str]:
    ended = subprocess.run(
        [sys.executable, "-c", _PROGRAM, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ended.returncode == 0, f"import {module} alone failed:\n{ended.stderr}"
    commands: list[str] = json.loads(ended.stdout.splitlines()[-1])
    return commands


def test_the_modules_are_found() -> None:
    assert {"_cli_spans", "_cli_sinks", "_cli_admin"} <= set(_MODULES), _MODULES


@pytest.mark.parametrize("module", _MODULES)
def test_a_command_line_module_imports_first(module: str) -> None:
    commands = _commands_after(f"sealtrail.{module}")
    assert commands == _commands_after("sealtrail._cli")
    assert {"query", "get", "tokens", "alerts", "sinks", "stats"} <= set(commands), commands
