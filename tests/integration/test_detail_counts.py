"""Counts by a detail and measures of a detail's numbers (ADR 0161): "calls
per model", "tokens per API key per day", grouped by one top-level key of
`details` (COUNT_GROUP_BY_DETAIL) and measured by the sum, mean or greatest
of the numbers under another (COUNT_MEASURE_DETAIL_*), against a real server
and PostgreSQL; through the clients and `sealtrail stats` (helper-581)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from click.testing import CliRunner

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    EventCount,
    InvalidArgumentError,
    RpcFailedError,
    build_event,
    build_filter,
)
from sealtrail import _cli as cli
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc
from tests.conftest import ServerThread
from tests.lock_waits import until_blocked

# Three days ago, at 00:00 UTC: every event below occurred in the two days after it.
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
RECORDED = build_filter(since=DAY0, until=DAY0 + timedelta(days=2))
# (hours after DAY0, credential id, details) of LLM API calls: gpt-4o's
# tokens 100 and 300; claude's 50 and a text (not measured); one call with
# no model (10 tokens); one whose model is a number, one an object (under
# "" with no model), one with tokens true (no number) and one whose
# `password` (denied by the deployment's rules) is stored redacted.
EVENTS: list[tuple[int, str, dict[str, Any]]] = [
    (1, "key_a", {"model": "gpt-4o", "tokens": 100}),
    (2, "key_a", {"model": "gpt-4o", "tokens": 300}),
    (3, "key_b", {"model": "claude", "tokens": 50}),
    (4, "key_b", {"model": "claude", "tokens": "many"}),
    (25, "key_a", {"tokens": 10}),
    (26, "key_b", {"model": 3, "tokens": True}),
    (27, "key_b", {"model": {"name": "x"}}),
    (28, "key_a", {"model": "gpt-4o", "password": "hunter2", "tokens": 0.5}),
]


def _events() -> list[Any]:
    return [
        build_event(
            action="llm.call",
            actor_id="svc",
            actor_type="api_key",
            credential_kind="api_key",
            credential_id=credential,
            occurred_at=DAY0 + timedelta(hours=hours),
            details=details,
        )
        for hours, credential, details in EVENTS
    ]


@pytest.fixture
def recorded(client_for: Callable[..., AuditClient], tenant: str) -> AuditClient:
    """A reader of this test's tenant, once EVENTS are recorded in it."""
    results = client_for(tenant, "recorder").record_batch(_events())
    assert all(result.error is None for result in results)
    return client_for(tenant, "reader")


@pytest.fixture
def stub(server: ServerThread) -> Iterator[audit_service_pb2_grpc.AuditLogServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield audit_service_pb2_grpc.AuditLogServiceStub(channel)


def _measured(groups: tuple[EventCount, ...]) -> list[tuple[str, int, float, int]]:
    return [(group.key, group.count, group.value, group.measured) for group in groups]


def test_calls_per_model_the_ones_without_under_empty(recorded: AuditClient) -> None:
    counts = recorded.count_events(RECORDED, group_by="detail", group_by_detail="model")
    # A number keyed as the record writes it; an object is no value: under "".
    assert [(g.key, g.count) for g in counts.groups] == [
        ("gpt-4o", 3),
        ("", 2),
        ("claude", 2),
        ("3", 1),
    ]
    assert counts.total == len(EVENTS) and counts.total_groups == 4
    # A key given back in details_equals finds the events counted under it.
    claude = build_filter(
        since=DAY0, until=DAY0 + timedelta(days=2), details_equals={"model": "claude"}
    )
    assert recorded.count_events(claude).total == 2


def test_tokens_per_model_summed_averaged_and_the_greatest(recorded: AuditClient) -> None:
    by_model = {"group_by": "detail", "group_by_detail": "model", "measure_detail": "tokens"}
    summed = recorded.count_events(RECORDED, measure="detail_sum", **by_model)
    # Texts, booleans and absent values are not measured: claude's "many",
    # the number model's true, the object model's none.
    assert _measured(summed.groups) == [
        ("gpt-4o", 3, 400.5, 3),
        ("", 2, 10.0, 1),
        ("claude", 2, 50.0, 1),
        ("3", 1, 0.0, 0),
    ]
    averaged = recorded.count_events(RECORDED, measure="detail_avg", **by_model)
    assert _measured(averaged.groups)[0] == ("gpt-4o", 3, pytest.approx(133.5), 3)
    greatest = recorded.count_events(RECORDED, measure="detail_max", **by_model)
    assert _measured(greatest.groups)[:3] == [
        ("gpt-4o", 3, 300.0, 3),
        ("", 2, 10.0, 1),
        ("claude", 2, 50.0, 1),
    ]


def test_tokens_per_api_key_per_day(recorded: AuditClient) -> None:
    per_key = recorded.count_events(
        RECORDED, group_by="credential", measure="detail_sum", measure_detail="tokens"
    )
    assert _measured(per_key.groups) == [
        ('["api_key","key_a",""]', 4, 410.5, 4),
        ('["api_key","key_b",""]', 4, 50.0, 1),
    ]
    one_key = build_filter(since=DAY0, until=DAY0 + timedelta(days=2), credential_id="key_a")
    per_day = recorded.count_events(
        one_key, group_by="day", measure="detail_sum", measure_detail="tokens"
    )
    day = [(DAY0 + timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%SZ") for d in (0, 1)]
    assert _measured(per_day.groups) == [(day[0], 2, 400.0, 2), (day[1], 2, 10.5, 2)]


def test_a_redacted_key_groups_by_its_placeholder_and_measures_nothing(
    recorded: AuditClient,
) -> None:
    """Records are stored redacted: a count by a denied key shows the
    placeholder the records hold, never the value, and measures no number."""
    counts = recorded.count_events(
        RECORDED,
        group_by="detail",
        group_by_detail="password",
        measure="detail_max",
        measure_detail="password",
    )
    assert _measured(counts.groups) == [("", 7, 0.0, 0), ("[REDACTED:field_name]", 1, 0.0, 0)]


def test_a_sum_past_a_doubles_range_is_infinite_and_fails_nothing(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    huge = [build_event(action="llm.call", actor_id="a", details={"tokens": 1.5e308})] * 2
    assert all(r.error is None for r in client_for(tenant, "recorder").record_batch(huge))
    reader = client_for(tenant, "reader")
    by_action = {"group_by": "action", "measure_detail": "tokens"}
    calls = build_filter(actions="llm.call")  # not the counts' own records
    summed = reader.count_events(calls, measure="detail_sum", **by_action)
    assert [(g.value, g.measured) for g in summed.groups] == [(math.inf, 2)]
    averaged = reader.count_events(calls, measure="detail_avg", **by_action)
    assert [(g.value, g.measured) for g in averaged.groups] == [(1.5e308, 2)]


def test_a_number_no_double_holds_is_not_measured(
    recorded: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A row written straight into the database (the triggers off for the
    setup alone) may hold a number no double holds: it is passed over, as a
    duration is (ADR 0149), and no statement fails on it."""
    sql.execute("SET session_replication_role = replica")
    try:
        sql.execute(
            "UPDATE events SET record = replace(record::text, '\"tokens\":300', '\"tokens\":1e400')"
            " WHERE tenant_id = %s",
            [tenant],
        )
    finally:
        sql.execute("SET session_replication_role = DEFAULT")
    counts = recorded.count_events(
        RECORDED,
        group_by="detail",
        group_by_detail="model",
        measure="detail_sum",
        measure_detail="tokens",
    )
    assert _measured(counts.groups)[0] == ("gpt-4o", 3, 100.5, 2)


@pytest.mark.parametrize(
    ("request_fields", "field", "said"),
    [
        ({"group_by": 17}, "group_by_detail", "give the top-level key"),
        ({"group_by": 1, "group_by_detail": "model"}, "group_by_detail", "group_by"),
        ({"group_by": 17, "group_by_detail": "m" * 65}, "group_by_detail", "the limit is 64"),
        ({"group_by": 17, "group_by_detail": "a\x00b"}, "group_by_detail", "NUL"),
        ({"group_by": 1, "measure": 6}, "measure_detail", "give the top-level key"),
        ({"group_by": 1, "measure": 1, "measure_detail": "tokens"}, "measure_detail", "measure"),
        ({"group_by": 1, "measure": 6, "measure_detail": "t" * 65}, "measure_detail", "64"),
        ({"measure": 6, "measure_detail": "tokens"}, "measure", "set group_by"),
    ],
)
def test_a_detail_missing_or_out_of_place_is_refused_naming_it(
    server: ServerThread,
    tenant: str,
    stub: audit_service_pb2_grpc.AuditLogServiceStub,
    request_fields: dict[str, Any],
    field: str,
    said: str,
) -> None:
    metadata = (("authorization", f"Bearer {server.token(tenant, 'reader')}"),)
    with pytest.raises(grpc.RpcError) as refused:
        stub.CountEvents(
            audit_service_pb2.CountEventsRequest(**request_fields), metadata=metadata, timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(refused.value.details())
    assert f" {field}: " in details and said in details, details
    assert len(details.encode()) <= 100


def test_the_count_is_recorded_with_its_details(recorded: AuditClient) -> None:
    recorded.count_events(
        RECORDED,
        group_by="detail",
        group_by_detail="model",
        measure="detail_sum",
        measure_detail="tokens",
    )
    said = [
        dict(access.details)
        for access in recorded.query(build_filter(actions="audit_log.queried"))
        if access.details["rpc"] == "CountEvents"
    ]
    assert [
        (d["group_by"], d["group_by_detail"], d["measure"], d["measure_detail"]) for d in said
    ] == [("detail", "model", "detail_sum", "tokens")]


def test_a_detail_count_past_its_time_says_to_narrow_the_time_range(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """No index holds details: a count by one reads every matching record,
    under the timeout every count has (SEALTRAIL_COUNT_TIMEOUT)."""
    server = ServerThread(migrated_database_url, count_timeout=0.5, checkpoint_interval=0)
    try:
        with AuditClient(server.target, token=server.token(tenant, "reader")) as reader:
            with sql.transaction():
                sql.execute("LOCK TABLE events_default IN ACCESS EXCLUSIVE MODE")
                with ThreadPoolExecutor(1) as pool:
                    pending = pool.submit(
                        reader.count_events,
                        group_by="detail",
                        group_by_detail="model",
                        measure="detail_sum",
                        measure_detail="tokens",
                    )
                    until_blocked(sql, pending, waiter="sealtrail")
                    with pytest.raises(RpcFailedError) as refused:
                        pending.result(timeout=30)
            assert refused.value.reason == "COUNT_TIMEOUT"
    finally:
        server.close()


def test_the_client_refuses_a_detail_without_its_grouping_or_measure(
    recorded: AuditClient,
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        recorded.count_events(group_by="detail")
    assert [field for field, _ in caught.value.field_violations] == ["group_by_detail"]


async def test_the_async_client_counts_by_a_detail_too(server: ServerThread, tenant: str) -> None:
    async with AsyncAuditClient(server.target, token=server.token(tenant, "recorder")) as writer:
        await writer.record_batch(_events())
    async with AsyncAuditClient(server.target, token=server.token(tenant, "reader")) as reader:
        counts = await reader.count_events(
            RECORDED,
            group_by="detail",
            group_by_detail="model",
            measure="detail_sum",
            measure_detail="tokens",
        )
    assert _measured(counts.groups)[0] == ("gpt-4o", 3, 400.5, 3)


def test_sealtrail_stats_by_a_detail_measuring_another(
    server: ServerThread, recorded: AuditClient, tenant: str
) -> None:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "reader")}
    since = ["--since", DAY0.isoformat(), "--until", (DAY0 + timedelta(days=2)).isoformat()]
    shown = CliRunner().invoke(
        cli.main, ["stats", "--by", "detail:model", "--measure", "sum:tokens", *since], env=env
    )
    assert shown.exit_code == 0, shown.output
    rows = [line.replace("┃", "│").split("│")[1:-1] for line in shown.stdout.splitlines()]
    rows = [[cell.strip() for cell in row] for row in rows]
    assert ["model", "events", "share", "sum of tokens", "measured"] in rows
    assert ["gpt-4o", "3", "37.5%", "400.5", "3"] in rows
    assert ["(none)", "2", "25.0%", "10.0", "1"] in rows
    assert ["3", "1", "12.5%", "-", "0"] in rows

    as_json = CliRunner().invoke(
        cli.main,
        ["stats", "--by", "credential", "--measure", "max:tokens", "--json", *since],
        env=env,
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["groups"][0] == {
        "key": '["api_key","key_a",""]',
        "count": 4,
        "value": 300.0,
        "measured": 4,
    }

    for given, said in [
        (["--by", "detail:"], "--by detail:KEY needs a key"),
        (["--by", "action", "--measure", "sum"], "--measure sum:KEY needs a key"),
        (["--by", "action", "--measure", "p95:tokens"], "p95 takes no key"),
    ]:
        refused = CliRunner().invoke(cli.main, ["stats", *given], env=env)
        assert refused.exit_code == 2 and said in refused.output, refused.output


def test_detail_filters_still_apply(recorded: AuditClient) -> None:
    """The filter's conditions select the events a detail count reads."""
    filtered = build_filter(since=DAY0, until=DAY0 + timedelta(days=2), credential_id="key_b")
    counts = recorded.count_events(
        filtered,
        group_by="detail",
        group_by_detail="model",
        measure="detail_sum",
        measure_detail="tokens",
    )
    assert _measured(counts.groups) == [
        ("claude", 2, 50.0, 1),
        ("", 1, 0.0, 0),
        ("3", 1, 0.0, 0),
    ]


def test_a_key_of_any_characters_is_the_key_named(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    """A key is the SQL's literal, never its text: `%`, quotes and a
    backslash name the detail that holds them."""
    key = "rate%s 'o\"r\\1' %%"
    event = build_event(action="llm.call", actor_id="a", details={key: "x", "n%": 2})
    assert client_for(tenant, "recorder").record_batch([event])[0].error is None
    counts = client_for(tenant, "reader").count_events(
        build_filter(actions="llm.call"),
        group_by="detail",
        group_by_detail=key,
        measure="detail_sum",
        measure_detail="n%",
    )
    assert _measured(counts.groups) == [("x", 1, 2.0, 1)]


def test_a_key_the_tenants_personal_data_rules_deny_groups_by_their_placeholder(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    """The tenant's rules (ADR 0154) redact as the deployment's do: equal
    values or not, every event under one placeholder."""
    client_for(tenant, "admin").set_personal_data_fields(["customer_id"])
    calls = [
        build_event(action="llm.call", actor_id="a", details={"customer_id": c, "tokens": 5})
        for c in ("c1", "c2", "c2")
    ]
    assert all(r.error is None for r in client_for(tenant, "recorder").record_batch(calls))
    counts = client_for(tenant, "reader").count_events(
        build_filter(actions="llm.call"),
        group_by="detail",
        group_by_detail="customer_id",
        measure="detail_sum",
        measure_detail="tokens",
    )
    assert _measured(counts.groups) == [("[REDACTED:personal_data]", 3, 15.0, 3)]
