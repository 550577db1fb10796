"""Reads by key are recorded, once a window rather than once a read.

`GetEvent` (by id) and `GetInclusionProof` (by id or seq, with the record)
return events without a Query, so they are recorded too (ADR 0040): a token's
first read through one of them records `audit_log.read_by_key`, naming the
RPC and the key, and that record stands for the same token's reads through
the same RPC on this process for the next window. Recording every read would
add an event per proof when a bundle is written proof by proof (one per
record of the log); recording none let a reader walk the log by seq
unrecorded.

Like every access record, it is committed before the read answers, and if it
cannot be, the read fails; so does every read of the window that waited on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from ..domain.access import Principal
from ..store.appended import Appended
from ..store.appender import Appender
from .audited import record_access
from .once_a_window import OnceAWindow

ACTION = "audit_log.read_by_key"


class KeyReads:
    """Records reads by key, at most once per (token, RPC) and window."""

    def __init__(
        self,
        appender: Appender,
        *,
        clock: Callable[[], datetime],
        window: timedelta,
    ) -> None:
        self._appender = appender
        self._windows = OnceAWindow(clock=clock, window=window)

    async def recorded(self, principal: Principal, *, rpc: str, key: dict[str, Any]) -> None:
        """Returns once a record covering this read is durable; raises what
        recording raised (SealtrailError) when it could not be."""
        seconds = self._windows.seconds

        def record(now: datetime) -> Awaitable[Appended]:
            return record_access(
                self._appender,
                principal,
                now=now,
                action=ACTION,
                description=(
                    f"Read audit events by key ({rpc}); this token's reads through {rpc} "
                    f"on the same server in the next {seconds:g} s are not recorded again"
                ),
                details={"rpc": rpc, "first_key": key, "window_seconds": seconds},
            )

        slot = (principal.tenant_id, principal.token_id, rpc)
        # Shielded: a caller that goes away does not cancel the record that
        # other reads of the window are waiting on.
        await asyncio.shield(self._windows.covering(slot, record))
