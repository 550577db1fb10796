"""Encoders that turn stored records into export bytes, a row at a time.

- NDJSON: each canonical record exactly as hashed, one per line.
- CSV: RFC 4180 with a header row, one flat column per field, nested values
  as JSON, and every cell neutralised against formula injection (OWASP: a
  cell starting with = + - @ tab CR or LF, or a full-width = + - @, or with
  one of those signs after leading whitespace or a byte order mark, gets a
  leading ').
- JSON: one array of events in the API's JSON mapping (camelCase, as the CLI
  prints them).
"""

from __future__ import annotations

import csv
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Final

import rfc8785

CSV_COLUMNS: Final = (
    "seq",
    "id",
    "occurred_at",
    "received_at",
    "action",
    "category",
    "severity",
    "outcome",
    "description",
    "actor_type",
    "actor_id",
    "actor_email",
    "actor_display_name",
    "resource_type",
    "resource_id",
    "resource_name",
    "ip",
    "user_agent",
    "request_id",
    "trace_id",
    "span_id",
    "changes",
    "details",
    "idempotency_key",
    "leaf_hash",
    # Added after the others, and so last, that their positions stay.
    "country",
    "recorded_by_token_id",
    "recorded_by_token_name",
    # `actor.credential`: which of the actor's keys or tokens acted.
    "credential_kind",
    "credential_id",
    "credential_hint",
    # `caller` or `geoip` (RequestContext.country_source); empty for no
    # country, or one recorded before it was marked.
    "country_source",
    # The HTTP request the event records (ADR 0136): its method, route, status
    # code and duration in milliseconds (as the record writes the number);
    # empty when not recorded.
    "http_method",
    "http_route",
    "http_status_code",
    "duration_ms",
    # `actor.roles` as a JSON array (`["admin","billing"]`), empty for none.
    "actor_roles",
)
# A cell starting with `'` is prefixed too, so that taking one leading `'` off
# every cell that has one gives back exactly what was recorded.
# A line feed too (spreadsheets may drop a leading one), and the full-width
# signs some locales' spreadsheets read as their ASCII ones.
_FULL_WIDTH: Final = ("\uff1d", "\uff0b", "\uff0d", "\uff20")  # = + - @
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r", "\n", "'", *_FULL_WIDTH)
_SIGNS: Final = ("=", "+", "-", "@", *_FULL_WIDTH)
# What an import that trims spaces (LibreOffice's "Trim spaces", Google
# Sheets) may take off before a sign: any Unicode whitespace (str.isspace: a
# space, a no-break, em or ideographic space, a vertical tab, ...), a byte
# order mark and a zero-width space. Each leading, a cell such as " =1+1" was
# read as a formula once trimmed (helper-344).
_TRIMMED: Final = "".join(chr(c) for c in range(0x3001) if chr(c).isspace()) + "\ufeff\u200b"


def neutralise(cell: str) -> str:
    """A cell spreadsheets will not evaluate as a formula (OWASP CSV injection),
    even once its leading whitespace is trimmed."""
    if cell.startswith(_FORMULA_STARTS) or cell.lstrip(_TRIMMED).startswith(_SIGNS):
        return "'" + cell
    return cell


class Encoder(ABC):
    """Encodes records into bytes: `start`, `row` per record, `end`.
    `shows_leaf_hash`: each row shows its record beside the record's leaf
    hash, and so is held to it as it is written; an NDJSON line is the
    record alone, which whoever reads it hashes."""

    media_type: str
    shows_leaf_hash = True

    def start(self) -> bytes:
        return b""

    @abstractmethod
    def row(self, record: str, leaf_hash: bytes) -> bytes: ...

    def end(self) -> bytes:
        return b""


class NdjsonEncoder(Encoder):
    media_type = "application/x-ndjson"
    shows_leaf_hash = False

    def row(self, record: str, leaf_hash: bytes) -> bytes:
        return record.encode() + b"\n"


class CsvEncoder(Encoder):
    media_type = "text/csv"

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def _line(self, cells: list[str]) -> bytes:
        self._writer.writerow(cells)
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode()

    def start(self) -> bytes:
        return self._line(list(CSV_COLUMNS))

    def row(self, record: str, leaf_hash: bytes) -> bytes:
        data = json.loads(record)
        actor = data["actor"]
        resource = data.get("resource", {})
        context = data.get("context", {})
        recorder = data.get("recorded_by", {})
        credential = actor.get("credential", {})
        values: list[Any] = [
            data["seq"],
            data["id"],
            data["occurred_at"],
            data["received_at"],
            data["action"],
            data.get("category", ""),
            data["severity"],
            data["outcome"],
            data.get("description", ""),
            actor["type"],
            actor["id"],
            actor.get("email", ""),
            actor.get("display_name", ""),
            resource.get("type", ""),
            resource.get("id", ""),
            resource.get("name", ""),
            context.get("ip", ""),
            context.get("user_agent", ""),
            context.get("request_id", ""),
            context.get("trace_id", ""),
            context.get("span_id", ""),
            _json_cell(data.get("changes")),
            _json_cell(data.get("details")),
            data.get("idempotency_key", ""),
            leaf_hash.hex(),
            context.get("country", ""),
            recorder.get("token_id", ""),
            recorder.get("token_name", ""),
            credential.get("kind", ""),
            credential.get("id", ""),
            credential.get("hint", ""),
            context.get("country_source", ""),
            context.get("http_method", ""),
            context.get("http_route", ""),
            context.get("http_status_code", ""),
            _number_cell(context.get("duration_ms")),
            _json_cell(actor.get("roles")),
        ]
        return self._line([neutralise(str(value)) for value in values])


class JsonEncoder(Encoder):
    media_type = "application/json"

    def __init__(self, to_json: Callable[[str, bytes], dict[str, Any]]) -> None:
        """`to_json` maps a record and its leaf hash to the API's JSON view."""
        self._to_json = to_json
        self._first = True

    def start(self) -> bytes:
        return b"["

    def row(self, record: str, leaf_hash: bytes) -> bytes:
        event = self._to_json(record, leaf_hash)
        separator = b"\n" if self._first else b",\n"
        self._first = False
        return separator + json.dumps(event, ensure_ascii=False).encode()

    def end(self) -> bytes:
        return b"]\n" if self._first else b"\n]\n"


def _json_cell(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _number_cell(value: Any) -> str:
    """A record's number as the record writes it (RFC 8785: `1e-7`, where
    Python's str writes `1e-07`), or "" when it has none."""
    if value is None:
        return ""
    return bytes(rfc8785.dumps(value)).decode()
