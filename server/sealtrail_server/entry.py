"""The `sealtrail-server` command as installed: the command line of cli.py,
whose modules (gRPC, psycopg, protobuf, OpenTelemetry) take seconds to import
on a busy machine. A Ctrl-C meanwhile ends it as click ends one later in the
start, `Aborted!` and status 1; it printed a KeyboardInterrupt traceback
through the imports (helper-311). Nothing heavy may be imported here."""

import sys
from typing import NoReturn


def main() -> NoReturn:
    try:
        from .cli import main as command_line
    except KeyboardInterrupt:
        print("\nAborted!", file=sys.stderr)  # click's words for a Ctrl-C
        raise SystemExit(1) from None
    command_line()
    raise SystemExit(0)  # not reached: click's main exits
