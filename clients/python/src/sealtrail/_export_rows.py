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
from datetime import date, datetime
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
    try:
        return _ONCE_EACH.decode(text)
    except _TwiceError as twice:
        raise NamedTwiceError(seq, twice.name, where) from None


class _TwiceError(Exception):
    """An object naming `name` twice, as `_ONCE_EACH` reads it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) == len(pairs):
        return members
    seen: set[str] = set()
    for name, _ in pairs:  # the first named again, as read
        if name in seen:
            raise _TwiceError(name)
        seen.add(name)
    raise AssertionError("unreachable: a dict smaller than its pairs names one twice")


# Made once: `json.loads` given a hook makes a decoder per call.
_ONCE_EACH: Final = json.JSONDecoder(object_pairs_hook=_once_each)


# What the server's CSV encoder guards against formulas with a leading `'`
# (formats.neutralise, held to it by tests/unit/test_export_check.py): a cell
# starting with one of `_GUARDED_FIRST`, or with a sign once any of
# `_SKIPPED` (what a spreadsheet import may trim) is taken off its start.
_SIGNS: Final = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_GUARDED_FIRST: Final = (*_SIGNS, "\t", "\r", "\n", "'")
_SKIPPED: Final = "\ufeff\u200b" + "".join(filter(str.isspace, map(chr, range(0x3001))))
# ASCII a cell may start with and be written as it is, whatever follows:
# neither guarded nor skipped (most cells: an id, a word, a digit, `{`); ""
# for an empty cell.
_UNGUARDED_FIRST: Final = frozenset(
    char for char in map(chr, range(0x80)) if char not in _GUARDED_FIRST + tuple(_SKIPPED)
) | {""}


def written_cell(value: str) -> str:
    """A CSV cell as the server writes `value` in it: a leading `'` where it
    guards it against formulas (and before one starting with `'`)."""
    if value[:1] in _UNGUARDED_FIRST:
        return value
    guarded = value.startswith(_GUARDED_FIRST) or value.lstrip(_SKIPPED).startswith(_SIGNS)
    return f"'{value}" if guarded else value


# JSON as RFC 8785 writes most records (as the server's canonical_json does):
# members sorted, no space, strings as json.dumps escapes them. Made once:
# `json.dumps` given any argument makes an encoder per call.
_COMPACT: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
# What in _COMPACT's text RFC 8785 may write otherwise: a number (after `[`,
# `,`, `:` or first) of 16 digits or more (beyond 2**53, JCS writes its
# double), an integral float (`1.0`, JCS `1`), one with an exponent (`1e+16`,
# `1e-07`), one not finite; a character at or above U+D800 (JCS sorts keys by
# UTF-16 code units, Python by code points; a lone surrogate). Sought in
# strings too: a false alarm costs a walk, never a wrong text.
_UNLIKE_JCS: Final = re.compile(
    r"[:,\[](?:-?[0-9](?:[0-9]{15}|[0-9]*\.0(?![0-9])|[0-9.]*e)|-?Infinity|NaN)"
)


def canonical(value: Any) -> str:
    """`value` as RFC 8785 (JCS) writes it (`walked_canonical`), by the C
    encoder where its text is JCS's (every record but one holding a float
    Python writes otherwise, a huge int or a key sorted otherwise)."""
    if isinstance(value, dict | list):
        text = compact_if_canonical(value)
    elif isinstance(value, float):
        text = repr(value)  # JCS's digits, and its form but for these
        if text.endswith(".0") or "e" in text or not text[-1].isdigit():
            text = None
    else:
        text = None
    return walked_canonical(value) if text is None else text


def compact_if_canonical(value: dict[str, Any] | list[Any]) -> str | None:
    """`value` written by the C encoder (`_COMPACT`) where that is RFC 8785's
    text of it, else None: a float Python writes otherwise, a huge int, a key
    sorted otherwise, or no JSON value (the walk refuses it)."""
    try:
        text = _COMPACT.encode(value)
    except (TypeError, ValueError):
        return None
    if _UNLIKE_JCS.search(text) or not (text.isascii() or max(text) < "\ud800"):
        return None
    return text


def walked_canonical(value: Any) -> str:
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
        return "[" + ",".join(walked_canonical(item) for item in value) + "]"
    if isinstance(value, dict):
        members = sorted(value.items(), key=lambda item: item[0].encode("utf-16-be"))
        return (
            "{" + ",".join(f"{walked_canonical(k)}:{walked_canonical(v)}" for k, v in members) + "}"
        )
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
                # Each cell's recorded value: one leading `'` off (the server gives
                # every cell it neutralises against formulas one, and one starting with `'`).
                recorded = [cell[1:] if cell[:1] == "'" else cell for cell in cells]
                row = dict(zip(header, recorded, strict=True))
                record = _csv_record(row, self._tenant)
                shown = bytes.fromhex(row["leaf_hash"])
                text = compact_if_canonical(record)
                written = written_cells(record, shown, canonical_already=text is not None)
                if [written[column] for column in header] != cells:
                    for column, cell in zip(header, cells, strict=True):
                        if cell != written[column]:
                            seq, expected = record["seq"], _excerpt(written[column])
                            raise NotWrittenSoError(seq, column, cell, expected)
                _as_csv_writes(record["seq"], header, cells, line)
                yield str(record["seq"]), (text or walked_canonical(record)).encode(), shown


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


def _csv_record(row: dict[str, str], tenant: str) -> dict[str, Any]:
    seq = int(row["seq"])
    record: dict[str, Any] = {"v": RECORD_VERSION, "tenant_id": tenant, "seq": seq}
    parts: dict[str, dict[str, Any]] = {"": record}
    for column, part, key in _CSV_TEXT:
        if text := row.get(column):
            parts.setdefault(part, {})[key] = text
    for column, part, key in _CSV_JSON:
        if text := row.get(column):
            parts.setdefault(part, {})[key] = _loads(text, seq, column)
    for part in ("actor", "resource", "context", "recorded_by"):
        if part in parts:
            record[part] = parts[part]
    if "credential" in parts:
        record.setdefault("actor", {})["credential"] = parts["credential"]
    return record


def written_cells(
    record: dict[str, Any], leaf: bytes, *, canonical_already: bool = False
) -> dict[str, str]:
    """Each column's cell as the server's CSV encoder writes `record` (whose
    leaf is `leaf`): its value as `json.loads` reads it from the record,
    `changes` and `details` as `json.dumps(..., sort_keys=True)` writes
    them, `duration_ms` as the record does, each guarded (`written_cell`).
    `canonical_already`: `record`'s values read back from its canonical
    text as they are (`compact_if_canonical` wrote it), so not read again."""
    parts = _parts_of(record)
    written = {"seq": str(record["seq"]), "leaf_hash": leaf.hex()}
    for column, part, key in _CSV_TEXT:
        value = parts[part].get(key)
        text = "" if value is None else str(value)
        written[column] = text if text[:1] in _UNGUARDED_FIRST else written_cell(text)
    for column, part, key in _CSV_JSON:
        value = parts[part].get(key)
        if value is None:
            written[column] = ""
        elif column == "duration_ms":
            written[column] = canonical(value)
        elif column == "http_status_code":
            written[column] = str(json.loads(canonical(value)))
        else:
            stored = value if canonical_already else json.loads(canonical(value))
            written[column] = _SORTED.encode(stored)
    for column in _CSV_OTHER_COLUMNS:
        text = written[column]
        written[column] = text if text[:1] in _UNGUARDED_FIRST else written_cell(text)
    return written


_CSV_OTHER_COLUMNS: Final = ("seq", "leaf_hash", *(column for column, _, _ in _CSV_JSON))


# What the server's CSV encoder writes changes and details with, made once:
# `json.dumps(value, ensure_ascii=False, sort_keys=True)`.
_SORTED: Final = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


def _parts_of(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each object of `record` a CSV column's value is in, by its name in
    _CSV_TEXT and _CSV_JSON (`""` the record), `{}` for one it lacks."""
    actor: dict[str, Any] = record.get("actor", {})
    return {
        "": record, "actor": actor, "credential": actor.get("credential", {}),
        "resource": record.get("resource", {}), "context": record.get("context", {}),
        "recorded_by": record.get("recorded_by", {}),
    }  # fmt: skip


def json_records(path: Path) -> Iterator[tuple[str, bytes, bytes]]:
    """Each event of the JSON export at `path` (an array, each event on a
    line of its own) as (its seq, the record it shows, its leafHash's
    bytes); UnknownFieldsError for a member this client does not know,
    RowWrittenOtherwiseError for an event or an array the server writes
    otherwise (`json.dumps(event, ensure_ascii=False)` of the API's JSON
    mapping, as `MessageToDict` writes each value)."""
    with path.open(encoding="utf-8", newline="") as file:
        for text in _array_events(file):
            read = json.loads(text)
            # Written as the server writes what it reads (most events): its
            # objects name each member once, as that writing does.
            as_written = isinstance(read, dict) and text == _API_JSON.encode(read)
            try:
                event = read if as_written else _loads(text, None, "event")
            except NamedTwiceError as twice:
                seq = read.get("seq") if isinstance(read, dict) else None
                raise NamedTwiceError(_seq_named(seq), twice.name, "event") from None
            if not isinstance(event, dict):
                raise ValueError("an event that is no JSON object")
            seq = _seq(event.get("seq"))
            _as_json_writes(seq, event, text, as_written=as_written)
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


_SEQ_DIGITS: Final = re.compile("[1-9][0-9]*")


def _seq(value: Any) -> int:
    """An event's seq as `MessageToDict` writes an int64: its ASCII digits in a string."""
    if isinstance(value, str) and _SEQ_DIGITS.fullmatch(value):
        return int(value)
    named = _seq_named(value)
    written = repr(str(named)) if isinstance(named, int) else "a seq's digits, in a string"
    raise NotWrittenSoError(named, "seq", value, written)


def _as_json_writes(
    seq: int, event: dict[str, Any], text: str, *, as_written: bool = False
) -> None:
    """RowWrittenOtherwiseError naming the first member of `event` (read
    from `text`) that the server writes otherwise: other spacing or
    escapes, or a number `MessageToDict` and `plain_numbers` write
    otherwise (a whole number as a float, a float beyond 2**53 as an int).
    `as_written`: `text` is already known the server's writing of `event`."""
    if as_written or text == _API_JSON.encode(event):
        if not _MAYBE_UNPLAIN.search(text):
            return
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


# The server's writing of an event, made once: `json.dumps(event, ensure_ascii=False)`.
_API_JSON: Final = json.JSONEncoder(ensure_ascii=False)
# In its text, a number `_plain_numbers` may find otherwise than the server
# writes it (after `[` or `: `, `, `): 16 digits or more (beyond 2**53), or
# integral (`83.0`). Sought in strings too: a false alarm costs a walk.
_MAYBE_UNPLAIN: Final = re.compile(r"[\[ ]-?[0-9](?:[0-9]{15}|[0-9]*\.0(?![0-9]))")


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

    named = re.compile(f"{prefix}[A-Z0-9_]+")

    def name(value: Any) -> str:
        if isinstance(value, str) and named.fullmatch(value):
            return value.removeprefix(prefix).lower()
        if isinstance(value, str) and named.fullmatch(value.upper()):
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
    _day_and_time(seconds)
    nanos = int(fraction.ljust(9, "0"))
    if nanos % 1000:
        raise _UnlikeError("a time to the microsecond")
    micros = nanos // 1000
    written = _protobuf_time(seconds, micros)
    if value != written:
        raise _UnlikeError(repr(written))
    return f"{seconds}.{micros:06d}Z"


def _day_and_time(seconds: str) -> None:
    """ValueError unless `seconds` (`YYYY-MM-DDTHH:MM:SS`, its digits
    matched) is a day and a time, as `datetime.strptime(seconds,
    "%Y-%m-%dT%H:%M:%S")` reads one, many times faster (two a row)."""
    date.fromisoformat(seconds[:10])
    if seconds[11:13] > "23" or seconds[14:16] > "59" or seconds[17:19] > "59":
        raise ValueError(f"no time of day: {seconds[11:]}")


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
            record[key] = value if written is _as_is else _converted(seq, member, written, value)
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
            if written is _as_is:
                part[inner] = item
            else:
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
