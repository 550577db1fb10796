"""Redaction end to end: secrets placed anywhere in recorded events are never
in the database, in Record's answer, in Query results or in exports; HMAC mode
correlates them and HashSecret finds them; the settings RPCs are admin-only and
each change is recorded."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from google.protobuf import json_format

from sealtrail import (
    AbortedError,
    AlreadyExistsError,
    AuditClient,
    PermissionDeniedError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail_server.domain.redaction import hmac_token, tenant_key
from tests.conftest import REDACTION_SECRET, ServerThread
from tests.unit.test_redaction import BEARER_PROSE, SECRETS


def _carrying(secret: str, template: str, index: int) -> list[Any]:
    """The secret in each free-text place a caller can put it."""
    text = template.format(secret)
    return [
        build_event(action="secret.test", actor_id="u", description=text),
        build_event(action="secret.test", actor_id="u", details={"note": text, "n": index}),
        build_event(action="secret.test", actor_id="u", resource_type="doc", resource_name=text),
        build_event(
            action="secret.test",
            actor_id="u",
            changes=[{"field": "note", "before": "x", "after": text}],
        ),
        build_event(action="secret.test", actor_id="u", user_agent=text),
        build_event(action="secret.test", actor_id="u", actor_display_name=text),
    ]


def _found_in_database(sql: psycopg.Connection[Any], tenant: str, secret: str) -> int:
    # The row as text shows the serialized views (ADR 0022, 0025) in hex: their
    # bytes are searched as bytes.
    row = sql.execute(
        "SELECT count(*) FROM events e WHERE tenant_id = %s AND (strpos(e::text, %s) > 0"
        " OR position(convert_to(%s, 'UTF8') IN e.caller_view) > 0"
        " OR position(convert_to(%s, 'UTF8') IN e.event_view) > 0)",
        [tenant, secret, secret, secret],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_no_secret_of_the_corpus_is_stored_answered_queried_or_exported(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    answers = []
    for index, (_, secret, template) in enumerate(SECRETS):
        events = _carrying(secret, template, index)
        answers.append(client.record(events[0]).event)
        for result in client.record_batch(events[1:]):
            assert result.error is None
            answers.append(result.event)
    recorded = len(SECRETS) * 6
    page = client.query_page(build_filter(actions="secret.test"), page_size=1000)
    assert len(page.events) == recorded
    client.export(tmp_path / "all.ndjson", format="ndjson")
    client.export(tmp_path / "all.csv", format="csv")
    exported = (tmp_path / "all.ndjson").read_text() + (tmp_path / "all.csv").read_text()
    answered = json.dumps([json_format.MessageToDict(event) for event in answers])
    queried = json.dumps([json_format.MessageToDict(event) for event in page.events])
    for rule, secret, _ in SECRETS:
        escaped = json.dumps(secret)[1:-1]
        assert _found_in_database(sql, tenant, secret) == 0, rule
        assert _found_in_database(sql, tenant, escaped) == 0, rule
        for where, text in (("answer", answered), ("query", queried), ("export", exported)):
            assert secret not in text and escaped not in text, (rule, where)
        assert f"[REDACTED:{rule}]" in queried


def test_prose_about_a_bearer_is_stored_as_sent(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """The word after "bearer" in prose ("the bearer instrument", "Bearer
    authentication") was taken for a credential and replaced."""
    for text in BEARER_PROSE:
        assert (
            client.record(action="prose.sent", actor_id="u", description=text).event.description
            == text
        )
    stored = sql.execute(
        "SELECT record::jsonb ->> 'description' FROM events"
        " WHERE tenant_id = %s AND action = 'prose.sent'"
        " ORDER BY seq",
        [tenant],
    ).fetchall()
    assert [row[0] for row in stored] == BEARER_PROSE


def test_secrets_under_names_the_rules_read_otherwise_are_not_stored(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Stored in clear until helper-129's review: a change's field with a
    quoted step, a key whose last word ends in an ending about the secret,
    a numbered key, the argument after a secret's flag."""
    carriers: dict[str, dict[str, Any]] = {
        "Zq9-bearer-old": {
            "changes": [
                {"field": "headers['Authorization']", "before": "Zq9-bearer-old", "after": "x"}
            ]
        },
        "AIzaSyA-android-key": {"details": {"API_KEY_ANDROID": "AIzaSyA-android-key"}},
        "s3cr3t-two": {"details": {"GITHUB_TOKEN_2": "s3cr3t-two"}},
        "hunter2argv": {"details": {"argv": ["mysql", "--password", "hunter2argv"]}},
    }
    for secret, fields in carriers.items():
        event = client.record(build_event(action="secret.test", actor_id="u", **fields)).event
        assert secret not in json.dumps(json_format.MessageToDict(event)), secret
        assert _found_in_database(sql, tenant, secret) == 0, secret


def test_a_charges_id_in_text_is_stored_and_found_a_key_beside_it_is_not(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """`charge: ch_3NqX…` was stored as `charge: [REDACTED:high_entropy_assignment]`:
    the audit trail lost which charge a refund touched."""
    charge, key = "ch_3NqXkL2eZvKYlo2C1x9aBcDe", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    text = f"Refunded charge: {charge} with stripe_key={key}"
    event = client.record(
        build_event(
            action="charge.refunded",
            actor_id="u",
            resource_type="charge",
            resource_id=charge,
            description=text,
            details={"note": f'{{"charge": "{charge}", "session": "{charge}"}}'},
        )
    ).event
    stored = f"Refunded charge: {charge} with stripe_key=[REDACTED:stripe_key]"
    assert event.description == stored
    # Under a name of a secret, an identifier's shape keeps nothing.
    note = f'{{"charge": "{charge}", "session": "[REDACTED:high_entropy_assignment]"}}'
    assert json_format.MessageToDict(event.details) == {"note": note}
    (found,) = client.query(build_filter(actions="charge.refunded", resource_id=charge))
    assert found == event
    assert _found_in_database(sql, tenant, key) == 0


def test_a_secrets_arn_is_stored_as_sent(client: AuditClient) -> None:
    """`…:secret:prod/db-AbCdEf` was stored as `…:secret:[REDACTED:secret_assignment]`:
    the record of who read a secret lost which one."""
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf"
    event = client.record(
        build_event(
            action="secret.read",
            actor_id="u",
            resource_type="secret",
            resource_name=arn,
            details={"secretId": arn},
        )
    ).event
    assert (event.resource.name, json_format.MessageToDict(event.details)) == (
        arn,
        {"secretId": arn},
    )
    assert list(client.query(build_filter(actions="secret.read"))) == [event]


def test_denied_fields_and_api_key_actors(client: AuditClient) -> None:
    event = client.record(
        build_event(
            action="secret.test",
            actor_id="key_8f3b2a91c4",
            actor_type="api_key",
            details={"db": {"password": "p4ss", "host": "db1"}},
            changes=[{"field": "smtp.password", "before": "old", "after": "new"}],
        )
    ).event
    assert event.actor.id == "****91c4"
    details = json_format.MessageToDict(event.details)
    assert details == {"db": {"password": "[REDACTED:field_name]", "host": "db1"}}
    change = event.changes[0]
    assert (change.before.string_value, change.after.string_value) == (
        "[REDACTED:field_name]",
        "[REDACTED:field_name]",
    )
    assert client.get_event(event.id) == event  # the answer is what was stored
    assert list(client.query(build_filter(actions="secret.test"))) == [event]  # and shown


def test_hmac_mode_correlates_and_hash_secret_finds_it(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    admin = client_for(tenant)
    assert admin.get_tenant_settings().redaction_mode == 1  # REPLACE, the default
    changed = admin.set_redaction_mode("hmac")
    assert changed.event_id and changed.settings.redaction_mode == 2
    assert admin.set_redaction_mode("hmac").event_id == ""  # no change, no event
    audit = admin.get_event(changed.event_id)
    assert audit.action == "tenant.settings_updated"
    assert audit.changes[0].after.string_value == "hmac"

    first = admin.record(
        action="secret.test", actor_id="u", description="login with password=hunter22"
    ).event
    second = admin.record(
        action="secret.test", actor_id="u", details={"password": "hunter22"}
    ).event
    expected = hmac_token(tenant_key(REDACTION_SECRET, tenant), "hunter22")
    assert admin.hash_secret("hunter22") == expected
    assert first.description == f"login with password={expected}"
    assert json_format.MessageToDict(second.details) == {"password": expected}
    assert _found_in_database(sql, tenant, "hunter22") == 0
    [hashed] = admin.query(build_filter(actions="tenant.secret_hashed"))
    assert json_format.MessageToDict(hashed.details) == {"hmac": expected}  # each guess is seen
    found = admin.query(build_filter(text=expected.removeprefix("hmac-sha256:")))
    assert {event.id for event in found} >= {second.id}
    # A secret searched for is not committed in clear by the search's own record.
    admin.query(build_filter(text="password=hunter22"))
    assert _found_in_database(sql, tenant, "hunter22") == 0

    other = client_for(f"{tenant}-other")
    assert other.hash_secret("hunter22") != expected  # keys are per tenant
    admin.set_redaction_mode("replace")
    assert (
        admin.record(
            action="secret.test", actor_id="u", description="password=hunter22"
        ).event.description
        == "password=[REDACTED:secret_assignment]"
    )


@pytest.mark.parametrize("mode", ["replace", "hmac"])
def test_a_secret_in_a_sinks_or_alert_rules_filter_is_not_committed_in_clear(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any], mode: str
) -> None:
    """An investigator forwards or watches for the events that name a leaked
    token: the records of those sinks and rules (created, changed, deleted)
    hold it redacted, as a search's record does (helper-119)."""
    admin = client_for(tenant)
    admin.set_redaction_mode(mode)
    leaked, rotated = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "ghp_" + "Z9" * 18
    sink = admin.create_sink(
        build_sink(
            "siem",
            "webhook",
            url="http://127.0.0.1:9/hook",
            secrets=["whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"],
            filter=build_filter(text=leaked),
            paused=True,
        )
    ).sink
    rule = admin.create_alert_rule(
        build_alert_rule("leaked token used", "match", filter=build_filter(resource_id=leaked))
    ).rule
    sink.filter.text = rotated
    sink_changed = admin.update_sink(sink, fields=["filter"])
    rule.match.filter.resource_id = rotated
    admin.update_alert_rule(rule, fields=["match"])
    admin.delete_sink(sink.id)
    admin.delete_alert_rule(rule.id)

    for secret in (leaked, rotated):
        assert _found_in_database(sql, tenant, secret) == 0
    [change] = admin.get_event(sink_changed.event_id).changes
    assert change.field == "filter"  # told apart, though both are redacted
    if mode == "hmac":  # and shown apart, as HMAC mode shows secrets
        key = tenant_key(REDACTION_SECRET, tenant)
        before, after = (
            json_format.MessageToDict(v)["text"] for v in (change.before, change.after)
        )
        assert (before, after) == (hmac_token(key, leaked), hmac_token(key, rotated))


@pytest.mark.parametrize("mode", ["replace", "hmac"])
def test_a_secret_in_a_name_or_a_reason_is_not_committed_in_clear(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any], mode: str
) -> None:
    """A token named after the secret it replaces, a sink or a rule named
    after the leak it watches, a legal hold's reason quoting it: the records
    of their changes hold the secret redacted (helper-129)."""
    admin = client_for(tenant)
    admin.set_redaction_mode(mode)
    leaked, rotated = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "ghp_" + "Z9" * 18
    token = admin.create_token("reader", name=f"ci {leaked}").token
    admin.revoke_token(token.token_id)
    sink = admin.create_sink(
        build_sink(
            f"siem {leaked}",
            "webhook",
            url="http://127.0.0.1:9/hook",
            secrets=["whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"],
            paused=True,
        )
    ).sink
    sink.name = f"siem {rotated}"
    admin.update_sink(sink, fields=["name"])
    admin.replay_sink(sink.id, seq_range=(1, 1))  # sink.replay_requested names the sink
    admin.delete_sink(sink.id)
    rule = admin.create_alert_rule(
        build_alert_rule(f"watch {leaked}", "match", filter=build_filter(actions="x.y"))
    ).rule
    admin.record(action="x.y", actor_id="u")  # its alert names the rule
    deadline = time.monotonic() + 20
    while not list(admin.query(build_filter(actions="security.alert"))):
        assert time.monotonic() < deadline, "the rule did not fire"
        time.sleep(0.05)
    rule.name = f"watch {rotated}"
    admin.update_alert_rule(rule, fields=["name"])
    admin.delete_alert_rule(rule.id)
    admin.set_legal_hold(True, reason=f"case about {leaked}")
    admin.set_legal_hold(False)

    for secret in (leaked, rotated):
        assert _found_in_database(sql, tenant, secret) == 0
    [revoked] = admin.query(build_filter(actions="api_token.revoked"))
    assert json_format.MessageToDict(revoked.details)["name"].startswith("ci ")


def test_a_legal_hold_whose_reason_redaction_lengthens_past_a_description_is_placed(
    client: AuditClient,
) -> None:
    """A reason of 1,024 characters, each `pwd=` in it an 8-character secret
    that HMAC mode writes as 76: the record's description would be 6,336
    characters, past the 4,096 a description holds. The hold was refused,
    INVALID_ARGUMENT on `retention.legal_hold_placed.description`, a field
    the caller never sent, for a reason the API takes."""
    client.set_redaction_mode("hmac")
    reason = ("pwd=12345678 " * 78).strip()
    assert len(reason) <= 1024
    placed = client.set_legal_hold(True, reason=reason)
    assert placed.legal_hold.on and placed.legal_hold.reason == reason
    record = client.get_event(placed.event_id)
    assert len(record.description) == 4096 and record.description.endswith("…")
    assert record.description.startswith("Legal hold placed: pwd=hmac-sha256:")
    shown = json_format.MessageToDict(record.details)["reason"]  # whole, redacted
    assert shown.count("hmac-sha256:") == 78 and "12345678" not in shown
    assert record.description[:-1] == f"Legal hold placed: {shown}"[:4095]
    client.set_legal_hold(False)


def test_a_settings_change_on_a_stale_etag_is_aborted_and_changes_nothing(
    client: AuditClient,
) -> None:
    never_set = client.get_tenant_settings().etag
    assert never_set.startswith('"')  # RFC 7232
    changed = client.set_redaction_mode("hmac", etag=never_set)
    assert changed.event_id and changed.settings.etag != never_set
    for mode in ("replace", "hmac"):  # another mode, or the same one: both refused
        with pytest.raises(AbortedError) as aborted:
            client.set_redaction_mode(mode, etag=never_set)
        assert aborted.value.reason == "ETAG_MISMATCH"
    now = client.get_tenant_settings()
    assert now.redaction_mode == 2 and now.etag == changed.settings.etag  # HMAC
    updates = client.query(build_filter(actions="tenant.settings_updated"))
    assert len(list(updates)) == 1  # refusals record nothing
    assert client.set_redaction_mode("replace", etag=now.etag).settings.redaction_mode == 1


def test_settings_rpcs_are_admin_only(client_for: Any, tenant: str) -> None:
    for role in ("recorder", "reader"):
        limited = client_for(tenant, role=role)
        with pytest.raises(PermissionDeniedError):
            limited.get_tenant_settings()
        with pytest.raises(PermissionDeniedError):
            limited.set_redaction_mode("hmac")
        with pytest.raises(PermissionDeniedError):
            limited.hash_secret("x")


def test_redaction_off_stores_what_was_sent(migrated_database_url: str, tenant: str) -> None:
    bare = ServerThread(migrated_database_url, redaction=False)
    try:
        with AuditClient(bare.target, token=bare.token(tenant)) as client:
            event = client.record(
                action="secret.test", actor_id="u", description="password=hunter22"
            ).event
        assert event.description == "password=hunter22"
    finally:
        bare.close()


def test_a_retried_event_with_secrets_is_deduplicated(client: AuditClient) -> None:
    event = build_event(
        action="secret.test",
        actor_id="u",
        description="token=abcdef123456",
        idempotency_key="retry-with-secret",
        occurred_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),  # as a retry sends it
    )
    first = client.record(event)
    again = client.record(event)
    assert again.deduplicated and again.event.id == first.event.id


def _keyed(action: str, key: str, **fields: Any) -> Any:
    """An event with a secret and an idempotency key, as a retry sends it again."""
    return build_event(
        action=action,
        actor_id="u",
        description="token=abcdef123456",
        idempotency_key=key,
        occurred_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        **fields,
    )


def test_a_retry_across_a_change_of_redaction_mode_is_the_same_event(
    client: AuditClient,
) -> None:
    """The first attempt stored `[REDACTED:…]`; its retry, after an admin
    turned HMAC mode on, would store an HMAC: the same request all the same,
    answered with the first attempt's event, not ALREADY_EXISTS. And back."""
    for key, first_mode, then_mode in (
        ("retry-across-modes-1", "replace", "hmac"),
        ("retry-across-modes-2", "hmac", "replace"),
    ):
        client.set_redaction_mode(first_mode)
        event = _keyed("secret.test", key, details={"password": "hunter22"})
        first = client.record(event)
        client.set_redaction_mode(then_mode)
        again = client.record(event)
        assert again.deduplicated and again.event == first.event
        # Another event under the key is still refused, in either mode.
        other = _keyed("secret.other", key, details={"password": "hunter22"})
        for mode in (then_mode, first_mode):
            client.set_redaction_mode(mode)
            with pytest.raises(AlreadyExistsError) as refused:
                client.record(other)
            assert refused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    # Stored in HMAC mode, a secret is told from another: a request with another
    # secret is not taken for a retry of it after a change to replace (helper-76).
    client.set_redaction_mode("hmac")
    sent = _keyed("secret.test", "retry-across-modes-3")
    client.record(sent)
    client.set_redaction_mode("replace")
    sent.description = "token=zyxwvu654321"
    with pytest.raises(AlreadyExistsError):
        client.record(sent)


def test_resending_an_event_with_guesses_tells_nothing_of_its_secret(
    client: AuditClient,
) -> None:
    """Stored as `[REDACTED:…]`, a secret must not be testable by resending
    the event with guesses under its key, before or after a change to HMAC
    mode: right or wrong, the answer is the stored event (helper-80, -81)."""
    client.set_redaction_mode("replace")
    sent = _keyed("secret.test", "guessed-secret")
    first = client.record(sent)
    for mode in ("replace", "hmac"):
        client.set_redaction_mode(mode)
        for guess in ("token=abcdef123456", "token=zyxwvu654321"):
            sent.description = guess
            again = client.record(sent)
            assert again.deduplicated and again.event == first.event, (mode, guess)


def test_a_retry_across_a_rule_added_since_is_the_same_event(
    client: AuditClient, migrated_database_url: str, tenant: str
) -> None:
    """An upgrade or an operator adds a rule between two attempts (here a
    denied field, on a second server of the deployment): the first attempt
    stored the value as sent, the retry would store it redacted; the same
    request all the same. Another event under the key is still refused.
    (Only when the first attempt held no secret the old rules found: one
    partly redacted by them is no longer known, and its retry is refused.)"""

    def keyed(action: str) -> Any:
        return build_event(
            action=action,
            actor_id="u",
            details={"internal_code": "X-1234"},
            idempotency_key="rule-added",
            occurred_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        )

    stricter = ServerThread(migrated_database_url, redact_fields="internal_code")
    try:
        with AuditClient(stricter.target, token=stricter.token(tenant)) as on_stricter:
            event = keyed("secret.test")
            first = client.record(event)
            again = on_stricter.record(event)
            assert again.deduplicated and again.event == first.event
            other = keyed("secret.other")
            for each in (client, on_stricter):
                with pytest.raises(AlreadyExistsError):
                    each.record(other)
            # A secret the old rules redacted, beside a value the new one does:
            # the retry's form differs from the stored one whatever the secret,
            # and so does the answer to a right and a wrong guess of it.
            stored = _keyed("secret.test", "partly-redacted", details={"internal_code": "X-1"})
            client.record(stored)
            answers = []
            for guess in ("token=abcdef123456", "token=zyxwvu654321"):
                stored.description = guess
                with pytest.raises(AlreadyExistsError) as refused:
                    on_stricter.record(stored)
                answers.append(refused.value.reason)
            assert answers == ["IDEMPOTENCY_KEY_REUSED"] * 2
    finally:
        stricter.close()


def test_a_secret_in_a_tokens_name_is_not_in_the_records_of_its_calls(
    client_for: Any, server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Own records name their token (`actor.display_name`): redacted as the
    record of its creation holds it."""
    leaked = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    admin = client_for(tenant)
    created = admin.create_token("reader", name=f"ci {leaked}")
    with AuditClient(server.target, token=created.secret) as reader:
        list(reader.query(build_filter(actions="x.y")))
    assert _found_in_database(sql, tenant, leaked) == 0
    [queried] = admin.query(build_filter(actions="audit_log.queried"))
    assert queried.actor.display_name.startswith("ci ")
    assert queried.actor.display_name != f"ci {leaked}"


def test_a_denied_key_spelled_with_look_alike_letters_is_not_stored(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Keys that read as `password`, `api_key`, `token` or `pin` but hold a
    Cyrillic or Greek letter that looks like a Latin one (NFKC leaves them
    as they are) were stored in clear, their values with them."""
    carriers: dict[str, dict[str, Any]] = {
        "Cyr-a-hunter2": {"details": {"p\u0430ssword": "Cyr-a-hunter2"}},
        "Cyr-P-hunter2": {"details": {"db": {"DB_\u0420ASSWORD": "Cyr-P-hunter2"}}},
        "Cyr-e-key-123": {"details": {"headers": {"x-api-k\u0435y": "Cyr-e-key-123"}}},
        "Greek-o-tok-1": {"details": {"refresh_t\u03bfken": "Greek-o-tok-1"}},
        "Cyr-i-pin-482": {"details": {"card_p\u0456n": "Cyr-i-pin-482"}},
        "Cyr-pair-val1": {"details": {"env": [{"name": "S\u0415CRET", "value": "Cyr-pair-val1"}]}},
        "Cyr-change-01": {
            "changes": [{"field": "smtp.p\u0430ssword", "before": "Cyr-change-01", "after": "x"}]
        },
    }
    answers = [
        client.record(build_event(action="lookalike.test", actor_id="u", **fields))
        for fields in carriers.values()
    ]
    page = client.query_page(build_filter(actions="lookalike.test"), page_size=100)
    client.export(tmp_path / "all.ndjson", format="ndjson")
    answered = json.dumps([json_format.MessageToDict(answer.event) for answer in answers])
    queried = json.dumps([json_format.MessageToDict(event) for event in page.events])
    exported = (tmp_path / "all.ndjson").read_text()
    for secret in carriers:
        assert _found_in_database(sql, tenant, secret) == 0, secret
        for where, text in (("answer", answered), ("query", queried), ("export", exported)):
            assert secret not in text, (secret, where)
    # One value each, and both sides of the change.
    assert queried.count("[REDACTED:field_name]") == len(carriers) + 1


def _stored_without(
    client: AuditClient,
    sql: psycopg.Connection[Any],
    tenant: str,
    action: str,
    carriers: dict[str, dict[str, Any]],
) -> str:
    """Each of `carriers` (a secret, the fields of an event carrying it)
    recorded as `action`: the secret is in neither the answer nor any row
    of the tenant, nor in what a Query of them shows, which is returned."""
    for secret, fields in carriers.items():
        event = client.record(build_event(action=action, actor_id="u", **fields)).event
        assert secret not in json.dumps(json_format.MessageToDict(event)), secret
        assert _found_in_database(sql, tenant, secret) == 0, secret
    queried = json.dumps(
        [json_format.MessageToDict(e) for e in client.query(build_filter(actions=action))]
    )
    assert not any(secret in queried for secret in carriers)
    return queried


def test_a_cards_security_code_under_its_other_names_is_not_stored(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """The code on a card's back, which PCI DSS forbids keeping after
    authorization, is `cvc` to Stripe and Adyen and `security_code` to
    PayPal and others: only `cvv` was denied, and the others were stored.
    (Each code is marked, as four digits alone may stand in an id or a hash.)"""
    carriers: dict[str, dict[str, Any]] = {
        "code-7391": {"details": {"card": {"number": "tok_visa", "cvc": "code-7391", "exp": 12}}},
        "code-7392": {"details": {"form": {"card[cvc]": "code-7392"}}},
        "code-7393": {"details": {"paymentMethod": {"securityCode": "code-7393"}}},
        "code-7394": {"changes": [{"field": "card.cvc", "before": "code-7394", "after": "x"}]},
        "code-7395": {"description": 'charge params {"cvc": "code-7395", "amount": 500}'},
        "code-7396": {"details": {"form": [{"name": "security_code", "value": "code-7396"}]}},
    }
    _stored_without(client, sql, tenant, "card.charged", carriers)


def test_a_secret_in_an_xml_element_of_a_denied_name_is_not_stored(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A SOAP call's WS-Security password, a Maven settings file's, an XML
    request's API key: the text rules read a name followed by `=`, `:` or
    `=>`, never `<name>value</name>`, and XML bodies were stored whole."""
    soap = (
        '<wsse:UsernameToken><wsse:Username>svc</wsse:Username><wsse:Password Type="'
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
        '#PasswordText">Soap pass 1!</wsse:Password></wsse:UsernameToken>'
    )
    carriers: dict[str, dict[str, Any]] = {
        "Soap pass 1!": {"details": {"request": soap}},
        "mvn-hunter2": {
            "description": "settings.xml: <server><id>nexus</id><username>ci</username>"
            "<password>mvn-hunter2</password></server>"
        },
        "xml-key-123": {
            "changes": [{"field": "body", "before": "<Auth><ApiKey>xml-key-123</ApiKey></Auth>"}]
        },
        "pin-48213": {"details": {"xml": "<card><pin>pin-48213</pin></card>"}},
    }
    queried = _stored_without(client, sql, tenant, "xml.sent", carriers)
    # The rest of the XML stays readable.
    assert "<wsse:Username>svc</wsse:Username>" in queried
    assert "<id>nexus</id><username>ci</username>" in queried


def test_a_secret_in_a_percent_encoded_query_string_is_not_stored(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A URL inside a URL's query (a login's `next=`, an OAuth `redirect_uri`)
    is percent-encoded, its `=` written `%3D`: `token%3D…` was not read as an
    assignment, and the token was stored."""
    carriers: dict[str, dict[str, Any]] = {
        "opaque-Tok-9931": {
            "description": "GET /login?next=%2Fcb%3Faccess_token%3Dopaque-Tok-9931%26state%3Dq1"
        },
        "Hunter2pw-77": {
            "details": {"url": "https://sso.example/?RelayState=%2Fapp%3Fpassword%3DHunter2pw-77"}
        },
        "k3y-abc-555": {"resource_name": "/proxy?u=https%3A%2F%2Fapi%2Fv1%3Fapi_key%3Dk3y-abc-555"},
    }
    queried = _stored_without(client, sql, tenant, "url.sent", carriers)
    assert "%26state%3Dq1" in queried  # the next parameter stays


def test_a_secret_in_an_attribute_pair_of_a_denied_key_is_not_stored(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """.NET keeps its settings as `<add key="…" value="…"/>`: the value of
    one whose key names a secret was stored in clear (the text rules read
    `name=value` and `<name>value</name>`, not two attributes)."""
    config = (
        '<configuration><appSettings><add key="DbPassword" value="net-hunter2"/>'
        '<add key="Env" value="prod"/></appSettings><connectionStrings><add name="Main" '
        'connectionString="Server=db;User Id=sa;Password=conn-hunter3;"/></connectionStrings>'
        "</configuration>"
    )
    carriers: dict[str, dict[str, Any]] = {
        "net-hunter2": {"details": {"web.config": config}},
        "conn-hunter3": {"description": config},
        "k3y-abc-556": {
            "changes": [{"field": "app.config", "after": "<add key='ApiKey' value='k3y-abc-556'/>"}]
        },
    }
    queried = _stored_without(client, sql, tenant, "config.sent", carriers)
    assert '<add key=\\"Env\\" value=\\"prod\\"/>' in queried  # the rest stays


def test_a_hash_of_a_password_or_a_pin_is_not_stored(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A password's or a PIN's hash can be cracked offline: under `pwd_hash`,
    `pin_hash` or `otp_hash`, and after `password_hash=` in text, it was
    stored in clear (only the key `password_hash` was denied)."""
    bcrypt = "$2b$12$KIXQJ3xQ8kJ9v9Qx1Xy8eO7u6TlZQ1Wc2R3e4f5g6h7i8j9k0l1m2"
    carriers: dict[str, dict[str, Any]] = {
        bcrypt: {"details": {"user": {"name": "bob", "pwd_hash": bcrypt}}},
        "81dc9bdb52d04dc20036dbd8313ed055": {
            "changes": [
                {
                    "field": "card.pin_hash",
                    "before": "x",
                    "after": "81dc9bdb52d04dc20036dbd8313ed055",
                }
            ]
        },
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$Rdescud": {
            "description": "migrated row password_hash="
            "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$Rdescud"
        },
    }
    _stored_without(client, sql, tenant, "hash.sent", carriers)
    # A token's hash is what services look a token up by, and cannot be cracked: kept.
    kept = client.record(
        build_event(action="hash.sent", actor_id="u", details={"token_hash": "9f86d081884c7d65"})
    ).event
    assert "9f86d081884c7d65" in json.dumps(json_format.MessageToDict(kept))
