"""Proto <-> domain translation. Hand-written rather than json_format-based:
MessageToDict alone costs more than the rest of a Record call."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
)
from google.protobuf.message import DecodeError, Message

from sealtrail.v1 import event_pb2

from ..domain import merkle
from ..domain.canonical import plain_key, plain_number
from ..domain.errors import FieldViolation, IntegrityFailure, InvalidArgument
from ..domain.event import (
    ACTOR_TYPES,
    CATEGORIES,
    COUNTRY_SOURCE_CALLER,
    COUNTRY_SOURCE_GEOIP,
    MAX_JSON_DEPTH,
    MAX_RECORD_BYTES,
    MAX_SENT_EVENT_BYTES,
    MISSING,
    OUTCOMES,
    SEVERITIES,
    ChangeDraft,
    EventDraft,
    ValidEvent,
    indexed_number_text,
    written_with_exponent,
)
from ..domain.filters import EventFilter, FilterDraft, validate_filter
from ..domain.json_path import JsonPath, path_text
from ..store.events import ShownEvent

_CATEGORY_NUMBERS = {name: event_pb2.Category.ValueType(n) for n, name in CATEGORIES.items()}
_SEVERITY_NUMBERS = {name: event_pb2.Severity.ValueType(n) for n, name in SEVERITIES.items()}
_OUTCOME_NUMBERS = {name: event_pb2.Outcome.ValueType(n) for n, name in OUTCOMES.items()}
_ACTOR_TYPE_NUMBERS = {name: event_pb2.ActorType.ValueType(n) for n, name in ACTOR_TYPES.items()}
# A record's `context.country_source` (none in records stored before it was
# marked: UNSPECIFIED, as their stored views say).
_COUNTRY_SOURCE_NUMBERS = {
    COUNTRY_SOURCE_CALLER: event_pb2.COUNTRY_SOURCE_CALLER,
    COUNTRY_SOURCE_GEOIP: event_pb2.COUNTRY_SOURCE_GEOIP,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _JsonReader:
    """Reads protobuf Struct/Value trees into Python JSON values, noting
    whether they canonicalise through the fast path and the first bad value."""

    __slots__ = ("error", "exponent_numbers", "plain", "verbatim")

    def __init__(self) -> None:
        self.plain = True
        self.verbatim = True
        self.error: FieldViolation | None = None
        # The distinct numbers JSON writes with an exponent, where they are
        # counted (details, which are indexed for search): None elsewhere.
        self.exponent_numbers: set[float] | None = None

    def _fail(self, path: JsonPath, description: str) -> None:
        if self.error is None:
            self.error = FieldViolation(path_text(path), description)

    def struct(self, struct: struct_pb2.Struct, path: JsonPath, depth: int = 1) -> dict[str, Any]:
        if depth > MAX_JSON_DEPTH:
            self._fail(path, f"nests deeper than {MAX_JSON_DEPTH} levels")
            return {}
        result = {}
        fields = struct.fields
        # Keys, each then looked up: the map's items() is a generator in Python.
        for key in fields:
            if "\x00" in key:
                self._fail(path, "keys must not contain NUL characters")
            if not plain_key(key):
                self.plain = False
            result[key] = self.value(fields[key], (path, key), depth)
        return result

    def value(self, value: struct_pb2.Value, path: JsonPath, depth: int) -> Any:
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            text = value.string_value
            if "\x00" in text:
                self._fail(path, "must not contain NUL characters")
            return text
        if kind == "number_value":
            number = value.number_value
            if not math.isfinite(number):
                self._fail(path, "must be a finite number")
                return None
            as_int = plain_number(number)
            if number == 0 and math.copysign(1.0, number) < 0:
                self.verbatim = False  # -0 is stored as 0
            if as_int is None:
                self.plain = False
                if self.exponent_numbers is not None and written_with_exponent(number):
                    self.exponent_numbers.add(number)
                return number
            return as_int
        if kind == "bool_value":
            return value.bool_value
        if kind == "null_value":
            if value.null_value != struct_pb2.NULL_VALUE:
                self.verbatim = False  # an unknown NullValue number is stored as null
            return None
        if kind == "struct_value":
            return self.struct(value.struct_value, path, depth + 1)
        if kind == "list_value":
            if depth + 1 > MAX_JSON_DEPTH:
                self._fail(path, f"nests deeper than {MAX_JSON_DEPTH} levels")
                return []
            return [
                self.value(item, (path, index), depth + 1)
                for index, item in enumerate(value.list_value.values)
            ]
        if kind is None:
            self._fail(path, "has no value; use null_value for null")
        return None


def _time(message: Any, name: str) -> tuple[int, int] | None:
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    return stamp.seconds, stamp.nanos


def event_draft(event: event_pb2.Event, path: str) -> EventDraft:
    """The caller's fields of `event`; output-only fields are ignored."""
    size = event.ByteSize()
    if size > MAX_SENT_EVENT_BYTES:
        raise InvalidArgument.field(
            path,
            f"is {size} bytes as sent, over the {MAX_SENT_EVENT_BYTES} refused unread;"
            f" a record is at most {MAX_RECORD_BYTES}",
        )
    reader = _JsonReader()
    actor, resource, context = event.actor, event.resource, event.context
    changes = [
        ChangeDraft(
            field=change.field,
            before=reader.value(change.before, f"{path}.changes[{i}].before", 1)
            if change.HasField("before")
            else MISSING,
            after=reader.value(change.after, f"{path}.changes[{i}].after", 1)
            if change.HasField("after")
            else MISSING,
        )
        for i, change in enumerate(event.changes)
    ]
    details, number_text = None, 0
    if event.HasField("details"):
        reader.exponent_numbers = set()
        details = reader.struct(event.details, f"{path}.details")
        number_text = indexed_number_text(reader.exponent_numbers)
    return EventDraft(
        action=event.action,
        occurred_at=_time(event, "occurred_at"),
        category=event.category,
        severity=event.severity,
        outcome=event.outcome,
        description=event.description,
        actor_type=actor.type,
        actor_id=actor.id,
        actor_email=actor.email,
        actor_display_name=actor.display_name,
        credential_kind=actor.credential.kind,
        credential_id=actor.credential.id,
        credential_hint=actor.credential.hint,
        actor_roles=list(actor.roles),
        resource_type=resource.type,
        resource_id=resource.id,
        resource_name=resource.name,
        changes=changes,
        details=details,
        ip=context.ip,
        user_agent=context.user_agent,
        country=context.country,
        request_id=context.request_id,
        trace_id=context.trace_id,
        span_id=context.span_id,
        http_method=context.http_method,
        http_route=context.http_route,
        http_status_code=context.http_status_code,
        duration_ms=context.duration_ms,
        idempotency_key=event.idempotency_key,
        details_number_text=number_text,
        plain=reader.plain,
        verbatim=reader.verbatim,
        json_error=reader.error,
    )


def filter_draft(event_filter: event_pb2.EventFilter) -> FilterDraft:
    return FilterDraft(
        occurred_after=_time(event_filter, "occurred_after"),
        occurred_before=_time(event_filter, "occurred_before"),
        actions=list(event_filter.actions),
        categories=list(event_filter.categories),
        min_severity=event_filter.min_severity,
        outcomes=list(event_filter.outcomes),
        actor=event_filter.actor,
        resource_type=event_filter.resource_type,
        resource_id=event_filter.resource_id,
        request_id=event_filter.request_id,
        trace_id=event_filter.trace_id,
        text=event_filter.text,
        recorded_by=event_filter.recorded_by,
        ip=event_filter.ip,
        exclude_actions=list(event_filter.exclude_actions),
        country=event_filter.country,
        actor_email_domain=event_filter.actor_email_domain,
        user_agent=event_filter.user_agent,
        credential_id=event_filter.credential_id,
        credential_kind=event_filter.credential_kind,
        severities=list(event_filter.severities),
        actor_types=list(event_filter.actor_types),
        countries=list(event_filter.countries),
        resource_types=list(event_filter.resource_types),
        http_status_classes=list(event_filter.http_status_classes),
        min_duration_ms=event_filter.min_duration_ms,
        http_routes=list(event_filter.http_routes),
        changed_fields=list(event_filter.changed_fields),
        details_equals=dict(event_filter.details_equals),
        actor_roles=list(event_filter.actor_roles),
        actor_prefix=event_filter.actor_prefix,
        http_route_presence=event_filter.http_route_presence,
    )


def request_filter(request: Message) -> EventFilter:
    """The validated `filter` of a Query, StreamEvents, Export or CountEvents
    request; one that sets none matches every event."""
    if not request.HasField("filter"):
        return EventFilter()
    return validate_filter(filter_draft(getattr(request, "filter")))  # noqa: B009


def filter_from_json(data: dict[str, Any]) -> EventFilter:
    """A stored filter (the EventFilter message in its JSON form), validated."""
    draft = filter_draft(json_format.ParseDict(data, event_pb2.EventFilter()))
    return validate_filter(draft, stored=True)


def _set_time(stamp: timestamp_pb2.Timestamp, text: str) -> None:
    stamp.CopyFrom(timestamp_pb2.Timestamp(**_timestamp_fields(text)))


def _timestamp_fields(text: str) -> dict[str, int]:
    return _since_epoch(datetime.fromisoformat(text))


def _since_epoch(moment: datetime) -> dict[str, int]:
    """A Timestamp's fields for an aware `moment`, by arithmetic:
    Timestamp.FromDatetime costs seven times as much (18x a parse)."""
    elapsed = moment - _EPOCH
    return {
        "seconds": elapsed.days * 86_400 + elapsed.seconds,
        "nanos": elapsed.microseconds * 1_000,
    }


def _set_value(target: struct_pb2.Value, value: Any) -> None:
    # By hand rather than Struct.update: an empty list or object must still set
    # its kind, or it would read back as no value at all.
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int | float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, dict):
        target.struct_value.SetInParent()
        _set_struct(target.struct_value, value)
    else:
        target.list_value.SetInParent()
        for item in value:
            _set_value(target.list_value.values.add(), item)


def _set_struct(target: struct_pb2.Struct, value: dict[str, Any]) -> None:
    for key, item in value.items():
        _set_value(target.fields[key], item)


def event_from_record(record: str, leaf_hash: bytes) -> event_pb2.Event:
    """The API view of a stored canonical record."""
    return event_from_data(json.loads(record), leaf_hash)


def event_from_data(data: dict[str, Any], leaf_hash: bytes) -> event_pb2.Event:
    """The API view of a stored canonical record, already parsed."""
    return _built(event_pb2.Event, data, _record_server_fields(data, leaf_hash))


def encoded_response(
    response: Message, field: str, rows: Sequence[ShownEvent], *, tenant_id: str
) -> bytes:
    """The encoding of `response` with the API view of each stored event in
    `rows` as the elements of its repeated Event field `field`, which must be
    empty in `response` itself (ADR 0026). An event stored with its whole view
    is that view, as stored: it is not parsed into the response only to be
    serialized again. One stored with its caller view (before ADR 0025) is the
    server's fields with that view merged in; one stored with neither is read
    back from its record, at ten times the cost. The result parses equal to the
    response built and serialized by protobuf (byte for byte where each view's
    fields are in field order, as protobuf writes them).

    The whole encoding is then read once, in C, at a fraction of building it, so
    that a view rewritten into unreadable bytes is an IntegrityFailure naming
    its seq, not a response no client can read."""
    if len(getattr(response, field)):
        raise ValueError(f"response.{field} must be empty: the rows are its elements")
    number = response.DESCRIPTOR.fields_by_name[field].number
    parts: list[bytes] = []
    for row in rows:
        view = _encoded_view(row, tenant_id)
        parts += (element_prefix(number, len(view)), view)
    parts.append(response.SerializeToString())
    encoded = b"".join(parts)
    try:
        type(response).FromString(encoded)
    except DecodeError:
        # Each element read as it is nested here: a view can read on its own
        # and not one level deeper (protobuf's nesting limit).
        for row in rows:
            view = _encoded_view(row, tenant_id)
            try:
                type(response).FromString(element_prefix(number, len(view)) + view)
            except DecodeError:
                raise _unreadable_view(row.seq) from None
        raise _unreadable_view(None) from None
    return encoded


def _encoded_view(row: ShownEvent, tenant_id: str) -> bytes:
    if row.event_view is not None:  # the whole view, as appended (ADR 0025)
        return row.event_view
    return _shown(event_pb2.Event, row, tenant_id).SerializeToString()


# What converting a record that is no event raises (a record rewritten in the
# database into other JSON, or JSON nested too deep for Python's parser).
UNREADABLE: Final = (ValueError, KeyError, TypeError, AttributeError, RecursionError)


def unreadable_record(seq: int, error: Exception) -> IntegrityFailure:
    """DATA_LOSS naming the record at `seq`, which `error` found no event."""
    return IntegrityFailure(
        f"the record at seq {seq} is not a readable event ({error!r}):"
        " it was changed in the database; run VerifyLog"
    )


def _unreadable_view(seq: int | None) -> IntegrityFailure:
    which = "a stored view" if seq is None else f"the stored view of seq {seq}"
    return IntegrityFailure(
        f"{which} cannot be read: it was changed behind the service's back"
        " (VerifyLog with check_views finds every such event)"
    )


@functools.lru_cache(maxsize=8192)
def element_prefix(field_number: int, length: int) -> bytes:
    """What precedes an embedded message of `length` bytes in field
    `field_number`: its key (wire type 2, length-delimited), then its length."""
    return _varint(field_number << 3 | 2) + _varint(length)


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int: seven bits a byte,
    least significant first, the high bit set on all but the last."""
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def with_elements_unparsed(message: type[Message], field: str) -> type[Message]:
    """A message class of `message`'s fields, but its repeated message field
    `field` read as repeated bytes. Both are length-delimited, so it reads
    the same encodings as `message`, by protobuf's own parser (in C, unknown
    fields and all: a reader of the encoding in Python took 16 s of the
    event loop over 64 MiB of tiny unknown fields, helper-147), and leaves
    each element's encoding to be parsed one at a time, the loop given turns
    between (a RecordBatch's 64 MiB took 0.7 s to parse at once)."""
    descriptor = message.DESCRIPTOR
    file = descriptor_pb2.FileDescriptorProto(
        name=f"sealtrail_server/unparsed/{descriptor.full_name}.proto",
        package=f"sealtrail_server.unparsed.{descriptor.full_name}",
        syntax="proto3",
        dependency=[descriptor.file.name],
    )
    unparsed = file.message_type.add()
    descriptor.CopyToProto(unparsed)
    [element] = [f for f in unparsed.field if f.name == field]
    element.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    element.ClearField("type_name")
    pool = descriptor_pool.Default()
    pool.Add(file)
    found = pool.FindMessageTypeByName(f"{file.package}.{descriptor.name}")
    return message_factory.GetMessageClass(found)


def _shown(
    make: Callable[..., event_pb2.Event], row: ShownEvent, tenant_id: str
) -> event_pb2.Event:
    """The event `make` builds of `row` as Query shows it. IntegrityFailure if
    its stored view cannot be read (rewritten in the database)."""
    if row.event_view is not None:  # the whole view, as appended (ADR 0025)
        event = make()
        view = row.event_view
    elif row.caller_view is not None:  # the caller's part (ADR 0022), onto the columns
        assert row.event_id is not None and row.received_at is not None
        assert row.leaf_hash is not None
        event = make(
            id=row.event_id,
            seq=row.seq,
            tenant_id=tenant_id,
            leaf_hash=row.leaf_hash,
            received_at=_since_epoch(row.received_at),
        )
        view = row.caller_view
    else:
        assert row.record is not None and row.leaf_hash is not None
        data = json.loads(row.record)
        return _built(make, data, _record_server_fields(data, row.leaf_hash))
    try:
        event.MergeFromString(view)
    except DecodeError:
        raise _unreadable_view(row.seq) from None
    return event


def caller_view(valid: ValidEvent, *, sent: event_pb2.Event | None = None) -> event_pb2.Event:
    """The API view of `valid` as it will be stored, without what the server
    assigns (id, seq, tenant_id, received_at, leaf_hash): exactly what reading
    its record back gives of the caller's fields. Serialized, it is stored
    beside the record, so that Query need not parse records (ADR 0022). Built
    from `sent`, the request, when its values are stored as sent
    (`ValidEvent.verbatim`, several times cheaper), else from the validated
    and redacted body."""
    if sent is None or not valid.verbatim:
        return _built(event_pb2.Event, valid.body, {})
    event = event_pb2.Event()
    event.CopyFrom(sent)
    event.DiscardUnknownFields()
    for name in _SERVER_FIELDS:  # output-only: a caller's values are ignored
        event.ClearField(name)
    body = valid.body
    for part in ("resource", "details", "context"):  # stored only when not empty
        if part not in body:
            event.ClearField(part)
    if valid.explicit_time:
        event.occurred_at.nanos -= event.occurred_at.nanos % 1000  # kept to the microsecond
    else:
        _set_time(event.occurred_at, valid.occurred_at)
    event.severity = _SEVERITY_NUMBERS[body["severity"]]
    event.outcome = _OUTCOME_NUMBERS[valid.outcome]
    event.actor.type = _ACTOR_TYPE_NUMBERS[body["actor"]["type"]]
    if "credential" not in body["actor"]:  # stored only when not empty
        event.actor.ClearField("credential")
    context = body.get("context")
    if context is not None:
        event.context.ip = context.get("ip", "")
        event.context.country = context.get("country", "")
        event.context.country_source = country_source_number(context)
        event.context.request_id = context.get("request_id", "")
        event.context.trace_id = context.get("trace_id", "")
        event.context.span_id = context.get("span_id", "")
        event.context.http_method = context.get("http_method", "")
        event.context.duration_ms = context.get("duration_ms", 0.0)  # not a -0 sent
    recorder = body.get("recorded_by")
    if recorder is not None:
        event.recorded_by.token_id = recorder["token_id"]
        event.recorded_by.token_name = recorder.get("token_name", "")
    return event


def with_server_fields(
    part: event_pb2.Event,
    *,
    tenant_id: str,
    event_id: str,
    seq: int,
    received_at: datetime,
    leaf_hash: bytes,
) -> event_pb2.Event:
    """`part` (from `caller_view`) completed, in place, with what the server
    assigned when it was appended: the API view of the stored event."""
    part.id, part.seq, part.tenant_id, part.leaf_hash = event_id, seq, tenant_id, leaf_hash
    since = _since_epoch(received_at)
    part.received_at.seconds, part.received_at.nanos = since["seconds"], since["nanos"]
    return part


def server_view(
    *, tenant_id: str, event_id: str, seq: int, received_at: datetime, leaf_hash: bytes
) -> bytes:
    """What the server assigned an event, serialized as an `Event` of those
    fields alone: after its caller view, the event's whole API view (messages
    merge by concatenation). The appender stores that as `event_view` (ADR 0025)."""
    return with_server_fields(
        event_pb2.Event(),
        tenant_id=tenant_id,
        event_id=event_id,
        seq=seq,
        received_at=received_at,
        leaf_hash=leaf_hash,
    ).SerializeToString()


def view_matches(row: ShownEvent, record: bytes, *, tenant_id: str) -> bool:
    """Whether Query shows of `row` exactly what its record (the bytes hashed)
    says, every field compared, the leaf hash with the record's own
    (VerifyLog's check_views): its whole view, or its caller view merged onto
    its columns, read as Query reads them."""
    try:
        shown = _shown(event_pb2.Event, row, tenant_id)
    except IntegrityFailure:
        return False
    return shown == event_from_record(record.decode(), merkle.leaf_hash(record))


# The Event fields the server assigns, which a caller's values never set: a
# caller view holds only `recorded_by` of them, stamped from its body.
_SERVER_FIELDS: tuple[
    Literal["id", "seq", "tenant_id", "received_at", "leaf_hash", "recorded_by"], ...
] = ("id", "seq", "tenant_id", "received_at", "leaf_hash", "recorded_by")


def _record_server_fields(data: dict[str, Any], leaf_hash: bytes) -> dict[str, Any]:
    return {
        "id": data["id"],
        "seq": data["seq"],
        "tenant_id": data["tenant_id"],
        "leaf_hash": leaf_hash,
        "received_at": _timestamp_fields(data["received_at"]),
    }


def _built(
    make: Callable[..., event_pb2.Event], data: dict[str, Any], server: dict[str, Any]
) -> event_pb2.Event:
    """The event `make` (the constructor, or a repeated field's add) builds
    from a parsed stored record or a validated body, with `server`'s fields."""
    event = make(**_caller_fields(data), **server)
    if "changes" in data:
        _add_changes(event, data["changes"])
    return event


def _caller_fields(data: dict[str, Any]) -> dict[str, Any]:
    """An Event's caller fields but its changes, from a parsed stored record or
    a validated body, as constructor arguments: a Query page converts hundreds
    of records, and one constructor call given plain dicts (sub-messages, the
    details Struct) costs a third of setting fields one by one."""
    actor = data["actor"]
    fields: dict[str, Any] = {
        "action": data["action"],
        "category": _CATEGORY_NUMBERS.get(data.get("category", ""), event_pb2.CATEGORY_UNSPECIFIED),
        "severity": _SEVERITY_NUMBERS[data["severity"]],
        "outcome": _OUTCOME_NUMBERS[data["outcome"]],
        "description": data.get("description", ""),
        "idempotency_key": data.get("idempotency_key", ""),
        "occurred_at": _timestamp_fields(data["occurred_at"]),
        "actor": {
            "type": _ACTOR_TYPE_NUMBERS[actor["type"]],
            "id": actor["id"],
            "email": actor.get("email", ""),
            "display_name": actor.get("display_name", ""),
        },
    }
    if "credential" in actor:
        credential = actor["credential"]
        fields["actor"]["credential"] = {
            "kind": credential["kind"],
            "id": credential["id"],
            "hint": credential.get("hint", ""),
        }
    if "roles" in actor:
        fields["actor"]["roles"] = actor["roles"]
    if "resource" in data:
        resource = data["resource"]
        fields["resource"] = {
            "type": resource.get("type", ""),
            "id": resource.get("id", ""),
            "name": resource.get("name", ""),
        }
    if "details" in data:
        fields["details"] = data["details"]  # a dict makes the Struct, empty kinds kept
    if "context" in data:
        context = data["context"]
        fields["context"] = {key: context.get(key, "") for key in _CONTEXT_FIELDS}
        fields["context"]["country_source"] = country_source_number(context)
        for key in _CONTEXT_HTTP_FIELDS:
            if key in context:
                fields["context"][key] = context[key]
    if "recorded_by" in data:
        recorder = data["recorded_by"]
        fields["recorded_by"] = {
            "token_id": recorder["token_id"],
            "token_name": recorder.get("token_name", ""),
        }
    return fields


# RequestContext's fields, each a string in the record when set.
_CONTEXT_FIELDS = ("ip", "user_agent", "country", "request_id", "trace_id", "span_id")
# RequestContext's HTTP request (ADR 0136), each in the record only when set:
# the method and route strings, the status code and duration numbers.
_CONTEXT_HTTP_FIELDS = ("http_method", "http_route", "http_status_code", "duration_ms")


def country_source_number(context: dict[str, Any]) -> event_pb2.CountrySource.ValueType:
    """RequestContext.country_source of a record's (or body's) context."""
    return _COUNTRY_SOURCE_NUMBERS.get(
        context.get("country_source", ""), event_pb2.COUNTRY_SOURCE_UNSPECIFIED
    )


def _add_changes(event: event_pb2.Event, changes: list[dict[str, Any]]) -> None:
    # Value fields take no plain values in a constructor: set by hand.
    for change in changes:
        entry = event.changes.add(field=change["field"])
        if "before" in change:
            _set_value(entry.before, change["before"])
        if "after" in change:
            _set_value(entry.after, change["after"])
