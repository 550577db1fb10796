"""What the appender answers for each event it is handed: the event as stored,
or why it was not stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..domain.errors import SealtrailError


@dataclass(frozen=True, slots=True)
class Appended:
    """An event as stored: its position, canonical record and leaf hash.

    A new event also carries its id and received time, so the caller can answer
    without parsing the record back, and its whole view as stored (its caller
    view followed by the server's fields, ADR 0025) where the appender built
    one; a deduplicated one has only its record."""

    seq: int
    record: str
    leaf_hash: bytes
    deduplicated: bool = False
    event_id: str = ""
    received_at: datetime | None = None
    view: bytes | None = None


# Per event: the stored event, or why it was not stored.
AppendOutcome = Appended | SealtrailError
# A submission's outcomes, one per event; or one error for all of them (its
# tenant was erased, or is being erased).
SubmissionOutcome = list[AppendOutcome] | SealtrailError
