"""Retention, legal hold and erasure on a real server whose clock the tests
move: expired events are purged and newer ones kept, per rule; a hold stops
it; proofs, VerifyLog and streams stay right after a purge; an erasure leaves
no row of the tenant and touches no other tenant."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql as sqlc
from psycopg.types.json import Jsonb

from sealtrail import (
    AbortedError,
    AuditClient,
    BundleError,
    InvalidArgumentError,
    NotFoundError,
    RpcFailedError,
    SeqRange,
    UnauthenticatedError,
    UnavailableError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
    verify_bundle,
    write_bundle,
)
from sealtrail import _cli as cli
from sealtrail import _cli_retention as cli_retention
from sealtrail.tlog import generate_signer_key, leaf_hash, parse_checkpoint, verify_inclusion
from sealtrail.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    event_pb2,
    integrity_pb2,
    retention_pb2,
)
from sealtrail_server.api import export as export_api
from sealtrail_server.api import retention as retention_api
from sealtrail_server.api import stream as stream_api
from sealtrail_server.domain.access import Role
from sealtrail_server.domain.errors import FieldViolation, InvalidArgument, Unavailable
from sealtrail_server.domain.event_ids import received_within
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.domain.purge_summaries import SummarySeal
from sealtrail_server.domain.retention import (
    RetentionPolicy,
    RetentionRule,
    Selection,
    purge_selections,
    selection_key,
)
from sealtrail_server.retention import purger as purger_module
from sealtrail_server.retention import tenant_pass
from sealtrail_server.retention.purge_record import purge_recorder
from sealtrail_server.retention.purger import LOCK_KEY as PURGE_LOCK
from sealtrail_server.retention.purger import PURGE_JOB, Purger
from sealtrail_server.store.events import query_statement
from sealtrail_server.store.retention import purge_batch, purged_between, tenants_with_expiry
from sealtrail_server.telemetry.logs import log_handler
from tests.clock import Clock
from tests.conftest import REDACTION_SECRET, ServerThread, database_of_its_own, token_id_of
from tests.integration.test_database_roles import TENANT_TABLES
from tests.integration.test_integrity import _CountingProofs
from tests.job_sessions import session_timeouts
from tests.processes import stop
from tests.tenant_rows import rows_of, tenant_tables

# Actions the tests record; everything else in a log is the service's own.
RECORDED = ["doc.edit", "user.login", "rag.query", "rag.index.rebuild"]

# The deployment's seal of purge summaries (the test servers' redaction secret).
SEAL = SummarySeal(REDACTION_SECRET)


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@contextlib.contextmanager
def aged_server(database_url: str, clock: Clock, *, batch_events: int) -> Iterator[ServerThread]:
    """A server on the test's clock, purging only when told to (`purge`),
    `batch_events` events a batch; closed after."""
    server = ServerThread(
        database_url,
        clock=clock,
        retention_interval=0,
        checkpoint_interval=0,
        retention_batch_events=batch_events,
    )
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def aged(migrated_database_url: str, clock: Clock) -> Iterator[ServerThread]:
    # Several batches even for a few events.
    with aged_server(migrated_database_url, clock, batch_events=3) as server:
        yield server


@pytest.fixture
def admin(aged: ServerThread, tenant: str, migrated_database_url: str) -> Iterator[AuditClient]:
    """An admin of the test's tenant on `aged`. After the test, a policy of
    the tenant's that still removes anything is set back to keep everything
    (as its admin would): every later pass, which reads every such tenant's
    log, took the module's earlier tenants with it, seconds a pass by the
    module's end, for what no later test looks at."""
    with AuditClient(aged.target, token=aged.token(tenant)) as client:
        yield client
        if tenant in _tenants_with_expiry(migrated_database_url):
            client.set_retention_policy()


def _tenants_with_expiry(url: str) -> list[str]:
    """The tenants a pass reads, as the purge job lists them."""

    async def listed() -> list[str]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await tenants_with_expiry(conn)

    return asyncio.run(listed())


def purge(server: ServerThread) -> list[Any]:
    assert server.service.purger is not None
    return server.run(server.service.purger.run_once())


def beside(server: ServerThread, url: str, clock: Clock, **settings: Any) -> Purger:
    """Another purger, recording through `server`'s appender unless given
    its own `record`."""
    assert server.service.purger is not None
    settings.setdefault("record", server.service.purger.record)
    return Purger(url, seal=SEAL, clock=clock, **settings)


def _refusing(
    server: ServerThread, tenant: str, refusal: Exception, *, times: int | None = None
) -> tuple[Callable[[Any], Awaitable[None]], list[str]]:
    """A recorder of purges that raises `refusal` for `tenant` (the first
    `times` attempts, or every one) and records the other tenants' through
    `server`'s appender; and the purge id of each attempt it refused."""
    assert server.service.purger is not None
    real = server.service.purger.record
    refused: list[str] = []

    async def record_purge(purged: Any) -> None:
        if purged.tenant_id == tenant and (times is None or len(refused) < times):
            refused.append(purged.purge_id)
            raise refusal
        await real(purged)

    return record_purge, refused


def recorded(client: AuditClient) -> list[tuple[int, str]]:
    return sorted(
        (event.seq, event.action) for event in client.query(build_filter(actions=RECORDED))
    )


def record(client: AuditClient, action: str, category: str = "") -> int:
    event = (
        build_event(action=action, actor_id="u-1", category=category)
        if category
        else build_event(action=action, actor_id="u-1")
    )
    return client.record(event).event.seq


def test_a_tenant_without_a_policy_keeps_everything(admin: AuditClient) -> None:
    answer = admin.get_retention_policy()
    assert answer.policy.default_days == 0 and not answer.policy.rules
    assert not answer.legal_hold.on


def test_a_policy_is_validated_field_by_field(
    aged: ServerThread, admin: AuditClient, tenant: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        admin.set_retention_policy(40_000, action_prefixes={"rag": 10, "rag.*": 5})
    fields = {field for field, _ in refused.value.field_violations}
    assert fields == {"policy.default_days", "policy.rules[0].action_prefix"}
    # Two rules for one category can only come as a raw request.
    policy = retention_pb2.RetentionPolicy(default_days=30)
    policy.rules.add(category=event_pb2.CATEGORY_BILLING, days=5)
    policy.rules.add(category=event_pb2.CATEGORY_BILLING, days=6)
    policy.rules.add(days=5)  # neither selector
    with grpc.insecure_channel(aged.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raw:
            stub.UpdateRetentionPolicy(
                retention_pb2.UpdateRetentionPolicyRequest(policy=policy),
                metadata=(("authorization", f"Bearer {aged.token(tenant)}"),),
            )
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "policy.rules[1]: repeats" in str(raw.value.details())
    assert "policy.rules[2]: must set exactly one" in str(raw.value.details())


def test_a_policy_change_is_recorded(admin: AuditClient) -> None:
    changed = admin.set_retention_policy("90d", categories={"authentication": "1y"})
    assert changed.event_id
    assert changed.policy.default_days == 90 and len(changed.policy.rules) == 1
    event = admin.get_event(changed.event_id)
    assert event.action == "retention.policy_updated"
    assert {change.field for change in event.changes} == {"default_days", "rules"}
    again = admin.set_retention_policy("90d", categories={"authentication": "1y"})
    assert not again.event_id  # nothing changed, nothing recorded


def _policy_changes(client: AuditClient) -> int:
    return len(list(client.query(build_filter(actions="retention.policy_updated"))))


def test_a_policy_change_on_a_stale_etag_is_aborted_and_changes_nothing(
    admin: AuditClient,
) -> None:
    never_set = admin.get_retention_policy().policy.etag
    assert never_set.startswith('"') and never_set.endswith('"')  # RFC 7232
    changed = admin.set_retention_policy("90d", etag=never_set)
    assert changed.event_id and changed.policy.etag != never_set
    assert admin.get_retention_policy().policy.etag == changed.policy.etag
    for stale in ("30d", "90d"):  # another policy, or the same one: both refused
        with pytest.raises(AbortedError) as aborted:
            admin.set_retention_policy(stale, etag=never_set)
        assert aborted.value.reason == "ETAG_MISMATCH"
        assert aborted.value.code == grpc.StatusCode.ABORTED
    now = admin.get_retention_policy().policy
    assert now.default_days == 90 and now.etag == changed.policy.etag
    assert _policy_changes(admin) == 1  # an aborted change records nothing
    again = admin.set_retention_policy("30d", etag=changed.policy.etag)
    assert again.policy.default_days == 30 and again.policy.etag not in (
        never_set,
        changed.policy.etag,
    )
    unconditional = admin.set_retention_policy("1y")  # no etag: applies to any policy
    assert unconditional.policy.default_days == 365 and _policy_changes(admin) == 3


def test_a_preview_says_what_a_policy_would_remove_and_changes_nothing(
    aged: ServerThread, admin: AuditClient, clock: Clock, tenant: str
) -> None:
    """The dry run before a change that removes events for good: each rule's
    count is what the purge then removes."""
    admin.set_retention_policy("1y")  # its record, 40 days old below, is kept for good
    doc, login, rag = (
        record(admin, "doc.edit"),
        record(admin, "user.login", "authentication"),
        record(admin, "rag.query"),
    )
    clock.advance(40)
    fresh = record(admin, "doc.edit")
    current = admin.get_retention_policy().policy
    proposed: dict[str, Any] = {
        "categories": {"authentication": "forever"},
        "action_prefixes": {"rag.*": 60},
    }
    preview = admin.preview_retention_policy("30d", **proposed)
    horizon = clock() - timedelta(days=30)
    assert [(r.rule, r.days, r.events) for r in preview.rules] == [
        ("action:rag.*", 60, 0),  # 40 days old: kept
        ("default", 30, 1),  # the edit: not the login, nor the policy's record
    ]
    assert preview.rules[1].received_before.ToDatetime(UTC) == horizon
    assert (preview.events, preview.at_least, preview.legal_hold) == (1, False, False)
    assert preview.policy.default_days == 30 and not preview.policy.etag
    # Nothing changed or recorded, nothing removed.
    assert admin.get_retention_policy().policy == current
    assert _policy_changes(admin) == 1
    purge(aged)
    assert [seq for seq, _ in recorded(admin)] == [doc, login, rag, fresh]
    # Checked as the change would be: fields, and the etag.
    with pytest.raises(InvalidArgumentError, match=r"policy\.default_days"):
        admin.preview_retention_policy(40_000)
    changed = admin.set_retention_policy("180d")
    with pytest.raises(AbortedError):
        admin.preview_retention_policy("30d", etag=current.etag)
    # Applied, the purge removes what the preview said.
    admin.set_retention_policy("30d", etag=changed.policy.etag, **proposed)
    [purged] = [done for done in purge(aged) if done.tenant_id == tenant]
    assert {rule: done["purged"] for rule, done in purged.by_rule.items()} == {"default": 1}
    assert [seq for seq, _ in recorded(admin)] == [login, rag, fresh]
    admin.set_legal_hold(True, reason="Case 12")
    assert admin.preview_retention_policy(1).legal_hold
    admin.set_legal_hold(False)


def test_the_command_line_asks_before_a_policy_that_removes_events(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`sealtrail retention set` showed nothing and set a policy that removes
    events for good at the next purge. Now it shows what the policy would
    remove and asks at a terminal; elsewhere (a script) it refuses, and
    --yes sets it without asking."""
    record(admin, "doc.edit")
    clock.advance(40)
    env = {"SEALTRAIL_SERVER": aged.target, "SEALTRAIL_TOKEN": aged.token(tenant)}
    at_a_terminal = False
    monkeypatch.setattr(cli_retention, "_at_a_terminal", lambda: at_a_terminal)

    def run(*args: str, answer: str | None = None) -> Any:
        return CliRunner().invoke(cli.main, ["retention", "set", *args], input=answer, env=env)

    before = admin.get_retention_policy().policy
    scripted = run("30d", answer="y\n")  # a line of a script's input is no answer
    assert scripted.exit_code == 2 and scripted.stdout == "", scripted.output
    assert scripted.stderr.startswith("would remove 1 event now\n  default: 1 event (30 days")
    assert "removes events for good at the next purge; pass --yes" in scripted.stderr
    at_a_terminal = True
    declined = run("30d", answer="n\n")
    assert declined.exit_code == 1 and declined.stdout == "", declined.output
    assert "Remove them for good at the next purge?" in declined.stderr
    assert admin.get_retention_policy().policy == before

    removes_nothing = run("60", answer="y\n")  # the edit is 40 days old: asked as it shortens
    assert removes_nothing.exit_code == 0, removes_nothing.output
    assert removes_nothing.stderr.startswith("would remove 0 events now\n")
    assert "Keep them less long than now? (--yes answers yes)" in removes_nothing.stderr
    assert removes_nothing.stdout == "policy updated\n"
    accepted = run("30d", answer="y\n")
    assert (accepted.exit_code, accepted.stdout) == (0, "policy updated\n"), accepted.output
    assert admin.get_retention_policy().policy.default_days == 30
    at_a_terminal = False
    assert run("20", "--yes").output == "policy updated\n"  # shown nothing, asked nothing
    assert admin.get_retention_policy().policy.default_days == 20
    # As a retry whose first try applied finds it: not "unchanged", as if it had not.
    assert run("20", "--yes").output == "policy already as asked; nothing recorded\n"


def test_the_command_line_asks_before_a_policy_that_shortens_retention(
    aged: ServerThread, admin: AuditClient, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sealtrail retention set 1` set a policy kept forever to one day
    through a pipe, unasked, for it removed nothing yet: the console asks
    before any change that keeps events less long (docs/console.md), and so
    does the command line now, refusing in a script unless --yes."""
    record(admin, "doc.edit")  # received now: a day of retention removes nothing yet
    env = {"SEALTRAIL_SERVER": aged.target, "SEALTRAIL_TOKEN": aged.token(tenant)}
    at_a_terminal = False
    monkeypatch.setattr(cli_retention, "_at_a_terminal", lambda: at_a_terminal)

    def run(*args: str, answer: str | None = None) -> Any:
        return CliRunner().invoke(cli.main, ["retention", "set", *args], input=answer, env=env)

    before = admin.get_retention_policy().policy
    assert before.default_days == 0  # forever
    preview = admin.preview_retention_policy(1, categories={"authentication": "forever"})
    assert [(s.events, s.before_days, s.after_days) for s in preview.shortened] == [
        ("default", 0, 1)
    ]
    assert (preview.events, preview.at_least) == (0, False)
    scripted = run("1", "--category", "authentication=forever", answer="y\n")
    assert scripted.exit_code == 2 and scripted.stdout == "", scripted.output
    assert scripted.stderr.startswith(
        "would remove 0 events now\n  default: 0 events (1 day: received before "
    )
    assert "keeps events less long than now:\n  default: forever -> 1 day\n" in scripted.stderr
    assert "this policy keeps events less long than now; pass --yes to set it" in scripted.stderr
    at_a_terminal = True
    declined = run("1", answer="n\n")
    assert declined.exit_code == 1 and declined.stdout == "", declined.output
    assert "Keep them less long than now? (--yes answers yes)" in declined.stderr
    assert admin.get_retention_policy().policy == before

    at_a_terminal = False
    assert run("1", "--yes").output == "policy updated\n"
    assert admin.get_retention_policy().policy.default_days == 1
    longer = run("30")  # keeps everything longer: nothing asked
    assert (longer.exit_code, longer.output) == (0, "policy updated\n")


def test_a_preview_reads_at_most_its_limit_oldest_first(
    admin: AuditClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the read stops, a rule whose horizon it passed is counted
    exactly; one whose horizon lies beyond is a lower bound."""
    for _ in range(2):
        record(admin, "user.login", "authentication")
    clock.advance(10)
    for _ in range(3):
        record(admin, "doc.edit")
    clock.advance(2)
    monkeypatch.setattr(retention_api, "PREVIEW_READ_LIMIT", 2)  # the server runs in this process
    preview = admin.preview_retention_policy(1, categories={"authentication": 5})
    # Read: the two logins, then one edit (the one past the limit).
    assert [(r.rule, r.events, r.at_least) for r in preview.rules] == [
        ("category:authentication", 2, False),  # its horizon, 7 days ago, was passed
        ("default", 1, True),
    ]
    assert (preview.events, preview.at_least) == (3, True)


def test_of_two_changes_made_on_one_etag_exactly_one_applies(
    aged: ServerThread, tenant: str
) -> None:
    with AuditClient(aged.target, token=aged.token(tenant)) as first:
        read = first.get_retention_policy().policy.etag
    outcomes: list[str] = []

    def change(days: str) -> None:
        with AuditClient(aged.target, token=aged.token(tenant)) as client:
            try:
                client.set_retention_policy(days, etag=read)
                outcomes.append(days)
            except AbortedError:
                outcomes.append("aborted")

    threads = [threading.Thread(target=change, args=(days,)) for days in ("30d", "90d")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) in (["30d", "aborted"], ["90d", "aborted"])
    with AuditClient(aged.target, token=aged.token(tenant)) as client:
        kept = client.get_retention_policy().policy
        assert kept.default_days == {"30d": 30, "90d": 90}[min(outcomes)]
        assert _policy_changes(client) == 1


def test_a_legal_hold_change_on_a_stale_etag_is_aborted(admin: AuditClient) -> None:
    released = admin.get_retention_policy().legal_hold.etag
    placed = admin.set_legal_hold(True, reason="Case 9", etag=released)
    assert placed.legal_hold.on and placed.legal_hold.etag != released
    with pytest.raises(AbortedError) as aborted:
        admin.set_legal_hold(False, etag=released)
    assert aborted.value.reason == "ETAG_MISMATCH"
    hold = admin.get_retention_policy().legal_hold
    assert hold.on and hold.reason == "Case 9" and hold.etag == placed.legal_hold.etag
    assert not admin.set_legal_hold(False, etag=hold.etag).legal_hold.on


@pytest.mark.parametrize("reason", ["", "  ", "Case\x007", "Case 7\x1b[2J", "x" * 1025])
def test_a_legal_hold_without_a_plain_reason_is_refused_naming_it(
    admin: AuditClient, reason: str
) -> None:
    """Control characters too: the reason is printed to admins' terminals, as
    names are (helper-146)."""
    with pytest.raises(InvalidArgumentError) as refused:
        admin.set_legal_hold(True, reason=reason)
    assert [field for field, _ in refused.value.field_violations] == ["reason"]
    assert not admin.get_retention_policy().legal_hold.on


@pytest.mark.parametrize("change", ["legal hold", "policy"])
def test_a_change_a_purge_batch_holds_up_is_unavailable_and_unrecorded(
    aged: ServerThread, admin: AuditClient, sql: psycopg.Connection[Any], tenant: str, change: str
) -> None:
    """A purge batch holds its tenant's policy row while it removes (a batch
    can take long). A change waited for it after recording itself, with no
    limit: a caller whose deadline ran out retried, recording the change each
    time, while none of it applied (helper-84). It waits for the batch until a
    second before its deadline (at most a minute), recording nothing, and is
    then UNAVAILABLE."""
    admin.set_retention_policy("90d")
    before = admin.get_retention_policy()

    def apply(client: AuditClient) -> Any:
        if change == "legal hold":  # with an etag: not retried by the client
            return client.set_legal_hold(True, reason="Case 3", etag=before.legal_hold.etag)
        return client.set_retention_policy("30d", etag=before.policy.etag)

    with (
        sql.transaction(),
        AuditClient(aged.target, token=aged.token(tenant), timeout=3) as hurried,
    ):
        sql.execute("SELECT FROM retention_policies WHERE tenant_id = %s FOR SHARE", [tenant])
        with pytest.raises(UnavailableError) as busy:  # not DEADLINE_EXCEEDED: it gave up first
            apply(hurried)
    assert "purge" in str(busy.value)
    assert _changes_recorded(admin) == ["retention.policy_updated"]  # the first alone
    assert admin.get_retention_policy() == before
    apply(admin)  # once the batch is done
    assert len(_changes_recorded(admin)) == 2


def _changes_recorded(client: AuditClient) -> list[str]:
    found = client.query(build_filter(actions="retention.*"), order="oldest")
    return [event.action for event in found]


def test_expired_events_are_purged_by_their_rule(
    aged: ServerThread, admin: AuditClient, clock: Clock, sql: psycopg.Connection[Any], tenant: str
) -> None:
    plain = [record(admin, "doc.edit") for _ in range(4)]
    login = record(admin, "user.login", "authentication")
    rag = record(admin, "rag.query", "data_access")
    rebuild = record(admin, "rag.index.rebuild", "data_access")
    clock.advance(35)
    later = record(admin, "doc.edit")
    admin.set_retention_policy(
        30,
        categories={"authentication": "forever"},
        action_prefixes={"rag.*": 60, "rag.index.*": 20},
    )
    clock.advance(5)  # 40 days after the first events, 5 after `later`

    [result] = [r for r in purge(aged) if r.tenant_id == tenant]
    assert result.count == 5  # the four plain ones and the rebuild (20 days)
    assert recorded(admin) == sorted(
        [(login, "user.login"), (rag, "rag.query"), (later, "doc.edit")]
    )
    [purged] = admin.query(build_filter(actions="retention.purged"))
    assert purged.details["purged"] == 5
    assert purged.details["rules"]["default"]["purged"] == 4
    assert purged.details["rules"]["action:rag.index.*"]["purged"] == 1
    assert (purged.details["first_seq"], purged.details["last_seq"]) == (plain[0], rebuild)
    # Each removed event left its leaf hash, and nothing else.
    rows = sql.execute(
        "SELECT idx + 1 FROM tree_nodes WHERE tenant_id = %s AND level = 0 ORDER BY idx", [tenant]
    ).fetchall()
    assert [seq for (seq,) in rows] == [*plain, rebuild]

    clock.advance(26)  # 66 days: rag.query (60) goes, and `later` (31 days old)
    purge(aged)
    assert recorded(admin) == [(login, "user.login")]
    # Retention's own records stay, though the default (30 days) covers their
    # categories: the policy's change is 31 days old here, and later ones older.
    clock.advance(400)
    purge(aged)
    own = sorted((e.seq, e.action) for e in admin.query(build_filter(actions="retention.*")))
    assert own[0][1] == "retention.policy_updated"
    assert (purged.seq, "retention.purged") in own  # the first pass's record
    assert len(own) >= 3 and {action for _, action in own[1:]} == {"retention.purged"}


def test_a_policy_with_many_long_action_rules_still_purges_by_its_default(
    aged: ServerThread, admin: AuditClient, clock: Clock, tenant: str
) -> None:
    """The mark of how far a selection was carried out was keyed by the whole
    selection, every other rule's prefix in it: 70 rules of ids made a key
    past PostgreSQL's index row limit, and the batch that finished the
    default rule failed and rolled back at every pass (helper-146)."""
    expired = [record(admin, "doc.edit") for _ in range(4)]  # the last batch ends the rule
    rules: dict[str, int | str] = {
        f"org_{hashlib.sha256(bytes([n])).hexdigest()[:32]}.*": "forever" for n in range(99)
    }
    admin.set_retention_policy(30, action_prefixes=rules)
    clock.advance(31)
    [result] = [r for r in purge(aged) if r.tenant_id == tenant]
    assert result.count == len(expired)
    assert not [seq for seq, action in recorded(admin) if action == "doc.edit"]


def test_each_selection_resumes_where_the_last_pass_left_it(
    aged: ServerThread, admin: AuditClient, clock: Clock, sql: psycopg.Connection[Any], tenant: str
) -> None:
    """A pass read each selection from the tenant's first event: every event
    an override keeps, in every month, at every pass, while the policy row was
    locked. It starts where the last pass of the same selection left it; a
    selection the policy did not have starts from the beginning."""

    def marks() -> dict[str, datetime]:
        rows = sql.execute(
            "SELECT selection, removed_before FROM retention_marks WHERE tenant_id = %s", [tenant]
        ).fetchall()
        return {key: before for key, before in rows}

    login = record(admin, "user.login", "authentication")
    record(admin, "doc.edit")
    admin.set_retention_policy(30, categories={"authentication": "forever"})
    clock.advance(40)
    purge(aged)
    [(default, removed_before)] = marks().items()
    policy = RetentionPolicy(30, (RetentionRule(0, category="authentication"),))
    assert default == selection_key(
        next(s for s in purge_selections(policy) if s.rule == "default")
    )
    assert removed_before == clock() - timedelta(days=30)

    record(admin, "doc.edit")
    clock.advance(31)
    purge(aged)
    assert marks() == {default: clock() - timedelta(days=30)}
    assert recorded(admin) == [(login, "user.login")]  # `later` went, from the mark on

    admin.set_retention_policy(30, categories={"authentication": 10})
    clock.advance(1)
    purge(aged)
    assert recorded(admin) == []  # the new rule read from the beginning, before the mark
    now_marked = marks()  # the default's (its selection unchanged) and the new rule's
    assert default in now_marked and len(now_marked) == 2


def _watch_batches(
    monkeypatch: pytest.MonkeyPatch,
    tenant: str,
    *,
    dies_at: Callable[[list[dict[str, Any]], dict[str, Any]], bool] = lambda _, __: False,
) -> list[dict[str, Any]]:
    """The arguments of each purge batch of `tenant`, as the purger calls
    them (the batches run as ever); the process dies instead of the first
    batch `dies_at` picks, given those before and its own."""
    batches: list[dict[str, Any]] = []

    async def watched(conn: Any, tenant_id: str, *args: Any, **kwargs: Any) -> Any:
        if tenant_id == tenant:
            if dies_at(batches, kwargs):
                raise _ProcessDied
            batches.append(kwargs)
        return await purge_batch(conn, tenant_id, *args, **kwargs)

    monkeypatch.setattr(tenant_pass, "purge_batch", watched)
    return batches


def test_a_new_rule_is_read_a_window_of_seqs_a_batch_to_the_end_of_the_log(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rule with no mark yet reads from the tenant's first event. By
    windows of seqs, a batch that finds few matches stops at its window's end
    instead of reading on; the next starts there, until the end of the log."""
    batches = _watch_batches(monkeypatch, tenant)
    logins = []
    for n in range(20):
        record(admin, "doc.edit")
        if n % 6 == 5:
            logins.append(record(admin, "user.login", "authentication"))
    logins.append(record(admin, "user.login", "authentication"))  # the last event
    admin.set_retention_policy("forever", categories={"authentication": 30})
    clock.advance(31)
    windowed = beside(aged, migrated_database_url, clock, batch_events=2, scan_window=4)
    [result] = [r for r in aged.run(windowed.run_once()) if r.tenant_id == tenant]
    assert result.count == len(logins)
    assert (result.first_seq, result.last_seq) == (logins[0], logins[-1])
    assert {action for _, action in recorded(admin)} == {"doc.edit"}
    assert admin.verify_log().ok
    # No batch read more than its window; together they read to the log's end.
    windows = [(b["after_seq"], b["through_seq"]) for b in batches]
    assert all(through is not None and through - after <= 4 for after, through in windows)
    size = logins[-1] + 1  # the policy's change came last
    assert windows[0][0] == 0 and (windows[-1][1] or 0) >= size


def test_a_marked_rule_after_a_long_hold_is_read_a_window_of_events_a_batch(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What was received since a rule's mark is read in one batch when passes
    are hours apart; after a legal hold of weeks, by spans of receive times
    that each hold a window's worth of events, or a rare category's batch
    would read all of it while holding the policy row."""
    admin.set_retention_policy(30)
    record(admin, "doc.edit")
    clock.advance(31)
    purge(aged)  # the default rule is marked here
    admin.set_legal_hold(True, reason="Case 7")
    held = []
    for _ in range(9):
        held.append(record(admin, "doc.edit"))
        clock.advance(3)
    admin.set_legal_hold(False)
    clock.advance(31)  # all held ones expired, the mark 58 days old
    batches = _watch_batches(monkeypatch, tenant)
    times = [e.received_at.ToDatetime(UTC) for e in admin.query(build_filter())]
    windowed = beside(aged, migrated_database_url, clock, batch_events=2, scan_window=3)
    [result] = [r for r in aged.run(windowed.run_once()) if r.tenant_id == tenant]
    assert result.count == len(held)
    assert not {seq for seq, _ in recorded(admin)} & set(held)
    spans = [(b["received_from"], b["received_before"]) for b in batches]
    assert len(spans) >= 3  # nine events, and the hold's two records, three a span
    assert all(sum(start <= t < before for t in times) <= 3 for start, before in spans[:-1])
    assert all(later[0] in (start, before) for (start, before), later in pairwise(spans))
    assert spans[-1][1] == clock() - timedelta(days=30)
    assert admin.verify_log().ok

    batches.clear()
    record(admin, "doc.edit")
    clock.advance(1, seconds=600)
    aged.run(windowed.run_once())  # a day after (a daily pass): what is left, in one batch
    assert len(batches) == 1


def _clock_warnings(caplog: pytest.LogCaptureFixture) -> list[tuple[datetime, datetime]]:
    """The times (this process's, the database's) each warning of the purge
    job of a clock ahead named (the health probe's own are its own test's:
    test_metrics.py)."""
    named = r"this process's clock \((\S+)\) is .+ ahead of the database's \((\S+)\)"
    found = [
        re.search(named, r.getMessage())
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == purger_module.__name__
    ]
    return [(datetime.fromisoformat(m[1]), datetime.fromisoformat(m[2])) for m in found if m]


def test_a_process_clock_ahead_of_the_databases_purges_nothing_until_it_is_back(
    aged: ServerThread, admin: AuditClient, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A host whose clock runs days ahead (a VM resumed with a bad clock, a
    wrong NTP server) would remove events that much before their time, for
    good: a pass first compares its clock with the database's, and purges
    nothing while it is ahead by more than the tolerance, warning once; within
    the tolerance it purges as before."""
    admin.set_retention_policy(30)
    expired = record(admin, "doc.edit")
    clock.advance(20)  # the world, the database's clock with it: nothing due
    ahead = 15 * 86400.0
    clock.run_ahead(seconds=ahead)  # this process's clock alone: due by it
    try:
        with caplog.at_level(logging.INFO, logger=purger_module.__name__):
            purge(aged)
            purge(aged)  # still ahead: no word more
        assert expired in {seq for seq, _ in recorded(admin)}
        [(process, database)] = _clock_warnings(caplog)
        assert timedelta(days=14) < process - database <= timedelta(days=15)

        clock.advance(11)  # 31 days by the database's clock too
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=purger_module.__name__):
            purge(aged)
        assert expired in {seq for seq, _ in recorded(admin)}  # still ahead: kept
        assert not _clock_warnings(caplog)

        clock.run_ahead(seconds=120 - ahead)  # back, within the tolerance
        ahead = 120
        with caplog.at_level(logging.INFO, logger=purger_module.__name__):
            purge(aged)
        assert expired not in {seq for seq, _ in recorded(admin)}
        assert "back within" in caplog.text
        assert admin.verify_log().ok
    finally:
        clock.run_ahead(seconds=-ahead)


def test_a_span_after_a_full_batch_reads_from_its_first_seq(
    aged: ServerThread, admin: AuditClient, clock: Clock, migrated_database_url: str
) -> None:
    """Appenders' clocks differ: a later span may hold events of lower seqs
    than an earlier span's full batch reached (helper-90)."""
    admin.set_retention_policy(30)
    record(admin, "doc.edit")
    clock.advance(31)
    purge(aged)  # marked
    admin.set_legal_hold(True, reason="Case 8")
    clock.advance(10)
    late = record(admin, "doc.edit")  # received by a clock 5 days ahead of the next ones
    clock.advance(-5)
    early = []
    for _ in range(4):  # a second apart: spans end between them
        early.append(record(admin, "doc.edit"))
        clock.advance(seconds=1)
    clock.advance(5)
    admin.set_legal_hold(False)
    clock.advance(31)
    windowed = beside(aged, migrated_database_url, clock, batch_events=3, scan_window=3)
    aged.run(windowed.run_once())
    assert not {seq for seq, _ in recorded(admin)} & {late, *early}
    assert admin.verify_log().ok


def test_a_span_done_moves_its_rules_mark_so_a_pass_that_stops_later_is_not_redone(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a long hold, a rule is read by spans: each one done marks the
    rule, so a crash (or a hold placed) before the end leaves the next pass to
    start after it, not read it again from the mark the pass began at
    (helper-90)."""
    admin.set_retention_policy(30)
    record(admin, "doc.edit")
    clock.advance(31)
    purge(aged)  # marked
    admin.set_legal_hold(True, reason="Case 9")
    held = []
    for _ in range(9):
        held.append(record(admin, "doc.edit"))
        clock.advance(3)
    admin.set_legal_hold(False)
    clock.advance(31)
    first_span = _watch_batches(
        monkeypatch,
        tenant,
        # at the second span's first batch
        dies_at=lambda before, this: (
            bool(before) and this["received_from"] != before[0]["received_from"]
        ),
    )
    windowed = beside(aged, migrated_database_url, clock, batch_events=2, scan_window=3)
    with pytest.raises(_ProcessDied):
        aged.run(windowed.run_once())
    span_end = first_span[0]["received_before"]
    [(mark,)] = sql.execute(
        "SELECT removed_before FROM retention_marks WHERE tenant_id = %s", [tenant]
    ).fetchall()
    assert mark == span_end
    removable_before_mark = sql.execute(
        "SELECT count(*) FROM events WHERE tenant_id = %s AND action = 'doc.edit'"
        " AND received_at < %s",
        [tenant, mark],
    ).fetchone()
    assert removable_before_mark == (0,)  # what the mark says

    batches = _watch_batches(monkeypatch, tenant)
    aged.run(windowed.run_once())
    assert batches[0]["received_from"] == span_end - tenant_pass.MARK_MARGIN
    assert not {seq for seq, _ in recorded(admin)} & set(held)
    assert admin.verify_log().ok


def test_a_batch_of_a_window_reads_no_event_past_it(
    admin: AuditClient, clock: Clock, tenant: str, migrated_database_url: str
) -> None:
    """Shown by a lock: a batch that read past its window's end would wait
    for the later match another session holds."""
    inside = record(admin, "user.login", "authentication")
    record(admin, "doc.edit")
    past = record(admin, "user.login", "authentication")
    clock.advance(31)
    logins = Selection(30, "category:authentication", category="authentication")

    async def one_batch() -> int:
        async with await psycopg.AsyncConnection.connect(migrated_database_url) as conn:
            await conn.execute("SET LOCAL sealtrail.removal = 'retention'")
            await conn.execute("SET LOCAL lock_timeout = '10s'")
            batch = await purge_batch(
                conn,
                tenant,
                logins,
                received_before=clock() - timedelta(days=30),
                limit=2,
                through_seq=past - 1,
            )
            await conn.rollback()
            return batch.first_seq

    with psycopg.connect(migrated_database_url) as holder:  # in a transaction until closed
        holder.execute(
            "SELECT FROM events WHERE tenant_id = %s AND seq = %s FOR UPDATE", [tenant, past]
        )
        assert asyncio.run(one_batch()) == inside


def _pending_summaries(sql: psycopg.Connection[Any], tenant: str) -> list[dict[str, Any]]:
    """The tenant's purge summaries not yet recorded in its log."""
    rows = sql.execute(
        "SELECT summary FROM retention_pending_purges WHERE tenant_id = %s", [tenant]
    ).fetchall()
    return [summary for (summary,) in rows]


def test_a_purge_a_crash_left_unrecorded_is_recorded_by_the_next_pass_once(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    migrated_database_url: str,
) -> None:
    """The batches commit, then the process dies before the `retention.purged`
    event is recorded: what they removed is kept beside them, and the next
    pass records it. A pass that dies after recording it, before letting the
    summary go, leaves it to be recorded again: under the same idempotency
    key, which finds the event already there."""
    assert aged.service.purger is not None
    real = aged.service.purger.record
    admin.set_retention_policy(30)  # its record stays: retention's own
    seqs = [record(admin, "doc.edit") for _ in range(5)]
    clock.advance(31)

    def dying(*, recorded_first: bool) -> Purger:
        async def record_then_die(purged: Any) -> None:
            if purged.tenant_id != tenant:
                await real(purged)  # other tests' tenants: recorded as usual
                return
            if recorded_first:
                await real(purged)
            raise _ProcessDied

        return Purger(
            migrated_database_url, record=record_then_die, seal=SEAL, batch_events=3, clock=clock
        )

    with pytest.raises(_ProcessDied):
        aged.run(dying(recorded_first=False).run_once())
    assert recorded(admin) == []  # removed, in two batches of three
    assert admin.query_page(build_filter(actions="retention.purged")).events == []
    [summary] = _pending_summaries(sql, tenant)
    assert (summary["purged"], summary["first_seq"], summary["last_seq"]) == (5, seqs[0], seqs[-1])
    assert admin.verify_log().ok  # the removals are pending: accounted for

    with pytest.raises(_ProcessDied):
        aged.run(dying(recorded_first=True).run_once())
    assert len(_pending_summaries(sql, tenant)) == 1  # recorded, not yet let go
    assert admin.verify_log().ok  # both recorded and pending: counted once
    purge(aged)
    purge(aged)
    [purged] = admin.query(build_filter(actions="retention.purged"))
    assert purged.details["purged"] == 5
    assert (purged.details["first_seq"], purged.details["last_seq"]) == (seqs[0], seqs[-1])
    assert _pending_summaries(sql, tenant) == []
    assert admin.verify_log().ok


def test_a_purge_recorded_again_after_a_key_rotation_is_recorded_already(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    migrated_database_url: str,
) -> None:
    """A pass records a purge and dies before letting its summary go; the
    server comes back with a rotated signing key. The next pass's record of
    that purge differs from the log's by its statement's signature only: it
    is recorded already, not a reused idempotency key refused for good (which
    stopped the tenant's purges until an operator stepped in)."""
    service = aged.service
    assert service.purger is not None and service._db is not None
    assert service._appender is not None and service._checkpointer is not None
    real = service.purger.record
    admin.set_retention_policy(30)
    for _ in range(3):
        record(admin, "doc.edit")
    clock.advance(31)

    async def record_then_die(purged: Any) -> None:
        await real(purged)
        if purged.tenant_id == tenant:
            raise _ProcessDied

    with pytest.raises(_ProcessDied):
        aged.run(
            Purger(migrated_database_url, record=record_then_die, seal=SEAL, clock=clock).run_once()
        )
    assert len(_pending_summaries(sql, tenant)) == 1  # recorded, not yet let go
    new_key = generate_signer_key(service._checkpointer.signer.verifier.name)
    rotated = purge_recorder(service._db, service._appender, service._checkpointer, new_key, clock)

    async def rotated_here(purged: Any) -> None:  # other tests' tenants as usual
        await (rotated if purged.tenant_id == tenant else real)(purged)

    aged.run(Purger(migrated_database_url, record=rotated_here, seal=SEAL, clock=clock).run_once())
    assert _pending_summaries(sql, tenant) == []
    [purged] = admin.query(build_filter(actions="retention.purged"))
    assert purged.details["purged"] == 3
    assert admin.verify_log().ok


class _ProcessDied(BaseException):
    """The process ending mid-pass, as a signal ends it: nothing of the pass
    catches it (the pass goes on past any one tenant's Exception)."""


def _expired_with_a_neighbour(
    aged: ServerThread, admin: AuditClient, tenant: str, clock: Clock
) -> tuple[list[int], str]:
    """Two events of the tenant and two of a neighbour purged after it in a
    pass (by tenant id), all expired under a 30-day policy: the tenant's seqs
    and the neighbour's id."""
    admin.set_retention_policy(30)
    seqs = [record(admin, "doc.edit") for _ in range(2)]
    after = f"{tenant}-after"
    with AuditClient(aged.target, token=aged.token(after)) as neighbour:
        neighbour.set_retention_policy(30)
        record(neighbour, "doc.edit")
        record(neighbour, "doc.edit")
    clock.advance(31)
    return seqs, after


def test_a_tenant_whose_purge_cannot_be_recorded_is_not_purged_further(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    migrated_database_url: str,
) -> None:
    """Its summary is one row a tenant: purging more before it is recorded
    would replace it, and what the first purge removed would never be told.
    The refusal leaves the pass going for the other tenants."""
    seqs, after = _expired_with_a_neighbour(aged, admin, tenant, clock)
    refused, _ = _refusing(aged, tenant, Unavailable("the appender is busy", retry_after=1.0))
    refusing = Purger(migrated_database_url, record=refused, seal=SEAL, batch_events=3, clock=clock)
    passed = aged.run(refusing.run_once())
    assert recorded(admin) == []
    assert [p.count for p in passed if p.tenant_id == after] == [2]
    later = record(admin, "doc.edit")
    clock.advance(31)
    aged.run(refusing.run_once())  # refused again: the newer event stays
    assert recorded(admin) == [(later, "doc.edit")]
    [summary] = _pending_summaries(sql, tenant)
    assert (summary["first_seq"], summary["last_seq"]) == (seqs[0], seqs[-1])

    purge(aged)  # recorded first, then purged again
    assert recorded(admin) == []
    told = admin.query(build_filter(actions="retention.purged"), order="oldest")
    ranges = [(e.details["first_seq"], e.details["last_seq"]) for e in told]
    assert ranges == [(seqs[0], seqs[-1]), (seqs[-1] + 1, later)]
    assert _pending_summaries(sql, tenant) == []


def test_a_purge_the_log_refuses_for_good_is_said_once_a_pass_and_kept(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    migrated_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not tried again at the pass's end nor at every upkeep (helper-94); the
    summary stays, its removals accounted for, and the next pass tries it."""
    seqs, _ = _expired_with_a_neighbour(aged, admin, tenant, clock)
    refused, attempts = _refusing(aged, tenant, InvalidArgument([FieldViolation("details", "no")]))
    refusing = beside(aged, migrated_database_url, clock, record=refused)
    with caplog.at_level(logging.ERROR, logger=purger_module.__name__):
        aged.run(refusing.run_once())
        _until(lambda: aged.run(refusing.keep_up()), "the job stayed held")
    assert len(attempts) == 1 and caplog.text.count("the log refused the purge") == 1
    assert len(_pending_summaries(sql, tenant)) == 1
    assert admin.verify_log().ok  # still accounted for

    aged.run(refusing.run_once())  # tried again at the next pass
    assert len(attempts) == 2
    purge(aged)  # recorded by a process the log takes it from
    assert _pending_summaries(sql, tenant) == []
    told = list(admin.query(build_filter(actions="retention.purged")))
    assert [(e.details["first_seq"], e.details["last_seq"]) for e in told] == [(seqs[0], seqs[-1])]


def test_a_flaw_met_in_one_tenants_pass_stops_no_other_tenants_purge(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    migrated_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not only the database's refusals: whatever one tenant's pass raises
    (here its purge's record fails on a flaw, not a refusal) is logged, and
    the tenants after it are purged; its summary is kept and recorded by a
    later pass."""
    seqs, after = _expired_with_a_neighbour(aged, admin, tenant, clock)
    flawed, _ = _refusing(aged, tenant, KeyError("rules"))
    flawed_purger = Purger(migrated_database_url, record=flawed, seal=SEAL, clock=clock)
    with caplog.at_level(logging.ERROR, logger=purger_module.__name__):
        passed = aged.run(flawed_purger.run_once())
    assert f"the pass over {tenant} failed" in caplog.text
    assert [p.count for p in passed if p.tenant_id == after] == [2]
    assert recorded(admin) == []
    [summary] = _pending_summaries(sql, tenant)
    assert (summary["first_seq"], summary["last_seq"]) == (seqs[0], seqs[-1])

    with AuditClient(aged.target, token=aged.token(after)) as neighbour:
        newer = record(neighbour, "doc.edit")
    clock.advance(31)
    passed = aged.run(flawed_purger.run_once())  # the summary left fails again, first
    assert [p.count for p in passed if p.tenant_id == after] == [1], newer
    assert len(_pending_summaries(sql, tenant)) == 1

    purge(aged)
    # Recorded first; the pass then purges the access records queries left since.
    told = next(admin.query(build_filter(actions="retention.purged"), order="oldest"))
    assert (told.details["first_seq"], told.details["last_seq"]) == (seqs[0], seqs[-1])
    assert _pending_summaries(sql, tenant) == []


@contextlib.contextmanager
def _running(server: ServerThread, purger: Purger) -> Iterator[None]:
    """`purger`'s own job running in `server`'s loop, as a process runs it."""

    async def started() -> None:
        purger.start()

    server.run(started())
    try:
        yield
    finally:
        server.run(purger.stop())


def _until(condition: Callable[[], bool], failure: str, *, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


@pytest.mark.parametrize(
    "interval",
    [0, 90 * 86_400],  # purging off; passes further apart than the months made ahead last
    ids=["purging off", "passes quarterly"],
)
def test_the_months_ahead_are_created_hourly_whatever_the_interval(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    interval: float,
) -> None:
    seq = record(admin, "doc.edit")
    admin.set_retention_policy(10)
    clock.advance(130)
    ahead = clock() + timedelta(days=85)
    assert f"events_{ahead:%Y_%m}" not in _partitions(sql)
    monkeypatch.setattr(purger_module, "MONTHS_AHEAD_INTERVAL", 0.05)
    monkeypatch.setattr(purger_module, "BUSY_LOOK_AGAIN", 0.05)  # another server's upkeep
    seldom = beside(
        aged, migrated_database_url, clock, interval=interval, first_pass_after=interval
    )

    with _running(aged, seldom):
        _until(lambda: f"events_{ahead:%Y_%m}" in _partitions(sql), "no month was created")
    assert (seq, "doc.edit") in recorded(admin)  # expired, and kept: no pass ran


def _last_pass(sql: psycopg.Connection[Any], ended_ago: timedelta | None) -> None:
    """The deployment's last pass, by any process, as ended `ended_ago` by
    the database's clock (None: never)."""
    sql.execute("DELETE FROM deployment_jobs WHERE name = %s", [PURGE_JOB])
    if ended_ago is not None:
        sql.execute(
            "INSERT INTO deployment_jobs (name, last_ended_at) VALUES (%s, clock_timestamp() - %s)",
            [PURGE_JOB, ended_ago],
        )


def _ended_ago(sql: psycopg.Connection[Any]) -> timedelta:
    """How long ago the deployment's last pass ended, by the database's clock."""
    row = sql.execute(
        "SELECT clock_timestamp() - last_ended_at FROM deployment_jobs WHERE name = %s",
        [PURGE_JOB],
    ).fetchone()
    assert row is not None, "no pass was noted"
    return row[0]


def test_a_process_purges_soon_after_it_starts_not_a_whole_interval_later(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    """Processes replaced more often than the interval (rolling deploys,
    autoscaling) would otherwise never purge at all."""
    seq = record(admin, "doc.edit")
    admin.set_retention_policy(10)
    clock.advance(11)
    _last_pass(sql, timedelta(hours=2))
    hourly = beside(aged, migrated_database_url, clock, interval=3600, first_pass_after=0.05)

    with _running(aged, hourly):
        _until(lambda: (seq, "doc.edit") not in recorded(admin), "no pass ran")


def test_a_deployment_passes_once_an_interval_however_many_processes_run(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    """Each process passed every interval: N processes made N passes an
    interval, and N `retention.purged` records a tenant (ADR 0048). The
    deployment's last pass is what a process now waits for."""
    first = record(admin, "doc.edit")
    admin.set_retention_policy(10)
    clock.advance(11)
    _last_pass(sql, None)
    one, other = (beside(aged, migrated_database_url, clock, interval=3600) for _ in range(2))

    assert aged.run(one.run_when_due()) == 3600
    assert (first, "doc.edit") not in recorded(admin)
    # Noted by the database's clock, not the purger's (days ahead here).
    assert timedelta(0) <= _ended_ago(sql) < timedelta(minutes=1)

    later = record(admin, "doc.edit")
    clock.advance(11)
    looks_again = aged.run(other.run_when_due())
    assert 3600 - 60 < looks_again < 3600  # when the other's pass is an interval old
    assert (later, "doc.edit") in recorded(admin)

    # The database's clock gone back a little since (NTP, a failover): just ended.
    _last_pass(sql, -timedelta(minutes=5))
    assert 3600 - 60 < aged.run(other.run_when_due()) <= 3600
    assert (later, "doc.edit") in recorded(admin)

    with psycopg.connect(migrated_database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [PURGE_LOCK])  # a pass under way
        _last_pass(sql, timedelta(hours=2))
        assert aged.run(other.run_when_due()) == purger_module.BUSY_LOOK_AGAIN
        # However short the interval, not again within the minute.
        brisk = beside(aged, migrated_database_url, clock, interval=5)
        assert aged.run(brisk.run_when_due()) == purger_module.LOOK_AGAIN_AT_LEAST
        assert (later, "doc.edit") in recorded(admin)
        holder.execute("SELECT pg_advisory_unlock(%s)", [PURGE_LOCK])
    _last_pass(sql, -timedelta(hours=2))  # gone back further: something is off
    assert aged.run(other.run_when_due()) == 3600
    assert (later, "doc.edit") not in recorded(admin)


def test_processes_running_their_jobs_pass_an_interval_apart(
    aged: ServerThread,
    clock: Clock,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes' loops, the second started just after the first one's
    pass: each pass begins an interval after the last one ended, whichever
    process ran it (both by the database's clock, which the schedule reads)."""
    passes: list[tuple[datetime, datetime]] = []
    real_pass = Purger._pass

    async def timed(self: Purger, conn: Any) -> Any:
        started = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
        done = await real_pass(self, conn)
        ended = await (
            await conn.execute(
                "SELECT last_ended_at FROM deployment_jobs WHERE name = %s", [PURGE_JOB]
            )
        ).fetchone()
        passes.append((started[0], ended[0]))
        return done

    monkeypatch.setattr(Purger, "_pass", timed)
    _last_pass(sql, timedelta(hours=2))
    interval = 1.5
    both = [
        beside(aged, migrated_database_url, clock, interval=interval, first_pass_after=0.05)
        for _ in range(2)
    ]
    with _running(aged, both[0]):
        _until(lambda: len(passes) >= 1, "no pass", seconds=30)
        with _running(aged, both[1]):
            _until(lambda: len(passes) >= 3, "fewer than three passes", seconds=30)
    gaps = [later[0] - earlier[1] for earlier, later in pairwise(passes[:3])]
    assert all(gap >= timedelta(seconds=interval) for gap in gaps), gaps


def test_a_purge_a_pass_could_not_record_is_recorded_within_the_hour(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    migrated_database_url: str,
) -> None:
    """Passes are a day apart: a purge left unrecorded until the next would
    leave a day of the tenant's complete bundles unverifiable (ADR 0048).
    Every process's hourly upkeep records it, and so does a look that finds
    no pass due."""
    seqs, _ = _expired_with_a_neighbour(aged, admin, tenant, clock)
    refused, _ = _refusing(aged, tenant, Unavailable("the appender is busy", retry_after=1.0))
    refusing = beside(aged, migrated_database_url, clock, record=refused)
    aged.run(refusing.run_once())
    assert len(_pending_summaries(sql, tenant)) == 1
    daily = beside(aged, migrated_database_url, clock, interval=86_400)
    assert 86_400 - 60 < aged.run(daily.run_when_due()) <= 86_400  # just passed: not due
    assert _pending_summaries(sql, tenant) == []
    [told] = admin.query(build_filter(actions="retention.purged"))
    assert (told.details["first_seq"], told.details["last_seq"]) == (seqs[0], seqs[-1])

    later = record(admin, "doc.edit")
    clock.advance(31)
    aged.run(refusing.run_once())
    assert (later, "doc.edit") not in recorded(admin)
    _until(lambda: aged.run(daily.keep_up()), "the job stayed held")  # the hourly upkeep
    assert _pending_summaries(sql, tenant) == []

    # Refused once during a pass (the appender busy a moment): tried again at its end.
    refused_once, refusals = _refusing(
        aged, tenant, Unavailable("the appender is busy", retry_after=1.0), times=1
    )
    last = record(admin, "doc.edit")
    clock.advance(31)
    aged.run(beside(aged, migrated_database_url, clock, record=refused_once).run_once())
    assert len(refusals) == 1 and (last, "doc.edit") not in recorded(admin)
    assert _pending_summaries(sql, tenant) == []


def test_a_connection_lost_after_a_pass_ended_leaves_it_ended(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The pass's last step, recording what it could not, lost the
    connection: the pass had removed what it should and was noted as ended,
    yet the job said it failed and would retry within the hour."""
    seq = record(admin, "doc.edit")
    admin.set_retention_policy(10)
    clock.advance(11)
    _last_pass(sql, timedelta(hours=2))
    hourly = beside(aged, migrated_database_url, clock, interval=3600)
    real = hourly._record_left_over

    async def cut_off_at_the_end(conn: Any, *, in_pass: bool) -> Any:
        if in_pass:
            return await real(conn, in_pass=in_pass)
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        raise AssertionError("the connection outlived its end")

    monkeypatch.setattr(hourly, "_record_left_over", cut_off_at_the_end)
    with caplog.at_level(logging.WARNING, logger=purger_module.__name__):
        assert aged.run(hourly.run_when_due()) == 3600
    assert "the pass ended, but recording what it could not failed" in caplog.text
    assert (seq, "doc.edit") not in recorded(admin)
    assert timedelta(0) <= _ended_ago(sql) < timedelta(minutes=1)


def test_what_alert_rules_learned_is_forgotten_after_the_default_retention(
    aged: ServerThread, admin: AuditClient, clock: Clock, sql: psycopg.Connection[Any], tenant: str
) -> None:
    """An actor's addresses and countries a new-origin rule learned are
    personal data derived from events: kept no longer than the default keeps
    events, counted from their last sighting; kept under a legal hold."""
    rule = admin.create_alert_rule(build_alert_rule("new address", "new_ip")).rule
    for at, ip in [(clock() - timedelta(days=40), "198.51.100.1"), (clock(), "198.51.100.2")]:
        sql.execute(
            "INSERT INTO alert_known_ips (tenant_id, rule_id, actor_id, ip, first_seen_at,"
            " last_seen_at) VALUES (%s, %s, 'alice', %s, %s, %s)",
            [tenant, rule.id, ip, at - timedelta(days=100), at],
        )
    # Alice's: the tokens' own calls (from 127.0.0.1, ADR 0059) are learned too.
    known = "SELECT ip FROM alert_known_ips WHERE tenant_id = %s AND actor_id = 'alice' ORDER BY ip"
    admin.set_retention_policy("forever", categories={"authentication": 10})
    purge(aged)
    assert len(sql.execute(known, [tenant]).fetchall()) == 2  # the default keeps everything
    admin.set_retention_policy(30)
    admin.set_legal_hold(True, reason="Case 12")
    purge(aged)
    assert len(sql.execute(known, [tenant]).fetchall()) == 2  # held
    admin.set_legal_hold(False)
    purge(aged)
    assert sql.execute(known, [tenant]).fetchall() == [("198.51.100.2",)]


def test_a_purged_log_still_verifies_and_proves(
    aged: ServerThread, admin: AuditClient, clock: Clock
) -> None:
    first = record(admin, "doc.edit")
    kept = record(admin, "user.login", "authentication")
    checkpoint_before = admin.get_checkpoint(fresh=True)
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(11)
    purge(aged)

    verified = admin.verify_log()
    assert verified.ok, verified
    with pytest.raises(NotFoundError) as gone:
        admin.get_inclusion_proof(seq=first, tree_size=checkpoint_before.tree_size)
    assert gone.value.reason == "PURGED"
    tomb = admin.get_inclusion_proof(
        seq=first, tree_size=checkpoint_before.tree_size, include_purged=True
    )
    assert tomb.purged and not tomb.record
    root = parse_checkpoint(checkpoint_before.note.split("\n\n", 1)[0] + "\n").root_hash
    verify_inclusion(
        leaf_index=first - 1,
        tree_size=tomb.tree_size,
        leaf=tomb.leaf_hash,
        proof=list(tomb.proof),
        root=root,
    )
    proven = admin.get_inclusion_proof(seq=kept, tree_size=checkpoint_before.tree_size)
    assert leaf_hash(proven.record) == proven.leaf_hash and not proven.purged
    verify_inclusion(
        leaf_index=kept - 1,
        tree_size=proven.tree_size,
        leaf=proven.leaf_hash,
        proof=list(proven.proof),
        root=root,
    )
    consistency = admin.get_consistency_proof(old_size=checkpoint_before.tree_size)
    assert consistency.new_size >= checkpoint_before.tree_size


def test_a_stream_cursor_inside_the_purged_range_is_refused(
    aged: ServerThread, admin: AuditClient, clock: Clock
) -> None:
    first = record(admin, "doc.edit")
    record(admin, "doc.edit")
    kept = record(admin, "user.login", "authentication")
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(11)
    purge(aged)
    beats: list[int] = []
    with pytest.raises(RpcFailedError) as refused:
        # It had `first`, and missed the next.
        next(admin.stream(after_seq=first, on_heartbeat=beats.append))
    assert refused.value.reason == "PURGED"
    # Checked with the first read of the table (a purge as the stream starts
    # is seen too), which follows the first heartbeat.
    assert beats == [first]
    assert f"seq {kept}" in str(refused.value)
    assert refused.value.metadata == {"resume_after_seq": str(kept - 1)}  # for a program
    stream = admin.stream(after_seq=kept - 1)
    assert next(stream).seq == kept
    stream.close()
    # From the beginning (0) is everything kept: no cursor had anything removed.
    from_the_start = admin.stream(after_seq=0)
    assert (first, next(from_the_start).seq) == (1, kept)
    from_the_start.close()


def _interleaved_removal(aged: ServerThread, admin: AuditClient, clock: Clock) -> list[int]:
    """Seven events, of which a rule keeps the first, third and sixth (logins)
    and the default removes the others; their seqs."""
    seqs = [
        record(admin, "user.login", "authentication")
        if n in (0, 2, 5)
        else record(admin, "doc.edit")
        for n in range(7)
    ]
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(11)
    purge(aged)
    return seqs


def test_a_stream_that_asks_is_told_of_what_retention_removed_between_kept_events(
    aged: ServerThread, admin: AuditClient, clock: Clock
) -> None:
    """Rules leave kept events between removed ones, where a cursor's next
    event may be kept though later ones were removed: a stream that asks
    (announce_purged) is told how many were removed, before the events after
    them, and a cursor whose next event was removed is not refused."""
    seqs = _interleaved_removal(aged, admin, clock)
    ranges: list[Any] = []
    stream = admin.stream(after_seq=seqs[0], on_purged=ranges.append)  # the next was removed
    assert [next(stream).seq for _ in range(2)] == [seqs[2], seqs[5]]
    stream.close()
    told = [(r.after_seq, r.through_seq, r.count) for r in ranges]
    assert told == [(seqs[0], seqs[2] - 1, 1), (seqs[2], seqs[5] - 1, 2)]


def test_a_stream_from_a_time_is_told_of_what_retention_removed_since_then(
    aged: ServerThread, admin: AuditClient, clock: Clock
) -> None:
    """An auditor tailing from 09:00 who asks to be told of removals learns
    that events received after 09:00 were removed before the first one kept
    since. Tombstones keep no time, so the range runs from the last event kept
    from before that time, where GetReceivedRange starts the period too; the
    stream starts there (its first heartbeat), and sends the same events."""
    before = record(admin, "user.login", "authentication")
    clock.advance(seconds=60)
    since = clock()
    record(admin, "doc.edit")
    record(admin, "doc.edit")
    kept = record(admin, "user.login", "authentication")
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(11)
    purge(aged)
    ranges: list[Any] = []
    beats: list[int] = []
    stream = admin.stream(since=since, on_purged=ranges.append, on_heartbeat=beats.append)
    assert next(stream).seq == kept
    stream.close()
    assert [(r.after_seq, r.through_seq, r.count) for r in ranges] == [(before, kept - 1, 2)]
    assert beats == [before]  # a reconnect from it is told of the range again
    assert admin.get_received_range(since=since).first_seq == before + 1
    # Not asked, nothing changes: the first event kept since, and its cursor.
    beats.clear()
    quiet = admin.stream(since=since, on_heartbeat=beats.append)
    assert next(quiet).seq == kept
    quiet.close()
    assert beats == [kept - 1]


def test_sealtrail_tail_says_on_stderr_what_retention_removed(
    aged: ServerThread, admin: AuditClient, clock: Clock, tenant: str
) -> None:
    """`sealtrail tail` asks to be told, and says where events were removed on
    stderr: its stdout stays one JSON event a line, for whatever reads it."""
    seqs = _interleaved_removal(aged, admin, clock)
    tail = subprocess.Popen(
        [str(Path(sys.executable).parent / "sealtrail"), "tail", "--from-seq", str(seqs[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SEALTRAIL_SERVER": aged.target, "SEALTRAIL_TOKEN": aged.token(tenant)},
    )
    assert tail.stdout is not None and tail.stderr is not None
    try:
        shown = [json.loads(tail.stdout.readline()) for _ in range(2)]
        told = [tail.stderr.readline() for _ in range(2)]
    finally:
        stop(tail)
        tail.stdout.close()
        tail.stderr.close()
    assert [int(event["seq"]) for event in shown] == [seqs[2], seqs[5]]
    assert told == [
        f"retention removed 1 event after seq {seqs[0]}, up to seq {seqs[2] - 1}\n",
        f"retention removed 2 events after seq {seqs[2]}, up to seq {seqs[5] - 1}\n",
    ]


def test_a_count_of_removals_leaves_out_the_events_sent(
    aged: ServerThread, admin: AuditClient, clock: Clock, tenant: str
) -> None:
    """An event a stream read before a purge removed it is sent, so it is not
    counted as removed too."""
    seqs = _interleaved_removal(aged, admin, clock)

    async def counts(sent: list[int]) -> list[int]:
        async with aged.database.connection(tenant) as conn:
            return await purged_between(
                conn, tenant, after_seq=seqs[0], through_seq=seqs[6], sent=sent
            )

    assert aged.run(counts([])) == [4]
    # seqs[5] was kept; seqs[3] and seqs[4] are sent though removed.
    assert aged.run(counts([seqs[3], seqs[4], seqs[5]])) == [1, 0, 0, 1]
    assert aged.run(counts([seqs[2]])) == [1, 3]


@pytest.mark.parametrize("counted_every", [1, 1000])
def test_removals_are_announced_between_the_events_they_lie_between(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    counted_every: int,
) -> None:
    """Each range covers exactly the gap between two events sent, and comes
    between them, however many events are read before a count (here each, or
    all at once: the server runs in this process)."""
    seqs = _interleaved_removal(aged, admin, clock)
    monkeypatch.setattr(stream_api, "_ANNOUNCED_EVERY", counted_every)
    stub = audit_service_pb2_grpc.AuditLogServiceStub(admin._channel)
    request = audit_service_pb2.StreamEventsRequest(
        after_seq=seqs[0], max_events_per_message=1, announce_purged=True
    )
    # Well within the 5 s an idle stream waits for its next heartbeat.
    call = stub.StreamEvents(request, metadata=admin._metadata, timeout=3)
    seen: list[tuple[Any, ...]] = []
    for message in call:
        if message.HasField("purged"):
            purged = message.purged
            seen.append(("purged", purged.after_seq, purged.through_seq, purged.count))
        elif message.HasField("events"):
            seen += [("event", event.seq) for event in message.events.events]
        elif len(seen) > 0:  # the caught-up heartbeat, not the first
            seen.append(("heartbeat", message.heartbeat.cursor))
            break
    call.cancel()
    # Once caught up, at once, a heartbeat at the end of what the last range
    # covered: a client reconnecting from it is not told of that range again.
    # That is the log's end, the stream's own access record, which it does not send.
    [subscribed] = admin.query(build_filter(actions="audit_log.streamed"), limit=1)
    assert seen[-1] == ("heartbeat", subscribed.seq)
    assert max(s for kind, s, *_ in seen if kind == "event") == subscribed.seq - 1
    policy_updated = seqs[6] + 1
    assert seen[:6] == [
        ("purged", seqs[0], seqs[2] - 1, 1),
        ("event", seqs[2]),
        ("purged", seqs[2], seqs[5] - 1, 2),
        ("event", seqs[5]),
        ("purged", seqs[5], policy_updated - 1, 1),
        ("event", policy_updated),
    ]


def test_the_purge_job_ends_its_session_if_its_process_stops_answering(
    aged: ServerThread,
) -> None:
    """A purging process that hangs must not hold the job's lock, or a batch's
    lock on a policy (which a legal hold waits for), until TCP gives up."""
    assert aged.service.purger is not None
    job = aged.service.purger._job
    assert aged.run(session_timeouts(job)) in (["1min", "10min"], ["1min"])


def test_a_legal_hold_stops_the_purge(aged: ServerThread, admin: AuditClient, clock: Clock) -> None:
    seq = record(admin, "doc.edit")
    with pytest.raises(InvalidArgumentError, match="reason"):
        admin.set_legal_hold(True)
    placed = admin.set_legal_hold(True, reason="Case 2026-114")
    assert placed.legal_hold.on and placed.event_id
    admin.set_retention_policy(10)
    clock.advance(11)
    purge(aged)
    assert (seq, "doc.edit") in recorded(admin)
    released = admin.set_legal_hold(False)
    assert not released.legal_hold.on
    actions = [e.action for e in admin.query(build_filter(actions="retention.*"))]
    assert {"retention.legal_hold_placed", "retention.legal_hold_released"} <= set(actions)
    purge(aged)
    assert (seq, "doc.edit") not in recorded(admin)


def test_an_event_received_exactly_at_its_cutoff_is_kept_until_past_it(
    aged: ServerThread, admin: AuditClient, clock: Clock
) -> None:
    """A rule of N days removes what was received before the pass's time less
    N days, not at it: the cutoff is exclusive (docs/retention.md)."""
    seq = record(admin, "doc.edit")
    admin.set_retention_policy(30)
    clock.advance(30)  # the event is now exactly 30 days old
    purge(aged)
    assert (seq, "doc.edit") in recorded(admin)
    clock.advance(seconds=0.000001)
    purge(aged)
    assert (seq, "doc.edit") not in recorded(admin)


def test_a_hold_placed_again_or_released_when_off_changes_and_records_nothing(
    aged: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Placing the hold that is on, or releasing none, answers the hold with
    no event id and records nothing (a retry finds its change so); a new
    reason is a placement of its own, recorded with the caller's token and
    the reason it replaces."""
    holds = ["retention.legal_hold_placed", "retention.legal_hold_released"]
    tokens = [aged.token(tenant), aged.token(tenant)]  # two admins
    first, second = (token_id_of(sql, token) for token in tokens)
    with (
        AuditClient(aged.target, token=tokens[0]) as admin,
        AuditClient(aged.target, token=tokens[1]) as other,
    ):
        assert admin.set_legal_hold(True, reason="Case 1").event_id
        again = admin.set_legal_hold(True, reason="Case 1")
        assert again.legal_hold.on and again.legal_hold.reason == "Case 1"
        assert not again.event_id
        assert other.set_legal_hold(True, reason="Case 2").event_id
        assert admin.set_legal_hold(False).event_id
        none = admin.set_legal_hold(False)
        assert not none.legal_hold.on and not none.event_id
        changes = [
            (e.action, e.actor.id, json.dumps(dict(e.details), sort_keys=True))
            for e in admin.query(build_filter(actions=holds), order="oldest")
        ]
    assert changes == [
        (holds[0], first, '{"reason": "Case 1"}'),
        (holds[0], second, '{"previous_reason": "Case 1", "reason": "Case 2"}'),
        (holds[1], first, '{"previous_reason": "Case 2"}'),
    ]


def test_a_tenant_whose_purge_fails_stops_no_other_tenants_purge(
    aged: ServerThread,
    tenant: str,
    sql: psycopg.Connection[Any],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A purge that fails for one tenant (here its event's tombstone is already
    stored: the log was tampered with) is logged, and the pass goes on with
    the tenants after it."""
    failing, other = f"{tenant}-a", f"{tenant}-b"  # in this order in the pass
    with contextlib.ExitStack() as stack:
        clients = {
            t: stack.enter_context(AuditClient(aged.target, token=aged.token(t)))
            for t in (failing, other)
        }
        seqs = {t: record(client, "doc.edit") for t, client in clients.items()}
        for client in clients.values():
            client.set_retention_policy(10)
        sql.execute(
            "INSERT INTO tree_nodes (tenant_id, level, idx, hash) VALUES (%s, 0, %s, sha256('x'))",
            [failing, seqs[failing] - 1],
        )
        clock.advance(11)
        with caplog.at_level(logging.ERROR, logger=purger_module.__name__):
            done = purge(aged)
        assert [p.tenant_id for p in done if p.tenant_id in clients] == [other]
        assert f"the pass over {failing} failed" in caplog.text
        assert (seqs[failing], "doc.edit") in recorded(clients[failing])
        assert (seqs[other], "doc.edit") not in recorded(clients[other])
        clients[failing].set_retention_policy("forever")  # later passes leave it alone


def test_a_summary_left_unreadable_stops_no_other_tenants_purge(
    aged: ServerThread,
    admin: AuditClient,
    tenant: str,
    sql: psycopg.Connection[Any],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A purge summary left to record that cannot be read (written by another
    release, restored in part) is that tenant's fault alone: logged, and the
    pass goes on with every tenant, that one's alert origins too."""
    unreadable = f"{tenant}-0"  # before the tenant in the pass
    purge_id = "00000000-0000-4000-8000-000000000001"
    sql.execute(
        "INSERT INTO retention_pending_purges (tenant_id, purge_id, summary, mac, updated_at)"
        " VALUES (%s, %s, '{}', %s, now())",
        [unreadable, purge_id, SEAL.seal(unreadable, purge_id, {})],
    )
    try:
        seq = record(admin, "doc.edit")
        admin.set_retention_policy(10)
        clock.advance(11)
        with caplog.at_level(logging.ERROR, logger=purger_module.__name__):
            done = purge(aged)
        assert f"the pass over {unreadable} failed" in caplog.text
        assert [p.tenant_id for p in done if p.tenant_id in (tenant, unreadable)] == [tenant]
        assert (seq, "doc.edit") not in recorded(admin)
    finally:
        sql.execute("DELETE FROM retention_pending_purges WHERE tenant_id = %s", [unreadable])


def _hide_as_purged(
    sql: psycopg.Connection[Any],
    tenant: str,
    seq: int,
    purge_id: str,
    summary: dict[str, Any],
    *,
    mac: bytes,
) -> None:
    """As a superuser would hide event `seq` as removed by retention: the
    event deleted, its leaf kept as a tombstone, and a summary of a purge not
    yet recorded beside it, with `mac` as its seal."""
    with sql.transaction():
        sql.execute("SET LOCAL session_replication_role = replica")  # past the refusal
        [(leaf,)] = sql.execute(
            "DELETE FROM events WHERE tenant_id = %s AND seq = %s RETURNING leaf_hash",
            [tenant, seq],
        ).fetchall()
        sql.execute(
            "INSERT INTO tree_nodes (tenant_id, level, idx, hash) VALUES (%s, 0, %s, %s)",
            [tenant, seq - 1, leaf],
        )
        sql.execute(
            "INSERT INTO retention_pending_purges (tenant_id, purge_id, summary, mac, updated_at)"
            " VALUES (%s, %s, %s, %s, now())",
            [tenant, purge_id, json.dumps(summary), mac],
        )


def test_a_summary_the_service_did_not_seal_is_never_recorded_nor_counted(
    aged: ServerThread,
    admin: AuditClient,
    tenant: str,
    sql: psycopg.Connection[Any],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A superuser hid an event as removed (deleted it, kept its leaf as a
    tombstone) and wrote a summary of a purge beside it: VerifyLog counted it,
    and the next pass recorded it as retention's own event, a purge that never
    ran (helper-84). Unsealed, it counts for nothing, is not recorded, and the
    tenant is not purged while it is there (its row would be replaced)."""
    seqs = [record(admin, "doc.edit") for _ in range(3)]
    admin.set_retention_policy(10)
    summary = {"purged": 1, "first_seq": seqs[0], "last_seq": seqs[0], "rules": []}
    _hide_as_purged(sql, tenant, seqs[0], str(uuid.uuid4()), summary, mac=bytes(32))
    try:
        verified = admin.verify_log()
        assert verified.failure.reason == "REMOVALS_UNACCOUNTED"
        clock.advance(11)
        with caplog.at_level(logging.ERROR, logger=purger_module.__name__):
            done = purge(aged)
        assert "does not bear the service's seal" in caplog.text
        assert tenant not in {p.tenant_id for p in done}
        purges = admin.query(build_filter(actions="retention.purged"))
        assert list(purges) == []
        assert [seq for seq, _ in recorded(admin)] == seqs[1:]  # expired, but not purged
        # Said again at each pass, not at every process's hourly upkeep.
        caplog.clear()
        purger = aged.service.purger
        assert purger is not None
        with caplog.at_level(logging.ERROR, logger=purger_module.__name__):
            _until(lambda: aged.run(purger.keep_up()), "the job stayed held")
            assert "does not bear the service's seal" not in caplog.text
            purge(aged)
        assert "does not bear the service's seal" in caplog.text
    finally:
        sql.execute("DELETE FROM retention_pending_purges WHERE tenant_id = %s", [tenant])


def test_a_sealed_summary_copied_back_after_its_record_counts_for_nothing(
    aged: ServerThread,
    admin: AuditClient,
    tenant: str,
    sql: psycopg.Connection[Any],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each version of a summary a pass writes is sealed. One copied back
    after its purge was recorded (read during the pass, or from a backup) made
    room in VerifyLog's count for an event hidden as removed, for good: the
    next pass could not record it again, and left it (helper-87). A summary of
    a purge the log records counts for nothing, and the pass says so."""
    seqs = [record(admin, "doc.edit") for _ in range(6)]
    admin.set_retention_policy(10)
    clock.advance(11)
    kept = record(admin, "doc.edit")
    purge(aged)
    [(key, details)] = sql.execute(
        "SELECT idempotency_key, record::jsonb -> 'details' FROM events"
        " WHERE tenant_id = %s AND action = 'retention.purged'",
        [tenant],
    ).fetchall()
    assert details["purged"] == len(seqs)
    purge_id = key.removeprefix("retention.purged:")
    earlier = {**details, "purged": 3, "last_seq": seqs[2]}  # as after its first batch of 3
    earlier["rules"] = {"default": {**details["rules"]["default"], "purged": 3}}
    _hide_as_purged(sql, tenant, kept, purge_id, earlier, mac=SEAL.seal(tenant, purge_id, earlier))
    try:
        assert admin.verify_log().failure.reason == "REMOVALS_UNACCOUNTED"
        with caplog.at_level(logging.ERROR, logger=purger_module.__name__):
            purge(aged)
        assert "differs from its record in the log" in caplog.text
        assert admin.verify_log().failure.reason == "REMOVALS_UNACCOUNTED"  # still
    finally:
        sql.execute("DELETE FROM retention_pending_purges WHERE tenant_id = %s", [tenant])


# The tables each tenant of the erasure test holds rows in before it is erased.
_HELD_BY_EVERY_TENANT = [
    *TENANT_TABLES,
    "sinks",
    "alert_rules",
    "alert_cursors",
    "action_catalog",
]


def _add_a_sink_and_an_alert_rule(client: AuditClient) -> None:
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    sink = build_sink("siem", "webhook", url="http://127.0.0.1:9/", secrets=[secret], paused=True)
    client.create_sink(sink)
    client.create_alert_rule(
        build_alert_rule("keys", "match", filter=build_filter(actions="api_key.create"))
    )


_NEEDS_A_DEFINITION = "deployment_sink_starts"


def _fill_what_the_calls_leave_empty(sql: psycopg.Connection[Any], tenant: str) -> None:
    """A row in each table the calls above leave empty for the tenant (a dead
    letter, a replay, what an alert rule learned, a deleted rule's tombstone, a
    purge's summary and mark, a threshold's kept window, a checkpoint row set
    aside, a console sign-in),
    written directly: an erasure must remove those too, and a count of zero
    after it proves that only where there was a row before (helper-85)."""
    [(sink,)] = sql.execute("SELECT id FROM sinks WHERE tenant_id = %s", [tenant]).fetchall()
    [(rule,)] = sql.execute("SELECT id FROM alert_rules WHERE tenant_id = %s", [tenant]).fetchall()
    for statement, params in [
        (
            "INSERT INTO sink_dead_letters (tenant_id, sink_id, id, first_seq, last_seq,"
            " event_count, http_status, error, created_at)"
            " VALUES (%s, %s, gen_random_uuid(), 1, 1, 1, 500, 'refused', now())",
            [tenant, sink],
        ),
        (
            "INSERT INTO sink_replays (tenant_id, sink_id, id, first_seq, last_seq, cursor_seq,"
            " created_at) VALUES (%s, %s, gen_random_uuid(), 1, 1, 0, now())",
            [tenant, sink],
        ),
        (
            "INSERT INTO alert_known_ips (tenant_id, rule_id, actor_id, ip, first_seen_at)"
            " VALUES (%s, %s, 'alice', '198.51.100.1', now())",
            [tenant, rule],
        ),
        (
            "INSERT INTO alert_known_countries (tenant_id, rule_id, actor_id, country,"
            " first_seen_at) VALUES (%s, %s, 'alice', 'NL', now())",
            [tenant, rule],
        ),
        (
            "INSERT INTO retention_pending_purges (tenant_id, purge_id, summary, updated_at)"
            " VALUES (%s, gen_random_uuid(), '{}', now())",
            [tenant],
        ),
        (
            "INSERT INTO retention_marks (tenant_id, selection, removed_before)"
            " VALUES (%s, 'test', now())",
            [tenant],
        ),
        (
            "INSERT INTO alert_rule_tombstones (tenant_id, rule_id, counted_alert_seq)"
            " VALUES (%s, gen_random_uuid(), 0)",
            [tenant],
        ),
        (
            "INSERT INTO alert_rule_windows (tenant_id, rule_id, condition, start_seq,"
            " cursor_seq, newest, observed) VALUES (%s, %s, '{}', 0, 0, 0, 1)",
            [tenant, rule],
        ),
        (
            "INSERT INTO alert_rule_window_groups (tenant_id, rule_id, group_key, times, seen)"
            " VALUES (%s, %s, 'alice', int8send(0), 1)",
            [tenant, rule],
        ),
        (  # a console session rechecked with the identity provider (migration 0058)
            "INSERT INTO console_sessions (tenant_id, digest, token_id, token_role, subject,"
            " token_expires_at, confirmed_at, next_check_at, sealed)"
            " VALUES (%s, sha256('token'), gen_random_uuid(), 'reader', 'alice',"
            " now() + interval '1 hour', now(), now(), 'sealed')",
            [tenant],
        ),
        (  # a checkpoint row the signer set aside as no key's (migration 0067)
            "INSERT INTO checkpoints_refused (tenant_id, tree_size, root_hash, note, key_name,"
            " key_id, issued_at, why) VALUES (%s, 1, sha256('root'), 'note', 'forged',"
            " sha256('key'), now(), 'a test row')",
            [tenant],
        ),
        (  # a console sign-in under way (migration 0057)
            "INSERT INTO console_sign_ins (tenant_id, digest, stage, expires_at, binding)"
            " VALUES (%s, sha256('state'), 'begun', now() + interval '10 minutes',"
            " sha256('cookie'))",
            [tenant],
        ),
    ]:
        sql.execute(statement, params)


def test_erasure_leaves_a_receipt_and_no_row(
    aged: ServerThread,
    sql: psycopg.Connection[Any],
    tenant: str,
    migrated_database_url: str,
    request: pytest.FixtureRequest,
) -> None:
    other = f"{tenant}-other"
    token = aged.token(tenant)
    # Another server, which trusts a token for an hour once it has seen it.
    elsewhere = ServerThread(migrated_database_url, token_cache_seconds=3600)
    request.addfinalizer(elsewhere.close)
    with (
        AuditClient(aged.target, token=token) as doomed,
        AuditClient(elsewhere.target, token=token) as trusting,
        AuditClient(aged.target, token=aged.token(other)) as bystander,
    ):
        for client in (doomed, bystander):
            client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(5)])
            client.get_checkpoint(fresh=True)
            client.set_redaction_mode("hmac")
            client.set_retention_policy("1y")
            _add_a_sink_and_an_alert_rule(client)
            client.set_action_description("doc.edit", "A document was edited")
        _fill_what_the_calls_leave_empty(sql, tenant)
        doomed_rows = rows_of(sql, tenant)
        assert all(doomed_rows[table] for table in _HELD_BY_EVERY_TENANT), doomed_rows
        # A row in every table it could have; but a deployment sink's start,
        # which needs a definition of the whole deployment that every other
        # test's server on this database would take up: test_deployment_sink_pass
        # erases a tenant holding one, on a database of its own.
        assert all(n for table, n in doomed_rows.items() if table != _NEEDS_A_DEFINITION), (
            doomed_rows
        )
        # Signed up to its end: a background checkpointer (any test server's,
        # every 10 s) then has nothing of it to sign while the test compares.
        bystander.get_checkpoint(fresh=True)
        bystander_rows = rows_of(sql, other)
        trusting.get_checkpoint()  # `elsewhere` now trusts the token
        trusting.get_consistency_proof(old_size=1, new_size=5)  # and knows the log reaches 5
        first_page = trusting.query_page(page_size=1)
        trusting.get_event(first_page.events[0].id)  # read by key: recorded, for a window

        with pytest.raises(InvalidArgumentError, match="confirm_tenant_id"):
            doomed.erase_tenant(other)
        doomed.set_legal_hold(True, reason="pending review")
        with pytest.raises(RpcFailedError) as held:
            doomed.erase_tenant(tenant)
        assert held.value.reason == "LEGAL_HOLD"
        doomed.set_legal_hold(False)
        # `elsewhere` appends last, so its appender keeps the head it wrote
        # (ADR 0024) when the erasure removes it.
        trusting.record(build_event(action="doc.edit", actor_id="u"))

        receipt = doomed.erase_tenant(tenant)
        assert receipt.tenant_id == tenant and receipt.final_tree_size > 5
        note = receipt.final_checkpoint.note
        checkpoint = parse_checkpoint(note.split("\n\n", 1)[0] + "\n")
        assert (checkpoint.tree_size, checkpoint.root_hash) == (
            receipt.final_tree_size,
            receipt.final_root_hash,
        )
        assert receipt.removed_rows["events"] == receipt.final_tree_size
        assert set(receipt.removed_rows) == set(tenant_tables(sql))  # every table, no less
        assert not any(rows_of(sql, tenant).values()), rows_of(sql, tenant)
        kept = sql.execute(
            "SELECT final_tree_size, final_checkpoint FROM tenant_erasures WHERE tenant_id = %s",
            [tenant],
        ).fetchone()
        assert kept == (receipt.final_tree_size, note)

        # The id is retired: its token is refused, a server that still trusts
        # it cannot append to the tenant, and no new token is made.
        with pytest.raises(UnauthenticatedError):
            doomed.record(build_event(action="doc.edit", actor_id="u"))
        with pytest.raises(RpcFailedError) as retired:
            trusting.record(build_event(action="doc.edit", actor_id="u"))
        assert retired.value.reason == "TENANT_ERASED"
        with pytest.raises(RpcFailedError) as gone:  # its hashes gone: erased, not tampered with
            trusting.get_consistency_proof(old_size=1, new_size=5)
        assert gone.value.reason == "TENANT_ERASED"
        with pytest.raises(RpcFailedError) as unproven:  # not "no such event"
            trusting.get_inclusion_proof(seq=1, tree_size=5)
        assert unproven.value.reason == "TENANT_ERASED"
        with pytest.raises(RpcFailedError) as ended:  # not an empty last page
            trusting.query_page(page_size=1, page_token=first_page.next_page_token)
        assert ended.value.reason == "TENANT_ERASED"
        # Nor an empty log, an unknown event, or a size beyond the log.
        for asked in (
            trusting.get_checkpoint,
            functools.partial(trusting.get_checkpoint, fresh=True),
            functools.partial(trusting.get_checkpoint, tree_size=5),
            functools.partial(trusting.get_inclusion_proof, seq=1),
            functools.partial(trusting.get_inclusion_proof, event_id=first_page.events[0].id),
            functools.partial(trusting.get_event, first_page.events[0].id),
            functools.partial(trusting.get_consistency_proof, old_size=1, new_size=10**6),
            # nor a tenant with no settings, sinks or rules
            trusting.get_retention_policy,
            functools.partial(trusting.preview_retention_policy, "30d"),
            lambda: list(trusting.list_purged_leaves()),
            trusting.get_tenant_settings,
            trusting.list_sinks,
            trusting.list_alert_rules,
        ):
            with pytest.raises(RpcFailedError) as refused:
                asked()
            assert refused.value.reason == "TENANT_ERASED", asked
        with pytest.raises(Exception, match="erased"):
            aged.token(tenant, Role.ADMIN)
        # Nothing of the other tenant changed, and its log still verifies.
        assert rows_of(sql, other) == bystander_rows
        assert bystander.verify_log().ok


def test_the_offline_verifier_checks_a_purged_log(
    aged: ServerThread, admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    first = record(admin, "doc.edit")
    kept = record(admin, "user.login", "authentication")
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(11)
    purge(aged)
    key = admin.get_verifier_keys()[0].text

    counting = _CountingProofs(admin)
    written = write_bundle(counting, tmp_path / "bundle")
    shutil.copytree(tmp_path / "bundle", tmp_path / "hidden")
    assert written.complete and written.purged >= 1
    assert counting.proofs_asked == 0  # one Export, ListPurgedLeaves, proofs computed here
    assert json.loads((tmp_path / "bundle" / "bundle.json").read_text())["version"] == 2
    verified = verify_bundle(tmp_path / "bundle", key=key)
    assert (verified.purged, verified.count) == (written.purged, written.count)
    assert verified.first_seq == 1 and verified.last_seq == verified.tree_size
    # Every key given is trusted (a log whose key was rotated), and only those.
    other = generate_signer_key("sealtrail.local/log").verifier.text()
    runner = CliRunner()
    both = runner.invoke(
        cli.main, ["verify", str(tmp_path / "bundle"), "--key", other, "--key", key]
    )
    assert (both.exit_code, both.output.startswith("OK: ")) == (0, True), both.output
    alone = runner.invoke(cli.main, ["verify", str(tmp_path / "bundle"), "--key", other])
    assert alone.exit_code == 1 and "no signature by a known key" in alone.output

    # A purged leaf is as committed as a record: change one and it is named.
    purged = tmp_path / "bundle" / "purged.ndjson"
    lines = purged.read_text().splitlines()
    entry = json.loads(lines[0])
    assert entry["seq"] == first
    entry["leaf_hash"] = base64.b64encode(bytes(32)).decode()
    purged.write_text("\n".join([json.dumps(entry), *lines[1:]]) + "\n")
    with pytest.raises(BundleError, match=f"purged seq {first}"):
        verify_bundle(tmp_path / "bundle", key=key)

    # A kept event passed off as removed (its record and proof moved to the
    # removed leaves, the counts mended) proves as well as a purged one; the
    # log's retention records count one removal fewer.
    _hide_as_removed(tmp_path / "hidden", kept)
    with pytest.raises(BundleError, match="removed outside retention"):
        verify_bundle(tmp_path / "hidden", key=key)


def test_a_tombstone_tampered_with_in_the_database_is_caught_by_the_offline_verifier(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    tmp_path: Path,
) -> None:
    """ListPurgedLeaves answers the tombstones as the database holds them: one
    a superuser rewrote is listed as it is (the server proves nothing of a
    listing), but a bundle's leaves must lead to the signed root: the bundle
    written from it, complete or a range, fails verification (`verify_bundle`
    and `sealtrail verify`) at the first leaf whose proof holds the forged
    hash (helper-242); the server proves none of the leaves whose paths hold
    it, and the writer names them (helper-298)."""
    purged = [record(admin, "doc.edit") for _ in range(3)]
    assert purged == [1, 2, 3]
    record(admin, "user.login", "authentication")
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(11)
    purge(aged)
    size = admin.get_checkpoint(fresh=True).tree_size
    forged = hashlib.sha256(b"forged").digest()
    with sql.transaction():
        sql.execute("SET LOCAL session_replication_role = replica")
        sql.execute(
            "UPDATE tree_nodes SET hash = %s WHERE tenant_id = %s AND level = 0 AND idx = %s",
            [forged, tenant, purged[1] - 1],
        )
    listed = {leaf.seq: leaf.leaf_hash for leaf in admin.list_purged_leaves(tree_size=size)}
    assert listed[purged[1]] == forged  # served as the database holds it
    key = admin.get_verifier_keys()[0].text
    for name, seq_range in (("complete", None), ("range", SeqRange(purged[0], purged[2]))):
        written = write_bundle(admin, tmp_path / name, seq_range=seq_range)
        # The server proves no leaf whose path holds the forged hash (their
        # proofs lead to another root than the checkpoint's, helper-298): the
        # first is seq 1's, for which seq 2's leaf is the sibling.
        caught = "seq 1: missing"
        with pytest.raises(BundleError, match=re.escape(caught)):
            verify_bundle(tmp_path / name, key=key)
        checked = CliRunner().invoke(cli.main, ["verify", str(tmp_path / name), "--key", key])
        assert (checked.exit_code, caught in checked.output) == (1, True), checked.output
        assert list(written.gaps) == purged[:2]  # the writer said so
    assert not admin.verify_log().ok  # as VerifyLog, online, finds


def test_a_purged_event_put_back_for_a_kept_one_hidden_is_caught(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    tmp_path: Path,
) -> None:
    """As many leaves removed as retention stated, but not the ones
    (helper-123): a superuser puts a purged event back from a backup and hides
    a kept one as removed in exchange. Each statement's digest of which leaves
    it removed tells, online and offline."""
    purged = [record(admin, "doc.edit") for _ in range(3)]
    kept = record(admin, "user.login", "authentication")
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    with sql.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        [backup] = cursor.execute(
            "SELECT * FROM events WHERE tenant_id = %s AND seq = %s", [tenant, purged[0]]
        ).fetchall()
    del backup["search_doc"]  # generated
    clock.advance(11)
    purge(aged)
    assert admin.verify_log().ok
    with sql.transaction():
        sql.execute("SET LOCAL session_replication_role = replica")  # past the refusal
        sql.execute(
            sqlc.SQL("INSERT INTO events ({}) VALUES ({})").format(
                sqlc.SQL(", ").join(map(sqlc.Identifier, backup)),
                sqlc.SQL(", ").join(sqlc.Placeholder() * len(backup)),
            ),
            [Jsonb(v) if isinstance(v, dict) else v for v in backup.values()],
        )
        sql.execute(
            "DELETE FROM tree_nodes WHERE tenant_id = %s AND level = 0 AND idx = %s",
            [tenant, purged[0] - 1],
        )
        [(leaf,)] = sql.execute(
            "DELETE FROM events WHERE tenant_id = %s AND seq = %s RETURNING leaf_hash",
            [tenant, kept],
        ).fetchall()
        sql.execute(
            "INSERT INTO tree_nodes (tenant_id, level, idx, hash) VALUES (%s, 0, %s, %s)",
            [tenant, kept - 1, leaf],
        )
    swapped = "as many as retention's statements account for, but not the ones they name"
    verified = admin.verify_log()
    assert verified.failure.reason == "REMOVALS_UNACCOUNTED"
    assert swapped in verified.failure.message
    # Offline: its leaf is proven as purged, and the bundle's ledger tells.
    write_bundle(admin, tmp_path / "bundle")
    with pytest.raises(BundleError, match=swapped):
        verify_bundle(tmp_path / "bundle", key=admin.get_verifier_keys()[0].text)


def _passes_before_exports_read(
    aged: ServerThread,
    monkeypatch: pytest.MonkeyPatch,
    *,
    times: int,
    then: Callable[[], None] = lambda: None,
) -> list[list[Any]]:
    """The next `times` Exports each overtaken by a retention pass between
    signing their checkpoint and reading their first page: the pass records
    itself after that checkpoint. `then` runs after each pass. What each
    pass removed, in order."""
    real, passes = export_api.stream_events, []
    assert aged.service.purger is not None
    purger = aged.service.purger

    async def overtaken(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if len(passes) < times:
            passes.append(await purger.run_once())
            then()
        async with contextlib.aclosing(real(*args, **kwargs)) as events:
            async for event in events:
                yield event

    monkeypatch.setattr(export_api, "stream_events", overtaken)  # the server runs here
    return passes


def _removed_of(tenant: str, passes: list[list[Any]]) -> list[int]:
    """How many events of `tenant` each pass removed."""
    return [sum(p.count for p in purged if p.tenant_id == tenant) for purged in passes]


def test_an_export_signs_how_many_seqs_of_its_range_retention_removed(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    tmp_path: Path,
    migrated_database_url: str,
) -> None:
    """An unfiltered export of seqs a..d with c purged read "unfiltered", 3 rows
    of a range of 4, exactly as one missing a row for any other reason would:
    the auditor could not tell, offline, a purge from a row taken out. The
    statement signs how many seqs of its range retention had removed as the
    export read them; `check_export` says it, and holds rows + removed to the
    range's size for an unfiltered export."""
    from sealtrail import ExportMismatchError, check_export

    a, b = record(admin, "doc.edit"), record(admin, "doc.edit")
    c, d = record(admin, "rag.index.rebuild"), record(admin, "doc.edit")
    assert [a, b, c, d] == list(range(a, a + 4))
    admin.set_retention_policy("forever", action_prefixes={"rag.index.*": 20})
    clock.advance(21)
    [result] = [r for r in purge(aged) if r.tenant_id == tenant]
    assert result.count == 1
    key = admin.get_verifier_keys()[0].text

    admin.export(tmp_path / "range.csv", format="csv", manifest_file=True, first_seq=a, last_seq=d)
    kept = tmp_path / "range.csv.manifest.json"
    found = check_export(kept, key=key)
    assert (found.rows, found.removed, found.statement.removed_count) == (3, 1, 1)
    assert found.selected == f"seqs {a}..{d}, unfiltered, 1 removed by retention"
    manifest = json.loads(kept.read_text())
    assert manifest["removed_count"] == 1
    for edited in ({**manifest, "removed_count": 0},
                   {k: v for k, v in manifest.items() if k != "removed_count"}):  # fmt: skip
        kept.write_text(json.dumps(edited))
        signs = r"removed_count \S+ where the statement signs 1"
        with pytest.raises(ExportMismatchError, match=signs):
            check_export(kept, key=key)

    # Filtered, the same range: the count is of the range's seqs, whatever matched.
    admin.export(tmp_path / "some.csv", format="csv", manifest_file=True, first_seq=a,
                 last_seq=d, filter=build_filter(actions="doc.edit"))  # fmt: skip
    some = check_export(tmp_path / "some.csv.manifest.json", key=key)
    assert (some.rows, some.removed) == (3, 1)
    assert some.selected == (
        f'the events of seqs {a}..{d} matching {{"actions":["doc.edit"]}}, 1 removed by'
        " retention, as the service selected them"
    )

    # A range retention did not touch says nothing of it, and signs 0.
    admin.export(tmp_path / "kept.csv", format="csv", manifest_file=True, first_seq=a, last_seq=b)
    whole = check_export(tmp_path / "kept.csv.manifest.json", key=key)
    assert (whole.rows, whole.removed, whole.selected) == (2, 0, f"seqs {a}..{b}, unfiltered")
    assert json.loads((tmp_path / "kept.csv.manifest.json").read_text())["removed_count"] == 0

    # The whole log, no range: the seqs up to its tree size retention removed.
    admin.export(tmp_path / "all.csv", format="csv", manifest_file=True)
    everything = check_export(tmp_path / "all.csv.manifest.json", key=key)
    size = everything.statement.tree_size
    assert (everything.rows, everything.removed) == (size - 1, 1)
    assert everything.selected.endswith(", unfiltered, 1 removed by retention")

    # A row gone otherwise than by retention (a superuser's DELETE): the server
    # signs what it read, and the check says the numbers do not add up.
    with psycopg.connect(migrated_database_url, autocommit=True) as tamper:
        tamper.execute("SET session_replication_role = replica")
        tamper.execute("DELETE FROM events WHERE tenant_id = %s AND seq = %s", [tenant, b])
    admin.export(tmp_path / "cut.csv", format="csv", manifest_file=True, first_seq=a, last_seq=d)
    with pytest.raises(ExportMismatchError) as refused:
        check_export(tmp_path / "cut.csv.manifest.json", key=key)
    assert str(refused.value) == (
        f"cut.csv.manifest.json: its statement signs an unfiltered export of seqs {a}..{d}"
        " (4 seqs) of 2 rows and 1 removed by retention: 1 seq neither exported nor removed"
        " by retention"
    )


@contextlib.contextmanager
def _removed_by_hand(url: str, tenant: str, seq: int) -> Iterator[None]:
    """As a superuser would make event `seq` pass for removed by retention:
    its row deleted and its leaf kept as a tombstone, as a purge keeps it.
    Put back after: the database is shared, and the signers and passes read
    every tenant's log."""
    with psycopg.connect(url, autocommit=True) as tamper:
        with tamper.transaction():
            tamper.execute("SET LOCAL session_replication_role = replica")  # past the refusal
            cursor = tamper.execute(
                "DELETE FROM events WHERE tenant_id = %s AND seq = %s RETURNING *", [tenant, seq]
            )
            names = [column.name for column in cursor.description or []]
            [row] = cursor.fetchall()
            generated = {
                name
                for (name,) in tamper.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name ="
                    " 'events' AND is_generated = 'ALWAYS'"
                )
            }
            tamper.execute(
                "INSERT INTO tree_nodes (tenant_id, level, idx, hash) VALUES (%s, 0, %s, %s)",
                [tenant, seq - 1, row[names.index("leaf_hash")]],
            )
        try:
            yield
        finally:
            with tamper.transaction():
                tamper.execute("SET LOCAL session_replication_role = replica")
                tamper.execute(
                    "DELETE FROM tree_nodes WHERE tenant_id = %s AND level = 0 AND idx = %s",
                    [tenant, seq - 1],
                )
                kept = [(n, v) for n, v in zip(names, row, strict=True) if n not in generated]
                tamper.execute(
                    sqlc.SQL("INSERT INTO events ({}) VALUES ({})").format(
                        sqlc.SQL(", ").join(sqlc.Identifier(n) for n, _ in kept),
                        sqlc.SQL(", ").join(sqlc.Placeholder() * len(kept)),
                    ),
                    [Jsonb(v) if isinstance(v, (dict, list)) else v for _, v in kept],
                )


def test_an_event_removed_by_hand_is_never_signed_nor_proven_as_removed_by_retention(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    tmp_path: Path,
    migrated_database_url: str,
) -> None:
    """A superuser deleted an event and kept its leaf as retention keeps a
    removed one's: the export signed it as removed by retention
    (removed_count 1), `sealtrail verify` and `checkpoint --check` said
    MATCHES, and GetInclusionProof said "removed by retention"; only
    VerifyLog told (helper-555 finding 4). A removal is retention's only
    where retention's records (or a purge's sealed summary, not yet
    recorded) say it removed that seq's range."""
    a, b = record(admin, "doc.edit"), record(admin, "doc.edit")
    c, d = record(admin, "rag.index.rebuild"), record(admin, "doc.edit")
    admin.set_retention_policy("forever", action_prefixes={"rag.index.*": 20})
    clock.advance(21)
    [result] = [r for r in purge(aged) if r.tenant_id == tenant]
    assert (result.first_seq, result.last_seq) == (c, c)
    with _removed_by_hand(migrated_database_url, tenant, b):
        _refused_as_removed_by_hand(admin, tmp_path, b, a, d)

    # What retention removed is still said and signed so.
    with pytest.raises(NotFoundError, match=f"event {c} was removed by retention"):
        admin.get_inclusion_proof(seq=c)
    admin.export(tmp_path / "cd.ndjson", format="ndjson", manifest_file=True, first_seq=c,
                 last_seq=d)  # fmt: skip
    manifest = json.loads((tmp_path / "cd.ndjson.manifest.json").read_text())
    assert (manifest["row_count"], manifest["removed_count"]) == (1, 1)


def _refused_as_removed_by_hand(
    admin: AuditClient, tmp_path: Path, seq: int, first: int, last: int, *, named: int = 0
) -> None:
    """Export of `first`..`last` and of the whole log, and GetInclusionProof
    of `seq` without include_purged (which says PURGED: "removed by
    retention"), are refused, DATA_LOSS naming `seq` (the export: `named`,
    the first removed seq of those the records do not account for, if not
    `seq`) as removed outside retention. With include_purged, its leaf is
    proven, `purged`: it proves a leaf, not who removed it (the bundle's
    ledger counts that, exactly)."""
    said = f"seq {seq} is missing, its leaf kept as if removed, but"
    for seqs in ({"first_seq": first, "last_seq": last}, {}):
        with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
            admin.export(tmp_path / "all.ndjson", format="ndjson", manifest_file=True, **seqs)
        assert refused.value.code == grpc.StatusCode.DATA_LOSS
        assert refused.value.reason == "INTEGRITY_FAILURE"
        assert (
            f"seq {named or seq} is missing, its leaf kept as if removed" in refused.value.message
        )
        assert "removed outside retention" in refused.value.message
    with pytest.raises(RpcFailedError) as refused:
        admin.get_inclusion_proof(seq=seq)
    assert (refused.value.code, refused.value.reason) == (
        grpc.StatusCode.DATA_LOSS,
        "INTEGRITY_FAILURE",
    )
    assert said in refused.value.message
    assert "removed outside retention" in refused.value.message
    proven = admin.get_inclusion_proof(seq=seq, include_purged=True)
    assert (proven.seq, proven.purged, proven.record) == (seq, True, b"")


def test_an_event_removed_by_hand_between_two_one_purge_removed_is_not_retentions(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    tmp_path: Path,
    migrated_database_url: str,
) -> None:
    """One purge removed b and d, a longer rule keeping c between them; a
    superuser deleted c, its leaf kept. Its seq lies within the purge's
    seqs (b..d), which was all the check held it to: it passed as removed by
    retention. The purge's record says it removed 2 there, and 3 are gone."""
    a, b = record(admin, "doc.edit"), record(admin, "rag.index.rebuild")
    c, d = record(admin, "doc.edit"), record(admin, "rag.index.rebuild")
    e = record(admin, "doc.edit")
    admin.set_retention_policy("forever", action_prefixes={"rag.index.*": 20})
    clock.advance(21)
    [result] = [r for r in purge(aged) if r.tenant_id == tenant]
    assert (result.first_seq, result.last_seq) == (b, d)
    with _removed_by_hand(migrated_database_url, tenant, c):
        # Which of the three is not told by counts: the first is named.
        _refused_as_removed_by_hand(admin, tmp_path, c, a, e, named=b)
        # What the purge removed there is no longer told from what was not.
        with pytest.raises(RpcFailedError) as refused:
            admin.get_inclusion_proof(seq=b)
        assert refused.value.code == grpc.StatusCode.DATA_LOSS
        assert "retention's records account for 2 of the 3 removed" in refused.value.message
        # Nor is a stream's cursor told it missed events retention removed.
        with pytest.raises(RpcFailedError) as refused:
            next(admin.stream(after_seq=a))
        assert (refused.value.code, refused.value.reason) == (
            grpc.StatusCode.DATA_LOSS,
            "INTEGRITY_FAILURE",
        )
        assert f"seq {b} is missing" in refused.value.message
        # Nor one announcing removals told "retention removed 3" of b..d.
        announced: list[audit_service_pb2.PurgedRange] = []
        with pytest.raises(RpcFailedError) as refused:
            next(admin.stream(after_seq=a, on_purged=announced.append))
        assert (refused.value.code, refused.value.reason) == (
            grpc.StatusCode.DATA_LOSS,
            "INTEGRITY_FAILURE",
        )
        assert "account for 2 of the 3 removed events" in refused.value.message
        assert not announced
        # A bundle proves the three leaves as purged (GetInclusionProof proves
        # a leaf, not who removed it), and its ledger counts exactly which
        # removals retention's statements account for.
        write_bundle(admin, tmp_path / "bundle")
        with pytest.raises(BundleError) as failed:
            verify_bundle(tmp_path / "bundle", key=admin.get_verifier_keys()[0].text)
        assert str(failed.value).startswith(
            "the log holds the leaves of 3 removed events, but retention's statements account"
            " for 2: 1 was removed outside retention (hidden)"
        )

    # Put back, the purge's removals are retention's again.
    with pytest.raises(NotFoundError, match=f"event {b} was removed by retention"):
        admin.get_inclusion_proof(seq=b)
    admin.export(tmp_path / "ae.ndjson", format="ndjson", manifest_file=True, first_seq=a,
                 last_seq=e)  # fmt: skip
    manifest = json.loads((tmp_path / "ae.ndjson.manifest.json").read_text())
    assert (manifest["row_count"], manifest["removed_count"]) == (3, 2)


def test_a_purge_recorded_after_an_accounting_is_accounted_at_the_next(
    aged: ServerThread, admin: AuditClient, clock: Clock, tenant: str, tmp_path: Path
) -> None:
    """Retention's records are verified once for those the log holds, not at
    each call (0.2 s of CPU a thousand records, on the event loop): a purge
    recorded since is read at the next export, not refused as removed
    outside retention for want of its record."""
    a, b = record(admin, "rag.index.rebuild"), record(admin, "doc.edit")
    admin.set_retention_policy("forever", action_prefixes={"rag.index.*": 20})
    clock.advance(21)
    purge(aged)

    def removed_count(first: int, last: int) -> int:
        out = tmp_path / f"{first}-{last}.ndjson"
        admin.export(out, format="ndjson", manifest_file=True, first_seq=first, last_seq=last)
        return int(json.loads(out.with_name(out.name + ".manifest.json").read_text())[
            "removed_count"
        ])  # fmt: skip

    assert removed_count(a, b) == 1
    c, d = record(admin, "rag.index.rebuild"), record(admin, "doc.edit")
    clock.advance(21)
    [result] = [r for r in purge(aged) if r.tenant_id == tenant]
    assert (result.first_seq, result.last_seq) == (c, c)
    assert removed_count(a, d) == 2


def test_an_export_counts_what_a_pass_running_meanwhile_removed_once(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An export reads its rows a page at a time, each page afresh: a pass
    that runs between two pages removes rows read already and rows not yet.
    The removed are counted page by page, each in the statement that reads
    the page's rows: a seq is counted once, as a row or as removed, never
    both nor neither (rows + removed is the range's size)."""
    from sealtrail import check_export

    seqs = [record(admin, "rag.index.rebuild" if n in (1, 4) else "doc.edit") for n in range(6)]
    admin.set_retention_policy("forever", action_prefixes={"rag.index.*": 20})
    clock.advance(21)
    real, passes = export_api.stream_events, []
    assert aged.service.purger is not None
    purger = aged.service.purger

    async def purged_after_the_first_page(conn: Any) -> None:
        passes.append(await purger.run_once())

    def paged(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(fetch_rows=2, page_bytes=None, after_first_page=purged_after_the_first_page)
        return real(*args, **kwargs)

    monkeypatch.setattr(export_api, "stream_events", paged)  # the server runs here
    admin.export(tmp_path / "range.ndjson", format="ndjson", manifest_file=True,
                 first_seq=seqs[0], last_seq=seqs[-1])  # fmt: skip
    assert _removed_of(tenant, passes) == [2]  # seqs[1], read already, and seqs[4], not yet
    key = admin.get_verifier_keys()[0].text
    found = check_export(tmp_path / "range.ndjson.manifest.json", key=key)
    assert (found.rows, found.removed) == (5, 1)
    exported = (tmp_path / "range.ndjson").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in exported] == [s for s in seqs if s != seqs[4]]


def test_a_complete_bundle_written_while_a_retention_pass_runs_still_verifies(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A pass that removes events the export has not read yet (helper-154):
    the bundle held their leaves but not the pass's record, which came after
    its checkpoint. It was written, then failed verification as events
    removed outside retention (hidden). It is written again, with the record."""
    for _ in range(3):
        record(admin, "doc.edit")
    record(admin, "user.login", "authentication")
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(11)
    passes = _passes_before_exports_read(aged, monkeypatch, times=1)

    written = write_bundle(admin, tmp_path / "bundle")
    assert _removed_of(tenant, passes) == [3]  # during the bundle's export
    assert written.complete and written.purged == 3
    verified = verify_bundle(tmp_path / "bundle", key=admin.get_verifier_keys()[0].text)
    assert (verified.count, verified.purged) == (written.count, written.purged)


class _PurgedAfterItsCheckpoint:
    """A client whose first fresh checkpoint is followed by a retention pass,
    before any record is proven in it."""

    def __init__(self, client: AuditClient, aged: ServerThread) -> None:
        self._client, self._aged = client, aged
        self.passes: list[list[Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_checkpoint(self, **request: Any) -> integrity_pb2.SignedCheckpoint:
        checkpoint = self._client.get_checkpoint(**request)
        if not self.passes:
            self.passes.append(purge(self._aged))
        return checkpoint


def test_a_complete_bundle_proven_record_by_record_while_a_pass_runs_still_verifies(
    aged: ServerThread, admin: AuditClient, clock: Clock, tenant: str, tmp_path: Path
) -> None:
    """The same through a reader's token, which may not export: each record
    is proven by the server in a fresh checkpoint the pass came after."""
    for _ in range(3):
        record(admin, "doc.edit")
    record(admin, "user.login", "authentication")
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(11)
    with AuditClient(aged.target, token=aged.token(tenant, Role.READER)) as reader:
        overtaken = _PurgedAfterItsCheckpoint(reader, aged)
        written = write_bundle(overtaken, tmp_path / "bundle")
    assert _removed_of(tenant, overtaken.passes) == [3]
    assert written.complete and written.purged == 3
    verified = verify_bundle(tmp_path / "bundle", key=admin.get_verifier_keys()[0].text)
    assert (verified.count, verified.purged) == (written.count, written.purged)


def test_a_bundle_overtaken_by_retention_each_time_it_is_written_says_to_retry(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Rather than a bundle that would fail verification as events hidden,
    a clear error; and nothing left in the directory."""
    for _ in range(3):  # a day apart: each pass below removes one more day's
        record(admin, "doc.edit")
        clock.advance(1)
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(7.5)  # the first day's expired, the next two's not yet
    passes = _passes_before_exports_read(aged, monkeypatch, times=3, then=lambda: clock.advance(1))

    with pytest.raises(BundleError, match="a retention pass is removing events") as refused:
        write_bundle(admin, tmp_path / "bundle")
    assert "retry" in str(refused.value)
    assert _removed_of(tenant, passes) == [1, 1, 1]
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    ("change", "put_right"),
    [
        ("category = NULL", "category = 'authentication'"),  # a kept category's
        ("received_at = received_at - interval '400 days'", "received_at = %s"),  # a young one's
    ],
    ids=["category", "received_at"],
)
def test_a_row_moved_under_a_rule_behind_the_service_is_not_removed(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
    caplog: pytest.LogCaptureFixture,
    change: str,
    put_right: str,
) -> None:
    """The purge selects by the row's columns, copies of the record: a
    superuser who changed a kept event's had retention remove it and sign the
    removal as its own, and every verifier passed (helper-127). The record
    decides: the batch is rolled back, and said at ERROR."""
    admin.set_retention_policy(30, categories={"authentication": "forever"})
    due = record(admin, "doc.edit")
    forever = record(admin, "user.login", "authentication")
    clock.advance(31)
    young = record(admin, "doc.edit")
    kept = forever if change.startswith("category") else young
    [(received_at,)] = sql.execute(
        "SELECT received_at FROM events WHERE tenant_id = %s AND seq = %s", [tenant, kept]
    ).fetchall()

    def update(assignment: str, *values: Any) -> None:
        with sql.transaction():
            sql.execute("SET LOCAL session_replication_role = replica")  # past the refusal
            sql.execute(
                sqlc.SQL("UPDATE events SET {} WHERE tenant_id = %s AND seq = %s").format(
                    sqlc.SQL(assignment)
                ),
                [*values, tenant, kept],
            )

    update(change)
    try:
        with caplog.at_level(logging.ERROR):
            purge(aged)
        said = f"seq {kept} of {tenant!r} was selected for removal by its row's columns"
        assert said in caplog.text
        left = sql.execute("SELECT seq FROM events WHERE tenant_id = %s", [tenant]).fetchall()
        assert {kept, due} <= {seq for (seq,) in left}  # nothing of its batch removed
        assert admin.verify_log().ok
    finally:  # else every later pass, other tests', met it
        update(put_right, *([received_at] if "%s" in put_right else []))
    purge(aged)
    left = sql.execute("SELECT seq FROM events WHERE tenant_id = %s", [tenant]).fetchall()
    assert due not in {seq for (seq,) in left} and kept in {seq for (seq,) in left}


def _hide_as_removed(bundle: Path, seq: int) -> None:
    records = (bundle / "records.ndjson").read_bytes().splitlines(keepends=True)
    proofs = (bundle / "proofs.ndjson").read_text().splitlines(keepends=True)
    [at] = [i for i, line in enumerate(proofs) if json.loads(line)["seq"] == seq]
    record, proof = records.pop(at).removesuffix(b"\n"), json.loads(proofs.pop(at))["proof"]
    (bundle / "records.ndjson").write_bytes(b"".join(records))
    (bundle / "proofs.ndjson").write_text("".join(proofs))
    removed = [json.loads(line) for line in (bundle / "purged.ndjson").read_text().splitlines()]
    removed.append(
        {"seq": seq, "leaf_hash": base64.b64encode(leaf_hash(record)).decode(), "proof": proof}
    )
    removed.sort(key=lambda entry: entry["seq"])
    (bundle / "purged.ndjson").write_text("".join(json.dumps(entry) + "\n" for entry in removed))
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["count"] -= 1
    manifest["purged"] += 1
    (bundle / "bundle.json").write_text(json.dumps(manifest))


def test_purged_leaves_are_listed_in_seq_order_page_by_page(
    aged: ServerThread, admin: AuditClient, clock: Clock
) -> None:
    removed = [record(admin, "doc.edit") for _ in range(5)]
    kept = record(admin, "user.login", "authentication")
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(11)
    purge(aged)
    size = admin.get_checkpoint(fresh=True).tree_size
    listed = list(admin.list_purged_leaves(tree_size=size))
    assert {leaf.seq for leaf in listed} >= set(removed)
    assert kept not in {leaf.seq for leaf in listed}
    assert [leaf.seq for leaf in listed] == sorted(leaf.seq for leaf in listed)
    for leaf in listed:  # each as the proofs give it
        proven = admin.get_inclusion_proof(seq=leaf.seq, tree_size=size, include_purged=True)
        assert proven.purged and proven.leaf_hash == leaf.leaf_hash

    stub = audit_service_pb2_grpc.AuditLogServiceStub(admin._channel)
    metadata = admin._metadata

    def page(**request: Any) -> Any:
        return stub.ListPurgedLeaves(
            integrity_pb2.ListPurgedLeavesRequest(**request), metadata=metadata
        )

    first = page(tree_size=size, page_size=2)
    assert first.tree_size == size and page(page_size=1).tree_size >= size
    second = page(tree_size=size, page_size=2, page_token=first.next_page_token)
    assert [leaf.seq for leaf in [*first.leaves, *second.leaves]] == [
        leaf.seq for leaf in listed[:4]
    ]
    smaller = list(admin.list_purged_leaves(tree_size=removed[2]))  # a tree of fewer events
    assert [leaf.seq for leaf in smaller] == [leaf.seq for leaf in listed if leaf.seq <= removed[2]]
    with pytest.raises(grpc.RpcError) as stale:  # a token goes with its tree size
        page(tree_size=size - 1, page_token=first.next_page_token)
    assert stale.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # From a seq on, as a bundle of a range asks: none of the leaves before it.
    after = listed[1].seq
    later = list(admin.list_purged_leaves(tree_size=size, after_seq=after))
    assert [leaf.seq for leaf in later] == [leaf.seq for leaf in listed if leaf.seq > after]
    continued = page(tree_size=size, page_size=2, page_token=first.next_page_token, after_seq=1)
    assert [leaf.seq for leaf in continued.leaves] == [leaf.seq for leaf in second.leaves]
    for request, field in (
        ({"page_size": -1}, "page_size"),
        ({"tree_size": -1}, "tree_size"),
        ({"after_seq": -1}, "after_seq"),
    ):
        with pytest.raises(grpc.RpcError) as bad:
            page(**request)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT and field in str(bad.value)


def test_one_process_purges_at_a_time(
    aged: ServerThread, admin: AuditClient, clock: Clock, migrated_database_url: str, tenant: str
) -> None:
    for _ in range(3):
        record(admin, "doc.edit")
    admin.set_retention_policy(10)
    clock.advance(11)
    with psycopg.connect(migrated_database_url, autocommit=True) as other_process:
        other_process.execute("SELECT pg_advisory_lock(%s)", [PURGE_LOCK])
        assert purge(aged) == []  # the lock is taken: this pass skips
        assert len(recorded(admin)) == 3
        # Let go of it here: a closed connection's backend releases its locks
        # as it exits, after close() has returned (ci-s56a: the next pass met
        # the lock still held and skipped).
        other_process.execute("SELECT pg_advisory_unlock(%s)", [PURGE_LOCK])
    [result] = [r for r in purge(aged) if r.tenant_id == tenant]
    assert result.count >= 3


def _partitions(sql: psycopg.Connection[Any]) -> set[str]:
    rows = sql.execute(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass"
    ).fetchall()
    return {name for (name,) in rows}


def test_a_pass_creates_months_ahead_and_drops_empty_past_ones(
    aged: ServerThread, clock: Clock, sql: psycopg.Connection[Any]
) -> None:
    sql.execute("SELECT sealtrail_create_event_partitions('2020-01-15', '2020-02-15')")
    assert {"events_2020_01", "events_2020_02"} <= _partitions(sql)
    clock.advance(100)
    purge(aged)
    now = clock()
    ahead = now + timedelta(days=85)
    assert f"events_{now:%Y_%m}" in _partitions(sql)
    assert f"events_{ahead:%Y_%m}" in _partitions(sql)
    assert not {"events_2020_01", "events_2020_02"} & _partitions(sql)


def test_a_month_two_sessions_create_at_once_is_created_once_without_an_error(
    sql: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    """A start's migrations and another process's pass hold different locks:
    both can find a month missing. The second waits for the first's lock on
    events, then finds the month there: not an error that fails its start."""
    create = "SELECT sealtrail_create_event_partitions('2099-01-15', '2099-01-15')"
    with (
        ThreadPoolExecutor(1) as pool,
        psycopg.connect(migrated_database_url, autocommit=True) as other,
    ):
        blocked = "SELECT pg_backend_pid() = ANY(pg_blocking_pids(%s))"
        try:
            with sql.transaction():
                assert sql.execute(create).fetchone() == (1,)
                racing = pool.submit(lambda: other.execute(create).fetchone())
                deadline = time.monotonic() + 10
                while not sql.execute(blocked, [other.info.backend_pid]).fetchone()[0]:
                    assert time.monotonic() < deadline and not racing.done(), "no wait"
                    time.sleep(0.01)
            assert racing.result(timeout=10) == (0,)
        finally:
            sql.execute("DROP TABLE IF EXISTS events_2099_01")


def test_a_month_in_use_is_left_for_the_next_pass(
    aged: ServerThread, clock: Clock, sql: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    """A reader holding an empty past month (a long Export, say) does not make
    the pass wait, which would queue every statement on events behind it."""
    sql.execute("SELECT sealtrail_create_event_partitions('2019-03-15', '2019-03-16')")
    with psycopg.connect(migrated_database_url) as reader:  # in a transaction until closed
        reader.execute("SELECT count(*) FROM events_2019_03")
        purge(aged)  # waiting for the reader, it would not return before it closes
        assert "events_2019_03" in _partitions(sql)
    purge(aged)
    assert "events_2019_03" not in _partitions(sql)


def test_a_month_retention_emptied_is_dropped_and_its_records_kept_for_good_move(
    migrated_database_url: str, tenant: str
) -> None:
    """Retention's own records are never purged: left in place, the first one
    of a month would keep the month, and all the disk it ever took, for good.
    They move to events_default as they are, and the log still verifies."""
    own_clock = Clock()
    month = f"events_{own_clock():%Y_%m}"
    with database_of_its_own(migrated_database_url, "retire") as url:
        server = ServerThread(url, clock=own_clock, checkpoint_interval=0)
        try:
            with (
                AuditClient(server.target, token=server.token(tenant)) as admin,
                psycopg.connect(url, autocommit=True) as sql,
            ):
                for _ in range(3):
                    record(admin, "doc.edit")
                admin.set_retention_policy("30d")
                kept = list(admin.query(build_filter(actions="retention.*")))
                assert [event.action for event in kept] == ["retention.policy_updated"]
                own_clock.advance(70)
                purge(server)

                assert month not in _partitions(sql)
                moved = sql.execute(
                    "SELECT seq, record FROM events_default WHERE tenant_id = %s", [tenant]
                ).fetchall()
                assert [seq for seq, _ in moved] == [kept[0].seq]
                assert admin.get_event(kept[0].id) == kept[0]
                proof = admin.get_inclusion_proof(seq=kept[0].seq)
                assert proof.record == moved[0][1].encode() and not proof.purged
                assert admin.verify_log().ok
        finally:
            server.close()


def test_a_time_range_reads_only_the_months_it_can_hold(
    admin: AuditClient, clock: Clock, sql: psycopg.Connection[Any], tenant: str
) -> None:
    def at_the_server_clock() -> int:
        event = build_event(action="doc.edit", actor_id="u-1", occurred_at=clock())
        return admin.record(event).event.seq

    first = at_the_server_clock()
    clock.advance(62)  # two months on: another partition
    later = at_the_server_clock()
    since = clock() - timedelta(days=1)
    found = list(admin.query(build_filter(actions="doc.edit", since=since)))
    assert [event.seq for event in found] == [later]
    assert first < later
    page, params = query_statement(
        tenant, EventFilter(actions=("doc.edit",), occurred_after=since), "newest", None, 100
    )
    query = psycopg.sql.SQL("EXPLAIN {}").format(page)
    plan = "\n".join(row[0] for row in sql.execute(query, params).fetchall())
    older = clock() - timedelta(days=62)
    assert f"events_{clock():%Y_%m}" in plan
    assert f"events_{older:%Y_%m}" not in plan


def test_an_id_names_the_time_its_event_was_received_by_the_servers_clock(
    admin: AuditClient, clock: Clock
) -> None:
    """Ids are minted from the appender's clock, the one `received_at` is
    read from, not the machine's (ADR 0031); GetEvent finds the event there."""
    clock.advance(3)
    stored = admin.record(build_event(action="doc.edit", actor_id="u-1")).event
    window = received_within(stored.id)
    assert window is not None
    assert window[0] <= stored.received_at.ToDatetime(UTC) < window[1]
    assert window[0] > datetime.now(UTC) + timedelta(days=2)
    assert admin.get_event(stored.id) == stored


def test_a_move_of_records_kept_for_good_the_database_refuses_leaves_no_value_in_the_log(
    migrated_database_url: str, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The pass logs a step that failed with its traceback, whose last line
    was the database's error whole: its `DETAIL: Failing row contains (...)`
    the moved record's row (its actor, its details) in the server's log,
    where erasure never reaches, in either format. The traceback stays, its
    error named by its primary message and SQLSTATE."""
    own_clock = Clock()
    with database_of_its_own(migrated_database_url, "refused_retire") as url:
        server = ServerThread(url, clock=own_clock, checkpoint_interval=0)
        try:
            with (
                AuditClient(server.target, token=server.token(tenant)) as admin,
                psycopg.connect(url, autocommit=True) as sql,
            ):
                record(admin, "doc.edit")
                admin.set_retention_policy("30d")
                [kept] = admin.query(build_filter(actions="retention.*"))
                sql.execute(
                    "ALTER TABLE events ADD CONSTRAINT refuse_the_move"
                    " CHECK (action <> 'retention.policy_updated') NOT VALID"
                )
                own_clock.advance(70)
                with caplog.at_level(logging.ERROR):
                    purge(server)
        finally:
            server.close()
    [failed] = [r for r in caplog.records if "dropping emptied months failed" in r.getMessage()]
    for log_format in ("text", "json"):
        written = log_handler(log_format).format(failed)
        assert "Traceback" in written and "CheckViolation" in written, written
        assert "refuse_the_move" in written and "23514" in written, written
        assert "Failing row" not in written and kept.actor.id not in written, written


def test_a_clock_jumping_ahead_mid_pass_stops_its_removals_at_the_next_batch(
    aged: ServerThread,
    admin: AuditClient,
    clock: Clock,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass compares the clocks before each batch that removes events, not
    only at its start: a clock that jumps days ahead during a long pass (a VM
    resumed, an NTP server gone wrong) stops the removals at the next batch,
    warning once; the pass is left for a process whose clock is right."""
    admin.set_retention_policy(30)
    expired = {record(admin, "doc.edit") for _ in range(9)}
    clock.advance(31)
    ahead = 20 * 86400.0
    jumped: list[int] = []

    async def jumping(conn: Any, tenant_id: str, *args: Any, **kwargs: Any) -> Any:
        batch = await purge_batch(conn, tenant_id, *args, **kwargs)
        if tenant_id == tenant and not jumped:  # after its first batch, mid-pass
            jumped.append(batch.count)
            clock.run_ahead(seconds=ahead)
        return batch

    monkeypatch.setattr(tenant_pass, "purge_batch", jumping)
    try:
        with caplog.at_level(logging.INFO, logger=purger_module.__name__):
            purge(aged)
        assert jumped == [3]  # batches of three
        kept = expired & {seq for seq, _ in recorded(admin)}
        assert len(kept) == 6  # the first batch's three removed, no more
        [(process, database)] = _clock_warnings(caplog)
        assert timedelta(days=19) < process - database <= timedelta(days=20)

        clock.run_ahead(seconds=-ahead)  # put right: the next pass removes the rest
        ahead = 0
        purge(aged)
        assert not expired & {seq for seq, _ in recorded(admin)}
        assert admin.verify_log().ok
    finally:
        clock.run_ahead(seconds=-ahead)
