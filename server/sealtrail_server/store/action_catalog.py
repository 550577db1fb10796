"""Rows of a tenant's action catalogue (migrations 0055, 0063): what its
admins say each action means and the category they declare for it, and the
listing that joins them with the actions the log holds, counted as CountEvents
counts by action (store/counts.py: the same conditions, on a bulk connection,
under the count's statement timeout)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from ..domain.errors import FailedPrecondition
from ..domain.filters import EventFilter
from .database import Database
from .events import filter_conditions

Connection = psycopg.AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class Described:
    """An action's entry as stored (its description, its declared category,
    either None if not given, never both), when and by which token it was
    set."""

    action: str
    description: str | None
    updated_at: datetime
    updated_by: str
    category: str | None


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """An action of the catalogue: its events (`count`, 0 for none; the
    latest's `last_occurred_at`) and its description, if any."""

    action: str
    count: int
    last_occurred_at: datetime | None
    description: str | None
    updated_at: datetime | None
    updated_by: str | None
    category: str | None


@dataclass(frozen=True, slots=True)
class Catalog:
    """A page of a catalogue: its `entries`, by action in byte order, whether
    more follow the last (`more`), and how many entries there are in all."""

    entries: list[CatalogEntry]
    total: int
    more: bool


_COLUMNS: Final = "action, description, updated_at, updated_by, category"

# A page of the log's actions (grouped as CountEvents groups them, the latest
# occurrence with each count) beside the described ones, in byte order (as
# the client sorts strings) after the previous page's last action (keyset).
# Each side is cut to the page before they are joined, so a page reads its
# own actions' events and no others: `~>~` and `USING ~<~` are the byte order
# of the (tenant_id, action text_pattern_ops, seq) index, whose scan yields
# the actions in order from the page's start, grouped as they come and
# stopped at the page's end (`COLLATE "C"` would be the same order, but not
# that index's operators, so every action of the tenant would be grouped and
# sorted first). The index holds each event's occurred_at too (migration
# 0061, ADR 0145), so the counts and `max(occurred_at)` are read from it
# alone (an index-only scan), no event's table row. `{total}`: the number of
# entries of every page, counted on the first (`_TOTAL`) and carried by the
# later pages' tokens.
_PAGE: Final = sql.SQL(
    "WITH s AS (SELECT action, count(*) AS n, max(occurred_at) AS last"
    "  FROM events WHERE {conditions} AND action ~>~ %s"
    "  GROUP BY action ORDER BY action USING ~<~ LIMIT %s),"
    " d AS (SELECT action, description, updated_at, updated_by, category"
    "  FROM action_catalog WHERE tenant_id = %s AND action ~>~ %s"
    "  ORDER BY action USING ~<~ LIMIT %s)"
    " SELECT coalesce(s.action, d.action) AS action, coalesce(s.n, 0), s.last,"
    " d.description, d.updated_at, d.updated_by, d.category, {total}"
    " FROM s FULL JOIN d ON d.action = s.action"
    " ORDER BY 1 USING ~<~ LIMIT %s"
)

# How many entries the whole catalogue has: the log's actions and the
# described ones, each once (its distinct actions alone: the index answers
# them without the events' counts and times).
_TOTAL: Final = sql.SQL(
    "(SELECT count(*) FROM (SELECT action FROM events WHERE {conditions} GROUP BY action"
    " UNION SELECT action FROM action_catalog WHERE tenant_id = %s) AS every)"
)


async def read_description(conn: Connection, tenant_id: str, action: str) -> Described | None:
    """`action`'s description in `tenant_id`'s catalogue, or None."""
    cursor = conn.cursor(row_factory=class_row(Described))
    await cursor.execute(
        f"SELECT {_COLUMNS} FROM action_catalog WHERE tenant_id = %s AND action = %s",
        [tenant_id, action],
    )
    return await cursor.fetchone()


async def write_description(
    conn: Connection,
    tenant_id: str,
    action: str,
    *,
    description: str | None,
    category: str | None,
    updated_by: str,
) -> Described:
    """Set `action`'s entry: its description (as given: checked and redacted
    already) and its declared category, at least one of them not None, each
    the stored one where the request's mask kept it (read under the change's
    lock, ADR 0148's addendum)."""
    cursor = conn.cursor(row_factory=class_row(Described))
    await cursor.execute(
        "INSERT INTO action_catalog (tenant_id, action, description, category, updated_by)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, action) DO UPDATE"
        " SET description = excluded.description, category = excluded.category,"
        " updated_by = excluded.updated_by,"
        f" updated_at = now() RETURNING {_COLUMNS}",
        [tenant_id, action, description, category, updated_by],
    )
    written = await cursor.fetchone()
    assert written is not None
    return written


async def clear_description(conn: Connection, tenant_id: str, action: str) -> None:
    """Remove `action` from the catalogue (its description and category), if
    it is there."""
    await conn.execute(
        "DELETE FROM action_catalog WHERE tenant_id = %s AND action = %s", [tenant_id, action]
    )


def catalog_statement(
    tenant_id: str, *, before_seq: int, after: str, limit: int, total: int | None
) -> tuple[sql.Composed, list[Any]]:
    """The SQL of a page and its parameters: the actions of `tenant_id`'s
    events before `before_seq` and its described actions, at most `limit`
    of them after the action `after` ("" from the first); beside each, the
    entries' `total`, or (None) their number counted."""
    conditions, params = filter_conditions(tenant_id, EventFilter())
    conditions.append(sql.SQL("seq < %s"))
    params.append(before_seq)
    where = sql.SQL(" AND ").join(conditions)
    counted: sql.Composable = sql.SQL("%s::bigint")
    total_params: list[Any] = [total]
    if total is None:
        counted = _TOTAL.format(conditions=where)
        total_params = [*params, tenant_id]
    query = _PAGE.format(conditions=where, total=counted)
    # Placeholders in the statement's order: the page's events, the
    # described ones, {total}, the page's size.
    return query, [*params, after, limit, tenant_id, after, limit, *total_params, limit]


async def list_catalog(
    db: Database,
    *,
    tenant_id: str,
    before_seq: int,
    after: str,
    limit: int,
    total: int | None,
    timeout: float,
) -> Catalog:
    """The page of `catalog_statement` (one more entry read tells whether
    another page follows), read within `timeout` seconds as a count is (past
    them, FailedPrecondition COUNT_TIMEOUT). `total`: the entries' number,
    as the first page counted it; None counts it (the first page), one
    statement with the page, so both read the same catalogue."""
    query, params = catalog_statement(
        tenant_id, before_seq=before_seq, after=after, limit=limit + 1, total=total
    )
    async with db.bulk_connection(tenant_id, statement_timeout=timeout) as conn:
        try:
            cursor = await conn.execute(query, params)
            rows = await cursor.fetchall()
        except psycopg.errors.QueryCanceled:
            raise _timed_out(timeout) from None
    entries = [
        CatalogEntry(
            action=action,
            count=int(n),
            last_occurred_at=last,
            description=description,
            updated_at=updated_at,
            updated_by=updated_by,
            category=category,
        )
        for action, n, last, description, updated_at, updated_by, category, _ in rows
    ]
    # No row: no entry after `after`; with none before it either (the first
    # page), none at all.
    counted = int(rows[0][7]) if rows else total or 0
    return Catalog(entries=entries[:limit], total=counted, more=len(entries) > limit)


def _timed_out(timeout: float) -> FailedPrecondition:
    """What a listing past its time answers, as a count does (COUNT_TIMEOUT):
    not retried by the clients, another attempt taking as long."""
    seconds = f"{timeout:g}"
    return FailedPrecondition(
        f"counting the log's actions took longer than the {seconds} s a count may take"
        " (SEALTRAIL_COUNT_TIMEOUT); CountEvents by action over a time range counts fewer",
        reason="COUNT_TIMEOUT",
        metadata={"timeout_seconds": seconds},
    )
