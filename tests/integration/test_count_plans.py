"""What a count reads: the months its time range names and no others (ADR
0015's partitions, pruned by the bound on received_at that a filter's
occurred_after implies), grouped in the database, as the service's role
plans it under row-level security."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from sealtrail_server.domain.counts import GroupBy
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.store.counts import actor_labels_statement, count_statement
from tests.conftest import database_of_its_own

EVENTS = 3000
# An event every 1.5 hours back from now: about six months of them.
SPACING = timedelta(hours=1.5)
_INSERT = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, resource_type, resource_id, leaf_hash, record)"
    " SELECT t, g, gen_random_uuid(), now() - g * %s, now() - g * %s,"
    " 'user.' || (ARRAY['login', 'logout', 'invite'])[1 + g %% 3], 1 + g %% 4, 'success',"
    " 'u' || g %% 20, 'repo' || g %% 30, 'r' || g %% 7, '\\x00', '{}'"
    " FROM unnest(ARRAY['t1', 't2']) AS t, generate_series(1::bigint, %s::bigint) AS g"
)


@pytest.fixture(scope="module")
def as_service(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A database of its own with months of partitions holding two tenants'
    events, analyzed; a connection working as the service does for tenant t1."""
    with (
        database_of_its_own(migrated_database_url, "counts") as url,
        psycopg.connect(url, autocommit=True) as owner,
        psycopg.connect(url, autocommit=True) as service,
    ):
        owner.execute(
            "SELECT sealtrail_create_event_partitions(now() - %s, now())", [SPACING * EVENTS]
        )
        owner.execute(_INSERT, [SPACING, SPACING, EVENTS])
        owner.execute("ANALYZE events")
        service.execute("SET ROLE sealtrail_service")
        service.execute("SELECT set_config('sealtrail.tenant', 't1', false)")
        service.execute("SET enable_seqscan = off")  # as the service's connections
        yield service


def _plan(conn: psycopg.Connection[Any], statement: pgsql.Composable, params: Any) -> Any:
    query = pgsql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(statement)
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0][0]["Plan"]


def _scanned(node: dict[str, Any]) -> set[str]:
    """The partitions of events the plan read (not those pruned at run time)."""
    found = set()
    if node.get("Relation Name", "").startswith("events") and node.get("Actual Loops", 1):
        found.add(node["Relation Name"])
    for child in node.get("Plans", ()):
        found |= _scanned(child)
    return found


def _months_from(start: datetime) -> set[str]:
    """The names of the monthly partitions from `start`'s month to now's."""
    names, month = set(), start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while month <= datetime.now(UTC):
        names.add(f"events_{month:%Y_%m}")
        month = (month + timedelta(days=32)).replace(day=1)
    return names


@pytest.mark.parametrize(
    ("group_by", "time_zone"),
    [
        (None, ""),
        ("action", ""),
        ("actor", ""),
        ("severity", ""),
        ("resource", ""),
        ("day", ""),
        ("hour", ""),
        ("day", "Asia/Kathmandu"),  # the days and hours of a zone (ADR 0103)
        ("hour", "America/New_York"),
    ],
)
def test_a_count_since_a_time_reads_only_the_months_since(
    as_service: psycopg.Connection[Any], group_by: GroupBy | None, time_zone: str
) -> None:
    everything, params = count_statement(
        "t1", EventFilter(), group_by=group_by, limit=1000, time_zone=time_zone
    )
    every_month = _scanned(_plan(as_service, everything, params))
    since = datetime.now(UTC) - timedelta(days=20)
    recent, params = count_statement(
        "t1",
        EventFilter(occurred_after=since),
        group_by=group_by,
        limit=1000,
        before_seq=EVENTS,
        time_zone=time_zone,
    )
    read = _scanned(_plan(as_service, recent, params))
    # Without a time bound a count reads every month of the six (so the test
    # means something); with one, none wholly before the bound (less the
    # five minutes an event may occur after it is received).
    earlier = _months_from(datetime.now(UTC) - SPACING * EVENTS) - _months_from(
        since - timedelta(minutes=5)
    )
    assert len(earlier) >= 4 and earlier <= every_month
    assert read and read.isdisjoint(earlier)


def test_a_count_is_grouped_by_the_database_and_matches_the_rows(
    as_service: psycopg.Connection[Any],
) -> None:
    since = datetime.now(UTC) - timedelta(days=20)
    statement, params = count_statement(
        "t1", EventFilter(occurred_after=since), group_by="actor", limit=5
    )
    rows = as_service.execute(statement, params).fetchall()
    matching = as_service.execute(
        "SELECT actor_id FROM events WHERE occurred_at >= %s", [since]
    ).fetchall()
    assert rows[0][2] == len(matching)  # the total, before the limit: t1's alone
    assert rows[0][3] == 20 and len(rows) == 5  # groups in all, and those returned
    plan = _plan(as_service, statement, params)
    assert plan["Actual Rows"] == 5  # five rows leave the database, not the matches


def test_a_count_by_a_zones_hours_is_grouped_by_the_database_too(
    as_service: psycopg.Connection[Any],
) -> None:
    since = datetime.now(UTC) - timedelta(hours=47)
    statement, params = count_statement(
        "t1", EventFilter(occurred_after=since), group_by="hour", limit=5, time_zone="Asia/Kolkata"
    )
    rows = as_service.execute(statement, params).fetchall()
    # An event every 1.5 hours, each in an hour of its own: 31 in 47 hours.
    assert len(rows) == 5 and rows[0][3] == 31
    # Keyed as the database writes them: local hours, with the zone's offset.
    assert {key[13:] for key, _, _, _ in rows} == {":00:00+05:30"}
    plan = _plan(as_service, statement, params)
    assert plan["Actual Rows"] == 5


def _indexes(node: dict[str, Any]) -> set[str]:
    """The indexes the plan read, each named by its partition's index's suffix."""
    found = set()
    if node.get("Index Name") and node.get("Actual Loops", 1):
        found.add(node["Index Name"].split("_tenant_id_", 1)[-1])
    for child in node.get("Plans", ()):
        found |= _indexes(child)
    return found


def test_a_count_per_resource_of_one_type_reads_the_resource_index(
    as_service: psycopg.Connection[Any],
) -> None:
    """Counted per resource, a type's events come off events_resource (tenant,
    type, id, seq), a time range's off events_occurred_at: the grouping
    changes what is counted per row, not which rows are read."""
    since = datetime.now(UTC) - timedelta(days=20)
    of_type, params = count_statement(
        "t1", EventFilter(resource_type="repo3"), group_by="resource", limit=5
    )
    rows = as_service.execute(of_type, params).fetchall()
    assert rows[0][2] == EVENTS // 30 and rows[0][3] == 7  # 30 types, 7 ids
    assert {key for key, *_ in rows} <= {f'["repo3","r{n}"]' for n in range(7)}
    plan = _plan(as_service, of_type, params)
    assert "resource_type_resource_id_seq_idx" in _indexes(plan)
    assert plan["Actual Rows"] == 5
    recent, params = count_statement(
        "t1", EventFilter(occurred_after=since), group_by="resource", limit=5
    )
    assert "occurred_at_idx" in _indexes(_plan(as_service, recent, params))


def test_a_count_by_a_detail_reads_only_the_months_its_time_range_names(
    as_service: psycopg.Connection[Any],
) -> None:
    """No index holds details (ADR 0161): a count by one, measuring
    another, reads the record of each matching row, so a time range must
    bound what it reads as it bounds any count, the months before pruned,
    the rows grouped in the database, the records ('{}' here: no detail)
    read without failing."""
    since = datetime.now(UTC) - timedelta(days=20)
    everything, params = count_statement(
        "t1",
        EventFilter(),
        group_by="detail",
        limit=1000,
        measure="detail_sum",
        group_by_detail="model",
        measure_detail="tokens",
    )
    every_month = _scanned(_plan(as_service, everything, params))
    recent, params = count_statement(
        "t1",
        EventFilter(occurred_after=since),
        group_by="detail",
        limit=1000,
        before_seq=EVENTS,
        measure="detail_sum",
        group_by_detail="model",
        measure_detail="tokens",
    )
    plan = _plan(as_service, recent, params)
    earlier = _months_from(datetime.now(UTC) - SPACING * EVENTS) - _months_from(
        since - timedelta(minutes=5)
    )
    assert len(earlier) >= 4 and earlier <= every_month
    assert _scanned(plan) and _scanned(plan).isdisjoint(earlier)
    # One group, "" (no record holds the key), measuring nothing: one row
    # leaves the database, whatever the rows read.
    [(key, n, total, groups, value, measured)] = as_service.execute(recent, params).fetchall()
    assert (key, groups, value, measured) == ("", 1, 0.0, 0) and n == total > 0
    assert plan["Actual Rows"] == 1


def _rows_read(node: dict[str, Any]) -> int:
    """The rows the plan's scans of events read, over all their loops: those
    they gave and those their filters dropped (a scan of one index that
    drops every row another index would not have read costs as much)."""
    read = 0
    if node.get("Relation Name", "").startswith("events"):
        given = int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))
        read += given * int(node.get("Actual Loops", 1))
    for child in node.get("Plans", ()):
        read += _rows_read(child)
    return read


def test_a_count_by_actor_labels_its_groups_off_the_actor_index_one_record_each(
    as_service: psycopg.Connection[Any],
) -> None:
    """The groups a count by actor answers are labelled by one statement that
    reads, per group, its latest match off the index on the actor's id: as
    many records as groups, not every match's (helper-567)."""
    statement, params = count_statement("t1", EventFilter(), group_by="actor", limit=5)
    keys = [key for key, *_ in as_service.execute(statement, params).fetchall()]
    labelled, params = actor_labels_statement("t1", EventFilter(), keys, before_seq=EVENTS)
    assert [key for key, *_ in as_service.execute(labelled, params).fetchall()] == keys
    plan = _plan(as_service, labelled, params)
    assert "actor_id_seq_idx" in _indexes(plan)
    # One record a group, and no more than a partition's first entry of each.
    assert _rows_read(plan) <= len(keys) * len(_months_from(datetime.now(UTC) - SPACING * EVENTS))


SKEWED = 30_000
# A minute apart, the latest now: a busy recent actor, `bot`, every tenth of
# whose events is `user.rare`, the others `user.login`; and five actors of
# one old `user.rare` each (`old1` to `old5`), the log's first events.
_SKEWED_INSERT = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, resource_type, resource_id, leaf_hash, record)"
    " SELECT 't1', g, gen_random_uuid(), now() - (%s - g) * interval '1 minute',"
    " now() - (%s - g) * interval '1 minute',"
    " CASE WHEN g < 6 OR g %% 10 = 0 THEN 'user.rare' ELSE 'user.login' END, 1, 'success',"
    " CASE WHEN g < 6 THEN 'old' || g ELSE 'bot' END, 'repo', 'r', '\\x00',"
    ' \'{"actor": {"id": "a", "email": "a@example.com"}}\''
    " FROM generate_series(1::bigint, %s::bigint) AS g"
)


@pytest.fixture(scope="module")
def skewed_as_service(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A database of its own holding `_SKEWED_INSERT`'s events, analyzed; a
    connection working as the service does for tenant t1."""
    with (
        database_of_its_own(migrated_database_url, "skewed") as url,
        psycopg.connect(url, autocommit=True) as owner,
        psycopg.connect(url, autocommit=True) as service,
    ):
        owner.execute(
            "SELECT sealtrail_create_event_partitions(now() - %s, now())",
            [timedelta(minutes=SKEWED + 5)],
        )
        owner.execute(_SKEWED_INSERT, [SKEWED, SKEWED, SKEWED])
        owner.execute("ANALYZE events")
        service.execute("SET ROLE sealtrail_service")
        service.execute("SELECT set_config('sealtrail.tenant', 't1', false)")
        service.execute("SET enable_seqscan = off")
        yield service


@pytest.mark.parametrize(
    "event_filter",
    [
        EventFilter(actions=("user.rare",)),
        EventFilter(actions=("user.rare",), has_http_route=False),  # and one off the record
        # A time range: its months' primary keys are no way to an actor's events either.
        EventFilter(actions=("user.rare",), occurred_after=datetime.now(UTC) - timedelta(days=3)),
    ],
)
def test_labels_of_skewed_actors_read_each_actors_own_events(
    skewed_as_service: psycopg.Connection[Any], event_filter: EventFilter
) -> None:
    """With a filter of an index of its own, each group's label is still read
    off the actor's index: not off the filter's, backward past every other
    actor's match newer than the group's latest (the old actors' labels read
    `bot`'s 3,000 matches each, 15,000 rows to label six groups)."""
    statement, params = count_statement("t1", event_filter, group_by="actor", limit=1000)
    rows = skewed_as_service.execute(statement, params).fetchall()
    keys = [key for key, *_ in rows]
    old = [] if event_filter.occurred_after else ["old1", "old2", "old3", "old4", "old5"]
    assert sorted(keys) == ["bot", *old]
    labelled, params = actor_labels_statement("t1", event_filter, keys, before_seq=SKEWED + 1)
    labels = skewed_as_service.execute(labelled, params).fetchall()
    assert sorted(labels) == sorted((key, "a@example.com", None) for key in keys)
    plan = _plan(skewed_as_service, labelled, params)
    assert "actor_id_seq_idx" in _indexes(plan)
    # One record a group, and no more than a partition's first entry of each.
    months = _months_from(datetime.now(UTC) - timedelta(minutes=SKEWED + 5))
    assert _rows_read(plan) <= len(keys) * len(months)
