"""The work behind issue 3's figures (signed checkpoints, proofs, VerifyLog,
offline bundles) and their in-run baselines. Each function here is the part
that is timed; `phases.run_once` times it and accounts for the CPU.

- The integrity log: one tenant of N events (RecordBatch of 1,000), with
  checkpoints signed on demand midway and at the end, so VerifyLog checks
  roots and proofs have a checkpoint's tree size to be served at.
- VerifyLog vs raw read: the server re-reading and re-hashing the log, against
  this process reading the same rows through a server-side cursor and hashing
  each record with hashlib, and nothing else.
- verify_bundle vs raw hashlib: the offline verifier over a complete bundle of
  the log, against SHA-256 of every line of records.ndjson and proofs.ndjson,
  read from disk line by line, as verify_bundle reads them (but as bytes).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from sealtrail import AuditClient, NotFoundError
from sealtrail._bundle import write_bundle
from sealtrail._bundle_check import verify_bundle
from sealtrail._bundle_format import PROOFS, RECORDS, BundleError
from sealtrail.v1 import event_pb2

from .events import EventFactory
from .phases import FigureFailed

MAX_BATCH = 1000  # the server's RecordBatch limit
CALL_TIMEOUT = 120.0  # one RecordBatch or GetCheckpoint while the log is made
LONG_CALL_TIMEOUT = 3600.0  # one VerifyLog over the whole log
_FETCH_ROWS = 5000  # rows per server-side cursor fetch, as VerifyLog fetches them

Work = Callable[[dict[str, Any]], int]  # does the timed work, may add notes; returns its count


@dataclass(frozen=True)
class IntegrityLog:
    """A tenant's log made for the integrity figures (not itself measured)."""

    tenant: str
    token: str
    size: int
    signed_sizes: list[int] = field(default_factory=list)  # checkpoints signed on demand
    seconds: float = 0.0  # how long making it took


def make_log(target: str, *, tenant: str, token: str, events: int, key_prefix: str) -> IntegrityLog:
    """Record `events` realistic events in RecordBatch calls of 1,000, signing
    a checkpoint (GetCheckpoint fresh) midway and at the end. The log also
    holds what came before them: the token's recorded creation."""
    started = time.perf_counter()
    factory = EventFactory(key_prefix)
    midway = events // 2
    signed: list[int] = []
    with AuditClient(target, token=token, timeout=CALL_TIMEOUT) as client:
        try:
            initial = client.get_checkpoint(fresh=True).tree_size
        except NotFoundError:  # an empty log has no checkpoint
            initial = 0
        recorded = 0
        while recorded < events:
            batch = [_event(factory) for _ in range(min(MAX_BATCH, events - recorded))]
            failed = [r.error for r in client.record_batch(batch) if r.error is not None]
            if failed:
                raise RuntimeError(f"RecordBatch refused {len(failed)} events: {failed[0]}")
            before, recorded = recorded, recorded + len(batch)
            if before < midway <= recorded < events:
                signed.append(client.get_checkpoint(fresh=True).tree_size)
        final = client.get_checkpoint(fresh=True)
    if final.tree_size != initial + events:
        raise RuntimeError(
            f"the log of {tenant} has {final.tree_size} events, not {initial} + {events}"
        )
    signed.append(final.tree_size)
    return IntegrityLog(tenant, token, final.tree_size, signed, time.perf_counter() - started)


def _event(factory: EventFactory) -> event_pb2.Event:
    event = event_pb2.Event()
    factory.make(event)
    return event


def verify_log(client: AuditClient, expected_size: int) -> Work:
    """One VerifyLog call over the whole log; fails unless it verified it all
    (each call records itself, so a later round finds the log longer)."""

    def work(notes: dict[str, Any]) -> int:
        answer = client.verify_log()
        notes["checkpoints_verified"] = answer.checkpoints_verified
        if not answer.ok:
            failure = answer.failure
            raise FigureFailed(f"VerifyLog {failure.reason} at seq {failure.seq}")
        if answer.verified_size < expected_size:
            raise FigureFailed(f"VerifyLog verified {answer.verified_size} events")
        return int(answer.verified_size)

    return work


def raw_read(conn: psycopg.Connection[Any], tenant: str) -> Work:
    """Baseline for VerifyLog: the same rows through a server-side cursor, and
    SHA-256 of each record (as its leaf hash), in this process."""

    def work(notes: dict[str, Any]) -> int:
        count = 0
        sha256 = hashlib.sha256
        with conn.transaction(), conn.cursor(name="bench_raw_read") as cursor:
            cursor.itersize = _FETCH_ROWS
            cursor.execute(
                "SELECT seq, record, leaf_hash FROM events WHERE tenant_id = %s ORDER BY seq",
                [tenant],
            )
            for _seq, record, _leaf in cursor:
                sha256(b"\x00" + record.encode()).digest()
                count += 1
        return count

    return work


def write(client: AuditClient, out: Path) -> Work:
    """write_bundle with no filter: the complete log from one Export, proofs computed here."""

    def work(notes: dict[str, Any]) -> int:
        summary = write_bundle(client, out)
        notes["bundle_bytes"] = sum(path.stat().st_size for path in out.iterdir())
        if not summary.complete or summary.count != summary.tree_size:
            raise FigureFailed(f"wrote {summary.count} of {summary.tree_size} records")
        return summary.count

    return work


def verify(path: Path, key: str) -> Work:
    """sealtrail's offline verifier over the bundle, trusting only `key`."""

    def work(notes: dict[str, Any]) -> int:
        try:
            summary = verify_bundle(path, key=key)
        except BundleError as error:
            raise FigureFailed(f"BundleError: {error}") from None
        return summary.count

    return work


def hash_bundle(path: Path) -> Work:
    """Baseline for verify_bundle: SHA-256 of each line of records.ndjson and
    proofs.ndjson, read from disk line by line. Counts records."""

    def work(notes: dict[str, Any]) -> int:
        sha256 = hashlib.sha256
        lines = {}
        for name in (RECORDS, PROOFS):
            lines[name] = 0
            with open(path / name, "rb") as file:
                for line in file:
                    sha256(line).digest()
                    lines[name] += 1
        notes["hashed_bytes"] = sum((path / name).stat().st_size for name in lines)
        return lines[RECORDS]

    return work
