"""The groupings /api/counts takes (`_GROUPINGS`) are the ones docs/console.md
lists and, the chart's hours and days aside, the ones the Breakdown panel
offers: CountEvents counted by IP, resource and recording token long before
the panel or its docs offered them (helper-445)."""

from __future__ import annotations

import re
from pathlib import Path

from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail_server.console import server

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "console.md"
PAGE = ROOT / "server" / "sealtrail_server" / "console" / "static" / "index.html"
CHART = {"hour", "day"}


def test_the_documented_groupings_are_the_accepted_ones() -> None:
    text = DOC.read_text(encoding="utf-8")
    row = re.search(r"^\| `GET /api/counts\?.*$", text, re.MULTILINE)
    assert row is not None, "docs/console.md has no /api/counts row"
    listed = {
        name for found in re.findall(r"`group_by=([a-z_\\|]+)`", row.group(0))
        for name in found.split("\\|")
    }  # fmt: skip
    assert listed == set(server._GROUPINGS)


def test_the_breakdown_panel_offers_every_field_grouping() -> None:
    page = PAGE.read_text(encoding="utf-8")
    select = re.search(r'<select id="breakdown-by"[^>]*>(.*?)</select>', page, re.DOTALL)
    assert select is not None, "index.html has no Breakdown list"
    offered = re.findall(r'<option value="([a-z_]+)"', select.group(1))
    assert sorted(offered) == sorted(set(server._GROUPINGS) - CHART)


def test_the_documented_measures_are_the_accepted_ones_and_the_panel_offers_each() -> None:
    """/api/counts' `measure` takes every CountMeasure of durations (as the
    access record names it, `duration_p95`), docs/console.md lists exactly
    those, and the Breakdown panel's Duration list offers each, and none
    first. A detail's measures, which need a key the panel has no field
    for, are the API's and the CLI's alone (ADR 0161)."""
    assert sorted(server._MEASURES.values()) == sorted(
        value
        for value in pb.CountMeasure.values()
        if pb.CountMeasure.Name(value).startswith("COUNT_MEASURE_DURATION_")
    )
    assert all(name == pb.CountMeasure.Name(value).removeprefix("COUNT_MEASURE_").lower()
               for name, value in server._MEASURES.items())  # fmt: skip
    row = re.search(r"^\| `GET /api/counts\?.*$", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert row is not None, "docs/console.md has no /api/counts row"
    listed = re.search(r"`measure=([a-z0-9_\\|]+)`", row.group(0))
    assert listed is not None, "the /api/counts row lists no measure"
    assert set(listed.group(1).split("\\|")) == set(server._MEASURES)
    page = PAGE.read_text(encoding="utf-8")
    select = re.search(r'<select id="breakdown-measure"[^>]*>(.*?)</select>', page, re.DOTALL)
    assert select is not None, "index.html has no Breakdown measure list"
    offered = re.findall(r'<option value="([a-z0-9_]*)"', select.group(1))
    assert offered[0] == "" and sorted(offered[1:]) == sorted(server._MEASURES)
