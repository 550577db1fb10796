"""Changes of one configured thing never overlap: each reads the value the
previous one wrote, so the log's history of changes has no gap and its last
word is what applies, with callers in one process or in several."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import pytest
from google.protobuf import json_format

from sealtrail import (
    AbortedError,
    AuditClient,
    RpcFailedError,
    build_alert_rule,
    build_filter,
)
from sealtrail_server.domain.alerts import MAX_RULES_PER_TENANT
from sealtrail_server.domain.errors import Unavailable
from sealtrail_server.store.changes import Changes
from tests.conftest import ServerThread

WRITERS = 8


def _history(client: AuditClient, action: str, field: str) -> list[tuple[Any, Any]]:
    """(before, after) of `field` in each `action` event, oldest first."""
    pairs = []
    for event in client.query(build_filter(actions=[action]), order="oldest"):
        [change] = [c for c in event.changes if c.field == field]
        pairs.append(
            (json_format.MessageToDict(change.before), json_format.MessageToDict(change.after))
        )
    return pairs


def _assert_unbroken(history: list[tuple[Any, Any]], first: Any, last: Any) -> None:
    assert len(history) == WRITERS
    assert history[0][0] == first
    for (_, after), (before, _) in pairwise(history):
        assert before == after  # each change starts from the one before it
    assert history[-1][1] == last


def test_concurrent_policy_changes_record_an_unbroken_history(client: AuditClient) -> None:
    def set_days(days: int) -> None:
        client.set_retention_policy(days)

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(set_days, range(30, 30 + WRITERS)))

    applied = client.get_retention_policy().policy.default_days
    history = _history(client, "retention.policy_updated", "default_days")
    _assert_unbroken(history, first=0, last=applied)  # 0: forever


def test_concurrent_rule_updates_record_an_unbroken_history(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule(
            "spike", "threshold", filter=build_filter(actions=["x.y"]), count=5, window_seconds=60
        )
    ).rule

    def rename(index: int) -> None:
        renamed = type(rule)()
        renamed.CopyFrom(rule)
        renamed.name = f"spike {index}"
        renamed.etag = ""  # each applies to whatever the rule is then
        client.update_alert_rule(renamed)

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(rename, range(WRITERS)))

    [applied] = client.list_alert_rules()
    _assert_unbroken(
        _history(client, "alert_rule.updated", "name"), first="spike", last=applied.name
    )


def test_of_concurrent_rule_updates_on_one_etag_exactly_one_applies(
    client: AuditClient,
) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("spike", "match", filter=build_filter(actions=["x.y"]))
    ).rule

    def rename(index: int) -> str:
        renamed = type(rule)()
        renamed.CopyFrom(rule)  # each read the rule once, with its etag
        renamed.name = f"spike {index}"
        try:
            return client.update_alert_rule(renamed).rule.name
        except AbortedError as aborted:
            return aborted.reason

    with ThreadPoolExecutor(WRITERS) as pool:
        outcomes = list(pool.map(rename, range(WRITERS)))
    [applied] = [outcome for outcome in outcomes if outcome != "ETAG_MISMATCH"]
    assert outcomes.count("ETAG_MISMATCH") == WRITERS - 1
    assert [rule.name for rule in client.list_alert_rules()] == [applied]
    assert len(_history(client, "alert_rule.updated", "name")) == 1


def test_concurrent_creations_stop_at_the_limit(client: AuditClient) -> None:
    def create(name: str) -> str:
        rule = build_alert_rule(name, "match", filter=build_filter(actions=["x.y"]))
        try:
            client.create_alert_rule(rule)
        except RpcFailedError as error:
            return error.reason
        return "created"

    for n in range(MAX_RULES_PER_TENANT - 2):
        create(f"rule {n}")
    with ThreadPoolExecutor(WRITERS) as pool:
        answers = list(pool.map(create, [f"late {n}" for n in range(WRITERS)]))
    assert sorted(answers) == ["TOO_MANY_ALERT_RULES"] * (WRITERS - 2) + ["created"] * 2
    assert len(client.list_alert_rules()) == MAX_RULES_PER_TENANT


def test_many_changes_at_once_leave_the_appender_connections(
    server: ServerThread, client_for: Callable[..., AuditClient]
) -> None:
    """Three times as many changes at once as the pool has connections, each
    of its own subject, and records beside them: each change holds a
    connection while the appender records it, yet nothing waits out the
    pool (no retries: one attempt each)."""
    pool = server.settings.pool_max_size
    admins = [client_for(f"t-{uuid.uuid4().hex[:12]}", max_attempts=1) for _ in range(3 * pool)]

    def change(admin: AuditClient) -> str:
        admin.set_retention_policy(90)
        return admin.record(action="doc.edit", actor_id="u").event.id

    with ThreadPoolExecutor(len(admins)) as threads:
        assert all(threads.map(change, admins, timeout=60))


def test_a_change_waits_for_one_in_progress_in_another_process(
    server: ServerThread, tenant: str
) -> None:
    # Two Changes on one database share no in-process lock, as two processes
    # would not: only the database's lock keeps them apart.
    first, second = Changes(server.database), Changes(server.database)

    async def run() -> list[str]:
        order: list[str] = []
        async with first.exclusive(tenant, "retention", caller=None) as conn:
            waiting = asyncio.create_task(_enter(second, tenant, order))
            await _until_an_advisory_lock_is_awaited(conn)
            order.append("first done")
        await asyncio.wait_for(waiting, 10)
        return order

    assert server.run(run()) == ["first done", "second entered"]


def test_other_subjects_and_tenants_do_not_wait(server: ServerThread, tenant: str) -> None:
    first, second = Changes(server.database), Changes(server.database)

    async def run() -> list[str]:
        order: list[str] = []
        async with first.exclusive(tenant, "retention", caller=None):
            await asyncio.wait_for(_enter(second, tenant, order, subject="settings"), 10)
            await asyncio.wait_for(_enter(second, f"{tenant}-b", order), 10)
            order.append("first done")
        return order

    assert server.run(run()) == ["second entered", "second entered", "first done"]


def test_a_change_stuck_elsewhere_is_answered_unavailable(
    server: ServerThread, tenant: str
) -> None:
    holder, impatient = Changes(server.database), Changes(server.database, wait_seconds=0.2)

    async def run() -> None:
        async with holder.exclusive(tenant, "settings", caller=None):
            await _enter(impatient, tenant, [], subject="settings")

    with pytest.raises(Unavailable, match="another change of settings"):
        server.run(run())


async def _until_an_advisory_lock_is_awaited(conn: Any) -> None:
    """Returns once some session waits for an advisory lock (10 s at most)."""
    for _ in range(1000):
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        if (await cursor.fetchone())[0]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("nobody waited for the lock")


async def _enter(
    changes: Changes, tenant: str, order: list[str], *, subject: str = "retention"
) -> None:
    async with changes.exclusive(tenant, subject, caller=None):
        order.append("second entered")
