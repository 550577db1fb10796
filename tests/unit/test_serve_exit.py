"""`serve` ends even when a task outlives the stop: `asyncio.run` would cancel
such a task once at the end and wait for it without a limit (helper-191)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_PROGRAM = textwrap.dedent(
    """
    import asyncio, contextlib, logging
    from sealtrail_server.cli import _end_what_is_left

    async def {name}() -> None:
        while True:
            {body}

    async def main() -> None:
        asyncio.create_task({name}())
        await asyncio.sleep(0.1)
        await _end_what_is_left(within=0.5)

    logging.basicConfig()
    asyncio.run(main())
    print("exited normally")
    """
)


def _run(name: str, body: str) -> subprocess.CompletedProcess[str]:
    program = _PROGRAM.format(name=name, body=body)
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_task_that_swallows_its_cancellation_makes_the_process_exit_saying_where() -> None:
    ended = _run(
        "stubborn_worker",
        "with contextlib.suppress(asyncio.CancelledError): await asyncio.sleep(3600)",
    )
    assert ended.returncode == 1, ended.stderr
    assert "left running after the stop" in ended.stderr
    assert "stubborn_worker" in ended.stderr and "exited normally" not in ended.stdout


def test_tasks_that_end_when_cancelled_let_the_process_end_as_usual() -> None:
    ended = _run("idle_worker", "await asyncio.sleep(3600)")
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout == "exited normally\n"
