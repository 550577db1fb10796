"""The console's requests as traced operations: each API request is a span
of the console's, parent of the gRPC call it makes, in the trace the browser
names (`traceparent`) or one of its own, and the answer names that trace
(X-Trace-Id) for the page to show in its errors."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from selenium import webdriver
from selenium.webdriver.common.by import By

from sealtrail import AuditClient, build_event, build_filter
from tests.browser.test_console import sign_in, wait, wait_for_rows
from tests.conftest import ServerThread
from tests.traced_server import traced_server_of

BROWSERS_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BROWSERS_SPAN = "00f067aa0ba902b7"
QUERY = "sealtrail.v1.AuditLogService/Query"


@pytest.fixture(scope="module")
def traced(migrated_database_url: str, exporter: InMemorySpanExporter) -> Iterator[ServerThread]:
    with traced_server_of(
        migrated_database_url,
        exporter,
        console_listen="127.0.0.1:0",
        stream_heartbeat_seconds=0.2,
    ) as running:
        yield running


def _get(
    server: ServerThread, path: str, token: str, **headers: str
) -> tuple[int, http.client.HTTPMessage]:
    connection = http.client.HTTPConnection("127.0.0.1", server.service.console_port, timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}", **headers})
        with connection.getresponse() as answer:
            answer.read()
            return answer.status, answer.headers
    finally:
        connection.close()


def _finished(exporter: InMemorySpanExporter, name: str, trace_id: str) -> list[ReadableSpan]:
    """The spans named `name` of trace `trace_id`, once at least one has ended."""
    deadline = time.monotonic() + 10
    while True:
        found = [
            span
            for span in exporter.get_finished_spans()
            if span.name == name and trace.format_trace_id(span.context.trace_id) == trace_id
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _parent_of(span: ReadableSpan) -> str:
    return trace.format_span_id(span.parent.span_id) if span.parent is not None else ""


def _id(span: ReadableSpan) -> str:
    return trace.format_span_id(span.context.span_id)


def test_a_console_search_is_one_trace_with_the_services_spans(
    traced: ServerThread, exporter: InMemorySpanExporter, tenant: str
) -> None:
    """The console called the API with no trace context: a slow search's
    spans in the service were a trace of their own, which nothing the
    operator had led to, and the console's request was no span at all."""
    exporter.clear()
    status, headers = _get(traced, "/api/events?actions=door.open", traced.token(tenant, "reader"))
    assert status == 200
    trace_id = headers["X-Trace-Id"]
    assert len(trace_id) == 32 and int(trace_id, 16)
    [console] = _finished(exporter, "GET /api/events", trace_id)
    assert console.kind == trace.SpanKind.SERVER and console.parent is None
    assert console.attributes is not None and console.attributes["http.response.status_code"] == 200
    [query] = _finished(exporter, QUERY, trace_id)
    assert _parent_of(query) == _id(console)
    # Every Query the service served meanwhile is of this trace: the search's.
    assert [
        trace.format_trace_id(span.context.trace_id)
        for span in exporter.get_finished_spans()
        if span.name == QUERY
    ] == [trace_id]
    # The service's own spans below the call (its statements) are in it too.
    statements = [
        span
        for span in exporter.get_finished_spans()
        if span.parent is not None and _parent_of(span) == _id(query)
    ]
    assert statements
    assert {span.context.trace_id for span in statements} == {query.context.trace_id}


def test_a_browsers_traceparent_is_the_parent_of_the_consoles_span(
    traced: ServerThread, exporter: InMemorySpanExporter, tenant: str
) -> None:
    exporter.clear()
    status, headers = _get(
        traced,
        "/api/events",
        traced.token(tenant, "reader"),
        traceparent=f"00-{BROWSERS_TRACE}-{BROWSERS_SPAN}-01",
    )
    assert (status, headers["X-Trace-Id"]) == (200, BROWSERS_TRACE)
    [console] = _finished(exporter, "GET /api/events", BROWSERS_TRACE)
    assert _parent_of(console) == BROWSERS_SPAN
    [query] = _finished(exporter, QUERY, BROWSERS_TRACE)
    assert _parent_of(query) == _id(console)


def test_a_refusal_and_a_stream_name_their_trace(
    traced: ServerThread, exporter: InMemorySpanExporter, tenant: str
) -> None:
    """An error is what support is asked about: its answer names the trace
    its call is in. A stream's headers go before its first line."""
    exporter.clear()
    reader = traced.token(tenant, "reader")
    status, headers = _get(traced, "/api/tokens", reader)  # an admin's call
    assert status == 403
    listed = "sealtrail.v1.AuditLogService/ListTokens"
    [refused] = _finished(exporter, listed, headers["X-Trace-Id"])
    assert refused.attributes is not None
    assert refused.attributes["rpc.grpc.status_code"] == 7  # PERMISSION_DENIED
    [console] = _finished(exporter, "GET /api/tokens", headers["X-Trace-Id"])
    assert console.attributes is not None and console.attributes["http.response.status_code"] == 403

    connection = http.client.HTTPConnection("127.0.0.1", traced.service.console_port, timeout=10)
    try:
        connection.request("GET", "/api/stream", headers={"Authorization": f"Bearer {reader}"})
        with connection.getresponse() as answer:
            assert answer.status == 200
            answer.readline()  # under way
            trace_id = answer.headers["X-Trace-Id"]
    finally:
        connection.close()
    [stream] = _finished(exporter, "sealtrail.v1.AuditLogService/StreamEvents", trace_id)
    [console] = _finished(exporter, "GET /api/stream", trace_id)
    assert _parent_of(stream) == _id(console)


def test_with_tracing_off_the_browsers_trace_reaches_the_record_of_the_read(
    console_server: ServerThread, tenant: str
) -> None:
    """The service records a caller's trace context with its call (events'
    trace_id): the console passed none on, so a read from the console could
    not be found by the trace of the page that made it."""
    status, headers = _get(
        console_server,
        "/api/events",
        console_server.token(tenant, "reader"),
        traceparent=f"00-{BROWSERS_TRACE}-{BROWSERS_SPAN}-01",
    )
    assert (status, headers["X-Trace-Id"]) == (200, BROWSERS_TRACE)
    with AuditClient(console_server.target, token=console_server.token(tenant)) as admin:
        [queried] = admin.query(build_filter(actions="audit_log.queried"), page_size=1)
    assert queried.context.trace_id == BROWSERS_TRACE
    # No trace asked for, none made up: the answer names none.
    status, headers = _get(console_server, "/api/events", console_server.token(tenant, "reader"))
    assert status == 200 and "X-Trace-Id" not in headers


def test_the_page_names_the_trace_of_an_error(
    browser: webdriver.Chrome, traced: ServerThread, exporter: InMemorySpanExporter, tenant: str
) -> None:
    with AuditClient(traced.target, token=traced.token(tenant, "recorder")) as recorder:
        recorder.record(action="door.open", actor_id="u-kim")
    url = f"http://127.0.0.1:{traced.service.console_port}/"
    sign_in(browser, url, traced.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 1)
    exporter.clear()
    browser.find_element(By.ID, "export-ndjson").click()  # a reader's: refused
    error = browser.find_element(By.ID, "error")
    wait(browser).until(lambda b: "Export failed" in error.text)
    [export] = [s for s in exporter.get_finished_spans() if s.name.endswith("/Export")]
    assert f"(trace {trace.format_trace_id(export.context.trace_id)})" in error.text, error.text


def test_live_catching_up_where_nothing_was_removed_sends_the_database_no_list_of_its_events(
    traced: ServerThread, exporter: InMemorySpanExporter, tenant: str
) -> None:
    """Live asks for removals to be announced (a cursor whose next event was
    removed is then not refused), and a stream that does counts them every
    1,000 events it reads from the table: catching up with a burst, each
    count sent the seqs of the 1,000 events it had read, twice, to look them
    up among the tombstones of a range that had none. Where the range has
    none, the count is one look at the index."""
    with AuditClient(traced.target, token=traced.token(tenant, "recorder")) as recorder:
        for _ in range(5):
            recorder.record_batch(
                [build_event(action="bulk.op", actor_id="u-1") for _ in range(500)]
            )
    exporter.clear()
    connection = http.client.HTTPConnection("127.0.0.1", traced.service.console_port, timeout=10)
    try:
        reader = traced.token(tenant, "reader")
        connection.request(
            "GET", "/api/stream?after_seq=0", headers={"Authorization": f"Bearer {reader}"}
        )
        with connection.getresponse() as answer:
            trace_id = answer.headers["X-Trace-Id"]
            received = 0
            while received < 2500:
                received += b'"bulk.op"' in answer.readline()
    finally:
        connection.close()
    counted = [
        str((span.attributes or {}).get("db.query.text", ""))
        for span in exporter.get_finished_spans()
        if trace.format_trace_id(span.context.trace_id) == trace_id
        and "level = 0" in str((span.attributes or {}).get("db.query.text", ""))
    ]
    assert len(counted) >= 3  # every 1,000 events read, and at the end
    assert not [text for text in counted if "width_bucket" in text], counted
