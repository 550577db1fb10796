"""AuditLogService: each method converts its request to domain values,
delegates, and converts the result back. Errors are raised as domain errors;
the guard interceptor maps them to gRPC statuses."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc, event_pb2

from ..alerts.evaluator import Evaluator
from ..auth.tokens import Authenticator
from ..domain.action_catalog import strict_refusal
from ..domain.errors import InvalidArgument, NotFound, SealtrailError
from ..domain.event import (
    Recorder,
    ValidEvent,
    correlate,
    located,
    parse_uuid,
    validate_event,
    wants_location,
)
from ..domain.filters import (
    page_size,
)
from ..domain.page_tokens import PageTokens
from ..domain.purge_summaries import SummarySeal
from ..domain.redaction import Redactor, refuse_secret_credential
from ..domain.sealing import SecretBox
from ..fair_share import FairShare
from ..forward.egress import EgressPolicy
from ..forward.forwarder import Forwarder
from ..geoip import CountryLocator
from ..integrity.checkpointer import Checkpointer
from ..retention.erasure import Eraser
from ..store.appended import Appended
from ..store.appender import Appender
from ..store.changes import Changes, refuse_if_erased_now
from ..store.database import Database
from ..store.db_errors import named
from ..store.events import (
    Order,
    ShownEvent,
    get_event,
    query_first_page,
    query_page,
    refuse_if_another_event,
    shown_bytes,
)
from ..store.long_reads import LongReads, long_read_capacity
from ..store.node_reader import NodeReader
from ..store.tenant_settings import SettingsCache
from ..stream.hub import StreamHub
from ..telemetry.context import current_correlation
from ..turns import Turns
from .action_catalog import ActionCatalogRpcs
from .alerting import AlertingRpcs
from .audited import FilterDetails, record_access
from .callers import from_this_console
from .convert import (
    caller_view,
    element_prefix,
    encoded_response,
    event_draft,
    event_from_record,
    request_filter,
    server_view,
    with_elements_unparsed,
)
from .counts import CountRpcs, count_details, count_shape
from .denials import Denials
from .errors import entry_error
from .export import ExportRpcs, ExportsOpen
from .forwarding import ForwardingRpcs
from .guard import current_principal
from .in_flight import InFlight
from .integrity import IntegrityRpcs
from .key_reads import KeyReads
from .received_range import ReceivedRangeRpcs
from .removals_said import RemovalsSaid
from .retention import RetentionRpcs
from .settings import SettingsRpcs
from .stream import StreamRpcs
from .tokens import TokenRpcs
from .undecodable import refusal
from .views import VIEW_COUNTS_HEADER, VIEW_HEADER, CountShape, Views, announced_counts

log = logging.getLogger(__name__)
A = TypeVar("A")
B = TypeVar("B")
M = TypeVar("M", bound=Message)

MAX_BATCH_EVENTS = 1000

_ORDERS: dict[int, Order] = {
    pb.ORDER_UNSPECIFIED: "newest",
    pb.ORDER_NEWEST_FIRST: "newest",
    pb.ORDER_OLDEST_FIRST: "oldest",
}

Context = grpc.aio.ServicerContext[Any, Any]


class AuditLogServicer(
    StreamRpcs,
    CountRpcs,
    ExportRpcs,
    IntegrityRpcs,
    ReceivedRangeRpcs,
    SettingsRpcs,
    TokenRpcs,
    RetentionRpcs,
    ForwardingRpcs,
    AlertingRpcs,
    ActionCatalogRpcs,
    audit_service_pb2_grpc.AuditLogServiceServicer,
):
    # Answered encoded, as Query is (registration.py): bytes, not the generated
    # servicer's responses.
    StreamEvents = StreamRpcs.StreamEvents  # type: ignore[assignment]

    def __init__(
        self,
        *,
        db: Database,
        appender: Appender,
        checkpointer: Checkpointer,
        hub: StreamHub,
        heartbeat_seconds: float = 5.0,
        export_limit: int = 30,
        export_window: float = 60.0,
        export_max_per_tenant: int = 4,
        export_max_per_process: int = 50,
        export_stall_seconds: float = 300.0,
        key_read_window: timedelta = timedelta(minutes=10),
        count_timeout: float = 30.0,
        query_timeout: float = 30.0,
        settings_cache: SettingsCache,
        redactor: Redactor | None = None,
        redaction_secret: bytes,
        authenticator: Authenticator | None = None,
        eraser: Eraser,
        forwarder: Forwarder,
        egress: EgressPolicy,
        secret_box: SecretBox,
        evaluator: Evaluator,
        retention_min_days: int = 0,
        retention_shortening_delay: float = 0.0,
        tenant_erasure: str = "admin",
        legal_hold_release: str = "admin",
        denials: Denials | None = None,
        in_flight_bytes: int = 2 * 1024 * 1024 * 1024,
        max_response_bytes: int = 96 * 1024 * 1024,
        changes: Changes | None = None,
        locator: CountryLocator | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`changes`: the process's one budget of configuration changes
        (store/changes.py), shared with its other makers of changes (the
        deployment-sink pass): a budget each, together they could take the
        connections the appender needs to record them (helper-189)."""
        self._in_flight = InFlight(in_flight_bytes)
        self._locator = locator
        self._max_response_bytes = max_response_bytes
        self._eraser = eraser
        self._retention_min_days = retention_min_days
        self._retention_shortening_delay = timedelta(seconds=retention_shortening_delay)
        self._tenant_erasure = tenant_erasure
        self._legal_hold_release = legal_hold_release
        self._denials = denials
        self._forwarder = forwarder
        self._evaluator = evaluator
        self._egress = egress
        self._box = secret_box
        self._hub = hub
        self._settings_cache = settings_cache
        self._redactor = redactor
        self._redaction_secret = redaction_secret
        self._page_tokens = PageTokens(redaction_secret)
        self._summary_seal = SummarySeal(redaction_secret)
        self._filter_details = FilterDetails(
            redactor, settings_cache, redaction_secret=redaction_secret
        )
        self._authenticator = authenticator
        self._signed_checkpoints = {}
        self._sizes_seen = {}
        self._node_reader = NodeReader(db)
        self._heartbeat_seconds = heartbeat_seconds
        self._export_limit = export_limit
        self._export_window = export_window
        self._export_stall_seconds = export_stall_seconds
        self.exports_open = ExportsOpen(
            per_tenant=export_max_per_tenant, per_process=export_max_per_process
        )
        self._db = db
        self._changes = changes if changes is not None else Changes(db)
        self._appender = appender
        self._checkpointer = checkpointer
        self._removals_said = RemovalsSaid(checkpointer, self._summary_seal)
        self._clock = clock
        self._key_reads = KeyReads(appender, clock=clock, window=key_read_window)
        self._count_timeout = count_timeout
        self._query_timeout = query_timeout
        # Counts, verifications and retention previews hold a bulk connection
        # for as long as they read: together, the bulk share but one.
        self._long_reads = LongReads(capacity=long_read_capacity(db.pool.max_size))
        # The console's searches whose counts their first page's record says.
        self._views = Views()
        # One verification of a tenant's log at a time, waiting for its turn
        # holding no connection.
        self._verifications = FairShare(capacity=self._long_reads.capacity, per_key=1)

    async def Record(  # type: ignore[override]  # encoded both ways (registration.py)
        self, request: bytes, context: Context
    ) -> bytes:
        """The request arrives as its encoding, counted before it is parsed;
        the answer leaves as the RecordResponse's encoding, the event's view
        as the appender stored it, not built again field by field."""
        with self._in_flight.holding(len(request), current_principal().tenant_id):
            return await self._record(_parsed(pb.RecordRequest, request))

    async def _record(self, request: pb.RecordRequest) -> bytes:
        principal = current_principal()
        tenant_id = principal.tenant_id
        draft = correlate(event_draft(request.event, "event"), current_correlation())
        recorder = Recorder(principal.token_id, principal.name)
        valid_event = self._located(validate_event(draft, now=self._clock(), recorder=recorder))
        refuse_secret_credential(valid_event, self._redactor)
        catalog = await self._strict_catalog(tenant_id)
        if catalog is not None:
            _refuse_uncatalogued(valid_event, catalog)
        [valid] = await self._redact(tenant_id, [valid_event])
        view = caller_view(valid, sent=request.event).SerializeToString()
        [outcome] = await self._appender.append(tenant_id, [valid], [view])
        if isinstance(outcome, SealtrailError):
            raise outcome
        event = _stored_event(outcome, view=view, tenant_id=tenant_id)
        deduplicated = _RECORDED_DEDUPLICATED if outcome.deduplicated else b""
        return element_prefix(_RECORDED_EVENT, len(event)) + event + deduplicated

    async def RecordBatch(  # type: ignore[override]  # encoded both ways (registration.py)
        self, request: bytes, context: Context
    ) -> bytes:
        """The request arrives as its encoding and the answer leaves as one:
        each entry is parsed, validated, redacted, viewed and encoded in turn,
        the loop given way every TURN_SECONDS. 1,000 events of many small
        details took 15 s, every other call of the process waiting, and then
        building and serializing the answer at once took a second more
        (helper-138). Counted before it is parsed (InFlight)."""
        with self._in_flight.holding(len(request), current_principal().tenant_id):
            return await self._record_batch(request)

    async def _record_batch(self, request: bytes) -> bytes:
        principal = current_principal()
        tenant_id = principal.tenant_id
        recorder = Recorder(principal.token_id, principal.name)
        turns = Turns()
        entries = await _batch_entries(request, turns)
        now = self._clock()
        correlation = current_correlation()
        results: list[bytes] = [b""] * len(entries)
        catalog = await self._strict_catalog(tenant_id)
        valid: list[ValidEvent] = []
        positions: list[int] = []
        for index, entry in enumerate(entries):
            path = f"events[{index}]"
            try:
                draft = correlate(event_draft(entry, path), correlation)
                event = self._located(validate_event(draft, now=now, path=path, recorder=recorder))
                refuse_secret_credential(event, self._redactor)
                if catalog is not None:
                    _refuse_uncatalogued(event, catalog)
                valid.append(event)
                positions.append(index)
            except InvalidArgument as error:
                results[index] = _entry_result(error)
            await turns.take()
        valid = await self._redact(tenant_id, valid)
        views: list[bytes] = []
        for index, event in zip(positions, valid, strict=True):
            views.append(caller_view(event, sent=entries[index]).SerializeToString())
            await turns.take()
        del entries
        self._check_answer_fits(results, views)
        outcomes = await self._appender.append(tenant_id, valid, views) if valid else []
        for index, view, outcome in zip(positions, views, outcomes, strict=True):
            results[index] = _entry_result(outcome, view=view, tenant_id=tenant_id)
            await turns.take()
        return b"".join(
            part for result in results for part in (element_prefix(_RESULTS, len(result)), result)
        )

    def _located(self, event: ValidEvent) -> ValidEvent:
        """The event with the country of its `context.ip`, found in the GeoIP
        database (SEALTRAIL_GEOIP_DB) when the caller sent none (ADR 0134).
        Inline: a lookup takes microseconds (docs/operations.md)."""
        if self._locator is None or (ip := wants_location(event)) is None:
            return event
        country = self._locator.country(ip)
        return event if country is None else located(event, country)

    def _check_answer_fits(self, refused: list[bytes], views: list[bytes]) -> None:
        """INVALID_ARGUMENT naming `events` if the answer of a batch whose
        entries were `refused` (their results) or stored as `views` could be
        over what the server sends. Redaction can make an event longer than
        sent: a batch under the request limit was committed and its answer,
        and every retry's, never arrived (helper-138)."""
        size = sum(len(result) + _RESULT_FRAME for result in refused if result)
        size += sum(len(view) + _SERVER_FIELDS_BYTES + _RESULT_FRAME for view in views)
        if size > self._max_response_bytes:
            raise InvalidArgument.field(
                "events",
                f"the answer would be {size} bytes, over the {self._max_response_bytes}"
                " limit; split the batch",
            )

    async def GetEvent(self, request: pb.GetEventRequest, context: Context) -> pb.GetEventResponse:
        event_id = parse_uuid(request.id)
        if event_id is None:
            raise InvalidArgument.field("id", "must be a UUID")
        principal = current_principal()
        await self._key_reads.recorded(principal, rpc="GetEvent", key={"id": str(event_id)})
        stored = await get_event(self._db, tenant_id=principal.tenant_id, event_id=event_id)
        if stored is None:
            # Not "no such event" for a tenant erased since (a read within the
            # window of one recorded writes nothing that would find it).
            await refuse_if_erased_now(self._db, principal.tenant_id)
            raise NotFound(f"no event {event_id}")
        event = event_from_record(stored.record, stored.leaf_hash)
        refuse_if_another_event(event_id, stored.seq, event.id or None)
        return pb.GetEventResponse(event=event)

    async def Query(  # type: ignore[override]  # answered encoded (registration.py)
        self, request: pb.QueryRequest, context: Context
    ) -> bytes:
        """A page of events, as the QueryResponse's encoding: the stored views
        are sent as they are, without a parse and a serialization (ADR 0026)."""
        principal = current_principal()
        tenant_id = principal.tenant_id
        event_filter = request_filter(request)
        order = _ORDERS.get(request.order)
        if order is None:
            raise InvalidArgument.field("order", f"unknown enum value {request.order}")
        limit = page_size(request.page_size)
        fingerprint = event_filter.fingerprint(tenant_id=tenant_id, order=order)
        after_seq = (
            self._page_tokens.decode(
                request.page_token, fingerprint=fingerprint, caller=principal.token_id
            )
            if request.page_token
            else None
        )
        read = functools.partial(
            query_page,
            self._db,
            tenant_id=tenant_id,
            event_filter=event_filter,
            order=order,
            page_bytes=QUERY_PAGE_BYTES,
            timeout=self._query_timeout,
        )
        if request.page_token:
            # One more row tells whether another page exists.
            rows = await read(limit=limit + 1, after_seq=after_seq)
            if not rows:
                # Erased since the first page (by a token this process still
                # trusts): an error, not an end that passes for the whole answer.
                await refuse_if_erased_now(self._db, tenant_id)
            page = rows[:limit]
            after = page[-1].seq if len(rows) > limit else None
        else:
            # A query is recorded once, not once per page, and before it is
            # answered (ADR 0012). The record is written while the page is read:
            # after it, its durable commit added to every first page (ADR 0023).
            # The counts the console's page draws beside it, said by this
            # record and not recorded again (ADR 0137, api/views.py).
            counts = _announced(from_this_console(VIEW_COUNTS_HEADER))
            details: dict[str, Any] = {
                "filter": await self._filter_details(tenant_id, request.filter),
                "order": order,
            }
            if counts:
                details["counts"] = [count_details(count) for count in counts]
            record = record_access(
                self._appender,
                principal,
                now=self._clock(),
                action="audit_log.queried",
                description="Queried audit events" + (" and counted them" if counts else ""),
                details=details,
            )
            first = query_first_page(
                self._db,
                tenant_id=tenant_id,
                event_filter=event_filter,
                order=order,
                limit=limit + _FIRST_PAGE_EXTRA,
                page_bytes=QUERY_PAGE_BYTES,
                timeout=self._query_timeout,
            )
            (rows, seen), recorded = await _together(first, record)
            if seen + 1 < recorded.seq and (order == "newest" or not _filled(rows, limit)):
                # Events committed after the read began and before its own
                # record (a batch the record queued behind): in the log before
                # it, and so in the answer, newest first ahead of what the read
                # saw, oldest first after it (if the read reached its end).
                if order == "newest":
                    missed = await read(limit=limit + _FIRST_PAGE_EXTRA, after_seq=recorded.seq,
                                        seq_above=seen)  # fmt: skip
                    rows = missed if _past_bytes(missed) else missed + rows
                else:
                    missed = await read(limit=limit + _FIRST_PAGE_EXTRA, after_seq=seen,
                                        seq_below=recorded.seq)  # fmt: skip
                    rows = rows + missed
            page, after = _page_before(rows, recorded.seq, limit=limit, order=order)
            if counts:
                view_id = self._views.open(
                    tenant_id=tenant_id,
                    token_id=principal.token_id,
                    event_filter=request.filter,
                    counts=counts,
                    record_seq=recorded.seq,
                )
                context.set_trailing_metadata(((VIEW_HEADER, view_id),))
        page, after = _within_bytes(page, after)
        next_token = (
            ""
            if after is None
            else self._page_tokens.encode(
                fingerprint=fingerprint, last_seq=after, caller=principal.token_id
            )
        )
        response = pb.QueryResponse(next_page_token=next_token)
        return encoded_response(response, "events", page, tenant_id=tenant_id)


def _announced(values: list[str | bytes]) -> list[CountShape]:
    """The counts a console's first page announces that the API would make:
    one it would refuse is left out, and recorded as its own if it is made."""
    shapes: list[CountShape] = []
    for request in announced_counts(values):
        try:
            shape = count_shape(request)
        except InvalidArgument:
            continue
        if shape not in shapes:
            shapes.append(shape)
    return shapes


# Rows a first page reads beyond its size: one tells whether another page
# exists, one stands in for its own access record should the read see it.
_FIRST_PAGE_EXTRA = 2
# The most bytes of events a page holds (one event, whatever its size, always
# goes): counted in events alone, 300 events of 64 KiB records (350 KB views)
# outgrew even this server's 96 MiB a message, after the query was recorded,
# and 50 passed the 4 MiB a gRPC client receives by default (helper-135).
QUERY_PAGE_BYTES = 1 << 20


def _within_bytes(page: list[ShownEvent], after: int | None) -> tuple[list[ShownEvent], int | None]:
    """The first events of `page` that fit in QUERY_PAGE_BYTES (at least one), and
    the seq the next page starts after (None: the end)."""
    total = 0
    for index, row in enumerate(page):
        total += shown_bytes(row)
        if total > QUERY_PAGE_BYTES and index:
            return page[:index], page[index - 1].seq
    return page, after


def _past_bytes(rows: list[ShownEvent]) -> bool:
    """Whether `rows` hold more than QUERY_PAGE_BYTES: a read that may have
    stopped at its bytes, before its limit or the last match."""
    return sum(map(shown_bytes, rows)) > QUERY_PAGE_BYTES


def _filled(rows: list[ShownEvent], limit: int) -> bool:
    """Whether a first page's read (of `limit` and `_FIRST_PAGE_EXTRA` rows)
    stopped at its rows or its bytes, before the last match it could see."""
    return len(rows) >= limit + _FIRST_PAGE_EXTRA or _past_bytes(rows)


def _page_before(
    rows: list[ShownEvent], own_seq: int, *, limit: int, order: Order
) -> tuple[list[ShownEvent], int | None]:
    """A first page as the log stood before its own access record (at
    `own_seq`), from `rows` read while that record was written: the page and
    the seq the next page starts after (None: the end). The read may have seen
    the record and whatever committed after it; both are left out, so the
    answer is the same whichever came first, on this page and the next."""
    before = [row for row in rows if row.seq < own_seq]
    page = before[:limit]
    if len(before) > limit:
        return page, page[-1].seq
    if order == "newest" and _filled(rows, limit):
        # Newer events filled the read (its rows, or its bytes: `query_page`
        # stops there): older ones remain below what it reached.
        return page, page[-1].seq if page else own_seq
    return page, None


async def _together(first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]) -> tuple[A, B]:
    """Both results, awaited concurrently. If either fails, the other is
    cancelled and the failure raised as it is, not inside an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as group:
            one = group.create_task(first)
            two = group.create_task(second)
    except BaseExceptionGroup as failed:
        for other in failed.exceptions[1:]:
            # `named`: a database error whole quotes the values it refused (DETAIL).
            log.warning("also failed while answering: %s: %s", type(other).__name__, named(other))
        raise failed.exceptions[0] from None
    return one.result(), two.result()


def _refuse_uncatalogued(event: ValidEvent, catalog: Mapping[str, str | None]) -> None:
    """INVALID_ARGUMENT if the tenant's `strict_actions` refuses the event
    against its action `catalogue` (ADR 0148)."""
    if (
        violation := strict_refusal(event.action, event.category, catalog, path=event.path)
    ) is not None:
        raise InvalidArgument([violation])


def _parsed(kind: type[M], request: bytes) -> M:
    """`request` parsed as a `kind`; INVALID_ARGUMENT naming the field at
    fault (else `request`) if it is not one."""
    try:
        return kind.FromString(request)
    except DecodeError as error:
        raise refusal(kind.DESCRIPTOR, request, error, field="request") from None


async def _batch_entries(request: bytes, turns: Turns) -> list[event_pb2.Event]:
    """The events of a RecordBatchRequest's encoding, parsed one at a time."""
    try:
        unparsed: Any = _UNPARSED_BATCH.FromString(request)
    except DecodeError as error:
        raise refusal(_UNPARSED_BATCH.DESCRIPTOR, request, error, field="request") from None
    count = len(unparsed.events)
    if not 1 <= count <= MAX_BATCH_EVENTS:
        raise InvalidArgument.field("events", f"has {count} entries; send 1 to {MAX_BATCH_EVENTS}")
    entries = []
    for index, encoded in enumerate(unparsed.events):
        try:
            entries.append(event_pb2.Event.FromString(encoded))
        except DecodeError as error:
            raise refusal(
                event_pb2.Event.DESCRIPTOR, encoded, error, field=f"events[{index}]"
            ) from None
        await turns.take()
    return entries


def _entry_result(
    outcome: Appended | SealtrailError, *, view: bytes = b"", tenant_id: str = ""
) -> bytes:
    """The encoding of a RecordBatchResult: `outcome`'s error, or the appended
    event as `_stored_event` gives it (as Record answers it: the whole view
    the appender stored, not the server's fields serialized again)."""
    if isinstance(outcome, SealtrailError):
        return pb.RecordBatchResult(error=entry_error(outcome)).SerializeToString()
    event = _stored_event(outcome, view=view, tenant_id=tenant_id)
    deduplicated = _DEDUPLICATED if outcome.deduplicated else b""
    return element_prefix(_RESULT_EVENT, len(event)) + event + deduplicated


# RecordBatchRequest with its events left as their encodings.
_UNPARSED_BATCH: Final = with_elements_unparsed(pb.RecordBatchRequest, "events")
_RESULTS = pb.RecordBatchResponse.DESCRIPTOR.fields_by_name["results"].number
_RESULT_EVENT = pb.RecordBatchResult.DESCRIPTOR.fields_by_name["event"].number
_DEDUPLICATED = pb.RecordBatchResult(deduplicated=True).SerializeToString()
# What frames a result among the results, at most: its key and length, and
# an event's key and length within it, `deduplicated` after.
_RESULT_FRAME = 2 * (1 + 5) + len(_DEDUPLICATED)
# The most the server's fields add to an event's caller view in an answer.
_SERVER_FIELDS_BYTES = len(
    server_view(
        tenant_id="t" * 63,
        event_id=str(uuid.UUID(int=0)),
        seq=2**63 - 1,
        received_at=datetime.max.replace(tzinfo=UTC),
        leaf_hash=bytes(32),
    )
)


def _stored_event(appended: Appended, *, view: bytes, tenant_id: str) -> bytes:
    """The encoding of the answer for an appended event: its whole view as
    the appender stored it, or its caller view `view` (serialized) followed
    by the server's fields (messages merge by concatenation), which is the
    same; for a repeated idempotency key, the original as stored."""
    if appended.deduplicated or appended.received_at is None:
        return event_from_record(appended.record, appended.leaf_hash).SerializeToString()
    if appended.view is not None:
        return appended.view
    return view + _server_fields(appended, appended.received_at, tenant_id)


def _server_fields(appended: Appended, received_at: datetime, tenant_id: str) -> bytes:
    """What the server assigned `appended` (received at `received_at`), as
    `server_view` serializes it: after its caller view, its whole view."""
    return server_view(
        tenant_id=tenant_id,
        event_id=appended.event_id,
        seq=appended.seq,
        received_at=received_at,
        leaf_hash=appended.leaf_hash,
    )


_RECORDED_EVENT = pb.RecordResponse.DESCRIPTOR.fields_by_name["event"].number
_RECORDED_DEDUPLICATED = pb.RecordResponse(deduplicated=True).SerializeToString()
