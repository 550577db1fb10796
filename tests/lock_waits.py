"""Forcing an interleaving: a test holds, in a transaction of its own, a lock
the code under test takes, and goes on once that code is seen waiting for it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import psycopg

# A change's subject lock (store/changes.py), for f"{tenant}/{subject}".
SUBJECT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, x'5EA1C4A9'::int::bigint))"
# ... shared, as a change shares its caller's token subject.
SHARED_SUBJECT_LOCK = SUBJECT_LOCK.replace("_lock(", "_lock_shared(")


def count_now(sql: psycopg.Connection[Any], query: str, params: Sequence[Any] = ()) -> int:
    """`query`'s count, with pg_stat_activity read afresh: within a transaction
    PostgreSQL keeps its first reading, before the sessions to find began."""
    sql.execute("SELECT pg_stat_clear_snapshot()")
    row = sql.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def until(
    condition: Callable[[], bool],
    pending: Future[Any] | Sequence[Future[Any]],
    *,
    seconds: float = 10,
) -> None:
    """Returns once `condition()` holds, while `pending` is still pending
    (within `seconds`: a process of its own starts slower than a thread's call).
    Given several calls, any one still pending will do: calls racing for one
    place, the test cannot know which of them won it."""
    calls = [pending] if isinstance(pending, Future) else list(pending)
    deadline = time.monotonic() + seconds
    while not condition():
        waiting = any(not call.done() for call in calls)
        in_time = time.monotonic() < deadline
        if not (in_time and waiting):
            why = "every call ended" if in_time else f"the condition did not hold in {seconds:g} s"
            ended = "; ".join(f"call {i}: {_ended(call)}" for i, call in enumerate(calls))
            raise AssertionError(f"nothing waited: {why}; {ended}")
        time.sleep(0.01)


def _ended(call: Future[Any]) -> str:
    """How `call` ended, or that it is still pending: "nothing waited" alone
    did not tell a call that ended (and how) from a condition that never held
    while the call waited on (a long readers' test on a loaded CI machine)."""
    if not call.done():
        return "pending"
    if call.cancelled():
        return "cancelled"
    error = call.exception()
    if error is not None:
        return f"raised {type(error).__name__}: {error}"[:300]
    return f"returned {call.result()!r}"[:300]


def until_waiting(
    sql: psycopg.Connection[Any], pending: Future[Any], *, sessions: int = 1, seconds: float = 10
) -> None:
    """Returns once `sessions` other sessions wait for an advisory lock this one holds."""
    waiting = (
        "SELECT count(*) FROM pg_locks AS w JOIN pg_locks AS h USING (locktype, classid, objid)"
        " WHERE w.locktype = 'advisory' AND NOT w.granted AND h.granted"
        " AND h.pid = pg_backend_pid()"
    )
    until(lambda: count_now(sql, waiting) >= sessions, pending, seconds=seconds)


def until_blocked(
    sql: psycopg.Connection[Any],
    pending: Future[Any],
    *,
    waiter: str | None = None,
    running: str = "",
) -> None:
    """Returns once another session waits for any lock this one holds; with
    `waiter`, a session of that application_name ("sealtrail" for a server's
    pool, "sealtrail-retention" for a purge, "sealtrail-erasure"): else a
    purge pass of any server on the database, waiting there first, passed for
    the call the test meant to hold up. With `running`, a session whose
    statement begins so: every server in the process has a pool of
    "sealtrail" sessions, and on a table locked whole the session server's
    loops wait too (its forwarder's lease renewal, about every second, on
    `sinks`; its checkpointer's pass, every 10 s, on `checkpoints`)."""
    blocked = (
        "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
        " AND (%s::text IS NULL OR application_name = %s) AND starts_with(query, %s)"
    )
    until(lambda: count_now(sql, blocked, [waiter, waiter, running]) > 0, pending)
