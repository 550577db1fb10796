"""`EventFilter.actor_email_domain`: the events of anyone at a domain, as a
team offboarding a vendor asks ("everything done by anyone
@contractor.example"), in any case, with `*.` for the domain and its
subdomains, never a look-alike (`evilcontractor.example`), in a query, a
count, an export, a stream, a sink, an alert rule and the CLI (helper-371)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    build_alert_rule,
    build_event,
    build_filter,
)
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# Actor id -> email: the domain's people in any case, a subdomain's, and
# those a sloppy match (a substring, a prefix, the local part) would take.
EMAILS = {
    "bob": "bob@contractor.example",
    "carol": "Carol.Smith@CONTRACTOR.Example",
    "dan": "dan@eu.Contractor.example",
    "eve": "eve@evilcontractor.example",
    "fay": "fay@contractor.example.evil.example",
    "gus": '"gus@contractor.example"@other.example',
    "hal": "hal@bücher.example",
    "ida": "ida@xn--bcher-kva.example",
}


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    events = [build_event(action="doc.read", actor_id=i, actor_email=e) for i, e in EMAILS.items()]
    events.append(build_event(action="doc.read", actor_id="contractor.example"))  # no email
    client.record_batch(events)
    return client


def _actors(client: AuditClient, domain: str) -> list[str]:
    found = client.query(build_filter(actor_email_domain=domain), order="oldest")
    return [event.actor.id for event in found]


@pytest.mark.parametrize(
    ("domain", "actors"),
    [
        ("contractor.example", ["bob", "carol"]),
        ("CONTRACTOR.EXAMPLE", ["bob", "carol"]),
        ("@Contractor.Example", ["bob", "carol"]),
        ("*.contractor.example", ["bob", "carol", "dan"]),
        ("eu.contractor.example", ["dan"]),
        ("evilcontractor.example", ["eve"]),
        ("example", []),  # a domain's end is not the domain
        ("evil.example", []),
        ("*.evil.example", ["fay"]),
        ("other.example", ["gus"]),  # after the last @
        ("BÜCHER.example", ["hal"]),  # as recorded: the Unicode form
        ("xn--bcher-kva.example", ["ida"]),  # the ASCII form
    ],
)
def test_the_events_of_anyone_at_a_domain_in_any_case_and_no_look_alike(
    recorded: AuditClient, domain: str, actors: list[str]
) -> None:
    assert _actors(recorded, domain) == actors


def test_it_narrows_the_other_criteria(recorded: AuditClient) -> None:
    recorded.record(action="doc.share", actor_id="bob", actor_email="bob@contractor.example")
    event_filter = build_filter(actor_email_domain="*.contractor.example", actions="doc.share")
    assert [event.actor.id for event in recorded.query(event_filter)] == ["bob"]


@pytest.mark.parametrize(
    "domain",
    [
        "bob@contractor.example",  # an address: `actor` finds it
        "contractor..example",
        "contractor.example.",
        ".contractor.example",
        " contractor.example",
        "contractor example",
        "*",
        "*.",
        "*contractor.example",
        "*.*.contractor.example",
        "eu.*.contractor.example",
        "[192.0.2.1]",
        "contractor.example/path",
        "contractor.example\x00",
        "a" * 300 + ".example",
    ],
)
def test_what_is_no_domain_is_refused_naming_the_field(client: AuditClient, domain: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        list(client.query(build_filter(actor_email_domain=domain)))
    assert [field for field, _ in caught.value.field_violations] == ["filter.actor_email_domain"]


def test_a_count_and_an_export_find_the_same(recorded: AuditClient, tmp_path: Path) -> None:
    event_filter = build_filter(actor_email_domain="*.Contractor.Example")
    counts = recorded.count_events(event_filter, group_by="actor")
    assert counts.total == 3
    assert {group.key for group in counts.groups} == {"bob", "carol", "dan"}
    path = tmp_path / "vendor.ndjson"
    manifest = recorded.export(path, filter=event_filter)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["actor"]["id"] for line in lines] == ["bob", "carol", "dan"]
    assert manifest.row_count == 3


def test_a_stream_from_the_table_and_live_finds_the_same(recorded: AuditClient) -> None:
    live = recorded.stream(build_filter(actor_email_domain="CONTRACTOR.example"), after_seq=0)
    for email in ("x@evilcontractor.example", "Zed@Contractor.Example"):
        recorded.record(action="doc.read", actor_id="late", actor_email=email)
    found = [next(live).actor.email for _ in range(3)]
    live.close()  # type: ignore[attr-defined]
    assert found == [EMAILS["bob"], EMAILS["carol"], "Zed@Contractor.Example"]


def test_a_sink_filter_on_a_domain_narrows_and_widened_does_not(client: AuditClient) -> None:
    created = client.create_sink(
        paused_webhook(build_filter(actor_email_domain="*.contractor.example"), name="vendor")
    )
    assert client.get_sink(created.sink.id).filter.actor_email_domain == "*.contractor.example"

    def update(domain: str) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(actor_email_domain=domain))

    assert update("contractor.example") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update("CONTRACTOR.example") == (event_pb2.SEVERITY_INFO, [])
    assert update("*.Contractor.example") == (event_pb2.SEVERITY_INFO, [])
    assert update("evilcontractor.example") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update("") == (event_pb2.SEVERITY_INFO, [])


def test_an_alert_rule_on_a_domain_fires_for_it_alone(client: AuditClient) -> None:
    vendor = build_filter(actor_email_domain="contractor.example")
    rule = client.create_alert_rule(build_alert_rule("vendor", "match", filter=vendor))
    client.record(action="doc.read", actor_id="eve", actor_email="eve@evilcontractor.example")
    fires = client.record(action="doc.read", actor_id="bob", actor_email="Bob@Contractor.Example")
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_finds_them_and_counts_them(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch(
        [build_event(action="doc.read", actor_id=i, actor_email=e) for i, e in EMAILS.items()]
    )
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    found = CliRunner().invoke(
        cli.main,
        ["query", "--format", "jsonl", "--actor-domain", "*.CONTRACTOR.example"],
        env=env,
    )
    assert found.exit_code == 0, found.output
    actors = [json.loads(line)["actor"]["id"] for line in found.output.splitlines()]
    assert sorted(actors) == ["bob", "carol", "dan"]
    counted = CliRunner().invoke(
        cli.main, ["stats", "--by", "actor", "--actor-domain", "contractor.example"], env=env
    )
    assert counted.exit_code == 0, counted.output
    assert "carol" in counted.output and "dan" not in counted.output
    refused = CliRunner().invoke(
        cli.main, ["query", "--actor-domain", "bob@contractor.example"], env=env
    )
    assert refused.exit_code == 2 and "--actor-domain: must be a domain" in refused.output
