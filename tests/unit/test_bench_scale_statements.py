"""The scale figures' raw SQL baselines (bench/scale.py) run exactly the
statement the server runs for the Query they stand beside: the statement is
taken from the server's own span of it (store/traced.py), under the Query's
span, and compared with the bench's, text for text."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench import scale
from sealtrail import AuditClient, build_filter
from tests.conftest import ServerThread

QUERY_SPAN = "sealtrail.v1.AuditLogService/Query"


@pytest.fixture(scope="module")
def loaded(migrated_database_url: str) -> scale.ScaleLog:
    tenant = f"scale-{uuid.uuid4().hex[:8]}"
    events = 1000
    scale.load_tenant(migrated_database_url, tenant, events)
    start = datetime.now(UTC) - timedelta(days=scale.DAYS)
    return scale.ScaleLog([tenant], events, start, 0.0)


def page_statements(exporter: InMemorySpanExporter) -> list[str]:
    """The text of each statement read under the one Query span exported."""
    spans: tuple[ReadableSpan, ...] = exporter.get_finished_spans()
    (query,) = [span for span in spans if span.name == QUERY_SPAN]
    return [
        str((span.attributes or {})["db.query.text"])
        for span in spans
        if span.parent is not None
        and span.parent.span_id == query.context.span_id
        and span.name == "SELECT events"
    ]


@pytest.mark.parametrize("figure", ["latest", "day"])
def test_the_raw_sql_is_the_statement_the_server_runs_for_that_query(
    figure: str,
    traced_server: ServerThread,
    loaded: scale.ScaleLog,
    exporter: InMemorySpanExporter,
    migrated_database_url: str,
) -> None:
    """The baseline was the page's bare SELECT with a LIMIT of the page's
    size, where Query runs it inside a cut at its bytes and beside the log's
    size, for two rows more: a ratio of two different statements."""
    (tenant,) = loaded.tenants
    if figure == "latest":
        query, _ = scale._latest_statement(loaded, random.Random(7))
        event_filter = build_filter(actions=scale.ACTION)
        page_size = scale.LATEST
    else:
        query, _ = scale._day_statement(loaded, random.Random(7))
        chance = random.Random(7)
        chance.choice(loaded.tenants)  # as _day_statement draws its tenant, then its day
        since, until = scale._day(loaded, chance)
        event_filter = build_filter(since=since, until=until)
        page_size = scale.DAY_PAGE
    exporter.clear()
    with AuditClient(traced_server.target, token=traced_server.token(tenant)) as client:
        client.query_page(event_filter, page_size=page_size)
    with psycopg.connect(migrated_database_url) as conn:
        assert page_statements(exporter) == [query.as_string(conn)]
