"""A test's database of its own (tests/conftest.py `database_of_its_own`): a
copy of one migrated template per test process, as migrated as a database
migrated afresh, and touched by no other test."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from sealtrail_server.store import migrations
from sealtrail_server.store.migrations import available_migrations, schema_is_current
from tests import conftest
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


def test_the_template_holds_the_releases_migrations_whatever_a_test_points_them_at(
    migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that points MIGRATIONS_DIR at one migration more before its
    first database of its own (test_migration_digests, _order, _locks) must
    not have that migration in the template every later test copies."""
    for path in migrations.MIGRATIONS_DIR.glob("*.sql"):
        (tmp_path / path.name).symlink_to(path)
    (tmp_path / "9999_a_column_more.sql").write_text("ALTER TABLE events ADD COLUMN noted text;\n")
    released = [migration.version for migration in available_migrations()]
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", tmp_path)
    monkeypatch.setattr(conftest, "_TEMPLATES", {})  # this process's next copy made afresh
    try:
        with (
            database_of_its_own(migrated_database_url, "own_patched") as own,
            psycopg.connect(own) as conn,
        ):
            versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    finally:
        conftest.drop_templates(migrated_database_url)
    assert sorted(version for (version,) in versions) == released
