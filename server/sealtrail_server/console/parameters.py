"""What the console reads of a request: the event search's query string, and
the fields of a change's JSON body, each refusal (BadParameter) naming the
parameter or field it is about, for the page to mark the input that holds it."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final, TypeVar

from google.protobuf import field_mask_pb2, json_format
from google.protobuf.message import Message
from multidict import MultiDict

from sealtrail._convert import REPEATED_FILTER_FIELDS
from sealtrail.v1 import (
    access_pb2,
    alerting_pb2,
    event_pb2,
    forwarding_pb2,
    retention_pb2,
)

from ..domain.filters import checked_details_equals

M = TypeVar("M", bound=Message)

_SEQ: Final = re.compile(r"[0-9]{1,19}")

# RFC 3339 section 5.6 (its T and Z in either case), the offset required: ISO 8601's
# other forms (week dates, basic format, no offset) would be read as something unsaid.
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)

# Query-string parameters -> EventFilter fields: REPEATED_FILTER_FIELDS (their
# values comma-separated) and these.
_SINGLE: Final = (
    "actor",
    "actor_email_domain",
    "resource_type",
    "resource_id",
    "request_id",
    "trace_id",
    "text",
    "recorded_by",
    "ip",
    "country",
    "user_agent",
    "credential_id",
    "credential_kind",
    "actor_prefix",
)

_ENUMS: Final = {
    "categories": event_pb2.Category,
    "outcomes": event_pb2.Outcome,
    "min_severity": event_pb2.Severity,
    "severities": event_pb2.Severity,
    "actor_types": event_pb2.ActorType,
}

_ROLES: Final = {
    "recorder": access_pb2.ROLE_RECORDER,
    "reader": access_pb2.ROLE_READER,
    "exporter": access_pb2.ROLE_EXPORTER,
    "admin": access_pb2.ROLE_ADMIN,
}


# Characters of a refused value an answer quotes: an answer is at most
# MAX_DESCRIPTION_BYTES, as the API's descriptions are, whatever was sent.
_QUOTED: Final = 24


def quoted(value: str) -> str:
    """`value` as an answer quotes it: repr'd, cut to _QUOTED characters (`…`)."""
    return repr(value if len(value) <= _QUOTED else value[: _QUOTED - 1] + "…")


class BadParameter(Exception):
    """A query-string parameter (or a change's field) the console cannot turn
    into a request. Its message starts with the parameter's name and a colon
    ("filter.actions: a string"): the answer names it apart, as the API's
    field violations are, for the page to mark the input holding it."""

    @property
    def field(self) -> str:
        return str(self).partition(":")[0]

    @property
    def description(self) -> str:
        return str(self).partition(":")[2].strip()


# The parameters `event_filter` takes: a rule's filter (a JSON object) has no other.
FILTER_PARAMETERS: Final = (
    *REPEATED_FILTER_FIELDS,
    *_SINGLE,
    "min_severity",
    "min_duration_ms",
    "http_route_presence",
    "detail",
    "occurred_after",
    "occurred_before",
)


# A parameter's name as a refusal names it: as sent when it could be one of
# ours, else cut and with what would split the answer's field (a colon) dropped.
_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def only_parameters(query: Any, *own: str, filtered: bool = True) -> None:
    """Refuse a name in `query` that is neither one of the search's filter
    parameters (when `filtered`) nor one of `own`: unknown, it was dropped
    unsaid, and `events?action=x` (the command line's `--action`) answered
    every event as if filtered."""
    known = {*own, *(FILTER_PARAMETERS if filtered else ())}
    for name in query:
        if name in known:
            continue
        shown = name if _NAME.fullmatch(name) else quoted(name.replace(":", ""))
        if f"{name}s" in known:
            raise BadParameter(f"{shown}: no such parameter; did you mean {name}s?")
        raise BadParameter(f"{shown}: no such parameter (docs/console.md lists them)")


def event_filter(query: Any) -> event_pb2.EventFilter:
    """The EventFilter of a request's query string (names as the page's URL uses them)."""
    message = event_pb2.EventFilter()
    for name in FILTER_PARAMETERS:
        if len(query.getall(name, ())) > 1:  # else all but the first were dropped unsaid
            raise BadParameter(f"{name}: given more than once (separate values with commas)")
    for name in REPEATED_FILTER_FIELDS:
        values = [v.strip() for v in query.get(name, "").split(",") if v.strip()]  # "a, b" too
        enum = _ENUMS.get(name)
        for value in values:
            if enum is None:
                getattr(message, name).append(value)
            else:
                getattr(message, name).append(_enum(enum, name, value))
    for name in _SINGLE:
        if query.get(name):
            setattr(message, name, query[name])
    if query.get("min_severity"):
        severity = _enum(event_pb2.Severity, "min_severity", query["min_severity"])
        message.min_severity = event_pb2.Severity.ValueType(severity)
    if query.get("min_duration_ms"):
        message.min_duration_ms = _milliseconds("min_duration_ms", query["min_duration_ms"])
    if query.get("http_route_presence"):  # `present` or `absent`, the enum's short names
        presence = _enum(event_pb2.Presence, "http_route_presence", query["http_route_presence"])
        message.http_route_presence = event_pb2.Presence.ValueType(presence)
    if query.get("detail"):
        message.details_equals.update(_details("detail", query["detail"]))
    for name in ("occurred_after", "occurred_before"):
        if query.get(name):
            _timestamp(getattr(message, name), name, query[name])
    return message


# A decimal number of milliseconds (`1000`, `12.5`); whether it is in range
# (above 0, under a day) the API says, naming `filter.min_duration_ms`.
_MILLISECONDS: Final = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")


def _milliseconds(name: str, value: str) -> float:
    if not _MILLISECONDS.fullmatch(value.strip()):
        raise BadParameter(f"{name}: a number of milliseconds (1000, or 12.5)")
    return float(value)


def _details(name: str, value: str) -> dict[str, str]:
    """`details_equals` of `detail=environment=prod,attempt=3`: comma-separated
    KEY=VALUE entries, the key up to the first `=`, key and value each trimmed
    (so a comma, an `=` in a key, or a space at either end cannot be given
    here: the API and `--detail` can), checked as the API checks the map."""
    entries: dict[str, str] = {}
    for entry in value.split(","):
        if not entry.strip():
            continue
        key, equals, text = (part.strip() for part in entry.partition("="))
        if not equals:
            raise BadParameter(f"{name}: {quoted(key)} is no KEY=VALUE (environment=prod)")
        if entries.setdefault(key, text) != text:
            raise BadParameter(f"{name}: {quoted(key)} given twice: no detail holds both")

    def fail(_field: str, description: str) -> None:
        raise BadParameter(f"{name}: {description}")

    checked_details_equals(entries, fail)
    return entries


def _rfc3339(name: str, value: str) -> datetime:
    """The time `value` is, if it is an RFC 3339 date-time with an offset."""
    try:
        if not _RFC3339.fullmatch(value):
            raise ValueError(value)
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(
            f"{name}: not an RFC 3339 time with an offset (2026-12-01T09:00:00Z)"
        ) from None


def _enum(enum: Any, name: str, value: str) -> int:
    prefix = {
        "categories": "CATEGORY_",
        "outcomes": "OUTCOME_",
        "min_severity": "SEVERITY_",
        "severities": "SEVERITY_",
        "actor_types": "ACTOR_TYPE_",
        "http_route_presence": "PRESENCE_",
    }[name]
    try:
        return int(enum.Value(prefix + value.upper()))
    except ValueError:
        raise BadParameter(f"{name}: unknown value {quoted(value)}") from None


def _only(body: dict[str, Any], *names: str, within: str = "") -> None:
    """Refuses a field the change does not take: dropped unsaid, a page (or a
    script) would believe it had changed what it had not. `within`: the path
    of `body` in the change, when it is one of its objects."""
    unknown = sorted(set(body) - set(names))
    if unknown:
        path = f"{within}.{unknown[0]}" if within else unknown[0]
        raise BadParameter(f"{path}: not a field of this change")


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise BadParameter(f"{name}: a string")
    return value


def _flag(body: dict[str, Any], name: str, *, default: bool | None = None) -> bool:
    """A true or false field; required unless it has a `default`."""
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadParameter(f"{name}: true or false")
    return value


def _message(body: dict[str, Any], name: str, message: M) -> M:
    """`message` filled from the field `name`, the API message's JSON form
    (proto3 JSON: enum values by name); a field it has not is refused."""
    value = body.get(name)
    if not isinstance(value, dict):
        raise BadParameter(f"{name}: a JSON object, the API's message")
    return _parsed(value, message, name)


def _parsed(value: dict[str, Any], message: M, name: str) -> M:
    """`message` filled from `value`, proto3 JSON; an error names `name`."""
    try:
        return json_format.ParseDict(value, message)
    except json_format.ParseError as error:
        raise BadParameter(f"{name}: {error}") from None


def _rule(body: dict[str, Any]) -> alerting_pb2.AlertRule:
    """The AlertRule of a change: `rule`, the API's message, its condition's
    filter from `filter` if given (the event search's parameters), else as
    `rule` gives it, never both."""
    rule = _message(body, "rule", alerting_pb2.AlertRule())
    kind = rule.WhichOneof("condition")
    if "filter" in body and kind is not None:  # with none, the API says one is required
        condition = getattr(rule, kind)
        if condition.HasField("filter"):
            raise BadParameter(f"rule.{kind}.filter: give the filter once, here or as `filter`")
        condition.filter.CopyFrom(_search_filter(body["filter"]))
    return rule


def _not_in_an_edit(body: dict[str, Any], name: str, switch: str) -> None:
    """Refuses `switch` (`paused`, `disabled`) in the `name` an edit sends:
    the edit form does not show it, and written back it would undo a Pause
    or Disable made meanwhile; its PATCH changes it alone."""
    if isinstance(body.get(name), dict) and switch in body[name]:
        raise BadParameter(
            f"{name}.{switch}: not a field of an edit (PATCH it alone, with the etag)"
        )


def _sink(body: dict[str, Any]) -> forwarding_pb2.Sink:
    """The Sink of a change: `sink`, the API's message, its filter from
    `filter` if given (the event search's parameters, as a rule's), else as
    `sink` gives it, never both."""
    sink = _message(body, "sink", forwarding_pb2.Sink())
    if "filter" in body:
        if sink.HasField("filter"):
            raise BadParameter("sink.filter: give the filter once, here or as `filter`")
        sink.filter.CopyFrom(_search_filter(body["filter"]))
    return sink


def _search_filter(value: Any) -> event_pb2.EventFilter:
    """The EventFilter of the event search's parameters given as a JSON object
    of strings (repeated ones comma-separated), parsed as the search's query
    string is (`event_filter`): a rule's filter is built with the search's
    own form, and means what the same filter means in a search."""
    if not isinstance(value, dict):
        raise BadParameter("filter: a JSON object of the event search's parameters")
    _only(value, *FILTER_PARAMETERS, within="filter")
    for name, given in value.items():
        if not isinstance(given, str):
            raise BadParameter(f"filter.{name}: a string (several values comma-separated)")
    try:
        return event_filter(MultiDict(value))
    except BadParameter as error:
        raise BadParameter(f"filter.{error}") from None


def _policy(body: dict[str, Any]) -> retention_pb2.RetentionPolicy:
    """The RetentionPolicy of a change: `policy`'s default and rules (the
    API's message as JSON), with the `etag` the policy was read with."""
    _only(body, "policy", "etag")
    if isinstance(body.get("policy"), dict):
        _only(body["policy"], "default_days", "rules", within="policy")
    policy = _message(body, "policy", retention_pb2.RetentionPolicy())
    policy.etag = _etag(body, "retention policy")
    return policy


def _etag(body: dict[str, Any], what: str) -> str:
    """The etag the page read the resource with: required, so that a page
    that went stale cannot change what it never showed (AIP-154)."""
    value = body.get("etag")
    if not isinstance(value, str) or not value:
        raise BadParameter(f"etag: required, the {what}'s etag as last read")
    return value


def _role(body: dict[str, Any]) -> access_pb2.Role.ValueType:
    role = _ROLES.get(_text(body, "role").lower())
    if role is None:
        raise BadParameter(f"role: one of {', '.join(_ROLES)}")
    return role


def _timestamp(field: Any, name: str, text: str) -> None:
    """Sets the Timestamp `field` to the RFC 3339 time `text`, to the
    nanosecond: a datetime holds microseconds, and a bound cut to one took the
    earlier where the API takes the later (helper-204). Past the ninth digit,
    which no Timestamp holds, BadParameter rather than another cut."""
    moment = _rfc3339(name, text)
    try:
        field.FromDatetime(moment)
    except (OverflowError, ValueError):  # before year 1 or after 9999 in UTC
        raise BadParameter(f"{name}: out of range (years 1 to 9999)") from None
    matched = _RFC3339.fullmatch(text)
    digits = matched.group(1)[1:] if matched and matched.group(1) else ""
    if len(digits) > 9:
        raise BadParameter(f"{name}: more than 9 digits after the second (a nanosecond's)")
    field.nanos += int(digits[6:9].ljust(3, "0"))


def _mask(path: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=[path])


def _seq(text: str, name: str) -> int:
    """A seq from the query string; BadParameter naming `name` if it is none."""
    if _SEQ.fullmatch(text) is None or int(text) >= 2**63:
        raise BadParameter(f"{name}: a number from 0 to 2^63 - 1")
    return int(text)
