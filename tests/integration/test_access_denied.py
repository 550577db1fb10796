"""A known tenant's token that Sealtrail refuses (a role that may not call the
RPC, a revoked token) is recorded in its tenant's log as
`audit_log.access_denied`, once per token, RPC and window: a security team
alerts on a service credential probing the log (helper-165, G3)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from google.protobuf import json_format

from sealtrail import (
    AuditClient,
    PermissionDeniedError,
    UnauthenticatedError,
    build_alert_rule,
    build_filter,
)
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2
from sealtrail_server.domain.access import Role
from sealtrail_server.store.tokens import create_token
from tests.conftest import ServerThread
from tests.refused_inserts import inserts_refused

ACTION = "audit_log.access_denied"


def _eventually(find: Callable[[], list[Any]]) -> list[Any]:
    """What `find` returns once it is not empty (within 20 s)."""
    deadline = time.monotonic() + 20
    while not (found := find()):
        assert time.monotonic() < deadline, "nothing was recorded"
        time.sleep(0.05)
    return found


def _denials(admin: AuditClient) -> list[event_pb2.Event]:
    return list(admin.query(build_filter(actions=ACTION), order="oldest"))


def test_a_role_refused_an_rpc_is_recorded_once_a_window_in_its_tenants_log(
    server: ServerThread, tenant: str
) -> None:
    issued = server.run(
        create_token(server.database, tenant_id=tenant, role=Role.RECORDER, name="billing svc")
    )
    with AuditClient(server.target, token=issued.secret, max_attempts=1) as recorder:
        for _ in range(3):  # a client retrying in a loop
            with pytest.raises(
                PermissionDeniedError, match="role 'recorder' may not call Query"
            ) as refused:
                recorder.query_page()
            # Which roles may, for the caller to say what token it needs.
            assert refused.value.metadata == {"roles": "reader,exporter,admin"}
        with pytest.raises(PermissionDeniedError):
            recorder.create_token("admin")
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        denials = _eventually(lambda: _denials(admin))
        time.sleep(0.2)  # a second record of Query would have come by now
        denials = _denials(admin)
    assert sorted(json_format.MessageToDict(d.details)["rpc"] for d in denials) == [
        "CreateToken",
        "Query",
    ]
    [query] = [d for d in denials if json_format.MessageToDict(d.details)["rpc"] == "Query"]
    assert (query.category, query.severity, query.outcome) == (
        event_pb2.CATEGORY_SECURITY,
        event_pb2.SEVERITY_WARNING,
        event_pb2.OUTCOME_DENIED,
    )
    assert (query.actor.type, query.actor.id, query.actor.display_name) == (
        event_pb2.ACTOR_TYPE_API_KEY,
        issued.token_id,
        "billing svc",
    )
    assert json_format.MessageToDict(query.details) == {
        "rpc": "Query",
        "reason": "role",
        "role": "recorder",
        "window_seconds": 600,
    }
    assert query.context.ip == "127.0.0.1"


def test_a_revoked_token_is_refused_as_before_and_recorded(
    server: ServerThread, tenant: str
) -> None:
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        created = admin.create_token("recorder", name="old deploy key")
        admin.revoke_token(created.token.token_id)
        revoked = AuditClient(server.target, token=created.secret, max_attempts=1)
        with revoked, pytest.raises(UnauthenticatedError, match="unknown or revoked token"):
            revoked.record(action="doc.edit", actor_id="u")
        [denial] = _eventually(lambda: _denials(admin))
    assert denial.actor.id == created.token.token_id
    assert denial.actor.display_name == "old deploy key"
    assert json_format.MessageToDict(denial.details)["reason"] == "revoked"
    assert json_format.MessageToDict(denial.details)["rpc"] == "Record"


def test_a_refusal_whose_record_fails_is_answered_as_any_refusal(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Recording is a courtesy to the tenant here, not a condition of the
    answer: a refusal that turned into UNAVAILABLE would send a client into
    retries. A failed record covers nothing: the next refusal records."""
    recorder_token = server.token(tenant, "recorder")
    with AuditClient(server.target, token=recorder_token, max_attempts=1) as recorder:
        with (
            inserts_refused(sql, "events", tenant, action="audit_log.access_denied"),
            pytest.raises(PermissionDeniedError),
        ):
            recorder.query_page()
        with AuditClient(server.target, token=server.token(tenant)) as admin:
            assert _denials(admin) == []
            with pytest.raises(PermissionDeniedError):
                recorder.query_page()
            assert len(_eventually(lambda: _denials(admin))) == 1


def test_an_alert_rule_and_the_command_line_find_access_denials(
    server: ServerThread, tenant: str
) -> None:
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        admin.create_alert_rule(
            build_alert_rule("log probed", "match", filter=build_filter(actions=ACTION))
        )
        with (
            AuditClient(
                server.target, token=server.token(tenant, "recorder"), max_attempts=1
            ) as recorder,
            pytest.raises(PermissionDeniedError),
        ):
            recorder.query_page()
        [alert] = _eventually(lambda: list(admin.query(build_filter(actions="security.alert"))))
        [denial] = _denials(admin)
    assert json_format.MessageToDict(alert.details)["trigger_seq"] == denial.seq
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    found = CliRunner().invoke(
        cli.main, ["query", "--action", ACTION, "--format", "jsonl"], env=env
    )
    assert found.exit_code == 0, found.output
    [line] = found.stdout.splitlines()
    assert json.loads(line)["action"] == ACTION
