"""`make test` (and CI) checks the committed generated code with
`scripts/gen_protos.py --check`, which generates into a temporary directory:
it says whether the code matches, and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_code_check_prints_its_verdict_alone() -> None:
    """It printed `Writing mypy to sealtrail/v1/access_pb2.pyi` and 15 lines
    like it, mypy-protobuf's, among `make test`'s first lines: a check that
    seemed to rewrite the committed stubs (helper-311)."""
    checked = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check", "clients/python/src"],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (
        0,
        "generated code matches proto/\n",
        "",
    )
