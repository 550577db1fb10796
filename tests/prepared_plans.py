"""How PostgreSQL planned what a component ran (ADR 0032). psycopg prepares a
statement on its sixth run on a connection; `pg_prepared_statements` counts,
for each, the runs on its generic plan and those on a plan made for the run's
values. Give the component a database of one connection, and what it ran is
what that connection reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sealtrail_server.store.database import Database
from tests.service_login import service_login_url

# Runs that make sure psycopg has prepared a statement and run it prepared.
RUNS = 12


@dataclass(frozen=True)
class Prepared:
    statement: str
    generic_plans: int
    custom_plans: int


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
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
        )
        return [Prepared(str(text), int(g), int(c)) for text, g, c in await cursor.fetchall()]


def the_one(prepared: list[Prepared], marker: str) -> Prepared:
    """The one prepared statement whose text holds `marker`."""
    [found] = [p for p in prepared if marker in p.statement]
    return found
