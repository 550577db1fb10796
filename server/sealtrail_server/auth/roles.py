"""Roles and which RPCs each may call. Anything not listed is denied; the
complete matrix is in docs/api.md and held by tests/integration/test_roles.py."""

from __future__ import annotations

from typing import Final

from ..domain.access import Role

_WRITE: Final = frozenset({Role.RECORDER, Role.ADMIN})
_READ: Final = frozenset({Role.READER, Role.EXPORTER, Role.ADMIN})
_EXPORT: Final = frozenset({Role.EXPORTER, Role.ADMIN})
_ADMIN: Final = frozenset({Role.ADMIN})

# AuditLogService method name -> roles that may call it.
METHOD_ROLES: Final[dict[str, frozenset[Role]]] = {
    "Record": _WRITE,
    "RecordBatch": _WRITE,
    "GetEvent": _READ,
    "Query": _READ,
    "CountEvents": _READ,
    "StreamEvents": _READ,
    "Export": _EXPORT,
    "GetCheckpoint": _READ,
    "GetInclusionProof": _READ,
    "GetConsistencyProof": _READ,
    "GetVerifierKeys": _READ,
    "ListPurgedLeaves": _READ,
    "GetReceivedRange": _READ,
    "VerifyLog": _ADMIN,
    "GetTenantSettings": _ADMIN,
    "UpdateTenantSettings": _ADMIN,
    "HashSecret": _ADMIN,
    "CreateToken": _ADMIN,
    "ListTokens": _ADMIN,
    "RevokeToken": _ADMIN,
    "GetRetentionPolicy": _ADMIN,
    "UpdateRetentionPolicy": _ADMIN,
    "PreviewRetentionPolicy": _ADMIN,
    "SetLegalHold": _ADMIN,
    "EraseTenant": _ADMIN,
    "CreateSink": _ADMIN,
    "GetSink": _ADMIN,
    "ListSinks": _ADMIN,
    "UpdateSink": _ADMIN,
    "DeleteSink": _ADMIN,
    "ListDeadLetters": _ADMIN,
    "ReplaySink": _ADMIN,
    "CreateAlertRule": _ADMIN,
    "ListAlertRules": _ADMIN,
    "DeleteAlertRule": _ADMIN,
    "UpdateAlertRule": _ADMIN,
    "SetActionDescription": _ADMIN,
    "ListActionCatalog": _READ,
}


# Methods that change a tenant's configuration: their caller's token is looked
# up afresh, never taken from the cache (a revoked token must not mint a new
# one, or point a sink elsewhere, in the seconds other processes still trust it).
# EraseTenant checks its token in the erasure's own transaction instead: its
# repeat must still reach the receipt once the erasure removed every token.
CHANGES: Final = frozenset(
    {
        "UpdateTenantSettings",
        "CreateToken",
        "RevokeToken",
        "UpdateRetentionPolicy",
        "SetLegalHold",
        "CreateSink",
        "UpdateSink",
        "DeleteSink",
        "ReplaySink",
        "CreateAlertRule",
        "UpdateAlertRule",
        "DeleteAlertRule",
        "SetActionDescription",
    }
)


def may_call(role: Role, method: str) -> bool:
    return role in METHOD_ROLES.get(method, frozenset())


def roles_that_may_call(method: str) -> list[Role]:
    """The roles that may call `method`, least privileged first (as Role
    lists them): what a refused caller is told it needs."""
    allowed = METHOD_ROLES.get(method, frozenset())
    return [role for role in Role if role in allowed]
