"""The `actor_roles` column (migration 0065, ADR 0152): written at append
from the roles the record holds, by the one-statement write and by COPY
alike, NULL for none; the rows an earlier build appended with roles (column
NULL) written by the migration, so that the filter, reading the column,
answers as reading their records did; the events trigger admitting that one
UPDATE of it and no other."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, build_event
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.store.counts import count_statement
from sealtrail_server.store.events import query_statement
from tests.conftest import database_of_its_own, migrate_database

# Roles whose text an array literal must quote or escape, and plain ones.
AWKWARD = ["admin", "bill,ing", 'say "hi"', "back\\slash", "{braced}", "NULL", " spaced "]
_BOTH = (
    "SELECT actor_roles, ARRAY(SELECT json_array_elements_text((record::json -> 'actor')"
    " -> 'roles')) FROM events WHERE tenant_id = %s ORDER BY seq"
)


@pytest.mark.parametrize("events", [3, 70], ids=["one statement", "copied"])
def test_the_appender_writes_the_records_roles(
    client_for: Callable[..., AuditClient],
    tenant: str,
    sql: psycopg.Connection[Any],
    events: int,
) -> None:
    """Each row's column is the roles its record holds, in their order, read
    back as sent whatever they hold; NULL for an event without roles. A batch
    of up to 64 events is one statement, a larger one COPYed."""
    roles = [AWKWARD, ["admin"], []]
    batch = [
        build_event(action="a.b", actor_id="u", actor_roles=roles[n % 3]) for n in range(events)
    ]
    client = client_for(tenant, "recorder")
    assert all(r.error is None for r in client.record_batch(batch))
    rows = sql.execute(_BOTH, [tenant]).fetchall()
    assert [column for column, _ in rows] == [roles[n % 3] or None for n in range(events)]
    assert all(column == read for column, read in rows if column is not None)


# (seq, roles in the record; None: no roles key), of tenant t1.
ROWS: list[tuple[int, list[str] | None]] = [
    (1, ["admin"]),
    (2, ["billing", "admin"]),
    (3, ["Admin"]),
    (4, None),
    (5, ["billing"]),
    (6, ["admin ops", 'a "quoted", role']),
]
_INSERT = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, leaf_hash, record, credential_kind)"
    " VALUES ('t1', %s, gen_random_uuid(), now(), now(), 'a.b', 1, 'success', 'u', '\\x00',"
    " %s, '')"
)
# What the filter read off the records before 0065 (ADR 0150).
_OFF_THE_RECORDS = (
    "SELECT seq FROM events WHERE tenant_id = 't1'"
    " AND ((record::json -> 'actor') -> 'roles')::jsonb ?| %s::text[] ORDER BY seq"
)
ASKED = [["admin"], ["billing"], ["Admin", "admin ops"], ['a "quoted", role'], ["nobody"]]


@pytest.fixture
def before_0065(migrated_database_url: str) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """A database of its own as it was before migration 0065, holding ROWS as
    an unreleased build appended them (roles in the record, no column), and
    the owner's connection to it."""
    with (
        database_of_its_own(migrated_database_url, "roles_column") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute("ALTER TABLE events DROP COLUMN actor_roles")
        conn.execute("DELETE FROM schema_migrations WHERE version = 65")
        for seq, roles in ROWS:
            actor = {"id": "u"} if roles is None else {"id": "u", "roles": roles}
            conn.execute(_INSERT, [seq, json.dumps({"action": "a.b", "actor": actor})])
        yield url, conn


def test_the_migration_writes_the_roles_of_rows_appended_before_it(
    before_0065: tuple[str, psycopg.Connection[Any]],
) -> None:
    """The filter's answers over rows appended before the column are those
    read off their records: a page and a count, each role asked."""
    url, conn = before_0065
    before = {tuple(a): conn.execute(_OFF_THE_RECORDS, [a]).fetchall() for a in ASKED}
    assert before[("admin",)] == [(1,), (2,)]
    migrate_database(url, out_of_order=True)  # 0065 alone missing
    for asked in ASKED:
        chosen = EventFilter(actor_roles=tuple(sorted(asked)))
        statement, params = query_statement("t1", chosen, "oldest", None, 10)
        seqs = [(row[0],) for row in conn.execute(statement, params).fetchall()]
        assert seqs == before[tuple(asked)], asked
        count, count_params = count_statement("t1", chosen, group_by=None, limit=10)
        assert conn.execute(count, count_params).fetchone()[0] == len(before[tuple(asked)])  # type: ignore[index]
    rows = conn.execute("SELECT seq, actor_roles FROM events ORDER BY seq").fetchall()
    assert rows == ROWS


def test_the_migration_reads_only_rows_received_since_0064_less_a_day(
    before_0065: tuple[str, psycopg.Connection[Any]],
) -> None:
    """A build that wrote roles had applied migration 0064 first: 0065 reads
    the rows received since, less a day, not every record of a database a
    release wrote (the migration holds its lock on events meanwhile). A row
    received before that bound is not read, roles or not (no build wrote it)."""
    url, conn = before_0065
    conn.execute(
        _INSERT.replace(
            "now(), now()",
            "now(), (SELECT applied_at - interval '25 hours'"
            " FROM schema_migrations WHERE version = 64)",
        ),
        [7, json.dumps({"action": "a.b", "actor": {"id": "u", "roles": ["admin"]}})],
    )
    migrate_database(url, out_of_order=True)  # 0065 alone missing
    rows = conn.execute("SELECT seq, actor_roles FROM events ORDER BY seq").fetchall()
    assert rows == [*ROWS, (7, None)]


def test_roles_not_all_text_are_no_roles_to_the_migration_and_the_trigger(
    before_0065: tuple[str, psycopg.Connection[Any]],
) -> None:
    """Roles a record holds that are not all strings (only a row written
    straight into the database: Record refuses them) matched nothing read off
    the record (`?|` compares strings), but the migration wrote `[1, true]` as
    `{1,true}`, which a filter of role "1" found, and the trigger admitted it
    (helper-545's review). Such a row's column stays NULL, and is kept so."""
    url, conn = before_0065
    for seq, roles in ((7, [1, True]), (8, ["ops", None]), (9, {"ops": 1})):
        record = {"action": "a.b", "actor": {"id": "u", "roles": roles}}
        conn.execute(_INSERT, [seq, json.dumps(record)])
    migrate_database(url, out_of_order=True)  # 0065 alone missing
    rows = conn.execute("SELECT seq, actor_roles FROM events WHERE seq > 6 ORDER BY seq")
    assert rows.fetchall() == [(7, None), (8, None), (9, None)]
    for seq, written in ((7, "{1,true}"), (8, "{ops,NULL}")):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE events SET actor_roles = %s WHERE seq = %s", [written, seq])


def test_the_trigger_admits_writing_the_records_roles_and_nothing_else(
    before_0065: tuple[str, psycopg.Connection[Any]],
) -> None:
    """Of a row whose column is NULL (here one an earlier build's process
    appended after the migration): its record's roles are admitted; other
    roles, another column changed with them, or a written row's, refused."""
    url, conn = before_0065
    conn.execute("ALTER TABLE events ADD COLUMN actor_roles text[]")  # as beforehand
    migrate_database(url, out_of_order=True)  # 0065 alone missing
    record = json.dumps({"action": "a.b", "actor": {"id": "u", "roles": ["billing", "x"]}})
    conn.execute(_INSERT, [7, record])
    refused = [
        "UPDATE events SET actor_roles = ARRAY['admin'] WHERE seq = 4",
        "UPDATE events SET actor_roles = ARRAY['x', 'billing'] WHERE seq = 7",
        "UPDATE events SET actor_roles = ARRAY['billing', 'x'], actor_id = 'v' WHERE seq = 7",
        "UPDATE events SET actor_roles = ARRAY['admin', 'billing'] WHERE seq = 2",
        "UPDATE events SET actor_roles = ARRAY['billing', 'admin'] WHERE seq = 2",
    ]
    for statement in refused:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    conn.execute("UPDATE events SET actor_roles = ARRAY['billing', 'x'] WHERE seq = 7")
    written = conn.execute("SELECT actor_roles FROM events WHERE seq = 7").fetchone()
    assert written == (["billing", "x"],)
