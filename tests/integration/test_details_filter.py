"""`EventFilter.details_equals`: the events whose `details` hold a top-level
key with a scalar equal to a value (a number or boolean by its JSON text),
all entries ANDed, found alike by a query, a count, an export's manifest, a
live stream, a sink's narrowing, an alert rule and the CLI; a redacted
secret never; bad entries refused naming `filter.details_equals`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from sealtrail import AuditClient, build_alert_rule, build_event, build_filter
from sealtrail._convert import detail_text
from sealtrail.v1 import event_pb2
from sealtrail_server.api.convert import filter_draft
from sealtrail_server.domain.filters import RecordMatcher, validate_filter
from tests.conftest import ServerThread
from tests.filter_checks import (
    cli_descriptions,
    cli_env,
    cli_output,
    descriptions_found,
    exported_and_checked,
    live_from_now,
    violations_refused,
)
from tests.integration.test_actor_credential import GITHUB_TOKEN
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# (description, details): each event described by a name of its own.
EVENTS: list[tuple[str, dict[str, Any] | None]] = [
    ("a", {"environment": "prod", "attempt": 3, "dry_run": False}),
    ("b", {"environment": "Prod", "attempt": 3.5}),
    ("c", {"environment": "staging", "attempt": "3"}),
    ("d", {"environment": {"name": "prod"}, "tags": ["prod"], "gone": None}),
    ("e", None),
    ("f", {"environment": "prod", "token": GITHUB_TOKEN}),
    ("g", {"flag": True, "big": 1e21, "tiny": 1.5e-7, "whole": 2.0, "empty": ""}),
    ("h", {"nested": {"environment": "prod"}, "a.b": "dotted"}),
]


def _event(description: str, details: dict[str, Any] | None) -> event_pb2.Event:
    given = {} if details is None else {"details": details}
    return build_event(action="secret.read", actor_id="admin", description=description, **given)


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    client.record_batch([_event(*event) for event in EVENTS])
    return client


# (entries, descriptions found among EVENTS).
CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"environment": "prod"}, ["a", "f"]),  # exactly: not "Prod", nor nested
    ({"environment": "prod", "attempt": 3}, ["a"]),  # all of them
    ({"attempt": "3"}, ["a", "c"]),  # the number 3's text, and the string "3"
    ({"attempt": 3.5}, ["b"]),
    ({"attempt": "3.0"}, []),  # 3 is written `3`
    ({"dry_run": False}, ["a"]),
    ({"flag": "true"}, ["g"]),
    ({"big": 1e21, "tiny": 1.5e-7, "whole": 2}, ["g"]),  # `1e+21`, `1.5e-7`, `2`
    ({"big": "1000000000000000000000"}, []),  # as the record writes it, not in full
    ({"empty": ""}, ["g"]),
    ({"environment": '{"name":"prod"}'}, []),  # an object's text: no scalar
    ({"tags": '["prod"]'}, []),
    ({"gone": "null"}, []),  # null is no value
    ({"environment.name": "prod"}, []),  # no path is resolved
    ({"a.b": "dotted"}, ["h"]),  # a key with a dot is that key
    ({"missing": "prod"}, []),
]


@pytest.mark.parametrize(("entries", "found"), CASES)
def test_a_query_and_a_count_find_the_events_of_each_detail(
    recorded: AuditClient, entries: dict[str, Any], found: list[str]
) -> None:
    event_filter = build_filter(actions="secret.read", details_equals=entries)
    assert descriptions_found(recorded, event_filter) == found
    assert recorded.count_events(event_filter).total == len(found)


def test_the_live_matcher_finds_what_the_query_finds(recorded: AuditClient) -> None:
    """StreamEvents, sinks and rules match each record in the process
    (RecordMatcher), on the record as stored (its JSON parsed): the same
    events as the SQL of Query, a number's text included (`1.5e-7`, where
    Python's str writes `1.5e-07`)."""
    stored = [
        (event.description, json.loads(recorded.get_inclusion_proof(event_id=event.id).record))
        for event in recorded.query(build_filter(actions="secret.read"), order="oldest")
    ]
    for entries, found in CASES:
        draft = filter_draft(build_filter(actions="secret.read", details_equals=entries))
        matcher = RecordMatcher(validate_filter(draft))
        assert [name for name, record in stored if matcher.matches(record)] == found, entries


def test_a_redacted_secret_is_compared_as_stored_never_as_sent(recorded: AuditClient) -> None:
    """The record holds `[REDACTED:...]` for a secret: the secret is found by
    no filter, and the stored text is what finds its event."""
    assert descriptions_found(recorded, build_filter(details_equals={"token": GITHUB_TOKEN})) == []
    prod = recorded.query(build_filter(details_equals={"environment": "prod"}))
    (stored,) = [event for event in prod if event.description == "f"]
    kept = stored.details["token"]
    assert kept.startswith("[REDACTED"), kept
    assert descriptions_found(recorded, build_filter(details_equals={"token": kept})) == ["f"]


def test_an_exports_manifest_holds_the_details_it_was_filtered_by(
    recorded: AuditClient, tmp_path: Path
) -> None:
    entries = {"environment": "prod", "dry_run": "false"}
    exported, signed, _ = exported_and_checked(
        recorded, tmp_path / "prod.ndjson", build_filter(details_equals=entries)
    )
    assert exported == ["a"]
    assert json.loads(signed)["detailsEquals"] == entries


@pytest.mark.parametrize(
    ("entries", "others", "matching"),
    [
        (
            {"environment": "prod"},
            [{"environment": "Prod"}, {"n": {"environment": "prod"}}],
            {"environment": "prod"},
        ),
        # A number as the record writes it (`1.5e-7`, where Python's str says `1.5e-07`).
        ({"tiny": 1.5e-7}, [{"tiny": 1.5e-6}, {"tiny": "1.5e-07"}], {"tiny": 1.5e-7}),
        ({"n": "3"}, [{"n": "3.0"}, {"n": [3]}, {"n": None}], {"n": 3.0}),
        ({"on": True}, [{"on": "True"}, {"on": 1}], {"on": True}),
    ],
)
def test_a_live_stream_follows_the_events_of_a_detail(
    recorded: AuditClient,
    entries: dict[str, Any],
    others: list[dict[str, Any]],
    matching: dict[str, Any],
) -> None:
    """The live matcher compares as the SQL does: the first event streamed
    is the one a query finds too."""
    with live_from_now(recorded, build_filter(details_equals=entries)) as live:
        for details in others:
            recorded.record(_event("other", details))
        recorded.record(_event("matching", matching))
        first = next(live)
    assert first.description == "matching"
    found = descriptions_found(recorded, build_filter(details_equals=entries))
    assert found[-1] == "matching" and "other" not in found


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ({f"k{i}": "v" for i in range(9)}, "has 9 entries; the limit is 8"),
        ({"k" * 65: "v"}, "has a key of 65 characters; the limit is 64"),
        ({"k": "v" * 257}, "has a value of 257 characters; the limit is 256"),
        ({"": "prod"}, "has an empty key"),
        ({"environment": "pr\x00od"}, "must not contain NUL characters"),
    ],
)
def test_bad_details_are_refused_naming_the_field(
    client: AuditClient, entries: dict[str, str], words: str
) -> None:
    [(named, description)] = violations_refused(client, build_filter(details_equals=entries))
    assert named == "filter.details_equals" and words in description, description
    at_limits = {f"k{i}": "v" for i in range(7)} | {"k" * 64: "v" * 256}
    assert list(client.query(build_filter(details_equals=at_limits))) == []


def test_a_sink_given_a_detail_is_narrowed_and_widened_without_it(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(actions="secret.read")))

    def update(**entries: Any) -> tuple[int, list[str]]:
        return refiltered(
            client, created.sink.id, build_filter(actions="secret.read", details_equals=entries)
        )

    assert update(environment="prod") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert dict(client.get_sink(created.sink.id).filter.details_equals) == {"environment": "prod"}
    assert update(environment="prod", attempt=3) == (
        event_pb2.SEVERITY_WARNING,
        ["filter_narrowed"],
    )
    assert update(attempt=3) == (event_pb2.SEVERITY_INFO, [])  # an entry dropped
    assert update(attempt=4) == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update() == (event_pb2.SEVERITY_INFO, [])


def test_an_alert_rule_on_a_detail_fires_on_its_events_alone(client: AuditClient) -> None:
    """Seed: "when admins access prod keys"."""
    rule = client.create_alert_rule(
        build_alert_rule(
            "prod keys", "match", filter=build_filter(details_equals={"environment": "prod"})
        )
    )
    client.record(_event("staging", {"environment": "staging"}))
    client.record(_event("Prod", {"environment": "Prod"}))
    fires = client.record(_event("prod", {"environment": "prod"}))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_finds_events_by_details(
    recorded: AuditClient, server: ServerThread, tenant: str
) -> None:
    env = cli_env(server, tenant)
    assert cli_descriptions(env, "--detail", "environment=prod") == ["a", "f"]
    assert cli_descriptions(env, "--detail", "environment=prod", "--detail", "attempt=3") == ["a"]
    assert cli_descriptions(env, "--detail", "a.b=dotted", "--detail", "a.b=dotted") == ["h"]
    said = cli_output(env, "stats", "--detail", "flag=true", "--by", "action")
    assert "secret.read" in said and "1" in said, said
    refused = cli_output(env, "query", "--detail", "environment", exit_code=2)
    assert "KEY=VALUE" in refused, refused
    twice = cli_output(env, "query", "--detail", "attempt=3", "--detail", "attempt=4", exit_code=2)
    assert "--detail" in twice and "given twice" in twice, twice
    long_key = cli_output(env, "query", "--detail", "k" * 65 + "=v", exit_code=2)
    assert "--detail: has a key of 65 characters" in long_key, long_key


@pytest.mark.parametrize(
    "value",
    [0, -0.0, 3, 3.0, -2.5, 0.1, 1e-6, 2.5e-5, 1e-7, -1.5e-7, 123456.789, 1e20, 1e21, 2.5e300],
)
def test_build_filter_sends_a_number_as_the_record_writes_it(value: float) -> None:
    assert detail_text(value) == bytes(rfc8785.dumps(value)).decode()
    assert detail_text(True) == "true" and detail_text("3") == "3"
