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
        (night, ["--group-by", "none"], "--group-by", "threshold or spike"),
        (night, ["--window", "60"], "--window", "threshold, spike or absence"),
        (night, ["--fold-actor-ids"], "--fold-actor-ids", "threshold or spike"),
        (burst, ["--days", "1,2,3"], "--days", "off_hours"),
        (burst, ["--hours", "8-17"], "--hours", "off_hours"),
        (burst, ["--time-zone", "UTC"], "--time-zone", "off_hours"),
        (seen, ["--count", "3"], "--count", "threshold"),
        (seen, ["--exact-actor-ids"], "--exact-actor-ids", "threshold or spike"),
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


def test_window_is_a_duration_as_the_other_lengths_of_time_are(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    """`alerts create --window` and `alerts update --window` took whole
    seconds alone, where the CLI's other lengths of time are durations
    (`--since 24h`, `tokens --unused-for 30d`): `--window 10m` was refused as
    "not a valid integer". They take durations, and a number alone is still
    seconds. One refused is named as typed, with the forms it takes."""
    cli = alerts_cli(server, tenant)
    threshold = ["--kind", "threshold", "--action", "doc.read", "--count", "5"]
    spike = ["--kind", "spike", "--action", "doc.read", "--baseline-windows", "24",
             "--factor", "5", "--min-count", "20"]  # fmt: skip
    for name, given in (
        ("ten minutes", [*threshold, "--window", "10m"]),
        ("an hour", [*spike, "--window", "1h"]),
        ("seconds", [*threshold, "--window", "300"]),
    ):
        code, output = cli("create", name, *given)
        assert code == 0, output
    rules = {rule.name: rule for rule in client.list_alert_rules()}
    assert rules["ten minutes"].threshold.window_seconds == 600
    assert rules["an hour"].spike.window_seconds == 3600
    assert rules["seconds"].threshold.window_seconds == 300
    code, output = cli("update", rules["ten minutes"].id, "--window", "2h")
    assert code == 0, output
    code, output = cli("update", rules["an hour"].id, "--window", "90")
    assert code == 0, output
    rules = {rule.name: rule for rule in client.list_alert_rules()}
    assert rules["ten minutes"].threshold.window_seconds == 7200
    assert rules["an hour"].spike.window_seconds == 90
    # Listed as typed, in the largest unit that holds each whole (`--window 300`: 5m).
    code, listed = cli()
    assert code == 0, listed
    assert "threshold: 5 in 2h" in listed and "threshold: 5 in 5m" in listed, listed
    assert "windows of 90s, at least 20" in listed, listed
    for command in (["create", "x", *threshold], ["update", rules["seconds"].id]):
        for typed in ("10 minutes", "1.5h", "-5m", "٣٠"):
            code, output = cli(*command, "--window", typed)
            assert code == 2, output
            assert "Invalid value for '--window'" in output and "like 10m" in output, output
        code, output = cli(*command, "--window", "8d")
        assert code == 2 and "--window 8d: must be 1 to 604,800 (7 days)" in output, output
    assert {rule.name: rule for rule in client.list_alert_rules()} == rules  # none made or changed
