"""A process running gRPC can fork children that live (ADR 0030): with gRPC's
fork support on, a child forked while gRPC's threads were busy died by SIGSEGV
in its fork handlers before running (the embedded PostgreSQL's pg_ctl, run as
its own user, in CI; 13-20% of forks in a reproduction). sealtrail_server turns
fork support off when imported, before grpc is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(__file__).parent.parent / "forks_beside_grpc.py"
_FORKS = 200  # with fork support on, 36-39 of them died in two runs


def test_children_forked_beside_busy_grpc_threads_run() -> None:
    # The environment as an operator's: the test process has the variable set
    # (conftest.py imports sealtrail_server first), and a child inheriting it
    # would prove nothing.
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    ran = subprocess.run(
        [sys.executable, str(_SCRIPT), str(_FORKS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert ran.stdout.strip() == "0", ran.stderr[-2000:]
