"""`Actor.roles` and `EventFilter.actor_roles`: the roles an actor held when
acting, recorded in the record (inside its leaf hash) and returned as sent,
bad ones refused naming the entry; "what did admins do?" answered alike by a
query, a count, a live stream, an export checked offline, a sink's
narrowing, an alert rule and the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    ExportMismatchError,
    InvalidArgumentError,
    build_alert_rule,
    build_event,
    build_filter,
    check_export,
)
from sealtrail.v1 import event_pb2
from sealtrail_server.api.convert import filter_draft
from sealtrail_server.domain.filters import RecordMatcher, validate_filter
from tests.conftest import ServerThread
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
from tests.integration.test_export_check import KEY
from tests.integration.test_range_bundles import VERIFIER
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# (description, roles): each event described by a name of its own.
EVENTS: list[tuple[str, list[str]]] = [
    ("a", ["admin"]),
    ("b", ["billing", "admin"]),
    ("c", ["Admin"]),  # another role: compared exactly
    ("d", []),
    ("e", ["billing"]),
    ("f", ["admin ops", "auditor"]),
]


def _event(description: str, roles: list[str]) -> event_pb2.Event:
    return build_event(
        action="invoice.refund", actor_id="u_1", description=description, actor_roles=roles
    )


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    return having_recorded(client, _event, EVENTS)


def test_roles_are_recorded_sealed_and_returned_as_sent(client: AuditClient) -> None:
    sent = client.record(action="invoice.refund", actor_id="u_1", actor_roles=["support", "admin"])
    assert list(sent.event.actor.roles) == ["support", "admin"]  # in the order sent
    assert list(client.get_event(sent.event.id).actor.roles) == ["support", "admin"]
    [queried] = client.query(build_filter(request_id=sent.event.context.request_id))
    assert list(queried.actor.roles) == ["support", "admin"]
    # In the canonical record the leaf hash is of: tamper-evident.
    proof = client.get_inclusion_proof(event_id=sent.event.id)
    assert b'"roles":["support","admin"]' in proof.record
    assert hashlib.sha256(b"\x00" + proof.record).digest() == sent.event.leaf_hash
    # None sent, none stored: the record is what it was before roles existed.
    none = client.record(action="invoice.refund", actor_id="u_1")
    assert not none.event.actor.roles
    assert b"roles" not in client.get_inclusion_proof(event_id=none.event.id).record
    one = client.record(action="invoice.refund", actor_id="u_1", actor_roles="admin")
    assert list(client.get_event(one.event.id).actor.roles) == ["admin"]


def test_a_role_holding_a_secret_is_redacted_before_it_is_sealed(client: AuditClient) -> None:
    """A token sent as a role is replaced where it stands, as in an actor's
    id, before the record is hashed: the stored record, its leaf hash and
    every answer hold the replacement, never the token."""
    token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    sent = client.record(action="invoice.refund", actor_id="u_1", actor_roles=["admin", token])
    assert list(sent.event.actor.roles) == ["admin", "[REDACTED:github_token]"]
    proof = client.get_inclusion_proof(event_id=sent.event.id)
    assert token.encode() not in proof.record
    assert b'"roles":["admin","[REDACTED:github_token]"]' in proof.record
    assert hashlib.sha256(b"\x00" + proof.record).digest() == sent.event.leaf_hash
    assert list(client.query(build_filter(actor_roles=token))) == []
    [found] = client.query(build_filter(actor_roles="[REDACTED:github_token]"))
    assert found.id == sent.event.id


def test_tokens_sent_as_roles_are_stored_distinct_and_their_export_imports(
    client: AuditClient,
    client_for: Callable[..., AuditClient],
    server: ServerThread,
    tenant: str,
    tmp_path: Path,
) -> None:
    """Two tokens sent as roles were both stored as `[REDACTED:github_token]`,
    a role given twice, which validation refuses: `sealtrail import` of the
    export failed (`event.actor.roles[1]: repeats role`). The second is
    numbered, as a key replaced alike is."""
    tokens = [
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghp_0123456789abcdefABCDEF0123456789abcd",
    ]
    sent = client.record(action="invoice.refund", actor_id="u_1", actor_roles=tokens)
    stored = ["[REDACTED:github_token]", "[REDACTED:github_token] (2)"]
    assert list(sent.event.actor.roles) == stored
    exported = tmp_path / "roles.ndjson"
    cli_output(
        cli_env(server, tenant), "export", "--action", "invoice.refund",
        "--format", "ndjson", "-o", str(exported),
    )  # fmt: skip
    other = f"{tenant}-moved"
    said = cli_output(cli_env(server, other), "import", str(exported))
    assert said == f"recorded 1 event from {exported}\n", said
    [moved] = client_for(other).query(build_filter(actions="invoice.refund"))
    assert list(moved.actor.roles) == stored


@pytest.mark.parametrize(
    ("roles", "named", "words"),
    [
        ([f"r{i}" for i in range(33)], "event.actor.roles", "has 33 roles; the limit is 32"),
        (["admin", "billing", ""], "event.actor.roles[2]", "is empty"),
        (["admin", "x" * 129], "event.actor.roles[1]", "is 129 characters long; the limit is 128"),
        (["ad\nmin"], "event.actor.roles[0]", "must not contain control characters"),
        (["ad\x00min"], "event.actor.roles[0]", "must not contain control characters"),
        (["admin\x9b"], "event.actor.roles[0]", "must not contain control characters"),
        (["admin", "billing", "admin"], "event.actor.roles[2]", "repeats role 'admin'"),
    ],
)
def test_bad_roles_are_refused_naming_the_entry(
    client: AuditClient, roles: list[str], named: str, words: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.record(action="invoice.refund", actor_id="u_1", actor_roles=roles)
    [(field, description)] = caught.value.field_violations
    assert field == named and words in description, description
    results = client.record_batch(
        [_event("fine", ["admin"]), _event("bad", roles), _event("fine", ["Admin", "admin"])]
    )
    assert results[0].error is None and results[2].error is None
    assert isinstance(results[1].error, InvalidArgumentError)
    assert [f for f, _ in results[1].error.field_violations] == [
        named.replace("event", "events[1]")
    ]
    at_limits = [f"{i:03d}" + "x" * 125 for i in range(32)]
    kept = client.record(action="invoice.refund", actor_id="u_1", actor_roles=at_limits)
    assert list(kept.event.actor.roles) == at_limits


# (roles, descriptions found among EVENTS).
CASES: list[tuple[list[str], list[str]]] = [
    (["admin"], ["a", "b"]),  # exactly: not "Admin", nor "admin ops"
    (["Admin"], ["c"]),
    (["billing"], ["b", "e"]),
    (["admin", "billing"], ["a", "b", "e"]),  # any of them
    (["admin", "admin"], ["a", "b"]),  # one given twice is one
    (["auditor"], ["f"]),  # not the actor's first role alone
    (["admi"], []),  # no prefix
    (["%"], []),  # no wildcard
]


@pytest.mark.parametrize(("roles", "found"), CASES)
def test_a_query_and_a_count_find_the_events_of_each_role(
    recorded: AuditClient, roles: list[str], found: list[str]
) -> None:
    event_filter = build_filter(actions="invoice.refund", actor_roles=roles)
    assert descriptions_found(recorded, event_filter) == found
    assert recorded.count_events(event_filter).total == len(found)
    by_action = recorded.count_events(event_filter, group_by="action")
    assert [group.count for group in by_action.groups] == ([len(found)] if found else [])


def test_the_live_matcher_finds_what_the_query_finds(recorded: AuditClient) -> None:
    """StreamEvents, sinks and rules match each record in the process
    (RecordMatcher): the same events as the SQL of Query."""
    stored = [
        (event.description, json.loads(recorded.get_inclusion_proof(event_id=event.id).record))
        for event in recorded.query(build_filter(actions="invoice.refund"), order="oldest")
    ]
    for roles, found in CASES:
        draft = filter_draft(build_filter(actions="invoice.refund", actor_roles=roles))
        matcher = RecordMatcher(validate_filter(draft))
        assert [name for name, record in stored if matcher.matches(record)] == found, roles


def test_a_live_stream_follows_the_events_of_a_role(recorded: AuditClient) -> None:
    with live_from_now(recorded, build_filter(actor_roles=["admin", "owner"])) as live:
        recorded.record(_event("other", ["Admin", "billing"]))
        recorded.record(_event("none", []))
        recorded.record(_event("matching", ["support", "owner"]))
        first = next(live)
    assert first.description == "matching"
    assert list(first.actor.roles) == ["support", "owner"]


@pytest.mark.parametrize(
    ("roles", "named", "words"),
    [
        ([f"r{i}" for i in range(33)], "filter.actor_roles", "has 33 values; the limit is 32"),
        (["admin", ""], "filter.actor_roles[1]", "is empty"),
        (["x" * 129], "filter.actor_roles[0]", "is 129 characters long; the limit is 128"),
        (["admin", "ad\tmin"], "filter.actor_roles[1]", "must not contain control characters"),
    ],
)
def test_bad_roles_in_a_filter_are_refused_naming_the_value(
    client: AuditClient, roles: list[str], named: str, words: str
) -> None:
    [(field, description)] = violations_refused(client, build_filter(actor_roles=roles))
    assert field == named and words in description, description
    at_limits = [f"{i:03d}" + "x" * 125 for i in range(32)]
    assert list(client.query(build_filter(actor_roles=at_limits))) == []


def test_an_export_of_a_role_checks_offline_and_its_roles_are_sealed(
    recorded: AuditClient, tmp_path: Path
) -> None:
    """What admins did, exported signed with its filter; the roles are in each
    record's leaf hash, so an export whose row names another role fails the
    offline check."""
    out = tmp_path / "admins.ndjson"
    exported, signed, manifest = exported_and_checked(
        recorded, out, build_filter(actions="invoice.refund", actor_roles="admin")
    )
    assert exported == ["a", "b"]
    assert json.loads(signed)["actorRoles"] == ["admin"]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["actor"]["roles"] for row in rows] == [["admin"], ["billing", "admin"]]
    out.write_text(out.read_text(encoding="utf-8").replace('["admin"]', '["auditor"]'))
    with pytest.raises(ExportMismatchError):
        check_export(manifest, key=KEY)


def test_a_csv_export_shows_the_roles_as_a_json_array_in_a_last_column(
    recorded: AuditClient, tmp_path: Path
) -> None:
    """After the columns that were there before (their positions kept), so
    that a role with a comma stays one; empty for an event with none."""
    recorded.record(_event("g", ["=cmd", "a,b"]))
    out = tmp_path / "roles.csv"
    recorded.export(out, format="csv", filter=build_filter(actions="invoice.refund"))
    with out.open(newline="", encoding="utf-8") as exported:
        [header, *rows] = list(csv.reader(exported))
    assert header[-2:] == ["duration_ms", "actor_roles"]
    shown = {row[header.index("description")]: row[-1] for row in rows}
    assert shown["b"] == '["billing", "admin"]'
    assert shown["d"] == ""
    assert json.loads(shown["g"]) == ["=cmd", "a,b"]


def test_a_sink_given_a_role_is_narrowed_and_widened_with_more(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(actions="invoice.refund")))

    def update(*roles: str) -> tuple[int, list[str]]:
        return refiltered(
            client, created.sink.id, build_filter(actions="invoice.refund", actor_roles=roles)
        )

    assert update("admin") == NARROWED
    assert list(client.get_sink(created.sink.id).filter.actor_roles) == ["admin"]
    assert update("admin", "billing") == NOT_NARROWED  # more roles: more events
    assert update("billing") == NARROWED  # admin's events left out
    assert update() == NOT_NARROWED


def test_an_alert_rule_on_a_role_fires_on_its_events_alone(client: AuditClient) -> None:
    """Seed: "when an admin refunds"."""
    rule = client.create_alert_rule(
        build_alert_rule("admin refunds", "match", filter=build_filter(actor_roles="admin"))
    )
    client.record(_event("billing", ["billing"]))
    client.record(_event("Admin", ["Admin"]))
    fires = client.record(_event("admin", ["billing", "admin"]))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_records_roles_and_finds_the_events_of_a_role(
    recorded: AuditClient, server: ServerThread, tenant: str
) -> None:
    env = cli_env(server, tenant)
    printed = cli_output(
        env, "record", "--action", "invoice.refund", "--actor-id", "u_2",
        "--description", "cli", "--role", "admin", "--role", "owner",
    )  # fmt: skip
    assert json.loads(printed)["actor"]["roles"] == ["admin", "owner"]
    assert cli_descriptions(env, "--role", "admin") == ["a", "b", "cli"]
    assert cli_descriptions(env, "--role", "billing", "--role", "owner") == ["b", "e", "cli"]
    said = cli_output(env, "stats", "--role", "auditor", "--by", "action")
    assert "invoice.refund" in said and "1" in said, said
    refused = cli_output(env, "query", "--role", "x" * 129, exit_code=2)
    assert "--role" in refused and "129 characters" in refused, refused
    twice = cli_output(
        env, "record", "--action", "invoice.refund", "--actor-id", "u_2",
        "--role", "admin", "--role", "admin", exit_code=2,
    )  # fmt: skip
    assert "repeats role 'admin'" in twice, twice


def test_the_cli_exports_what_admins_did_and_verifies_it_offline(
    recorded: AuditClient, server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """`sealtrail export --role admin` writes the admins' events with the
    signed manifest; `sealtrail verify` checks it with no server, and fails
    it once a row names another role (the roles are in the leaf hash)."""
    env = cli_env(server, tenant)
    out = tmp_path / "admins.ndjson"
    cli_output(env, "export", "--role", "admin", "--format", "ndjson", "-o", str(out))
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["description"] for row in rows] == ["a", "b"]
    said = cli_output({}, "verify", str(out), "--key", VERIFIER)
    assert said.startswith("MATCHES:") and 'matching {"actorRoles":["admin"]}' in said, said
    out.write_text(out.read_text(encoding="utf-8").replace('"billing"', '"auditor"'))
    failed = cli_output({}, "verify", str(out), "--key", VERIFIER, exit_code=1)
    assert "MATCHES" not in failed, failed


def test_the_cli_table_shows_the_roles_beside_the_actor(
    recorded: AuditClient, server: ServerThread, tenant: str
) -> None:
    """`sealtrail query` (a table) said the actor alone where its JSON said
    the roles: they follow the actor, in brackets, in the order recorded."""
    many = [f"r{n}" for n in range(6)]
    recorded.record(_event("g", many))
    env = {**cli_env(server, tenant), "COLUMNS": "250"}
    table = cli_output(env, "query", "--action", "invoice.refund")
    assert "u_1 (billing, admin)" in table, table
    assert "u_1 (admin ops, auditor)" in table, table
    assert "u_1 (r0, r1, r2, +3 more)" in table, table
    # Event d held none: its actor alone.
    assert any("u_1 " in line and "u_1 (" not in line for line in table.splitlines()), table
    # A role a reader would split or trim is quoted: `(admin, bill,ing)` read
    # as three roles; one holding a space within stays as it reads.
    recorded.record(_event("h", ["admin", "bill,ing", " edge", 'say "hi"', "+3 more", "a b"]))
    table = cli_output(env, "query", "--action", "invoice.refund")
    assert 'u_1 (admin, "bill,ing", " edge", +3 more)' in table, table
    recorded.record(_event("i", ['say "hi"', "+3 more", "(x)", "a b"]))
    table = cli_output(env, "query", "--action", "invoice.refund")
    assert 'u_1 ("say \\"hi\\"", "+3 more", "(x)", +1 more)' in table, table


def test_the_cli_creates_a_sink_and_an_alert_rule_of_roles(
    client: AuditClient, server: ServerThread, tenant: str
) -> None:
    env = cli_env(server, tenant)
    cli_output(
        env, "sinks", "create", "admins", "--kind", "webhook", "--url",
        "https://hooks.example.com/a", "--secret", "whsec_" + "a" * 32,
        "--role", "admin", "--role", "billing",
    )  # fmt: skip
    [sink] = [sink for sink in client.list_sinks() if sink.name == "admins"]
    assert list(sink.filter.actor_roles) == ["admin", "billing"]
    cli_output(
        env, "alerts", "create", "admin refunds", "--kind", "match",
        "--action", "invoice.refund", "--role", "admin",
    )  # fmt: skip
    [rule] = [rule for rule in client.list_alert_rules() if rule.name == "admin refunds"]
    assert list(rule.match.filter.actor_roles) == ["admin"]


async def test_the_async_client_records_roles_and_finds_the_events_of_a_role(
    server: ServerThread, tenant: str
) -> None:
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        sent = await audit.record(
            action="invoice.refund", actor_id="u_1", actor_roles=["support", "admin"]
        )
        assert list(sent.event.actor.roles) == ["support", "admin"]
        await audit.record(_event("billing", ["billing"]))
        found = [event.id async for event in audit.query(build_filter(actor_roles="admin"))]
        assert found == [sent.event.id]
        counted = await audit.count_events(build_filter(actor_roles=["admin", "billing"]))
        assert counted.total == 2
