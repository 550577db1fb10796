"""API tokens may expire, and each says when it was last used (ADR 0064): a
security team rotating credentials sets an expiry on the tokens it creates,
and finds the live ones nothing has used for weeks.

An expired token is refused UNAUTHENTICATED, reason TOKEN_EXPIRED, saying
when, from its expiry on (a cached token too), and its refusal is recorded
as a revoked one's. A token's last use is written behind its calls, at most
once per interval and process, never on the calls' path."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from click.testing import CliRunner
from google.protobuf import json_format, timestamp_pb2

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
    build_filter,
)
from sealtrail import _cli as cli
from sealtrail.v1 import access_pb2, audit_service_pb2_grpc, event_pb2
from sealtrail_server import cli as server_cli
from sealtrail_server.domain.access import Principal, Role, token_digest
from sealtrail_server.store.tokens import create_token, find_principal
from tests.clock import Clock
from tests.conftest import ServerThread, run_operator

HOUR = timedelta(hours=1)

DENIED = "audit_log.access_denied"


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def timed(migrated_database_url: str, clock: Clock) -> Iterator[ServerThread]:
    """A server on the test's clock that trusts a resolved token for an hour
    (its cache outlasts every expiry here) and notes a token's use once an
    hour: what it writes in a test is what that test did."""
    server = ServerThread(
        migrated_database_url,
        clock=clock,
        token_cache_seconds=3600,
        token_last_use_interval=3600,
        checkpoint_interval=0,
    )
    try:
        yield server
    finally:
        server.close()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _eventually(find: Callable[[], list[Any]]) -> list[Any]:
    """What `find` returns once it is not empty (within 20 s)."""
    deadline = time.monotonic() + 20
    while not (found := find()):
        assert time.monotonic() < deadline, "nothing was recorded"
        time.sleep(0.05)
    return found


def _listed(admin: AuditClient, token_id: str) -> access_pb2.ApiToken:
    [token] = [t for t in admin.list_tokens() if t.token_id == token_id]
    return token


def test_a_cached_token_is_refused_from_its_expiry_saying_when(
    timed: ServerThread, clock: Clock, tenant: str
) -> None:
    with AuditClient(timed.target, token=timed.token(tenant)) as admin:
        expiry = clock() + HOUR
        created = admin.create_token("recorder", name="nightly import", expire_time=expiry)
    assert created.token.expire_time.ToDatetime(UTC) == expiry
    with AuditClient(timed.target, token=created.secret, max_attempts=1) as recorder:
        recorder.record(action="invoice.pay", actor_id="u")  # resolved, and cached for an hour
        clock.advance(seconds=HOUR.total_seconds())  # its expiry, well within the cache's hour
        with pytest.raises(UnauthenticatedError) as refused:
            recorder.record(action="invoice.pay", actor_id="u")
    assert refused.value.reason == "TOKEN_EXPIRED"
    assert refused.value.metadata == {"expire_time": _rfc3339(expiry)}
    assert f"token expired at {_rfc3339(expiry)}" in refused.value.message


def test_an_expired_tokens_refusals_are_recorded_once_a_window(
    timed: ServerThread, clock: Clock, tenant: str
) -> None:
    with AuditClient(timed.target, token=timed.token(tenant)) as admin:
        created = admin.create_token("reader", name="q3 audit", expire_time=clock() + HOUR)
        clock.advance(seconds=2 * HOUR.total_seconds())  # first presented after its expiry
        with AuditClient(timed.target, token=created.secret, max_attempts=1) as reader:
            for _ in range(3):  # a client retrying in a loop
                with pytest.raises(UnauthenticatedError, match="token expired at"):
                    reader.query_page()
        denials = _eventually(
            lambda: list(admin.query(build_filter(actions="audit_log.access_denied")))
        )
        time.sleep(0.2)  # a second record would have come by now
        assert len(list(admin.query(build_filter(actions="audit_log.access_denied")))) == 1
    [denial] = denials
    assert (denial.actor.id, denial.actor.display_name) == (created.token.token_id, "q3 audit")
    assert denial.outcome == event_pb2.OUTCOME_DENIED
    assert json_format.MessageToDict(denial.details) == {
        "rpc": "Query",
        "reason": "expired",
        "role": "reader",
        "window_seconds": 600,
        "expire_time": _rfc3339(created.token.expire_time.ToDatetime(UTC)),
    }
    assert "it has expired" in denial.description


def test_an_expiry_is_recorded_after_a_refusal_for_the_role_in_the_same_window(
    timed: ServerThread, clock: Clock, tenant: str
) -> None:
    """A token refused for its role, then presented after its expiry to the
    same RPC within the window: the expiry went unrecorded, the window keyed
    by token and RPC alone (helper-176). Each reason is recorded once."""
    with AuditClient(timed.target, token=timed.token(tenant)) as admin:
        ends = clock() + timedelta(minutes=5)
        created = admin.create_token("reader", name="contractor", expire_time=ends)
        with AuditClient(timed.target, token=created.secret, max_attempts=1) as reader:
            with pytest.raises(PermissionDeniedError):
                reader.create_token("admin")
            _eventually(lambda: list(admin.query(build_filter(actions=DENIED))))
            clock.advance(seconds=6 * 60)  # expired, within the 600 s window
            for _ in range(2):
                with pytest.raises(UnauthenticatedError, match="token expired"):
                    reader.create_token("admin")

        def both() -> list[str]:
            denials = admin.query(build_filter(actions=DENIED), order="oldest")
            reasons = [json_format.MessageToDict(e.details)["reason"] for e in denials]
            return reasons if len(reasons) > 1 else []

        assert _eventually(both) == ["role", "expired"]


def test_a_stream_ends_at_its_tokens_expiry(timed: ServerThread, clock: Clock, tenant: str) -> None:
    with AuditClient(timed.target, token=timed.token(tenant)) as admin:
        created = admin.create_token("reader", expire_time=clock() + HOUR)
        admin.record(action="doc.open", actor_id="u")
        with AuditClient(timed.target, token=created.secret, max_attempts=1) as reader:
            events = reader.stream(build_filter(actions=["doc.open", "doc.close"]), after_seq=0)
            assert next(events).action == "doc.open"
            clock.advance(seconds=HOUR.total_seconds())
            admin.record(action="doc.close", actor_id="u")
            with pytest.raises(UnauthenticatedError) as ended:
                next(events)
    assert ended.value.reason == "TOKEN_EXPIRED"


def test_the_creation_of_an_expiring_token_records_its_expiry(
    timed: ServerThread, clock: Clock, tenant: str
) -> None:
    with AuditClient(timed.target, token=timed.token(tenant)) as admin:
        expiry = clock() + timedelta(days=90)
        created = admin.create_token("recorder", name="ci", expire_time=expiry)
        forever = admin.create_token("recorder", name="legacy")
        records = {
            e.resource.id: json_format.MessageToDict(e.details)
            for e in admin.query(build_filter(actions="api_token.created"))
        }
        listed = _listed(admin, created.token.token_id)
        unlimited = _listed(admin, forever.token.token_id)
    assert records[created.token.token_id] == {
        "role": "recorder",
        "expire_time": _rfc3339(expiry),
        "name": "ci",
    }
    assert "expire_time" not in records[forever.token.token_id]
    assert listed.expire_time.ToDatetime(UTC) == expiry
    assert not unlimited.HasField("expire_time") and not forever.token.HasField("expire_time")


@pytest.mark.parametrize(
    ("expiry", "why"),
    [
        (timedelta(seconds=-1), "must be in the future"),
        (timedelta(0), "must be in the future"),
        (timedelta(days=731), "must be at most 730 days ahead"),
        (timedelta(days=730, minutes=6), "must be at most 730 days ahead"),
    ],
)
def test_an_expiry_not_ahead_or_too_far_ahead_is_refused_naming_the_field(
    timed: ServerThread, clock: Clock, tenant: str, expiry: timedelta, why: str
) -> None:
    with AuditClient(timed.target, token=timed.token(tenant)) as admin:
        with pytest.raises(InvalidArgumentError) as refused:
            admin.create_token("recorder", expire_time=clock() + expiry)
        assert [t.role for t in admin.list_tokens()] == [access_pb2.ROLE_ADMIN]  # none made
    assert refused.value.field_violations == [("expire_time", why)]


def test_a_token_cannot_outlive_the_token_that_made_it(
    timed: ServerThread, clock: Clock, tenant: str
) -> None:
    """A contractor's admin token of a day made an admin token that never
    expires, which went on working after the contractor's was refused
    (helper-176): an expiring token makes only tokens that expire no later."""
    ends = clock() + timedelta(days=1)
    issued = timed.run(
        create_token(timed.database, tenant_id=tenant, role=Role.ADMIN, expires_at=ends)
    )
    with AuditClient(timed.target, token=issued.secret) as contractor:
        for later in (None, ends + timedelta(seconds=1)):
            with pytest.raises(InvalidArgumentError) as refused:
                contractor.create_token("admin", expire_time=later)
            [(field, why)] = refused.value.field_violations
            assert field == "expire_time" and _rfc3339(ends) in why
        made = contractor.create_token("recorder", expire_time=ends)
        assert made.token.expire_time.ToDatetime(UTC) == ends
        assert len(contractor.list_tokens()) == 2  # its own, and the one it could make


def test_two_years_from_a_clock_a_little_ahead_is_still_two_years(
    timed: ServerThread, clock: Clock, tenant: str
) -> None:
    """`--expires-in 2y` worked out by a client whose clock runs a second or
    a minute ahead of the server's was refused "at most 730 days" (helper-176)."""
    with AuditClient(timed.target, token=timed.token(tenant)) as admin:
        ahead = clock() + timedelta(days=730, minutes=1)
        assert admin.create_token("recorder", expire_time=ahead).token.HasField("expire_time")


def test_an_expiry_no_timestamp_can_hold_is_refused_naming_the_field(
    server: ServerThread, tenant: str
) -> None:
    request = access_pb2.CreateTokenRequest(
        role=access_pb2.ROLE_RECORDER, expire_time=timestamp_pb2.Timestamp(seconds=10**12)
    )
    with grpc.insecure_channel(server.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateToken(
                request, metadata=(("authorization", f"Bearer {server.token(tenant)}"),)
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expire_time: is not a valid timestamp" in str(refused.value.details())


def _row_version(sql: psycopg.Connection[Any], token_id: str) -> tuple[str, datetime | None]:
    """The transaction that wrote the token's row last (its xmin: any UPDATE
    writes a new version) and its last use."""
    row = sql.execute(
        "SELECT xmin::text, last_used_at FROM api_tokens WHERE token_id = %s", [token_id]
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_last_use_appears_after_a_call_and_is_not_written_on_every_call(
    timed: ServerThread, clock: Clock, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    with AuditClient(timed.target, token=timed.token(tenant)) as admin:
        created = admin.create_token("recorder", name="billing")
        token_id = created.token.token_id
        assert not _listed(admin, token_id).HasField("last_use_time")
        with AuditClient(timed.target, token=created.secret) as recorder:
            used_at = clock()
            recorder.record(action="invoice.pay", actor_id="u")
            clock.advance(seconds=5)
            timed.run(timed.service.token_uses.flush())
            assert _listed(admin, token_id).last_use_time.ToDatetime(UTC) == used_at
            written = _row_version(sql, token_id)
            for _ in range(20):  # within the interval: noted once, written once
                recorder.record(action="invoice.pay", actor_id="u")
                clock.advance(seconds=1)
            timed.run(timed.service.token_uses.flush())
    assert _row_version(sql, token_id) == written  # not one write more
    assert written[1] == used_at


def test_the_write_of_last_uses_passes_over_a_token_another_transaction_holds(
    timed: ServerThread, tenant: str, migrated_database_url: str, sql: psycopg.Connection[Any]
) -> None:
    """A revocation or an erasure holding a token's row is never waited for
    (nor deadlocked with): that token's use is left for a later note."""
    with AuditClient(timed.target, token=timed.token(tenant)) as admin:
        held, free = admin.create_token("recorder"), admin.create_token("recorder")
    for created in (held, free):
        with AuditClient(timed.target, token=created.secret) as recorder:
            recorder.record(action="invoice.pay", actor_id="u")
    with psycopg.connect(migrated_database_url) as holder:  # a transaction, held open
        holder.execute(
            "SELECT FROM api_tokens WHERE token_id = %s FOR UPDATE", [held.token.token_id]
        )
        timed.run(timed.service.token_uses.flush(), timeout=5)
        holder.rollback()
    assert _row_version(sql, held.token.token_id)[1] is None
    assert _row_version(sql, free.token.token_id)[1] is not None


def test_a_write_of_last_uses_the_database_refuses_leaves_no_token_in_the_log(
    timed: ServerThread,
    tenant: str,
    sql: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The warning quoted the database's error whole, its `DETAIL: Failing
    row contains (...)` the token's whole row (the service's role reads past
    row security): its name, its secret's digest, in the server's log. It
    names what refused the write, by its primary message and SQLSTATE."""
    name = f"secret-name-{uuid.uuid4()}"
    with AuditClient(timed.target, token=timed.token(tenant)) as admin:
        created = admin.create_token("recorder", name=name)
    with AuditClient(timed.target, token=created.secret) as recorder:
        recorder.record(action="invoice.pay", actor_id="u")
    constraint = f"refuse_{tenant.replace('-', '_')}"
    sql.execute(
        f"ALTER TABLE api_tokens ADD CONSTRAINT {constraint}"
        f" CHECK (last_used_at IS NULL OR tenant_id <> '{tenant}') NOT VALID"
    )
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(psycopg.errors.CheckViolation):
            timed.run(timed.service.token_uses.flush())
    finally:
        sql.execute(f"ALTER TABLE api_tokens DROP CONSTRAINT {constraint}")
        timed.run(timed.service.token_uses.flush())  # written now, for no other test to meet
    said = [r.getMessage() for r in caplog.records if "went unwritten" in r.getMessage()]
    assert said
    digests = [
        bytes(digest).hex()[:16]
        for (digest,) in sql.execute(
            "SELECT secret_sha256 FROM api_tokens WHERE tenant_id = %s", [tenant]
        ).fetchall()
    ]
    for line in said:
        assert not [d for d in digests if d in line] and "Failing row" not in line, line
        assert name not in line, line
        assert constraint in line and "23514" in line, line


def test_last_use_is_written_when_a_server_stops_and_outlives_it(
    migrated_database_url: str, server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    stopping = ServerThread(migrated_database_url, checkpoint_interval=0)
    try:
        with AuditClient(stopping.target, token=stopping.token(tenant)) as admin:
            created = admin.create_token("recorder")
        with AuditClient(stopping.target, token=created.secret) as recorder:
            recorder.record(action="invoice.pay", actor_id="u")
    finally:
        stopping.close()  # before its writer's first pass (10 s): the stop writes
    _, last_used_at = _row_version(sql, created.token.token_id)
    assert last_used_at is not None
    with AuditClient(server.target, token=server.token(tenant)) as admin:  # another server
        listed = _listed(admin, created.token.token_id)
    assert listed.last_use_time.ToDatetime(UTC) == last_used_at


async def test_the_async_client_creates_an_expiring_token(
    server: ServerThread, tenant: str
) -> None:
    expiry = datetime.now(UTC) + timedelta(days=30)
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as admin:
        created = await admin.create_token("reader", expire_time=expiry)
        [listed] = [t for t in await admin.list_tokens() if t.token_id == created.token.token_id]
    assert listed.expire_time.ToDatetime(UTC) == expiry


def _days_of(before: datetime, *, days: int) -> set[str]:
    """The dates (UTC) a token made since `before` and expiring in `days` may
    expire on: two when midnight passed since (a date taken after the command
    alone would fail a run crossing midnight)."""
    return {
        (moment + timedelta(days=days)).strftime("%Y-%m-%d")
        for moment in (before, datetime.now(UTC))
    }


def _backdate(sql: psycopg.Connection[Any], token_id: str, *, days: int) -> None:
    """As if the token had been created `days` ago and not used since."""
    sql.execute(
        "UPDATE api_tokens SET created_at = now() - make_interval(days => %s),"
        " last_used_at = NULL WHERE token_id = %s",
        [days, token_id],
    )


def test_the_command_line_creates_expiring_tokens_and_lists_stale_ones(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    runner = CliRunner()
    before = datetime.now(UTC)
    created = runner.invoke(
        cli.main,
        ["tokens", "create", "--role", "recorder", "--name", "ci", "--expires-in", "90d"],
        env=env,
    )
    assert created.exit_code == 0, created.output
    expiry_days = _days_of(before, days=90)
    assert any(f"expiring at {day}" in created.stderr for day in expiry_days)
    secret = created.stdout.strip()
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        [ci] = [t for t in admin.list_tokens() if t.name == "ci"]
        stale = admin.create_token("reader", name="forgotten")
        gone = admin.create_token("reader", name="revoked long ago")
        admin.revoke_token(gone.token.token_id)
    _backdate(sql, stale.token.token_id, days=40)
    _backdate(sql, gone.token.token_id, days=40)

    listed = runner.invoke(cli.main, ["tokens", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "expires (UTC)" in listed.stdout and "last used (UTC)" in listed.stdout
    [row] = [line for line in listed.stdout.splitlines() if ci.token_id in line]
    assert any(day in row for day in expiry_days) and "never" in row  # never used

    only_stale = runner.invoke(cli.main, ["tokens", "--unused-for", "30d"], env=env)
    assert only_stale.exit_code == 0, only_stale.output
    assert stale.token.token_id in only_stale.stdout
    assert ci.token_id not in only_stale.stdout  # created today
    assert gone.token.token_id not in only_stale.stdout  # revoked: no risk left

    create = ["tokens", "create", "--role", "reader"]
    both = runner.invoke(
        cli.main, [*create, "--expires-in", "1d", "--expires-at", "2030-01-01"], env=env
    )
    assert both.exit_code == 2 and "not both" in both.output
    bad = runner.invoke(cli.main, [*create, "--expires-in", "3x"], env=env)
    assert bad.exit_code == 2 and "'3x' is not a duration" in bad.output
    too_far = runner.invoke(cli.main, [*create, "--expires-in", "3y"], env=env)
    assert too_far.exit_code == 2 and "--expires-in 3y: must be at most" in too_far.output
    assert secret.startswith("stk_")


def test_the_operator_creates_an_expiring_token_and_sees_expiry_and_last_use(
    migrated_database_url: str, server: ServerThread, tenant: str
) -> None:
    runner = CliRunner()
    database = ["--database-url", migrated_database_url]
    before = datetime.now(UTC)
    created = runner.invoke(
        server_cli.main,
        ["token", "create", "--tenant", tenant, "--role", "recorder", "--expires-in", "2w",
         *database],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    token_id = _announced_token_id(created.stderr)
    secret = created.stdout.strip().splitlines()[-1]
    assert _token_id_of(server, secret) == token_id
    with AuditClient(server.target, token=secret) as recorder:
        recorder.record(action="invoice.pay", actor_id="u")
    server.run(server.service.token_uses.flush())
    listed = runner.invoke(server_cli.main, ["token", "list", "--tenant", tenant, *database])
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.stdout.splitlines() if token_id in line]
    expiry_days = _days_of(before, days=14)
    assert any(f"expires {day}" in row for day in expiry_days)
    assert "last used " in row and "never used" not in row
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        created_records = list(admin.query(build_filter(actions="api_token.created")))
        everything = [(e.seq, e.action, e.resource.id) for e in admin.query(order="oldest")]
    # Once (in a full run) no record of this token was found: the id looked
    # for was a log line's time (test_token_create_names_its_token_after_what_was_logged).
    found = [e for e in created_records if e.resource.id == token_id]
    assert len(found) == 1, (token_id, created.stderr, everything)
    [record] = found
    assert json_format.MessageToDict(record.details)["expire_time"][:10] in expiry_days
    too_far = runner.invoke(
        server_cli.main,
        ["token", "create", "--tenant", tenant, "--role", "reader", "--expires-in", "800d",
         *database],
    )  # fmt: skip
    assert too_far.exit_code == 2 and "at most 730 days ahead" in too_far.output


def _announced_token_id(stderr: str) -> str:
    """The id `token create` announces on its line of stderr ("token <id> for
    tenant ..."): not stderr's second word, for the command points the
    process's log at its stderr, and what any thread logs as it runs comes first."""
    [announced] = [line for line in stderr.splitlines() if line.startswith("token ")]
    return announced.split()[1]


def _token_id_of(server: ServerThread, secret: str) -> str:
    found = server.run(find_principal(server.database, token_digest(secret)))
    assert isinstance(found, Principal)
    return found.token_id


def test_token_create_names_its_token_after_what_was_logged(
    migrated_database_url: str, server: ServerThread, tenant: str
) -> None:
    """What the process logs as `token create` runs comes before its line on
    stderr: here the command's own debug lines (-v), in a full run of the
    suite a line another thread logged meanwhile (a forwarder's retry).
    The operator's token test took stderr's second word for the token's id,
    and so looked once for the records of a log line's time: none (ccde7c3;
    the record itself commits with the token, 04c2c5a). The id is read from
    the command's own line, which names the token its secret opens."""
    created = run_operator(
        migrated_database_url, "-v", "token", "create", "--tenant", tenant, "--role", "reader"
    )
    assert created.exit_code == 0, created.output
    logged_first = created.stderr.split()
    assert logged_first[0] != "token"  # the line the old reading took the id from
    secret = created.stdout.strip().splitlines()[-1]
    token_id = _token_id_of(server, secret)
    assert logged_first[1] != token_id
    assert _announced_token_id(created.stderr) == token_id
