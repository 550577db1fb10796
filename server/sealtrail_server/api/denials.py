"""Refusals of a known tenant's token are recorded, once a window.

A token whose role may not call an RPC (PERMISSION_DENIED), or that was
revoked or has expired (UNAUTHENTICATED), belongs to a tenant: its refusal records
`audit_log.access_denied` in that tenant's log (ADR 0060), naming the RPC,
the reason and the token, with the caller's address, so that a security team
sees, and can alert on, a credential probing the log. An unknown token has
no tenant to record it in. A call refused for a limit of its tenant's own
(RESOURCE_EXHAUSTED: the export rate, the exports or streams open at once)
records `audit_log.rate_limited` so (ADR 0153): a token hammering Export to
pull the log out showed only as the exports that got through.

As reads by key are (ADR 0040), a refusal is recorded once per token, RPC,
reason and window on a process: a client retrying a refused call in a loop adds one
record a window, not one per call. Unlike an access record, it is not a
condition of the answer: the refusal waits a moment for its record, then is
answered as before whatever became of it; a record that failed is logged,
covers nothing, and the next refusal tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from sealtrail.v1 import event_pb2

from ..domain.access import Principal
from ..domain.errors import TenantLimitReached
from ..store.appended import Appended
from ..store.appender import Appender
from ..store.db_errors import named
from .audited import record_access
from .once_a_window import OnceAWindow

log = logging.getLogger(__name__)

ACTION: Final = "audit_log.access_denied"
RATE_LIMITED: Final = "audit_log.rate_limited"
# How long a refusal waits for its record: usually long enough for it to be
# durable before the answer, never long enough to hold the answer up.
WAIT_SECONDS: Final = 1.0

Reason = Literal["role", "revoked", "expired", "operator"]
_WHY: Final = {
    "role": "its role may not call it",
    "revoked": "it was revoked",
    "expired": "it has expired",
    "operator": "this deployment's operator does that, not a token (ADR 0058)",
}


class Denials:
    """Records refusals of known tokens, at most once per (token, RPC, reason) and window."""

    def __init__(
        self, appender: Appender, *, clock: Callable[[], datetime], window: timedelta
    ) -> None:
        self._appender = appender
        self._windows = OnceAWindow(clock=clock, window=window)

    async def refused(
        self, principal: Principal, *, rpc: str, reason: Reason, expired_at: str | None = None
    ) -> None:
        """Returns once this refusal's record is durable, failed, or waited
        for `WAIT_SECONDS`; never raises but for a cancelled call.
        `expired_at`: an expired token's expiry (RFC 3339), in the details."""
        seconds = self._windows.seconds
        details: dict[str, Any] = {
            "rpc": rpc,
            "reason": reason,
            "role": principal.role.value,
            "window_seconds": seconds,
        }
        if expired_at is not None:
            details["expire_time"] = expired_at
        await self._recorded_once(
            principal,
            rpc=rpc,
            reason=reason,
            action=ACTION,
            description=(
                f"Refused a call of {rpc}: {_WHY[reason]}; this token's refusals "
                f"through {rpc} on the same server in the next {seconds:g} s "
                "are not recorded again"
            ),
            details=details,
        )

    async def limited(self, principal: Principal, *, rpc: str, refused: TenantLimitReached) -> None:
        """As `refused`, for a call refused for a limit of its tenant's own:
        the limit by its ErrorInfo reason, its value and any window of a rate."""
        seconds = self._windows.seconds
        details: dict[str, Any] = {"rpc": rpc, "reason": refused.reason, "limit": refused.limit}
        per = ""
        if refused.window_seconds is not None:
            details["limit_window_seconds"] = refused.window_seconds
            per = f" per {refused.window_seconds:g} s"
        details |= {"role": principal.role.value, "window_seconds": seconds}
        await self._recorded_once(
            principal,
            rpc=rpc,
            reason=refused.reason,
            action=RATE_LIMITED,
            description=(
                f"Refused a call of {rpc} for the tenant's limit ({refused.reason}:"
                f" {refused.limit}{per}); this token's refusals for it through {rpc}"
                f" on the same server in the next {seconds:g} s are not recorded again"
            ),
            details=details,
        )

    async def _recorded_once(
        self,
        principal: Principal,
        *,
        rpc: str,
        reason: str,
        action: str,
        description: str,
        details: dict[str, Any],
    ) -> None:
        """Records a refusal, unless one of the same (token, RPC, reason) is
        covered this window; waits for its record at most `WAIT_SECONDS`."""

        async def record(now: datetime) -> Appended:
            try:
                return await record_access(
                    self._appender,
                    principal,
                    now=now,
                    action=action,
                    category=event_pb2.CATEGORY_SECURITY,
                    severity=event_pb2.SEVERITY_WARNING,
                    outcome=event_pb2.OUTCOME_DENIED,
                    description=description,
                    details=details,
                )
            except Exception as error:
                token = principal.token_id
                log.warning(
                    "the refusal of %s to token %s went unrecorded: %s", rpc, token, named(error)
                )
                raise

        # Each reason once: a refusal for the role must not hide, for the rest
        # of its window, that the same token then came back expired (helper-176).
        # A limit's reasons (TOO_MANY_EXPORTS) are none of access's (role).
        key = (principal.tenant_id, principal.token_id, rpc, reason)
        covering = self._windows.covering(key, record)
        # Shielded: a refusal that stops waiting does not cancel the record.
        # Failed, it was logged where it failed; slow, it is still on its way.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(covering), WAIT_SECONDS)
