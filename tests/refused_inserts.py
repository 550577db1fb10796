"""The database refusing a write: a trigger that fails the inserts (or the
updates) of one tenant's rows, for as long as a test needs it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg
from psycopg import sql as q


@contextmanager
def inserts_refused(
    sql: psycopg.Connection[Any], table: str, tenant: str, *, action: str | None = None
) -> Iterator[None]:
    """Every insert of a row of `tenant` into `table` fails (RAISE EXCEPTION
    'refused by the test'), of its events of `action` only if given, until
    the block ends: the trigger and its function are dropped then."""
    condition = q.SQL("NEW.tenant_id = {tenant}").format(tenant=tenant)
    if action is not None:
        condition = q.SQL("{condition} AND NEW.action = {action}").format(
            condition=condition, action=action
        )
    with _refused(sql, "INSERT", table, tenant, condition):
        yield


@contextmanager
def updates_refused(
    sql: psycopg.Connection[Any], table: str, tenant: str, *, where: LiteralString
) -> Iterator[None]:
    """Every update of a row of `tenant` in `table` that makes `where` (SQL
    of the row's OLD and NEW values, static text) true fails, as an insert
    above, until the block ends."""
    condition = q.SQL("NEW.tenant_id = {tenant} AND ({where})").format(
        tenant=tenant, where=q.SQL(where)
    )
    with _refused(sql, "UPDATE", table, tenant, condition):
        yield


@contextmanager
def _refused(
    sql: psycopg.Connection[Any],
    write: LiteralString,
    table: str,
    tenant: str,
    condition: q.Composable,
) -> Iterator[None]:
    function = q.Identifier(f"refuse_{tenant}")
    sql.execute(
        q.SQL(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF {condition} THEN"
            " RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$;"
            " CREATE TRIGGER {function} BEFORE {write} ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION {function}()"
        ).format(
            function=function,
            condition=condition,
            write=q.SQL(write),
            table=q.Identifier(table),
        )
    )
    try:
        yield
    finally:
        sql.execute(q.SQL("DROP TRIGGER {} ON {}").format(function, q.Identifier(table)))
        sql.execute(q.SQL("DROP FUNCTION {}()").format(function))
