"""Checking a bundle offline (`sealtrail verify`): every record against the
signed checkpoint through its proof, and a complete or range bundle for gaps."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final

from sealtrail._bundle_format import (
    CHECKPOINT,
    EDGES,
    EXPORT_MANIFEST,
    FORMAT,
    KEYS,
    MANIFEST,
    PROOFS,
    PURGED,
    RECORDS,
    VERSIONS,
    BundleError,
    BundleSummary,
    bundle_time,
    log_fault,
)
from sealtrail._checkpoint_check import other_tenant
from sealtrail._words import counted
from sealtrail.tlog import (
    NoteError,
    ProofError,
    RangeRoot,
    RemovalLedger,
    TreeBuilder,
    Verifier,
    leaf_hash,
    newer_sealtrails,
    open_note,
    parse_checkpoint,
    verify_inclusion,
)


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
    other = other_tenant(checkpoint.origin, tenant)
    if other is not None:
        raise BundleError(f"checkpoint: {other}")

    size, root = checkpoint.tree_size, checkpoint.root_hash
    complete = manifest["complete"]
    seq_range = _range_of(manifest, size)
    received = _received_of(manifest)
    ledger = RemovalLedger(checkpoint.origin, verifiers)
    count, purged, first, last, held = _verify_each(
        path,
        logged_tenant,
        size,
        root,
        complete=complete,
        seq_range=seq_range,
        gaps=_seqs_of(manifest, "gaps"),
        ledger=ledger,
        period=received if seq_range is not None else None,
    )
    if count != manifest["count"]:
        raise BundleError(
            f"bundle.json says {counted(manifest['count'], 'record')}, the bundle has {count}"
        )
    claimed = (manifest["first_seq"], manifest["last_seq"])
    if claimed != held:  # never checked, whatever it said verified (helper-282)
        raise BundleError(
            f"bundle.json says its records run seq {claimed[0]}..{claimed[1]}, they run"
            f" seq {held[0]}..{held[1]}"
        )
    if purged != manifest.get("purged", 0):
        raise BundleError(
            f"bundle.json says {counted(manifest.get('purged', 0), 'purged event')},"
            f" the bundle has {purged}"
        )
    _refuse_what_the_log_could_not_do(manifest)
    chosen_by, signed_selection = None, False
    if not complete and seq_range is None:
        note = (path / CHECKPOINT).read_text(encoding="utf-8")
        chosen_by, signed_selection = _selection(path, manifest, verifiers, note, count)
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
        filter=chosen_by,
        selection_signed=signed_selection,
    )


def _selection(
    path: Path, manifest: dict[str, Any], verifiers: list[Verifier], note: str, count: int
) -> tuple[str | None, bool]:
    """What a filtered bundle selected its records by, and whether the log's
    key signs it: bundle.json's `filter` alone is the writer's word, and one
    record taken out with its proof and the count lowered verified
    (helper-554). A bundle read by one Export keeps its manifest, whose
    statement signs the records' bytes, rows and filter: held to it here,
    its checkpoint the bundle's, and of no range (a filtered export of seqs
    2..4 passed for every event of its filter: helper-570)."""
    claimed = manifest.get("filter")
    if claimed is not None and not isinstance(claimed, str):
        raise BundleError(f"{MANIFEST}: 'filter' must be the filter's JSON text")
    kept = manifest.get("export_manifest")
    if kept is None:
        return claimed, False
    if kept != EXPORT_MANIFEST:
        raise BundleError(f"{MANIFEST}: 'export_manifest' must be {EXPORT_MANIFEST!r}")
    from sealtrail._checkpoint_check import CheckpointError
    from sealtrail._export_check import check_export

    try:
        found = check_export(
            path / EXPORT_MANIFEST, key=[v.text() for v in verifiers], file=path / RECORDS
        )
    except CheckpointError as error:
        raise BundleError(f"{EXPORT_MANIFEST}: {error}") from None
    if found.checkpoint.split("\n\n", 1)[0] != note.split("\n\n", 1)[0]:
        raise BundleError(f"{EXPORT_MANIFEST}: its checkpoint is not the bundle's")
    if not found.filtered or found.filter != claimed:
        said = "no filter" if claimed is None else f"filter {claimed}"
        raise BundleError(f"{MANIFEST} says {said}, {_signed_filter(found.filtered, found.filter)}")
    signed = found.statement
    if signed.range_last_seq:  # the writer asks none: the filter's events of a range alone
        raise BundleError(
            f"{EXPORT_MANIFEST}: its statement signs the events of seqs {signed.range_first_seq}.."
            f"{signed.range_last_seq} alone, not every event of its filter"
        )
    if found.rows != count:
        raise BundleError(
            f"{EXPORT_MANIFEST}: its statement signs {counted(found.rows or 0, 'row')},"
            f" the bundle has {count}"
        )
    return found.filter, True


def _signed_filter(filtered: bool | None, signed: str | None) -> str:
    """What an export's statement signs of its filter, after bundle.json's."""
    if filtered is None:
        return "the export's is a v1 statement, which signs no filter"
    return f"the export's signed statement {f'filter {signed}' if filtered else 'no filter'}"


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
                f"seq {seq}, just before the range, was received at {bundle_time(received_at)}, not"
                f" before {bundle_time(since)}: the range does not start where the period does"
            )
        if end == "end" and received_at < until:
            raise BundleError(
                f"seq {seq}, just after the range, was received at"
                f" {bundle_time(received_at)}, before {bundle_time(until)}: the range ends"
                " before the period does"
            )
    for seq, end in wanted.items():
        if end not in found and seq <= size:
            where = "before" if end == "start" else "after"
            raise BundleError(
                f"{EDGES}: seq {seq}, just {where} the range, is missing: the log holds it at"
                f" the checkpoint's size {size}, and its time shows where the period's {end} is"
            )
    return tuple(end for seq, end in wanted.items() if end not in timed)


# How far a record of a period's range may be stamped outside the period.
# Each server process stamps received_at by its own clock, and the range is
# of seqs: a process whose clock is behind another's stamps an event after
# the range's first with a time before the period's start, and the period
# so far (`until` unset, the server's time as it answered) holds the events
# committed as the range was read, stamped a moment after it
# (docs/streaming-and-export.md). A process serves only within
# SEALTRAIL_MAX_CLOCK_SKEW (2 s by default, ADR 0138) of the database's
# clock; the five minutes the server takes for a clock gone wrong
# (store/clock_skew.py) leave room for a deployment that allows more, and
# still fail a period moved by more than a few minutes (helper-554).
RECEIPT_CLOCK_TOLERANCE: Final = timedelta(minutes=5)


def _within_period(
    number: int, seq: int, record: dict[str, Any], period: tuple[datetime, datetime]
) -> None:
    """Check that a record of a period's range was received in the period,
    give or take RECEIPT_CLOCK_TOLERANCE: the edges show where the range
    starts and ends, not that bundle.json's period is the one its records
    were received in (helper-554)."""
    (since, until), what = period, f"record {number} (seq {seq})"
    try:
        received_at = datetime.fromisoformat(record["received_at"])
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{what}: not a Sealtrail record with its time") from None
    if received_at.tzinfo is None:
        raise BundleError(f"{what}: its time is not UTC")
    if since - RECEIPT_CLOCK_TOLERANCE <= received_at < until + RECEIPT_CLOCK_TOLERANCE:
        return
    side = (
        f"before the period's start {bundle_time(since)}"
        if received_at < since
        else f"after the period's end {bundle_time(until)}"
    )
    raise BundleError(
        f"{what} was received at {bundle_time(received_at)}, {side} by more than the"
        f" {_minutes(RECEIPT_CLOCK_TOLERANCE)} server clocks may differ by: the range is not"
        " the period's"
    )


def _minutes(span: timedelta) -> str:
    return counted(int(span.total_seconds()) // 60, "minute")


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
    try:
        since, until = since.astimezone(UTC), until.astimezone(UTC)
    except OverflowError:  # an offset that takes it before year 1 or past 9999 (helper-282)
        raise BundleError(
            f"{MANIFEST}: 'received' must be two UTC times, within years 1 to 9999 in UTC"
        ) from None
    if until <= since:
        # Backwards, both ends' checks hold for any part of the period (helper-182).
        raise BundleError(f"{MANIFEST}: 'received' must be a period: since before until")
    return since, until


def _refuse_what_the_log_could_not_do(manifest: dict[str, Any]) -> None:
    """What the writer found the log could not do: each record here checks,
    but the log they came from had been changed."""
    fault = log_fault(
        sorted(_seqs_of(manifest, "unproven")),
        refused=manifest.get("log_refused_to_sign") is True,
        gaps=sorted(_seqs_of(manifest, "gaps")),
    )
    if fault is not None:
        raise BundleError(fault)


def _seqs_of(manifest: dict[str, Any], name: str) -> frozenset[int]:
    """The seqs bundle.json lists under `name`: a filtered bundle's matched
    records (`unproven`), or a complete or range bundle's (`gaps`), that the
    writer found the log could not prove."""
    seqs = manifest.get(name, [])
    if not isinstance(seqs, list) or not all(type(seq) is int for seq in seqs):
        raise BundleError(f"{MANIFEST}: {name!r} must be a list of seqs")
    return frozenset(seqs)


def _manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise BundleError(f"{MANIFEST}: {error}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST}: not a JSON object")
    version = manifest.get("version")
    if manifest.get("format") == FORMAT and type(version) is int and version > max(VERSIONS):
        raise BundleError(f"{MANIFEST}: {newer_sealtrails('the bundle', version)}")
    # `true` and `3.0` equal a 1 and a 3, and no writer gives either.
    if manifest.get("format") != FORMAT or type(version) is not int or version not in VERSIONS:
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
    for name in ("first_seq", "last_seq"):
        value = manifest.get(name)
        if type(value) is not int or value < 0:
            raise BundleError(
                f"{MANIFEST}: {name!r} must be a seq of its records (0 when it holds none)"
            )
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


# Longer than any line of a bundle: a record is at most 64 KiB (and the
# recorder's token), a proof some 3 KB. A line is read no further, so a forged
# one of gigabytes does not take the memory of the machine checking it.
_MAX_LINE: Final = 4 << 20


def _line(file: IO[bytes], name: str, number: int) -> bytes:
    """Line `number` of the bundle's file `name`, read from `file` (b"" past
    its end); BundleError if it is longer than _MAX_LINE."""
    line = file.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise BundleError(
            f"{name} line {number}: longer than {_MAX_LINE >> 20} MiB, which no line of a"
            " bundle is (a record is at most 64 KiB)"
        )
    return line


def _lines(file: IO[bytes], name: str) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of each line of the bundle's file `name`."""
    number = 1
    while line := _line(file, name, number):
        yield number, line
        number += 1


def _records(path: Path, tenant: str) -> Iterator[tuple[int, int, bytes, dict[str, Any]]]:
    """(line number, seq, leaf hash, record parsed) of each record, checking
    it belongs to `tenant`."""
    with open(path / RECORDS, "rb") as records:
        for number, line in _lines(records, RECORDS):
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


def _hashes(value: object) -> list[bytes] | None:
    """A proof's hashes, from their base64 in a list; None if it is none."""
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        return None
    try:
        return [base64.b64decode(h, validate=True) for h in value]
    except ValueError:  # binascii.Error, or a character beyond ASCII
        return None


def _purged(path: Path) -> Iterator[tuple[int, bytes, list[bytes]]]:
    """(seq, leaf hash, proof) of each event the bundle says retention removed."""
    if not (path / PURGED).exists():
        return
    with open(path / PURGED, "rb") as lines:
        for number, line in _lines(lines, PURGED):
            try:
                entry = json.loads(line)
                seq = entry["seq"]
                leaf = base64.b64decode(entry["leaf_hash"], validate=True)
                proof = [base64.b64decode(h, validate=True) for h in entry["proof"]]
            except (ValueError, KeyError, TypeError, RecursionError):
                raise BundleError(f"{PURGED} line {number}: not a purged leaf") from None
            if type(seq) is not int or len(leaf) != 32:  # not true, which is an int
                raise BundleError(f"{PURGED} line {number}: not a purged leaf")
            yield seq, leaf, proof


class _Walk:
    """Leaves met in seq order: each checked against the signed root through
    its proof; a complete bundle checked for gaps from seq 1 and its root
    recomputed from all its leaves; a range bundle checked for gaps and
    strays in its range, and the root rebuilt from its leaves (RangeRoot)."""

    def __init__(
        self,
        size: int,
        root: bytes,
        *,
        complete: bool,
        seq_range: tuple[int, int] | None,
        gaps: frozenset[int] = frozenset(),
    ) -> None:
        self.size, self.root = size, root
        self.gaps = gaps
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
                raise BundleError(
                    self._why(expected) or f"seq {expected}: missing ({what} has seq {seq})"
                )
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

    def _why(self, seq: int) -> str:
        """Why `seq` is missing, if the writer found the log could not prove
        it ("" if not): the log's doing, not the bundle's (a record taken out
        is not)."""
        if seq not in self.gaps:
            return ""
        return (
            f"seq {seq}: missing: the log no longer holds seq {seq} as it signed it (the"
            " bundle's writer could not prove it)"
        )

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
            missing = max(self.last, low - 1) + 1
            raise BundleError(
                self._why(missing) or f"seq {missing}: missing; the bundle {ends} but {claim}"
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
    period: tuple[datetime, datetime] | None = None,
    gaps: frozenset[int] = frozenset(),
) -> tuple[int, int, int, int, tuple[int, int]]:
    """(records, purged leaves, first seq, last seq, and the first and last
    seq of its records alone, 0 for none) of a bundle that verifies; of a
    range found for `period`, each record received in it. `gaps`: the seqs
    the writer found the log could not prove, as bundle.json lists them."""
    walk = _Walk(size, root, complete=complete, seq_range=seq_range, gaps=gaps)
    count = purged = 0
    held = (0, 0)
    removed = _purged(path)
    pending = next(removed, None)

    def purged_before(seq: int) -> None:
        nonlocal pending, purged
        while pending is not None and pending[0] < seq:
            walk.accept(f"purged seq {pending[0]}", *pending)
            ledger.removed(*pending[:2])
            purged += 1
            pending = next(removed, None)

    with open(path / PROOFS, "rb") as proofs:
        for number, seq, leaf, record in _records(path, tenant):
            try:
                entry = json.loads(_line(proofs, PROOFS, number) or b"null")
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
            proof = _hashes(entry.get("proof"))
            if proof is None:  # said in Python's words ('NoneType' object is not iterable)
                raise BundleError(
                    f"record {number} (seq {seq}): {PROOFS} line {number} holds no proof:"
                    " a list of base64 hashes"
                )
            walk.accept(f"record {number}", seq, leaf, proof)
            if period is not None:
                _within_period(number, seq, record, period)
            count += 1
            held = (held[0] or seq, seq)
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
    return count, purged, walk.first, walk.last, held
