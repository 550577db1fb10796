"""Rows of alert rules, the evaluation cursors and the addresses actors were
seen from. Rules are written by admins' calls (service role); cursors, counts
and known addresses by the evaluator (system role), every cursor move under
its lease, as the forwarder's (store/sinks.py).

An erasure locks the tenant's rules and deletes its rows in one transaction
that lasts minutes for a large tenant; an evaluation step waiting for it would
hold a pooled connection meanwhile. So a step's statements that would wait
try the tenant's erasure lock, shared, first, as the forwarder's do (ADR
0036): reading the leased cursor or moving it finds nothing to do (the step
ends as when its lease is lost), and learning an origin is refused
(`tenant_being_erased`), as is counting an alert, whose transaction shares
the lock before it counts (the evaluator's `_fire`). Skipped, either would let
the step move its cursor past an alert; refused, the step fails and runs
again from its cursor."""

from __future__ import annotations

import hashlib
import json
import sys
import weakref
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import sql

from ..domain.alerts import (
    CASED_SAMPLE,
    ID_SPACES,
    KeptGroup,
    KeptWindow,
    WindowChanges,
    folded_apart,
    lowers_as_actor_group,
)
from ..domain.event import ALERT_ACTION, MAX_FUTURE_SKEW_SECONDS
from ..domain.filters import EventFilter
from .arrays import ByteaArray, Int8Array, TextArray
from .changes import (
    erasure_lock_key,
    erasure_lock_key_of,
    tenant_being_erased,
    try_share_condition,
)
from .database import SYSTEM_ROLE, Database
from .events import (
    RECORD_CREDENTIAL,
    RECORD_CREDENTIAL_ID,
    RECORD_CREDENTIAL_KIND,
    filter_conditions,
)

Connection = psycopg.AsyncConnection[Any]
_SKEW: Final = timedelta(seconds=MAX_FUTURE_SKEW_SECONDS)


@dataclass(frozen=True, slots=True)
class StoredRule:
    tenant_id: str
    id: str
    name: str
    condition: dict[str, Any]  # {"kind": ..., "filter": <EventFilter JSON>, ...}
    severity: str
    sink_ids: list[str]
    disabled: bool
    start_seq: int
    created_at: datetime
    updated_at: datetime  # of the definition: firing does not move it
    fired: int
    last_fired_at: datetime | None


_COLUMNS: Final = (
    "tenant_id, id::text, name, condition, severity, sink_ids, disabled, start_seq,"
    " created_at, updated_at, fired, last_fired_at"
)


async def count_rules(conn: Connection, tenant_id: str) -> int:
    cursor = await conn.execute(
        "SELECT count(*) FROM alert_rules WHERE tenant_id = %s", [tenant_id]
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


def _definition_values(rule: StoredRule) -> list[Any]:
    """name, condition, severity, sink_ids, disabled, start_seq: as insert and
    update write them."""
    return [
        rule.name,
        json.dumps(rule.condition),
        rule.severity,
        json.dumps(rule.sink_ids),
        rule.disabled,
        rule.start_seq,
    ]


async def insert_rule(conn: Connection, rule: StoredRule) -> None:
    """The rule, and the tenant's evaluation cursor at the rule's start if it has none."""
    await conn.execute(
        "INSERT INTO alert_rules (tenant_id, id, name, condition, severity, sink_ids, disabled,"
        " start_seq, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [rule.tenant_id, rule.id, *_definition_values(rule), rule.created_at, rule.updated_at],
    )
    await conn.execute(
        "INSERT INTO alert_cursors (tenant_id, cursor_seq) VALUES (%s, %s)"
        " ON CONFLICT (tenant_id) DO NOTHING",
        [rule.tenant_id, rule.start_seq],
    )


async def list_rules(conn: Connection, tenant_id: str) -> list[StoredRule]:
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM alert_rules WHERE tenant_id = %s ORDER BY created_at, id",
        [tenant_id],
    )
    return [StoredRule(*row) for row in await cursor.fetchall()]


async def read_rule(conn: Connection, tenant_id: str, rule_id: str) -> StoredRule | None:
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM alert_rules WHERE tenant_id = %s AND id = %s",
        [tenant_id, rule_id],
    )
    row = await cursor.fetchone()
    return None if row is None else StoredRule(*row)


async def update_rule(conn: Connection, rule: StoredRule, *, forget_origins: bool) -> None:
    """Replaces the rule's definition (name, condition, severity, sinks,
    disabled, the seq it watches from) and when it changed; with
    `forget_origins`, the addresses or countries it learned go too. A kept
    threshold window goes unless the rule still counts as it was built to
    (enabled, the same condition and start): taken up afresh, the rule
    rebuilds it, and a rule that is off keeps nothing of its events. The
    caller holds the rule's change lock (store/changes.py), so the rule is
    there."""
    await conn.execute(
        "UPDATE alert_rules SET name = %s, condition = %s, severity = %s, sink_ids = %s,"
        " disabled = %s, start_seq = %s, updated_at = %s WHERE tenant_id = %s AND id = %s",
        [*_definition_values(rule), rule.updated_at, rule.tenant_id, rule.id],
    )
    # After the rule's row is written (and locked): an evaluation step that
    # keeps the window holds the row FOR SHARE until it commits, so it either
    # committed before (its rows go now) or finds the rule changed.
    await conn.execute(
        "DELETE FROM alert_rule_windows WHERE tenant_id = %s AND rule_id = %s"
        " AND (%s OR condition <> %s::jsonb OR start_seq <> %s)",
        [rule.tenant_id, rule.id, rule.disabled, json.dumps(rule.condition), rule.start_seq],
    )
    if forget_origins:
        for table, _ in _KNOWN.values():
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND rule_id = %s").format(
                    sql.Identifier(table)
                ),
                [rule.tenant_id, rule.id],
            )


async def delete_rule(
    conn: Connection, tenant_id: str, rule_id: str
) -> list[tuple[dict[str, Any], list[str]]]:
    """Deletes the rule, leaving its tombstone. Returns its alerts recorded
    and not counted yet (their step failed between the two), oldest first,
    each with the sinks it goes to: those it names, or, recorded before
    alerts named them, the rule's. The step running again will not route
    them, for it no longer reads the rule, so the deletion must
    (alerts/routing.py). Read by the statement that deletes the row, which
    counts them in the tombstone: a count racing it waits for the row's
    lock, then finds the tombstone, and counts (and routes) only an alert
    committed after that read (`count_firing`). Each is routed once."""
    await conn.execute(
        "DELETE FROM alert_rule_tombstones WHERE tenant_id = %s"
        " AND deleted_at < now() - interval '1 day'",
        [tenant_id],
    )
    cursor = await conn.execute(
        "WITH gone AS (DELETE FROM alert_rules WHERE tenant_id = %(tenant)s AND id = %(rule)s"
        "   RETURNING tenant_id, id, sink_ids, coalesce(counted_alert_seq, start_seq) AS counted),"
        " uncounted AS (SELECT e.seq, e.record,"
        "   coalesce((e.record::jsonb) -> 'details' -> 'sink_ids', gone.sink_ids) AS sinks"
        "   FROM gone JOIN events e ON e.tenant_id = gone.tenant_id"
        "   AND e.resource_type = 'alert_rule' AND e.resource_id = gone.id::text"
        "   AND e.action = %(action)s AND e.seq > gone.counted),"
        " tombstone AS (INSERT INTO alert_rule_tombstones (tenant_id, rule_id, counted_alert_seq)"
        "   SELECT tenant_id, id, greatest(counted, (SELECT max(seq) FROM uncounted)) FROM gone)"
        " SELECT record, sinks FROM uncounted ORDER BY seq",
        {"tenant": tenant_id, "rule": rule_id, "action": ALERT_ACTION},
    )
    return [(json.loads(record), list(sinks)) for record, sinks in await cursor.fetchall()]


def alert_key(rule_id: str, trigger_seq: int) -> str:
    """An alert's idempotency key: one alert per rule and trigger, however
    often the trigger is evaluated."""
    return f"alert:{rule_id}:{trigger_seq}"


def absence_key(rule_id: str, since_seq: int) -> str:
    """An absence rule's alert's idempotency key (ADR 0162): one alert per
    rule and silence, the silence named by the seq it runs from (the last
    matching event's, or the rule's start). Apart from `alert_key`'s: a match
    rule changed to an absence rule may have fired on that very event."""
    return f"{alert_key(rule_id, since_seq)}:absent"


@dataclass(frozen=True, slots=True)
class LastExpected:
    """The newest event an absence rule expects that was received: its seq,
    id and receipt (the server's clock)."""

    seq: int
    id: str
    received_at: datetime


async def last_expected(
    db: Database, *, tenant_id: str, event_filter: EventFilter, after_seq: int
) -> LastExpected | None:
    """The newest event after `after_seq` (an absence rule's start) that
    matches `event_filter`, alerts aside; None if none (ADR 0162). One probe
    down an index by seq, newest first: the first row found ends it."""
    conditions, params = filter_conditions(tenant_id, event_filter)
    newest = sql.SQL(
        "SELECT seq, id::text, received_at FROM events WHERE {} AND seq > %s AND action <> %s"
        " ORDER BY seq DESC LIMIT 1"
    ).format(sql.SQL(" AND ").join(conditions))
    async with db.connection(tenant_id, statement_timeout=SPIKE_COUNT_SECONDS) as conn:
        cursor = await conn.execute(newest, [*params, after_seq, ALERT_ACTION])
        row = await cursor.fetchone()
    return None if row is None else LastExpected(int(row[0]), str(row[1]), row[2])


async def received_at(db: Database, *, tenant_id: str, seq: int) -> datetime | None:
    """When the tenant's event at `seq` was received; None if it is not
    there (not yet, or purged)."""
    async with db.connection(tenant_id) as conn:
        cursor = await conn.execute(
            "SELECT received_at FROM events WHERE tenant_id = %s AND seq = %s", [tenant_id, seq]
        )
        row = await cursor.fetchone()
    return None if row is None else row[0]


async def alert_triggers(
    db: Database, *, tenant_id: str, rule_id: str, after_seq: int = 0
) -> set[int]:
    """The seqs of the events after `after_seq` that fired the rule's recorded
    alerts, from their idempotency keys (an alert comes after its trigger, so
    only alerts after `after_seq` are read, not every one the rule ever
    raised): the rule's alerts are read by resource (the rule), one range of
    the resource index. (A range of the keys themselves, from
    `alert:<rule>:` to `alert:<rule>;`, assumed byte order: under a
    linguistic collation, en_US or ICU, punctuation sorts otherwise and the
    range came back empty, so a restart fired each alert again.)"""
    prefix = alert_key(rule_id, 0).removesuffix("0")
    async with db.connection(tenant_id) as conn:
        cursor = await conn.execute(
            "SELECT idempotency_key FROM events WHERE tenant_id = %s"
            " AND resource_type = 'alert_rule' AND resource_id = %s AND action = %s"
            " AND seq > %s",
            [tenant_id, rule_id, ALERT_ACTION, after_seq],
        )
        keys = [str(key) for (key,) in await cursor.fetchall() if key]
        # An absence rule's keys (`absence_key`) name no trigger: a rule whose
        # kind changed since keeps them, and they fire no window of its.
        triggers = {
            int(key.removeprefix(prefix))
            for key in keys
            if key.startswith(prefix) and key.removeprefix(prefix).isdigit()
        }
        return {seq for seq in triggers if seq > after_seq}


@dataclass(frozen=True, slots=True)
class SpikeCounts:
    """A spike rule's counts at one event (ADR 0132): its window's matching
    events, those of the baseline's windows before it, and the oldest time
    of any event of the tenant's there (None: none, no history yet)."""

    current: int
    baseline: int
    history_from: datetime | None


# A count runs at most this long (it reads up to 35 days of matching events):
# past it the step fails and runs again, as when the database is away.
SPIKE_COUNT_SECONDS: Final = 60.0


async def spike_counts(
    db: Database,
    *,
    tenant_id: str,
    event_filter: EventFilter,
    start_seq: int,
    upto_seq: int,
    baseline_from: datetime,
    window_from: datetime,
    window_to: datetime,
) -> SpikeCounts:
    """The matching events (no alert among them) up to `upto_seq` that
    occurred in the window [window_from, window_to), of those only the ones
    the rule watched (after `start_seq`, its start: created or enabled again,
    none recorded while it was off), and in the baseline's windows
    [baseline_from, window_from), whenever recorded (the tenant's history):
    one statement, tenant first, bound by occurred_at (and so by receipt, the
    months before not read) as Query bounds a time range (the (tenant,
    occurred_at) index, or the filter's own). And the oldest time any event
    of the tenant's occurred within the baseline's windows: one step down the
    (tenant, occurred_at) index."""
    bounded = replace(
        event_filter,
        occurred_after=max(baseline_from, event_filter.occurred_after or baseline_from),
        occurred_before=min(window_to, event_filter.occurred_before or window_to),
    )
    conditions, params = filter_conditions(tenant_id, bounded)
    counted = sql.SQL(
        "SELECT count(*) FILTER (WHERE occurred_at >= %s AND seq > %s),"
        " count(*) FILTER (WHERE occurred_at < %s)"
        " FROM events WHERE {} AND seq <= %s AND action <> %s"
    ).format(sql.SQL(" AND ").join(conditions))
    async with db.connection(tenant_id, statement_timeout=SPIKE_COUNT_SECONDS) as conn:
        cursor = await conn.execute(
            counted, [window_from, start_seq, window_from, *params, upto_seq, ALERT_ACTION]
        )
        row = await cursor.fetchone()
        assert row is not None
        current, baseline = int(row[0]), int(row[1])
        first = await _history_from(
            conn, tenant_id=tenant_id, baseline_from=baseline_from, window_from=window_from
        )
    return SpikeCounts(current, baseline, first)


async def _history_from(
    conn: Connection, *, tenant_id: str, baseline_from: datetime, window_from: datetime
) -> datetime | None:
    """The oldest time any event of the tenant's occurred within the
    baseline's windows [baseline_from, window_from): one step down the
    (tenant, occurred_at) index; None: none (no history yet)."""
    cursor = await conn.execute(
        "SELECT min(occurred_at) FROM events WHERE tenant_id = %s"
        " AND occurred_at >= %s AND occurred_at < %s AND received_at >= %s",
        [tenant_id, baseline_from, window_from, baseline_from - _SKEW],
    )
    first = await cursor.fetchone()
    return None if first is None else first[0]


@dataclass(frozen=True, slots=True)
class SpikeGroup:
    """One group of a grouped spike rule at a count (ADR 0147): its key's
    parts as the database read them (`parts`: the actor id as recorded; the
    IP address's network; the credential's kind and id), its matching events
    of the window up to the event counted at (`before`) and up to the step's
    last event (`current`), and of the baseline's windows (`baseline`)."""

    parts: tuple[str, str]
    before: int
    current: int
    baseline: int


@dataclass(frozen=True, slots=True)
class SpikeGroupCounts:
    """A grouped spike rule's counts: the groups judged (at most the cap,
    the most events in the window first), how many groups had events in the
    window (`groups`: more than those judged when the cap left some out),
    and the tenant's oldest time in the baseline (None: no history yet)."""

    judged: list[SpikeGroup]
    groups: int
    history_from: datetime | None


# What a grouped spike groups on, as two text parts (the second '' where a
# key has one), and which events have a group at all. An IP address as the
# threshold's `network_of` writes it: an IPv4 address itself, an IPv6
# address's /64 (PostgreSQL writes a cidr as Python's ipaddress does). A
# credential's kind and id from the columns of migration 0056, or the record
# of a row appended before it (credential_kind NULL). An actor id as recorded:
# the evaluator folds it (ADR 0110) and merges the groups that fold alike.
_SPIKE_KEYS: Final[dict[str, tuple[str, str, str]]] = {
    "actor": ("actor_id", "''", "true"),
    "ip": (
        "CASE WHEN family(ip) = 6 THEN network(set_masklen(ip, 64))::text ELSE host(ip) END",
        "''",
        "ip IS NOT NULL",
    ),
    "credential": (
        f"CASE WHEN credential_kind IS NULL THEN coalesce({RECORD_CREDENTIAL_KIND}, '')"
        " ELSE credential_kind END",
        f"CASE WHEN credential_kind IS NULL THEN coalesce({RECORD_CREDENTIAL_ID}, '')"
        " ELSE coalesce(credential_id, '') END",
        f"(credential_kind <> '' OR (credential_kind IS NULL AND {RECORD_CREDENTIAL} IS NOT NULL"
        f" AND {RECORD_CREDENTIAL}::text NOT IN ('null', '{{}}')))",
    ),
}


@dataclass(frozen=True, slots=True)
class SpikeGroupsAsked:
    """What a grouped spike's count is asked: the tenant's events matching
    `event_filter` from `start_seq` (the rule's start) up to `upto_seq` (the
    step's last event), grouped by `group_by`, the window's count also up to
    `at_seq` (the event being judged); the baseline from `baseline_from` to
    `window_from`, the window from there to `window_to`; at most `cap` groups.
    `fold`: grouped by actor, how ids that read alike are made one group
    (domain.alerts.actor_group; None: compared as recorded)."""

    tenant_id: str
    event_filter: EventFilter
    group_by: str
    start_seq: int
    at_seq: int
    upto_seq: int
    baseline_from: datetime
    window_from: datetime
    window_to: datetime
    cap: int
    fold: Callable[[str], str] | None = None


# A grouped spike's counts of a group: its window's events up to the event
# judged (`before`) and up to the step's last (`current`), its baseline's.
_GROUP_COUNTS: Final = (
    "count(*) FILTER (WHERE occurred_at >= %s AND seq > %s AND seq <= %s) AS before,"
    " count(*) FILTER (WHERE occurred_at >= %s AND seq > %s) AS current,"
    " count(*) FILTER (WHERE occurred_at < %s) AS baseline"
)


def _grouped_events(asked: SpikeGroupsAsked) -> tuple[sql.Composable, list[Any], list[Any]]:
    """What a grouped spike's statements count: the `_GROUP_COUNTS` and their
    values, and the events' conditions (as spike_counts', over the baseline
    and the window, up to the step's last event, no alert) and theirs."""
    event_filter, baseline_from, window_to = (
        asked.event_filter,
        asked.baseline_from,
        asked.window_to,
    )
    bounded = replace(
        event_filter,
        occurred_after=max(baseline_from, event_filter.occurred_after or baseline_from),
        occurred_before=min(window_to, event_filter.occurred_before or window_to),
    )
    conditions, params = filter_conditions(asked.tenant_id, bounded)
    window_from, start_seq = asked.window_from, asked.start_seq
    counted = [window_from, start_seq, asked.at_seq, window_from, start_seq, window_from]
    where = sql.SQL("{} AND seq <= %s AND action <> %s").format(sql.SQL(" AND ").join(conditions))
    return where, counted, [*params, asked.upto_seq, ALERT_ACTION]


def spike_groups_statement(asked: SpikeGroupsAsked) -> tuple[sql.Composed, list[Any]]:
    """The one statement of a grouped spike's count (the plan test EXPLAINs
    it) and its parameters: as spike_counts', grouped; the `cap` groups with
    the most events in the window (ties by key, in byte order), and how many
    had any."""
    where, counted, params = _grouped_events(asked)
    first, second, present = _SPIKE_KEYS[asked.group_by]
    statement = sql.SQL(
        "SELECT k, i, before, current, baseline, count(*) OVER () FROM ("
        " SELECT {first} AS k, {second} AS i, {counts}"
        " FROM events WHERE {where} AND {present}"
        " GROUP BY 1, 2) AS g"
        ' WHERE current > 0 ORDER BY current DESC, k COLLATE "C", i COLLATE "C" LIMIT %s'
    ).format(
        first=sql.SQL(first),
        second=sql.SQL(second),
        counts=sql.SQL(_GROUP_COUNTS),
        where=where,
        present=sql.SQL(present),
    )
    return statement, [*counted, *params, asked.cap]


# What Python's str.strip() trims of an id all ASCII (actor_group trims ids so).
_ASCII_SPACE: Final = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
# An id, not all ASCII, folded as far as a database can as actor_group does:
# NFKC, each character lowercased (by the collation's rules), NFKC again,
# trimmed of ID_SPACES (the parameter).
ID_FOLD: Final = "btrim(normalize(lower(normalize({id}, NFKC)), NFKC), %s)"
# What the database's lower() makes of domain.alerts.CASED_SAMPLE (by its
# collation): whether its folds are actor_group's (lowers_as_actor_group).
LOWERED_SAMPLE: Final = "SELECT lower(%s::text)"
# Whether each Database's lower() folds as actor_group, once asked. Asked at
# each forms' statement, it was one more round trip an evaluation for an
# answer fixed by the database's collation (its LC_CTYPE), which ALTER
# DATABASE cannot change: a database's lowercasing changes only by its
# recreation or restore with another collation, or an upgrade of the
# server's libraries (glibc, ICU), and this process keeps its answer until it
# is restarted; a new process asks again.
_LOWERS_AS_ACTOR_GROUP: Final[weakref.WeakKeyDictionary[Database, bool]] = (
    weakref.WeakKeyDictionary()
)


async def _lowers_as_actor_group(db: Database, conn: Connection) -> bool:
    """Whether the database's lower() folds as actor_group (LOWERED_SAMPLE),
    asked on `conn` the first time alone for `db`."""
    known = _LOWERS_AS_ACTOR_GROUP.get(db)
    if known is None:
        cursor = await conn.execute(LOWERED_SAMPLE, [CASED_SAMPLE])
        [(lowered,)] = await cursor.fetchall()
        known = _LOWERS_AS_ACTOR_GROUP[db] = lowers_as_actor_group(str(lowered))
    return known


def spike_forms_statement(
    asked: SpikeGroupsAsked, *, counted: Sequence[str], keys: Sequence[str], trusted: bool
) -> tuple[sql.Composed, list[Any]]:
    """The statement that finds, grouped by actor id as recorded, the forms of
    the judged groups' ids (their folded `keys`) that `spike_groups_statement`
    did not return (the ids other than `counted`): `Admin` with events only in
    the baseline, where `admin` has some in the window. The database folds
    each id as far as it can as actor_group does: an id all ASCII lowercased
    and trimmed (all that actor_group does to one); another made NFKC,
    lowercased, NFKC again and trimmed. It returns those whose fold is one of
    `keys`, and, for Python to fold, the ids it may fold otherwise
    (domain.alerts.folded_apart: `Straße`, a zero-width space), or every id
    not all ASCII where its collation's lower() is not `trusted`
    (LOWERED_SAMPLE, lowers_as_actor_group: C and POSIX lowercase ASCII
    alone, a Turkish collation `I` to a dotless i, ICU a final `Σ` to `ς`).
    Candidates: the caller folds them and keeps those of a judged group."""
    where, values, params = _grouped_events(asked)
    ascii_keys = [key for key in keys if key.isascii()]
    common = [*values, *params, TextArray(counted), _ASCII_SPACE, TextArray(ascii_keys)]
    if trusted:
        apart = folded_apart()
        assert not any(char.isascii() for char in apart)  # none a bracket expression's own
        other: sql.Composable = sql.SQL(
            "{fold} = ANY(%s) OR actor_id || normalize(actor_id, NFKC) ~ %s"
        ).format(fold=sql.SQL(ID_FOLD).format(id=sql.Identifier("actor_id")))
        other_values: list[Any] = [ID_SPACES, TextArray(keys), f"[{apart}]"]
    else:
        other, other_values = sql.SQL("true"), []
    statement = sql.SQL(
        "SELECT actor_id, {counts} FROM events WHERE {where} AND actor_id <> ALL(%s) AND"
        " CASE WHEN octet_length(actor_id) = char_length(actor_id)"
        ' THEN lower(btrim(actor_id, %s) COLLATE "C") = ANY(%s)'
        " ELSE {other} END"
        " GROUP BY 1"
    ).format(counts=sql.SQL(_GROUP_COUNTS), where=where, other=other)
    return statement, [*common, *other_values]


async def spike_group_counts(db: Database, asked: SpikeGroupsAsked) -> SpikeGroupCounts:
    """A grouped spike rule's counts (ADR 0147): `spike_groups_statement`,
    one statement over the window and the baseline, under the same timeout
    as spike_counts, and the tenant's history as spike_counts reads it.
    Grouped by folded actor ids (`asked.fold`), also the other forms of the
    judged groups' ids (`spike_forms_statement`), so that a group's baseline
    holds every form it was written in, as its window does."""
    statement, values = spike_groups_statement(asked)
    tenant_id = asked.tenant_id
    async with db.connection(tenant_id, statement_timeout=SPIKE_COUNT_SECONDS) as conn:
        cursor = await conn.execute(statement, values)
        rows = await cursor.fetchall()
        judged = [
            SpikeGroup((str(k), str(i)), int(before), int(current), int(baseline))
            for k, i, before, current, baseline, _ in rows
        ]
        fold = asked.fold
        if judged and fold is not None and asked.group_by == "actor":
            keys = {fold(group.parts[0]) for group in judged}
            statement, values = spike_forms_statement(
                asked,
                counted=[group.parts[0] for group in judged],
                keys=sorted(keys),
                trusted=await _lowers_as_actor_group(db, conn),
            )
            cursor = await conn.execute(statement, values)
            judged += [
                SpikeGroup((str(form), ""), int(before), int(current), int(baseline))
                for form, before, current, baseline in await cursor.fetchall()
                if fold(str(form)) in keys
            ]
        first = await _history_from(
            conn,
            tenant_id=tenant_id,
            baseline_from=asked.baseline_from,
            window_from=asked.window_from,
        )
    return SpikeGroupCounts(judged, int(rows[0][5]) if rows else 0, first)


async def kept_since(
    db: Database, *, tenant_id: str, upto_seq: int, now: datetime
) -> datetime | None:
    """When retention last removed an event of the tenant's (up to `upto_seq`,
    the event evaluated): the receipt of the first event it kept after the
    last one it removed, before which any event may be gone (a rule of its
    policy removes only some: `user.*` after 10 days, the rest kept); None
    if it removed none. From the tombstones (level 0 of tree_nodes, a leaf's
    index its seq - 1): one step down their index, one down the events'."""
    async with db.connection(tenant_id) as conn:
        cursor = await conn.execute(
            "SELECT max(idx) + 1 FROM tree_nodes WHERE tenant_id = %s AND level = 0 AND idx < %s",
            [tenant_id, upto_seq],
        )
        row = await cursor.fetchone()
        if row is None or row[0] is None:
            return None
        cursor = await conn.execute(
            "SELECT received_at FROM events WHERE tenant_id = %s AND seq > %s ORDER BY seq LIMIT 1",
            [tenant_id, int(row[0])],
        )
        kept = await cursor.fetchone()
    # None kept after it (a purge past the event evaluated): nothing before now.
    return now if kept is None else kept[0]


async def spike_fired(
    db: Database,
    *,
    tenant_id: str,
    rule: StoredRule,
    window_from: datetime,
    window_seconds: int,
    group: dict[str, Any] | None = None,
) -> int | None:
    """The seq of the event that set off the rule's alert for the window of
    `window_seconds` starting at `window_from`, if one was recorded (None if
    not): a process that took the tenant up (a restart, a lease moved, a step
    run again after a failure) knows no window's firing. Any of the rule's
    alerts, whatever it went through since (changed, disabled and enabled
    again): one alert a window a rule, or, of a grouped rule, a window a
    group (`group`: what its alert's `details.group` holds, a credential's
    hint aside). Read by resource (the rule), an alert being received after
    its window opened (less the allowed clock skew); its trigger from its
    idempotency key (`alert_key`)."""
    grouped = "" if group is None else " AND (record::jsonb -> 'details' -> 'group') @> %s::jsonb"
    async with db.connection(tenant_id) as conn:
        cursor = await conn.execute(
            "SELECT idempotency_key FROM events WHERE tenant_id = %s"
            " AND resource_type = 'alert_rule' AND resource_id = %s AND action = %s"
            " AND received_at >= %s AND (record::jsonb -> 'details' ->> 'window_start') = %s"
            " AND (record::jsonb -> 'details' -> 'window_seconds') = to_jsonb(%s::bigint)"
            + grouped + " ORDER BY seq LIMIT 1",
            [tenant_id, rule.id, ALERT_ACTION, window_from - _SKEW, instant_text(window_from),
             window_seconds, *([] if group is None else [json.dumps(group)])],
        )  # fmt: skip
        row = await cursor.fetchone()
    prefix = alert_key(rule.id, 0).removesuffix("0")
    if row is None:
        return None
    key = str(row[0] or "")
    trigger = key.removeprefix(prefix)
    # An alert whose key is not the rule's (none is): fired, by no event here.
    return int(trigger) if key.startswith(prefix) and trigger.isdigit() else 0


async def spike_judged_later(
    db: Database,
    *,
    tenant_id: str,
    event_filter: EventFilter,
    start_seq: int,
    before_seq: int,
    after: datetime,
) -> bool:
    """Whether the rule judged a later window than the one ending at `after`
    before the event at `before_seq`: one of its matching events (no alert)
    the rule watched (after its start, `start_seq`) that occurred at or after
    `after`. Only the newest window judged fires (ADR 0132): a process that
    took the rule up knows no window it judged. Bound by occurred_at from
    `after` on, as spike_counts is: the live events of the last minutes, and
    the first found ends it."""
    bounded = replace(event_filter, occurred_after=max(after, event_filter.occurred_after or after))
    conditions, params = filter_conditions(tenant_id, bounded)
    later = sql.SQL(
        "SELECT EXISTS (SELECT FROM events WHERE {} AND seq > %s AND seq < %s AND action <> %s)"
    ).format(sql.SQL(" AND ").join(conditions))
    async with db.connection(tenant_id, statement_timeout=SPIKE_COUNT_SECONDS) as conn:
        cursor = await conn.execute(later, [*params, start_seq, before_seq, ALERT_ACTION])
        row = await cursor.fetchone()
    return bool(row is not None and row[0])


def instant_text(moment: datetime) -> str:
    """A window's start as a spike's alert records it (`window_start`): UTC,
    to the second, with a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the evaluator's side (system connections) ----------------------------------


def _packed(times: array[int]) -> bytes:
    """A group's times as kept: big-endian int64s."""
    packed = array(times.typecode, times)
    if sys.byteorder == "little":
        packed.byteswap()
    return packed.tobytes()


def _unpacked(data: bytes) -> array[int]:
    times = array("q")
    times.frombytes(data)
    if sys.byteorder == "little":
        times.byteswap()
    return times


async def kept_window(
    db: Database, *, tenant_id: str, rule: StoredRule, at: int
) -> KeptWindow | None:
    """The rule's threshold window as evaluation steps kept it, if it stands
    at the tenant's cursor `at` and was built under the rule's condition and
    start as they are now."""
    async with db.system_connection() as conn, conn.transaction():
        cursor = await conn.execute(
            "SELECT condition, start_seq, newest, observed FROM alert_rule_windows"
            " WHERE tenant_id = %s AND rule_id = %s AND cursor_seq = %s",
            [tenant_id, rule.id, at],
        )
        row = await cursor.fetchone()
        if row is None or (row[0], row[1]) != (rule.condition, rule.start_seq):
            return None
        cursor = await conn.execute(
            "SELECT group_key, times, seen, quiet_until, forms FROM alert_rule_window_groups"
            " WHERE tenant_id = %s AND rule_id = %s",
            [tenant_id, rule.id],
        )
        groups = [
            KeptGroup(
                key, None if times is None else _unpacked(bytes(times)), seen, quiet,
                tuple(str(form) for form in forms or ()),
            )
            for key, times, seen, quiet, forms in await cursor.fetchall()
        ]  # fmt: skip
    return KeptWindow(None if row[2] is None else int(row[2]), int(row[3]), groups)


async def keep_windows(
    conn: Connection,
    tenant_id: str,
    *,
    from_seq: int,
    to_seq: int,
    windows: list[tuple[StoredRule, WindowChanges]],
) -> set[str]:
    """In the transaction that moves the tenant's cursor from `from_seq` to
    `to_seq` (after `advance`): the threshold windows kept at `from_seq`
    move with it, and what changed in `windows` over its events is kept;
    the ids of the rules whose windows were kept. A window kept anywhere
    else was left behind by a cursor moved otherwise (a process of the
    release before): it stays behind, and goes if it changed here (kept
    whole at the next step instead).

    A rule disabled, deleted or changed since the step read it keeps
    nothing (its window was built for what it was). The rules are held FOR
    SHARE until the commit, before any window is touched (as `update_rule`
    writes the rule, then removes its window: the other way round, each
    waited for the other), so a change racing this waits for it, then
    removes what this kept."""
    cursor = await conn.execute(
        "SELECT id::text, condition, start_seq, disabled FROM alert_rules"
        " WHERE tenant_id = %(tenant)s AND (id = ANY(%(changed)s::uuid[])"
        "   OR id IN (SELECT rule_id FROM alert_rule_windows WHERE tenant_id = %(tenant)s))"
        " ORDER BY id FOR SHARE",
        {"tenant": tenant_id, "changed": TextArray(rule.id for rule, _ in windows)},
    )
    current = {
        rule_id: (condition, start)
        for rule_id, condition, start, disabled in await cursor.fetchall()
        if not disabled
    }
    await conn.execute(
        "UPDATE alert_rule_windows SET cursor_seq = %s WHERE tenant_id = %s AND cursor_seq = %s",
        [to_seq, tenant_id, from_seq],
    )
    at = to_seq
    kept: set[str] = set()
    for rule, changes in windows:
        if current.get(rule.id) != (rule.condition, rule.start_seq):
            continue
        keys = [tenant_id, rule.id]
        if changes.whole:
            await conn.execute(
                "DELETE FROM alert_rule_window_groups WHERE tenant_id = %s AND rule_id = %s", keys
            )
            await conn.execute(
                "INSERT INTO alert_rule_windows"
                " (tenant_id, rule_id, condition, start_seq, cursor_seq, newest, observed)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, rule_id) DO UPDATE"
                " SET condition = excluded.condition, start_seq = excluded.start_seq,"
                " cursor_seq = excluded.cursor_seq, newest = excluded.newest,"
                " observed = excluded.observed",
                [*keys, json.dumps(rule.condition), rule.start_seq, at, changes.newest,
                 changes.observed],
            )  # fmt: skip
        else:
            cursor = await conn.execute(
                "UPDATE alert_rule_windows SET newest = %s, observed = %s"
                " WHERE tenant_id = %s AND rule_id = %s AND cursor_seq = %s",
                [changes.newest, changes.observed, *keys, at],
            )
            if cursor.rowcount != 1:  # not where the cursor stood: what it holds is not this
                await conn.execute(
                    "DELETE FROM alert_rule_windows WHERE tenant_id = %s AND rule_id = %s", keys
                )
                continue
        if changes.dropped:
            await conn.execute(
                "DELETE FROM alert_rule_window_groups WHERE tenant_id = %s AND rule_id = %s"
                " AND group_key = ANY(%s)",
                [*keys, TextArray(changes.dropped)],
            )
        if changes.groups:
            groups = changes.groups
            await conn.execute(
                "INSERT INTO alert_rule_window_groups"
                " (tenant_id, rule_id, group_key, times, seen, quiet_until, forms)"
                " SELECT %s, %s, k, t, s, q, f::jsonb"
                " FROM unnest(%s::text[], %s::bytea[], %s::int8[], %s::int8[], %s::text[])"
                "   AS g (k, t, s, q, f)"
                " ON CONFLICT (tenant_id, rule_id, group_key) DO UPDATE"
                " SET times = excluded.times, seen = excluded.seen,"
                " quiet_until = excluded.quiet_until, forms = excluded.forms",
                [
                    *keys,
                    TextArray(group.key for group in groups),
                    ByteaArray(
                        None if group.times is None else _packed(group.times) for group in groups
                    ),
                    Int8Array(group.seen for group in groups),
                    Int8Array(group.quiet_until for group in groups),
                    TextArray(json.dumps(group.forms) if group.forms else None for group in groups),
                ],
            )
        kept.add(rule.id)
    return kept


# A tenant is evaluated while it has an enabled rule.
_HAS_RULES: Final = (
    "EXISTS (SELECT 1 FROM alert_rules AS r WHERE r.tenant_id = c.tenant_id AND NOT r.disabled)"
)

# This owner's leases, renewed first, waiting for their rows (its own step's
# cursor move lasts milliseconds): skipped while locked, or sorted after a
# tenant that gained a rule, a tenant being evaluated was dropped at the
# limit, its windows with it (helper-155). Those of a tenant being erased are
# left out before any row is locked, their leases to expire (as
# store/sinks.py's, helper-85).
_RENEW_LEASES: Final = (
    sql.SQL(
        "UPDATE alert_cursors SET lease_until = now() + make_interval(secs => %(lease)s)"
        " WHERE tenant_id IN (SELECT c.tenant_id FROM alert_cursors AS c"
        "   WHERE c.lease_owner = %(owner)s AND {not_being_erased} AND {has_rules}"
        "   ORDER BY c.tenant_id LIMIT %(limit)s FOR UPDATE OF c)"
        " RETURNING tenant_id"
    )
    .format(
        not_being_erased=try_share_condition(erasure_lock_key_of(sql.Identifier("c", "tenant_id"))),
        has_rules=sql.SQL(_HAS_RULES),
    )
    .as_string(None)
)


@dataclass(frozen=True, slots=True)
class LeftTenant:
    """A tenant an owner leaves to another process (`claim_tenants`), for a
    rule a newer release made among its enabled ones (newer_objects.py), as
    those rules stood when it was left: a digest of each one's id and the
    time it was defined (`_RULES_DIGEST`). A rule added, enabled, disabled,
    deleted or changed since changes it, and the tenant is taken again to be
    read. Their count and newest time were not enough: each process stamps
    a definition by its own clock, and a rule deleted as another was added
    by a process whose clock is behind left both as they were."""

    tenant_id: str
    rules: str

    @classmethod
    def of(cls, tenant_id: str, enabled: Sequence[StoredRule]) -> LeftTenant:
        """The tenant as `enabled`, its enabled rules as one read saw them,
        stand: the digest `_RULES_DIGEST` takes of them in SQL, of the same
        text (ids in uuid order, which their canonical text sorts in too)."""
        text = ",".join(
            f"{rule.id} {rule.updated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"
            for rule in sorted(enabled, key=lambda rule: rule.id)
        )
        return cls(tenant_id, hashlib.sha256(text.encode("utf-8")).hexdigest())


async def claim_tenants(
    conn: Connection,
    *,
    owner: str,
    lease_seconds: float,
    limit: int,
    leave: Sequence[LeftTenant] = (),
) -> list[str]:
    """Renews this owner's leases of tenants with enabled rules, then leases
    the cursors of such tenants nobody holds, up to `limit` in all: at the
    limit, a tenant evaluated here stays, and the others wait for a process
    with room (as `store/sinks.claim_sinks`). Free cursors are taken without
    waiting (SKIP LOCKED), as other processes claim them too. Lease times are
    the database's (see claim_sinks). `leave`: tenants this owner leaves to
    another process: one whose enabled rules stand as they did when it was
    left is not taken; one whose rules changed since is, to be read again
    (a second newer rule added beside the first was never read, so never
    said). Its rules are compared in SQL, not read."""
    params = {"owner": owner, "lease": lease_seconds, "limit": limit}
    renewed = await conn.execute(_RENEW_LEASES, params)
    held = [tenant_id for (tenant_id,) in await renewed.fetchall()]
    if len(held) >= limit:
        return held
    taken = await conn.execute(
        "UPDATE alert_cursors SET lease_owner = %(owner)s,"
        " lease_until = now() + make_interval(secs => %(lease)s)"
        " WHERE tenant_id IN (SELECT c.tenant_id FROM alert_cursors AS c"
        "   WHERE (c.lease_until IS NULL OR c.lease_until < now())"
        f"   AND c.lease_owner IS DISTINCT FROM %(owner)s AND {_HAS_RULES}"
        f"   AND NOT EXISTS ({_LEFT_AS_IT_STOOD} AND l.tenant_id = c.tenant_id)"
        "   ORDER BY c.tenant_id LIMIT %(free)s FOR UPDATE OF c SKIP LOCKED)"
        " RETURNING tenant_id",
        {**params, "free": limit - len(held), **_left_values(leave)},
    )
    return held + [tenant_id for (tenant_id,) in await taken.fetchall()]


# A tenant's enabled rules as `LeftTenant.of` digests them: each id and the
# time its definition was written (in UTC, to the microsecond a timestamptz
# holds), in id order, one aggregate over the rows the primary key finds.
_RULES_DIGEST: Final = (
    "SELECT encode(sha256(convert_to(string_agg(r.id::text || ' ' || to_char("
    "r.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), ',' ORDER BY r.id),"
    " 'UTF8')), 'hex') FROM alert_rules AS r WHERE r.tenant_id = l.tenant_id AND NOT r.disabled"
)

# Of the tenants an owner leaves to another process (`claim_tenants`), those
# whose enabled rules stand as they did when it left them (`_left_values`).
_LEFT_AS_IT_STOOD: Final = (
    "SELECT l.tenant_id FROM unnest(%(left_tenants)s::text[], %(left_rules)s::text[])"
    f" AS l (tenant_id, rules) WHERE l.rules = ({_RULES_DIGEST})"
)


def _left_values(leave: Sequence[LeftTenant]) -> dict[str, list[Any]]:
    return {
        "left_tenants": [left.tenant_id for left in leave],
        "left_rules": [left.rules for left in leave],
    }


async def count_unleased(conn: Connection, *, leave: Sequence[LeftTenant] = ()) -> int:
    """Tenants with enabled rules that no process evaluates (a lease never
    taken, or expired), but those `leave` keeps from being taken
    (`claim_tenants`): no process of this release waits for room to take them."""
    cursor = await conn.execute(
        "SELECT count(*) FROM alert_cursors AS c"
        f" WHERE (c.lease_until IS NULL OR c.lease_until < now()) AND {_HAS_RULES}"
        f" AND NOT EXISTS ({_LEFT_AS_IT_STOOD} AND l.tenant_id = c.tenant_id)",
        _left_values(leave),
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def tenants_still_left(conn: Connection, leave: Sequence[LeftTenant]) -> list[str]:
    """Those of `leave` (`claim_tenants`) whose enabled rules stand as they
    did when it was left: the others are to be read again."""
    if not leave:
        return []
    cursor = await conn.execute(_LEFT_AS_IT_STOOD, _left_values(leave))
    return [tenant_id for (tenant_id,) in await cursor.fetchall()]


async def rules_still_left(
    conn: Connection, left: Sequence[tuple[str, datetime]]
) -> list[tuple[str, datetime]]:
    """Those of `left` (rules a newer release made, each with the time it was
    defined, as an owner met them) still standing as defined then: a rule
    deleted or changed since is no longer to be remembered as it was."""
    if not left:
        return []
    cursor = await conn.execute(
        "SELECT r.id::text, r.updated_at FROM alert_rules AS r,"
        " unnest(%s::uuid[], %s::timestamptz[]) AS l (id, at)"
        " WHERE r.id = l.id AND r.updated_at = l.at",
        [[rule_id for rule_id, _ in left], [at for _, at in left]],
    )
    return [(rule_id, at) for rule_id, at in await cursor.fetchall()]


async def release_lease(conn: Connection, tenant_id: str, *, owner: str) -> None:
    """Gives this owner's lease of one tenant up (left to another process)."""
    await conn.execute(
        "UPDATE alert_cursors SET lease_owner = NULL, lease_until = NULL"
        " WHERE tenant_id = %s AND lease_owner = %s",
        [tenant_id, owner],
    )


async def release_leases(conn: Connection, *, owner: str) -> None:
    """Gives this owner's leases up (at shutdown), but of rows another
    transaction holds: an erasure holds its tenant's until it commits (minutes
    for a large tenant), and waiting for it would keep every other lease
    locked, unclaimable (claims skip locked rows), as long. A lease not given
    up expires."""
    await conn.execute(
        "UPDATE alert_cursors SET lease_owner = NULL, lease_until = NULL"
        " WHERE tenant_id IN (SELECT tenant_id FROM alert_cursors WHERE lease_owner = %s"
        "   FOR UPDATE SKIP LOCKED)",
        [owner],
    )


# True, the tenant's erasure lock shared until the statement's transaction
# ends; false at once while an erasure holds it or waits for it.
_NOT_BEING_ERASED: Final = try_share_condition(sql.Placeholder("erasure"))


async def leased_cursor(conn: Connection, tenant_id: str, *, owner: str) -> int | None:
    """The tenant's cursor if this owner leases it; None if not, or while the
    tenant is being erased (the step reads and fires nothing)."""
    cursor = await conn.execute(
        sql.SQL(
            "SELECT cursor_seq FROM alert_cursors"
            " WHERE tenant_id = %(tenant)s AND lease_owner = %(owner)s AND {}"
        ).format(_NOT_BEING_ERASED),
        {"tenant": tenant_id, "owner": owner, "erasure": erasure_lock_key(tenant_id)},
    )
    row = await cursor.fetchone()
    return None if row is None else int(row[0])


async def enabled_rules(conn: Connection, tenant_id: str) -> list[StoredRule]:
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM alert_rules WHERE tenant_id = %s AND NOT disabled"
        " ORDER BY created_at, id",
        [tenant_id],
    )
    return [StoredRule(*row) for row in await cursor.fetchall()]


async def firing_rule(conn: Connection, rule: StoredRule) -> StoredRule | None:
    """The rule as it stands now, if it still fires as `rule` (read by an
    evaluation step) did: there, enabled, with the same condition and start;
    else None. FOR SHARE: a change of the rule in flight is waited for, and
    seen."""
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM alert_rules WHERE tenant_id = %s AND id = %s AND NOT disabled"
        " AND condition = %s::jsonb AND start_seq = %s FOR SHARE",
        [rule.tenant_id, rule.id, json.dumps(rule.condition), rule.start_seq],
    )
    row = await cursor.fetchone()
    return None if row is None else StoredRule(*row)


async def advance(
    conn: Connection, tenant_id: str, *, owner: str, from_seq: int, to_seq: int
) -> bool:
    """Moves this owner's cursor from `from_seq` to `to_seq`; False if the
    lease or the cursor moved meanwhile, or while the tenant is being erased.
    The evaluator's threshold windows move with it, in the same transaction
    (`keep_windows`)."""
    cursor = await conn.execute(
        sql.SQL(
            "UPDATE alert_cursors SET cursor_seq = %(to)s"
            " WHERE tenant_id = %(tenant)s AND lease_owner = %(owner)s"
            " AND cursor_seq = %(from)s AND {}"
        ).format(_NOT_BEING_ERASED),
        {
            "to": to_seq,
            "tenant": tenant_id,
            "owner": owner,
            "from": from_seq,
            "erasure": erasure_lock_key(tenant_id),
        },
    )
    return cursor.rowcount == 1


async def count_firing(
    conn: Connection, tenant_id: str, rule_id: str, *, alert_seq: int, at: datetime
) -> bool:
    """Counts the rule's alert at `alert_seq`; False if it was counted already
    (its step may run again after a failure). One evaluator at a time holds a
    tenant, and fires its rules' alerts in seq order. A rule deleted since
    its step read it counts it in its tombstone, unless its deletion did."""
    cursor = await conn.execute(
        "UPDATE alert_rules SET fired = fired + 1, last_fired_at = %s, counted_alert_seq = %s"
        " WHERE tenant_id = %s AND id = %s"
        " AND (counted_alert_seq IS NULL OR counted_alert_seq < %s)",
        [at, alert_seq, tenant_id, rule_id, alert_seq],
    )
    if cursor.rowcount == 1:
        return True
    cursor = await conn.execute(
        "UPDATE alert_rule_tombstones SET counted_alert_seq = %s"
        " WHERE tenant_id = %s AND rule_id = %s AND counted_alert_seq < %s",
        [alert_seq, tenant_id, rule_id, alert_seq],
    )
    return cursor.rowcount == 1


# In a change's transaction, as the system role, which alone counts alerts;
# the role and lock timeout the transaction had are given back after.
_AS_SYSTEM: Final = "SELECT current_setting('role'), set_config('role', %s, true)"
_ROLE_AS_FOUND: Final = "SELECT set_config('role', %s, true)"


async def count_uncounted_within(
    conn: Connection, tenant_id: str, rule_id: str, *, at: datetime
) -> list[tuple[dict[str, Any], list[str]]]:
    """In the transaction of a change of the rule (its row written, or its
    tombstone left), once the change has recorded the rule's last alert
    (`Evaluator.last_word`): counts every alert of the rule its count had yet
    to reach, that one and any an evaluation step recorded as the change
    began and had yet to count (its count, later, finds them counted and
    routes nothing), in the rule's row or its tombstone. Returns them, oldest
    first, each with the sinks it goes to (those it names, else the rule's),
    for the caller to route in the same transaction: each is routed once."""
    cursor = await conn.execute(_AS_SYSTEM, [SYSTEM_ROLE])
    row = await cursor.fetchone()
    assert row is not None
    cursor = await conn.execute(
        "WITH mark AS (SELECT counted, sink_ids FROM ("
        "   SELECT coalesce(counted_alert_seq, start_seq) AS counted, sink_ids, 0 AS o"
        "   FROM alert_rules WHERE tenant_id = %(tenant)s AND id = %(rule)s"
        "   UNION ALL SELECT counted_alert_seq, '[]'::jsonb, 1 FROM alert_rule_tombstones"
        "   WHERE tenant_id = %(tenant)s AND rule_id = %(rule)s) AS marks ORDER BY o LIMIT 1),"
        " uncounted AS (SELECT e.seq, e.record,"
        "   coalesce((e.record::jsonb) -> 'details' -> 'sink_ids', mark.sink_ids) AS sinks"
        "   FROM mark JOIN events e ON e.tenant_id = %(tenant)s"
        "   AND e.resource_type = 'alert_rule' AND e.resource_id = %(rule)s::text"
        "   AND e.action = %(action)s AND e.seq > mark.counted),"
        " counted AS (UPDATE alert_rules SET fired = fired + (SELECT count(*) FROM uncounted),"
        "   last_fired_at = %(at)s, counted_alert_seq = (SELECT max(seq) FROM uncounted)"
        "   WHERE tenant_id = %(tenant)s AND id = %(rule)s AND EXISTS (SELECT FROM uncounted)),"
        " tombstone AS (UPDATE alert_rule_tombstones"
        "   SET counted_alert_seq = (SELECT max(seq) FROM uncounted)"
        "   WHERE tenant_id = %(tenant)s AND rule_id = %(rule)s AND EXISTS (SELECT FROM uncounted))"
        " SELECT record, sinks FROM uncounted ORDER BY seq",
        {"tenant": tenant_id, "rule": rule_id, "action": ALERT_ACTION, "at": at},
    )
    found = [(json.loads(record), list(sinks)) for record, sinks in await cursor.fetchall()]
    await conn.execute(_ROLE_AS_FOUND, [row[0]])
    return found


async def alerts_routed_ahead_of(
    conn: Connection, tenant_id: str, sink_id: str
) -> list[dict[str, Any]]:
    """The records of the alerts after the sink's cursor that were routed to
    it, oldest first: naming the sink in `details.sink_ids` (or, recorded
    before alerts named their sinks, in their rule's sinks as they are now),
    and whose routing was decided: counted by their rule (in the transaction
    that routes them), or of a rule deleted since (whose routing, if it had
    not been, never will be)."""
    cursor = await conn.execute(
        "SELECT e.record FROM sinks s"
        " JOIN events e ON e.tenant_id = s.tenant_id AND e.action = %(action)s"
        " AND e.seq > s.cursor_seq"
        " LEFT JOIN alert_rules r ON r.tenant_id = e.tenant_id"
        " AND r.id::text = (e.record::jsonb) -> 'details' ->> 'rule_id'"
        " WHERE s.tenant_id = %(tenant)s AND s.id = %(sink)s"
        " AND (r.id IS NULL OR r.counted_alert_seq >= e.seq)"
        " AND coalesce((e.record::jsonb) -> 'details' -> 'sink_ids', r.sink_ids) ? s.id::text"
        " ORDER BY e.seq",
        {"action": ALERT_ACTION, "tenant": tenant_id, "sink": sink_id},
    )
    return [json.loads(record) for (record,) in await cursor.fetchall()]


# Replays of one event of `seqs` each, bypassing the sink's filter, that have
# sent nothing yet: those `deliver_to_sink` queues.
_ALONE: Final = (
    "tenant_id = %s AND sink_id = %s AND first_seq = ANY(%s) AND last_seq = first_seq"
    " AND cursor_seq = first_seq - 1 AND bypass_filter AND dead_letter_id IS NULL"
)


async def queued_alone(conn: Connection, tenant_id: str, sink_id: str, seqs: list[int]) -> set[int]:
    """Which of `seqs` wait for the sink in a replay of their own that
    bypasses its filter and has sent nothing yet (`deliver_to_sink`'s)."""
    cursor = await conn.execute(
        "SELECT first_seq FROM sink_replays WHERE " + _ALONE, [tenant_id, sink_id, seqs]
    )
    return {seq for (seq,) in await cursor.fetchall()}


async def unqueue(conn: Connection, tenant_id: str, sink_id: str, seqs: list[int]) -> None:
    """Drops what `queued_alone` found of `seqs`."""
    await conn.execute("DELETE FROM sink_replays WHERE " + _ALONE, [tenant_id, sink_id, seqs])


# Where each new-origin kind keeps what it learned: (table, column).
_KNOWN: Final = {
    "new_ip": ("alert_known_ips", "ip"),
    "new_country": ("alert_known_countries", "country"),
}


async def learn_origin(
    conn: Connection,
    rule: StoredRule,
    actor_id: str,
    origin: str,
    *,
    seq: int,
    at: datetime,
    received: datetime,
) -> tuple[bool, bool]:
    """Notes that `actor_id` was seen from `origin` (an IP address for a
    new-IP rule, a country for a new-country rule) under `rule`'s condition,
    by the event `seq`, which occurred `at` and was received `received`: (the
    origin is new for the actor, the actor had been seen from another before).
    New means first shown by this event: noted now, or by an earlier run of
    the same step that failed before its alert was recorded.
    Nothing is noted (the first is False) if the rule's stored condition is
    no longer `rule`'s, or the rule is disabled, or enabled again since
    (its start moved): a step reads its rules once, then evaluates up to
    1,000 events, and one that read the rule before it was disabled learned
    the addresses of events recorded after, which the rule enabled again
    then knew (helper-293). An update that changes the condition forgets what
    the rule learned; FOR SHARE makes a call racing it wait for its commit
    and then see the new condition, so nothing learned under the old one
    outlives it. A known origin's last sighting moves to `received` when it
    is a day or more older (retention forgets origins not seen for long); an
    UPDATE skips a row its WHERE rules out without locking or writing it, so
    an origin seen all day long costs one write a day. Unavailable, noting
    nothing and without a wait, while the tenant is being erased."""
    table, column = _KNOWN[rule.condition["kind"]]
    statement = sql.SQL(
        # Tried before the rule is looked at, so never waiting for an erasure's lock on it.
        "WITH guard AS MATERIALIZED (SELECT {not_being_erased} AS held),"
        " current AS (SELECT 1 FROM alert_rules"
        "   WHERE tenant_id = %(tenant)s AND id = %(rule)s AND condition = %(condition)s::jsonb"
        "   AND NOT disabled AND start_seq = %(start)s AND (SELECT held FROM guard) FOR SHARE),"
        " added AS (INSERT INTO {table}"
        "   (tenant_id, rule_id, actor_id, {column}, first_seen_at, last_seen_at, first_seq)"
        "   SELECT %(tenant)s::text, %(rule)s::uuid, %(actor)s::text, %(origin)s::text,"
        "   %(at)s::timestamptz, %(received)s::timestamptz, %(seq)s::bigint"
        "   FROM current ON CONFLICT DO NOTHING RETURNING 1),"
        " seen AS (UPDATE {table} SET last_seen_at = %(received)s"
        "   WHERE tenant_id = %(tenant)s AND rule_id = %(rule)s AND actor_id = %(actor)s"
        "   AND {column} = %(origin)s AND last_seen_at < %(received)s - interval '1 day'"
        "   AND EXISTS (SELECT FROM current))"
        " SELECT EXISTS (SELECT 1 FROM added) OR EXISTS (SELECT 1 FROM {table}"
        "   WHERE tenant_id = %(tenant)s AND rule_id = %(rule)s AND actor_id = %(actor)s"
        "   AND {column} = %(origin)s AND first_seq = %(seq)s AND EXISTS (SELECT FROM current)),"
        # Origins a failed run learned from later events were not known yet.
        " EXISTS (SELECT 1 FROM {table}"
        "   WHERE tenant_id = %(tenant)s AND rule_id = %(rule)s AND actor_id = %(actor)s"
        "   AND {column} <> %(origin)s AND (first_seq IS NULL OR first_seq < %(seq)s)),"
        " (SELECT held FROM guard)"
    ).format(
        table=sql.Identifier(table),
        column=sql.Identifier(column),
        not_being_erased=_NOT_BEING_ERASED,
    )
    cursor = await conn.execute(
        statement,
        {
            "tenant": rule.tenant_id,
            "rule": rule.id,
            "condition": json.dumps(rule.condition),
            "start": rule.start_seq,
            "actor": actor_id,
            "origin": origin,
            "seq": seq,
            "at": at,
            "received": received,
            "erasure": erasure_lock_key(rule.tenant_id),
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    if not row[2]:
        raise tenant_being_erased(rule.tenant_id)
    return bool(row[0]), bool(row[1])


async def deliver_to_sink(
    conn: Connection, tenant_id: str, sink_id: str, replay_id: str, seq: int, *, now: datetime
) -> bool:
    """Queues one event for a sink whatever its filter (a replay that bypasses
    it); False if the tenant has no such sink, or it is a managed one: the
    operator's filter says what of a tenant reaches it (ADR 0070), and a rule
    that named it before rules were refused one sends it no more than that."""
    cursor = await conn.execute(
        "INSERT INTO sink_replays (tenant_id, sink_id, id, first_seq, last_seq, bypass_filter,"
        " cursor_seq, created_at)"
        " SELECT tenant_id, id, %s, %s, %s, true, %s, %s FROM sinks"
        " WHERE tenant_id = %s AND id = %s AND deployment_sink_id IS NULL",
        [replay_id, seq, seq, seq - 1, now, tenant_id, sink_id],
    )
    return cursor.rowcount == 1
