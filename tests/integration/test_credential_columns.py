"""Migration 0056's credential columns (ADR 0142): the appender writes each
event's `actor.credential` beside its record; a count by credential and the
`credential_id` filter read those columns, and a row appended before the
migration (its columns NULL) off its record, with the same answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from sealtrail import AuditClient, build_event
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.store.counts import count_statement, unread_statement
from sealtrail_server.store.events import Order, query_statement
from tests.conftest import database_of_its_own, migrate_database
from tests.integration.test_actor_prefix_filter import run_documented_recipe
from tests.integration.test_index_swaps import as_before_0062
from tests.integration.test_query_plans import _nodes, _plan


def _served_on_the_credential_index(
    as_service: psycopg.Connection[Any],
    as_owner: psycopg.Connection[Any],
    key: EventFilter,
    *,
    indexed: int,
    served: int,
) -> list[tuple[Any, ...]]:
    """t1's newest page by `key` as the service reads it: `indexed` rows kept
    of those found on events_credential_id (its index condition, never a
    filter), no other row read than key_1's 35 there and t1's 42 from before
    (35 of key_1, 7 without a credential): 77 in all; `served` rows, as the
    owner reads them and as the count says. Returns the page."""
    statement, params = query_statement("t1", key, "newest", None, 1000)
    read = _scans_of_events(as_service, statement, params)
    assert any(
        "credential_id" in node.get("Index Cond", "") and node["Actual Rows"] == indexed
        for node in read
    )
    assert sum(node["Actual Rows"] + node.get("Rows Removed by Filter", 0) for node in read) == 77
    assert not any("credential_id = " in node.get("Filter", "") for node in read)
    page = as_service.execute(statement, params).fetchall()
    assert len(page) == served
    assert page == as_owner.execute(statement, params).fetchall()
    statement, params = count_statement("t1", key, group_by=None, limit=10)
    assert as_service.execute(statement, params).fetchall() == [(served,)]
    return page


def _scans_of_events(
    conn: psycopg.Connection[Any], statement: pgsql.Composable, params: Any
) -> list[dict[str, Any]]:
    """The nodes of `statement`'s plan, run on `conn`, that read events (the
    table or a partition)."""
    nodes = _nodes(_plan(conn, statement, params))
    return [node for node in nodes if node.get("Relation Name", "").startswith("events")]


def test_the_appender_writes_the_records_credential_beside_it(
    client: AuditClient, migrated_database_url: str, tenant: str
) -> None:
    client.record_batch(
        [
            build_event(
                action="a.b",
                actor_id="x",
                credential_kind="api_key",
                credential_id="key_1",
                credential_hint="a1b2",
            ),
            build_event(action="a.b", actor_id="x", credential_kind="session", credential_id="s_1"),
            build_event(action="a.b", actor_id="x"),
        ]
    )
    with psycopg.connect(migrated_database_url) as conn:
        rows = conn.execute(
            "SELECT record, credential_kind, credential_id, credential_hint FROM events"
            " WHERE tenant_id = %s AND action = 'a.b' ORDER BY seq",
            [tenant],
        ).fetchall()
    assert [row[1:] for row in rows] == [
        ("api_key", "key_1", "a1b2"),
        ("session", "s_1", None),
        ("", None, None),  # none: "" kind, never NULL from now on
    ]
    for record, kind, credential_id, hint in rows:
        credential = json.loads(record)["actor"].get("credential", {})
        assert (credential.get("kind", ""), credential.get("id"), credential.get("hint")) == (
            kind,
            credential_id,
            hint,
        )


# Rows of tenant t1: (credential kind, id, hint, how many), "" kind for none;
# each written both ways, as appended before migration 0056 (columns NULL,
# read off the record) and after.
ROWS = [("api_key", "key_1", "a1b2", 30), ("session", "key_1", "", 5), ("", "", "", 7)]
_INSERT = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, leaf_hash, record, credential_kind, credential_id, credential_hint)"
    " SELECT %s, %s + g, gen_random_uuid(), now(), now(), 'a.b', 1, 'success', 'u', '\\x00',"
    " %s, %s, %s, %s FROM generate_series(1, %s) AS g"
)


@pytest.fixture(scope="module")
def as_owner(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A database of its own: t1's rows of ROWS appended before the columns
    (NULL) and after, and 2,000 of other tenants with a credential each."""
    with (
        database_of_its_own(migrated_database_url, "credentials") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        seq = 0
        for before in (True, False):
            for kind, credential_id, hint, n in ROWS:
                credential = {"kind": kind, "id": credential_id} if kind else {}
                if hint:
                    credential["hint"] = hint
                actor: dict[str, Any] = {"id": "u", "type": "user"}
                if credential:
                    actor["credential"] = credential
                columns = (
                    (None, None, None) if before else (kind, credential_id or None, hint or None)
                )
                record = json.dumps({"actor": actor})
                conn.execute(_INSERT, ["t1", seq, record, *columns, n])
                seq += n
        for t in range(2, 22):
            record = json.dumps({"actor": {"id": "u", "credential": {"kind": "k", "id": "o"}}})
            conn.execute(_INSERT, [f"t{t}", 0, record, "k", "o", None, 100])
        conn.execute("ANALYZE events")
        yield conn


def _counted(conn: psycopg.Connection[Any], event_filter: EventFilter) -> list[tuple[Any, ...]]:
    statement, params = count_statement("t1", event_filter, group_by="credential", limit=10)
    return [tuple(row[:2]) for row in conn.execute(statement, params).fetchall()]


def test_rows_from_before_the_columns_count_and_filter_as_the_others(
    as_owner: psycopg.Connection[Any],
) -> None:
    key = json.dumps(["api_key", "key_1", "a1b2"], separators=(",", ":"))
    session = json.dumps(["session", "key_1", ""], separators=(",", ":"))
    assert _counted(as_owner, EventFilter()) == [(key, 60), ("", 14), (session, 10)]
    assert _counted(as_owner, EventFilter(credential_id="key_1")) == [(key, 60), (session, 10)]
    statement, params = query_statement(
        "t1", EventFilter(credential_id="key_1"), "newest", None, 1000
    )
    assert len(as_owner.execute(statement, params).fetchall()) == 70


def test_a_credentials_kind_narrows_rows_from_before_the_columns_and_after_alike(
    as_owner: psycopg.Connection[Any],
) -> None:
    """`key_1` is an API key's id and a session's: with its kind, a count and
    a query find that one credential's rows, appended before migration 0056
    (kind read off the record) and after (the column), never the other's;
    a kind alone finds every credential of it, both ways too."""
    key = json.dumps(["api_key", "key_1", "a1b2"], separators=(",", ":"))
    session = json.dumps(["session", "key_1", ""], separators=(",", ":"))
    for kind, counted in [("api_key", [(key, 60)]), ("session", [(session, 10)]), ("ssh_key", [])]:
        for event_filter in (
            EventFilter(credential_id="key_1", credential_kind=kind),
            EventFilter(credential_kind=kind),
        ):
            assert _counted(as_owner, event_filter) == counted
            statement, params = query_statement("t1", event_filter, "newest", None, 1000)
            found = as_owner.execute(statement, params).fetchall()
            assert len(found) == sum(n for _, n in counted)
            total, params = count_statement("t1", event_filter, group_by=None, limit=10)
            assert as_owner.execute(total, params).fetchall() == [(len(found),)]


@contextmanager
def _as_service(owner: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A connection to `owner`'s database working as the service does for t1."""
    with psycopg.connect(owner.info.dsn, autocommit=True) as conn:
        conn.execute("SET ROLE sealtrail_service")
        conn.execute("SELECT set_config('sealtrail.tenant', 't1', false)")
        conn.execute("SET enable_seqscan = off")  # as the service's connections
        yield conn


@pytest.fixture(scope="module")
def as_service(as_owner: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A connection to `as_owner`'s database working as the service does for t1."""
    with _as_service(as_owner) as conn:
        yield conn


def test_a_credential_id_is_an_index_condition_for_the_service(
    as_owner: psycopg.Connection[Any], as_service: psycopg.Connection[Any]
) -> None:
    """The rows appended since migration 0056 are found on events_credential_id
    (text equality is leakproof: an index condition under row-level security,
    ADR 0013), those from before on events_credential_unread, and only those
    are read off their records: the other tenants' 2,000 rows of a credential
    are never read, nor t1's rows without it (ADR 0142)."""
    key = EventFilter(credential_id="key_1")
    served = _served_on_the_credential_index(as_service, as_owner, key, indexed=35, served=70)
    # Keyset pages select the same rows.
    newest = [row[0] for row in served]
    statement, params = query_statement("t1", key, "oldest", newest[-1], 1000)
    assert [row[0] for row in as_service.execute(statement, params)] == newest[-2::-1]


def test_a_credentials_kind_keeps_its_id_the_index_condition_for_the_service(
    as_owner: psycopg.Connection[Any], as_service: psycopg.Connection[Any]
) -> None:
    """With a kind, the credential's id is still found on events_credential_id
    for the service and the kind is a condition beside it (text equality,
    leakproof), the rows from before read off their records alone: no other
    row is read than with the id alone, and the other kind's are left out."""
    key = EventFilter(credential_id="key_1", credential_kind="session")
    _served_on_the_credential_index(as_service, as_owner, key, indexed=5, served=10)


def _unread(conn: psycopg.Connection[Any], tenant: str, event_filter: EventFilter) -> bool:
    statement, params = unread_statement(tenant, event_filter, before_seq=10**9)
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return bool(row[0])


def test_a_count_reads_records_only_where_a_row_from_before_the_columns_is_counted(
    as_owner: psycopg.Connection[Any],
) -> None:
    """t1 has rows from before migration 0056 (of key_1 and without a
    credential), t2 none (as every tenant once the backfill has written its
    rows): t2's count by credential reads the columns alone and counts what
    the count with the records' branch counts; t1's needs that branch, whose
    rows the columns alone leave out."""
    assert _unread(as_owner, "t1", EventFilter())
    assert _unread(as_owner, "t1", EventFilter(credential_id="key_1", credential_kind="session"))
    assert not _unread(as_owner, "t2", EventFilter())
    assert not _unread(as_owner, "t2", EventFilter(credential_id="o"))
    for tenant, event_filter in [
        ("t2", EventFilter()),
        ("t2", EventFilter(credential_id="o")),
        ("t2", EventFilter(credential_id="o", credential_kind="k")),
        ("t2", EventFilter(credential_kind="other")),
    ]:
        both, params = count_statement(tenant, event_filter, group_by="credential", limit=10)
        columns, columns_params = count_statement(
            tenant, event_filter, group_by="credential", limit=10, records=False
        )
        counted = as_owner.execute(both, params).fetchall()
        assert as_owner.execute(columns, columns_params).fetchall() == counted
    key = json.dumps(["k", "o", ""], separators=(",", ":"))
    assert _counted_in(as_owner, "t2", records=False) == [(key, 100, 100, 1)]
    # t1's rows appended since the columns, alone: half of what it has.
    key = json.dumps(["api_key", "key_1", "a1b2"], separators=(",", ":"))
    session = json.dumps(["session", "key_1", ""], separators=(",", ":"))
    assert _counted_in(as_owner, "t1", records=False) == [
        (key, 30, 42, 3),
        ("", 7, 42, 3),
        (session, 5, 42, 3),
    ]


def _counted_in(
    conn: psycopg.Connection[Any], tenant: str, *, records: bool
) -> list[tuple[Any, ...]]:
    statement, params = count_statement(
        tenant, EventFilter(), group_by="credential", limit=10, records=records
    )
    return [tuple(row) for row in conn.execute(statement, params).fetchall()]


def test_a_count_by_credential_of_columns_alone_reads_no_record_for_the_service(
    as_owner: psycopg.Connection[Any],
) -> None:
    """Of a tenant with no row from before migration 0056, the count by
    credential is one grouping of the columns: no branch reads a record
    (the records' branch beside it kept the planner from sharing the scan
    among parallel workers: ADR 0143), and the service's probe of
    events_credential_unread finds nothing."""
    with _as_service(as_owner) as as_service:
        as_service.execute("SELECT set_config('sealtrail.tenant', 't2', false)")
        assert not _unread(as_service, "t2", EventFilter())
        outputs = {}
        for records in (True, False):
            statement, params = count_statement(
                "t2", EventFilter(), group_by="credential", limit=10, records=records
            )
            query = pgsql.SQL("EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) {}").format(statement)
            row = as_service.execute(query, params).fetchone()
            assert row is not None
            outputs[records] = " ".join(
                " ".join(node.get("Output", ())) for node in _nodes(row[0][0]["Plan"])
            )
            assert as_service.execute(statement, params).fetchall() == [
                ('["k","o",""]', 100, 100, 1)
            ]
    assert "record" in outputs[True]  # so the test can tell
    assert "record" not in outputs[False]


def test_a_count_by_credential_reads_the_index_alone_for_the_service(
    as_owner: psycopg.Connection[Any],
) -> None:
    """Of a tenant whose rows were all appended since migration 0056, the
    count by credential reads events_credential_id alone (ADR 0144): kind,
    id and hint are in the index, the rows without a credential too, so once
    VACUUM has marked the pages all-visible no heap row is fetched, as a
    count by actor reads events_actor_id alone."""
    tenant = "t_index_only"
    seq = 0
    for kind, credential_id, hint, n in ROWS:
        credential = {"kind": kind, "id": credential_id, "hint": hint} if kind else {}
        record = json.dumps({"actor": {"id": "u", "credential": credential}})
        as_owner.execute(
            _INSERT, [tenant, seq, record, kind, credential_id or None, hint or None, n]
        )
        seq += n
    as_owner.execute("VACUUM (ANALYZE) events")
    statement, params = count_statement(
        tenant, EventFilter(), group_by="credential", limit=10, records=False
    )
    with _as_service(as_owner) as as_service:
        as_service.execute("SELECT set_config('sealtrail.tenant', %s, false)", [tenant])
        assert not _unread(as_service, tenant, EventFilter())
        read = _scans_of_events(as_service, statement, params)
        counted = as_service.execute(statement, params).fetchall()
    assert counted == [
        ('["api_key","key_1","a1b2"]', 30, 42, 3),
        ("", 7, 42, 3),
        ('["session","key_1",""]', 5, 42, 3),
    ]
    # Every row counted came off an index-only scan of the credential index
    # and no heap page was read for it; a partition with none of the
    # tenant's rows may be probed otherwise, finding nothing.
    rows = [node for node in read if node["Actual Rows"] > 0]
    assert sum(node["Actual Rows"] * node["Actual Loops"] for node in rows) == 42
    assert {node["Node Type"] for node in rows} == {"Index Only Scan"}
    assert all("credential_id" in node["Index Name"] for node in rows)
    assert all(node["Heap Fetches"] == 0 for node in rows)


@pytest.fixture(scope="module")
def pages_as_owner(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A database of its own: t1's 600 rows appended before the columns and
    600 after, 500 of each of credential key_1."""
    with (
        database_of_its_own(migrated_database_url, "credential_pages") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        key = json.dumps({"actor": {"id": "u", "credential": {"kind": "api_key", "id": "key_1"}}})
        none = json.dumps({"actor": {"id": "u"}})
        blocks = [  # from before: columns NULL; since: as the appender writes them
            (key, (None, None, None), 500),
            (none, (None, None, None), 100),
            (key, ("api_key", "key_1", None), 500),
            (none, ("", None, None), 100),
        ]
        seq = 0
        for record, columns, n in blocks:
            conn.execute(_INSERT, ["t1", seq, record, *columns, n])
            seq += n
        conn.execute("ANALYZE events")
        yield conn


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_each_branch_of_a_credentials_page_walks_its_index_and_stops_at_the_page(
    pages_as_owner: psycopg.Connection[Any], order: Order
) -> None:
    """A page of a credential's events orders and limits each branch itself:
    the rows appended since migration 0056 and those from before are each
    read off their index in seq order (the page's direction), no sort, up
    to the page and no further; the page is then the first of the two
    merged. Were the page taken from the branches' UNION ALL, each would
    read every one of its 500 rows and sort them (ADR 0142)."""
    key = EventFilter(credential_id="key_1")
    statement, params = query_statement("t1", key, order, None, 10)
    with _as_service(pages_as_owner) as as_service:
        plan = _plan(as_service, statement, params)
        served = as_service.execute(statement, params).fetchall()
        whole, whole_params = query_statement("t1", key, order, None, 1000)
        assert served == as_service.execute(whole, whole_params).fetchall()[:10]
    assert served == pages_as_owner.execute(statement, params).fetchall()
    branches = [
        node
        for node in _nodes(plan)
        if node["Node Type"] == "Limit"
        and not any(below["Node Type"] == "Limit" for below in list(_nodes(node))[1:])
    ]
    assert len(branches) == 2
    direction = "Backward" if order == "newest" else "Forward"
    indexes = []
    for branch in branches:
        below = list(_nodes(branch))
        assert not any(node["Node Type"] == "Sort" for node in below)
        scans = [node for node in below if node.get("Relation Name", "").startswith("events")]
        assert scans and all(scan["Node Type"] == "Index Scan" for scan in scans)
        assert {scan["Scan Direction"] for scan in scans} == {direction}
        # A merge of the partitions' scans takes a row of each first, then
        # as many as the page.
        assert sum(scan["Actual Rows"] for scan in scans) <= 10 + len(scans)
        indexes.append({scan["Index Name"] for scan in scans})
    # One branch on events_credential_id's partitions, the other on
    # events_credential_unread's (a partition's index is named after its columns).
    assert sorted(any("credential_id" in name for name in names) for names in indexes) == [
        False,
        True,
    ]


def _undo_0056(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DROP INDEX events_credential_id, events_credential_unread")
    conn.execute(
        "ALTER TABLE events DROP COLUMN credential_kind, DROP COLUMN credential_id,"
        " DROP COLUMN credential_hint"
    )
    conn.execute("DELETE FROM schema_migrations WHERE version = 56")


_BEFORE_0056 = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, leaf_hash, record)"
    " SELECT 't1', g, gen_random_uuid(), now(), now() - g * interval '1 day', 'a.b', 1,"
    " 'success', 'u', '\\x00', %s FROM generate_series(1, 40) AS g"
)


@pytest.mark.parametrize("columns_beforehand", [False, True])
def test_migration_0056_leaves_the_rows_before_it_to_their_records(
    migrated_database_url: str, columns_beforehand: bool
) -> None:
    """Over a log of rows in several months (their columns NULL, the
    migration rewrites none), with the columns added beforehand by hand as
    docs/database.md says or not: each partition gets both indexes, every row
    from before is an entry of events_credential_unread, and the filter and
    the count find them off their records."""
    record = json.dumps({"actor": {"id": "u", "credential": {"kind": "api_key", "id": "k"}}})
    with (
        database_of_its_own(migrated_database_url, "credentials_migration") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute("SELECT sealtrail_create_event_partitions(now() - interval '2 months', now())")
        _undo_0056(conn)
        conn.execute(_BEFORE_0056, [record])
        if columns_beforehand:
            conn.execute(
                "ALTER TABLE events ADD COLUMN IF NOT EXISTS credential_kind text,"
                " ADD COLUMN IF NOT EXISTS credential_id text,"
                " ADD COLUMN IF NOT EXISTS credential_hint text"
            )
        migrate_database(url, out_of_order=True)  # 0056 alone missing
        assert conn.execute(
            "SELECT count(*) FROM events WHERE credential_kind IS NULL AND credential_id IS NULL"
        ).fetchone() == (40,)
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        ).fetchone()
        assert partitions is not None and partitions[0] >= 3
        for parent in ("events_credential_id", "events_credential_unread"):
            attached = conn.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [parent]
            ).fetchone()
            assert attached == partitions
        statement, params = query_statement(
            "t1", EventFilter(credential_id="k"), "newest", None, 100
        )
        assert len(conn.execute(statement, params).fetchall()) == 40
        statement, params = count_statement(
            "t1", EventFilter(credential_id="k"), group_by="credential", limit=10
        )
        key = json.dumps(["api_key", "k", ""], separators=(",", ":"))
        assert [tuple(row[:2]) for row in conn.execute(statement, params)] == [(key, 40)]


def _credential_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, int, str]]:
    """The credential indexes of events and its partitions: name, oid, and
    the table whose index each is attached to (the parent's own: '')."""
    return conn.execute(
        "SELECT c.relname, c.oid::bigint, coalesce(p.inhparent::regclass::text, '')"
        " FROM pg_class AS c LEFT JOIN pg_inherits AS p ON p.inhrelid = c.oid"
        " WHERE c.relkind IN ('i', 'I') AND c.relname LIKE '%%credential%%' ORDER BY 1"
    ).fetchall()


def test_the_indexes_built_beforehand_as_documented_are_taken_by_migration_0056(
    migrated_database_url: str,
) -> None:
    """docs/database.md's statements, run as printed over a log of rows from
    before 0056 in several months: the columns added, each partition's two
    indexes built concurrently and attached, both parents valid; the
    migration then builds nothing (the same indexes after it) and leaves the
    rows from before to their records and the backfill."""
    record = json.dumps({"actor": {"id": "u", "credential": {"kind": "api_key", "id": "k"}}})
    with (
        database_of_its_own(migrated_database_url, "credentials_beforehand") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute("SELECT sealtrail_create_event_partitions(now() - interval '2 months', now())")
        _undo_0056(conn)
        conn.execute(_BEFORE_0056, [record])
        assert _credential_indexes(conn) == []
        verdicts = run_documented_recipe(conn, "Migration 0056 (ADR 0142)")
        assert sorted(verdicts) == [
            ("events_credential_id", True),
            ("events_credential_unread", True),
        ]
        built = _credential_indexes(conn)
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        ).fetchone()
        assert partitions is not None and partitions[0] >= 3
        for parent in ("events_credential_id", "events_credential_unread"):
            attached = [name for name, _, attached_to in built if attached_to == parent]
            assert len(attached) == partitions[0]
        migrate_database(url, out_of_order=True)  # 0056 alone missing
        assert _credential_indexes(conn) == built
        assert conn.execute("SELECT 1 FROM schema_migrations WHERE version = 56").fetchone()
        assert conn.execute(
            "SELECT count(*) FROM events WHERE credential_kind IS NULL"
        ).fetchone() == (40,)


def _as_before_0060(conn: psycopg.Connection[Any]) -> None:
    """events_credential_id as migration 0056 made it, 0060 and 0062 (which
    swaps 0060's index in) not applied."""
    as_before_0062(conn)
    conn.execute("DROP INDEX events_credential_covering")
    conn.execute("DELETE FROM schema_migrations WHERE version = 60")


# t1's rows over 40 days, appended since migration 0056: four in five of
# credential key_1 (hint a1b2), the others without one.
_SINCE_0056_IN_MONTHS = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, leaf_hash, record, credential_kind, credential_id, credential_hint)"
    " SELECT 't1', g, gen_random_uuid(), now(), now() - g * interval '1 day', 'a.b', 1,"
    " 'success', 'u', '\\x00', '{}', CASE WHEN g % 5 = 0 THEN '' ELSE 'api_key' END,"
    " CASE WHEN g % 5 <> 0 THEN 'key_1' END, CASE WHEN g % 5 <> 0 THEN 'a1b2' END"
    " FROM generate_series(1, 40) AS g"
)


@pytest.mark.parametrize("beforehand", [False, True])
def test_migration_0060_gives_every_partition_the_index_a_count_reads_alone(
    migrated_database_url: str, beforehand: bool
) -> None:
    """Over rows in several months, built by the migration or beforehand as
    docs/database.md prints it (each partition concurrently, then attached):
    events_credential_id is then the index with kind and hint, of every row
    since 0056, on every partition and on a month made afterwards, 0056's
    gone; the count by credential reads it alone and the filter's rows are
    found on it as before."""
    with (
        database_of_its_own(migrated_database_url, "credentials_covering") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute("SELECT sealtrail_create_event_partitions(now() - interval '2 months', now())")
        _as_before_0060(conn)
        conn.execute(_SINCE_0056_IN_MONTHS)
        if beforehand:
            verdicts = run_documented_recipe(conn, "Migration 0060 (ADR 0144)")
            assert verdicts == [("events_credential_covering", True)]
        built = _credential_indexes(conn)
        migrate_database(url, out_of_order=True)  # 0060 and 0062 missing
        if beforehand:  # taken as built: dropped 0056's, renamed the parent alone
            assert {oid for _, oid, _ in _credential_indexes(conn)} < {oid for _, oid, _ in built}
        conn.execute("SELECT sealtrail_create_event_partitions(now(), now() + interval '3 months')")
        definition = conn.execute(
            "SELECT pg_get_indexdef('events_credential_id'::regclass)"
        ).fetchone()
        assert definition is not None
        assert definition[0].endswith(
            "(tenant_id, credential_id, seq) INCLUDE (credential_kind, credential_hint)"
            " WHERE (credential_kind IS NOT NULL)"
        )
        partitions, attached = conn.execute(
            "SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass),"
            " (SELECT count(*) FROM pg_inherits"
            " WHERE inhparent = 'events_credential_id'::regclass)"
        ).fetchone() or (0, 0)
        assert partitions >= 6 and attached == partitions
        assert conn.execute(
            "SELECT to_regclass('events_credential_covering') IS NULL"
        ).fetchone() == (True,)
        conn.execute("VACUUM (ANALYZE) events")
        statement, params = count_statement(
            "t1", EventFilter(), group_by="credential", limit=10, records=False
        )
        with _as_service(conn) as as_service:
            read = _scans_of_events(as_service, statement, params)
            assert as_service.execute(statement, params).fetchall() == [
                ('["api_key","key_1","a1b2"]', 32, 40, 2),
                ("", 8, 40, 2),
            ]
            rows = [node for node in read if node["Actual Rows"] > 0]
            assert len(rows) >= 2  # several months read
            assert {node["Node Type"] for node in rows} == {"Index Only Scan"}
            assert all(node["Heap Fetches"] == 0 for node in rows)
            statement, params = query_statement(
                "t1", EventFilter(credential_id="key_1"), "newest", None, 100
            )
            assert len(as_service.execute(statement, params).fetchall()) == 32
