"""The server's log lines: plain text by default, or JSON lines
(SEALTRAIL_LOG_FORMAT=json). Inside a call, every line carries the call's
request id and the trace and span it was logged in, so a line leads to the
trace and to the call's audit events.

A traceback says a database error as `store.db_errors.named` does, by its
primary message and SQLSTATE: PostgreSQL's error whole, its last line,
quotes the values it refused (`DETAIL: Failing row contains (...)`, a row
whole), which the server's log must not keep."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO

from opentelemetry import trace

from .context import current_request_id

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# C0 and C1 controls, and the separators some readers end a line at.
_LINE_BREAKERS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Those of them JSON does not escape: DEL and the C1 controls (0x9b is a
# terminal's CSI: a logged value moved the cursor of whoever tailed the log),
# and the line separators.
_JSON_UNESCAPED: Final = {c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), 0x2028, 0x2029)}


def _escaped(found: re.Match[str]) -> str:
    return found[0].encode("unicode_escape").decode()


def _without_values(text: str, error: BaseException | None) -> str:
    """`text`, a traceback of `error`, with each database error in its chain
    (causes, contexts, a group's members) said by `named`, not whole."""
    # Here, not above: the command line's logging is set up before `--help`.
    import psycopg

    from ..store.db_errors import named

    seen: set[int] = set()
    left = [error] if error is not None else []
    while left:
        each = left.pop()
        if id(each) in seen:
            continue
        seen.add(id(each))
        if isinstance(each, psycopg.Error) and (whole := str(each)) != (said := named(each)):
            text = _said_instead(text, whole, said)
        left.extend(e for e in (each.__cause__, each.__context__) if e is not None)
        if isinstance(each, BaseExceptionGroup):
            left.extend(each.exceptions)
    return text


def _said_instead(text: str, whole: str, said: str) -> str:
    """`text` with `whole` said as `said`, wherever it starts on a line and
    however its lines are drawn: a group's traceback writes its members'
    lines each after a margin (`    | DETAIL:  Key (...)=(...)`), after each
    line break `str.splitlines` knows (textwrap.indent's): a `\\r`, a form
    feed or a U+2028 in a refused value, a caller's, too."""
    first, *rest = whole.splitlines(keepends=True)
    if not rest:
        return text.replace(whole, said)
    # The margin before each of its lines is the first's, the text before it
    # aside. Taken whole (`*+`, never given back): tried at each length, a line
    # of many spaces took seconds (quadratic), and a log line blocks its loop.
    written = re.compile(
        r"^(?P<margin>[ |]*+)(?P<before>[^\n]*?)"
        + re.escape(first)
        + "".join(r"(?P=margin)" + re.escape(line) for line in rest),
        re.MULTILINE,
    )
    return written.sub(lambda found: found["margin"] + found["before"] + said, text)


class _DatabaseErrorsNamed(logging.Formatter):
    """A formatter whose tracebacks say database errors by `named`."""

    def formatException(self, ei: Any) -> str:
        return _without_values(super().formatException(ei), ei[1])

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info:
            record.exc_text = None  # another handler's, whole: formatted again
        return super().format(record)


class CorrelationFilter(logging.Filter):
    """Puts `request_id`, `trace_id` and `span_id` on every record ("" when
    not in a call or not in a trace)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = trace.format_trace_id(span.trace_id)
            record.span_id = trace.format_span_id(span.span_id)
        else:
            record.trace_id = record.span_id = ""
        return True


class TextFormatter(_DatabaseErrorsNamed):
    """TEXT_FORMAT, then ` request_id=... trace_id=...` for what is known."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line, its control characters and line separators escaped (`\\n`,
        `\\u2028`): a logged value (an actor id a tenant chose) wrote lines of
        its own, a forged ERROR among them (helper-140). A traceback, added
        after, keeps its lines."""
        return _LINE_BREAKERS.sub(_escaped, super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(
            f"{name}={value}"
            for name in ("request_id", "trace_id")
            if (value := getattr(record, name, ""))
        )
        if not extra:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} {extra}{newline}{rest}"


class JsonFormatter(_DatabaseErrorsNamed):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message,
    request_id / trace_id / span_id when known, exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "trace_id", "span_id"):
            value = getattr(record, name, "")
            if value:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # JSON leaves these as they are: some readers end a line at them, some act on them.
        return json.dumps(entry, ensure_ascii=False, default=str).translate(_JSON_UNESCAPED)


def log_handler(log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing `log_format` lines, with the correlation ids, to `stream` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    return handler


# OpenTelemetry warns of each malformed trace header it parses, with the
# header's text, before any token is checked: anyone could fill the log.
_CALLER_WRITTEN_WARNINGS: Final = (
    "opentelemetry.trace.span",
    "opentelemetry.trace.propagation.tracecontext",
    "opentelemetry.baggage.propagation",
)


def configure_logging(*, level: int, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """The root logger writes through `log_handler` only; OpenTelemetry's
    warnings about the headers callers send are not written."""
    logging.basicConfig(level=level, handlers=[log_handler(log_format, stream)], force=True)
    for name in _CALLER_WRITTEN_WARNINGS:
        logging.getLogger(name).setLevel(max(level, logging.ERROR))
