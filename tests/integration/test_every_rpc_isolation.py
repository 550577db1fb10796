"""Every RPC of the service, enumerated from its descriptor (an RPC added
later is called here too, and fails `test_the_table_names_every_rpc` until
it says what of another tenant it could be given):

- with no token, a malformed one, an unknown, a revoked and an expired one:
  UNAUTHENTICATED before anything else, a stream before its first message; a
  revoked token answered as an unknown one is; only a known token's refusal
  recorded, and in that token's own tenant;
- with a token of tenant A, of each role, naming tenant B's resources (its
  tenant id, event, sink, alert rule and token ids, its log's size, its page
  tokens): answered exactly as the same request naming resources that exist
  nowhere, never with anything of B's, and leaving B's tenant as it was.

test_roles.py holds which role may call what; test_tenant_isolation.py and
test_audited_access.py what a few of these calls do with another tenant's
ids. This is the sweep across all of them."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2, message, message_factory
from psycopg import sql as pgsql

from sealtrail import AuditClient, build_alert_rule, build_event, build_filter, build_sink
from sealtrail.v1 import (
    access_pb2,
    alerting_pb2,
    audit_service_pb2,
    event_pb2,
    forwarding_pb2,
    integrity_pb2,
    retention_pb2,
    settings_pb2,
)
from tests.conftest import ServerThread

SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
METHODS = {method.name: method for method in SERVICE.methods}
ROLES = ("recorder", "reader", "exporter", "admin")
MARKER = "only-in-tenant-b"
SINK_SECRET = "whsec_" + "s" * 32


@dataclass(frozen=True)
class Names:
    """What a request may name of a tenant: B's own, or the same kinds of
    thing that exist nowhere."""

    tenant_id: str
    event_id: str
    sink_id: str
    rule_id: str
    token_id: str
    action: str
    tree_size: int
    query_page_token: str
    tokens_page_token: str

    def values(self) -> list[str]:
        """Each name as an answer could write it, longest first."""
        written = [str(getattr(self, f.name)) for f in fields(self)]
        return sorted(written, key=len, reverse=True)


def _nowhere(b: Names) -> Names:
    """Names of the kinds B's are, that no tenant has: fresh ids, a tenant no
    one uses, a size past any log here, page tokens shaped as issued ones."""

    def shaped(token: str) -> str:
        payload = token.partition(".")[0]
        mac = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        return f"{payload}.{mac}"

    return Names(
        tenant_id=f"t-{uuid.uuid4().hex[:12]}-n",
        event_id=str(uuid.uuid4()),
        sink_id=str(uuid.uuid4()),
        rule_id=str(uuid.uuid4()),
        token_id=str(uuid.uuid4()),
        action="nowhere.done",
        tree_size=b.tree_size + 1,
        query_page_token=shaped(b.query_page_token),
        tokens_page_token=shaped(b.tokens_page_token),
    )


def _event(names: Names) -> event_pb2.Event:
    event = build_event(action="a.done", actor_id="a-user", idempotency_key="shared-key")
    event.tenant_id = names.tenant_id  # ignored on input
    return event


def _rule_to(sink_id: str) -> alerting_pb2.AlertRule:
    rule = build_alert_rule("r", "match", filter=build_filter(actions="a.done"))
    rule.sink_ids.append(sink_id)
    return rule


Request = Callable[[Names], message.Message]
# RPC -> the requests that name another tenant's resources ([]: it takes
# none; it is still called, and must answer nothing of B's).
NAMING: dict[str, list[Request]] = {
    "Record": [lambda n: audit_service_pb2.RecordRequest(event=_event(n))],
    "RecordBatch": [lambda n: audit_service_pb2.RecordBatchRequest(events=[_event(n)])],
    "GetEvent": [lambda n: audit_service_pb2.GetEventRequest(id=n.event_id)],
    "Query": [
        lambda n: audit_service_pb2.QueryRequest(page_token=n.query_page_token),
        lambda n: audit_service_pb2.QueryRequest(filter=build_filter(actions=n.action)),
    ],
    "CountEvents": [
        lambda n: audit_service_pb2.CountEventsRequest(filter=build_filter(actions=n.action))
    ],
    "StreamEvents": [lambda n: audit_service_pb2.StreamEventsRequest(after_seq=n.tree_size)],
    "Export": [lambda n: audit_service_pb2.ExportRequest(first_seq=1, last_seq=n.tree_size)],
    "GetCheckpoint": [lambda n: integrity_pb2.GetCheckpointRequest(tree_size=n.tree_size)],
    "GetInclusionProof": [
        lambda n: integrity_pb2.GetInclusionProofRequest(event_id=n.event_id),
        lambda n: integrity_pb2.GetInclusionProofRequest(seq=n.tree_size),
    ],
    "GetConsistencyProof": [
        lambda n: integrity_pb2.GetConsistencyProofRequest(old_size=1, new_size=n.tree_size)
    ],
    "GetVerifierKeys": [],
    "ListPurgedLeaves": [
        lambda n: integrity_pb2.ListPurgedLeavesRequest(tree_size=n.tree_size),
        lambda n: integrity_pb2.ListPurgedLeavesRequest(page_token=n.query_page_token),
    ],
    "GetReceivedRange": [],
    "VerifyLog": [],
    "GetTenantSettings": [],
    "UpdateTenantSettings": [],
    "HashSecret": [lambda n: settings_pb2.HashSecretRequest(value=n.tenant_id)],
    "CreateToken": [],
    "ListTokens": [lambda n: access_pb2.ListTokensRequest(page_token=n.tokens_page_token)],
    "RevokeToken": [lambda n: access_pb2.RevokeTokenRequest(token_id=n.token_id)],
    "GetRetentionPolicy": [],
    "UpdateRetentionPolicy": [],
    "PreviewRetentionPolicy": [],
    "SetLegalHold": [],
    "EraseTenant": [lambda n: retention_pb2.EraseTenantRequest(confirm_tenant_id=n.tenant_id)],
    "CreateSink": [],
    "GetSink": [lambda n: forwarding_pb2.GetSinkRequest(id=n.sink_id)],
    "ListSinks": [],
    "UpdateSink": [
        lambda n: forwarding_pb2.UpdateSinkRequest(
            sink=forwarding_pb2.Sink(id=n.sink_id, paused=False),
            update_mask=field_mask_pb2.FieldMask(paths=["paused"]),
        )
    ],
    "DeleteSink": [lambda n: forwarding_pb2.DeleteSinkRequest(id=n.sink_id)],
    "ListDeadLetters": [lambda n: forwarding_pb2.ListDeadLettersRequest(sink_id=n.sink_id)],
    "ReplaySink": [
        lambda n: forwarding_pb2.ReplaySinkRequest(
            sink_id=n.sink_id, seq_range=forwarding_pb2.SeqRange(first_seq=1, last_seq=1)
        )
    ],
    "CreateAlertRule": [lambda n: alerting_pb2.CreateAlertRuleRequest(rule=_rule_to(n.sink_id))],
    "ListAlertRules": [],
    "DeleteAlertRule": [lambda n: alerting_pb2.DeleteAlertRuleRequest(id=n.rule_id)],
    "UpdateAlertRule": [
        lambda n: alerting_pb2.UpdateAlertRuleRequest(
            rule=alerting_pb2.AlertRule(id=n.rule_id, disabled=True),
            update_mask=field_mask_pb2.FieldMask(paths=["disabled"]),
        )
    ],
    # An action is a name in each tenant's own catalogue, no resource of B's
    # (A may describe `b.only` for itself): asked with none, the answer must
    # not show B's actions or its description of one.
    "SetActionDescription": [],
    "ListActionCatalog": [],
}


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    answered: bytes  # the messages received, serialized, before any error


def _call(channel: grpc.Channel, name: str, request: message.Message, token: str) -> Outcome:
    method = METHODS[name]
    response = message_factory.GetMessageClass(method.output_type)
    path = f"/{SERVICE.full_name}/{name}"
    metadata = (("authorization", token),) if token else ()
    received: list[bytes] = []
    try:
        if method.server_streaming:
            call = channel.unary_stream(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )(request, metadata=metadata, timeout=10)
            try:
                for answer in call:  # up to the first message, or the error
                    received.append(answer.SerializeToString())
                    break
            finally:
                call.cancel()
        else:
            answer = channel.unary_unary(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )(request, metadata=metadata, timeout=10)
            received.append(answer.SerializeToString())
    except grpc.RpcError as error:
        code = error.code()
        assert isinstance(code, grpc.StatusCode)
        return Outcome(code, error.details() or "", b"".join(received))
    return Outcome(grpc.StatusCode.OK, "", b"".join(received))


def _request_of(name: str) -> message.Message:
    return message_factory.GetMessageClass(METHODS[name].input_type)()


def test_the_table_names_every_rpc() -> None:
    assert set(NAMING) == set(METHODS)


# --- no live token ---------------------------------------------------------


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@pytest.fixture
def dead_tokens(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> Iterator[dict[str, str]]:
    """Authorization values that authenticate no one: none, malformed, a
    token that does not exist, and `tenant`'s revoked and expired tokens."""
    revoked, expired = server.token(tenant, "admin"), server.token(tenant, "admin")
    sql.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE secret_sha256 = %s", [_digest(revoked)]
    )
    sql.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 hour' WHERE secret_sha256 = %s",
        [_digest(expired)],
    )
    unknown = "stk_" + secrets.token_urlsafe(32)
    yield {
        "none": "",
        "not bearer": f"Basic {revoked}",
        "malformed": "Bearer stk_short",
        "unknown": f"Bearer {unknown}",
        "revoked": f"Bearer {revoked}",
        "expired": f"Bearer {expired}",
    }


def _denials(sql: psycopg.Connection[Any], tenant: str) -> list[tuple[str, str]]:
    rows = sql.execute(
        "SELECT record::jsonb #>> '{details,rpc}', record::jsonb #>> '{details,reason}'"
        " FROM events WHERE tenant_id = %s AND action = 'audit_log.access_denied'",
        [tenant],
    ).fetchall()
    return sorted((str(rpc), str(reason)) for rpc, reason in rows)


def test_every_rpc_refuses_a_caller_without_a_live_token_before_anything(
    server: ServerThread, tenant: str, dead_tokens: dict[str, str], sql: psycopg.Connection[Any]
) -> None:
    with grpc.insecure_channel(server.target) as channel:
        for name in METHODS:
            outcomes = {
                kind: _call(channel, name, _request_of(name), token)
                for kind, token in dead_tokens.items()
            }
            for kind, outcome in outcomes.items():
                assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, (name, kind, outcome)
                assert outcome.answered == b"", (name, kind)  # a stream sent nothing first
            # A revoked token tells its holder no more than one that never was.
            assert outcomes["revoked"].details == outcomes["unknown"].details, name
            assert "token expired at" in outcomes["expired"].details, name
    expected = sorted((name, reason) for name in METHODS for reason in ("expired", "revoked"))
    deadline = time.monotonic() + 30
    while _denials(sql, tenant) != expected and time.monotonic() < deadline:
        time.sleep(0.1)  # a refusal waits for its record a second at most
    assert _denials(sql, tenant) == expected
    # Nothing else in the tokens' log, and nothing of theirs in anyone else's.
    assert sql.execute("SELECT count(*) FROM events WHERE tenant_id = %s", [tenant]).fetchone() == (
        len(expected),
    )
    elsewhere = sql.execute(
        "SELECT count(*) FROM events AS e JOIN api_tokens AS t"
        " ON e.actor_id = t.token_id::text AND t.tenant_id = %s WHERE e.tenant_id <> %s",
        [tenant, tenant],
    ).fetchone()
    assert elsewhere == (0,)


# --- another tenant's resources --------------------------------------------


@dataclass
class Tenants:
    a: str
    b: str
    names: Names


def _paused_sink(name: str) -> forwarding_pb2.Sink:
    url = f"http://127.0.0.1:9/{name}"
    return build_sink(name, "webhook", url=url, secrets=[SINK_SECRET], paused=True)


@pytest.fixture
def tenants(server: ServerThread, tenant: str) -> Iterator[Tenants]:
    """Tenant A with a few events and a sink of its own; tenant B with
    events, a sink, an alert rule, tokens, a signed checkpoint larger than
    A's log, and page tokens of its own."""
    a_id, b_id = tenant, f"{tenant}-b"
    with (
        AuditClient(server.target, token=server.token(a_id)) as a,
        AuditClient(server.target, token=server.token(b_id)) as b,
    ):
        a.record_batch([build_event(action="a.done", actor_id="a-user") for _ in range(3)])
        a.create_sink(_paused_sink("a"))
        recorded = b.record_batch(
            # a log well past the size A's grows to as the test calls
            [
                build_event(action="b.only", actor_id="b-user", description=MARKER)
                for _ in range(100)
            ]
        )
        b.set_action_description("b.only", MARKER)
        sink = b.create_sink(_paused_sink("b")).sink
        rule = b.create_alert_rule(
            build_alert_rule("b", "match", filter=build_filter(actions="b.only"))
        ).rule
        token = b.create_token("reader").token
        b.create_token("reader")
        page = b.query_page(page_size=2)
        tokens_page = b._call(b._stub.ListTokens, access_pb2.ListTokensRequest(page_size=1))
        checkpoint = b.get_checkpoint(fresh=True)
    names = Names(
        tenant_id=b_id,
        event_id=recorded[-1].event.id,
        sink_id=sink.id,
        rule_id=rule.id,
        token_id=token.token_id,
        action="b.only",
        tree_size=checkpoint.tree_size,
        query_page_token=page.next_page_token,
        tokens_page_token=tokens_page.next_page_token,
    )
    assert names.query_page_token and names.tokens_page_token
    yield Tenants(a_id, b_id, names)


_TENANT_TABLES = (
    "events",
    "action_catalog",
    "api_tokens",
    "sinks",
    "alert_rules",
    "sink_replays",
    "sink_dead_letters",
    "tenant_settings",
    "retention_policies",
    "tenant_erasures",
)


def _state_of(sql: psycopg.Connection[Any], tenant_id: str) -> dict[str, Any]:
    """Each of the tenant's rows of the tables a call could change."""
    state = {}
    for table in _TENANT_TABLES:
        row = sql.execute(
            pgsql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
                " FROM {} AS t WHERE tenant_id = %s"
            ).format(pgsql.Identifier(table)),
            [tenant_id],
        ).fetchone()
        state[table] = row
    return state


def _written(outcome: Outcome, names: Names) -> Outcome:
    """`outcome` with each of `names` in its message written as its kind."""
    details = outcome.details
    for f in sorted(fields(names), key=lambda f: len(str(getattr(names, f.name))), reverse=True):
        value = str(getattr(names, f.name))
        details = re.sub(rf"(?<![\w-]){re.escape(value)}(?![\w-])", f"<{f.name}>", details)
    return Outcome(outcome.code, details, b"")


@pytest.mark.parametrize("role", ROLES)
def test_no_rpc_answers_another_tenants_resources_otherwise_than_missing_ones(
    server: ServerThread, tenants: Tenants, role: str, sql: psycopg.Connection[Any]
) -> None:
    b, nowhere = tenants.names, _nowhere(tenants.names)
    # B's tokens made B's resources: their last uses, written behind every 10 s,
    # written now, not between the two looks at B's rows (ci-s48b).
    assert server.service.token_uses is not None
    server.run(server.service.token_uses.flush())
    b_before = _state_of(sql, tenants.b)
    token = f"Bearer {server.token(tenants.a, role)}"
    # (Not its log's size: a number's bytes may be anything's in an answer.)
    never_shown = [value.encode() for value in (*b.values(), MARKER) if not value.isdigit()]
    with grpc.insecure_channel(server.target) as channel:
        for name, requests in NAMING.items():
            for index, request in enumerate(requests or [lambda _, name=name: _request_of(name)]):
                named_b = _call(channel, name, request(b), token)
                named_nowhere = _call(channel, name, request(nowhere), token)
                where = (name, index, role)
                # The same answer as for what exists nowhere: nothing tells B's apart.
                assert _written(named_b, b) == _written(named_nowhere, nowhere), where
                for value in never_shown:
                    assert value not in named_b.answered, (where, value)
                    assert value.decode() not in _written(named_b, b).details, (where, value)
    assert _state_of(sql, tenants.b) == b_before


# --- the console's URLs ----------------------------------------------------

# A console route naming a resource by its path's {id} -> the kind of id, and
# a body the console takes (so that the call reaches the API's lookup).
_ETAG = '"e"'
CONSOLE_NAMING: dict[tuple[str, str], tuple[str, Any]] = {
    ("POST", "/api/tokens/{id}/revoke"): ("token_id", {}),
    ("PUT", "/api/sinks/{id}"): (
        "sink_id",
        {
            "sink": {"name": "a", "webhook": {"url": "http://127.0.0.1:9/a", "secrets": []}},
            "etag": _ETAG,
        },
    ),
    ("PATCH", "/api/sinks/{id}"): ("sink_id", {"paused": True, "etag": _ETAG}),
    ("DELETE", "/api/sinks/{id}"): ("sink_id", {"etag": _ETAG}),
    ("GET", "/api/sinks/{id}/dead-letters"): ("sink_id", None),
    ("POST", "/api/sinks/{id}/replay"): ("sink_id", {"seq_range": {"first_seq": 1, "last_seq": 1}}),
    ("PUT", "/api/alert-rules/{id}"): (
        "rule_id",
        {"rule": {"name": "r", "severity": "SEVERITY_WARNING", "match": {}}, "etag": _ETAG},
    ),
    ("PATCH", "/api/alert-rules/{id}"): ("rule_id", {"disabled": True, "etag": _ETAG}),
    ("DELETE", "/api/alert-rules/{id}"): ("rule_id", {"etag": _ETAG}),
}


def _console_routes(console: ServerThread) -> set[tuple[str, str]]:
    """The console's routes that name something by their path, as it serves them."""
    served = console.service.console
    assert served is not None and served._runner is not None
    return {
        (route.method, info["formatter"])
        for route in served._runner.app.router.routes()
        if "formatter" in (info := route.resource.get_info() if route.resource else {})
    }


def _http(url: str, method: str, token: str, body: Any) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


# Console routes whose path names a key of the caller's own tenant, not an
# object another tenant may hold: an action's description is set in the
# caller's catalogue whatever other tenants' hold (tested below).
CONSOLE_OWN_KEYS: frozenset[tuple[str, str]] = frozenset(
    {("PUT", "/api/actions/{action}"), ("POST", "/api/actions/{action}")}
)


def test_the_console_names_each_of_its_resource_routes(console_server: ServerThread) -> None:
    assert _console_routes(console_server) == set(CONSOLE_NAMING) | CONSOLE_OWN_KEYS


def test_an_action_described_through_the_console_is_the_callers_own_tenants(
    console_server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Describing an action another tenant has described (and recorded) sets
    the caller's own catalogue: the other's row, log and description untouched
    and unsaid."""
    a_id, b_id = tenant, f"{tenant}-b"
    with AuditClient(console_server.target, token=console_server.token(b_id)) as b:
        b.record_batch([build_event(action="b.only", actor_id="b-user")])
        b.set_action_description("b.only", MARKER)
    b_before = _state_of(sql, b_id)
    base = f"http://127.0.0.1:{console_server.service.console_port}"
    for method in sorted({method for method, _ in CONSOLE_OWN_KEYS}):
        status, text = _http(
            base + "/api/actions/b.only", method, console_server.token(a_id),
            {"description": f"{method} of a"},
        )  # fmt: skip
        assert status == 200 and MARKER not in text and b_id not in text, (method, text)
    assert _state_of(sql, b_id) == b_before
    [(described,)] = sql.execute(
        "SELECT description FROM action_catalog WHERE tenant_id = %s AND action = 'b.only'",
        [a_id],
    ).fetchall()
    assert described == "PUT of a"


def test_no_console_url_answers_another_tenants_resource_otherwise_than_a_missing_one(
    console_server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    a_id, b_id = tenant, f"{tenant}-b"
    with AuditClient(console_server.target, token=console_server.token(b_id)) as b:
        b.record_batch([build_event(action="b.only", actor_id="b-user", description=MARKER)])
        ids = {
            "sink_id": b.create_sink(_paused_sink("b")).sink.id,
            "rule_id": b.create_alert_rule(
                build_alert_rule("b", "match", filter=build_filter(actions="b.only"))
            ).rule.id,
            "token_id": b.create_token("reader").token.token_id,
        }
    b_before = _state_of(sql, b_id)
    base = f"http://127.0.0.1:{console_server.service.console_port}"
    token = console_server.token(a_id)
    for (method, path), (kind, body) in CONSOLE_NAMING.items():
        missing = str(uuid.uuid4())
        answers = []
        for named in (ids[kind], missing):
            status, text = _http(base + path.format(id=named), method, token, body)
            assert b_id not in text and MARKER not in text, (method, path, text)
            answers.append((status, text.replace(named, "<id>")))
        assert answers[0] == answers[1], (method, path)
        assert answers[0][0] == 404, (method, path, answers[0])  # the API's lookup said so
    assert _state_of(sql, b_id) == b_before
