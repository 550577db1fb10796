"""Python regexes rewritten for RE2 mean what they mean in Python: their
classes take the same characters, their matches have the same spans; what RE2
cannot say with that meaning is refused (None), never approximated."""

from __future__ import annotations

import re

import pytest
import re2

from sealtrail_server.python_regex_on_re2 import translate

_BMP = [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]


@pytest.mark.parametrize("escape", [r"\d", r"\D", r"\w", r"\W", r"\s", r"\S", r"[\d]", r"[\w]",
                                    r"[\s]", r"[\D]", r"[^\w\d]"])  # fmt: skip
def test_a_class_takes_the_same_characters_on_both_engines(escape: str) -> None:
    translated = translate(escape)
    assert translated is not None
    python, on_re2 = re.compile(escape), re2.compile(translated)
    differ = [c for c in _BMP if bool(python.fullmatch(c)) != bool(on_re2.fullmatch(c))]
    assert differ == [], [hex(ord(c)) for c in differ[:10]]


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"PIN-\d{,6}", "PIN-4821 PIN-1234567 PIN-"),
        (r"x{,}y|PIN-\d{,}", "xxxy y PIN-48213"),  # `{,}` is `*` (helper-77)
        (r"geheim_\w+", "geheim_müller123, geheim_日本語 geheim_"),
        (r"acct\s\d+", "acct\u00a04711 acct\u20034712 acct\u200b4713"),
        (r"\d{4}-\d{4}", "\uff11\uff12\uff13\uff14-5678 \u0661\u0662\u0663\u0664-1234"),
        (r"end\Z", "the end"),
        (r"caf\u00e9|\U0001F511", "café \U0001f511"),
        (r"[]x]+|[^]a-z]+", "]]x] ABC"),
        (r"[\[]\d", "[1 [a"),
        (r"\[\d\]", "[7]"),
    ],
)
def test_matches_have_the_same_spans_on_both_engines(pattern: str, text: str) -> None:
    translated = translate(pattern)
    assert translated is not None
    python = [match.span() for match in re.finditer(pattern, text)]
    assert python  # each case matches something
    assert [match.span() for match in re2.compile(translated).finditer(text)] == python


@pytest.mark.parametrize(
    "pattern",
    [
        r"BADGE-\d+$",
        r"[\W]",
        r"[^\S]x",
        # RE2's word characters are ASCII: `\b` beside a Cyrillic letter is none (helper-77).
        r"\b\u043f\u0438\u043d=\S+",  # Cyrillic "pin"
        r"x\By",
        r"[[:alpha:]]+",  # a POSIX class to RE2, a set and a `]` to Python
        r"(a)(b)\2",
    ],
)
def test_what_re2_cannot_say_with_pythons_meaning_is_refused(pattern: str) -> None:
    assert translate(pattern) is None
