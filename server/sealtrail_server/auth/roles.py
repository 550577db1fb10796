"""Roles and which RPCs each may call. Anything not listed is denied."""

from __future__ import annotations

from typing import Final

from ..domain.access import Role

_WRITE: Final = frozenset({Role.RECORDER, Role.ADMIN})
_READ: Final = frozenset({Role.READER, Role.ADMIN})
_ADMIN: Final = frozenset({Role.ADMIN})

# AuditLogService method name -> roles that may call it.
METHOD_ROLES: Final[dict[str, frozenset[Role]]] = {
    "Record": _WRITE,
    "RecordBatch": _WRITE,
    "GetEvent": _READ,
    "Query": _READ,
    "StreamEvents": _READ,
    "Export": _READ,
    "GetCheckpoint": _READ,
    "GetInclusionProof": _READ,
    "GetConsistencyProof": _READ,
    "GetVerifierKeys": _READ,
    "VerifyLog": _ADMIN,
    "GetTenantSettings": _ADMIN,
    "UpdateTenantSettings": _ADMIN,
    "HashSecret": _ADMIN,
}


def may_call(role: Role, method: str) -> bool:
    return role in METHOD_ROLES.get(method, frozenset())
