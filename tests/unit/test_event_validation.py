"""validate_event and finalize_record: the body a valid draft becomes, the exact
field paths of every violation, and the canonical record that is hashed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given
from hypothesis import strategies as st

from sealtrail_server.domain import merkle
from sealtrail_server.domain.errors import FieldViolation, InvalidArgument
from sealtrail_server.domain.event import (
    MISSING,
    OWN_ACTIONS,
    SERVER_FIELDS,
    ChangeDraft,
    EventDraft,
    ServerFields,
    ValidEvent,
    asserted_part,
    caller_part,
    context_address,
    finalize_record,
    format_timestamp,
    located,
    recorder_bytes,
    validate_event,
    wants_location,
)

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
SERVER = ServerFields(
    tenant_id="acme",
    id="0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    seq=42,
    received_at="2026-05-01T12:00:00.250000Z",
)


def minimal(**fields: Any) -> EventDraft:
    return EventDraft(**{"action": "user.login", "actor_id": "u-1", **fields})


def full_draft() -> EventDraft:
    return EventDraft(
        action="api_key.create",
        occurred_at=(NOW_S - 60, 123_456_789),
        category=6,
        severity=2,
        outcome=3,
        description="Created a key for CI",
        actor_type=2,
        actor_id="key_123",
        actor_email="ops@example.com",
        actor_display_name="Ops Bot",
        resource_type="api_key",
        resource_id="k-9",
        resource_name="CI key",
        changes=[
            ChangeDraft("scopes", before=["read"], after=["read", "write"]),
            ChangeDraft("expires_at", after=None),
            ChangeDraft("label"),
        ],
        details={"reason": "rotation", "count": 3},
        ip="2001:DB8::1",
        user_agent="curl/8.5",
        request_id="6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
        trace_id="4BF92F3577B34DA6A3CE929D0E0E4736",
        span_id="00F067AA0BA902B7",
        idempotency_key="idem-1",
    )


def violations_of(draft: EventDraft, *, now: datetime = NOW) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as caught:
        validate_event(draft, now=now, path="event")
    assert caught.value.violations, "InvalidArgument without violations"
    return caught.value.violations


def fields_of(draft: EventDraft, *, now: datetime = NOW) -> list[str]:
    return [v.field for v in violations_of(draft, now=now)]


# --- valid drafts -----------------------------------------------------------


def test_full_draft_yields_the_expected_body() -> None:
    valid = validate_event(full_draft(), now=NOW, path="event")
    assert valid.body == {
        "action": "api_key.create",
        "occurred_at": "2026-05-01T11:59:00.123456Z",
        "category": "security",
        "severity": "warning",
        "outcome": "denied",
        "description": "Created a key for CI",
        "actor": {
            "type": "api_key",
            "id": "key_123",
            "email": "ops@example.com",
            "display_name": "Ops Bot",
        },
        "resource": {"type": "api_key", "id": "k-9", "name": "CI key"},
        "changes": [
            {"field": "scopes", "before": ["read"], "after": ["read", "write"]},
            {"field": "expires_at", "after": None},
            {"field": "label"},
        ],
        "details": {"reason": "rotation", "count": 3},
        "context": {
            "ip": "2001:db8::1",
            "user_agent": "curl/8.5",
            "request_id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
        },
        "idempotency_key": "idem-1",
    }
    assert valid.explicit_time is True
    assert valid.occurred_at == "2026-05-01T11:59:00.123456Z"
    assert valid.path == "event"
    assert valid.action == "api_key.create"
    assert valid.category == "security"
    assert valid.severity == 2
    assert valid.outcome == "denied"
    assert valid.actor_id == "key_123"
    assert valid.actor_email == "ops@example.com"
    assert (valid.resource_type, valid.resource_id) == ("api_key", "k-9")
    assert valid.request_id == "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    assert valid.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert valid.idempotency_key == "idem-1"


def test_the_email_is_recorded_as_sent_and_its_column_lowered() -> None:
    """The record (hashed) keeps the caller's case; the column, which only the
    actor filter reads, holds it lowered, so that any case finds it (ADR 0067)."""
    valid = validate_event(minimal(actor_email="Carol.Smith@Example.COM"), now=NOW, path="event")
    assert valid.body["actor"]["email"] == "Carol.Smith@Example.COM"
    assert valid.actor_email == "carol.smith@example.com"


def test_minimal_draft_takes_defaults_and_omits_empty_parts() -> None:
    valid = validate_event(minimal(), now=NOW, path="event")
    assert valid.body == {
        "action": "user.login",
        "occurred_at": "2026-05-01T12:00:00.000000Z",
        "severity": "info",
        "outcome": "success",
        "actor": {"type": "user", "id": "u-1"},
    }
    assert valid.explicit_time is False
    assert valid.category is None
    assert valid.severity == 1
    assert valid.outcome == "success"
    assert valid.actor_email is None
    assert valid.resource_type is None and valid.resource_id is None
    assert valid.request_id is None and valid.trace_id is None
    assert valid.idempotency_key is None
    assert valid.plain is True


def test_empty_details_and_partial_resource_are_handled() -> None:
    valid = validate_event(minimal(details={}, resource_id="r-1"), now=NOW)
    assert "details" not in valid.body
    assert valid.body["resource"] == {"id": "r-1"}


def test_server_time_is_used_with_microseconds_in_utc() -> None:
    now = datetime(2026, 5, 1, 14, 0, 0, 987654, tzinfo=UTC)
    valid = validate_event(minimal(), now=now.astimezone(), path="event")
    assert valid.body["occurred_at"] == "2026-05-01T14:00:00.987654Z"


@pytest.mark.parametrize(
    ("ip", "normalised"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:0db8:0000:0000:0000:0000:0000:0001"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("FE80::1%ETH0", "fe80::1%eth0"),
        ("::FFFF:C000:0201", "::ffff:c000:0201"),
    ],
)
def test_ip_is_kept_as_sent_in_lowercase(ip: str, normalised: str) -> None:
    # Not re-rendered by ipaddress, whose output differs between Python versions.
    valid = validate_event(minimal(ip=ip), now=NOW)
    assert valid.body["context"] == {"ip": normalised}
    # The column the `ip` filter reads: the stored text's network address.
    assert valid.ip == context_address(normalised)
    assert valid.ip in {"192.0.2.1", "2001:db8::1", "1.2.3.4", "fe80::1"}


@pytest.mark.parametrize(("country", "stored"), [("FR", "FR"), ("de", "DE"), ("Us", "US")])
def test_a_country_is_stored_in_upper_case(country: str, stored: str) -> None:
    valid = validate_event(minimal(country=country), now=NOW)
    assert valid.body["context"] == {"country": stored, "country_source": "caller"}


def test_a_located_country_is_marked_counted_apart_and_not_asserted() -> None:
    """The server's country (ADR 0134) is in the record, marked `geoip`; the
    record limit does not count it, and a retry need not agree on it."""
    sent = validate_event(minimal(ip="81.2.69.7"), now=NOW)
    assert wants_location(sent) == "81.2.69.7"
    assert wants_location(validate_event(minimal(ip="81.2.69.7", country="fr"), now=NOW)) is None
    assert wants_location(validate_event(minimal(), now=NOW)) is None
    found = located(sent, "FR")
    assert found.body["context"] == {"ip": "81.2.69.7", "country": "FR", "country_source": "geoip"}
    assert sent.body["context"] == {"ip": "81.2.69.7"}  # the event sent is left as it was
    record = finalize_record(found, SERVER)
    assert recorder_bytes(found) == len(record) - len(finalize_record(sent, SERVER))
    assert asserted_part(found.body) == asserted_part(sent.body)


def test_a_country_stored_before_it_was_marked_is_the_same_request_as_one_marked() -> None:
    """A retry, after an upgrade, of an event first stored with no mark."""
    marked = validate_event(minimal(country="FR"), now=NOW).body
    before = {**marked, "context": {"country": "FR"}}
    assert asserted_part(before) == asserted_part(marked)
    other = validate_event(minimal(country="DE"), now=NOW).body
    assert asserted_part(other) != asserted_part(marked)


@pytest.mark.parametrize(
    "request_id",
    [
        "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
        "urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "6ba7b8109dad11d1-80b4-00c04fd430c8",
        "+6ba7b81-9dad-11d1-80b4-00c04fd430c8",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8\n",
    ],
)
def test_request_id_must_be_a_uuid_hyphenated_or_as_32_hex_digits(request_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_event(minimal(request_id=request_id), now=NOW)
    assert [v.field for v in caught.value.violations] == ["event.context.request_id"]


@pytest.mark.parametrize(
    "request_id",
    [
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
        "6ba7b8109dad11d180b400c04fd430c8",  # nginx's $request_id, as the header takes it
    ],
)
def test_request_id_becomes_canonical_uuid(request_id: str) -> None:
    valid = validate_event(minimal(request_id=request_id), now=NOW)
    assert valid.body["context"]["request_id"] == "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    assert valid.request_id == "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


@pytest.mark.parametrize(
    "action", ["a.b", "api_key.create", "org.member.role_changed", "x1.y_2", "a" + ".b" * 63]
)
def test_well_formed_actions_are_accepted(action: str) -> None:
    assert len(action) <= 128
    assert validate_event(minimal(action=action), now=NOW).body["action"] == action


def test_retentions_actions_are_sealtrails_own() -> None:
    """No retention rule removes them: a caller could forge a purge's record,
    or keep its own events for good by naming them so."""
    for action in ("retention.purged", "retention.offer_accepted"):
        assert fields_of(minimal(action=action)) == ["event.action"]
        assert validate_event(minimal(action=action), now=NOW, own=True).body["action"] == action
    assert validate_event(minimal(action="retentions.kept"), now=NOW).body["action"]


def test_alerts_and_the_keys_of_sealtrails_own_records_cannot_be_forged() -> None:
    """A recorder's `security.alert` reached a SIEM as Sealtrail's alert; a key
    claimed ahead (`alert:<rule>:<seq>`) made the real alert find the caller's
    event under it and take it for itself: an alert never raised."""
    assert fields_of(minimal(action="security.alert")) == ["event.action"]
    for key in ("alert:r1:42", "retention.purged:p1"):
        assert fields_of(minimal(idempotency_key=key)) == ["event.idempotency_key"]
        assert validate_event(minimal(idempotency_key=key), now=NOW, own=True).idempotency_key
    assert validate_event(minimal(action="security.alerted"), now=NOW).body["action"]
    assert validate_event(minimal(idempotency_key="alerts-1"), now=NOW).idempotency_key


@pytest.mark.parametrize("action", sorted(OWN_ACTIONS))
def test_the_records_of_sealtrails_own_api_cannot_be_forged(action: str) -> None:
    """A recorder's `audit_log.exported` counted against the tenant's export
    rate limit (30 a minute blocked every export), and its `api_token.revoked`
    or `audit_log.queried` showed a change or a read that never happened."""
    assert fields_of(minimal(action=action)) == ["event.action"]
    assert validate_event(minimal(action=action), now=NOW, own=True).body["action"] == action
    assert validate_event(minimal(action=action + "_elsewhere"), now=NOW).body["action"]


def test_limits_are_inclusive() -> None:
    draft = minimal(
        action="a." + "b" * 126,
        description="d" * 4096,
        actor_id="i" * 256,
        idempotency_key="k" * 128,
        changes=[ChangeDraft(f"f{i}") for i in range(256)],
    )
    valid = validate_event(draft, now=NOW)
    assert len(valid.body["changes"]) == 256
    assert len(valid.body["action"]) == 128


# --- occurred_at ------------------------------------------------------------


def test_occurred_at_exactly_five_minutes_ahead_is_accepted() -> None:
    valid = validate_event(minimal(occurred_at=(NOW_S + 300, 0)), now=NOW)
    assert valid.body["occurred_at"] == "2026-05-01T12:05:00.000000Z"
    assert valid.explicit_time is True


@pytest.mark.parametrize("ahead", [301, 3600, 10**11])
def test_occurred_at_more_than_five_minutes_ahead_is_rejected(ahead: int) -> None:
    violations = violations_of(minimal(occurred_at=(NOW_S + ahead, 0)))
    assert violations == [
        FieldViolation("event.occurred_at", "is more than 5 minutes in the future")
    ]


def test_occurred_at_in_the_past_and_at_the_epoch_is_accepted() -> None:
    assert (
        validate_event(minimal(occurred_at=(0, 0)), now=NOW).body["occurred_at"]
        == "1970-01-01T00:00:00.000000Z"
    )
    assert (
        validate_event(minimal(occurred_at=(NOW_S - 86400, 999_999_999)), now=NOW).body[
            "occurred_at"
        ]
        == "2026-04-30T12:00:00.999999Z"
    )


@pytest.mark.parametrize("stamp", [(-1, 0), (-86400, 5), (NOW_S, 1_000_000_000), (NOW_S, -1)])
def test_negative_time_or_bad_nanos_is_rejected(stamp: tuple[int, int]) -> None:
    assert fields_of(minimal(occurred_at=stamp)) == ["event.occurred_at"]


# --- single bad fields ------------------------------------------------------


@pytest.mark.parametrize(
    ("draft", "field"),
    [
        (minimal(action=""), "event.action"),
        (minimal(action="Create"), "event.action"),
        (minimal(action="api_key"), "event.action"),
        (minimal(action="api_key."), "event.action"),
        (minimal(action="a..b"), "event.action"),
        (minimal(action=".a.b"), "event.action"),
        (minimal(action="api-key.create"), "event.action"),
        (minimal(action="1a.b"), "event.action"),
        (minimal(action="api_key.create\n"), "event.action"),
        (minimal(action="api_key.Create"), "event.action"),
        (minimal(category=99), "event.category"),
        (minimal(category=-1), "event.category"),
        (minimal(severity=99), "event.severity"),
        (minimal(severity=5), "event.severity"),
        (minimal(outcome=99), "event.outcome"),
        (minimal(outcome=4), "event.outcome"),
        (minimal(actor_type=99), "event.actor.type"),
        (minimal(actor_type=5), "event.actor.type"),
        (minimal(actor_id=""), "event.actor.id"),
        (minimal(actor_id="i" * 257), "event.actor.id"),
        (minimal(actor_email="not-an-email"), "event.actor.email"),
        (minimal(actor_email="a@" + "b" * 319), "event.actor.email"),
        (minimal(actor_display_name="n" * 257), "event.actor.display_name"),
        (minimal(description="d" * 4097), "event.description"),
        (minimal(resource_type="t" * 257), "event.resource.type"),
        (minimal(resource_id="i" * 257), "event.resource.id"),
        (minimal(resource_name="n" * 257), "event.resource.name"),
        (minimal(user_agent="u" * 1025), "event.context.user_agent"),
        (minimal(idempotency_key="k" * 129), "event.idempotency_key"),
        (minimal(ip="10.0.0.256"), "event.context.ip"),
        (minimal(ip="localhost"), "event.context.ip"),
        (minimal(ip="1.2.3"), "event.context.ip"),
        (minimal(ip="2001:db8::1::2"), "event.context.ip"),
        (minimal(ip=" 10.0.0.1"), "event.context.ip"),
        (minimal(country="FRA"), "event.context.country"),
        (minimal(country="F"), "event.context.country"),
        (minimal(country="F1"), "event.context.country"),
        (minimal(country="É1"), "event.context.country"),
        (minimal(request_id="not-a-uuid"), "event.context.request_id"),
        (minimal(request_id="6ba7b810-9dad-11d1-80b4-00c04fd430c"), "event.context.request_id"),
        (minimal(request_id="6ba7b810-9dad-11d1-80b4-00c04fd430cg"), "event.context.request_id"),
        (minimal(request_id="6ba7b810" * 6), "event.context.request_id"),
        (minimal(trace_id="4bf92f3577b34da6a3ce929d0e0e473"), "event.context.trace_id"),
        (minimal(trace_id="4bf92f3577b34da6a3ce929d0e0e47360"), "event.context.trace_id"),
        (minimal(trace_id="4bf92f3577b34da6a3ce929d0e0e473g"), "event.context.trace_id"),
        (minimal(trace_id="0" * 32), "event.context.trace_id"),
        (minimal(trace_id="4bf92f35-77b3-4da6-a3ce-929d0e0e4736"), "event.context.trace_id"),
        (minimal(span_id="00f067aa0ba902b"), "event.context.span_id"),
        (minimal(span_id="00f067aa0ba902b70"), "event.context.span_id"),
        (minimal(span_id="00f067aa0ba902bz"), "event.context.span_id"),
        (minimal(span_id="0" * 16), "event.context.span_id"),
        (minimal(changes=[ChangeDraft("")]), "event.changes[0].field"),
        (minimal(changes=[ChangeDraft("ok"), ChangeDraft("f" * 257)]), "event.changes[1].field"),
    ],
)
def test_bad_field_is_reported_at_its_path(draft: EventDraft, field: str) -> None:
    violations = violations_of(draft)
    assert {v.field for v in violations} == {field}
    assert all(v.description for v in violations)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("action", "event.action"),
        ("description", "event.description"),
        ("actor_id", "event.actor.id"),
        ("actor_email", "event.actor.email"),
        ("actor_display_name", "event.actor.display_name"),
        ("resource_type", "event.resource.type"),
        ("resource_id", "event.resource.id"),
        ("resource_name", "event.resource.name"),
        ("user_agent", "event.context.user_agent"),
        ("idempotency_key", "event.idempotency_key"),
    ],
)
def test_nul_in_a_string_is_rejected(name: str, path: str) -> None:
    draft = minimal(actor_email="a@b.example")
    setattr(draft, name, "a.b@\x00c")
    violations = violations_of(draft)
    assert FieldViolation(path, "must not contain NUL characters") in violations
    assert {v.field for v in violations} == {path}


def test_nul_in_a_change_field_is_rejected() -> None:
    violations = violations_of(minimal(changes=[ChangeDraft("a\x00")]))
    assert violations == [
        FieldViolation("event.changes[0].field", "must not contain NUL characters")
    ]


def test_unknown_enum_descriptions_name_the_value() -> None:
    violations = violations_of(minimal(category=99))
    assert violations == [FieldViolation("event.category", "unknown enum value 99")]


def test_missing_action_is_reported_as_required() -> None:
    assert violations_of(minimal(action="")) == [FieldViolation("event.action", "is required")]
    assert violations_of(minimal(actor_id="")) == [FieldViolation("event.actor.id", "is required")]


def test_over_long_action_is_reported() -> None:
    action = "a." + "b" * 127
    violations = violations_of(minimal(action=action))
    assert FieldViolation("event.action", "is 129 characters long; the limit is 128") in violations
    assert {v.field for v in violations} == {"event.action"}


def test_description_over_the_limit_names_its_length() -> None:
    assert violations_of(minimal(description="d" * 4097)) == [
        FieldViolation("event.description", "is 4097 characters long; the limit is 4096")
    ]


def test_more_than_256_changes_is_rejected() -> None:
    violations = violations_of(minimal(changes=[ChangeDraft(f"f{i}") for i in range(257)]))
    assert violations == [FieldViolation("event.changes", "has 257 entries; the limit is 256")]


def test_change_values_are_kept_and_missing_ones_omitted() -> None:
    draft = minimal(
        changes=[
            ChangeDraft("a", before=MISSING, after=1),
            ChangeDraft("b", before=None, after=MISSING),
            ChangeDraft("c", before={"x": [1, "y"]}, after=False),
        ]
    )
    assert validate_event(draft, now=NOW).body["changes"] == [
        {"field": "a", "after": 1},
        {"field": "b", "before": None},
        {"field": "c", "before": {"x": [1, "y"]}, "after": False},
    ]


def test_json_error_is_passed_through_verbatim() -> None:
    error = FieldViolation("event.details.payload", "must be a finite number")
    violations = violations_of(minimal(details={"payload": None}, json_error=error))
    assert violations == [error]


def test_path_prefixes_every_violation() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_event(minimal(action="", trace_id="0" * 32), now=NOW, path="events[3]")
    assert [v.field for v in caught.value.violations] == [
        "events[3].action",
        "events[3].context.trace_id",
    ]
    assert validate_event(minimal(), now=NOW, path="events[3]").path == "events[3]"


def test_every_violation_is_reported_at_once() -> None:
    error = FieldViolation("event.details.k", "keys must not contain NUL characters")
    draft = EventDraft(
        action="Bad",
        occurred_at=(NOW_S + 3600, 0),
        category=99,
        severity=99,
        outcome=99,
        description="d" * 4097,
        actor_type=99,
        actor_id="",
        actor_email="nobody",
        resource_name="\x00",
        changes=[ChangeDraft("")],
        json_error=error,
        ip="nope",
        user_agent="u" * 1025,
        request_id="nope",
        trace_id="nope",
        span_id="nope",
        idempotency_key="k" * 129,
    )
    violations = violations_of(draft)
    assert [v.field for v in violations] == [
        "event.action",
        "event.occurred_at",
        "event.category",
        "event.severity",
        "event.outcome",
        "event.description",
        "event.actor.type",
        "event.actor.id",
        "event.actor.email",
        "event.resource.name",
        "event.changes[0].field",
        "event.details.k",
        "event.context.ip",
        "event.context.user_agent",
        "event.context.request_id",
        "event.context.trace_id",
        "event.context.span_id",
        "event.idempotency_key",
    ]
    with pytest.raises(InvalidArgument) as caught:
        validate_event(draft, now=NOW)
    assert [v.field for v in caught.value.violations] == [v.field for v in violations]
    # The message names what fits in a client's trailers and counts the rest.
    assert str(caught.value).startswith("invalid request: event.action: ")
    assert str(caught.value).endswith(" more")


def test_invalid_argument_reason_and_message() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_event(minimal(severity=7), now=NOW)
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert caught.value.message == "invalid request: event.severity: unknown enum value 7"


# --- finalize_record --------------------------------------------------------


def finalized(valid: ValidEvent) -> tuple[bytes, dict[str, Any]]:
    record = finalize_record(valid, SERVER)
    return record, json.loads(record)


def test_finalize_record_adds_server_fields_to_the_body() -> None:
    valid = validate_event(full_draft(), now=NOW)
    record, parsed = finalized(valid)
    assert caller_part(parsed) == valid.body
    assert {k: parsed[k] for k in SERVER_FIELDS} == {
        "v": 1,
        "tenant_id": "acme",
        "id": "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "seq": 42,
        "received_at": "2026-05-01T12:00:00.250000Z",
    }
    assert set(parsed) == set(valid.body) | SERVER_FIELDS
    # Canonical: exactly what the reference JCS implementation produces.
    assert record == rfc8785.dumps(parsed)
    assert merkle.leaf_hash(record) == hashlib.sha256(b"\x00" + record).digest()


def test_finalize_record_of_a_minimal_event_is_exact() -> None:
    record, _ = finalized(validate_event(minimal(), now=NOW))
    assert record == (
        b'{"action":"user.login","actor":{"id":"u-1","type":"user"},'
        b'"id":"0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",'
        b'"occurred_at":"2026-05-01T12:00:00.000000Z","outcome":"success",'
        b'"received_at":"2026-05-01T12:00:00.250000Z","seq":42,"severity":"info",'
        b'"tenant_id":"acme","v":1}'
    )
    assert merkle.leaf_hash(record).hex() == hashlib.sha256(b"\x00" + record).hexdigest()


def test_finalize_record_canonicalises_non_plain_details() -> None:
    draft = minimal(
        details={"\ue000": 1, "\U0001f600": 1e21, "ratio": 0.1}, plain=False, description="é"
    )
    valid = validate_event(draft, now=NOW)
    assert valid.plain is False
    record, parsed = finalized(valid)
    assert record == rfc8785.dumps(parsed)
    # UTF-16 order: "r" (0072) < U+1F600 (D83D DE00) < U+E000.
    assert '"details":{"ratio":0.1,"\U0001f600":1e+21,"\ue000":1}'.encode() in record
    assert caller_part(parsed) == valid.body
    assert merkle.leaf_hash(record) == hashlib.sha256(b"\x00" + record).digest()


def test_records_differing_in_one_field_hash_differently() -> None:
    a = finalize_record(validate_event(minimal(), now=NOW), SERVER)
    b = finalize_record(validate_event(minimal(actor_id="u-2"), now=NOW), SERVER)
    c = finalize_record(validate_event(minimal(), now=NOW), replace(SERVER, seq=43))
    assert len({merkle.leaf_hash(r) for r in (a, b, c)}) == 3


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
@example(datetime(1970, 1, 1), 0)
@example(datetime(2026, 5, 1, 12, 0, 0, 7), 0)  # microseconds written in full
@example(datetime(999, 12, 31, 23, 59, 59), 0)  # the year padded to four digits
@example(datetime(1000, 1, 1, 0, 30), 60)  # in year 999 once in UTC
def test_format_timestamp_writes_utc_to_the_microsecond_at_fixed_width(
    wall: datetime, offset_minutes: int
) -> None:
    """Times are written as records have always held them (strftime's
    `%Y-%m-%dT%H:%M:%S.%fZ` in UTC, the year padded): every record's bytes,
    and so its hash, depend on it."""
    moment = wall.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    utc = moment.astimezone(UTC)
    expected = f"{utc.year:04d}" + utc.strftime("-%m-%dT%H:%M:%S.%fZ")
    assert format_timestamp(moment) == expected
    assert len(expected) == len("2026-05-01T12:00:00.000000Z")
