"""Query shows each event from the whole view stored beside its record (ADR
0025; its caller view merged onto its columns, for an event stored before
there were whole views, ADR 0022): what it shows must be exactly the record
read back, whichever way the view was made, and an event stored without one is
shown from its record."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from psycopg import sql

from sealtrail import AuditClient, SealtrailError, build_event, build_filter
from sealtrail.v1 import event_pb2

ACTIONS = ["view.test", "view.other"]


def _record_each_kind(client: AuditClient) -> list[event_pb2.Event]:
    """Events whose views are made each way: from the request as sent, from
    the body (values normalised, a secret redacted), through RecordBatch."""
    as_sent = build_event(
        action="view.test",
        actor_id="user_1",
        details={"n": 3, "nested": {"list": [1, "x", None, True, {}]}, "empty": []},
        changes=[{"field": "role", "before": "viewer", "after": "admin"}],
        ip="203.0.113.9",
        request_id="8f14e45f-ceea-467f-a9f3-8d0c9e6c2a11",
    )
    normalised = build_event(
        action="view.other", actor_id="user_2", ip="2001:DB8::1", country="nl", details={"f": 2.0}
    )
    redacted = build_event(
        action="view.test", actor_id="user_3", details={"db": {"password": "p4ss", "host": "h"}}
    )
    answers = [client.record(event).event for event in (as_sent, normalised, redacted)]
    answers += [result.event for result in client.record_batch([as_sent, redacted])]
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


_SERVER_FIELDS = ("id", "seq", "tenant_id", "received_at", "leaf_hash")


def _as_stored_before_whole_views(
    conn: psycopg.Connection[Any], tenant: str, seqs: list[int]
) -> None:
    """The events at `seqs` stored as before ADR 0025: the caller's part of
    their view, and no whole view."""
    for seq, whole in conn.execute(
        "SELECT seq, event_view FROM events WHERE tenant_id = %s AND seq = ANY(%s)",
        [tenant, seqs],
    ).fetchall():
        part = event_pb2.Event.FromString(whole)
        for name in _SERVER_FIELDS:
            part.ClearField(name)
        conn.execute(
            "UPDATE events SET caller_view = %s, event_view = NULL"
            " WHERE tenant_id = %s AND seq = %s",
            [part.SerializeToString(), tenant, seq],
        )


@pytest.fixture
def tamper(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser session with triggers off (session_replication_role = replica)."""
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        yield conn


def test_every_event_recorded_through_the_api_is_shown_from_its_view(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    answers = _record_each_kind(client)
    shown = list(client.query(build_filter(actions=ACTIONS), order="oldest"))
    assert shown == answers == [client.get_event(answer.id) for answer in answers]
    assert shown[2].details["db"]["password"] == "[REDACTED:field_name]"
    # Sealtrail's own events (here the access record of that query) too.
    [access] = client.query(build_filter(actions="audit_log.queried"))
    assert access == client.get_event(access.id)
    row = sql.execute(
        "SELECT count(*), count(event_view), count(caller_view) FROM events WHERE tenant_id = %s",
        [tenant],
    ).fetchone()
    assert row is not None
    stored, whole, caller_only = row
    # ... and the second query's access record, and those of the reads by key
    assert stored == whole == len(answers) + 2 + 1
    assert caller_only == 0  # the whole view holds it


def test_events_stored_before_whole_views_are_shown_as_they_were(
    client: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """As events appended before whole views (from their caller view and
    columns) or before any view (from their records) are: each kind on a page
    alone, and mixed."""
    answers = _record_each_kind(client)
    everything = build_filter(actions=ACTIONS)
    seqs = [answer.seq for answer in answers]
    _as_stored_before_whole_views(tamper, tenant, seqs[::2])
    assert list(client.query(everything, order="oldest")) == answers
    _as_stored_before_whole_views(tamper, tenant, seqs[1::2])
    assert list(client.query(everything, order="oldest")) == answers
    tamper.execute(
        "UPDATE events SET caller_view = NULL WHERE tenant_id = %s AND seq = ANY(%s)",
        [tenant, seqs[::2]],
    )
    assert list(client.query(everything, order="oldest")) == answers
    tamper.execute("UPDATE events SET caller_view = NULL WHERE tenant_id = %s", [tenant])
    assert list(client.query(everything, order="oldest")) == answers
    assert list(client.query(everything, page_size=2)) == answers[::-1]


def test_verify_log_checks_views_when_asked(
    client: AuditClient, tenant: str, tamper: psycopg.Connection[Any]
) -> None:
    """A view or column rewritten in the database changes what Query shows, not
    what the log proves: VerifyLog finds it only when asked to check views."""
    answers = _record_each_kind(client)
    checked = client.verify_log(check_views=True)
    assert checked.ok and checked.views_verified == checked.verified_size == len(answers)
    assert client.verify_log().views_verified == 0  # not asked
    seq = answers[2].seq
    where = sql.SQL(" WHERE tenant_id = {} AND seq = {}").format(tenant, seq)
    columns = sql.SQL("event_view, caller_view, id, received_at")

    def row() -> tuple[Any, ...]:
        [stored] = tamper.execute(sql.SQL("SELECT {} FROM events").format(columns) + where)
        return tuple(stored)

    def forged(change: str) -> tuple[str, bool]:
        """VerifyLog's check_views failure with the event's row changed by
        `change`, and whether Query lost the event (could not read its view);
        the row put back after."""
        original = row()
        tamper.execute(sql.SQL("UPDATE events SET ") + sql.SQL(change) + where)
        result = client.verify_log(check_views=True)
        lost = False
        try:
            shown = [e for e in client.query(build_filter(actions=ACTIONS)) if e.seq == seq]
        except SealtrailError as error:
            assert error.code is grpc.StatusCode.DATA_LOSS
            assert f"the stored view of seq {seq} cannot be read" in error.message
            shown, lost = [], True
        tamper.execute(
            sql.SQL("UPDATE events SET ({}) = ROW(%s, %s, %s, %s)").format(columns) + where,
            original,
        )
        assert client.verify_log().ok  # the records were intact throughout
        assert not result.ok and result.failure.seq == seq
        # Every other view was checked, and matched: the walk went on past it.
        assert result.views_verified == result.verified_size - 1
        assert shown != [answers[2]]  # Query shows the change
        return result.failure.reason, lost

    def appended(column: str, **fields: Any) -> str:
        serialized = event_pb2.Event(**fields).SerializeToString().hex()
        return f"{column} = {column} || '\\x{serialized}'::bytea"

    assert forged(appended("event_view", description="nothing to see")) == ("VIEW_MISMATCH", False)
    # A server field set to its default (seq 0: a merge shows it) or another
    # value; an unreadable view.
    assert forged("event_view = event_view || '\\x1000'::bytea") == ("VIEW_MISMATCH", False)
    assert forged(appended("event_view", id=str(uuid.uuid4()))) == ("VIEW_MISMATCH", False)
    assert forged("event_view = '\\xff'::bytea") == ("VIEW_MISMATCH", True)
    assert client.verify_log(check_views=True).ok

    # Stored as before whole views: its caller view, and the columns Query
    # shows id and received_at from.
    _as_stored_before_whole_views(tamper, tenant, [seq])
    assert forged(appended("caller_view", description="nothing to see")) == (
        "VIEW_MISMATCH",
        False,
    )
    assert forged("caller_view = caller_view || '\\x1000'::bytea") == ("VIEW_MISMATCH", False)
    assert forged("id = gen_random_uuid()") == ("VIEW_MISMATCH", False)
    assert forged("received_at = received_at + interval '1 microsecond'") == (
        "VIEW_MISMATCH",
        False,
    )
    assert forged("caller_view = '\\xff'::bytea") == ("VIEW_MISMATCH", True)
    assert client.verify_log(check_views=True).ok

    # A record rewritten after a rewritten view is the finding reported.
    later = sql.SQL(" WHERE tenant_id = {} AND seq = {}").format(tenant, answers[3].seq)
    tamper.execute(sql.SQL("UPDATE events SET " + appended("caller_view", description="x")) + where)
    tamper.execute(sql.SQL("UPDATE events SET record = record || ' '") + later)
    graver = client.verify_log(check_views=True)
    assert (graver.failure.seq, graver.failure.reason) == (answers[3].seq, "LEAF_MISMATCH")
    assert graver.views_verified <= graver.verified_size
