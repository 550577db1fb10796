"""Which pages run with a generic plan (store/events.py, ADR 0027): only those
whose plan one index decides whatever the values; any other filter's plan
depends on its values, and a generic one can read a whole time range."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.store.events import plan_fixed_by_index

# A value for every field of EventFilter: a field added later must be placed here.
SAMPLES: dict[str, Any] = {
    "occurred_after": datetime(2026, 1, 1, tzinfo=UTC),
    "occurred_before": datetime(2026, 1, 2, tzinfo=UTC),
    "actions": ("user.login", "user.logout"),
    "action_prefixes": ("user.",),
    "action_suffixes": (".delete",),
    "categories": ("authentication",),
    "min_severity": 3,
    "outcomes": ("failure",),
    "actor": "u7",
    "resource_type": "document",
    "resource_id": "d1",
    "request_id": "r1",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "text": "invoice",
    "recorded_by": "0190f1c2-5b7e-7d3a-9c41-2f6e8a1b3c5d",
    "ip": "203.0.113.0/24",
    "excluded_actions": ("audit_log.queried",),
    "excluded_prefixes": ("audit_log.",),
    "excluded_suffixes": (".read",),
    "country": "KP",
    "actor_email_domain": "contractor.example",
    "severities": (2, 4),
    "user_agent": "curl",
    "credential_id": "key_8f3a",
    "credential_kind": "api_key",
    "actor_types": ("api_key",),
    "countries": ("DE", "FR"),
    "resource_types": ("file", "source"),
    "http_status_classes": ("404", "5xx"),
    "actor_prefix": "ali",
    "min_duration_ms": 1000.0,
    "http_routes": ("/v1/templates/{id}",),
    "changed_fields": ("limits.rpm", "rate_limit"),
    "details_equals": (("environment", "prod"),),
    "actor_roles": ("admin", "billing"),
    "has_http_route": False,
}


def test_every_field_of_the_filter_has_a_sample() -> None:
    assert set(SAMPLES) == {field.name for field in dataclasses.fields(EventFilter)}


def test_no_filter_and_one_action_are_fixed_by_their_index() -> None:
    assert plan_fixed_by_index(EventFilter())
    assert plan_fixed_by_index(EventFilter(actions=("user.login",)))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_any_other_filter_is_planned_for_its_values(name: str) -> None:
    assert not plan_fixed_by_index(EventFilter(**{name: SAMPLES[name]}))
    one_action = EventFilter(actions=("user.login",))
    if name != "actions":
        assert not plan_fixed_by_index(dataclasses.replace(one_action, **{name: SAMPLES[name]}))
