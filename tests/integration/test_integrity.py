"""Checkpoints, proofs, VerifyLog and offline bundles against a real server,
and tampering by a database superuser, detected both online and offline
against a checkpoint signed before the tampering."""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any, Literal

import grpc
import psycopg
import pytest
import rfc8785
from click.testing import CliRunner
from psycopg import sql
from psycopg.types.json import Jsonb

from sealtrail import (
    AuditClient,
    NotFoundError,
    PermissionDeniedError,
    RpcFailedError,
    UnavailableError,
    build_event,
    build_filter,
)
from sealtrail._bundle import SeqRange, write_bundle
from sealtrail._bundle_check import verify_bundle
from sealtrail._bundle_format import BundleError
from sealtrail._cli import main as cli
from sealtrail.tlog import (
    RETENTION_ACTION,
    RETENTION_ACTOR,
    Checkpoint,
    PurgeStatement,
    RemovedLeaves,
    Signer,
    format_checkpoint,
    generate_signer_key,
    open_note,
    parse_checkpoint,
    purge_key,
    sign_note,
    verify_consistency,
)
from sealtrail_server.domain.access import Role
from sealtrail_server.domain.merkle import append_leaf, frontier_root
from tests.conftest import SIGNING_KEY, ServerThread
from tests.rfc6962 import leaf, mth, root_from_inclusion, roots_from_consistency

EVENTS = 40
VERIFIER = Signer.parse(SIGNING_KEY).verifier


def record_events(client: AuditClient, count: int, start: int = 0) -> None:
    client.record_batch(
        [
            build_event(action="integrity.test", actor_id="u", description=f"event {start + i}")
            for i in range(count)
        ]
    )


def stored_leaves(sql: psycopg.Connection[Any], tenant: str) -> list[bytes]:
    rows = sql.execute(
        "SELECT leaf_hash FROM events WHERE tenant_id = %s ORDER BY seq", [tenant]
    ).fetchall()
    return [bytes(row[0]) for row in rows]


@pytest.fixture
def logged(client: AuditClient, tenant: str) -> AuditClient:
    """A tenant with EVENTS events and a checkpoint signed at that size."""
    record_events(client, EVENTS)
    assert client.get_checkpoint(fresh=True).tree_size == EVENTS
    return client


def test_checkpoint_is_a_signed_c2sp_note_over_the_root(
    logged: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    checkpoint = logged.get_checkpoint()
    text, signers = open_note(checkpoint.note, [VERIFIER])
    parsed = parse_checkpoint(text)
    assert signers == [VERIFIER]
    assert parsed.origin == checkpoint.origin == f"sealtrail.test/log/{tenant}"
    assert parsed.tree_size == checkpoint.tree_size == EVENTS
    assert parsed.root_hash == checkpoint.root_hash == mth(stored_leaves(sql, tenant))
    assert checkpoint.note.splitlines()[-1].startswith("\u2014 sealtrail.test/log ")
    # Not grown: the same checkpoint, even when a fresh one is asked for.
    assert logged.get_checkpoint(fresh=True) == checkpoint
    assert logged.get_checkpoint(tree_size=EVENTS) == checkpoint


def test_inclusion_proofs_verify_independently(
    logged: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    root = logged.get_checkpoint().root_hash
    for seq in range(1, EVENTS + 1):
        # At the size signed: the first read records `audit_log.read_by_key`, and
        # the periodic checkpointer may sign the log with it before the next proof.
        answer = logged.get_inclusion_proof(seq=seq, tree_size=EVENTS)
        assert answer.leaf_hash == leaf(answer.record)
        assert answer.tree_size == EVENTS and answer.checkpoint.tree_size == EVENTS
        assert root_from_inclusion(seq - 1, EVENTS, answer.leaf_hash, list(answer.proof)) == root
    event = next(logged.query())
    by_id = logged.get_inclusion_proof(event_id=event.id)
    assert by_id.seq == event.seq and by_id.leaf_hash == event.leaf_hash


def test_a_proof_for_an_uncovered_event_signs_a_fresh_checkpoint(logged: AuditClient) -> None:
    record_events(logged, 3, start=EVENTS)
    answer = logged.get_inclusion_proof(seq=EVENTS + 2)
    assert answer.tree_size == answer.checkpoint.tree_size == EVENTS + 3


def test_consistency_proofs_between_checkpoints(logged: AuditClient) -> None:
    old = logged.get_checkpoint()
    record_events(logged, 25, start=EVENTS)
    new = logged.get_checkpoint(fresh=True)
    answer = logged.get_consistency_proof(old_size=old.tree_size)
    assert (answer.new_size, answer.new_root) == (new.tree_size, new.root_hash)
    assert answer.old_root == old.root_hash
    assert roots_from_consistency(
        old.tree_size, new.tree_size, old.root_hash, list(answer.proof)
    ) == (old.root_hash, new.root_hash)


def test_proof_requests_outside_the_log_are_refused(logged: AuditClient) -> None:
    from sealtrail import NotFoundError, RpcFailedError

    with pytest.raises(NotFoundError):
        logged.get_inclusion_proof(seq=EVENTS + 100)
    # Refused at the call as the server refuses them (its own refusal, of a seq
    # past any log's naming the read's record (helper-137), is in test_proof_edges).
    with pytest.raises(ValueError, match=r"^tree_size: must be at least the event's seq"):
        logged.get_inclusion_proof(seq=10, tree_size=5)
    for seq in (2**53, 2**63 - 1):
        with pytest.raises(ValueError, match=r"^seq: must be 1 to 9007199254740991, not "):
            logged.get_inclusion_proof(seq=seq)
    with pytest.raises(RpcFailedError):  # FAILED_PRECONDITION: beyond the log
        logged.get_consistency_proof(old_size=1, new_size=EVENTS + 1000)
    with pytest.raises(RpcFailedError) as beyond:  # to the latest checkpoint, unset new_size
        logged.get_consistency_proof(old_size=10**9)
    assert beyond.value.reason == "BEYOND_LOG_SIZE" and "old_size" in str(beyond.value)
    assert int(beyond.value.metadata["tree_size"]) >= EVENTS  # the log's size, for a program
    with pytest.raises(NotFoundError):
        logged.get_checkpoint(tree_size=7)


def test_a_proof_asked_just_ahead_of_the_log_is_not_taken_for_tampering_when_signed_meanwhile(
    logged: AuditClient,
    client_for: Callable[..., AuditClient],
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The log's size and its latest checkpoint were read in two statements:
    events appended and signed between them (by any process) made a checkpoint
    longer than the size read, and an intact log was reported cut back, DATA_LOSS
    "events were removed behind the service's back" (helper-139). The window is
    widened here: the first read of the size waits until the log has grown and
    been signed."""
    import asyncio

    import sealtrail_server.api.integrity as integrity_api

    read_size = integrity_api.tree_size
    size_read, grown = threading.Event(), threading.Event()

    async def size_then_wait(conn: Any, tenant_id: str) -> int:
        size = await read_size(conn, tenant_id)
        if tenant_id == tenant and not size_read.is_set():
            size_read.set()
            for _ in range(1000):  # at most 10 s
                if grown.is_set():
                    break
                await asyncio.sleep(0.01)
        return size

    monkeypatch.setattr(integrity_api, "tree_size", size_then_wait)
    answers: list[Any] = []
    asking = threading.Thread(
        target=lambda: answers.append(
            _outcome(
                lambda: client_for(tenant).get_consistency_proof(old_size=1, new_size=EVENTS + 3)
            )
        )
    )
    asking.start()
    try:
        assert size_read.wait(10)
        record_events(logged, 5, start=EVENTS)
        assert logged.get_checkpoint(fresh=True).tree_size == EVENTS + 5
    finally:
        grown.set()
        asking.join(10)
    [answer] = answers
    assert not isinstance(answer, Exception), answer
    assert answer.new_size == EVENTS + 3
    assert logged.verify_log().ok


def _outcome(call: Callable[[], Any]) -> Any:
    """What `call` returns, or the exception it raised."""
    try:
        return call()
    except Exception as error:
        return error


def test_verifier_keys_list_the_active_key(logged: AuditClient) -> None:
    keys = logged.get_verifier_keys()
    assert keys[0].active and keys[0].text == VERIFIER.text()


def test_verify_log_passes_on_an_untouched_log(logged: AuditClient) -> None:
    result = logged.verify_log()
    assert result.ok and result.verified_size == EVENTS and result.checkpoints_verified == 1


def test_verify_log_passes_while_events_are_being_recorded(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    """VerifyLog reads the head, the checkpoints and the log as one snapshot:
    events committed while it runs are neither a mismatch nor read."""
    admin, writer = client_for(tenant), client_for(tenant, Role.RECORDER)
    record_events(admin, 1000)
    record_events(admin, 1000, start=1000)
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            writer.record(action="doc.edit", actor_id="u-busy")

    background = threading.Thread(target=write)
    background.start()
    try:
        for _ in range(5):
            result = admin.verify_log()
            assert result.ok, result.failure
            assert result.verified_size >= 2000
    finally:
        stop.set()
        background.join(30)


def test_checkpoints_are_issued_periodically(
    migrated_database_url: str, tenant: str, server: ServerThread
) -> None:
    periodic = ServerThread(migrated_database_url, checkpoint_interval=0.2)
    try:
        with AuditClient(periodic.target, token=periodic.token(tenant)) as client:
            record_events(client, 5)
            for _ in range(100):
                try:
                    if client.get_checkpoint().tree_size == 5:
                        break
                except Exception:  # NOT_FOUND until the first one is signed
                    pass
                periodic.run(_sleep(0.05))
            assert client.get_checkpoint().tree_size == 5
    finally:
        periodic.close()


def test_a_log_with_events_and_no_checkpoint_yet_is_not_called_empty(
    migrated_database_url: str, tenant: str
) -> None:
    """GetCheckpoint between the first events and the first periodic
    checkpoint said "the log is empty" (helper-139). No periodic checkpoints
    here, so none is signed while the test asks."""
    unsigned = ServerThread(migrated_database_url, checkpoint_interval=0)
    try:
        with AuditClient(unsigned.target, token=unsigned.token(tenant)) as client:
            with pytest.raises(NotFoundError, match="the log is empty"):
                client.get_checkpoint()
            record_events(client, 3)
            with pytest.raises(NotFoundError) as unsigned_yet:
                client.get_checkpoint()
            assert "no checkpoint has been signed yet" in str(unsigned_yet.value)
            assert "empty" not in str(unsigned_yet.value)
            assert client.get_checkpoint(fresh=True).tree_size == 3
    finally:
        unsigned.close()


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_bundles_verify_offline(logged: AuditClient, tmp_path: Path) -> None:
    full = write_bundle(logged, tmp_path / "full")
    assert full.complete and full.count == EVENTS + 1  # and the export it was read by
    part = write_bundle(
        logged, tmp_path / "part", event_filter=build_filter(text="event 7 or event 33")
    )
    assert not part.complete and (part.count, part.first_seq, part.last_seq) == (2, 8, 34)
    for name in ("full", "part"):
        summary = verify_bundle(tmp_path / name, key=VERIFIER.text())
        assert summary.signed_by == [VERIFIER.text()] and not summary.trusted_own_keys
    assert verify_bundle(tmp_path / "part").trusted_own_keys


class _CountingProofs:
    """A client that counts the GetInclusionProof calls made through it."""

    def __init__(self, client: AuditClient) -> None:
        self._client = client
        self.proofs_asked = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_inclusion_proof(self, **request: Any) -> Any:
        self.proofs_asked += 1
        return self._client.get_inclusion_proof(**request)


def test_a_complete_bundle_from_one_export_is_the_one_proven_record_by_record(
    logged: AuditClient,
    client_for: Callable[..., AuditClient],
    tenant: str,
    tmp_path: Path,
) -> None:
    admin = _CountingProofs(logged)
    reader = _CountingProofs(client_for(tenant, Role.READER))
    # The reader's bundle asks for an Export first; its refusal is recorded
    # (audit_log.access_denied) once a window: here, before both bundles.
    with pytest.raises(PermissionDeniedError):
        list(reader.export_stream())
    exported = write_bundle(admin, tmp_path / "exported")
    last = json.loads((tmp_path / "exported" / "records.ndjson").read_bytes().splitlines()[-1])
    assert last["action"] == "audit_log.exported"  # read by one Export,
    assert admin.proofs_asked == 0  # and every proof computed here
    # A reader may not export: its bundle is proven record by record by the
    # server, at the same size, and holds the same bytes.
    proven = write_bundle(reader, tmp_path / "proven")
    assert reader.proofs_asked == proven.count
    assert (proven.tree_size, proven.count) == (exported.tree_size, exported.count)
    for name in ("records.ndjson", "proofs.ndjson", "checkpoint.txt"):
        assert (tmp_path / "exported" / name).read_bytes() == (
            tmp_path / "proven" / name
        ).read_bytes(), name
    # The events, the reader's refused Export and the admin's export.
    assert verify_bundle(tmp_path / "exported", key=VERIFIER.text()).count == EVENTS + 2


def test_a_bundle_is_still_written_when_the_export_rate_is_spent(
    migrated_database_url: str, tenant: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = ServerThread(migrated_database_url, export_rate_limit=1)
    request.addfinalizer(server.close)
    with AuditClient(server.target, token=server.token(tenant)) as client:
        record_events(client, 5)
        write_bundle(client, tmp_path / "first")  # the one export the minute allows
        second = write_bundle(client, tmp_path / "second")
    exports = [
        json.loads(line)["action"] == "audit_log.exported"
        for line in (tmp_path / "second" / "records.ndjson").read_bytes().splitlines()
    ]
    assert second.complete and exports.count(True) == 1  # the first bundle's, proven
    # The 5 events, the first bundle's export, and the refusal of the second's
    # for the rate (ADR 0153), recorded before the bundle fell back to proofs.
    assert verify_bundle(tmp_path / "second", key=VERIFIER.text()).count == 7


class _KeysUnavailable:
    """A client whose server goes away after the records, before the keys."""

    def __init__(self, client: AuditClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_verifier_keys(self) -> Any:
        raise UnavailableError("the server went away", code=grpc.StatusCode.UNAVAILABLE)


@pytest.mark.parametrize("existing", [False, True], ids=["new-directory", "empty-directory"])
def test_a_bundle_that_fails_midway_leaves_nothing(
    logged: AuditClient, tmp_path: Path, existing: bool
) -> None:
    """Records and proofs without a manifest were left behind, and the rerun
    then refused the directory as not empty."""
    out = tmp_path / "bundle"
    if existing:
        out.mkdir()
    with pytest.raises(UnavailableError):
        write_bundle(_KeysUnavailable(logged), out)  # type: ignore[arg-type]
    assert out.exists() == existing and (not existing or not any(out.iterdir()))
    write_bundle(logged, out)  # the rerun
    assert verify_bundle(out, key=VERIFIER.text()).complete


def test_a_bundle_signed_by_another_key_is_refused(logged: AuditClient, tmp_path: Path) -> None:
    from sealtrail.tlog import generate_signer_key

    write_bundle(logged, tmp_path / "b")
    stranger = generate_signer_key("sealtrail.test/log").verifier.text()
    with pytest.raises(BundleError, match="checkpoint"):
        verify_bundle(tmp_path / "b", key=stranger)


def test_an_empty_list_of_trusted_keys_is_refused_not_taken_for_none(
    logged: AuditClient, tmp_path: Path
) -> None:
    """Keys read from an empty setting (`os.environ.get("KEYS", "").split()`):
    taken for no key at all, the bundle was checked against its own keys, and
    a forged bundle that carried its forger's key verified (helper-137)."""
    write_bundle(logged, tmp_path / "b")
    for empty in ([], ()):
        with pytest.raises(BundleError, match="verifier key: none given"):
            verify_bundle(tmp_path / "b", key=empty)


def test_an_edited_bundle_names_the_record(logged: AuditClient, tmp_path: Path) -> None:
    write_bundle(logged, tmp_path / "b", event_filter=build_filter(actions="integrity.test"))
    records = tmp_path / "b" / "records.ndjson"
    lines = records.read_bytes().splitlines(keepends=True)
    lines[12] = lines[12].replace(b"event 12", b"event 99")
    records.write_bytes(b"".join(lines))
    with pytest.raises(BundleError, match=r"^record 13 \(seq 13\)"):
        verify_bundle(tmp_path / "b", key=VERIFIER.text())


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        ({"first_seq": 1}, "bundle.json says its records run seq 1..34, they run seq 8..34"),
        ({"last_seq": EVENTS}, f"bundle.json says its records run seq 8..{EVENTS}, they run"),
        ({"first_seq": 34, "last_seq": 8}, "says its records run seq 34..8, they run seq 8..34"),
        ({"first_seq": "8"}, "'first_seq' must be a seq"),
        ({"last_seq": None}, "'last_seq' must be a seq"),
    ],
    ids=["first-earlier", "last-later", "reversed", "first-text", "last-missing"],
)
def test_a_bundle_json_claiming_seqs_its_records_do_not_run_is_refused(
    logged: AuditClient, tmp_path: Path, claim: dict[str, Any], message: str
) -> None:
    """bundle.json's first_seq and last_seq were never checked: a partial
    bundle of seqs 8 and 34 that said it ran 1..40 verified (helper-282)."""
    write_bundle(logged, tmp_path / "b", event_filter=build_filter(text="event 7 or event 33"))
    path = tmp_path / "b" / "bundle.json"
    manifest = json.loads(path.read_text())
    assert (manifest["first_seq"], manifest["last_seq"]) == (8, 34)
    path.write_text(json.dumps({**manifest, **claim}))
    with pytest.raises(BundleError, match=re.escape(message)):
        verify_bundle(tmp_path / "b", key=VERIFIER.text())


@pytest.mark.parametrize(
    "proof",
    [..., None, 5, "AAAA", [5], [None], ["=="], ["not base64!"], {"a": "AAAA"}],
    ids=["missing", "null", "number", "text", "numbers", "nulls", "padding", "not-base64", "map"],
)
def test_a_proof_that_is_no_list_of_hashes_is_named_so(
    logged: AuditClient, tmp_path: Path, proof: Any
) -> None:
    """The reason was Python's own: 'NoneType' object is not iterable,
    argument should be a bytes-like object or ASCII string, not 'int', or
    the bare key 'proof' (helper-282)."""
    write_bundle(logged, tmp_path / "b")
    path = tmp_path / "b" / "proofs.ndjson"
    lines = path.read_text().splitlines(keepends=True)
    entry = {"seq": 3} if proof is ... else {"seq": 3, "proof": proof}
    lines[2] = json.dumps(entry) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(BundleError) as failed:
        verify_bundle(tmp_path / "b", key=VERIFIER.text())
    assert str(failed.value) == (
        "record 3 (seq 3): proofs.ndjson line 3 holds no proof: a list of base64 hashes"
    )


@pytest.mark.parametrize("file", ["records.ndjson", "proofs.ndjson", "purged.ndjson"])
def test_a_line_longer_than_any_record_is_refused_without_reading_it_whole(
    logged: AuditClient, tmp_path: Path, file: str
) -> None:
    """A bundle is checked a line at a time, in memory that does not grow
    with it; but a line was read whole, however long: a forged bundle of one
    line of gigabytes took the verifying machine's memory (helper-282)."""
    import tracemalloc

    write_bundle(logged, tmp_path / "b")
    path = tmp_path / "b" / file
    with open(path, "wb") as forged:  # 64 MiB without a newline
        for _ in range(64):
            forged.write(b"0" * (1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match=rf"^{file} line 1: longer than 4 MiB, which no"):
            verify_bundle(tmp_path / "b", key=VERIFIER.text())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB at the peak"


def test_a_removed_leaf_whose_seq_is_true_is_not_taken_for_seq_1(
    logged: AuditClient, tmp_path: Path
) -> None:
    """JSON's true is a Python int: a removed leaf at seq `true` was checked
    as seq 1 (and named "purged seq True"), where every other seq of a bundle
    must be a number (helper-282)."""
    write_bundle(logged, tmp_path / "b")
    leaf = base64.b64encode(bytes(32)).decode()
    (tmp_path / "b" / "purged.ndjson").write_text(
        json.dumps({"seq": True, "leaf_hash": leaf, "proof": []}) + "\n"
    )
    with pytest.raises(BundleError, match=r"^purged\.ndjson line 1: not a purged leaf$"):
        verify_bundle(tmp_path / "b", key=VERIFIER.text())


def test_a_bundle_whose_proofs_are_cut_short_says_the_proof_is_missing(
    logged: AuditClient, tmp_path: Path
) -> None:
    """It said "the record says seq 40 but sits at seq None of the log", as
    if the record had moved (helper-137)."""
    write_bundle(logged, tmp_path / "b")
    proofs = tmp_path / "b" / "proofs.ndjson"
    proofs.write_text("".join(proofs.read_text().splitlines(keepends=True)[:-2]))
    with pytest.raises(BundleError) as failed:
        verify_bundle(tmp_path / "b", key=VERIFIER.text())
    assert str(failed.value) == (
        f"record {EVENTS} (seq {EVENTS}): no proof for it in proofs.ndjson (cut short?)"
    )


# --- Tampering by a database superuser -------------------------------------------


# The name of the key a test registers as a superuser would (its rows removed after).
ATTACKER_KEY_NAME = "evil.example/key"


@pytest.fixture
def tamper(migrated_database_url: str, tenant: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser session with triggers off (session_replication_role = replica)."""
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        yield conn
        # The rows the signer set aside as forged (ADR 0159) go with the forger.
        conn.execute("DELETE FROM checkpoints_refused WHERE tenant_id = %s", [tenant])
        # Rows forged beyond a log (at 10^12) and the key an attacker registered
        # leave the database every worker shares: the session servers' signers
        # logged and counted such rows every pass, `tenant list` printed them, and
        # every tenant's verifier keys listed the key (ci-s59a).
        conn.execute("DELETE FROM checkpoints WHERE tree_size >= %s", [10**12])
        conn.execute("DELETE FROM signing_keys WHERE key_name = %s", [ATTACKER_KEY_NAME])


def rewrite_record(conn: psycopg.Connection[Any], tenant: str, seq: int, *, leaf_too: bool) -> None:
    (record,) = conn.execute(
        "SELECT record FROM events WHERE tenant_id = %s AND seq = %s", [tenant, seq]
    ).fetchone()  # type: ignore[misc]
    forged = record.replace(f"event {seq - 1}", "event forged")
    assert forged != record
    conn.execute(
        "UPDATE events SET record = %s WHERE tenant_id = %s AND seq = %s", [forged, tenant, seq]
    )
    if leaf_too:
        conn.execute(
            "UPDATE events SET leaf_hash = %s WHERE tenant_id = %s AND seq = %s",
            [leaf(forged.encode()), tenant, seq],
        )


def rebuild_tree(conn: psycopg.Connection[Any], tenant: str) -> None:
    """Recompute every node and the head from the (tampered) leaves, as a
    careful attacker would."""
    leaves = [
        bytes(row[0])
        for row in conn.execute(
            "SELECT leaf_hash FROM events WHERE tenant_id = %s ORDER BY seq", [tenant]
        )
    ]
    conn.execute("DELETE FROM tree_nodes WHERE tenant_id = %s", [tenant])
    frontier: list[bytes] = []
    for index, leaf_hash in enumerate(leaves):
        for level, node_index, node in append_leaf(frontier, index, leaf_hash):
            conn.execute(
                "INSERT INTO tree_nodes (tenant_id, level, idx, hash) VALUES (%s, %s, %s, %s)",
                [tenant, level, node_index, node],
            )
    conn.execute(
        "UPDATE chain_heads SET tree_size = %s, root_hash = %s, frontier = %s WHERE tenant_id = %s",
        [len(leaves), frontier_root(frontier), b"".join(frontier), tenant],
    )


def change_field(conn: psycopg.Connection[Any], tenant: str) -> None:
    rewrite_record(conn, tenant, 13, leaf_too=False)


def change_record_and_leaf(conn: psycopg.Connection[Any], tenant: str) -> None:
    rewrite_record(conn, tenant, 13, leaf_too=True)


def swap_records(conn: psycopg.Connection[Any], tenant: str) -> None:
    rows = {
        seq: (record, leaf_hash)
        for seq, record, leaf_hash in conn.execute(
            "SELECT seq, record, leaf_hash FROM events WHERE tenant_id = %s AND seq IN (13, 20)",
            [tenant],
        )
    }
    for seq, other in ((13, 20), (20, 13)):
        conn.execute(
            "UPDATE events SET record = %s, leaf_hash = %s WHERE tenant_id = %s AND seq = %s",
            [*rows[other], tenant, seq],
        )


def delete_one(conn: psycopg.Connection[Any], tenant: str) -> None:
    conn.execute("DELETE FROM events WHERE tenant_id = %s AND seq = 13", [tenant])


def hide_as_removed(conn: psycopg.Connection[Any], tenant: str) -> None:
    """Replace an event by its leaf, as retention leaves one: every proof still
    checks; only retention's own records, which count what it removed, tell."""
    [(leaf_hash,)] = conn.execute(
        "DELETE FROM events WHERE tenant_id = %s AND seq = 13 RETURNING leaf_hash", [tenant]
    ).fetchall()
    conn.execute(
        "INSERT INTO tree_nodes (tenant_id, level, idx, hash) VALUES (%s, 0, 12, %s)",
        [tenant, leaf_hash],
    )


def hide_as_purged(conn: psycopg.Connection[Any], tenant: str) -> None:
    """`hide_as_removed`, with the summary a pass keeps of a purge it has not
    recorded yet: not sealed by the service, it accounts for nothing (helper-84)."""
    hide_as_removed(conn, tenant)
    summary = {"purged": 1, "first_seq": 13, "last_seq": 13, "rules": [{"default": {}}]}
    conn.execute(
        "INSERT INTO retention_pending_purges (tenant_id, purge_id, summary, mac, updated_at)"
        " VALUES (%s, gen_random_uuid(), %s, %s, now())",
        [tenant, json.dumps(summary), bytes(32)],
    )


def hide_under_a_forged_purge(conn: psycopg.Connection[Any], tenant: str) -> None:
    """`hide_as_removed`, with retention's record of its purge appended to the
    log, the tree extended over it, as the appender would: every field and its
    statement right (the log, the purge, the leaf's digest), but signed by a
    key of the attacker's, named as the log's key is."""
    hide_as_removed(conn, tenant)
    [(hidden,)] = conn.execute(
        "SELECT hash FROM tree_nodes WHERE tenant_id = %s AND level = 0 AND idx = 12", [tenant]
    ).fetchall()
    removed = RemovedLeaves()
    removed.add(13, bytes(hidden))
    [(note,)] = conn.execute(
        "SELECT note FROM checkpoints WHERE tenant_id = %s LIMIT 1", [tenant]
    ).fetchall()
    origin, purge_id = note.split("\n", 1)[0], str(uuid.uuid4())
    forger = generate_signer_key(Signer.parse(SIGNING_KEY).name)
    statement = sign_note(PurgeStatement(origin, purge_id, removed).text(), forger)
    append_forged(
        conn,
        tenant,
        action=RETENTION_ACTION,
        actor=RETENTION_ACTOR,
        details={"purged": 1, "first_seq": 13, "last_seq": 13, "statement": statement},
        idempotency_key=purge_key(purge_id),
    )


def append_forged(conn: psycopg.Connection[Any], tenant: str, **fields: Any) -> None:
    """A record appended to the log by hand: the latest one's, with `fields`
    and the next seq, its row, its tree nodes and the head, as the appender
    writes them."""
    [(size, frontier)] = conn.execute(
        "SELECT tree_size, frontier FROM chain_heads WHERE tenant_id = %s", [tenant]
    ).fetchall()
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        [row] = cursor.execute(
            "SELECT * FROM events WHERE tenant_id = %s ORDER BY seq DESC LIMIT 1", [tenant]
        ).fetchall()
    record = {**json.loads(row["record"]), **fields, "seq": size + 1, "id": str(uuid.uuid4())}
    text = rfc8785.dumps(record).decode()
    del row["search_doc"]  # generated
    row.update(seq=size + 1, id=record["id"], record=text, leaf_hash=leaf(text.encode()))
    row.update({name: fields[name] for name in ("action", "idempotency_key") if name in row})
    columns = sql.SQL(", ").join(map(sql.Identifier, row))
    conn.execute(
        sql.SQL("INSERT INTO events ({}) VALUES ({})").format(
            columns, sql.SQL(", ").join(sql.Placeholder() * len(row))
        ),
        [Jsonb(value) if isinstance(value, dict) else value for value in row.values()],
    )
    nodes = [bytes(frontier[i : i + 32]) for i in range(0, len(frontier), 32)]
    for level, index, node in append_leaf(nodes, size, row["leaf_hash"]):
        conn.execute(
            "INSERT INTO tree_nodes (tenant_id, level, idx, hash) VALUES (%s, %s, %s, %s)",
            [tenant, level, index, node],
        )
    conn.execute(
        "UPDATE chain_heads SET tree_size = %s, root_hash = %s, frontier = %s WHERE tenant_id = %s",
        [size + 1, frontier_root(nodes), b"".join(nodes), tenant],
    )


def truncate_tail(conn: psycopg.Connection[Any], tenant: str) -> None:
    conn.execute("DELETE FROM events WHERE tenant_id = %s AND seq > 30", [tenant])
    rebuild_tree(conn, tenant)


def rewrite_consistently(conn: psycopg.Connection[Any], tenant: str) -> None:
    rewrite_record(conn, tenant, 13, leaf_too=True)
    rebuild_tree(conn, tenant)


@pytest.mark.parametrize(
    ("tampering", "reason", "seqs", "offline"),
    [
        # The server refuses to prove a record its leaf does not hash: the
        # bundle goes without it.
        (change_field, "LEAF_MISMATCH", {13}, r"^seq 13: missing"),
        # Nor one whose path does not lead to the checkpoint beside it (helper-298).
        (change_record_and_leaf, "PAIR_MISMATCH", {13}, r"^seq 13: missing"),
        # Nor one that names another seq (helper-219).
        (swap_records, "RECORD_MISPLACED", {13}, r"^seq 13: missing"),
        (delete_one, "RECORD_MISSING", {13}, r"^seq 13: missing"),
        # A leaf kept as purged is proven so (the proof proves a leaf, not who
        # removed it): the bundle's ledger counts what retention's statements
        # account for, exactly (ADR 0158).
        (
            hide_as_removed,
            "REMOVALS_UNACCOUNTED",
            {13},
            r"^the log holds the leaves of 1 removed event, but retention's statements"
            r" account for 0",
        ),
        (
            hide_as_purged,
            "REMOVALS_UNACCOUNTED",
            {13},
            r"^the log holds the leaves of 1 removed event, but retention's statements"
            r" account for 0",
        ),
        (
            hide_under_a_forged_purge,
            "REMOVALS_UNACCOUNTED",
            {13},
            r"^the log holds the leaves of 1 removed event, but retention's statements"
            r" account for 0: .*; 1 retention record bears no statement signed by a trusted key",
        ),
        # Nothing can be proven at the signed size once its tail is gone. The
        # log ends at 32: the 30 kept, the bundle's export, recorded before it
        # found the log could not be signed, and its first proof read by key.
        (truncate_tail, "RECORD_MISSING", {33}, r"^seq 1: missing"),
        (rewrite_consistently, "ROOT_MISMATCH", {EVENTS}, r"^seq 1: missing"),
    ],
    ids=[
        "field",
        "record+leaf",
        "swap",
        "delete",
        "hide-as-removed",
        "hide-as-purged",
        "hide-under-forged-purge",
        "truncate",
        "rewrite-all",
    ],
)
def test_tampering_is_detected_online_and_offline(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    tmp_path: Path,
    tampering: Callable[[psycopg.Connection[Any], str], None],
    reason: str,
    seqs: set[int],
    offline: str,
) -> None:
    signed_before = logged.get_checkpoint()
    tampering(tamper, tenant)

    # An auditor's full bundle, written after the tampering, against the
    # checkpoint signed before it or one that extends it (the bundle's own
    # export is recorded, and signed where the log still extends its last
    # checkpoint): the log never signs over the tampering.
    write_bundle(logged, tmp_path / "after")
    note = (tmp_path / "after" / "checkpoint.txt").read_text()
    if note != signed_before.note:
        bundled, before = (
            parse_checkpoint(c.split("\n\n")[0] + "\n") for c in (note, signed_before.note)
        )
        assert bundled.tree_size > before.tree_size
        verify_consistency(
            old_size=before.tree_size,
            new_size=bundled.tree_size,
            old_root=before.root_hash,
            new_root=bundled.root_hash,
            proof=logged.get_consistency_proof(
                old_size=before.tree_size, new_size=bundled.tree_size
            ).proof,
        )
    with pytest.raises(BundleError, match=offline):
        verify_bundle(tmp_path / "after", key=VERIFIER.text())

    # VerifyLog (which records itself, so it comes after the bundle here).
    result = logged.verify_log()
    assert not result.ok
    assert (result.failure.reason, result.failure.seq in seqs) == (reason, True), result.failure


@pytest.mark.parametrize(
    ("tampering", "role", "fault"),
    [
        (change_field, Role.ADMIN, r"could not prove 1 of its records \(seq 13\)"),
        (change_field, Role.READER, r"could not prove 1 of its records \(seq 13\)"),
        (delete_one, Role.ADMIN, r"could not prove \d+ of its records \(seq 13\b"),
        (hide_as_removed, Role.ADMIN, r"the log holds the leaves of 1 removed event"),
    ],
    ids=["field-admin", "field-reader", "delete", "hide-as-removed"],
)
def test_sealtrail_bundle_fails_a_complete_bundle_of_a_log_it_could_not_prove(
    logged: AuditClient,
    server: ServerThread,
    tenant: str,
    tamper: psycopg.Connection[Any],
    tmp_path: Path,
    tampering: Callable[[psycopg.Connection[Any], str], None],
    role: Role,
    fault: str,
) -> None:
    """It said "wrote 20 records" and exited 0, though it had left out the
    record it could not prove, or kept leaves no retention statement accounts
    for, and knew verification would fail; a filtered bundle of the same log
    exited 1 (helper-197). The complete bundle is written all the same, for
    verification to name what is wrong."""
    tampering(tamper, tenant)
    out = tmp_path / "complete"
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, role)}
    shown = CliRunner().invoke(cli, ["bundle", "-o", str(out)], env=env)
    assert shown.exit_code == 1, shown.output
    assert shown.stdout.startswith("wrote ")
    assert re.search(rf"^FAILED: .*{fault}", shown.stderr), shown.stderr
    with pytest.raises(BundleError):
        verify_bundle(out, key=VERIFIER.text())


def test_a_complete_bundle_records_the_seqs_the_log_could_not_prove_for_its_auditor(
    logged: AuditClient,
    server: ServerThread,
    tenant: str,
    tamper: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    """`sealtrail bundle` said the log could not prove seq 13, but bundle.json
    did not record it (a filtered bundle's `unproven` is), so the auditor's
    `sealtrail verify` said only "seq 13: missing (record 13 has seq 14)", as
    of a bundle a record was taken out of (helper-555 finding 7)."""
    change_field(tamper, tenant)
    out = tmp_path / "complete"
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    assert CliRunner().invoke(cli, ["bundle", "-o", str(out)], env=env).exit_code == 1
    assert json.loads((out / "bundle.json").read_text())["gaps"] == [13]
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER.text()])
    assert shown.exit_code == 1, shown.output
    assert shown.stderr.startswith(
        "FAILED: seq 13: missing: the log no longer holds seq 13 as it signed it (the bundle's"
        " writer could not prove it)"
    ), shown.stderr
    # Said only of a seq the writer could not prove: one taken out after is missing.
    manifest = json.loads((out / "bundle.json").read_text())
    (out / "bundle.json").write_text(json.dumps({**manifest, "gaps": [12]}))
    with pytest.raises(BundleError, match=r"^seq 13: missing \(record 13 has seq 14\)$"):
        verify_bundle(out, key=VERIFIER.text())


@pytest.mark.parametrize(
    "chosen",
    [[], ["--action", "integrity.test"], ["--seq", "1-10"]],
    ids=["complete", "filtered", "range"],
)
def test_sealtrail_bundle_writes_nothing_when_the_log_serves_no_checkpoint_the_key_signed(
    logged: AuditClient,
    server: ServerThread,
    tenant: str,
    tamper: psycopg.Connection[Any],
    tmp_path: Path,
    chosen: list[str],
) -> None:
    """docs/integrity.md said a bundle of a log that refuses to sign a fresh
    checkpoint "is written against the last one it signed". So it is while the
    database holds that checkpoint (test_tampering_is_detected_online_and_offline,
    rewrite-all); with it gone too (a restore from an older backup, or removed
    by hand), the server serves none it may, and the bundle is refused whole,
    with the server's DATA_LOSS, and nothing written (helper-555 finding 8)."""
    rewrite_consistently(tamper, tenant)
    tamper.execute("DELETE FROM checkpoints WHERE tenant_id = %s", [tenant])
    out = tmp_path / "bundle"
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    shown = CliRunner().invoke(cli, ["bundle", *chosen, "-o", str(out)], env=env)
    assert shown.exit_code == 1, shown.output
    assert shown.stdout == ""
    assert "error: DATA_LOSS (INTEGRITY_FAILURE): refusing to sign" in shown.stderr
    assert f"this signing key signed it at size {EVENTS}" in shown.stderr
    assert not out.exists()


def test_a_range_bundle_names_the_seqs_of_its_range_the_log_could_not_prove(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The library's caller sees it too, as for a filtered bundle: a range
    bundle's summary said nothing of the seq it had left out."""
    change_field(tamper, tenant)
    summary = write_bundle(logged, tmp_path / "range", seq_range=SeqRange(10, 20))
    assert summary.unproven == ()  # a filtered bundle's, which bundle.json lists
    assert summary.gaps == (13,)
    assert summary.log_fault is not None
    assert "could not prove 1 of its records (seq 13)" in summary.log_fault
    with pytest.raises(BundleError, match=r"^seq 13: missing"):
        verify_bundle(tmp_path / "range", key=VERIFIER.text())


@pytest.mark.parametrize(
    "chosen", [["--seq", "10-20"], ["--received-since", "1h"]], ids=["seq", "received"]
)
def test_sealtrail_bundle_claims_no_range_complete_on_stdout_of_a_log_it_could_not_prove(
    logged: AuditClient,
    server: ServerThread,
    tenant: str,
    tamper: psycopg.Connection[Any],
    tmp_path: Path,
    chosen: list[str],
) -> None:
    """It printed "... the range seq 1..343 is complete ..." on stdout, then
    FAILED on stderr and exited 1: a job keeping stdout as its evidence kept
    a claim of completeness the bundle does not hold (helper-554)."""
    change_field(tamper, tenant)
    out = tmp_path / "range"
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    shown = CliRunner().invoke(cli, ["bundle", *chosen, "-o", str(out)], env=env)
    assert shown.exit_code == 1, shown.output
    assert shown.stdout.startswith("wrote ")
    assert "complete" not in shown.stdout and "chosen by" not in shown.stdout, shown.stdout
    assert re.search(r"^FAILED: the log could not prove 1 of its records \(seq 13\)", shown.stderr)


@pytest.mark.parametrize(
    ("level", "index", "gone"),
    [(2, 1, False), (3, 1, False), (5, 0, False), (4, 1, True)],
    ids=["level-2", "level-3", "level-5", "level-4-deleted"],
)
def test_a_stored_node_above_the_pairs_changed_or_gone_fails_verify_log(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    level: int,
    index: int,
    gone: bool,
) -> None:
    """Proofs are served from the stored nodes: one changed leads them away
    from the signed root while every record, leaf and pair checks. VerifyLog
    read only the pairs (level 1), and passed (helper-123)."""
    where = "WHERE tenant_id = %s AND level = %s AND idx = %s"
    if gone:
        tamper.execute(f"DELETE FROM tree_nodes {where}", [tenant, level, index])
    else:
        tamper.execute(
            f"UPDATE tree_nodes SET hash = %s {where}", [bytes(32), tenant, level, index]
        )
    result = logged.verify_log()
    first = (index << level) + 1
    assert not result.ok
    assert (result.failure.reason, result.failure.seq) == ("NODE_MISMATCH", first)
    assert f"seqs {first} to {(index + 1) << level}" in result.failure.message


def test_an_inclusion_proof_of_a_record_rewritten_under_its_old_leaf_is_data_loss(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """The rewritten record was served beside its old leaf hash and that
    leaf's proof, which checks against the signed root: a client checking the
    proof with the answer's leaf_hash took the forged record for the logged
    one (helper-139)."""
    change_field(tamper, tenant)
    for size in (0, EVENTS):
        with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
            logged.get_inclusion_proof(seq=13, tree_size=size)
        assert refused.value.reason == "INTEGRITY_FAILURE"
        assert "seq 13" in str(refused.value)
    intact = logged.get_inclusion_proof(seq=12, tree_size=EVENTS)
    assert intact.leaf_hash == leaf(intact.record)


def test_an_inclusion_proof_of_an_event_deleted_inside_the_signed_log_is_data_loss(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """A signed checkpoint covers it, so its row gone is lost data, as a
    missing interior hash already was; it was NOT_FOUND "no such event", as if
    it had never been recorded (helper-139)."""
    delete_one(tamper, tenant)
    for size in (0, EVENTS):
        with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
            logged.get_inclusion_proof(seq=13, tree_size=size)
        assert refused.value.reason == "INTEGRITY_FAILURE"
    with pytest.raises(NotFoundError):  # beyond the log: never recorded
        logged.get_inclusion_proof(seq=EVENTS + 100)


def test_an_inclusion_proof_of_a_record_moved_to_another_seq_is_data_loss(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """Two records swapped with their leaf hashes: each hashes to its row's
    leaf, and was served as the record at its row's seq beside that seq's
    proof, which leads to another root; the client found only "the inclusion
    proof leads to another root", of a record naming another seq than the
    answer's (helper-219)."""
    swap_records(tamper, tenant)
    for seq, names in ((13, 20), (20, 13)):
        with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
            logged.get_inclusion_proof(seq=seq, tree_size=EVENTS)
        assert refused.value.reason == "INTEGRITY_FAILURE"
        assert f"at seq {seq} names seq {names}" in str(refused.value)
    intact = logged.get_inclusion_proof(seq=12, tree_size=EVENTS)
    assert json.loads(intact.record)["seq"] == 12


def test_an_inclusion_proof_of_a_log_rewritten_to_match_is_data_loss(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """A record rewritten with its leaf, every node above it and the head to
    match: each record hashes to its leaf and names its seq, so the forged
    record was served beside the genuine checkpoint, with a path (from the
    rewritten nodes) that leads to another root than the one signed. A
    client that did not check the proof itself took the forged record as
    the log's; the path of any record through the rewritten nodes led away
    too (helper-298)."""
    assert logged.get_checkpoint().tree_size == EVENTS
    rewrite_consistently(tamper, tenant)
    for seq, size in ((13, 0), (13, EVENTS), (5, EVENTS)):
        with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
            logged.get_inclusion_proof(seq=seq, tree_size=size)
        assert refused.value.reason == "INTEGRITY_FAILURE"
        assert (
            f"the stored hashes of the log of {tenant!r} do not lead seq {seq} to the root"
            f" its checkpoint at size {EVENTS} signs"
        ) in refused.value.message


@pytest.mark.parametrize(
    ("seq", "said"),
    [
        (13, "seq 13 holds its event, and beside it a leaf stored as retention's of it removed"),
        (EVENTS + 3, f"seq {EVENTS + 3} has a leaf stored as retention's of it removed, beyond"),
    ],
    ids=["beside-a-kept-event", "beyond-the-log"],
)
def test_a_removed_leaf_stored_where_no_event_was_removed_fails_verify_log(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any], seq: int, said: str
) -> None:
    """A tombstone (a removed event's leaf, tree_nodes level 0) written by hand
    beside an event the log keeps: ListPurgedLeaves lists the event as one
    retention removed, with whatever leaf was written, and every retention
    pass over the tenant fails on it; VerifyLog walked past it and passed, as
    it did one beyond the log's end, which stands beside the event appended
    at its seq (helper-298)."""
    tamper.execute(
        "INSERT INTO tree_nodes (tenant_id, level, idx, hash) VALUES (%s, 0, %s, %s)",
        [tenant, seq - 1, leaf(b"never removed")],
    )
    if seq <= EVENTS:
        assert [removed.seq for removed in logged.list_purged_leaves()] == [seq]
    result = logged.verify_log()
    assert not result.ok
    assert (result.failure.reason, result.failure.seq) == ("REMOVALS_UNACCOUNTED", seq)
    assert said in result.failure.message


def swap_ids(conn: psycopg.Connection[Any], tenant: str) -> tuple[str, str]:
    """The `id` columns of seqs 13 and 20 swapped (the records, hashed, keep
    their own): the ids of seqs 13 and 20, as the records name them."""
    ids = dict(
        conn.execute(
            "SELECT seq, id::text FROM events WHERE tenant_id = %s AND seq IN (13, 20)", [tenant]
        ).fetchall()
    )
    placeholder = str(uuid.uuid4())
    for seq, value in ((13, placeholder), (20, ids[13]), (13, ids[20])):
        conn.execute(
            "UPDATE events SET id = %s WHERE tenant_id = %s AND seq = %s", [value, tenant, seq]
        )
    return ids[13], ids[20]


def test_an_event_asked_by_id_whose_row_holds_another_record_is_data_loss(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """The id column, which finds an event by id, is a copy of the record's
    id that a superuser can change: GetInclusionProof by id answered another
    event's record with a proof that checks (of that other event), and
    GetEvent that other event, as the event asked for (helper-219)."""
    first, second = swap_ids(tamper, tenant)
    for asked, seq in ((first, 20), (second, 13)):
        with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
            logged.get_inclusion_proof(event_id=asked)
        assert refused.value.reason == "INTEGRITY_FAILURE"
        assert f"seq {seq}" in str(refused.value) and asked in str(refused.value)
        with pytest.raises(RpcFailedError) as refused:
            logged.get_event(asked)
        assert refused.value.reason == "INTEGRITY_FAILURE"
        assert f"seq {seq}" in str(refused.value) and asked in str(refused.value)
    # By seq, each record is still proven as what it is.
    proven = logged.get_inclusion_proof(seq=13)
    assert json.loads(proven.record)["id"] == first
    intact = logged.get_inclusion_proof(seq=12)
    assert logged.get_event(json.loads(intact.record)["id"]).seq == 12
    assert logged.get_inclusion_proof(event_id=json.loads(intact.record)["id"]).seq == 12


def test_a_filtered_bundle_names_the_matched_records_the_log_could_not_prove(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """They were left out without a word: `sealtrail bundle` said it wrote
    them all and the bundle verified, as partial bundles are not checked for
    gaps. Exactly the records a tampering touched went missing unnoticed."""
    tamper.execute("DELETE FROM tree_nodes WHERE tenant_id = %s", [tenant])
    summary = write_bundle(
        logged, tmp_path / "part", event_filter=build_filter(actions="integrity.test")
    )
    assert summary.unproven and set(summary.unproven) <= set(range(1, EVENTS + 1))
    assert summary.count + len(summary.unproven) == EVENTS
    assert summary.log_fault is not None and "could not prove" in summary.log_fault
    with pytest.raises(BundleError, match=rf"could not prove {len(summary.unproven)} records"):
        verify_bundle(tmp_path / "part", key=VERIFIER.text())


def test_the_signer_refuses_to_extend_a_rewritten_log(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    from sealtrail import RpcFailedError

    before = logged.get_checkpoint()
    rewrite_consistently(tamper, tenant)
    record_events(logged, 2, start=EVENTS)
    with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
        logged.get_checkpoint(fresh=True)
    assert refused.value.reason == "INTEGRITY_FAILURE"
    # Not the latest any more: the log no longer holds it (helper-555).
    with pytest.raises(RpcFailedError) as refused:
        logged.get_checkpoint()
    assert refused.value.reason == "INTEGRITY_FAILURE"
    assert logged.get_checkpoint(tree_size=EVENTS) == before  # as signed, by its size


def test_a_log_rewritten_under_its_latest_checkpoint_is_not_answered_that_checkpoint(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """Rewritten consistently (records, tree and head) with the checkpoint at
    its size kept, and nothing appended: a fresh checkpoint was that one, the
    signer having checked only that the sizes matched, so the log was answered
    as signed with a root it no longer holds (helper-241)."""
    before = logged.get_checkpoint()
    rewrite_consistently(tamper, tenant)
    with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
        logged.get_checkpoint(fresh=True)
    assert refused.value.reason == "INTEGRITY_FAILURE"
    assert f"the head of the log of {tenant!r} at size {EVENTS}" in refused.value.message
    # What the key signed, served as signed by its size, not as the log today (helper-555).
    assert logged.get_checkpoint(tree_size=EVENTS) == before
    with pytest.raises(RpcFailedError) as refused:
        logged.get_checkpoint()
    assert refused.value.reason == "INTEGRITY_FAILURE"


def cut_back_and_forget_checkpoints(conn: psycopg.Connection[Any], tenant: str) -> None:
    truncate_tail(conn, tenant)
    conn.execute("DELETE FROM checkpoints WHERE tenant_id = %s", [tenant])


def rewrite_and_forget_checkpoints(conn: psycopg.Connection[Any], tenant: str) -> None:
    rewrite_consistently(conn, tenant)
    conn.execute("DELETE FROM checkpoints WHERE tenant_id = %s", [tenant])


@pytest.mark.parametrize(
    ("tampering", "appended", "verify_reason", "verify_seq"),
    [
        # Shorter than its checkpoint still: 30 kept, 2 appended, VerifyLog's own record.
        (truncate_tail, 2, "RECORD_MISSING", 33),
        (cut_back_and_forget_checkpoints, 12, "ROOT_MISMATCH", EVENTS),
        (rewrite_and_forget_checkpoints, 2, "ROOT_MISMATCH", EVENTS),
    ],
    ids=["cut-back", "cut-back-checkpoints-deleted", "rewritten-checkpoints-deleted"],
)
def test_the_signer_never_signs_over_a_log_cut_back_or_rewritten_with_its_checkpoints_gone(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    tampering: Callable[[psycopg.Connection[Any], str], None],
    appended: int,
    verify_reason: str,
    verify_seq: int,
) -> None:
    """The checkpoint rows were the signer's only memory of what it signed: a
    superuser who deleted them along with the log's tail (or rewrote the log
    to match) had the real key sign a fork, and VerifyLog passed; a log cut
    back under its checkpoints was served that checkpoint, longer than the
    log. The server remembers what it signed, outside the database
    (helper-123)."""
    signed = logged.get_checkpoint()
    tampering(tamper, tenant)
    record_events(logged, appended, start=1000)
    with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
        logged.get_checkpoint(fresh=True)
    assert refused.value.reason == "INTEGRITY_FAILURE"
    result = logged.verify_log()
    assert not result.ok
    assert (result.failure.reason, result.failure.seq) == (verify_reason, verify_seq)
    try:
        at_its_size = logged.get_checkpoint(tree_size=EVENTS).note
    except NotFoundError:  # its row deleted
        at_its_size = None
    assert at_its_size in (None, signed.note)  # never another root signed at that size


def cut_back_to_an_older_checkpoint(conn: psycopg.Connection[Any], tenant: str) -> None:
    """The log cut back to its checkpoint at EVENTS, the later ones deleted:
    what is left looks like a log signed as far as it goes."""
    conn.execute("DELETE FROM events WHERE tenant_id = %s AND seq > %s", [tenant, EVENTS])
    rebuild_tree(conn, tenant)
    conn.execute(
        "DELETE FROM checkpoints WHERE tenant_id = %s AND tree_size > %s", [tenant, EVENTS]
    )


@pytest.mark.parametrize(
    "tampering",
    [cut_back_to_an_older_checkpoint, cut_back_and_forget_checkpoints],
    ids=["to-an-older-checkpoint", "checkpoints-deleted"],
)
def test_a_log_cut_back_under_what_this_server_signed_is_not_served_as_shorter(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    tampering: Callable[[psycopg.Connection[Any], str], None],
) -> None:
    """The server remembers what it signed, and signs only what extends it,
    but served what the database held: GetCheckpoint the older checkpoint (or
    NOT_FOUND, "the log is empty"), as if the log had shrunk, and a proof from
    the size it had signed FAILED_PRECONDITION `BEYOND_LOG_SIZE`, telling a
    monitor holding that checkpoint to wait (helper-139)."""
    record_events(logged, 5, start=EVENTS)
    signed = logged.get_checkpoint(fresh=True).tree_size
    assert signed == EVENTS + 5
    tampering(tamper, tenant)
    for ask in (
        logged.get_checkpoint,
        lambda: logged.get_consistency_proof(old_size=signed),
        lambda: logged.get_consistency_proof(old_size=1, new_size=signed),
        lambda: logged.get_inclusion_proof(seq=5),
    ):
        with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
            ask()
        assert refused.value.reason == "INTEGRITY_FAILURE"


def test_proof_hashes_are_base64_in_bundles(logged: AuditClient, tmp_path: Path) -> None:
    write_bundle(logged, tmp_path / "b", event_filter=build_filter(actions="integrity.test"))
    first = (tmp_path / "b" / "proofs.ndjson").read_text().splitlines()[0]
    assert all(len(base64.b64decode(h)) == 32 for h in json.loads(first)["proof"])


def test_after_a_key_rotation_old_checkpoints_stay_verifiable(
    migrated_database_url: str, tenant: str, tmp_path: Path
) -> None:
    from sealtrail.tlog import generate_signer_key

    old_key, new_key = (generate_signer_key("sealtrail.test/rotation") for _ in range(2))
    before = ServerThread(migrated_database_url, signing_key=old_key.text())
    try:
        with AuditClient(before.target, token=before.token(tenant)) as client:
            record_events(client, 5)
            first = client.get_checkpoint(fresh=True)
    finally:
        before.close()
    after = ServerThread(migrated_database_url, signing_key=new_key.text())
    try:
        with AuditClient(after.target, token=after.token(tenant)) as client:
            record_events(client, 5, start=5)
            second = client.get_checkpoint(fresh=True)  # extends the one the old key signed
            keys = client.get_verifier_keys()
            assert [k.text for k in keys if k.active] == [new_key.verifier.text()]
            assert old_key.verifier.text() in {k.text for k in keys}
            assert client.verify_log().checkpoints_verified == 2
            write_bundle(client, tmp_path / "b")
    finally:
        after.close()
    assert open_note(first.note, [old_key.verifier])[1] == [old_key.verifier]
    assert open_note(second.note, [new_key.verifier])[1] == [new_key.verifier]
    # ten events, the VerifyLog call's own audit_log.verified and the bundle's export
    assert verify_bundle(tmp_path / "b", key=new_key.verifier.text()).count == 12


# Records no event is: one without its fields, and one nested too deep for
# Python's parser (RecursionError, which made INTERNAL: helper-154).
UNREADABLE = {"fields": '{"seq":13}', "nested": '{"a":' * 5000 + "1" + "}" * 5000}


@pytest.mark.parametrize("rewritten", sorted(UNREADABLE))
@pytest.mark.parametrize("export_format", ["csv", "json"])
def test_an_export_meeting_an_unreadable_record_is_data_loss_naming_it(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    tmp_path: Path,
    export_format: Literal["csv", "json"],
    rewritten: str,
) -> None:
    """A record rewritten into something no event is failed the export as
    UNKNOWN ("Unexpected KeyError"), naming nothing."""
    tamper.execute(
        "UPDATE events SET record = %s WHERE tenant_id = %s AND seq = 13",
        [UNREADABLE[rewritten], tenant],
    )
    with pytest.raises(RpcFailedError) as failed:
        logged.export(tmp_path / f"out.{export_format}", format=export_format)
    assert failed.value.code == grpc.StatusCode.DATA_LOSS
    assert "seq 13" in str(failed.value)
    assert not (tmp_path / f"out.{export_format}").exists()


@pytest.mark.parametrize("rewritten", sorted(UNREADABLE))
@pytest.mark.parametrize("actions", [None, "integrity.test"], ids=["all", "filtered"])
def test_a_stream_meeting_an_unreadable_record_is_data_loss_naming_it(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    actions: str | None,
    rewritten: str,
) -> None:
    """It ended with INTERNAL, naming nothing, where Export says DATA_LOSS
    (helper-121)."""
    tamper.execute(
        "UPDATE events SET record = %s WHERE tenant_id = %s AND seq = 13",
        [UNREADABLE[rewritten], tenant],
    )
    with pytest.raises(RpcFailedError) as failed:
        for event in logged.stream(build_filter(actions=actions) if actions else None, after_seq=0):
            assert event.seq < 13
    assert failed.value.code == grpc.StatusCode.DATA_LOSS
    assert "seq 13" in str(failed.value)


@pytest.mark.parametrize(
    ("file", "damage", "message"),
    [
        ("proofs.ndjson", lambda text: "not json\n" + text.split("\n", 1)[1], "not JSON"),
        ("proofs.ndjson", lambda text: "[1]\n" + text.split("\n", 1)[1], "not a proof"),
        ("proofs.ndjson", lambda text: '{"seq": 1}\n' + text.split("\n", 1)[1], "proof"),
        ("records.ndjson", lambda text: text.replace('"seq":1,', '"seq":"1",', 1), "seq"),
        ("bundle.json", lambda text: text.replace('"origin"', '"elsewhere"'), "origin"),
        ("bundle.json", lambda text: text.replace('"count": ', '"count": -'), "count"),
        ("bundle.json", lambda text: f"[{text}]", "not a JSON object"),
        ("bundle.json", lambda text: text.replace('"tree_size"', '"size"'), "tree_size"),
    ],
    ids=[
        "proof-not-json",
        "proof-not-object",
        "proof-missing",
        "seq-text",
        "no-origin",
        "count",
        "manifest-not-object",
        "no-tree-size",
    ],
)
def test_a_malformed_bundle_is_a_failure_named_not_a_traceback(
    logged: AuditClient, tmp_path: Path, file: str, damage: Callable[[str], str], message: str
) -> None:
    write_bundle(logged, tmp_path / "b")
    target = tmp_path / "b" / file
    target.write_text(damage(target.read_text()))
    with pytest.raises(BundleError, match=message):
        verify_bundle(tmp_path / "b", key=VERIFIER.text())


@pytest.mark.parametrize("file", ["records.ndjson", "proofs.ndjson", "checkpoint.txt"])
def test_a_bundle_with_a_file_missing_or_not_text_is_a_failure_named(
    logged: AuditClient, tmp_path: Path, file: str
) -> None:
    write_bundle(logged, tmp_path / "gone")
    (tmp_path / "gone" / file).unlink()
    with pytest.raises(BundleError, match=file):
        verify_bundle(tmp_path / "gone", key=VERIFIER.text())
    write_bundle(logged, tmp_path / "binary")
    (tmp_path / "binary" / file).write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(BundleError):
        verify_bundle(tmp_path / "binary")


def test_a_saved_checkpoint_is_proven_a_prefix_of_the_log_today(logged: AuditClient) -> None:
    """An auditor keeps a checkpoint; later, one call proves the log they saw
    was not rewritten since: a consistency proof to today's checkpoint, both
    signatures checked against the key they hold, not the server's word."""
    saved = logged.get_checkpoint().note
    unchanged = logged.check_checkpoint(saved, key=VERIFIER.text())
    assert unchanged.consistent and (unchanged.saved_size, unchanged.latest_size) == (EVENTS,) * 2
    record_events(logged, 25, start=EVENTS)
    grown = logged.check_checkpoint(saved, key=[VERIFIER.text()], fresh=True)
    assert grown.consistent and grown.reason is None
    assert (grown.saved_size, grown.latest_size) == (EVENTS, EVENTS + 25)
    # Which checkpoint it was checked against: the one signed now, when the
    # server signed it (its word: the signature covers no time).
    signed_now = logged.get_checkpoint()
    assert signed_now.tree_size == EVENTS + 25
    assert grown.latest_issued_at == signed_now.issued_at.ToDatetime(UTC)
    assert grown.origin == parse_checkpoint(open_note(saved, [VERIFIER])[0]).origin
    assert grown.signed_by == [VERIFIER.text()]


def test_checkpoint_check_names_the_checkpoint_of_today_it_checked_against(
    logged: AuditClient, server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """`checkpoint --check` right after a record said "today's 40" of a log
    of 41, and nothing of why: it checks against the latest checkpoint, up
    to SEALTRAIL_CHECKPOINT_INTERVAL old. It says which (its size, when the
    server signed it and how long ago); --fresh has one signed now."""
    saved = tmp_path / "saved.txt"
    saved.write_text(logged.get_checkpoint().note)
    record_events(logged, 1, start=EVENTS)  # the latest checkpoint may not cover it yet
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    for fresh in ([], ["--fresh"]):
        checked = CliRunner().invoke(
            cli, ["checkpoint", "--check", str(saved), "--key", VERIFIER.text(), *fresh], env=env
        )
        assert checked.exit_code == 0, checked.output
        said = re.fullmatch(
            rf"CONSISTENT: the saved log of {EVENTS} events is a prefix of today's (\d+)"
            rf" \(sealtrail\.test/log/{tenant}\): the latest checkpoint, signed"
            r" (\S+) \((\d+)s ago\) by sealtrail\.test/log\n",
            checked.stdout,
        )
        assert said is not None, checked.stdout
        size, signed_at = int(said[1]), said[2]
        assert size in ((EVENTS + 1,) if fresh else (EVENTS, EVENTS + 1))
        used = logged.get_checkpoint(tree_size=size)  # the one checkpoint of that size
        assert signed_at == f"{used.issued_at.ToDatetime(UTC):%Y-%m-%dT%H:%M:%SZ}"


def test_a_checkpoint_saved_before_the_log_was_rewritten_shows_the_rewrite(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    migrated_database_url: str,
    tmp_path: Path,
) -> None:
    """The log rewritten to match, its checkpoints deleted: a restarted server
    of the data dir refuses to sign the fork (the sizes its key signed are kept
    outside the database, ADR 0080), but one that knows nothing the key signed
    (another host's, with a directory of its own) signs it with the real key:
    only a checkpoint kept outside shows it, and the check says so."""
    saved = logged.get_checkpoint().note
    rewrite_and_forget_checkpoints(tamper, tenant)
    restarted = ServerThread(migrated_database_url)
    try:
        with AuditClient(restarted.target, token=restarted.token(tenant)) as client:
            record_events(client, 2, start=EVENTS)
            with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
                client.get_checkpoint(fresh=True)
            assert refused.value.reason == "INTEGRITY_FAILURE"
    finally:
        restarted.close()
    elsewhere = ServerThread(migrated_database_url, signed_checkpoints_dir=tmp_path)
    try:
        with AuditClient(elsewhere.target, token=elsewhere.token(tenant)) as client:
            check = client.check_checkpoint(saved, key=VERIFIER.text(), fresh=True)
    finally:
        elsewhere.close()
    assert not check.consistent
    assert check.saved_size == EVENTS and check.latest_size > EVENTS
    assert check.reason == "the consistency proof does not lead to the old root"


def test_a_saved_checkpoint_is_refused_when_it_cannot_be_checked(
    logged: AuditClient, client_for: Callable[..., AuditClient]
) -> None:
    """Another tenant's checkpoint (one key signs every tenant's), one no
    given key signed, or text that is no checkpoint: refused, never reported
    consistent or rewritten."""
    from sealtrail import CheckpointError, OtherLogError

    other = client_for(f"t-{uuid.uuid4().hex[:12]}")
    record_events(other, 3)
    theirs = other.get_checkpoint(fresh=True).note
    with pytest.raises(OtherLogError, match=r"of the log sealtrail\.test/log/t-"):
        logged.check_checkpoint(theirs, key=VERIFIER.text())
    ours = logged.get_checkpoint().note
    stranger = generate_signer_key("sealtrail.test/log").verifier.text()
    with pytest.raises(CheckpointError, match="saved checkpoint: no signature by a known key"):
        logged.check_checkpoint(ours, key=stranger)
    with pytest.raises(CheckpointError, match="saved checkpoint: a signed note is text"):
        logged.check_checkpoint("not a checkpoint\n", key=VERIFIER.text())
    with pytest.raises(CheckpointError, match="verifier key: none given"):
        logged.check_checkpoint(ours, key=[])


def plant_checkpoint(
    conn: psycopg.Connection[Any], tenant: str, size: int, note: str, root: bytes
) -> None:
    """A checkpoints row of `tenant` at `size` holding `note` as its signed
    note, as a superuser may insert one (the key is the real one's)."""
    conn.execute(
        "INSERT INTO checkpoints (tenant_id, tree_size, root_hash, note, key_name, key_id)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        [tenant, size, root, note, VERIFIER.name, VERIFIER.key_id],
    )


def test_a_stored_checkpoint_whose_note_signs_another_size_is_not_served(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """A superuser's row at size 60 holding the genuine note of size 40:
    GetCheckpoint by size served it as size 60 (VerifyLog said
    CHECKPOINT_INVALID, GetCheckpoint answered it), and so did GetCheckpoint
    and a proof, which took it for the latest (helper-221)."""
    genuine = logged.get_checkpoint()
    record_events(logged, 20, start=EVENTS)  # the log holds 60: the row is not beyond it
    # With the head's root, so that the periodic signer, which lists the tenants
    # no row covers, leaves the row to the reads below (ADR 0159).
    [(head_root,)] = tamper.execute(
        "SELECT root_hash FROM chain_heads WHERE tenant_id = %s", [tenant]
    ).fetchall()
    plant_checkpoint(tamper, tenant, EVENTS + 20, genuine.note, bytes(head_root))
    for ask in (
        lambda: logged.get_checkpoint(tree_size=EVENTS + 20),
        logged.get_checkpoint,
        lambda: logged.get_inclusion_proof(seq=5),
        lambda: logged.get_inclusion_proof(seq=5, tree_size=EVENTS + 20),
    ):
        with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
            ask()
        assert refused.value.code == grpc.StatusCode.DATA_LOSS
        assert refused.value.reason == "INTEGRITY_FAILURE"
        assert f"at size {EVENTS + 20}" in str(refused.value)
        assert f"signs size {EVENTS}" in str(refused.value)
    assert logged.get_checkpoint(tree_size=EVENTS) == genuine  # the genuine row still served
    # The signer sets the row aside, kept as evidence, and signs its size (ADR 0159).
    signed = logged.get_checkpoint(fresh=True)
    assert parse_checkpoint(open_note(signed.note, [VERIFIER])[0]).tree_size == EVENTS + 20
    assert refused_rows(tamper, tenant) == [(EVENTS + 20, genuine.note)]


def test_a_stored_checkpoint_whose_note_is_another_logs_is_not_served(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    client_for: Callable[..., AuditClient],
) -> None:
    """Another tenant's genuine checkpoint (one key signs every tenant's)
    planted as this tenant's row at its size: served as this log's
    (helper-221)."""
    other = client_for(f"t-{uuid.uuid4().hex[:12]}")
    record_events(other, 3)
    theirs = other.get_checkpoint(fresh=True)
    plant_checkpoint(tamper, tenant, 3, theirs.note, theirs.root_hash)
    with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
        logged.get_checkpoint(tree_size=3)
    assert refused.value.code == grpc.StatusCode.DATA_LOSS
    assert refused.value.reason == "INTEGRITY_FAILURE"
    assert f"signs the log {theirs.origin!r}" in str(refused.value)


def test_checked_checkpoints_full_drop_only_the_least_recently_served(
    server: ServerThread, client: AuditClient, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored checkpoints found to hold what their rows say are kept so a
    checkpoint served often is not checked each time. Full, they were all
    forgotten at once, and every checkpoint served next was checked again (a
    query for the keys and a signature each), the ones served a moment
    before too; now only the least recently served is dropped."""
    from sealtrail_server.integrity import checkpointer as checkpointer_module
    from sealtrail_server.store.checkpoints import checkpoint_at

    monkeypatch.setattr(checkpointer_module, "CHECKED_CHECKPOINTS", 3)
    for _ in range(4):
        record_events(client, 1)
        client.get_checkpoint(fresh=True)
    checkpointer = checkpointer_module.Checkpointer(
        server.database, Signer.parse(SIGNING_KEY), origin_prefix="sealtrail.test/log", interval=0
    )
    checks: list[int] = []
    signed = checkpointer.signed

    async def counted(checkpoint: Any, verifiers: Any = None) -> Any:
        checks.append(checkpoint.tree_size)
        return await signed(checkpoint, verifiers)

    checkpointer.signed = counted  # type: ignore[method-assign]

    async def serve(*sizes: int) -> None:
        async with server.database.connection(tenant) as conn:
            for size in sizes:
                stored = await checkpoint_at(conn, tenant, size)
                assert stored is not None
                await checkpointer.served(stored)

    server.run(serve(1, 2, 3, 3, 1))
    assert checks == [1, 2, 3]  # each checked once
    server.run(serve(4))  # one more than it keeps: 2, served least recently, dropped
    server.run(serve(1, 3, 4))
    assert checks == [1, 2, 3, 4]
    server.run(serve(2))
    assert checks == [1, 2, 3, 4, 2]


def _rights_bundle(server: ServerThread, tenant: str, role: Role, out: Path) -> Any:
    """`sealtrail bundle --action 'member.*' --action 'permission.*'` of a log
    of 3 such events among others, with a token of `role`; its output."""
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        for action in ("member.invite", "doc.read", "permission.grant", "member.remove"):
            admin.record(action=action, actor_id="ops")
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, role)}
    filters = ["--action", "member.*", "--action", "permission.*"]
    written = CliRunner().invoke(cli, ["bundle", *filters, "-o", str(out)], env=env)
    # A reader may not export: nothing signs the selection, which verify
    # would not say OK of either (SELECTION UNPROVEN, 4).
    assert written.exit_code == (4 if role is Role.READER else 0), written.output
    assert ("SELECTION UNPROVEN" in written.stderr) is (role is Role.READER), written.stderr
    return written


def _drop_last_record(out: Path) -> None:
    """What a holder hiding one event does: its record and proof gone, the
    count lowered to match."""
    for name in ("records.ndjson", "proofs.ndjson"):
        kept = (out / name).read_bytes().splitlines(keepends=True)[:-1]
        (out / name).write_bytes(b"".join(kept))
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["count"] -= 1
    manifest["last_seq"] = json.loads(kept[-1])["seq"]
    (out / "bundle.json").write_text(json.dumps(manifest))


def test_a_filtered_bundle_carries_the_servers_signed_statement_of_its_selection(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """bundle.json held no filter, and nothing signed the records' count: one
    record and its proof taken out, the count lowered, still verified `OK: 2
    records`, a warning on stderr only (helper-554). An exporter's bundle
    is read by one filtered Export, whose statement signs its filter and
    rows: verify names the filter, and one record taken out fails."""
    out = tmp_path / "rights"
    _rights_bundle(server, tenant, Role.ADMIN, out)
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER.text()])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("OK: 3 records"), shown.stdout
    assert '"actions":["member.*","permission.*"]' in shown.stdout.replace(" ", "")
    assert "signed" in shown.stdout and "not proven complete" not in shown.stdout
    _drop_last_record(out)
    dropped = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER.text()])
    assert dropped.exit_code == 1, dropped.output
    assert "OK" not in dropped.stdout
    assert dropped.stderr.startswith("FAILED: records.ndjson.manifest.json: "), dropped.stderr


def test_a_filtered_bundle_no_statement_signs_is_not_ok_but_its_selection_unproven(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """A reader may not export: its bundle is proven a record at a time, and
    nothing signs what it selected. Its line says so itself, and names the
    filter bundle.json says, for a job that keeps stdout alone; it began
    `OK:` and exited 0, a record taken out or not (helper-570): now
    `SELECTION UNPROVEN:`, exit 4, as a period's range with an end unproven."""
    out = tmp_path / "rights"
    _rights_bundle(server, tenant, Role.READER, out)
    manifest = json.loads((out / "bundle.json").read_text())
    assert json.loads(manifest["filter"]) == {"actions": ["member.*", "permission.*"]}
    _drop_last_record(out)
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER.text()])
    assert shown.exit_code == 4, shown.output
    assert shown.stdout.startswith("SELECTION UNPROVEN: 2 records"), shown.stdout
    assert "a filtered bundle: records may have been removed; not proven complete" in shown.stdout
    assert '"actions":["member.*","permission.*"]' in shown.stdout.replace(" ", "")
    own = CliRunner().invoke(cli, ["verify", str(out)])  # own keys: 3 still wins
    assert own.exit_code == 3, own.output
    assert own.stdout.startswith("SELF-CONSISTENT: 2 records"), own.stdout


def test_a_signed_filtered_bundle_stripped_of_its_statement_is_not_ok(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """An exporter's bundle with its kept manifest deleted, and a record and
    its proof taken out, the count lowered: the unsigned way, which said
    `OK:` and exited 0, only words mid-line telling it from a signed one
    (helper-570)."""
    out = tmp_path / "rights"
    _rights_bundle(server, tenant, Role.ADMIN, out)
    (out / "records.ndjson.manifest.json").unlink()
    manifest = json.loads((out / "bundle.json").read_text())
    del manifest["export_manifest"]
    (out / "bundle.json").write_text(json.dumps(manifest))
    _drop_last_record(out)
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER.text()])
    assert shown.exit_code == 4, shown.output
    assert shown.stdout.startswith("SELECTION UNPROVEN: 2 records"), shown.stdout
    assert "OK" not in shown.stdout


def _narrowed_to_a_range(server: ServerThread, tenant: str, out: Path) -> None:
    """An exporter's rights bundle whose records, proofs, manifest and
    checkpoint are replaced by a filtered export of seqs 2..4 alone, the
    filter's the same: every file agrees with the others, and seq 1 (a
    member.invite) is not there."""
    _rights_bundle(server, tenant, Role.ADMIN, out)
    kept = json.loads((out / "bundle.json").read_text())
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        exported = admin.export(
            out / "records.ndjson",
            filter=build_filter(actions=["member.*", "permission.*"]),
            manifest_file=True,
            first_seq=2,
            last_seq=4,
        )
        size = parse_checkpoint(open_note(exported.checkpoint, [VERIFIER])[0]).tree_size
        seqs = [json.loads(line)["seq"] for line in (out / "records.ndjson").read_text().split()]
        with open(out / "proofs.ndjson", "w", encoding="utf-8") as proofs:
            for seq in seqs:
                proof = admin.get_inclusion_proof(seq=seq, tree_size=size).proof
                encoded = [base64.b64encode(h).decode() for h in proof]
                proofs.write(json.dumps({"seq": seq, "proof": encoded}) + "\n")
    (out / "checkpoint.txt").write_text(exported.checkpoint)
    kept.update(
        tree_size=size,
        count=len(seqs),
        first_seq=seqs[0],
        last_seq=seqs[-1],
        filter=exported.filter_json,
    )
    (out / "bundle.json").write_text(json.dumps(kept))


def test_a_filtered_bundle_whose_statement_signs_a_range_is_not_every_event_of_its_filter(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """A filtered export of seqs 2..4 in place of the bundle's own, its
    proofs and checkpoint with it, verified `OK: 2 records ... every event
    of filter {...}`: the statement's range was never read, and seq 1, a
    member.invite, was hidden (helper-570). The bundle writer asks no range."""
    out = tmp_path / "rights"
    _narrowed_to_a_range(server, tenant, out)
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER.text()])
    assert shown.exit_code == 1, shown.output
    assert "OK" not in shown.stdout
    assert shown.stderr.startswith("FAILED: records.ndjson.manifest.json: "), shown.stderr
    assert "seqs 2..4" in shown.stderr, shown.stderr


def test_a_filtered_bundle_whose_filter_is_not_the_signed_one_says_which_is_missing(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """A kept statement v1 (an older server's, which signs no filter) was
    said to sign "no filter", as an unfiltered export's; and a bundle.json
    with its filter taken out said "filter None" (helper-570)."""
    from dataclasses import replace

    from sealtrail import check_export
    from sealtrail.tlog import sign_note

    out = tmp_path / "rights"
    _rights_bundle(server, tenant, Role.ADMIN, out)
    kept = out / "records.ndjson.manifest.json"
    signed, manifest = json.loads(kept.read_text()), json.loads((out / "bundle.json").read_text())
    (out / "bundle.json").write_text(
        json.dumps({k: v for k, v in manifest.items() if k != "filter"})
    )
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER.text()])
    assert shown.exit_code == 1, shown.output
    assert shown.stderr.startswith("FAILED: bundle.json says no filter, "), shown.stderr
    assert "None" not in shown.stderr
    (out / "bundle.json").write_text(json.dumps(manifest))
    old = replace(check_export(kept, key=VERIFIER.text()).statement, filter_sha256=None)
    old = replace(old, removed_count=None)
    v1 = {k: v for k, v in signed.items() if k not in ("filter", "removed_count")}
    kept.write_text(
        json.dumps({**v1, "statement": sign_note(old.text(), Signer.parse(SIGNING_KEY))})
    )
    shown = CliRunner().invoke(cli, ["verify", str(out), "--key", VERIFIER.text()])
    assert shown.exit_code == 1, shown.output
    assert "a v1 statement, which signs no filter" in shown.stderr, shown.stderr


def _signed_at(client: AuditClient, size: int, server: ServerThread) -> bool:
    """Whether a checkpoint of `client`'s log at `size` is signed yet, waiting
    up to 5 s for the periodic signer."""
    for _ in range(100):
        try:
            client.get_checkpoint(tree_size=size)
            return True
        except NotFoundError:
            server.run(_sleep(0.05))
    return False


def test_a_checkpoint_row_claiming_a_size_beyond_the_log_stops_no_signature(
    migrated_database_url: str,
    tenant: str,
    tamper: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A superuser's row at size 10^12 (a genuine note copied in) won the
    signer's "grown since the latest checkpoint" (its largest row): nothing
    more was signed and nothing logged, so the events after it could be
    rewritten and then signed once the row was gone; and a fresh checkpoint
    said the log "was cut back" (helper-555). The row is passed over, logged."""
    import logging

    periodic = ServerThread(migrated_database_url, checkpoint_interval=0.2)
    try:
        with AuditClient(periodic.target, token=periodic.token(tenant)) as client:
            record_events(client, 5)
            genuine = client.get_checkpoint(fresh=True)
            plant_checkpoint(tamper, tenant, 10**12, genuine.note, genuine.root_hash)
            with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
                record_events(client, 2, start=5)
                assert _signed_at(client, 7, periodic)
                record_events(client, 1, start=7)
                assert client.get_checkpoint(fresh=True).tree_size == 8
            said = [r.getMessage() for r in caplog.records]
            assert any(f"at size {10**12}" in m and "passed over" in m for m in said), said
            with pytest.raises(RpcFailedError) as refused:  # the row itself is never served
                client.get_checkpoint()
            assert refused.value.reason == "INTEGRITY_FAILURE"
    finally:
        periodic.close()


def test_a_proof_beyond_the_log_is_not_taken_for_tampering_by_a_checkpoint_row_never_signed(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """A superuser's row at size 10^12 (a genuine note copied in) was taken
    for the latest checkpoint signed: a proof asked beyond the log was
    refused as "events were removed behind the service's back", DATA_LOSS,
    not BEYOND_LOG_SIZE (helper-570). A log cut back under a checkpoint the
    key signed is still refused so."""
    genuine = logged.get_checkpoint()
    plant_checkpoint(tamper, tenant, 10**12, genuine.note, genuine.root_hash)
    for ask in (
        lambda: logged.get_consistency_proof(old_size=1, new_size=10**6),
        lambda: logged.get_inclusion_proof(seq=1, tree_size=10**6),
    ):
        with pytest.raises(RpcFailedError) as refused:  # FAILED_PRECONDITION
            ask()
        assert refused.value.reason == "BEYOND_LOG_SIZE", refused.value
        assert int(refused.value.metadata["tree_size"]) >= EVENTS
    truncate_tail(tamper, tenant)  # to 30, under the checkpoint signed at 40
    with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
        logged.get_consistency_proof(old_size=1, new_size=EVENTS + 5)
    assert refused.value.reason == "INTEGRITY_FAILURE", refused.value
    assert "removed behind the service's back" in str(refused.value)


def change_note_size(conn: psycopg.Connection[Any], tenant: str, size: int, to: int) -> str:
    """The size line of the note of `tenant`'s checkpoint at `size` changed
    to `to` (its signature no longer verifies); the note as it was."""
    [(note,)] = conn.execute(
        "SELECT note FROM checkpoints WHERE tenant_id = %s AND tree_size = %s", [tenant, size]
    ).fetchall()
    forged = note.replace(f"\n{size}\n", f"\n{to}\n", 1)
    assert forged != note
    conn.execute(
        "UPDATE checkpoints SET note = %s WHERE tenant_id = %s AND tree_size = %s",
        [forged, tenant, size],
    )
    return str(note)


def changed_note(note: str) -> str:
    """`note` with its size line changed as `change_note_size` changes it, 45 to 46."""
    return note.replace(f"\n{EVENTS + 5}\n", f"\n{EVENTS + 6}\n", 1)


@pytest.mark.parametrize("restarted", [False, True], ids=["running", "restarted"])
def test_a_latest_checkpoint_whose_note_was_changed_stops_no_signature(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    migrated_database_url: str,
    restarted: bool,
) -> None:
    """The latest row's note changed: the signer took its starting point from
    that row, refused every pass ("the signature does not verify"), and the
    events recorded meanwhile, never signed, could be rewritten before the
    note was put back and then signed (helper-555). The key's own last
    checkpoint, remembered or kept outside the database, is what a new one
    must extend; the row is set aside (ADR 0159)."""
    record_events(logged, 5, start=EVENTS)
    assert logged.get_checkpoint(fresh=True).tree_size == EVENTS + 5
    genuine_note = change_note_size(tamper, tenant, EVENTS + 5, EVENTS + 6)
    server = ServerThread(migrated_database_url, checkpoint_interval=0) if restarted else None
    try:
        client = (
            AuditClient(server.target, token=server.token(tenant)) if server is not None else logged
        )
        record_events(client, 2, start=EVENTS + 5)
        assert client.get_checkpoint(fresh=True).tree_size == EVENTS + 7
        # What it signed is what the key had signed, extended: a rewrite of
        # the events signed meanwhile is refused once the note is back.
        rewrite_record(tamper, tenant, EVENTS + 6, leaf_too=True)
        rebuild_tree(tamper, tenant)
        # Set aside, the changed row left its slot: the genuine one goes back in it.
        assert refused_rows(tamper, tenant) == [(EVENTS + 5, changed_note(genuine_note))]
        [(root,)] = tamper.execute(
            "SELECT root_hash FROM checkpoints_refused WHERE tenant_id = %s", [tenant]
        ).fetchall()
        plant_checkpoint(tamper, tenant, EVENTS + 5, genuine_note, bytes(root))
        record_events(client, 1, start=EVENTS + 7)
        with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
            client.get_checkpoint(fresh=True)
        assert refused.value.reason == "INTEGRITY_FAILURE"
    finally:
        if server is not None:
            client.close()
            server.close()


def test_a_checkpoint_saved_at_the_latest_size_shows_a_rewrite_the_signer_refused(
    logged: AuditClient,
    server: ServerThread,
    tenant: str,
    tamper: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    """The log rewritten consistently under its latest checkpoint: the signer
    refuses every pass, so the latest checkpoint stays the one an auditor
    saved, and `checkpoint --check` of it said CONSISTENT ("a prefix of
    today's 40"), no proof asked between equal sizes (helper-555). The latest
    checkpoint is answered only while the log's stored hashes hold its root."""
    saved = tmp_path / "saved.txt"
    saved.write_text(logged.get_checkpoint().note)
    rewrite_consistently(tamper, tenant)
    with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
        logged.check_checkpoint(saved.read_text(), key=VERIFIER.text())
    assert refused.value.code == grpc.StatusCode.DATA_LOSS
    assert refused.value.reason == "INTEGRITY_FAILURE"
    assert len(refused.value.message.encode()) <= 100
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    checked = CliRunner().invoke(
        cli, ["checkpoint", "--check", str(saved), "--key", VERIFIER.text()], env=env
    )
    assert checked.exit_code != 0, checked.output
    assert "CONSISTENT" not in checked.output
    assert logged.get_checkpoint(tree_size=EVENTS).note == saved.read_text()  # by size: as signed


def test_a_log_rewritten_behind_the_key_is_said_rewritten_not_restored(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    migrated_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A log rewritten in place (as long as what the key signed, not
    extending it) was said "restored from an older backup ... sign the
    restored log with a new key", and `key restored` listed its sizes lost
    though none was: a new key is exactly what signs the rewrite (helper-555).
    It is said rewritten, and that a new key would sign the rewritten history."""
    import logging

    from sealtrail_server import cli as server_cli
    from tests.conftest import signed_checkpoints_dir_of

    rewrite_and_forget_checkpoints(tamper, tenant)
    restarted = ServerThread(migrated_database_url, checkpoint_interval=0)
    try:
        with (
            caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"),
            AuditClient(restarted.target, token=restarted.token(tenant)) as client,
        ):
            record_events(client, 2, start=EVENTS)  # longer than signed, not extending it
            with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
                client.get_checkpoint(fresh=True)
    finally:
        restarted.close()
    assert refused.value.reason == "INTEGRITY_FAILURE"
    assert "rewritten" in refused.value.message
    assert "restored" not in refused.value.message
    assert len(refused.value.message.encode()) <= 100
    said = [r.getMessage() for r in caplog.records if tenant in r.getMessage()]
    rewritten = [m for m in said if "REWRITTEN" in m]
    assert rewritten, said
    assert all("a new key would sign the rewritten history" in m for m in rewritten)
    assert not [m for m in said if "sign the restored log with a new key" in m], said
    runner = CliRunner(
        env={
            "SEALTRAIL_SIGNED_CHECKPOINTS_DIR": str(
                signed_checkpoints_dir_of(migrated_database_url)
            )
        }
    )
    database = ["--database-url", migrated_database_url]
    listed = runner.invoke(server_cli.main, ["key", "restored", "--format", "json", *database])
    assert listed.exit_code == 0, listed.output
    [row] = [row for row in json.loads(listed.stdout) if row["tenant"] == tenant]
    assert (row["rewritten"], row["lost_sizes"], row["signed_size"]) == (True, None, EVENTS)
    listed = runner.invoke(server_cli.main, ["key", "restored", *database])
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(f"{tenant} ")]
    assert line.split()[3] == "rewritten"


def test_rows_beyond_the_log_stop_no_signature_whatever_their_number(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """More than 64 rows a superuser planted beyond the log (a genuine note
    copied in) refused the tenant every pass, so the events recorded
    meanwhile, never signed, were the superuser's to rewrite before the rows
    were deleted, and the rewrite was signed (helper-572). A row beyond the
    log's head is passed over, logged, whatever their number."""
    import logging

    genuine = logged.get_checkpoint()
    for i in range(65):
        plant_checkpoint(tamper, tenant, 10**12 + i, genuine.note, genuine.root_hash)
    record_events(logged, 5, start=EVENTS)
    with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
        assert logged.get_checkpoint(fresh=True).tree_size == EVENTS + 5
    said = [r.getMessage() for r in caplog.records if tenant in r.getMessage()]
    assert any("beyond" in m and "passed over" in m for m in said), said
    rewrite_record(tamper, tenant, EVENTS + 3, leaf_too=True)
    rebuild_tree(tamper, tenant)
    tamper.execute(
        "DELETE FROM checkpoints WHERE tenant_id = %s AND tree_size >= %s", [tenant, 10**12]
    )
    record_events(logged, 1, start=EVENTS + 5)
    with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS: the rewrite is not signed
        logged.get_checkpoint(fresh=True)
    assert refused.value.reason == "INTEGRITY_FAILURE"


def test_a_row_beyond_the_log_signed_by_another_registered_key_is_no_cut_back(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """A key a superuser registered in `signing_keys` (the service role may
    insert there) signed a row at size 10^12 over the log: the signer refused
    the tenant every pass as "cut back", and a proof asked beyond the log was
    "events were removed" (helper-572). What the active key signed decides."""
    genuine = logged.get_checkpoint()
    attacker = generate_signer_key(ATTACKER_KEY_NAME)
    tamper.execute(
        "INSERT INTO signing_keys (key_name, key_id, verifier) VALUES (%s, %s, %s)",
        [attacker.verifier.name, attacker.verifier.key_id, attacker.verifier.text()],
    )
    origin = genuine.note.split("\n", 1)[0]
    note = sign_note(format_checkpoint(Checkpoint(origin, 10**12, genuine.root_hash)), attacker)
    tamper.execute(
        "INSERT INTO checkpoints (tenant_id, tree_size, root_hash, note, key_name, key_id)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        [tenant, 10**12, genuine.root_hash, note, attacker.verifier.name, attacker.verifier.key_id],
    )
    record_events(logged, 2, start=EVENTS)
    assert logged.get_checkpoint(fresh=True).tree_size == EVENTS + 2
    with pytest.raises(RpcFailedError) as refused:  # FAILED_PRECONDITION
        logged.get_inclusion_proof(seq=1, tree_size=10**6)
    assert refused.value.reason == "BEYOND_LOG_SIZE", refused.value


def refused_rows(conn: psycopg.Connection[Any], tenant: str) -> list[tuple[int, str]]:
    """The size and note of each of `tenant`'s rows the signer set aside as
    forged (`checkpoints_refused`), by size."""
    rows = conn.execute(
        "SELECT tree_size, note FROM checkpoints_refused WHERE tenant_id = %s ORDER BY tree_size",
        [tenant],
    ).fetchall()
    return [(int(size), str(note)) for size, note in rows]


def test_rows_forged_at_each_coming_size_are_set_aside_and_each_size_signed(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rows a superuser planted at the coming sizes (head+1 ... head+5, a
    genuine note copied in) refused the signature at each size as the log
    reached it ("signs size 40, not the row's": its slot taken), so the events
    recorded meanwhile stayed unsigned for as long as the rows stood, a
    rewrite's to take once they were gone (ADR 0156). Each is moved to
    `checkpoints_refused`, said once, and its size signed; VerifyLog reports
    it (ADR 0159)."""
    import logging

    genuine = logged.get_checkpoint()
    forged = range(EVENTS + 1, EVENTS + 6)
    for size in forged:
        plant_checkpoint(tamper, tenant, size, genuine.note, genuine.root_hash)
    with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
        for size in forged:
            record_events(logged, 1, start=size - 1)
            assert logged.get_checkpoint(fresh=True).tree_size == size
    for size in forged:
        signed = logged.get_checkpoint(tree_size=size)
        assert parse_checkpoint(open_note(signed.note, [VERIFIER])[0]).tree_size == size
    assert refused_rows(tamper, tenant) == [(size, genuine.note) for size in forged]
    said = [r.getMessage() for r in caplog.records if tenant in r.getMessage()]
    for size in forged:  # once each, whichever signer (the periodic one too) met it
        assert len([m for m in said if f"at size {size} " in m and "set aside" in m]) == 1, said
    result = logged.verify_log()
    assert not result.ok
    assert (result.failure.reason, result.failure.seq) == ("CHECKPOINT_INVALID", EVENTS + 1)
    assert "checkpoints_refused" in result.failure.message, result.failure.message


def test_forged_rows_within_the_log_are_set_aside_whatever_their_number(
    logged: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """More than 64 rows within the log that do not sign what they say refused
    the tenant (each cost a signature's check, each pass), so the events
    recorded meanwhile stayed unsigned for as long as the rows stood, and a
    rewrite of them was signed once they were gone (ADR 0156). Each is set
    aside once and the log signed; a rewrite after is refused (ADR 0159)."""
    genuine = logged.get_checkpoint()
    forged = range(EVENTS + 1, EVENTS + 71)
    # Planted first, beyond the log, then reached: none is a slot the signer took.
    for size in forged:
        plant_checkpoint(tamper, tenant, size, genuine.note, genuine.root_hash)
    record_events(logged, 70, start=EVENTS)
    assert logged.get_checkpoint(fresh=True).tree_size == EVENTS + 70
    assert refused_rows(tamper, tenant) == [(size, genuine.note) for size in forged]
    # The events signed meanwhile, rewritten once the rows are gone: refused.
    rewrite_record(tamper, tenant, EVENTS + 3, leaf_too=True)
    rebuild_tree(tamper, tenant)
    tamper.execute("DELETE FROM checkpoints_refused WHERE tenant_id = %s", [tenant])
    record_events(logged, 1, start=EVENTS + 70)
    with pytest.raises(RpcFailedError) as refused:  # DATA_LOSS
        logged.get_checkpoint(fresh=True)
    assert refused.value.reason == "INTEGRITY_FAILURE"


def test_the_rows_set_aside_go_with_their_tenant_erased(
    logged: AuditClient,
    tenant: str,
    tamper: psycopg.Connection[Any],
    sql: psycopg.Connection[Any],
) -> None:
    """An erasure leaves no row of the tenant in any table: the rows its
    signer set aside as forged (ADR 0159) neither."""
    from tests.tenant_rows import rows_of

    genuine = logged.get_checkpoint()
    plant_checkpoint(tamper, tenant, EVENTS + 1, genuine.note, genuine.root_hash)
    record_events(logged, 1, start=EVENTS)
    assert logged.get_checkpoint(fresh=True).tree_size == EVENTS + 1
    assert refused_rows(tamper, tenant) == [(EVENTS + 1, genuine.note)]
    logged.erase_tenant(tenant)
    assert not any(rows_of(sql, tenant).values()), rows_of(sql, tenant)
