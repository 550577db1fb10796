"""CountEvents by resource (COUNT_GROUP_BY_RESOURCE): "which resources were
touched most", one group per (resource type, resource id), keyed by the pair
as a canonical JSON array, whatever characters either part holds; through
the client, `sealtrail stats --by resource` and the activity report's top
resources, against a real server and PostgreSQL (helper-392)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from sealtrail import (
    AuditClient,
    EventCount,
    build_event,
    build_filter,
    resource_key,
    resource_of_key,
)
from sealtrail import _cli as cli
from tests.conftest import ServerThread

# Two days ago, at 00:00 UTC: every event below occurred in the hour after it.
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
RECORDED = build_filter(since=DAY0, until=DAY0 + timedelta(hours=1))
# (resource type, resource id, resource name, how many events). The pairs a
# separator would take for one another (`repository/acme` + `web` and
# `repository` + `acme/web`; `a,b` + `c` and `a` + `b,c`), JSON's own
# characters, control characters, other scripts; a type alone, an id alone;
# no resource, and a resource of a name alone, under "".
RESOURCES: list[tuple[str, str, str, int]] = [
    ("repository", "acme/web", "", 4),
    ("repository/acme", "web", "", 3),
    ("a,b", "c", "", 2),
    ("a", "b,c", "", 2),
    ('say "hi"', "back\\slash", "", 1),
    ('["x"', '"]', "", 1),
    ("line", "one\ntwo\tthree\x1fend", "", 1),
    ("customer", "josé ☃ 𝄞", "", 2),
    ("session", "", "", 2),
    ("", "orphan-7", "", 1),
    ("", "", "", 2),
    ("", "", "only a name", 1),
    # One resource, renamed between its events: still one group.
    ("document", "d1", "Draft", 1),
    ("document", "d1", "Final", 1),
]


def _record(client: AuditClient) -> None:
    events = []
    for kind, id, name, times in RESOURCES:
        fields: dict[str, Any] = {}
        for field, value in (("resource_type", kind), ("resource_id", id)):
            if value:
                fields[field] = value
        if name:
            fields["resource_name"] = name
        events += [
            build_event(
                action="record.touch",
                actor_id="u1",
                occurred_at=DAY0 + timedelta(minutes=len(events) + 1),
                **fields,
            )
            for _ in range(times)
        ]
    results = client.record_batch(events)
    assert all(result.error is None for result in results)


def _expected() -> list[EventCount]:
    """The groups of RESOURCES: by count, then key (code points: UTF-8's byte order)."""
    counted = Counter[str]()
    for kind, id, _, times in RESOURCES:
        counted[resource_key(kind, id)] += times
    ordered = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
    return [EventCount(key, count) for key, count in ordered]


@pytest.fixture
def recorded(client_for: Callable[..., AuditClient], tenant: str) -> AuditClient:
    """A reader of this test's tenant, once RESOURCES are recorded in it."""
    _record(client_for(tenant, "recorder"))
    return client_for(tenant, "reader")


def test_each_resource_is_counted_exactly_under_a_key_of_its_type_and_id(
    recorded: AuditClient,
) -> None:
    counts = recorded.count_events(RECORDED, group_by="resource")
    assert counts.total == sum(times for *_, times in RESOURCES)
    assert list(counts.groups) == _expected()
    assert counts.total_groups == 12 and not counts.truncated
    found = {resource_of_key(group.key): group.count for group in counts.groups}
    # A separator's characters in a part keep the pairs apart.
    assert found[("repository", "acme/web")] == 4
    assert found[("repository/acme", "web")] == 3
    assert found[("a,b", "c")] == 2 and found[("a", "b,c")] == 2
    assert found[('say "hi"', "back\\slash")] == 1
    assert found[('["x"', '"]')] == 1
    assert found[("line", "one\ntwo\tthree\x1fend")] == 1
    assert found[("customer", "josé ☃ 𝄞")] == 2
    assert found[("document", "d1")] == 2  # renamed, one resource
    # The keys as the server writes them: canonical JSON, no space, the
    # escapes RFC 8785 makes and no others.
    keys = {group.key for group in counts.groups}
    assert '["repository","acme/web"]' in keys
    assert '["say \\"hi\\"","back\\\\slash"]' in keys
    assert '["line","one\\ntwo\\tthree\\u001fend"]' in keys
    assert '["customer","josé ☃ 𝄞"]' in keys
    assert all(json.loads(key) for key in keys if key)


def test_a_part_the_events_lack_is_empty_and_events_with_neither_are_under_the_empty_key(
    recorded: AuditClient,
) -> None:
    counts = recorded.count_events(RECORDED, group_by="resource")
    by_key = {group.key: group.count for group in counts.groups}
    assert by_key['["session",""]'] == 2  # a type without an id
    assert by_key['["","orphan-7"]'] == 1  # an id without a type
    # No resource, and a resource of a name alone: neither a type nor an id.
    assert by_key[""] == 3
    assert resource_of_key("") == ("", "")
    # The same events, as resource types count them: "" holds the id alone too.
    types = recorded.count_events(RECORDED, group_by="resource_type")
    assert {group.key: group.count for group in types.groups}[""] == 4


def test_the_limit_keeps_the_most_touched_resources_and_says_it_cut(
    recorded: AuditClient,
) -> None:
    top = recorded.count_events(RECORDED, group_by="resource", limit=3)
    assert list(top.groups) == _expected()[:3]
    assert [resource_of_key(group.key) for group in top.groups] == [
        ("repository", "acme/web"),
        ("", ""),  # 3, as the next: "" sorts first
        ("repository/acme", "web"),
    ]
    assert top.truncated and top.total_groups == 12
    assert top.total == sum(times for *_, times in RESOURCES)  # those cut off too
    # Ties of 2, by key in byte order: `["a",` before `["a,b"` before `["customer"`...
    ties = recorded.count_events(RECORDED, group_by="resource", limit=12)
    assert [group.key for group in ties.groups if group.count == 2] == [
        '["a","b,c"]',
        '["a,b","c"]',
        '["customer","josé ☃ 𝄞"]',
        '["document","d1"]',
        '["session",""]',
    ]
    assert not ties.truncated


def test_a_filter_narrows_what_is_counted_per_resource(recorded: AuditClient) -> None:
    repositories = recorded.count_events(
        build_filter(since=DAY0, resource_type="repository"), group_by="resource"
    )
    assert [(g.key, g.count) for g in repositories.groups] == [('["repository","acme/web"]', 4)]
    one = recorded.count_events(
        build_filter(since=DAY0, resource_type="repository/acme", resource_id="web"),
        group_by="resource",
    )
    assert [(g.key, g.count) for g in one.groups] == [('["repository/acme","web"]', 3)]


def test_sealtrail_stats_shows_a_resources_type_and_id_in_two_columns(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    _record(client_for(tenant, "recorder"))
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    until = DAY0 + timedelta(hours=1)
    since = ["--since", f"{DAY0:%Y-%m-%dT%H:%M:%SZ}", "--until", f"{until:%Y-%m-%dT%H:%M:%SZ}"]
    shown = CliRunner().invoke(
        cli.main, ["stats", "--by", "resource", "--limit", "3", *since], env=env
    )
    assert shown.exit_code == 0, shown.output
    rows = [line.split() for line in shown.stdout.splitlines()]
    header = ["┃", "resource", "type", "┃", "resource", "id", "┃", "events", "┃", "share", "┃"]
    assert header in rows
    assert ["│", "repository", "│", "acme/web", "│", "4", "│", "16.7%", "│"] in rows
    assert ["│", "repository/acme", "│", "web", "│", "3", "│", "12.5%", "│"] in rows
    assert ["│", "(none)", "│", "│", "3", "│", "12.5%", "│"] in rows
    assert "total: 24 events" in shown.stdout
    assert "12 groups: showing the first 3; raise --limit" in shown.stderr
    as_json = CliRunner().invoke(cli.main, ["stats", "--by", "resource", "--json", *since], env=env)
    assert as_json.exit_code == 0, as_json.output
    groups = {g["key"]: g["count"] for g in json.loads(as_json.stdout)["groups"]}
    assert groups == {group.key: group.count for group in _expected()}
