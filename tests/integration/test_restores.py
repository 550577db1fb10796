"""A database restored from an older backup (or a lagging replica promoted)
gives back a log shorter than the one the service signed: its next events take
the lost events' seqs, and a checkpoint of them would sign, at a size the key
had already signed, another root. These tests take a real backup (`pg_dump`)
and restore it (`pg_restore` into a new database of the same name), as
docs/operations.md does."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from sealtrail import AuditClient, RpcFailedError, UnavailableError, build_event, build_filter
from sealtrail.tlog import PurgeStatement, Signer, generate_signer_key, open_note
from sealtrail.v1 import integrity_pb2
from sealtrail_server import cli as server_cli
from sealtrail_server.integrity import checkpointer as checkpointer_module
from sealtrail_server.retention import erasure as erasure_module
from sealtrail_server.retention import tenant_pass
from sealtrail_server.store.retention import purge_batch
from tests.clock import Clock
from tests.command_output import own_lines
from tests.conftest import (
    SIGNING_KEY,
    ServerThread,
    database_of_its_own,
    signed_checkpoints_dir_of,
)


def _postgres_bin(program: str) -> str:
    import pgserver._commands as commands

    return str(Path(commands.POSTGRES_BIN_PATH) / program)


def backup(url: str, dump: Path) -> None:
    """`pg_dump -Fc` of the database at `url`, as docs/operations.md takes one."""
    subprocess.run(
        [_postgres_bin("pg_dump"), "-Fc", "-f", str(dump), "-d", url],
        check=True,
        capture_output=True,
        timeout=60,
    )


def restore(url: str, dump: Path) -> None:
    """The database at `url` dropped, made again empty, and `dump` restored
    into it (docs/operations.md, Restoring)."""
    name = conninfo_to_dict(url)["dbname"]
    assert isinstance(name, str)
    maintenance = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run(
        [_postgres_bin("pg_restore"), "--exit-on-error", "-d", url, str(dump)],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def own_database(migrated_database_url: str) -> Iterator[str]:
    with database_of_its_own(migrated_database_url, "restored") as url:
        yield url


def record(client: AuditClient, count: int, *, action: str) -> None:
    results = client.record_batch(
        [build_event(action=action, actor_id="u", description=f"event {n}") for n in range(count)]
    )
    assert [result.error for result in results] == [None] * count


def _signed_at_5_and_backed_up(client: AuditClient, url: str, dump: Path) -> None:
    """5 events recorded and a checkpoint of them signed, then the database
    at `url` backed up to `dump`."""
    record(client, 5, action="restore.before_backup")
    assert client.get_checkpoint(fresh=True).tree_size == 5
    backup(url, dump)


@contextmanager
def _restored_and_served(url: str, dump: Path, token: str) -> Iterator[AuditClient]:
    """`dump` restored at `url`, and a client (`token`) of a new process
    serving it; the process stopped after."""
    restore(url, dump)
    after = ServerThread(url)
    try:
        with AuditClient(after.target, token=token) as client:
            yield client
    finally:
        after.close()


def _integrity_failure(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """`call(*args, **kwargs)` refused INTEGRITY_FAILURE (DATA_LOSS): its message."""
    with pytest.raises(RpcFailedError) as refused:
        call(*args, **kwargs)
    assert refused.value.reason == "INTEGRITY_FAILURE"
    return refused.value.message


def stored_roots(url: str, tenant: str) -> dict[int, bytes]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows: list[Any] = conn.execute(
            "SELECT tree_size, root_hash FROM checkpoints WHERE tenant_id = %s", [tenant]
        ).fetchall()
    return {int(size): bytes(root) for size, root in rows}


@dataclass(frozen=True)
class Restored:
    url: str
    lost: integrity_pb2.SignedCheckpoint  # signed at size 10, lost with the restore to size 5


@pytest.fixture
def restored(own_database: str, tenant: str, tmp_path: Path) -> Restored:
    """The tenant's log signed at 5, backed up, signed at 10, and the backup
    restored: the database holds the log and checkpoint at 5."""
    dump = tmp_path / "sealtrail.dump"
    before = ServerThread(own_database)
    try:
        with AuditClient(before.target, token=before.token(tenant)) as client:
            _signed_at_5_and_backed_up(client, own_database, dump)
            record(client, 5, action="restore.lost")
            lost = client.get_checkpoint(fresh=True)
            assert lost.tree_size == 10
    finally:
        before.close()
    restore(own_database, dump)
    assert max(stored_roots(own_database, tenant)) == 5
    return Restored(own_database, lost)


def test_a_restored_log_is_never_signed_at_a_size_already_signed_with_another_root(
    restored: Restored, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Restored from a backup taken at size 5 after size 10 was signed, the log
    took 5 new events at seqs 6..10 and a new process signed size 10 again,
    with another root: two valid checkpoints of one log and size that no
    auditor can tell from the operator's tampering."""
    with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
        after = ServerThread(restored.url)  # a new process: it remembers nothing
    origin = f"sealtrail.test/log/{tenant}"
    told = [r.getMessage() for r in caplog.records if origin in r.getMessage()]
    assert told, "the start names the restored log"
    assert "signed it at size 10" in told[0] and "the log holds 5 events" in told[0]
    try:
        with AuditClient(after.target, token=after.token(tenant)) as client:
            _integrity_failure(client.get_checkpoint)  # the restored checkpoint at 5
            record(client, 5, action="restore.after")  # seqs 6..10 again
            for fresh in (True, False):
                refused = _integrity_failure(client.get_checkpoint, fresh=fresh)
            assert "this signing key signed it at size 10" in refused
            with pytest.raises(RpcFailedError):
                client.get_inclusion_proof(seq=8)
            result = client.verify_log()
            assert (result.ok, result.failure.reason) == (False, "ROOT_MISMATCH")
    finally:
        after.close()
    # Nothing signed at a size the key signed before, with another root.
    assert stored_roots(restored.url, tenant).get(10, restored.lost.root_hash) == (
        restored.lost.root_hash
    )


def test_a_process_that_never_signed_the_lost_size_refuses_it_too(
    own_database: str, tenant: str, tmp_path: Path
) -> None:
    """Two processes of one data dir: one signed size 10, the other, running on
    across the restore, had signed and served nothing beyond 5 and remembered
    nothing more; it reads what the other signed before it signs."""
    dump = tmp_path / "sealtrail.dump"
    signer, other = ServerThread(own_database), ServerThread(own_database)
    try:
        token = other.token(tenant)  # in the backup: it works after the restore
        with AuditClient(other.target, token=token) as client:
            record(client, 5, action="restore.before_backup")
            assert client.get_checkpoint(fresh=True).tree_size == 5
        backup(own_database, dump)
        with AuditClient(signer.target, token=token) as client:
            record(client, 5, action="restore.lost")
            assert client.get_checkpoint(fresh=True).tree_size == 10
        signer.close()
        restore(own_database, dump)  # under the other, running
        with AuditClient(other.target, token=token) as client:
            record(client, 6, action="restore.after")  # seqs 6..11: beyond the lost 10
            refused = _integrity_failure(client.get_checkpoint, fresh=True)
            assert "signed it at size 10" in refused
            # Longer than what the key signed, not extending it: said rewritten
            # (the log at ERROR says a restore grown past it looks the same).
            assert "the log was rewritten" in refused
            _integrity_failure(client.get_checkpoint)  # the stored one at 5, too
            result = client.verify_log()
            assert (result.ok, result.failure.reason) == (False, "ROOT_MISMATCH")
    finally:
        other.close()
    assert max(stored_roots(own_database, tenant)) == 5


def test_a_new_key_signs_the_restored_log_and_the_old_one_never_signs_it_again(
    restored: Restored, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The way on after a restore (docs/operations.md): a new key, whose
    checkpoints extend the restored ones; the old key still refuses."""
    new_key = generate_signer_key("sealtrail.test/log")
    rotated = ServerThread(restored.url, signing_key=new_key.text())
    try:
        with AuditClient(rotated.target, token=rotated.token(tenant)) as client:
            record(client, 5, action="restore.after")
            signed = client.get_checkpoint(fresh=True)
            assert signed.tree_size == 10 and signed.root_hash != restored.lost.root_hash
            _, signers = open_note(signed.note, [new_key.verifier])
            assert signers == [new_key.verifier]
            client.get_inclusion_proof(seq=8)
            assert client.verify_log().ok
    finally:
        rotated.close()
    with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
        old = ServerThread(restored.url)
    told = [r.getMessage() for r in caplog.records if f"/log/{tenant}:" in r.getMessage()]
    assert told and "the log holds another root at that size" in told[0]
    try:
        with AuditClient(old.target, token=old.token(tenant)) as client:
            record(client, 1, action="restore.after")
            _integrity_failure(client.get_checkpoint, fresh=True)
    finally:
        old.close()


def test_a_checkpoint_that_cannot_be_checked_against_what_the_key_signed_is_not_signed(
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
    migrated_database_url: str,
) -> None:
    """What the key signed is read before a signature leaves: a file that
    cannot be read (a failed disk) refuses the checkpoint, UNAVAILABLE, and
    nothing is signed; a start logs it and serves the other tenants."""
    client = client_for(tenant, max_attempts=1)
    record(client, 3, action="restore.unreadable")
    key_id = Signer.parse(SIGNING_KEY).verifier.key_id.hex()
    unreadable = signed_checkpoints_dir_of(migrated_database_url) / key_id / tenant
    unreadable.mkdir(parents=True)
    try:
        with pytest.raises(UnavailableError, match="what the key signed of it cannot be read"):
            client.get_checkpoint(fresh=True)
        assert (
            sql.execute("SELECT FROM checkpoints WHERE tenant_id = %s", [tenant]).fetchall() == []
        )
        ServerThread(migrated_database_url).close()  # a start logs it, and goes on
    finally:
        unreadable.rmdir()
    assert client.get_checkpoint(fresh=True).tree_size == 3


def test_a_restored_tenant_erased_is_refused_a_receipt_its_checkpoints_contradict(
    own_database: str, tenant: str, tmp_path: Path
) -> None:
    """Backed up before the tenant's first event; its log then signed at size
    5, and the backup restored. The erasure of the restored (empty) log signed
    a receipt that its log ended at size 0, under the key that had signed it
    at size 5: two statements of one log that cannot both be true. It is
    refused as a checkpoint would be; nothing is erased."""
    dump = tmp_path / "sealtrail.dump"
    before = ServerThread(own_database)
    try:
        token = before.token(tenant)  # in the backup: it erases after the restore
        backup(own_database, dump)
        with AuditClient(before.target, token=token) as client:
            record(client, 5, action="restore.lost")
            assert client.get_checkpoint(fresh=True).tree_size == 5
    finally:
        before.close()
    with _restored_and_served(own_database, dump, token) as client:
        assert "signed it at size 5" in _integrity_failure(client.erase_tenant, tenant)
    with psycopg.connect(own_database, autocommit=True) as conn:
        assert conn.execute("SELECT FROM tenant_erasures").fetchall() == []


def _purge_statements(client: AuditClient, key: str = SIGNING_KEY) -> list[tuple[str, int]]:
    """The purge id and count each `retention.purged` record's statement signs."""
    statements = []
    for event in client.query(build_filter(actions="retention.purged")):
        text, _ = open_note(event.details["statement"], [Signer.parse(key).verifier])
        stated = PurgeStatement.parse(text)
        statements.append((stated.purge_id, stated.removed.count))
    return statements


def _purge_stated_then_restored(
    url: str,
    tenant: str,
    dump: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
    settings: dict[str, Any],
    *,
    then_checkpoint: bool,
) -> tuple[str, str]:
    """The tenant's 5 expired events purged in batches of 3 (`settings`), a
    backup taken between the first batch (committed, with its summary) and
    the second, the key's statement that the purge removed 5 (and a
    checkpoint of the log recording it, if `then_checkpoint`), and the backup
    restored: a new process's pass states nothing of the purge. The tenant's
    token and the purge's id."""
    batches = 0

    async def backed_up_after_the_first(conn: Any, tenant_id: str, *args: Any, **kw: Any) -> Any:
        nonlocal batches
        if tenant_id == tenant:
            batches += 1
            if batches == 2:  # the first committed, with its summary
                backup(url, dump)
        return await purge_batch(conn, tenant_id, *args, **kw)

    monkeypatch.setattr(tenant_pass, "purge_batch", backed_up_after_the_first)
    before = ServerThread(url, **settings)
    try:
        token = before.token(tenant)
        with AuditClient(before.target, token=token) as client:
            client.set_retention_policy(30)
            record(client, 5, action="restore.expiring")
            clock.advance(31)
            _purge_pass(before)
            assert batches >= 2
            [(purge_id, count)] = _purge_statements(client)
            assert count == 5
            if then_checkpoint:
                client.get_checkpoint(fresh=True)  # of the log recording it
    finally:
        before.close()
    restore(url, dump)
    after = ServerThread(url, **settings)
    try:
        _purge_pass(after)
        with AuditClient(after.target, token=token) as client:
            assert _purge_statements(client) == []  # not (purge_id, 3)
    finally:
        after.close()
    return token, purge_id


def _purge_pass(server: ServerThread) -> None:
    assert server.service.purger is not None
    server.run(server.service.purger.run_once())


def _purge_left_to_record(url: str, tenant: str) -> str:
    """The id of the tenant's purge whose summary is kept, to record."""
    with psycopg.connect(url, autocommit=True) as conn:
        [(left,)] = conn.execute(
            "SELECT purge_id::text FROM retention_pending_purges WHERE tenant_id = %s", [tenant]
        ).fetchall()
    return str(left)


def test_a_purge_left_to_record_in_a_restored_log_is_not_stated_again_otherwise(
    own_database: str, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup taken between two batches of a purge keeps its summary as the
    first left it. The pass went on, and the key signed that the purge
    removed 5 events, and a checkpoint of the log recording it; restored, the
    summary was recorded, and the key signed that the same purge removed 3:
    two statements of one purge of one log that disagree. A log that does
    not extend what the key signed gets no statement of the key's."""
    clock = Clock()
    settings: dict[str, Any] = {"clock": clock, "retention_batch_events": 3}
    token, purge_id = _purge_stated_then_restored(
        own_database,
        tenant,
        tmp_path / "sealtrail.dump",
        monkeypatch,
        clock,
        settings,
        then_checkpoint=True,
    )
    assert _purge_left_to_record(own_database, tenant) == purge_id  # kept, for a new key
    new_key = generate_signer_key("sealtrail.test/log").text()
    rotated = ServerThread(own_database, **settings, signing_key=new_key)
    try:
        _purge_pass(rotated)
        with AuditClient(rotated.target, token=token) as client:
            # The summary the backup kept, then the rest as a purge of its own.
            stated = _purge_statements(client, new_key)
            assert sorted(stated, key=lambda s: s[0] != purge_id) == [(purge_id, 3), (ANY, 2)]
    finally:
        rotated.close()


def test_a_purge_stated_before_any_checkpoint_covered_it_is_not_stated_again_otherwise(
    own_database: str, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but no checkpoint was signed after the purge's record (the
    checkpointer's 10 s had not come): the restored log extends all the key
    signed of it, and only what the key stated of the purge tells the two
    apart. Its statement is kept before it is signed, as a checkpoint is."""
    clock = Clock()
    settings: dict[str, Any] = {
        "clock": clock,
        "retention_batch_events": 3,
        "checkpoint_interval": 0,
    }
    _, purge_id = _purge_stated_then_restored(
        own_database,
        tenant,
        tmp_path / "sealtrail.dump",
        monkeypatch,
        clock,
        settings,
        then_checkpoint=False,
    )
    assert stored_roots(own_database, tenant) == {}
    assert _purge_left_to_record(own_database, tenant) == purge_id


def test_the_operator_lists_the_logs_restored_behind_the_key(
    restored: Restored, tenant: str
) -> None:
    """`sealtrail-server key restored`: each tenant whose log does not extend
    what the configured key signed of it, what the key signed, the log's size
    now and the sizes lost; a log that extends it is not listed."""
    # Where the servers on that database keep what the key signed.
    runner = CliRunner(
        env={"SEALTRAIL_SIGNED_CHECKPOINTS_DIR": str(signed_checkpoints_dir_of(restored.url))}
    )
    database = ["--database-url", restored.url]
    healthy = f"{tenant}-healthy"
    after = ServerThread(restored.url)
    try:
        with AuditClient(after.target, token=after.token(healthy)) as client:
            record(client, 3, action="restore.after")
            client.get_checkpoint(fresh=True)
    finally:
        after.close()
    listed = runner.invoke(server_cli.main, ["key", "restored", "--format", "json", *database])
    assert listed.exit_code == 0, listed.output
    rows = {row["tenant"]: row for row in json.loads(listed.stdout)}
    assert healthy not in rows
    assert rows[tenant] == {
        "tenant": tenant,
        "signed_size": 10,
        "signed_root": base64.b64encode(restored.lost.root_hash).decode(),
        "log_size": 5,
        "lost_sizes": [6, 10],  # the checkpoint at 5 the backup held still proves 1..5
        "erased": False,
        "rewritten": False,
    }
    listed = runner.invoke(server_cli.main, ["key", "restored", *database])
    assert listed.exit_code == 0, listed.output
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(f"{tenant} ")]
    assert line.split() == [tenant, "10", "5", "6..10", rows[tenant]["signed_root"]]
    # Under a new key, which signed none of it, nothing is listed of the tenant.
    new_key = generate_signer_key("sealtrail.test/log").text()
    listed = runner.invoke(
        server_cli.main,
        ["key", "restored", "--format", "json", *database],
        env={"SEALTRAIL_SIGNING_KEY": new_key},
    )
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []


class _ProcessDied(BaseException):
    """The process ending between the kept file's write and the row's insert."""


def test_a_signature_kept_but_never_released_is_no_restore(
    own_database: str, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The file is written before the checkpoint's row; a process that died
    between left a size kept that no row holds. Nobody holds that signature,
    and the log still holds that root at that size: the next start does not
    take it for a restore, and the log is signed on, at that size and past it."""
    dying = ServerThread(own_database, checkpoint_interval=0)
    try:
        with AuditClient(dying.target, token=dying.token(tenant)) as client:
            record(client, 5, action="restore.unreleased")
            checkpointer = dying.service._checkpointer
            assert checkpointer is not None
            with pytest.MonkeyPatch.context() as patch:

                async def die(*_: Any, **__: Any) -> None:
                    raise _ProcessDied

                patch.setattr(checkpointer_module, "insert_checkpoint", die)
                with pytest.raises(_ProcessDied):
                    dying.run(checkpointer.issue(tenant))
    finally:
        dying.close()
    assert stored_roots(own_database, tenant) == {}
    key_id = Signer.parse(SIGNING_KEY).verifier.key_id.hex()
    kept = (signed_checkpoints_dir_of(own_database) / key_id / tenant).read_text().split()
    assert kept[0] == "5"  # kept, never released
    with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
        after = ServerThread(own_database)
    assert not [r for r in caplog.records if f"/log/{tenant}:" in r.getMessage()]
    try:
        with AuditClient(after.target, token=after.token(tenant)) as client:
            signed = client.get_checkpoint(fresh=True)
            assert (signed.tree_size, base64.b64encode(signed.root_hash).decode()) == (5, kept[1])
            record(client, 3, action="restore.unreleased")
            assert client.get_checkpoint(fresh=True).tree_size == 8
            assert client.verify_log().ok
    finally:
        after.close()


def test_an_erased_tenant_brought_back_by_a_restore_is_refused(
    own_database: str, tenant: str, tmp_path: Path
) -> None:
    """What the key signed of an erased tenant stays after the erasure (a
    size and a root, no event): a restore from before the erasure brings the
    tenant back, shorter than its final checkpoint, and the key signs none of
    it, nor a second receipt."""
    dump = tmp_path / "sealtrail.dump"
    before = ServerThread(own_database)
    try:
        token = before.token(tenant)
        with AuditClient(before.target, token=token) as client:
            _signed_at_5_and_backed_up(client, own_database, dump)
            record(client, 5, action="restore.lost")
            assert client.erase_tenant(tenant).final_tree_size == 10
    finally:
        before.close()
    with _restored_and_served(own_database, dump, token) as client:
        record(client, 5, action="restore.after")
        with pytest.raises(RpcFailedError) as refused:
            client.get_checkpoint(fresh=True)
        assert "signed the erasure of it, at size 10" in refused.value.message
        _integrity_failure(client.erase_tenant, tenant)


def test_a_tenant_erased_after_the_backup_at_its_size_is_never_signed_on(
    own_database: str, tenant: str, tmp_path: Path
) -> None:
    """Backed up at size 5, then erased at size 5: the key signed a receipt
    that the log ended there. Restored, the tenant was back, at the size and
    root the key signed, and the key signed on past it (a log it had called
    erased) and a second receipt of it (another time, another eraser). The
    key's word that the log ended stands: neither is signed."""
    dump = tmp_path / "sealtrail.dump"
    before = ServerThread(own_database)
    try:
        token = before.token(tenant)
        with AuditClient(before.target, token=token) as client:
            _signed_at_5_and_backed_up(client, own_database, dump)
            assert client.erase_tenant(tenant).final_tree_size == 5
    finally:
        before.close()
    with _restored_and_served(own_database, dump, token) as client:
        assert "signed the erasure" in _integrity_failure(client.erase_tenant, tenant)
        record(client, 3, action="restore.after")
        refused = _integrity_failure(client.get_checkpoint, fresh=True)
        assert "signed the erasure" in refused
    assert max(stored_roots(own_database, tenant)) == 5
    with psycopg.connect(own_database, autocommit=True) as conn:
        assert conn.execute("SELECT FROM tenant_erasures").fetchall() == []
    [row] = _listed_restored(own_database, tenant)
    assert (row["signed_size"], row["log_size"], row["lost_sizes"], row["erased"]) == (
        5,
        8,
        None,
        True,
    )


def test_an_erasure_that_never_committed_leaves_the_log_signed_on(
    own_database: str, tenant: str
) -> None:
    """What the key is about to sign of an erasure is kept before the receipt
    is signed; an erasure that dies before its commit released no receipt,
    and the log goes on, signed, and can be erased after."""
    server = ServerThread(own_database)
    try:
        with AuditClient(server.target, token=server.token(tenant)) as client:
            record(client, 5, action="restore.unreleased")
            with pytest.MonkeyPatch.context() as patch:

                def die(*_: Any, **__: Any) -> str:
                    raise _ProcessDied

                patch.setattr(erasure_module, "sign_note", die)
                assert server.service._checkpointer is not None
                eraser = erasure_module.Eraser(own_database, server.service._checkpointer)
                with pytest.raises(_ProcessDied):
                    server.run(eraser.erase(tenant, erased_by="op", by_operator=True))
            record(client, 3, action="restore.unreleased")
            assert client.get_checkpoint(fresh=True).tree_size == 8
            assert client.erase_tenant(tenant).final_tree_size == 8
    finally:
        server.close()


def _kept_for_many_tenants(url: str, names: list[str]) -> None:
    """A log of one event for each of `names`, signed at size 1 and kept as
    signed outside the database: what a deployment's directory holds of its
    tenants (one file each), written directly rather than through a
    checkpoint each."""
    verifier = Signer.parse(SIGNING_KEY).verifier
    directory = signed_checkpoints_dir_of(url) / verifier.key_id.hex()
    directory.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO chain_heads (tenant_id, tree_size, root_hash, frontier)"
            " SELECT id, 1, sha256(id::bytea), sha256(id::bytea) FROM unnest(%s::text[]) id",
            [names],
        )
        conn.execute(
            "INSERT INTO checkpoints (tenant_id, tree_size, root_hash, note, key_name, key_id)"
            " SELECT id, 1, sha256(id::bytea), 'not read', %s, %s FROM unnest(%s::text[]) id",
            [verifier.name, verifier.key_id, names],
        )
    for name in names:
        root = base64.b64encode(hashlib.sha256(name.encode()).digest()).decode()
        (directory / name).write_text(f"1 {root}\n")


def _unblock(fifo: Path, text: str) -> None:
    """`text` written to `fifo` once its reader opens it (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        try:
            os.write(descriptor, text.encode())
        finally:
            os.close(descriptor)
        return


def test_a_start_over_many_tenants_serves_before_it_has_read_them_all(
    restored: Restored, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A start read every tenant's kept checkpoint before it served: over a
    year's directory (100,000 tenants) 11 s, against 0.9 s over an empty one.
    It reads one batch before it serves and the rest after; a tenant a call
    asks about before its file is read is checked then, on its own, and a
    restored log refused as at start. Here the tenant of one file, past the
    first batch, is a pipe nothing writes to (a disk that answers slowly):
    the start must not wait for it, and the restored log, past it, is
    refused all the same."""
    fillers = [f"a-{n:05d}" for n in range(checkpointer_module.RESTORED_SCAN_BATCH)]
    _kept_for_many_tenants(restored.url, [*fillers, "b-slow"])
    key_id = Signer.parse(SIGNING_KEY).verifier.key_id.hex()
    slow = signed_checkpoints_dir_of(restored.url) / key_id / "b-slow"
    kept_slow = slow.read_text()
    slow.unlink()
    os.mkfifo(slow)
    origin = f"sealtrail.test/log/{tenant}"
    unblocked = False
    try:
        with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
            after = ServerThread(restored.url)
            try:
                with AuditClient(after.target, token=after.token(tenant)) as client:
                    refused = _integrity_failure(client.get_checkpoint)
                    assert "this signing key signed it at size 10" in refused
                    result = client.verify_log()  # short of what the key signed
                    assert (result.ok, result.failure.reason) == (False, "RECORD_MISSING")
                told = [r.getMessage() for r in caplog.records if origin in r.getMessage()]
                assert told and "signed it at size 10" in told[0]
                _unblock(slow, kept_slow)
                unblocked = True
                assert after.service._checkpointer is not None
                after.run(after.service._checkpointer.restored_logs_checked())
            finally:
                after.close()
    finally:
        if not unblocked:  # a start that read it (before it served) waits there
            with contextlib.suppress(OSError):
                _unblock(slow, kept_slow)
        slow.unlink()
    # None for the tenants it read after it served.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert [m for m in errors if "b-slow" in m or "a-0" in m] == []


def test_key_restored_over_many_tenants_says_how_far_it_has_read(
    restored: Restored, tenant: str
) -> None:
    """`key restored` read every tenant's kept file, then asked the database,
    saying nothing meanwhile: over 100,000 tenants 16 to 37 s (listing the
    directory: 0.2 s). It reads a batch while the database checks the one
    before, and says on stderr how many it has checked; the list (stdout)
    is unchanged, a restored log past the first batch in it."""
    fillers = [f"a-{n:05d}" for n in range(checkpointer_module.RESTORED_SCAN_BATCH + 500)]
    _kept_for_many_tenants(restored.url, fillers)
    listed = CliRunner(
        env={"SEALTRAIL_SIGNED_CHECKPOINTS_DIR": str(signed_checkpoints_dir_of(restored.url))}
    ).invoke(
        server_cli.main, ["key", "restored", "--format", "json", "--database-url", restored.url]
    )
    assert listed.exit_code == 0, listed.output
    assert [row["tenant"] for row in json.loads(listed.stdout)] == [tenant]
    total = len(fillers) + 1
    assert own_lines(listed.stderr)[-1] == (
        f"checked what the key signed of {total:,} of {total:,} tenants"
    ), listed.stderr


# --- A log removed entirely by a database superuser ----------------------------


def _listed_restored(url: str, tenant: str) -> list[dict[str, Any]]:
    """The rows of `sealtrail-server key restored --format json` of `tenant`,
    run on the database at `url` and its servers' directory."""
    listed = CliRunner(
        env={"SEALTRAIL_SIGNED_CHECKPOINTS_DIR": str(signed_checkpoints_dir_of(url))}
    ).invoke(server_cli.main, ["key", "restored", "--format", "json", "--database-url", url])
    assert listed.exit_code == 0, listed.output
    return [row for row in json.loads(listed.stdout) if row["tenant"] == tenant]


def _remove_log(url: str, tenant: str) -> None:
    """The tenant's log gone from the database, as a superuser with triggers
    off removes it: its head, events, tree nodes and checkpoints; no erasure
    (its tokens are left, so that its callers still call)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for table in ("chain_heads", "events", "tree_nodes", "checkpoints"):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(sql.Identifier(table)),
                [tenant],
            )


def _removed_log_is_refused(client: AuditClient, signed: integrity_pb2.SignedCheckpoint) -> None:
    """The log the key signed at `signed`'s size, removed: neither its absence
    ("no checkpoint", "the log is empty") nor a new log at seq 1 is answered
    as what the key signed, and VerifyLog finds it short."""
    for fresh in (False, True):
        refused = _integrity_failure(client.get_checkpoint, fresh=fresh)
        assert f"signed it at size {signed.tree_size}" in refused
        assert "the log holds 0 events" in refused
    result = client.verify_log()  # its own record comes after: the log was empty
    assert (result.ok, result.failure.reason) == (False, "RECORD_MISSING")
    record(client, 2, action="removed.after")  # appends go on, at seqs 2..3 (ADR 0080)
    assert "signed it at size 5" in _integrity_failure(client.get_checkpoint, fresh=True)
    with pytest.raises(RpcFailedError):
        client.get_inclusion_proof(seq=1)


def test_a_log_removed_entirely_is_refused_by_the_process_that_signed_it(
    own_database: str, tenant: str
) -> None:
    """A superuser deleted the tenant's head with its events, nodes and
    checkpoints: the process that signed the log at 5 forgot it, and answered
    "the log is empty", as of a tenant that never wrote (helper-241)."""
    server = ServerThread(own_database)
    try:
        with AuditClient(server.target, token=server.token(tenant)) as client:
            record(client, 5, action="removed.before")
            signed = client.get_checkpoint(fresh=True)
            _remove_log(own_database, tenant)
            _removed_log_is_refused(client, signed)
    finally:
        server.close()


def test_a_log_removed_entirely_is_refused_by_a_process_that_never_served_it(
    own_database: str, tenant: str
) -> None:
    """Another process of the data dir, running across the removal, had
    neither signed nor served the log: it read nothing of what the key
    signed, and answered "the log is empty" (helper-241)."""
    signer, other = ServerThread(own_database), ServerThread(own_database)
    try:
        token = signer.token(tenant)
        with AuditClient(signer.target, token=token) as client:
            record(client, 5, action="removed.before")
            signed = client.get_checkpoint(fresh=True)
        _remove_log(own_database, tenant)
        with AuditClient(other.target, token=token) as client:
            _removed_log_is_refused(client, signed)
    finally:
        signer.close()
        other.close()


def test_a_log_removed_entirely_is_named_at_start_and_listed_as_restored(
    own_database: str, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A start finds the removed log, as it finds a restored one, and names
    it; then refuses it, and `sealtrail-server key restored` lists it, all of
    its sizes lost (helper-241)."""
    before = ServerThread(own_database)
    try:
        token = before.token(tenant)
        with AuditClient(before.target, token=token) as client:
            record(client, 5, action="removed.before")
            signed = client.get_checkpoint(fresh=True)
    finally:
        before.close()
    _remove_log(own_database, tenant)
    with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
        after = ServerThread(own_database)
    told = [r.getMessage() for r in caplog.records if f"/log/{tenant}:" in r.getMessage()]
    assert told and "signed it at size 5" in told[0] and "the log holds 0 events" in told[0]
    [row] = _listed_restored(own_database, tenant)
    assert (row["signed_size"], row["log_size"], row["lost_sizes"], row["erased"]) == (
        5,
        0,
        [1, 5],
        False,
    )
    try:
        with AuditClient(after.target, token=token) as client:
            _removed_log_is_refused(client, signed)
    finally:
        after.close()


def test_an_erased_log_is_not_taken_for_one_removed(
    own_database: str, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An erasure removes the log too, with its receipt: that is no removal
    behind the key's back. Nothing is refused or named of it, at once or at
    the next start, and `key restored` does not list it."""
    server = ServerThread(own_database)
    try:
        with AuditClient(server.target, token=server.token(tenant)) as client:
            record(client, 5, action="removed.before")
            client.get_checkpoint(fresh=True)
            assert client.erase_tenant(tenant).final_tree_size == 5
        checkpointer = server.service._checkpointer
        assert checkpointer is not None
        assert server.run(checkpointer.issue(tenant)) is None  # erased: nothing to sign
    finally:
        server.close()
    with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
        after = ServerThread(own_database)
    try:
        assert not [r for r in caplog.records if f"/log/{tenant}:" in r.getMessage()]
        checkpointer = after.service._checkpointer
        assert checkpointer is not None
        assert after.run(checkpointer.issue(tenant)) is None
    finally:
        after.close()
    assert _listed_restored(own_database, tenant) == []


def _plant(url: str, tenant: str, checkpoint: integrity_pb2.SignedCheckpoint) -> None:
    """`checkpoint`'s note (and its root) as the tenant's row at its size, as a
    superuser writes one: the row of the active key there replaced."""
    verifier = Signer.parse(SIGNING_KEY).verifier
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "DELETE FROM checkpoints WHERE tenant_id = %s AND tree_size = %s",
            [tenant, checkpoint.tree_size],
        )
        conn.execute(
            "INSERT INTO checkpoints (tenant_id, tree_size, root_hash, note, key_name, key_id)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                tenant,
                checkpoint.tree_size,
                checkpoint.root_hash,
                checkpoint.note,
                verifier.name,
                verifier.key_id,
            ],
        )


def test_a_stored_checkpoint_of_an_older_key_is_not_served_against_what_the_key_signed(
    own_database: str, tenant: str
) -> None:
    """The old key signed the log at 3 and 5; the log was removed and the new
    key (the way on, ADR 0080) signed the log written since at 5, another
    root. A superuser put the old key's genuine checkpoints back as the rows
    at 3 and 5: their signatures check, and they were served, by size, as the
    latest and with proofs, though the active key signed another log at those
    sizes (helper-241)."""
    old = ServerThread(own_database)
    try:
        token = old.token(tenant)
        with AuditClient(old.target, token=token) as client:
            record(client, 3, action="older.before")
            at_3 = client.get_checkpoint(fresh=True)
            record(client, 2, action="older.before")
            at_5 = client.get_checkpoint(fresh=True)
    finally:
        old.close()
    _remove_log(own_database, tenant)
    new_key = generate_signer_key("sealtrail.test/log").text()
    for restarted in (False, True):
        rotated = ServerThread(own_database, signing_key=new_key)
        try:
            with AuditClient(rotated.target, token=token) as client:
                if not restarted:
                    record(client, 5, action="older.after")
                    signed = client.get_checkpoint(fresh=True)
                    assert signed.tree_size == 5 and signed.root_hash != at_5.root_hash
                    assert client.get_checkpoint(tree_size=5) == signed
                    _plant(own_database, tenant, at_3)
                    _plant(own_database, tenant, at_5)
                for ask in (
                    lambda: client.get_checkpoint(tree_size=5),
                    lambda: client.get_checkpoint(tree_size=3),
                    client.get_checkpoint,
                    lambda: client.get_inclusion_proof(seq=2, tree_size=5),
                    lambda: client.get_inclusion_proof(seq=2, tree_size=3),
                ):
                    _integrity_failure(ask)
        finally:
            rotated.close()


# --- Consistency proofs answered of what the key signed ------------------------


def _consistency_refused(client: AuditClient, old: int, new: int) -> str:
    refused = _integrity_failure(client.get_consistency_proof, old_size=old, new_size=new)
    assert f"size {new}" in refused
    return refused


def test_a_consistency_proof_of_a_log_rewritten_behind_the_key_is_refused(
    own_database: str, tenant: str
) -> None:
    """The key signed the log at 5; a superuser removed it and wrote another
    log of 5 events (then 7) in its place. GetConsistencyProof answered that
    log's roots, and a proof between them that verifies, as the log's: a
    history the key never signed, handed out by the process that signed the
    other and by one that never served it (helper-242)."""
    signer, other = ServerThread(own_database), ServerThread(own_database)
    try:
        token = signer.token(tenant)
        with AuditClient(signer.target, token=token) as client:
            record(client, 5, action="rewritten.before")
            signed = client.get_checkpoint(fresh=True)
            genuine = client.get_consistency_proof(old_size=2, new_size=5)
            assert genuine.new_root == signed.root_hash
        _remove_log(own_database, tenant)
        for server in (signer, other):
            with AuditClient(server.target, token=token) as client:
                if server is signer:
                    record(client, 5, action="rewritten.after")
                for old, new in ((2, 5), (2, 3), (3, 3)):
                    refused = _consistency_refused(client, old, new)
                    assert "not of the log this server's key signed at size 5" in refused
        with AuditClient(signer.target, token=token) as client:
            record(client, 2, action="rewritten.after")
            assert "signed at size 5" in _consistency_refused(client, 2, 7)
    finally:
        signer.close()
        other.close()


def test_a_consistency_proof_from_a_rewritten_hash_is_refused(
    own_database: str, tenant: str
) -> None:
    """A superuser rewrote the leaf hash of seq 3: the root at 4 is a stored
    node, still the one the key's log has, but the root at 3 is computed from
    the rewritten leaf. The old root answered was of a history the key never
    signed, beside a proof that does not lead from it to the new root."""
    server = ServerThread(own_database)
    try:
        with AuditClient(server.target, token=server.token(tenant)) as client:
            record(client, 5, action="rewritten.leaf")
            client.get_checkpoint(fresh=True)
            with psycopg.connect(own_database, autocommit=True) as conn:
                conn.execute("SET session_replication_role = replica")
                conn.execute(
                    "UPDATE events SET leaf_hash = %s WHERE tenant_id = %s AND seq = 3",
                    [hashlib.sha256(b"forged").digest(), tenant],
                )
            refused = _consistency_refused(client, 3, 4)
            assert "size 3" in refused
    finally:
        server.close()


def test_an_erased_tenant_restored_from_before_its_first_event_is_refused_as_such(
    own_database: str, tenant: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Backed up before its first event, then signed at 5 and erased: restored,
    the database holds neither the log nor its erasure. The key's receipt that
    the log ended at 5 stands, and the refusal said "the database holds it
    still" of a log it holds nothing of (helper-242)."""
    dump = tmp_path / "sealtrail.dump"
    before = ServerThread(own_database)
    try:
        token = before.token(tenant)
        backup(own_database, dump)
        with AuditClient(before.target, token=token) as client:
            record(client, 5, action="restore.erased")
            assert client.erase_tenant(tenant).final_tree_size == 5
    finally:
        before.close()
    with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
        restored = _restored_and_served(own_database, dump, token)
        client = restored.__enter__()
    try:
        told = [r.getMessage() for r in caplog.records if f"/log/{tenant}:" in r.getMessage()]
        assert told  # named at start
        for fresh in (True, False):
            told.append(_integrity_failure(client.get_checkpoint, fresh=fresh))
        for message in told:
            assert "signed the erasure of it, at size 5" in message
            assert "holds it still" not in message
            assert "the database holds no event of it and no record of that erasure" in message
        record(client, 2, action="restore.after")
        refused = _integrity_failure(client.get_checkpoint, fresh=True)
        assert "the database holds 2 events of it still" in refused
    finally:
        restored.__exit__(None, None, None)


def test_one_erasure_file_that_cannot_be_read_refuses_its_tenant_alone(
    own_database: str, tenant: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One file of the key's `.erasures` that cannot be read (a stray, one
    cut short, another user's) made a start check no tenant's erasure: a
    tenant erased after the backup was not named at start, and `key
    restored` listed it as a log cut back, not erased. The file is named, its
    tenant's checkpoints refused (UNAVAILABLE) until it reads, and every
    other tenant's erasure checked as before."""
    other = f"{tenant}-other"
    dump = tmp_path / "sealtrail.dump"
    before = ServerThread(own_database)
    try:
        token, other_token = before.token(tenant), before.token(other)
        with AuditClient(before.target, token=other_token) as client:
            record(client, 3, action="restore.other")
            assert client.get_checkpoint(fresh=True).tree_size == 3
        backup(own_database, dump)
        with AuditClient(before.target, token=token) as client:
            record(client, 5, action="restore.erased")
            assert client.erase_tenant(tenant).final_tree_size == 5
    finally:
        before.close()
    key_id = Signer.parse(SIGNING_KEY).verifier.key_id.hex()
    broken = signed_checkpoints_dir_of(own_database) / key_id / ".erasures" / other
    broken.write_text("3 q1X")  # cut short
    restore(own_database, dump)
    with caplog.at_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer"):
        after = ServerThread(own_database)
    try:
        said = [record.getMessage() for record in caplog.records]
        assert [m for m in said if f"/log/{tenant}:" in m and "erasure of it, at size 5" in m]
        [named] = [m for m in said if str(broken) in m]
        assert "holds no erasure" in named and f"/log/{other} " in named, named
        assert "refused (UNAVAILABLE) until the file reads" in named, named
        with AuditClient(after.target, token=token, max_attempts=1) as client:
            refused = _integrity_failure(client.get_checkpoint)
            assert "signed the erasure of it, at size 5" in refused
        with AuditClient(after.target, token=other_token, max_attempts=1) as client:
            for fresh in (False, True):
                with pytest.raises(UnavailableError) as unavailable:
                    client.get_checkpoint(fresh=fresh)
                assert str(broken) in unavailable.value.message
            broken.unlink()  # a stray: the tenant was never erased
            assert client.get_checkpoint().tree_size == 3
    finally:
        after.close()
    broken.write_text("3 q1X")
    listed = CliRunner().invoke(
        server_cli.main,
        ["key", "restored", "--format", "json", "--database-url", own_database],
        env={"SEALTRAIL_SIGNED_CHECKPOINTS_DIR": str(signed_checkpoints_dir_of(own_database))},
    )
    assert listed.exit_code == 1, listed.output
    assert str(broken) in listed.stderr
    [row] = [row for row in json.loads(listed.stdout) if row["tenant"] == tenant]
    assert (row["signed_size"], row["erased"]) == (5, True)


def test_a_consistency_proof_answered_before_is_refused_once_a_hash_of_it_is_rewritten(
    own_database: str, tenant: str
) -> None:
    """GetConsistencyProof(3, 4) answered, then a superuser rewrote the leaf
    hash of seq 4: a hash of the proof alone (the root at 4 is a stored node,
    the root at 3 does not hold it). The same call again was answered that
    proof, which does not lead from the old root to the new, unchecked: the
    answer's roots had been proven once, and so the proof was taken as proven
    too. The proof is checked on every answer."""
    server = ServerThread(own_database)
    try:
        with AuditClient(server.target, token=server.token(tenant)) as client:
            record(client, 5, action="rewritten.proof")
            client.get_checkpoint(fresh=True)
            genuine = client.get_consistency_proof(old_size=3, new_size=4)
            with psycopg.connect(own_database, autocommit=True) as conn:
                conn.execute("SET session_replication_role = replica")
                conn.execute(
                    "UPDATE events SET leaf_hash = %s WHERE tenant_id = %s AND seq = 4",
                    [hashlib.sha256(b"forged").digest(), tenant],
                )
            refused = _integrity_failure(client.get_consistency_proof, old_size=3, new_size=4)
            assert "do not prove its size 3 a prefix of its size 4" in refused
            assert genuine.proof  # what it answered before the hash was rewritten
    finally:
        server.close()
