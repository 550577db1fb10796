"""`sealtrail import`: record the events of an NDJSON file, in batches, as a
backfill from another system or a move between deployments. Registered on
the main command by _cli.py, whose helpers it shares."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import click
from google.protobuf import json_format

from sealtrail._cli import _client, _count
from sealtrail._client import AuditClient
from sealtrail._convert import MAX_BATCH
from sealtrail._errors import SealtrailError
from sealtrail.v1 import event_pb2

# A batch's events, at most, in bytes: well under the service's 64 MiB a request.
_BATCH_BYTES = 8 * 1024 * 1024


@dataclass
class _Tally:
    recorded: int = 0
    deduplicated: int = 0
    refused: list[int] = field(default_factory=list)  # line numbers
    done: int = 0  # the line up to which every event was dealt with


@click.command("import")
@click.argument("source", type=click.File("rb"), default="-")
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH),
    default=500,
    show_default=True,
    help="Events a RecordBatch call carries, at most.",
)
@click.pass_context
def import_events(ctx: click.Context, source: BinaryIO, batch_size: int) -> None:
    """Record the events of SOURCE (NDJSON; - or none: stdin), one Event a
    line in the proto JSON mapping, as `sealtrail query --format jsonl`
    prints them. What the service assigns (id, seq, received_at, leaf_hash,
    tenant_id) is dropped: it assigns them anew, received now, in this
    tenant's log. A line with its idempotency_key and occurred_at is
    recorded once however often the file is imported; one without a key gets
    a new one each time, and one without occurred_at the time of its import
    (again, a different event: ALREADY_EXISTS for its key). Sealtrail's own
    records (audit_log.*, retention.*, ...) are refused: only it records them.
    Each line refused is named on stderr; exit 1 if any was."""
    tally = _Tally()
    name = getattr(source, "name", "-")
    where = "stdin" if name in ("-", "<stdin>") else name
    with _client(ctx) as client:
        try:
            for batch in _batches(_events(source, tally), batch_size):
                _record(client, batch, tally)
                tally.done = batch[-1][0]
        except SealtrailError:  # said by _client; first, how far the import went
            click.echo(f"{_summary(tally)} from {where}, up to line {tally.done}", err=True)
            raise
    click.echo(f"{_summary(tally)} from {where}")
    if tally.refused:
        click.echo(f"{_count(len(tally.refused), 'line')} refused", err=True)
        ctx.exit(1)


def _summary(tally: _Tally) -> str:
    summary = f"recorded {_count(tally.recorded, 'event')}"
    if tally.deduplicated:
        summary += f", {_count(tally.deduplicated, 'event')} already recorded"
    return summary


def _events(source: BinaryIO, tally: _Tally) -> Iterator[tuple[int, event_pb2.Event]]:
    """(line number, event) of each line that is one; the others reported."""
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        event = event_pb2.Event()
        try:
            json_format.Parse(line, event)
        except (json_format.ParseError, UnicodeDecodeError, RecursionError) as error:
            click.echo(f"line {number}: not an Event: {error}", err=True)
            tally.refused.append(number)
            continue
        # What the service assigns, which a line may carry (as `sealtrail
        # query --format jsonl` prints them): dropped, it assigns them anew.
        for name in ("id", "seq", "received_at", "leaf_hash", "tenant_id"):
            event.ClearField(name)
        yield number, event


def _batches(
    events: Iterator[tuple[int, event_pb2.Event]], size: int
) -> Iterator[list[tuple[int, event_pb2.Event]]]:
    batch: list[tuple[int, event_pb2.Event]] = []
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


def _record(client: AuditClient, batch: list[tuple[int, event_pb2.Event]], tally: _Tally) -> None:
    try:
        results = client.record_batch([event for _, event in batch])
    except ValueError as error:  # an event nested too deep for a request: one at a time
        if len(batch) > 1:
            for numbered in batch:
                _record(client, [numbered], tally)
            return
        click.echo(f"line {batch[0][0]}: {error}", err=True)
        tally.refused.append(batch[0][0])
        return
    for (number, _), result in zip(batch, results, strict=True):
        if result.error is not None:
            violations = "; ".join(f"{f}: {d}" for f, d in result.error.field_violations)
            click.echo(
                f"line {number}: {result.error.code.name}: {violations or result.error.message}",
                err=True,
            )
            tally.refused.append(number)
        elif result.deduplicated:
            tally.deduplicated += 1
        else:
            tally.recorded += 1
