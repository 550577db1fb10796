"""The filters an investigation asks for (helper-165, G7 and G8):
`EventFilter.ip`, events from one address or one network (CIDR) in one query,
"who did what from 203.0.113.9", and CountEvents by address (ADR 0065);
`*.verb` actions, one verb on whatever resource; and an actor's email in
whatever case the investigator has it (ADR 0067)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from sealtrail import (
    AuditClient,
    EventCount,
    InvalidArgumentError,
    build_alert_rule,
    build_event,
    build_filter,
)
from sealtrail import _cli as cli
from sealtrail_server.domain.filters import FilterDraft, validate_filter
from sealtrail_server.store.events import query_statement
from tests.conftest import ServerThread

# (actor, context.ip as sent)
SENT = [
    ("a", "203.0.113.9"),
    ("b", "203.0.113.200"),
    ("c", "198.51.100.1"),
    ("d", "::ffff:203.0.113.50"),  # IPv4 seen through a dual-stack listener
    ("e", "2001:db8::1"),
    ("f", "fe80::1%eth0"),  # a zone id: kept in the record, dropped to compare
    ("g", ""),
]


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    client.record_batch([build_event(action="doc.read", actor_id=a, ip=ip) for a, ip in SENT])
    return client


def _actors(client: AuditClient, **criteria: str) -> list[str]:
    """The actors of the `doc.read` events `criteria` (build_filter's) find."""
    events = client.query(build_filter(actions="doc.read", **criteria), order="oldest")
    return [event.actor.id for event in events]


@pytest.mark.parametrize(
    ("ip", "actors"),
    [
        ("203.0.113.9", ["a"]),
        ("203.0.113.0/24", ["a", "b", "d"]),
        ("203.0.113.77/24", ["a", "b", "d"]),  # host bits ignored
        ("::ffff:203.0.113.0/120", ["a", "b", "d"]),  # a mapped network, as IPv4
        ("0.0.0.0/0", ["a", "b", "c", "d"]),
        ("2001:db8::/32", ["e"]),
        ("fe80::/10", ["f"]),
        ("fe80::1%eth0", ["f"]),
        ("::/0", ["e", "f"]),
        ("192.0.2.0/24", []),
    ],
)
def test_events_from_an_address_or_a_network(
    recorded: AuditClient, ip: str, actors: list[str]
) -> None:
    assert _actors(recorded, ip=ip) == actors


def test_the_records_keep_the_address_as_sent(recorded: AuditClient) -> None:
    [event] = recorded.query(build_filter(actions="doc.read", actor="d"))
    assert event.context.ip == "::ffff:203.0.113.50"


@pytest.mark.parametrize("ip", ["203.0.113", "203.0.113.0/33", "example.com", "10.0.0.1/8/8"])
def test_an_ip_that_is_no_address_or_network_is_refused_naming_the_field(
    client: AuditClient, ip: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.query_page(build_filter(ip=ip))
    [(field, description)] = refused.value.field_violations
    assert field == "filter.ip" and "CIDR" in description


def test_a_stream_follows_one_network_live(recorded: AuditClient) -> None:
    live = recorded.stream(build_filter(ip="198.51.100.0/24"), after_seq=len(SENT))
    recorded.record(action="doc.read", actor_id="outside", ip="192.0.2.1")
    recorded.record(action="doc.read", actor_id="inside", ip="198.51.100.99")
    first = next(live)
    live.close()  # type: ignore[attr-defined]
    assert first.actor.id == "inside"


def test_reads_of_the_log_are_found_by_the_readers_address(recorded: AuditClient) -> None:
    """Sealtrail's own records carry the caller's address (ADR 0059): "who read
    the log from this network" is the same query."""
    list(recorded.query(build_filter(actions="doc.read")))
    deadline = time.monotonic() + 20
    while not (
        reads := list(recorded.query(build_filter(actions="audit_log.*", ip="127.0.0.0/8")))
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert {event.context.ip for event in reads} == {"127.0.0.1"}


def test_counts_per_address(recorded: AuditClient) -> None:
    counts = recorded.count_events(build_filter(actions="doc.read"), group_by="ip")
    assert sorted(counts.groups, key=lambda group: group.key) == sorted(
        [
            EventCount("", 1),
            EventCount("198.51.100.1", 1),
            EventCount("2001:db8::1", 1),
            EventCount("203.0.113.200", 1),
            EventCount("203.0.113.50", 1),  # mapped, counted as IPv4
            EventCount("203.0.113.9", 1),
            EventCount("fe80::1", 1),
        ],
        key=lambda group: group.key,
    )


def test_the_cli_takes_an_address_or_a_network(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client_for(tenant).record_batch(
        [build_event(action="doc.read", actor_id=a, ip=ip) for a, ip in SENT]
    )
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    found = CliRunner().invoke(
        cli.main, ["query", "--action", "doc.read", "--ip", "203.0.113.0/24"], env=env
    )
    assert found.exit_code == 0, found.output
    assert "203.0.113.9" in found.output and "198.51.100.1" not in found.output


def test_a_time_typed_to_the_nanosecond_bounds_the_cli_s_query_as_it_bounds_the_api_s(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    """`--since 16:00:00.0000015Z` was cut to 16:00:00.000001 before it was
    sent: the CLI found the event at 16:00:00.000001, which the same bound
    sent over the API (kept to the microsecond, the later one) leaves out;
    `--until` the other way round (helper-204)."""
    client = client_for(tenant)
    event = build_event(action="doc.read", actor_id="u-at-1us")
    event.occurred_at.seconds, event.occurred_at.nanos = 1_764_000_000, 1000  # 16:00:00.000001Z
    client.record(event)
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}

    def found(option: str) -> list[str]:
        typed = [option, "2025-11-24T16:00:00.0000015Z"]
        done = CliRunner().invoke(
            cli.main, ["query", "--action", "doc.read", *typed, "--format", "jsonl"], env=env
        )
        assert done.exit_code == 0, done.output
        return [json.loads(line)["actor"]["id"] for line in done.output.splitlines()]

    assert found("--since") == []
    assert found("--until") == ["u-at-1us"]


def test_a_time_typed_with_a_decimal_comma_bounds_the_cli_s_query_to_the_nanosecond_too(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    """`--since 16:00:00,0000015Z` (ISO 8601's decimal comma) was cut to
    16:00:00.000001 without a word, and found the event at that microsecond
    which the same bound typed with a point leaves out; a form in which the
    CLI cannot read the nanoseconds is refused, not cut (helper-215)."""
    client = client_for(tenant)
    event = build_event(action="doc.read", actor_id="u-at-1us")
    event.occurred_at.seconds, event.occurred_at.nanos = 1_764_000_000, 1000  # 16:00:00.000001Z
    client.record(event)
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}

    def run(*typed: str) -> Any:
        return CliRunner().invoke(
            cli.main, ["query", "--action", "doc.read", *typed, "--format", "jsonl"], env=env
        )

    def found(*typed: str) -> list[str]:
        done = run(*typed)
        assert done.exit_code == 0, done.output
        return [json.loads(line)["actor"]["id"] for line in done.output.splitlines()]

    assert found("--since", "2025-11-24T16:00:00,0000015Z") == []
    assert found("--until", "2025-11-24T16:00:00,0000015Z") == ["u-at-1us"]
    assert found("--since", "2025-11-24T16:00:00,000001Z") == ["u-at-1us"]
    refused = run("--since", "2025-11-24T17:00:00.0000015+0100")
    assert refused.exit_code == 2 and "RFC 3339" in refused.output, refused.output


def test_a_verb_on_any_resource_is_found_by_its_suffix(client: AuditClient) -> None:
    """`*.delete`, as a "bulk deletion" rule or an investigator asks for it
    (helper-165, G7): in SQL (Query, CountEvents) as in the streams' matcher."""
    actions = ["api_key.delete", "project.member.delete", "api_key.undelete", "doc.read"]
    client.record_batch([build_event(action=action, actor_id="u") for action in actions])
    deletions = build_filter(actions=["*.delete", "doc.read"])
    found = [event.action for event in client.query(deletions, order="oldest")]
    assert found == ["api_key.delete", "project.member.delete", "doc.read"]
    assert client.count_events(build_filter(actions="*.delete")).total == 2
    live = client.stream(build_filter(actions="*.delete"), after_seq=len(actions))
    client.record(action="api_key.undelete", actor_id="u")
    client.record(action="bucket.delete", actor_id="u")
    first = next(live)
    live.close()  # type: ignore[attr-defined]
    assert first.action == "bucket.delete"


# (actor id, actor email as sent)
PEOPLE = [
    ("u-carol", "Carol.Smith@Example.COM"),
    ("u-alice", "alice@example.com"),
    ("U-Bob", "bob@example.com"),  # an id in capitals: the calling system's, kept exact
    ("u-jorg", "JÖRG@Example.de"),  # non-ASCII: lowered as Python's str.lower does
]


@pytest.fixture
def people(client: AuditClient) -> AuditClient:
    client.record_batch(
        [build_event(action="doc.read", actor_id=a, actor_email=email) for a, email in PEOPLE]
    )
    return client


@pytest.mark.parametrize(
    ("actor", "found"),
    [
        ("carol.smith@example.com", ["u-carol"]),
        ("Carol.Smith@Example.COM", ["u-carol"]),
        ("CAROL.SMITH@EXAMPLE.COM", ["u-carol"]),
        ("ALICE@example.com", ["u-alice"]),
        ("alice@example.com", ["u-alice"]),
        ("jörg@example.de", ["u-jorg"]),
        ("U-Bob", ["U-Bob"]),
        ("u-bob", []),  # ids stay exact
        ("U-CAROL", []),
        ("carol.smith@example.org", []),
    ],
)
def test_an_actors_email_is_found_in_any_case_and_an_id_only_exactly(
    people: AuditClient, actor: str, found: list[str]
) -> None:
    assert _actors(people, actor=actor) == found


def test_the_records_keep_the_email_as_sent(people: AuditClient) -> None:
    [event] = people.query(build_filter(actions="doc.read", actor="carol.smith@example.com"))
    assert event.actor.email == "Carol.Smith@Example.COM"
    assert people.verify_log(check_views=True).ok


def test_counts_and_exports_find_an_email_in_any_case(people: AuditClient, tmp_path: Path) -> None:
    carol = build_filter(actions="doc.read", actor="CAROL.smith@example.com")
    assert people.count_events(carol).total == 1
    manifest = people.export(tmp_path / "carol.json", format="json", filter=carol)
    assert manifest.row_count == 1
    assert "Carol.Smith@Example.COM" in (tmp_path / "carol.json").read_text()


def test_a_stream_follows_an_email_in_any_case_live(people: AuditClient) -> None:
    live = people.stream(build_filter(actor="ALICE@EXAMPLE.COM"), after_seq=len(PEOPLE))
    people.record(action="doc.read", actor_id="u-alicia", actor_email="alicia@example.com")
    people.record(action="doc.edit", actor_id="u-alice", actor_email="Alice@Example.com")
    first = next(live)
    live.close()  # type: ignore[attr-defined]
    assert (first.action, first.actor.email) == ("doc.edit", "Alice@Example.com")


def test_an_alert_rule_on_an_email_fires_on_it_in_any_case(client: AuditClient) -> None:
    """Rules match in the streams' matcher (RecordMatcher), not in SQL."""
    rule = build_alert_rule("carol", "match", filter=build_filter(actor="carol.smith@example.com"))
    made = client.create_alert_rule(rule).rule
    try:
        client.record(action="doc.read", actor_id="u-other", actor_email="carol@example.com")
        carol = client.record(
            action="doc.read", actor_id="u-9", actor_email="CAROL.Smith@example.com"
        )
        deadline = time.monotonic() + 20
        while not (fired := list(client.query(build_filter(actions="security.alert")))):
            assert time.monotonic() < deadline, "the rule did not fire"
            time.sleep(0.1)
        [alert] = fired
        assert alert.details["trigger_event_id"] == carol.event.id
    finally:
        client.delete_alert_rule(made.id)


def test_an_event_appended_before_emails_were_lowered_is_found_as_it_was(
    sql: psycopg.Connection[Any],
) -> None:
    """Rows appended before the column was written lowercased hold the email as
    sent, and stay so (the events table rejects UPDATE): the filter finds such
    a row by its email exactly as sent, or in any case if it was sent in lower
    case (ADR 0067, docs/api.md)."""
    tenant = f"old-{uuid.uuid4().hex[:8]}"

    def found(actor: str) -> list[str]:
        event_filter = validate_filter(FilterDraft(actor=actor))
        statement, params = query_statement(
            tenant, event_filter, "oldest", None, 10, columns=psycopg.sql.SQL("actor_id")
        )
        return [actor_id for (actor_id,) in sql.execute(statement, params).fetchall()]

    with sql.transaction(force_rollback=True):
        sql.execute(
            "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
            " outcome, actor_id, actor_email, leaf_hash, record)"
            " SELECT %s, seq, gen_random_uuid(), now(), now(), 'doc.read', 1, 'success',"
            " actor_id, actor_email, '\\x00', '{}'"
            " FROM (VALUES (1, 'u-dave', 'Dave@Example.com'), (2, 'u-erin', 'erin@example.com'))"
            " AS old (seq, actor_id, actor_email)",
            [tenant],
        )
        sql.execute("SET LOCAL ROLE sealtrail_service")
        sql.execute("SELECT set_config('sealtrail.tenant', %s, true)", [tenant])
        assert found("Dave@Example.com") == ["u-dave"]
        assert found("dave@example.com") == []  # as sent, or not at all
        assert found("ERIN@Example.COM") == ["u-erin"]
        assert found("erin@example.com") == ["u-erin"]


def test_text_search_finds_the_names_of_actors_and_resources(client: AuditClient) -> None:
    """`--search production` missed a key named "Production Key v2" (helper-165,
    G7): the names people give things are searched as description and details are."""
    client.record_batch(
        [
            build_event(action="api_key.rotate", actor_id="u1", resource_type="api_key",
                        resource_id="k2", resource_name="Production Key v2"),
            build_event(action="member.remove", actor_id="u2", actor_display_name="Carol Smith",
                        description="Removed a member"),
            build_event(action="doc.read", actor_id="u3", description="Read production docs"),
        ]
    )  # fmt: skip

    def found(text: str) -> list[str]:
        return [e.action for e in client.query(build_filter(text=text), order="oldest")]

    assert found("production") == ["api_key.rotate", "doc.read"]
    assert found('"production key"') == ["api_key.rotate"]
    assert found("carol removed") == ["member.remove"]  # a name and a description word
    assert client.count_events(build_filter(text="smith")).total == 1


def test_a_search_does_not_find_the_log_s_records_of_earlier_searches(
    client: AuditClient, tmp_path: Path
) -> None:
    """Every search is recorded with its filter (ADR 0012), so searching the
    same word again found the record of the search before, and a console user
    refining a search saw their own searches first. A read's record is
    searched by its description and names only, unless the filter asks for
    such records by action: "who searched for salary" still has its answer."""
    client.record(
        build_event(action="payroll.update", actor_id="u1", description="Changed the salary band")
    )

    def found(text: str, **criteria: str) -> list[str]:
        events = client.query(build_filter(text=text, **criteria), order="oldest")
        return [event.action for event in events]

    assert found("salary") == ["payroll.update"]
    assert found("salary") == ["payroll.update"]
    client.export(tmp_path / "found.ndjson", filter=build_filter(text="salary"))
    assert found("salary") == ["payroll.update"]
    assert client.count_events(build_filter(text="salary")).total == 1
    queried, exported = "audit_log.queried", "audit_log.exported"
    assert queried in found("-salary")  # a search for it is not about it
    assert found("salary", actions=queried) == [queried] * 5  # three, a count, the "-salary"
    assert found("salary", actions="audit_log.*") == [queried] * 2 + [exported] + [queried] * 4
    assert found("queried") == [queried] * 6  # its description ("Counted ..." is the count's)
