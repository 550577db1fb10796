"""Work spread over server processes by leases in PostgreSQL: each process
claims what nobody else holds (renewing what it holds), and runs one task per
claimed key that repeats a step until the step says the key is no longer its
own. The forwarder (a key per sink) and the alert evaluator (a key per
tenant) are both this, with their own claims and steps (ADR 0016)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable, Hashable
from typing import Final, Generic, TypeVar

from .domain.errors import SealtrailError
from .stopping import STOP_SECONDS, cancelled_within, where_it_waits

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
# Failures a claim or a step may meet that are worth trying again: the
# database away, a network error.
RETRIED = (SealtrailError, OSError)
# The longest a key's worker waits between steps that keep failing so: the
# waits double from the poll interval, and commits do not cut them short. At
# the poll interval, a step failing at once (an appender refusing OVERLOADED in
# the very spike alerts exist for) ran again every second, and every commit
# of the tenant woke it sooner.
RETRY_CAP_SECONDS: Final = 30.0


class WaitingForRoom:
    """How many keys wait for a process with room, as the last claim at the
    process's limit saw them; said in the log when some start to wait and
    when none does any more, not at every claim while it lasts."""

    def __init__(self, logger: logging.Logger, *, prefix: str, held: str, limit: str) -> None:
        """`prefix` ("forwarder"), `held` ("delivers %d sinks") and `limit`
        (the setting) word the log lines."""
        self._log, self._prefix, self._held, self._limit = logger, prefix, held, limit
        self.count = 0

    def saw(self, held: int, waiting: int, *, what: str) -> None:
        """A claim at the limit held `held` keys and left `waiting` (of `what`)."""
        if waiting and not self.count:
            self._log.warning(
                f"{self._prefix}: this process {self._held}, its most ({self._limit});"
                " %d more wait for a process with room",
                held,
                waiting,
            )
        elif not waiting and self.count:
            self._log.info(f"{self._prefix}: no {what} waits for a process with room any more")
        self.count = waiting


def new_owner() -> str:
    """This process's name in lease rows: host and a random part."""
    return f"{socket.gethostname()}:{uuid.uuid4().hex[:12]}"


class LeasedWork(Generic[K]):
    """`claim()` leases keys for this process and returns those it holds;
    `step(key)` does one piece of a key's work and returns the seconds to wait
    before the next (0: at once; a wake-up cuts the wait short), or None when
    the key is no longer this process's. `release()` gives the leases up."""

    def __init__(
        self,
        name: str,
        *,
        claim: Callable[[], Awaitable[list[K]]],
        step: Callable[[K], Awaitable[float | None]],
        release: Callable[[], Awaitable[None]],
        tenant_of: Callable[[K], str],
        poll_interval: float,
        lease_seconds: float,
    ) -> None:
        self._name = name
        self._claim_keys = claim
        self._step = step
        self._release = release
        self._tenant_of = tenant_of
        self._poll = poll_interval
        self._lease_seconds = lease_seconds
        self._renew_every = min(lease_seconds / 3, poll_interval * 5)
        self._renewed_at: float | None = None  # loop time of the last successful claim
        self._claiming: asyncio.Task[None] | None = None
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._wakers: dict[K, asyncio.Event] = {}
        # Workers cancelled (fenced, or their key lost) that have not ended yet:
        # stop() waits for them too, so none outlives the server's loop.
        self._ending: set[asyncio.Task[None]] = set()
        self._claim_now = asyncio.Event()
        self._main: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name=f"sealtrail-{self._name}")

    async def stop(self, *, stop_seconds: float = STOP_SECONDS) -> None:
        """Cancel every task and wait for them to end, cancelling again each
        second: a task can swallow a cancellation without meaning to (Python
        3.11's `wait_for` did, in a stop CI saw hang). One still running after
        `stop_seconds` is left behind, loudly, rather than holding the
        server's stop for ever; the leases then lapse instead of being
        released, as it may still step."""
        tasks = {
            *self._tasks.values(),
            *self._ending,
            *([self._main] if self._main else []),
            *([self._claiming] if self._claiming else []),
        }
        stuck = await cancelled_within(tasks, within=stop_seconds)
        for task in stuck:
            log.error(
                "%s: %s did not end within %.1f s of its cancellation; left behind:\n%s",
                self._name,
                task.get_name(),
                stop_seconds,
                where_it_waits(task),
            )
        self._claiming = None
        self._tasks.clear()
        self._wakers.clear()
        if self._main is not None and not stuck:
            with contextlib.suppress(Exception):  # another process takes over at expiry anyway
                await self._release()
        self._main = None

    def claim_soon(self) -> None:
        """Claim now rather than at the next renewal (something was added here)."""
        self._claim_now.set()

    def wake(self, tenant_id: str) -> None:
        """Cut short the wait of every key of `tenant_id`."""
        for key, waker in self._wakers.items():
            if self._tenant_of(key) == tenant_id:
                waker.set()

    def wake_all(self) -> None:
        for waker in self._wakers.values():
            waker.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            if self._claiming is None:
                started = loop.time()  # the leases it renews run from before it
                self._claiming = asyncio.create_task(self._claim())
            # Waited for apart from the claim: one hung on a dead connection
            # (psycopg takes seconds to give up a cancelled query) must not
            # hold the fence back.
            timeout = self._until_fence(loop.time())
            done, _ = await asyncio.wait({self._claiming}, timeout=timeout)
            if done:
                claim, self._claiming = self._claiming, None
                error = None if claim.cancelled() else claim.exception()
                if claim.cancelled():
                    log.warning("%s: a claim hung; claiming again", self._name)
                elif error is None:
                    self._renewed_at = started
                elif isinstance(error, RETRIED):
                    log.warning("%s: cannot claim leases: %s", self._name, error)
                else:
                    log.error("%s: claim failed", self._name, exc_info=error)
            elif loop.time() - started >= self._lease_seconds / 2:
                self._claiming.cancel()  # too late to renew anything: it ends, then a new one
            self._fence(loop.time())
            wait = min(self._renew_every, self._until_fence(loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: see _repeat
                    await self._claim_now.wait()
            self._claim_now.clear()

    def _until_fence(self, now: float) -> float:
        """Seconds until the workers must stop unless a claim succeeds (half a
        lease after the last successful one); once stopped, nothing is left
        to protect, and a claim may take its time again."""
        if self._renewed_at is None:
            return self._lease_seconds / 2
        left = self._renewed_at + self._lease_seconds / 2 - now
        return left if left > 0 else self._lease_seconds / 2

    def _fence(self, now: float) -> None:
        """Renewals failing, the leases may lapse and another process take the
        keys over: past half a lease without one, stop working on them (the
        next successful claim starts again whatever is still held)."""
        if self._renewed_at is None or now - self._renewed_at <= self._lease_seconds / 2:
            return
        if self._tasks:
            log.warning(
                "%s: no lease renewed for %.0f s: stopping %d workers until a claim succeeds",
                self._name,
                now - self._renewed_at,
                len(self._tasks),
            )
        for key in list(self._tasks):
            self._end(key)

    async def _claim(self) -> None:
        held = set(await self._claim_keys())
        for key in list(self._tasks):
            if key not in held or self._tasks[key].done():
                self._end(key)
        for key in held - set(self._tasks):
            self._wakers[key] = asyncio.Event()
            self._tasks[key] = asyncio.create_task(self._repeat(key), name=f"{self._name}-{key}")

    def retry_wait(self, failures: int) -> float:
        """Seconds before a key's next step after `failures` failed in a row."""
        cap = max(self._poll, RETRY_CAP_SECONDS)
        return min(self._poll * 2.0 ** min(failures - 1, 16), cap)

    def _end(self, key: K) -> None:
        """Cancel `key`'s worker; stop() waits for it if it has not ended by then."""
        task = self._tasks.pop(key)
        self._wakers.pop(key, None)
        task.cancel()
        if not task.done():
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    async def _repeat(self, key: K) -> None:
        waker = self._wakers[key]
        failures = 0
        while True:
            waker.clear()
            try:
                wait = await self._step(key)
                failures = 0
            except RETRIED as error:
                failures += 1
                wait = self.retry_wait(failures)
                log.warning("%s: %s: %s (again in %.1f s)", self._name, key, error, wait)
                await asyncio.sleep(wait)
                continue
            except Exception:  # a bug: keep the worker alive, loudly, and slowed down
                log.exception("%s: %s: step failed", self._name, key)
                wait = self._renew_every
            if wait is None:
                return
            if wait > 0:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns
                # the waker's result when the waker is set as the task is
                # cancelled, and the cancelled task went on for ever (a stop that
                # never ended, seen in CI when an alert woke its key at the stop).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await waker.wait()
