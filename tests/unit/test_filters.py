"""validate_filter, page_size and page tokens: what a valid filter becomes,
the exact path of every violation, and tokens that are bound to their query."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest

from sealtrail_server.api.convert import filter_from_json
from sealtrail_server.domain.errors import FieldViolation, InvalidArgument
from sealtrail_server.domain.filters import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    EventFilter,
    FilterDraft,
    RecordMatcher,
    page_size,
    validate_filter,
)
from sealtrail_server.store.events import prefix_successor

T0 = int(datetime(2026, 5, 1, tzinfo=UTC).timestamp())


def violations_of(draft: FilterDraft) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as caught:
        validate_filter(draft)
    assert caught.value.violations, "InvalidArgument without violations"
    return caught.value.violations


def fields_of(draft: FilterDraft) -> list[str]:
    return [v.field for v in violations_of(draft)]


def token_of(payload: Any) -> str:
    """A token carrying `payload` exactly as encode_page_token frames it."""
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- validate_filter ----------------------------------------------------------


def test_empty_draft_matches_everything() -> None:
    assert validate_filter(FilterDraft()) == EventFilter()


def test_full_filter_is_normalised() -> None:
    valid = validate_filter(
        FilterDraft(
            occurred_after=(T0, 500_000_000),
            occurred_before=(T0 + 60, 0),
            actions=["user.login", "api_key.*", "api_key.create", "user.login", "org.member.*"],
            categories=[6, 1, 6],
            min_severity=3,
            outcomes=[3, 2],
            actor="u-1",
            resource_type="api_key",
            resource_id="k-9",
            request_id="6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
            trace_id="4BF92F3577B34DA6A3CE929D0E0E4736",
            text="  rotation  ",
        )
    )
    assert valid == EventFilter(
        occurred_after=datetime(2026, 5, 1, 0, 0, 0, 500_000, tzinfo=UTC),
        occurred_before=datetime(2026, 5, 1, 0, 1, 0, tzinfo=UTC),
        actions=("api_key.create", "user.login"),
        action_prefixes=("api_key.", "org.member."),
        categories=("authentication", "security"),
        min_severity=3,
        outcomes=("denied", "failure"),
        actor="u-1",
        resource_type="api_key",
        resource_id="k-9",
        request_id="6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        text="rotation",
    )


@pytest.mark.parametrize(
    ("action", "exact", "prefix"),
    [
        ("api_key.create", ("api_key.create",), ()),
        ("api_key.*", (), ("api_key.",)),
        ("org.member.*", (), ("org.member.",)),
        ("a.b.c", ("a.b.c",), ()),
    ],
)
def test_action_exact_or_prefix(
    action: str, exact: tuple[str, ...], prefix: tuple[str, ...]
) -> None:
    valid = validate_filter(FilterDraft(actions=[action]))
    assert valid.actions == exact
    assert valid.action_prefixes == prefix


def test_a_verb_on_any_resource_is_a_suffix() -> None:
    valid = validate_filter(FilterDraft(actions=["*.delete", "*.member.remove", "*.delete"]))
    assert valid.actions == () and valid.action_prefixes == ()
    assert valid.action_suffixes == (".delete", ".member.remove")
    matcher = RecordMatcher(valid)
    record = {"occurred_at": "2026-05-01T00:00:00.000000Z", "severity": "info"}
    record |= {"outcome": "success", "actor": {"id": "u"}}
    for action, expected in (
        ("api_key.delete", True),
        ("project.member.delete", True),
        ("org.member.remove", True),
        ("api_key.undelete", False),  # a whole part, not the end of one
        ("delete.api_key", False),
        ("member.remove_all", False),
    ):
        assert matcher.matches(record | {"action": action}) is expected, action


@pytest.mark.parametrize(
    "action",
    [
        *("", "*", ".*", "api_key", "Api_key.create", "api_key.", "api_key.cr*", "api_key.**"),
        *("*.Create", "api_key.*.create", "a..b", "api-key.*", "api_key.*\n", " api_key.create"),
        *("*.", "**.delete", "*delete", "*.delete.*", "*.de-lete"),
    ],
)
def test_bad_action_patterns_are_rejected(action: str) -> None:
    violations = violations_of(FilterDraft(actions=["user.login", action]))
    assert [v.field for v in violations] == ["filter.actions[1]"]


def test_whitespace_only_text_is_no_filter() -> None:
    assert validate_filter(FilterDraft(text="   ")).text is None


@pytest.mark.parametrize(
    ("draft", "fields"),
    [
        (FilterDraft(categories=[1, 99]), ["filter.categories[1]"]),
        (FilterDraft(categories=[0]), ["filter.categories[0]"]),
        (FilterDraft(outcomes=[4, 1, -1]), ["filter.outcomes[0]", "filter.outcomes[2]"]),
        (FilterDraft(min_severity=99), ["filter.min_severity"]),
        (FilterDraft(min_severity=5), ["filter.min_severity"]),
        (FilterDraft(request_id="nope"), ["filter.request_id"]),
        (FilterDraft(request_id="6ba7b810-9dad-11d1-80b4-00c04fd430c"), ["filter.request_id"]),
        (FilterDraft(trace_id="4bf92f3577b34da6a3ce929d0e0e473"), ["filter.trace_id"]),
        (FilterDraft(trace_id="4bf92f3577b34da6a3ce929d0e0e473g"), ["filter.trace_id"]),
        (FilterDraft(trace_id="4bf92f3577b34da6a3ce929d0e0e47360"), ["filter.trace_id"]),
        (FilterDraft(occurred_after=(T0, 1_000_000_000)), ["filter.occurred_after"]),
        (FilterDraft(occurred_before=(T0, -1)), ["filter.occurred_before"]),
        (FilterDraft(occurred_after=(10**20, 0)), ["filter.occurred_after"]),
        (FilterDraft(actor="a" * 321), ["filter.actor"]),
        (FilterDraft(resource_type="t" * 257), ["filter.resource_type"]),
        (FilterDraft(resource_id="i" * 257), ["filter.resource_id"]),
        (FilterDraft(text="x" * 257), ["filter.text"]),
        (FilterDraft(text="a\x00b"), ["filter.text"]),
        (FilterDraft(actor="\x00"), ["filter.actor"]),
        (FilterDraft(actions=["a.b"] * 101), ["filter.actions"]),
        (FilterDraft(categories=[1] * 101), ["filter.categories"]),
        (FilterDraft(outcomes=[1] * 101), ["filter.outcomes"]),
    ],
)
def test_bad_field_is_reported_at_its_path(draft: FilterDraft, fields: list[str]) -> None:
    assert fields_of(draft) == fields


def test_unknown_enum_description_names_the_value() -> None:
    assert violations_of(FilterDraft(min_severity=9)) == [
        FieldViolation("filter.min_severity", "unknown enum value 9")
    ]


def test_over_long_text_names_its_length() -> None:
    assert violations_of(FilterDraft(text="x" * 300)) == [
        FieldViolation("filter.text", "is 300 characters long; the limit is 256")
    ]


def test_limits_are_inclusive() -> None:
    valid = validate_filter(
        FilterDraft(
            actions=[f"a.b{i}" for i in range(100)],
            categories=[1] * 100,
            outcomes=[2] * 100,
            actor="a" * 256,
            text="x" * 256,
        )
    )
    assert len(valid.actions) == 100
    assert valid.categories == ("authentication",)
    assert valid.outcomes == ("failure",)


@pytest.mark.parametrize(
    ("after", "before"),
    [((T0, 0), (T0, 0)), ((T0 + 1, 0), (T0, 0)), ((T0, 1000), (T0, 999))],
)
def test_occurred_after_not_before_occurred_before_is_rejected(
    after: tuple[int, int], before: tuple[int, int]
) -> None:
    assert violations_of(FilterDraft(occurred_after=after, occurred_before=before)) == [
        FieldViolation("filter.occurred_before", "must be later than occurred_after")
    ]


def test_a_window_one_microsecond_wide_is_accepted() -> None:
    valid = validate_filter(FilterDraft(occurred_after=(T0, 0), occurred_before=(T0, 1000)))
    assert valid.occurred_before is not None and valid.occurred_after is not None
    assert (valid.occurred_before - valid.occurred_after).total_seconds() == pytest.approx(1e-6)


def test_bounds_a_nanosecond_apart_are_accepted() -> None:
    """Later as given, though both round to the same microsecond (an empty window)."""
    valid = validate_filter(FilterDraft(occurred_after=(T0, 1), occurred_before=(T0, 2)))
    assert valid.occurred_after == valid.occurred_before


def test_the_last_time_a_timestamp_holds_is_a_valid_bound() -> None:
    last = (253402300799, 999_999_999)  # 9999-12-31T23:59:59.999999999Z
    valid = validate_filter(FilterDraft(occurred_after=(T0, 0), occurred_before=last))
    assert valid.occurred_before == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_a_bound_between_two_microseconds_is_the_later_one() -> None:
    """Times are kept to the microsecond: an event at T is before T + 500 ns, so
    it passes occurred_before and fails occurred_after at that bound."""
    at_t = datetime.fromtimestamp(T0, UTC)
    valid = validate_filter(FilterDraft(occurred_after=(T0, 500), occurred_before=(T0, 1500)))
    assert valid.occurred_after == at_t + timedelta(microseconds=1)
    assert valid.occurred_before == at_t + timedelta(microseconds=2)
    assert validate_filter(FilterDraft(occurred_after=(T0, 3000))).occurred_after == (
        at_t + timedelta(microseconds=3)
    )


@pytest.mark.parametrize("year", [1, 9, 500, 999, 1000])
def test_live_matching_agrees_with_a_bound_of_any_year(year: int) -> None:
    """RecordMatcher compares times as text: a year below 1000 must be padded
    as the records' are, or "500-..." sorts after "2026-..."."""
    bound = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    record = {
        "occurred_at": "2026-05-01T00:00:00.000000Z",
        "action": "doc.edit",
        "severity": "info",
        "outcome": "success",
        "actor": {"id": "u"},
    }
    assert RecordMatcher(validate_filter(FilterDraft(occurred_after=(bound, 0)))).matches(record)
    assert not RecordMatcher(validate_filter(FilterDraft(occurred_before=(bound, 0)))).matches(
        record
    )


def test_open_ended_windows_are_accepted() -> None:
    assert validate_filter(FilterDraft(occurred_after=(T0, 0))).occurred_before is None
    assert validate_filter(FilterDraft(occurred_before=(T0, 0))).occurred_after is None


def test_trace_ids_are_lowercased() -> None:
    valid = validate_filter(FilterDraft(trace_id="ABCDEF0123456789ABCDEF0123456789"))
    assert valid.trace_id == "abcdef0123456789abcdef0123456789"


def test_every_violation_is_reported_at_once() -> None:
    draft = FilterDraft(
        occurred_after=(T0 + 10, 0),
        occurred_before=(T0, 0),
        actions=["Bad"],
        categories=[99],
        min_severity=99,
        outcomes=[99],
        actor="a" * 321,
        request_id="nope",
        trace_id="nope",
        text="\x00",
    )
    assert fields_of(draft) == [
        "filter.occurred_before",
        "filter.actions[0]",
        "filter.categories[0]",
        "filter.outcomes[0]",
        "filter.min_severity",
        "filter.request_id",
        "filter.trace_id",
        "filter.actor",
        "filter.text",
    ]


def test_custom_path_prefixes_violations() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_filter(FilterDraft(min_severity=9), path="request.filter")
    assert [v.field for v in caught.value.violations] == ["request.filter.min_severity"]


# --- page_size ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "size"),
    [
        (0, DEFAULT_PAGE_SIZE),
        (1, 1),
        (50, 50),
        (999, 999),
        (1000, 1000),
        (1001, 1000),
        (5000, MAX_PAGE_SIZE),
        (2**63 - 1, MAX_PAGE_SIZE),
    ],
)
def test_page_size(requested: int, size: int) -> None:
    assert (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) == (50, 1000)
    assert page_size(requested) == size


@pytest.mark.parametrize("requested", [-1, -1000])
def test_negative_page_size_is_rejected(requested: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_size(requested)
    assert [v.field for v in caught.value.violations] == ["page_size"]


def test_only_a_filter_that_sets_nothing_matches_every_record_unasked() -> None:
    """Streams skip the matcher for a filter that sets nothing: any field set,
    including one added to EventFilter later, must keep it asked."""
    assert RecordMatcher(EventFilter()).matches_all
    assert RecordMatcher(validate_filter(FilterDraft())).matches_all
    for field in dataclasses.fields(EventFilter):
        default = getattr(EventFilter(), field.name)
        value: object = (
            ("x.y",)
            if isinstance(default, tuple)
            else 1
            if isinstance(default, int)
            else datetime(2026, 1, 1, tzinfo=UTC)
            if field.name.startswith("occurred")
            else "10.0.0.0/8"  # validated as a network, as validate_filter leaves it
            if field.name == "ip"
            else "x"
        )
        narrowed = dataclasses.replace(EventFilter(), **{field.name: value})
        assert not RecordMatcher(narrowed).matches_all, field.name


@pytest.mark.parametrize(("given", "kept"), [("KP", "KP"), ("kp", "KP"), ("fR", "FR"), ("", None)])
def test_a_country_is_kept_upper_case_as_records_store_it(given: str, kept: str | None) -> None:
    assert validate_filter(FilterDraft(country=given)).country == kept


@pytest.mark.parametrize("given", ["KPX", "K", "K1", " KP", "KP\n", "ÉS", "\uff2b\uff30"])
def test_a_country_that_is_no_two_letter_code_is_refused_naming_it(given: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_filter(FilterDraft(country=given))
    assert [v.field for v in caught.value.violations] == ["filter.country"]


def test_the_matcher_finds_a_records_country_and_no_record_without_one() -> None:
    matcher = RecordMatcher(validate_filter(FilterDraft(country="kp")))
    record = {"action": "user.login", "occurred_at": "2026-01-01T00:00:00.000000Z"}
    record |= {"severity": "info", "outcome": "success", "actor": {"id": "u1", "type": "user"}}
    assert matcher.matches(record | {"context": {"country": "KP"}})
    assert not matcher.matches(record | {"context": {"country": "FR"}})
    assert not matcher.matches(record | {"context": {"ip": "10.0.0.1"}})
    assert not matcher.matches(record)


@pytest.mark.parametrize(
    ("given", "kept"),
    [("curl", "curl"), ("Terraform", "terraform"), ("PYTHON-requests", "python-requests"),
     ("ÄPP 50%_\\", "Äpp 50%_\\"), (" x ", " x "), ("a" * 256, "a" * 256), ("", None)],
)  # fmt: skip
def test_a_user_agent_is_kept_with_a_to_z_lowered(given: str, kept: str | None) -> None:
    assert validate_filter(FilterDraft(user_agent=given)).user_agent == kept


@pytest.mark.parametrize("given", ["a" * 257, "curl\n", "\tcurl", "x\x00", "x\x7f", "x\x85"])
def test_a_user_agent_too_long_or_with_control_characters_is_refused_naming_it(
    given: str,
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_filter(FilterDraft(user_agent=given))
    assert [v.field for v in caught.value.violations] == ["filter.user_agent"]


_LOGIN: Final = {
    "action": "user.login",
    "occurred_at": "2026-01-01T00:00:00.000000Z",
    "severity": "info",
    "outcome": "success",
    "actor": {"id": "u1", "type": "user"},
}


def _agent_found(text: str, agent: str | None) -> bool:
    """Whether the matcher of a filter on user agent `text` takes a login of `agent`."""
    matcher = RecordMatcher(validate_filter(FilterDraft(user_agent=text)))
    return matcher.matches(_LOGIN if agent is None else _LOGIN | {"context": {"user_agent": agent}})


@pytest.mark.parametrize(
    ("agent", "found"),
    [
        ("curl/8.5.0", True),
        ("CURL/8.5.0", True),
        ("libcurl-agent/1.0", True),
        ("Mozilla/5.0 (X11; Linux x86_64)", False),
        ("cur l", False),
        ("", False),
        (None, False),
    ],
)
def test_the_matcher_finds_a_user_agent_containing_the_text_in_any_case(
    agent: str | None, found: bool
) -> None:
    assert _agent_found("Curl", agent) is found


def test_a_user_agents_metacharacters_and_other_letters_are_themselves() -> None:
    """`%`, `_` and `\\` are no wildcards or escapes; letters other than A-Z
    keep their case, as the SQL's lower() under the C collation leaves them."""
    assert _agent_found("50%", "tool 50%") and not _agent_found("50%", "tool 500")
    assert _agent_found("a_b", "A_B/1") and not _agent_found("a_b", "axb/1")
    assert _agent_found("c:\\x", "C:\\X") and not _agent_found("c:\\x", "c:x")
    assert _agent_found("Äpp", "ÄPP") and not _agent_found("Äpp", "äPP")


def test_actor_types_are_kept_as_their_record_names_sorted_once() -> None:
    """ActorType values as the record writes them (`api_key`), duplicates
    dropped, sorted: equal filters, equal fingerprints."""
    assert validate_filter(FilterDraft(actor_types=[3, 2, 3])).actor_types == (
        "api_key",
        "service",
    )
    assert validate_filter(FilterDraft(actor_types=[1, 2, 3, 4])).actor_types == (
        "api_key",
        "service",
        "system",
        "user",
    )
    assert validate_filter(FilterDraft()).actor_types == ()


def test_an_unspecified_or_unknown_actor_type_is_refused_naming_it() -> None:
    """UNSPECIFIED names no type an event is stored with (one recorded without
    a type is stored as `user`): refused, as an unknown value is."""
    violations = violations_of(FilterDraft(actor_types=[2, 0, 9]))
    assert [v.field for v in violations] == ["filter.actor_types[1]", "filter.actor_types[2]"]
    assert "ACTOR_TYPE_USER" in violations[0].description
    assert "unknown enum value 9" in violations[1].description
    assert fields_of(FilterDraft(actor_types=[2] * 101)) == ["filter.actor_types"]


@pytest.mark.parametrize(
    ("types", "found"),
    [
        ((2,), ["api_key"]),
        ((3, 4), ["service", "system"]),
        ((1,), ["user"]),
        ((1, 2, 3, 4), ["user", "api_key", "service", "system"]),
        ((), ["user", "api_key", "service", "system"]),
    ],
)
def test_the_matcher_takes_the_actor_types_asked(types: tuple[int, ...], found: list[str]) -> None:
    matcher = RecordMatcher(validate_filter(FilterDraft(actor_types=list(types))))
    records = [_LOGIN | {"actor": {"id": "a", "type": kind}} for kind in _ACTOR_TYPE_NAMES]
    assert [r["actor"]["type"] for r in records if matcher.matches(r)] == found


_ACTOR_TYPE_NAMES: Final = ("user", "api_key", "service", "system")


def test_an_action_longer_than_any_recorded_is_refused_naming_it() -> None:
    """Unbounded, a long filter made the query's own access record too large:
    refused naming `audit_log.queried`, a field the caller never sent
    (helper-135)."""
    longest = "a." + "b" * 126
    assert validate_filter(FilterDraft(actions=[longest, "a." + "b" * 124 + ".*"])).actions
    assert violations_of(FilterDraft(actions=["ok.action", longest + "b"])) == [
        FieldViolation("filter.actions[1]", "is 129 characters long; an action is at most 128")
    ]


@pytest.mark.parametrize("text", ["!!!", "-", "*", '""', "_ _"])
def test_a_text_with_no_word_is_refused(text: str) -> None:
    """It matched nothing, silently, where a blank one matches everything
    (helper-135)."""
    assert violations_of(FilterDraft(text=text)) == [
        FieldViolation("filter.text", "has no word to search for")
    ]
    assert validate_filter(FilterDraft(text=f"{text} deploy")).text == f"{text} deploy"


@pytest.mark.parametrize("text", ["½", "!!!"])
def test_a_stored_filter_whose_text_has_no_word_still_loads(text: str) -> None:
    """A sink's or alert rule's filter stored when its text was taken (a
    fraction, before the check of words followed PostgreSQL's parser) loads
    as it was, matching nothing as it did: refused on load, the sink's
    forwarder failed every step. A filter sent now is refused."""
    assert filter_from_json({"text": text}).text == text
    with pytest.raises(InvalidArgument):
        validate_filter(FilterDraft(text=text))


@pytest.mark.parametrize(
    ("given", "network"),
    [
        ("203.0.113.9", "203.0.113.9/32"),
        (" 203.0.113.9/24 ", "203.0.113.0/24"),
        ("::ffff:203.0.113.9/120", "203.0.113.0/24"),
        ("::ffff:203.0.113.9", "203.0.113.9/32"),
        ("2001:DB8::1/32", "2001:db8::/32"),
        ("fe80::1%eth0", "fe80::1/128"),
    ],
)
def test_an_ip_filter_names_its_network_as_records_are_compared(given: str, network: str) -> None:
    assert validate_filter(FilterDraft(ip=given)).ip == network


def test_the_matcher_finds_a_records_address_in_the_network() -> None:
    matcher = RecordMatcher(validate_filter(FilterDraft(ip="203.0.113.0/24")))
    record = {"occurred_at": "2026-05-01T00:00:00.000000Z", "action": "a.b", "severity": "info"}
    record |= {"outcome": "success", "actor": {"id": "u"}}
    for ip, expected in (
        ("203.0.113.7", True),
        ("::ffff:203.0.113.7", True),
        ("203.0.114.7", False),
        ("2001:db8::1", False),
    ):
        assert matcher.matches(record | {"context": {"ip": ip}}) is expected
    assert not matcher.matches(record)  # no address: outside every network


def test_the_matcher_finds_an_email_in_any_case_and_an_id_only_exactly() -> None:
    record = {"occurred_at": "2026-05-01T00:00:00.000000Z", "action": "a.b", "severity": "info"}
    record |= {"outcome": "success", "actor": {"id": "U-7", "email": "Carol.Smith@Example.COM"}}
    for actor, expected in (
        ("carol.smith@example.com", True),
        ("CAROL.SMITH@EXAMPLE.COM", True),
        ("Carol.Smith@Example.COM", True),
        ("carol@example.com", False),
        ("U-7", True),
        ("u-7", False),  # ids are the calling system's, maybe case-sensitive
    ):
        assert RecordMatcher(validate_filter(FilterDraft(actor=actor))).matches(record) is expected


@pytest.mark.parametrize(
    ("sent", "sought", "expected"),
    [
        ("JÖRG@Example.de", "jörg@example.de", True),
        ("Straße@Example.de", "STRASSE@example.de", False),  # lowered, not case-folded
        ("Straße@Example.de", "STRAßE@example.de", True),
    ],
)
def test_the_matcher_lowers_non_ascii_emails_as_the_column_is_written(
    sent: str, sought: str, expected: bool
) -> None:
    """As str.lower() lowers them, whatever the database's locale: the same
    function writes the column and lowers the filter's value (ADR 0067)."""
    record = {"occurred_at": "2026-05-01T00:00:00.000000Z", "action": "a.b", "severity": "info"}
    record |= {"outcome": "success", "actor": {"id": "u", "email": sent}}
    matcher = RecordMatcher(validate_filter(FilterDraft(actor=sought)))
    assert matcher.matches(record) is expected


def test_the_actor_filter_keeps_the_value_as_given_and_seeks_the_email_lowered() -> None:
    valid = validate_filter(FilterDraft(actor="Carol.Smith@Example.COM"))
    assert valid.actor == "Carol.Smith@Example.COM"  # the id side compares it exactly
    assert valid.actor_emails() == ("Carol.Smith@Example.COM", "carol.smith@example.com")
    assert validate_filter(FilterDraft(actor="u-7")).actor_emails() == ("u-7",)
    assert EventFilter().actor_emails() == ()


def test_countries_and_resource_types_are_kept_checked_sorted_once() -> None:
    """Each value as its singular field takes it: a country upper case, a
    resource type as given; duplicates dropped, sorted (helper-414)."""
    checked = validate_filter(
        FilterDraft(countries=["fr", "DE", "Fr"], resource_types=["source", "file", "source"])
    )
    assert checked.countries == ("DE", "FR")
    assert checked.resource_types == ("file", "source")
    assert validate_filter(FilterDraft(country="de")).any_country() == ("DE",)
    assert checked.any_country() == ("DE", "FR")
    assert validate_filter(FilterDraft(resource_type="file")).any_resource_type() == ("file",)
    assert validate_filter(FilterDraft()).any_country() == ()


def test_a_bad_country_or_resource_type_in_a_list_is_refused_naming_it() -> None:
    violations = violations_of(
        FilterDraft(
            countries=["DE", "Deutschland", ""], resource_types=["file", "x" * 257, "a\x00"]
        )
    )
    assert [v.field for v in violations] == [
        "filter.countries[1]",
        "filter.countries[2]",
        "filter.resource_types[1]",
        "filter.resource_types[2]",
    ]
    assert "ISO 3166-1 alpha-2" in violations[0].description
    assert fields_of(FilterDraft(resource_types=[""])) == ["filter.resource_types[0]"]
    assert fields_of(FilterDraft(countries=["DE"] * 101)) == ["filter.countries"]
    assert fields_of(FilterDraft(resource_types=["file"] * 101)) == ["filter.resource_types"]
    assert validate_filter(FilterDraft(countries=["DE"] * 100)).countries == ("DE",)


def test_a_singular_field_and_its_plural_together_are_refused_naming_the_plural() -> None:
    violations = violations_of(
        FilterDraft(country="DE", countries=["FR"], resource_type="file", resource_types=["file"])
    )
    assert [v.field for v in violations] == ["filter.countries", "filter.resource_types"]
    assert "set one of country or countries" in violations[0].description
    assert "set one of resource_type or resource_types" in violations[1].description


@pytest.mark.parametrize(
    ("draft", "found"),
    [
        (FilterDraft(countries=["de", "FR"]), ["de-file", "fr-source"]),
        (FilterDraft(countries=["IT"]), []),
        (FilterDraft(resource_types=["file", "qa_pair"]), ["de-file", "none-qa"]),
        (FilterDraft(resource_types=["file"], countries=["FR", "DE"]), ["de-file"]),
        (FilterDraft(country="FR"), ["fr-source"]),
        (FilterDraft(resource_type="source"), ["fr-source"]),
    ],
)
def test_the_matcher_takes_any_country_or_resource_type_listed(
    draft: FilterDraft, found: list[str]
) -> None:
    records = [
        _LOGIN | {"description": "de-file", "context": {"country": "DE"},
                  "resource": {"type": "file", "id": "1"}},
        _LOGIN | {"description": "fr-source", "context": {"country": "FR"},
                  "resource": {"type": "source", "id": "2"}},
        _LOGIN | {"description": "none-qa", "resource": {"type": "qa_pair", "id": "3"}},
        _LOGIN | {"description": "none-none"},
    ]  # fmt: skip
    matcher = RecordMatcher(validate_filter(draft))
    assert [r["description"] for r in records if matcher.matches(r)] == found


def test_http_status_classes_are_kept_lowered_sorted_once() -> None:
    """Classes in either case (`5XX` is `5xx`) and exact codes, duplicates
    dropped, sorted: equal filters, equal fingerprints; a class as SQL's
    LIKE pattern on the three digits."""
    kept = validate_filter(FilterDraft(http_status_classes=["5XX", "404", "5xx", "1xx"]))
    assert kept.http_status_classes == ("1xx", "404", "5xx")
    assert kept.status_patterns() == ("1__", "404", "5__")
    assert validate_filter(FilterDraft()).http_status_classes == ()


def test_a_status_that_is_no_class_or_code_is_refused_naming_it() -> None:
    bad = ["5xx", "600", "0xx", "99", "6xx", "5x", "50x", "", " 404", "\uff1200", "4xx,5xx"]
    violations = violations_of(FilterDraft(http_status_classes=bad))
    assert [v.field for v in violations] == [
        f"filter.http_status_classes[{index}]" for index in range(1, len(bad))
    ]
    assert "5xx or 404" in violations[0].description
    assert fields_of(FilterDraft(http_status_classes=["5xx"] * 101)) == [
        "filter.http_status_classes"
    ]


@pytest.mark.parametrize(
    ("classes", "found"),
    [
        (["5xx"], [500, 503]),
        (["404", "5xx"], [404, 500, 503]),
        (["2xx"], [200]),
        (["429"], []),
        ([], [None, 200, 404, 500, 503]),
    ],
)
def test_the_matcher_takes_the_statuses_asked(classes: list[str], found: list[int | None]) -> None:
    """An event without a status code never matches a filter naming one."""
    matcher = RecordMatcher(validate_filter(FilterDraft(http_status_classes=classes)))
    records = [_LOGIN] + [
        _LOGIN | {"context": {"http_status_code": code}} for code in (200, 404, 500, 503)
    ]
    codes = [r.get("context", {}).get("http_status_code") for r in records if matcher.matches(r)]
    assert codes == found


def test_a_least_duration_is_kept_and_one_out_of_range_refused_naming_it() -> None:
    assert validate_filter(FilterDraft(min_duration_ms=0.25)).min_duration_ms == 0.25
    assert validate_filter(FilterDraft(min_duration_ms=86_399_999.5)).min_duration_ms
    for none in (0.0, -0.0):
        assert validate_filter(FilterDraft(min_duration_ms=none)).min_duration_ms is None
    for bad in (-1.0, -0.001, 86_400_000.0, 1e300, math.inf, -math.inf, math.nan):
        (violation,) = violations_of(FilterDraft(min_duration_ms=bad))
        assert violation.field == "filter.min_duration_ms"
        assert "under 86400000" in violation.description


@pytest.mark.parametrize(
    ("least", "found"),
    [
        (1000.0, [1000, 2500.5]),
        (999.999, [999.999, 1000, 2500.5]),
        (0.25, [0.25, 999.999, 1000, 2500.5]),
        (2500.75, []),
        (0.0, [None, 0.25, 999.999, 1000, 2500.5]),
    ],
)
def test_the_matcher_takes_the_durations_at_least_asked(
    least: float, found: list[float | None]
) -> None:
    """An event without a duration never matches a least duration; one of
    exactly the least does (a whole one as the record writes it, an int)."""
    matcher = RecordMatcher(validate_filter(FilterDraft(min_duration_ms=least)))
    records = [_LOGIN] + [
        _LOGIN | {"context": {"duration_ms": ms}} for ms in (0.25, 999.999, 1000, 2500.5)
    ]
    taken = [r.get("context", {}).get("duration_ms") for r in records if matcher.matches(r)]
    assert taken == found


def test_http_routes_are_kept_as_given_sorted_once() -> None:
    """Exactly as given (no case folded, no slash added or dropped),
    duplicates dropped, sorted: equal filters, equal fingerprints."""
    routes = ["/v1/x", "/V1/X", "/v1/templates/{id}", "/v1/x", "/v1/x/", "a" * 512]
    kept = validate_filter(FilterDraft(http_routes=routes))
    assert kept.http_routes == ("/V1/X", "/v1/templates/{id}", "/v1/x", "/v1/x/", "a" * 512)
    assert validate_filter(FilterDraft()).http_routes == ()


def test_a_route_no_event_can_hold_is_refused_naming_it() -> None:
    """Checked as an event's `context.http_route` is: 1 to 512 characters,
    no control character, no query string."""
    bad = ["/v1/x", "", "a" * 513, "/v1/x?id=7", "/v1/\x00", "/v1/x\t", "/v1/\x85"]
    violations = violations_of(FilterDraft(http_routes=bad))
    assert [v.field for v in violations] == [
        f"filter.http_routes[{index}]" for index in range(1, len(bad))
    ]
    assert [v.description for v in violations[:3]] == [
        "is empty: give a route, e.g. /v1/users/{id}",
        "is 513 characters long; the limit is 512",
        "must not hold a query string (`?`): send the path",
    ]
    assert fields_of(FilterDraft(http_routes=["/v1/x"] * 101)) == ["filter.http_routes"]


@pytest.mark.parametrize(
    ("routes", "found"),
    [
        (["/v1/x"], ["/v1/x"]),
        (["/v1/x", "/v1/templates/{id}"], ["/v1/templates/{id}", "/v1/x"]),
        (["/v1/X"], []),  # no case folding
        (["/v1"], []),  # no prefix
        (["/v1/x/"], []),
        ([], [None, "/v1/templates/{id}", "/v1/x", "/v1/x/y"]),
    ],
)
def test_the_matcher_takes_the_routes_asked_exactly(
    routes: list[str], found: list[str | None]
) -> None:
    """An event without a route never matches a filter naming one."""
    matcher = RecordMatcher(validate_filter(FilterDraft(http_routes=routes)))
    records = [_LOGIN] + [
        _LOGIN | {"context": {"http_route": route}}
        for route in ("/v1/templates/{id}", "/v1/x", "/v1/x/y")
    ]
    taken = [r.get("context", {}).get("http_route") for r in records if matcher.matches(r)]
    assert taken == found


@pytest.mark.parametrize(
    ("presence", "routes", "kept"),
    [
        (0, [], None),
        (1, [], True),
        (2, [], False),
        (1, ["/v1/x"], None),  # the routes say it: one filter, one fingerprint
        (0, ["/v1/x"], None),
    ],
)
def test_a_route_presence_is_kept_as_whether_an_event_has_one(
    presence: int, routes: list[str], kept: bool | None
) -> None:
    checked = validate_filter(FilterDraft(http_route_presence=presence, http_routes=routes))
    assert checked.has_http_route is kept


def test_no_route_with_routes_or_an_unknown_presence_is_refused_naming_it() -> None:
    """PRESENCE_ABSENT with routes matches nothing: refused, as a pair of
    severity bounds no level passes is, rather than answering nothing."""
    (violation,) = violations_of(FilterDraft(http_route_presence=2, http_routes=["/v1/x"]))
    assert violation.field == "filter.http_route_presence"
    assert (
        violation.description == "absent, with http_routes, matches nothing: set one or the other"
    )
    assert fields_of(FilterDraft(http_route_presence=3)) == ["filter.http_route_presence"]


@pytest.mark.parametrize(
    ("presence", "found"),
    [
        (1, ["/v1/x", "/v1/templates/{id}"]),
        (2, [None, None]),
        (0, [None, "/v1/x", None, "/v1/templates/{id}"]),
    ],
)
def test_the_matcher_takes_events_with_a_route_or_without_one(
    presence: int, found: list[str | None]
) -> None:
    """Without a route: no context, or a context of other fields."""
    matcher = RecordMatcher(validate_filter(FilterDraft(http_route_presence=presence)))
    records = [
        _LOGIN,
        _LOGIN | {"context": {"http_route": "/v1/x"}},
        _LOGIN | {"context": {"duration_ms": 3.5}},
        _LOGIN | {"context": {"http_route": "/v1/templates/{id}", "duration_ms": 3.5}},
    ]
    taken = [r.get("context", {}).get("http_route") for r in records if matcher.matches(r)]
    assert taken == found


def test_changed_fields_are_kept_as_given_sorted_once() -> None:
    """Exactly as given (case, dots, spaces within, `%` and `_` themselves),
    duplicates dropped, sorted: equal filters, equal fingerprints."""
    given = ["rate_limit", "Limits.RPM", "rate_limit", "a %_b", "x" * 256]
    kept = validate_filter(FilterDraft(changed_fields=given))
    assert kept.changed_fields == ("Limits.RPM", "a %_b", "rate_limit", "x" * 256)
    assert validate_filter(FilterDraft()).changed_fields == ()


def test_a_changed_field_empty_too_long_or_with_nul_is_refused() -> None:
    bad = ["role", "", "x" * 257, "a\x00b", "\x00"]
    violations = violations_of(FilterDraft(changed_fields=bad))
    assert [v.field for v in violations] == [
        f"filter.changed_fields[{index}]" for index in range(1, len(bad))
    ]
    assert [v.description for v in violations[:3]] == [
        "is empty: give a field name, e.g. rate_limit",
        "is 257 characters long; the limit is 256",
        "must not contain NUL characters",
    ]
    assert fields_of(FilterDraft(changed_fields=["role"] * 101)) == ["filter.changed_fields"]


def test_a_changed_field_holding_a_control_character_is_taken_as_record_takes_it() -> None:
    """Record refuses a change's field for NUL alone: the filter takes every
    other name, control characters too, or such a change is never found."""
    names = ["a\tb", "line\n", "\x7f", "\x9b", "\x1b[0m"]
    taken = validate_filter(FilterDraft(changed_fields=names)).changed_fields
    assert taken == tuple(sorted(names))
    assert validate_filter(FilterDraft(changed_fields=["a\tb"])).changes_match(
        [{"field": "a\tb", "old": 1, "new": 2}]
    )


@pytest.mark.parametrize(
    ("names", "found"),
    [
        (["rate_limit"], ["rate", "both"]),
        (["limits.rpm"], ["path"]),
        (["limits"], ["parent"]),
        (["Rate_Limit"], []),
        (["role", "limits"], ["parent", "both"]),
        ([], ["none", "rate", "path", "parent", "both"]),
    ],
)
def test_the_matcher_takes_the_changed_fields_asked(names: list[str], found: list[str]) -> None:
    """A change's field equal to a name, exactly: no case folded, no path
    resolved (`limits` is not `limits.rpm`); an event without changes never."""
    matcher = RecordMatcher(validate_filter(FilterDraft(changed_fields=names)))

    def changed(description: str, *fields: str) -> dict[str, object]:
        changes = [{"field": name, "before": 1, "after": 2} for name in fields]
        return _LOGIN | {"description": description, "changes": changes}

    records = [
        _LOGIN | {"description": "none"},
        changed("rate", "rate_limit"),
        changed("path", "limits.rpm"),
        changed("parent", "limits"),
        changed("both", "role", "rate_limit"),
    ]
    assert [r["description"] for r in records if matcher.matches(r)] == found


def test_an_actor_prefix_is_kept_as_given_and_checked() -> None:
    assert validate_filter(FilterDraft(actor_prefix="Ali%_\\")).actor_prefix == "Ali%_\\"
    assert validate_filter(FilterDraft()).actor_prefix is None
    assert validate_filter(FilterDraft(actor_prefix="a" * 256)).actor_prefix == "a" * 256
    for bad in ("a" * 257, "ali\t", "a\x00", "\x7f", "a\x85"):
        assert fields_of(FilterDraft(actor_prefix=bad)) == ["filter.actor_prefix"]
    (both,) = violations_of(FilterDraft(actor="alice", actor_prefix="ali"))
    assert both.field == "filter.actor_prefix"
    assert both.description == "set one of actor or actor_prefix, not both"


@pytest.mark.parametrize(
    ("prefix", "found"),
    [
        ("ali", ["alice", "ali%_x", "u-mail"]),
        ("Ali", ["alice", "Alice", "u-mail"]),
        ("ALI.", ["u-mail"]),
        ("ali%", ["ali%_x"]),
        ("ali_", []),
        ("al%", []),
        ("\u039f\u0394\u039f\u03a3", ["greek"]),  # a capital sigma within a word, lowered
    ],
)
def test_the_matcher_takes_an_actor_id_or_email_starting_so(prefix: str, found: list[str]) -> None:
    """As the SQL's ranges: the id as given, the email lowered (every
    character itself, `%` and `_` too)."""
    matcher = RecordMatcher(validate_filter(FilterDraft(actor_prefix=prefix)))
    actors = [
        {"id": "alice", "email": "Alice@Example.com"},
        {"id": "Alice"},
        {"id": "ali%_x"},
        {"id": "u-mail", "email": "ALI.Baba@example.com"},
        {"id": "greek", "email": "\u039f\u0394\u039f\u03a3\u0391@example.gr"},
    ]
    records = [_LOGIN | {"actor": actor} for actor in actors]
    assert [r["actor"]["id"] for r in records if matcher.matches(r)] == found


@pytest.mark.parametrize(
    ("prefix", "successor"),
    [
        ("ali", "alj"),
        ("a%", "a&"),
        ("a\ud7ff", "a\ue000"),  # past the surrogates
        ("a\U0010ffff", "b"),
        ("\U0010ffff\U0010ffff", None),
    ],
)
def test_a_prefix_ranges_up_to_its_successor(prefix: str, successor: str | None) -> None:
    assert prefix_successor(prefix) == successor
    if successor is not None:
        assert prefix < prefix + "\U0010ffff" * 3 < successor


@pytest.mark.parametrize("text", ["1e400", "-1e400", "1" + "0" * 1000, "1e-400"])
def test_a_duration_no_double_holds_matches_no_least_duration_as_the_sql_reads_none(
    text: str,
) -> None:
    """A record written straight into the database whose duration no double
    holds: the SQL reads none (store/events.py's DURATION_READ), and the live
    matcher (streams, alert rules) read `1e400` as infinity, and a thousand
    digits as a whole number, and matched them."""
    record = {"occurred_at": "2026-05-01T00:00:00.000000Z", "severity": "info"}
    record |= {"outcome": "success", "actor": {"id": "u"}, "action": "a.b"}
    matcher = RecordMatcher(EventFilter(min_duration_ms=5.0))
    assert matcher.matches(record | {"context": {"duration_ms": 6}})
    timed = json.loads(f'{{"duration_ms": {text}}}')
    assert not matcher.matches(record | {"context": timed})
