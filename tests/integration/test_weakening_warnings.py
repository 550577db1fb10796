"""Changes that weaken the audit trail stand out: Sealtrail records them at
severity WARNING, every other change of the same kind at INFO, so that a
SIEM rule "severity >= warning from Sealtrail" pages on a deleted sink, a
disabled alert rule, a shorter retention or a released legal hold, and on
nothing else (ADR 0066; helper-178, G4)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner
from google.protobuf import json_format

from sealtrail import AuditClient, build_alert_rule, build_filter, build_sink
from sealtrail import _cli as client_cli
from sealtrail.v1 import alerting_pb2, event_pb2, forwarding_pb2
from sealtrail_server import cli as server_cli
from tests.conftest import ServerThread

WARNING = event_pb2.SEVERITY_WARNING
INFO = event_pb2.SEVERITY_INFO
# Sealtrail's records of changes made through its API.
CHANGES = ["sink.*", "alert_rule.*", "retention.*", "api_token.*", "tenant.*"]


def _webhook(name: str, **changes: Any) -> forwarding_pb2.Sink:
    """A sink whose filter nothing in these tests matches: it delivers nothing."""
    settings: dict[str, Any] = {
        "url": "http://127.0.0.1:9/hook",
        "secrets": ["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
        "filter": build_filter(actions=["doc.edit", "doc.share"], categories="data_access"),
        "paused": True,
    }
    return build_sink(name, "webhook", **{**settings, **changes})


def _recorded(client: AuditClient, event_id: str) -> event_pb2.Event:
    assert event_id, "the change was not recorded"
    return client.get_event(event_id)


def _eventually(find: Callable[[], list[Any]]) -> list[Any]:
    """What `find` returns once it is not empty (within 20 s)."""
    deadline = time.monotonic() + 20
    while not (found := find()):
        assert time.monotonic() < deadline, "nothing was recorded"
        time.sleep(0.05)
    return found


def _weakens(event: event_pb2.Event) -> list[str]:
    return list(json_format.MessageToDict(event.details).get("weakens", []))


def paused_webhook(
    event_filter: event_pb2.EventFilter, *, name: str = "siem"
) -> forwarding_pb2.Sink:
    """A paused webhook sink (it never sends) with `event_filter`: for a test
    of what a change of its filter is recorded as (`refiltered`)."""
    secret = "whsec_" + base64.b64encode(bytes(32)).decode()
    return build_sink(
        name, "webhook", url="http://127.0.0.1:9/hook", paused=True, secrets=[secret],
        filter=event_filter,
    )  # fmt: skip


def refiltered(
    client: AuditClient, sink_id: str, event_filter: event_pb2.EventFilter
) -> tuple[int, list[str]]:
    """Gives sink `sink_id` the filter `event_filter`: the severity of the
    change's record, and what it says the change weakens."""
    sink = client.get_sink(sink_id)
    sink.filter.CopyFrom(event_filter)
    event = client.get_event(client.update_sink(sink, fields=["filter"]).event_id)
    return event.severity, _weakens(event)


def _severities(client: AuditClient, changed: Callable[[], str]) -> tuple[int, list[str]]:
    """The severity of the record of `changed` (which answers its event id), and its reasons."""
    event = _recorded(client, changed())
    return event.severity, _weakens(event)


def _update_sink(client: AuditClient, sink_id: str, fields: list[str], **changes: Any) -> str:
    sink = _webhook(changes.pop("name", "siem"), **changes)
    sink.id = sink_id
    return client.update_sink(sink, fields=fields).event_id


def test_a_sink_paused_narrowed_moved_or_deleted_is_a_warning_other_changes_info(
    client: AuditClient,
) -> None:
    created = client.create_sink(_webhook("siem", paused=False))
    assert _recorded(client, created.event_id).severity == INFO
    sink_id = created.sink.id

    def update(fields: list[str], **changes: Any) -> tuple[int, list[str]]:
        return _severities(client, lambda: _update_sink(client, sink_id, fields, **changes))

    assert update(["name"], name="siem (prod)") == (INFO, [])
    assert update(["paused"], paused=True) == (WARNING, ["paused"])
    assert update(["paused"], paused=False) == (INFO, [])
    # Wider: a criterion dropped, more actions.
    assert update(["filter"], filter=build_filter(actions=["doc.edit", "doc.share"])) == (INFO, [])
    assert update(["filter"], filter=build_filter(actions=["doc.*"])) == (INFO, [])
    # Narrower: fewer actions, a criterion added, a higher min_severity.
    assert update(["filter"], filter=build_filter(actions=["doc.edit"])) == (
        WARNING,
        ["filter_narrowed"],
    )
    narrowed = build_filter(actions=["doc.edit"], min_severity="error")
    assert update(["filter"], filter=narrowed) == (WARNING, ["filter_narrowed"])
    assert update(["filter"], filter=build_filter()) == (INFO, [])  # everything again
    assert update(["format"], format="ocsf") == (INFO, [])
    # A rotated secret is no move; another URL is.
    assert update(["webhook"], filter=build_filter()) == (INFO, [])
    assert update(["webhook"], url="http://127.0.0.1:9/elsewhere") == (
        WARNING,
        ["destination_moved"],
    )
    both = update(["paused", "filter"], paused=True, filter=build_filter(actions="doc.edit"))
    assert both == (WARNING, ["paused", "filter_narrowed"])

    deleted = _recorded(client, client.delete_sink(sink_id).event_id)
    assert (deleted.action, deleted.severity) == ("sink.deleted", WARNING)


def test_a_sink_whose_events_move_out_of_the_socs_searches_is_a_warning_naming_the_field(
    client: AuditClient,
) -> None:
    """A Splunk sourcetype or source, a Datadog service or a tag taken away
    takes the events out of the saved searches that look for them, as a new
    URL or index does (ADR 0066 addendum). Defaults count as what is sent."""
    quiet = build_filter(actions="doc.edit", categories="data_access")

    def update(
        sink_id: str, kind: Any, fields: list[str], **settings: Any
    ) -> tuple[int, list[str]]:
        sink = build_sink("siem", kind, filter=quiet, paused=True, **settings)
        sink.id = sink_id
        return _severities(client, lambda: client.update_sink(sink, fields=fields).event_id)

    def splunk(**settings: str) -> tuple[int, list[str]]:
        return update(splunk_id, "splunk_hec", ["splunk_hec"], **{**hec, **settings})

    hec = {"url": "http://127.0.0.1:9", "index": "audit", "sourcetype": "sealtrail:audit"}
    splunk_id = client.create_sink(
        build_sink("siem", "splunk_hec", filter=quiet, paused=True, token="t1", **hec)
    ).sink.id
    assert splunk(sourcetype="") == (INFO, [])  # the default is sealtrail:audit
    assert splunk(sourcetype="ocsf") == (WARNING, ["sourcetype_changed"])
    assert splunk(source="elsewhere") == (WARNING, ["source_changed", "sourcetype_changed"])
    assert splunk(index="scratch") == (WARNING, ["destination_moved", "source_changed"])
    # OCSF's default sourcetype is `ocsf`: a new format moves a default sourcetype.
    assert splunk(index="scratch", sourcetype="") == (INFO, [])
    ocsf = build_sink("siem", "splunk_hec", format="ocsf")
    ocsf.id = splunk_id
    assert _severities(client, lambda: client.update_sink(ocsf, fields=["format"]).event_id) == (
        WARNING,
        ["sourcetype_changed"],
    )

    def datadog(**settings: str) -> tuple[int, list[str]]:
        return update(datadog_id, "datadog_logs", ["datadog_logs"], **{**dd, **settings})

    dd = {"url": "http://127.0.0.1:9", "service": "sealtrail", "tags": "env:prod,team:sec"}
    datadog_id = client.create_sink(
        build_sink("siem", "datadog_logs", filter=quiet, paused=True, api_key="k1", **dd)
    ).sink.id
    # A tag added: every search that found the events still does.
    assert datadog(tags="team:sec, env:prod,x:y") == (INFO, [])
    assert datadog(service="audit") == (WARNING, ["service_changed", "tags_changed"])
    assert datadog(service="audit", tags="env:prod") == (WARNING, ["tags_changed"])
    assert datadog(service="", tags="env:prod") == (WARNING, ["service_changed"])
    # Another site is another intake URL.
    assert datadog(service="", tags="env:prod", url="http://127.0.0.1:10", api_key="k2") == (
        WARNING,
        ["destination_moved"],
    )

    elastic = {"url": "http://127.0.0.1:9", "index": "audit"}
    elastic_id = client.create_sink(
        build_sink("siem", "elasticsearch", filter=quiet, paused=True, **elastic)
    ).sink.id
    assert update(elastic_id, "elasticsearch", ["elasticsearch"], **{**elastic, "index": "x"}) == (
        WARNING,
        ["destination_moved"],
    )


def _rule(**changes: Any) -> alerting_pb2.AlertRule:
    settings: dict[str, Any] = {
        "filter": build_filter(actions="user.login", outcomes="failure"),
        "count": 5,
        "window_seconds": 60,
        "severity": "error",
    }
    name = changes.pop("name", "failed logins")
    return build_alert_rule(name, "threshold", **{**settings, **changes})


def test_an_alert_rule_disabled_made_to_fire_less_or_deleted_is_a_warning(
    client: AuditClient,
) -> None:
    sink_id = client.create_sink(_webhook("pager")).sink.id
    created = client.create_alert_rule(_rule(sink_ids=[sink_id]))
    assert _recorded(client, created.event_id).severity == INFO
    rule_id = created.rule.id

    def update(fields: list[str], **changes: Any) -> tuple[int, list[str]]:
        rule = _rule(**changes)
        rule.id = rule_id
        return _severities(client, lambda: client.update_alert_rule(rule, fields=fields).event_id)

    assert update(["name"], name="failed logins (prod)") == (INFO, [])
    assert update(["disabled"], disabled=True) == (WARNING, ["disabled"])
    assert update(["disabled"], disabled=False) == (INFO, [])
    assert update(["threshold"], count=3, window_seconds=120) == (INFO, [])  # fires sooner
    assert update(["threshold"], count=10) == (WARNING, ["condition_narrowed"])
    assert update(["threshold"], count=10, window_seconds=30) == (
        WARNING,
        ["condition_narrowed"],
    )
    assert update(["threshold"], count=10, window_seconds=30, group_by="actor") == (
        WARNING,
        ["condition_narrowed"],
    )
    assert update(["threshold"], count=10, window_seconds=30) == (INFO, [])  # all together
    assert update(["severity"], severity="critical") == (INFO, [])
    assert update(["severity"], severity="info") == (WARNING, ["severity_lowered"])
    assert update(["sink_ids"], sink_ids=[]) == (WARNING, ["sinks_removed"])
    assert update(["sink_ids"], sink_ids=[sink_id]) == (INFO, [])
    match = build_alert_rule("failed logins", "match", filter=build_filter(actions="user.*"))
    match.id = rule_id
    changed = _recorded(client, client.update_alert_rule(match, fields=["match"]).event_id)
    assert (changed.severity, _weakens(changed)) == (WARNING, ["condition_narrowed"])

    deleted = _recorded(client, client.delete_alert_rule(rule_id).event_id)
    assert (deleted.action, deleted.severity) == ("alert_rule.deleted", WARNING)
    client.delete_sink(sink_id)


def test_a_retention_period_made_shorter_is_a_warning_naming_the_events_it_keeps_less(
    client: AuditClient,
) -> None:
    def policy(default: int | str, **rules: Any) -> tuple[int, dict[str, Any]]:
        event = _recorded(client, client.set_retention_policy(default, **rules).event_id)
        return event.severity, json_format.MessageToDict(event.details)

    # Forever becomes a year: shorter.
    severity, details = policy("1y")
    assert severity == WARNING
    assert details == {
        "weakens": ["retention_shortened"],
        "shortened": [{"events": "default", "before_days": 0, "after_days": 365}],
    }
    # Longer for a category, an action prefix kept forever: nothing shorter.
    longer = {"categories": {"authentication": 730}, "action_prefixes": {"billing.*": 0}}
    assert policy("1y", **longer) == (INFO, {})
    assert policy(730, **longer) == (INFO, {})
    # The category's override removed: its events fall back to... the same default.
    assert policy(730, action_prefixes={"billing.*": 0}) == (INFO, {})
    # The prefix's override removed: kept forever, now 730 days.
    severity, details = policy(730)
    assert severity == WARNING
    assert details["shortened"] == [
        {"events": "action:billing.*", "before_days": 0, "after_days": 730}
    ]
    # A category's override made shorter than the default it overrode.
    assert policy(730, categories={"security": 3650}) == (INFO, {})
    severity, details = policy(730, categories={"security": 400})
    assert severity == WARNING
    assert details["shortened"] == [
        {"events": "category:security", "before_days": 3650, "after_days": 400}
    ]
    assert policy("forever") == (INFO, {})


def test_a_hundred_rules_shortened_at_once_are_recorded_within_the_records_bounds(
    client: AuditClient,
) -> None:
    """Each prefix falls back by category here: hundreds of shortenings, of
    which the record lists a hundred and counts the rest."""
    prefixes = {f"app{n}.*": 0 for n in range(99)}
    client.set_retention_policy("forever", categories={"security": 3650}, action_prefixes=prefixes)
    changed = client.set_retention_policy(400, categories={"security": 365})
    event = _recorded(client, changed.event_id)
    details = json_format.MessageToDict(event.details)
    assert event.severity == WARNING
    assert len(details["shortened"]) == 100
    assert details["shortened"][0] == {"events": "default", "before_days": 0, "after_days": 400}
    assert details["shortened_more"] == 2 + 2 * 99 - 100  # default, security, each prefix twice
    assert event.description.endswith(" and 197 more")


def test_a_legal_hold_released_is_a_warning_a_hold_placed_is_info(client: AuditClient) -> None:
    placed = _recorded(client, client.set_legal_hold(True, reason="Case 7").event_id)
    assert (placed.action, placed.severity) == ("retention.legal_hold_placed", INFO)
    released = _recorded(client, client.set_legal_hold(False).event_id)
    assert (released.action, released.severity) == ("retention.legal_hold_released", WARNING)


def test_an_admin_token_created_is_a_warning_other_roles_and_revocations_info(
    client: AuditClient, migrated_database_url: str, tenant: str
) -> None:
    roles = {}
    for role in ("recorder", "reader", "exporter", "admin"):
        created = client.create_token(role, name=f"{role} key")
        roles[role] = _recorded(client, created.event_id).severity
        assert (
            _recorded(client, client.revoke_token(created.token.token_id).event_id).severity == INFO
        )
    assert roles == {"recorder": INFO, "reader": INFO, "exporter": INFO, "admin": WARNING}

    database = ["--database-url", migrated_database_url]
    for role in ("admin", "reader"):
        made = CliRunner().invoke(
            server_cli.main, ["token", "create", "--tenant", tenant, "--role", role, *database]
        )
        assert made.exit_code == 0, made.output
    by_operator = {
        json_format.MessageToDict(e.details)["role"]: e.severity
        for e in client.query(build_filter(actions="api_token.created"))
        if e.actor.type == event_pb2.ACTOR_TYPE_SYSTEM
    }
    assert by_operator == {"admin": WARNING, "reader": INFO}


def test_a_redaction_mode_change_either_way_is_info(client: AuditClient) -> None:
    to_hmac = _recorded(client, client.set_redaction_mode("hmac").event_id)
    to_replace = _recorded(client, client.set_redaction_mode("replace").event_id)
    assert (to_hmac.severity, to_replace.severity) == (INFO, INFO)


def test_a_query_for_warnings_lists_exactly_the_weakening_changes(
    server: ServerThread, tenant: str
) -> None:
    token = server.token(tenant)
    weakening, other = [], []
    with AuditClient(server.target, token=token) as client:
        sink = client.create_sink(_webhook("siem", paused=False))
        other.append(sink.event_id)
        other.append(_update_sink(client, sink.sink.id, ["name"], name="siem 2"))
        weakening.append(_update_sink(client, sink.sink.id, ["paused"], paused=True))
        rule = client.create_alert_rule(_rule())
        other.append(rule.event_id)
        disabled = _rule(disabled=True)
        disabled.id = rule.rule.id
        weakening.append(client.update_alert_rule(disabled, fields=["disabled"]).event_id)
        weakening.append(  # forever, now 90 days
            client.set_retention_policy("forever", categories={"security": 90}).event_id
        )
        other.append(client.set_retention_policy("forever", categories={"security": 365}).event_id)
        weakening.append(client.create_token("admin", name="break glass").event_id)
        other.append(client.create_token("recorder", name="billing").event_id)
        other.append(client.set_legal_hold(True, reason="Case 9").event_id)
        weakening.append(client.set_legal_hold(False).event_id)
        other.append(client.set_redaction_mode("hmac").event_id)
        weakening.append(client.delete_alert_rule(rule.rule.id).event_id)
        weakening.append(client.delete_sink(sink.sink.id).event_id)

        warnings = client.query(
            build_filter(actions=CHANGES, min_severity="warning"), order="oldest"
        )
        assert [e.id for e in warnings] == weakening
        every = {e.id for e in client.query(build_filter(actions=CHANGES))}
        assert every == {*weakening, *other}

    found = CliRunner().invoke(
        client_cli.main,
        ["query", "--severity", "warning", "--action", "sink.*", "--format", "jsonl"],
        env={"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token},
    )
    assert found.exit_code == 0, found.output
    assert [json.loads(line)["action"] for line in found.stdout.splitlines()] == [
        "sink.deleted",
        "sink.updated",
    ]


def test_an_alert_rule_on_warnings_fires_on_a_weakening_change_only(
    server: ServerThread, tenant: str
) -> None:
    token = server.token(tenant)
    # As docs/alerting.md shows it.
    made = CliRunner().invoke(
        client_cli.main,
        ["alerts", "create", "audit trail weakened", "--kind", "match",
         "--action", "sink.*", "--action", "alert_rule.*", "--action", "retention.*",
         "--action", "api_token.*", "--severity", "warning"],
        env={"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token},
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    with AuditClient(server.target, token=token) as admin:

        def alerts() -> list[event_pb2.Event]:
            return list(admin.query(build_filter(actions="security.alert"), order="oldest"))

        def seq(event_id: str) -> int:
            return admin.get_event(event_id).seq

        sink = admin.create_sink(_webhook("siem"))  # info: no alert
        renamed = _update_sink(admin, sink.sink.id, ["name"], name="siem 2")  # info
        narrowed = _update_sink(admin, sink.sink.id, ["filter"], filter=build_filter(actions="x.y"))
        [alert] = _eventually(alerts)  # the rule saw the changes before it, in seq order
        assert alert.details["trigger_seq"] == seq(narrowed)
        assert alert.severity == WARNING
        deleted = seq(admin.delete_sink(sink.sink.id).event_id)
        _eventually(lambda: alerts()[1:])
        triggers = [a.details["trigger_seq"] for a in alerts()]
        assert triggers == [seq(narrowed), deleted]
        assert not {seq(sink.event_id), seq(renamed)} & set(triggers)
