"""The schema can be distributed by tenant (docs/scaling.md): every table but the
global ones has a tenant_id, every unique key of a tenant's table includes it
(Citus enforces uniqueness per shard, so a unique key without the distribution
column cannot be distributed), and every foreign key between tenants' tables
joins on it (colocated rows only). Checked in the catalog, so a table or index
added by a later migration is held to the same rule."""

from __future__ import annotations

from typing import Any

import psycopg

# Tables with no tenant: they become Citus reference tables.
GLOBAL_TABLES = {
    "schema_migrations",
    "signing_keys",
    "deployment_markers",
    "deployment_jobs",
    "deployment_sinks",
}
# Unique keys that do not name the tenant, each with its way to Citus in docs/scaling.md.
TENANTLESS_UNIQUE_KEYS = {"api_tokens_secret"}  # a token's secret finds its tenant

_TABLES = (
    "SELECT c.relname, bool_or(a.attname = 'tenant_id')"
    " FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0"
    " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
    " AND c.relnamespace = 'public'::regnamespace GROUP BY c.relname"
)
_UNIQUE_KEYS = (
    "SELECT t.relname, i.relname, array_agg(a.attname ORDER BY k.n)"
    " FROM pg_index AS x JOIN pg_class AS t ON t.oid = x.indrelid"
    " JOIN pg_class AS i ON i.oid = x.indexrelid"
    " CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n)"
    " JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum = k.attnum"
    " WHERE x.indisunique AND NOT t.relispartition AND t.relnamespace = 'public'::regnamespace"
    " GROUP BY t.relname, i.relname, x.indexrelid"
)
_FOREIGN_KEYS = (
    # Each key's column pairs, as "referencing=referenced".
    "SELECT f.conname, f.confrelid::regclass::text,"
    " array_agg(a.attname || '=' || r.attname ORDER BY k.n)"
    " FROM pg_constraint AS f JOIN pg_class AS c ON c.oid = f.conrelid"
    " CROSS JOIN LATERAL unnest(f.conkey, f.confkey) WITH ORDINALITY AS k(col, ref, n)"
    " JOIN pg_attribute AS a ON a.attrelid = f.conrelid AND a.attnum = k.col"
    " JOIN pg_attribute AS r ON r.attrelid = f.confrelid AND r.attnum = k.ref"
    " WHERE f.contype = 'f' AND NOT c.relispartition AND f.connamespace = 'public'::regnamespace"
    " GROUP BY f.oid, f.conname, f.confrelid"
)


def test_every_table_but_the_global_ones_has_a_tenant(sql: psycopg.Connection[Any]) -> None:
    tables = dict(sql.execute(_TABLES).fetchall())
    without = {name for name, has_tenant in tables.items() if not has_tenant}
    assert without == GLOBAL_TABLES
    assert {"events", "chain_heads", "sinks", "alert_rules"} <= tables.keys() - without


def test_every_unique_key_of_a_tenants_table_names_the_tenant_first(
    sql: psycopg.Connection[Any],
) -> None:
    keys = sql.execute(_UNIQUE_KEYS).fetchall()
    tenant_keys = [key for key in keys if key[0] not in GLOBAL_TABLES]
    assert len(tenant_keys) > 10
    offending = {
        index
        for _, index, columns in tenant_keys
        if columns[0] != "tenant_id" and index not in TENANTLESS_UNIQUE_KEYS
    }
    assert offending == set()
    # The exceptions are still there (or this list should shrink).
    assert {index for _, index, _ in tenant_keys} >= TENANTLESS_UNIQUE_KEYS


def test_every_foreign_key_between_tenants_tables_joins_on_the_tenant(
    sql: psycopg.Connection[Any],
) -> None:
    keys = sql.execute(_FOREIGN_KEYS).fetchall()
    between_tenants = {
        name: pairs for name, referenced, pairs in keys if referenced not in GLOBAL_TABLES
    }
    assert len(between_tenants) >= 3  # sinks' and alert rules' dependent tables
    assert {
        name for name, pairs in between_tenants.items() if "tenant_id=tenant_id" not in pairs
    } == set()
