"""The console's /api/counts with `measure` (the Breakdown panel's Duration):
a value CountMeasure has not is refused as the API refuses it, a 400 naming
`measure`; one it has is passed on to CountEvents, each group answering its
figure in ms (null for a group with no duration) and how many events were
measured, the access record naming the measure; against a real server and
PostgreSQL."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from google.protobuf import json_format

from sealtrail import AuditClient
from tests.browser.test_console_api import _reads, get
from tests.conftest import ServerThread

# (route, duration in ms; 0: none recorded): /v1/a's four requests took 10, 20,
# 30 and 40 ms (p95 38.5, interpolated) and one recorded none; /v1/b none at all.
CALLS = [("/v1/a", 10.0), ("/v1/a", 20.0), ("/v1/a", 30.0), ("/v1/a", 40.0), ("/v1/a", 0.0),
         ("/v1/b", 0.0), ("/v1/b", 0.0)]  # fmt: skip


@pytest.fixture
def api(console_server: ServerThread) -> str:
    return f"http://127.0.0.1:{console_server.service.console_port}/api/"


def _counted(api: str, token: str, **query: str) -> tuple[int, Any]:
    return get(api + "counts?" + urllib.parse.urlencode({"actions": "api.call", **query}), token)


def test_a_measure_the_api_does_not_know_is_refused_naming_measure(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    reader = console_server.token(tenant, "reader")
    for query in (
        "group_by=http_route&measure=p95",  # the CLI's word, not CountMeasure's
        "group_by=http_route&measure=DURATION_P95",
        "group_by=http_route&measure=COUNT_MEASURE_DURATION_P95",
        "group_by=http_route&measure=duration_p95&measure=duration_p50",
        "group_by=http_route&measure=" + "x" * 5000,
    ):
        status, body = get(api + f"counts?{query}", reader)
        assert status == 400, (query, body)
        assert [f["field"] for f in body["fields"]] == ["measure"], (query, body)
        assert len(body["fields"][0]["description"].encode()) <= 100, body
    # A search announcing a count with one is refused as that count would be.
    announced = urllib.parse.urlencode({"group_by": "action", "limit": "10", "measure": "p95"})
    status, body = get(api + "events?" + urllib.parse.urlencode({"count": announced}), reader)
    assert status == 400 and [f["field"] for f in body["fields"]] == ["count"], body
    assert "measure: unknown 'p95'" in body["fields"][0]["description"], body
    assert _reads(console_server, tenant) == []  # refused before any read


def test_a_measure_is_passed_on_and_each_group_says_its_figure_and_how_many_were_measured(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for route, ms in CALLS:
            client.record(action="api.call", actor_id="k1", http_route=route, duration_ms=ms)
    reader = console_server.token(tenant, "reader")
    status, body = _counted(api, reader, group_by="http_route", measure="duration_p95")
    assert status == 200, body
    assert body["groups"] == [
        {"key": "/v1/a", "count": 5, "value": 38.5, "measured": 4},
        {"key": "/v1/b", "count": 2, "value": None, "measured": 0},
    ]
    for measure, figure in (("duration_avg", 25.0), ("duration_p50", 25.0), ("duration_max", 40.0)):
        status, body = _counted(api, reader, group_by="http_route", measure=measure)
        assert status == 200 and body["groups"][0]["value"] == figure, (measure, body)
    # None (or empty): the count alone, as before measures.
    for query in ({}, {"measure": ""}):
        status, body = _counted(api, reader, group_by="http_route", **query)
        assert status == 200, body
        assert body["groups"] == [{"key": "/v1/a", "count": 5}, {"key": "/v1/b", "count": 2}]
    details = [json_format.MessageToDict(read.details) for read in _reads(console_server, tenant)]
    assert [d.get("measure") for d in details] == [
        "duration_p95", "duration_avg", "duration_p50", "duration_max", None, None
    ]  # fmt: skip


def test_a_search_announces_the_panel_s_measure_and_its_one_record_says_it(
    api: str, console_server: ServerThread, tenant: str
) -> None:
    """The page's first page announces the Breakdown's count, measure
    included (ADR 0137): the search's record says it, and the panel's count
    naming the view is not recorded again."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for route, ms in CALLS:
            client.record(action="api.call", actor_id="k1", http_route=route, duration_ms=ms)
    reader = console_server.token(tenant, "reader")
    panel = {"group_by": "http_route", "limit": "10", "measure": "duration_p95"}
    search = {"actions": "api.call"}
    query = [*search.items(), ("count", urllib.parse.urlencode(panel))]
    status, page = get(api + "events?" + urllib.parse.urlencode(query), reader)
    assert status == 200 and "view" in page, page
    status, body = _counted(api, reader, **panel, view=page["view"])
    assert status == 200 and body["groups"][0]["value"] == 38.5, body
    [record] = _reads(console_server, tenant)
    assert json_format.MessageToDict(record.details)["counts"] == [
        {"group_by": "http_route", "limit": 10, "measure": "duration_p95"}
    ]
