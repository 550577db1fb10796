"""EventFilter validation and keyset page tokens (AIP-158).

A page token is opaque to callers: the last seq returned and a fingerprint of
tenant, filter and order, signed and bound to the caller's token
(page_tokens.py, ADR 0042), so a token replayed with another filter, order,
tenant or caller is rejected instead of silently paging something else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import rfc8785

from .errors import FieldViolation, InvalidArgument
from .event import (
    ACTION_PATTERN,
    ACTOR_TYPES,
    CATEGORIES,
    CONTROL_CHARACTERS,
    COUNTRY_PATTERN,
    CREDENTIAL_KIND_PATTERN,
    MAX_ACTION,
    MAX_CREDENTIAL_KIND,
    MAX_DURATION_MS,
    MAX_EMAIL,
    MAX_ID,
    MAX_NAME,
    MAX_ROLES,
    OUTCOMES,
    READ_RECORD_ACTIONS,
    SEVERITIES,
    checked_bound,
    email_key,
    format_timestamp,
    http_route_problem,
    network_address,
    parse_request_id,
    parse_uuid,
    role_fault,
)
from .text_search import TextQuery, websearch_text

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
MAX_FILTER_VALUES: Final = 100
MAX_TEXT: Final = 256
MAX_USER_AGENT_FILTER: Final = 256
MAX_ACTOR_PREFIX: Final = 256
_ACTION_PREFIX: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\.\*")
# `*.delete`: every action whose last parts are these, whatever it acts on.
_ACTION_SUFFIX: Final = re.compile(r"\*(?:\.[a-z][a-z0-9_]*)+")
_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")

_Fail = Callable[[str, str], None]
SEVERITY_RANKS: Final = {name: rank for rank, name in SEVERITIES.items()}


@dataclass(slots=True)
class FilterDraft:
    """An EventFilter as read off a request, not yet validated."""

    occurred_after: tuple[int, int] | None = None
    occurred_before: tuple[int, int] | None = None
    actions: list[str] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)
    min_severity: int = 0
    outcomes: list[int] = field(default_factory=list)
    actor: str = ""
    resource_type: str = ""
    resource_id: str = ""
    request_id: str = ""
    trace_id: str = ""
    text: str = ""
    recorded_by: str = ""
    ip: str = ""
    exclude_actions: list[str] = field(default_factory=list)
    country: str = ""
    actor_email_domain: str = ""
    severities: list[int] = field(default_factory=list)
    user_agent: str = ""
    credential_id: str = ""
    credential_kind: str = ""
    actor_types: list[int] = field(default_factory=list)
    countries: list[str] = field(default_factory=list)
    resource_types: list[str] = field(default_factory=list)
    http_status_classes: list[str] = field(default_factory=list)
    actor_prefix: str = ""
    min_duration_ms: float = 0.0
    http_routes: list[str] = field(default_factory=list)
    changed_fields: list[str] = field(default_factory=list)
    details_equals: dict[str, str] = field(default_factory=dict)
    actor_roles: list[str] = field(default_factory=list)
    http_route_presence: int = 0  # a Presence number: 0 any, 1 present, 2 absent


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A validated filter. Empty tuples and None match everything."""

    occurred_after: datetime | None = None
    occurred_before: datetime | None = None
    actions: tuple[str, ...] = ()
    action_prefixes: tuple[str, ...] = ()  # each ends with "." (from "api_key.*")
    action_suffixes: tuple[str, ...] = ()  # each starts with "." (from "*.delete")
    categories: tuple[str, ...] = ()
    min_severity: int = 0
    outcomes: tuple[str, ...] = ()
    actor: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    text: str | None = None
    recorded_by: str | None = None  # a token id, lowercase hyphenated
    ip: str | None = None  # a network in CIDR notation, host bits clear (`ip_network`)
    # Actions left out (`exclude_actions`), in the three forms of `actions`.
    excluded_actions: tuple[str, ...] = ()
    excluded_prefixes: tuple[str, ...] = ()
    excluded_suffixes: tuple[str, ...] = ()
    country: str | None = None  # `context.country`: two letters, upper case
    # `actor_email_domain` as given but for a leading "@": `contractor.example`,
    # or `*.contractor.example` for the domain and its subdomains.
    actor_email_domain: str | None = None

    def email_domain_suffixes(self) -> tuple[str, ...]:
        """The ends of an `events.actor_email` value at `actor_email_domain`:
        "@" and, for `*.`, "." before the domain, lowered as the column is
        written (`email_key`) and as given, for an event appended before it
        was lowered (ADR 0067), as `actor_emails`. The domain has no "@", so
        what precedes such an end holds the email's last "@"."""
        if self.actor_email_domain is None:
            return ()
        given = self.actor_email_domain
        subdomains = given.startswith("*.")
        domain = given[2:] if subdomains else given
        ends = ("@", ".") if subdomains else ("@",)
        forms = dict.fromkeys((email_key(domain), domain))
        return tuple(end + form for form in forms for end in ends)

    def email_at_domain(self, email: str | None) -> bool:
        """Whether the email `email` is at `actor_email_domain`, in any case:
        the SQL's comparison, with the email lowered as the column holds it."""
        return email is not None and email_key(email).endswith(self.email_domain_suffixes())

    # Exact severities (`severities`), their ranks (1 info .. 4 critical), sorted.
    severities: tuple[int, ...] = ()
    # Text `context.user_agent` contains, its letters A-Z lowered (`agent_key`).
    user_agent: str | None = None
    # `actor.credential.id`, exactly as recorded.
    credential_id: str | None = None
    # `actor.credential.kind`, exactly as recorded (lower_snake_case): with
    # `credential_id`, that one credential, not another kind's of its id.
    credential_kind: str | None = None
    # `actor.type`s, as the record writes them (`api_key`), sorted, once each.
    actor_types: tuple[str, ...] = ()
    # `countries`: any of these `context.country`s, upper case, sorted, once
    # each; never with `country` (validate_filter refuses both).
    countries: tuple[str, ...] = ()
    # `resource_types`: any of these `resource.type`s, sorted, once each;
    # never with `resource_type`.
    resource_types: tuple[str, ...] = ()
    # `context.http_status_code`s: classes as `5xx` (lower case) and exact
    # codes as `404`, sorted, once each (ADR 0136).
    http_status_classes: tuple[str, ...] = ()

    def status_patterns(self) -> tuple[str, ...]:
        """`http_status_classes` as SQL LIKE patterns on the record's status
        code as text (always three digits): `5xx` is `5__`, `404` itself."""
        return tuple(value.replace("x", "_") for value in self.http_status_classes)

    def status_matches(self, code: object) -> bool:
        """Whether a record's `context.http_status_code` (None: it has none)
        is one of `http_status_classes`: the SQL's comparison."""
        if not self.http_status_classes:
            return True
        if type(code) is not int:
            return False
        text = str(code)
        return text in self.http_status_classes or f"{text[0]}xx" in self.http_status_classes

    # `actor_prefix`: the start of an actor id (as given) or email (in any
    # case), every character itself; never with `actor`.
    actor_prefix: str | None = None

    def actor_email_prefixes(self) -> tuple[str, ...]:
        """The starts of an `events.actor_email` value that `actor_prefix`
        matches: lowered as the column is written (`email_key`), and as given,
        for an event appended before it was lowered (ADR 0067), as
        `actor_emails`. Lowered also as the start of a longer text: str.lower
        makes a capital sigma ending a word the final sigma and one within it
        the other, so the prefix is lowered both ways (ADR 0135)."""
        if self.actor_prefix is None:
            return ()
        given = self.actor_prefix
        within = email_key(given + "a")[:-1]
        return tuple(dict.fromkeys((email_key(given), within, given)))

    def actor_prefix_matches(self, actor_id: str, email: str | None) -> bool:
        """Whether an actor of id `actor_id` and email `email` (as recorded)
        starts with `actor_prefix`: the SQL's comparison (store/events.py),
        with the email lowered as the column holds it."""
        if self.actor_prefix is None:
            return True
        return actor_id.startswith(self.actor_prefix) or (
            email is not None and email_key(email).startswith(self.actor_email_prefixes())
        )

    # `min_duration_ms`: the least `context.duration_ms` (milliseconds) of a
    # matching event, above 0 and under a day (ADR 0136); None: any or none.
    min_duration_ms: float | None = None

    def duration_matches(self, duration: object) -> bool:
        """Whether a record's `context.duration_ms` (None: it has none) is
        at least `min_duration_ms`: the SQL's comparison (store/events.py). A
        number no double holds (`1e400`, parsed as infinity; a thousand
        digits, as a whole number), only in a row written straight into the
        database, is none, as the SQL's DURATION_READ reads it."""
        if self.min_duration_ms is None:
            return True
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            return False
        try:
            value = float(duration)
        except OverflowError:
            return False
        return math.isfinite(value) and value >= self.min_duration_ms

    # `http_routes`: any of these `context.http_route`s, each exactly as
    # recorded (no prefix, no case folding), sorted, once each (ADR 0136).
    http_routes: tuple[str, ...] = ()
    # `changed_fields`: any of these `changes[].field`s, exactly as recorded
    # (`limits.rpm` is that name, no path into `limits`), sorted, once each.
    changed_fields: tuple[str, ...] = ()
    # `details_equals`: (key, value) pairs, sorted by key, each a top-level
    # key of `details` whose scalar the record writes as the value (a
    # string's text, a number's or boolean's JSON text), all of them.
    details_equals: tuple[tuple[str, str], ...] = ()
    # `actor_roles`: any of these roles among the record's `actor.roles`,
    # exactly as recorded, sorted, once each.
    actor_roles: tuple[str, ...] = ()
    # `http_route_presence`: whether a matching event has a `context.http_route`
    # (True: an API request's; False: none); None: either. Never False with
    # `http_routes`, and None rather than True with them, which say it.
    has_http_route: bool | None = None

    def route_presence_matches(self, route: object) -> bool:
        """Whether a record's `context.http_route` (None: it has none) is
        there or not as `has_http_route` asks: the SQL's IS [NOT] NULL."""
        return self.has_http_route is None or (route is not None) == self.has_http_route

    def details_match(self, details: object) -> bool:
        """Whether a record's `details` (None: it has none) holds each of
        `details_equals`: the SQL's comparison (store/events.py), a number
        or boolean as the record writes it (RFC 8785: `3`, `1e+21`, `true`)."""
        if not self.details_equals:
            return True
        if not isinstance(details, dict):
            return False
        return all(detail_text(details.get(key)) == value for key, value in self.details_equals)

    def changes_match(self, changes: object) -> bool:
        """Whether a record's `changes` (None: it has none) holds a change of
        one of `changed_fields`: the SQL's comparison (store/events.py)."""
        if not self.changed_fields:
            return True
        if not isinstance(changes, list):
            return False
        return any(
            isinstance(change, dict) and change.get("field") in self.changed_fields
            for change in changes
        )

    def any_country(self) -> tuple[str, ...]:
        """The countries an event's must be one of, `country` or `countries`
        (empty: any, or none): the one form Query, the matcher and a sink's
        narrowing compare, so `country: DE` is `countries: [DE]`."""
        return self.countries or ((self.country,) if self.country is not None else ())

    def any_resource_type(self) -> tuple[str, ...]:
        """The resource types an event's must be one of, `resource_type` or
        `resource_types`, as `any_country`."""
        if self.resource_types:
            return self.resource_types
        return (self.resource_type,) if self.resource_type is not None else ()

    def agent_matches(self, agent: str | None) -> bool:
        """Whether a record's `context.user_agent` contains `user_agent`,
        A-Z in either case: the SQL's comparison (store/events.py)."""
        return self.user_agent is None or (
            agent is not None and self.user_agent in agent_key(agent)
        )

    def excludes(self, action: str) -> bool:
        """Whether `exclude_actions` leaves out events of `action`."""
        return (
            action in self.excluded_actions
            or action.startswith(self.excluded_prefixes)
            or action.endswith(self.excluded_suffixes)
        )

    def ip_range(self) -> tuple[str, str] | None:
        """The first and last address of the `ip` network: the filter's SQL
        compares the column with them, not with `<<=`, which is not leakproof
        and so no index condition under row-level security (ADR 0013)."""
        if self.ip is None:
            return None
        network = ipaddress.ip_network(self.ip)
        return str(network.network_address), str(network.broadcast_address)

    def searches_read_filters(self) -> bool:
        """Whether `text` searches the filters recorded in the records of
        reads (READ_RECORD_ACTIONS): only when the filter names such records
        by action (`audit_log.queried`, `audit_log.*`, `*.exported`), to ask
        who searched for what. Otherwise a search would find the records of
        the searches before it, of the same words."""
        return any(
            action in self.actions
            or action.startswith(self.action_prefixes)
            or action.endswith(self.action_suffixes)
            for action in READ_RECORD_ACTIONS
        )

    def actor_emails(self) -> tuple[str, ...]:
        """The values of the `events.actor_email` column that `actor` matches:
        the email lowered, as the column is written (`email_key`), and as
        given, which finds an event appended before the column was lowered
        (it holds the email as sent) when given exactly so (ADR 0067). An
        equality with each, not lower(actor_email): that is no leakproof
        index condition under row-level security (ADR 0013)."""
        if self.actor is None:
            return ()
        return tuple(dict.fromkeys((self.actor, email_key(self.actor))))

    def fingerprint(self, *, tenant_id: str, order: str) -> str:
        """Identifies tenant, filter and order, to bind page tokens to them.
        The filter as its repr was up to `ip` (the last fields a deployed
        server had): a field of that time always, a later one only when
        set, so adding a field keeps every other filter's fingerprint, and
        the page tokens in flight (a poller's kept cursor) through the upgrade."""
        later = (
            name
            for name, default in _FIELD_DEFAULTS.items()
            if name not in _FINGERPRINTED_ALWAYS and getattr(self, name) != default
        )
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in (*_FINGERPRINTED_ALWAYS, *later)
        )
        material = f"{tenant_id}\x00{order}\x00EventFilter({shown})".encode()
        return hashlib.sha256(material).hexdigest()[:32]


# The fields of EventFilter up to `ip`, as the last server deployed (e8864d0d)
# had them: a fingerprint names each of them, in this order, and a field added
# since (exclude_actions, country, actor_email_domain, severities...) only when
# set (`fingerprint`).
_FINGERPRINTED_ALWAYS: Final = (
    "occurred_after", "occurred_before", "actions", "action_prefixes", "action_suffixes",
    "categories", "min_severity", "outcomes", "actor", "resource_type", "resource_id",
    "request_id", "trace_id", "text", "recorded_by", "ip",
)  # fmt: skip
_FIELD_DEFAULTS: Final = {member.name: member.default for member in dataclasses.fields(EventFilter)}


def validate_filter(
    draft: FilterDraft, *, path: str = "filter", stored: bool = False
) -> EventFilter:
    """Check every field of `draft`; raise InvalidArgument naming each bad one.
    `stored`: a filter taken and stored before (a sink's, an alert rule's),
    loaded: a text in which no word is found is kept, matching nothing as it
    did when stored; refused on load, its sink failed every step."""
    violations: list[FieldViolation] = []

    def fail(name: str, description: str) -> None:
        violations.append(FieldViolation(f"{path}.{name}", description))

    after = _time(draft.occurred_after, "occurred_after", fail)
    before = _time(draft.occurred_before, "occurred_before", fail)
    # Compared as given: bounds a nanosecond apart may round to one microsecond.
    given = (draft.occurred_after, draft.occurred_before)
    if after and before and given[0] and given[1] and given[0] >= given[1]:
        fail("occurred_before", "must be later than occurred_after")

    for name, values in (
        ("actions", draft.actions),
        ("categories", draft.categories),
        ("outcomes", draft.outcomes),
        ("exclude_actions", draft.exclude_actions),
        ("severities", draft.severities),
        ("actor_types", draft.actor_types),
        ("countries", draft.countries),
        ("resource_types", draft.resource_types),
        ("http_status_classes", draft.http_status_classes),
        ("http_routes", draft.http_routes),
        ("changed_fields", draft.changed_fields),
    ):
        if len(values) > MAX_FILTER_VALUES:
            fail(name, f"has {len(values)} values; the limit is {MAX_FILTER_VALUES}")

    actions, prefixes, suffixes = _action_forms(draft.actions, "actions", fail)
    excluded = _action_forms(draft.exclude_actions, "exclude_actions", fail)

    categories = _enum_names(draft.categories, CATEGORIES, "categories", fail)
    outcomes = _enum_names(draft.outcomes, OUTCOMES, "outcomes", fail)
    if draft.min_severity and draft.min_severity not in SEVERITIES:
        fail("min_severity", f"unknown enum value {draft.min_severity}")
    severities = _severities(draft, fail)
    actor_types = _actor_types(draft.actor_types, fail)
    countries = _countries(draft.countries, fail)
    resource_types = _resource_types(draft.resource_types, fail)
    status_classes = _status_classes(draft.http_status_classes, fail)
    routes = _routes(draft.http_routes, fail)
    changed_fields = _changed_fields(draft.changed_fields, fail)
    details_equals = checked_details_equals(draft.details_equals, fail)
    actor_roles = _actor_roles(draft.actor_roles, fail)
    has_http_route = _route_presence(draft.http_route_presence, bool(routes), fail)
    for singular, plural, both in (
        ("country", "countries", bool(draft.country and draft.countries)),
        ("resource_type", "resource_types", bool(draft.resource_type and draft.resource_types)),
    ):
        if both:
            fail(plural, f"set one of {singular} or {plural}, not both")
    actor_prefix = _actor_prefix(draft, fail)
    min_duration_ms = None
    if draft.min_duration_ms:  # 0 (and -0) is none
        if 0 < draft.min_duration_ms < MAX_DURATION_MS:  # NaN fails too
            min_duration_ms = draft.min_duration_ms
        else:
            fail("min_duration_ms", "must be finite, above 0 and under 86400000 (a day)")

    request_id = None
    if draft.request_id:
        request_id = parse_request_id(draft.request_id)
        if request_id is None:
            fail("request_id", "must be a UUID (32 hex digits, hyphens optional)")
    trace_id = draft.trace_id.lower() or None
    if trace_id is not None and not _TRACE_ID.fullmatch(trace_id):
        fail("trace_id", "must be 32 hex digits")
    actor_email_domain = None
    if draft.actor_email_domain:
        actor_email_domain = _email_domain(draft.actor_email_domain)
        if actor_email_domain is None:
            fail(
                "actor_email_domain",
                "must be a domain, `example.com` or `*.example.com` (and subdomains), no address",
            )
    ip = None
    if draft.ip:
        ip = ip_network(draft.ip)
        if ip is None:
            fail("ip", "must be an IP address or a network in CIDR notation (203.0.113.0/24)")
    country = None
    if draft.country:
        if COUNTRY_PATTERN.fullmatch(draft.country):
            country = draft.country.upper()
        else:
            fail("country", "must be an ISO 3166-1 alpha-2 code: two letters")
    user_agent = None
    if len(draft.user_agent) > MAX_USER_AGENT_FILTER:
        fail(
            "user_agent",
            f"is {len(draft.user_agent)} characters long; the limit is {MAX_USER_AGENT_FILTER}",
        )
    elif CONTROL_CHARACTERS.search(draft.user_agent):
        fail("user_agent", "must not contain control characters")
    elif draft.user_agent:
        user_agent = agent_key(draft.user_agent)
    credential_id = None
    if len(draft.credential_id) > MAX_ID:
        fail(
            "credential_id",
            f"is {len(draft.credential_id)} characters long; the limit is {MAX_ID}",
        )
    elif "\x00" in draft.credential_id:
        fail("credential_id", "must not contain NUL characters")
    elif draft.credential_id:
        credential_id = draft.credential_id
    credential_kind = None
    if len(draft.credential_kind) > MAX_CREDENTIAL_KIND:
        fail(
            "credential_kind",
            f"is {len(draft.credential_kind)} characters long; the limit is {MAX_CREDENTIAL_KIND}",
        )
    elif draft.credential_kind and not CREDENTIAL_KIND_PATTERN.fullmatch(draft.credential_kind):
        fail("credential_kind", "must be lower_snake_case as recorded, e.g. api_key")
    elif draft.credential_kind:
        credential_kind = draft.credential_kind
    recorded_by = None
    if draft.recorded_by:
        recorded_by = parse_uuid(draft.recorded_by)
        if recorded_by is None:
            fail("recorded_by", "must be a token id (a UUID)")

    for name, value, limit in (
        ("actor", draft.actor, MAX_EMAIL),
        ("resource_type", draft.resource_type, MAX_NAME),
        ("resource_id", draft.resource_id, MAX_ID),
        ("text", draft.text, MAX_TEXT),
    ):
        if len(value) > limit:
            fail(name, f"is {len(value)} characters long; the limit is {limit}")
        elif "\x00" in value:
            fail(name, "must not contain NUL characters")
        elif (
            name == "text"
            and not stored
            and value.strip()
            and not any(map(_in_words, _searched(value)))
        ):
            # The search's parser finds no word in it, and it matched nothing.
            fail(name, "has no word to search for")

    if violations:
        raise InvalidArgument(violations)
    return EventFilter(
        occurred_after=after,
        occurred_before=before,
        actions=actions,
        action_prefixes=prefixes,
        action_suffixes=suffixes,
        categories=categories,
        min_severity=draft.min_severity,
        outcomes=outcomes,
        actor=draft.actor or None,
        resource_type=draft.resource_type or None,
        resource_id=draft.resource_id or None,
        request_id=request_id,
        trace_id=trace_id,
        text=draft.text.strip() or None,
        recorded_by=recorded_by,
        ip=ip,
        excluded_actions=excluded[0],
        excluded_prefixes=excluded[1],
        excluded_suffixes=excluded[2],
        country=country,
        actor_email_domain=actor_email_domain,
        severities=severities,
        user_agent=user_agent,
        credential_id=credential_id,
        credential_kind=credential_kind,
        actor_types=actor_types,
        countries=countries,
        resource_types=resource_types,
        http_status_classes=status_classes,
        actor_prefix=actor_prefix,
        min_duration_ms=min_duration_ms,
        http_routes=routes,
        changed_fields=changed_fields,
        details_equals=details_equals,
        actor_roles=actor_roles,
        has_http_route=has_http_route,
    )


# The letters A-Z to their lower case, and nothing else: what PostgreSQL's
# lower() does under the C collation (store/events.py), whatever the locale.
_ASCII_LOWERED: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def agent_key(text: str) -> str:
    """A user agent as the `user_agent` filter compares it: the letters A to
    Z lowered, every other character as it is, as the SQL's lower() under
    the C collation does (store/events.py) whatever the database's locale.
    Not str.lower, which lowers every script: the live streams' matcher must
    agree with the SQL, and a locale's lower() differs from server to server
    (`I` to a dotless i under Turkish); a user agent is ASCII by HTTP's grammar."""
    return text.translate(_ASCII_LOWERED)


# Longest domain name (RFC 1035, in ASCII; a Unicode one is shorter).
_MAX_DOMAIN: Final = 253


def _email_domain(value: str) -> str | None:
    """`actor_email_domain` as EventFilter keeps it: as given but for one
    leading "@" (`@contractor.example`), if it is a domain, optionally after
    `*.`: dot-separated labels, none empty, of letters (any script: an
    internationalized domain as sent), marks, digits, `-` and `_`. None for
    anything else: an address, spaces, a trailing dot, `[192.0.2.1]`."""
    domain = value.removeprefix("@")
    labels = domain.removeprefix("*.").split(".")
    if len(domain) > _MAX_DOMAIN + 2 or not all(labels):
        return None
    for label in labels:
        for char in label:
            if char.isascii():
                if not (char.isalnum() or char in "-_"):
                    return None
            elif unicodedata.category(char)[0] not in "LMN":
                return None
    return domain


def _severities(draft: FilterDraft, fail: _Fail) -> tuple[int, ...]:
    """The exact severities of `draft`, sorted once; 0 (unspecified) or an
    unknown value fails, named `severities[index]`, and so do severities of
    which none is `min_severity` or above (both must hold: nothing would)."""
    ranks = []
    for index, value in enumerate(draft.severities):
        if value not in SEVERITIES:
            fail(f"severities[{index}]", f"unknown enum value {value}")
        else:
            ranks.append(value)
    if ranks and draft.min_severity in SEVERITIES and max(ranks) < draft.min_severity:
        fail(
            "severities",
            f"are all below min_severity {SEVERITIES[draft.min_severity]}: both must hold,"
            " and no event would match",
        )
    return tuple(sorted(set(ranks)))


def _actor_types(values: list[int], fail: _Fail) -> tuple[str, ...]:
    """The names of the ActorType values (`api_key`), as records hold them,
    sorted once. UNSPECIFIED names no type an event is stored with (one
    recorded without a type is stored as `user`): it fails, named
    `actor_types[index]`, as an unknown value does."""
    found = []
    for index, value in enumerate(values):
        if value == 0:
            fail(
                f"actor_types[{index}]",
                "ACTOR_TYPE_UNSPECIFIED is no type: events sent without one are ACTOR_TYPE_USER",
            )
        elif value not in ACTOR_TYPES:
            fail(f"actor_types[{index}]", f"unknown enum value {value}")
        else:
            found.append(ACTOR_TYPES[value])
    return tuple(sorted(set(found)))


def _actor_prefix(draft: FilterDraft, fail: _Fail) -> str | None:
    """`actor_prefix` as given, or None if unset; longer than
    MAX_ACTOR_PREFIX characters, a control character in it or `actor` beside
    it fails, named `actor_prefix`."""
    value = draft.actor_prefix
    if not value:
        return None
    if len(value) > MAX_ACTOR_PREFIX:
        fail("actor_prefix", f"is {len(value)} characters long; the limit is {MAX_ACTOR_PREFIX}")
    elif CONTROL_CHARACTERS.search(value):
        fail("actor_prefix", "must not contain control characters")
    elif draft.actor:
        fail("actor_prefix", "set one of actor or actor_prefix, not both")
    else:
        return value
    return None


def _countries(values: list[str], fail: _Fail) -> tuple[str, ...]:
    """`countries` upper case, sorted once; a value that is no ISO 3166-1
    alpha-2 code fails, named `countries[index]`, as `country` would."""
    found = []
    for index, value in enumerate(values):
        if COUNTRY_PATTERN.fullmatch(value):
            found.append(value.upper())
        else:
            fail(f"countries[{index}]", "must be an ISO 3166-1 alpha-2 code: two letters")
    return tuple(sorted(set(found)))


def _resource_types(values: list[str], fail: _Fail) -> tuple[str, ...]:
    """`resource_types` as given, sorted once; each checked as `resource_type`
    is (at most MAX_NAME characters, no NUL), and not empty: no event's type
    is "" (one without a type has none), so it would match nothing."""
    found = []
    for index, value in enumerate(values):
        if not value:
            fail(f"resource_types[{index}]", "is empty: give a resource type")
        elif len(value) > MAX_NAME:
            fail(
                f"resource_types[{index}]",
                f"is {len(value)} characters long; the limit is {MAX_NAME}",
            )
        elif "\x00" in value:
            fail(f"resource_types[{index}]", "must not contain NUL characters")
        else:
            found.append(value)
    return tuple(sorted(set(found)))


def _changed_fields(values: list[str], fail: _Fail) -> tuple[str, ...]:
    """`changed_fields` as given, sorted once; each not empty (no change is
    recorded without its field), and checked as Record checks a change's
    field (at most MAX_NAME characters, no NUL): every name Record took is
    found by, a tab or a line break in it too; else it fails, named
    `changed_fields[index]`."""
    found = []
    for index, value in enumerate(values):
        name = f"changed_fields[{index}]"
        if not value:
            fail(name, "is empty: give a field name, e.g. rate_limit")
        elif len(value) > MAX_NAME:
            fail(name, f"is {len(value)} characters long; the limit is {MAX_NAME}")
        elif "\x00" in value:
            fail(name, "must not contain NUL characters")
        else:
            found.append(value)
    return tuple(sorted(set(found)))


def _actor_roles(values: list[str], fail: _Fail) -> tuple[str, ...]:
    """`actor_roles` sorted, once each; checked as Record checks
    `actor.roles` (at most MAX_ROLES, each 1 to MAX_ROLE characters, no
    control character: a role no event can hold is a mistake to hear of),
    else it fails, named `actor_roles` or `actor_roles[index]`. A value
    given twice is one (any of them matches)."""
    if len(values) > MAX_ROLES:
        fail("actor_roles", f"has {len(values)} values; the limit is {MAX_ROLES}")
        return ()
    found = []
    for index, value in enumerate(values):
        if (fault := role_fault(value)) is not None:
            fail(f"actor_roles[{index}]", fault)
        else:
            found.append(value)
    return tuple(sorted(set(found)))


# `details_equals`: entries, a key's and a value's characters at most.
MAX_DETAILS_EQUALS: Final = 8
MAX_DETAIL_KEY: Final = 64
MAX_DETAIL_VALUE: Final = 256


def checked_details_equals(entries: dict[str, str], fail: _Fail) -> tuple[tuple[str, str], ...]:
    """`details_equals` as (key, value) pairs sorted by key; more than
    MAX_DETAILS_EQUALS entries, an empty key, a key longer than
    MAX_DETAIL_KEY, a value longer than MAX_DETAIL_VALUE or a NUL in either
    (no detail holds one: Record refuses it) fails, named `details_equals`."""
    name = "details_equals"
    if len(entries) > MAX_DETAILS_EQUALS:
        fail(name, f"has {len(entries)} entries; the limit is {MAX_DETAILS_EQUALS}")
        return ()
    for key, value in sorted(entries.items()):
        if not key:
            fail(name, "has an empty key: give a top-level key of details")
        elif len(key) > MAX_DETAIL_KEY:
            fail(name, f"has a key of {len(key)} characters; the limit is {MAX_DETAIL_KEY}")
        elif len(value) > MAX_DETAIL_VALUE:
            fail(name, f"has a value of {len(value)} characters; the limit is {MAX_DETAIL_VALUE}")
        elif "\x00" in key or "\x00" in value:
            fail(name, "must not contain NUL characters")
        else:
            continue
        return ()
    return tuple(sorted(entries.items()))


def detail_text(value: object) -> str | None:
    """A detail's value as `details_equals` compares it: a string as it is,
    a number or boolean as the record writes it (RFC 8785: `3`, `1.5`,
    `1e+21`, `true`), as the SQL's `->>` reads it off the record; None for
    null, an object, an array or no value, which no entry matches."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        try:
            return bytes(rfc8785.dumps(value)).decode()
        except rfc8785.IntegerDomainError:  # none is recorded; as JSON wrote it
            return str(value)
    return None


# An HTTP status class (`5xx`, the x's in either case) or an exact code (`404`).
_STATUS_CLASS: Final = re.compile(r"[1-5](?:[xX]{2}|[0-9]{2})")


def _status_classes(values: list[str], fail: _Fail) -> tuple[str, ...]:
    """`http_status_classes` with classes lowered (`5XX` is `5xx`), sorted
    once; a value that is neither a class nor a code from 100 to 599 fails,
    named `http_status_classes[index]`."""
    found = []
    for index, value in enumerate(values):
        if _STATUS_CLASS.fullmatch(value):
            found.append(value.lower())
        else:
            fail(
                f"http_status_classes[{index}]",
                "must be a class 1xx to 5xx or a code 100 to 599, e.g. 5xx or 404",
            )
    return tuple(sorted(set(found)))


def _routes(values: list[str], fail: _Fail) -> tuple[str, ...]:
    """`http_routes` as given, sorted once; each checked as an event's
    `context.http_route` is (`http_route_problem`): one no event can hold
    would match nothing. A bad one fails, named `http_routes[index]`."""
    found = []
    for index, value in enumerate(values):
        if (problem := http_route_problem(value)) is not None:
            fail(f"http_routes[{index}]", problem)
        else:
            found.append(value)
    return tuple(sorted(set(found)))


# What each `Presence` number asks of a field: PRESENCE_PRESENT, PRESENCE_ABSENT.
_PRESENCES: Final = {1: True, 2: False}


def _route_presence(presence: int, routes: bool, fail: _Fail) -> bool | None:
    """`http_route_presence` as whether an event has a route (None: either).
    With `routes` given, present says nothing more (None, so that the filter
    and its fingerprint are those of the routes alone) and absent matches
    nothing: refused, as a pair of severity bounds no level passes is."""
    if presence and presence not in _PRESENCES:
        fail("http_route_presence", f"unknown enum value {presence}")
        return None
    has_route = _PRESENCES.get(presence)
    if has_route is False and routes:
        fail(
            "http_route_presence", "absent, with http_routes, matches nothing: set one or the other"
        )
    return None if routes else has_route


def _action_forms(
    values: list[str], name: str, fail: _Fail
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The exact actions, prefixes (each ending with ".", from "api_key.*") and
    suffixes (each starting with ".", from "*.delete") of `values`, each
    sorted once; a value of no such form fails, named `name[index]`."""
    actions, prefixes, suffixes = [], [], []
    for index, action in enumerate(values):
        if len(action) > MAX_ACTION:  # an action, or the prefix of one and `*`
            fail(
                f"{name}[{index}]",
                f"is {len(action)} characters long; an action is at most {MAX_ACTION}",
            )
        elif ACTION_PATTERN.fullmatch(action):
            actions.append(action)
        elif _ACTION_PREFIX.fullmatch(action):
            prefixes.append(action[:-1])
        elif _ACTION_SUFFIX.fullmatch(action):
            suffixes.append(action[1:])
        else:
            fail(
                f"{name}[{index}]",
                "must be an action like `api_key.create`, `api_key.*` or `*.delete`",
            )
    return tuple(sorted(set(actions))), tuple(sorted(set(prefixes))), tuple(sorted(set(suffixes)))


# The Unicode categories of the characters PostgreSQL's text-search parser makes
# words of: letters, decimal digits and letter numbers (Roman numerals). Not
# str.isalnum's: it takes other numbers too (fractions, superscripts, circled),
# of which the parser makes no word, so a text of them alone matched nothing.
_WORD_CATEGORIES: Final = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl"})


def _in_words(char: str) -> bool:
    """Whether PostgreSQL's text-search parser reads `char` as part of a word."""
    return unicodedata.category(char) in _WORD_CATEGORIES


# What PostgreSQL's text-search parser reads as markup, of which it makes no
# word: tags (`<b>`, `</b>`, `<br/>`, `<a href=x>`, `<?xml ...?>`, `<!-- ... -->`,
# `<!doctype ...>`) and entities (`&amp;`, `&#65;`, `&#x41;`), as its states
# take them (wparser_def.c; tests/integration/test_bad_input.py holds each
# form to PostgreSQL's own answer).
_MARKUP: Final = re.compile(
    r"<(?:/?[A-Za-z_:][A-Za-z0-9_:.\-]*(?:\s(?:'[^']*'|[^<>'])*)?/?"
    r"|\?[A-Za-z][^<>]*|!--.*?--|![dD][^<>]*)>"
    r"|&(?:[A-Za-z_][A-Za-z0-9_.\-]*|#[0-9]+|#[xX][0-9A-Fa-f]+);",
    re.DOTALL,
)


def _searched(text: str) -> str:
    """`text` as `websearch_to_tsquery` hands it to the parser, for finding
    whether it has a word: quotes pair in order (each `"` opens a phrase or
    closes the open one; an unclosed phrase runs to the end), and a phrase is
    parsed whole, so its markup is no word (`"<b>"`, `"&amp;"` match nothing);
    outside quotes the text is cut at `<`, `&` and `;` first, and `<b>` is `b`;
    a dash standing alone is no operator (`websearch_text`)."""
    parts = websearch_text(text).split('"')
    return " ".join(p if i % 2 == 0 else _MARKUP.sub(" ", p) for i, p in enumerate(parts))


def _time(value: tuple[int, int] | None, name: str, fail: _Fail) -> datetime | None:
    """A bound of the filter, the later microsecond if it lies between two
    (checked_bound)."""
    if value is None:
        return None
    try:
        return checked_bound(*value, field=name)
    except InvalidArgument:
        fail(name, "is not a valid time")
        return None


def _enum_names(
    values: list[int], names: dict[int, str], field_name: str, fail: _Fail
) -> tuple[str, ...]:
    found = []
    for index, value in enumerate(values):
        name = names.get(value)
        if name is None:
            fail(f"{field_name}[{index}]", f"unknown enum value {value}")
        else:
            found.append(name)
    return tuple(sorted(set(found)))


def ip_network(text: str) -> str | None:
    """The network an `ip` filter names, in CIDR notation with its host bits
    cleared (`203.0.113.9/24` is `203.0.113.0/24`, an address alone its own
    /32 or /128), or None if it names none. An IPv4 network mapped into IPv6
    (`::ffff:203.0.113.0/120`) is written as IPv4, and an IPv6 zone id
    (`fe80::1%eth0`) dropped, as records' addresses are compared
    (`network_address`)."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and network.prefixlen >= 96:
            return str(ipaddress.IPv4Network((mapped, network.prefixlen - 96)))
        return str(ipaddress.IPv6Network((int(network.network_address), network.prefixlen)))
    return str(network)


def page_size(requested: int, *, field: str = "page_size") -> int:
    """AIP-158: 0 means the default, larger than the maximum is lowered;
    negative is INVALID_ARGUMENT on `field`."""
    if requested < 0:
        raise InvalidArgument.field(field, "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class RecordMatcher:
    """Evaluates a filter on parsed records, as the SQL of Query does, for live
    streams that share one fetch among many subscribers. Full-text search
    (PostgreSQL's parser) is not reproduced: `exact` is False for a filter
    with `text`, and such records must be checked by the database, or, given
    `text` (the filter's query as PostgreSQL parsed it), by `text.matches` on
    the words PostgreSQL made of them (domain/text_search.py): for a read's
    record, those but its filter's unless `searches_reads`, as the SQL has it."""

    def __init__(self, event_filter: EventFilter, *, text: TextQuery | None = None) -> None:
        f = event_filter
        self.exact = f.text is None
        self.text = text if f.text is not None else None
        self.searches_reads = f.searches_read_filters()
        # No filter: every record matches, and a busy stream need not ask each.
        self.matches_all = f == EventFilter()
        self._after = format_timestamp(f.occurred_after) if f.occurred_after else None
        self._before = format_timestamp(f.occurred_before) if f.occurred_before else None
        self._actions = frozenset(f.actions)
        self._prefixes = f.action_prefixes
        self._suffixes = f.action_suffixes
        self._categories = frozenset(f.categories)
        self._min_severity = f.min_severity
        self._severities = frozenset(f.severities)
        self._outcomes = frozenset(f.outcomes)
        self._actor_types = frozenset(f.actor_types)
        self._countries = frozenset(f.any_country())
        self._resource_types = frozenset(f.any_resource_type())
        self._routes = frozenset(f.http_routes)
        self._roles = frozenset(f.actor_roles)
        self._network = None if f.ip is None else ipaddress.ip_network(f.ip)
        self._actor_email = None if f.actor is None else email_key(f.actor)
        self._filter = f

    def matches(self, record: dict[str, Any]) -> bool:
        f = self._filter
        occurred = record["occurred_at"]  # same fixed-width format: compares as text
        if self._after is not None and occurred < self._after:
            return False
        if self._before is not None and occurred >= self._before:
            return False
        action = record["action"]
        if (self._actions or self._prefixes or self._suffixes) and not (
            action in self._actions
            or action.startswith(self._prefixes)
            or action.endswith(self._suffixes)
        ):
            return False
        if f.excludes(action):
            return False
        if self._categories and record.get("category") not in self._categories:
            return False
        if self._min_severity and SEVERITY_RANKS[record["severity"]] < self._min_severity:
            return False
        if self._severities and SEVERITY_RANKS[record["severity"]] not in self._severities:
            return False
        if self._outcomes and record["outcome"] not in self._outcomes:
            return False
        if self._actor_types and record["actor"].get("type") not in self._actor_types:
            return False
        if f.actor is not None and not self._actor_matches(record["actor"]):
            return False
        if not f.actor_prefix_matches(record["actor"]["id"], record["actor"].get("email")):
            return False
        if f.actor_email_domain is not None and not f.email_at_domain(record["actor"].get("email")):
            return False
        resource = record.get("resource", {})
        if self._resource_types and resource.get("type") not in self._resource_types:
            return False
        if f.resource_id is not None and resource.get("id") != f.resource_id:
            return False
        context = record.get("context", {})
        if f.request_id is not None and context.get("request_id") != f.request_id:
            return False
        if f.recorded_by is not None and (
            record.get("recorded_by", {}).get("token_id") != f.recorded_by
        ):
            return False
        if self._countries and context.get("country") not in self._countries:
            return False
        if not f.agent_matches(context.get("user_agent")):
            return False
        if not f.status_matches(context.get("http_status_code")):
            return False
        if self._routes and context.get("http_route") not in self._routes:
            return False
        if not f.route_presence_matches(context.get("http_route")):
            return False
        if not f.duration_matches(context.get("duration_ms")):
            return False
        if not f.changes_match(record.get("changes")):
            return False
        if not f.details_match(record.get("details")):
            return False
        if self._roles and self._roles.isdisjoint(record["actor"].get("roles", ())):
            return False
        if f.credential_id is not None and (
            record["actor"].get("credential", {}).get("id") != f.credential_id
        ):
            return False
        if f.credential_kind is not None and (
            record["actor"].get("credential", {}).get("kind") != f.credential_kind
        ):
            return False
        if self._network is not None:
            address = network_address(context.get("ip", ""))
            if address is None or address not in self._network:
                return False
        return f.trace_id is None or context.get("trace_id") == f.trace_id

    def _actor_matches(self, actor: dict[str, Any]) -> bool:
        """The id as given (the calling system's, maybe case-sensitive), or the
        email in any case, as the column holds it lowered (ADR 0067). A record
        of before then is matched in any case here, and by Query only as
        `EventFilter.actor_emails` says: live streams see new events."""
        email = actor.get("email")
        return actor["id"] == self._filter.actor or (
            email is not None and email_key(email) == self._actor_email
        )
