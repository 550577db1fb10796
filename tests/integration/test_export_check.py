"""Checking an export offline (`sealtrail.check_export`, what `sealtrail
checkpoint --check FILE.manifest.json` does before it asks the server), as an
auditor holding only the files would try to make it pass: what the statement
signs held to what is possible, a statement of a newer Sealtrail, and the
file or its manifest edited."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

import grpc
import psycopg
import pytest
from click.testing import CliRunner
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sealtrail import (
    AuditClient,
    ExportMismatchError,
    RpcFailedError,
    build_event,
    build_filter,
    check_export,
)
from sealtrail import _cli as cli
from sealtrail._export_check import _RowCounter
from sealtrail.tlog import ExportStatement, Signer, generate_signer_key, sign_note
from sealtrail_server.api.export import ExportRpcs
from tests.conftest import SIGNING_KEY, ServerThread, database_of_its_own
from tests.integration.test_export import seed

KEY = Signer.parse(SIGNING_KEY).verifier.text()


def _resigned(kept: Path, statement: ExportStatement | str) -> None:
    """The manifest at `kept` given `statement` (or a statement's text),
    signed by the log's key, and every field it signs: what only the key's
    holder could write."""
    manifest = json.loads(kept.read_text(encoding="utf-8"))
    if isinstance(statement, ExportStatement):
        manifest.update(statement.manifest_fields())
        statement = statement.text()
    manifest["statement"] = sign_note(statement, Signer.parse(SIGNING_KEY))
    kept.write_text(json.dumps(manifest), encoding="utf-8")


def _export(client: AuditClient, out: Path, **kwargs: Any) -> Path:
    seed(client)
    client.export(out, manifest_file=True, **kwargs)
    return out.with_name(out.name + ".manifest.json")


def test_a_filtered_export_signing_more_rows_than_its_range_holds_fails_naming_them(
    client: AuditClient, tmp_path: Path
) -> None:
    """Only an unfiltered export was held to its range (rows and seqs removed
    by retention, the range's size): a filtered one's statement could sign 3
    rows and 2 removed of seqs 2..5, 5 of 4 seqs, and pass. A filter selects
    some of the range: rows and removed are at most its size."""
    kept = _export(client, tmp_path / "some.csv", format="csv", first_seq=2, last_seq=5,
                   filter=build_filter(actor="user_2"))  # fmt: skip
    signed = check_export(kept, key=KEY).statement
    assert signed.filtered and (signed.row_count, signed.removed_count) == (1, 0)

    _resigned(kept, replace(signed, row_count=3, first_seq=2, last_seq=5, removed_count=2))
    with pytest.raises(
        ExportMismatchError,
        match=r"^some\.csv\.manifest\.json: its statement signs a filtered export of seqs 2\.\.5"
        r" \(4 seqs\) of 3 rows and 2 removed by retention: 1 seq too many$",
    ):
        check_export(kept, key=KEY)
    # As many as the range holds is possible (each of its events matched): the
    # numbers pass, and the file, of one row, is then what differs.
    _resigned(kept, replace(signed, row_count=2, first_seq=2, last_seq=5, removed_count=2))
    with pytest.raises(ExportMismatchError, match=r"1 row where it says 2 rows$"):
        check_export(kept, key=KEY)


def test_a_filtered_export_of_the_whole_log_is_held_to_the_log_s_size(
    client: AuditClient, tmp_path: Path
) -> None:
    kept = _export(client, tmp_path / "some.ndjson", format="ndjson",
                   filter=build_filter(actor="user_2"))  # fmt: skip
    signed = check_export(kept, key=KEY).statement
    _resigned(kept, replace(signed, removed_count=signed.tree_size))
    with pytest.raises(
        ExportMismatchError,
        match=rf"filtered export of the whole log \({signed.tree_size} seqs\) of 1 row and"
        rf" {signed.tree_size} removed by retention: 1 seq too many$",
    ):
        check_export(kept, key=KEY)


def test_a_statement_signing_seqs_its_rows_cannot_have_fails_naming_them(
    client: AuditClient, tmp_path: Path
) -> None:
    """Rows outside the range asked for, more rows than seqs between the
    first and last exported, or seqs of no row: no export reads so, and its
    MATCHES line would have said it of the file."""
    kept = _export(client, tmp_path / "some.csv", format="csv", first_seq=2, last_seq=5)
    signed = check_export(kept, key=KEY).statement
    assert (signed.first_seq, signed.last_seq, signed.row_count) == (2, 5, 4)
    for impossible, said in (
        (replace(signed, first_seq=1), "seqs 1..5 exported of the range 2..5"),
        (replace(signed, last_seq=6), "seqs 2..6 exported of the range 2..5"),
        (replace(signed, first_seq=3), "4 rows of seqs 3..5 (3 seqs)"),
        (replace(signed, last_seq=1), "seqs 2..1 exported"),
        (replace(signed, first_seq=0, last_seq=0), "4 rows of no seq"),
        (replace(signed, row_count=0), "no row, of seqs 2..5"),
    ):
        _resigned(kept, impossible)
        with pytest.raises(ExportMismatchError, match=f"its statement signs {re.escape(said)}, "):
            check_export(kept, key=KEY)


@pytest.mark.parametrize("version", [3, 12])
def test_a_statement_of_a_newer_version_says_to_upgrade_the_client(
    client: AuditClient, tmp_path: Path, version: int
) -> None:
    """A statement v3 (of a Sealtrail newer than this client) read as none:
    `not an export statement: its text does not begin with 'sealtrail export
    statement v2'`, as if forged; it is one this client cannot read."""
    kept = _export(client, tmp_path / "audit.csv", format="csv")
    text = check_export(kept, key=KEY).statement.text()
    newer = text.replace(" v2\n", f" v{version}\n", 1) + "a line v3 adds\n"
    _resigned(kept, newer)
    with pytest.raises(
        ExportMismatchError,
        match=rf"^the export's statement is a v{version}, made by a newer Sealtrail: upgrade"
        r" the client$",
    ):
        check_export(kept, key=KEY)
    # Signed by another key, it is no statement of this log, newer or not.
    manifest = json.loads(kept.read_text(encoding="utf-8"))
    manifest["statement"] = sign_note(newer, generate_signer_key("sealtrail.test/log"))
    kept.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ExportMismatchError, match="no signature by a known key"):
        check_export(kept, key=KEY)


@pytest.mark.parametrize("version", [2, 9])
def test_a_manifest_of_a_newer_version_says_to_upgrade_the_client(
    client: AuditClient, tmp_path: Path, version: int
) -> None:
    """A manifest's `version` was never read: one of a newer Sealtrail
    (version 2) was checked as a version 1, whatever it had come to mean.
    It says to upgrade the client; a version none writes is no manifest."""
    kept = _export(client, tmp_path / "audit.csv", format="csv")
    manifest = json.loads(kept.read_text(encoding="utf-8"))
    assert manifest["version"] == 1
    kept.write_text(json.dumps({**manifest, "version": version}), encoding="utf-8")
    with pytest.raises(
        ExportMismatchError,
        match=rf"^audit\.csv\.manifest\.json is a v{version}, made by a newer Sealtrail: upgrade"
        r" the client$",
    ):
        check_export(kept, key=KEY)
    for bad in (0, -2, "2", True, 1.0, None):
        kept.write_text(json.dumps({**manifest, "version": bad}), encoding="utf-8")
        with pytest.raises(
            ExportMismatchError,
            match=r"is JSON but no export manifest \(its format is not"
            r" 'sealtrail-export-manifest' of version 1\)$",
        ):
            check_export(kept, key=KEY)
    kept.write_text(json.dumps(manifest), encoding="utf-8")
    assert check_export(kept, key=KEY).rows == manifest["row_count"]


def _drop_middle_row(content: bytes) -> bytes:
    lines = content.split(b"\r\n")
    return b"\r\n".join(lines[:3] + lines[4:])


def _duplicate_a_row(content: bytes) -> bytes:
    lines = content.split(b"\r\n")
    return b"\r\n".join(lines[:3] + lines[2:])


def _swap_two_rows(content: bytes) -> bytes:
    lines = content.split(b"\r\n")
    return b"\r\n".join([lines[0], lines[2], lines[1], *lines[3:]])


# A spreadsheet's or an editor's round trip is said as such: the rows may
# all be there, and the file is still not the one the key signed.
SAVED_AGAIN = r" \(saved again by a spreadsheet or an editor\?\)"
TAMPERINGS: dict[str, tuple[str, Callable[[bytes], bytes], str]] = {
    "row dropped": ("csv", _drop_middle_row, r"rows$"),
    "row duplicated": ("csv", _duplicate_a_row, r"rows$"),
    "rows reordered": ("csv", _swap_two_rows, r"sha256 \w+ where it says \w+$"),
    "byte order mark": (
        "csv",
        lambda content: b"\xef\xbb\xbf" + content,
        r"; it begins with a byte order mark, which no export does" + SAVED_AGAIN + "$",
    ),
    "LF line ends": (
        "csv",
        lambda content: content.replace(b"\r\n", b"\n"),
        r"; its lines end in LF, a CSV export's in CRLF" + SAVED_AGAIN + "$",
    ),
    "field added": (
        "json",
        lambda content: content.replace(b"[\n{", b'[\n{"x": 1, ', 1),
        r"sha256 \w+ where it says \w+$",
    ),
    "CRLF line ends": (
        "ndjson",
        lambda content: content.replace(b"\n", b"\r\n"),
        r"; its lines end in CRLF, an NDJSON export's in LF" + SAVED_AGAIN + "$",
    ),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
@pytest.mark.parametrize("manifest_too", [False, True], ids=["file", "file and manifest"])
def test_an_export_edited_fails_however_its_manifest_is_made_to_match(
    client: AuditClient, tmp_path: Path, tampering: str, manifest_too: bool
) -> None:
    """What an auditor holding the files could try: every edit of the file
    (a spreadsheet's round trip too: a byte order mark, other line ends)
    fails, its manifest rewritten to its new digest and counts or not: the
    statement signs the bytes sent, not their meaning."""
    format, edit, said = TAMPERINGS[tampering]
    out = tmp_path / f"audit.{format}"
    kept = _export(client, out, format=format)
    content = out.read_bytes()
    edited = edit(content)
    assert edited != content
    out.write_bytes(edited)
    if manifest_too:
        manifest = json.loads(kept.read_text(encoding="utf-8"))
        found = _forged_counts(out, manifest)
        kept.write_text(json.dumps({**manifest, **found}), encoding="utf-8")
        what = r"does not say what its signed statement does: sha256 "
    else:
        what = r"audit\.\w+ is not the export audit\.\w+\.manifest\.json describes: .*" + said
    with pytest.raises(ExportMismatchError, match=what):
        check_export(kept, key=KEY)


def _forged_counts(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What a forger writes in the manifest of an edited file: its bytes,
    digest and rows, as the check counts them."""
    content = out.read_bytes()
    counter = _RowCounter(manifest["media_type"])
    counter.update(content)
    return {
        "byte_count": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "row_count": counter.rows(),
    }


def test_a_manifest_naming_a_field_twice_is_refused(client: AuditClient, tmp_path: Path) -> None:
    """JSON read last name first (Python, jq) took a manifest with `filter`
    twice, `{}` first and the signed filter last: it passed, and whoever read
    it with their eyes, or a reader that keeps the first, saw an unfiltered
    export. A name twice is refused, whichever value is signed."""
    kept = _export(client, tmp_path / "some.csv", format="csv", first_seq=2, last_seq=5,
                   filter=build_filter(actor="user_2"))  # fmt: skip
    check_export(kept, key=KEY)
    text = kept.read_text(encoding="utf-8")
    kept.write_text('{"filter": "{}", ' + text.lstrip()[1:], encoding="utf-8")
    with pytest.raises(ExportMismatchError, match=r"names 'filter' twice"):
        check_export(kept, key=KEY)


def test_an_export_filtered_by_a_user_agent_is_checked_offline_and_its_filter_held(
    client: AuditClient, tmp_path: Path
) -> None:
    """The user agent an export was filtered by (EventFilter.user_agent) is in
    its signed filter: check_export says it as the export asked for it, and a
    manifest saying another client, or none, is refused (its filter's digest
    no longer the signed one)."""
    kept = _export(client, tmp_path / "curl.ndjson", format="ndjson",
                   filter=build_filter(actions="user.*", user_agent="Curl"))  # fmt: skip
    checked = check_export(kept, key=KEY)
    assert checked.filtered and checked.filter is not None
    assert json.loads(checked.filter)["userAgent"] == "Curl"
    assert '"userAgent":"Curl"' in checked.selected
    refused_when_told(
        kept,
        checked.filter.replace('"Curl"', '"Wget"'),
        json.dumps({k: v for k, v in json.loads(checked.filter).items() if k != "userAgent"}),
    )


def refused_when_told(kept: Path, *filters: str) -> None:
    """The manifest `kept`, saying each of `filters` (EventFilter JSON) in
    place of the filter it signed, is refused by check_export naming the filter
    (its digest no longer the signed one)."""
    manifest = json.loads(kept.read_text(encoding="utf-8"))
    for told in filters:
        kept.write_text(json.dumps(manifest | {"filter": told}), encoding="utf-8")
        with pytest.raises(ExportMismatchError, match="filter"):
            check_export(kept, key=KEY)


def test_an_unfiltered_ndjson_export_of_the_whole_log_is_held_to_the_signed_root(
    client: AuditClient, tmp_path: Path
) -> None:
    """An NDJSON export holds the records as hashed: of the whole log,
    unfiltered, none removed by retention, its lines' leaves are the signed
    tree's, so the root over them is recomputed and held to the checkpoint's.
    Without it, a statement the key signed of other records (a server's
    fault, its key's misuse) passed: the file was the statement's word alone."""
    kept = _export(client, tmp_path / "audit.ndjson", format="ndjson")
    found = check_export(kept, key=KEY)
    assert found.root_recomputed
    assert found.rows == found.statement.tree_size
    # Of a range, no root is recomputed: its rows are not all the tree's leaves.
    ranged = check_export(_export(client, tmp_path / "some.ndjson", format="ndjson",
                                  first_seq=2, last_seq=5), key=KEY)  # fmt: skip
    assert not ranged.root_recomputed
    assert ranged.unproven is not None and "seqs 2..5" in ranged.unproven

    # One record altered, and the statement signed of the altered file.
    out = tmp_path / "audit.ndjson"
    altered = out.read_bytes().replace(b'"actor"', b'"actoR"', 1)
    out.write_bytes(altered)
    signed = found.statement
    _resigned(kept, replace(signed, sha256=hashlib.sha256(altered).digest()))
    with pytest.raises(
        ExportMismatchError,
        match=r"^audit\.ndjson's records are not the log its checkpoint signs: the root over"
        rf" their {signed.tree_size} leaves is \S+ where the checkpoint signs \S+$",
    ):
        check_export(kept, key=KEY)


# One byte of an event's cell changed, in a CSV's and a JSON array's rows:
# `user_2`, the actor's id, made `user_7`.
ONE_BYTE: Final = (b"user_2", b"user_7")


# An event of every field a record holds, its numbers such as JSON and CSV
# write otherwise than RFC 8785 (`1e-07`, `12.0`), its text such as a CSV cell
# neutralises or a JSON string escapes, for its row to be rebuilt into it.
EVERY_FIELD: Final[dict[str, Any]] = {
    "action": "invoice.pay", "actor_id": "=svc", "actor_type": "service",
    "actor_email": "b\u00f6t@example.com", "actor_display_name": "Bot \U0001f916",
    "credential_kind": "api_key", "credential_id": "key_8f3a", "credential_hint": "a1b2",
    "resource_type": "invoice", "resource_id": "inv_1", "resource_name": "'quoted",
    "category": "billing", "severity": "warning", "outcome": "denied",
    "description": 'line\nbreak, "quotes", \x7f', "idempotency_key": "k-1",
    "details": {"tiny": 1e-7, "big": 1e21, "whole": 12.0, "neg": -0.5,
                "nested": {"\ue000": [1, None, True]}, "\U0001f600": "x"},
    "changes": [("role", None, "admin"), {"field": "seats", "after": 3}],
    "ip": "2001:db8::1", "user_agent": "curl/8", "country": "ch",
    "request_id": "0193a1b2-0000-7000-8000-000000000001",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
    "http_method": "post", "http_route": "/v1/invoices/{id}", "http_status_code": 403,
    "duration_ms": 12.5, "actor_roles": ["admin", "bill,ing", "\u00e9quipe"],
}  # fmt: skip


@pytest.mark.parametrize("format", ["csv", "json"])
def test_an_unfiltered_csv_or_json_export_of_the_whole_log_is_held_to_the_signed_root(
    client: AuditClient, tmp_path: Path, format: str
) -> None:
    """A CSV's cells and a JSON array's events are each rebuilt into the
    record as hashed (docs/record-format.md): of the whole log, unfiltered,
    none removed by retention, the root over their leaves is recomputed and
    held to the checkpoint's, as an NDJSON's lines were. Before, such a file
    was the statement's word alone: rows the service read wrong, and signed,
    passed as `MATCHES`."""
    client.record(build_event(**EVERY_FIELD))
    out = tmp_path / f"audit.{format}"
    kept = _export(client, out, format=format)
    found = check_export(kept, key=KEY)
    assert found.root_recomputed and found.unproven is None
    assert found.selected.endswith(
        ", unfiltered, each record in the signed tree (its root recomputed)"
    )

    content = out.read_bytes()
    altered = content.replace(*ONE_BYTE, 1)
    assert len(altered) == len(content) and altered != content
    out.write_bytes(altered)
    # The file alone edited: its digest is not the signed one.
    with pytest.raises(ExportMismatchError, match=r"sha256 \w+ where it says \w+$"):
        check_export(kept, key=KEY)
    # And the statement signed of the altered file (a server's fault, its key's misuse).
    _resigned(kept, replace(found.statement, sha256=hashlib.sha256(altered).digest()))
    with pytest.raises(
        ExportMismatchError,
        match=rf"^audit\.{format}'s row of seq \d+ is not the record its leaf_hash is of:"
        r" its cells say another event, or its record was changed in the database",
    ):
        check_export(kept, key=KEY)


@pytest.mark.parametrize("format", ["csv", "json"])
def test_the_server_refuses_to_export_a_record_rewritten_behind_its_leaf(
    migrated_database_url: str, tenant: str, tmp_path: Path, format: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A database superuser rewrites a record, its leaf left: the checkpoint,
    signed over stored hashes, still holds, and the server signed an export
    showing the rewritten record beside its old leaf; only the client's
    rebuilding of the rows told. The server holds each row to its leaf as it
    writes it: DATA_LOSS naming the seq, logged and counted, and no manifest
    nor statement signed, no file left."""
    reader = InMemoryMetricReader()
    with database_of_its_own(migrated_database_url, "rowleaf") as url:
        server = ServerThread(url, meter_provider=MeterProvider(metric_readers=[reader]))
        try:
            with (
                AuditClient(server.target, token=server.token(tenant)) as client,
                psycopg.connect(url, autocommit=True) as sql,
            ):
                seed(client)
                out = tmp_path / f"audit.{format}"
                with (
                    _user_2_rewritten(sql, tenant) as seq,
                    caplog.at_level(logging.ERROR, logger="sealtrail_server.api.export"),
                    pytest.raises(RpcFailedError) as refused,
                ):
                    client.export(out, format=format, manifest_file=True)
                client.export(out, format=format, manifest_file=True)  # restored: signed
        finally:
            server.close()
    assert refused.value.code == grpc.StatusCode.DATA_LOSS
    assert refused.value.reason == "INTEGRITY_FAILURE"
    assert f"the record at seq {seq} " in refused.value.message
    assert len(refused.value.message.encode()) <= 100, refused.value.message
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [m for m in said if tenant in m and f"seq {seq} " in m], said
    assert _counted(reader, "sealtrail.integrity.failures") == 1
    assert check_export(out.with_name(out.name + ".manifest.json"), key=KEY).root_recomputed


def _counted(reader: InMemoryMetricReader, name: str) -> float:
    """The sum of counter `name`'s points, as `reader` reads them now."""
    data = reader.get_metrics_data()
    assert data is not None
    return sum(
        point.value  # type: ignore[union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    )


def test_a_filtered_export_says_its_rows_are_not_proven(
    client: AuditClient, tmp_path: Path
) -> None:
    """A filtered export carries no inclusion proofs (ExportManifest has
    none): its rows are the service's word, said so, not proven."""
    kept = _export(client, tmp_path / "some.csv", format="csv",
                   filter=build_filter(actor="user_2"))  # fmt: skip
    found = check_export(kept, key=KEY)
    assert not found.root_recomputed
    assert found.unproven == (
        "a filtered export carries no inclusion proofs (to prove each event, write a bundle"
        " with the same filter: sealtrail bundle -o DIR, and verify it); nor that it holds"
        " every event matching its filter, which is the service's word; a filter's times"
        " are when the events occurred, by their callers' clocks: a bundle of a period by"
        " received time proves it holds every event of the period (sealtrail bundle"
        " --received PERIOD -o DIR, and verify it)"
    )


def _leaf_of_seq_1(content: bytes) -> bytes:
    """A CSV's first row's leaf_hash cell with a space inside, as hex allows."""
    leaf = re.search(rb",([0-9a-f]{64}),", content.split(b"\r\n")[1])
    assert leaf is not None
    return content.replace(leaf[1], leaf[1][:2] + b" " + leaf[1][2:], 1)


def _time_of_seq_1(content: bytes, written: Callable[[datetime], str]) -> bytes:
    """A JSON export's first event's occurredAt written by `written`, the same moment."""
    said = re.search(rb'"occurredAt": "([^"]+)"', content)
    assert said is not None
    moment = datetime.fromisoformat(said[1].decode())
    return content.replace(said[1], written(moment).encode(), 1)


# What the server never writes, though its row is rebuilt into the record its
# leaf_hash is of (the reader seeing one thing, the record proven another, or
# the file not the server's writing): (format, edit, the verdict's words).
LOOSELY_WRITTEN: Final[dict[str, tuple[str, Callable[[bytes], bytes], str]]] = {
    "a details key twice": (
        "csv",
        lambda content: content.replace(b'{""big""', b'{""whole"": 99, ""big""', 1),
        r"row of seq 1 names 'whole' twice in its details: JSON readers keep one or the"
        r" other, and no server writes it so$",
    ),
    "a changes key twice": (
        "csv",
        lambda content: content.replace(b'[{""after""', b'[{""after"": ""root"", ""after""', 1),
        r"row of seq 1 names 'after' twice in its changes",
    ),
    "a formula guard taken off": (
        "csv",
        lambda content: content.replace(b",'=svc,", b",=svc,", 1),
        r"row of seq 1 is not the server's writing: its actor_id '=svc', where the server"
        r" writes \"'=svc\"$",
    ),
    "a seq in other digits": (
        "csv",
        lambda content: content.replace(b"\r\n3,", "\r\n\u0663,".encode(), 1),
        r"row of seq 3 is not the server's writing: its seq '\u0663', where the server writes"
        r" '3'$",
    ),
    "a seq with spaces": (
        "csv",
        lambda content: content.replace(b"\r\n3,", b"\r\n 3 ,", 1),
        r"row of seq 3 is not the server's writing: its seq ' 3 ', where the server writes '3'$",
    ),
    "a leaf_hash with a space": (
        "csv",
        _leaf_of_seq_1,
        r"row of seq 1 is not the server's writing: its leaf_hash '[0-9a-f]{2} [0-9a-f]{9}\.\.\.',"
        r" where the server writes '[0-9a-f]{12}\.\.\.'$",
    ),
    "a cell quoted needlessly": (
        "csv",
        lambda content: content.replace(b",invoice.pay,", b',"invoice.pay",', 1),
        r"row of seq 1 is not the server's writing: its action '\"invoice\.pay\"', where the"
        r" server writes 'invoice\.pay'$",
    ),
    "a member twice": (
        "json",
        lambda content: content.replace(b'[\n{"id"', b'[\n{"action": "invoice.void", "id"', 1),
        r"row of seq 1 names 'action' twice in its event: JSON readers keep one or the other",
    ),
    "a time with an offset": (
        "json",
        lambda content: _time_of_seq_1(
            content, lambda moment: moment.astimezone(timezone(timedelta(hours=5))).isoformat()
        ),
        r"row of seq 1 is not the server's writing: its occurredAt '\S+\+05:00', where the"
        r" server writes '\S+Z'$",
    ),
    "a time with no offset": (
        "json",
        lambda content: _time_of_seq_1(
            content, lambda moment: moment.replace(tzinfo=None).isoformat()
        ),
        r"row of seq 1 is not the server's writing: its occurredAt '[0-9T:.-]+', where the"
        r" server writes '\S+Z'$",
    ),
    "an enum in mixed case": (
        "json",
        lambda content: content.replace(b'"SEVERITY_WARNING"', b'"SEVERITY_Warning"', 1),
        r"row of seq 1 is not the server's writing: its severity 'SEVERITY_Warning', where the"
        r" server writes 'SEVERITY_WARNING'$",
    ),
    "a seq as a number": (
        "json",
        lambda content: content.replace(b'"seq": "1",', b'"seq": 1,', 1),
        r"row of seq 1 is not the server's writing: its seq 1, where the server writes '1'$",
    ),
    "a seq in other digits in JSON": (
        "json",
        lambda content: content.replace(b'"seq": "3",', '"seq": "\u0663",'.encode(), 1),
        r"row of seq 3 is not the server's writing: its seq '\u0663', where the server writes"
        r" '3'$",
    ),
    "a whole number as a float": (
        "json",
        lambda content: re.sub(rb'"whole": 12([,}])', rb'"whole": 12.0\1', content, count=1),
        r"row of seq 1 is not the server's writing: its details member is not written as the"
        r" server writes JSON \(its spacing, escapes or numbers\)$",
    ),
    "no space after a colon": (
        "json",
        lambda content: content.replace(b'"action": "invoice.pay"', b'"action":"invoice.pay"', 1),
        r"row of seq 1 is not the server's writing: its action member is not written as the"
        r" server writes JSON \(its spacing, escapes or numbers\)$",
    ),
}  # fmt: skip


@pytest.mark.parametrize("loosely", LOOSELY_WRITTEN)
def test_a_row_the_server_writes_otherwise_fails_though_it_is_rebuilt_into_its_record(
    client: AuditClient, tmp_path: Path, loosely: str
) -> None:
    """A row is proven the log's record as the server wrote it, not any text
    that reads back into it: a JSON key twice (read by its last, `json.loads`
    as every Python reader, and by its first elsewhere), a cell's formula
    guard taken off, a seq in other digits, a time in another zone or in
    none (read in the verifier's own zone), an enum in another case were each
    rebuilt into the very record, and passed. Each fails naming its seq and
    what is written otherwise; the statement signed of the edited file (a
    server's fault, its key's misuse), else its digest fails it first."""
    format, edit, said = LOOSELY_WRITTEN[loosely]
    client.record(build_event(**EVERY_FIELD))
    out = tmp_path / f"audit.{format}"
    kept = _export(client, out, format=format)
    signed = check_export(kept, key=KEY)
    assert signed.root_recomputed
    content = out.read_bytes()
    edited = edit(content)
    assert edited != content
    out.write_bytes(edited)
    _resigned(kept, replace(signed.statement, sha256=hashlib.sha256(edited).digest(),
                            byte_count=len(edited)))  # fmt: skip
    with pytest.raises(ExportMismatchError, match=rf"^audit\.{format}'s {said}"):
        check_export(kept, key=KEY)


def test_a_csv_cell_longer_than_any_the_server_writes_fails_saying_so(
    client: AuditClient, tmp_path: Path
) -> None:
    """A cell over Python's CSV field limit (131,072 characters) raised
    `_csv.Error` out of check_export, a traceback in `sealtrail verify`. No
    record makes one (a record is at most 64 KiB): it fails naming its row."""
    out = tmp_path / "audit.csv"
    kept = _export(client, out, format="csv")
    signed = check_export(kept, key=KEY)
    content = out.read_bytes()
    first_row = content.split(b"\r\n")[1]
    edited = content.replace(first_row, first_row.replace(b",", b"," + b"x" * 200_000 + b",", 1))
    out.write_bytes(edited)
    _resigned(kept, replace(signed.statement, sha256=hashlib.sha256(edited).digest(),
                            byte_count=len(edited)))  # fmt: skip
    with pytest.raises(
        ExportMismatchError,
        match=r"^audit\.csv's row 1 has a cell over 131,072 characters, longer than any the"
        r" server writes \(a record is at most 64 KiB\)$",
    ):
        check_export(kept, key=KEY)


@contextmanager
def _user_2_rewritten(sql: psycopg.Connection[Any], tenant: str) -> Iterator[int]:
    """user_2's record rewritten as a database superuser would, its trigger
    off and its leaf left (what VerifyLog says LEAF_MISMATCH of), for the
    block: its seq. Put back after, however the block ends: the database is
    every worker's."""
    sql.execute("SET session_replication_role = replica")
    rewritten = sql.execute(
        "UPDATE events SET record = replace(record, '\"user_2\"', '\"user_7\"')"
        " WHERE tenant_id = %s AND record LIKE '%%\"user_2\"%%' RETURNING seq",
        [tenant],
    ).fetchall()
    assert len(rewritten) == 1
    seq = int(rewritten[0][0])
    try:
        yield seq
    finally:
        sql.execute(
            "UPDATE events SET record = replace(record, '\"user_7\"', '\"user_2\"')"
            " WHERE tenant_id = %s AND seq = %s",
            [tenant, seq],
        )
        sql.execute("SET session_replication_role = DEFAULT")


def _rewritten_in_the_file(out: Path, kept: Path, statement: ExportStatement) -> int:
    """The exported file at `out` showing user_x where user_2 was, its
    statement (`statement`, of `kept`) signed of the edited file: what a
    server that signed a rewritten record sent (before it held each row to
    its leaf). The seq of the row edited."""
    content = out.read_bytes()
    edited = content.replace(b'"user_2"', b'"user_x"').replace(b",user_2,", b",user_x,")
    assert edited != content and len(edited) == len(content)
    out.write_bytes(edited)
    _resigned(kept, replace(statement, sha256=hashlib.sha256(edited).digest()))
    text = edited.decode()
    if out.suffix == ".csv":
        [seq] = [
            row["seq"]
            for row in csv.DictReader(io.StringIO(text, newline=""))
            if row["actor_id"] == "user_x"
        ]
    else:
        [seq] = [event["seq"] for event in json.loads(text) if event["actor"]["id"] == "user_x"]
    return int(seq)


@pytest.fixture
def server_signing_rewritten_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's servers as they were before they held each row of a CSV
    or JSON export to its leaf: they sign a record rewritten behind it."""
    monkeypatch.setattr(ExportRpcs, "_refuse_unless_of_its_leaf", lambda *_: None)


@pytest.mark.parametrize("format", ["csv", "json"])
def test_a_row_not_of_its_leaf_fails_a_filtered_export_naming_its_seq(
    client: AuditClient, tmp_path: Path, format: str
) -> None:
    """A row whose cells do not hash to its own leaf_hash needs nothing but
    the row to be found: before, only an export of the whole log, unfiltered,
    had its rows rebuilt, and a filtered one showing the rewritten actor
    passed as MATCHES, its rows merely not proven (helper-554). The file
    edited and its statement signed of it: what a server signed of a record
    rewritten behind its leaf before it held each row to its leaf."""
    seed(client)
    out = tmp_path / f"q4.{format}"
    client.export(out, format=format, manifest_file=True, filter=build_filter(actions="report.*"))
    kept = out.with_name(out.name + ".manifest.json")
    seq = _rewritten_in_the_file(out, kept, check_export(kept, key=KEY).statement)
    with pytest.raises(
        ExportMismatchError,
        match=rf"^q4\.{format}'s row of seq {seq} is not the record its leaf_hash is of:",
    ):
        check_export(kept, key=KEY)


@pytest.mark.parametrize("format", ["csv", "json"])
async def test_either_client_s_export_holds_each_row_to_its_leaf_naming_its_seq(
    client: AuditClient,
    server: ServerThread,
    tenant: str,
    sql: psycopg.Connection[Any],
    tmp_path: Path,
    format: str,
    server_signing_rewritten_rows: None,
) -> None:
    """`AuditClient.export` and the async client's checked the bytes against
    the manifest's digest only: from a server that signed a record rewritten
    behind its leaf, the file was handed over as a good export, which
    `sealtrail verify` then failed. Each row of a CSV or JSON export is held
    to its own leaf_hash: RowNotOfItsLeafError (an ExportError) naming its
    seq, the file and its manifest kept as evidence."""
    from sealtrail import AsyncAuditClient, ExportError, RowNotOfItsLeafError

    seed(client)
    with _user_2_rewritten(sql, tenant) as seq:
        out = tmp_path / f"sync.{format}"
        with pytest.raises(RowNotOfItsLeafError) as failed:
            client.export(out, format=format, manifest_file=True)
        async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
            with pytest.raises(RowNotOfItsLeafError) as failed_async:
                await audit.export(tmp_path / f"async.{format}", format=format)
        client.export(tmp_path / "lines.ndjson")  # its lines are the records: no leaf shown
    for error, name in ((failed.value, "sync"), (failed_async.value, "async")):
        assert isinstance(error, ExportError) and error.seq == seq
        assert str(error).startswith(
            f"{name}.{format}'s row of seq {seq} is not the record its leaf_hash is of:"
        ), error
    assert out.is_file() and out.with_name(out.name + ".manifest.json").is_file()
    assert (tmp_path / f"async.{format}").is_file()


def test_the_cli_will_not_export_a_record_rewritten_behind_its_leaf(
    client: AuditClient,
    server: ServerThread,
    tenant: str,
    sql: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server refuses the export, naming the seq, and no file is left.
    From a server that signs it (one before it held each row to its leaf),
    `sealtrail export` exits 1 rather than say `exported`, the file and its
    manifest kept as evidence of the tampering; `sealtrail verify` and
    `checkpoint --check` fail it, naming its seq."""
    seed(client)
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    out = tmp_path / "q4.csv"
    with _user_2_rewritten(sql, tenant) as seq:
        refused = cli_output(env, "export", "--since", "2000-01-01", "-o", str(out), exit_code=1)
        assert f"the record at seq {seq} " in refused and "exported" not in refused, refused
        assert not out.exists()
        monkeypatch.setattr(ExportRpcs, "_refuse_unless_of_its_leaf", lambda *_: None)
        failed_line = f"FAILED: q4.csv's row of seq {seq} is not the record its leaf_hash is of:"
        exported = cli_output(env, "export", "--since", "2000-01-01", "-o", str(out), exit_code=1)
        assert failed_line in exported and "exported" not in exported, exported
        kept = out.with_name(out.name + ".manifest.json")
        assert out.is_file() and kept.is_file()
        verified = cli_output({}, "verify", str(out), "--key", KEY, exit_code=1)
        assert failed_line in verified and "MATCHES" not in verified, verified
        checked = cli_output(env, "checkpoint", "--check", str(kept), "--key", KEY, exit_code=1)
        assert failed_line in checked and "CONSISTENT" not in checked, checked
        whole = tmp_path / "all.csv"
        exported = cli_output(env, "export", "-o", str(whole), exit_code=1)
        assert f"FAILED: all.csv's row of seq {seq} is not" in exported, exported


def cli_output(env: dict[str, str], *arguments: str, exit_code: int) -> str:
    """What `sealtrail *arguments` prints, stdout and stderr, its exit code
    asserted (tests.filter_checks' own imports this module)."""
    ran = CliRunner().invoke(cli.main, list(arguments), env=env)
    assert ran.exit_code == exit_code, ran.output
    return ran.output
