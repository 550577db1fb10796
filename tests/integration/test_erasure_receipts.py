"""Erasure receipts signed by the deployment's key, and checked offline
against pinned verifier keys: a real erasure's receipt verifies; a database
superuser's receipt (a `tenant_erasures` row reusing the tenant's genuine
latest checkpoint), a receipt edited in the database, or a checkpoint's
signature presented as a receipt's, is refused (helper-221)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from google.protobuf import json_format

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    ErasureReceiptError,
    NewerReceiptError,
    ReceiptKeyError,
    ReceiptMismatchError,
    ReceiptSignatureError,
    UnsignedReceiptError,
    build_event,
    verify_erasure_receipt,
)
from sealtrail._cli import main as cli
from sealtrail.tlog import (
    ERASURE_RECEIPT_HEADER,
    Signer,
    generate_signer_key,
    open_note,
    parse_checkpoint,
    sign_note,
)
from sealtrail.v1 import retention_pb2
from tests.conftest import (
    SIGNING_KEY,
    ServerThread,
    database_of_its_own,
    run_operator,
    token_id_of,
)
from tests.tenant_rows import rows_of, tenant_tables

VERIFIER = Signer.parse(SIGNING_KEY).verifier
KEY = VERIFIER.text()


def logged_tenant(server: ServerThread, tenant: str, events: int = 5) -> str:
    """The tenant with `events` events signed at their size; its admin token."""
    token = server.token(tenant)
    with AuditClient(server.target, token=token) as client:
        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(events)])
        client.get_checkpoint(fresh=True)
    return token


def erased(server: ServerThread, tenant: str) -> retention_pb2.ErasureReceipt:
    """The receipt of the tenant's erasure, by the API, its log of 5 events."""
    token = logged_tenant(server, tenant)
    with AuditClient(server.target, token=token) as client:
        return client.erase_tenant(tenant)


def kept_receipt(database_url: str, tenant: str) -> retention_pb2.ErasureReceipt:
    """The receipt kept of the tenant, as `sealtrail-server tenant erase`
    answers it for an id erased already (it reads `tenant_erasures`)."""
    result = run_operator(database_url, "tenant", "erase", tenant, "--confirm", tenant)
    assert result.exit_code == 0, result.output
    return json_format.Parse(result.stdout, retention_pb2.ErasureReceipt())


def test_a_real_erasures_receipt_verifies_offline(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    token = logged_tenant(server, tenant)
    token_id = token_id_of(sql, token)  # gone with the tenant
    with AuditClient(server.target, token=token) as client:
        receipt = client.erase_tenant(tenant)
        check = client.verify_erasure_receipt(receipt, key=KEY)
    assert receipt.signed_receipt.startswith(f"{ERASURE_RECEIPT_HEADER}\n")
    assert check.tenant_id == tenant and check.origin == f"sealtrail.test/log/{tenant}"
    assert (check.final_tree_size, check.final_root_hash) == (
        receipt.final_tree_size,
        receipt.final_root_hash,
    )
    assert check.erased_by == token_id == receipt.erased_by_token_id
    assert check.erased_at == receipt.erase_time.ToDatetime(tzinfo=UTC)
    assert check.removed_rows == dict(receipt.removed_rows)
    assert check.signed_by == [KEY]
    # Its JSON, as `sealtrail erase-tenant` prints it; the receipt kept, as the
    # operator's command answers it again; the async client's twin.
    printed = json_format.MessageToJson(receipt, indent=2)
    assert verify_erasure_receipt(printed, key=[KEY]) == check
    assert verify_erasure_receipt(kept_receipt(migrated_database_url, tenant), key=KEY) == check

    async def on_the_async_client() -> Any:
        async with AsyncAuditClient(server.target, token="unused") as client:
            return await client.verify_erasure_receipt(receipt, key=KEY)

    assert asyncio.run(on_the_async_client()) == check
    stranger = generate_signer_key("sealtrail.test/log").verifier.text()
    with pytest.raises(ReceiptKeyError, match="no given key") as unknown:
        verify_erasure_receipt(receipt, key=stranger)
    assert f"sealtrail.test/log+{VERIFIER.key_id.hex()}" in str(unknown.value)


def test_an_erasure_is_logged_with_its_events_counted(
    server: ServerThread, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's line of an erasure said "(1 events)" (helper-247)."""
    token = logged_tenant(server, tenant, events=1)
    with caplog.at_level("WARNING"), AuditClient(server.target, token=token) as client:
        client.erase_tenant(tenant)
    assert f"erased tenant {tenant} (1 event) for " in caplog.text


def test_an_operators_erasure_receipt_names_the_operator_and_verifies(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    logged_tenant(server, tenant)
    receipt = kept_receipt(migrated_database_url, tenant)  # the erasure itself, the first time
    check = verify_erasure_receipt(receipt, key=KEY)
    assert check.erased_by.startswith("sealtrail-server:") and check.final_tree_size == 5


def test_a_superusers_receipt_reusing_a_genuine_checkpoint_is_refused(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    """The tenant's rows deleted by hand and a `tenant_erasures` row written,
    its final checkpoint the tenant's latest genuine one: indistinguishable
    from a real erasure's receipt, whose signed checkpoint was all it had."""
    logged_tenant(server, tenant)
    size, root, note, issued_at = sql.execute(
        "SELECT tree_size, root_hash, note, issued_at FROM checkpoints WHERE tenant_id = %s"
        " ORDER BY tree_size DESC LIMIT 1",
        [tenant],
    ).fetchone()  # type: ignore[misc]
    with sql.transaction():
        sql.execute("SET LOCAL session_replication_role = replica")  # past the refusals
        for table in tenant_tables(sql):
            sql.execute(
                psycopg.sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(
                    psycopg.sql.Identifier(table)
                ),
                [tenant],
            )
        sql.execute(
            "INSERT INTO tenant_erasures (tenant_id, erased_at, erased_by, final_tree_size,"
            " final_root_hash, final_checkpoint, final_checkpoint_issued_at, removed_rows)"
            " VALUES (%s, now(), %s, %s, %s, %s, %s, '{\"events\": 5}')",
            [tenant, str(uuid.uuid4()), size, root, note, issued_at],
        )
    assert not any(rows_of(sql, tenant).values())
    forged = kept_receipt(migrated_database_url, tenant)
    assert forged.final_checkpoint.note == note  # a genuine checkpoint in it
    with pytest.raises(UnsignedReceiptError, match="not signed"):
        verify_erasure_receipt(forged, key=KEY)
    # A genuine receipt of another tenant's erasure copied into the row.
    other = f"{tenant}-other"
    theirs = erased(server, other)
    sql.execute(
        "UPDATE tenant_erasures SET signed_receipt = %s WHERE tenant_id = %s",
        [theirs.signed_receipt, tenant],
    )
    listed = run_operator(migrated_database_url, "tenant", "erasures")
    assert listed.exit_code == 0, listed.output
    line = next(line for line in listed.stdout.splitlines() if line.startswith(f"{tenant} "))
    assert "SIGNATURE DOES NOT MATCH" in line
    refused = run_operator(migrated_database_url, "tenant", "erase", tenant, "--confirm", tenant)
    assert refused.exit_code == 1 and "does not match" in refused.output
    forged.signed_receipt = theirs.signed_receipt
    with pytest.raises(ReceiptMismatchError, match="tenant_id"):
        verify_erasure_receipt(forged, key=KEY)


def test_an_unsigned_receipt_is_said_so_where_receipts_are_listed(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    """A receipt kept before receipts were signed (migration 0045) has none:
    `tenant erasures` says so on its line."""
    receipt = erased(server, tenant)
    sql.execute("UPDATE tenant_erasures SET signed_receipt = NULL WHERE tenant_id = %s", [tenant])
    listed = run_operator(migrated_database_url, "tenant", "erasures")
    line = next(line for line in listed.stdout.splitlines() if line.startswith(f"{tenant} "))
    assert f" by token {receipt.erased_by_token_id} " in line  # as the operator's are named
    assert line.endswith("unsigned (kept before receipts were signed: nothing proves it)")
    assert kept_receipt(migrated_database_url, tenant).signed_receipt == ""


def test_the_receipts_are_listed_as_json_for_an_auditors_script(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    """`tenant erasures` printed aligned text alone, whose `by` and status
    columns a script had to take apart; `--format json` is one array of
    objects, as `tenant list`'s, the signature's status a field of its own."""
    signed, unsigned, edited = (erased(server, f"{tenant}-{kind}") for kind in ("s", "u", "e"))
    sql.execute(
        "UPDATE tenant_erasures SET signed_receipt = NULL WHERE tenant_id = %s",
        [unsigned.tenant_id],
    )
    sql.execute(
        "UPDATE tenant_erasures SET final_tree_size = 3 WHERE tenant_id = %s", [edited.tenant_id]
    )
    listed = run_operator(migrated_database_url, "tenant", "erasures", "--format", "json")
    assert listed.exit_code == 0, listed.output
    rows = {
        row["tenant"]: row
        for row in json.loads(listed.stdout)
        if row["tenant"].startswith(f"{tenant}-")
    }
    assert rows[signed.tenant_id] == {
        "tenant": signed.tenant_id,
        "erased_at": f"{signed.erase_time.ToDatetime():%Y-%m-%dT%H:%M:%SZ}",
        "erased_by": signed.erased_by_token_id,
        "final_tree_size": signed.final_tree_size,
        "final_root_hash": base64.b64encode(signed.final_root_hash).decode(),
        "removed_rows": dict(signed.removed_rows),
        "signature": "signed",
        "signature_problem": None,
    }
    assert rows[unsigned.tenant_id]["signature"] == "unsigned"
    assert rows[unsigned.tenant_id]["signature_problem"] == "the receipt is not signed"
    assert rows[edited.tenant_id]["final_tree_size"] == 3
    assert rows[edited.tenant_id]["signature"] == "mismatch"
    assert rows[edited.tenant_id]["signature_problem"] == (
        "the receipt does not match its signature in final_tree_size"
    )


@pytest.mark.parametrize(
    ("column", "value", "field"),
    [
        ("erased_by", "sealtrail-server:someone-else", "erased_by"),
        ("erased_at", datetime(2026, 1, 1, tzinfo=UTC), "erase_time"),
        ("final_tree_size", 3, "final_tree_size"),
        ("final_root_hash", b"\x07" * 32, "final_root_hash"),
        ("removed_rows", '{"events": 1}', "removed_rows"),
    ],
)
def test_a_receipt_edited_in_the_database_is_refused(
    server: ServerThread,
    tenant: str,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
    column: str,
    value: object,
    field: str,
) -> None:
    genuine = erased(server, tenant)
    sql.execute(
        psycopg.sql.SQL("UPDATE tenant_erasures SET {} = %s WHERE tenant_id = %s").format(
            psycopg.sql.Identifier(column)
        ),
        [value, tenant],
    )
    # The server refuses to answer it; a copy of it edited alike is refused offline.
    refused = run_operator(migrated_database_url, "tenant", "erase", tenant, "--confirm", tenant)
    assert refused.exit_code == 1 and "does not match" in refused.output, refused.output
    assert field in refused.output
    edited = retention_pb2.ErasureReceipt()
    edited.CopyFrom(genuine)
    if field == "erase_time":
        edited.erase_time.FromDatetime(genuine.erase_time.ToDatetime() + timedelta(seconds=1))
    elif field == "removed_rows":
        edited.removed_rows["events"] = 1
    elif field == "final_root_hash":
        edited.final_root_hash = b"\x07" * 32
    else:
        setattr(edited, {"erased_by": "erased_by_token_id"}.get(field, field), value)
    with pytest.raises(ReceiptMismatchError, match=field):
        verify_erasure_receipt(edited, key=KEY)


def test_a_checkpoint_signature_presented_as_a_receipts_is_refused(
    server: ServerThread, tenant: str
) -> None:
    """One key signs both: a checkpoint's note is a valid signature, of
    another statement; and a receipt's is no checkpoint."""
    receipt = erased(server, tenant)
    as_receipt = retention_pb2.ErasureReceipt()
    as_receipt.CopyFrom(receipt)
    as_receipt.signed_receipt = receipt.final_checkpoint.note
    with pytest.raises(ReceiptSignatureError, match="not an erasure receipt"):
        verify_erasure_receipt(as_receipt, key=KEY)
    text, _ = open_note(receipt.signed_receipt, [VERIFIER])
    with pytest.raises(ValueError, match="size"):
        parse_checkpoint(text)
    tampered = receipt.signed_receipt.replace(
        f"\n{receipt.final_tree_size}\n", f"\n{receipt.final_tree_size + 1}\n", 1
    )
    assert tampered != receipt.signed_receipt
    as_receipt.signed_receipt = tampered
    with pytest.raises(ReceiptSignatureError, match="does not verify"):
        verify_erasure_receipt(as_receipt, key=KEY)
    assert issubclass(ReceiptSignatureError, ErasureReceiptError)


@pytest.mark.parametrize("version", [2, 10])
def test_a_receipt_of_a_newer_sealtrail_says_to_upgrade_offline_and_on_the_server(
    server: ServerThread,
    tenant: str,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
    version: int,
) -> None:
    """A receipt v2 (a newer Sealtrail's, signed by the log's key) was
    `not an erasure receipt`, a ReceiptSignatureError as of one forged, and
    the server said the receipt it kept was changed behind its back."""
    receipt = erased(server, tenant)
    text, _ = open_note(receipt.signed_receipt, [VERIFIER])
    newer_text = text.replace(" v1\n", f" v{version}\n", 1) + "a line v2 adds\n"
    newer = retention_pb2.ErasureReceipt()
    newer.CopyFrom(receipt)
    newer.signed_receipt = sign_note(newer_text, Signer.parse(SIGNING_KEY))
    said = f"the erasure receipt is a v{version}, made by a newer Sealtrail: upgrade the client"
    with pytest.raises(NewerReceiptError, match=f"^{said}$"):
        verify_erasure_receipt(newer, key=KEY)
    refused = CliRunner().invoke(
        cli, ["verify-erasure", "-", "--key", KEY], input=json_format.MessageToJson(newer)
    )
    assert refused.exit_code == 1 and refused.stderr == f"FAILED: {said}\n"
    # Signed by another key, it is no receipt of this deployment's, newer or not.
    newer.signed_receipt = sign_note(newer_text, generate_signer_key("sealtrail.test/log"))
    with pytest.raises(ReceiptKeyError):
        verify_erasure_receipt(newer, key=KEY)
    assert not issubclass(NewerReceiptError, ReceiptSignatureError)

    # Kept by a newer server: this one answers it for what it is, not edited.
    sql.execute(
        "UPDATE tenant_erasures SET signed_receipt = %s WHERE tenant_id = %s",
        [sign_note(newer_text, Signer.parse(SIGNING_KEY)), tenant],
    )
    again = run_operator(migrated_database_url, "tenant", "erase", tenant, "--confirm", tenant)
    assert again.exit_code == 1, again.output
    assert (
        f"the tenant's erasure receipt is a v{version}, made by a newer Sealtrail: upgrade this"
        " server" in again.output
    )
    assert "behind the service's back" not in again.output
    listed = run_operator(migrated_database_url, "tenant", "erasures", "--format", "json")
    (row,) = [row for row in json.loads(listed.stdout) if row["tenant"] == tenant]
    assert row["signature"] == "newer"
    assert row["signature_problem"] == (
        f"the receipt is a v{version}, made by a newer Sealtrail: upgrade this server"
    )


def test_sealtrail_verify_erasure_checks_a_saved_receipt(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    receipt = erased(server, tenant)
    saved = tmp_path / "receipt.json"
    saved.write_text(json_format.MessageToJson(receipt, indent=2))
    verified = CliRunner().invoke(cli, ["verify-erasure", str(saved), "--key", KEY])
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.startswith(f"OK: tenant {tenant} was erased at ")
    # Labelled as `sealtrail-server tenant erasures` labels it: a token's id.
    assert f" by token {receipt.erased_by_token_id} (5 events, root " in verified.stdout
    assert f"(5 events, root {base64.b64encode(receipt.final_root_hash).decode()})" in (
        verified.stdout
    )
    forged = json.loads(saved.read_text())
    forged["erasedByTokenId"] = "someone-else"
    refused = CliRunner().invoke(
        cli, ["verify-erasure", "-", "--key", KEY], input=json.dumps(forged)
    )
    assert refused.exit_code == 1
    assert refused.stderr.startswith("FAILED: ") and "erased_by" in refused.stderr


def test_sealtrail_verify_erasure_names_an_operators_erasure_as_tenant_erasures_does(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """An operator's erasure (`sealtrail-server tenant erase`) keeps
    `sealtrail-server:NAME` where a token's id would be: verify-erasure
    printed it bare, `by sealtrail-server:NAME`, where `tenant erasures`
    says `by operator NAME`."""
    logged_tenant(server, tenant)
    erased = run_operator(
        migrated_database_url, "tenant", "erase", tenant, "--confirm", tenant,
        env={"SEALTRAIL_OPERATOR": "alice"},
    )  # fmt: skip
    assert erased.exit_code == 0, erased.output
    verified = CliRunner().invoke(cli, ["verify-erasure", "-", "--key", KEY], input=erased.stdout)
    assert verified.exit_code == 0, verified.output
    assert " by operator alice (5 events, root " in verified.stdout, verified.stdout
    assert "sealtrail-server:" not in verified.stdout
    listed = run_operator(migrated_database_url, "tenant", "erasures")
    line = next(line for line in listed.stdout.splitlines() if line.startswith(f"{tenant} "))
    assert "  by operator alice  " in line


def test_tenant_erase_of_a_tenant_erased_already_says_so_once(
    server: ServerThread, tenant: str, migrated_database_url: str
) -> None:
    """The erasure logged `tenant ... was erased already; answering its
    receipt` at INFO, on the command's stderr, before the command said the
    same in its own sentence: said once, by the command."""
    receipt = erased(server, tenant)
    again = run_operator(migrated_database_url, "tenant", "erase", tenant, "--confirm", tenant)
    assert again.exit_code == 0, again.output
    assert again.stderr.count("erased already") == 1, again.stderr
    assert again.stderr == (
        f"tenant {tenant!r} was erased already, at"
        f" {receipt.erase_time.ToDatetime(UTC):%Y-%m-%dT%H:%M:%SZ} by token"
        f" {receipt.erased_by_token_id} (5 events); this command erased nothing. Its receipt:\n"
    )


def test_sealtrail_verify_erasure_refuses_a_file_that_is_no_text(tmp_path: Path) -> None:
    """A receipt file in bytes that are no UTF-8 (a download gone wrong, an
    archive) ended in a UnicodeDecodeError's traceback."""
    saved = tmp_path / "receipt.json"
    saved.write_bytes(b'{"tenantId": "\xff\xfe"}')
    refused = CliRunner().invoke(cli, ["verify-erasure", str(saved), "--key", KEY])
    assert refused.exit_code == 1 and not isinstance(refused.exception, UnicodeDecodeError)
    assert refused.stderr.startswith(f"FAILED: {saved}: not a receipt (not UTF-8 text")
    assert "Traceback" not in refused.output


def test_no_receipt_to_list_is_said_in_a_line_and_in_json_an_empty_array(
    migrated_database_url: str,
) -> None:
    """`tenant erasures` with no tenant erased printed nothing at all, which
    an operator could not tell from a listing that failed to show."""
    with database_of_its_own(migrated_database_url, "no_erasures") as own:
        listed = run_operator(own, "tenant", "erasures")
        as_json = run_operator(own, "tenant", "erasures", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout == "no tenant was erased: no erasure receipts\n"
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == []
