"""Alert rules against a model of their documented semantics (docs/alerting.md):
a few hundred events of a few actors and addresses, with controlled receive
and occurrence times (window edges, late events, case variants of actors,
one actor as ADR 0110 groups them, IPv6 /64s and IPv4-mapped addresses),
evaluated by real steps over a real
database; the alerts recorded compared with what the model says, whether
one process evaluates them all, processes take the tenant over between
steps (the windows taken up as kept), or the windows are rebuilt from the
log between steps."""

from __future__ import annotations

import bisect
import ipaddress
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from sealtrail import AuditClient, build_alert_rule, build_event, build_filter
from sealtrail_server.alerts.evaluator import Evaluator
from tests.clock import Clock
from tests.conftest import ServerThread, database_of_its_own
from tests.integration.test_alerting import _appender_of, _stepped, _wait_until_evaluated

SKEW = timedelta(minutes=5)
ACTORS = ("alice", "Alice", "bob", "carol")
ADDRESSES = (
    "203.0.113.5",
    "::ffff:203.0.113.5",  # the same IPv4 address, mapped
    "198.51.100.7",
    "2001:db8::1",
    "2001:DB8::2",  # the same /64, in capitals
    "2001:db8:0:1::1",  # another /64
    "",
)


def _network(ip: str) -> str | None:
    if not ip:
        return None
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


@dataclass
class _Threshold:
    """The documented threshold: `count` events of a group within `window`
    of each other, in one window holding the event judged; quiet for a
    window from the newest counted; an event more than a window and the
    skew before the newest counted passed over; a group keeps its newest
    `count` times."""

    count: int
    window: timedelta
    group_by: str
    newest: datetime | None = None
    times: dict[str, list[datetime]] = field(default_factory=dict)
    quiet: dict[str, datetime] = field(default_factory=dict)

    def key(self, event: dict[str, Any]) -> str | None:
        if self.group_by == "actor":  # as it reads: `Alice` is `alice` (ADR 0110)
            return str(event["actor"]).casefold()
        if self.group_by == "ip":
            return _network(event["ip"])
        return ""

    def observe(self, event: dict[str, Any]) -> tuple[int, str] | None:
        key = self.key(event)
        if key is None:
            return None
        at: datetime = event["occurred_at"]
        self.newest = at if self.newest is None else max(self.newest, at)
        if at < self.newest - self.window - SKEW:
            return None
        times = self.times.setdefault(key, [])
        bisect.insort(times, at)
        best: list[datetime] = []
        for start in times:
            if start <= at <= start + self.window:
                held = [t for t in times if start <= t <= start + self.window]
                if len(held) > len(best):
                    best = held
        del times[: -self.count]
        if key in self.quiet and at < self.quiet[key]:
            return None
        if len(best) < self.count:
            return None
        self.quiet[key] = best[-1] + self.window
        return len(best), key


def _model(events: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """rule name -> trigger seq -> what its alert shows."""
    fired: dict[str, dict[int, dict[str, Any]]] = {
        name: {} for name in ("match", "by_actor", "by_ip", "all", "new_ip", "off_hours")
    }
    thresholds = {
        "by_actor": _Threshold(3, timedelta(seconds=60), "actor"),
        "by_ip": _Threshold(3, timedelta(seconds=60), "ip"),
        "all": _Threshold(5, timedelta(seconds=60), "none"),
    }
    seen: dict[str, set[str]] = {}
    paris = ZoneInfo("Europe/Paris")
    for event in events:
        seq = event["seq"]
        if event["action"] == "secret.read":
            fired["match"][seq] = {}
            local = event["occurred_at"].astimezone(paris)
            if not 9 <= local.hour < 18:
                fired["off_hours"][seq] = {}
            continue
        failed = event["outcome"] == "failure"
        for name, threshold in thresholds.items():
            if name != "by_ip" and not failed:
                continue
            result = threshold.observe(event)
            if result is not None:
                count, key = result
                fired[name][seq] = {"count": count, "key": key}
        network = _network(event["ip"])
        if network is not None:
            known = seen.setdefault(event["actor"], set())
            if network not in known:
                if known:
                    fired["new_ip"][seq] = {"network": network}
                known.add(network)
    return fired


def _events(rng: random.Random, start: datetime, n: int) -> list[dict[str, Any]]:
    """`n` events from `start`: mostly in order, some exactly a window after
    the one before, some late by up to twice the longest reach."""
    events: list[dict[str, Any]] = []
    moment = start
    newest = start
    burst: list[int] = []
    for _ in range(n):
        if not burst and rng.random() < 0.04:
            # One actor from one address at the edges: 3 within exactly a
            # window (60 s, the first and the last), then one exactly a window
            # after the last (as its group's quiet period ends). Popped last first.
            burst = [60, 30, 30, 0]
            actor, ip = rng.choice(ACTORS), rng.choice(ADDRESSES[:-1])
        if burst:
            step = burst.pop()
            moment += timedelta(seconds=step)
            newest = max(newest, moment)
            events.append(
                {
                    "action": "user.login", "outcome": "failure", "actor": actor, "ip": ip,
                    "occurred_at": moment, "received": newest,
                }
            )  # fmt: skip
            continue
        step = rng.choice((0, 1, 2, 3, 5, 8, 13, 20, 30, 60, 61, 90))
        moment += timedelta(seconds=step, microseconds=rng.choice((0, 0, 0, 1)))
        newest = max(newest, moment)
        occurred = moment
        roll = rng.random()
        if roll < 0.12:  # late: within or out of the reaches (25 to 65 minutes)
            occurred = newest - timedelta(seconds=rng.randint(1, 3 * 60 * 60 // 3))
        elif roll < 0.2:
            occurred = newest - timedelta(seconds=rng.randint(1, 90))
        events.append(
            {
                "action": "secret.read" if rng.random() < 0.08 else "user.login",
                "outcome": rng.choice(("failure", "failure", "success")),
                "actor": rng.choice(ACTORS),
                "ip": rng.choice(ADDRESSES),
                "occurred_at": occurred,
                "received": newest,
            }
        )
    return events


def _rules(client: AuditClient) -> dict[str, str]:
    """rule id -> the model's name for it."""
    logins = build_filter(actions="user.login", outcomes="failure")
    made = [
        ("match", build_alert_rule("match", "match", filter=build_filter(actions="secret.read"))),
        (
            "by_actor",
            build_alert_rule(
                "by_actor", "threshold", filter=logins, count=3, window_seconds=60,
                group_by="actor",
            ),
        ),
        (
            "by_ip",
            build_alert_rule(
                "by_ip", "threshold", filter=build_filter(actions="user.login"), count=3,
                window_seconds=60, group_by="ip",
            ),
        ),
        ("all", build_alert_rule("all", "threshold", filter=logins, count=5, window_seconds=60)),
        ("new_ip", build_alert_rule("new_ip", "new_ip", filter=build_filter(actions="user.login"))),
        (
            "off_hours",
            build_alert_rule(
                "off_hours", "off_hours", filter=build_filter(actions="secret.read"),
                time_zone="Europe/Paris", start_hour=9, end_hour=18,
                working_days=range(1, 8),
            ),
        ),
    ]  # fmt: skip
    return {client.create_alert_rule(rule).rule.id: name for name, rule in made}


def _recorded(sql: psycopg.Connection[Any], tenant: str) -> dict[str, dict[int, dict[str, Any]]]:
    rows = sql.execute(
        "SELECT record FROM events WHERE tenant_id = %s AND action = 'security.alert' ORDER BY seq",
        [tenant],
    ).fetchall()
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for (record,) in rows:
        details = json.loads(record)["details"]
        trigger = int(details["trigger_seq"])
        rule = found.setdefault(details["rule_id"], {})
        assert trigger not in rule, "an alert fired twice"
        shown: dict[str, Any] = {}
        if "count" in details:
            group = details.get("group", {})
            shown = {"count": details["count"], "key": next(iter(group.values()), "")}
        elif "network" in details:
            shown = {"network": details["network"]}
        rule[trigger] = shown
    return found


def _record(client: AuditClient, clock: Clock, chunk: list[dict[str, Any]]) -> None:
    """Records `chunk` in one batch, received as late as its latest event."""
    for event in chunk:
        if clock() < event["received"]:
            clock.advance(seconds=(event["received"] - clock()).total_seconds())
    made = client.record_batch(
        [
            build_event(
                action=event["action"], outcome=event["outcome"], actor_id=event["actor"],
                ip=event["ip"], occurred_at=event["occurred_at"],
            )
            for event in chunk
        ]
    )  # fmt: skip
    for event, result in zip(chunk, made, strict=True):
        event["seq"] = result.event.seq


def _compare(url: str, tenant: str, names: dict[str, str], events: list[dict[str, Any]]) -> None:
    with psycopg.connect(url, autocommit=True) as sql:
        recorded = _recorded(sql, tenant)
        fired = dict(
            sql.execute(
                "SELECT id::text, fired FROM alert_rules WHERE tenant_id = %s", [tenant]
            ).fetchall()
        )
    expected = _model(events)
    for rule_id, name in names.items():
        assert recorded.get(rule_id, {}) == expected[name], name
        assert fired[rule_id] == len(expected[name]), name  # as ListAlertRules shows it


@pytest.mark.parametrize("steps", ["one-process", "taken-over", "rebuilt"])
def test_alerts_fire_where_the_documented_semantics_say(
    migrated_database_url: str, tenant: str, steps: str
) -> None:
    """Steps run by the test after each batch of 25 events: by one process;
    by a new process each time (a restart, a lease moved: windows taken up
    as kept); or with the kept windows removed first (rebuilt from the log,
    as after a release that kept none)."""
    clock = Clock()
    with _stepped(migrated_database_url, "alert_model", clock, tenant) as (url, server, client):
        names = _rules(client)
        events = _events(random.Random(293), clock() + timedelta(seconds=1), 300)
        with _appender_of(server) as appender, psycopg.connect(url, autocommit=True) as sql:
            evaluator = Evaluator(server.database, appender)
            assert tenant in server.run(evaluator._claim())
            for first in range(0, len(events), 25):
                _record(client, clock, events[first : first + 25])
                if steps != "one-process":
                    if steps == "rebuilt":
                        sql.execute("DELETE FROM alert_rule_windows WHERE tenant_id = %s", [tenant])
                    server.run(evaluator._release())
                    evaluator = Evaluator(server.database, appender)
                    assert tenant in server.run(evaluator._claim())
                server.run(evaluator._step(tenant))
            server.run(evaluator._release())
        _compare(url, tenant, names, events)


def test_two_processes_evaluating_in_turn_fire_each_alert_once_where_documented(
    migrated_database_url: str, tenant: str
) -> None:
    """Two servers with their own evaluators on one database, events recorded
    through both; the one evaluating stops half way (its windows half full),
    the other takes the tenant over."""
    clock = Clock()
    with database_of_its_own(migrated_database_url, "alert_model_two") as url:
        servers = [ServerThread(url, clock=clock, forward_max_sinks=0) for _ in range(2)]
        clients = [AuditClient(server.target, token=server.token(tenant)) for server in servers]
        try:
            names = _rules(clients[0])
            events = _events(random.Random(2930), clock() + timedelta(seconds=1), 300)
            for index, first in enumerate(range(0, len(events), 25)):
                if first == 150:
                    _wait_until_evaluated(url, tenant)
                    clients[0].close()
                    servers[0].close()
                    del clients[0], servers[0]
                _record(clients[index % len(clients)], clock, events[first : first + 25])
            _wait_until_evaluated(url, tenant)
            _compare(url, tenant, names, events)
        finally:
            for client in clients:
                client.close()
            for server in servers:
                server.close()
