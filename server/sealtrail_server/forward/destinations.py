"""What each kind of destination is sent and how its answers are read.

`requests()` turns a run of events (oldest first) into the HTTP requests of a
sink's kind, within that kind's limits; `verdict()` reads one answer:
delivered, retry later (timeouts, 408, 429, 5xx, redirects, and a refusal of
the sink's credentials, URL or settings: 401, 403, 404, 405, 407, 410, a HEC's
400 naming its index, a PagerDuty 400 naming its routing key; a 403 of one
event only until an event after it is taken, `forbidden_alone`), split (any
other 4xx, a 403, or a bulk answer too long to keep, for a request of several
events: they go again in smaller ones, to find those refused) or park in the
dead-letter list (any other 4xx of a lone event, and per item for
Elasticsearch's bulk API)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal
from urllib.parse import quote, quote_plus, urlsplit

from sealtrail._words import counted, detailed

from ..domain.chat_text import MAX_TEXT
from ..domain.chat_text import line as chat_line
from ..domain.email_sinks import smtp_url
from ..domain.ocsf import message as ocsf_message
from ..domain.ocsf import to_ocsf
from ..domain.sinks import (
    DATADOG_DEFAULT_URL,
    PAGERDUTY_DEFAULT_URL,
    SECRET_FIELDS,
    Format,
    Kind,
    shown_url,
    url_secrets,
    webhook_key,
)
from .mail import message as mail_message

# Also `error` and `status`: filter_path applies to an error answer (a 400 or
# 401 of the whole request) too, which would otherwise arrive as `{}`.
_BULK_ANSWER_FIELDS: Final = (
    "errors,items.*.status,items.*.error.type,items.*.error.reason,error,status"
)
# What is kept of a destination's answer: enough for any error, and for a bulk
# answer an item per event, each with its error (one longer, of long error
# reasons, splits its batch).
ANSWER_BYTES: Final[dict[Kind, int]] = {
    "webhook": 64 * 1024,
    "splunk_hec": 64 * 1024,
    "datadog_logs": 64 * 1024,
    "elasticsearch": 4 * 1024 * 1024,
    "chat": 64 * 1024,
    "pagerduty": 64 * 1024,
    "email": 1024,  # an SMTP reply's first line (forward/mail.py)
}
_CHAT_FRAMING: Final = len('{"text":""}')
# Per request: (events, bytes of body, the kind's framing included). Datadog's
# intake: 1,000 entries and 5 MB; Splunk's HEC refuses bodies over its
# max_content_length, 1,000,000 bytes on older releases (413); Elasticsearch's
# bulk API works best at a few MB.
LIMITS: Final[dict[Kind, tuple[int, int]]] = {
    "webhook": (500, 4 * 1024 * 1024),
    "splunk_hec": (500, 1_000_000),
    "datadog_logs": (1000, 5 * 1000 * 1000),
    "elasticsearch": (1000, 8 * 1024 * 1024),
    # A chat message of at most MAX_TEXT characters: each line's bytes in the
    # body, escapes included, are at least its characters, and each line
    # break is counted once (ADR 0062).
    "chat": (100, MAX_TEXT + _CHAT_FRAMING),
    # An alert per event (ADR 0131), within the Events API's 512 KB; a record
    # is at most 64 KiB, its details escaped at most six times as long only
    # for control characters, which the record holds escaped already.
    "pagerduty": (1, 512 * 1000),
    # A message per event (ADR 0133): a record of at most 64 KiB, indented
    # and quoted-printable, stays well within a server's usual 10 MB.
    "email": (1, 1_000_000),
}
# Bytes of stored records read for each byte a request may carry: 1 where the
# records are sent; a chat line says of its event a few times less than the
# record holds, so a message is filled from one read.
READ_PER_BYTE: Final[dict[Kind, int]] = {
    "webhook": 1,
    "splunk_hec": 1,
    "datadog_logs": 1,
    "elasticsearch": 1,
    "chat": 8,
    "pagerduty": 1,
    "email": 1,
}
# Datadog takes a log dated up to 18 hours in the past and drops an older one
# at intake ("Log events can be submitted up to 18 hours in the past"): an
# entry is dated by its event's time within 17, an hour's allowance for
# clocks that disagree and a request that waits.
DATADOG_DATED_WITHIN: Final = timedelta(hours=17)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)
_RETRIED_4XX: Final = frozenset({408, 429})
# Refusals of the sink's requests rather than of their events: its credentials
# (401, 403, 407) or its URL (404, 405, 410). Every request meets them, so
# parking them turned the whole backlog into dead letters, a batch a request
# (a token rotated at the destination, a path mistyped): they are failures,
# retried with backoff until the sink or the destination is put right (ADR 0051).
_REFUSED_REQUEST: Final[dict[int, str]] = {
    401: "credentials",
    403: "credentials",
    407: "credentials",
    404: "URL",
    405: "URL",
    410: "URL",
}
# Splunk HEC's 400s that refuse the sink's settings, not its events (the
# answer's `code`): an index its token may not write to (7), a token that
# wants a data channel, for indexer acknowledgment (10, 11).
_HEC_REFUSED_SETTINGS: Final = frozenset({7, 10, 11})
# Splunk HEC's 403s that name its token: disabled (1), or not one it knows (4).
_HEC_REFUSED_TOKEN: Final = frozenset({1, 4})
# Elasticsearch bulk items refused for the sink's index: its permissions, or
# no such index with auto-creation off.
_BULK_REFUSED_INDEX: Final = frozenset({401, 403, 404})
_WAITS = (
    ": nothing is parked, and the batch is retried until the sink or the destination is put right"
)
TOO_LARGE: Final = 413
# A refusal of the sink's credentials, or a web application firewall's of the
# events: of one event alone, the events after it tell which (ADR 0054).
FORBIDDEN: Final = 403
MAX_ERROR_TEXT: Final = 1024
# Characters of a redirect's target told (logged at each retry, and stored).
_MAX_LOCATION: Final = 256
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class PendingEvent:
    seq: int
    record: str  # the stored canonical record
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One HTTP request and the events it carries."""

    url: str
    headers: list[tuple[str, str]]
    body: bytes
    seqs: tuple[int, ...]
    event_ids: tuple[str, ...]
    # The sink's own secrets (its token, key, signing secrets): cut, as the
    # URL's are, from what its answers are kept as.
    secrets: tuple[str, ...] = ()
    # An email sink's SMTP username, which a refused login names.
    login: str = ""


@dataclass(frozen=True, slots=True)
class ItemRefusal:
    seq: int
    status: int
    error: str


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Literal["delivered", "retry", "park", "split"]
    status: int = 0
    error: str = ""
    retry_after: float | None = None
    # Delivered but for these (Elasticsearch items refused for good).
    refused: tuple[ItemRefusal, ...] = field(default=())
    # Retried until someone puts the sink or the destination right (ADR 0051).
    needs_fixing: bool = False


@dataclass(frozen=True, slots=True)
class Sender:
    """Who the requests are from: the sink and its settings."""

    tenant_id: str
    sink_id: str
    kind: Kind
    format: Format
    destination: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Batch:
    """The events of one request: as stored, parsed, and each as the text it
    takes in the body (the kind's wrapper around the event's item)."""

    events: list[PendingEvent]
    parsed: list[dict[str, Any]]
    pieces: list[str]
    now: datetime


def _item(event: PendingEvent, data: dict[str, Any], format: Format) -> str:
    """One event's JSON text in the sink's format. Sealtrail JSON is the stored
    record verbatim with `leaf_hash` added, so a receiver can check it: drop
    leaf_hash, canonicalise (RFC 8785), SHA-256(0x00 || bytes) == leaf_hash (and
    from an Elasticsearch document its `@timestamp` and `log`, which its piece adds)."""
    if format == "ocsf":
        return json.dumps(to_ocsf(data, event.leaf_hash), separators=(",", ":"))
    return f'{event.record[:-1]},"leaf_hash":"{event.leaf_hash.hex()}"}}'


def requests(
    sender: Sender,
    events: list[PendingEvent],
    *,
    now: datetime,
    max_events: int | None = None,
    max_bytes: int | None = None,
) -> list[Outgoing]:
    """The requests that carry `events`, in order, each within the kind's
    limits and `max_events` and `max_bytes` where given (smaller: what the
    destination was found to take). An event too large alone goes alone."""
    if not events:
        return []
    kind_events, kind_bytes = LIMITS[sender.kind]
    most_events = min(kind_events, max_events or kind_events)
    most_bytes = min(kind_bytes, max_bytes or kind_bytes)
    parsed = [json.loads(event.record) for event in events]
    piece = _PIECES[sender.kind](sender, now)
    pieces = [
        piece(data, _item(event, data, sender.format))
        for event, data in zip(events, parsed, strict=True)
    ]
    # Each request's size counted as it will be sent: its framing (counted
    # with the largest seqs, for the webhook's envelope that names them), each
    # piece's UTF-8 bytes, one byte between two pieces. A fixed allowance per
    # event fell short: Splunk's source, sourcetype and index, Datadog's
    # service and tags, may each be 256 characters, escaped to 6 bytes each.
    framing = _framing(sender, events[-1].seq, now)
    chunks: list[list[int]] = []
    size = 0
    for index, text in enumerate(pieces):
        grows = _size(text)
        if chunks and len(chunks[-1]) < most_events and size + 1 + grows <= most_bytes:
            chunks[-1].append(index)
            size += 1 + grows
        else:
            chunks.append([index])
            size = framing + grows
    build = _BUILDERS[sender.kind]
    return [
        build(
            sender,
            _Batch(
                [events[i] for i in chunk],
                [parsed[i] for i in chunk],
                [pieces[i] for i in chunk],
                now,
            ),
        )
        for chunk in chunks
    ]


def _size(text: str) -> int:
    """Its bytes in UTF-8."""
    return len(text) if text.isascii() else len(text.encode())  # no copy for ASCII


def _outgoing(
    sender: Sender, url: str, headers: list[tuple[str, str]], body: str, batch: _Batch
) -> Outgoing:
    return Outgoing(
        url=url,
        headers=headers,
        body=body.encode(),
        seqs=tuple(event.seq for event in batch.events),
        event_ids=tuple(data["id"] for data in batch.parsed),
        secrets=_secrets_of(sender),
        login=str(sender.destination.get("username", "")) if sender.kind == "email" else "",
    )


def _secrets_of(sender: Sender) -> tuple[str, ...]:
    """The sink's secret values, but a URL (a chat sink's): `url_secrets`
    says which parts of a URL may hold a credential."""
    found: list[str] = []
    for name in SECRET_FIELDS[sender.kind]:
        value = sender.destination.get(name)
        if name != "url":
            found += [item for item in (value if isinstance(value, list) else [value]) if item]
    return tuple(found)


# Each kind's piece of a body for one event: given the sender and when the
# request is made, a function of the event (parsed) and its item, with what
# every event shares made once.
Piece = Callable[[dict[str, Any], str], str]


def _webhook_piece(sender: Sender, now: datetime) -> Piece:
    return lambda data, item: item


def _webhook_body(sender: Sender, first: int, last: int, now: datetime, events: str) -> str:
    stamp = json.dumps(now.isoformat().replace("+00:00", "Z"))
    tenant, sink = json.dumps(sender.tenant_id), json.dumps(sender.sink_id)
    # Written around the items' text, which must not be parsed and re-serialised.
    return (
        f'{{"type":"sealtrail.events","timestamp":{stamp},"data":{{"tenant_id":{tenant},'
        f'"sink_id":{sink},"first_seq":{first},"last_seq":{last},"events":[{events}]}}}}'
    )


def _framing(sender: Sender, last_seq: int, now: datetime) -> int:
    """The bytes of a request's body around its pieces, at most."""
    if sender.kind == "webhook":
        return len(_webhook_body(sender, last_seq, last_seq, now, ""))  # ASCII: json.dumps
    return {
        "splunk_hec": 0,
        "datadog_logs": 2,
        "elasticsearch": 1,
        "chat": _CHAT_FRAMING,
        "pagerduty": 0,  # its piece is the whole body
        "email": 0,  # its piece is the whole message
    }[sender.kind]


def _webhook(sender: Sender, batch: _Batch) -> Outgoing:
    first, last = batch.events[0].seq, batch.events[-1].seq
    body = _webhook_body(sender, first, last, batch.now, ",".join(batch.pieces))
    # The same id on every attempt of these events: receivers deduplicate by
    # it. The digest of the seqs tells apart two sets of events between the
    # same first and last (a filter changed, a replay through it), and that of
    # their leaf hashes other events at the same seqs: a database restored
    # from an older backup gives its next events the seqs of those lost with
    # it, and the sink sends them from its restored cursor, under the lost
    # events' id; a receiver dropped them as the message it already had.
    listed = ",".join(f"{event.seq}:{event.leaf_hash.hex()}" for event in batch.events).encode()
    message_id = f"msg_{sender.sink_id}_{first}_{last}_{hashlib.sha256(listed).hexdigest()[:12]}"
    timestamp = str(int(batch.now.timestamp()))
    signed = f"{message_id}.{timestamp}.".encode() + body.encode()
    signatures = " ".join(
        "v1," + base64.b64encode(_hmac(webhook_key(secret), signed)).decode()
        for secret in sender.destination["secrets"]
    )
    headers = [
        ("Content-Type", "application/json"),
        ("webhook-id", message_id),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", signatures),
    ]
    return _outgoing(sender, sender.destination["url"], headers, body, batch)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _splunk_piece(sender: Sender, now: datetime) -> Piece:
    settings = sender.destination
    default_type = "ocsf" if sender.format == "ocsf" else "sealtrail:audit"
    envelope: dict[str, Any] = {
        "host": "sealtrail",
        "source": settings.get("source") or "sealtrail",
        "sourcetype": settings.get("sourcetype") or default_type,
    }
    if settings.get("index"):
        envelope["index"] = settings["index"]

    def piece(data: dict[str, Any], item: str) -> str:
        seconds = datetime.fromisoformat(data["occurred_at"]).timestamp()
        head = json.dumps({"time": round(seconds, 6), **envelope}, separators=(",", ":"))
        return f'{head[:-1]},"event":{item}}}'

    return piece


def _splunk_hec(sender: Sender, batch: _Batch) -> Outgoing:
    settings = sender.destination
    url = settings["url"].rstrip("/") + "/services/collector/event"
    headers = [
        ("Content-Type", "application/json"),
        ("Authorization", f"Splunk {settings['token']}"),
    ]
    return _outgoing(sender, url, headers, "\n".join(batch.pieces), batch)


def _datadog_piece(sender: Sender, now: datetime) -> Piece:
    settings = sender.destination
    oldest = now - DATADOG_DATED_WITHIN
    common: dict[str, Any] = {
        "ddsource": "sealtrail",
        "hostname": "sealtrail",
        "service": settings.get("service") or "sealtrail",
    }
    if settings.get("tags"):
        common["ddtags"] = settings["tags"]
    ocsf = sender.format == "ocsf"

    def piece(data: dict[str, Any], item: str) -> str:
        # The event as the entry's message: Datadog parses a JSON message into
        # attributes, and takes the first of `status`, `severity`, `level` it
        # finds for the log's status. An OCSF event's own `status` (its
        # outcome: a Failure read as an emergency; a finding's New as a
        # notice) came first: it goes under `ocsf`, where Datadog's own OCSF
        # model keeps OCSF's attributes, with its message beside it. Each entry's
        # `status` is the event's severity (an alert's: its rule's), in the
        # words of Datadog's status remapper: info, warning, error, critical.
        if ocsf:
            item = f'{{"message":{json.dumps(ocsf_message(data))},"ocsf":{item}}}'
        entry = {**common, "status": data["severity"], "message": item}
        # When the event occurred, as the first of the attributes Datadog
        # dates a log by (`timestamp`) in a form it reads (epoch
        # milliseconds): without it Datadog dated each entry when it took it,
        # a backlog (an outage, a paused sink, a replay) at the time it came.
        # Not for an event older than Datadog's window, which Datadog drops
        # at intake (answering 202 all the same): dated on arrival, it is
        # kept, its `occurred_at` in its attributes.
        occurred = datetime.fromisoformat(data["occurred_at"])
        if occurred >= oldest:
            entry["timestamp"] = (occurred - _EPOCH) // _MILLISECOND
        return json.dumps(entry, separators=(",", ":"))

    return piece


def _datadog_logs(sender: Sender, batch: _Batch) -> Outgoing:
    settings = sender.destination
    url = (settings.get("url") or DATADOG_DEFAULT_URL).rstrip("/") + "/api/v2/logs"
    headers = [("Content-Type", "application/json"), ("DD-API-KEY", settings["api_key"])]
    return _outgoing(sender, url, headers, "[" + ",".join(batch.pieces) + "]", batch)


def _elasticsearch_piece(sender: Sender, now: datetime) -> Piece:
    index = sender.destination["index"]

    def piece(data: dict[str, Any], item: str) -> str:
        action = {"create": {"_index": index, "_id": data["id"]}}
        # `@timestamp`, the event's occurred_at (RFC 3339 in UTC, which the
        # default date format, strict_date_optional_time, reads), before the
        # item's own fields: a data stream (`logs-*-*`) refuses a document
        # without it, and Kibana dates an index's documents by it. Written
        # around the item's text, which must not be parsed and re-serialised.
        # And ECS's `log.level`, the event's severity (an alert's: its
        # rule's): Kibana shows a document's level by it, its log views and
        # rules filter on it.
        stamp = json.dumps(data["occurred_at"])
        head = f'{{"@timestamp":{stamp},"log":{{"level":{json.dumps(data["severity"])}}},'
        return f"{json.dumps(action, separators=(',', ':'))}\n{head}{item[1:]}"

    return piece


def _elasticsearch(sender: Sender, batch: _Batch) -> Outgoing:
    settings = sender.destination
    headers = [("Content-Type", "application/x-ndjson")]
    if settings.get("api_key"):
        headers.append(("Authorization", f"ApiKey {settings['api_key']}"))
    # Only what the verdict reads: Elasticsearch answers every item, about
    # 200 bytes each even when none failed.
    url = settings["url"].rstrip("/") + "/_bulk?filter_path=" + _BULK_ANSWER_FIELDS
    return _outgoing(sender, url, headers, "\n".join(batch.pieces) + "\n", batch)


def _chat_piece(sender: Sender, now: datetime) -> Piece:
    # The line as JSON string content: its quotes dropped, what is between
    # them joined into one string with `\n` between lines.
    return lambda data, item: json.dumps(chat_line(data), ensure_ascii=False)[1:-1]


def _chat(sender: Sender, batch: _Batch) -> Outgoing:
    """A chat message: `{"text": ...}`, the shape Slack's incoming webhooks
    take, and Mattermost's, Rocket.Chat's, Google Chat's and Discord's
    `/slack` endpoint. Nothing signs it: its URL is its credential."""
    body = '{"text":"' + "\\n".join(batch.pieces) + '"}'
    headers = [("Content-Type", "application/json; charset=utf-8")]
    return _outgoing(sender, sender.destination["url"], headers, body, batch)


# PagerDuty's longest summary, in characters.
PAGERDUTY_SUMMARY: Final = 1024


def _pagerduty_piece(sender: Sender, now: datetime) -> Piece:
    """The whole body of one event's request: a `trigger` whose `dedup_key`
    is the event's (ADR 0131): a request sent again, after a timeout, a 429
    or a 5xx, or by a replay, adds to the alert it opened, never a second
    page. The routing key is in the body, as the Events API takes it."""
    settings = sender.destination
    common = {
        "routing_key": settings["routing_key"],
        "event_action": "trigger",
    }
    source = settings.get("source") or "sealtrail"

    def piece(data: dict[str, Any], item: str) -> str:
        summary = chat_line(data, markup=False)
        if len(summary) > PAGERDUTY_SUMMARY:
            summary = summary[: PAGERDUTY_SUMMARY - 1] + "…"
        head = {
            **common,
            "dedup_key": f"sealtrail:{data['tenant_id']}:{data['id']}",
            "payload": {
                "summary": summary,
                "source": source,
                "severity": data["severity"],  # info, warning, error or critical: PagerDuty's
                "timestamp": data["occurred_at"],
                "group": data["tenant_id"],
                "class": data["action"],
            },
        }
        # The event as the sink's format writes it, as custom_details:
        # written around the item's text, which must not be parsed and
        # re-serialised.
        text = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
        return f'{text[:-2]},"custom_details":{item}}}}}'

    return piece


def _pagerduty(sender: Sender, batch: _Batch) -> Outgoing:
    """One event's alert, POSTed to `<url>/v2/enqueue`."""
    url = (sender.destination.get("url") or PAGERDUTY_DEFAULT_URL).rstrip("/") + "/v2/enqueue"
    headers = [("Content-Type", "application/json")]
    return _outgoing(sender, url, headers, batch.pieces[0], batch)


def _email_piece(sender: Sender, now: datetime) -> Piece:
    """One event's whole message (forward/mail.py), as text."""
    return lambda data, item: mail_message(sender.destination, data, item).decode("ascii")


def _email(sender: Sender, batch: _Batch) -> Outgoing:
    """One event's message, to the sink's SMTP server (`smtp://host:port`)."""
    url = smtp_url(sender.destination)
    return _outgoing(sender, url, [], batch.pieces[0], batch)


# Any number of digits: ten or more (a very long wait, or the Unix time to
# come back at, as some destinations write it) asked for the longest wait, not
# none (the forwarder waits five minutes at most).
_DELAY_SECONDS: Final = re.compile(r"[0-9]+")

_BUILDERS: Final = {
    "webhook": _webhook,
    "splunk_hec": _splunk_hec,
    "datadog_logs": _datadog_logs,
    "elasticsearch": _elasticsearch,
    "chat": _chat,
    "pagerduty": _pagerduty,
    "email": _email,
}
_PIECES: Final[dict[Kind, Callable[[Sender, datetime], Piece]]] = {
    "webhook": _webhook_piece,
    "splunk_hec": _splunk_piece,
    "datadog_logs": _datadog_piece,
    "elasticsearch": _elasticsearch_piece,
    "chat": _chat_piece,
    "pagerduty": _pagerduty_piece,
    "email": _email_piece,
}


def _excerpt_of(text: str) -> str:
    return printable(text[:MAX_ERROR_TEXT])[:MAX_ERROR_TEXT]


def printable(text: str) -> str:
    """A destination's words on one line, each control character escaped
    (`\\n`, `\\x00`): they are stored in text columns, which refuse NUL (the
    failure then went unrecorded, its backoff with it), and logged, where a
    newline would start a line of the destination's choosing (helper-126)."""
    return _CONTROL.sub(lambda found: found[0].encode("unicode_escape").decode(), text)


def forbidden_alone(kind: Kind, sent: Outgoing, status: int, body: bytes) -> bool:
    """Whether `status` refuses the one event of `sent` with a 403 that may be
    of the event (a web application firewall's rule) as well as of the sink's
    credentials: the events after it tell (ADR 0054)."""
    return status == FORBIDDEN and len(sent.seqs) == 1 and not _names_its_token(kind, body)


def _names_its_token(kind: Kind, body: bytes) -> bool:
    """Whether a 403 is a Splunk HEC's own refusal of the sink's token: its
    `code` 1 (disabled) or 4 (unknown)."""
    return _hec_answer_code(kind, body) in _HEC_REFUSED_TOKEN


def host_of(url: str) -> str:
    """The host (and port) of `url`, as errors and logs name its destination:
    never its query, which may be a webhook's `?token=` (a path-less URL's
    text up to the next `/` held it: helper-148), nor any userinfo."""
    return urlsplit(url).netloc.rpartition("@")[2]


def answered(sent: Outgoing, status: int, body: bytes) -> str:
    """What the destination answered `sent`, as the sink's errors say it: an
    error page may echo the URL it was sent to ("Cannot POST /hooks/<secret>"),
    so what could be a credential of the URL is cut from it (helper-177), and
    one may echo the request's headers, so the sink's own secrets are too (a
    tenant reads its sinks' errors: a managed sink's were the operator's
    token, helper-189)."""
    head = f"HTTP {status} from {host_of(sent.url)}"
    # Nothing after a colon when it said nothing ("from host: " was a dead letter's error).
    return detailed(head, _kept(sent, body)) if body.strip() else f"{head} (an empty answer)"


def unanswered(sent: Outgoing, error: str) -> str:
    """Why `sent` got no answer (`error`: the HTTP client's words), as the
    sink's errors say it. The client names what it could not read of the
    answer, and a port that echoes what it is sent (a TCP echo, a service
    that is not HTTP) answers with the request's own first line: the URL's
    path and query, a chat sink's credential or a webhook's `?token=`. So it
    is kept as an answer is, without them."""
    return f"{host_of(sent.url)}: {_kept(sent, error)}"


def _kept(sent: Outgoing, body: bytes | str) -> str:
    """As much of `body` as errors keep, without `sent`'s secrets."""
    secrets = _secrets_in_answers(sent)
    # Scrubbed before it is cut: a secret across the cut kept all but its
    # last characters (helper-182). Reading the longest secret's length more
    # is enough to see it whole (those of the URL are no longer than it).
    reach = max([len(sent.url), *map(len, secrets)])
    text = body[: MAX_ERROR_TEXT + reach]
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return _excerpt_of(_without(text, secrets))


def _secrets_in_answers(sent: Outgoing) -> list[str]:
    """What of `sent` an answer must not repeat, longest first: each part of
    its URL that `shown_url` hides, and each of the sink's secrets as an
    answer may write it (as sent, percent-encoded, escaped in JSON or HTML)."""
    found = set(url_secrets(sent.url))
    for secret in sent.secrets:
        found |= {
            secret,
            quote(secret, safe=""),
            quote_plus(secret),
            json.dumps(secret)[1:-1],
            html.escape(secret),
        }
    return sorted(found, key=len, reverse=True)


def _without(text: str, secrets: list[str]) -> str:
    """`text` with each of `secrets` replaced by "…"."""
    for secret in secrets:
        text = text.replace(secret, "…")
    return text


def explained(error: str, why: str) -> str:
    """`error` and `why`, the error cut to leave room for it: an answer of
    MAX_ERROR_TEXT bytes must not push the reason out of the sink's last_error."""
    return error[: MAX_ERROR_TEXT - len(why)] + why


def _refuses_routing_key(kind: Kind, status: int, body: bytes) -> bool:
    """Whether a PagerDuty 400 refuses the sink's routing key rather than its
    event (`"errors": ["... 'routing_key' ..."]`, "Invalid routing key"):
    every event would be refused as that one was, so it is not parked."""
    if kind != "pagerduty" or status != 400:
        return False
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return False
    said = answer if isinstance(answer, dict) else {}
    texts = [said.get("message"), *(said.get("errors") or [])]
    return any(
        isinstance(text, str) and re.search(r"routing[_ ]key", text, re.IGNORECASE)
        for text in texts
    )


def _hec_code(kind: Kind, status: int, body: bytes) -> int | None:
    """The `code` of a HEC's 400 answer, if it is one that refuses the sink's
    settings."""
    code = _hec_answer_code(kind, body) if status == 400 else None
    return code if code in _HEC_REFUSED_SETTINGS else None


def _hec_answer_code(kind: Kind, body: bytes) -> int | None:
    """The `code` a Splunk HEC's answer names, if it names one."""
    if kind != "splunk_hec":
        return None
    try:
        code = json.loads(body).get("code")
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None
    return code if type(code) is int else None


def _retry_after(headers: dict[str, str], now: datetime) -> float | None:
    """Retry-After's seconds from `now`: delay-seconds (ASCII digits: `isdigit`
    took "²", which float() refuses; however many, which float() takes, up to
    `inf`) or an HTTP date (RFC 9110); None when absent, unreadable or already
    past (then the backoff alone applies)."""
    value = headers.get("retry-after", "").strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000", or asctime's form: HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return seconds if seconds > 0 else None


def needs_body(kind: Kind, status: int) -> bool:
    """Whether `verdict` reads an answer of `status` by its body: a 4xx's (a
    HEC's code, what a dead letter keeps) and an Elasticsearch bulk answer's
    (its items). Of others the status (and headers: Retry-After, Location)
    decides, the body only words shown in an error: a delivery's 2xx, a
    retried 408, 429 or 5xx, a redirect."""
    if 200 <= status < 300:
        return kind == "elasticsearch"
    return 400 <= status < 500 and status not in _RETRIED_4XX


def verdict(
    kind: Kind,
    sent: Outgoing,
    status: int,
    body: bytes,
    headers: dict[str, str],
    *,
    now: datetime | None = None,
) -> Verdict:
    """What an answer, received at `now`, means for the events of `sent`."""
    if kind == "email":
        return _smtp_verdict(sent, status, body, headers)
    host = host_of(sent.url)
    if 300 <= status < 400:
        # Shown as the sink's URL is: a redirect leads to the same webhook,
        # written again (a trailing slash, https, a moved domain), its secret
        # and all (helper-177).
        location = headers.get("location", "?")
        try:
            where = shown_url(location)
        except ValueError:
            # A port out of range, an IPv6 address without its bracket: it
            # raised here, and the attempt went unrecorded (helper-307).
            where = "a location that is no URL"
        where = printable(_without(where, _secrets_in_answers(sent))[:_MAX_LOCATION])
        return Verdict(
            "retry",
            status,
            f"HTTP {status} from {host}: redirect to {where} not followed",
            needs_fixing=True,  # the sink's URL is to be changed to where it leads
        )
    error = answered(sent, status, body)
    if status in _RETRIED_4XX or status >= 500:
        return Verdict("retry", status, error, _retry_after(headers, now or datetime.now(UTC)))
    hec_code = _hec_code(kind, status, body)
    if _refuses_routing_key(kind, status, body):
        why = f"; a refusal of the sink's routing key, not of its event{_WAITS}"
        wait = _retry_after(headers, now or datetime.now(UTC))
        return Verdict("retry", status, explained(error, why), wait, needs_fixing=True)
    if status in _REFUSED_REQUEST or hec_code is not None:
        if status == FORBIDDEN and len(sent.seqs) > 1 and not _names_its_token(kind, body):
            # A web application firewall's 403 may be of the body's size (AWS
            # WAF's core rules refuse bodies over 8 KB) or of an event in it:
            # the halves find out, as for a 413. Alone, it is held, not parked,
            # unless an event after it is taken (the forwarder's probe).
            return Verdict("split", status, error)
        if forbidden_alone(kind, sent, status, body):  # no event after it taken (ADR 0054)
            why = (
                "; a refusal of the sink's credentials, or of this event (a web application"
                f" firewall's rule): no event after it, sent alone, was taken yet{_WAITS}"
            )
        else:
            what = _REFUSED_REQUEST.get(status) or f"settings (HEC code {hec_code})"
            why = f"; a refusal of the sink's {what}, not of its events{_WAITS}"
        wait = _retry_after(headers, now or datetime.now(UTC))
        return Verdict("retry", status, explained(error, why), wait, needs_fixing=True)
    if status >= 400 and len(sent.seqs) > 1:
        # Refused, but for which of its events? Parked whole, one event the
        # destination will not take kept its neighbours from it for good: a
        # replay was refused again. The events go again in halves, down to
        # those refused alone, which alone are parked (ADR 0052). A 413 is
        # the same search: too large for this destination (a proxy's limit,
        # a HEC's lowered max_content_length), and only an event too large
        # alone is parked.
        return Verdict("split", status, error)
    if status >= 400:
        return Verdict("park", status, error)
    if not 200 <= status < 300:
        return Verdict("retry", status, f"HTTP {status} from {host}")
    if kind == "elasticsearch":
        return _bulk_verdict(sent, body, host)
    return Verdict("delivered", status)


# SMTP replies refusing the sink's login: authentication required (530),
# a stronger mechanism (534), credentials invalid (535), encryption required
# (538): every message would be refused alike.
_SMTP_LOGIN_REFUSED: Final = frozenset({530, 534, 535, 538})


def _smtp_verdict(sent: Outgoing, code: int, body: bytes, headers: dict[str, str]) -> Verdict:
    """What an SMTP server's reply (forward/mail.py) means for a message's
    event (ADR 0133): 2xx taken; 4xx retried with backoff; a refusal of the
    login, of the sender or of the connection held until the sink is put
    right, naming what to fix; any other 5xx (a recipient unknown, the
    message refused) parks the event."""
    phase = headers.get("smtp-phase", "data")
    error = f"SMTP {code} from {host_of(sent.url)}: {_kept(sent, body)}"
    if 200 <= code < 300:
        return Verdict("delivered", code)
    if 400 <= code < 500 or code < 200:
        return Verdict("retry", code, error)
    if phase == "auth" or code in _SMTP_LOGIN_REFUSED:
        why = f"; a refusal of the sink's login (username {printable(sent.login[:64])!r}){_WAITS}"
        return Verdict("retry", code, explained(error, why), needs_fixing=True)
    if phase in ("connect", "mail"):
        what = "sender (from_address)" if phase == "mail" else "connection"
        why = f"; a refusal of the sink's {what}, not of its event{_WAITS}"
        return Verdict("retry", code, explained(error, why), needs_fixing=True)
    return Verdict("park", code, error)


def _bulk_verdict(sent: Outgoing, body: bytes, host: str) -> Verdict:
    """Elasticsearch answers 200 with an error per item: 409 means the event
    is already there (a repeated delivery); 429 and 5xx are retried; other
    item errors are parked, one dead letter per event. An answer that does
    not account for every event (no items, an item missing, or one without a
    status) is retried: nothing says those events were indexed."""
    try:
        answer = json.loads(body)
        items = answer.get("items")
    except (ValueError, TypeError, AttributeError, RecursionError):  # `[[[[...`: too deep
        if len(body) >= ANSWER_BYTES["elasticsearch"] and len(sent.seqs) > 1:
            # Cut where it was no longer kept (long error reasons): the same
            # batch would be answered as long again, so it goes in halves.
            return Verdict("split", 200, f"bulk answer from {host} over {len(body)} bytes")
        return Verdict("retry", 200, f"unreadable bulk answer from {host}: {_kept(sent, body)}")
    # Items are asked back (filter_path keeps their status) whatever the errors:
    # an answer without them (`{}`, `{"errors": false}`: a proxy, a wrong
    # endpoint answering 200) says nothing of the events.
    if not isinstance(items, list) or len(items) != len(sent.seqs):
        count = len(items) if isinstance(items, list) else 0
        return Verdict(
            "retry",
            200,
            f"bulk answer from {host}: {counted(count, 'item')}"
            f" for {counted(len(sent.seqs), 'event')}",
        )
    refused = []
    for seq, item in zip(sent.seqs, items, strict=True):
        values = list(item.values()) if isinstance(item, dict) else []
        result: dict[str, Any] = values[0] if values and isinstance(values[0], dict) else {}
        status = result.get("status")
        if type(status) is not int or status < 100:
            return Verdict("retry", 200, f"bulk answer from {host}: seq {seq} has no status")
        if status < 300 or status == 409:
            continue
        said = result.get("error")  # none, or an empty one: no `: ""` after the host
        error = _without(json.dumps(said), _secrets_in_answers(sent)) if said else ""
        error = detailed(f"bulk item HTTP {status} from {host}", error[:MAX_ERROR_TEXT])
        if status in _RETRIED_4XX or status >= 500:
            return Verdict("retry", status, error)
        if status in _BULK_REFUSED_INDEX:
            why = f"; a refusal of the sink's index (its permissions, or no such index){_WAITS}"
            return Verdict("retry", status, explained(error, why), needs_fixing=True)
        refused.append(ItemRefusal(seq, status, error))
    return Verdict("delivered", 200, refused=tuple(refused))
