"""Export: CSV, NDJSON and JSON from a real server, checked against the
manifest, recorded in the log, rate limited, in constant server memory."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg
import pytest
from google.protobuf import json_format

from sealtrail import (
    EXCEL_CELL_LIMIT,
    AuditClient,
    InvalidArgumentError,
    ResourceExhaustedError,
    RpcFailedError,
    build_event,
    build_filter,
    cells_past_excel,
    verify_bundle,
    write_bundle,
)
from sealtrail._errors import from_rpc_error
from sealtrail._export import ExportFile
from sealtrail.tlog import Signer, generate_signer_key, open_note, parse_checkpoint
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail.v1 import audit_service_pb2_grpc, event_pb2
from tests.clock import Clock
from tests.conftest import SIGNING_KEY, ServerThread, token_id_of
from tests.processes import ServerProcess
from tests.rfc6962 import leaf, mth
from tests.silent_proxy import SilentProxy

# "-3" and "'-3" differ only by the `'` a neutralised cell gains: their cells
# must differ too, or the recorded value could not be read back.
INJECTIONS = [
    '=HYPERLINK("http://x")', "+1+2", "-3", "@SUM(A1)", "\tlead", "\rcr", "\n=1+1",
    "\uff1d1+1", "\uff0b1", "\uff0d1", "\uff20SUM(A1)", "'-3",  # full-width = + - @
]  # fmt: skip


def seed(client: AuditClient) -> None:
    client.record_batch(
        [
            build_event(
                action="report.download",
                actor_id=f"user_{i}",
                actor_email=f"u{i}@example.com",
                description=payload,
                details={"cell": payload, "n": i},
                changes=[("role", "viewer", "admin")],
            )
            for i, payload in enumerate(INJECTIONS)
        ]
    )


def test_csv_export_parses_back_with_neutralised_cells(client: AuditClient, tmp_path: Path) -> None:
    seed(client)
    manifest = client.export(
        tmp_path / "out.csv", format="csv", filter=build_filter(actions="report.*")
    )
    content = (tmp_path / "out.csv").read_bytes()
    assert manifest.byte_count == len(content)
    assert manifest.sha256 == hashlib.sha256(content).digest()
    assert manifest.media_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(content.decode(), newline="")))
    assert manifest.row_count == len(rows) == len(INJECTIONS)
    for row, payload in zip(rows, INJECTIONS, strict=True):
        assert row["description"] == "'" + payload
        assert json.loads(row["details"])["cell"] == payload  # JSON cells start with {
        assert row["action"] == "report.download" and row["actor_id"].startswith("user_")
        assert json.loads(row["changes"]) == [
            {"after": "admin", "before": "viewer", "field": "role"}
        ]


# Led by whitespace a trimming import drops (a space, a no-break or
# ideographic space, an em space, a tab after a space) or by a byte order
# mark: with "trim spaces" (LibreOffice, Google Sheets), the rest is read as
# a formula. A cell whose whitespace leads to no formula start stays as it is.
LED_BY_WHITESPACE = [
    " =1+1", "  +1", "\u00a0-1", "\u3000@SUM(A1)", "\u2003=1", " \t=1", "\ufeff=1",
    "\u200b=1", "\u202f\uff1d1", "\x0b-2", "\x85=3",
]  # fmt: skip
UNTOUCHED = [" plain", "\u00a0100", "\u3000text", " 'quoted", ""]


def test_csv_export_neutralises_a_formula_led_by_whitespace_or_a_byte_order_mark(
    client: AuditClient, tmp_path: Path
) -> None:
    """A cell such as " =HYPERLINK(...)" was written as it is: a spreadsheet
    that trims spaces on import (LibreOffice's "Trim spaces", Google Sheets)
    read a formula. Each gets its `'`, and taking one leading `'` off gives
    back exactly what was recorded."""
    payloads = [*LED_BY_WHITESPACE, *UNTOUCHED]
    results = client.record_batch(
        [
            build_event(action="report.cell", actor_id="u", description=payload, details={"n": i})
            for i, payload in enumerate(payloads)
        ]
    )
    assert all(result.error is None for result in results)
    client.export(tmp_path / "out.csv", format="csv", filter=build_filter(actions="report.cell"))
    content = (tmp_path / "out.csv").read_bytes().decode()
    rows = list(csv.DictReader(io.StringIO(content, newline="")))
    cells = [row["description"] for row in rows]
    assert cells == ["'" + p for p in LED_BY_WHITESPACE] + UNTOUCHED
    assert [c[1:] if c.startswith("'") else c for c in cells] == payloads


def test_a_csv_export_from_python_can_be_checked_for_cells_past_excel(
    client: AuditClient, tmp_path: Path
) -> None:
    """Only `sealtrail export` warned of a cell longer than Excel keeps, by a
    private function: a program exporting CSV with `export()` had no word of
    the details cell Excel would cut as an auditor opened the file. The
    package's cells_past_excel says which, reading the file as written."""
    results = client.record_batch(
        [
            build_event(action="report.long", actor_id="u", details={"b": "x" * size})
            for size in (100, EXCEL_CELL_LIMIT + 10)
        ]
    )
    seqs = [result.event.seq for result in results if result.event is not None]
    out = tmp_path / "long.csv"
    manifest = client.export(out, format="csv", filter=build_filter(actions="report.long"))
    assert cells_past_excel(out) == [(str(seqs[1]), "details")]
    assert cells_past_excel(str(out)) == [(str(seqs[1]), "details")]  # a path as text too
    assert manifest.sha256 == hashlib.sha256(out.read_bytes()).digest()  # the file as exported
    short = tmp_path / "short.csv"
    client.export(short, format="csv", first_seq=seqs[0], last_seq=seqs[0])
    assert cells_past_excel(short) == []


def test_an_export_and_its_manifest_are_checked_from_python(
    client: AuditClient, tmp_path: Path
) -> None:
    """`sealtrail checkpoint --check FILE.manifest.json` holds FILE to its
    manifest and the manifest to its signed checkpoint and statement; from
    Python there was `check_checkpoint`, of a checkpoint alone: an auditor's
    script had the file's digest to compute and the statement to open by
    hand, or the command to run. `sealtrail.check_export` does what the
    command does (the command calls it), offline; the manifest's checkpoint
    then goes to `check_checkpoint`."""
    from sealtrail import CheckpointError, ExportCheck, ExportMismatchError, check_export

    seed(client)
    out = tmp_path / "audit.csv"
    sent = client.export(out, format="csv", manifest_file=True, first_seq=2, last_seq=4)
    kept = tmp_path / "audit.csv.manifest.json"
    key = Signer.parse(SIGNING_KEY).verifier.text()

    found = check_export(kept, key=key)
    assert isinstance(found, ExportCheck)
    assert (found.path, found.rows, found.byte_count, found.sha256) == (
        out, 3, sent.byte_count, sent.sha256.hex()
    )  # fmt: skip
    signed = found.statement
    assert (signed.first_seq, signed.last_seq, signed.range_first_seq, signed.range_last_seq) == (
        2, 4, 2, 4
    )  # fmt: skip
    assert signed.export_event_id == sent.export_event_id
    assert found.checkpoint == sent.checkpoint
    assert client.check_checkpoint(found.checkpoint, key=key).consistent
    assert check_export(str(kept), key=[key]) == found  # a path as text, keys as a list

    exported = out.read_bytes()
    out.write_bytes(exported[:-3] + bytes([exported[-3] ^ 1]) + exported[-2:])
    with pytest.raises(ExportMismatchError, match=r"audit\.csv is not the export .* sha256 "):
        check_export(kept, key=key)
    out.write_bytes(exported)
    stranger = generate_signer_key("sealtrail.test/log").verifier.text()
    with pytest.raises(CheckpointError, match=r"^saved checkpoint: no signature by a known key"):
        check_export(kept, key=stranger)
    saved = tmp_path / "saved.txt"
    saved.write_text(sent.checkpoint)  # a checkpoint, no manifest: nothing of a file to check
    with pytest.raises(ExportMismatchError, match=r"saved\.txt is no export's manifest"):
        check_export(saved, key=key)


def test_a_filtered_export_is_told_from_a_whole_range_offline(
    client: AuditClient, tmp_path: Path
) -> None:
    """The statement signed the seqs, range and counts, not the filter: one
    actor's events of seqs 2..5 checked as the range 2..5 did, offline, and an
    auditor handed it could not tell it from the whole range. It signs the
    filter now (ADR 0130): `check_export` says which, and a manifest whose
    filter is edited is refused. A statement v1 (an older server's) still
    checks, its filter unknown."""
    from dataclasses import replace

    from sealtrail import ExportMismatchError, check_export
    from sealtrail.tlog import sign_note

    seed(client)
    key = Signer.parse(SIGNING_KEY).verifier.text()
    whole, some = tmp_path / "whole.csv", tmp_path / "some.csv"
    client.export(whole, format="csv", manifest_file=True, first_seq=2, last_seq=5)
    client.export(some, format="csv", manifest_file=True, first_seq=2, last_seq=5,
                  filter=build_filter(actor="user_2"))  # fmt: skip
    found_whole = check_export(tmp_path / "whole.csv.manifest.json", key=key)
    found_some = check_export(tmp_path / "some.csv.manifest.json", key=key)
    assert (found_whole.rows, found_whole.filtered, found_whole.filter) == (4, False, "{}")
    filtered = (found_some.rows, found_some.filtered, found_some.filter)
    assert filtered == (1, True, '{"actor":"user_2"}')
    for found in (found_whole, found_some):
        signed = found.statement
        assert (signed.range_first_seq, signed.range_last_seq) == (2, 5)
    assert found_whole.selected == "seqs 2..5, unfiltered"
    assert found_some.selected == (
        'the events of seqs 2..5 matching {"actor":"user_2"}, as the service selected them'
    )

    kept = tmp_path / "some.csv.manifest.json"
    manifest = json.loads(kept.read_text())
    assert manifest["filter"] == '{"actor":"user_2"}'
    unfiltered = {**manifest, "filter": "{}"}
    for forged in (unfiltered, {k: v for k, v in manifest.items() if k != "filter"}):
        kept.write_text(json.dumps(forged))
        with pytest.raises(ExportMismatchError, match=r"filter .* where the statement signs a"):
            check_export(kept, key=key)

    # A statement v1, of the same export: it signs no filter, nor may the manifest claim one.
    old = replace(found_some.statement, filter_sha256=None, removed_count=None)
    v1 = {k: v for k, v in manifest.items() if k not in ("filter", "removed_count")}
    v1["statement"] = sign_note(old.text(), Signer.parse(SIGNING_KEY))
    kept.write_text(json.dumps(v1))
    found_v1 = check_export(kept, key=key)
    assert (found_v1.rows, found_v1.filtered, found_v1.filter) == (1, None, None)
    assert found_v1.selected == (
        "seqs 2..5, filter not signed (a statement v1: filtered or not, not known)"
    )
    kept.write_text(json.dumps({**v1, "filter": "{}"}))
    with pytest.raises(ExportMismatchError, match=r"filter '\{\}' where the statement signs none"):
        check_export(kept, key=key)


def test_ndjson_export_is_the_records_as_hashed_with_a_signed_manifest(
    client: AuditClient, tenant: str, tmp_path: Path, sql: psycopg.Connection[Any]
) -> None:
    seed(client)
    manifest = client.export(tmp_path / "out.ndjson", format="ndjson")
    lines = (tmp_path / "out.ndjson").read_bytes().splitlines()
    stored = sql.execute(
        "SELECT record, leaf_hash FROM events WHERE tenant_id = %s AND seq <= %s ORDER BY seq",
        [tenant, manifest.tree_size],
    ).fetchall()
    assert lines == [record.encode() for record, _ in stored]
    assert [leaf(line) for line in lines] == [bytes(h) for _, h in stored]
    assert (manifest.first_seq, manifest.last_seq) == (1, manifest.tree_size)
    text, _ = open_note(manifest.checkpoint, [Signer.parse(SIGNING_KEY).verifier])
    checkpoint = parse_checkpoint(text)
    assert checkpoint.tree_size == manifest.tree_size
    assert checkpoint.root_hash == manifest.root_hash == mth([leaf(line) for line in lines])


def test_json_export_and_the_export_is_itself_audited(client: AuditClient, tmp_path: Path) -> None:
    seed(client)
    manifest = client.export(
        tmp_path / "out.json", format="json", filter=build_filter(actor="u2@example.com")
    )
    events = json.loads((tmp_path / "out.json").read_text())
    assert [e["actor"]["email"] for e in events] == ["u2@example.com"]
    [audit] = list(client.query(build_filter(actions="audit_log.exported")))
    assert audit.id == manifest.export_event_id
    assert audit.actor.type == 2  # ACTOR_TYPE_API_KEY: the calling token
    assert audit.details["format"] == "json"
    assert audit.details["filter"]["actor"] == "u2@example.com"


def test_json_export_writes_whole_numbers_as_the_record_and_the_cli_do(
    client: AuditClient, tenant: str, tmp_path: Path, sql: psycopg.Connection[Any]
) -> None:
    """A google.protobuf.Value holds every number as a double, and the JSON
    export wrote the API's mapping as MessageToDict gives it: `"n": 83.0`,
    `"before": 10.0`, where the record (NDJSON, CSV, sinks), `sealtrail
    query` and the console write 83 and 10."""
    details = {"n": 83, "half": 0.5, "deep": [{"n": -2}], "edge": 2**53 - 1, "top": 2**53, "": 1}
    stored = client.record(
        build_event(action="a.b", actor_id="u", details=details, changes=[("limit", 10, 20)])
    ).event
    client.export(tmp_path / "out.json", format="json", filter=build_filter(actions="a.b"))
    [exported] = json.loads((tmp_path / "out.json").read_text())
    [record] = sql.execute(
        "SELECT record FROM events WHERE tenant_id = %s AND id = %s", [tenant, stored.id]
    ).fetchone()  # type: ignore[misc]

    def typed(value: Any) -> str:  # the JSON text, where 83 and 83.0 differ
        return json.dumps(value, sort_keys=True)

    assert typed(exported["details"]) == typed(json.loads(record)["details"])
    assert typed(exported["changes"]) == typed([{"field": "limit", "before": 10, "after": 20}])
    assert exported["seq"] == str(stored.seq)  # otherwise the API's JSON mapping, as before


def test_exports_are_rate_limited_per_tenant(
    migrated_database_url: str, tenant: str, tmp_path: Path
) -> None:
    limited = ServerThread(migrated_database_url, export_rate_limit=2, export_rate_window=600)
    try:
        with AuditClient(limited.target, token=limited.token(tenant)) as client:
            seed(client)
            # A recorder's forged export records once used the limit up for everyone.
            for _ in range(2):
                with pytest.raises(InvalidArgumentError, match="reserved for Sealtrail"):
                    client.record(action="audit_log.exported", actor_id="forger")
            client.export(tmp_path / "1.csv", format="csv")
            client.export(tmp_path / "2.csv", format="csv")
            with pytest.raises(ResourceExhaustedError) as refused:
                client.export(tmp_path / "3.csv", format="csv")
            assert refused.value.retry_after is not None and refused.value.retry_after > 500
            assert not (tmp_path / "3.csv").exists()
    finally:
        limited.close()


def _rate_limited(client: AuditClient) -> list[event_pb2.Event]:
    """The refusals for its limits the log of `client`'s tenant has recorded."""
    return list(client.query(build_filter(actions="audit_log.rate_limited"), order="oldest"))


def test_exports_refused_for_the_tenants_rate_are_recorded_once_a_window(
    migrated_database_url: str, tenant: str, tmp_path: Path, sql: psycopg.Connection[Any]
) -> None:
    """Refusals for the rate left nothing in the log: a token pulling the log
    out as fast as it is let showed only as the exports that got through, and
    no alert rule could watch the refusals. Each is recorded as access
    denials are (ADR 0060), once per token, RPC, reason and
    SEALTRAIL_ACCESS_DENIED_WINDOW; the refusal is answered as before."""
    clock = Clock()
    limited = ServerThread(
        migrated_database_url,
        clock=clock,
        export_rate_limit=2,
        export_rate_window=600,
        access_denied_window=60,
        checkpoint_interval=0,
    )
    try:
        exporter = limited.token(tenant, "exporter")
        with (
            AuditClient(limited.target, token=limited.token(tenant)) as admin,
            AuditClient(limited.target, token=exporter, max_attempts=1) as client,
        ):
            seed(admin)
            client.export(tmp_path / "1.csv", format="csv")
            client.export(tmp_path / "2.csv", format="csv")
            for n in range(3):  # a client hammering Export
                with pytest.raises(ResourceExhaustedError) as refused:
                    client.export(tmp_path / f"over-{n}.csv", format="csv")
                assert refused.value.reason == "EXPORT_RATE_LIMITED"
                assert "at most 2 exports per 600 s per tenant" in refused.value.message
                assert refused.value.retry_after is not None and refused.value.retry_after > 500
            [limited_once] = _rate_limited(admin)
            clock.advance(seconds=60)  # another window: recorded again
            with pytest.raises(ResourceExhaustedError):
                client.export(tmp_path / "later.csv", format="csv")
            recorded = _rate_limited(admin)
            assert _exports_recorded(admin) == 2, "a refusal counted as an export"
    finally:
        limited.close()
    assert [e.id for e in recorded][:1] == [limited_once.id] and len(recorded) == 2
    assert (limited_once.category, limited_once.severity, limited_once.outcome) == (
        event_pb2.CATEGORY_SECURITY,
        event_pb2.SEVERITY_WARNING,
        event_pb2.OUTCOME_DENIED,
    )
    assert {(e.actor.type, e.actor.id) for e in recorded} == {
        (event_pb2.ACTOR_TYPE_API_KEY, token_id_of(sql, exporter))
    }
    assert json_format.MessageToDict(limited_once.details) == {
        "rpc": "Export",
        "reason": "EXPORT_RATE_LIMITED",
        "limit": 2,
        "limit_window_seconds": 600,
        "role": "exporter",
        "window_seconds": 60,
    }
    assert limited_once.context.ip == "127.0.0.1"


def test_an_export_cut_after_its_record_counts_against_the_rate_and_one_refused_before_does_not(
    migrated_database_url: str, tenant: str, tmp_path: Path
) -> None:
    """As docs/streaming-and-export.md says: the rate counts the exports
    recorded, whichever way they ended (one cut before its manifest may have
    sent all its rows), and the refusal says when the next may go: the
    oldest in the window leaves it. One refused before it is recorded
    (BEYOND_LOG_SIZE, TOO_MANY_EXPORTS) is not counted."""
    limited = ServerThread(migrated_database_url, export_rate_limit=2, export_rate_window=600)
    try:
        with AuditClient(limited.target, token=limited.token(tenant)) as client:
            seed(client)
            with pytest.raises(RpcFailedError) as beyond:
                client.export(tmp_path / "far.csv", format="csv", first_seq=1, last_seq=10**6)
            assert beyond.value.reason == "BEYOND_LOG_SIZE"
            stub = audit_service_pb2_grpc.AuditLogServiceStub(client._channel)
            for _ in range(2):  # cut after their first chunk, as a network failure would
                cut = stub.Export(
                    pb.ExportRequest(format=pb.EXPORT_FORMAT_CSV), metadata=client._metadata
                )
                assert next(cut).chunk
                cut.cancel()
            with pytest.raises(ResourceExhaustedError) as refused:
                client.export(tmp_path / "again.csv", format="csv")
            assert refused.value.reason == "EXPORT_RATE_LIMITED"
            assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 600
    finally:
        limited.close()


def test_concurrent_exports_keep_to_the_rate(
    migrated_database_url: str, tenant: str, tmp_path: Path
) -> None:
    """Each export is counted and recorded under one lock: concurrent ones once
    all counted the same past exports, and all went ahead."""
    limited = ServerThread(migrated_database_url, export_rate_limit=2, export_rate_window=600)
    try:
        with AuditClient(limited.target, token=limited.token(tenant)) as client:
            seed(client)

            def export(n: int) -> str:
                try:
                    client.export(tmp_path / f"{n}.csv", format="csv")
                except ResourceExhaustedError:
                    return "refused"
                return "exported"

            with ThreadPoolExecutor(8) as pool:
                outcomes = sorted(pool.map(export, range(8)))
        assert outcomes == ["exported"] * 2 + ["refused"] * 6
    finally:
        limited.close()


def _unread_export(target: str, token: str) -> tuple[grpc.Channel, Any]:
    """An export opened on a channel of its own, its first chunk read, and then
    not read: with about 30 MB in the log (_record_bulk), more than gRPC sends
    ahead of a reader, it stays open."""
    channel = grpc.insecure_channel(target)
    stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
    unread = stub.Export(
        pb.ExportRequest(format=pb.EXPORT_FORMAT_NDJSON),
        metadata=(("authorization", f"Bearer {token}"),),
    )
    assert next(unread).chunk
    return channel, unread


@pytest.fixture(scope="module")
def bulk_tenant(server: ServerThread) -> str:
    """A tenant whose log is _record_bulk's 30 MB, recorded once for the
    module's tests that export it and erase nothing (a recording per test
    was most of each one's time). Each makes its own servers and tokens of
    it, and counts only the exports recorded since it began
    (`_exports_recorded`); a test that erases makes a log of its own."""
    shared = f"t-bulk-{uuid.uuid4().hex[:12]}"
    with AuditClient(server.target, token=server.token(shared), timeout=60) as client:
        _record_bulk(client)
    return shared


def _exports_recorded(client: AuditClient) -> int:
    """How many exports the log of `client`'s tenant has recorded."""
    return len(list(client.query(build_filter(actions="audit_log.exported"))))


def test_exports_open_at_once_past_a_tenants_or_the_servers_limit_are_refused_until_one_ends(
    migrated_database_url: str, tenant: str, bulk_tenant: str, tmp_path: Path
) -> None:
    """An export whose client stops reading waits, holding its page (about
    6 MB), for as long as its connection lives, and the rate let a tenant
    leave 30 more a minute so, until the server ran out of memory (helper-209).
    Past the exports a tenant (SEALTRAIL_EXPORT_MAX_PER_TENANT) or the server
    (SEALTRAIL_EXPORT_MAX_PER_PROCESS) may have open at once, one is refused
    with RESOURCE_EXHAUSTED, a delay to retry after and the limit it met,
    before it is recorded or counted against the rate; other tenants export
    on; an export that ends, cancelled or read to its end, frees its place."""
    other = f"{tenant}-b"
    per_tenant = ServerThread(migrated_database_url, export_max_per_tenant=1)
    per_process = ServerThread(migrated_database_url, export_max_per_process=1)
    channels: list[grpc.Channel] = []
    try:
        # One attempt each: a refusal is what is looked at, not a retry's end.
        admin = AuditClient(per_tenant.target, token=per_tenant.token(bulk_tenant), max_attempts=1)
        elsewhere = AuditClient(per_tenant.target, token=per_tenant.token(other), max_attempts=1)
        exported_before = _exports_recorded(admin)
        limited_before = len(_rate_limited(admin))
        channel, unread = _unread_export(
            per_tenant.target, per_tenant.token(bulk_tenant, "exporter")
        )
        channels.append(channel)
        with pytest.raises(ResourceExhaustedError) as over:
            admin.export(tmp_path / "over.ndjson")
        assert over.value.reason == "TOO_MANY_EXPORTS", over.value
        assert over.value.retry_after is not None and over.value.retry_after > 0
        assert "the tenant has 1 export open" in over.value.message, over.value
        assert "a tenant may have 1 at once" in over.value.message, over.value
        assert elsewhere.export(tmp_path / "other.ndjson").row_count  # another tenant exports on

        # ... up to the server's limit, whichever tenant the exports are of.
        full_channel, _ = _unread_export(per_process.target, per_process.token(bulk_tenant))
        channels.append(full_channel)
        with (
            AuditClient(
                per_process.target, token=per_process.token(other), max_attempts=1
            ) as refused_client,
            pytest.raises(ResourceExhaustedError) as full,
        ):
            refused_client.export(tmp_path / "full.ndjson")
        assert full.value.reason == "TOO_MANY_EXPORTS", full.value
        assert "this server has 1 export open" in full.value.message, full.value
        assert "it may have 1 at once" in full.value.message, full.value

        unread.cancel()
        deadline = time.monotonic() + 30
        while True:  # its place is given back once its handler has ended
            try:
                admin.export(tmp_path / "after.ndjson")
                break
            except ResourceExhaustedError as refused:
                assert refused.reason == "TOO_MANY_EXPORTS", refused
                assert time.monotonic() < deadline, "a cancelled export kept its place"
                time.sleep(0.05)
        admin.export(tmp_path / "again.ndjson")  # one read to its end gave its place back
        # The two left unread, and the two read to their end: no refused one.
        recorded = _exports_recorded(admin) - exported_before
        assert recorded == 4, "a refused export was recorded"
        # Refused for the tenant's limit: recorded, once in the window however
        # often it was retried. Refused for the server's: none of the tenant's
        # doing, nothing in its log.
        [limited] = _rate_limited(admin)[limited_before:]
        assert json_format.MessageToDict(limited.details) == {
            "rpc": "Export",
            "reason": "TOO_MANY_EXPORTS",
            "limit": 1,
            "role": "admin",
            "window_seconds": 600,
        }
        assert _rate_limited(elsewhere) == []
        admin.close()
        elsewhere.close()
    finally:
        for channel in channels:
            channel.close()
        per_process.close()
        per_tenant.close()


def _export_when_a_place_frees(client: AuditClient, path: Path, *, within: float) -> None:
    """An export by `client`, tried until its tenant's place frees (within
    `within` seconds), a refusal for the exports open the only one allowed."""
    deadline = time.monotonic() + within
    while True:
        try:
            client.export(path)
            return
        except ResourceExhaustedError as refused:
            assert refused.reason == "TOO_MANY_EXPORTS", refused
            assert time.monotonic() < deadline, "an export whose client stopped kept its place"
            time.sleep(0.1)


def test_an_export_whose_client_stops_reading_is_ended_and_one_read_slowly_is_not(
    migrated_database_url: str,
    bulk_tenant: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An export whose client stops reading, its connection kept (keepalive
    answered), or gone silent, waited for as long as the connection lived,
    holding its place among the exports open and its page (about 6 MB)
    (helper-214). One that cannot hand a chunk to the transport for
    SEALTRAIL_EXPORT_STALL_SECONDS is ended, its place given back and the
    server's log saying so; a client that reads on is told (ABORTED,
    EXPORT_STALLED) after what it had been sent. A reader that takes chunk
    after chunk is never cut, however long the export takes."""
    stall = 1.0
    stalling = ServerThread(
        migrated_database_url, export_max_per_tenant=1, export_stall_seconds=stall
    )
    channels: list[grpc.Channel] = []
    try:
        admin = AuditClient(
            stalling.target, token=stalling.token(bulk_tenant), max_attempts=1, timeout=60
        )

        # Slowly, chunk after chunk: many times the stall in all. The server sees
        # a reader take chunks as its flow-control window opens, in steps of up
        # to about 3 MB with gRPC's defaults (seconds apart at this pace), so
        # this client keeps its window small: a chunk taken is seen at once.
        began = time.monotonic()
        with (
            grpc.insecure_channel(
                stalling.target,
                options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 256 * 1024)],
            ) as small_window,
            ExportFile(tmp_path / "slow.ndjson") as slow,
        ):
            channels.append(small_window)
            stub = audit_service_pb2_grpc.AuditLogServiceStub(small_window)
            token = stalling.token(bulk_tenant, "exporter")
            for message in stub.Export(
                pb.ExportRequest(format=pb.EXPORT_FORMAT_NDJSON),
                metadata=(("authorization", f"Bearer {token}"),),
            ):
                slow.receive(message)
                # 64 KB chunks (CHUNK_BYTES) of about 30 MB: 4.5 s asleep at least.
                time.sleep(0.01)
            assert slow.result().row_count > 2400
        assert time.monotonic() - began > 3 * stall, "read too fast to show it"

        # Stopped reading, its connection kept.
        with caplog.at_level(logging.WARNING, logger="sealtrail_server"):
            channel, unread = _unread_export(
                stalling.target, stalling.token(bulk_tenant, "exporter")
            )
            channels.append(channel)
            _export_when_a_place_frees(admin, tmp_path / "after.ndjson", within=30)
        assert f"took no chunk for {stall:g} s" in caplog.text, caplog.text
        received = 0
        with pytest.raises(grpc.RpcError) as ended:  # read on: what it was sent, then why
            for message in unread:
                assert not message.HasField("manifest")
                received += 1
        error = from_rpc_error(ended.value)
        assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "EXPORT_STALLED"), error
        assert "SEALTRAIL_EXPORT_STALL_SECONDS" in error.message, error

        # Gone silent (no FIN, no RST): ended after the stall, not keepalive's 80 s.
        with contextlib.closing(SilentProxy(("127.0.0.1", stalling.port))) as proxy:
            silent, _ = _unread_export(proxy.target, stalling.token(bulk_tenant, "exporter"))
            channels.append(silent)
            proxy.silence()
            _export_when_a_place_frees(admin, tmp_path / "after-silent.ndjson", within=30)
        admin.close()
    finally:
        for open_channel in channels:
            open_channel.close()
        stalling.close()


def test_a_bundle_waits_for_a_place_among_the_exports_open(
    migrated_database_url: str, bulk_tenant: str, tmp_path: Path
) -> None:
    """A bundle whose Export was refused for the exports the tenant had open
    (TOO_MANY_EXPORTS, retry after 5 s) failed with it at once (helper-214).
    It waits the server's delay and tries again, as a call is retried: here
    the export that held the place is ended meanwhile, its client having
    stopped reading, and the bundle is written from one export."""
    stalling = ServerThread(
        migrated_database_url, export_max_per_tenant=1, export_stall_seconds=1.0
    )
    channel: grpc.Channel | None = None
    try:
        with AuditClient(stalling.target, token=stalling.token(bulk_tenant), timeout=60) as admin:
            exported_before = _exports_recorded(admin)
            channel, _ = _unread_export(stalling.target, stalling.token(bulk_tenant, "exporter"))
            written = write_bundle(admin, tmp_path / "bundle")
            assert written.complete and written.count > 2400
            exported = _exports_recorded(admin) - exported_before
            assert exported == 2, "the bundle was not read by an export"
        assert verify_bundle(tmp_path / "bundle").count == written.count
    finally:
        if channel is not None:
            channel.close()
        stalling.close()


def test_export_of_100k_events_in_constant_server_memory(
    migrated_database_url: str, tenant: str, tmp_path: Path, server: ServerThread
) -> None:
    process = ServerProcess(migrated_database_url)
    try:
        with AuditClient(process.target, token=server.token(tenant), timeout=60) as client:
            for start in range(0, 100_000, 1000):
                client.record_batch(
                    [
                        build_event(action="bulk.item", actor_id="bulk", description=f"{n}")
                        for n in range(start, start + 1000)
                    ]
                )
            rss_before = psutil.Process(process.proc.pid).memory_info().rss
            manifest = client.export(tmp_path / "all.csv", format="csv")
            rss_after = psutil.Process(process.proc.pid).memory_info().rss
    finally:
        process.terminate()
    assert manifest.row_count == 100_001  # and the export's own event
    with open(tmp_path / "all.csv", newline="", encoding="utf-8") as exported:
        assert sum(1 for _ in csv.reader(exported)) == 100_002  # with the header
    assert rss_after - rss_before < 50 * 1024 * 1024


def test_an_export_overtaken_by_an_erasure_ends_without_a_manifest(
    client_for: Any, tenant: str
) -> None:
    """Pages are read one at a time: after the erasure, the next one reads
    nothing. The export must not end as if complete, with a manifest and a
    valid checkpoint for the first page's rows."""
    admin = client_for(tenant, timeout=60)
    # More than a page of rows (2,000), and about 30 MB: more than gRPC sends
    # ahead of a reader, so the server is still in its first page when the
    # erasure commits.
    _record_bulk(admin)
    export = admin.export_stream(format="ndjson")
    assert next(export).chunk
    admin.erase_tenant(tenant)
    with pytest.raises(RpcFailedError) as ended:
        for message in export:
            assert not message.HasField("manifest"), message.manifest.row_count
    assert ended.value.reason == "TENANT_ERASED"


def test_an_export_on_another_process_overtaken_by_an_erasure_ends_tenant_erased(
    migrated_database_url: str, server: ServerThread, tenant: str
) -> None:
    """The erasure made by another process, the exporting one learns of it
    when it looks the caller's token up again (its cache expired): the token
    is gone with the tenant, and the export ended UNAUTHENTICATED ("unknown
    or revoked token") where the documented answer is TENANT_ERASED
    (helper-154)."""
    # Its tokens looked up again before each message, as once its cache expires.
    elsewhere = ServerThread(migrated_database_url, token_cache_seconds=0.001)
    try:
        token = server.token(tenant)
        with (
            AuditClient(server.target, token=token, timeout=60) as here,
            AuditClient(elsewhere.target, token=token, timeout=60) as there,
        ):
            blob = "x" * 12_000
            # As above: the exporting process still in its first page (and
            # sending rows it read before the erasure) when the erasure commits.
            for start in range(0, 2400, 200):
                here.record_batch(
                    [build_event(action="bulk.item", actor_id="bulk", details={"blob": blob})
                     for _ in range(start, start + 200)]
                )  # fmt: skip
            export = there.export_stream(format="ndjson")
            assert next(export).chunk
            here.erase_tenant(tenant)
            with pytest.raises(RpcFailedError) as ended:
                for message in export:
                    assert not message.HasField("manifest"), message.manifest.row_count
    finally:
        elsewhere.close()
    assert (ended.value.code.name, ended.value.reason) == ("FAILED_PRECONDITION", "TENANT_ERASED")


def test_csv_export_adds_its_later_columns_after_the_first_ones(
    client: AuditClient, tmp_path: Path
) -> None:
    """Columns added since the first release come last, in the order they were
    added, so that a reader of the first ones by position keeps working."""
    client.record(action="report.view", actor_id="u-9", country="nz", ip="192.0.2.4")
    client.export(tmp_path / "out.csv", format="csv", filter=build_filter(actions="report.view"))
    with (tmp_path / "out.csv").open(newline="") as exported:
        [header, row] = list(csv.reader(exported))
    first = header.index("leaf_hash") + 1
    assert header[first:] == [
        "country",
        "recorded_by_token_id",
        "recorded_by_token_name",
        "credential_kind",
        "credential_id",
        "credential_hint",
        "country_source",
        "http_method",
        "http_route",
        "http_status_code",
        "duration_ms",
        "actor_roles",
    ]
    assert row[first] == "NZ" and row[first + 1] and row[first + 2] == ""  # an unnamed token
    assert row[first + 3 : first + 6] == ["", "", ""]  # no credential
    assert row[first + 6] == "caller"
    assert row[first + 7 : first + 11] == ["", "", "", ""]  # no HTTP request
    assert row[first + 11 :] == [""]  # no roles
    assert row[header.index("ip")] == "192.0.2.4"


async def test_an_export_keeps_its_manifest_beside_it_when_asked_by_either_client(
    client: AuditClient, server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    from sealtrail import AsyncAuditClient

    seed(client)
    client.export(tmp_path / "plain.ndjson")  # as before: the file alone
    client.export(tmp_path / "sync.ndjson", manifest_file=True)
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        manifest = await audit.export(tmp_path / "async.csv", format="csv", manifest_file=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "async.csv",
        "async.csv.manifest.json",
        "plain.ndjson",
        "sync.ndjson",
        "sync.ndjson.manifest.json",
    ]
    kept = json.loads((tmp_path / "async.csv.manifest.json").read_text(encoding="utf-8"))
    assert kept["checkpoint"] == manifest.checkpoint and kept["file"] == "async.csv"
    key = Signer.parse(SIGNING_KEY).verifier.text()
    assert client.check_checkpoint(kept["checkpoint"], key=key).consistent


def _record_bulk(client: AuditClient) -> None:
    """2,400 events of 12 KB each (about 30 MB), 200 a batch."""
    blob = "x" * 12_000
    for start in range(0, 2400, 200):
        client.record_batch(
            [build_event(action="bulk.item", actor_id="bulk", details={"blob": blob, "n": n})
             for n in range(start, start + 200)]
        )  # fmt: skip


# The CLI's export in a process of its own that SIGKILLs itself just before
# the KILL_AT-th change it makes to the directory's names (a rename or an
# unlink), where a crash can stop it.
_KILLED_AT_A_RENAME = """
import os, signal, sys

calls = 0
kill_at = int(os.environ["KILL_AT"])

def killing(change):
    def changed(*args, **kwargs):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return change(*args, **kwargs)
    return changed

for name in ("replace", "rename", "unlink", "remove", "rmdir"):
    setattr(os, name, killing(getattr(os, name)))

from sealtrail._cli import main
main(sys.argv[1:], prog_name="sealtrail")
"""


def _pair_at(path: Path) -> tuple[bytes | None, dict[str, Any] | None]:
    """The bytes of the export at `path` and its manifest beside it, each
    None where it is not there."""
    kept = path.with_name(path.name + ".manifest.json")
    content = path.read_bytes() if path.exists() else None
    manifest = json.loads(kept.read_text(encoding="utf-8")) if kept.exists() else None
    return content, manifest


def _exported_with_its_manifest(
    client: AuditClient, tmp_path: Path
) -> tuple[Path, tuple[bytes, dict[str, Any]]]:
    """The seeded log exported with its manifest, and the pair kept; an event
    recorded since, so that an export now has another content."""
    seed(client)
    out = tmp_path / "audit.ndjson"
    client.export(out, manifest_file=True)
    content, manifest = _pair_at(out)
    assert content is not None and manifest is not None
    client.record(action="report.download", actor_id="later")
    return out, (content, manifest)


def _killed_at_each_change(
    server: ServerThread,
    tenant: str,
    argv: list[str],
    out: Path,
    old: tuple[bytes, dict[str, Any]],
    state: Callable[[int, bytes | None, dict[str, Any] | None], str],
    order: list[str],
    finished: list[str],
) -> None:
    """An export to `out` in a process of its own (`argv`, one of
    _KILLED_AT_A_RENAME's kind, as the tenant) over the `old` pair, and
    nothing else in its folder: killed before its first change of the names,
    then before its second, and so on, until it runs to the end, leaving
    `order[-1]` and the files `finished` only. Each time, a manifest left
    beside a file describes it, and `state` names what is left; the states
    come in `order`, from the old pair."""
    env = {**os.environ, "SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    seen: list[tuple[int, str]] = []
    for kill_at in range(1, 20):
        for leftover in out.parent.iterdir():  # the old pair back, and nothing else
            leftover.unlink()
        out.write_bytes(old[0])
        out.with_name(out.name + ".manifest.json").write_text(json.dumps(old[1]), "utf-8")
        done = subprocess.run(
            argv, env={**env, "KILL_AT": str(kill_at)}, capture_output=True, text=True, timeout=60
        )
        content, manifest = _pair_at(out)
        if content is not None and manifest is not None:
            assert manifest["sha256"] == hashlib.sha256(content).hexdigest(), (
                f"killed before change {kill_at}: a manifest beside a file it does not describe"
            )
        left = state(kill_at, content, manifest)
        if done.returncode != -signal.SIGKILL:  # it made fewer changes: it finished
            assert done.returncode == 0, done.stderr
            assert left == order[-1] and sorted(p.name for p in out.parent.iterdir()) == finished
            break
        seen.append((kill_at, left))
    else:
        raise AssertionError(f"the export never finished: {seen}")
    states = [named for _, named in seen]
    assert set(states) <= set(order) and states[0] == "old pair", seen
    assert states == sorted(states, key=order.index), seen


def test_a_re_export_killed_at_any_point_leaves_no_file_beside_a_manifest_it_does_not_match(
    client: AuditClient, server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """The manifest took its name, then the file: a `sealtrail export -o FILE`
    over an earlier one, killed between the two, left the new manifest beside
    the old file. Its checkpoint checks out (`sealtrail checkpoint --check`
    reads no file), its sha256 is not the file's: to an auditor, a file
    altered since its export. Killed just before each rename or unlink it
    makes, the export leaves the old pair, the new one, or one of the two
    alone (an export visibly not there), never both names on a mismatch."""
    out, old = _exported_with_its_manifest(client, tmp_path)
    argv = [sys.executable, "-c", _KILLED_AT_A_RENAME, "export", "--format", "ndjson", "-o"]

    def state(kill_at: int, content: bytes | None, manifest: dict[str, Any] | None) -> str:
        if content is not None and manifest is not None:
            return "old pair" if (content, manifest) == old else "new pair"
        alone = "file" if content is not None else "manifest" if manifest else "neither"
        return f"{alone} alone"

    # In that order: the old pair, the new manifest alone (the old file moved
    # aside, hidden), then the new pair.
    _killed_at_each_change(
        server,
        tenant,
        [*argv, str(out)],
        out,
        old,
        state,
        order=["old pair", "manifest alone", "new pair"],
        finished=[out.name, out.name + ".manifest.json"],
    )


# An export to a file without its manifest, from Python, in a process of its
# own killed as _KILLED_AT_A_RENAME's is.
_PLAIN_EXPORT_KILLED_AT_A_RENAME = _KILLED_AT_A_RENAME.replace(
    """from sealtrail._cli import main
main(sys.argv[1:], prog_name="sealtrail")
""",
    """from sealtrail import AuditClient
with AuditClient(os.environ["SEALTRAIL_SERVER"], token=os.environ["SEALTRAIL_TOKEN"]) as client:
    client.export(sys.argv[1])
""",
)


def test_an_export_without_its_manifest_over_one_with_a_manifest_leaves_no_stale_manifest(
    client: AuditClient, server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """`export(FILE)` without `manifest_file` over an earlier `sealtrail export
    -o FILE` left the earlier FILE.manifest.json beside the new FILE: a
    manifest that describes another content, whose checkpoint `sealtrail
    checkpoint --check` still passes. The stale manifest goes as the new
    file takes its name, first: killed at any point, the export leaves the
    old pair or a file alone (the old, then the new), never a file beside a
    manifest that does not describe it."""
    out, old = _exported_with_its_manifest(client, tmp_path)

    client.export(out)  # in this process, to the end
    content, manifest = _pair_at(out)
    assert content is not None and content != old[0]
    assert manifest is None, "the earlier export's manifest beside a file it does not describe"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]

    def state(kill_at: int, content: bytes | None, manifest: dict[str, Any] | None) -> str:
        assert content is not None, f"killed before change {kill_at}: no file"
        if manifest is not None:
            return "old pair"
        return "old file alone" if content == old[0] else "new file alone"

    _killed_at_each_change(
        server,
        tenant,
        [sys.executable, "-c", _PLAIN_EXPORT_KILLED_AT_A_RENAME, str(out)],
        out,
        old,
        state,
        order=["old pair", "old file alone", "new file alone"],
        finished=[out.name],
    )
