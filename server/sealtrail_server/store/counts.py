"""Counts of a tenant's events, in SQL: one statement counts and groups the
events Query's conditions select (`selected_events`), so no row leaves the
database, and a time bound prunes the months before it as it does for Query
(ADR 0015). It runs under a statement timeout of its own: a count reads every
match, and one over years of a busy log would hold a connection, and a lock
that new months' partitions wait for, for as long as it took (ADR 0063).
Days and hours may be those of a time zone (ADR 0103): the grouping changes,
the conditions, and so the months and index entries read, do not.
A measure (the durations' mean, a percentile, the longest) is one more
aggregate beside each group's count, over each row's `duration_ms` column
(migration 0064, ADR 0149); of a count with rows appended before it whose
duration is unread (`duration_unread_statement`), those rows' durations are
read off their records (`_MEASURED_FROM_RECORDS`). Without a measure the
statements are as they were. A count by a detail, or measuring a detail's
numbers, reads each matching row's record (no column or index holds
details: ADR 0161), within the same timeout."""

from __future__ import annotations

from typing import Any, Final

import psycopg
from psycopg import sql

from ..domain.counts import (
    DETAIL_MEASURES,
    MAX_DETAIL_GROUP_KEY,
    Counts,
    Group,
    GroupBy,
    Measure,
    actor_label,
    group_key,
)
from ..domain.errors import FailedPrecondition, InvalidArgument
from ..domain.filters import EventFilter
from .database import Connection, Database
from .events import (
    DURATION_READ,
    DURATION_UNREAD,
    RECORD_ACTOR_TYPE,
    RECORD_COUNTRY,
    RECORD_CREDENTIAL,
    RECORD_HTTP_ROUTE,
    RECORD_HTTP_STATUS,
    filter_conditions,
    json_number_read,
    selected_events,
)

# What each grouping groups on. Columns that may be NULL are grouped with ""
# (no category, no resource type), the key the answer gives them. Buckets are
# days and hours of UTC, whatever the session's time zone (of another zone:
# _ZONED_KEYS); resources are grouped by _RESOURCES, credentials by
# _CREDENTIALS.
_KEYS: Final[dict[GroupBy, sql.Composable]] = {
    "action": sql.SQL("action"),
    "actor": sql.SQL("actor_id"),
    "category": sql.SQL("coalesce(category, '')"),
    "outcome": sql.SQL("outcome"),
    "severity": sql.SQL("severity"),
    "resource_type": sql.SQL("coalesce(resource_type, '')"),
    "day": sql.SQL("date_trunc('day', occurred_at, 'UTC')"),
    "hour": sql.SQL("date_trunc('hour', occurred_at, 'UTC')"),
    "recorded_by": sql.SQL("coalesce(recorded_by::text, '')"),
    "ip": sql.SQL("coalesce(host(ip), '')"),
    "country": sql.SQL(f"coalesce({RECORD_COUNTRY}, '')"),
    # The record's name of the type (`api_key`): every record has one.
    "actor_type": sql.SQL(f"coalesce({RECORD_ACTOR_TYPE}, '')"),
    # The API request's route and status code (`503`: the record's integer as
    # text), read off the record as the country is (ADR 0136).
    "http_route": sql.SQL(f"coalesce({RECORD_HTTP_ROUTE}, '')"),
    "http_status": sql.SQL(f"coalesce({RECORD_HTTP_STATUS}, '')"),
}
# Days and hours of a time zone ({zone}, a literal: a name is_time_zone took).
# A day is grouped on as the local date: not date_trunc('day', occurred_at,
# zone), which turns a local midnight that comes twice (America/Havana's day
# the clocks go back at 01:00) into the later one, after the events of the
# hour before it. An hour is the event's time less the minutes and seconds of
# its local clock past the hour: its start as the event's own offset tells it,
# so the two hours of a change back (02:00 CEST, then 02:00 CET) stay two, and
# at +05:30 hours start at half past a UTC hour.
_ZONED_KEYS: Final[dict[GroupBy, sql.SQL]] = {
    "day": sql.SQL("(occurred_at AT TIME ZONE {zone})::date"),
    "hour": sql.SQL(
        "occurred_at - ((occurred_at AT TIME ZONE {zone})"
        " - date_trunc('hour', occurred_at AT TIME ZONE {zone}))"
    ),
}
# Where each bucket returned starts (`start`), from the key it was grouped on.
# An hour's is its key. A day's is its first instant: local midnight as the
# database reads it, which where midnight comes twice is the later one; so
# the midnight with the offset of three hours before, if that is one too, and
# earlier. Where the clocks skip midnight the database reads it with the
# offset before, which is the end of the gap: the day's first instant.
_STARTS: Final[dict[GroupBy, sql.SQL]] = {
    "day": sql.SQL(
        "(SELECT CASE WHEN e < c AND (e AT TIME ZONE {zone}) = key::timestamp THEN e ELSE c END"
        " FROM (SELECT c, (key::timestamp - ((p AT TIME ZONE {zone}) - (p AT TIME ZONE 'UTC')))"
        " AT TIME ZONE 'UTC' AS e"
        " FROM (SELECT c, c - interval '3 hours' AS p"
        " FROM (SELECT key::timestamp AT TIME ZONE {zone} AS c) AS c) AS p) AS e)"
    ),
    "hour": sql.SQL("key"),
}
# A zoned count's groups, keyed by the database (not zoneinfo: the database
# grouped them by its own copy of the zone data, which may be another release
# than the server's, and a key must name the bucket the events were counted
# in): the start in RFC 3339 with the zone's offset at it (`+00:00` for zero).
_ZONED_GROUPED: Final = sql.SQL(
    "SELECT to_char(start AT TIME ZONE {zone}, 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN off < interval '0' THEN '-' ELSE '+' END"
    " || to_char(CASE WHEN off < interval '0' THEN -off ELSE off END, 'HH24:MI'),"
    " n, total, groups{measured} FROM ("
    " SELECT key, n, sum(n) OVER ()::bigint AS total, count(*) OVER () AS groups{measured} FROM ("
    " SELECT {key} AS key, count(*) AS n{measures} FROM {events}{measured_from}"
    " WHERE {conditions} GROUP BY 1) AS g"
    " ORDER BY key LIMIT %s) AS l,"
    " LATERAL (SELECT {start} AS start) AS s,"
    " LATERAL (SELECT (start AT TIME ZONE {zone}) - (start AT TIME ZONE 'UTC') AS off) AS o"
    " ORDER BY key"
)
# Largest first, then by key in byte order (as the client sorts strings, not
# as the database's collation would); a severity's ties by its level; time
# buckets in time order.
_TEXT_ORDER: Final = sql.SQL('n DESC, key COLLATE "C"')
_ORDERS: Final[dict[GroupBy, sql.Composable]] = {
    "severity": sql.SQL("n DESC, key"),
    "day": sql.SQL("key"),
    "hour": sql.SQL("key"),
}
# The groups, with the total and the number of groups computed before the
# limit cuts them (window functions run before LIMIT).
_GROUPED: Final = sql.SQL(
    "SELECT key, n, sum(n) OVER ()::bigint, count(*) OVER (){measured} FROM ("
    " SELECT {key} AS key, count(*) AS n{measures} FROM {events}{measured_from}"
    " WHERE {conditions} GROUP BY 1) AS g"
    " ORDER BY {order} LIMIT %s"
)
# Resources: grouped by type and id ("" for a part an event lacks), then each
# group keyed by the pair as a JSON array of two strings, "" for events with
# neither. to_json writes a string as RFC 8785 does (only `"`, `\\` and control
# characters escaped, those that have one by their short escape, the others
# as \u00xx in lower case), so each pair has one key whatever characters its
# parts hold, and ties sort by that key in byte order, as the client would.
# Keyed once a group, not once a row: keying each row took about twice as
# long (400,000 events of 5,000 resources), most of it writing JSON.
_RESOURCES: Final = sql.SQL(
    "SELECT key, n, sum(n) OVER ()::bigint, count(*) OVER (){measured} FROM ("
    " SELECT CASE WHEN t = '' AND i = '' THEN ''"
    " ELSE '[' || to_json(t)::text || ',' || to_json(i)::text || ']' END AS key, n{measured}"
    " FROM (SELECT coalesce(resource_type, '') AS t, coalesce(resource_id, '') AS i,"
    " count(*) AS n{measures} FROM {events}{measured_from} WHERE {conditions} GROUP BY 1, 2)"
    " AS p) AS g"
    ' ORDER BY n DESC, key COLLATE "C" LIMIT %s'
)
# Credentials: grouped by kind and id, then each group keyed as a resource
# is: its kind, id and hint as a JSON array of three strings, the hint its
# events record ("" for none; of hints that differ, the greatest in byte
# order), "" for events without a credential. The record holds no secret: an
# id or hint shaped as one is refused when recorded. Read off the columns of
# migration 0056 (`credential_kind` "" for none), {grouped}: the kind ("" or
# NULL for none), id, hint and count of each group.
_CREDENTIALS: Final = sql.SQL(
    "SELECT key, n, sum(n) OVER ()::bigint, count(*) OVER (){measured} FROM ("
    " SELECT CASE WHEN coalesce(k, '') = '' AND i IS NULL THEN ''"
    " ELSE '[' || to_json(coalesce(k, ''))::text || ',' || to_json(coalesce(i, ''))::text"
    " || ',' || to_json(h)::text || ']' END AS key, n{measured} FROM ({grouped}) AS p) AS g"
    ' ORDER BY n DESC, key COLLATE "C" LIMIT %s'
)
# The rows' columns alone, where no row counted was appended before migration
# 0056 (none with `credential_kind` NULL: `_UNREAD`), as once the credential
# backfill has written a tenant's (ADR 0143): one scan the planner may share
# among parallel workers, which with the records' branch below beside it it
# did not: 3.84 times a count by actor, where both branches took 5.43 (ADR 0143).
_CREDENTIAL_COLUMNS: Final = sql.SQL(
    "SELECT credential_kind AS k, credential_id AS i,"
    " coalesce(max(credential_hint COLLATE \"C\"), '') AS h, count(*) AS n{measures}"
    " FROM {events}{measured_from} WHERE {conditions} AND credential_kind IS NOT NULL"
    " GROUP BY 1, 2"
)
# The rows' columns and, in a UNION ALL, the records of rows appended before
# migration 0056 (`credential_kind` NULL, found on events_credential_unread),
# as all were read before (ADR 0142): parsing each record made a count by
# credential take 33 times one by actor.
_CREDENTIAL_COLUMNS_AND_RECORDS: Final = sql.SQL(
    "SELECT k, i, coalesce(max(h COLLATE \"C\"), '') AS h, count(*) AS n{measures} FROM ("
    " SELECT nullif(credential_kind, '') AS k, credential_id AS i, credential_hint AS h"
    "{duration} FROM {events} WHERE {conditions} AND credential_kind IS NOT NULL"
    " UNION ALL SELECT c ->> 'kind', c ->> 'id', c ->> 'hint'{passed} FROM ("
    " SELECT " + RECORD_CREDENTIAL + " AS c{duration}"
    " FROM {events} WHERE {conditions} AND credential_kind IS NULL) AS r"
    " ) AS r GROUP BY 1, 2"
)
# Whether any row a count selects was appended before migration 0056: of a
# tenant the backfill has written, a probe of an empty range of
# events_credential_unread per partition; otherwise it reads the tenant's rows
# from before in the count's range until one matches (at most what the
# records' branch would read), and stops there.
_UNREAD: Final = sql.SQL(
    "SELECT EXISTS (SELECT FROM {events} WHERE {conditions} AND credential_kind IS NULL)"
)
# A row's duration (`context.duration_ms`, milliseconds; NULL for none), as
# `measured_ms`, which the measures aggregate: its column (migration 0064,
# ADR 0149), a lateral subquery the planner pulls up, so the scan reads the
# column alone; where a count's rows include ones appended before the column
# whose duration is unread (`_DURATIONS_UNREAD`), the record's of a row whose
# column is NULL, once a row (OFFSET 0 keeps the subquery evaluated once a
# row, not once per aggregate that names it, which parsed the record twice),
# none where no double holds it (`DURATION_READ`), as the backfill leaves that
# row's column: parsing every record made a measured count by action take 20.9
# times the plain count (bench/measures.py).
_DURATION: Final = sql.SQL("coalesce(duration_ms, " + DURATION_READ + ")")
_MEASURED_FROM: Final = sql.SQL(
    " CROSS JOIN LATERAL (SELECT duration_ms AS measured_ms) AS measured"
)
_MEASURED_FROM_RECORDS: Final = sql.SQL(
    " CROSS JOIN LATERAL (SELECT {duration} AS measured_ms OFFSET 0) AS measured"
).format(duration=_DURATION)
# Whether any row a count selects has a duration its column does not hold yet
# (appended before migration 0064, or by an older release's process, and not
# yet written by the backfill): a probe of events_duration_unread per
# partition, empty once the backfill has written them.
_DURATIONS_UNREAD: Final = sql.SQL(
    "SELECT EXISTS (SELECT FROM {events} WHERE {conditions} AND " + DURATION_UNREAD + ")"
)
# A group's key by a detail ({key}, a literal: a key count_shape bounded):
# its value as details_equals compares it (a string as it is, a number or
# boolean as the record writes it), its first MAX_DETAIL_GROUP_KEY
# characters; "" for none, null, an object or an array. The record is parsed
# once a row, in the subquery (OFFSET 0: not pulled up).
_DETAIL_KEY: Final = sql.SQL(
    "(SELECT CASE WHEN json_typeof(d -> {key}) IN ('string', 'number', 'boolean')"
    " THEN left(d ->> {key}, " + str(MAX_DETAIL_GROUP_KEY) + ") ELSE '' END"
    " FROM (SELECT record::json -> 'details' AS d OFFSET 0) AS details)"
)
# A row's number under a detail ({key}) as `measured_ms`, exactly (numeric),
# NULL for a value that is no number a double holds: a text, a boolean, a
# redacted placeholder is not measured, and no cast fails (ADR 0161).
_DETAIL_NUMBER: Final = sql.SQL(
    json_number_read("(record::json -> 'details') -> {key}", as_type="numeric", alias="number")
)
# A detail measure's aggregate ({x}, numeric: a sum of doubles no double
# holds fails no addition) as the nearest double, `Infinity` past a double's
# greatest, 0 below its least normal magnitude (a cast of either would fail).
_AS_DOUBLE: Final = sql.SQL(
    "CASE WHEN {x} > 1.7976931348623157e308 THEN 'Infinity'::float8"
    " WHEN {x} < -1.7976931348623157e308 THEN '-Infinity'::float8"
    " WHEN abs({x}) < 2.2250738585072014e-308 THEN 0::float8 ELSE {x}::float8 END"
)
# Each measure's aggregate of a group's durations, or of a detail measure its
# numbers (those of its rows that have one: aggregates pass over NULL).
# Percentiles are percentile_cont's, linear between the two nearest durations
# (as numpy's percentile), rather than percentile_disc's, which jumps from one
# recorded duration to the next.
_MEASURES: Final[dict[Measure, sql.Composable]] = {
    "duration_avg": sql.SQL("avg(measured_ms)"),
    "duration_p50": sql.SQL("percentile_cont(0.5) WITHIN GROUP (ORDER BY measured_ms)"),
    "duration_p95": sql.SQL("percentile_cont(0.95) WITHIN GROUP (ORDER BY measured_ms)"),
    "duration_p99": sql.SQL("percentile_cont(0.99) WITHIN GROUP (ORDER BY measured_ms)"),
    "duration_max": sql.SQL("max(measured_ms)"),
    "detail_sum": _AS_DOUBLE.format(x=sql.SQL("sum(measured_ms)")),
    "detail_avg": _AS_DOUBLE.format(x=sql.SQL("avg(measured_ms)")),
    "detail_max": _AS_DOUBLE.format(x=sql.SQL("max(measured_ms)")),
}
# A group's measure (0 where none of its rows has a duration) and how many of
# its rows had one, beside its count (`{measures}`), then passed on by the
# statements' outer selects (`{measured}`) as their last two columns.
_MEASURED: Final = sql.SQL(", coalesce({aggregate}, 0)::float8 AS v, count(measured_ms) AS m")
_PASSED: Final = sql.SQL(", v, m")
_NONE: Final = sql.SQL("")
_TOTAL: Final = sql.SQL("SELECT count(*) FROM {events} WHERE {conditions}")
# The actor of each group answered as its latest matching event records it
# (its email and display name; NULL for none), of the groups' ids given as an
# array: a backward scan of the index on (tenant, actor id, seq) per group,
# which stops at its first match. The actor's events below the count's seq
# bound are a subquery of their own (OFFSET 0: not pulled up), the filter's
# conditions outside it, so the actor's index is the only way in: with them
# beside the actor's, a filter with an index of its own (an action's) was
# scanned on that index backward, past every other actor's match newer than
# the group's latest (15,012 rows to label six groups), and a time range's
# bound on received_at had a month's primary key scanned past the range's
# rows. So every month is searched (none pruned: an entry of each at most),
# and the actor's events after its latest match (unmatched, or after the
# range) are read before it. The LIMIT outside keeps the subquery's order,
# with no sort: an ORDER BY there too would have the subquery planned to read
# all it selects.
_ACTOR_LABELS: Final = sql.SQL(
    "SELECT g.key, a.actor ->> 'email', a.actor ->> 'display_name'"
    " FROM unnest(%s::text[]) AS g(key) CROSS JOIN LATERAL ("
    " SELECT record::json -> 'actor' AS actor FROM ("
    " SELECT * FROM {events} WHERE {scope} AND actor_id = g.key ORDER BY seq DESC OFFSET 0)"
    " AS events WHERE {conditions} LIMIT 1) AS a"
)
# A time zone the database does not know fails this, whether or not there are
# events to count in it.
_ZONE_KNOWN: Final = "SELECT now() AT TIME ZONE %s"


def count_statement(
    tenant_id: str,
    event_filter: EventFilter,
    *,
    group_by: GroupBy | None,
    limit: int,
    before_seq: int | None = None,
    time_zone: str = "",
    records: bool = True,
    measure: Measure | None = None,
    duration_records: bool = True,
    group_by_detail: str = "",
    measure_detail: str = "",
) -> tuple[sql.Composed, list[Any]]:
    """The SQL of a count and its parameters (the plan tests EXPLAIN it):
    `tenant_id`'s events that match `event_filter` and come before
    `before_seq`, if given; grouped by `group_by` into at most `limit`
    groups, or the total alone (None); days and hours those of `time_zone`
    (an IANA name, validated by the caller), "" for UTC's. By credential,
    `records` False reads the credential columns alone: for when none of
    the rows counted was appended before migration 0056 (`unread_statement`
    finds none), whose credential is their record's. With `measure`, each
    group's rows also give their measure and how many were measured, the
    statement's last two columns (a total alone measures nothing: the API
    refuses a measure without a grouping); `duration_records` False reads
    the `duration_ms` column alone, for when no row counted has a duration
    it does not hold (`duration_unread_statement` finds none). By a detail,
    `group_by_detail` is its key; a detail measure measures the numbers
    under `measure_detail` (keys the API bounded)."""
    events, where, params = _selected(tenant_id, event_filter, before_seq)
    if group_by is None:
        return _TOTAL.format(events=events, conditions=where), params
    parts = _measure_parts(measure, records=duration_records, detail=measure_detail)
    measured = parts["measured"]
    if group_by == "resource":
        query = _RESOURCES.format(events=events, conditions=where, **parts)
        return query, [*params, limit]
    if group_by == "credential" and not records:
        grouped = _CREDENTIAL_COLUMNS.format(
            events=events,
            conditions=where,
            measures=parts["measures"],
            measured_from=parts["measured_from"],
        )
        return _CREDENTIALS.format(grouped=grouped, measured=measured), [*params, limit]
    if group_by == "credential":
        # The rows twice: those appended since migration 0056, then before;
        # each branch reads its rows' durations as it reads them.
        grouped = _CREDENTIAL_COLUMNS_AND_RECORDS.format(
            events=events,
            conditions=where,
            measures=parts["measures"],
            duration=sql.SQL(", {} AS measured_ms").format(
                _measured_value(measure, records=duration_records, detail=measure_detail)
            )
            if measure
            else _NONE,
            passed=sql.SQL(", measured_ms") if measure else _NONE,
        )
        query = _CREDENTIALS.format(grouped=grouped, measured=measured)
        return query, [*params, *params, limit]
    order = _ORDERS.get(group_by, _TEXT_ORDER)
    if time_zone and group_by in _ZONED_KEYS:
        zone = sql.Literal(time_zone)
        query = _ZONED_GROUPED.format(
            key=_ZONED_KEYS[group_by].format(zone=zone),
            start=_STARTS[group_by].format(zone=zone),
            zone=zone,
            events=events,
            conditions=where,
            **parts,
        )
        return query, [*params, limit]
    key = (
        _DETAIL_KEY.format(key=_key_literal(group_by_detail))
        if group_by == "detail"
        else _KEYS[group_by]
    )
    query = _GROUPED.format(key=key, events=events, conditions=where, order=order, **parts)
    return query, [*params, limit]


def _measure_parts(
    measure: Measure | None, *, records: bool, detail: str
) -> dict[str, sql.Composable]:
    """The pieces a grouped statement takes for `measure` (none: nothing):
    its aggregates beside the count (`measures`), their columns passed on
    (`measured`), and the rows' durations joined to the events
    (`measured_from`): their column, and with `records` the record's where
    the column is NULL; of a detail measure, the numbers under `detail`."""
    if measure is None:
        return {"measures": _NONE, "measured": _NONE, "measured_from": _NONE}
    if measure in DETAIL_MEASURES:
        measured_from: sql.Composable = sql.SQL(
            " CROSS JOIN LATERAL (SELECT {number} AS measured_ms OFFSET 0) AS measured"
        ).format(number=_measured_value(measure, records=records, detail=detail))
    else:
        measured_from = _MEASURED_FROM_RECORDS if records else _MEASURED_FROM
    return {
        "measures": _MEASURED.format(aggregate=_MEASURES[measure]),
        "measured": _PASSED,
        "measured_from": measured_from,
    }


def _key_literal(key: str) -> sql.Composable:
    """A details key as a literal of a statement run with parameters, its
    `%` doubled: psycopg reads a `%` anywhere in the text, a quoted literal
    included, as a placeholder's (`%s`) or an escaped one's (`%%`)."""
    return sql.Literal(key.replace("%", "%%"))


def _measured_value(measure: Measure, *, records: bool, detail: str) -> sql.Composable:
    """What `measure` measures of a row: its number under `detail`, or its
    duration (the column, and with `records` the record's where it is NULL)."""
    if measure in DETAIL_MEASURES:
        return _DETAIL_NUMBER.format(key=_key_literal(detail))
    return _DURATION if records else sql.SQL("duration_ms")


def actor_labels_statement(
    tenant_id: str, event_filter: EventFilter, keys: list[str], *, before_seq: int | None = None
) -> tuple[sql.Composed, list[Any]]:
    """The SQL and parameters of the actors `keys` (the ids of a count's
    groups by actor) as the latest of the events `count_statement` counts
    records each: rows of id, email and display name (NULL for none); none
    for an id of no event counted. Each actor's events are read off its
    index, newest first (of a credential's, its relation's), until one
    matches: those after its latest match are read too (`_ACTOR_LABELS`)."""
    scope = EventFilter(
        credential_id=event_filter.credential_id, credential_kind=event_filter.credential_kind
    )
    events, in_scope, scope_params = _selected(tenant_id, scope, before_seq)
    conditions, params = filter_conditions(tenant_id, event_filter, credential_in_source=True)
    query = _ACTOR_LABELS.format(
        events=events, scope=in_scope, conditions=sql.SQL(" AND ").join(conditions)
    )
    return query, [keys, *scope_params, *params]


def duration_unread_statement(
    tenant_id: str, event_filter: EventFilter, *, before_seq: int | None = None
) -> tuple[sql.Composed, list[Any]]:
    """The SQL and parameters of whether any of the events `count_statement`
    counts has a duration its `duration_ms` column does not hold yet."""
    events, where, params = _selected(tenant_id, event_filter, before_seq)
    return _DURATIONS_UNREAD.format(events=events, conditions=where), params


def unread_statement(
    tenant_id: str, event_filter: EventFilter, *, before_seq: int | None = None
) -> tuple[sql.Composed, list[Any]]:
    """The SQL and parameters of whether any of the events `count_statement`
    counts (of `tenant_id`, matching `event_filter`, before `before_seq`) was
    appended before migration 0056, its credential columns NULL."""
    events, where, params = _selected(tenant_id, event_filter, before_seq)
    return _UNREAD.format(events=events, conditions=where), params


def _selected(
    tenant_id: str, event_filter: EventFilter, before_seq: int | None
) -> tuple[sql.Composable, sql.Composable, list[Any]]:
    """`selected_events` with the bound `seq < before_seq`, if given: the
    relation, its conditions ANDed, and their parameters."""
    events, conditions, params = selected_events(tenant_id, event_filter)
    if before_seq is not None:
        conditions.append(sql.SQL("seq < %s"))
        params.append(before_seq)
    return events, sql.SQL(" AND ").join(conditions), params


async def count_events(
    db: Database,
    *,
    tenant_id: str,
    event_filter: EventFilter,
    group_by: GroupBy | None,
    limit: int,
    before_seq: int,
    timeout: float,
    time_zone: str = "",
    measure: Measure | None = None,
    group_by_detail: str = "",
    measure_detail: str = "",
) -> Counts:
    """The count of `count_statement`, run within `timeout` seconds; past
    them, FailedPrecondition (COUNT_TIMEOUT) telling the caller to narrow the
    time range. A `time_zone` the database does not know (its own copy of
    the zone database may be older than the server's) is INVALID_ARGUMENT on
    `time_zone`. On a bulk connection, as one of the process's `LongReads`
    (store/long_reads.py), which leave the bulk share a connection for pages.
    By credential, the records of rows appended before migration 0056 are
    read only if the count has any (`unread_statement`): none is appended
    below `before_seq` since, and the backfill only writes them (ADR 0143).
    With `measure`, each group says its events' measure and how many had a
    duration (`Group.value`, `Group.measured`), read off the records only of
    rows whose duration the column does not hold yet, if the count has any
    (`duration_unread_statement`); with a detail measure, of the numbers
    under `measure_detail`, read off every row's record. By a detail, each
    group is a value of `group_by_detail`."""
    async with db.bulk_connection(tenant_id, statement_timeout=timeout) as conn:
        try:
            if time_zone:  # at once: the count reads it only of the events it finds
                await conn.execute(_ZONE_KNOWN, [time_zone])
            records = True
            if group_by == "credential":
                unread, unread_params = unread_statement(
                    tenant_id, event_filter, before_seq=before_seq
                )
                found = await (await conn.execute(unread, unread_params)).fetchone()
                records = bool(found and found[0])
            duration_records = False
            if measure is not None and measure not in DETAIL_MEASURES:
                unread, unread_params = duration_unread_statement(
                    tenant_id, event_filter, before_seq=before_seq
                )
                found = await (await conn.execute(unread, unread_params)).fetchone()
                duration_records = bool(found and found[0])
            query, params = count_statement(
                tenant_id,
                event_filter,
                group_by=group_by,
                limit=limit,
                before_seq=before_seq,
                time_zone=time_zone,
                records=records,
                measure=measure,
                duration_records=duration_records,
                group_by_detail=group_by_detail,
                measure_detail=measure_detail,
            )
            cursor = await conn.execute(query, params)
            rows = await cursor.fetchall()
            labels: dict[str, str] = {}
            if group_by == "actor" and rows:
                keys = [row[0] for row in rows]
                labels = await _actor_labels(conn, tenant_id, event_filter, keys, before_seq)
        except psycopg.errors.QueryCanceled:
            raise count_timed_out(timeout) from None
        except psycopg.errors.InvalidParameterValue as error:
            if not time_zone:
                raise
            raise InvalidArgument.field(
                "time_zone", f"{time_zone!r} is not a time zone the database knows"
            ) from error
    if group_by is None:
        [(total,)] = rows
        return Counts(total=int(total), groups=[], total_groups=0)
    if not rows:
        return Counts(total=0, groups=[], total_groups=0)
    groups = [_group(group_by, row, labels) for row in rows]
    return Counts(total=int(rows[0][2]), groups=groups, total_groups=int(rows[0][3]))


async def _actor_labels(
    conn: Connection, tenant_id: str, event_filter: EventFilter, keys: list[str], before_seq: int
) -> dict[str, str]:
    """The label of each of the actors `keys` (`actor_labels_statement`), as
    the answer gives it (`actor_label`); an actor recorded with no name is
    "", as is one the statement did not find."""
    statement, params = actor_labels_statement(tenant_id, event_filter, keys, before_seq=before_seq)
    rows = await (await conn.execute(statement, params)).fetchall()
    return {key: actor_label(email or "", name or "") for key, email, name in rows}


def _group(group_by: GroupBy, row: tuple[Any, ...], labels: dict[str, str]) -> Group:
    """A group from a row of a grouped statement: its key, count, the total
    and the number of groups, then with a measure its value and how many
    rows it measured; labelled as `labels` label its key (by actor)."""
    key, n, _, _, *measured = row
    label = labels.get(key, "")
    if not measured:
        return Group(group_key(group_by, key), int(n), label=label)
    value, counted = measured
    return Group(
        group_key(group_by, key), int(n), value=float(value), measured=int(counted), label=label
    )


def count_timed_out(timeout: float) -> FailedPrecondition:
    """What a count past its time answers: not retried by the clients (another
    attempt would take as long), and saying what makes it cheaper."""
    seconds = f"{timeout:g}"
    return FailedPrecondition(
        f"counting took longer than the {seconds} s a count may take"
        " (SEALTRAIL_COUNT_TIMEOUT); narrow the time range (filter.occurred_after,"
        " filter.occurred_before) or the filter, and count again",
        reason="COUNT_TIMEOUT",
        metadata={"timeout_seconds": seconds},
    )
