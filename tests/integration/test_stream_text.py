"""Live streams of a full-text filter match in the process (domain/text_search.py)
exactly what PostgreSQL's `@@` matches, and ask the table nothing per delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from sealtrail import AsyncAuditClient, AuditClient, build_event, build_filter
from sealtrail.v1 import event_pb2
from sealtrail_server.api import stream as stream_api
from sealtrail_server.domain.event import READ_RECORD_ACTIONS
from sealtrail_server.domain.filters import FilterDraft, RecordMatcher, validate_filter
from sealtrail_server.domain.text_search import parse_query, websearch_text
from sealtrail_server.store.events import filter_conditions
from sealtrail_server.stream import hub as hub_module
from tests.conftest import ServerThread

# Words as PostgreSQL's parser cuts them: hyphens, paths and hosts, emails,
# quotes, backslashes, numbers, case, words beyond Latin, repeats.
_EVENTS: list[dict[str, Any]] = [
    {"description": "Payroll export started", "details": {"file": "payroll-2026.csv"}},
    {"description": "export of the payroll", "details": {"by": "o'neil", "n": 1.5}},
    {"description": "payroll", "details": {"a": "export", "b": ["payroll export", 7]}},
    {"description": "key rotation", "resource_name": "Production Key v2"},
    {"description": "see x.com/path and http://x.com/p?q=1", "details": {"to": "a@b.com"}},
    {"description": "back\\slash it's Straße ünïcode", "actor_display_name": "Ann Lee"},
    {"description": "foo-bar baz foo bar", "details": {"deep": {"er": "salary review"}}},
    {"description": "salary salary salary", "details": {"x": "1 2 3 4 5 6"}},
    {"description": "nothing to see", "details": {}},
]
_TEXTS = [
    "payroll",
    "PAYROLL Export",
    '"payroll export"',
    '"export payroll"',
    "payroll -export",
    "payroll or rotation",
    '-"payroll export" payroll',
    "foo-bar",
    '"foo-bar baz"',
    '"bar foo"',
    "x.com/path",
    "http://x.com/p?q=1",
    "a@b.com",
    "o'neil",
    "back\\slash",
    "it's",
    "straße",
    "1.5",
    '"production key"',
    "key v2",
    "ann",
    "salary",
    '"salary salary"',
    '"1 2" -"2 1"',
    "payroll-2026.csv",
    "-nothing",
    '"payroll "export" started"',
    '"payroll export',
    '"<b>" payroll or "!"',
    '"export or payroll" -"payroll-2026"',
    "payroll - export",
    "- payroll -- export -",
    'payroll -"payroll export" - key',
]


def _matched_by_sql(
    sql: psycopg.Connection[Any], tenant: str, draft: FilterDraft, seqs: list[int]
) -> set[int]:
    conditions, params = filter_conditions(tenant, validate_filter(draft))
    query = psycopg.sql.SQL("SELECT seq FROM events WHERE {} AND seq = ANY(%s)").format(
        psycopg.sql.SQL(" AND ").join(conditions)
    )
    return {seq for (seq,) in sql.execute(query, [*params, seqs]).fetchall()}


def test_text_matched_in_the_process_is_what_postgresql_matches(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    client.record_batch([build_event(action="doc.edit", actor_id="u", **e) for e in _EVENTS])
    # Reads' records, whose filters are searched only by a filter naming them (ADR 0012).
    for text in ("salary payroll", "foo-bar"):
        next(iter(client.query(build_filter(text=text), page_size=1)), None)
    rows = sql.execute(
        hub_module._ROWS_WITH_WORDS, [list(READ_RECORD_ACTIONS), tenant, 0, 1 << 40]
    ).fetchall()
    events = [hub_module._live_event(row) for row in rows]
    seqs = [event.stored.seq for event in events]
    assert all(stream_api._searchable(event) for event in events)
    assert sum(event.read_words is not None for event in events) == 2
    differences = []
    for text in _TEXTS:
        for actions in ([], ["audit_log.*"], ["doc.edit", "audit_log.queried"]):
            draft = FilterDraft(text=text, actions=actions)
            (query_text,) = sql.execute(
                "SELECT websearch_to_tsquery('simple', %s)::text", [websearch_text(text)]
            ).fetchone() or ("",)
            query = parse_query(query_text)
            assert query is not None, (text, query_text)  # matched here, not left to SQL
            matcher = RecordMatcher(validate_filter(draft), text=query)
            here = {event.stored.seq for event in events if stream_api._matches(matcher, event)}
            there = _matched_by_sql(sql, tenant, draft, seqs)
            if here != there:
                differences.append((text, actions, query_text, sorted(here ^ there)))
    assert differences == []


@pytest.fixture
async def async_client(server: ServerThread, tenant: str) -> AsyncIterator[AsyncAuditClient]:
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as client:
        yield client


async def test_a_live_full_text_stream_reads_no_table_per_delivery(
    async_client: AsyncAuditClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[tuple[int, int]] = []
    table = stream_api.stream_events

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append((kwargs["after_seq"], kwargs["upto_seq"]))
        return table(*args, **kwargs)

    monkeypatch.setattr(stream_api, "stream_events", counted)
    beats: list[int] = []
    searched = build_filter(text='"payroll export" -draft')
    stream = async_client.stream(searched, on_heartbeat=beats.append)
    received: list[event_pb2.Event] = []

    async def read() -> None:
        async for event in stream:
            received.append(event)

    reader = asyncio.ensure_future(read())
    try:
        while not beats:
            await asyncio.sleep(0.01)
        sent = []
        for n in range(20):
            # Only the first matches: the others have the words apart, or `draft`.
            descriptions = [
                f"payroll export {n}",
                f"export payroll {n}",
                f"payroll export draft {n}",
            ]
            recorded = await async_client.record_batch(
                [build_event(action="doc.edit", actor_id="u", description=d) for d in descriptions]
            )
            first = recorded[0].event
            assert first is not None
            sent.append(first.seq)
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                await asyncio.sleep(0.01)
        assert [event.seq for event in received] == sent
        assert reads == []  # the hub's words decided it, not a read per delivery
    finally:
        reader.cancel()
        await stream.aclose()


async def test_a_live_stream_reads_a_dash_standing_alone_as_query_does(
    async_client: AsyncAuditClient,
) -> None:
    """A live stream's text is the query Query asks (domain/text_search.py,
    `websearch_text`): `payroll - q3` finds the third quarter's payroll, not
    every quarter's but the third's."""
    beats: list[int] = []
    stream = async_client.stream(build_filter(text="payroll - q3"), on_heartbeat=beats.append)
    received: list[str] = []

    async def read() -> None:
        async for event in stream:
            received.append(event.description)

    reader = asyncio.ensure_future(read())
    try:
        while not beats:
            await asyncio.sleep(0.01)
        descriptions = ["payroll q2", "payroll q3", "payroll q2 again", "payroll q3 again"]
        await async_client.record_batch(
            [build_event(action="doc.edit", actor_id="u", description=d) for d in descriptions]
        )
        async with asyncio.timeout(30):
            while len(received) < 2:
                await asyncio.sleep(0.01)
        assert received == ["payroll q3", "payroll q3 again"]
    finally:
        reader.cancel()
        await stream.aclose()
