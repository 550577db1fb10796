"""The client's message builders refuse what they cannot build with an error
naming the argument (a ValueError for a value, a TypeError for an argument
they do not take), never protobuf's own exception nor a message built
without what was given."""

from __future__ import annotations

import pytest

from sealtrail import build_alert_rule, build_event, build_sink


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
