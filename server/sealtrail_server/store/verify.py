"""VerifyLog: read a tenant's whole log in seq order, recompute every leaf from
its stored record and the root at every signed checkpoint and at the head, and
report the first mismatch; on request, also check each event's stored view
(what Query shows of it) against its record. Reads through a server-side
cursor, so memory stays constant whatever the log's size."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncServerCursor

from sealtrail._words import counted
from sealtrail.tlog import (
    NoteError,
    RemovalLedger,
    RemovedLeaves,
    Verifier,
    open_note,
    parse_checkpoint,
)

from ..domain.event import record_names_seq
from ..domain.merkle import append_leaf, frontier_root
from ..domain.purge_summaries import SummarySeal
from .checkpoints import all_checkpoints, first_refused_checkpoint
from .database import Connection, Database
from .events import ShownEvent
from .retention import pending_purges

_FETCH_ROWS = 5000


@dataclass(frozen=True, slots=True)
class Failure:
    seq: int
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Verification:
    verified_size: int
    checkpoints_verified: int
    failure: Failure | None
    views_verified: int = 0


# Whether what Query shows of a row is what its record (the UTF-8 bytes
# hashed) says; the API layer knows how views are made and shown.
ViewCheck = Callable[[ShownEvent, bytes], bool]
# Rows checked between two turns of the event loop: other calls share the
# loop (checking a view costs tens of microseconds), and the next chunk, read
# ahead meanwhile, comes in at each turn.
_ROWS_PER_TURN = 250


class _ReadAhead:
    """A server-side cursor's rows in chunks, the next one read while this
    one is checked. Read in turn, the database waited while each chunk was
    hashed and the hashing while the next was read and sent: about a third
    of VerifyLog's time. The read shares the connection, whose lock makes a
    statement meanwhile (a tombstone, say) wait for it."""

    def __init__(self, cursor: AsyncServerCursor[Any]) -> None:
        self._cursor = cursor
        self._ahead: asyncio.Task[list[Any]] | None = None

    async def __aenter__(self) -> _ReadAhead:
        return self

    async def __aexit__(self, *_: object) -> None:
        # Ended before its chunk was taken (a mismatch found, a cancelled
        # call): the read finishes before the cursor is closed.
        if self._ahead is not None:
            with contextlib.suppress(Exception):
                await self._ahead

    async def next_chunk(self) -> list[Any]:
        """The next chunk (empty at the end): the one read ahead, if any."""
        ahead, self._ahead = self._ahead, None
        return await (ahead if ahead is not None else self._cursor.fetchmany(_FETCH_ROWS))

    def read_ahead(self) -> None:
        """Start reading the chunk after the one just taken."""
        self._ahead = asyncio.create_task(self._cursor.fetchmany(_FETCH_ROWS))


async def verify_log(
    db: Database,
    *,
    tenant_id: str,
    origin: str,
    verifiers: list[Verifier],
    seal: SummarySeal,
    view_matches: ViewCheck | None = None,
    remembered: tuple[int, bytes] | None = None,
) -> Verification:
    """`remembered`: the size and root of a checkpoint the server signed, as it
    remembers them: a log whose checkpoint rows were deleted with the log cut
    back or rewritten to match is checked against it too (helper-123)."""
    async with (
        # Within the bulk reads' share: never the connection left for the
        # appender, however many logs are verified at once.
        db.bulk_connection(tenant_id) as conn,
        conn.transaction(),
        # Binary: records come as the UTF-8 bytes that were hashed, never decoded.
        conn.cursor(name="sealtrail_verify_log", binary=True) as cursor,
        _ReadAhead(cursor) as chunks,
        conn.cursor(name="sealtrail_verify_pairs") as pairs,
        conn.cursor(name="sealtrail_verify_tombstones") as tombs,
    ):
        # One snapshot for the head, the checkpoints and every row: what is
        # appended (or purged) meanwhile is neither read nor a mismatch.
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # Before the snapshot (LOCK takes none): a month retention retires moves
        # its kept records and drops the month under an exclusive lock, which
        # this waits for or holds off; else a snapshot from before the move,
        # reading after it, would find neither the month nor the moved rows.
        await conn.execute("LOCK TABLE ONLY events IN ACCESS SHARE MODE")
        ledger = RemovalLedger(origin, verifiers, upgrade="the server")
        return await _verify(
            conn,
            cursor,
            chunks,
            pairs,
            tombs,
            tenant_id,
            verifiers,
            seal,
            ledger,
            view_matches,
            remembered,
        )


async def _verify(
    conn: Connection,
    cursor: AsyncServerCursor[Any],
    chunks: _ReadAhead,
    pairs: AsyncServerCursor[Any],
    tombs: AsyncServerCursor[Any],
    tenant_id: str,
    verifiers: list[Verifier],
    seal: SummarySeal,
    ledger: RemovalLedger,
    view_matches: ViewCheck | None,
    remembered: tuple[int, bytes] | None,
) -> Verification:
    size = checked = views = 0
    last_removed = 0
    view_mismatch: Failure | None = None  # the first, once the whole log is walked

    def fail(seq: int, reason: str, message: str) -> Verification:
        return Verification(size, checked, Failure(seq, reason, message), views)

    checkpoints = await all_checkpoints(conn, tenant_id)
    head_row = await conn.execute(
        "SELECT tree_size, root_hash FROM chain_heads WHERE tenant_id = %s", [tenant_id]
    )
    head = await head_row.fetchone()
    head_size, head_root = (int(head[0]), bytes(head[1])) if head else (0, frontier_root([]))

    # Roots to check, by size: each checkpoint's root as signed, then the head's.
    signed: dict[int, bytes] = {}
    for checkpoint in checkpoints:
        try:
            text, _ = open_note(checkpoint.note, verifiers)
            parsed = parse_checkpoint(text)
        except NoteError as error:
            return fail(checkpoint.tree_size, "CHECKPOINT_INVALID", str(error))
        if (parsed.tree_size, parsed.root_hash) != (checkpoint.tree_size, checkpoint.root_hash):
            return fail(
                checkpoint.tree_size,
                "CHECKPOINT_INVALID",
                "the row differs from its signed note",
            )
        signed[parsed.tree_size] = parsed.root_hash
    # Rows the signer moved out of `checkpoints` as forged (ADR 0159): evidence
    # the log's checkpoints were tampered with, never hidden by the move.
    if (refused := await first_refused_checkpoint(conn, tenant_id)) is not None:
        return fail(
            refused.tree_size,
            "CHECKPOINT_INVALID",
            f"the signer set the checkpoint row at this size aside (checkpoints_refused):"
            f" {refused.why}",
        )
    if remembered is not None:
        known_size, known_root = remembered
        if signed.setdefault(known_size, known_root) != known_root:
            return fail(
                known_size,
                "CHECKPOINT_INVALID",
                "the checkpoint at this size is not the one the server signed",
            )
    last_signed = max(signed, default=0)

    frontier: list[bytes] = []
    sha256 = hashlib.sha256
    stored_pairs: deque[tuple[int, bytes]] = deque()
    stored_upper: dict[tuple[int, int], bytes] = {}  # (level, idx): node, of levels 2 and up
    upper_read_to = 0  # the nodes completed at sizes up to this are in stored_upper
    tombstones: deque[tuple[int, bytes]] = deque()

    def removed_leaf(seq: int, leaf: bytes) -> Verification | None:
        nonlocal last_removed
        last_removed = seq
        ledger.removed(seq, leaf)
        return advance(seq, leaf)

    def advance(seq: int, leaf: bytes) -> Verification | None:
        """Append the leaf of `seq` (the next one); a failure if its pair or a
        signed root does not match."""
        nonlocal size, checked
        for level, index, node in append_leaf(frontier, size, leaf):
            if level == 1:
                if not stored_pairs or stored_pairs.popleft() != (index, node):
                    first = 2 * index + 1
                    return fail(
                        first,
                        "PAIR_MISMATCH",
                        f"seqs {first} and {first + 1} hash differently from when they"
                        " were appended: one of them was rewritten",
                    )
            elif _stored_wrong(stored_upper, upper_read_to, level, index, node):
                # Proofs are served from these (ADR 0009): one changed or gone
                # leads them away from the signed root while every record checks.
                first, last = (index << level) + 1, (index + 1) << level
                return fail(
                    first,
                    "NODE_MISMATCH",
                    f"the stored hash of seqs {first} to {last} is not theirs: proofs"
                    " through it do not lead to the signed root",
                )
        size = seq
        root = signed.get(size)
        if root is not None:
            if frontier_root(frontier) != root:
                return fail(
                    size,
                    "ROOT_MISMATCH",
                    f"the root at size {size} differs from the signed checkpoint",
                )
            checked += 1
        return None

    await cursor.execute(_WITH_VIEWS if view_matches is not None else _WITHOUT_VIEWS, [tenant_id])
    # Level-1 nodes, stored when their pair of events was appended: a pair
    # whose records and leaves were rewritten together still shows here.
    await pairs.execute(
        "SELECT idx, hash FROM tree_nodes WHERE tenant_id = %s AND level = 1 ORDER BY idx",
        [tenant_id],
    )
    # Leaves of events removed by retention: they stand in for their events.
    await tombs.execute(
        "SELECT idx + 1, hash FROM tree_nodes WHERE tenant_id = %s AND level = 0 ORDER BY idx",
        [tenant_id],
    )
    pairs_done = tombs_done = False
    # The first tombstone of a seq never asked for: one whose event the log
    # keeps. Retention deletes an event and stores its leaf in one statement;
    # one written beside a kept event is listed by ListPurgedLeaves as removed
    # and fails every purge of the tenant, and was walked past (helper-298).
    stray: int | None = None

    async def tombstone(seq: int) -> bytes | None:
        """The tombstone of `seq`, if it has one (asked in seq order)."""
        nonlocal tombs_done, stray
        while not tombs_done and (not tombstones or tombstones[-1][0] < seq):
            more = await tombs.fetchmany(_FETCH_ROWS)
            tombs_done = not more
            tombstones.extend((index, bytes(leaf)) for index, leaf in more)
        while tombstones and tombstones[0][0] < seq:
            if stray is None:
                stray = tombstones[0][0]
            tombstones.popleft()
        if tombstones and tombstones[0][0] == seq:
            return tombstones.popleft()[1]
        return None

    async def tombstone_beyond(end: int) -> int | None:
        """The seq of the first tombstone left past `end`, if any (once the
        events are walked: none is left in a log not tampered with)."""
        nonlocal tombs_done
        while True:
            beyond = next((seq for seq, _ in tombstones if seq > end), None)
            if beyond is not None or tombs_done:
                return beyond
            tombstones.clear()
            more = await tombs.fetchmany(_FETCH_ROWS)
            tombs_done = not more
            tombstones.extend((index, bytes(leaf)) for index, leaf in more)

    def stray_failure() -> Verification | None:
        if stray is None:
            return None
        return fail(
            stray,
            "REMOVALS_UNACCOUNTED",
            f"seq {stray} holds its event, and beside it a leaf stored as retention's of it"
            " removed: ListPurgedLeaves lists the event as removed, and no purge can remove it",
        )

    while True:
        rows = await chunks.next_chunk()
        # Enough stored pairs for every pair this chunk completes (all of
        # them once the events end: tombstones may follow).
        needed = rows[-1][0] // 2 - 1 if rows else head_size
        while not pairs_done and (not stored_pairs or stored_pairs[-1][0] < needed):
            more = await pairs.fetchmany(_FETCH_ROWS)
            pairs_done = not more
            stored_pairs.extend((index, bytes(node)) for index, node in more)
        # And the nodes above them this chunk completes (about one for every two events).
        reach = rows[-1][0] if rows else head_size
        if reach > upper_read_to:
            await _read_upper_nodes(conn, tenant_id, upper_read_to, reach, into=stored_upper)
            upper_read_to = reach
        if rows:
            chunks.read_ahead()
        else:
            # Events removed by retention after the last one kept.
            while (leaf := await tombstone(size + 1)) is not None:
                if failure := removed_leaf(size + 1, leaf):
                    return failure
            if failure := stray_failure():
                return failure
            # Nor any beyond the head: the event appended at its seq would
            # stand beside it. (One after a gap within it: the head's check.)
            if (beyond := await tombstone_beyond(head_size)) is not None:
                return fail(
                    beyond,
                    "REMOVALS_UNACCOUNTED",
                    f"seq {beyond} has a leaf stored as retention's of it removed, beyond the"
                    f" log's {counted(head_size, 'event')}: no event was appended there to"
                    " remove",
                )
            break
        for seq, record, stored_leaf, event_id, received_at, view, whole_view in rows:
            while seq != size + 1:
                leaf = await tombstone(size + 1)
                if failure := stray_failure():
                    return failure
                if leaf is None:
                    expected = size + 1
                    return fail(expected, "RECORD_MISSING", f"seq {expected} is missing")
                if failure := removed_leaf(size + 1, leaf):
                    return failure
            leaf = sha256(b"\x00" + record).digest()
            if leaf != stored_leaf:
                return fail(
                    seq,
                    "LEAF_MISMATCH",
                    "the leaf hash is not that of the record",
                )
            if not record_names_seq(record, seq):
                return fail(seq, "RECORD_MISPLACED", "the record names another seq")
            if failure := advance(seq, leaf):
                return failure
            ledger.note_record(record)
            if (view is not None or whole_view is not None) and view_matches is not None:
                # Noted and walked past: a record or root changed further on is
                # the graver finding, and is reported instead.
                shown = ShownEvent(seq, whole_view, event_id, received_at, stored_leaf, view, None)
                if view_matches(shown, record):
                    views += 1
                elif view_mismatch is None:
                    view_mismatch = Failure(
                        seq,
                        "VIEW_MISMATCH",
                        "what Query shows of this event differs from its record",
                    )
            if seq % _ROWS_PER_TURN == 0:
                await asyncio.sleep(0)
    if size < last_signed:
        return fail(
            size + 1,
            "RECORD_MISSING",
            f"the log ends at {size} but a checkpoint was signed at {last_signed}",
        )
    if (size, frontier_root(frontier)) != (head_size, head_root):
        return fail(size, "HEAD_MISMATCH", "the stored head differs from the log")
    if ledger.unaccounted() is not None:
        # Only the service's own summaries count (domain/purge_summaries.py),
        # of another shape (another release's) none, and none of a purge the
        # log records already: each version of a summary a pass wrote is
        # sealed, and one copied back after its record (from a backup, or read
        # during the pass) would make room for an event hidden as removed
        # (helper-87).
        not_yet_recorded = [
            removed
            for pending in await pending_purges(conn, tenant_id)
            if pending.sealed_by(seal)
            and pending.purge_id not in ledger.purge_ids
            and (removed := _summarised(pending.summary)) is not None
        ]
        if why := ledger.unaccounted(not_yet_recorded):
            return fail(last_removed, "REMOVALS_UNACCOUNTED", why)
    return Verification(size, checked, view_mismatch, views)


def _summarised(summary: dict[str, Any]) -> RemovedLeaves | None:
    """The leaves a pending summary says its purge removed (None: not a
    summary this release writes)."""
    try:
        return RemovedLeaves.from_hex(summary["purged"], summary["removed"])
    except (KeyError, TypeError, ValueError):
        return None


def _stored_wrong(
    stored: dict[tuple[int, int], bytes], read_to: int, level: int, index: int, node: bytes
) -> bool:
    """Whether the stored node (`level`, `index`), read with those completed up
    to `read_to`, is not `node` (one past that, beyond the head: the head's
    own check speaks)."""
    return (index + 1) << level <= read_to and stored.pop((level, index), None) != node


async def _read_upper_nodes(
    conn: Connection,
    tenant_id: str,
    after: int,
    through: int,
    *,
    into: dict[tuple[int, int], bytes],
) -> None:
    """Into `into`, the stored nodes of levels 2 and up completed at sizes in
    (after, through]: node (level, idx) is completed at size (idx + 1) << level,
    so each level's are an index range, read through the key. The ranges are
    computed here: under row-level security, a bound the query computed (with
    `>>`, which is not leakproof) was checked row by row after the policy, not
    in the index, reading all of each level's nodes (26 ms a chunk, not 2)."""
    levels = range(2, max(through.bit_length(), 2))
    cursor = await conn.execute(
        "SELECT n.level, n.idx, n.hash FROM unnest(%s::int2[], %s::int8[], %s::int8[])"
        " AS r(level, low, high), LATERAL (SELECT level, idx, hash FROM tree_nodes"
        " WHERE tenant_id = %s AND level = r.level AND idx >= r.low AND idx < r.high) AS n",
        [
            list(levels),
            [after >> level for level in levels],
            [through >> level for level in levels],
            tenant_id,
        ],
    )
    for level, index, node in await cursor.fetchall():
        into[(int(level), int(index))] = bytes(node)


_WITHOUT_VIEWS = (
    "SELECT seq, convert_to(record, 'UTF8'), leaf_hash, NULL, NULL, NULL::bytea, NULL::bytea"
    " FROM events WHERE tenant_id = %s ORDER BY seq"
)
# With what Query shows each event from (events.py, `_SHOWN_COLUMNS`).
_WITH_VIEWS = (
    "SELECT seq, convert_to(record, 'UTF8'), leaf_hash, id::text, received_at, caller_view,"
    " event_view FROM events WHERE tenant_id = %s ORDER BY seq"
)
