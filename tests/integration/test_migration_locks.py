"""A migration waits for a table's lock a moment at a time
(store/migrations.py): behind a long reader it gives up, rolls back and
tries again, rather than queue every statement of the running processes
behind its request; the start fails saying so if the reader outlasts it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from sealtrail_server import cli
from sealtrail_server.store import migrations
from tests.conftest import database_of_its_own, database_with_no_schema
from tests.processes import stop

_BUSY = "its tables are busy"


@pytest.fixture
def url(
    migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A database with the release's migrations applied, and one more to
    apply, which locks events; lock waits and pauses of a tenth of a second."""
    with database_of_its_own(migrated_database_url, "migration_locks") as own:
        _a_migration_more(tmp_path, monkeypatch)
        yield own


def _a_migration_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for path in migrations.MIGRATIONS_DIR.glob("*.sql"):
        (tmp_path / path.name).symlink_to(path)
    (tmp_path / "9999_a_column_more.sql").write_text("ALTER TABLE events ADD COLUMN noted text;\n")
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", tmp_path)
    monkeypatch.setattr(migrations, "LOCK_TIMEOUT", "100ms")
    monkeypatch.setattr(migrations, "FIRST_PAUSE", 0.05)
    monkeypatch.setattr(migrations, "LONGEST_PAUSE", 0.1)


def _applied(url: str) -> set[int]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def test_a_migration_behind_a_long_reader_tries_again_once_it_ends(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def run(holder: psycopg.Connection[tuple[object, ...]]) -> list[int]:
        migrating = asyncio.create_task(migrations.migrate_database(url))
        deadline = time.monotonic() + 30
        while _BUSY not in caplog.text:
            assert time.monotonic() < deadline and not migrating.done(), "never waited"
            await asyncio.sleep(0.01)
        holder.rollback()  # the reader ends
        return [migration.version for migration in await asyncio.wait_for(migrating, 10)]

    with psycopg.connect(url) as holder, caplog.at_level(logging.WARNING, migrations.__name__):
        holder.execute("SELECT FROM events LIMIT 1")  # a reader's lock, held in its transaction
        assert asyncio.run(run(holder)) == [9999]
    assert "migration 9999_a_column_more: its tables are busy" in caplog.text
    assert 9999 in _applied(url)


def test_a_start_fails_saying_so_when_the_reader_outlasts_every_attempt(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(url) as holder, caplog.at_level(logging.WARNING, migrations.__name__):
        holder.execute("SELECT FROM events LIMIT 1")
        with pytest.raises(migrations.MigrationBlocked, match="9999_a_column_more could not"):
            asyncio.run(asyncio.wait_for(migrations.migrate_database(url, lock_attempts=3), 10))
    assert caplog.text.count(_BUSY) == 2  # then the third attempt fails the start
    assert 9999 not in _applied(url)
    with psycopg.connect(url) as conn:
        noted = conn.execute(
            "SELECT FROM pg_attribute WHERE attrelid = 'events'::regclass AND attname = 'noted'"
        ).fetchone()
    assert noted is None


def test_no_attempts_set_waits_for_the_reader_without_a_limit(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SEALTRAIL_MIGRATION_LOCK_ATTEMPTS=0: as before, for a deployment whose
    long readers never all let go within the attempts; whatever lock timeout
    the database sets its sessions."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET lock_timeout = '100ms'").format(
                sql.Identifier(admin.info.dbname)
            )
        )

    async def run(holder: psycopg.Connection[tuple[object, ...]]) -> list[int]:
        migrating = asyncio.create_task(migrations.migrate_database(url, lock_attempts=0))
        done, _ = await asyncio.wait([migrating], timeout=1.0)  # ten of its lock waits
        assert not done, "it gave up, or never waited"
        holder.rollback()
        return [migration.version for migration in await asyncio.wait_for(migrating, 10)]

    with psycopg.connect(url) as holder, caplog.at_level(logging.WARNING, migrations.__name__):
        holder.execute("SELECT FROM events LIMIT 1")
        assert asyncio.run(run(holder)) == [9999]
    assert _BUSY not in caplog.text


def test_a_server_refuses_a_schema_a_newer_release_migrated(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """An older release started on a database a newer one had migrated, and
    served without a word, ignoring what those migrations changed (sealed
    purge summaries, the deployment's purge schedule) (helper-157). It stops
    before changing anything, naming the versions it does not know."""
    with database_of_its_own(migrated_database_url, "newer_schema") as own:
        with psycopg.connect(own, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO schema_migrations (version, name)"
                " VALUES (9998, 'from_a_newer_release'), (9999, 'and_another')"
            )
        env = {"SEALTRAIL_DATABASE_URL": own, "SEALTRAIL_DATA_DIR": str(tmp_path)}
        started = CliRunner().invoke(cli.main, ["serve", "--listen", "127.0.0.1:0"], env=env)
        assert started.exit_code == 1, started.output
        assert "Error: the database was migrated by a newer release" in started.output
        assert "9998_from_a_newer_release, 9999_and_another" in started.output
        assert "Traceback" not in started.output
        with pytest.raises(migrations.NewerSchema, match="run that release, or a newer one"):
            asyncio.run(migrations.migrate_database(own))


def test_a_newer_release_s_operator_command_leaves_an_older_schema_as_it_is(
    migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer release's `sealtrail-server token list`, run from an operator's
    box, migrated the deployment's database without a word, and its servers,
    of the older release, then refused every restart (helper-170). Commands
    other than `serve` migrate only a database with no schema yet: on an
    older one they refuse, saying to upgrade the servers first."""
    with database_of_its_own(migrated_database_url, "older_schema") as own:
        env = {"SEALTRAIL_DATABASE_URL": own, "SEALTRAIL_DATA_DIR": str(tmp_path)}
        newer = tmp_path / "newer"
        newer.mkdir()
        with monkeypatch.context() as patch:
            _a_migration_more(newer, patch)  # this release plus 9999: the newer one
            for command in (["token", "list", "--tenant", "acme"], ["tenant", "erasures"]):
                listed = CliRunner().invoke(cli.main, command, env=env)
                assert listed.exit_code == 1, listed.output
                assert "Error: the database was migrated by an older release" in listed.output
                assert "9999_a_column_more" in listed.output
                assert "run this release's `sealtrail-server serve` first" in listed.output
                assert "Traceback" not in listed.output
        assert 9999 not in _applied(own)
        # The servers' release still runs its commands there.
        listed = CliRunner().invoke(cli.main, ["tenant", "erasures"], env=env)
        assert listed.exit_code == 0, listed.output


def test_an_operator_command_sets_up_a_database_with_no_schema(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """A fresh setup may begin with `token create`: it applies every migration."""
    with database_with_no_schema(migrated_database_url, "fresh") as fresh:
        env = {"SEALTRAIL_DATABASE_URL": fresh, "SEALTRAIL_DATA_DIR": str(tmp_path)}
        created = CliRunner().invoke(
            cli.main, ["token", "create", "--tenant", "acme", "--role", "admin"], env=env
        )
        assert created.exit_code == 0, created.output
        assert {m.version for m in migrations.available_migrations()} <= _applied(fresh)


@pytest.mark.parametrize(
    "command",
    [
        ["tenant", "list"],
        ["tenant", "erasures"],
        ["token", "list", "--tenant", "acme"],
        ["token", "revoke", "7d444840-9dc0-11d1-b245-5ffdce74fad2"],
        ["tenant", "release-hold", "acme", "--reason", "closed"],
        ["tenant", "retention-limit", "acme", "--none"],
        ["sink", "list"],
    ],
)
def test_a_command_that_sets_nothing_up_leaves_a_database_with_no_schema_as_it_is(
    migrated_database_url: str, tmp_path: Path, command: list[str]
) -> None:
    """`tenant list` with a mistyped URL (the cluster's `postgres` database,
    not the servers') applied every migration there without a word and
    printed an empty table, exit 0: no tenant at all, at 3 a.m. Only the
    commands that set a deployment up (`token create`, `sink create`) make a
    schema; the others refuse, changing nothing."""
    with database_with_no_schema(migrated_database_url, "no_schema") as empty:
        env = {"SEALTRAIL_DATABASE_URL": empty, "SEALTRAIL_DATA_DIR": str(tmp_path)}
        refused = CliRunner().invoke(cli.main, command, env=env)
        assert refused.exit_code == 1, refused.output
        assert "Error: the database has no Sealtrail schema" in refused.output
        assert "Traceback" not in refused.output
        with psycopg.connect(empty) as conn:
            cursor = conn.execute("SELECT to_regclass('schema_migrations') IS NULL")
            assert cursor.fetchone() == (True,)  # nothing was made


def test_a_migration_runs_past_the_owner_s_statement_timeout_and_waits_its_lock_timeout(
    migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DBA's `statement_timeout` for the owner (a guard against runaway
    queries) cut short a migration's work that outlasted it (an index built
    over the whole log, 0009's copy of it): rolled back, not tried again, and
    so at every start after, and the release could never be started. It also
    ended each wait for a lock before LOCK_TIMEOUT, as a statement timeout
    not tried again. A migration's statements run for as long as they take;
    its lock waits are bounded by LOCK_TIMEOUT alone (ADR 0050)."""
    with database_of_its_own(migrated_database_url, "migration_timeouts") as own:
        for path in migrations.MIGRATIONS_DIR.glob("*.sql"):
            (tmp_path / path.name).symlink_to(path)
        # Its work takes a second: the owner's statements may take a tenth.
        (tmp_path / "9999_a_long_rewrite.sql").write_text(
            "SELECT pg_sleep(1);\nALTER TABLE events ADD COLUMN noted text;\n"
        )
        monkeypatch.setattr(migrations, "MIGRATIONS_DIR", tmp_path)
        monkeypatch.setattr(migrations, "LOCK_TIMEOUT", "500ms")
        monkeypatch.setattr(migrations, "FIRST_PAUSE", 0.05)
        with psycopg.connect(own, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET statement_timeout = '100ms'").format(
                    sql.Identifier(admin.info.dbname)
                )
            )
        applied = asyncio.run(asyncio.wait_for(migrations.migrate_database(own), 30))
        assert [migration.version for migration in applied] == [9999]

        # Behind a reader, each attempt waits out its lock timeout (the
        # statement timeout would have ended it at 0.1 s, for good).
        (tmp_path / "9999_a_long_rewrite.sql").unlink()
        (tmp_path / "9999_a_column_more.sql").write_text(
            "ALTER TABLE events ADD COLUMN more text;\n"
        )
        with psycopg.connect(own) as conn:
            conn.execute("DELETE FROM schema_migrations WHERE version = 9999")
            conn.commit()
            conn.execute("SELECT FROM events LIMIT 1")  # a reader holds events
            began = time.monotonic()
            with pytest.raises(migrations.MigrationBlocked, match="lock timeout"):
                asyncio.run(asyncio.wait_for(migrations.migrate_database(own, lock_attempts=2), 30))
            assert time.monotonic() - began >= 1.0  # two waits of 0.5 s


_MIGRATE_FROM = """
import asyncio, sys
from pathlib import Path
from sealtrail_server.store import migrations
migrations.MIGRATIONS_DIR = Path(sys.argv[2])
asyncio.run(migrations.migrate_database(sys.argv[1]))
"""


def test_a_start_killed_mid_migration_leaves_nothing_running_for_the_next(
    migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start killed while a migration worked (SIGKILL: a start probe's
    limit; Ctrl-C after a long silence) left the database's session running
    the migration to its end, a dead client's, holding the migrations' lock:
    the next start waited, "held by the database session of pid N (another
    process migrating)" when none was, for the whole of that work, then
    found it rolled back and did it all again. The session now notices its
    client gone within a second, and rolls back at once."""
    with database_of_its_own(migrated_database_url, "migration_killed") as own:
        for path in migrations.MIGRATIONS_DIR.glob("*.sql"):
            (tmp_path / path.name).symlink_to(path)
        long = tmp_path / "9999_a_long_rewrite.sql"
        long.write_text("ALTER TABLE events ADD COLUMN noted text;\nSELECT pg_sleep(60);\n")
        process = subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_FROM, own, str(tmp_path)],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            with psycopg.connect(own, autocommit=True) as watcher:
                deadline = time.monotonic() + 30
                while not watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%'"
                    " AND pid <> pg_backend_pid()"
                ).fetchone():
                    assert time.monotonic() < deadline and process.poll() is None
                    time.sleep(0.05)
            process.kill()  # mid-migration
            process.wait(10)
        finally:
            stop(process)
        # The next start, with the same migration made quick: it waited the
        # dead one's minute out, and timed out here.
        long.write_text("ALTER TABLE events ADD COLUMN noted text;\n")
        monkeypatch.setattr(migrations, "MIGRATIONS_DIR", tmp_path)
        applied = asyncio.run(asyncio.wait_for(migrations.migrate_database(own), 10))
        assert [migration.version for migration in applied] == [9999]


def test_a_start_names_each_migration_as_it_begins_it(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A start said which migrations it applied once every one was: over a
    large log, minutes without a line, a start its operator could not tell
    from a hung one (and killed), and a failure with no migration named
    before it. Each is said as it begins."""
    (tmp_path / "9999_a_column_more.sql").unlink()  # the fixture's: this one takes a while
    (tmp_path / "9999_a_long_rewrite.sql").write_text(
        "ALTER TABLE events ADD COLUMN noted text;\nSELECT pg_sleep(30);\n"
    )

    async def run() -> None:
        migrating = asyncio.create_task(migrations.migrate_database(url))
        try:
            deadline = time.monotonic() + 20
            while "applying migration 9999_a_long_rewrite" not in caplog.text:
                assert time.monotonic() < deadline and not migrating.done(), "said nothing"
                await asyncio.sleep(0.05)
        finally:
            migrating.cancel()  # the 30 s it would take are not waited for
            with contextlib.suppress(asyncio.CancelledError):
                await migrating

    with caplog.at_level(logging.INFO, migrations.__name__):
        asyncio.run(run())
    assert 9999 not in _applied(url)


def test_a_first_start_says_its_migrations_in_one_line_and_each_at_debug(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first start logged `applying migration NNNN_name` at INFO for each
    of the release's migrations, 63 lines before its development token. It
    says them in one line as it begins, each at DEBUG (-v); a database with
    none to apply, nothing."""
    # None is named for taking long (below), however busy the machine.
    monkeypatch.setattr(migrations, "LONG_MIGRATION_SAID_AFTER", 3600.0)
    with (
        database_with_no_schema(migrated_database_url, "migrations_said") as fresh,
        caplog.at_level(logging.DEBUG, migrations.__name__),
    ):
        applied = asyncio.run(migrations.migrate_database(fresh))
        first_start = [r for r in caplog.records if r.name == migrations.__name__]
        caplog.clear()
        assert asyncio.run(migrations.migrate_database(fresh)) == []
        again = [r for r in caplog.records if r.name == migrations.__name__]
    names = [f"{migration.version:04d}_{migration.name}" for migration in applied]
    assert len(names) > 1 and names[0].startswith("0001_")
    said = [r.getMessage() for r in first_start if r.levelno >= logging.INFO]
    assert said == [f"applying {len(names)} migrations, {names[0]}..{names[-1]}"]
    each = [r.getMessage() for r in first_start if r.levelno == logging.DEBUG]
    assert each == [f"applying migration {name}" for name in names]
    assert [r.getMessage() for r in again if r.levelno >= logging.INFO] == []


def test_a_migration_that_takes_long_is_named_at_info(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each migration of a start said at DEBUG alone, one that works for
    long (an index over the whole log) is named at INFO once it has taken
    LONG_MIGRATION_SAID_AFTER: a start its operator sees waiting can be told
    from a hung one, and a failure that follows has its migration named."""
    monkeypatch.setattr(migrations, "LONG_MIGRATION_SAID_AFTER", 0.2)
    (tmp_path / "9999_a_column_more.sql").unlink()  # the fixture's: two of these instead
    (tmp_path / "9998_a_quick_one.sql").write_text("ALTER TABLE events ADD COLUMN quick text;\n")
    (tmp_path / "9999_a_long_rewrite.sql").write_text(
        "ALTER TABLE events ADD COLUMN noted text;\nSELECT pg_sleep(30);\n"
    )

    def said() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == migrations.__name__ and r.levelno == logging.INFO
        ]

    async def run() -> None:
        migrating = asyncio.create_task(migrations.migrate_database(url))
        try:
            deadline = time.monotonic() + 20
            while not any("9999_a_long_rewrite:" in line for line in said()):
                assert time.monotonic() < deadline and not migrating.done(), "said nothing"
                await asyncio.sleep(0.05)
        finally:
            migrating.cancel()  # the 30 s it would take are not waited for
            with contextlib.suppress(asyncio.CancelledError):
                await migrating

    with caplog.at_level(logging.INFO, migrations.__name__):
        asyncio.run(run())
    assert said()[0] == "applying 2 migrations, 9998_a_quick_one..9999_a_long_rewrite"
    assert said()[1].startswith("applying migration 9999_a_long_rewrite: at work for 0.2 s")


def test_a_migration_the_database_fails_is_named_before_the_start_s_error(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The start's one line of error says the database's message, not which
    migration it came from; and of several applied, none is named at INFO."""
    (tmp_path / "9999_a_column_more.sql").unlink()  # the fixture's: two of these instead
    (tmp_path / "9998_a_quick_one.sql").write_text("ALTER TABLE events ADD COLUMN quick text;\n")
    (tmp_path / "9999_a_broken_one.sql").write_text("ALTER TABLE no_such_table ADD x text;\n")
    with (
        caplog.at_level(logging.INFO, migrations.__name__),
        pytest.raises(psycopg.errors.UndefinedTable),
    ):
        asyncio.run(migrations.migrate_database(url))
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert said == ["migration 9999_a_broken_one failed; nothing of it was applied"]
    assert 9998 in _applied(url) and 9999 not in _applied(url)
