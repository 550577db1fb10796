"""The web console: a page and a small JSON API on an HTTP port of its own
(ADR 0018, docs/console.md).

Every API request is carried out as a gRPC call to this same server, over a
private Unix socket, with the token the browser sent: the console has no
access of its own, so roles, tenant isolation, audited reads and errors are
exactly the API's. The token lives in the browser tab's session storage and
travels in `Authorization: Bearer` on each request; nothing is kept here. A
call with a token a sign-in through the identity provider minted says the
person it was minted for (`x-sealtrail-on-behalf-of`, ADR 0146), for its
records to name them as a backend's name the people it reads for.

    GET  /                      the page (static files, no CDN)
    GET  /api/signin            checks a token (GetVerifierKeys: any reading role)
    GET  /api/events            Query: filter in the query string, ?page_token=
    GET  /api/counts            CountEvents: the same filter, per ?group_by=hour|day, in
                                ?time_zone= (an IANA zone; UTC's without): the page's chart;
                                or per action|actor|actor_type|resource_type|country|outcome|
                                severity|category|http_route|http_status|credential|ip|
                                resource|recorded_by, the largest ?limit= groups: its
                                Breakdown panel, each group's request durations with
                                ?measure=duration_avg|duration_p50|duration_p95|
                                duration_p99|duration_max
    GET  /api/stream            StreamEvents from ?after_seq=, as NDJSON lines
    GET  /api/export            Export ?format=csv|ndjson|json, as NDJSON lines: the file's
                                chunks ({"chunk": base64}), then {"manifest": ...}
    GET  /api/proof             GetInclusionProof ?seq=, with the checkpoint
    GET  /api/actions           ListActionCatalog ?limit=&page_token=: a page of the tenant's
                                actions, each with its count, last occurrence and
                                description (any reading role)

Each API request is a traced operation: a SERVER span of the console's
(`GET /api/events`, when tracing is on), child of the browser's W3C trace
context if its request carries one (`traceparent`), and the parent of the
gRPC calls it makes, whose metadata carries it on as any client's does: a
console search is one trace with the service's spans for it. The answer names
its trace (`X-Trace-Id`), errors and streams included, for the page to show
in its errors and support to find it. With tracing off, the browser's trace
context is still passed on (the service records it with the call, as a
client's), and named back; none is made up.

An admin's (ADR 0069): the page shows them to an admin token only, which the
sign-in's answer names (the API tells its console the token's role); another
role's calls are refused by the API itself.

    GET    /api/tokens                  ListTokens ?page_token=
    POST   /api/tokens                  CreateToken {role, name, expire_time?}
    POST   /api/tokens/{id}/revoke      RevokeToken {}
    GET    /api/sinks                   ListSinks; a sink with dead letters waiting and no
                                        last error with its `oldest_dead_letter`
                                        (ListDeadLetters, a page of one)
    POST   /api/sinks                   CreateSink {sink: the API's Sink as JSON, filter?,
                                        from_beginning?}
    PUT    /api/sinks/{id}              UpdateSink {sink, filter?, etag}: name, filter, format
                                        and destination (empty secrets kept; never `paused`)
    PATCH  /api/sinks/{id}              UpdateSink {paused, etag}, `paused` only
    DELETE /api/sinks/{id}              DeleteSink {etag}
    GET    /api/sinks/{id}/dead-letters ListDeadLetters ?page_token=
    POST   /api/sinks/{id}/replay       ReplaySink {seq_range | window | dead_letter_id}
    GET    /api/alert-rules             ListAlertRules
    POST   /api/alert-rules             CreateAlertRule {rule: the API's AlertRule as JSON, filter?}
    PUT    /api/alert-rules/{id}        UpdateAlertRule {rule, filter?, etag}: name, condition,
                                        severity and sinks (never `disabled`)
    PATCH  /api/alert-rules/{id}        UpdateAlertRule {disabled, etag}, `disabled` only
    DELETE /api/alert-rules/{id}        DeleteAlertRule {etag}
    GET    /api/retention               GetRetentionPolicy (the policy and the legal hold)
    POST   /api/retention/preview       PreviewRetentionPolicy {policy, etag}, with `shortened`
    PUT    /api/retention               UpdateRetentionPolicy {policy, etag}
    PUT    /api/legal-hold              SetLegalHold {on, reason?, etag}
    POST   /api/erasure                 EraseTenant {confirm_tenant_id}: the receipt, and
                                        `check`, its signature checked with the keys
                                        the deployment registers (GetVerifierKeys)
    PUT    /api/actions/{action}        SetActionDescription {description?, category?}: changes
                                        those given, "" clears (POST too)

A rule's or a sink's `filter` is the event search's parameters as a JSON
object of strings, parsed as the search's query string is (ADR 0069,
addenda): the page builds it with the search's own filter form.

A change is a JSON object with the token in `Authorization` (never a cookie:
the console sets none and reads none), from the console's own origin when the
browser says where it comes from (Origin, Sec-Fetch-Site); a change of a sink,
a rule or the hold carries the etag it was read with, so a page that went stale
cannot undo what it never showed (ABORTED, 409). An error names the field it
is about (`fields`: the API's BadRequest field violations, or the console's
own), for the page to mark the input that holds it.

An error before an answer has begun is its HTTP status with a JSON body; one
after (a stream or an export cut by a revocation, an erasure, an outage) is a
last line {"error": ..., "code": ...}: a second answer cannot be sent, and an
answer that just stops could pass for a complete one. An export without its
manifest line is not complete, whatever the connection did.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import base64
import ipaddress
import json
import logging
import math
import re
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final, cast

import grpc
from aiohttp import ClientConnectionResetError, HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf import field_mask_pb2, json_format
from google.rpc import error_details_pb2, status_pb2
from multidict import MultiDict
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context as TraceContext
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from sealtrail import ErasureReceiptError, UnsignedReceiptError, verify_erasure_receipt
from sealtrail._correlation import on_behalf_of_metadata
from sealtrail.v1 import (
    access_pb2,
    alerting_pb2,
    audit_service_pb2_grpc,
    catalog_pb2,
    event_pb2,
    forwarding_pb2,
    integrity_pb2,
    retention_pb2,
)
from sealtrail.v1 import audit_service_pb2 as pb

from ..api.callers import (
    CLIENT_IP_HEADER,
    CLIENT_USER_AGENT_HEADER,
    CONSOLE_KEY_HEADER,
    ROLE_HEADER,
    address,
    behind_proxies,
)
from ..api.views import MAX_VIEW_COUNTS, VIEW_COUNTS_HEADER, VIEW_HEADER
from ..domain.canonical import plain_numbers
from ..domain.event import CATEGORIES, MAX_USER_AGENT, parse_request_id
from ..domain.networks import IpNetwork, within
from ..telemetry.interceptor import _extract as extract_trace_context
from .hosts import Host, is_allowed, listen_name, parse_host
from .parameters import (
    BadParameter,
    _etag,
    _flag,
    _mask,
    _not_in_an_edit,
    _only,
    _parsed,
    _policy,
    _role,
    _rule,
    _seq,
    _sink,
    _text,
    _timestamp,
    event_filter,
    only_parameters,
    quoted,
)
from .sign_in import Browser, SignIn, ended_answer

log = logging.getLogger(__name__)

STATIC: Final = Path(__file__).parent / "static"
PAGE_SIZE: Final = 100
_STATUS: Final = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,  # an etag no longer the resource's (google.rpc.Code's mapping)
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}
# Connections the console holds at once; more are answered 503 and closed.
# Each is a file descriptor of the process the gRPC API shares.
MAX_CONNECTIONS: Final = 256
# ... and from one address, unless a trusted proxy's (every browser behind it
# comes from its address): one peer with no token held all 256, and everyone
# else got 503 (helper-209).
MAX_CONNECTIONS_PER_ADDRESS: Final = 32
# Bytes of a request line: a search as long as the API takes (100 actions of
# 128 characters, an actor and a resource of 256 percent-encoded) and its page
# token. aiohttp's 8190 refused one in plain text, naming no parameter.
MAX_REQUEST_LINE: Final = 32 * 1024
# Seconds a connection may sit without a request (a first one included: one
# that sends half a request line and waits was held for good).
IDLE_SECONDS: Final = 15.0
# Seconds a stop gives requests still running once open streams and exports
# were ended (aiohttp's default, 60, twice over, outlasted any shutdown grace).
STOP_SECONDS: Final = 2.0
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)
# What /api/counts groups by: the chart's buckets, and the values the
# Breakdown panel and the action field's suggestions list (CountEvents').
_GROUPINGS: Final = {
    "hour": pb.COUNT_GROUP_BY_HOUR,
    "day": pb.COUNT_GROUP_BY_DAY,
    "action": pb.COUNT_GROUP_BY_ACTION,
    "actor": pb.COUNT_GROUP_BY_ACTOR,
    "actor_type": pb.COUNT_GROUP_BY_ACTOR_TYPE,
    "http_route": pb.COUNT_GROUP_BY_HTTP_ROUTE,
    "http_status": pb.COUNT_GROUP_BY_HTTP_STATUS,
    "resource_type": pb.COUNT_GROUP_BY_RESOURCE_TYPE,
    "country": pb.COUNT_GROUP_BY_COUNTRY,
    "outcome": pb.COUNT_GROUP_BY_OUTCOME,
    "severity": pb.COUNT_GROUP_BY_SEVERITY,
    "category": pb.COUNT_GROUP_BY_CATEGORY,
    "credential": pb.COUNT_GROUP_BY_CREDENTIAL,
    "ip": pb.COUNT_GROUP_BY_IP,
    "resource": pb.COUNT_GROUP_BY_RESOURCE,
    "recorded_by": pb.COUNT_GROUP_BY_RECORDED_BY,
}
# What /api/counts measures of each group's request durations (`measure`, as
# the access record names it): the Breakdown panel's measure list, CountMeasure's.
_MEASURES: Final = {
    "duration_avg": pb.COUNT_MEASURE_DURATION_AVG,
    "duration_p50": pb.COUNT_MEASURE_DURATION_P50,
    "duration_p95": pb.COUNT_MEASURE_DURATION_P95,
    "duration_p99": pb.COUNT_MEASURE_DURATION_P99,
    "duration_max": pb.COUNT_MEASURE_DURATION_MAX,
}
# The groups one answer holds without a `limit`: the API's largest (the chart's
# 1,000 days); a `limit` is passed on as given, the API lowering a larger one.
MAX_BUCKETS: Final = 1000
# The API's formats, each relayed a chunk at a time as it comes (JSON's array too).
_EXPORT_FORMATS: Final = {
    "csv": pb.EXPORT_FORMAT_CSV,
    "ndjson": pb.EXPORT_FORMAT_NDJSON,
    "json": pb.EXPORT_FORMAT_JSON,
}


def _json(message: Any, *, defaults: bool = False) -> dict[str, Any]:
    """`message` as the page reads it; whole numbers in details as the record
    and exports write them, 83 and not 83.0 (helper-165). With `defaults`,
    fields at their zero value too: a sink's `"paused": false` said, not left
    for the page to guess from its absence."""
    as_dict = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=defaults
    )
    return cast(dict[str, Any], plain_numbers(as_dict))


class Console:
    """The console's HTTP server, calling the gRPC service at `grpc_target`."""

    def __init__(
        self,
        grpc_target: str,
        *,
        listen: str,
        key: str = "",
        trusted_proxies: tuple[IpNetwork, ...] = (),
        allowed_hosts: tuple[Host, ...] = (),
        tracer: Tracer | None = None,
        sign_in: SignIn | None = None,
    ) -> None:
        """`key`: what the server trusts the browser's address and user agent
        from (api/callers.py); "" passes none on. `trusted_proxies`: peers
        believed about the browser they forward for (X-Forwarded-For).
        `allowed_hosts`: the names it answers under besides its own (hosts.py).
        `tracer`: the service's (None: tracing is off). `sign_in`: through
        the identity provider (sign_in.py), None where none is set."""
        # As the clients do: a page of 100 large events outgrows gRPC's default 4 MiB.
        self._channel = grpc.aio.insecure_channel(
            grpc_target, options=[("grpc.max_receive_message_length", 96 * 1024 * 1024)]
        )
        self._stub = audit_service_pb2_grpc.AuditLogServiceStub(self._channel)
        self._key = key
        self._trusted_proxies = trusted_proxies
        self._allowed_hosts = allowed_hosts
        self._tracer = tracer
        self._sign_in = sign_in
        self._refusals_logged = 0
        host, _, port = listen.rpartition(":")
        self._host, self._port = host.strip("[]") or "127.0.0.1", int(port)
        # A name to listen on is one of the console's (`audit-host.corp:8080`).
        self._listen_name = listen_name(self._host)
        self._runner: web.AppRunner | None = None
        # The streams and exports under way, ended first by a stop: they never
        # end on their own, and held the stop (the process's) two minutes.
        self._calls: set[grpc.aio.Call] = set()
        self._stopping = False
        self.port = 0

    async def start(self) -> int:
        # The host first: a request for another name reaches nothing, a 404 included.
        # Traced outside the errors' middleware: its span sees the status answered.
        app = web.Application(
            middlewares=[self._own_host, self._traced, self._rechecked, _errors],
            client_max_size=MAX_BODY,
        )
        app.on_response_prepare.append(_secure)
        app.on_response_prepare.append(_trace_named)
        # No HEAD on the API: one ran the call (recorded, an export's quota spent).
        app.add_routes(
            [
                web.get("/", self._page),
                web.get("/api/signin", self._signin, allow_head=False),
                web.get("/auth/config", self._sign_in_config, allow_head=False),
                web.get("/api/events", self._events, allow_head=False),
                web.get("/api/counts", self._counts, allow_head=False),
                web.get("/api/stream", self._stream, allow_head=False),
                web.get("/api/export", self._export, allow_head=False),
                web.get("/api/proof", self._proof, allow_head=False),
                web.get("/api/actions", self._actions, allow_head=False),
                web.put("/api/actions/{action}", self._describe_action),
                web.post("/api/actions/{action}", self._describe_action),
                web.get("/api/tokens", self._tokens, allow_head=False),
                web.post("/api/tokens", self._create_token),
                web.post("/api/tokens/{id}/revoke", self._revoke_token),
                web.get("/api/sinks", self._sinks, allow_head=False),
                web.post("/api/sinks", self._create_sink),
                web.put("/api/sinks/{id}", self._edit_sink),
                web.patch("/api/sinks/{id}", self._pause_sink),
                web.delete("/api/sinks/{id}", self._delete_sink),
                web.get("/api/sinks/{id}/dead-letters", self._dead_letters, allow_head=False),
                web.post("/api/sinks/{id}/replay", self._replay_sink),
                web.get("/api/alert-rules", self._alert_rules, allow_head=False),
                web.post("/api/alert-rules", self._create_alert_rule),
                web.put("/api/alert-rules/{id}", self._edit_alert_rule),
                web.patch("/api/alert-rules/{id}", self._disable_alert_rule),
                web.delete("/api/alert-rules/{id}", self._delete_alert_rule),
                web.get("/api/retention", self._retention, allow_head=False),
                web.post("/api/retention/preview", self._preview_retention),
                web.put("/api/retention", self._set_retention),
                web.put("/api/legal-hold", self._legal_hold),
                web.post("/api/erasure", self._erase_tenant),
                web.static("/static", STATIC),
            ]
        )
        if self._sign_in is not None:
            app.add_routes(
                self._sign_in.routes(browser_of=self._browser_of, same_origin=_same_origin)
            )
        # Each connection's handler's (_Handler's), given to the runner's server too.
        options: dict[str, Any] = {
            "access_log": None,
            "logger": _HttpLog(log),
            "max_line_size": MAX_REQUEST_LINE,
            "keepalive_timeout": IDLE_SECONDS,
        }
        self._runner = web.AppRunner(app, shutdown_timeout=STOP_SECONDS, **options)
        await self._runner.setup()
        site = _CappedSite(self._runner, self._host, self._port, self._trusted_proxies, options)
        await site.start()
        self.port = site.port
        if exposed := site.beyond_loopback():
            # Not refused: a TLS-terminating proxy on another host is a way to serve it.
            log.warning(
                "the console listens on %s (%s), beyond loopback, and serves plain HTTP:"
                " a browser's token crosses the network in clear. Put a TLS-terminating proxy"
                " in front of it (and let nothing else reach the port), or listen on 127.0.0.1",
                f"{self._host}:{self.port}",
                ", ".join(exposed),
            )
        return self.port

    async def stop(self) -> None:
        self._stopping = True
        for call in list(self._calls):
            call.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._sign_in is not None:
            await self._sign_in.close()
        await self._channel.close(None)

    @web.middleware
    async def _own_host(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Serves a request for one of the console's own names only (hosts.py,
        ADR 0102): any other is 421, whatever its path, before any call is
        made. The name sent is not said back (the log has it, cut)."""
        # Its optional whitespace only (HTTP's, RFC 9110, 5.6.3): str.strip's
        # took a no-break space after `localhost:8080` for none.
        sent = [value.strip(" \t") for value in request.headers.getall("Host", [])]
        if (
            len(sent) > 1
            or (sent and not sent[0])
            or (not sent and request.version >= HttpVersion11)
        ):
            # RFC 9112, 3.2: an HTTP/1.1 request names its host, once. HTTP/1.0
            # needs none, and no browser sends a request without one.
            return web.json_response(
                {"error": "a request must name the host it is for (Host), once"}, status=400
            )
        if sent and not self._own(request, sent[0]):
            level = logging.WARNING if not self._refusals_logged else logging.DEBUG
            self._refusals_logged += 1
            log.log(
                level,
                "the console refused a request for another host than its own (Host %.80r):"
                " behind a proxy or a published port, list the name the browser uses in"
                " SEALTRAIL_CONSOLE_ALLOWED_HOSTS (further refusals are logged at DEBUG)",
                sent[0],
            )
            return web.json_response(
                {
                    "error": "this console does not answer under the name this request was"
                    " sent to (Host): only a loopback name with its port, the address it"
                    " listens on, or a name in SEALTRAIL_CONSOLE_ALLOWED_HOSTS"
                },
                status=HTTPStatus.MISDIRECTED_REQUEST,
            )
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _traced(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Carries out an API request as a traced operation (the module's
        docstring): its span current while the handler runs, the trace
        context its gRPC calls carry kept for `_metadata`, its trace id for
        the answer's X-Trace-Id (`_trace_named`)."""
        if not request.path.startswith("/api/"):
            return cast(web.StreamResponse, await handler(request))
        parent = _browsers_trace(request)
        browsers = trace.get_current_span(parent).get_span_context()
        if self._tracer is None:
            if browsers.is_valid:
                request[_CARRIED] = parent
                request[_TRACE_ID] = trace.format_trace_id(browsers.trace_id)
            return cast(web.StreamResponse, await handler(request))
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else ""
        span = self._tracer.start_span(
            f"{request.method} {route}".strip(),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route},
        )
        own = span.get_span_context()
        current = trace.set_span_in_context(span, parent)
        # An unsampled trace of the console's own is no trace anyone can find:
        # not named, nor given to the service, whose records would carry its id.
        if own.is_valid and (own.trace_flags.sampled or browsers.is_valid):
            request[_CARRIED] = current
            request[_TRACE_ID] = trace.format_trace_id(own.trace_id)
        token = otel_context.attach(current)
        status = 500
        try:
            response = cast(web.StreamResponse, await handler(request))
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        except asyncio.CancelledError:
            status = 499  # the browser went, or a stop: no answer of the console's
            raise
        except Exception as error:
            # Its class, not its text (which a database error's would quote
            # the values it refused in: CONTRIBUTING.md, "Database errors"),
            # as the statements' spans say theirs (store/traced.py).
            span.set_attribute("error.type", type(error).__qualname__)
            raise
        finally:
            if status != 499:
                span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            otel_context.detach(token)

    @web.middleware
    async def _rechecked(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """An API call with a token a sign-in through the identity provider
        minted: the person it was minted for kept for its calls to say
        (`_metadata`, ADR 0146), its session checked again with the provider
        first, when due (recheck.py), and refused 401 if the provider ended it."""
        if self._sign_in is not None and request.path.startswith("/api/"):
            ended = await self._sign_in.rechecked(request, self._browser_of(request))
            if ended is not None:
                return ended
        return cast(web.StreamResponse, await handler(request))

    def _own(self, request: web.Request, sent: str) -> bool:
        """Whether `sent`, a Host header, names this console."""
        try:
            host = parse_host(sent)
        except ValueError:
            return False
        local = request.transport.get_extra_info("sockname") if request.transport else None
        came_to, port = (str(local[0]), int(local[1])) if isinstance(local, tuple) else ("", 0)
        if not came_to:  # the connection is gone
            return False
        return is_allowed(
            host,
            came_to=came_to,
            port=port,
            listed=self._allowed_hosts,
            listens_on=self._listen_name,
        )

    def _metadata(self, request: web.Request) -> tuple[tuple[str, str], ...]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        # The scheme in any case, as gRPC takes it (RFC 9110); a token gRPC
        # could not carry (not visible ASCII) is none, not a failure.
        if scheme.lower() != "bearer" or not token or not (token.isascii() and token.isprintable()):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "sign in with a token"}),
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="sealtrail"'},
            )
        kept = [("authorization", f"Bearer {token}")]
        # Passed on if it is one (gRPC refuses some bytes in metadata; the
        # server would replace anything else anyway).
        request_id = parse_request_id(request.headers.get("X-Request-Id", ""))
        if request_id is not None:
            kept.append(("x-request-id", request_id))
        if self._key:
            kept.extend(self._browser(request))
        if self._sign_in is not None and (person := self._sign_in.person(request)):
            # A person signed in through the identity provider: the records
            # of the call name them as its `on_behalf_of` (ADR 0146, addendum).
            kept.extend(on_behalf_of_metadata(person))
        carried = request.get(_CARRIED)
        if carried is not None:  # the request's trace, for the call's spans to join
            context: dict[str, str] = {}
            propagate.inject(context, context=carried)
            kept.extend(context.items())
        return tuple(kept)

    def _browser(self, request: web.Request) -> list[tuple[str, str]]:
        """The browser's address and user agent, for the records of the call
        (the call itself comes from a Unix socket, with the console's user
        agent). The address is the TCP peer's, or, when the peer is a trusted
        proxy, the browser its X-Forwarded-For names (api/callers.py): from
        anyone else the header is not taken, anyone could send one."""
        sent = [(CONSOLE_KEY_HEADER, self._key)]
        peer = address(request.remote or "")
        forwarded_for = request.headers.getall("X-Forwarded-For", [])
        if browser := behind_proxies(peer, forwarded_for, self._trusted_proxies):
            sent.append((CLIENT_IP_HEADER, browser))
        agent = request.headers.get("User-Agent", "")
        if agent.isascii() and agent.isprintable():  # else gRPC could not carry it
            sent.append((CLIENT_USER_AGENT_HEADER, agent[:MAX_USER_AGENT]))
        return sent

    def _browser_of(self, request: web.Request) -> Browser:
        """Where a sign-in came from, as its records say it (`_browser`'s)."""
        peer = address(request.remote or "")
        forwarded_for = request.headers.getall("X-Forwarded-For", [])
        agent = request.headers.get("User-Agent", "")
        return Browser(
            behind_proxies(peer, forwarded_for, self._trusted_proxies) or "",
            agent[:MAX_USER_AGENT] if agent.isprintable() else "",
        )

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _sign_in_config(self, request: web.Request) -> web.Response:
        """How the page may sign in besides a pasted token: through the
        identity provider (its name and where the sign-in begins), or null.
        Asked before any sign-in, so it says nothing secret."""
        provider = self._sign_in.described(request) if self._sign_in is not None else None
        return web.json_response({"identity_provider": provider})

    async def _signin(self, request: web.Request) -> web.Response:
        """Any reading role signs in; the answer names the role, which the API
        tells its console (ROLE_HEADER): the page shows its admin area to an
        admin only, and a reader's sign-in is no refused admin call."""
        call = self._stub.GetVerifierKeys(
            integrity_pb2.GetVerifierKeysRequest(), metadata=self._metadata(request)
        )
        await call
        role = dict(await call.initial_metadata() or ()).get(ROLE_HEADER, "")
        return web.json_response({"ok": True, "role": role})

    async def _events(self, request: web.Request) -> web.Response:
        """A page of the search; a first page may announce the counts its
        page draws beside it (`count`, each the query string of its
        /api/counts besides the filter): its record says them, and its answer
        names the view (`view`) they pass on, for them not to be recorded
        again (ADR 0137)."""
        only_parameters(request.query, "page_token", "count")
        announced = request.query.getall("count", [])
        if len(announced) > MAX_VIEW_COUNTS:
            raise BadParameter(f"count: at most {MAX_VIEW_COUNTS} counts a search")
        if announced and request.query.get("page_token"):
            raise BadParameter("count: on a first page only (no page_token)")
        counts = [
            _count_request(MultiDict(urllib.parse.parse_qsl(count)), field="count")
            for count in announced
        ]
        query = pb.QueryRequest(
            filter=event_filter(request.query),
            page_size=PAGE_SIZE,
            page_token=request.query.get("page_token", ""),
        )
        metadata = self._metadata(request) + tuple(
            (VIEW_COUNTS_HEADER, count.SerializeToString()) for count in counts
        )
        call = self._stub.Query(query, metadata=metadata)
        answer = await call
        body: dict[str, Any] = {
            "events": [_json(event) for event in answer.events],
            "next_page_token": answer.next_page_token,
        }
        view = dict(await call.trailing_metadata() or ()).get(VIEW_HEADER)
        if counts and isinstance(view, str):
            body["view"] = view
        return web.json_response(body)

    async def _counts(self, request: web.Request) -> web.Response:
        """How many events the search's filter matches per hour or day of
        `time_zone` (CountEvents, ADR 0108), or per value of one of the
        event's fields (`group_by=action`, ... : the Breakdown panel's), the
        largest `limit` groups: the filter read as the search reads it, so
        each group counts what the search shows for it. Recorded by the API
        as a count (`audit_log.queried`), as a Query is, unless it names the
        `view` of a first page that announced it (ADR 0137). With `measure`,
        each group also says a figure of its events' durations (`value`, ms;
        null where none has one) and how many were measured (`measured`)."""
        only_parameters(request.query, *_COUNT_PARAMETERS, "view")
        for name in (*_COUNT_PARAMETERS, "view"):
            if len(request.query.getall(name, ())) > 1:
                raise BadParameter(f"{name}: given more than once")
        count = _count_request(request.query)
        count.filter.CopyFrom(event_filter(request.query))
        metadata = self._metadata(request)
        if "view" in request.query:
            view = request.query["view"]
            if _VIEW_ID.fullmatch(view) is None:
                raise BadParameter("view: the `view` a first page of /api/events answered")
            metadata += ((VIEW_HEADER, view),)
        call = self._stub.CountEvents(count, metadata=metadata)
        # Ended with its browser: a tenant runs one count at a time, and one
        # nobody would read (the filter applied again, the tab closed) went on
        # up to SEALTRAIL_COUNT_TIMEOUT, the page's next count refused meanwhile.
        watch = asyncio.create_task(_cancel_when_gone(request, call))
        try:
            answer = await call
        except asyncio.CancelledError:
            if not (watch.done() and call.cancelled()):  # the handler's own (a stop)
                raise
            return web.Response(status=204)  # to no one: the browser went
        finally:
            watch.cancel()
        return web.json_response(
            {
                "total": answer.total,
                "groups": [
                    _group(
                        group,
                        measured=bool(count.measure),
                        labelled=count.group_by == pb.COUNT_GROUP_BY_ACTOR,
                    )
                    for group in answer.groups
                ],
                "truncated": answer.truncated,
                "total_groups": answer.total_groups,
                "tree_size": answer.tree_size,
            }
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        # Removals announced (ADR 0038), not refused: Live starts after the
        # newest event of its search, and where retention had removed the one
        # after it (the rest of the log kept less long), the resume check
        # refused the stream with PURGED, and Live could not follow that search
        # at all. An announcement is written as an empty line, as a heartbeat:
        # what was removed was never on the page.
        only_parameters(request.query, "after_seq")
        stream_request = pb.StreamEventsRequest(
            filter=event_filter(request.query), max_events_per_message=100, announce_purged=True
        )
        after = request.query.get("after_seq", "")
        if after:
            stream_request.after_seq = _seq(after, "after_seq")
        call = self._stub.StreamEvents(stream_request, metadata=self._metadata(request))
        response: web.StreamResponse | None = None
        self._calls.add(call)
        browser = self._browser_of(request)
        try:
            async for message in call:
                if response is None:
                    response = await _streaming(request, "application/x-ndjson")
                # Its session rechecked as it runs, at a message or heartbeat
                # (every 5 s at most) once due: no statement until then.
                if ended := await self._ended_meanwhile(request, browser):
                    await _last_line(response, ended, "stream")
                    break
                lines = [json.dumps(_json(e)) + "\n" for e in _events_of(message)]
                await response.write("".join(lines).encode() or b"\n")  # heartbeats keep it open
        except grpc.aio.AioRpcError as error:
            if response is None:
                raise
            await _last_line(response, _error_line(error), "stream")
        except ClientConnectionResetError:
            pass  # the browser went (Live turned off, the filter changed, the tab closed)
        except asyncio.CancelledError:
            if not self._ended_by_stop():
                raise
            if response is None:
                raise _stopping_error() from None
            await _last_line(response, _STOPPING_LINE, "stream")
        finally:
            call.cancel()
            self._calls.discard(call)
        if response is None:  # ended before the first message
            return web.Response(status=204)
        return response

    async def _ended_meanwhile(self, request: web.Request, browser: Browser) -> bytes | None:
        """The last line of a stream or an export under way whose session the
        identity provider ended since it began (rechecked once due: no
        statement until then); None while it goes on."""
        if self._sign_in is None:
            return None
        ended = await self._sign_in.ended_meanwhile(request, browser)
        return None if ended is None else json.dumps(ended_answer(ended)).encode() + b"\n"

    def _ended_by_stop(self) -> bool:
        """Whether the call a handler awaited was cancelled by `stop` (not the
        handler's own task, which must go on being cancelled)."""
        task = asyncio.current_task()
        return self._stopping and (task is None or not task.cancelling())

    async def _export(self, request: web.Request) -> web.StreamResponse:
        only_parameters(request.query, "format")
        chosen = _EXPORT_FORMATS.get(request.query.get("format", "csv"))
        if chosen is None:
            raise BadParameter("format: csv, ndjson or json")
        call = self._stub.Export(
            pb.ExportRequest(filter=event_filter(request.query), format=chosen),
            metadata=self._metadata(request),
        )
        response: web.StreamResponse | None = None
        self._calls.add(call)
        browser = self._browser_of(request)
        try:
            async for message in call:
                if response is None:
                    response = await _streaming(request, "application/x-ndjson")
                # Rechecked as it runs, at each message once due, as Live is:
                # a download of hours went on after the provider ended its
                # session. The rest not sent, and no manifest: not complete.
                if ended := await self._ended_meanwhile(request, browser):
                    if not await _last_line(response, ended, "export"):
                        return response
                    break
                line: dict[str, Any]
                if message.HasField("chunk"):
                    line = {"chunk": base64.b64encode(message.chunk).decode()}
                elif message.HasField("manifest"):
                    line = {"manifest": _json(message.manifest)}
                else:
                    continue
                await response.write(json.dumps(line).encode() + b"\n")
        except grpc.aio.AioRpcError as error:
            if response is None:
                raise
            if not await _last_line(response, _error_line(error), "export"):
                return response
        except ClientConnectionResetError:
            return response or web.Response(status=204)  # the browser went
        except asyncio.CancelledError:
            if not self._ended_by_stop():
                raise
            if response is None:
                raise _stopping_error() from None
            # No manifest: not complete.
            if not await _last_line(response, _STOPPING_LINE, "export"):
                return response
        finally:
            call.cancel()
            self._calls.discard(call)
        if response is None:
            response = await _streaming(request, "application/x-ndjson")
        await response.write_eof()
        return response

    async def _proof(self, request: web.Request) -> web.Response:
        seq = _seq(request.query.get("seq", ""), "seq")
        metadata = self._metadata(request)
        answer = await self._stub.GetInclusionProof(
            integrity_pb2.GetInclusionProofRequest(seq=seq), metadata=metadata
        )
        keys = await self._stub.GetVerifierKeys(
            integrity_pb2.GetVerifierKeysRequest(), metadata=metadata
        )
        return web.json_response({"proof": _json(answer), "keys": _json(keys)})

    async def _actions(self, request: web.Request) -> web.Response:
        """A page of the tenant's action catalogue (ListActionCatalog, any
        reading role): every action its log holds, with its count and last
        occurrence, beside its description, and the actions described and
        not recorded yet; `limit` as the API's page size (50 without it, at
        most 1,000; a negative one is the API's 400 on `limit`), `page_token`
        the previous page's `next_page_token`. Recorded by the API as a read
        of the log (`audit_log.queried`), each listing once (its first page):
        the page reads it once and keeps it."""
        limits = request.query.getall("limit", [])
        tokens = request.query.getall("page_token", [])
        if len(limits) > 1:
            raise BadParameter("limit: given more than once")
        if len(tokens) > 1:
            raise BadParameter("page_token: given more than once")
        limit = _limit(limits[0], what="entries") if limits else 0
        answer = await self._stub.ListActionCatalog(
            catalog_pb2.ListActionCatalogRequest(limit=limit, page_token="".join(tokens)),
            metadata=self._metadata(request),
        )
        return web.json_response(
            {
                "entries": [_catalog_entry(entry) for entry in answer.entries],
                "truncated": answer.truncated,
                "total_entries": answer.total_entries,
                "tree_size": answer.tree_size,
                "next_page_token": answer.next_page_token,
            }
        )

    # --- an admin's: tokens, sinks, alert rules, the legal hold (ADR 0069) ----

    async def _describe_action(self, request: web.Request) -> web.Response:
        """Sets what an action means (SetActionDescription, an admin's): the
        path names the action, `description` says it (`""` clears it),
        `category` (a Category's short name, `""`: none) is the one its
        events must have. Only the fields the body holds change (the request's
        update_mask names them, ADR 0148's addendum): a page that edits
        descriptions sends no category, and never reverts one declared
        elsewhere since it read it. The answer is the entry as stored,
        redacted as the tenant's events are (ADR 0141), and the id of the
        event that recorded the change ("" when nothing changed)."""
        metadata, body = await self._change(request)
        _only(body, "description", "category")
        if "description" not in body and "category" not in body:
            raise BadParameter(
                'description: required, or category ("" clears the action\'s description)'
            )
        category = _text(body, "category")
        if category not in ("", *CATEGORIES.values()):
            raise BadParameter('category: a category\'s short name ("security", "billing"), or ""')
        answer = await self._stub.SetActionDescription(
            catalog_pb2.SetActionDescriptionRequest(
                action=request.match_info["action"],
                description=_text(body, "description"),
                category=_CATEGORY_NUMBERS.get(category, event_pb2.CATEGORY_UNSPECIFIED),
                update_mask=field_mask_pb2.FieldMask(
                    paths=[field for field in ("description", "category") if field in body]
                ),
            ),
            metadata=metadata,
        )
        return web.json_response(
            {"entry": _catalog_entry(answer.entry), "event_id": answer.event_id}
        )

    async def _change(
        self, request: web.Request
    ) -> tuple[tuple[tuple[str, str], ...], dict[str, Any]]:
        """The metadata and JSON body of a change, once it is known to come
        from the console's page (or no browser) with a token of its own."""
        _same_origin(request)
        metadata = self._metadata(request)
        return metadata, await _body(request)

    async def _tokens(self, request: web.Request) -> web.Response:
        answer = await self._stub.ListTokens(
            access_pb2.ListTokensRequest(
                page_size=PAGE_SIZE, page_token=request.query.get("page_token", "")
            ),
            metadata=self._metadata(request),
        )
        return web.json_response(
            {
                "tokens": [_json(token, defaults=True) for token in answer.tokens],
                "next_page_token": answer.next_page_token,
            }
        )

    async def _create_token(self, request: web.Request) -> web.Response:
        """The answer holds the secret, shown once: it is kept nowhere here,
        and no-store keeps it out of the browser's cache (_secure)."""
        metadata, body = await self._change(request)
        _only(body, "role", "name", "expire_time")
        message = access_pb2.CreateTokenRequest(role=_role(body), name=_text(body, "name"))
        expiry = _text(body, "expire_time")
        if expiry:
            _timestamp(message.expire_time, "expire_time", expiry)
        answer = await self._stub.CreateToken(message, metadata=metadata)
        return web.json_response(_json(answer, defaults=True))

    async def _revoke_token(self, request: web.Request) -> web.Response:
        metadata, body = await self._change(request)
        _only(body)
        answer = await self._stub.RevokeToken(
            access_pb2.RevokeTokenRequest(token_id=request.match_info["id"]), metadata=metadata
        )
        return web.json_response(_json(answer, defaults=True))

    async def _sinks(self, request: web.Request) -> web.Response:
        """The tenant's sinks, each with dead letters waiting and no failure
        holding it with its `oldest_dead_letter` too (the API's DeadLetter as
        JSON), read as `sealtrail sinks` reads it: a dead letter sets no last
        error, and the view said only how many waited, not why."""
        metadata = self._metadata(request)
        answer = await self._stub.ListSinks(forwarding_pb2.ListSinksRequest(), metadata=metadata)
        sinks = []
        for sink in answer.sinks:
            shown = _json(sink, defaults=True)
            if sink.state.dead_letters and not sink.state.last_error:
                oldest = await self._oldest_dead_letter(sink.id, metadata)
                if oldest is not None:
                    shown["oldest_dead_letter"] = _json(oldest, defaults=True)
            sinks.append(shown)
        return web.json_response({"sinks": sinks})

    async def _oldest_dead_letter(
        self, sink_id: str, metadata: tuple[tuple[str, str], ...]
    ) -> forwarding_pb2.DeadLetter | None:
        """The sink's oldest dead letter (ListDeadLetters, a page of one); None
        if none waits now (replayed, or the sink deleted, since it was listed)."""
        try:
            answer = await self._stub.ListDeadLetters(
                forwarding_pb2.ListDeadLettersRequest(sink_id=sink_id, page_size=1),
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return answer.dead_letters[0] if answer.dead_letters else None

    async def _create_sink(self, request: web.Request) -> web.Response:
        """Creates a sink from the API's own Sink message as JSON: every kind
        and field the API knows, with no second definition here to drift from
        it. The answer shows its secrets as hints only, as the API does."""
        metadata, body = await self._change(request)
        _only(body, "sink", "filter", "from_beginning")
        message = forwarding_pb2.CreateSinkRequest(
            sink=_sink(body), from_beginning=_flag(body, "from_beginning", default=False)
        )
        answer = await self._stub.CreateSink(message, metadata=metadata)
        return web.json_response(_json(answer, defaults=True))

    async def _edit_sink(self, request: web.Request) -> web.Response:
        """Replaces a sink's definition as read: its name, filter, format and
        destination (of its kind, replaced whole), by the mask. A secret left
        empty is kept by the API (WebhookDestination.secrets), so the page
        sends one only when it was typed again; `paused` stays as it is, for
        the edit form does not show it and must not undo a Pause made
        meanwhile by writing it back (ADR 0069, second addendum)."""
        metadata, body = await self._change(request)
        _only(body, "sink", "filter", "etag")
        _not_in_an_edit(body, "sink", "paused")
        sink = _sink(body)
        sink.id, sink.etag = request.match_info["id"], _etag(body, "sink")
        kind = sink.WhichOneof("destination")
        if kind is None:
            raise BadParameter(
                "sink.destination: required, one of the kinds docs/forwarding.md lists"
            )
        answer = await self._stub.UpdateSink(
            forwarding_pb2.UpdateSinkRequest(
                sink=sink,
                update_mask=field_mask_pb2.FieldMask(paths=["name", "filter", "format", kind]),
            ),
            metadata=metadata,
        )
        return web.json_response(_json(answer, defaults=True))

    async def _pause_sink(self, request: web.Request) -> web.Response:
        """Pauses or resumes a sink as read: its `paused` only (the mask), and
        only if it is still the sink the page showed (its etag)."""
        metadata, body = await self._change(request)
        _only(body, "paused", "etag")
        sink = forwarding_pb2.Sink(
            id=request.match_info["id"], paused=_flag(body, "paused"), etag=_etag(body, "sink")
        )
        answer = await self._stub.UpdateSink(
            forwarding_pb2.UpdateSinkRequest(sink=sink, update_mask=_mask("paused")),
            metadata=metadata,
        )
        return web.json_response(_json(answer, defaults=True))

    async def _delete_sink(self, request: web.Request) -> web.Response:
        metadata, body = await self._change(request)
        _only(body, "etag")
        answer = await self._stub.DeleteSink(
            forwarding_pb2.DeleteSinkRequest(id=request.match_info["id"], etag=_etag(body, "sink")),
            metadata=metadata,
        )
        return web.json_response(_json(answer, defaults=True))

    async def _dead_letters(self, request: web.Request) -> web.Response:
        """A page of the sink's dead letters, oldest first: the API's 1,000
        (the replay form's list grows by as many at a time)."""
        answer = await self._stub.ListDeadLetters(
            forwarding_pb2.ListDeadLettersRequest(
                sink_id=request.match_info["id"], page_token=request.query.get("page_token", "")
            ),
            metadata=self._metadata(request),
        )
        letters = [_json(letter, defaults=True) for letter in answer.dead_letters]
        return web.json_response(
            {"dead_letters": letters, "next_page_token": answer.next_page_token}
        )

    async def _replay_sink(self, request: web.Request) -> web.Response:
        """Asks for a sink's events to be sent again: the API's
        ReplaySinkRequest as JSON, its sink the path's. No etag: a replay
        changes no definition, and sends what the sink takes when it runs,
        whatever the sink became meanwhile (ADR 0069, addendum)."""
        metadata, body = await self._change(request)
        if "sink_id" in body:
            raise BadParameter("sink_id: not a field of this change (the path names the sink)")
        message = _parsed(
            body, forwarding_pb2.ReplaySinkRequest(sink_id=request.match_info["id"]), "body"
        )
        if message.WhichOneof("selection") is None:
            raise BadParameter("selection: one of seq_range, window and dead_letter_id")
        answer = await self._stub.ReplaySink(message, metadata=metadata)
        return web.json_response(_json(answer, defaults=True))

    async def _alert_rules(self, request: web.Request) -> web.Response:
        answer = await self._stub.ListAlertRules(
            alerting_pb2.ListAlertRulesRequest(), metadata=self._metadata(request)
        )
        return web.json_response({"rules": [_json(rule, defaults=True) for rule in answer.rules]})

    async def _create_alert_rule(self, request: web.Request) -> web.Response:
        """Creates a rule from the API's own AlertRule as JSON, as a sink is
        made from its message: every kind of condition the API has."""
        metadata, body = await self._change(request)
        _only(body, "rule", "filter")
        answer = await self._stub.CreateAlertRule(
            alerting_pb2.CreateAlertRuleRequest(rule=_rule(body)), metadata=metadata
        )
        return web.json_response(_json(answer, defaults=True))

    async def _edit_alert_rule(self, request: web.Request) -> web.Response:
        """Replaces a rule's definition as read: its name, condition (of any
        kind, the old one's settings dropped), severity and sinks, by the
        mask; `disabled` stays as it is, for the page's edit form does not
        show it and must not undo a Disable made meanwhile by writing it back."""
        metadata, body = await self._change(request)
        _only(body, "rule", "filter", "etag")
        _not_in_an_edit(body, "rule", "disabled")
        rule = _rule(body)
        rule.id, rule.etag = request.match_info["id"], _etag(body, "alert rule")
        kind = rule.WhichOneof("condition")
        if kind is None:
            raise BadParameter("rule.condition: one condition is required")
        answer = await self._stub.UpdateAlertRule(
            alerting_pb2.UpdateAlertRuleRequest(
                rule=rule,
                update_mask=field_mask_pb2.FieldMask(paths=["name", "severity", "sink_ids", kind]),
            ),
            metadata=metadata,
        )
        return web.json_response(_json(answer, defaults=True))

    async def _disable_alert_rule(self, request: web.Request) -> web.Response:
        """Disables or enables a rule as read: `disabled` only, if unchanged."""
        metadata, body = await self._change(request)
        _only(body, "disabled", "etag")
        rule = alerting_pb2.AlertRule(
            id=request.match_info["id"],
            disabled=_flag(body, "disabled"),
            etag=_etag(body, "alert rule"),
        )
        answer = await self._stub.UpdateAlertRule(
            alerting_pb2.UpdateAlertRuleRequest(rule=rule, update_mask=_mask("disabled")),
            metadata=metadata,
        )
        return web.json_response(_json(answer, defaults=True))

    async def _delete_alert_rule(self, request: web.Request) -> web.Response:
        metadata, body = await self._change(request)
        _only(body, "etag")
        answer = await self._stub.DeleteAlertRule(
            alerting_pb2.DeleteAlertRuleRequest(
                id=request.match_info["id"], etag=_etag(body, "alert rule")
            ),
            metadata=metadata,
        )
        return web.json_response(_json(answer, defaults=True))

    async def _retention(self, request: web.Request) -> web.Response:
        answer = await self._stub.GetRetentionPolicy(
            retention_pb2.GetRetentionPolicyRequest(), metadata=self._metadata(request)
        )
        return web.json_response(_json(answer, defaults=True))

    async def _preview_retention(self, request: web.Request) -> web.Response:
        """What a policy would remove now, and which events it keeps less long
        than the stored one (`shortened`, as the change's record will list
        them, severity WARNING; domain/weakening.py): PreviewRetentionPolicy's
        answer, for the page to say so before the change is made."""
        metadata, body = await self._change(request)
        preview = await self._stub.PreviewRetentionPolicy(
            retention_pb2.PreviewRetentionPolicyRequest(policy=_policy(body)), metadata=metadata
        )
        return web.json_response(_json(preview, defaults=True))

    async def _set_retention(self, request: web.Request) -> web.Response:
        metadata, body = await self._change(request)
        answer = await self._stub.UpdateRetentionPolicy(
            retention_pb2.UpdateRetentionPolicyRequest(policy=_policy(body)), metadata=metadata
        )
        return web.json_response(_json(answer, defaults=True))

    async def _legal_hold(self, request: web.Request) -> web.Response:
        """Places or releases the hold as read. A release the deployment keeps
        to its operator is the API's 403, its words shown as they are."""
        metadata, body = await self._change(request)
        _only(body, "on", "reason", "etag")
        message = retention_pb2.SetLegalHoldRequest(
            on=_flag(body, "on"), reason=_text(body, "reason"), etag=_etag(body, "legal hold")
        )
        answer = await self._stub.SetLegalHold(message, metadata=metadata)
        return web.json_response(_json(answer, defaults=True))

    async def _erase_tenant(self, request: web.Request) -> web.Response:
        """Erases the caller's tenant: its id typed back is the API's own
        confirmation (`confirm_tenant_id`, compared by the API with the
        token's tenant), and a legal hold or an operator who keeps erasures
        refuses it in the API's words. No etag: there is nothing left to be
        stale about. No deadline either, as the clients wait an hour: a large
        tenant takes minutes, and a call cut off is rolled back. The answer
        is the receipt, the log's signed final checkpoint in it, and `check`:
        whether the receipt is signed and its signature verifies against the
        keys the deployment registers (receipt_check)."""
        metadata, body = await self._change(request)
        _only(body, "confirm_tenant_id")
        typed = _text(body, "confirm_tenant_id")
        if not typed:
            raise BadParameter("confirm_tenant_id: required, this tenant's id typed back")
        # The keys the deployment registers, read while the token still
        # works: the erasure takes it, and the receipt is checked with them.
        keys = await self._stub.GetVerifierKeys(
            integrity_pb2.GetVerifierKeysRequest(), metadata=metadata
        )
        answer = await self._stub.EraseTenant(
            retention_pb2.EraseTenantRequest(confirm_tenant_id=typed), metadata=metadata
        )
        erased = _json(answer, defaults=True)
        erased["check"] = receipt_check(answer.receipt, [key.text for key in keys.keys])
        return web.json_response(erased)


def receipt_check(receipt: retention_pb2.ErasureReceipt, keys: list[str]) -> dict[str, Any]:
    """What the page says of an erasure receipt's signature: `signed` (a
    receipt kept before receipts were signed, migration 0045, is not),
    `verified` (by one of `keys`, the keys the deployment registers, and
    stating the receipt's fields), `signed_by` (those keys) and `problem`
    (why not, in the verifier's words). The server's own check: a database
    superuser can register a key, so only a key an auditor pinned proves the
    receipt (`sealtrail verify-erasure`, docs/integrity.md)."""
    try:
        check = verify_erasure_receipt(receipt, key=keys)
    except UnsignedReceiptError as error:
        return {"signed": False, "verified": False, "signed_by": [], "problem": str(error)}
    except ErasureReceiptError as error:
        return {"signed": True, "verified": False, "signed_by": [], "problem": str(error)}
    return {"signed": True, "verified": True, "signed_by": check.signed_by, "problem": ""}


# A change's body is a few fields: anything larger is no request of the page's.
MAX_BODY: Final = 64 * 1024
# Sec-Fetch-Site values of a request the console's own page (or no page) made.
_CATEGORY_NUMBERS: Final[dict[str, event_pb2.Category.ValueType]] = {
    name: event_pb2.Category.ValueType(number) for number, name in CATEGORIES.items()
}
_OWN_SITES: Final = frozenset({"same-origin", "none"})


def _same_origin(request: web.Request) -> None:
    """Refuses a change another site's page sent. The token is no cookie, so
    such a page could not send it anyway (it cannot read this origin's
    session storage); this keeps it so if that ever changes (ADR 0069). A
    request that names no origin (curl, a script) comes from no page."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in _OWN_SITES:
        raise _refused_origin(f"Sec-Fetch-Site: {site}")
    origin = request.headers.get("Origin")
    # An origin naming no host (`null`, `file://`) is no page of this one's, even
    # where the Host header is empty too (helper-187); nor one no URL can be read
    # from (`http://[::1`: urlsplit's ValueError was a 500).
    try:
        named = urllib.parse.urlsplit(origin or "").netloc.lower()
    except ValueError:
        named = ""
    if origin is not None and (not named or named != request.host.lower()):
        raise _refused_origin(f"Origin: {origin}")


def _refused_origin(said: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(
        text=json.dumps({"error": f"a change must come from the console's own origin ({said})"}),
        content_type="application/json",
    )


async def _body(request: web.Request) -> dict[str, Any]:
    """A change's JSON object. JSON only: a form, which any page may post
    without asking, is no change."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps({"error": "send a change as application/json"}),
            content_type="application/json",
        )
    try:
        # Within the idle limit: a body that stops arriving held its connection
        # for good (no timer runs while a handler waits), and enough of them,
        # with any token, took every connection the console holds (helper-187).
        async with asyncio.timeout(IDLE_SECONDS):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # aiohttp's, in plain text
        raise web.HTTPRequestEntityTooLarge(
            MAX_BODY,
            text=json.dumps({"error": f"body: over {MAX_BODY} bytes, more than any change"}),
            content_type="application/json",
        ) from None
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=json.dumps({"error": f"body: not received within {IDLE_SECONDS:g} s"}),
            content_type="application/json",
            headers={"Connection": "close"},
        ) from None
    try:
        body = json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        raise BadParameter("body: not JSON") from None
    except RecursionError:  # was a 500, logged as the server's own error (helper-187)
        raise BadParameter("body: nested too deep") from None
    try:  # JSON may escape a lone surrogate, which no field can hold (it reached protobuf)
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadParameter("body: a string with an unpaired surrogate (\\ud800), no text") from None
    if not isinstance(body, dict):
        raise BadParameter("body: a JSON object")
    return body


# A view's id as the API makes them (api/views.py: token_urlsafe).
_VIEW_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


# The parameters of a count besides its filter: /api/counts' and a `count` announced.
_COUNT_PARAMETERS: Final = ("group_by", "time_zone", "limit", "measure")


def _count_request(query: Any, *, field: str = "") -> pb.CountEventsRequest:
    """The grouping, limit, time zone and measure of a count (its filter aside), from
    /api/counts' query string or one a search announces (`field`: `count`,
    named before the parameter in errors)."""
    named = f"{field}: " if field else ""
    if field:  # /api/counts' own are checked with its filter's
        try:
            only_parameters(query, *_COUNT_PARAMETERS, filtered=False)
        except BadParameter as error:
            raise BadParameter(f"{named}{error}") from None

    def one(name: str) -> str:
        values = query.getall(name, [])
        if len(values) > 1:
            raise BadParameter(f"{named}{name}: given more than once")
        return str(values[0]) if values else ""

    grouping = _GROUPINGS.get(one("group_by"))
    if grouping is None:
        # Named, not the 16 groupings listed: docs/console.md lists them.
        raise BadParameter(
            f"{named}group_by: unknown {quoted(one('group_by'))} (docs/console.md lists them)"
        )
    limit = MAX_BUCKETS
    if one("limit"):
        limit = _limit(one("limit"))
    measure = pb.COUNT_MEASURE_UNSPECIFIED  # `measure=` (empty): the count alone
    if one("measure"):
        measure = _MEASURES.get(one("measure"), pb.COUNT_MEASURE_UNSPECIFIED)
        if not measure:
            # Named, as an unknown enum value is the API's INVALID_ARGUMENT on `measure`.
            raise BadParameter(
                f"{named}measure: unknown {quoted(one('measure'))} (docs/console.md lists them)"
            )
    return pb.CountEventsRequest(
        group_by=grouping, limit=limit, time_zone=one("time_zone"), measure=measure
    )


def _group(group: pb.EventCount, *, measured: bool, labelled: bool = False) -> dict[str, Any]:
    """A group of a count's answer as the page reads it: its key and count;
    of a count by actor (`labelled`), who the actor is (`label`, the API's:
    "" for none); and, when the count measured (`measured`), its events'
    durations' figure in ms (`value`, null where none of them has a
    duration: the API's 0 is no duration of 0 ms) and how many of them had
    one (`measured`)."""
    said: dict[str, Any] = {"key": group.key, "count": group.count}
    if labelled:
        said["label"] = group.label
    if measured:
        said["value"] = group.value if group.measured else None
        said["measured"] = group.measured
    return said


def _limit(text: str, *, what: str = "groups") -> int:
    """The groups a count's answer holds (or the `what` another's does), as
    given: the API refuses a negative one (naming `limit`) and lowers one
    past its largest; BadParameter for what is no whole number a request can
    carry."""
    if re.fullmatch(r"-?[0-9]{1,10}", text) is None or not -(2**31) <= int(text) < 2**31:
        raise BadParameter(f"limit: a whole number (at most 1000 {what} are answered)")
    return int(text)


def _catalog_entry(entry: catalog_pb2.ActionCatalogEntry) -> dict[str, Any]:
    """An action of the catalogue as the page reads it: its count a number,
    its times RFC 3339 in UTC (None where it has none), "" for no
    description."""

    last = entry.last_occurred_time if entry.HasField("last_occurred_time") else None
    updated = entry.update_time if entry.HasField("update_time") else None
    return {
        "action": entry.action,
        "description": entry.description,
        "count": entry.count,
        "last_occurred_time": last.ToJsonString() if last is not None else None,
        "update_time": updated.ToJsonString() if updated is not None else None,
        "updated_by": entry.updated_by,
        "category": CATEGORIES.get(entry.category, ""),
    }


_STOPPING: Final = "the server is stopping: try again (a stream resumes after its last seq)"
_STOPPING_LINE: Final = (json.dumps({"error": _STOPPING, "code": "UNAVAILABLE"}) + "\n").encode()


def _stopping_error() -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(
        text=json.dumps({"error": _STOPPING, "code": "UNAVAILABLE"}),
        content_type="application/json",
        headers={"Retry-After": "1"},
    )


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    """The rich status's details (google.rpc.Status, AIP-193), packed."""
    trailing = cast("grpc.aio.Metadata | None", error.trailing_metadata())  # aio's, typed as sync's
    details = trailing.get("grpc-status-details-bin") if trailing is not None else None
    if not isinstance(details, bytes):
        return []
    return list(status_pb2.Status.FromString(details).details)


def _retry_after(error: grpc.aio.AioRpcError) -> str | None:
    """Whole seconds from the status's RetryInfo, rounded up, for Retry-After."""
    for detail in _details(error):
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return str(max(1, math.ceil(info.retry_delay.ToTimedelta().total_seconds())))
    return None


def _violations(error: grpc.aio.AioRpcError) -> list[dict[str, str]]:
    """The BadRequest's field violations (INVALID_ARGUMENT's): the fields the
    page marks, `rule.threshold.count`, `policy.rules[1].days`."""
    for detail in _details(error):
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return [{"field": v.field, "description": v.description} for v in bad.field_violations]
    return []


def _reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo's reason (ETAG_MISMATCH, HOLD_RELEASE_BY_OPERATOR): what
    a page tells apart that one code covers."""
    for detail in _details(error):
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


class _HttpLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's log of the console's connections: a request its parser
    cannot read (a line or header over its limit, a malformed one) is the
    client's error, answered 400, and logged at DEBUG in a line. aiohttp
    logged each as the server's own error, with a traceback, before any
    token was asked for: whoever reached the port could fill the log. A
    handler's own failure (a 500) is still an error, under this module's name."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            self.debug("a request no HTTP parser reads (%s): %s", error.code, _unquoted(error))
            return
        super().exception(msg, *args, **kwargs)


def _unquoted(error: HttpProcessingError) -> str:
    """What aiohttp's parser says of a request it cannot read, without the
    bytes it quotes after a colon (a header line, a bearer token in it):
    "Invalid header value char", "Got more than 8190 bytes when reading"."""
    said = str(error.message or type(error).__name__)
    return said.partition(":")[0].partition("\n")[0].strip() or type(error).__name__


class _Handler(web.RequestHandler):
    """aiohttp's handler of one connection, but for its answer to a request
    its parser cannot read: aiohttp's quoted the bytes it could not read (a
    path, a header line, a bearer token in it), and came without the
    headers every other answer has (_secure runs for routed requests only).
    Now its status in words, with them."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        said = f"{status}: {HTTPStatus(status).phrase}" if status in _PHRASES else str(status)
        answer = super().handle_error(request, status, exc, said)
        answer.headers.update(_SECURE_HEADERS)
        return answer


_PHRASES: Final = frozenset(status.value for status in HTTPStatus)


class _Busy(asyncio.Protocol):
    """What a connection past MAX_CONNECTIONS (or its address's share) gets:
    503 and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(_BUSY)
        transport.close()


class _Held(asyncio.Protocol):
    """aiohttp's handler of one connection, counted in `held` until it ends,
    and in `by_address` under its peer's address, unless a trusted proxy's;
    the address's share taken, it is busy (503) instead."""

    def __init__(
        self,
        handlers: Callable[[], asyncio.Protocol],
        held: list[int],
        by_address: dict[str, int],
        trusted_proxies: tuple[IpNetwork, ...],
    ) -> None:
        self._handlers, self._held = handlers, held
        self._by_address, self._trusted_proxies = by_address, trusted_proxies
        self._handler: asyncio.Protocol = _Busy()
        self._address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = address(peer[0]) if isinstance(peer, tuple) else ""
        if ip and not within(ip, self._trusted_proxies):
            if self._by_address.get(ip, 0) >= MAX_CONNECTIONS_PER_ADDRESS:
                self._handler.connection_made(transport)  # busy
                return
            self._by_address[ip] = self._by_address.get(ip, 0) + 1
            self._address = ip
        self._handler = self._handlers()
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._held[0] -= 1
        if self._address:
            self._by_address[self._address] -= 1
            if not self._by_address[self._address]:
                del self._by_address[self._address]
        self._handler.connection_lost(exc)


class _CappedSite(web.BaseSite):
    """A TCP site holding at most MAX_CONNECTIONS connections at once, and
    MAX_CONNECTIONS_PER_ADDRESS from one address that is no trusted proxy."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        trusted_proxies: tuple[IpNetwork, ...] = (),
        options: dict[str, Any] | None = None,
    ) -> None:
        """`options`: each connection's handler's (RequestHandler's), as the
        runner's server was given them."""
        super().__init__(runner)  # the stop's timeout is the runner's
        self._host, self._port = host, port
        self._trusted_proxies = trusted_proxies
        self._options = options or {}

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The port bound (one picked for port 0)."""
        server = cast(asyncio.base_events.Server, self._server)
        return int(server.sockets[0].getsockname()[1])

    def beyond_loopback(self) -> list[str]:
        """The addresses bound that are no loopback address (all of them for a
        wildcard such as 0.0.0.0)."""
        server = cast(asyncio.base_events.Server, self._server)
        bound = [str(socket.getsockname()[0]) for socket in server.sockets]
        return [ip for ip in bound if not ipaddress.ip_address(ip.partition("%")[0]).is_loopback]

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def handlers() -> asyncio.Protocol:  # the server's, as it makes them, but _Handler
            return _Handler(server, loop=loop, **self._options)

        held = [0]  # counted as accepted: a burst is accepted before any is made
        by_address: dict[str, int] = {}  # counted as made: the peer is known then

        def connection() -> asyncio.BaseProtocol:
            if held[0] >= MAX_CONNECTIONS:
                return _Busy()
            held[0] += 1
            return _Held(handlers, held, by_address, self._trusted_proxies)

        self._server = await asyncio.get_running_loop().create_server(
            connection, self._host, self._port, backlog=self._backlog
        )


# Seconds between two looks at whether the browser of a count is still there.
GONE_POLL_SECONDS: Final = 0.25


async def _cancel_when_gone(request: web.Request, call: grpc.aio.UnaryUnaryCall[Any, Any]) -> None:
    """Cancels `call` once the browser that asked for it has closed its
    connection: aiohttp goes on with a handler whose browser left."""
    while not call.done():
        transport = request.transport
        if transport is None or transport.is_closing():
            call.cancel()
            return
        await asyncio.sleep(GONE_POLL_SECONDS)


def _error_line(error: grpc.aio.AioRpcError) -> bytes:
    """The last line of an answer a gRPC error cut short: the body a call
    refused so is answered with (its status cannot change once begun)."""
    return json.dumps(_answer_of(error)).encode() + b"\n"


async def _last_line(response: web.StreamResponse, line: bytes, what: str) -> bool:
    """Writes the line that says why a stream or an export ended; whether the
    browser was still there to read it. One gone (a tab closed while Live was
    on, then the server stopped before a heartbeat found it gone) is no error
    of the server's: it was logged as one, "Cannot write to closing transport"."""
    try:
        await response.write(line)
    except ClientConnectionResetError:
        log.debug("the browser of a console %s had gone before its last line", what)
        return False
    return True


def _events_of(message: pb.StreamEventsResponse) -> list[event_pb2.Event]:
    if message.HasField("event"):
        return [message.event]
    if message.HasField("events"):
        return list(message.events.events)
    return []


async def _streaming(request: web.Request, content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": content_type, "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    return response


# The page loads nothing from elsewhere, and nothing may frame it.
# On every answer, the page's, the API's, errors and static files alike: audit
# data must not stay in a browser's cache, nor be framed or sniffed.
_SECURE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_SECURE_HEADERS)


# What an API request's trace is kept under in its request (Console._traced):
# the context its gRPC calls carry, and the trace id its answer names.
_CARRIED: Final = web.RequestKey("sealtrail.trace_context", TraceContext)
_TRACE_ID: Final = web.RequestKey("sealtrail.trace_id", str)
TRACE_ID_HEADER: Final = "X-Trace-Id"


async def _trace_named(request: web.Request, response: web.StreamResponse) -> None:
    """The answer's X-Trace-Id: the trace of its request, errors included
    (an HTTPException, answered by aiohttp, comes here too), and a stream's
    with its first line."""
    trace_id = request.get(_TRACE_ID)
    if trace_id:
        response.headers[TRACE_ID_HEADER] = trace_id


def _browsers_trace(request: web.Request) -> TraceContext:
    """The W3C trace context the browser sent (`traceparent`, `tracestate`),
    read by the propagators the service's interceptor reads a call's with
    (baggage aside): an invalid one, or a traceparent sent twice, is none."""
    carrier: dict[str, str] = {}
    for field in sorted(frozenset(propagate.get_global_textmap().fields) - {"baggage"}):
        sent = request.headers.getall(field, [])
        if sent:
            carrier[field] = ",".join(sent)
    if "," in carrier.get("traceparent", ""):  # two parents are none
        del carrier["traceparent"]
    return extract_trace_context(carrier) if carrier else otel_context.Context()


def _answer_of(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """The JSON a gRPC error is said with: its words and code, and its
    ErrorInfo's reason and BadRequest's fields when it gave them."""
    answer: dict[str, Any] = {
        "error": error.details() or error.code().name,
        "code": error.code().name,
    }
    reason = _reason(error)
    if reason:
        answer["reason"] = reason
    fields = _violations(error)
    if fields:
        answer["fields"] = fields
    return answer


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """gRPC statuses and bad parameters as JSON errors with the matching HTTP status."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except BadParameter as error:
        field = {"field": error.field, "description": error.description}
        return web.json_response({"error": str(error), "fields": [field]}, status=400)
    except grpc.aio.AioRpcError as error:
        retry_after = _retry_after(error)
        return web.json_response(
            _answer_of(error),
            status=_STATUS.get(error.code(), 500),
            headers={"Retry-After": retry_after} if retry_after else None,
        )
