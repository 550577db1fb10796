"""Request and trace correlation end to end: a caller's span, the server's
spans and the stored events share one trace and one request id, filters find
exactly those events, and bad correlation headers never fail a call.

A server of this module's own traces through an SDK tracer provider into an
InMemorySpanExporter; the calling "application" has a provider of its own,
exporting into the same exporter, as two services would into one backend."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import sealtrail
from sealtrail import AuditClient, InvalidArgumentError, NotFoundError, build_event, build_filter
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc, event_pb2
from sealtrail_server.domain.access import Role
from sealtrail_server.domain.event_ids import event_id_minter
from tests.conftest import ServerThread
from tests.traced_server import traced_server_of

RECORD_SPAN = "sealtrail.v1.AuditLogService/Record"
REQUEST_ID = "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"


@pytest.fixture(scope="module")
def app_tracer(exporter: InMemorySpanExporter) -> Iterator[trace.Tracer]:
    """The tracer of the application that calls Sealtrail."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("checkout-service")
    provider.shutdown()


@pytest.fixture
def traced_client(traced_server: ServerThread, tenant: str) -> Iterator[AuditClient]:
    with AuditClient(traced_server.target, token=traced_server.token(tenant)) as client:
        yield client


@pytest.fixture
def raw_stub(traced_server: ServerThread) -> Iterator[audit_service_pb2_grpc.AuditLogServiceStub]:
    """A stub with no interceptor: metadata exactly as the test sends it."""
    with grpc.insecure_channel(traced_server.target) as channel:
        yield audit_service_pb2_grpc.AuditLogServiceStub(channel)


def hex_ids(span: trace.Span | ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def wait_for(
    exporter: InMemorySpanExporter, found: Callable[[ReadableSpan], bool], timeout: float = 10
) -> ReadableSpan:
    """The first finished span `found` accepts; a batch's span may end just
    after its callers got their answer."""
    deadline = time.monotonic() + timeout
    while True:
        for span in exporter.get_finished_spans():
            if found(span):
                return span
        if time.monotonic() > deadline:
            raise AssertionError("no such span was exported")
        time.sleep(0.01)


def server_span(exporter: InMemorySpanExporter, request_id: str) -> ReadableSpan:
    return wait_for(
        exporter,
        lambda s: (
            s.kind is SpanKind.SERVER
            and (s.attributes or {}).get("sealtrail.request_id") == request_id
        ),
    )


def trailer(metadata: Any, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key:
            return str(value)
    return None


def event(action: str = "order.refund", **fields: Any) -> event_pb2.Event:
    return build_event(action=action, actor_id="u_7", **fields)


def test_the_callers_span_the_server_span_and_the_event_share_one_trace(
    traced_client: AuditClient, app_tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with (
        app_tracer.start_as_current_span("POST /refunds", kind=SpanKind.SERVER) as caller,
        sealtrail.request_id(REQUEST_ID),
    ):
        recorded = traced_client.record(event())
    trace_id, span_id = hex_ids(caller)

    context = recorded.event.context
    assert (context.request_id, context.trace_id, context.span_id) == (
        REQUEST_ID,
        trace_id,
        span_id,
    )
    assert traced_client.get_event(recorded.event.id).context == context

    served = server_span(exporter, REQUEST_ID)
    assert served.name == RECORD_SPAN
    assert hex_ids(served)[0] == trace_id
    assert served.parent is not None and served.parent.span_id == caller.get_span_context().span_id
    assert served.parent.is_remote
    assert (served.attributes or {})["rpc.grpc.status_code"] == 0
    assert (served.attributes or {})["rpc.method"] == "Record"

    # The group commit is a trace of its own (it serves many calls), linked
    # both ways with the span of each call it commits; its statements are its
    # children.
    commit = wait_for(
        exporter,
        lambda s: (
            s.name == "sealtrail.append.commit"
            and any(link.context.span_id == served.context.span_id for link in s.links)
        ),
    )
    assert commit.parent is None
    linked = {link.context.span_id for link in served.links}
    # Beside it, the read of the tenant's settings the call waited for, if any.
    reads = {
        s.context.span_id
        for s in exporter.get_finished_spans()
        if s.name == "sealtrail.settings.read" and s.context is not None
    }
    assert commit.context.span_id in linked and linked - {commit.context.span_id} <= reads
    insert = wait_for(
        exporter,
        lambda s: (
            # A small batch: heads, events and nodes in one statement, named
            # for its first change.
            s.name == "UPDATE chain_heads"
            and s.parent is not None
            and s.parent.span_id == commit.context.span_id
        ),
    )
    assert insert.kind is SpanKind.CLIENT
    assert (insert.attributes or {})["db.system.name"] == "postgresql"
    assert (commit.attributes or {})["sealtrail.batch.events"] >= 1


def test_reads_are_traced_with_their_statements_as_child_spans(
    traced_client: AuditClient, exporter: InMemorySpanExporter
) -> None:
    with sealtrail.request_id() as request_id:
        list(traced_client.query(build_filter(actions="order.*")))
    served = server_span(exporter, request_id)
    assert served.name == "sealtrail.v1.AuditLogService/Query"
    select = wait_for(
        exporter,
        lambda s: (
            s.name == "SELECT events"
            and s.parent is not None
            and s.parent.span_id == served.context.span_id
        ),
    )
    assert "tenant_id = %s" in str((select.attributes or {})["db.query.text"])


def test_get_event_looks_where_its_id_says_then_everywhere(
    traced_client: AuditClient, exporter: InMemorySpanExporter
) -> None:
    """A recorded event is found by one probe, bounded to the millisecond its id
    names (ADR 0031); an id found nowhere there is looked for in every partition."""
    stored = traced_client.record(event()).event
    with sealtrail.request_id() as found:
        assert traced_client.get_event(stored.id) == stored
    with sealtrail.request_id() as missing, pytest.raises(NotFoundError):
        traced_client.get_event(event_id_minter(datetime.now(UTC))())
    for request_id, bounded in ((found, [True]), (missing, [True, False])):
        served = server_span(exporter, request_id)
        probes = sorted(
            (s for s in exporter.get_finished_spans() if s.name == "SELECT events"),
            key=lambda s: s.start_time or 0,
        )
        texts = [
            str((s.attributes or {})["db.query.text"])
            for s in probes
            if s.parent is not None and s.parent.span_id == served.context.span_id
        ]
        assert ["received_at >=" in text for text in texts] == bounded, texts


def test_filters_return_exactly_the_events_of_a_trace_or_a_request(
    traced_client: AuditClient, app_tracer: trace.Tracer, tmp_path: Path
) -> None:
    with app_tracer.start_as_current_span("nightly-job") as job:
        with sealtrail.request_id() as first_request:
            a = traced_client.record(event("invoice.create")).event
            b = traced_client.record_batch([event("invoice.send"), event("invoice.close")])
        with sealtrail.request_id() as second_request:
            c = traced_client.record(event("invoice.archive")).event
    job_trace, _ = hex_ids(job)
    with app_tracer.start_as_current_span("other-job"):
        other = traced_client.record(event("invoice.create")).event
    untraced = traced_client.record(event("invoice.create")).event  # its own server trace
    explicit = traced_client.record(
        event("invoice.create", request_id=first_request, trace_id="ab" * 16, span_id="cd" * 8)
    ).event

    in_job = {a.id, c.id, *(entry.event.id for entry in b)}
    assert len(in_job) == 4
    assert {other.context.trace_id, untraced.context.trace_id} & {job_trace} == set()
    assert untraced.context.trace_id  # the traced server's own span

    def query(**criteria: Any) -> set[str]:
        return {e.id for e in traced_client.query(build_filter(**criteria))}

    assert query(trace_id=job_trace) == in_job
    assert query(trace_id=job_trace.upper()) == in_job
    assert query(request_id=first_request) == {a.id, *(e.event.id for e in b), explicit.id}
    assert query(request_id=second_request) == {c.id}
    assert query(trace_id="ab" * 16) == {explicit.id}

    out = tmp_path / "job.ndjson"
    manifest = traced_client.export(out, format="ndjson", filter=build_filter(trace_id=job_trace))
    exported = {json.loads(line)["id"] for line in out.read_text().splitlines()}
    assert exported == in_job
    assert manifest.row_count == 4


def test_an_event_keeps_the_ids_it_sets(
    traced_client: AuditClient, app_tracer: trace.Tracer
) -> None:
    own_request = str(uuid.uuid4())
    with app_tracer.start_as_current_span("caller") as caller, sealtrail.request_id():
        only_request = traced_client.record(event(request_id=own_request)).event
        only_trace = traced_client.record(event(trace_id="12" * 16)).event
    caller_trace, caller_span = hex_ids(caller)
    # The request id alone is the event's; the trace is still the caller's.
    assert only_request.context.request_id == own_request
    assert (only_request.context.trace_id, only_request.context.span_id) == (
        caller_trace,
        caller_span,
    )
    # A trace id without a span id stays so: ids of two traces never mix.
    assert (only_trace.context.trace_id, only_trace.context.span_id) == ("12" * 16, "")


def test_a_missing_request_id_is_generated_and_sent_back(
    raw_stub: audit_service_pb2_grpc.AuditLogServiceStub,
    traced_server: ServerThread,
    tenant: str,
    exporter: InMemorySpanExporter,
) -> None:
    auth = (("authorization", f"Bearer {traced_server.token(tenant)}"),)
    response, call = raw_stub.Record.with_call(
        audit_service_pb2.RecordRequest(event=event()), metadata=auth, timeout=10
    )
    echoed = trailer(call.trailing_metadata(), "x-request-id")
    assert echoed is not None and str(uuid.UUID(echoed)) == echoed
    assert response.event.context.request_id == echoed
    assert server_span(exporter, echoed).name == RECORD_SPAN


@pytest.mark.parametrize(
    ("sent", "used"),
    [
        # nginx's $request_id: 32 hex digits; stored in the usual form.
        ("5F0C6F0E8D1A4C359A572B7C1C0D9E11", REQUEST_ID),
        (REQUEST_ID.upper(), REQUEST_ID),
        ("req-42", None),
        ("5f0c6f0e-8d1a4c35-9a57-2b7c1c0d9e11", None),
        ("x" * 4000, None),
    ],
)
def test_a_request_id_that_is_not_a_uuid_is_replaced_never_refused(
    raw_stub: audit_service_pb2_grpc.AuditLogServiceStub,
    traced_server: ServerThread,
    tenant: str,
    exporter: InMemorySpanExporter,
    sent: str,
    used: str | None,
) -> None:
    metadata = (
        ("authorization", f"Bearer {traced_server.token(tenant)}"),
        ("x-request-id", sent),
    )
    response, call = raw_stub.Record.with_call(
        audit_service_pb2.RecordRequest(event=event()), metadata=metadata, timeout=10
    )
    echoed = trailer(call.trailing_metadata(), "x-request-id")
    assert echoed is not None and response.event.context.request_id == echoed
    if used is not None:
        assert echoed == used
        attributes = server_span(exporter, echoed).attributes or {}
        assert "sealtrail.request_id.invalid" not in attributes
    else:
        assert str(uuid.UUID(echoed)) == echoed
        attributes = server_span(exporter, echoed).attributes or {}
        assert attributes["sealtrail.request_id.invalid"] == sent[:128]


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # all-zero trace id
        "00-" + "a" * 32 + "-" + "0" * 16 + "-01",  # all-zero span id
        "00-" + "A" * 32 + "-" + "1" * 16 + "-01",  # upper case is invalid in W3C
        "ff-" + "a" * 32 + "-" + "1" * 16 + "-01",  # version ff is forbidden
        "00-" + "a" * 32 + "-" + "1" * 16 + "-01-" + "x" * 3000,
    ],
)
def test_an_invalid_traceparent_is_ignored_and_the_call_gets_a_trace_of_its_own(
    raw_stub: audit_service_pb2_grpc.AuditLogServiceStub,
    traced_server: ServerThread,
    tenant: str,
    exporter: InMemorySpanExporter,
    traceparent: str,
) -> None:
    metadata = (
        ("authorization", f"Bearer {traced_server.token(tenant)}"),
        ("traceparent", traceparent),
        ("tracestate", "=,=,==="),
    )
    response, call = raw_stub.Record.with_call(
        audit_service_pb2.RecordRequest(event=event()), metadata=metadata, timeout=10
    )
    served = server_span(exporter, trailer(call.trailing_metadata(), "x-request-id") or "")
    assert served.parent is None
    own_trace, own_span = hex_ids(served)
    assert (response.event.context.trace_id, response.event.context.span_id) == (
        own_trace,
        own_span,
    )


def test_refused_calls_are_traced_and_answer_with_their_request_id(
    raw_stub: audit_service_pb2_grpc.AuditLogServiceStub,
    traced_server: ServerThread,
    tenant: str,
    exporter: InMemorySpanExporter,
) -> None:
    bad_event = audit_service_pb2.RecordRequest(event=event_pb2.Event(action="Bad Action"))
    cases = [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (
            (("authorization", f"Bearer {traced_server.token(tenant, Role.READER)}"),),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            (("authorization", f"Bearer {traced_server.token(tenant)}"),),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for metadata, code in cases:
        request_id = str(uuid.uuid4())
        with pytest.raises(grpc.RpcError) as caught:
            raw_stub.Record(
                bad_event, metadata=(*metadata, ("x-request-id", request_id)), timeout=10
            )
        error: Any = caught.value
        assert error.code() is code
        assert trailer(error.trailing_metadata(), "x-request-id") == request_id
        keys = [key for key, _ in error.trailing_metadata()]
        assert "grpc-status-details-bin" in keys  # the rich status is still there
        served = server_span(exporter, request_id)
        assert (served.attributes or {})["rpc.grpc.status_code"] == code.value[0]
        # A caller's mistake is not the server's error.
        assert served.status.status_code is StatusCode.UNSET


def test_a_failed_client_call_is_found_by_the_callers_request_id(
    traced_client: AuditClient, exporter: InMemorySpanExporter
) -> None:
    with sealtrail.request_id() as request_id, pytest.raises(InvalidArgumentError):
        traced_client.record(event_pb2.Event(action="Bad", actor=event_pb2.Actor(id="u")))
    served = server_span(exporter, request_id)
    assert (served.attributes or {})["rpc.grpc.status_code"] == 3


def test_a_cancelled_stream_ends_its_span_as_cancelled(
    raw_stub: audit_service_pb2_grpc.AuditLogServiceStub,
    traced_server: ServerThread,
    tenant: str,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    request_id = str(uuid.uuid4())
    metadata = (
        ("authorization", f"Bearer {traced_server.token(tenant)}"),
        ("x-request-id", request_id),
    )
    stream = raw_stub.StreamEvents(audit_service_pb2.StreamEventsRequest(), metadata=metadata)
    assert next(stream).HasField("heartbeat")
    stream.cancel()
    served = server_span(exporter, request_id)
    assert served.name == "sealtrail.v1.AuditLogService/StreamEvents"
    assert (served.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert "Failed to detach context" not in caplog.text


def test_streams_send_the_request_id_before_their_first_message(
    raw_stub: audit_service_pb2_grpc.AuditLogServiceStub,
    traced_server: ServerThread,
    tenant: str,
) -> None:
    metadata = (
        ("authorization", f"Bearer {traced_server.token(tenant)}"),
        ("x-request-id", REQUEST_ID),
    )
    stream = raw_stub.Export(
        audit_service_pb2.ExportRequest(format=audit_service_pb2.EXPORT_FORMAT_NDJSON),
        metadata=metadata,
        timeout=30,
    )
    assert trailer(stream.initial_metadata(), "x-request-id") == REQUEST_ID
    messages = list(stream)
    assert messages[-1].HasField("manifest")
    assert trailer(stream.trailing_metadata(), "x-request-id") == REQUEST_ID


def test_the_export_event_carries_the_export_calls_correlation(
    traced_client: AuditClient, app_tracer: trace.Tracer, tmp_path: Path
) -> None:
    with (
        app_tracer.start_as_current_span("monthly-export") as caller,
        sealtrail.request_id() as request_id,
    ):
        manifest = traced_client.export(tmp_path / "all.csv", format="csv")
    recorded = traced_client.get_event(manifest.export_event_id)
    assert recorded.action == "audit_log.exported"
    assert (recorded.context.request_id, recorded.context.trace_id) == (
        request_id,
        hex_ids(caller)[0],
    )


def test_a_retry_under_another_request_id_is_the_same_event(traced_client: AuditClient) -> None:
    sent = event(idempotency_key=f"refund-{uuid.uuid4()}", occurred_at=datetime.now(UTC))
    with sealtrail.request_id() as first:
        original = traced_client.record(sent)
    with sealtrail.request_id():
        again = traced_client.record(sent)
    assert again.deduplicated
    assert again.event.id == original.event.id
    assert again.event.context.request_id == first


def test_an_untraced_server_still_stores_the_callers_trace(
    client: AuditClient, app_tracer: trace.Tracer
) -> None:
    """The session's server has no tracer provider: no spans of its own, but
    the caller's trace context and request id reach the event all the same."""
    with app_tracer.start_as_current_span("caller") as caller, sealtrail.request_id() as rid:
        recorded = client.record(event()).event
    assert (recorded.context.request_id, recorded.context.trace_id, recorded.context.span_id) == (
        rid,
        *hex_ids(caller),
    )
    outside = client.record(event()).event
    assert outside.context.request_id and str(uuid.UUID(outside.context.request_id))
    assert (outside.context.trace_id, outside.context.span_id) == ("", "")


def _everything_exported(span: ReadableSpan) -> str:
    """All a tracing backend receives of `span` beside its ids: name,
    attributes, events with theirs, and the status's description."""
    return json.dumps(
        [
            span.name,
            dict(span.attributes or {}),
            [(e.name, dict(e.attributes or {})) for e in span.events],
            span.status.description,
        ],
        default=str,
    )


@pytest.mark.parametrize("events", [1, 65], ids=["one-statement", "copy"])
def test_a_statement_the_database_refuses_leaves_no_value_in_its_span(
    traced_client: AuditClient,
    exporter: InMemorySpanExporter,
    sql: Any,
    tenant: str,
    events: int,
) -> None:
    """PostgreSQL's error quotes the values it refused (`DETAIL: Failing row
    contains (...)`: the whole row, the event's record with it; `Key (...)=(...)`;
    a COPY's `CONTEXT` line). The statement's span kept that text, as its
    exception event and its status, for the tracing backend: an event's
    actor, addresses and details, which erasure never reaches there. It keeps
    what semantic conventions ask of a failed statement instead: SQLSTATE."""
    secret = f"secret-actor-{uuid.uuid4()}"
    constraint = f"refuse_{tenant.replace('-', '_')}"
    sql.execute(f"ALTER TABLE events ADD CONSTRAINT {constraint} CHECK (tenant_id <> '{tenant}')")
    try:
        batch = [build_event(action="order.refund", actor_id=secret) for _ in range(events)]
        with sealtrail.request_id() as request_id:
            if events == 1:
                with pytest.raises(InvalidArgumentError):
                    traced_client.record(batch[0])
            else:
                results = traced_client.record_batch(batch)
                assert all(isinstance(r.error, InvalidArgumentError) for r in results)
    finally:
        sql.execute(f"ALTER TABLE events DROP CONSTRAINT {constraint}")
    server_span(exporter, request_id)
    refused = wait_for(
        exporter,
        lambda s: s.kind is SpanKind.CLIENT and s.status.status_code is StatusCode.ERROR,
    )
    leaked = [s.name for s in exporter.get_finished_spans() if secret in _everything_exported(s)]
    assert leaked == []
    attributes = refused.attributes or {}
    assert (attributes["db.response.status_code"], attributes["error.type"]) == ("23514", "23514")


def test_an_event_the_database_refuses_leaves_no_value_in_the_servers_log(
    client: AuditClient, sql: Any, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The appender logged the database's error whole at ERROR, its `DETAIL:
    Failing row contains (...)` with it: the refused event's row, its actor,
    addresses and record, in the server's log (where erasure never reaches),
    as a month being created refuses events for a moment (ADR 0047). The line
    names what refused it, and leaves the values out."""
    secret = f"secret-actor-{uuid.uuid4()}"
    constraint = f"refuse_{tenant.replace('-', '_')}"
    sql.execute(f"ALTER TABLE events ADD CONSTRAINT {constraint} CHECK (tenant_id <> '{tenant}')")
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(InvalidArgumentError):
            client.record(build_event(action="order.refund", actor_id=secret))
    finally:
        sql.execute(f"ALTER TABLE events DROP CONSTRAINT {constraint}")
    said = "\n".join(r.getMessage() for r in caplog.records if "database refused" in r.getMessage())
    assert secret not in said and "Failing row" not in said
    assert "23514" in said and constraint in said, said


def test_a_call_failed_by_a_database_error_leaves_no_value_in_any_span(
    traced_client: AuditClient, exporter: InMemorySpanExporter, sql: Any, tenant: str
) -> None:
    """A call that fails on a database error its code does not expect (here
    CreateAlertRule, refused by a trigger the test adds to alert_rules, as a
    CHECK refuses a row): the guard answers it INTERNAL, and the call's
    SERVER span records its status code, never the error whole
    (telemetry/interceptor.py records on the span an error that escapes the
    call: the guard must have turned it into an abort first). PostgreSQL's
    DETAIL quotes the refused row (`Failing row contains (...)`; on a table
    under row-level security, as alert_rules is, PostgreSQL itself leaves it
    out, so the trigger says it): the rule's name, a marker here, must be in
    no span exported."""
    marker = f"refused-marker-{uuid.uuid4()}"
    refusal = f"refuse_{tenant.replace('-', '_')}"
    sql.execute(
        f"CREATE FUNCTION {refusal}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.tenant_id = '{tenant}' THEN RAISE EXCEPTION 'new row violates check'"
        " USING ERRCODE = 'check_violation', DETAIL = 'Failing row contains (' || NEW.name"
        " || ').'; END IF; RETURN NEW; END $$"
    )
    sql.execute(
        f"CREATE TRIGGER {refusal} BEFORE INSERT ON alert_rules"
        f" FOR EACH ROW EXECUTE FUNCTION {refusal}()"
    )
    try:
        with (
            sealtrail.request_id() as request_id,
            pytest.raises(sealtrail.SealtrailError) as failed,
        ):
            rule = sealtrail.build_alert_rule(marker, "match", filter=build_filter(actions=["x.y"]))
            traced_client.create_alert_rule(rule)
    finally:
        sql.execute(f"DROP TRIGGER {refusal} ON alert_rules")
        sql.execute(f"DROP FUNCTION {refusal}()")
    assert failed.value.code is grpc.StatusCode.INTERNAL
    assert marker not in str(failed.value)
    call = server_span(exporter, request_id)
    assert call.status.status_code is StatusCode.ERROR
    # The statement's own span, a CLIENT one of the call's trace, says the
    # error by its SQLSTATE.
    wait_for(
        exporter,
        lambda s: (
            s.kind is SpanKind.CLIENT
            and s.context.trace_id == call.context.trace_id
            and (s.attributes or {}).get("db.response.status_code") == "23514"
        ),
    )
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans if marker in _everything_exported(s)] == []
    in_the_call = [s for s in spans if s.context.trace_id == call.context.trace_id]
    assert [s.name for s in in_the_call if "Failing row" in _everything_exported(s)] == []


@pytest.mark.parametrize(
    ("listen", "host", "peer", "network", "server_address"),
    [
        ("127.0.0.1:0", "127.0.0.1", "127.0.0.1", "ipv4", "127.0.0.1"),
        ("[::1]:0", "[::1]", "::1", "ipv6", "::1"),
        ("0.0.0.0:0", "127.0.0.1", "127.0.0.1", "ipv4", None),  # a wildcard names no server
    ],
)
def test_a_server_span_names_its_peer_and_the_address_it_listens_on(
    migrated_database_url: str,
    tenant: str,
    listen: str,
    host: str,
    peer: str,
    network: str,
    server_address: str | None,
) -> None:
    """Tracing backends group a server's spans by OpenTelemetry's server.* and
    network.peer.* attributes; the spans had the RPC's names alone. A server
    of its own (its exporter too: a server's close shuts its exporter down)."""
    exporter = InMemorySpanExporter()
    with (
        traced_server_of(migrated_database_url, exporter, listen=listen) as server,
        AuditClient(f"{host}:{server.port}", token=server.token(tenant)) as client,
        sealtrail.request_id() as request_id,
    ):
        client.record(event())
        attributes = dict(server_span(exporter, request_id).attributes or {})
    assert attributes["network.transport"] == "tcp"
    assert attributes["network.type"] == network
    assert attributes["network.peer.address"] == peer
    port = attributes["network.peer.port"]
    assert isinstance(port, int) and 0 < port < 65536 and port != server.port
    assert attributes["server.port"] == server.port
    assert attributes.get("server.address") == server_address
    assert "client.address" not in attributes  # behind a proxy, the guard's to say
