"""`sealtrail alerts update --etag` changes the rule only if it is still as
`sealtrail alerts show` showed it with that etag, as `sinks update --etag`
does for a sink: a change another admin made since is not overwritten
unseen. Run in process against a real server."""

from __future__ import annotations

import json

from sealtrail import AuditClient, build_alert_rule, build_filter
from tests.alerts_cli import alerts_cli
from tests.conftest import ServerThread


def test_an_alert_rule_is_updated_only_if_unchanged_since_its_etag_was_read(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    cli = alerts_cli(server, tenant)

    rule = build_alert_rule(
        "logins", "threshold", filter=build_filter(actions="user.login"), count=5,
        window_seconds=60,
    )  # fmt: skip
    rule_id = client.create_alert_rule(rule).rule.id
    code, shown = cli("show", rule_id)
    assert code == 0, shown
    etag = json.loads(shown)["etag"]
    assert cli("update", rule_id, "--name", "logins 2", "--etag", etag) == (
        0,
        f"{rule_id} updated\n",
    )
    # Another admin's change since that etag was read is kept, whatever is changed.
    for change in (["--name", "logins 3"], ["--count", "9"], ["--action", "user.*"]):
        code, output = cli("update", rule_id, *change, "--etag", etag)
        assert code == 1, output
        assert "changed since that etag was read" in output, output
        assert "sealtrail alerts show" in output, output
    (kept,) = client.list_alert_rules()
    assert kept.name == "logins 2" and kept.threshold.count == 5
    assert list(kept.threshold.filter.actions) == ["user.login"]
    code, output = cli("update", rule_id, "--count", "9", "--etag", kept.etag)
    assert code == 0, output
    (changed,) = client.list_alert_rules()
    assert changed.threshold.count == 9 and changed.name == "logins 2"
    assert changed.WhichOneof("condition") == "threshold"
