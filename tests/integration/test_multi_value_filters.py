"""`EventFilter.countries` and `EventFilter.resource_types`: the events of any
of several client countries (a sink for EU traffic: DE, FR, IT, ...) or
resource types (`source`, `file`, `qa_pair` at once), in a query, a count, a
stream, an export (its signed filter checked offline), a sink, an alert rule
and the CLI (helper-414)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealtrail import (
    AuditClient,
    build_alert_rule,
    build_event,
    build_filter,
)
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2
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
from tests.integration.test_export_check import refused_when_told
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# (description, country, resource type): "" records none.
EVENTS = [
    ("de-source", "DE", "source"),
    ("fr-file", "FR", "file"),
    ("us-file", "US", "file"),
    ("it-qa", "IT", "qa_pair"),
    ("none-doc", "", "document"),
    ("de-none", "de", ""),
]


def _edit(description: str, country: str, resource_type: str) -> event_pb2.Event:
    fields: dict[str, str] = {}
    if country:
        fields["country"] = country
    if resource_type:
        fields |= {"resource_type": resource_type, "resource_id": description}
    return build_event(action="doc.edit", actor_id="ann", description=description, **fields)  # type: ignore[arg-type]


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    return having_recorded(client, _edit, EVENTS)


@pytest.mark.parametrize(
    ("criteria", "found"),
    [
        ({"countries": ["DE", "fr", "IT"]}, ["de-source", "fr-file", "it-qa", "de-none"]),
        ({"countries": ["us"]}, ["us-file"]),
        ({"countries": ["DE", "de", "De"]}, ["de-source", "de-none"]),  # duplicates harmless
        ({"resource_types": ["source", "file", "qa_pair"]},
         ["de-source", "fr-file", "us-file", "it-qa"]),
        ({"resource_types": ["file"]}, ["fr-file", "us-file"]),
        ({"resource_types": ["file", "source"], "countries": ["DE", "US"]},
         ["de-source", "us-file"]),
        ({"countries": [], "resource_types": []}, [d for d, _, _ in EVENTS]),
        ({"country": "de"}, ["de-source", "de-none"]),
        ({"resource_type": "file"}, ["fr-file", "us-file"]),
    ],
)  # fmt: skip
def test_events_of_any_country_or_resource_type_listed(
    recorded: AuditClient, criteria: dict[str, list[str]], found: list[str]
) -> None:
    event_filter = build_filter(actions="doc.edit", **criteria)  # type: ignore[arg-type]
    assert descriptions_found(recorded, event_filter) == found
    assert recorded.count_events(event_filter).total == len(found)


def test_a_bad_value_too_many_or_both_forms_are_refused_naming_the_field(
    client: AuditClient,
) -> None:
    for sent, named in (
        (event_pb2.EventFilter(countries=["DE", "Germany"]), ["filter.countries[1]"]),
        (event_pb2.EventFilter(resource_types=["file", ""]), ["filter.resource_types[1]"]),
        (event_pb2.EventFilter(countries=["DE"] * 101), ["filter.countries"]),
        (event_pb2.EventFilter(resource_types=["f"] * 101), ["filter.resource_types"]),
        (event_pb2.EventFilter(country="DE", countries=["FR"]), ["filter.countries"]),
        (
            event_pb2.EventFilter(resource_type="file", resource_types=["source"]),
            ["filter.resource_types"],
        ),
    ):
        assert [field for field, _ in violations_refused(client, sent)] == named


def test_counts_by_country_of_the_countries_asked(recorded: AuditClient) -> None:
    counts = recorded.count_events(
        build_filter(actions="doc.edit", countries=["DE", "IT"]), group_by="country"
    )
    assert [(g.key, g.count) for g in counts.groups] == [("DE", 2), ("IT", 1)]


def test_an_export_of_several_countries_is_checked_offline_and_its_filter_held(
    recorded: AuditClient, tmp_path: Path
) -> None:
    """The countries and resource types an export was filtered by are in its
    signed filter: check_export says them, and a manifest saying others is
    refused."""
    found, signed_filter, kept = exported_and_checked(
        recorded,
        tmp_path / "eu.ndjson",
        build_filter(countries=["DE", "FR"], resource_types=["file", "source"]),
    )
    assert found == ["de-source", "fr-file"]
    signed = json.loads(signed_filter)
    assert signed["countries"] == ["DE", "FR"]
    assert signed["resourceTypes"] == ["file", "source"]
    refused_when_told(
        kept,
        json.dumps(signed | {"countries": ["DE", "FR", "US"]}),
        json.dumps({k: v for k, v in signed.items() if k != "resourceTypes"}),
    )


def test_a_live_stream_follows_the_countries_and_types_listed(recorded: AuditClient) -> None:
    listed = build_filter(countries=["FR", "IT"], resource_types=["file", "qa_pair"])
    with live_from_now(recorded, listed) as live:
        recorded.record_batch([_edit("fr-source", "FR", "source"), _edit("de-file", "DE", "file")])
        recorded.record_batch([_edit("it-file", "IT", "file")])
        first = next(live)
    assert first.description == "it-file"


def test_a_sink_given_fewer_or_other_values_is_narrowed(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(countries=["DE", "FR"])))
    assert list(client.get_sink(created.sink.id).filter.countries) == ["DE", "FR"]

    def update(**criteria: object) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(**criteria))  # type: ignore[arg-type]

    assert update(countries=["fr", "DE", "FR"]) == NOT_NARROWED  # the same
    assert update(countries=["DE", "FR", "IT"]) == NOT_NARROWED  # more
    assert update(countries=["DE", "FR"]) == NARROWED  # fewer
    assert update(country="DE") == NARROWED  # fewer, as the singular
    assert update(countries=["DE", "FR"]) == NOT_NARROWED
    assert update() == NOT_NARROWED  # every country
    assert update(resource_types=["file"]) == NARROWED  # set where it was empty
    assert update(resource_types=["file", "source"]) == NOT_NARROWED
    assert update(resource_types=["source"]) == NARROWED


def test_an_alert_rule_on_resource_types_fires_on_one_listed(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule(
            "content edits", "match", filter=build_filter(resource_types=["source", "qa_pair"])
        )
    )
    client.record_batch([_edit("fr-file", "FR", "file"), _edit("none", "", "")])
    fires = client.record(_edit("it-qa", "IT", "qa_pair"))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_fills_the_singular_field_with_one_value_and_the_list_with_more(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    """One `--country` goes to `country`, which servers older than `countries`
    know; repeated, to `countries`."""
    client = client_for(tenant)
    having_recorded(client, _edit, EVENTS)
    env = cli_env(server, tenant)

    assert cli_descriptions(env, "--country", "de", "--country", "IT") == [
        "de-source", "it-qa", "de-none",
    ]  # fmt: skip
    assert cli_descriptions(env, "--resource-type", "file", "--resource-type", "qa_pair") == [
        "fr-file", "us-file", "it-qa",
    ]  # fmt: skip
    assert cli_descriptions(env, "--country", "fr") == ["fr-file"]
    assert cli._filter({"countries": ("DE",), "resource_types": ("file",)}) == build_filter(
        country="DE", resource_type="file"
    )
    assert cli._filter({"countries": ("DE", "FR"), "resource_types": ()}) == build_filter(
        countries=["DE", "FR"]
    )
    refused = cli_output(env, "query", "--country", "DE", "--country", "XYZ", exit_code=2)
    # The server's `filter.countries[1]`, said as the option that gave it.
    assert "--country XYZ: must be an ISO 3166-1" in refused
    cli_output(
        env, "alerts", "create", "eu", "--kind", "match", "--country", "DE", "--country", "FR"
    )
    (created,) = client.list_alert_rules()
    assert list(created.match.filter.countries) == ["DE", "FR"]
    helped = CliRunner().invoke(cli.main, ["query", "--help"])
    assert "repeatable" in helped.output and "older servers" in helped.output
