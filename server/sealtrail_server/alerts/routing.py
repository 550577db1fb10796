"""How an alert reaches the sinks its rule names (ADR 0017). A sink whose own
filter takes the alert gets it from its forwarder, in seq order with the
rest; any other gets it as a one-event replay that bypasses its filter. The
alert's record names the sinks it was routed to (`details.sink_ids`).

A sink's filter changed before its forwarder reached an alert would leave
that alert on neither road (the old filter took it, the new does not) or on
both (the other way round): the change routes the alerts ahead of the
sink's cursor again by the old and the new filter (`reroute_alerts`). Sink rows are read
FOR SHARE when an alert is routed, so a routing and a filter change are one
before the other: the change sees the routing's decision, or the routing
sees the new filter.

A rule deleted between an alert's append and its count (a step that failed
between the two) would leave the alert unrouted: deleting the rule routes
it (`delete_rule_routing_its_alerts`). An alert recorded while the rule is
being deleted is counted against the rule's tombstone, and routed, by its
own step (`store.count_firing`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..api.convert import filter_from_json
from ..domain.filters import EventFilter, RecordMatcher
from ..store import alerts as store
from ..store.database import Connection
from ..store.events import matching_seqs
from ..store.sinks import read_sink_filter


async def route_alert(
    conn: Connection,
    tenant_id: str,
    alert: dict[str, Any],
    sink_ids: Sequence[str],
    *,
    now: datetime,
) -> bool:
    """Queues the alert (a record) for each of `sink_ids` whose filter does
    not take it; whether any was queued. In the transaction that counts the
    alert, so it is routed once."""
    queued = False
    for sink_id in sink_ids:
        sink_filter = await read_sink_filter(conn, tenant_id, sink_id)
        if sink_filter is None:
            continue  # gone
        if await taken_by(conn, tenant_id, filter_from_json(sink_filter), [alert]):
            continue  # its forwarder sends it
        queued |= await store.deliver_to_sink(
            conn, tenant_id, sink_id, str(uuid.uuid4()), int(alert["seq"]), now=now
        )
    return queued


async def hold_sinks(conn: Connection, tenant_id: str, sink_ids: Sequence[str]) -> None:
    """Reads each of `sink_ids` FOR SHARE, as `route_alert` does: in a
    change's transaction, before it records itself (which holds the tenant's
    head to its commit), when it is to route an alert after that record
    (`Evaluator.last_word`). A sink's change takes its row, then the head
    for its own record: a routing that took the head first, then waited for
    the row, would deadlock with it. And after the rule's row is written
    (or deleted), as an evaluation step's count takes the rule's row, then
    its sinks: the other way round, with the forwarder or a sink's change
    waiting for a sink's row between the two, the three deadlocked."""
    for sink_id in sink_ids:
        await read_sink_filter(conn, tenant_id, sink_id)


async def delete_rule_routing_its_alerts(
    conn: Connection, tenant_id: str, rule_id: str, *, now: datetime
) -> bool:
    """Deletes the rule, routing the alerts it recorded and had yet to count
    (`store.delete_rule`): the step that would have will not find the rule.
    Whether any was queued."""
    queued = False
    for alert, sink_ids in await store.delete_rule(conn, tenant_id, rule_id):
        queued |= await route_alert(conn, tenant_id, alert, sink_ids, now=now)
    return queued


async def reroute_alerts(
    conn: Connection,
    tenant_id: str,
    sink_id: str,
    *,
    was_filter: EventFilter,
    now_filter: EventFilter,
    now: datetime,
) -> int:
    """In the transaction that changed the sink's filter from `was_filter` to
    `now_filter` (its row locked): each alert routed to the sink that its
    forwarder has yet to reach goes by the forwarder if the new filter takes
    it (a replay of it still to send is dropped), else by a replay of its own
    (queued unless one waits, or it went alone already). How many were
    queued.

    An alert the old filter did not take went by a replay of its own: one
    that waits, or one already sent (replays go a batch each step beside the
    live events, so one is sent ahead of a cursor still behind a backlog) or
    parked. Taken for one still to send, it was queued again at each change
    of the filter and sent again each time the cursor was still behind it
    (helper-315). Whatever the filters were before, and however often they
    changed, each such alert is then queued once; but one sent alone, ahead
    of the cursor, that a widened filter now takes is sent again by the
    forwarder as it passes it (nothing records what a finished replay
    sent). Queued once is not sent once: a request on its way as the sink
    changes (its replay's too) goes again after the change, as any does,
    once for each change committed while it is on its way
    (forward/forwarder.py, docs/alerting.md)."""
    alerts = await store.alerts_routed_ahead_of(conn, tenant_id, sink_id)
    if not alerts:
        return 0
    seqs = [int(alert["seq"]) for alert in alerts]
    taken = await taken_by(conn, tenant_id, now_filter, alerts)
    left_to_forwarder = await taken_by(conn, tenant_id, was_filter, alerts)
    waiting = await store.queued_alone(conn, tenant_id, sink_id, seqs)
    if sent_twice := sorted(waiting & taken):
        await store.unqueue(conn, tenant_id, sink_id, sent_twice)
    queued = 0
    for seq in seqs:
        # Not left to the forwarder before: its replay waits, or went.
        if seq in left_to_forwarder and seq not in taken and seq not in waiting:
            queued += await store.deliver_to_sink(
                conn, tenant_id, sink_id, str(uuid.uuid4()), seq, now=now
            )
    return queued


async def taken_by(
    conn: Connection, tenant_id: str, sink_filter: EventFilter, alerts: list[dict[str, Any]]
) -> set[int]:
    """The seqs of the `alerts` (records) a sink's filter takes, as its
    forwarder's read will decide: full-text search by the database, as
    RecordMatcher leaves it, in one statement for them all."""
    matcher = RecordMatcher(sink_filter)
    if matcher.exact:
        return {int(alert["seq"]) for alert in alerts if matcher.matches(alert)}
    seqs = [int(alert["seq"]) for alert in alerts]
    return await matching_seqs(conn, tenant_id, seqs, sink_filter)
