"""The health probe's list of the service's roles' grants (store/role_grants.py)
is what the migrations grant: a migration that grants either role something
the probe does not check, or a list that checks what no migration grants,
fails here. Read from the catalog of a database of its own, freshly migrated:
the grants as the migrations left them, REVOKEs and all."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from sealtrail_server.store.role_grants import ROLE_GRANTS, Grant, grants
from tests.conftest import database_of_its_own

# Every privilege either role holds in the schema the migrations fill: on a
# relation (table, view, sequence), on a column, on a function, on the schema
# itself. What role_grants.py cannot say (a schema's) is listed all the same,
# so a migration that grants one fails the comparison.
_GRANTED: str = """
SELECT r.rolname, c.relname::text, NULL::text, a.privilege_type
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE c.relnamespace = current_schema()::regnamespace AND r.rolname = ANY(%(roles)s)
UNION ALL
SELECT r.rolname, c.relname::text, att.attname::text, a.privilege_type
FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid
CROSS JOIN LATERAL aclexplode(att.attacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE c.relnamespace = current_schema()::regnamespace AND r.rolname = ANY(%(roles)s)
UNION ALL
SELECT r.rolname, 'function ' || p.oid::regprocedure::text, NULL, a.privilege_type
FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE p.pronamespace = current_schema()::regnamespace AND r.rolname = ANY(%(roles)s)
UNION ALL
SELECT r.rolname, 'schema ' || n.nspname, NULL, a.privilege_type
FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE n.oid = current_schema()::regnamespace AND r.rolname = ANY(%(roles)s)
"""


@pytest.fixture(scope="module")
def migrated_afresh(database_url: str) -> Iterator[str]:
    with database_of_its_own(database_url, "sealtrail_role_grants") as url:
        yield url


def granted(url: str) -> set[Grant]:
    """The grants the service's roles hold in the database at `url`."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(_GRANTED, {"roles": list(ROLE_GRANTS)}).fetchall()
    return {Grant(role, relation, column, privilege) for role, relation, column, privilege in rows}


def test_the_probe_checks_every_grant_the_migrations_make_the_service_roles(
    migrated_afresh: str,
) -> None:
    unchecked = granted(migrated_afresh) - set(grants())
    assert not sorted(unchecked), (
        "granted by a migration, not checked by the health probe: add it to store/role_grants.py"
    )


def test_the_probe_checks_no_grant_the_migrations_do_not_make(migrated_afresh: str) -> None:
    ungranted = set(grants()) - granted(migrated_afresh)
    assert not sorted(ungranted), (
        "checked by the health probe, granted by no migration (or revoked by a later"
        " one): remove it from store/role_grants.py"
    )


def test_each_grant_is_listed_once() -> None:
    listed = list(grants())
    assert len(listed) == len(set(listed))


def test_a_privilege_the_list_cannot_read_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"sealtrail_system on events: not a privilege: 'insert'"):
        list(grants({"sealtrail_system": {"events": ("insert",)}}))
