"""`sealtrail-server` runs on POSIX systems only: it locks the signed
checkpoints' files with `fcntl.flock` (integrity/signed_sizes.py), which
Windows' Python has not. Started there, it failed with an ImportError
traceback through its imports; it says so in one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]

# The console script's entry point, called as its generated wrapper calls it,
# in a Python without fcntl (as Windows' is).
_PROGRAM = textwrap.dedent(
    """
    import importlib, sys

    sys.modules["fcntl"] = None  # import fcntl: ModuleNotFoundError, as on Windows
    module, _, function = {target!r}.partition(":")
    sys.argv = ["sealtrail-server", *{arguments!r}]
    sys.exit(getattr(importlib.import_module(module), function)())
    """
)


@pytest.mark.parametrize("arguments", [["serve"], ["tenant", "list"]])
def test_the_server_without_fcntl_says_it_runs_on_posix_only(arguments: list[str]) -> None:
    project = tomllib.loads((_ROOT / "pyproject.toml").read_text())
    target = project["project"]["scripts"]["sealtrail-server"]
    ended = subprocess.run(
        [sys.executable, "-c", _PROGRAM.format(target=target, arguments=arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in ended.stderr, ended.stderr
    said = ended.stderr.strip()
    assert ended.returncode == 1 and len(said.splitlines()) == 1, said
    assert "POSIX" in said and "fcntl" in said, said
