"""`sealtrail alerts create` refuses a setting of another kind of rule than
--kind, naming it, as build_alert_rule does: `--kind match --count 5`
created a rule on every matching event, the count dropped. Its own defaults
(--hours 9-18, --days 1,...,5, of off_hours) are no such setting. Run in
process against a real server."""

from __future__ import annotations

from sealtrail import AuditClient, build_alert_rule, build_filter
from tests.alerts_cli import alerts_cli
from tests.conftest import ServerThread


def test_a_setting_of_another_kind_is_refused_and_the_defaults_are_not(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    cli = alerts_cli(server, tenant)
    for refused, named, applies_to in (
        (["--kind", "match", "--count", "5"], "--count", "threshold"),
        (["--kind", "new_ip", "--window", "60"], "--window", "threshold"),
        (["--kind", "off_hours", "--group-by", "ip"], "--group-by", "threshold"),
        (["--kind", "threshold", "--count", "5", "--window", "60", "--time-zone", "UTC"],
         "--time-zone", "off_hours"),
        (["--kind", "match", "--hours", "8-17"], "--hours", "off_hours"),
        (["--kind", "new_country", "--days", "1,2"], "--days", "off_hours"),
    ):  # fmt: skip
        code, output = cli("create", "x", *refused, "--action", "a.b")
        assert code == 2 and named in output and f"--kind {applies_to}" in output, output
    assert client.list_alert_rules() == []
    code, output = cli("create", "logins", "--kind", "match", "--action", "user.login")
    assert code == 0, output
    [rule] = client.list_alert_rules()
    assert rule.id == output.strip() and rule.WhichOneof("condition") == "match"


def test_update_names_the_option_of_another_kind_of_rule(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    """`alerts update` refused another kind's setting in the API's words,
    `a off_hours rule takes no group_by` (or working_days, window_seconds),
    where create names the option typed: it names it too, and the kind it
    applies to. The rule is left as it was."""
    cli = alerts_cli(server, tenant)
    night = client.create_alert_rule(
        build_alert_rule("night", "off_hours", filter=build_filter(actions="doc.read"),
                         time_zone="UTC", start_hour=8, end_hour=18, working_days=[1, 2])
    ).rule  # fmt: skip
    burst = client.create_alert_rule(
        build_alert_rule("burst", "threshold", filter=build_filter(actions="doc.read"),
                         count=5, window_seconds=60)
    ).rule  # fmt: skip
    seen = client.create_alert_rule(
        build_alert_rule("seen", "new_ip", filter=build_filter(actions="user.login"))
    ).rule
    for rule, refused, named, applies_to in (
        (night, ["--group-by", "none"], "--group-by", "threshold"),
        (night, ["--window", "60"], "--window", "threshold or spike"),
        (night, ["--fold-actor-ids"], "--fold-actor-ids", "threshold"),
        (burst, ["--days", "1,2,3"], "--days", "off_hours"),
        (burst, ["--hours", "8-17"], "--hours", "off_hours"),
        (burst, ["--time-zone", "UTC"], "--time-zone", "off_hours"),
        (seen, ["--count", "3"], "--count", "threshold"),
        (seen, ["--exact-actor-ids"], "--exact-actor-ids", "threshold"),
    ):
        code, output = cli("update", rule.id, *refused)
        kind = rule.WhichOneof("condition")
        assert code == 2 and f"Invalid value for {named}: only with " in output, output
        assert f"{_a(applies_to)} rule ({rule.id} is {_a(str(kind))} rule)" in output, output
        for field in ("group_by", "window_seconds", "exact_actor_ids", "working_days", "takes no"):
            assert field not in output, output
    assert list(client.list_alert_rules()) == [night, burst, seen]


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
