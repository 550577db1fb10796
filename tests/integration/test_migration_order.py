"""A database holding a migration but missing one of a lower number (a
hotfix build that backported only the later one) was given the lower one
after the higher at its next start, without a word: digests tell only two
builds' migrations of one number apart. The start refuses it, naming what
is missing, unless its operator allows it for that start
(SEALTRAIL_MIGRATIONS_OUT_OF_ORDER), and says each one applied so."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from sealtrail_server import cli
from sealtrail_server.store import migrations
from tests.command_output import own_lines
from tests.conftest import ServerThread, database_of_its_own, logged


@pytest.fixture
def hotfixed(
    migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A database migrated by a hotfix build: this release and its 9999
    alone. The build then started (the fixture's directory afterwards) has
    9998 as well, which the hotfix did not take."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in migrations.MIGRATIONS_DIR.glob("*.sql"):
        (directory / path.name).symlink_to(path)
    (directory / "9999_a_column_more.sql").write_text(
        "ALTER TABLE events ADD COLUMN noted text;\n", encoding="utf-8"
    )
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", directory)
    with database_of_its_own(migrated_database_url, "migration_order") as url:
        asyncio.run(migrations.migrate_database(url))
        (directory / "9998_an_index_before.sql").write_text(
            "CREATE TABLE before_noted (id integer);\n", encoding="utf-8"
        )
        yield url


def _applied(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations WHERE version > 9000")
        return sorted(row[0] for row in rows)


def _has_table(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass('before_noted') IS NOT NULL").fetchone()
    return bool(row and row[0])


def test_a_start_refuses_a_migration_lower_than_one_applied(hotfixed: str, tmp_path: Path) -> None:
    with pytest.raises(migrations.MigrationsOutOfOrder) as refused:
        asyncio.run(migrations.migrate_database(hotfixed))
    said = str(refused.value)
    assert said.startswith("the database lacks migration 9998_an_index_before of this"), said
    assert "9999_a_column_more" in said and "SEALTRAIL_MIGRATIONS_OUT_OF_ORDER" in said, said
    assert "docs/operations.md" in said and "\n" not in said
    assert _applied(hotfixed) == [9999] and not _has_table(hotfixed)  # nothing changed
    # `serve` says it in one line and exits 1, before it listens: a start that went
    # on would serve (on a port of its own choosing) and not return. A port
    # taken no longer tells it: a start now refuses one before all else.
    env = {"SEALTRAIL_DATABASE_URL": hotfixed, "SEALTRAIL_DATA_DIR": str(tmp_path / "data")}
    started = CliRunner().invoke(cli.main, ["serve", "--listen", "127.0.0.1:0"], env=env)
    assert started.exit_code == 1, started.output
    assert own_lines(started.output)[-1] == f"Error: {said}", started.output
    assert "Traceback" not in started.output
    # An operator command, which migrates a fresh database alone, says the same.
    listed = CliRunner().invoke(cli.main, ["tenant", "list"], env=env)
    assert listed.exit_code == 1, listed.output
    assert own_lines(listed.output)[-1] == f"Error: {said}", listed.output
    assert _applied(hotfixed) == [9999] and not _has_table(hotfixed)


def test_an_operator_allows_it_for_a_start_and_each_is_said(
    hotfixed: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=migrations.__name__)
    with ServerThread(hotfixed, migrations_out_of_order=True):  # as the setting sets it
        assert _applied(hotfixed) == [9998, 9999] and _has_table(hotfixed)
    said = [
        r.getMessage()
        for r in logged(caplog, by=migrations.__name__)
        if r.levelno == logging.WARNING
    ]
    assert said == [
        "applying migration 9998_an_index_before out of order, after 9999_a_column_more"
        " (SEALTRAIL_MIGRATIONS_OUT_OF_ORDER)"
    ], said
    # Applied now: the next start, allowed or not, has nothing to say of it.
    assert asyncio.run(migrations.migrate_database(hotfixed)) == []
