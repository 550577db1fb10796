"""Ctrl-C in the first seconds of `sealtrail-server` (or `make run`), while its
modules are still being imported (seconds on a busy machine), stops it as a
Ctrl-C a moment later does, without a traceback: `stopped by SIGINT` and 130.

The commands run on a data directory of the test's own, none of the caller's
SEALTRAIL_ settings in their environment: were the signal ever lost, the
command would go on against that directory, never the default one (a
developer's own log, `make run`'s) nor a database named by the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]

# The console script's entry point, called as its generated wrapper calls it,
# with a SIGINT sent as the import of psycopg (one of the server's first
# heavy imports) begins: the moment is the same at every run. What the
# command was given to work on then, as JSON in {given!r}.
_PROGRAM = textwrap.dedent(
    """
    import click, importlib, json, os, signal, sys

    class InterruptAtPsycopg:
        def find_spec(self, name, path=None, target=None):
            if name == "psycopg":
                sys.meta_path.remove(self)
                running = click.get_current_context(silent=True)
                params = running.params if running is not None else {{}}
                given = {{
                    "data_dir": str(params.get("data_dir")),
                    "database_url": params.get("database_url"),
                    "environment": sorted(k for k in os.environ if k.startswith("SEALTRAIL_")),
                }}
                with open({given!r}, "w") as out:
                    json.dump(given, out)
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, InterruptAtPsycopg())
    module, _, function = {target!r}.partition(":")
    sys.argv = ["sealtrail-server", *{arguments!r}]
    sys.exit(getattr(importlib.import_module(module), function)())
    """
)


def _entry_point(name: str) -> str:
    project = tomllib.loads((_ROOT / "pyproject.toml").read_text())
    target: str = project["project"]["scripts"][name]
    return target


@pytest.mark.parametrize(
    ("arguments", "status", "said"),
    [
        (["serve"], 130, "stopped by SIGINT"),
        (["-v", "serve", "--listen", "127.0.0.1:0"], 130, "stopped by SIGINT"),
        (["tenant", "list"], 130, "stopped by SIGINT"),
    ],
)
def test_ctrl_c_while_the_server_imports_its_modules_aborts_without_a_traceback(
    arguments: list[str], status: int, said: str, tmp_path: Path
) -> None:
    data_dir, given = tmp_path / "data", tmp_path / "given.json"
    program = _PROGRAM.format(
        target=_entry_point("sealtrail-server"),
        arguments=[*arguments, "--data-dir", str(data_dir)],
        given=str(given),
    )
    ended = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            name: value for name, value in os.environ.items() if not name.startswith("SEALTRAIL_")
        },
    )
    assert "Traceback" not in ended.stderr, ended.stderr
    assert (ended.returncode, ended.stderr.strip()) == (status, said)
    # Interrupted on its way to the test's own directory, and to no other database.
    assert json.loads(given.read_text()) == {
        "data_dir": str(data_dir),
        "database_url": None,
        "environment": [],
    }
