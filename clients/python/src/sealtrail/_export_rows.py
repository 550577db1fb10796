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

A row is read only as the server's encoders write it
(server/sealtrail_server/export/formats.py), not as any text that reads back
into the same record: a JSON object naming a key twice (read by its last
here, by its first elsewhere), a cell's formula guard taken off, a seq in
other digits, a time in another zone or in none, an enum in another case,
other spacing, quoting or number forms. `NamedTwiceError` and
`NotWrittenSoError` (both `RowWrittenOtherwiseError`) say which row and what.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final

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
    "duration_ms", "actor_roles",
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
# Cells holding JSON: changes, details and the actor's roles whole, the numbers
# of the context.
_CSV_JSON: Final = (
    ("changes", "", "changes"), ("details", "", "details"),
    ("http_status_code", "context", "http_status_code"), ("duration_ms", "context", "duration_ms"),
    ("actor_roles", "actor", "roles"),
)  # fmt: skip


class UnknownFieldsError(Exception):
    """A row holds fields this client does not know (a newer Sealtrail's)."""


class RowWrittenOtherwiseError(ValueError):
    """A row the server's encoder does not write so: `seq`, its seq (None
    where not yet read: the array around its events), `what` of it, in
    words; `place`, where it is no row's (a CSV's header)."""

    def __init__(self, seq: int | str | None, what: str, *, place: str | None = None) -> None:
        super().__init__(what)
        self.seq = seq
        self.what = what
        self.place = place


class NamedTwiceError(RowWrittenOtherwiseError):
    """A JSON object of a row naming `name` twice, in its `where` (`details`,
    `changes`, `event`): JSON readers keep one or the other."""

    def __init__(self, seq: int | str | None, name: str, where: str) -> None:
        super().__init__(seq, f"names {name!r} twice in its {where}")
        self.name = name


class NotWrittenSoError(RowWrittenOtherwiseError):
    """A row's `column` (a CSV column, a JSON member) written otherwise
    than the server writes the record it reads back into."""

    def __init__(self, seq: int | str | None, column: str, found: Any, written: str) -> None:
        super().__init__(seq, f"its {column} {_excerpt(found)}, where the server writes {written}")


def _excerpt(value: Any) -> str:
    """`value`'s repr, a long one cut short (a cell may be 100,000 characters)."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:13] + "..." + shown[-1]


def _loads(text: str, seq: int | str | None, where: str) -> Any:
    """`text` read as JSON; NamedTwiceError for an object naming a key
    twice, which `json.loads` reads by its last and other readers by their first."""

    def once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        members: dict[str, Any] = {}
        for name, value in pairs:
            if name in members:
                raise NamedTwiceError(seq, name, where)
            members[name] = value
        return members

    return json.loads(text, object_pairs_hook=once_each)


# What the server's CSV encoder guards against formulas with a leading `'`
# (formats.neutralise, held to it by tests/unit/test_export_check.py): a cell
# starting with one of `_GUARDED_FIRST`, or with a sign once any of
# `_SKIPPED` (what a spreadsheet import may trim) is taken off its start.
_SIGNS: Final = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_GUARDED_FIRST: Final = (*_SIGNS, "\t", "\r", "\n", "'")
_SKIPPED: Final = "\ufeff\u200b" + "".join(filter(str.isspace, map(chr, range(0x3001))))


def written_cell(value: str) -> str:
    """A CSV cell as the server writes `value` in it: a leading `'` where it
    guards it against formulas (and before one starting with `'`)."""
    guarded = value.startswith(_GUARDED_FIRST) or value.lstrip(_SKIPPED).startswith(_SIGNS)
    return f"'{value}" if guarded else value


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


class CsvRecords:
    """The rows of the CSV export at `path`, iterated once: each as (its
    seq's cell, the record it shows, its leaf_hash cell's bytes);
    UnknownFieldsError for a header that is no prefix of CSV_COLUMNS,
    RowWrittenOtherwiseError for a row the server writes otherwise (each
    cell as `written_cells`, quoted and ended as `csv.writer` does),
    ValueError for a row that is no record. Its header, as read before the
    first row, says which columns an older Sealtrail's export lacks
    (`first_missing`): read once, by the rows' reader."""

    def __init__(self, path: Path, tenant: str) -> None:
        self._path = path
        self._tenant = tenant
        self._header: tuple[str, ...] = ()

    @property
    def first_missing(self) -> str | None:
        """The first column of CSV_COLUMNS the header lacks (an older
        Sealtrail wrote it), else None; None before the header is read."""
        read = len(self._header)
        return CSV_COLUMNS[read] if 0 < read < len(CSV_COLUMNS) else None

    def __iter__(self) -> Iterator[tuple[str, bytes, bytes]]:
        with self._path.open(encoding="utf-8", newline="") as file:
            read: list[str] = []
            rows = csv.reader(_kept(file, read))
            header = tuple(next(rows, ()))
            if header != CSV_COLUMNS[: len(header)] or "leaf_hash" not in header:
                raise UnknownFieldsError("its header is not the columns this client knows")
            self._header = header
            _as_csv_writes(None, header, header, "".join(read))
            read.clear()
            for cells in rows:
                line = "".join(read)
                read.clear()
                if len(cells) != len(header):
                    raise ValueError(f"a row of {len(cells)} cells under {len(header)} columns")
                row = dict(zip(header, (_recorded(cell) for cell in cells), strict=True))
                record = _csv_record(row, self._tenant)
                shown = bytes.fromhex(row["leaf_hash"])
                written = written_cells(record, shown)
                for column, cell in zip(header, cells, strict=True):
                    if cell != written[column]:
                        seq, expected = record["seq"], _excerpt(written[column])
                        raise NotWrittenSoError(seq, column, cell, expected)
                _as_csv_writes(record["seq"], header, cells, line)
                yield str(record["seq"]), canonical(record).encode(), shown


def _kept(lines: Iterable[str], read: list[str]) -> Iterator[str]:
    """`lines`, each kept in `read` as it is read: a row's text as written."""
    for line in lines:
        read.append(line)
        yield line


_QUOTED_CELL: Final = re.compile(r'"(?:[^"]|"")*"')
_CSV_LINE: Final = io.StringIO()
_CSV_WRITER: Final = csv.writer(_CSV_LINE, lineterminator="\r\n")


def _csv_line(cells: Iterable[str]) -> str:
    """`cells` as the server's `csv.writer` writes them: quoted where a cell
    holds a comma, a quote or a line break, the line ended in CRLF."""
    _CSV_WRITER.writerow(cells)
    text = _CSV_LINE.getvalue()
    _CSV_LINE.seek(0)
    _CSV_LINE.truncate()
    return text


def _as_csv_writes(
    seq: int | None, header: tuple[str, ...], cells: Iterable[str], line: str
) -> None:
    """NotWrittenSoError naming the first cell of `line` (the header's, or
    the row of `seq`'s, as read) that the server's writer writes otherwise
    than it is written there (quoted needlessly, its line ended in LF)."""
    cells = list(cells)
    if line == _csv_line(cells):
        return
    at = 0
    for index, (column, cell) in enumerate(zip(header, cells, strict=True)):
        written = _csv_line([cell]).removesuffix("\r\n") if cell else ""
        end = "\r\n" if index == len(cells) - 1 else ","
        if not line.startswith(written + end, at):
            quoted = _QUOTED_CELL.match(line, at)
            found = quoted[0] if quoted else re.split("[,\r\n]", line[at:], maxsplit=1)[0]
            if seq is None:
                raise RowWrittenOtherwiseError(
                    None, f"its {column} {_excerpt(found)}, where the server writes"
                    f" {_excerpt(written)}", place="header"
                )  # fmt: skip
            raise NotWrittenSoError(seq, column, found, _excerpt(written))
        at += len(written) + len(end)


def _recorded(cell: str) -> str:
    """A cell's recorded value: one leading `'` off (the server gives every
    cell it neutralises against formulas one, and one starting with `'`)."""
    return cell[1:] if cell.startswith("'") else cell


def _csv_record(row: dict[str, str], tenant: str) -> dict[str, Any]:
    seq = int(row["seq"])
    record: dict[str, Any] = {"v": RECORD_VERSION, "tenant_id": tenant, "seq": seq}
    parts: dict[str, dict[str, Any]] = {"": record}
    for column, part, key in _CSV_TEXT:
        if row.get(column):
            parts.setdefault(part, {})[key] = row[column]
    for column, part, key in _CSV_JSON:
        if row.get(column):
            parts.setdefault(part, {})[key] = _loads(row[column], seq, column)
    for part in ("actor", "resource", "context", "recorded_by"):
        if part in parts:
            record[part] = parts[part]
    if "credential" in parts:
        record.setdefault("actor", {})["credential"] = parts["credential"]
    return record


def written_cells(record: dict[str, Any], leaf: bytes) -> dict[str, str]:
    """Each column's cell as the server's CSV encoder writes `record` (whose
    leaf is `leaf`): its value as `json.loads` reads it from the record,
    `changes` and `details` as `json.dumps(..., sort_keys=True)` writes
    them, `duration_ms` as the record does, each guarded (`written_cell`)."""
    written = {"seq": str(record["seq"]), "leaf_hash": leaf.hex()}
    for column, part, key in _CSV_TEXT:
        value = _part_of(record, part).get(key)
        written[column] = "" if value is None else str(value)
    for column, part, key in _CSV_JSON:
        value = _part_of(record, part).get(key)
        if value is None:
            written[column] = ""
        elif column == "duration_ms":
            written[column] = canonical(value)
        elif column == "http_status_code":
            written[column] = str(json.loads(canonical(value)))
        else:
            stored = json.loads(canonical(value))
            written[column] = json.dumps(stored, ensure_ascii=False, sort_keys=True)
    return {column: written_cell(text) for column, text in written.items()}


def _part_of(record: dict[str, Any], part: str) -> dict[str, Any]:
    if not part:
        return record
    if part == "credential":
        found: dict[str, Any] = record.get("actor", {}).get("credential", {})
        return found
    within: dict[str, Any] = record.get(part, {})
    return within


def json_records(path: Path) -> Iterator[tuple[str, bytes, bytes]]:
    """Each event of the JSON export at `path` (an array, each event on a
    line of its own) as (its seq, the record it shows, its leafHash's
    bytes); UnknownFieldsError for a member this client does not know,
    RowWrittenOtherwiseError for an event or an array the server writes
    otherwise (`json.dumps(event, ensure_ascii=False)` of the API's JSON
    mapping, as `MessageToDict` writes each value)."""
    with path.open(encoding="utf-8", newline="") as file:
        for text in _array_events(file):
            try:
                event = _loads(text, None, "event")
            except NamedTwiceError as twice:
                read = json.loads(text)
                seq = read.get("seq") if isinstance(read, dict) else None
                raise NamedTwiceError(_seq_named(seq), twice.name, "event") from None
            if not isinstance(event, dict):
                raise ValueError("an event that is no JSON object")
            seq = _seq(event.get("seq"))
            _as_json_writes(seq, event, text)
            record = _api_record(event, seq)
            yield str(seq), canonical(record).encode(), _leaf(seq, event.get("leafHash"))


_UNCLOSED: Final = "its array is not closed as the server closes it"


def _array_events(file: IO[str]) -> Iterator[str]:
    """The events of a JSON array as the server writes it (`[`, each event on
    a line of its own, each but the last followed by a comma, `]`, each line
    ended in LF; `[]` for none); RowWrittenOtherwiseError for any other."""
    first = file.readline()
    if first == "[]\n" and not file.read(1):
        return
    if first != "[\n":
        raise RowWrittenOtherwiseError(None, "its array does not open as the server writes it")
    text = file.readline()
    while True:
        following = file.readline()
        if not text.endswith("\n") or not following:
            raise RowWrittenOtherwiseError(None, _UNCLOSED)
        body = text[:-1]
        if following == "]\n":
            if body.endswith(",") or file.read(1):
                raise RowWrittenOtherwiseError(
                    None, "its array is not closed as the server closes it"
                )
            yield body
            return
        if not body.endswith(","):
            raise RowWrittenOtherwiseError(None, "its event is not followed by a comma and a line")
        yield body[:-1]
        text = following


def _seq_named(value: Any) -> int | str:
    """A seq as read, to name its row by: its number where it is one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return repr(value)


def _seq(value: Any) -> int:
    """An event's seq as `MessageToDict` writes an int64: its ASCII digits in a string."""
    if isinstance(value, str) and re.fullmatch("[1-9][0-9]*", value):
        return int(value)
    named = _seq_named(value)
    written = repr(str(named)) if isinstance(named, int) else "a seq's digits, in a string"
    raise NotWrittenSoError(named, "seq", value, written)


def _as_json_writes(seq: int, event: dict[str, Any], text: str) -> None:
    """RowWrittenOtherwiseError naming the first member of `event` (read
    from `text`) that the server writes otherwise: other spacing or
    escapes, or a number `MessageToDict` and `plain_numbers` write
    otherwise (a whole number as a float, a float beyond 2**53 as an int)."""
    if text == json.dumps(event, ensure_ascii=False):
        unlike = [member for member, value in event.items() if not _plain_numbers(value)]
        if not unlike:
            return
        member = unlike[0]
    else:
        member, written = "line", "{"
        for name, value in event.items():
            written += (
                f"{json.dumps(name, ensure_ascii=False)}: {json.dumps(value, ensure_ascii=False)}"
            )
            if not text.startswith(written):
                member = name
                break
            written += ", "
    raise RowWrittenOtherwiseError(
        seq, f"its {member} member is not written as the server writes JSON (its spacing,"
        " escapes or numbers)"
    )  # fmt: skip


def _plain_numbers(value: Any) -> bool:
    """Whether each number of `value` is as the server writes it in JSON:
    a whole number within 2**53 as an int, any other as a float."""
    if isinstance(value, float):
        return not (value.is_integer() and abs(value) <= _MAX_EXACT_INT)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= _MAX_EXACT_INT
    if isinstance(value, dict):
        return all(_plain_numbers(item) for item in value.values())
    if isinstance(value, list):
        return all(_plain_numbers(item) for item in value)
    return True


def _leaf(seq: int, value: Any) -> bytes:
    """An event's leafHash, as protobuf's JSON writes bytes: standard base64, padded."""
    try:
        leaf = base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except ValueError:
        leaf = None
    if leaf is None or base64.b64encode(leaf).decode() != value:
        written = "base64" if leaf is None else repr(base64.b64encode(leaf).decode())
        raise NotWrittenSoError(seq, "leafHash", value, written)
    return leaf


class _UnlikeError(ValueError):
    """A value its conversion finds written otherwise than the server writes
    it: `written`, how the server writes it (in words, or its repr)."""

    def __init__(self, written: str) -> None:
        super().__init__(written)
        self.written = written


def _prefixed(prefix: str) -> Callable[[Any], str]:
    """An enum's JSON name (`SEVERITY_WARNING`) as the record writes it."""

    def name(value: Any) -> str:
        if isinstance(value, str) and re.fullmatch(f"{prefix}[A-Z0-9_]+", value):
            return value.removeprefix(prefix).lower()
        if isinstance(value, str) and re.fullmatch(f"{prefix}[A-Z0-9_]+", value.upper()):
            raise _UnlikeError(repr(value.upper()))
        raise _UnlikeError(f"a {prefix}* name")

    return name


# A time as protobuf's JSON writes a Timestamp: UTC, `Z`, with 0, 3, 6 or 9
# fractional digits (the fewest that hold it).
_TIMESTAMP: Final = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{3}|[0-9]{6}|[0-9]{9}))?Z"
)
_ANY_TIME: Final = "'YYYY-MM-DDTHH:MM:SS.ffffffZ'"


def _time(value: Any) -> str:
    """A protobuf JSON timestamp, exactly as protobuf writes a record's time,
    as the record writes it: six fractional digits. Read with no time zone:
    never the verifier's own."""
    match = _TIMESTAMP.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _UnlikeError(_written_time(value))
    seconds, fraction = match[1], match[2] or ""
    datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S")  # a day and a time that are
    nanos = int(fraction.ljust(9, "0"))
    if nanos % 1000:
        raise _UnlikeError("a time to the microsecond")
    micros = nanos // 1000
    written = _protobuf_time(seconds, micros)
    if value != written:
        raise _UnlikeError(repr(written))
    return f"{seconds}.{micros:06d}Z"


def _protobuf_time(seconds: str, micros: int) -> str:
    if not micros:
        return f"{seconds}Z"
    if not micros % 1000:
        return f"{seconds}.{micros // 1000:03d}Z"
    return f"{seconds}.{micros:06d}Z"


def _written_time(value: Any) -> str:
    """How the server writes the moment `value` says, if it says one with its
    offset; else what it writes in words."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        return _ANY_TIME
    utc = (moment - moment.utcoffset()).replace(tzinfo=None)  # type: ignore[operator]
    return repr(_protobuf_time(utc.isoformat(timespec="seconds"), utc.microsecond))


def _as_is(value: Any) -> Any:
    return value


# An API event's members (JSON mapping) and how each is written in the
# record: (member, record key, conversion); `_PARTS` the objects in it.
_EVENT: Final[dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "id": ("id", _as_is), "seq": ("seq", _seq), "tenantId": ("tenant_id", _as_is),
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
        "roles": ("roles", _as_is),
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


def _api_record(event: dict[str, Any], seq: int) -> dict[str, Any]:
    record: dict[str, Any] = {"v": RECORD_VERSION}
    for member, value in event.items():
        if member == "leafHash":
            continue
        if member == "changes":
            record["changes"] = [_change(change) for change in value]
        elif member in _EVENT:
            key, written = _EVENT[member]
            record[key] = _converted(seq, member, written, value)
        elif member in _PARTS:
            record.update(_part(seq, member, value))
        else:
            raise UnknownFieldsError(f"its events have a member {member!r}")
    return record


def _converted(seq: int, member: str, written: Callable[[Any], Any], value: Any) -> Any:
    try:
        return written(value)
    except _UnlikeError as unlike:
        raise NotWrittenSoError(seq, member, value, unlike.written) from None


def _part(seq: int, member: str, value: dict[str, Any]) -> dict[str, Any]:
    key, fields = _PARTS[member]
    part: dict[str, Any] = {}
    for name, item in value.items():
        if name == "credential" and member == "actor":
            part.update(_part(seq, "credential", item))
        elif name in fields:
            inner, written = fields[name]
            part[inner] = _converted(seq, f"{member}.{name}", written, item)
        else:
            raise UnknownFieldsError(f"its events' {member} has a member {name!r}")
    if not part:  # protobuf's JSON leaves out a message left unset
        raise NotWrittenSoError(seq, member, value, "none")
    return {key: part}


def _change(change: dict[str, Any]) -> dict[str, Any]:
    unknown = change.keys() - {"field", "before", "after"}
    if unknown:
        raise UnknownFieldsError(f"its events' changes have a member {min(unknown)!r}")
    return dict(change)
