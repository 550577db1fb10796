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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..domain.access import Principal
from ..store.appender import Appended, Appender
from .audited import record_access

ACTION = "audit_log.read_by_key"


@dataclass(frozen=True, slots=True)
class _Covered:
    """One token's reads through one RPC, covered by one record until `until`."""

    since: datetime
    until: datetime
    record: asyncio.Future[Appended]


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
        self._clock = clock
        self._window = window
        self._covered: dict[tuple[str, str, str], _Covered] = {}
        self._next_sweep: datetime | None = None

    async def recorded(self, principal: Principal, *, rpc: str, key: dict[str, Any]) -> None:
        """Returns once a record covering this read is durable; raises what
        recording raised (SealtrailError) when it could not be."""
        now = self._clock()
        slot = (principal.tenant_id, principal.token_id, rpc)
        covered = self._covered.get(slot)
        # A clock set back starts a new window rather than stretching one.
        if covered is None or not covered.since <= now < covered.until:
            self._sweep(now)
            covered = self._cover(slot, principal, now=now, rpc=rpc, key=key)
        # Shielded: a caller that goes away does not cancel the record that
        # other reads of the window are waiting on.
        await asyncio.shield(covered.record)

    def _cover(
        self,
        slot: tuple[str, str, str],
        principal: Principal,
        *,
        now: datetime,
        rpc: str,
        key: dict[str, Any],
    ) -> _Covered:
        # As configured: a window of 0.5 s said 0 s (helper-135).
        window = self._window.total_seconds()
        seconds = int(window) if window.is_integer() else window
        record = asyncio.ensure_future(
            record_access(
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
        )
        covered = _Covered(since=now, until=now + self._window, record=record)
        self._covered[slot] = covered
        record.add_done_callback(lambda done: self._settled(slot, covered, done))
        return covered

    def _settled(
        self, slot: tuple[str, str, str], covered: _Covered, done: asyncio.Future[Appended]
    ) -> None:
        # Retrieved here so that a record no caller waits for any more does not
        # end as an unretrieved exception; a failed record covers nothing, and
        # the next read tries again.
        failed = done.cancelled() or done.exception() is not None
        if failed and self._covered.get(slot) is covered:
            del self._covered[slot]

    def _sweep(self, now: datetime) -> None:
        """Forgets ended windows, once a window: the map holds the tokens that
        read by key lately, not every token that ever did."""
        if self._next_sweep is not None and now < self._next_sweep:
            return
        self._covered = {
            slot: covered
            for slot, covered in self._covered.items()
            if covered.since <= now < covered.until or not covered.record.done()
        }
        self._next_sweep = now + self._window
