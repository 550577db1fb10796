"""The audit event: what a caller may send, how it is validated, and the record
it becomes.

A caller's event arrives as an `EventDraft` (plain values read off the
request), `validate_event` turns it into a `ValidEvent` whose `body` is the
caller's part of the record, and `finalize_record` adds what the server
assigns (tenant, id, seq, received time) and produces the canonical bytes that
are stored verbatim and hashed. docs/record-format.md describes the record.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from .canonical import canonical_json, plain_number, plain_value
from .errors import FieldViolation, InvalidArgument

RECORD_VERSION: Final = 1

# Enum numbers of the contract (sealtrail.v1) and their names in the record.
CATEGORIES: Final = {
    1: "authentication",
    2: "data_access",
    3: "configuration",
    4: "member",
    5: "billing",
    6: "security",
    7: "system",
    8: "api_usage",
}
SEVERITIES: Final = {1: "info", 2: "warning", 3: "error", 4: "critical"}
OUTCOMES: Final = {1: "success", 2: "failure", 3: "denied"}
ACTOR_TYPES: Final = {1: "user", 2: "api_key", 3: "service", 4: "system"}

# Limits, in characters unless said otherwise (docs/api.md lists them).
MAX_RECORD_BYTES: Final = 64 * 1024
# An event larger than this as sent is refused before it is read: its record
# could not fit (protobuf spends at most a few times JSON's bytes on any
# value), and reading, redacting and canonicalising megabytes would hold up
# every call of the process.
MAX_SENT_EVENT_BYTES: Final = 8 * MAX_RECORD_BYTES
MAX_ACTION = 128
MAX_ID = 256
MAX_NAME = 256
# C0 and C1 controls and DEL, which names given to Sealtrail's own objects
# (tokens, sinks, alert rules) may not hold: they are printed to operators'
# terminals and tables, where they would be escape sequences.
CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_EMAIL = 320
MAX_DESCRIPTION = 4096
MAX_USER_AGENT = 1024
# `actor.credential`: its kind's length, and the secret's last characters shown.
MAX_CREDENTIAL_KIND = 64
MAX_CREDENTIAL_HINT = 8
CREDENTIAL_KIND_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]*")
# `actor.roles`: how many, and each one's characters at most.
MAX_ROLES = 32
MAX_ROLE = 128
MAX_IP = 64  # the longest IPv6 text with a zone id that is still sensible
MAX_IDEMPOTENCY_KEY = 128
MAX_CHANGES = 256
MAX_JSON_DEPTH = 32
# The events table indexes details' string and number values for search
# (`search_doc`), numbers as PostgreSQL writes them: in full, 1e-300 as 302
# characters. Its index holds 1 MiB of words at most: past it the database
# refused the insert (`string is too long for tsvector`), 5,000 such numbers
# in a 64 KiB record sufficing. The distinct numbers of details that JSON
# writes with an exponent (the only ones longer written out) may take this
# many characters in all; with what the rest of a record can add, the index
# stays well within its limit.
MAX_INDEXED_NUMBER_TEXT = 512 * 1024
MAX_FUTURE_SKEW_SECONDS = 300

ACTION_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
# Actions only Sealtrail itself records (`validate_event(own=True)`): retention's
# records, which no retention rule removes (domain/retention.py). A caller can
# neither forge one nor keep events for good by naming them so.
RESERVED_ACTION_PREFIX: Final = "retention."
# The alerts Sealtrail raises (domain/alerts.py): forged, a recorder's event
# would reach a SIEM as Sealtrail's alert.
ALERT_ACTION: Final = "security.alert"
# The records Sealtrail keeps of its own API: each read of the log, each
# token, sink, rule and setting change. Forged by a caller, they would show
# reads and changes that never happened (a revocation, an export), and
# forged exports would count against the tenant's export rate limit.
OWN_ACTIONS: Final = frozenset(
    {
        "action_catalog.updated",
        "alert_rule.created",
        "alert_rule.deleted",
        "alert_rule.updated",
        "api_token.created",
        "api_token.listed",
        "api_token.revoked",
        "audit_log.access_denied",
        "audit_log.exported",
        "audit_log.queried",
        "audit_log.rate_limited",
        "audit_log.read_by_key",
        "audit_log.streamed",
        "audit_log.verified",
        "sink.created",
        "sink.deleted",
        "sink.replay_requested",
        "sink.updated",
        "tenant.secret_hashed",
        "tenant.settings_updated",
    }
)
# Own records of reads that keep the reader's filter in their details. A
# text search matches them by description and names only, unless its filter
# asks for them by action: each search's record would match the next search
# of the same words (`EventFilter.searches_read_filters`).
READ_RECORD_ACTIONS: Final = frozenset(
    {"audit_log.exported", "audit_log.queried", "audit_log.streamed"}
)
# Idempotency keys of Sealtrail's own records (a purge's summary, an alert per
# rule and trigger): claimed first by a caller, the record would find the
# caller's event under its key and take it for itself (an alert never raised).
RESERVED_KEY_PREFIXES: Final = ("retention.", "alert:")
_HEX32: Final = re.compile(r"[0-9a-f]{32}")
_HEX16: Final = re.compile(r"[0-9a-f]{16}")
COUNTRY_PATTERN: Final = re.compile(r"[A-Za-z]{2}")  # ISO 3166-1 alpha-2, any case
# The HTTP request an event records (`context.http_*`, `duration_ms`; ADR 0136).
# A method is an RFC 9110 token, stored in upper case.
HTTP_METHOD_PATTERN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,16}")
MAX_HTTP_ROUTE = 512
MIN_HTTP_STATUS, MAX_HTTP_STATUS = 100, 599
MAX_DURATION_MS: Final = 86_400_000.0  # one day, exclusive
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


class Missing:
    """Marks a JSON value that was not set, as distinct from an explicit null."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()


@dataclass(slots=True)
class ChangeDraft:
    field: str
    before: Any = MISSING
    after: Any = MISSING


def plain_values(details: dict[str, Any] | None, changes: list[ChangeDraft]) -> bool:
    """An event Sealtrail builds itself: whether its JSON values (`details`,
    each change's) canonicalise through the fast path (canonical.py)."""
    return plain_value(details) and all(
        value is MISSING or plain_value(value)
        for change in changes
        for value in (change.before, change.after)
    )


@dataclass(slots=True)
class EventDraft:
    """An event as read off a request, not yet validated.

    JSON values (details, change values) are already Python values; `plain`
    says whether they canonicalise through the fast path (see canonical.py),
    and `json_error` carries the first problem met while reading them.
    """

    action: str = ""
    occurred_at: tuple[int, int] | None = None  # (seconds, nanos) since the epoch
    category: int = 0
    severity: int = 0
    outcome: int = 0
    description: str = ""
    actor_type: int = 0
    actor_id: str = ""
    actor_email: str = ""
    actor_display_name: str = ""
    # `actor.credential`: its kind, id and hint, all empty when it is not set.
    credential_kind: str = ""
    credential_id: str = ""
    credential_hint: str = ""
    # `actor.roles`, as sent.
    actor_roles: list[str] = field(default_factory=list)
    resource_type: str = ""
    resource_id: str = ""
    resource_name: str = ""
    changes: list[ChangeDraft] = field(default_factory=list)
    details: dict[str, Any] | None = None
    ip: str = ""
    user_agent: str = ""
    country: str = ""
    request_id: str = ""
    trace_id: str = ""
    span_id: str = ""
    http_method: str = ""
    http_route: str = ""
    http_status_code: int = 0
    duration_ms: float = 0.0
    idempotency_key: str = ""
    # Characters the distinct numbers of details that JSON writes with an
    # exponent take written out in full (`indexed_number_text`).
    details_number_text: int = 0
    plain: bool = True
    # JSON values are stored exactly as sent: no -0, no NullValue number the
    # enum does not name, nothing redacted (the API may copy the request).
    verbatim: bool = True
    json_error: FieldViolation | None = None


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """A validated event: the caller's part of the record and the values the
    indexed columns need."""

    body: dict[str, Any]
    plain: bool
    path: str  # where the event sat in its request, for error messages
    explicit_time: bool  # the caller set occurred_at
    verbatim: bool  # JSON values are stored exactly as sent
    occurred_at: str
    action: str
    category: str | None
    severity: int
    outcome: str
    actor_id: str
    actor_email: str | None  # lowered (`email_key`); the body keeps it as sent
    resource_type: str | None
    resource_id: str | None
    request_id: str | None
    trace_id: str | None
    idempotency_key: str | None
    # The id of the API token that recorded it (`Recorder`), or None for
    # Sealtrail's own records.
    recorded_by: str | None = None
    # context.ip as the `ip` filter compares it (`network_address`), or None.
    ip: str | None = None
    # The actor's display name and the resource's name, which the text filter
    # searches beside description and details; None when it has neither.
    search_names: str | None = None
    # When redaction changed it and a retry may follow (it has an idempotency
    # key): the body as the tenant's other redaction mode would have stored
    # it, and as it was sent. A retry across a change of mode, or of a rule
    # added since the first attempt stored the body as sent, is the same
    # request (`store.idempotency.repeated_key_outcome`, ADR 0011).
    stored_otherwise: tuple[dict[str, Any], ...] = ()
    # `context.ip` as sent, when the tenant's IP recording kept less of it
    # (ADR 0154): a retry across a change of that setting is the same request.
    sent_ip: str | None = None


@dataclass(frozen=True, slots=True)
class Correlation:
    """Where a call came from: its request id and the caller's span (W3C ids,
    lowercase hex), or empty strings for what is not known."""

    request_id: str = ""
    trace_id: str = ""
    span_id: str = ""


NO_CORRELATION: Final = Correlation()
# The context fields `correlate` fills; they say how an event arrived, not what
# happened, so idempotent replays do not compare them (see `asserted_part`).
CORRELATION_FIELDS: Final = ("request_id", "trace_id", "span_id")


def correlate(draft: EventDraft, correlation: Correlation) -> EventDraft:
    """Fill the draft's request id, and its trace and span ids as a pair, from
    the call it arrived in, where the caller left them empty. A caller that
    sets any of trace_id or span_id keeps both as sent: ids of two different
    traces are never mixed in one event."""
    if not draft.request_id:
        draft.request_id = correlation.request_id
    if not draft.trace_id and not draft.span_id:
        draft.trace_id = correlation.trace_id
        draft.span_id = correlation.span_id
    return draft


@dataclass(frozen=True, slots=True)
class ServerFields:
    """What the server assigns to an event when it is appended."""

    tenant_id: str
    id: str
    seq: int
    received_at: str


# The largest seq a log can reach and a JSON number can hold exactly.
MAX_SEQ: Final = 2**53 - 1


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with exactly six fractional digits, as records hold times:
    fixed width, so that such times compare as text (the year padded to four
    digits, which strftime does not do below 1000: a filter's bound may be)."""
    utc = moment.astimezone(UTC)
    if utc.year >= 1000:  # every record's (after 1970), as on the Record path
        # isoformat writes the same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # but its "+00:00", at half the cost.
        return utc.isoformat(timespec="microseconds")[:-6] + "Z"
    return f"{utc.year:04d}" + utc.strftime("-%m-%dT%H:%M:%S.%fZ")


def timestamp_from_parts(seconds: int, nanos: int) -> datetime:
    """A protobuf Timestamp as a datetime, truncated to the microsecond."""
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)


def checked_timestamp(seconds: int, nanos: int, *, field: str) -> datetime:
    """timestamp_from_parts, or InvalidArgument naming `field` for a time no
    datetime can hold (nanos out of range, seconds past year 1 or 9999)."""
    try:
        if not 0 <= nanos < 1_000_000_000:
            raise ValueError
        return timestamp_from_parts(seconds, nanos)
    except (OverflowError, OSError, ValueError):
        raise InvalidArgument.field(field, "is not a valid time") from None


def checked_bound(seconds: int, nanos: int, *, field: str) -> datetime:
    """checked_timestamp of a bound on events' times (a filter's, a replay
    window's, a stream's or a received range's start). Times are kept to the
    microsecond: a bound between two is the later one, so that an event
    before it neither passes a start nor fails an end, whichever path takes
    the bound."""
    moment = checked_timestamp(seconds, nanos, field=field)
    if not nanos % 1000:
        return moment
    try:
        return moment + timedelta(microseconds=1)
    except OverflowError:  # past the last microsecond a datetime holds: no event is later
        return moment


class _Checker:
    """Collects every violation of one event, then raises them together."""

    __slots__ = ("path", "violations")

    def __init__(self, path: str) -> None:
        self.path = path
        self.violations: list[FieldViolation] = []

    def fail(self, name: str, description: str) -> None:
        self.violations.append(FieldViolation(f"{self.path}.{name}", description))

    def text(self, name: str, value: str, limit: int, *, required: bool = False) -> str | None:
        if not value:
            if required:
                self.fail(name, "is required")
            return None
        if len(value) > limit:
            self.fail(name, f"is {len(value)} characters long; the limit is {limit}")
        elif "\x00" in value:
            self.fail(name, "must not contain NUL characters")
        return value

    def enum(self, name: str, value: int, names: dict[int, str], default: int | None) -> str | None:
        if value == 0:
            return None if default is None else names[default]
        found = names.get(value)
        if found is None:
            self.fail(name, f"unknown enum value {value}")
        return found


@dataclass(frozen=True, slots=True)
class Recorder:
    """The API token a caller's events are recorded with: the record's
    `recorded_by`, stamped from the call's credentials and never read off the
    event, so that whatever actor an event claims, it names the credential
    that wrote it (ADR 0061). `token_name` as Sealtrail's own records show it
    (`Principal.name`, redacted)."""

    token_id: str
    token_name: str = ""

    def part(self) -> dict[str, str]:
        """The record's `recorded_by` object (an empty name omitted)."""
        if self.token_name:
            return {"token_id": self.token_id, "token_name": self.token_name}
        return {"token_id": self.token_id}


def validate_event(
    draft: EventDraft,
    *,
    now: datetime,
    path: str = "event",
    own: bool = False,
    recorder: Recorder | None = None,
) -> ValidEvent:
    """Check every field of `draft`; raise InvalidArgument naming each bad one.
    `own`: an event Sealtrail records itself, which may use reserved actions.
    `recorder`: the token recording a caller's event (None for Sealtrail's own)."""
    check = _Checker(path)
    body: dict[str, Any] = {}

    action = check.text("action", draft.action, MAX_ACTION, required=True)
    if action is not None and not ACTION_PATTERN.fullmatch(action):
        check.fail("action", "must be dotted lowercase `resource.verb`, e.g. `api_key.create`")
    elif action is not None and not own and action.startswith(RESERVED_ACTION_PREFIX):
        check.fail("action", f"`{RESERVED_ACTION_PREFIX}*` is reserved for Sealtrail's own records")
    elif action == ALERT_ACTION and not own:
        check.fail("action", f"`{ALERT_ACTION}` is reserved for the alerts Sealtrail raises")
    elif action in OWN_ACTIONS and not own:
        check.fail("action", f"`{action}` is reserved for Sealtrail's records of its own API")
    body["action"] = action

    occurred = _occurred_at(check, draft.occurred_at, now)
    body["occurred_at"] = occurred

    category = check.enum("category", draft.category, CATEGORIES, None)
    if category is not None:
        body["category"] = category
    severity_name = check.enum("severity", draft.severity, SEVERITIES, 1)
    body["severity"] = severity_name
    outcome = check.enum("outcome", draft.outcome, OUTCOMES, 1) or "success"
    body["outcome"] = outcome

    description = check.text("description", draft.description, MAX_DESCRIPTION)
    if description is not None:
        body["description"] = description

    actor: dict[str, Any] = {
        "type": check.enum("actor.type", draft.actor_type, ACTOR_TYPES, 1),
        "id": check.text("actor.id", draft.actor_id, MAX_ID, required=True),
    }
    actor_email = check.text("actor.email", draft.actor_email, MAX_EMAIL)
    if actor_email is not None:
        if "@" not in actor_email:
            check.fail("actor.email", "must be an email address")
        actor["email"] = actor_email
    display_name = check.text("actor.display_name", draft.actor_display_name, MAX_NAME)
    if display_name is not None:
        actor["display_name"] = display_name
    credential = _credential(check, draft)
    if credential:
        actor["credential"] = credential
    roles = _roles(check, draft.actor_roles)
    if roles:
        actor["roles"] = roles
    body["actor"] = actor

    resource: dict[str, str] = {}
    for key, value, limit in (
        ("type", draft.resource_type, MAX_NAME),
        ("id", draft.resource_id, MAX_ID),
        ("name", draft.resource_name, MAX_NAME),
    ):
        checked = check.text(f"resource.{key}", value, limit)
        if checked is not None:
            resource[key] = checked
    if resource:
        body["resource"] = resource

    if draft.changes:
        body["changes"] = _changes(check, draft.changes)
    if draft.json_error is not None:
        check.violations.append(draft.json_error)
    if draft.details:
        body["details"] = draft.details
    if draft.details_number_text > MAX_INDEXED_NUMBER_TEXT:
        check.fail(
            "details",
            f"numbers take {draft.details_number_text} characters in full for search"
            f" (at most {MAX_INDEXED_NUMBER_TEXT}): send as strings",
        )

    context, ip_column = _context(check, draft)
    if context:
        body["context"] = context

    idempotency_key = check.text("idempotency_key", draft.idempotency_key, MAX_IDEMPOTENCY_KEY)
    if idempotency_key is not None:
        if not own and idempotency_key.startswith(RESERVED_KEY_PREFIXES):
            prefixes = " or ".join(RESERVED_KEY_PREFIXES)
            check.fail("idempotency_key", f"must not start with {prefixes}: Sealtrail's own keys")
        body["idempotency_key"] = idempotency_key
    if recorder is not None:
        body["recorded_by"] = recorder.part()

    if check.violations:
        raise InvalidArgument(check.violations)
    return ValidEvent(
        body=body,
        # A fractional duration is a float, which only rfc8785 writes as JCS does.
        plain=draft.plain and type(context.get("duration_ms", 0)) is int,
        path=path,
        explicit_time=draft.occurred_at is not None,
        verbatim=draft.verbatim,
        occurred_at=occurred,
        action=draft.action,
        category=category,
        severity=draft.severity or 1,
        outcome=outcome,
        actor_id=draft.actor_id,
        actor_email=None if actor_email is None else email_key(actor_email),
        resource_type=resource.get("type"),
        resource_id=resource.get("id"),
        request_id=context.get("request_id"),
        trace_id=context.get("trace_id"),
        idempotency_key=idempotency_key,
        recorded_by=None if recorder is None else recorder.token_id,
        ip=ip_column,
        search_names=search_names(body),
    )


def written_with_exponent(number: float) -> bool:
    """Whether JSON (RFC 8785, as records are written) writes a non-zero
    finite number with an exponent: below 1e-6 or from 1e21 on in magnitude.
    Only those are longer written out in full than in the record."""
    return not 1e-6 <= abs(number) < 1e21


def indexed_number_text(numbers: Iterable[float]) -> int:
    """The characters `numbers` take as PostgreSQL writes a JSON number out
    (numeric's text: every digit, no exponent), as the search index of
    details holds them: 1e-300 is `0.` and 300 digits, -1.5e+21 is `-` and
    22 digits."""
    total = 0
    for number in numbers:
        sign, digits, exponent = Decimal(repr(number)).normalize().as_tuple()
        assert isinstance(exponent, int)  # finite
        total += sign + max(1, len(digits) + exponent) + (1 - exponent if exponent < 0 else 0)
    return total


def _occurred_at(check: _Checker, value: tuple[int, int] | None, now: datetime) -> str:
    if value is None:
        return format_timestamp(now)
    seconds, nanos = value
    if seconds < 0 or not 0 <= nanos < 1_000_000_000:
        check.fail("occurred_at", "must be a valid time after 1970-01-01T00:00:00Z")
        return ""
    if seconds + nanos / 1e9 - now.timestamp() > MAX_FUTURE_SKEW_SECONDS:
        check.fail("occurred_at", "is more than 5 minutes in the future")
        return ""
    try:
        return format_timestamp(timestamp_from_parts(seconds, nanos))
    except (OverflowError, OSError, ValueError):
        check.fail("occurred_at", "is out of range")
        return ""


def _changes(check: _Checker, changes: list[ChangeDraft]) -> list[dict[str, Any]]:
    if len(changes) > MAX_CHANGES:
        check.fail("changes", f"has {len(changes)} entries; the limit is {MAX_CHANGES}")
    result = []
    for index, change in enumerate(changes):
        entry: dict[str, Any] = {
            "field": check.text(f"changes[{index}].field", change.field, MAX_NAME, required=True)
        }
        if change.before is not MISSING:
            entry["before"] = change.before
        if change.after is not MISSING:
            entry["after"] = change.after
        result.append(entry)
    return result


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def network_address(text: str) -> IpAddress | None:
    """A record's `context.ip` as the `ip` filter compares it, or None if it
    is no address: without an IPv6 zone id (`fe80::1%eth0`, which PostgreSQL's
    inet does not take) and an IPv4 address mapped into IPv6 as IPv4, so that
    one client seen through a dual-stack listener matches its IPv4 network."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _network_form(address)


def _network_form(address: IpAddress) -> IpAddress:
    """`address` as `network_address` gives it: no zone id, IPv4 not mapped."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def email_key(email: str) -> str:
    """An email address as the `actor` filter compares it: lowered, so that an
    investigator finds it in whatever case they have it (ADR 0067). The
    `events.actor_email` column is written so, and the filter's value and the
    streams' matcher lower theirs with this same function: Python's str.lower,
    the same on every server, never PostgreSQL's lower(), which follows the
    database's locale (ASCII alone under C, `I` to a dotless i under Turkish).
    Lowered, not case-folded: `ß` stays `ß` (casefold makes it `ss`)."""
    return email.lower()


def context_address(text: str) -> str | None:
    """`network_address` as the text the `events.ip` column is written from."""
    address = network_address(text)
    return None if address is None else str(address)


def role_fault(role: str) -> str | None:
    """What is wrong with a role's name (Record's `actor.roles`, a filter's
    `actor_roles`), None if nothing: 1 to MAX_ROLE characters, no control
    character."""
    if not role:
        return "is empty: name a role, e.g. admin"
    if len(role) > MAX_ROLE:
        return f"is {len(role)} characters long; the limit is {MAX_ROLE}"
    if CONTROL_CHARACTERS.search(role):
        return "must not contain control characters"
    return None


def _roles(check: _Checker, roles: list[str]) -> list[str]:
    """The record's `actor.roles` (empty when none was sent), in the order
    sent: at most MAX_ROLES, each 1 to MAX_ROLE characters with no control
    character, none given twice (refused, not folded: the record keeps what
    was sent, and a caller sending `admin` twice has a bug to hear of).
    Each refusal names the entry, `actor.roles[2]`."""
    if len(roles) > MAX_ROLES:
        check.fail("actor.roles", f"has {len(roles)} roles; the limit is {MAX_ROLES}")
        return []
    seen: set[str] = set()
    for index, role in enumerate(roles):
        name = f"actor.roles[{index}]"
        if (fault := role_fault(role)) is not None:
            check.fail(name, fault)
        elif role in seen:
            check.fail(name, f"repeats role {role[:40]!r}: give each role once")
        seen.add(role)
    return list(roles)


def _credential(check: _Checker, draft: EventDraft) -> dict[str, str]:
    """The record's `actor.credential` (empty when none was sent): its kind
    and id required, its hint at most MAX_CREDENTIAL_HINT characters and never
    equal to the credential's or the actor's id. Whether
    the id or hint is a secret is the redactor's to say (`refuse_secret_credential`)."""
    if not (draft.credential_kind or draft.credential_id or draft.credential_hint):
        return {}
    credential: dict[str, str] = {}
    kind = check.text("actor.credential.kind", draft.credential_kind, MAX_CREDENTIAL_KIND,
                      required=True)  # fmt: skip
    if kind is not None:
        if not CREDENTIAL_KIND_PATTERN.fullmatch(kind):
            check.fail("actor.credential.kind", "must be lower_snake_case, e.g. api_key")
        credential["kind"] = kind
    credential_id = check.text("actor.credential.id", draft.credential_id, MAX_ID, required=True)
    if credential_id is not None:
        credential["id"] = credential_id
    hint = check.text("actor.credential.hint", draft.credential_hint, MAX_CREDENTIAL_HINT)
    if hint is not None:
        # The LAST characters of a longer secret: one equal to the id or the
        # actor's id is a whole value (a PIN sent as both; an api_key actor's
        # id, the key, which the redactor masks to its last 4 characters).
        for name, value in (("credential.id", draft.credential_id), ("actor.id", draft.actor_id)):
            if hint == value:
                check.fail(
                    "actor.credential.hint",
                    f"equals {name}: send the secret's last few characters, not a whole value",
                )
                break
        credential["hint"] = hint
    return credential


def _context(check: _Checker, draft: EventDraft) -> tuple[dict[str, Any], str | None]:
    """The record's `context`, and its address as the `events.ip` column
    holds it (`context_address`, of the one parse: None without one)."""
    context: dict[str, Any] = {}
    ip_column = None
    ip = check.text("context.ip", draft.ip, MAX_IP)
    if ip is not None:
        # Kept as sent (lowercased), not re-rendered: ipaddress's text form of
        # some IPv6 addresses differs between Python versions.
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            check.fail("context.ip", "must be an IPv4 or IPv6 address")
        else:
            context["ip"] = ip.lower()
            ip_column = str(_network_form(address))
    if draft.country:
        if COUNTRY_PATTERN.fullmatch(draft.country):
            context["country"] = draft.country.upper()
            context["country_source"] = COUNTRY_SOURCE_CALLER
        else:
            check.fail("context.country", "must be an ISO 3166-1 alpha-2 code: two letters")
    user_agent = check.text("context.user_agent", draft.user_agent, MAX_USER_AGENT)
    if user_agent is not None:
        context["user_agent"] = user_agent
    if draft.request_id:
        request_id = parse_request_id(draft.request_id)
        if request_id is None:
            check.fail("context.request_id", "must be a UUID (32 hex digits, hyphens optional)")
        else:
            context["request_id"] = request_id
    for name, value, pattern, digits in (
        ("trace_id", draft.trace_id, _HEX32, 32),
        ("span_id", draft.span_id, _HEX16, 16),
    ):
        if value:
            normalized = value.lower()
            if not pattern.fullmatch(normalized) or not normalized.strip("0"):
                check.fail(f"context.{name}", f"must be {digits} hex digits, not all zero")
            else:
                context[name] = normalized
    if draft.http_method or draft.http_route or draft.http_status_code or draft.duration_ms:
        _http(check, draft, context)
    return context, ip_column


def _http(check: _Checker, draft: EventDraft, context: dict[str, Any]) -> None:
    """The record's `context.http_method`, `http_route`, `http_status_code`
    and `duration_ms`, each only when set (ADR 0136)."""
    if draft.http_method:
        if HTTP_METHOD_PATTERN.fullmatch(draft.http_method):
            context["http_method"] = draft.http_method.upper()
        else:
            check.fail("context.http_method", "must be 1 to 16 token characters, e.g. POST")
    route = draft.http_route
    if route:
        if (problem := http_route_problem(route)) is not None:
            check.fail("context.http_route", problem)
        else:
            context["http_route"] = route
    status = draft.http_status_code
    if status:
        if MIN_HTTP_STATUS <= status <= MAX_HTTP_STATUS:
            context["http_status_code"] = status
        else:
            check.fail(
                "context.http_status_code", f"is {status}; must be 100 to 599, or 0 for none"
            )
    duration = draft.duration_ms
    if duration:  # 0 (and -0) is none
        if not 0 < duration < MAX_DURATION_MS:  # NaN fails too
            check.fail(
                "context.duration_ms", "must be finite, at least 0 and under 86400000 (a day)"
            )
        else:
            whole = plain_number(duration)
            context["duration_ms"] = duration if whole is None else whole


def http_route_problem(route: str) -> str | None:
    """Why `route` is no `context.http_route` (None: it is one): empty,
    longer than MAX_HTTP_ROUTE characters, a control character in it, or a
    query string. The event's route and the filter's `http_routes` alike."""
    if not route:
        return "is empty: give a route, e.g. /v1/users/{id}"
    if len(route) > MAX_HTTP_ROUTE:
        return f"is {len(route)} characters long; the limit is {MAX_HTTP_ROUTE}"
    if CONTROL_CHARACTERS.search(route):
        return "must not contain control characters"
    if "?" in route:
        return "must not hold a query string (`?`): send the path"
    return None


# An alert's `details.trigger_request` (alerts/evaluator.py): the API request
# its trigger was, each part by its name there and its context's name.
TRIGGER_REQUEST_NAMES: Final = (
    ("method", "http_method"),
    ("route", "http_route"),
    ("status", "http_status_code"),
    ("duration_ms", "duration_ms"),
)


def trigger_request(context: dict[str, Any]) -> dict[str, Any]:
    """What an alert's `details.trigger_request` says of the API request its
    trigger was, from the trigger record's `context`: the parts recorded, as
    recorded ({} with none). In its details, not its context: an alert is no
    request, and a filter or count by HTTP status, route or duration takes
    the trigger alone."""
    return {name: context[key] for name, key in TRIGGER_REQUEST_NAMES if key in context}


_SEQ_KEY: Final = b'"seq":'


def record_names_seq(record: bytes, seq: int) -> bool:
    """Whether a canonical record's top-level `seq` is `seq`. Keys are sorted,
    and after `seq` only `severity`, `tenant_id` and `v` follow, none of which
    can hold `"seq":`, so the last occurrence is the top-level one."""
    return record.startswith(b'"seq":%d,' % seq, record.rfind(_SEQ_KEY))


def named_in_record(record: str, key: str) -> object:
    """The top-level `key` a stored record names (None if it names none, or
    is no JSON object): what an error about a moved or swapped record quotes."""
    try:
        parsed = json.loads(record)
    except (ValueError, RecursionError):
        return None
    return parsed.get(key) if isinstance(parsed, dict) else None


def parse_uuid(text: str) -> str | None:
    """The lowercase 8-4-4-4-12 form of a UUID in that form, else None."""
    return text.lower() if _UUID.fullmatch(text) else None


# A request id: a UUID in its usual 8-4-4-4-12 form or as 32 hex digits
# (nginx's $request_id), read the same off metadata, an event and a filter.
_REQUEST_ID: Final = re.compile(
    r"([0-9a-fA-F]{8})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{12})"
)


def parse_request_id(value: str) -> str | None:
    """The lowercase hyphenated UUID `value` spells, else None."""
    match = _REQUEST_ID.fullmatch(value)
    if match is None or ("-" in value and len(value) != 36):
        return None
    return "-".join(match.groups()).lower()


def finalize_record(event: ValidEvent, server: ServerFields) -> bytes:
    """The canonical record of an appended event: exactly the bytes that are
    stored and hashed into the tenant's Merkle tree."""
    record = {
        **event.body,
        "v": RECORD_VERSION,
        "tenant_id": server.tenant_id,
        "id": server.id,
        "seq": server.seq,
        "received_at": server.received_at,
    }
    return canonical_json(record, plain=event.plain)


def search_names(body: dict[str, Any]) -> str | None:
    """The names in a body (its actor's display name, its resource's name)
    that the text filter searches, joined by a space; None without either.
    Read off the body as stored: after redaction, or a secret in a name would
    sit in clear in the column (redaction.redact_event derives it again)."""
    names = (body["actor"].get("display_name"), body.get("resource", {}).get("name"))
    return " ".join(name for name in names if name) or None


def recorder_bytes(event: ValidEvent) -> int:
    """The bytes the server adds to the event's record of its own, which the
    record limit does not count: `recorded_by` (its key, value and a comma),
    stamped from the token, since an event that fits must fit whichever token
    sends it (helper-177); and a country the server located (`located`),
    since an event that fits must fit whatever its address (ADR 0134); and
    the mark of an address the tenant's IP recording kept less of (ADR 0154)."""
    size = 0
    recorder = event.body.get("recorded_by")
    if recorder is not None:
        size += len(canonical_json({"recorded_by": recorder}, plain=False)) - 1  # {} out, "," in
    context = event.body.get("context", {})
    source = context.get("country_source")
    if source is not None:
        stamped = {"country_source": source}
        if source == COUNTRY_SOURCE_GEOIP:
            stamped["country"] = context["country"]
        size += len(canonical_json(stamped, plain=False)) - 1
    mark = context.get(IP_RECORDING_MARK)
    if mark is not None:
        size += len(canonical_json({IP_RECORDING_MARK: mark}, plain=False)) - 1
    return size


# `context.ip_recording` in a record: how much of the address sent the
# tenant's IP recording kept (`truncated`, `none`; ADR 0154), set by the
# server; absent for an address kept whole, or none sent.
IP_RECORDING_MARK: Final = "ip_recording"


# `context.country_source` in a record: who located its `country` (ADR 0134),
# the caller or the server from the IP address. Records stored before the
# server marked it have a country and no such key; their bytes, and hashes,
# are what they were, and they show COUNTRY_SOURCE_UNSPECIFIED.
COUNTRY_SOURCE_CALLER: Final = "caller"
COUNTRY_SOURCE_GEOIP: Final = "geoip"


def wants_location(event: ValidEvent) -> str | None:
    """The IP address to locate the event's client by: its `context.ip` when
    it has no `context.country`, else None."""
    context = event.body.get("context")
    if context is None or "country" in context:
        return None
    ip = context.get("ip")
    return ip if isinstance(ip, str) else None


def located(event: ValidEvent, country: str) -> ValidEvent:
    """The event with the country the server located it in (an ISO 3166-1
    alpha-2 code, upper case), marked as the server's, in its body and so in
    its record and leaf hash. Its alternative bodies (`stored_otherwise`) need
    none: `asserted_part` leaves a located country out of what a retry must
    match."""
    context = {**event.body["context"], "country": country}
    context["country_source"] = COUNTRY_SOURCE_GEOIP
    return replace(event, body={**event.body, "context": context})


SERVER_FIELDS: Final = frozenset({"v", "tenant_id", "id", "seq", "received_at"})


def caller_part(record: dict[str, Any]) -> dict[str, Any]:
    """A parsed record without what the server assigned: what the caller sent,
    as validated."""
    return {k: v for k, v in record.items() if k not in SERVER_FIELDS}


def asserted_part(part: dict[str, Any]) -> dict[str, Any]:
    """A caller part (or a validated body) without the correlation ids and
    the recorder: what the caller asserts happened. Two requests with one
    idempotency key must agree on it; a retry may well come with another
    request id or span, or with the tenant's next token after a rotation."""
    if "recorded_by" in part:
        part = {k: v for k, v in part.items() if k != "recorded_by"}
    context = part.get("context")
    if context is None:
        return part
    source = context.get("country_source")
    if source is None and not any(name in context for name in CORRELATION_FIELDS):
        return part
    # Who located the country is the server's to say, and a country the
    # server located is not the caller's to assert: a retry after the GeoIP
    # database changed, on a server without one, or of an event first stored
    # before the mark was, is the same request.
    dropped: tuple[str, ...] = (*CORRELATION_FIELDS, "country_source")
    if source == COUNTRY_SOURCE_GEOIP:
        dropped = (*dropped, "country")
    rest = {k: v for k, v in context.items() if k not in dropped}
    if rest:
        return {**part, "context": rest}
    return {k: v for k, v in part.items() if k != "context"}
