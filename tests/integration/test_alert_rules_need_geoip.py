"""A rule that reads countries on a server with no GeoIP database
(SEALTRAIL_GEOIP_DB unset, the default): saved, for one may be configured
later, but its answer says why it sees only the countries callers send."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from sealtrail import AuditClient, build_alert_rule, build_filter
from sealtrail import _cli as cli
from tests.conftest import ServerThread
from tests.integration.test_geoip import geo_server  # noqa: F401 (a fixture)

NO_GEOIP = "this server has no GeoIP database (SEALTRAIL_GEOIP_DB)"


@pytest.fixture
def admin_of(tenant: str) -> Iterator[Any]:
    made: list[AuditClient] = []

    def make(server: ServerThread) -> AuditClient:
        made.append(AuditClient(server.target, token=server.token(tenant)))
        return made[-1]

    yield make
    for client in made:
        for rule in client.list_alert_rules():
            client.delete_alert_rule(rule.id)
        client.close()


def test_a_rule_reading_countries_is_told_the_server_locates_none(
    server: ServerThread, admin_of: Any, tenant: str
) -> None:
    """A new-country rule, on a server without GeoIP, never fired for an
    event sent with an address alone, nor for Sealtrail's own records, and
    nothing said so: now its answers (create, update, list) do."""
    admin = admin_of(server)
    created = admin.create_alert_rule(build_alert_rule("abroad", "new_country")).rule
    [warning] = created.warnings
    assert warning.startswith(NO_GEOIP) and "only countries callers send" in warning
    by_country = build_alert_rule(
        "from France", "match", filter=build_filter(actions="user.login", country="FR")
    )
    assert admin.create_alert_rule(by_country).rule.warnings == [warning]
    plain = build_alert_rule("logins", "match", filter=build_filter(actions="user.login"))
    plain_rule = admin.create_alert_rule(plain).rule
    assert list(plain_rule.warnings) == []
    listed = {rule.name: list(rule.warnings) for rule in admin.list_alert_rules()}
    assert listed == {"abroad": [warning], "from France": [warning], "logins": []}
    plain_rule.match.filter.CopyFrom(build_filter(actions="user.login", countries=["FR", "DE"]))
    updated = admin.update_alert_rule(plain_rule, fields=["match"]).rule
    assert list(updated.warnings) == [warning]

    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}

    def sealtrail(*args: str) -> Any:
        return CliRunner().invoke(cli.main, ["alerts", *args], env=env)

    made = sealtrail("create", "abroad again", "--kind", "new_country")
    assert made.exit_code == 0, made.output
    assert made.stdout.count("\n") == 1  # the id alone, for a script to read
    assert f"warning: {warning}" in made.stderr
    listing = sealtrail("list")
    assert listing.exit_code == 0 and NO_GEOIP not in listing.stdout
    assert listing.stderr.count(f": {warning}") == 4, listing.stderr
    renamed = sealtrail("update", updated.id, "--name", "logins abroad")
    assert renamed.exit_code == 0 and f"warning: {warning}" in renamed.stderr


def test_a_server_with_a_geoip_database_warns_of_nothing(
    geo_server: ServerThread,  # noqa: F811 (a fixture)
    admin_of: Any,
) -> None:
    admin = admin_of(geo_server)
    rule = admin.create_alert_rule(build_alert_rule("abroad", "new_country")).rule
    assert list(rule.warnings) == []
    assert [list(r.warnings) for r in admin.list_alert_rules()] == [[]]
