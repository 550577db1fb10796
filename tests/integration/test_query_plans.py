"""Query's statements read what their page needs, as the service reads them:
as sealtrail_service, whose row-level security check the planner counts as a
second tenant condition (its estimates come out about one tenant in N too
low, N the number of tenants). "The latest events of one action" must walk
the (tenant_id, action, seq) index in seq order and stop at the page, not
read every event of the action and sort them: at 10M events over 100
tenants, the sorting plan took 35 ms where the ordered one takes 0.5 ms."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.store.events import Order, query_statement
from tests.conftest import database_of_its_own

TENANTS = 40
PER_TENANT = 2500
ACTIONS = ["document.share", "user.login", "api_key.create", "member.invite", "billing.paid"]
PAGE = 10
_INSERT = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, leaf_hash, record)"
    " SELECT 't' || t, g, gen_random_uuid(), now(), now(), (%s::text[])[1 + g %% 5], 1,"
    " 'success', 'u', '\\x00', '{}'"
    " FROM generate_series(1, %s) AS t, generate_series(1::bigint, %s::bigint) AS g"
)


@pytest.fixture(scope="module")
def as_service(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A database of its own holding TENANTS tenants, analyzed, and a
    connection to it working as the service does for tenant t1."""
    with (
        database_of_its_own(migrated_database_url, "plans") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute(_INSERT, [ACTIONS, TENANTS, PER_TENANT])
        conn.execute("ANALYZE events")
        conn.execute("SET ROLE sealtrail_service")
        conn.execute("SELECT set_config('sealtrail.tenant', 't1', false)")
        conn.execute("SET enable_seqscan = off")  # as the service's connections
        conn.execute("SET plan_cache_mode = force_custom_plan")  # as their first runs
        yield conn


def _rows_read(conn: psycopg.Connection[Any], statement: pgsql.Composable, params: Any) -> int:
    """How many rows the plan's scans of events returned, all partitions together."""
    query = pgsql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(statement)
    row = conn.execute(query, params).fetchone()
    assert row is not None

    def scanned(node: dict[str, Any]) -> int:
        own = node["Actual Rows"] if node.get("Relation Name", "").startswith("events") else 0
        return own + sum(scanned(child) for child in node.get("Plans", ()))

    return scanned(row[0][0]["Plan"])


def test_the_array_form_reads_every_match_so_the_test_means_something(
    as_service: psycopg.Connection[Any],
) -> None:
    statement = pgsql.SQL(
        "SELECT seq, record, leaf_hash FROM events WHERE tenant_id = %s"
        " AND action = ANY(%s) ORDER BY seq DESC LIMIT %s"
    )
    read = _rows_read(as_service, statement, ["t1", ["user.login"], PAGE])
    assert read == PER_TENANT // len(ACTIONS)


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_the_latest_of_one_action_reads_about_one_page(
    as_service: psycopg.Connection[Any], order: Order
) -> None:
    statement, params = query_statement(
        "t1", EventFilter(actions=("user.login",)), order, None, PAGE + 1
    )
    partitions = as_service.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
    ).fetchone()
    assert partitions is not None
    assert _rows_read(as_service, statement, params) <= (PAGE + 1) * partitions[0]
    rows = as_service.execute(statement, params).fetchall()
    assert len(rows) == PAGE + 1
    seqs = [row[0] for row in rows]
    assert seqs == sorted(seqs, reverse=order == "newest")
    assert all(seq % 5 == 1 for seq in seqs)  # user.login's share
