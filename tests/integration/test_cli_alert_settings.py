"""`sealtrail alerts create` refuses a setting of another kind of rule than
--kind, naming it, as build_alert_rule does: `--kind match --count 5`
created a rule on every matching event, the count dropped. Its own defaults
(--hours 9-18, --days 1,...,5, of off_hours) are no such setting. Run in
process against a real server."""

from __future__ import annotations

from sealtrail import AuditClient
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
