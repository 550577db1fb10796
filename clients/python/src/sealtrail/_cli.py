"""The `sealtrail` command line: record, query, export and tail audit events,
and the helpers its other commands share (each group of them a _cli_* module,
registered at the end of this one)."""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import itertools
import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, cast

import click
from click.core import ParameterSource

from sealtrail._choices import (
    ACTOR_TYPES,
    CATEGORIES,
    MAX_SEQ,
    OUTCOMES,
    REPEATED_FILTER_FIELDS,
    SEVERITIES,
)
from sealtrail._cli_filter_options import (
    _choice,
    _filter_options,
    _tail_filter_options,
    _Time,
)
from sealtrail._cli_filter_options import parse_time as parse_time  # as it was, for its callers
from sealtrail._cli_ranges import (
    SeqRangeParam,
    beyond_the_log,
    moment,
    received_options,
    received_period,
    received_seqs,
)
from sealtrail._terminal import terminal_safe as terminal_safe  # theirs too (_cli_*)
from sealtrail._typed import given_words
from sealtrail._words import counted, detailed

# What the commands work with (gRPC, protobuf, the client; rich, which draws
# the tables; OpenTelemetry, which carries the environment's trace) each
# imports as it runs: --help imports none of it, nor does a command that
# needs none of it (tests/unit/test_cli_startup_imports.py).
if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from sealtrail._bundle import SeqRange
    from sealtrail._client import AuditClient
    from sealtrail._convert import (
        Order,
    )
    from sealtrail._errors import SealtrailError
    from sealtrail._export import (
        ExportFormat,
    )
    from sealtrail._export_check import ExportMismatchError
    from sealtrail._tables import PlainTable
    from sealtrail.v1 import audit_service_pb2, event_pb2

# Errors the caller can fix by changing the command, as opposed to failures of the service.
# By their names (grpc.StatusCode's), so that --help imports no gRPC.
_USAGE_CODES: Final = frozenset(
    {"INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED", "PERMISSION_DENIED"}
)


class _JsonObject(click.ParamType[dict[str, Any]]):
    name = "JSON"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"not valid JSON: {exc}", param, ctx)
        except RecursionError:
            self.fail("nested too deep", param, ctx)
        if not isinstance(parsed, dict):
            self.fail("must be a JSON object", param, ctx)
        return parsed


class _JsonValue(click.ParamType[Any]):
    """Any JSON value (null included); numbers as JSON has them (no NaN)."""

    name = "JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value, parse_constant=_not_a_number)
        except ValueError as exc:
            self.fail(f"{value!r} is not JSON ({exc}); as text: {json.dumps(value)}", param, ctx)
        except RecursionError:
            self.fail("nested too deep", param, ctx)


def _not_a_number(constant: str) -> Any:
    raise ValueError(f"{constant} is no JSON number")


def on_this_machine(target: str) -> bool:
    """Whether the gRPC target `target` (HOST:PORT, [V6]:PORT, unix:PATH) is
    reached without leaving this machine."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    host = target.rsplit(":", 1)[0] if target.count(":") == 1 or "]" in target else target
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _has_port(target: str) -> bool:
    """Whether the gRPC target `target` names its port, or needs none (a
    scheme's: unix:PATH, dns:///HOST:PORT)."""
    if re.match(r"(unix|unix-abstract|dns|ipv4|ipv6|vsock):", target):
        return True
    if target.startswith("["):  # [V6]:PORT
        return "]:" in target
    return ":" in target  # a bare IPv6 address is left to gRPC


class _PemFile(click.Path):
    """A PEM file of TLS's (roots, a client certificate or key). One that is
    not (DER, another file given in its place) gRPC reads only as it
    connects: it logged errors of its own and the call failed UNAVAILABLE,
    "failed to connect to all addresses", as if the server were down."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        name = os.fsdecode(path)
        try:
            pem = Path(name).read_bytes()
        except OSError as error:
            self.fail(f"cannot read {name}: {error.strerror or error}", param, ctx)
        if b"-----BEGIN " not in pem:
            self.fail(f"{name} is not PEM (it has no -----BEGIN line)", param, ctx)
        return path


@dataclass(frozen=True)
class _Settings:
    server: str
    token: str | None = field(repr=False)  # never in a traceback or a log
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # a token may go in plain text to another machine
    on_behalf_of: str | None = None

    def connection(self) -> dict[str, Any]:
        """AuditClient's TLS options, and the person its calls are made for."""

        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        options: dict[str, Any] = {
            "tls": self.tls,
            "root_certificates": read(self.ca_file),
            "client_certificate": read(self.cert_file),
            "client_key": read(self.key_file),
        }
        if self.on_behalf_of is not None:
            options["on_behalf_of"] = self.on_behalf_of
        return options


class _Option(click.Option):
    """An option that may be set in the environment (every option with an
    envvar is one): a bad value from there is refused naming the variable
    too, `'--ca-file' (from SEALTRAIL_TLS_CA_FILE)`, where it named the
    option alone, which the command line did not have."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        hint = super().get_error_hint(ctx)
        variable = from_the_environment(ctx, self) if ctx is not None else None
        return f"{hint} (from {variable})" if variable else hint


def from_the_environment(ctx: click.Context, param: click.Parameter) -> str | None:
    """The environment variable `param`'s value came from, if it did."""
    if param.name is None:
        return None
    if ctx.get_parameter_source(param.name) is not ParameterSource.ENVIRONMENT:
        return None
    variables = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
    return next((name for name in variables if os.environ.get(name)), None)


def _named(ctx: click.Context, name: str) -> str:
    """Option `name` as said in an error: its flag, and the variable its
    value came from, if it did."""
    param = next(param for param in ctx.command.params if param.name == name)
    flag = param.opts[0]
    variable = from_the_environment(ctx, param)
    return f"{flag} (from {variable})" if variable else flag


class _Commands(click.Group):
    """The main command, which ends a command Ctrl-C or Stopped ends that said
    nothing of it (query, verify, ...), or a question it asked (click's Abort
    of a Ctrl-C at a prompt), as those that do (export, bundle, tail): exit
    130, or 128 and the signal's number, in a line; not click's "Aborted!"
    and 1, the status of any failure. A question declined (no, or the end of
    its input) is click's still. And one whose output cannot be written (a
    full disk, an I/O error) in a line, not a traceback (a closed pipe,
    EPIPE, click ends as `head` expects)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as interrupt:
            _stopped(ctx, interrupt)
        except click.Abort as abort:
            if not isinstance(abort.__context__, KeyboardInterrupt):
                raise
            _stopped(ctx, abort.__context__)
        except OSError as error:
            if error.errno == errno.EPIPE or not _writing_the_output(error):
                raise
            # Out of the command, its call ended (the client closed): nothing
            # more is asked of the server for output that would go nowhere.
            with contextlib.suppress(OSError):  # stderr, as full: the exit status says it
                click.echo(
                    f"sealtrail: cannot write the output: {error.strerror or error}", err=True
                )
            _drop_the_output()
            ctx.exit(1)


def _stopped(ctx: click.Context, interrupt: KeyboardInterrupt) -> None:
    """Ends the command `interrupt` ended, in a line, as a shell reports it."""
    if not isinstance(interrupt, Stopped) and sys.stderr.isatty():
        click.echo(err=True)  # past the terminal's ^C
    name = str(interrupt) if isinstance(interrupt, Stopped) else "SIGINT"
    click.echo(f"stopped by {name}", err=True)
    ctx.exit(interrupted_status(interrupt))


# The modules that write a command's output: click.echo's and rich's (tables).
_OUTPUT_WRITERS: Final = ("click.utils", "rich.console")


def _writing_the_output(error: OSError) -> bool:
    """Whether `error` came from writing a command's output, not from a file
    the command read or wrote (which names it, and which the command says)."""
    if error.filename is not None or error.__traceback__ is None:
        return False
    last = error.__traceback__
    while last.tb_next is not None:
        last = last.tb_next
    return last.tb_frame.f_globals.get("__name__") in _OUTPUT_WRITERS


def _drop_the_output() -> None:
    """What stdout still holds, which it could not write, goes to /dev/null:
    flushed on the way out, it failed again, Python saying so with a
    traceback of its own ("Exception ignored ...") and exit status 120. As
    Python's documentation has it for a broken pipe; nothing where stdout is
    no file (click's CliRunner)."""
    with contextlib.suppress(OSError, ValueError):
        fileno = sys.stdout.fileno()
        nowhere = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(nowhere, fileno)
        finally:
            os.close(nowhere)


@click.group(cls=_Commands)
@click.option(
    "--server",
    cls=_Option,
    envvar="SEALTRAIL_SERVER",
    default="127.0.0.1:50051",
    show_default=True,
    metavar="HOST:PORT",
    help="Address of the Sealtrail service (or SEALTRAIL_SERVER); a lone HOST only with"
    " --tls, on port 443.",
)
@click.option(
    "--token", cls=_Option, envvar="SEALTRAIL_TOKEN", help="API token (or SEALTRAIL_TOKEN)."
)
@click.option("--tls", cls=_Option, is_flag=True, envvar="SEALTRAIL_TLS", help="Connect over TLS.")
@click.option(
    "--ca-file",
    cls=_Option,
    envvar="SEALTRAIL_TLS_CA_FILE",
    type=_PemFile(),
    help="PEM roots to verify the server with (implies --tls).",
)
@click.option(
    "--cert-file",
    cls=_Option,
    # Not SEALTRAIL_TLS_CERT_FILE: that is the server's own certificate, which
    # a shell set up for the server would present as this client's.
    envvar="SEALTRAIL_CLIENT_CERT_FILE",
    type=_PemFile(),
    help="PEM client certificate, for mutual TLS (with --key-file).",
)
@click.option(
    "--key-file",
    cls=_Option,
    envvar="SEALTRAIL_CLIENT_KEY_FILE",
    type=_PemFile(),
    help="PEM client key, for mutual TLS (with --cert-file).",
)
@click.option(
    "--insecure",
    cls=_Option,
    is_flag=True,
    envvar="SEALTRAIL_INSECURE",
    help="Send the token without TLS to a server that is not on this machine.",
)
@click.option(
    "--on-behalf-of",
    cls=_Option,
    envvar="SEALTRAIL_ON_BEHALF_OF",
    metavar="PERSON",
    help="The person the calls are made for (their id), recorded in Sealtrail's records of"
    " them as your word (details.on_behalf_of); the token stays their actor.",
)
@click.pass_context
def main(
    ctx: click.Context,
    server: str,
    token: str | None,
    tls: bool,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    insecure: bool,
    on_behalf_of: str | None,
) -> None:
    """Record and query Sealtrail audit events."""
    if (cert_file is None) != (key_file is None):
        raise click.UsageError(
            f"{_named(ctx, 'cert_file')} and {_named(ctx, 'key_file')} go together.", ctx
        )
    ctx.obj = _Settings(server, token, tls, ca_file, cert_file, key_file, insecure, on_behalf_of)
    _stop_as_ctrl_c_does(ctx)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised as a Ctrl-C is: what a command removes when
    interrupted (an export's temporary file, a bundle's files) it removes
    then too. `status`: 128 and the signal's number, as a shell reports it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.status = 128 + signum


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


class _LinesWrittenWhole:
    """Inside it, a signal that would interrupt the command (Ctrl-C, or one
    `_stop_as_ctrl_c_does` takes) while `writing()` is held until the block
    ends: an interrupted tail's "after seq N" is the last line it wrote and
    counted, never one before it (a Ctrl-C landing between a line's write and
    its count named the seq before the line just printed: resumed, it
    printed that line twice). A second signal meanwhile (a write blocked on a
    full pipe whose reader has stopped reading) raises at once."""

    def __init__(self) -> None:
        self._writing = False
        self._held: KeyboardInterrupt | None = None
        self._handlers: dict[int, Any] = {}

    def __enter__(self) -> _LinesWrittenWhole:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
                handler = None if signum is None else signal.getsignal(signum)
                if signum is not None and handler in (signal.default_int_handler, _stop):
                    self._handlers[signum] = handler
                    signal.signal(signum, self._take)
        return self

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)

    def _take(self, signum: int, frame: object) -> None:
        interrupt = KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)
        if not self._writing or self._held is not None:
            raise interrupt
        self._held = interrupt

    @contextmanager
    def writing(self) -> Iterator[None]:
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if (held := self._held) is not None:
            raise held


def _stop_as_ctrl_c_does(ctx: click.Context) -> None:
    """SIGTERM (`timeout`, `kill`, a CI job or service stopped) and SIGHUP (the
    terminal closed) raise Stopped in this command, until it ends. Their
    default ended the process where it was: an export's hidden temporary
    file was left as large as it had grown, a bundle's directory half
    written. A signal handled or ignored already (`nohup`) is left so, as is
    a thread other than the main one, which cannot take a handler. Windows
    has no SIGHUP: there SIGTERM alone is taken."""
    if threading.current_thread() is not threading.main_thread():
        return
    taken = [signal.SIGTERM]
    if (hangup := getattr(signal, "SIGHUP", None)) is not None:
        taken.append(hangup)
    for signum in taken:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _stop)
            ctx.call_on_close(functools.partial(signal.signal, signum, signal.SIG_DFL))


def interrupted_status(interrupt: KeyboardInterrupt) -> int:
    """The exit status of a command `interrupt` ended: 130 for a Ctrl-C, as a
    shell reports a command it ended; 128 and the signal's number for another."""
    return interrupt.status if isinstance(interrupt, Stopped) else 130


def _seconds(seconds: float) -> str:
    """A retry delay as said: to the tenth of a second above, never 0."""
    return f"{max(math.ceil(seconds * 10) / 10, 0.1):g}"


def _cannot_write(out: Path, error: OSError) -> str:
    """Why `out` cannot be written, naming the file that could not (a bundle's,
    in its directory); `out` itself for the hidden temporary files beside it
    an export writes first (`.NAME.` and 12 hex digits), which the user never
    named and cannot find."""
    named = error.filename
    if named is None or os.fsdecode(Path(named).name).startswith(f".{out.name}."):
        named = out
    return f"cannot write {os.fsdecode(named)}: {error.strerror or error}"


def _what_to_do(ctx: click.Context, exc: SealtrailError) -> str | None:
    """What to do about a failure whose words alone say nothing of it, said
    in the options' terms: gRPC's own UNAVAILABLE for a connection refused
    (no server listens at the address; a server's UNAVAILABLE names its
    reason), a token the server does not take (reason UNAUTHENTICATED:
    made up, mistyped, cut short, revoked; an expired one says its own), and
    a token whose role may not call the RPC (the `roles` that may, in the
    refusal's metadata): how a token of one is had."""
    import grpc

    settings: _Settings = ctx.obj
    if (
        exc.code == grpc.StatusCode.UNAVAILABLE
        and not exc.reason
        and "connection refused" in exc.message.lower()
    ):
        return (
            f"no server answers at {settings.server}: start one (make run), or name the"
            " address it listens on with --server (SEALTRAIL_SERVER)"
        )
    if exc.code == grpc.StatusCode.UNAUTHENTICATED and exc.reason == "UNAUTHENTICATED":
        token = _named(ctx.find_root(), "token")
        return (
            f"{token} is no token this server takes: copy it whole, or have an"
            " admin make one (`sealtrail-server token create --tenant TENANT --role ROLE`, or"
            " `sealtrail tokens create --role ROLE` with an admin token of the tenant)"
        )
    if exc.code == grpc.StatusCode.PERMISSION_DENIED and (roles := exc.metadata.get("roles")):
        # The server names the roles that may call, least privileged first.
        needed = roles.split(",")[0]
        return (
            f"have an admin of the tenant make a token of role {needed}"
            f" (`sealtrail tokens create --role {needed}`, or"
            f" `sealtrail-server token create --tenant TENANT --role {needed}`)"
        )
    return None


def _dev_token_file() -> str:
    """Where `make run` saves its development admin token, as the server
    finds its data dir (SEALTRAIL_DATA_DIR with `~` expanded, else
    XDG_DATA_HOME's or ~/.local/share's `sealtrail`), quoted for a shell:
    quoted, a `~` left in would be read by no shell."""
    import shlex

    if given := os.environ.get("SEALTRAIL_DATA_DIR"):
        data_dir = os.path.expanduser(given)
    else:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        data_dir = os.path.join(base, "sealtrail")
    return shlex.quote(os.path.join(data_dir, "dev-admin-token"))


def _no_token() -> str:
    """Where a token comes from, said beside its absence: a new user had only
    `Missing option '--token'`, not the token `make run` saved."""
    saved = _dev_token_file()
    return (
        f"`make run` saves an admin token of tenant dev in {saved}: export"
        f" SEALTRAIL_TOKEN=$(cat {saved}). Else have an admin make one"
        " (`sealtrail-server token create --tenant TENANT --role ROLE`, or"
        " `sealtrail tokens create --role ROLE` with an admin token of the tenant)."
    )


@contextmanager
def _client(ctx: click.Context) -> Iterator[AuditClient]:
    from sealtrail._client import AuditClient
    from sealtrail._convert import token_fits_a_header
    from sealtrail._correlation import checked_person
    from sealtrail._errors import SealtrailError

    settings: _Settings = ctx.obj
    if not settings.token:
        raise click.UsageError(
            f"Missing option '--token' (or SEALTRAIL_TOKEN).\n{_no_token()}", ctx
        )
    if not token_fits_a_header(settings.token):  # not repeated: a secret
        raise click.UsageError(
            "--token (SEALTRAIL_TOKEN) is not a token: it holds a character no header can"
            " carry (a line break, a control character, a letter outside ASCII)",
            ctx,
        )
    if settings.on_behalf_of is not None:
        try:
            checked_person(settings.on_behalf_of)
        except ValueError as bad:
            why = str(bad).removeprefix("on_behalf_of ")
            flag = _named(ctx.find_root(), "on_behalf_of")
            raise click.UsageError(f"{flag} {why}", ctx) from None
    # A client certificate means TLS, as it does to AuditClient.
    plain = not (settings.tls or settings.ca_file or settings.cert_file)
    if plain and not _has_port(settings.server):
        # gRPC dials a lone host on 443, TLS's port (helper-196).
        raise click.UsageError(
            f"--server {settings.server} (SEALTRAIL_SERVER) has no port: give HOST:PORT"
            " (the server listens on 50051 unless told otherwise)",
            ctx,
        )
    if plain and not settings.insecure and not on_this_machine(settings.server):
        raise click.UsageError(
            f"{settings.server} is not this machine: the token would cross the network in plain"
            " text. Use --tls (or --ca-file), or --insecure to send it anyway.",
            ctx,
        )
    try:
        with (
            _traced_by_the_environment(),
            AuditClient(settings.server, token=settings.token, **settings.connection()) as client,
        ):
            yield client
    except SealtrailError as exc:
        # The server's words, every one of them escaped: as sent, they were
        # terminal codes wherever they held them (helper-334).
        reason = f" ({exc.reason})" if exc.reason and exc.reason != exc.code.name else ""
        fields = [field for field, _ in exc.field_violations]
        # The server's message of a refusal sums up its fields, each said
        # below by its option (and the value given): not twice over.
        summed = _sums_up(exc.message, exc.field_violations)
        message = "" if summed else in_flags(ctx, exc.message, fields)
        said = [detailed(f"error: {exc.code.name}{reason}", message)]
        hints: dict[str, str] = ctx.meta.get(_HINTED, {})
        for field, description in exc.field_violations:
            hint = f": {hints[field]}" if field in hints else ""
            said.append(f"  {flag_of(ctx, field) or field}: {in_flags(ctx, description)}{hint}")
        said += [f"  {key}: {value}" for key, value in sorted(exc.metadata.items())]
        if exc.retry_after is not None:  # when the server asks to be tried again
            said.append(f"  retry after: {_seconds(exc.retry_after)} s")
        if to_do := _what_to_do(ctx, exc):  # where the words alone say nothing to do
            said.append(f"  {to_do}")
        if exc.request_id:  # what the server's logs and spans know the call by
            said.append(f"  request id: {exc.request_id}")
        for line in said:
            click.echo(terminal_safe(line), err=True)
        ctx.exit(2 if exc.code.name in _USAGE_CODES else 1)


# How the server's InvalidArgument sums up its field violations: "invalid
# request: FIELD: DESCRIPTION; FIELD: ...", those past its length left out
# and counted ("; and 2 more").
_SUMMARY_HEAD: Final = "invalid request: "
_SUMMARY_MORE: Final = re.compile(r"; and \d+ more")


def _sums_up(message: str, violations: Iterable[tuple[str, str]]) -> bool:
    """Whether `message` says nothing but `violations`, in the words the
    server sums them up with: the lines naming each field say it all."""
    said = [f"{field}: {description}" for field, description in violations]
    if not said or not message.startswith(_SUMMARY_HEAD):
        return False
    rest = message.removeprefix(_SUMMARY_HEAD)
    for told in range(len(said), 0, -1):
        summary = "; ".join(said[:told])
        if rest == summary or (
            rest.startswith(summary) and _SUMMARY_MORE.fullmatch(rest.removeprefix(summary))
        ):
            return True
    return False


# The API's fields whose options are named otherwise: a filter's time bounds
# (named after what they bound), an event's changes (--change, --change-json),
# an off-hours rule's hours and days (--hours, --days), a webhook's secrets.
_OPTION_OF_FIELD: Final = {
    "occurred_after": "since",
    "occurred_before": "until",
    "changes": "text_changes",
    "start_hour": "hours_text",
    "end_hour": "hours_text",
    "working_days": "days_text",
    "secrets": "secrets_",
}
# ctx.meta's key of the fields a command named by what gave them (`given_as`).
_GIVEN: Final = "sealtrail.given_as"
# Where an API field's path may be cut to name what holds it: before a `.` or a `[`.
_PATH_CUT: Final = re.compile(r"(?=[.\[])")


def given_as(ctx: click.Context, fields: dict[str, str]) -> None:
    """Names the API fields (paths, `policy.rules[1]`, `expire_time`) this
    command set from an option or argument by what the user typed, for an
    error that names them: `--action rag=5`, `--expires-in 3y`, where no
    option is called after the field, or a list's index stands for one of
    several values given."""
    ctx.meta.setdefault(_GIVEN, {}).update(fields)


# ctx.meta's key of what to do of a field the server refuses (`hinted`).
_HINTED: Final = "sealtrail.hinted"


def hinted(ctx: click.Context, hints: dict[str, str]) -> None:
    """Says, after the server's refusal of each API field of `hints`, what to
    do in this command's terms: a webhook sink given no secret was told that
    one is required, not how to give one."""
    ctx.meta.setdefault(_HINTED, {}).update(hints)


# A field the server names in its words: a filter's (`filter.actions`,
# `sink.filter.occurred_before`), or a time bound alone (`occurred_after`).
_FIELD_IN_WORDS: Final = re.compile(
    r"(?<![\w.])(?:[a-z_]+\.)*filter\.[a-z_]+|\boccurred_(?:after|before)\b"
)


def flag_of(ctx: click.Context, path: str) -> str | None:
    """The option (or argument) of this command that gave the API's field
    `path` (`event.actor.id`: --actor-id; `sink.filter.occurred_after`:
    --since; `filter.actions[1]`: --action; `rule.name`: NAME), or what the
    command said gave it (`given_as`), or None when the command has none: an
    error said the API's field, which no option of the command is named."""
    given: dict[str, str] = ctx.meta.get(_GIVEN, {})
    cuts = [found.start() for found in _PATH_CUT.finditer(path)]
    # From the path's start, then from each `.` on: a filter's fields are
    # named alike in a query's `filter.` and a rule's `rule.filter.`.
    starts = [0, *(cut + 1 for cut in cuts if path[cut] == ".")]
    for start in starts:
        for end in [len(path), *reversed(cuts)]:
            if end > start and path[start:end] in given:
                return given[path[start:end]]
    parts = re.sub(r"\[[^\]]*\]", "", path).split(".")
    params = {param.name: param for param in ctx.command.params if param.name}
    for start in range(len(parts)):
        for end in range(len(parts), start, -1):
            field = "_".join(part for part in parts[start:end] if part != "context")
            name = _OPTION_OF_FIELD.get(field, field)
            if name not in params:
                continue
            if isinstance(params[name], click.Option):
                return _named(ctx, name)
            if isinstance(params[name], click.Argument):
                return params[name].human_readable_name
    return None


def in_flags(ctx: click.Context, words: str, fields: Iterable[str] = ()) -> str:
    """The server's `words` with each field they name (a filter's, or one of
    `fields`, the call's field violations) as the option of this command
    that sets it: a Query past the server's time said to narrow
    "filter.occurred_after, filter.occurred_before", where `sealtrail query`
    takes --since and --until (helper-320)."""
    named = [re.escape(field) for field in sorted(set(fields), key=len, reverse=True) if field]
    pattern = re.compile(
        "|".join([*(rf"(?<![\w.]){field}(?![\w.\[])" for field in named), _FIELD_IN_WORDS.pattern])
    )
    return pattern.sub(lambda found: flag_of(ctx, found.group()) or found.group(), words)


@contextmanager
def _traced_by_the_environment() -> Iterator[None]:
    """The calls inside carry the trace context of the environment (TRACEPARENT,
    TRACESTATE: OpenTelemetry's environment carriers, the propagator's fields in
    capitals), as a traced CI job or script hands it to the commands it runs:
    the events they record then lead to its trace, as a traced service's do."""
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace

    fields = propagate.get_global_textmap().fields
    carrier = {name: os.environ[name.upper()] for name in fields if os.environ.get(name.upper())}
    if not carrier:
        yield
        return
    extracted = propagate.extract(carrier)
    span = trace.get_current_span(extracted)
    if "traceparent" in carrier and not span.get_span_context().is_valid:
        click.echo("warning: TRACEPARENT is no W3C traceparent; its trace is not sent", err=True)
    token = otel_context.attach(extracted)
    try:
        yield
    finally:
        otel_context.detach(token)


@main.command()
@click.option("--action", required=True, help="What was done, e.g. api_key.create.")
@click.option("--actor-id", required=True, help="Who did it.")
@click.option("--actor-email")
@click.option("--actor-display-name", help="Their name as shown, e.g. Alice Martin.")
@click.option("--actor-type", type=_choice(ACTOR_TYPES))
@click.option(
    "--credential-kind",
    help="Kind of credential the actor used, lower_snake_case: api_key, oauth_token, session.",
)
@click.option(
    "--credential-id",
    help="That credential's own id in your service (never the secret): key_8f3a2c.",
)
@click.option(
    "--credential-hint",
    help="The last characters of its secret, at most 8, as shown: a1b2.",
)
@click.option(
    "--role",
    "actor_roles",
    multiple=True,
    metavar="ROLE",
    help="A role or group the actor held when acting, as your system names it"
    " (repeatable, each once): --role admin --role billing.",
)
@click.option("--resource-type")
@click.option("--resource-id")
@click.option("--resource-name", help="The resource's name as shown.")
@click.option("--category", type=_choice(CATEGORIES))
@click.option("--severity", type=_choice(SEVERITIES))
@click.option("--outcome", type=_choice(OUTCOMES))
@click.option("--description")
@click.option(
    "--change",
    "text_changes",
    nargs=3,
    multiple=True,
    metavar="FIELD BEFORE AFTER",
    help="A field's text before and after, as given (repeatable): --change role member admin.",
)
@click.option(
    "--change-json",
    "json_changes",
    type=(str, _JsonValue(), _JsonValue()),
    multiple=True,
    metavar="FIELD BEFORE AFTER",
    help="A field's value before and after, each JSON (repeatable; after --change ones):"
    " --change-json quota 10 20, --change-json tags '[]' '[\"ops\"]'; null for none (a"
    " field created or removed): --change-json note null '\"hi\"'.",
)
@click.option("--details", type=_JsonObject(), help="A JSON object of further detail.")
@click.option(
    "--occurred-at",
    type=_Time(),
    help="When it happened, if not now: RFC 3339 time, date or duration ago (15m).",
)
@click.option("--ip", help="The address the action came from.")
@click.option("--user-agent")
@click.option("--country", help="ISO 3166-1 alpha-2 code of where it came from, e.g. FR.")
@click.option("--request-id", metavar="UUID")
@click.option(
    "--trace-id",
    metavar="HEX32",
    help="The trace it belongs to (default: TRACEPARENT's, if set).",
)
@click.option("--span-id", metavar="HEX16", help="The span that did it, with --trace-id.")
@click.option("--http-method", metavar="METHOD", help="The API request's HTTP method: POST.")
@click.option(
    "--http-route",
    metavar="ROUTE",
    help="The route template or path it called, no query string: /v1/users/{id}.",
)
@click.option(
    "--http-status",
    "http_status_code",
    type=click.IntRange(100, 599),
    metavar="CODE",
    help="The HTTP status code it was answered with: 503.",
)
@click.option(
    "--duration-ms",
    type=float,
    metavar="MS",
    help="How long it took, in milliseconds (fractions kept): 12.5.",
)
@click.option(
    "--idempotency-key",
    help="Records at most once per key: run again with the same options, it prints the"
    " event first recorded (its receivedAt says when); a relative --occurred-at differs at"
    " each run: another event, refused. Default: a new UUID.",
)
@click.pass_context
def record(
    ctx: click.Context,
    /,
    text_changes: tuple[tuple[str, str, str], ...],
    json_changes: tuple[tuple[str, Any, Any], ...],
    **options: Any,
) -> None:
    """Record one event and print it as stored, as one JSON line."""
    from google.protobuf import json_format

    from sealtrail._convert import EventFields, build_event

    fields = {name: value for name, value in options.items() if value is not None}
    if fields.get("span_id") and not fields.get("trace_id"):
        # Alone it would stand for the event's ids, the environment's trace dropped.
        raise click.UsageError("--span-id goes with --trace-id.", ctx)
    if changes := [*text_changes, *json_changes]:
        fields["changes"] = changes
    try:
        event = build_event(**cast(EventFields, fields))
    except (ValueError, json_format.ParseError) as error:  # a value no event carries as given
        hint = "'--change-json'" if str(error).startswith("changes[") else "'--details'"
        raise click.BadParameter(str(error), param_hint=hint) from None
    with _client(ctx) as client:
        result = client.record(event)
    click.echo(event_json(result.event))


def event_json(event: event_pb2.Event) -> str:
    """An event as one JSON line, as MessageToJson writes it but for the whole
    numbers of its details and changes, ints as in exports (helper-165)."""
    from sealtrail._convert import message_to_dict

    return json.dumps(message_to_dict(event))


def _filter(criteria: dict[str, Any]) -> event_pb2.EventFilter:
    """The EventFilter of a command's filter options. One `--country` or
    `--resource-type` fills the singular field, which servers older than its
    plural know (they ignore the plural: a sink would take every country);
    several, or one given twice alike, fill the plural. Each value of a
    repeatable option is named by the option and the value as typed, should
    the server refuse it (`--country ZZZ`, not `filter.countries[1]`), in
    the command's context (every caller is a command)."""
    from sealtrail._convert import build_filter

    given = {name: value for name, value in criteria.items() if value is not None}
    for plural, singular in (("countries", "country"), ("resource_types", "resource_type")):
        values = list(dict.fromkeys(given.pop(plural, ())))
        if len(values) == 1:
            given[singular] = values[0]
        elif values:
            given[plural] = values
    details: dict[str, str] = {}
    for key, value in given.pop("details_equals", ()):
        if details.setdefault(key, value) != value:
            raise click.BadParameter(
                f"{key} given twice, {details[key]!r} and {value!r}: no detail holds both",
                param_hint="'--detail'",
            )
    if details:
        given["details_equals"] = details
    if (ctx := click.get_current_context(silent=True)) is not None:
        given_as(ctx, _filter_values_given(ctx, given))
        if "has_http_route" in given:  # the flag typed, of the two one option has
            flag = "--has-http-route" if given["has_http_route"] else "--no-http-route"
            given_as(ctx, {"filter.http_route_presence": flag})
    return build_filter(**given)


def _filter_values_given(ctx: click.Context, given: dict[str, Any]) -> dict[str, str]:
    """The filter's fields (`filter.countries[1]`, `filter.country`) of the
    repeatable options' values as sent, each by its option and value."""
    named: dict[str, str] = {}
    for name in REPEATED_FILTER_FIELDS:  # the repeatable options, by the list each fills
        if not any(param.name == name for param in ctx.command.params):
            continue
        flag = _named(ctx, name)
        values = given.get(name, ())
        for at, value in enumerate([values] if isinstance(values, str) else values):
            named[f"filter.{name}[{at}]"] = given_words(flag, value)
    for singular, plural in (("country", "countries"), ("resource_type", "resource_types")):
        if isinstance(value := given.get(singular), str) and any(
            param.name == plural for param in ctx.command.params
        ):
            named[f"filter.{singular}"] = given_words(_named(ctx, plural), value)
    return named


@main.command()
@_filter_options
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Events to show at most; 0: every match (with --format jsonl, a file to import).",
)
@click.option(
    "--order",
    type=click.Choice(["newest", "oldest"]),
    default="newest",
    show_default=True,
    help="newest: the events recorded last first (descending seq); oldest: ascending seq.",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "jsonl"]),
    default="table",
    show_default=True,
    help="table: for a terminal; jsonl: each event whole as one JSON line (for jq, or a"
    " file `sealtrail import` takes).",
)
@click.pass_context
def query(ctx: click.Context, /, limit: int, order: Order, output: str, **criteria: Any) -> None:
    """List matching events, newest first unless --order oldest."""
    event_filter = _filter(criteria)
    with _client(ctx) as client:
        if limit == 0:
            events = client.query(event_filter, order=order, page_size=1000)
        else:
            # One more than shown tells whether --limit cut the answer short.
            found = client.query(
                event_filter, order=order, page_size=min(limit + 1, 1000), limit=limit + 1
            )
            events = _at_most(found, limit)
        if output == "jsonl":
            for event in events:
                click.echo(event_json(event))
        else:
            _print_tables(events)


@contextlib.contextmanager
def unchanged_since_read(name: str, *, read_with: str | None = None) -> Iterator[None]:
    """Around an update sent with an etag: a change made since (AbortedError)
    is a clear error, not a traceback. Without `read_with` the command read
    the etag itself (running it again reads afresh); with it, the caller
    gave the etag, read earlier with that command, which gives the current one."""
    from sealtrail._errors import AbortedError

    try:
        yield
    except AbortedError:
        if read_with is None:
            message = f"{name} changed while this command ran; run it again"
        else:
            message = (
                f"{name} changed since that etag was read; read it again with"
                f" `{read_with}`, then decide"
            )
        raise click.ClickException(message) from None


def _at_most(events: Iterable[event_pb2.Event], limit: int) -> Iterator[event_pb2.Event]:
    """The first `limit` of `events`; saying so on stderr if there were more."""
    for count, event in enumerate(events, 1):
        if count > limit:
            click.echo(
                f"more events match: showing the first {limit}; raise --limit or narrow the filter",
                err=True,
            )
            return
        yield event


def table_time(stamp: Timestamp) -> str:
    """A time as the tables show it (UTC, to the second); "" for one unset."""
    return stamp.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M:%S") if stamp.seconds else ""


# Rows of one table of `query`, at most. Rich measures a table whole before
# it prints it: `--limit 0` held every event, and each one's rendering (some
# 9 KB), printing nothing until the last had come.
_TABLE_ROWS: Final = 1000


def _print_tables(events: Iterable[event_pb2.Event]) -> None:
    """`events` as tables of at most _TABLE_ROWS rows, each printed as it
    fills: one table (with no row if there is no event) for an answer that
    fits in one, as before."""
    from sealtrail._tables import print_table

    remaining = iter(events)
    chunk = list(itertools.islice(remaining, _TABLE_ROWS))
    while True:
        print_table(_table(chunk))
        chunk = list(itertools.islice(remaining, _TABLE_ROWS))
        if not chunk:
            return


def _table(events: Iterable[event_pb2.Event]) -> PlainTable:
    """The events as a table; a `request` column (`GET /v1/x 404 12ms`) only
    when one of them records an API request (ADR 0136), or is an alert on
    one (`trigger: GET /v1/x 503 1200ms`, `_request_cell`), else none at all."""
    from sealtrail._convert import credential_words, enum_label
    from sealtrail._tables import PlainTable
    from sealtrail.v1 import event_pb2

    events = list(events)
    requests = [_request_cell(event) for event in events]
    table = PlainTable()
    headers: tuple[str, ...] = ("time (UTC)", "seq", "action", "actor", "credential",
                                "resource", "outcome", "severity", "ip", "recorded by")  # fmt: skip
    if any(requests):
        headers = (*headers[:7], "request", *headers[7:])
    for header in headers:
        table.add_column(header, overflow="fold")
    for event, request in zip(events, requests, strict=True):
        credential = event.actor.credential
        shown_request = (request,) if any(requests) else ()
        table.add_row(
            table_time(event.occurred_at),
            str(event.seq),
            event.action,
            _actor_cell(event.actor),
            credential_words(credential.kind, credential.id, credential.hint),
            "/".join(part for part in (event.resource.type, event.resource.id) if part),
            enum_label(event_pb2.Outcome, event.outcome),
            *shown_request,
            enum_label(event_pb2.Severity, event.severity),
            event.context.ip,
            event.recorded_by.token_name or event.recorded_by.token_id,
        )
    return table


# Roles an event table's actor cell names; more are counted (`+3 more`).
_ROLES_SHOWN = 3
# A role the cell's reader would split, trim or take for the count: a comma,
# a quote or bracket, a space at an edge, `+3 more`. Quoted (`"bill,ing"`).
_ROLE_READ_OTHERWISE: Final = re.compile(r'[,"()]|^\s|\s$|^\+\d+ more$')


def _role_words(role: str) -> str:
    """A role as an actor cell shows it: as recorded, or quoted as a JSON
    string (`"bill,ing"`, `" edge"`, `"say \\"hi\\""`) where the cell
    would read it otherwise (_ROLE_READ_OTHERWISE)."""
    if _ROLE_READ_OTHERWISE.search(role) is None:
        return role
    return json.dumps(role, ensure_ascii=False)


# A display name the cell's reader would take for an address or a role, or
# trim: an angle bracket, a quote or bracket, a space at an edge. Quoted.
_NAME_READ_OTHERWISE: Final = re.compile(r'[<>"()]|^\s|\s$')


def _who_words(actor: event_pb2.Actor) -> str:
    """Who acted as audit-log products show it, by name and email, as an
    address is written: `Alice Martin <a@x.io>`, the name quoted as a JSON
    string where it would read otherwise (`"Eve <ceo@x.io>" <eve@x.io>`,
    _NAME_READ_OTHERWISE); with only one of them, `actor_words`."""
    from sealtrail._convert import actor_words

    if not (actor.email and actor.display_name):
        return actor_words(actor.email, actor.display_name, actor.id)
    name = actor.display_name
    if _NAME_READ_OTHERWISE.search(name) is not None:
        name = json.dumps(name, ensure_ascii=False)
    return f"{name} <{actor.email}>"


def _actor_cell(actor: event_pb2.Actor) -> str:
    """Who acted (`_who_words`), and the roles they held then in brackets,
    in the order recorded: `Alice Martin <alice@example.com> (admin, billing)`,
    a role the cell would read otherwise quoted (`(admin, "bill,ing")`,
    _role_words); past _ROLES_SHOWN the rest counted, `(r0, r1, r2, +3 more)`,
    which the JSON output lists."""
    who = _who_words(actor)
    if not actor.roles:
        return who
    roles = [_role_words(role) for role in actor.roles[:_ROLES_SHOWN]]
    if len(actor.roles) > _ROLES_SHOWN:
        roles.append(f"+{len(actor.roles) - _ROLES_SHOWN} more")
    return f"{who} ({', '.join(roles)})"


def _request_cell(event: event_pb2.Event) -> str:
    """An event's request cell: the API request it records; an alert's, the
    one its trigger was, which it keeps in `details.trigger_request` (its
    context holds none: an alert is no request), marked `trigger: `. What
    an operator reading alerts looks for is the failing request; the record
    (`--format jsonl`) stays as it is."""
    from google.protobuf import json_format

    from sealtrail._report import ALERT_ACTION
    from sealtrail.v1 import event_pb2

    if event.action != ALERT_ACTION:
        return request_words(event.context)
    kept = json_format.MessageToDict(event.details).get("trigger_request")
    if not isinstance(kept, dict):
        return ""
    said = request_words(
        event_pb2.RequestContext(
            http_method=_text(kept.get("method")),
            http_route=_text(kept.get("route")),
            http_status_code=_whole(kept.get("status")),
            duration_ms=_positive(kept.get("duration_ms")),
        )
    )
    return f"trigger: {said}" if said else ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _whole(value: Any) -> int:
    """A status code as a Struct carries it (a float), 0 for anything else."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return int(value) if number and value == int(value) and 0 < value < 1000 else 0


def _positive(value: Any) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if number and 0 < value < math.inf else 0.0


def request_words(context: event_pb2.RequestContext) -> str:
    """The API request an event records, in one cell: `GET /v1/x 404 12ms`
    (each part only when recorded; "" for none)."""
    parts = [context.http_method, context.http_route]
    if context.http_status_code:
        parts.append(str(context.http_status_code))
    if context.duration_ms:
        shown = f"{context.duration_ms:.3f}".rstrip("0").rstrip(".")
        parts.append((shown if shown != "0" else f"{context.duration_ms:.2g}") + "ms")
    return " ".join(part for part in parts if part)


def _count(number: int, noun: str) -> str:
    return counted(number, noun, grouped=True)


@main.command()
@_filter_options
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["csv", "ndjson", "json", "bundle"]),
    help="Default: from -o's extension (.csv; .ndjson or .jsonl; .json), else csv; one that"
    " names another format is refused. bundle: NDJSON records with proofs and the signed"
    " checkpoint, written as a directory that `sealtrail verify` checks offline.",
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="File to write; it appears only once complete and checked, with the server's"
    " manifest and signed checkpoint beside it as FILE.manifest.json (for a bundle, a new"
    " or empty directory).",
)
@click.option(
    "--seq",
    "seqs",
    type=SeqRangeParam(),
    help="Only the (matching) events of this seq range, FIRST-LAST, both included; the"
    " manifest names it. A bundle of a range proves it complete (no filter with it).",
)
@received_options("The (matching) events", ", as --seq exports it")
@click.pass_context
def export(
    ctx: click.Context,
    /,
    export_format: ExportFormat | Literal["bundle"] | None,
    out: Path,
    seqs: tuple[int, int] | None,
    received: tuple[datetime, datetime] | None,
    received_since: datetime | None,
    received_until: datetime | None,
    **criteria: Any,
) -> None:
    """Export matching events to a file, checked against the server's manifest;
    with --seq or --received, those of a range of the log."""
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from sealtrail._bundle_format import BundleError
    from sealtrail._errors import SealtrailError
    from sealtrail._export import ExportError, manifest_path
    from sealtrail._export_check import ExportMismatchError

    # Checked here as `bundle`'s own option checks it, which ctx.invoke skips;
    # before the extension: a file where the directory is to be is what is wrong.
    if export_format == "bundle" and out.exists() and not out.is_dir():
        raise click.BadParameter(f"{out} is not a directory", param_hint="'-o' / '--out'")
    export_format = _format_of(export_format, out)
    if export_format == "bundle":
        from sealtrail._cli_integrity import bundle  # which imports this module

        ctx.invoke(
            bundle,
            out=out,
            seqs=seqs,
            received=received,
            received_since=received_since,
            received_until=received_until,
            **criteria,
        )
        return
    if out.is_dir():
        raise click.BadParameter(f"{out} is a directory", param_hint="'-o' / '--out'")
    period = received_period(ctx, seqs, received, received_since, received_until)
    with (
        _client(ctx) as client,
        Progress(
            TextColumn("exporting"),
            TextColumn("{task.fields[rows]:,} events"),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=True,
            # Cleared, it left an empty line in a log or a pipe (helper-196).
            disable=not sys.stderr.isatty(),
        ) as progress,
    ):
        task = progress.add_task("export", total=None, rows=0)

        def update(rows: int, size: int) -> None:
            progress.update(task, completed=size, rows=rows)

        first, last = seqs or (0, 0)
        found: SeqRange | None = None
        try:
            if period is not None:
                found = received_seqs(
                    ctx, client, period, whole=received is not None, verb="exports"
                )
                first, last = found.first, found.last
            manifest = client.export(
                out,
                format=export_format,
                filter=_filter(criteria),
                progress=update,
                manifest_file=True,  # what lets the file's receiver check it later
                first_seq=first,
                last_seq=last,
            )
        except SealtrailError as error:
            if error.reason == "SERVER_STOPPING":
                progress.stop()
                _cut_by_a_stop(error, out)
            size = error.metadata.get("tree_size", "")
            if error.reason == "BEYOND_LOG_SIZE" and seqs is not None and size.isdigit():
                # In the option's terms, not the API's last_seq (helper-350).
                error.message = beyond_the_log(ctx, seqs, int(size))
                del error.metadata["tree_size"]
            raise
        except ExportMismatchError as error:  # a row not of its leaf: before ExportError
            progress.stop()
            _failed_rows_not_of_their_leaves(out, error)
        except (BundleError, ExportError) as error:  # BundleError: no event in the period
            raise click.ClickException(terminal_safe(str(error))) from None
        except OSError as error:  # the file cannot be written: a reason, not a traceback
            raise click.ClickException(_cannot_write(out, error)) from None
        except KeyboardInterrupt as interrupt:
            # Not click's bare "Aborted!" (and 1, as any failure): what is left,
            # and 130, as a shell reports a command Ctrl-C ended (as tail does).
            progress.stop()
            click.echo(f"export interrupted: no partial file was left at {out}", err=True)
            ctx.exit(interrupted_status(interrupt))
    held = (
        f" of seq {manifest.range_first_seq}..{manifest.range_last_seq}"
        if manifest.range_last_seq
        else ""
    )
    if found is not None and found.received_since and found.received_until:
        held += (
            f" (the events received from {moment(found.received_since)}"
            f" to {moment(found.received_until)})"
        )
    click.echo(
        f"exported {_count(manifest.row_count, 'event')} ({_count(manifest.byte_count, 'byte')},"
        f" sha256 {manifest.sha256.hex()}){held} of a log of {manifest.tree_size:,} to {out},"
        f" its manifest and signed checkpoint to {manifest_path(out)}"
    )
    if export_format == "csv":
        _warn_of_cells_past_excel(out)


def _failed_rows_not_of_their_leaves(out: Path, error: ExportMismatchError) -> NoReturn:
    """Exits 1 with `sealtrail verify`'s FAILED line: `client.export` found a
    row of the CSV or JSON export at `out` that does not rebuild into the
    record its own leaf_hash is of (a record rewritten in the database behind
    its leaf, signed by a server before it refused to): the server's digest
    matched, and `exported` handed over a file its own verify fails. The
    file and its manifest are kept, as the evidence of it."""
    from sealtrail._export import manifest_path

    click.echo(f"FAILED: {terminal_safe(str(error))}", err=True)
    click.echo(
        f"kept as evidence, not as a good export: {terminal_safe(str(out))} and its manifest"
        f" {terminal_safe(str(manifest_path(out)))} (the server's VerifyLog names the"
        " record: sealtrail verify-log)",
        err=True,
    )
    sys.exit(1)


# The formats an export's file extension names, for an export given no --format.
_FORMAT_OF_EXTENSION: Final[dict[str, ExportFormat]] = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
}


def _format_of(
    given: ExportFormat | Literal["bundle"] | None, out: Path
) -> ExportFormat | Literal["bundle"]:
    """The format to export to `out`: --format's, else the one its extension
    names, else CSV. `-o audit.ndjson` alone wrote CSV to a file named NDJSON
    without a word, and its manifest called it the export; an extension that
    names another format than --format's is refused, naming both."""
    named = _FORMAT_OF_EXTENSION.get(out.suffix.lower())
    if given is None:
        return named or "csv"
    if named is not None and named != given:
        raise click.UsageError(
            f"--format {given} and -o {out.name}: its {out.suffix} names {named}; give one"
            " that agrees, or no --format"
        )
    return given


# The cells past Excel's limit a warning names; of more, it says how many more.
_LONG_CELLS_NAMED = 5


def _warn_of_cells_past_excel(out: Path) -> None:
    """Warns, on stderr, of the cells of the CSV at `out` longer than Excel
    keeps: opening the file, it cut them short without a word, and an
    auditor read a shortened details cell as the record (helper-344). The
    file is as exported (its manifest's bytes): the warning only names them."""
    from sealtrail._export import EXCEL_CELL_LIMIT, cells_past_excel

    try:
        long_cells = cells_past_excel(out)
    except (OSError, UnicodeDecodeError):  # exported and checked: a warning is not worth a failure
        return
    if not long_cells:
        return
    named = ", ".join(f"seq {seq} ({column})" for seq, column in long_cells[:_LONG_CELLS_NAMED])
    more = len(long_cells) - _LONG_CELLS_NAMED
    if more > 0:
        named += f" and {more:,} more"
    one = len(long_cells) == 1
    click.echo(
        f"warning: {_count(len(long_cells), 'cell')} {'is' if one else 'are'} longer than"
        f" {EXCEL_CELL_LIMIT:,} characters, the most Excel keeps of a cell: opening {out},"
        f" Excel cuts {'it' if one else 'them'} short without a word: {named}."
        f" The file holds {'it' if one else 'them'} whole.",
        err=True,
    )


def _cut_by_a_stop(error: SealtrailError, out: Path) -> None:
    """`error`, an export cut short by a stopping server, in words of this
    command: the server's say how to export the rest (`first_seq` one past the
    last seq received, `last_seq` in its metadata), for a client that kept
    what it received, where the command keeps nothing of a cut export."""
    error.message = (
        "the server is stopping and cut the export short: no partial file was left at"
        f" {out}; export again, at another server or here once it is back"
    )
    error.metadata.pop("last_seq", None)


@main.command()
@_tail_filter_options
@click.option(
    "--from-seq", type=click.IntRange(min=0, max=MAX_SEQ), help="Start after this seq (0: all)."
)
@click.option(
    "--since",
    "start_time",
    type=_Time(),
    help="Start with the events received since this time: RFC 3339 (2026-12-01T09:00:00Z),"
    " a date (YYYY-MM-DD, UTC midnight), a duration ago (15m, 24h, 7d, 2w) or now.",
)
@click.pass_context
def tail(
    ctx: click.Context, /, from_seq: int | None, start_time: datetime | None, **criteria: Any
) -> None:
    """Print matching events as JSON lines as they are recorded, until interrupted.

    Without --from-seq or --since it starts with the next event. Events
    retention removed on the way are counted on stderr, where they were.
    Interrupted, it says on stderr the last seq it printed and the
    --from-seq that resumes after it."""
    if from_seq is not None and start_time is not None:
        raise click.UsageError("give --from-seq or --since, not both")
    printed: int | None = None  # the seq of the last event printed
    reached = from_seq  # before any: where the stream is (its start, a heartbeat's cursor)

    def idle(cursor: int) -> None:
        nonlocal reached
        reached = cursor

    def removed(purged: audit_service_pb2.PurgedRange) -> None:
        click.echo(
            f"retention removed {_count(purged.count, 'event')} after seq {purged.after_seq},"
            f" up to seq {purged.through_seq}",
            err=True,
        )

    with _client(ctx) as client, _LinesWrittenWhole() as lines:
        events = client.stream(
            _filter(criteria),
            after_seq=from_seq,
            since=start_time,
            on_heartbeat=idle,
            on_purged=removed,
        )
        try:
            for event in events:
                with lines.writing():
                    click.echo(event_json(event))
                    printed = event.seq
        except KeyboardInterrupt as interrupt:
            # Where it stopped, and how to go on from there, neither missing
            # an event nor printing one twice; the status as a shell reports
            # a command a signal ended.
            if not isinstance(interrupt, Stopped) and sys.stderr.isatty():
                click.echo(err=True)  # past the terminal's ^C
            name = str(interrupt) if isinstance(interrupt, Stopped) else "SIGINT"
            click.echo(f"stopped by {name}{_tail_resume(printed, reached, start_time)}", err=True)
            ctx.exit(interrupted_status(interrupt))


def _tail_resume(printed: int | None, reached: int | None, since: datetime | None) -> str:
    """Where an interrupted tail stopped and how to resume it, as its line says:
    after the last seq it printed; before any, after where its stream was
    (where it started, or an idle stream's cursor), or from the same --since."""
    instead = " (in place of --since)" if since is not None else ""
    if printed is not None:
        return f" after seq {printed}; resume with --from-seq {printed}{instead}"
    if reached is not None:
        return f" before any event, after seq {reached}; resume with --from-seq {reached}{instead}"
    if since is not None:
        return " before any event; resume with the same --since"
    return " before any event"


# Last, as they use this module's helpers: the modules of the other commands,
# each of which adds its commands to `main` as it loads (imported first of the
# package's too: tests/unit/test_cli_modules_import_alone.py).
import sealtrail._cli_actions  # noqa: E402, F401
import sealtrail._cli_admin  # noqa: E402, F401
import sealtrail._cli_alerts  # noqa: E402, F401
import sealtrail._cli_import  # noqa: E402, F401
import sealtrail._cli_integrity  # noqa: E402, F401
import sealtrail._cli_report  # noqa: E402, F401
import sealtrail._cli_retention  # noqa: E402, F401
import sealtrail._cli_sinks  # noqa: E402, F401
import sealtrail._cli_stats  # noqa: E402, F401
