"""CountEvents by the days and hours of a time zone (`time_zone`, ADR 0103):
checked against a model written with zoneinfo, over events around the changes
to and from summer time in Europe/Berlin and America/New_York, and in zones
whose offset is not whole hours (Asia/Kolkata, +05:30; Asia/Kathmandu,
+05:45) or whose clocks change at midnight (America/Havana goes back from
01:00 to midnight, so midnight comes twice; America/Santiago skips it);
through the clients and `sealtrail stats`, against a real server and
PostgreSQL."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import grpc
import psycopg
import pytest
from click.testing import CliRunner

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    EventCount,
    InvalidArgumentError,
    build_event,
    build_filter,
)
from sealtrail import _cli as cli
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc
from tests.conftest import ServerThread

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/Havana",
    "America/Santiago",
]
# The changes of 2026 (all in the past of the tests' clock, or of any later one).
CHANGES = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),  # New York: 02:00 EST -> 03:00 EDT
    datetime(2026, 3, 29, 1, tzinfo=UTC),  # Berlin: 02:00 CET -> 03:00 CEST
    datetime(2026, 9, 6, 4, tzinfo=UTC),  # Santiago: 00:00 -04 -> 01:00 -03
    datetime(2026, 10, 25, 1, tzinfo=UTC),  # Berlin: 03:00 CEST -> 02:00 CET
    datetime(2026, 11, 1, 5, tzinfo=UTC),  # Havana: 01:00 CDT -> 00:00 CST
    datetime(2026, 11, 1, 6, tzinfo=UTC),  # New York: 02:00 EDT -> 01:00 EST
]
SINCE = datetime(2026, 3, 1, tzinfo=UTC)
UNTIL = datetime(2026, 11, 10, tzinfo=UTC)
RANGE = build_filter(since=SINCE, until=UNTIL)


def _moments() -> list[datetime]:
    """Every 37 minutes for a day and a half either side of each change, and
    a second either side of each change and of each local midnight and local
    hour of every zone near it."""
    moments: set[datetime] = set()
    for change in CHANGES:
        start = change - timedelta(hours=36)
        moments.update(start + timedelta(minutes=37 * n) for n in range(117))
        moments.update((change - timedelta(seconds=1), change))
        for name in ZONES:
            zone = ZoneInfo(name)
            for day in range(-2, 3):
                local = (change + timedelta(days=day)).astimezone(zone).date()
                midnight = datetime.combine(local, time(), tzinfo=zone).astimezone(UTC)
                moments.update((midnight - timedelta(seconds=1), midnight))
            for hour in range(-3, 4):
                local_hour = (change + timedelta(hours=hour)).astimezone(zone)
                first = local_hour.replace(minute=0, second=0).astimezone(UTC)
                moments.update((first - timedelta(seconds=1), first))
    return sorted(moment for moment in moments if SINCE <= moment < UNTIL)


MOMENTS = _moments()


def _day(moment: datetime, zone: ZoneInfo) -> datetime:
    """The first instant of `moment`'s local day: its midnight, or the end of
    the gap that skipped it (fold 0 reads a missing time as before the change)."""
    local = datetime.combine(moment.astimezone(zone).date(), time(), tzinfo=zone)
    return local.astimezone(UTC)


def _hour(moment: datetime, zone: ZoneInfo) -> datetime:
    """The start of `moment`'s local hour (of the repeated hour, the one it is in)."""
    return moment.astimezone(zone).replace(minute=0, second=0, microsecond=0).astimezone(UTC)


def _model(name: str, group_by: str) -> list[EventCount]:
    zone = ZoneInfo(name)
    bucket = _day if group_by == "day" else _hour
    counted = Counter(bucket(moment, zone) for moment in MOMENTS)
    return [
        EventCount(start.astimezone(zone).isoformat(), counted[start]) for start in sorted(counted)
    ]


@pytest.fixture
def recorded(client_for: Callable[..., AuditClient], tenant: str) -> AuditClient:
    """A reader of this test's tenant, once an event at each of MOMENTS is recorded."""
    writer = client_for(tenant, "recorder")
    for first in range(0, len(MOMENTS), 200):
        results = writer.record_batch(
            [
                build_event(action="user.login", actor_id="u1", occurred_at=moment)
                for moment in MOMENTS[first : first + 200]
            ]
        )
        assert all(result.error is None for result in results)
    return client_for(tenant, "reader")


def test_the_model_meets_what_the_zones_are_known_for() -> None:
    """The model's own check: 23- and 25-hour days, and hours at :30 and :45."""
    berlin, kolkata = _model("Europe/Berlin", "day"), _model("Asia/Kolkata", "hour")
    starts = [datetime.fromisoformat(group.key) for group in berlin]
    lengths = {a.isoformat(): b - a for a, b in itertools.pairwise(starts)}
    assert lengths["2026-03-29T00:00:00+01:00"] == timedelta(hours=23)
    assert lengths["2026-10-25T00:00:00+02:00"] == timedelta(hours=25)
    assert all(group.key[13:] == ":00:00+05:30" for group in kolkata)
    assert all(group.key[13:] == ":00:00+05:45" for group in _model("Asia/Kathmandu", "hour"))
    new_york = [group.key for group in _model("America/New_York", "hour")]
    assert "2026-11-01T01:00:00-04:00" in new_york and "2026-11-01T01:00:00-05:00" in new_york
    assert "2026-03-08T02:00:00-05:00" not in new_york  # the hour the clocks skip
    havana = [group.key for group in _model("America/Havana", "day")]
    assert "2026-11-01T00:00:00-04:00" in havana  # the first of its two midnights
    santiago = [group.key for group in _model("America/Santiago", "day")]
    assert "2026-09-06T01:00:00-03:00" in santiago  # no midnight that day


@pytest.mark.parametrize("group_by", ["day", "hour"])
@pytest.mark.parametrize("zone", ZONES)
def test_days_and_hours_of_a_zone_are_those_of_the_model(
    recorded: AuditClient, zone: str, group_by: Any
) -> None:
    counts = recorded.count_events(RANGE, group_by=group_by, limit=1000, time_zone=zone)
    assert list(counts.groups) == _model(zone, group_by)
    assert counts.total == len(MOMENTS) and not counts.truncated


def test_without_a_time_zone_buckets_are_utc_as_before(recorded: AuditClient) -> None:
    counts = recorded.count_events(RANGE, group_by="day", limit=1000)
    assert counts.groups[0].key == f"{MOMENTS[0]:%Y-%m-%d}T00:00:00Z"
    utc = recorded.count_events(RANGE, group_by="day", limit=1000, time_zone="UTC")
    assert [group.key for group in utc.groups] == [
        group.key.replace("Z", "+00:00") for group in counts.groups
    ]
    assert [group.count for group in utc.groups] == [group.count for group in counts.groups]
    actors = recorded.count_events(RANGE, group_by="actor", time_zone="Asia/Kathmandu")
    assert list(actors.groups) == [EventCount("u1", len(MOMENTS))]  # no time to zone


@pytest.fixture
def stub(server: ServerThread) -> Iterator[audit_service_pb2_grpc.AuditLogServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield audit_service_pb2_grpc.AuditLogServiceStub(channel)


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "europe/berlin", "UTC+5", "+05:30", "localtime", "Factory"]
)
def test_a_name_that_is_no_time_zone_is_refused_naming_the_field(
    server: ServerThread,
    tenant: str,
    stub: audit_service_pb2_grpc.AuditLogServiceStub,
    zone: str,
) -> None:
    metadata = (("authorization", f"Bearer {server.token(tenant, 'reader')}"),)
    request = audit_service_pb2.CountEventsRequest(
        group_by=audit_service_pb2.COUNT_GROUP_BY_DAY, time_zone=zone
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.CountEvents(request, metadata=metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "time_zone:" in str(refused.value.details())
    assert zone in str(refused.value.details())


def test_a_zoned_count_is_recorded_naming_its_zone(
    recorded: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    recorded.count_events(RANGE, group_by="hour", time_zone="Asia/Kolkata")
    [(details,)] = sql.execute(
        "SELECT record::jsonb -> 'details' FROM events"
        " WHERE tenant_id = %s AND action = 'audit_log.queried'",
        [tenant],
    ).fetchall()
    assert details["group_by"] == "hour" and details["time_zone"] == "Asia/Kolkata"


async def test_the_async_client_counts_in_a_zone_too(server: ServerThread, tenant: str) -> None:
    moment = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, before the change
    async with AsyncAuditClient(server.target, token=server.token(tenant, "recorder")) as writer:
        await writer.record_batch(
            [
                build_event(action="user.login", actor_id="u1", occurred_at=moment + hours)
                for hours in (timedelta(0), timedelta(hours=1))  # 02:30 CET, after
            ]
        )
    async with AsyncAuditClient(server.target, token=server.token(tenant, "reader")) as reader:
        counts = await reader.count_events(
            build_filter(since=SINCE), group_by="hour", time_zone="Europe/Berlin"
        )
    assert list(counts.groups) == [
        EventCount("2026-10-25T02:00:00+02:00", 1),
        EventCount("2026-10-25T02:00:00+01:00", 1),
    ]


def test_sealtrail_stats_counts_in_a_time_zone(
    server: ServerThread, recorded: AuditClient, tenant: str
) -> None:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    since = ["--since", "2026-10-24T12:00:00Z", "--until", "2026-10-25T12:00:00Z"]
    hours = CliRunner().invoke(
        cli.main,
        ["stats", "--by", "hour", "--time-zone", "Europe/Berlin", "--limit", "1000", *since],
        env=env,
    )
    assert hours.exit_code == 0, hours.output
    assert "hour (Europe/Berlin)" in hours.stdout
    # The hour the clocks go back is two rows, told apart by their offsets.
    assert "2026-10-25 02:00 +02:00" in hours.stdout
    assert "2026-10-25 02:00 +01:00" in hours.stdout
    days = CliRunner().invoke(
        cli.main,
        ["stats", "--by", "day", "--time-zone", "Asia/Kathmandu", "--json", *since],
        env=env,
    )
    assert days.exit_code == 0, days.output
    keys = [group["key"] for group in json.loads(days.stdout)["groups"]]
    assert keys == ["2026-10-24T00:00:00+05:45", "2026-10-25T00:00:00+05:45"]
    refused = CliRunner().invoke(
        cli.main, ["stats", "--by", "day", "--time-zone", "Mars/Olympus_Mons"], env=env
    )
    # Named by the option given, not by the API's field (helper-320).
    assert refused.exit_code != 0 and "--time-zone: " in refused.output, refused.output


def _zone_the_database_lacks(sql: psycopg.Connection[Any]) -> str:
    """A zone of the server's zone database that the database's own copy
    does not have (it is older: America/Coyhaique came in 2025b)."""
    known = {name for (name,) in sql.execute("SELECT name FROM pg_timezone_names").fetchall()}
    lacking = sorted(name for name in available_timezones() if name not in known)
    lacking = [name for name in lacking if name not in ("localtime", "Factory", "posixrules")]
    if not lacking:
        pytest.skip("the database knows every zone the server does")
    return lacking[0]


@pytest.mark.parametrize("with_events", [False, True])
def test_a_zone_the_database_does_not_know_is_refused_whatever_there_is_to_count(
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
    with_events: bool,
) -> None:
    zone = _zone_the_database_lacks(sql)
    if with_events:
        client_for(tenant, "recorder").record(build_event(action="user.login", actor_id="u1"))
    reader = client_for(tenant, "reader")
    with pytest.raises(InvalidArgumentError) as refused:
        reader.count_events(group_by="day", time_zone=zone)
    assert [field for field, _ in refused.value.field_violations] == ["time_zone"]


def _zone_the_database_tells_otherwise(sql: psycopg.Connection[Any], moment: datetime) -> str:
    """A zone whose offset at `moment` the database's copy of the zone data
    gives otherwise than the server's (an older release: Paraguay kept -03 all
    year from October 2024, 2024b)."""
    names = sorted(name for name in available_timezones() if "/" in name)
    rows = sql.execute(
        "SELECT z, %s::timestamptz AT TIME ZONE z FROM unnest(%s::text[]) AS z"
        " WHERE z IN (SELECT name FROM pg_timezone_names)",
        [moment, names],
    ).fetchall()
    for name, local in rows:
        if local != moment.astimezone(ZoneInfo(name)).replace(tzinfo=None):
            return str(name)
    pytest.skip("the database's zone data and the server's agree")


def test_each_day_holds_the_events_between_its_key_and_the_next_whatever_zone_data(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    first = datetime(2026, 6, 9, tzinfo=UTC)
    zone = _zone_the_database_tells_otherwise(sql, first + timedelta(days=1))
    # Every 20 minutes, and each day more of them between 03:00 and 04:00 UTC
    # than the day before (Paraguay's midnight at -03 and at -04, where zone
    # data tell it otherwise).
    moments = [first + timedelta(minutes=20 * n) for n in range(3 * 72)]
    moments += [
        first + timedelta(days=day, hours=3, minutes=minute)
        for day in range(4)
        for minute in range(1, 60, 20 - 6 * day)
    ]
    client_for(tenant, "recorder").record_batch(
        [build_event(action="user.login", actor_id="u1", occurred_at=m) for m in moments]
    )
    days = client_for(tenant, "reader").count_events(
        build_filter(since=first - timedelta(days=1), until=first + timedelta(days=4)),
        group_by="day",
        time_zone=zone,
    )
    starts = [datetime.fromisoformat(group.key) for group in days.groups]
    # The days between the first and the last are whole: each holds the events
    # from its key to the next one's, as the keys say.
    for start, end, group in zip(starts[1:-1], starts[2:], days.groups[1:-1], strict=False):
        assert group.count == sum(start <= m < end for m in moments), (zone, group.key)
