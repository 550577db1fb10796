"""The bounds of the months of events (ADR 0015) are UTC months, whatever
the TimeZone and DateStyle the database, or the owner's role, sets for its
sessions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from sealtrail_server.store.partitions import create_ahead
from tests.conftest import migrate_database

# Years ahead of any month the database's own clock has created.
_YEAR = datetime.now(UTC).year + 3


@pytest.fixture
def url(migrated_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of its own whose sessions write times as `SQL, DMY` in
    India's time: '01/12/2026 05:30:00 IST', which PostgreSQL's default
    abbreviations read back as Israel's time (UTC+2), 3.5 hours off. Its
    sessions here do not ask for ISO, as a server of this process made every
    connection do (PGDATESTYLE)."""
    monkeypatch.delenv("PGDATESTYLE", raising=False)
    name = f"bounds_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(migrated_database_url, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        for setting, value in (("DateStyle", "SQL, DMY"), ("TimeZone", "Asia/Kolkata")):
            admin.execute(
                psycopg.sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    psycopg.sql.Identifier(name),
                    psycopg.sql.Identifier(setting),
                    psycopg.sql.Literal(value),
                )
            )
    try:
        yield psycopg.conninfo.make_conninfo(migrated_database_url, dbname=name)
    finally:
        with psycopg.connect(migrated_database_url, autocommit=True) as admin:
            admin.execute(
                psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                    psycopg.sql.Identifier(name)
                )
            )


def _bounds(url: str) -> dict[str, tuple[datetime, datetime]]:
    """{name: (from, to)} of each monthly partition, read in UTC."""
    with psycopg.connect(url, autocommit=True) as sql:
        sql.execute("SET DateStyle = 'ISO'")
        sql.execute("SET TimeZone = 'UTC'")
        rows: list[Any] = sql.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i"
            " JOIN pg_class AS c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass AND c.relname <> 'events_default'"
        ).fetchall()
    bounds = {}
    for name, bound in rows:
        start, end = bound.split("'")[1::2]
        bounds[name] = (datetime.fromisoformat(start), datetime.fromisoformat(end))
    return bounds


def _month_of(name: str) -> tuple[datetime, datetime]:
    year, month = int(name[7:11]), int(name[12:14])
    after = (year + month // 12, month % 12 + 1)
    return datetime(year, month, 1, tzinfo=UTC), datetime(*after, 1, tzinfo=UTC)


def test_a_database_writing_times_in_another_style_gets_utc_months(url: str) -> None:
    migrate_database(url)  # a first start: the months from now on
    asyncio.run(_create_ahead(url, datetime(_YEAR, 12, 15, tzinfo=UTC)))  # a later pass

    bounds = _bounds(url)
    assert f"events_{_YEAR}_12" in bounds and f"events_{_YEAR + 1}_03" in bounds
    assert {name: _month_of(name) for name in bounds} == bounds


async def _create_ahead(url: str, now: datetime) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await create_ahead(conn, now=now)
