"""Migrations 0060 and 0061 build the covering indexes; 0062 alone swaps
them in for the indexes they widen (ADR 0144, ADR 0145): a swap given up
behind a reader builds nothing again when tried again, and an index found
invalid (a build beforehand, as docs/database.md prints it, not finished)
is refused by name, the old index left in place."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from sealtrail_server.cli import _database_problem
from sealtrail_server.store.migrations import MigrationBlocked
from sealtrail_server.store.migrations import migrate_database as migrate_with
from tests.conftest import database_of_its_own, migrate_database
from tests.integration.test_actor_prefix_filter import documented_recipe

# The indexes as migration 0062 leaves them, and as they were before it.
_CREDENTIAL_BEFORE = "(tenant_id, credential_id, seq) WHERE (credential_id IS NOT NULL)"
_ACTION_BEFORE = "(tenant_id, action text_pattern_ops, seq)"


def as_before_0062(conn: psycopg.Connection[Any]) -> None:
    """The indexes as migrations 0060 and 0061 leave them, 0062 unapplied:
    the covering ones built under their own names beside those they widen,
    as 0056 and 0009 made these."""
    conn.execute("ALTER INDEX events_credential_id RENAME TO events_credential_covering")
    conn.execute(
        "CREATE INDEX events_credential_id ON events (tenant_id, credential_id, seq)"
        " WHERE credential_id IS NOT NULL"
    )
    conn.execute("ALTER INDEX events_action RENAME TO events_action_covering")
    conn.execute("CREATE INDEX events_action ON events (tenant_id, action text_pattern_ops, seq)")
    conn.execute("DELETE FROM schema_migrations WHERE version = 62")


def _definition(conn: psycopg.Connection[Any], index: str) -> str:
    row = conn.execute(
        "SELECT substring(pg_get_indexdef(to_regclass(%s)) from ' USING btree (.*)$')", [index]
    ).fetchone()
    assert row is not None
    return str(row[0])


def _oid(conn: psycopg.Connection[Any], index: str) -> int | None:
    row = conn.execute("SELECT to_regclass(%s)::oid::bigint", [index]).fetchone()
    return None if row is None else row[0]


def _applied(conn: psycopg.Connection[Any]) -> set[int]:
    """Which of the covering indexes' migrations, 0060 to 0062, are applied."""
    rows = conn.execute(
        "SELECT version FROM schema_migrations WHERE version BETWEEN 60 AND 62"
    ).fetchall()
    return {version for (version,) in rows}


def refused_as_invalid(url: str, index: str) -> None:
    """The start refused, naming `index` and what to do, in the one line a
    start says of a database error (its primary message alone)."""
    with pytest.raises(psycopg.errors.RaiseException) as refused:
        migrate_database(url, out_of_order=True)
    said = _database_problem(refused.value, owner_url=False)
    assert said == (
        f"the database failed the start: sealtrail: index {index} is invalid (a build"
        " beforehand failed or was not finished): drop it or finish it as docs/database.md says"
    )


def test_an_unfinished_build_beforehand_is_refused_by_0060_the_old_index_kept(
    migrated_database_url: str,
) -> None:
    """docs/database.md's first statement alone (`ON ONLY events`: the
    parent's index, invalid until every partition's is attached), then the
    upgrade: taken as made, it replaced 0056's index, and a count or a
    filter by credential read the table. The start is refused naming it;
    0056's index stands, 0060 unapplied; dropped, the next start builds it."""
    with (
        database_of_its_own(migrated_database_url, "swap_invalid_credential") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        as_before_0062(conn)
        conn.execute("DROP INDEX events_credential_covering")
        conn.execute("DELETE FROM schema_migrations WHERE version = 60")
        conn.execute(documented_recipe("Migration 0060 (ADR 0144)")[0])
        refused_as_invalid(url, "events_credential_covering")
        assert _definition(conn, "events_credential_id") == _CREDENTIAL_BEFORE
        assert 60 not in _applied(conn) and 62 not in _applied(conn)
        conn.execute("DROP INDEX events_credential_covering")
        migrate_database(url, out_of_order=True)
        assert _definition(conn, "events_credential_id").endswith(
            "INCLUDE (credential_kind, credential_hint) WHERE (credential_kind IS NOT NULL)"
        )
        assert {60, 62} <= _applied(conn)


def test_an_invalid_index_is_refused_by_the_swap_the_old_one_kept(
    migrated_database_url: str,
) -> None:
    """An action index found invalid when 0062 would drop the old one for it
    is refused by name, and nothing of 0062 applied: both old indexes stand."""
    with (
        database_of_its_own(migrated_database_url, "swap_invalid_action") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        as_before_0062(conn)
        conn.execute("DROP INDEX events_action_covering")
        conn.execute(documented_recipe("Migration 0061")[0])
        refused_as_invalid(url, "events_action_covering")
        assert _definition(conn, "events_action") == _ACTION_BEFORE
        assert _definition(conn, "events_credential_id") == _CREDENTIAL_BEFORE
        assert _oid(conn, "events_credential_covering") is not None
        assert 62 not in _applied(conn)


def test_a_swap_given_up_behind_a_reader_builds_nothing_again(
    migrated_database_url: str,
) -> None:
    """A reader holds events (an export's transaction) past the lock timeout
    the migrations wait for: the start is refused at 0062's drop, once 0060
    built the index and committed it. The next start swaps that same index
    in, built once: in one transaction, the drop given up threw the build
    away, and each attempt built it again while appends waited."""
    with (
        database_of_its_own(migrated_database_url, "swap_behind_a_reader") as url,
        psycopg.connect(url, autocommit=True) as conn,
        psycopg.connect(url) as reader,
    ):
        conn.execute("SELECT sealtrail_create_event_partitions(now() - interval '2 months', now())")
        as_before_0062(conn)
        conn.execute("DROP INDEX events_credential_covering")
        conn.execute("DELETE FROM schema_migrations WHERE version = 60")
        reader.execute("SELECT count(*) FROM events")  # its lock held to its transaction's end
        with pytest.raises(MigrationBlocked, match="migration 0062_"):
            asyncio.run(migrate_with(url, lock_attempts=1, out_of_order=True))
        built = _oid(conn, "events_credential_covering")
        assert built is not None and _applied(conn) == {60, 61}
        assert _definition(conn, "events_credential_id") == _CREDENTIAL_BEFORE
        reader.rollback()
        migrate_database(url, out_of_order=True)  # 0063 stayed applied
        assert _oid(conn, "events_credential_id") == built
        assert _oid(conn, "events_credential_covering") is None
        assert _definition(conn, "events_action").endswith("INCLUDE (occurred_at)")
