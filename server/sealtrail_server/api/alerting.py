"""The admin RPCs of alerting: create, list, update and delete alert rules
(each change recorded in the log before it applies). Evaluation is the
evaluator's (alerts/). A mixin of the servicer."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

import grpc
from google.protobuf import json_format

from sealtrail.v1 import alerting_pb2 as pb
from sealtrail.v1 import event_pb2

from ..alerts.evaluator import Evaluator, condition_of
from ..alerts.routing import delete_rule_routing_its_alerts, hold_sinks
from ..domain.alerts import (
    MAX_RULE_NAME,
    MAX_RULES_PER_TENANT,
    SPIKE_GROUP_BY,
    condition_shown,
    reads_countries,
)
from ..domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from ..domain.etags import etag_of, instant, require_etag
from ..domain.event import MAX_NAME, SEVERITIES, ChangeDraft, parse_uuid
from ..domain.filters import validate_filter
from ..domain.names import name_problem
from ..domain.weakening import RuleSettings, rule_weakenings
from ..forward.forwarder import Forwarder
from ..geoip import CountryLocator
from ..newer_objects import NEWER, condition_not_understood
from ..store import alerts as store
from ..store import sinks as sink_store
from ..store.appender import Appender
from ..store.changes import Changes, refuse_if_erased
from ..store.database import Connection, Database
from ..store.tree import tree_size
from .audited import (
    FilterDetails,
    record_access,
    weakened,
    weakening_details,
    weakening_severity,
)
from .convert import filter_draft
from .denials import Denials
from .guard import current_principal
from .update_mask import replaces_oneof, update_paths

Context = grpc.aio.ServicerContext[Any, Any]

_GROUP_BY: Final = {
    pb.ALERT_GROUP_BY_UNSPECIFIED: "none",
    pb.ALERT_GROUP_BY_ACTOR: "actor",
    pb.ALERT_GROUP_BY_IP: "ip",
    pb.ALERT_GROUP_BY_CREDENTIAL: "credential",
}
_GROUP_BY_NUMBERS: Final = {name: number for number, name in _GROUP_BY.items()}
_SEVERITY_NUMBERS: Final = {name: number for number, name in SEVERITIES.items()}


def stored_condition(rule: pb.AlertRule, kept: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rule's condition as stored: its kind, filter and settings, validated.
    `kept`: the rule's stored condition, not refused again when given back
    unchanged (a filter stored before such filters were refused)."""
    kind = rule.WhichOneof("condition")
    if kind is None:
        raise InvalidArgument.field("rule.condition", "one condition is required")
    message = getattr(rule, kind)
    path = f"rule.{kind}"
    validate_filter(filter_draft(message.filter), path=f"{path}.filter")
    stored: dict[str, Any] = {"kind": kind, "filter": json_format.MessageToDict(message.filter)}
    settings: dict[str, Any] = {}
    if kind in ("threshold", "spike") and message.group_by not in _GROUP_BY:
        raise InvalidArgument.field(f"{path}.group_by", f"unknown enum value {message.group_by}")
    if kind == "threshold":
        settings = {
            "count": message.count,
            "window_seconds": message.window_seconds,
            "group_by": _GROUP_BY[message.group_by],
        }
        if message.exact_actor_ids:  # absent by default: the rules stored before fold too
            settings["exact_actor_ids"] = True
    elif kind == "spike":
        settings = {
            "window_seconds": message.window_seconds,
            "baseline_windows": message.baseline_windows,
            "factor": message.factor,
            "min_count": message.min_count,
        }
        # Absent ungrouped: the spike rules stored before read the same. Under
        # a key of its own, which the release before does not know: it leaves
        # a grouped spike rather than judge it ungrouped (docs/operations.md).
        if message.group_by:
            settings[SPIKE_GROUP_BY] = _GROUP_BY[message.group_by]
        # Absent by default, as a threshold's. Only with a grouping by actor,
        # so only on a rule the release before leaves (`spike_group_by`).
        if message.exact_actor_ids:
            settings["exact_actor_ids"] = True
    elif kind == "absence":
        settings = {"window_seconds": message.window_seconds}
    elif kind == "off_hours":
        settings = {
            "time_zone": message.time_zone or "UTC",
            "start_hour": message.start_hour,
            "end_hour": message.end_hour,
            "working_days": sorted(set(message.working_days)) or [1, 2, 3, 4, 5],
        }
    condition = stored | settings
    # Stored as the request gave it, once it is valid.
    condition_of(condition, given=condition != kept)
    return condition


# Said on a rule reading countries where the server locates none: saved all
# the same (a database may be configured later), never silently inert for
# the events sent with an address alone, nor for Sealtrail's own records.
NO_GEOIP_WARNING: Final = (
    "this server has no GeoIP database (SEALTRAIL_GEOIP_DB): the rule sees only countries"
    " callers send, none for events sent with an address alone nor Sealtrail's own records"
)


def _rule_message(stored: store.StoredRule, *, locates_countries: bool) -> pb.AlertRule:
    """The rule as the API answers it; `locates_countries`: whether this
    server has a GeoIP database, else a rule reading countries says so."""
    message = pb.AlertRule(
        id=stored.id,
        name=stored.name,
        severity=event_pb2.Severity.ValueType(_SEVERITY_NUMBERS[stored.severity]),
        sink_ids=stored.sink_ids,
        disabled=stored.disabled,
        fired=stored.fired,
    )
    if not locates_countries and reads_countries(stored.condition):
        message.warnings.append(NO_GEOIP_WARNING)
    # A newer release's rule (newer_objects.py): its condition is left unset,
    # which no rule of this release is, as the sign of it.
    if condition_not_understood(stored.condition) is None:
        _set_condition(message, stored.condition)
    message.create_time.FromDatetime(stored.created_at)
    message.update_time.FromDatetime(stored.updated_at)
    if stored.last_fired_at is not None:
        message.last_fired_time.FromDatetime(stored.last_fired_at)
    message.etag = _etag(stored)
    return message


def _set_condition(message: pb.AlertRule, stored: dict[str, Any]) -> None:
    condition = dict(condition_shown(stored))
    kind = condition.pop("kind")
    target = getattr(message, kind)
    target.SetInParent()  # else a new-IP rule on every event (an empty filter) showed none
    json_format.ParseDict(condition.pop("filter"), target.filter)
    if "group_by" in condition:  # a threshold's, or a grouped spike's
        condition["group_by"] = _GROUP_BY_NUMBERS[condition["group_by"]]
    for name, value in condition.items():
        if isinstance(value, list):
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)


def _etag(rule: store.StoredRule) -> str:
    """The rule's etag (AIP-154, ADR 0035): its definition and when it
    changed; firing changes neither."""
    return etag_of({**_definition(rule), "update_time": instant(rule.updated_at)})


# What an UpdateAlertRule's mask may name: the settings, and the condition by its kind.
_UPDATABLE: Final = (
    "name",
    "severity",
    "sink_ids",
    "disabled",
    *(f.name for f in pb.AlertRule.DESCRIPTOR.oneofs_by_name["condition"].fields),
)


def _definition(rule: store.StoredRule) -> dict[str, Any]:
    """What an admin defines of a rule, as its change events show it."""
    return {
        "name": rule.name,
        "condition": condition_shown(rule.condition),
        "severity": rule.severity,
        "sink_ids": rule.sink_ids,
        "disabled": rule.disabled,
    }


def _settings(rule: store.StoredRule) -> RuleSettings:
    """What decides whether, how loudly and where `rule` fires, to tell a
    change that weakens it (domain/weakening.py)."""
    return RuleSettings(
        condition=condition_of(rule.condition),
        severity=rule.severity,
        sink_ids=tuple(rule.sink_ids),
        disabled=rule.disabled,
    )


def _rule_id(text: str, field: str) -> str:
    """`text` as an alert rule id: INVALID_ARGUMENT naming `field` if it is not one."""
    rule_id = parse_uuid(text)
    if rule_id is None:
        raise InvalidArgument.field(field, "must be an alert rule id (a UUID)")
    return rule_id


async def _stored_rule(conn: Connection, tenant_id: str, rule_id: str) -> store.StoredRule:
    """The tenant's rule of that id; NOT_FOUND if there is none."""
    found = await store.read_rule(conn, tenant_id, rule_id)
    if found is None:
        raise NotFound(f"no alert rule {rule_id}")
    return found


def _refuse_if_newer(rule: store.StoredRule) -> None:
    """FAILED_PRECONDITION for a change of a rule a newer release made
    (newer_objects.py): changed by this one, its row would be rewritten, and
    its change recorded, by what this one knows of it (docs/operations.md)."""
    if condition_not_understood(rule.condition) is not None:
        raise FailedPrecondition(
            f"alert rule {rule.id}: {NEWER} release; use a newer one",
            reason="ALERT_RULE_FROM_A_NEWER_RELEASE",
        )


class AlertingRpcs:
    _db: Database
    _changes: Changes
    _appender: Appender
    _clock: Callable[[], datetime]
    _evaluator: Evaluator
    _forwarder: Forwarder
    _filter_details: FilterDetails
    _denials: Denials | None
    _locator: CountryLocator | None

    def _shown(self, stored: store.StoredRule) -> pb.AlertRule:
        """The rule as answered, warned of what this server lacks for it."""
        return _rule_message(stored, locates_countries=self._locator is not None)

    async def _refuse_managed_sink(self, field: str, sink_id: str, rpc: str) -> None:
        """PERMISSION_DENIED for a rule naming a managed sink (ADR 0070), the
        attempt recorded as any refusal of what the operator keeps. A rule's
        alerts reach each of its sinks whose filter does not take them as
        replays past that filter: routed to the operator's, a tenant's rule
        put records of its choosing past the operator's filter (helper-189)."""
        if self._denials is not None:
            await self._denials.refused(current_principal(), rpc=rpc, reason="operator")
        raise PermissionDenied(
            f"{field}: sink {sink_id} is a deployment-wide sink this deployment's operator"
            " keeps (sealtrail-server sink): alerts reach it only as its filter takes them,"
            " never routed by a rule",
            reason="SINK_MANAGED_BY_OPERATOR",
            metadata={"field": field},
        )

    async def _recorded_rule(self, tenant_id: str, rule: store.StoredRule) -> dict[str, Any]:
        """A rule as its change events record it (`_definition`): a secret in
        its filter (a leaked token to watch for) or its name redacted as the
        tenant's events are, for the log keeps it for good (helper-119)."""
        shown = _definition(rule)
        shown["name"] = await self._filter_details.text(tenant_id, rule.name)
        if "filter" in rule.condition:
            shown["condition"] = shown["condition"] | {
                "filter": await self._filter_details.redacted(tenant_id, rule.condition["filter"])
            }
        return shown

    async def _validated(
        self,
        rule: pb.AlertRule,
        conn: Connection,
        tenant_id: str,
        *,
        rpc: str,
        paths: frozenset[str] | None = None,
        kept_name: str | None = None,
        kept_condition: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The definition `rule` gives, as StoredRule fields, each checked
        (INVALID_ARGUMENT naming it): all of it, or only what an update mask
        names (the rest, unread, stays as stored, even a sink deleted since).
        `kept_name`: the rule's stored name, not refused again (`name_problem`);
        `kept_condition`, its stored condition, likewise (`stored_condition`)."""
        values: dict[str, Any] = {}
        if paths is None or "name" in paths:
            if problem := name_problem(
                rule.name, limit=MAX_RULE_NAME, required=True, kept=kept_name
            ):
                raise InvalidArgument.field("rule.name", problem)
            # Its alerts show it redacted, as their resource's name: longer than
            # one may be, each was refused, and the tenant's alerting stalled.
            shown = await self._filter_details.text(tenant_id, rule.name)
            if len(shown) > MAX_NAME:
                raise InvalidArgument.field(
                    "rule.name",
                    f"is {len(shown)} characters once redacted, as its alerts show it;"
                    f" the limit is {MAX_NAME}",
                )
            values["name"] = rule.name
        if paths is None or replaces_oneof(paths, rule, "condition", path="rule"):
            values["condition"] = stored_condition(rule, kept_condition)
        if paths is None or "severity" in paths:
            severity = SEVERITIES.get(rule.severity or event_pb2.SEVERITY_WARNING)
            if severity is None:
                raise InvalidArgument.field("rule.severity", f"unknown enum value {rule.severity}")
            values["severity"] = severity
        if paths is None or "sink_ids" in paths:
            sink_ids = []
            for index, text in enumerate(rule.sink_ids):
                sink_id = parse_uuid(text)
                managed = (
                    None
                    if sink_id is None
                    else await sink_store.sink_managed(conn, tenant_id, sink_id)
                )
                if managed is None:
                    raise InvalidArgument.field(f"rule.sink_ids[{index}]", "no such sink")
                if managed:
                    await self._refuse_managed_sink(f"rule.sink_ids[{index}]", text, rpc)
                if sink_id in sink_ids:  # else each alert was queued to it twice
                    raise InvalidArgument.field(f"rule.sink_ids[{index}]", "repeats a sink")
                sink_ids.append(sink_id)
            values["sink_ids"] = sink_ids
        if paths is None or "disabled" in paths:
            values["disabled"] = rule.disabled
        return values

    async def CreateAlertRule(
        self, request: pb.CreateAlertRuleRequest, context: Context
    ) -> pb.CreateAlertRuleResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        rule = request.rule
        # One creation at a time: concurrent ones cannot pass the limit together.
        async with self._changes.exclusive(
            tenant_id, "alert_rules", caller=principal.token_id
        ) as conn:
            defined = await self._validated(rule, conn, tenant_id, rpc="CreateAlertRule")
            if await store.count_rules(conn, tenant_id) >= MAX_RULES_PER_TENANT:
                raise FailedPrecondition(
                    f"the tenant has {MAX_RULES_PER_TENANT} alert rules, the most it may have",
                    reason="TOO_MANY_ALERT_RULES",
                )
            head = await tree_size(conn, tenant_id)
            rule_id = str(uuid.uuid4())
            now = self._clock()
            stored = store.StoredRule(
                tenant_id=tenant_id,
                id=rule_id,
                **defined,
                start_seq=head + 1,  # not its own creation event
                created_at=now,
                updated_at=now,
                fired=0,
                last_fired_at=None,
            )
            shown = await self._recorded_rule(tenant_id, stored)
            rule_kind = stored.condition["kind"]
            await store.insert_rule(conn, stored)
            # Recorded last, in the change's transaction (ADR 0075).
            event_id = (
                await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="alert_rule.created",
                    category=event_pb2.CATEGORY_CONFIGURATION,
                    resource_type="alert_rule",
                    resource_id=rule_id,
                    description=f"Alert rule {shown['name']!r} ({rule_kind}) created",
                    details=shown,
                )
            ).event_id
        self._evaluator.rules_changed()
        return pb.CreateAlertRuleResponse(
            rule=self._shown(stored),
            event_id=event_id,
        )

    async def UpdateAlertRule(
        self, request: pb.UpdateAlertRuleRequest, context: Context
    ) -> pb.UpdateAlertRuleResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        rule_id = _rule_id(request.rule.id, "rule.id")
        paths = update_paths(request.update_mask, _UPDATABLE)
        async with self._changes.exclusive(
            tenant_id, f"alert_rule/{rule_id}", caller=principal.token_id
        ) as conn:
            before = await _stored_rule(conn, tenant_id, rule_id)
            _refuse_if_newer(before)
            require_etag(request.rule.etag, _etag(before), what=f"alert rule {rule_id}")
            after = replace(
                before,
                **await self._validated(
                    request.rule,
                    conn,
                    tenant_id,
                    rpc="UpdateAlertRule",
                    paths=paths,
                    kept_name=before.name,
                    kept_condition=before.condition,
                ),
            )
            if after == before:
                return pb.UpdateAlertRuleResponse(rule=self._shown(before))
            if before.disabled and not after.disabled:
                # Enabled again: it watches from the next event, as a new rule
                # does, never the events recorded while it was off.
                after = replace(after, start_seq=await tree_size(conn, tenant_id) + 1)
            elif after.condition != before.condition and after.condition["kind"] == "absence":
                # An absence rule's silence starts at the change (ADR 0162): it
                # never fires for a past silence of what it did not expect then.
                after = replace(after, start_seq=await tree_size(conn, tenant_id) + 1)
            old, new = _definition(before), _definition(after)
            # Told apart as stored: a filter's secret changed is redacted alike.
            changed = [name for name in old if old[name] != new[name]]
            old, new = (
                await self._recorded_rule(tenant_id, before),
                await self._recorded_rule(tenant_id, after),
            )
            weakens = rule_weakenings(_settings(before), _settings(after))
            # What a new-IP or new-country rule learned was learned under its
            # old condition: forgotten if it watches other events now, as the
            # change's record says (a filter's values reordered, or `country`
            # written as `countries` of one, watch the same).
            forget = "origins_forgotten" in weakens
            after = replace(after, updated_at=self._clock())
            await store.update_rule(conn, after, forget_origins=forget)
            # The rule judges this change's record as it was before it: its
            # last word, should the change silence it (Evaluator.last_word).
            # Its sinks are held after its row, as an evaluation step's count
            # takes them: held before, with the forwarder or a sink's change
            # waiting for a sink between the two, the three deadlocked.
            silenced = not before.disabled
            if silenced:
                await hold_sinks(conn, tenant_id, before.sink_ids)
            # Recorded last, in the change's transaction (ADR 0075).
            recorded = await record_access(
                self._appender,
                principal,
                now=self._clock(),
                action="alert_rule.updated",
                category=event_pb2.CATEGORY_CONFIGURATION,
                severity=weakening_severity(weakens),
                resource_type="alert_rule",
                resource_id=rule_id,
                description=weakened(f"Alert rule {new['name']!r} changed", weakens),
                details=weakening_details(weakens),
                changes=[ChangeDraft(name, old[name], new[name]) for name in changed],
            )
            queued = silenced and await self._evaluator.last_word(
                conn, before, recorded, now=self._clock()
            )
            current = await _stored_rule(conn, tenant_id, rule_id)
        self._evaluator.rules_changed()
        if queued:
            self._forwarder.sinks_changed()
        return pb.UpdateAlertRuleResponse(
            rule=self._shown(current),
            event_id=recorded.event_id,
        )

    async def ListAlertRules(
        self, request: pb.ListAlertRulesRequest, context: Context
    ) -> pb.ListAlertRulesResponse:
        tenant_id = current_principal().tenant_id
        async with self._db.connection(tenant_id) as conn:
            rules = await store.list_rules(conn, tenant_id)
            await refuse_if_erased(conn, tenant_id)  # not an empty list
        return pb.ListAlertRulesResponse(rules=[self._shown(rule) for rule in rules])

    async def DeleteAlertRule(
        self, request: pb.DeleteAlertRuleRequest, context: Context
    ) -> pb.DeleteAlertRuleResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        rule_id = _rule_id(request.id, "id")
        async with self._changes.exclusive(
            tenant_id, f"alert_rule/{rule_id}", caller=principal.token_id
        ) as conn:
            found = await _stored_rule(conn, tenant_id, rule_id)
            _refuse_if_newer(found)
            require_etag(request.etag, _etag(found), what=f"alert rule {rule_id}")
            shown = await self._recorded_rule(tenant_id, found)
            queued = await delete_rule_routing_its_alerts(
                conn, tenant_id, rule_id, now=self._clock()
            )
            if not found.disabled:  # its last word is on the deletion's record
                await hold_sinks(conn, tenant_id, found.sink_ids)
            # Recorded last, in the same transaction (ADR 0075): the routing
            # may wait for an alert's count, and the record holds the tenant's
            # head until the commit.
            recorded = await record_access(
                self._appender,
                principal,
                now=self._clock(),
                action="alert_rule.deleted",
                category=event_pb2.CATEGORY_CONFIGURATION,
                severity=weakening_severity(True),  # it fires no more
                resource_type="alert_rule",
                resource_id=rule_id,
                description=f"Alert rule {shown['name']!r} deleted",
                details={
                    "name": shown["name"],
                    "condition": shown["condition"],
                    "fired": found.fired,
                },
            )
            queued |= await self._evaluator.last_word(conn, found, recorded, now=self._clock())
        self._evaluator.rules_changed()
        if queued:
            self._forwarder.sinks_changed()
        return pb.DeleteAlertRuleResponse(event_id=recorded.event_id)
