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
never works as the owner, ADR 0013) and what each of its policies must be:
its command, permissive or not, the roles it applies to and its USING and
WITH CHECK expressions. A policy rewritten in place (`ALTER POLICY
tenant_isolation ON events USING (true)`, or `TO PUBLIC`) showed every tenant
every tenant's rows while health said SERVING, for the probe asked only that
a policy of its name existed; and so did a policy added beside it (`CREATE
POLICY open ON events USING (true)`: permissive policies are OR-ed). The probe
now compares each listed policy whole, and finds any policy on a listed
table that the list does not name (helper-402).

The expressions are listed as PostgreSQL prints them (`pg_get_expr`, as
`pg_policies` shows them) after the migrations, and compared in their
`normal_form`: without whitespace, and without one pair of parentheses around
the whole, outside quoted literals and identifiers. That is what the printing
of an expression may vary in (spacing, PostgreSQL's "pretty" printing, which
leaves the outer parentheses off); it keeps every token and its order, and
neither whitespace between tokens nor parentheses around the whole change
what an expression means. Compared so, the list does not depend on one major
version's layout, where the exact text would have; and the test that holds
the list to a freshly migrated database compares in the same form. An
expression of another meaning, however written, differs: the probe fails
closed (NOT_SERVING) rather than open. (The probe prints an expression only
until it has found its tree as listed: store/database.py, `_PROBE`.)"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from psycopg import sql

from .role_grants import SERVICE_ROLE


@dataclass(frozen=True, order=True)
class Policy:
    """What a policy the migrations create must be: its `name`, the
    `command` it applies to (ALL, SELECT, INSERT, UPDATE or DELETE, as
    `pg_policies.cmd` says it), whether it is `permissive` (OR-ed with the
    table's other permissive policies) or restrictive, the `roles` it applies
    to (by name, sorted; `public` for PUBLIC), and its `using` and `check`
    (WITH CHECK) expressions as `pg_get_expr` prints them (None: none)."""

    name: str
    command: str
    permissive: bool
    roles: tuple[str, ...]
    using: str | None
    check: str | None


@dataclass(frozen=True)
class TableSecurity:
    """A table's row-level security: `forced` or not, and its `policies`."""

    forced: bool
    policies: tuple[Policy, ...]


# What sealtrail_isolate_by_tenant makes each tenant's table's one policy
# (0007, whose USING 0012 rewrote for tables made before it, and whose
# function 0012 replaced for tables made after): the service's rows of the
# tenant its connection names, for every command, as the service only.
_OWN_TENANT: Final = "(tenant_id = current_setting('sealtrail.tenant'::text, true))"
TENANT_ISOLATION: Final = Policy(
    name="tenant_isolation",
    command="ALL",
    permissive=True,
    roles=(SERVICE_ROLE,),
    using=_OWN_TENANT,
    check=_OWN_TENANT,
)
_BY_TENANT: Final = TableSecurity(forced=False, policies=(TENANT_ISOLATION,))

ROW_SECURITY: Final[Mapping[str, TableSecurity]] = {
    "action_catalog": _BY_TENANT,
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
    "checkpoints_refused": _BY_TENANT,
    "console_sessions": _BY_TENANT,
    "console_sign_ins": _BY_TENANT,
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


def normal_form(expression: sql.Composable) -> sql.Composed:
    """`expression` (SQL text, NULL passes through) in its normal form, as
    the probe compares a policy's: its whitespace, and one pair of
    parentheses around the whole, left out, outside quoted literals
    ('...') and identifiers ("...")."""
    return sql.SQL(
        "regexp_replace(regexp_replace({}, {}, '\\1', 'g'), '^\\((.*)\\)$', '\\1')"
    ).format(expression, sql.Literal(_LAYOUT))


# Whitespace outside quotes; the quoted (group 1) is put back as it was.
_LAYOUT: Final = "('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")|\\s+"


@dataclass(frozen=True, order=True)
class Safeguard:
    """One thing the probe checks of a table's row security: when `policy`
    is None, that it is enabled (and forced, if `forced`) and that the table
    has no policy but those listed (`named`); else that the policy is as
    listed."""

    relation: str
    policy: Policy | None
    forced: bool = False
    named: tuple[str, ...] = ()


# What the probe finds of a safeguard (`Breach.what`).
DISABLED: Final = "disabled"
UNLISTED: Final = "unlisted"
MISSING: Final = "missing"
COMMAND: Final = "command"
PERMISSIVE: Final = "permissive"
ROLES: Final = "roles"
USING: Final = "using"
CHECK: Final = "check"


@dataclass(frozen=True, order=True)
class Breach:
    """One way a table's row security differs from `safeguard`: `what`
    (DISABLED, UNLISTED, MISSING, COMMAND, ...), and what the table has
    instead (`found`: the unlisted policy's name, the policy's command, its
    roles, its expression as printed; None: none)."""

    safeguard: Safeguard
    what: str
    found: str | None = None

    def __str__(self) -> str:
        relation, policy = self.safeguard.relation, self.safeguard.policy
        if policy is None:
            if self.what == UNLISTED:
                return f"policy {self.found} on {relation} is not one the migrations make"
            if self.safeguard.forced:
                return f"row-level security is disabled or no longer forced on {relation}"
            return f"row-level security is disabled on {relation}"
        its = f"policy {policy.name} on {relation}"
        if self.what == MISSING:
            return f"{its} no longer exists"
        if self.what == COMMAND:
            return f"{its} is for {self.found}, not {policy.command}"
        if self.what == PERMISSIVE:
            return (
                f"{its} is PERMISSIVE, not RESTRICTIVE"
                if not policy.permissive
                else f"{its} is RESTRICTIVE, not PERMISSIVE"
            )
        if self.what == ROLES:
            return f"{its} applies to {self.found}, not {', '.join(policy.roles)}"
        clause, listed = (
            ("USING", policy.using) if self.what == USING else ("WITH CHECK", policy.check)
        )
        return f"{its} has {clause} {self.found or 'none'}, not {listed or 'none'}"


def safeguards(listed: Mapping[str, TableSecurity] = ROW_SECURITY) -> Iterator[Safeguard]:
    """Each check `listed` (ROW_SECURITY) makes: the table's, then its policies'."""
    for relation, security in listed.items():
        named = tuple(p.name for p in security.policies)
        yield Safeguard(relation, None, security.forced, named)
        for policy in security.policies:
            yield Safeguard(relation, policy)
