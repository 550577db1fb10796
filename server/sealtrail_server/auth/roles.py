"""Roles and which RPCs each may call. Anything not listed is denied."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Role(StrEnum):
    RECORDER = "recorder"  # writes events
    READER = "reader"  # reads, tails and exports events
    ADMIN = "admin"  # everything


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a token: its tenant is the only one it can touch."""

    tenant_id: str
    token_id: str
    role: Role


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
}


def may_call(role: Role, method: str) -> bool:
    return role in METHOD_ROLES.get(method, frozenset())
