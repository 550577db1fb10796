"""Reading the audit log is itself audited: each Query (its first page), stream
subscription, export and VerifyLog, each token or settings change, is recorded
in the caller's log as an event attributed to the calling token, admins
included. Such an event is recorded before the call answers: no read or change
goes unrecorded, and if recording fails the call fails."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Final

import psycopg
from google.protobuf import json_format

from sealtrail.v1 import event_pb2

from ..domain.access import Principal
from ..domain.errors import SealtrailError
from ..domain.event import (
    OWN_ACTIONS,
    RESERVED_ACTION_PREFIX,
    ChangeDraft,
    EventDraft,
    correlate,
    located,
    plain_values,
    validate_event,
    wants_location,
)
from ..domain.ip_recording import FULL, recorded_ip
from ..domain.redaction import PERSONAL_DATA_ONLY, Redactor, tenant_key
from ..store.appended import Appended
from ..store.appender import Appender
from ..store.changes import change_connection
from ..store.tenant_settings import SettingsCache, read_settings
from ..telemetry.context import current_correlation
from .callers import current_caller
from .convert import caller_view

# The key of a record's details that holds the person the calling service
# says it called on behalf of (api/callers.py, ADR 0146).
ON_BEHALF_OF: Final = "on_behalf_of"


def filter_details(event_filter: event_pb2.EventFilter) -> dict[str, Any]:
    """A filter as the details of the event that records its use."""
    return json_format.MessageToDict(event_filter)


class FilterDetails:
    """A caller's filter as the details of the access record of its use,
    redacted as the tenant's events are: a secret pasted into a search (to
    find where a leaked token appears) was committed in clear to the log for
    good, in the record of that very search (helper-66). So are the filters
    of sinks and alert rules in the records of their changes (helper-119),
    and the names and reasons callers give (a token named after the secret
    it replaces, helper-129)."""

    def __init__(
        self, redactor: Redactor | None, settings: SettingsCache, *, redaction_secret: bytes
    ) -> None:
        self._redactor = redactor
        self._settings = settings
        self._secret = redaction_secret

    async def __call__(self, tenant_id: str, event_filter: event_pb2.EventFilter) -> dict[str, Any]:
        return await self.redacted(tenant_id, filter_details(event_filter))

    async def redacted(self, tenant_id: str, details: dict[str, Any]) -> dict[str, Any]:
        """`details`, a filter as JSON (its API form), redacted as the
        tenant's events are: by the secrets' rules and its personal-data
        names (ADR 0154)."""
        settings = await self._settings.get(tenant_id)  # kept: no read per call
        # With the deployment's redaction off, the tenant's names alone.
        redactor = (self._redactor or PERSONAL_DATA_ONLY).for_personal_data(
            settings.personal_data_fields
        )
        # Nearly every filter holds nothing to redact: its key derived only then.
        if redactor is PERSONAL_DATA_ONLY or not redactor.redact({"details": details}).found:
            return details
        key = tenant_key(self._secret, tenant_id) if settings.redaction_mode == "hmac" else None
        redacted: dict[str, Any] = redactor.redact({"details": details}, hmac_key=key).body[
            "details"
        ]
        return redacted

    async def text(self, tenant_id: str, text: str) -> str:
        """A caller's name or reason as Sealtrail's own records show it,
        redacted as the tenant's events are."""
        return str((await self.redacted(tenant_id, {"text": text}))["text"])


def weakening_severity(weakens: Collection[object] | bool) -> event_pb2.Severity.ValueType:
    """The severity of the record of a change: WARNING if it weakens the audit
    trail (`weakens`: the reasons, or whether it does; domain/weakening.py),
    for a SIEM rule "severity >= warning from Sealtrail" pages on those
    changes and on no other (ADR 0066); INFO otherwise."""
    return event_pb2.SEVERITY_WARNING if weakens else event_pb2.SEVERITY_INFO


def weakening_details(reasons: Collection[str]) -> dict[str, Any]:
    """What a change's record adds to its details when the change weakens the
    trail: why, where the action alone does not say it (a `sink.updated`
    that paused the sink); nothing otherwise."""
    return {"weakens": list(reasons)} if reasons else {}


def weakened(description: str, reasons: Collection[str]) -> str:
    """`description`, with the reasons the change weakens the trail, if any."""
    if not reasons:
        return description
    return f"{description}, weakening it: {', '.join(r.replace('_', ' ') for r in reasons)}"


async def record_access(
    appender: Appender,
    principal: Principal,
    *,
    now: datetime,
    action: str,
    description: str,
    category: event_pb2.Category.ValueType = event_pb2.CATEGORY_DATA_ACCESS,
    severity: event_pb2.Severity.ValueType = event_pb2.SEVERITY_INFO,
    outcome: event_pb2.Outcome.ValueType = event_pb2.OUTCOME_SUCCESS,
    resource_type: str = "audit_log",
    resource_id: str | None = None,
    details: dict[str, Any] | None = None,
    changes: list[ChangeDraft] | None = None,
) -> Appended:
    """Record what `principal` did in its tenant's log; the new event as stored.
    It names the token (`actor.display_name`) and says where the call came
    from (`context.ip`, `context.user_agent`), as a service's events do, and
    the country the server located the address in (GeoIP, marked `geoip`),
    as it locates a service's event sent with an address alone; and the
    person the caller says it calls on behalf of, as its word, in
    `details.on_behalf_of` (ADR 0146): the token stays the actor."""
    caller = current_caller()
    if caller.on_behalf_of:
        details = {**(details or {}), ON_BEHALF_OF: caller.on_behalf_of}
    return await record_event(
        appender,
        principal.tenant_id,
        actor_type=event_pb2.ACTOR_TYPE_API_KEY,
        actor_id=principal.token_id,
        actor_display_name=principal.name,
        ip=caller.ip,
        user_agent=caller.user_agent,
        located_country=caller.country,
        now=now,
        action=action,
        description=description,
        category=category,
        severity=severity,
        outcome=outcome,
        resource_type=resource_type,
        resource_id=principal.tenant_id if resource_id is None else resource_id,
        details=details,
        changes=changes,
    )


async def record_event(
    appender: Appender,
    tenant_id: str,
    *,
    actor_type: event_pb2.ActorType.ValueType,
    actor_id: str,
    actor_display_name: str = "",
    ip: str = "",
    user_agent: str = "",
    located_country: str = "",
    now: datetime,
    action: str,
    description: str,
    category: event_pb2.Category.ValueType,
    severity: event_pb2.Severity.ValueType = event_pb2.SEVERITY_INFO,
    outcome: event_pb2.Outcome.ValueType = event_pb2.OUTCOME_SUCCESS,
    resource_type: str,
    resource_id: str,
    details: dict[str, Any] | None = None,
    changes: list[ChangeDraft] | None = None,
    idempotency_key: str = "",
) -> Appended:
    """Record an event Sealtrail itself writes (not redacted: its values are
    Sealtrail's own; its caller's `ip` kept as the tenant's IP recording
    says, as its events' are); the event as stored (`deduplicated`, with no id, when
    `idempotency_key` found it recorded already). SealtrailError if it is
    refused. `located_country`: the country the server located `ip` in
    (its GeoIP database's), recorded marked as the server's (`geoip`)."""
    if action not in OWN_ACTIONS and not action.startswith(RESERVED_ACTION_PREFIX):
        # Every caller could record it too: a forged one would pass for Sealtrail's.
        raise ValueError(f"{action} is not among domain/event.py's OWN_ACTIONS")
    draft = EventDraft(
        action=action,
        category=category,
        severity=severity,
        outcome=outcome,
        actor_type=actor_type,
        actor_id=actor_id,
        actor_display_name=actor_display_name,
        description=description,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details or None,
        changes=changes or [],
        idempotency_key=idempotency_key,
        ip=ip,
        user_agent=user_agent,
        plain=plain_values(details, changes or []),
    )
    correlate(draft, current_correlation())
    valid = validate_event(draft, now=now, path=action, own=True)
    if located_country and wants_location(valid) is not None:
        valid = located(valid, located_country)
    # Made by a change (store/changes.py), it commits with the change's
    # transaction, or not at all (ADR 0075).
    within = change_connection(tenant_id)
    if ip:  # located first, from the whole address, as Record does
        valid = recorded_ip(valid, await _ip_recording(appender, tenant_id, within))
    view = caller_view(valid).SerializeToString()
    [appended] = await (
        appender.append(tenant_id, [valid], [view])
        if within is None
        else appender.append_within(within, tenant_id, [valid], [view])
    )
    if isinstance(appended, SealtrailError):
        raise appended
    return appended


async def _ip_recording(
    appender: Appender, tenant_id: str, within: psycopg.AsyncConnection[Any] | None
) -> str:
    """How much of a caller's address the tenant's records keep (ADR 0154):
    read in a change's transaction, so that the record of a change of it
    follows it (a tenant choosing `none` finds no address in that record
    either); else as the appender's settings cache keeps it (no read per
    record); whole without one (the operator's commands)."""
    if within is not None:
        return (await read_settings(within, tenant_id)).ip_recording
    if appender.settings is None:
        return FULL
    return (await appender.settings.get(tenant_id)).ip_recording
