"""Row-level security filters rows; it never chooses a plan. The service reads
as sealtrail_service, under a policy on every tenant's table, and its
statements must be planned as the owner's are: estimated at the tenant's true
size and reading what the owner's plan reads. Written as a filter the planner
could not relate to the statement's own tenant condition, the policy counted
the tenant twice (estimates one tenant in N too low, N tenants), and at 10M
events over 100 tenants "the latest 100 under an action prefix" sorted every
match: 41 ms as the service, 0.25 ms as the owner (migration 0012)."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.domain.retention import RetentionPolicy, RetentionRule, purge_selections
from sealtrail_server.store.counts import count_statement
from sealtrail_server.store.events import Order, plan_fixed_by_index, query_statement
from sealtrail_server.store.retention import count_expired_statement
from tests.conftest import ServerThread, database_of_its_own
from tests.integration.test_actor_prefix_filter import as_before_0054

TENANTS = 40
PER_TENANT = 2500
ACTIONS = ["document.share", "user.login", "user.logout", "member.invite", "billing.paid"]
RESOURCE_TYPES = ["source", "file", "qa_pair", "document", "repository", "issue", "page"]
PAGE = 10
_INSERT = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, actor_email, recorded_by, ip, resource_type, resource_id, leaf_hash,"
    " record)"
    " SELECT 't' || t, g, gen_random_uuid(), now() - g * interval '1 minute', now(),"
    " (%s::text[])[1 + g %% 5], 1, 'success', 'u' || g %% 50, 'u' || g %% 50 || '@example.com',"
    " md5('r' || g %% 3)::uuid,"
    " ('10.0.' || g %% 4 || '.' || g %% 250)::inet, (%s::text[])[1 + g %% 7], 'r' || g %% 11,"
    " '\\x00', '{}'"
    " FROM generate_series(1, %s) AS t, generate_series(1::bigint, %s::bigint) AS g"
)
# The token that recorded a third of the events (`md5('r1')::uuid` above).
RECORDER = str(uuid.UUID(hashlib.md5(b"r1").hexdigest()))
HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)
FILTERS = {
    "one action": EventFilter(actions=("user.login",)),
    "two actions": EventFilter(actions=("user.login", "billing.paid")),
    "an action prefix": EventFilter(action_prefixes=("user.",)),
    "an actor": EventFilter(actor="u7"),
    "an actor's email in other case": EventFilter(actor="U7@Example.COM"),
    "an actor prefix": EventFilter(actor_prefix="u1"),
    "a rare actor prefix": EventFilter(actor_prefix="u49"),
    "a rare actor prefix in other case": EventFilter(actor_prefix="U7@"),
    "a recorder": EventFilter(recorded_by=RECORDER),
    "a network": EventFilter(ip="10.0.1.0/24"),
    "a resource type": EventFilter(resource_type="file"),
    "resource types": EventFilter(resource_types=("file", "qa_pair", "source")),
    "resource types of an id": EventFilter(resource_types=("file", "source"), resource_id="r3"),
    "the last hour": EventFilter(occurred_after=HOUR_AGO),
    "no filter": EventFilter(),
}


@pytest.fixture(scope="module")
def connections(
    migrated_database_url: str,
) -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
    """A database of its own holding TENANTS tenants, analyzed; a connection
    working as the service does for tenant t1, and one as the owner."""
    with (
        database_of_its_own(migrated_database_url, "plans") as url,
        psycopg.connect(url, autocommit=True) as as_owner,
        psycopg.connect(url, autocommit=True) as as_service,
    ):
        as_owner.execute(_INSERT, [ACTIONS, RESOURCE_TYPES, TENANTS, PER_TENANT])
        as_owner.execute("ANALYZE events")
        as_service.execute("SET ROLE sealtrail_service")
        as_service.execute("SELECT set_config('sealtrail.tenant', 't1', false)")
        for conn in (as_owner, as_service):
            conn.execute("SET enable_seqscan = off")  # as the service's connections
            conn.execute("SET plan_cache_mode = force_custom_plan")  # as their first runs
        yield as_service, as_owner


def _plan(conn: psycopg.Connection[Any], statement: pgsql.Composable, params: Any) -> Any:
    query = pgsql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(statement)
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0][0]["Plan"]


def _scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The plan's scans of events (any partition)."""
    if node.get("Relation Name", "").startswith("events"):
        yield node
    for child in node.get("Plans", ()):
        yield from _scans(child)


def _estimated(plan: dict[str, Any]) -> float:
    return sum(scan["Plan Rows"] for scan in _scans(plan))


def _read(plan: dict[str, Any]) -> int:
    return sum(scan["Actual Rows"] for scan in _scans(plan))


@pytest.mark.parametrize("name", FILTERS)
def test_the_service_estimates_a_tenant_at_its_size(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]], name: str
) -> None:
    as_service, as_owner = connections
    statement, params = query_statement("t1", FILTERS[name], "newest", None, PER_TENANT)
    matches = len(as_owner.execute(statement, params).fetchall())
    assert matches > PAGE
    estimated = _estimated(_plan(as_service, statement, params))
    assert matches / 3 <= estimated <= matches * 3, (estimated, matches)


@pytest.mark.parametrize("order", ["newest", "oldest"])
@pytest.mark.parametrize("name", FILTERS)
def test_a_page_reads_as_the_owners_plan_reads(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
    name: str,
    order: Order,
) -> None:
    as_service, as_owner = connections
    statement, params = query_statement("t1", FILTERS[name], order, None, PAGE + 1)
    served = as_service.execute(statement, params).fetchall()
    assert served == as_owner.execute(statement, params).fetchall()
    assert len(served) == PAGE + 1
    assert _read(_plan(as_service, statement, params)) <= _read(_plan(as_owner, statement, params))


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def test_an_actors_email_in_any_case_is_an_index_condition_for_the_service(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
) -> None:
    """The column is written lowered and compared with `= ANY` of the value as
    given and lowered (ADR 0067): text equality is leakproof, so under
    row-level security it stays an index condition, where `lower(actor_email)`
    could be none (ADR 0013)."""
    as_service, _ = connections
    statement, params = query_statement(
        "t1", FILTERS["an actor's email in other case"], "newest", None, PAGE + 1
    )
    nodes = list(_nodes(_plan(as_service, statement, params)))
    # The partition holding the tenant's events is read through the email's
    # index; empty ones may be scanned by their primary key, reading nothing.
    assert any(
        "actor_email" in node.get("Index Cond", "") and node["Actual Rows"] for node in nodes
    )
    filtered = [
        node
        for node in nodes
        if "actor_email" in node.get("Filter", "")
        and node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
    ]
    assert filtered == []


def test_an_actor_prefix_is_an_index_condition_for_the_service(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
) -> None:
    """`actor_prefix` is a byte-order range on each column (`~>=~`, `~<~`:
    leakproof), so under row-level security the text_pattern_ops indexes of
    migration 0054 serve it, the id's and the email's, as they serve the
    owner (ADR 0135); LIKE would be no index condition, and no index of 0009
    orders by bytes. (A common one's latest page walks seq instead, as the
    owner's does: "an actor prefix" above.)"""
    as_service, as_owner = connections
    for name in ("a rare actor prefix", "a rare actor prefix in other case"):
        chosen = FILTERS[name]
        statement, params = query_statement("t1", chosen, "newest", None, PAGE + 1)
        nodes = list(_nodes(_plan(as_service, statement, params)))
        # The partition holding the tenant's events is searched by both
        # indexes (`U7@` finds no id: an index search that reads nothing).
        conditions = [node.get("Index Cond", "") for node in nodes]
        assert any("actor_id ~>=~" in cond for cond in conditions), (name, conditions)
        assert any(
            "actor_email ~>=~" in node.get("Index Cond", "") and node["Actual Rows"]
            for node in nodes
        ), (name, conditions)
        # No partition's rows are read and then judged by the prefix.
        assert not any(
            "~>=~" in node.get("Filter", "")
            and node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            for node in nodes
        ), name
        served = as_service.execute(statement, params).fetchall()
        assert served == as_owner.execute(statement, params).fetchall()
    # The 0009 indexes (as before migration 0054, which replaced them) serve
    # no prefix: the same statement then reads the tenant's rows and filters them.
    with as_owner.transaction():
        as_before_0054(as_owner)
        statement, params = query_statement(
            "t1", FILTERS["a rare actor prefix in other case"], "newest", None, PAGE + 1
        )
        nodes = list(_nodes(_plan(as_owner, statement, params)))
        assert not any("~>=~" in node.get("Index Cond", "") for node in nodes)
        assert any(
            "~>=~" in node.get("Filter", "") and node.get("Rows Removed by Filter", 0)
            for node in nodes
        )
        raise psycopg.Rollback()


def _index_orders_by_bytes(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT pg_get_indexdef(%s::regclass)", [name]).fetchone()
    assert row is not None
    return "text_pattern_ops" in row[0]


@pytest.mark.parametrize("name", ["an actor", "an actor's email in other case"])
def test_an_exact_actor_reads_the_pattern_indexes_and_no_other_actor(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]], name: str
) -> None:
    """Migration 0054's text_pattern_ops indexes replaced 0009's of the same
    columns (ADR 0135): their `=` serves `actor` (the id, and the email's
    forms as `= ANY`), a condition of each, and only the actor's own events
    are read before the page is taken from them."""
    as_service, as_owner = connections
    statement, params = query_statement("t1", FILTERS[name], "newest", None, PAGE + 1)
    matches = len(
        as_owner.execute(*query_statement("t1", FILTERS[name], "newest", None, 10**6)).fetchall()
    )
    plan = _plan(as_service, statement, params)
    searched = {
        column: [node for node in _nodes(plan) if f"{column} = " in node.get("Index Cond", "")]
        for column in ("actor_id", "actor_email")
    }
    for column, nodes in searched.items():
        assert nodes, (column, plan)
        assert all(_index_orders_by_bytes(as_owner, node["Index Name"]) for node in nodes)
    assert _examined(plan) == matches  # the actor's events, no other's filtered away
    served = as_service.execute(statement, params).fetchall()
    assert served == as_owner.execute(statement, params).fetchall()
    assert [row[0] for row in served] == sorted((row[0] for row in served), reverse=True)


def test_resource_types_are_an_index_condition_for_the_service(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
) -> None:
    """`resource_type = ANY(...)` reads the (tenant_id, resource_type,
    resource_id, seq) index `resource_type = ...` reads (text equality is
    leakproof, so under row-level security it stays an index condition), and
    a list of one is the singular's very statement (helper-414)."""
    as_service, _ = connections
    chosen = FILTERS["resource types of an id"]
    statement, params = query_statement("t1", chosen, "newest", None, PAGE + 1)
    nodes = list(_nodes(_plan(as_service, statement, params)))
    assert any(
        "resource_type = ANY" in node.get("Index Cond", "") and node["Actual Rows"]
        for node in nodes
    )
    # Empty partitions may be scanned otherwise, reading nothing.
    assert not any(
        "resource_type" in node.get("Filter", "")
        and node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
        for node in nodes
    )
    one = query_statement("t1", EventFilter(resource_types=("file",)), "newest", None, PAGE + 1)
    singular = query_statement("t1", FILTERS["a resource type"], "newest", None, PAGE + 1)
    assert one[0].as_string(as_service) == singular[0].as_string(as_service)
    assert one[1] == singular[1]


def _examined(plan: dict[str, Any]) -> int:
    """Rows the scans of events looked at: returned or removed by a filter."""
    return sum(scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) for scan in _scans(plan))


def _latest_of_one_action_examines_a_page(
    as_service: psycopg.Connection[Any], statement: pgsql.Composable, params: Any
) -> bool:
    plan = _plan(as_service, statement, params)
    # A merge of ordered scans reads at most one row past the page in each.
    return _examined(plan) <= PAGE + 1 + len(list(_scans(plan)))


def test_one_action_as_an_array_examines_more_so_the_test_means_something(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
) -> None:
    as_service, _ = connections
    statement = pgsql.SQL(
        "SELECT seq FROM events WHERE tenant_id = %s AND action = ANY(%s)"
        " ORDER BY seq DESC LIMIT %s"
    )
    params = ["t1", ["user.login"], PAGE + 1]
    assert not _latest_of_one_action_examines_a_page(as_service, statement, params)


def test_the_latest_of_one_action_examines_one_page(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
) -> None:
    """In seq order from the (tenant_id, action, seq) index, however common the
    action: no other index yields that order without filtering or sorting."""
    as_service, _ = connections
    statement, params = query_statement("t1", FILTERS["one action"], "newest", None, PAGE + 1)
    assert _latest_of_one_action_examines_a_page(as_service, statement, params)


_prepared = itertools.count()


def _generic_plan(
    conn: psycopg.Connection[Any], statement: pgsql.Composable, params: Any
) -> tuple[Any, list[Any]]:
    """The plan PostgreSQL keeps for `statement` whatever its values (as
    query_page runs the shapes an index decides), run with `params`; and the
    rows that plan returns."""
    name = f"page_{next(_prepared)}"
    numbered = itertools.count(1)
    text = re.sub("%s", lambda _: f"${next(numbered)}", statement.as_string(conn))
    conn.execute(f"PREPARE {name} AS {text}")
    try:
        with conn.transaction():
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            arguments = pgsql.SQL(", ").join(map(pgsql.Literal, params))
            execute = pgsql.SQL("EXECUTE {} ({})").format(pgsql.Identifier(name), arguments)
            explain = pgsql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(execute)
            row = conn.execute(explain).fetchone()
            rows = conn.execute(execute).fetchall()
        generic = conn.execute(
            "SELECT generic_plans FROM pg_prepared_statements WHERE name = %s", [name]
        ).fetchone()
        assert generic == (2,), "the plan was made for the values"
    finally:
        conn.execute(pgsql.SQL("DEALLOCATE {}").format(pgsql.Identifier(name)))
    assert row is not None
    return row[0][0]["Plan"], rows


@pytest.mark.parametrize("keyset", [None, PER_TENANT // 2], ids=["first page", "next page"])
@pytest.mark.parametrize("order", ["newest", "oldest"])
@pytest.mark.parametrize("name", ["one action", "no filter"])
def test_a_generic_plan_of_a_shape_its_index_decides_examines_one_page(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
    name: str,
    order: Order,
    keyset: int | None,
) -> None:
    as_service, as_owner = connections
    assert plan_fixed_by_index(FILTERS[name])
    statement, params = query_statement("t1", FILTERS[name], order, keyset, PAGE + 1)
    plan, served = _generic_plan(as_service, statement, params)
    assert _read(plan) >= PAGE + 1  # it ran, and found the page
    # A merge of ordered scans reads at most one row past the page in each.
    assert _examined(plan) <= PAGE + 1 + len(list(_scans(plan)))
    assert len(served) == PAGE + 1
    assert served == as_owner.execute(statement, params).fetchall()


def test_a_checkout_plans_generically_only_when_it_asks(server: ServerThread, tenant: str) -> None:
    """The mode is part of a pooled connection's scope: a checkout that did
    not ask for generic plans never inherits them from the one before."""

    async def modes() -> list[tuple[bool, str]]:
        seen = []
        for generic in (True, False, True, True, False, False, True, False):
            async with server.database.connection(tenant, generic_plans=generic) as conn:
                cursor = await conn.execute("SELECT current_setting('plan_cache_mode')")
                [(mode,)] = await cursor.fetchall()
                seen.append((generic, mode))
        return seen

    for generic, mode in server.run(modes()):
        assert mode == ("force_generic_plan" if generic else "auto")


def test_a_retention_preview_reads_no_further_than_its_limit(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
) -> None:
    """Oldest first from the (tenant_id, received_at) index, stopping at the
    limit: not every event of the tenant's history read and sorted."""
    as_service, _ = connections
    policy = RetentionPolicy(30, (RetentionRule(days=90, category="authentication"),))
    after_every_event = datetime.now(UTC) + timedelta(days=1)
    horizons = [(selection, after_every_event) for selection in purge_selections(policy)]
    statement, params = count_expired_statement("t1", horizons, read_limit=PAGE)
    plan = _plan(as_service, statement, params)
    assert _read(plan) >= PAGE + 1  # it ran, and stopped: the tenant has PER_TENANT
    assert _examined(plan) <= PAGE + 1 + len(list(_scans(plan)))


@pytest.mark.parametrize(
    ("chosen", "read"),
    [
        (EventFilter(details_equals=(("environment", "prod"),)), "'details'"),
        (
            EventFilter(
                actions=("user.login",), details_equals=(("attempt", "3"), ("dry", "true"))
            ),
            "'details'",
        ),
        (EventFilter(http_routes=("/v1/templates/{id}",)), "'http_route'"),
        # Whether a route is there reads it as the routes do: the same plan.
        (EventFilter(has_http_route=True), "'http_route'::text) IS NOT NULL"),
        (
            EventFilter(actions=("user.login",), has_http_route=True),
            "'http_route'::text) IS NOT NULL",
        ),
    ],
)
def test_what_is_read_off_the_record_is_a_row_condition_on_the_tenants_index(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
    chosen: EventFilter,
    read: str,
) -> None:
    """`details_equals`, `http_routes` and `http_route_presence` are read off
    each record (no column, no index): a page and a count still scan the
    tenant's index, the record's field a filter of the rows it yields, as the
    owner's plan reads them (no record here holds details or a route: every
    row of the tenant's index is read and left out)."""
    _filtered_on_the_tenants_index(connections, chosen, read)


@pytest.mark.parametrize(
    "chosen",
    [
        EventFilter(actor_roles=("admin",)),
        EventFilter(actions=("user.login",), actor_roles=("admin", "billing")),
    ],
)
def test_roles_are_read_off_their_column_on_the_tenants_index(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
    chosen: EventFilter,
) -> None:
    """`actor_roles` reads its column (migration 0065, ADR 0152): a page and a
    count scan the tenant's index, the roles a filter of the rows it yields,
    and parse no record (no event here has roles)."""
    for plan in _filtered_on_the_tenants_index(connections, chosen, "actor_roles &&"):
        assert "record" not in json.dumps(plan), plan


def _filtered_on_the_tenants_index(
    connections: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
    chosen: EventFilter,
    condition: str,
) -> list[dict[str, Any]]:
    """The service's plans of a page and a count of `chosen`, each scanning
    the tenant's index with `condition` a filter of the rows it yields, and
    examining the rows the owner's plan does (none left out by row security
    first); returned for what a test asks more of them."""
    as_service, as_owner = connections
    statement, params = query_statement("t1", chosen, "newest", None, PAGE)
    count, count_params = count_statement("t1", chosen, group_by=None, limit=10)
    plans = []
    for text, values in ((statement, params), (count, count_params)):
        plan = _plan(as_service, text, values)
        scans = list(_scans(plan))
        assert scans, plan
        for scan in scans:
            # An index scan's condition, or a bitmap heap scan's of its index.
            on_index = scan.get("Index Cond", scan.get("Recheck Cond", ""))
            assert "tenant_id = " in on_index, scan
            assert condition in scan.get("Filter", ""), scan
        assert _read(plan) == 0
        assert _examined(plan) == _examined(_plan(as_owner, text, values)) > 0
        plans.append(plan)
    return plans
