"""CountEvents: how many events match a filter, in all and grouped by action,
actor, category, outcome, severity, resource type, UTC day or hour; through
the clients and `sealtrail stats`, against a real server and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql as pgsql

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    EventCount,
    EventCounts,
    GroupBy,
    PermissionDeniedError,
    ResourceExhaustedError,
    RpcFailedError,
    build_event,
    build_filter,
)
from sealtrail import _cli as cli
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc, event_pb2
from sealtrail.v1.event_pb2 import EventFilter
from sealtrail_server.store import counts as store_counts
from sealtrail_server.store.counts import count_statement
from tests.conftest import ServerThread, token_id_of
from tests.lock_waits import until_blocked

# Four days ago, at 00:00 UTC: every event below occurred in the three days
# after it, all in the past, whatever the day the tests run.
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=4)
# (action, actor, category, outcome, severity, resource type, hours after DAY0)
EVENTS: list[tuple[str, str, str, str, str, str, float]] = [
    ("user.login", "alice", "authentication", "failure", "warning", "session", 1),
    ("user.login", "alice", "authentication", "failure", "warning", "session", 2),
    ("user.login", "alice", "authentication", "failure", "warning", "session", 2.5),
    ("user.login", "bob", "authentication", "failure", "warning", "session", 25),
    ("user.login", "bob", "authentication", "success", "info", "session", 26),
    ("user.login", "carol", "authentication", "success", "info", "session", 26.5),
    ("document.share", "alice", "data_access", "success", "info", "document", 27),
    ("document.share", "bob", "data_access", "success", "info", "document", 50),
    ("api_key.create", "carol", "security", "success", "critical", "api_key", 51),
    ("member.invite", "dave", "", "denied", "error", "", 51.25),
]
# The three days the events occurred in: it leaves out the counts' own records.
RECORDED = build_filter(since=DAY0, until=DAY0 + timedelta(days=3))


def _record(client: AuditClient) -> None:
    events = []
    for action, actor, category, outcome, severity, resource, hours in EVENTS:
        fields: dict[str, Any] = {"category": category} if category else {}
        if resource:
            fields["resource_type"] = resource
        events.append(
            build_event(
                action=action,
                actor_id=actor,
                outcome=outcome,
                severity=severity,
                occurred_at=DAY0 + timedelta(hours=hours),
                **fields,
            )
        )
    results = client.record_batch(events)
    assert all(result.error is None for result in results)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _expected(group_by: GroupBy) -> list[EventCount]:
    """What a count grouped by `group_by` answers for EVENTS: by count, then key."""
    column = {"action": 0, "actor": 1, "category": 2, "outcome": 3, "resource_type": 5}
    if group_by in column:
        counted = Counter(event[column[group_by]] for event in EVENTS)
        ordered = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
        return [EventCount(key, count) for key, count in ordered]
    if group_by == "severity":  # ties by level, not by name
        levels = ["info", "warning", "error", "critical"]
        counted = Counter(event[4] for event in EVENTS)
        ordered = sorted(counted.items(), key=lambda item: (-item[1], levels.index(item[0])))
        return [EventCount(key, count) for key, count in ordered]
    size = timedelta(days=1) if group_by == "day" else timedelta(hours=1)
    buckets = Counter(DAY0 + size * (timedelta(hours=event[6]) // size) for event in EVENTS)
    return [EventCount(_rfc3339(start), buckets[start]) for start in sorted(buckets)]


@pytest.fixture
def recorded(client_for: Callable[..., AuditClient], tenant: str) -> AuditClient:
    """A reader of this test's tenant, once EVENTS are recorded in it."""
    _record(client_for(tenant, "recorder"))
    return client_for(tenant, "reader")


def test_the_total_alone_counts_every_match(recorded: AuditClient) -> None:
    counts = recorded.count_events(RECORDED)
    assert counts.total == len(EVENTS)
    assert counts.groups == () and not counts.truncated and counts.total_groups == 0


@pytest.mark.parametrize(
    "group_by", ["action", "actor", "category", "outcome", "severity", "resource_type"]
)
def test_groups_count_what_was_recorded_largest_first(
    recorded: AuditClient, group_by: GroupBy
) -> None:
    counts = recorded.count_events(RECORDED, group_by=group_by)
    assert list(counts.groups) == _expected(group_by)
    assert counts.total == len(EVENTS) == sum(group.count for group in counts.groups)
    assert counts.total_groups == len(counts.groups) and not counts.truncated


@pytest.mark.parametrize("group_by", ["day", "hour"])
def test_time_buckets_are_utc_starts_in_time_order(
    recorded: AuditClient, group_by: GroupBy
) -> None:
    counts = recorded.count_events(RECORDED, group_by=group_by)
    assert list(counts.groups) == _expected(group_by)
    assert [group.key for group in counts.groups] == sorted(group.key for group in counts.groups)
    first = datetime.fromisoformat(counts.groups[0].key)
    assert first == DAY0 if group_by == "day" else DAY0 + timedelta(hours=1)


def test_the_filter_applies_as_query_applies_it(recorded: AuditClient) -> None:
    failed_logins = build_filter(
        actions="user.*", outcomes="failure", since=DAY0, until=DAY0 + timedelta(days=3)
    )
    counts = recorded.count_events(failed_logins, group_by="actor")
    assert list(counts.groups) == [EventCount("alice", 3), EventCount("bob", 1)]
    assert counts.total == 4 == len(list(recorded.query(failed_logins)))
    second_day = build_filter(since=DAY0 + timedelta(days=1), until=DAY0 + timedelta(days=2))
    assert recorded.count_events(second_day, group_by="day").groups == (
        EventCount(_rfc3339(DAY0 + timedelta(days=1)), 4),
    )
    severe = build_filter(min_severity="error", since=DAY0)
    assert recorded.count_events(severe, group_by="severity").groups == (
        EventCount("error", 1),  # a tie: by level
        EventCount("critical", 1),
    )


def test_the_limit_keeps_the_largest_groups_and_says_it_cut(recorded: AuditClient) -> None:
    counts = recorded.count_events(RECORDED, group_by="actor", limit=2)
    assert list(counts.groups) == _expected("actor")[:2]
    assert counts.truncated and counts.total_groups == 4
    assert counts.total == len(EVENTS)  # the groups left out are counted too
    hours = recorded.count_events(RECORDED, group_by="hour", limit=3)
    assert list(hours.groups) == _expected("hour")[:3]  # the earliest
    assert hours.truncated
    exact = recorded.count_events(RECORDED, group_by="action", limit=4)
    assert len(exact.groups) == 4 and not exact.truncated


def test_the_limit_defaults_to_50_and_is_lowered_to_1000(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    writer = client_for(tenant, "recorder")
    for start in (0, 1000):
        writer.record_batch(
            [
                build_event(action="page.view", actor_id=f"u{n:04}")
                for n in range(start, start + 600)
            ]
        )
    reader = client_for(tenant, "reader")
    views = build_filter(actions="page.view")
    default = reader.count_events(views, group_by="actor")
    assert len(default.groups) == 50 and default.truncated and default.total_groups == 1200
    assert [group.key for group in default.groups] == [f"u{n:04}" for n in range(50)]
    most = reader.count_events(views, group_by="actor", limit=5000)
    assert len(most.groups) == 1000 and most.truncated and most.total == 1200
    # Past what the request's int32 carries: lowered as 5,000 is, not a bare
    # "Value out of range" from protobuf.
    assert reader.count_events(views, group_by="actor", limit=2**31).groups == most.groups


def test_the_catalogue_of_actions_is_the_log_before_its_own_record(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    _record(client_for(tenant, "recorder"))
    reader = client_for(tenant, "reader")
    catalogue = reader.count_events(group_by="action")
    assert list(catalogue.groups) == _expected("action")  # not its own audit_log.queried
    again = reader.count_events(group_by="action")
    assert EventCount("audit_log.queried", 1) in again.groups  # the first count's record
    assert again.total == len(EVENTS) + 1


def test_a_count_is_recorded_as_a_query_naming_its_rpc(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    secret = server.token(tenant, "reader")
    with AuditClient(server.target, token=secret) as reader:
        reader.count_events(build_filter(actions="user.*", outcomes="failure"), group_by="actor")
    rows = sql.execute(
        "SELECT actor_id, category, record::jsonb -> 'details' FROM events"
        " WHERE tenant_id = %s AND action = 'audit_log.queried'",
        [tenant],
    ).fetchall()
    assert rows == [
        (
            token_id_of(sql, secret),
            "data_access",
            {
                "rpc": "CountEvents",
                "filter": {"actions": ["user.*"], "outcomes": ["OUTCOME_FAILURE"]},
                "group_by": "actor",
                "limit": 50,
            },
        )
    ]


def test_a_count_names_the_size_of_the_log_it_counted_while_events_are_recorded(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    """A dashboard counts while the log grows: each answer is of one size of
    the log, which it names, so that the count can be told apart from the
    next and checked against the events (the same filter's Query results up
    to that seq). Without it, an answer said nothing of what it had read."""
    writers = [client_for(tenant, "recorder") for _ in range(2)]
    reader = client_for(tenant, "reader")
    a_only = build_filter(actions="a.*")
    stop = threading.Event()
    batches = [0, 0]  # recorded by each writer so far

    def record(index: int, actions: list[str]) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            writers[index].record_batch(
                [build_event(action=actions[(n + k) % 3], actor_id="u1") for k in range(n % 7 + 1)]
            )
            batches[index] += 1

    def counted_after_more_writes(event_filter: EventFilter) -> EventCounts:
        seen = sum(batches)
        deadline = time.monotonic() + 20
        while sum(batches) < seen + 2:
            assert time.monotonic() < deadline, "the writers stalled"
            time.sleep(0.005)
        return reader.count_events(event_filter, group_by="action", limit=1000)

    threads = [
        threading.Thread(target=record, args=(0, ["a.one", "a.two", "a.three"])),
        threading.Thread(target=record, args=(1, ["b.one", "b.two", "a.one"])),
    ]
    for thread in threads:
        thread.start()
    try:
        answers = [(f, counted_after_more_writes(f)) for f in [EventFilter(), a_only] * 6]
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    for event_filter, counted in answers:
        found = reader.query(event_filter, order="oldest", page_size=1000)
        kept = [event for event in found if event.seq <= counted.tree_size]
        assert counted.total == len(kept)
        assert {group.key: group.count for group in counted.groups} == Counter(
            event.action for event in kept
        )
    # Each count's own record comes right after the log it counted, and the
    # log grew by more than that record between two counts.
    queried = reader.query(build_filter(actions="audit_log.queried"), order="oldest")
    sizes = [counted.tree_size for _, counted in answers]
    assert [event.seq - 1 for event in queried][: len(sizes)] == sizes
    assert all(later > earlier + 2 for earlier, later in itertools.pairwise(sizes))


def test_another_tenants_events_are_never_counted(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    _record(client_for(tenant, "recorder"))
    other = f"{tenant}-other"
    client_for(other, "recorder").record(
        action="user.login", actor_id="mallory", occurred_at=DAY0 + timedelta(hours=3)
    )
    counts = client_for(tenant, "reader").count_events(RECORDED, group_by="actor")
    assert "mallory" not in {group.key for group in counts.groups}
    assert counts.total == len(EVENTS)
    assert client_for(other, "reader").count_events(RECORDED).total == 1


def test_a_recorder_token_is_refused(client_for: Callable[..., AuditClient], tenant: str) -> None:
    with pytest.raises(PermissionDeniedError):
        client_for(tenant, "recorder", max_attempts=1).count_events()


@pytest.fixture
def stub(server: ServerThread) -> Iterator[audit_service_pb2_grpc.AuditLogServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield audit_service_pb2_grpc.AuditLogServiceStub(channel)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"group_by": 99}, "group_by"),
        ({"group_by": audit_service_pb2.COUNT_GROUP_BY_ACTOR, "measure": 99}, "measure"),
        ({"measure": audit_service_pb2.COUNT_MEASURE_DURATION_P95}, "measure"),  # no group_by
        ({"limit": -1}, "limit"),
        (
            {
                "filter": event_pb2.EventFilter(
                    occurred_after={"seconds": 2000}, occurred_before={"seconds": 1000}
                )
            },
            "filter.occurred_before",
        ),
        ({"filter": event_pb2.EventFilter(actions=["Not An Action"])}, "filter.actions[0]"),
    ],
)
def test_a_bad_request_is_refused_naming_its_field(
    server: ServerThread,
    tenant: str,
    stub: audit_service_pb2_grpc.AuditLogServiceStub,
    request_fields: dict[str, Any],
    field: str,
) -> None:
    metadata = (("authorization", f"Bearer {server.token(tenant, 'reader')}"),)
    with pytest.raises(grpc.RpcError) as refused:
        stub.CountEvents(
            audit_service_pb2.CountEventsRequest(**request_fields), metadata=metadata, timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field}:" in str(refused.value.details())


def test_the_client_refuses_an_unknown_grouping(recorded: AuditClient) -> None:
    with pytest.raises(ValueError, match="group_by: unknown value 'planet'"):
        recorded.count_events(group_by="planet")  # type: ignore[arg-type]
    # At the call, as the server refuses it (test_a_bad_request_is_refused_naming_its_field).
    with pytest.raises(ValueError, match=r"^limit: must be 0 or more \(0: 50 groups\), not -5$"):
        recorded.count_events(limit=-5)


async def test_the_async_client_counts_too(server: ServerThread, tenant: str) -> None:
    async with AsyncAuditClient(server.target, token=server.token(tenant, "recorder")) as writer:
        await writer.record_batch(
            [build_event(action="user.login", actor_id=f"u{n % 3}") for n in range(7)]
        )
    async with AsyncAuditClient(server.target, token=server.token(tenant, "reader")) as reader:
        counts = await reader.count_events(build_filter(actions="user.login"), group_by="actor")
    assert list(counts.groups) == [EventCount("u0", 3), EventCount("u1", 2), EventCount("u2", 2)]
    assert counts.total == 7


def test_sealtrail_stats_prints_the_counts_and_the_total(
    server: ServerThread, recorded: AuditClient, tenant: str
) -> None:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    since = ["--since", _rfc3339(DAY0), "--until", _rfc3339(DAY0 + timedelta(days=3))]
    shown = CliRunner().invoke(
        cli.main,
        ["stats", "--by", "actor", "--action", "user.*", "--outcome", "failure", *since],
        env=env,
    )
    assert shown.exit_code == 0, shown.output
    rows = [line.split() for line in shown.stdout.splitlines()]
    # Each actor's name beside its id: none recorded here.
    assert ["│", "alice", "│", "│", "3", "│", "75.0%", "│"] in rows
    assert ["│", "bob", "│", "│", "1", "│", "25.0%", "│"] in rows
    assert shown.stdout.splitlines()[-1] == "total: 4 events"

    days = CliRunner().invoke(cli.main, ["stats", "--by", "day", *since], env=env)
    assert days.exit_code == 0, days.output
    assert DAY0.strftime("%Y-%m-%d") in days.stdout

    cut = CliRunner().invoke(
        cli.main, ["stats", "--by", "resource-type", "--limit", "2", "--json", *since], env=env
    )
    assert cut.exit_code == 0, cut.output
    assert json.loads(cut.stdout) == {
        "total": len(EVENTS),
        "groups": [{"key": "session", "count": 6}, {"key": "document", "count": 2}],
        "truncated": True,
        "total_groups": 4,
        # EVENTS and the records of the two counts before: naming the first
        # one's actors recorded no Query (EventCount.label, helper-567).
        "tree_size": len(EVENTS) + 2,
    }
    shortened = CliRunner().invoke(
        cli.main, ["stats", "--by", "resource_type", "--limit", "2", *since], env=env
    )
    assert shortened.exit_code == 0, shortened.output
    assert "4 groups: showing the first 2; raise --limit" in shortened.stderr
    assert "session" in shortened.stdout and "api_key" not in shortened.stdout

    refused = CliRunner().invoke(cli.main, ["stats", "--by", "planet"], env=env)
    assert refused.exit_code == 2 and "'planet' is not one of" in refused.output


def test_a_count_past_its_time_says_to_narrow_the_time_range(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    server = ServerThread(migrated_database_url, count_timeout=0.5, checkpoint_interval=0)
    try:
        with AuditClient(server.target, token=server.token(tenant, "reader")) as reader:
            # A count of every month reads events_default too: held, the count waits for it.
            with sql.transaction():
                sql.execute("LOCK TABLE events_default IN ACCESS EXCLUSIVE MODE")
                with ThreadPoolExecutor(1) as pool:
                    pending = pool.submit(reader.count_events, group_by="action")
                    until_blocked(sql, pending, waiter="sealtrail")
                    with pytest.raises(RpcFailedError) as refused:
                        pending.result(timeout=30)
            assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert refused.value.reason == "COUNT_TIMEOUT"
            assert "narrow the time range" in refused.value.message
            assert not refused.value.retried
            # The refused count was recorded all the same, before it began.
            assert reader.count_events(build_filter(actions="audit_log.queried")).total == 1
    finally:
        server.close()


def test_counts_per_recording_token_say_which_token_wrote_what(
    server: ServerThread,
    tenant: str,
    client_for: Callable[..., AuditClient],
    sql: psycopg.Connection[Any],
) -> None:
    """After a token is found compromised: how much did each token write
    (ADR 0061). Sealtrail's own records, which no token recorded, under ""."""
    billing, other = server.token(tenant, "recorder"), server.token(tenant, "recorder")
    for secret, events in ((billing, 3), (other, 1)):
        with AuditClient(server.target, token=secret) as recorder:
            recorder.record_batch([build_event(action="invoice.pay", actor_id="u1")] * events)
    reader = client_for(tenant, "reader")
    list(reader.query(build_filter(actions="invoice.pay")))  # recorded: audit_log.queried
    counts = reader.count_events(group_by="recorded_by")
    assert list(counts.groups) == [
        EventCount(token_id_of(sql, billing), 3),
        EventCount("", 1),
        EventCount(token_id_of(sql, other), 1),
    ]
    assert counts.total == 5


def test_counts_leave_the_bulk_reads_to_other_tenants(
    migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count holds a connection of the bulk share (exports, stream catch-ups,
    large batches) for as long as it runs, up to SEALTRAIL_COUNT_TIMEOUT: one
    tenant's dashboard of counts took the whole share and another tenant's
    large batch waited 9 s, its export 19 s (helper-176). A tenant runs one
    count at a time and counts take all of the share but one: more are
    refused RESOURCE_EXHAUSTED with a retry delay, at once."""
    running = count_statement

    def slow(*args: Any, **kwargs: Any) -> Any:  # a count of a large log
        query, params = running(*args, **kwargs)
        return pgsql.SQL("SELECT q.* FROM ({}) AS q CROSS JOIN pg_sleep(8)").format(query), params

    server = ServerThread(migrated_database_url, pool_max_size=10)  # a bulk share of 4
    tenants = [f"t-{uuid.uuid4().hex[:12]}" for _ in range(5)]
    readers = [
        AuditClient(server.target, token=server.token(t, "reader"), max_attempts=1) for t in tenants
    ]
    try:
        monkeypatch.setattr(store_counts, "count_statement", slow)
        with ThreadPoolExecutor(3) as pool:
            counting = [pool.submit(reader.count_events) for reader in readers[:3]]
            until_counting(migrated_database_url, 3)
            with pytest.raises(ResourceExhaustedError, match="one count at a time") as same:
                readers[0].count_events()
            with pytest.raises(ResourceExhaustedError, match="long reads at once") as more:
                readers[3].count_events()
            assert same.value.retry_after and more.value.retry_after
            # The share's last connection reads another tenant's export meanwhile.
            exporter = AuditClient(server.target, token=server.token(tenants[4], "exporter"))
            with exporter:
                assert list(exporter.export_stream())
            assert not any(count.done() for count in counting)
            assert [count.result(60).total for count in counting] == [0, 0, 0]  # before its record
    finally:
        for reader in readers:
            reader.close()
        server.close()


def until_counting(database_url: str, counts: int) -> None:
    """Returns once `counts` count statements run (within 20 s)."""
    deadline = time.monotonic() + 20
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            [(running,)] = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND query LIKE '%%pg_sleep(8)%%' AND pid <> pg_backend_pid()"
            ).fetchall()
            if running >= counts:
                return
            assert time.monotonic() < deadline, running
            time.sleep(0.05)


def test_sealtrail_stats_waits_as_long_as_it_is_told(
    server: ServerThread, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client waits 60 s for a count; an operator who raised
    SEALTRAIL_COUNT_TIMEOUT above that had the CLI give up first, with neither
    the count nor the advice (helper-176): `--timeout` says how long."""
    running = count_statement

    def slow(*args: Any, **kwargs: Any) -> Any:
        query, params = running(*args, **kwargs)
        return pgsql.SQL("SELECT q.* FROM ({}) AS q CROSS JOIN pg_sleep(3)").format(query), params

    monkeypatch.setattr(store_counts, "count_statement", slow)
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    short = CliRunner().invoke(cli.main, ["stats", "--timeout", "0.5"], env=env)
    assert short.exit_code == 1 and "DEADLINE_EXCEEDED" in short.output
    # A duration as `alerts --window` takes one (a number alone is seconds, as above).
    waited = CliRunner().invoke(cli.main, ["stats", "--timeout", "1m"], env=env)
    assert waited.exit_code == 0, waited.output
    assert waited.stdout.splitlines()[-1] == "total: 1 event"  # the first one's record


@pytest.mark.parametrize(
    "given", ["nan", "inf", "1e308", "86401", "0", "-1", "2d", "25h", "1.5m", "5 minutes"]
)
@pytest.mark.parametrize("command", ["stats", "report"])
def test_sealtrail_stats_refuses_a_timeout_no_deadline_can_hold(
    server: ServerThread, tenant: str, given: str, command: str
) -> None:
    """`--timeout nan` passed click's range check (nan compares false), and
    it and `1e308` (past what a deadline holds) ended at once in
    DEADLINE_EXCEEDED, as if the server were slow. A refusal quotes the
    value as typed (`'2d'`, not the seconds it reads as)."""
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    refused = CliRunner().invoke(cli.main, [command, "--timeout", given], env=env)
    assert refused.exit_code == 2, refused.output
    assert f"Invalid value for '--timeout': {given!r} is " in refused.output, refused.output
    assert "DEADLINE_EXCEEDED" not in refused.output


@pytest.mark.parametrize("command", ["stats", "report"])
def test_sealtrail_stats_waits_up_to_a_day_however_written(
    server: ServerThread, tenant: str, command: str
) -> None:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    for a_day in ("86400", "1d", "24h", "8.64e4"):
        waited = CliRunner().invoke(cli.main, [command, "--timeout", a_day], env=env)
        assert waited.exit_code == 0, waited.output


def test_sealtrail_stats_by_actor_names_each_top_actor_beside_its_id(
    server: ServerThread, client_for: Callable[..., AuditClient], tenant: str
) -> None:
    """`stats --by actor` listed `u_3` or a token's UUID, no name: "who
    accessed what" named no one (helper-554). Each actor shown is named as
    its latest event in the count names it, in the table and the JSON, by
    the count itself (`EventCount.label`, helper-567): its 11th actor too,
    and no Query per actor, each recorded as `audit_log.queried`."""
    client_for(tenant, "recorder").record_batch(
        [
            build_event(
                action="doc.read",
                actor_id="u_3",
                actor_email="alice@example.com",
                actor_display_name="Alice Martin",
            ),
            build_event(
                action="doc.read",
                actor_id="u_3",
                actor_email="alice@example.com",
                actor_display_name="Alice Martin",
            ),
            build_event(action="doc.read", actor_id="svc", actor_display_name="nightly sync"),
            build_event(action="doc.read", actor_id="anon"),
        ]
    )
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    shown = CliRunner().invoke(cli.main, ["stats", "--by", "actor", "--action", "doc.*"], env=env)
    assert shown.exit_code == 0, shown.output
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in shown.stdout.splitlines()]
    assert ["u_3", "Alice Martin <alice@example.com>", "2", "50.0%"] in rows, shown.stdout
    assert ["svc", "nightly sync", "1", "25.0%"] in rows, shown.stdout
    assert ["anon", "", "1", "25.0%"] in rows, shown.stdout
    as_json = CliRunner().invoke(
        cli.main, ["stats", "--by", "actor", "--action", "doc.*", "--json"], env=env
    )
    assert as_json.exit_code == 0, as_json.output
    said = json.loads(as_json.stdout)
    assert said["groups"] == [
        {"key": "u_3", "count": 2, "name": "Alice Martin <alice@example.com>"},
        {"key": "anon", "count": 1, "name": ""},
        {"key": "svc", "count": 1, "name": "nightly sync"},
    ]
    client_for(tenant, "recorder").record_batch(
        [
            build_event(action="doc.read", actor_id=f"p{n:02}", actor_email=f"p{n}@example.com")
            for n in range(11)
        ]
    )
    eleven = CliRunner().invoke(
        cli.main, ["stats", "--by", "actor", "--action", "doc.read", "--json"], env=env
    )
    assert eleven.exit_code == 0, eleven.output
    after = json.loads(eleven.stdout)
    assert {"key": "p10", "count": 1, "name": "p10@example.com"} in after["groups"]
    # The 11 events, and the record of the count before alone: no Query.
    assert after["tree_size"] == said["tree_size"] + 1 + 11


def test_a_count_by_actor_labels_each_group_as_its_latest_matching_event_records_it(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    stub: audit_service_pb2_grpc.AuditLogServiceStub,
) -> None:
    """An actor's id (`u_3`, a token's UUID) names no one in "who accessed
    what": a count by actor labels each group it answers as the actor's
    latest event matching the filter records them (helper-567), in one
    statement rather than a Query per actor; other groupings, none."""
    actor = {"actor_id": "u_3", "actor_email": "alice@example.com"}
    client_for(tenant, "recorder").record_batch(
        [
            build_event(action="doc.read", actor_display_name="Alice M.", **actor),
            build_event(action="doc.read", actor_display_name="Alice Martin", **actor),
            build_event(action="doc.write", actor_display_name="Alice (admin)", **actor),
            build_event(action="doc.read", actor_id="svc", actor_display_name="nightly sync"),
            build_event(action="doc.read", actor_id="bob", actor_email="bob@example.com"),
            build_event(action="doc.read", actor_id="anon"),
        ]
    )
    metadata = (("authorization", f"Bearer {server.token(tenant, 'reader')}"),)

    def labels(actions: list[str], group_by: int) -> list[tuple[str, str]]:
        answer = stub.CountEvents(
            audit_service_pb2.CountEventsRequest(
                filter=event_pb2.EventFilter(actions=actions), group_by=group_by
            ),
            metadata=metadata,
            timeout=10,
        )
        return [(group.key, group.label) for group in answer.groups]

    by_actor = audit_service_pb2.COUNT_GROUP_BY_ACTOR
    assert labels(["doc.read"], by_actor) == [
        ("u_3", "Alice Martin <alice@example.com>"),
        ("anon", ""),
        ("bob", "bob@example.com"),
        ("svc", "nightly sync"),
    ]
    # The latest of those the filter matches; a name that would read as
    # more than a name, quoted.
    assert labels(["doc.*"], by_actor)[0] == ("u_3", '"Alice (admin)" <alice@example.com>')
    assert {label for _, label in labels(["doc.*"], audit_service_pb2.COUNT_GROUP_BY_ACTION)} == {
        ""
    }
    # The client's groups carry it too.
    counted = client_for(tenant, "reader").count_events(
        build_filter(actions="doc.read"), group_by="actor"
    )
    assert counted.groups[0] == EventCount("u_3", 2, label="Alice Martin <alice@example.com>")
