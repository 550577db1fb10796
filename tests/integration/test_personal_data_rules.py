"""Personal-data rules per tenant (ADR 0154): the field names a tenant's
settings list (`personal_data_fields`) are redacted from its events as the
deployment's SEALTRAIL_REDACT_FIELDS are, under the rule `personal_data`
(pseudonymised in HMAC mode); another tenant's events, and what redaction
remembers of them, are untouched by them; the names are limited and each
change is recorded."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.sql
import pytest
from google.protobuf import json_format

from sealtrail import (
    AbortedError,
    AlreadyExistsError,
    AsyncAuditClient,
    AuditClient,
    InvalidArgumentError,
    build_event,
    build_filter,
)
from sealtrail.v1 import settings_pb2
from sealtrail_server.domain.redaction import hmac_token, tenant_key
from tests.conftest import REDACTION_SECRET, ServerThread

SSN = "123-45-6789"
BIRTH = "1980-04-01"
PHONE = "+44 20 7946 0958"
REDACTED = "[REDACTED:personal_data]"


def _stored(sql: psycopg.Connection[Any], tenant: str, value: str) -> int:
    """How many of the tenant's rows hold `value`, in any column or view."""
    row = sql.execute(
        "SELECT count(*) FROM events e WHERE tenant_id = %s AND (strpos(e::text, %s) > 0"
        " OR position(convert_to(%s, 'UTF8') IN e.caller_view) > 0"
        " OR position(convert_to(%s, 'UTF8') IN e.event_view) > 0)",
        [tenant, value, value, value],
    ).fetchone()
    assert row is not None
    return int(row[0])


def _with_personal_data(action: str = "customer.update") -> Any:
    """An event carrying each personal value where the rules look for it."""
    return build_event(
        action=action,
        actor_id="u",
        description=f"Corrected ssn={SSN}",
        details={
            "customer": {"SSN": SSN, "name": "Ann"},
            "contact_phone": PHONE,
            "fields": [{"name": "phone", "value": PHONE}],
        },
        changes=[{"field": "dateOfBirth", "before": BIRTH, "after": "1981-02-02"}],
    )


def test_a_value_under_a_personal_data_field_is_not_stored(
    client: AuditClient, sql: psycopg.Connection[Any], tenant: str
) -> None:
    answer = client.set_personal_data_fields(["ssn", "date_of_birth", "phone"])
    assert list(answer.settings.personal_data_fields) == ["ssn", "date_of_birth", "phone"]
    event = client.record(_with_personal_data()).event
    assert event.description == f"Corrected ssn={REDACTED}"
    assert json_format.MessageToDict(event.details) == {
        "customer": {"SSN": REDACTED, "name": "Ann"},
        "contact_phone": REDACTED,
        "fields": [{"name": "phone", "value": REDACTED}],
    }
    change = event.changes[0]
    assert (change.before.string_value, change.after.string_value) == (REDACTED, REDACTED)
    for value in (SSN, BIRTH, PHONE):
        assert _stored(sql, tenant, value) == 0, value
    assert client.get_event(event.id) == event  # the answer is what was stored

    # The change was recorded, before and after.
    recorded = client.get_event(answer.event_id)
    assert recorded.action == "tenant.settings_updated"
    [names] = recorded.changes
    assert names.field == "personal_data_fields"
    assert json_format.MessageToDict(names.before) == []
    assert json_format.MessageToDict(names.after) == ["ssn", "date_of_birth", "phone"]
    assert client.get_tenant_settings().personal_data_fields == ["ssn", "date_of_birth", "phone"]

    # Cleared, values are stored as sent again (and the secrets' rules still apply).
    cleared = client.set_personal_data_fields([])
    assert cleared.event_id and not cleared.settings.personal_data_fields
    kept = client.record(
        action="customer.update", actor_id="u", details={"ssn": SSN, "password": "hunter22"}
    ).event
    assert json_format.MessageToDict(kept.details) == {
        "ssn": SSN,
        "password": "[REDACTED:field_name]",
    }


def test_hmac_mode_pseudonymises_personal_data(
    client: AuditClient, sql: psycopg.Connection[Any], tenant: str
) -> None:
    client.set_redaction_mode("hmac")
    client.set_personal_data_fields(["ssn"])
    first = client.record(action="customer.update", actor_id="u", details={"ssn": SSN}).event
    second = client.record(
        action="customer.update", actor_id="v", description=f"ssn={SSN} checked"
    ).event
    expected = hmac_token(tenant_key(REDACTION_SECRET, tenant), SSN)
    assert client.hash_secret(SSN) == expected  # an investigator holding it finds it
    assert json_format.MessageToDict(first.details) == {"ssn": expected}
    assert second.description == f"ssn={expected} checked"  # equal values still correlate
    assert _stored(sql, tenant, SSN) == 0


def test_another_tenants_events_and_what_redaction_remembers_are_untouched(
    client_for: Any, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """Tenant A has no personal-data rules, B has `ssn`: the same key and text
    are stored as sent for A and redacted for B, whichever came first. The
    verdict redaction remembers on a key under A's rules (no secret) must not
    spare B's events a look under B's."""
    a, b = client_for(f"{tenant}-a"), client_for(f"{tenant}-b")
    b.set_personal_data_fields(["ssn"])
    for _ in range(2):  # A, then B, then A again: no verdict of one serves the other
        sent = a.record(action="customer.update", actor_id="u", details={"ssn": SSN}).event
        assert json_format.MessageToDict(sent.details) == {"ssn": SSN}
        hidden = b.record(action="customer.update", actor_id="u", details={"ssn": SSN}).event
        assert json_format.MessageToDict(hidden.details) == {"ssn": REDACTED}
    assert _stored(sql, f"{tenant}-a", SSN) == 2
    assert _stored(sql, f"{tenant}-b", SSN) == 0


def _violations(error: BaseException) -> list[str]:
    assert isinstance(error, InvalidArgumentError)
    return [field for field, _ in error.field_violations]


def test_personal_data_fields_are_limited_naming_each_refused(client: AuditClient) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.set_personal_data_fields([f"field{n}" for n in range(65)])
    assert _violations(refused.value) == ["settings.personal_data_fields"]
    with pytest.raises(InvalidArgumentError) as refused:
        client.set_personal_data_fields(["ssn", "", "x" * 65, "_.-", "phone"])
    assert _violations(refused.value) == [
        "settings.personal_data_fields[1]",
        "settings.personal_data_fields[2]",
        "settings.personal_data_fields[3]",
    ]
    # A control character (NUL was INTERNAL: PostgreSQL refuses it in text).
    with pytest.raises(InvalidArgumentError) as refused:
        client.set_personal_data_fields(["ssn", "a\x00b", "c\x9f"])
    assert _violations(refused.value) == [
        "settings.personal_data_fields[1]",
        "settings.personal_data_fields[2]",
    ]
    assert not client.get_tenant_settings().personal_data_fields  # nothing changed
    # Names alike once compared are kept once, the first as sent; 64 of 64 are taken.
    alike = client.set_personal_data_fields(["date_of_birth", "DateOfBirth", "date-of-birth"])
    assert list(alike.settings.personal_data_fields) == ["date_of_birth"]
    most = [f"{n:02d}".rjust(64, "f") for n in range(64)]
    assert list(client.set_personal_data_fields(most).settings.personal_data_fields) == most


@pytest.mark.parametrize(
    ("column", "value"), [("personal_data_fields", ["phone"]), ("ip_recording", "none")]
)
def test_the_etag_changes_with_each_new_setting_alone(
    client: AuditClient, sql: psycopg.Connection[Any], tenant: str, column: str, value: object
) -> None:
    """Written past the server, `updated_at` kept: the etag read before must
    no longer pass, or a change would be made over one its sender never saw
    (an update time changes with every write the server makes, so a test
    through the server alone could not tell; helper-563 finding 9)."""
    read = client.set_strict_actions(True).settings  # a row of its own
    sql.execute(
        psycopg.sql.SQL("UPDATE tenant_settings SET {} = %s WHERE tenant_id = %s").format(
            psycopg.sql.Identifier(column)
        ),
        [value, tenant],
    )
    assert client.get_tenant_settings().update_time == read.update_time
    with pytest.raises(AbortedError):
        client.set_strict_actions(False, etag=read.etag)


def test_the_etag_covers_the_new_settings_and_the_table_checks_them(
    client: AuditClient, sql: psycopg.Connection[Any], tenant: str
) -> None:
    read = client.get_tenant_settings()
    named = client.set_personal_data_fields(["ssn"], etag=read.etag).settings
    assert named.etag != read.etag
    with pytest.raises(AbortedError):  # the settings changed since that etag
        client.set_ip_recording("none", etag=read.etag)
    truncating = client.set_ip_recording("truncated", etag=named.etag).settings
    assert truncating.etag != named.etag
    assert client.get_tenant_settings().etag == truncating.etag
    # Migration 0066's CHECKs, for a writer other than the server.
    for column, value in (
        ("personal_data_fields", [""]),
        ("personal_data_fields", [f"n{i}" for i in range(65)]),
        ("ip_recording", "partial"),
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            sql.execute(
                psycopg.sql.SQL("UPDATE tenant_settings SET {} = %s WHERE tenant_id = %s").format(
                    psycopg.sql.Identifier(column)
                ),
                [value, tenant],
            )


def test_sealtrails_own_records_keep_no_personal_data_the_caller_gave(
    client: AuditClient, sql: psycopg.Connection[Any], tenant: str
) -> None:
    """A search's filter, a token's name: Sealtrail's records of them are the
    tenant's events too, redacted by its personal-data names as well as by
    the secrets' rules (helper-563 finding 1)."""
    client.set_personal_data_fields(["ssn"])
    list(client.query(build_filter(text=f"ssn={SSN}"), limit=1))
    client.create_token("reader", name=f"for ssn={SSN}")
    assert _stored(sql, tenant, SSN) == 0
    [searched] = client.query(build_filter(actions="audit_log.queried"), limit=1)
    assert json_format.MessageToDict(searched.details)["filter"]["text"] == f"ssn={REDACTED}"


def test_personal_data_rules_apply_with_the_deployments_redaction_off(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """SEALTRAIL_REDACTION=false turns the operator's rules off (for
    measuring their cost); the tenant's personal-data names are its own and
    still apply, alone: a secret is stored as sent (helper-563 finding 5)."""
    bare = ServerThread(migrated_database_url, redaction=False)
    try:
        with AuditClient(bare.target, token=bare.token(tenant)) as client:
            client.set_personal_data_fields(["ssn"])
            event = client.record(
                action="customer.update",
                actor_id="u",
                description=f"ssn={SSN}",
                details={"ssn": SSN, "password": "hunter22", "consented": True},
            ).event
            assert event.description == f"ssn={REDACTED}"
            assert json_format.MessageToDict(event.details) == {
                "ssn": REDACTED,
                "password": "hunter22",
                "consented": True,
            }
            list(client.query(build_filter(text=f"ssn={SSN}"), limit=1))
        assert _stored(sql, tenant, SSN) == 0
    finally:
        bare.close()


def test_a_retry_across_a_change_of_names_is_the_original_event(client: AuditClient) -> None:
    """As across a change of redaction mode or IP recording: the first
    attempt stored a value as the names then said, the retry is redacted as
    they say now (helper-563 finding 7). Another event under the key is
    still refused."""

    def customer_update(key: str, name: str = "Ann") -> Any:
        event = build_event(
            action="customer.update",
            actor_id="u",
            description=f"Corrected ssn={SSN} for {name}",
            details={"ssn": SSN, "password": "hunter22", "name": name, "flag": True},
        )
        event.idempotency_key = key
        return event

    client.set_personal_data_fields(["ssn"])
    first = client.record(customer_update("k-rm"))
    client.set_personal_data_fields([])  # names removed since
    retried = client.record(customer_update("k-rm"))
    assert retried.deduplicated and retried.event == first.event
    with pytest.raises(AlreadyExistsError):
        client.record(customer_update("k-rm", name="Bo"))
    added = client.record(customer_update("k-add"))
    client.set_personal_data_fields(["ssn"])  # names added since
    again = client.record(customer_update("k-add"))
    assert again.deduplicated and again.event == added.event


async def test_several_settings_are_changed_in_one_update_or_none_is(
    server: ServerThread, tenant: str
) -> None:
    """`update_tenant_settings` sends every setting given in one update (one
    field mask), as UpdateTenantSettings takes them: one record of the change,
    and a refused name refuses the whole of it."""
    updated = build_filter(actions=["tenant.settings_updated"])
    with AuditClient(server.target, token=server.token(tenant)) as client:
        changed = client.update_tenant_settings(
            strict_actions=True, personal_data_fields=["ssn"], ip_recording="truncated"
        )
        with pytest.raises(InvalidArgumentError) as refused:
            client.update_tenant_settings(ip_recording="none", personal_data_fields=["ok", "_"])
        assert _violations(refused.value) == ["settings.personal_data_fields[1]"]
        with pytest.raises(ValueError, match="give a setting to change"):
            client.update_tenant_settings()
        records = list(client.query(updated))
    settings = changed.settings
    assert (settings.strict_actions, list(settings.personal_data_fields)) == (True, ["ssn"])
    assert settings.ip_recording == settings_pb2.IP_RECORDING_TRUNCATED
    assert [record.id for record in records] == [changed.event_id]
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as asynchronous:
        answer = await asynchronous.update_tenant_settings(
            strict_actions=False, redaction_mode="hmac", etag=settings.etag
        )
    assert answer.event_id and not answer.settings.strict_actions
    assert answer.settings.redaction_mode == settings_pb2.REDACTION_MODE_HMAC
    assert answer.settings.ip_recording == settings_pb2.IP_RECORDING_TRUNCATED  # kept
