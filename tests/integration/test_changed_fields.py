"""EventFilter.changed_fields (helper-444): the events that changed a field,
by `changes[].field` exactly as recorded, in Query and its pages, CountEvents,
a live stream, a signed export, a sink's and a rule's filter, and the CLI;
a bad name refused naming `filter.changed_fields[i]`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sealtrail import AuditClient, build_alert_rule, build_event, build_filter
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread
from tests.filter_checks import (
    NARROWED,
    NOT_NARROWED,
    cli_descriptions,
    cli_env,
    cli_output,
    descriptions_found,
    exported_and_checked,
    having_recorded,
    live_from_now,
    token_refused,
    two_pages,
    violations_refused,
)
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_export_check import refused_when_told
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# (description, the fields its changes name).
EDITS = [
    ("rate", ("rate_limit",)),
    ("role-and-rate", ("role", "rate_limit")),
    ("rpm", ("limits.rpm",)),
    ("limits", ("limits",)),
    ("cased", ("Rate_Limit",)),
    ("none", ()),
    ("wildcards", ("rate%",)),
]


def _edit(description: str, fields: tuple[str, ...]) -> event_pb2.Event:
    return build_event(
        action="plan.update",
        actor_id="alice",
        description=description,
        changes=[(name, 100, 200) for name in fields],
    )


@pytest.fixture
def edits(client: AuditClient) -> AuditClient:
    return having_recorded(client, _edit, EDITS)


@pytest.mark.parametrize(
    ("names", "found"),
    [
        ("rate_limit", ["rate", "role-and-rate"]),
        (["limits.rpm"], ["rpm"]),  # a path as written
        (["limits"], ["limits"]),  # no path resolved: not `limits.rpm`
        (["Rate_Limit"], ["cased"]),  # case and all
        (["rate%"], ["wildcards"]),  # `%` itself, no wildcard
        (["role", "limits.rpm", "role"], ["role-and-rate", "rpm"]),
        (["rate_limit.x", "rate"], []),
    ],
)
def test_query_and_count_find_the_events_that_changed_a_field(
    edits: AuditClient, names: str | list[str], found: list[str]
) -> None:
    changed = build_filter(actions="plan.update", changed_fields=names)
    assert descriptions_found(edits, changed) == found
    assert edits.count_events(changed).total == len(found)


def test_a_bad_name_is_refused_naming_it(client: AuditClient) -> None:
    bad = build_filter(changed_fields=["role", "", "x" * 257, "a\x00b"])
    assert violations_refused(client, bad) == [
        ("filter.changed_fields[1]", "is empty: give a field name, e.g. rate_limit"),
        ("filter.changed_fields[2]", "is 257 characters long; the limit is 256"),
        ("filter.changed_fields[3]", "must not contain NUL characters"),
    ]
    too_many = build_filter(changed_fields=[f"f{n}" for n in range(101)])
    assert violations_refused(client, too_many) == [
        ("filter.changed_fields", "has 101 values; the limit is 100")
    ]


def test_a_field_named_with_a_control_character_is_found_by_its_name(
    client: AuditClient,
) -> None:
    """Record takes a change's field with any character but NUL (a tab, a
    line break, ESC): the filter takes each such name too, and finds the
    change by it, exactly (helper-458; it refused every control character,
    so such a change could never be found by name)."""
    odd = [
        ("tab", ("rate\tlimit",)),
        ("newline", ("rate\nlimit",)),
        ("escape", ("\x1b[31mrate",)),
        ("plain", ("rate limit",)),
    ]
    having_recorded(client, _edit, odd)
    for names, found in [
        (["rate\tlimit"], ["tab"]),
        (["rate\nlimit"], ["newline"]),
        (["\x1b[31mrate", "rate\tlimit"], ["tab", "escape"]),
        (["rate limit"], ["plain"]),
        (["rate\rlimit"], []),
    ]:
        changed = build_filter(actions="plan.update", changed_fields=names)
        assert descriptions_found(client, changed) == found, names
        assert client.count_events(changed).total == len(found), names
        grouped = client.count_events(changed, group_by="action")
        assert [(g.key, g.count) for g in grouped.groups] == (
            [("plan.update", len(found))] if found else []
        ), names


def test_pages_follow_on_and_a_token_holds_to_its_names(edits: AuditClient) -> None:
    changed = build_filter(changed_fields=["rate_limit", "limits", "rpm"])
    found, token, end = two_pages(edits, changed, page_size=2)
    assert found == ["rate", "role-and-rate", "limits"]
    assert not end
    token_refused(edits, build_filter(changed_fields=["rate_limit", "limits"]), token, page_size=2)


def test_a_live_stream_follows_the_events_that_changed_a_field(edits: AuditClient) -> None:
    client = edits  # a log with a checkpoint to start from
    with live_from_now(client, build_filter(changed_fields=["limits.rpm", "role"])) as live:
        client.record_batch([_edit(*each) for each in EDITS])
        first, second = next(live), next(live)
    assert [first.description, second.description] == ["role-and-rate", "rpm"]


def test_an_export_of_changed_fields_is_checked_offline_and_its_filter_held(
    edits: AuditClient, tmp_path: Path
) -> None:
    changed = build_filter(changed_fields=["rate_limit", "limits.rpm"])
    exported, signed, kept = exported_and_checked(edits, tmp_path / "changed.ndjson", changed)
    assert exported == ["rate", "role-and-rate", "rpm"]
    assert json.loads(signed) == {"changedFields": ["rate_limit", "limits.rpm"]}  # as given
    refused_when_told(kept, signed.replace("limits.rpm", "limits"), "{}")


def test_a_sink_is_narrowed_by_fewer_or_other_names(client: AuditClient) -> None:
    created = client.create_sink(
        paused_webhook(build_filter(changed_fields=["rate_limit", "limits.rpm"]))
    )

    def update(names: list[str]) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(changed_fields=names))

    assert update(["limits.rpm", "rate_limit", "role"]) == NOT_NARROWED
    assert update(["rate_limit"]) == NARROWED
    assert update(["limits.rpm"]) == NARROWED  # another
    assert update(["limits"]) == NARROWED  # `limits` is not `limits.rpm`
    assert update([]) == NOT_NARROWED  # every event


def test_an_alert_rule_of_a_changed_field_and_a_level_fires_on_that_change_alone(
    client: AuditClient,
) -> None:
    """A rule of `min_severity: info` and a changed field watches the events
    that changed it: not refused as watching every event."""
    rule = client.create_alert_rule(
        build_alert_rule(
            "rate limit changed",
            "match",
            filter=build_filter(min_severity="info", changed_fields="rate_limit"),
        )
    )
    client.record(_edit("rpm", ("limits.rpm",)))
    fires = client.record(_edit("rate", ("rate_limit",)))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_queries_by_changed_field_and_names_a_refused_one(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    having_recorded(client_for(tenant), _edit, EDITS)
    env = cli_env(server, tenant)
    options = ["--changed-field", "limits.rpm", "--changed-field", "role"]
    assert cli_descriptions(env, *options) == ["role-and-rate", "rpm"]
    refused = cli_output(env, "query", *options, "--changed-field", "", exit_code=2)
    assert "--changed-field '': is empty: give a field name" in refused, refused
