"""The admin RPCs of retention: read and replace a tenant's policy, place and
release its legal hold (each change recorded in the log before it applies),
and erase the tenant. A mixin of the servicer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import grpc
import psycopg

from sealtrail._words import counted
from sealtrail.v1 import event_pb2
from sealtrail.v1 import retention_pb2 as pb

from ..auth.tokens import Authenticator
from ..domain.access import Principal
from ..domain.errors import InvalidArgument, PermissionDenied
from ..domain.etags import require_etag
from ..domain.event import CATEGORIES, MAX_DESCRIPTION, ChangeDraft
from ..domain.retention import (
    PendingChange,
    RetentionLimits,
    RetentionPolicy,
    RuleDraft,
    hold_etag,
    policy_etag,
    purge_selections,
    validate_hold_reason,
    validate_policy,
)
from ..domain.weakening import Shortening, retention_shortenings
from ..retention.erasure import Eraser, Receipt
from ..store.appender import Appender
from ..store.changes import RETENTION_SUBJECT, Changes, refuse_if_erased
from ..store.database import Database
from ..store.long_reads import LongReads
from ..store.retention import (
    StoredPolicy,
    count_expired,
    policy_to_change,
    read_policy,
    write_hold,
    write_pending,
    write_policy,
)
from .audited import FilterDetails, record_access, weakening_details, weakening_severity
from .denials import Denials
from .guard import current_principal
from .integrity import checkpoint_message

Context = grpc.aio.ServicerContext[Any, Any]
# Events a policy's preview reads at most: enough to tell a change's size,
# and a bound on what one call reads, whatever its rules.
PREVIEW_READ_LIMIT: Final = 1_000_000
_CATEGORY_NUMBERS: Final = {name: number for number, name in CATEGORIES.items()}
# How long a policy or hold change waits at most for a purge batch of its
# tenant, with no deadline of its own; with one, until a second before it.
_BATCH_WAIT_SECONDS: Final = 60.0
# The shortenings a policy change's record lists at most (each ~80 bytes).
SHORTENINGS_RECORDED: Final = 100


def _batch_wait(context: Context) -> float:
    """How long a change may wait for a purge batch holding the policy. A
    batch can take long (a rule over a large log), and a fixed few seconds
    made a hold all but impossible while batches outlasted them (helper-87);
    nothing is recorded before the wait ends, so waiting costs only time."""
    remaining = context.time_remaining()
    if remaining is None:
        return _BATCH_WAIT_SECONDS
    return max(0.5, min(_BATCH_WAIT_SECONDS, remaining - 1.0))


def _policy_message(stored: StoredPolicy) -> pb.RetentionPolicy:
    message = _rules_message(stored.policy)
    message.etag = policy_etag(stored.policy, stored.updated_at, stored.pending)
    if stored.updated_at is not None:
        message.update_time.FromDatetime(stored.updated_at)
    return message


def _rules_message(policy: RetentionPolicy) -> pb.RetentionPolicy:
    message = pb.RetentionPolicy(default_days=policy.default_days)
    for rule in policy.rules:
        if rule.category is not None:
            message.rules.add(days=rule.days, category=_CATEGORY_NUMBERS[rule.category])
        else:
            message.rules.add(days=rule.days, action_prefix=f"{rule.action_prefix}*")
    return message


def _pending_message(
    stored: StoredPolicy, *, limits: RetentionLimits
) -> pb.PendingRetentionChange | None:
    """The change pending of `stored`, with what it keeps less long than
    the policy in force; None if there is none."""
    pending = stored.pending
    if pending is None:
        return None
    message = pb.PendingRetentionChange(policy=_rules_message(pending.policy))
    message.effective_time.FromDatetime(pending.effective_at)
    for cut in shortenings(stored.policy, pending.policy, limits=limits):
        message.shortened.add(
            events=cut.events, before_days=cut.before_days, after_days=cut.after_days
        )
    return message


def _hold_message(stored: StoredPolicy) -> pb.LegalHold:
    hold = stored.hold
    message = pb.LegalHold(
        on=hold.on, reason=hold.reason, etag=hold_etag(hold.on, hold.reason, hold.updated_at)
    )
    if hold.updated_at is not None:
        message.update_time.FromDatetime(hold.updated_at)
    return message


def shortenings(
    before: RetentionPolicy, after: RetentionPolicy, *, limits: RetentionLimits
) -> list[Shortening]:
    """The events `after` keeps less long than `before`, as the purge
    applies both within the operator's `limits` (the deployment's floor
    raises, the tenant's ceiling lowers, what a policy stored before them
    says; the same limit raised or lowered alike is no shorter for it). A
    preview lists them as the change's record will."""
    return retention_shortenings(before.within(limits), after.within(limits))


def _limits_message(limits: RetentionLimits) -> pb.RetentionLimits:
    return pb.RetentionLimits(min_days=limits.min_days, max_days=limits.max_days or 0)


def _validated(message: pb.RetentionPolicy, *, limits: RetentionLimits) -> RetentionPolicy:
    return validate_policy(
        message.default_days,
        [
            RuleDraft(days=r.days, category=r.category, action_prefix=r.action_prefix)
            for r in message.rules
        ],
        limits=limits,
    )


def shortened_details(shortened: list[Shortening]) -> dict[str, Any]:
    """The details of a change that shortens retention (of the policy, or of
    the operator's ceiling on it): why it is a
    warning, and which events it keeps less long (the first
    SHORTENINGS_RECORDED; `shortened_more` counts the rest, for a policy of a
    hundred rules must still fit its record)."""
    if not shortened:
        return {}
    details = weakening_details(["retention_shortened"])
    details["shortened"] = [s.as_json() for s in shortened[:SHORTENINGS_RECORDED]]
    if len(shortened) > SHORTENINGS_RECORDED:
        details["shortened_more"] = len(shortened) - SHORTENINGS_RECORDED
    return details


def shortened_description(what: str, shortened: list[Shortening]) -> str:
    """The description of a change of `what` ("Retention policy changed"):
    which events it keeps less long (the first three; the details list
    more), if any."""
    if not shortened:
        return what
    cuts = ", ".join(
        f"{s.events} from {_period(s.before_days)} to {_period(s.after_days)}"
        for s in shortened[:3]
    )
    more = f" and {len(shortened) - 3} more" if len(shortened) > 3 else ""
    return f"{what}, shortening {cuts}{more}"


def _period(days: int) -> str:
    return "forever" if days == 0 else counted(days, "day")


def hold_placed_description(shown_reason: str, *, replacing: bool = False) -> str:
    """The description of a hold's placement, naming its reason as the
    tenant's events show it: cut to what a description holds (MAX_DESCRIPTION,
    ending in `…`) where redaction lengthened it past that, for a reason the
    API takes (1,024 characters) grows in HMAC mode (an 8-character password
    written as 76), and the placement was refused for its own record
    (helper-308); its details hold the reason whole. `replacing`: the hold
    was on already, with another reason, which is what the placement changes."""
    what = "Legal hold reason changed" if replacing else "Legal hold placed"
    description = f"{what}: {shown_reason}"
    if len(description) <= MAX_DESCRIPTION:
        return description
    return description[: MAX_DESCRIPTION - 1] + "…"


def _pending_value(pending: PendingChange) -> dict[str, Any]:
    """A change pending as a record's change values show it."""
    return {**describe(pending.policy), "effective_time": pending.effective_at.isoformat()}


def describe(policy: RetentionPolicy) -> dict[str, Any]:
    """The policy as an event's details and change values show it."""
    return {
        "default_days": policy.default_days,
        "rules": [rule.as_json() for rule in policy.rules],
    }


class RetentionRpcs:
    _db: Database
    _changes: Changes
    _appender: Appender
    _clock: Callable[[], datetime]
    _eraser: Eraser
    _authenticator: Authenticator | None
    _filter_details: FilterDetails
    _long_reads: LongReads
    # The deployment's retention floor in days (SEALTRAIL_RETENTION_MIN_DAYS).
    _retention_min_days: int
    # How long a change that keeps any events less long waits
    # (SEALTRAIL_RETENTION_SHORTENING_DELAY; 0: none, ADR 0163).
    _retention_shortening_delay: timedelta
    # Who erases tenants: "admin" (this API) or "operator" (SEALTRAIL_TENANT_ERASURE).
    _tenant_erasure: str
    # Who releases legal holds: "admin" or "operator" (SEALTRAIL_LEGAL_HOLD_RELEASE).
    _legal_hold_release: str
    # Records the refusals of what the operator keeps, as the guard's (ADR 0060).
    _denials: Denials | None

    async def _refused_to_tokens(self, principal: Principal, rpc: str) -> None:
        """An admin token's attempt at what the operator keeps (a stolen
        token's first move, likely) is recorded for alert rules to see."""
        if self._denials is not None:
            await self._denials.refused(principal, rpc=rpc, reason="operator")

    async def GetRetentionPolicy(
        self, request: pb.GetRetentionPolicyRequest, context: Context
    ) -> pb.GetRetentionPolicyResponse:
        tenant_id = current_principal().tenant_id
        async with self._db.connection(tenant_id) as conn:
            stored = await read_policy(conn, tenant_id)
            await refuse_if_erased(conn, tenant_id)  # not the defaults of no one
        limits = self._limits(stored)
        return pb.GetRetentionPolicyResponse(
            policy=_policy_message(stored),
            legal_hold=_hold_message(stored),
            limits=_limits_message(limits),
            pending_change=_pending_message(stored, limits=limits),
        )

    def _limits(self, stored: StoredPolicy | None = None) -> RetentionLimits:
        """What the operator allows the tenant whose policy is `stored`: the
        deployment's floor, and its own ceiling (none, without `stored`)."""
        if stored is None:
            return RetentionLimits(self._retention_min_days)
        return stored.limits(min_days=self._retention_min_days)

    async def UpdateRetentionPolicy(
        self, request: pb.UpdateRetentionPolicyRequest, context: Context
    ) -> pb.UpdateRetentionPolicyResponse:
        principal = current_principal()
        # Checked at once as any policy is (its fields, the floor), then
        # against the tenant's ceiling, which only a change of this subject
        # moves (the operator's, sealtrail-server tenant retention-limit):
        # read before the wait for a purge batch, refused without it.
        _validated(request.policy, limits=self._limits())
        tenant_id = principal.tenant_id
        async with self._changes.exclusive(
            tenant_id, RETENTION_SUBJECT, caller=principal.token_id
        ) as conn:
            limits = self._limits(await read_policy(conn, tenant_id))
            policy = _validated(request.policy, limits=limits)
            before = await policy_to_change(conn, tenant_id, seconds=_batch_wait(context))
            require_etag(
                request.policy.etag,
                policy_etag(before.policy, before.updated_at, before.pending),
                what="retention policy",
            )
            waiting = before.pending
            if waiting is not None and waiting.policy.same_as(policy):
                # The change pending, asked again: its delay is not restarted.
                return self._policy_answer(before, limits=limits)
            if before.policy.same_as(policy):  # its rules in any order
                if waiting is None:  # nothing recorded
                    return self._policy_answer(before, limits=limits)
                return await self._cancel_pending(principal, conn, before, limits=limits)
            shortened = shortenings(before.policy, policy, limits=limits)
            if shortened and self._retention_shortening_delay:
                return await self._schedule(principal, conn, before, policy, limits=limits)
            old, new = describe(before.policy), describe(policy)
            after = await write_policy(conn, tenant_id, policy, now=self._clock())
            changes = [
                ChangeDraft(name, old[name], new[name]) for name in old if old[name] != new[name]
            ]
            if waiting is not None:  # replaced by one that applies at once
                changes.append(ChangeDraft("pending_change", _pending_value(waiting), None))
            # Recorded last, in the change's transaction (ADR 0075): the
            # tenant's head, locked by the record, is held only to the commit.
            event_id = (
                await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="retention.policy_updated",
                    category=event_pb2.CATEGORY_CONFIGURATION,
                    severity=weakening_severity(shortened),
                    resource_type="retention_policy",
                    description=shortened_description("Retention policy changed", shortened),
                    details=shortened_details(shortened),
                    changes=changes,
                )
            ).event_id
        return self._policy_answer(after, limits=limits, event_id=event_id)

    def _policy_answer(
        self, stored: StoredPolicy, *, limits: RetentionLimits, event_id: str = ""
    ) -> pb.UpdateRetentionPolicyResponse:
        return pb.UpdateRetentionPolicyResponse(
            policy=_policy_message(stored),
            event_id=event_id,
            pending_change=_pending_message(stored, limits=limits),
        )

    async def _schedule(
        self,
        principal: Principal,
        conn: psycopg.AsyncConnection[Any],
        before: StoredPolicy,
        policy: RetentionPolicy,
        *,
        limits: RetentionLimits,
    ) -> pb.UpdateRetentionPolicyResponse:
        """A change that keeps some events less long, set to apply once
        SEALTRAIL_RETENTION_SHORTENING_DELAY has passed (ADR 0163), replacing
        any pending; recorded, as a warning, with when it takes effect."""
        now = self._clock()
        pending = PendingChange(policy, now + self._retention_shortening_delay)
        shortened = shortenings(before.policy, policy, limits=limits)
        after = await write_pending(conn, principal.tenant_id, pending)
        when = pending.effective_at.isoformat(timespec="seconds")
        details = {
            **shortened_details(shortened),
            "effective_time": pending.effective_at.isoformat(),
        }
        event_id = (
            await record_access(  # recorded last (ADR 0075)
                self._appender,
                principal,
                now=self._clock(),
                action="retention.policy_updated",
                category=event_pb2.CATEGORY_CONFIGURATION,
                severity=weakening_severity(shortened),
                resource_type="retention_policy",
                description=shortened_description(
                    f"Retention policy change scheduled for {when}", shortened
                ),
                details=details,
                changes=[
                    ChangeDraft(
                        "pending_change",
                        None if before.pending is None else _pending_value(before.pending),
                        _pending_value(pending),
                    )
                ],
            )
        ).event_id
        return self._policy_answer(after, limits=limits, event_id=event_id)

    async def _cancel_pending(
        self,
        principal: Principal,
        conn: psycopg.AsyncConnection[Any],
        before: StoredPolicy,
        *,
        limits: RetentionLimits,
    ) -> pb.UpdateRetentionPolicyResponse:
        """The change pending dropped, the policy in force kept; recorded."""
        assert before.pending is not None
        after = await write_pending(conn, principal.tenant_id, None)
        event_id = (
            await record_access(  # recorded last (ADR 0075)
                self._appender,
                principal,
                now=self._clock(),
                action="retention.policy_updated",
                category=event_pb2.CATEGORY_CONFIGURATION,
                resource_type="retention_policy",
                description="Pending retention policy change cancelled",
                details={},
                changes=[ChangeDraft("pending_change", _pending_value(before.pending), None)],
            )
        ).event_id
        return self._policy_answer(after, limits=limits, event_id=event_id)

    async def PreviewRetentionPolicy(
        self, request: pb.PreviewRetentionPolicyRequest, context: Context
    ) -> pb.PreviewRetentionPolicyResponse:
        _validated(request.policy, limits=self._limits())  # as the change checks it
        tenant_id = current_principal().tenant_id
        now = self._clock()
        # Up to PREVIEW_READ_LIMIT events, seconds of reading: read on any
        # pooled connection, a few previews at once took the pool, the
        # appender's connection too. One of the long reads, as a count is.
        with self._long_reads.admitted(tenant_id, "preview"):
            async with self._db.bulk_connection(tenant_id) as conn:
                current = await read_policy(conn, tenant_id)
                limits = self._limits(current)
                policy = _validated(request.policy, limits=limits)
                horizons = [(s, now - timedelta(days=s.days)) for s in purge_selections(policy)]
                require_etag(
                    request.policy.etag,
                    policy_etag(current.policy, current.updated_at, current.pending),
                    what="retention policy",
                )
                counts = await count_expired(
                    conn, tenant_id, horizons, read_limit=PREVIEW_READ_LIMIT
                )
                await refuse_if_erased(conn, tenant_id)  # not an empty log's preview
        proposed = _policy_message(StoredPolicy(policy, None, current.hold))
        proposed.ClearField("etag")  # nothing was stored
        answer = pb.PreviewRetentionPolicyResponse(policy=proposed, legal_hold=current.hold.on)
        # As the change would record them, for a client to ask before one
        # that keeps anything less long though it removes nothing yet.
        for cut in shortenings(current.policy, policy, limits=limits):
            answer.shortened.add(
                events=cut.events, before_days=cut.before_days, after_days=cut.after_days
            )
        for (selection, horizon), (events, at_least) in zip(horizons, counts, strict=True):
            rule = answer.rules.add(
                rule=selection.rule, days=selection.days, events=events, at_least=at_least
            )
            rule.received_before.FromDatetime(horizon)
        answer.events = sum(rule.events for rule in answer.rules)
        answer.at_least = any(rule.at_least for rule in answer.rules)
        return answer

    async def SetLegalHold(
        self, request: pb.SetLegalHoldRequest, context: Context
    ) -> pb.SetLegalHoldResponse:
        principal = current_principal()
        if not request.on and self._legal_hold_release == "operator":
            # A hold the same admin token can release protects nothing from
            # that token (helper-165 G1). Refused before anything is read, a
            # hold on or not (ADR 0058): so said as true either way, not as
            # "ask them to release the hold" when none is on.
            await self._refused_to_tokens(principal, "SetLegalHold")
            raise PermissionDenied(
                "only this deployment's operator releases legal holds"
                " (sealtrail-server tenant release-hold)",
                reason="HOLD_RELEASE_BY_OPERATOR",
            )
        reason = validate_hold_reason(request.on, request.reason)
        tenant_id = principal.tenant_id
        placed = request.on
        async with self._changes.exclusive(
            tenant_id, RETENTION_SUBJECT, caller=principal.token_id
        ) as conn:
            before = await policy_to_change(conn, tenant_id, seconds=_batch_wait(context))
            hold = before.hold
            require_etag(
                request.etag, hold_etag(hold.on, hold.reason, hold.updated_at), what="legal hold"
            )
            if hold.on == placed and (not placed or hold.reason == reason):
                # As asked already: answered as it is, nothing recorded (no
                # event id says so), whichever way it was asked.
                return pb.SetLegalHoldResponse(legal_hold=_hold_message(before))
            shown = await self._filter_details.text(tenant_id, reason if placed else hold.reason)
            # A hold on already, placed with another reason: its record names
            # the reason it replaces, as a release's names the one it ends.
            replacing = placed and hold.on
            details = {"reason": shown} if placed else {"previous_reason": shown}
            if replacing:
                details["previous_reason"] = await self._filter_details.text(tenant_id, hold.reason)
            after = await write_hold(
                conn, tenant_id, on=placed, reason=reason if placed else "", now=self._clock()
            )
            # Recorded last (ADR 0075).
            event_id = (
                await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="retention.legal_hold_placed"
                    if placed
                    else "retention.legal_hold_released",
                    category=event_pb2.CATEGORY_CONFIGURATION,
                    # Released, retention and erasure take the log again.
                    severity=weakening_severity(not placed),
                    resource_type="legal_hold",
                    description=(
                        hold_placed_description(shown, replacing=replacing)
                        if placed
                        else "Legal hold released"
                    ),
                    details=details,
                )
            ).event_id
        return pb.SetLegalHoldResponse(legal_hold=_hold_message(after), event_id=event_id)

    async def EraseTenant(
        self, request: pb.EraseTenantRequest, context: Context
    ) -> pb.EraseTenantResponse:
        principal = current_principal()
        if self._tenant_erasure == "operator":
            # A stolen admin token must not be able to end a log (helper-165 G1).
            await self._refused_to_tokens(principal, "EraseTenant")
            raise PermissionDenied(
                "this deployment's operator erases tenants (sealtrail-server tenant erase):"
                " ask them to erase the tenant",
                reason="ERASURE_BY_OPERATOR",
            )
        if request.confirm_tenant_id != principal.tenant_id:
            raise InvalidArgument.field(
                "confirm_tenant_id", "must be the calling token's tenant id, typed back"
            )
        # A legal hold refuses it (checked by the eraser, under the hold's lock).
        receipt = await self._eraser.erase(principal.tenant_id, erased_by=principal.token_id)
        if self._authenticator is not None:
            self._authenticator.forget_tenant(principal.tenant_id)
        return pb.EraseTenantResponse(receipt=receipt_message(receipt))


def receipt_message(receipt: Receipt) -> pb.ErasureReceipt:
    """An erasure's receipt as the API answers it, and `sealtrail-server
    tenant erase` prints it. `erased_by_token_id`: the token's id, or the
    operator's `sealtrail-server:user@host`. `signed_receipt`: the receipt
    signed by the deployment's key (ADR 0073), empty in one kept before
    receipts were signed, which nothing proves."""
    message = pb.ErasureReceipt(
        tenant_id=receipt.tenant_id,
        erased_by_token_id=receipt.erased_by,
        final_tree_size=receipt.final_tree_size,
        final_root_hash=receipt.final_root_hash,
        removed_rows=receipt.removed_rows,
        signed_receipt=receipt.signed_receipt,  # "" in one kept before receipts were signed
    )
    message.erase_time.FromDatetime(receipt.erased_at)
    if receipt.final_checkpoint is not None:
        message.final_checkpoint.CopyFrom(checkpoint_message(receipt.final_checkpoint))
    return message
