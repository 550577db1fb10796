"""What an operator takes away from tenant admins (docs/retention.md,
"What the operator decides"): a retention floor no policy goes below, and
the purge keeps to even for a policy stored before it; the erasure of a
tenant, which `sealtrail-server tenant erase` then does; and the release of
a legal hold, which `sealtrail-server tenant release-hold` does."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from google.protobuf import json_format

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    PermissionDeniedError,
    RpcFailedError,
    build_event,
    build_filter,
)
from sealtrail.tlog import parse_checkpoint
from sealtrail.v1 import event_pb2
from sealtrail_server import cli
from sealtrail_server.integrity.keys import generate_signer_key
from tests.clock import Clock
from tests.conftest import REDACTION_SECRET, SIGNING_KEY, ServerThread, database_of_its_own
from tests.tenant_rows import rows_of

MIN_DAYS = 30


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def guarded(migrated_database_url: str, clock: Clock) -> Iterator[ServerThread]:
    """A server on the test's clock whose deployment keeps events 30 days at
    least, and whose operator erases tenants and releases legal holds."""
    server = ServerThread(
        migrated_database_url,
        clock=clock,
        checkpoint_interval=0,
        retention_min_days=MIN_DAYS,
        tenant_erasure="operator",
        legal_hold_release="operator",
    )
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def admin(guarded: ServerThread, tenant: str) -> Iterator[AuditClient]:
    with AuditClient(guarded.target, token=guarded.token(tenant)) as client:
        yield client


def _fields(refused: pytest.ExceptionInfo[InvalidArgumentError]) -> dict[str, str]:
    return dict(refused.value.field_violations)


def test_a_policy_shorter_than_the_deployments_minimum_is_refused_naming_the_field(
    admin: AuditClient,
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        admin.set_retention_policy(1)
    assert list(_fields(refused)) == ["policy.default_days"]
    assert "at least 30 days" in _fields(refused)["policy.default_days"]
    assert "deployment" in _fields(refused)["policy.default_days"]
    with pytest.raises(InvalidArgumentError) as refused:
        admin.set_retention_policy(
            "forever", categories={"authentication": 7}, action_prefixes={"rag.*": 29}
        )
    assert set(_fields(refused)) == {"policy.rules[0].days", "policy.rules[1].days"}
    with pytest.raises(InvalidArgumentError):  # a preview is refused as the change would be
        admin.preview_retention_policy(1)
    assert admin.get_retention_policy().policy.default_days == 0  # nothing was stored
    assert not list(admin.query(build_filter(actions="retention.policy_updated")))
    # At the floor, and forever (0), pass.
    kept = admin.set_retention_policy(MIN_DAYS, categories={"authentication": "forever"})
    assert kept.policy.default_days == MIN_DAYS and kept.event_id


def test_a_policy_stored_before_the_floor_was_raised_removes_nothing_younger_than_it(
    guarded: ServerThread,
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    tenant: str,
) -> None:
    """As if set while the deployment had no floor: a day, two and three."""
    rules = [{"category": "authentication", "days": 2}, {"action_prefix": "rag.", "days": 3}]
    sql.execute(
        "INSERT INTO retention_policies (tenant_id, default_days, rules, policy_updated_at)"
        " VALUES (%s, 1, %s, now())",
        [tenant, json.dumps(rules)],
    )
    actions = ("doc.edit", "user.login", "rag.query")
    categories = {"doc.edit": "configuration", "user.login": "authentication"}

    def record_each() -> list[int]:
        return [
            admin.record(
                build_event(action=a, actor_id="u-1", category=categories.get(a, "data_access"))
            ).event.seq
            for a in actions
        ]

    old = record_each()
    clock.advance(MIN_DAYS + 5)
    young = record_each()
    clock.advance(5)  # `old` is 40 days old, `young` 5: both past the policy's days

    assert guarded.service.purger is not None
    guarded.run(guarded.service.purger.run_once())
    left = {e.seq for e in admin.query(build_filter(actions=list(actions)))}
    assert left == set(young)  # the floor's 30 days, not the policy's 1, 2 and 3
    assert not left & set(old)


def operator(url: str, *args: str, signing_key: str = SIGNING_KEY) -> Result:
    """`sealtrail-server ARGS` on the test database, with the test servers' keys."""
    env = {
        "SEALTRAIL_DATABASE_URL": url,
        "SEALTRAIL_SIGNING_KEY": signing_key,
        "SEALTRAIL_REDACTION_KEY": REDACTION_SECRET.hex(),
        "SEALTRAIL_LOG_ORIGIN": "sealtrail.test/log",
    }
    return CliRunner().invoke(cli.main, list(args), env=env)


def test_a_tenant_admin_cannot_erase_where_the_operator_erases_tenants(
    admin: AuditClient, tenant: str
) -> None:
    seq = admin.record(build_event(action="doc.edit", actor_id="u-1")).event.seq
    with pytest.raises(PermissionDeniedError) as refused:
        admin.erase_tenant(tenant)
    assert refused.value.reason == "ERASURE_BY_OPERATOR"
    assert "sealtrail-server tenant erase" in str(refused.value)
    assert [e.seq for e in admin.query(build_filter(actions="doc.edit"))] == [seq]
    _assert_denial_recorded(admin, "EraseTenant")


def test_the_operator_erases_a_tenant_with_its_receipt_and_lists_the_receipts(
    guarded: ServerThread,
    admin: AuditClient,
    tenant: str,
    migrated_database_url: str,
    sql: psycopg.Connection[Any],
) -> None:
    admin.record_batch([build_event(action="doc.edit", actor_id="u-1") for _ in range(3)])
    size = admin.get_checkpoint(fresh=True).tree_size

    mistyped = operator(migrated_database_url, "tenant", "erase", tenant, "--confirm", "acme")
    assert mistyped.exit_code == 2 and "--confirm" in mistyped.output
    unknown = operator(
        migrated_database_url, "tenant", "erase", f"{tenant}-x", "--confirm", f"{tenant}-x"
    )
    assert unknown.exit_code == 1 and "nothing to erase" in unknown.output
    admin.set_legal_hold(True, reason="Case 7")
    held = operator(migrated_database_url, "tenant", "erase", tenant, "--confirm", tenant)
    assert held.exit_code == 1 and "legal hold" in held.output
    released = operator(migrated_database_url, "tenant", "release-hold", tenant, "--reason", "ok")
    assert released.exit_code == 0, released.output
    assert any(rows_of(sql, tenant).values())  # nothing was erased

    erased = operator(migrated_database_url, "tenant", "erase", tenant, "--confirm", tenant)
    assert erased.exit_code == 0, erased.output
    receipt = json.loads(erased.stdout)
    assert receipt["tenantId"] == tenant
    assert receipt["erasedByTokenId"].startswith("sealtrail-server:")
    assert int(receipt["finalTreeSize"]) >= size
    note = receipt["finalCheckpoint"]["note"]
    assert parse_checkpoint(note.split("\n\n", 1)[0] + "\n").tree_size == int(
        receipt["finalTreeSize"]
    )
    assert not any(rows_of(sql, tenant).values())
    with pytest.raises(RpcFailedError):  # its tokens are gone with it
        admin.record(build_event(action="doc.edit", actor_id="u-1"))

    listed = operator(migrated_database_url, "tenant", "erasures")
    assert listed.exit_code == 0, listed.output
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(f"{tenant} ")]
    # Named as who erased it: an operator, not a token (the receipt's field
    # says `sealtrail-server:NAME` where the API's erasures give a token id).
    operator_name = receipt["erasedByTokenId"].removeprefix("sealtrail-server:")
    assert f" by operator {operator_name} " in line
    assert f"size {receipt['finalTreeSize']}" in line
    assert receipt["finalRootHash"] in line


def test_the_operator_s_erasure_with_a_signing_key_no_server_uses_stops_plainly(
    admin: AuditClient, tenant: str, migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """With the ops box's own signing key, not the servers', the erasure died
    on its final checkpoint with a ForeignKeyViolation traceback (helper-170).
    It says which setting to give before it starts, and erases nothing."""
    admin.record_batch([build_event(action="doc.edit", actor_id="u-1") for _ in range(3)])
    other = generate_signer_key("sealtrail.test/log").text()
    erased = operator(
        migrated_database_url, "tenant", "erase", tenant, "--confirm", tenant, signing_key=other
    )
    assert erased.exit_code == 1, erased.output
    assert "Error: this signing key is not one the deployment's servers use" in erased.output
    assert "SEALTRAIL_SIGNING_KEY" in erased.output
    assert erased.exc_info is not None and erased.exc_info[0] is SystemExit
    assert rows_of(sql, tenant)["events"]  # nothing was erased


def test_a_tenant_admin_places_a_legal_hold_but_cannot_release_it(
    admin: AuditClient,
) -> None:
    placed = admin.set_legal_hold(True, reason="Case 7")
    assert placed.legal_hold.on and placed.event_id
    with pytest.raises(PermissionDeniedError) as refused:
        admin.set_legal_hold(False)
    assert refused.value.reason == "HOLD_RELEASE_BY_OPERATOR"
    assert "sealtrail-server tenant release-hold" in str(refused.value)
    assert admin.get_retention_policy().legal_hold.on
    assert not list(admin.query(build_filter(actions="retention.legal_hold_released")))
    _assert_denial_recorded(admin, "SetLegalHold")


def test_an_operators_refusal_ends_saying_what_to_ask_them(admin: AuditClient, tenant: str) -> None:
    """Both refusals ended mid-sentence, "...: ask them to" (helper-196). A
    release's says who releases, true whether a hold is on or not."""
    admin.set_legal_hold(True, reason="Case 8")
    with pytest.raises(PermissionDeniedError) as release:
        admin.set_legal_hold(False)
    assert release.value.message.endswith("(sealtrail-server tenant release-hold)")
    with pytest.raises(PermissionDeniedError) as erase:
        admin.erase_tenant(tenant)
    assert erase.value.message.endswith(": ask them to erase the tenant")


def test_a_release_with_no_hold_on_is_refused_saying_only_the_operator_releases(
    admin: AuditClient,
) -> None:
    """A tenant admin's release of no hold was told to "ask them to release
    the hold", as if one were on. It is still refused (the refusal does not
    depend on whether a hold is on, ADR 0058; docs/retention.md), saying
    what holds either way: only the operator releases a hold."""
    assert not admin.get_retention_policy().legal_hold.on
    with pytest.raises(PermissionDeniedError) as refused:
        admin.set_legal_hold(False)
    assert refused.value.reason == "HOLD_RELEASE_BY_OPERATOR"
    assert refused.value.message == (
        "only this deployment's operator releases legal holds"
        " (sealtrail-server tenant release-hold)"
    )
    assert not admin.get_retention_policy().legal_hold.on
    assert not list(admin.query(build_filter(actions="retention.*")))
    _assert_denial_recorded(admin, "SetLegalHold")


def _assert_denial_recorded(client: AuditClient, rpc: str) -> None:
    """An attempt a stolen admin token would make is in the log, for an alert
    rule to see, as a refusal for a token's role is (ADR 0060)."""
    [denied] = client.query(build_filter(actions="audit_log.access_denied"))
    details = json.loads(json_format.MessageToJson(denied.details))
    assert (details["rpc"], details["reason"]) == (rpc, "operator")
    assert denied.severity == event_pb2.SEVERITY_WARNING


def test_the_operator_releases_a_legal_hold_recorded_in_the_tenants_log(
    admin: AuditClient, tenant: str, migrated_database_url: str
) -> None:
    none = operator(migrated_database_url, "tenant", "release-hold", tenant, "--reason", "x")
    assert none.exit_code == 0 and "no legal hold was set" in none.output  # as the API's
    admin.set_legal_hold(True, reason="Case 7")
    unexplained = operator(migrated_database_url, "tenant", "release-hold", tenant)
    assert unexplained.exit_code == 2 and "--reason" in unexplained.output

    released = operator(
        migrated_database_url, "tenant", "release-hold", tenant, "--reason", "Case 7 closed"
    )
    assert released.exit_code == 0, released.output
    assert not admin.get_retention_policy().legal_hold.on
    [event] = admin.query(build_filter(actions="retention.legal_hold_released"))
    assert event.actor.id.startswith("sealtrail-server:")
    assert event.severity == event_pb2.SEVERITY_WARNING  # it weakens the trail (ADR 0066)
    assert event.details["previous_reason"] == "Case 7"
    assert event.details["reason"] == "Case 7 closed"


def test_the_operator_sealtrail_operator_names_is_the_actor_of_its_records(
    admin: AuditClient, tenant: str, migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in a container, a command's records named `root@<the pod's id>`:
    nobody. SEALTRAIL_OPERATOR names the person (an email, a directory name)."""
    admin.set_legal_hold(True, reason="Case 8")
    # A control character, a line separator, bytes that are no UTF-8, the alert
    # evaluator's own name (helper-210).
    for unfit in ("bad\x1bname", "two\u2028lines", "latin\udce9", "alerts"):
        monkeypatch.setenv("SEALTRAIL_OPERATOR", unfit)
        refused = operator(migrated_database_url, "tenant", "release-hold", tenant, "--reason", "x")
        assert refused.exit_code == 2 and "SEALTRAIL_OPERATOR" in refused.output, unfit
    assert admin.get_retention_policy().legal_hold.on  # refused before any change
    monkeypatch.setenv("SEALTRAIL_OPERATOR", " alice@example.com ")
    released = operator(migrated_database_url, "tenant", "release-hold", tenant, "--reason", "x")
    assert released.exit_code == 0, released.output
    [event] = admin.query(build_filter(actions="retention.legal_hold_released"))
    assert event.actor.id == "sealtrail-server:alice@example.com"


def test_releasing_the_hold_of_an_unknown_tenant_says_it_has_no_log(
    admin: AuditClient, tenant: str, migrated_database_url: str
) -> None:
    """A mistyped tenant was told it "has no legal hold on", as if it were a
    tenant, where retention-limit says it has no log (helper-203)."""
    admin.set_legal_hold(True, reason="Case 9")
    unknown = operator(
        migrated_database_url, "tenant", "release-hold", f"{tenant}-x", "--reason", "closed"
    )
    assert unknown.exit_code == 1
    assert f"tenant {tenant}-x has no log and no token" in unknown.output
    assert admin.get_retention_policy().legal_hold.on


def test_the_operator_lists_every_tenant_with_its_log_hold_and_retention(
    guarded: ServerThread, migrated_database_url: str
) -> None:
    """`sealtrail-server tenant list`: what the operator keeps, tenant by
    tenant, without a token of each; erased ones (only their receipts are
    left) with --erased."""
    import uuid

    kept, held, gone = (f"t-list-{uuid.uuid4().hex[:8]}-{n}" for n in ("a", "b", "c"))
    sizes = {}
    for tenant_id in (kept, held, gone):
        with AuditClient(guarded.target, token=guarded.token(tenant_id)) as client:
            client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in "ab"])
            if tenant_id == held:
                client.set_retention_policy("90d")
                client.set_legal_hold(True, reason="Case 9")
            sizes[tenant_id] = client.get_checkpoint(fresh=True).tree_size
    erased = operator(migrated_database_url, "tenant", "erase", gone, "--confirm", gone)
    assert erased.exit_code == 0, erased.output

    listed = operator(migrated_database_url, "tenant", "list")
    assert listed.exit_code == 0, listed.output
    header, *lines = listed.stdout.splitlines()
    assert header.split() == [
        "TENANT", "EVENTS", "CHECKPOINT", "SIGNED", "HOLD", "RETENTION", "LIMIT"
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines}
    assert gone not in rows
    assert rows[kept][1:3] == [str(sizes[kept])] * 2
    assert rows[kept][4:] == ["off", "forever", "none"]
    assert rows[held][4:] == ["on", "90", "days", "none"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[held][3])
    # Aligned: every column starts where its header does.
    starts = [header.index(name) for name in ("EVENTS", "CHECKPOINT", "SIGNED", "HOLD")]
    for line in (line for line in lines if line.split()[0] in (kept, held)):  # others' vary
        assert all(line[at - 1] == " " for at in starts), line

    as_json = operator(migrated_database_url, "tenant", "list", "--erased", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    by_id = {row["tenant"]: row for row in json.loads(as_json.stdout)}
    assert by_id[held]["events"] >= sizes[held] and by_id[held]["legal_hold"] is True
    assert by_id[held]["retention_default_days"] == 90
    assert by_id[held]["checkpoint_size"] == sizes[held]
    assert by_id[held]["checkpoint_signed_at"].endswith("Z") and by_id[held]["erased_at"] is None
    assert by_id[kept]["retention_default_days"] == 0 and by_id[kept]["legal_hold"] is False
    assert by_id[kept]["retention_max_days"] is None  # no ceiling (retention-limit)
    assert by_id[gone]["erased_at"].endswith("Z")
    assert by_id[gone]["events"] == by_id[gone]["checkpoint_size"] >= sizes[gone]
    assert by_id[gone]["legal_hold"] is None and by_id[gone]["retention_default_days"] is None
    # An erased tenant has no hold, retention nor limit: said `-` in those,
    # and when it was erased in a column of its own (its RETENTION said
    # `erased TIME`, its LIMIT left blank).
    header, *lines = operator(
        migrated_database_url, "tenant", "list", "--erased"
    ).stdout.splitlines()
    assert header.split() == [
        "TENANT", "EVENTS", "CHECKPOINT", "SIGNED", "HOLD", "RETENTION", "LIMIT", "ERASED"
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows[gone][4:] == ["-", "-", "-", by_id[gone]["erased_at"]]
    assert rows[kept][4:] == ["off", "forever", "none", "-"]
    starts = [header.index(name) for name in ("HOLD", "RETENTION", "LIMIT", "ERASED")]
    for line in lines:
        assert all(line[at - 1] == " " and line[at] != " " for at in starts), line


def test_tenant_list_with_no_tenant_says_so_in_a_line_and_in_json_an_empty_array(
    migrated_database_url: str,
) -> None:
    """`tenant list` of a database with no tenant printed its header alone,
    which an operator could not tell from a listing that failed to show its
    rows; `tenant erasures` and `sink list` say theirs in a line."""
    with database_of_its_own(migrated_database_url, "no_tenants") as own:
        listed = operator(own, "tenant", "list")
        with_erased = operator(own, "tenant", "list", "--erased")
        as_json = operator(own, "tenant", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout == "no tenants: no tenant has a log\n"
    assert with_erased.exit_code == 0, with_erased.output
    assert with_erased.stdout == "no tenants: none has a log, and none was erased\n"
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == []


def test_tenant_list_shows_a_tenant_both_live_and_erased_as_two_rows(
    guarded: ServerThread, migrated_database_url: str, sql: psycopg.Connection[Any], tenant: str
) -> None:
    """A receipt beside a log of the same tenant exists only if someone wrote
    it behind the service (a superuser); `tenant list --erased` then failed
    with a TypeError (its sort compared the live row's checkpoint time with
    the erased row's None), where an operator needs the list most. Both rows
    are shown."""
    with AuditClient(guarded.target, token=guarded.token(tenant)) as client:
        client.record(action="doc.edit", actor_id="u")
        checkpoint = client.get_checkpoint(fresh=True)
    sql.execute(
        "INSERT INTO tenant_erasures (tenant_id, erased_at, erased_by, final_tree_size,"
        " final_root_hash, final_checkpoint, removed_rows) VALUES (%s, now(), 'someone', %s,"
        " %s, %s, '{}')",
        [tenant, checkpoint.tree_size, checkpoint.root_hash, checkpoint.note],
    )
    try:
        listed = operator(migrated_database_url, "tenant", "list", "--erased")
    finally:
        sql.execute("DELETE FROM tenant_erasures WHERE tenant_id = %s", [tenant])
    assert listed.exit_code == 0, listed.output
    lines = [line.split() for line in listed.stdout.splitlines() if line.startswith(f"{tenant} ")]
    assert [line[4] for line in lines] == ["off", "-"]  # live first, then its receipt


@pytest.mark.parametrize("given", ["a\x00b", "\x00", "Acme Corp", "x" * 64])
def test_a_tenant_id_that_is_none_is_refused_before_the_database(
    migrated_database_url: str, given: str
) -> None:
    """`token list --tenant` and `tenant release-hold TENANT` took any text:
    a NUL in it ended in psycopg's DataError, a traceback."""
    commands = (
        ("token", "list", "--tenant", given),
        ("tenant", "release-hold", "--reason", "released", "--", given),
    )
    for args in commands:
        refused = operator(migrated_database_url, *args)
        assert refused.exception is None or isinstance(refused.exception, SystemExit), args
        assert refused.exit_code == 2 and "not a tenant id" in refused.output, refused.output


@pytest.mark.parametrize(
    ("reason", "said"),
    [
        ("   ", "Invalid value for --reason: is required: why the hold is released"),
        ("x" * 1025, "Invalid value for --reason: must be at most 1024 characters"),
        ("closed\x1b[2J", "Invalid value for --reason: must not contain control characters"),
    ],
)
def test_a_release_without_a_fit_reason_is_refused_saying_what_a_release_needs(
    admin: AuditClient, tenant: str, migrated_database_url: str, reason: str, said: str
) -> None:
    """A blank reason was refused as "invalid request: reason: is required to
    place a legal hold": the API's words for a hold being placed, told to an
    operator releasing one, behind a prefix naming a field of a request they
    never made."""
    admin.set_legal_hold(True, reason="Case 10")
    refused = operator(migrated_database_url, "tenant", "release-hold", tenant, "--reason", reason)
    assert refused.exit_code == 2, refused.output
    assert refused.output.rstrip().endswith(f"Error: {said}"), refused.output
    assert "place" not in refused.output and "invalid request" not in refused.output
    assert admin.get_retention_policy().legal_hold.on
