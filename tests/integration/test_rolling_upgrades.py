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

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, RpcFailedError, build_alert_rule, build_filter, build_sink
from tests.conftest import ServerThread, database_of_its_own
from tests.http_endpoint import Endpoint, endpoint
from tests.integration.test_forwarding import delivered_seqs, new_secret, record
from tests.polls import until_true

NEWER = "made by a newer Sealtrail"


@pytest.fixture(scope="module")
def newer_database(migrated_database_url: str) -> Iterator[str]:
    with database_of_its_own(migrated_database_url, "rolling") as url:
        with psycopg.connect(url, autocommit=True) as owner:
            # As a newer release's migration adds a kind (0053_email_sinks.sql).
            owner.execute("ALTER TABLE sinks DROP CONSTRAINT sinks_kind_check")
            owner.execute(
                "ALTER TABLE sinks ADD CONSTRAINT sinks_kind_check CHECK (kind IN ('webhook',"
                " 'splunk_hec', 'datadog_logs', 'elasticsearch', 'chat', 'pagerduty', 'email',"
                " 'carrier_pigeon'))"
            )
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
    made: list[AuditClient] = []

    def make(tenant_id: str) -> AuditClient:
        client = AuditClient(older.target, token=older.token(tenant_id))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def second_receiver() -> Iterator[Endpoint]:
    with endpoint() as running:
        yield running


def _new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _copied_sink(
    sql: psycopg.Connection[Any], tenant: str, sink_id: str, *, kind: str, destination: str
) -> str:
    """A copy of a sink's row as a newer release would write one: another
    kind and destination, the same cursor."""
    copy = str(uuid.uuid4())
    sql.execute(
        "INSERT INTO sinks (tenant_id, id, name, kind, format, filter, destination, paused,"
        " created_at, updated_at, cursor_seq)"
        " SELECT tenant_id, %s, 'pigeon post', %s, format, filter, %s::jsonb, false,"
        " created_at, now(), cursor_seq FROM sinks WHERE tenant_id = %s AND id = %s",
        [copy, kind, destination, tenant, sink_id],
    )
    return copy


def _newer_lines(caplog: pytest.LogCaptureFixture, object_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("sealtrail") and object_id in r.getMessage()
    ]


def _said_once(caplog: pytest.LogCaptureFixture, object_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not _newer_lines(caplog, object_id):
        assert time.monotonic() < deadline, f"nothing logged of {object_id}"
        time.sleep(0.05)
    return _newer_lines(caplog, object_id)[0]


def _sink_row(sql: psycopg.Connection[Any], sink_id: str) -> tuple[Any, ...]:
    row = sql.execute(
        "SELECT cursor_seq, delivered_events, last_error, consecutive_failures,"
        " next_attempt_at, filter, destination, kind, updated_at,"
        " (SELECT count(*) FROM sink_dead_letters WHERE sink_id = %s)"
        " FROM sinks WHERE id = %s",
        [sink_id, sink_id],
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_sinks_a_newer_release_made_are_left_to_it_and_the_others_delivered(
    older: ServerThread,
    older_client: Callable[[str], AuditClient],
    owner_sql: psycopg.Connection[Any],
    second_receiver: Endpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sealtrail_server")
    tenant = _new_tenant()
    client = older_client(tenant)
    with endpoint() as receiver:
        known = client.create_sink(
            build_sink(
                "siem",
                "webhook",
                url=receiver.url,
                secrets=[new_secret()],
                filter=build_filter(actions="document.*"),
            )
        ).sink
        pigeon = _copied_sink(
            owner_sql, tenant, known.id, kind="carrier_pigeon", destination='{"loft": "north"}'
        )
        filtered = client.create_sink(
            build_sink(
                "narrowed",
                "webhook",
                url=second_receiver.url,
                secrets=[new_secret()],
                filter=build_filter(actions="document.*"),
            )
        ).sink
        # A newer release's filter: only the events it names go, which this one cannot tell.
        owner_sql.execute(
            'UPDATE sinks SET filter = filter || \'{"futureField": "x"}\', updated_at = now()'
            " WHERE id = %s",
            [filtered.id],
        )
        before = {sink_id: _sink_row(owner_sql, sink_id) for sink_id in (pigeon, filtered.id)}

        seqs = record(client, 3)
        receiver.wait_for(lambda got: delivered_seqs(got) == seqs)
        for sink_id, what in ((pigeon, "carrier_pigeon"), (filtered.id, "futureField")):
            said = _said_once(caplog, sink_id)
            assert NEWER in said and tenant in said and what in said, said
            until_true(
                owner_sql,
                "SELECT lease_owner IS NULL FROM sinks WHERE id = %s",
                [sink_id],
                f"{sink_id} is still leased by the older process",
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
        assert _sink_row(owner_sql, sink_id) == before[sink_id]
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
        with pytest.raises(RpcFailedError, match=f"sink {sink_id} was {NEWER}"):
            client.delete_sink(sink_id)
        assert _sink_row(owner_sql, sink_id) == before[sink_id]
    client.delete_sink(known.id)


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
    row = sql.execute("SELECT fired FROM alert_rules WHERE id = %s", [rule_id]).fetchone()
    assert row is not None
    return int(row[0])


def test_alert_rules_a_newer_release_made_leave_their_tenant_to_it(
    older: ServerThread,
    older_client: Callable[[str], AuditClient],
    owner_sql: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sealtrail_server")
    watched = build_filter(actions="document.*")
    plain, newer_kind, newer_filter, newer_key = (_new_tenant() for _ in range(4))
    clients = {t: older_client(t) for t in (plain, newer_kind, newer_filter, newer_key)}
    rules = {
        t: client.create_alert_rule(build_alert_rule("shared", "match", filter=watched)).rule
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
    }  # fmt: skip
    cursors = {
        t: owner_sql.execute(
            "SELECT cursor_seq FROM alert_cursors WHERE tenant_id = %s", [t]
        ).fetchone()
        for t in newer
    }
    for client in clients.values():
        record(client, 2)
    until_true(
        owner_sql,
        "SELECT fired = 2 FROM alert_rules WHERE id = %s",
        [rules[plain].id],
        "the plain tenant's rule did not fire",
    )
    for tenant, (rule_id, what) in newer.items():
        said = _said_once(caplog, rule_id)
        assert NEWER in said and tenant in said and what in said, said
        until_true(
            owner_sql,
            "SELECT lease_owner IS NULL FROM alert_cursors WHERE tenant_id = %s",
            [tenant],
            f"{tenant}'s rules are still leased by the older process",
        )
    # Another round in the plain tenant: the others' stay where they were.
    record(clients[plain], 1)
    until_true(
        owner_sql,
        "SELECT fired = 3 FROM alert_rules WHERE id = %s",
        [rules[plain].id],
        "the plain tenant's rule did not fire again",
    )
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
