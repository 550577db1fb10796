"""Applied migrations were compared by number alone: a database migrated by
a build whose migration of some number differed (a fork's, a hotfix
branch's, a file changed by hand) was taken as up to date, and the server
ran on a schema other than the one its code expects, without a word. Each
migration's digest is recorded as it is applied (migration 0050), and a
start, or an operator's command, refuses a database where one differs
(ADR 0112)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from sealtrail_server import cli
from sealtrail_server.store import migrations
from tests.command_output import own_lines
from tests.conftest import database_of_its_own, database_with_no_schema

_HOTFIX = "ALTER TABLE events ADD COLUMN noted integer;\n"


@pytest.fixture
def release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This release plus a migration 9999 (its file, returned)."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in migrations.MIGRATIONS_DIR.glob("*.sql"):
        (directory / path.name).symlink_to(path)
    more = directory / "9999_a_column_more.sql"
    more.write_text(
        "-- What a later release adds.\nALTER TABLE events ADD COLUMN noted text;\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", directory)
    return more


@pytest.fixture
def own(migrated_database_url: str, release: Path) -> Iterator[str]:
    """A database of its own, every migration of `release` applied."""
    with database_of_its_own(migrated_database_url, "migration_digests") as url:
        asyncio.run(migrations.migrate_database(url))
        yield url


def _recorded(url: str) -> dict[int, str | None]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, digest FROM schema_migrations").fetchall()
    return {version: digest for version, digest in rows}


def _column_type(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'events' AND column_name = 'noted'"
        ).fetchone()
    return None if row is None else str(row[0])


def test_a_start_refuses_a_database_whose_migration_was_applied_with_other_text(
    own: str, release: Path, tmp_path: Path
) -> None:
    """A hotfix build's 9999 made `noted` an integer; this build's makes it
    text. The start stops before any change, in one line naming the
    migration, both digests and where to read what to do."""
    applied = _recorded(own)[9999]
    release.write_text(_HOTFIX, encoding="utf-8")  # the build now started: another 9999
    with pytest.raises(migrations.MigrationDiffers) as refused:
        asyncio.run(migrations.migrate_database(own))
    expected = migrations.migration_digest(release.read_bytes())
    said = str(refused.value)
    assert said.startswith("migration 9999_a_column_more was applied to this database"), said
    assert applied is not None and applied in said and expected in said, said
    assert "docs/operations.md" in said and "\n" not in said
    # `serve` says it in one line and exits 1, before it listens: a start that went
    # on would serve (on a port of its own choosing) and not return. A port
    # taken no longer tells it: a start now refuses one before all else.
    env = {"SEALTRAIL_DATABASE_URL": own, "SEALTRAIL_DATA_DIR": str(tmp_path / "data")}
    started = CliRunner().invoke(cli.main, ["serve", "--listen", "127.0.0.1:0"], env=env)
    assert started.exit_code == 1, started.output
    assert own_lines(started.output)[-1] == f"Error: {said}", started.output
    assert "Traceback" not in started.output
    assert _recorded(own)[9999] == applied  # nothing changed
    assert _column_type(own) == "text"


def test_an_operator_command_refuses_it_too(own: str, release: Path, tmp_path: Path) -> None:
    """`tenant list` reads the applied migrations as the service's login and
    took them for this release's: it ran its statements on the other schema."""
    release.write_text(_HOTFIX, encoding="utf-8")
    env = {"SEALTRAIL_DATABASE_URL": own, "SEALTRAIL_DATA_DIR": str(tmp_path / "data")}
    listed = CliRunner().invoke(cli.main, ["tenant", "list"], env=env)
    assert listed.exit_code == 1, listed.output
    assert "Error: migration 9999_a_column_more was applied to this database" in listed.output
    assert "Traceback" not in listed.output


def test_comments_and_layout_are_not_the_migration_s_text(own: str, release: Path) -> None:
    """A comment corrected, or the statements laid out again, changes no
    schema: a start goes on (the project corrects comments in migrations)."""
    release.write_text(
        "/* What a later release adds. */\nALTER TABLE events\n  ADD COLUMN noted text; -- note\n",
        encoding="utf-8",
    )
    assert asyncio.run(migrations.migrate_database(own)) == []
    # What is within quotes is text of the schema, comment-like or not.
    assert migrations.migration_digest(b"SELECT '--a';") != migrations.migration_digest(
        b"SELECT '--b';"
    )
    assert migrations.migration_digest(b"SELECT $f$ -- a $f$;") != migrations.migration_digest(
        b"SELECT $f$ -- b $f$;"
    )
    assert migrations.migration_digest(b"SELECT E'\\' -- a';") != migrations.migration_digest(
        b"SELECT E'\\' -- b';"
    )
    assert migrations.migration_digest(b'SELECT 1 AS "a -- b";') != migrations.migration_digest(
        b'SELECT 1 AS "a -- c";'
    )


def test_migrations_applied_before_digests_are_recorded_as_they_are_now(
    own: str, release: Path
) -> None:
    """A database migrated before this release kept no digest: the first
    start records this build's (nothing better is known of them), several
    starts at once under the migrations' lock; from then on a change is
    refused."""
    with psycopg.connect(own) as conn:
        conn.execute("UPDATE schema_migrations SET digest = NULL")

    async def starts() -> None:
        await asyncio.gather(*(migrations.migrate_database(own) for _ in range(3)))

    asyncio.run(starts())
    recorded = _recorded(own)
    for migration in migrations.available_migrations():
        assert recorded[migration.version] == migrations.migration_digest(
            migration.path.read_bytes()
        ), migration.name
    release.write_text(_HOTFIX, encoding="utf-8")
    with pytest.raises(migrations.MigrationDiffers):
        asyncio.run(migrations.migrate_database(own))


def test_a_first_start_records_the_digest_of_every_migration(
    migrated_database_url: str, release: Path
) -> None:
    """Those applied before 0050 made the column, and 0050 itself, too."""
    with database_with_no_schema(migrated_database_url, "digests_fresh") as fresh:
        asyncio.run(migrations.migrate_database(fresh))
        recorded = _recorded(fresh)
    assert recorded == {
        migration.version: migrations.migration_digest(migration.path.read_bytes())
        for migration in migrations.available_migrations()
    }


@pytest.mark.parametrize("stray", ["9999_another_of_that_number.sql", "9998_a_column-more.sql"])
def test_a_migration_file_the_release_would_never_apply_is_refused(
    own: str, release: Path, stray: str
) -> None:
    """Two branches that each took the next free number, merged: a database
    that had applied one skipped the other for good (its number was
    applied), or took one for the other; a file whose name is not
    NNNN_name.sql was never applied. Either is said, naming the files."""
    other = "ALTER TABLE events ADD COLUMN other text;\n"
    (release.parent / stray).write_text(other, encoding="utf-8")
    with pytest.raises(migrations.MigrationFiles, match=stray):
        asyncio.run(migrations.migrate_database(own))
    assert _column_type(own) == "text"
    with psycopg.connect(own) as conn:
        assert (
            conn.execute(
                "SELECT FROM information_schema.columns WHERE column_name = 'other'"
            ).fetchone()
            is None
        )
