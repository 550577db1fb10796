"""What each kind of destination is sent and how its answers are read.

`requests()` turns a run of events (oldest first) into the HTTP requests of a
sink's kind, within that kind's limits; `verdict()` reads one answer:
delivered, retry later (timeouts, 408, 429, 5xx, redirects) or park in the
dead-letter list (any other 4xx, and per item for Elasticsearch's bulk API)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from ..domain.ocsf import to_ocsf
from ..domain.sinks import DATADOG_DEFAULT_URL, Format, Kind, webhook_key

# Per request: (events, bytes of body). Datadog's intake: 1,000 entries and
# 5 MB; Splunk's HEC refuses bodies over its max_content_length, 1 MB on older
# releases; Elasticsearch's bulk API works best at a few MB.
# Also `error` and `status`: filter_path applies to an error answer (a 400 or
# 401 of the whole request) too, which would otherwise arrive as `{}`.
_BULK_ANSWER_FIELDS: Final = (
    "errors,items.*.status,items.*.error.type,items.*.error.reason,error,status"
)
# What is kept of a destination's answer: enough for any error, and for a bulk
# answer an item per event, each with its error.
ANSWER_BYTES: Final[dict[Kind, int]] = {
    "webhook": 64 * 1024,
    "splunk_hec": 64 * 1024,
    "datadog_logs": 64 * 1024,
    "elasticsearch": 4 * 1024 * 1024,
}
LIMITS: Final[dict[Kind, tuple[int, int]]] = {
    "webhook": (500, 4 * 1024 * 1024),
    "splunk_hec": (500, 1024 * 1024),
    "datadog_logs": (1000, 5 * 1000 * 1000),
    "elasticsearch": (1000, 8 * 1024 * 1024),
}
_RETRIED_4XX: Final = frozenset({408, 429})
MAX_ERROR_TEXT: Final = 1024


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


@dataclass(frozen=True, slots=True)
class ItemRefusal:
    seq: int
    status: int
    error: str


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Literal["delivered", "retry", "park"]
    status: int = 0
    error: str = ""
    retry_after: float | None = None
    # Delivered but for these (Elasticsearch items refused for good).
    refused: tuple[ItemRefusal, ...] = field(default=())


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
    """The events of one request: as stored, parsed, and as the sink's items."""

    events: list[PendingEvent]
    parsed: list[dict[str, Any]]
    items: list[str]
    now: datetime


def _item(event: PendingEvent, data: dict[str, Any], format: Format) -> str:
    """One event's JSON text in the sink's format. Sealtrail JSON is the stored
    record verbatim with `leaf_hash` added, so a receiver can check it: drop
    leaf_hash, canonicalise (RFC 8785), SHA-256(0x00 || bytes) == leaf_hash."""
    if format == "ocsf":
        return json.dumps(to_ocsf(data, event.leaf_hash), separators=(",", ":"))
    return f'{event.record[:-1]},"leaf_hash":"{event.leaf_hash.hex()}"}}'


def requests(sender: Sender, events: list[PendingEvent], *, now: datetime) -> list[Outgoing]:
    """The requests that carry `events`, in order."""
    max_events, max_bytes = LIMITS[sender.kind]
    parsed = [json.loads(event.record) for event in events]
    items = [_item(event, data, sender.format) for event, data in zip(events, parsed, strict=True)]
    chunks: list[list[int]] = []
    size = 0
    for index, item in enumerate(items):
        grows = _encoded_size(sender.kind, item) + 256  # and the kind's envelope around it
        if not chunks or len(chunks[-1]) >= max_events or size + grows > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(index)
        size += grows
    build = _BUILDERS[sender.kind]
    return [
        build(
            sender,
            _Batch(
                [events[i] for i in chunk],
                [parsed[i] for i in chunk],
                [items[i] for i in chunk],
                now,
            ),
        )
        for chunk in chunks
    ]


def _encoded_size(kind: Kind, item: str) -> int:
    """The bytes an item takes in the kind's body: UTF-8, and for Datadog as a
    JSON string (escaped, non-ASCII as \\u escapes), the entry's message."""
    if kind == "datadog_logs":
        return len(json.dumps(item))
    return len(item) if item.isascii() else len(item.encode())  # no copy for ASCII


def _outgoing(url: str, headers: list[tuple[str, str]], body: str, batch: _Batch) -> Outgoing:
    return Outgoing(
        url=url,
        headers=headers,
        body=body.encode(),
        seqs=tuple(event.seq for event in batch.events),
        event_ids=tuple(data["id"] for data in batch.parsed),
    )


def _webhook(sender: Sender, batch: _Batch) -> Outgoing:
    first, last = batch.events[0].seq, batch.events[-1].seq
    stamp = json.dumps(batch.now.isoformat().replace("+00:00", "Z"))
    tenant, sink = json.dumps(sender.tenant_id), json.dumps(sender.sink_id)
    # Written around the items' text, which must not be parsed and re-serialised.
    body = (
        f'{{"type":"sealtrail.events","timestamp":{stamp},"data":{{"tenant_id":{tenant},'
        f'"sink_id":{sink},"first_seq":{first},"last_seq":{last},'
        f'"events":[{",".join(batch.items)}]}}}}'
    )
    # The same id on every attempt of these events: receivers deduplicate by
    # it. The seqs' digest tells apart two sets of events between the same
    # first and last (a filter changed, a replay through it), which a receiver
    # would otherwise drop as the message it already has.
    listed = ",".join(str(event.seq) for event in batch.events).encode()
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
    return _outgoing(sender.destination["url"], headers, body, batch)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _splunk_hec(sender: Sender, batch: _Batch) -> Outgoing:
    settings = sender.destination
    default_type = "ocsf" if sender.format == "ocsf" else "sealtrail:audit"
    envelope: dict[str, Any] = {
        "host": "sealtrail",
        "source": settings.get("source") or "sealtrail",
        "sourcetype": settings.get("sourcetype") or default_type,
    }
    if settings.get("index"):
        envelope["index"] = settings["index"]
    lines = []
    for data, item in zip(batch.parsed, batch.items, strict=True):
        seconds = datetime.fromisoformat(data["occurred_at"]).timestamp()
        head = json.dumps({"time": round(seconds, 6), **envelope}, separators=(",", ":"))
        lines.append(f'{head[:-1]},"event":{item}}}')
    url = settings["url"].rstrip("/") + "/services/collector/event"
    headers = [
        ("Content-Type", "application/json"),
        ("Authorization", f"Splunk {settings['token']}"),
    ]
    return _outgoing(url, headers, "\n".join(lines), batch)


def _datadog_logs(sender: Sender, batch: _Batch) -> Outgoing:
    settings = sender.destination
    common: dict[str, Any] = {
        "ddsource": "sealtrail",
        "hostname": "sealtrail",
        "service": settings.get("service") or "sealtrail",
    }
    if settings.get("tags"):
        common["ddtags"] = settings["tags"]
    # The event as the entry's message: Datadog parses a JSON message into attributes.
    entries = [{**common, "message": item} for item in batch.items]
    url = (settings.get("url") or DATADOG_DEFAULT_URL).rstrip("/") + "/api/v2/logs"
    headers = [("Content-Type", "application/json"), ("DD-API-KEY", settings["api_key"])]
    return _outgoing(url, headers, json.dumps(entries, separators=(",", ":")), batch)


def _elasticsearch(sender: Sender, batch: _Batch) -> Outgoing:
    settings = sender.destination
    index = settings["index"]
    lines = []
    for data, item in zip(batch.parsed, batch.items, strict=True):
        action = {"create": {"_index": index, "_id": data["id"]}}
        lines.append(json.dumps(action, separators=(",", ":")))
        lines.append(item)
    headers = [("Content-Type", "application/x-ndjson")]
    if settings.get("api_key"):
        headers.append(("Authorization", f"ApiKey {settings['api_key']}"))
    # Only what the verdict reads: Elasticsearch answers every item, about
    # 200 bytes each even when none failed.
    url = settings["url"].rstrip("/") + "/_bulk?filter_path=" + _BULK_ANSWER_FIELDS
    return _outgoing(url, headers, "\n".join(lines) + "\n", batch)


_DELAY_SECONDS: Final = re.compile(r"[0-9]{1,9}")

_BUILDERS: Final = {
    "webhook": _webhook,
    "splunk_hec": _splunk_hec,
    "datadog_logs": _datadog_logs,
    "elasticsearch": _elasticsearch,
}


def _excerpt(body: bytes) -> str:
    return body[:MAX_ERROR_TEXT].decode("utf-8", "replace")


def _retry_after(headers: dict[str, str]) -> float | None:
    """Delay-seconds only (an HTTP date is ignored); ASCII digits: `isdigit`
    took "²", which float() refuses."""
    value = headers.get("retry-after", "").strip()
    return float(value) if _DELAY_SECONDS.fullmatch(value) else None


def verdict(
    kind: Kind, sent: Outgoing, status: int, body: bytes, headers: dict[str, str]
) -> Verdict:
    """What an answer means for the events of `sent`."""
    host = sent.url.split("/")[2]
    if 300 <= status < 400:
        where = headers.get("location", "?")
        return Verdict(
            "retry", status, f"HTTP {status} from {host}: redirect to {where} not followed"
        )
    if status in _RETRIED_4XX or status >= 500:
        return Verdict(
            "retry", status, f"HTTP {status} from {host}: {_excerpt(body)}", _retry_after(headers)
        )
    if status >= 400:
        return Verdict("park", status, f"HTTP {status} from {host}: {_excerpt(body)}")
    if not 200 <= status < 300:
        return Verdict("retry", status, f"HTTP {status} from {host}")
    if kind == "elasticsearch":
        return _bulk_verdict(sent, body, host)
    return Verdict("delivered", status)


def _bulk_verdict(sent: Outgoing, body: bytes, host: str) -> Verdict:
    """Elasticsearch answers 200 with an error per item: 409 means the event
    is already there (a repeated delivery); 429 and 5xx are retried; other
    item errors are parked, one dead letter per event."""
    try:
        answer = json.loads(body)
        items = answer["items"] if answer.get("errors") else []
    except (ValueError, KeyError, TypeError, AttributeError):
        return Verdict("retry", 200, f"unreadable bulk answer from {host}: {_excerpt(body)}")
    refused = []
    for seq, item in zip(sent.seqs, items, strict=False):
        result: dict[str, Any] = next(iter(item.values()), {}) if isinstance(item, dict) else {}
        status = int(result.get("status", 0))
        if status < 300 or status == 409:
            continue
        error = json.dumps(result.get("error", ""))[:MAX_ERROR_TEXT]
        if status in _RETRIED_4XX or status >= 500:
            return Verdict("retry", status, f"bulk item HTTP {status} from {host}: {error}")
        refused.append(ItemRefusal(seq, status, f"bulk item HTTP {status} from {host}: {error}"))
    return Verdict("delivered", 200, refused=tuple(refused))
