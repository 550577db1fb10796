"""Spike rules grouped by credential, IP or actor against a real server (ADR
0147): each group's window against that group's own baseline, firing for that
group alone, once a window; a new group (a key never used before) fires at
min_count once the tenant has history; the groups judged a window are capped,
and a rule's grouping is refused when unknown and recorded when changed.
Events are backdated into windows a day ago, as test_spike_alerts places its."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg.sql
import pytest
from google.protobuf import json_format
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sealtrail import AuditClient, InvalidArgumentError, build_event, build_filter
from sealtrail.v1 import alerting_pb2
from sealtrail_server.alerts.evaluator import MAX_SPIKE_GROUPS, Evaluator
from sealtrail_server.domain.alerts import (
    CASED_SAMPLE,
    ID_SPACES,
    actor_group,
    folded_apart,
    lowers_as_actor_group,
)
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.store.alerts import (
    ID_FOLD,
    LOWERED_SAMPLE,
    SpikeGroupCounts,
    SpikeGroupsAsked,
    spike_forms_statement,
    spike_group_counts,
    spike_groups_statement,
)
from sealtrail_server.store.database import Database
from tests.alerts_cli import alerts_cli
from tests.conftest import ServerThread, database_of_its_own
from tests.integration.test_alerting import (
    _appender_of,
    alerts,
    fired_by,
    json_details,
    marked,
    own_sql,
    rules,
    settle,
    unevaluated,
)
from tests.integration.test_count_plans import _plan
from tests.integration.test_spike_alerts import BASELINE, SPIKE, SPIKE_TEXT, WINDOW, spike_rule
from tests.service_login import service_login_url
from tests.unit.test_older_release_conditions import released_not_understood

__all__ = ["marked", "own_sql", "rules", "unevaluated"]  # fixtures

API = build_filter(actions="api.request")


def calls(client: AuditClient, window: int, count: int, key: str, **more: Any) -> None:
    """`count` API requests with the key `key` spread over the window `window`
    windows after SPIKE's (negative: one of the baseline's)."""
    start = SPIKE + timedelta(seconds=window * WINDOW)
    results = client.record_batch([
        build_event(
            action="api.request", actor_id="svc", actor_type="api_key",
            occurred_at=start + timedelta(seconds=n * (WINDOW - 1) / max(count, 1)),
            credential_kind="api_key", credential_id=key, credential_hint=key[-4:], **more,
        )
        for n in range(count)
    ])  # fmt: skip
    assert [r.error for r in results if r.error is not None] == []


def test_a_keys_burst_fires_for_it_alone_while_the_tenants_steady_traffic_does_not(
    client: AuditClient, rules: Any, marked: None
) -> None:
    grouped = rules(spike_rule(filter=API, group_by="credential", min_count=10))
    whole = rules(spike_rule(filter=API, min_count=10))
    for window in range(-BASELINE, 1):
        calls(client, window, 40, "key_busy_0001")  # the tenant's usual traffic, steady
        calls(client, window, 2, "key_leak_0002")
    calls(client, 0, 9, "key_leak_0002")  # 11 in the window: 5.5x its average of 2
    settle(client)
    [fired] = fired_by(client, grouped.id)
    assert fired["group"] == {
        "credential": {"kind": "api_key", "id": "key_leak_0002", "hint": "0002"}
    }
    assert fired["count"] == 10 and fired["baseline_average"] == 2.0
    assert fired["window_start"] == SPIKE_TEXT and fired["baseline_windows"] == BASELINE
    [alert] = [event for event in alerts(client) if event.resource.id == grouped.id]
    assert "for credential api_key key_leak_0002 ...0002" in alert.description
    assert "its average 2.0 of the 6 windows before" in alert.description
    # The tenant's whole count, 51 against an average of 42, fires nothing:
    # the burst drowns in it, as it did before grouping.
    assert fired_by(client, whole.id) == []
    calls(client, 0, 20, "key_leak_0002")  # the burst goes on: once a window a group
    settle(client)
    assert len(fired_by(client, grouped.id)) == 1


def test_a_key_never_used_before_fires_at_min_count_once_the_tenant_has_history(
    client: AuditClient, rules: Any, marked: None
) -> None:
    rule = rules(spike_rule(filter=API, group_by="credential", min_count=8))
    calls(client, 0, 7, "key_new_1111")  # no history at all: nothing fires
    settle(client)
    assert fired_by(client, rule.id) == []
    for window in range(-BASELINE, 0):
        calls(client, window + 1, 3, "key_old_2222")  # history in the next window's baseline
    calls(client, 1, 8, "key_new_3333")  # never used in the baseline: average 0, fires at 8
    settle(client)
    [fired] = fired_by(client, rule.id)
    assert fired["group"]["credential"]["id"] == "key_new_3333"
    assert fired["count"] == 8 and fired["baseline_average"] == 0.0


def test_by_ip_and_by_actor_folded_each_group_against_its_own(
    client: AuditClient, rules: Any, marked: None
) -> None:
    by_ip = rules(spike_rule(filter=API, group_by="ip", min_count=5))
    by_actor = rules(spike_rule(filter=API, group_by="actor", min_count=5))
    for window in range(-BASELINE, 0):
        calls(client, window, 1, "key_v6_1", ip="2001:db8:1:2::9")
    start = SPIKE + timedelta(seconds=1)
    for n in range(6):  # one /64, one actor typed three ways
        client.record(
            action="api.request", actor_id=("Admin", "ADMIN", "admin")[n % 3],
            ip=f"2001:db8:1:2::{n + 1:x}", occurred_at=start + timedelta(seconds=n),
        )  # fmt: skip
    settle(client)
    [ip] = fired_by(client, by_ip.id)
    assert ip["group"] == {"ip": "2001:db8:1:2::/64"}
    assert ip["count"] == 5 and ip["baseline_average"] == 1.0  # the line: 5 x 1, and min_count
    [actor] = fired_by(client, by_actor.id)
    assert actor["group"] == {"actor": "admin"} and actor["count"] == 5


def said_by(client: AuditClient, window: int, forms: list[str]) -> None:
    """An API request by each actor id of `forms`, spread over the window
    `window` windows after SPIKE's (negative: one of the baseline's)."""
    start = SPIKE + timedelta(seconds=window * WINDOW)
    results = client.record_batch([
        build_event(
            action="api.request", actor_id=form, actor_type="user",
            occurred_at=start + timedelta(seconds=n * (WINDOW - 1) / len(forms)),
        )
        for n, form in enumerate(forms)
    ])  # fmt: skip
    assert [r.error for r in results if r.error is not None] == []


def test_by_actor_the_baselines_forms_of_an_id_fold_into_its_group(
    client: AuditClient, rules: Any, marked: None
) -> None:
    """`Admin` and `ADMIN` typed full-width (U+FF21...) in the baseline,
    `admin` now: one actor, whose average is 2, not a new actor's 0, which
    fired at min_count (the baseline's forms were not in its group). With
    exact_actor_ids, `admin` is an actor of its own, new: it fires there."""
    rule = rules(spike_rule(filter=API, group_by="actor", min_count=5))
    exact = rules(spike_rule(filter=API, group_by="actor", min_count=5, exact_actor_ids=True))
    assert exact.spike.exact_actor_ids
    for window in range(-BASELINE, 0):
        said_by(client, window, ["Admin", "\uff21\uff24\uff2d\uff29\uff2e"])
    said_by(client, 0, ["admin"] * 9)  # 9: past min_count, below 5 x 2
    settle(client)
    assert fired_by(client, rule.id) == []
    [apart] = fired_by(client, exact.id)
    assert apart["group"] == {"actor": "admin"}
    assert apart["count"] == 5 and apart["baseline_average"] == 0.0
    said_by(client, 0, ["ADMIN"])  # the 10th: the line
    settle(client)
    [fired] = fired_by(client, rule.id)
    assert fired["group"] == {"actor": "admin"}
    assert fired["count"] == 10 and fired["baseline_average"] == 2.0


def test_by_actor_the_forms_asked_for_are_those_the_database_folds_alike(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """The second statement of a grouped spike returned every id not all
    ASCII of the baseline and the window, on every evaluation, for Python to
    fold: a tenant of Cyrillic or CJK ids sent thousands of rows a rule a
    step. The database folds them as actor_group does (NFKC, lowercased,
    trimmed) and returns the forms of the judged groups' ids alone, and those
    it may fold otherwise (`ß`, a format character) for Python to judge."""
    others = [f"Пользователь{n}" for n in range(150)] + [f"利用者{n}" for n in range(150)]
    forms = ["ЖОРА", " Жора ", "\uff2a\uff2f\uff32\uff21", "STRASSE", "Straße", "ǅ\u200bX"]
    for n, window in enumerate(range(-BASELINE, 0)):
        said_by(client, window, [*others[n::BASELINE], *forms])
    judged = ["жора", "jora", "strasse", "ǆx"]
    said_by(client, 0, judged)
    asked = SpikeGroupsAsked(
        tenant_id=tenant, event_filter=EventFilter(actions=("api.request",)), group_by="actor",
        start_seq=0, at_seq=10**9, upto_seq=10**9,
        baseline_from=SPIKE - timedelta(seconds=BASELINE * WINDOW), window_from=SPIKE,
        window_to=SPIKE + timedelta(seconds=WINDOW), cap=MAX_SPIKE_GROUPS, fold=actor_group,
    )  # fmt: skip
    keys = sorted({actor_group(form) for form in judged})
    [(lowered,)] = sql.execute(LOWERED_SAMPLE, [CASED_SAMPLE]).fetchall()
    assert lowers_as_actor_group(lowered)  # this database's collation (C.UTF-8)
    statement, values = spike_forms_statement(asked, counted=judged, keys=keys, trusted=True)
    rows = sql.execute(statement, values).fetchall()
    assert len(rows) == len(forms)  # of the 306 ids not all ASCII, the baseline's
    returned = {str(row[0]) for row in rows}
    # Each form of a judged id, and no other id: "Straße" (ß, which the
    # database lowercases as itself) is returned for Python to fold.
    assert returned == set(forms)
    # Where the database's lower() is not trusted: every id not all ASCII.
    statement, values = spike_forms_statement(asked, counted=judged, keys=keys, trusted=False)
    returned = {str(row[0]) for row in sql.execute(statement, values).fetchall()}
    assert returned == {*others, *forms}


def test_the_databases_lowercasing_is_asked_once_a_process_not_at_each_forms_statement(
    client: AuditClient, tenant: str, migrated_database_url: str
) -> None:
    """Each grouped count by actor asked the database's lower() of
    CASED_SAMPLE before its forms' statement: one more round trip an
    evaluation, for an answer fixed by the database's collation. Asked once
    a Database (a process), then reused."""
    said_by(client, -1, ["Admin"])
    said_by(client, 0, ["admin", "admin"])
    asked = SpikeGroupsAsked(
        tenant_id=tenant, event_filter=EventFilter(actions=("api.request",)), group_by="actor",
        start_seq=0, at_seq=10**9, upto_seq=10**9,
        baseline_from=SPIKE - timedelta(seconds=BASELINE * WINDOW), window_from=SPIKE,
        window_to=SPIKE + timedelta(seconds=WINDOW), cap=MAX_SPIKE_GROUPS, fold=actor_group,
    )  # fmt: skip
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)

    async def scenario() -> list[SpikeGroupCounts]:
        url = service_login_url(migrated_database_url)
        db = await Database.open(url, min_size=1, max_size=2, tracer=tracer)
        try:
            with tracer.start_as_current_span("evaluations"):
                return [await spike_group_counts(db, asked) for _ in range(3)]
        finally:
            await db.close()

    counted = asyncio.run(scenario())
    provider.shutdown()
    for counts in counted:  # each found the baseline's form of the judged id
        assert sorted(group.parts[0] for group in counts.judged) == ["Admin", "admin"]
    texts = [(span.attributes or {}).get("db.query.text") for span in exporter.get_finished_spans()]
    assert texts.count(LOWERED_SAMPLE) == 1


DOTLESS_I = "\u0131"


def _ascii_alone(text: str) -> str:
    return "".join(char.lower() if char.isascii() else char for char in text)


def _each_alone(text: str) -> str:
    return "".join(char.lower() for char in text)


# What a database's lower() makes of text where its collation lowercases
# otherwise than actor_group (a casefold of each character): C and POSIX,
# ASCII alone; glibc's tr_TR and az_AZ, `I` to a dotless i, each character alone;
# ICU's (`und-x-icu`, PostgreSQL's `unicode`), a final sigma to `ς` (as
# Python's str.lower() does); ICU's tr and az both; ICU's lt, `Ì` with a dot.
OTHER_LOWERS = {
    "C": _ascii_alone,
    "tr_TR.utf8": lambda text: _each_alone(text.replace("I", DOTLESS_I)),
    "und-x-icu": str.lower,
    "tr-x-icu": lambda text: text.replace("I", DOTLESS_I).lower(),
    "lt-x-icu": lambda text: text.replace("Ì", "i\u0307\u0300").lower(),
}


@pytest.mark.parametrize("collation", sorted(OTHER_LOWERS))
def test_a_collation_lowercasing_otherwise_than_actor_group_is_not_trusted(
    collation: str,
) -> None:
    """The forms' statement trusts the database's lower() where it lowercases
    CASED_SAMPLE as actor_group does. Its sample was `ÀΣЖ` alone, which a
    Turkish collation and ICU lowercase as actor_group does: `IЖ` (`ıж`
    there) and `ΟΔΟΣ` (`οδος`) were folded otherwise than actor_group folds
    them, and those forms left out of their group's baseline."""
    lowered = OTHER_LOWERS[collation](CASED_SAMPLE)
    assert lowered != actor_group(CASED_SAMPLE)
    assert not lowers_as_actor_group(lowered)
    assert lowers_as_actor_group(_each_alone(CASED_SAMPLE))


def test_the_database_folds_as_actor_group_each_character_not_folded_apart(
    sql: psycopg.Connection[Any],
) -> None:
    """What the forms' statement leaves to the database (store.alerts.ID_FOLD)
    folds each character Unicode assigns (but private use), other than those
    domain.alerts.folded_apart leaves to Python, as actor_group does: this
    database's NFKC, lowercase and spaces are Python's on them."""
    apart = set(folded_apart())
    chars = [
        char
        for char in map(chr, range(1, 0x110000))
        if unicodedata.category(char) not in ("Cn", "Cs", "Co") and char not in apart
    ]
    fold = psycopg.sql.SQL(ID_FOLD).format(id=psycopg.sql.Identifier("c"))
    rows = sql.execute(
        psycopg.sql.SQL("SELECT c, {} FROM unnest(%s::text[]) AS c").format(fold),
        [ID_SPACES, chars],
    ).fetchall()
    assert len(rows) == len(chars) > 100_000
    assert [(char, folded) for char, folded in rows if folded != actor_group(char)] == []


def test_the_groups_judged_a_window_are_capped_and_those_left_out_said(
    unevaluated: ServerThread, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = unevaluated
    with (
        AuditClient(server.target, token=server.token(tenant)) as client,
        _appender_of(server) as appender,
    ):
        evaluator = Evaluator(server.database, appender, spike_groups=2)
        try:
            rule = client.create_alert_rule(
                spike_rule(filter=API, group_by="credential", min_count=3)
            ).rule
            assert tenant in server.run(evaluator._claim())
            calls(client, -1, 1, "key_history")
            calls(client, 0, 5, "key_a")
            calls(client, 0, 4, "key_b")
            calls(client, 0, 3, "key_c")  # third of four with events: left out
            calls(client, 0, 1, "key_d")
            while server.run(evaluator._step(tenant)) == 0.0:
                pass  # to the end of the log
        finally:
            server.run(evaluator._release())
        fired = sorted(alert["group"]["credential"]["id"] for alert in fired_by(client, rule.id))
    assert fired == ["key_a", "key_b"]  # key_c reached min_count, but was not judged
    assert "4 groups had events" in caplog.text
    assert "the 2 with the most were judged, 2 left out" in caplog.text


def test_an_unknown_grouping_is_refused_naming_the_field_and_a_change_recorded(
    client: AuditClient, rules: Any
) -> None:
    bad = spike_rule(filter=API)
    bad.spike.group_by = alerting_pb2.AlertGroupBy.ValueType(9)
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_alert_rule(bad)
    assert list(dict(refused.value.field_violations)) == ["rule.spike.group_by"]
    rule = rules(spike_rule(filter=API))
    changed = spike_rule(filter=API, group_by="ip")
    changed.id = rule.id
    answer = client.update_alert_rule(changed, fields=["spike"])
    [change] = client.get_event(answer.event_id).changes
    assert change.field == "condition"
    before, after = (json_format.MessageToDict(value) for value in (change.before, change.after))
    assert "group_by" not in before  # ungrouped, stored as before grouping was
    assert after["group_by"] == "ip"
    [listed] = [r for r in client.list_alert_rules() if r.id == rule.id]
    assert listed.spike.group_by == alerting_pb2.ALERT_GROUP_BY_IP
    # Grouped otherwise, a rule may fire where it did no longer: a weakening.
    assert json.loads(json_details(client.get_event(answer.event_id)))["weakens"] == [
        "condition_narrowed"
    ]


def _stored(sql: psycopg.Connection[Any], rule_id: str) -> dict[str, Any]:
    row = sql.execute("SELECT condition FROM alert_rules WHERE id = %s", [rule_id]).fetchone()
    assert row is not None
    return dict(row[0])


def _recorded_condition(client: AuditClient, event_id: str) -> dict[str, Any]:
    """The condition an alert_rule.created or .deleted record shows."""
    return dict(json.loads(json_details(client.get_event(event_id)))["condition"])


def test_a_grouped_spike_is_stored_for_the_release_before_to_leave_and_shown_as_grouped(
    client: AuditClient, rules: Any, sql: psycopg.Connection[Any]
) -> None:
    """Stored with `spike_group_by`, a key the release before does not know,
    a grouped spike is left by its processes during a rolling upgrade (with
    `group_by` they judged it ungrouped); an ungrouped one is stored as ever.
    Answers and change records show `group_by`, as a threshold's."""
    settings = {"window_seconds": WINDOW, "baseline_windows": BASELINE, "factor": 5.0,
                "min_count": 10}  # fmt: skip
    created = client.create_alert_rule(spike_rule(filter=API, group_by="credential"))
    grouped = created.rule
    assert grouped.spike.group_by == alerting_pb2.ALERT_GROUP_BY_CREDENTIAL
    whole = rules(spike_rule(filter=API))
    assert whole.spike.group_by == alerting_pb2.ALERT_GROUP_BY_UNSPECIFIED
    assert _stored(sql, grouped.id) == {
        "kind": "spike", "filter": {"actions": ["api.request"]}, **settings,
        "spike_group_by": "credential",
    }  # fmt: skip
    assert released_not_understood(_stored(sql, grouped.id)) == "condition key 'spike_group_by'"
    assert _stored(sql, whole.id) == {"kind": "spike", "filter": {"actions": ["api.request"]},
                                      **settings}  # fmt: skip
    assert released_not_understood(_stored(sql, whole.id)) is None

    shown = {"kind": "spike", "filter": {"actions": ["api.request"]}, **settings}
    assert _recorded_condition(client, created.event_id) == shown | {"group_by": "credential"}
    listed = {rule.id: rule for rule in client.list_alert_rules()}
    assert listed[grouped.id].spike == grouped.spike
    assert listed[grouped.id].etag == grouped.etag
    assert listed[whole.id].spike == whole.spike
    # Grouped by IP: the change shows the grouping's two values by its name.
    changed = spike_rule(filter=API, group_by="ip")
    changed.id = grouped.id
    updated = client.update_alert_rule(changed, fields=["spike"])
    assert updated.rule.spike.group_by == alerting_pb2.ALERT_GROUP_BY_IP
    assert _stored(sql, grouped.id)["spike_group_by"] == "ip"
    [change] = client.get_event(updated.event_id).changes
    before, after = (json_format.MessageToDict(value) for value in (change.before, change.after))
    assert (before["group_by"], after["group_by"]) == ("credential", "ip")
    assert "spike_group_by" not in before and "spike_group_by" not in after
    # Ungrouped again: stored as an ungrouped spike always was.
    changed = spike_rule(filter=API)
    changed.id = grouped.id
    client.update_alert_rule(changed, fields=["spike"])
    assert _stored(sql, grouped.id) == _stored(sql, whole.id)
    changed = spike_rule(filter=API, group_by="actor")
    changed.id = grouped.id
    client.update_alert_rule(changed, fields=["spike"])
    deleted = client.delete_alert_rule(grouped.id)
    assert _recorded_condition(client, deleted.event_id) == shown | {"group_by": "actor"}


def test_exact_actor_ids_of_a_spike_are_stored_for_the_release_before_to_leave_and_checked(
    client: AuditClient, rules: Any, sql: psycopg.Connection[Any]
) -> None:
    """A spike's exact_actor_ids (field 7) is stored as a threshold's (a key
    set only when true) beside `spike_group_by`, which the release before
    leaves; refused, naming it, but with a grouping by actor; a change of it
    recorded, and as a weakening (either average may be higher)."""
    rule = rules(spike_rule(filter=API, group_by="actor", exact_actor_ids=True))
    stored = _stored(sql, rule.id)
    assert stored["spike_group_by"] == "actor" and stored["exact_actor_ids"] is True
    assert released_not_understood(stored) == "condition key 'spike_group_by'"
    [listed] = [r for r in client.list_alert_rules() if r.id == rule.id]
    assert listed.spike.exact_actor_ids and listed.etag == rule.etag
    for grouping in ("credential", ""):
        bad = spike_rule(filter=API, group_by=grouping)
        bad.spike.exact_actor_ids = True
        with pytest.raises(InvalidArgumentError) as refused:
            client.create_alert_rule(bad)
        assert list(dict(refused.value.field_violations)) == ["rule.spike.exact_actor_ids"]
    folded = spike_rule(filter=API, group_by="actor")
    folded.id = rule.id
    answer = client.update_alert_rule(folded, fields=["spike"])
    assert not answer.rule.spike.exact_actor_ids
    assert "exact_actor_ids" not in _stored(sql, rule.id)
    [change] = client.get_event(answer.event_id).changes
    before, after = (json_format.MessageToDict(value) for value in (change.before, change.after))
    assert before["exact_actor_ids"] is True and "exact_actor_ids" not in after
    assert json.loads(json_details(client.get_event(answer.event_id)))["weakens"] == [
        "condition_narrowed"
    ]


def test_the_cli_sets_lists_keeps_and_clears_a_spikes_exact_actor_ids(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    cli = alerts_cli(server, tenant)
    spike = ["--kind", "spike", "--action", "api.request", "--window", "600",
             "--baseline-windows", "24", "--factor", "5", "--min-count", "20"]  # fmt: skip
    code, said = cli("create", "ids apart", *spike, "--group-by", "actor", "--exact-actor-ids")
    assert code == 0, said
    rule_id = said.strip()
    [rule] = client.list_alert_rules()
    assert rule.spike.exact_actor_ids
    code, said = cli()
    assert "at least 20 by actor (ids compared exactly)" in said, said
    code, said = cli("create", "x", *spike, "--group-by", "ip", "--exact-actor-ids")
    assert code == 2 and "--exact-actor-ids" in said and "--group-by actor" in said, said
    assert cli("update", rule_id, "--factor", "3")[0] == 0  # kept unless named
    [rule] = client.list_alert_rules()
    assert rule.spike.factor == 3.0 and rule.spike.exact_actor_ids
    assert cli("update", rule_id, "--fold-actor-ids") == (0, f"{rule_id} updated\n")
    [rule] = client.list_alert_rules()
    assert not rule.spike.exact_actor_ids and rule.spike.factor == 3.0
    assert cli("update", rule_id, "--exact-actor-ids")[0] == 0
    code, said = cli("update", rule_id, "--group-by", "credential")  # dropped with the grouping
    assert code == 0 and "exact actor ids dropped" in said, said
    [rule] = client.list_alert_rules()
    assert rule.spike.group_by == alerting_pb2.ALERT_GROUP_BY_CREDENTIAL
    assert not rule.spike.exact_actor_ids


def test_the_cli_creates_updates_and_lists_a_grouped_spike(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    cli = alerts_cli(server, tenant)
    code, said = cli("create", "leaked key", "--kind", "spike", "--action", "api.request",
                     "--window", "600", "--baseline-windows", "24", "--factor", "5",
                     "--min-count", "20", "--group-by", "credential")  # fmt: skip
    assert code == 0, said
    [rule] = client.list_alert_rules()
    assert rule.spike.group_by == alerting_pb2.ALERT_GROUP_BY_CREDENTIAL
    code, said = cli()
    assert "at least 20 by credential" in said, said
    code, said = cli("update", rule.id, "--group-by", "none")
    assert code == 0, said
    [rule] = client.list_alert_rules()
    assert rule.spike.group_by == alerting_pb2.ALERT_GROUP_BY_UNSPECIFIED


# A log of 100,000 API requests over the last 20 days, 2,000 keys and 5,000
# addresses among them: what a grouped spike's one statement reads of it.
PLANNED = 100_000
_REQUESTS = (
    "INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, severity,"
    " outcome, actor_id, leaf_hash, record, ip, credential_kind, credential_id)"
    " SELECT 't1', g, gen_random_uuid(), now() - g * interval '17 seconds',"
    " now() - g * interval '17 seconds', 'api.request', 1, 'success', 'svc' || g %% 50,"
    " '\\x00', '{}', ('10.0.' || g %% 20 || '.' || g %% 250)::inet, 'api_key', 'key_' || g %% 2000"
    " FROM generate_series(1::bigint, %s::bigint) AS g"
)


@pytest.fixture(scope="module")
def requests_as_service(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A database of its own holding PLANNED requests of tenant t1, analyzed;
    a connection working as the service does for t1."""
    with (
        database_of_its_own(migrated_database_url, "spike_groups") as url,
        psycopg.connect(url, autocommit=True) as owner,
        psycopg.connect(url, autocommit=True) as service,
    ):
        owner.execute("SELECT sealtrail_create_event_partitions(now() - interval '21 days', now())")
        owner.execute(_REQUESTS, [PLANNED])
        owner.execute("ANALYZE events")
        service.execute("SET ROLE sealtrail_service")
        service.execute("SELECT set_config('sealtrail.tenant', 't1', false)")
        service.execute("SET enable_seqscan = off")  # as the service's connections
        yield service


@pytest.mark.parametrize("group_by", ["credential", "ip", "actor"])
def test_a_grouped_count_is_one_aggregate_over_the_baselines_range_and_returns_the_cap(
    requests_as_service: psycopg.Connection[Any], group_by: str
) -> None:
    now = datetime.now(UTC)
    window = now.replace(minute=0, second=0, microsecond=0)
    asked = SpikeGroupsAsked(
        tenant_id="t1", event_filter=EventFilter(actions=("api.request",)), group_by=group_by,
        start_seq=0, at_seq=PLANNED, upto_seq=PLANNED,
        baseline_from=window - timedelta(days=14), window_from=window,
        window_to=window + timedelta(hours=1), cap=MAX_SPIKE_GROUPS,
    )  # fmt: skip
    statement, values = spike_groups_statement(asked)
    plan = _plan(requests_as_service, statement, values)
    # The rows read: the events of the baseline's 14 days and the window, of
    # the 20 days held (bounded by occurred_at and so by receipt), once.
    read = sum(
        node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
        for node in _nodes(plan)
        if node.get("Relation Name", "").startswith("events")
    )
    assert 14 * 86400 // 17 - 100 <= read <= (14 * 86400 + now.minute * 60 + 3600) // 17 + 100
    # One grouping (of parallel workers, their partial aggregates finalized once).
    aggregates = [
        node for node in _nodes(plan)
        if node["Node Type"] == "Aggregate" and node.get("Partial Mode") != "Partial"
    ]  # fmt: skip
    assert len(aggregates) == 1, [node["Node Type"] for node in _nodes(plan)]
    assert plan["Actual Rows"] <= MAX_SPIKE_GROUPS
    if group_by != "actor":
        return
    # The other forms of the judged actors' ids: one more aggregate over the
    # same range, none returned where each id has only the form it was read in.
    ids = [f"svc{n}" for n in range(50)]
    statement, values = spike_forms_statement(asked, counted=ids, keys=ids, trusted=True)
    plan = _plan(requests_as_service, statement, values)
    assert plan["Actual Rows"] == 0


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)
