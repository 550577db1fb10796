"""Erasure receipts: what is left of an erased tenant, signed by the key that
signs its log's checkpoints, as a C2SP signed note of its own kind.

    sealtrail erasure receipt v1
    <log origin>
    <tenant id>
    <final tree size, decimal>
    <final root hash, base64>
    <erased by: a token id, or sealtrail-server:NAME>
    <erase time, RFC 3339 UTC with microseconds: 2026-12-05T18:53:52.123456Z>
    <rows removed by table, JSON with its keys sorted: {"events":40,...}>

The first line tells a receipt from a checkpoint, whose first line is its
origin (`<prefix>/<tenant>`, always with a slash) and whose second is a
number: neither note parses as the other, so one key signs both and neither
signature stands for the other. Before it the final signed checkpoint was the
receipt's only signed part, and a database superuser's `tenant_erasures` row
reusing the tenant's latest genuine checkpoint looked the same (ADR 0073).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sealtrail.tlog._checkpoint import parse_size_and_root
from sealtrail.tlog._note import NoteError, refuse_newer, statement_lines

ERASURE_RECEIPT_HEADER: Final = "sealtrail erasure receipt v1"
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


def receipt_time(moment: datetime) -> str:
    """A receipt's erase time as signed: UTC, to the microsecond."""
    return f"{moment.astimezone(UTC):{_TIME_FORMAT}}"


@dataclass(frozen=True, slots=True)
class ErasureStatement:
    """What an erasure receipt's signed note says."""

    origin: str
    tenant_id: str
    final_tree_size: int
    final_root_hash: bytes
    erased_by: str
    erased_at: datetime
    removed_rows: dict[str, int]

    def text(self) -> str:
        """The note's text, to be signed."""
        removed = json.dumps(self.removed_rows, sort_keys=True, separators=(",", ":"))
        return "".join(
            f"{line}\n"
            for line in (
                ERASURE_RECEIPT_HEADER,
                self.origin,
                self.tenant_id,
                str(self.final_tree_size),
                base64.b64encode(self.final_root_hash).decode(),
                self.erased_by,
                receipt_time(self.erased_at),
                removed,
            )
        )

    @classmethod
    def parse(cls, text: str) -> ErasureStatement:
        """The receipt in a note's text (as `open_note` returns it); NoteError
        if it is none (a checkpoint's, or another statement's),
        NewerStatementError if it is of a version beyond this client's."""
        refuse_newer(text, ERASURE_RECEIPT_HEADER, what="the erasure receipt")
        lines = statement_lines(text, ERASURE_RECEIPT_HEADER, 7, what="erasure receipt")
        origin, tenant_id, size, root, erased_by, when, removed = lines
        if not origin or not tenant_id or not erased_by:
            raise NoteError("an erasure receipt names a log, a tenant and who erased it")
        final_size, root_hash = parse_size_and_root(size, root, of="the receipt's final")
        try:
            erased_at = datetime.strptime(when, _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise NoteError(f"the receipt's erase time {when!r} is not RFC 3339 UTC") from None
        if receipt_time(erased_at) != when:
            raise NoteError(f"the receipt's erase time {when!r} is not RFC 3339 UTC")
        try:
            rows = json.loads(removed)
        except (ValueError, RecursionError):
            rows = None
        if not isinstance(rows, dict) or any(
            type(count) is not int or count < 0 for count in rows.values()
        ):
            raise NoteError("the receipt's removed rows are not a JSON object of counts")
        return cls(origin, tenant_id, final_size, root_hash, erased_by, erased_at, rows)

    def differences(self, other: ErasureStatement) -> list[str]:
        """The fields (by their names in the API's ErasureReceipt) in which
        `other` differs from this, and the origin's tenant if it is not the
        tenant's (whatever the origin's prefix: SEALTRAIL_LOG_ORIGIN may change)."""
        differ = [
            name
            for name, mine, theirs in (
                ("tenant_id", self.tenant_id, other.tenant_id),
                ("final_tree_size", self.final_tree_size, other.final_tree_size),
                ("final_root_hash", self.final_root_hash, other.final_root_hash),
                ("erased_by", self.erased_by, other.erased_by),
                ("erase_time", self.erased_at, other.erased_at),
                ("removed_rows", self.removed_rows, other.removed_rows),
            )
            if mine != theirs
        ]
        prefix, slash, tenant = other.origin.rpartition("/")
        if not (prefix and slash) or tenant != other.tenant_id:
            differ.append("origin")
        return differ
