"""The appender: group commit of concurrent Record and RecordBatch calls.

Calls hand their validated events to `Appender.append` and wait. One task per
process gathers what arrives within `max_wait` seconds (or until `batch_events`
events are waiting; at once for a lone caller when the previous commit served
one too) and writes it all in ONE transaction:

1. lock each touched tenant's `chain_heads` row FOR NO KEY UPDATE, in tenant
   order (this serialises every writer of a tenant across all server
   processes; a key share, a deployment sink's creation reading every head,
   is no writer and goes on beside it);
2. look up the batch's idempotency keys; a repeated key answers with the
   event recorded before;
3. give each new event the next seq, its id and received time, build its
   canonical record, hash it and extend the tenant's Merkle frontier;
4. insert the rows and the Merkle nodes they complete and update the heads, in
   one statement for a small batch (COPYing the rows of a large one), commit;
5. only then resolve the waiting calls.

A small batch of one tenant whose head the process itself wrote last needs
no lock and no transaction (ADR 0024): step 4's statement moves the head only
if its row is still as kept in memory, and commits alone. If another process
appended meanwhile, that check fails, nothing is written, and the batch is
written again as above.

fsync and round trips are paid once per batch instead of once per event.

Two lanes each do all of the above, with a connection of their own: one for
large submissions (LARGE_SUBMISSION_BYTES of events or more: a RecordBatch of
large events, which PostgreSQL may take seconds to write, or as much with its
tenant's submissions waiting in the other lane, or LARGE_BACKLOG_EVENTS: a
flood of smaller batches) and one for the rest.
A large submission waits for the small lane's writes of its tenant already
handed in; while a tenant has a submission in the large lane (until it is
written, whether or not its caller still waits), its next ones follow it
there, in order. So the small lane never waits for a head the large lane
holds, and other tenants' writes go on meanwhile (ADR 0002 addendum). A
commit takes at most MAX_COMMIT_BYTES of submissions (and at least one), so
the small lane's batches stay small too. The large lane takes its connection
for each batch within the pool's share for bulk work, so the connection left
for the small lane and single reads stays theirs; on a pool of fewer than 3
connections there is no such share, and the small lane takes every write.

Traced (a `tracer` given), each batch is a `sealtrail.append.commit` span of
its own trace, parent of the batch's statement spans. A batch serves many
calls, so it is no one's child: it links to the span of each call it
commits (the RPC's span, current when `append` was called), and each of
those links back to it. (A span per waiting call as well cost more than the
rest of tracing together; the RPC's span already covers the wait.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import psycopg
from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer
from psycopg import sql

from sealtrail._words import counted, noun

from ..domain.errors import (
    InvalidArgument,
    ResourceExhausted,
    SealtrailError,
    Unavailable,
    unexpected_failure,
)
from ..domain.event import (
    MAX_RECORD_BYTES,
    ServerFields,
    ValidEvent,
    finalize_record,
    format_timestamp,
    recorder_bytes,
)
from ..domain.event_ids import event_id_minter
from ..domain.merkle import EMPTY_ROOT, append_leaf, frontier_root, leaf_hash, split_frontier
from ..turns import Turns
from .append_measures import AppendMeasures
from .appended import Appended, AppendOutcome, SubmissionOutcome
from .arrays import ByteaArray, Float8Array, Int8Array, TextArray, text_array_literal
from .changes import (
    ERASURE_SUBJECT,
    change_connection,
    erasure_lock_keys,
    tenant_being_erased,
    tenant_erased,
    try_share_condition,
    try_share_subjects,
    when_change_ends,
)
from .database import SYSTEM_ROLE, Connection, Database
from .db_errors import named
from .idempotency import key_probe, repeated_key_outcome, stored_under
from .kept import KEEP_IDLE_SECONDS, Checkout, KeptConnection
from .partitions import OUTSIDE_MONTHS
from .tenant_settings import SettingsCache
from .traced import failures_by_class

log = logging.getLogger(__name__)


class ServerView(Protocol):
    """What the server assigned an event, serialized as the API serializes an
    event: after the event's caller view, its whole view (api/convert.py)."""

    def __call__(
        self, *, tenant_id: str, event_id: str, seq: int, received_at: datetime, leaf_hash: bytes
    ) -> bytes: ...


@dataclass(slots=True)
class _Submission:
    tenant_id: str
    events: Sequence[ValidEvent]
    views: Sequence[bytes | None]  # each event's caller view (see Appender.append)
    future: asyncio.Future[list[AppendOutcome]]
    span: trace.Span | None = None  # the calling RPC's span, when traced and recorded
    size: int = 0  # bytes of its views: what it holds in memory, about


@dataclass(slots=True)
class _Head:
    """A tenant's head as its row has it (`stored_size`, `stored_root`, and
    `version`, the xmin of the row's version: None if not known), and as the
    batch being written extends it (`size`, `frontier`)."""

    stored_size: int
    stored_root: bytes
    frontier: list[bytes]
    size: int = -1
    version: str | None = None

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = self.stored_size

    @property
    def changed(self) -> bool:
        return self.size != self.stored_size

    def copy(self) -> _Head:
        return _Head(self.stored_size, self.stored_root, list(self.frontier), version=self.version)

    def written(self) -> _Head:
        """The head its row has once the batch is committed (the version of
        its row is known once the statement answers)."""
        return _Head(self.size, frontier_root(self.frontier), self.frontier)


@dataclass(frozen=True, slots=True)
class _Sent:
    """A write whose commit was sent (the statement that commits it, or its
    COMMIT): what it answers once committed, the heads it moves, and the last
    event it appends of each tenant (seq, leaf hash), by which the database
    tells whether it committed (`_Lane._landed`)."""

    outcomes: list[list[AppendOutcome]]
    written: dict[str, _Head]
    last: dict[str, tuple[int, bytes]]
    received_at: datetime
    submissions: Sequence[_Submission]  # whose outcomes they are, in order


@dataclass(slots=True)
class _Doubt:
    """Of one write: what it sent with its commit, if it got that far (`_extend`)."""

    sent: _Sent | None = None


@dataclass(slots=True)
class _Pending:
    submissions: list[_Submission] = field(default_factory=list)
    events: int = 0
    size: int = 0
    # The same, of each tenant with submissions waiting.
    tenant_events: Counter[str] = field(default_factory=Counter)
    tenant_size: Counter[str] = field(default_factory=Counter)

    def add(self, submission: _Submission) -> None:
        self.submissions.append(submission)
        self.events += len(submission.events)
        self.size += submission.size
        self.tenant_events[submission.tenant_id] += len(submission.events)
        self.tenant_size[submission.tenant_id] += submission.size

    def add_first(self, submissions: list[_Submission]) -> None:
        """`submissions` wait again, ahead of the others."""
        self.submissions[:0] = submissions
        for submission in submissions:
            self.events += len(submission.events)
            self.size += submission.size
            self.tenant_events[submission.tenant_id] += len(submission.events)
            self.tenant_size[submission.tenant_id] += submission.size

    def taken(self, batch: list[_Submission]) -> None:
        """`batch`, submissions in the order they wait (the first ones, most
        often), is no longer waiting."""
        if all(a is b for a, b in zip(batch, self.submissions, strict=False)):
            self.submissions = self.submissions[len(batch) :]
        else:
            gone = {id(submission) for submission in batch}
            self.submissions = [s for s in self.submissions if id(s) not in gone]
        for submission in batch:
            self.events -= len(submission.events)
            self.size -= submission.size
            tenant = submission.tenant_id
            self.tenant_events[tenant] -= len(submission.events)
            self.tenant_size[tenant] -= submission.size
            if not self.tenant_events[tenant] and not self.tenant_size[tenant]:
                del self.tenant_events[tenant], self.tenant_size[tenant]

    def of(self, tenant_id: str) -> tuple[int, int]:
        """The events of `tenant_id` waiting, and their size in bytes."""
        return self.tenant_events.get(tenant_id, 0), self.tenant_size.get(tenant_id, 0)


# Committed appends are announced here as `tenant:tree size` (stream/hub.py).
NOTIFY_CHANNEL = "sealtrail_events"
_EVENT_COLUMNS = (
    ("tenant_id", "text"),
    ("seq", "bigint"),
    ("id", "uuid"),
    ("occurred_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("action", "text"),
    ("category", "text"),
    ("severity", "smallint"),
    ("outcome", "text"),
    ("actor_id", "text"),
    ("actor_email", "text"),
    ("resource_type", "text"),
    ("resource_id", "text"),
    ("request_id", "uuid"),
    ("trace_id", "text"),
    ("idempotency_key", "text"),
    ("recorded_by", "uuid"),
    ("ip", "inet"),
    ("search_names", "text"),
    # The record's actor.credential (migration 0056, ADR 0142): its kind, ""
    # for none (NULL is a row appended before), its id and hint, NULL for none.
    ("credential_kind", "text"),
    ("credential_id", "text"),
    ("credential_hint", "text"),
    # The record's context.duration_ms (migration 0064, ADR 0149), NULL for none.
    ("duration_ms", "float8"),
    # The record's actor.roles (migration 0065, ADR 0152), NULL for none: sent
    # as an array literal's text (store/arrays.py), as unnest() takes no ragged
    # array of arrays, cast by the statement; COPY reads the literal itself.
    ("actor_roles", "text[]"),
    ("leaf_hash", "bytea"),
    ("record", "text"),
    ("caller_view", "bytea"),
    ("event_view", "bytea"),
)
_EVENT_NAMES = sql.SQL(", ").join(sql.Identifier(name) for name, _ in _EVENT_COLUMNS)
# The array each column is sent as (store/arrays.py). Ids and times are sent as
# text, as the appender holds them, and cast by the statement.
_Array = type[TextArray] | type[Int8Array] | type[ByteaArray] | type[Float8Array]
_ARRAY_OF: Final[dict[str, _Array]] = {
    "text": TextArray,
    "uuid": TextArray,
    "inet": TextArray,
    "timestamptz": TextArray,
    "bigint": Int8Array,
    "smallint": Int8Array,
    "bytea": ByteaArray,
    "float8": Float8Array,
    "text[]": TextArray,
}
# A column sent as another kind, cast back by the statement: an array's
# literal, one text each.
_SENT_AS: Final[dict[str, str]] = {"text[]": "text"}
_EVENT_ARRAYS: Final = tuple(_ARRAY_OF[kind] for _, kind in _EVENT_COLUMNS)
_NODE_ARRAYS: Final = (TextArray, Int8Array, Int8Array, ByteaArray)  # tenant, level, idx, hash
_COPY_EVENTS = (
    sql.SQL("COPY events ({columns}) FROM STDIN")
    .format(columns=_EVENT_NAMES)
    .as_string(None)  # composed once, not at every execution
)
# A batch of up to this many events is written in one statement with its nodes
# and heads (_EXTEND, one round trip); a larger one is COPYed as it is built,
# then extends the heads. Measured on 2 cores: the one statement saves about
# 1 ms of a lone event's 4 ms; COPY is ahead again from about 100 events.
_ONE_STATEMENT_EVENTS = 64
# Heads kept in memory for writes without a lock (most recently written first
# to stay); a tenant whose head is not kept is written under lock, as at first.
_KEPT_HEADS = 10_000
# A submission of this many bytes of events or more is written by the large
# lane: about a third of a second of PostgreSQL's time (46 MB took 15 s).
LARGE_SUBMISSION_BYTES: Final = 1 << 20
# ... and so is one whose tenant has so much waiting in the small lane with
# it, in bytes or in events (2,000 small ones, about a third of a second to
# write too): a tenant sending RecordBatches of 1,000 small events faster than
# they are written filled the small lane's commits of 5,000 events, and every
# other tenant's Record waited behind its backlog, 1.4 s rather than 2 ms.
LARGE_BACKLOG_EVENTS: Final = 2000
# A commit takes submissions up to this many bytes (and one, however large).
MAX_COMMIT_BYTES: Final = 4 << 20
# The least pool with room for the large lane beside the changes' share and
# the connection left for the small lane (store/database.py).
_LEAST_POOL_FOR_TWO_LANES: Final = 3
# When an overloaded process asks callers to come back: a few batches' time.
_OVERLOADED_RETRY_SECONDS = 1.0
# How long a stop whose time ran out mid-commit asks the database at most
# whether the write committed (`_Lane._answer_stopped`), within the stop's
# own timeout too: a database that does not answer must not hold the stop.
_STOPPED_WRITE_ASK_SECONDS = 5.0
# How often an idle appender looks whether a caller waits for its kept connection.
_IDLE_CHECK_SECONDS = 0.05
# How long appends of a tenant whose head another session held past the lock
# timeout are refused without a try: each try may cost the whole process a
# lock timeout's wait.
HELD_ELSEWHERE_SECONDS = 30.0
# A write that waited out its time: the lock timeout, or a statement timeout
# of the database's or role's shorter than it (the first statement of a write
# under lock, and a write from a kept head, are under it: _NO_STATEMENT_TIMEOUT),
# which ended its wait for a head another session holds as well. Either is
# looked into as a head held elsewhere; ended by the statement timeout, a
# whole batch was failed UNAVAILABLE, and each of the held tenant's retries
# held up the process and failed its batch again. With no head held, the
# batch is written again under lock: a write from a kept head cut short by the
# statement timeout (its statement outlasted it) is then written free of it.
_WAITED_OUT: Final = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)
# How long a write holding heads may sit idle in its transaction, between two
# of its statements, before PostgreSQL ends its session, rolling it back and
# letting its heads go. A process frozen there (SIGSTOP, `docker pause`, a
# debugger, a host swapping hard) kept them for as long as its host's TCP
# answered for it, which is for ever when only the process stopped: every
# other process refused the tenants' appends as held elsewhere, for as long.
# Between its statements a write only builds and hashes records, a turn of
# milliseconds at a time; its batch, should it run out, is answered
# UNAVAILABLE, never as written. About HELD_ELSEWHERE_SECONDS: the others'
# first try after refusing the tenant then finds its head free.
IDLE_IN_WRITE_SECONDS = 30.0
# A write under lock runs its statements after the first for as long as they
# take, whatever the database's or role's `statement_timeout` (a DBA's guard
# against runaway queries; a write from a kept head, of 64 events at most, is
# one statement, the database's work alone, and stays under it: cut short, it
# is written again under lock, _WAITED_OUT): a large
# batch's COPY stays open while the server builds and hashes its records, and
# gives the process's other calls their turns meanwhile, so its length is the
# server's own doing; cut short, the batch (every caller in it) was answered
# UNAVAILABLE, and cut short again at each retry. Its waits for locks are
# bounded by the lock timeout, and its idling by IDLE_IN_WRITE_SECONDS.
_NO_STATEMENT_TIMEOUT: Final = "0"
# Both set for the rest of the transaction; a statement timeout of None, as it is.
_IDLE_IN_WRITE = (
    "SELECT set_config('idle_in_transaction_session_timeout', %s, true),"
    " set_config('statement_timeout', coalesce(%s, current_setting('statement_timeout')), true)"
)


def _held_elsewhere_error(tenant_id: str, seconds: float) -> Unavailable:
    return Unavailable(
        f"tenant {tenant_id!r}'s log is held by another server process that stopped"
        " answering; retry later",
        retry_after=seconds,
    )


# Each head is updated only if its row is still as the batch found it (size and
# root, and the very row version: its xmin); a tenant whose head another
# process extended meanwhile gets none of its rows or nodes inserted, and is
# not in the answer (`tenant_id`s updated, with the xmin of the version each
# now has). Under a head lock that always holds; without one it is what makes
# the write safe (see Appender._write). The version is also how a range of a
# period (store/events.py, `time_once_appended`) fences off the writes from a
# kept head stamped before its time: it rewrites the head as it is, and a
# write stamped before that, which had not yet taken the head, writes nothing
# and is written again under lock, stamped anew. Written from a kept head, the batch's idempotency
# keys are looked up here too (`seen`, one index probe each, as idempotency.py
# does): if one is stored, nothing is written and the answer says so (a row of NULL,
# 'seen'), where a lookup of its own cost every append a round trip. A batch
# without keys does not look (_EXTEND): a lookup plans over, and locks, every
# partition of events, where an insert touches only the one it goes to.
_SEEN_NOTHING = sql.SQL("SELECT WHERE false")
# The keys alone, so the probe reads the index only.
_SEEN_STORED = sql.SQL("SELECT" + key_probe("") + " LIMIT 1")


def _extend_statement(seen: sql.SQL) -> str:
    return (
        sql.SQL(
            "WITH seen AS ({seen}),"
            " updated AS ("
            " UPDATE chain_heads AS h SET tree_size = u.tree_size, root_hash = u.root_hash,"
            " frontier = u.frontier, updated_at = now()"
            " FROM unnest(%b::text[], %b::bigint[], %b::bytea[], %b::text[], %b::bigint[],"
            " %b::bytea[], %b::bytea[], %b::text[])"
            " AS u(tenant_id, stored_size, stored_root, stored_version, tree_size, root_hash,"
            " frontier, erasure_key)"
            " WHERE h.tenant_id = u.tenant_id AND h.tree_size = u.stored_size"
            " AND h.root_hash = u.stored_root AND h.xmin = u.stored_version::xid"
            # Of u alone, so tried before any head is locked: never wait for an erasure.
            " AND {not_being_erased} AND NOT EXISTS (SELECT FROM seen)"
            " RETURNING h.tenant_id, h.tree_size, h.xmin),"
            " appended AS ("
            " INSERT INTO events ({columns}) SELECT {selected} FROM unnest({event_arrays})"
            " AS e({columns})"
            " WHERE e.tenant_id IN (SELECT tenant_id FROM updated)),"
            " nodes AS ("
            " INSERT INTO tree_nodes (tenant_id, level, idx, hash)"
            " SELECT * FROM unnest(%b::text[], %b::smallint[], %b::bigint[], %b::bytea[])"
            " AS n(tenant_id, level, idx, hash)"
            " WHERE n.tenant_id IN (SELECT tenant_id FROM updated))"
            " SELECT tenant_id, pg_notify({channel}, tenant_id || ':' || tree_size)::text,"
            " xmin::text FROM updated UNION ALL SELECT NULL, 'seen', NULL FROM seen"
        )
        .format(
            seen=seen,
            columns=_EVENT_NAMES,
            # Binary arrays: a record's quotes need no escaping, bytea no hex.
            event_arrays=sql.SQL(", ").join(
                sql.SQL("%b::{}[]").format(sql.SQL(_SENT_AS.get(kind, kind)))
                for _, kind in _EVENT_COLUMNS
            ),
            selected=sql.SQL(", ").join(
                sql.SQL("e.{}::{}").format(sql.Identifier(name), sql.SQL(kind))
                if kind in _SENT_AS
                else sql.SQL("e.{}").format(sql.Identifier(name))
                for name, kind in _EVENT_COLUMNS
            ),
            channel=sql.Literal(NOTIFY_CHANNEL),
            not_being_erased=try_share_condition(sql.SQL("u.erasure_key")),
        )
        .as_string(None)
    )


_EXTEND = _extend_statement(_SEEN_NOTHING)
_EXTEND_UNLESS_SEEN = _extend_statement(_SEEN_STORED)


@dataclass(frozen=True, slots=True)
class _Received:
    """When a batch was received, in each form its events take it: made once a
    batch, not once a submission or an event."""

    time: datetime
    text: str  # as records write it
    mint_event_id: Callable[[], str]  # ids that name it (ADR 0031)

    @classmethod
    def at_time(cls, time: datetime) -> _Received:
        return cls(time, format_timestamp(time), event_id_minter(time))


class Appender:
    """Gathers concurrent appends and commits them together, large submissions
    in a lane of their own. Start it once per process with `start()`; `stop()`
    commits what is pending and ends it."""

    def __init__(
        self,
        db: Database,
        *,
        max_wait: float = 0.005,
        batch_events: int = 64,
        max_pending_events: int = 20_000,
        max_pending_bytes: int = 256 * 1024 * 1024,
        max_commit_events: int = 5000,
        max_commit_bytes: int = MAX_COMMIT_BYTES,
        large_bytes: int = LARGE_SUBMISSION_BYTES,
        large_events: int = LARGE_BACKLOG_EVENTS,
        store_tree_nodes: bool = True,
        server_view: ServerView | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tracer: Tracer | None = None,
        meter: Meter | None = None,
        settings: SettingsCache | None = None,
    ) -> None:
        """`settings`: the tenants' settings as this process keeps them, which
        the records Sealtrail writes itself follow (their IP recording, ADR
        0154; `api.audited.record_event`); None, they keep addresses whole
        (the operator's commands, which record none). `server_view`: given,
        each event appended with a caller view is stored with its whole view
        (the caller view, then this; ADR 0025); None, with the caller view
        alone (ADR 0022). `meter`: what each batch held and took, and what
        waits (docs/metrics.md). A submission
        of `large_bytes` of views or more goes to the large lane, as does one
        whose tenant has waiting in the small lane, with it, `large_bytes` or
        `large_events` (its backlog: `_goes_large`). The pending
        limits hold for both lanes together."""
        self.settings = settings
        self._measures = AppendMeasures(meter, waiting=self._waiting)
        # Tenants whose head a change of this process holds, from its record
        # (`append_within`) to its transaction's end: the lanes leave their
        # submissions waiting until then (`_Lane._take_batch`).
        self._held_by_changes: Counter[str] = Counter()

        def lane(name: str, checkout: Checkout, *, keep: bool) -> _Lane:
            return _Lane(
                db,
                name=name,
                checkout=checkout,
                keep=keep,
                held_by_changes=self._held_by_changes,
                waiting=self._waiting,
                waiting_of=self._waiting_of,
                measures=self._measures,
                max_wait=max_wait,
                batch_events=batch_events,
                max_pending_events=max_pending_events,
                max_pending_bytes=max_pending_bytes,
                max_commit_events=max_commit_events,
                max_commit_bytes=max_commit_bytes,
                store_tree_nodes=store_tree_nodes,
                server_view=server_view,
                clock=clock,
                tracer=tracer,
            )

        # Its writes' connection, kept from batch to batch (ADR 0046); the large
        # lane's, taken for each batch within the bulk share.
        self._small = lane(
            "sealtrail-appender", lambda: db.system_connection(generic_plans=True), keep=True
        )
        self._large = lane("sealtrail-appender-large", db.bulk_system_connection, keep=False)
        two_lanes = db.pool.max_size >= _LEAST_POOL_FOR_TWO_LANES
        self._large_bytes = large_bytes if two_lanes else None
        self._large_events = large_events
        # Tenants whose large submission waits for the small lane's writes of
        # them: their next writes follow it.
        self._joining_large: Counter[str] = Counter()
        # ... their events and bytes, counted in the pending limits as they
        # wait: a flood of a tenant's batches following its backlog waited
        # there without bound, rather than being refused OVERLOADED.
        self._joining_events: Counter[str] = Counter()
        self._joining_size: Counter[str] = Counter()

    def _waiting(self) -> tuple[int, int]:
        small, large = self._small.waiting, self._large.waiting
        joining = self._joining_events.total(), self._joining_size.total()
        return small[0] + large[0] + joining[0], small[1] + large[1] + joining[1]

    def _waiting_of(self, tenant_id: str) -> tuple[int, int]:
        small, large = self._small.waiting_of(tenant_id), self._large.waiting_of(tenant_id)
        joining = self._joining_events[tenant_id], self._joining_size[tenant_id]
        return small[0] + large[0] + joining[0], small[1] + large[1] + joining[1]

    @property
    def kept_connections(self) -> int:
        """Pooled connections it holds between batches now (ADR 0046)."""
        return int(self._small.keeps_connection)

    def start(self) -> None:
        self._small.start()
        self._large.start()

    async def stop(self, timeout: float = 30.0) -> None:
        """Commit everything already handed in, then end the appender's tasks.
        What is not committed within `timeout` (a head locked elsewhere, a
        database gone) is answered UNAVAILABLE; its callers retry elsewhere."""
        await asyncio.gather(self._small.stop(timeout), self._large.stop(timeout))

    async def append(
        self,
        tenant_id: str,
        events: Sequence[ValidEvent],
        views: Sequence[bytes | None] | None = None,
    ) -> list[AppendOutcome]:
        """Append `events` to the tenant's log; answers after they are committed.
        `views`, one per event, are what Query shows of each: the API's
        serialized caller view (ADR 0022), stored with the server's fields
        after it (`server_view`; ADR 0025) or as given; None stores none, and
        the event is shown from its record.

        Not for the tenant of a change in progress in this task
        (store/changes.py): AssertionError, at once. Its records commit with
        it, `append_within`; this one, made after the change's record, waited
        for the change to end, which waited for it (ADR 0087), and made
        before, committed though the change might roll back (ADR 0075)."""
        if change_connection(tenant_id) is not None:
            raise AssertionError(
                f"an append of tenant {tenant_id!r} through the appender inside a change of it"
                " would wait for the change to end; record it with append_within (record_event)"
            )
        size = sum(len(view) for view in views if view is not None) if views else 0
        follows = tenant_id in self._joining_large or self._large.holds(tenant_id)
        if not follows and not self._goes_large(tenant_id, len(events), size):
            return await self._small.append(tenant_id, events, views, size)
        # Its head must be free of the small lane's writes before the large
        # lane locks it: a small batch waiting for it held up every tenant in
        # it, and ended with the tenant refused as held by another process.
        self._large.refuse_if_full(tenant_id, len(events), size)
        self._joining_large[tenant_id] += 1
        self._joining_events[tenant_id] += len(events)
        self._joining_size[tenant_id] += size
        try:
            await self._small.written(tenant_id)
        finally:
            self._joining_large[tenant_id] -= 1
            self._joining_events[tenant_id] -= len(events)
            self._joining_size[tenant_id] -= size
            if not self._joining_large[tenant_id]:
                del self._joining_large[tenant_id]
                del self._joining_events[tenant_id], self._joining_size[tenant_id]
        return await self._large.append(tenant_id, events, views, size)

    async def append_within(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant_id: str,
        events: Sequence[ValidEvent],
        views: Sequence[bytes | None] | None = None,
    ) -> list[AppendOutcome]:
        """As `append`, but in `conn`'s transaction (a tenant's, open): the
        events commit when it does, or not at all. For a change's record
        (store/changes.py, `recorded_within`; ADR 0075), which must commit
        with the change. It locks the tenant's head for the rest of the
        transaction, as the system role, then leaves the transaction's role,
        lock timeout and idle timeout as it found them."""
        if views is None:
            views = [None] * len(events)
        elif len(views) != len(events):
            raise ValueError(f"{len(views)} views for {len(events)} events")
        # The head it locks stays locked until the change ends, and a lane's
        # write waited for it there, every other tenant of its batch with it;
        # past the lock timeout the tenant was refused for
        # HELD_ELSEWHERE_SECONDS, as if another process had frozen holding it.
        # The lanes leave the tenant's writes waiting until the change ends.
        if when_change_ends(conn, tenant_id, lambda: self._change_ended(tenant_id)):
            self._held_by_changes[tenant_id] += 1
        return await self._small.append_within(conn, tenant_id, events, views)

    def _goes_large(self, tenant_id: str, events: int, size: int) -> bool:
        """Whether a submission of `events` and `size` bytes of views is for
        the large lane: large itself, or its tenant's backlog in the small lane
        with it is. The small lane then holds at most about that much of any
        tenant ahead of another's Record; the backlog follows it to the large
        lane, in order, and comes back once that is written."""
        if self._large_bytes is None:
            return False
        waiting_events, waiting_size = self._small.waiting_of(tenant_id)
        return (
            waiting_size + size >= self._large_bytes
            or waiting_events + events >= self._large_events
        )

    def _change_ended(self, tenant_id: str) -> None:
        """A change that recorded itself for `tenant_id` has ended: its head
        is free of it."""
        self._held_by_changes[tenant_id] -= 1
        if self._held_by_changes[tenant_id] <= 0:
            del self._held_by_changes[tenant_id]
            self._small.resume(tenant_id)
            self._large.resume(tenant_id)


class _Lane:
    """One task's group commit: the appends handed to it, gathered and
    committed together, one batch at a time, on a connection of `checkout`
    (kept between batches if `keep`)."""

    def __init__(
        self,
        db: Database,
        *,
        name: str,
        checkout: Checkout,
        keep: bool,
        held_by_changes: Counter[str],
        waiting: Callable[[], tuple[int, int]],
        waiting_of: Callable[[str], tuple[int, int]],
        measures: AppendMeasures,
        max_wait: float,
        batch_events: int,
        max_pending_events: int,
        max_pending_bytes: int,
        max_commit_events: int,
        max_commit_bytes: int,
        store_tree_nodes: bool,
        server_view: ServerView | None,
        clock: Callable[[], datetime],
        tracer: Tracer | None,
    ) -> None:
        self._db = db
        self._name = name
        self._checkout = checkout
        self._kept = KeptConnection(db, checkout) if keep else None
        self._held_by_changes = held_by_changes  # shared by the lanes (Appender)
        # Submissions of the batch being written that wait again (ids).
        self._left_waiting: set[int] = set()
        self._waiting_in_all = waiting  # the events and bytes waiting in every lane
        self._waiting_of_tenant = waiting_of  # ... of one tenant
        # Its tenants' submissions handed in and not yet written (or failed),
        # whether or not their callers still wait; `_batch_done` after each batch.
        self._tenants: Counter[str] = Counter()
        self._batch_done = asyncio.Event()  # set, and replaced, after each batch
        self._server_view = server_view
        self._tracer = tracer
        self._max_wait = max_wait
        self._batch_events = batch_events
        self._max_pending_events = max_pending_events
        self._max_pending_bytes = max_pending_bytes
        self._max_commit_events = max_commit_events
        self._max_commit_bytes = max_commit_bytes
        self._store_tree_nodes = store_tree_nodes
        self._clock = clock
        self._pending = _Pending()
        self._has_work = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # Heads as this process last wrote or locked them (ADR 0024).
        self._heads: OrderedDict[str, _Head] = OrderedDict()
        self._last_batch_calls = 0  # calls the previous commit served
        # Tenants whose head this process has seen: the others' may need
        # creating. As many as the heads kept, the least recently written
        # making room (each tenant ever written stayed for good): one
        # forgotten is written as one never seen.
        self._known_tenants: OrderedDict[str, None] = OrderedDict()
        # Tenants whose head another session held past the lock timeout, and
        # until when their appends are refused without a try (loop time).
        self._held_elsewhere: dict[str, float] = {}
        self._measures = measures
        # Of the write under way (`_write_from_kept`, `_write_locked`): what it
        # sent with its commit, if it got that far, for a stop that cancels it.
        self._doubt: _Doubt | None = None
        self._stop_ask_seconds = _STOPPED_WRITE_ASK_SECONDS

    def _measure(self, batch: list[_Submission], started: float) -> None:
        self._measures.batch(sum(len(s.events) for s in batch), time.perf_counter() - started)
        self._measures.answered(_answers(batch))

    @property
    def keeps_connection(self) -> bool:
        """Whether it holds a pooled connection between batches now (ADR 0046)."""
        return self._kept is not None and self._kept.kept

    def holds(self, tenant_id: str) -> bool:
        """Whether a submission of the tenant waits here or is being written."""
        return tenant_id in self._tenants

    async def written(self, tenant_id: str) -> None:
        """Once no submission of the tenant waits here or is being written."""
        while tenant_id in self._tenants:
            await self._batch_done.wait()

    def _handed_in(self, submission: _Submission) -> None:
        self._pending.add(submission)
        self._tenants[submission.tenant_id] += 1

    def _done_with(self, batch: list[_Submission]) -> None:
        """`batch` is written, or failed: its tenants are free of it here."""
        for submission in batch:
            self._tenants[submission.tenant_id] -= 1
            if not self._tenants[submission.tenant_id]:
                del self._tenants[submission.tenant_id]
        self._batch_done.set()
        self._batch_done = asyncio.Event()

    @property
    def waiting(self) -> tuple[int, int]:
        """The events handed in and not yet taken, and their size in bytes."""
        return self._pending.events, self._pending.size

    def waiting_of(self, tenant_id: str) -> tuple[int, int]:
        """`waiting`, of one tenant."""
        return self._pending.of(tenant_id)

    def resume(self, tenant_id: str) -> None:
        """The tenant's head is no longer held by a change of this process:
        its submissions left waiting are taken again."""
        if self._pending.of(tenant_id)[0]:
            self._has_work.set()
            if self._pending.events >= self._batch_events:
                self._batch_full.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self, timeout: float) -> None:
        """Commit everything already handed in, then end the task."""
        self._stopping = True
        self._has_work.set()
        self._batch_full.set()
        if self._task is None:
            return
        self._stop_ask_seconds = min(timeout, _STOPPED_WRITE_ASK_SECONDS)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            _fail(self._pending.submissions, Unavailable("the server stopped", retry_after=1.0))
            self._measures.answered(_answers(self._pending.submissions))
            self._done_with(self._pending.submissions)
            self._pending = _Pending()
        self._task = None

    async def append(
        self,
        tenant_id: str,
        events: Sequence[ValidEvent],
        views: Sequence[bytes | None] | None,
        size: int,
    ) -> list[AppendOutcome]:
        """As Appender.append, in this lane; `size` the bytes of `views`."""
        if self._stopping:
            raise Unavailable("the server is shutting down", retry_after=1.0)
        if (held_until := self._held_elsewhere.get(tenant_id)) is not None:
            remaining = held_until - asyncio.get_running_loop().time()
            if remaining > 0:
                raise _held_elsewhere_error(tenant_id, remaining)
            del self._held_elsewhere[tenant_id]
        if views is None:
            views = [None] * len(events)
        elif len(views) != len(events):
            raise ValueError(f"{len(views)} views for {len(events)} events")
        self.refuse_if_full(tenant_id, len(events), size)
        future: asyncio.Future[list[AppendOutcome]] = asyncio.get_running_loop().create_future()
        caller = trace.get_current_span() if self._tracer is not None else None
        if caller is not None and not caller.is_recording():
            caller = None
        self._handed_in(_Submission(tenant_id, events, views, future, caller, size))
        self._has_work.set()
        if self._pending.events >= self._batch_events:
            self._batch_full.set()
        return await future

    def refuse_if_full(self, tenant_id: str, events: int, size: int) -> None:
        """ResourceExhausted (OVERLOADED) if `events` of `size` bytes more of
        `tenant_id` would take what waits to be written past the pending
        limits, of all tenants or of the tenant's half."""
        waiting, waiting_size = self._waiting_in_all()
        if waiting and (
            waiting + events > self._max_pending_events
            or waiting_size + size > self._max_pending_bytes
        ):
            # Overloaded: more would wait past callers' deadlines (whose retries
            # add more still), or hold more memory than the process may give
            # them (events of up to 64 KiB). Refused now, nothing written; one
            # batch however large is taken when nothing waits.
            raise ResourceExhausted(
                f"{counted(waiting, 'event')} ({counted(waiting_size, 'byte')})"
                f" {noun(waiting, 'is', 'are')} waiting to be written on this server;"
                " retry shortly",
                retry_after=_OVERLOADED_RETRY_SECONDS,
                reason="OVERLOADED",
            )
        own, own_size = self._waiting_of_tenant(tenant_id)
        if own and (
            own + events > self._max_pending_events // 2
            or own_size + size > self._max_pending_bytes // 2
        ):
            # One tenant's waiting events take at most half of either bound
            # (but for its first submission, taken as above): a recorder
            # sending batches faster than they are written filled it all, and
            # every other tenant's writes, and reads (each waits for its
            # access record), were refused meanwhile.
            raise ResourceExhausted(
                f"{counted(own, 'event')} ({counted(own_size, 'byte')}) of this tenant"
                f" {noun(own, 'is', 'are')} waiting to be written on this server, as many as one"
                " tenant may have waiting; retry shortly",
                retry_after=_OVERLOADED_RETRY_SECONDS,
                reason="OVERLOADED",
            )

    async def append_within(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant_id: str,
        events: Sequence[ValidEvent],
        views: Sequence[bytes | None],
    ) -> list[AppendOutcome]:
        """As Appender.append_within."""
        submission = _Submission(
            tenant_id, events, views, asyncio.get_running_loop().create_future()
        )
        # The head it moves is no longer the one kept: the next write of the
        # tenant here locks it, as after another process's. Unless this lane
        # is writing the tenant now: that write reads and drops the kept head
        # as it goes (a KeyError there failed its whole batch UNAVAILABLE), so
        # it is left to it; whatever it keeps, a write from a head the change
        # moved writes nothing, and is written again under lock (ADR 0024).
        if not self.holds(tenant_id):
            self._heads.pop(tenant_id, None)
        # The head waited for as the appender's other writes wait for theirs:
        # the database's `system_lock_timeout`, not the default of it (a
        # database opened with another waited SYSTEM_LOCK_TIMEOUT here).
        cursor = await conn.execute(_WITHIN, [SYSTEM_ROLE, self._db.system_lock_timeout])
        found = await cursor.fetchone()
        assert found is not None
        try:
            outcomes = await self._write_within(conn, tenant_id, submission)
        except Exception:
            # Counted as the appender's own appends are (docs/metrics.md): its
            # failures are what the alert on failed appends watches.
            self._measures.answered({"failed": len(events)})
            # Refused with the transaction still good (the tenant erased, or
            # being erased), its caller may catch that and go on: as it was,
            # not as the system role, which sees every tenant's rows. After a
            # database error nothing more runs in it.
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
                await conn.execute(_AS_FOUND, list(found[:3]))
            raise
        failed = sum(isinstance(outcome, SealtrailError) for outcome in outcomes)
        self._measures.answered({"written": len(outcomes) - failed, "failed": failed})
        await conn.execute(_AS_FOUND, list(found[:3]))
        return outcomes

    async def _write_within(
        self, conn: psycopg.AsyncConnection[Any], tenant_id: str, submission: _Submission
    ) -> list[AppendOutcome]:
        """append_within's write, as the system role."""
        try:
            heads, erasing = await self._lock_heads(conn, [tenant_id])
        except psycopg.errors.LockNotAvailable as error:
            raise Unavailable(
                f"tenant {tenant_id!r}'s log is being written by another process; retry",
                retry_after=1.0,
            ) from error
        if tenant_id not in heads:
            raise tenant_being_erased(tenant_id) if erasing else tenant_erased(tenant_id)
        try:
            [outcomes], _, _ = await self._write_from(heads, conn, [submission])
        except psycopg.Error as error:
            # The change rolls back with it: nothing recorded, nothing applied.
            log.error("appender: the database refused a change's record: %s", named(error))
            raise Unavailable(
                "the database refused the change's record", retry_after=1.0
            ) from error
        return outcomes

    async def _run(self) -> None:
        try:
            await self._take_batches()
        finally:
            await self._give_back_kept()

    async def _wait_for_work(self) -> None:
        """Until there is work. The kept connection goes back to the pool once
        unused for KEEP_IDLE_SECONDS, or sooner when another caller waits."""
        loop = asyncio.get_running_loop()
        idle_until = loop.time() + KEEP_IDLE_SECONDS
        while self.keeps_connection and not self._has_work.is_set():
            try:
                async with asyncio.timeout(_IDLE_CHECK_SECONDS):
                    await self._has_work.wait()
            except TimeoutError:
                if loop.time() >= idle_until or self._db.pool_has_waiters():
                    await self._give_back_kept()
        await self._has_work.wait()

    async def _give_back_kept(self) -> None:
        """The kept connection back to the pool; a failure there (none is known)
        is logged, not let end the one task that writes every append."""
        if self._kept is None:
            return
        try:
            await self._kept.give_back()
        except Exception:
            log.exception("appender: giving its connection back failed")

    async def _take_batches(self) -> None:
        while True:
            await self._wait_for_work()
            if not self._pending.submissions:
                if self._stopping:
                    return
                self._has_work.clear()
                continue
            if (
                self._pending.events < self._batch_events
                and not self._stopping
                and not self._alone()
            ):
                # Wait a little for more callers: larger batches, less overhead each.
                timer = asyncio.get_running_loop().call_later(self._max_wait, self._batch_full.set)
                await self._batch_full.wait()
                timer.cancel()
            batch = self._take_batch()
            if not batch:  # all of tenants whose head a change here holds
                continue
            self._last_batch_calls = len(batch)
            started = time.perf_counter()
            self._left_waiting.clear()
            self._doubt = None
            try:
                await self._commit_traced(batch)
            except asyncio.CancelledError:
                batch = self._finished(batch)
                # Stopped mid-commit: rolled back, unless the COMMIT had already
                # reached the database, which is asked, as after a connection
                # lost (`_landed`), within a bound. Landed, its callers are
                # answered as written; else, or if the database cannot tell, a
                # retry with the event's idempotency key is answered from what
                # was written.
                await self._answer_stopped()
                self._done_with(batch)
                _fail(
                    batch,
                    Unavailable(
                        "the server stopped during the write, which may or may not have"
                        " committed; retry (with an idempotency key to avoid a duplicate)",
                        retry_after=1.0,
                    ),
                )
                self._measure(batch, started)
                raise
            except Exception:  # keep the appender alive whatever happens
                log.exception("appender: unexpected failure")
                batch = self._finished(batch)
                _fail(batch, Unavailable("the append failed; retry", retry_after=1.0))
            else:
                batch = self._finished(batch)
            self._done_with(batch)
            self._measure(batch, started)
            # Answered, the batch is let go: held (here, and by what its write
            # sent) until the next began, an idle lane kept its last one, its
            # events and records, a large lane's one submission however large.
            self._doubt = None
            del batch

    async def _answer_stopped(self) -> None:
        """After a stop cancelled the write under way: if it sent its commit,
        whether that committed, asked of the database for at most the stop's
        bound (`_stop_ask_seconds`); if so, its callers are answered as
        written. They were answered that it may or may not have committed,
        though it had (a commit waiting for a synchronous standby, say, whose
        wait psycopg cancels once the commit has landed)."""
        doubt, self._doubt = self._doubt, None
        sent = None if doubt is None else doubt.sent
        if sent is None:
            return
        landed: bool | None = None
        try:
            async with asyncio.timeout(self._stop_ask_seconds):
                landed = await self._landed(sent)
        except (TimeoutError, asyncio.CancelledError):  # the stop ends now
            pass
        _log_doubt(sent, landed, while_="the server stopped", unasked=" in time")
        if landed:
            self._keep(sent.written)
            _resolve(list(sent.submissions), sent.outcomes)

    def _finished(self, batch: list[_Submission]) -> list[_Submission]:
        """`batch` but its submissions the commit left waiting again (`_leave_waiting`)."""
        if not self._left_waiting:
            return batch
        return [s for s in batch if id(s) not in self._left_waiting]

    def _leave_waiting(self, submissions: list[_Submission]) -> None:
        """`submissions` of the batch being written wait again, ahead of the
        rest, for a change of their tenant in this process to end: taken
        once it has (`resume`), each still handed in (`holds`)."""
        self._pending.add_first(submissions)
        self._left_waiting.update(id(s) for s in submissions)

    def _alone(self) -> bool:
        """A lone caller after a lone commit: nobody else is writing, so waiting
        for company would only add max_wait to its answer. Under load the
        batches hold many calls and the wait applies."""
        return len(self._pending.submissions) == 1 and self._last_batch_calls <= 1

    def _take_batch(self) -> list[_Submission]:
        """The next batch; empty if every submission waiting is of a tenant
        whose head a change of this process holds (they wait for it to end,
        `resume`)."""
        pending = self._pending
        held = self._held_by_changes
        if held:
            return self._take_batch_around(held)
        taken, count, size = 0, 0, 0
        while (
            taken < len(pending.submissions)
            and count < self._max_commit_events
            and size < self._max_commit_bytes  # none yet taken: 0, so one always is
        ):
            count += len(pending.submissions[taken].events)
            size += pending.submissions[taken].size
            taken += 1
        batch = pending.submissions[:taken]
        pending.taken(batch)
        if pending.events < self._batch_events:
            self._batch_full.clear()
        if not pending.submissions:
            self._has_work.clear()
        return batch

    def _take_batch_around(self, held: Counter[str]) -> list[_Submission]:
        """`_take_batch`, leaving the submissions of the `held` tenants waiting."""
        pending = self._pending
        batch: list[_Submission] = []
        count, size = 0, 0
        for submission in pending.submissions:
            if count >= self._max_commit_events or size >= self._max_commit_bytes:
                break
            if submission.tenant_id not in held:
                batch.append(submission)
                count += len(submission.events)
                size += submission.size
        pending.taken(batch)
        if pending.events < self._batch_events:
            self._batch_full.clear()
        if all(submission.tenant_id in held for submission in pending.submissions):
            self._has_work.clear()
        return batch

    async def _commit_traced(self, batch: list[_Submission]) -> None:
        if self._tracer is None:
            await self._commit(batch)
            return
        # A call that gave up waiting has ended its span: no links to it.
        callers = [s.span for s in batch if s.span is not None and s.span.is_recording()]
        # A failure said by its class, never its text (a database error's
        # quotes the row it refused: CONTRIBUTING.md, "Database errors").
        with (
            self._tracer.start_as_current_span(
                "sealtrail.append.commit",
                links=[trace.Link(span.get_span_context()) for span in callers],
                attributes={
                    "sealtrail.batch.calls": len(batch),
                    "sealtrail.batch.events": sum(len(s.events) for s in batch),
                    "sealtrail.batch.tenants": len({s.tenant_id for s in batch}),
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
            failures_by_class(span),
        ):
            for caller in callers:
                caller.add_link(span.get_span_context())
            await self._commit(batch)

    async def _commit(self, batch: list[_Submission], *, tried_again: bool = False) -> None:
        """`batch` written, and its callers answered; `tried_again`: after a
        lock timeout whose heads were let go before the appender looked, or
        a statement timeout (its head held by none: a write from a kept head
        cut short), written under lock."""
        try:
            outcomes = await self._write(batch, under_lock=tried_again)
        except SealtrailError as error:
            refusal = _refusal(error)
            if refusal is not None:
                await self._isolate(batch, refusal)
            elif isinstance(error.__cause__, _WAITED_OUT):
                await self._commit_around_held_heads(batch, tried_again=tried_again)
            else:
                _fail(batch, error)
            return
        except psycopg.Error as error:
            await self._isolate(batch, error)
            return
        _resolve(batch, outcomes)

    async def _isolate(self, batch: list[_Submission], error: psycopg.Error) -> None:
        """After the database refused `batch`: validation should have caught
        anything it refuses; if not, the offender is isolated so its
        neighbours (other callers, other tenants) still land."""
        if len(batch) > 1:
            for submission in batch:
                await self._commit([submission])
            return
        [submission] = batch
        log.error("appender: the database refused an append: %s", named(error))
        if not isinstance(error, _REFUSALS):
            _fail(batch, Unavailable("the database refused the append", retry_after=1.0))
        elif len(submission.events) > 1:
            each = [
                await self._write_alone(submission, event, view)
                for event, view in zip(submission.events, submission.views, strict=True)
            ]
            _resolve(batch, [each])
        else:
            _fail(batch, _refused(submission.events[0], error))

    async def _commit_around_held_heads(
        self, batch: list[_Submission], *, tried_again: bool = False
    ) -> None:
        """After a lock timeout: the tenants whose heads another session holds
        (a process frozen mid-append keeps its lock until its session idles
        out, IDLE_IN_WRITE_SECONDS, or mid-COPY until TCP gives up) are
        refused for a while without a try, and the rest of the batch written.
        The one appender task otherwise waited out the timeout again on every
        batch that held one of their retries. If none is held any more, the
        batch is written again, once (`tried_again`)."""
        tenants = sorted({s.tenant_id for s in batch})
        try:
            async with self._connection() as conn, conn.transaction():
                await conn.execute(_HEADS_HELD_LOCK_TIMEOUT)
                cursor = await conn.execute(_HEADS_HELD, {"t": tenants})
                held = [str(tenant) for (tenant,) in await cursor.fetchall()]
                cursor = await conn.execute(_TABLE_LOCKED)
                table_lock = await cursor.fetchone()
        except SealtrailError as error:
            if isinstance(error.__cause__, psycopg.errors.LockNotAvailable):
                log.warning("appender: chain_heads is locked by another session (a table lock)")
                error = Unavailable(
                    "the log's heads (chain_heads) are locked by another session; retry",
                    retry_after=1.0,
                )
            _fail(batch, error)
            return
        # A head a change of this process holds is no frozen process's: its
        # writes wait for the change to end (it took the head after the batch
        # was taken), not refused for HELD_ELSEWHERE_SECONDS.
        if here := [tenant for tenant in held if tenant in self._held_by_changes]:
            self._leave_waiting([s for s in batch if s.tenant_id in here])
            held = [tenant for tenant in held if tenant not in here]
            batch = [s for s in batch if s.tenant_id not in here]
        until = asyncio.get_running_loop().time() + HELD_ELSEWHERE_SECONDS
        for tenant in held:
            log.warning(
                "appender: the head of tenant %s is held by another session; its appends"
                " are refused for %.0f s",
                tenant,
                HELD_ELSEWHERE_SECONDS,
            )
            self._held_elsewhere[tenant] = until
            _fail(
                [s for s in batch if s.tenant_id == tenant],
                _held_elsewhere_error(tenant, HELD_ELSEWHERE_SECONDS),
            )
        rest = [s for s in batch if s.tenant_id not in held]
        if rest and table_lock is not None:
            # Written again, it waited the lock timeout out a second time
            # (about 10 s in all), then was told a tenant's log was locked.
            _fail(rest, _table_locked(*table_lock))
        elif rest and (held or here):
            await self._commit(rest)
        elif rest and not tried_again:
            # Let go since the timeout (held a little past it: a change
            # committing, another process's append): written now. Failed, the
            # batch's every caller, of every tenant in it, was told to retry.
            await self._commit(rest, tried_again=True)
        elif rest:  # let go and held again: worth one more try, later
            _fail(rest, Unavailable("a tenant's log was locked elsewhere; retry", retry_after=1.0))

    async def _write_alone(
        self, submission: _Submission, event: ValidEvent, view: bytes | None
    ) -> AppendOutcome:
        """One event of a submission in a transaction of its own."""
        alone = _Submission(
            submission.tenant_id, [event], [view], submission.future, submission.span
        )
        try:
            [written] = await self._write([alone])
        except SealtrailError as error:
            if _refusal(error) is None:
                return error
            refusal = _refusal(error)
            log.error("appender: the database refused %s: %s", event.path, named(refusal))
            return _refused(event, refusal)
        except _REFUSALS as error:
            log.error("appender: the database refused %s: %s", event.path, named(error))
            return _refused(event, error)
        except psycopg.Error:
            return Unavailable("the database refused the append", retry_after=1.0)
        if isinstance(written, SealtrailError):
            return written
        [outcome] = written
        return outcome

    async def _write(
        self, batch: list[_Submission], *, under_lock: bool = False
    ) -> Sequence[SubmissionOutcome]:
        """Each submission's outcomes, once written and committed.

        A small batch of one tenant whose head this process wrote last (kept in
        `_heads`) is written without a lock or a transaction: one statement
        inserts it and moves the head only from the size and root kept, so it
        commits alone (ADR 0024). If another process appended meanwhile, that
        check fails and nothing is written; the batch is then written under
        lock, from the head as it is now. (One tenant: the statement then waits
        for at most one row lock while holding none, so it cannot deadlock; and
        a batch is written whole or not at all, never in part.) `under_lock`:
        under lock whatever its heads."""
        [tenant, *others] = {s.tenant_id for s in batch}
        if (
            not under_lock
            and not others
            and tenant in self._heads
            and sum(len(s.events) for s in batch) <= _ONE_STATEMENT_EVENTS
        ):
            outcomes = await self._write_from_kept(tenant, batch)
            if outcomes is not None:
                return outcomes
        return await self._write_locked(batch)

    async def _write_from_kept(
        self, tenant: str, batch: list[_Submission]
    ) -> Sequence[SubmissionOutcome] | None:
        """`batch`, all of `tenant`, written from its kept head; None, and
        nothing written, if its head is not as kept."""
        heads = {tenant: self._heads[tenant].copy()}
        doubt = self._doubt = _Doubt()
        try:
            async with self._connection() as conn:
                # Keys stored before the kept head are seen by the statement; one
                # stored since moved the head, and the statement writes nothing.
                outcomes, written, seen = await self._write_from(
                    heads, conn, batch, keys_looked_up=False, doubt=doubt
                )
                if seen or (not heads[tenant].changed and _batch_keys(batch)[1]):
                    # A retry among them (found stored), or nothing to write, so
                    # no statement looked its keys up: looked up apart, and
                    # written again from the kept head (replays need no statement,
                    # and no lock another process may hold, helper-78).
                    heads = {tenant: self._heads[tenant].copy()}
                    outcomes, written, _ = await self._write_from(heads, conn, batch, doubt=doubt)
        except (SealtrailError, psycopg.Error) as error:
            # The statement is its own commit: lost with its connection, it
            # may have committed all the same.
            sent = await self._committed_after_all(doubt, error)
            if sent is None:
                raise
            outcomes, written = sent.outcomes, sent.written
        if heads[tenant].changed and not written:
            del self._heads[tenant]  # moved by another process, or erased
            return None
        self._keep(written)  # committed: the statement was its own transaction
        return outcomes

    async def _write_locked(self, batch: list[_Submission]) -> Sequence[SubmissionOutcome]:
        """`batch` written in one transaction holding its tenants' head locks."""
        tenants = sorted({s.tenant_id for s in batch})
        doubt = self._doubt = _Doubt()
        try:
            async with self._connection() as conn, conn.transaction():
                heads, erasing = await self._lock_heads(
                    conn, tenants, statement_timeout=_NO_STATEMENT_TIMEOUT
                )
                # A tenant without a head was erased, or is being erased: its
                # submissions are refused whole, the others written.
                refused = {
                    tenant: tenant_being_erased(tenant)
                    if tenant in erasing
                    else tenant_erased(tenant)
                    for tenant in tenants
                    if tenant not in heads
                }
                writable = [s for s in batch if s.tenant_id not in refused]
                outcomes, written, _ = await self._write_from(heads, conn, writable, doubt=doubt)
                if written.keys() != {tenant for tenant, head in heads.items() if head.changed}:
                    raise RuntimeError(f"a locked head changed under the lock: {tenants}")
        except (SealtrailError, psycopg.Error) as error:
            # Its COMMIT lost with its connection may have committed all the same.
            sent = await self._committed_after_all(doubt, error)
            if sent is None:
                raise
            outcomes, written = sent.outcomes, sent.written
        self._know(heads)
        self._keep({**heads, **written})
        if not refused:
            return outcomes
        written_outcomes = iter(outcomes)
        return [refused.get(s.tenant_id) or next(written_outcomes) for s in batch]

    async def _write_from(
        self,
        heads: dict[str, _Head],
        conn: psycopg.AsyncConnection[Any],
        batch: list[_Submission],
        *,
        keys_looked_up: bool = True,
        doubt: _Doubt | None = None,
    ) -> tuple[list[list[AppendOutcome]], dict[str, _Head], bool]:
        """`batch` appended to `heads` (extended in place; each of its tenants
        has one): each submission's outcomes, the heads written (`_extend`),
        and whether one of its idempotency keys was found stored, in which
        case nothing was written. Its keys are looked up first, or, unless
        `keys_looked_up`, by the statement that writes it. `doubt` is told
        what the write sends with its commit, as it sends it."""
        previous = await _find_keys(conn, batch) if keys_looked_up else {}
        received = _Received.at_time(self._clock())
        outcomes: list[list[AppendOutcome]] = []
        rows: list[tuple[Any, ...]] = []
        nodes: list[tuple[str, int, int, bytes]] = []
        if sum(len(s.events) for s in batch) <= _ONE_STATEMENT_EVENTS:
            for submission in batch:
                outcomes.append(
                    await self._assign(submission, heads, previous, received, rows, nodes)
                )
        else:
            async with conn.cursor().copy(_COPY_EVENTS) as copy:
                for submission in batch:
                    outcomes.append(
                        await self._assign(submission, heads, previous, received, rows, nodes)
                    )
                    # Sent as built, so PostgreSQL inserts while the next submission is hashed.
                    for row in rows:
                        await copy.write_row(row)
                    rows.clear()
        keys = (TextArray(), TextArray()) if keys_looked_up else _batch_keys(batch)
        # Each head the batch moves, as its row will have it: one Merkle root
        # per tenant, for the statement and for a commit in doubt alike.
        written = {tenant: head.written() for tenant, head in heads.items() if head.changed}
        if doubt is not None:
            last = _last_appended(batch, outcomes)
            doubt.sent = _Sent(outcomes, written, last, received.time, batch) if written else None
        moved, seen = await self._extend(conn, heads, written, rows, nodes, keys)
        return outcomes, moved, seen

    async def _committed_after_all(self, doubt: _Doubt, error: Exception) -> _Sent | None:
        """After a write failed with `error`: what it wrote, if its commit was
        sent and the connection lost before its answer came, and the
        database shows it committed. Its callers were answered UNAVAILABLE,
        and the retry of an event without an idempotency key recorded it
        again. None (the error stands) if it did not commit, or the database
        cannot tell now."""
        sent = doubt.sent
        if sent is None or not _commit_in_doubt(error):
            return None
        landed = await self._landed(sent)
        _log_doubt(sent, landed, while_="the connection was lost")
        return sent if landed else None

    async def _landed(self, sent: _Sent) -> bool | None:
        """Whether the write `sent` committed, asked of the database once the
        session that sent it has let its heads go (a session whose client is
        gone may still be committing); None if it cannot be told now."""
        tenants = sorted(sent.last)
        try:
            async with self._connection() as conn, conn.transaction(force_rollback=True):
                await conn.execute(_LANDED_STATEMENT_TIMEOUT)
                await conn.execute(_LOCK_HEADS, [tenants])
                cursor = await conn.execute(
                    _LANDED,
                    [
                        tenants,
                        [sent.last[tenant][0] for tenant in tenants],
                        [sent.last[tenant][1] for tenant in tenants],
                        sent.received_at,
                    ],
                )
                row = await cursor.fetchone()
        except (SealtrailError, psycopg.Error) as error:
            log.warning("appender: whether a lost write committed cannot be told: %s", named(error))
            return None
        found = 0 if row is None else int(row[0])
        if found == len(tenants):
            return True
        if found == 0:
            return False
        log.error("appender: a lost write committed for some of its tenants: %s", tenants)
        return None

    async def _extend(
        self,
        conn: psycopg.AsyncConnection[Any],
        heads: dict[str, _Head],
        written: dict[str, _Head],
        rows: list[tuple[Any, ...]],
        nodes: list[tuple[str, int, int, bytes]],
        keys: tuple[TextArray, TextArray],
    ) -> tuple[dict[str, _Head], bool]:
        """One statement (_EXTEND): insert `rows` (events not COPYed) and
        `nodes`, and move every head the batch extended to `written` (by
        tenant, `_Head.written`), of each tenant whose head is still as
        `heads` found it; notify `tenant:size` on NOTIFY_CHANNEL for each
        (PostgreSQL delivers that at commit). Nothing of it if one of `keys`
        (tenants, idempotency keys) is stored. The heads written, with their
        rows' versions, by tenant, and whether a key was."""
        if not written:
            return {}, False
        changed = {tenant: heads[tenant] for tenant in written}
        tenants, idempotency_keys = keys
        cursor = await conn.execute(
            _EXTEND_UNLESS_SEEN if idempotency_keys else _EXTEND,
            [
                *([tenants, idempotency_keys] if idempotency_keys else []),
                TextArray(changed),
                Int8Array(head.stored_size for head in changed.values()),
                ByteaArray(head.stored_root for head in changed.values()),
                TextArray(head.version for head in changed.values()),
                Int8Array(head.stored_size for head in written.values()),
                ByteaArray(head.stored_root for head in written.values()),
                ByteaArray(b"".join(head.frontier) for head in written.values()),
                TextArray(erasure_lock_keys(list(changed))),
                *_columns(rows, _EVENT_ARRAYS),
                *_columns(nodes if self._store_tree_nodes else [], _NODE_ARRAYS),
            ],
        )
        answer = await cursor.fetchall()
        seen = any(tenant is None for tenant, _, _ in answer)
        moved: dict[str, _Head] = {}
        for tenant, _, version in answer:
            if tenant is not None:  # a copy: a commit in doubt keeps its version unknown
                head = written[tenant]
                moved[tenant] = _Head(head.size, head.stored_root, head.frontier, version=version)
        return moved, seen

    def _connection(self) -> AbstractAsyncContextManager[Connection]:
        """The connection batches are written on, kept between batches (ADR
        0046). Each of its statements reads and writes by key, through one
        index whatever the values, so one generic plan serves every run. Left
        to choose, PostgreSQL planned the key lookup anew for each run's values
        (its generic plan costs an unnest()ed array as ten rows, its custom
        plans as one) and spent several times longer planning that probe of
        every partition's index than running it (ADR 0032)."""
        return self._checkout() if self._kept is None else self._kept.use()

    def _know(self, tenants: Iterable[str]) -> None:
        for tenant in tenants:
            self._known_tenants[tenant] = None
            self._known_tenants.move_to_end(tenant)
        while len(self._known_tenants) > _KEPT_HEADS:
            self._known_tenants.popitem(last=False)

    def _keep(self, heads: dict[str, _Head]) -> None:
        """Keep `heads` as the latest known, evicting the least recently written."""
        for tenant, head in heads.items():
            self._heads[tenant] = head
            self._heads.move_to_end(tenant)
        while len(self._heads) > _KEPT_HEADS:
            self._heads.popitem(last=False)

    async def _assign(
        self,
        submission: _Submission,
        heads: dict[str, _Head],
        previous: dict[tuple[str, str], Appended],
        received: _Received,
        rows: list[tuple[Any, ...]],
        nodes: list[tuple[str, int, int, bytes]],
    ) -> list[AppendOutcome]:
        tenant_id = submission.tenant_id
        head = heads[tenant_id]
        received_at = received.text
        outcomes: list[AppendOutcome] = []
        turns = Turns()  # a record and its hash cost a large event milliseconds
        for event, view in zip(submission.events, submission.views, strict=True):
            await turns.take()
            key = event.idempotency_key
            if key is not None:
                earlier = previous.get((tenant_id, key))
                if earlier is not None:
                    try:
                        outcomes.append(repeated_key_outcome(earlier, event))
                    except ValueError:  # a bug: this event alone fails, not the whole batch
                        log.exception("appender: cannot compare a repeated event with its first")
                        outcomes.append(unexpected_failure())
                    continue
            seq = head.size + 1
            event_id = received.mint_event_id()
            try:
                record = finalize_record(event, ServerFields(tenant_id, event_id, seq, received_at))
            except ValueError as error:  # a value RFC 8785 cannot write: this event alone fails
                outcomes.append(
                    InvalidArgument.field(event.path, f"cannot be canonicalised: {error}")
                )
                continue
            if (
                len(record) > MAX_RECORD_BYTES
                and (size := len(record) - recorder_bytes(event)) > MAX_RECORD_BYTES
            ):
                outcomes.append(
                    InvalidArgument.field(
                        event.path,
                        f"the event's record is {size} bytes; the limit is"
                        f" {MAX_RECORD_BYTES} (shorten details or changes)",
                    )
                )
                continue
            leaf = leaf_hash(record)
            for level, index, node in append_leaf(head.frontier, head.size, leaf):
                nodes.append((tenant_id, level, index, node))
            head.size = seq
            text = record.decode()
            whole_view = None
            if view is not None and self._server_view is not None:
                whole_view = view + self._server_view(
                    tenant_id=tenant_id,
                    event_id=event_id,
                    seq=seq,
                    received_at=received.time,
                    leaf_hash=leaf,
                )
                view = None  # the whole view holds it
            credential: dict[str, str] = event.body["actor"].get("credential") or {}
            duration = (event.body.get("context") or {}).get("duration_ms")
            rows.append(  # in _EVENT_COLUMNS order
                (
                    tenant_id,
                    seq,
                    event_id,
                    event.occurred_at,
                    received_at,
                    event.action,
                    event.category,
                    event.severity,
                    event.outcome,
                    event.actor_id,
                    event.actor_email,
                    event.resource_type,
                    event.resource_id,
                    event.request_id,
                    event.trace_id,
                    key,
                    event.recorded_by,
                    event.ip,
                    event.search_names,
                    credential.get("kind", ""),
                    credential.get("id"),
                    credential.get("hint"),
                    None if duration is None else float(duration),
                    text_array_literal(event.body["actor"].get("roles")),
                    leaf,
                    text,
                    view,
                    whole_view,
                )
            )
            appended = Appended(
                seq, text, leaf, event_id=event_id, received_at=received.time, view=whole_view
            )
            outcomes.append(appended)
            if key is not None:
                previous[(tenant_id, key)] = appended
        return outcomes

    async def _lock_heads(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenants: list[str],
        *,
        statement_timeout: str | None = None,
    ) -> tuple[dict[str, _Head], frozenset[str]]:
        """The heads of `tenants`, locked in the database's order, created
        first where this process has not seen them (a head created between
        two lockings would be locked out of order); and the tenants being
        erased, whose heads were not created. The transaction's statements
        after the first are given `statement_timeout` (None: left as it is)."""
        unknown = [t for t in tenants if t not in self._known_tenants]
        if unknown:
            # Before the heads it creates are locked; _SELECT_HEADS sets it
            # again, in the statement that locks the others.
            await conn.execute(_IDLE_IN_WRITE, [_idle_in_write(), statement_timeout])
        erasing = await _create_heads(conn, unknown) if unknown else frozenset()
        heads = await _select_heads(conn, tenants, statement_timeout)
        # A head seen before and not locked: gone since (an erasure), or held
        # by an erasure still running. Created again, or not: either way
        # _create_heads tries the erasure's lock. One created just now cannot
        # be missing: no erasure runs while this transaction shares its lock.
        vanished = [t for t in tenants if t not in heads and t not in unknown]
        if vanished:
            erasing |= await _create_heads(conn, vanished)
            heads = await _select_heads(conn, tenants, statement_timeout)
        return heads, erasing


async def _create_heads(conn: psycopg.AsyncConnection[Any], tenants: list[str]) -> frozenset[str]:
    """Creates the heads of `tenants` but those erased, and those being erased,
    which it returns.

    A head is created under the tenant's erasure lock, shared: no erasure runs
    meanwhile, and the INSERT below, a statement of its own, sees the receipt
    of one that committed before. The lock is only tried, never waited for: a
    change of the tenant holds it while this records its event, and a wait
    here would queue behind an erasure waiting for that change, which waits
    for this (a cycle PostgreSQL cannot see; every append would stall). Only
    an erasure takes it exclusive, so a refusal means one is running or queued."""
    erasing = frozenset(await try_share_subjects(conn, tenants, ERASURE_SUBJECT))
    await conn.execute(
        "INSERT INTO chain_heads (tenant_id, tree_size, root_hash, frontier)"
        " SELECT t, 0, %s, '' FROM unnest(%s::text[]) AS t"
        " WHERE NOT EXISTS (SELECT FROM tenant_erasures AS e WHERE e.tenant_id = t)"
        " ORDER BY t ON CONFLICT (tenant_id) DO NOTHING",
        [EMPTY_ROOT, [t for t in tenants if t not in erasing]],
    )
    return erasing


async def _select_heads(
    conn: psycopg.AsyncConnection[Any], tenants: list[str], statement_timeout: str | None
) -> dict[str, _Head]:
    """The heads of `tenants`, locked, but those of tenants being erased: their
    erasure holds the head for as long as its DELETEs take, and a wait here
    would hold up every batch of the process behind this one (ADR 0034).
    `statement_timeout` as for `_Lane._lock_heads`."""
    cursor = await conn.execute(
        _SELECT_HEADS, [_idle_in_write(), statement_timeout, tenants, erasure_lock_keys(tenants)]
    )
    return {
        tenant: _Head(size, bytes(root), split_frontier(bytes(frontier)), version=version)
        for tenant, size, root, frontier, version in await cursor.fetchall()
    }


# Which of the heads another session holds now: those there, less those this
# one can lock without waiting (let go again when its transaction ends).
# The look for the heads held skips the rows locked, so it waits only for a
# lock on the whole table (VACUUM FULL, ALTER TABLE, pg_repack): briefly,
# where the lock timeout just waited out would have been waited out again.
# Free of the database's or role's statement_timeout, as a write under lock
# is (_NO_STATEMENT_TIMEOUT): one below 100 ms cut the look short, and the
# batch was failed as if the database were unavailable.
_HEADS_HELD_LOCK_TIMEOUT = (
    "SELECT set_config('lock_timeout', '100ms', true), set_config('statement_timeout', '0', true)"
)
_HEADS_HELD = (
    "SELECT tenant_id FROM chain_heads WHERE tenant_id = ANY(%(t)s)"
    " EXCEPT SELECT tenant_id FROM (SELECT tenant_id FROM chain_heads"
    "  WHERE tenant_id = ANY(%(t)s) FOR NO KEY UPDATE SKIP LOCKED) AS free"
)

# A lock another session holds, or waits for ahead of the appender's, on a
# table a write inserts into whole (an operator's LOCK TABLE, VACUUM FULL,
# ALTER TABLE, pg_repack of events or tree_nodes, or of a partition of
# them), in a mode that keeps out its inserts: which table (and the table it
# is a partition of), and the session's pid and application_name. Read after
# a write waited out its time and found no head held; a holder first.
# The partitions are found in the catalog, which takes no lock on the tables
# (pg_partition_tree does, and waited for the very lock it was to find).
_TABLE_LOCKED = (
    "WITH RECURSIVE tables(root, relid) AS ("
    " SELECT r, r FROM unnest(ARRAY['events'::regclass, 'tree_nodes'::regclass]) AS r"
    " UNION ALL SELECT t.root, i.inhrelid::regclass FROM pg_inherits AS i"
    " JOIN tables AS t ON i.inhparent = t.relid)"
    " SELECT t.root::text, t.relid::text, l.pid, a.application_name"
    " FROM pg_locks AS l JOIN tables AS t ON t.relid = l.relation"
    " LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid"
    " WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid()"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock',"
    " 'AccessExclusiveLock')"
    " ORDER BY l.granted DESC, t.relid <> t.root, l.pid LIMIT 1"
)


def _table_locked(root: str, table: str, pid: int, application: str | None) -> Unavailable:
    """The answer to a batch that waited out its time for a lock on `table`
    (of `root`, if a partition of it) that session `pid` holds."""
    what = f"the {root} table" + (f" (its partition {table})" if table != root else "")
    who = f"pid {pid}" + (f", application_name {application!r}" if application else "")
    log.warning(
        "appender: %s is locked by another session (%s); the batch waiting for it is"
        " answered UNAVAILABLE",
        what,
        who,
    )
    return Unavailable(f"{what} is locked by another session ({who}); retry", retry_after=1.0)


# Whether a write whose answer was lost committed (_Lane._landed): its heads
# locked first, which waits (for the lock timeout at most) for a session
# still committing it, then the last event it appended of each tenant looked
# for, by its leaf hash, which names it alone (its id is in it).
# The wait is the lock timeout's, free of the database's or role's
# statement_timeout, as the appender's other waits for heads are
# (_NO_STATEMENT_TIMEOUT): one shorter than the commit still under way cut it
# short, and a write that committed was answered UNAVAILABLE.
_LANDED_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', '0', true)"
_LOCK_HEADS = "SELECT FROM chain_heads WHERE tenant_id = ANY(%s::text[]) FOR NO KEY UPDATE"
_LANDED = (
    "SELECT count(*) FROM unnest(%s::text[], %s::bigint[], %s::bytea[]) AS w(tenant_id, seq, leaf)"
    " JOIN events AS e ON e.tenant_id = w.tenant_id AND e.seq = w.seq"
    " AND e.received_at = %s::timestamptz AND e.leaf_hash = w.leaf"
)
# An error after which a commit sent may or may not have landed: the
# connection lost (no SQLSTATE: closed, reset), or ended by the server
# (class 08, connection exception; 57P, an operator's or a crash's shutdown).
_CONNECTION_LOST: Final = ("08", "57P")


def _log_doubt(sent: _Sent, landed: bool | None, *, while_: str, unasked: str = "") -> None:
    """What the database said of a write whose commit was in doubt (`landed`:
    None, it could not be asked)."""
    log.warning(
        "appender: %s while a write of %s committed; it %s",
        while_,
        counted(len(sent.written), "tenant"),
        "had committed, and is answered as written"
        if landed
        else "had not committed"
        if landed is False
        else f"may or may not have committed: the database could not be asked{unasked}",
    )


def _commit_in_doubt(error: Exception) -> bool:
    """Whether `error` (a psycopg error, or a SealtrailError raised from one)
    leaves a commit sent in doubt: not an error the server answered the
    statement with, which rolled it back."""
    cause = error.__cause__ if isinstance(error, SealtrailError) else error
    if not isinstance(cause, psycopg.OperationalError):
        return False
    return cause.sqlstate is None or cause.sqlstate.startswith(_CONNECTION_LOST)


def _last_appended(
    batch: Sequence[_Submission], outcomes: Sequence[Sequence[AppendOutcome]]
) -> dict[str, tuple[int, bytes]]:
    """The last event appended of each tenant of `batch`: its seq and leaf hash."""
    last: dict[str, tuple[int, bytes]] = {}
    for submission, answers in zip(batch, outcomes, strict=True):
        for answer in answers:
            if isinstance(answer, Appended) and not answer.deduplicated:
                known = last.get(submission.tenant_id)
                if known is None or answer.seq > known[0]:
                    last[submission.tenant_id] = (answer.seq, answer.leaf_hash)
    return last


# The session's idle timeout (IDLE_IN_WRITE_SECONDS), and the statement
# timeout of a lane's write (_NO_STATEMENT_TIMEOUT), set in the statement that
# locks the heads: it costs the write no round trip of its own.
_SELECT_HEADS = (
    sql.SQL(
        "SELECT h.tenant_id, h.tree_size, h.root_hash, h.frontier, h.xmin::text"
        " FROM (SELECT set_config('idle_in_transaction_session_timeout', %s, true),"
        " set_config('statement_timeout', coalesce(%s, current_setting('statement_timeout')),"
        " true)) AS settings,"
        " unnest(%s::text[], %s::text[]) AS k(tenant_id, erasure_key)"
        " JOIN chain_heads AS h ON h.tenant_id = k.tenant_id"
        " WHERE {not_being_erased} ORDER BY h.tenant_id FOR NO KEY UPDATE OF h"
    )
    .format(not_being_erased=try_share_condition(sql.SQL("k.erasure_key")))
    .as_string(None)
)


# A change's record (append_within): its transaction's settings as found,
# and the system role's, under which it writes; then those found set back.
_WITHIN = (
    "SELECT found.*, set_config('role', %s, true), set_config('lock_timeout', %s, true)"
    " FROM (SELECT current_setting('role') AS role, current_setting('lock_timeout') AS wait,"
    " current_setting('idle_in_transaction_session_timeout') AS idle) AS found"
)
_AS_FOUND = (
    "SELECT set_config('role', %s, true), set_config('lock_timeout', %s, true),"
    " set_config('idle_in_transaction_session_timeout', %s, true)"
)


def _idle_in_write() -> str:
    """IDLE_IN_WRITE_SECONDS as the setting takes it (read at each write)."""
    return f"{max(1, round(IDLE_IN_WRITE_SECONDS * 1000))}ms"


def _columns(rows: Sequence[tuple[Any, ...]], arrays: Sequence[_Array]) -> list[list[Any]]:
    """`rows` as column lists, each sent as one array parameter of its kind."""
    if not rows:
        return [array() for array in arrays]
    return [array(column) for array, column in zip(arrays, zip(*rows, strict=True), strict=True)]


async def _find_keys(
    conn: psycopg.AsyncConnection[Any], batch: list[_Submission]
) -> dict[tuple[str, str], Appended]:
    """Events already stored under the batch's idempotency keys."""
    tenants, keys = _batch_keys(batch)
    if not keys:
        return {}
    return await stored_under(conn, tenants, keys)


def _batch_keys(batch: list[_Submission]) -> tuple[TextArray, TextArray]:
    """The batch's idempotency keys, and the tenant of each, as sent."""
    tenants, keys = TextArray(), TextArray()
    for submission in batch:
        for event in submission.events:
            if event.idempotency_key is not None:
                tenants.append(submission.tenant_id)
                keys.append(event.idempotency_key)
    return tenants, keys


# What the database refuses an event for (not for being unwell): a value it
# rejects, a constraint, or a limit such as an index entry larger than a page.
# psycopg classes the last as operational, which the pool turns into Unavailable.
_REFUSALS: Final = (
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
)


def _refusal(error: SealtrailError) -> psycopg.Error | None:
    """The database's refusal behind `error`, if that is what it is."""
    cause = error.__cause__
    return cause if isinstance(cause, _REFUSALS) else None


def _refused(event: ValidEvent, refusal: psycopg.Error | None) -> SealtrailError:
    if (
        isinstance(refusal, psycopg.errors.CheckViolation)
        and refusal.diag.constraint_name == OUTSIDE_MONTHS
    ):
        # Received (by this process's clock) in a month being created: it
        # takes its rows once created, in a moment (ADR 0047; helper-120).
        return Unavailable(
            "the month this event is received in is being created; retry", retry_after=1.0
        )
    return InvalidArgument.field(event.path, "was refused by the database as invalid")


def _resolve(batch: list[_Submission], outcomes: Sequence[SubmissionOutcome]) -> None:
    for submission, outcome in zip(batch, outcomes, strict=True):
        if submission.future.done():  # the caller may have gone away
            continue
        if isinstance(outcome, SealtrailError):
            _fail([submission], outcome)
        else:
            submission.future.set_result(outcome)


def _answers(submissions: list[_Submission]) -> dict[str, int]:
    """Their events by what their callers were answered: written (stored, or
    a repeat's original), failed (an error, for the call or for the event
    alone), or abandoned (the caller went away first: written or not, a
    retry's key tells)."""
    outcomes = {"written": 0, "failed": 0, "abandoned": 0}
    for submission in submissions:
        future = submission.future
        if future.cancelled() or not future.done():
            outcomes["abandoned"] += len(submission.events)
        elif future.exception() is not None:
            outcomes["failed"] += len(submission.events)
        else:
            for answer in future.result():
                outcomes["failed" if isinstance(answer, SealtrailError) else "written"] += 1
    return outcomes


def _fail(batch: list[_Submission], error: SealtrailError) -> None:
    for submission in batch:
        if not submission.future.done():
            submission.future.set_exception(error)
