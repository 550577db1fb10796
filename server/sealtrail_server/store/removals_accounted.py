"""Whether the events a log no longer holds within some seqs are retention's:
each tombstone (a removed event's leaf, tree_nodes level 0) lies within the
seqs of a purge retention recorded, by a `retention.purged` record whose
statement the log's key signed, or by a purge's sealed summary not yet
recorded. What an export signs as removed by retention, and what
GetInclusionProof calls so, is held to it: a superuser's DELETE with the leaf
kept passed for a purge (helper-555).

By ranges, not leaf by leaf: a probe of the tombstones' index for each gap
between the ranges, however many events were removed. VerifyLog checks every
leaf against the statements' digests (REMOVALS_UNACCOUNTED); an event removed
by hand between two a purge removed (one a longer rule kept) passes here and
fails there."""

from __future__ import annotations

import json
from typing import Any, Final

from sealtrail.tlog import RETENTION_ACTION, RemovalLedger, Verifier

from ..domain.purge_summaries import SummarySeal
from .database import Connection
from .retention import pending_purges

# The first tombstone of each gap, seqs (lo, hi]: the (tenant_id, level, idx)
# key's index, once a gap.
_FIRST_IN_GAPS: Final = (
    "SELECT min(t.idx) + 1 FROM unnest(%s::bigint[], %s::bigint[]) AS g(lo, hi),"
    " LATERAL (SELECT idx FROM tree_nodes WHERE tenant_id = %s AND level = 0"
    "  AND idx >= g.lo AND idx < g.hi ORDER BY idx LIMIT 1) AS t"
)


async def first_unaccounted_removal(
    conn: Connection,
    tenant_id: str,
    *,
    after_seq: int,
    upto_seq: int,
    origin: str,
    verifiers: list[Verifier],
    seal: SummarySeal,
) -> int | None:
    """The first seq of (after_seq, upto_seq] whose event is removed, its leaf
    kept, outside every range retention says it removed; None if there is
    none. Reads in one snapshot: a purge's batch writes its tombstones and
    its summary together, and its record is in the log before the summary
    goes, so a pass running meanwhile is accounted for."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # Nearly every export: nothing removed, and nothing else read.
        if await _first_removed(conn, tenant_id, [(after_seq, upto_seq)]) is None:
            return None
        ranges = await _recorded_ranges(conn, tenant_id, origin, verifiers)
        for pending in await pending_purges(conn, tenant_id):
            if pending.sealed_by(seal):
                ranges.append(_seqs(pending.summary))
        return await _first_removed(conn, tenant_id, _gaps(after_seq, upto_seq, ranges))


async def _recorded_ranges(
    conn: Connection, tenant_id: str, origin: str, verifiers: list[Verifier]
) -> list[tuple[int, int]]:
    """The seqs (first, last) of each purge retention recorded, by a record
    whose statement a trusted key signed for this log and this purge (once
    a purge: a record repeated, or copied with other seqs, counts for
    nothing, as the ledger counts it)."""
    cursor = await conn.execute(
        "SELECT record FROM events WHERE tenant_id = %s AND action = %s ORDER BY seq",
        [tenant_id, RETENTION_ACTION],
    )
    ledger = RemovalLedger(origin, verifiers, upgrade="the server")
    ranges = []
    for (record,) in await cursor.fetchall():
        try:
            parsed = json.loads(record)
        except (ValueError, RecursionError):
            continue
        proven = len(ledger.purge_ids)
        ledger.note_record(parsed)
        if len(ledger.purge_ids) > proven:
            ranges.append(_seqs(parsed.get("details")))
    return ranges


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
    """What is wrong with `seq`, found by `first_unaccounted_removal`."""
    return (
        f"seq {seq} is missing, its leaf kept as if removed, but no record of retention's"
        " accounts for it: it was removed outside retention (VerifyLog tells the rest)"
    )
