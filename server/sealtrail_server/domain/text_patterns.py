"""What redaction's value rules are made of: a compiled pattern (Python's
`re` or RE2's), and a `ValuePattern`, a rule that finds a secret in text."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol


class TextMatch(Protocol):
    """What redaction reads of a match (Python's `re.Match`, RE2's)."""

    def group(self, group: int, /) -> Any: ...
    def start(self, group: int, /) -> int: ...
    def end(self, group: int, /) -> int: ...


class TextPattern(Protocol):
    """What redaction asks of a compiled pattern: Python's `re.Pattern`, or
    RE2's (google-re2), which an operator's patterns are compiled with."""

    @property
    def pattern(self) -> str: ...
    def search(self, string: str, pos: int = 0, /) -> TextMatch | None: ...
    def sub(self, repl: Callable[[Any], str], string: str, /) -> str: ...


# An encoded character, which ends in a letter or a digit: a percent-encoded
# one (`%20`, `%3D`, `%22`, as URLs and forms write them), an escaped line
# break, tab, backspace or form feed (`\n` in text holding JSON; `\b` and `\f`
# as Python's json, JavaScript's JSON.stringify and Go's encoding/json write
# those), one JSON escaped as `\uXXXX` (.NET writes `"` as `\u0022`). A secret
# right after one starts there: a word boundary alone (`\b`) kept
# `Bearer%20ghp_…`, `\nAKIA…` or `\fghp_…` whole. (`\/`, `/` as PHP's
# json_encode escapes it, ends in no word character: a boundary already.)
# Fixed-width look-behinds, tried once at each place: a rule stays linear.
ENCODED_BEFORE: Final = r"(?<=%[0-9A-Fa-f]{2})|(?<=\\[nrtbf])|(?<=\\u[0-9A-Fa-f]{4})"


# A quote as text carries it: as it is, escaped as JSON writes one inside a
# string (`\"`), or as `\u0022` or `\u0027` (.NET escapes quotes so). A rule
# that wanted `"` or `'` beside a name missed `{\"Cookie\": \"sid=…\"}`.
QUOTE: Final = r"(?:\\?[\"']|\\u002[27])"


def starts_after(first: str, kept: str = r"\w") -> str:
    """Where a secret whose first character is of the class `first` starts:
    after no character of the class `kept` (a word character, as `\\b` before
    a word; a rule reading a longer run gives its own class), or right after
    an encoded character (`ENCODED_BEFORE`). Every rule that starts a secret
    at a boundary uses this, not a copy. The first character is looked at
    first: it fails at most places at once, where the look-behinds would each
    be tried (a search took three times what `\\b` did)."""
    return rf"(?=[{first}])(?:(?<!{kept})|{ENCODED_BEFORE})"


@dataclass(frozen=True)
class ValuePattern:
    """A secret inside text: `regex` finds it; the `group` (0: the whole match) is what is
    replaced. `check`, when set, must also accept the secret. `anchor`, when set, is a cheap
    regex that matches wherever `regex` can: text without it is not scanned further. Each of its
    alternatives should start with a literal character (redaction.py's `_prefilter` says why).
    `in_identifiers`: the pattern is also looked for in ids (a token is one, a `name=value` is
    not). `shorter`, when set, is matched where a secret the check refused starts, and its match
    checked in turn: a secret the longer match ran on past. `overlapping`: where the check
    refused a match (and `shorter`), the text is searched again from the match's next character,
    not from its end: a secret may start inside what was none. `hmac_input`, when set, gives the
    text HMAC mode hashes of a secret: one written in several ways (a card grouped or not) must
    get one HMAC, to join and to be found. `kept_at`, when set, tells whether a secret the check
    accepted, found at a position of a text, is part of a larger value the rule keeps (a card's
    digits inside an IBAN). `kept_match`, when set, tells from the rule's whole match whether a
    secret the check accepted is none by what the match says beside it (a random-looking
    identifier of a kept prefix, under a name that is no secret's)."""

    name: str
    regex: TextPattern
    group: int = 0
    check: Any = None  # Callable[[str], bool]; Any keeps the dataclass hashable
    anchor: str | None = None
    in_identifiers: bool = True
    shorter: re.Pattern[str] | None = None
    overlapping: bool = False
    hmac_input: Any = None  # Callable[[str], str]
    kept_at: Any = None  # Callable[[str, int], bool]
    kept_match: Any = None  # Callable[[re.Match[str]], bool]


def value_pattern(
    name: str,
    regex: str,
    group: int = 0,
    check: Any = None,
    *,
    anchor: str,
    in_identifiers: bool = True,
) -> ValuePattern:
    """A `ValuePattern` of a regex compiled by Python's `re`."""
    return ValuePattern(name, re.compile(regex), group, check, anchor, in_identifiers)
