"""Every header the server reads, in any bytes a raw HTTP/2 caller can send
(grpcio's own client refuses most of them before they leave it): not printable
ASCII, control characters, empty, huge, sent twice, as a `-bin` header. The
answer is one a client can act on, never INTERNAL or UNKNOWN, and the
server's log has no error of its own. The server runs its console: the
console's key is one of the headers read."""

from __future__ import annotations

import base64
from typing import Any

import psycopg
import pytest

from sealtrail.v1 import audit_service_pb2 as pb
from tests import raw_grpc
from tests.conftest import ServerThread

pytestmark = pytest.mark.usefixtures("no_server_errors")
SERVICE = "/sealtrail.v1.AuditLogService/"
OK, INTERNAL, UNKNOWN, UNAUTHENTICATED, INVALID_ARGUMENT = 0, 13, 2, 16, 3
ON_BEHALF_OF = b"x-sealtrail-on-behalf-of"
# What the server reads of a call's metadata (api/guard.py, api/callers.py,
# telemetry/interceptor.py).
READ = (
    b"authorization",
    b"x-sealtrail-console-key",
    b"x-sealtrail-client-ip",
    b"x-sealtrail-client-user-agent",
    b"user-agent",
    b"x-forwarded-for",
    b"x-request-id",
    b"traceparent",
    b"tracestate",
    b"baggage",
    ON_BEHALF_OF,
)
VALUES = (
    b"",
    "é\u202e".encode(),  # UTF-8, not ASCII
    b"\xff\xfe\x80",  # no UTF-8 at all
    b"a\x01b\x7fc",  # control characters
    b"x" * 6000,  # within gRPC's metadata limit (8 KiB), far past any value read
)


def _own_records(sql: psycopg.Connection[Any], tenant: str) -> list[dict[str, Any]]:
    rows = sql.execute(
        "SELECT record::jsonb FROM events WHERE tenant_id = %s AND action = 'audit_log.queried'"
        " ORDER BY seq",
        [tenant],
    ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize(
    "key",
    [b"\xc3\xa9", "ключ".encode(), b"\xff" * 43, b"\x00"],
    ids=["utf8", "cyrillic", "ff", "nul"],
)
def test_a_console_key_in_any_bytes_is_a_wrong_key_not_a_failure(
    console_server: ServerThread, tenant: str, sql: psycopg.Connection[Any], key: bytes
) -> None:
    """hmac.compare_digest refuses a str that is not ASCII (TypeError): a
    console key header in any other bytes failed every call INTERNAL."""
    token = console_server.token(tenant, "reader").encode()
    headers = [
        (b"authorization", b"Bearer " + token),
        (b"x-sealtrail-console-key", key),
        (b"x-sealtrail-client-ip", b"203.0.113.9"),
    ]
    for method in ("GetVerifierKeys", "Query"):
        answer = raw_grpc.call(console_server.port, SERVICE + method, headers)
        assert answer.status == OK, (method, answer.message)
    # Not the console's key: the address it names is not believed.
    [record] = _own_records(sql, tenant)
    assert record["context"]["ip"] == "127.0.0.1"


@pytest.mark.parametrize("name", READ, ids=[n.decode() for n in READ])
def test_every_header_read_in_any_bytes_gets_a_clear_answer(
    console_server: ServerThread, tenant: str, name: bytes
) -> None:
    token = console_server.token(tenant).encode()
    authorization = (b"authorization", b"Bearer " + token)
    record = pb.RecordRequest(event={"action": "a.b", "actor": {"id": "u"}}).SerializeToString()
    export = pb.ExportRequest(format=pb.EXPORT_FORMAT_NDJSON).SerializeToString()
    sent: list[list[tuple[bytes, bytes]]] = [[(name, value)] for value in VALUES]
    sent += [[(name, VALUES[1]), (name, VALUES[2])]]  # twice, the second no UTF-8
    sent += [[(name + b"-bin", base64.b64encode(b"\xff\x00"))]]
    for headers in sent:
        if name != b"authorization":
            headers = [authorization, *headers]
        for method, request in (("Query", b""), ("Record", record), ("Export", export)):
            answer = raw_grpc.call(console_server.port, SERVICE + method, headers, request)
            assert answer.status is not None and answer.status not in (INTERNAL, UNKNOWN), (
                method,
                headers[-1][0],
                headers[-1][1][:20],
                answer,
            )
            if name == b"authorization":
                assert answer.status == UNAUTHENTICATED
            elif name == ON_BEHALF_OF and headers[1:] not in (
                [(name, VALUES[1])],  # an id in any text
                [(name + b"-bin", base64.b64encode(b"\xff\x00"))],  # not the header
            ):
                # Not one person's id, which the records could hold: refused
                # (ADR 0146), on a Record too, which would record nothing of it.
                assert answer.status == INVALID_ARGUMENT, (method, headers[-1], answer)
            else:
                assert answer.status == OK, (method, headers[-1], answer)
