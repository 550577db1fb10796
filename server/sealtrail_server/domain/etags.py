"""Etags (AIP-154): a checksum of a resource as stored, which a client sends
back with a change so that the change applies only to what it read.

Each is computed from the stored fields, never kept in a column: nothing to
migrate, and it cannot drift from the row (ADR 0033, ADR 0035).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime

from .errors import Aborted


def etag_of(fields: Mapping[str, object]) -> str:
    """A strong etag (RFC 7232: quoted) of a resource's fields, given as JSON
    values: the first 128 bits of SHA-256 over them as canonical-enough JSON
    (sorted keys, no spaces)."""
    material = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return f'"{hashlib.sha256(material).hexdigest()[:32]}"'


def instant(at: datetime | None) -> str | None:
    """`at` as an etag field: in UTC, so that no connection's TimeZone setting
    changes an etag."""
    return None if at is None else at.astimezone(UTC).isoformat()


def require_etag(sent: str, current: str, *, what: str) -> None:
    """Aborted (reason ETAG_MISMATCH) unless `sent` is empty (no condition) or
    `current`: `what` changed since the caller read it. Checked before
    anything is recorded or written, under the lock that orders changes of
    `what` (store/changes.py), and even for a change that would leave `what`
    as it is: the caller decided on something no longer there."""
    if sent and sent != current:
        raise Aborted(
            f"the {what} changed since etag {sent} was read (now {current}):"
            " read again and decide anew",
            reason="ETAG_MISMATCH",
        )
