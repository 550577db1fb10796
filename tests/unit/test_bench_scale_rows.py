"""The scale figures' loader (bench/scale.py) writes its rows as the appender
would, the columns derived from each record included: the figures compare
Query with the same SQL run directly on those rows."""

from __future__ import annotations

import uuid

import psycopg

from bench.scale import load_tenant


def test_the_scale_loader_writes_the_columns_the_appender_derives(
    migrated_database_url: str,
) -> None:
    """It left `ip` and `search_names` empty, though every record it wrote
    had a context.ip and a resource name: its rows were narrower than the
    service's."""
    tenant = f"scale-{uuid.uuid4().hex[:8]}"
    load_tenant(migrated_database_url, tenant, 50)  # checks each row as it loads
    with psycopg.connect(migrated_database_url) as conn:
        filled = conn.execute(
            "SELECT count(*) FROM events WHERE tenant_id = %s"
            " AND host(ip) = '203.0.113.42' AND search_names = 'Q3 board deck.pdf'",
            [tenant],
        ).fetchone()
    assert filled == (50,)
