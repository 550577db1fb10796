"""Every relative link of the READMEs and docs/*.md leads somewhere: its file
(or directory) exists, and its `#anchor` names a heading of the file it points
to, as GitHub makes one (lower case, punctuation dropped, spaces to hyphens, a
repeated heading numbered `-1`, `-2`...). A reader who follows one is never
left at a missing page or at the top of a long one. Links to other sites are
not followed (no network)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "clients/python/README.md",
    *sorted(ROOT.glob("docs/*.md")),
    *sorted(ROOT.glob("docs/adr/*.md")),
]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
# [text](target) and [text](target "title"); an image's ![...](...) too.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def _prose(text: str) -> str:
    """`text` without its code blocks and code spans, whose brackets are no links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading of this text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors a link to `path` may name."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set(HTML_ANCHOR.findall(text))
    for _, heading in HEADING.findall(text):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> Iterator[str]:
    """The targets of the links of `path`."""
    text = _prose(path.read_text(encoding="utf-8"))
    yield from LINK.findall(text)
    yield from REFERENCE.findall(text)


def broken_links(path: Path) -> list[str]:
    """The relative links of `path` that lead nowhere, each with the reason."""
    broken = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto: ...: another site
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    return broken


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_a_missing_file_or_heading_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text(
        "# Other\n\n## What `it` does, and why?\n\n## Again\n\n## Again\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "See [it](other.md#what-it-does-and-why), [again](other.md#again-1),\n"
        "[gone](gone.md), [no such part](other.md#nowhere) and [here](#top).\n"
        "`[code](not-a-link.md)`\n\n```sh\n[x](fenced.md)\n```\n\n# Top\n"
    )
    assert broken_links(page) == [
        "gone.md: no such file",
        "other.md#nowhere: no heading #nowhere in other.md",
    ]


def test_every_doc_is_linked_from_the_readme() -> None:
    """A page of docs/ nobody links to is a page a reader never finds."""
    readme = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")}
    assert [p.name for p in sorted(ROOT.glob("docs/*.md")) if p.resolve() not in readme] == []
