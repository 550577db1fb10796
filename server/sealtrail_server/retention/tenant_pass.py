"""What one retention pass removes of one tenant: its expired events, rule by
rule, in batches of one transaction each, each batch reading a bounded part
of the log (ADR 0014 and its addenda), with a sealed summary of what was
removed kept beside the batches until the purge job records it
(`purger.py`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

import psycopg

from sealtrail.tlog import PurgeStatement, RemovedLeaves

from ..domain.purge_summaries import SummarySeal
from ..domain.retention import Selection, selection_key
from ..store.changes import ERASURE_SUBJECT, share_subjects
from ..store.retention import (
    PurgedBatch,
    locked_policy,
    mark_purged,
    note_pending_purge,
    purge_batch,
    purge_marks,
    received_at_after,
)
from ..store.tree import tree_size


@dataclass(slots=True)
class TenantPurge:
    """What one pass removed of one tenant."""

    tenant_id: str
    first_seq: int = 0
    last_seq: int = 0
    by_rule: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The idempotency key of its `retention.purged` event.
    purge_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Which leaves it removed: what its record's signed statement names.
    removed: RemovedLeaves = field(default_factory=RemovedLeaves)

    @property
    def count(self) -> int:
        return self.removed.count

    @classmethod
    def from_summary(cls, tenant_id: str, purge_id: str, summary: dict[str, Any]) -> TenantPurge:
        """A purge as `details()` summarised it (kept until recorded).
        KeyError or ValueError if it is not a summary this release wrote."""
        return cls(
            tenant_id,
            first_seq=summary["first_seq"],
            last_seq=summary["last_seq"],
            by_rule=summary["rules"],
            purge_id=purge_id,
            removed=RemovedLeaves.from_hex(summary["purged"], summary["removed"]),
        )

    def add(self, rule: str, cutoff: datetime, batch: PurgedBatch) -> None:
        self.removed.merge(batch.removed)
        self.first_seq = min(self.first_seq or batch.first_seq, batch.first_seq)
        self.last_seq = max(self.last_seq, batch.last_seq)
        entry = self.by_rule.setdefault(rule, {"purged": 0, "received_before": cutoff.isoformat()})
        entry["purged"] += batch.count
        # A policy changed during the pass moves a rule's cutoff: everything it
        # removed was received before the latest.
        latest = max(datetime.fromisoformat(entry["received_before"]), cutoff)
        entry["received_before"] = latest.isoformat()

    def statement(self, origin: str) -> PurgeStatement:
        """What its record's statement says, to be signed, of the log `origin`."""
        return PurgeStatement(origin, self.purge_id, self.removed)

    def details(self) -> dict[str, Any]:
        return {
            "purged": self.count,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "rules": self.by_rule,
            "removed": self.removed.hex(),
        }


# How far before its mark a selection is read again: receive times come from
# the appending processes' clocks, the mark from this one's.
MARK_MARGIN: Final = timedelta(days=1)
# Once what a marked selection has left to read spans more than this (after a
# long legal hold, or months without a pass), a batch reads at most a window's
# worth of its events, by receive time: else a rare category's batch would read
# all of it, holding the policy row. Hourly and daily passes read theirs in one
# batch, without the extra statement that finds where such a span ends.
SPANS_AFTER: Final = timedelta(days=3)  # daily passes: 2 days and the pass's length


def _read_from(mark: datetime | None, cutoff: datetime) -> datetime | None:
    """Where a selection's batches start reading: a day before its mark, and
    never after its cutoff (a mark a clock ahead set must not hide what is
    due now); None (the beginning) without a mark."""
    return None if mark is None else min(mark, cutoff) - MARK_MARGIN


@dataclass(frozen=True, slots=True)
class _Reading:
    """Where a selection's next batch reads: after `after_seq`, and, for a
    selection with a mark, from `received_from` (else by windows of seqs),
    until `received_before` once a span of what it has left is chosen (None:
    none yet). A span stays as chosen until a batch of it is not full: one
    found again would reach events received later, whose seqs may lie below
    `after_seq` (receive times come from the appenders' clocks)."""

    selection: Selection
    after_seq: int
    received_from: datetime | None
    received_before: datetime | None = None


async def purge_tenant(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    *,
    seal: SummarySeal,
    batch_events: int,
    scan_window: int,
    clock: Callable[[], datetime],
    min_days: int = 0,
    may_remove: Callable[[datetime], Awaitable[bool]] | None = None,
    on_batch: Callable[[int], None] = lambda _count: None,
) -> TenantPurge:
    """The tenant's expired events removed, rule by rule, one batch a
    transaction; what was removed, noted (sealed) with each batch. No limit
    is shorter than `min_days`, the deployment's floor, nor longer than the
    tenant's ceiling, read with its policy (`RetentionPolicy.within`).
    `may_remove(now)`, asked before each batch, stops the tenant's purge
    there if False (the purge job's clocks apart: purger.py).
    `on_batch(count)` is told of each batch once it committed."""
    purged = TenantPurge(tenant_id)
    now = clock()
    finished: set[str] = set()
    # Where each rule's batches reached, for the selection they ran.
    reading: dict[str, _Reading] = {}
    # Where earlier passes left each selection: all before is gone.
    marks = await purge_marks(conn, tenant_id)
    # Where a selection read by windows ends: events appended later are
    # too recent for any cutoff (a day at least).
    size = await tree_size(conn, tenant_id)
    while True:
        if may_remove is not None and not await may_remove(now):
            return purged
        # One batch per transaction: the policy is read again under its
        # lock each time, so a hold placed meanwhile stops the next batch.
        async with conn.transaction():
            await conn.execute("SET LOCAL sealtrail.removal = 'retention'")
            # Before any row: an erasure of the tenant (holding this from
            # before its first row) is waited for, never deadlocked with.
            await share_subjects(conn, [tenant_id], ERASURE_SUBJECT)
            stored = await locked_policy(conn, tenant_id)
            if stored.hold.on:
                return purged
            selections = stored.selections(min_days=min_days)
            pending = [s for s in selections if s.rule not in finished]
            if not pending:
                return purged
            selection = pending[0]
            key = selection_key(selection)
            cutoff = now - timedelta(days=selection.days)
            at = reading.get(selection.rule)
            if at is None or at.selection != selection:  # its first batch, or a new policy
                at = _Reading(selection, 0, _read_from(marks.get(key), cutoff))
            through, before = None, at.received_before or cutoff
            if at.received_from is None:
                through = at.after_seq + scan_window
            elif at.received_before is None and cutoff - at.received_from > SPANS_AFTER:
                end = await received_at_after(
                    conn,
                    tenant_id,
                    received_from=at.received_from,
                    received_before=cutoff,
                    events=scan_window,
                )
                if end is not None and end > at.received_from:
                    before = end
            batch = await purge_batch(
                conn,
                tenant_id,
                selection,
                received_before=before,
                limit=batch_events,
                after_seq=at.after_seq,
                through_seq=through,
                received_from=at.received_from,
            )
            full = batch.count == batch_events
            done = False
            # Where the selection is now done up to, if it moved.
            reached: datetime | None = None
            if full:  # more may match in what it read
                reading[selection.rule] = replace(
                    at, after_seq=batch.last_seq, received_before=before
                )
            elif through is not None:  # all of the window is done
                reading[selection.rule] = replace(at, after_seq=through)
                done = through >= size
            elif before < cutoff:  # all of the span is done
                reading[selection.rule] = replace(
                    at, after_seq=0, received_from=before, received_before=None
                )
                # A pass stopped later (a hold placed, a crash) leaves the
                # next to start from here, not from the mark it began at.
                reached = before
            else:
                done = True
            if done:
                reached = cutoff
            if batch.count:
                purged.add(selection.rule, cutoff, batch)
                # Committed with the batch: recorded, even after a crash.
                await note_pending_purge(
                    conn,
                    seal,
                    tenant_id,
                    purged.purge_id,
                    purged.details(),
                    now=clock(),
                )
            if reached is not None and marks.get(key) != reached:
                # The selection is done up to there (under the policy read
                # in this transaction): the next pass starts there.
                current = [selection_key(s) for s in selections]
                await mark_purged(conn, tenant_id, key, removed_before=reached, current=current)
                marks[key] = max(reached, marks.get(key, reached))  # as stored
        if batch.count:
            on_batch(batch.count)
        if done:
            finished.add(selection.rule)
