"""Accounting for the events a log no longer holds.

Retention removes an event's record and keeps its leaf hash (a tombstone), so
proofs still verify; after each pass it records a `retention.purged` event
(actor: the system actor `sealtrail-server:retention`) counting what it
removed. A leaf stands in for its record equally well whoever put it there, so
a database superuser could replace a kept event by its leaf and every proof
would still check. What tells the two apart is the count: each removal is in
exactly one retention record, retention never removes its own records, and no
caller may record a `retention.*` action, so a log holds exactly as many
removed leaves as its retention records count, and a leaf more is an event
hidden by hand."""

from __future__ import annotations

import json
from typing import Any, Final

RETENTION_ACTION: Final = "retention.purged"
RETENTION_ACTOR: Final = {"type": "system", "id": "sealtrail-server:retention"}
_MARK: Final = b'"' + RETENTION_ACTION.encode() + b'"'


def removals_recorded(record: bytes | dict[str, Any]) -> int:
    """How many removals `record` (canonical JSON bytes, or parsed) accounts
    for: its count if it is retention's own record of a purge, else 0."""
    if isinstance(record, bytes):
        if _MARK not in record:  # nearly every record: no parse
            return 0
        try:
            record = json.loads(record)
        except ValueError:
            return 0
    if not isinstance(record, dict) or record.get("action") != RETENTION_ACTION:
        return 0
    actor = record.get("actor")
    if not isinstance(actor, dict) or any(actor.get(k) != v for k, v in RETENTION_ACTOR.items()):
        return 0
    details = record.get("details")
    count = details.get("purged") if isinstance(details, dict) else None
    return count if type(count) is int and count > 0 else 0


def unaccounted_removals(removed: int, recorded: int, *, pending: int | None = None) -> str | None:
    """Why `removed` leaves do not match the `recorded` count of the log's
    retention records, or None when they match. `pending`: the removals a
    purge has made and not yet recorded, which only the database knows (None
    for a bundle, which cannot)."""
    if recorded <= removed <= recorded + (pending or 0):
        return None
    if removed > recorded:
        hidden = removed - recorded - (pending or 0)
        unless = (
            ", unless a purge that had just run had not recorded itself when the bundle was"
            " written (it does at once, or at its next pass if the log refused it then):"
            " write the bundle again"
            if pending is None
            else ""
        )
        return (
            f"the log holds the leaves of {removed} removed events, but its retention records"
            f" account for {recorded}: {hidden} were removed outside retention (hidden){unless}"
        )
    return (
        f"the log's retention records account for {recorded} removed events, but it holds"
        f" the leaves of {removed}"
    )
