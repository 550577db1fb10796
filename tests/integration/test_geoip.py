"""Callers' countries located on the server (SEALTRAIL_GEOIP_DB, ADR 0134):
an event with `context.ip` and no `context.country` gets its address's
country from a MaxMind DB file, marked COUNTRY_SOURCE_GEOIP inside its hashed
record; a caller's country is kept and marked COUNTRY_SOURCE_CALLER. Real
servers, real MMDB files written with mmdb-writer (helper-410)."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from sealtrail import AuditClient, build_alert_rule, build_event, build_filter
from sealtrail._bundle import write_bundle
from sealtrail._bundle_check import verify_bundle
from sealtrail.tlog import Signer
from sealtrail.v1 import alerting_pb2, audit_service_pb2, audit_service_pb2_grpc, event_pb2
from sealtrail_server.app import Service
from sealtrail_server.domain.event import CORRELATION_FIELDS
from sealtrail_server.geoip import CountryLocator
from tests.conftest import SIGNING_KEY, ServerThread, token_id_of
from tests.integration.test_alerting import (
    alerts,
    fired_by,
    marked,  # noqa: F401 (a fixture)
    rules,  # noqa: F401 (a fixture)
    settle,
)
from tests.rfc6962 import leaf

# Public networks (Python's ipaddress calls the documentation ranges, such as
# 203.0.113.0/24 and 2001:db8::/32, private: they are never located).
FRANCE = "81.2.69.0/24"
JAPAN = "2a02:8100::/24"
NETWORKS = {
    FRANCE: "FR",
    JAPAN: "JP",
    # Networks no client of the public internet comes from: written in the
    # file, and still never located.
    "10.0.0.0/8": "DE",
    "100.64.0.0/10": "DE",
    "127.0.0.0/8": "DE",
    "203.0.113.0/24": "DE",
    "fc00::/7": "DE",
}
GEOIP = event_pb2.COUNTRY_SOURCE_GEOIP
CALLER = event_pb2.COUNTRY_SOURCE_CALLER
NONE = event_pb2.COUNTRY_SOURCE_UNSPECIFIED


def write_mmdb(path: Path, networks: dict[str, str]) -> None:
    """A GeoLite2-Country-like database of `networks` (CIDR -> ISO code),
    moved into place at `path` as geoipupdate does."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    for network, code in networks.items():
        writer.insert_network(IPSet([network]), {"country": {"iso_code": code}})
    written = path.with_name(path.name + ".new")
    writer.to_db_file(str(written))
    os.replace(written, path)


@pytest.fixture(scope="module")
def geo_server(
    migrated_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    path = tmp_path_factory.mktemp("geoip") / "country.mmdb"
    write_mmdb(path, NETWORKS)
    with ServerThread(migrated_database_url, geoip_db=path) as running:
        yield running


@pytest.fixture
def geo_client_for() -> Iterator[Callable[[ServerThread, str], AuditClient]]:
    made: list[AuditClient] = []

    def make(server: ServerThread, tenant: str) -> AuditClient:
        made.append(AuditClient(server.target, token=server.token(tenant)))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def geo_client(
    geo_server: ServerThread,
    geo_client_for: Callable[[ServerThread, str], AuditClient],
    tenant: str,
) -> AuditClient:
    return geo_client_for(geo_server, tenant)


def _stored_context(sql: psycopg.Connection[Any], tenant: str, seq: int) -> dict[str, Any]:
    row = sql.execute(
        "SELECT record FROM events WHERE tenant_id = %s AND seq = %s", [tenant, seq]
    ).fetchone()
    assert row is not None
    context: dict[str, Any] = json.loads(row[0]).get("context", {})
    return {k: v for k, v in context.items() if k not in CORRELATION_FIELDS}


def _shown(client: AuditClient, sent: event_pb2.Event) -> list[tuple[str, int]]:
    """(country, source) of the event `sent` as Query shows it (its stored
    view) and as GetEvent does (its record, read)."""
    [queried] = [e for e in client.query(build_filter(actor=sent.actor.id)) if e.id == sent.id]
    got = client.get_event(sent.id)
    return [(e.context.country, e.context.country_source) for e in (queried, got)]


def test_an_address_is_located_and_marked_as_the_servers_in_the_hashed_record(
    geo_client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    sent = geo_client.record(action="user.login", actor_id="ann", ip="81.2.69.7").event
    assert (sent.context.country, sent.context.country_source) == ("FR", GEOIP)
    assert _stored_context(sql, tenant, sent.seq) == {
        "ip": "81.2.69.7",
        "country": "FR",
        "country_source": "geoip",
    }
    assert _shown(geo_client, sent) == [("FR", GEOIP)] * 2
    record = sql.execute(
        "SELECT record FROM events WHERE tenant_id = %s AND seq = %s", [tenant, sent.seq]
    ).fetchone()
    assert record is not None and leaf(record[0].encode()) == sent.leaf_hash  # marked, hashed
    # An IPv6 address, and an IPv4 address written as IPv6 (::ffff:a.b.c.d).
    v6 = geo_client.record(action="user.login", actor_id="ann", ip="2A02:8100::1").event
    mapped = geo_client.record(action="user.login", actor_id="ann", ip="::ffff:81.2.69.8").event
    assert [(e.context.country, e.context.country_source) for e in (v6, mapped)] == [
        ("JP", GEOIP),
        ("FR", GEOIP),
    ]
    assert geo_client.count_events(build_filter(country="jp"), group_by="country").total == 1
    assert geo_client.verify_log(check_views=True).ok


def test_a_callers_country_is_kept_as_sent_and_marked_as_the_callers(
    geo_client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    sent = geo_client.record(
        action="user.login", actor_id="bob", ip="81.2.69.7", country="de"
    ).event
    assert (sent.context.country, sent.context.country_source) == ("DE", CALLER)
    assert _stored_context(sql, tenant, sent.seq)["country_source"] == "caller"
    assert _shown(geo_client, sent) == [("DE", CALLER)] * 2
    # A caller cannot claim the server located it: the field is output only.
    claimed = build_event(action="user.login", actor_id="bob", ip="10.1.2.3", country="KP")
    claimed.context.country_source = GEOIP
    stored = geo_client.record(claimed).event
    assert (stored.context.country, stored.context.country_source) == ("KP", CALLER)


@pytest.mark.parametrize(
    "ip",
    ["10.1.2.3", "127.0.0.1", "::1", "100.64.0.9", "203.0.113.5", "fd00::5", "169.254.1.1",
     "8.8.8.8", "2001:4860::8888"],
)  # fmt: skip
def test_private_reserved_and_unknown_addresses_get_no_country(
    geo_client: AuditClient, tenant: str, sql: psycopg.Connection[Any], ip: str
) -> None:
    sent = geo_client.record(action="user.login", actor_id="cy", ip=ip).event
    assert (sent.context.country, sent.context.country_source) == ("", NONE)
    assert _stored_context(sql, tenant, sent.seq) == {"ip": ip}
    assert _shown(geo_client, sent) == [("", NONE)] * 2


def test_each_event_of_a_batch_is_located_by_its_own_address(geo_client: AuditClient) -> None:
    events = [
        build_event(action="user.login", actor_id="dee", ip="81.2.69.1"),
        build_event(action="user.login", actor_id="dee", ip="2a02:81ff::2"),
        build_event(action="user.login", actor_id="dee", ip="10.0.0.1"),
        build_event(action="user.login", actor_id="dee", ip="2a02:8100::3", country="NZ"),
        build_event(action="user.login", actor_id="dee"),
    ]
    stored = [result.event for result in geo_client.record_batch(events)]
    assert [(e.context.country, e.context.country_source) for e in stored if e] == [
        ("FR", GEOIP),
        ("JP", GEOIP),
        ("", NONE),
        ("NZ", CALLER),
        ("", NONE),
    ]


def test_a_retry_of_a_located_event_is_the_same_request(geo_client: AuditClient) -> None:
    first = geo_client.record(
        action="user.login", actor_id="eve", ip="81.2.69.9", idempotency_key="login-1"
    )
    again = geo_client.record(
        action="user.login", actor_id="eve", ip="81.2.69.9", idempotency_key="login-1"
    )
    assert again.deduplicated and again.event.seq == first.event.seq
    assert again.event.context.country_source == GEOIP


def test_exports_carry_the_source_and_verify_offline(
    geo_client: AuditClient, tmp_path: Path
) -> None:
    geo_client.record(action="user.login", actor_id="fay", ip="81.2.69.10")
    geo_client.record(action="user.login", actor_id="fay", ip="81.2.69.10", country="BE")
    geo_client.record(action="user.login", actor_id="fay", ip="10.0.0.10")
    geo_client.export(tmp_path / "out.csv", format="csv", filter=build_filter(actor="fay"))
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as exported:
        rows = list(csv.DictReader(exported))
    assert [(r["country"], r["country_source"]) for r in rows] == [
        ("FR", "geoip"),
        ("BE", "caller"),
        ("", ""),
    ]
    geo_client.export(tmp_path / "out.ndjson", filter=build_filter(actor="fay"))
    lines = [json.loads(line) for line in (tmp_path / "out.ndjson").read_text().splitlines()]
    assert [line["context"].get("country_source") for line in lines] == ["geoip", "caller", None]
    bundle = write_bundle(geo_client, tmp_path / "bundle", event_filter=build_filter(actor="fay"))
    assert bundle.count == 3
    verifier = Signer.parse(SIGNING_KEY).verifier.text()
    assert verify_bundle(tmp_path / "bundle", key=verifier).count == 3


def test_a_new_country_rule_fires_on_a_located_country(
    client: AuditClient,
    geo_client: AuditClient,
    rules: Callable[[alerting_pb2.AlertRule], alerting_pb2.AlertRule],  # noqa: F811
    marked: None,  # noqa: F811
) -> None:
    """The caller sends addresses only, as one that cannot locate its users
    does; `client` is the same tenant's on the tests' other server, whose
    evaluator may as well be the one that evaluates."""
    rule = rules(build_alert_rule("unfamiliar place", "new_country"))
    geo_client.record(action="user.login", actor_id="gil", ip="81.2.69.20")  # learnt: FR
    geo_client.record(action="user.login", actor_id="gil", ip="81.2.69.21")  # FR again
    settle(client)
    assert fired_by(client, rule.id) == []
    geo_client.record(action="user.login", actor_id="gil", ip="2a02:8100::20")  # JP
    settle(client)
    [fired] = fired_by(client, rule.id)
    assert (fired["actor_id"], fired["country"]) == ("gil", "JP")


def test_the_servers_own_records_of_calls_are_located_as_its_callers_events_are(
    client: AuditClient,
    migrated_database_url: str,
    tmp_path: Path,
    tenant: str,
    sql: psycopg.Connection[Any],
    rules: Callable[[alerting_pb2.AlertRule], alerting_pb2.AlertRule],  # noqa: F811
    marked: None,  # noqa: F811
) -> None:
    """Sealtrail's own records of calls made to it (audit_log.*, token.*,
    sink.* ...) carry the caller's address and were never located: a
    new-country rule never saw an admin reading the log from a new country.
    They are located as a caller's event is, marked `geoip`. Behind a trusted
    proxy (here the tests' loopback connection) the address is the client's
    it names in X-Forwarded-For; `client`, of the tests' other server, makes
    the rule and may be the one whose evaluator evaluates."""
    path = tmp_path / "country.mmdb"
    write_mmdb(path, NETWORKS)
    rule = rules(build_alert_rule("admin abroad", "new_country"))
    with ServerThread(
        migrated_database_url, geoip_db=path, trusted_proxies="127.0.0.0/8"
    ) as server:
        secret = server.token(tenant, "admin")
        with grpc.insecure_channel(server.target) as channel:
            stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)

            def read_from(ip: str) -> None:
                metadata = [("authorization", f"Bearer {secret}"), ("x-forwarded-for", ip)]
                stub.Query(audit_service_pb2.QueryRequest(), metadata=metadata, timeout=10)

            read_from("81.2.69.40")  # learnt: FR
            read_from("81.2.69.41")  # FR again
            settle(client)
            assert fired_by(client, rule.id) == []
            read_from("2a02:8100::40")  # JP
            settle(client)
    token_id = token_id_of(sql, secret)
    rows = sql.execute(
        "SELECT record FROM events WHERE tenant_id = %s AND action = 'audit_log.queried'"
        " AND record::jsonb #>> '{actor,id}' = %s ORDER BY seq",
        [tenant, token_id],
    ).fetchall()
    assert [
        {
            k: v
            for k, v in json.loads(row[0])["context"].items()
            if k not in (*CORRELATION_FIELDS, "user_agent")
        }
        for row in rows
    ] == [
        {"ip": "81.2.69.40", "country": "FR", "country_source": "geoip"},
        {"ip": "81.2.69.41", "country": "FR", "country_source": "geoip"},
        {"ip": "2a02:8100::40", "country": "JP", "country_source": "geoip"},
    ]
    [fired] = fired_by(client, rule.id)
    assert (fired["actor_id"], fired["country"]) == (token_id, "JP")
    assert client.verify_log(check_views=True).ok


def test_a_replaced_database_is_used_and_a_broken_one_kept_out(
    migrated_database_url: str,
    tmp_path: Path,
    tenant: str,
    geo_client_for: Callable[[ServerThread, str], AuditClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MaxMind updates weekly: the file is looked at again (here at every
    lookup; 60 s apart by default) and a new version used; one that cannot
    be read leaves the one in use, said once in the log."""
    path = tmp_path / "country.mmdb"
    write_mmdb(path, NETWORKS)
    with ServerThread(migrated_database_url, geoip_db=path, geoip_check_seconds=0) as server:
        client = geo_client_for(server, tenant)

        def country(ip: str = "81.2.69.30") -> str:
            return client.record(action="user.login", actor_id="hal", ip=ip).event.context.country

        def until(expected: str) -> None:
            """A lookup begins the look at the file, in a thread; lookups are
            answered by the version in use until the new one is swapped in."""
            deadline = time.monotonic() + 30
            while (answered := country()) != expected:
                assert time.monotonic() < deadline, answered

        def said() -> list[str]:
            """The warnings: an earlier test of the process may have let the
            logger's INFO through ("opened the new version"), caught too."""
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "sealtrail_server.geoip" and r.levelno >= logging.WARNING
            ]

        assert country() == "FR"
        write_mmdb(path, {**NETWORKS, FRANCE: "BE"})
        until("BE")
        caplog.set_level(logging.WARNING, logger="sealtrail_server.geoip")
        broken = path.with_name("broken")
        broken.write_bytes(b"not a MaxMind DB, truncated by a failed download")
        os.replace(broken, path)
        deadline = time.monotonic() + 30
        while not said():
            assert country() == "BE" and time.monotonic() < deadline
        assert [country(), country()] == ["BE", "BE"]
        assert len(said()) == 1 and "SEALTRAIL_GEOIP_DB" in said()[0], said()
        path.unlink()
        assert country() == "BE"
        write_mmdb(path, {**NETWORKS, FRANCE: "LU"})
        until("LU")


def test_a_lookup_during_a_reload_is_answered_by_the_old_version_and_the_loop_runs(
    tmp_path: Path,
) -> None:
    """The copy and the open of a new version run in a thread: here the new
    file is a pipe that gives the new version's bytes only when told, the
    copy held meanwhile. Lookups during it are answered by the version in
    use, and the event loop runs on: it beats 20 times while the copy is
    held, and only then lets the copy go (on the loop, a lookup waited out
    the whole copy, 50 ms for GeoLite2 City: here the feeder's 10 s, its
    release never given). Judged by who released the copy, not by a ratio
    of times, which a loaded machine's scheduling can upset."""
    path = tmp_path / "country.mmdb"
    write_mmdb(path, NETWORKS)
    new = tmp_path / "new.mmdb"
    write_mmdb(new, {**NETWORKS, FRANCE: "BE"})
    now = [0.0]
    locator = CountryLocator(path, check_seconds=60, clock=lambda: now[0])
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    os.replace(pipe, path)
    copying, release = threading.Event(), threading.Event()
    released: list[bool] = []

    def feed() -> None:
        with path.open("wb") as written:  # once the reload opens the pipe
            copying.set()
            # False if the 10 s ran out: on the loop, the first lookup waited it out.
            released.append(release.wait(timeout=10))
            written.write(new.read_bytes())

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    async def run() -> list[str | None]:
        ticks: list[float] = []

        async def heartbeat() -> None:
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.001)

        beating = asyncio.create_task(heartbeat())
        now[0] = 60.0
        answers = [locator.country("81.2.69.30")]  # which begins the reload
        assert await asyncio.to_thread(copying.wait, 10)
        beats = len(ticks)
        while len(ticks) < beats + 20:  # the copy held while the loop beats 20 times
            answers.append(locator.country("81.2.69.30"))
            await asyncio.sleep(0.001)
        release.set()
        deadline = time.monotonic() + 30
        while locator.country("81.2.69.30") != "BE":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        beating.cancel()
        return answers

    try:
        answers = asyncio.run(run())
    finally:
        release.set()
        feeder.join(timeout=10)
        locator.close()
    assert set(answers) == {"FR"} and len(answers) > 20, answers
    assert released == [True], "the loop did not run while the copy was held"


def test_a_missing_or_unreadable_database_refuses_the_start(
    geo_server: ServerThread, migrated_database_url: str, tmp_path: Path
) -> None:
    not_mmdb = tmp_path / "GeoLite2-Country.mmdb"
    not_mmdb.write_text("<html>403 Forbidden</html>", encoding="utf-8")
    for path, why in (
        (tmp_path / "missing.mmdb", "missing.mmdb: no such file"),
        (not_mmdb, "GeoLite2-Country.mmdb: not a readable MaxMind DB file"),
        (tmp_path, "not a readable MaxMind DB file"),
    ):
        refused = Service(
            replace(geo_server.settings, geoip_db=path, listen="127.0.0.1:0"),
            database_url=geo_server.settings.database_url,
            owner_database_url=migrated_database_url,
        )
        with pytest.raises(SystemExit) as stopped:
            asyncio.run(refused.start())
        said = str(stopped.value)
        assert said.startswith("SEALTRAIL_GEOIP_DB: ") and why in said, said


def test_an_alert_carries_where_its_trigger_came_from(
    client: AuditClient,
    geo_client: AuditClient,
    rules: Callable[[alerting_pb2.AlertRule], alerting_pb2.AlertRule],  # noqa: F811
    marked: None,  # noqa: F811
) -> None:
    """A `security.alert` carried its trigger's address, not its country nor
    who located it: its chat line, page and mail said nothing of where the
    trigger came from. Both are copied as the address is: a country the
    server located stays marked as the server's, a caller's as the caller's."""
    rule = rules(build_alert_rule("somewhere new", "new_country"))
    geo_client.record(action="user.login", actor_id="ida", ip="81.2.69.30")  # learnt: FR
    geo_client.record(action="user.login", actor_id="ida", ip="2a02:8100::30")  # JP, located
    geo_client.record(action="user.login", actor_id="ida", ip="81.2.69.31", country="BE")
    settle(client)
    fired = [a for a in alerts(client) if a.resource.id == rule.id]
    assert [(a.context.ip, a.context.country, a.context.country_source) for a in fired] == [
        ("2a02:8100::30", "JP", GEOIP),
        ("81.2.69.31", "BE", CALLER),
    ]
    assert client.verify_log(check_views=True).ok
