"""Writing verifiable bundles (the format: _bundle_format.py): a filter's
records with their proofs, a whole log, or a seq range proven complete."""

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
from google.protobuf import json_format

from sealtrail._bundle_format import (
    CHECKPOINT,
    EDGES,
    EXPORT_MANIFEST,
    FORMAT,
    KEYS,
    MANIFEST,
    PROOFS,
    PURGED,
    RANGE_VERSION,
    RECORDS,
    VERSION,
    BundleError,
    BundleSummary,
    RangeBeyondLogError,
    bundle_time,
)
from sealtrail._errors import NotFoundError, SealtrailError
from sealtrail._words import counted
from sealtrail.tlog import (
    LeafTree,
    NoteError,
    ProofError,
    RangeTree,
    RemovalLedger,
    RemovedLeaves,
    Verifier,
    leaf_hash,
    parse_checkpoint,
)
from sealtrail.v1 import audit_service_pb2, event_pb2, integrity_pb2

_T = TypeVar("_T")
_R = TypeVar("_R")


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
        filter: event_pb2.EventFilter | None = ...,
        manifest_file: bool = ...,
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
            f"no event was received from {bundle_time(start)} to {bundle_time(end)}"
            f" (the log holds {counted(found.tree_size, 'event')})"
        )
    return SeqRange(found.first_seq, found.last_seq, start, end)


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
    root. A filtered bundle is read in one Export of the filter, whose
    manifest it keeps (EXPORT_MANIFEST: its statement signs the records'
    bytes, rows and filter), each record proven by GetInclusionProof at the
    export's checkpoint (`_from_filtered_export`). Otherwise (and for a
    filtered bundle the export does not serve: the filter then recorded in
    bundle.json, unsigned), each record is fetched with its proof by GetInclusionProof,
    `workers` at a time: the way for a reader token (Export needs an
    exporter's), an export refused by the rate limit, or a log that does not
    match its checkpoint (which then shows which records it cannot prove).
    A complete bundle overtaken by a retention pass is written again (see
    `_complete`); overtaken each time, BundleError says to retry. An Export
    refused for the exports the tenant or the server has open at once
    (TOO_MANY_EXPORTS) is asked again after the server's delay, as the client
    retries a call (up to its max_attempts), then raised: proving each record
    would load a server already busy with exports.

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
        for name in (RECORDS, EXPORT_MANIFEST, PROOFS, PURGED, EDGES, CHECKPOINT, KEYS, MANIFEST):
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
        assert event_filter is not None  # not complete: a filter
        written = _from_filtered_export(source, out, event_filter, workers) or replace(
            _proven_one_by_one(source, out, event_filter, complete, workers),
            filter=_filter_text(event_filter),
        )
    removed = _first_and_last_removed(out) if written.purged else None
    if not written.purged:
        (out / PURGED).unlink()
    (out / CHECKPOINT).write_text(written.checkpoint.note, encoding="utf-8", newline="\n")
    (out / KEYS).write_text(
        "".join(key.text + "\n" for key in source.get_verifier_keys()),
        encoding="utf-8",
        newline="\n",
    )
    seqs, purged = written.seqs, written.purged
    # The seqs it holds, records and leaves, as verify_bundle says them;
    # bundle.json's first_seq and last_seq are its records' alone.
    held = [*seqs[:1], *seqs[-1:], *(removed or ())]
    summary = BundleSummary(
        origin=written.checkpoint.origin,
        tree_size=written.checkpoint.tree_size,
        count=len(seqs),
        first_seq=min(held, default=0),
        last_seq=max(held, default=0),
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
        filter=written.filter,
        selection_signed=written.selection_signed,
    )
    manifest = {
        "format": FORMAT,
        "version": RANGE_VERSION if seq_range else VERSION if purged else 1,
        "origin": summary.origin,
        "tree_size": summary.tree_size,
        "count": summary.count,
        "first_seq": seqs[0] if seqs else 0,
        "last_seq": seqs[-1] if seqs else 0,
        "complete": summary.complete,
        **({"purged": purged} if purged else {}),
        **_range_fields(seq_range),
        **({"unproven": list(summary.unproven)} if summary.unproven else {}),
        # The auditor's verify then says why they are missing (helper-555).
        **({"gaps": list(summary.gaps)} if summary.gaps else {}),
        **({"log_refused_to_sign": True} if written.refused else {}),
        **({"filter": written.filter} if written.filter is not None else {}),
        **({"export_manifest": EXPORT_MANIFEST} if written.selection_signed else {}),
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (out / MANIFEST).write_text(
        json.dumps(manifest, indent=2) + "\n", encoding="utf-8", newline="\n"
    )
    return summary


def _first_and_last_removed(out: Path) -> tuple[int, int]:
    """The seqs of the first and last leaves in the bundle's PURGED, which
    is written in seq order and is not empty: its first line and its last,
    found in its tail (a line is a seq, a leaf and a proof, well under
    64 KiB)."""
    with open(out / PURGED, "rb") as tombstones:
        first = json.loads(tombstones.readline())["seq"]
        tombstones.seek(max(0, tombstones.seek(0, os.SEEK_END) - 65536))
        last = json.loads(tombstones.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])["seq"]
    return int(first), int(last)


def _range_fields(seq_range: SeqRange | None) -> dict[str, Any]:
    """What bundle.json says of a range bundle's range, and how it was chosen."""
    if seq_range is None:
        return {}
    fields: dict[str, Any] = {"range": {"first_seq": seq_range.first, "last_seq": seq_range.last}}
    if seq_range.received_since is not None and seq_range.received_until is not None:
        fields["received"] = {
            "since": bundle_time(seq_range.received_since),
            "until": bundle_time(seq_range.received_until),
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
    filter: str | None = None  # a filtered bundle's, the API's JSON
    selection_signed: bool = False  # its filter and rows signed: EXPORT_MANIFEST's statement


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
# (not a server overloaded, OVERLOADED, nor one with as many exports open as it
# may, TOO_MANY_EXPORTS, which `source.export` retried: a proof a record would
# load it more).
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
    for name in (RECORDS, EXPORT_MANIFEST, PROOFS, PURGED):
        (out / name).unlink(missing_ok=True)


def _filter_text(event_filter: event_pb2.EventFilter) -> str:
    """A filter as bundle.json records it when no statement signs it: the
    API's JSON, compact, keys sorted."""
    fields = json_format.MessageToDict(event_filter, preserving_proto_field_name=True)
    return json.dumps(fields, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _from_filtered_export(
    source: _Source, out: Path, event_filter: event_pb2.EventFilter, workers: int
) -> _Written | None:
    """A filtered bundle read by one NDJSON Export of the filter, its
    manifest kept (EXPORT_MANIFEST): its statement, signed by the log's key,
    signs the records' bytes, rows and filter, so that one taken out, or
    another filter claimed, fails verification (helper-554). Each record is
    proven by GetInclusionProof at the export's checkpoint. None, with `out`
    left empty, when the export is refused (a reader's token, the export
    rate), its statement signs no filter (an older server), or a record of
    it is not the log's as proven: proving each then names what."""
    try:
        exported = source.export(
            out / RECORDS, format="ndjson", filter=event_filter, manifest_file=True
        )
    except SealtrailError as error:
        if {(error.code, None), (error.code, error.reason)} & _PROVE_INSTEAD:
            return None
        raise
    try:
        written = _prove_each_exported(source, out, exported, workers)
    except BaseException:
        _discard(out)
        raise
    if written is None:
        _discard(out)
    return written


def _prove_each_exported(
    source: _Source, out: Path, exported: audit_service_pb2.ExportManifest, workers: int
) -> _Written | None:
    """Each exported record's proof, from GetInclusionProof at the export's
    checkpoint; None if its statement signs no filter or a record is not
    the one the log proves at its seq."""
    signed = _signed(exported.checkpoint)
    if signed is None or not exported.statement or not exported.filter_json:
        return None
    size = signed.tree_size
    seqs = array("q")
    with open(out / RECORDS, "rb") as lines:
        for line in lines:
            seq = _seq_of(line.removesuffix(b"\n"))
            if seq is None or not (seqs[-1] if seqs else 0) < seq <= size:
                return None
            seqs.append(seq)

    def prove(seq: int) -> integrity_pb2.GetInclusionProofResponse | None:
        try:
            return source.get_inclusion_proof(seq=seq, tree_size=size)
        except NotFoundError:
            return None  # removed since, or gone: proving each says which
        except SealtrailError as error:
            if error.code is grpc.StatusCode.DATA_LOSS:
                return None
            raise

    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        open(out / RECORDS, "rb") as records,
        open(out / PROOFS, "w", encoding="utf-8", newline="\n") as proofs,
    ):
        answers = in_order(pool, prove, seqs, ahead=4 * workers)
        for line, answer in zip(records, answers, strict=True):
            if answer is None or answer.record != line.removesuffix(b"\n"):
                return None
            encoded = [base64.b64encode(h).decode() for h in answer.proof]
            proofs.write(json.dumps({"seq": answer.seq, "proof": encoded}) + "\n")
    (out / PURGED).touch()  # a filtered bundle carries no removed leaves
    return replace(_Written(signed, seqs, 0), filter=exported.filter_json, selection_signed=True)


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
            size = error.metadata.get("tree_size", "")
            raise RangeBeyondLogError(
                f"seqs {first}..{last}: {error.message}",
                tree_size=int(size) if size.isdigit() else None,
            ) from None
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


def _last_signed(source: _Source) -> integrity_pb2.SignedCheckpoint:
    """The latest checkpoint the log signed; one the log no longer holds (a
    server refuses it as the latest: DATA_LOSS naming its size) asked by its
    size, which the server serves as signed."""
    try:
        return source.get_checkpoint()
    except SealtrailError as error:
        size = error.metadata.get("tree_size", "")
        if error.code is not grpc.StatusCode.DATA_LOSS or not size.isdigit():
            raise
        return source.get_checkpoint(tree_size=int(size))


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
        checkpoint, refused = _last_signed(source), True
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
        matched = array("q")  # 8 bytes a seq, not a list's 36: a million matched
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

    written = array("q")
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
