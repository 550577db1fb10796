"""When each token was last used, noted on the calls it authenticates and
written behind (ADR 0064).

A token's use is noted at most once per `interval` on a process: the first
call of each interval stamps it (with the service's clock), the others cost a
dict read. What was noted is written every `flush_seconds`, in one statement
for every token noted since the last write, by a task of its own: never on a
call's path, which for Record is the hot path (bench/). A process that stops
writes what it noted; one killed loses at most its last `flush_seconds`.

So a token's `last_use_time` is coarse: the first call of the latest interval
in which a process saw it used, up to `interval` earlier than its latest call,
written up to `flush_seconds` after it. It is for finding stale tokens (unused
for weeks), not for telling which call came last: the log's own records do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Final

from ..domain.access import Principal
from ..stopping import end_tasks
from ..store.db_errors import named

log = logging.getLogger(__name__)

Uses = Mapping[tuple[str, str], datetime]
"""(tenant id, token id) -> when it was used."""

FLUSH_SECONDS: Final = 10.0


class LastUses:
    """Notes tokens' uses, at most once per token and `interval`, and writes
    them through `write` every `flush_seconds` (and on `stop`)."""

    def __init__(
        self,
        write: Callable[[Uses], Awaitable[None]],
        *,
        clock: Callable[[], datetime],
        interval: float = 60.0,
        flush_seconds: float = FLUSH_SECONDS,
        max_tokens: int = 100_000,
    ) -> None:
        self._write = write
        self._clock = clock
        self._interval = interval
        self._flush_seconds = flush_seconds
        self._max_tokens = max_tokens
        # Token id -> the monotonic time before which its uses are not noted again.
        self._quiet_until: dict[str, float] = {}
        self._pending: dict[tuple[str, str], datetime] = {}
        self._task: asyncio.Task[None] | None = None

    def note(self, principal: Principal, *, at: float) -> None:
        """A call `principal` authenticated, at monotonic time `at` (the
        authenticator's, which it has read already): a dict read, but for the
        first call of an interval."""
        token_id = principal.token_id
        if self._quiet_until.get(token_id, at) > at:
            return
        if len(self._quiet_until) >= self._max_tokens:
            # The tokens seen lately, not every token ever seen.
            self._quiet_until = {k: v for k, v in self._quiet_until.items() if v > at}
            if len(self._quiet_until) >= self._max_tokens:
                self._quiet_until.clear()
        self._quiet_until[token_id] = at + self._interval
        self._pending[(principal.tenant_id, token_id)] = self._clock()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sealtrail-token-last-use")

    async def stop(self) -> None:
        """Ends the writer, then writes what is still noted (once; a failure
        is logged)."""
        await end_tasks([self._task])
        self._task = None
        with contextlib.suppress(Exception):  # logged by flush
            await self.flush()

    async def flush(self) -> None:
        """Writes what was noted since the last write. A write that fails
        keeps it for the next (a use noted meanwhile, being later, wins), and
        is logged, then raised."""
        if not self._pending:
            return
        taken, self._pending = self._pending, {}
        try:
            await self._write(taken)
        except BaseException as error:
            for key, used_at in taken.items():
                self._pending.setdefault(key, used_at)
            if isinstance(error, Exception):
                log.warning(
                    "the last use of %d token(s) went unwritten: %s", len(taken), named(error)
                )
            raise

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            with contextlib.suppress(Exception):  # logged by flush; the next one tries again
                await self.flush()
