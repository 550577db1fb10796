"""The stream hub's own reads, in process, against the real database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sealtrail_server.domain.event import EventDraft, validate_event
from sealtrail_server.domain.filters import EventFilter, RecordMatcher
from sealtrail_server.store.appender import Appended, Appender
from sealtrail_server.stream.hub import StreamHub
from tests.conftest import ServerThread
from tests.prepared_plans import (
    RUNS,
    Prepared,
    generic_plan,
    one_connection_database,
    prepared_statements,
    the_one,
)
from tests.service_login import service_login_url


def test_a_live_fetch_is_planned_once(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """Each commit's new rows are one range of the primary key, whatever its
    bounds, so one generic plan serves every fetch (ADR 0032). Left to choose,
    PostgreSQL planned each small fetch anew, across every partition's index,
    for longer than the fetch took."""

    async def run() -> tuple[Prepared, str]:
        async with one_connection_database(migrated_database_url) as db:
            hub = StreamHub(db, database_url=service_login_url(migrated_database_url))
            appender = Appender(server.database)
            try:
                subscription = await hub.subscribe(tenant, RecordMatcher(EventFilter()))
                hub.start()
                appender.start()
                for seq in range(1, RUNS + 1):
                    draft = EventDraft(action="hub.test", actor_id="u")
                    event = validate_event(draft, now=datetime.now(UTC), path="event")
                    [outcome] = await appender.append(tenant, [event])
                    assert isinstance(outcome, Appended) and outcome.seq == seq
                    delivery = await asyncio.wait_for(subscription.queue.get(), 10)
                    assert [live.stored.seq for live in delivery.events] == [seq]
                    assert not subscription.lagging  # a failed fetch marks it
            finally:
                await appender.stop()
                await hub.stop()
            fetch = the_one(await prepared_statements(db, tenant), "seq <= $3")
            async with db.connection(tenant, generic_plans=True) as conn:
                return fetch, await generic_plan(conn, fetch, tenant, 10, 12)

    fetch, plan = server.run(run())
    assert fetch.planned_once
    assert "Index Scan using events_" in plan and "Seq Scan" not in plan, plan
