"""Every RPC of the service, called with a token of every role: the roles the
matrix allows get past authorization (their call may still fail for its own
reasons, such as an empty request), every other role gets PERMISSION_DENIED,
and no RPC exists without a row in the matrix."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import message_factory

from sealtrail.v1 import audit_service_pb2
from tests.conftest import ServerThread

ROLES = ("recorder", "reader", "exporter", "admin")

# The matrix of docs/api.md, written out here on purpose: not read from the server.
ALLOWED: dict[str, set[str]] = {
    "Record": {"recorder", "admin"},
    "RecordBatch": {"recorder", "admin"},
    "GetEvent": {"reader", "exporter", "admin"},
    "Query": {"reader", "exporter", "admin"},
    "CountEvents": {"reader", "exporter", "admin"},
    "StreamEvents": {"reader", "exporter", "admin"},
    "Export": {"exporter", "admin"},
    "GetCheckpoint": {"reader", "exporter", "admin"},
    "GetInclusionProof": {"reader", "exporter", "admin"},
    "GetConsistencyProof": {"reader", "exporter", "admin"},
    "GetVerifierKeys": {"reader", "exporter", "admin"},
    "ListPurgedLeaves": {"reader", "exporter", "admin"},
    "GetReceivedRange": {"reader", "exporter", "admin"},
    "VerifyLog": {"admin"},
    "GetTenantSettings": {"admin"},
    "UpdateTenantSettings": {"admin"},
    "HashSecret": {"admin"},
    "CreateToken": {"admin"},
    "ListTokens": {"admin"},
    "RevokeToken": {"admin"},
    "GetRetentionPolicy": {"admin"},
    "UpdateRetentionPolicy": {"admin"},
    "PreviewRetentionPolicy": {"admin"},
    "SetLegalHold": {"admin"},
    "EraseTenant": {"admin"},
    "CreateSink": {"admin"},
    "GetSink": {"admin"},
    "ListSinks": {"admin"},
    "UpdateSink": {"admin"},
    "DeleteSink": {"admin"},
    "ListDeadLetters": {"admin"},
    "ReplaySink": {"admin"},
    "CreateAlertRule": {"admin"},
    "ListAlertRules": {"admin"},
    "DeleteAlertRule": {"admin"},
    "UpdateAlertRule": {"admin"},
    "SetActionDescription": {"admin"},
    "ListActionCatalog": {"reader", "exporter", "admin"},
}

SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]


def test_the_matrix_covers_every_rpc() -> None:
    assert set(ALLOWED) == {method.name for method in SERVICE.methods}


def _status(channel: grpc.Channel, method: Any, token: str) -> grpc.StatusCode:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{SERVICE.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        if method.server_streaming:
            call = channel.unary_stream(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )(request_class(), metadata=metadata, timeout=10)
            next(iter(call), None)  # the first message, or the error
            call.cancel()
        else:
            channel.unary_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )(request_class(), metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        code = error.code()
        assert isinstance(code, grpc.StatusCode)
        return code
    return grpc.StatusCode.OK


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_call_exactly_what_the_matrix_allows(
    server: ServerThread, tenant: str, role: str
) -> None:
    token = server.token(tenant, role)
    outcomes = {}
    with grpc.insecure_channel(server.target) as channel:
        for method in SERVICE.methods:
            outcomes[method.name] = _status(channel, method, token)
    denied = {name for name, code in outcomes.items() if code == grpc.StatusCode.PERMISSION_DENIED}
    assert denied == {name for name, allowed in ALLOWED.items() if role not in allowed}
    assert grpc.StatusCode.INTERNAL not in outcomes.values(), outcomes
    assert grpc.StatusCode.UNAUTHENTICATED not in outcomes.values(), outcomes
