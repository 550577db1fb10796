"""Counting a tenant's rows: in every table, as an erasure must leave none; and its
events of one action."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql as psql


def tenant_tables(sql: psycopg.Connection[Any]) -> list[str]:
    """Every table with a tenant_id column (partitions are counted in their
    table), but the erasure receipts."""
    rows = sql.execute(
        "SELECT c.relname FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid"
        " WHERE a.attname = 'tenant_id' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        " AND c.relnamespace = 'public'::regnamespace AND c.relname <> 'tenant_erasures'"
        " ORDER BY 1"
    ).fetchall()
    return [name for (name,) in rows]


def rows_of(sql: psycopg.Connection[Any], tenant: str) -> dict[str, int]:
    counts = {}
    for table in tenant_tables(sql):
        query = psql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(
            psql.Identifier(table)
        )
        row = sql.execute(query, [tenant]).fetchone()
        assert row is not None
        counts[table] = row[0]
    return counts


def events_of_action(sql: psycopg.Connection[Any], tenant: str, action: str) -> int:
    """How many of the tenant's events in the log are of `action`."""
    row = sql.execute(
        "SELECT count(*) FROM events WHERE tenant_id = %s AND action = %s", [tenant, action]
    ).fetchone()
    assert row is not None
    return int(row[0])
