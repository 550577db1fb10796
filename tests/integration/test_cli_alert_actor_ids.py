"""`sealtrail alerts create|update --exact-actor-ids/--fold-actor-ids`: a
threshold grouped by actor compares actor ids as recorded, or as they read
(ADR 0110). The command line had no flag for it, though `alerts show`
printed it, and `update --group-by ip` of a rule that set it was refused by
the API (exact ids apply only per actor). Run in process against a real
server."""

from __future__ import annotations

from sealtrail import AuditClient, build_alert_rule, build_filter
from sealtrail.v1 import alerting_pb2
from tests.alerts_cli import alerts_cli
from tests.conftest import ServerThread


def _rule(client: AuditClient, rule_id: str) -> alerting_pb2.AlertRule:
    [rule] = [one for one in client.list_alert_rules() if one.id == rule_id]
    return rule


def test_exact_actor_ids_are_set_kept_and_cleared_from_the_command_line(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    cli = alerts_cli(server, tenant)

    code, output = cli(
        "create", "key misuse", "--kind", "threshold", "--action", "api_key.use",
        "--count", "5", "--window", "60", "--group-by", "actor", "--exact-actor-ids",
    )  # fmt: skip
    assert code == 0, output
    rule_id = output.strip()
    assert _rule(client, rule_id).threshold.exact_actor_ids
    code, listed = cli()
    assert "threshold: 5 in 1m by actor (ids compared exactly)" in listed, listed
    # By default, and said so: folded.
    code, output = cli(
        "create", "logins", "--kind", "threshold", "--action", "user.login", "--count", "5",
        "--window", "60", "--group-by", "actor",
    )  # fmt: skip
    assert code == 0, output
    assert not _rule(client, output.strip()).threshold.exact_actor_ids

    # Only with a threshold grouped by actor: refused before anything is made.
    for refused in (
        ["--kind", "threshold", "--count", "5", "--window", "60", "--group-by", "ip"],
        ["--kind", "threshold", "--count", "5", "--window", "60"],
        ["--kind", "match"],
    ):
        code, output = cli("create", "x", *refused, "--action", "a.b", "--exact-actor-ids")
        assert code == 2 and "--exact-actor-ids" in output and "actor" in output, output
    assert len(client.list_alert_rules()) == 2

    # Kept by an update that does not name it; the mask names only what is given.
    assert cli("update", rule_id, "--count", "9") == (0, f"{rule_id} updated\n")
    kept = _rule(client, rule_id)
    assert kept.threshold.count == 9 and kept.threshold.exact_actor_ids
    assert cli("update", rule_id, "--fold-actor-ids")[0] == 0
    folded = _rule(client, rule_id)
    assert not folded.threshold.exact_actor_ids and folded.threshold.count == 9
    assert cli("update", rule_id, "--exact-actor-ids", "--name", "key misuse 2")[0] == 0
    exact = _rule(client, rule_id)
    assert exact.threshold.exact_actor_ids and exact.name == "key misuse 2"

    # Grouped otherwise, exact ids no longer apply: dropped with the grouping,
    # not refused; asked for with it, refused by name.
    code, output = cli("update", rule_id, "--group-by", "ip", "--exact-actor-ids")
    assert code == 2 and "--exact-actor-ids" in output, output
    assert _rule(client, rule_id).threshold.exact_actor_ids
    code, output = cli("update", rule_id, "--group-by", "ip")
    assert code == 0, output
    by_ip = _rule(client, rule_id)
    assert by_ip.threshold.group_by == alerting_pb2.ALERT_GROUP_BY_IP
    assert not by_ip.threshold.exact_actor_ids
    code, output = cli("update", rule_id, "--exact-actor-ids")
    assert code == 2 and "grouped by actor" in output, output
    code, output = cli("update", rule_id, "--group-by", "actor", "--exact-actor-ids")
    assert code == 0, output
    assert _rule(client, rule_id).threshold.exact_actor_ids

    match_id = client.create_alert_rule(
        build_alert_rule("keys", "match", filter=build_filter(actions="api_key.create"))
    ).rule.id
    code, output = cli("update", match_id, "--fold-actor-ids")
    assert code == 2 and "--fold-actor-ids: only with a threshold or spike rule" in output, output

    code, helped = cli("update", "--help")
    assert "--exact-actor-ids / --fold-actor-ids" in helped, helped
    code, helped = cli("create", "--help")
    assert "--exact-actor-ids / --fold-actor-ids" in helped, helped


def test_fold_actor_ids_with_another_grouping_is_refused_naming_both_options(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    """Folding applies only to a threshold grouped by actor, as exact ids do:
    `--fold-actor-ids` with `--group-by ip` or no grouping was taken and did
    nothing (the flag said ids are compared as they read; none are compared)."""
    cli = alerts_cli(server, tenant)
    threshold = ["--kind", "threshold", "--action", "a.b", "--count", "5", "--window", "60"]
    for grouping, said in ((["--group-by", "ip"], "--group-by ip"), ([], "no --group-by")):
        code, output = cli("create", "x", *threshold, *grouping, "--fold-actor-ids")
        assert code == 2, output
        assert "--fold-actor-ids" in output and said in output, output
        assert "--group-by actor" in output, output
    assert client.list_alert_rules() == []

    code, output = cli("create", "by actor", *threshold, "--group-by", "actor")
    assert code == 0, output
    by_actor = output.strip()
    code, output = cli("create", "by ip", *threshold, "--group-by", "ip")
    assert code == 0, output
    by_ip = output.strip()
    for rule_id, options, said in (
        (by_actor, ["--group-by", "ip", "--fold-actor-ids"], "--group-by ip"),
        (by_actor, ["--group-by", "none", "--fold-actor-ids"], "--group-by none"),
        (by_ip, ["--fold-actor-ids"], "grouped by ip"),
    ):
        before = _rule(client, rule_id)
        code, output = cli("update", rule_id, *options)
        assert code == 2, output
        assert "--fold-actor-ids" in output and said in output, output
        assert "--group-by actor" in output, output
        assert _rule(client, rule_id) == before
    # With the grouping it applies to, taken.
    code, output = cli("update", by_ip, "--group-by", "actor", "--fold-actor-ids")
    assert code == 0, output
    assert _rule(client, by_ip).threshold.group_by == alerting_pb2.ALERT_GROUP_BY_ACTOR
