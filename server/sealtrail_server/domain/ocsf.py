"""Sealtrail events as OCSF 1.3 events, for SIEMs that normalise on OCSF.

The class comes from the event's category, the activity from its action's
verb: the last dot-separated part (`api_key.create` -> `create`), or else the
first (`login.failed` -> `login`), in the present or the past tense
(`api_key.created`):

    authentication            -> Authentication (3002)     logon, logoff, other
    member                    -> Account Change (3001)     create, delete, enable, ...
    configuration, security   -> Entity Management (3004)  create, read, update, delete, ...
    anything else             -> API Activity (6003)       create, read, update, delete, other

Sealtrail's own alerts (`security.alert`, alerts/evaluator.py) are findings:
Detection Finding (2004), activity Create, with the alert as finding_info
(uid, title: required in 1.3), the rule as its analytic and the event that set
it off as a related event.

The actor's credential (`actor.credential`) is `actor.user.credential_uid`
(a session's also `actor.session.uid`); its kind and hint are unmapped. The
actor's roles (`actor.roles`) are `actor.user.groups`, a Group `{"name": role}`
each, in the order recorded.

What OCSF has no place for (details, changes, trace ids, who located the
country, the leaf hash) is
kept under `unmapped`, so nothing of the event is lost on the way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .event import ALERT_ACTION

OCSF_VERSION: Final = "1.3.0"
PRODUCT: Final = {"name": "Sealtrail", "vendor_name": "Sealtrail"}

AUTHENTICATION: Final = 3002
ACCOUNT_CHANGE: Final = 3001
ENTITY_MANAGEMENT: Final = 3004
API_ACTIVITY: Final = 6003
DETECTION_FINDING: Final = 2004
_CATEGORY_UID: Final = {
    AUTHENTICATION: 3,
    ACCOUNT_CHANGE: 3,
    ENTITY_MANAGEMENT: 3,
    API_ACTIVITY: 6,
    DETECTION_FINDING: 2,
}
_CLASS_NAMES: Final = {
    AUTHENTICATION: "Authentication",
    ACCOUNT_CHANGE: "Account Change",
    ENTITY_MANAGEMENT: "Entity Management",
    API_ACTIVITY: "API Activity",
    DETECTION_FINDING: "Detection Finding",
}
_OTHER: Final = 99
# An endpoint of no known address: OCSF 1.3 wants one named (`ip`, `name`,
# ...), and an API Activity's `src_endpoint` whatever its caller gave.
UNKNOWN_ENDPOINT: Final = {"name": "unknown"}

_CLASS_OF_CATEGORY: Final = {
    "authentication": AUTHENTICATION,
    "member": ACCOUNT_CHANGE,
    "configuration": ENTITY_MANAGEMENT,
    "security": ENTITY_MANAGEMENT,
}
# Verbs -> activity_id, per class (OCSF 1.3 enumerations), each in the
# present and the past tense (`member.invite`, `member.invited`).
_ACTIVITIES: Final[dict[int, dict[str, int]]] = {
    AUTHENTICATION: {
        **dict.fromkeys(("login", "logon", "sign_in", "signin", "logged_in", "signed_in"), 1),
        **dict.fromkeys(("logout", "logoff", "sign_out", "signout", "logged_out", "signed_out"), 2),
    },
    ACCOUNT_CHANGE: {
        **dict.fromkeys(("create", "add", "invite", "join", "signup"), 1),
        **dict.fromkeys(("created", "added", "invited", "joined", "signed_up"), 1),
        **dict.fromkeys(("enable", "reactivate", "enabled", "reactivated"), 2),
        **dict.fromkeys(("password_change", "password_changed"), 3),
        **dict.fromkeys(("password_reset",), 4),
        **dict.fromkeys(("disable", "suspend", "deactivate"), 5),
        **dict.fromkeys(("disabled", "suspended", "deactivated"), 5),
        **dict.fromkeys(("delete", "remove", "leave", "deleted", "removed", "left"), 6),
        **dict.fromkeys(("role_change", "role_changed", "grant", "promote"), 7),
        **dict.fromkeys(("granted", "promoted"), 7),
        **dict.fromkeys(("revoke", "demote", "revoked", "demoted"), 8),
        **dict.fromkeys(("lock", "locked"), 9),
        **dict.fromkeys(("mfa_enable", "mfa_enabled"), 10),
        **dict.fromkeys(("mfa_disable", "mfa_disabled"), 11),
    },
    ENTITY_MANAGEMENT: {
        **dict.fromkeys(("create", "add", "created", "added"), 1),
        **dict.fromkeys(("read", "view", "get", "list", "reveal"), 2),
        **dict.fromkeys(("viewed", "listed", "revealed"), 2),
        **dict.fromkeys(("update", "change", "rotate", "set", "edit"), 3),
        **dict.fromkeys(("updated", "changed", "rotated", "edited"), 3),
        **dict.fromkeys(("delete", "remove", "revoke", "destroy"), 4),
        **dict.fromkeys(("deleted", "removed", "revoked", "destroyed"), 4),
        **dict.fromkeys(("move", "moved"), 5),
        **dict.fromkeys(("enable", "enabled"), 8),
        **dict.fromkeys(("disable", "disabled"), 9),
    },
    API_ACTIVITY: {
        **dict.fromkeys(("create", "add", "upload", "record"), 1),
        **dict.fromkeys(("created", "added", "uploaded", "recorded"), 1),
        **dict.fromkeys(("read", "view", "get", "list", "download", "export", "query"), 2),
        **dict.fromkeys(("viewed", "listed", "downloaded", "exported", "queried"), 2),
        **dict.fromkeys(("update", "change", "edit", "share", "rename"), 3),
        **dict.fromkeys(("updated", "changed", "edited", "shared", "renamed"), 3),
        **dict.fromkeys(("delete", "remove", "destroy", "deleted", "removed", "destroyed"), 4),
    },
}
_CREATE: Final = 1  # Detection Finding: a finding was created
_NEW: Final = (1, "New")  # a finding's status: its triage state, not the activity's outcome
_RULE: Final = (1, "Rule")  # analytic.type_id
_SEVERITY_ID: Final = {"info": 1, "warning": 3, "error": 4, "critical": 5}
_SEVERITY_NAME: Final = {1: "Informational", 3: "Medium", 4: "High", 5: "Critical"}
_STATUS: Final = {"success": (1, "Success"), "failure": (2, "Failure"), "denied": (2, "Failure")}
_USER_TYPE: Final = {"user": (1, "User"), "system": (3, "System")}
_USER_RESOURCES: Final = frozenset({"user", "member", "account"})


def ocsf_class(category: str) -> int:
    return _CLASS_OF_CATEGORY.get(category, API_ACTIVITY)


def activity_id(class_uid: int, action: str) -> int:
    """The activity of the action's verb: its last part (`user.login`), or
    else its first (`login.failed`); Other (99) if neither is a verb of the class."""
    parts = action.lower().split(".")
    verbs = _ACTIVITIES[class_uid]
    return verbs.get(parts[-1], verbs.get(parts[0], _OTHER))


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)


def _millis(text: str) -> int:
    """The millisecond of a record's time, in whole numbers: the float seconds
    times 1000, cut, were a millisecond early for some (2004-09-12T20:38:03.442Z)."""
    return (datetime.fromisoformat(text) - _EPOCH) // _MILLISECOND


def _user(actor: dict[str, Any]) -> dict[str, Any]:
    type_id, type_name = _USER_TYPE.get(actor["type"], (_OTHER, actor["type"]))
    user: dict[str, Any] = {"uid": actor["id"], "type_id": type_id, "type": type_name}
    if "email" in actor:
        user["email_addr"] = actor["email"]
    if "display_name" in actor:
        user["name"] = actor["display_name"]
    if "credential" in actor:
        # OCSF 1.3 User: "the unique identifier of the user's credential,
        # e.g. AWS Access Key ID". Never a secret (refused when recorded).
        user["credential_uid"] = actor["credential"]["id"]
    if "roles" in actor:
        # OCSF 1.3 User.groups: "the administrative groups to which the user
        # belongs", a Group object each, named.
        user["groups"] = [{"name": role} for role in actor["roles"]]
    return user


def _credential_unmapped(actor: dict[str, Any]) -> dict[str, Any] | None:
    """What of `actor.credential` OCSF has no field for: its kind, its hint."""
    if "credential" not in actor:
        return None
    credential = actor["credential"]
    return {key: credential[key] for key in ("kind", "hint") if key in credential}


def _resource(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource as an OCSF entity, which must have a `uid` or a `name`: one
    known by its type alone (`settings`) is named by it."""
    shown = {"uid": resource.get("id"), "name": resource.get("name"), "type": resource.get("type")}
    if shown["uid"] is None and shown["name"] is None:
        shown["name"] = shown["type"]
    return {key: value for key, value in shown.items() if value is not None}


def _endpoint(context: dict[str, Any]) -> dict[str, Any] | None:
    """Where the event came from: its address, its country. An OCSF endpoint
    must say which it is (an `ip`, a `name`, ...): one known by its country
    alone is named `unknown`."""
    if "ip" not in context and "country" not in context:
        return None
    endpoint: dict[str, Any] = {"ip": context["ip"]} if "ip" in context else dict(UNKNOWN_ENDPOINT)
    if "country" in context:
        endpoint["location"] = {"country": context["country"]}
    return endpoint


def _finding_info(record: dict[str, Any]) -> dict[str, Any]:
    """An alert as the finding it reports: its uid and title (required in
    OCSF 1.3), the rule that raised it, the event that set it off."""
    info: dict[str, Any] = {
        "uid": record["id"],
        "title": record.get("description", record["action"]),
    }
    rule = record.get("resource", {})
    if "id" in rule:
        type_id, type_name = _RULE
        analytic = {"type_id": type_id, "type": type_name, "uid": rule["id"]}
        if "name" in rule:
            analytic["name"] = rule["name"]
        info["analytic"] = analytic
    trigger = record.get("details", {}).get("trigger_event_id")
    if isinstance(trigger, str):
        info["related_events"] = [{"uid": trigger}]
    return info


def message(record: dict[str, Any]) -> str:
    """An OCSF event's `message`: the record's description, or else its action."""
    return str(record.get("description", record["action"]))


def to_ocsf(record: dict[str, Any], leaf_hash: bytes) -> dict[str, Any]:
    """One stored record (parsed) as an OCSF event."""
    finding = record["action"] == ALERT_ACTION  # reserved: only Sealtrail records it
    class_uid = DETECTION_FINDING if finding else ocsf_class(record.get("category", ""))
    activity = _CREATE if finding else activity_id(class_uid, record["action"])
    severity_id = _SEVERITY_ID[record["severity"]]
    status_id, status = _NEW if finding else _STATUS[record["outcome"]]
    actor = _user(record["actor"])
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": PRODUCT,
        "uid": record["id"],
        "sequence": record["seq"],
        "tenant_uid": record["tenant_id"],
        "logged_time": _millis(record["received_at"]),
    }
    context = record.get("context", {})
    if "request_id" in context:
        metadata["correlation_uid"] = context["request_id"]
    event: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": _CLASS_NAMES[class_uid],
        "category_uid": _CATEGORY_UID[class_uid],
        "activity_id": activity,
        "type_uid": class_uid * 100 + activity,
        "time": _millis(record["occurred_at"]),
        "severity_id": severity_id,
        "severity": _SEVERITY_NAME[severity_id],
        "status_id": status_id,
        "status": status,
        "metadata": metadata,
        "message": message(record),
    }
    endpoint = _endpoint(context)
    unmapped: dict[str, Any] = {"action": record["action"], "leaf_hash": leaf_hash.hex()}
    if finding:
        # A finding has no actor, endpoint or HTTP request of its own: the
        # address the trigger came from is evidence; the rest is unmapped.
        event["finding_info"] = _finding_info(record)
        if endpoint is not None:
            event["evidences"] = [{"src_endpoint": endpoint}]
        unmapped["actor"] = record["actor"]
        for key in ("user_agent", *_HTTP_REQUEST):
            if key in context:
                unmapped[key] = context[key]
    else:
        _activity_fields(event, record, class_uid, actor, endpoint)
        credential = _credential_unmapped(record["actor"])
        if credential is not None:
            unmapped["credential"] = credential
    for key in ("category", "details", "changes", "idempotency_key", "recorded_by"):
        if key in record:
            unmapped[key] = record[key]
    # `country_source`: who located the country (`caller`, or `geoip`: the
    # server, ADR 0134), which OCSF's location has no place for; an activity's
    # `duration_ms`, fractions kept, which OCSF's whole milliseconds would cut.
    for key in ("trace_id", "span_id", "country_source", "duration_ms"):
        if key in context:
            unmapped[key] = context[key]
    event["unmapped"] = unmapped
    return event


# The HTTP request an event records (ADR 0136): an activity's goes to OCSF's
# `http_request` and `http_response` (its duration unmapped), a finding's all unmapped.
_HTTP_REQUEST: Final = ("http_method", "http_route", "http_status_code", "duration_ms")


def _activity_fields(
    event: dict[str, Any],
    record: dict[str, Any],
    class_uid: int,
    actor: dict[str, Any],
    endpoint: dict[str, Any] | None,
) -> None:
    """What an activity (not a finding) says of who did what, from where, to what."""
    context = record.get("context", {})
    event["actor"] = {"user": actor}
    credential = record["actor"].get("credential")
    if credential is not None and credential["kind"] == "session":
        # A session's id is the OCSF Session object's `uid` too.
        event["actor"]["session"] = {"uid": credential["id"]}
    if record["outcome"] == "denied":
        event["status_detail"] = "denied"
    if endpoint is not None:
        event["src_endpoint"] = endpoint
    request = {key: context[key] for key in ("user_agent", "http_method") if key in context}
    if "http_route" in context:
        request["url"] = {"path": context["http_route"]}
    if request:
        event["http_request"] = request
    if "http_status_code" in context:
        event["http_response"] = {"code": context["http_status_code"]}
    resource = _resource(record["resource"]) if "resource" in record else None
    if class_uid == API_ACTIVITY:
        # Required of an API Activity, whose caller may not have given its address.
        event.setdefault("src_endpoint", dict(UNKNOWN_ENDPOINT))
        event["api"] = {"operation": record["action"]}
        if "request_id" in context:
            event["api"]["request"] = {"uid": context["request_id"]}
        if resource is not None:
            event["resources"] = [resource]
    elif class_uid == ENTITY_MANAGEMENT:
        event["entity"] = resource or _resource({"type": record["action"].rsplit(".", 1)[0]})
    else:  # Authentication, Account Change: the user acted on
        target = record.get("resource", {})
        if target.get("type") in _USER_RESOURCES and "id" in target:
            event["user"] = _resource(target)
        else:
            event["user"] = actor
