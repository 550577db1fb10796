"""Issue 7's query figures at scale: Query latency (p50, p95) for "the latest
100 events of one action" and "one day" of a tenant, with --scale-events
events over 100 tenants and 90 days loaded, each beside the same SQL the
server runs, run directly on the same database (its in-run baseline).

Loading: rows are generated inside PostgreSQL (records shaped as the bench's
other events; leaf = SHA-256(0x00 || record)) into monthly partitions, two
connections at a time, each with the whole view the server would store beside
it (ADR 0025): protobuf fragments made here, joined there (concatenated
messages merge), and checked against the records they came from. The tenants
the figures query also get their Merkle nodes and head computed here from
those leaves, so their logs are whole: the audit events each Query records
extend them as any append would."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sealtrail import AuditClient, build_filter
from sealtrail.v1 import audit_service_pb2, event_pb2
from sealtrail_server.api.convert import element_prefix
from sealtrail_server.api.servicer import _FIRST_PAGE_EXTRA, QUERY_PAGE_BYTES
from sealtrail_server.domain.event import context_address, search_names
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.domain.merkle import append_leaf, frontier_root
from sealtrail_server.store.events import ShownEvent, page_statement, query_statement

from . import cpu
from .events import check_views
from .phases import PhaseResult, percentile_ms

TENANTS = 100
QUERIED = 5  # tenants the figures query (each gets a token and a whole tree)
DAYS = 90
ACTION = "user.login"  # one action of five: a fifth of each tenant's events
LATEST = 100
DAY_PAGE = 1000
CALLS = int(os.environ.get("BENCH_SCALE_CALLS", "200"))  # more, to profile the server
WARMUP_CALLS = 20
_CHUNK = 200_000


def fewest_events(figures: list[str]) -> int:
    """The least --scale-events whose tenants each hold what `figures` read:
    a page of LATEST events of ACTION (a fifth of a tenant's events), two for
    a next page, and an event in every day (DAYS of them) for a day's page."""
    pages = 2 if {"query-next", "query-one"} & set(figures) else 1
    latest = {"sql-latest", "sql-latest-generic", "sql-latest-page", "query-latest", "floor-latest"}
    days = {"sql-day", "sql-day-page", "query-day", "floor-day"}
    fewest = TENANTS * DAYS if days & set(figures) else 0
    if latest & set(figures) or pages > 1:
        fewest = max(fewest, TENANTS * len(_ACTIONS) * LATEST * pages)
    return fewest


_INSERT = """
INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, category, severity,
    outcome, actor_id, actor_email, resource_type, resource_id, request_id, ip, search_names,
    leaf_hash, record, event_view)
SELECT %(tenant)s::text, g, id, t, t, a, 'data_access', 1, 'success', actor, email, 'document',
    -- context.ip and resource.name as the appender writes them beside the record
    doc, rid, '203.0.113.42'::inet, 'Q3 board deck.pdf', leaf, rec,
    %(fixed_view)s::bytea || (%(action_views)s::bytea[])[1 + g %% 5]
    || (%(actor_views)s::bytea[])[1 + g %% 50] || (%(resource_views)s::bytea[])[1 + g %% 997]
    || %(request_id_prefix)s::bytea || convert_to(rid::text, 'UTF8')
    || %(occurred_at_prefix)s::bytea || time_fields
    -- what the server assigned (id, seq, received_at = occurred_at here, tenant, leaf)
    || %(id_prefix)s::bytea || convert_to(id::text, 'UTF8')
    || %(seq_prefix)s::bytea || pg_temp.varint5(g)
    || %(received_at_prefix)s::bytea || time_fields
    || %(tenant_view)s::bytea || %(leaf_prefix)s::bytea || leaf
FROM (SELECT *, sha256('\\x00'::bytea || convert_to(rec, 'UTF8')) AS leaf,
  '\\x08'::bytea || pg_temp.varint5(us / 1000000)
    || '\\x10'::bytea || pg_temp.varint5(us %% 1000000 * 1000) AS time_fields
FROM (SELECT g, id, t, a, actor, email, doc, rid, (extract(epoch FROM t) * 1000000)::bigint AS us,
  format(
    '{"action":"%%s","actor":{"email":"%%s","id":"%%s","type":"user"},"category":"data_access",'
    '"context":{"ip":"203.0.113.42","request_id":"%%s","user_agent":"Mozilla/5.0 (X11; Linux'
    ' x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"},"description":"Signed in from a'
    ' new device","details":{"method":"password","mfa":"totp","session_minutes":30},"id":"%%s",'
    '"occurred_at":"%%s","outcome":"success","received_at":"%%s","resource":{"id":"%%s",'
    '"name":"Q3 board deck.pdf","type":"document"},"seq":%%s,"severity":"info",'
    '"tenant_id":"%%s","v":1}', a, email, actor, rid, id, ts, ts, doc, g, %(tenant)s::text) AS rec
  FROM (SELECT g, gen_random_uuid() AS id,
          %(start)s::timestamptz + (g * %(step)s) * interval '1 microsecond' AS t,
          (ARRAY['document.share', 'user.login', 'api_key.create', 'member.invite',
                 'billing.invoice_paid'])[1 + g %% 5] AS a,
          'user_' || lpad((g %% 50)::text, 4, '0') AS actor,
          'user' || (g %% 50) || '@customer.example' AS email,
          'doc_' || lpad((g %% 997)::text, 5, '0') AS doc, gen_random_uuid() AS rid
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS base,
  LATERAL (SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ts) AS f
) AS generated) AS hashed
"""

# A varint in five bytes (any value below 2^35; parsers take the padding), so
# that an occurred_at Timestamp has a fixed length.
_VARINT5 = """
CREATE FUNCTION pg_temp.varint5(n bigint) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
  SELECT set_byte(set_byte(set_byte(set_byte(set_byte('\\x0000000000'::bytea,
    0, ((n & 127) | 128)::int), 1, ((n >> 7 & 127) | 128)::int),
    2, ((n >> 14 & 127) | 128)::int), 3, ((n >> 21 & 127) | 128)::int), 4, (n >> 28)::int)
$$
"""


def _view_fragments() -> dict[str, Any]:
    """The whole view of a generated record in parts, as `_INSERT` joins them:
    what every record shares, then what varies with its action, actor and
    resource, and the serialized prefixes (tag, length) of the values made
    in SQL (a request id, times, the server's fields)."""

    def part(**fields: Any) -> bytes:
        return event_pb2.Event(**fields).SerializeToString()

    request_id = part(context={"request_id": "0" * 36})
    return {
        "fixed_view": part(
            category=event_pb2.CATEGORY_DATA_ACCESS,
            severity=event_pb2.SEVERITY_INFO,
            outcome=event_pb2.OUTCOME_SUCCESS,
            description="Signed in from a new device",
            resource={"type": "document", "name": "Q3 board deck.pdf"},
            details={"method": "password", "mfa": "totp", "session_minutes": 30},
            context={"ip": "203.0.113.42", "user_agent": _USER_AGENT},
        ),
        "action_views": [part(action=action) for action in _ACTIONS],
        "actor_views": [
            part(
                actor={
                    "type": event_pb2.ACTOR_TYPE_USER,
                    "id": f"user_{n:04d}",
                    "email": f"user{n}@customer.example",
                }
            )
            for n in range(50)
        ],
        "resource_views": [part(resource={"id": f"doc_{n:05d}"}) for n in range(997)],
        "request_id_prefix": request_id[:-36],
        # Tags (and lengths) the generated values follow. The times are 12
        # bytes: seconds and nanos as 5-byte varints each.
        "occurred_at_prefix": part(occurred_at={"seconds": 2**34, "nanos": 2**28})[:2],
        "received_at_prefix": part(received_at={"seconds": 2**34, "nanos": 2**28})[:2],
        "id_prefix": part(id="0" * 36)[:-36],
        "seq_prefix": part(seq=1)[:-1],
        "leaf_prefix": part(leaf_hash=bytes(32))[:-32],
    }


def _tenant_view(tenant: str) -> bytes:
    return event_pb2.Event(tenant_id=tenant).SerializeToString()


_ACTIONS = (
    "document.share",
    "user.login",
    "api_key.create",
    "member.invite",
    "billing.invoice_paid",
)
_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


def _check_views(conn: psycopg.Connection[Any], tenant: str) -> None:
    """The views loaded show exactly what the server would store, and the
    columns derived from each record (`ip`, `search_names`) hold what the
    appender writes: rows narrower than the service's made every figure here
    flatter than the service's own."""
    rows = conn.execute(
        "SELECT seq, event_view, record, host(ip), search_names FROM events"
        " WHERE tenant_id = %s ORDER BY seq LIMIT 1000",
        [tenant],
    ).fetchall()
    check_views(
        (
            (ShownEvent(seq, view, None, None, None, None, None), record)
            for seq, view, record, _, _ in rows
        ),
        tenant_id=tenant,
    )
    for seq, _, record, ip, names in rows:
        body = json.loads(record)
        derived = (context_address(body["context"]["ip"]), search_names(body))
        if (ip, names) != derived:
            raise AssertionError(f"seq {seq}: ip and names {(ip, names)}, not {derived}")


@dataclass(frozen=True)
class ScaleLog:
    tenants: list[str]  # the queried ones
    per_tenant: int
    start: datetime
    seconds: float


def load(database_url: str, run_id: str, events: int) -> ScaleLog:
    """`events` events over TENANTS tenants, spread evenly over the last DAYS days."""
    started = time.perf_counter()
    per_tenant = max(1, events // TENANTS)
    start = datetime.now(UTC) - timedelta(days=DAYS)
    step = int(DAYS * 86_400 * 1_000_000 / per_tenant)
    tenants = [f"scale-{run_id}-{n:03d}" for n in range(TENANTS)]
    fragments = _view_fragments()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT sealtrail_create_event_partitions(%s, now())", [start - timedelta(days=1)]
        )
    jobs = [
        {
            "tenant": tenant,
            "start": start,
            "step": step,
            "lo": lo,
            "hi": min(per_tenant, lo + _CHUNK - 1),
            "tenant_view": _tenant_view(tenant),
            **fragments,
        }
        for tenant in tenants
        for lo in range(1, per_tenant + 1, _CHUNK)
    ]

    stopping = threading.Event()
    connections: list[psycopg.Connection[Any]] = []

    def work(share: list[dict[str, Any]]) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            connections.append(conn)
            conn.execute(_VARINT5)
            for job in share:
                if stopping.is_set():
                    return
                try:
                    conn.execute(_INSERT, job)
                except psycopg.errors.QueryCanceled:
                    if stopping.is_set():
                        return
                    raise

    threads = [threading.Thread(target=work, args=(jobs[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:  # Ctrl-C or SIGTERM: stop the loaders before the database
        stopping.set()
        for conn in connections:
            conn.cancel_safe()
        for thread in threads:
            thread.join()
        raise
    queried = tenants[:QUERIED]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for tenant in queried:
            _check_views(conn, tenant)
            _make_whole(conn, tenant)
        conn.execute("ANALYZE events")
        conn.execute("ANALYZE tree_nodes")
    return ScaleLog(queried, per_tenant, start, time.perf_counter() - started)


def load_tenant(database_url: str, tenant: str, events: int) -> float:
    """`events` events in one tenant over the last DAYS days, its tree made
    whole; the seconds it took."""
    started = time.perf_counter()
    start = datetime.now(UTC) - timedelta(days=DAYS)
    step = int(DAYS * 86_400 * 1_000_000 / events)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT sealtrail_create_event_partitions(%s, now())", [start - timedelta(days=1)]
        )
        conn.execute(_VARINT5)
        fragments = _view_fragments()
        for lo in range(1, events + 1, _CHUNK):
            hi = min(events, lo + _CHUNK - 1)
            conn.execute(
                _INSERT,
                {
                    "tenant": tenant,
                    "start": start,
                    "step": step,
                    "lo": lo,
                    "hi": hi,
                    "tenant_view": _tenant_view(tenant),
                    **fragments,
                },
            )
        _check_views(conn, tenant)
        _make_whole(conn, tenant)
        conn.execute("ANALYZE events")
    return time.perf_counter() - started


def _make_whole(conn: psycopg.Connection[Any], tenant: str) -> None:
    """The tenant's Merkle nodes and head, from its leaves, as the appender
    would have stored them."""
    frontier: list[bytes] = []
    size = 0
    leaves = conn.execute(
        "SELECT leaf_hash FROM events WHERE tenant_id = %s ORDER BY seq", [tenant]
    ).fetchall()
    with conn.transaction():
        with conn.cursor().copy("COPY tree_nodes (tenant_id, level, idx, hash) FROM STDIN") as copy:
            for (leaf,) in leaves:
                for level, index, node in append_leaf(frontier, size, bytes(leaf)):
                    copy.write_row((tenant, level, index, node))
                size += 1
        conn.execute(
            "INSERT INTO chain_heads (tenant_id, tree_size, root_hash, frontier)"
            " VALUES (%s, %s, %s, %s)",
            [tenant, size, frontier_root(frontier), b"".join(frontier)],
        )


Call = Callable[[random.Random], Any]


def measure(name: str, call: Call, watched: cpu.Watched) -> PhaseResult:
    """CALLS calls one at a time (after WARMUP_CALLS), latency of each."""
    chance = random.Random(7)
    for _ in range(WARMUP_CALLS):
        call(chance)
    latencies = []
    with cpu.Meter(watched) as meter:
        started = time.perf_counter()
        for _ in range(CALLS):
            begun = time.perf_counter()
            call(chance)
            latencies.append(time.perf_counter() - begun)
        seconds = time.perf_counter() - started
    latencies.sort()
    return PhaseResult(
        name=name,
        unit="queries/s",
        clients=1,
        in_flight=1,
        seconds=seconds,
        calls=CALLS,
        events=CALLS,
        rate=CALLS / seconds,
        latency_p50_ms=percentile_ms(latencies, 0.50),
        latency_p99_ms=percentile_ms(latencies, 0.99),
        latency_p95_ms=percentile_ms(latencies, 0.95),
        errors={},
        cpu=meter.usage,
    )


def _day(log: ScaleLog, chance: random.Random) -> tuple[datetime, datetime]:
    day = log.start + timedelta(days=chance.randrange(1, DAYS - 1))
    day = day.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day + timedelta(days=1)


def latest_by_query(log: ScaleLog, clients: dict[str, AuditClient]) -> Call:
    def call(chance: random.Random) -> None:
        tenant = chance.choice(log.tenants)
        page = clients[tenant].query_page(build_filter(actions=ACTION), page_size=LATEST)
        assert len(page.events) == LATEST

    return call


def next_page_by_query(
    log: ScaleLog, clients: dict[str, AuditClient], page_size: int = LATEST
) -> Call:
    """The second page of "latest 100 of an action": the same work as the first
    page but for the access record, which only a query's first page writes.
    With a page_size of 1, Query's cost that does not grow with the page."""
    first_pages = {
        tenant: clients[tenant].query_page(build_filter(actions=ACTION), page_size=page_size)
        for tenant in log.tenants
    }

    def call(chance: random.Random) -> None:
        tenant = chance.choice(log.tenants)
        page = clients[tenant].query_page(
            build_filter(actions=ACTION),
            page_size=page_size,
            page_token=first_pages[tenant].next_page_token,
        )
        assert len(page.events) == page_size

    return call


def empty_call(target: str) -> Call:
    """A health Check, one at a time: what gRPC alone costs a call on this machine."""
    channel = grpc.insecure_channel(target)
    check = health_pb2_grpc.HealthStub(channel).Check

    def call(chance: random.Random) -> None:
        check(health_pb2.HealthCheckRequest(), timeout=10)

    return call


def lone_commit(conn: psycopg.Connection[Any]) -> Call:
    """One small row inserted and committed, one at a time: the durable commit
    (a WAL flush) that a query's access record waits for."""
    conn.execute("CREATE TABLE IF NOT EXISTS bench_lone_commit (at timestamptz NOT NULL)")

    def call(chance: random.Random) -> None:
        with conn.transaction():
            conn.execute("INSERT INTO bench_lone_commit VALUES (now())")

    return call


def day_by_query(log: ScaleLog, clients: dict[str, AuditClient]) -> Call:
    def call(chance: random.Random) -> None:
        tenant = chance.choice(log.tenants)
        since, until = _day(log, chance)
        page = clients[tenant].query_page(
            build_filter(since=since, until=until), page_size=DAY_PAGE
        )
        assert page.events

    return call


def day_floor(log: ScaleLog, conn: psycopg.Connection[Any], target: str) -> Call:
    """The least any Query of "one day" could take here (see _floor)."""
    return _floor(conn, target, lambda chance: _day_statement(log, chance), page=DAY_PAGE)


def latest_floor(log: ScaleLog, conn: psycopg.Connection[Any], target: str) -> Call:
    """The least any Query of "latest 100 of an action" could take here (see
    _floor): without its access record, which Query writes as it reads. Give
    `conn` the generic plan Query reads this page with (ADR 0027)."""
    return _floor(
        conn, target, lambda chance: _latest_statement(log, chance), page=LATEST, whole=True
    )


def _floor(
    conn: psycopg.Connection[Any],
    target: str,
    statement: Callable[[random.Random], tuple[Any, Any]],
    *,
    page: int,  # the page size asked for
    whole: bool = False,  # every answer fills it
) -> Call:
    """The same SQL as Query's run directly, the views it read framed as
    Query's answer frames them, an empty call, and that answer parsed as a
    client parses Query's. A server doing nothing else still costs a call and
    the client's parse, which the raw SQL does not, so raw SQL p95 over this
    p95 is the best ratio any Query could reach on this machine; better than
    reachable, as the empty call carries no page and this frames without
    checking what it frames."""
    check = health_pb2_grpc.HealthStub(grpc.insecure_channel(target)).Check
    events = audit_service_pb2.QueryResponse.DESCRIPTOR.fields_by_name["events"].number

    def call(chance: random.Random) -> None:
        query, params = statement(chance)
        read = _shown(conn.execute(query, params, binary=True).fetchall(), page)
        check(health_pb2.HealthCheckRequest(), timeout=10)
        answer = b"".join([element_prefix(events, len(row[1])) + row[1] for row in read])
        shown = len(audit_service_pb2.QueryResponse.FromString(answer).events)
        assert shown == page if whole else shown

    return call


# The raw baselines read rows as the server does, in binary (store/events.py):
# the fastest way to run the same SQL directly, so the ratio owes nothing to it.


def latest_by_sql(log: ScaleLog, conn: psycopg.Connection[Any]) -> Call:
    def call(chance: random.Random) -> None:
        query, params = _latest_statement(log, chance)
        assert len(_shown(conn.execute(query, params, binary=True).fetchall(), LATEST)) == LATEST

    return call


def day_by_sql(log: ScaleLog, conn: psycopg.Connection[Any]) -> Call:
    def call(chance: random.Random) -> None:
        query, params = _day_statement(log, chance)
        assert _shown(conn.execute(query, params, binary=True).fetchall(), DAY_PAGE)

    return call


def latest_page_by_sql(log: ScaleLog, conn: psycopg.Connection[Any]) -> Call:
    """The bare page of the latest 100 (`_bare_page`)."""

    def call(chance: random.Random) -> None:
        tenant = chance.choice(log.tenants)
        query, params = _bare_page(tenant, EventFilter(actions=(ACTION,)), LATEST)
        assert len(conn.execute(query, params, binary=True).fetchall()) == LATEST

    return call


def day_page_by_sql(log: ScaleLog, conn: psycopg.Connection[Any]) -> Call:
    """The bare page of one day (`_bare_page`)."""

    def call(chance: random.Random) -> None:
        tenant = chance.choice(log.tenants)
        since, until = _day(log, chance)
        event_filter = EventFilter(occurred_after=since, occurred_before=until)
        assert conn.execute(*_bare_page(tenant, event_filter, DAY_PAGE), binary=True).fetchall()

    return call


def _bare_page(tenant: str, event_filter: EventFilter, page: int) -> tuple[Any, Any]:
    """The page's SELECT alone, `page` rows, without the first page's cut at
    QUERY_PAGE_BYTES and the log's size beside it: what sql-latest and sql-day
    ran until the bench took Query's whole statement, kept so their ratios
    stay comparable with the figures measured before."""
    return query_statement(tenant, event_filter, "newest", None, page)


def _shown(read: list[Any], page: int) -> list[Any]:
    """The rows of a first page's statement that its answer shows: events (a
    page of none is one row of the log's size alone), no more than the page."""
    return [row for row in read if row[0] is not None][:page]


# Query's first page runs one statement (store/events.py page_statement): the
# page of the filter, for _FIRST_PAGE_EXTRA rows more, cut after the row that
# takes it past QUERY_PAGE_BYTES, beside the size of the log. The baselines run
# exactly that, with the values Query gives it (test_bench_scale_statements).


def _latest_statement(log: ScaleLog, chance: random.Random) -> tuple[Any, Any]:
    """Query's SQL for the latest 100 of an action, of a tenant drawn by `chance`."""
    tenant = chance.choice(log.tenants)
    return _first_page(tenant, EventFilter(actions=(ACTION,)), LATEST)


def _day_statement(log: ScaleLog, chance: random.Random) -> tuple[Any, Any]:
    """Query's SQL for one day of a tenant, both drawn by `chance`."""
    tenant = chance.choice(log.tenants)
    since, until = _day(log, chance)
    event_filter = EventFilter(occurred_after=since, occurred_before=until)
    return _first_page(tenant, event_filter, DAY_PAGE)


def _first_page(tenant: str, event_filter: EventFilter, page: int) -> tuple[Any, Any]:
    return page_statement(
        tenant, event_filter, "newest", None, page + _FIRST_PAGE_EXTRA, QUERY_PAGE_BYTES,
        log_size=True,
    )  # fmt: skip
