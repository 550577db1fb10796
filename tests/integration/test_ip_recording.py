"""How much of a client's address a tenant's events keep (`ip_recording`,
ADR 0154): truncated to its /24 (IPv4) or /48 (IPv6), or not kept, after the
server located its country from the whole address, which is never stored; a
retry with the same key and the same whole address is the original event;
a network filter still finds a truncated address."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sealtrail import (
    AlreadyExistsError,
    AuditClient,
    InvalidArgumentError,
    build_event,
    build_filter,
)
from sealtrail.v1 import event_pb2, settings_pb2
from tests.conftest import ServerThread
from tests.integration.test_geoip import NETWORKS, write_mmdb

GEOIP = event_pb2.COUNTRY_SOURCE_GEOIP
# A /24 of two countries: an address of its upper half located after its
# truncation (to the lower half's `.0`) would be placed in the wrong one.
SPLIT = {"81.2.70.0/25": "ES", "81.2.70.128/25": "IT"}


@pytest.fixture(scope="module")
def geo_server(
    migrated_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    path: Path = tmp_path_factory.mktemp("geoip") / "country.mmdb"
    write_mmdb(path, {**NETWORKS, **SPLIT})
    with ServerThread(migrated_database_url, geoip_db=path) as running:
        yield running


@pytest.fixture
def geo_client(geo_server: ServerThread, tenant: str) -> Iterator[AuditClient]:
    with AuditClient(geo_server.target, token=geo_server.token(tenant)) as client:
        yield client


def _stored(
    sql: psycopg.Connection[Any], tenant: str, seq: int
) -> tuple[dict[str, Any], str | None]:
    """The stored record's `context` (its address, country and marks) and its `ip` column."""
    row = sql.execute(
        "SELECT record, ip FROM events WHERE tenant_id = %s AND seq = %s", [tenant, seq]
    ).fetchone()
    assert row is not None
    context = json.loads(row[0]).get("context", {})
    kept = {
        k: v for k, v in context.items() if k in ("ip", "country", "country_source", "ip_recording")
    }
    return kept, None if row[1] is None else str(row[1])


def _holding(sql: psycopg.Connection[Any], tenant: str, text: str) -> int:
    row = sql.execute(
        "SELECT count(*) FROM events e WHERE tenant_id = %s AND (strpos(e::text, %s) > 0"
        " OR position(convert_to(%s, 'UTF8') IN e.caller_view) > 0"
        " OR position(convert_to(%s, 'UTF8') IN e.event_view) > 0)",
        [tenant, text, text, text],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_truncated_addresses_keep_their_network_and_country(
    geo_client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    answer = geo_client.set_ip_recording("truncated")
    assert answer.settings.ip_recording == settings_pb2.IP_RECORDING_TRUNCATED
    recorded = geo_client.get_event(answer.event_id)
    assert [(c.field, c.before.string_value, c.after.string_value) for c in recorded.changes] == [
        ("ip_recording", "full", "truncated")
    ]
    v4 = geo_client.record(action="user.login", actor_id="ann", ip="81.2.69.7").event
    assert (v4.context.ip, v4.context.country, v4.context.country_source) == (
        "81.2.69.0",
        "FR",
        GEOIP,
    )
    assert _stored(sql, tenant, v4.seq) == (
        {
            "ip": "81.2.69.0",
            "country": "FR",
            "country_source": "geoip",
            "ip_recording": "truncated",
        },
        "81.2.69.0",
    )
    v6 = geo_client.record(action="user.login", actor_id="bo", ip="2a02:8100:1:2::7").event
    assert (v6.context.ip, v6.context.country) == ("2a02:8100:1::", "JP")
    mapped = geo_client.record(action="user.login", actor_id="cy", ip="::ffff:81.2.69.9").event
    assert (mapped.context.ip, mapped.context.country) == ("81.2.69.0", "FR")
    split = geo_client.record(action="user.login", actor_id="di", ip="81.2.70.200").event
    assert (split.context.ip, split.context.country) == ("81.2.70.0", "IT")  # of the whole
    for whole in ("81.2.69.7", "2a02:8100:1:2::7", "81.2.69.9", "81.2.70.200"):
        assert _holding(sql, tenant, whole) == 0, whole
    # The answer is what was stored, and a network filter finds it.
    assert geo_client.get_event(v4.id) == v4
    found = geo_client.query(build_filter(ip="81.2.69.0/24"))
    assert {event.id for event in found} == {v4.id, mapped.id}


def test_none_keeps_no_address_but_its_country(
    geo_client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    geo_client.set_ip_recording("none")
    sent = geo_client.record(action="user.login", actor_id="ann", ip="81.2.69.7").event
    assert (sent.context.ip, sent.context.country) == ("", "FR")
    assert _stored(sql, tenant, sent.seq) == (
        {"country": "FR", "country_source": "geoip", "ip_recording": "none"},
        None,
    )
    assert _holding(sql, tenant, "81.2.69.") == 0
    assert geo_client.get_event(sent.id) == sent
    assert geo_client.get_tenant_settings().ip_recording == settings_pb2.IP_RECORDING_NONE
    back = geo_client.set_ip_recording("full").settings
    assert back.ip_recording == settings_pb2.IP_RECORDING_FULL
    again = geo_client.record(action="user.login", actor_id="ann", ip="81.2.69.7").event
    assert again.context.ip == "81.2.69.7"  # as before, for events from then on


@pytest.mark.parametrize("recording", ["truncated", "none"])
def test_a_retry_with_the_same_whole_address_is_the_original_event(
    geo_client: AuditClient, recording: str
) -> None:
    geo_client.set_ip_recording(recording)
    event = build_event(action="user.login", actor_id="ann", ip="81.2.69.7")
    event.idempotency_key = f"login-{recording}"
    first = geo_client.record(event)
    retried = geo_client.record(event)
    assert retried.deduplicated and retried.event == first.event
    # An address kept as another's tells them apart no more than the log can.
    near = build_event(action="user.login", actor_id="ann", ip="81.2.69.8")
    near.idempotency_key = event.idempotency_key
    assert geo_client.record(near).event == first.event  # the same /24, or none
    bare = build_event(action="user.login", actor_id="ann")  # no address: another event
    bare.idempotency_key = event.idempotency_key
    with pytest.raises(AlreadyExistsError):
        geo_client.record(bare)
    far = build_event(action="user.login", actor_id="ann", ip="81.2.70.5")
    far.idempotency_key = event.idempotency_key
    if recording == "none":
        assert geo_client.record(far).event == first.event
    else:
        with pytest.raises(AlreadyExistsError):  # another network, another event
            geo_client.record(far)


@pytest.mark.parametrize(("before", "after"), [("full", "truncated"), ("truncated", "none")])
def test_a_retry_across_a_change_of_ip_recording_is_the_original_event(
    geo_client: AuditClient, before: str, after: str
) -> None:
    """As across a change of redaction mode: the first attempt stored the
    address as the setting then said, the retry is reduced as it says now."""
    geo_client.set_ip_recording(before)
    event = build_event(action="user.login", actor_id="ann", ip="81.2.69.7")
    event.idempotency_key = f"login-{before}-{after}"
    first = geo_client.record(event)
    geo_client.set_ip_recording(after)
    retried = geo_client.record(event)
    assert retried.deduplicated and retried.event == first.event


@pytest.mark.parametrize(("first_ip", "then_ip"), [("", "81.2.69.7"), ("81.2.69.0", "81.2.69.7")])
def test_another_address_under_a_key_is_another_event_when_none_was_reduced(
    client: AuditClient, first_ip: str, then_ip: str
) -> None:
    """A tenant that never reduced an address: an event with no address, or
    with a network's `.0` as its whole address, is not what a later request
    with another address under its key would be reduced to (helper-563
    finding 8). Only a record marked reduced is compared so."""
    event = build_event(action="user.login", actor_id="ann", ip=first_ip)
    event.idempotency_key = f"login-{first_ip or 'none'}"
    client.record(event)
    other = build_event(action="user.login", actor_id="ann", ip=then_ip)
    other.idempotency_key = event.idempotency_key
    with pytest.raises(AlreadyExistsError):
        client.record(other)


def test_ip_recording_unspecified_named_in_the_mask_is_full(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    """The zero value means what a tenant that never chose has: full."""
    client = client_for(tenant)
    assert client.get_tenant_settings().ip_recording == settings_pb2.IP_RECORDING_FULL
    client.set_ip_recording("none")
    request = settings_pb2.UpdateTenantSettingsRequest(
        settings=settings_pb2.TenantSettings(ip_recording=settings_pb2.IP_RECORDING_UNSPECIFIED),
    )
    request.update_mask.paths.append("ip_recording")
    answer = client._call(client._stub.UpdateTenantSettings, request)
    assert answer.settings.ip_recording == settings_pb2.IP_RECORDING_FULL
    with pytest.raises(InvalidArgumentError) as refused:
        request.settings.ip_recording = 7  # type: ignore[assignment]  # no such value
        client._call(client._stub.UpdateTenantSettings, request)
    assert [field for field, _ in refused.value.field_violations] == ["settings.ip_recording"]


@pytest.mark.parametrize(("recording", "kept"), [("truncated", "127.0.0.0"), ("none", "")])
def test_sealtrails_own_records_keep_the_callers_address_as_the_tenant_chose(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any], recording: str, kept: str
) -> None:
    """The records Sealtrail keeps of its callers (the settings change that
    chose it, a search's, a token's creation) are the tenant's events: they
    keep of the caller's address what its events do."""
    changed = client.set_ip_recording(recording)
    list(client.query(build_filter(actions="user.login"), limit=1))
    client.create_token("reader", name="r")
    own = [client.get_event(changed.event_id)]
    own += client.query(build_filter(actions=["audit_log.queried", "api_token.created"]))
    assert len(own) == 3
    for record in own:
        assert record.context.ip == kept, record.action
    assert _holding(sql, tenant, "127.0.0.1") == 0
    assert client.set_ip_recording("full").event_id  # from then on, whole again
    list(client.query(build_filter(actions="user.login"), limit=1))
    [again] = client.query(build_filter(actions="audit_log.queried"), limit=1)
    assert again.context.ip == "127.0.0.1"
