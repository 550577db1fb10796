"""Accounting for the events a log no longer holds.

Retention removes an event's record and keeps its leaf hash (a tombstone), so
proofs still verify; after each pass it records a `retention.purged` event
(actor: the system actor `sealtrail-server:retention`). A leaf stands in for
its record equally well whoever put it there, so a database superuser could
replace a kept event by its leaf and every proof would still check. What
tells the two apart is the record's statement: a signed note, by the key that
signs the log's checkpoints, naming the log, the purge, how many leaves it
removed and a digest of exactly which (seq and leaf hash of each). The digest
adds up: the digests of every statement sum to the digest of every removed
leaf of the log, so a leaf removed by hand, or one removed by retention and
put back from a backup in exchange, changes one side and not the other; and a
statement cannot be forged, or written into the log by hand, without the key.

    sealtrail retention statement v1
    <log origin>
    <purge id>
    <leaves removed, decimal>
    <digest, base64 of 512 bytes>

A leaf's digest is the 512 bytes of SHAKE256("sealtrail removed leaf v1" ||
0x00 || seq as 8 bytes big-endian || leaf hash), read as a big-endian
integer; a set's is the sum of its leaves' modulo 2^4096 (ADR 0014, addendum
of 2026-12-04): the generalized birthday attack on such a sum costs about
2^(2 sqrt(4096)) = 2^128, where 2^512 left it at about 2^45 (helper-127)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sealtrail._words import counted, noun
from sealtrail.tlog._note import (
    NewerStatementError,
    NoteError,
    Verifier,
    newer_sealtrails,
    open_note,
    refuse_newer,
)

RETENTION_ACTION: Final = "retention.purged"
RETENTION_ACTOR: Final = {"type": "system", "id": "sealtrail-server:retention"}
STATEMENT_HEADER: Final = "sealtrail retention statement v1"
_MARK: Final = b'"' + RETENTION_ACTION.encode() + b'"'
_LEAF_LABEL: Final = b"sealtrail removed leaf v1\x00"
_DIGEST_BYTES: Final = 512
_MASK: Final = (1 << (8 * _DIGEST_BYTES)) - 1  # the sum modulo 2^4096


def purge_key(purge_id: str) -> str:
    """The idempotency key a purge is recorded under, in its record."""
    return f"{RETENTION_ACTION}:{purge_id}"


@dataclass(slots=True)
class RemovedLeaves:
    """How many leaves, and which (their digest), of a log's removed events."""

    count: int = 0
    digest: int = 0

    def add(self, seq: int, leaf: bytes) -> None:
        mixed = hashlib.shake_256(_LEAF_LABEL + seq.to_bytes(8, "big") + leaf).digest(_DIGEST_BYTES)
        self.count += 1
        self.digest = (self.digest + int.from_bytes(mixed, "big")) & _MASK

    def merge(self, other: RemovedLeaves) -> None:
        self.count += other.count
        self.digest = (self.digest + other.digest) & _MASK

    def hex(self) -> str:
        return self.digest.to_bytes(_DIGEST_BYTES, "big").hex()

    @classmethod
    def from_hex(cls, count: int, digest: str) -> RemovedLeaves:
        """Raises ValueError if `digest` is not one `hex()` wrote."""
        raw = bytes.fromhex(digest)
        if len(raw) != _DIGEST_BYTES or type(count) is not int or count < 0:
            raise ValueError("not a digest of removed leaves")
        return cls(count, int.from_bytes(raw, "big"))


@dataclass(frozen=True, slots=True)
class PurgeStatement:
    """What a purge removed of a log, as its signed note says."""

    origin: str
    purge_id: str
    removed: RemovedLeaves

    def text(self) -> str:
        """The note's text, to be signed."""
        digest = base64.b64encode(self.removed.digest.to_bytes(_DIGEST_BYTES, "big")).decode()
        return (
            f"{STATEMENT_HEADER}\n{self.origin}\n{self.purge_id}\n{self.removed.count}\n{digest}\n"
        )

    @classmethod
    def parse(cls, text: str) -> PurgeStatement:
        """The statement in a note's text (as `open_note` returns it);
        NoteError if it is none, NewerStatementError if it is of a version
        beyond this client's."""
        refuse_newer(text, STATEMENT_HEADER, what="the retention statement")
        lines = text.split("\n")
        if len(lines) != 6 or lines[0] != STATEMENT_HEADER or lines[-1] != "":
            raise NoteError("not a retention statement")
        origin, purge_id, count, encoded = lines[1:5]
        try:
            digest = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("the statement's digest is not base64") from None
        if not count.isdigit() or len(digest) != _DIGEST_BYTES or not origin or not purge_id:
            raise NoteError("a retention statement names a log, a purge, a count and a digest")
        return cls(origin, purge_id, RemovedLeaves(int(count), int.from_bytes(digest, "big")))


class RemovalLedger:
    """Checks that a log's removed leaves are exactly those its retention
    records' statements name. Give it every record (`note_record`, in any
    order) and every removed leaf (`removed`), then ask `unaccounted`."""

    def __init__(
        self, origin: str, verifiers: list[Verifier], *, upgrade: str = "the client"
    ) -> None:
        """`upgrade`: who is to be upgraded to read a statement of a newer
        Sealtrail ("the server", checking its own log)."""
        self._origin = origin
        self._verifiers = verifiers
        self._upgrade = upgrade
        self.leaves = RemovedLeaves()  # what the log no longer holds
        self.stated = RemovedLeaves()  # what retention's statements account for
        self.purge_ids: set[str] = set()
        # Retention's records whose statement does not verify, and the
        # removals they claim: they account for nothing.
        self.unproven = 0
        self._unproven_claimed = 0
        # Retention's records whose statement a trusted key signed in a
        # version beyond this release's (a newer Sealtrail's), and the
        # newest: what they account for is not known here.
        self.newer = 0
        self._newest = 0

    def removed(self, seq: int, leaf: bytes) -> None:
        self.leaves.add(seq, leaf)

    def note_record(self, record: bytes | dict[str, Any]) -> None:
        """Account for `record` (canonical JSON bytes, or parsed) if it is
        retention's record of a purge; any other record is passed over."""
        if isinstance(record, bytes):
            if _MARK not in record:  # nearly every record: no parse
                return
            try:
                record = json.loads(record)
            except (ValueError, RecursionError):  # no record of Sealtrail's (nested 1,000 deep)
                return
        if not isinstance(record, dict) or record.get("action") != RETENTION_ACTION:
            return
        actor = record.get("actor")
        if not isinstance(actor, dict) or any(
            actor.get(k) != v for k, v in RETENTION_ACTOR.items()
        ):
            return
        details = record.get("details")
        details = details if isinstance(details, dict) else {}
        newer = self.newer
        statement = self._statement(details.get("statement"), record.get("idempotency_key"))
        if statement is None and self.newer > newer:
            return  # signed, of a newer Sealtrail: neither proven nor forged
        if statement is None or statement.purge_id in self.purge_ids:
            claimed = details.get("purged")
            self.unproven += 1
            self._unproven_claimed += claimed if type(claimed) is int and claimed > 0 else 0
            return
        self.purge_ids.add(statement.purge_id)
        self.stated.merge(statement.removed)

    def _statement(self, note: object, key: object) -> PurgeStatement | None:
        """The record's statement if a trusted key signed it, for this log
        and this record's purge."""
        if not isinstance(note, str):
            return None
        try:
            text, _ = open_note(note, self._verifiers)
            statement = PurgeStatement.parse(text)
        except NewerStatementError as newer:
            self.newer += 1
            self._newest = max(self._newest, newer.version)
            return None
        except NoteError:
            return None
        # Of this log's tenant, whatever the origin's prefix then (an operator
        # may change SEALTRAIL_LOG_ORIGIN; the digest names this log's leaves).
        tenant = self._origin.rpartition("/")[2]
        if statement.origin.rpartition("/")[2] != tenant or key != purge_key(statement.purge_id):
            return None
        return statement

    def unaccounted(self, pending: Sequence[RemovedLeaves] | None = None) -> str | None:
        """Why the removed leaves are not those the statements name, or None
        when they are. `pending`: what purges have removed and not yet
        recorded, which only the database knows (None for a bundle, which
        cannot); the leaves may match the statements with or without it."""
        stated, leaves = self.stated, self.leaves
        with_pending = RemovedLeaves(stated.count, stated.digest)
        for summary in pending or ():
            with_pending.merge(summary)
        if leaves in (stated, with_pending):
            return None
        if self.newer:
            # Not counted among the unproven: signed, and of a release that
            # reads them. What they removed is not known here.
            newer = newer_sealtrails("the retention statement", self._newest, upgrade=self._upgrade)
            return (
                f"{counted(self.newer, 'retention record')}"
                f" {noun(self.newer, 'bears', 'bear')} a statement not read here ({newer}):"
                " the leaves of removed events are not accounted for"
            )
        unproven = (
            f"; {counted(self.unproven, 'retention record')}"
            f" {noun(self.unproven, 'bears', 'bear')} no statement signed by a trusted key"
            f" for this log (forged, repeated, signed by a key not trusted here, or written by a"
            f" release before statements),"
            f" and their {counted(self._unproven_claimed, 'removal')} count for nothing"
            if self.unproven
            else ""
        )
        accounted = with_pending.count
        if leaves.count > accounted:
            unless = (
                ", unless a purge that had just run had not recorded itself when the bundle was"
                " written (it does at once, or at its next pass if the log refused it then):"
                " write the bundle again"
                if pending is None
                else ""
            )
            return (
                f"the log holds the leaves of {counted(leaves.count, 'removed event')}, but"
                f" retention's statements account for {accounted}: {leaves.count - accounted}"
                f" {noun(leaves.count - accounted, 'was', 'were')} removed"
                f" outside retention (hidden){unproven}{unless}"
            )
        if leaves.count not in (stated.count, accounted):
            return (
                f"retention's statements account for {counted(stated.count, 'removed event')},"
                " but the log"
                f" holds the leaves of {leaves.count}{unproven}"
            )
        return (
            f"the log holds the leaves of {counted(leaves.count, 'removed event')}, as many as"
            " retention's"
            " statements account for, but not the ones they name: events were removed outside"
            f" retention and others put back in their place{unproven}"
        )
