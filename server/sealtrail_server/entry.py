"""The `sealtrail-server` command as installed: the command line of cli.py,
whose modules (gRPC, psycopg, protobuf, OpenTelemetry) take seconds to import
on a busy machine. A Ctrl-C meanwhile ends it as the command would end on one
a moment later: `stopped by SIGINT` and 130 (cli.py `_Commands`), `serve`
included. It printed a KeyboardInterrupt traceback through the imports
(helper-311). Nothing heavy may be imported here.

The server runs on POSIX systems only (it locks files with `fcntl`, takes
signals on its event loop): on another (Windows), it says so in a line, not
with an ImportError's traceback."""

import sys
from typing import NoReturn


def main() -> NoReturn:
    try:
        import fcntl  # noqa: F401  (cli.py's commands import what uses it as they run)

        from .cli import main as command_line
    except KeyboardInterrupt:
        print("\nstopped by SIGINT", file=sys.stderr)
        raise SystemExit(130) from None
    except ModuleNotFoundError as missing:
        if missing.name != "fcntl":
            raise
        print(
            "sealtrail-server runs on POSIX systems (Linux) only: this Python has no"
            " fcntl module (the `sealtrail` client and its command line run anywhere)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    command_line()
    raise SystemExit(0)  # not reached: click's main exits
