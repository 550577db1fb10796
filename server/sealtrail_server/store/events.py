"""Reads of the events table: one event by id, and filtered keyset pages."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple

import psycopg
from psycopg import sql

from ..domain.errors import FailedPrecondition, IntegrityFailure
from ..domain.event import MAX_FUTURE_SKEW_SECONDS, MAX_RECORD_BYTES, READ_RECORD_ACTIONS
from ..domain.event_ids import received_within
from ..domain.filters import EventFilter
from ..domain.text_search import websearch_text
from .changes import waiting_at_most
from .database import Connection, Database

Order = Literal["newest", "oldest"]
_SKEW = timedelta(seconds=MAX_FUTURE_SKEW_SECONDS)
# About how much of records a page of `stream_events` holds.
PAGE_BYTES: Final = 8 * 1024 * 1024
# The earliest time a filter may name (a Timestamp's, year 1), so that a bound
# derived from it stays a time.
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    record: str
    leaf_hash: bytes


class ShownEvent(NamedTuple):
    """An event as Query reads it: its whole view as appended (ADR 0025); for
    an event appended before there were whole views, the server's fields from
    their columns and the caller view (ADR 0022), or, without one, its record.
    A tuple, not a dataclass: a page makes a thousand of them, at a third of a
    frozen dataclass's cost."""

    seq: int
    event_view: bytes | None
    event_id: str | None  # this and the rest only when there is no event view
    received_at: datetime | None
    leaf_hash: bytes | None
    caller_view: bytes | None
    record: str | None  # only when there is no view at all


# What Query selects. An event with a whole view reads two columns: the others
# are NULL, which costs nothing to send or load.
_SHOWN_COLUMNS = sql.SQL(
    "seq, event_view,"
    " CASE WHEN event_view IS NULL THEN id::text END AS event_id,"
    " CASE WHEN event_view IS NULL THEN received_at END AS received,"
    " CASE WHEN event_view IS NULL THEN leaf_hash END AS leaf,"
    " caller_view,"  # NULL where there is an event view
    " CASE WHEN event_view IS NULL AND caller_view IS NULL THEN record END AS whole_record"
)
# `shown_bytes` of a row, in SQL. octet_length reads a stored view's size from
# its header: the view of a row left out of the page is never read whole.
_SHOWN_BYTES = sql.SQL(
    "coalesce(octet_length(event_view), coalesce(octet_length(caller_view), char_length(record))"
    " + 200)"
)
# A page of `query_statement` (with `_SHOWN_BYTES` as `size`) cut after the row
# that takes it past its bytes: its first two rows, and each after them whose
# earlier rows hold at most that many bytes.
_WITHIN_BYTES = sql.SQL(
    "SELECT seq, event_view, event_id, received, leaf, caller_view, whole_record FROM ("
    " SELECT *, sum(size) OVER w - size AS earlier, row_number() OVER w AS n FROM ({page}) AS page"
    " WINDOW w AS (ORDER BY seq {direction} ROWS UNBOUNDED PRECEDING)) AS sized"
    " WHERE n <= 2 OR earlier <= %s ORDER BY seq {direction}"
)
# What the alert evaluator reads.
_RECORD_COLUMNS = sql.SQL("seq, record, leaf_hash")


# KEY_PROBE: how a hot lookup by a unique key is written. `WHERE tenant_id = $1
# AND id = $2` can be served by any (tenant_id, ...) index, and with statistics
# taken while a tenant was tiny the planner rates them all at one row and may
# pick one that walks the tenant's rows (seen: idempotency lookups through
# events_received_at, Record throughput halved). As a range from the key,
# `tenant_id = $1 AND id >= $2 ORDER BY id LIMIT 1`, only the index on exactly
# those columns narrows the scan and yields that order, so it is the one
# chosen; the caller then checks the row found is the one asked for. (Not a
# row comparison `(tenant_id, id) >= ($1, $2)`: beside the tenant equality the
# row-level security policy adds, the B-tree starts it at the tenant's first
# row; the system role's probes, under no policy, may use one.)
_GET_EVENT = sql.SQL(
    "SELECT seq, record, leaf_hash FROM ("
    " SELECT id, seq, record, leaf_hash FROM events"
    " WHERE tenant_id = %(tenant)s AND id >= %(id)s::uuid{received} ORDER BY id LIMIT 1) AS e"
    " WHERE e.id = %(id)s::uuid"
)
# In every partition, and in the one of the millisecond the id names (ADR 0031).
# Bounded by time, the scan must also end at the id: received_at is no bound of
# the (tenant_id, id, received_at) index's scan, only a filter on its entries,
# and an id not in its millisecond would walk all the tenant's later ids there.
_GET_EVENT_ANYWHERE = _GET_EVENT.format(received=sql.SQL(""))
_GET_EVENT_RECEIVED = _GET_EVENT.format(
    received=sql.SQL(
        " AND id <= %(id)s::uuid"
        " AND received_at >= %(received_from)s AND received_at < %(received_until)s"
    )
)


async def get_event(db: Database, *, tenant_id: str, event_id: str) -> StoredEvent | None:
    """The event `event_id` (a UUID in lowercase text) of `tenant_id`, if any.
    Looked for where its id says it was received, then, for an event appended
    before ids said so (or none at all), in every partition."""
    received = received_within(event_id)
    params = {"tenant": tenant_id, "id": event_id}
    async with db.connection(tenant_id) as conn:
        row = None
        if received is not None:
            cursor = await conn.execute(
                _GET_EVENT_RECEIVED,
                {**params, "received_from": received[0], "received_until": received[1]},
            )
            row = await cursor.fetchone()
        if row is None:
            cursor = await conn.execute(_GET_EVENT_ANYWHERE, params)
            row = await cursor.fetchone()
    return None if row is None else _stored(row)


def refuse_if_another_event(event_id: str, seq: int, named: object) -> None:
    """IntegrityFailure unless `named`, the id the record found for
    `event_id` names (None: none), is `event_id`. An event is found by its
    row's `id` column, a copy of its record's id that a superuser can change:
    the record of another event, served as the one asked for, carries a proof
    that checks (of that other event), helper-219."""
    if named != event_id:
        raise IntegrityFailure(
            f"event {event_id} was looked up by its row's id, which leads to seq {seq}, whose"
            f" record is of another event ({named}): the row was changed outside Sealtrail"
        )


async def query_events(
    db: Database,
    *,
    tenant_id: str,
    event_filter: EventFilter,
    order: Order,
    after_seq: int | None,
    limit: int,
    seq_above: int | None = None,
    received_from: datetime | None = None,
) -> list[StoredEvent]:
    """Up to `limit` matching events' records, strictly past `after_seq` in
    `order`; only those after `seq_above` and received from `received_from`,
    if given (bounds of a newest-first read that an index scan stops at)."""
    query, params = query_statement(
        tenant_id, event_filter, order, after_seq, limit, columns=_RECORD_COLUMNS,
        seq_above=seq_above, received_from=received_from,
    )  # fmt: skip
    async with db.connection(tenant_id) as conn:
        cursor = await conn.execute(query, params)
        rows = await cursor.fetchall()
    return [_stored(row) for row in rows]


async def query_page(
    db: Database,
    *,
    tenant_id: str,
    event_filter: EventFilter,
    order: Order,
    after_seq: int | None,
    limit: int,
    page_bytes: int,
    seq_above: int | None = None,
    seq_below: int | None = None,
    timeout: float | None = None,
) -> list[ShownEvent]:
    """Up to `limit` matching events as Query shows them, strictly past
    `after_seq` in `order` (and above `seq_above`, below `seq_below`, if
    given); no further than the first row past `page_bytes` (by
    `shown_bytes`, the second row at least). A page answers about that
    many bytes: reading its whole `limit` read a thousand events of 60 KB
    (60 MB) to answer 17 of them (helper-153).

    `timeout`: the seconds a read that no index yields may take (a page
    of any other filter may read the tenant's whole log to fill itself);
    past them FailedPrecondition (QUERY_TIMEOUT). None: no bound of its own."""
    rows, _ = await _read_page(
        db, tenant_id=tenant_id, event_filter=event_filter, order=order, after_seq=after_seq,
        limit=limit, page_bytes=page_bytes, seq_above=seq_above, seq_below=seq_below,
        timeout=timeout,
    )  # fmt: skip
    return rows


async def query_first_page(
    db: Database,
    *,
    tenant_id: str,
    event_filter: EventFilter,
    order: Order,
    limit: int,
    page_bytes: int,
    timeout: float | None = None,
) -> tuple[list[ShownEvent], int]:
    """`query_page` from the start, and the size of the log the read saw (in
    the same statement, so of the same snapshot): an event of a higher seq
    committed after the read began."""
    rows, size = await _read_page(
        db, tenant_id=tenant_id, event_filter=event_filter, order=order, after_seq=None,
        limit=limit, page_bytes=page_bytes, log_size=True, timeout=timeout,
    )  # fmt: skip
    assert size is not None
    return rows, size


# A page (`_WITHIN_BYTES`) with the size of the log its snapshot holds on each
# row; one row of NULLs but the size when no event matches. The page comes
# first: a statement's span is named after the first table it reads from
# (store/traced.py), and this one's is a page of events.
_WITH_LOG_SIZE = sql.SQL(
    "SELECT seq, event_view, event_id, received, leaf, caller_view, whole_record, head.size"
    " FROM ({page}) AS page RIGHT JOIN (SELECT coalesce("
    " (SELECT tree_size FROM chain_heads WHERE tenant_id = %s), 0) AS size) AS head"
    " ON true ORDER BY seq {direction}"
)


async def _read_page(
    db: Database,
    *,
    tenant_id: str,
    event_filter: EventFilter,
    order: Order,
    after_seq: int | None,
    limit: int,
    page_bytes: int,
    seq_above: int | None = None,
    seq_below: int | None = None,
    log_size: bool = False,
    timeout: float | None = None,
) -> tuple[list[ShownEvent], int | None]:
    query, params = page_statement(
        tenant_id, event_filter, order, after_seq, limit, page_bytes,
        seq_above=seq_above, seq_below=seq_below, log_size=log_size,
    )  # fmt: skip
    # PostgreSQL plans a statement on the partitioned table anew at each run,
    # for the values given: about 1 ms of planning for a page that reads in a
    # fraction of that (latest 100 of an action: 2.5 -> 1.0 ms p50 generic).
    generic = plan_fixed_by_index(event_filter)
    # A page one index yields reads its rows and no more. Any other may read
    # the tenant's whole log to fill it (a word found nowhere, an action
    # suffix): within the bulk reads' share, fairly among tenants. On any
    # pooled connection, one tenant's slow searches took them all, the
    # appender's too, and every other tenant's writes failed meanwhile. Its
    # turn is waited for as long as a connection would be, no longer: the
    # caller is told to retry then, as the pool's timeout told it before.
    # And it reads for `timeout` at most: a caller without a deadline (the
    # console's, grpcurl's) held that connection until the whole log was
    # read, minutes of a large one; the caller's cancel ends it sooner.
    if generic:
        async with db.connection(tenant_id, generic_plans=True) as conn:
            # Binary: bytea arrives as its bytes, not as hex twice their size
            # to decode (a page of 1,000 events reads in three quarters of the time).
            cursor = await conn.execute(query, params, binary=True)
            rows = await cursor.fetchall()
    else:
        async with db.bulk_connection(tenant_id, bounded=True, statement_timeout=timeout) as conn:
            try:
                cursor = await conn.execute(query, params, binary=True)
                rows = await cursor.fetchall()
            except psycopg.errors.QueryCanceled:
                if timeout is None:
                    raise
                raise query_timed_out(timeout) from None
    if not log_size:
        return list(map(ShownEvent._make, rows)), None
    size = int(rows[0][-1])
    return [ShownEvent._make(row[:-1]) for row in rows if row[0] is not None], size


def query_timed_out(timeout: float) -> FailedPrecondition:
    """What a Query page past its time answers: not retried by the clients
    (another attempt would read as long), and saying what makes it cheaper."""
    seconds = f"{timeout:g}"
    return FailedPrecondition(
        f"reading the page took longer than the {seconds} s a filtered page may read for"
        " (SEALTRAIL_QUERY_TIMEOUT): no index yields this filter's events; narrow the time"
        " range (filter.occurred_after, filter.occurred_before) or the filter (one action),"
        " and query again",
        reason="QUERY_TIMEOUT",
        metadata={"timeout_seconds": seconds},
    )


def page_statement(
    tenant_id: str,
    event_filter: EventFilter,
    order: Order,
    after_seq: int | None,
    limit: int,
    page_bytes: int,
    *,
    seq_above: int | None = None,
    seq_below: int | None = None,
    log_size: bool = False,
) -> tuple[sql.Composed, list[Any]]:
    """The statement `_read_page` runs and its parameters (the bench runs it
    directly too, as the baseline of Query's)."""
    page, params = query_statement(
        tenant_id, event_filter, order, after_seq, limit,
        columns=sql.SQL("{}, {} AS size").format(_SHOWN_COLUMNS, _SHOWN_BYTES),
        seq_above=seq_above, seq_below=seq_below,
    )  # fmt: skip
    direction = sql.SQL("DESC" if order == "newest" else "ASC")
    query: sql.Composed = _WITHIN_BYTES.format(page=page, direction=direction)
    params = [*params, page_bytes]
    if log_size:
        query = _WITH_LOG_SIZE.format(page=query, direction=direction)
        params = [*params, tenant_id]
    return query, params


def shown_bytes(row: ShownEvent) -> int:
    """About the bytes `row` takes in an answer (`_SHOWN_BYTES` counts the same)."""
    if row.event_view is not None:
        return len(row.event_view)
    return len(row.caller_view or b"") + len(row.record or "") + 200  # the server's fields


def plan_fixed_by_index(f: EventFilter) -> bool:
    """Whether one index decides the plan of a page of `f`, whatever the
    values: no filter, or one action, keyset bound or not. The primary key
    (tenant_id, seq, ...) or the (tenant_id, action, seq) index yields the page
    in order; nothing is left to the values but where the scan starts. Any
    other filter's plan depends on them: over a wide time range a generic plan
    sorts every event of the range where the plan made for the values walks
    seq and stops at the page (2.3 -> 181 ms, latest 100 over 89 days); a rare
    category or actor wants its own index where a common one does not
    (ADR 0027)."""
    return len(f.actions) <= 1 and f == EventFilter(actions=f.actions)


def query_statement(
    tenant_id: str,
    event_filter: EventFilter,
    order: Order,
    after_seq: int | None,
    limit: int,
    *,
    columns: sql.Composable = _SHOWN_COLUMNS,
    seq_above: int | None = None,
    received_from: datetime | None = None,
    seq_below: int | None = None,
) -> tuple[sql.Composed, list[Any]]:
    """The SQL of one Query page and its parameters (the bench runs it directly too)."""
    bounds: list[sql.Composable] = []
    values: list[Any] = []
    if after_seq is not None:
        bounds.append(sql.SQL("seq < %s" if order == "newest" else "seq > %s"))
        values.append(after_seq)
    if seq_above is not None:
        bounds.append(sql.SQL("seq > %s"))
        values.append(seq_above)
    if seq_below is not None:
        bounds.append(sql.SQL("seq < %s"))
        values.append(seq_below)
    if received_from is not None:
        bounds.append(sql.SQL("received_at >= %s"))
        values.append(received_from)
    page = page_of_events(tenant_id, event_filter, columns=columns, bounds=bounds, order=order)
    return page.query, page.params(values, limit)


# A page of the events `conditions` select, in seq order: its parameters
# those of the conditions, then the limit.
_PAGE: Final = sql.SQL(
    "SELECT {columns} FROM events WHERE {conditions} ORDER BY seq {direction} LIMIT %s"
)


@dataclass(frozen=True, slots=True)
class PageStatement:
    """A keyset page's statement (`page_of_events`) and how to make its
    parameters: `params(bounds, limit)`, the values of the page's bounds
    (its conditions past the filter's, in their order) and its limit."""

    query: sql.Composed
    filter_params: tuple[Any, ...]
    # Of a credential's page, each branch's own parameters (`_credential_of`)
    # before its conditions'; empty for any other page.
    credential: tuple[Any, ...]

    def params(self, bounds: Sequence[Any], limit: int) -> list[Any]:
        selected = [*self.filter_params, *bounds, limit]
        if not self.credential:
            return selected
        return [*self.credential, *selected, *self.credential, *selected, limit]


def page_of_events(
    tenant_id: str,
    f: EventFilter,
    *,
    columns: sql.Composable,
    bounds: Sequence[sql.Composable],
    order: Order,
) -> PageStatement:
    """`SELECT {columns}` of the events of `tenant_id` that `f` and `bounds`
    (conditions, ANDed: the keyset's, a page's range) select, ORDER BY seq
    (newest: DESC) and LIMIT. Of a `credential_id`, the two branches of
    `selected_events` each under every condition, its own ORDER BY and the
    LIMIT: each walks its index in seq order and stops at the page, then the
    page is the first of the at most twice as many rows merged. Where the
    branches were a relation the page was taken from, each was planned
    apart, unordered and unlimited: a page of the latest 100 of a credential
    read and sorted every one of its events in the range (ADR 0142)."""
    conditions, params = filter_conditions(tenant_id, f, credential_in_source=True)
    where = sql.SQL(" AND ").join([*conditions, *bounds])
    direction = sql.SQL("DESC" if order == "newest" else "ASC")
    if f.credential_id is None:
        query = _PAGE.format(columns=columns, conditions=where, direction=direction)
        return PageStatement(query, tuple(params), ())
    (since, before), credential = _credential_of(f)
    query = _CREDENTIAL_PAGE.format(
        since=since, before=before, columns=columns, conditions=where, direction=direction
    )
    return PageStatement(query, tuple(params), credential)


@dataclass(slots=True)
class RemovedSeqs:
    """How many seqs of what `stream_events` read through retention had
    removed (their tombstones, tree_nodes level 0), counted page by page."""

    count: int = 0


# A page of `stream_events` and the tombstones of the seqs it covers, read in
# one statement, so in one snapshot: (position, its last row's seq] for a full
# page, (position, upto_seq] for the last. A purge deletes an event and writes
# its tombstone in one statement (store/retention.py): each seq of the pages
# is read once, as a row, as a tombstone, or as neither, never as both, however
# a pass runs between two pages. The tombstones' row comes last (its seq null).
_PAGE_AND_REMOVED: Final = sql.SQL(
    "WITH page AS ({page})"
    " SELECT seq, record, leaf_hash, NULL::bigint FROM page"
    " UNION ALL SELECT NULL, NULL, NULL, (SELECT count(*) FROM tree_nodes"
    "  WHERE tenant_id = %s AND level = 0 AND idx >= %s AND idx < (SELECT CASE"
    "   WHEN count(*) = %s THEN max(seq) ELSE %s END FROM page))"
    " ORDER BY seq NULLS LAST"
)


async def stream_events(
    db: Database,
    *,
    tenant_id: str,
    event_filter: EventFilter,
    after_seq: int,
    upto_seq: int,
    fetch_rows: int = 2000,
    page_bytes: int | None = PAGE_BYTES,
    after_first_page: Callable[[Connection], Awaitable[None]] | None = None,
    removed: RemovedSeqs | None = None,
) -> AsyncGenerator[StoredEvent, None]:
    """Matching events with after_seq < seq <= upto_seq, oldest first, in
    keyset pages of at most `fetch_rows`, sized to hold about `page_bytes` of
    records: memory stays bounded whatever the count or the records' size (a
    page of 2,000 records of 64 KiB was 128 MiB). The first page assumes
    records of the largest size; each next one is sized by the records of the
    page before. None: pages of `fetch_rows`, a caller that sized them by its
    records itself (the forwarder, a request's worth). A connection is held
    only while a page is read, never while
    the consumer (a slow stream or export client) takes its time: slow readers
    cannot starve the appender of connections; and through the pool's share
    for bulk reads (`Database.bulk_connection`), so many at once cannot
    either. `after_first_page` runs on the first page's connection once it is
    read, before any event is yielded (and may raise): whatever it then finds
    committed was committed before that read too, or during it.

    `removed`, if given, counts the seqs of (after_seq, upto_seq] retention had
    removed, each page's read with its rows (`_PAGE_AND_REMOVED`): with the
    rows yielded and those the filter left out, every seq of the span once,
    a pass running meanwhile or not."""
    page = page_of_events(
        tenant_id, event_filter, columns=_RECORD_COLUMNS,
        bounds=[sql.SQL("seq > %s"), sql.SQL("seq <= %s")], order="oldest",
    )  # fmt: skip
    query = page.query
    if removed is not None:
        query = _PAGE_AND_REMOVED.format(page=page.query)
    position = after_seq
    limit = fetch_rows
    if page_bytes is not None:
        limit = page_rows(fetch_rows, page_bytes, rows=1, size=MAX_RECORD_BYTES)
    while True:
        args = page.params([position, upto_seq], limit)
        if removed is not None:
            args += [tenant_id, position, limit, upto_seq]
        async with db.bulk_connection(tenant_id) as conn:
            cursor = await conn.execute(query, args)
            rows = await cursor.fetchall()
            if after_first_page is not None:
                await after_first_page(conn)
                after_first_page = None
        if removed is not None:
            *pages, (*_, tombstones) = rows
            rows = [row[:3] for row in pages]
            removed.count += tombstones
        for row in rows:
            yield _stored(row)
        if len(rows) < limit:
            return
        position = rows[-1][0]
        if page_bytes is not None:
            size = sum(len(row[1]) for row in rows)
            limit = page_rows(fetch_rows, page_bytes, rows=len(rows), size=size)


def page_rows(most: int, page_bytes: int, *, rows: int, size: int) -> int:
    """Rows of about `page_bytes` (at least 1, at most `most`) where `rows`
    records took `size` bytes."""
    return max(1, min(most, page_bytes * rows // max(1, size)))


async def first_seq_received_since(db: Database, *, tenant_id: str, since: datetime) -> int:
    """The seq of the first event received at or after `since`; one past the
    log's end if there is none."""
    async with db.connection(tenant_id) as conn:
        return await first_seq_received_since_on(conn, tenant_id=tenant_id, since=since)


async def first_seq_received_since_on(conn: Connection, *, tenant_id: str, since: datetime) -> int:
    """`first_seq_received_since` on `conn`, a connection of the tenant's
    (in the transaction of a change, say)."""
    cursor = await conn.execute(
        "SELECT coalesce("
        " (SELECT min(seq) FROM events WHERE tenant_id = %s AND received_at >= %s),"
        " (SELECT tree_size + 1 FROM chain_heads WHERE tenant_id = %s), 1)",
        [tenant_id, since, tenant_id],
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


class ReceivedRange(NamedTuple):
    """The seqs of the events received in a period, `first` to `last` (first
    = last + 1 when there is none), in a log of `size` events."""

    first: int
    last: int
    size: int


# In one statement, so at one size of the log: its size, one past the last
# event it holds from before the first received at or after `since` (0 if
# none: 1), and the first seq received at or after `until` (one past its end
# if none is, or if `until` is unset). Every seq below that first one was
# received before `since`: the index on (tenant_id, seq, received_at) reads
# the months before it only, one row each.
_RECEIVED_RANGE: Final = sql.SQL(
    "SELECT size, coalesce((SELECT max(seq) FROM events WHERE tenant_id = %(tenant)s"
    "  AND received_at < %(since)s AND seq < start), 0) + 1, finish"
    " FROM (SELECT size,"
    "  coalesce((SELECT min(seq) FROM events WHERE tenant_id = %(tenant)s"
    "   AND received_at >= %(since)s AND seq <= size), size + 1) AS start,"
    "  CASE WHEN %(until)s::timestamptz IS NULL THEN size + 1 ELSE"
    "   coalesce((SELECT min(seq) FROM events WHERE tenant_id = %(tenant)s"
    "    AND received_at >= %(until)s AND seq <= size), size + 1) END AS finish"
    "  FROM (SELECT coalesce("
    "   (SELECT tree_size FROM chain_heads WHERE tenant_id = %(tenant)s), 0) AS size) AS head"
    " ) AS found"
)


async def time_once_appended(
    db: Database, *, tenant_id: str, clock: Callable[[], datetime], seconds: float
) -> datetime:
    """`clock()`, read once every append of the tenant stamped before it has
    committed, or will be stamped anew after it.

    An append under the head's lock stamps received_at under it, before a
    commit that can take hundreds of milliseconds: a period's range read
    meanwhile left out a batch stamped within it, and the next period's
    started after it, a gap between the two (helper-182). A small append
    from a head its process kept (ADR 0024) stamps received_at before its
    one statement takes the head, with no lock: such a write stamped within
    the period, held there (its hashing, a round trip, a process paused),
    found the head free, and committed after the range was read, received in
    the period and outside its range.

    So the head's row is rewritten as it is (`SET tree_size = tree_size`: a
    new version of it, nothing changed), and the clock read while its lock
    is held. The lock waits for the commit of an append that holds the head;
    any later append's stamp, under the lock, is after the time read. The
    new version fences off a write from a kept head stamped before: it moves
    the head only from the row version it kept (its xmin), so it writes
    nothing, and is written again under the lock, stamped anew, after the
    time read (in every process: the fence is the row's). The lock is let go
    at once (appends wait only for the clock's read); a write from a kept
    head of the tenant next goes under the lock, once.

    On the system role's connection: the service role may not update heads.
    A wait longer than `seconds` (a process frozen mid-append, an erasure's
    DELETEs) is Unavailable, retry later."""
    async with db.system_connection() as conn, conn.transaction():
        busy = "an append of the log is taking long; retry"
        async with waiting_at_most(conn, seconds, busy=busy):
            await conn.execute(
                "UPDATE chain_heads SET tree_size = tree_size WHERE tenant_id = %s", [tenant_id]
            )
        return clock()


async def received_range(
    db: Database, *, tenant_id: str, since: datetime, until: datetime | None
) -> ReceivedRange:
    """The events received at or after `since` and before `until`: from the
    one after the last event the log holds of those received before `since`
    to the one before the first received since `until` (None: to the log's
    end). Retention's tombstones keep no time: the events it removed just
    before the first received since `since` may have been received in the
    period, so the range starts with them, after an event the log holds and
    shows received before (a period retention emptied is the range of the
    leaves it left there, not "none"). So consecutive periods meet with no
    seq between them, and none in both but such removed events, in both;
    and the range ends within the log as read (an event committed meanwhile
    is after it)."""
    async with db.connection(tenant_id) as conn:
        cursor = await conn.execute(
            _RECEIVED_RANGE, {"tenant": tenant_id, "since": since, "until": until}
        )
        row = await cursor.fetchone()
    assert row is not None
    size, first, end = (int(value) for value in row)
    return ReceivedRange(first=first, last=max(end, first) - 1, size=size)


async def recent_exports(conn: Connection, *, tenant_id: str, window: float) -> tuple[int, float]:
    """How many exports the tenant made in the last `window` seconds, and how
    many seconds ago the oldest of them was."""
    cursor = await conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(received_at)), 0)"
        " FROM events WHERE tenant_id = %s AND action = 'audit_log.exported'"
        " AND received_at > clock_timestamp() - make_interval(secs => %s)",
        [tenant_id, window],
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


async def matching_seqs(
    conn: Connection, tenant_id: str, seqs: list[int], event_filter: EventFilter
) -> set[int]:
    """Which of the tenant's events `seqs` match `event_filter`, as Query and
    the forwarder's reads decide it: full-text search included, which
    RecordMatcher leaves to the database."""
    conditions, params = filter_conditions(tenant_id, event_filter)
    query = sql.SQL("SELECT seq FROM events WHERE {} AND seq = ANY(%s)").format(
        sql.SQL(" AND ").join(conditions)
    )
    cursor = await conn.execute(query, [*params, seqs])
    return {seq for (seq,) in await cursor.fetchall()}


def selected_events(
    tenant_id: str, f: EventFilter
) -> tuple[sql.Composable, list[sql.Composable], list[Any]]:
    """What `FROM {events} WHERE {conditions}` selects `f` in one tenant
    with: the relation, the conditions (ANDed) and the parameters of both,
    the relation's first. `events` itself, with `filter_conditions`; but of
    a `credential_id`, the rows appended since migration 0056 that hold it
    (events_credential_id yields them in seq order, an index condition for
    the service too) and, apart, the rows appended before (credential_kind
    NULL: events_credential_unread yields them in seq order, and only they
    are read off their records), a UNION ALL the planner makes one append
    of the two, each under every other condition (ADR 0142): what a count
    reads. A page is no ORDER BY and LIMIT on this relation, which the
    planner leaves outside the branches: `page_of_events`. A
    `credential_kind` with it is a condition of each branch, the column's
    in the one, the record's in the other (`_credential_of`)."""
    conditions, params = filter_conditions(tenant_id, f, credential_in_source=True)
    if f.credential_id is None:
        return sql.SQL("events"), conditions, params
    (since, before), credential = _credential_of(f)
    relation = _OF_CREDENTIAL.format(since=since, before=before)
    return relation, conditions, [*credential, *credential, *params]


def _credential_of(f: EventFilter) -> tuple[tuple[sql.SQL, sql.SQL], tuple[Any, ...]]:
    """The two branches of `f`'s credential (`selected_events`), the rows
    appended since migration 0056 and before, and the parameters of each:
    its id, and its kind if `f` has one. The kind is a condition beside the
    id's, the column's (text equality: the id stays the index condition)
    or the record's."""
    if f.credential_kind is None:
        return (_SINCE_0056, _BEFORE_0056), (f.credential_id,)
    return (_SINCE_0056_OF_KIND, _BEFORE_0056_OF_KIND), (f.credential_id, f.credential_kind)


def filter_conditions(
    tenant_id: str, f: EventFilter, *, credential_in_source: bool = False
) -> tuple[list[sql.Composable], list[Any]]:
    """SQL conditions (ANDed) and their parameters selecting `f` in one
    tenant; the credential's id and kind left out if `credential_in_source`
    and it has an id (the relation selects it: `selected_events`)."""
    conditions: list[sql.Composable] = [sql.SQL("tenant_id = %s")]
    params: list[Any] = [tenant_id]

    def add(condition: str, *values: Any) -> None:
        conditions.append(sql.SQL(condition))
        params.extend(values)

    if f.occurred_after is not None:
        add("occurred_at >= %s", f.occurred_after)
        # Implied (an event occurs at most MAX_FUTURE_SKEW after it is received),
        # and it lets PostgreSQL skip the months received before (ADR 0015).
        add("received_at >= %s", max(f.occurred_after, _EARLIEST + _SKEW) - _SKEW)
    if f.occurred_before is not None:
        add("occurred_at < %s", f.occurred_before)
    if len(f.actions) == 1 and not f.action_prefixes and not f.action_suffixes:
        # An equality, not `= ANY`: with it the (tenant_id, action, seq) index
        # yields the action's events in seq order, so "the latest 100 of an
        # action" reads 100 rows however rare or common the action is (an
        # array, even of one, makes PostgreSQL read every match and sort).
        add("action = %s", f.actions[0])
    elif f.actions or f.action_prefixes or f.action_suffixes:
        matched = _any_action_of(f.actions, f.action_prefixes, f.action_suffixes, params)
        conditions.append(sql.SQL("({})").format(matched))
    if f.excluded_actions or f.excluded_prefixes or f.excluded_suffixes:
        left_out = _any_action_of(
            f.excluded_actions, f.excluded_prefixes, f.excluded_suffixes, params
        )
        conditions.append(sql.SQL("NOT ({})").format(left_out))
    if f.categories:
        add("category = ANY(%s)", list(f.categories))
    if f.min_severity:
        add("severity >= %s", f.min_severity)
    if f.severities:
        add("severity = ANY(%s::smallint[])", list(f.severities))
    if f.outcomes:
        add("outcome = ANY(%s)", list(f.outcomes))
    if f.actor is not None:
        # The id exactly; the email lowered, or as given (`actor_emails`).
        add("(actor_id = %s OR actor_email = ANY(%s))", f.actor, list(f.actor_emails()))
    if f.actor_prefix is not None:
        # The id's start as given, the email's lowered or as given
        # (`actor_email_prefixes`): byte-order ranges on the text_pattern_ops
        # indexes of migration 0054, never LIKE, which is not leakproof (no
        # index condition under row-level security, ADR 0013) and would read
        # `%` and `_` as wildcards (ADR 0135).
        alternatives = [prefix_range("actor_id", f.actor_prefix, params)]
        alternatives += [
            prefix_range("actor_email", start, params) for start in f.actor_email_prefixes()
        ]
        conditions.append(sql.SQL("({})").format(sql.SQL(" OR ").join(alternatives)))
    if f.actor_email_domain is not None:
        # The email's end, "@domain" (or ".domain": a subdomain). No index
        # serves it: the other conditions choose the rows. length(), not a
        # length counted here: it counts as right() does in any encoding.
        ends = f.email_domain_suffixes()
        at_end = sql.SQL("right(actor_email, length(%s::text)) = %s")
        conditions.append(sql.SQL("({})").format(sql.SQL(" OR ").join([at_end] * len(ends))))
        params += [value for end in ends for value in (end, end)]
    if len(resource_types := f.any_resource_type()) == 1:
        # `resource_type`, or a list of one: the same equality, so the same
        # plan (an array, even of one, is no ordered scan of the index with
        # `resource_id` too: `actions` says why).
        add("resource_type = %s", resource_types[0])
    elif resource_types:
        # Any of several: the (tenant_id, resource_type, resource_id, seq)
        # index still serves it, each value an index search (text equality is
        # leakproof, an index condition under row-level security, ADR 0013).
        add("resource_type = ANY(%s::text[])", list(resource_types))
    if f.resource_id is not None:
        add("resource_id = %s", f.resource_id)
    if f.request_id is not None:
        add("request_id = %s", f.request_id)
    if f.trace_id is not None:
        add("trace_id = %s", f.trace_id)
    if f.recorded_by is not None:
        add("recorded_by = %s", f.recorded_by)
    if (ip_range := f.ip_range()) is not None:
        add("ip >= %s::inet AND ip <= %s::inet", *ip_range)
    if len(countries := f.any_country()) == 1:
        # `country`, or a list of one. No column, no index: read off the
        # record (json, not jsonb: one key extracted, not the whole record
        # converted); other conditions and a time range choose the rows.
        add(f"{RECORD_COUNTRY} = %s", countries[0])
    elif countries:
        # Any of several, read off each record once as one is.
        add(f"{RECORD_COUNTRY} = ANY(%s::text[])", list(countries))
    if f.user_agent is not None:
        # Contains, A-Z in either case (`agent_key`): strpos, not LIKE, so `%`,
        # `_` and `\` are themselves; lower() under the C collation, which
        # lowers A-Z alone whatever the database's locale (translate() of the
        # 26 letters took 2.6 times as long). No index: bounded as `country` is.
        add(f'strpos(lower({RECORD_USER_AGENT} COLLATE "C"), %s) > 0', f.user_agent)
    if f.credential_id is not None and not credential_in_source:
        # Exactly as recorded: the column (migration 0056), or of a row
        # appended before it (credential_kind NULL) read off the record, as
        # it was (ADR 0142). The record's id is not leakproof, so for the
        # service the OR is a filter, no index condition: a statement read
        # often selects the two apart instead (`selected_events`).
        add(
            f"(credential_id = %s OR (credential_kind IS NULL AND {RECORD_CREDENTIAL_ID} = %s))",
            f.credential_id,
            f.credential_id,
        )
    if f.credential_kind is not None and (f.credential_id is None or not credential_in_source):
        # As the id is read: the column, or of a row appended before
        # migration 0056 the record's. Alone, no index serves it (a kind is
        # common): other conditions and a time range choose the rows.
        add(
            "(credential_kind = %s OR"
            f" (credential_kind IS NULL AND {RECORD_CREDENTIAL_KIND} = %s))",
            f.credential_kind,
            f.credential_kind,
        )
    if f.actor_types:
        # `actor.type` as the record writes it (`api_key`; one recorded without
        # a type is `user`), read off the record as `country` is: no column, no
        # index (no migration); other conditions and a time range choose the
        # rows, the timeout bounds the rest.
        add(f"{RECORD_ACTOR_TYPE} = ANY(%s::text[])", list(f.actor_types))
    if f.http_status_classes:
        # The record's status code as text, three digits (`503`), LIKE a class
        # (`5__`) or a code; read off the record as `country` is: no column,
        # no index (no migration, ADR 0136); other conditions and a time range
        # choose the rows, the timeout bounds the rest.
        add(f"{RECORD_HTTP_STATUS} LIKE ANY(%s::text[])", list(f.status_patterns()))
    if f.min_duration_ms is not None:
        # The duration_ms column (migration 0064, ADR 0149), compared as the
        # matcher compares the record's; of a row whose column is unread
        # (appended before it, not yet backfilled) the record's, as a
        # measured count reads it, only if the tenant has such rows: one
        # probe of events_duration_unread per statement (an InitPlan, run
        # once), false once the backfill is done, so that no record is parsed.
        add(
            f"(duration_ms >= %s OR ((SELECT EXISTS (SELECT FROM events WHERE tenant_id = %s"
            f" AND {DURATION_UNREAD})) AND {DURATION_UNREAD} AND {DURATION_READ} >= %s))",
            f.min_duration_ms,
            tenant_id,
            f.min_duration_ms,
        )
    if f.http_routes:
        # The record's route exactly as recorded (text equality, byte for
        # byte: no prefix, no case folding), any of them; read off the record
        # as the status code is (no column, no index, no migration, ADR 0136).
        add(f"{RECORD_HTTP_ROUTE} = ANY(%s::text[])", list(f.http_routes))
    if f.has_http_route is not None:
        # Whether the record has a route, read off it as `http_routes` reads
        # one: a condition of the rows the other conditions' index yields.
        add(f"{RECORD_HTTP_ROUTE} IS {'NOT NULL' if f.has_http_route else 'NULL'}")
    if f.changed_fields:
        # A change whose field is one of them, exactly: an EXISTS over the
        # record's `changes` (json, as `country` is read: not the whole record
        # made jsonb), no column, no index (no migration); other conditions
        # and a time range choose the rows, the timeout bounds the rest.
        add(f"EXISTS ({_CHANGED_FIELD} = ANY(%s::text[]))", list(f.changed_fields))
    if f.actor_roles:
        # Any of them among the row's `actor_roles` column (the record's
        # `actor.roles`, migration 0065, ADR 0152), each exactly: a condition
        # of the rows the tenant's index yields (no index: `&&` is not
        # leakproof, ADR 0013), read without parsing the record. A row
        # without roles has NULL there, which matches nothing; the migration
        # wrote the rows appended before it, so no record is read.
        add("actor_roles && %s::text[]", list(f.actor_roles))
    for key, value in f.details_equals:
        # The top-level detail's text (`->>`: a string's own, a number's or
        # boolean's as the record writes it, RFC 8785), exactly; null is
        # NULL. An object's or array's `->>` is its JSON text, which begins
        # with `{` or `[`: a value that could equal it also asks the type, so
        # only a scalar matches (`details_match`). Read off the record as
        # `country` is: no column, no index; other conditions and a time
        # range choose the rows, the timeout bounds the rest.
        add(f"({RECORD_DETAILS} ->> %s) = %s", key, value)
        if value.startswith(("{", "[")):
            add(f"json_typeof({RECORD_DETAILS} -> %s) NOT IN ('object', 'array')", key)
    if f.text is not None:
        # A dash standing alone is no operator (`payroll - q3`): websearch_text.
        searched = websearch_text(f.text)
        if f.searches_read_filters():
            add(f"{_SEARCHED} @@ websearch_to_tsquery('simple', %s)", searched)
        else:
            add(f"{_SEARCHED_BUT_READ_FILTERS} @@ websearch_to_tsquery('simple', %s)",
                list(READ_RECORD_ACTIONS), searched)  # fmt: skip
    return conditions, params


# What `text` searches: description and details, and the names (migration
# 0038), every word in one or the other.
_SEARCHED: Final = "(search_doc || to_tsvector('simple', coalesce(search_names, '')))"
# What a read's record (READ_RECORD_ACTIONS) is searched by when the filter
# does not name reads: its description, names and the person it was made on
# behalf of (ADR 0146), not the filter it keeps.
_READ_WORDS: Final = (
    "to_tsvector('simple', concat_ws(' ', record::jsonb ->> 'description', search_names,"
    " (record::jsonb -> 'details') ->> 'on_behalf_of'))"
)
# The same but for the filter a read's record keeps (READ_RECORD_ACTIONS).
_SEARCHED_BUT_READ_FILTERS: Final = (
    f"(CASE WHEN action = ANY(%s) THEN {_READ_WORDS} ELSE {_SEARCHED} END)"
)


# The words `text` searches in each event, as the hub's fetch reads them for
# the live streams that match `text` in the process (domain/text_search.py):
# those of `_SEARCHED`, and for a read's record (READ_RECORD_ACTIONS) those of
# `_SEARCHED_BUT_READ_FILTERS`'s other branch, else NULL. Their parameter: the
# read actions.
SEARCHED_VECTORS: Final = (
    f"{_SEARCHED}::text, CASE WHEN action = ANY(%s) THEN {_READ_WORDS}::text END"
)


# An event's `context.country` in SQL, NULL for none (store/counts.py groups on it).
RECORD_COUNTRY: Final = "((record::json -> 'context') ->> 'country')"
# An event's `context.user_agent` in SQL, NULL for none.
RECORD_USER_AGENT: Final = "((record::json -> 'context') ->> 'user_agent')"
# An event's `actor.credential.id` in SQL, NULL for none: read off the record
# of a row appended before migration 0056 alone (ADR 0142); the others' is
# the column credential_id.
RECORD_CREDENTIAL_ID: Final = "(((record::json -> 'actor') -> 'credential') ->> 'id')"
# Its `actor.credential.kind`, as its id is read.
RECORD_CREDENTIAL_KIND: Final = "(((record::json -> 'actor') -> 'credential') ->> 'kind')"
# An event's `actor.credential` in SQL (json, NULL for none), for the rows
# appended before migration 0056, whose credential_kind is NULL.
RECORD_CREDENTIAL: Final = "((record::json -> 'actor') -> 'credential')"
# The rows of one credential id (`selected_events`), as `events`: a row of
# the one branch has credential_kind NULL, of the other not, so none is in
# both (a row appended since migration 0056 has its kind, "" for none).
_SINCE_0056: Final = sql.SQL(
    "SELECT * FROM events WHERE credential_id = %s AND credential_kind IS NOT NULL"
)
_BEFORE_0056: Final = sql.SQL(
    f"SELECT * FROM events WHERE credential_kind IS NULL AND {RECORD_CREDENTIAL_ID} = %s"
)
# The same of one kind too (`credential_kind`): its parameter after the id's.
_SINCE_0056_OF_KIND: Final = sql.SQL(
    "SELECT * FROM events WHERE credential_id = %s AND credential_kind = %s"
)
_BEFORE_0056_OF_KIND: Final = sql.SQL(
    f"SELECT * FROM events WHERE credential_kind IS NULL AND {RECORD_CREDENTIAL_ID} = %s"
    f" AND {RECORD_CREDENTIAL_KIND} = %s"
)
_OF_CREDENTIAL: Final = sql.SQL("({since} UNION ALL {before}) AS events")
# A page of them (`page_of_events`): each branch under the page's conditions,
# ordered and limited, then the two merged and limited again.
_CREDENTIAL_PAGE: Final = sql.SQL(
    "SELECT {columns} FROM (({since}"
    " AND {conditions} ORDER BY seq {direction} LIMIT %s) UNION ALL ({before}"
    " AND {conditions} ORDER BY seq {direction} LIMIT %s)) AS events"
    " ORDER BY seq {direction} LIMIT %s"
)
# An event's `details` in SQL (json, NULL for none).
RECORD_DETAILS: Final = "(record::json -> 'details')"
# An event's `actor.type` in SQL (`user`, `api_key`, `service`, `system`).
RECORD_ACTOR_TYPE: Final = "((record::json -> 'actor') ->> 'type')"
# An event's `context.http_status_code` in SQL, as text (`503`), NULL for none.
RECORD_HTTP_STATUS: Final = "((record::json -> 'context') ->> 'http_status_code')"
# A row whose duration its `duration_ms` column (migration 0064) does not hold
# yet: appended before it, or by an older release's process, and not yet
# written by the backfill (ADR 0149). The predicate of events_duration_unread,
# as the migration writes it, so that the planner reads that index.
# Its record's duration must be a JSON number: a `null` or a text (no API
# call writes one; a row written straight into the database could) would
# fail the backfill's cast, its batch and every run after.
DURATION_UNREAD: Final = (
    "duration_ms IS NULL AND json_typeof((record::json -> 'context') -> 'duration_ms') = 'number'"
)


def json_number_read(json_value: str, *, as_type: str, alias: str) -> str:
    """SQL of the number a JSON value of the record holds (`json_value`, an
    expression of the row) as `as_type` (float8, numeric), NULL for none
    and for one no double holds, never failing on what the record holds
    (DURATION_READ's checks); read once, in a subquery named `alias`."""
    return (
        "(SELECT CASE WHEN json_typeof(j) = 'number' AND length(j::text) <= 1000"
        " AND j::text !~ '[eE][+-]?[0-9][0-9][0-9][0-9]'"
        " THEN CASE WHEN abs(j::text::numeric)"
        " BETWEEN 4.9406564584124654e-324 AND 1.7976931348623157e308 OR j::text::numeric = 0"
        f" THEN j::text::{as_type} END END"
        f" FROM (SELECT {json_value} AS j OFFSET 0) AS {alias})"
    )


# An event's `context.duration_ms` read off its record as the column would
# hold it (float8), NULL for none and for one no double holds: a text, or a
# number past a double's range (`1e400`, `1e-400`), which no API call writes
# (validate_event wants a finite number under a day) but a row written
# straight into the database could hold, and whose cast would fail the
# statement (ADR 0149). A check in SQL, not a failed cast caught (PostgreSQL
# 16's pg_input_is_valid is not in 13 to 15): a number of at most 1,000
# characters and a three-digit exponent (numeric takes any such), between a
# double's least and greatest magnitudes, or zero; the few just past them
# that would still round into a double are taken as none too. The record is
# parsed once, in the subquery (OFFSET 0 keeps it from being pulled up).
DURATION_READ: Final = json_number_read(
    "(record::json -> 'context') -> 'duration_ms'", as_type="float8", alias="duration"
)
# A query of the `changes[].field`s of an event, in SQL, to be completed by a
# condition on `field` (none for an event without changes).
_CHANGED_FIELD: Final = (
    "SELECT FROM json_array_elements(record::json -> 'changes') AS change WHERE change ->> 'field'"
)
# An event's `context.http_route` in SQL, NULL for none.
RECORD_HTTP_ROUTE: Final = "((record::json -> 'context') ->> 'http_route')"


def _any_action_of(
    actions: tuple[str, ...],
    prefixes: tuple[str, ...],
    suffixes: tuple[str, ...],
    params: list[Any],
) -> sql.Composable:
    """An OR of conditions: `action` is one of `actions`, starts with one of
    `prefixes` or ends with one of `suffixes` (a filter's three forms of an
    action), their parameters appended to `params`."""
    alternatives: list[sql.Composable] = []
    if actions:
        alternatives.append(sql.SQL("action = ANY(%s)"))
        params.append(list(actions))
    for prefix in prefixes:
        condition, bounds = action_prefix_range(prefix)
        alternatives.append(condition)
        params += bounds
    for suffix in suffixes:
        # No index serves a suffix: the other conditions choose the rows.
        alternatives.append(sql.SQL("right(action, %s::int) = %s"))
        params += [len(suffix), suffix]
    return sql.SQL(" OR ").join(alternatives)


def action_prefix_range(prefix: str) -> tuple[sql.Composable, list[str]]:
    """Actions starting with `prefix` (which ends with "."), as a byte-order
    range, not LIKE: under row-level security only leakproof operators may be
    index conditions (ADR 0013), and LIKE is not. "/" follows "."."""
    return sql.SQL("(action ~>=~ %s AND action ~<~ %s)"), [prefix, prefix[:-1] + "/"]


def prefix_range(column: str, prefix: str, params: list[Any]) -> sql.Composable:
    """`column` starts with `prefix`, as a byte-order range (`~>=~`, `~<~`:
    leakproof, so an index condition under row-level security, ADR 0013), its
    parameters appended to `params`. The database's text is UTF-8, whose byte
    order is the code points' order, so the strings starting with `prefix`
    are those from it up to `prefix_successor` (none past the last)."""
    after = prefix_successor(prefix)
    params.append(prefix)
    if after is None:
        return sql.SQL("{} ~>=~ %s").format(sql.Identifier(column))
    params.append(after)
    return sql.SQL("({column} ~>=~ %s AND {column} ~<~ %s)").format(column=sql.Identifier(column))


# The surrogates, which no UTF-8 text holds: the successor of U+D7FF is U+E000.
_SURROGATES: Final = range(0xD800, 0xE000)


def prefix_successor(prefix: str) -> str | None:
    """The least text greater than every text starting with `prefix` in code
    point order: its last character that is not U+10FFFF moved on by one (past
    the surrogates), what follows it dropped; None if there is none (every
    character U+10FFFF, or the prefix empty)."""
    for index in range(len(prefix) - 1, -1, -1):
        point = ord(prefix[index])
        if point < 0x10FFFF:
            point += 1
            if point in _SURROGATES:
                point = _SURROGATES.stop
            return prefix[:index] + chr(point)
    return None


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    seq, record, leaf = row
    return StoredEvent(seq=seq, record=record, leaf_hash=bytes(leaf))
