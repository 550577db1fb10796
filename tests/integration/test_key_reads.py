"""Reads by key (GetEvent, GetInclusionProof) are recorded: once per token and
RPC within a window, before the read answers, and a read whose record fails
fails too (ADR 0040)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, UnavailableError, build_event
from tests.clock import Clock
from tests.conftest import ServerThread, token_id_of
from tests.refused_inserts import inserts_refused

WINDOW_SECONDS = 60


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def timed(migrated_database_url: str, clock: Clock) -> Iterator[ServerThread]:
    """A server on the test's clock that covers reads by key for a minute."""
    server = ServerThread(
        migrated_database_url, clock=clock, key_read_window=WINDOW_SECONDS, checkpoint_interval=0
    )
    try:
        yield server
    finally:
        server.close()


def _key_reads(sql: psycopg.Connection[Any], tenant: str) -> list[tuple[str, dict[str, Any]]]:
    """(actor id, details) of each read-by-key record of `tenant`, in order."""
    rows = sql.execute(
        "SELECT actor_id, record::jsonb -> 'details' FROM events"
        " WHERE tenant_id = %s AND action = 'audit_log.read_by_key' ORDER BY seq",
        [tenant],
    ).fetchall()
    return [(str(actor), dict(details)) for actor, details in rows]


def _recorded_events(timed: ServerThread, tenant: str, count: int) -> list[str]:
    with AuditClient(timed.target, token=timed.token(tenant, "recorder")) as writer:
        results = writer.record_batch(
            [build_event(action="doc.read", actor_id=f"u{i}") for i in range(count)]
        )
    return [result.event.id for result in results if result.event is not None]


def test_reads_by_key_are_recorded_once_per_token_and_rpc_in_a_window(
    timed: ServerThread, tenant: str, sql: psycopg.Connection[Any], clock: Clock
) -> None:
    ids = _recorded_events(timed, tenant, 5)
    first, second = timed.token(tenant, "reader"), timed.token(tenant, "reader")
    with AuditClient(timed.target, token=first) as reader:
        assert [reader.get_event(event_id).id for event_id in ids] == ids
        for seq in range(1, 6):  # walking the log by seq, records included
            assert reader.get_inclusion_proof(seq=seq).record
    with AuditClient(timed.target, token=second) as other:
        other.get_inclusion_proof(event_id=ids[2])
    first_id, second_id = token_id_of(sql, first), token_id_of(sql, second)
    assert _key_reads(sql, tenant) == [
        (first_id, {"rpc": "GetEvent", "first_key": {"id": ids[0]}, "window_seconds": 60}),
        (first_id, {"rpc": "GetInclusionProof", "first_key": {"seq": 1}, "window_seconds": 60}),
        (
            second_id,
            {"rpc": "GetInclusionProof", "first_key": {"event_id": ids[2]}, "window_seconds": 60},
        ),
    ]

    clock.advance(seconds=WINDOW_SECONDS)  # the window has ended: recorded again
    with AuditClient(timed.target, token=first) as reader:
        reader.get_event(ids[4])
        reader.get_event(ids[3])
    clock.advance(seconds=-3600)  # a clock set back starts a window, not stretches one
    with AuditClient(timed.target, token=first) as reader:
        reader.get_event(ids[1])
    assert [details["first_key"] for _, details in _key_reads(sql, tenant)[3:]] == [
        {"id": ids[4]},
        {"id": ids[1]},
    ]
    clock.advance(seconds=3600)


def test_reads_at_once_share_one_record(
    timed: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    ids = _recorded_events(timed, tenant, 16)
    reader = AuditClient(timed.target, token=timed.token(tenant, "reader"))
    with reader, ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda event_id: reader.get_event(event_id).id, ids)) == ids
    assert len(_key_reads(sql, tenant)) == 1


def test_a_read_whose_record_is_refused_fails_and_the_next_records_again(
    timed: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    [event_id] = _recorded_events(timed, tenant, 1)
    reader = AuditClient(timed.target, token=timed.token(tenant, "reader"), max_attempts=1)
    with reader:
        with inserts_refused(sql, "events", tenant, action="audit_log.read_by_key"):
            with pytest.raises(UnavailableError):
                reader.get_event(event_id)
            with pytest.raises(UnavailableError):
                reader.get_inclusion_proof(seq=1)
        assert reader.get_event(event_id).id == event_id
    assert [details["rpc"] for _, details in _key_reads(sql, tenant)] == ["GetEvent"]


def test_a_window_of_zero_records_every_read(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    server = ServerThread(migrated_database_url, key_read_window=0, checkpoint_interval=0)
    try:
        ids = _recorded_events(server, tenant, 3)
        with AuditClient(server.target, token=server.token(tenant, "reader")) as reader:
            for event_id in ids:
                reader.get_event(event_id)
    finally:
        server.close()
    assert [details["first_key"] for _, details in _key_reads(sql, tenant)] == [
        {"id": event_id} for event_id in ids
    ]


def test_a_fractional_window_is_recorded_as_configured(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Rounded down, a window of 0.5 s was recorded as 0, which means "every
    read recorded" (helper-135)."""
    server = ServerThread(migrated_database_url, key_read_window=0.5, checkpoint_interval=0)
    try:
        [event_id] = _recorded_events(server, tenant, 1)
        with AuditClient(server.target, token=server.token(tenant, "reader")) as reader:
            reader.get_event(event_id)
    finally:
        server.close()
    [(_, details)] = _key_reads(sql, tenant)
    [(description,)] = sql.execute(
        "SELECT record::jsonb ->> 'description' FROM events"
        " WHERE tenant_id = %s AND action = 'audit_log.read_by_key'",
        [tenant],
    ).fetchall()
    assert details["window_seconds"] == 0.5 and "in the next 0.5 s" in description
