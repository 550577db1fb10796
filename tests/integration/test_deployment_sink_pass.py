"""The deployment-sink pass (ADR 0070) over many tenants: an operator's
command waits for one tenant's step of it at most, and one tenant's failure
leaves the others to go on. A database of each test's own, and a server whose passes
only the tests run: its pass at start finds no definition, so no new tenant's
commit brings one either (`DeploymentSinkJob.wake`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import Result

from sealtrail import AuditClient, build_event, build_filter
from sealtrail_server import deployment_sink_job
from sealtrail_server.api import managed_sinks
from sealtrail_server.deployment_sink_job import DeploymentSinkJob
from sealtrail_server.domain.errors import Unavailable
from sealtrail_server.domain.event import EventDraft, validate_event
from sealtrail_server.domain.sinks import SinkDefinition
from sealtrail_server.sealing_setup import load_secret_box
from sealtrail_server.store import changes as changes_module
from sealtrail_server.store import deployment_sinks as definitions
from sealtrail_server.store.appended import Appended
from sealtrail_server.store.appender import Appender
from tests.conftest import ServerThread, database_of_its_own, deployment_operator
from tests.lock_waits import SUBJECT_LOCK, count_now, until_blocked, until_waiting
from tests.tenant_rows import rows_of

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    with database_of_its_own(database_url, "deployment_sink_pass") as url:
        yield url


@pytest.fixture
def operator(own_database: str) -> Iterator[Callable[..., Result]]:
    """`sealtrail-server ARGS` on the deployment's database; every
    deployment sink a test made is deleted after it."""
    with deployment_operator(own_database) as run:
        yield run


@pytest.fixture
def server(own_database: str, operator: Callable[..., Result]) -> Iterator[ServerThread]:
    """Started after `operator` (its cleanup runs after the server stops)."""
    running = ServerThread(own_database, deployment_sink_interval=3600)
    try:
        yield running
    finally:
        running.close()


def _job(server: ServerThread) -> DeploymentSinkJob:
    assert server.service.deployment_sinks is not None
    return server.service.deployment_sinks


def _tenants_with_logs(server: ServerThread, count: int) -> list[str]:
    tenants = sorted(f"t-{uuid.uuid4().hex[:12]}" for _ in range(count))
    for tenant_id in tenants:
        with AuditClient(server.target, token=server.token(tenant_id)) as admin:
            admin.record(build_event(action="doc.edit", actor_id="u-1"))
    return tenants


def _create(operator: Callable[..., Result], name: str, tmp_path: Path) -> Result:
    """`sealtrail-server sink create NAME`, a webhook to a closed port."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    return operator(
        "sink", "create", name, "--kind", "webhook", "--url", "http://127.0.0.1:9/soc",
        "--secret", f"@{secret}",
    )  # fmt: skip


def _definition(operator: Callable[..., Result], name: str, tmp_path: Path) -> None:
    """A deployment sink made while no tenant has a log: its instances are
    all the pass's to make."""
    made = _create(operator, name, tmp_path)
    assert made.exit_code == 0, made.output
    assert "made in 0 tenants" in made.stdout


def _created_but_for(
    operator: Callable[..., Result],
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failed: str,
) -> None:
    """`sink create NAME` (`_create`), its making of `failed`'s instance
    refused (that tenant's appender overloaded, say): the command succeeds,
    and says the instance is not made yet. Passes make it as they did."""
    real = managed_sinks.ManagedSinks._materialise
    command = threading.get_ident()

    async def refused_for_one(self: Any, deployment: Any, tenant_id: str, *, at_size: bool) -> bool:
        if threading.get_ident() == command and tenant_id == failed:
            raise Unavailable("the server is overloaded; retry")
        return await real(self, deployment, tenant_id, at_size=at_size)

    monkeypatch.setattr(managed_sinks.ManagedSinks, "_materialise", refused_for_one)
    made = _create(operator, name, tmp_path)
    monkeypatch.setattr(managed_sinks.ManagedSinks, "_materialise", real)
    assert made.exit_code == 0, made.output
    assert f"{failed}: not yet" in made.stderr


def _started_at(server: ServerThread, tenant_id: str) -> tuple[int, int]:
    """The first seq the tenant's one managed sink was made to send (its
    `sink.created` record's from_seq), and the sink's cursor."""
    with AuditClient(server.target, token=server.token(tenant_id)) as admin:
        [created] = admin.query(build_filter(actions="sink.created"))
        [sink] = [sink for sink in admin.list_sinks() if sink.managed]
    return created.details["from_seq"], sink.state.cursor_seq


def _instances(own_database: str, name: str) -> set[str]:
    with psycopg.connect(own_database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT s.tenant_id FROM sinks AS s JOIN deployment_sinks AS d"
            " ON d.id = s.deployment_sink_id WHERE d.name = %s",
            [name],
        ).fetchall()
    return {tenant_id for (tenant_id,) in rows}


def _wait_for_a_lock_waiter(own_database: str) -> None:
    """Until a session of the database waits for an advisory lock (the
    command, for the definition's), 30 s at most."""
    deadline = time.monotonic() + 30
    with psycopg.connect(own_database, autocommit=True) as conn:
        while conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone() == (0,):
            if time.monotonic() > deadline:
                return  # the pass goes on; the test's assertions tell what happened
            time.sleep(0.02)


def test_an_operators_update_waits_for_one_tenants_step_of_a_pass_not_the_whole_pass(
    server: ServerThread,
    operator: Callable[..., Result],
    own_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass makes four tenants' instances; `sink update` comes while it
    makes the first. The pass held the definition's lock for all four, and
    the command waited for the whole pass (helper-189's suspicion, helper-193):
    it now gets the lock as that tenant's step ends, and finishes the rest."""
    _definition(operator, "soc", tmp_path)
    tenants = _tenants_with_logs(server, 4)
    real = managed_sinks.ManagedSinks._materialise
    by_pass: list[str] = []

    async def first_step_meets_the_command(
        self: Any, deployment: Any, tenant_id: str, *, at_size: bool
    ) -> bool:
        if threading.get_ident() == server._thread.ident:
            by_pass.append(tenant_id)
            if len(by_pass) == 1:  # the command comes meanwhile, and waits
                await asyncio.to_thread(_wait_for_a_lock_waiter, own_database)
        return await real(self, deployment, tenant_id, at_size=at_size)

    monkeypatch.setattr(managed_sinks.ManagedSinks, "_materialise", first_step_meets_the_command)
    passing = asyncio.run_coroutine_threadsafe(_job(server).run_pass(), server.loop)
    deadline = time.monotonic() + 30
    while not by_pass:
        assert time.monotonic() < deadline, "the pass made no instance"
        time.sleep(0.02)

    updated = operator("sink", "update", "soc", "--action", "doc.*")
    passing.result(60)

    assert updated.exit_code == 0, updated.output
    assert by_pass == tenants[:1]
    assert "soc: made in 3 tenants, changed in 1, removed from 0" in updated.stdout
    assert _instances(own_database, "soc") == set(tenants)


def test_a_pass_that_fails_on_one_tenant_goes_on_with_the_others(
    server: ServerThread,
    operator: Callable[..., Result],
    own_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A statement of the first tenant's step fails (its connection lost, a
    statement timeout): that tenant is left for the next pass, which makes
    it; the others' instances are made in this one (helper-189's suspicion,
    helper-193: the error ended the pass)."""
    _definition(operator, "soc-failing", tmp_path)
    tenants = _tenants_with_logs(server, 3)
    real = managed_sinks.ManagedSinks._materialise

    async def failing_on_the_first(
        self: Any, deployment: Any, tenant_id: str, *, at_size: bool
    ) -> bool:
        if tenant_id == tenants[0]:
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
        return await real(self, deployment, tenant_id, at_size=at_size)

    monkeypatch.setattr(managed_sinks.ManagedSinks, "_materialise", failing_on_the_first)
    with caplog.at_level(logging.WARNING, logger=managed_sinks.log.name):
        server.run(_job(server).run_pass())
    records = caplog.records

    assert _instances(own_database, "soc-failing") == set(tenants[1:])
    [left] = [r for r in records if r.levelno == logging.WARNING and tenants[0] in r.getMessage()]
    assert "left for a later pass: QueryCanceled" in left.getMessage()
    monkeypatch.setattr(managed_sinks.ManagedSinks, "_materialise", real)
    server.run(_job(server).run_pass())
    assert _instances(own_database, "soc-failing") == set(tenants)


def test_a_tenant_the_database_refused_is_said_by_the_errors_primary_message(
    server: ServerThread,
    operator: Callable[..., Result],
    own_database: str,
    tmp_path: Path,
) -> None:
    """The database refuses one tenant's instance (here a check constraint of
    the deployment's own): the operator's `not yet (...)` and the log's line
    said the error as psycopg renders it, with no SQLSTATE, where every other
    log line and answer says a database error by its primary message and
    SQLSTATE (store/db_errors.named), and would have quoted any DETAIL
    (`Failing row contains (...)`, which row-level security keeps out of
    this one's)."""
    refused, reached = _tenants_with_logs(server, 2)
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute(
            f"ALTER TABLE sinks ADD CONSTRAINT not_this_tenant CHECK (tenant_id <> '{refused}')"
            " NOT VALID"
        )
    made = _create(operator, "soc-refused", tmp_path)
    assert made.exit_code == 0, made.output
    assert "soc-refused: made in 1 tenant," in made.stdout
    named = 'CheckViolation: new row for relation "sinks" violates check constraint'
    named += ' "not_this_tenant" (SQLSTATE 23514)'
    assert f"{refused}: not yet ({named}); a server's pass" in made.stderr, made.stderr
    # The command's log, on its stderr, says it alike.
    assert f"tenant {refused} left for a later pass: {named}\n" in made.stderr, made.stderr
    assert "Failing row" not in made.stderr and "DETAIL" not in made.stderr
    assert _instances(own_database, "soc-refused") == {reached}


def test_a_tenant_a_from_now_create_failed_on_starts_where_its_log_stood_at_creation(
    server: ServerThread,
    operator: Callable[..., Result],
    own_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`sink create --from now` cannot make one tenant's instance (its
    appender refusing, say); the next pass does. It started at the tenant's
    first event, sending the SOC the whole history `--from now` keeps from it
    (helper-189's suspicion, helper-193); it now starts with the first event
    the tenant recorded after the definition was created."""
    reached, failed = _tenants_with_logs(server, 2)
    for tenant_id in (reached, failed):
        with AuditClient(server.target, token=server.token(tenant_id)) as admin:
            admin.record_batch([build_event(action="doc.edit", actor_id="u-1") for _ in range(2)])
    _created_but_for(operator, "soc-now", tmp_path, monkeypatch, failed)
    with AuditClient(server.target, token=server.token(failed)) as admin:
        admin.record(build_event(action="doc.after", actor_id="u-1"))

    server.run(_job(server).run_pass())

    for tenant_id, first_sent in ((reached, 4), (failed, 4)):
        assert _started_at(server, tenant_id) == (first_sent, first_sent - 1), tenant_id


def test_an_erasure_removes_where_the_tenants_instance_was_to_start(
    server: ServerThread,
    operator: Callable[..., Result],
    own_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where an instance `sink create` did not make is to start is the
    tenant's row (migration 0046): its erasure removes it with every other
    (test_retention's erasure test cannot hold one: it needs a definition of
    the whole deployment, on a database of its own)."""
    [erased] = _tenants_with_logs(server, 1)
    _created_but_for(operator, "soc-erased", tmp_path, monkeypatch, erased)
    with psycopg.connect(own_database, autocommit=True) as sql:
        assert rows_of(sql, erased)["deployment_sink_starts"] == 1
        with AuditClient(server.target, token=server.token(erased)) as admin:
            admin.erase_tenant(erased)
        left = rows_of(sql, erased)
    assert not any(left.values()), left


def test_a_pass_cancelled_midway_through_a_step_finishes_it(
    server: ServerThread,
    operator: Callable[..., Result],
    own_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server stopping cancels its pass. Landing between a step's record
    (`sink.created`, committed) and its change, the cancellation left the
    tenant's log naming an instance never made, and the next pass made it
    and recorded it again (helper-200). The step is finished, as a token's
    change is when its call is cancelled."""
    _definition(operator, "soc-stopped", tmp_path)
    [tenant] = _tenants_with_logs(server, 1)
    real = managed_sinks.store.insert_sink
    reached, go_on = threading.Event(), threading.Event()

    async def held(*args: Any, **kwargs: Any) -> None:
        reached.set()  # the record is committed; the change is to come
        await asyncio.to_thread(go_on.wait, 30)
        await real(*args, **kwargs)

    monkeypatch.setattr(managed_sinks.store, "insert_sink", held)
    passing = asyncio.run_coroutine_threadsafe(_job(server).run_pass(), server.loop)
    assert reached.wait(30), "the step did not reach its change"
    server.loop.call_soon_threadsafe(passing.cancel)
    with contextlib.suppress(concurrent.futures.CancelledError):
        passing.result(30)
    go_on.set()

    deadline = time.monotonic() + 30
    while _instances(own_database, "soc-stopped") != {tenant}:
        assert time.monotonic() < deadline, "the cancelled step's instance was not made"
        time.sleep(0.02)
    monkeypatch.setattr(managed_sinks.store, "insert_sink", real)
    server.run(_job(server).run_pass())
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        created = list(admin.query(build_filter(actions="sink.created")))
    assert len(created) == 1


def test_a_pass_frozen_midway_through_a_step_lets_the_operator_change_the_definition(
    server: ServerThread,
    operator: Callable[..., Result],
    own_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass holds the definition's lock, on a connection of its own, in a
    transaction around each tenant's step. A process frozen midway through a
    step (SIGSTOP, `docker pause`, a debugger) held it for as long as it
    stayed frozen: the operator's `sink update`, from any host, waited for
    the whole freeze (60 s at most, then refused). That transaction's session
    now ends itself once idle in it; the command goes on."""
    frozen_seconds = 12
    monkeypatch.setattr(deployment_sink_job, "IDLE_IN_STEP_SECONDS", 1.0, raising=False)
    monkeypatch.setattr(changes_module, "IDLE_IN_CHANGE_SECONDS", 1.0)
    _definition(operator, "soc-frozen", tmp_path)
    [tenant] = _tenants_with_logs(server, 1)
    with psycopg.connect(own_database, autocommit=True) as sql:
        (definition_id,) = sql.execute(
            "SELECT id FROM deployment_sinks WHERE name = 'soc-frozen'"
        ).fetchone()  # type: ignore[misc]
        subject = definitions.definition_subject(str(definition_id))
        with sql.transaction():
            # The step's change waits for its tenant's lock of the definition:
            # frozen there, the pass's transaction sits idle holding the
            # definition's lock, once this lets go.
            sql.execute(SUBJECT_LOCK, [f"{tenant}/{subject}"])
            passing = asyncio.run_coroutine_threadsafe(_job(server).run_pass(), server.loop)
            until_waiting(sql, passing)  # type: ignore[arg-type]
            server.loop.call_soon_threadsafe(time.sleep, frozen_seconds)
    started = time.monotonic()
    updated = operator("sink", "update", "soc-frozen", "--action", "doc.*")
    assert updated.exit_code == 0, updated.output
    assert time.monotonic() - started < frozen_seconds
    with contextlib.suppress(Exception):
        passing.result(60)  # woken, its sessions ended: the step failed, or not
    server.run(_job(server).run_pass())
    assert _instances(own_database, "soc-frozen") == {tenant}


@pytest.mark.parametrize("skew_minutes", [-2, 2])
def test_a_tenant_a_from_now_create_failed_on_starts_where_its_log_stood_whatever_the_clocks(
    server: ServerThread,
    operator: Callable[..., Result],
    own_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    skew_minutes: int,
) -> None:
    """The pass started such a tenant's instance with the first event its log
    received at or after the definition's creation: the events' receipt by
    the clock of the server that recorded them, the creation by the
    database's. A server 2 minutes behind recorded events after the creation
    as received before it, which the sink never got; one 2 minutes ahead,
    events before it as received after, history `--from now` keeps from the
    sink. It now starts where the tenant's log stood at the creation, as the
    database saw it, whatever any clock says."""
    skewed = ServerThread(
        own_database,
        deployment_sink_interval=3600,
        clock=lambda: datetime.now(UTC) + timedelta(minutes=skew_minutes),
    )
    try:
        [failed] = _tenants_with_logs(server, 1)
        with AuditClient(skewed.target, token=skewed.token(failed)) as admin:
            admin.record_batch([build_event(action="doc.before", actor_id="u-1") for _ in range(2)])
        _created_but_for(operator, "soc-skewed", tmp_path, monkeypatch, failed)
        with AuditClient(skewed.target, token=skewed.token(failed)) as admin:
            admin.record(build_event(action="doc.after", actor_id="u-1"))  # seq 4
        server.run(_job(server).run_pass())
    finally:
        skewed.close()
    assert _started_at(server, failed) == (4, 3)


def test_a_definition_created_mid_erasure_keeps_no_start_of_the_erased_tenant(
    server: ServerThread,
    operator: Callable[..., Result],
    own_database: str,
    tmp_path: Path,
) -> None:
    """`sink create --from now` while an erasure is past its DELETEs but not
    committed (a large tenant's takes a while): the definition's statement
    read every tenant's head from a snapshot that still saw the erased one's,
    and kept where its instance was to start, a row of the tenant the
    erasure then left behind (nothing read it: the pass leaves erased tenants
    out). The definition now reads the heads locked against their deletion:
    it waits for the erasure, and skips the head it removed. The erasure is
    held before its receipt by one of the test's own, uncommitted, until the
    command is seen waiting for it, or done."""
    erased, kept = _tenants_with_logs(server, 2)
    with (
        psycopg.connect(own_database, autocommit=True) as sql,
        psycopg.connect(own_database, autocommit=True) as receipt,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        with contextlib.ExitStack() as held:
            held.enter_context(receipt.transaction(force_rollback=True))
            receipt.execute(
                "INSERT INTO tenant_erasures (tenant_id, erased_at, erased_by, final_tree_size,"
                " final_root_hash, final_checkpoint, removed_rows)"
                " VALUES (%s, now(), 'test', 0, sha256(''), '', '{}')",
                [erased],
            )
            with AuditClient(server.target, token=server.token(erased)) as admin:
                erasing = pool.submit(admin.erase_tenant, erased)
                until_blocked(receipt, erasing, waiter="sealtrail-erasure")
                assert rows_of(sql, erased)["chain_heads"] == 1  # not committed yet

                def let_go_once_created_or_waiting() -> None:
                    deadline = time.monotonic() + 30
                    while not count_now(sql, _CREATED_OR_WAITING):
                        assert time.monotonic() < deadline, "the definition was not written"
                        time.sleep(0.01)
                    held.close()  # the erasure goes on, and commits

                letting_go = pool.submit(let_go_once_created_or_waiting)
                made = _create(operator, "soc-mid-erasure", tmp_path)
                letting_go.result(timeout=30)
                assert erasing.result(timeout=30).tenant_id == erased
        assert made.exit_code == 0, made.output
        left = rows_of(sql, erased)
        assert {table: rows for table, rows in left.items() if rows} == {}
    assert _instances(own_database, "soc-mid-erasure") == {kept}


# The definition's statement committed, or waiting for a lock (the erasure's).
_CREATED_OR_WAITING = (
    "SELECT (SELECT count(*) FROM deployment_sinks) + (SELECT count(*) FROM pg_stat_activity"
    " WHERE starts_with(query, 'WITH made AS (INSERT INTO deployment_sinks')"
    " AND cardinality(pg_blocking_pids(pid)) > 0)"
)


def test_appends_go_on_while_a_definition_reads_the_heads(
    server: ServerThread,
    operator: Callable[..., Result],
    own_database: str,
    tmp_path: Path,
) -> None:
    """The definition's statement holds every head it has read FOR KEY SHARE
    until it commits, and the appender locks a head to move it. Were that
    lock FOR UPDATE, each tenant's appends would wait on the statement (over
    many tenants, for as long as it takes), past its lock timeout. It is FOR
    NO KEY UPDATE, which a key share does not hold up: an append, by a
    process new to the tenant (which locks its head), is written while the
    statement is held on the last head it reads, by a lock of the test's."""
    _tenants_with_logs(server, 3)
    with (
        psycopg.connect(own_database, autocommit=True) as sql,
        psycopg.connect(own_database, autocommit=True) as blocker,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        # The statement reads the heads in the table's order: the last is read last.
        [(last,), *read] = sql.execute(
            "SELECT tenant_id FROM chain_heads ORDER BY ctid DESC"
        ).fetchall()
        with contextlib.ExitStack() as held:
            held.enter_context(blocker.transaction(force_rollback=True))
            blocker.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE", [last])

            def append_while_held() -> float:
                try:
                    deadline = time.monotonic() + 30
                    while not count_now(blocker, _WAITING_DEFINITION):
                        assert time.monotonic() < deadline, "the definition did not wait"
                        time.sleep(0.01)
                    for (tenant_id,) in read:  # read, and held by the statement
                        with pytest.raises(psycopg.errors.LockNotAvailable), sql.transaction():
                            sql.execute(
                                "SELECT FROM chain_heads WHERE tenant_id = %s FOR UPDATE NOWAIT",
                                [tenant_id],
                            )
                    started = time.monotonic()
                    [appended] = asyncio.run_coroutine_threadsafe(
                        _append_as_a_new_process(server, read[0][0]), server.loop
                    ).result(timeout=30)
                    assert isinstance(appended, Appended), appended
                    assert count_now(blocker, _WAITING_DEFINITION) == 1  # still held
                    return time.monotonic() - started
                finally:
                    held.close()

            appending = pool.submit(append_while_held)
            made = _create(operator, "soc-beside-appends", tmp_path)
            took = appending.result(timeout=60)
    assert made.exit_code == 0, made.output
    assert took < 2.0  # no lock wait (the appender's gives up after 5 s)


# The definition's statement, waiting for a lock.
_WAITING_DEFINITION = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE starts_with(query, 'WITH made AS (INSERT INTO deployment_sinks')"
    " AND cardinality(pg_blocking_pids(pid)) > 0"
)


async def _append_as_a_new_process(server: ServerThread, tenant_id: str) -> list[Any]:
    """An event appended to the tenant by a new appender, which never wrote
    its head: it locks the head to read it."""
    event = validate_event(EventDraft(action="doc.edit", actor_id="u"), now=datetime.now(UTC))
    appender = Appender(server.database)
    appender.start()
    try:
        return await appender.append(tenant_id, [event])
    finally:
        await appender.stop()


def test_a_definition_does_not_wait_for_an_append_in_progress(
    server: ServerThread, own_database: str
) -> None:
    """A head held as the appender holds it while it writes (FOR NO KEY
    UPDATE, here by the test, until the end) does not hold up the
    definition's statement reading it (a lock wait is refused after 2 s);
    its start is where the log stood."""
    [tenant] = _tenants_with_logs(server, 1)
    definition = SinkDefinition(
        "soc-beside-a-write",
        "webhook",
        "sealtrail_json",
        {},
        {"url": "http://127.0.0.1:9/soc", "secrets": [SECRET]},
        False,
    )

    async def create() -> bool:
        async with await psycopg.AsyncConnection.connect(own_database, autocommit=True) as owner:
            await owner.execute("SET lock_timeout = '2s'")
            return await definitions.insert_definition(
                owner,
                definitions.new_id(),
                definition,
                box=load_secret_box(server.settings),
                from_start=False,
                changed_by="test",
            )

    with psycopg.connect(own_database, autocommit=True) as sql, sql.transaction():
        sql.execute("SELECT FROM chain_heads WHERE tenant_id = %s FOR NO KEY UPDATE", [tenant])
        assert server.run(create(), timeout=30)
        starts = sql.execute(
            "SELECT tree_size FROM deployment_sink_starts WHERE tenant_id = %s", [tenant]
        ).fetchall()
    assert starts == [(1,)]
