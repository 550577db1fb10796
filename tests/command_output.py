"""What a command run by click's CliRunner said itself. CliRunner runs it in
the test's process, where other servers (the session's, a module's) serve in
threads of their own; the command's log handler, on the root logger, writes
their log lines into its output too: a checkpointer refusing to sign a tenant
an earlier test rewrote, a forwarder retrying a sink."""

from __future__ import annotations

import re
from typing import Final

# A log line as the text format writes it: time, level, logger.
LOG_LINE: Final = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def own_lines(output: str, *, loggers: tuple[str, ...] = ()) -> list[str]:
    """`output`'s lines but its log lines, except those of `loggers` (the
    command's own loggers a test reads)."""
    return [
        line
        for line in output.splitlines()
        if not LOG_LINE.match(line) or any(f" {name}: " in line for name in loggers)
    ]


def own_output(output: str, *, loggers: tuple[str, ...] = ()) -> str:
    """`own_lines`, each ended by a newline, as the command wrote them."""
    return "".join(f"{line}\n" for line in own_lines(output, loggers=loggers))
