"""Issue 7's purge figure: the retention purge (server code, run here against
the bench's database as its owner) removing a tenant's expired events, beside
its baseline, plain batched DELETEs of the same number of equivalent rows.
What the purge adds is what keeps the log verifiable: each event's leaf moved
to a tombstone in the same statement, and the tenant's policy row locked per
batch so a legal hold stops it."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from sealtrail_server.domain.purge_summaries import SummarySeal
from sealtrail_server.retention.purger import DEFAULT_BATCH_EVENTS, SCAN_WINDOW_BATCHES
from sealtrail_server.retention.tenant_pass import TenantPurge, purge_tenant
from sealtrail_server.store.appender import _COPY_EVENTS as COPY_EVENTS

from .events import RowFactory
from .integrity import Work
from .phases import Check, FigureFailed

AGE_DAYS = 400  # old enough for a 365-day policy
POLICY_DAYS = 365
_LOAD_BATCH = 10_000


def load_expired(database_url: str, tenant: str, events: int) -> None:
    """`events` rows of `tenant`, received AGE_DAYS ago, written as the appender
    writes them (COPY of equivalent rows)."""
    past = (datetime.now(UTC) - timedelta(days=AGE_DAYS)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows = RowFactory(tenant, f"purge-{tenant}")
    with psycopg.connect(database_url, autocommit=True) as conn:
        for start in range(0, events, _LOAD_BATCH):
            with conn.transaction(), conn.cursor().copy(COPY_EVENTS) as copy:
                for row in rows.batch(min(_LOAD_BATCH, events - start), received_at=past):
                    copy.write_row(row)
        conn.execute("ANALYZE events")


def raw_delete(database_url: str, tenant: str) -> Work:
    """Baseline: DELETEs of the tenant's expired rows, oldest first, as many per
    transaction as the purge removes, through the same append-only trigger."""

    def work(notes: dict[str, Any]) -> int:
        cutoff = datetime.now(UTC) - timedelta(days=POLICY_DAYS)
        removed = 0
        with psycopg.connect(database_url, autocommit=True) as conn:
            while True:
                with conn.transaction():
                    conn.execute("SET LOCAL sealtrail.removal = 'retention'")
                    cursor = conn.execute(
                        "WITH doomed AS (SELECT seq FROM events WHERE tenant_id = %(t)s"
                        " AND received_at < %(c)s ORDER BY seq LIMIT %(n)s)"
                        " DELETE FROM events AS e USING doomed AS d"
                        " WHERE e.tenant_id = %(t)s AND e.seq = d.seq",
                        {"t": tenant, "c": cutoff, "n": DEFAULT_BATCH_EVENTS},
                    )
                removed += cursor.rowcount
                if cursor.rowcount < DEFAULT_BATCH_EVENTS:
                    return removed

    return work


def purge(owner_url: str, tenant: str) -> Work:
    """The purge job's pass over a tenant whose policy keeps POLICY_DAYS days:
    its part of a pass (tenant_pass.purge_tenant, as the job runs it) and
    no more. Not a whole pass (Purger.run_once): that purges every tenant
    whose policy has expired events (another round's; on a database of
    SEALTRAIL_BENCH_DATABASE_URL, anyone's) and keeps the months, all of it
    timed as this figure's. Its retention.purged event is not recorded here
    (there is no appender in this process). The policy is set before."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO retention_policies (tenant_id, default_days) VALUES (%s, %s)",
            [tenant, POLICY_DAYS],
        )
    seal = SummarySeal(os.urandom(32))

    async def pass_over() -> TenantPurge:
        async with await psycopg.AsyncConnection.connect(owner_url, autocommit=True) as conn:
            return await purge_tenant(
                conn,
                tenant,
                seal=seal,
                batch_events=DEFAULT_BATCH_EVENTS,
                scan_window=DEFAULT_BATCH_EVENTS * SCAN_WINDOW_BATCHES,
                clock=lambda: datetime.now(UTC),
            )

    def work(notes: dict[str, Any]) -> int:
        done = asyncio.run(pass_over())
        notes["rules"] = json.dumps(done.by_rule)
        return done.count

    return work


def check_purge(owner_url: str, tenant: str, expected: int) -> Check:
    """After the purge's timing: it removed `expected` events and kept a leaf
    (a tombstone) of each."""

    def check(notes: dict[str, Any], removed: int) -> None:
        with psycopg.connect(owner_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM tree_nodes WHERE tenant_id = %s AND level = 0", [tenant]
            ).fetchone()
        tombstones = int(row[0]) if row else 0
        notes["tombstones"] = tombstones
        if removed != expected or tombstones != expected:
            raise FigureFailed(f"purged {removed} and kept {tombstones} leaves of {expected}")

    return check
