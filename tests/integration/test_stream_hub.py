"""The stream hub's own reads, in process, against the real database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sealtrail_server.domain.event import EventDraft, validate_event
from sealtrail_server.domain.filters import EventFilter, RecordMatcher
from sealtrail_server.store.appender import Appended, Appender
from sealtrail_server.store.database import Database
from sealtrail_server.stream.hub import StreamHub
from tests.conftest import ServerThread
from tests.service_login import service_login_url


def test_a_live_fetch_is_planned_once(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """Each commit's new rows are one range of the primary key, whatever its
    bounds, so one generic plan serves every fetch (ADR 0032). Left to choose,
    PostgreSQL planned each small fetch anew, across every partition's index,
    for longer than the fetch took."""
    url = service_login_url(migrated_database_url)

    async def run() -> list[tuple[str, int, int]]:
        # One connection: the one the hub fetched with is the one read here.
        db = await Database.open(url, min_size=1, max_size=1)
        hub = StreamHub(db, database_url=url)
        appender = Appender(server.database)
        try:
            subscription = await hub.subscribe(tenant, RecordMatcher(EventFilter()))
            hub.start()
            appender.start()
            for seq in range(1, 13):  # psycopg prepares a statement on its 6th run
                draft = EventDraft(action="hub.test", actor_id="u")
                event = validate_event(draft, now=datetime.now(UTC), path="event")
                [outcome] = await appender.append(tenant, [event])
                assert isinstance(outcome, Appended) and outcome.seq == seq
                delivery = await asyncio.wait_for(subscription.queue.get(), 30)
                assert [live.stored.seq for live in delivery.events] == [seq]
            async with db.connection(tenant) as conn:
                cursor = await conn.execute(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                )
                rows = await cursor.fetchall()
                return [(str(text), int(generic), int(custom)) for text, generic, custom in rows]
        finally:
            await appender.stop()
            await hub.stop()
            await db.close()

    prepared = server.run(run())
    [(generic, custom)] = [(g, c) for text, g, c in prepared if "seq <= $3" in text]
    assert generic > 0 and custom == 0
