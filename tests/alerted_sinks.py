"""The alerting walk of docs/alerting.md, shared by the tests of each sink
kind that takes alerts (chat, PagerDuty, email): a critical rule on role
changes routed to a sink, and a role change recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sealtrail import AuditClient, build_alert_rule, build_filter


@contextmanager
def a_role_change_alerted(client: AuditClient, sink_id: str, *, rule_name: str) -> Iterator[int]:
    """A critical match rule named `rule_name` on `member.role_changed`,
    routed to the sink `sink_id`, and a role change recorded (admin changing
    bob's role), then an event no rule alerts on: yields the change's seq.
    The rule is deleted after."""
    rule = client.create_alert_rule(
        build_alert_rule(
            rule_name,
            "match",
            filter=build_filter(actions="member.role_changed"),
            severity="critical",
            sink_ids=[sink_id],
        )
    ).rule
    try:
        trigger = client.record(
            action="member.role_changed", actor_id="admin", resource_id="bob"
        ).event.seq
        client.record(action="document.share", actor_id="u")  # no alert
        yield trigger
    finally:
        client.delete_alert_rule(rule.id)
