"""The server's telemetry parts on their own: which OTEL_* settings turn
tracing on, request ids off metadata, and correlated log lines."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import itertools
import json
import logging
import operator
import os
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from psycopg.sql import SQL

from sealtrail_server.config import Settings
from sealtrail_server.domain.event import Correlation, EventDraft, correlate, parse_request_id
from sealtrail_server.measures import no_meter
from sealtrail_server.store.appender import _EXTEND
from sealtrail_server.store.retention import _PURGE
from sealtrail_server.store.traced import describe
from sealtrail_server.telemetry.context import (
    correlation_of,
    current_correlation,
    new_request_id,
    set_correlation,
)
from sealtrail_server.telemetry.interceptor import TelemetryInterceptor, _Call
from sealtrail_server.telemetry.logs import log_handler
from sealtrail_server.telemetry.tracing import (
    TracingConfigError,
    exporter_names,
    tracer_provider_from_env,
)

CALLER = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
OWN = SpanContext(0x123, 0x456, is_remote=False, trace_flags=TraceFlags(1))
OWN_UNSAMPLED = SpanContext(0x123, 0x456, is_remote=False, trace_flags=TraceFlags(0))


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "audit"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, ["otlp"]),
    ],
)
def test_tracing_is_off_unless_an_exporter_or_endpoint_is_configured(
    env: dict[str, str], names: list[str] | None
) -> None:
    assert exporter_names(env) == names


def test_no_tracer_provider_by_default() -> None:
    assert tracer_provider_from_env({}) is None


@pytest.fixture
def clean_resource_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    yield


def exporters_of(provider: TracerProvider) -> list[object]:
    processors = provider._active_span_processor._span_processors
    assert all(isinstance(p, BatchSpanProcessor) for p in processors)
    return [p._batch_processor._exporter for p in processors]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("env", "kinds"),
    [
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, [GrpcExporter]),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            [HttpExporter],
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp,console",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            [GrpcExporter, ConsoleSpanExporter],
        ),
    ],
)
def test_the_provider_exports_as_the_environment_says(
    clean_resource_env: None, env: dict[str, str], kinds: list[type]
) -> None:
    provider = tracer_provider_from_env(env, version="9.9")
    assert provider is not None
    try:
        assert [type(e) for e in exporters_of(provider)] == kinds
        assert provider.resource.attributes["service.name"] == "sealtrail"
        assert provider.resource.attributes["service.version"] == "9.9"
    finally:
        provider.shutdown()


def test_the_service_name_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "audit-eu")
    provider = tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "none"})
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "audit-eu"
    provider.shutdown()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger-thrift"}, "'jaeger-thrift', which is not installed"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "'http/json' is not supported",
        ),
    ],
)
def test_an_unknown_exporter_or_protocol_is_a_clear_error(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(TracingConfigError, match=message):
        tracer_provider_from_env(env)


@pytest.mark.parametrize(
    ("sampler", "argument", "message"),
    [
        ("traceidration", None, "OTEL_TRACES_SAMPLER names 'traceidration', which is not"),
        ("jaeger_remote", "endpoint=http://x", "OTEL_TRACES_SAMPLER names 'jaeger_remote'"),
        # A percentage, a rate out of range: the SDK sampled every trace.
        ("traceidratio", "10%", "OTEL_TRACES_SAMPLER_ARG='10%' is no sampling rate"),
        ("parentbased_traceidratio", "10", "OTEL_TRACES_SAMPLER_ARG='10' is no sampling rate"),
        ("traceidratio", "-0.1", "OTEL_TRACES_SAMPLER_ARG='-0.1' is no sampling rate"),
        ("traceidratio", "nan", "OTEL_TRACES_SAMPLER_ARG='nan' is no sampling rate"),
    ],
)
def test_a_sampler_that_cannot_be_set_up_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, sampler: str, argument: str | None, message: str
) -> None:
    """The SDK warned and sampled every trace, where the operator asked for
    fewer to spare the collector."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if argument is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    with pytest.raises(TracingConfigError, match=re.escape(message)):
        tracer_provider_from_env({**os.environ, "OTEL_TRACES_EXPORTER": "none"})


@pytest.mark.parametrize(
    ("env", "description"),
    [
        ({}, "ParentBased{root:AlwaysOnSampler,"),
        ({"OTEL_TRACES_SAMPLER": " Always_Off "}, "AlwaysOffSampler"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio"}, "TraceIdRatioBased{1.0}"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": " 0.25 "},
            "TraceIdRatioBased{0.25}",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
            "ParentBased{root:TraceIdRatioBased{0.0},",
        ),
    ],
)
def test_the_sampler_is_the_one_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], description: str
) -> None:
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    provider = tracer_provider_from_env({**os.environ, "OTEL_TRACES_EXPORTER": "none"})
    assert provider is not None
    try:
        assert provider.sampler.get_description().startswith(description)
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("5F0C6F0E-8D1A-4C35-9A57-2B7C1C0D9E11", "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"),
        ("5f0c6f0e8d1a4c359a572b7c1c0d9e11", "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"),
        ("5f0c6f0e-8d1a4c35-9a57-2b7c1c0d9e11", None),
        ("{5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11}", None),
        ("req-42", None),
        ("", None),
    ],
)
def test_request_ids_are_uuids(value: str, parsed: str | None) -> None:
    assert parse_request_id(value) == parsed


def test_an_event_takes_the_callers_span_before_the_servers_own() -> None:
    assert correlation_of("r", CALLER, OWN) == Correlation("r", f"{0xABC:032x}", f"{0xDEF:016x}")
    invalid = trace.INVALID_SPAN_CONTEXT
    assert correlation_of("r", invalid, OWN) == Correlation("r", f"{0x123:032x}", f"{0x456:016x}")
    # A span not sampled is in no backend: pointing at it would lead nowhere.
    assert correlation_of("r", invalid, OWN_UNSAMPLED) == Correlation("r")
    assert correlation_of("r", invalid, invalid) == Correlation("r")


def test_correlate_fills_what_the_event_left_empty() -> None:
    call = Correlation("req", "t" * 32, "s" * 16)
    assert correlate(EventDraft(), call).request_id == "req"
    filled = correlate(EventDraft(request_id="own"), call)
    assert (filled.request_id, filled.trace_id, filled.span_id) == ("own", "t" * 32, "s" * 16)
    kept = correlate(EventDraft(span_id="x" * 16), call)
    assert (kept.request_id, kept.trace_id, kept.span_id) == ("req", "", "x" * 16)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, dict[str, io.StringIO]]]:
    streams = {"json": io.StringIO(), "text": io.StringIO()}
    logger = logging.getLogger("sealtrail_server.test_telemetry")
    handlers = [log_handler("json", streams["json"]), log_handler("text", streams["text"])]
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, streams
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.propagate = True
        set_correlation(Correlation())


def test_log_lines_in_a_call_carry_its_request_and_trace(
    logged: tuple[logging.Logger, dict[str, io.StringIO]],
) -> None:
    logger, streams = logged
    logger.info("outside any call")
    set_correlation(Correlation(request_id="5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"))
    with trace.use_span(NonRecordingSpan(OWN)):
        logger.warning("appended %d events", 3)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed")
    lines = [json.loads(line) for line in streams["json"].getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "outside any call",
        "appended 3 events",
        "failed",
    ]
    assert "request_id" not in lines[0] and "trace_id" not in lines[0]
    assert lines[1]["request_id"] == "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"
    assert lines[1]["trace_id"] == f"{0x123:032x}"
    assert lines[1]["span_id"] == f"{0x456:016x}"
    assert lines[1]["level"] == "WARNING"
    assert lines[1]["logger"] == "sealtrail_server.test_telemetry"
    assert "RuntimeError: boom" in lines[2]["exception"]

    text = streams["text"].getvalue().splitlines()
    assert text[0].endswith("INFO sealtrail_server.test_telemetry: outside any call")
    assert text[1].endswith(
        f"appended 3 events request_id=5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11 trace_id={0x123:032x}"
    )
    assert text[2].endswith(
        f"failed request_id=5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11 trace_id={0x123:032x}"
    )
    assert text[3] == "Traceback (most recent call last):"


def test_a_logged_value_cannot_start_a_line_of_its_own(
    logged: tuple[logging.Logger, dict[str, io.StringIO]],
) -> None:
    """A tenant's actor id, logged in an alert's description, wrote whole
    lines of its choosing in the text log, a forged ERROR among them (helper-140)."""
    logger, streams = logged
    forged = "2026-12-05 00:00:00,000 ERROR sealtrail_server.integrity.checkpointer: FAILURE"
    for breaker in ("\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"):
        logger.info("alerts: tenant %s: %s", "dev", f"Alert 'x': by bob{breaker}{forged}")
    logger.info("a message of its own\nholds no line either")
    text = streams["text"].getvalue()
    assert len(text.splitlines()) == 10, text
    assert text.splitlines()[0].endswith(f"by bob\\n{forged}")
    assert "\\u2028" in text and "\\x85" in text
    # Each JSON line, one line to every reader too, says the value as it was.
    lines = [json.loads(line) for line in streams["json"].getvalue().splitlines()]
    assert [line["message"][-len(forged) - 1] for line in lines[-4:-1]] == list("\x85\u2028\u2029")


def test_a_json_line_holds_no_raw_terminal_control(
    logged: tuple[logging.Logger, dict[str, io.StringIO]],
) -> None:
    """JSON escapes C0 controls but leaves DEL and the C1 controls as they are:
    `\x9b` is a terminal's CSI, so a value a tenant chose, logged and read with
    `kubectl logs` or `tail`, could move the cursor, clear the screen or
    rewrite the lines above. Each is written escaped, and reads back as it was."""
    logger, streams = logged
    controls = "\x7f\x80\x9b2J\x9d0;title\x9c"
    logger.info("alerts: tenant %s: %s", "dev", f"Alert 'x': by {controls}")
    line = streams["json"].getvalue().splitlines()[-1]
    assert not any("\x7f" <= c <= "\x9f" for c in line), repr(line)
    assert json.loads(line)["message"].endswith(controls)


def test_a_group_of_database_errors_is_logged_without_their_values(
    logged: tuple[logging.Logger, dict[str, io.StringIO]], sql: psycopg.Connection[Any]
) -> None:
    """A traceback says each database error by its primary message and
    SQLSTATE, but a group's members are written with each line indented
    (`    | DETAIL:  Key (...)=(...)`), and their text, whole across lines,
    was not found there: the DETAIL of every member, the values the database
    refused, stayed in the log of an ExceptionGroup (a TaskGroup's, a
    pool's), nested or chained as it may be."""
    logger, streams = logged
    secret = f"secret-{uuid.uuid4()}"
    sql.execute("CREATE TEMP TABLE refusing (k text PRIMARY KEY)")
    sql.execute("INSERT INTO refusing VALUES (%s)", [secret])
    refused: list[psycopg.Error] = []
    for _ in range(3):
        with pytest.raises(psycopg.errors.UniqueViolation) as raised:
            sql.execute("INSERT INTO refusing VALUES (%s)", [secret])
        refused.append(raised.value)
    try:
        try:
            raise refused[2]
        except psycopg.Error as error:
            inner = ExceptionGroup("retried", [error])
        raise ExceptionGroup("both failed", [refused[0], inner]) from refused[1]
    except ExceptionGroup:
        logger.exception("failed")
    text = streams["text"].getvalue()
    written = [text, json.loads(streams["json"].getvalue().splitlines()[-1])["exception"]]
    for each in written:
        assert secret not in each and "DETAIL" not in each, each
        said = 'duplicate key value violates unique constraint "refusing_pkey" (SQLSTATE 23505)'
        assert each.count(said) == 3, each
        assert "|" in each  # as a group's traceback is drawn


@pytest.mark.parametrize("between", ["\r", "\x0c", "\x1e", "\x85", "\u2028"])
def test_a_group_member_whose_values_break_lines_is_logged_without_them(
    logged: tuple[logging.Logger, dict[str, io.StringIO]],
    sql: psycopg.Connection[Any],
    between: str,
) -> None:
    """A group's traceback draws its margin after every line break
    `str.splitlines` knows (a carriage return, a form feed, U+2028...), not
    only after `\\n`: a refused value holding one (a caller's text) put a
    margin inside the member's DETAIL, which was then not found, and written
    whole."""
    logger, streams = logged
    secret = f"secret-{uuid.uuid4()}"
    value = f"first line{between}{secret}"
    sql.execute("CREATE TEMP TABLE refusing (k text PRIMARY KEY)")
    sql.execute("INSERT INTO refusing VALUES (%s)", [value])
    with pytest.raises(psycopg.errors.UniqueViolation) as raised:
        sql.execute("INSERT INTO refusing VALUES (%s)", [value])
    try:
        raise ExceptionGroup("failed", [raised.value])
    except ExceptionGroup:
        logger.exception("failed")
    text = streams["text"].getvalue()
    written = [text, json.loads(streams["json"].getvalue().splitlines()[-1])["exception"]]
    for each in written:
        assert secret not in each and "DETAIL" not in each, each
        said = 'duplicate key value violates unique constraint "refusing_pkey" (SQLSTATE 23505)'
        assert each.count(said) == 1, each


def test_the_log_format_setting_takes_text_or_json() -> None:
    assert Settings.load({}).log_format == "text"
    assert Settings.load({"SEALTRAIL_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SystemExit, match="SEALTRAIL_LOG_FORMAT='xml' must be one of text, json"):
        Settings.load({"SEALTRAIL_LOG_FORMAT": "xml"})


class _NoStatusYet:
    """The one thing ending a call asks of a gRPC servicer context."""

    def code(self) -> None:
        return None


def _said_here(caplog: pytest.LogCaptureFixture) -> str:
    """What was logged in the test's own thread, where these calls end: the
    servers of the test's process (the session's) log into caplog too, from
    their loops' threads."""
    return "\n".join(r.getMessage() for r in caplog.records if r.thread == threading.get_ident())


def test_a_call_ended_in_another_context_leaves_it_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream the client left may be closed by the garbage collector in
    another task's context: its call ends there without touching that context."""
    span = TracerProvider().get_tracer("test").start_span("call")
    current = trace.set_span_in_context(span)
    foreign = contextvars.copy_context()  # as it was before the call began

    def call_in_its_own_context() -> None:
        call = _Call("svc/Method", span, current, "r", no_meter().create_histogram("d"))
        assert otel_context.get_current() is current
        foreign.run(call.end, _NoStatusYet(), None)

    contextvars.copy_context().run(call_in_its_own_context)
    assert "Failed to detach context" not in _said_here(caplog)
    assert not span.is_recording()  # ended all the same
    assert foreign.run(otel_context.get_current) is not current


def test_a_call_ended_by_a_task_that_inherited_its_context_leaves_it_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio closes an abandoned stream in a task of its own, whose context is
    copied from wherever the loop was, often the call's own task with its
    trace context attached: the value is the same there, the context is not."""
    span = TracerProvider().get_tracer("test").start_span("call")
    current = trace.set_span_in_context(span)

    async def the_calls_task() -> None:
        call = _Call("svc/Method", span, current, "r", no_meter().create_histogram("d"))
        # Started while the call's trace context is attached: it inherits it.
        await asyncio.create_task(_end(call))
        assert otel_context.get_current() is current  # still attached here

    async def _end(call: _Call) -> None:
        assert otel_context.get_current() is current  # inherited
        call.end(_NoStatusYet(), None)

    asyncio.run(the_calls_task())
    assert "Failed to detach context" not in _said_here(caplog)
    assert not span.is_recording()  # ended all the same


@pytest.mark.parametrize(
    ("statement", "name"),
    [
        ("SELECT seq FROM events WHERE tenant_id = %s", "SELECT events"),
        ("COPY events (tenant_id, seq) FROM STDIN", "COPY events"),
        (_EXTEND, "UPDATE chain_heads"),  # the appender's one statement for a small batch
        (
            "WITH updated AS (UPDATE chain_heads SET tree_size = 1 RETURNING 1) SELECT 1",
            "UPDATE chain_heads",
        ),
        ("WITH recent AS (SELECT seq FROM events) SELECT count(*) FROM recent", "SELECT events"),
        (  # a row lock is no change; quoted names as sql.Identifier writes them
            "WITH current AS (SELECT 1 FROM alert_rules WHERE id = %s FOR SHARE),"
            ' added AS (INSERT INTO "alert_known_ips" (tenant_id) SELECT %s FROM current)'
            " SELECT EXISTS (SELECT 1 FROM added)",
            "INSERT alert_known_ips",
        ),
        (
            "WITH next AS (SELECT id FROM sink_batches FOR UPDATE SKIP LOCKED)"
            " DELETE FROM sink_batches USING next WHERE sink_batches.id = next.id",
            "DELETE sink_batches",
        ),
        (
            "WITH held AS (SELECT 1 FROM alert_rules FOR NO KEY UPDATE) SELECT count(*) FROM held",
            "SELECT alert_rules",
        ),
        ('SELECT 1 FROM "events" WHERE seq = %s', "SELECT events"),
        # A retention batch: deleted, with tombstones kept (it read `INSERT tree_nodes`).
        (_PURGE.format(conditions=SQL("true")).as_string(), "DELETE events"),
        # A function's FROM is no table's: an export's check of the tenant's
        # recent exports read `SELECT clock_timestamp`.
        (
            "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(received_at)), 0)"
            " FROM events WHERE tenant_id = %s AND action = 'audit_log.exported'",
            "SELECT events",
        ),
        (
            "SELECT extract(epoch FROM clock_timestamp() - (SELECT last_ended_at"
            " FROM deployment_jobs WHERE name = %s))::float8",
            "SELECT deployment_jobs",
        ),
    ],
)
def test_a_statements_span_is_named_for_what_it_does_to_which_table(
    statement: str, name: str
) -> None:
    assert describe(statement)[0] == name


class _Metadata:
    """A servicer context as the interceptor reads one: its metadata, no status yet."""

    def __init__(self, *pairs: tuple[str, str]) -> None:
        self._pairs = pairs

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._pairs

    def code(self) -> None:
        return None

    def time_remaining(self) -> None:
        return None  # no deadline

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        pass


def _correlation_of_a_call(*metadata: tuple[str, str]) -> Correlation:
    def call() -> Correlation:
        begun = TelemetryInterceptor(tracer=None)._begin(_Metadata(*metadata), "svc/Method")
        try:
            return current_correlation()
        finally:
            begun.end(_Metadata(), None)

    return contextvars.copy_context().run(call)


PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_call_with_two_parents_has_none() -> None:
    once = _correlation_of_a_call(("traceparent", PARENT))
    assert (once.trace_id, once.span_id) == (PARENT[3:35], PARENT[36:52])
    twice = _correlation_of_a_call(("traceparent", PARENT), ("traceparent", OTHER_PARENT))
    assert (twice.trace_id, twice.span_id) == ("", "")


def test_baggage_is_never_parsed(caplog: pytest.LogCaptureFixture) -> None:
    """Parsing it wrote a warning per malformed entry, with the caller's text,
    before any token was checked: 180 lines a call for anyone to send. The
    call runs in this thread, and so would its warnings: those of other
    threads (a server of another test, busy on a loaded machine) are not
    the call's."""
    with caplog.at_level(logging.WARNING):
        _correlation_of_a_call(("traceparent", PARENT), ("baggage", "a," * 180))
    assert [record for record in caplog.records if record.thread == threading.get_ident()] == []


@pytest.mark.parametrize(
    ("metadata", "parent"),
    [
        # Too long to be one (the W3C propagator's bound): no parent.
        ((("traceparent", PARENT + "-" + "x" * 600),), ""),
        # A tracestate that is none is dropped, the traceparent kept (W3C).
        ((("traceparent", PARENT), ("tracestate", "=,=,===")), PARENT[3:35]),
        ((("traceparent", PARENT), ("tracestate", "k=v," + "UPPER=case")), PARENT[3:35]),
        (
            (("traceparent", PARENT), ("tracestate", ",".join(f"k{i}=v" for i in range(40)))),
            PARENT[3:35],
        ),
        ((("traceparent", PARENT), ("tracestate", "k=" + "v" * 9000)), PARENT[3:35]),
    ],
)
def test_a_malformed_trace_context_is_dropped_without_a_warning(
    caplog: pytest.LogCaptureFixture, metadata: tuple[tuple[str, str], ...], parent: str
) -> None:
    """The W3C propagator warned of each malformed traceparent or tracestate,
    most with the caller's text, before any token was checked: a line in the
    server's log per call, for anyone who can reach the port to send."""
    with caplog.at_level(logging.WARNING):
        correlation = _correlation_of_a_call(*metadata)
    assert correlation.trace_id == parent
    assert [record for record in caplog.records if record.thread == threading.get_ident()] == []


def test_minted_request_ids_are_random_uuids_as_parsed() -> None:
    """A call sent without a request id is given a version-4 UUID, written as
    a received one is kept (lowercase, hyphenated), and never the same twice."""
    minted = [new_request_id() for _ in range(10_000)]
    for request_id in minted[:1000]:
        assert parse_request_id(request_id) == request_id
        assert uuid.UUID(request_id).version == 4
        assert uuid.UUID(request_id).variant == uuid.RFC_4122
    assert len(set(minted)) == len(minted)
    # Each of the 122 random bits takes both values somewhere among them.
    bits = [uuid.UUID(request_id).int for request_id in minted[:64]]
    varying = functools.reduce(operator.or_, (a ^ b for a, b in itertools.pairwise(bits)))
    assert varying == (1 << 128) - 1 & ~(0xF << 76) & ~(0x3 << 62)
