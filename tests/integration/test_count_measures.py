"""Latency figures from CountEvents: a measure of each group's
`context.duration_ms` (mean, p50, p95, p99, longest) beside its count, over
the events that have one, in every grouping, time buckets of UTC and of a
time zone included; through the clients and `sealtrail stats --measure`,
against a real server and PostgreSQL (helper-497)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    EventCount,
    GroupBy,
    InvalidArgumentError,
    Measure,
    build_event,
    build_filter,
)
from sealtrail import _cli as cli
from tests.conftest import ServerThread
from tests.integration.test_credential_backfill import _as_before_0056

# Four days ago, at 00:00 UTC: every event below occurred in the two days
# after it, all in the past, whatever the day the tests run.
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=4)
KEY_A = '["api_key","key_a","a1b2"]'
KEY_B = '["api_key","key_b","c3d4"]'
# (actor, action, resource id, credential id, hours after DAY0, duration in ms; 0: none).
# alice's four requests took 10, 20, 30, 40 ms; bob's two 100 and 300 ms;
# carol and dave recorded none (their groups are counted, never measured).
EVENTS: list[tuple[str, str, str, str, int, float]] = [
    ("alice", "api.read", "d1", "key_a", 1, 10),
    ("alice", "api.read", "d1", "key_a", 2, 20),
    ("bob", "api.write", "d2", "key_b", 3, 100),
    ("carol", "api.read", "", "", 4, 0),
    ("alice", "api.read", "d1", "key_a", 25, 30),
    ("alice", "api.read", "d1", "key_a", 26, 40),
    ("bob", "api.write", "d2", "key_b", 27, 300),
    ("dave", "cli.run", "", "", 28, 0),
]
RECORDED = build_filter(since=DAY0, until=DAY0 + timedelta(days=2))
HINTS = {"key_a": "a1b2", "key_b": "c3d4"}


def _events() -> list[Any]:
    events = []
    for actor, action, resource, credential, hours, ms in EVENTS:
        fields: dict[str, Any] = {"duration_ms": ms} if ms else {}
        if resource:
            fields |= {"resource_type": "document", "resource_id": resource}
        if credential:
            fields |= {
                "credential_kind": "api_key",
                "credential_id": credential,
                "credential_hint": HINTS[credential],
            }
        events.append(
            build_event(
                action=action,
                actor_id=actor,
                occurred_at=DAY0 + timedelta(hours=hours),
                **fields,
            )
        )
    return events


@pytest.fixture
def recorded(client_for: Callable[..., AuditClient], tenant: str) -> AuditClient:
    """A reader of this test's tenant, once EVENTS are recorded in it."""
    results = client_for(tenant, "recorder").record_batch(_events())
    assert all(result.error is None for result in results)
    return client_for(tenant, "reader")


def _day(days: int, offset: str = "Z") -> str:
    return (DAY0 + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S") + offset


def _hour(hours: int) -> str:
    return (DAY0 + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


# (grouping, measure, groups as (key, count, value, measured)), in the
# answer's order: by count, then key; days and hours in time order.
# Percentiles are percentile_cont's: alice's p95 of 10, 20, 30, 40 is
# 30 + 0.85 * 10 (the 2.85th of 0..3), bob's p99 of 100, 300 is 100 + 0.99 * 200.
CASES: list[tuple[GroupBy, Measure, list[tuple[str, int, float, int]]]] = [
    (
        "actor",
        "duration_p50",
        [("alice", 4, 25.0, 4), ("bob", 2, 200.0, 2), ("carol", 1, 0.0, 0), ("dave", 1, 0.0, 0)],
    ),
    (
        "action",
        "duration_p95",
        [("api.read", 5, 38.5, 4), ("api.write", 2, 290.0, 2), ("cli.run", 1, 0.0, 0)],
    ),
    (
        "action",
        "duration_p99",
        [("api.read", 5, 39.7, 4), ("api.write", 2, 298.0, 2), ("cli.run", 1, 0.0, 0)],
    ),
    (
        "action",
        "duration_avg",
        [("api.read", 5, 25.0, 4), ("api.write", 2, 200.0, 2), ("cli.run", 1, 0.0, 0)],
    ),
    ("day", "duration_max", [(_day(0), 4, 100.0, 3), (_day(1), 4, 300.0, 3)]),
    (
        "hour",
        "duration_avg",
        [(_hour(hours), 1, ms, 1 if ms else 0) for _, _, _, _, hours, ms in EVENTS],
    ),
    (
        "resource",
        "duration_p99",
        [('["document","d1"]', 4, 39.7, 4), ("", 2, 0.0, 0), ('["document","d2"]', 2, 298.0, 2)],
    ),
    ("credential", "duration_p50", [(KEY_A, 4, 25.0, 4), ("", 2, 0.0, 0), (KEY_B, 2, 200.0, 2)]),
    ("actor_type", "duration_max", [("user", 8, 300.0, 6)]),
]


def _measured(groups: tuple[EventCount, ...]) -> list[tuple[str, int, float, int]]:
    return [(group.key, group.count, group.value, group.measured) for group in groups]


@pytest.mark.parametrize(
    ("group_by", "measure", "expected"),
    CASES,
    ids=[f"{group_by}-{measure}" for group_by, measure, _ in CASES],
)
def test_each_grouping_measures_its_groups_durations(
    recorded: AuditClient,
    group_by: GroupBy,
    measure: Measure,
    expected: list[tuple[str, int, float, int]],
) -> None:
    counts = recorded.count_events(RECORDED, group_by=group_by, measure=measure)
    assert _measured(counts.groups) == [
        (key, count, pytest.approx(value, rel=1e-12, abs=0), measured)
        for key, count, value, measured in expected
    ]
    assert counts.total == len(EVENTS) and not counts.truncated
    # The same groups, in the same order, as the count alone gives them, and
    # that count measures nothing.
    alone = recorded.count_events(RECORDED, group_by=group_by)
    assert [(g.key, g.count) for g in alone.groups] == [(k, n) for k, n, _, _ in expected]
    assert {(g.value, g.measured) for g in alone.groups} == {(0.0, 0)}


def test_days_of_a_time_zone_are_measured_as_they_are_counted(recorded: AuditClient) -> None:
    # At -02:00 a day starts at 02:00 UTC: alice's first request (01:00 UTC)
    # is the day before's, and each day's last hour UTC the next local day's.
    counts = recorded.count_events(
        RECORDED, group_by="day", time_zone="Etc/GMT+2", measure="duration_max"
    )
    assert _measured(counts.groups) == [
        (_day(-1, "-02:00"), 1, 10.0, 1),
        (_day(0, "-02:00"), 4, 100.0, 3),
        (_day(1, "-02:00"), 3, 300.0, 2),
    ]


def test_the_limit_still_cuts_the_groups_by_count(recorded: AuditClient) -> None:
    counts = recorded.count_events(RECORDED, group_by="actor", limit=2, measure="duration_p95")
    assert _measured(counts.groups) == [("alice", 4, 38.5, 4), ("bob", 2, 290.0, 2)]
    assert counts.truncated and counts.total_groups == 4 and counts.total == len(EVENTS)


def test_credentials_read_off_records_from_before_their_columns_are_measured(
    recorded: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Rows appended before migration 0056 give their credential by their
    record, in a branch of their own: it reads their durations as well."""
    assert _as_before_0056(sql, tenant) > 0
    counts = recorded.count_events(RECORDED, group_by="credential", measure="duration_p99")
    assert _measured(counts.groups) == [
        (KEY_A, 4, pytest.approx(39.7, rel=1e-12), 4),
        ("", 2, 0.0, 0),
        (KEY_B, 2, 298.0, 2),
    ]


def test_durations_from_before_their_column_are_read_off_the_records(
    recorded: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Rows appended before migration 0064 (their duration_ms NULL, the
    triggers off for the session: the setup's alone) are measured from their
    records until the backfill writes the column: the same answer."""
    sql.execute("SET session_replication_role = replica")
    try:
        sql.execute("UPDATE events SET duration_ms = NULL WHERE tenant_id = %s", [tenant])
    finally:
        sql.execute("SET session_replication_role = DEFAULT")
    for group_by, measure, expected in CASES:
        counts = recorded.count_events(RECORDED, group_by=group_by, measure=measure)
        assert _measured(counts.groups) == [
            (key, count, pytest.approx(value, rel=1e-12, abs=0), measured)
            for key, count, value, measured in expected
        ]


def test_a_filter_narrows_what_is_measured(recorded: AuditClient) -> None:
    slow = build_filter(since=DAY0, until=DAY0 + timedelta(days=2), min_duration_ms=25)
    counts = recorded.count_events(slow, group_by="actor", measure="duration_p50")
    assert _measured(counts.groups) == [("alice", 2, 35.0, 2), ("bob", 2, 200.0, 2)]


def test_a_measure_without_a_grouping_or_unknown_is_refused_naming_it(
    recorded: AuditClient,
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        recorded.count_events(RECORDED, measure="duration_p95")
    assert [field for field, _ in caught.value.field_violations] == ["measure"]
    assert "set group_by" in caught.value.field_violations[0][1]
    with pytest.raises(ValueError, match="measure: unknown value 'p95'"):
        recorded.count_events(group_by="actor", measure="p95")  # type: ignore[arg-type]


def test_the_count_is_recorded_with_its_measure(recorded: AuditClient) -> None:
    recorded.count_events(RECORDED, group_by="action", measure="duration_p95")
    said = [
        dict(access.details)
        for access in recorded.query(build_filter(actions="audit_log.queried"))
        if access.details["rpc"] == "CountEvents"
    ]
    assert [(d["group_by"], d["measure"]) for d in said] == [("action", "duration_p95")]


async def test_the_async_client_measures_too(server: ServerThread, tenant: str) -> None:
    async with AsyncAuditClient(server.target, token=server.token(tenant, "recorder")) as writer:
        await writer.record_batch(_events())
    async with AsyncAuditClient(server.target, token=server.token(tenant, "reader")) as reader:
        counts = await reader.count_events(RECORDED, group_by="actor", measure="duration_max")
    assert _measured(counts.groups)[:2] == [("alice", 4, 40.0, 4), ("bob", 2, 300.0, 2)]


def test_sealtrail_stats_prints_the_measure_in_ms(
    server: ServerThread, recorded: AuditClient, tenant: str
) -> None:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    since = ["--since", _day(0), "--until", _day(2)]
    shown = CliRunner().invoke(
        cli.main, ["stats", "--by", "action", "--measure", "p95", *since], env=env
    )
    assert shown.exit_code == 0, shown.output
    rows = [line.replace("┃", "│").split("│")[1:-1] for line in shown.stdout.splitlines()]
    rows = [[cell.strip() for cell in row] for row in rows]
    assert ["action", "events", "share", "p95 duration", "measured"] in rows
    assert ["api.read", "5", "62.5%", "38.5 ms", "4"] in rows
    assert ["api.write", "2", "25.0%", "290.0 ms", "2"] in rows
    assert ["cli.run", "1", "12.5%", "-", "0"] in rows

    as_json = CliRunner().invoke(
        cli.main,
        ["stats", "--by", "actor", "--measure", "duration_max", "--json", *since],
        env=env,
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["groups"][:2] == [
        {"key": "alice", "count": 4, "value": 40.0, "measured": 4, "name": ""},
        {"key": "bob", "count": 2, "value": 300.0, "measured": 2, "name": ""},
    ]

    alone = CliRunner().invoke(cli.main, ["stats", "--measure", "p95"], env=env)
    assert alone.exit_code == 2 and "--measure measures groups" in alone.output
    unknown = CliRunner().invoke(cli.main, ["stats", "--by", "actor", "--measure", "p90"], env=env)
    assert unknown.exit_code == 2 and "'p90' is not one of" in unknown.output


def test_sealtrail_stats_rounds_a_tie_half_away_from_zero_as_the_console_does(
    server: ServerThread, client_for: Callable[..., AuditClient], tenant: str
) -> None:
    """A figure halfway between two tenths as it reads (7.25 ms, a share of
    6.25%, 0.15 ms, whose float is a hair under) is rounded up, as the
    console's Breakdown panel rounds it (Intl's halfExpand of the number's
    shortest text), not to the even tenth of the float's exact value
    (Python's format): the two said 7.3 and 7.2 of one count."""
    writer = client_for(tenant, "recorder")
    rare = [build_event(action="x.rare", actor_id="a", duration_ms=ms) for ms in (7.25, 0.15)]
    rare[1].action = "x.tiny"
    common = [build_event(action="x.common", actor_id="a", duration_ms=1.0) for _ in range(14)]
    assert all(result.error is None for result in writer.record_batch([*rare, *common]))
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    shown = CliRunner().invoke(cli.main, ["stats", "--by", "action", "--measure", "avg"], env=env)
    assert shown.exit_code == 0, shown.output
    rows = [line.replace("┃", "│").split("│")[1:-1] for line in shown.stdout.splitlines()]
    rows = [[cell.strip() for cell in row] for row in rows]
    assert ["x.rare", "1", "6.3%", "7.3 ms", "1"] in rows
    assert ["x.tiny", "1", "6.3%", "0.2 ms", "1"] in rows
