"""Verifiable bundles: events exactly as hashed, with what proves them in the
log, checkable offline by anyone (docs/integrity.md, "Bundles and `sealtrail verify`").

    bundle.json         what the bundle holds: origin, tree size, seq range, and
                        "complete" when it claims every record of seqs 1..tree size;
                        (version 3) "range" when it claims every event of seqs
                        first..last, and "received" the period that range was
                        found for, by receipt time; "unproven" (a filtered
                        bundle's) and "gaps" (a complete or range bundle's)
                        the seqs the writer found the log could not prove
    records.ndjson      the records, one per line, exactly as hashed
    proofs.ndjson       line i is {"seq": s, "proof": [base64, ...]}: the RFC 9162
                        inclusion proof of record i in the checkpoint's tree
    purged.ndjson       (version 2) events removed by retention, one per line:
                        {"seq": s, "leaf_hash": base64, "proof": [base64, ...]}
    edges.ndjson        (version 3, a range found by receipt time) the events just
                        before and after the range, each with its proof:
                        {"seq": s, "record": text | null, "leaf_hash": base64,
                        "proof": [...]}; their times show the range is the period's
    records.ndjson.manifest.json
                        (a filtered bundle read by one Export) that export's
                        manifest, whose statement, signed by the log's key,
                        signs records.ndjson's bytes, rows and filter;
                        bundle.json's "filter" is a filtered bundle's filter
                        (the API's JSON) and "export_manifest" names the file
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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

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
EXPORT_MANIFEST = "records.ndjson.manifest.json"  # RECORDS's, as `export` keeps it beside
KEYS = "verifier-keys.txt"


class BundleError(Exception):
    """A bundle failed verification; the message names the record and the reason."""


class RangeBeyondLogError(BundleError):
    """A range bundle's range ends past the log's last event: the log's size
    is `tree_size`, for a caller to say it in its own terms (the command
    line's --seq)."""

    def __init__(self, message: str, *, tree_size: int | None) -> None:
        super().__init__(message)
        self.tree_size = tree_size


def bundle_time(when: datetime) -> str:
    """A time as bundle.json and the command line show it: RFC 3339, UTC."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class BundleSummary:
    origin: str
    tree_size: int
    count: int  # records
    # The first and last seq it holds, of its records and the leaves of
    # removed events alike (bundle.json's are its records' alone); 0 if none.
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
    # Of a filtered bundle, what it selected by (the API's JSON of its
    # filter), None if not recorded (a bundle before it recorded one); and
    # whether the log's key signs it and the records' count and bytes (the
    # statement of the Export it was read by), else only bundle.json says it.
    filter: str | None = None
    selection_signed: bool = False

    @property
    def log_fault(self) -> str | None:
        """What the log could not do when the bundle was written, which says
        it had been changed (the bundle fails verification with it), or None."""
        return log_fault(
            self.unproven,
            refused=self.log_refused_to_sign,
            gaps=self.gaps,
            unaccounted=self.unaccounted,
        )


def log_fault(
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
