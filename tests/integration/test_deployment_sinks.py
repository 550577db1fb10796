"""Deployment-wide sinks (ADR 0070, docs/forwarding.md "Deployment-wide
sinks"): the operator's `sealtrail-server sink` sends every tenant's events
to one destination through a managed sink in each tenant, which the tenant
sees (and sees recorded in its log) but cannot change. A database of their
own: a deployment sink reaches every tenant of its database."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from google.protobuf import json_format
from psycopg.types.json import Jsonb

from sealtrail import (
    AuditClient,
    PermissionDeniedError,
    RpcFailedError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail import _cli as client_cli
from sealtrail.v1 import alerting_pb2, event_pb2, forwarding_pb2
from sealtrail_server.api import managed_sinks
from tests.conftest import (
    ServerThread,
    clients_of,
    database_of_its_own,
    deployment_operator,
    run_operator,
)
from tests.http_endpoint import Endpoint, Received, Reply, endpoint
from tests.service_login import service_login_url

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


@pytest.fixture(scope="module")
def own_database(database_url: str) -> Iterator[str]:
    with database_of_its_own(database_url, "deployment_sinks") as url:
        yield url


@pytest.fixture(scope="module")
def deployment(own_database: str) -> Iterator[ServerThread]:
    server = ServerThread(own_database, deployment_sink_interval=0.3)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def receiver() -> Iterator[Endpoint]:
    with endpoint() as running:
        yield running


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
def operator(own_database: str) -> Iterator[Callable[..., Result]]:
    """`sealtrail-server ARGS` on the deployment's database; every
    deployment sink a test made is deleted after it."""
    with deployment_operator(own_database) as run:
        yield run


@pytest.fixture
def admin_of(deployment: ServerThread) -> Iterator[Callable[[str], AuditClient]]:
    with clients_of(deployment) as make:
        yield make


@pytest.fixture
def sql(own_database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(own_database, autocommit=True) as conn:
        yield conn


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _events_of(received: list[Received], tenant_id: str) -> list[dict[str, Any]]:
    """The events delivered of `tenant_id`, each checked to be labelled with
    it (the webhook's envelope and the event itself)."""
    found = []
    for request in received:
        data = json.loads(request.body)["data"]
        events = [e for e in data["events"] if e["tenant_id"] == tenant_id]
        if events:
            assert data["tenant_id"] == tenant_id
            assert all(e["tenant_id"] == tenant_id for e in data["events"])
            found += events
    return found


def _delivered(tenant_id: str, *actions: str) -> Callable[[list[Received]], bool]:
    def done(received: list[Received]) -> bool:
        got = {e["action"] for e in _events_of(received, tenant_id)}
        return set(actions) <= got

    return done


def _create(
    operator: Callable[..., Result], name: str, url: str, secret_file: Path, *more: str
) -> str:
    made = operator(
        "sink", "create", name, "--kind", "webhook", "--url", url, "--secret", f"@{secret_file}",
        *more,
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    return made.stdout.strip().splitlines()[-1]


def _managed(client: AuditClient) -> list[forwarding_pb2.Sink]:
    return [sink for sink in client.list_sinks() if sink.managed]


def test_a_deployment_sink_forwards_every_tenants_events_labelled_with_its_tenant(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
) -> None:
    first, second = _tenant(), _tenant()
    for tenant_id in (first, second):
        admin_of(tenant_id).record(build_event(action="doc.edit", actor_id="u-1"))

    _create(operator, "soc", receiver.url + "/soc", secret_file, "--from", "start")

    received = receiver.wait_for(
        lambda r: (
            _delivered(first, "doc.edit", "sink.created")(r)
            and _delivered(second, "doc.edit", "sink.created")(r)
        )
    )
    for tenant_id in (first, second):
        assert [e["seq"] for e in _events_of(received, tenant_id)][:2] == [1, 2]
        admin = admin_of(tenant_id)
        [sink] = _managed(admin)
        assert sink.name == "soc" and sink.webhook.url.startswith(receiver.url)
        # The operator's secret gives nothing away, not even its last characters.
        assert list(sink.webhook.secret_hints) == []
        [created] = admin.query(build_filter(actions="sink.created"))
        assert created.actor.type == event_pb2.ACTOR_TYPE_SYSTEM
        assert created.actor.id.startswith("sealtrail-server:")
        assert created.resource.id == sink.id
        details = json_format.MessageToDict(created.details)
        assert details["managed"] is True and details["from_seq"] == 1
        assert SECRET not in str(created)


def test_from_now_starts_each_existing_tenant_at_the_event_recording_its_instance(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
) -> None:
    tenant_id = _tenant()
    admin = admin_of(tenant_id)
    admin.record_batch([build_event(action="doc.edit", actor_id="u-1") for _ in range(3)])

    _create(operator, "soc-now", receiver.url, secret_file)  # --from now, the default

    received = receiver.wait_for(_delivered(tenant_id, "sink.created"))
    assert [e["seq"] for e in _events_of(received, tenant_id)] == [4]


def test_a_tenant_whose_log_begins_later_is_forwarded_from_its_first_event(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
) -> None:
    _create(operator, "soc-later", receiver.url, secret_file)
    newcomer = _tenant()
    admin = admin_of(newcomer)
    admin.record_batch([build_event(action="doc.create", actor_id="u-2") for _ in range(2)])

    received = receiver.wait_for(_delivered(newcomer, "doc.create", "sink.created"))
    events = _events_of(received, newcomer)
    assert [e["seq"] for e in events if e["action"] == "doc.create"] == [1, 2]
    # The cursor moves once the delivery's answer is in: after the receiver saw it.
    deadline = time.monotonic() + 30
    while (sink := _managed(admin)[0]).state.cursor_seq < 2:
        assert time.monotonic() < deadline, f"the cursor stays at {sink.state.cursor_seq}"
        time.sleep(0.05)


def test_a_tenant_admin_cannot_change_pause_replay_or_delete_a_managed_sink(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
) -> None:
    tenant_id = _tenant()
    admin = admin_of(tenant_id)
    admin.record(build_event(action="doc.edit", actor_id="u-1"))
    _create(operator, "soc-kept", receiver.url, secret_file)
    [sink] = _managed(admin)

    attempts: list[Callable[[], object]] = [
        lambda: admin.update_sink(forwarding_pb2.Sink(id=sink.id, paused=True), fields=["paused"]),
        lambda: admin.update_sink(forwarding_pb2.Sink(id=sink.id, name="mine"), fields=["name"]),
        lambda: admin.delete_sink(sink.id),
        lambda: admin.replay_sink(sink.id, seq_range=(1, 1)),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionDeniedError) as refused:
            attempt()
        assert refused.value.reason == "SINK_MANAGED_BY_OPERATOR"
        assert "sealtrail-server sink" in str(refused.value)
    [still] = _managed(admin)
    assert (still.name, still.paused) == ("soc-kept", False)
    assert [e.action for e in admin.query(build_filter(actions="sink.*"))] == ["sink.created"]


def test_the_tenants_sink_listing_marks_the_managed_sink(
    operator: Callable[..., Result],
    deployment: ServerThread,
    receiver: Endpoint,
    secret_file: Path,
) -> None:
    """`sealtrail sinks` shows a tenant admin which sinks the operator keeps
    (its pause, update and delete are refused), not as one of its own."""
    tenant_id = _tenant()
    env = {"SEALTRAIL_SERVER": deployment.target, "SEALTRAIL_TOKEN": deployment.token(tenant_id)}
    recorded = ["record", "--action", "doc.edit", "--actor-id", "u"]
    CliRunner().invoke(client_cli.main, recorded, env=env, catch_exceptions=False)
    _create(operator, "soc-listed", receiver.url, secret_file)
    listed = CliRunner().invoke(client_cli.main, ["sinks"], env=env, catch_exceptions=False)
    [row] = [line for line in listed.stdout.splitlines() if "soc-listed" in line]
    assert "on, managed" in row, listed.stdout


def test_a_managed_sink_takes_nothing_from_the_tenants_own_fifty(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
) -> None:
    tenant_id = _tenant()
    admin = admin_of(tenant_id)
    admin.record(build_event(action="doc.edit", actor_id="u-1"))
    _create(operator, "soc-extra", receiver.url, secret_file)
    for index in range(50):
        admin.create_sink(
            build_sink(f"own-{index}", "webhook", url=receiver.url, secrets=[SECRET], paused=True)
        )
    assert len(admin.list_sinks()) == 51
    with pytest.raises(RpcFailedError) as refused:
        admin.create_sink(build_sink("one-more", "webhook", url=receiver.url, secrets=[SECRET]))
    assert refused.value.reason == "TOO_MANY_SINKS"


def test_an_update_changes_every_instance_and_each_tenants_log_says_so(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
) -> None:
    tenants = [_tenant(), _tenant()]
    for tenant_id in tenants:
        admin_of(tenant_id).record(build_event(action="doc.edit", actor_id="u-1"))
    _create(operator, "soc-narrowed", receiver.url, secret_file)

    changed = operator("sink", "update", "soc-narrowed", "--action", "doc.*")

    assert changed.exit_code == 0, changed.output
    for tenant_id in tenants:
        admin = admin_of(tenant_id)
        [sink] = _managed(admin)
        assert list(sink.filter.actions) == ["doc.*"]
        [updated] = admin.query(build_filter(actions="sink.updated"))
        assert updated.severity == event_pb2.SEVERITY_WARNING  # its filter narrowed
        assert list(updated.details["weakens"]) == ["filter_narrowed"]
        assert updated.actor.type == event_pb2.ACTOR_TYPE_SYSTEM
        # Where the new filter starts: the instance's cursor at the change, plus one.
        [created] = admin.query(build_filter(actions="sink.created"))
        assert created.details["from_seq"] <= updated.details["from_seq"] <= updated.seq


def test_an_interrupted_update_is_finished_by_a_pass_and_no_instance_stays_ahead(
    deployment: ServerThread,
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`sink update` dies (Ctrl-C, its session lost) after rewriting one
    tenant's instance: the definition's change stands, a pass brings the
    other instances to it, and a later update reaches every one of them
    (helper-189: the first instance stayed ahead of a rolled-back definition,
    and the next update, reusing its revision, skipped it)."""
    for _ in range(2):
        admin_of(_tenant()).record(build_event(action="doc.edit", actor_id="u-1"))
    definition_id = _create(operator, "soc-interrupted", receiver.url, secret_file)
    real = managed_sinks.ManagedSinks._rewrite
    command = threading.get_ident()  # the command's thread, not the server's
    rewritten: list[str] = []

    async def dying(self: Any, deployment_: Any, tenant_id: str, sink_id: str) -> bool:
        if threading.get_ident() == command and rewritten:
            raise KeyboardInterrupt("the operator's command, interrupted midway")
        rewritten.append(tenant_id)
        return await real(self, deployment_, tenant_id, sink_id)

    monkeypatch.setattr(managed_sinks.ManagedSinks, "_rewrite", dying)
    interrupted = operator("sink", "update", "soc-interrupted", "--action", "doc.*")
    monkeypatch.setattr(managed_sinks.ManagedSinks, "_rewrite", real)
    assert interrupted.exit_code == 130 and len(rewritten) == 1  # as a shell says of Ctrl-C

    def instances() -> list[tuple[str, int, Any, bool]]:
        return sql.execute(
            "SELECT tenant_id, deployment_revision, filter, paused FROM sinks"
            " WHERE deployment_sink_id = %s ORDER BY tenant_id",
            [definition_id],
        ).fetchall()

    def passed_until(brought: Callable[[], bool]) -> None:
        """Passes until `brought` (30 s at most): the server's own passes,
        every 0.3 s, hold the definition's lock a step at a time, and one
        whose lock a pass here cannot take leaves the definition to it."""
        jobs = deployment.service.deployment_sinks
        assert jobs is not None
        deadline = time.monotonic() + 30
        while not brought():
            assert time.monotonic() < deadline, f"the instances stay at {instances()}"
            deployment.run(jobs.run_pass())

    edited = (2, json.dumps({"actions": ["doc.*"]}))
    passed_until(lambda: {(r, json.dumps(f)) for _, r, f, _ in instances()} == {edited})
    paused = operator("sink", "update", "soc-interrupted", "--pause")
    assert paused.exit_code == 0, paused.output
    passed_until(lambda: {(revision, p) for _, revision, _, p in instances()} == {(3, True)})


def test_a_managed_sinks_etag_gives_nothing_of_the_operators_secret_away(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    tmp_path: Path,
) -> None:
    """A tenant rebuilds what the etag was computed from out of its GetSink
    answer and guesses the rest: the etag of a managed sink is over what
    the tenant is shown, and its guesses of the operator's token's last four
    characters never match (helper-189: the etag took in the token's hint,
    found offline in 16**4 hashes)."""
    token = str(uuid.uuid4())  # a Splunk HEC token is a UUID
    token_file = tmp_path / "hec.txt"
    token_file.write_text(token + "\n")
    admin = admin_of(_tenant())
    admin.record(build_event(action="doc.edit", actor_id="u-1"))
    made = operator(
        "sink", "create", "soc-etag", "--kind", "splunk_hec", "--url", receiver.url,
        "--token", f"@{token_file}", "--index", "tenants",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    [sink] = _managed(admin)
    assert sink.splunk_hec.token_hint == ""
    destination = json_format.MessageToDict(sink.splunk_hec, preserving_proto_field_name=True)
    fields = {
        "name": sink.name,
        "kind": "splunk_hec",
        "format": "sealtrail_json",
        "filter": json_format.MessageToDict(sink.filter),
        "paused": sink.paused,
        "update_time": sink.update_time.ToDatetime(tzinfo=UTC).isoformat(),
    }

    def etag(token_hint: str) -> str:
        shown = {**fields, "destination": {**destination, "token_hint": token_hint}}
        material = json.dumps(shown, sort_keys=True, separators=(",", ":")).encode()
        return f'"{hashlib.sha256(material).hexdigest()[:32]}"'

    assert sink.etag != etag(token[-4:])
    assert sink.etag == etag("")  # what the tenant is shown, and nothing more


def test_an_answer_echoing_the_request_keeps_the_operators_token_from_tenants(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    tmp_path: Path,
) -> None:
    """A proxy or collector that echoes the request's headers in its refusal:
    the sink's last error and dead letters, which the tenant reads, say so
    without the operator's HEC token (helper-189: they carried it whole)."""
    token = "soc-" + uuid.uuid4().hex
    token_file = tmp_path / "hec.txt"
    token_file.write_text(token + "\n")

    def echo(received: Received, index: int) -> Reply:
        body = json.dumps({"text": "Bad request", "headers": received.headers}).encode()
        return Reply(status=400, body=body)

    receiver.responder = echo
    admin = admin_of(_tenant())
    admin.record(build_event(action="doc.edit", actor_id="u-1"))
    made = operator(
        "sink", "create", "soc-echoed", "--kind", "splunk_hec", "--url", receiver.url,
        "--token", f"@{token_file}",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    deadline = time.monotonic() + 30
    while not (sink := _managed(admin)[0]).state.dead_letters:
        assert time.monotonic() < deadline, f"no dead letter: {sink.state}"
        time.sleep(0.1)
    letters = [letter.error for letter in admin.list_dead_letters(sink.id)]
    errors = [error for error in (sink.state.last_error, *letters) if error]
    assert all(error.startswith("HTTP 400 from 127.0.0.1:") for error in errors), errors
    assert not any(token in error or token[-8:] in error for error in errors), errors
    assert all('"authorization": "Splunk \u2026"' in error for error in errors), errors


def test_an_alert_rule_may_not_route_alerts_past_a_managed_sinks_filter(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
    sql: psycopg.Connection[Any],
) -> None:
    """A rule's alerts go to each of its sinks whose filter does not take them
    as replays that bypass that filter: routed to the operator's sink, a
    tenant's rule pushed records of its choosing past the operator's filter
    (helper-189). Naming a managed sink in a rule is refused; a rule that
    names one already sends it only what its filter takes."""
    tenant_id = _tenant()
    admin = admin_of(tenant_id)
    admin.record(build_event(action="doc.edit", actor_id="u-1"))
    _create(operator, "soc-alerted", receiver.url, secret_file, "--action", "soc.*")
    # Paused: a replay queued for it stays to be seen.
    assert operator("sink", "update", "soc-alerted", "--pause").exit_code == 0
    [managed] = _managed(admin)
    own = admin.create_sink(build_sink("own", "webhook", url=receiver.url, secrets=[SECRET])).sink
    documents = build_filter(actions="doc.*")
    routed = build_alert_rule("docs", "match", filter=documents, sink_ids=[own.id, managed.id])
    with pytest.raises(PermissionDeniedError) as refused:
        admin.create_alert_rule(routed)
    assert refused.value.reason == "SINK_MANAGED_BY_OPERATOR"
    assert "rule.sink_ids[1]" in str(refused.value)
    assert "sealtrail-server sink" in str(refused.value)
    rule = admin.create_alert_rule(build_alert_rule("docs", "match", filter=documents)).rule
    with pytest.raises(PermissionDeniedError) as refused:
        admin.update_alert_rule(
            alerting_pb2.AlertRule(id=rule.id, sink_ids=[managed.id]), fields=["sink_ids"]
        )
    assert refused.value.reason == "SINK_MANAGED_BY_OPERATOR"
    assert "rule.sink_ids[0]" in str(refused.value)

    # A rule made before the refusal, naming the managed sink.
    sql.execute(
        "UPDATE alert_rules SET sink_ids = %s WHERE tenant_id = %s AND id = %s",
        [Jsonb([managed.id]), tenant_id, rule.id],
    )
    for index in range(3):
        admin.record(build_event(action="doc.edit", actor_id="u-1", description=f"text {index}"))
    deadline = time.monotonic() + 30
    while [r.fired for r in admin.list_alert_rules() if r.id == rule.id] != [3]:
        assert time.monotonic() < deadline, "the rule did not fire three times"
        time.sleep(0.1)
    queued = sql.execute(
        "SELECT count(*) FROM sink_replays WHERE tenant_id = %s AND sink_id = %s",
        [tenant_id, managed.id],
    ).fetchone()
    assert queued == (0,)


def test_erasing_a_tenant_removes_its_instance_and_no_pass_makes_it_again(
    deployment: ServerThread,
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
    sql: psycopg.Connection[Any],
) -> None:
    tenant_id = _tenant()
    admin = admin_of(tenant_id)
    admin.record(build_event(action="doc.edit", actor_id="u-1"))
    _create(operator, "soc-erased", receiver.url, secret_file)
    assert len(_managed(admin)) == 1

    admin.erase_tenant(tenant_id)
    assert deployment.service.deployment_sinks is not None
    deployment.run(deployment.service.deployment_sinks.run_pass())

    left = sql.execute("SELECT count(*) FROM sinks WHERE tenant_id = %s", [tenant_id]).fetchone()
    assert left == (0,)
    shown = json.loads(operator("sink", "show", "soc-erased").stdout)
    assert tenant_id not in {i["tenant_id"] for i in shown["instances"]}


def test_deleting_the_definition_removes_every_instance_with_a_warning_in_each_log(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
    sql: psycopg.Connection[Any],
) -> None:
    tenants = [_tenant(), _tenant()]
    for tenant_id in tenants:
        admin_of(tenant_id).record(build_event(action="doc.edit", actor_id="u-1"))
    definition_id = _create(operator, "soc-gone", receiver.url, secret_file)

    mistyped = operator("sink", "delete", "soc-gone", "--confirm", "soc")
    assert mistyped.exit_code == 2 and "--confirm" in mistyped.output
    deleted = operator("sink", "delete", "soc-gone", "--confirm", "soc-gone")

    assert deleted.exit_code == 0, deleted.output
    for tenant_id in tenants:
        admin = admin_of(tenant_id)
        assert _managed(admin) == []
        [gone] = admin.query(build_filter(actions="sink.deleted"))
        assert gone.severity == event_pb2.SEVERITY_WARNING
        assert list(gone.details["weakens"]) == ["deleted"]
    rows = sql.execute(
        "SELECT count(*) FROM sinks WHERE deployment_sink_id = %s", [definition_id]
    ).fetchone()
    assert rows == (0,)
    assert "soc-gone" not in operator("sink", "list").stdout


def test_the_service_login_cannot_change_the_operators_deployment_sinks(
    own_database: str,
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
) -> None:
    """A stolen service login (SEALTRAIL_DATABASE_URL) paused and re-filtered
    the operator's SOC sink for every tenant, each tenant's log naming an
    operator it made up (helper-203): definitions are written as the owner,
    and the service's roles only read them."""
    tenant_id = _tenant()
    admin_of(tenant_id).record(build_event(action="doc.edit", actor_id="u-1"))
    definition_id = _create(operator, "soc-guarded", receiver.url, secret_file)
    tampering = [
        "UPDATE deployment_sinks SET paused = true, filter = '{}',"
        " changed_by = 'sealtrail-server:alice@ops-box' WHERE id = %(id)s",
        "UPDATE deployment_sinks SET deleted_at = now() WHERE id = %(id)s",
        "INSERT INTO deployment_sinks (id, name, kind, format, filter, destination, from_start,"
        " changed_by, created_at, updated_at) SELECT gen_random_uuid(), 'rogue', kind, format,"
        " filter, destination, true, changed_by, now(), now() FROM deployment_sinks"
        " WHERE id = %(id)s",
        "DELETE FROM deployment_sinks WHERE id = %(id)s",  # not being deleted
    ]
    with psycopg.connect(service_login_url(own_database), autocommit=True) as login:
        for role in (None, "sealtrail_system", "sealtrail_service"):
            if role is not None:
                login.execute(f"SET ROLE {role}")
            for statement in tampering:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    login.execute(statement, {"id": definition_id})

    paused = operator("sink", "update", "soc-guarded", "--pause")
    assert paused.exit_code == 0, paused.output
    [sink] = _managed(admin_of(tenant_id))
    assert sink.paused
    deleted = operator("sink", "delete", "soc-guarded", "--confirm", "soc-guarded")
    assert deleted.exit_code == 0, deleted.output
    assert _managed(admin_of(tenant_id)) == []


def test_the_operator_is_told_which_option_is_wrong(
    operator: Callable[..., Result], receiver: Endpoint, secret_file: Path
) -> None:
    no_secret = operator("sink", "create", "soc-bad", "--kind", "webhook", "--url", receiver.url)
    assert no_secret.exit_code == 2 and "--secret" in no_secret.output
    internal = operator(
        "sink", "create", "soc-bad", "--kind", "webhook", "--url", "https://10.1.2.3/x",
        "--secret", f"@{secret_file}",
    )  # fmt: skip
    assert internal.exit_code == 2 and "--url" in internal.output
    no_level = operator(
        "sink", "create", "soc-bad", "--kind", "webhook", "--url", receiver.url,
        "--secret", f"@{secret_file}", "--severity", "error", "--exact-severity", "info",
    )  # fmt: skip
    assert no_level.exit_code == 2 and "--exact-severity" in no_level.output
    # Options named apart from their field: --exclude-action (exclude_actions),
    # --actor-domain (actor_email_domain); the error named options none has. And
    # --user-agent, its field's name; --http-route and --changed-field, each a
    # value of a list (`sink.filter.http_routes[0]`).
    for option, value in (
        ("--exclude-action", "doc edit"),
        ("--actor-domain", "a@b.example"),
        ("--user-agent", "curl\tx"),
        ("--http-route", "/v1/x?id=7"),
        ("--changed-field", "rate\x00limit"),  # NUL, the one Record refuses
    ):
        refused = operator(
            "sink", "create", "soc-bad", "--kind", "webhook", "--url", receiver.url,
            "--secret", f"@{secret_file}", option, value,
        )  # fmt: skip
        assert refused.exit_code == 2 and f"{option} (sink.filter." in refused.output, (
            refused.output
        )
    # Both at once: each said by its option.
    both = operator(
        "sink", "create", "soc-bad", "--kind", "webhook", "--url", receiver.url,
        "--secret", f"@{secret_file}", "--http-route", "/v1/plans/{id}", "--http-route", "",
        "--changed-field", "rate_limit", "--changed-field", "",
    )  # fmt: skip
    assert both.exit_code == 2, both.output
    assert "--http-route (sink.filter.http_routes[1]) is empty" in both.output, both.output
    assert "--changed-field (sink.filter.changed_fields[1]) is empty" in both.output, both.output
    # A pair of flags, either of which sets the field: both named.
    contradiction = operator(
        "sink", "create", "soc-bad", "--kind", "webhook", "--url", receiver.url,
        "--secret", f"@{secret_file}", "--http-route", "/v1/plans/{id}", "--no-http-route",
    )  # fmt: skip
    assert contradiction.exit_code == 2, contradiction.output
    said = "--has-http-route/--no-http-route (sink.filter.http_route_presence) absent"
    assert said in contradiction.output, contradiction.output
    _create(operator, "soc-twice", receiver.url, secret_file)
    again = operator(
        "sink", "create", "soc-twice", "--kind", "webhook", "--url", receiver.url,
        "--secret", f"@{secret_file}",
    )  # fmt: skip
    assert again.exit_code == 1 and "already" in again.output


def test_a_sink_name_with_a_nul_is_no_sink_not_a_traceback(
    operator: Callable[..., Result],
) -> None:
    """No name holds a NUL: looking one up ended in PostgreSQL's refusal
    (psycopg's DataError), a traceback."""
    for args in (
        ("sink", "show", "soc\x00"),
        ("sink", "update", "soc\x00", "--name", "other"),
        ("sink", "delete", "soc\x00", "--confirm", "soc\x00"),
    ):
        refused = operator(*args)
        assert refused.exit_code == 1, (args, refused.output)
        assert "no deployment sink 'soc\\x00'" in refused.output, refused.output


def test_a_pagerduty_deployment_sink_pages_each_tenant_its_key_hidden_from_them(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    tmp_path: Path,
) -> None:
    """The operator's pager (ADR 0131): one routing key for every tenant, each
    tenant's events paged under a dedup_key of its own, the key shown to none."""
    receiver.responder = lambda received, index: Reply(202, b'{"status":"success"}')
    routing_key = uuid.uuid4().hex  # 32 characters, as an integration key's
    key_file = tmp_path / "pd-key.txt"
    key_file.write_text(routing_key + "\n")
    tenant_id = _tenant()
    admin = admin_of(tenant_id)
    admin.record(build_event(action="doc.edit", actor_id="u-1"))
    made = operator(
        "sink", "create", "soc-pager", "--kind", "pagerduty", "--url", receiver.url,
        "--routing-key", f"@{key_file}", "--action", "pager.test",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert routing_key not in made.output
    paged = admin.record(build_event(action="pager.test", actor_id="u-1")).event

    def of_tenant(received: list[Received]) -> list[dict[str, Any]]:
        pages = [json.loads(request.body) for request in received]
        return [page for page in pages if page["payload"]["group"] == tenant_id]

    [page] = of_tenant(receiver.wait_for(lambda r: bool(of_tenant(r))))
    assert receiver.requests()[0].path == "/v2/enqueue"
    assert page["routing_key"] == routing_key
    assert page["dedup_key"] == f"sealtrail:{tenant_id}:{paged.id}"
    [sink] = _managed(admin)
    assert sink.WhichOneof("destination") == "pagerduty"
    assert sink.pagerduty.routing_key == "" and sink.pagerduty.routing_key_hint == ""
    [created] = admin.query(build_filter(actions="sink.created"))
    assert routing_key not in str(created) and routing_key[-4:] not in str(created)
    listed = operator("sink", "list")
    assert listed.exit_code == 0 and routing_key not in listed.output


def test_the_listing_says_why_the_oldest_dead_letter_of_any_tenant_was_parked(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
    sql: psycopg.Connection[Any],
) -> None:
    """`sealtrail sinks` says why a sink's oldest dead letter was parked; the
    operator's listing said only how many waited across the tenants. It
    names the oldest waiting in any tenant's instance, its tenant and the
    destination's words, read as ListDeadLetters reads a tenant's."""
    tenants = [_tenant(), _tenant(), _tenant()]
    for tenant_id in tenants:
        admin_of(tenant_id).record(build_event(action="doc.edit", actor_id="u-1"))
    definition_id = _create(operator, "soc-parked", receiver.url, secret_file)
    quiet_id = _create(operator, "soc-quiet", receiver.url, secret_file)
    instance = {tenant_id: _managed(admin_of(tenant_id)) for tenant_id in tenants}
    parked = [  # (tenant, how long ago, why): the second tenant's first is the oldest
        (tenants[0], 60, "HTTP 422 from soc: no such field"),
        (tenants[1], 7200, "HTTP 400 from soc: <b>mapping</b> refused"),
        (tenants[1], 30, "HTTP 400 from soc: later"),
    ]
    for tenant_id, seconds, why in parked:
        [sink] = [s for s in instance[tenant_id] if s.name == "soc-parked"]
        _park(sql, tenant_id, sink.id, seconds, why)

    listed = operator("sink", "list")
    assert listed.exit_code == 0, listed.output
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(definition_id)]
    assert line.endswith(
        f"dead letters 3  oldest dead letter (tenant {tenants[1]}):"
        " HTTP 400 from soc: <b>mapping</b> refused"
    ), line
    [quiet] = [line for line in listed.stdout.splitlines() if line.startswith(quiet_id)]
    assert quiet.endswith("dead letters 0"), quiet
    as_json = operator("sink", "list", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    found = {d["id"]: d for d in json.loads(as_json.stdout)}
    oldest = found[definition_id]["oldest_dead_letter"]
    [held] = [s for s in instance[tenants[1]] if s.name == "soc-parked"]
    assert (oldest["tenant_id"], oldest["sink_id"]) == (tenants[1], held.id)
    assert oldest["error"] == "HTTP 400 from soc: <b>mapping</b> refused"
    assert found[quiet_id]["oldest_dead_letter"] is None


def _park(sql: psycopg.Connection[Any], tenant_id: str, sink_id: str, ago: int, why: str) -> None:
    """A dead letter in the tenant's sink, parked `ago` seconds ago for `why`
    (the destination's words)."""
    sql.execute(
        "INSERT INTO sink_dead_letters (tenant_id, sink_id, id, first_seq, last_seq,"
        " event_count, http_status, error, created_at) VALUES (%s, %s, gen_random_uuid(),"
        " 1, 1, 1, 400, %s, now() - %s * interval '1 second')",
        [tenant_id, sink_id, why, ago],
    )


def test_show_says_why_each_tenants_oldest_dead_letter_was_parked(
    operator: Callable[..., Result],
    admin_of: Callable[[str], AuditClient],
    receiver: Endpoint,
    secret_file: Path,
    sql: psycopg.Connection[Any],
) -> None:
    """`sink list` names the oldest dead letter of any tenant; `sink show`
    gave each tenant's instance its count and last error alone (a parking
    sets none). Each instance says why its own oldest waiting was parked,
    as ListDeadLetters reads it, or null with none waiting."""
    tenants = [_tenant(), _tenant(), _tenant()]
    for tenant_id in tenants:
        admin_of(tenant_id).record(build_event(action="doc.edit", actor_id="u-1"))
    _create(operator, "soc-shown", receiver.url, secret_file)
    sink_of = {
        tenant_id: next(s.id for s in _managed(admin_of(tenant_id)) if s.name == "soc-shown")
        for tenant_id in tenants
    }
    _park(sql, tenants[0], sink_of[tenants[0]], 30, "HTTP 400 from soc: later")
    _park(sql, tenants[0], sink_of[tenants[0]], 7200, "HTTP 422 from soc: <b>no</b> field")
    _park(sql, tenants[1], sink_of[tenants[1]], 60, "HTTP 400 from soc: mapping refused")

    shown = operator("sink", "show", "soc-shown")
    assert shown.exit_code == 0, shown.output
    found = {i["tenant_id"]: i for i in json.loads(shown.stdout)["instances"]}
    first, second, third = (found[tenant_id] for tenant_id in tenants)
    assert (first["dead_letters"], first["last_error"]) == (2, "")
    assert first["oldest_dead_letter"]["error"] == "HTTP 422 from soc: <b>no</b> field"
    assert first["oldest_dead_letter"]["sink_id"] == sink_of[tenants[0]]
    assert first["oldest_dead_letter"]["http_status"] == 400
    assert second["oldest_dead_letter"]["error"] == "HTTP 400 from soc: mapping refused"
    assert second["oldest_dead_letter"]["tenant_id"] == tenants[1]
    assert third["dead_letters"] == 0 and third["oldest_dead_letter"] is None


def test_no_deployment_sink_to_list_is_said_in_a_line_and_in_json_an_empty_array(
    database_url: str,
) -> None:
    """`sink list` with no deployment sink printed nothing at all, which an
    operator could not tell from a listing that failed to show."""
    with database_of_its_own(database_url, "no_deployment_sinks") as own:
        listed = run_operator(own, "sink", "list")
        as_json = run_operator(own, "sink", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout == "no deployment sinks (`sealtrail-server sink create` makes one)\n"
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == []
