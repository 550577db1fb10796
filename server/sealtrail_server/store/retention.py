"""Rows of retention policies and legal holds, and the purge of expired events.

A purge batch runs as the tables' owner (the only role that may DELETE events,
ADR 0013) in a transaction that declares itself to the append-only trigger
(`SET LOCAL sealtrail.removal = 'retention'`), locks the tenant's policy row
(so a legal hold placed meanwhile waits for it, and no batch starts after the
hold), moves each removed event's leaf hash to tree_nodes level 0, and deletes
the event."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql

from sealtrail.tlog import RemovedLeaves

from ..domain.errors import IntegrityFailure
from ..domain.purge_summaries import SummarySeal
from ..domain.retention import (
    PendingChange,
    RetentionLimits,
    RetentionPolicy,
    RetentionRule,
    Selection,
    purge_selections,
    purge_selections_of_both,
)
from .changes import waiting_at_most
from .events import action_prefix_range


@dataclass(frozen=True, slots=True)
class LegalHoldState:
    on: bool = False
    reason: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    policy: RetentionPolicy
    updated_at: datetime | None
    hold: LegalHoldState
    # The most days the operator lets the tenant keep events (its plan's
    # ceiling, ADR 0071); None: no ceiling.
    max_days: int | None = None
    # A change that keeps some events less long, waiting out its delay (ADR
    # 0163); None: none.
    pending: PendingChange | None = None

    def limits(self, *, min_days: int) -> RetentionLimits:
        """What the operator allows this tenant: the deployment's floor
        `min_days` (SEALTRAIL_RETENTION_MIN_DAYS) and its own ceiling."""
        return RetentionLimits(min_days, self.max_days)

    def selections(self, *, min_days: int) -> list[Selection]:
        """What a purge batch removes, each policy within the operator's
        limits: the policy in force's selections, or, while a change waits,
        only what both it and the change remove (`purge_selections_of_both`),
        so that nothing goes before either lets it."""
        limits = self.limits(min_days=min_days)
        if self.pending is None:
            return purge_selections(self.policy.within(limits))
        return purge_selections_of_both(
            self.policy.within(limits), self.pending.policy.within(limits)
        )


_NO_POLICY = StoredPolicy(RetentionPolicy(), None, LegalHoldState())
_SELECT = (
    "SELECT default_days, rules, policy_updated_at, legal_hold, legal_hold_reason,"
    " legal_hold_updated_at, max_days, pending_default_days, pending_rules,"
    " pending_effective_at FROM retention_policies WHERE tenant_id = %s"
)


def _stored(row: tuple[Any, ...] | None) -> StoredPolicy:
    if row is None:
        return _NO_POLICY
    default_days, rules, updated_at, hold, reason, hold_updated_at, max_days, *waiting = row
    policy = RetentionPolicy(default_days, tuple(RetentionRule.from_json(r) for r in rules))
    pending_days, pending_rules, effective_at = waiting
    pending = (
        None
        if effective_at is None
        else PendingChange(
            RetentionPolicy(pending_days, tuple(RetentionRule.from_json(r) for r in pending_rules)),
            effective_at,
        )
    )
    return StoredPolicy(
        policy, updated_at, LegalHoldState(hold, reason, hold_updated_at), max_days, pending
    )


async def read_policy(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> StoredPolicy:
    cursor = await conn.execute(_SELECT, [tenant_id])
    return _stored(await cursor.fetchone())


async def policy_to_change(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, seconds: float
) -> StoredPolicy:
    """The tenant's policy, its row locked until the change's transaction
    ends; Unavailable if a purge batch holds it past `seconds`. Taken before
    the change is recorded: the write waited for the batch after the record,
    with no limit, and a batch can take long (helper-84). A caller whose
    deadline ran out meanwhile retried, recording the change again each time,
    while none of it was applied."""
    busy = "a retention purge of this tenant is removing a batch; retry"
    async with waiting_at_most(conn, seconds, busy=busy):
        cursor = await conn.execute(_SELECT + " FOR UPDATE", [tenant_id])
        return _stored(await cursor.fetchone())


async def write_policy(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, policy: RetentionPolicy, *, now: datetime
) -> StoredPolicy:
    """The policy in force replaced, and any change pending dropped: it was
    a change of the policy replaced."""
    rules = json.dumps([rule.as_json() for rule in policy.rules])
    await conn.execute(
        "INSERT INTO retention_policies (tenant_id, default_days, rules, policy_updated_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE"
        " SET default_days = excluded.default_days, rules = excluded.rules,"
        " policy_updated_at = excluded.policy_updated_at, pending_default_days = NULL,"
        " pending_rules = NULL, pending_effective_at = NULL",
        [tenant_id, policy.default_days, rules, now],
    )
    return await read_policy(conn, tenant_id)


async def write_pending(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, pending: PendingChange | None
) -> StoredPolicy:
    """The change waiting to apply set (replacing any), or dropped (None);
    the policy in force as it is."""
    days = None if pending is None else pending.policy.default_days
    rules = (
        None if pending is None else json.dumps([rule.as_json() for rule in pending.policy.rules])
    )
    effective_at = None if pending is None else pending.effective_at
    await conn.execute(
        "INSERT INTO retention_policies"
        " (tenant_id, pending_default_days, pending_rules, pending_effective_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE"
        " SET pending_default_days = excluded.pending_default_days,"
        " pending_rules = excluded.pending_rules,"
        " pending_effective_at = excluded.pending_effective_at",
        [tenant_id, days, rules, effective_at],
    )
    return await read_policy(conn, tenant_id)


async def apply_pending(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, now: datetime
) -> StoredPolicy:
    """The change pending made the policy in force, updated `now`; the
    policy as it was if none is pending."""
    await conn.execute(
        "UPDATE retention_policies SET default_days = pending_default_days,"
        " rules = pending_rules, policy_updated_at = %s, pending_default_days = NULL,"
        " pending_rules = NULL, pending_effective_at = NULL"
        " WHERE tenant_id = %s AND pending_effective_at IS NOT NULL",
        [now, tenant_id],
    )
    return await read_policy(conn, tenant_id)


async def tenants_with_changes_due(
    conn: psycopg.AsyncConnection[Any], *, now: datetime
) -> list[str]:
    """Tenants whose pending retention change is due by `now`."""
    cursor = await conn.execute(
        "SELECT tenant_id FROM retention_policies WHERE pending_effective_at <= %s"
        " ORDER BY tenant_id",
        [now],
    )
    return [row[0] for row in await cursor.fetchall()]


async def write_hold(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, on: bool, reason: str, now: datetime
) -> StoredPolicy:
    """Waits for a purge batch of the tenant in progress: once this returns,
    no batch removes anything until the hold is released."""
    await conn.execute(
        "INSERT INTO retention_policies"
        " (tenant_id, legal_hold, legal_hold_reason, legal_hold_updated_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE"
        " SET legal_hold = excluded.legal_hold, legal_hold_reason = excluded.legal_hold_reason,"
        " legal_hold_updated_at = excluded.legal_hold_updated_at",
        [tenant_id, on, reason, now],
    )
    return await read_policy(conn, tenant_id)


async def write_max_days(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, max_days: int | None
) -> StoredPolicy:
    """Sets the tenant's ceiling (None: none), its policy and hold as they
    are. Waits for a purge batch of the tenant in progress: once this
    returns, every batch keeps to it."""
    await conn.execute(
        "INSERT INTO retention_policies (tenant_id, max_days) VALUES (%s, %s)"
        " ON CONFLICT (tenant_id) DO UPDATE SET max_days = excluded.max_days",
        [tenant_id, max_days],
    )
    return await read_policy(conn, tenant_id)


async def tenants_with_expiry(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Tenants whose policy removes anything, or whose plan's ceiling does
    (a policy of forever under a ceiling removes events once they are as old
    as the ceiling), and who have no legal hold."""
    cursor = await conn.execute(
        "SELECT tenant_id FROM retention_policies WHERE NOT legal_hold AND (default_days > 0"
        " OR max_days IS NOT NULL OR jsonb_path_exists(rules, '$[*] ? (@.days > 0)'))"
        " ORDER BY tenant_id"
    )
    return [row[0] for row in await cursor.fetchall()]


async def first_kept_after(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, seq: int
) -> int | None:
    """If retention removed event seq + 1: the first event after it that is
    kept (or one past the log's end); else None."""
    cursor = await conn.execute(
        "SELECT coalesce((SELECT min(seq) FROM events WHERE tenant_id = %(t)s AND seq > %(s)s),"
        " (SELECT tree_size + 1 FROM chain_heads WHERE tenant_id = %(t)s))"
        " FROM tree_nodes WHERE tenant_id = %(t)s AND level = 0 AND idx = %(s)s",
        {"t": tenant_id, "s": seq},
    )
    row = await cursor.fetchone()
    return None if row is None else int(row[0])


async def purged_between(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    *,
    after_seq: int,
    through_seq: int,
    sent: list[int],
) -> list[int]:
    """How many events retention removed in each gap that the events `sent`
    (ascending, all within after_seq < seq <= through_seq) leave in that
    range: the i-th count is of those just before sent[i], the last of those
    after the last sent one. An event sent and removed since (read before its
    purge) goes out, so it is not counted. From the tombstones (a leaf's index
    is its seq - 1): first whether the range has any, by the index, which it
    mostly has not (retention removes the oldest events, a stream mostly reads
    the newest); then each one placed by a binary search of `sent`
    (width_bucket), and told from a sent one by the seq the search lands on.
    A stream announcing removals (a console's Live always does) counts them
    every 1,000 events it reads from the table: where nothing was removed, the
    list of those events was sent twice and looked up each time for nothing
    (3 to 4.5 ms a count; the look at the index, 0.3 ms)."""
    cursor = await conn.execute(
        "SELECT EXISTS (SELECT FROM tree_nodes WHERE tenant_id = %s AND level = 0"
        " AND idx >= %s AND idx < %s)",
        [tenant_id, after_seq, through_seq],
    )
    row = await cursor.fetchone()
    counts = [0] * (len(sent) + 1)
    if row is None or not row[0]:
        return counts
    cursor = await conn.execute(
        "SELECT gap, count(*) FROM ("
        "  SELECT width_bucket(idx + 1, %(sent)s::bigint[]) AS gap, idx"
        "  FROM tree_nodes WHERE tenant_id = %(t)s AND level = 0"
        "  AND idx >= %(after)s AND idx < %(through)s"
        ") AS removed WHERE gap = 0 OR (%(sent)s::bigint[])[gap] <> idx + 1 GROUP BY gap",
        {"t": tenant_id, "after": after_seq, "through": through_seq, "sent": sent},
    )
    for gap, count in await cursor.fetchall():
        counts[gap] = int(count)
    return counts


@dataclass(frozen=True, slots=True)
class PurgedBatch:
    first_seq: int
    last_seq: int
    removed: RemovedLeaves  # which leaves, for retention's statement

    @property
    def count(self) -> int:
        return self.removed.count


async def locked_policy(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> StoredPolicy:
    """The tenant's policy, its row locked until the transaction ends."""
    cursor = await conn.execute(_SELECT + " FOR SHARE", [tenant_id])
    return _stored(await cursor.fetchone())


# One batch: the doomed rows locked, deleted, and their leaf hashes kept in
# tree_nodes as tombstones, in one statement. The DELETE is written first, so
# that the statement's span is named for it (`DELETE events`, store/traced.py);
# PostgreSQL runs the parts of a WITH in no written order.
#
# The rows are selected by their columns, copies of the record a superuser can
# change: each also says whether its columns are its record's, and its record
# the one its leaf hashes (`faithful`), checked by the database as it reads the
# row, before anything is signed (helper-127).
_PURGE: Final = sql.SQL(
    "WITH doomed AS ("
    " SELECT seq, (SELECT sha256('\\x00'::bytea || convert_to(record, 'UTF8')) = leaf_hash"
    " AND r ->> 'action' = action AND r ->> 'category' IS NOT DISTINCT FROM category"
    " AND (r ->> 'received_at')::timestamptz = received_at"
    " FROM (SELECT record::json) AS j(r)) AS faithful"
    " FROM events"
    " WHERE tenant_id = %s AND received_at < %s AND seq > %s AND {conditions}"
    " ORDER BY seq LIMIT %s FOR UPDATE),"
    " removed AS (DELETE FROM events AS e USING doomed AS d"
    " WHERE e.tenant_id = %s AND e.seq = d.seq RETURNING e.seq, e.leaf_hash),"
    " tombstones AS (INSERT INTO tree_nodes (tenant_id, level, idx, hash)"
    " SELECT %s, 0, seq - 1, leaf_hash FROM removed)"
    " SELECT seq, leaf_hash, faithful FROM removed JOIN doomed USING (seq)"
)


async def purge_batch(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    selection: Selection,
    *,
    received_before: datetime,
    limit: int,
    after_seq: int = 0,
    through_seq: int | None = None,
    received_from: datetime | None = None,
) -> PurgedBatch:
    """Remove up to `limit` events of `selection` received before the cutoff,
    after `after_seq` and up to `through_seq` (if set: no later event is
    read), oldest first, keeping their leaf hashes. Call inside a transaction
    that has declared the removal and holds the policy lock (see the module
    doc). A batch that follows one of the same selection and cutoff starts
    after its last seq: every match up to it is gone, and what is left below
    it (events other rules keep) is not walked again."""
    conditions, params = _selection_conditions(selection)
    if through_seq is not None:
        conditions = [*conditions, sql.SQL("seq <= %s")]
        params = [*params, through_seq]
    if received_from is not None:  # all before it is gone (a mark): its months are not read
        conditions = [*conditions, sql.SQL("received_at >= %s")]
        params = [*params, received_from]
    query = _PURGE.format(conditions=sql.SQL(" AND ").join(conditions))
    # Planned for its values each time: a generic plan, which PostgreSQL turns
    # to after five runs of a prepared statement, walks a month's primary key
    # from `after_seq` where the receive-time index reads a span's rows alone
    # (a batch of a span: about 0.1 s against 0.006, helper-90).
    cursor = await conn.execute(
        query,
        [tenant_id, received_before, after_seq, *params, limit, tenant_id, tenant_id],
        prepare=False,
    )
    rows = await cursor.fetchall()
    removed = RemovedLeaves()
    for seq, leaf, faithful in rows:
        if not faithful:
            # Its columns were changed behind the service's back (a superuser
            # moving a kept event under a rule): its removal would be signed.
            raise IntegrityFailure(
                f"retention: seq {seq} of {tenant_id!r} was selected for removal by its row's"
                " columns, but they are not its record's (or its record is not the one its"
                " leaf hashes): the row was changed outside Sealtrail. Nothing of the batch"
                " is removed; the tenant is not purged until the row is put right"
            )
        removed.add(seq, bytes(leaf))
    seqs = [seq for seq, _, _ in rows]
    return PurgedBatch(min(seqs, default=0), max(seqs, default=0), removed)


async def received_at_after(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    *,
    received_from: datetime,
    received_before: datetime,
    events: int,
) -> datetime | None:
    """The receive time of the tenant's event `events` places after the first
    received in [received_from, received_before), in receive order; None if
    there are not that many. A bound for a batch to read at most about as many
    (the index on (tenant_id, received_at), its entries only where it can)."""
    cursor = await conn.execute(
        "SELECT received_at FROM events WHERE tenant_id = %s AND received_at >= %s"
        " AND received_at < %s ORDER BY received_at OFFSET %s LIMIT 1",
        [tenant_id, received_from, received_before, events],
    )
    row = await cursor.fetchone()
    return None if row is None else row[0]


async def purge_marks(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> dict[str, datetime]:
    """{selection key: the time before which all of it is removed}."""
    cursor = await conn.execute(
        "SELECT selection, removed_before FROM retention_marks WHERE tenant_id = %s", [tenant_id]
    )
    return {str(key): before for key, before in await cursor.fetchall()}


async def mark_purged(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    selection_key: str,
    *,
    removed_before: datetime,
    current: Sequence[str],
) -> None:
    """Note that every event of the selection received before `removed_before`
    is gone, and forget the marks of selections the policy no longer has."""
    await conn.execute(
        "INSERT INTO retention_marks (tenant_id, selection, removed_before) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id, selection) DO UPDATE SET removed_before ="
        " greatest(retention_marks.removed_before, excluded.removed_before)",
        [tenant_id, selection_key, removed_before],
    )
    await conn.execute(
        "DELETE FROM retention_marks WHERE tenant_id = %s AND selection <> ALL(%s)",
        [tenant_id, list(current)],
    )


async def count_expired(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    horizons: Sequence[tuple[Selection, datetime]],
    *,
    read_limit: int,
) -> list[tuple[int, bool]]:
    """For each (selection, horizon), how many events of the selection
    received before the horizon a purge would remove, and whether that is a
    lower bound. One read of the tenant's events received before the latest
    horizon, oldest first, at most `read_limit` of them, whatever the number
    of rules: where it stops, a selection whose horizon lies beyond the last
    event read may have more."""
    if not horizons:
        return []
    query, params = count_expired_statement(tenant_id, horizons, read_limit=read_limit)
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    assert row is not None
    *expired, read, last = row
    stopped = read > read_limit
    # Every event received before the last one read was read.
    return [
        (int(count), stopped and horizon > last)
        for count, (_, horizon) in zip(expired, horizons, strict=True)
    ]


def count_expired_statement(
    tenant_id: str, horizons: Sequence[tuple[Selection, datetime]], *, read_limit: int
) -> tuple[sql.Composed, list[Any]]:
    """count_expired's statement and parameters: a count for each selection,
    then the rows read and the last one's received_at. It reads one row past
    the limit, which tells a read that stopped from one that ended at it."""
    counts: list[sql.Composable] = []
    params: list[Any] = []
    for selection, horizon in horizons:
        conditions, values = _selection_conditions(selection)
        counts.append(
            sql.SQL("count(*) FILTER (WHERE received_at < %s AND {})").format(
                sql.SQL(" AND ").join(conditions)
            )
        )
        params += [horizon, *values]
    query = sql.SQL(
        "SELECT {counts}, count(*), max(received_at) FROM (SELECT received_at, action,"
        " category FROM events WHERE tenant_id = %s AND received_at < %s"
        " ORDER BY received_at LIMIT %s) AS older"
    ).format(counts=sql.SQL(", ").join(counts))
    latest = max(horizon for _, horizon in horizons)
    return query, [*params, tenant_id, latest, read_limit + 1]


def _selection_conditions(selection: Selection) -> tuple[list[sql.Composable], list[Any]]:
    conditions: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []

    def add(condition: sql.Composable, values: list[Any]) -> None:
        conditions.append(condition)
        params.extend(values)

    if selection.prefix is not None:
        add(*action_prefix_range(selection.prefix))
    if selection.category is not None:
        add(sql.SQL("category = %s"), [selection.category])
    for other in selection.except_prefixes:
        condition, bounds = action_prefix_range(other)
        add(sql.SQL("NOT {}").format(condition), bounds)
    if selection.except_categories:
        # An event with no category falls under the default.
        add(sql.SQL("coalesce(category, '') <> ALL(%s)"), [list(selection.except_categories)])
    return conditions, params


# What alert rules learned of a tenant's actors (migration 0021).
_LEARNED_ORIGINS: Final = ("alert_known_ips", "alert_known_countries")


async def forget_origins(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, *, seen_before: datetime
) -> int:
    """Forget the addresses and countries alert rules learned of the tenant's
    actors and last saw before the cutoff; how many."""
    forgotten = 0
    for table in _LEARNED_ORIGINS:
        cursor = await conn.execute(
            sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND last_seen_at < %s").format(
                sql.Identifier(table)
            ),
            [tenant_id, seen_before],
        )
        forgotten += cursor.rowcount
    return forgotten


@dataclass(frozen=True, slots=True)
class PendingPurge:
    """What a pass removed of a tenant and has not recorded yet, as kept."""

    tenant_id: str
    purge_id: str
    summary: dict[str, Any]
    mac: bytes | None  # the service's seal of it (domain/purge_summaries.py)

    def sealed_by(self, seal: SummarySeal) -> bool:
        return seal.opens(self.tenant_id, self.purge_id, self.summary, self.mac)


async def note_pending_purge(
    conn: psycopg.AsyncConnection[Any],
    seal: SummarySeal,
    tenant_id: str,
    purge_id: str,
    summary: dict[str, Any],
    *,
    now: datetime,
) -> None:
    """Keeps what a pass has removed of the tenant so far, sealed, until it is
    recorded (in the transaction of the batch that removed the latest)."""
    await conn.execute(
        "INSERT INTO retention_pending_purges (tenant_id, purge_id, summary, mac, updated_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE"
        " SET purge_id = excluded.purge_id, summary = excluded.summary, mac = excluded.mac,"
        " updated_at = excluded.updated_at",
        [
            tenant_id,
            purge_id,
            json.dumps(summary),
            seal.seal(tenant_id, purge_id, summary),
            now,
        ],
    )


async def pending_purges(
    conn: psycopg.AsyncConnection[Any], tenant_id: str | None = None
) -> list[PendingPurge]:
    """Every removal not yet recorded (of `tenant_id`, or of every tenant)."""
    cursor = await conn.execute(
        "SELECT tenant_id, purge_id::text, summary, mac FROM retention_pending_purges"
        " WHERE tenant_id = coalesce(%s, tenant_id) ORDER BY tenant_id",
        [tenant_id],
    )
    return [
        PendingPurge(
            str(t), str(p), s if isinstance(s, dict) else {}, None if m is None else bytes(m)
        )
        for t, p, s, m in await cursor.fetchall()
    ]


async def forget_pending_purge(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, purge_id: str
) -> None:
    """Its `retention.purged` event is in the log."""
    await conn.execute(
        "DELETE FROM retention_pending_purges WHERE tenant_id = %s AND purge_id = %s",
        [tenant_id, purge_id],
    )
