"""The credential backfill (ADR 0143, migration 0059): the rows appended
before migration 0056 given the credential columns their records say, by the
one UPDATE the events trigger admits, with counts, filters, VerifyLog and the
offline verifier unchanged; the trigger refusing every other UPDATE; one
process running the job at a time; a tenant an erasure or a purge holds left
for the next run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, build_event, build_filter, verify_bundle, write_bundle
from sealtrail_server.backfill.credentials import LOCK_KEY, CredentialBackfill, Run
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.store.changes import ERASURE_SUBJECT, lock_subject
from sealtrail_server.store.counts import count_statement
from sealtrail_server.store.events import query_statement
from tests.conftest import database_of_its_own, migrate_database
from tests.integration.test_credential_columns import _BEFORE_0056, _undo_0056
from tests.job_sessions import session_timeouts

# What the columns of a row say: (kind, id, hint).
_COLUMNS = "SELECT credential_kind, credential_id, credential_hint FROM events"
# What its record says, as the appender derives it ('' kind for none).
_DERIVED = (
    "SELECT coalesce(c ->> 'kind', ''), c ->> 'id', c ->> 'hint' FROM (SELECT"
    " (record::json -> 'actor') -> 'credential' AS c, tenant_id, seq FROM events) AS e"
)


def _events(n: int) -> list[Any]:
    """`n` events: a third with a credential with a hint, a third without a
    hint, a third without a credential."""
    events = []
    for i in range(n):
        if i % 3 == 0:
            events.append(
                build_event(
                    action="a.b",
                    actor_id="u",
                    credential_kind="api_key",
                    credential_id="key_1",
                    credential_hint="a1b2",
                )
            )
        elif i % 3 == 1:
            events.append(
                build_event(
                    action="a.b", actor_id="u", credential_kind="session", credential_id="s_1"
                )
            )
        else:
            events.append(build_event(action="a.b", actor_id="u"))
    return events


@pytest.fixture
def owner(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        yield conn


def _as_before_0056(owner: psycopg.Connection[Any], tenant: str) -> int:
    """The tenant's rows made as a release before migration 0056 appended
    them (columns NULL), the triggers off for the session (a superuser's
    `session_replication_role`: the setup's alone); how many."""
    owner.execute("SET session_replication_role = replica")
    try:
        cursor = owner.execute(
            "UPDATE events SET credential_kind = NULL, credential_id = NULL,"
            " credential_hint = NULL WHERE tenant_id = %s",
            [tenant],
        )
        return cursor.rowcount
    finally:
        owner.execute("SET session_replication_role = DEFAULT")


def _backfill(url: str, **options: Any) -> Run | None:
    return asyncio.run(CredentialBackfill(url, pause=0, **options).run_once())


def _unread(owner: psycopg.Connection[Any], tenant: str) -> int:
    row = owner.execute(
        "SELECT count(*) FROM events WHERE tenant_id = %s AND credential_kind IS NULL", [tenant]
    ).fetchone()
    assert row is not None
    return int(row[0])


def _seen(client: AuditClient) -> tuple[Any, ...]:
    """What a tenant's caller sees by credential: the count grouped, and the
    seqs of each credential's filter."""
    counts = client.count_events(build_filter(actions="a.b"), group_by="credential", limit=100)
    groups = sorted((g.key, g.count) for g in counts.groups)
    seqs = [
        sorted(
            e.seq for e in client.query(build_filter(credential_id=c, actions="a.b"), limit=1000)
        )
        for c in ("key_1", "s_1", "none")
    ]
    return counts.total, groups, seqs


def test_the_backfill_writes_what_the_records_say_and_the_log_still_verifies(
    client: AuditClient,
    migrated_database_url: str,
    owner: psycopg.Connection[Any],
    tenant: str,
    tmp_path: Path,
) -> None:
    """Rows appended before the columns, backfilled in several batches: each
    row's columns what its record says (as the appender writes them),
    counts and filters as before, none left unread, and the records, leaf
    hashes, VerifyLog and an exported bundle's offline check untouched."""
    client.record_batch(_events(30))
    written = owner.execute(
        "SELECT seq, record, leaf_hash, credential_kind, credential_id, credential_hint"
        " FROM events WHERE tenant_id = %s ORDER BY seq",
        [tenant],
    ).fetchall()
    assert _as_before_0056(owner, tenant) == 30
    before = _seen(client)
    assert before[1] and len(before[2][0]) == 10 and len(before[2][1]) == 10

    run = _backfill(migrated_database_url, batch_rows=7)  # five batches
    assert run is not None and run.written >= 30

    assert _unread(owner, tenant) == 0
    assert (
        owner.execute(
            "SELECT seq, record, leaf_hash, credential_kind, credential_id, credential_hint"
            " FROM events WHERE tenant_id = %s AND seq <= 30 ORDER BY seq",
            [tenant],
        ).fetchall()
        == written
    )
    assert _seen(client) == before
    verified = client.verify_log(check_views=True)
    assert verified.ok and verified.verified_size >= len(written)
    bundle = write_bundle(client, tmp_path / "bundle")
    assert verify_bundle(tmp_path / "bundle").count == bundle.count >= 30


def test_the_trigger_admits_the_derived_columns_once_and_nothing_else(
    client: AuditClient, owner: psycopg.Connection[Any], tenant: str
) -> None:
    client.record_batch(_events(3))
    seqs = [
        seq
        for (seq,) in owner.execute(
            "SELECT seq FROM events WHERE tenant_id = %s ORDER BY seq", [tenant]
        ).fetchall()
    ]
    _as_before_0056(owner, tenant)
    derive = (
        "UPDATE events SET credential_kind = coalesce(c ->> 'kind', ''),"
        " credential_id = c ->> 'id', credential_hint = c ->> 'hint'{more}"
        " FROM (SELECT seq AS s, (record::json -> 'actor') -> 'credential' AS c FROM events"
        " WHERE tenant_id = %(t)s) AS d WHERE tenant_id = %(t)s AND seq = s AND seq = %(seq)s"
    )

    def refused(statement: str, seq: int, match: str = "only UPDATE allowed") -> None:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=match):
            owner.execute(statement, {"t": tenant, "seq": seq})

    first = seqs[0]  # api_key key_1 a1b2
    # The record changed with the columns (its credential's id among them).
    refused(derive.format(more=", record = replace(record, 'key_1', 'key_2')"), first)
    # Another column changed beside them.
    refused(derive.format(more=", actor_id = 'someone'"), first)
    refused(derive.format(more=", leaf_hash = '\\x00'"), first)
    # A value the record does not say: an id, a hint, a kind; NULL for "".
    for wrong in (
        "credential_kind = 'api_key', credential_id = 'key_2', credential_hint = 'a1b2'",
        "credential_kind = 'api_key', credential_id = 'key_1', credential_hint = NULL",
        "credential_kind = 'session', credential_id = 'key_1', credential_hint = 'a1b2'",
    ):
        refused(f"UPDATE events SET {wrong} WHERE tenant_id = %(t)s AND seq = %(seq)s", first)
    none = seqs[2]  # no credential: '' kind, never NULL
    refused(
        "UPDATE events SET credential_kind = NULL WHERE tenant_id = %(t)s AND seq = %(seq)s", none
    )
    assert _unread(owner, tenant) == 3

    for seq in seqs:  # what the record says: admitted, once
        assert owner.execute(derive.format(more=""), {"t": tenant, "seq": seq}).rowcount == 1
    assert (
        owner.execute(f"{_COLUMNS} WHERE tenant_id = %s ORDER BY seq", [tenant]).fetchall()
        == owner.execute(f"{_DERIVED} WHERE tenant_id = %s ORDER BY seq", [tenant]).fetchall()
        == [("api_key", "key_1", "a1b2"), ("session", "s_1", None), ("", None, None)]
    )
    refused(derive.format(more=""), first)  # a second time, the same values
    refused(
        "UPDATE events SET credential_kind = credential_kind WHERE tenant_id = %(t)s"
        " AND seq = %(seq)s",
        first,
    )
    # Other append-only tables refuse every UPDATE as before.
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="tree_nodes is append-only"):
        owner.execute("UPDATE tree_nodes SET hash = hash WHERE tenant_id = %s", [tenant])


def test_only_the_owner_may_update_events(
    client: AuditClient, owner: psycopg.Connection[Any], tenant: str
) -> None:
    """The service's roles hold no UPDATE on events (the job runs as the owner)."""
    client.record(build_event(action="a.b", actor_id="u"))
    _as_before_0056(owner, tenant)
    for role in ("sealtrail_service", "sealtrail_system"):
        owner.execute(f"SET ROLE {role}")
        owner.execute("SELECT set_config('sealtrail.tenant', %s, false)", [tenant])
        try:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                owner.execute(
                    "UPDATE events SET credential_kind = '' WHERE tenant_id = %s", [tenant]
                )
        finally:
            owner.execute("RESET ROLE")
    assert _unread(owner, tenant) == 1


def test_one_process_runs_the_backfill_at_a_time(
    client: AuditClient, migrated_database_url: str, owner: psycopg.Connection[Any], tenant: str
) -> None:
    """While another process's job holds the lock, a run writes nothing."""
    client.record_batch(_events(4))
    _as_before_0056(owner, tenant)
    with psycopg.connect(migrated_database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        assert _backfill(migrated_database_url) is None
        assert _unread(owner, tenant) == 4
        other.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    run = _backfill(migrated_database_url)
    assert run is not None and not run.left
    assert _unread(owner, tenant) == 0


def test_a_tenant_being_erased_or_purged_is_left_for_the_next_run(
    client: AuditClient, migrated_database_url: str, owner: psycopg.Connection[Any], tenant: str
) -> None:
    """A tenant whose erasure holds its lock is skipped; one whose rows a
    purge's batch holds is left when its lock wait runs out; the next run
    writes them."""
    client.record_batch(_events(4))
    _as_before_0056(owner, tenant)
    with psycopg.connect(migrated_database_url) as erasure:

        async def erasing() -> None:
            async with await psycopg.AsyncConnection.connect(migrated_database_url) as conn:
                await lock_subject(conn, tenant, ERASURE_SUBJECT)
                run = await CredentialBackfill(migrated_database_url, pause=0).run_once()
                assert run is not None and run.left
                await conn.rollback()

        asyncio.run(erasing())
        assert _unread(owner, tenant) == 4
        erasure.execute(
            "SELECT seq FROM events WHERE tenant_id = %s ORDER BY seq LIMIT 1 FOR UPDATE",
            [tenant],
        )
        run = _backfill(migrated_database_url, lock_timeout="50ms")
        assert run is not None and run.left
        assert _unread(owner, tenant) == 4  # the batch rolled back whole
        erasure.rollback()
    run = _backfill(migrated_database_url)
    assert run is not None and not run.left
    assert _unread(owner, tenant) == 0


def _credentials_seen(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    statement, params = count_statement("t1", EventFilter(), group_by="credential", limit=10)
    counted = [tuple(row[:2]) for row in conn.execute(statement, params)]
    statement, params = query_statement("t1", EventFilter(credential_id="k"), "newest", None, 100)
    return counted, sorted(row[0] for row in conn.execute(statement, params))


def test_migration_0059_lets_the_backfill_write_a_log_from_before_0056(
    migrated_database_url: str,
) -> None:
    """A log of rows from before 0056 in several months, migrated: the job
    writes each row's columns as its record says, empties
    events_credential_unread, and counts and filters answer as before."""
    with_credential = json.dumps(
        {"actor": {"id": "u", "credential": {"kind": "api_key", "id": "k"}}}
    )
    without = json.dumps({"actor": {"id": "u"}})
    with (
        database_of_its_own(migrated_database_url, "credentials_backfill") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute("SELECT sealtrail_create_event_partitions(now() - interval '2 months', now())")
        _undo_0056(conn)
        conn.execute("DELETE FROM schema_migrations WHERE version = 59")
        conn.execute(_BEFORE_0056, [with_credential])
        conn.execute(_BEFORE_0056.replace("SELECT 't1', g,", "SELECT 't1', 100 + g,"), [without])
        migrate_database(url, out_of_order=True)  # 0056 and 0059 missing
        seen = _credentials_seen(conn)
        assert seen[0][0][1] == 40 and len(seen[1]) == 40
        run = asyncio.run(CredentialBackfill(url, pause=0, batch_rows=15).run_once())
        assert run == Run(80, False)
        assert conn.execute(f"{_COLUMNS} WHERE tenant_id = 't1' ORDER BY seq").fetchall() == [
            *[("api_key", "k", None)] * 40,
            *[("", None, None)] * 40,
        ]
        assert _credentials_seen(conn) == seen
        unread = conn.execute(
            "SELECT count(*) FROM events WHERE credential_kind IS NULL"
        ).fetchone()
        assert unread == (0,)
        assert asyncio.run(CredentialBackfill(url, pause=0).run_once()) == Run(0, False)


def test_the_backfill_job_ends_its_session_if_its_process_stops_answering(
    migrated_database_url: str,
) -> None:
    """A process frozen while it holds the job, in a batch or between two
    (its session idle, in no transaction), must not keep every other process
    from the deployment's backfill until TCP gives up: its session ends
    itself, letting go of the lock, as the purge job's does."""

    job = CredentialBackfill(migrated_database_url)._job
    assert asyncio.run(session_timeouts(job)) in (["1min", "10min"], ["1min"])
