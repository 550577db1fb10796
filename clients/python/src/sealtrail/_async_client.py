"""The asyncio client of the AuditLogService."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, Self, TypeVar, Unpack, overload

import grpc
from google.protobuf import field_mask_pb2

from sealtrail._arguments import checked_methods
from sealtrail._checkpoint_check import CheckpointCheck, SavedCheckpoint, issued_at_of
from sealtrail._convert import (
    CATALOG_UPDATED,
    HOLD_PLACED,
    HOLD_RELEASED,
    INT64_MAX,
    KEEP,
    POLICY_UPDATED,
    RULE_UPDATED,
    SETTINGS_UPDATED,
    SINK_UPDATED,
    TOKEN_REVOKED,
    Attempts,
    BatchEntryResult,
    Days,
    EventCounts,
    EventFields,
    GroupBy,
    IpRecording,
    Keep,
    Measure,
    Order,
    RecordResult,
    RedactionMode,
    TokenRole,
    action_catalog_request,
    action_description_request,
    at_least_zero,
    authorization_metadata,
    batch_request,
    batch_results,
    build_event_of_checked_fields,
    carried,
    channel_options,
    checked_seq_range,
    checkpoint_request,
    consistency_request,
    count_request,
    create_token_request,
    dead_letters_request,
    entries_to_resend,
    event_counts,
    inclusion_request,
    ip_recording_request,
    merge_resent,
    own_change,
    personal_data_fields_request,
    query_request,
    received_range_request,
    record_request,
    record_result,
    redaction_mode_value,
    replay_request,
    resend_request,
    retention_policy,
    settings_request,
    stream_request,
    stream_start,
    strict_actions_request,
    update_mask,
)
from sealtrail._correlation import (
    aio_correlation_interceptors,
    current_request_id,
    on_behalf_of_metadata,
    person_metadata,
    request_id,
)
from sealtrail._erasure_check import ErasureReceiptCheck, verify_erasure_receipt
from sealtrail._errors import (
    ClientClosedError,
    EventLoopError,
    InvalidArgumentError,
    NotFoundError,
    SealtrailError,
    UnauthenticatedError,
    closed_during_call,
    failed_call,
    stream_ended,
    stream_metadata,
)
from sealtrail._export import ExportFile, ExportFormat, export_format
from sealtrail._export_check import hold_rows_to_their_leaves
from sealtrail._paged import Item, PagedReq, PageResp, first_items_async
from sealtrail._report import ActivityReport, ReportPlan
from sealtrail._retry import (
    COUNT_TIMEOUT,
    ENTRY_RETRYABLE,
    ERASURE_RETRYABLE,
    ERASURE_TIMEOUT,
    EXPORT_NOT_RETRIED,
    PREVIEW_RETRYABLE,
    RETRYABLE,
    WHOLE_LOG_TIMEOUT,
    RetryPolicy,
    erased_meanwhile,
    grpc_timeout,
    positive_seconds,
)
from sealtrail.v1 import (
    access_pb2,
    alerting_pb2,
    audit_service_pb2,
    audit_service_pb2_grpc,
    catalog_pb2,
    event_pb2,
    forwarding_pb2,
    integrity_pb2,
    retention_pb2,
    settings_pb2,
)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Done = TypeVar("_Done")


async def _in_thread(
    step: Callable[[], _Done], *, undo: Callable[[_Done], object] | None = None
) -> _Done:
    """`step()` in a worker thread, waited for to its end even when the task
    is cancelled meanwhile; the cancellation is raised then, after
    `undo(result)` (in a thread too) if given. A thread cannot be stopped:
    an export's file step left to run on (a large file's fsync takes
    seconds) worked on a file its export had removed under it, after the
    caller was told the export was over, and one cancelled while it made the
    temporary file left that file, open, for good."""
    work = asyncio.ensure_future(asyncio.to_thread(step))
    cancelled: asyncio.CancelledError | None = None
    while not work.done():
        try:
            await asyncio.wait([work])
        except asyncio.CancelledError as exc:  # the task's: the step runs on, waited for
            cancelled = exc
    if cancelled is None:
        return work.result()
    if undo is not None and work.exception() is None:
        await _in_thread(functools.partial(undo, work.result()))
    raise cancelled


class _ChangeAnswer(Protocol):
    """The answer of a change: the id of the event that records it."""

    event_id: str


_Changed = TypeVar("_Changed", bound=_ChangeAnswer)


def _started(
    start: Callable[[_Req], AsyncIterable[_Resp]], request: _Req, retrying: SealtrailError | None
) -> tuple[AsyncIterable[_Resp], AsyncIterator[_Resp]]:
    """The stream `start` makes of `request`: its call, and its messages. On a
    channel closed (grpc.aio's "Channel is closed.", a given channel's) or a
    client closed while the stream waited to retry, the failure is the one it
    was retrying (`retrying`); before the first attempt, that closing's."""
    try:
        call = start(request)
        return call, aiter(call)
    except (grpc.aio.UsageError, ClientClosedError) as exc:
        if retrying is None:  # closed before the first attempt
            raise
        raise retrying from exc  # closed while the client waited to retry


def _cancel(call: AsyncIterable[_Resp]) -> None:
    """Ends a stream's call, if it has not ended: as its generator ends
    (`aclose()`, `contextlib.aclosing`, a `break` once the event loop closes
    the generator left). Closing the generator that read it left grpc.aio's
    call open, on the server too (its place among the tenant's streams, its
    subscription; an export's place), until the client's channel was
    closed: the garbage collector's runs made no difference, and a service
    that left a stream now and then ran out of the tenant's streams."""
    cancel = getattr(call, "cancel", None)
    if cancel is not None:
        cancel()


async def _next_message(
    call: AsyncIterator[_Resp], retrying: SealtrailError | None
) -> _Resp | None:
    """A stream's next message, None at its end. On a channel with
    interceptors (the client's own has them) grpc.aio starts the call when it
    is first read: a channel closed while the stream waited to reconnect fails
    here, not where the call was made, and the failure is the one it was
    retrying, not grpc.aio's UsageError (helper-137)."""
    try:
        return await anext(call, None)
    except grpc.aio.UsageError as exc:  # grpc.aio's "Channel is closed."
        if retrying is None:  # closed before the first attempt
            raise
        raise retrying from exc


_Item = TypeVar("_Item")


class _Stop:
    """How a stream's generator learns that another task closed it: the
    flag, and the call it reads now, cancelled as it is set."""

    def __init__(self) -> None:
        self._call: AsyncIterable[Any] | None = None
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        if self._call is not None:
            _cancel(self._call)

    def watch(self, call: AsyncIterable[Any]) -> None:
        """`call` is the one read now: cancelled at once if stopped already."""
        self._call = call
        if self.stopped:
            _cancel(call)

    def ended(self) -> bool:
        """Whether a cancellation met inside the stream is its closing by
        another task (its call cancelled, which grpc.aio raises as
        CancelledError), not one of the reading task's own."""
        task = asyncio.current_task()
        return self.stopped and not (task is not None and task.cancelling())


class _Closable(AsyncGenerator[_Item, None], Generic[_Item]):
    """A stream's generator that any task may close. An async generator's
    own aclose() from another task, while its reader waited inside it for
    the next message, raised RuntimeError ("asynchronous generator is
    already running") and did nothing: the call stayed open, on the server
    too, and its reader waited on. Here the call is cancelled, and the
    reader's loop ends as it would have ended closed between messages (one
    waiting to retry ends at the end of its wait, before another attempt).
    Cancelling the reading task ends it too, that task cancelled."""

    def __init__(self, run: Callable[[_Stop], AsyncGenerator[_Item, None]]) -> None:
        self._stop = _Stop()
        self._run = run(self._stop)

    async def __anext__(self) -> _Item:
        return await self._run.__anext__()

    async def asend(self, value: None) -> _Item:
        return await self._run.asend(value)

    @overload
    async def athrow(
        self,
        typ: type[BaseException],
        val: BaseException | object = None,
        tb: TracebackType | None = None,
        /,
    ) -> _Item: ...
    @overload
    async def athrow(
        self, typ: BaseException, val: None = None, tb: TracebackType | None = None, /
    ) -> _Item: ...
    async def athrow(
        self,
        typ: type[BaseException] | BaseException,
        val: BaseException | object = None,
        tb: TracebackType | None = None,
        /,
    ) -> _Item:
        if isinstance(typ, BaseException):
            return await self._run.athrow(typ)
        return await self._run.athrow(typ, val, tb)

    async def aclose(self) -> None:
        self._stop.stop()
        try:
            await self._run.aclose()
        except RuntimeError:
            if not getattr(self._run, "ag_running", False):
                raise
            # Read in another task (or closed from inside, by a callback):
            # its call cancelled, it ends there.


@checked_methods
class AsyncAuditClient:
    """Records and reads the audit log of the tenant bound to `token`.

    Every call gets `timeout` seconds per attempt (more than 0; `float("inf")`: no
    deadline) and is retried on UNAVAILABLE,
    DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (with RetryInfo) and CANCELLED (a server
    stopping mid-call; not once the client is closed), up to `max_attempts` attempts;
    with `total_timeout`, within that many seconds in all, attempts and waits included
    (each attempt gets what is left, and no retry starts that could not begin in time).
    A count and a retention preview wait longer per attempt (60 s, an hour), within
    `total_timeout` too; `erase_tenant` and `verify_log` wait up to their own `timeout`
    (an hour), which `total_timeout` does not cut short, nor streams and exports.
    Failures raise SealtrailError subclasses.

    TLS: `tls=True` verifies the server against the system's roots, or against
    `root_certificates` (PEM); mutual TLS adds `client_certificate` and `client_key`
    (PEM). A given `channel` is used instead of one built
    from `target` and `tls`, and is not closed; `sleep`, `rng` and `clock` are for tests.

    Every call on the client's own channel carries the caller's OpenTelemetry trace
    context and a request id (see `sealtrail.request_id`). A given channel is used as
    it was made: make it with `interceptors=sealtrail.aio_correlation_interceptors()`.

    A service reading the log for people of its own (its customers' audit-log page)
    says on whose behalf: `on_behalf_of` (a person's id) for every call of the client,
    or `with sealtrail.on_behalf_of(user_id):` for the calls inside, on any channel.
    Sealtrail's records of those calls carry it in `details.on_behalf_of`, as the
    service's word; the token stays their actor.

    The client's own channel is made in the event loop that calls, again in each later
    one (one `asyncio.run` after another); a call while another loop, running in another
    thread, still uses it is EventLoopError: one client per event loop running at once.
    A given channel serves the loop it was made in.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str,
        timeout: float = 10.0,
        total_timeout: float | None = None,
        max_attempts: int = 5,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
        channel: grpc.aio.Channel | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_behalf_of: str | None = None,
    ) -> None:
        # Before a channel is made.
        metadata = authorization_metadata(token) + on_behalf_of_metadata(on_behalf_of)
        positive_seconds(timeout, "timeout")
        if total_timeout is not None:
            positive_seconds(total_timeout, "total_timeout")
        self._total_timeout = total_timeout
        self._clock = clock
        self._policy = RetryPolicy(
            max_attempts=max_attempts,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            rng=rng or random.Random(),
        )
        self._owns_channel = channel is None
        if (client_certificate is None) != (client_key is None):
            raise ValueError("client_certificate and client_key go together")
        self._target = target
        self._credentials = (
            grpc.ssl_channel_credentials(root_certificates, client_key, client_certificate)
            if tls or root_certificates is not None or client_certificate is not None
            else None
        )
        self._options = channel_options(initial_backoff=initial_backoff, max_backoff=max_backoff)
        self._channel = channel
        self._stub_made: audit_service_pb2_grpc.AuditLogServiceAsyncStub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the own channel's
        self._metadata = metadata
        self._timeout = timeout
        self._sleep = sleep
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel, unless it was passed in; calls in flight are not
        retried after this."""
        self._closed = True
        if self._owns_channel and self._channel is not None:
            if self._loop is not _running_loop():
                # Another loop's, closed or stopped: closing it would need that
                # loop; grpc closes it when it is collected.
                self._channel = None
                return
            await self._channel.close(None)

    @property
    def _stub(self) -> audit_service_pb2_grpc.AuditLogServiceAsyncStub:
        """The service's stub, on the client's channel. A grpc.aio channel
        belongs to the event loop current when it is made, so the client's own
        is made in the loop that calls: at the first call (a client made at a
        module's import failed every call in `asyncio.run`'s loop, helper-118),
        and again in each later loop (one used under one `asyncio.run` after
        another failed every call of the later ones, helper-137). Refused once
        the client is closed: a channel made then would never be closed."""
        if self._closed:
            raise ClientClosedError
        loop = asyncio.get_running_loop()
        if self._owns_channel and loop is not self._loop:
            self._channel, self._stub_made = self._channel_in(loop), None
        if self._stub_made is None:
            assert self._channel is not None  # given, or made above
            self._stub_made = audit_service_pb2_grpc.AuditLogServiceStub(self._channel)
        return self._stub_made

    def _channel_in(self, loop: asyncio.AbstractEventLoop) -> grpc.aio.Channel:
        """A new channel of the client's own, in `loop`. The last loop's is
        dropped, not closed: closing it takes that loop, closed or stopped by
        now (grpc closes it when it is collected). A loop still running, in
        another thread, still uses it: EventLoopError, as closing it would
        cancel that loop's calls in flight."""
        if self._loop is not None and self._loop.is_running():
            raise EventLoopError
        # grpc-stubs types interceptors as a stub to cast to.
        interceptors: Any = aio_correlation_interceptors()
        channel = (
            grpc.aio.insecure_channel(
                self._target, options=self._options, interceptors=interceptors
            )
            if self._credentials is None
            else grpc.aio.secure_channel(
                self._target, self._credentials, options=self._options, interceptors=interceptors
            )
        )
        self._loop = loop
        return channel

    async def record(
        self, event: event_pb2.Event | None = None, /, **fields: Unpack[EventFields]
    ) -> RecordResult:
        """Records one event, given as an Event or as keyword shorthand (see EventFields)."""
        if event is not None and fields:
            raise TypeError("pass either an Event or keyword fields, not both")
        if event is None:
            event = build_event_of_checked_fields(**fields)
        request = record_request(event)
        attempts = Attempts()
        response = await self._call(self._stub.Record, request, attempts=attempts)
        return record_result(response, attempts)

    async def record_batch(self, events: Sequence[event_pb2.Event]) -> list[BatchEntryResult]:
        """Records up to 1,000 events; returns a result or an error per event, in order.
        Entries refused alone for a passing reason (UNAVAILABLE: not written) are
        sent again under their idempotency keys, as the retry policy says."""
        request = batch_request(events)
        callers = current_request_id()
        # One request id for the call and its entries' resends, as for a call's
        # attempts: the one the caller set, else the call's own.
        with request_id(callers) as sent_id:
            own = None if callers else sent_id
            return await self._record_batch(request, own)

    async def _record_batch(
        self, request: audit_service_pb2.RecordBatchRequest, own_id: str | None
    ) -> list[BatchEntryResult]:
        # total_timeout bounds the call and its entries' resends together.
        ends = None if self._total_timeout is None else self._clock() + self._total_timeout
        attempts = Attempts(own_id=own_id)
        answer = await self._call(self._stub.RecordBatch, request, until=ends, attempts=attempts)
        results = batch_results(answer, attempts)
        attempt = 1
        while places := entries_to_resend(results):
            refused = results[places[0]].error
            assert refused is not None
            delay = self._backoff(attempt, refused, codes=ENTRY_RETRYABLE)
            if delay is None or (ends is not None and self._clock() + delay >= ends):
                break
            await self._sleep(delay)
            attempt += 1
            attempts = Attempts(own_id=own_id)
            try:
                resent = await self._call(
                    self._stub.RecordBatch,
                    resend_request(request, places),
                    until=ends,
                    attempts=attempts,
                )
            except SealtrailError as error:  # the entries written before keep their results
                merge_resent(results, places, error)
                break
            except ClientClosedError:  # closed meanwhile: the results so far, as they are
                break
            merge_resent(results, places, batch_results(resent, attempts))
        return results

    async def get_event(self, id: str) -> event_pb2.Event:
        """Returns one event by id; NotFoundError if the tenant has no such event."""
        request = audit_service_pb2.GetEventRequest(id=id)
        return (await self._call(self._stub.GetEvent, request)).event

    def query(
        self,
        filter: event_pb2.EventFilter | None = None,
        *,
        order: Order = "newest",
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[event_pb2.Event]:
        """Yields every matching event, page after page, stopping after `limit` if given."""
        query_request(filter, order, page_size, "")  # its order checked at the call
        if self._closed:  # at the call, as every other call's: not at its first event
            raise ClientClosedError
        if limit is not None and limit < 0:  # it yielded nothing, as if nothing matched
            raise ValueError(f"limit: must be 0 or more (None: every match), not {limit}")
        return self._query(filter, order, page_size, limit)

    def _query(
        self,
        filter: event_pb2.EventFilter | None,
        order: Order,
        page_size: int,
        limit: int | None,
    ) -> AsyncIterator[event_pb2.Event]:
        """query's events, read as they are taken (the checks ran at the call)."""
        return first_items_async(
            lambda size, token: self.query_page(
                filter, order=order, page_size=size, page_token=token
            ),
            lambda page: page.events,
            page_size=page_size,
            limit=limit,
        )

    async def query_page(
        self,
        filter: event_pb2.EventFilter | None = None,
        *,
        order: Order = "newest",
        page_size: int = 100,
        page_token: str = "",
    ) -> audit_service_pb2.QueryResponse:
        """Returns one page of matching events and the token of the next ("" after the last)."""
        request = query_request(filter, order, page_size, page_token)
        return await self._call(self._stub.Query, request)

    async def count_events(
        self,
        filter: event_pb2.EventFilter | None = None,
        *,
        group_by: GroupBy = "",
        limit: int = 0,
        time_zone: str = "",
        measure: Measure = "",
        group_by_detail: str = "",
        measure_detail: str = "",
        timeout: float = COUNT_TIMEOUT,
    ) -> EventCounts:
        """Counts the events that match `filter`: the total, and with `group_by`
        (action, actor, category, outcome, severity, resource_type, day, hour,
        recorded_by, ip, country, resource: a resource's type and id, keyed
        as `resource_key` writes them, `resource_of_key` reads them;
        actor_type: `user`, `api_key`, `service`, `system`; http_route, http_status:
        the API request's route and status code, `503`) the largest
        `limit` groups (0: 50; at most 1,000), by count, then key;
        days and hours of occurred_at in time order: UTC's, or with
        `time_zone` (an IANA name, `Europe/Berlin`) that zone's local days
        (23 or 25 hours when the clocks change) and hours, keyed by their
        start with its offset (`2026-03-29T00:00:00+01:00`; INVALID_ARGUMENT
        for a name that is no zone). `group_by="action"`
        lists the actions the log holds. With `measure` (and a `group_by`),
        each group also says a figure of its events' `context.duration_ms`,
        in milliseconds, in `value`: `duration_avg` (the mean),
        `duration_p50`, `duration_p95`, `duration_p99` (percentiles,
        interpolated) or `duration_max`, over the `measured` events that
        have a duration (a group with none: 0 of 0). `group_by="detail"`
        groups by the value of the top-level details key `group_by_detail`
        (`model`; "" for events without it); `detail_sum`, `detail_avg`,
        `detail_max` measure the numbers under `measure_detail` (`tokens`),
        passing over values that are no number. Recorded as a query is. Waited for up
        to `timeout` seconds: longer than the server gives a count (30 s by
        default), so that its refusal to count longer (RpcFailedError,
        FAILED_PRECONDITION, reason COUNT_TIMEOUT: narrow the time range)
        arrives rather than a deadline; not retried once cut off by that
        deadline, as another attempt would count anew. Within the client's
        total_timeout, if it has one."""
        request = count_request(
            filter, group_by, limit, time_zone, measure, group_by_detail, measure_detail
        )
        response = await self._call(
            self._stub.CountEvents, request, timeout=timeout, retry_on=PREVIEW_RETRYABLE
        )
        return event_counts(response)

    async def activity_report(
        self,
        filter: event_pb2.EventFilter | None = None,
        *,
        top: int = 10,
        timeout: float = COUNT_TIMEOUT,
    ) -> ActivityReport:
        """A summary of the activity of the events that match `filter` (every
        event if None): totals, counts by category, outcome and severity, the
        `top` (1 to 1,000) actors, actions, resource types and resources, the security
        alerts fired (`security.alert` events) and the first and last event,
        as an ActivityReport (its `to_dict()` JSON's, `to_markdown()` a
        ticket's). Read against a signed checkpoint, signed now if the log
        has grown: the period ends at its time, or at the filter's
        `occurred_before` if earlier, so the report's own reads (recorded as
        queries are) are never counted in it. At most 12 RPCs, whatever the
        size of the log (docs/reports.md); each count waits up to `timeout`
        seconds, as `count_events` does. One call for the client's
        total_timeout."""
        plan = ReportPlan(filter, top=top)
        ends = None if self._total_timeout is None else self._clock() + self._total_timeout
        try:
            signed = (
                await self._call(self._stub.GetCheckpoint, plan.checkpoint_request(), until=ends)
            ).checkpoint
        except NotFoundError:  # asked fresh: the log is empty
            signed = None
        if not plan.read_against(signed):
            return plan.report()
        counts: dict[str, audit_service_pb2.CountEventsResponse] = {}
        unavailable: list[str] = []  # the groupings the server does not know
        for name, request in plan.count_requests().items():
            try:
                counts[name] = await self._call(
                    self._stub.CountEvents,
                    request,
                    timeout=timeout,
                    retry_on=PREVIEW_RETRYABLE,
                    until=ends,
                )
            except InvalidArgumentError as error:
                if not plan.may_leave_out(name, error):
                    raise
                unavailable.append(name)
        if not counts["category"].total:
            return plan.report(counts, unavailable=unavailable)
        alerts, alerts_total = None, None
        if (alerts_request := plan.alerts_request()) is not None:
            alerts = await self._call(self._stub.Query, alerts_request, until=ends)
            if alerts.next_page_token:
                alerts_total = (
                    await self._call(
                        self._stub.CountEvents,
                        plan.alerts_count_request(),
                        timeout=timeout,
                        retry_on=PREVIEW_RETRYABLE,
                        until=ends,
                    )
                ).total
        pages = tuple(
            [await self._call(self._stub.Query, end, until=ends) for end in plan.end_requests()]
        )
        return plan.report(
            counts, alerts=alerts, alerts_total=alerts_total, ends=pages, unavailable=unavailable
        )

    async def get_checkpoint(
        self, *, tree_size: int = 0, fresh: bool = False
    ) -> integrity_pb2.SignedCheckpoint:
        """The latest signed checkpoint, one signed now if `fresh` and the log has
        grown, or the one at `tree_size`."""
        request = checkpoint_request(tree_size, fresh)
        return (await self._call(self._stub.GetCheckpoint, request)).checkpoint

    async def get_inclusion_proof(
        self, *, event_id: str = "", seq: int = 0, tree_size: int = 0, include_purged: bool = False
    ) -> integrity_pb2.GetInclusionProofResponse:
        """The record of one event (by id or seq) and its inclusion proof at
        `tree_size` (0: the latest checkpoint, signed now if needed). An event
        removed by retention is NotFoundError (reason PURGED), or with
        `include_purged` an answer with `purged` set, its leaf hash and no record."""
        return await self._call(
            self._stub.GetInclusionProof,
            inclusion_request(event_id, seq, tree_size, include_purged),
        )

    async def get_consistency_proof(
        self, *, old_size: int, new_size: int = 0
    ) -> integrity_pb2.GetConsistencyProofResponse:
        """A proof that the log at `old_size` is a prefix of the log at `new_size`."""
        request = consistency_request(old_size, new_size)
        return await self._call(self._stub.GetConsistencyProof, request)

    async def check_checkpoint(
        self, saved: str, *, key: str | Sequence[str], fresh: bool = False
    ) -> CheckpointCheck:
        """Whether the log a checkpoint saved earlier signs (`saved`, the
        signed note's text, as `get_checkpoint().note` or a bundle's
        checkpoint.txt holds it) is a prefix of the log today: both
        checkpoints signed by `key` (verifier key text, or several for a log
        whose key was rotated), and the consistency proof between them
        verified here. Today's is the latest checkpoint, signed up to
        SEALTRAIL_CHECKPOINT_INTERVAL ago (its size, `latest_size`, may be
        short of the events recorded since; when it was signed:
        `latest_issued_at`); with `fresh`, one signed now if the log has
        grown. CheckpointError (OtherLogError for another tenant's
        log) when it cannot be checked; a rewritten log is a result, with
        `consistent` False and its `reason`. One call for the client's
        total_timeout: its two RPCs (today's checkpoint, then the proof)
        together end within it."""
        check = SavedCheckpoint.open(saved, key)
        ends = None if self._total_timeout is None else self._clock() + self._total_timeout
        today = integrity_pb2.GetCheckpointRequest(fresh=fresh)
        signed = (await self._call(self._stub.GetCheckpoint, today, until=ends)).checkpoint
        latest, signers = check.latest(signed.note)
        proof: Sequence[bytes] = ()
        if check.needs_proof(latest):
            # Between the two sizes signed: new_size 0 would be whatever the
            # server's latest is by the time it answers.
            between = integrity_pb2.GetConsistencyProofRequest(
                old_size=check.checkpoint.tree_size, new_size=latest.tree_size
            )
            proof = (await self._call(self._stub.GetConsistencyProof, between, until=ends)).proof
        return check.verdict(latest, signers, proof, issued_at=issued_at_of(signed))

    async def get_verifier_keys(self) -> list[integrity_pb2.VerifierKey]:
        """The keys that verify checkpoint signatures, the active one first."""
        request = integrity_pb2.GetVerifierKeysRequest()
        return list((await self._call(self._stub.GetVerifierKeys, request)).keys)

    def list_purged_leaves(
        self, *, tree_size: int = 0, after_seq: int = 0
    ) -> AsyncIterator[integrity_pb2.PurgedLeaf]:
        """Yields the leaf hash of every event retention removed, in seq order,
        after seq `after_seq` and up to `tree_size` (0: the log as it is now),
        page after page."""
        at_least_zero(tree_size, "tree_size", "the log as it is now")
        carried(tree_size, "tree_size")
        at_least_zero(after_seq, "after_seq", "from the first seq")
        # None after any seq past the log: past what the field carries, the
        # largest it carries is sent (protobuf refused it, naming nothing).
        after_seq = min(after_seq, INT64_MAX)
        if self._closed:  # at the call, as every other call's: not at its first leaf
            raise ClientClosedError
        return self._purged_leaves(tree_size, after_seq)

    async def _purged_leaves(
        self, tree_size: int, after_seq: int
    ) -> AsyncIterator[integrity_pb2.PurgedLeaf]:
        """list_purged_leaves's leaves: a generator's checks ran at its first leaf."""
        token = ""
        while True:
            request = integrity_pb2.ListPurgedLeavesRequest(
                tree_size=tree_size, page_size=1000, page_token=token, after_seq=after_seq
            )
            page = await self._call(self._stub.ListPurgedLeaves, request)
            for leaf in page.leaves:
                yield leaf
            token, tree_size = page.next_page_token, page.tree_size  # pages of one size
            if not token:
                return

    async def get_received_range(
        self, *, since: datetime, until: datetime | None = None
    ) -> audit_service_pb2.GetReceivedRangeResponse:
        """The seqs of the events received from `since` to `until` (None: the
        server's time now; a time after it, when the period has not ended, is
        InvalidArgumentError): from just after the last event the log holds of
        those received before `since` (the events retention removed just before
        the period's first left, which may have been received in it, are in it
        as leaves) to the one before the first received at or after `until`.
        `first_seq` is `last_seq + 1` when there is none. With
        several server processes, a clock behind the others can put an event
        on the wrong side of an end (docs/streaming-and-export.md)."""
        request = received_range_request(since, until)
        return await self._call(self._stub.GetReceivedRange, request)

    async def get_tenant_settings(self) -> settings_pb2.TenantSettings:
        """Admin: the tenant's settings (redaction mode)."""
        request = settings_pb2.GetTenantSettingsRequest()
        return (await self._call(self._stub.GetTenantSettings, request)).settings

    async def set_redaction_mode(
        self, mode: RedactionMode, *, etag: str = ""
    ) -> settings_pb2.UpdateTenantSettingsResponse:
        """Admin: write secrets found in new events as `[REDACTED:<rule>]`
        ("replace") or as their HMAC under the tenant's key ("hmac"). A change
        is recorded in the log; asking for the current mode changes nothing.
        With `etag` (the settings', as read), it applies only to those
        settings: AbortedError if they changed since; not retried, as for
        `set_retention_policy`; retried without, its earlier attempt's change
        is found as that method finds it."""
        request = settings_pb2.UpdateTenantSettingsRequest(
            settings=settings_pb2.TenantSettings(
                redaction_mode=redaction_mode_value(mode), etag=etag
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["redaction_mode"]),
        )
        return await self._change(
            self._stub.UpdateTenantSettings, request, SETTINGS_UPDATED, retry=not etag
        )

    async def _change(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Changed],
        request: _Req,
        action: str,
        *,
        retry: bool = True,
    ) -> _Changed:
        """A change's answer, its `event_id` that of the change's record: for a
        retry that found its lost attempt's change made (and so answered no
        id), that attempt's, found by one query (`own_change`). The query is
        part of the call: within what is left of the client's total_timeout
        (it had a bound of its own, and the call took up to twice the one
        documented), and its failure says the call was retried (`retried`):
        the change was made."""
        # total_timeout bounds the change and its lookup together.
        ends = None if self._total_timeout is None else self._clock() + self._total_timeout
        attempts = Attempts()
        answer = await self._call(method, request, retry=retry, until=ends, attempts=attempts)
        if (lookup := own_change(answer.event_id, attempts, action)) is not None:
            try:
                found = await self._call(self._stub.Query, lookup, until=ends)
            except SealtrailError as error:
                error.retried = True
                raise
            answer.event_id = found.events[0].id if found.events else ""
        return answer

    async def set_strict_actions(
        self, on: bool, *, etag: str = ""
    ) -> settings_pb2.UpdateTenantSettingsResponse:
        """Admin: turn `strict_actions` on or off. On, Record and RecordBatch
        refuse (InvalidArgumentError naming `event.action` or
        `event.category`) an event whose action the tenant's catalogue does
        not hold or whose category differs from the one it declares
        (`set_action_description`); Sealtrail's own records are never
        refused. Applies at once on the server that made the change, within
        SEALTRAIL_SETTINGS_CACHE_SECONDS (10 s) on the others. Recorded as
        `tenant.settings_updated`; `etag` and retries as `set_redaction_mode`."""
        request = strict_actions_request(on, etag)
        return await self._change(
            self._stub.UpdateTenantSettings, request, SETTINGS_UPDATED, retry=not etag
        )

    async def set_ip_recording(
        self, mode: IpRecording, *, etag: str = ""
    ) -> settings_pb2.UpdateTenantSettingsResponse:
        """Admin: how much of a client's address (`context.ip`) new events
        keep: "full" (the default), "truncated" (an IPv4 address's /24, an
        IPv6 address's /48) or "none". Applied after the server located the
        event's country from the whole address, which is then never stored.
        Events already stored are never rewritten. Applies at once on the
        server that made the change, within SEALTRAIL_SETTINGS_CACHE_SECONDS
        (10 s) on the others. Recorded as `tenant.settings_updated`; `etag`
        and retries as `set_redaction_mode`."""
        request = ip_recording_request(mode, etag)
        return await self._change(
            self._stub.UpdateTenantSettings, request, SETTINGS_UPDATED, retry=not etag
        )

    async def set_personal_data_fields(
        self, names: Sequence[str], *, etag: str = ""
    ) -> settings_pb2.UpdateTenantSettingsResponse:
        """Admin: the field names whose values this tenant's events must not
        keep (`["ssn", "date_of_birth", "phone"]`; `[]` clears them),
        compared with keys as the server's SEALTRAIL_REDACT_FIELDS are. A
        value under such a key, or assigned to such a name in text, is
        written as `[REDACTED:personal_data]`, or in HMAC mode as its HMAC
        (`hash_secret` finds it). At most 64 names of 1 to 64 characters
        (InvalidArgumentError naming `settings.personal_data_fields[i]`);
        names alike once compared are kept once. Events already stored are
        never rewritten. Applies at once on the server that made the change,
        within SEALTRAIL_SETTINGS_CACHE_SECONDS (10 s) on the others.
        Recorded as `tenant.settings_updated`; `etag` and retries as
        `set_redaction_mode`."""
        request = personal_data_fields_request(names, etag)
        return await self._change(
            self._stub.UpdateTenantSettings, request, SETTINGS_UPDATED, retry=not etag
        )

    async def update_tenant_settings(
        self,
        *,
        redaction_mode: RedactionMode | None = None,
        strict_actions: bool | None = None,
        personal_data_fields: Sequence[str] | None = None,
        ip_recording: IpRecording | None = None,
        etag: str = "",
    ) -> settings_pb2.UpdateTenantSettingsResponse:
        """Admin: change each setting given (not None) in one update, as
        `set_redaction_mode`, `set_strict_actions`, `set_personal_data_fields`
        and `set_ip_recording` change one: all of them or, refused, none (an
        InvalidArgumentError names each field refused), recorded once as
        `tenant.settings_updated`. ValueError when none is given. `etag` and
        retries as `set_redaction_mode`."""
        request = settings_request(
            redaction_mode=redaction_mode,
            strict_actions=strict_actions,
            personal_data_fields=personal_data_fields,
            ip_recording=ip_recording,
            etag=etag,
        )
        return await self._change(
            self._stub.UpdateTenantSettings, request, SETTINGS_UPDATED, retry=not etag
        )

    async def set_action_description(
        self,
        action: str,
        description: str | Literal[Keep.KEEP] | None = KEEP,
        *,
        category: str | Literal[Keep.KEEP] | None = KEEP,
    ) -> catalog_pb2.SetActionDescriptionResponse:
        """Admin: say what `action` means in your tenant's action catalogue
        (1 to 500 characters, stored as redaction leaves it; "" or None
        clears it) and the `category` its events must have (`"security"`;
        "" or None: any), enforced while `set_strict_actions(True)` is on.
        Only what is given changes: a description left out keeps the stored
        one, a category left out keeps the declared one (a typo fixed never
        clears it); at least one is given. An action left with neither
        leaves the catalogue. Each change is recorded as
        `action_catalog.updated` with the values before it; the same entry
        again changes and records nothing (no `event_id`). Retried, its
        earlier attempt's change is found as `set_redaction_mode`'s is."""
        request = action_description_request(action, description, category)
        return await self._change(self._stub.SetActionDescription, request, CATALOG_UPDATED)

    async def action_catalog(
        self, *, limit: int = 1000, page_token: str = "", timeout: float = COUNT_TIMEOUT
    ) -> catalog_pb2.ListActionCatalogResponse:
        """One page of your tenant's action catalogue, by action: every action
        the log holds with its count and latest occurrence, and its
        description if an admin gave one; then described actions not recorded
        yet (count 0), at most `limit` (0: 50; at most 1,000) entries after
        `page_token`'s page ("": the first), and the `next_page_token` of the
        next ("" after the last; `truncated` then false). Read as a count is,
        recorded (its first page) as a query is, and waited for as
        `count_events` is; every page counts the log of the first's
        `tree_size`."""
        request = action_catalog_request(limit, page_token)
        return await self._call(
            self._stub.ListActionCatalog, request, timeout=timeout, retry_on=PREVIEW_RETRYABLE
        )

    def action_catalog_entries(
        self, *, page_size: int = 1000, limit: int | None = None, timeout: float = COUNT_TIMEOUT
    ) -> AsyncIterator[catalog_pb2.ActionCatalogEntry]:
        """Yields every entry of your tenant's action catalogue, by action,
        page after page (`action_catalog`'s pages of `page_size`, each within
        `timeout`), stopping after `limit` if given: one listing, recorded
        once, its counts all of one log."""
        action_catalog_request(page_size, "")  # its page size checked at the call
        if self._closed:  # at the call, as every other call's: not at its first entry
            raise ClientClosedError
        if limit is not None and limit < 0:  # it yielded nothing, as if there were none
            raise ValueError(f"limit: must be 0 or more (None: every entry), not {limit}")
        return self._action_catalog_entries(page_size, limit, timeout)

    def _action_catalog_entries(
        self, page_size: int, limit: int | None, timeout: float
    ) -> AsyncIterator[catalog_pb2.ActionCatalogEntry]:
        """action_catalog_entries's entries, read as they are taken (the checks
        ran at the call)."""
        return first_items_async(
            lambda size, token: self.action_catalog(limit=size, page_token=token, timeout=timeout),
            lambda page: page.entries,
            page_size=page_size,
            limit=limit,
        )

    async def hash_secret(self, value: str) -> str:
        """Admin: `hmac-sha256:<hex>`, what redaction in HMAC mode writes for
        `value`, to search the log for a secret you hold."""
        request = settings_pb2.HashSecretRequest(value=value)
        return (await self._call(self._stub.HashSecret, request)).hmac

    async def create_token(
        self, role: TokenRole, *, name: str = "", expire_time: datetime | None = None
    ) -> access_pb2.CreateTokenResponse:
        """Admin: a new API token of your tenant. Its `secret` is in this
        answer only; keep it. With `expire_time` (timezone-aware; the future,
        at most two years ahead) every call with it is refused from then on
        (UnauthenticatedError, reason TOKEN_EXPIRED). Not retried: a retry
        could create a second token."""
        request = create_token_request(role, name=name, expire_time=expire_time)
        return await self._call(self._stub.CreateToken, request, retry=False)

    async def list_tokens(self) -> list[access_pb2.ApiToken]:
        """Admin: every API token of your tenant, oldest first, revoked ones
        included (never their secrets), each with its `expire_time` and its
        (coarse) `last_use_time`."""
        request = access_pb2.ListTokensRequest(page_size=1000)
        return await self._every_page(self._stub.ListTokens, request, lambda page: page.tokens)

    async def revoke_token(self, token_id: str) -> access_pb2.RevokeTokenResponse:
        """Admin: revoke a live token of your tenant; calls with it fail within
        the server's token cache interval (at once on the server that revoked it).
        A token revoked already is answered as it is, with no `event_id`; a
        retry whose earlier attempt revoked it, its answer lost, answers that
        revocation's, found as `set_retention_policy` finds its change."""
        request = access_pb2.RevokeTokenRequest(token_id=token_id)
        return await self._change(self._stub.RevokeToken, request, TOKEN_REVOKED)

    async def get_retention_policy(self) -> retention_pb2.GetRetentionPolicyResponse:
        """Admin: the tenant's retention policy and legal hold."""
        request = retention_pb2.GetRetentionPolicyRequest()
        return await self._call(self._stub.GetRetentionPolicy, request)

    async def set_retention_policy(
        self,
        default: Days = "forever",
        *,
        categories: Mapping[str, Days] | None = None,
        action_prefixes: Mapping[str, Days] | None = None,
        etag: str = "",
    ) -> retention_pb2.UpdateRetentionPolicyResponse:
        """Admin: replace the retention policy. Days are a number or a preset
        ("30d", "90d", "180d", "1y", "forever"); overrides go by category name
        (`{"authentication": "1y"}`) and by action prefix (`{"rag.*": 90}`).
        The change and its record in the log commit together, or neither
        does. With `etag` (the
        policy's, as read), it applies only to that policy: AbortedError if it
        changed since. Such a call is not retried: a retry of one that applied
        would find its own change and fail; read the policy again instead. A
        retried call (without `etag`) whose earlier attempt applied, its
        answer lost, finds the policy as asked: it answers the `event_id` of
        that attempt's change, found by one query, as recorded queries are."""
        policy = retention_policy(default, categories or {}, action_prefixes or {}, etag=etag)
        request = retention_pb2.UpdateRetentionPolicyRequest(policy=policy)
        return await self._change(
            self._stub.UpdateRetentionPolicy, request, POLICY_UPDATED, retry=not etag
        )

    async def preview_retention_policy(
        self,
        default: Days = "forever",
        *,
        categories: Mapping[str, Days] | None = None,
        action_prefixes: Mapping[str, Days] | None = None,
        etag: str = "",
    ) -> retention_pb2.PreviewRetentionPolicyResponse:
        """Admin: what `set_retention_policy` with these arguments would remove
        if it applied now, rule by rule, changing and recording nothing (a dry
        run). Counting reads at most 1,000,000 events (then `at_least`): waited
        for up to an hour (within the client's total_timeout, if it has one).
        Retried as a read is, but not once cut off by that deadline: another
        attempt would count anew, and take as long."""
        policy = retention_policy(default, categories or {}, action_prefixes or {}, etag=etag)
        request = retention_pb2.PreviewRetentionPolicyRequest(policy=policy)
        return await self._call(
            self._stub.PreviewRetentionPolicy,
            request,
            timeout=WHOLE_LOG_TIMEOUT,
            retry_on=PREVIEW_RETRYABLE,
        )

    async def set_legal_hold(
        self, on: bool, *, reason: str = "", etag: str = ""
    ) -> retention_pb2.SetLegalHoldResponse:
        """Admin: place (a reason is required) or release the tenant's legal
        hold; while it is on, retention removes nothing and erasure is refused.
        With `etag` (the hold's, as read), it applies only to that hold:
        AbortedError if it changed since; not retried, as for
        `set_retention_policy`; retried without, its earlier attempt's change
        is found as that method finds it."""
        request = retention_pb2.SetLegalHoldRequest(on=on, reason=reason, etag=etag)
        return await self._change(
            self._stub.SetLegalHold, request, HOLD_PLACED if on else HOLD_RELEASED, retry=not etag
        )

    async def erase_tenant(
        self, confirm_tenant_id: str, *, timeout: float = ERASURE_TIMEOUT
    ) -> retention_pb2.ErasureReceipt:
        """Admin: irreversibly remove every event, token, checkpoint and setting
        of your tenant; `confirm_tenant_id` must be its id, typed back. Returns
        the receipt with the log's final signed checkpoint; keep it. A large
        tenant takes minutes: the call waits up to `timeout` seconds (an hour),
        not the client's timeout, which would cut it off and roll it back.
        Retried only after UNAVAILABLE (see ERASURE_RETRYABLE); a retry that
        finds the token unknown raises UnauthenticatedError saying the erasure
        probably completed on an earlier attempt."""
        request = retention_pb2.EraseTenantRequest(confirm_tenant_id=confirm_tenant_id)
        try:
            answer = await self._call(
                self._stub.EraseTenant,
                request,
                timeout=timeout,
                retry_on=ERASURE_RETRYABLE,
                own_deadline=True,
            )
        except UnauthenticatedError as error:
            if not error.retried:
                raise
            raise erased_meanwhile(error) from error
        return answer.receipt

    async def verify_erasure_receipt(
        self,
        receipt: retention_pb2.ErasureReceipt | str | bytes | Mapping[str, Any],
        *,
        key: str | Sequence[str],
    ) -> ErasureReceiptCheck:
        """Check an erasure receipt (as `erase_tenant` returns it, or its
        JSON) offline against `key`, the deployment's verifier key you pinned
        (or several, after a rotation), never the server's: what its signature
        proves (who erased which log, when, at which size and root). Asks the
        server nothing. Raises an ErasureReceiptError: UnsignedReceiptError for
        a receipt kept before receipts were signed (or written by hand),
        ReceiptKeyError, ReceiptSignatureError, ReceiptMismatchError, or
        NewerReceiptError for one a newer Sealtrail signed
        (`sealtrail.verify_erasure_receipt`, docs/integrity.md)."""
        return verify_erasure_receipt(receipt, key=key)

    async def create_sink(
        self, sink: forwarding_pb2.Sink, *, from_beginning: bool = False
    ) -> forwarding_pb2.CreateSinkResponse:
        """Admin: start forwarding matching events to a destination (see
        build_sink); from the next event recorded, or the whole log with
        `from_beginning`. Recorded as `sink.created`. Not retried."""
        request = forwarding_pb2.CreateSinkRequest(sink=sink, from_beginning=from_beginning)
        return await self._call(self._stub.CreateSink, request, retry=False)

    async def get_sink(self, sink_id: str) -> forwarding_pb2.Sink:
        """Admin: one sink and its delivery state (cursor, lag, last error)."""
        request = forwarding_pb2.GetSinkRequest(id=sink_id)
        return (await self._call(self._stub.GetSink, request)).sink

    async def list_sinks(self) -> list[forwarding_pb2.Sink]:
        """Admin: the tenant's sinks and their delivery state."""
        response = await self._call(self._stub.ListSinks, forwarding_pb2.ListSinksRequest())
        return list(response.sinks)

    async def update_sink(
        self, sink: forwarding_pb2.Sink, *, fields: Iterable[str] = ()
    ) -> forwarding_pb2.UpdateSinkResponse:
        """Admin: change the sink `sink.id`: the `fields` named (the update
        mask: "name", "filter", "format", "paused", or the destination's kind
        such as "webhook"), or, with none named, its whole definition (empty
        secrets keep the current ones). A change that leaves the destination
        out keeps it, secrets included. The cursor stays. Recorded as
        `sink.updated`. A `sink` that carries an etag (as one read with
        get_sink does) changes only that sink: AbortedError if it changed
        since, and not retried; clear `sink.etag` to change whatever it is
        now. Without an etag, retried: a repeat changes nothing."""
        request = forwarding_pb2.UpdateSinkRequest(sink=sink, update_mask=update_mask(fields))
        return await self._change(self._stub.UpdateSink, request, SINK_UPDATED, retry=not sink.etag)

    async def delete_sink(
        self, sink_id: str, *, etag: str = ""
    ) -> forwarding_pb2.DeleteSinkResponse:
        """Admin: stop and delete a sink. Recorded as `sink.deleted`. With
        `etag` (the sink's, as read), only if it is still that sink:
        AbortedError if it changed since. Not retried, with or without `etag`:
        an attempt whose answer was lost may have deleted it."""
        request = forwarding_pb2.DeleteSinkRequest(id=sink_id, etag=etag)
        return await self._call(self._stub.DeleteSink, request, retry=False)

    async def list_dead_letters(
        self, sink_id: str, *, limit: int | None = None
    ) -> list[forwarding_pb2.DeadLetter]:
        """Admin: every dead letter of a sink (the events its destination
        refused for good), oldest first, read a page of 1,000 at a time; with
        `limit` (1 to 1,000), the oldest `limit` of them alone, in one call (a
        sink that drained a backlog into dead letters may hold 100,000)."""
        request = dead_letters_request(sink_id, limit)
        if limit is not None:
            return list((await self._call(self._stub.ListDeadLetters, request)).dead_letters)
        return await self._every_page(
            self._stub.ListDeadLetters, request, lambda page: page.dead_letters
        )

    async def replay_sink(
        self,
        sink_id: str,
        *,
        seq_range: tuple[int, int] | None = None,
        window: tuple[datetime, datetime] | None = None,
        dead_letter_id: str = "",
    ) -> forwarding_pb2.ReplaySinkResponse:
        """Admin: send a seq range, a window of occurred_at or a dead letter's
        events to the sink again. Recorded as `sink.replay_requested`. Not retried."""
        request = replay_request(
            sink_id, seq_range=seq_range, window=window, dead_letter_id=dead_letter_id
        )
        return await self._call(self._stub.ReplaySink, request, retry=False)

    async def create_alert_rule(
        self, rule: alerting_pb2.AlertRule
    ) -> alerting_pb2.CreateAlertRuleResponse:
        """Admin: create an alert rule (see build_alert_rule); it watches the
        events recorded from then on. Recorded as `alert_rule.created`. Not retried."""
        request = alerting_pb2.CreateAlertRuleRequest(rule=rule)
        return await self._call(self._stub.CreateAlertRule, request, retry=False)

    async def list_alert_rules(self) -> list[alerting_pb2.AlertRule]:
        """Admin: the tenant's alert rules, with how often each fired."""
        request = alerting_pb2.ListAlertRulesRequest()
        return list((await self._call(self._stub.ListAlertRules, request)).rules)

    async def update_alert_rule(
        self, rule: alerting_pb2.AlertRule, *, fields: Iterable[str] = ()
    ) -> alerting_pb2.UpdateAlertRuleResponse:
        """Admin: change the alert rule `rule.id` in place: the `fields` named
        (the update mask: "name", "severity", "sink_ids", "disabled", or the
        condition's kind such as "threshold"), or, with none named, its whole
        definition. Recorded as `alert_rule.updated`; a changed condition
        applies from the next event. A `rule` that carries an etag (as one
        read with list_alert_rules does) changes only that rule: AbortedError
        if it changed since, and not retried; clear `rule.etag` to change
        whatever it is now. Without an etag, retried: a repeat changes nothing,
        and an earlier attempt's change is found as `set_retention_policy`
        finds it."""
        request = alerting_pb2.UpdateAlertRuleRequest(rule=rule, update_mask=update_mask(fields))
        return await self._change(
            self._stub.UpdateAlertRule, request, RULE_UPDATED, retry=not rule.etag
        )

    async def delete_alert_rule(
        self, rule_id: str, *, etag: str = ""
    ) -> alerting_pb2.DeleteAlertRuleResponse:
        """Admin: delete an alert rule. Recorded as `alert_rule.deleted`. With
        `etag` (the rule's, as read), only if it is still that rule:
        AbortedError if it changed since. Not retried, with or without `etag`:
        an attempt whose answer was lost may have deleted it."""
        request = alerting_pb2.DeleteAlertRuleRequest(id=rule_id, etag=etag)
        return await self._call(self._stub.DeleteAlertRule, request, retry=False)

    async def verify_log(
        self, *, check_views: bool = False, timeout: float = WHOLE_LOG_TIMEOUT
    ) -> integrity_pb2.VerifyLogResponse:
        """Admin: have the server recheck every record, leaf and checkpoint root;
        with `check_views`, also that what Query shows of each event is what its
        record says (slower). It reads the whole log: waited for up to `timeout`
        seconds (an hour), and not retried (each attempt would begin the scan
        again; each is recorded)."""
        request = integrity_pb2.VerifyLogRequest(check_views=check_views)
        return await self._call(
            self._stub.VerifyLog, request, retry=False, timeout=timeout, own_deadline=True
        )

    def export_stream(
        self,
        filter: event_pb2.EventFilter | None = None,
        *,
        format: ExportFormat = "ndjson",
        first_seq: int = 0,
        last_seq: int = 0,
    ) -> AsyncGenerator[audit_service_pb2.ExportResponse, None]:
        """The raw Export stream: content chunks, then the manifest. With
        `first_seq` and `last_seq`, only the events of that seq range (both
        included). Retried as a call is (the server's delay, max_attempts)
        until its first message arrives: refused for the exports the tenant
        or the server has open (TOO_MANY_EXPORTS), say. Not once under way,
        nor refused for the tenant's export rate (EXPORT_RATE_LIMITED, its
        `retry_after` the window's rest): see EXPORT_NOT_RETRIED. Any task
        may close it (see _Closable)."""
        # Built here, its format and range checked at the call, not at the first message.
        checked_seq_range(first_seq, last_seq)
        if self._closed:  # so is the client: refused as every other call is
            raise ClientClosedError
        request = audit_service_pb2.ExportRequest(
            filter=filter, format=export_format(format), first_seq=first_seq, last_seq=last_seq
        )
        return _Closable(lambda stop: self._export_messages(stop, request))

    async def _export_messages(
        self, stop: _Stop, request: audit_service_pb2.ExportRequest
    ) -> AsyncGenerator[audit_service_pb2.ExportResponse, None]:
        """export_stream's messages, until `stop` says another task closed it."""
        if self._closed:
            raise ClientClosedError
        metadata, sent_id = stream_metadata(self._metadata, owns_channel=self._owns_channel)
        attempt, retrying = 1, None
        while not stop.stopped:
            received = False
            call, messages = _started(
                lambda r: self._stub.Export(r, metadata=metadata), request, retrying
            )
            stop.watch(call)
            try:
                while (message := await _next_message(messages, retrying)) is not None:
                    received = True
                    yield message
                return
            except grpc.RpcError as exc:
                if stop.stopped:  # cancelled by an aclose() from another task
                    return
                error = failed_call(exc, sent_id=sent_id, retried=retrying is not None)
                under_way = received or error.reason in EXPORT_NOT_RETRIED
                delay = None if under_way else self._backoff(attempt, error)
                if delay is None:
                    raise error from exc
            except asyncio.CancelledError:
                if stop.ended():  # its call cancelled by an aclose() from another task
                    return
                if (closed := self._closed_under(sent_id, retried=retrying is not None)) is None:
                    raise
                raise closed from None
            finally:  # the caller stopped (aclose(), an error): the export ends now
                _cancel(call)
            retrying = error
            await self._sleep(delay)
            attempt += 1

    async def export(
        self,
        path: str | os.PathLike[str],
        *,
        format: ExportFormat = "ndjson",
        filter: event_pb2.EventFilter | None = None,
        progress: Callable[[int, int], None] | None = None,
        manifest_file: bool = False,
        first_seq: int = 0,
        last_seq: int = 0,
    ) -> audit_service_pb2.ExportManifest:
        """Export matching events to `path`, checked against the manifest's
        checksum before it is renamed into place. `progress(rows, bytes)` is
        called after each chunk. The file is written in a worker thread: its
        writes and its final fsync (of a file of gigabytes, perhaps) would
        hold up the event loop. With `manifest_file`, the manifest is kept
        beside it too, as FILE.manifest.json: its digest, counts and the log's
        signed checkpoint, for whoever receives the file to check later
        (`check_checkpoint`, `sealtrail checkpoint --check`); without, the
        manifest an earlier export kept there, if any, is removed as the new
        file takes its name (it described the content replaced). With
        `first_seq` and `last_seq`, only the events of that seq range (both
        included); the manifest's range_first_seq and range_last_seq repeat it.
        Each row of a CSV or JSON export is then held to its own leaf_hash
        (in a thread: it reads the file), as `sealtrail verify` holds it:
        RowNotOfItsLeafError (an ExportError) naming the seq of a record
        rewritten behind its leaf that the server signed (one before it
        refused to), ExportMismatchError for a row not as the server writes
        it; the file (and its manifest) are kept, as the evidence of it.
        A CSV's cells longer than Excel keeps, which it cuts short without a
        word as it opens the file: `sealtrail.cells_past_excel(path)` (in a
        thread: it reads the file)."""
        # Each step waited for to its end, cancelled or not (see _in_thread).
        target = await _in_thread(
            functools.partial(ExportFile, Path(path), manifest_beside=manifest_file),
            undo=lambda made: made.__exit__(None, None, None),
        )
        try:
            messages = self.export_stream(
                filter, format=format, first_seq=first_seq, last_seq=last_seq
            )
            async with contextlib.aclosing(messages):  # its call ended with it
                async for message in messages:
                    await _in_thread(functools.partial(target.receive, message))
                    if progress is not None:
                        progress(target.rows, target.bytes_written)
            manifest = target.result()
        finally:
            await _in_thread(functools.partial(target.__exit__, None, None, None))
        await _in_thread(functools.partial(hold_rows_to_their_leaves, Path(path), manifest))
        return manifest

    def stream(
        self,
        filter: event_pb2.EventFilter | None = None,
        *,
        after_seq: int | None = None,
        since: datetime | None = None,
        on_heartbeat: Callable[[int], None] | None = None,
        on_purged: Callable[[audit_service_pb2.PurgedRange], None] | None = None,
    ) -> AsyncGenerator[event_pb2.Event, None]:
        """Yields matching events after seq `after_seq` (or received since `since`,
        not both: ValueError; or from now), then live ones as they commit, until
        the caller stops. After a disconnect it resumes from its last cursor, so
        nothing is skipped or repeated. `on_heartbeat(cursor)` sees the idle
        heartbeats; `on_purged(range)`, if given, each range of seqs retention
        removed that the stream passes over (announced between the events around
        it, and instead of a PURGED error for a cursor whose next event was
        removed). Once connected, it reconnects while the errors are worth
        retrying (UNAVAILABLE, ..., and an end the server chose) however many,
        backing off more (to max_backoff, or the server's retry delay) while it
        makes no progress, so it outlasts a server's restart; before it first
        connects it gives up as a call does (max_attempts), and any other error
        ends it. Its call ends as the generator does: `await stream.aclose()`
        (or `contextlib.aclosing`) ends it at once, from any task: a reader
        waiting inside it in another task sees its loop end."""
        # Checked here, not in the generator: its checks ran at its first event.
        if after_seq is not None and since is not None:  # `since` went unheeded
            raise ValueError("a stream starts after_seq or since, not both")
        if after_seq is not None:
            stream_start(after_seq)
        if self._closed:  # refused as every other call is, not at the first event
            raise ClientClosedError
        return _Closable(
            lambda stop: self._stream_events(
                stop,
                filter,
                after_seq=after_seq,
                since=since,
                on_heartbeat=on_heartbeat,
                on_purged=on_purged,
            )
        )

    async def _stream_events(
        self,
        stop: _Stop,
        filter: event_pb2.EventFilter | None,
        *,
        after_seq: int | None,
        since: datetime | None,
        on_heartbeat: Callable[[int], None] | None,
        on_purged: Callable[[audit_service_pb2.PurgedRange], None] | None,
    ) -> AsyncGenerator[event_pb2.Event, None]:
        """stream's events, until `stop` says another task closed it."""
        if self._closed:
            raise ClientClosedError
        cursor, attempt, retrying, connected = after_seq, 1, None, False
        metadata, sent_id = stream_metadata(self._metadata, owns_channel=self._owns_channel)
        while not stop.stopped:
            request = stream_request(filter, cursor, since, announce_purged=on_purged is not None)
            call, messages = _started(
                lambda r: self._stub.StreamEvents(r, metadata=metadata), request, retrying
            )
            stop.watch(call)
            try:
                while (message := await _next_message(messages, retrying)) is not None:
                    connected, before = True, cursor
                    payload = message.WhichOneof("payload")
                    if payload == "events":
                        for event in message.events.events:
                            cursor = event.seq
                            yield event
                    elif payload == "event":  # a server older than batched delivery
                        cursor = message.event.seq
                        yield message.event
                    elif payload == "heartbeat":
                        cursor = message.heartbeat.cursor
                        if on_heartbeat is not None:
                            on_heartbeat(cursor)
                    elif payload == "purged":
                        # No event sent lies in it: past it, a reconnect does not
                        # announce it again.
                        cursor = max(cursor or 0, message.purged.through_seq)
                        if on_purged is not None:
                            on_purged(message.purged)
                    # Else a message of a newer server: it moves no cursor.
                    if cursor != before:  # progress: the next failure backs off from the start
                        attempt = 1
            except asyncio.CancelledError:
                if stop.ended():  # its call cancelled by an aclose() from another task
                    return
                if (closed := self._closed_under(sent_id, retried=retrying is not None)) is None:
                    raise
                raise closed from None
            except grpc.RpcError as exc:
                error = failed_call(exc, sent_id=sent_id, retried=retrying is not None)
                cause: grpc.RpcError | None = exc
            else:  # ended (OK): retried as a failure is, not at once
                error, cause = stream_ended(sent_id=sent_id, retried=retrying is not None), None
            finally:  # the caller stopped (aclose(), an error): the stream ends now
                _cancel(call)
            if stop.stopped:  # cancelled by an aclose() from another task
                return
            # Bounded until the stream first connects: an address that never
            # answers is an error to report. Then it runs until the caller stops it.
            delay = self._backoff(attempt, error, bounded=not connected)
            if delay is None:
                raise error from cause
            retrying = error
            await self._sleep(delay)
            attempt += 1

    def _closed_under(self, sent_id: str, *, retried: bool) -> SealtrailError | None:
        """For a call that met a cancellation: RpcFailedError CANCELLED if the
        client's closing cancelled it, as the sync client raises (grpc.aio
        cancels the awaiting task too, though no one cancelled it: a TaskGroup
        took such a call for one its caller had stopped, and its failure went
        unseen); None if the cancellation is the caller's own."""
        task = asyncio.current_task()
        if not self._closed or (task is not None and task.cancelling()):
            return None
        return closed_during_call(sent_id=sent_id, retried=retried)

    def _backoff(
        self,
        attempt: int,
        error: SealtrailError,
        *,
        bounded: bool = True,
        codes: frozenset[grpc.StatusCode] = RETRYABLE,
    ) -> float | None:
        """Seconds to wait before retrying, or None: the policy's answer while open."""
        if self._closed:
            return None
        return self._policy.backoff(attempt, error, bounded=bounded, codes=codes)

    async def _every_page(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[PagedReq, PageResp],
        request: PagedReq,
        items: Callable[[PageResp], Iterable[Item]],
    ) -> list[Item]:
        """Every item of a paged listing (`items` of each page), read a page
        after another: one call for total_timeout (each page had a bound of
        its own, and a listing took as many bounds as it had pages)."""
        ends = None if self._total_timeout is None else self._clock() + self._total_timeout
        found: list[Item] = []
        while True:
            page = await self._call(method, request, until=ends)
            found.extend(items(page))
            if not page.next_page_token:
                return found
            request.page_token = page.next_page_token

    async def _call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        *,
        retry: bool = True,
        retry_on: frozenset[grpc.StatusCode] = RETRYABLE,
        timeout: float | None = None,
        until: float | None = None,
        own_deadline: bool = False,
        attempts: Attempts | None = None,
    ) -> _Resp:
        """`method`'s answer, retried as the policy says (after the codes of
        `retry_on`) unless not to `retry`; each attempt given `timeout`
        seconds, or the client's. The error raised says whether the call was
        retried before it (`retried`): an earlier attempt may have taken effect.
        `until`: when (by the client's clock) the client's total_timeout ends
        for a call that is part of a larger one. `own_deadline`: `timeout` is
        not cut short by the client's total_timeout either. `attempts`: noted
        there, for a call that records (see Attempts)."""
        if self._closed:
            raise ClientClosedError
        per_attempt = self._timeout if timeout is None else positive_seconds(timeout, "timeout")
        # The client's total_timeout bounds every call, a count's or a preview's
        # longer deadline too (helper-197), but for an erasure's or a
        # verification's own: cut off, an erasure is rolled back.
        ends = (
            (until if until is not None else self._clock() + self._total_timeout)
            if self._total_timeout is not None and not own_deadline
            else None
        )
        attempt, retrying = 1, None
        callers = current_request_id()
        metadata = person_metadata(self._metadata)  # an on_behalf_of(...) block's person
        # One request id for every attempt: the one the caller set, else a new one.
        with request_id(callers) as sent_id:
            if attempts is not None and not callers:
                attempts.own_id = sent_id
            while True:
                if attempts is not None:
                    attempts.made = attempt
                # A wait that ran over leaves a sliver: at least 10 ms an attempt.
                left = None if ends is None else max(ends - self._clock(), 0.01)
                deadline = grpc_timeout(per_attempt if left is None else min(per_attempt, left))
                try:
                    return await method(request, timeout=deadline, metadata=metadata)
                except asyncio.CancelledError:
                    sent = sent_id if self._owns_channel else ""
                    if (closed := self._closed_under(sent, retried=retrying is not None)) is None:
                        raise
                    raise closed from None
                except grpc.RpcError as exc:
                    # The id sent by the client's own channel (a given one may not send one).
                    error = failed_call(
                        exc,
                        sent_id=sent_id if self._owns_channel else "",
                        retried=retrying is not None,
                    )
                    delay = self._backoff(attempt, error, codes=retry_on) if retry else None
                    if delay is not None and ends is not None and self._clock() + delay >= ends:
                        delay = None  # no time left for another attempt
                    if delay is None:
                        raise error from exc
                except grpc.aio.UsageError as exc:  # grpc.aio's "Channel is closed."
                    if retrying is None:  # closed before the first attempt
                        raise
                    raise retrying from exc  # closed while the client waited to retry
                retrying = error
                await self._sleep(delay)
                attempt += 1
