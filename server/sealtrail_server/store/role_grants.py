"""What the migrations (migrations/*.sql) grant the service's two roles, as
the health probe checks it (store/database.py, `_PROBE`): a grant revoked from
either role by a DBA (`REVOKE INSERT ON events FROM sealtrail_system`) failed
every call that needed it while health said SERVING (helper-386).

One list, kept beside the migrations rather than read from the catalog at
run time: the catalog holds the grants as they are now, not as the migrations
made them, so it could not tell one revoked. It cannot drift silently either:
tests/integration/test_role_grants.py migrates a database of its own and
fails if a migration grants either role anything not listed here, or this
lists what no migration grants. A migration that grants or revokes for
either role changes this list with it.

Each role maps its relations (tables and views) to their privileges:
`"SELECT"`, or `"UPDATE (a, b)"` for a privilege on those columns alone; and
its functions, named `"function f(argument types)"` as PostgreSQL prints a
`regprocedure`, to `"EXECUTE"`."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

SERVICE_ROLE: Final = "sealtrail_service"
SYSTEM_ROLE: Final = "sealtrail_system"
# How a function's name begins in ROLE_GRANTS, beside the relations.
FUNCTION: Final = "function "

ROLE_GRANTS: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = {
    SERVICE_ROLE: {
        "action_catalog": (
            "SELECT",
            "INSERT",
            "DELETE",
            "UPDATE (description, updated_at, updated_by, category)",
        ),
        "alert_cursors": ("SELECT", "INSERT"),
        "alert_known_countries": ("SELECT", "DELETE"),
        "alert_known_ips": ("SELECT", "DELETE"),
        "alert_rule_tombstones": ("SELECT", "INSERT", "DELETE"),
        "alert_rule_window_groups": ("SELECT", "DELETE"),
        "alert_rule_windows": ("SELECT", "DELETE"),
        "alert_rules": (
            "SELECT",
            "INSERT",
            "DELETE",
            "UPDATE (name, condition, severity, sink_ids, disabled, start_seq, updated_at)",
        ),
        "api_tokens": ("SELECT", "INSERT", "UPDATE (revoked_at)"),
        "chain_heads": ("SELECT",),
        "checkpoints": ("SELECT",),
        "checkpoints_refused": ("SELECT",),
        "console_sessions": (
            "SELECT",
            "INSERT",
            "DELETE",
            "UPDATE (confirmed_at, next_check_at, failures, sealed)",
        ),
        "console_sign_ins": ("SELECT", "INSERT", "DELETE"),
        "deployment_sink_starts": ("SELECT", "DELETE"),
        "events": ("SELECT",),
        "retention_pending_purges": ("SELECT",),
        "retention_policies": (
            "SELECT",
            "INSERT",
            "UPDATE (default_days, rules, policy_updated_at, legal_hold, legal_hold_reason,"
            " legal_hold_updated_at, max_days, pending_default_days, pending_rules,"
            " pending_effective_at)",
        ),
        "schema_migrations": ("SELECT",),
        "signing_keys": ("SELECT",),
        "sink_dead_letters": ("SELECT", "DELETE"),
        "sink_replays": ("SELECT", "INSERT", "DELETE"),
        "sinks": (
            "SELECT",
            "INSERT",
            "DELETE",
            "UPDATE (name, kind, format, filter, destination, paused, updated_at,"
            " consecutive_failures, next_attempt_at, deployment_revision)",
        ),
        "tenant_erasures": ("SELECT",),
        "tenant_settings": (
            "SELECT",
            "INSERT",
            "UPDATE (redaction_mode, updated_at, strict_actions, personal_data_fields,"
            " ip_recording)",
        ),
        "tree_nodes": ("SELECT",),
    },
    SYSTEM_ROLE: {
        "alert_cursors": ("SELECT", "UPDATE (cursor_seq, lease_owner, lease_until)"),
        "alert_known_countries": ("SELECT", "INSERT", "UPDATE (last_seen_at)"),
        "alert_known_ips": ("SELECT", "INSERT", "UPDATE (last_seen_at)"),
        "alert_rule_tombstones": ("SELECT", "UPDATE (counted_alert_seq)"),
        "alert_rule_window_groups": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "alert_rule_windows": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "alert_rules": ("SELECT", "UPDATE (fired, last_fired_at, counted_alert_seq)"),
        "api_tokens": ("SELECT", "UPDATE (last_used_at)"),
        "chain_heads": ("SELECT", "INSERT", "UPDATE (tree_size, root_hash, frontier, updated_at)"),
        "checkpoints": ("SELECT", "INSERT"),
        "checkpoints_refused": ("SELECT",),
        "deployment_sinks": ("SELECT", "DELETE"),
        "events": ("SELECT", "INSERT"),
        # The signer's move of a forged checkpoint row (migration 0067, ADR 0159).
        f"{FUNCTION}sealtrail_refuse_checkpoint(text,bigint,bytea,text,text)": ("EXECUTE",),
        "redaction_key_fingerprint": ("SELECT",),
        "retention_policies": ("SELECT",),
        "schema_migrations": ("SELECT",),
        "signing_keys": ("SELECT", "INSERT"),
        "sink_dead_letters": ("SELECT", "INSERT", "DELETE"),
        "sink_replays": ("SELECT", "INSERT", "DELETE", "UPDATE (cursor_seq)"),
        "sinks": (
            "SELECT",
            "UPDATE (cursor_seq, delivered_events, last_delivery_at, last_error, last_error_at,"
            " consecutive_failures, next_attempt_at, lease_owner, lease_until)",
        ),
        "tenant_erasures": ("SELECT",),
        "tenant_settings": ("SELECT",),
        "tree_nodes": ("SELECT", "INSERT"),
    },
}

_PRIVILEGE: Final = re.compile(r"([A-Z]+)(?: \(([a-z0-9_, ]+)\))?")


@dataclass(frozen=True, order=True)
class Grant:
    """One privilege of one role: on a relation whole, or on one of its
    columns (`column`)."""

    role: str
    relation: str
    column: str | None
    privilege: str

    def __str__(self) -> str:
        on = self.relation if self.column is None else f"{self.relation} ({self.column})"
        return f"{self.privilege} on {on}"


def grants(listed: Mapping[str, Mapping[str, tuple[str, ...]]] = ROLE_GRANTS) -> Iterator[Grant]:
    """Each grant `listed` (ROLE_GRANTS) holds, one privilege and column at a time."""
    for role, relations in listed.items():
        for relation, privileges in relations.items():
            for written in privileges:
                matched = _PRIVILEGE.fullmatch(written)
                if matched is None:
                    raise ValueError(f"{role} on {relation}: not a privilege: {written!r}")
                privilege, columns = matched.groups()
                if columns is None:
                    yield Grant(role, relation, None, privilege)
                    continue
                for column in columns.split(","):
                    yield Grant(role, relation, column.strip(), privilege)
