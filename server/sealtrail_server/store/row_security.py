"""The row-level security the migrations (migrations/*.sql) give the tenants'
tables, as the health probe checks it (store/database.py, `_PROBE`): row-level
security disabled on a tenant's table by hand (`ALTER TABLE events DISABLE ROW
LEVEL SECURITY`) showed every tenant every tenant's rows of it, and its policy
dropped (`DROP POLICY tenant_isolation ON api_tokens`) refused every row to
the service, while health said SERVING (helper-399).

One list, kept beside the migrations rather than read from the catalog at
run time, for the reason role_grants.py gives: the catalog holds the tables'
row security as it is now, so it cannot tell a table whose row security was
disabled from one that never had any. Nor is it read from the migrations'
text at start: what a table has is what every migration in turn left it
(0012 rewrote the policies 0007 made), which only running them tells.
tests/integration/test_row_security.py migrates a database of its own and
fails if a migration puts a table under row-level security (or forces it, or
creates a policy) that this does not list, or this lists what no migration
leaves. A migration that changes either changes this list with it.

Each table maps to whether the migrations force row-level security on it
(FORCE ROW LEVEL SECURITY, which binds its owner too; none do: the service
never works as the owner, ADR 0013) and the names of its policies."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class TableSecurity:
    """A table's row-level security: `forced` or not, and its `policies`' names."""

    forced: bool
    policies: tuple[str, ...]


# The one policy each tenant's table has: sealtrail_isolate_by_tenant (0007, 0012).
_BY_TENANT: Final = TableSecurity(forced=False, policies=("tenant_isolation",))

ROW_SECURITY: Final[Mapping[str, TableSecurity]] = {
    "alert_cursors": _BY_TENANT,
    "alert_known_countries": _BY_TENANT,
    "alert_known_ips": _BY_TENANT,
    "alert_rule_tombstones": _BY_TENANT,
    "alert_rule_window_groups": _BY_TENANT,
    "alert_rule_windows": _BY_TENANT,
    "alert_rules": _BY_TENANT,
    "api_tokens": _BY_TENANT,
    "chain_heads": _BY_TENANT,
    "checkpoints": _BY_TENANT,
    "deployment_sink_starts": _BY_TENANT,
    "events": _BY_TENANT,
    "retention_marks": _BY_TENANT,
    "retention_pending_purges": _BY_TENANT,
    "retention_policies": _BY_TENANT,
    "sink_dead_letters": _BY_TENANT,
    "sink_replays": _BY_TENANT,
    "sinks": _BY_TENANT,
    "tenant_erasures": _BY_TENANT,
    "tenant_settings": _BY_TENANT,
    "tree_nodes": _BY_TENANT,
}


@dataclass(frozen=True, order=True)
class Safeguard:
    """One thing the probe checks of a table's row security: that it is
    enabled (and forced, if `forced`) when `policy` is None, else that the
    policy of that name exists."""

    relation: str
    policy: str | None
    forced: bool = False

    def __str__(self) -> str:
        if self.policy is not None:
            return f"policy {self.policy} on {self.relation} no longer exists"
        if self.forced:
            return f"row-level security is disabled or no longer forced on {self.relation}"
        return f"row-level security is disabled on {self.relation}"


def safeguards(listed: Mapping[str, TableSecurity] = ROW_SECURITY) -> Iterator[Safeguard]:
    """Each check `listed` (ROW_SECURITY) makes: the table's, then its policies'."""
    for relation, security in listed.items():
        yield Safeguard(relation, None, security.forced)
        for policy in security.policies:
            yield Safeguard(relation, policy)
