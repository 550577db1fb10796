"""A test's database of its own (tests/conftest.py `database_of_its_own`): a
copy of one migrated template per test process, as migrated as a database
migrated afresh, and touched by no other test."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from sealtrail_server.store.migrations import available_migrations, schema_is_current
from tests.conftest import database_of_its_own, migrated_template


def test_each_database_of_its_own_is_migrated_and_untouched_by_another(
    migrated_database_url: str,
) -> None:
    with database_of_its_own(migrated_database_url, "own_first") as first:
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE touched ()")
            conn.execute("DELETE FROM schema_migrations WHERE version = 1")
        assert not asyncio.run(schema_is_current(first))
        with database_of_its_own(migrated_database_url, "own_second") as second:
            assert second != first
            assert asyncio.run(schema_is_current(second))
            with psycopg.connect(second) as conn:
                versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
                touched = conn.execute("SELECT to_regclass('touched')").fetchone()
    assert sorted(version for (version,) in versions) == [
        migration.version for migration in available_migrations()
    ]
    assert touched == (None,)


def test_no_session_may_connect_to_the_template_the_databases_copy(
    migrated_database_url: str,
) -> None:
    template = migrated_template(migrated_database_url)
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(make_conninfo(migrated_database_url, dbname=template)).close()
