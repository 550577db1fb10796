"""docs/console.md's list of the page's URL parameters ("Page parameters:")
names every one the page keeps in its URL: each field of its filter form, and
each of the Breakdown panel's lists, by its `name` (the URL's parameter,
breakdown.js), and the events' display switches (`utc`): the panel's grouping
and measure were kept nowhere, and a
parameter added to the page without its line went unlearned by a script
writing links by the docs."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "console.md"
PAGE = ROOT / "server" / "sealtrail_server" / "console" / "static" / "index.html"


class _Named(HTMLParser):
    """The names of the filter form's fields, of the Breakdown panel's lists and
    of the events' display switches."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        given = dict(attrs)
        if given.get("id") in ("filters", "breakdown", "events-display"):
            self._in = tag
        elif self._in is not None and tag in ("input", "select") and given.get("name"):
            self.names.add(str(given["name"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None


def test_every_page_parameter_is_listed() -> None:
    page = _Named()
    page.feed(PAGE.read_text(encoding="utf-8"))
    assert {"range", "actions", "breakdown", "breakdown_measure", "utc"} <= page.names, page.names
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"^- Page parameters:(.*?)\n(?:- |\n)", text, re.MULTILINE | re.DOTALL)
    assert found is not None, "docs/console.md lists no page parameters"
    listed = set(re.findall(r"`([a-z_]+)`", found.group(1)))
    assert page.names - listed == set()
