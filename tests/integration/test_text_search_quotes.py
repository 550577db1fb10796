"""How a filter's `text` pairs its quotes (docs/api.md, `text`): as PostgreSQL's
`websearch_to_tsquery` does, quotes do not nest; each `"` opens a phrase or
closes the open one, an unclosed phrase runs to the end of the text, and a
phrase of no word (punctuation, markup, entities) is no part of the search.
A dash standing alone is no operator. Each text is pinned three ways: the
query PostgreSQL makes of it (of `websearch_text(text)`, which the server
hands it), the events a Query answers, and the stream's own reading of that
query (text_search.py)."""

from __future__ import annotations

import unicodedata
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, InvalidArgumentError, build_event, build_filter
from sealtrail_server.domain.text_search import parse_query, websearch_text

_DESCRIPTIONS = ["alpha beta gamma", "beta alone", "gamma alpha", "an open phrase", "open door"]

# (text, the query PostgreSQL makes of it, the descriptions it finds)
_PINNED = [
    # Quotes pair in order and do not nest: `"alpha "` and `" gamma"` are two phrases.
    ('"alpha "beta" gamma"', "'alpha' & 'beta' & 'gamma'", {"alpha beta gamma"}),
    # An unclosed quote's phrase runs to the end of the text.
    ('"open phrase', "'open' <-> 'phrase'", {"an open phrase"}),
    ('open door"', "'open' & 'door'", {"open door"}),
    # A phrase negated, beside a word, and either side of `or`.
    ('-"open phrase"', "!( 'open' <-> 'phrase' )", set(_DESCRIPTIONS) - {"an open phrase"}),
    ('alpha -"beta gamma"', "'alpha' & !( 'beta' <-> 'gamma' )", {"gamma alpha"}),
    (
        '"beta alone" or "gamma alpha"',
        "'beta' <-> 'alone' | 'gamma' <-> 'alpha'",
        {"beta alone", "gamma alpha"},
    ),
    (
        '"beta alone" or -beta',
        "'beta' <-> 'alone' | !'beta'",
        set(_DESCRIPTIONS) - {"alpha beta gamma"},
    ),
    # Inside quotes `or` is a word and `-` no negation.
    ('"alpha or beta"', "'alpha' <-> 'or' <-> 'beta'", set()),
    ('"-open door"', "'open' <-> 'door'", {"open door"}),
    # `or` with nothing after it is a word to find.
    ('"alpha" or', "'alpha' & 'or'", set()),
    # A phrase of punctuation, or of markup, is no part of the search.
    ('"!?" alpha', "'alpha'", {"alpha beta gamma", "gamma alpha"}),
    ('"<b>" alpha or "!"', "'alpha'", {"alpha beta gamma", "gamma alpha"}),
    ('"alpha <b> gamma"', "'alpha' <-> 'gamma'", set()),
    # A `-` standing alone is no operator (websearch_text); single quotes are no phrase.
    ("gamma - beta", "'gamma' & 'beta'", {"alpha beta gamma"}),
    ("gamma -beta", "'gamma' & !'beta'", {"gamma alpha"}),
    # A dash alone before a negated word leaves the negation: `gamma - -beta` is
    # `gamma -beta` (beta excluded), not PostgreSQL's own `gamma & !!beta` (beta found).
    ("gamma - -beta", "'gamma' & !'beta'", {"gamma alpha"}),
    ("gamma -- -beta", "'gamma' & !'beta'", {"gamma alpha"}),
    ("'alpha gamma'", "'alpha' & 'gamma'", {"alpha beta gamma", "gamma alpha"}),
]


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    client.record_batch(
        [build_event(action="doc.edit", actor_id="u", description=d) for d in _DESCRIPTIONS]
    )
    return client


@pytest.mark.parametrize(("text", "query", "found"), _PINNED)
def test_quotes_pair_as_the_docs_say(
    recorded: AuditClient, sql: psycopg.Connection[Any], text: str, query: str, found: set[str]
) -> None:
    searched = websearch_text(text)  # what the server hands PostgreSQL
    row = sql.execute("SELECT websearch_to_tsquery('simple', %s)::text", [searched]).fetchone()
    assert row == (query,)
    parsed = parse_query(query)  # a live stream matches it in the process, not by SQL
    assert parsed is not None and parsed.root is not None
    answered = {e.description for e in recorded.query(build_filter(text=text))}
    assert answered == found


@pytest.mark.parametrize(
    "text", ['"!?"', '""', '"', '-"!"', '"<b>"', '"&amp;"', '"</b>" "&#65;" -"<b x=1>"']
)
def test_a_text_of_phrases_of_no_word_is_refused_naming_filter_text(
    client: AuditClient, text: str
) -> None:
    """Quotes around punctuation, markup or an entity make no word: PostgreSQL
    finds none, so the search would match nothing. Refused as any text of no
    word is, not answered empty."""
    with pytest.raises(InvalidArgumentError) as refused:
        list(client.query(build_filter(text=text)))
    assert refused.value.field_violations == [("filter.text", "has no word to search for")]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("gamma -- alpha", {"alpha beta gamma", "gamma alpha"}),
        ("- beta", {"alpha beta gamma", "beta alone"}),
        ("beta alone -", {"beta alone"}),
        ('alpha - "beta gamma"', {"alpha beta gamma"}),
        # Joined to the word it goes before, a `-` still excludes it.
        ('gamma -"alpha beta"', {"gamma alpha"}),
    ],
)
def test_a_dash_standing_alone_excludes_nothing(
    recorded: AuditClient, text: str, found: set[str]
) -> None:
    """`payroll - q3`, a dash typed between two words, was `payroll -q3`:
    websearch_to_tsquery reads a `-` before a word as its negation, spaces
    between or not, and the search found the payroll events of every quarter
    but the third. A `-` (or a run of them) with a space or the text's end on
    each side is no operator; one joined to a word excludes it."""
    answered = {e.description for e in recorded.query(build_filter(text=text))}
    assert answered == found


# Spaces that PostgreSQL's parser takes for one in a UTF-8 database, beside
# ASCII's (its C library's: an em space, an ideographic space, which Japanese
# input methods type, a line separator), each with the query a dash between two
# words makes. A no-break space is none: PostgreSQL reads `gamma-beta` between
# two of them as one operand, a phrase, in which the dash was never an operator.
_SPACES = [
    ("\t", "'gamma' & 'beta'", {"alpha beta gamma"}),
    ("\u2003", "'gamma' & 'beta'", {"alpha beta gamma"}),
    ("\u3000", "'gamma' & 'beta'", {"alpha beta gamma"}),
    ("\u2028", "'gamma' & 'beta'", {"alpha beta gamma"}),
    ("\u00a0", "'gamma' <-> 'beta'", set()),
]


@pytest.mark.parametrize(
    ("space", "query", "found"), _SPACES, ids=[f"U+{ord(space):04X}" for space, *_ in _SPACES]
)
def test_a_dash_between_other_spaces_excludes_nothing(
    recorded: AuditClient,
    sql: psycopg.Connection[Any],
    space: str,
    query: str,
    found: set[str],
) -> None:
    """`payroll　-　q3`, typed with the ideographic spaces of a Japanese input
    method, excluded q3: the rule knew only ASCII's spaces, PostgreSQL's parser
    more. A dash between any of them is no operator."""
    text = f"gamma{space}-{space}beta"
    row = sql.execute(
        "SELECT websearch_to_tsquery('simple', %s)::text", [websearch_text(text)]
    ).fetchone()
    assert row == (query,)
    answered = {e.description for e in recorded.query(build_filter(text=text))}
    assert answered == found


def test_every_space_of_postgresqls_parser_frames_a_dash_alone(
    sql: psycopg.Connection[Any],
) -> None:
    """The characters that PostgreSQL's parser (in this database's locale)
    takes for a space, between which a `-` negates the word after it, are
    websearch_text's, no more and no fewer, of every space, separator, control
    and format character of Unicode; none framing a dash leaves a negation."""
    candidates = [
        char
        for char in map(chr, range(1, 0x110000))
        if char.isspace() or unicodedata.category(char) in {"Zs", "Zl", "Zp", "Cc", "Cf"}
    ]
    texts = [f"a{char}-{char}b" for char in candidates]
    rows = sql.execute(
        "SELECT given, websearch_to_tsquery('simple', searched)::text"
        " FROM unnest(%s::text[], %s::text[]) AS t(given, searched)"
        " WHERE websearch_to_tsquery('simple', given)::text LIKE '%%!%%'",
        [texts, [websearch_text(text) for text in texts]],
    ).fetchall()
    negating = {given[1] for given, _ in rows}
    assert {" ", "\t", "\u2003", "\u3000"} <= negating  # PostgreSQL's, as the probe sees them
    changed = {
        char for char, text in zip(candidates, texts, strict=True) if websearch_text(text) != text
    }
    assert changed == negating
    assert [(given, query) for given, query in rows if "!" in query] == []
