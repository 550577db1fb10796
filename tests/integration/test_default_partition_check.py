"""events_default's check of the months (ADR 0047): creating a month ahead
does not scan events_default under the lock on events, and the check never
refuses a row that events_default must take."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, UnavailableError
from sealtrail_server.store import partitions
from sealtrail_server.store.partitions import OUTSIDE_MONTHS, create_ahead
from tests.conftest import ServerThread, database_of_its_own

# Years ahead of any month the database's own clock has created.
_YEAR = datetime.now(UTC).year + 3
_SKIPPED_SCAN = "is implied by existing constraints"


@pytest.fixture
def url(migrated_database_url: str) -> Iterator[str]:
    with database_of_its_own(migrated_database_url, "months") as own:
        yield own


def _create_ahead(url: str, now: datetime) -> tuple[int, list[str]]:
    """create_ahead(now) as the tables' owner: (months created, what
    PostgreSQL said of the default partition as it did)."""

    async def run() -> tuple[int, list[str]]:
        said: list[str] = []
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            conn.add_notice_handler(lambda notice: said.append(notice.message_primary or ""))
            await conn.execute("SET client_min_messages = debug1")
            created = await create_ahead(conn, now=now)
        return created, [line for line in said if "default partition" in line]

    return asyncio.run(run())


def _receive_at(sql: psycopg.Connection[Any], when: datetime, action: str = "doc.edit") -> str:
    """A row received at `when`, inserted as the owner; the partition it went to."""
    row = sql.execute(
        "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
        " outcome, actor_id, leaf_hash, record)"
        " VALUES ('t-months', 1, %s, %s, %s, %s, 1, 'success', 'u-1', '\\x00', '{}')"
        " RETURNING tableoid::regclass::text",
        [uuid.uuid4(), when, when, action],
    ).fetchone()
    assert row is not None
    return str(row[0])


def _check(sql: psycopg.Connection[Any]) -> str | None:
    row = sql.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'events_default'::regclass AND conname = %s",
        [OUTSIDE_MONTHS],
    ).fetchone()
    return None if row is None else str(row[0])


@pytest.mark.parametrize(
    ("now", "unscanned"),
    [
        (datetime(_YEAR, 6, 15, 12, tzinfo=UTC), 3),  # July to September
        (datetime(_YEAR, 6, 30, 23, tzinfo=UTC), 2),  # July starts within the day
    ],
)
def test_a_month_ahead_is_created_without_scanning_events_default(
    url: str, now: datetime, unscanned: int
) -> None:
    """June is this month at `now`: a row may be received in it already, and
    PostgreSQL scans events_default for it; not for a month more than a day
    ahead. The check goes with the creation's commit."""
    with psycopg.connect(url, autocommit=True) as sql:
        assert _receive_at(sql, datetime(2001, 1, 1, tzinfo=UTC)) == "events_default"
        created, said = _create_ahead(url, now)
        assert created == 4
        assert sum(_SKIPPED_SCAN in line for line in said) == unscanned, said
        assert _check(sql) is None


def test_a_month_that_could_not_be_created_takes_its_rows_in_events_default(url: str) -> None:
    """The check names the months ahead just before creating them: if the
    creation fails (events is busy), the check goes with it."""
    july = datetime(_YEAR, 7, 1, tzinfo=UTC)
    with (
        psycopg.connect(url, autocommit=True) as sql,
        psycopg.connect(url) as holder,  # in a transaction until closed
    ):
        holder.execute("LOCK TABLE ONLY events IN ACCESS SHARE MODE")
        assert _create_ahead(url, datetime(_YEAR, 6, 15, tzinfo=UTC))[0] == 0
        assert _check(sql) is None
        assert _receive_at(sql, july + timedelta(days=1)) == "events_default"


class _CreationFails(psycopg.AsyncConnection[Any]):
    """A connection whose statement creating the months fails as a statement
    timeout would end it."""

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        if "sealtrail_create_event_partitions" in str(query):
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
        return await super().execute(query, *args, **kwargs)


class _Pausing(psycopg.AsyncConnection[Any]):
    """A connection that stops at its first statement holding `pause_at`,
    before running it (or just after, with `after`), until `go_on` is set."""

    pause_at = ""
    after = False

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        pausing = self.pause_at and self.pause_at in str(query)
        if pausing and not self.after:
            await self._pause()
        done = await super().execute(query, *args, **kwargs)
        if pausing and self.after:
            await self._pause()
        return done

    async def _pause(self) -> None:
        self.pause_at = ""
        self.reached.set()
        await self.go_on.wait()

    def pause(self, at: str, *, after: bool = False) -> None:
        self.pause_at, self.after = at, after
        self.reached, self.go_on = asyncio.Event(), asyncio.Event()


_CREATING = "sealtrail_create_event_partitions"


@pytest.mark.parametrize(
    ("first", "second", "said_before"),
    [
        # The second holds events and events_default, creating the months,
        # when the first goes on to create them.
        ((_CREATING, False), (_CREATING, True), "events is busy"),
        # The first's creation drops the check the second has just added.
        ((_CREATING, False), ("VALIDATE CONSTRAINT", False), "holds rows of a month to create"),
    ],
)
def test_two_processes_creating_the_same_months_say_nothing(
    url: str,
    caplog: pytest.LogCaptureFixture,
    first: tuple[str, bool],
    second: tuple[str, bool],
    said_before: str,
) -> None:
    """A start (under the migrations' lock) and another process's upkeep
    (under the job's) both found the months missing: the one behind said at
    WARNING that events was busy and the months would be created at the
    next pass, or that events_default "holds rows of a month to create" (the
    other had dropped the check it had just added), though the other had
    just created them, a false alarm at every such start. Neither says
    anything now: the months are created once, by one of them."""
    now = datetime(_YEAR, 6, 15, tzinfo=UTC)

    async def run() -> list[int]:
        async with (
            await _Pausing.connect(url, autocommit=True) as one,
            await _Pausing.connect(url, autocommit=True) as other,
        ):
            one.pause(first[0], after=first[1])
            other.pause(second[0], after=second[1])
            ones = asyncio.create_task(create_ahead(one, now=now))
            await asyncio.wait_for(one.reached.wait(), 10)
            others = asyncio.create_task(create_ahead(other, now=now))
            with contextlib.suppress(TimeoutError):  # it may wait for the first
                await asyncio.wait_for(other.reached.wait(), 1)
            one.go_on.set()
            await asyncio.sleep(0.5)  # the first goes on, past any lock's wait (200 ms)
            other.go_on.set()
            return sorted([await ones, await others])

    with caplog.at_level(logging.DEBUG, logger=partitions.__name__):
        assert asyncio.run(run()) == [0, 4]
    # Only this module's words count: a server of another test module, still
    # running in this process, logs through its own loggers meanwhile.
    said = [r for r in caplog.records if r.name == partitions.__name__]
    assert said_before not in "\n".join(r.getMessage() for r in said)
    assert not [r for r in said if r.levelno >= logging.INFO], caplog.text
    with psycopg.connect(url, autocommit=True) as sql:
        assert _check(sql) is None


def test_a_creation_that_fails_otherwise_leaves_no_check_either(url: str) -> None:
    async def run() -> None:
        async with await _CreationFails.connect(url, autocommit=True) as conn:
            await create_ahead(conn, now=datetime(_YEAR, 6, 15, tzinfo=UTC))

    with pytest.raises(psycopg.errors.QueryCanceled):
        asyncio.run(run())
    with psycopg.connect(url, autocommit=True) as sql:
        assert _check(sql) is None


def test_a_row_already_in_a_month_ahead_is_moved_into_it_and_spares_the_others_a_scan(
    url: str,
) -> None:
    """A row received in a month not yet created (a clock that ran ahead)
    failed the check's validation, so every month was created with the scan,
    and that month not at all. The check now names the others, and that
    month is created over its row (ADR 0049)."""
    august = datetime(_YEAR, 8, 1, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as sql:
        assert _receive_at(sql, august + timedelta(days=2)) == "events_default"
        created, said = _create_ahead(url, datetime(_YEAR, 6, 15, tzinfo=UTC))
        assert created == 4
        assert sum(_SKIPPED_SCAN in line for line in said) == 2, said  # July, September
        assert _check(sql) is None
        assert _receive_at(sql, august + timedelta(days=3)) == f"events_{_YEAR}_08"


def _rows_of(sql: psycopg.Connection[Any], month: datetime) -> list[tuple[str, str]]:
    """Each row received in `month`: its partition, and the row as JSON."""
    return [
        (str(table), str(row))
        for table, row in sql.execute(
            "SELECT tableoid::regclass::text, to_jsonb(e)::text FROM events AS e"
            " WHERE received_at >= %s AND received_at < %s ORDER BY id",
            [month, month + timedelta(days=31)],
        ).fetchall()
    ]


def test_a_month_is_created_over_the_rows_events_default_took_of_it(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A process's clock ran months ahead: what it wrote went to
    events_default, and the month could never be created over it, so all of
    that month's events would have gone there too (never dropped, never
    pruned). The month is created with those rows moved in, unchanged; the
    rows of other months stay."""
    october = datetime(_YEAR, 10, 1, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as sql:
        early = [_receive_at(sql, october + timedelta(days=day, hours=3)) for day in (0, 9, 30)]
        later = _receive_at(sql, october + timedelta(days=70))  # December: not yet
        assert set(early) == {later} == {"events_default"}
        before = _rows_of(sql, october)
        with caplog.at_level(logging.WARNING, logger=partitions.__name__):
            assert _create_ahead(url, datetime(_YEAR, 8, 15, tzinfo=UTC))[0] == 4
        assert f"created events_{_YEAR}_10 over the 3 rows events_default took" in caplog.text

        after = _rows_of(sql, october)
        assert [table for table, _ in after] == [f"events_{_YEAR}_10"] * 3
        assert [row for _, row in after] == [row for _, row in before]
        assert [table for table, _ in _rows_of(sql, october + timedelta(days=61))] == [
            "events_default"
        ]
        assert _check(sql) is None


def test_a_month_over_more_rows_than_a_move_takes_stays_missing(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Moving them holds the lock on events, which every statement waits
    for: past MOVE_MAX_ROWS the month stays missing, said in the log."""
    monkeypatch.setattr(partitions, "MOVE_MAX_ROWS", 1)
    november = datetime(_YEAR, 11, 1, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as sql:
        for day in (1, 2):
            assert _receive_at(sql, november + timedelta(days=day)) == "events_default"
        with caplog.at_level(logging.WARNING, logger=partitions.__name__):
            assert _create_ahead(url, datetime(_YEAR, 9, 15, tzinfo=UTC))[0] == 3
        assert f"events_default holds 2 rows received in {_YEAR}-11" in caplog.text
        assert _receive_at(sql, november + timedelta(days=3)) == "events_default"


class _MoveFails(psycopg.AsyncConnection[Any]):
    """A connection whose move fails at `FAILS_AT`, once the move has taken
    its rows out of events_default, as a full disk would end it."""

    FAILS_AT = ""
    moving = False

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self.moving = self.moving or "sealtrail_moving" in str(query)
        if self.moving and self.FAILS_AT in str(query):
            raise psycopg.errors.DiskFull("could not extend file: No space left on device")
        return await super().execute(query, *args, **kwargs)


@pytest.mark.parametrize(
    "fails_at",
    ["sealtrail_create_event_partitions", "INSERT INTO events"],
    ids=["create", "insert"],
)
def test_a_move_that_fails_midway_leaves_the_rows_where_they_were(
    url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, fails_at: str
) -> None:
    """Rolled back whole: the month stays missing, its rows in events_default,
    said in the log; the other months are created, and nothing is raised (it
    would fail a server's start)."""
    monkeypatch.setattr(_MoveFails, "FAILS_AT", fails_at)
    september = datetime(_YEAR, 9, 1, tzinfo=UTC)

    async def run() -> int:
        async with await _MoveFails.connect(url, autocommit=True) as conn:
            return await create_ahead(conn, now=datetime(_YEAR, 7, 15, tzinfo=UTC))

    with psycopg.connect(url, autocommit=True) as sql:
        assert _receive_at(sql, september + timedelta(days=4)) == "events_default"
        before = _rows_of(sql, september)
        with caplog.at_level(logging.WARNING, logger=partitions.__name__):
            assert asyncio.run(run()) == 3
        assert f"events_{_YEAR}_09 not created over the rows" in caplog.text
        assert "No space left on device" in caplog.text
        assert _rows_of(sql, september) == before
        assert _receive_at(sql, september + timedelta(days=5)) == "events_default"


def test_this_month_is_not_created_over_what_its_retirement_left(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Records kept for good alone, of this month, are what retiring it left,
    by a process whose clock is a day or more ahead of this one's: taken back
    into a new month, the next pass would retire it again, and so on."""
    july = datetime(_YEAR, 7, 1, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as sql:
        assert _receive_at(sql, july + timedelta(days=3), "retention.purged") == "events_default"
        with caplog.at_level(logging.WARNING, logger=partitions.__name__):
            assert _create_ahead(url, datetime(_YEAR, 7, 15, tzinfo=UTC))[0] == 3
        assert f"holds only records kept for good of {_YEAR}-07" in caplog.text
        assert [table for table, _ in _rows_of(sql, july)] == ["events_default"]


def test_a_record_the_check_refuses_meanwhile_is_told_to_retry_not_that_it_is_invalid(
    url: str, sql: psycopg.Connection[Any]
) -> None:
    """A process whose clock runs ahead receives an event in a month another
    process is creating, whose check names it meanwhile: the event is fine,
    and lands once the month is created. It was refused as INVALID_ARGUMENT,
    which no client retries (helper-120)."""
    ahead = datetime(_YEAR, 5, 1, 12, tzinfo=UTC)
    server = ServerThread(url, clock=lambda: ahead)
    try:
        with psycopg.connect(url, autocommit=True) as owner:
            owner.execute(
                f"ALTER TABLE events_default ADD CONSTRAINT {OUTSIDE_MONTHS}"
                f" CHECK (received_at < '{_YEAR}-05-01' OR received_at >= '{_YEAR}-06-01')"
                " NOT VALID"
            )
            with AuditClient(
                server.target, token=server.token("t-ahead"), max_attempts=1
            ) as client:
                with pytest.raises(UnavailableError) as refused:
                    client.record(action="doc.edit", actor_id="u")
                assert refused.value.retry_after is not None
                owner.execute(f"ALTER TABLE events_default DROP CONSTRAINT {OUTSIDE_MONTHS}")
                # Landed, and the refused one took no seq.
                assert client.record(action="doc.edit", actor_id="u").event.seq == 1
    finally:
        server.close()


def test_a_move_the_database_refuses_leaves_no_value_in_the_log(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning quoted PostgreSQL's error whole, whose `DETAIL: Failing
    row contains (...)` is a moved event's whole row: its actor, addresses and
    record, in the server's log, where erasure never reaches. It names what
    refused the move, by its primary message and SQLSTATE."""
    secret = f"secret-actor-{uuid.uuid4()}"
    august = datetime(_YEAR, 8, 1, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as sql:
        row = sql.execute(
            "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
            " outcome, actor_id, leaf_hash, record)"
            " VALUES ('t-months', 1, %s, %s, %s, 'doc.edit', 1, 'success', %s, '\\x00', '{}')"
            " RETURNING tableoid::regclass::text",
            [uuid.uuid4(), august, august, secret],
        ).fetchone()
        assert row == ("events_default",)
        # Each month created from now on inherits it: the move into August is refused.
        sql.execute(
            f"ALTER TABLE events ADD CONSTRAINT refuse_the_move CHECK (actor_id <> '{secret}')"
            " NOT VALID"
        )
        with caplog.at_level(logging.WARNING, logger=partitions.__name__):
            _create_ahead(url, datetime(_YEAR, 6, 15, tzinfo=UTC))
        said = [r.getMessage() for r in caplog.records if "not created over" in r.getMessage()]
        assert said and [table for table, _ in _rows_of(sql, august)] == ["events_default"]
    assert not [line for line in said if secret in line or "Failing row" in line], said
    assert all("refuse_the_move" in line and "23514" in line for line in said), said
