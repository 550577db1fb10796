"""Hot lookups by a unique key keep to that key's index even under statistics
taken while the table was tiny (autoanalyze lags a tenant that grows fast):
then every (tenant_id, ...) index looks like one row, and a plain equality
lookup was seen walking a tenant's rows through events_received_at."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from sealtrail_server.domain.event_ids import event_id_minter, received_within
from sealtrail_server.store import events, idempotency, tree
from tests.conftest import database_of_its_own

ROWS = 6000
_INSERT = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, idempotency_key, leaf_hash, record)"
    " SELECT 't', g, gen_random_uuid(), now(), now(), 'a.b', 1, 'success', 'u', 'k' || g,"
    " '\\x00', '{}' FROM generate_series(%s::bigint, %s::bigint) AS g"
)


@pytest.fixture
def stale(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A database of its own whose events were analyzed at one row, then grew."""
    with (
        database_of_its_own(migrated_database_url, "stale") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute(_INSERT, [1, 1])
        conn.execute("ANALYZE events")
        conn.execute(_INSERT, [2, ROWS])
        yield conn


def _event_indexes(conn: psycopg.Connection[Any], query: str, params: Any) -> set[str]:
    """The indexes of events the plan of `query` reads, named as on the table
    (a partition's index is named after its partition: its parent's name counts)."""
    plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {query}", params).fetchall())
    used = {
        line.split(" using ")[1].split()[0]
        for line in plan.splitlines()
        if " using " in line and " on events" in line
    }
    parents = set()
    for name in used:
        row = conn.execute(
            "SELECT coalesce((SELECT p.relname FROM pg_inherits AS i"
            " JOIN pg_class AS p ON p.oid = i.inhparent WHERE i.inhrelid = c.oid), c.relname)"
            " FROM pg_class AS c WHERE c.relname = %s",
            [name],
        ).fetchone()
        assert row is not None
        parents.add(row[0])
    return parents


def test_the_naive_lookup_is_fooled_so_the_test_means_something(
    stale: psycopg.Connection[Any],
) -> None:
    naive = "SELECT seq FROM events WHERE tenant_id = %s AND id = %s"
    assert _event_indexes(stale, naive, ["t", uuid.uuid4()]) != {"events_id"}


@pytest.mark.parametrize("role", ["owner", "sealtrail_service", "sealtrail_system"])
def test_key_lookups_keep_to_their_index(stale: psycopg.Connection[Any], role: str) -> None:
    """As each role that runs them: the service's, under row-level security, has
    the policy's tenant equality beside each probe's own conditions."""
    if role != "owner":
        stale.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(role)))
        stale.execute("SELECT set_config('sealtrail.tenant', 't', false)")
    leaf_probe = tree._READ_NODES
    leaf_params = {
        "tenants": ["t"],
        "leaf_t": "{1}",
        "seqs": "{5000}",
        "with_record": "{t}",
        "node_t": "{}",
        "levels": "{}",
        "idxs": "{}",
    }
    assert _event_indexes(stale, leaf_probe, leaf_params) == {"events_pkey"}
    # The appender's probe runs as the system role only (its row comparison
    # would walk the tenant beside the service's policy).
    appender_role = role != "sealtrail_service"
    if appender_role:
        assert _event_indexes(stale, idempotency._FIND_KEYS, [["t"], ["k5000"]]) == {
            "events_idempotency_key"
        }
    row = stale.execute("SELECT id, received_at FROM events WHERE seq = 5000").fetchone()
    assert row is not None
    by_id = {"tenant": "t", "id": str(row[0])}
    # All rows but the first were received in the same millisecond: were the
    # probe bounded to the id's (ADR 0031) to walk that time's index, it would
    # read them all.
    received = {"received_from": row[1], "received_until": row[1] + timedelta(milliseconds=1)}
    for probe, params in (
        (events._GET_EVENT_ANYWHERE, by_id),
        (events._GET_EVENT_RECEIVED, by_id | received),
    ):
        text = probe.as_string(stale)
        assert _event_indexes(stale, text, params) == {"events_id"}, text
        # and it still finds what it looks for
        found = stale.execute(probe, params).fetchone()
        assert found is not None and found[0] == 5000
    if appender_role:
        assert stale.execute(idempotency._FIND_KEYS, [["t"], ["k77"]]).fetchone()[2] == 77
    assert stale.execute(leaf_probe, leaf_params).fetchone()[2] == 4999  # leaf index


def test_a_probe_bounded_by_time_ends_at_its_id(stale: psycopg.Connection[Any]) -> None:
    """An id whose millisecond holds no event (one missing, or minted before ids
    named that time) is looked up through a few index pages, not through every
    later id of the tenant in its partition (received_at is no bound of the
    index's scan; ADR 0031)."""
    row = stale.execute("SELECT max(received_at) FROM events").fetchone()
    assert row is not None
    missing = event_id_minter(row[0] + timedelta(milliseconds=1))()  # after every row
    window = received_within(missing)
    assert window is not None
    params = {
        "tenant": "t",
        "id": missing,
        "received_from": window[0],
        "received_until": window[1],
    }
    probe = events._GET_EVENT_RECEIVED.as_string(stale)
    assert stale.execute(probe, params).fetchone() is None
    assert _event_indexes(stale, probe, params) == {"events_id"}
    explained = stale.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + probe, params)
    plan = explained.fetchone()[0][0]["Plan"]  # type: ignore[index]
    # The tenant's 6,000 ids fill some 30 leaf pages; a walk of them reads them all.
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] <= 6, plan
