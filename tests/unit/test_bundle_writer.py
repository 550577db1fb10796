"""The bundle writer's own behaviour, without a server: proofs asked in a
bounded window, answered in order."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import trace

from sealtrail import NotFoundError, SealtrailError, request_id
from sealtrail._bundle import in_order, write_bundle
from sealtrail._correlation import current_request_id
from sealtrail.v1 import event_pb2, integrity_pb2


def test_proofs_are_asked_a_bounded_window_ahead_and_answered_in_order() -> None:
    """pool.map submitted a future per seq before the first answer: about a
    kilobyte each, gigabytes for a log of millions."""
    drawn = 0

    def seqs() -> Iterator[int]:
        nonlocal drawn
        for seq in range(1, 20_001):
            drawn += 1
            yield seq

    answered = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for answer in in_order(pool, lambda seq: seq * 2, seqs(), ahead=16):
            answered.append(answer)
            assert drawn - len(answered) <= 16
    assert answered == [seq * 2 for seq in range(1, 20_001)]


def test_proofs_are_asked_in_the_callers_trace_and_request_id() -> None:
    """The pool's threads began with an empty context: a bundle written in a
    traced job (TRACEPARENT) or inside `sealtrail.request_id(...)` asked its
    proofs under neither."""
    parent = trace.NonRecordingSpan(
        trace.SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True)
    )

    def seen(seq: int) -> tuple[int, str | None]:
        return trace.get_current_span().get_span_context().trace_id, current_request_id()

    with (
        ThreadPoolExecutor(max_workers=4) as pool,
        trace.use_span(parent),
        request_id("5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"),
    ):
        answers = set(in_order(pool, seen, range(64), ahead=16))
    assert answers == {(0x4BF92F3577B34DA6A3CE929D0E0E4736, "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11")}


class _LogPurgedMeanwhile:
    """A log of three events whose second retention removes between the
    bundle's query and its proof; the third the log cannot prove."""

    def get_checkpoint(self, *, fresh: bool = False) -> integrity_pb2.SignedCheckpoint:
        return integrity_pb2.SignedCheckpoint(origin="o/t", tree_size=3, note="o/t\n3\nroot\n")

    def query(self, *args: Any, **kwargs: Any) -> Iterator[event_pb2.Event]:
        yield from (event_pb2.Event(seq=seq) for seq in (1, 2, 3))

    def get_inclusion_proof(
        self, *, seq: int, tree_size: int, include_purged: bool
    ) -> integrity_pb2.GetInclusionProofResponse:
        if seq == 2:
            raise NotFoundError("removed", code=grpc.StatusCode.NOT_FOUND, reason="PURGED")
        if seq == 3:
            raise NotFoundError("no such event", code=grpc.StatusCode.NOT_FOUND)
        return integrity_pb2.GetInclusionProofResponse(seq=seq, record=b'{"seq":1}', tree_size=3)

    def get_verifier_keys(self) -> list[integrity_pb2.VerifierKey]:
        return []

    def export(self, *args: Any, **kwargs: Any) -> None:
        # A reader's token: the filtered bundle is proven a record at a time.
        raise SealtrailError("denied", code=grpc.StatusCode.PERMISSION_DENIED)


def test_a_record_retention_removed_after_the_query_is_no_fault_of_the_log(
    tmp_path: Path,
) -> None:
    """It was listed as unproven: `sealtrail bundle` exited 1 and verification
    said the log no longer held it as it signed it, a false alarm for any
    bundle near a rule's cutoff. A record the log cannot produce still is."""
    source: Any = _LogPurgedMeanwhile()
    summary = write_bundle(
        source, tmp_path / "b", event_filter=event_pb2.EventFilter(actions=["a.b"]), workers=2
    )
    assert (summary.count, summary.unproven) == (1, (3,))
