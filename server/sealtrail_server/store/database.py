"""The connection pool, the database role each connection works as, and the
one place database outages become `Unavailable`.

Connections never work as the tables' owner (ADR 0013). Each checkout says
what it is for, and the connection assumes the matching role first:

- `connection(tenant_id)`: work for one tenant, as `sealtrail_service`, with
  `sealtrail.tenant` set so that row-level security shows that tenant's rows
  only. Every read an RPC makes goes through here.
- `system_connection()`: the cross-tenant machinery (appender, checkpointer,
  forwarding, alerts, token lookup), as `sealtrail_system`.
- `bulk_connection(tenant_id)`: `connection(tenant_id)` for reading a page of
  many events (streams catching up, exports, forwarding, alerts, Query pages
  no one index yields); at most
  `bulk_connections` of the pool do that at once, so that with the changes'
  share (`change_connections`, store/changes.py) one is always left for the
  appender and the reads of single calls.

A checkout also says how statements are planned: for the values of each run
(PostgreSQL's default), or with generic plans, for statements whose plan one
index decides: the Query pages that have such a shape (store/events.py,
ADR 0027), and the appender's writes, the Merkle tree's reads and the stream
hub's fetch, all by key (ADR 0032). Every checkout states it, so a
connection never carries it to work it was not asked for. So too the statement
timeout: the database's or role's own, but for a bounded read (a Query page no
index yields, a count) that asks for its own.

A connection remembers the scope it was last given, so switching costs one
round trip only when the scope changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

import psycopg
from opentelemetry.trace import Tracer
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from sealtrail._words import detailed

from ..domain.errors import SEE_THE_LOG, Unavailable
from ..fair_share import FairShare
from .clock_skew import ClockReading, ClockSkew, database_time_of
from .db_errors import named, refuses_the_deployment
from .eager import EagerConnection
from .role_grants import FUNCTION, Grant, grants
from .role_grants import SERVICE_ROLE as SERVICE_ROLE
from .role_grants import SYSTEM_ROLE as SYSTEM_ROLE
from .row_security import (
    CHECK,
    COMMAND,
    DISABLED,
    MISSING,
    PERMISSIVE,
    ROLES,
    UNLISTED,
    USING,
    Breach,
    Safeguard,
    normal_form,
    safeguards,
)
from .traced import traced_cursor_class

# How long a caller waits for a connection before being told to retry.
DEFAULT_CONNECT_TIMEOUT = 5.0
log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1.0
# The reason (ErrorInfo) a call is refused with while the database does not
# serve the server (`not_served`): down, read-only, or refusing the service's
# roles something the migrations grant them.
DATABASE_UNAVAILABLE: Final = "DATABASE_UNAVAILABLE"

# plan_cache_mode: plans made for each run's values, or one generic plan.
_PLANS_FOR_VALUES: Final = "auto"
_GENERIC_PLANS: Final = "force_generic_plan"
# A scope is (role, tenant, plan_cache_mode, lock_timeout, statement_timeout);
# the system role sees every tenant.
_Scope = tuple[str, str, str, str | None, str | None]
# A fresh connection's lock and statement timeouts: the database's or role's
# defaults (None).
_NO_LOCK_TIMEOUT: Final = None
_NO_STATEMENT_TIMEOUT: Final = None
# How long a tenant's work waits for a lock another session holds. Its reads
# take no row locks: what they wait for is a lock on a whole table (VACUUM
# FULL, ALTER TABLE, pg_repack, LOCK TABLE), for minutes at times. Unbounded,
# an Export sent nothing, not even an error, while one was held, and VerifyLog
# ran to its deadline (an hour). It bounds waiting for a lock, not a
# statement: a long export or verification is not cut short. The changes bound
# their own waits (store/changes.py, `Changes.wait_seconds`).
READ_LOCK_TIMEOUT: Final = 5.0
# Fresh connections start with the least they can see: no tenant at all.
_NO_TENANT: Final[_Scope] = (
    SERVICE_ROLE, "", _PLANS_FOR_VALUES, _NO_LOCK_TIMEOUT, _NO_STATEMENT_TIMEOUT
)  # fmt: skip
# A NULL timeout resets it to the connection's default (the database's or
# role's, as RESET would): set_config takes NULL for that. Reading the
# default from pg_settings instead, which builds a row of every setting, cost
# about 0.9 ms of PostgreSQL at each change of scope.
_SET_SCOPE: Final = (
    "SELECT set_config('role', %s, false), set_config('sealtrail.tenant', %s, false),"
    " set_config('plan_cache_mode', %s, false), set_config('lock_timeout', %s, false),"
    " set_config('statement_timeout', %s, false)"
)
# PostgreSQL times a statement by the statement_timeout in force when it
# starts: a scope statement after a page's timeout of 1 ms ran under that 1 ms,
# and about one checkout in 3,000 after such a page was cut short under load
# (helper-331). After a timeout below this floor, or one not known (the last
# scope statement failed, or the connection is new), the scope is set in the
# same message after a reset of the timeout: a query string of two statements,
# which PostgreSQL times one by one, each by the timeout in force at its start.
# No round trip more; only the reset, a few microseconds, runs under the old
# timeout. At this floor and above, the one parameterized statement as ever: a
# scope statement takes well under a millisecond (ADR 0023, addendum of
# 2026-12-06).
_SAFE_STATEMENT_TIMEOUT: Final = 1.0
# A pooled connection's statement timeout reset when it is given back
# (`_Scopes.reset`).
_RESET_STATEMENT_TIMEOUT: Final = "SET statement_timeout TO DEFAULT"
_RESET_THEN_SET_SCOPE: Final = sql.SQL(
    "SET statement_timeout TO DEFAULT; " + _SET_SCOPE.replace("%s", "{}")
)
# How long the system role's work (the appender above all: one task writes
# every tenant of the process) waits for a row another session holds. A head
# locked by a process that froze mid-transaction (until its session idles out:
# store/appender.py, IDLE_IN_WRITE_SECONDS; or mid-COPY, until TCP gives up)
# stalled every append of this one; now the appender refuses that tenant for a
# while and writes the rest. Other processes append to a tenant in milliseconds.
SYSTEM_LOCK_TIMEOUT: Final = 5.0
# What PostgreSQL says when it refuses a connection for want of a free slot
# (SQLSTATE 53300: max_connections, only reserved ones left, or the CONNECTION
# LIMIT of the role or the database): it answers. A refusal at connection
# reaches psycopg without its SQLSTATE (libpq keeps it to itself): the words
# tell, and only where the database's lc_messages is English. A role's or a
# database's limit was taken for an outage (helper-321).
_NO_FREE_SLOT: Final = (
    "too many clients already",
    "remaining connection slots are reserved",
    "too many connections for role",
    "too many connections for database",
)

# What PostgreSQL answers in a state it may leave by itself, or that an
# operator mends, though psycopg classes it as a fault of the statement
# (InternalError, SQLSTATE class 25), not as an OperationalError: a database
# that takes no writes (25006: a standby after a failover, a provider's guard
# against a full disk, default_transaction_read_only), and a transaction
# ended for idling (25P03, idle_in_transaction_session_timeout). Answered
# INTERNAL, which clients do not retry, a legal hold recorded was left unapplied.
_DATABASE_STATES: Final = (
    psycopg.errors.ReadOnlySqlTransaction,
    psycopg.errors.IdleInTransactionSessionTimeout,
)

# The probe's question: whether the database takes writes. Every call writes
# (an access record at least), so one that answers read-only (a standby
# after a failover, a provider's guard, default_transaction_read_only; each
# makes a new transaction read-only) can serve none: it is no more reachable,
# for the service, than one that does not answer.
# Asked as each of the service's roles, which calls work as: a login that may
# no longer assume one (revoked by a DBA, lost in a restore) fails every
# tenant's call, and health said SERVING all the same (helper-362). Set for
# the statement's own transaction only (autocommit): the connection's scope,
# which `_Scopes` keeps track of, is as it was after it, whatever it answers.
# And whether each role holds every privilege the migrations grant it
# (role_grants.py): a grant revoked from a role (`REVOKE INSERT ON events FROM
# sealtrail_system`) failed every call that needed it, Record's every one
# there, while health said SERVING (helper-386). Checked against the roles
# by name (has_table_privilege, has_column_privilege, has_function_privilege):
# catalog lookups, no row read. The answer's second column lists the positions
# in `_GRANTS` of those missing (a relation or function dropped counts as
# missing: to_regclass, to_regprocedure, is NULL).
# And whether each table the migrations put under row-level security still
# has it (and forced, where they force it), and each policy they create still
# exists (row_security.py): disabled on a tenant's table by hand, every
# tenant saw every tenant's rows of it; its policy dropped, the service saw
# none and wrote none, while health said SERVING (helper-399). And that each
# such policy is still what they made it (command, permissive, roles, USING
# and WITH CHECK, the expressions in row_security's normal form) and no
# listed table has a policy they do not make: rewritten in place (`ALTER
# POLICY tenant_isolation ON events USING (true)`, `TO PUBLIC`), or another
# permissive policy beside it (OR-ed with it), every tenant saw every
# tenant's rows while health said SERVING (helper-402). Read from pg_class
# and pg_policy, which every role may read. The third column lists what
# differs, a row [position in `_SAFEGUARDS`, what (row_security.Breach),
# what the table has instead] each.
# An expression is printed (pg_get_expr) only if its node tree, on its table,
# is not one a probe of this process has already found as listed (`known`:
# md5 of the table's oid and the tree): printed at every probe, the 42 cost
# the database several times the rest of the statement, and pg_get_expr
# takes a lock on the table (PostgreSQL 16), so the probe waited out its
# timeout behind any VACUUM FULL or ALTER TABLE of a tenant's table, and
# health said NOT_SERVING. A tree is what the expression means (its
# operators, functions and columns by number), so one found as listed stays
# so. This statement prints none: the third column has a row [position,
# `_UNKNOWN`, NULL] for each listed policy whose trees are not all known,
# and `_EXPRESSIONS`, in a transaction of its own under a short lock
# timeout, prints and compares theirs, with a row [position, `_AS_LISTED`,
# md5] for each tree found as listed; the probe's next statement knows it
# (`_probe_statement`). Printed once at a server's start, and after an
# expression changes. A table locked then (at a start: a long VACUUM FULL, a
# pg_dump's queue) held this statement past the probe's timeout, health
# NOT_SERVING, though its policies were as listed: now its expressions wait
# for the next probe, their last verdict kept (`Database._with_kept_verdicts`),
# and the rest is answered.
# And the database's clock, read as seconds, to compare this process's with
# (store/clock_skew.py): in the same statement, no round trip more.
# Composed once, its literals rendered: adapting the lists as parameters at
# each probe cost the server's loop several times what the statement costs
# the database. The known trees are rendered into it anew when they change.
_GRANTS: Final[tuple[Grant, ...]] = tuple(grants())
_SAFEGUARDS: Final[tuple[Safeguard, ...]] = tuple(safeguards())


def _policy(safeguard: Safeguard, field: str) -> object:
    """`field` of the policy `safeguard` checks; None for a table's own."""
    return None if safeguard.policy is None else getattr(safeguard.policy, field)


# What the probe's statement says of an expression found as listed, not yet
# known (`_probe_statement`), and where it is rendered the trees it knows.
_AS_LISTED: Final = "as listed"
# What it says of a listed policy whose expressions' trees are not all known:
# `_EXPRESSIONS` prints and compares them, under a lock timeout.
_UNKNOWN: Final = "unknown"
_KNOWN_MARK: Final = "__sealtrail_known_expressions__"
_RELATIONS_MARK: Final = "__sealtrail_relations__"


def _differs(found: sql.Composable, listed: sql.Composable) -> sql.Composed:
    """Whether expression `found` (as printed) differs from `listed`: their
    normal forms (row_security.normal_form), made only where the texts differ."""
    return sql.SQL(
        "CASE WHEN {found} IS NOT DISTINCT FROM {listed} THEN false"
        " ELSE {found_form} IS DISTINCT FROM {listed_form} END"
    ).format(
        found=found,
        listed=listed,
        found_form=normal_form(found),
        listed_form=normal_form(listed),
    )


# The safeguards as arrays, one element each (`unnest ... WITH ORDINALITY AS
# s(relation, forced, named, policy, command, permissive, roles, using_,
# check_, n)`): n is the position in `_SAFEGUARDS`, from 1.
_SAFEGUARD_ARRAYS: Final = sql.SQL(
    "unnest({secured}::text[], {forced}::bool[], {named}::text[], {policies}::text[],"
    " {commands}::text[], {permissive}::bool[], {policy_roles}::text[], {usings}::text[],"
    " {checks}::text[]) WITH ORDINALITY AS s(relation, forced, named, policy, command,"
    " permissive, roles, using_, check_, n)"
).format(
    secured=sql.Literal([s.relation for s in _SAFEGUARDS]),
    forced=sql.Literal([s.forced for s in _SAFEGUARDS]),
    named=sql.Literal([",".join(s.named) for s in _SAFEGUARDS]),
    policies=sql.Literal([_policy(s, "name") for s in _SAFEGUARDS]),
    commands=sql.Literal([_policy(s, "command") for s in _SAFEGUARDS]),
    permissive=sql.Literal([_policy(s, "permissive") for s in _SAFEGUARDS]),
    policy_roles=sql.Literal(
        [None if s.policy is None else ", ".join(sorted(s.policy.roles)) for s in _SAFEGUARDS]
    ),
    usings=sql.Literal([_policy(s, "using") for s in _SAFEGUARDS]),
    checks=sql.Literal([_policy(s, "check") for s in _SAFEGUARDS]),
)
# A listed policy's expressions' trees (md5 of its table's oid and the tree)
# and whether each is among those known (`known`), for a row `p` of pg_policy.
_TREES: Final = sql.SQL(
    " CROSS JOIN LATERAL (SELECT md5(p.polrelid::text || ' ' || p.polqual::text),"
    " md5(p.polrelid::text || ' ' || p.polwithcheck::text) OFFSET 0) AS h(using_, check_)"
    " CROSS JOIN LATERAL (SELECT COALESCE(h.using_ = ANY ({known}::text[]), false),"
    " COALESCE(h.check_ = ANY ({known}::text[]), false) OFFSET 0) AS k(using_, check_)"
).format(known=sql.SQL(_KNOWN_MARK))
# The order in which the rows of what differs come, within a safeguard's.
_ORDER: Final[tuple[str, ...]] = (
    DISABLED, UNLISTED, MISSING, COMMAND, PERMISSIVE, ROLES, USING, CHECK, _AS_LISTED, _UNKNOWN
)  # fmt: skip

_PROBE_PARTS: Final[tuple[bytes, ...]] = tuple(
    sql.SQL(
        "SELECT set_config('role', {system}, true) IS NOT NULL"
        " AND set_config('role', {service}, true) IS NOT NULL"
        " AND current_setting('transaction_read_only') = 'off',"
        " ARRAY(SELECT g.n FROM unnest({roles}::name[], {relations}::text[],"
        " {columns}::text[], {privileges}::text[]) WITH ORDINALITY"
        " AS g(role, relation, col, privilege, n)"
        " WHERE (CASE WHEN starts_with(g.relation, {function}) THEN has_function_privilege("
        "g.role, to_regprocedure(substr(g.relation, {after_function})), g.privilege)"
        " WHEN g.col IS NULL"
        " THEN has_table_privilege(g.role, to_regclass(g.relation), g.privilege)"
        " ELSE has_column_privilege(g.role, to_regclass(g.relation), g.col, g.privilege)"
        " END) IS NOT TRUE),"
        " ARRAY(SELECT ARRAY[b.n::text, f.what, f.found] FROM (SELECT s.n,"
        " s.policy IS NULL AND NOT EXISTS (SELECT FROM pg_class c"
        " WHERE c.oid = to_regclass(s.relation) AND c.relrowsecurity"
        " AND (c.relforcerowsecurity OR NOT s.forced)) AS disabled,"
        " CASE WHEN s.policy IS NULL THEN ARRAY(SELECT o.polname::text FROM pg_policy o"
        " WHERE o.polrelid = to_regclass(s.relation)"
        " AND o.polname <> ALL (string_to_array(s.named, ',')) ORDER BY 1)"
        " ELSE '{{}}' END AS unlisted,"
        " s.policy IS NOT NULL AND p.oid IS NULL AS missing,"
        " a.command, p.oid IS NOT NULL AND a.command IS DISTINCT FROM s.command AS command_,"
        " p.oid IS NOT NULL AND p.polpermissive IS DISTINCT FROM s.permissive AS permissive_,"
        " a.roles, p.oid IS NOT NULL AND a.roles IS DISTINCT FROM s.roles AS roles_,"
        " p.oid IS NOT NULL AND NOT (k.using_ AND k.check_) AS unknown"
        " FROM {safeguards}"
        " LEFT JOIN pg_policy p ON s.policy IS NOT NULL"
        " AND p.polrelid = to_regclass(s.relation) AND p.polname = s.policy"
        " {trees}"
        " CROSS JOIN LATERAL (SELECT CASE p.polcmd WHEN '*' THEN 'ALL' WHEN 'r' THEN 'SELECT'"
        " WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' END,"
        " (SELECT string_agg(r.name, ', ' ORDER BY r.name COLLATE \"C\") FROM (SELECT"
        " CASE WHEN o = 0 THEN 'public' ELSE quote_ident(pg_get_userbyid(o)) END"
        " FROM unnest(p.polroles) AS o) AS r(name))"
        " OFFSET 0) AS a(command, roles)"
        " OFFSET 0) AS b"
        " CROSS JOIN LATERAL (SELECT v.what, v.found FROM (VALUES"
        " ({disabled}, NULL, b.disabled), ({missing}, NULL, b.missing),"
        " ({command}, b.command, b.command_), ({permissive_}, NULL, b.permissive_),"
        " ({roles_}, b.roles, b.roles_), ({unknown}, NULL, b.unknown))"
        " AS v(what, found, differs) WHERE v.differs"
        " UNION ALL SELECT {unlisted}, u FROM unnest(b.unlisted) AS u) AS f(what, found)"
        " WHERE b.disabled OR b.missing OR b.command_ OR b.permissive_ OR b.roles_"
        " OR b.unknown OR cardinality(b.unlisted) > 0"
        " ORDER BY b.n, array_position({order}::text[], f.what), f.found),"
        " extract(epoch FROM clock_timestamp())::float8"
    )
    .format(
        system=sql.Literal(SYSTEM_ROLE),
        service=sql.Literal(SERVICE_ROLE),
        roles=sql.Literal([g.role for g in _GRANTS]),
        relations=sql.Literal([g.relation for g in _GRANTS]),
        function=sql.Literal(FUNCTION),
        after_function=sql.Literal(len(FUNCTION) + 1),
        columns=sql.Literal([g.column for g in _GRANTS]),
        privileges=sql.Literal([g.privilege for g in _GRANTS]),
        safeguards=_SAFEGUARD_ARRAYS,
        trees=_TREES,
        order=sql.Literal(list(_ORDER)),
        disabled=sql.Literal(DISABLED),
        unlisted=sql.Literal(UNLISTED),
        missing=sql.Literal(MISSING),
        command=sql.Literal(COMMAND),
        permissive_=sql.Literal(PERMISSIVE),
        roles_=sql.Literal(ROLES),
        unknown=sql.Literal(_UNKNOWN),
    )
    .as_bytes(None)
    .split(_KNOWN_MARK.encode())
)

# The statement that prints the expressions of the listed policies on the
# tables `{relations}` whose trees are not known, and compares them with the
# listed (row_security.normal_form): a row [position in `_SAFEGUARDS`, what
# (USING, CHECK: differs; `_AS_LISTED`: its tree, found as listed), what the
# table has instead (the expression as printed; the tree's md5)] each, as the
# probe's statement's third column has them. pg_get_expr takes a lock on
# its table: that waits at most the lock timeout `_expressions` gives it
# (`_timed`), then fails with LockNotAvailable, and the probe's statement,
# which prints none, has answered all the rest.
_EXPRESSIONS: Final[str] = (
    sql.SQL(
        "SELECT s.n::text, v.what, v.found FROM {safeguards}"
        " JOIN pg_policy p ON s.policy IS NOT NULL"
        " AND p.polrelid = to_regclass(s.relation) AND p.polname = s.policy"
        " {trees}"
        " CROSS JOIN LATERAL (SELECT"
        " CASE WHEN k.using_ THEN NULL ELSE pg_get_expr(p.polqual, p.polrelid) END,"
        " CASE WHEN k.check_ THEN NULL ELSE pg_get_expr(p.polwithcheck, p.polrelid) END"
        " OFFSET 0) AS a(using_, check_)"
        " CROSS JOIN LATERAL (SELECT NOT k.using_ AND {using_differs},"
        " NOT k.check_ AND {check_differs} OFFSET 0) AS d(using_, check_)"
        " CROSS JOIN LATERAL (VALUES ({using_}, a.using_, d.using_),"
        " ({check_}, a.check_, d.check_),"
        " ({as_listed}, h.using_, NOT k.using_ AND NOT d.using_ AND h.using_ IS NOT NULL),"
        " ({as_listed}, h.check_, NOT k.check_ AND NOT d.check_ AND h.check_ IS NOT NULL))"
        " AS v(what, found, differs)"
        " WHERE s.relation = ANY ({relations}::text[]) AND v.differs"
        " ORDER BY s.n, array_position({order}::text[], v.what), v.found"
    )
    .format(
        safeguards=_SAFEGUARD_ARRAYS,
        trees=_TREES,
        using_differs=_differs(sql.SQL("a.using_"), sql.SQL("s.using_")),
        check_differs=_differs(sql.SQL("a.check_"), sql.SQL("s.check_")),
        using_=sql.Literal(USING),
        check_=sql.Literal(CHECK),
        as_listed=sql.Literal(_AS_LISTED),
        relations=sql.SQL(_RELATIONS_MARK),
        order=sql.Literal(list(_ORDER)),
    )
    .as_string(None)
)


def _expressions_statement(relations: list[str], known: frozenset[str]) -> bytes:
    """`_EXPRESSIONS` for the listed policies on `relations`, knowing the
    trees `known`."""
    return (
        _EXPRESSIONS.replace(_RELATIONS_MARK, sql.Literal(relations).as_string(None))
        .replace(_KNOWN_MARK, sql.Literal(sorted(known)).as_string(None))
        .encode()
    )


def _probe_statement(known: frozenset[str]) -> bytes:
    """The probe's statement, knowing the expressions' trees `known` (md5s)
    to be as listed: those are not printed."""
    return sql.Literal(sorted(known)).as_bytes(None).join(_PROBE_PARTS)


# The statement of a server's first probe, which knows no tree yet.
_PROBE: Final[bytes] = _probe_statement(frozenset())
# How many trees a process knows at most; past that it forgets them all,
# printing each once more (each is the tree of a policy restored or
# rewritten as listed: an owner's change, seldom).
_KNOWN_AT_MOST: Final = 1000
# How long the printing of a table's policies' expressions (`_EXPRESSIONS`)
# waits for a lock on it: a table locked at a server's start (a long VACUUM
# FULL, an ALTER TABLE, a pg_dump's queue) held the probe past its timeout,
# health NOT_SERVING though its policies were as listed. Its check then waits
# for the next probe; the probe's other questions are answered meanwhile.
_EXPRESSIONS_LOCK_TIMEOUT: Final = 0.1
# Each printing waits at most this share of what is left of the probe's time,
# and none is tried with less than `_LEAST_LOCK_TIMEOUT` of it left.
_EXPRESSIONS_SHARE: Final = 0.25
_LEAST_LOCK_TIMEOUT: Final = 0.01


@dataclass(frozen=True)
class _Answer:
    """What the probe found: whether the database takes writes, the grants
    the roles lack and the row security the tables lack, each on a table that
    still exists, the listed tables that no longer do (`vanished`), and the
    expressions newly found as listed (`as_listed`)."""

    writable: bool
    missing: tuple[Grant, ...] = ()
    unsecured: tuple[Breach, ...] = ()
    vanished: tuple[str, ...] = ()
    # Both clocks as the statement read them; None if it answered no row,
    # or this process's stepped meanwhile (`ClockSkew.read`).
    clocks: ClockReading | None = None
    # The policies' expressions' trees found as listed, not known before
    # (`_probe_statement`).
    as_listed: frozenset[str] = frozenset()
    # The tables whose policies' expressions were not printed, so not
    # compared (`_expressions`): `waiting`, for a lock another session holds
    # on the table; `unchecked`, those and any the probe's time ran out for.
    waiting: frozenset[str] = frozenset()
    unchecked: frozenset[str] = frozenset()

    @property
    def sound(self) -> bool:
        return self.writable and not (self.missing or self.unsecured or self.vanished)


# The tables, columns and functions `_GRANTS` and `_SAFEGUARDS` name, once
# each (`None`: the table, or function).
_LISTED: Final[tuple[tuple[str, str | None], ...]] = tuple(
    dict.fromkeys(
        [(g.relation, g.column) for g in _GRANTS] + [(s.relation, None) for s in _SAFEGUARDS]
    )
)
# Which of them no longer exist: positions in `_LISTED`. A column dropped by
# hand fails `_PROBE` whole (has_column_privilege raises where a missing
# table is NULL), and the log said nothing of what was missing; a table
# dropped was said to lack its grants. Asked only once the probe's statement
# has failed, or found something missing: a catalog lookup, no row read.
_VANISHED: Final[bytes] = (
    sql.SQL(
        "SELECT g.n FROM unnest({relations}::text[], {columns}::text[]) WITH ORDINALITY"
        " AS g(relation, col, n)"
        " WHERE CASE WHEN starts_with(g.relation, {function})"
        " THEN to_regprocedure(substr(g.relation, {after_function})) IS NULL"
        " ELSE to_regclass(g.relation) IS NULL END OR (g.col IS NOT NULL AND NOT EXISTS"
        " (SELECT FROM pg_attribute a WHERE a.attrelid = to_regclass(g.relation)"
        " AND a.attname = g.col AND a.attnum > 0 AND NOT a.attisdropped))"
        " ORDER BY g.n"
    )
    .format(
        relations=sql.Literal([relation for relation, _ in _LISTED]),
        columns=sql.Literal([column for _, column in _LISTED]),
        function=sql.Literal(FUNCTION),
        after_function=sql.Literal(len(FUNCTION) + 1),
    )
    .as_bytes(None)
)


class _ProbeFailed(Exception):
    """The probe's statement failed as the database answered it (not for
    want of the database): what to log of it, `said`, and the condition that
    holds, in the words of `Database.probe_found`."""

    def __init__(self, said: str, found: str) -> None:
        super().__init__(said)
        self.said = said
        self.found = found


# What the probe finds (`Database.probe_found`), as the watch's NOT_SERVING
# line says it (`not serving (health NOT_SERVING): ...`): each names what it
# is of, the database or this process's clock (`ClockSkew.past_bound`).
_FOUND_SILENT: Final = "the database does not answer"
_FOUND_READ_ONLY: Final = "the database takes no writes (read-only)"
_FOUND_LOGIN_REFUSED: Final = "the database's login may not assume the service's roles"
_FOUND_GRANTS_MISSING: Final = "the service's roles lack grants the migrations make them"
_FOUND_UNSECURED: Final = "a table lacks row-level security the migrations made"
_FOUND_VANISHED: Final = "a table or column the migrations made no longer exists"
_FOUND_STATEMENT_FAILED: Final = "the health probe's statement fails"


# Every statement of the service reads by an index. A month's partition of
# events is empty when created, and PostgreSQL gives a partition no 10-page
# floor: a plan cached while it looked empty sorted a sequential scan of it on
# every key probe (Record at a third of its speed until autovacuum analyzed
# it). Off, a sequential scan is only chosen where no index can serve.
_NO_SEQSCAN: Final = "SELECT set_config('enable_seqscan', 'off', false)"

Connection = EagerConnection


# The key the appender's large writes take their bulk share under (FairShare's
# keys are otherwise tenants, which no tenant id can equal: it has a space).
_LARGE_WRITES: Final = "large writes"


def change_connections(pool_size: int) -> int:
    """Connections a process's configuration changes hold at most at once
    (store/changes.py): each holds one while the appender records it."""
    return max(1, pool_size // 2)


def bulk_connections(pool_size: int) -> int:
    """Connections pages of many events are read on at most at once: what the
    changes leave, less one for the appender and single reads (at least one;
    from a pool of 3 up, the two shares never take the whole pool)."""
    return max(1, pool_size - change_connections(pool_size) - 1)


class RolesMissing(Exception):
    """The database URL's user cannot assume the service's roles."""


class Database:
    """An open pool of autocommit connections to one PostgreSQL database."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        scopes: _Scopes,
        url: str,
        *,
        system_lock_timeout: float = SYSTEM_LOCK_TIMEOUT,
        read_lock_timeout: float = READ_LOCK_TIMEOUT,
        clock: Callable[[], datetime] | None = None,
        max_clock_skew: float = 0.0,
    ):
        self.pool = pool
        self._url = url
        self._scopes = scopes
        # Many readers catching up at once (a restart's worth of streams
        # resuming, exports) took every pooled connection and queued for more:
        # each append of the process waited behind all the pages asked before
        # it, and failed (UNAVAILABLE) past the pool's timeout. Shared fairly
        # among tenants: one tenant's many readers must not make another's
        # wait behind all of them.
        share = bulk_connections(pool.max_size)
        self._bulk_reads = FairShare(capacity=share, per_key=share)
        self._system_lock_timeout = _milliseconds(system_lock_timeout)
        self._read_lock_timeout = _milliseconds(read_lock_timeout)
        # False while probe() finds the database down: calls then fail at once
        # with UNAVAILABLE instead of each waiting out the pool's timeout.
        self.reachable = True
        # The grants the last probe found the service's roles lacking, as
        # last logged (`_say_missing_grants`).
        self._missing_grants: tuple[Grant, ...] = ()
        # The row security it found the tables lacking (`_say_unsecured`).
        self._unsecured: tuple[Breach, ...] = ()
        # The policies' expressions' trees a probe found as listed, and the
        # probe's statement that knows them (`_probe_statement`).
        self._known_expressions: frozenset[str] = frozenset()
        self._probe_statement = _PROBE
        # The tables whose policies' check was said to wait for a lock
        # (`_say_waiting`), until it is made.
        self._waiting: frozenset[str] = frozenset()
        # What the probe found wrong and logged, until one answers otherwise:
        # said once as it goes, not at each of the failed probes in a row
        # that take the database for down (ProbeVerdicts), nor after.
        self._said_of_probe: tuple[str, ...] = ()
        # What the last probe found wrong, each condition that holds, for the
        # watch's NOT_SERVING line ("the database takes no writes"); empty
        # while it found nothing wrong.
        self.probe_found = ""
        # The last refusal of the service's privileges a call met and logged
        # (its role, and the database's words, named), until a probe finds
        # everything granted again after it had found something wrong.
        self._refusal_said: tuple[str, str] | None = None
        self._probe_failed = False
        # Set by a refusal not said before: the probe looks now (`next_look`).
        self._look_now = asyncio.Event()
        # Checkouts refused for want of a connection in time, or of room to
        # wait for one (a call cancelled while it waited is not counted).
        self.checkout_timeouts = 0
        # Connections on their way back to the pool (`_give_back`).
        self._returning: set[asyncio.Future[None]] = set()
        # This process's clock against the database's, as the probe last read
        # both (`clock`: this process's, the host's by default); further apart
        # than `max_clock_skew` seconds (0: any), the probe fails (ADR 0138).
        self.clock_skew = ClockSkew(
            clock, bound=timedelta(seconds=max_clock_skew) if max_clock_skew > 0 else None
        )

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
        wait: bool = True,
        tracer: Tracer | None = None,
        system_lock_timeout: float = SYSTEM_LOCK_TIMEOUT,
        read_lock_timeout: float = READ_LOCK_TIMEOUT,
        clock: Callable[[], datetime] | None = None,
        max_clock_skew: float = 0.0,
    ) -> Database:
        """`tracer`: every statement run inside a recorded span becomes a
        child span of it (store/traced.py); None, no database spans.
        `clock`: this process's, which the probe compares with the
        database's (`clock_skew`); the host's by default. `max_clock_skew`:
        seconds the two may be apart before the probe fails (0: never).

        Raises RolesMissing when the URL's user cannot assume the roles (the
        migrations create them; docs/database.md)."""
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": "sealtrail"}
        await _check_roles(url, timeout=timeout)
        if tracer is not None:
            kwargs["cursor_factory"] = traced_cursor_class(tracer)
        scopes = _Scopes()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            # Reads what has arrived without a turn of the loop (ADR 0028).
            connection_class=EagerConnection,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs=kwargs,
            configure=scopes.configure,
            open=False,
        )
        await pool.open(wait=wait, timeout=timeout if wait else 30.0)
        return cls(
            pool,
            scopes,
            url,
            system_lock_timeout=system_lock_timeout,
            read_lock_timeout=read_lock_timeout,
            clock=clock,
            max_clock_skew=max_clock_skew,
        )

    @property
    def system_lock_timeout(self) -> str:
        """How long the system role's work waits for a lock another session
        holds, as `lock_timeout` takes it (`system_lock_timeout` at open): for
        work on another scope's connection as the system role (a change's
        record, store/appender.py)."""
        return self._system_lock_timeout

    async def close(self) -> None:
        await asyncio.gather(*self._returning, return_exceptions=True)
        await self.pool.close()

    @asynccontextmanager
    async def connection(
        self,
        tenant_id: str,
        *,
        generic_plans: bool = False,
        timeout: float | None = None,
        statement_timeout: float | None = None,
    ) -> AsyncIterator[Connection]:
        """A pooled connection that sees `tenant_id`'s rows and no other's.
        `generic_plans`: its statements are planned once for any values, not
        for each run's; only for statements whose plan no value can change.
        `timeout`: how long to wait for one (None: the pool's timeout).
        `statement_timeout`: how long each of its statements may run, in
        seconds, then QueryCanceled (None: the database's or role's default).
        Part of the scope, set with the tenant: a transaction of its own to
        set it took three more round trips per page (ADR 0023, 2026-12-06)."""
        plans = _GENERIC_PLANS if generic_plans else _PLANS_FOR_VALUES
        statements = None if statement_timeout is None else _milliseconds(statement_timeout)
        scope = (SERVICE_ROLE, tenant_id, plans, self._read_lock_timeout, statements)
        async with self._checkout(scope, timeout=timeout) as conn:
            yield conn

    @asynccontextmanager
    async def bulk_connection(
        self, tenant_id: str, *, bounded: bool = False, statement_timeout: float | None = None
    ) -> AsyncIterator[Connection]:
        """`connection(tenant_id)`, for reading a page of many events: at most
        `bulk_connections` of the pool do that at once; the others wait their
        turn here, not in the pool's queue ahead of appends, and a tenant's
        turn comes before another's that holds more of them (FairShare).

        `bounded`: the whole wait, for a turn and then a connection, lasts
        no longer than the pool's timeout, as `connection`'s alone does, then
        Unavailable: for a call's page (Query's), whose caller waited that
        long at most before the share, not up to its deadline. Unbounded, a
        reader (an export's, a stream's catching up, the forwarder) waits
        its turn however long the others read.

        `statement_timeout` as for `connection`."""
        self.refuse_if_unreachable()  # at once, not after those ahead time out
        if not bounded:
            async with (
                self._bulk_reads.slot(tenant_id),
                self.connection(tenant_id, statement_timeout=statement_timeout) as conn,
            ):
                yield conn
            return
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.pool.timeout
        async with contextlib.AsyncExitStack() as held:
            try:
                async with asyncio.timeout_at(give_up_at):
                    await held.enter_async_context(self._bulk_reads.slot(tenant_id))
            except TimeoutError:
                self.checkout_timeouts += 1
                raise Unavailable(
                    f"the server's bulk reads (pages of many events, {self._bulk_reads.in_use()}"
                    f" at once) are all in use; none was free within {self.pool.timeout:g} s;"
                    " retry",
                    retry_after=RETRY_AFTER_SECONDS,
                ) from None
            # What is left of the wait, and at least a moment: a connection
            # free now is taken, however long the turn took.
            left = max(0.01, give_up_at - loop.time())
            conn = await held.enter_async_context(
                self.connection(tenant_id, timeout=left, statement_timeout=statement_timeout)
            )
            yield conn

    @asynccontextmanager
    async def bulk_system_connection(self) -> AsyncIterator[Connection]:
        """`system_connection(generic_plans=True)` within `bulk_connections`,
        as a page of many events is read: for the appender's large writes
        (ADR 0002), which would otherwise take the connection left for its
        other writes and single reads."""
        self.refuse_if_unreachable()
        async with (
            self._bulk_reads.slot(_LARGE_WRITES),
            self.system_connection(generic_plans=True) as conn,
        ):
            yield conn

    @asynccontextmanager
    async def system_connection(self, *, generic_plans: bool = False) -> AsyncIterator[Connection]:
        """A pooled connection for work across tenants; `generic_plans` as
        for `connection`."""
        plans = _GENERIC_PLANS if generic_plans else _PLANS_FOR_VALUES
        scope = (SYSTEM_ROLE, "", plans, self._system_lock_timeout, _NO_STATEMENT_TIMEOUT)
        async with self._checkout(scope) as conn:
            yield conn

    @asynccontextmanager
    async def own_system_connection(self) -> AsyncIterator[Connection]:
        """`system_connection()`, but a connection of its own, outside the
        pool: for a lock held across work that takes pooled connections,
        which it must not keep from them. The deployment-sink pass held the
        definition's lock on a pooled one while it made each tenant's instance
        on another: with a pool of two, the appender never got one to record
        `sink.created` (helper-189)."""
        self.refuse_if_unreachable()
        conn: Connection | None = None
        try:
            conn = await EagerConnection.connect(
                self._url,
                autocommit=True,
                application_name="sealtrail",
                connect_timeout=max(1, round(DEFAULT_CONNECT_TIMEOUT)),
            )
            async with conn:
                await conn.execute(_NO_SEQSCAN)
                scope = (
                    SYSTEM_ROLE, "", _PLANS_FOR_VALUES, self._system_lock_timeout,
                    _NO_STATEMENT_TIMEOUT,
                )  # fmt: skip
                await conn.execute(_SET_SCOPE, scope)
                yield conn
        except psycopg.Error as error:
            if refuses_the_deployment(error):
                raise self._refused(SYSTEM_ROLE, error) from error
            if not is_unavailable(error, conn):
                raise
            if _cut_short(error):
                log.warning(_CUT_SHORT_LOGGED, "a connection of its own", named(error))
                told = _CUT_SHORT_TOLD
            else:
                log.warning("database: a connection of its own failed: %s", named(error))
                told = f"the database is unavailable; {SEE_THE_LOG}"
            raise Unavailable(told, retry_after=RETRY_AFTER_SECONDS) from error

    async def probe(self, *, timeout: float) -> bool:
        """`_probe_once`; the refusal a call last met (`_refused`) is
        forgotten once a probe finds everything well after one that did not:
        the same refusal met again is said again."""
        answered = await self._probe_once(timeout=timeout)
        if answered and self._probe_failed:
            self._refusal_said = None
        self._probe_failed = not answered
        return answered

    def look_now(self) -> None:
        """Has the probe look at once, not at its next tick (`next_look`)."""
        self._look_now.set()

    async def next_look(self, interval: float) -> bool:
        """Once the probe's next look is due: after `interval` seconds, or
        sooner if `look_now` was called meanwhile (or before). Whether it was."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await self._look_now.wait()
        asked = self._look_now.is_set()
        self._look_now.clear()
        return asked

    async def _probe_once(self, *, timeout: float) -> bool:
        """Whether the database answers a query within `timeout` seconds,
        takes writes as the service's roles, each role holds every
        privilege the migrations grant it, and each table the row-level
        security they give it (`_PROBE`); what it finds wrong is logged once
        as it goes, and kept in `probe_found`: on a pooled connection,
        if one is free
        within half of that; else (all busy with load, which is no outage, or
        the one found broken) on a connection of its own, whose refusal for
        want of a free slot is an answer too. A connection of its own each
        time, alone, was refused at max_connections or took longer than
        `timeout` to a distant database, and the server, whose pooled
        connections worked, refused every call (helper-140)."""
        self.probe_found = _FOUND_SILENT
        give_up_at = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(give_up_at):
                answer = await self._pooled_connection_answers(
                    wait=timeout / 2, give_up_at=give_up_at
                )
                if answer is None:
                    conn = await psycopg.AsyncConnection.connect(
                        self._url, autocommit=True, connect_timeout=max(1, int(timeout))
                    )
                    async with conn:
                        # Fresh: the database's or role's own timeouts, as ever.
                        answer = await self._probe(conn, give_up_at=give_up_at, leftover=None)
        except psycopg.OperationalError as error:
            # A refusal at connection has no SQLSTATE (53300): its words tell.
            answered = any(words in str(error) for words in _NO_FREE_SLOT)
            if answered:
                self.probe_found = ""
            return answered
        except psycopg.errors.InsufficientPrivilege as error:
            self.probe_found = _FOUND_LOGIN_REFUSED
            self._say_of_probe(
                "database: its login cannot work as the service's roles"
                f" ({error.diag.message_primary}): every call fails until {SERVICE_ROLE}"
                f" and {SYSTEM_ROLE} are granted to it again (docs/database.md)"
            )
            return False
        except _ProbeFailed as failed:
            self.probe_found = failed.found
            self._say_of_probe(failed.said)
            return False
        except (psycopg.Error, TimeoutError, OSError):
            return False
        if answer.clocks is not None:
            self.clock_skew.note(answer.clocks)
        self._know(answer.as_listed)
        self._say_waiting(answer)
        answer = self._with_kept_verdicts(answer)
        self._say_missing_grants(answer.missing)
        self._say_unsecured(answer.unsecured)
        said = []
        found = []
        if not answer.writable:
            said.append("database: it answers, but takes no writes (read-only)")
            found.append(_FOUND_READ_ONLY)
        if answer.missing:
            found.append(_FOUND_GRANTS_MISSING)
        if answer.unsecured:
            found.append(_FOUND_UNSECURED)
        if answer.vanished:
            said.append(_vanished_said(answer.vanished))
            found.append(_FOUND_VANISHED)
        clock_off = self.clock_skew.past_bound()
        if clock_off is not None:
            found.append(clock_off)
        self._say_of_probe(*said)
        self.probe_found = "; ".join(found)
        return answer.sound and clock_off is None

    def clock_off_at_start(self) -> str | None:
        """What `probe` would find of the clocks as read at the start
        (`learn_policies`), kept in `probe_found`; None if nothing."""
        clock_off = self.clock_skew.past_bound()
        if clock_off is not None:
            self.probe_found = clock_off
        return clock_off

    async def learn_policies(self, *, timeout: float) -> None:
        """Has the probe's statement know the policies' expressions found as
        listed now, at a server's start, so that none is printed later: the
        first probe came a tick after the start, and a table locked by then
        (a long read's ACCESS EXCLUSIVE wait, an ALTER TABLE) held it past
        its timeout, health NOT_SERVING (pg_get_expr locks its table). Both
        clocks it reads are noted (`clock_off_at_start`). What else the
        statement finds is the probe's to say; an error, too."""
        give_up_at = asyncio.get_running_loop().time() + timeout
        with contextlib.suppress(psycopg.Error, TimeoutError, _ProbeFailed):
            async with asyncio.timeout_at(give_up_at):
                answer = await self._pooled_connection_answers(
                    wait=timeout / 2, give_up_at=give_up_at
                )
                if answer is not None:
                    if answer.clocks is not None:
                        self.clock_skew.note(answer.clocks)
                    self._know(answer.as_listed)
                    self._say_waiting(answer)

    async def _probe(
        self, conn: psycopg.AsyncConnection[Any], *, give_up_at: float, leftover: _Timeouts | None
    ) -> _Answer:
        """`_probe` on `conn`, with the trees this process knows, printing
        the expressions of those it does not until `give_up_at` (loop time);
        `leftover`: the timeouts its last scope left on it (`_Scopes.timeouts`;
        None: a fresh connection's, the database's or role's)."""
        return await _probe(
            conn,
            self._probe_statement,
            self.clock_skew,
            known=self._known_expressions,
            give_up_at=give_up_at,
            leftover=leftover,
        )

    def _with_kept_verdicts(self, answer: _Answer) -> _Answer:
        """`answer`, with the last verdict on the expressions of the policies
        of each table it did not print them for (`_Answer.unchecked`): a lock
        held on a table is no sign its policies changed (nor one rewritten
        while it was held a sign they are as listed again). None yet: none
        differs, as at a start."""
        if not answer.unchecked:
            return answer
        kept = tuple(
            b
            for b in self._unsecured
            if b.what in (USING, CHECK) and b.safeguard.relation in answer.unchecked
        )
        if not kept:
            return answer
        return replace(answer, unsecured=tuple(sorted((*answer.unsecured, *kept), key=_order_of)))

    def _say_waiting(self, answer: _Answer) -> None:
        """Says once that the check of a table's policies waits for a lock on
        it (`_Answer.waiting`), and once when it is made again."""
        newly = answer.waiting - self._waiting
        if newly:
            tables = ", ".join(sorted(newly))
            log.warning(
                "database: the health probe's check of the row-level security policies on"
                " %s waits for a lock another session holds (a VACUUM FULL, an ALTER TABLE,"
                " a pg_dump's queue): it keeps its last verdict and checks again at its"
                " next probe",
                tables,
            )
        checked = self._waiting - answer.unchecked
        if checked:
            log.info(
                "database: the health probe checked the row-level security policies on %s"
                " again: no lock keeps it waiting",
                ", ".join(sorted(checked)),
            )
        self._waiting = (self._waiting - checked) | answer.waiting

    def _know(self, as_listed: frozenset[str]) -> None:
        """The probe's statement knows the expressions' trees `as_listed`
        from now on (at most `_KNOWN_AT_MOST`, then those alone)."""
        if not as_listed:
            return
        known = self._known_expressions | as_listed
        if len(known) > _KNOWN_AT_MOST:
            known = as_listed
        self._known_expressions = known
        self._probe_statement = _probe_statement(known)

    def _say_of_probe(self, *said: str) -> None:
        """Logs each of `said` (what the probe found wrong; none: nothing, as
        far as it asked) that was not said last time."""
        for line in said:
            if line not in self._said_of_probe:
                log.error("%s", line)
        self._said_of_probe = said

    def _say_unsecured(self, unsecured: tuple[Breach, ...]) -> None:
        """Logs the row security the tables lack, once for each change of
        it, and once when they have it all again."""
        if unsecured == self._unsecured:
            return
        if unsecured:
            log.error(
                "database: %s: tenants' rows are not kept apart as the migrations made"
                " them (every call is refused until it is restored as they made it;"
                " docs/database.md)",
                "; ".join(str(s) for s in unsecured),
            )
        else:
            log.warning(
                "database: every table has its row-level security as the migrations made it again"
            )
        self._unsecured = unsecured

    def _say_missing_grants(self, missing: tuple[Grant, ...]) -> None:
        """Logs the grants the service's roles lack, once for each change of
        them, and once when they hold them all again."""
        if missing == self._missing_grants:
            return
        if missing:
            lacks = "; ".join(
                f"{role} lacks " + ", ".join(str(g) for g in missing if g.role == role)
                for role in dict.fromkeys(g.role for g in missing)
            )
            log.error(
                "database: %s: every call that needs it fails until it is granted again,"
                " as the migrations grant it (docs/database.md)",
                lacks,
            )
        else:
            log.warning("database: the service's roles hold every grant they need again")
        self._missing_grants = missing

    async def _pooled_connection_answers(self, *, wait: float, give_up_at: float) -> _Answer | None:
        """The probe's answer (`_probe`), asked on a pooled connection; None
        if none was free in time (PoolTimeout) or the one found was broken."""
        try:
            async with self._pooled(timeout=wait) as conn:
                leftover = self._scopes.timeouts(conn)
                return await self._probe(conn, give_up_at=give_up_at, leftover=leftover)
        except psycopg.errors.InsufficientPrivilege:
            raise  # an answer: a connection of its own would be refused alike
        except psycopg.Error:
            return None

    async def drop_broken(self) -> None:
        """After an outage: discard the pool's connections that died with it
        (a call that still meets one gets UNAVAILABLE, and its retry a fresh one)."""
        with contextlib.suppress(psycopg.Error, TimeoutError):
            async with asyncio.timeout(10):
                await self.pool.check()

    def refuse_if_unreachable(self) -> None:
        """`not_served()` at once while probe() finds the database down (or
        read-only, or refusing the service's roles, or a grant of theirs, or
        lacking a table's row-level security)."""
        if not self.reachable:
            raise not_served()

    def _refused(self, role: str, error: psycopg.Error) -> Unavailable:
        """What a call is answered that the database refused for the
        privileges of `role` (the scope it worked as), or a table or column
        the migrations made them (`refuses_the_deployment`): what health's
        NOT_SERVING answers, which the probe is asked to find now. Logged
        once for each change of what is refused: the role, and the
        database's words, named (they name the table or column, or the
        role it would not let the login work as)."""
        said = (role, named(error))
        if said != self._refusal_said:
            self._refusal_said = said
            log.error(
                "database: %s was refused: %s: calls that need it are answered UNAVAILABLE"
                " until it is granted again, or restored, as the migrations made it; the"
                " health probe looks now (docs/database.md)",
                *said,
            )
            self.look_now()
        return not_served()

    def pool_has_waiters(self) -> bool:
        """Whether a caller waits for a connection of the pool now."""
        return self.pool.get_stats().get("requests_waiting", 0) > 0

    @asynccontextmanager
    async def _checkout(
        self, scope: _Scope, *, timeout: float | None = None
    ) -> AsyncIterator[Connection]:
        self.refuse_if_unreachable()
        conn: Connection | None = None
        try:
            async with self._pooled(timeout) as conn:
                await self._scopes.enter(conn, scope)
                yield conn
        except psycopg.Error as error:
            if refuses_the_deployment(error):
                raise self._refused(scope[0], error) from error
            if not is_unavailable(error, conn):
                raise
            # PoolTimeout is an OperationalError too: no connection in time.
            if isinstance(error, PoolTimeout | TooManyRequests):
                self.checkout_timeouts += 1
                told = detailed("the database is unavailable", error)  # the pool's own words
            elif isinstance(error, psycopg.errors.LockNotAvailable):
                log.warning(
                    "database: a call waited past its lock timeout (%s) for a lock another"
                    " session holds: %s%s",
                    scope[3],
                    named(error),
                    _lock_waited_on(error),
                )
                told = (
                    "the database kept the call waiting past its lock timeout for a lock"
                    " another session holds (a table being rewritten or altered, say); retry"
                )
            elif _cut_short(error):
                log.warning(_CUT_SHORT_LOGGED, "a call", named(error))
                told = _CUT_SHORT_TOLD
            else:
                # Its text may name the database's host, port, role or processes:
                # the server's log keeps it, under the call's request id (helper-119).
                log.warning("database: a call's connection failed: %s", named(error))
                told = f"the database is unavailable; {SEE_THE_LOG}"
            raise Unavailable(told, retry_after=RETRY_AFTER_SECONDS) from error

    @asynccontextmanager
    async def _pooled(self, timeout: float | None = None) -> AsyncIterator[Connection]:
        """`pool.connection()`, but the connection comes back whatever ends
        the block. A call cancelled twice (its client gone, then a stop's, a
        timeout's or a task group's cancel) left `pool.connection()` while it
        gave the connection back, and the pool lost it for good
        (tests/integration/test_pool_returns.py). Connections are autocommit:
        a transaction block ends its own transaction, and the pool rolls
        back one left open, or closes one left mid-statement."""
        conn = await self.pool.getconn(timeout)
        try:
            yield conn
        except GeneratorExit:
            # Closed, not cancelled: an async generator's aclose, or a task
            # dropped with its loop (a stop), its coroutine closed by the
            # garbage collector, which may wait for nothing (a task of its own
            # failed there: no loop runs). Given back in place, as psycopg_pool
            # does; no cancel lands in a close, and an idle connection goes
            # back without a wait.
            # Its timeouts are not reset here (no statement where no loop
            # may run): forgotten, the next scope resets them first.
            self._scopes.forget(conn)
            await self.pool.putconn(conn)
            raise
        except BaseException:
            await self._give_back(conn)
            raise
        await self._give_back(conn)

    async def _give_back(self, conn: Connection) -> None:
        """`conn` back to the pool (its statement timeout reset first if
        its scope left one below the floor, `_Scopes.reset`), however many
        cancellations land meanwhile: the return goes on in a task of its
        own, which a caller cancelled again leaves behind to finish (`close`
        waits for it)."""
        returning = asyncio.ensure_future(self._return(conn))
        self._returning.add(returning)
        returning.add_done_callback(self._returning.discard)
        try:
            await asyncio.shield(returning)
        except asyncio.CancelledError:
            if not returning.done():
                returning.add_done_callback(_log_failed_return)
            raise

    async def _return(self, conn: Connection) -> None:
        await self._scopes.reset(conn)
        await self.pool.putconn(conn)


def not_served() -> Unavailable:
    """What a call is answered while the database does not serve the server
    (health NOT_SERVING): in words that name no cause (unreachable, read-only,
    a grant or row-level security lost: the log names it, for the operator),
    with a retry delay."""
    return Unavailable(
        "the database cannot serve calls now (the server's log says why);"
        " they are served again once it can",
        retry_after=RETRY_AFTER_SECONDS,
        reason=DATABASE_UNAVAILABLE,
    )


def _log_failed_return(returning: asyncio.Future[None]) -> None:
    if not returning.cancelled() and (error := returning.exception()) is not None:
        log.warning("database: a connection's return to the pool failed: %r", error)


def is_unavailable(error: psycopg.Error, conn: psycopg.AsyncConnection[Any] | None) -> bool:
    """Whether `error` (met on `conn`, if one was had) is the database's
    trouble, worth a retry (UNAVAILABLE), not the statement's: the database
    unreachable or the connection lost (OperationalError), a state it is in
    (_DATABASE_STATES), or any error after which the connection is broken."""
    return isinstance(error, (psycopg.OperationalError, *_DATABASE_STATES)) or (
        conn is not None and conn.broken
    )


# A statement the database cut short after its `statement_timeout` (the
# database's or the role's: a DBA's guard against runaway queries). psycopg
# classes it as operational (QueryCanceled, 57014), and it was logged as "a
# call's connection failed" and answered as the database unavailable: an
# operator looked for an outage. Told by its SQLSTATE alone: its words were
# English only where the database's lc_messages is, and a German or French
# database's timeouts were outages again. An operator's cancel
# (pg_cancel_backend) shares the SQLSTATE, and no field but the (translated)
# words tells the two apart: both are said, the database's own words logged.
_CUT_SHORT_LOGGED: Final = (
    "database: the database cancelled a statement of %s (SQLSTATE 57014): the"
    " statement_timeout the database or its role sets cut it short, or an operator"
    " cancelled it (pg_cancel_backend); it said: %s"
)
_CUT_SHORT_TOLD: Final = (
    "the database cancelled the call's statement: its statement_timeout (a limit the"
    " database or its role sets) cut it short, or an operator cancelled it; retry, and if"
    " it recurs, ask the operator to raise the statement_timeout"
)


def _cut_short(error: psycopg.Error) -> bool:
    """Whether `error` is a statement the database cancelled: cut short by
    the statement timeout, or cancelled by an operator (57014, in any
    language the database speaks)."""
    return isinstance(error, psycopg.errors.QueryCanceled)


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _below_the_floor(statement_timeout: str | None) -> bool:
    """Whether a scope's statement timeout (as `_milliseconds` writes it; None,
    the database's or role's) may cut short the next scope's statement."""
    if statement_timeout is None:
        return False
    return int(statement_timeout.removesuffix("ms")) < _SAFE_STATEMENT_TIMEOUT * 1000


class _Scopes:
    """The scope each pooled connection was last given."""

    def __init__(self) -> None:
        self._current: weakref.WeakKeyDictionary[Connection, _Scope] = weakref.WeakKeyDictionary()

    def timeouts(self, conn: Connection) -> _Timeouts:
        """The lock and statement timeouts `conn`'s last scope left on it;
        `_UNKNOWN_TIMEOUTS` if none is known (its scope statement failed)."""
        scope = self._current.get(conn)
        return _UNKNOWN_TIMEOUTS if scope is None else (scope[3], scope[4])

    async def enter(self, conn: Connection, scope: _Scope) -> None:
        previous = self._current.get(conn)
        if previous == scope:
            return
        # Set outside any transaction (connections are autocommit), so it
        # lasts until the next change, whatever later transactions do.
        self._current.pop(conn, None)
        if previous is None or _below_the_floor(previous[4]):
            # Sent as text, values quoted: a query of two statements takes no
            # parameters. Timed one by one (_SAFE_STATEMENT_TIMEOUT).
            await conn.execute(_RESET_THEN_SET_SCOPE.format(*map(sql.Literal, scope)))
        else:
            await conn.execute(_SET_SCOPE, scope)
        self._current[conn] = scope

    async def reset(self, conn: Connection) -> None:
        """A connection given back to the pool (`Database._give_back`, not
        psycopg_pool's reset hook, with which every return waits for a pool
        worker's task, and one a collected task gives back is lost), its
        statement timeout below the floor (or not known: its scope statement
        failed), reset to the database's or role's there and then, alone in
        its message: the next
        user's first statement no longer runs under it. The health probe's
        did (it sets its own timeouts by a first SET in its message, timed
        by the leftover, and after a Query page's 1 ms a loaded machine cut
        it: a failed probe for no reason of health). The reset itself runs
        under the old timeout; cut, the connection is closed (the pool then
        discards it and makes another), never lent out with it. A round trip
        more only after such a scope (a caller's deadline nearly spent, or
        SEALTRAIL_QUERY_TIMEOUT below a second)."""
        scope = self._current.get(conn)
        if scope is not None and not _below_the_floor(scope[4]):
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            # Mid-transaction (the pool rolls it back) or broken: a SET now
            # would be rolled back with it. Forgotten, the next scope resets.
            self.forget(conn)
            return
        try:
            if scope is None:
                await self.enter(conn, _NO_TENANT)  # a reset first, in its message
            else:
                self._current.pop(conn, None)
                await conn.execute(_RESET_STATEMENT_TIMEOUT)
                self._current[conn] = (*scope[:4], _NO_STATEMENT_TIMEOUT)
        except psycopg.Error as error:
            log.info(
                "database: a pooled connection's timeout could not be reset; it is closed and"
                " replaced: %s",
                named(error),
            )
            await conn.close()

    def forget(self, conn: Connection) -> None:
        """`conn`'s scope no longer known: the next `enter` resets its
        statement timeout before it sets one."""
        self._current.pop(conn, None)

    async def configure(self, conn: Connection) -> None:
        """A new connection starts with the least it can see (no tenant), and
        plans no sequential scan where an index serves (see _NO_SEQSCAN)."""
        await conn.execute(_NO_SEQSCAN)
        await self.enter(conn, _NO_TENANT)


async def _probe(
    conn: psycopg.AsyncConnection[Any],
    statement: bytes,
    clocks: ClockSkew,
    *,
    known: frozenset[str],
    give_up_at: float,
    leftover: _Timeouts | None,
) -> _Answer:
    """Whether the database takes writes as the service's roles, and the
    grants of role_grants.py that a role lacks, and how the tables' row
    security differs from row_security.py's (`_PROBE`, knowing the trees
    `known`; then `_expressions`, until `give_up_at`), and both clocks
    (`clocks`, of this process's). _ProbeFailed if a statement fails as the
    database answers it (the roles refused, and a lock waited for, aside),
    naming the listed tables and columns that no longer exist."""
    try:
        started = clocks.started()
        cursor = await _timed(conn, statement, give_up_at=give_up_at, leftover=leftover)
    except psycopg.errors.InsufficientPrivilege:
        raise
    except psycopg.Error as error:
        if is_unavailable(error, conn):
            raise
        raise await _failure(conn, error, give_up_at=give_up_at, leftover=leftover) from None
    row = await cursor.fetchone()
    if row is None:
        return _Answer(writable=False)
    read = clocks.read(started, database_time_of(row[3]))
    missing = tuple(_GRANTS[n - 1] for n in row[1])
    found = [(int(n), what, text) for n, what, text in row[2] if what != _UNKNOWN]
    unknown = dict.fromkeys(
        _SAFEGUARDS[int(n) - 1].relation for n, what, _ in row[2] if what == _UNKNOWN
    )
    printed = await _expressions(
        conn, list(unknown), known, give_up_at=give_up_at, leftover=leftover
    )
    found.extend(printed.found)
    unsecured = tuple(
        sorted(
            (
                Breach(_SAFEGUARDS[n - 1], what, text)
                for n, what, text in found
                if what != _AS_LISTED
            ),
            key=_order_of,
        )
    )
    as_listed = frozenset(text for _, what, text in found if what == _AS_LISTED and text)
    if not (missing or unsecured):
        return _Answer(
            writable=bool(row[0]),
            clocks=read,
            as_listed=as_listed,
            waiting=printed.waiting,
            unchecked=printed.unchecked,
        )
    # A table gone lacks its grants and row security too: said as gone.
    try:
        vanished = await _vanished(conn, give_up_at=give_up_at, leftover=leftover)
    except psycopg.Error as error:
        if is_unavailable(error, conn):
            raise
        vanished = ()
    return _Answer(
        writable=bool(row[0]),
        missing=tuple(g for g in missing if g.relation not in vanished),
        unsecured=tuple(b for b in unsecured if b.safeguard.relation not in vanished),
        vanished=vanished,
        clocks=read,
        as_listed=as_listed,
        waiting=printed.waiting,
        unchecked=printed.unchecked,
    )


# The probe asks on a pooled connection, in the scope its last user left it
# (`_Scopes`): after a Query page's statement timeout of 1 ms, its statements
# ran under that 1 ms, were cut short (waiting briefly for a lock, or in a
# moment's load), and the probe took a connection of its own, as if none of
# the pool's were free; one not had in time (a distant database, new
# connections refused) was a failed probe, two in a row NOT_SERVING
# (helper-429). A scope's lock timeout shorter than the probe's time failed
# its wait for a catalog locked whole alike. Where the timeouts left may end
# a statement before the probe's time does, it sets its own (the time left) in
# the same message, before the statement: local to the message's transaction
# (SET LOCAL), the connection's scope stays as `_Scopes` knows it, and
# PostgreSQL times each statement of a message by the timeout in force at its
# start: the message's parse and the first SET run under the one left. That
# one is never below `_SAFE_STATEMENT_TIMEOUT`: a connection given back after
# a scope's shorter one is reset then (`_Scopes.reset`); under a Query page's
# 1 ms, the SET itself was cut on a loaded machine. Otherwise the statement alone, as
# ever: a message of more than one statement took about 1 ms more of the
# database's for the probe's, whatever went first (a SELECT 1 as much as the
# SETs).
_PROBE_TIMEOUTS: Final = sql.SQL(
    "SET LOCAL statement_timeout TO {statements}; SET LOCAL lock_timeout TO {locks}; "
)
# (lock_timeout, statement_timeout) as a scope leaves them (`_Scope`): as
# `_milliseconds` writes them; None, the database's or role's own.
_Timeouts = tuple[str | None, str | None]
# A connection whose scope is not known (its scope statement failed): either
# may be anything, so taken as the least.
_UNKNOWN_TIMEOUTS: Final[_Timeouts] = ("1ms", "1ms")


def _may_cut_short(leftover: _Timeouts | None, seconds: float) -> bool:
    """Whether the timeouts `leftover` on a connection (None: a fresh one's, the
    database's or role's) may end a statement, or its wait for a lock, in
    less than `seconds`."""
    if leftover is None:
        return False
    return any(t is not None and int(t.removesuffix("ms")) < seconds * 1000 for t in leftover)


async def _timed(
    conn: psycopg.AsyncConnection[Any],
    statement: bytes,
    *,
    give_up_at: float,
    leftover: _Timeouts | None,
    lock_timeout: float | None = None,
) -> psycopg.AsyncCursor[Any]:
    """`statement` (one, without parameters) run on `conn`, on which its
    last scope left the timeouts `leftover`, so that it runs, and waits for a
    lock, until `give_up_at` (loop time), or for a lock `lock_timeout`
    seconds if given (`_PROBE_TIMEOUTS`); its cursor, at its rows."""
    seconds = give_up_at - asyncio.get_running_loop().time()
    if lock_timeout is None and not _may_cut_short(leftover, seconds):
        return await conn.execute(statement)
    locks = _milliseconds(seconds if lock_timeout is None else lock_timeout)
    cursor = await conn.execute(
        _under_timeouts(statement, statements=_milliseconds(seconds), locks=locks)
    )
    cursor.nextset()  # past the first SET LOCAL's
    cursor.nextset()  # and the second's
    return cursor


def _under_timeouts(statement: bytes, *, statements: str, locks: str) -> bytes:
    """`statement` after `_PROBE_TIMEOUTS` in one message: run for at most
    `statements`, waiting for a lock at most `locks` (as `_milliseconds`
    writes them); its rows are the message's third result."""
    timeouts = _PROBE_TIMEOUTS.format(statements=sql.Literal(statements), locks=sql.Literal(locks))
    return timeouts.as_bytes(None) + statement


def _order_of(breach: Breach) -> tuple[int, int, str]:
    """Where `breach` comes among a probe's: by safeguard, then as `_ORDER`."""
    return _SAFEGUARDS.index(breach.safeguard), _ORDER.index(breach.what), breach.found or ""


@dataclass(frozen=True)
class _Printed:
    """What `_expressions` found: rows [position in `_SAFEGUARDS`, what,
    found] as `_EXPRESSIONS` answers them, and the tables it printed none
    for (`waiting`: for a lock; `unchecked`: those, and any it had no time
    left for)."""

    found: tuple[tuple[int, str, str | None], ...] = ()
    waiting: frozenset[str] = frozenset()
    unchecked: frozenset[str] = frozenset()


async def _expressions(
    conn: psycopg.AsyncConnection[Any],
    relations: list[str],
    known: frozenset[str],
    *,
    give_up_at: float,
    leftover: _Timeouts | None,
) -> _Printed:
    """The listed policies on `relations` whose trees are not among `known`,
    their expressions printed and compared with the listed (`_EXPRESSIONS`),
    each printing waiting for a lock at most `_EXPRESSIONS_LOCK_TIMEOUT`, or
    its share of what is left until `give_up_at` (loop time). All the tables
    at once; if a lock is waited for, one at a time, so that a table locked
    keeps none of the others from being checked."""
    loop = asyncio.get_running_loop()
    found: list[tuple[int, str, str | None]] = []
    waiting: set[str] = set()
    batches = [relations] if relations else []
    while batches:
        batch = batches.pop(0)
        left = give_up_at - loop.time()
        lock_timeout = min(_EXPRESSIONS_LOCK_TIMEOUT, left * _EXPRESSIONS_SHARE)
        if lock_timeout < _LEAST_LOCK_TIMEOUT:
            unchecked = {r for rest in (batch, *batches) for r in rest}
            return _Printed(tuple(found), frozenset(waiting), frozenset(waiting | unchecked))
        statement = _expressions_statement(batch, known)
        try:
            cursor = await _timed(
                conn, statement, give_up_at=give_up_at, leftover=leftover, lock_timeout=lock_timeout
            )
            rows = await cursor.fetchall()
        except psycopg.errors.LockNotAvailable:
            if len(batch) == 1:
                waiting.add(batch[0])
            else:
                batches.extend([relation] for relation in batch)
            continue
        except psycopg.Error as error:
            if is_unavailable(error, conn):
                raise
            raise await _failure(conn, error, give_up_at=give_up_at, leftover=leftover) from None
        found.extend((int(n), what, text) for n, what, text in rows)
    return _Printed(tuple(found), frozenset(waiting), frozenset(waiting))


async def _vanished(
    conn: psycopg.AsyncConnection[Any], *, give_up_at: float, leftover: _Timeouts | None
) -> tuple[str, ...]:
    """The tables and columns of role_grants.py and row_security.py that no
    longer exist (`_VANISHED`, `_timed` until `give_up_at`): `table`, or
    `table (column)` of a table that does; psycopg.Error if the lookup fails."""
    cursor = await _timed(conn, _VANISHED, give_up_at=give_up_at, leftover=leftover)
    vanished = [_LISTED[n - 1] for (n,) in await cursor.fetchall()]
    gone = {relation for relation, column in vanished if column is None}
    return tuple(
        relation if column is None else f"{relation} ({column})"
        for relation, column in vanished
        if column is None or relation not in gone
    )


async def _failure(
    conn: psycopg.AsyncConnection[Any],
    error: psycopg.Error,
    *,
    give_up_at: float,
    leftover: _Timeouts | None,
) -> _ProbeFailed:
    """What to log of the probe's statement failed with `error`: the tables
    and columns it checks that no longer exist (`_vanished`, until
    `give_up_at`), else the error, named."""
    failed = f"the health probe's statement failed: {named(error)}"
    try:
        vanished = await _vanished(conn, give_up_at=give_up_at, leftover=leftover)
    except psycopg.Error as checking:
        return _ProbeFailed(
            f"database: {failed}; which table or column it lacks is unknown: {named(checking)}",
            _FOUND_STATEMENT_FAILED,
        )
    if not vanished:
        return _ProbeFailed(
            f"database: {failed}; every table and column it checks exists (docs/database.md)",
            _FOUND_STATEMENT_FAILED,
        )
    return _ProbeFailed(_vanished_said(vanished, failed=named(error)), _FOUND_VANISHED)


def _vanished_said(vanished: tuple[str, ...], *, failed: str | None = None) -> str:
    """What the log says of the listed tables and columns that no longer
    exist (`_vanished`); `failed`: the probe's statement failed so, named."""
    exists, it, is_ = (
        ("exist", "them", "they are") if len(vanished) > 1 else ("exists", "it", "it is")
    )
    as_the_probe = "" if failed is None else f", as the health probe's statement does ({failed})"
    return (
        f"database: {', '.join(vanished)}, which the migrations made and grant the service's"
        f" roles, no longer {exists}: every call that needs {it} fails{as_the_probe}, until"
        f" {is_} restored as the migrations made {it}, grants and all (docs/database.md)"
    )


async def check_login(url: str) -> None:
    """Logs in once as `url`'s user, raising what the database answers if it
    refuses (a mistyped password: the pool said only that it was not filled
    in time, the reason left in its warnings), and RolesMissing if the user
    cannot assume a role of the service's that exists: a fresh cluster has
    none before the migrations create them. A start checks this before it
    migrates, so that one refused for its login leaves the schema as it was
    (helper-203)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await _assume_roles(conn, missing_ok=True)


async def check_reachable(url: str) -> None:
    """Logs in once as `url`'s user (the owner's, which assumes no role),
    raising what the database answers if it refuses."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True):
        pass


async def _check_roles(url: str, *, timeout: float) -> None:
    """Fail clearly, before the pool retries in vain, when the URL's user
    cannot assume both roles."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=max(1, round(timeout))
        )
    except psycopg.OperationalError:
        return  # unreachable: the pool reports it as it does any outage
    async with conn:
        await _assume_roles(conn, missing_ok=False)


async def _assume_roles(conn: psycopg.AsyncConnection[Any], *, missing_ok: bool) -> None:
    for role in (SYSTEM_ROLE, SERVICE_ROLE):
        try:
            await conn.execute("SELECT set_config('role', %s, false)", [role])
        except psycopg.errors.InvalidParameterValue as e:  # no such role
            if not missing_ok:
                raise _roles_missing(role, e) from e
        except psycopg.errors.InsufficientPrivilege as e:
            raise _roles_missing(role, e) from e


def _roles_missing(role: str, error: psycopg.Error) -> RolesMissing:
    return RolesMissing(
        f"the database user cannot work as {role}: {error.diag.message_primary}."
        f" Run the migrations as a superuser or the owner, and grant {SERVICE_ROLE}"
        f" and {SYSTEM_ROLE} to the service's user (docs/database.md)"
    )


def _lock_waited_on(error: psycopg.Error) -> str:
    """The lock a lock timeout waited on, as PostgreSQL's CONTEXT names it
    (`while locking tuple (0,3) in relation "chain_heads"`), else "". Only
    that line: a CONTEXT may quote a statement, which the log never says."""
    lines = (error.diag.context or "").splitlines()
    if lines and lines[0].startswith("while "):
        return f" ({lines[0]})"
    return ""
