"""Whether the events a log no longer holds within some seqs are retention's:
each tombstone (a removed event's leaf, tree_nodes level 0) lies within the
seqs of a purge retention recorded, by a `retention.purged` record whose
statement the log's key signed, or by a purge's sealed summary not yet
recorded; and where those purges' seqs meet, the tombstones there are no
more than the purges say they removed. What an export signs as removed by
retention, what GetInclusionProof and a stream's PURGED call so, and what a
sink's replay records so, is held to it: a superuser's DELETE with the leaf
kept passed for a purge (helper-555), and one between two events a purge
removed passed while the check was by ranges alone (helper-577).

By counts, not leaf by leaf: a probe of the tombstones' index for each gap
between the purges' seqs, and a count of it over each stretch of them the
asked seqs meet, however many events were removed. The records sign how
many leaves each purge removed and a digest of which, not which seqs: a
count tells that more were removed there than retention says, not which
one; and an event removed by hand where retention's removed one was put
back (as many as the records say, but not the ones) passes here. VerifyLog
checks every leaf against the statements' digests (REMOVALS_UNACCOUNTED).

The records' statements are verified once a tenant's set of them
(`RecordedPurges`), off the event loop: 0.2 s of CPU a thousand records,
which every other call of the process waited for, at each call."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from sealtrail._words import counted
from sealtrail.tlog import RETENTION_ACTION, RemovalLedger, Verifier

from ..domain.purge_summaries import SummarySeal
from .database import Connection
from .retention import pending_purges

# How many tombstones each stretch of purges' seqs holds, (lo, hi], and the
# first of them within the asked seqs (lo, hi], once a stretch: the index's.
_REMOVED_IN_STRETCHES: Final = (
    "SELECT t.removed, t.first + 1 FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY"
    " AS g(lo, hi, n), LATERAL (SELECT count(*) AS removed,"
    "  min(idx) FILTER (WHERE idx >= %s AND idx < %s) AS first FROM tree_nodes"
    "  WHERE tenant_id = %s AND level = 0 AND idx >= g.lo AND idx < g.hi) AS t ORDER BY g.n"
)

# How many retention records the log holds, and the last one's seq: the
# (tenant_id, action, seq) index's. A record more, or one gone, changes it.
_RECORDS_HELD: Final = (
    "SELECT count(*), coalesce(max(seq), 0) FROM events WHERE tenant_id = %s AND action = %s"
)

# The first tombstone of each gap, seqs (lo, hi]: the (tenant_id, level, idx)
# key's index, once a gap.
_FIRST_IN_GAPS: Final = (
    "SELECT min(t.idx) + 1 FROM unnest(%s::bigint[], %s::bigint[]) AS g(lo, hi),"
    " LATERAL (SELECT idx FROM tree_nodes WHERE tenant_id = %s AND level = 0"
    "  AND idx >= g.lo AND idx < g.hi ORDER BY idx LIMIT 1) AS t"
)


@dataclass(frozen=True, slots=True)
class _Purge:
    """What a purge retention recorded (or sealed) says it removed: how
    many events, all within seqs `first`..`last`."""

    first: int
    last: int
    count: int


@dataclass(frozen=True, slots=True)
class _Stretch:
    """Seqs `first`..`last` that the seqs of purges cover without a break,
    and how many events those purges say they removed there."""

    first: int
    last: int
    accounted: int


class RecordedPurges:
    """Each tenant's purges its retention records prove, verified once for
    the records the log holds: kept while their count, the last one's seq,
    the log's origin and the trusted keys are the same (a purge records
    itself once, at the log's end; a record deleted changes the count). A
    record rewritten in place keeps what its statement proved when it was
    read: signed by a trusted key for this log, it was retention's. The
    most recently used `tenants` are kept."""

    def __init__(self, *, tenants: int = 1024) -> None:
        self._tenants = tenants
        self._proven: OrderedDict[str, tuple[tuple[Any, ...], dict[str, _Purge]]] = OrderedDict()

    async def of(
        self, conn: Connection, tenant_id: str, origin: str, verifiers: list[Verifier]
    ) -> dict[str, _Purge]:
        """The tenant's purges its records prove, read in `conn`'s snapshot
        (a copy: the caller adds the pending ones)."""
        cursor = await conn.execute(_RECORDS_HELD, [tenant_id, RETENTION_ACTION])
        row = await cursor.fetchone()
        key = (origin, tuple(verifiers), *(row or ()))
        cached = self._proven.get(tenant_id)
        if cached is not None and cached[0] == key:
            self._proven.move_to_end(tenant_id)
            return dict(cached[1])
        cursor = await conn.execute(
            "SELECT record FROM events WHERE tenant_id = %s AND action = %s ORDER BY seq",
            [tenant_id, RETENTION_ACTION],
        )
        records = [record for (record,) in await cursor.fetchall()]
        purges = await asyncio.to_thread(_proven_purges, records, origin, verifiers)
        self._proven[tenant_id] = (key, purges)
        self._proven.move_to_end(tenant_id)
        while len(self._proven) > self._tenants:
            self._proven.popitem(last=False)
        return dict(purges)


async def unaccounted_removals(
    conn: Connection,
    tenant_id: str,
    *,
    after_seq: int,
    upto_seq: int,
    origin: str,
    verifiers: list[Verifier],
    seal: SummarySeal,
    recorded: RecordedPurges,
) -> str | None:
    """What is wrong with the removed seqs of (after_seq, upto_seq], naming
    the first retention's records do not account for; None if they do.
    Reads in one snapshot: a purge's batch writes its tombstones and its
    summary together, and its record is in the log before the summary goes,
    so a pass running meanwhile is accounted for, and once."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # Nearly every export: nothing removed, and nothing else read.
        if await _first_removed(conn, tenant_id, [(after_seq, upto_seq)]) is None:
            return None
        purges = await recorded.of(conn, tenant_id, origin, verifiers)
        for pending in await pending_purges(conn, tenant_id):
            # Its record may be in the log already (the summary goes after).
            if pending.purge_id not in purges and pending.sealed_by(seal):
                purges[pending.purge_id] = _summarised(pending.summary)
        stretches = _stretches(list(purges.values()))
        ranges = [(stretch.first, stretch.last) for stretch in stretches]
        outside = await _first_removed(conn, tenant_id, _gaps(after_seq, upto_seq, ranges))
        if outside is not None:
            return removed_outside_retention(outside)
        return await _first_beyond_counts(conn, tenant_id, after_seq, upto_seq, stretches)


def _proven_purges(records: list[str], origin: str, verifiers: list[Verifier]) -> dict[str, _Purge]:
    """Each purge retention recorded, by its id, by a record (of `records`,
    in seq order) whose statement a trusted key signed for this log and
    this purge (once a purge: a record repeated, or copied with other seqs,
    counts for nothing, as the ledger counts it); its count as the
    statement signs it. In a thread: all CPU, a signature a record."""
    ledger = RemovalLedger(origin, verifiers, upgrade="the server")
    purges: dict[str, _Purge] = {}
    for record in records:
        try:
            parsed = json.loads(record)
        except (ValueError, RecursionError):
            continue
        proven, stated = set(ledger.purge_ids), ledger.stated.count
        ledger.note_record(parsed)
        for purge_id in ledger.purge_ids - proven:
            first, last = _seqs(parsed.get("details"))
            purges[purge_id] = _Purge(first, last, ledger.stated.count - stated)
    return purges


def _summarised(summary: dict[str, Any]) -> _Purge:
    """A purge as its sealed summary says (the service wrote it)."""
    first, last = _seqs(summary)
    count = summary.get("purged")
    return _Purge(first, last, count if type(count) is int and count > 0 else 0)


def _stretches(purges: list[_Purge]) -> list[_Stretch]:
    """The seqs the purges cover, in stretches without a break (purges whose
    seqs meet or overlap are one stretch: a later pass removes between the
    events an earlier one did), in order, each with the purges' counts."""
    stretches: list[_Stretch] = []
    for purge in sorted((p for p in purges if p.first <= p.last), key=lambda p: p.first):
        last = stretches[-1] if stretches else None
        if last is not None and purge.first <= last.last + 1:
            stretches[-1] = _Stretch(
                last.first, max(last.last, purge.last), last.accounted + purge.count
            )
        else:
            stretches.append(_Stretch(purge.first, purge.last, purge.count))
    return stretches


async def _first_beyond_counts(
    conn: Connection, tenant_id: str, after_seq: int, upto_seq: int, stretches: list[_Stretch]
) -> str | None:
    """What is wrong with the first stretch meeting (after_seq, upto_seq]
    that holds more tombstones than its purges say they removed."""
    met = [s for s in stretches if s.last > after_seq and s.first <= upto_seq]
    if not met:
        return None
    cursor = await conn.execute(
        _REMOVED_IN_STRETCHES,
        [[s.first - 1 for s in met], [s.last for s in met], after_seq, upto_seq, tenant_id],
    )
    for stretch, (removed, first) in zip(met, await cursor.fetchall(), strict=True):
        if removed > stretch.accounted and first is not None:
            return (
                f"seq {first} is missing, its leaf kept as if removed, but retention's records"
                f" account for {stretch.accounted} of the {counted(removed, 'removed event')}"
                f" of seqs {stretch.first}..{stretch.last}: {removed - stretch.accounted}"
                " removed outside retention (VerifyLog tells the rest)"
            )
    return None


def _seqs(details: Any) -> tuple[int, int]:
    """The (first, last) seqs a purge's record or summary names; (0, -1),
    no seq, if it names none."""
    if not isinstance(details, dict):
        return (0, -1)
    first, last = details.get("first_seq"), details.get("last_seq")
    if type(first) is not int or type(last) is not int:
        return (0, -1)
    return (first, last)


def _gaps(after_seq: int, upto_seq: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The seqs of (after_seq, upto_seq] outside every range, as (lo, hi]."""
    gaps, lo = [], after_seq
    for first, last in sorted(r for r in ranges if r[0] <= r[1]):
        if first - 1 > lo:
            gaps.append((lo, min(first - 1, upto_seq)))
        lo = max(lo, last)
        if lo >= upto_seq:
            break
    if lo < upto_seq:
        gaps.append((lo, upto_seq))
    return [(gap_lo, gap_hi) for gap_lo, gap_hi in gaps if gap_lo < gap_hi]


async def _first_removed(
    conn: Connection, tenant_id: str, gaps: list[tuple[int, int]]
) -> int | None:
    """The first seq within the gaps (each (lo, hi]) with a tombstone."""
    if not gaps:
        return None
    cursor = await conn.execute(
        _FIRST_IN_GAPS, [[lo for lo, _ in gaps], [hi for _, hi in gaps], tenant_id]
    )
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def removed_outside_retention(seq: int) -> str:
    """What is wrong with `seq`, removed where no purge's seqs reach."""
    return (
        f"seq {seq} is missing, its leaf kept as if removed, but no record of retention's"
        " accounts for it: it was removed outside retention (VerifyLog tells the rest)"
    )
