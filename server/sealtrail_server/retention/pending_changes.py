"""A waiting retention change taking effect (ADR 0163): once its delay has
passed, the purge job's pass makes it the policy in force before it purges,
recorded in the tenant's log as `retention.policy_change_applied`; the
deployment's operator may make it so before then (`sealtrail-server tenant
retention-apply`), recorded alike, as theirs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg

from sealtrail.tlog import RETENTION_ACTOR
from sealtrail.v1 import event_pb2

from ..api.audited import record_event, weakening_severity
from ..api.retention import describe, shortened_description, shortened_details
from ..domain.event import ChangeDraft
from ..domain.retention import RetentionPolicy
from ..domain.weakening import Shortening, retention_shortenings
from ..store.appender import Appender
from ..store.retention import StoredPolicy, apply_pending, policy_to_change

# The action of the record of a change taking effect.
CHANGE_APPLIED: Final = "retention.policy_change_applied"
# How long taking a change waits at most for a purge batch of its tenant.
_BATCH_WAIT_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """A pending change made the policy in force: what it replaced, what
    it keeps less long, and when it was due (`early`: before then, by the
    operator)."""

    tenant_id: str
    before: RetentionPolicy
    after: RetentionPolicy
    due_at: datetime
    shortened: list[Shortening]
    early: bool = False


# Records a change applied in its tenant's log (the record is the last step
# of the change's transaction: refused, the change is rolled back).
RecordApplied = Callable[[AppliedChange], Awaitable[None]]


async def apply_change(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    *,
    now: datetime,
    min_days: int,
    record: RecordApplied,
    early: bool = False,
) -> StoredPolicy | None:
    """The tenant's pending change applied, if one is due by `now` (or, with
    `early`, whenever it was due), and recorded, in one transaction of
    `conn`; the policy as it is now, or None if there was none to apply."""
    async with conn.transaction():
        before = await policy_to_change(conn, tenant_id, seconds=_BATCH_WAIT_SECONDS)
        pending = before.pending
        if pending is None or (pending.effective_at > now and not early):
            return None
        limits = before.limits(min_days=min_days)
        after = await apply_pending(conn, tenant_id, now=now)
        await record(
            AppliedChange(
                tenant_id,
                before.policy,
                pending.policy,
                pending.effective_at,
                retention_shortenings(before.policy.within(limits), pending.policy.within(limits)),
                early=early and pending.effective_at > now,
            )
        )
    return after


def applied_record(change: AppliedChange) -> dict[str, Any]:
    """What the record of `change` says beside who made it: a warning when
    it keeps any events less long (ADR 0066), naming them, and when it was
    due; the policy's values before and after."""
    what = (
        "Retention policy change applied early by the operator"
        if change.early
        else "Retention policy change took effect"
    )
    old, new = describe(change.before), describe(change.after)
    return {
        "action": CHANGE_APPLIED,
        "description": shortened_description(what, change.shortened),
        "details": {**shortened_details(change.shortened), "due_time": change.due_at.isoformat()},
        "category": event_pb2.CATEGORY_CONFIGURATION,
        "severity": weakening_severity(change.shortened),
        "resource_type": "retention_policy",
        "changes": [
            ChangeDraft(name, old[name], new[name]) for name in old if old[name] != new[name]
        ],
    }


def change_recorder(appender: Appender, clock: Callable[[], datetime]) -> RecordApplied:
    """What records a change the purge job applied (the Purger's
    `record_applied`), as retention's own, by its actor."""

    async def record(change: AppliedChange) -> None:
        await record_event(
            appender,
            change.tenant_id,
            actor_type=event_pb2.ACTOR_TYPE_SYSTEM,
            actor_id=RETENTION_ACTOR["id"],
            now=clock(),
            resource_id=change.tenant_id,
            **applied_record(change),
        )

    return record
