"""The pure parts of forwarding: OCSF mapping, the outbound address policy,
each kind's requests and how answers are read, backoff, sink validation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import ipaddress
import json
import random
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import httpcore
import pytest

from sealtrail_server.domain.ocsf import to_ocsf
from sealtrail_server.domain.sinks import keep_secrets, redacted_destination, validate_sink
from sealtrail_server.forward import egress
from sealtrail_server.forward.destinations import (
    LIMITS,
    MAX_ERROR_TEXT,
    Outgoing,
    PendingEvent,
    Sender,
    answered,
    forbidden_alone,
    requests,
    verdict,
)
from sealtrail_server.forward.egress import (
    RESOLVER_THREADS,
    TENANT_LOOKUPS,
    EgressDenied,
    EgressPolicy,
    OutboundClient,
    Unresolvable,
)
from sealtrail_server.forward.forwarder import BACKOFF_CAP, backoff

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def record(seq: int = 1, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "action": "user.login",
        "actor": {"id": "u-1", "type": "user", "email": "a@example.com"},
        "category": "authentication",
        "context": {"ip": "203.0.113.9", "request_id": "r-1", "trace_id": "t" * 32},
        "description": "Signed in",
        "id": f"00000000-0000-7000-8000-{seq:012d}",
        "occurred_at": "2026-11-30T11:59:00.000000Z",
        "outcome": "success",
        "received_at": "2026-11-30T11:59:01.000000Z",
        "seq": seq,
        "severity": "info",
        "tenant_id": "t-1",
        "v": 1,
    }
    data.update(overrides)
    return data


def pending(data: dict[str, Any], *, ascii_only: bool = True) -> PendingEvent:
    """As stored; `ascii_only=False` writes non-ASCII characters as they are,
    as RFC 8785 does, rather than as \\u escapes."""
    text = json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=ascii_only)
    return PendingEvent(data["seq"], text, hashlib.sha256(b"\0" + text.encode()).digest())


# --- OCSF ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "action", "class_uid", "activity"),
    [
        ("authentication", "user.login", 3002, 1),
        ("authentication", "user.logout", 3002, 2),
        ("authentication", "user.mfa_challenge", 3002, 99),
        ("member", "member.invite", 3001, 1),
        ("member", "member.remove", 3001, 6),
        ("member", "member.role_changed", 3001, 7),
        ("security", "api_key.create", 3004, 1),
        ("configuration", "sso.update", 3004, 3),
        ("data_access", "document.download", 6003, 2),
        ("billing", "invoice.pay", 6003, 99),
        # Names whose verb comes first, the outcome last (a product's own `login.failed`).
        ("authentication", "login.failed", 3002, 1),
        ("authentication", "login.success", 3002, 1),
        ("authentication", "logout.success", 3002, 2),
        ("data_access", "export.completed", 6003, 2),
        # Verbs in the past tense, as products name what happened (`api_key.created`).
        ("security", "api_key.created", 3004, 1),
        ("security", "api_key.deleted", 3004, 4),
        ("member", "member.invited", 3001, 1),
        ("member", "member.removed", 3001, 6),
        ("configuration", "settings.updated", 3004, 3),
        ("authentication", "user.logged_in", 3002, 1),
        ("security", "rate_limit.exceeded", 3004, 99),
    ],
)
def test_ocsf_class_and_activity_follow_category_and_verb(
    category: str, action: str, class_uid: int, activity: int
) -> None:
    event = to_ocsf(record(category=category, action=action), b"\1" * 32)
    assert (event["class_uid"], event["activity_id"]) == (class_uid, activity)
    assert event["type_uid"] == class_uid * 100 + activity
    assert event["category_uid"] == class_uid // 1000


def test_ocsf_keeps_what_it_has_no_place_for() -> None:
    data = record(
        details={"mfa": "totp"},
        changes=[{"field": "role", "before": "a", "after": "b"}],
        outcome="denied",
        severity="critical",
        recorded_by={"token_id": "0190f1c2-5b7e-7d3a-9c41-2f6e8a1b3c5d", "token_name": "svc"},
    )
    event = to_ocsf(data, b"\2" * 32)
    assert event["time"] == int(datetime(2026, 11, 30, 11, 59, tzinfo=UTC).timestamp() * 1000)
    assert event["status_id"] == 2 and event["status_detail"] == "denied"
    assert event["severity_id"] == 5
    assert event["src_endpoint"] == {"ip": "203.0.113.9"}
    assert event["metadata"]["correlation_uid"] == "r-1"
    assert event["metadata"]["uid"] == data["id"] and event["metadata"]["sequence"] == 1
    assert event["actor"]["user"]["email_addr"] == "a@example.com"
    located = to_ocsf(record(context={"ip": "203.0.113.9", "country": "FR"}), b"\3" * 32)
    assert located["src_endpoint"] == {"ip": "203.0.113.9", "location": {"country": "FR"}}
    assert "country_source" not in located["unmapped"]  # not marked: stored before the mark
    # Who located the country (a GeoIP database, or the caller): OCSF's location has no
    # place for it, and without it a SIEM took the server's guess for the caller's word.
    geoip = {"ip": "203.0.113.9", "country": "FR", "country_source": "geoip"}
    marked = to_ocsf(record(context=geoip), b"\3" * 32)
    assert marked["src_endpoint"] == located["src_endpoint"]
    assert marked["unmapped"]["country_source"] == "geoip"
    unmapped = event["unmapped"]
    assert unmapped["details"] == {"mfa": "totp"} and unmapped["changes"] == data["changes"]
    assert unmapped["trace_id"] == "t" * 32 and unmapped["leaf_hash"] == "02" * 32
    assert unmapped["recorded_by"] == data["recorded_by"]


def test_ocsf_maps_the_api_request_and_keeps_its_duration_exact() -> None:
    """An event's HTTP request (ADR 0136) goes where OCSF puts one: the method
    and route in `http_request`, the status in `http_response`; the duration,
    a fraction of a millisecond kept, in `unmapped` (OCSF's are whole ms). A
    finding has no request of its own: all of it is unmapped there."""
    request = {
        "user_agent": "curl/8.5.0",
        "http_method": "GET",
        "http_route": "/v1/templates/{id}",
        "http_status_code": 503,
        "duration_ms": 12.5,
    }
    event = to_ocsf(record(category="api_usage", action="template.read", context=request), b"")
    assert event["http_request"] == {
        "user_agent": "curl/8.5.0",
        "http_method": "GET",
        "url": {"path": "/v1/templates/{id}"},
    }
    assert event["http_response"] == {"code": 503}
    assert event["unmapped"]["duration_ms"] == 12.5
    plain = to_ocsf(record(), b"")
    assert "http_response" not in plain and "duration_ms" not in plain["unmapped"]
    alert = to_ocsf(alert_record(context=request), b"")
    assert "http_request" not in alert and "http_response" not in alert
    assert {key: alert["unmapped"][key] for key in request} == request


@pytest.mark.parametrize(
    ("written", "millis"),
    [("2004-06-24T14:59:40.172000Z", 1088089180172),
     ("2004-09-12T20:38:03.442000Z", 1095021483442),
     ("2026-11-30T11:59:00.999999Z", 1796039940999)],
)  # fmt: skip
def test_ocsf_times_are_the_millisecond_of_the_event(written: str, millis: int) -> None:
    """`time` and `logged_time` were the float seconds times 1000, cut: some
    times (an event recorded, or imported, as of 2004-09-12T20:38:03.442Z)
    came out a millisecond early, 1095021483441."""
    event = to_ocsf(record(occurred_at=written, received_at=written), b"\1" * 32)
    assert event["time"] == millis and event["metadata"]["logged_time"] == millis


def test_ocsf_maps_the_actors_roles_to_the_users_groups() -> None:
    """OCSF's User object has `groups` (Group objects, each named): a SIEM
    asks "what did admins do" there; an actor without roles has none."""
    roles = ["billing", "admin"]
    event = to_ocsf(record(actor={"id": "u-1", "type": "user", "roles": roles}), b"\1" * 32)
    assert event["actor"]["user"]["groups"] == [{"name": "billing"}, {"name": "admin"}]
    assert "roles" not in event["unmapped"]
    plain = to_ocsf(record(actor={"id": "u-1", "type": "user"}), b"\1" * 32)
    assert "groups" not in plain["actor"]["user"]


def test_ocsf_maps_the_credential_to_credential_uid_and_keeps_its_kind_and_hint() -> None:
    """OCSF's User object has `credential_uid` ("the unique identifier of the
    user's credential, e.g. AWS Access Key ID"): a SIEM finds a leaked key's
    events there; its kind and hint, which OCSF has no place for, are unmapped."""
    credential = {"kind": "api_key", "id": "key_8f3a2c", "hint": "a1b2"}
    data = record(
        category="data_access",
        action="document.download",
        actor={"id": "u-1", "type": "user", "credential": credential},
    )
    event = to_ocsf(data, b"\1" * 32)
    assert event["actor"]["user"] == {
        "uid": "u-1", "type_id": 1, "type": "User", "credential_uid": "key_8f3a2c"
    }  # fmt: skip
    assert "session" not in event["actor"]
    assert event["unmapped"]["credential"] == {"kind": "api_key", "hint": "a1b2"}
    # A session's id is also the actor's session.uid; no hint, none unmapped.
    session = {"kind": "session", "id": "sess_42"}
    data = record(actor={"id": "u-1", "type": "user", "credential": session})
    event = to_ocsf(data, b"")
    assert event["actor"]["user"]["credential_uid"] == "sess_42"
    assert event["actor"]["session"] == {"uid": "sess_42"}
    assert event["user"]["credential_uid"] == "sess_42"  # Authentication: who signed in
    assert event["unmapped"]["credential"] == {"kind": "session"}
    # An event without a credential has none of them.
    plain = to_ocsf(record(), b"")
    assert "credential_uid" not in plain["actor"]["user"] and "credential" not in plain["unmapped"]
    # A finding keeps its actor whole under unmapped, credential and all.
    alert = to_ocsf(alert_record(actor={"id": "sealtrail", "type": "system",
                                        "credential": credential}), b"")  # fmt: skip
    assert alert["unmapped"]["actor"]["credential"] == credential


def test_ocsf_account_change_names_the_user_acted_on() -> None:
    data = record(
        category="member",
        action="member.remove",
        resource={"type": "member", "id": "u-9", "name": "Bob"},
    )
    assert to_ocsf(data, b"")["user"] == {"uid": "u-9", "name": "Bob", "type": "member"}


def alert_record(**overrides: Any) -> dict[str, Any]:
    """A `security.alert` as the alert evaluator records it (alerts/evaluator.py)."""
    rule_id = "0192f000-0000-7000-8000-000000000001"
    trigger = "0192f000-0000-7000-8000-000000000042"
    fields: dict[str, Any] = dict(
        action="security.alert",
        category="security",
        severity="warning",
        actor={"id": "sealtrail-server:alerts", "type": "system"},
        context={"ip": "203.0.113.1"},
        description="Alert 'failed logins': at least 5 events within 60 s for ip 203.0.113.1",
        resource={"type": "alert_rule", "id": rule_id, "name": "failed logins"},
        details={
            "rule_id": rule_id,
            "rule": "failed logins",
            "condition": "threshold",
            "trigger_seq": 42,
            "trigger_event_id": trigger,
            "count": 5,
            "window_seconds": 60,
            "group": {"ip": "203.0.113.1"},
            "sink_ids": [],
        },
        idempotency_key=f"alert:{rule_id}:42",
    )
    return record(seq=43, **(fields | overrides))


def test_ocsf_a_sealtrail_alert_is_a_detection_finding() -> None:
    """OCSF 1.3 Detection Finding (2004): finding_info with its uid and title
    (both required in 1.3), the rule as its analytic, the event that set it off
    as a related event; a finding's status is its triage state (New), not the
    Success an activity's status_id 1 would mean."""
    data = alert_record()
    event = to_ocsf(data, b"\4" * 32)
    assert (event["class_uid"], event["class_name"], event["category_uid"]) == (
        2004,
        "Detection Finding",
        2,
    )
    assert (event["activity_id"], event["type_uid"]) == (1, 200401)  # Create
    assert (event["status_id"], event["status"]) == (1, "New")
    assert (event["severity_id"], event["severity"]) == (3, "Medium")
    assert event["finding_info"] == {
        "uid": data["id"],
        "title": data["description"],
        "analytic": {
            "type_id": 1,
            "type": "Rule",
            "uid": data["resource"]["id"],
            "name": "failed logins",
        },
        "related_events": [{"uid": data["details"]["trigger_event_id"]}],
    }
    assert event["evidences"] == [{"src_endpoint": {"ip": "203.0.113.1"}}]
    assert event["message"] == data["description"]
    assert event["metadata"]["uid"] == data["id"] and event["metadata"]["sequence"] == 43
    assert event["time"] == int(datetime(2026, 11, 30, 11, 59, tzinfo=UTC).timestamp() * 1000)
    # Attributes of other classes stay out; what has no place is kept unmapped.
    assert not {"actor", "user", "entity", "api", "src_endpoint", "status_detail"} & set(event)
    unmapped = event["unmapped"]
    assert unmapped["action"] == "security.alert" and unmapped["details"] == data["details"]
    assert unmapped["actor"] == data["actor"] and unmapped["leaf_hash"] == "04" * 32


def test_ocsf_an_alert_without_a_trigger_or_an_address_leaves_them_out() -> None:
    data = alert_record(context={})
    del data["details"]["trigger_event_id"]
    event = to_ocsf(data, b"")
    assert "related_events" not in event["finding_info"] and "evidences" not in event
    # Only Sealtrail records `security.alert` (the action is reserved), whatever its category.
    assert to_ocsf(alert_record(category="system"), b"")["class_uid"] == 2004


# What OCSF 1.3 requires of each class Sealtrail maps to (its `required`
# attributes), and of the objects in them (their `at_least_one` constraints):
# an event without them fails a schema validator (ocsf-validator, a data lake's
# ingestion) however well the rest is mapped.
_OCSF_REQUIRED = {
    3001: ("user",),
    3002: ("user",),
    3004: ("entity",),
    6003: ("actor", "api", "src_endpoint"),
    2004: ("finding_info",),
}
_ENTITY_IDS = ("name", "uid")
_ENDPOINT_IDS = ("ip", "uid", "name", "hostname", "instance_uid", "interface_uid", "interface_name")


def _ocsf_violations(event: dict[str, Any]) -> list[str]:
    """What of OCSF 1.3's required attributes and constraints `event` lacks."""
    found = [
        name
        for name in ("class_uid", "category_uid", "type_uid", "activity_id", "time",
                     "severity_id", "metadata")
        if name not in event
    ]  # fmt: skip
    found += [name for name in _OCSF_REQUIRED[event["class_uid"]] if name not in event]
    entities = [("entity", event.get("entity")), ("user", event.get("user"))]
    entities += [("actor.user", event.get("actor", {}).get("user"))]
    entities += [("resources[]", item) for item in event.get("resources", [])]
    for where, entity in entities:
        if entity is not None and not any(key in entity for key in _ENTITY_IDS):
            found.append(f"{where} without name or uid: {entity}")
    endpoints = [("src_endpoint", event.get("src_endpoint"))]
    endpoints += [("evidences[].src_endpoint", item.get("src_endpoint"))
                  for item in event.get("evidences", [])]  # fmt: skip
    for where, endpoint in endpoints:
        if endpoint is not None and not any(key in endpoint for key in _ENDPOINT_IDS):
            found.append(f"{where} without an ip, name or other identity: {endpoint}")
    if "api" in event and "operation" not in event["api"]:
        found.append("api without operation")
    return found


@pytest.mark.parametrize(
    "data",
    [
        # A caller that gave no address: API Activity's src_endpoint is required.
        record(category="data_access", action="document.download", context={}),
        record(category="billing", action="invoice.pay", context={"request_id": "r-2"}),
        # A country without an address: an endpoint must say which it is.
        record(category="data_access", action="document.share", context={"country": "FR"}),
        record(category="authentication", action="user.login", context={"country": "FR"}),
        # A resource named by its type alone, or none: the entity must have a name or uid.
        record(category="security", action="settings.updated", context={}),
        record(category="configuration", action="sso.update", resource={"type": "sso"}),
        record(category="data_access", action="document.view", resource={"type": "document"}),
        record(category="member", action="member.remove", resource={"type": "member"}),
        alert_record(context={"country": "FR"}),
        alert_record(context={}),
    ],
    ids=lambda data: f"{data['action']}-{sorted(data.get('context', {}))}",
)
def test_ocsf_events_have_what_their_class_requires(data: dict[str, Any]) -> None:
    assert _ocsf_violations(to_ocsf(data, b"\5" * 32)) == []


# --- the outbound address policy ---------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
     "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "224.0.0.1"],
)  # fmt: skip
def test_internal_addresses_are_refused_by_default(address: str) -> None:
    assert not EgressPolicy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("address", "reaches"),
    [("64:ff9b::a9fe:a9fe", "169.254.169.254"), ("2002:a00:1::1", "10.0.0.1"),
     ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),
     ("64:ff9b:1:808:808::", "8.8.8.8 (a /48 translator: refused unless allowed)"),
     ("::7f00:1", "127.0.0.1 (IPv4-compatible)"), ("::ffff:0:7f00:1", "127.0.0.1 (SIIT)"),
     ("fec0::1", "a site-local host")],
)  # fmt: skip
def test_ipv6_that_reaches_an_internal_ipv4_host_is_refused(address: str, reaches: str) -> None:
    # NAT64 (some Python versions call its prefix global), 6to4 and Teredo.
    assert not EgressPolicy().permits(ipaddress.ip_address(address)), reaches
    assert EgressPolicy().permits(ipaddress.ip_address("64:ff9b::808:808"))  # 8.8.8.8
    allowed = EgressPolicy.parse(allow_http=False, allowed="64:ff9b:1::/48", denied="")
    assert allowed.permits(ipaddress.ip_address("64:ff9b:1:808:808::"))


@pytest.mark.parametrize(
    "address",
    ["192.0.0.192", "192.0.0.8", "192.0.0.100", "::ffff:192.0.0.192", "64:ff9b::c000:c0",
     "3fff::1", "5f00::1"],
)  # fmt: skip
def test_special_purpose_ranges_are_refused_whatever_pythons_release(address: str) -> None:
    """IANA's special-purpose ranges that are not globally reachable, which
    older Python releases (3.11.7 among them) count as global: 192.0.0.0/24
    (a cloud's metadata service answers at 192.0.0.192), and ranges assigned
    since, the documentation prefix 3fff::/20 and SRv6's 5f00::/16. Whether
    they were reached depended on the Python the server ran on."""
    assert not EgressPolicy().permits(ipaddress.ip_address(address))


def test_special_purpose_ranges_are_reached_when_allowed_and_their_anycast_is_global() -> None:
    allowed = EgressPolicy.parse(allow_http=False, allowed="192.0.0.192,3fff::/20", denied="")
    for address in ("192.0.0.192", "3fff::1"):
        assert allowed.permits(ipaddress.ip_address(address))
    for anycast in ("192.0.0.9", "192.0.0.10"):  # globally reachable, as IANA lists them
        assert EgressPolicy().permits(ipaddress.ip_address(anycast))


def test_allowed_networks_win_and_denied_networks_refuse_public_addresses() -> None:
    policy = EgressPolicy.parse(allow_http=False, allowed="10.1.0.0/16", denied="203.0.113.0/24")
    assert policy.permits(ipaddress.ip_address("10.1.2.3"))
    assert not policy.permits(ipaddress.ip_address("10.2.0.1"))
    assert not policy.permits(ipaddress.ip_address("203.0.113.7"))
    assert policy.permits(ipaddress.ip_address("8.8.8.8"))
    with pytest.raises(ValueError):
        EgressPolicy.parse(allow_http=False, allowed="10.1.0.0/33", denied="")


def test_a_denied_network_written_as_ipv4_mapped_refuses_its_ipv4_addresses() -> None:
    """A destination is checked as IPv4, mapped or not: a network denied as
    `::ffff:203.0.113.0/120` held none, and its addresses were reached."""
    policy = EgressPolicy.parse(allow_http=False, allowed="", denied="::ffff:203.0.113.0/120")
    assert not policy.permits(ipaddress.ip_address("203.0.113.5"))
    assert not policy.permits(ipaddress.ip_address("::ffff:203.0.113.5"))
    assert policy.permits(ipaddress.ip_address("8.8.8.8"))


def test_plain_http_only_when_allowed() -> None:
    with pytest.raises(EgressDenied, match="https"):
        EgressPolicy().check_scheme("http://siem.example/")
    EgressPolicy(allow_http=True).check_scheme("http://siem.example/")
    EgressPolicy().check_scheme("https://siem.example/")


def test_a_name_resolving_to_an_internal_address_is_refused_without_naming_it() -> None:
    """The answer reaches a tenant's admin: what an internal name resolves to
    is the operator's to read, in the server's log."""
    with pytest.raises(EgressDenied, match=r"^resolves to an internal") as refused:
        asyncio.run(EgressPolicy().resolve("localhost", 443))
    assert "127.0.0.1" not in str(refused.value)
    with pytest.raises(EgressDenied, match=r"^an internal"):
        asyncio.run(EgressPolicy().resolve("127.0.0.1", 443))
    allowed = EgressPolicy.parse(allow_http=False, allowed="127.0.0.0/8,::1/128", denied="")
    assert "127.0.0.1" in asyncio.run(allowed.resolve("localhost", 443))


def test_a_host_no_lookup_can_take_is_unresolvable_not_a_crash() -> None:
    """getaddrinfo raises UnicodeError, no OSError, for a label over 63
    characters or an empty one: it escaped as INTERNAL from CreateSink."""
    for host in ("a..example.com", "x" * 64 + ".example.com"):
        with pytest.raises(Unresolvable, match="cannot resolve"):
            asyncio.run(EgressPolicy().resolve(host, 443))


def test_lookups_in_flight_are_bounded_and_past_the_bound_fail_at_once() -> None:
    """Sink hosts resolve on threads of their own, so a tenant's hosts that
    never answer hold those, not the threads psycopg resolves the database on."""
    busy = [f"t-{n}" for n in range(RESOLVER_THREADS)]
    for tenant in busy:
        egress._take_slot("held.example", tenant)  # as lookups that never end would
    try:
        with pytest.raises(Unresolvable, match="lookups in flight"):
            asyncio.run(EgressPolicy().resolve("localhost", 443))
    finally:
        for tenant in busy:
            egress._give_slot(tenant)
    allowed = EgressPolicy.parse(allow_http=False, allowed="127.0.0.0/8,::1/128", denied="")
    assert "127.0.0.1" in asyncio.run(allowed.resolve("localhost", 443))


def test_one_tenants_lookups_cannot_take_every_resolver_thread() -> None:
    """A tenant whose sinks' name servers never answer held all 8: every other
    tenant's deliveries failed their lookups and backed off."""
    allowed = EgressPolicy.parse(allow_http=False, allowed="127.0.0.0/8,::1/128", denied="")
    for _ in range(TENANT_LOOKUPS):
        egress._take_slot("silent.example", "t-hostile")
    try:
        with pytest.raises(Unresolvable, match="lookups of this tenant"):
            asyncio.run(allowed.resolve("localhost", 443, tenant_id="t-hostile"))
        assert "127.0.0.1" in asyncio.run(allowed.resolve("localhost", 443, tenant_id="t-other"))
    finally:
        for _ in range(TENANT_LOOKUPS):
            egress._give_slot("t-hostile")
    assert egress._in_flight == {}  # every slot given back


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://example.com/événements", "must be ASCII"),
        ("https://exämple.com/h", "must be ASCII"),
        ("https://example.com/a b", "must be ASCII"),
        ("https://a..example.com/h", "labels are 1 to 63"),
        ("https://" + "x" * 64 + ".example.com/h", "labels are 1 to 63"),
        ("https://example.com:0/h", "port 0"),
        ("https://" + ("x" * 63 + ".") * 4 + "com/h", "at most 253 characters"),
    ],
)
def test_urls_no_request_can_carry_are_refused_naming_the_field(url: str, problem: str) -> None:
    """Each passed validation, then failed every delivery with TypeError, no
    state recorded and no backoff, or CreateSink with INTERNAL."""
    [violation] = validate_sink(
        name="x",
        kind="webhook",
        format="sealtrail_json",
        destination={"url": url, "secrets": [SECRET]},
    )
    assert violation.field == "sink.webhook.url" and problem in violation.description


def test_an_elasticsearch_index_over_255_bytes_is_refused() -> None:
    """Elasticsearch takes index names of 255 bytes: 200 "ä" (400 bytes)
    passed validation, and every event was refused at delivery, the backlog
    drained into dead letters (helper-148)."""
    for index, refused in (("ä" * 127, False), ("ä" * 128, True), ("a" * 256, True)):
        violations = validate_sink(
            name="x",
            kind="elasticsearch",
            format="sealtrail_json",
            destination={"url": "https://es.example.com", "index": index},
        )
        assert [v.field for v in violations] == (["sink.elasticsearch.index"] if refused else [])


@pytest.mark.parametrize(
    ("kind", "destination"),
    [
        ("splunk_hec", {"url": "https://splunk.example.com:8088/?x=1", "token": "t"}),
        ("datadog_logs", {"url": "https://http-intake.logs.datadoghq.eu?dd=1", "api_key": "k"}),
        (
            "elasticsearch",
            {"url": "https://es.example.com:9200?routing=a", "index": "audit", "api_key": "k"},
        ),
    ],
)
def test_a_base_url_with_a_query_is_refused(kind: str, destination: dict[str, Any]) -> None:
    """The API's path was added after the query, and the request went to the
    base path: a 2xx there (a proxy) lost the events as delivered (helper-126)."""
    [violation] = validate_sink(
        name="x", kind=kind, format="sealtrail_json", destination=destination
    )
    assert violation.field == f"sink.{kind}.url" and "without a query" in violation.description
    # A webhook's URL is the endpoint itself: its query is sent as given.
    webhook = {"url": "https://hooks.example.com/in?source=audit", "secrets": [SECRET]}
    assert (
        validate_sink(name="x", kind="webhook", format="sealtrail_json", destination=webhook) == []
    )


# --- requests and answers ---------------------------------------------------------


def sender(kind: Any, destination: dict[str, Any], format: Any = "sealtrail_json") -> Sender:
    return Sender("t-1", "s-1", kind, format, destination)


def test_two_sets_of_events_between_the_same_seqs_have_two_webhook_ids() -> None:
    """A filter changed between attempts (or a replay through it) sent other
    events between the same first and last under the id of the first set: a
    receiver deduplicating by it dropped them."""
    webhook = sender("webhook", {"url": "https://h.example/x", "secrets": [SECRET]})
    ids = {
        dict(sent.headers)["webhook-id"]
        for seqs in ((1, 2, 3), (1, 3))
        for sent in requests(webhook, [pending(record(seq)) for seq in seqs], now=NOW)
    }
    assert len(ids) == 2
    again = requests(webhook, [pending(record(seq)) for seq in (1, 2, 3)], now=NOW)
    assert dict(again[0].headers)["webhook-id"] in ids  # the same events: the same id


def test_other_events_at_the_same_seqs_after_a_restore_have_another_webhook_id() -> None:
    """A database restored from an older backup gives its next events the seqs
    of the events lost with it, and the sink sends from its restored cursor:
    the id was made of the sink and the seqs alone, so a receiver that had the
    lost events dropped the new ones as their repeat (docs/operations.md)."""
    webhook = sender("webhook", {"url": "https://h.example/x", "secrets": [SECRET]})
    lost = [pending(record(seq)) for seq in (7, 8)]
    new = [pending(record(seq, id=f"00000000-0000-7000-9000-{seq:012d}")) for seq in (7, 8)]
    [before] = requests(webhook, lost, now=NOW)
    [after] = requests(webhook, new, now=NOW)
    assert dict(before.headers)["webhook-id"] != dict(after.headers)["webhook-id"]
    [again] = requests(webhook, new, now=NOW + timedelta(minutes=5))
    assert dict(again.headers)["webhook-id"] == dict(after.headers)["webhook-id"]  # a retry


def test_webhook_requests_are_signed_with_every_secret_over_id_timestamp_and_body() -> None:
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    events = [pending(record(1)), pending(record(2))]
    [sent] = requests(
        sender("webhook", {"url": "https://h.example/x", "secrets": [SECRET, other]}),
        events,
        now=NOW,
    )
    headers = dict(sent.headers)
    listed = ",".join(f"{event.seq}:{event.leaf_hash.hex()}" for event in events)
    message_id = "msg_s-1_1_2_" + hashlib.sha256(listed.encode()).hexdigest()[:12]
    assert headers["webhook-id"] == message_id
    assert headers["webhook-timestamp"] == str(int(NOW.timestamp()))
    signed = f"{message_id}.{int(NOW.timestamp())}.".encode() + sent.body
    signatures = headers["webhook-signature"].split(" ")
    for key, signature in zip((b"k" * 32, b"o" * 32), signatures, strict=True):
        digest = hmac.new(key, signed, hashlib.sha256).digest()
        assert signature == "v1," + base64.b64encode(digest).decode()
    body = json.loads(sent.body)
    assert body["type"] == "sealtrail.events"
    assert [e["seq"] for e in body["data"]["events"]] == [1, 2] == list(sent.seqs)


def test_requests_keep_to_each_kinds_limits() -> None:
    events = [pending(record(n)) for n in range(1, 2502)]
    sent = requests(sender("datadog_logs", {"api_key": "k"}), events, now=NOW)
    assert [len(r.seqs) for r in sent] == [1000, 1000, 501]
    assert sent[0].url == "https://http-intake.logs.datadoghq.com/api/v2/logs"
    big = [pending(record(n, details={"blob": "x" * 60_000})) for n in range(1, 40)]
    sent = requests(sender("splunk_hec", {"url": "https://s.example", "token": "t"}), big, now=NOW)
    assert all(len(r.body) <= LIMITS["splunk_hec"][1] for r in sent) and len(sent) > 1
    assert [s for r in sent for s in r.seqs] == list(range(1, 40))


@pytest.mark.parametrize(
    ("kind", "destination"),
    [("datadog_logs", {"api_key": "k"}), ("splunk_hec", {"url": "https://s.example", "token": "t"}),
     ("webhook", {"url": "https://h.example", "secrets": [SECRET]})],
)  # fmt: skip
def test_limits_count_the_bytes_sent_not_the_characters(
    kind: Any, destination: dict[str, Any]
) -> None:
    # Quotes escaped in a Datadog message, CJK text three bytes a character in UTF-8:
    # counted as characters, these batches were a tenth over the limit.
    text = '"引用"' * 1000
    events = [pending(record(n, details={"note": text}), ascii_only=False) for n in range(1, 1001)]
    sent = requests(sender(kind, destination), events, now=NOW)
    assert all(len(r.body) <= LIMITS[kind][1] for r in sent) and len(sent) > 1
    assert [s for r in sent for s in r.seqs] == list(range(1, 1001))


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "delivered"), (202, "delivered"), (301, "retry"), (400, "park"), (401, "retry"),
     (403, "retry"), (404, "retry"), (405, "retry"), (407, "retry"), (408, "retry"),
     (409, "park"), (410, "retry"), (413, "park"), (415, "park"), (422, "park"),
     (429, "retry"), (500, "retry"), (503, "retry")],
)  # fmt: skip
def test_answers_are_delivered_retried_or_parked(status: int, outcome: str) -> None:
    [sent] = requests(sender("webhook", {"url": "https://h.example", "secrets": [SECRET]}),
                      [pending(record())], now=NOW)  # fmt: skip
    assert verdict("webhook", sent, status, b"no", {}).outcome == outcome


def test_a_refusal_of_several_events_is_split_and_of_one_parked() -> None:
    """Which of a request's events the destination refuses is found by
    halving it: only an event refused alone is parked."""
    events = [pending(record(n)) for n in (1, 2)]
    [pair] = requests(sender("webhook", {"url": "https://h.example", "secrets": [SECRET]}),
                      events, now=NOW)  # fmt: skip
    [one] = requests(sender("webhook", {"url": "https://h.example", "secrets": [SECRET]}),
                     events[:1], now=NOW)  # fmt: skip
    for status in (400, 409, 413, 415, 422):
        assert verdict("webhook", pair, status, b"no", {}).outcome == "split", status
        assert verdict("webhook", one, status, b"no", {}).outcome == "park", status
    for status in (401, 404, 429, 503):  # the sink's, or the destination's, not the events'
        retried = verdict("webhook", pair, status, b"no", {})
        assert retried.outcome == "retry" and retried.needs_fixing == (status < 429), status
    # A firewall's 403 may be of the body's size: halved, as a 413; alone, held.
    assert verdict("webhook", pair, 403, b"no", {}).outcome == "split"
    assert verdict("webhook", one, 403, b"no", {}).outcome == "retry"


def test_a_refusal_of_the_sinks_credentials_or_url_says_nothing_is_parked() -> None:
    """Its last_error says why the batch waits, even after an answer as long
    as all that is kept of one; and a Retry-After is honoured."""
    [sent] = requests(sender("splunk_hec", {"url": "https://h.example", "token": "t"}),
                      [pending(record())], now=NOW)  # fmt: skip
    for status, what in ((401, "credentials"), (404, "URL")):
        refused = verdict("splunk_hec", sent, status, b"x" * 5000, {"retry-after": "60"})
        assert refused.retry_after == 60.0 and len(refused.error) == MAX_ERROR_TEXT
        assert refused.needs_fixing  # logged as a WARNING: someone must act
        assert refused.error.startswith(f"HTTP {status} from h.example: xxx")
        assert refused.error.endswith(
            f"a refusal of the sink's {what}, not of its events: nothing is parked, and the"
            " batch is retried until the sink or the destination is put right"
        )
    firewalled = verdict("splunk_hec", sent, 403, b"<html>blocked</html>", {})
    assert firewalled.outcome == "retry" and firewalled.error.startswith("HTTP 403")
    assert (
        "or of this event (a web application firewall's rule): no event after it, sent"
        " alone, was taken yet" in firewalled.error
    )


def test_a_403_of_one_event_may_be_of_the_event_unless_a_hec_names_its_token() -> None:
    """A 403 of one event is the events' after it to tell apart (a firewall's
    rule, or the sink's token: ADR 0054), but a Splunk HEC's own 403 names
    its token (code 1, disabled; 4, unknown), and a 403 of several events is
    halved first."""
    hec = sender("splunk_hec", {"url": "https://h.example", "token": "t"})
    [one] = requests(hec, [pending(record())], now=NOW)
    [two] = requests(hec, [pending(record(1)), pending(record(2))], now=NOW)
    assert forbidden_alone("splunk_hec", one, 403, b"<html>Request blocked</html>")
    assert forbidden_alone("splunk_hec", one, 403, b'{"text":"Forbidden","code":9}')
    assert not forbidden_alone("splunk_hec", one, 403, b'{"text":"Invalid token","code":4}')
    assert not forbidden_alone("splunk_hec", one, 403, b'{"text":"Token disabled","code":1}')
    assert not forbidden_alone("splunk_hec", two, 403, b"<html>Request blocked</html>")
    # Halved to find what a firewall refuses, unless the HEC says it is the token.
    assert verdict("splunk_hec", two, 403, b"<html>Request blocked</html>", {}).outcome == "split"
    assert verdict("splunk_hec", two, 403, b'{"code":4}', {}).outcome == "retry"
    assert not forbidden_alone("splunk_hec", one, 401, b"<html>Request blocked</html>")
    assert forbidden_alone("webhook", one, 403, b'{"code":4}')  # HEC's codes are HEC's
    told = verdict("splunk_hec", one, 403, b'{"text":"Invalid token","code":4}', {})
    assert told.error.endswith("a refusal of the sink's credentials, not of its events: nothing"
                               " is parked, and the batch is retried until the sink or the"
                               " destination is put right")  # fmt: skip


def test_a_hecs_400_naming_the_sinks_settings_is_retried() -> None:
    """An index the token may not write to (code 7), or a token wanting a
    data channel (10): every request meets it. A 400 of the events (6, an
    invalid data format; or no code) refuses them."""
    [sent] = requests(sender("splunk_hec", {"url": "https://h.example", "token": "t"}),
                      [pending(record())], now=NOW)  # fmt: skip
    for code in (7, 10, 11):
        body = json.dumps({"text": "no", "code": code}).encode()
        held = verdict("splunk_hec", sent, 400, body, {})
        assert held.outcome == "retry", code
        assert f"a refusal of the sink's settings (HEC code {code})" in held.error
    deep = b"[" * 100_000  # json.loads: RecursionError, not a step failing as a bug
    for body in (
        b'{"text":"Invalid data format","code":6}',
        b"<html>",
        b'{"code":"7"}',
        b"[]",
        deep,
    ):
        assert verdict("splunk_hec", sent, 400, body, {}).outcome == "park", body
    assert verdict("webhook", sent, 400, b'{"code":7}', {}).outcome == "park"


def test_retry_after_is_read() -> None:
    [sent] = requests(sender("webhook", {"url": "https://h.example", "secrets": [SECRET]}),
                      [pending(record())], now=NOW)  # fmt: skip
    assert verdict("webhook", sent, 429, b"", {"retry-after": "7"}).retry_after == 7.0
    for unreadable in ("\xb2", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT", "-5"):
        # "²" passed str.isdigit and failed float(): a traceback every 5 s, no backoff.
        assert verdict("webhook", sent, 429, b"", {"retry-after": unreadable}).retry_after is None
    for huge in ("9" * 30, "9" * 400):  # the longest wait (the forwarder's cap), not none
        assert verdict("webhook", sent, 429, b"", {"retry-after": huge}).retry_after == float(huge)


def test_bulk_item_errors() -> None:
    events = [pending(record(n)) for n in (1, 2, 3)]
    [sent] = requests(sender("elasticsearch", {"url": "https://e.example", "index": "a"}),
                      events, now=NOW)  # fmt: skip

    def answer(*statuses: int) -> bytes:
        items = [{"create": {"status": s, "error": {"type": f"e{s}"}}} for s in statuses]
        return json.dumps({"errors": True, "items": items}).encode()

    assert verdict("elasticsearch", sent, 200, answer(201, 409, 201), {}).refused == ()
    parked = verdict("elasticsearch", sent, 200, answer(201, 400, 201), {})
    assert parked.outcome == "delivered" and [r.seq for r in parked.refused] == [2]
    assert verdict("elasticsearch", sent, 200, answer(201, 429, 400), {}).outcome == "retry"
    # An index the sink may not write to, or none (auto-creation off): the sink's fault.
    for status in (401, 403, 404):
        held = verdict("elasticsearch", sent, 200, answer(400, status, 201), {})
        assert held.outcome == "retry" and "nothing is parked" in held.error
        assert "a refusal of the sink's index (its permissions, or no such index)" in held.error
    assert verdict("elasticsearch", sent, 200, answer(201, 410, 201), {}).refused
    assert verdict("elasticsearch", sent, 200, b"<html>", {}).outcome == "retry"
    assert verdict("elasticsearch", sent, 200, b"[" * 100_000, {}).outcome == "retry"
    # Asked for the fields the verdict reads only: a full answer is ~200 bytes an item.
    assert sent.url == (
        "https://e.example/_bulk"
        "?filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason,error,status"
    )


def test_a_trickled_answer_meets_the_exchange_deadline() -> None:
    """One byte every 0.05 s never trips a read timeout of 0.5 s; the whole
    exchange's deadline (four step timeouts) ends it."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        try:
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.CancelledError):
            writer.close()

    async def run() -> None:
        server = await asyncio.start_server(trickle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        policy = EgressPolicy.parse(allow_http=True, allowed="127.0.0.0/8", denied="")
        client = OutboundClient(policy, timeout=0.5)
        try:
            with pytest.raises(httpcore.ReadTimeout, match="no complete answer within 2 s"):
                await client.post(f"http://127.0.0.1:{port}/", headers=[], body=b"{}")
        finally:
            await client.close()
            server.close()

    asyncio.run(run())


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    chance = random.Random(1)
    for failures in range(12):
        delay = backoff(failures, base=1.0, chance=chance)
        full = min(BACKOFF_CAP, 2.0**failures)
        assert full / 2 <= delay <= full
    assert backoff(100, base=1.0, chance=chance) <= BACKOFF_CAP


# --- sink definitions -------------------------------------------------------------


def test_secrets_are_hidden_and_kept_across_updates() -> None:
    destination = {"url": "https://h.example", "secrets": [SECRET]}
    shown = redacted_destination("webhook", destination)
    assert "secrets" not in shown and shown["secret_hints"] == [SECRET[-4:]]
    kept = keep_secrets("webhook", {"url": "https://new.example"}, destination)
    assert kept == {"url": "https://new.example", "secrets": [SECRET]}


def test_webhook_secrets_need_the_prefix_and_enough_key() -> None:
    short = "whsec_" + base64.b64encode(b"k" * 8).decode()
    violations = validate_sink(
        name="x",
        kind="webhook",
        format="sealtrail_json",
        destination={"url": "https://h.example", "secrets": [short, "whsec_!!", SECRET]},
    )
    assert [v.field for v in violations] == ["sink.webhook.secrets", "sink.webhook.secrets[0]",
                                             "sink.webhook.secrets[1]"]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "destination", "secret"),
    [
        ("webhook", {"url": "https://h.example/x", "secrets": [SECRET]}, SECRET),
        ("splunk_hec", {"url": "https://h.example", "token": 'tok&en<+/"x9'}, 'tok&en<+/"x9'),
        ("datadog_logs", {"url": "https://h.example", "api_key": "dd+k/ey=42"}, "dd+k/ey=42"),
        (
            "elasticsearch",
            {"url": "https://h.example", "index": "audit", "api_key": "RVM6a2V5+/=="},
            "RVM6a2V5+/==",
        ),
    ],
)
def test_an_answer_that_echoes_the_request_never_shows_the_sinks_secret(
    kind: str, destination: dict[str, Any], secret: str
) -> None:
    """A proxy's error page may echo the request's headers: the sink's token,
    key or secret, as sent or percent-, JSON- or HTML-encoded, never reaches
    its errors and dead letters, which its tenant reads (a managed sink's
    secret is the operator's; helper-189), across the cut too."""
    [sent] = requests(sender(kind, destination), [pending(record(1))], now=NOW)
    forms = [
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
        html.escape(secret),
    ]
    for form in forms:
        for cut_at in range(MAX_ERROR_TEXT - len(form), MAX_ERROR_TEXT + 1):
            error = answered(sent, 400, ("p" * cut_at + f"Authorization: {form}").encode())
            assert secret[:6] not in error and form[:6] not in error, (form, cut_at)
        echoed = verdict(kind, sent, 400, f'{{"echo": "{form}"}}'.encode(), {})
        assert secret[:6] not in echoed.error and "…" in echoed.error, form
    if kind == "elasticsearch":
        item = {"create": {"status": 400, "error": {"reason": f"bad header ApiKey {secret}"}}}
        bulk = verdict(kind, sent, 200, json.dumps({"items": [item]}).encode(), {})
        [refused] = bulk.refused
        assert secret[:6] not in refused.error and "ApiKey …" in refused.error
        unreadable = verdict(kind, sent, 200, f"<html>ApiKey {secret}".encode(), {})
        assert secret[:6] not in unreadable.error and "ApiKey …" in unreadable.error


def test_an_answer_that_echoes_the_url_never_shows_its_secrets() -> None:
    """Cut to the error's length first, a secret across the cut kept 23 of its
    24 characters; one echoed decoded (`a%2Bb` as `a+b`), or the URL's user,
    was not recognised (helper-182)."""
    secret = "Xk3ZpQ9vLm2TwRb7Yc4NdE8q"
    url = (
        f"https://user:pw@chat.example/services/T0ABCDEF/B02GHIJKL/{secret}?sig=a1B2c3D4%2Be5F6g7H8"
    )
    sent = Outgoing(url, [], b"x", [1], ("e1",))
    for cut_at in range(MAX_ERROR_TEXT - len(secret), MAX_ERROR_TEXT + 1):
        padding = "p" * (cut_at - len("Cannot POST /services/T0ABCDEF/B02GHIJKL/"))
        body = f"{padding}Cannot POST /services/T0ABCDEF/B02GHIJKL/{secret}".encode()
        error = answered(sent, 404, body)
        assert not any(secret[:n] in error for n in range(8, len(secret) + 1)), cut_at
    echoed = answered(sent, 401, b'{"message":"the sig a1B2c3D4+e5F6g7H8 of user is not valid"}')
    assert "a1B2c3D4+e5F6g7H8" not in echoed and "a1B2c3D4" not in echoed


def test_a_refusal_with_an_empty_answer_says_so_without_a_dangling_colon() -> None:
    """A destination that refuses with no body: the sink's last error and its
    dead letter's read "HTTP 400 from host", not "HTTP 400 from host: "
    (nothing after the colon); one with words keeps them after it."""
    sent = Outgoing("https://hooks.example.com/in", [], b"x", [1], ("e1",))
    assert answered(sent, 400, b"") == "HTTP 400 from hooks.example.com (an empty answer)"
    assert answered(sent, 400, b" \r\n") == "HTTP 400 from hooks.example.com (an empty answer)"
    assert answered(sent, 400, b"no such hook") == "HTTP 400 from hooks.example.com: no such hook"
    parked = verdict("webhook", sent, 400, b"", {})
    assert parked.error == "HTTP 400 from hooks.example.com (an empty answer)", parked


def test_a_bulk_item_refused_without_words_says_so_without_an_empty_quote() -> None:
    """An Elasticsearch item refused with no error: "bulk item HTTP 400 from
    host", not "...from host: \"\"" (the JSON of nothing)."""
    sent = Outgoing("https://es.example.com/_bulk", [], b"x", [7], ("e7",))
    body = json.dumps({"errors": True, "items": [{"index": {"status": 400}}]}).encode()
    [refused] = verdict("elasticsearch", sent, 200, body, {}).refused
    assert refused.error == "bulk item HTTP 400 from es.example.com", refused
    body = json.dumps({"items": [{"index": {"status": 400, "error": {"type": "x"}}}]}).encode()
    [refused] = verdict("elasticsearch", sent, 200, body, {}).refused
    assert refused.error == 'bulk item HTTP 400 from es.example.com: {"type": "x"}', refused
