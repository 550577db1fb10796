"""A service that reads the log for people of its own (a SaaS backend's
audit-log page) says on whose behalf (`x-sealtrail-on-behalf-of`, ADR 0146):
Sealtrail's records of the call, reads, changes and refusals, carry the
person in `details.on_behalf_of`, as the service's word; the token stays the
actor. A value an actor id could not be is refused, naming the header."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from click.testing import CliRunner

import sealtrail
from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    InvalidArgumentError,
    PermissionDeniedError,
    build_filter,
    from_rpc_error,
)
from sealtrail import _cli as cli
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc
from sealtrail_server.domain.access import Role
from sealtrail_server.store.tokens import create_token
from tests.conftest import ServerThread, token_id_of
from tests.polls import until_true

HEADER = "x-sealtrail-on-behalf-of"
DENIED = "audit_log.access_denied"


def _records(sql: psycopg.Connection[Any], tenant: str, action: str) -> list[dict[str, Any]]:
    """The records of `action` in `tenant`'s log, oldest first."""
    rows = sql.execute(
        "SELECT record::jsonb FROM events WHERE tenant_id = %s AND action = %s ORDER BY seq",
        [tenant, action],
    ).fetchall()
    return [row[0] for row in rows]


def _refuse(server: ServerThread, token: str, metadata: list[tuple[str, str]]) -> grpc.RpcError:
    """A Query with `token` and `metadata`, refused: the error."""
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as refused:
        audit_service_pb2_grpc.AuditLogServiceStub(channel).Query(
            audit_service_pb2.QueryRequest(),
            metadata=[("authorization", f"Bearer {token}"), *metadata],
            timeout=10,
        )
    return refused.value


def test_a_query_an_export_and_a_refused_call_carry_the_person(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    exporter = server.token(tenant, Role.EXPORTER)
    # Any text an actor id may be, though a header carries ASCII alone.
    person = "josé.álvarez@customer.example"
    with AuditClient(server.target, token=exporter, on_behalf_of="ops-dashboard") as client:
        with sealtrail.on_behalf_of(person):  # the call's own person, over the client's
            client.query_page(build_filter(actions="doc.*"))
            client.export(tmp_path / "out.ndjson", format="ndjson")
        with pytest.raises(PermissionDeniedError):
            client.create_token(
                "reader", name="another"
            )  # an exporter may not: refused, and recorded
    [queried] = _records(sql, tenant, "audit_log.queried")
    [exported] = _records(sql, tenant, "audit_log.exported")
    assert queried["details"] == {
        "filter": {"actions": ["doc.*"]},
        "order": "newest",
        "on_behalf_of": person,
    }
    assert exported["details"]["on_behalf_of"] == person
    for record in (queried, exported):  # the token stays the actor: the person is its word
        assert record["actor"]["type"] == "api_key"
        assert record["actor"]["id"] == token_id_of(sql, exporter)
    until_true(
        sql,
        "SELECT EXISTS (SELECT FROM events WHERE tenant_id = %s AND action = %s)",
        [tenant, DENIED],
        "the refusal was not recorded",
    )
    [denied] = _records(sql, tenant, DENIED)
    assert denied["details"]["rpc"] == "CreateToken"
    assert denied["details"]["on_behalf_of"] == "ops-dashboard"


def test_without_the_header_the_records_are_as_they_were(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    client_for(tenant, Role.READER).query_page(build_filter(actions="doc.*"))
    admin = client_for(tenant, Role.ADMIN, on_behalf_of="frank")
    with sealtrail.on_behalf_of(None):  # on no one's behalf, whatever the client's
        admin.verify_log()
    [queried] = _records(sql, tenant, "audit_log.queried")
    assert queried["details"] == {"filter": {"actions": ["doc.*"]}, "order": "newest"}
    [verified] = _records(sql, tenant, "audit_log.verified")
    assert "on_behalf_of" not in verified["details"]


def test_a_change_over_the_async_client_carries_the_person(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    async def create() -> None:
        async with AsyncAuditClient(
            server.target, token=server.token(tenant), on_behalf_of="admin-7"
        ) as admin:
            await admin.create_token("reader", name="nightly")
            with sealtrail.on_behalf_of("admin-8"):
                await admin.query_page()

    asyncio.run(create())
    [created] = _records(sql, tenant, "api_token.created")
    assert created["details"]["on_behalf_of"] == "admin-7"
    [queried] = _records(sql, tenant, "audit_log.queried")
    assert queried["details"]["on_behalf_of"] == "admin-8"


@pytest.mark.parametrize(
    ("values", "said"),
    [
        (["x" * 257], "is 257 characters long; the limit is 256"),
        (["alice%0Abob"], "must not contain control characters"),
        (["%FF"], "is not UTF-8 once percent-decoded"),
        (["alice", "bob"], "is given more than once; name one person"),
    ],
    ids=["long", "control", "not-utf8", "twice"],
)
def test_a_bad_value_is_refused_naming_the_header(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], values: list[str], said: str
) -> None:
    token = server.token(tenant, Role.READER)
    error = from_rpc_error(_refuse(server, token, [(HEADER, value) for value in values]))
    assert isinstance(error, InvalidArgumentError)
    assert list(error.field_violations) == [(HEADER, said)]
    assert _records(sql, tenant, "audit_log.queried") == []  # nothing was read


def test_a_bad_value_keeps_no_refusal_out_of_the_log(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A token refused for its role is refused so, and recorded, whatever the
    header: a malformed one must not hide a stolen token's probing."""
    recorder = server.run(create_token(server.database, tenant_id=tenant, role=Role.RECORDER))
    refused = _refuse(server, recorder.secret, [(HEADER, "x" * 300)])
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    until_true(
        sql,
        "SELECT EXISTS (SELECT FROM events WHERE tenant_id = %s AND action = %s)",
        [tenant, DENIED],
        "the refusal was not recorded",
    )
    [denied] = _records(sql, tenant, DENIED)
    assert "on_behalf_of" not in denied["details"]


def test_a_persons_reads_and_changes_are_found_by_a_text_search(
    client_for: Any, tenant: str
) -> None:
    """A read's record is not searched by the filter it keeps unless the
    search names reads (ADR 0012), but it is by the person it was made for."""
    admin = client_for(tenant, Role.ADMIN, on_behalf_of="carol@acme.example")
    admin.query_page(build_filter(text="dave@acme.example"))  # a search for dave, for carol
    admin.create_token("reader", name="reports")
    with sealtrail.on_behalf_of("dave@acme.example"):
        admin.query_page(build_filter(actions="doc.*"))
    auditor = client_for(tenant, Role.READER)
    found = auditor.query_page(build_filter(text='"carol@acme.example"')).events
    assert sorted(e.action for e in found) == ["api_token.created", "audit_log.queried"]
    [dave] = auditor.query_page(build_filter(text='"dave@acme.example"')).events
    assert dave.details["on_behalf_of"] == "dave@acme.example"
    # Naming reads, the filters they keep are searched too: who searched for dave.
    named = auditor.query_page(build_filter(actions="audit_log.*", text='"dave@acme.example"'))
    # The search for dave made for carol, dave's read, and the auditor's own search.
    people = [dict(e.details.items()).get("on_behalf_of") for e in named.events]
    assert people == [None, "dave@acme.example", "carol@acme.example"]


def test_a_person_that_holds_a_secret_is_redacted(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A session token pasted where a user id belongs is not committed in clear."""
    leaked = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    client_for(tenant, Role.READER, on_behalf_of=leaked).query_page()
    [queried] = _records(sql, tenant, "audit_log.queried")
    assert leaked not in str(queried)
    assert queried["details"]["on_behalf_of"].startswith("[REDACTED")


def test_the_client_refuses_what_the_server_would(server: ServerThread, tenant: str) -> None:
    token = server.token(tenant, Role.READER)
    for bad, said in (
        ("", "non-empty"),
        ("a\nb", "control"),
        ("x" * 257, "257 characters"),
        ("caf\udce9", "UTF-8"),  # a byte of Latin-1 in argv or the environment, as Python reads it
    ):
        with pytest.raises(ValueError, match=said):
            AuditClient(server.target, token=token, on_behalf_of=bad)
        with pytest.raises(ValueError, match=said), sealtrail.on_behalf_of(bad):
            pass


def test_the_command_line_says_on_whose_behalf(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    token = server.token(tenant, Role.READER)
    common = ["--server", server.target, "--token", token]
    result = CliRunner().invoke(cli.main, [*common, "--on-behalf-of", "erin-42", "query"])
    assert result.exit_code == 0, result.output
    [queried] = _records(sql, tenant, "audit_log.queried")
    assert queried["details"]["on_behalf_of"] == "erin-42"
    refused = CliRunner().invoke(cli.main, [*common, "--on-behalf-of", "a\tb", "query"])
    assert refused.exit_code == 2
    assert "--on-behalf-of must not contain control characters" in refused.output
    # An empty value (`--on-behalf-of "$UNSET"`) names no one: refused, not a call on no
    # one's behalf; a byte that is not UTF-8 is refused as a usage error, not a traceback.
    for bad, said in (("", "non-empty"), ("caf\udce9", "UTF-8")):
        refused = CliRunner().invoke(cli.main, [*common, "--on-behalf-of", bad, "query"])
        assert refused.exit_code == 2, refused.output
        assert "--on-behalf-of must be" in refused.output and said in refused.output
    assert len(_records(sql, tenant, "audit_log.queried")) == 1
