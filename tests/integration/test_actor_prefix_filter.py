"""`EventFilter.actor_prefix`: the events of every actor whose id starts with
what a user has typed so far (case and all), or whose email does in any case,
every character itself (`%`, `_`, `\\` no wildcards), in a query, a count, a
stream, an export (its signed filter checked offline), a sink, an alert rule
and the CLI (helper-426, ADR 0135)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sealtrail import (
    AuditClient,
    build_alert_rule,
    build_event,
    build_filter,
)
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread, database_of_its_own, migrate_database
from tests.filter_checks import (
    NARROWED,
    NOT_NARROWED,
    cli_descriptions,
    cli_env,
    cli_output,
    descriptions_found,
    exported_and_checked,
    having_recorded,
    live_from_now,
    violations_refused,
)
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_export_check import refused_when_told
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# (description, actor id, actor email): "" records none.
EVENTS = [
    ("alice", "alice", "Alice@Example.com"),
    ("ali-bot", "ali-bot", ""),
    ("Alice-id", "Alice", ""),
    ("ali-mail", "u-77", "ALI.baba@example.com"),
    ("carol", "carol", "carol@ali.example"),
    ("percent", "50%_off\\x", ""),
    ("percent-other", "50%Xoff", ""),
    ("fifty", "50a_off", ""),
    ("greek", "g-1", "ΟΔΟΣΑ@example.gr"),
]


def _edit(description: str, actor_id: str, email: str) -> event_pb2.Event:
    fields = {"actor_email": email} if email else {}
    return build_event(action="doc.edit", actor_id=actor_id, description=description, **fields)  # type: ignore[arg-type]


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    return having_recorded(client, _edit, EVENTS)


@pytest.mark.parametrize(
    ("prefix", "found"),
    [
        # An id as given; an email in any case: `Alice` (the id) is not `ali`'s.
        ("ali", ["alice", "ali-bot", "ali-mail"]),
        ("Ali", ["alice", "Alice-id", "ali-mail"]),
        ("ALICE@EXAMPLE.COM", ["alice"]),
        ("alice@example.com", ["alice"]),
        ("ali-", ["ali-bot"]),
        # `%`, `_` and `\` are themselves, not LIKE's wildcards and escape.
        ("50%", ["percent", "percent-other"]),
        ("50%_", ["percent"]),
        ("50%_off\\", ["percent"]),
        ("5_", []),
        ("%", []),
        # A capital sigma lowers to one form within a word, another at its end.
        ("ΟΔΟΣ", ["greek"]),
        ("οδοσα@", ["greek"]),
        ("zzz", []),
    ],
)
def test_the_events_of_actors_starting_so(
    recorded: AuditClient, prefix: str, found: list[str]
) -> None:
    event_filter = build_filter(actions="doc.edit", actor_prefix=prefix)
    assert descriptions_found(recorded, event_filter) == found
    assert recorded.count_events(event_filter).total == len(found)


def test_the_longest_prefix_is_taken_and_finds_its_actor(client: AuditClient) -> None:
    actor_id = "a" * 256
    client.record(_edit("long", actor_id, ""))
    assert descriptions_found(client, build_filter(actor_prefix=actor_id)) == ["long"]


def test_a_bad_prefix_or_one_beside_actor_is_refused_naming_it(client: AuditClient) -> None:
    for sent, said in (
        (event_pb2.EventFilter(actor_prefix="a" * 257), "is 257 characters long; the limit is 256"),
        (event_pb2.EventFilter(actor_prefix="ali\n"), "must not contain control characters"),
        (event_pb2.EventFilter(actor_prefix="a\x00"), "must not contain control characters"),
        (event_pb2.EventFilter(actor_prefix="a\x9b"), "must not contain control characters"),
        (
            event_pb2.EventFilter(actor="alice", actor_prefix="ali"),
            "set one of actor or actor_prefix, not both",
        ),
    ):
        assert violations_refused(client, sent) == [("filter.actor_prefix", said)]


def test_counts_by_actor_of_the_actors_starting_so(recorded: AuditClient) -> None:
    """What a type-ahead offers: the actors starting with what was typed."""
    counts = recorded.count_events(build_filter(actor_prefix="ali"), group_by="actor")
    assert sorted((g.key, g.count) for g in counts.groups) == [
        ("ali-bot", 1),
        ("alice", 1),
        ("u-77", 1),
    ]


def test_an_export_of_a_prefix_is_checked_offline_and_its_filter_held(
    recorded: AuditClient, tmp_path: Path
) -> None:
    found, signed_filter, kept = exported_and_checked(
        recorded, tmp_path / "ali.ndjson", build_filter(actor_prefix="ali")
    )
    assert found == ["alice", "ali-bot", "ali-mail"]
    signed = json.loads(signed_filter)
    assert signed["actorPrefix"] == "ali"
    refused_when_told(
        kept,
        json.dumps(signed | {"actorPrefix": "al"}),
        json.dumps({k: v for k, v in signed.items() if k != "actorPrefix"}),
    )


def test_a_live_stream_follows_the_actors_starting_so(recorded: AuditClient) -> None:
    with live_from_now(recorded, build_filter(actor_prefix="ALI")) as live:
        recorded.record_batch([_edit("ali-id", "ali", ""), _edit("bob", "bob", "bob@x.example")])
        recorded.record(_edit("mail", "u-9", "Alina@x.example"))
        first = next(live)
    assert first.description == "mail"


def test_a_sink_given_a_longer_prefix_or_the_exact_actor_is_narrowed(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(actor_prefix="ali")))
    assert client.get_sink(created.sink.id).filter.actor_prefix == "ali"

    def update(**criteria: str) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(**criteria))  # type: ignore[arg-type]

    assert update(actor_prefix="al") == NOT_NARROWED  # shorter: more actors
    assert update(actor_prefix="alic") == NARROWED  # longer: fewer
    assert update(actor_prefix="Alic") == NARROWED  # ids are compared as given
    assert update() == NOT_NARROWED  # every actor
    assert update(actor="alice") == NARROWED
    assert update(actor_prefix="ali") == NOT_NARROWED  # `alice`, and more
    assert update(actor_prefix="bob") == NARROWED


def test_an_alert_rule_on_a_prefix_fires_on_an_actor_starting_so(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("contractors", "match", filter=build_filter(actor_prefix="ext-"))
    )
    client.record_batch([_edit("staff", "emp-1", ""), _edit("near", "ext", "")])
    fires = client.record(_edit("contractor", "ext-42", ""))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_finds_the_actors_starting_so(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    having_recorded(client, _edit, EVENTS)
    env = cli_env(server, tenant)

    assert cli_descriptions(env, "--actor-prefix", "ALI") == ["alice", "ali-mail"]
    assert cli_descriptions(env, "--actor-prefix", "50%_") == ["percent"]
    refused = cli_output(env, "query", "--actor", "alice", "--actor-prefix", "ali", exit_code=2)
    assert "--actor-prefix: set one of actor or actor_prefix, not both" in refused


def documented_recipe(after: str) -> list[str]:
    """docs/database.md's statements that build a migration's indexes before
    an upgrade, as printed in the first sql block after `after`: each a
    statement, or a query whose rows are statements (psql's `\\gexec`,
    marked by a leading "\\gexec ")."""
    text = (Path(__file__).parents[2] / "docs" / "database.md").read_text()
    block = text.split(after, 1)[1].split("```sql\n", 1)[1]
    statements = []
    for part in block.split("```", 1)[0].split(";"):
        part = part.strip()
        while "\\gexec" in part:
            query, part = (each.strip() for each in part.split("\\gexec", 1))
            statements.append("\\gexec " + query)
        if part:
            statements.append(part)
    return statements


def run_documented_recipe(conn: psycopg.Connection[Any], after: str) -> list[tuple[Any, ...]]:
    """documented_recipe(after) run as psql runs it (a `\\gexec` query's rows,
    a statement each partition, each run in turn); the last statement's rows."""
    done = None
    for statement in documented_recipe(after):
        if statement.startswith("\\gexec "):
            rows = conn.execute(statement.removeprefix("\\gexec ")).fetchall()
            assert len(rows) >= 3  # a partition a month, and the default
            for row in rows:
                for each in row:
                    conn.execute(each)
        else:
            done = conn.execute(statement)
    assert done is not None
    return done.fetchall()


def as_before_0054(conn: psycopg.Connection[Any]) -> None:
    """The actor indexes as they were before migration 0054: 0009's, in the
    database's collation, which serve equality alone."""
    conn.execute("DROP INDEX events_actor_id_pattern, events_actor_email_pattern")
    conn.execute("CREATE INDEX events_actor_id ON events (tenant_id, actor_id, seq)")
    conn.execute(
        "CREATE INDEX events_actor_email ON events (tenant_id, actor_email, seq)"
        " WHERE actor_email IS NOT NULL"
    )


def test_the_indexes_built_beforehand_as_documented_are_taken_by_the_migration(
    migrated_database_url: str,
) -> None:
    """Built concurrently partition by partition (appends go on), attached,
    valid; migration 0054 then finds them made, builds nothing, and drops
    0009's indexes of the columns, which they replace."""
    with (
        database_of_its_own(migrated_database_url, "prefixes") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute("SELECT sealtrail_create_event_partitions(now() - interval '2 months', now())")
        as_before_0054(conn)
        conn.execute("DELETE FROM schema_migrations WHERE version = 54")
        before = _actor_indexes(conn)
        assert len(before) >= 10 and not any(pattern for _, _, pattern in before)
        verdicts = run_documented_recipe(conn, "## Indexes built before an upgrade")
        assert sorted(valid for _, valid in verdicts) == [True, True]
        built = [each for each in _actor_indexes(conn) if each[2]]
        assert len(built) == len(before)  # one a partition and the parent's, each column
        assert [each for each in _actor_indexes(conn) if not each[2]] == before  # kept meanwhile
        migrate_database(url, out_of_order=True)  # 0054 alone missing, the later ones applied
        after = _actor_indexes(conn)
        # None rebuilt (the same oids); 0009's dropped, and the partitions'
        # renamed to the names PostgreSQL gives a partition made afterwards.
        assert sorted(oid for _, oid, _ in after) == sorted(oid for _, oid, _ in built)
        assert [name for name, _, _ in after] == _plain_names(conn)
        assert conn.execute("SELECT 1 FROM schema_migrations WHERE version = 54").fetchone()


def test_the_partitions_indexes_carry_plain_names_fresh_or_migrated_from_0053(
    migrated_database_url: str,
) -> None:
    """`\\di` shows each partition's actor indexes under the name PostgreSQL
    gives them when a partition is made (`<partition>_tenant_id_actor_id_seq_idx`),
    never one ending `_idx1` that a collision with 0009's left, on a database
    migrated from nothing and on one that 0053 left."""
    with (
        database_of_its_own(migrated_database_url, "prefixes") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        fresh = [name for name, _, _ in _actor_indexes(conn)]
        assert fresh == _plain_names(conn)
        conn.execute("SELECT sealtrail_create_event_partitions(now() - interval '2 months', now())")
        as_before_0054(conn)
        conn.execute("DELETE FROM schema_migrations WHERE version = 54")
        migrate_database(url, out_of_order=True)  # 0054 alone missing, the later ones applied
        indexes = _actor_indexes(conn)
        assert all(pattern for _, _, pattern in indexes)
        assert [name for name, _, _ in indexes] == _plain_names(conn)
        assert len(indexes) >= 10


def _plain_names(conn: psycopg.Connection[Any]) -> list[str]:
    """The names of the actor indexes of events and its partitions, sorted, as
    PostgreSQL names a partition's on its own: its name, the columns, `idx`."""
    partitions = conn.execute(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass"
    ).fetchall()
    names = ["events_actor_id_pattern", "events_actor_email_pattern"]
    for (partition,) in partitions:
        names += [
            f"{partition}_tenant_id_actor_id_seq_idx",
            f"{partition}_tenant_id_actor_email_seq_idx",
        ]
    return sorted(names)


def _actor_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, int, bool]]:
    """The indexes of events and its partitions on actor id or email: name,
    oid, and whether they order by bytes (text_pattern_ops)."""
    rows = conn.execute(
        "SELECT c.relname, c.oid::bigint, pg_get_indexdef(c.oid) LIKE '%%text_pattern_ops%%'"
        " FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid"
        " WHERE (x.indrelid = 'events'::regclass OR x.indrelid IN"
        "  (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'events'::regclass))"
        " AND pg_get_indexdef(c.oid) ~ '\\(tenant_id, actor_(id|email)'"
        " ORDER BY 1"
    ).fetchall()
    return [(name, oid, pattern) for name, oid, pattern in rows]
