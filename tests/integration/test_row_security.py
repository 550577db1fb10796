"""The health probe's list of the tables' row-level security
(store/row_security.py) is what the migrations leave: a migration that puts a
table under row-level security, forces it or creates a policy the probe does
not check, or a list that checks what no migration leaves, fails here. Read
from the catalog of a database of its own, freshly migrated."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from sealtrail_server.store.row_security import (
    ROW_SECURITY,
    Safeguard,
    TableSecurity,
    safeguards,
)
from tests.conftest import database_of_its_own

# Each table of the schema under row-level security (or holding a policy,
# which does nothing without it), whether it is forced, and each policy.
_SECURED: str = """
SELECT c.relname::text, NULL::text, c.relforcerowsecurity
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace
  AND (c.relrowsecurity OR c.relforcerowsecurity
       OR EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid))
UNION ALL
SELECT c.relname::text, p.polname::text, false
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
WHERE c.relnamespace = current_schema()::regnamespace
"""


@pytest.fixture(scope="module")
def migrated_afresh(database_url: str) -> Iterator[str]:
    with database_of_its_own(database_url, "sealtrail_row_security") as url:
        yield url


def secured(url: str) -> set[Safeguard]:
    """The row-level security of the tables in the database at `url`."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(_SECURED).fetchall()
    return {Safeguard(relation, policy, forced) for relation, policy, forced in rows}


def test_the_probe_checks_the_row_security_of_every_table_the_migrations_secure(
    migrated_afresh: str,
) -> None:
    unchecked = secured(migrated_afresh) - set(safeguards())
    assert not sorted(unchecked), (
        "row-level security a migration leaves, not checked by the health probe: add it"
        " to store/row_security.py"
    )


def test_the_probe_checks_no_row_security_the_migrations_do_not_leave(
    migrated_afresh: str,
) -> None:
    unmade = set(safeguards()) - secured(migrated_afresh)
    assert not sorted(unmade), (
        "checked by the health probe, left by no migration: remove it from store/row_security.py"
    )


def test_each_safeguard_is_listed_once() -> None:
    listed = list(safeguards())
    assert len(listed) == len(set(listed))


def test_a_forced_table_is_checked_as_forced() -> None:
    listed = list(safeguards({"events": TableSecurity(forced=True, policies=("p",))}))
    assert listed == [Safeguard("events", None, True), Safeguard("events", "p")]
    assert str(listed[0]) == "row-level security is disabled or no longer forced on events"
    assert ROW_SECURITY["events"].policies == ("tenant_isolation",)
