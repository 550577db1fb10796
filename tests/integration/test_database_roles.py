"""Defence in depth in PostgreSQL (ADR 0013), tried directly in SQL: the roles
the service works as cannot change or remove the log, row-level security
shows a tenant-scoped connection one tenant's rows only, and the running
server never works as the tables' owner."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.sql import SQL, Identifier, Literal

from sealtrail import RpcFailedError, build_event
from sealtrail_server.store.database import Database, RolesMissing
from sealtrail_server.store.events import _GET_EVENT_ANYWHERE
from sealtrail_server.store.idempotency import _FIND_KEYS
from sealtrail_server.store.migrations import _LOCK_KEY as MIGRATIONS_LOCK
from sealtrail_server.store.migrations import (
    MIGRATIONS_DIR,
    UnsafeSchema,
    available_migrations,
    migrate_database,
)
from sealtrail_server.store.tree import _READ_NODES

from ..service_login import SERVICE_LOGIN, service_login_url

# Every table keyed by tenant, and so under row-level security.
TENANT_TABLES = [
    "events",
    "chain_heads",
    "tree_nodes",
    "checkpoints",
    "api_tokens",
    "tenant_settings",
    "retention_policies",
]
# As the service's login role itself, and as each role it assumes.
SERVICE_ROLES = [None, "sealtrail_service", "sealtrail_system"]


@pytest.fixture
def as_service(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection as the login role a deployed server uses."""
    with psycopg.connect(service_login_url(migrated_database_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def two_tenants(client_for: Any, tenant: str) -> tuple[str, str]:
    """Two tenants with a row in every tenant table."""
    other = f"{tenant}-other"
    for name in (tenant, other):
        client = client_for(name)
        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(4)])
        client.get_checkpoint(fresh=True)
        client.set_redaction_mode("hmac")
        client.set_retention_policy("1y")
    return tenant, other


def _assume(conn: psycopg.Connection[Any], role: str | None, tenant: str | None = None) -> None:
    if role is not None:
        conn.execute(SQL("SET ROLE {}").format(Identifier(role)))
    if tenant is not None:
        conn.execute("SELECT set_config('sealtrail.tenant', %s, false)", [tenant])


def test_every_table_keyed_by_tenant_has_row_level_security(sql: psycopg.Connection[Any]) -> None:
    rows = sql.execute(
        "SELECT c.relname, c.relrowsecurity, coalesce(array_agg(p.policyname)"
        " FILTER (WHERE p.policyname IS NOT NULL), '{}')"
        " FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid"
        " LEFT JOIN pg_policies AS p ON p.tablename = c.relname"
        " WHERE a.attname = 'tenant_id' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        " AND c.relnamespace = 'public'::regnamespace GROUP BY c.relname, c.relrowsecurity"
    ).fetchall()
    assert {name for name, _, _ in rows} >= {*TENANT_TABLES, "tenant_erasures"}
    for name, enabled, policies in rows:
        assert enabled and policies == ["tenant_isolation"], name
    # And each policy is the one that isolates: its name alone would let a
    # later `USING (true)` pass (helper-151).
    isolating = "(tenant_id = current_setting('sealtrail.tenant'::text, true))"
    for table, roles, command, using, check, permissive in sql.execute(
        "SELECT tablename, roles, cmd, qual, with_check, permissive FROM pg_policies"
        " WHERE schemaname = 'public'"
    ).fetchall():
        assert (roles, command, permissive) == (["sealtrail_service"], "ALL", "PERMISSIVE"), table
        assert using == isolating and check in (None, isolating), table
    # Partitions are reached through their table only: the roles hold nothing on them.
    partitions = sql.execute(
        "SELECT relname FROM pg_class WHERE relispartition AND relkind = 'r'"
        " AND (has_table_privilege('sealtrail_service', oid, 'SELECT,INSERT,UPDATE,DELETE')"
        " OR has_table_privilege('sealtrail_system', oid, 'SELECT,INSERT,UPDATE,DELETE'))"
    ).fetchall()
    assert partitions == []


def test_the_service_login_has_no_power_of_its_own(as_service: psycopg.Connection[Any]) -> None:
    row = as_service.execute(
        "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row == (False, False, False)


@pytest.mark.parametrize("role", SERVICE_ROLES)
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET action = 'forged.action' WHERE tenant_id = %(t)s",
        "DELETE FROM events WHERE tenant_id = %(t)s",
        "TRUNCATE events",
        "UPDATE tree_nodes SET hash = hash WHERE tenant_id = %(t)s",
        "DELETE FROM tree_nodes WHERE tenant_id = %(t)s",
        "DELETE FROM checkpoints WHERE tenant_id = %(t)s",
        "UPDATE checkpoints SET note = '' WHERE tenant_id = %(t)s",
        "DELETE FROM chain_heads WHERE tenant_id = %(t)s",
        "DELETE FROM api_tokens WHERE tenant_id = %(t)s",
        "ALTER TABLE events DISABLE TRIGGER events_no_update_delete",
        "DROP TABLE events",
    ],
)
def test_the_service_cannot_change_the_log(
    as_service: psycopg.Connection[Any], two_tenants: tuple[str, str], role: str, statement: str
) -> None:
    tenant, _ = two_tenants
    _assume(as_service, role, tenant)
    # Refused for want of privilege, before the append-only triggers are reached.
    with pytest.raises(
        psycopg.errors.InsufficientPrivilege, match=r"permission denied|must be owner"
    ):
        as_service.execute(statement, {"t": tenant})


def test_a_tenant_scoped_connection_sees_one_tenant(
    as_service: psycopg.Connection[Any], two_tenants: tuple[str, str]
) -> None:
    tenant, other = two_tenants
    _assume(as_service, "sealtrail_service", tenant)
    for table in TENANT_TABLES:
        count = SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(Identifier(table))
        assert as_service.execute(count, [tenant]).fetchone() != (0,), table
        assert as_service.execute(count, [other]).fetchone() == (0,), table
        # Even a query that forgets the tenant sees only this one.
        every = SQL("SELECT DISTINCT tenant_id FROM {}").format(Identifier(table))
        assert as_service.execute(every).fetchall() == [(tenant,)], table


def test_a_connection_with_no_tenant_sees_nothing(
    as_service: psycopg.Connection[Any], two_tenants: tuple[str, str]
) -> None:
    _assume(as_service, "sealtrail_service")
    for table in TENANT_TABLES:
        every = SQL("SELECT count(*) FROM {}").format(Identifier(table))
        assert as_service.execute(every).fetchone() == (0,), table


def test_a_tenant_scoped_connection_cannot_write_for_another(
    as_service: psycopg.Connection[Any], two_tenants: tuple[str, str]
) -> None:
    tenant, other = two_tenants
    _assume(as_service, "sealtrail_service", tenant)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        as_service.execute(
            "INSERT INTO api_tokens (tenant_id, token_id, secret_sha256, role)"
            " VALUES (%s, gen_random_uuid(), '\\x00', 'admin')",
            [other],
        )
    revoked = as_service.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE tenant_id = %s", [other]
    )
    assert revoked.rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        as_service.execute(
            "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
            " outcome, actor_id, leaf_hash, record)"
            " VALUES (%s, 1000, gen_random_uuid(), now(), now(), 'x.y', 0, 'success', 'u', '', '')",
            [tenant],
        )


def test_the_system_role_sees_every_tenant_and_still_cannot_rewrite(
    as_service: psycopg.Connection[Any], two_tenants: tuple[str, str]
) -> None:
    tenant, other = two_tenants
    _assume(as_service, "sealtrail_system")
    seen = as_service.execute(
        "SELECT DISTINCT tenant_id FROM events WHERE tenant_id = ANY(%s) ORDER BY 1",
        [[tenant, other]],
    ).fetchall()
    assert seen == sorted([(tenant,), (other,)])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        as_service.execute("UPDATE events SET record = record WHERE tenant_id = %s", [tenant])


def test_the_running_server_never_works_as_the_owner(
    server: Any, sql: psycopg.Connection[Any], client: Any
) -> None:
    client.record(build_event(action="doc.edit", actor_id="u"))
    users = sql.execute(
        "SELECT DISTINCT usename FROM pg_stat_activity"
        " WHERE application_name = 'sealtrail' AND datname = current_database()"
    ).fetchall()
    assert users == [(SERVICE_LOGIN,)]


def test_a_user_without_the_roles_is_refused_clearly(
    migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    stranger = "sealtrail_test_stranger"
    sql.execute(
        SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN"
            " CREATE ROLE {} LOGIN PASSWORD 'stranger'; END IF; END $$"
        ).format(Literal(stranger), Identifier(stranger))
    )
    url = psycopg.conninfo.make_conninfo(migrated_database_url, user=stranger, password="stranger")
    with pytest.raises(RolesMissing, match=r"sealtrail_system.*docs/database\.md"):
        asyncio.run(Database.open(url, min_size=1, max_size=1))


def test_a_head_only_grows_and_a_revocation_is_final(
    as_service: psycopg.Connection[Any], sql: psycopg.Connection[Any], two_tenants: tuple[str, str]
) -> None:
    """Two rows the roles may update, and no role (not even the owner) may move
    back: a head moved back would let a seq be written twice."""
    tenant, _ = two_tenants
    for change in ("tree_size = tree_size - 1", "root_hash = sha256(root_hash)"):
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="may only grow"):
            sql.execute(f"UPDATE chain_heads SET {change} WHERE tenant_id = %s", [tenant])
    [(token_id,)] = sql.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE tenant_id = %s AND revoked_at IS NULL"
        " RETURNING token_id",
        [tenant],
    ).fetchall()
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="final"):
        sql.execute("UPDATE api_tokens SET revoked_at = NULL WHERE token_id = %s", [token_id])
    _assume(as_service, "sealtrail_system")  # revocations are tenant-scoped work
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        as_service.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE tenant_id = %s", [tenant]
        )


@pytest.mark.parametrize(
    ("grantee", "named"),
    [
        # With the logins that are its members, which inherit it.
        ("sealtrail_service", r"^sealtrail_service (and \S+ )*may create .* schema public"),
        # On a new cluster whose `public` lets PUBLIC create (PostgreSQL 14 and
        # earlier), the first start found no role of the service to refuse,
        # passed, and every start after was refused (helper-125).
        ("PUBLIC", r"^PUBLIC and sealtrail_service and .* public"),
        # The login itself (SEALTRAIL_DATABASE_URL's user), which may create
        # before it assumes either role: it started and served (helper-203).
        (SERVICE_LOGIN, rf"^{SERVICE_LOGIN} may create .* schema public"),
    ],
)
def test_roles_that_may_create_in_the_schema_stop_the_start(
    migrated_database_url: str, sql: psycopg.Connection[Any], grantee: str, named: str
) -> None:
    service_login_url(migrated_database_url)  # the login exists
    sql.execute(SQL("GRANT CREATE ON SCHEMA public TO {}").format(SQL(grantee)))
    try:
        with pytest.raises(UnsafeSchema, match=named):
            asyncio.run(migrate_database(migrated_database_url))
    finally:
        sql.execute(SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(SQL(grantee)))
    asyncio.run(migrate_database(migrated_database_url))


def test_a_login_that_owns_the_database_is_told_how_it_may_create_and_what_lifts_it(
    migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """On PostgreSQL 15 and later, `public` belongs to pg_database_owner: a
    login that owns the database may create there through it, and the
    refusal's REVOKE ... FROM PUBLIC lifted nothing (helper-210)."""
    service_login_url(migrated_database_url)
    [(database, owner)] = sql.execute(
        "SELECT current_database(), pg_get_userbyid(datdba) FROM pg_database"
        " WHERE datname = current_database()"
    ).fetchall()
    give = SQL("ALTER DATABASE {} OWNER TO {}")
    sql.execute(give.format(Identifier(database), Identifier(SERVICE_LOGIN)))
    try:
        with pytest.raises(UnsafeSchema, match=r"owns the database.*FROM pg_database_owner"):
            asyncio.run(migrate_database(migrated_database_url))
    finally:
        sql.execute(give.format(Identifier(database), Identifier(owner)))
    asyncio.run(migrate_database(migrated_database_url))


def test_an_erasure_is_refused_while_a_tenant_table_has_another_owner(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A table with a tenant_id that another role owns is not the log's: an
    erasure deleting from it would run that role's triggers as the owner. It
    was left as it was, named only in the server's log, behind a receipt that
    said the tenant was erased (helper-85): the erasure is refused instead."""
    table = Identifier(f"foreign_{tenant.replace('-', '_')}")
    sql.execute(SQL("CREATE TABLE {} (tenant_id text)").format(table))
    try:
        sql.execute(SQL("ALTER TABLE {} OWNER TO sealtrail_service").format(table))
        sql.execute(SQL("INSERT INTO {} VALUES (%s)").format(table), [tenant])
        admin = client_for(tenant)
        admin.record(build_event(action="doc.edit", actor_id="u"))
        with pytest.raises(RpcFailedError) as refused:
            admin.erase_tenant(tenant)
        assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.reason == "FOREIGN_TENANT_TABLES"
        assert f"foreign_{tenant.replace('-', '_')}" in str(refused.value)
        assert admin.get_checkpoint(fresh=True).tree_size >= 1  # nothing erased
        assert sql.execute(SQL("SELECT count(*) FROM {}").format(table)).fetchone() == (1,)
    finally:
        sql.execute(SQL("DROP TABLE {}").format(table))


def test_an_erasure_removes_a_tenant_table_owned_by_a_member_of_the_log_owner(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A role that has the log owner's privileges (the owner URL's role
    changed to a member of the first, and a later migration run as it) could
    run a trigger as the owner anyway: its table is the log's, and erased
    (helper-87)."""
    name = f"member_{tenant.replace('-', '_')}"
    table, role = Identifier(name), Identifier(f"sealtrail_test_{tenant.replace('-', '_')}")
    [(owner,)] = sql.execute(
        "SELECT relowner::regrole::text FROM pg_class WHERE oid = 'events'::regclass"
    ).fetchall()
    sql.execute(SQL("CREATE ROLE {}").format(role))
    sql.execute(SQL("CREATE TABLE {} (tenant_id text)").format(table))
    try:
        sql.execute(SQL("GRANT {} TO {}").format(Identifier(owner), role))
        sql.execute(SQL("ALTER TABLE {} OWNER TO {}").format(table, role))
        sql.execute(SQL("INSERT INTO {} VALUES (%s)").format(table), [tenant])
        admin = client_for(tenant)
        admin.record(build_event(action="doc.edit", actor_id="u"))
        receipt = admin.erase_tenant(tenant)
        assert receipt.removed_rows[name] == 1
        assert sql.execute(SQL("SELECT count(*) FROM {}").format(table)).fetchone() == (0,)
    finally:
        sql.execute(SQL("DROP TABLE {}").format(table))
        sql.execute(SQL("DROP ROLE {}").format(role))


@pytest.fixture
def large_tenant(sql: psycopg.Connection[Any], tenant: str) -> str:
    """20,000 rows of a tenant, written straight into the tables (they are only
    probed for, never verified)."""
    sql.execute(
        "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
        " outcome, actor_id, leaf_hash, record)"
        " SELECT %s, g, gen_random_uuid(), now(), now(), 'doc.edit', 0, 'success', 'u',"
        " sha256(g::text::bytea), '{}' FROM generate_series(1, 20000) AS g",
        [tenant],
    )
    sql.execute(
        "INSERT INTO tree_nodes SELECT %s, 1, g, sha256(g::text::bytea)"
        " FROM generate_series(0, 9999) AS g",
        [tenant],
    )
    sql.execute("ANALYZE events, tree_nodes")
    return tenant


def _buffers_read(conn: psycopg.Connection[Any], query: str, params: Any) -> int:
    row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, params).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def test_row_level_security_leaves_key_probes_to_their_index(
    as_service: psycopg.Connection[Any], sql: psycopg.Connection[Any], large_tenant: str
) -> None:
    """The policy is a filter, never an index condition: beside a key probe's row
    comparison, a tenant equality made the probe walk the tenant from its first row."""
    last = sql.execute(
        "SELECT id::text FROM events WHERE tenant_id = %s AND seq = 19999", [large_tenant]
    ).fetchone()
    assert last is not None
    reads = {
        "GetEvent": (_GET_EVENT_ANYWHERE.as_string(sql), {"tenant": large_tenant, "id": last[0]}),
        "proof nodes": (
            _READ_NODES,
            {
                "tenants": [large_tenant],
                "leaf_t": "{1,1}",
                "seqs": "{19000,19999}",
                "with_record": "{t,f}",
                "node_t": "{1}",
                "levels": "{1}",
                "idxs": "{9990}",
            },
        ),
    }
    _assume(as_service, "sealtrail_service", large_tenant)
    for name, (query, params) in reads.items():
        as_owner = _buffers_read(sql, query, params)
        # A walk through 20,000 index entries reads some hundred pages.
        assert _buffers_read(as_service, query, params) <= as_owner + 5, name


def test_the_service_never_plans_a_scan_of_a_fresh_partition(server: Any) -> None:
    """Months ahead are empty partitions, with no floor on their estimated
    size: a plan cached while the current month was as empty scanned it whole
    on every key probe. The service's connections plan index probes instead."""

    async def generic_plan() -> str:
        async with server.database.system_connection() as conn:
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            query = _FIND_KEYS.replace("%s", "$1", 1).replace("%s", "$2", 1)
            await conn.execute("PREPARE probe AS " + query)
            try:
                cursor = await conn.execute("EXPLAIN EXECUTE probe('{t}', '{k}')")
                return "\n".join(row[0] for row in await cursor.fetchall())
            finally:
                await conn.execute("DEALLOCATE probe")
                await conn.execute("RESET plan_cache_mode")

    plan = server.run(generic_plan())
    assert "events_default" in plan  # every partition is in the plan
    assert "Seq Scan" not in plan, plan


def test_each_checkout_waits_for_locks_as_its_role_does(
    server: Any, migrated_database_url: str
) -> None:
    """The system role bounds its lock waits (SYSTEM_LOCK_TIMEOUT), a tenant's
    work its own (READ_LOCK_TIMEOUT: a read waited without limit for a table
    locked whole, helper-202), whatever came between on the connection; and
    the default a change's bounded wait goes back to after it (SET LOCAL ...
    TO DEFAULT) is still the connection's starting one, here one the URL sets."""
    url = make_conninfo(service_login_url(migrated_database_url), options="-c lock_timeout=1234")

    async def timeouts() -> list[tuple[str, str, str]]:
        db = await Database.open(
            url, min_size=1, max_size=1, system_lock_timeout=2, read_lock_timeout=3
        )
        seen = []
        try:
            for system in (False, True, False, True, True, False):
                checkout = db.system_connection() if system else db.connection("t1")
                async with checkout as conn, conn.transaction():
                    cursor = await conn.execute("SELECT current_setting('lock_timeout')")
                    [(timeout,)] = await cursor.fetchall()
                    await conn.execute("SET LOCAL lock_timeout TO DEFAULT")
                    cursor = await conn.execute("SELECT current_setting('lock_timeout')")
                    [(default,)] = await cursor.fetchall()
                    seen.append(("system" if system else "tenant", timeout, default))
        finally:
            await db.close()
        return seen

    for checkout, timeout, default in server.run(timeouts()):
        assert timeout == ("2s" if checkout == "system" else "3s"), checkout
        assert default == "1234ms", checkout


def test_a_start_waiting_for_another_sessions_migrations_says_so(
    migrated_database_url: str, sql: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A process frozen holding the migrations' lock held every start up
    without a word (helper-125); the wait is logged, naming the holder."""
    _a_start_waits_naming_the_holder(migrated_database_url, sql, caplog)


def _a_start_waits_naming_the_holder(
    migrated_database_url: str, sql: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """`sql` holds the migrations' lock while a start migrates: it waits,
    says so naming `sql`'s session, and migrates once the lock is let go."""
    sql.execute("SELECT pg_advisory_lock(%s)", [MIGRATIONS_LOCK])
    try:
        with caplog.at_level(logging.WARNING), ThreadPoolExecutor(1) as pool:
            started = pool.submit(asyncio.run, migrate_database(migrated_database_url))
            deadline = time.monotonic() + 30
            while "waiting for their lock" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not started.done()
            sql.execute("SELECT pg_advisory_unlock(%s)", [MIGRATIONS_LOCK])
            assert started.result(timeout=30) == []  # then migrates as usual
    finally:
        sql.execute("SELECT pg_advisory_unlock_all()")
    [said] = [r.getMessage() for r in caplog.records if "waiting for their lock" in r.getMessage()]
    assert f"pid {sql.info.backend_pid}" in said


def test_the_waiting_start_names_the_holder_in_its_own_database(
    migrated_database_url: str, sql: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The lock is each database's, but pg_locks shows the whole cluster's:
    with sessions of another database holding the same key (its own
    migrations, or here, a dozen sharing it), the line named one of them
    as the holder, a pid the operator then looked for in vain."""
    other = f"other_{time.monotonic_ns()}"
    with psycopg.connect(migrated_database_url, autocommit=True) as admin:
        admin.execute(SQL("CREATE DATABASE {}").format(Identifier(other)))
    holders: list[psycopg.Connection[Any]] = []
    try:
        for _ in range(12):
            holder = psycopg.connect(make_conninfo(migrated_database_url, dbname=other))
            holder.execute("SELECT pg_advisory_lock_shared(%s)", [MIGRATIONS_LOCK])
            holders.append(holder)
        _a_start_waits_naming_the_holder(migrated_database_url, sql, caplog)
    finally:
        for holder in holders:
            holder.close()
        with psycopg.connect(migrated_database_url, autocommit=True) as admin:
            admin.execute(SQL("DROP DATABASE {} WITH (FORCE)").format(Identifier(other)))


def test_two_databases_of_a_new_cluster_may_start_at_once() -> None:
    """Roles are the cluster's, the migrations' lock each database's: the
    second of two first starts at once failed creating a role the first had
    just created (helper-125). Here the first holds its roles uncommitted
    while the second migrates, as PostgreSQL would interleave them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # platformdirs: no XDG_RUNTIME_DIR
        import pgserver
    # Not under pytest's tmp_path: another pytest on the machine sets its root
    # (/tmp/pytest-of-root) back to 0700, and initdb, run as pgserver's own
    # user, then failed mid-way ("pg_control: Permission denied"), as the
    # session's database (tests/conftest.py) is kept out of it for.
    data_dir = Path(tempfile.mkdtemp(prefix="sealtrail-test-cluster-"))
    cluster = pgserver.get_server(data_dir, cleanup_mode="delete")
    try:
        base = cluster.get_uri()
        with psycopg.connect(base, autocommit=True) as admin:
            for name in ("first", "second"):
                admin.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
        roles = (MIGRATIONS_DIR / "0007_database_roles.sql").read_text()
        creating = roles[roles.index("DO $$") : roles.index("$$;") + 3]
        with psycopg.connect(make_conninfo(base, dbname="first")) as first:
            first.execute(creating)  # the roles, not yet committed
            with ThreadPoolExecutor(1) as pool:
                second = pool.submit(
                    asyncio.run, migrate_database(make_conninfo(base, dbname="second"))
                )
                time.sleep(1)  # the second waits on the roles' index meanwhile
                first.commit()
                assert len(second.result(timeout=60)) == len(available_migrations())
    finally:
        cluster.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)
