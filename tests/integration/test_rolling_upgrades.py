"""Rolling upgrades (docs/operations.md): a process of this release, already
running, shares the database with a newer release's processes, which store
sinks, filters and alert rules it does not know. It leaves each to a process
that knows it (it neither sends, fires nor changes it, and does not hold its
lease), says so once in its log, serves everything else, and its reads show
such an object with a sign that a newer release made it, never INTERNAL.

The newer objects are rows written here as the database owner, in a database
of this module's own whose CHECK on a sink's kind is relaxed as a newer
migration would relax it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sealtrail import AuditClient, RpcFailedError, build_alert_rule, build_filter, build_sink
from sealtrail.v1 import alerting_pb2, forwarding_pb2
from sealtrail_server.sealing_setup import load_secret_box
from sealtrail_server.store.deployment_sinks import reseal_definitions
from sealtrail_server.store.sinks import reseal_secrets
from tests.conftest import ServerThread, clients_of, database_of_its_own, deployment_operator
from tests.http_endpoint import Endpoint, endpoint
from tests.integration.test_alerting import _gauge
from tests.integration.test_deployment_sinks import SECRET, _create
from tests.integration.test_forwarding import (
    _park_directly,
    delivered_seqs,
    new_secret,
    record,
)
from tests.polls import until_true

NEWER = "made by a newer Sealtrail"
DOCUMENTS = build_filter(actions="document.*")
# Whether the older process let a sink, or a tenant's alert rules, go.
SINK_LET_GO = "SELECT lease_owner IS NULL FROM sinks WHERE id = %s"
RULES_LET_GO = "SELECT lease_owner IS NULL FROM alert_cursors WHERE tenant_id = %s"
# What a newer release's object is, as a test compares it before and after:
# a sink's row and its dead letters' count, an alert rule's, a deployment sink's.
SINK_ROW = (
    "SELECT cursor_seq, delivered_events, last_error, consecutive_failures,"
    " next_attempt_at, filter, destination, kind, updated_at,"
    " (SELECT count(*) FROM sink_dead_letters WHERE sink_id = %s)"
    " FROM sinks WHERE id = %s"
)
RULE_ROW = (
    "SELECT name, condition, severity, sink_ids, disabled, start_seq, updated_at, fired"
    " FROM alert_rules WHERE id = %s"
)
DEFINITION_ROW = (
    "SELECT name, kind, format, filter, destination, paused, revision, changed_by,"
    " updated_at, deleted_at FROM deployment_sinks WHERE id = %s"
)


def _refused(call: Callable[[], object], what: str, object_id: str) -> None:
    """`call` refused FAILED_PRECONDITION as a change of a newer release's
    `what` ("SINK", "ALERT_RULE"), naming the object."""
    with pytest.raises(RpcFailedError) as refused:
        call()
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.reason == f"{what}_FROM_A_NEWER_RELEASE"
    assert object_id in str(refused.value) and NEWER in str(refused.value)


def allow_a_newer_kind(url: str) -> None:
    """The database at `url` (of a test's own) takes a sink and a deployment
    sink of kind `carrier_pigeon`, as a newer release's migration relaxes the
    CHECK to add a kind (0053_email_sinks.sql)."""
    with psycopg.connect(url, autocommit=True) as owner:
        for table in ("sinks", "deployment_sinks"):
            owner.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_kind_check")
            owner.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_kind_check CHECK (kind IN"
                " ('webhook', 'splunk_hec', 'datadog_logs', 'elasticsearch', 'chat',"
                " 'pagerduty', 'email', 'carrier_pigeon'))"
            )


@pytest.fixture(scope="module")
def newer_database(migrated_database_url: str) -> Iterator[str]:
    with database_of_its_own(migrated_database_url, "rolling") as url:
        allow_a_newer_kind(url)
        yield url


@pytest.fixture(scope="module")
def older(newer_database: str) -> Iterator[ServerThread]:
    """The older process: started before the newer rows were written."""
    with ServerThread(newer_database) as running:
        yield running


@pytest.fixture
def owner_sql(newer_database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(newer_database, autocommit=True) as conn:
        yield conn


@pytest.fixture
def older_client(older: ServerThread) -> Iterator[Callable[[str], AuditClient]]:
    with clients_of(older) as make:
        yield make


@pytest.fixture(autouse=True)
def said_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """What the server says of a newer release's objects is said at INFO and up."""
    caplog.set_level(logging.INFO, logger="sealtrail_server")


@pytest.fixture
def second_receiver() -> Iterator[Endpoint]:
    with endpoint() as running:
        yield running


def _new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _row(sql: psycopg.Connection[Any], query: str, object_id: str) -> tuple[Any, ...]:
    """The one row `query` reads of `object_id` (each of its %s)."""
    row = sql.execute(query, [object_id] * query.count("%s")).fetchone()
    assert row is not None
    return tuple(row)


def _document_sink(
    client: AuditClient, name: str, url: str, *, paused: bool = False
) -> forwarding_pb2.Sink:
    """A webhook sink of the client's tenant sending its document.* events to `url`."""
    sink = build_sink(
        name, "webhook", url=url, secrets=[new_secret()], filter=DOCUMENTS, paused=paused
    )
    return client.create_sink(sink).sink


def _copied_sink(
    sql: psycopg.Connection[Any],
    tenant: str,
    sink_id: str,
    *,
    kind: str,
    destination: str,
    name: str = "pigeon post",
) -> str:
    """A copy of a sink's row as a newer release would write one: another
    kind and destination, the same cursor."""
    copy = str(uuid.uuid4())
    sql.execute(
        "INSERT INTO sinks (tenant_id, id, name, kind, format, filter, destination, paused,"
        " created_at, updated_at, cursor_seq)"
        " SELECT tenant_id, %s, %s, %s, format, filter, %s::jsonb, false,"
        " created_at, now(), cursor_seq FROM sinks WHERE tenant_id = %s AND id = %s",
        [copy, name, kind, destination, tenant, sink_id],
    )
    return copy


def _newer_lines(caplog: pytest.LogCaptureFixture, object_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("sealtrail") and object_id in r.getMessage()
    ]


def _until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _said_once(
    caplog: pytest.LogCaptureFixture, object_id: str, *words: str, timeout: float = 30
) -> str:
    """The first line logged of `object_id`, once there is one; it says each of `words`."""
    _until(lambda: bool(_newer_lines(caplog, object_id)), f"nothing logged of {object_id}", timeout)
    said = _newer_lines(caplog, object_id)[0]
    assert all(word in said for word in words), said
    return said


def _said_left_sealed(caplog: pytest.LogCaptureFixture, object_id: str) -> None:
    """Resealing said once that it left `object_id`, of kind carrier_pigeon,
    sealed (the forwarder may say it left the sink too, before or after)."""
    said = [line for line in _newer_lines(caplog, object_id) if "left sealed" in line]
    assert len(said) == 1 and NEWER in said[0] and "carrier_pigeon" in said[0], said


def _left_by_the_older(
    caplog: pytest.LogCaptureFixture,
    sql: psycopg.Connection[Any],
    object_id: str,
    *words: str,
    let_go: tuple[str, str],
) -> None:
    """`object_id` is said left to a newer release (with `words`), and the
    older process lets it go: `let_go`'s query of its key reads true."""
    _said_once(caplog, object_id, NEWER, *words)
    query, key = let_go
    until_true(sql, query, [key], f"{key} is still leased by the older process")


def test_sinks_a_newer_release_made_are_left_to_it_and_the_others_delivered(
    older_client: Callable[[str], AuditClient],
    owner_sql: psycopg.Connection[Any],
    second_receiver: Endpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = _new_tenant()
    client = older_client(tenant)
    with endpoint() as receiver:
        known = _document_sink(client, "siem", receiver.url)
        pigeon = _copied_sink(
            owner_sql, tenant, known.id, kind="carrier_pigeon", destination='{"loft": "north"}'
        )
        filtered = _document_sink(client, "narrowed", second_receiver.url)
        # A newer release's filter: only the events it names go, which this one cannot tell.
        owner_sql.execute(
            'UPDATE sinks SET filter = filter || \'{"futureField": "x"}\', updated_at = now()'
            " WHERE id = %s",
            [filtered.id],
        )
        before = {sink_id: _row(owner_sql, SINK_ROW, sink_id) for sink_id in (pigeon, filtered.id)}

        seqs = record(client, 3)
        receiver.wait_for(lambda got: delivered_seqs(got) == seqs)
        for sink_id, what in ((pigeon, "carrier_pigeon"), (filtered.id, "futureField")):
            _left_by_the_older(
                caplog, owner_sql, sink_id, tenant, what, let_go=(SINK_LET_GO, sink_id)
            )
        # More events, delivered to the known sink: the others stay as they were, untouched.
        more = record(client, 2)
        receiver.wait_for(lambda got: delivered_seqs(got) == seqs + more)
        until_true(
            owner_sql,
            "SELECT cursor_seq = %s FROM sinks WHERE id = %s",
            [more[-1], known.id],
            "the known sink's cursor did not move past its events",
        )
    assert second_receiver.requests() == []
    for sink_id in (pigeon, filtered.id):
        assert _row(owner_sql, SINK_ROW, sink_id) == before[sink_id]
        assert len(_newer_lines(caplog, sink_id)) == 1, _newer_lines(caplog, sink_id)
        leased = owner_sql.execute("SELECT lease_owner FROM sinks WHERE id = %s", [sink_id])
        assert leased.fetchone() == (None,)

    # Reads show them, with what this release knows, and a sign of the newer release.
    listed = {sink.id: sink for sink in client.list_sinks()}
    assert set(listed) == {known.id, pigeon, filtered.id}
    assert listed[known.id].state.last_error == ""
    assert listed[pigeon].name == "pigeon post"
    assert listed[pigeon].WhichOneof("destination") is None
    assert NEWER in listed[pigeon].state.last_error
    assert "carrier_pigeon" in listed[pigeon].state.last_error
    assert listed[filtered.id].webhook.url == second_receiver.url
    assert NEWER in listed[filtered.id].state.last_error
    assert "futureField" in listed[filtered.id].state.last_error
    got = client.get_sink(pigeon)
    assert got.id == pigeon and NEWER in got.state.last_error
    # Changes are refused, naming it: this release would rewrite or record it half-known.
    for sink_id in (pigeon, filtered.id):
        shown = listed[sink_id]
        shown.name = "renamed"
        _refused(lambda: client.update_sink(shown, fields=["name"]), "SINK", sink_id)  # noqa: B023
        _refused(lambda: client.replay_sink(sink_id, seq_range=(1, 1)), "SINK", sink_id)  # noqa: B023
        _refused(lambda: client.delete_sink(sink_id), "SINK", sink_id)  # noqa: B023
        assert _row(owner_sql, SINK_ROW, sink_id) == before[sink_id]
        # Its dead letters (parked by a newer process) are listed as any sink's.
        parked = _park_directly(owner_sql, tenant, sink_id, 3)
        assert [letter.id for letter in client.list_dead_letters(sink_id)] == parked
    client.delete_sink(known.id)


# A threshold rule grouped by what a newer release may count by.
THRESHOLD_BY_SITE = {
    "kind": "threshold",
    "filter": {"actions": ["document.*"]},
    "count": 2,
    "window_seconds": 3600,
    "group_by": "site",
}
# A spike grouped so, under the key grouped spikes are stored with (ADR 0147).
SPIKE_BY_SITE = {
    "kind": "spike",
    "filter": {"actions": ["document.*"]},
    "window_seconds": 600,
    "baseline_windows": 6,
    "factor": 5.0,
    "min_count": 1,
    "spike_group_by": "site",
}


def _copied_rule(
    sql: psycopg.Connection[Any], tenant: str, rule_id: str, condition: dict[str, Any]
) -> str:
    copy = str(uuid.uuid4())
    sql.execute(
        "INSERT INTO alert_rules (tenant_id, id, name, condition, severity, sink_ids, disabled,"
        " start_seq, created_at, updated_at)"
        " SELECT tenant_id, %s, 'newer rule', %s::jsonb, severity, sink_ids, false, start_seq,"
        " created_at, now() FROM alert_rules WHERE tenant_id = %s AND id = %s",
        [copy, json.dumps(condition), tenant, rule_id],
    )
    return copy


def _fired(sql: psycopg.Connection[Any], rule_id: str) -> int:
    return int(_row(sql, "SELECT fired FROM alert_rules WHERE id = %s", rule_id)[0])


def _until_fired(sql: psycopg.Connection[Any], rule_id: str, times: int, why: str) -> None:
    until_true(sql, "SELECT fired = %s FROM alert_rules WHERE id = %s", [times, rule_id], why)


def test_alert_rules_a_newer_release_made_leave_their_tenant_to_it(
    older_client: Callable[[str], AuditClient],
    owner_sql: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    plain, newer_kind, newer_filter, newer_key, newer_grouping, newer_spike_grouping = (
        _new_tenant() for _ in range(6)
    )
    clients = {
        t: older_client(t)
        for t in (plain, newer_kind, newer_filter, newer_key, newer_grouping, newer_spike_grouping)
    }
    rules = {
        t: client.create_alert_rule(build_alert_rule("shared", "match", filter=DOCUMENTS)).rule
        for t, client in clients.items()
    }
    match = {"kind": "match", "filter": {"actions": ["document.*"]}}
    newer = {
        newer_kind: (_copied_rule(owner_sql, newer_kind, rules[newer_kind].id,
                                  {**match, "kind": "quorum"}), "quorum"),
        newer_filter: (_copied_rule(owner_sql, newer_filter, rules[newer_filter].id,
                                    {**match, "filter": {"actions": ["document.*"],
                                                         "futureField": "x"}}), "futureField"),
        newer_key: (_copied_rule(owner_sql, newer_key, rules[newer_key].id,
                                 {**match, "quorum_of": 3}), "quorum_of"),
        # A grouping it does not know: counted as ungrouped, it would fire at 2.
        newer_grouping: (_copied_rule(owner_sql, newer_grouping, rules[newer_grouping].id,
                                      THRESHOLD_BY_SITE), "site"),
        newer_spike_grouping: (_copied_rule(owner_sql, newer_spike_grouping,
                                            rules[newer_spike_grouping].id, SPIKE_BY_SITE),
                               "spike_group_by 'site'"),
    }  # fmt: skip
    cursors = {
        t: owner_sql.execute(
            "SELECT cursor_seq FROM alert_cursors WHERE tenant_id = %s", [t]
        ).fetchone()
        for t in newer
    }
    for client in clients.values():
        record(client, 2)
    _until_fired(owner_sql, rules[plain].id, 2, "the plain tenant's rule did not fire")
    for tenant, (rule_id, what) in newer.items():
        _left_by_the_older(caplog, owner_sql, rule_id, tenant, what, let_go=(RULES_LET_GO, tenant))
    # Another round in the plain tenant: the others' stay where they were.
    record(clients[plain], 1)
    _until_fired(owner_sql, rules[plain].id, 3, "the plain tenant's rule did not fire again")
    for tenant, (rule_id, _) in newer.items():
        assert _fired(owner_sql, rules[tenant].id) == 0
        assert _fired(owner_sql, rule_id) == 0
        cursor = owner_sql.execute(
            "SELECT cursor_seq FROM alert_cursors WHERE tenant_id = %s", [tenant]
        ).fetchone()
        assert cursor == cursors[tenant]
        assert len(_newer_lines(caplog, rule_id)) == 1, _newer_lines(caplog, rule_id)
        # Listed with what is known: no condition, which every rule of this release has.
        listed = {rule.id: rule for rule in clients[tenant].list_alert_rules()}
        assert listed[rules[tenant].id].WhichOneof("condition") == "match"
        assert listed[rule_id].name == "newer rule"
        assert listed[rule_id].WhichOneof("condition") is None


def test_changes_of_alert_rules_a_newer_release_made_are_refused(
    older_client: Callable[[str], AuditClient],
    owner_sql: psycopg.Connection[Any],
) -> None:
    tenant = _new_tenant()
    client = older_client(tenant)
    known = client.create_alert_rule(build_alert_rule("known", "match", filter=DOCUMENTS)).rule
    match = {"kind": "match", "filter": {"actions": ["document.*"]}}
    newer = [
        _copied_rule(owner_sql, tenant, known.id, condition)
        for condition in (
            {**match, "kind": "quorum"},
            {**match, "filter": {"actions": ["document.*"], "futureField": "x"}},
            {**match, "quorum_of": 3},
            THRESHOLD_BY_SITE,
            SPIKE_BY_SITE,
        )
    ]
    record(client, 1)
    listed = {rule.id: rule for rule in client.list_alert_rules()}
    for rule_id in newer:
        before = _row(owner_sql, RULE_ROW, rule_id)
        shown = listed[rule_id]
        renamed = alerting_pb2.AlertRule(id=rule_id, name="renamed", etag=shown.etag)
        disabled = alerting_pb2.AlertRule(id=rule_id, disabled=True, etag=shown.etag)
        replaced = alerting_pb2.AlertRule()
        replaced.CopyFrom(known)
        replaced.id, replaced.etag = rule_id, shown.etag
        for change in (
            lambda: client.update_alert_rule(renamed, fields=["name"]),  # noqa: B023
            lambda: client.update_alert_rule(disabled, fields=["disabled"]),  # noqa: B023
            lambda: client.update_alert_rule(replaced),  # noqa: B023
            lambda: client.delete_alert_rule(rule_id, etag=shown.etag),  # noqa: B023
            lambda: client.delete_alert_rule(rule_id),  # noqa: B023
        ):
            _refused(change, "ALERT_RULE", rule_id)
        assert _row(owner_sql, RULE_ROW, rule_id) == before
    # The tenant's known rule changes as before.
    client.update_alert_rule(
        alerting_pb2.AlertRule(id=known.id, name="still known"), fields=["name"]
    )
    client.delete_alert_rule(known.id)


def _newer_filter_copy(
    sql: psycopg.Connection[Any], tenant: str, sink_id: str, *, name: str = "pigeon post"
) -> str:
    """A copy of a sink whose filter has a key a newer release added, not paused."""
    copy = _copied_sink(sql, tenant, sink_id, kind="webhook", destination="{}", name=name)
    sql.execute(
        'UPDATE sinks SET filter = filter || \'{"futureField": "x"}\', destination ='
        " (SELECT destination FROM sinks WHERE id = %s) WHERE id = %s",
        [sink_id, copy],
    )
    return copy


def _changed(older: ServerThread) -> None:
    """Tells the older process its sinks and rules changed (a newer process's
    NOTIFY), on its loop: an asyncio.Event set from the test's thread woke
    no waiter until something else woke the loop (ci-s52d: nothing logged
    of a newer sink in 30 s)."""
    older.loop.call_soon_threadsafe(older.service.forwarder.sinks_changed)
    older.loop.call_soon_threadsafe(older.service.evaluator.rules_changed)


def test_each_newer_rule_added_to_a_tenant_left_is_said_as_it_appears(
    older: ServerThread,
    older_client: Callable[[str], AuditClient],
    owner_sql: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tenant left for a newer rule was not claimed again while that rule
    stood unchanged: a second newer rule added meanwhile was never read, so
    never said. Each is said once as it appears, those said before not
    again, and the tenant stays left to a newer process."""
    tenant = _new_tenant()
    client = older_client(tenant)
    known = client.create_alert_rule(build_alert_rule("known", "match", filter=DOCUMENTS)).rule
    first = _copied_rule(owner_sql, tenant, known.id, {"kind": "quorum"})
    _changed(older)
    _left_by_the_older(caplog, owner_sql, first, tenant, let_go=(RULES_LET_GO, tenant))
    second = _copied_rule(owner_sql, tenant, known.id, {"kind": "quorum", "quorum_of": 2})
    _changed(older)
    _left_by_the_older(caplog, owner_sql, second, tenant, let_go=(RULES_LET_GO, tenant))
    # A known rule's change reads the tenant's rules again: neither said twice.
    client.update_alert_rule(alerting_pb2.AlertRule(id=known.id, name="renamed"), fields=["name"])
    third = _copied_rule(owner_sql, tenant, known.id, {"kind": "quorum", "quorum_of": 3})
    _changed(older)
    _left_by_the_older(caplog, owner_sql, third, tenant, let_go=(RULES_LET_GO, tenant))
    for rule_id in (first, second, third):
        assert len(_newer_lines(caplog, rule_id)) == 1, _newer_lines(caplog, rule_id)
    newer = [first, second, third]
    owner_sql.execute("DELETE FROM alert_rules WHERE id = ANY(%s::uuid[])", [newer])
    client.delete_alert_rule(known.id)


def test_a_newer_rule_added_as_another_is_deleted_is_said_whatever_its_clock(
    older: ServerThread,
    older_client: Callable[[str], AuditClient],
    owner_sql: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tenant left for newer rule A, beside known rule B: B deleted and
    newer rule C added at once by a process whose clock is behind the one
    that made A (C's updated_at set back, as that clock wrote it). The
    count and the newest definition stood as they were, so the tenant was
    never read again and C never said; the enabled rules' ids and times are
    compared, and C is said once."""
    tenant = _new_tenant()
    client = older_client(tenant)
    known = client.create_alert_rule(build_alert_rule("known", "match", filter=DOCUMENTS)).rule
    first = _copied_rule(owner_sql, tenant, known.id, {"kind": "quorum"})
    _changed(older)
    _left_by_the_older(caplog, owner_sql, first, tenant, let_go=(RULES_LET_GO, tenant))
    pair = "SELECT count(*), max(updated_at) FROM alert_rules WHERE tenant_id = %s"
    as_left = _row(owner_sql, pair, tenant)
    with owner_sql.transaction():
        later = _copied_rule(owner_sql, tenant, known.id, {"kind": "quorum", "quorum_of": 2})
        owner_sql.execute(
            "UPDATE alert_rules SET updated_at = (SELECT updated_at - interval '1 minute'"
            " FROM alert_rules WHERE id = %s) WHERE id = %s",
            [first, later],
        )
        owner_sql.execute("DELETE FROM alert_rules WHERE id = %s", [known.id])
    assert _row(owner_sql, pair, tenant) == as_left  # the count and newest time stand
    _changed(older)
    _left_by_the_older(caplog, owner_sql, later, tenant, let_go=(RULES_LET_GO, tenant))
    assert len(_newer_lines(caplog, first)) == 1, _newer_lines(caplog, first)
    owner_sql.execute("DELETE FROM alert_rules WHERE id = ANY(%s::uuid[])", [[first, later]])
    # Forgotten before the module's next test counts what the process remembers.
    _changed(older)
    left = older.service.evaluator._left
    _until(lambda: not {first, later} & left.keys(), "deleted rules are remembered")


def test_what_an_older_process_left_is_forgotten_once_deleted_or_changed(
    older: ServerThread,
    older_client: Callable[[str], AuditClient],
    owner_sql: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    forwarder, evaluator = older.service.forwarder, older.service.evaluator

    def changed() -> None:
        _changed(older)

    tenant = _new_tenant()
    client = older_client(tenant)
    with endpoint() as receiver:
        known = client.create_sink(
            build_sink("known", "webhook", url=receiver.url, secrets=[new_secret()])
        ).sink
        rule = client.create_alert_rule(build_alert_rule("known", "match", filter=DOCUMENTS)).rule
        # What the process remembers of the module's other tests (its
        # forgetting is read there, at the end: nothing outside it shows it).
        sinks_before, rules_before = len(forwarder._left), len(evaluator._left)
        # In one transaction: a step that read the first copy alone left the
        # tenant for it and never read the tenant's rules again while it stood,
        # so the other copies were never said (ci-s55b: 1 rule of 5 logged).
        with owner_sql.transaction():
            sinks = [_newer_filter_copy(owner_sql, tenant, known.id) for _ in range(5)]
            rules = [_copied_rule(owner_sql, tenant, rule.id, {"kind": "quorum"}) for _ in range(5)]
        changed()
        for object_id in sinks + rules:
            _said_once(caplog, object_id)
        # One of each changed by a newer process: the sink met again, as its
        # new self, and said again (the log says what the process remembers);
        # the others not.
        owner_sql.execute("UPDATE sinks SET updated_at = now() WHERE id = %s", [sinks[0]])
        owner_sql.execute("UPDATE alert_rules SET updated_at = now() WHERE id = %s", [rules[0]])
        changed()
        _until(
            lambda: len(_newer_lines(caplog, sinks[0])) == 2, "the changed sink was not met again"
        )
        for object_id in sinks[1:] + rules[1:]:
            assert len(_newer_lines(caplog, object_id)) == 1, _newer_lines(caplog, object_id)
        # All deleted by a newer process: forgotten. Nothing outside the
        # process shows that it forgot (a deleted object is never met again,
        # so never said), hence the read of what it remembers.
        owner_sql.execute("DELETE FROM sinks WHERE id = ANY(%s::uuid[])", [sinks])
        owner_sql.execute("DELETE FROM alert_rules WHERE id = ANY(%s::uuid[])", [rules])
        changed()
        _until(lambda: len(forwarder._left) == sinks_before, "deleted sinks are remembered")
        _until(lambda: len(evaluator._left) == rules_before, "deleted rules are remembered")
        client.delete_sink(known.id)
        client.delete_alert_rule(rule.id)


def test_sinks_left_to_a_newer_release_do_not_wait_for_room(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """At its limit of sinks, a process counts those no process holds, to say
    they wait for one with room: never those it leaves to a newer release."""
    tenant = _new_tenant()
    reader = InMemoryMetricReader()
    with (
        database_of_its_own(migrated_database_url, "rolling-room") as url,
        ServerThread(
            url, forward_max_sinks=1, meter_provider=MeterProvider(metric_readers=[reader])
        ) as server,
        psycopg.connect(url, autocommit=True) as sql,
        AuditClient(server.target, token=server.token(tenant)) as client,
        endpoint() as receiver,
    ):
        known = _document_sink(client, "known", receiver.url, paused=True)
        newer = _newer_filter_copy(sql, tenant, known.id)
        server.loop.call_soon_threadsafe(server.service.forwarder.sinks_changed)
        _said_once(caplog, newer)
        known.paused = False
        client.update_sink(known, fields=["paused"])
        seqs = record(client, 2)
        receiver.wait_for(lambda got: delivered_seqs(got) == seqs)
        server.loop.call_soon_threadsafe(server.service.forwarder.sinks_changed)
        more = record(client, 1)
        receiver.wait_for(lambda got: delivered_seqs(got) == seqs + more)
        assert _gauge(reader, "sealtrail.forward.sinks.waiting") == 0
    waiting = [r.getMessage() for r in caplog.records if "process with room" in r.getMessage()]
    assert waiting == []


def test_resealing_leaves_a_newer_release_s_sink_sealed_as_it_is(
    older: ServerThread,
    older_client: Callable[[str], AuditClient],
    owner_sql: psycopg.Connection[Any],
    newer_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Resealing at start (a process restarted, new secrets key) knows which
    fields of a sink are secrets by its kind: one it does not know is left
    sealed as it is, and said, never a KeyError that stops the start."""
    tenant = _new_tenant()
    client = older_client(tenant)
    known = client.create_sink(
        build_sink("known", "webhook", url="http://127.0.0.1:9/", secrets=[new_secret()],
                   paused=True)
    ).sink  # fmt: skip
    pigeon = _copied_sink(
        owner_sql, tenant, known.id, kind="carrier_pigeon", destination='{"ring": "sealed:x"}'
    )
    before = _row(owner_sql, SINK_ROW, pigeon)
    box = load_secret_box(older.settings)
    _, _, unopenable = asyncio.run(reseal_secrets(newer_database, box))
    assert _row(owner_sql, SINK_ROW, pigeon) == before
    assert not any(pigeon in problem for problem in unopenable)
    _said_left_sealed(caplog, pigeon)
    client.delete_sink(known.id)


def _instances(sql: psycopg.Connection[Any], definition_id: str) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in sql.execute(
            "SELECT tenant_id, id, deployment_revision, filter, destination, paused, updated_at"
            " FROM sinks WHERE deployment_sink_id = %s ORDER BY tenant_id",
            [definition_id],
        ).fetchall()
    ]


def _definition_and_instances(
    sql: psycopg.Connection[Any], definition_id: str
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """A deployment sink's row and its instances' rows."""
    return _row(sql, DEFINITION_ROW, definition_id), _instances(sql, definition_id)


def test_deployment_sinks_a_newer_release_made_are_left_to_it(
    older: ServerThread,
    older_client: Callable[[str], AuditClient],
    owner_sql: psycopg.Connection[Any],
    newer_database: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A deployment sink of a kind, or with a filter key, that a newer release
    added: the older process's pass makes, changes and removes none of its
    instances (said once), the operator's `sink` commands list and show it
    with that sign and refuse to change it, and resealing leaves it sealed."""
    job = older.service.deployment_sinks
    assert job is not None
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET + "\n")
    tenant = _new_tenant()
    record(older_client(tenant), 1)
    with endpoint() as receiver, deployment_operator(newer_database) as operator:
        known = _create(operator, "soc-known", receiver.url, secret_file, "--from", "start")
        narrowed = _create(operator, "soc-narrowed", receiver.url, secret_file)
        # A newer process's change of it: a filter key this release does not know.
        owner_sql.execute(
            'UPDATE deployment_sinks SET filter = filter || \'{"futureField": "x"}\','
            " revision = revision + 1, updated_at = now() WHERE id = %s",
            [narrowed],
        )
        pigeon = str(uuid.uuid4())
        owner_sql.execute(
            "INSERT INTO deployment_sinks (id, name, kind, format, filter, destination, paused,"
            " from_start, changed_by, created_at, updated_at, starts_kept)"
            " SELECT %s, 'soc-pigeon', 'carrier_pigeon', format, filter,"
            ' \'{"loft": "north", "ring": "sealed:x"}\', false, true, changed_by,'
            " now(), now(), true FROM deployment_sinks WHERE id = %s",
            [pigeon, known],
        )
        newer = {narrowed: "futureField", pigeon: "carrier_pigeon"}
        before = {d: _definition_and_instances(owner_sql, d) for d in newer}
        assert len(before[narrowed][1]) >= 1 and before[pigeon][1] == []

        # A tenant whose log begins now: given an instance of the known one only.
        later = _new_tenant()
        record(older_client(later), 1)
        older.run(job.run_pass())
        older.run(job.run_pass())
        until_true(
            owner_sql,
            "SELECT count(*) = 1 FROM sinks WHERE tenant_id = %s AND deployment_sink_id = %s",
            [later, known],
            "the later tenant was given no instance of the known deployment sink",
        )
        made = owner_sql.execute(
            "SELECT deployment_sink_id::text FROM sinks WHERE tenant_id = %s", [later]
        ).fetchall()
        assert made == [(known,)]
        for definition_id, what in newer.items():
            assert _definition_and_instances(owner_sql, definition_id) == before[definition_id]
            [said] = _newer_lines(caplog, definition_id)
            assert NEWER in said and what in said, said

        # The operator's commands: shown with the sign, changes refused, rows left.
        listed = operator("sink", "list")
        assert listed.exit_code == 0, listed.output
        lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
        assert NEWER not in lines[known]
        as_json = {
            d["id"]: d for d in json.loads(operator("sink", "list", "--format", "json").stdout)
        }
        assert as_json[known]["newer_release"] is None
        for definition_id, what in newer.items():
            assert NEWER in lines[definition_id] and what in lines[definition_id]
            assert NEWER in as_json[definition_id]["newer_release"]
            name = as_json[definition_id]["name"]
            shown = operator("sink", "show", name)
            assert shown.exit_code == 0, shown.output
            assert what in json.loads(shown.stdout)["newer_release"]
            for change in (
                ("update", name, "--pause"),
                ("update", name, "--name", "renamed"),
                ("update", name, "--action", "document.*"),
                ("delete", name, "--confirm", name),
            ):
                refused = operator("sink", *change)
                assert refused.exit_code == 1, (change, refused.output)
                assert NEWER in refused.output and name in refused.output, refused.output
            assert _definition_and_instances(owner_sql, definition_id) == before[definition_id]

        # Resealing at start: left sealed as it is, said and counted.
        _, unopenable = asyncio.run(
            reseal_definitions(newer_database, load_secret_box(older.settings))
        )
        assert _row(owner_sql, DEFINITION_ROW, pigeon) == before[pigeon][0]
        assert not any(pigeon in problem for problem in unopenable)
        _said_left_sealed(caplog, pigeon)
        assert any("1 deployment sink" in r.getMessage() and "left sealed" in r.getMessage()
                   for r in caplog.records)  # fmt: skip

        # A newer process takes them back (as this test must, to leave none behind).
        owner_sql.execute("UPDATE deployment_sinks SET deleted_at = now() WHERE id = %s", [pigeon])
        owner_sql.execute("DELETE FROM deployment_sinks WHERE id = %s", [pigeon])
        owner_sql.execute(
            "UPDATE deployment_sinks SET filter = filter - 'futureField',"
            " revision = revision + 1 WHERE id = %s",
            [narrowed],
        )
