"""Retention against a model of its documented rules (docs/retention.md): a
few hundred events of varied actions, categories and ages on a real server
whose clock the test moves, a policy with nested prefix rules, and what a
pass keeps compared with what the rules say it keeps; the pass's record
compared with the tombstones it left."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, build_event, build_filter
from sealtrail_server.domain.purge_summaries import SummarySeal
from sealtrail_server.retention.purger import Purger
from tests.clock import Clock
from tests.conftest import REDACTION_SECRET, ServerThread
from tests.integration.test_retention import aged_server, purge

ACTIONS = [
    "user.login",
    "user.login.failed",
    "user.login.mfa.sent",
    "user.logout",
    "user_x.login",
    "userx.login",
    "doc.edit",
    "doc.share",
    "rag.query",
    "rag.index.rebuild",
    "api_key.create",
    "apixkey.create",
]
CATEGORIES = ["", "authentication", "data_access", "configuration", "billing", "security"]


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def aged(migrated_database_url: str, clock: Clock) -> Iterator[ServerThread]:
    with aged_server(migrated_database_url, clock, batch_events=7) as server:
        yield server


@pytest.fixture
def admin(aged: ServerThread, tenant: str) -> Iterator[AuditClient]:
    with AuditClient(aged.target, token=aged.token(tenant)) as client:
        yield client


def _days(policy: dict[str, Any], action: str, category: str | None) -> tuple[str, int] | None:
    """The rule and days the docs give an event: the longest matching action
    prefix, else its category's, else the default; retention's own records
    under none (None)."""
    if action.startswith("retention."):
        return None
    matching = [p for p in policy["prefixes"] if action.startswith(p[:-1])]
    if matching:
        prefix = max(matching, key=len)
        return f"action:{prefix}", policy["prefixes"][prefix]
    if category and category in policy["categories"]:
        return f"category:{category}", policy["categories"][category]
    return "default", policy["default"]


def _rows(sql: psycopg.Connection[Any], tenant: str) -> dict[int, tuple[str, str | None, datetime]]:
    rows = sql.execute(
        "SELECT seq, action, category, received_at FROM events WHERE tenant_id = %s", [tenant]
    ).fetchall()
    return {seq: (action, category, received) for seq, action, category, received in rows}


def _expected(
    rows: dict[int, tuple[str, str | None, datetime]], policy: dict[str, Any], now: datetime
) -> tuple[set[int], dict[str, set[int]]]:
    kept: set[int] = set()
    removed: dict[str, set[int]] = {}
    for seq, (action, category, received) in rows.items():
        rule = _days(policy, action, category)
        if rule is None or rule[1] == 0 or received >= now - timedelta(days=rule[1]):
            kept.add(seq)
        else:
            removed.setdefault(rule[0], set()).add(seq)
    return kept, removed


def test_a_pass_keeps_exactly_what_the_documented_rules_keep(
    aged: ServerThread, admin: AuditClient, clock: Clock, sql: psycopg.Connection[Any], tenant: str
) -> None:
    rng = random.Random(7)
    policy: dict[str, Any] = {
        "default": 30,
        "categories": {"authentication": 365, "data_access": 0, "configuration": 7},
        "prefixes": {
            "user.*": 60,
            "user.login.*": 10,
            "rag.*": 0,
            "rag.index.*": 5,
            "api_key.*": 45,
        },
    }
    # Events received over 120 days, each sent with an occurred_at far from
    # its receipt (which retention must not count from).
    for _ in range(40):
        batch = []
        for _ in range(8):
            category = rng.choice(CATEGORIES)
            fields: dict[str, Any] = {
                "action": rng.choice(ACTIONS),
                "actor_id": "u-1",
                "occurred_at": clock() + timedelta(days=rng.choice([-400, -20, 0, 3])),
            }
            if category:
                fields["category"] = category
            batch.append(build_event(**fields))
        admin.record_batch(batch)
        clock.advance(3)
    # One event exactly as old as the default's limit at the pass: kept.
    edge = admin.record(build_event(action="doc.edit", actor_id="u-1")).event.seq
    admin.set_retention_policy(
        policy["default"], categories=policy["categories"], action_prefixes=policy["prefixes"]
    )
    clock.advance(30)
    before = _rows(sql, tenant)
    assert before[edge][2] == clock() - timedelta(days=30)
    kept, removed = _expected(before, policy, clock())
    assert edge in kept
    # The dry run counts what the pass then removes, rule by rule.
    preview = admin.preview_retention_policy(
        policy["default"], categories=policy["categories"], action_prefixes=policy["prefixes"]
    )
    assert {r.rule: r.events for r in preview.rules if r.events} == {
        rule: len(seqs) for rule, seqs in removed.items()
    }

    [result] = [r for r in purge(aged) if r.tenant_id == tenant]
    assert {seq for seq in _rows(sql, tenant) if seq in before} == kept
    tombstones = {
        idx + 1
        for (idx,) in sql.execute(
            "SELECT idx FROM tree_nodes WHERE tenant_id = %s AND level = 0", [tenant]
        ).fetchall()
    }
    every_removed = set().union(*removed.values())
    assert tombstones == every_removed
    [record] = admin.query(build_filter(actions="retention.purged"))
    assert record.details["purged"] == len(every_removed) == result.count
    assert (record.details["first_seq"], record.details["last_seq"]) == (
        min(every_removed),
        max(every_removed),
    )
    assert {rule: int(v["purged"]) for rule, v in record.details["rules"].items()} == {
        rule: len(seqs) for rule, seqs in removed.items()
    }
    days_of = {
        "default": policy["default"],
        **{f"category:{c}": d for c, d in policy["categories"].items()},
        **{f"action:{p}": d for p, d in policy["prefixes"].items()},
    }
    for rule, entry in record.details["rules"].items():
        cutoff = clock() - timedelta(days=days_of[rule])
        assert datetime.fromisoformat(entry["received_before"]) == cutoff
    # Nothing removed is read back.
    assert not {e.seq for e in admin.query(build_filter())} & every_removed

    # Moved on, a second pass removes exactly what has aged since.
    clock.advance(40)
    rows = _rows(sql, tenant)
    kept, removed = _expected(rows, policy, clock())
    purge(aged)
    assert {seq for seq in _rows(sql, tenant) if seq in rows} == kept
    assert datetime.now(UTC) < clock()  # the test's clock ran ahead of the real one


def test_receive_times_out_of_seq_order_and_a_long_hold_keep_to_the_rules(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    migrated_database_url: str,
) -> None:
    """Appenders' clocks disagree (receive times jump back and forth between
    seqs), the pass reads by windows of a few seqs, then by spans of receive
    times after a long hold: still exactly what the rules say."""
    assert aged.service.purger is not None
    purger = Purger(
        migrated_database_url,
        record=aged.service.purger.record,
        seal=SummarySeal(REDACTION_SECRET),  # the test servers' seal
        clock=clock,
        batch_events=4,
        scan_window=9,
    )
    rng = random.Random(11)
    policy: dict[str, Any] = {
        "default": 20,
        "categories": {"authentication": 40, "configuration": 0},
        "prefixes": {"user.*": 12, "user.login.*": 30, "rag.*": "forever", "doc.share.*": 8},
    }
    days = {**policy, "prefixes": {**policy["prefixes"], "rag.*": 0}}

    def appended(count: int) -> None:
        for _ in range(count):
            jump = rng.uniform(-4, 4)
            clock.advance(jump)
            category = rng.choice(CATEGORIES)
            fields: dict[str, Any] = {"action": rng.choice(ACTIONS), "actor_id": "u-1"}
            if category:
                fields["category"] = category
            admin.record(build_event(**fields))
            clock.advance(-jump + 0.4)

    appended(150)
    admin.set_retention_policy(
        policy["default"], categories=policy["categories"], action_prefixes=policy["prefixes"]
    )
    clock.advance(10)
    for _ in range(3):  # the first pass by windows of seqs, the next by spans
        rows = _rows(sql, tenant)
        kept, _ = _expected(rows, days, clock())
        aged.run(purger.run_once())
        assert {seq for seq in _rows(sql, tenant) if seq in rows} == kept
        admin.set_legal_hold(True, reason="Case 1")
        appended(60)
        clock.advance(25)
        admin.set_legal_hold(False)
