"""`sealtrail import` against a real server: how it reads its file while it records."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner

from sealtrail import AuditClient, _cli_import, build_event, build_filter
from sealtrail import _cli as cli
from sealtrail import _client as client_module
from sealtrail._convert import message_to_dict
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread
from tests.integration.test_geoip import (
    CALLER,
    GEOIP,
    NONE,
    geo_client_for,  # noqa: F401 (a fixture)
    geo_server,  # noqa: F401 (a fixture)
)
from tests.integration.test_lost_answers import LoseAnswersAfter, losing_client_class, stored

# The fields the round trips' first event carries beside its own (action,
# actor, details): every kind of value a line may hold (every plane's
# characters, controls, a quote, CR LF, a time to the microsecond).
EVERY_KIND_OF_VALUE: Final[dict[str, Any]] = {
    "actor_email": "ops@example.com",
    "actor_display_name": "=Ops",
    "resource_type": "doc",
    "resource_id": "d-1",
    "resource_name": 'N"ame\r\nline',
    "description": "one\ntwo\t\u2028\x85 \ufeff\U0001f600",
    "changes": [("role", "viewer", "admin"), ("limit", 1, 2.5), ("extra", None, {"a": 1})],
    "category": "security",
    "severity": "critical",
    "outcome": "denied",
    "ip": "2001:db8::1",
    "user_agent": 'UA/1.0 ("x")',
    "request_id": "0af76519-16cd-43dd-8448-eb211c80319c",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "country": "DE",
    "occurred_at": datetime(2019, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
}
# What the service assigns an event: a copy recorded elsewhere has its own.
ASSIGNED: Final = ("id", "seq", "receivedAt", "leafHash", "tenantId", "recordedBy")


def as_sent(client: AuditClient, event_filter: event_pb2.EventFilter) -> list[dict[str, Any]]:
    """The events `event_filter` finds, oldest first, as JSON without what the
    service assigns (`ASSIGNED`): the same in a tenant they were imported into."""
    return [
        {key: value for key, value in message_to_dict(event).items() if key not in ASSIGNED}
        for event in client.query(event_filter, order="oldest")
    ]


def test_an_import_reads_its_next_batch_while_the_service_records_the_last(
    server: ServerThread,
    tenant: str,
    client: AuditClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's lines were read, parsed and checked only once the call
    before it had answered, the service idle meanwhile: an import ran at half
    the rate of a plain RecordBatch loop of the same events. The next batch
    is read while a call is in flight: line 4 (not an event, refused as it is
    read) is met while the first batch's call waits for it."""
    met = threading.Event()
    refuse = _cli_import._refuse

    def noting(tally: _cli_import._Tally, number: int, why: str) -> None:
        if number == 4:
            met.set()
        refuse(tally, number, why)

    waited: list[bool] = []

    class Waiting(AuditClient):
        def record_batch(self, events: list[event_pb2.Event]) -> list[object]:  # type: ignore[override]
            if not waited:
                waited.append(met.wait(timeout=5))
            return list(super().record_batch(events))

    monkeypatch.setattr(_cli_import, "_refuse", noting)
    monkeypatch.setattr(client_module, "AuditClient", Waiting)
    event = json.dumps({"action": "import.ahead", "actor": {"id": "u"}})
    lines = tmp_path / "events.ndjson"
    lines.write_text("\n".join([event, event, event, "not json", event]) + "\n")
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    shown = CliRunner().invoke(cli.main, ["import", "--batch-size", "2", str(lines)], env=env)
    assert shown.exit_code == 3, shown.output
    assert waited == [True]
    assert shown.stdout == f"recorded 4 events from {lines}; 1 line refused\n"
    assert shown.stderr.startswith("line 4: not an Event")
    assert sum(1 for _ in client.query(build_filter(actions="import.ahead"))) == 4


def test_an_import_cut_short_and_run_again_with_its_import_id_records_no_line_twice(
    server: ServerThread,
    tenant: str,
    client: AuditClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second batch's call recorded lines 3 and 4 of 5, keyless, its
    every answer lost. There was no resume: imported again (whole, or from
    line 3 as the import invited), lines 1 to 4 or 3 and 4 were recorded
    twice. Lines without a key get ID:LINE, the id printed when the import
    stops; run again with it, each line is recorded once."""
    lose = LoseAnswersAfter("RecordBatch", answered=1)
    monkeypatch.setattr(client_module, "AuditClient", losing_client_class(lose))
    lines = tmp_path / "events.ndjson"
    lines.write_text(
        "".join(
            json.dumps({"action": "import.again", "actor": {"id": f"u{n}"}}) + "\n"
            for n in range(5)
        )
    )
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    cut = CliRunner().invoke(cli.main, ["import", "--batch-size", "2", str(lines)], env=env)
    assert cut.exit_code == 1, cut.output
    said = re.fullmatch(
        f"recorded 2 events from {re.escape(str(lines))}; every line up to 2 was dealt with;"
        " lines 3 to 4, sent when it stopped, may have been recorded; to go on, import it again"
        " with --import-id ([0-9a-f]{32}): no line is recorded twice",
        cut.stderr.splitlines()[0],
    )
    assert said is not None, cut.stderr
    assert stored(client, "import.again") == 4

    monkeypatch.setattr(client_module, "AuditClient", AuditClient)
    again = ["import", "--batch-size", "2", "--import-id", said[1], str(lines)]
    resumed = CliRunner().invoke(cli.main, again, env=env)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout == f"recorded 1 event, 4 events already recorded from {lines}\n"
    assert stored(client, "import.again") == 5
    keys = {e.idempotency_key for e in client.query(build_filter(actions="import.again"))}
    assert keys == {f"{said[1]}:{n}" for n in range(1, 6)}


def test_an_import_refuses_a_whole_number_a_json_number_cannot_carry_exactly(
    server: ServerThread, tenant: str, client: AuditClient, tmp_path: Path
) -> None:
    """details and change values travel as google.protobuf.Value, a double:
    an account number of 17 digits was recorded one off (12345678901234567 as
    12345678901234568), silently, in a log kept as evidence, where
    build_event and `sealtrail record --details` refuse it. Such a line is
    refused, naming its line and where the number stands; 2^53 itself, which
    a double holds, is recorded as it was written."""
    lines = tmp_path / "events.ndjson"
    events = [
        {"action": "import.exact", "actor": {"id": "u"}, "details": {"account": 2**53}},
        {"action": "import.exact", "actor": {"id": "u"}, "details": {"account": 12345678901234567}},
        {"action": "import.exact", "actor": {"id": "u"},
         "changes": [{"field": "limit", "before": 1, "after": -(2**53) - 1}]},
    ]  # fmt: skip
    lines.write_text("".join(json.dumps(event) + "\n" for event in events))
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    shown = CliRunner().invoke(cli.main, ["import", str(lines)], env=env)
    assert shown.exit_code == 3, shown.output
    assert shown.stdout == f"recorded 1 event from {lines}; 2 lines refused\n"
    assert shown.stderr.splitlines() == [
        "line 2: details.account: 12345678901234567 is beyond what a JSON number carries"
        " exactly (±2^53); send it as a string",
        "line 3: changes[0].after: -9007199254740993 is beyond what a JSON number carries"
        " exactly (±2^53); send it as a string",
    ]
    recorded = list(client.query(build_filter(actions="import.exact")))
    assert [dict(event.details) for event in recorded] == [{"account": 2**53}]


def test_an_exports_ndjson_imported_into_another_tenant_arrives_field_for_field(
    server: ServerThread,
    tenant: str,
    client: AuditClient,
    client_for: Callable[..., AuditClient],
    tmp_path: Path,
) -> None:
    """An operator moving a tenant's events to another deployment exports
    them (the file checked against its signed manifest) and imports the
    file there: `sealtrail import` refused an export's NDJSON whole ("SOURCE
    holds stored records"), only `query --format jsonl` was taken. Each record
    arrives as the event it stores, every field the sender gave equal (times
    to the microsecond, whole and fractional numbers, the characters of every
    plane), what the service assigns assigned anew; imported again, none is
    recorded twice; Sealtrail's own records are refused by their line."""
    sent = build_event(
        action="doc.moved",
        actor_id="u-\u00e9\U0001f600",
        actor_type="service",
        details={"n": 83, "f": 1.5, "neg": -1, "big": "x" * 60_000, "deep": {"a": [1, None]}},
        idempotency_key="moved-1",
        **EVERY_KIND_OF_VALUE,
    )
    results = client.record_batch([sent, build_event(action="doc.read", actor_id="u2")])
    assert [result.error for result in results] == [None, None]
    exported = tmp_path / "tenant.ndjson"
    source_env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    out = CliRunner().invoke(
        cli.main, ["export", "--format", "ndjson", "-o", str(exported)], env=source_env
    )
    assert out.exit_code == 0, out.output
    own = len(exported.read_bytes().splitlines())  # 2 events, then the export's own record
    assert own == 3

    other = f"{tenant}-moved"
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(other)}
    shown = CliRunner().invoke(cli.main, ["import", str(exported)], env=env)
    assert shown.exit_code == 3, shown.output
    assert shown.stdout == f"recorded 2 events from {exported}; 1 line refused\n"
    assert shown.stderr.startswith("line 3: INVALID_ARGUMENT: ")
    assert "audit_log.exported" in shown.stderr

    before, after = (
        as_sent(reader, build_filter(actions="doc.*")) for reader in (client, client_for(other))
    )
    assert len(after) == 2 and after == before
    assert after[0]["occurredAt"] == "2019-03-04T05:06:07.890123Z"

    again = CliRunner().invoke(cli.main, ["import", str(exported)], env=env)
    assert again.exit_code == 3, again.output
    assert again.stdout == (
        f"recorded 0 events, 2 events already recorded from {exported}; 1 line refused\n"
    )
    assert sum(1 for _ in client_for(other).query(build_filter(actions="doc.*"))) == 2


def test_a_country_the_exporting_server_located_is_located_again_not_claimed_as_the_callers(
    server: ServerThread,
    geo_server: ServerThread,  # noqa: F811
    tenant: str,
    geo_client_for: Callable[[ServerThread, str], AuditClient],  # noqa: F811
    tmp_path: Path,
) -> None:
    """An export's record of an event the server located (`country_source:
    geoip`) was imported as a country the caller sent: the imported log said
    the caller had located the address. Who located a country is the
    server's to say (output only), as the id and seq are: the importer drops
    such a country with its source and sends the address, which the importing
    server locates in its own GeoIP database, or leaves without a country
    when it has none. A country the caller sent arrives as the caller's."""
    exporting = geo_client_for(geo_server, tenant)
    exporting.record(action="import.where", actor_id="ann", ip="81.2.69.7")  # located: FR
    exporting.record(action="import.where", actor_id="bob", ip="81.2.69.8", country="be")
    exported = tmp_path / "tenant.ndjson"
    env = {"SEALTRAIL_SERVER": geo_server.target, "SEALTRAIL_TOKEN": geo_server.token(tenant)}
    out = CliRunner().invoke(
        cli.main, ["export", "--format", "ndjson", "-o", str(exported)], env=env
    )
    assert out.exit_code == 0, out.output
    sources = [json.loads(line).get("context", {}).get("country_source") for line in
               exported.read_text().splitlines()]  # fmt: skip
    assert sources[:2] == ["geoip", "caller"]

    def imported(target: ServerThread, into: str) -> list[tuple[str, str, int]]:
        env = {"SEALTRAIL_SERVER": target.target, "SEALTRAIL_TOKEN": target.token(into)}
        shown = CliRunner().invoke(cli.main, ["import", str(exported)], env=env)
        assert shown.stdout == f"recorded 2 events from {exported}; 1 line refused\n"
        reader = geo_client_for(target, into)
        return [
            (event.context.ip, event.context.country, event.context.country_source)
            for event in reader.query(build_filter(actions="import.where"), order="oldest")
        ]

    # A server with a GeoIP database locates the address again, as its own.
    assert imported(geo_server, f"{tenant}-geo") == [
        ("81.2.69.7", "FR", GEOIP),
        ("81.2.69.8", "BE", CALLER),
    ]
    # One without: the address, and no country (no one located it there).
    assert imported(server, f"{tenant}-plain") == [
        ("81.2.69.7", "", NONE),
        ("81.2.69.8", "BE", CALLER),
    ]


def test_a_querys_jsonl_imported_into_another_tenant_arrives_field_for_field(
    server: ServerThread,
    tenant: str,
    client: AuditClient,
    client_for: Callable[..., AuditClient],
    tmp_path: Path,
) -> None:
    """What `sealtrail query --format jsonl --order oldest --limit 0` wrote to
    a file, `sealtrail import` records in another tenant (the round trip
    import's help promises): every field the sender gave equal (times to the
    microsecond, whole and fractional numbers, a request's fields, a
    credential, every plane's characters, secrets as redacted when sent),
    what the service assigns
    assigned anew, in the order queried; imported again, none twice."""
    sent = [
        build_event(
            action="rt.moved",
            actor_id="u-\u00e9\U0001f600",
            actor_type="api_key",
            credential_kind="api_key",
            credential_id="key-7",
            credential_hint="…ab12",
            details={"n": 83, "f": 1.5, "neg": -1, "big": 2**53, "deep": {"a": [1, None]}},
            http_method="post",
            http_route="/v1/docs/{id}",
            http_status_code=503,
            duration_ms=12.25,
            idempotency_key="rt-1",
            **EVERY_KIND_OF_VALUE,
        ),
        build_event(action="rt.read", actor_id="u2"),
        build_event(
            action="rt.read",
            actor_id="u3",
            actor_type="api_key",
            description="login with password=hunter22",
            details={"ok": True, "api_key": "sk-live-1234"},
            severity="info",
        ),
    ]
    results = client.record_batch(sent)
    assert [result.error for result in results] == [None, None, None]
    queried = tmp_path / "events.jsonl"
    source_env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    out = CliRunner().invoke(
        cli.main,
        ["query", "--action", "rt.*", "--order", "oldest", "--limit", "0", "--format", "jsonl"],
        env=source_env,
    )
    assert out.exit_code == 0, out.output
    queried.write_text(out.stdout)
    assert len(queried.read_text().splitlines()) == 3

    other = f"{tenant}-queried"
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(other)}
    shown = CliRunner().invoke(cli.main, ["import", str(queried)], env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == f"recorded 3 events from {queried}\n"
    assert shown.stderr == ""

    before, after = (
        as_sent(reader, build_filter(actions="rt.*")) for reader in (client, client_for(other))
    )
    assert len(after) == 3 and after == before
    assert after[0]["occurredAt"] == "2019-03-04T05:06:07.890123Z"
    assert after[0]["details"]["big"] == 2**53
    assert "hunter22" not in json.dumps(after) and "sk-live" not in json.dumps(after)
    mine = list(client_for(other).query(build_filter(actions="rt.*"), order="oldest"))
    assert [event.tenant_id for event in mine] == [other] * 3
    assert mine[0].recorded_by.token_id != ""  # the importer's token, not the sender's
    assert [event.seq for event in mine] == sorted(event.seq for event in mine)

    again = CliRunner().invoke(cli.main, ["import", str(queried)], env=env)
    assert again.exit_code == 0, again.output
    assert again.stdout == f"recorded 0 events, 3 events already recorded from {queried}\n"
    assert sum(1 for _ in client_for(other).query(build_filter(actions="rt.*"))) == 3
