"""What `sealtrail` prints, run as a user runs it (a process of its own,
against a real server): how much of a large answer it holds at once, and
what it takes as a time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sealtrail import AuditClient, build_event
from tests.conftest import ServerThread

# The CLI in a process of its own.
_CLI = "import sys; from sealtrail._cli import main; main(sys.argv[1:], prog_name='sealtrail')"

# The CLI in a process of its own, saying on stderr, last, the most memory
# Python objects took at once while it ran.
_MEASURED_CLI = """
import sys, tracemalloc

tracemalloc.start()
from sealtrail._cli import main

try:
    main(sys.argv[1:], prog_name="sealtrail")
finally:
    sys.stderr.write(f"peak {tracemalloc.get_traced_memory()[1]}\\n")
"""


def _record(server: ServerThread, token: str, count: int) -> None:
    with AuditClient(server.target, token=token) as client:
        for start in range(0, count, 1000):
            client.record_batch(
                [
                    build_event(action="doc.edit", actor_id=f"user-{n}", resource_type="doc")
                    for n in range(start, min(start + 1000, count))
                ]
            )


def _table_peak(server: ServerThread, token: str, out: Path) -> tuple[int, str]:
    """`sealtrail query --limit 0` (every match, as a table) into `out`: the
    peak of the memory it took, and what it printed."""
    env = {**os.environ, "SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token}
    env.pop("PYTHONUNBUFFERED", None)
    with out.open("w", encoding="utf-8") as stdout:
        done = subprocess.run(
            [sys.executable, "-c", _MEASURED_CLI, "query", "--limit", "0", "--action", "doc.*"],
            env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=100,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    peak = re.fullmatch(r"(?s).*peak (\d+)\n", done.stderr)
    assert peak is not None, done.stderr
    return int(peak[1]), out.read_text(encoding="utf-8")


def test_a_table_of_every_match_is_printed_as_it_comes_in_bounded_memory(
    server: ServerThread, tmp_path: Path
) -> None:
    """`sealtrail query --limit 0` in a table (the default format) held every
    event, and rich's rendering of each, until the last came: nothing was
    printed before the end, and memory grew with the answer (about 9 KB an
    event: 470 MB for 50,000, at a rate of under 1,400 events a second). It
    prints a table of at most 1,000 rows at a time now, each as it fills."""
    small, large = (f"t-{uuid.uuid4().hex[:12]}" for _ in range(2))
    _record(server, server.token(small), 400)
    _record(server, server.token(large), 2400)

    small_peak, small_text = _table_peak(server, server.token(small), tmp_path / "small")
    large_peak, large_text = _table_peak(server, server.token(large), tmp_path / "large")

    # Every event printed once, newest first, whatever the tables' number.
    seqs = [int(found) for found in re.findall(r"│ (\d+) +│ doc\.edit", large_text)]
    assert len(seqs) == 2400 and seqs == sorted(set(seqs), reverse=True)
    assert len(re.findall(r"│ (\d+) +│ doc\.edit", small_text)) == 400
    # Six times the events, not six times the memory.
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)


def test_an_export_that_cannot_be_written_names_the_file_asked_for(
    server: ServerThread, tenant: str
) -> None:
    """`sealtrail export -o /proc/audit.csv` said "cannot write
    /proc/.audit.csv.82fa81d24428: ...": the hidden temporary file it writes
    first, a name the user never gave and cannot find. It names the file
    asked for, with the reason."""
    env = {**os.environ, "SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    # /proc takes no file of ours, even root's (as CI runs).
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "export", "-o", "/proc/audit.csv"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr == "Error: cannot write /proc/audit.csv: No such file or directory\n"


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_output_that_cannot_be_written_is_one_line_on_stderr_and_a_failure(
    server: ServerThread, tenant: str, buffered: bool
) -> None:
    """`sealtrail query > /dev/full` (a full disk: ENOSPC; EIO alike) ended in
    a traceback from click.echo, or rich's, and Python's own "Exception
    ignored" as it flushed stdout on the way out (exit 120). Each command
    says in one line on stderr that it cannot write its output, why, and
    fails, stopping its call: `tail` too, which otherwise streams on."""
    token = server.token(tenant)
    with AuditClient(server.target, token=token) as client:
        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(5)])
    env = {**os.environ, "SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token}
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    commands = [
        ["query"],
        ["query", "--format", "jsonl"],
        ["tail", "--from-seq", "0"],
        ["record", "--action", "doc.view", "--actor-id", "u"],
        ["tokens"],
    ]
    ended = []
    with open("/dev/full", "w", encoding="utf-8") as full:
        for command in commands:
            done = subprocess.run(
                [sys.executable, "-c", _CLI, *command],
                env=env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
            )  # fmt: skip
            ended.append((command, done.returncode, done.stderr))
    said = "sealtrail: cannot write the output: No space left on device\n"
    assert ended == [(command, 1, said) for command in commands]
