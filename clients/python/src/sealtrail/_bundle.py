"""Verifiable bundles: events exactly as hashed, with what proves them in the
log, checkable offline by anyone (docs/integrity.md, "Bundles and `sealtrail verify`").

    bundle.json         what the bundle holds: origin, tree size, seq range, and
                        "complete" when it claims every record of seqs 1..tree size;
                        (version 3) "range" when it claims every event of seqs
                        first..last, and "received" the period that range was
                        found for, by receipt time
    records.ndjson      the records, one per line, exactly as hashed
    proofs.ndjson       line i is {"seq": s, "proof": [base64, ...]}: the RFC 9162
                        inclusion proof of record i in the checkpoint's tree
    purged.ndjson       (version 2) events removed by retention, one per line:
                        {"seq": s, "leaf_hash": base64, "proof": [base64, ...]}
    edges.ndjson        (version 3, a range found by receipt time) the events just
                        before and after the range, each with its proof:
                        {"seq": s, "record": text | null, "leaf_hash": base64,
                        "proof": [...]}; their times show the range is the period's
    checkpoint.txt      the C2SP signed checkpoint at the tree size
    verifier-keys.txt   the server's verifier keys, one per line, active first

Every record is checked against the signed root through its own proof, so a
changed record is named exactly; a complete bundle is also checked for gaps
and its root recomputed over all records and purged leaves. A range bundle
(ADR 0068) is checked for gaps within its range, and the signed root rebuilt
from the range's leaves and the hashes around it that its first and last
leaves' proofs hold. A bundle is written as version 1 when the log has no
purged event in it, so older verifiers still read it; a range bundle as
version 3, which verifiers before it refuse rather than take for a partial one.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import json
import os
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import grpc

from sealtrail._errors import NotFoundError, SealtrailError
from sealtrail.tlog import (
    LeafTree,
    NoteError,
    ProofError,
    RangeRoot,
    RangeTree,
    RemovalLedger,
    RemovedLeaves,
    TreeBuilder,
    Verifier,
    leaf_hash,
    open_note,
    parse_checkpoint,
    verify_inclusion,
)
from sealtrail.v1 import audit_service_pb2, event_pb2, integrity_pb2

_T = TypeVar("_T")
_R = TypeVar("_R")

FORMAT = "sealtrail-bundle"
VERSION = 2
RANGE_VERSION = 3  # a bundle of a seq range, complete within it
VERSIONS = (1, 2, 3)  # what verify_bundle reads
MANIFEST = "bundle.json"
RECORDS = "records.ndjson"
PROOFS = "proofs.ndjson"
PURGED = "purged.ndjson"
EDGES = "edges.ndjson"
CHECKPOINT = "checkpoint.txt"
KEYS = "verifier-keys.txt"


class BundleError(Exception):
    """A bundle failed verification; the message names the record and the reason."""


class _Source(Protocol):
    """What writing a bundle needs of a client (AuditClient has it)."""

    def query(
        self, filter: event_pb2.EventFilter | None = ..., *, order: Any = ..., page_size: int = ...
    ) -> Iterator[event_pb2.Event]: ...

    def get_checkpoint(
        self, *, tree_size: int = ..., fresh: bool = ...
    ) -> integrity_pb2.SignedCheckpoint: ...

    def get_inclusion_proof(
        self,
        *,
        event_id: str = ...,
        seq: int = ...,
        tree_size: int = ...,
        include_purged: bool = ...,
    ) -> integrity_pb2.GetInclusionProofResponse: ...

    def get_verifier_keys(self) -> list[integrity_pb2.VerifierKey]: ...

    def list_purged_leaves(
        self, *, tree_size: int = ..., after_seq: int = ...
    ) -> Iterator[integrity_pb2.PurgedLeaf]: ...

    def export(
        self,
        path: str | os.PathLike[str],
        *,
        format: Any = ...,
        first_seq: int = ...,
        last_seq: int = ...,
    ) -> audit_service_pb2.ExportManifest: ...

    def get_received_range(
        self, *, since: datetime, until: datetime | None = ...
    ) -> audit_service_pb2.GetReceivedRangeResponse: ...


@dataclass(frozen=True)
class SeqRange:
    """Seqs `first` to `last` of the log, both included: what a range bundle
    holds whole. `received_since` and `received_until` say the period it was
    found for by receipt time (`received_range`), written in the bundle so
    that its verification says how the range was chosen."""

    first: int
    last: int
    received_since: datetime | None = None
    received_until: datetime | None = None

    def __post_init__(self) -> None:
        if self.first < 1:
            raise ValueError(f"the first seq must be 1 or more, not {self.first}")
        if self.first > self.last:
            raise ValueError(f"the first seq {self.first} is after the last {self.last}")


def received_range(source: _Source, *, since: datetime, until: datetime | None = None) -> SeqRange:
    """The seqs of the events received from `since` to `until` (None: up to
    the server's time now), by GetReceivedRange: a range of seqs chosen by
    receipt time, which a range bundle then proves complete. BundleError if
    no event was received in the period: there is nothing to prove."""
    found = source.get_received_range(since=since, until=until)
    start, end = found.since.ToDatetime(tzinfo=UTC), found.until.ToDatetime(tzinfo=UTC)
    if found.first_seq > found.last_seq:
        raise BundleError(
            f"no event was received from {_moment(start)} to {_moment(end)}"
            f" (the log holds {found.tree_size} events)"
        )
    return SeqRange(found.first_seq, found.last_seq, start, end)


def _moment(when: datetime) -> str:
    """A time as bundle.json and the command line show it: RFC 3339, UTC."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class BundleSummary:
    origin: str
    tree_size: int
    count: int  # records
    first_seq: int
    last_seq: int
    complete: bool
    signed_by: list[str]
    trusted_own_keys: bool
    purged: int = 0  # leaves of events removed by retention, each proven too
    # Seqs the filter matched that the log could not prove (a partial bundle):
    # the records are not in it, and verification fails naming them.
    unproven: tuple[int, ...] = ()
    # Of a complete or range bundle, the seqs the log could not prove: the
    # records are not in it, and verification fails naming the first missing.
    gaps: tuple[int, ...] = ()
    # Of a complete bundle, why its records' retention statements do not
    # account for the leaves of removed events it holds (the log's doing:
    # it was written twice, no purge between), as verification fails with it.
    unaccounted: str | None = None
    # The log refused to sign a checkpoint over its current state (it no longer
    # extends its last): the bundle is written against that last one, and
    # verification fails saying so, once its records are checked.
    log_refused_to_sign: bool = False
    # A range bundle's (first, last) seqs: every event of them is in it, as a
    # record or, removed by retention, as its leaf.
    seq_range: tuple[int, int] | None = None
    # The period by receipt time its range was found for, if it was.
    received_since: datetime | None = None
    received_until: datetime | None = None
    # Of a period's range, the ends not proven to be the period's ("start",
    # "end"): the event just outside it shown as removed by retention (its
    # time went with it), or, at the end, none after the range in the log at
    # the checkpoint's size. `sealtrail verify` then exits 4, not 0.
    unchecked_edges: tuple[str, ...] = ()

    @property
    def log_fault(self) -> str | None:
        """What the log could not do when the bundle was written, which says
        it had been changed (the bundle fails verification with it), or None."""
        return _log_fault(
            self.unproven,
            refused=self.log_refused_to_sign,
            gaps=self.gaps,
            unaccounted=self.unaccounted,
        )


def write_bundle(
    source: _Source,
    out: Path,
    *,
    event_filter: event_pb2.EventFilter | None = None,
    seq_range: SeqRange | None = None,
    workers: int = 16,
) -> BundleSummary:
    """Write the events matching `event_filter` as a bundle into the new or
    empty directory `out`. Without a filter the bundle is the whole log up to
    a fresh checkpoint ("complete"); a record the log cannot produce or prove
    is left out, and verification then names the seq that is missing. A
    filtered bundle lists the matched seqs the log could not prove (and notes
    a log that refused to sign a fresh checkpoint): the summary's `log_fault`
    says so, and verification fails with it after checking every record. A
    complete or range bundle's `log_fault` names the seqs it left out (`gaps`)
    and a complete one's removals retention does not account for: the bundle
    is written, and fails verification, as `sealtrail bundle` says at once.

    A complete bundle is read in one Export (its own checkpoint, the export's
    record included) and ListPurgedLeaves (the leaves retention left), and its
    proofs computed here from all its leaves, when those lead to the signed
    root. Otherwise, and for a filtered
    bundle, each record is fetched with its proof by GetInclusionProof,
    `workers` at a time: the way for a reader token (Export needs an
    exporter's), an export refused by the rate limit, or a log that does not
    match its checkpoint (which then shows which records it cannot prove).
    A complete bundle overtaken by a retention pass is written again (see
    `_complete`); overtaken each time, BundleError says to retry.

    With `seq_range` (and no filter) the bundle is every event of that range
    of seqs, proven complete within it (ADR 0068): read by one Export of the
    range, its proofs computed here from its leaves and its two ends' proofs;
    or, as above, one GetInclusionProof a seq. A range that ends beyond the
    log is a BundleError, and nothing is written.

    A bundle that fails midway (the server gone for good, say) leaves nothing:
    what it wrote is removed, and `out` too if this call created it."""
    if seq_range is not None and event_filter is not None and event_filter.ByteSize():
        raise BundleError("a bundle of a seq range holds all its events: it takes no filter")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise BundleError(f"{out} is not empty")
    try:
        return _write(source, out, event_filter, seq_range, workers)
    except BaseException:
        for name in (RECORDS, PROOFS, PURGED, EDGES, CHECKPOINT, KEYS, MANIFEST):
            (out / name).unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):  # not emptied: someone else wrote in it
                out.rmdir()
        raise


def _write(
    source: _Source,
    out: Path,
    event_filter: event_pb2.EventFilter | None,
    seq_range: SeqRange | None,
    workers: int,
) -> BundleSummary:
    """`write_bundle` into `out`, which is empty."""
    complete = seq_range is None and (event_filter is None or event_filter.ByteSize() == 0)
    unproven_ends: tuple[str, ...] = ()
    if seq_range is not None:
        written = _range(source, out, seq_range, workers)
        if seq_range.received_since is not None:
            size = written.checkpoint.tree_size
            unproven_ends = _write_edges(source, out, seq_range, size)
    elif complete:
        written = _complete(source, out, workers)
    else:
        written = _proven_one_by_one(source, out, event_filter, complete, workers)
    if not written.purged:
        (out / PURGED).unlink()
    (out / CHECKPOINT).write_text(written.checkpoint.note, encoding="utf-8", newline="\n")
    (out / KEYS).write_text(
        "".join(key.text + "\n" for key in source.get_verifier_keys()),
        encoding="utf-8",
        newline="\n",
    )
    seqs, purged = written.seqs, written.purged
    summary = BundleSummary(
        origin=written.checkpoint.origin,
        tree_size=written.checkpoint.tree_size,
        count=len(seqs),
        first_seq=seqs[0] if seqs else 0,
        last_seq=seqs[-1] if seqs else 0,
        complete=complete,
        signed_by=[],
        trusted_own_keys=False,
        purged=purged,
        unproven=tuple(written.unproven),
        gaps=tuple(written.gaps),
        unaccounted=written.unaccounted,
        log_refused_to_sign=written.refused,
        seq_range=None if seq_range is None else (seq_range.first, seq_range.last),
        received_since=None if seq_range is None else seq_range.received_since,
        received_until=None if seq_range is None else seq_range.received_until,
        unchecked_edges=unproven_ends,
    )
    manifest = {
        "format": FORMAT,
        "version": RANGE_VERSION if seq_range else VERSION if purged else 1,
        "origin": summary.origin,
        "tree_size": summary.tree_size,
        "count": summary.count,
        "first_seq": summary.first_seq,
        "last_seq": summary.last_seq,
        "complete": summary.complete,
        **({"purged": purged} if purged else {}),
        **_range_fields(seq_range),
        **({"unproven": list(summary.unproven)} if summary.unproven else {}),
        **({"log_refused_to_sign": True} if written.refused else {}),
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (out / MANIFEST).write_text(
        json.dumps(manifest, indent=2) + "\n", encoding="utf-8", newline="\n"
    )
    return summary


def _range_fields(seq_range: SeqRange | None) -> dict[str, Any]:
    """What bundle.json says of a range bundle's range, and how it was chosen."""
    if seq_range is None:
        return {}
    fields: dict[str, Any] = {"range": {"first_seq": seq_range.first, "last_seq": seq_range.last}}
    if seq_range.received_since is not None and seq_range.received_until is not None:
        fields["received"] = {
            "since": _moment(seq_range.received_since),
            "until": _moment(seq_range.received_until),
        }
    return fields


@dataclass(frozen=True)
class _Written:
    checkpoint: integrity_pb2.SignedCheckpoint  # what the bundle is written against
    seqs: Sequence[int]  # of the records written, in order
    purged: int  # leaves written to PURGED
    unproven: Sequence[int] = ()  # matched by the filter, not provable
    refused: bool = False  # the log would not sign a fresh checkpoint
    gaps: Sequence[int] = ()  # of a complete or range bundle's seqs, not provable
    unaccounted: str | None = None  # a complete bundle's removals, not retention's


# Writes of a complete bundle, each overtaken by a retention pass, before it
# gives up: a pass records itself once done, so one overtaken is written again.
_TRIES = 3


def _complete(source: _Source, out: Path, workers: int) -> _Written:
    """A complete bundle's records and leaves in `out`, whose removals the
    records' own retention statements account for. A retention pass that
    removes events while the bundle is written records itself after the
    bundle's checkpoint: the bundle would hold their leaves without the
    statement, and fail verification as events hidden (helper-154). So it is
    written again, against a checkpoint that holds the statement. Removals
    unaccounted for with none made since the last write are the log's doing:
    the bundle is kept, and the summary and verification name them."""
    last: RemovedLeaves | None = None
    for _ in range(_TRIES):
        written = _from_one_export(source, out)
        if written is None:
            written = _proven_one_by_one(source, out, None, True, workers)
        removed, unaccounted = _removals(source, out, written.checkpoint.origin)
        if unaccounted is None or removed == last:
            return replace(written, unaccounted=unaccounted)
        last = removed
        _discard(out)
    raise BundleError(
        f"a retention pass is removing events of the log while the bundle is written"
        f" ({_TRIES} tries, each overtaken): retry once it has ended"
    )


def _removals(source: _Source, out: Path, origin: str) -> tuple[RemovedLeaves, str | None]:
    """The leaves written to `out` of removed events, and why its records'
    retention statements do not account for them (None if they do), as
    `verify_bundle` checks them with the log's keys."""
    try:
        verifiers = [Verifier.parse(key.text) for key in source.get_verifier_keys()]
    except NoteError as error:
        raise BundleError(f"verifier key: {error}") from None
    ledger = RemovalLedger(origin, verifiers)
    with open(out / RECORDS, "rb") as records:
        for line in records:
            ledger.note_record(line.removesuffix(b"\n"))
    with open(out / PURGED, encoding="utf-8") as tombstones:
        for tombstone in tombstones:
            entry = json.loads(tombstone)
            ledger.removed(entry["seq"], base64.b64decode(entry["leaf_hash"]))
    return ledger.leaves, ledger.unaccounted()


# Export refusals after which the bundle is still written, one proof per record
# (not a server overloaded, OVERLOADED: a proof a record would load it more).
_PROVE_INSTEAD = frozenset(
    {
        (grpc.StatusCode.PERMISSION_DENIED, None),  # a reader's token
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "EXPORT_RATE_LIMITED"),  # the tenant's rate
        (grpc.StatusCode.DATA_LOSS, None),  # the log no longer matches its last checkpoint
    }
)
_SEQ_KEY = b'"seq":'
_NO_LEAF = bytes(32)  # a slot not filled yet


def _seq_of(record: bytes) -> int | None:
    """A canonical record's top-level seq: keys are sorted, so its `"seq":` is
    the last (a record that fools this fails the root check instead)."""
    at = record.rfind(_SEQ_KEY)
    if at < 0:
        return None
    try:
        return int(record[at + len(_SEQ_KEY) : record.find(b",", at)])
    except ValueError:
        return None


def _from_one_export(source: _Source, out: Path) -> _Written | None:
    """A complete bundle from one NDJSON Export and the leaves of the events
    retention removed; None, with `out` left empty, when the export is
    refused or its leaves do not lead to its signed root."""
    try:
        exported = source.export(out / RECORDS, format="ndjson")
    except SealtrailError as error:
        if {(error.code, None), (error.code, error.reason)} & _PROVE_INSTEAD:
            return None
        raise
    try:
        written = _prove_exported(source, out, exported.checkpoint)
    except BaseException:
        _discard(out)
        raise
    if written is None:
        _discard(out)
    return written


def _discard(out: Path) -> None:
    for name in (RECORDS, PROOFS, PURGED):
        (out / name).unlink(missing_ok=True)


def _prove_exported(source: _Source, out: Path, note: str) -> _Written | None:
    """Proofs for the exported records (and the removed events' leaves)
    against the export's checkpoint `note`; None if they do not lead to it."""
    signed = _signed(note)
    if signed is None:
        return None
    size = signed.tree_size
    leaves = bytearray(32 * size)
    seqs = array("q")
    with open(out / RECORDS, "rb") as lines:
        for line in lines:
            record = line.removesuffix(b"\n")
            seq = _seq_of(record)
            if seq is None or not (seqs[-1] if seqs else 0) < seq <= size:
                return None
            leaves[32 * (seq - 1) : 32 * seq] = leaf_hash(record)
            seqs.append(seq)
    removed = array("q")
    try:
        for purged in source.list_purged_leaves(tree_size=size):
            seq = purged.seq
            if not (removed[-1] if removed else 0) < seq <= size or len(purged.leaf_hash) != 32:
                return None
            if leaves[32 * (seq - 1) : 32 * seq] != _NO_LEAF:
                return None  # exported and removed both
            leaves[32 * (seq - 1) : 32 * seq] = purged.leaf_hash
            removed.append(seq)
    except SealtrailError as error:
        if error.code is grpc.StatusCode.DATA_LOSS:
            return None  # the log is shorter than its checkpoint: proving each shows it
        if error.code is grpc.StatusCode.UNIMPLEMENTED:
            return None  # a server older than ListPurgedLeaves
        raise
    if len(seqs) + len(removed) != size:
        return None  # a seq neither exported nor removed: the server will say which
    tree = LeafTree(leaves)  # which takes the buffer over: 64 bytes a leaf in all
    del leaves
    if tree.root() != signed.root_hash:
        return None
    _write_proofs(out, tree, seqs, removed)
    return _Written(signed, seqs, len(removed))


def _range(source: _Source, out: Path, seq_range: SeqRange, workers: int) -> _Written:
    """A range bundle's records and leaves in `out`: from one Export of the
    range, or, when that is refused or does not lead to its signed root, one
    GetInclusionProof a seq. Its removals are not checked against retention's
    statements, as a complete bundle's are: those are of whole purges, most
    of whose leaves lie outside the range (docs/integrity.md)."""
    first, last = seq_range.first, seq_range.last
    try:
        exported = source.export(out / RECORDS, format="ndjson", first_seq=first, last_seq=last)
    except SealtrailError as error:
        if error.reason == "BEYOND_LOG_SIZE":
            raise BundleError(f"seqs {first}..{last}: {error.message}") from None
        if not {(error.code, None), (error.code, error.reason)} & _PROVE_INSTEAD:
            raise
    else:
        try:
            written = _prove_exported_range(source, out, exported.checkpoint, first, last)
        except BaseException:
            _discard(out)
            raise
        if written is not None:
            return written
        _discard(out)
    return _proven_one_by_one(source, out, None, False, workers, every=range(first, last + 1))


def _write_edges(source: _Source, out: Path, seq_range: SeqRange, size: int) -> tuple[str, ...]:
    """The events just before and after a range found by receipt time, with
    their proofs at the bundle's size: the one before was received before the
    period, the one after at or after its end, which the verifier reads from
    their records. An edge the log does not have (the range starts at seq 1,
    or no event followed it yet) is left out, and so is one it cannot prove
    (verification then fails, naming it). Returns the ends the bundle does
    not prove: an edge removed by retention, or none after the range. A
    range read by an Export always has one: the export's own record,
    received after the period ended (docs/integrity.md)."""
    unproven: list[str] = []
    with open(out / EDGES, "w", encoding="utf-8", newline="\n") as edges:
        for seq, end in ((seq_range.first - 1, "start"), (seq_range.last + 1, "end")):
            if seq > size:
                unproven.append(end)
            if not 1 <= seq <= size:
                continue
            try:
                found = source.get_inclusion_proof(seq=seq, tree_size=size, include_purged=True)
            except NotFoundError:
                continue
            except SealtrailError as error:
                if error.code is grpc.StatusCode.DATA_LOSS:
                    continue
                raise
            if found.purged:
                unproven.append(end)
            entry = {
                "seq": found.seq,
                "record": None if found.purged else found.record.decode(),
                "leaf_hash": base64.b64encode(found.leaf_hash).decode(),
                "proof": [base64.b64encode(h).decode() for h in found.proof],
            }
            edges.write(json.dumps(entry) + "\n")
    return tuple(unproven)


def _prove_exported_range(
    source: _Source, out: Path, note: str, first: int, last: int
) -> _Written | None:
    """Proofs for the exported records of seqs `first`..`last` (and the leaves
    of those retention removed) against the export's checkpoint `note`,
    computed from the range's leaves and the proofs of its two ends; None if
    they do not lead to it."""
    signed = _signed(note)
    if signed is None or signed.tree_size < last:
        return None
    size = signed.tree_size
    leaves = bytearray(32 * (last - first + 1))
    seqs = array("q")
    with open(out / RECORDS, "rb") as lines:
        for line in lines:
            record = line.removesuffix(b"\n")
            seq = _seq_of(record)
            if seq is None or not max(seqs[-1] if seqs else 0, first - 1) < seq <= last:
                return None
            leaves[32 * (seq - first) : 32 * (seq - first + 1)] = leaf_hash(record)
            seqs.append(seq)
    removed = array("q")
    try:
        for purged in source.list_purged_leaves(tree_size=size, after_seq=first - 1):
            seq = purged.seq
            if seq > last:
                break
            if seq < first:
                continue  # a server before after_seq lists from the first
            at = 32 * (seq - first)
            if (removed and seq <= removed[-1]) or len(purged.leaf_hash) != 32:
                return None
            if leaves[at : at + 32] != _NO_LEAF:
                return None  # exported and removed both
            leaves[at : at + 32] = purged.leaf_hash
            removed.append(seq)
        ends = [
            source.get_inclusion_proof(seq=seq, tree_size=size, include_purged=True).proof
            for seq in (first, last)
        ]
    except SealtrailError as error:
        if error.code in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNIMPLEMENTED):
            return None  # the log cannot prove it: proving each shows where
        if isinstance(error, NotFoundError):
            return None
        raise
    if len(seqs) + len(removed) != last - first + 1:
        return None  # a seq neither exported nor removed: the server will say which
    try:
        tree = RangeTree(
            leaves, first=first - 1, tree_size=size, first_proof=ends[0], last_proof=ends[1]
        )
    except ProofError:
        return None
    if tree.root() != signed.root_hash:
        return None
    _write_proofs(out, tree, seqs, removed)
    return _Written(signed, seqs, len(removed))


def _signed(note: str) -> integrity_pb2.SignedCheckpoint | None:
    """What a checkpoint's note says (its signature is the verifier's business)."""
    try:
        checkpoint = parse_checkpoint(note.split("\n\n", 1)[0] + "\n")
    except (NoteError, ValueError):
        return None
    return integrity_pb2.SignedCheckpoint(
        origin=checkpoint.origin,
        tree_size=checkpoint.tree_size,
        root_hash=checkpoint.root_hash,
        note=note,
    )


class _Removed:
    """An event retention removed after the bundle's query matched it."""


REMOVED_SINCE: Final = _Removed()


def _proven_one_by_one(
    source: _Source,
    out: Path,
    event_filter: event_pb2.EventFilter | None,
    complete: bool,
    workers: int,
    *,
    every: range | None = None,
) -> _Written:
    """Each record of the bundle with its proof, from GetInclusionProof,
    against a fresh checkpoint; or, when the log refuses to sign one because
    it no longer extends its last (DATA_LOSS), against the last it signed, so
    that the bundle still shows what changed since. `every`: a range bundle's seqs,
    every one proven as a complete bundle's are (a removed event's leaf, and
    a seq the log cannot prove left for verification to name)."""
    refused = False
    try:
        checkpoint = source.get_checkpoint(fresh=True)
    except SealtrailError as error:
        if error.code is not grpc.StatusCode.DATA_LOSS:
            raise
        checkpoint, refused = source.get_checkpoint(), True
    size = checkpoint.tree_size
    unproven: list[int] = []
    gaps: list[int] = []  # a complete or range bundle's: verification names them too
    whole = complete or every is not None  # every seq proven, removed ones too
    seqs: Sequence[int]
    if every is not None:
        if every.stop - 1 > size:
            raise BundleError(
                f"seqs {every.start}..{every.stop - 1}: last_seq {every.stop - 1} is beyond"
                f" the log's size {size}"
            )
        seqs = every
    elif complete:
        seqs = range(1, size + 1)
    else:
        matched: list[int] = []
        seqs = matched
        for event in source.query(event_filter, order="oldest", page_size=1000):
            if event.seq <= size:
                matched.append(event.seq)
            elif refused:
                # Recorded since the last checkpoint the log would sign: it
                # cannot be proven in any the log will sign now.
                unproven.append(event.seq)
            # (else recorded after the fresh checkpoint, while this was written)

    def prove(seq: int) -> integrity_pb2.GetInclusionProofResponse | _Removed | None:
        try:
            return source.get_inclusion_proof(seq=seq, tree_size=size, include_purged=whole)
        except NotFoundError as error:
            if error.reason == "PURGED":  # (a partial bundle's) removed since it matched
                return REMOVED_SINCE
            return None  # gone from the log: verification will name it
        except SealtrailError as error:
            if error.code is grpc.StatusCode.DATA_LOSS:
                return None  # the log cannot prove it: the same
            raise

    written: list[int] = []
    purged = 0
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        open(out / RECORDS, "wb") as records,
        open(out / PROOFS, "w", encoding="utf-8", newline="\n") as proofs,
        open(out / PURGED, "w", encoding="utf-8", newline="\n") as tombstones,
    ):
        for seq, answer in zip(seqs, in_order(pool, prove, seqs, ahead=4 * workers), strict=True):
            if answer is REMOVED_SINCE:
                continue  # retention's doing, recorded in the log: not the log's fault
            if answer is None:
                (gaps if whole else unproven).append(seq)
                continue
            assert isinstance(answer, integrity_pb2.GetInclusionProofResponse)
            encoded = [base64.b64encode(h).decode() for h in answer.proof]
            if answer.purged:
                leaf = base64.b64encode(answer.leaf_hash).decode()
                entry = {"seq": answer.seq, "leaf_hash": leaf, "proof": encoded}
                tombstones.write(json.dumps(entry) + "\n")
                purged += 1
                continue
            written.append(answer.seq)
            records.write(answer.record + b"\n")
            proofs.write(json.dumps({"seq": answer.seq, "proof": encoded}) + "\n")
    return _Written(checkpoint, written, purged, sorted(unproven), refused, gaps)


def in_order(
    pool: ThreadPoolExecutor, call: Callable[[_T], _R], items: Iterable[_T], *, ahead: int
) -> Iterator[_R]:
    """`call` of each item, run in `pool`, answered in the items' order, with at
    most `ahead` submitted and not yet answered. `pool.map` submits every item
    first: a future per seq of a log of millions before the first record."""
    pending: deque[Future[_R]] = deque()
    for item in items:
        # In the caller's context (its trace, its request id), a copy each:
        # one context cannot be entered by two threads at once.
        pending.append(pool.submit(contextvars.copy_context().run, call, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def verify_bundle(
    path: Path, *, key: str | Sequence[str] | None = None, tenant: str | None = None
) -> BundleSummary:
    """Check every record of the bundle at `path` against its signed checkpoint.
    With `key` (verifier key text, or several) the checkpoint, and every
    statement of what retention removed, must be signed by one of them (a log
    whose key was rotated: each statement is signed by the key of its day);
    without (None), by one of the bundle's own keys, which proves only that the
    bundle is consistent with itself; an empty sequence of keys is refused. With
    `tenant`, the log must be that tenant's: one key signs every tenant's
    checkpoints, so another tenant's bundle would verify as well. Raises
    BundleError at the first failure."""
    try:
        return _verify_bundle(path, key=key, tenant=tenant)
    except (OSError, UnicodeDecodeError) as error:  # a file missing, unreadable, not text
        raise BundleError(f"cannot read the bundle: {error}") from None


def _verify_bundle(
    path: Path, *, key: str | Sequence[str] | None, tenant: str | None
) -> BundleSummary:
    manifest = _manifest(path)
    verifiers, trusted_own = _verifiers(path, key)
    try:
        text, signers = open_note((path / CHECKPOINT).read_text(encoding="utf-8"), verifiers)
        checkpoint = parse_checkpoint(text)
    except (NoteError, OSError) as error:
        raise BundleError(f"checkpoint: {error}") from None
    if (checkpoint.origin, checkpoint.tree_size) != (manifest["origin"], manifest["tree_size"]):
        raise BundleError("checkpoint: its origin or size differs from bundle.json")
    logged_tenant = checkpoint.origin.rsplit("/", 1)[-1]
    if tenant is not None and logged_tenant != tenant:
        raise BundleError(
            f"checkpoint: the log is tenant {logged_tenant!r}'s ({checkpoint.origin}),"
            f" not {tenant!r}'s"
        )

    size, root = checkpoint.tree_size, checkpoint.root_hash
    complete = manifest["complete"]
    seq_range = _range_of(manifest, size)
    received = _received_of(manifest)
    ledger = RemovalLedger(checkpoint.origin, verifiers)
    count, purged, first, last = _verify_each(
        path, logged_tenant, size, root, complete=complete, seq_range=seq_range, ledger=ledger
    )
    if count != manifest["count"]:
        raise BundleError(f"bundle.json says {manifest['count']} records, the bundle has {count}")
    if purged != manifest.get("purged", 0):
        raise BundleError(
            f"bundle.json says {manifest.get('purged', 0)} purged events, the bundle has {purged}"
        )
    _refuse_what_the_log_could_not_do(manifest)
    unchecked: tuple[str, ...] = ()
    if received is not None and seq_range is not None:
        unchecked = _check_edges(path, logged_tenant, size, root, seq_range, received)
    return BundleSummary(
        origin=checkpoint.origin,
        tree_size=checkpoint.tree_size,
        count=count,
        first_seq=first,
        last_seq=last,
        complete=complete,
        signed_by=[signer.text() for signer in signers],
        trusted_own_keys=trusted_own,
        purged=purged,
        seq_range=seq_range,
        received_since=received[0] if received else None,
        received_until=received[1] if received else None,
        unchecked_edges=unchecked,
    )


def _check_edges(
    path: Path,
    tenant: str,
    size: int,
    root: bytes,
    seq_range: tuple[int, int],
    received: tuple[datetime, datetime],
) -> tuple[str, ...]:
    """Check that the range is the period's: the event just before it was
    received before the period, the one just after at or after its end, each
    proven in the signed checkpoint as the range's records are. Whoever wrote
    the bundle chose its edges: each one the log holds at the checkpoint's
    size must be here, or a range cut short would pass (helper-182). Returns
    the ends not proven: an edge shown as removed by retention (its kept leaf
    proves its place, not its time; any writer can show one so), and the
    end of a range that ends with the checkpoint's log (no event after it
    shows the period had ended there)."""
    (first, last), (since, until) = seq_range, received
    wanted = {seq: end for seq, end in ((first - 1, "start"), (last + 1, "end")) if seq >= 1}
    found: set[str] = set()  # the ends whose neighbour the bundle proves
    timed: set[str] = set()  # and of those, the ones whose time it shows
    try:
        entries = (path / EDGES).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BundleError(f"{EDGES}: missing, which a range of a period holds") from None
    for number, line in enumerate(entries, start=1):
        try:
            entry = json.loads(line)
            seq, record = entry["seq"], entry["record"]
            leaf = base64.b64decode(entry["leaf_hash"], validate=True)
            proof = [base64.b64decode(h, validate=True) for h in entry["proof"]]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise BundleError(f"{EDGES} line {number}: not an event with its proof") from None
        if type(seq) is not int or seq not in wanted or wanted[seq] in found:
            raise BundleError(f"{EDGES} line {number}: seq {seq} is not just outside the range")
        end = wanted[seq]
        if record is not None:
            if not isinstance(record, str):
                raise BundleError(f"{EDGES} line {number}: its record is not text")
            leaf = leaf_hash(record.encode())
        try:
            verify_inclusion(leaf_index=seq - 1, tree_size=size, leaf=leaf, proof=proof, root=root)
        except ProofError as error:
            raise BundleError(f"{EDGES} line {number} (seq {seq}): {error}") from None
        found.add(end)
        if record is None:  # removed by retention: its time went with it
            continue
        timed.add(end)
        received_at = _received_at(record, tenant, seq, f"{EDGES} line {number}")
        if end == "start" and received_at >= since:
            raise BundleError(
                f"seq {seq}, just before the range, was received at {_moment(received_at)}, not"
                f" before {_moment(since)}: the range does not start where the period does"
            )
        if end == "end" and received_at < until:
            raise BundleError(
                f"seq {seq}, just after the range, was received at {_moment(received_at)}, before"
                f" {_moment(until)}: the range ends before the period does"
            )
    for seq, end in wanted.items():
        if end not in found and seq <= size:
            where = "before" if end == "start" else "after"
            raise BundleError(
                f"{EDGES}: seq {seq}, just {where} the range, is missing: the log holds it at"
                f" the checkpoint's size {size}, and its time shows where the period's {end} is"
            )
    return tuple(end for seq, end in wanted.items() if end not in timed)


def _received_at(record: str, tenant: str, seq: int, where: str) -> datetime:
    try:
        parsed = json.loads(record)
        owner, logged, text = parsed["tenant_id"], parsed["seq"], parsed["received_at"]
        received_at = datetime.fromisoformat(text)
    except (ValueError, KeyError, TypeError, RecursionError):
        raise BundleError(f"{where}: not a Sealtrail record with its time") from None
    if owner != tenant or logged != seq or received_at.tzinfo is None:
        raise BundleError(f"{where}: not the record of seq {seq} of this log")
    return received_at


def _range_of(manifest: dict[str, Any], size: int) -> tuple[int, int] | None:
    """The range a range bundle claims whole, checked to be one of the log
    at the checkpoint's size."""
    claimed = manifest.get("range")
    if claimed is None:
        return None
    if manifest["complete"]:
        raise BundleError(f"{MANIFEST}: it claims both the complete log and a range of it")
    first = claimed.get("first_seq") if isinstance(claimed, dict) else None
    last = claimed.get("last_seq") if isinstance(claimed, dict) else None
    if type(first) is not int or type(last) is not int or not 1 <= first <= last:
        raise BundleError(
            f"{MANIFEST}: 'range' must be {{first_seq, last_seq}}, 1 <= first <= last"
        )
    if last > size:
        raise BundleError(
            f"{MANIFEST}: its range ends at seq {last}, beyond the checkpoint's size {size}"
        )
    return first, last


def _received_of(manifest: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """The period by receipt time a range bundle says its range was found for."""
    received = manifest.get("received")
    if received is None:
        return None
    try:
        since, until = (datetime.fromisoformat(received[end]) for end in ("since", "until"))
    except (TypeError, KeyError, ValueError):
        raise BundleError(f"{MANIFEST}: 'received' must be {{since, until}}, two times") from None
    if since.tzinfo is None or until.tzinfo is None or manifest.get("range") is None:
        raise BundleError(f"{MANIFEST}: 'received' must be two UTC times, of a range bundle")
    if until <= since:
        # Backwards, both ends' checks hold for any part of the period (helper-182).
        raise BundleError(f"{MANIFEST}: 'received' must be a period: since before until")
    return since.astimezone(UTC), until.astimezone(UTC)


def _refuse_what_the_log_could_not_do(manifest: dict[str, Any]) -> None:
    """What the writer found the log could not do: each record here checks,
    but the log they came from had been changed."""
    unproven = manifest.get("unproven", [])
    if not isinstance(unproven, list) or not all(isinstance(seq, int) for seq in unproven):
        raise BundleError(f"{MANIFEST}: 'unproven' must be a list of seqs")
    fault = _log_fault(unproven, refused=manifest.get("log_refused_to_sign") is True)
    if fault is not None:
        raise BundleError(fault)


def _log_fault(
    unproven: Sequence[int],
    *,
    refused: bool,
    gaps: Sequence[int] = (),
    unaccounted: str | None = None,
) -> str | None:
    """What the log could not do, from what the writer found: the seqs a
    filter matched (`unproven`) or a complete or range bundle holds (`gaps`)
    that it could not prove, removals retention does not account for, or a
    fresh checkpoint it refused to sign."""
    if unproven or gaps:
        seqs = unproven or gaps
        shown = ", ".join(str(seq) for seq in seqs[:20])
        more = f" and {len(seqs) - 20} more" if len(seqs) > 20 else ""
        which = "records the bundle's filter matched" if unproven else "of its records"
        return (
            f"the log could not prove {len(seqs)} {which}"
            f" (seq {shown}{more}): they are not in the bundle, and the log no longer holds"
            " them as it signed them"
        )
    if unaccounted is not None:
        return unaccounted
    if refused:
        return (
            "the log refused to sign a checkpoint over its state when the bundle was written:"
            " it no longer extends its last checkpoint, against which these records verify"
        )
    return None


def _manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise BundleError(f"{MANIFEST}: {error}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST}: not a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("version") not in VERSIONS:
        raise BundleError(
            f"{MANIFEST}: not a {FORMAT} of version {' or '.join(map(str, VERSIONS))}"
        )
    if not isinstance(manifest.get("complete"), bool):
        raise BundleError(f"{MANIFEST}: 'complete' must be true or false")
    if not isinstance(manifest.get("origin"), str):
        raise BundleError(f"{MANIFEST}: 'origin' must be a string")
    for name in ("tree_size", "count", "purged"):
        value = manifest.get(name, 0 if name == "purged" else None)  # older bundles: no purged
        if type(value) is not int or value < 0:
            raise BundleError(f"{MANIFEST}: {name!r} must be a number of events")
    return dict(manifest)


def _verifiers(path: Path, key: str | Sequence[str] | None) -> tuple[list[Verifier], bool]:
    given = [key] if isinstance(key, str) else list(key or ())
    if key is not None and not given:
        # Keys read from an empty setting: checked against the bundle's own
        # keys instead, a forged bundle carrying its forger's key verified.
        raise BundleError("verifier key: none given (pass None to trust the bundle's own keys)")
    try:
        if given:
            return [Verifier.parse(text) for text in given], False
        lines = (path / KEYS).read_text(encoding="utf-8").split()
        return [Verifier.parse(line) for line in lines], True
    except (NoteError, OSError) as error:
        raise BundleError(f"verifier key: {error}") from None


def _records(path: Path, tenant: str) -> Iterator[tuple[int, int, bytes, dict[str, Any]]]:
    """(line number, seq, leaf hash, record parsed) of each record, checking
    it belongs to `tenant`."""
    with open(path / RECORDS, "rb") as records:
        for number, line in enumerate(records, start=1):
            record = line.removesuffix(b"\n")
            try:
                parsed = json.loads(record)
                seq, owner = parsed["seq"], parsed["tenant_id"]
            except (ValueError, KeyError, TypeError, RecursionError):
                raise BundleError(f"record {number}: not a Sealtrail record") from None
            if type(seq) is not int:
                raise BundleError(f"record {number}: its seq is not a number")
            if owner != tenant:
                raise BundleError(f"record {number} (seq {seq}): belongs to tenant {owner!r}")
            yield number, seq, leaf_hash(record), parsed


def _purged(path: Path) -> Iterator[tuple[int, bytes, list[bytes]]]:
    """(seq, leaf hash, proof) of each event the bundle says retention removed."""
    if not (path / PURGED).exists():
        return
    with open(path / PURGED, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
                seq = entry["seq"]
                leaf = base64.b64decode(entry["leaf_hash"], validate=True)
                proof = [base64.b64decode(h, validate=True) for h in entry["proof"]]
            except (ValueError, KeyError, TypeError, RecursionError):
                raise BundleError(f"{PURGED} line {number}: not a purged leaf") from None
            if not isinstance(seq, int) or len(leaf) != 32:
                raise BundleError(f"{PURGED} line {number}: not a purged leaf")
            yield seq, leaf, proof


class _Walk:
    """Leaves met in seq order: each checked against the signed root through
    its proof; a complete bundle checked for gaps from seq 1 and its root
    recomputed from all its leaves; a range bundle checked for gaps and
    strays in its range, and the root rebuilt from its leaves (RangeRoot)."""

    def __init__(
        self, size: int, root: bytes, *, complete: bool, seq_range: tuple[int, int] | None
    ) -> None:
        self.size, self.root = size, root
        # The seqs every one of which the bundle must hold, if it claims any.
        self.bounds = (1, size) if complete else seq_range
        self.first = self.last = 0
        self.whole = TreeBuilder() if complete else None
        self.range = RangeRoot(tree_size=size, root=root) if seq_range else None

    def accept(self, what: str, seq: int, leaf: bytes, proof: list[bytes]) -> None:
        if self.bounds is not None:
            low, high = self.bounds
            if not low <= seq <= high:
                where = (
                    f"beyond the checkpoint's size {high}"
                    if self.whole is not None
                    else f"outside the bundle's range {low}..{high}"
                )
                raise BundleError(f"{what} (seq {seq}): {where}")
            expected = max(self.last, low - 1) + 1
            if seq > expected:
                raise BundleError(f"seq {expected}: missing ({what} has seq {seq})")
        if seq <= self.last:
            raise BundleError(f"{what} (seq {seq}): out of order or repeated")
        try:
            verify_inclusion(
                leaf_index=seq - 1, tree_size=self.size, leaf=leaf, proof=proof, root=self.root
            )
            if self.range is not None:
                self.range.append(seq - 1, leaf, proof)
        except ProofError as error:
            raise BundleError(f"{what} (seq {seq}): {error}") from None
        self.first, self.last = self.first or seq, seq
        if self.whole is not None:
            self.whole.append(leaf)

    def end(self) -> None:
        """Check that nothing of what the bundle claims whole is missing at its end."""
        if self.bounds is None:
            return
        low, high = self.bounds
        if self.last < high:
            ends = f"ends at seq {self.last}" if self.last else "holds no event"
            claim = (
                f"the checkpoint covers {high}"
                if self.whole is not None
                else f"its range ends at seq {high}"
            )
            raise BundleError(
                f"seq {max(self.last, low - 1) + 1}: missing; the bundle {ends} but {claim}"
            )
        if self.whole is not None and self.whole.root() != self.root:
            raise BundleError(f"the records' root differs from the checkpoint at size {self.size}")
        if self.range is not None:
            try:
                self.range.check()
            except ProofError as error:
                raise BundleError(
                    f"the range's leaves do not lead to the checkpoint's root: {error}"
                ) from None


def _verify_each(
    path: Path,
    tenant: str,
    size: int,
    root: bytes,
    *,
    complete: bool,
    seq_range: tuple[int, int] | None,
    ledger: RemovalLedger,
) -> tuple[int, int, int, int]:
    """(records, purged leaves, first seq, last seq) of a bundle that verifies."""
    walk = _Walk(size, root, complete=complete, seq_range=seq_range)
    count = purged = 0
    removed = _purged(path)
    pending = next(removed, None)

    def purged_before(seq: int) -> None:
        nonlocal pending, purged
        while pending is not None and pending[0] < seq:
            walk.accept(f"purged seq {pending[0]}", *pending)
            ledger.removed(*pending[:2])
            purged += 1
            pending = next(removed, None)

    with open(path / PROOFS, encoding="utf-8") as proofs:
        for number, seq, leaf, record in _records(path, tenant):
            try:
                entry = json.loads(proofs.readline() or "null")
            except (ValueError, RecursionError):
                raise BundleError(f"{PROOFS} line {number}: not JSON") from None
            if not isinstance(entry, dict | None):
                raise BundleError(f"{PROOFS} line {number}: not a proof")
            if entry is None:  # past its last line
                raise BundleError(
                    f"record {number} (seq {seq}): no proof for it in {PROOFS} (cut short?)"
                )
            if entry.get("seq") != seq:
                logged = entry.get("seq")
                raise BundleError(
                    f"record {number} (seq {seq}): the record says seq {seq} but sits at"
                    f" seq {logged} of the log"
                )
            purged_before(seq)
            try:
                proof = [base64.b64decode(h, validate=True) for h in entry["proof"]]
            except (ValueError, TypeError, KeyError) as error:
                raise BundleError(f"record {number} (seq {seq}): {error}") from None
            walk.accept(f"record {number}", seq, leaf, proof)
            count += 1
            ledger.note_record(record)
    purged_before(size + 1)
    if pending is not None:
        raise BundleError(f"purged seq {pending[0]}: beyond the checkpoint's size {size}")
    walk.end()
    # A removed leaf proves as well as its record: only retention's signed
    # statements tell a purged event from one hidden by hand (tlog._removals).
    # A range bundle holds its range's leaves, to show none is missing, but
    # not the statements' other leaves: what removed them is not checked.
    if not complete and seq_range is None and purged:
        raise BundleError(f"{PURGED}: a partial bundle carries no removed leaves")
    if complete and (why := ledger.unaccounted()):
        raise BundleError(why)
    first = walk.first
    return count, purged, first, walk.last


class _ProvingTree(Protocol):
    """A tree that proves its leaves: the whole log's or a range's."""

    def inclusion_proof(self, index: int) -> list[bytes]: ...

    def leaf(self, index: int) -> bytes: ...


def _write_proofs(
    out: Path, tree: _ProvingTree, seqs: Sequence[int], removed: Sequence[int]
) -> None:
    """The proof of each exported record, and each removed event's kept leaf
    with its proof, into the bundle's files."""
    with open(out / PROOFS, "w", encoding="utf-8", newline="\n") as proofs:
        for seq in seqs:
            proof = [base64.b64encode(h).decode() for h in tree.inclusion_proof(seq - 1)]
            proofs.write(json.dumps({"seq": seq, "proof": proof}) + "\n")
    with open(out / PURGED, "w", encoding="utf-8", newline="\n") as tombstones:
        for seq in removed:
            proof = [base64.b64encode(h).decode() for h in tree.inclusion_proof(seq - 1)]
            kept = base64.b64encode(tree.leaf(seq - 1)).decode()
            tombstones.write(json.dumps({"seq": seq, "leaf_hash": kept, "proof": proof}) + "\n")
