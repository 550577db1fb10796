"""The bench's purge figure (bench/retention.py) times the purge of its own
tenant and nothing else: the rate it gives is of purge work only."""

from __future__ import annotations

import uuid

import psycopg

from bench import retention


def test_the_purge_figure_purges_its_own_tenant_and_no_other(migrated_database_url: str) -> None:
    """It ran a whole pass of the purge job: every tenant whose policy had
    expired events was purged inside its timing (another round's, or on
    SEALTRAIL_BENCH_DATABASE_URL anyone's), and the pass's upkeep (the
    months ahead created, emptied ones dropped) was billed to the figure."""
    other, mine = (f"bench-purge-{uuid.uuid4().hex[:8]}" for _ in range(2))
    retention.load_expired(migrated_database_url, other, 20)
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO retention_policies (tenant_id, default_days) VALUES (%s, %s)",
            [other, retention.POLICY_DAYS],
        )
    retention.load_expired(migrated_database_url, mine, 30)
    notes: dict[str, object] = {}
    assert retention.purge(migrated_database_url, mine)(notes) == 30
    retention.check_purge(migrated_database_url, mine, 30)(notes, 30)  # its tombstones
    with psycopg.connect(migrated_database_url) as conn:
        left = conn.execute(
            "SELECT tenant_id, count(*) FROM events WHERE tenant_id IN (%s, %s) GROUP BY tenant_id",
            [other, mine],
        ).fetchall()
    assert left == [(other, 20)]
