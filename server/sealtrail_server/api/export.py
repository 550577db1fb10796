"""The Export RPC: a filtered slice of the log as CSV, NDJSON or JSON, streamed
in chunks from a server-side cursor, then a manifest that lets the receiver
check what it got. Each export is recorded in the log as `audit_log.exported`."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing, contextmanager
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import json_format

from sealtrail._words import counted
from sealtrail.tlog import ExportStatement, sign_note
from sealtrail.v1 import audit_service_pb2 as pb

from ..domain.access import Principal
from ..domain.canonical import canonical_json, plain_numbers
from ..domain.errors import (
    Aborted,
    FailedPrecondition,
    IntegrityFailure,
    InvalidArgument,
    ResourceExhausted,
    TenantLimitReached,
    Unavailable,
)
from ..domain.filters import EventFilter
from ..domain.merkle import leaf_hash
from ..export.formats import CsvEncoder, Encoder, JsonEncoder, NdjsonEncoder
from ..integrity.checkpointer import Checkpointer
from ..store.appender import Appender
from ..store.changes import Changes, refuse_if_erased_now, tenant_erased, waiting_at_most
from ..store.database import READ_LOCK_TIMEOUT, Connection, Database
from ..store.events import RemovedSeqs, StoredEvent, recent_exports, stream_events
from ..store.tree import tree_size
from .audited import FilterDetails, record_access
from .convert import UNREADABLE, event_from_record, request_filter, unreadable_record
from .guard import current_principal, end_waiting_call
from .removals_said import RemovalsSaid

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
CHUNK_BYTES = 64 * 1024
# The lock under which an export is counted against the tenant's rate and recorded.
_EXPORT_RATE_SUBJECT = "export_rate"
# When an export refused for them may try again: a place frees when one ends.
_FULL_RETRY_SECONDS = 5.0
# When an export cut by a stop may try again (a stream ended so waits as long).
_STOPPING_RETRY_SECONDS = 1.0

_FORMAT_NAMES = {
    pb.EXPORT_FORMAT_CSV: "csv",
    pb.EXPORT_FORMAT_NDJSON: "ndjson",
    pb.EXPORT_FORMAT_JSON: "json",
}


def _api_json(record: str, leaf_hash: bytes) -> dict[str, Any]:
    """The API's JSON mapping of a record, its whole numbers written as the
    record writes them (83, not MessageToDict's 83.0), as `sealtrail query`
    and the console write them."""
    as_dict: dict[str, Any] = plain_numbers(
        json_format.MessageToDict(event_from_record(record, leaf_hash))
    )
    return as_dict


def seq_range(request: pb.ExportRequest) -> tuple[int, int] | None:
    """The (first, last) seqs the request asks for, both included; None for
    the whole log. A range needs both ends: a first seq alone would read as
    "from there to the end", a moving end no bundle can prove."""
    first, last = request.first_seq, request.last_seq
    if last < 0:
        raise InvalidArgument.field("last_seq", "must not be negative")
    if not last:
        if first:
            raise InvalidArgument.field("last_seq", "must be set with first_seq")
        return None
    if first < 1:
        raise InvalidArgument.field("first_seq", "must be 1 or more with last_seq")
    if first > last:
        raise InvalidArgument.field("first_seq", f"must not be greater than last_seq ({last})")
    return first, last


def _encoder(export_format: int) -> Encoder:
    if export_format == pb.EXPORT_FORMAT_CSV:
        return CsvEncoder()
    if export_format == pb.EXPORT_FORMAT_NDJSON:
        return NdjsonEncoder()
    if export_format == pb.EXPORT_FORMAT_JSON:
        return JsonEncoder(_api_json)
    raise InvalidArgument.field("format", "must be EXPORT_FORMAT_CSV, _NDJSON or _JSON")


class ExportsOpen:
    """The exports a process has open, by tenant: at most `per_tenant` of one
    tenant and `per_process` in all (SEALTRAIL_EXPORT_MAX_PER_TENANT and
    _PER_PROCESS). Past either, Export is refused before it is recorded or
    counted against the rate. An export whose client stops reading waits,
    holding its page (about 6 MB), and the rate alone let one tenant leave 30
    more a minute so (helper-209); it waits so until StallWatch ends it."""

    def __init__(self, *, per_tenant: int = 4, per_process: int = 50) -> None:
        self._per_tenant = per_tenant
        self._per_process = per_process
        self._open: Counter[str] = Counter()
        self._running: set[StallWatch] = set()
        # The server is stopping and its exports were cut: any to come is refused.
        self.cut = False

    def count(self) -> int:
        """The exports open in this process (a leak shows here)."""
        return self._open.total()

    @contextmanager
    def running(self, watch: StallWatch) -> Iterator[None]:
        """`watch`'s export is one `cut_for_stop` ends, for the block."""
        self._running.add(watch)
        try:
            yield
        finally:
            self._running.discard(watch)

    def cut_for_stop(self) -> None:
        """Ends every export still running, UNAVAILABLE (`SERVER_STOPPING`):
        the server is stopping, and its grace is about to run out. Else gRPC
        cancelled them as it ran out, in its own words ("Cancelling all
        calls"), with no reason and no retry delay, nor a word of how to
        export the rest. Any export to come is refused, before it is recorded:
        it would have been recorded, then cut by gRPC."""
        self.cut = True
        for watch in list(self._running):
            watch.cut_for_stop()

    @contextmanager
    def admitted(self, tenant_id: str) -> Iterator[None]:
        """Holds a place for an export of `tenant_id`'s for the block, however
        it ends; ResourceExhausted if the tenant or the process has no more,
        Unavailable (`SERVER_STOPPING`) once exports are cut for a stop."""
        if self.cut:
            raise Unavailable(
                "the server is stopping: export at another server, or here once it is back",
                retry_after=_STOPPING_RETRY_SECONDS,
                reason="SERVER_STOPPING",
            )
        if self._open[tenant_id] >= self._per_tenant:
            raise TenantLimitReached(
                f"the tenant has {counted(self._open[tenant_id], 'export')} open on this server;"
                f" a tenant may have {self._per_tenant} at once: let one end, or retry later",
                retry_after=_FULL_RETRY_SECONDS,
                reason="TOO_MANY_EXPORTS",
                limit=self._per_tenant,
            )
        if self._open.total() >= self._per_process:
            raise ResourceExhausted(
                f"this server has {counted(self._open.total(), 'export')} open;"
                f" it may have {self._per_process} at once, of all tenants: retry later",
                retry_after=_FULL_RETRY_SECONDS,
                reason="TOO_MANY_EXPORTS",
            )
        self._open[tenant_id] += 1
        try:
            yield
        finally:
            self._open[tenant_id] -= 1
            if not self._open[tenant_id]:
                del self._open[tenant_id]


class StallWatch:
    """Ends an export that cannot hand a chunk to the transport for `seconds`
    (SEALTRAIL_EXPORT_STALL_SECONDS, ADR 0072): its client stopped reading,
    its connection kept (keepalive answered), or went silent. Such an export
    waited inside gRPC's write for as long as its connection lived, holding
    its place among the exports open and its page (about 6 MB) (helper-214).
    Armed as a response is handed over (`handing`), disarmed once gRPC asks for
    the next (`handed`): a reader that takes chunk after chunk, however slowly
    in all, is never cut.

    A handler waiting in gRPC's write is reached by neither its own end nor
    an abort, which waits behind the unsent data (ADR 0072): the call's task
    is cancelled, which ends the handler now (its place, page and cursor
    given back as a cancelled call's are), and the abort's status, sent
    first, reaches a client that reads on after what it had been sent."""

    def __init__(self, seconds: float, context: Context, *, tenant_id: str) -> None:
        self._seconds = seconds
        self._context = context
        self._tenant_id = tenant_id
        self._loop = asyncio.get_running_loop()
        # The call's task: gRPC writes each response in it.
        self._task = asyncio.current_task()
        # The call's own (its request id in the log line).
        self._call_context = contextvars.copy_context()
        self._timer: asyncio.TimerHandle | None = None
        self.rows = 0
        self.sent = 0
        # The seq the export reads up to (its checkpoint's size, or its range's
        # end), once known: where the rest of a cut export ends.
        self.upto = 0
        # Its manifest, its last response, was handed to gRPC: it is complete.
        self.complete = False

    def handing(self, response: pb.ExportResponse) -> None:
        self.rows = response.rows_so_far
        self.complete = response.HasField("manifest")
        self.sent += len(response.chunk)
        self._timer = self._loop.call_later(self._seconds, self._end, context=self._call_context)

    def handed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _end(self) -> None:
        self._timer = None
        log.warning(
            "ending an export of tenant %s: its client took no chunk for %g s"
            " (SEALTRAIL_EXPORT_STALL_SECONDS); %d rows, %d bytes sent",
            self._tenant_id,
            self._seconds,
            self.rows,
            self.sent,
        )
        error = Aborted(
            f"the export was ended: its client took no chunk for {self._seconds:g} s"
            " (SEALTRAIL_EXPORT_STALL_SECONDS); export again",
            reason="EXPORT_STALLED",
        )
        end_waiting_call(self._context, self._task, error)

    def cut_for_stop(self) -> None:
        """Ends the export now, UNAVAILABLE (`SERVER_STOPPING`): the server is
        stopping. As a stalled one is ended: its client, reading on, gets
        what it had been sent, then the status, which says how to export the
        rest (its rows carry their seqs). An export that has handed its
        manifest is left to end: its client has, or is about to have, the
        whole of it; cut, it got the manifest, then an error, and reported a
        complete export as failed."""
        if self.complete:
            return
        self.handed()
        self._loop.call_soon(self._cut, context=self._call_context)

    def _cut(self) -> None:
        if self._task is not None and self._task.done():
            return  # it ended meanwhile
        if self.complete:
            return  # it handed its manifest meanwhile
        log.info(
            "ending an export of tenant %s: the server is stopping; %d rows, %d bytes sent",
            self._tenant_id,
            self.rows,
            self.sent,
        )
        if self.upto:
            error = Unavailable(
                f"the server is stopping: the export was cut short after {self.rows} rows;"
                " export the rest (the same filter, format) with first_seq one past the last"
                f" seq received and last_seq {self.upto}, or export again",
                retry_after=_STOPPING_RETRY_SECONDS,
                reason="SERVER_STOPPING",
                metadata={"last_seq": str(self.upto)},
            )
        else:
            error = Unavailable(
                "the server is stopping: the export was cut short before its first row;"
                " export again",
                retry_after=_STOPPING_RETRY_SECONDS,
                reason="SERVER_STOPPING",
            )
        end_waiting_call(self._context, self._task, error)


class ExportRpcs:
    _db: Database
    _appender: Appender
    _changes: Changes
    _checkpointer: Checkpointer
    _clock: Callable[[], datetime]
    _export_limit: int
    _export_window: float
    _filter_details: FilterDetails
    exports_open: ExportsOpen
    _export_stall_seconds: float
    _removals_said: RemovalsSaid

    async def Export(
        self, request: pb.ExportRequest, context: Context
    ) -> AsyncIterator[pb.ExportResponse]:
        principal = current_principal()
        tenant_id = principal.tenant_id
        encoder = _encoder(request.format)
        event_filter = request_filter(request)
        seqs = seq_range(request)
        # Refused before it is recorded or counted against the rate.
        with self.exports_open.admitted(tenant_id):
            watch = StallWatch(self._export_stall_seconds, context, tenant_id=tenant_id)
            responses = self._exported(principal, request, encoder, event_filter, seqs, watch)
            with self.exports_open.running(watch):
                async with aclosing(responses):
                    async for response in responses:
                        watch.handing(response)
                        try:
                            yield response
                        finally:
                            watch.handed()

    async def _exported(
        self,
        principal: Principal,
        request: pb.ExportRequest,
        encoder: Encoder,
        event_filter: EventFilter,
        seqs: tuple[int, int] | None,
        watch: StallWatch,
    ) -> AsyncGenerator[pb.ExportResponse]:
        """The export's responses: its chunks, then its manifest; `watch`
        told the seq it reads up to."""
        tenant_id = principal.tenant_id
        if seqs is not None:
            await self._range_within_the_log(tenant_id, seqs[1])
        # Counted and recorded under one lock (across processes too): concurrent
        # exports once all counted the same past ones and all went ahead.
        # The filter as recorded, read before the lock: it may need a pooled
        # connection of its own (the tenant's settings), which a change holding
        # one must not wait for.
        recorded_filter = await self._filter_details(tenant_id, request.filter)
        async with self._changes.exclusive(
            tenant_id, _EXPORT_RATE_SUBJECT, caller=principal.token_id
        ) as conn:
            await self._check_export_rate(conn, tenant_id)
            export_event_id = await self._record_export(principal, request, recorded_filter)
        checkpoint = await self._checkpointer.issue(tenant_id)
        if checkpoint is None:
            # The export's own event is in the log, so the log is gone: erased
            # since that event was recorded.
            raise tenant_erased(tenant_id)
        size = checkpoint.tree_size

        digest, sent, rows, first, last = hashlib.sha256(), 0, 0, 0, 0
        buffer = bytearray(encoder.start())
        after, upto = (0, size) if seqs is None else (seqs[0] - 1, seqs[1])
        watch.upto = upto
        # The seqs of (after, upto] retention had removed, each page's counted
        # in the statement that reads its rows (ADR 0130): of an unfiltered
        # export, rows + removed is its range's size, a pass running or not.
        removed = RemovedSeqs()
        events = stream_events(
            self._db,
            tenant_id=tenant_id,
            event_filter=event_filter,
            after_seq=after,
            upto_seq=upto,
            removed=removed,
        )
        async with aclosing(events):  # a cancelled export gives its connection back now
            async for event in events:
                if encoder.shows_leaf_hash:
                    self._refuse_unless_of_its_leaf(tenant_id, event)
                try:
                    buffer += encoder.row(event.record, event.leaf_hash)
                except UNREADABLE as error:
                    # A record rewritten in the database into something no event
                    # is (Query's answer to the same is DATA_LOSS naming it).
                    raise unreadable_record(event.seq, error) from None
                rows, first, last = rows + 1, first or event.seq, event.seq
                if len(buffer) >= CHUNK_BYTES:
                    digest.update(buffer)
                    sent += len(buffer)
                    yield pb.ExportResponse(chunk=bytes(buffer), rows_so_far=rows)
                    buffer.clear()
        # Each page is read afresh, so an erasure that commits mid-export leaves
        # the rest unread: end without a manifest that would pass for complete.
        await refuse_if_erased_now(self._db, tenant_id)
        if removed.count:
            await self._refuse_removals_unaccounted(tenant_id, after, upto)
        buffer += encoder.end()
        if buffer:
            digest.update(buffer)
            sent += len(buffer)
            yield pb.ExportResponse(chunk=bytes(buffer), rows_so_far=rows)
        manifest = pb.ExportManifest(
            row_count=rows,
            byte_count=sent,
            sha256=digest.digest(),
            tree_size=size,
            first_seq=first,
            last_seq=last,
            root_hash=checkpoint.root_hash,
            checkpoint=checkpoint.note,
            export_event_id=export_event_id,
            media_type=encoder.media_type,
            range_first_seq=0 if seqs is None else seqs[0],
            range_last_seq=0 if seqs is None else seqs[1],
            # What it selected by, as its event records it (ADR 0130): signed,
            # a filtered export of a range no longer passes for the whole range.
            filter_json=canonical_json(recorded_filter, plain=False).decode(),
            # What retention had removed of them, signed: a purged seq of an
            # unfiltered range read as a row missing for any other reason.
            removed_count=removed.count,
        )
        manifest.statement = self._export_statement(manifest)
        yield pb.ExportResponse(manifest=manifest, rows_so_far=rows)

    def _refuse_unless_of_its_leaf(self, tenant_id: str, event: StoredEvent) -> None:
        """IntegrityFailure (DATA_LOSS) naming its seq unless `event`'s record
        hashes to its stored leaf, as the appender hashed it: a CSV or JSON
        row shows the two side by side, and a record a superuser rewrote, its
        leaf kept, was exported and its statement signed, which only a client
        rebuilding the rows found (helper-575). Logged and counted as the
        signer's refusals are. One SHA-256 a row."""
        if leaf_hash(event.record.encode()) == event.leaf_hash:
            return
        self._checkpointer.integrity_failure_met()
        log.error(
            "refusing to sign an export of tenant %s: the record at seq %d is not the one its"
            " leaf hashes: it was changed in the database behind the service's back"
            " (VerifyLog names every such record)",
            tenant_id,
            event.seq,
        )
        raise IntegrityFailure(
            f"refusing to sign the export: the record at seq {event.seq} is not the one its"
            " leaf hashes"
        )

    async def _refuse_removals_unaccounted(self, tenant_id: str, after: int, upto: int) -> None:
        """IntegrityFailure unless retention's records account for every seq
        of (after, upto] removed with its leaf kept: the statement signs them
        as removed by retention, and a superuser's DELETE passed for a purge
        (helper-555). Only of an export that read such seqs (few do): the
        records of a tenant's purges are read and their statements checked."""
        async with self._db.connection(tenant_id) as conn:
            await self._removals_said.refuse_unaccounted(
                conn,
                tenant_id,
                after_seq=after,
                upto_seq=upto,
                refusing="refusing to sign the export: ",
            )

    def _export_statement(self, manifest: pb.ExportManifest) -> str:
        """The manifest's statement, signed by the key that signs the
        checkpoints (ADR 0129): its checkpoint signs the log only, and its
        digest and counts, unsigned, were rewritten with the content into a
        pair that checked; and its filter, without which a filtered export of
        a range passed for the whole range, and what retention had removed of
        its seqs (ADR 0130, statement v2). Of the
        checkpoint's origin, size and root (that checkpoint was issued, and
        checked against what the key signed of the log, just before the
        content was read: ADR 0083)."""
        statement = ExportStatement(
            origin=manifest.checkpoint.split("\n", 1)[0],
            export_event_id=manifest.export_event_id,
            media_type=manifest.media_type,
            tree_size=manifest.tree_size,
            root_hash=manifest.root_hash,
            sha256=manifest.sha256,
            byte_count=manifest.byte_count,
            row_count=manifest.row_count,
            first_seq=manifest.first_seq,
            last_seq=manifest.last_seq,
            range_first_seq=manifest.range_first_seq,
            range_last_seq=manifest.range_last_seq,
            filter_sha256=hashlib.sha256(manifest.filter_json.encode()).digest(),
            removed_count=manifest.removed_count,
        )
        return sign_note(statement.text(), self._checkpointer.signer)

    async def _range_within_the_log(self, tenant_id: str, last_seq: int) -> None:
        """Refuse a range that ends beyond the log as it is before the export
        records itself: the export's own record is no event to ask for."""
        async with self._db.connection(tenant_id) as conn:
            size = await tree_size(conn, tenant_id)
        if last_seq > size:
            await refuse_if_erased_now(self._db, tenant_id)  # a log gone, not a short one
            raise FailedPrecondition(
                f"last_seq {last_seq} is beyond the log's size {size}",
                reason="BEYOND_LOG_SIZE",
                metadata={"tree_size": str(size)},
            )

    async def _check_export_rate(self, conn: Connection, tenant_id: str) -> None:
        """Refuses an export past the tenant's rate. Its count of the exports
        recorded waits for the events' table at most READ_LOCK_TIMEOUT, as a
        read outside a change does: with the table locked whole (VACUUM FULL,
        ALTER TABLE), an export sent nothing, not even an error, for as long."""
        busy = "the log's events table is locked by another session; retry"
        async with waiting_at_most(conn, READ_LOCK_TIMEOUT, busy=busy):
            count, oldest_age = await recent_exports(
                conn, tenant_id=tenant_id, window=self._export_window
            )
        if count >= self._export_limit:
            raise TenantLimitReached(
                f"at most {counted(self._export_limit, 'export')}"
                f" per {self._export_window:g} s per tenant",
                retry_after=max(1.0, self._export_window - oldest_age),
                reason="EXPORT_RATE_LIMITED",
                limit=self._export_limit,
                window_seconds=self._export_window,
            )

    async def _record_export(
        self, principal: Principal, request: pb.ExportRequest, recorded_filter: dict[str, Any]
    ) -> str:
        """Record the export in the log, attributed to the calling token."""
        name = _FORMAT_NAMES[request.format]
        return (
            await record_access(
                self._appender,
                principal,
                now=self._clock(),
                action="audit_log.exported",
                description=f"Exported audit events as {name}",
                details={
                    "format": name,
                    "filter": recorded_filter,
                    # The seq range asked for, which the export holds whole.
                    **(
                        {"first_seq": request.first_seq, "last_seq": request.last_seq}
                        if request.last_seq
                        else {}
                    ),
                },
            )
        ).event_id
