"""Numbered SQL migrations (migrations/NNNN_name.sql), applied in order at
start under an advisory lock, each in its own transaction. Running them again
applies nothing: applied versions are kept in schema_migrations, each with
the digest of its statements (from migration 0050): a start refuses a
database where one was applied with other statements than this release's
(ADR 0112), and one that lacks a migration lower than one it has (a hotfix
build's), unless its operator allows that start to apply it out of order.
Each start also creates the months of event partitions ahead that are
missing.

A migration's statements run for as long as they take, whatever the
owner's statement_timeout. It waits for each lock at most LOCK_TIMEOUT at a
time: every statement of the running processes on that table queues behind
its request, so one that waited behind a long reader (an Export, VerifyLog, a
check's validation) would stall every Record meanwhile. It gives up, rolls
back, and tries again a little later (as after a deadlock), `lock_attempts`
times in all, before the start fails saying so (ADR 0050)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Final

import psycopg

from ..config import MIGRATION_LOCK_ATTEMPTS
from .partitions import PARTITION_BOUNDS_DATESTYLE, create_ahead

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_lock key shared by every Sealtrail process ("sealtrai" in ASCII).
_LOCK_KEY = 0x7365616C74726169
_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
LOCK_TIMEOUT: Final = "2s"
# The migration that adds schema_migrations.digest: those before it in a
# first start are recorded without, then given theirs (ADR 0112).
DIGESTS_FROM: Final = 50
# Attempts at a migration by default (SEALTRAIL_MIGRATION_LOCK_ATTEMPTS):
# about two minutes in all; 0 waits for its locks without a limit, once.
ATTEMPTS: Final = MIGRATION_LOCK_ATTEMPTS
# How often a migrating session checks that its process is still there.
CLIENT_CHECK: Final = "1s"
# Seconds between attempts: the first, doubling up to the last.
FIRST_PAUSE: Final = 1.0
LONGEST_PAUSE: Final = 10.0

log = logging.getLogger(__name__)

# Seconds between tries for the migrations' lock while another session holds
# it, and between the log lines that say so.
LOCK_POLL: Final = 0.5
LOCK_NOTICE_EVERY: Final = 30.0
# Seconds a migration works before it is named at INFO: a start says its
# migrations in one line, each at DEBUG, and one that takes long (an index
# over the whole log) by name, so that a wait is not taken for a hang.
LONG_MIGRATION_SAID_AFTER: Final = 5.0
# The index of role names: roles are the cluster's, the migrations' lock each
# database's own.
_ROLE_NAMES: Final = "pg_authid_rolname_index"
# Of this database: pg_locks shows the whole cluster's, and another
# database's sessions may hold the same key (their own migrations).
_LOCK_HOLDER = (
    "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
    " AND classid = %s AND objid = %s AND objsubid = 1 LIMIT 1"
)


# The service's roles may create nothing in the schema: a table of their own
# there, with a trigger, would run that trigger as the owner when an erasure
# deletes the tenant's rows (the erasure also takes only the log owner's
# tables; this keeps the schema closed as well). PUBLIC (every role) is asked
# of too: PostgreSQL 13 and 14 grant it CREATE on `public`, and on a cluster's
# first start the service's roles do not exist yet (migration 0007 creates
# them), so the check passed, to refuse every start after. So are the roles
# that are members of theirs (the login of SEALTRAIL_DATABASE_URL), which
# create before they assume either (helper-203): but for the migrating user
# (with a single URL, the login owns the tables) and superusers.
_SERVICE_ROLES: Final = "('sealtrail_service', 'sealtrail_system')"
_ROLES_THAT_MAY_CREATE = (
    "SELECT 'PUBLIC', current_schema() FROM pg_catalog.pg_namespace AS n,"
    " aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) AS a"
    " WHERE n.nspname = current_schema() AND a.grantee = 0 AND a.privilege_type = 'CREATE'"
    " UNION ALL"
    " (SELECT rolname, current_schema() FROM pg_catalog.pg_roles"
    f" WHERE rolname IN {_SERVICE_ROLES}"
    " AND has_schema_privilege(oid, current_schema(), 'CREATE') ORDER BY rolname)"
    " UNION ALL"
    " (SELECT r.rolname, current_schema() FROM pg_catalog.pg_roles AS r"
    f" WHERE r.rolname NOT IN {_SERVICE_ROLES} AND r.rolname <> current_user"
    " AND NOT r.rolsuper AND EXISTS (SELECT FROM pg_catalog.pg_roles AS s"
    f"   WHERE s.rolname IN {_SERVICE_ROLES} AND pg_has_role(r.oid, s.oid, 'MEMBER'))"
    " AND has_schema_privilege(r.oid, current_schema(), 'CREATE') ORDER BY r.rolname)"
)


class UnsafeSchema(Exception):
    """The service's roles may create objects in the tables' schema."""


class NotUtf8(Exception):
    """The database's encoding is not UTF8."""


class MigrationBlocked(Exception):
    """A migration could not lock its tables in ATTEMPTS tries."""


class NewerSchema(Exception):
    """The database holds migrations this release does not have: a newer one
    applied them, and this code would ignore what they changed."""


class MigrationDiffers(Exception):
    """A migration of the database was applied with other statements than
    this release's migration of its number (ADR 0112)."""


class MigrationFiles(Exception):
    """A migration file of this build would never be applied, or not alone."""


class MigrationsOutOfOrder(Exception):
    """The database lacks migrations of this release lower than one it has,
    and the start was not allowed to apply them after it."""


class OlderSchema(Exception):
    """The database lacks migrations of this release, and only a fresh one
    was to be migrated: an operator's command leaves the servers' schema to
    their release."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path


# What the digest sees of a migration's text (as PostgreSQL's lexer reads
# it): literals, quoted names and dollar-quoted bodies whole; comments and
# whitespace outside them not at all; words and single characters.
_SQL_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<comment>--[^\n]*)
    |(?P<block>/\*)
    |(?P<dollar>\$(?:[^\W\d]\w*)?\$)
    |[Ee]'(?:[^'\\]|\\.|'')*'
    |'(?:[^']|'')*'
    |"(?:[^"]|"")*"
    |[\w$]+
    |.""",
    re.VERBOSE | re.DOTALL,
)


def migration_digest(text: bytes) -> str:
    """SHA-256, in hex, of a migration's statements: its tokens, one space
    between each, without its comments and whatever its layout. A comment
    corrected changes no schema: every start after it would have been
    refused (ADR 0112). Whatever is quoted counts whole, comment-like or not."""
    sql, tokens, at = text.decode("utf-8"), [], 0
    while at < len(sql):
        match = _SQL_TOKEN.match(sql, at)
        assert match is not None  # `.` matches any character
        at = match.end()
        if match["space"] or match["comment"]:
            continue
        if match["block"]:  # nested, as PostgreSQL's are
            depth = 1
            while depth and at < len(sql):
                if sql.startswith("/*", at):
                    depth, at = depth + 1, at + 2
                elif sql.startswith("*/", at):
                    depth, at = depth - 1, at + 2
                else:
                    at += 1
            continue
        if match["dollar"]:  # a body, to its closing tag
            tag = match["dollar"]
            end = sql.find(tag, at)
            at = len(sql) if end < 0 else end + len(tag)
            tokens.append(sql[match.start() : at])
            continue
        tokens.append(match[0])
    return hashlib.sha256(" ".join(tokens).encode("utf-8")).hexdigest()


def available_migrations() -> list[Migration]:
    """This release's migrations, in order. A file of the directory that
    would never be applied, or not alone, is refused (MigrationFiles): one
    named otherwise than NNNN_name.sql was skipped, and of two that share a
    number (two branches that each took the next free one, merged), one was
    skipped for good on a database that had the other, without a word."""
    found, strays = [], []
    for path in MIGRATIONS_DIR.iterdir():
        match = _FILE_NAME.fullmatch(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
        elif path.suffix == ".sql":
            strays.append(path.name)
    found.sort(key=lambda m: (m.version, m.name))
    shared = [
        f"{a.path.name} and {b.path.name}" for a, b in pairwise(found) if a.version == b.version
    ]
    if strays:
        raise MigrationFiles(
            f"this build's migration file{'s' * (len(strays) > 1)} {', '.join(sorted(strays))}"
            " would never be applied: a migration is named NNNN_name.sql (four digits, then"
            " lowercase letters, digits and _). The build is broken (a file added by hand?):"
            " rename it, or run a release's build"
        )
    if shared:
        raise MigrationFiles(
            f"this build's migrations {'; '.join(shared)} share a number: a database that"
            " has either would never be given the other. The build is broken (two branches'"
            " migrations merged?): give one the next free number, or run a release's build"
        )
    return found


async def migrate_database(
    url: str, *, lock_attempts: int = ATTEMPTS, only_fresh: bool = False, out_of_order: bool = False
) -> list[Migration]:
    """Connect to `url` (as the owner: ADR 0013) and apply what is missing.
    The session checks that its client is still there every CLIENT_CHECK: a
    database's session learns of its client's end only when it answers, and
    one whose process was killed mid-migration (a start probe's SIGKILL)
    worked the migration on to its end under the migrations' lock, which the
    next start waited for (as "another process migrating") before it did the
    same work again (helper-285). PostgreSQL 14 and later."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if conn.info.server_version >= 140000:
            await conn.execute(
                "SELECT set_config('client_connection_check_interval', %s, false)", [CLIENT_CHECK]
            )
        return await migrate(
            conn, lock_attempts=lock_attempts, only_fresh=only_fresh, out_of_order=out_of_order
        )


async def _has_migrations_table(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the database of `conn` has a schema_migrations table, whoever
    may read it."""
    cursor = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cursor.fetchone()
    return bool(row and row[0])


async def schema_is_current(url: str) -> bool:
    """Whether the database at `url` holds this release's migrations and no
    other, read without a change by any user that may read schema_migrations
    (the service's login: migration 0042). An operator's command then needs
    no owner's URL: every one of them ran the migrations as the owner first,
    which the service's login alone may not, and was refused (helper-203).
    Refuses a database a newer release migrated (NewerSchema), or not in
    UTF8. False where the table is missing, unreadable or lacks a migration:
    `migrate` then decides, under the migrations' lock (a start may be
    migrating meanwhile)."""
    available_migrations()  # a broken build's files refused before anything is read
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await _refuse_another_encoding(conn)
        if not await _has_migrations_table(conn):
            return False
        try:
            cursor = await conn.execute(_APPLIED)
        except psycopg.errors.InsufficientPrivilege:  # before 0042: the owner's alone
            return False
        rows = await cursor.fetchall()
    applied = {version: name for version, name, _ in rows}
    _refuse_newer_schema(applied)
    _refuse_other_statements(rows)
    return applied.keys() == {migration.version for migration in available_migrations()}


# Which migrations were applied, and the digest each was applied with: one
# query, whether migration 0050 made the column yet or not.
_APPLIED = "SELECT version, name, to_jsonb(m) ->> 'digest' FROM schema_migrations AS m"


async def has_a_schema(url: str) -> bool:
    """Whether a migration was ever applied to the database at `url`, read
    without a change by any user: an operator's command that sets nothing
    up refuses a database with none (most likely not the servers')."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if not await _has_migrations_table(conn):
            return False
        try:
            cursor = await conn.execute("SELECT EXISTS (SELECT FROM schema_migrations)")
        except psycopg.errors.InsufficientPrivilege:  # before 0042: the owner's alone
            return True
        row = await cursor.fetchone()
    return bool(row and row[0])


async def migrate(
    conn: psycopg.AsyncConnection[Any],
    *,
    lock_attempts: int = ATTEMPTS,
    only_fresh: bool = False,
    out_of_order: bool = False,
) -> list[Migration]:
    """Apply every migration not yet applied; return those applied now. With
    `only_fresh`, only on a database with none applied yet: one that an older
    release migrated is refused (OlderSchema), before any change. One that
    lacks a migration lower than one it has is refused (MigrationsOutOfOrder),
    before any change, unless `out_of_order`: each is then applied, and said
    so in the log."""
    applied_now = []
    available_migrations()  # a broken build's files refused before any change
    await _take_the_lock(conn)
    try:
        # Before any change: a start it refuses leaves the database as it was.
        await _refuse_unsafe_schema(conn)
        await _refuse_another_encoding(conn)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute(_APPLIED)
        rows = await cursor.fetchall()
        applied = {version: name for version, name, _ in rows}
        _refuse_newer_schema(applied)
        _refuse_other_statements(rows)
        skipped = _skipped(applied)
        if skipped and not out_of_order:
            raise _out_of_order(skipped, applied)
        if only_fresh and applied:
            _refuse_older_schema(applied)
        digests = DIGESTS_FROM in applied
        to_apply = [m for m in available_migrations() if m.version not in applied]
        _say_what_is_applied(to_apply)
        for migration in to_apply:
            if migration in skipped:
                log.warning(
                    "applying migration %04d_%s out of order, after %s"
                    " (SEALTRAIL_MIGRATIONS_OUT_OF_ORDER)",
                    migration.version,
                    migration.name,
                    _highest(applied),
                )
            if len(to_apply) > 1:  # one alone was named in the line before
                log.debug("applying migration %s", _named(migration))
            # 0050's own row is written after its statements made the column.
            digests = digests or migration.version == DIGESTS_FROM
            await _apply_said(conn, migration, lock_attempts, digests=digests)
            applied_now.append(migration)
        if digests:
            before = [version for version, _, digest in rows if digest is None]
            await _record_digests(conn, before, applied_now)
        # Months of events ahead (0009); the retention pass keeps this up.
        await create_ahead(conn, now=None)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return applied_now


def _named(migration: Migration) -> str:
    return f"{migration.version:04d}_{migration.name}"


def _say_what_is_applied(to_apply: list[Migration]) -> None:
    """The migrations a start is about to apply, in one line at INFO, before
    the first: each was a line of its own at INFO, 63 of them on a first
    start above its development token. Said before, not after: a start
    that said nothing of them until every one was applied was minutes of
    silence over a large log, which its operator could not tell from a
    hang. None to apply, nothing said."""
    if len(to_apply) == 1:
        log.info("applying migration %s", _named(to_apply[0]))
    elif to_apply:
        log.info(
            "applying %d migrations, %s..%s",
            len(to_apply),
            _named(to_apply[0]),
            _named(to_apply[-1]),
        )


async def _apply_said(
    conn: psycopg.AsyncConnection[Any], migration: Migration, attempts: int, *, digests: bool
) -> None:
    """`migration` applied (`_apply`), named at INFO once it has worked for
    LONG_MIGRATION_SAID_AFTER seconds, and at ERROR if the database fails
    it: its failure's one line (the start's `Error: ...`) names no migration.
    The database's error is the caller's to say (it may quote a row)."""
    noticed = asyncio.get_running_loop().call_later(
        LONG_MIGRATION_SAID_AFTER,
        log.info,
        "applying migration %s: at work for %g s",
        _named(migration),
        LONG_MIGRATION_SAID_AFTER,
    )
    try:
        await _apply(conn, migration, attempts, digests=digests)
    except psycopg.Error:
        log.error("migration %s failed; nothing of it was applied", _named(migration))
        raise
    finally:
        noticed.cancel()


async def has_table(conn: psycopg.AsyncConnection[Any], name: str) -> bool:
    """Whether the schema holds table `name`: what a start checks against the
    database before migrating is there only once a migration made it."""
    cursor = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    row = await cursor.fetchone()
    return bool(row and row[0])


async def has_column(conn: psycopg.AsyncConnection[Any], table: str, column: str) -> bool:
    """Whether table `table` has column `column` (as `has_table`)."""
    cursor = await conn.execute(
        "SELECT FROM pg_catalog.pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
        [table, column],
    )
    return await cursor.fetchone() is not None


async def _record_digests(
    conn: psycopg.AsyncConnection[Any], before: list[int], applied_now: list[Migration]
) -> None:
    """The digests of the migrations recorded without one: those applied
    before migration 0050, now or by an earlier release. Of these, nothing
    better is known than that they are this release's: they are recorded as
    they are now (ADR 0112). One statement, and none when there are none."""
    known = {migration.version: migration for migration in available_migrations()}
    earlier = [known[version] for version in before if version in known]
    missing = earlier + [m for m in applied_now if m.version < DIGESTS_FROM]
    if not missing:
        return
    await conn.execute(
        "UPDATE schema_migrations AS m SET digest = d.digest"
        " FROM unnest(%s::integer[], %s::text[]) AS d (version, digest)"
        " WHERE m.version = d.version AND m.digest IS NULL",
        [[m.version for m in missing], [migration_digest(m.path.read_bytes()) for m in missing]],
    )
    if earlier:
        log.info(
            "recorded the digests of %d migrations applied before digests were kept,"
            " as this release has them (ADR 0112)",
            len(earlier),
        )


async def _apply_once(
    conn: psycopg.AsyncConnection[Any], migration: Migration, attempts: int, *, digests: bool
) -> None:
    async with conn.transaction():
        # Lock timeout 0: no limit, whatever the role's or database's. And no
        # statement timeout: a DBA's guard against runaway queries cut short
        # a migration's own work that outlasted it (an index built over the
        # whole log), at every start, and ended its lock waits before
        # LOCK_TIMEOUT, for good; they are bounded by the lock timeout alone.
        await conn.execute(
            "SELECT set_config('lock_timeout', %s, true),"
            " set_config('statement_timeout', '0', true)",
            [LOCK_TIMEOUT if attempts else "0"],
        )
        # 0009 creates the first months of events (PARTITION_BOUNDS_DATESTYLE).
        await conn.execute("SELECT set_config('DateStyle', %s, true)", [PARTITION_BOUNDS_DATESTYLE])
        text = migration.path.read_bytes()
        await conn.execute(text)
        if digests:  # migration 0050 made the column
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, digest) VALUES (%s, %s, %s)",
                [migration.version, migration.name, migration_digest(text)],
            )
        else:
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                [migration.version, migration.name],
            )


async def _take_the_lock(conn: psycopg.AsyncConnection[Any]) -> None:
    """The migrations' lock, waited for as long as another session holds it
    (another process migrating, however long that takes), said in the log
    every LOCK_NOTICE_EVERY seconds with the holder's pid: a process frozen
    while holding it held every start up without a word (helper-125)."""
    waited = 0.0
    while True:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_KEY])
        row = await cursor.fetchone()
        if row and row[0]:
            return
        if waited % LOCK_NOTICE_EVERY == 0:
            cursor = await conn.execute(_LOCK_HOLDER, [_LOCK_KEY >> 32, _LOCK_KEY & 0xFFFFFFFF])
            holder = await cursor.fetchone()
            log.warning(
                "migrations: waiting for their lock, held by the database session of pid %s"
                " (another process migrating; pg_stat_activity shows it) for %g s",
                holder[0] if holder else "?",
                waited,
            )
        await asyncio.sleep(LOCK_POLL)
        waited += LOCK_POLL


async def _apply(
    conn: psycopg.AsyncConnection[Any], migration: Migration, attempts: int, *, digests: bool
) -> None:
    """`migration` applied in one transaction, tried again while a table it
    locks is held by others, or after a deadlock (see the module's
    docstring); with 0 attempts, once, waiting for its locks without a limit."""
    pause = FIRST_PAUSE
    for attempt in range(1, max(attempts, 1) + 1):
        try:
            try:
                await _apply_once(conn, migration, attempts, digests=digests)
            except psycopg.errors.UniqueViolation as error:
                if error.diag.constraint_name != _ROLE_NAMES:
                    raise
                # Another database of the cluster, starting at the same moment,
                # created the roles first (0007): they exist now, as this finds.
                log.info(
                    "migration %04d_%s: the cluster's roles were created meanwhile; again",
                    migration.version,
                    migration.name,
                )
                await _apply_once(conn, migration, attempts, digests=digests)
            return
        except (
            psycopg.errors.LockNotAvailable,
            psycopg.errors.DeadlockDetected,
            psycopg.errors.SerializationFailure,
        ) as error:
            if attempt >= attempts:
                raise MigrationBlocked(
                    f"migration {migration.version:04d}_{migration.name} could not lock its"
                    f" tables in {attempt} attempt{'s' * (attempt > 1)}"
                    f" ({error.diag.message_primary}): a long transaction or VACUUM holds"
                    " them (pg_stat_activity shows which). Nothing of it was applied; start"
                    " again once that has ended"
                    + (
                        ", or set SEALTRAIL_MIGRATION_LOCK_ATTEMPTS=0 to wait for it"
                        " (docs/database.md)"
                        if attempts
                        else ""
                    )
                ) from error
            log.warning(
                "migration %04d_%s: its tables are busy (%s); trying again in %g s"
                " (attempt %d of %d)",
                migration.version,
                migration.name,
                error.diag.message_primary,
                pause,
                attempt,
                attempts,
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)


def _refuse_newer_schema(applied: dict[int, str]) -> None:
    """Older code on a newer schema ran as if it were its own: writing what
    the newer migrations' code writes otherwise (a purge summary unsealed),
    ignoring what they added (the deployment's purge schedule), without a
    word (helper-157). A rollback over a schema is not supported: the start
    stops, before any change (docs/database.md)."""
    known = {migration.version for migration in available_migrations()}
    unknown = sorted(version for version in applied if version not in known)
    if unknown:
        names = ", ".join(f"{version:04d}_{applied[version]}" for version in unknown)
        raise NewerSchema(
            f"the database was migrated by a newer release: this one does not know its"
            f" migration{'s' * (len(unknown) > 1)} {names}. Going back to an older release"
            " over a newer schema is not supported: run that release, or a newer one"
            " (docs/database.md)"
        )


def _refuse_other_statements(rows: list[tuple[Any, ...]]) -> None:
    """Versions alone took a database migrated by a build whose migration of
    some number differed (a fork's, a hotfix branch's, a file changed by
    hand) for this release's: the server ran on a schema other than its
    code expects, without a word. Checked from the rows already read (no
    query more), where a digest was recorded (ADR 0112)."""
    known = {migration.version: migration for migration in available_migrations()}
    for version, _, recorded in sorted(rows):
        migration = known.get(version)
        if recorded is None or migration is None:
            continue
        expected = migration_digest(migration.path.read_bytes())
        if recorded != expected:
            raise MigrationDiffers(
                f"migration {version:04d}_{migration.name} was applied to this database with"
                f" other statements than this release's (digest {recorded}; this release's"
                f" {expected}): another build's migration of that number (a fork's, a hotfix"
                " branch's) or a file changed by hand made a schema this code does not"
                " expect. Run the build that applied it, or restore a backup taken before"
                " it; nothing was changed (docs/operations.md, ADR 0112)"
            )


def _skipped(applied: dict[int, str]) -> list[Migration]:
    """This release's migrations the database lacks though it has one of a
    higher number: a hotfix build that took a later migration alone."""
    if not applied:
        return []
    highest = max(applied)
    return [m for m in available_migrations() if m.version < highest and m.version not in applied]


def _highest(applied: dict[int, str]) -> str:
    highest = max(applied)
    return f"{highest:04d}_{applied[highest]}"


def _out_of_order(skipped: list[Migration], applied: dict[int, str]) -> MigrationsOutOfOrder:
    """A lower migration applied after a higher one was applied at the next
    start without a word (helper-331). Its authors wrote it to run before
    every later one, on the schema those before it make, and tested it so:
    whether it may run after is the operator's call, as with Flyway's
    outOfOrder."""
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in skipped)
    many = len(skipped) > 1
    return MigrationsOutOfOrder(
        f"the database lacks migration{'s' * many} {names} of this release, though it has"
        f" {_highest(applied)} (a hotfix build that took a later migration alone?):"
        f" applying {'them' if many else 'it'} after would be out of the order"
        f" {'they were' if many else 'it was'} written and tested for. Compare"
        f" {'them' if many else 'it'} with the later ones; if {'they do' if many else 'it does'}"
        " not depend on coming first, start this release once with"
        " SEALTRAIL_MIGRATIONS_OUT_OF_ORDER=true, else restore a backup taken before the"
        " hotfix build migrated; nothing was changed (docs/operations.md)"
    )


def _refuse_older_schema(applied: dict[int, str]) -> None:
    """A newer release's operator command (`token list`, run from an
    operator's box) migrated the deployment's database, and its servers, of
    the older release, then refused every restart (helper-170)."""
    missing = [m for m in available_migrations() if m.version not in applied]
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise OlderSchema(
            f"the database was migrated by an older release: it lacks this one's"
            f" migration{'s' * (len(missing) > 1)} {names}. This command does not migrate"
            " it, so that the deployment's servers keep starting: upgrade them first (run"
            " this release's `sealtrail-server serve` first), or run the command of their"
            " release (docs/database.md)"
        )


async def _refuse_unsafe_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    cursor = await conn.execute(_ROLES_THAT_MAY_CREATE)
    rows = await cursor.fetchall()
    if rows:
        roles, schema = " and ".join(str(row[0]) for row in rows), rows[0][1]
        raise UnsafeSchema(
            f"{roles} may create objects in schema {schema}, where the log lives: a table"
            " of theirs could run code as the tables' owner. As the schema's owner or a"
            f" superuser: REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC (and from any role"
            f" that grants it to them){await _through_database_ownership(conn, rows)};"
            " see docs/database.md"
        )


async def _through_database_ownership(
    conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]]
) -> str:
    """What lifts it when a role that may create owns the database, and the
    schema belongs to pg_database_owner (`public` since PostgreSQL 15): REVOKE
    ... FROM PUBLIC left its grant, and the start was refused again (helper-210)."""
    cursor = await conn.execute(
        "SELECT pg_get_userbyid(d.datdba), n.nspname"
        " FROM pg_catalog.pg_database AS d, pg_catalog.pg_namespace AS n"
        " WHERE d.datname = current_database() AND n.nspname = current_schema()"
        " AND pg_get_userbyid(n.nspowner) = 'pg_database_owner'"
    )
    row = await cursor.fetchone()
    if row is None or row[0] not in {str(role) for role, _ in rows}:
        return ""
    owner, schema = row
    return (
        f". {owner} owns the database, and {schema} belongs to pg_database_owner: REVOKE"
        f" CREATE ON SCHEMA {schema} FROM pg_database_owner, or give the database to the"
        " tables' owner (ALTER DATABASE ... OWNER TO)"
    )


async def _refuse_another_encoding(conn: psycopg.AsyncConnection[Any]) -> None:
    """The log's text is Unicode. In an SQL_ASCII database (what `createdb`
    makes on a cluster initialised under LANG=C) psycopg reads text as bytes,
    and `serve` ended in a TypeError's traceback from the partitions' code
    (helper-203); another encoding would refuse characters events hold."""
    # As bytes: in SQL_ASCII, the text itself would come back as bytes.
    cursor = await conn.execute("SELECT convert_to(current_setting('server_encoding'), 'UTF8')")
    row = await cursor.fetchone()
    encoding = bytes(row[0]).decode("ascii", "replace") if row else "?"
    if encoding != "UTF8":
        raise NotUtf8(
            f"the database's encoding is {encoding}; Sealtrail needs UTF8: create the database"
            " with ENCODING 'UTF8' and a Unicode-aware LC_CTYPE (TEMPLATE template0), and"
            " restore a dump of this one into it if it holds anything (docs/database.md)"
        )
