"""Names that show nothing or reorder what is around them: a zero-width
space, a joiner, a byte-order mark, a bidi override or isolate, any other
format character, a line or paragraph separator, a Hangul filler. A new
sink, deployment sink, alert rule or API token so named is refused
(INVALID_ARGUMENT naming the field, on the API, the console's JSON API and
both CLIs); one stored before the rule is still listed, updated without
being renamed, and deleted."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    build_alert_rule,
    build_filter,
    build_sink,
)
from sealtrail._cli import main as client_main
from sealtrail.v1 import forwarding_pb2
from sealtrail_server.domain.names import hidden_character
from tests.command_output import own_lines
from tests.conftest import ServerThread, deployment_operator

HIDDEN = {
    "zero-width space": "\u200b",
    "zero-width non-joiner": "\u200c",
    "zero-width joiner": "\u200d",
    "word joiner": "\u2060",
    "byte-order mark": "\ufeff",
    "right-to-left mark": "\u200f",
    "left-to-right mark": "\u200e",
    "right-to-left override": "\u202e",
    "left-to-right embedding": "\u202a",
    "right-to-left isolate": "\u2067",
    "pop directional isolate": "\u2069",
    "soft hyphen": "\u00ad",
    "arabic letter mark": "\u061c",
    "tag letter": "\U000e0041",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "hangul filler": "\u3164",
    "hangul choseong filler": "\u115f",
    "hangul jungseong filler": "\u1160",
    "halfwidth hangul filler": "\uffa0",
}
SHOWN = [
    "siem",
    "SIEM \u2013 Überwachung",
    "a\u00a0b",  # a no-break space is a space
    "監査ログ",
    "سجل التدقيق",
    "감사 로그",
    "журнал аудита",
    "ऑडिट लॉग",
]


def webhook(name: str) -> forwarding_pb2.Sink:
    return build_sink(
        name,
        "webhook",
        url="http://127.0.0.1:9/hook",
        secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
        filter=build_filter(actions="doc.*"),
        paused=True,
    )


def refused_field(error: pytest.ExceptionInfo[InvalidArgumentError], field: str) -> str:
    [(named, description)] = error.value.field_violations
    assert named == field, error.value.field_violations
    return description


@pytest.mark.parametrize("char", HIDDEN.values(), ids=HIDDEN.keys())
def test_a_hidden_character_is_found(char: str) -> None:
    assert hidden_character(f"siem{char}x") == char


@pytest.mark.parametrize("name", SHOWN)
def test_spaces_and_the_letters_of_every_script_are_not_hidden(name: str) -> None:
    assert hidden_character(name) is None


@pytest.mark.parametrize("char", HIDDEN.values(), ids=HIDDEN.keys())
def test_a_new_name_holding_a_hidden_character_is_refused_naming_the_field(
    client: AuditClient, char: str
) -> None:
    name = f"siem{char}2"
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_sink(webhook(name))
    assert f"U+{ord(char):04X}" in refused_field(refused, "sink.name")
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_alert_rule(
            build_alert_rule(name, "match", filter=build_filter(actions="a.b"))
        )
    assert f"U+{ord(char):04X}" in refused_field(refused, "rule.name")
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_token("reader", name=name)
    assert f"U+{ord(char):04X}" in refused_field(refused, "name")
    assert client.list_sinks() == [] and client.list_alert_rules() == []


def test_a_rename_to_a_hidden_character_is_refused(client: AuditClient) -> None:
    sink = client.create_sink(webhook("siem")).sink
    rule = client.create_alert_rule(
        build_alert_rule("keys", "match", filter=build_filter(actions="a.b"))
    ).rule
    sink.name = "si\u200bem"
    with pytest.raises(InvalidArgumentError) as refused:
        client.update_sink(sink, fields=["name"])
    refused_field(refused, "sink.name")
    rule.name = "keys\u202e"
    with pytest.raises(InvalidArgumentError) as refused:
        client.update_alert_rule(rule, fields=["name"])
    refused_field(refused, "rule.name")
    assert [s.name for s in client.list_sinks()] == ["siem"]
    assert [r.name for r in client.list_alert_rules()] == ["keys"]


@pytest.mark.parametrize("name", SHOWN)
def test_a_name_of_any_script_is_taken(client: AuditClient, name: str) -> None:
    sink = client.create_sink(webhook(name)).sink
    rule = client.create_alert_rule(
        build_alert_rule(name, "match", filter=build_filter(actions="a.b"))
    ).rule
    client.create_token("reader", name=name)
    assert (sink.name, rule.name) == (name, name)
    client.delete_sink(sink.id)
    client.delete_alert_rule(rule.id)


def test_a_name_stored_before_the_rule_is_listed_updated_and_deleted(
    client: AuditClient, sql: psycopg.Connection[Any], tenant: str
) -> None:
    """Made before names were checked for hidden characters (here written
    into the table, as it was then): an update that keeps the name, with or
    without a mask, is not refused for it; a rename still is."""
    old = "si\u200bem\u202e"
    sink = client.create_sink(webhook("siem")).sink
    rule = client.create_alert_rule(
        build_alert_rule("keys", "match", filter=build_filter(actions="a.b"))
    ).rule
    token = client.create_token("reader", name="ci").token
    sql.execute("UPDATE sinks SET name = %s WHERE tenant_id = %s", [old, tenant])
    sql.execute("UPDATE alert_rules SET name = %s WHERE tenant_id = %s", [old, tenant])
    sql.execute("UPDATE api_tokens SET name = %s WHERE token_id = %s", [old, token.token_id])

    [listed] = client.list_sinks()
    assert listed.name == old
    listed.paused = False
    updated = client.update_sink(listed, fields=["paused"]).sink
    assert (updated.name, updated.paused) == (old, False)
    updated.paused = True
    updated = client.update_sink(updated).sink  # no mask: the whole sink, its name as it was
    assert (updated.name, updated.paused) == (old, True)
    updated.name = old + "x"
    with pytest.raises(InvalidArgumentError) as refused:
        client.update_sink(updated, fields=["name"])
    refused_field(refused, "sink.name")

    [listed_rule] = client.list_alert_rules()
    assert listed_rule.name == old
    listed_rule.disabled = True
    changed = client.update_alert_rule(listed_rule, fields=["disabled"]).rule
    assert (changed.name, changed.disabled) == (old, True)
    changed.disabled = False
    changed = client.update_alert_rule(changed).rule  # no mask
    assert (changed.name, changed.disabled) == (old, False)

    assert old in [t.name for t in client.list_tokens()]
    client.revoke_token(token.token_id)
    client.delete_sink(sink.id)
    client.delete_alert_rule(rule.id)
    assert client.list_sinks() == [] and client.list_alert_rules() == []


def test_the_client_cli_says_which_field_and_why(server: ServerThread, tenant: str) -> None:
    token = server.token(tenant)
    runner = CliRunner()
    base = ["--server", server.target, "--token", token]
    sink = [*base, "sinks", "create", "si\u200bem", "--kind", "webhook"]
    result = runner.invoke(
        client_main,
        [*sink, "--url", "http://127.0.0.1:9/hook", "--generate-secret"],
        catch_exceptions=False,
    )
    assert result.exit_code != 0
    assert "  NAME: holds U+200B" in result.output, result.output
    assert "sink.name" not in result.output, result.output
    result = runner.invoke(
        client_main,
        [*base, "tokens", "create", "--role", "reader", "--name", "ci\u2067"],
        catch_exceptions=False,
    )
    assert result.exit_code != 0
    assert "name" in result.output and "U+2067" in result.output, result.output


def test_a_deployment_sink_is_refused_a_hidden_name_and_keeps_one_it_had(
    migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    with deployment_operator(migrated_database_url) as run:
        made = [
            "sink",
            "create",
            "--kind",
            "webhook",
            "--url",
            "http://127.0.0.1:9/hook",
            "--generate-secret",
        ]
        refused = run(*made[:2], name + "\u200b", *made[2:])
        assert refused.exit_code != 0
        assert "--name" in refused.output or "sink.name" in refused.output, refused.output
        assert "U+200B" in refused.output, refused.output
        created = run(*made[:2], name, *made[2:])
        assert created.exit_code == 0, created.output
        definition_id = own_lines(created.output)[-1]
        old = name + "\u2060"
        sql.execute("UPDATE deployment_sinks SET name = %s WHERE id = %s", [old, definition_id])
        paused = run("sink", "update", definition_id, "--pause")
        assert paused.exit_code == 0, paused.output
        renamed = run("sink", "update", definition_id, "--name", name + "\u200d")
        assert renamed.exit_code != 0 and "U+200D" in renamed.output, renamed.output
        [shown] = [
            d
            for d in json.loads(run("sink", "list", "--format", "json").stdout)
            if d["id"] == definition_id
        ]
        assert (shown["name"], shown["paused"]) == (old, True)
