"""The admin RPCs of a tenant's settings and of redaction: read and change the
settings (each change recorded in the log first), and compute the HMAC that
redaction writes for a secret an investigator holds. A mixin of the servicer.

Also the write path's view of redaction: the rules, and the tenant's HMAC key
when its settings ask for HMAC mode."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final, TypeVar

import grpc

from sealtrail.v1 import event_pb2
from sealtrail.v1 import settings_pb2 as pb

from ..domain.access import Principal
from ..domain.errors import FieldViolation, InvalidArgument
from ..domain.etags import etag_of, instant, require_etag
from ..domain.event import CONTROL_CHARACTERS, ChangeDraft, ValidEvent
from ..domain.ip_recording import FULL, NONE, TRUNCATED, recorded_ip
from ..domain.redaction import (
    PERSONAL_DATA_ONLY,
    Redactor,
    compared_name,
    hmac_token,
    names_nothing,
    redact_event,
    tenant_key,
)
from ..store.appender import Appender
from ..store.changes import Changes, refuse_if_erased
from ..store.database import Database
from ..store.tenant_settings import (
    SettingsCache,
    TenantSettings,
    read_settings,
    with_catalog,
    write_settings,
)
from ..turns import Turns
from .audited import record_access
from .guard import current_principal
from .update_mask import update_paths

Context = grpc.aio.ServicerContext[Any, Any]
Number = TypeVar("Number", bound=int)  # an enum's ValueType

_MODE_NAMES: Final = {pb.REDACTION_MODE_REPLACE: "replace", pb.REDACTION_MODE_HMAC: "hmac"}
_MODE_NUMBERS: Final = {name: number for number, name in _MODE_NAMES.items()}
_IP_RECORDING_NAMES: Final = {
    pb.IP_RECORDING_UNSPECIFIED: FULL,  # what a tenant that never chose has
    pb.IP_RECORDING_FULL: FULL,
    pb.IP_RECORDING_TRUNCATED: TRUNCATED,
    pb.IP_RECORDING_NONE: NONE,
}
_IP_RECORDING_NUMBERS: Final = {
    FULL: pb.IP_RECORDING_FULL,
    TRUNCATED: pb.IP_RECORDING_TRUNCATED,
    NONE: pb.IP_RECORDING_NONE,
}
SETTABLE: Final = ("redaction_mode", "strict_actions", "personal_data_fields", "ip_recording")
MAX_SECRET_BYTES: Final = 65_536
MAX_PERSONAL_DATA_FIELDS: Final = 64
MAX_PERSONAL_DATA_FIELD: Final = 64


def _chosen(names: Mapping[Number, str], number: Number, *, field: str, allowed: str) -> str:
    """The setting's name for an enum number an update sent, or INVALID_ARGUMENT
    naming `field` and the values it takes for a number `names` lacks (unknown,
    or a zero that chooses nothing)."""
    name = names.get(number)
    if name is None:
        raise InvalidArgument.field(field, f"must be {allowed}")
    return name


def _message(settings: TenantSettings) -> pb.TenantSettings:
    message = pb.TenantSettings(
        redaction_mode=_MODE_NUMBERS[settings.redaction_mode],
        strict_actions=settings.strict_actions,
        personal_data_fields=settings.personal_data_fields,
        ip_recording=_IP_RECORDING_NUMBERS[settings.ip_recording],
        etag=_etag(settings),
    )
    if settings.updated_at is not None:
        message.update_time.FromDatetime(settings.updated_at)
    return message


def _etag(settings: TenantSettings) -> str:
    """The settings' etag (AIP-154, ADR 0035). `strict_actions` enters it only
    when on: settings with it off keep the etag of a release without it
    (7f202ce1), which a process of that release, sharing the database during
    a rolling upgrade, computes for them; read from one process and sent to
    the other, it would otherwise be refused (ETAG_MISMATCH). So do the
    personal-data fields, when there are any, and the IP recording, when
    not full (ADR 0154)."""
    fields: dict[str, object] = {
        "redaction_mode": settings.redaction_mode,
        "update_time": instant(settings.updated_at),
    }
    if settings.strict_actions:
        fields["strict_actions"] = True
    if settings.personal_data_fields:
        fields["personal_data_fields"] = list(settings.personal_data_fields)
    if settings.ip_recording != FULL:
        fields["ip_recording"] = settings.ip_recording
    return etag_of(fields)


def _update_paths(request: pb.UpdateTenantSettingsRequest) -> frozenset[str]:
    """The fields the request changes: those its mask names, or (no mask)
    every field it sets."""
    paths = update_paths(request.update_mask, SETTABLE) or frozenset(
        name for name in SETTABLE if getattr(request.settings, name)
    )
    if not paths:
        raise InvalidArgument.field("settings", "sets no field to change")
    return paths


def _personal_data_fields(names: Sequence[str]) -> tuple[str, ...]:
    """The names as the settings keep them: each refused as the operator's
    SEALTRAIL_REDACT_FIELDS are (one that is nothing once compared would
    deny every key), and of 1 to 64 characters; names alike once compared
    (`ssn`, `SSN`) kept once, the first as sent."""
    where = "settings.personal_data_fields"
    if len(names) > MAX_PERSONAL_DATA_FIELDS:
        raise InvalidArgument.field(
            where, f"has {len(names)} names; at most {MAX_PERSONAL_DATA_FIELDS}"
        )
    violations = []
    kept: dict[str, str] = {}
    for index, name in enumerate(names):
        if not 1 <= len(name) <= MAX_PERSONAL_DATA_FIELD:
            said = f"has {len(name)} characters; send 1 to {MAX_PERSONAL_DATA_FIELD}"
        elif CONTROL_CHARACTERS.search(name):
            # As an event's names are; a NUL was refused by PostgreSQL, INTERNAL.
            said = "must not contain control characters"
        elif names_nothing(name):
            said = "is no name (keys are compared without `_ - .` and spaces)"
        else:
            kept.setdefault(compared_name(name), name)
            continue
        violations.append(FieldViolation(f"{where}[{index}]", said))
    if violations:
        raise InvalidArgument(violations)
    return tuple(kept.values())


def _changed(before: TenantSettings, after: TenantSettings) -> list[ChangeDraft]:
    return [
        ChangeDraft(name, _value(getattr(before, name)), _value(getattr(after, name)))
        for name in SETTABLE
        if getattr(before, name) != getattr(after, name)
    ]


def _value(setting: object) -> object:
    """A setting as its record's change holds it (names as a JSON array)."""
    return list(setting) if isinstance(setting, tuple) else setting


def _said(changes: list[ChangeDraft]) -> str:
    """The record's description of the changes."""
    said = []
    for change in changes:
        if change.field == "redaction_mode":
            said.append(f"Redaction mode changed from {change.before} to {change.after}")
        elif change.field == "ip_recording":
            said.append(f"IP recording changed from {change.before} to {change.after}")
        elif change.field == "personal_data_fields":
            # Counted, not listed: 64 names of 64 characters outgrow a description.
            said.append(
                f"Personal-data fields changed from {len(change.before)}"
                f" to {len(change.after)} names"
            )
        else:
            said.append(f"Strict actions turned {'on' if change.after else 'off'}")
    return "; ".join(said)


class SettingsRpcs:
    _db: Database
    _changes: Changes
    _appender: Appender
    _clock: Callable[[], datetime]
    _settings_cache: SettingsCache
    _redactor: Redactor | None
    _redaction_secret: bytes

    async def _redact(self, tenant_id: str, events: list[ValidEvent]) -> list[ValidEvent]:
        """The events as they may be stored: their client's address kept and
        their secrets and personal data redacted as the tenant's settings say.
        The address after the server located its country (`_located`), before
        the event is hashed: never stored whole, and a retry with the same
        whole address reduced alike, to the same event."""
        settings = await self._settings_cache.get(tenant_id)
        if settings.ip_recording != FULL:
            events = [recorded_ip(event, settings.ip_recording) for event in events]
        # The tenant's personal-data names' redactor, kept per set of names:
        # none made per call, and the rules' own for a tenant without any.
        # With the deployment's redaction off, its names alone (ADR 0154).
        redactor = (self._redactor or PERSONAL_DATA_ONLY).for_personal_data(
            settings.personal_data_fields
        )
        if redactor is PERSONAL_DATA_ONLY:
            return events  # redaction off, and no names
        hmac_mode = settings.redaction_mode == "hmac"
        key = tenant_key(self._redaction_secret, tenant_id) if hmac_mode else None
        redacted = []
        turns = Turns()  # a RecordBatch's events of many details took seconds
        for event in events:
            await turns.take()
            stored = redact_event(event, redactor, hmac_key=key)
            if stored is not event and event.idempotency_key is not None:
                # What an attempt before a change of mode stored, or one after
                # it will, and what one before a rule was added stored: the same
                # request (ADR 0011). The tenant's key is derived only then in
                # replace mode, not for every call.
                other_key = None if hmac_mode else tenant_key(self._redaction_secret, tenant_id)
                otherwise = redactor.redact(event.body, hmac_key=other_key).body
                stored = replace(stored, stored_otherwise=(otherwise, event.body))
            redacted.append(stored)
        return redacted

    async def _strict_catalog(self, tenant_id: str) -> Mapping[str, str | None] | None:
        """The tenant's action catalogue (each action, its declared category)
        if its settings have `strict_actions` on, as this process keeps them
        (read at most once per SEALTRAIL_SETTINGS_CACHE_SECONDS); else None."""
        settings = await self._settings_cache.get(tenant_id)
        if not settings.strict_actions:
            return None
        return settings.catalog or {}

    async def GetTenantSettings(
        self, request: pb.GetTenantSettingsRequest, context: Context
    ) -> pb.GetTenantSettingsResponse:
        tenant_id = current_principal().tenant_id
        async with self._db.connection(tenant_id) as conn:
            settings = await read_settings(conn, tenant_id)
            await refuse_if_erased(conn, tenant_id)  # not the defaults of no one
        return pb.GetTenantSettingsResponse(settings=_message(settings))

    async def UpdateTenantSettings(
        self, request: pb.UpdateTenantSettingsRequest, context: Context
    ) -> pb.UpdateTenantSettingsResponse:
        principal = current_principal()
        paths = _update_paths(request)
        mode = None
        if "redaction_mode" in paths:
            mode = _chosen(
                _MODE_NAMES,
                request.settings.redaction_mode,
                field="settings.redaction_mode",
                allowed="REDACTION_MODE_REPLACE or REDACTION_MODE_HMAC",
            )
        ip_recording = None
        if "ip_recording" in paths:
            ip_recording = _chosen(
                _IP_RECORDING_NAMES,
                request.settings.ip_recording,
                field="settings.ip_recording",
                allowed="IP_RECORDING_FULL, IP_RECORDING_TRUNCATED or IP_RECORDING_NONE",
            )
        personal_data = None
        if "personal_data_fields" in paths:
            personal_data = _personal_data_fields(request.settings.personal_data_fields)
        async with self._changes.exclusive(
            principal.tenant_id, "settings", caller=principal.token_id
        ) as conn:
            before = await read_settings(conn, principal.tenant_id)
            require_etag(request.settings.etag, _etag(before), what="tenant settings")
            wanted = replace(
                before,
                redaction_mode=before.redaction_mode if mode is None else mode,
                strict_actions=(
                    request.settings.strict_actions
                    if "strict_actions" in paths
                    else before.strict_actions
                ),
                personal_data_fields=(
                    before.personal_data_fields if personal_data is None else personal_data
                ),
                ip_recording=before.ip_recording if ip_recording is None else ip_recording,
            )
            changes = _changed(before, wanted)
            if not changes:
                return pb.UpdateTenantSettingsResponse(settings=_message(before))
            after = await write_settings(
                conn,
                principal.tenant_id,
                redaction_mode=wanted.redaction_mode,
                strict_actions=wanted.strict_actions,
                personal_data_fields=wanted.personal_data_fields,
                ip_recording=wanted.ip_recording,
            )
            # Recorded last, in the change's transaction (ADR 0075).
            event_id = await self._record_change(principal, changes)
            # As the write path keeps them: with the catalogue, if strict. Put
            # in the cache after the commit only if nothing was put or
            # forgotten since this read: a SetActionDescription here that
            # committed after it and forgot the kept settings before the put
            # was undone for the cache's time, its catalogue read before it.
            puts = self._settings_cache.puts
            kept = await with_catalog(conn, principal.tenant_id, after)
        self._settings_cache.put_unless_changed(principal.tenant_id, kept, puts=puts)
        return pb.UpdateTenantSettingsResponse(settings=_message(after), event_id=event_id)

    async def _record_change(self, principal: Principal, changes: list[ChangeDraft]) -> str:
        return (
            await record_access(
                self._appender,
                principal,
                now=self._clock(),
                action="tenant.settings_updated",
                category=event_pb2.CATEGORY_CONFIGURATION,
                resource_type="tenant",
                description=_said(changes),
                changes=changes,
            )
        ).event_id

    async def HashSecret(
        self, request: pb.HashSecretRequest, context: Context
    ) -> pb.HashSecretResponse:
        size = len(request.value.encode())
        if not 1 <= size <= MAX_SECRET_BYTES:
            raise InvalidArgument.field("value", f"has {size} bytes; send 1 to {MAX_SECRET_BYTES}")
        principal = current_principal()
        token = hmac_token(tenant_key(self._redaction_secret, principal.tenant_id), request.value)
        # Recorded as any read: each guess at a secret behind an HMAC in the log
        # (a password from a dictionary) leaves a trace, the HMAC it tried.
        await record_access(
            self._appender,
            principal,
            now=self._clock(),
            action="tenant.secret_hashed",
            category=event_pb2.CATEGORY_SECURITY,
            resource_type="tenant",
            description="Computed the HMAC of a secret, to search the log for it",
            details={"hmac": token},
        )
        return pb.HashSecretResponse(hmac=token)
