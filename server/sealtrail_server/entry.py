"""The `sealtrail-server` command as installed: the command line of cli.py,
whose modules (gRPC, psycopg, protobuf, OpenTelemetry) take seconds to import
on a busy machine. A Ctrl-C meanwhile ends it as the command would end on one
a moment later: `serve` as click ends a start, `Aborted!` and status 1; an
operator's command `stopped by SIGINT` and 130 (cli.py `_Commands`). It
printed a KeyboardInterrupt traceback through the imports (helper-311).
Nothing heavy may be imported here."""

import sys
from typing import NoReturn


def main() -> NoReturn:
    try:
        from .cli import main as command_line
    except KeyboardInterrupt:
        if _command(sys.argv[1:]) == "serve":
            print("\nAborted!", file=sys.stderr)  # click's words for a Ctrl-C
            raise SystemExit(1) from None
        print("\nstopped by SIGINT", file=sys.stderr)
        raise SystemExit(130) from None
    command_line()
    raise SystemExit(0)  # not reached: click's main exits


def _command(arguments: list[str]) -> str | None:
    """The command `arguments` name: the first that is no option (the main
    command's options, `-v`, take no value)."""
    return next((argument for argument in arguments if not argument.startswith("-")), None)
