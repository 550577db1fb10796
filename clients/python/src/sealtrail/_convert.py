"""Builds requests from plain Python values and results from responses; shared by both clients."""

from __future__ import annotations

import decimal
import enum
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Literal,
    Self,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
    get_args,
    overload,
)

from google.protobuf import field_mask_pb2, json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from sealtrail._arguments import checked_arguments, unchecked
from sealtrail._choices import MAX_BATCH as MAX_BATCH
from sealtrail._choices import MAX_SEQ as MAX_SEQ
from sealtrail._choices import REPEATED_FILTER_FIELDS as REPEATED_FILTER_FIELDS
from sealtrail._choices import SINK_SETTINGS as SINK_SETTINGS
from sealtrail._choices import CountGroupByName, CountMeasureName, kinds_named
from sealtrail._choices import IpRecording as IpRecording
from sealtrail._choices import RedactionMode as RedactionMode
from sealtrail._choices import TokenRole as TokenRole
from sealtrail._errors import SealtrailError, from_entry_error
from sealtrail._retry import ENTRY_RETRYABLE
from sealtrail.v1 import (
    access_pb2,
    alerting_pb2,
    audit_service_pb2,
    catalog_pb2,
    event_pb2,
    forwarding_pb2,
    integrity_pb2,
    retention_pb2,
    settings_pb2,
)

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

# Seconds without a frame from the server after which a connection carrying a
# call is pinged, and seconds the ping's answer may take before the connection
# is taken for lost (docs/reliability.md). A connection a NAT, a load balancer
# or a partition dropped without a word (no FIN, no RST) gave no error: a
# stream waited on it forever, never resuming (helper-118). The server accepts
# pings as often as every 10 s.
KEEPALIVE_SECONDS = 30.0
KEEPALIVE_TIMEOUT_SECONDS = 10.0


# Seconds gRPC waits at most between tries of a server it could not reach (its
# own default).
_MAX_RECONNECT_SECONDS = 120.0


def token_fits_a_header(token: str) -> bool:
    """Whether gRPC can send `token` in a header: printable ASCII. It refuses
    any other before sending it, and the call fails INTERNAL "Invalid
    metadata", as if the server had."""
    return token.isascii() and token.isprintable()


def authorization_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata that presents `token`; ValueError (not repeating it: a
    secret) for one no header can carry."""
    if not token_fits_a_header(token):
        raise ValueError(
            "token holds a character no header can carry"
            " (a line break, a control character, a letter outside ASCII)"
        )
    return (("authorization", f"Bearer {token}"),)


def channel_options(
    *,
    keepalive: float = KEEPALIVE_SECONDS,
    keepalive_timeout: float = KEEPALIVE_TIMEOUT_SECONDS,
    initial_backoff: float = 0.1,
    max_backoff: float = 5.0,
) -> tuple[tuple[str, int], ...]:
    """The options of a channel the client makes (`keepalive`s shorter for tests),
    whose connection to a server it could not reach is tried again after
    `initial_backoff` seconds at first, and then at least every `max_backoff`
    seconds (the client's)."""
    return (
        # gRPC's own backoff between connection attempts grows to 2 minutes,
        # and a call meanwhile fails at once (UNAVAILABLE) without one: a
        # server back after a minute's outage went unseen by every channel
        # of the process to its address (they share the connection) for up
        # to 2 minutes more, a stream that had outlasted the restart silent
        # and every retry wasted (helper-217). Bounded as the client's own,
        # and begun as it is: from gRPC's first wait of 1 s, the retries of a
        # call that met a server down (waits of 0.1, 0.2, 0.4 s...) all came
        # within it and failed at once, the address not tried again: a call
        # of 5 attempts tried it once or twice, and a server back 0.1 s later
        # was not reached (helper-290).
        # At least 10 ms: a backoff rounded to none would try a server down
        # without a pause.
        ("grpc.initial_reconnect_backoff_ms", max(10, round(initial_backoff * 1000))),
        (
            "grpc.max_reconnect_backoff_ms",
            round(min(_MAX_RECONNECT_SECONDS, max_backoff) * 1000),
        ),
        # RecordBatch's answer holds each event as stored, ids and times added,
        # so a batch of a few MB outgrew gRPC's default 4 MiB, and the client
        # refused the answer to a batch it had recorded (its retries got the
        # same answer). The server sends at most 96 MiB.
        ("grpc.max_receive_message_length", 96 * 1024 * 1024),
        ("grpc.keepalive_time_ms", round(keepalive * 1000)),
        # Both bound the wait for the ping's answer: gRPC's core reads the second.
        ("grpc.keepalive_timeout_ms", round(keepalive_timeout * 1000)),
        ("grpc.http2.ping_timeout_ms", round(keepalive_timeout * 1000)),
        # Pings go on while the client sends nothing, as a stream's never does.
        ("grpc.http2.max_pings_without_data", 0),
    )


Order = Literal["newest", "oldest"]
_REDACTION_MODES: dict[str, settings_pb2.RedactionMode.ValueType] = {
    "replace": settings_pb2.REDACTION_MODE_REPLACE,
    "hmac": settings_pb2.REDACTION_MODE_HMAC,
}


_TOKEN_ROLES: dict[str, access_pb2.Role.ValueType] = {
    "recorder": access_pb2.ROLE_RECORDER,
    "reader": access_pb2.ROLE_READER,
    "exporter": access_pb2.ROLE_EXPORTER,
    "admin": access_pb2.ROLE_ADMIN,
}


def token_role_value(role: str) -> access_pb2.Role.ValueType:
    try:
        return _TOKEN_ROLES[role]
    except KeyError:
        raise ValueError(f"role must be one of {', '.join(_TOKEN_ROLES)}, not {role!r}") from None


def create_token_request(
    role: str, *, name: str = "", expire_time: datetime | None = None
) -> access_pb2.CreateTokenRequest:
    """A CreateToken request; `expire_time` (timezone-aware), when the token
    stops working: the server takes the future, at most two years ahead."""
    request = access_pb2.CreateTokenRequest(role=token_role_value(role), name=name)
    if expire_time is not None:
        request.expire_time.CopyFrom(timestamp(expire_time, field="expire_time"))
    return request


def update_mask(fields: Iterable[str]) -> field_mask_pb2.FieldMask:
    """An update mask (AIP-134) naming `fields`; one field name alone is a
    TypeError, not a mask of its letters."""
    if isinstance(fields, str):
        raise TypeError(f"fields must be a list of field names, such as [{fields!r}]")
    return field_mask_pb2.FieldMask(paths=list(fields))


def redaction_mode_value(mode: str) -> settings_pb2.RedactionMode.ValueType:
    try:
        return _REDACTION_MODES[mode]
    except KeyError:
        raise ValueError(f"redaction mode must be 'replace' or 'hmac', not {mode!r}") from None


_ORDERS = {
    "newest": audit_service_pb2.ORDER_NEWEST_FIRST,
    "oldest": audit_service_pb2.ORDER_OLDEST_FIRST,
}

_E = TypeVar("_E", bound=int)


@dataclass(frozen=True)
class RecordResult:
    """The stored event, and whether its idempotency key had recorded it before
    (not by an attempt of this call whose answer was lost: see `Attempts`)."""

    event: event_pb2.Event
    deduplicated: bool


@dataclass
class Attempts:
    """What a call notes of its attempts: how many it made, and the request id
    they all sent when it is the call's own (a new one, not one the caller set
    around several calls, which they share). Every attempt of a call that
    records sends the same idempotency keys: one whose answer was lost (the
    connection reset after the server committed) has the next find its own
    events, `deduplicated`, as if someone had recorded them before. Those
    carry the call's own request id, which no other call sent (helper-197).
    A batch's entries sent again share the batch's: `own_id` is given then."""

    made: int = 0
    own_id: str | None = None

    @property
    def retried_own_id(self) -> str | None:
        """The call's own request id once it made more than one attempt: what
        an earlier attempt recorded carries it."""
        return self.own_id if self.made > 1 else None

    def recorded(self, event: event_pb2.Event, deduplicated: bool) -> bool:
        """Whether the server's `deduplicated` answer of `event` stands: not
        when an earlier attempt of this call recorded it."""
        own = self.retried_own_id
        return deduplicated and not (own is not None and event.context.request_id == own)


def record_result(response: audit_service_pb2.RecordResponse, attempts: Attempts) -> RecordResult:
    return RecordResult(
        event=response.event, deduplicated=attempts.recorded(response.event, response.deduplicated)
    )


@dataclass(frozen=True)
class BatchEntryResult:
    """The outcome of one RecordBatch entry: the stored event or why it was not recorded."""

    event: event_pb2.Event | None
    error: SealtrailError | None
    deduplicated: bool


class EventFields(TypedDict, total=False):
    """Keyword shorthand for an Event; enums are lowercase names without prefix."""

    action: str
    actor_id: str
    actor_email: str
    actor_type: str
    actor_display_name: str
    # The credential the actor used (`actor.credential`): its kind (`api_key`),
    # its own non-secret id (`key_8f3a2c`) and the last characters of its
    # secret, at most 8 (`a1b2`). Never the secret: it is refused.
    credential_kind: str
    credential_id: str
    credential_hint: str
    # The roles or groups the actor held when acting (`actor.roles`), as your
    # system names them: `["admin", "billing"]` (one role may be given as a
    # string). At most 32, each 1 to 128 characters, none twice.
    actor_roles: str | Iterable[str]
    resource_type: str
    resource_id: str
    resource_name: str
    category: str
    severity: str
    outcome: str
    description: str
    details: Mapping[str, Any]
    changes: Iterable[tuple[str, Any, Any] | Mapping[str, Any]]
    occurred_at: datetime
    ip: str
    user_agent: str
    country: str
    request_id: str
    trace_id: str
    span_id: str
    # The HTTP request the event records: its method (`POST`), route template
    # or path without a query string (`/v1/templates/{id}`), status code
    # (100-599) and how long it took in milliseconds (`12.5`).
    http_method: str
    http_route: str
    http_status_code: int
    duration_ms: float
    idempotency_key: str


def enum_names(enum: _EnumTypeWrapper[_E]) -> list[str]:
    """The shorthand names of an enum's values: CATEGORY_DATA_ACCESS -> "data_access"."""
    prefix = _prefix(enum)
    return [name.removeprefix(prefix).lower() for name in enum.keys()[1:]]


def enum_value(enum: _EnumTypeWrapper[_E], name: str, *, field: str) -> _E:
    """The value of a shorthand name; ValueError naming `field` if there is none.
    ASCII only: a look-alike letter (the Kelvin sign) lowers to an ASCII one
    and upper() keeps it, which no value is named."""
    if not name.isascii() or name.lower() not in enum_names(enum):
        choices = ", ".join(enum_names(enum))
        raise ValueError(f"{field}: unknown value {name!r}, expected one of: {choices}")
    return enum.Value(_prefix(enum) + name.upper())


def enum_label(enum: _EnumTypeWrapper[_E], value: _E) -> str:
    """The shorthand name of a value: "" for the zero value, the number for an unknown one."""
    if not value:
        return ""
    try:
        return enum.Name(value).removeprefix(_prefix(enum)).lower()
    except ValueError:
        return str(value)


def _prefix(enum: _EnumTypeWrapper[_E]) -> str:
    return enum.keys()[0].removesuffix("UNSPECIFIED")


class NanosecondTime(datetime):
    """A datetime and the nanoseconds past its microsecond (`nanosecond`, 0 to
    999), which a datetime cannot hold: a time typed to the nanosecond (the
    CLI's) reaches its Timestamp whole, so the API's own rule for it applies
    (a bound between two microseconds is the later one), not the earlier
    microsecond. What a datetime does keeps them: astimezone, replace (but
    of the microsecond, which gives `nanosecond=`, else 0), adding or taking
    a timedelta, comparisons (to a datetime, one past its microsecond is
    later, not equal), hashing, isoformat (nine digits). Once these made a
    time with none, and compared equal to the earlier microsecond
    (helper-215). The difference of two times is a datetime's, a timedelta,
    which holds microseconds."""

    nanosecond: int = 0

    @classmethod
    def of(cls, moment: datetime, nanosecond: int = 0) -> Self:
        """`moment` with `nanosecond` nanoseconds past its microsecond."""
        if not 0 <= nanosecond <= 999:
            raise ValueError(f"nanosecond must be 0 to 999, not {nanosecond}")
        made = cls(
            moment.year,
            moment.month,
            moment.day,
            moment.hour,
            moment.minute,
            moment.second,
            moment.microsecond,
            moment.tzinfo,
            fold=moment.fold,
        )
        made.nanosecond = nanosecond
        return made

    def astimezone(self, tz: tzinfo | None = None) -> Self:
        return self.of(datetime.astimezone(self, tz), self.nanosecond)

    def replace(self, *args: Any, nanosecond: int | None = None, **changes: Any) -> Self:
        if nanosecond is None:
            # A new microsecond (positional: the seventh) starts its nanoseconds at 0.
            nanosecond = 0 if "microsecond" in changes or len(args) >= 7 else self.nanosecond
        return self.of(datetime.replace(self, *args, **changes), nanosecond)

    def __add__(self, other: timedelta) -> Self:
        if not isinstance(other, timedelta):
            return NotImplemented
        return self.of(datetime.__add__(self, other), self.nanosecond)

    __radd__ = __add__

    @overload  # type: ignore[override]
    def __sub__(self, other: Self) -> timedelta: ...
    @overload
    def __sub__(self, other: timedelta) -> Self: ...
    def __sub__(self, other: Any) -> Any:
        if isinstance(other, timedelta):
            return self.of(datetime.__sub__(self, other), self.nanosecond)
        return datetime.__sub__(self, other)

    def _order(self, other: object) -> int | None:
        """-1, 0 or 1 as self is before, at or after `other`, None if it is no
        datetime; a TypeError of a naive and an aware one, as a datetime's."""
        if not isinstance(other, datetime):
            return None
        if datetime.__lt__(self, other):
            return -1
        if datetime.__gt__(self, other):
            return 1
        theirs = getattr(other, "nanosecond", 0)
        return (self.nanosecond > theirs) - (self.nanosecond < theirs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, datetime):
            return NotImplemented
        if not datetime.__eq__(self, other):  # naive against aware too: unequal
            return False
        return self.nanosecond == getattr(other, "nanosecond", 0)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __lt__(self, other: object) -> bool:
        order = self._order(other)
        return NotImplemented if order is None else order < 0

    def __le__(self, other: object) -> bool:
        order = self._order(other)
        return NotImplemented if order is None else order <= 0

    def __gt__(self, other: object) -> bool:
        order = self._order(other)
        return NotImplemented if order is None else order > 0

    def __ge__(self, other: object) -> bool:
        order = self._order(other)
        return NotImplemented if order is None else order >= 0

    def __hash__(self) -> int:
        whole = datetime.__hash__(self)
        return hash((whole, self.nanosecond)) if self.nanosecond else whole

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        if not self.nanosecond or timespec != "auto":
            return datetime.isoformat(self, sep, timespec)
        text = datetime.isoformat(self, sep, "microseconds")
        point = text.index(".", 10 + len(sep))  # the fraction's, past the date and separator
        return f"{text[: point + 7]}{self.nanosecond:03d}{text[point + 7 :]}"

    def __str__(self) -> str:
        return self.isoformat(" ")


def timestamp(value: datetime, *, field: str) -> timestamp_pb2.Timestamp:
    """A Timestamp from a timezone-aware datetime (a NanosecondTime's to the
    nanosecond). In UTC first: FromDatetime adds the local time's
    microseconds to the UTC second, which an offset with a fraction of a
    second (ISO 8601 has them) made wrong by that fraction (helper-215)."""
    if value.tzinfo is None:
        raise ValueError(f"{field}: datetime must be timezone-aware")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime.astimezone(value, UTC))
    if isinstance(value, NanosecondTime):
        ts.nanos += value.nanosecond
    return ts


@checked_arguments
def build_event(**fields: Unpack[EventFields]) -> event_pb2.Event:
    """Builds an Event from keyword shorthand, e.g. `build_event(action="member.invite",
    actor_id="u_1", category="member", details={"role": "admin"})`. A keyword
    that is none of EventFields' is a TypeError, as for any function."""
    f = fields
    if unknown := sorted(set(f) - EventFields.__annotations__.keys()):
        # Unread, it left out what it held: `actor=` recorded an event with no actor.
        raise TypeError(
            f"unexpected keyword argument {unknown[0]!r}: an event's fields are"
            f" {', '.join(EventFields.__annotations__)}"
        )
    event = event_pb2.Event(
        action=f.get("action", ""),
        description=f.get("description", ""),
        idempotency_key=f.get("idempotency_key", ""),
        actor=event_pb2.Actor(
            id=f.get("actor_id", ""),
            email=f.get("actor_email", ""),
            display_name=f.get("actor_display_name", ""),
            roles=_many(f.get("actor_roles", ())),
        ),
        changes=[_change(c) for c in f.get("changes", ())],
    )
    if "credential_kind" in f or "credential_id" in f or "credential_hint" in f:
        event.actor.credential.kind = f.get("credential_kind", "")
        event.actor.credential.id = f.get("credential_id", "")
        event.actor.credential.hint = f.get("credential_hint", "")
    if "actor_type" in f:
        event.actor.type = enum_value(event_pb2.ActorType, f["actor_type"], field="actor_type")
    if "category" in f:
        event.category = enum_value(event_pb2.Category, f["category"], field="category")
    if "severity" in f:
        event.severity = enum_value(event_pb2.Severity, f["severity"], field="severity")
    if "outcome" in f:
        event.outcome = enum_value(event_pb2.Outcome, f["outcome"], field="outcome")
    if "resource_type" in f or "resource_id" in f or "resource_name" in f:
        event.resource.type = f.get("resource_type", "")
        event.resource.id = f.get("resource_id", "")
        event.resource.name = f.get("resource_name", "")
    if "details" in f:
        event.details.update(_exact(f["details"], "details"))
    if "occurred_at" in f:
        event.occurred_at.CopyFrom(timestamp(f["occurred_at"], field="occurred_at"))
    context = event_pb2.RequestContext(
        ip=f.get("ip", ""),
        user_agent=f.get("user_agent", ""),
        country=f.get("country", ""),
        request_id=f.get("request_id", ""),
        trace_id=f.get("trace_id", ""),
        span_id=f.get("span_id", ""),
        http_method=f.get("http_method", ""),
        http_route=f.get("http_route", ""),
        http_status_code=f.get("http_status_code", 0),
        duration_ms=f.get("duration_ms", 0.0),
    )
    if context.ByteSize():
        event.context.CopyFrom(context)
    return event


# record(**fields)'s: its own check took the fields by EventFields already.
build_event_of_checked_fields = unchecked(build_event)


def _change(change: tuple[str, Any, Any] | Mapping[str, Any]) -> event_pb2.Change:
    if isinstance(change, Mapping):
        field, before, after = change["field"], change.get("before"), change.get("after")
    else:
        field, before, after = change
    # None leaves a side unset: the field was created (no before) or removed (no after).
    return event_pb2.Change(
        field=field,
        # A change's array or object stands at level 2, as the service counts.
        before=None if before is None else _value(_exact(before, f"changes[{field}].before", 2)),
        after=None if after is None else _value(_exact(after, f"changes[{field}].after", 2)),
    )


def message_to_dict(message: Message, **options: Any) -> dict[str, Any]:
    """`json_format.MessageToDict(message, **options)`, an event's `details` and
    change values with their whole numbers as ints. Those are
    google.protobuf.Value, which holds every number as a double, and
    MessageToDict wrote `"trigger_seq": 83.0`, where the stored record, and so
    exports and sinks, write 83 (helper-165). A number past ±2^53 stays a
    float: a double holds no such integer exactly (±2^53 itself it does, and
    a client sends it, `_exact`)."""
    return cast(dict[str, Any], plain_numbers(json_format.MessageToDict(message, **options)))


def plain_numbers(value: Any) -> Any:
    """`value` (JSON from MessageToDict) with each whole float within ±2^53
    an int, as RFC 8785 writes the stored record's."""
    if isinstance(value, float):
        whole = value.is_integer() and -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT
        return int(value) if whole else value
    if isinstance(value, dict):
        return {key: plain_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_numbers(item) for item in value]
    return value


def _value(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


# A JSON number travels as a double (google.protobuf.Value): integers beyond
# this magnitude would arrive rounded, a different value than the caller's.
_MAX_EXACT_INT = 2**53
# The levels of objects and arrays the service takes (as it counts them).
# Past about 50, protobuf cannot even copy the message into a request (its
# decoding limit: record_request).
MAX_JSON_DEPTH = 32
_V = TypeVar("_V")


def _exact(value: _V, path: str, depth: int = 1) -> _V:
    """`value`, once every number in it is known to arrive as it is and it
    nests no deeper than the service takes; a ValueError naming where a
    number would arrive rounded or is no JSON number, or where it nests too
    deep. `depth`: the level an object or array `value` stands at."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path}: {value} is not a JSON number")
    if isinstance(value, int) and not -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
        raise ValueError(
            f"{path}: {value} is beyond what a JSON number carries exactly (±2^53);"
            " send it as a string"
        )
    if isinstance(value, Mapping):
        _not_too_deep(path, depth)
        for key, item in value.items():
            _exact(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        _not_too_deep(path, depth)
        for index, item in enumerate(value):
            _exact(item, f"{path}[{index}]", depth + 1)
    return value


def _not_too_deep(path: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{path}: nests deeper than {MAX_JSON_DEPTH} levels")


def with_defaults(event: event_pb2.Event) -> event_pb2.Event:
    """A copy of `event` with an idempotency key, and occurred_at, so that every retry of its
    request is byte-identical and recorded at most once. An event whose key is the caller's
    is left without a time if it has none: the service then gives it the time it first
    received it, and takes a repeat of it (another call of the caller's code, another run
    of a script, a file imported again) as the same event. Stamped here, each call's time
    made the repeat another event under the same key: ALREADY_EXISTS."""
    prepared = event_pb2.Event()
    prepared.CopyFrom(event)
    if not prepared.idempotency_key:
        prepared.idempotency_key = str(uuid.uuid4())
        if not prepared.HasField("occurred_at"):
            prepared.occurred_at.FromDatetime(datetime.now(UTC))
    return prepared


def record_request(event: event_pb2.Event) -> audit_service_pb2.RecordRequest:
    """A RecordRequest of the event with its defaults; ValueError if it nests
    too deep for a request (see _too_deep)."""
    try:
        return audit_service_pb2.RecordRequest(event=with_defaults(event))
    except DecodeError as error:
        raise _too_deep(error) from None


def batch_request(events: Iterable[event_pb2.Event]) -> audit_service_pb2.RecordBatchRequest:
    """A RecordBatchRequest of the events with their defaults; ValueError above 1,000,
    or if one nests too deep for a request."""
    prepared = [with_defaults(e) for e in events]
    if len(prepared) > MAX_BATCH:
        raise ValueError(f"a batch holds at most {MAX_BATCH} events, got {len(prepared)}")
    try:
        return audit_service_pb2.RecordBatchRequest(events=prepared)
    except DecodeError as error:
        raise _too_deep(error) from None


def _too_deep(error: DecodeError) -> ValueError:
    """An Event built by hand (not by build_event) whose objects and arrays
    nest far deeper than the service takes cannot be put in a request:
    protobuf copies it through its decoder, whose depth is limited. A
    ValueError saying so, not a DecodeError traceback."""
    return ValueError(
        f"event: {error}; its objects and arrays nest at most {MAX_JSON_DEPTH} levels"
    )


def batch_results(
    response: audit_service_pb2.RecordBatchResponse, attempts: Attempts
) -> list[BatchEntryResult]:
    """The results of a RecordBatch call. An event an earlier attempt of the
    call recorded counts as recorded by it (`Attempts`), once: a second entry
    of the batch with its key is deduplicated, as it would have been anyway."""
    results, seen = [], set()
    for r in response.results:
        deduplicated = r.deduplicated
        if r.HasField("event"):
            deduplicated = r.event.seq in seen or attempts.recorded(r.event, deduplicated)
            seen.add(r.event.seq)
        results.append(
            BatchEntryResult(
                event=r.event if r.HasField("event") else None,
                error=from_entry_error(r.error) if r.HasField("error") else None,
                deduplicated=deduplicated,
            )
        )
    return results


def entries_to_resend(results: Sequence[BatchEntryResult]) -> list[int]:
    """Which entries of a RecordBatch to send again: those refused alone for
    a passing reason (ENTRY_RETRYABLE), by their place in the batch."""
    return [
        place
        for place, result in enumerate(results)
        if result.error is not None and result.error.code in ENTRY_RETRYABLE
    ]


def resend_request(
    request: audit_service_pb2.RecordBatchRequest, places: Sequence[int]
) -> audit_service_pb2.RecordBatchRequest:
    """The entries at `places` of `request`, as first sent: the same keys and times."""
    return audit_service_pb2.RecordBatchRequest(events=[request.events[p] for p in places])


def merge_resent(
    results: list[BatchEntryResult],
    places: Sequence[int],
    resent: list[BatchEntryResult] | SealtrailError,
) -> None:
    """Puts the results of the entries at `places`, sent again, in their places
    (or the error of the call that sent them again, for each); an error says
    it was retried."""
    for n, place in enumerate(places):
        result = (
            BatchEntryResult(event=None, error=resent, deduplicated=False)
            if isinstance(resent, SealtrailError)
            else resent[n]
        )
        if result.error is not None:
            result.error.retried = True
        results[place] = result


# The events recording the changes a retry of which, finding them made,
# answers no event id (own_change): of the retention policy, the settings,
# the legal hold, an alert rule, a sink, and a token's revocation.
POLICY_UPDATED = "retention.policy_updated"
SETTINGS_UPDATED = "tenant.settings_updated"
CATALOG_UPDATED = "action_catalog.updated"
HOLD_PLACED = "retention.legal_hold_placed"
HOLD_RELEASED = "retention.legal_hold_released"
RULE_UPDATED = "alert_rule.updated"
SINK_UPDATED = "sink.updated"
TOKEN_REVOKED = "api_token.revoked"


def own_change(
    event_id: str, attempts: Attempts, action: str
) -> audit_service_pb2.QueryRequest | None:
    """The query that finds the change (an `action` event) an earlier attempt
    of a retried change recorded, its answer lost, when the attempt that
    answered found it made (no `event_id`): else the answer would say
    nothing was recorded (helper-197). None when there is none to look for."""
    own = attempts.retried_own_id
    if event_id or own is None:
        return None
    changes = event_pb2.EventFilter(actions=[action], request_id=own)
    return audit_service_pb2.QueryRequest(filter=changes, page_size=1)


# The largest a page size or a count's limit carries (int32). The server lowers
# any past its own maximum (AIP-158), so one past this is sent as this: given
# to protobuf, it raised a bare "Value out of range", naming nothing.
_INT32_MAX: Final = 2**31 - 1
# The largest a seq's or a tree size's field carries (int64): one past it
# protobuf refused with a bare "Value out of range", naming nothing.
INT64_MAX: Final = 2**63 - 1


def carried(value: int, field: str) -> int:
    """`value`, a size or seq of a request, which no log reaches past what
    its field carries (int64), where the server refuses one beyond the log
    (NOT_FOUND, BEYOND_LOG_SIZE): refused here, naming `field`."""
    if value > INT64_MAX:
        raise ValueError(
            f"{field}: must be at most {INT64_MAX} (the largest the request carries), not {value}"
        )
    return value


def at_least_zero(value: int, field: str, zero: str = "") -> int:
    """`value`, which the server refuses below 0 (INVALID_ARGUMENT on
    `field`): refused here first, naming it; `zero` says what 0 means."""
    if value < 0:
        meaning = f" (0: {zero})" if zero else ""
        raise ValueError(f"{field}: must be 0 or more{meaning}, not {value}")
    return value


def stream_start(after_seq: int) -> int:
    """A stream's `after_seq`, refused as the server refuses it: 0 to MAX_SEQ."""
    at_least_zero(after_seq, "after_seq", "from the first event")
    if after_seq > MAX_SEQ:
        raise ValueError(f"after_seq: must be at most {MAX_SEQ} (the largest seq), not {after_seq}")
    return after_seq


def dead_letters_request(sink_id: str, limit: int | None) -> forwarding_pb2.ListDeadLettersRequest:
    """A sink's dead letters asked for: `limit` (1 to 1,000) of the oldest in
    one page, or None for pages of 1,000 (ValueError for another limit)."""
    if limit is not None and not 1 <= limit <= 1000:
        raise ValueError(f"limit: must be 1 to 1000 (None: every dead letter), not {limit}")
    return forwarding_pb2.ListDeadLettersRequest(sink_id=sink_id, page_size=limit or 1000)


def checkpoint_request(tree_size: int, fresh: bool) -> integrity_pb2.GetCheckpointRequest:
    at_least_zero(tree_size, "tree_size", "the latest checkpoint")
    carried(tree_size, "tree_size")
    return integrity_pb2.GetCheckpointRequest(tree_size=tree_size, fresh=fresh)


def consistency_request(old_size: int, new_size: int) -> integrity_pb2.GetConsistencyProofRequest:
    """A GetConsistencyProof request, its sizes refused as the server refuses
    them, in its order: old_size 1 or more, new_size 0 (the latest
    checkpoint) or not smaller than it."""
    if old_size < 0:
        raise ValueError(f"old_size: must be 1 or more, not {old_size}")
    at_least_zero(new_size, "new_size", "the latest checkpoint")
    if old_size < 1:
        raise ValueError(f"old_size: must be 1 or more, not {old_size}")
    carried(old_size, "old_size")
    carried(new_size, "new_size")
    if new_size and new_size < old_size:
        raise ValueError(
            f"new_size: must not be smaller than old_size ({old_size}), not {new_size}"
        )
    return integrity_pb2.GetConsistencyProofRequest(old_size=old_size, new_size=new_size)


def checked_seq_range(first_seq: int, last_seq: int) -> None:
    """An export's seq range, refused as the server refuses it, the same
    field named (both 0: the whole log)."""
    at_least_zero(last_seq, "last_seq", "the whole log, with first_seq 0")
    carried(last_seq, "last_seq")  # and first_seq, not past it
    if not last_seq:
        if first_seq:
            raise ValueError("last_seq: must be given with first_seq (both 0: the whole log)")
        return
    if first_seq < 1:
        raise ValueError(f"first_seq: must be 1 or more with last_seq, not {first_seq}")
    if first_seq > last_seq:
        raise ValueError(
            f"first_seq: must not be greater than last_seq ({last_seq}), not {first_seq}"
        )


def query_request(
    filter: event_pb2.EventFilter | None, order: Order, page_size: int, page_token: str
) -> audit_service_pb2.QueryRequest:
    if order not in _ORDERS:
        raise ValueError(f"order: expected 'newest' or 'oldest', got {order!r}")
    at_least_zero(page_size, "page_size", "the server's default")
    return audit_service_pb2.QueryRequest(
        filter=filter,
        order=_ORDERS[order],
        page_size=min(page_size, _INT32_MAX),
        page_token=page_token,
    )


GroupBy = Literal["", CountGroupByName]
# What a count measures of each group's durations, "" for nothing: the mean
# (`duration_avg`), a percentile (`duration_p50`, `duration_p95`,
# `duration_p99`) or the longest (`duration_max`); or of the numbers under a
# detail (`measure_detail`): their sum, mean or greatest (`detail_sum`,
# `detail_avg`, `detail_max`).
Measure = Literal["", CountMeasureName]


@dataclass(frozen=True)
class EventCount:
    """How many matching events share one value of the grouping: an action, an
    actor id, a lowercase enum name (`failure`), a resource type, a resource's
    type and id as a JSON array (`["repository","acme/web"]`: `resource_of_key`
    reads it, `resource_key` writes it), a credential's kind, id and hint as a
    JSON array (`["api_key","key_8f3a2c","a1b2"]`: `credential_of_key` reads
    it), a detail's value (`gpt-4o`, a number as the record writes it: `3`),
    or a time bucket's start in RFC 3339,
    UTC (`2026-12-05T00:00:00Z`); "" for events that have none (no category,
    no resource type, neither a resource type nor id)."""

    key: str
    count: int
    # With a measure: its value over the group's events that have a
    # `context.duration_ms` (milliseconds), or a number under the measured
    # detail (its own unit), and how many of them had one (`measured`; 0
    # and 0 for a group none of whose events has one).
    value: float = 0.0
    measured: int = 0
    # Counted by actor: who the actor is, as its latest matching event
    # records them (`Alice Martin <alice@example.com>`, the email or the
    # display name alone; "" for neither), as the server labels it; "" for
    # other groupings.
    label: str = ""


def actor_words(email: str, display_name: str, id: str) -> str:
    """An actor as a table or a report shows it: its email (it tells people
    apart), else its display name, else its id (a UUID says nothing to a
    reader where a name is given)."""
    return email or display_name or id


def credential_words(kind: str, id: str, hint: str) -> str:
    """An actor's credential as a person reads it: kind, id and the secret's
    last characters as products show them (`api_key key_8f3a2c ...a1b2`);
    "" for none."""
    shown_hint = f"...{hint}" if hint else ""
    return " ".join(part for part in (kind, id, shown_hint) if part)


def resource_key(resource_type: str, resource_id: str) -> str:
    """The key CountEvents by resource gives the events of this resource type
    and id: the pair as a JSON array of two strings, canonical as RFC 8785
    writes it (no space, only `"`, `\\` and control characters escaped), so
    that equal pairs have equal keys (`["repository","acme/web"]`); "" for
    events with neither."""
    if not resource_type and not resource_id:
        return ""
    return json.dumps([resource_type, resource_id], ensure_ascii=False, separators=(",", ":"))


def resource_of_key(key: str) -> tuple[str, str]:
    """The resource type and id of a key of CountEvents by resource ("" for a
    part the events lack; ("", "") for the key "" of events with neither);
    ValueError for a key that is no such pair."""
    if not key:
        return "", ""
    try:
        pair = json.loads(key)
    except ValueError:
        pair = None
    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
        raise ValueError(f"not a key of a count by resource: {key[:100]!r}")
    return pair[0], pair[1]


def credential_of_key(key: str) -> tuple[str, str, str]:
    """The kind, id and hint of a key of CountEvents by credential (the hint
    "" where its events record none; ("", "", "") for the key "" of events
    without a credential); ValueError for a key that is no such triple."""
    if not key:
        return "", "", ""
    try:
        triple = json.loads(key)
    except ValueError:
        triple = None
    if not (
        isinstance(triple, list) and len(triple) == 3 and all(isinstance(p, str) for p in triple)
    ):
        raise ValueError(f"not a key of a count by credential: {key[:100]!r}")
    return triple[0], triple[1], triple[2]


@dataclass(frozen=True)
class EventCounts:
    """What `count_events` found: the `total` of matching events, the largest
    `groups` (time buckets in time order), whether the limit left groups out
    (`truncated`), how many groups there are in all (`total_groups`), and the
    size of the log it counted (`tree_size`: the events of seq 1 to it, none
    recorded later; 0 from a server that does not say)."""

    total: int
    groups: tuple[EventCount, ...]
    truncated: bool
    total_groups: int
    tree_size: int = 0


def count_request(
    filter: event_pb2.EventFilter | None,
    group_by: GroupBy | str,
    limit: int,
    time_zone: str = "",
    measure: Measure | str = "",
    group_by_detail: str = "",
    measure_detail: str = "",
) -> audit_service_pb2.CountEventsRequest:
    """A CountEventsRequest; `group_by` is a CountGroupBy's shorthand name
    (`actor`, `resource_type`, `day`, `detail`), "" for the total alone;
    `time_zone` the IANA zone of its days and hours, "" for UTC; `measure` a
    CountMeasure's (`duration_p95`, `detail_sum`), "" for the count alone;
    `group_by_detail` the details key a `detail` grouping groups by,
    `measure_detail` the one a detail measure measures (the server refuses
    one missing or out of place, naming it)."""
    grouping = (
        enum_value(audit_service_pb2.CountGroupBy, group_by, field="group_by")
        if group_by
        else audit_service_pb2.COUNT_GROUP_BY_UNSPECIFIED
    )
    measured = (
        enum_value(audit_service_pb2.CountMeasure, measure, field="measure")
        if measure
        else audit_service_pb2.COUNT_MEASURE_UNSPECIFIED
    )
    at_least_zero(limit, "limit", "50 groups")
    return audit_service_pb2.CountEventsRequest(
        filter=filter,
        group_by=grouping,
        limit=min(limit, _INT32_MAX),
        time_zone=time_zone,
        measure=measured,
        group_by_detail=group_by_detail,
        measure_detail=measure_detail,
    )


def event_counts(response: audit_service_pb2.CountEventsResponse) -> EventCounts:
    return EventCounts(
        total=response.total,
        groups=tuple(
            EventCount(
                key=group.key,
                count=group.count,
                value=group.value,
                measured=group.measured,
                label=group.label,
            )
            for group in response.groups
        ),
        truncated=response.truncated,
        total_groups=response.total_groups,
        tree_size=response.tree_size,
    )


@checked_arguments
def build_filter(
    *,
    actions: str | Iterable[str] = (),
    actor: str = "",
    resource_type: str = "",
    resource_id: str = "",
    categories: str | Iterable[str] = (),
    min_severity: str | None = None,
    outcomes: str | Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    request_id: str = "",
    trace_id: str = "",
    text: str = "",
    recorded_by: str = "",
    ip: str = "",
    exclude_actions: str | Iterable[str] = (),
    country: str = "",
    actor_email_domain: str = "",
    severities: str | Iterable[str] = (),
    user_agent: str = "",
    credential_id: str = "",
    credential_kind: str = "",
    actor_types: str | Iterable[str] = (),
    countries: str | Iterable[str] = (),
    resource_types: str | Iterable[str] = (),
    http_status_classes: str | int | Iterable[str | int] = (),
    actor_prefix: str = "",
    min_duration_ms: float = 0.0,
    http_routes: str | Iterable[str] = (),
    changed_fields: str | Iterable[str] = (),
    details_equals: Mapping[str, str | int | float | bool] | None = None,
    actor_roles: str | Iterable[str] = (),
    has_http_route: bool | None = None,
) -> event_pb2.EventFilter:
    """Builds an EventFilter. Every given criterion must match; `actions` (exact,
    `prefix.*` or `*.verb`), `categories` and `outcomes` match any of their values; `since`
    is inclusive, `until` exclusive; `text` is a full-text search; `recorded_by` the id of
    the API token that recorded the events; `ip` an address or a network in CIDR notation;
    `exclude_actions` (in the forms of `actions`) leaves out the events of those actions,
    `audit_log.*` the log's own records of reads, whatever else matches; `country` the
    client's country (`context.country`), an ISO 3166-1 alpha-2 code in any case (`KP`);
    `actor_email_domain` the domain of the actor's email in any case (`contractor.example`,
    or `*.contractor.example` for it and its subdomains); `severities` matches those levels
    exactly (`["info", "critical"]`), and with `min_severity` both must hold; `user_agent`
    is text the client's user agent (`context.user_agent`) contains, A-Z in either case
    (`curl`, `python-requests`), every other character (`%`, `_` too) exactly;
    `credential_id` the id of the credential the actor used (`actor.credential.id`),
    exactly: every event done with one API key or token, of any kind; `credential_kind`
    the kind of that credential (`actor.credential.kind`), exactly (`api_key`,
    `session`): with `credential_id` the one credential, not another kind's of
    the same id (a server older than it ignores it); `actor_types` matches
    the actors of those types (`["api_key"]`: what API keys, not people, did;
    `user`, `service`, `system`), an event recorded without a type as `user`;
    `countries` and `resource_types` match any of their values (`["DE", "FR"]`,
    `["source", "file"]`), each checked as `country` and `resource_type` check
    one, and never with them (servers older than these ignore them);
    `http_status_classes` matches the events whose HTTP request was answered
    with any of those statuses (`context.http_status_code`): a class `2xx` to
    `5xx` or an exact code (`"404"` or `404`): `["5xx", 429]`; `actor_prefix`
    the start of the actor's id (as given) or email (any case), every character
    itself (`ali` finds `alice` and `Alice@example.com`), never with `actor`
    (a server older than it ignores it, and finds every actor); `min_duration_ms`
    the requests that took at least that many milliseconds (`context.duration_ms`;
    `1000.0`: a second or longer), events without a duration never (0: any);
    `http_routes` matches the events whose HTTP request was served by any of
    those routes (`context.http_route`), each exactly as recorded, no prefix,
    no case folding (`"/v1/templates/{id}"`), events without a route never;
    `changed_fields` the events with a change of any of those fields
    (`changes[].field`), each exactly as recorded (`limits.rpm` is that name,
    no path into `limits`): `["rate_limit"]`, who changed the rate limit (a
    server older than it ignores it, and finds every event); `details_equals` the
    events whose `details` hold each of those top-level keys with that scalar
    (`{"environment": "prod", "attempt": 3}`), all of them: a string exactly, a
    number or boolean by the text the record writes of it (`3`, `1.5`, `true`;
    a string "3" is sent as 3 is), a redacted secret never (its value is not
    stored); at most 8, keys 1 to 64 characters, values 256 (a server older
    than it ignores it, and finds every event); `actor_roles` the events whose
    actor held any of those roles when acting (`actor.roles`), each exactly,
    case and all: `["admin"]`, what admins did (a server older than it ignores
    it, and finds every event); `has_http_route` True matches the events of
    API requests (those with a `context.http_route`), False the others, None
    both (sent as `http_route_presence`; False with `http_routes` is refused;
    a server older than it ignores it, and finds every event)."""
    event_filter = event_pb2.EventFilter(
        actions=_many(actions),
        exclude_actions=_many(exclude_actions),
        categories=[
            enum_value(event_pb2.Category, c, field="categories") for c in _many(categories)
        ],
        outcomes=[enum_value(event_pb2.Outcome, o, field="outcomes") for o in _many(outcomes)],
        severities=[
            enum_value(event_pb2.Severity, s, field="severities") for s in _many(severities)
        ],
        actor_types=[
            enum_value(event_pb2.ActorType, t, field="actor_types") for t in _many(actor_types)
        ],
        actor=actor,
        resource_type=resource_type,
        resource_id=resource_id,
        request_id=request_id,
        trace_id=trace_id,
        text=text,
        recorded_by=recorded_by,
        ip=ip,
        country=country,
        actor_email_domain=actor_email_domain,
        user_agent=user_agent,
        credential_id=credential_id,
        credential_kind=credential_kind,
        countries=_many(countries),
        resource_types=_many(resource_types),
        http_status_classes=_statuses(http_status_classes),
        actor_prefix=actor_prefix,
        min_duration_ms=min_duration_ms,
        http_routes=_many(http_routes),
        changed_fields=_many(changed_fields),
        details_equals={key: detail_text(value) for key, value in (details_equals or {}).items()},
        actor_roles=_many(actor_roles),
    )
    if has_http_route is not None:
        event_filter.http_route_presence = (
            event_pb2.PRESENCE_PRESENT if has_http_route else event_pb2.PRESENCE_ABSENT
        )
    if min_severity is not None:
        event_filter.min_severity = enum_value(
            event_pb2.Severity, min_severity, field="min_severity"
        )
    if since is not None:
        event_filter.occurred_after.CopyFrom(timestamp(since, field="since"))
    if until is not None:
        event_filter.occurred_before.CopyFrom(timestamp(until, field="until"))
    return event_filter


def detail_text(value: str | int | float | bool) -> str:
    """A `details_equals` value as the filter takes it: a string as it is, a
    number or boolean as a record writes it (RFC 8785: `3`, `3.0` as `3`,
    `1.5`, `1e-7`, `1e+21`, `true`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return json_number(value)
    raise ValueError(f"details_equals: {value!r} is no string, finite number or boolean")


def json_number(value: float) -> str:
    """A finite double as RFC 8785 writes it (ECMAScript's Number::toString):
    the shortest digits that read back as it (Python's repr has the same),
    in full from 1e-6 up to 1e21, else with an exponent (`1e-7`, `1e+21`)."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    _, shortest, exponent = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, shortest))
    point = int(exponent) + len(digits)  # digits before the decimal point
    if len(digits) <= point <= 21:
        text = digits + "0" * (point - len(digits))
    elif 0 < point <= 21:
        text = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        fraction = f".{digits[1:]}" if len(digits) > 1 else ""
        text = f"{digits[0]}{fraction}e{'+' if point > 0 else '-'}{abs(point - 1)}"
    return sign + text


def _statuses(values: str | int | Iterable[str | int]) -> list[str]:
    """`http_status_classes` as the filter takes them: `5xx`, and a code as text."""
    return [str(value) for value in ([values] if isinstance(values, str | int) else values)]


def _many(values: str | Iterable[str]) -> list[str]:
    return [values] if isinstance(values, str) else list(values)


def inclusion_request(
    event_id: str, seq: int, tree_size: int, include_purged: bool = False
) -> integrity_pb2.GetInclusionProofRequest:
    """A GetInclusionProof request for an event given by id or by seq."""
    if bool(event_id) == bool(seq):
        raise ValueError("give exactly one of event_id and seq")
    # Refused as the server refuses them, in its order: the seq, then the size.
    if seq and not 1 <= seq <= MAX_SEQ:
        raise ValueError(f"seq: must be 1 to {MAX_SEQ}, not {seq}")
    at_least_zero(tree_size, "tree_size", "the latest checkpoint")
    carried(tree_size, "tree_size")
    if seq and tree_size and tree_size < seq:
        raise ValueError(f"tree_size: must be at least the event's seq ({seq}), not {tree_size}")
    request = integrity_pb2.GetInclusionProofRequest(
        tree_size=tree_size, include_purged=include_purged
    )
    if event_id:
        request.event_id = event_id
    else:
        request.seq = seq
    return request


# Retention presets (docs/retention.md); a number of days works as well, and so
# does any count of days, weeks or years (of 365 days, as 1y) written as they are.
RETENTION_PRESETS: Mapping[str, int] = {"30d": 30, "90d": 90, "180d": 180, "1y": 365, "forever": 0}
_RETENTION_SPAN = re.compile(r"(\d+)([dwy])")
_DAYS_PER = {"d": 1, "w": 7, "y": 365}
Days = int | str
# The server takes up to 36,500 days (longer is "forever", 0) and names every field
# past it at once; a number past what the field carries (uint32) cannot be sent, and
# protobuf refused it with a bare "Value out of range", naming nothing.
MAX_RETENTION_DAYS = 36_500
_DAYS_FIELD_MAX = 2**32 - 1


def retention_days(days: Days, *, field: str) -> int:
    """Days from a number, a preset name ("90d", "1y", "forever") or a span
    of days, weeks or years ("7d", "2w", "2y"): the command line's other
    durations are written `7d`, and a preset's form was refused for any
    other count (helper-165)."""
    if isinstance(days, str) and (span := _RETENTION_SPAN.fullmatch(days)):
        count, unit = span.groups()
        if not int(count):  # the field's 0 is forever, which a span of nothing is not
            raise ValueError(f"{field}: {days!r} keeps nothing; write 'forever' to keep all")
        days = int(count) * _DAYS_PER[unit]
    if isinstance(days, int):
        if days < 0:
            raise ValueError(f"{field}: must not be negative")
        if days > _DAYS_FIELD_MAX:
            raise ValueError(
                f"{field}: must be at most {MAX_RETENTION_DAYS} (or 0, 'forever', to keep forever)"
            )
        return days
    if days != "forever":
        raise ValueError(
            f"{field}: {days!r} is not days (e.g. 90 or 90d), weeks (2w), years (1y) or forever"
        )
    return 0


def retention_policy(
    default: Days,
    categories: Mapping[str, Days],
    action_prefixes: Mapping[str, Days],
    *,
    etag: str = "",
) -> retention_pb2.RetentionPolicy:
    """A policy to set or preview: a default, and overrides by category name
    ("authentication") and by action prefix ("rag.*"); `etag` as read."""
    policy = retention_pb2.RetentionPolicy(
        default_days=retention_days(default, field="default"), etag=etag
    )
    for name, days in categories.items():
        policy.rules.add(
            category=enum_value(event_pb2.Category, name, field="categories"),
            days=retention_days(days, field=f"categories[{name!r}]"),
        )
    for prefix, days in action_prefixes.items():
        policy.rules.add(
            action_prefix=prefix, days=retention_days(days, field=f"action_prefixes[{prefix!r}]")
        )
    return policy


# Events committed together reach a stream() together, in messages of up to this many.
STREAM_EVENTS_PER_MESSAGE = 500


def stream_request(
    event_filter: event_pb2.EventFilter | None,
    after_seq: int | None,
    since: datetime | None,
    *,
    announce_purged: bool = False,
) -> audit_service_pb2.StreamEventsRequest:
    """A StreamEvents request starting after a cursor, at a time, or (neither)
    now, for events in batches, with removals announced if asked."""
    request = audit_service_pb2.StreamEventsRequest(
        filter=event_filter,
        max_events_per_message=STREAM_EVENTS_PER_MESSAGE,
        announce_purged=announce_purged,
    )
    if after_seq is not None:
        request.after_seq = after_seq
    elif since is not None:
        request.since.CopyFrom(timestamp(since, field="since"))
    return request


def received_range_request(
    since: datetime, until: datetime | None
) -> audit_service_pb2.GetReceivedRangeRequest:
    """A GetReceivedRange request: the period from `since` to `until` (None:
    the server's time now)."""
    request = audit_service_pb2.GetReceivedRangeRequest(since=timestamp(since, field="since"))
    if until is not None:
        request.until.CopyFrom(timestamp(until, field="until"))
    return request


SinkKind = Literal[
    "webhook", "splunk_hec", "datadog_logs", "elasticsearch", "chat", "pagerduty", "email"
]
PayloadFormat = Literal["sealtrail_json", "ocsf"]
_PAYLOAD_FORMATS: dict[str, forwarding_pb2.PayloadFormat.ValueType] = {
    "sealtrail_json": forwarding_pb2.PAYLOAD_FORMAT_SEALTRAIL_JSON,
    "ocsf": forwarding_pb2.PAYLOAD_FORMAT_OCSF,
}


def payload_format_value(format: str) -> forwarding_pb2.PayloadFormat.ValueType:
    try:
        return _PAYLOAD_FORMATS[format]
    except KeyError:
        raise ValueError(
            f"format: {format!r} is not one of {', '.join(_PAYLOAD_FORMATS)}"
        ) from None


@checked_arguments
def build_sink(
    name: str,
    kind: SinkKind,
    *,
    filter: event_pb2.EventFilter | None = None,
    format: PayloadFormat = "sealtrail_json",
    paused: bool = False,
    sink_id: str = "",
    **settings: str | list[str] | int,
) -> forwarding_pb2.Sink:
    """A Sink message: `build_sink("siem", "webhook", url=..., secrets=["whsec_..."])`.
    Each kind takes the settings of SINK_SETTINGS; others are a ValueError, as
    is a value not a string (a list of them for `secrets` and `to_addresses`,
    or one string as the only one; an int, or its digits, for `port`)."""
    if kind not in SINK_SETTINGS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(SINK_SETTINGS)}")
    unknown = set(settings) - SINK_SETTINGS[kind]
    if unknown:
        raise ValueError(f"{kind} sinks take {', '.join(sorted(SINK_SETTINGS[kind]))}, "
                         f"not {', '.join(sorted(unknown))}")  # fmt: skip
    sink = forwarding_pb2.Sink(
        id=sink_id, name=name, filter=filter, format=payload_format_value(format), paused=paused
    )
    destination = getattr(sink, kind)
    for key, value in settings.items():
        _set_setting(destination, key, value)
    return sink


def _set_setting(destination: Message, key: str, value: object) -> None:
    """Sets a destination's setting `key`: a ValueError naming it for a value
    that is not a string (its strings, for a list such as `secrets`), not
    protobuf's ParseError (no ValueError) naming the message's field."""
    if isinstance(getattr(destination, key), int):  # an email sink's port
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
            raise ValueError(f"{key}: a port, 0 to 65535, not {value!r}")
        setattr(destination, key, value)
    elif not isinstance(getattr(destination, key), str):  # repeated: secrets, to_addresses
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{key}: a list of strings, not {value!r}")
        getattr(destination, key).extend(values)
    elif isinstance(value, str):
        setattr(destination, key, value)
    else:
        hint = " (one string, such as 'env:prod,team:security')" if key == "tags" else ""
        raise ValueError(f"{key}: a string{hint}, not {value!r}")


def replay_request(
    sink_id: str,
    *,
    seq_range: tuple[int, int] | None = None,
    window: tuple[datetime, datetime] | None = None,
    dead_letter_id: str = "",
) -> forwarding_pb2.ReplaySinkRequest:
    """A ReplaySink request for exactly one of a seq range (both ends included),
    a window of occurred_at (start included, end excluded) or a dead letter."""
    if (seq_range is not None) + (window is not None) + bool(dead_letter_id) != 1:
        raise ValueError("give exactly one of seq_range, window and dead_letter_id")
    request = forwarding_pb2.ReplaySinkRequest(sink_id=sink_id)
    if seq_range is not None:
        first, last = seq_range  # both included, refused as the server refuses them
        if first < 1:
            raise ValueError(f"seq_range[0]: must be 1 or more, not {first}")
        if last < first:
            raise ValueError(f"seq_range[1]: must be at least seq_range[0] ({first}), not {last}")
        carried(first, "seq_range[0]")  # past the log's end: the server refuses it
        # The server lowers the last to the sink's cursor: past the field's
        # largest, that is sent.
        request.seq_range.first_seq, request.seq_range.last_seq = first, min(last, INT64_MAX)
    elif window is not None:
        request.window.start_time.CopyFrom(timestamp(window[0], field="window start"))
        request.window.end_time.CopyFrom(timestamp(window[1], field="window end"))
    else:
        request.dead_letter_id = dead_letter_id
    return request


AlertKind = Literal["match", "threshold", "spike", "absence", "new_ip", "new_country", "off_hours"]
# The largest a rule's count, window, hours and days carry (uint32).
_UINT32_MAX: Final = 2**32 - 1


def carried_by_rule(
    kind: str,
    *,
    count: int = 0,
    window_seconds: int = 0,
    start_hour: int = 0,
    end_hour: int = 0,
    days: Iterable[int] = (),
    baseline_windows: int = 0,
    min_count: int = 0,
) -> None:
    """A rule's setting of its kind that its field cannot carry (a negative
    one, or past 2**32 - 1), refused as the server refuses any outside its
    range, naming it: protobuf raised a bare "Value out of range", naming
    nothing. One of another kind is refused as such (build_alert_rule)."""
    settings: list[tuple[str, int, str]] = []
    if kind == "threshold":
        settings += [
            ("count", count, "must be 2 to 100000"),
            ("window_seconds", window_seconds, "must be 1 to 604800 (7 days)"),
        ]
    elif kind == "spike":
        settings += [
            ("window_seconds", window_seconds, "must be 60 to 86,400 (a day)"),
            ("baseline_windows", baseline_windows, "must be 1 to 1,000"),
            ("min_count", min_count, "must be 1 to 100,000"),
        ]
    elif kind == "absence":
        settings += [("window_seconds", window_seconds, "must be 60 to 604800 (7 days)")]
    elif kind == "off_hours":
        settings += [
            ("start_hour", start_hour, "must be 0 to 23"),
            ("end_hour", end_hour, "must be after start_hour, at most 24"),
        ]
        settings += [
            (f"working_days[{n}]", day, "days are 1 (Monday) to 7 (Sunday)")
            for n, day in enumerate(days)
        ]
    for field, value, rule in settings:
        if isinstance(value, int) and not 0 <= value <= _UINT32_MAX:
            raise ValueError(f"{field}: {rule}, not {value}")


_KINDS: Final = frozenset(get_args(AlertKind))
_GROUP_BY: dict[str, alerting_pb2.AlertGroupBy.ValueType] = {
    "": alerting_pb2.ALERT_GROUP_BY_UNSPECIFIED,
    "actor": alerting_pb2.ALERT_GROUP_BY_ACTOR,
    "ip": alerting_pb2.ALERT_GROUP_BY_IP,
    "credential": alerting_pb2.ALERT_GROUP_BY_CREDENTIAL,
}


@checked_arguments
def build_alert_rule(
    name: str,
    kind: AlertKind,
    *,
    filter: event_pb2.EventFilter | None = None,
    count: int = 0,
    window_seconds: int = 0,
    group_by: Literal["", "actor", "ip", "credential"] = "",
    exact_actor_ids: bool = False,
    baseline_windows: int = 0,
    factor: float = 0.0,
    min_count: int = 0,
    time_zone: str = "",
    start_hour: int = 0,
    end_hour: int = 0,
    working_days: Iterable[int] = (),
    severity: str = "warning",
    sink_ids: str | Iterable[str] = (),
    disabled: bool = False,
) -> alerting_pb2.AlertRule:
    """An AlertRule message, e.g. `build_alert_rule("failed logins", "threshold",
    filter=build_filter(actions="user.login", outcomes="failure"), count=5,
    window_seconds=300, group_by="ip")`, or a spike: `build_alert_rule("login spike",
    "spike", filter=..., window_seconds=600, baseline_windows=24, factor=5,
    min_count=20, group_by="credential")` (each API key against its own
    usual number; `group_by` unset: the tenant's events together), or an
    absence: `build_alert_rule("billing silent", "absence", filter=
    build_filter(actor="billing"), window_seconds=900)` (fires once no such
    event was received for 15 minutes). `exact_actor_ids`
    (a threshold or spike grouped by actor): ids compared as recorded, not
    folded (case, full-width forms, invisible characters). `sink_ids`: the sinks its alerts go to
    (one given as a string is that one). A setting of another kind of rule
    than `kind` (count for a match rule, time_zone for a threshold) is
    refused, naming it: its message has no field for it, and the rule was
    created without it (the server cannot tell it was given)."""
    days = list(working_days)
    carried_by_rule(
        kind,
        count=count,
        window_seconds=window_seconds,
        start_hour=start_hour,
        end_hour=end_hour,
        days=days,
        baseline_windows=baseline_windows,
        min_count=min_count,
    )
    for setting, value, default, applies_to in (
        ("count", count, 0, "threshold"),
        ("window_seconds", window_seconds, 0, "threshold, spike or absence"),
        ("group_by", group_by, "", "threshold or spike"),
        ("exact_actor_ids", exact_actor_ids, False, "threshold or spike"),
        ("baseline_windows", baseline_windows, 0, "spike"),
        ("factor", factor, 0.0, "spike"),
        ("min_count", min_count, 0, "spike"),
        ("time_zone", time_zone, "", "off_hours"),
        ("start_hour", start_hour, 0, "off_hours"),
        ("end_hour", end_hour, 0, "off_hours"),
        ("working_days", days, [], "off_hours"),
    ):
        if kind not in kinds_named(applies_to) and value != default and kind in _KINDS:
            article = "an" if applies_to[0] in "aeiou" else "a"
            raise ValueError(f"{setting}: applies only to {article} {applies_to} rule, not {kind}")
    rule = alerting_pb2.AlertRule(
        name=name,
        severity=enum_value(event_pb2.Severity, severity, field="severity"),
        sink_ids=_many(sink_ids),
        disabled=disabled,
    )
    if kind in ("threshold", "spike") and group_by not in _GROUP_BY:
        raise ValueError(f"group_by: {group_by!r} is not one of actor, ip, credential")
    if kind == "match":
        rule.match.filter.CopyFrom(filter or event_pb2.EventFilter())
    elif kind == "threshold":
        rule.threshold.filter.CopyFrom(filter or event_pb2.EventFilter())
        rule.threshold.count = count
        rule.threshold.window_seconds = window_seconds
        rule.threshold.group_by = _GROUP_BY[group_by]
        rule.threshold.exact_actor_ids = exact_actor_ids
    elif kind == "spike":
        rule.spike.filter.CopyFrom(filter or event_pb2.EventFilter())
        rule.spike.window_seconds = window_seconds
        rule.spike.baseline_windows = baseline_windows
        rule.spike.factor = factor
        rule.spike.min_count = min_count
        rule.spike.group_by = _GROUP_BY[group_by]
        rule.spike.exact_actor_ids = exact_actor_ids
    elif kind == "absence":
        rule.absence.filter.CopyFrom(filter or event_pb2.EventFilter())
        rule.absence.window_seconds = window_seconds
    elif kind == "new_ip":
        rule.new_ip.filter.CopyFrom(filter or event_pb2.EventFilter())
    elif kind == "new_country":
        rule.new_country.filter.CopyFrom(filter or event_pb2.EventFilter())
    elif kind == "off_hours":
        rule.off_hours.filter.CopyFrom(filter or event_pb2.EventFilter())
        rule.off_hours.time_zone = time_zone
        rule.off_hours.start_hour = start_hour
        rule.off_hours.end_hour = end_hour
        rule.off_hours.working_days.extend(days)
    else:
        raise ValueError(
            f"kind: {kind!r} is not one of match, threshold, spike, absence, new_ip, new_country,"
            " off_hours"
        )
    return rule


def action_catalog_request(limit: int, page_token: str) -> catalog_pb2.ListActionCatalogRequest:
    """ListActionCatalog's request for a page of at most `limit` entries (0:
    50; the server lowers one past 1,000 to 1,000, refuses a negative one)
    after `page_token`'s ("": the first)."""
    return catalog_pb2.ListActionCatalogRequest(limit=min(limit, _INT32_MAX), page_token=page_token)


class Keep(enum.Enum):
    """An argument of an update left out: the value stored is kept."""

    KEEP = "KEEP"


KEEP: Final = Keep.KEEP


def action_description_request(
    action: str, description: str | Keep | None, category: str | Keep | None
) -> catalog_pb2.SetActionDescriptionRequest:
    """SetActionDescription's request, its update_mask naming what is given:
    the description ("" or None: none) and the declared category by name
    (`security`; "" or None: none); KEEP leaves the stored one. TypeError
    when both are KEEP: the call would change nothing."""
    if description is KEEP and category is KEEP:
        raise TypeError("set_action_description: give a description or a category (or both)")
    request = catalog_pb2.SetActionDescriptionRequest(action=action)
    if description is not KEEP:
        request.description = description or ""
        request.update_mask.paths.append("description")
    if category is not KEEP:
        if category:
            request.category = enum_value(event_pb2.Category, category, field="category")
        request.update_mask.paths.append("category")
    return request


def settings_request(
    *,
    redaction_mode: str | None = None,
    strict_actions: bool | None = None,
    personal_data_fields: Sequence[str] | None = None,
    ip_recording: str | None = None,
    etag: str = "",
) -> settings_pb2.UpdateTenantSettingsRequest:
    """UpdateTenantSettings's request changing each setting given (not None),
    all in one update: its field mask names each, as a value equal to the
    field's default (off, no names) is no field set. ValueError when none is
    given: the call would change nothing."""
    request = settings_pb2.UpdateTenantSettingsRequest(
        settings=settings_pb2.TenantSettings(etag=etag)
    )
    settings, paths = request.settings, request.update_mask.paths
    if redaction_mode is not None:
        settings.redaction_mode = redaction_mode_value(redaction_mode)
        paths.append("redaction_mode")
    if strict_actions is not None:
        settings.strict_actions = strict_actions
        paths.append("strict_actions")
    if personal_data_fields is not None:
        settings.personal_data_fields.extend(personal_data_fields)
        paths.append("personal_data_fields")
    if ip_recording is not None:
        settings.ip_recording = _ip_recording_value(ip_recording)
        paths.append("ip_recording")
    if not paths:
        raise ValueError("give a setting to change")
    return request


def strict_actions_request(on: bool, etag: str) -> settings_pb2.UpdateTenantSettingsRequest:
    """UpdateTenantSettings's request turning `strict_actions` on or off."""
    return settings_request(strict_actions=on, etag=etag)


_IP_RECORDINGS: dict[str, settings_pb2.IpRecording.ValueType] = {
    "full": settings_pb2.IP_RECORDING_FULL,
    "truncated": settings_pb2.IP_RECORDING_TRUNCATED,
    "none": settings_pb2.IP_RECORDING_NONE,
}


def _ip_recording_value(mode: str) -> settings_pb2.IpRecording.ValueType:
    try:
        return _IP_RECORDINGS[mode]
    except KeyError:
        raise ValueError(
            f"ip recording must be 'full', 'truncated' or 'none', not {mode!r}"
        ) from None


def ip_recording_request(mode: str, etag: str) -> settings_pb2.UpdateTenantSettingsRequest:
    """UpdateTenantSettings's request setting `ip_recording`."""
    return settings_request(ip_recording=mode, etag=etag)


def personal_data_fields_request(
    names: Sequence[str], etag: str
) -> settings_pb2.UpdateTenantSettingsRequest:
    """UpdateTenantSettings's request setting `personal_data_fields` (none
    clears them: named in the mask, as an empty list is no field set)."""
    return settings_request(personal_data_fields=names, etag=etag)
