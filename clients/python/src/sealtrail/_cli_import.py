"""`sealtrail import`: record the events of an NDJSON file, in batches, as a
backfill from another system or a move between deployments. Registers its
commands on the main command of _cli.py, whose helpers it shares."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TypeAlias

import click

from sealtrail._choices import MAX_BATCH
from sealtrail._cli import _client, _count, interrupted_status, main, terminal_safe
from sealtrail._words import detailed

# What the commands work with (gRPC, protobuf, the client) each imports as it
# runs: --help imports none of it (tests/unit/test_cli_startup_imports.py).
if TYPE_CHECKING:
    from sealtrail._client import AuditClient
    from sealtrail.v1 import event_pb2

# A batch's events, at most, in bytes: well under the service's 64 MiB a request.
_BATCH_BYTES = 8 * 1024 * 1024
# The largest event the service reads (docs/api.md): a larger one is refused
# here, not sent to be refused.
_MAX_EVENT_BYTES = 512 * 1024
# A line longer than this is no event the service would take, whatever it holds.
_MAX_LINE_BYTES = 8 * _MAX_EVENT_BYTES
# Exit status of an import that went through its file but refused lines: 1
# and 2 are those of a call that failed (the import cut short), as elsewhere.
_LINES_REFUSED = 3


@dataclass
class _Tally:
    recorded: int = 0
    deduplicated: int = 0
    refused: int = 0  # lines
    done: int = 0  # the line up to which every line was dealt with
    sending: int = 0  # the last line of the call in flight, 0 between calls
    # Lines are refused by the thread reading the file and by the one recording.
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


# A batch: its events, each with the number of its line.
_Batch: TypeAlias = "list[tuple[int, event_pb2.Event]]"


@click.command("import")
@click.argument("source", type=click.File("rb"), default="-")
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH),
    default=500,
    show_default=True,
    help="Events a RecordBatch call carries, at most.",
)
@click.option(
    "--import-id",
    callback=lambda ctx, param, value: _import_id(value),
    metavar="ID",
    help="Give each line without an idempotency key the key ID:LINE (its line number), as"
    " the import cut short that printed ID did: run again on the same file, it records no"
    " line twice. A new ID each import unless given.",
)
@click.pass_context
def import_events(ctx: click.Context, source: BinaryIO, batch_size: int, import_id: str) -> None:
    """Record the events of SOURCE (NDJSON; - or none: stdin), one Event a
    line in the proto JSON mapping, as `sealtrail query --format jsonl
    --order oldest --limit 0` prints them, or an export's stored records
    (`sealtrail export --format ndjson`: a tenant moved to another).
    Enum values may be written as the flags take them ("category": "member")
    or as proto JSON names them (CATEGORY_MEMBER).
    What the service assigns (id, seq, received_at, leaf_hash, tenant_id) is
    dropped: it assigns them anew, received now, in this tenant's log; and
    retention ages an event from when it was received, so an imported event
    is kept a full retention period from its import, however old. A
    country the exporting server located from the address (GeoIP,
    `country_source: geoip`) is dropped, the address kept: this service
    locates it again if it has a GeoIP database, else records none; a
    country the sender gave arrives as the sender's. A
    line with its idempotency_key is recorded once however often the file is
    imported (one without occurred_at at the time of its first import); one
    without a key gets the key ID:LINE, its line number after the import's
    ID (--import-id; a new one each import, so such a line is recorded again
    each time the file is imported without it).
    Sealtrail's own records (retention.*, security.alert, audit_log.queried
    and the other records of its own API) are refused: only it records them.
    Each line refused is named on stderr, and the import goes on: exit 3 if
    any was. An import cut short by a failed call (or
    Ctrl-C, SIGTERM) says up to which line every line was dealt with, which
    lines after it its last call sent, which may have been recorded (its
    answer lost), and its ID: the same file imported again with
    --import-id ID records each line once, those recorded already answered
    as such (from its first line: a line's key is its number in the file,
    so not `tail -n +LINE`, whose lines are numbered anew)."""
    from sealtrail._errors import SealtrailError

    tally = _Tally()
    name = getattr(source, "name", "-")
    where = "stdin" if name in ("-", "<stdin>") else name
    with _client(ctx) as client:
        try:
            own, close = _own_file(source)
            events = _events(ctx, own, tally, import_id)
            with _read_ahead(_batches(events, batch_size), close) as batches:
                for batch in batches:
                    _record(client, batch, tally)
        except (SealtrailError, KeyboardInterrupt) as stopped:
            # How far the import went, before _client says why (or Ctrl-C
            # ends it, as a shell reports); lines past it already named as
            # refused (read ahead) go again too.
            click.echo(
                f"recorded {_count(tally.recorded, 'event')} from {where}; every line up to"
                f" {tally.done} was dealt with{_in_flight(tally, stopped)}; to go on, import it"
                f" again with --import-id {import_id}: no line is recorded twice",
                err=True,
            )
            if isinstance(stopped, KeyboardInterrupt):
                ctx.exit(interrupted_status(stopped))
            raise
    click.echo(_summary(tally, where))
    if tally.refused:
        ctx.exit(_LINES_REFUSED)


# An import's id: long enough that the keys it gives are unguessable (a
# recorder token that sends a used key learns that it is used: docs/api.md),
# short enough that ID:LINE fits an idempotency key's 128 characters.
_IMPORT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _import_id(given: str | None) -> str:
    """The id of this import's keys: the one given (an earlier import's), or a new one."""
    if given is None:
        return uuid.uuid4().hex
    if not _IMPORT_ID.fullmatch(given):
        raise click.BadParameter(
            f"{given!r} is not an import's id: 16 to 64 letters, digits, - or _, as an"
            " import cut short printed it"
        )
    return given


def _in_flight(tally: _Tally, stopped: BaseException) -> str:
    """The lines of the call cut short, if it may have recorded them: its
    answer lost (a deadline, a reset, Ctrl-C) after the service committed.
    Imported again without the import's id, those without an idempotency key
    would be recorded twice."""
    from sealtrail._errors import SealtrailError
    from sealtrail._retry import RETRYABLE

    if not tally.sending:
        return ""
    if isinstance(stopped, SealtrailError) and not (stopped.retried or stopped.code in RETRYABLE):
        return ""  # refused at once: nothing of it was written
    first = tally.done + 1
    lines = f"line {first}" if first == tally.sending else f"lines {first} to {tally.sending}"
    return f"; {lines}, sent when it stopped, may have been recorded"


def _summary(tally: _Tally, where: str) -> str:
    summary = f"recorded {_count(tally.recorded, 'event')}"
    if tally.deduplicated:
        summary += f", {_count(tally.deduplicated, 'event')} already recorded"
    summary += f" from {where}"
    if tally.refused:
        summary += f"; {_count(tally.refused, 'line')} refused"
    return summary


def _events(
    ctx: click.Context, source: BinaryIO, tally: _Tally, import_id: str
) -> Iterator[tuple[int, event_pb2.Event]]:
    """(line number, event) of each line that is one, keyed; the others reported."""
    from google.protobuf import json_format

    first = True
    for number, line in enumerate(source, start=1):
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark (Notepad's UTF-8)
        if not line.strip():
            continue
        if first:
            _not_another_format(ctx, line)
            first = False
        if len(line) > _MAX_LINE_BYTES:
            _refuse(tally, number, f"{len(line)} bytes, more than any event the service takes")
            continue
        if not line.lstrip().startswith(b"{"):  # Parse takes `[]` for an empty Event
            _refuse(tally, number, "not an Event: one JSON object a line")
            continue
        try:
            event = _parsed(line)
        except (json_format.ParseError, UnicodeDecodeError, RecursionError) as error:
            _refuse(tally, number, f"not an Event: {error}")
            continue
        except ValueError as error:  # a number a double would round: _exactly_as_written
            _refuse(tally, number, str(error))
            continue
        # What the service assigns, which a line may carry (as `sealtrail
        # query --format jsonl` prints them): dropped, it assigns them anew.
        for field in ("id", "seq", "received_at", "leaf_hash", "tenant_id"):
            event.ClearField(field)
        if event.HasField("context"):
            _unlocated(event.context)
        if not event.idempotency_key:
            # The same in every run of the import under its id, unlike the
            # client's random key: run again, it finds the line recorded. Set
            # here, the client stamps no time on a line without one: the
            # service gives it the time it first recorded it, the same on a
            # run again.
            event.idempotency_key = f"{import_id}:{number}"
        if (size := event.ByteSize()) > _MAX_EVENT_BYTES:
            _refuse(tally, number, f"{size} bytes as sent; an event is at most {_MAX_EVENT_BYTES}")
            continue
        yield number, event


def _unlocated(context: event_pb2.RequestContext) -> None:
    """`context` without what the exporting server located: who located a
    country is the server's to say (`country_source`, output only), and a
    country it found from the address in its GeoIP database (`geoip`) is
    not the importer's to assert. Sent, it was recorded as the caller's,
    the imported log saying the caller had located the address. Such a
    country is dropped with its source, the address kept: the importing
    server locates it in its own GeoIP database (SEALTRAIL_GEOIP_DB), marked
    as its own, or records none if it has no database. A country the caller
    sent (`caller`, or none marked) is sent as the caller's."""
    from sealtrail.v1 import event_pb2

    if context.country_source == event_pb2.COUNTRY_SOURCE_GEOIP:
        context.ClearField("country")
    context.ClearField("country_source")


@functools.cache
def _full_names() -> dict[tuple[str, ...], dict[str, str]]:
    """Each enum's values as the command line's flags take them, by where
    they stand in an Event line (made as an import first needs them: --help
    imports no protobuf)."""
    from sealtrail._convert import enum_names, enum_value
    from sealtrail.v1 import event_pb2

    enums = {
        ("category",): event_pb2.Category,
        ("severity",): event_pb2.Severity,
        ("outcome",): event_pb2.Outcome,
        ("actor", "type"): event_pb2.ActorType,
        # Output only: a record says who located its country (`caller`, `geoip`);
        # a `geoip` country is dropped (_unlocated), the importing server's to find.
        ("context", "country_source"): event_pb2.CountrySource,
    }
    return {
        path: {
            short: enum.Name(enum_value(enum, short, field=path[-1])) for short in enum_names(enum)
        }
        for path, enum in enums.items()
    }


def _parsed(line: bytes) -> event_pb2.Event:
    """The Event of `line`, read once: ParseError (UnicodeDecodeError,
    RecursionError) saying why it is none, in Parse's words. (Read as JSON to
    rewrite its enum values, then again by Parse, a line cost twice its
    reading: the better part of an import's time.)"""
    from google.protobuf import json_format

    from sealtrail.v1 import event_pb2

    data = _with_full_enum_names(line)
    if isinstance(data, bytes):  # unreadable: Parse says why
        return json_format.Parse(data, event_pb2.Event())
    _stored_record(data)
    _exactly_as_written(data)
    try:
        return json_format.ParseDict(data, event_pb2.Event())
    except json_format.ParseError:
        raise
    except Exception as error:  # as Parse words what ParseDict raises
        raise json_format.ParseError(
            f"Failed to parse JSON: {type(error).__name__}: {error}."
        ) from error


# The version of the stored record (an export's NDJSON line) this client reads.
_RECORD_VERSION = 1


def _stored_record(data: dict[str, Any]) -> None:
    """`data` as an Event's fields, if it is a stored record, as an export's
    --format ndjson writes them (keyed by `v` and `tenant_id`): its `v` taken
    off; its other keys are the Event's fields by their proto names, which
    Parse reads, with enum values as the flags take them. ValueError for a
    record of a version this client does not read. Refused whole, an
    export's NDJSON could not be moved to another tenant or deployment but
    by querying the events again."""
    if "v" not in data or "tenant_id" not in data:
        return
    if data["v"] != _RECORD_VERSION or isinstance(data["v"], bool):
        raise ValueError(
            f"a stored record of version {json.dumps(data['v'])}: this client reads"
            f" version {_RECORD_VERSION}'s"
        )
    del data["v"]


def _exactly_as_written(data: dict[str, Any]) -> None:
    """ValueError naming where a number in the line's `details` or a
    change's `before` or `after` would not arrive as written (a whole number
    past ±2^53, NaN or Infinity), as build_event refuses it. Those travel as
    google.protobuf.Value, a double: an account number of 17 digits was
    recorded one off, silently."""
    from sealtrail._convert import _exact

    _exact(data.get("details"), "details")
    changes = data.get("changes")
    for index, change in enumerate(changes if isinstance(changes, list) else []):
        for side in ("before", "after") if isinstance(change, dict) else ():
            _exact(change.get(side), f"changes[{index}].{side}", 2)


def _with_full_enum_names(line: bytes) -> bytes | dict[str, Any]:
    """`line` read as JSON, with an enum value given as the command line's
    flags take it (`"category": "member"`, any case) as proto JSON names it
    (`CATEGORY_MEMBER`): only that was taken, "Invalid enum value member".
    A line it cannot read as one JSON object (strict UTF-8, each key once, as
    Parse reads it) is returned as it is, for Parse to name what is wrong."""
    try:
        data: Any = json.loads(line.decode("utf-8"), object_pairs_hook=_once_each)
    except (ValueError, RecursionError):  # a repeated key too: Parse refuses it
        return line
    if not isinstance(data, dict):
        return line
    for path, names in _full_names().items():
        *parents, name = path
        holder: Any = data
        for parent in parents:
            holder = holder.get(parent) if isinstance(holder, dict) else None
        value = holder.get(name) if isinstance(holder, dict) else None
        if isinstance(value, str) and value.isascii() and (full := names.get(value.lower())):
            holder[name] = full
    return data


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once; ValueError if one is
    repeated (json.loads keeps the last, where Parse refuses the line)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("duplicate key")
    return data


def _not_another_format(ctx: click.Context, first_line: bytes) -> None:
    """A usage error if the file is an export's JSON array, where every line
    would be refused, or in UTF-16 or UTF-32 (Windows PowerShell's `>`),
    not UTF-8. An export's NDJSON (stored records) is read: _stored_record."""
    # A byte-order mark, or a NUL beside the first `{`: no UTF-8 line starts so.
    if first_line.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00", b"{\x00")):
        raise click.UsageError(
            "SOURCE is UTF-16 or UTF-32 (as Windows PowerShell's > and Out-File write it),"
            " not UTF-8: convert it first, e.g. Get-Content FILE | Set-Content -Encoding utf8"
            " NEW",
            ctx,
        )
    if first_line.lstrip().startswith(b"["):
        raise click.UsageError(
            "SOURCE is a JSON array (an export's --format json?); import takes one Event a"
            " line, as an export's --format ndjson or `sealtrail query --format jsonl --order"
            " oldest` prints them",
            ctx,
        )


def _refuse(tally: _Tally, number: int, why: str) -> None:
    with tally.lock:
        # `why` quotes the line (a parser's words) or is the server's.
        click.echo(f"line {number}: {terminal_safe(why)}", err=True)
        tally.refused += 1


def _batches(events: Iterator[tuple[int, event_pb2.Event]], size: int) -> Iterator[_Batch]:
    batch: _Batch = []
    held = 0
    for numbered in events:
        event_bytes = numbered[1].ByteSize()
        if batch and (len(batch) >= size or held + event_bytes > _BATCH_BYTES):
            yield batch
            batch, held = [], 0
        batch.append(numbered)
        held += event_bytes
    if batch:
        yield batch


@dataclass
class _Raised:
    """What reading the file raised, to be raised where the batches are taken."""

    error: BaseException


def _own_file(source: BinaryIO) -> tuple[BinaryIO, Callable[[], None] | None]:
    """`source` as the thread reading ahead may read it, and be left waiting
    in when the import stops (a pipe, a terminal): a file of its own on a
    duplicate of its descriptor, and how to close it once read. Reading stdin's
    own file, a thread still waiting in it held its lock, and Python aborted
    at exit ("could not acquire lock for <_io.BufferedReader name='<stdin>'>",
    SIGABRT, where Ctrl-C ends an import with 130). A source without a
    descriptor (no pipe, nothing to wait for) is read as it is."""
    try:
        descriptor = source.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        return source, None
    own = os.fdopen(os.dup(descriptor), "rb")
    return own, own.close


@contextlib.contextmanager
def _read_ahead(
    batches: Iterator[_Batch], then: Callable[[], None] | None = None
) -> Iterator[Iterator[_Batch]]:
    """`batches`, read by a thread of their own a batch ahead of the caller: the
    next batch's lines are read, parsed and checked while the service records
    the last. Read in turn, with the service idle meanwhile, an import ran at
    half a plain RecordBatch loop's rate. What reading raises (a usage error, a
    file unreadable) is raised to the caller as it takes the batch it stopped;
    on leaving, the thread stops at its next batch, and calls `then` (closing
    what it read) once it stopped reading: a thread still waiting for a line
    is left to the process's exit."""
    ready: queue.Queue[_Batch | _Raised | None] = queue.Queue(maxsize=1)  # None: the end
    stop = threading.Event()

    def put(item: _Batch | _Raised | None) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ready.put(item, timeout=0.1)
                return True
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
        except BaseException as error:  # raised to the caller, in its thread
            put(_Raised(error))
            return
        finally:
            if then is not None:
                then()
        put(None)

    def taken() -> Iterator[_Batch]:
        while (item := ready.get()) is not None:
            if isinstance(item, _Raised):
                raise item.error
            yield item

    reader = threading.Thread(target=read, name="sealtrail-import-reader", daemon=True)
    reader.start()
    try:
        yield taken()
    finally:
        stop.set()
        # Not longer: it may be waiting for a line on stdin, the user for the prompt.
        reader.join(timeout=0.25)


def _record(client: AuditClient, batch: _Batch, tally: _Tally) -> None:
    # Every line before this call's first was dealt with (sent, or refused here).
    tally.done, tally.sending = batch[0][0] - 1, batch[-1][0]
    try:
        results = client.record_batch([event for _, event in batch])
    except ValueError as error:  # an event nested too deep for a request: one at a time
        if len(batch) > 1:
            for numbered in batch:
                _record(client, [numbered], tally)
            return
        _refuse(tally, batch[0][0], str(error))
        tally.done, tally.sending = batch[0][0], 0
        return
    tally.sending = 0
    for index, ((number, _), result) in enumerate(zip(batch, results, strict=True)):
        if result.error is not None:
            entry = f"events[{index}]"  # the batch's, not the line's
            violations = "; ".join(
                f"{path.removeprefix(entry).removeprefix('.') or 'event'}: {why}"
                for path, why in result.error.field_violations
            )
            reason = violations or result.error.message
            _refuse(tally, number, detailed(result.error.code.name, reason))
        elif result.deduplicated:
            tally.deduplicated += 1
        else:
            tally.recorded += 1
    tally.done = batch[-1][0]


# On the main command as this module loads, whether _cli imported it (as it
# imports each) or it was imported first (tests/unit/test_cli_modules_import_alone.py).
main.add_command(import_events)
