"""How PostgreSQL planned what a component ran (ADR 0032). psycopg prepares a
statement on its sixth run on a connection, counting runs per SQL text and
parameter types (a NULL-only array is of no type, so one text can make two
statements); `pg_prepared_statements` counts, for each, the runs on its generic
plan and those on a plan made for the run's values. Give the component a
database of one connection, and what it ran is what that connection reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg import sql

from sealtrail_server.store.database import Connection, Database
from tests.service_login import service_login_url

# Runs that make sure psycopg has prepared a statement and run it prepared.
RUNS = 12


@dataclass(frozen=True)
class Prepared:
    name: str
    statement: str
    generic_plans: int
    custom_plans: int

    @property
    def planned_once(self) -> bool:
        """Every run it made prepared used its generic plan."""
        return self.generic_plans > 0 and self.custom_plans == 0


@asynccontextmanager
async def one_connection_database(owner_url: str) -> AsyncIterator[Database]:
    """A Database of one pooled connection, as the service's login role."""
    db = await Database.open(service_login_url(owner_url), min_size=1, max_size=1)
    try:
        yield db
    finally:
        await db.close()


async def prepared_statements(db: Database, tenant_id: str) -> list[Prepared]:
    """The statements prepared on the connection of `db` (one_connection_database)."""
    async with db.connection(tenant_id) as conn:
        cursor = await conn.execute(
            "SELECT name, statement, generic_plans, custom_plans FROM pg_prepared_statements"
        )
        return [Prepared(str(n), str(s), int(g), int(c)) for n, s, g, c in await cursor.fetchall()]


def the_one(prepared: list[Prepared], marker: str) -> Prepared:
    """The one prepared statement whose text holds `marker`."""
    [found] = [p for p in prepared if marker in p.statement]
    return found


async def generic_plan(conn: Connection, prepared: Prepared, *args: object) -> str:
    """The plan `prepared` runs on with `args`, as EXPLAIN shows it, on `conn`:
    a checkout with generic_plans=True, of the database that prepared it."""
    execute = sql.SQL("EXPLAIN EXECUTE {}({})").format(
        sql.Identifier(prepared.name), sql.SQL(", ").join(map(sql.Literal, args))
    )
    cursor = await conn.execute(execute)
    return "\n".join(row[0] for row in await cursor.fetchall())
