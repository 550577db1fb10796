"""Numbered SQL migrations (migrations/NNNN_name.sql), applied in order at
start under an advisory lock, each in its own transaction. Running them again
applies nothing: applied versions are kept in schema_migrations. Each start
also creates the months of event partitions ahead that are missing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from .partitions import create_ahead

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_lock key shared by every Sealtrail process ("sealtrai" in ASCII).
_LOCK_KEY = 0x7365616C74726169
_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


# The service's roles may create nothing in the schema: a table of their own
# there, with a trigger, would run that trigger as the owner when an erasure
# deletes the tenant's rows (the erasure also takes only the log owner's
# tables; this keeps the schema closed as well). PostgreSQL 15 and later
# grant PUBLIC no CREATE on `public`; 13 and 14 do.
_ROLES_THAT_MAY_CREATE = (
    "SELECT rolname, current_schema() FROM pg_catalog.pg_roles"
    " WHERE rolname IN ('sealtrail_service', 'sealtrail_system')"
    " AND has_schema_privilege(oid, current_schema(), 'CREATE') ORDER BY rolname"
)


class UnsafeSchema(Exception):
    """The service's roles may create objects in the tables' schema."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path


def available_migrations() -> list[Migration]:
    found = []
    for path in MIGRATIONS_DIR.iterdir():
        match = _FILE_NAME.fullmatch(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
    return sorted(found, key=lambda m: m.version)


async def migrate_database(url: str) -> list[Migration]:
    """Connect to `url` (as the owner: ADR 0013) and apply what is missing."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await migrate(conn)


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[Migration]:
    """Apply every migration not yet applied; return those applied now."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # Before any change: a start it refuses leaves the database as it was.
        await _refuse_unsafe_schema(conn)
        cursor = await conn.execute("SELECT version FROM schema_migrations")
        applied = {row[0] for row in await cursor.fetchall()}
        for migration in available_migrations():
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.path.read_bytes())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    [migration.version, migration.name],
                )
            applied_now.append(migration)
        # Months of events ahead (0009); the retention pass keeps this up.
        await create_ahead(conn, now=None)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return applied_now


async def _refuse_unsafe_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    cursor = await conn.execute(_ROLES_THAT_MAY_CREATE)
    rows = await cursor.fetchall()
    if rows:
        roles, schema = " and ".join(str(row[0]) for row in rows), rows[0][1]
        raise UnsafeSchema(
            f"{roles} may create objects in schema {schema}, where the log lives: a table"
            " of theirs could run code as the tables' owner. As the schema's owner or a"
            f" superuser: REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC (and from any role"
            " that grants it to them); see docs/database.md"
        )
