"""Bundles that prove a contiguous range of the log complete (ADR 0068): every
event with seq FIRST..LAST, records for those kept and leaves for those
retention removed, checked offline against a signed checkpoint; the Export
of a seq range they are read by; and the range of the events received in a
period (GetReceivedRange), so that "every event received in November" is one
bundle an auditor can check was not cut."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from click.testing import CliRunner

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    InvalidArgumentError,
    RpcFailedError,
    UnavailableError,
    build_event,
)
from sealtrail import _cli as cli_module
from sealtrail._bundle import SeqRange, received_range, write_bundle
from sealtrail._bundle_check import verify_bundle
from sealtrail._bundle_format import BundleError, bundle_time
from sealtrail._cli import main as cli
from sealtrail._errors import from_rpc_error
from sealtrail.tlog import Signer, Verifier, leaf_hash, open_note, sign_note
from sealtrail.v1 import audit_service_pb2
from sealtrail_server.api import received_range as received_range_api
from sealtrail_server.domain.access import Role
from tests.clock import Clock
from tests.conftest import SIGNING_KEY, ServerThread
from tests.integration.test_integrity import _CountingProofs
from tests.integration.test_retention import purge

VERIFIER = Signer.parse(SIGNING_KEY).verifier.text()
EVENTS = 40


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def clocked(migrated_database_url: str, clock: Clock) -> Iterator[ServerThread]:
    """A server on the test's clock, purging only when told to."""
    server = ServerThread(
        migrated_database_url, clock=clock, retention_interval=0, checkpoint_interval=0
    )
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def admin(clocked: ServerThread, tenant: str) -> Iterator[AuditClient]:
    with AuditClient(clocked.target, token=clocked.token(tenant)) as client:
        yield client


def record_events(client: AuditClient, count: int, *, label: str = "event") -> list[int]:
    results = client.record_batch(
        [
            build_event(action="range.test", actor_id="u", description=f"{label} {i}")
            for i in range(count)
        ]
    )
    return [result.event.seq for result in results]


@pytest.fixture
def logged(admin: AuditClient) -> AuditClient:
    """EVENTS events at seqs 1..EVENTS (the tenant's first)."""
    assert record_events(admin, EVENTS) == list(range(1, EVENTS + 1))
    return admin


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# --- Export of a seq range ---------------------------------------------------


def test_an_export_of_a_seq_range_holds_exactly_its_events(
    logged: AuditClient, tmp_path: Path
) -> None:
    manifest = logged.export(tmp_path / "range.ndjson", first_seq=10, last_seq=20)
    seqs = [json.loads(line)["seq"] for line in lines(tmp_path / "range.ndjson")]
    assert seqs == list(range(10, 21))
    assert (manifest.range_first_seq, manifest.range_last_seq) == (10, 20)
    assert (manifest.first_seq, manifest.last_seq, manifest.row_count) == (10, 20, 11)
    assert manifest.tree_size > EVENTS  # its checkpoint holds the export's own record
    recorded = logged.get_event(manifest.export_event_id)
    assert (recorded.details["first_seq"], recorded.details["last_seq"]) == (10, 20)
    # Without a range, as before: the manifest names none.
    whole = logged.export(tmp_path / "whole.ndjson")
    assert (whole.range_first_seq, whole.range_last_seq) == (0, 0)


def test_the_manifest_kept_beside_a_range_export_names_its_range(
    logged: AuditClient, tmp_path: Path
) -> None:
    """The manifest kept beside the file (FILE.manifest.json) named no range:
    a receiver of events 10..20 of a log of 41, its manifest saying
    `tree_size` 41, took it for every event up to 41 (that matched the
    filter), the events after 20 missing without a word."""
    out = tmp_path / "range.ndjson"
    logged.export(out, first_seq=10, last_seq=20, manifest_file=True)
    kept = json.loads((tmp_path / "range.ndjson.manifest.json").read_text(encoding="utf-8"))
    assert (kept["range_first_seq"], kept["range_last_seq"]) == (10, 20)
    assert (kept["first_seq"], kept["last_seq"], kept["row_count"]) == (10, 20, 11)
    # A whole log's names none, as before.
    logged.export(out, manifest_file=True)
    kept = json.loads((tmp_path / "range.ndjson.manifest.json").read_text(encoding="utf-8"))
    assert "range_first_seq" not in kept and "range_last_seq" not in kept


@pytest.mark.parametrize(
    ("first", "last", "field", "says"),
    [
        (20, 10, "first_seq", "greater than last_seq"),
        (5, 0, "last_seq", "with first_seq"),
        (0, 5, "first_seq", "1 or more"),
        (-1, 5, "first_seq", "1 or more"),
        (5, -3, "last_seq", "negative"),
    ],
)
def test_a_bad_seq_range_is_refused_naming_the_field(
    logged: AuditClient, tmp_path: Path, first: int, last: int, field: str, says: str
) -> None:
    """The server refuses it (INVALID_ARGUMENT on the field); the client now
    first, at the call, naming the same field (a ValueError, as its other
    checks of an argument)."""
    raw = logged._stub.Export(
        audit_service_pb2.ExportRequest(
            format=audit_service_pb2.EXPORT_FORMAT_NDJSON, first_seq=first, last_seq=last
        ),
        metadata=logged._metadata,
    )
    with pytest.raises(grpc.RpcError) as refused:
        next(raw)
    error = from_rpc_error(refused.value)
    assert isinstance(error, InvalidArgumentError)
    [(named, description)] = error.field_violations
    assert named == field and says in description
    with pytest.raises(ValueError, match=f"^{field}: must ") as refused_here:
        logged.export(tmp_path / "x.ndjson", first_seq=first, last_seq=last)
    assert not isinstance(refused_here.value, InvalidArgumentError)
    assert not (tmp_path / "x.ndjson").exists()


def test_a_seq_range_beyond_the_log_is_refused_with_its_size(
    logged: AuditClient, tmp_path: Path
) -> None:
    with pytest.raises(RpcFailedError) as refused:
        logged.export(tmp_path / "x.ndjson", first_seq=5, last_seq=EVENTS + 100)
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.reason == "BEYOND_LOG_SIZE"
    assert f"last_seq {EVENTS + 100} is beyond the log's size" in str(refused.value)
    with pytest.raises(BundleError, match=f"beyond the log's size {EVENTS}"):
        write_bundle(logged, tmp_path / "b", seq_range=SeqRange(5, EVENTS + 100))
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="first seq 9 is after the last 3"):
        SeqRange(9, 3)


# --- Range bundles -----------------------------------------------------------


def test_a_range_bundle_is_every_event_of_the_range_proven_complete(
    logged: AuditClient,
    client_for: Callable[..., AuditClient],
    tenant: str,
    tmp_path: Path,
) -> None:
    admin = _CountingProofs(logged)
    written = write_bundle(admin, tmp_path / "range", seq_range=SeqRange(10, 30))
    assert admin.proofs_asked == 2  # its ends' proofs: every other one computed here
    assert (written.count, written.first_seq, written.last_seq) == (21, 10, 30)
    assert written.seq_range == (10, 30) and not written.complete
    manifest = json.loads((tmp_path / "range" / "bundle.json").read_text())
    assert manifest["version"] == 3 and manifest["range"] == {"first_seq": 10, "last_seq": 30}

    verified = verify_bundle(tmp_path / "range", key=VERIFIER)
    assert verified.seq_range == (10, 30) and verified.count == 21
    assert verified.tree_size > 30 and not verified.trusted_own_keys

    # A reader may not export: the same bundle, proven record by record.
    reader = _CountingProofs(client_for(tenant, Role.READER))
    proven = write_bundle(reader, tmp_path / "proven", seq_range=SeqRange(10, 30))
    assert reader.proofs_asked == 21 and proven.seq_range == (10, 30)
    assert verify_bundle(tmp_path / "proven", key=VERIFIER).seq_range == (10, 30)


def test_a_range_of_the_whole_log_and_of_one_event_verify(
    logged: AuditClient, tmp_path: Path
) -> None:
    for first, last in [(1, EVENTS), (1, 1), (EVENTS, EVENTS), (17, 17)]:
        out = tmp_path / f"{first}-{last}"
        write_bundle(logged, out, seq_range=SeqRange(first, last))
        verified = verify_bundle(out, key=VERIFIER)
        assert verified.seq_range == (first, last) and verified.count == last - first + 1


def _drop(records: list[bytes], proofs: list[bytes]) -> None:
    del records[5], proofs[5]


def _drop_last(records: list[bytes], proofs: list[bytes]) -> None:
    del records[-1], proofs[-1]


def _repeat(records: list[bytes], proofs: list[bytes]) -> None:
    records.insert(5, records[5])
    proofs.insert(5, proofs[5])


def _alter(records: list[bytes], proofs: list[bytes]) -> None:
    records[5] = records[5].replace(b"event 14", b"event 99")


def _add_outside(records: list[bytes], proofs: list[bytes], outside: tuple[bytes, bytes]) -> None:
    records.append(outside[0])
    proofs.append(outside[1])


@pytest.mark.parametrize(
    ("change", "failure"),
    [
        (_drop, r"seq 15: missing \(record 6 has seq 16\)"),
        (_drop_last, "the bundle ends at seq 29 but its range ends at seq 30"),
        (_repeat, r"record 7 \(seq 15\): out of order or repeated"),
        (_alter, r"record 6 \(seq 15\): the inclusion proof leads to another root"),
        ("outside", r"record 22 \(seq 31\): outside the bundle's range 10\.\.30"),
        ("widened", "seq 9: missing"),
    ],
    ids=["deleted", "last-deleted", "duplicated", "altered", "out-of-range", "range-widened"],
)
def test_a_range_bundle_with_a_record_missing_repeated_altered_or_outside_fails(
    logged: AuditClient, tmp_path: Path, change: Any, failure: str
) -> None:
    write_bundle(logged, tmp_path / "b", seq_range=SeqRange(10, 30))
    records, proofs = (
        lines(tmp_path / "b" / "records.ndjson"),
        lines(tmp_path / "b" / "proofs.ndjson"),
    )
    manifest_path = tmp_path / "b" / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    if change == "outside":
        # seq 31, the next event, with its true proof at the bundle's size.
        proof = logged.get_inclusion_proof(seq=31, tree_size=manifest["tree_size"])
        entry = json.dumps(
            {"seq": 31, "proof": [base64.b64encode(h).decode() for h in proof.proof]}
        )
        _add_outside(records, proofs, (proof.record + b"\n", entry.encode() + b"\n"))
        manifest["count"] += 1
    elif change == "widened":
        manifest["range"]["first_seq"] = 9  # a claim the records do not bear out
    else:
        change(records, proofs)
        manifest["count"] = len(records)
    (tmp_path / "b" / "records.ndjson").write_bytes(b"".join(records))
    (tmp_path / "b" / "proofs.ndjson").write_bytes(b"".join(proofs))
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=failure):
        verify_bundle(tmp_path / "b", key=VERIFIER)


def test_a_range_bundle_cannot_pass_for_a_whole_log_or_a_partial_one(
    logged: AuditClient, tmp_path: Path
) -> None:
    write_bundle(logged, tmp_path / "b", seq_range=SeqRange(10, 30))
    manifest_path = tmp_path / "b" / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["complete"] = True
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="both the complete log and a range"):
        verify_bundle(tmp_path / "b", key=VERIFIER)
    for bad in ({"first_seq": 30, "last_seq": 10}, {"first_seq": 0, "last_seq": 5}, [10, 30]):
        manifest["complete"], manifest["range"] = False, bad
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match="'range'"):
            verify_bundle(tmp_path / "b", key=VERIFIER)


@pytest.mark.parametrize("version", [4, 12])
def test_a_bundle_of_a_newer_sealtrail_says_to_upgrade_the_client(
    logged: AuditClient, tmp_path: Path, version: int
) -> None:
    """A bundle.json of version 4 (a newer Sealtrail's) read `not a
    sealtrail-bundle of version 1 or 2 or 3`, as one malformed; and one of
    version `true` or `3.0` passed as a 1 or a 3, versions no writer gives."""
    write_bundle(logged, tmp_path / "b", seq_range=SeqRange(10, 12))
    manifest_path = tmp_path / "b" / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "version": version}))
    with pytest.raises(
        BundleError,
        match=rf"^bundle\.json: the bundle is a v{version}, made by a newer Sealtrail: upgrade the"
        r" client$",
    ):
        verify_bundle(tmp_path / "b", key=VERIFIER)
    for bad in ({"version": 0}, {"version": "4"}, {"version": True}, {"version": 3.0},
                {"format": "another-bundle"}):  # fmt: skip
        manifest_path.write_text(json.dumps({**manifest, **bad}))
        with pytest.raises(BundleError, match=r"^bundle\.json: not a sealtrail-bundle of version"):
            verify_bundle(tmp_path / "b", key=VERIFIER)


def test_a_checkpoint_with_extension_lines_is_read_as_its_log_size_and_root(
    logged: AuditClient, tmp_path: Path
) -> None:
    """C2SP's checkpoint may carry extension lines after its root, which a
    reader that does not know them passes over: a newer Sealtrail's
    checkpoint so extended, signed by the log's key, checks as its log,
    size and root; the same lines added without the key's signature fail."""
    write_bundle(logged, tmp_path / "b", seq_range=SeqRange(10, 12))
    saved = tmp_path / "b" / "checkpoint.txt"
    text, _ = open_note(saved.read_text(), [Verifier.parse(VERIFIER)])
    extended = sign_note(text + "sealtrail extension 1\n", Signer.parse(SIGNING_KEY))
    saved.write_text(extended)
    assert verify_bundle(tmp_path / "b", key=VERIFIER).seq_range == (10, 12)
    assert logged.check_checkpoint(extended, key=VERIFIER).consistent
    unsigned = extended.replace(text, text + "sealtrail extension 2\n", 1)
    saved.write_text(unsigned)
    with pytest.raises(BundleError, match="does not verify"):
        verify_bundle(tmp_path / "b", key=VERIFIER)


def test_a_range_across_events_retention_removed_verifies_with_their_kept_leaves(
    clocked: ServerThread, admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    logins = []
    for i in range(12):
        logins.append(admin.record(build_event(action="user.login", actor_id=f"u{i}")).event.seq)
        admin.record(
            build_event(action="user.login", actor_id=f"kept {i}", category="authentication")
        )
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(11)
    purge(clocked)
    first, last = logins[2], logins[9] + 1  # removed at both ends' neighbours, kept between
    written = write_bundle(admin, tmp_path / "b", seq_range=SeqRange(first, last))
    assert (written.count, written.purged) == (8, 8)
    verified = verify_bundle(tmp_path / "b", key=VERIFIER)
    assert (verified.count, verified.purged, verified.seq_range) == (8, 8, (first, last))
    # A removed leaf left out is a gap as a record left out is.
    purged = tmp_path / "b" / "purged.ndjson"
    kept = lines(purged)
    purged.write_bytes(b"".join(kept[:3] + kept[4:]))
    manifest = json.loads((tmp_path / "b" / "bundle.json").read_text())
    manifest["purged"] -= 1
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"seq {logins[5]}: missing"):
        verify_bundle(tmp_path / "b", key=VERIFIER)


# --- The range of a period, by receipt time ----------------------------------


def _start_of_next_month(now: datetime) -> datetime:
    return (
        now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)
    ).replace(day=1)


@pytest.mark.parametrize("kept_in_it", [0, 2])
def test_a_period_whose_first_events_retention_removed_is_proven_by_their_leaves(
    clocked: ServerThread, admin: AuditClient, clock: Clock, tmp_path: Path, kept_in_it: int
) -> None:
    """Events were received in the period, then retention removed them: a
    period it emptied was answered "no event was received from ... to ...",
    untrue, and one whose first events it removed started at the first event
    left, after a removed leaf, its start unproven though the leaves are
    kept. The range starts after the last event the log holds of before the
    period: every event received in it is within, its removed ones as their
    leaves, and both ends are proven."""

    def kept(actor: str) -> int:
        event = build_event(action="user.login", actor_id=actor, category="authentication")
        return admin.record(event).event.seq

    before = kept("kept before")
    clock.advance(seconds=60)
    since = clock()
    removed = [
        admin.record(build_event(action="user.login", actor_id=f"u{i}")).event.seq for i in range(4)
    ]
    during = [kept(f"kept {i}") for i in range(kept_in_it)]
    clock.advance(seconds=60)
    until = clock()
    after = kept("kept after")
    admin.set_retention_policy(10, categories={"authentication": "forever"})
    clock.advance(days=11)
    purge(clocked)

    found = received_range(admin, since=since, until=until)
    assert (
        (found.first, found.last) == (before + 1, after - 1) == (removed[0], (removed + during)[-1])
    )
    written = write_bundle(admin, tmp_path / "b", seq_range=found)
    assert (written.count, written.purged, written.unchecked_edges) == (kept_in_it, 4, ())
    verified = verify_bundle(tmp_path / "b", key=VERIFIER)
    assert (verified.count, verified.purged) == (kept_in_it, 4)
    assert (verified.seq_range, verified.unchecked_edges) == ((before + 1, after - 1), ())
    shown = CliRunner().invoke(cli, ["verify", str(tmp_path / "b"), "--key", VERIFIER])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("OK: "), shown.stdout
    # The writer and the verifier say the same of the seqs it holds.
    assert (written.first_seq, written.last_seq) == (verified.first_seq, verified.last_seq)
    assert (verified.first_seq, verified.last_seq) == (before + 1, after - 1)


def test_an_empty_bundle_names_no_seq(
    clocked: ServerThread, logged: AuditClient, tenant: str, tmp_path: Path
) -> None:
    """A filter that matched nothing: "wrote 0 records (seq 0..0)" and
    "OK: 0 records (seq 0..0) are in ...", a seq no log has."""
    out = tmp_path / "empty"
    connect = ["--server", clocked.target, "--token", clocked.token(tenant)]
    wrote = CliRunner().invoke(cli, [*connect, "bundle", "--action", "no.such", "-o", str(out)])
    assert wrote.exit_code == 0, wrote.output
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER])
    assert shown.exit_code == 0, shown.output
    for said in (wrote.stdout, shown.stdout):
        assert "seq 0" not in said and "0 records" in said, said


def test_a_received_range_bound_between_two_microseconds_is_the_later(
    client: AuditClient,
) -> None:
    """As a filter's bound is: 500 ns after an event's receipt, the event was
    received before it, and `bundle --received-since` so typed took it in
    (helper-210)."""
    before = client.record(action="doc.read", actor_id="u-before").event
    after = client.record(action="doc.read", actor_id="u-after").event
    received = before.received_at.ToDatetime(tzinfo=UTC)
    since = cli_module.parse_time(f"{received:%Y-%m-%dT%H:%M:%S}.{received.microsecond:06d}500Z")
    found = client.get_received_range(since=since)
    assert found.first_seq == after.seq


def test_a_month_by_receipt_is_exactly_the_events_received_in_it(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    before = record_events(admin, 3, label="before")
    month = _start_of_next_month(clock())
    clock.advance(seconds=(month - clock()).total_seconds())  # the month's first instant
    during = record_events(admin, 5, label="during")
    clock.advance(days=20)
    during += record_events(admin, 4, label="during")
    end = _start_of_next_month(clock())
    clock.advance(seconds=(end - clock()).total_seconds() - 0.001)  # its last millisecond
    during += record_events(admin, 2, label="during")
    clock.advance(seconds=0.001)
    after = record_events(admin, 3, label="after")

    found = received_range(admin, since=month, until=end)
    assert (found.first, found.last) == (during[0], during[-1]) == (before[-1] + 1, after[0] - 1)
    assert (found.received_since, found.received_until) == (month, end)
    written = write_bundle(admin, tmp_path / "month", seq_range=found)
    verified = verify_bundle(tmp_path / "month", key=VERIFIER)
    assert verified.seq_range == (during[0], during[-1]) and verified.count == len(during)
    assert (verified.received_since, verified.received_until) == (month, end)
    assert written.received_since == month
    descriptions = {
        json.loads(line)["description"] for line in lines(tmp_path / "month" / "records.ndjson")
    }
    assert descriptions == {f"during {i}" for i in range(5)} | {f"during {i}" for i in range(4)}
    # Its ends are checked by the events just outside it, received before and after.
    assert verified.unchecked_edges == ()
    edges = [json.loads(line) for line in lines(tmp_path / "month" / "edges.ndjson")]
    assert [edge["seq"] for edge in edges] == [before[-1], after[0]]


def test_a_months_range_cut_short_fails_by_the_time_of_the_event_after_it(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    """Who writes the bundle may claim a shorter range for the same month:
    each record left checks, but the event after the range was received
    within the month."""
    since = clock()
    record_events(admin, 6)
    clock.advance(seconds=60)
    until = clock()
    clock.advance(seconds=60)
    record_events(admin, 2)
    out = tmp_path / "month"
    write_bundle(admin, out, seq_range=received_range(admin, since=since, until=until))
    records, proofs = lines(out / "records.ndjson"), lines(out / "proofs.ndjson")
    cut, cut_proof = records.pop(), json.loads(proofs.pop())
    (out / "records.ndjson").write_bytes(b"".join(records))
    (out / "proofs.ndjson").write_bytes(b"".join(proofs))
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["range"]["last_seq"] = manifest["count"] = manifest["last_seq"] = 5
    (out / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"edges.ndjson line 1: seq 7 is not just outside"):
        verify_bundle(out, key=VERIFIER)
    # and with the record cut out put in as the event after the range:
    leaf = base64.b64encode(leaf_hash(cut.removesuffix(b"\n"))).decode()
    edge = {"seq": 6, "record": cut.decode().removesuffix("\n"), "leaf_hash": leaf}
    (out / "edges.ndjson").write_text(json.dumps({**edge, "proof": cut_proof["proof"]}) + "\n")
    with pytest.raises(
        BundleError, match=r"seq 6, just after the range, was received at .*, before"
    ):
        verify_bundle(out, key=VERIFIER)


def _period_bundle(admin: AuditClient, clock: Clock, out: Path) -> tuple[datetime, datetime]:
    """A bundle of the period in which seqs 1..6 were received (seqs 7 and 8
    after it), written honestly; the period."""
    since = clock()
    record_events(admin, 6)
    clock.advance(seconds=60)
    until = clock()
    clock.advance(seconds=60)
    record_events(admin, 2)
    write_bundle(admin, out, seq_range=received_range(admin, since=since, until=until))
    return since, until


def _claim_fewer(out: Path, kept: int) -> tuple[list[bytes], list[bytes]]:
    """The bundle at `out` cut to its first `kept` records, its range with
    them: what a writer hiding the period's last events hands over. The
    records and proofs it held before."""
    records, proofs = lines(out / "records.ndjson"), lines(out / "proofs.ndjson")
    (out / "records.ndjson").write_bytes(b"".join(records[:kept]))
    (out / "proofs.ndjson").write_bytes(b"".join(proofs[:kept]))
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["range"]["last_seq"] = manifest["count"] = manifest["last_seq"] = kept
    (out / "bundle.json").write_text(json.dumps(manifest))
    return records, proofs


def test_a_periods_bundle_without_the_event_after_its_range_fails(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    """The edges are the writer's to hand over: one left out, a month less
    its last week passed (helper-182). The log holds seq 5 at the bundle's
    size, so its time must be shown."""
    out = tmp_path / "month"
    _period_bundle(admin, clock, out)
    _claim_fewer(out, 4)
    (out / "edges.ndjson").write_text("")
    with pytest.raises(
        BundleError, match=r"edges.ndjson: seq 5, just after the range, is missing: the log holds"
    ):
        verify_bundle(out, key=VERIFIER)


def test_a_periods_end_edge_shown_as_removed_leaves_the_end_unproven(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    """An event of the period handed over as the edge "removed by retention":
    its kept leaf proves its place, not its time. The range is proven
    complete, not that it is the period's: verify says which end is
    unproven and exits 4, never OK."""
    out = tmp_path / "month"
    _period_bundle(admin, clock, out)
    records, proofs = _claim_fewer(out, 4)
    hidden = records[4].removesuffix(b"\n")
    edge = {
        "seq": 5,
        "record": None,
        "leaf_hash": base64.b64encode(leaf_hash(hidden)).decode(),
        "proof": json.loads(proofs[4])["proof"],
    }
    (out / "edges.ndjson").write_text(json.dumps(edge) + "\n")
    verified = verify_bundle(out, key=VERIFIER)
    assert verified.seq_range == (1, 4) and verified.unchecked_edges == ("end",)
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER])
    assert shown.exit_code == 4, shown.output
    assert shown.stdout.startswith("PERIOD UNPROVEN: 4 records (seq 1..4)")
    # No verdict line says OK (the text itself holds base64 roots, where "OK" may be).
    assert not [line for line in shown.stdout.splitlines() if line.startswith("OK")]
    assert "unproven: the range's end: seq 5, just after it, is shown as removed by retention" in (
        shown.stderr
    )


def test_a_periods_range_cut_at_an_older_checkpoint_leaves_the_end_unproven(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    """Every file genuine: the range up to the size of a checkpoint signed
    while the period ran. No event follows it in that log, so nothing shows
    the period had ended there (helper-182)."""
    since = clock()
    record_events(admin, 4)
    mid = admin.get_checkpoint(fresh=True)  # signed while the period runs
    assert mid.tree_size == 4
    clock.advance(seconds=10)
    record_events(admin, 2)  # seqs 5, 6: in the period too
    clock.advance(seconds=50)
    until = clock()
    clock.advance(seconds=60)
    record_events(admin, 2)
    out = tmp_path / "cut"
    write_bundle(admin, out, seq_range=SeqRange(1, 4, since, until))
    proofs = []
    for seq in range(1, 5):
        proof = admin.get_inclusion_proof(seq=seq, tree_size=4).proof
        entry = {"seq": seq, "proof": [base64.b64encode(h).decode() for h in proof]}
        proofs.append(json.dumps(entry) + "\n")
    (out / "proofs.ndjson").write_text("".join(proofs))
    (out / "checkpoint.txt").write_text(mid.note)
    (out / "edges.ndjson").write_text("")  # seq 5: not in a log of 4
    manifest = json.loads((out / "bundle.json").read_text())
    (out / "bundle.json").write_text(json.dumps({**manifest, "tree_size": 4}))
    verified = verify_bundle(out, key=VERIFIER)
    assert verified.unchecked_edges == ("end",)
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER])
    assert shown.exit_code == 4, shown.output
    assert "unproven: the range's end: no event follows seq 4 in the log at the checkpoint's" in (
        shown.stderr
    )


def test_a_bundle_of_a_period_nothing_followed_yet_says_its_end_is_unproven(
    clocked: ServerThread, admin: AuditClient, tenant: str, clock: Clock, tmp_path: Path
) -> None:
    """A writer's Export is recorded after the period, and proves its end.
    A reader cannot export, and its refusal and reads are recorded once a
    window (ADR 0060), here within the period: with no event after it, the
    end is not proven, and `bundle` says so (exit 4) rather than hand over
    what verify would not call OK. Once one follows, the same bundle proves
    both ends."""
    since = clock()
    record_events(admin, 3)
    token = clocked.token(tenant, Role.READER)
    with AuditClient(clocked.target, token=token) as reader:
        # Its refused Export and its reads by key recorded, at seqs 4 and 5:
        write_bundle(reader, tmp_path / "during", seq_range=SeqRange(1, 3))
        clock.advance(seconds=60)
        until = clock()
        found = received_range(reader, since=since, until=until)
        assert (found.first, found.last) == (1, 5)
        written = write_bundle(reader, tmp_path / "early", seq_range=found)
        assert written.unchecked_edges == ("end",)
        assert verify_bundle(tmp_path / "early", key=VERIFIER).unchecked_edges == ("end",)
        env = {"SEALTRAIL_SERVER": clocked.target, "SEALTRAIL_TOKEN": token}
        period = ["--received-since", since.isoformat(), "--received-until", until.isoformat()]
        shown = CliRunner().invoke(cli, ["bundle", *period, "-o", str(tmp_path / "cli")], env=env)
        assert shown.exit_code == 4, shown.output
        assert "(found for the events received from" in shown.stdout
        assert "its end not proven the period's)" in shown.stdout
        assert "unproven: the range's end: no event follows seq 5 in the log" in shown.stderr
        record_events(admin, 1)  # received after the period
        later = write_bundle(reader, tmp_path / "later", seq_range=found)
    assert later.unchecked_edges == ()
    assert verify_bundle(tmp_path / "later", key=VERIFIER).unchecked_edges == ()


def test_a_period_that_runs_backwards_is_refused(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    """since after until: both edge checks then hold for any middle part of
    the period, with its true neighbours as edges (helper-182)."""
    out = tmp_path / "month"
    _period_bundle(admin, clock, out)
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["received"] = {
        "since": manifest["received"]["until"],
        "until": manifest["received"]["since"],
    }
    (out / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="'received' must be a period: since before until"):
        verify_bundle(out, key=VERIFIER)


@pytest.mark.parametrize(
    "received",
    [
        {"since": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
        {"until": "9999-12-31T23:59:59-01:00"},  # after year 9999 in UTC
    ],
    ids=["since", "until"],
)
def test_a_period_beyond_what_a_time_holds_in_utc_is_a_failure_named_not_a_traceback(
    admin: AuditClient, clock: Clock, tmp_path: Path, received: dict[str, str]
) -> None:
    """A time with an offset that puts it outside years 1..9999 in UTC: taking
    it to UTC raised OverflowError, and `sealtrail verify` crashed with a
    traceback (helper-282)."""
    out = tmp_path / "month"
    _period_bundle(admin, clock, out)
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["received"].update(received)
    (out / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="'received' must be two UTC times"):
        verify_bundle(out, key=VERIFIER)
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER])
    assert isinstance(shown.exception, SystemExit) and shown.exit_code == 1
    assert "FAILED: bundle.json: 'received' must be two UTC times" in shown.output


def test_verify_received_demands_a_bundle_proving_that_period(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    """As --seq demands a range: a script that was promised November fails
    for a bundle of another period, or of none."""
    month = _start_of_next_month(clock())
    clock.advance(seconds=(month - clock()).total_seconds())
    record_events(admin, 3)
    end = _start_of_next_month(clock())
    clock.advance(seconds=(end - clock()).total_seconds())
    out = tmp_path / "month"
    write_bundle(admin, out, seq_range=received_range(admin, since=month, until=end))
    named, day = month.strftime("%Y-%m"), month.strftime("%Y-%m-%d")

    def verify(*options: str) -> Any:
        return CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER, *options])

    for held in (named, day):  # the period, or one within it
        shown = verify("--received", held)
        assert shown.exit_code == 0, shown.output
        assert shown.stdout.startswith("OK: 3 records (seq 1..3)")
    other = verify("--received", end.strftime("%Y-%m"))
    assert other.exit_code == 1
    assert other.stderr.startswith(
        f"FAILED: the bundle does not prove the events received from {end:%Y-%m-%d}"
    )
    assert "it proves the events received from" in other.stderr
    write_bundle(admin, tmp_path / "seqs", seq_range=SeqRange(1, 3))
    seqs = CliRunner().invoke(
        cli, ["verify", str(tmp_path / "seqs"), "--key", VERIFIER, "--received", named]
    )
    assert seqs.exit_code == 1
    assert "it proves no period (a range bundle of seq 1..3, chosen by seq)" in seqs.stderr


def test_the_range_of_a_period_is_refused_or_empty_as_it_should(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    now = clock()
    with pytest.raises(InvalidArgumentError) as ahead:
        admin.get_received_range(since=now - timedelta(days=1), until=now + timedelta(days=1))
    assert [name for name, _ in ahead.value.field_violations] == ["until"]
    assert "not ended" in ahead.value.field_violations[0][1]
    with pytest.raises(InvalidArgumentError) as backwards:
        admin.get_received_range(since=now, until=now - timedelta(hours=1))
    assert backwards.value.field_violations[0][0] == "until"
    with pytest.raises(InvalidArgumentError) as unset:  # as a client without a type sends it
        admin._call(admin._stub.GetReceivedRange, audit_service_pb2.GetReceivedRangeRequest())
    assert unset.value.field_violations[0][0] == "since"

    record_events(admin, 3)
    long_ago = now - timedelta(days=400), now - timedelta(days=399)
    empty = admin.get_received_range(since=long_ago[0], until=long_ago[1])
    assert empty.first_seq == empty.last_seq + 1 == 1
    with pytest.raises(BundleError, match="no event was received"):
        received_range(admin, since=long_ago[0], until=long_ago[1])
    # Until unset: up to now, the log's events all received since.
    so_far = admin.get_received_range(since=now - timedelta(minutes=1))
    assert (so_far.first_seq, so_far.last_seq) == (1, 3)


def _waiting(watch: psycopg.Connection[Any], query: str) -> bool:
    """Whether a session waits for a lock while running a statement like `query`."""
    row = watch.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE %s",
        [query],
    ).fetchone()
    return row is not None and row[0] > 0


def _until(condition: Callable[[], bool], *, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(0.02)


def test_the_range_of_a_period_ended_waits_for_a_batch_stamped_in_it_being_committed(
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    """The appender stamps received_at under the tenant's head lock, before a
    commit that can take long: a range read meanwhile ended before the batch,
    and the next period's started after it, a gap between the two
    (helper-182). The batch is held here, stamped within the period and
    not committed, while the period ends and its range is asked for."""
    record_events(admin, 3)  # seqs 1..3; batches of more than 64 take the head's lock
    since, until = clock() - timedelta(hours=1), clock() + timedelta(seconds=1)
    batch = [build_event(action="range.test", actor_id="u") for _ in range(100)]
    with (
        psycopg.connect(migrated_database_url, autocommit=True) as watch,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        with sql.transaction():
            sql.execute("LOCK TABLE tree_nodes IN SHARE MODE")  # the batch's commit waits
            sent = pool.submit(admin.record_batch, batch)
            _until(lambda: _waiting(watch, "%UPDATE chain_heads%") or sent.done())
            clock.advance(seconds=2)  # the period has ended, by the server's clock
            asked = pool.submit(admin.get_received_range, since=since, until=until)
            rewrite = "UPDATE chain_heads SET tree_size = tree_size%"  # the range's, held
            _until(lambda: _waiting(watch, rewrite) or asked.done())
        seqs = [result.event.seq for result in sent.result(timeout=30)]
        found = asked.result(timeout=30)
    assert seqs == list(range(4, 104))
    assert (found.first_seq, found.last_seq) == (1, 103)
    following = admin.get_received_range(since=until)
    assert following.first_seq == 104  # the next period meets it: no seq between


def test_the_range_of_a_period_holds_an_event_stamped_in_it_from_a_kept_head(
    admin: AuditClient,
    clock: Clock,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    """A small batch of a tenant whose head the process wrote last is written
    from the head it kept, with no lock (ADR 0024): stamped, then its one
    statement takes the head. Held between the two (by a lock on tree_nodes,
    which its statement takes first and the range's path never), a range read
    meanwhile found the head free, read a time after the stamp and ended
    before the event, which then committed received within the period: a
    range proven complete for it that left out an event received in it."""
    record_events(admin, 3)  # seqs 1..3; the tenant's head is kept
    since, until = clock() - timedelta(hours=1), clock() + timedelta(seconds=1)
    with (
        psycopg.connect(migrated_database_url, autocommit=True) as watch,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        with sql.transaction():
            sql.execute("LOCK TABLE tree_nodes IN SHARE MODE")  # the statement waits
            sent = pool.submit(admin.record, action="range.test", actor_id="u")
            _until(lambda: _waiting(watch, "WITH seen AS%UPDATE chain_heads%") or sent.done())
            assert not sent.done()
            clock.advance(seconds=2)  # the period has ended, by the server's clock
            found = admin.get_received_range(since=since, until=until)
        event = sent.result(timeout=30).event
    received = event.received_at.ToDatetime(tzinfo=UTC)
    in_period = since <= received < until
    assert in_period == (found.first_seq <= event.seq <= found.last_seq), (
        f"seq {event.seq}, received at {received} (the period ends at {until}), and the"
        f" period's range {found.first_seq}..{found.last_seq}"
    )
    following = admin.get_received_range(since=until)
    assert following.first_seq == found.last_seq + 1  # the next period meets it


def test_the_range_of_a_period_waits_for_a_held_head_at_most_a_while(
    clocked: ServerThread,
    admin: AuditClient,
    tenant: str,
    clock: Clock,
    sql: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A head held longer than an append takes (a process frozen mid-append,
    an erasure's DELETEs): UNAVAILABLE, saying when to ask again."""
    monkeypatch.setattr(received_range_api, "HEAD_WAIT_SECONDS", 0.2, raising=False)
    record_events(admin, 1)
    with (
        AuditClient(clocked.target, token=clocked.token(tenant), max_attempts=1) as once,
        sql.transaction(),
    ):
        sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [tenant])
        with pytest.raises(UnavailableError) as busy:
            once.get_received_range(since=clock() - timedelta(hours=1))
    assert busy.value.retry_after is not None and busy.value.retry_after > 0
    assert "an append of the log is taking long" in str(busy.value)


async def test_the_async_client_exports_a_range_and_finds_a_periods(
    clocked: ServerThread, tenant: str, clock: Clock, tmp_path: Path
) -> None:
    async with AsyncAuditClient(clocked.target, token=clocked.token(tenant)) as client:
        await client.record_batch(
            [build_event(action="range.test", actor_id="u") for _ in range(6)]
        )
        found = await client.get_received_range(since=clock() - timedelta(minutes=1))
        assert (found.first_seq, found.last_seq) == (1, 6)
        manifest = await client.export(tmp_path / "r.ndjson", first_seq=2, last_seq=4)
        assert (manifest.range_first_seq, manifest.range_last_seq, manifest.row_count) == (2, 4, 3)
        with pytest.raises(ValueError, match=r"^first_seq: must not be greater than last_seq"):
            await client.export(tmp_path / "x.ndjson", first_seq=4, last_seq=2)
        assert not (tmp_path / "x.ndjson").exists()


def _period_so_far(admin: AuditClient, clock: Clock, out: Path) -> datetime:
    """A bundle of the period so far (`--received-since`, until unset) whose
    first 3 events were received an hour before its last 3; its start."""
    record_events(admin, 2, label="before")
    clock.advance(seconds=1)
    since = clock()
    record_events(admin, 3, label="early")
    clock.advance(seconds=3600)
    record_events(admin, 3, label="late")
    write_bundle(admin, out, seq_range=received_range(admin, since=since))
    return since


def _claim_received(out: Path, **ends: datetime) -> None:
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["received"].update({end: bundle_time(when) for end, when in ends.items()})
    (out / "bundle.json").write_text(json.dumps(manifest))


def test_a_periods_bundle_holding_records_received_after_its_end_fails(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    """bundle.json is not signed: its `until` moved back to before the range's
    last events were received, the edges still checked (the one after the
    range received after the claimed end, and the true one), and verify said
    OK of a period the records inside contradict (helper-554)."""
    out = tmp_path / "q4"
    since = _period_so_far(admin, clock, out)
    assert verify_bundle(out, key=VERIFIER).unchecked_edges == ()
    _claim_received(out, until=since + timedelta(minutes=10))
    with pytest.raises(
        BundleError, match=r"record 4 \(seq 6\) was received at .*, after the period's end"
    ):
        verify_bundle(out, key=VERIFIER)
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER])
    assert shown.exit_code == 1, shown.output
    assert shown.stdout == ""
    assert shown.stderr.startswith("FAILED: record 4 (seq 6) was received at ")


def test_a_periods_bundle_holding_records_received_before_its_start_fails(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    """The same of `since` moved forward: the event before the range was
    still received before it, but the range's first ones too."""
    out = tmp_path / "q4"
    since = _period_so_far(admin, clock, out)
    _claim_received(out, since=since + timedelta(minutes=30))
    with pytest.raises(
        BundleError, match=r"record 1 \(seq 3\) was received at .*, before the period's start"
    ):
        verify_bundle(out, key=VERIFIER)


def test_records_a_moment_outside_the_period_are_a_clock_not_a_forgery(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    """Several server processes stamp events each by its own clock, which
    may be a little off another's (docs/streaming-and-export.md): within the
    tolerance, a record outside the period is taken for that, not a failure."""
    out = tmp_path / "q4"
    since = _period_so_far(admin, clock, out)
    last = json.loads(lines(out / "records.ndjson")[-1])["received_at"]
    _claim_received(out, until=datetime.fromisoformat(last) - timedelta(seconds=30))
    assert verify_bundle(out, key=VERIFIER).received_since == since


def test_verify_received_fails_a_bundle_holding_records_outside_the_period(
    admin: AuditClient, clock: Clock, tmp_path: Path
) -> None:
    """A bundle of a month and the next's first day, its period edited to
    the month alone: `verify --received` of the month passed it."""
    month = _start_of_next_month(clock())
    clock.advance(seconds=(month - clock()).total_seconds())
    record_events(admin, 3)
    end = _start_of_next_month(clock())
    clock.advance(seconds=(end - clock()).total_seconds() + 3600)
    record_events(admin, 2)  # an hour into the next month
    out = tmp_path / "month"
    write_bundle(admin, out, seq_range=received_range(admin, since=month))
    _claim_received(out, until=end)
    shown = CliRunner().invoke(
        cli, ["verify", str(out), "--key", VERIFIER, "--received", f"{month:%Y-%m}"]
    )
    assert shown.exit_code == 1, shown.output
    assert "OK" not in shown.stdout
    assert shown.stderr.startswith("FAILED: record 4 (seq 4) was received at ")
