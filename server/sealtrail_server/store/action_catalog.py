"""Rows of a tenant's action catalogue (migration 0055): what its admins say
each action means, and the listing that joins them with the actions the log
holds, counted as CountEvents counts by action (store/counts.py: the same
conditions, on a bulk connection, under the count's statement timeout)."""

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
    """An action's description as stored, when and by which token it was set."""

    action: str
    description: str
    updated_at: datetime
    updated_by: str


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


@dataclass(frozen=True, slots=True)
class Catalog:
    """A page of a catalogue: its `entries`, by action in byte order, whether
    more follow the last (`more`), and how many entries there are in all."""

    entries: list[CatalogEntry]
    total: int
    more: bool


_COLUMNS: Final = "action, description, updated_at, updated_by"

# The log's actions (grouped as CountEvents groups them, the latest
# occurrence with each count) beside the described ones; a page of them in
# byte order (as the client sorts strings) after the previous page's last
# action (keyset), the number of entries of every page computed beside it.
# The one row of `one` carries the total when the page is empty.
_LISTED: Final = sql.SQL(
    "WITH listed AS ("
    "SELECT coalesce(s.action, d.action) AS action, coalesce(s.n, 0) AS n, s.last,"
    " d.description, d.updated_at, d.updated_by"
    " FROM (SELECT action, count(*) AS n, max(occurred_at) AS last"
    "  FROM events WHERE {conditions} GROUP BY action) AS s"
    " FULL JOIN (SELECT action, description, updated_at, updated_by"
    "  FROM action_catalog WHERE tenant_id = %s) AS d ON d.action = s.action)"
    " SELECT page.action, page.n, page.last, page.description, page.updated_at,"
    " page.updated_by, (SELECT count(*) FROM listed)"
    " FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT * FROM listed"
    '  WHERE action COLLATE "C" > %s ORDER BY action COLLATE "C" LIMIT %s) AS page ON true'
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
    conn: Connection, tenant_id: str, action: str, *, description: str, updated_by: str
) -> Described:
    """Set `action`'s description (as given: checked and redacted already)."""
    cursor = conn.cursor(row_factory=class_row(Described))
    await cursor.execute(
        "INSERT INTO action_catalog (tenant_id, action, description, updated_by)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id, action) DO UPDATE"
        " SET description = excluded.description, updated_by = excluded.updated_by,"
        f" updated_at = now() RETURNING {_COLUMNS}",
        [tenant_id, action, description, updated_by],
    )
    written = await cursor.fetchone()
    assert written is not None
    return written


async def clear_description(conn: Connection, tenant_id: str, action: str) -> None:
    """Remove `action`'s description, if it has one."""
    await conn.execute(
        "DELETE FROM action_catalog WHERE tenant_id = %s AND action = %s", [tenant_id, action]
    )


def catalog_statement(
    tenant_id: str, *, before_seq: int, after: str, limit: int
) -> tuple[sql.Composed, list[Any]]:
    """The SQL of a page and its parameters: the actions of `tenant_id`'s
    events before `before_seq` and its described actions, at most `limit`
    of them after the action `after` ("" from the first)."""
    conditions, params = filter_conditions(tenant_id, EventFilter())
    conditions.append(sql.SQL("seq < %s"))
    params.append(before_seq)
    query = _LISTED.format(conditions=sql.SQL(" AND ").join(conditions))
    return query, [*params, tenant_id, after, limit]


async def list_catalog(
    db: Database, *, tenant_id: str, before_seq: int, after: str, limit: int, timeout: float
) -> Catalog:
    """The page of `catalog_statement` (one more entry read tells whether
    another page follows), read within `timeout` seconds as a count is (past
    them, FailedPrecondition COUNT_TIMEOUT)."""
    query, params = catalog_statement(
        tenant_id, before_seq=before_seq, after=after, limit=limit + 1
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
        )
        for action, n, last, description, updated_at, updated_by, _ in rows
        if action is not None  # the row of an empty page, its total alone
    ]
    return Catalog(entries=entries[:limit], total=int(rows[0][6]), more=len(entries) > limit)


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
