"""Random search texts and events: wherever a live stream matches `text` in the
process (domain/text_search.py), it matches what Query's SQL matches, on the
rows the hub reads, read records (ADR 0012 addendum) and word limits included."""

from __future__ import annotations

from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealtrail import AuditClient, build_event, build_filter
from sealtrail_server.api import stream as stream_api
from sealtrail_server.domain.event import READ_RECORD_ACTIONS
from sealtrail_server.domain.filters import MAX_TEXT, FilterDraft, RecordMatcher, validate_filter
from sealtrail_server.domain.text_search import parse_query, websearch_text
from sealtrail_server.stream import hub as hub_module
from tests.integration.test_stream_text import _matched_by_sql

# Words PostgreSQL's 'simple' parser cuts, joins or drops in its own ways.
_WORDS = [
    "a", "b", "payroll", "export", "Export", "foo-bar", "foo", "bar", "a-b-c", "co-op-",
    "x.com/path", "http://x.com/p?q=1", "www.x.com", "a@b.com", "1.2.3", "v1.2.3-rc1", "1.5",
    "-7", "1e10", "42", "o'neil", "it's", "back\\slash", "Straße", "ünïcode", "日本語", "данные",
    "Ωmega", "foo_bar", "2026-01-01", "10.0.0.1", "/usr/bin", "self-service", "or", "and",
]  # fmt: skip
_STRAY = ['"', "-", "(", ")", "!", "&", "|", ",", ":*", "<->", "'", "\\", "--", "or or"]

# Mostly a few words, for texts and events to share them, in and out of order.
_CORE = ["a", "b", "foo-bar", "payroll", "export"]
_word = st.one_of(
    st.sampled_from(_CORE),
    st.sampled_from(_CORE),
    st.sampled_from(_CORE),
    st.sampled_from(_WORDS),
    st.builds(lambda w, n: w * n, st.sampled_from(_WORDS), st.integers(2, 3)),
    st.builds("-".join, st.lists(st.sampled_from(_WORDS), min_size=2, max_size=3)),
)
_words = st.lists(_word, max_size=6).map(" ".join)
_phrase = st.builds(
    lambda words, closed: '"' + " ".join(words) + ('"' if closed else ""),
    st.lists(_word, min_size=1, max_size=4),
    st.booleans(),
)
_part = st.one_of(
    _word,
    _phrase,
    _phrase,
    st.just("or"),
    st.just("or"),
    st.builds("-{}".format, _word),
    st.builds("-{}".format, _phrase),
    st.sampled_from(_STRAY),
)
# A word or phrase first: a text of no word at all is refused (validate_filter).
_texts = st.builds(
    lambda first, rest: " ".join([first, *rest])[:MAX_TEXT],
    st.one_of(_word, _phrase),
    st.lists(_part, max_size=4),
)
# Long texts: positions past 16383, a word more than 256 times, a word longer
# than the 2047 bytes a lexeme may take.
_long = st.one_of(
    st.builds(
        lambda words, n, tail: " ".join(words * n) + " " + tail,
        st.lists(st.sampled_from(["a", "b", "foo-bar", "payroll"]), min_size=1, max_size=3),
        st.sampled_from([300, 5500, 9000]),
        _words,
    ),
    st.builds(lambda w, rest: f"{w * 2100} {rest}", st.sampled_from(["x", "ü"]), _words),
)
_details = st.dictionaries(
    st.sampled_from(["k", "n", "deep"]),
    st.one_of(
        _words,
        st.integers(-1000, 10**12),
        st.sampled_from([1.5, 0.001, True]),
        st.lists(_words, max_size=3),
        st.dictionaries(st.just("er"), _words),
        _long,
    ),
    max_size=3,
)
_events = st.lists(
    st.fixed_dictionaries(
        {"description": st.one_of(_words, _words.map(lambda w: w[:4096]))},
        optional={
            "details": _details,
            "resource_name": _words.map(lambda w: w[:256]),
            "actor_display_name": _words.map(lambda w: w[:256]),
        },
    ),
    min_size=1,
    max_size=3,
)


def test_random_texts_match_in_the_process_as_postgresql_matches(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    evaluated: list[bool] = []

    @settings(max_examples=250, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(_events, st.one_of(st.none(), _texts), _texts)
    def check(events: list[dict[str, Any]], read_text: str | None, text: str) -> None:
        (before,) = sql.execute(
            "SELECT coalesce(max(seq), 0) FROM events WHERE tenant_id = %s", [tenant]
        ).fetchone() or (0,)
        client.record_batch([build_event(action="doc.edit", actor_id="u", **e) for e in events])
        if read_text is not None:  # a read's record, of its own words (ADR 0012)
            next(iter(client.query(build_filter(text=read_text), page_size=1)), None)
        rows = sql.execute(
            hub_module._ROWS_WITH_WORDS, [list(READ_RECORD_ACTIONS), tenant, before, 1 << 40]
        ).fetchall()
        live = [hub_module._live_event(row) for row in rows]
        seqs = [event.stored.seq for event in live]
        (query_text,) = sql.execute(  # the query the server asks (websearch_text)
            "SELECT websearch_to_tsquery('simple', %s)::text", [websearch_text(text)]
        ).fetchone() or ("",)
        query = parse_query(query_text)
        searchable = [event for event in live if stream_api._searchable(event)]
        evaluated.append(query is not None and len(searchable) == len(live))
        if query is None:
            return  # left to the database
        for actions in ([], ["audit_log.*"], ["doc.edit", "audit_log.queried"]):
            draft = FilterDraft(text=text, actions=actions)
            matcher = RecordMatcher(validate_filter(draft), text=query)
            here = {e.stored.seq for e in searchable if stream_api._matches(matcher, e)}
            there = _matched_by_sql(sql, tenant, draft, seqs) & {e.stored.seq for e in searchable}
            assert here == there, (text, query_text, actions, [r[4:] for r in rows])

    check()
    # Not left to the database wholesale: the process decided nearly every example.
    assert sum(evaluated) >= 0.9 * len(evaluated)
