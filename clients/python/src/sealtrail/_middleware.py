"""What the ASGI and WSGI middlewares share (sealtrail.asgi, sealtrail.wsgi; ADR 0139):
the request as the user's callables see it, the event recorded of it, and what
a record that failed does.

Nothing here imports a web framework: a Starlette route is read by its
attributes (`path_format`, `path`), never by its class."""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace

from sealtrail._convert import EventFields, build_event
from sealtrail._correlation import request_id
from sealtrail._errors import SealtrailError
from sealtrail.v1 import event_pb2

log = logging.getLogger("sealtrail.middleware")

STATE_CHANGING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The server's limits on what the middleware takes from the request itself.
_MAX_ACTION: Final = 128
_MAX_ROUTE: Final = 512
_MAX_USER_AGENT: Final = 1024
_MAX_DURATION_MS: Final = 86_400_000.0
# What a path keeps as it is; anything else (`?` and `#` decoded from `%3F`,
# controls, spaces, non-ASCII) is percent-encoded again: the server refuses a
# route with a query string or a control character (ADR 0136).
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~{}<>%"
_TEMPLATE_PARAMETER: Final = re.compile(r"\{.*\}|<.*>|:.+|\*.*")
_NOT_WORD: Final = re.compile(r"[^a-z0-9_]+")
# The actor of a request whose `actor` callable named no one (ADR 0139).
ANONYMOUS: Final = "anonymous"


@dataclass(frozen=True, slots=True)
class AuditedRequest:
    """A request as the middleware's callables (`actor`, `action`, `resource`,
    `skip`) see it, once its response's status is known.

    `route`: the framework's route template (`/v1/templates/{id}`) where it gives
    one, else the path; never the query string. `headers`: names in lower case,
    repeated ones joined by ", ". `client_ip`: the peer's address ("" if it is no
    IP address). `scope`: the ASGI scope or WSGI environ, as the application left
    it (Starlette's `scope["state"]`, `scope["user"]`, `scope["path_params"]`)."""

    method: str
    route: str
    path: str
    status_code: int
    headers: Mapping[str, str]
    client_ip: str
    scope: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Said:
    """What a request's callables said (`Recorder.said`): its fields (None:
    `skip` said so), or the error one of them raised, raised by `fields()`."""

    _fields: EventFields | None
    _error: Exception | None

    def fields(self) -> EventFields | None:
        if self._error is not None:
            raise self._error
        return self._fields


Actor: TypeAlias = Callable[[AuditedRequest], "str | EventFields | None"]
Action: TypeAlias = Callable[[AuditedRequest], str]
Resource: TypeAlias = Callable[[AuditedRequest], "tuple[str, str] | EventFields | None"]
Skip: TypeAlias = Callable[[AuditedRequest], bool]


def derived_action(request: AuditedRequest) -> str:
    """The default action: `http.` and the route's literal segments, lowercased,
    then the method: `POST /v1/templates/{id}/publish` is
    `http.v1.templates.publish.post`. A segment that is a template parameter
    (`{id}`, `<int:id>`, `:id`) or does not begin with a letter (`42`, a UUID
    starting with a digit) is left out; other characters than `a-z0-9_`
    become `_`. Segments are dropped from the end to keep within 128
    characters. The `http.` prefix keeps it clear of the actions Sealtrail
    reserves (`retention.*`, its own API's)."""
    words = []
    for segment in request.route.split("/"):
        if _TEMPLATE_PARAMETER.fullmatch(segment):
            continue
        word = _NOT_WORD.sub("_", urllib.parse.unquote(segment).lower()).strip("_")
        if word[:1].isalpha() and word[:1].isascii():
            words.append(word)
    verb = _NOT_WORD.sub("_", request.method.lower()).strip("_") or "request"
    if not verb[0].isalpha():
        verb = f"m{verb}"
    while words and len(".".join(["http", *words, verb])) > _MAX_ACTION:
        words.pop()
    return ".".join(["http", *words, verb])


def outcome_of(status_code: int) -> str:
    """2xx and 3xx: success; 401 and 403: denied; anything else: failure."""
    if 200 <= status_code < 400:
        return "success"
    if status_code in (401, 403):
        return "denied"
    return "failure"


def route_of_path(path: str) -> str:
    """A raw path as the server takes it for `http_route`: what a query string
    or control character would be percent-encoded, cut to 512 characters
    (never inside a `%XX`)."""
    route = urllib.parse.quote(path or "/", safe=_PATH_SAFE)
    if len(route) > _MAX_ROUTE:
        route = route[:_MAX_ROUTE]
        escape = route.rfind("%", _MAX_ROUTE - 2)
        if escape != -1:
            route = route[:escape]
    return route


def client_ip_of(host: object) -> str:
    """`host` if it is an IP address (a test client's `testclient` is not)."""
    if not isinstance(host, str):
        return ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return ""
    return host


@contextmanager
def _request_trace(headers: Mapping[str, str]) -> Iterator[None]:
    """The request's own trace context (`traceparent`), made current while the
    event is recorded, unless a span already is (an OpenTelemetry middleware's
    around this one): the client sends the current one with the Record."""
    if trace.get_current_span().get_span_context().is_valid:
        yield
        return
    token = otel_context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        otel_context.detach(token)


class Recorder:
    """The event of a request and what a failed record does; one per middleware."""

    def __init__(
        self,
        *,
        actor: Actor,
        action: Action | None,
        resource: Resource | None,
        skip: Skip | None,
        methods: Collection[str],
        request_id_header: str | None,
        fail_closed: bool,
    ) -> None:
        if not callable(actor):
            raise TypeError("actor: a callable taking the AuditedRequest is required")
        self.actor = actor
        self.action = action or derived_action
        self.resource = resource
        self.skip = skip
        self.methods = frozenset(method.upper() for method in methods)
        self.request_id_header = request_id_header.lower() if request_id_header else None
        self.fail_closed = fail_closed
        self._lock = threading.Lock()
        self._unrecorded = 0
        self._counter = metrics.get_meter("sealtrail").create_counter(
            "sealtrail.middleware.unrecorded",
            unit="{request}",
            description="Requests the audit middleware could not record",
        )

    @property
    def unrecorded(self) -> int:
        with self._lock:
            return self._unrecorded

    def audits(self, method: str) -> bool:
        return method.upper() in self.methods

    def said(self, request: AuditedRequest) -> Said:
        """What the callables (`skip`, `action`, `resource`, `actor`) say of the
        request, asked now (WSGI: while the framework's request is current); an
        error one raises is kept, raised when the event is made."""
        try:
            return Said(self._asked(request), None)
        except Exception as error:
            return Said(None, error)

    def _asked(self, request: AuditedRequest) -> EventFields | None:
        if self.skip is not None and self.skip(request):
            return None
        fields: EventFields = {"action": self.action(request)}
        if self.resource is not None:
            resource = self.resource(request)
            if isinstance(resource, tuple):
                fields["resource_type"], fields["resource_id"] = resource
            elif resource is not None:
                fields.update(resource)
        actor = self.actor(request)
        if isinstance(actor, str):
            fields["actor_id"] = actor
        elif actor is not None:
            fields.update(actor)
        if not fields.get("actor_id"):  # None, "" (an empty header), fields without one
            fields["actor_id"] = ANONYMOUS
        return fields

    def event(
        self, request: AuditedRequest, *, duration_ms: float, cut: bool, said: Said | None = None
    ) -> event_pb2.Event | None:
        """The Event to record, or None when `skip` says so. `cut`: the response
        did not end as the application meant (it raised): a failure whatever
        its status. `said`: the callables' answer, asked before (else now)."""
        asked = (said or self.said(request)).fields()
        if asked is None:
            return None
        fields: EventFields = {
            "outcome": "failure" if cut else outcome_of(request.status_code),
            "http_method": request.method,
            "http_route": request.route,
            "http_status_code": request.status_code,
        }
        if 0 < duration_ms < _MAX_DURATION_MS:
            fields["duration_ms"] = duration_ms
        if request.client_ip:
            fields["ip"] = request.client_ip
        if user_agent := request.headers.get("user-agent", "")[:_MAX_USER_AGENT]:
            fields["user_agent"] = user_agent
        fields.update(asked)  # a trusted proxy's `ip` from `actor` overrides the peer's
        return build_event(**fields)

    @contextmanager
    def correlated(self, request: AuditedRequest) -> Iterator[None]:
        """The context to record in: the request's id (its header, if any; one
        that is no UUID is replaced, as `sealtrail.request_id` does) and its trace."""
        sent = request.headers.get(self.request_id_header) if self.request_id_header else None
        with request_id(sent) if sent else nullcontext(), _request_trace(request.headers):
            yield

    @contextmanager
    def recording(
        self,
        request: AuditedRequest,
        *,
        duration_ms: float,
        cut: bool,
        raising: bool,
        said: Said | None = None,
    ) -> Iterator[event_pb2.Event | None]:
        """The event to record (None when `skip` says so, or when making it
        failed), made in the request's context (`correlated`); a failure in the
        block, or in making the event, is as `failed` says, raised only if
        `raising` (fail-closed, and no error of the application's pending)."""
        try:
            event = self.event(request, duration_ms=duration_ms, cut=cut, said=said)
        except Exception as error:
            self._failed(request, error, raising=raising)
            event = None
        try:
            with self.correlated(request) if event is not None else nullcontext():
                yield event
        except Exception as error:
            self._failed(request, error, raising=raising)

    def _failed(self, request: AuditedRequest, error: Exception, *, raising: bool) -> None:
        self.failed(request, error)
        if raising and self.fail_closed:
            raise error

    def failed(self, request: AuditedRequest, error: Exception) -> None:
        """A record that failed: logged and counted, then raised if fail-closed."""
        with self._lock:
            self._unrecorded += 1
        self._counter.add(1)
        if isinstance(error, SealtrailError):
            log.error(
                "the audit record of %s %s (status %d) failed: %s",
                request.method,
                request.route,
                request.status_code,
                error,
            )
        else:  # the callables' or the fields' own: the traceback says where
            log.error(
                "the audit record of %s %s (status %d) failed",
                request.method,
                request.route,
                request.status_code,
                exc_info=error,
            )


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading)."""
    return (time.perf_counter() - started) * 1000.0
