"""One change at a time to each thing a tenant configures.

A change of a sink, an alert rule, the retention policy, the legal hold, the
tenant's settings or a token reads the current value, records the change as an
event (through the appender, in a transaction of its own), then writes the new
value. Two such changes of the same thing at once would both read the same
value: the log would state changes from a value that was no longer current,
and its last word could differ from what was applied last.

`Changes.exclusive` serialises them: in this process with an asyncio
semaphore of one (so waiting callers hold no pooled connection), across
processes with a transaction-level advisory lock, held from the read to the
write's commit. A change waits for its turn at most `wait_seconds` (5 s) in
all, for those ahead of it in its process and in the others alike, then is
refused UNAVAILABLE, retry (ADR 0093).

A change holds its pooled connection while the appender records it, and the
appender needs a connection of the same pool: at most half the pool is given
to changes at once (the others wait, holding none), so changes of many
subjects at once can never starve the appender.

Every change also shares the tenant's erasure lock (ADR 0014): an erasure
waits for the changes in flight, whose rows it would otherwise miss, and a
change that waited for an erasure is refused (TENANT_ERASED) before it records
anything.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg_pool import PoolTimeout, TooManyRequests

from ..domain.errors import FailedPrecondition, Unauthenticated, Unavailable
from .database import Connection, Database, change_connections

AnyConnection = psycopg.AsyncConnection[Any]
log = logging.getLogger(__name__)

# Seed of the advisory lock keys (the checkpointer locks tenants with seed 7).
_LOCK_SEED: Final = 0x5EA1C4A9
# The subject an erasure holds, and token creation, purge batches and every
# change share (the appender tries to, wherever it locks or moves a head, and
# skips the tenant if it cannot): none of them writes a row of a tenant while
# it is being erased.
ERASURE_SUBJECT: Final = "erasure"
# The subject of the retention policy and the legal hold (one row).
RETENTION_SUBJECT: Final = "retention"
# How long a change waits for one of another process before giving up.
DEFAULT_WAIT_SECONDS: Final = 5.0
# How long a change may sit idle in its transaction, between two of its
# statements, before PostgreSQL ends its session and rolls it back. A process
# frozen mid-change (SIGSTOP, `docker pause`, a debugger) held its subject's
# lock, and shared its calling token's, for as long as it stayed frozen: that
# token's revocation through any other process failed meanwhile. Between its
# statements a change only builds its record, milliseconds. As the appender's
# writes (store/appender.py, IDLE_IN_WRITE_SECONDS).
IDLE_IN_CHANGE_SECONDS = 30.0


class Changes:
    """Hands out one tenant connection at a time per (tenant, subject)."""

    def __init__(self, db: Database, *, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        self._db = db
        self._wait_seconds = wait_seconds
        # A semaphore of one, not a lock: whether it can be taken without a
        # wait (`locked`) is exact, so a change that need not wait sets no
        # timer (`_take_turn`).
        self._local: weakref.WeakValueDictionary[tuple[str, str], asyncio.Semaphore] = (
            weakref.WeakValueDictionary()
        )
        self._most = change_connections(db.pool.max_size)
        self._connections = asyncio.Semaphore(self._most)

    @asynccontextmanager
    async def exclusive(
        self, tenant_id: str, subject: str, *, caller: str | None
    ) -> AsyncIterator[Connection]:
        """A connection of `tenant_id`, in a transaction that no other change
        of `subject` (like `sink/<id>` or `retention`) overlaps. Read the
        current value, record the change and write it on this connection; the
        write commits when the block ends, and a failure rolls it back.

        `caller`, the id of the token making the change (None for an
        operator's), must be live, and stays live until the change commits."""
        key = (tenant_id, subject)
        lock = self._local.get(key)
        if lock is None:
            lock = self._local[key] = asyncio.Semaphore(1)
        ended: list[Callable[[], None]] = []
        try:
            async with self._exclusive(tenant_id, subject, caller, lock, ended) as conn:
                yield conn
        finally:
            changes_ended(ended)

    @asynccontextmanager
    async def _exclusive(
        self,
        tenant_id: str,
        subject: str,
        caller: str | None,
        lock: asyncio.Semaphore,
        ended: list[Callable[[], None]],
    ) -> AsyncIterator[Connection]:
        """`exclusive`; `ended` called once its transaction has ended."""
        busy = f"another change of {subject} is still being applied; retry"
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._wait_seconds
        if lock.locked() or self._connections.locked():
            await self._take_turn(lock, deadline, busy=busy)
        else:  # both taken at once, without a wait
            await lock.acquire()
            await self._connections.acquire()
        # Out of time waiting for a connection, a change is told what took
        # most of its wait: its turn behind another change, or the pool.
        turn_took_most = loop.time() - started > self._wait_seconds / 2
        try:
            async with (
                self._connection(
                    tenant_id, deadline, busy=busy if turn_took_most else None
                ) as conn,
                conn.transaction(),
            ):
                # Every lock wait of the change is bounded, its first ones
                # (below) as much as those of its reads, writes and record:
                # after them the wait was reset to the database's default
                # (none), and a change whose row another session held waited
                # for it to its caller's deadline, or for ever without one.
                await end_when_idle(conn, lock_wait=self._wait_seconds)
                # Its turn at the subject, in this process and in the others,
                # is waited for at most `wait_seconds` in all.
                left = max(deadline - loop.time(), 0.001)
                async with waiting_at_most(conn, left, busy=busy):
                    await lock_subject(conn, tenant_id, subject)
                # An erasure waits for a change in flight, whose row it would
                # otherwise miss (written after its DELETEs, committed after
                # it); a change that waited for an erasure finds it done. The
                # subject first, as the erasure takes retention's before its own.
                await share_erasure(conn, tenant_id, seconds=self._wait_seconds)
                await refuse_if_erased(conn, tenant_id)
                if caller is not None:
                    await hold_live_token(conn, tenant_id, caller, seconds=self._wait_seconds)
                with recorded_within(conn, tenant_id, ended=ended):
                    try:
                        yield conn
                    except psycopg.errors.LockNotAvailable as error:
                        raise waited_too_long(error, self._wait_seconds) from error
        finally:
            self._connections.release()
            lock.release()

    @asynccontextmanager
    async def _connection(
        self, tenant_id: str, deadline: float, *, busy: str | None
    ) -> AsyncIterator[Connection]:
        """A connection of `tenant_id`, waited for until `deadline` (the loop's
        time), else Unavailable(`busy`, by default that the pool's connections
        are all in use): after its turn, a change waited for one of the pool as
        long as the pool lets anyone (its timeout), on top of its own wait,
        every connection held by appends, reads and sweeps."""
        busy = busy or (
            f"the change waited more than {self._wait_seconds:g} s for a connection to the"
            " database (this server process's are all in use); nothing was changed; retry"
        )
        async with connection_by(self._db, tenant_id, deadline, busy=busy) as conn:
            yield conn

    async def _take_turn(self, lock: asyncio.Semaphore, deadline: float, *, busy: str) -> None:
        """Takes `lock` (the subject's in this process), then one of the
        changes' connections, by `deadline` (the loop's time), else
        Unavailable, holding neither. The changes of one subject in one
        process queued here with no bound but their callers' deadlines, each
        behind every one ahead of it, where one of another process waits
        `wait_seconds` for the subject's lock (ADR 0093)."""
        try:
            async with asyncio.timeout_at(deadline):
                await lock.acquire()
        except TimeoutError as error:
            raise Unavailable(busy, retry_after=1.0) from error
        try:
            async with asyncio.timeout_at(deadline):
                await self._connections.acquire()
        except BaseException as error:
            lock.release()
            if isinstance(error, TimeoutError):
                raise Unavailable(
                    "this server process is applying as many changes at once as it may"
                    f" ({self._most}); retry",
                    retry_after=1.0,
                ) from error
            raise


class _Change:
    """A change in progress: its tenant, its connection, the task making it,
    while it is open, and what to call once its transaction has ended."""

    __slots__ = ("conn", "ended", "open", "task", "tenant_id")

    def __init__(
        self, tenant_id: str, conn: AnyConnection, ended: list[Callable[[], None]]
    ) -> None:
        self.tenant_id = tenant_id
        self.conn = conn
        self.task = asyncio.current_task()
        self.open = True
        self.ended = ended


_CHANGE: ContextVar[_Change | None] = ContextVar("sealtrail_change", default=None)


@contextmanager
def recorded_within(
    conn: AnyConnection, tenant_id: str, *, ended: list[Callable[[], None]] | None = None
) -> Iterator[None]:
    """The tenant's events recorded in the block (api/audited.py's
    `record_event`) are appended in `conn`'s transaction, so that they commit
    with the change or not at all (ADR 0075). Recorded through the appender
    in a transaction of their own, they committed before the change: a
    process frozen between the two, its session ended meanwhile (or dying
    there), left the log saying something that never happened.

    `ended`: where `when_change_ends` puts what is to be called once the
    transaction has ended, for the caller to call then (`changes_ended`, once
    it committed or rolled back); None, they are called as the block ends."""
    change = _Change(tenant_id, conn, [] if ended is None else ended)
    token = _CHANGE.set(change)
    try:
        yield
    finally:
        change.open = False  # a task the block started keeps the variable
        _CHANGE.reset(token)
        if ended is None:
            changes_ended(change.ended)


def when_change_ends(conn: AnyConnection, tenant_id: str, callback: Callable[[], None]) -> bool:
    """Calls `callback` once the transaction of the change of `tenant_id` in
    progress in this task, on `conn`, has ended (committed or rolled back);
    False, and never calls it, if there is no such change."""
    if change_connection(tenant_id) is not conn:
        return False
    change = _CHANGE.get()
    assert change is not None
    change.ended.append(callback)
    return True


def changes_ended(ended: list[Callable[[], None]]) -> None:
    """Calls each of `ended` (`when_change_ends`), each once, whatever the
    others do."""
    while ended:
        callback = ended.pop(0)
        try:
            callback()
        except Exception:
            log.exception("changes: a call at a change's end failed")


def change_connection(tenant_id: str) -> AnyConnection | None:
    """The connection of the change of `tenant_id` in progress in this task
    (`recorded_within`), if any: where its records are appended.

    Only in the task making the change: a task it starts inherits the
    variable, but records something else, on its own time. A refusal inside
    a change (a managed sink's, ADR 0070) is recorded by a task of its own
    (api/denials.py): appended in the change's transaction, it was rolled
    back with the refused change, and, still running as the change ended,
    wrote on a connection back in the pool."""
    change = _CHANGE.get()
    if (
        change is None
        or not change.open
        or change.tenant_id != tenant_id
        or change.task is not asyncio.current_task()
    ):
        return None
    return change.conn


@asynccontextmanager
async def connection_by(
    db: Database, tenant_id: str, deadline: float, *, busy: str
) -> AsyncIterator[Connection]:
    """A pooled connection of `tenant_id`, waited for until `deadline` (the
    loop's time), else Unavailable(`busy`), with a retry delay: not the
    pool's own timeout on top of a wait the caller bounds."""
    left = max(deadline - asyncio.get_running_loop().time(), 0.001)
    given = False
    try:
        async with db.connection(tenant_id, timeout=left) as conn:
            given = True
            yield conn
    except Unavailable as error:
        if given or not isinstance(error.__cause__, PoolTimeout | TooManyRequests):
            raise
        raise Unavailable(busy, retry_after=1.0) from error


async def end_when_idle(conn: AnyConnection, *, lock_wait: float | None = None) -> None:
    """`conn`'s session ends, rolling its transaction back and letting its
    locks go, once idle in it for IDLE_IN_CHANGE_SECONDS (read at each change).
    `lock_wait`: each lock wait of the transaction gives up after that many
    seconds (LockNotAvailable; `waiting_at_most` sets another for a block)."""
    idle = f"{max(1, round(IDLE_IN_CHANGE_SECONDS * 1000))}ms"
    if lock_wait is None:
        await conn.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, true)", [idle]
        )
        return
    await conn.execute(
        "SELECT set_config('idle_in_transaction_session_timeout', %s, true),"
        " set_config('lock_timeout', %s, true)",
        [idle, _milliseconds(lock_wait)],
    )


def waited_too_long(
    error: psycopg.errors.LockNotAvailable, seconds: float, *, what: str = "change"
) -> Unavailable:
    """The answer to a change (or `what` else) that waited past its lock
    timeout (`seconds`) for a lock another session holds: retry, naming the
    table whose row it waited for, when PostgreSQL says."""
    found = re.search(r'relation "([^"]+)"', error.diag.context or "")
    lock = f"a row of {found[1]}" if found else "a lock"
    log.warning(
        "changes: %s waited past its lock timeout (%g s) for %s another session holds: %s",
        what,
        seconds,
        lock,
        error.diag.context or error,
    )
    return Unavailable(
        f"the {what} waited more than {seconds:g} s for {lock} that another session holds"
        " (another change, a purge, a delivery, an append or maintenance); nothing was"
        " changed; retry",
        retry_after=1.0,
    )


def token_subject(token_id: str) -> str:
    """The subject of a token's changes: its revocation holds it, and every
    change the token makes shares it (`hold_live_token`)."""
    return f"api_token/{token_id}"


async def hold_live_token(
    conn: AnyConnection, tenant_id: str, token_id: str, *, seconds: float
) -> None:
    """Unauthenticated unless token `token_id` is live; if it is, it stays so
    until `conn`'s transaction ends. The caller was checked when its call
    began, but a change can wait seconds for its lock: a token revoked
    meanwhile made it after the log said the token was revoked.

    The token's subject lock is shared: its revocation (`Changes.exclusive`
    on `token_subject`, before it records anything) waits for the changes in
    flight, and the changes that come after it queue behind it, then find the
    token revoked. A row lock would not do: PostgreSQL grants a new FOR SHARE
    while a FOR UPDATE waits, so a token making overlapping changes could put
    its revocation off for as long as it went on."""
    busy = "the calling token is being revoked; retry"
    async with waiting_at_most(conn, seconds, busy=busy):
        await share_subjects(conn, [tenant_id], token_subject(token_id))
    cursor = await conn.execute(
        "SELECT FROM api_tokens WHERE token_id = %s AND revoked_at IS NULL", [token_id]
    )
    if await cursor.fetchone() is None:
        raise Unauthenticated("unknown or revoked token")


@asynccontextmanager
async def waiting_at_most(conn: AnyConnection, seconds: float, *, busy: str) -> AsyncIterator[None]:
    """Lock waits in the block (of `conn`'s transaction) give up after
    `seconds`, answered Unavailable(`busy`); after it, they wait as long as
    they did before it. (It set the database's default after it, `SET LOCAL
    ... TO DEFAULT`, which is none, not the connection's: every lock wait of
    the transaction after the block was unbounded.)"""
    cursor = await conn.execute(_WAIT_AT_MOST, [_milliseconds(seconds)])
    found = await cursor.fetchone()
    assert found is not None
    try:
        yield
    except psycopg.errors.LockNotAvailable as error:
        raise Unavailable(busy, retry_after=1.0) from error
    await conn.execute("SELECT set_config('lock_timeout', %s, true)", [found[0]])


# The transaction's lock timeout as found, and the block's set.
_WAIT_AT_MOST: Final = (
    "SELECT found.wait, set_config('lock_timeout', %s, true)"
    " FROM (SELECT current_setting('lock_timeout') AS wait) AS found"
)


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


async def lock_subject(conn: AnyConnection, tenant_id: str, subject: str) -> None:
    """Takes the subject's lock for the rest of `conn`'s transaction (for work
    outside `Changes`, such as an erasure on the owner's connection)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))",
        [_lock_key(tenant_id, subject), _LOCK_SEED],
    )


async def try_lock_subject(conn: AnyConnection, tenant_id: str, subject: str) -> bool:
    """`lock_subject` where that needs no wait: whether it was taken (for
    work any process may do, which the one holding it is doing)."""
    cursor = await conn.execute(
        "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, %s))",
        [_lock_key(tenant_id, subject), _LOCK_SEED],
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def refuse_if_erased(conn: AnyConnection, tenant_id: str) -> None:
    """FailedPrecondition (TENANT_ERASED) if the tenant was erased. Run it after
    sharing the erasure's lock, in a statement of its own: its snapshot must
    be taken after the wait, to see an erasure that committed meanwhile."""
    cursor = await conn.execute(
        "SELECT erased_at FROM tenant_erasures WHERE tenant_id = %s", [tenant_id]
    )
    if erased := await cursor.fetchone():
        raise tenant_erased(tenant_id, at=erased[0])


async def refuse_if_erased_now(db: Database, tenant_id: str) -> None:
    """`refuse_if_erased` on a pooled connection of its own: for a read that
    found the tenant's rows gone, to tell an erased log from an empty one."""
    async with db.connection(tenant_id) as conn:
        await refuse_if_erased(conn, tenant_id)


def tenant_erased(tenant_id: str, *, at: datetime | None = None) -> FailedPrecondition:
    """The refusal of any work for an erased tenant (TENANT_ERASED), saying when
    if `at` is known."""
    when = "" if at is None else f" at {at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    return FailedPrecondition(
        f"tenant {tenant_id!r} was erased{when}; its id cannot be used again",
        reason="TENANT_ERASED",
    )


def tenant_being_erased(tenant_id: str) -> Unavailable:
    """The refusal of work that would have to wait for an erasure in progress:
    worth retrying, as the erasure may fail."""
    return Unavailable(f"tenant {tenant_id!r} is being erased; retry", retry_after=1.0)


async def share_erasure(conn: AnyConnection, tenant_id: str, *, seconds: float) -> None:
    """Shares the tenant's erasure lock for the rest of `conn`'s transaction,
    waiting at most `seconds` for an erasure in progress (then Unavailable)."""
    async with waiting_at_most(conn, seconds, busy="the tenant is being erased; retry"):
        await share_subjects(conn, [tenant_id], ERASURE_SUBJECT)


async def share_erasure_at_once(conn: AnyConnection, tenant_id: str) -> None:
    """Shares the tenant's erasure lock for the rest of `conn`'s transaction
    where that needs no wait: no erasure begins before the transaction ends,
    so nothing in it waits for one. Unavailable at once where an erasure holds
    the lock or waits for it."""
    if await try_share_subjects(conn, [tenant_id], ERASURE_SUBJECT):
        raise tenant_being_erased(tenant_id)


async def try_share_subjects(conn: AnyConnection, tenant_ids: list[str], subject: str) -> list[str]:
    """Takes the subject's lock of each tenant in shared mode where that needs
    no wait, for the rest of `conn`'s transaction; the tenants where it would
    (`lock_subject` holds it, or waits for it: PostgreSQL queues a shared
    request behind an exclusive one waiting)."""
    cursor = await conn.execute(
        sql.SQL(
            "SELECT tenant_id FROM unnest(%s::text[], %s::text[]) AS k(tenant_id, key) WHERE NOT {}"
        ).format(try_share_condition(sql.Identifier("key"))),
        [tenant_ids, [_lock_key(t, subject) for t in tenant_ids]],
    )
    return [tenant_id for (tenant_id,) in await cursor.fetchall()]


async def share_subjects(conn: AnyConnection, tenant_ids: list[str], subject: str) -> None:
    """Takes the subject's lock of each tenant in shared mode, for the rest of
    `conn`'s transaction: any number of holders at once, none while
    `lock_subject` holds it."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended(key, %s))"
        " FROM unnest(%s::text[]) AS key",
        [_LOCK_SEED, [_lock_key(tenant_id, subject) for tenant_id in tenant_ids]],
    )


def erasure_lock_keys(tenant_ids: Sequence[str]) -> list[str]:
    """The key of each tenant's erasure lock, for `try_share_condition`."""
    return [erasure_lock_key(tenant_id) for tenant_id in tenant_ids]


def erasure_lock_key(tenant_id: str) -> str:
    """The key of the tenant's erasure lock, for `try_share_condition`."""
    return _lock_key(tenant_id, ERASURE_SUBJECT)


def erasure_lock_key_of(tenant_id: sql.Composable) -> sql.Composed:
    """`erasure_lock_key` computed by the statement, of `tenant_id` (a column)."""
    return sql.SQL("({} || {})").format(tenant_id, sql.Literal(_lock_key("", ERASURE_SUBJECT)))


def try_share_condition(key: sql.Composable) -> sql.Composed:
    """A condition on `key` (an `erasure_lock_keys` key) for a statement's
    WHERE: true, with the lock now shared for the rest of the transaction;
    false, at once, where an erasure holds it or is queued for it."""
    return sql.SQL("pg_try_advisory_xact_lock_shared(hashtextextended({}, {}))").format(
        key, sql.Literal(_LOCK_SEED)
    )


def _lock_key(tenant_id: str, subject: str) -> str:
    """What a subject's advisory lock is taken on (hashed with _LOCK_SEED)."""
    return f"{tenant_id}/{subject}"
