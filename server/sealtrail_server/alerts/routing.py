"""How an alert reaches the sinks its rule names (ADR 0017). A sink whose own
filter takes the alert gets it from its forwarder, in seq order with the
rest; any other gets it as a one-event replay that bypasses its filter. The
alert's record names the sinks it was routed to (`details.sink_ids`).

A sink's filter narrowed before its forwarder reached an alert the old filter
took would leave that alert on neither road: the change queues it as a
replay (`keep_alerts_routed`). Sink rows are read FOR SHARE when an alert is
routed, so a routing and a filter change are one before the other: the
change sees the routing's decision, or the routing sees the new filter."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..api.convert import filter_from_json
from ..domain.filters import EventFilter, RecordMatcher
from ..store import alerts as store
from ..store.database import Connection
from ..store.events import event_matches
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
        sink_filter = await read_sink_filter(conn, tenant_id, sink_id, for_share=True)
        if sink_filter is None:
            continue  # gone
        if await filter_takes(conn, tenant_id, filter_from_json(sink_filter), alert):
            continue  # its forwarder sends it
        queued |= await store.deliver_to_sink(
            conn, tenant_id, sink_id, str(uuid.uuid4()), int(alert["seq"]), now=now
        )
    return queued


async def keep_alerts_routed(
    conn: Connection,
    tenant_id: str,
    sink_id: str,
    *,
    before: EventFilter,
    after: EventFilter,
    now: datetime,
) -> int:
    """In the transaction that changed the sink's filter from `before` to
    `after` (its row locked): queues each alert routed to the sink that its
    forwarder has yet to reach, that `before` took (so was left to the
    forwarder) and `after` does not. How many were queued."""
    queued = 0
    for alert in await store.alerts_routed_ahead_of(conn, tenant_id, sink_id):
        if await filter_takes(conn, tenant_id, before, alert) and not await filter_takes(
            conn, tenant_id, after, alert
        ):
            queued += await store.deliver_to_sink(
                conn, tenant_id, sink_id, str(uuid.uuid4()), int(alert["seq"]), now=now
            )
    return queued


async def filter_takes(
    conn: Connection, tenant_id: str, sink_filter: EventFilter, alert: dict[str, Any]
) -> bool:
    """Whether a sink's filter takes `alert` (a record), as its forwarder's
    read will decide: full-text search by the database, as RecordMatcher
    leaves it."""
    matcher = RecordMatcher(sink_filter)
    if matcher.exact:
        return matcher.matches(alert)
    return await event_matches(conn, tenant_id, int(alert["seq"]), sink_filter)
