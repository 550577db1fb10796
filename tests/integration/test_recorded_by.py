"""Every event a caller records names the API token that wrote it
(`Event.recorded_by`, stamped by the server inside the hashed record), whatever
actor it claims; `EventFilter.recorded_by` lists what one token wrote, as a
security team needs after revoking a compromised one (helper-165, G2; ADR 0061)."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from google.protobuf import json_format

from sealtrail import AuditClient, InvalidArgumentError, build_event, build_filter
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2
from sealtrail_server.domain.access import Role
from sealtrail_server.store.tokens import IssuedToken, create_token
from tests.conftest import ServerThread


def _issue(server: ServerThread, tenant: str, name: str, role: Role = Role.RECORDER) -> IssuedToken:
    return server.run(create_token(server.database, tenant_id=tenant, role=role, name=name))


def _stored_record(sql: psycopg.Connection[Any], tenant: str, seq: int) -> dict[str, Any]:
    row = sql.execute(
        "SELECT record, recorded_by::text FROM events WHERE tenant_id = %s AND seq = %s",
        [tenant, seq],
    ).fetchone()
    assert row is not None
    record: dict[str, Any] = json.loads(row[0])
    assert row[1] == record.get("recorded_by", {}).get("token_id")  # the column is the record's
    return record


def test_every_recorded_event_names_the_token_that_wrote_it_whatever_actor_it_claims(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    billing = _issue(server, tenant, "billing svc")
    with AuditClient(server.target, token=billing.secret) as recorder:
        one = recorder.record(action="member.invite", actor_id="ceo", severity="critical").event
        batch = recorder.record_batch(
            [build_event(action="member.remove", actor_id="ceo") for _ in range(2)]
        )
    expected = event_pb2.Recorder(token_id=billing.token_id, token_name="billing svc")
    answered = [one, *(result.event for result in batch if result.event is not None)]
    assert [event.recorded_by for event in answered] == [expected] * 3
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        shown = list(admin.query(build_filter(actions="member.*"), order="oldest"))
        assert [event.recorded_by for event in shown] == [expected] * 3
        assert admin.get_event(one.id).recorded_by == expected
        # Inside the record, hashed with the rest: what Query shows is what was hashed.
        assert admin.verify_log(check_views=True).ok
    assert _stored_record(sql, tenant, one.seq)["recorded_by"] == {
        "token_id": billing.token_id,
        "token_name": "billing svc",
    }


def test_a_caller_cannot_name_another_recorder(
    server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    real = _issue(server, tenant, "")
    framed = _issue(server, tenant, "framed")
    event = build_event(action="member.invite", actor_id="u1")
    event.recorded_by.token_id = framed.token_id
    event.recorded_by.token_name = "framed"
    with AuditClient(server.target, token=real.secret) as recorder:
        stored = recorder.record(event).event
    assert stored.recorded_by == event_pb2.Recorder(token_id=real.token_id)  # no name: none
    assert _stored_record(sql, tenant, stored.seq)["recorded_by"] == {"token_id": real.token_id}


def test_the_filter_lists_what_one_token_wrote_in_query_export_and_stream(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    suspect = _issue(server, tenant, "suspect")
    other = _issue(server, tenant, "other")
    for token, action in ((suspect, "doc.delete"), (other, "doc.read"), (suspect, "doc.share")):
        with AuditClient(server.target, token=token.secret) as recorder:
            recorder.record(action=action, actor_id="u1")
    by_suspect = build_filter(recorded_by=suspect.token_id.upper())  # any UUID case
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        assert [e.action for e in admin.query(by_suspect, order="oldest")] == [
            "doc.delete",
            "doc.share",
        ]
        admin.export(tmp_path / "suspect.csv", format="csv", filter=by_suspect)
        rows = list(csv.DictReader(io.StringIO((tmp_path / "suspect.csv").read_text())))
        assert [
            (r["action"], r["recorded_by_token_id"], r["recorded_by_token_name"]) for r in rows
        ] == [
            ("doc.delete", suspect.token_id, "suspect"),
            ("doc.share", suspect.token_id, "suspect"),
        ]
        # Live: the stream's own matcher applies it to committed events.
        live = admin.stream(by_suspect, after_seq=3)
        with AuditClient(server.target, token=other.secret) as recorder:
            recorder.record(action="doc.read", actor_id="u2")
        with AuditClient(server.target, token=suspect.secret) as recorder:
            recorder.record(action="doc.purge", actor_id="u2")
        first = next(live)
        live.close()  # type: ignore[attr-defined]
        assert (first.action, first.recorded_by.token_id) == ("doc.purge", suspect.token_id)


def test_a_recorded_by_that_is_no_token_id_is_refused_naming_the_field(
    client: AuditClient,
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.query_page(build_filter(recorded_by="billing svc"))
    assert refused.value.field_violations == [("filter.recorded_by", "must be a token id (a UUID)")]


def test_sealtrails_own_records_name_no_recorder(client: AuditClient) -> None:
    client.record(action="doc.read", actor_id="u1")
    list(client.query(build_filter(actions="doc.read")))

    def queried() -> list[event_pb2.Event]:
        return list(client.query(build_filter(actions="audit_log.queried"), limit=1))

    deadline = time.monotonic() + 20
    while not (found := queried()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not found[0].HasField("recorded_by")
    assert found[0].actor.type == event_pb2.ACTOR_TYPE_API_KEY  # the actor says who


def test_a_retry_under_the_tenants_next_token_returns_the_original(
    server: ServerThread, tenant: str
) -> None:
    before, after = _issue(server, tenant, "v1"), _issue(server, tenant, "v2")
    event = build_event(action="invoice.pay", actor_id="u1", idempotency_key="pay-7")
    with AuditClient(server.target, token=before.secret) as recorder:
        first = recorder.record(event).event
    with AuditClient(server.target, token=after.secret) as rotated:
        again = rotated.record(event)
    assert again.deduplicated
    assert again.event == first
    assert again.event.recorded_by.token_id == before.token_id


def test_the_cli_filters_and_shows_the_recorder(
    server: ServerThread, tenant: str, client_for: Callable[..., AuditClient]
) -> None:
    billing = _issue(server, tenant, "billing svc")
    with AuditClient(server.target, token=billing.secret) as recorder:
        recorder.record(action="plan.change", actor_id="u1")
    client_for(tenant).record(action="plan.view", actor_id="u1")  # an admin's: filtered out
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    result = CliRunner().invoke(
        cli.main, ["query", "--recorded-by", billing.token_id, "--action", "plan.*"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "recorded by" in result.output
    assert "plan.change" in result.output and "billing svc" in result.output
    assert "plan.view" not in result.output


def test_the_stamp_does_not_count_against_the_callers_record_limit(
    server: ServerThread, tenant: str
) -> None:
    """An event whose record fits the 64 KiB limit fits whichever token sends
    it: the recorder the server adds is not the caller's to shorten (helper-177)."""
    long_named = _issue(server, tenant, "n" * 256)
    with AuditClient(server.target, token=long_named.secret) as recorder:
        probe = recorder.record(action="doc.big", actor_id="u", details={"x": ""}).event
        stamp = len(json.dumps(json_format.MessageToDict(probe.recorded_by))) + 40
        # Its record, recorder aside, a few bytes under the limit.
        padded = build_event(action="doc.big", actor_id="u", details={"x": "a" * (65536 - 600)})
        assert recorder.record(padded).event.recorded_by.token_name == "n" * 256
        over = build_event(action="doc.big", actor_id="u", details={"x": "a" * (65536 + stamp)})
        with pytest.raises(InvalidArgumentError, match="the limit is 65536"):
            recorder.record(over)
