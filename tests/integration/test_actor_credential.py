"""`Actor.credential` and `EventFilter.credential_id`: which of an actor's API
keys, tokens or sessions did it, and, after one leaks, everything done with it:
recorded and returned, found by its id exactly in a query, a count, an export
checked offline, a sink, an alert rule and the CLI; a secret sent as its id or
hint refused, never stored redacted (helper-398)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealtrail import (
    AuditClient,
    ExportMismatchError,
    InvalidArgumentError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
    check_export,
)
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2, forwarding_pb2
from tests.conftest import ServerThread
from tests.filter_checks import live_from_now, violations_refused
from tests.http_endpoint import endpoint
from tests.integration.test_alerting import the_only_alert
from tests.integration.test_export_check import KEY, _resigned
from tests.integration.test_range_bundles import VERIFIER
from tests.integration.test_weakening_warnings import paused_webhook, refiltered

# A GitHub token's shape (a known secret the redactor finds in ids), made up.
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5" * 4
# (actor, credential kind, credential id, hint): "" sends no credential.
CALLS = [
    ("ann", "api_key", "key_8f3a", "a1b2"),
    ("ann", "api_key", "key_77c0", "9f9f"),
    ("ann", "session", "sess_1", ""),
    ("bob", "personal_access_token", "key_8f3a", "zz"),
    ("bob", "api_key", "KEY_8F3A", "a1b2"),
    ("cy", "", "", ""),
    ("dee", "api_key", "key_8f3a_old", "0000"),
]


def _event(actor: str, kind: str, credential_id: str, hint: str) -> event_pb2.Event:
    if not kind:
        return build_event(action="repo.delete", actor_id=actor)
    return build_event(
        action="repo.delete",
        actor_id=actor,
        actor_type="api_key",
        credential_kind=kind,
        credential_id=credential_id,
        credential_hint=hint,
    )


@pytest.fixture
def recorded(client: AuditClient) -> AuditClient:
    client.record_batch([_event(*call) for call in CALLS])
    return client


def _found(client: AuditClient, event_filter: event_pb2.EventFilter) -> list[tuple[str, str]]:
    return [
        (e.actor.id, e.actor.credential.kind) for e in client.query(event_filter, order="oldest")
    ]


def test_the_credential_is_recorded_and_returned_as_sent(client: AuditClient) -> None:
    sent = client.record(
        action="repo.delete",
        actor_id="u_1",
        credential_kind="api_key",
        credential_id="key_8f3a2c",
        credential_hint="a1b2",
    )
    expected = event_pb2.ActorCredential(kind="api_key", id="key_8f3a2c", hint="a1b2")
    assert sent.event.actor.credential == expected
    assert client.get_event(sent.event.id).actor.credential == expected
    none = client.record(action="repo.delete", actor_id="u_1")
    assert not none.event.actor.HasField("credential")
    assert not client.get_event(none.event.id).actor.HasField("credential")
    # An empty credential is none: nothing stored, nothing answered.
    # In the canonical record the leaf hash is of: tamper-evident.
    proof = client.get_inclusion_proof(event_id=sent.event.id)
    assert b'"credential":{"hint":"a1b2","id":"key_8f3a2c","kind":"api_key"}' in proof.record
    assert hashlib.sha256(b"\x00" + proof.record).digest() == sent.event.leaf_hash
    empty = build_event(action="repo.delete", actor_id="u_1")
    empty.actor.credential.SetInParent()
    assert not client.record(empty).event.actor.HasField("credential")


@pytest.mark.parametrize(
    ("credential_id", "found"),
    [
        ("key_8f3a", [("ann", "api_key"), ("bob", "personal_access_token")]),
        ("KEY_8F3A", [("bob", "api_key")]),  # exactly: case and all
        ("key_8f3", []),  # no prefix
        ("sess_1", [("ann", "session")]),
        ("key_8f3a%", []),  # no wildcard
    ],
)
def test_events_of_one_credential_are_found_by_its_id_exactly(
    recorded: AuditClient, credential_id: str, found: list[tuple[str, str]]
) -> None:
    event_filter = build_filter(actions="repo.delete", credential_id=credential_id)
    assert _found(recorded, event_filter) == found


def test_counts_of_one_credential(recorded: AuditClient) -> None:
    counts = recorded.count_events(
        build_filter(actions="repo.delete", credential_id="key_8f3a"), group_by="actor"
    )
    assert counts.total == 2
    assert {g.key for g in counts.groups} == {"ann", "bob"}


def test_a_secret_as_the_credential_id_is_refused_naming_it(client: AuditClient) -> None:
    for credential_id in (GITHUB_TOKEN, f"key={GITHUB_TOKEN}"):
        with pytest.raises(InvalidArgumentError) as caught:
            client.record(
                action="repo.delete",
                actor_id="u_1",
                credential_kind="personal_access_token",
                credential_id=credential_id,
            )
        fields = [field for field, _ in caught.value.field_violations]
        assert fields == ["event.actor.credential.id"]
        assert "github_token" in caught.value.field_violations[0][1]
    # In a batch, that entry alone is refused; nothing of it was stored.
    results = client.record_batch(
        [
            _event("ann", "api_key", "key_ok", "a1b2"),
            _event("bob", "personal_access_token", GITHUB_TOKEN, ""),
        ]
    )
    assert results[0].event is not None and results[1].event is None
    assert isinstance(results[1].error, InvalidArgumentError)
    assert [f for f, _ in results[1].error.field_violations] == ["events[1].actor.credential.id"]
    assert _found(client, build_filter(actions="repo.delete")) == [("ann", "api_key")]


def test_with_redaction_off_a_secret_credential_is_still_refused(
    migrated_database_url: str, tenant: str
) -> None:
    """`SEALTRAIL_REDACTION=false` stores free text as sent; a credential
    id holding a secret is refused all the same, by the default rules."""
    bare = ServerThread(migrated_database_url, redaction=False)
    try:
        with AuditClient(bare.target, token=bare.token(tenant)) as client:
            with pytest.raises(InvalidArgumentError) as caught:
                client.record(_event("ann", "api_key", GITHUB_TOKEN, ""))
            [(named, description)] = caught.value.field_violations
            assert named == "event.actor.credential.id" and "github_token" in description
            kept = client.record(_event("ann", "api_key", "key_1", "a1b2")).event
            assert kept.actor.credential.id == "key_1"
    finally:
        bare.close()


def test_a_whole_secret_as_the_hint_is_refused_naming_it(client: AuditClient) -> None:
    """A hint is the secret's last characters, at most 8: the secret whole is refused."""
    with pytest.raises(InvalidArgumentError) as caught:
        client.record(
            action="repo.delete",
            actor_id="u_1",
            credential_kind="api_key",
            credential_id="key_1",
            credential_hint=GITHUB_TOKEN,
        )
    assert [field for field, _ in caught.value.field_violations] == ["event.actor.credential.hint"]


@pytest.mark.parametrize(
    ("actor_type", "actor_id", "credential_id", "hint"),
    [
        # A 6-digit PIN sent as both: the hint is then the secret whole.
        ("user", "u_1", "482913", "482913"),
        # An api_key actor's id is the key, stored masked to its last 4
        # characters: a hint equal to it stored the whole key beside the mask.
        ("api_key", "pk_9f8e7", "key_1", "pk_9f8e7"),
        ("user", "svc-ci", "key_1", "svc-ci"),
    ],
)
def test_a_hint_that_is_a_whole_value_is_refused_naming_it(
    client: AuditClient, actor_type: str, actor_id: str, credential_id: str, hint: str
) -> None:
    """A hint is the LAST characters of a longer secret: one equal to the
    credential's id or the actor's id is a whole value, not a hint of one."""
    with pytest.raises(InvalidArgumentError) as caught:
        client.record(
            action="repo.delete",
            actor_id=actor_id,
            actor_type=actor_type,
            credential_kind="api_key",
            credential_id=credential_id,
            credential_hint=hint,
        )
    [(named, description)] = caught.value.field_violations
    assert named == "event.actor.credential.hint" and "whole" in description, description
    assert _found(client, build_filter(actions="repo.delete")) == []
    # Its last characters are a hint: taken.
    kept = client.record(
        action="repo.delete",
        actor_id=actor_id,
        actor_type=actor_type,
        credential_kind="api_key",
        credential_id=credential_id,
        credential_hint=hint[-4:],
    )
    assert kept.event.actor.credential.hint == hint[-4:]


@pytest.mark.parametrize(
    ("kind", "credential_id", "hint", "field", "words"),
    [
        ("api_key", "key_1", "123456789", "hint", "is 9 characters long; the limit is 8"),
        ("api_key", "", "a1b2", "id", "is required"),
        ("", "key_1", "a1b2", "kind", "is required"),
        ("API-Key", "key_1", "", "kind", "lower_snake_case"),
        ("k" * 65, "key_1", "", "kind", "the limit is 64"),
        ("api_key", "k" * 257, "", "id", "the limit is 256"),
        ("api_key", "key\x001", "", "id", "NUL"),
        ("api_key", "key_1", "a1\x00b2", "hint", "NUL"),
    ],
)
def test_a_bad_credential_is_refused_naming_the_field(
    client: AuditClient, kind: str, credential_id: str, hint: str, field: str, words: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.record(
            action="repo.delete",
            actor_id="u_1",
            credential_kind=kind,
            credential_id=credential_id,
            credential_hint=hint,
        )
    [(named, description)] = caught.value.field_violations
    assert named == f"event.actor.credential.{field}" and words in description


def test_a_credential_id_filter_too_long_is_refused_naming_it(client: AuditClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        list(client.query(build_filter(credential_id="k" * 257)))
    assert [field for field, _ in caught.value.field_violations] == ["filter.credential_id"]
    assert list(client.query(build_filter(credential_id="k" * 256))) == []


def test_an_export_of_one_credential_checks_offline_and_its_credential_is_sealed(
    recorded: AuditClient, tmp_path: Path
) -> None:
    """After a leak: every event of the key, exported signed, its filter held;
    the credential is in each record's leaf hash, so an export whose row says
    another key fails the offline check."""
    out = tmp_path / "leak.ndjson"
    recorded.export(
        out,
        format="ndjson",
        manifest_file=True,
        filter=build_filter(actions="repo.delete", credential_id="key_8f3a"),
    )
    kept = out.with_name(out.name + ".manifest.json")
    checked = check_export(kept, key=KEY)
    assert checked.filtered and checked.filter is not None
    assert json.loads(checked.filter)["credentialId"] == "key_8f3a"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["actor"]["credential"]["id"] for row in rows] == ["key_8f3a", "key_8f3a"]
    assert rows[0]["actor"]["credential"] == {"kind": "api_key", "id": "key_8f3a", "hint": "a1b2"}
    out.write_text(out.read_text().replace('"hint":"a1b2"', '"hint":"ffff"'))
    with pytest.raises(ExportMismatchError):
        check_export(kept, key=KEY)


def _csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as exported:
        return list(csv.reader(exported))


def test_a_csv_export_shows_the_credential_in_three_columns_after_the_earlier_ones(
    recorded: AuditClient, tmp_path: Path
) -> None:
    """An auditor working from the CSV answers "what did key X do" as the JSON
    export does: kind, id and hint, after the columns that were there before
    (their positions kept), empty for an event with none, and neutralised
    against formulas as every cell is."""
    recorded.record(_event("eve", "api_key", "@key_eve", "-9z"))
    out = tmp_path / "leak.csv"
    recorded.export(out, format="csv", filter=build_filter(actions="repo.delete"))
    [header, *rows] = _csv_rows(out)
    last = header.index("recorded_by_token_name") + 1
    assert header[last : last + 3] == ["credential_kind", "credential_id", "credential_hint"]
    shown = {(row[header.index("actor_id")], tuple(row[last : last + 3])) for row in rows}
    assert shown == {
        ("ann", ("api_key", "key_8f3a", "a1b2")),
        ("ann", ("api_key", "key_77c0", "9f9f")),
        ("ann", ("session", "sess_1", "")),
        ("bob", ("personal_access_token", "key_8f3a", "zz")),
        ("bob", ("api_key", "KEY_8F3A", "a1b2")),
        ("cy", ("", "", "")),
        ("dee", ("api_key", "key_8f3a_old", "0000")),
        ("eve", ("api_key", "'@key_eve", "'-9z")),
    }
    # A filter on the key gives its rows alone, in the CSV too.
    one = tmp_path / "one.csv"
    recorded.export(one, format="csv", filter=build_filter(credential_id="key_8f3a"))
    assert sorted(row[last + 1] for row in _csv_rows(one)[1:]) == ["key_8f3a", "key_8f3a"]


def test_a_csv_export_made_before_the_credential_columns_still_checks_offline(
    recorded: AuditClient, tmp_path: Path
) -> None:
    """The offline check holds a CSV to its signed digest and row count, not to
    a list of columns: an export written before the credential columns (its
    header and rows three cells shorter, as that server signed them) checks,
    and so does one written now."""
    out = tmp_path / "audit.csv"
    recorded.export(out, format="csv", manifest_file=True)
    kept = out.with_name(out.name + ".manifest.json")
    now = check_export(kept, key=KEY)
    assert now.rows is not None and now.rows >= len(CALLS)
    [header, *rows] = _csv_rows(out)
    assert "credential_kind" in header
    before = io.StringIO()
    writer = csv.writer(before, lineterminator="\r\n")
    for row in (header, *rows):
        writer.writerow(row[: header.index("recorded_by_token_name") + 1])
    content = before.getvalue().encode()
    out.write_bytes(content)
    signed = replace(
        now.statement, sha256=hashlib.sha256(content).digest(), byte_count=len(content)
    )
    _resigned(kept, signed)
    older = check_export(kept, key=KEY)
    assert older.rows == now.rows and older.sha256 != now.sha256
    assert _csv_rows(out)[0][-1] == "recorded_by_token_name"
    # Its rows of events with a credential rebuild into records without it,
    # none its leaf's: not proven the log's records (as a newer server's
    # export is), not failed as tampered.
    assert now.unproven is None and now.root_recomputed
    assert older.unproven is not None and not older.root_recomputed
    assert older.unproven.startswith("its columns end before credential_kind"), older.unproven
    said = CliRunner().invoke(cli.main, ["verify", str(out), "--key", VERIFIER])
    assert said.exit_code == 0, said.output
    assert said.stdout.startswith("MATCHES:"), said.stdout
    assert "not proven: that each row is the log's record" in said.stderr, said.stderr
    assert "its columns end before credential_kind" in said.stderr, said.stderr


def test_a_live_stream_follows_one_credential(recorded: AuditClient) -> None:
    with live_from_now(recorded, build_filter(credential_id="key_77c0")) as live:
        recorded.record(_event("ann", "api_key", "key_8f3a", ""))
        recorded.record(_event("ann", "", "", ""))
        recorded.record(_event("eve", "oauth_token", "key_77c0", ""))
        first = next(live)
    assert (first.actor.id, first.actor.credential.kind) == ("eve", "oauth_token")


def test_a_sink_given_another_credential_is_narrowed(client: AuditClient) -> None:
    created = client.create_sink(paused_webhook(build_filter(credential_id="key_8f3a")))
    assert client.get_sink(created.sink.id).filter.credential_id == "key_8f3a"

    def update(text: str) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(credential_id=text))

    assert update("KEY_8F3A") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update("") == (event_pb2.SEVERITY_INFO, [])
    assert update("key_8f3a") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert update("key_77c0") == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])


def test_sinks_deliver_the_credential_in_either_format(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
) -> None:
    """Sealtrail JSON carries the record as hashed, credential and all; OCSF
    maps its id to `actor.user.credential_uid` (a session's to
    `actor.session.uid` too), its kind and hint under `unmapped`."""
    watched = build_filter(credential_id="key_8f3a")
    with endpoint() as receiver:
        sinks(build_sink("splunk", "splunk_hec", url=receiver.url, token="hec-token-1234",
                         filter=watched))  # fmt: skip
        sinks(build_sink("datadog", "datadog_logs", url=receiver.url, api_key="dd-key-abcdef",
                         format="ocsf", filter=watched))  # fmt: skip
        client.record_batch([_event(*call) for call in CALLS])
        received = receiver.wait_for(lambda r: len(r) >= 2)
    [splunk] = [r for r in received if r.path == "/services/collector/event"]
    [datadog] = [r for r in received if r.path == "/api/v2/logs"]
    hec = [json.loads(line)["event"] for line in splunk.body.decode().splitlines()]
    assert [(e["actor"]["id"], e["actor"]["credential"]) for e in hec] == [
        ("ann", {"kind": "api_key", "id": "key_8f3a", "hint": "a1b2"}),
        ("bob", {"kind": "personal_access_token", "id": "key_8f3a", "hint": "zz"}),
    ]
    ocsf = [json.loads(entry["message"])["ocsf"] for entry in json.loads(datadog.body)]
    assert [
        (
            e["actor"]["user"]["uid"],
            e["actor"]["user"]["credential_uid"],
            e["unmapped"]["credential"],
        )
        for e in ocsf
    ] == [
        ("ann", "key_8f3a", {"kind": "api_key", "hint": "a1b2"}),
        ("bob", "key_8f3a", {"kind": "personal_access_token", "hint": "zz"}),
    ]
    assert all("session" not in e["actor"] for e in ocsf)


def test_an_alert_rule_on_one_credential_fires_on_it_alone(client: AuditClient) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("leaked", "match", filter=build_filter(credential_id="key_8f3a"))
    )
    client.record(_event("u1", "api_key", "key_77c0", ""))
    client.record(_event("u1", "", "", ""))
    fires = client.record(_event("u1", "api_key", "key_8f3a", "a1b2"))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_records_a_credential_and_finds_its_events(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    client = client_for(tenant)
    client.record_batch([_event(*call) for call in CALLS])
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    recorded = CliRunner().invoke(
        cli.main,
        ["record", "--action", "repo.delete", "--actor-id", "eve", "--credential-kind",
         "api_key", "--credential-id", "key_8f3a", "--credential-hint", "a1b2"],
        env=env,
    )  # fmt: skip
    assert recorded.exit_code == 0, recorded.output
    assert json.loads(recorded.output)["actor"]["credential"]["id"] == "key_8f3a"
    found = CliRunner().invoke(
        cli.main,
        ["query", "--format", "jsonl", "--action", "repo.delete", "--credential-id", "key_8f3a"],
        env=env,
    )
    assert found.exit_code == 0, found.output
    actors = [json.loads(line)["actor"]["id"] for line in found.output.splitlines()]
    assert sorted(actors) == ["ann", "bob", "eve"]
    refused = CliRunner().invoke(
        cli.main,
        ["record", "--action", "repo.delete", "--actor-id", "eve", "--credential-kind",
         "api_key", "--credential-id", GITHUB_TOKEN],
        env=env,
    )  # fmt: skip
    assert refused.exit_code != 0 and "--credential-id" in refused.output, refused.output


def test_the_cli_query_table_shows_each_events_credential_beside_its_actor(
    recorded: AuditClient, server: ServerThread, tenant: str
) -> None:
    """`sealtrail query`'s table, what a person reads, says which key acted
    (kind, id, `...hint`) as JSON lines and `get` do; empty for an event
    recorded without one; its characters escaped as every cell's are."""
    recorded.record(_event("eve", "api_key", "key_\x1b[2Jx", ""))
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    shown = CliRunner().invoke(
        cli.main, ["query", "--action", "repo.delete", "--order", "oldest"], env=env
    )
    assert shown.exit_code == 0, shown.output
    # The header's cells between ┃, the rows' between │.
    bars = re.compile("[│┃]")
    lines = [bars.split(line) for line in shown.output.splitlines() if bars.search(line)]
    header = [cell.strip() for cell in lines[0]]
    actor, credential = header.index("actor"), header.index("credential")
    assert credential == actor + 1
    rows = [(cells[actor].strip(), cells[credential].strip()) for cells in lines[1:]]
    assert rows == [
        ("ann", "api_key key_8f3a ...a1b2"),
        ("ann", "api_key key_77c0 ...9f9f"),
        ("ann", "session sess_1"),
        ("bob", "personal_access_token key_8f3a ...zz"),
        ("bob", "api_key KEY_8F3A ...a1b2"),
        ("cy", ""),
        ("dee", "api_key key_8f3a_old ...0000"),
        ("eve", "api_key key_\\x1b[2Jx"),
    ]


# The credential `key_8f3a` of CALLS is two: ann's API key and bob's personal
# access token. Its id alone finds both; with a kind, that one alone.
ONE_KEY = {"credential_id": "key_8f3a", "credential_kind": "api_key"}


def test_a_credentials_kind_and_id_find_it_alone_not_another_kinds_of_its_id(
    recorded: AuditClient, tmp_path: Path
) -> None:
    """The Breakdown lists a credential by kind and id: its events are those
    of both, in a query, a count and an export checked offline, never those
    of another kind's credential of the same id (helper-468)."""
    both = build_filter(actions="repo.delete", credential_id="key_8f3a")
    one = build_filter(actions="repo.delete", **ONE_KEY)
    assert _found(recorded, both) == [("ann", "api_key"), ("bob", "personal_access_token")]
    assert _found(recorded, one) == [("ann", "api_key")]
    # A kind alone: every API key's events.
    assert [a for a, _ in _found(recorded, build_filter(credential_kind="api_key"))] == [
        "ann", "ann", "bob", "dee"
    ]  # fmt: skip
    assert _found(recorded, build_filter(credential_kind="oauth_token")) == []
    counts = recorded.count_events(one, group_by="credential")
    assert counts.total == 1
    assert [g.key for g in counts.groups] == ['["api_key","key_8f3a","a1b2"]']
    assert recorded.count_events(both, group_by="credential").total == 2
    out = tmp_path / "key.ndjson"
    recorded.export(out, format="ndjson", manifest_file=True, filter=one)
    checked = check_export(out.with_name(out.name + ".manifest.json"), key=KEY)
    assert checked.filter is not None
    assert json.loads(checked.filter)["credentialKind"] == "api_key"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["actor"]["id"], r["actor"]["credential"]["kind"]) for r in rows] == [
        ("ann", "api_key")
    ]


def test_a_live_stream_follows_one_credential_of_its_kind(recorded: AuditClient) -> None:
    with live_from_now(recorded, build_filter(**ONE_KEY)) as live:
        recorded.record(_event("bob", "personal_access_token", "key_8f3a", ""))
        recorded.record(_event("eve", "api_key", "key_77c0", ""))
        recorded.record(_event("eve", "api_key", "key_8f3a", ""))
        first = next(live)
    assert (first.actor.id, first.actor.credential.kind) == ("eve", "api_key")


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("API_KEY", "lower_snake_case"),
        ("api-key", "lower_snake_case"),
        ("1key", "lower_snake_case"),
        ("api key", "lower_snake_case"),
        ("k" * 65, "is 65 characters long; the limit is 64"),
    ],
)
def test_a_credential_kind_filter_no_kind_is_recorded_as_is_refused_naming_it(
    client: AuditClient, kind: str, words: str
) -> None:
    [(named, description)] = violations_refused(client, build_filter(credential_kind=kind))
    assert named == "filter.credential_kind" and words in description, description
    assert list(client.query(build_filter(credential_kind="k" * 64))) == []


def test_a_sink_given_a_credential_kind_is_narrowed_and_widened_without_it(
    client: AuditClient,
) -> None:
    created = client.create_sink(paused_webhook(build_filter(credential_id="key_8f3a")))

    def update(**kwargs: str) -> tuple[int, list[str]]:
        return refiltered(client, created.sink.id, build_filter(**kwargs))

    assert update(**ONE_KEY) == (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])
    assert client.get_sink(created.sink.id).filter.credential_kind == "api_key"
    assert update(credential_id="key_8f3a") == (event_pb2.SEVERITY_INFO, [])
    assert update(credential_id="key_8f3a", credential_kind="session") == (
        event_pb2.SEVERITY_WARNING,
        ["filter_narrowed"],
    )


def test_an_alert_rule_on_one_credential_of_a_kind_fires_on_it_alone(
    client: AuditClient,
) -> None:
    rule = client.create_alert_rule(
        build_alert_rule("leaked key", "match", filter=build_filter(**ONE_KEY))
    )
    client.record(_event("u1", "personal_access_token", "key_8f3a", ""))
    fires = client.record(_event("u1", "api_key", "key_8f3a", "a1b2"))
    the_only_alert(client, rule.rule.id, fires.event)


def test_the_cli_query_finds_one_credential_by_its_kind_and_id(
    recorded: AuditClient, server: ServerThread, tenant: str
) -> None:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    args = ["query", "--format", "jsonl", "--credential-id", "key_8f3a"]
    for kind, actors in [([], ["ann", "bob"]), (["--credential-kind", "api_key"], ["ann"])]:
        found = CliRunner().invoke(cli.main, [*args, *kind, "--order", "oldest"], env=env)
        assert found.exit_code == 0, found.output
        assert [json.loads(line)["actor"]["id"] for line in found.output.splitlines()] == actors
    refused = CliRunner().invoke(cli.main, [*args, "--credential-kind", "API"], env=env)
    assert refused.exit_code != 0 and "--credential-kind" in refused.output, refused.output
