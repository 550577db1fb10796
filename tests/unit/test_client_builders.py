"""The client's message builders refuse what they cannot build with an error
naming the argument (a ValueError for a value, a TypeError for an argument
they do not take), never protobuf's own exception nor a message built
without what was given."""

from __future__ import annotations

import pytest

from sealtrail import (
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
    resource_key,
    resource_of_key,
)
from sealtrail._convert import REPEATED_FILTER_FIELDS, count_request
from sealtrail.v1 import audit_service_pb2, event_pb2


@pytest.mark.parametrize(
    ("kind", "settings", "named"),
    [
        ("datadog_logs", {"tags": ["env:prod", "team:sec"]}, "tags"),
        ("webhook", {"url": 443}, "url"),
        ("splunk_hec", {"index": ["main"]}, "index"),
        ("webhook", {"secrets": [1]}, "secrets"),
    ],
)
def test_a_sink_setting_of_the_wrong_type_is_a_value_error_naming_it(
    kind: str, settings: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=f"^{named}: ") as raised:
        build_sink("siem", kind, **{"url": "https://siem.example.com/in", **settings})  # type: ignore[arg-type]
    assert type(raised.value) is ValueError  # not protobuf's ParseError (no ValueError)


def test_one_secret_given_as_a_string_is_that_secret() -> None:
    secret = "whsec_" + "A" * 32
    sink = build_sink("siem", "webhook", url="https://siem.example.com/in", secrets=secret)
    assert list(sink.webhook.secrets) == [secret]


def test_one_sink_id_given_as_a_string_is_that_sink() -> None:
    rule = build_alert_rule("logins", "match", sink_ids="snk_1")  # as build_filter's actions=
    assert list(rule.sink_ids) == ["snk_1"]  # not one sink id per character


def test_a_field_no_event_has_is_a_type_error_naming_it() -> None:
    # `actor` for actor_id: the event was built, and recorded, with no actor.
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'actor'.*actor_id"):
        build_event(action="doc.share", actor="u_1")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kind", "setting", "applies_to"),
    [
        ("match", {"exact_actor_ids": True}, "a threshold or spike"),
        ("match", {"count": 5}, "a threshold"),
        ("new_ip", {"window_seconds": 60}, "a threshold, spike or absence"),
        ("match", {"factor": 2.5}, "a spike"),
        ("threshold", {"min_count": 5}, "a spike"),
        ("new_country", {"group_by": "actor"}, "a threshold or spike"),
        ("off_hours", {"count": 5}, "a threshold"),
        ("threshold", {"time_zone": "Europe/Paris"}, "an off_hours"),
        ("match", {"start_hour": 9}, "an off_hours"),
        ("threshold", {"end_hour": 18}, "an off_hours"),
        ("new_ip", {"working_days": [1, 2]}, "an off_hours"),
    ],
)
def test_a_setting_of_another_kind_of_rule_is_refused_naming_it(
    kind: str, setting: dict[str, object], applies_to: str
) -> None:
    # The message of a kind has no field for it: it was dropped, and the rule
    # created without it (a match rule that fires on every event, not on 5).
    # An off-hours setting said "applies only to a off_hours rule" (helper-484).
    (name,) = setting
    refusal = f"^{name}: applies only to {applies_to} rule, not {kind}$"
    with pytest.raises(ValueError, match=refusal):
        build_alert_rule("logins", kind, filter=None, **setting)  # type: ignore[arg-type]


def test_a_setting_of_another_kind_given_as_its_default_is_taken() -> None:
    # What nothing given means (a form that sends every field): the same rule.
    rule = build_alert_rule(
        "logins", "match", count=0, window_seconds=0, group_by="", exact_actor_ids=False,
        time_zone="", start_hour=0, end_hour=0, working_days=(),
    )  # fmt: skip
    assert rule == build_alert_rule("logins", "match")


@pytest.mark.parametrize(
    ("kind", "setting", "refusal"),
    [
        ("threshold", {"count": -1}, r"^count: must be 2 to 100000, not -1$"),
        ("threshold", {"count": 2**32}, r"^count: must be 2 to 100000, not 4294967296$"),
        ("threshold", {"window_seconds": -3}, r"^window_seconds: must be 1 to 604800 \(7 days\)"),
        ("threshold", {"window_seconds": 2**63}, r"^window_seconds: must be 1 to 604800 "),
        ("off_hours", {"start_hour": -1}, r"^start_hour: must be 0 to 23, not -1$"),
        ("off_hours", {"end_hour": 2**40}, r"^end_hour: must be after start_hour, at most 24, "),
        ("off_hours", {"working_days": [1, 2**63]}, r"^working_days\[1\]: days are 1 \(Monday\)"),
        ("off_hours", {"working_days": [-2]}, r"^working_days\[0\]: days are 1 \(Monday\) to 7"),
    ],
)
def test_a_rule_setting_past_what_its_field_carries_is_refused_naming_it(
    kind: str, setting: dict[str, object], refusal: str
) -> None:
    """A threshold's count or window, an off-hours rule's hours or days are
    uint32s: a negative one, or one past 2**32 - 1, which the server refuses
    as it refuses any outside its range, raised protobuf's bare "Value out of
    range", naming nothing (and `sealtrail alerts create --count -1` ended in
    a traceback). Refused as the server refuses it, naming the argument."""
    with pytest.raises(ValueError, match=refusal):
        build_alert_rule("r", kind, **setting)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "id", "key"),
    [
        ("repository", "acme/web", '["repository","acme/web"]'),
        ("a,b", 'c"d\\', '["a,b","c\\"d\\\\"]'),
        ("line", "\n\t\x01\x7f", '["line","\\n\\t\\u0001\x7f"]'),
        ("customer", "josé ☃", '["customer","josé ☃"]'),
        ("session", "", '["session",""]'),
        ("", "orphan", '["","orphan"]'),
        ("", "", ""),
    ],
)
def test_a_resource_key_is_its_pair_as_canonical_json_and_reads_back(
    kind: str, id: str, key: str
) -> None:
    assert resource_key(kind, id) == key
    assert resource_of_key(key) == (kind, id)


@pytest.mark.parametrize(
    "key", ["repository", '["repository"]', '["a","b","c"]', '["a",1]', '{"a":"b"}', "[", "null"]
)
def test_a_key_that_is_no_resource_pair_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match=r"^not a key of a count by resource: "):
        resource_of_key(key)


def test_actor_types_are_built_by_name_in_any_case_and_a_count_by_them_too() -> None:
    built = build_filter(actor_types=["api_key", "SERVICE"])
    assert list(built.actor_types) == [event_pb2.ACTOR_TYPE_API_KEY, event_pb2.ACTOR_TYPE_SERVICE]
    assert list(build_filter(actor_types="system").actor_types) == [event_pb2.ACTOR_TYPE_SYSTEM]
    with pytest.raises(ValueError, match="actor_types: unknown value 'robot'"):
        build_filter(actor_types=["user", "robot"])
    grouped = count_request(None, "actor_type", 10).group_by
    assert grouped == audit_service_pb2.COUNT_GROUP_BY_ACTOR_TYPE


def test_countries_and_resource_types_are_built_as_given() -> None:
    built = build_filter(countries=["DE", "fr"], resource_types="source")
    assert list(built.countries) == ["DE", "fr"]
    assert list(built.resource_types) == ["source"]
    assert not built.country and not built.resource_type


def test_an_http_request_and_statuses_are_built_from_keywords() -> None:
    """build_event's http_* and duration_ms fill the event's context;
    build_filter takes a status class, a code as text or a number, or a list."""
    event = build_event(
        action="template.read",
        actor_id="k1",
        http_method="GET",
        http_route="/v1/templates/{id}",
        http_status_code=404,
        duration_ms=2.5,
    )
    assert event.context == event_pb2.RequestContext(
        http_method="GET", http_route="/v1/templates/{id}", http_status_code=404, duration_ms=2.5
    )
    assert not build_event(action="a.b", actor_id="k1").HasField("context")
    assert list(build_filter(http_status_classes="5xx").http_status_classes) == ["5xx"]
    assert list(build_filter(http_status_classes=404).http_status_classes) == ["404"]
    both = build_filter(http_status_classes=["5xx", 429])
    assert list(both.http_status_classes) == ["5xx", "429"]


def test_routes_are_built_as_given_from_one_or_a_list() -> None:
    assert list(build_filter(http_routes="/v1/templates/{id}").http_routes) == [
        "/v1/templates/{id}"
    ]
    assert list(build_filter(http_routes=["/v1/x", "/V1/X"]).http_routes) == ["/v1/x", "/V1/X"]
    assert not build_filter().http_routes


def test_a_route_presence_is_built_of_true_false_or_none() -> None:
    assert build_filter(has_http_route=True).http_route_presence == event_pb2.PRESENCE_PRESENT
    assert build_filter(has_http_route=False).http_route_presence == event_pb2.PRESENCE_ABSENT
    assert build_filter().http_route_presence == event_pb2.PRESENCE_UNSPECIFIED
    assert build_filter(has_http_route=None) == build_filter()


def test_an_actor_prefix_is_built_as_given() -> None:
    built = build_filter(actor_prefix="Ali%_")
    assert built.actor_prefix == "Ali%_"
    assert not built.actor


def test_changed_fields_are_built_as_given() -> None:
    """One name or several, each as given: a string is one name, not its letters."""
    assert list(build_filter(changed_fields="rate_limit").changed_fields) == ["rate_limit"]
    several = build_filter(changed_fields=["limits.rpm", "Role"])
    assert list(several.changed_fields) == ["limits.rpm", "Role"]
    assert not build_filter().changed_fields


def test_roles_are_built_as_given_one_as_a_string() -> None:
    """A string is one role, not its letters, in an event and a filter alike."""
    assert list(build_filter(actor_roles="admin").actor_roles) == ["admin"]
    assert list(build_filter(actor_roles=["Admin", "billing"]).actor_roles) == ["Admin", "billing"]
    assert not build_filter().actor_roles
    assert list(build_event(action="a.b", actor_id="u", actor_roles="admin").actor.roles) == [
        "admin"
    ]
    built = build_event(action="a.b", actor_id="u", actor_roles=("support", "admin"))
    assert list(built.actor.roles) == ["support", "admin"]
    assert not build_event(action="a.b", actor_id="u").actor.roles


def test_every_list_field_of_the_filter_is_listed_as_repeated() -> None:
    """The CLI's repeatable options and the console's comma-separated
    parameters are made from REPEATED_FILTER_FIELDS: a list field added to
    EventFilter and missed there would be a single value in both. A map
    (`details_equals`: entries all holding, not values any of) is no list."""
    fields = event_pb2.EventFilter.DESCRIPTOR.fields
    maps = {f.name for f in fields if f.message_type and f.message_type.GetOptions().map_entry}
    repeated = {field.name for field in fields if field.is_repeated} - maps
    assert set(REPEATED_FILTER_FIELDS) == repeated
    assert maps == {"details_equals"}


def test_details_are_built_as_a_record_writes_them() -> None:
    built = build_filter(details_equals={"environment": "prod", "attempt": 3, "dry": False})
    assert dict(built.details_equals) == {"environment": "prod", "attempt": "3", "dry": "false"}
    assert dict(build_filter(details_equals={"n": 3.0, "t": 1e-7}).details_equals) == {
        "n": "3",
        "t": "1e-7",
    }
    assert not build_filter().details_equals
    with pytest.raises(ValueError, match="details_equals"):
        build_filter(details_equals={"n": float("nan")})


def test_a_least_duration_is_built_and_counts_by_route_and_status_too() -> None:
    assert build_filter(min_duration_ms=1000).min_duration_ms == 1000.0
    assert build_filter().min_duration_ms == 0.0
    assert count_request(None, "http_route", 10).group_by == (
        audit_service_pb2.COUNT_GROUP_BY_HTTP_ROUTE
    )
    assert count_request(None, "http_status", 10).group_by == (
        audit_service_pb2.COUNT_GROUP_BY_HTTP_STATUS
    )
