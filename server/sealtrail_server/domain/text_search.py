"""A filter's `text`, matched in the process as PostgreSQL matches it.

A live stream of a full-text filter asked the database about every delivery,
each subscriber on its own (about 2.5x the CPU of an action filter's at 100
streams). PostgreSQL's parser is not reproduced here: the words are its own.
The stream's query is `websearch_to_tsquery('simple', text)` as PostgreSQL
writes it, read once per stream; an event's words are the tsvector the filter's
SQL searches (store/events.py, `SEARCHED_VECTOR`), as PostgreSQL writes it, read
by the hub's fetch once for every subscriber. What is evaluated here is only
`tsvector @@ tsquery` of those two: lexemes, `!`, `&`, `|`, and phrases of
lexemes (`<->`, `<N>`), as PostgreSQL's TS_execute does. Anything else (a
prefix, a weight, a phrase of more than lexemes, a lexeme without positions)
is left to the database: `parse_query` or `parse_vector` answers None.

What PostgreSQL is given is `websearch_text(text)`, the filter's text with a
dash standing alone made a space: every search (Query, Count, Export, a
stream's past and live events, sinks) asks that one query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# A tsvector's words: each lexeme with the positions where it occurs.
Vector = dict[str, frozenset[int]]

# What PostgreSQL's parser takes for a space (t_isspace): ASCII's whitespace,
# and in a UTF-8 database the C library's other spaces (iswspace, glibc's in
# every UTF-8 locale): the Ogham space mark, the en quad to the six-per-em
# space, the thin and hair spaces, the line and paragraph separators, the
# medium mathematical space and the ideographic space (U+3000, which Japanese
# input methods type). Not the no-break spaces (U+00A0, U+2007, U+202F): to
# PostgreSQL they join what is beside them into one operand, as a letter does.
# tests/integration/test_text_search_quotes.py asks the database for its own.
_SPACE: Final = " \t\n\v\f\r\u1680\u2000-\u2006\u2008-\u200a\u2028\u2029\u205f\u3000"
# A `-`, or a run of them, with a space or the text's end on each side: a dash
# typed between words (`payroll - q3`, `payroll　-　q3`), which websearch_to_tsquery
# reads as the negation of the word after it, spaces between or not.
_DASH_ALONE: Final = re.compile(f"(?<![^{_SPACE}])-+(?![^{_SPACE}])")

_POSITION: Final = re.compile(r"(\d+)[ABCD]?")
_OPERATOR: Final = re.compile(r"<(-|\d+)>")


def websearch_text(text: str) -> str:
    """`text` as the search hands it to `websearch_to_tsquery`: a dash standing
    alone, outside quotes, is no operator (`payroll - q3` finds both words, as
    `payroll q3` does), where PostgreSQL made it the negation of the next word
    (`payroll -q3`); a space is any PostgreSQL's parser takes for one. A `-`
    joined to a word still excludes it (`-q3`, and `payroll - -q3` is
    `payroll -q3`), and in a phrase a `-` is no operator to PostgreSQL either.
    Quotes pair as PostgreSQL pairs them: each `"` opens a phrase or closes
    the open one."""
    parts = text.split('"')
    last = len(parts) - 1
    for i in range(0, len(parts), 2):  # outside quotes
        # Framed by the quotes beside it, of which a dash is not clear (`-"a b"`).
        framed = ('"' if i else "") + parts[i] + ('"' if i < last else "")
        unframed = _DASH_ALONE.sub(" ", framed)
        parts[i] = unframed[1 if i else 0 : len(unframed) - (1 if i < last else 0)]
    return '"'.join(parts)


@dataclass(frozen=True, slots=True)
class _Lexeme:
    word: str


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node


@dataclass(frozen=True, slots=True)
class _Both:  # &
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Either:  # |
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Phrase:  # <N>: right's words N positions after left's
    left: _Lexeme | _Phrase
    right: _Lexeme | _Phrase
    distance: int


_Node = _Lexeme | _Not | _Both | _Either | _Phrase


class _Unsupported(Exception):
    pass


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The quoted lexeme at `start` (a `'`) of PostgreSQL's output, in which `'`
    and `\\` are doubled, and the index past its closing quote."""
    chars: list[str] = []
    i = start + 1
    while True:
        if i >= len(text):
            raise _Unsupported
        char = text[i]
        if char in "'\\":
            if text[i + 1 : i + 2] != char:
                if char == "'":
                    return "".join(chars), i + 1
                raise _Unsupported
            i += 1
        chars.append(char)
        i += 1


@dataclass(frozen=True, slots=True)
class TextQuery:
    """A stream's `text` as PostgreSQL's tsquery; `matches` is `@@`."""

    root: _Node | None  # None: a query of no word, which matches nothing

    def matches(self, vector: Vector) -> bool:
        return self.root is not None and _holds(self.root, vector)


def parse_query(text: str) -> TextQuery | None:
    """The tsquery PostgreSQL wrote as `text`; None if it has more than this
    module evaluates."""
    try:
        tokens = _query_tokens(text)
        if not tokens:
            return TextQuery(None)
        node, end = _parse(tokens, 0, 0)
    except _Unsupported:
        return None
    return TextQuery(node) if end == len(tokens) else None


# ("word", a lexeme), ("op", one of "&|!()"), ("phrase", N)
_Token = tuple[str, str | int]


def _query_tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == " ":
            i += 1
        elif char == "'":
            word, i = _quoted(text, i)
            if text[i : i + 1] == ":":  # a prefix (`:*`) or weights
                raise _Unsupported
            tokens.append(("word", word))
        elif char in "&|!()":
            tokens.append(("op", char))
            i += 1
        elif (match := _OPERATOR.match(text, i)) is not None:
            distance = match.group(1)
            tokens.append(("phrase", 1 if distance == "-" else int(distance)))
            i = match.end()
        else:
            raise _Unsupported
    return tokens


# PostgreSQL's priorities: | 1, & 2, <N> 3, ! 4 (binary operators left-associative).
_PRIORITY: Final = {"|": 1, "&": 2, "phrase": 3}


def _parse(tokens: list[_Token], at: int, floor: int) -> tuple[_Node, int]:
    left, at = _operand(tokens, at)
    while at < len(tokens):
        kind, value = tokens[at]
        name = "phrase" if kind == "phrase" else value
        priority = _PRIORITY.get(name) if isinstance(name, str) else None
        if priority is None or priority <= floor:
            break
        right, at = _parse(tokens, at + 1, priority)
        if kind == "phrase":
            assert isinstance(value, int)
            if not isinstance(left, _Lexeme | _Phrase) or not isinstance(right, _Lexeme | _Phrase):
                raise _Unsupported  # a phrase of more than words: PostgreSQL's own rules
            left = _Phrase(left, right, value)
        elif value == "&":
            left = _Both(left, right)
        else:
            left = _Either(left, right)
    return left, at


def _operand(tokens: list[_Token], at: int) -> tuple[_Node, int]:
    if at >= len(tokens):
        raise _Unsupported
    kind, value = tokens[at]
    if kind == "word":
        assert isinstance(value, str)
        return _Lexeme(value), at + 1
    if value == "!":
        operand, at = _operand(tokens, at + 1)
        return _Not(operand), at
    if value == "(":
        node, at = _parse(tokens, at + 1, 0)
        if at >= len(tokens) or tokens[at] != ("op", ")"):
            raise _Unsupported
        return node, at + 1
    raise _Unsupported


def _holds(node: _Node, vector: Vector) -> bool:
    if isinstance(node, _Lexeme):
        return node.word in vector
    if isinstance(node, _Not):
        return not _holds(node.operand, vector)
    if isinstance(node, _Both):
        return _holds(node.left, vector) and _holds(node.right, vector)
    if isinstance(node, _Either):
        return _holds(node.left, vector) or _holds(node.right, vector)
    return bool(_phrase_ends(node, vector)[0])


def _phrase_ends(node: _Lexeme | _Phrase, vector: Vector) -> tuple[frozenset[int], int]:
    """Where the phrase's matches end, and its width: PostgreSQL's
    TS_phrase_execute, a match of `left <N> right` ending where right's does,
    left's ending N + right's width before."""
    if isinstance(node, _Lexeme):
        return vector.get(node.word, frozenset()), 0
    left, left_width = _phrase_ends(node.left, vector)
    if not left:
        return frozenset(), 0
    right, right_width = _phrase_ends(node.right, vector)
    gap = node.distance + right_width
    ends = frozenset(end for end in right if end - gap in left)
    return ends, left_width + node.distance + right_width


def parse_vector(text: str) -> Vector | None:
    """The tsvector PostgreSQL wrote as `text`; None for one with a lexeme
    without positions (a phrase would then be PostgreSQL's "maybe")."""
    vector: Vector = {}
    i = 0
    try:
        while i < len(text):
            if text[i] == " ":
                i += 1
                continue
            word, i = _quoted(text, i)
            if text[i : i + 1] != ":":
                return None
            i += 1
            positions: list[int] = []
            while True:
                match = _POSITION.match(text, i)
                if match is None:
                    return None
                positions.append(int(match.group(1)))
                i = match.end()
                if text[i : i + 1] != ",":
                    break
                i += 1
            vector[word] = frozenset(positions)
    except _Unsupported:
        return None
    return vector
