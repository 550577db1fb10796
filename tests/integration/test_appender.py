"""The appender's group commit and its isolation of bad submissions, against
the real database."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any

import psycopg

from sealtrail_server.domain.errors import InvalidArgument
from sealtrail_server.domain.event import EventDraft, validate_event
from sealtrail_server.store.appender import Appended, Appender
from tests.conftest import ServerThread


def _event(path: str, **fields: Any) -> Any:
    draft = EventDraft(action="appender.test", actor_id="u", **fields)
    return validate_event(draft, now=datetime.now(UTC), path=path)


def test_an_event_the_database_refuses_fails_alone(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    good = _event("events[0]")
    # NUL passes no validation; forced in here, the database refuses it.
    bad = dataclasses.replace(good, body={**good.body, "description": "a\x00b"}, path="events[1]")

    async def run() -> list[Any]:
        appender = Appender(server.database)
        appender.start()
        try:
            return await asyncio.gather(
                appender.append(tenant, [good, bad]), appender.append(f"{tenant}-b", [good])
            )
        finally:
            await appender.stop()

    [mixed, neighbour] = server.run(run())
    assert isinstance(mixed[0], Appended) and mixed[0].seq == 1
    assert isinstance(mixed[1], InvalidArgument)
    assert [v.field for v in mixed[1].violations] == ["events[1]"]
    assert isinstance(neighbour[0], Appended)
    counts = sql.execute(
        "SELECT tenant_id, count(*) FROM events WHERE tenant_id IN (%s, %s) GROUP BY 1",
        [tenant, f"{tenant}-b"],
    ).fetchall()
    assert dict(counts) == {tenant: 1, f"{tenant}-b": 1}


def test_concurrent_appends_share_transactions(server: ServerThread, tenant: str) -> None:
    async def run() -> list[Any]:
        appender = Appender(server.database, max_wait=0.05, batch_events=64)
        appender.start()
        try:
            return await asyncio.gather(
                *(appender.append(tenant, [_event("event")]) for _ in range(50))
            )
        finally:
            await appender.stop()

    results = [outcome for [outcome] in server.run(run())]
    assert sorted(r.seq for r in results) == list(range(1, 51))
    # One transaction stamps one received time: far fewer than 50 commits.
    assert len({r.received_at for r in results}) <= 5


def test_a_lone_caller_does_not_wait_for_company(server: ServerThread, tenant: str) -> None:
    """With nobody else writing, the wait for more callers would only delay the
    answer: a lone append commits at once, however long max_wait is."""

    async def run() -> list[Any]:
        appender = Appender(server.database, max_wait=600, batch_events=64)
        appender.start()
        try:
            answers = []
            for _ in range(3):  # each after the previous one's lone commit
                answers.append(
                    await asyncio.wait_for(appender.append(tenant, [_event("event")]), 30)
                )
            return answers
        finally:
            await appender.stop()

    assert [outcome.seq for [outcome] in server.run(run())] == [1, 2, 3]
