"""An enforceable action catalogue (ADR 0148): each action of it may declare
its events' category, and with the tenant's `strict_actions` on, Record and
RecordBatch refuse an event whose action the catalogue does not describe or
whose category is not the declared one, naming the field; Sealtrail's own
records are written all the same, and a second server on the same database
applies a change within its settings cache's time."""

from __future__ import annotations

import time
from typing import Any

import grpc
import psycopg
import pytest
from click.testing import CliRunner

from sealtrail import AuditClient, InvalidArgumentError, build_event, build_filter
from sealtrail import _cli as client_cli
from sealtrail.v1 import audit_service_pb2_grpc, catalog_pb2, event_pb2
from tests.conftest import ServerThread

SECURITY = event_pb2.CATEGORY_SECURITY


def _violations(error: BaseException) -> list[tuple[str, str]]:
    assert isinstance(error, InvalidArgumentError)
    return [(field, said) for field, said in error.field_violations]


def _strict(client: AuditClient) -> None:
    """A catalogue of two actions, one declaring SECURITY; strict on."""
    client.set_action_description("api_key.create", "An API key was created", category="security")
    client.set_action_description("doc.view", "A document was read")  # any category
    assert client.set_strict_actions(True).settings.strict_actions


def test_strict_off_accepts_any_action_of_any_category(client: AuditClient) -> None:
    client.set_action_description("api_key.create", "An API key was created", category="security")
    assert not client.get_tenant_settings().strict_actions
    for category in ("configuration", "security"):
        client.record(action="api_key.craete", actor_id="u", category=category)
        client.record(action="api_key.create", actor_id="u", category=category)
    found = client.query_page(build_filter(actor="u"), page_size=10)
    assert len(found.events) == 4


def test_strict_refuses_an_undescribed_action_and_another_category(client: AuditClient) -> None:
    _strict(client)
    with pytest.raises(InvalidArgumentError) as refused:
        client.record(action="api_key.craete", actor_id="u", category="security")
    [(field, said)] = _violations(refused.value)
    assert field == "event.action"
    assert "catalogue does not describe" in said
    with pytest.raises(InvalidArgumentError) as refused:
        client.record(action="api_key.create", actor_id="u", category="configuration")
    [(field, said)] = _violations(refused.value)
    assert field == "event.category"
    assert "CATEGORY_SECURITY" in said
    with pytest.raises(InvalidArgumentError) as refused:  # no category is another one
        client.record(action="api_key.create", actor_id="u")
    assert [field for field, _ in _violations(refused.value)] == ["event.category"]
    # Described ones are recorded: the declared category, or any for none.
    kept = client.record(action="api_key.create", actor_id="u", category="security")
    assert kept.event.category == SECURITY
    client.record(action="doc.view", actor_id="u", category="data_access")
    client.record(action="doc.view", actor_id="u")
    found = client.query_page(build_filter(actor="u"), page_size=10)
    assert sorted(e.action for e in found.events) == ["api_key.create", "doc.view", "doc.view"]


def test_a_batch_refuses_only_its_bad_entries(client: AuditClient) -> None:
    _strict(client)
    results = client.record_batch(
        [
            build_event(action="api_key.create", actor_id="b", category="security"),
            build_event(action="api_key.craete", actor_id="b", category="security"),
            build_event(action="doc.view", actor_id="b"),
            build_event(action="api_key.create", actor_id="b", category="billing"),
        ]
    )
    assert [r.event is not None for r in results] == [True, False, True, False]
    assert results[1].error is not None and results[3].error is not None
    assert [f for f, _ in _violations(results[1].error)] == ["events[1].action"]
    assert [f for f, _ in _violations(results[3].error)] == ["events[3].category"]
    found = client.query_page(build_filter(actor="b"), page_size=10, order="oldest")
    assert [e.action for e in found.events] == ["api_key.create", "doc.view"]


def test_sealtrails_own_records_are_written_and_the_change_recorded(
    client: AuditClient,
) -> None:
    _strict(client)
    # Neither is in the catalogue: both of Sealtrail's own.
    client.query_page(build_filter(actions="doc.view"), page_size=1)
    client.set_action_description("doc.edit", "A document was changed")
    recorded = client.query_page(
        build_filter(actions=["audit_log.queried", "action_catalog.updated"]), page_size=10
    )
    assert {e.action for e in recorded.events} == {"audit_log.queried", "action_catalog.updated"}
    [turned] = client.query_page(
        build_filter(actions="tenant.settings_updated"), page_size=10
    ).events
    assert [(c.field, c.after.bool_value) for c in turned.changes] == [("strict_actions", True)]
    # Off again: anything goes, as before.
    assert client.set_strict_actions(False).event_id
    client.record(action="api_key.craete", actor_id="u", category="billing")


def test_a_category_change_applies_at_once_on_the_process_that_made_it(
    client: AuditClient,
) -> None:
    _strict(client)
    client.set_action_description("api_key.create", "An API key was created", category="billing")
    client.record(action="api_key.create", actor_id="u", category="billing")
    with pytest.raises(InvalidArgumentError):
        client.record(action="api_key.create", actor_id="u", category="security")
    entry = client.set_action_description("api_key.create", None, category=None).entry  # removed
    assert entry.category == event_pb2.CATEGORY_UNSPECIFIED and not entry.description
    with pytest.raises(InvalidArgumentError):
        client.record(action="api_key.create", actor_id="u", category="billing")


def test_a_category_alone_describes_an_action_and_is_listed(client: AuditClient) -> None:
    answer = client.set_action_description("api_key.revoke", "", category="security")
    assert answer.entry.category == SECURITY and answer.entry.description == ""
    [recorded] = client.query_page(
        build_filter(actions="action_catalog.updated"), page_size=10
    ).events
    assert [c.field for c in recorded.changes] == ["category"]
    listed = {entry.action: entry for entry in client.action_catalog().entries}
    assert listed["api_key.revoke"].category == SECURITY
    assert listed["action_catalog.updated"].category == event_pb2.CATEGORY_UNSPECIFIED
    with pytest.raises(ValueError, match="category"):
        client.set_action_description("x.y", "", category="nonsense")


def test_an_unknown_category_names_the_field(server: ServerThread, tenant: str) -> None:
    metadata = (("authorization", f"Bearer {server.token(tenant)}"),)
    with grpc.insecure_channel(server.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.SetActionDescription(
                catalog_pb2.SetActionDescriptionRequest(action="x.y", category=99),  # type: ignore[arg-type]
                metadata=metadata,
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "category" in str(refused.value.details())


def test_a_second_server_applies_the_change_within_its_cache_time(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Turned on through one server, the other (its own settings cache, as a
    process of its own) refuses within SEALTRAIL_SETTINGS_CACHE_SECONDS; a
    category declared through the first reaches it the same way."""
    bound = 1.0
    with (
        ServerThread(migrated_database_url) as first,
        ServerThread(migrated_database_url, settings_cache_seconds=bound) as second,
    ):
        token = first.token(tenant)
        one = AuditClient(first.target, token=token, timeout=30)
        other = AuditClient(second.target, token=token, timeout=30)
        other.record(action="api_key.craete", actor_id="p")  # its settings kept: strict off
        one.set_action_description("api_key.create", "An API key was created")
        one.set_strict_actions(True)
        _until_refused(other, "api_key.craete", None, bound)
        one.set_action_description("api_key.create", "Created", category="security")
        _until_refused(other, "api_key.create", "billing", bound)
        other.record(action="api_key.create", actor_id="p", category="security")


def _until_refused(client: AuditClient, action: str, category: str | None, bound: float) -> None:
    """Records the event until it is refused; fails if that takes far past
    `bound` (a condition polled, not a sleep)."""
    ends = time.monotonic() + bound + 30  # generous: the machine is shared
    while time.monotonic() < ends:
        try:
            client.record(
                action=action, actor_id="p", **({"category": category} if category else {})
            )
        except InvalidArgumentError:
            return
        time.sleep(0.05)  # between attempts of the poll
    pytest.fail(f"{action} still recorded {bound + 30} s after strict_actions changed")


def test_cli_describes_with_a_category_and_turns_strict_actions_on(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}

    def cli(*args: str) -> tuple[int, str]:
        done = CliRunner().invoke(client_cli.main, list(args), env=env)
        return done.exit_code, done.output

    assert cli("actions", "describe", "api_key.create", "Key made", "--category", "security") == (
        0,
        "api_key.create: Key made [category security]\n",
    )
    code, said = cli("settings", "--strict-actions", "on")
    assert code == 0, said
    assert said.startswith("settings updated\n") and "strict actions: on\n" in said
    code, said = cli("actions", "list")
    assert code == 0 and "security" in said
    with pytest.raises(InvalidArgumentError):
        client.record(action="api_key.create", actor_id="u", category="member")
    code, said = cli("settings")
    assert code == 0 and "strict actions: on\n" in said
    code, said = cli("actions", "describe", "api_key.create")
    assert code == 2 and "DESCRIPTION (or --clear), --category (or --no-category)" in said
