"""What a page of the action catalogue reads (ListActionCatalog, ADR 0145):
each action's count and latest occurred_at from the events_action index
alone, no event's table row, on the first page and on later ones, as the
service's role plans it under row-level security; and migration 0061, which
widened that index to hold occurred_at, over a log of several months, the
index built by it or beforehand as docs/database.md says."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from sealtrail_server.store.action_catalog import catalog_statement
from tests.conftest import database_of_its_own, migrate_database
from tests.integration.test_actor_prefix_filter import run_documented_recipe
from tests.integration.test_credential_columns import _scans_of_events
from tests.integration.test_index_swaps import as_before_0062

EVENTS = 3000
ACTIONS = 30
# Events of t1 (and as many of t2), an action in turn, one every 30 minutes
# back from now: about two months of them, so in several partitions.
_INSERT = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, leaf_hash, record)"
    " SELECT t, g, gen_random_uuid(), now() - g * interval '30 minutes',"
    " now() - g * interval '30 minutes', 'svc.action_' || lpad((g %% %s)::text, 2, '0'),"
    " 1, 'success', 'u', '\\x00', '{}'"
    " FROM unnest(ARRAY['t1', 't2']) AS t, generate_series(1::bigint, %s::bigint) AS g"
)


# What PostgreSQL names a partition's events_action when it makes it from the
# parent's, as migration 0061 names every partition's.
_PARTITIONS_INDEX = "_tenant_id_action_seq_occurred_at_idx"


def _logged(conn: psycopg.Connection[Any]) -> None:
    """The events of _INSERT in their months' partitions, vacuumed (an
    append-only log's pages are all visible once autovacuum has been by)."""
    conn.execute("SELECT sealtrail_create_event_partitions(now() - interval '3 months', now())")
    conn.execute(_INSERT, [ACTIONS, EVENTS])
    conn.execute("VACUUM ANALYZE events")


@pytest.fixture(scope="module")
def as_service(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A database of its own holding _INSERT's events; a connection working
    as the service does for tenant t1."""
    with (
        database_of_its_own(migrated_database_url, "catalog_plans") as url,
        psycopg.connect(url, autocommit=True) as owner,
        psycopg.connect(url, autocommit=True) as service,
    ):
        _logged(owner)
        service.execute("SET ROLE sealtrail_service")
        service.execute("SELECT set_config('sealtrail.tenant', 't1', false)")
        service.execute("SET enable_seqscan = off")  # as the service's connections
        yield service


@pytest.mark.parametrize("after", ["", "svc.action_09"])
def test_a_page_reads_its_actions_events_from_the_index_alone(
    as_service: psycopg.Connection[Any], after: str
) -> None:
    """The first page (its total counted too) and a later one: every scan of
    events that finds rows is an index-only scan of events_action, and none
    fetches a row from the table, where `max(occurred_at)` had each page
    read a table row for every event of its actions."""
    statement, params = catalog_statement(
        "t1", before_seq=EVENTS + 1, after=after, limit=11, total=None if not after else ACTIONS
    )
    found = [
        node for node in _scans_of_events(as_service, statement, params) if node["Actual Rows"]
    ]
    assert found
    assert {node["Node Type"] for node in found} == {"Index Only Scan"}
    assert all(node["Index Name"].endswith(_PARTITIONS_INDEX) for node in found)
    assert sum(node["Heap Fetches"] for node in found) == 0
    rows = as_service.execute(statement, params).fetchall()
    first = int(after.removeprefix("svc.action_") or -1) + 1
    assert [(row[0], row[1]) for row in rows] == [
        (f"svc.action_{n:02}", EVENTS // ACTIONS) for n in range(first, first + 11)
    ]
    assert all(row[-1] == ACTIONS for row in rows)  # the entries' total, last of each row


def _action_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, int, str]]:
    """The action indexes of events and its partitions: name, oid, and its
    definition's columns."""
    return conn.execute(
        "SELECT c.relname, c.oid::bigint, substring(pg_get_indexdef(c.oid) from '\\((.*)$')"
        " FROM pg_class AS c JOIN pg_index AS x ON x.indexrelid = c.oid"
        " WHERE c.relkind IN ('i', 'I') AND c.relname LIKE 'events%%action%%'"
        " ORDER BY 1"
    ).fetchall()


def _as_before_0061(conn: psycopg.Connection[Any]) -> None:
    """events_action as 0009 made it, 0061 and 0062 (which swaps 0061's
    index in) unapplied."""
    as_before_0062(conn)
    conn.execute("DROP INDEX events_action_covering")
    conn.execute("DELETE FROM schema_migrations WHERE version = 61")


@pytest.mark.parametrize("beforehand", [False, True])
def test_migration_0061_widens_every_partitions_action_index(
    migrated_database_url: str, beforehand: bool
) -> None:
    """Over a log of several months, with the index built beforehand as
    docs/database.md says or not: one action index a partition, holding
    occurred_at, under the name PostgreSQL gives a partition made afterwards,
    the parent's still events_action; built beforehand, none rebuilt."""
    with (
        database_of_its_own(migrated_database_url, "catalog_migration") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        _logged(conn)
        _as_before_0061(conn)
        before = _action_indexes(conn)
        assert not any("occurred_at" in columns for _, _, columns in before)
        if beforehand:
            verdicts = run_documented_recipe(conn, "Migration 0061")
            assert [valid for _, valid in verdicts] == [True]
        built = _action_indexes(conn)
        migrate_database(url, out_of_order=True)  # 0061 and 0062 missing
        after = _action_indexes(conn)
        if beforehand:
            kept = sorted(oid for _, oid, columns in built if "occurred_at" in columns)
            assert sorted(oid for _, oid, _ in after) == kept
        partitions = [
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'events'::regclass"
            )
        ]
        assert len(partitions) >= 4  # three months at least, and the default
        plain = sorted(partition + _PARTITIONS_INDEX for partition in partitions)
        assert [name for name, _, _ in after] == sorted(["events_action", *plain])
        columns = "tenant_id, action text_pattern_ops, seq) INCLUDE (occurred_at)"
        assert {each for _, _, each in after} == {columns}
        # A month made afterwards gets the index from the parent, named alike.
        conn.execute("SELECT sealtrail_create_event_partitions(now(), now() + interval '5 months')")
        made = {name for name, _, _ in _action_indexes(conn)} - {name for name, _, _ in after}
        assert made and all(name.endswith(_PARTITIONS_INDEX) for name in made)
