"""The login role test servers connect as: a member of the service's two
roles and nothing more, as in production (docs/database.md). The URL tests are
given (a superuser's) migrates, as an owner's would."""

from __future__ import annotations

import functools
import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

SERVICE_LOGIN = "sealtrail_test_app"
_SERVICE_PASSWORD = uuid.uuid4().hex


@functools.cache
def service_login_url(owner_url: str) -> str:
    """`owner_url` with the service's login role, made on first use."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        # Not under a statement timeout the test gave its database (40 ms in
        # test_statement_timeouts: a loaded machine's CREATE ROLE outlasted it).
        conn.execute("SET statement_timeout = 0")
        conn.execute(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN"
                " CREATE ROLE {role} LOGIN; END IF; END $$"
            ).format(name=sql.Literal(SERVICE_LOGIN), role=sql.Identifier(SERVICE_LOGIN))
        )
        conn.execute(
            sql.SQL("ALTER ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {}").format(
                sql.Identifier(SERVICE_LOGIN), sql.Literal(_SERVICE_PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("GRANT sealtrail_service, sealtrail_system TO {}").format(
                sql.Identifier(SERVICE_LOGIN)
            )
        )
    return make_conninfo(owner_url, user=SERVICE_LOGIN, password=_SERVICE_PASSWORD)
