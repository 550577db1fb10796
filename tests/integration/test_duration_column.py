"""The `duration_ms` column (migration 0064, ADR 0149): written at append from
the value the record holds; for rows appended before it, read off their
records by a measured count until the backfill writes them, batch by batch
across the months' partitions, resumable, a second run writing nothing; the
events trigger admitting that one UPDATE of it and no other."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from psycopg import sql

from sealtrail import AuditClient, build_event
from sealtrail_server.backfill.credentials import CredentialBackfill
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.store.counts import count_statement, duration_unread_statement
from sealtrail_server.store.credential_backfill import DURATIONS, backfill_batch
from sealtrail_server.store.events import DURATION_READ, DURATION_UNREAD, filter_conditions
from tests.conftest import database_of_its_own, migrate_database
from tests.integration.test_actor_prefix_filter import documented_recipe, run_documented_recipe
from tests.integration.test_index_swaps import refused_as_invalid

# What a row's column holds beside what its record says.
_BOTH = (
    "SELECT seq, duration_ms, ((record::json -> 'context') ->> 'duration_ms')::float8"
    " FROM events WHERE tenant_id = %s ORDER BY seq"
)
_INSERT = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, leaf_hash, record, credential_kind)"
    " VALUES (%s, %s, gen_random_uuid(), %s, %s, %s, 1, 'success', 'u', '\\x00', %s, '')"
)
# (action, months ago received, duration in ms; None: none), of tenant t1.
ROWS: list[tuple[str, int, float | None]] = [
    ("api.read", 2, 10),
    ("api.read", 2, 12.5),
    ("api.write", 2, None),
    ("api.read", 1, 30),
    ("api.write", 1, 300.25),
    ("api.read", 0, 40),
    ("cli.run", 0, None),
    ("api.write", 0, 100),
]


def test_the_appender_writes_the_records_duration(
    client_for: Callable[..., AuditClient], tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A whole number, a fraction and none: each row's column is the value
    its record holds (NULL for none), so no row is left for the backfill."""
    events = [
        build_event(action="a.b", actor_id="u", duration_ms=12),
        build_event(action="a.b", actor_id="u", duration_ms=0.125),
        build_event(action="a.b", actor_id="u"),
    ]
    client = client_for(tenant, "recorder")
    assert all(r.error is None for r in client.record_batch(events))
    client.record(build_event(action="a.b", actor_id="u", duration_ms=86_399_999.5))
    rows = sql.execute(_BOTH, [tenant]).fetchall()
    assert [(column, read) for _, column, read in rows] == [
        (12.0, 12.0),
        (0.125, 0.125),
        (None, None),
        (86_399_999.5, 86_399_999.5),
    ]
    unread, params = duration_unread_statement(tenant, EventFilter())
    assert sql.execute(unread, params).fetchone() == (False,)


@pytest.fixture
def before_0064(migrated_database_url: str) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """A database of its own holding ROWS as a release between migrations
    0056 and 0064 appended them (their duration NULL, no credential) in three
    months' partitions, and the owner's connection to it."""
    with (
        database_of_its_own(migrated_database_url, "durations") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute("SELECT sealtrail_create_event_partitions(now() - interval '2 months', now())")
        for seq, (action, months, ms) in enumerate(ROWS, start=1):
            context = {} if ms is None else {"context": {"duration_ms": ms}}
            record = json.dumps({"action": action, **context})
            at = conn.execute("SELECT now() - make_interval(months => %s)", [months]).fetchone()
            assert at is not None
            conn.execute(_INSERT, ["t1", seq, at[0], at[0], action, record])
        yield url, conn


def _measured(conn: psycopg.Connection[Any], *, records: bool) -> list[tuple[Any, ...]]:
    statement, params = count_statement(
        "t1",
        EventFilter(),
        group_by="action",
        limit=10,
        measure="duration_max",
        duration_records=records,
    )
    return [tuple(row[:2]) + tuple(row[4:]) for row in conn.execute(statement, params).fetchall()]


def _unread(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM events WHERE " + DURATION_UNREAD).fetchone()
    assert row is not None
    return int(row[0])


# Each action's count, longest duration and how many rows had one.
MEASURED = [("api.read", 4, 40.0, 4), ("api.write", 3, 300.25, 2), ("cli.run", 1, 0.0, 0)]


def test_the_backfill_writes_the_rows_from_before_across_partitions_and_resumes(
    before_0064: tuple[str, psycopg.Connection[Any]],
) -> None:
    url, conn = before_0064
    months = conn.execute(
        "SELECT count(DISTINCT tableoid) FROM events WHERE " + DURATION_UNREAD
    ).fetchone()
    assert months == (3,) and _unread(conn) == 6
    # Before the backfill, the count reads those rows' records: the same answer.
    unread, params = duration_unread_statement("t1", EventFilter())
    assert conn.execute(unread, params).fetchone() == (True,)
    assert _measured(conn, records=True) == MEASURED

    # A batch of two, as a run stopped after it: written for good.
    async def one_batch() -> Any:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as owner:
            return await backfill_batch(
                owner, "t1", after=-1, rows=2, lock_timeout="200ms", columns=DURATIONS
            )

    batch = asyncio.run(one_batch())
    assert batch is not None and (batch.written, batch.last_seq) == (2, 2)
    assert _unread(conn) == 4

    # The next run starts from what is still unread, in batches of three.
    run = asyncio.run(CredentialBackfill(url, pause=0, batch_rows=3).run_once())
    assert run is not None and (run.written, run.left) == (4, False)
    rows = conn.execute(_BOTH, ["t1"]).fetchall()
    assert [column for _, column, _ in rows] == [ms for _, _, ms in ROWS]
    assert all(column == read for _, column, read in rows)
    assert _unread(conn) == 0
    assert conn.execute(unread, params).fetchone() == (False,)
    assert _measured(conn, records=False) == MEASURED == _measured(conn, records=True)

    # Idempotent: a second run finds nothing to write.
    again = asyncio.run(CredentialBackfill(url, pause=0).run_once())
    assert again is not None and (again.written, again.left) == (0, False)


def test_the_trigger_admits_the_records_duration_once_and_nothing_else(
    before_0064: tuple[str, psycopg.Connection[Any]],
) -> None:
    _, conn = before_0064

    def refused(statement: str) -> None:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only UPDATE allowed"):
            conn.execute(statement)

    refused("UPDATE events SET duration_ms = 11 WHERE seq = 1")  # not the record's 10
    refused("UPDATE events SET duration_ms = 1 WHERE seq = 3")  # its record has none
    refused("UPDATE events SET duration_ms = 10, actor_id = 'x' WHERE seq = 1")
    conn.execute("UPDATE events SET duration_ms = 10 WHERE seq = 1")
    refused("UPDATE events SET duration_ms = 10 WHERE seq = 1")  # written already
    refused("UPDATE events SET duration_ms = NULL WHERE seq = 1")
    assert conn.execute(_BOTH.replace("ORDER BY", "AND seq = 1 ORDER BY"), ["t1"]).fetchone() == (
        1,
        10.0,
        10.0,
    )


def _duration_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, int, str]]:
    """The unread duration indexes of events and its partitions: name, oid,
    and the index each is attached to (the parent's own: '')."""
    return conn.execute(
        "SELECT c.relname, c.oid::bigint, coalesce(p.inhparent::regclass::text, '')"
        " FROM pg_class AS c LEFT JOIN pg_inherits AS p ON p.inhrelid = c.oid"
        " WHERE c.relkind IN ('i', 'I') AND c.relname LIKE '%%duration_unread%%' ORDER BY 1"
    ).fetchall()


def test_the_index_built_beforehand_as_documented_is_taken_by_migration_0064(
    before_0064: tuple[str, psycopg.Connection[Any]],
) -> None:
    """docs/database.md's statements, run as printed over a log of rows from
    before 0064 in several months (its column and index not there yet): the
    column added, each partition's index built concurrently and attached, the
    parent valid, an entry for each row with a duration; the migration then
    builds nothing (the same indexes after it) and leaves those rows to their
    records and the backfill, a month made afterwards getting the index."""
    url, conn = before_0064
    conn.execute("DROP INDEX events_duration_unread")
    conn.execute("ALTER TABLE events DROP COLUMN duration_ms")
    conn.execute("DELETE FROM schema_migrations WHERE version = 64")
    assert _duration_indexes(conn) == []
    verdicts = run_documented_recipe(conn, "### The duration column")
    assert verdicts == [("events_duration_unread", True)]
    built = _duration_indexes(conn)
    partitions = conn.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
    ).fetchone()
    assert partitions is not None and partitions[0] >= 3
    attached = [name for name, _, parent in built if parent == "events_duration_unread"]
    assert len(attached) == partitions[0] == len(built) - 1
    assert _unread(conn) == 6

    migrate_database(url, out_of_order=True)  # 0064 alone missing
    assert _duration_indexes(conn) == built
    assert conn.execute("SELECT 1 FROM schema_migrations WHERE version = 64").fetchone()
    assert _unread(conn) == 6
    assert _measured(conn, records=True) == MEASURED
    conn.execute(
        "SELECT sealtrail_create_event_partitions("
        " now() + interval '1 year', now() + interval '13 months')"
    )
    after = conn.execute(
        "SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass),"
        " (SELECT count(*) FROM pg_inherits"
        " WHERE inhparent = 'events_duration_unread'::regclass)"
    ).fetchone()
    assert after is not None and after[0] > partitions[0] and after[1] == after[0]


def test_an_unfinished_build_beforehand_is_refused_by_migration_0064(
    before_0064: tuple[str, psycopg.Connection[Any]],
) -> None:
    """docs/database.md's column and first index statement alone (`ON ONLY
    events`: the parent's index, invalid until every partition's is
    attached), then the upgrade: taken as made, it served no partition, and
    each measured count's probe and backfill batch read the whole table.
    The start is refused naming it, as 0060 and 0061 refuse theirs, 0064
    unapplied; dropped, the next start builds it."""
    url, conn = before_0064
    conn.execute("DROP INDEX events_duration_unread")
    conn.execute("ALTER TABLE events DROP COLUMN duration_ms")
    conn.execute("DELETE FROM schema_migrations WHERE version = 64")
    for statement in documented_recipe("### The duration column")[:2]:
        conn.execute(statement)
    refused_as_invalid(url, "events_duration_unread")
    assert not conn.execute("SELECT FROM schema_migrations WHERE version = 64").fetchone()
    conn.execute("DROP INDEX events_duration_unread")
    migrate_database(url, out_of_order=True)
    assert conn.execute(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'events_duration_unread'::regclass"
    ).fetchone() == (True,)
    assert _unread(conn) == 6
    assert _measured(conn, records=True) == MEASURED


def _counted(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    """Each of a counter's series (its attributes, sorted) and its value."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        tuple(sorted((point.attributes or {}).items())): point.value  # type: ignore[union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    }


def test_a_record_whose_duration_will_not_convert_does_not_stop_the_backfill(
    before_0064: tuple[str, psycopg.Connection[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """Rows no API call could write (validate_event wants a finite number),
    written straight into the database: a `null` duration, a text one and a
    number past a double's range, among rows with durations. The null and the
    text are no unread duration (the index takes a JSON number alone); the
    number too large is skipped, said once and counted, not failing its
    batch: the rows around it are written, and a run after it writes nothing
    and says nothing of it again."""
    url, conn = before_0064
    bad = {9: "null", 10: '"abc"', 12: "1e400"}
    for seq in range(9, 14):
        duration = bad.get(seq, str(seq))
        record = f'{{"action": "api.read", "context": {{"duration_ms": {duration}}}}}'
        at = conn.execute("SELECT now()").fetchone()
        assert at is not None
        conn.execute(_INSERT, ["t1", seq, at[0], at[0], "api.read", record])
    assert _unread(conn) == 6 + 3  # ROWS' six, 11, 12 and 13
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    backfill = CredentialBackfill(url, pause=0, batch_rows=10, meter=meter)
    with caplog.at_level(logging.INFO, logger="sealtrail_server.backfill.credentials"):
        run = asyncio.run(backfill.run_once())
        assert run is not None and (run.written, run.left) == (6 + 2, False)
        again = asyncio.run(backfill.run_once())
        assert again is not None and (again.written, again.left) == (0, False)
    durations = dict(conn.execute("SELECT seq, duration_ms FROM events WHERE seq > 8").fetchall())
    assert durations == {9: None, 10: None, 11: 11.0, 12: None, 13: 13.0}
    assert _unread(conn) == 1  # 1e400's, left as it is
    said = [r.getMessage() for r in caplog.records if "will not convert" in r.getMessage()]
    assert len(said) == 1 and "t1" in said[0] and "12" in said[0], said
    assert not any("failed" in r.getMessage() for r in caplog.records)
    assert _counted(reader, "sealtrail.backfill.durations.unconvertible") == {(): 1}
    assert _counted(reader, "sealtrail.backfill.durations.rows") == {(): 8}


def test_the_min_duration_filter_reads_the_column_and_the_records_of_rows_unread(
    before_0064: tuple[str, psycopg.Connection[Any]],
) -> None:
    """The `min_duration_ms` filter over rows the backfill wrote and rows it
    has not, mixed: the same rows as the records say. The column is what is
    read of a written row: one inserted with a column saying 50 and a record
    saying 5 (no appender writes such a row: here so that which is read
    shows) is selected by 25."""
    url, conn = before_0064

    async def one_batch() -> Any:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as owner:
            return await backfill_batch(
                owner, "t1", after=-1, rows=4, lock_timeout="200ms", columns=DURATIONS
            )

    asyncio.run(one_batch())  # seqs 1, 2, 4, 5 written; 6 and 8 unread
    assert _unread(conn) == 2
    conn.execute(
        _INSERT.replace("credential_kind)", "credential_kind, duration_ms)").replace(
            "'')", "'', 50)"
        ),
        [
            "t1",
            9,
            datetime.now(UTC),
            datetime.now(UTC),
            "api.read",
            '{"context": {"duration_ms": 5}}',
        ],
    )

    def selected(least: float) -> list[int]:
        conditions, params = filter_conditions("t1", EventFilter(min_duration_ms=least))
        statement = sql.SQL("SELECT seq FROM events WHERE {} ORDER BY seq").format(
            sql.SQL(" AND ").join(conditions)
        )
        return [row[0] for row in conn.execute(statement, params).fetchall()]

    assert selected(12.5) == [2, 4, 5, 6, 8, 9]
    assert selected(40) == [5, 6, 8, 9]
    assert selected(300.25) == [5]
    assert selected(0) == [1, 2, 4, 5, 6, 8, 9]


# Durations no API call writes (validate_event wants a finite number under a
# day), each in a row written straight into the database: a number no double
# holds, above and below its range (the index takes them, a JSON number), and
# a text (which it does not).
_UNREADABLE = {9: "1e400", 10: "-1e400", 11: "1e-400", 12: '"abc"'}


def _insert_unreadable(conn: psycopg.Connection[Any]) -> None:
    for seq, duration in _UNREADABLE.items():
        record = f'{{"action": "api.read", "context": {{"duration_ms": {duration}}}}}'
        at = datetime.now(UTC)
        conn.execute(_INSERT, ["t1", seq, at, at, "api.read", record])


def _selected(conn: psycopg.Connection[Any], least: float) -> list[int]:
    conditions, params = filter_conditions("t1", EventFilter(min_duration_ms=least))
    statement = sql.SQL("SELECT seq FROM events WHERE {} ORDER BY seq").format(
        sql.SQL(" AND ").join(conditions)
    )
    return [row[0] for row in conn.execute(statement, params).fetchall()]


def test_a_duration_no_double_holds_is_read_as_none_by_counts_and_the_filter(
    before_0064: tuple[str, psycopg.Connection[Any]],
) -> None:
    """Such rows are counted, as having no duration, by a measured count
    reading the records and by one reading the column after the backfill
    (which leaves them NULL): the same answer, neither failing on the cast;
    the `min_duration_ms` filter selects none of them, before and after."""
    url, conn = before_0064
    _insert_unreadable(conn)
    measured = [("api.read", 4 + 4, 40.0, 4), *MEASURED[1:]]
    assert _measured(conn, records=True) == measured
    assert _selected(conn, 0) == [1, 2, 4, 5, 6, 8]
    assert _selected(conn, 300) == [5]
    run = asyncio.run(CredentialBackfill(url, pause=0).run_once())
    assert run is not None and (run.written, run.left) == (6, False)
    assert _unread(conn) == 3  # 1e400's, -1e400's and 1e-400's, left as they are
    assert _measured(conn, records=True) == measured == _measured(conn, records=False)
    assert _selected(conn, 0) == [1, 2, 4, 5, 6, 8]


def test_a_batch_finds_a_duration_no_double_holds_before_writing_not_by_failing(
    before_0064: tuple[str, psycopg.Connection[Any]],
) -> None:
    """A batch holding such rows, of a process that knows nothing of them (as
    after a restart), writes the others in its one UPDATE and says those:
    no failed batch, then written a row at a time."""
    url, conn = before_0064
    _insert_unreadable(conn)

    async def one_batch() -> Any:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as owner:
            return await backfill_batch(
                owner, "t1", after=-1, rows=20, lock_timeout="200ms", columns=DURATIONS
            )

    batch = asyncio.run(one_batch())
    assert batch is not None
    assert (batch.written, batch.last_seq, batch.unconvertible) == (6, 11, (9, 10, 11))
    assert _unread(conn) == 3


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("12", 12.0),
        ("-0.125", -0.125),
        ("1e-7", 1e-7),
        ("5e-324", 5e-324),  # a double's least
        ("1.7976931348623157e308", 1.7976931348623157e308),  # its greatest
        ("0e-400", 0.0),
        ("1e400", None),
        ("-1e400", None),
        ("1e-400", None),
        ("1e999", None),
        ("1e-999", None),
        ("1e0001", None),  # a four-digit exponent: read as none, though 10
        ("0e-4000", None),
        ("1" + "0" * 1000, None),
        ('"12"', None),
        ("null", None),
        ("{}", None),
    ],
)
def test_a_records_duration_is_read_as_the_cast_reads_it_or_as_none(
    sql: psycopg.Connection[Any], written: str, read: float | None
) -> None:
    """DURATION_READ of a record: the value the column would hold, or none
    where the cast would fail (or, a few written past what numeric takes
    safely, might not): never a failed statement."""
    record = f'{{"context": {{"duration_ms": {written}}}}}'
    row = sql.execute(
        "SELECT " + DURATION_READ + " FROM (SELECT %s::text AS record) AS e", [record]
    ).fetchone()
    assert row == (read,)
    if read is not None:
        assert sql.execute("SELECT %s::float8", [written]).fetchone() == (read,)
