"""A change asked again (docs/retention.md, "Asked again: the policy and
the hold"): the legal hold released when none is on, placed again with its
reason or another, and the retention policy set as it is, each answered
alike by the API, the command line and the operator's `sealtrail-server
tenant release-hold`: OK, and recorded only when something changed, the
record naming what."""

from __future__ import annotations

import json
from typing import Any

import grpc
import psycopg
from click.testing import CliRunner, Result

from sealtrail import AuditClient, build_filter
from sealtrail import _cli as cli
from sealtrail.v1 import audit_service_pb2_grpc, event_pb2, retention_pb2
from tests.command_output import own_output
from tests.conftest import ServerThread, run_operator, token_id_of

HOLDS = ["retention.legal_hold_placed", "retention.legal_hold_released"]


def _sealtrail(server: ServerThread, token: str, *args: str) -> Result:
    """`sealtrail ARGS` as the tenant's admin whose token is `token`."""
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token}
    return CliRunner().invoke(cli.main, list(args), env=env)


def _hold_records(client: AuditClient) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (event.action, event.description, json.loads(json.dumps(dict(event.details))))
        for event in client.query(build_filter(actions=HOLDS), order="oldest")
    ]


def test_releasing_no_hold_is_ok_and_recorded_nowhere(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """The API answered a release of no hold OK, recording nothing, and
    `sealtrail legal-hold off` printed "legal hold off" as if it released
    one; the operator's `tenant release-hold` failed (exit 1). Each now
    answers OK saying no hold was set, and nothing is recorded."""
    token = server.token(tenant)
    with AuditClient(server.target, token=token) as admin:
        answer = admin.set_legal_hold(False)
        assert not answer.legal_hold.on and answer.event_id == ""

        released = _sealtrail(server, token, "legal-hold", "off")
        assert (released.exit_code, released.output) == (
            0,
            "no legal hold was set; nothing recorded\n",
        )

        by_operator = run_operator(
            migrated_database_url, "tenant", "release-hold", tenant, "--reason", "Case 7 closed"
        )
        assert by_operator.exit_code == 0, by_operator.output
        said = own_output(by_operator.output)
        assert said == f"no legal hold was set on {tenant}; nothing recorded\n", said

        assert not admin.get_retention_policy().legal_hold.on
        assert _hold_records(admin) == []


def test_a_hold_placed_again_is_recorded_only_for_another_reason_naming_both(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """The same reason (spaces around it are not kept) changes and records
    nothing, and the command line says so; another reason is recorded as a
    placement naming the new reason and the one it replaces."""
    token = server.token(tenant)
    with AuditClient(server.target, token=token) as admin:
        placed = _sealtrail(server, token, "legal-hold", "on", "--reason", "Case 1")
        assert (placed.exit_code, placed.output) == (0, "legal hold on\n")
        etag = admin.get_retention_policy().legal_hold.etag

        again = admin.set_legal_hold(True, reason=" Case 1 ")
        assert again.legal_hold.on and again.legal_hold.reason == "Case 1"
        assert again.event_id == "" and again.legal_hold.etag == etag
        repeated = _sealtrail(server, token, "legal-hold", "on", "--reason", "Case 1")
        assert (repeated.exit_code, repeated.output) == (
            0,
            "legal hold already on (Case 1); nothing recorded\n",
        )

        other = admin.set_legal_hold(True, reason="Case 2")
        assert other.event_id and other.legal_hold.reason == "Case 2"
        assert other.legal_hold.etag != etag
        event = admin.get_event(other.event_id)
        assert event.actor.id == token_id_of(sql, token)
        assert event.severity == event_pb2.SEVERITY_INFO
        assert _hold_records(admin) == [
            (HOLDS[0], "Legal hold placed: Case 1", {"reason": "Case 1"}),
            (
                HOLDS[0],
                "Legal hold reason changed: Case 2",
                {"reason": "Case 2", "previous_reason": "Case 1"},
            ),
        ]


def test_the_same_policy_with_its_rules_in_another_order_records_nothing(
    server: ServerThread, tenant: str
) -> None:
    """A policy's rules apply by what they select, not in order: the console
    sends them as its form lists them, the clients categories first, and the
    same policy sent in another order was recorded as a change of its rules."""
    token = server.token(tenant)
    policy = retention_pb2.RetentionPolicy(default_days=90)
    policy.rules.add(days=30, action_prefix="rag.*")
    policy.rules.add(days=365, category=event_pb2.CATEGORY_AUTHENTICATION)
    with grpc.insecure_channel(server.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        stub.UpdateRetentionPolicy(
            retention_pb2.UpdateRetentionPolicyRequest(policy=policy),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    with AuditClient(server.target, token=token) as admin:
        etag = admin.get_retention_policy().policy.etag
        same = admin.set_retention_policy(
            "90d", categories={"authentication": "1y"}, action_prefixes={"rag.*": 30}
        )
        assert same.event_id == "" and same.policy.etag == etag
        set_again = _sealtrail(
            server, token, "retention", "set", "90d", "--category", "authentication=1y",
            "--action", "rag.*=30", "--yes",
        )  # fmt: skip
        assert (set_again.exit_code, set_again.output) == (
            0,
            "policy already as asked; nothing recorded\n",
        )
        assert len(list(admin.query(build_filter(actions="retention.policy_updated")))) == 1
        kept = admin.get_retention_policy().policy
        assert [rule.WhichOneof("selector") for rule in kept.rules] == ["action_prefix", "category"]
