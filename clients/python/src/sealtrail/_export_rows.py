"""A CSV or JSON export's rows rebuilt into the canonical records they show
(docs/record-format.md), whose leaves are the tenant's tree's: what lets
`sealtrail verify` recompute an export's root from a CSV or a JSON array as
it does from an NDJSON's lines, the records as hashed.

A record omits what is unset, never writes an empty string, `{}` or `[]`
(the server's validation drops them), so an empty CSV cell is a key absent;
`v` is 1 (the only record version) and `tenant_id` the checkpoint's log's,
neither in a CSV row. A row of a format this client does not know all of (a
CSV column, a JSON member a newer server added) is not rebuilt:
`UnknownFieldsError`, and the root is then not recomputed (said, not failed).
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sealtrail._convert import json_number

RECORD_VERSION: Final = 1
# Integers RFC 8785 writes as they are; beyond, as the double they become.
_MAX_EXACT_INT: Final = 2**53

# The columns of a CSV export, in order (as the server writes them, columns
# only ever added at the end): an export made before one was added has a
# prefix of them.
CSV_COLUMNS: Final = (
    "seq", "id", "occurred_at", "received_at", "action", "category", "severity", "outcome",
    "description", "actor_type", "actor_id", "actor_email", "actor_display_name",
    "resource_type", "resource_id", "resource_name", "ip", "user_agent", "request_id",
    "trace_id", "span_id", "changes", "details", "idempotency_key", "leaf_hash", "country",
    "recorded_by_token_id", "recorded_by_token_name", "credential_kind", "credential_id",
    "credential_hint", "country_source", "http_method", "http_route", "http_status_code",
    "duration_ms",
)  # fmt: skip
# Each string cell's place in the record: (column, object it is in, key).
_CSV_TEXT: Final = (
    ("id", "", "id"), ("occurred_at", "", "occurred_at"), ("received_at", "", "received_at"),
    ("action", "", "action"), ("category", "", "category"), ("severity", "", "severity"),
    ("outcome", "", "outcome"), ("description", "", "description"),
    ("actor_type", "actor", "type"), ("actor_id", "actor", "id"),
    ("actor_email", "actor", "email"), ("actor_display_name", "actor", "display_name"),
    ("resource_type", "resource", "type"), ("resource_id", "resource", "id"),
    ("resource_name", "resource", "name"), ("ip", "context", "ip"),
    ("user_agent", "context", "user_agent"), ("request_id", "context", "request_id"),
    ("trace_id", "context", "trace_id"), ("span_id", "context", "span_id"),
    ("idempotency_key", "", "idempotency_key"), ("country", "context", "country"),
    ("recorded_by_token_id", "recorded_by", "token_id"),
    ("recorded_by_token_name", "recorded_by", "token_name"),
    ("credential_kind", "credential", "kind"), ("credential_id", "credential", "id"),
    ("credential_hint", "credential", "hint"), ("country_source", "context", "country_source"),
    ("http_method", "context", "http_method"), ("http_route", "context", "http_route"),
)  # fmt: skip
# Cells holding JSON: changes and details whole, the numbers of the context.
_CSV_JSON: Final = (
    ("changes", "", "changes"), ("details", "", "details"),
    ("http_status_code", "context", "http_status_code"), ("duration_ms", "context", "duration_ms"),
)  # fmt: skip


class UnknownFieldsError(Exception):
    """A row holds fields this client does not know (a newer Sealtrail's)."""


def canonical(value: Any) -> str:
    """`value` as RFC 8785 (JCS) writes it: members sorted by their names'
    UTF-16 code units, no space, strings escaped as JSON must (Python's json
    escapes the same characters, the same way), numbers as ECMAScript does."""
    if value is None or isinstance(value, bool | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value) if abs(value) <= _MAX_EXACT_INT else json_number(float(value))
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical(item) for item in value) + "]"
    if isinstance(value, dict):
        members = sorted(value.items(), key=lambda item: item[0].encode("utf-16-be"))
        return "{" + ",".join(f"{canonical(k)}:{canonical(v)}" for k, v in members) + "}"
    raise TypeError(f"{type(value).__name__} is no JSON value")


def csv_records(path: Path, tenant: str) -> Iterator[tuple[str, bytes, bytes]]:
    """Each row of the CSV export at `path` as (its seq's cell, the record it
    shows, its leaf_hash cell's bytes); UnknownFieldsError for a header
    that is no prefix of CSV_COLUMNS, ValueError for a row that is no record."""
    with path.open(encoding="utf-8", newline="") as file:
        rows = csv.reader(file)
        header = tuple(next(rows, ()))
        if header != CSV_COLUMNS[: len(header)] or "leaf_hash" not in header:
            raise UnknownFieldsError("its header is not the columns this client knows")
        for cells in rows:
            if len(cells) != len(header):
                raise ValueError(f"a row of {len(cells)} cells under {len(header)} columns")
            row = dict(zip(header, (_recorded(cell) for cell in cells), strict=True))
            yield row["seq"], _csv_record(row, tenant), bytes.fromhex(row["leaf_hash"])


def _recorded(cell: str) -> str:
    """A cell's recorded value: one leading `'` off (the server gives every
    cell it neutralises against formulas one, and one starting with `'`)."""
    return cell[1:] if cell.startswith("'") else cell


def _csv_record(row: dict[str, str], tenant: str) -> bytes:
    record: dict[str, Any] = {"v": RECORD_VERSION, "tenant_id": tenant, "seq": int(row["seq"])}
    parts: dict[str, dict[str, Any]] = {"": record}
    for column, part, key in _CSV_TEXT:
        if row.get(column):
            parts.setdefault(part, {})[key] = row[column]
    for column, part, key in _CSV_JSON:
        if row.get(column):
            parts.setdefault(part, {})[key] = json.loads(row[column])
    for part in ("actor", "resource", "context", "recorded_by"):
        if part in parts:
            record[part] = parts[part]
    if "credential" in parts:
        record.setdefault("actor", {})["credential"] = parts["credential"]
    return canonical(record).encode()


def json_records(path: Path) -> Iterator[tuple[str, bytes, bytes]]:
    """Each event of the JSON export at `path` (an array, each event on a
    line of its own) as (its seq, the record it shows, its leafHash's
    bytes); UnknownFieldsError for a member this client does not know."""
    with path.open(encoding="utf-8") as file:
        for line in file:
            text = line.rstrip("\n").removesuffix(",")
            if text in ("[", "]", "[]"):
                continue
            event = json.loads(text)
            record = _api_record(event)
            yield (
                str(record["seq"]),
                canonical(record).encode(),
                base64.b64decode(event["leafHash"], validate=True),
            )


def _prefixed(prefix: str) -> Callable[[Any], str]:
    """An enum's JSON name (`SEVERITY_WARNING`) as the record writes it."""

    def name(value: Any) -> str:
        if not isinstance(value, str) or not value.startswith(prefix):
            raise ValueError(f"{value!r} is no {prefix}* name")
        return value.removeprefix(prefix).lower()

    return name


def _time(text: Any) -> str:
    """A protobuf JSON timestamp as a record writes times: six fractional digits."""
    moment = datetime.fromisoformat(str(text)).astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def _as_is(value: Any) -> Any:
    return value


# An API event's members (JSON mapping) and how each is written in the
# record: (member, record key, conversion); `_PARTS` the objects in it.
_EVENT: Final[dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "id": ("id", _as_is), "seq": ("seq", int), "tenantId": ("tenant_id", _as_is),
    "receivedAt": ("received_at", _time), "occurredAt": ("occurred_at", _time),
    "action": ("action", _as_is), "category": ("category", _prefixed("CATEGORY_")),
    "severity": ("severity", _prefixed("SEVERITY_")),
    "outcome": ("outcome", _prefixed("OUTCOME_")), "description": ("description", _as_is),
    "details": ("details", _as_is), "idempotencyKey": ("idempotency_key", _as_is),
}  # fmt: skip
_PARTS: Final[dict[str, tuple[str, dict[str, tuple[str, Callable[[Any], Any]]]]]] = {
    "actor": ("actor", {
        "type": ("type", _prefixed("ACTOR_TYPE_")), "id": ("id", _as_is),
        "email": ("email", _as_is), "displayName": ("display_name", _as_is),
    }),
    "resource": ("resource", {
        "type": ("type", _as_is), "id": ("id", _as_is), "name": ("name", _as_is),
    }),
    "context": ("context", {
        "ip": ("ip", _as_is), "userAgent": ("user_agent", _as_is),
        "country": ("country", _as_is), "countrySource": (
            "country_source", _prefixed("COUNTRY_SOURCE_")
        ),
        "requestId": ("request_id", _as_is), "traceId": ("trace_id", _as_is),
        "spanId": ("span_id", _as_is), "httpMethod": ("http_method", _as_is),
        "httpRoute": ("http_route", _as_is), "httpStatusCode": ("http_status_code", _as_is),
        "durationMs": ("duration_ms", _as_is),
    }),
    "recordedBy": ("recorded_by", {
        "tokenId": ("token_id", _as_is), "tokenName": ("token_name", _as_is),
    }),
    "credential": ("credential", {
        "kind": ("kind", _as_is), "id": ("id", _as_is), "hint": ("hint", _as_is),
    }),
}  # fmt: skip


def _api_record(event: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"v": RECORD_VERSION}
    for member, value in event.items():
        if member == "leafHash":
            continue
        if member == "changes":
            record["changes"] = [_change(change) for change in value]
        elif member in _EVENT:
            key, written = _EVENT[member]
            record[key] = written(value)
        elif member in _PARTS:
            record.update(_part(member, value))
        else:
            raise UnknownFieldsError(f"its events have a member {member!r}")
    return record


def _part(member: str, value: dict[str, Any]) -> dict[str, Any]:
    key, fields = _PARTS[member]
    part: dict[str, Any] = {}
    for name, item in value.items():
        if name == "credential" and member == "actor":
            part.update(_part("credential", item))
        elif name in fields:
            inner, written = fields[name]
            part[inner] = written(item)
        else:
            raise UnknownFieldsError(f"its events' {member} has a member {name!r}")
    return {key: part} if part else {}


def _change(change: dict[str, Any]) -> dict[str, Any]:
    unknown = change.keys() - {"field", "before", "after"}
    if unknown:
        raise UnknownFieldsError(f"its events' changes have a member {min(unknown)!r}")
    return dict(change)
