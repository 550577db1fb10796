"""docs/console.md's list of the console API's filter parameters names every
one the console reads (`FILTER_PARAMETERS`): `actor_email_domain` and
`country`, merged in with `exclude_actions` and `severities`, were read but
left off the list, so a script writing URLs by the docs never learned them."""

from __future__ import annotations

import re
from pathlib import Path

from sealtrail_server.console.parameters import FILTER_PARAMETERS

DOC = Path(__file__).resolve().parents[2] / "docs" / "console.md"


def test_every_filter_parameter_is_listed() -> None:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"^Filter parameters:(.*?)(?:\n\n)", text, re.MULTILINE | re.DOTALL)
    assert found is not None, "docs/console.md lists no filter parameters"
    listed = set(re.findall(r"`([a-z_]+)`", found.group(1)))
    assert set(FILTER_PARAMETERS) - listed == set()
