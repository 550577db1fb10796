"""The groupings /api/counts takes (`_GROUPINGS`) are the ones docs/console.md
lists and, the chart's hours and days aside, the ones the Breakdown panel
offers: CountEvents counted by IP, resource and recording token long before
the panel or its docs offered them (helper-445)."""

from __future__ import annotations

import re
from pathlib import Path

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
    select = re.search(r'<select id="breakdown-by">(.*?)</select>', page, re.DOTALL)
    assert select is not None, "index.html has no Breakdown list"
    offered = re.findall(r'<option value="([a-z_]+)"', select.group(1))
    assert sorted(offered) == sorted(set(server._GROUPINGS) - CHART)
