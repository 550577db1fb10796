"""Sinks: what a tenant forwards, where, and in which form. Pure validation of
a sink's definition; the outbound address policy (forward/egress.py) and the
delivery itself (forward/) live elsewhere.

A destination is a plain dict of the kind's settings, stored as JSON. Its
secret fields are write-only: `redacted_destination` is what answers show."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal
from urllib.parse import unquote, unquote_plus, urlsplit

from .email_sinks import smtp_url, validate_email
from .errors import FieldViolation, InvalidArgument
from .etags import etag_of, instant
from .event import CONTROL_CHARACTERS
from .names import name_problem

Kind = Literal[
    "webhook", "splunk_hec", "datadog_logs", "elasticsearch", "chat", "pagerduty", "email"
]
Format = Literal["sealtrail_json", "ocsf"]
KINDS: Final[tuple[Kind, ...]] = (
    "webhook",
    "splunk_hec",
    "datadog_logs",
    "elasticsearch",
    "chat",
    "pagerduty",
    "email",
)

MAX_SINKS_PER_TENANT: Final = 50
MAX_NAME: Final = 128
MAX_URL: Final = 2048
MAX_HOST: Final = 253  # DNS's longest name
MAX_INDEX_BYTES: Final = 255  # Elasticsearch's longest index name
MAX_WEBHOOK_SECRETS: Final = 2  # the current one and, while rotating, the next
WEBHOOK_SECRET_PREFIX: Final = "whsec_"
DATADOG_DEFAULT_URL: Final = "https://http-intake.logs.datadoghq.com"
PAGERDUTY_DEFAULT_URL: Final = "https://events.pagerduty.com"
# The URL a kind sends to when its `url` is left empty.
DEFAULT_URLS: Final[dict[str, str]] = {
    "datadog_logs": DATADOG_DEFAULT_URL,
    "pagerduty": PAGERDUTY_DEFAULT_URL,
}
# PagerDuty's integration keys: 32 characters.
PAGERDUTY_KEY_LENGTH: Final = 32

# Each kind's secret fields: stored, used, never shown.
SECRET_FIELDS: Final[dict[Kind, tuple[str, ...]]] = {
    "webhook": ("secrets",),
    "splunk_hec": ("token",),
    "datadog_logs": ("api_key",),
    "elasticsearch": ("api_key",),
    # A chat webhook's URL is its credential: whoever holds it posts to the
    # channel (ADR 0062).
    "chat": ("url",),
    # An Events API integration key: whoever holds it opens alerts on the
    # service, paging its on-call (ADR 0131).
    "pagerduty": ("routing_key",),
    # An SMTP login's password: whoever holds it sends mail as the account
    # (ADR 0133).
    "email": ("password",),
}
# Elasticsearch index names: lowercase, no spaces or \/*?"<>|,#:, not starting
# with -_+, not . or .., at most 255 bytes (MAX_INDEX_BYTES, checked apart).
_INDEX = re.compile(r"^(?![-_+.])[^A-Z\s\\/*?\"<>|,#:]{1,255}$")
_PLAIN_TEXT = re.compile(r"^[\x21-\x7e]{1,512}$")  # tokens and keys: visible ASCII


@dataclass(frozen=True, slots=True)
class SinkDefinition:
    """A sink as its admin defined it (validated)."""

    name: str
    kind: Kind
    format: Format
    filter: dict[str, Any]  # the EventFilter message as JSON (its API form)
    destination: dict[str, Any]
    paused: bool


def changes_delivery(before: SinkDefinition, after: SinkDefinition) -> bool:
    """Whether changing `before` into `after` changes what is sent, where or
    how (its filter, format, destination, secrets or pause): all but a rename.
    Such a change applies from the sink's cursor at the change, which its
    `sink.updated` event records (`from_seq`)."""
    return replace(before, name=after.name) != after


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (validated beforehand)."""
    return base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)


def destination_url(kind: str, destination: dict[str, Any]) -> str:
    """Where a sink sends, as given: its `url` (empty for a kind's default),
    an email sink's `smtp://host:port` (ADR 0133). A move of it is a move of
    the sink (its secrets asked again, a weakening)."""
    if kind == "email":
        return smtp_url(destination)
    return str(destination.get("url", ""))


def hint(secret: str) -> str:
    """What an answer shows of a secret: its last four characters."""
    return secret[-4:] if len(secret) > 8 else ""


def redacted_destination(kind: Kind, destination: dict[str, Any]) -> dict[str, Any]:
    """The destination without its secrets, each replaced by `<field>_hint(s)`:
    a secret URL (a chat webhook's) as `shown_url` shows it, which tells a
    reader which service and channel without the part that lets one post.
    Nothing of a kind this release does not know (a newer release's): which
    of its fields are secrets is unknown."""
    if kind not in SECRET_FIELDS:
        return {}
    shown = dict(destination)
    for name in SECRET_FIELDS[kind]:
        value = shown.pop(name, None)
        if isinstance(value, list):
            shown["secret_hints"] = [hint(item) for item in value]
        elif isinstance(value, str) and name == "url":
            shown["url_hint"] = shown_url(value) if value else ""
        elif isinstance(value, str):
            shown[f"{name}_hint"] = hint(value)
    return shown


def described(definition: SinkDefinition) -> dict[str, Any]:
    """A sink as its change events and its etag show it: secrets as hints."""
    return {
        "name": definition.name,
        "kind": definition.kind,
        "format": definition.format,
        "filter": definition.filter,
        "destination": redacted_destination(definition.kind, definition.destination),
        "paused": definition.paused,
    }


def recorded(definition: SinkDefinition, key: bytes) -> dict[str, Any]:
    """A sink as its change events record it, in the log for good: `described`,
    with its URL shown only so far as it cannot hold a credential (scheme, host,
    port, and path segments too short to be a token; a query as `?…`), and
    instead of the whole URL and of each secret a fingerprint under the
    tenant's `key`, which tells a change (a rotated token, a moved URL). A
    webhook URL often is the credential (Slack's, a `?token=`), and nothing
    can be redacted from the log once it is hashed. Unkeyed, a fingerprint of
    a URL whose only secret is a short `?token=` gave it away to a search
    offline; a secret's last characters (what answers show) would stay in the
    log for good."""
    destination = dict(definition.destination)
    url = destination.get("url")
    for name in SECRET_FIELDS[definition.kind]:
        value = destination.pop(name, None)
        if isinstance(value, list):
            destination["secret_fingerprints"] = [fingerprint(key, item) for item in value]
        elif isinstance(value, str):
            destination[f"{name}_fingerprint"] = fingerprint(key, value)
    if isinstance(url, str) and url:
        destination["url"] = shown_url(url)
        destination["url_fingerprint"] = fingerprint(key, url)
    return {**described(definition), "destination": destination}


def fingerprint(key: bytes, value: str) -> str:
    """64 bits of HMAC-SHA256 of `value` under `key`: tells two values apart,
    and says nothing of either to whoever does not hold the key."""
    return hmac.new(key, b"sealtrail sink\x00" + value.encode(), hashlib.sha256).hexdigest()[:16]


_SHOWN_SEGMENT: Final = 16  # a path segment this long or longer may be a token


def shown_url(url: str) -> str:
    """`url` without what could be a credential in it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    path = "/".join(
        segment if len(segment) < _SHOWN_SEGMENT else "…" for segment in parts.path.split("/")
    )
    rest = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{path}{rest}"


def url_secrets(url: str) -> list[str]:
    """The parts of `url` that `shown_url` leaves out (long path segments, the
    query and each of its values), longest first: what a destination's answer
    that repeats the URL (a redirect's Location, an error page echoing the
    path) must not carry into the sink's errors and logs."""
    parts = urlsplit(url)
    found = {segment for segment in parts.path.split("/") if len(segment) >= _SHOWN_SEGMENT}
    if parts.query:
        found.add(parts.query)
        found.update(value for _, _, value in (p.partition("=") for p in parts.query.split("&")))
    found.update(part for part in (parts.username, parts.password) if part)
    # As a page may echo them too: decoded (`a%2Bb` as `a+b`; helper-182).
    found |= {unquote_plus(secret) for secret in found} | {unquote(secret) for secret in found}
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def sink_etag(
    definition: SinkDefinition, updated_at: datetime, *, shown: dict[str, Any] | None = None
) -> str:
    """The sink's etag (AIP-154, ADR 0035): its definition as described and
    when it changed. Every change moves that time, a secret's too; a secret
    itself is never part of it, so the etag tells nothing of one. `shown`:
    the destination as its reader is shown it, if less than `described`
    (a managed sink's, ADR 0070): unkeyed, the etag of what a reader does not
    see, a hint's four characters, gives it away to a search offline."""
    fields = described(definition)
    if shown is not None:
        fields["destination"] = shown
    return etag_of({**fields, "update_time": instant(updated_at)})


def with_secrets(
    kind: Kind, destination: dict[str, Any], change: Callable[[str, str], str]
) -> dict[str, Any]:
    """The destination with each secret replaced by `change(field, secret)`."""
    changed = dict(destination)
    for name in SECRET_FIELDS[kind]:
        value = changed.get(name)
        if isinstance(value, list):
            changed[name] = [change(name, item) for item in value]
        elif isinstance(value, str) and value:
            changed[name] = change(name, value)
    return changed


def keep_secrets(kind: Kind, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """An update's destination, with each secret it left empty kept from `old`."""
    merged = dict(new)
    for name in SECRET_FIELDS[kind]:
        if not merged.get(name) and old.get(name):
            merged[name] = old[name]
    return merged


def _credential_error(value: str, what: str) -> str | None:
    """Why `value` cannot be `what`, a token or key sent as given, or None."""
    if not value:
        return f"is required: {what} (visible ASCII)"
    if not _PLAIN_TEXT.match(value):
        # A byte-order mark or a newline kept from a file, say.
        return f"must be {what}: 1 to 512 visible ASCII characters, no spaces"
    return None


def validate_sink_settings(
    *,
    name: str,
    format: str,
    kind: str | None = None,
    path: str = "sink",
    kept_name: str | None = None,
) -> list[FieldViolation]:
    """The violations of a sink's name and format (for its `kind`, if known).
    `kept_name`: the sink's stored name, not refused again (`name_problem`)."""
    violations = []
    if problem := name_problem(name, limit=MAX_NAME, required=True, kept=kept_name):
        violations.append(FieldViolation(f"{path}.name", problem))
    if format not in ("sealtrail_json", "ocsf"):
        violations.append(FieldViolation(f"{path}.format", "unknown payload format"))
    elif kind == "chat" and format != "sealtrail_json":
        # A line of text is posted, not the event: OCSF would be a promise
        # the chat's messages do not keep.
        violations.append(
            FieldViolation(
                f"{path}.format", "a chat sink posts a line of text per event: leave format unset"
            )
        )
    return violations


def validate_sink(
    *,
    name: str,
    kind: str | None,
    format: str,
    destination: dict[str, Any],
    path: str = "sink",
    kept_name: str | None = None,
) -> list[FieldViolation]:
    """Every violation of a sink's definition (empty when it is valid)."""
    violations = validate_sink_settings(
        name=name, format=format, kind=kind, path=path, kept_name=kept_name
    )

    def fail(field: str, description: str) -> None:
        violations.append(FieldViolation(f"{path}.{field}", description))

    if kind is None:
        fail("destination", "one destination is required")
        return violations
    prefix = f"{kind}."
    if kind == "email":
        validate_email(destination, lambda field, said: fail(prefix + field, said))
        return violations
    url = destination.get("url", "") or DEFAULT_URLS.get(kind, "")
    url_error = _url_error(url)
    if url_error is None and kind not in ("webhook", "chat") and urlsplit(url).query:
        # The API's path is added to the URL: after a query, it was sent as
        # part of it, to the base path (helper-126).
        url_error = "must be the base URL, without a query (the API's path is added to it)"
    if url_error is not None:
        fail(prefix + "url", url_error)
    if kind == "webhook":
        secrets = destination.get("secrets", [])
        if not secrets or len(secrets) > MAX_WEBHOOK_SECRETS:
            fail(prefix + "secrets", f"one or {MAX_WEBHOOK_SECRETS} secrets are required")
        for index, secret in enumerate(secrets):
            error = _webhook_secret_error(secret)
            if error is not None:
                fail(f"{prefix}secrets[{index}]", error)
    elif kind == "splunk_hec":
        if error := _credential_error(destination.get("token", ""), "the HEC token"):
            fail(prefix + "token", error)
    elif kind == "datadog_logs":
        if error := _credential_error(destination.get("api_key", ""), "a Datadog API key"):
            fail(prefix + "api_key", error)
    elif kind == "elasticsearch":
        if error := _index_error(destination.get("index", "")):
            fail(prefix + "index", error)
        api_key = destination.get("api_key", "")
        if api_key and not _PLAIN_TEXT.match(api_key):
            fail(prefix + "api_key", "must be visible ASCII (base64 of id:secret)")
    elif kind == "pagerduty":
        routing_key = destination.get("routing_key", "")
        what = "the integration key of an Events API v2 integration"
        if error := _credential_error(routing_key, what):
            fail(prefix + "routing_key", error)
        elif len(routing_key) != PAGERDUTY_KEY_LENGTH:
            # PagerDuty refuses any other with a 400, as it would each event.
            fail(prefix + "routing_key", f"must be {what}: {PAGERDUTY_KEY_LENGTH} characters")
    for field_name in ("index", "source", "sourcetype", "service", "tags"):
        value = destination.get(field_name, "")
        if len(value) > 256:
            fail(prefix + field_name, "must be at most 256 characters")
        elif CONTROL_CHARACTERS.search(value):
            # A NUL made the database refuse the sink's change event, naming
            # no field; any other failed every delivery (helper-148).
            fail(prefix + field_name, "must not hold control characters")
    return violations


def check_sink(**definition: Any) -> None:
    """validate_sink, raising InvalidArgument with every violation."""
    violations = validate_sink(**definition)
    if violations:
        raise InvalidArgument(violations)


def _url_error(url: str) -> str | None:
    if not url:
        return "is required"
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    if not (url.isascii() and url.isprintable()) or " " in url:
        # What is sent is what was checked: no client encodes it on the way.
        return "must be ASCII without spaces (an international host in its xn-- form)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError as error:
        return f"is not a valid URL ({error})"
    if parts.scheme not in ("https", "http"):
        return "must be an https URL"
    if not parts.hostname:
        return "must name a host"
    try:
        parts.hostname.encode("idna")  # each label 1 to 63 characters
    except UnicodeError:
        return "must name a host whose labels are 1 to 63 characters"
    # What no lookup or connection takes, refused here rather than at every
    # delivery (helper-148).
    if len(parts.hostname.rstrip(".")) > MAX_HOST:
        return f"must name a host of at most {MAX_HOST} characters"
    if parts.port == 0:
        return "must not name port 0"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (use the destination's key or token)"
    if parts.fragment:
        return "must not have a fragment"
    return None


def _index_error(index: str) -> str | None:
    """Why `index` cannot be an Elasticsearch index name, or None (a control
    character in it is said as in every setting)."""
    if CONTROL_CHARACTERS.search(index):
        return None
    if len(index.encode()) > MAX_INDEX_BYTES:
        # Elasticsearch counts bytes: the regex's 255 characters passed 400.
        # Before the form: one too long was said to be no valid name.
        return f"must be at most {MAX_INDEX_BYTES} bytes in UTF-8"
    if not _INDEX.match(index) or index in (".", ".."):
        return 'must be a valid index name (lowercase, no spaces or /\\*?"<>|,#:)'
    return None


def _webhook_secret_error(secret: str) -> str | None:
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return f"must start with {WEBHOOK_SECRET_PREFIX}"
    try:
        key = webhook_key(secret)
    except (binascii.Error, ValueError):
        return f"must be {WEBHOOK_SECRET_PREFIX} followed by base64"
    if not 24 <= len(key) <= 64:
        return "must encode 24 to 64 random bytes"
    return None
