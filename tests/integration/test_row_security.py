"""The health probe's list of the tables' row-level security
(store/row_security.py) is what the migrations leave: a migration that puts a
table under row-level security, forces it or creates a policy the probe does
not check, or a list that checks what no migration leaves, fails here. Read
from the catalog of a database of its own, freshly migrated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql

from sealtrail_server.store.database import (
    _AS_LISTED,
    _PROBE,
    _UNKNOWN,
    _expressions_statement,
    _probe_statement,
    _under_timeouts,
)
from sealtrail_server.store.row_security import (
    ROW_SECURITY,
    TENANT_ISOLATION,
    Breach,
    Policy,
    Safeguard,
    TableSecurity,
    normal_form,
    safeguards,
)
from tests.conftest import database_of_its_own

# Each table of the schema under row-level security (or holding a policy,
# which does nothing without it), whether it is forced, and each policy:
# its command, permissive or not, roles and expressions (in the normal form
# the probe compares them in), as pg_policies says them.
_SECURED = sql.SQL("""
SELECT c.relname::text, NULL, c.relforcerowsecurity, NULL, NULL, NULL, NULL, NULL
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace
  AND (c.relrowsecurity OR c.relforcerowsecurity
       OR EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid))
UNION ALL
SELECT p.tablename::text, p.policyname::text, false, p.cmd, p.permissive = 'PERMISSIVE',
    p.roles::text[], {using}, {check}
FROM pg_policies p
WHERE p.schemaname = current_schema()
""").format(using=normal_form(sql.SQL("p.qual")), check=normal_form(sql.SQL("p.with_check")))
_Checked = tuple[str, str | None, bool, str | None, bool | None, Any, str | None, str | None]


@pytest.fixture(scope="module")
def migrated_afresh(database_url: str) -> Iterator[str]:
    with database_of_its_own(database_url, "sealtrail_row_security") as url:
        yield url


def secured(url: str) -> set[_Checked]:
    """The row-level security of the tables in the database at `url`."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(_SECURED).fetchall()
    return {(*row[:5], None if row[5] is None else tuple(sorted(row[5])), *row[6:]) for row in rows}


def listed(url: str) -> set[_Checked]:
    """The row-level security the probe checks, its expressions in their
    normal form (as the database at `url` makes it)."""
    with psycopg.connect(url) as conn:

        def normal(expression: str | None) -> str | None:
            row = conn.execute(
                sql.SQL("SELECT {}").format(normal_form(sql.Literal(expression)))
            ).fetchone()
            assert row is not None
            return row[0]  # type: ignore[no-any-return]

        return {
            (s.relation, None, s.forced, None, None, None, None, None)
            if (p := s.policy) is None
            else (
                s.relation,
                p.name,
                False,
                p.command,
                p.permissive,
                tuple(sorted(p.roles)),
                normal(p.using),
                normal(p.check),
            )
            for s in safeguards()
        }


def test_the_probe_checks_the_row_security_of_every_table_the_migrations_secure(
    migrated_afresh: str,
) -> None:
    unchecked = secured(migrated_afresh) - listed(migrated_afresh)
    assert not sorted(unchecked, key=repr), (
        "row-level security a migration leaves, not checked as the health probe checks it:"
        " make store/row_security.py say it"
    )


def test_the_probe_checks_no_row_security_the_migrations_do_not_leave(
    migrated_afresh: str,
) -> None:
    unmade = listed(migrated_afresh) - secured(migrated_afresh)
    assert not sorted(unmade, key=repr), (
        "checked by the health probe, left by no migration: remove it from store/row_security.py"
    )


def test_each_safeguard_is_listed_once() -> None:
    listed = list(safeguards())
    assert len(listed) == len(set(listed))


def test_a_forced_table_is_checked_as_forced() -> None:
    p = Policy("p", "ALL", True, ("sealtrail_service",), "true", None)
    listed = list(safeguards({"events": TableSecurity(forced=True, policies=(p,))}))
    assert listed == [Safeguard("events", None, True, ("p",)), Safeguard("events", p)]
    assert str(Breach(listed[0], "disabled")) == (
        "row-level security is disabled or no longer forced on events"
    )
    assert ROW_SECURITY["events"].policies == (TENANT_ISOLATION,)


@pytest.mark.parametrize(
    ("expression", "same"),
    [
        ("(tenant_id = current_setting('sealtrail.tenant'::text, true))", True),
        # PostgreSQL's pretty printing leaves the outer parentheses off.
        ("tenant_id = current_setting('sealtrail.tenant'::text, true)", True),
        ("(tenant_id = current_setting(\n  'sealtrail.tenant'::text, true ))", True),
        ("true", False),
        ("(tenant_id = current_setting('sealtrail. tenant'::text, true))", False),
        ("(tenant_id <> current_setting('sealtrail.tenant'::text, true))", False),
        ("(\"tenant id\" = current_setting('sealtrail.tenant'::text, true))", False),
        ("((tenant_id = current_setting('sealtrail.tenant'::text, true)) OR true)", False),
        (None, False),
    ],
)
def test_the_normal_form_leaves_out_layout_only(
    migrated_afresh: str, expression: str | None, same: bool
) -> None:
    """Expressions are compared without the layout PostgreSQL's printing may
    vary in (spacing, the outer parentheses pretty printing leaves off), and
    with every token: a space in a quoted literal or identifier counts."""
    with psycopg.connect(migrated_afresh) as conn:
        row = conn.execute(
            sql.SQL("SELECT {} IS NOT DISTINCT FROM {}").format(
                normal_form(sql.Literal(expression)),
                normal_form(sql.Literal(TENANT_ISOLATION.using)),
            )
        ).fetchone()
    assert row == (same,)


# What the probe checks, in the order of its answer's positions (from 1).
_SAFEGUARDS = tuple(safeguards())


def probed(
    conn: psycopg.Connection[Any], known: frozenset[str], lock_timeout: str = "10s"
) -> list[tuple[int, str, str | None]]:
    """What the probe's statements find, knowing the trees `known`: the
    probe's own, then the expressions of the policies it says are not known
    (`_UNKNOWN`) printed and compared (`_expressions_statement`), as
    store/database.py's `_probe` asks them."""
    row = conn.execute(_probe_statement(known)).fetchone()
    assert row is not None and row[:2] == (True, []), row
    found = [(int(n), what, text) for n, what, text in row[2] if what != _UNKNOWN]
    unknown = dict.fromkeys(
        _SAFEGUARDS[int(n) - 1].relation for n, what, _ in row[2] if what == _UNKNOWN
    )
    if unknown:
        statement = _expressions_statement(list(unknown), known)
        cursor = conn.execute(_under_timeouts(statement, statements="10s", locks=lock_timeout))
        cursor.nextset()
        cursor.nextset()
        found.extend((int(n), what, text) for n, what, text in cursor.fetchall())
    return found


@pytest.mark.parametrize(
    ("rewrite", "found"),
    [
        ("ALTER POLICY tenant_isolation ON events USING (true)", [("using", "true")]),
        ("ALTER POLICY tenant_isolation ON events TO PUBLIC", [("roles", "public")]),
        ("CREATE POLICY open ON events USING (true)", [("unlisted", "open")]),
    ],
)
def test_the_probe_finds_a_policy_rewritten_whether_or_not_it_knows_its_tree(
    migrated_afresh: str, rewrite: LiteralString, found: list[tuple[str, str]]
) -> None:
    """The probe prints a policy's expressions only until it has found their
    trees as listed; knowing them, it still finds a rewrite, and so does a
    server's first probe, which knows none."""
    with psycopg.connect(migrated_afresh) as conn:
        first = probed(conn, frozenset())
        conn.rollback()
        assert {what for _, what, _ in first} == {_AS_LISTED}, first
        known = frozenset(tree for _, _, tree in first if tree is not None)
        assert len(known) == 2 * len(ROW_SECURITY)
        again = conn.execute(_probe_statement(known)).fetchone()
        conn.rollback()
        assert again is not None and again[:3] == (True, [], [])  # [3]: the database's clock

        conn.execute(rewrite)
        for knowing in (frozenset(), known):
            differs = [
                (what, text) for _, what, text in probed(conn, knowing) if what != _AS_LISTED
            ]
            assert differs == found
        conn.rollback()


def test_the_probe_waits_for_no_lock_on_a_tenant_table(migrated_afresh: str) -> None:
    """pg_get_expr locks the policy's table (PostgreSQL 16): printing every
    expression at every probe, the probe waited behind a VACUUM FULL or ALTER
    TABLE of any tenant's table, past its timeout (NOT_SERVING); and so did a
    server's first, which knew no tree, with a table locked at its start. The
    probe's statement prints none: knowing the trees or not, it answers
    beside the lock, grants, row security and clock; what prints them waits
    on the lock at most its lock timeout (SET LOCAL), then fails
    (LockNotAvailable), and the connection's own lock timeout is as before."""
    with psycopg.connect(migrated_afresh, autocommit=True) as conn:
        first = probed(conn, frozenset())
        knowing = _probe_statement(frozenset(tree for _, _, tree in first if tree is not None))
        with psycopg.connect(migrated_afresh) as holder:
            holder.execute("LOCK TABLE alert_known_ips IN ACCESS EXCLUSIVE MODE")
            conn.execute("SET statement_timeout = '10s'")
            own = conn.execute("SHOW lock_timeout").fetchone()
            answer = conn.execute(knowing).fetchone()
            assert answer is not None and answer[:3] == (True, [], [])
            fresh = conn.execute(_PROBE).fetchone()
            assert fresh is not None and fresh[:2] == (True, []) and fresh[3] > 0
            assert {what for _, what, _ in fresh[2]} == {_UNKNOWN}
            assert len(fresh[2]) == len(ROW_SECURITY)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                statement = _expressions_statement(["alert_known_ips"], frozenset())
                conn.execute(_under_timeouts(statement, statements="10s", locks="50ms"))
            assert conn.execute("SHOW lock_timeout").fetchone() == own
            holder.rollback()
