"""The ASGI and WSGI middlewares (sealtrail.asgi, sealtrail.wsgi; ADR 0139)
against a real server: a Starlette application driven by httpx's ASGI
transport, a WSGI one by wsgiref's handler; what they recorded, read back by
Query."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.handlers import SimpleHandler
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server
from wsgiref.util import FileWrapper

import flask
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from sealtrail import AsyncAuditClient, AuditClient, UnavailableError, build_filter
from sealtrail.asgi import AuditedRequest
from sealtrail.asgi import AuditMiddleware as AsgiAudit
from sealtrail.v1 import event_pb2
from sealtrail.wsgi import AuditMiddleware as WsgiAudit
from sealtrail.wsgi import StartResponse
from tests.conftest import ServerThread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def _nothing_listening() -> str:
    """An address on 127.0.0.1 where nothing listens (a port the system gave, closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _actor(request: AuditedRequest) -> str | None:
    return request.headers.get("x-user")


async def _created(request: Request) -> Response:
    request.state.template = request.path_params["id"]
    return JSONResponse({"id": request.path_params["id"]}, status_code=201)


async def _read(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["id"]})


async def _refused(request: Request) -> Response:
    return Response("no", status_code=403)


async def _broken(request: Request) -> Response:
    raise RuntimeError("the handler failed")


async def _streamed(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(3):
            await asyncio.sleep(0.02)  # the stream takes time: its duration counts it
            yield f"chunk {n}\n".encode()
        request.state.streamed_ms = (time.perf_counter() - began) * 1000

    began = time.perf_counter()
    return StreamingResponse(chunks(), status_code=200)


def _starlette() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/templates/{id}", _created, methods=["POST"]),
            Route("/v1/templates/{id}", _read, methods=["GET"]),
            Route("/v1/refused", _refused, methods=["POST"]),
            Route("/v1/broken", _broken, methods=["POST"]),
            Route("/v1/export", _streamed, methods=["POST"]),
            Mount("/orgs/{org}", routes=[Route("/members/{id}", _created, methods=["DELETE"])]),
        ]
    )


def _http(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(
        app=app, client=("203.0.113.9", 50123), raise_app_exceptions=raise_app_exceptions
    )
    return httpx.AsyncClient(transport=transport, base_url="http://service.test")


async def _recorded(audit: AsyncAuditClient) -> list[event_pb2.Event]:
    return [event async for event in audit.query(order="oldest")]


async def test_asgi_records_a_request_by_its_route_template_and_skips_reads(
    server: ServerThread, tenant: str
) -> None:
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        app = AsgiAudit(
            _starlette(),
            client=audit,
            actor=_actor,
            resource=lambda request: ("template", request.scope["path_params"]["id"]),
        )
        incoming = str(uuid.uuid4())
        async with _http(app) as http:
            answer = await http.post(
                "/v1/templates/tpl_7?access_token=s3cret",
                headers={
                    "x-user": "u_42",
                    "user-agent": "billing-cli/2.1",
                    "x-request-id": incoming,
                    "traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01",
                },
            )
            assert answer.status_code == 201
            assert answer.json() == {"id": "tpl_7"}
            assert (await http.get("/v1/templates/tpl_7")).status_code == 200
        (event,) = await _recorded(audit)
        assert app.unrecorded == 0
    assert event.action == "http.v1.templates.post"
    assert event.outcome == event_pb2.OUTCOME_SUCCESS
    assert (event.actor.id, event.resource.type, event.resource.id) == ("u_42", "template", "tpl_7")
    context = event.context
    assert (context.http_method, context.http_route) == ("POST", "/v1/templates/{id}")
    assert context.http_status_code == 201
    assert context.duration_ms > 0
    assert (context.ip, context.user_agent) == ("203.0.113.9", "billing-cli/2.1")
    assert context.request_id == incoming
    assert (context.trace_id, context.span_id) == (TRACE_ID, SPAN_ID)


async def test_asgi_records_denials_failures_and_what_skip_leaves(
    server: ServerThread, tenant: str
) -> None:
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        app = AsgiAudit(
            _starlette(),
            client=audit,
            actor=_actor,
            action=lambda request: "template.refused" if request.status_code == 403 else "x.y",
            skip=lambda request: request.path == "/v1/templates/skipped",
        )
        async with _http(app) as http:
            assert (await http.post("/v1/templates/skipped")).status_code == 201
            assert (await http.post("/v1/refused")).status_code == 403
            # The handler's exception reaches the server as it would without
            # the middleware; the request is recorded as the 500 it answered.
            with pytest.raises(RuntimeError, match="the handler failed"):
                await http.post("/v1/broken", headers={"x-user": "u_9"})
            answer = await http.delete("/orgs/acme/members/m_1")
            assert answer.status_code == 201
        refused, broken, mounted = await _recorded(audit)
    assert (refused.action, refused.actor.id) == ("template.refused", "anonymous")
    assert refused.outcome == event_pb2.OUTCOME_DENIED
    assert refused.context.http_status_code == 403
    assert (broken.actor.id, broken.context.http_status_code) == ("u_9", 500)
    assert broken.outcome == event_pb2.OUTCOME_FAILURE
    assert broken.context.http_route == "/v1/broken"
    # Under a mount: the mount's path as matched, then the route's template.
    assert mounted.context.http_route == "/orgs/acme/members/{id}"


async def test_asgi_times_a_streamed_response_to_its_last_chunk(
    server: ServerThread, tenant: str
) -> None:
    states: list[Any] = []

    def actor(request: AuditedRequest) -> str:
        states.append(request.scope["state"])
        return "u_1"

    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        app = AsgiAudit(_starlette(), client=audit, actor=actor)
        async with _http(app) as http:
            answer = await http.post("/v1/export")
        assert answer.text == "chunk 0\nchunk 1\nchunk 2\n"
        (event,) = await _recorded(audit)
    (state,) = states
    # The whole stream, measured from before the handler began.
    assert event.context.duration_ms >= state["streamed_ms"] > 0


async def test_asgi_without_sealtrail_answers_and_counts_or_refuses_when_fail_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with AsyncAuditClient(
        _nothing_listening(), token="stk_unused", max_attempts=1, timeout=5
    ) as audit:
        fail_open = AsgiAudit(_starlette(), client=audit, actor=_actor)
        with caplog.at_level(logging.ERROR, logger="sealtrail.middleware"):
            async with _http(fail_open) as http:
                answer = await http.post("/v1/templates/t_1")
        assert answer.status_code == 201
        assert fail_open.unrecorded == 1
        (logged,) = [r for r in caplog.records if r.name == "sealtrail.middleware"]
        assert logged.getMessage().startswith(
            "the audit record of POST /v1/templates/{id} (status 201) failed: "
        )

        fail_closed = AsgiAudit(_starlette(), client=audit, actor=_actor, fail_closed=True)
        async with _http(fail_closed) as http:
            with pytest.raises(UnavailableError):
                await http.post("/v1/templates/t_2")
        async with _http(fail_closed, raise_app_exceptions=False) as http:
            refused = await http.post("/v1/templates/t_3")
        # Nothing of the handler's answer went out: the server's own 500.
        assert refused.status_code == 500
        assert refused.text == ""
        assert fail_closed.unrecorded == 2


async def test_a_callable_that_raises_is_logged_and_counted_the_response_going_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def actor(request: AuditedRequest) -> str:
        raise LookupError("the session store is down")

    # The callable fails before anything reaches Sealtrail (here, nothing would).
    async with AsyncAuditClient(_nothing_listening(), token="stk_unused") as asynchronous:
        asgi = AsgiAudit(_starlette(), client=asynchronous, actor=actor)
        with caplog.at_level(logging.ERROR, logger="sealtrail.middleware"):
            async with _http(asgi) as http:
                answer = await http.post("/v1/templates/t_1")
    with AuditClient(_nothing_listening(), token="stk_unused") as synchronous:
        wsgi = WsgiAudit(_wsgi_app, client=synchronous, actor=actor)
        answered = _wsgi_call(wsgi, "POST", "/items/1")
        closed = WsgiAudit(_wsgi_app, client=synchronous, actor=actor, fail_closed=True)
        refused, _, logged = _wsgi_call(closed, "POST", "/items/2")
    assert (answer.status_code, answered[:2]) == (201, (201, b"created"))
    assert (asgi.unrecorded, wsgi.unrecorded) == (1, 1)
    failures = [r for r in caplog.records if r.name == "sealtrail.middleware"]
    # Each with its traceback; fail-closed's too, whose error is the server's 500.
    assert [r.exc_info[0] for r in failures if r.exc_info] == [LookupError] * 3
    assert refused == 500 and "the session store is down" in logged and closed.unrecorded == 1


def _waiting_until_cancelled() -> tuple[asyncio.Event, Callable[[Request], Awaitable[Response]]]:
    """A Starlette endpoint that waits until its request is cancelled, and
    the event it sets once a request entered it."""
    entered = asyncio.Event()

    async def waits(request: Request) -> Response:
        entered.set()
        await asyncio.Event().wait()  # until the server cancels the request
        raise AssertionError("not cancelled")

    return entered, waits


async def test_asgi_records_a_cancelled_request_as_a_499_failure_and_cancels_on(
    server: ServerThread, tenant: str
) -> None:
    entered, waits = _waiting_until_cancelled()

    async def cancels(request: Request) -> Response:
        raise asyncio.CancelledError  # as anyio's cancel scopes deliver one

    routes = [Route("/v1/slow/{id}", waits, methods=["PUT"])]
    routes.append(Route("/v1/cancels", cancels, methods=["POST"]))
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        app = AsgiAudit(Starlette(routes=routes), client=audit, actor=_actor)
        async with _http(app) as http:
            request = asyncio.create_task(http.put("/v1/slow/s_1", headers={"x-user": "u_5"}))
            await entered.wait()
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            with pytest.raises(asyncio.CancelledError):
                await http.post("/v1/cancels")
        slow, cancelled = await _recorded(audit)
        assert app.unrecorded == 0
    # The action may have happened: recorded, as the client's closed request
    # nginx names 499, a failure (it did not end as the application meant).
    assert (slow.actor.id, slow.action) == ("u_5", "http.v1.slow.put")
    assert (slow.context.http_route, slow.context.http_status_code) == ("/v1/slow/{id}", 499)
    assert slow.outcome == event_pb2.OUTCOME_FAILURE
    assert (cancelled.context.http_status_code, cancelled.outcome) == (
        499,
        event_pb2.OUTCOME_FAILURE,
    )


async def test_asgi_cancellation_waits_for_its_record_no_longer_than_cancel_grace(
    silent: str,
) -> None:
    entered, waits = _waiting_until_cancelled()

    # Sealtrail takes the connection and never answers: the record would wait
    # out the client's timeout (a minute), the cancellation only `cancel_grace`.
    audit = AsyncAuditClient(silent, token="stk_unused", max_attempts=1, timeout=60)
    app = AsgiAudit(
        Starlette(routes=[Route("/v1/slow", waits, methods=["POST"])]),
        client=audit,
        actor=_actor,
        cancel_grace=0.1,
    )
    async with _http(app) as http:
        request = asyncio.create_task(http.post("/v1/slow"))
        await entered.wait()
        request.cancel()
        async with asyncio.timeout(30):  # a bound far below the record's own
            with pytest.raises(asyncio.CancelledError):
                await request
    # The record carried on; closing the client ends it, as unrecorded.
    await audit.close()
    await app.drain()
    assert app.unrecorded == 1


@contextlib.asynccontextmanager
async def _uvicorn(app: Any) -> AsyncIterator[tuple[int, asyncio.Event]]:
    """`app` served by uvicorn on 127.0.0.1 port 0, in this loop: its port, and
    an event set once a request's call of the application (the middleware's
    record included) has returned."""
    returned = asyncio.Event()

    async def served(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        finally:
            returned.set()

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()  # a client's connection waits in the backlog, never refused
    config = uvicorn.Config(served, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[listening]))
    try:
        yield listening.getsockname()[1], returned
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await serving
        listening.close()


async def _gone_after(
    port: int, path: str, until: Callable[[asyncio.StreamReader], Awaitable[object]]
) -> None:
    """A raw HTTP/1.1 POST of `path` (by u_7) whose client closes its
    connection once `until(its reader)` returned, the response not read whole."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nhost: service.test\r\nx-user: u_7\r\n"
    writer.write(f"{head}content-length: 0\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(30):
        await until(reader)
    writer.close()
    await writer.wait_closed()


async def test_asgi_records_a_request_whose_client_left_under_uvicorn_as_cut(
    server: ServerThread, tenant: str
) -> None:
    # uvicorn cancels nothing when a client goes: the application's receive()
    # says `http.disconnect` (Starlette's StreamingResponse listens for it and
    # ends its stream), and its send() goes nowhere.
    entered = asyncio.Event()

    async def export(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"chunk 0\n"
            await asyncio.Event().wait()  # more to come, until the client goes
            yield b"never\n"

        return StreamingResponse(chunks())

    async def answers_anyway(request: Request) -> Response:
        await request.body()
        entered.set()
        message = await request.receive()  # the body read, only its client leaving is left
        assert message["type"] == "http.disconnect"
        return JSONResponse({"cancelled": request.path_params["id"]}, status_code=201)

    routes = [
        Route("/v1/export/{id}", export, methods=["POST"]),
        Route("/v1/orders/{id}/cancel", answers_anyway, methods=["POST"]),
    ]
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        app = AsgiAudit(Starlette(routes=routes), client=audit, actor=_actor)
        async with _uvicorn(app) as (port, returned):
            await _gone_after(port, "/v1/export/e_1", lambda r: r.readuntil(b"chunk 0\n"))
            await returned.wait()
            returned.clear()
            await _gone_after(port, "/v1/orders/o_1/cancel", lambda r: entered.wait())
            await returned.wait()
        streamed, answered = await _recorded(audit)
        assert app.unrecorded == 0
    # Its response had started: the status that went out, but the client
    # never had it whole; a failure.
    assert (streamed.actor.id, streamed.context.http_route) == ("u_7", "/v1/export/{id}")
    assert (streamed.context.http_status_code, streamed.outcome) == (
        200,
        event_pb2.OUTCOME_FAILURE,
    )
    # Gone before the response started: nginx's 499, as a cancelled request.
    assert (answered.context.http_route, answered.context.http_status_code) == (
        "/v1/orders/{id}/cancel",
        499,
    )
    assert answered.outcome == event_pb2.OUTCOME_FAILURE


async def test_asgi_records_a_request_whose_send_raised_that_its_client_left(
    server: ServerThread, tenant: str
) -> None:
    # ASGI 2.4: a server's send() raises an OSError once the client is gone;
    # an application may take that as the end of its response and return.
    async def leaves_quietly(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        try:
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            await send({"type": "http.response.body", "body": b"rest"})
        except OSError:
            return

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def gone(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise ConnectionResetError("the client went")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "method": "POST",
        "path": "/v1/reports",
        "headers": [(b"x-user", b"u_8")],
        "client": ("203.0.113.9", 50123),
    }
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        app = AsgiAudit(leaves_quietly, client=audit, actor=_actor)
        await app(scope, receive, gone)
        (event,) = await _recorded(audit)
    assert (event.actor.id, event.context.http_status_code) == ("u_8", 201)
    assert event.outcome == event_pb2.OUTCOME_FAILURE


class _Lifespan:
    """An ASGI server's side of the `lifespan` scope, driven by hand."""

    def __init__(self, app: Any) -> None:
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.ensure_future(app(scope, self._to_app.get, self._from_app.put))

    async def step(self, kind: str) -> str:
        """Sends `lifespan.<kind>`; the type of the application's answer (its
        error, if it ended without one)."""
        await self._to_app.put({"type": f"lifespan.{kind}"})
        answer = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({answer, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            answer.cancel()
            self.task.result()
            raise AssertionError(f"the application ended without answering lifespan.{kind}")
        return str(answer.result()["type"])


async def _cancelled_put(app: Any, entered: asyncio.Event) -> None:
    """A PUT of /v1/slow/s_1 (by u_5) that the server cancels once the
    application has it."""
    async with _http(app) as http:
        request = asyncio.create_task(http.put("/v1/slow/s_1", headers={"x-user": "u_5"}))
        await entered.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request


async def test_asgi_drains_records_of_cancelled_requests_at_lifespan_shutdown(
    server: ServerThread, tenant: str
) -> None:
    entered, waits = _waiting_until_cancelled()
    shut: list[int] = []

    audit = AsyncAuditClient(server.target, token=server.token(tenant))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # The application's own shutdown closes the client: a record still
        # running then would be lost.
        shut.append(app_.unrecorded)
        await audit.close()

    routes = [Route("/v1/slow/{id}", waits, methods=["PUT"])]
    starlette = Starlette(routes=routes, lifespan=lifespan)
    # No grace: the cancellation goes on at once, the record in the background.
    app_ = AsgiAudit(starlette, client=audit, actor=_actor, cancel_grace=0)
    server_side = _Lifespan(app_)
    assert await server_side.step("startup") == "lifespan.startup.complete"
    await _cancelled_put(app_, entered)
    assert await server_side.step("shutdown") == "lifespan.shutdown.complete"
    await server_side.task
    # Drained before the application's shutdown began: recorded, nothing lost.
    assert shut == [0] and app_.unrecorded == 0
    with AuditClient(server.target, token=server.token(tenant)) as reader:
        [event] = reader.query()
    assert (event.actor.id, event.context.http_status_code) == ("u_5", 499)


async def test_asgi_answers_the_lifespan_of_an_application_without_one_and_drains(
    server: ServerThread, tenant: str
) -> None:
    entered = asyncio.Event()

    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        # As Django's ASGI handler: any other scope is refused.
        if scope["type"] != "http":
            raise ValueError(f"can only handle http, not {scope['type']}")
        entered.set()
        await asyncio.Event().wait()

    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        app = AsgiAudit(http_only, client=audit, actor=_actor, cancel_grace=0)
        server_side = _Lifespan(app)
        assert await server_side.step("startup") == "lifespan.startup.complete"
        await _cancelled_put(app, entered)
        assert await server_side.step("shutdown") == "lifespan.shutdown.complete"
        await server_side.task
    # Drained at the shutdown, before the client closed.
    assert app.unrecorded == 0
    with AuditClient(server.target, token=server.token(tenant)) as reader:
        [event] = reader.query()
    assert (event.actor.id, event.context.http_status_code) == ("u_5", 499)


async def test_asgi_shutdown_waits_for_records_no_longer_than_drain_timeout(
    silent: str, caplog: pytest.LogCaptureFixture
) -> None:
    entered, waits = _waiting_until_cancelled()

    # Sealtrail never answers: the record would wait out the client's minute.
    audit = AsyncAuditClient(silent, token="stk_unused", max_attempts=1, timeout=60)
    starlette = Starlette(routes=[Route("/v1/slow/s_1", waits, methods=["PUT"])])
    app = AsgiAudit(starlette, client=audit, actor=_actor, cancel_grace=0, drain_timeout=0.1)
    server_side = _Lifespan(app)
    assert await server_side.step("startup") == "lifespan.startup.complete"
    await _cancelled_put(app, entered)
    async with asyncio.timeout(30):  # a bound far below the record's own
        assert await server_side.step("shutdown") == "lifespan.shutdown.complete"
    await server_side.task
    assert "1 audit record(s) of cancelled requests still running at shutdown" in caplog.text
    await audit.close()
    assert await app.drain() == 0 and app.unrecorded == 1
    with pytest.raises(ValueError, match="drain_timeout"):
        AsgiAudit(starlette, client=audit, actor=_actor, drain_timeout=-1)


def _wsgi_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/broken":
        raise RuntimeError("the handler failed")
    if path.startswith("/stream"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part {n}\n".encode() for n in range(3))
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"created"]


def _wsgi_call(
    app: Any, method: str, path: str, query: str = "", **headers: str
) -> tuple[int, bytes, str]:
    """The status and body of the HTTP response wsgiref's handler writes for a
    request, and what it wrote to its error stream (an application's traceback)."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "service.test",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "198.51.100.4",
        **{f"HTTP_{name.upper()}": value for name, value in headers.items()},
    }
    out, errors = io.BytesIO(), io.StringIO()
    SimpleHandler(io.BytesIO(), out, errors, environ).run(app)
    head, _, body = out.getvalue().partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, errors.getvalue()


@pytest.fixture
def audit(server: ServerThread, tenant: str) -> Iterator[AuditClient]:
    with AuditClient(server.target, token=server.token(tenant)) as client:
        yield client


def test_wsgi_records_requests_by_route_or_path_never_the_query_string(
    audit: AuditClient,
) -> None:
    app = WsgiAudit(
        _wsgi_app,
        client=audit,
        actor=lambda request: {"actor_id": "svc", "actor_type": "service"},
        route=lambda environ: "/items/{id}" if environ["PATH_INFO"].startswith("/items/") else None,
    )
    assert _wsgi_call(app, "PUT", "/items/9", "token=s3cret", USER_AGENT="curl/8")[:2] == (
        201,
        b"created",
    )
    assert _wsgi_call(app, "POST", "/stream/a b?", "q=1")[:2] == (200, b"part 0\npart 1\npart 2\n")
    assert _wsgi_call(app, "GET", "/items/9")[0] == 201
    broken, _, logged = _wsgi_call(app, "DELETE", "/broken")
    # The handler's exception reached the server, which answered 500.
    assert broken == 500 and "the handler failed" in logged

    put, stream, failed = audit.query(order="oldest")
    assert (put.action, put.actor.id, put.actor.type) == (
        "http.items.put",
        "svc",
        event_pb2.ACTOR_TYPE_SERVICE,
    )
    assert (put.context.http_route, put.context.http_status_code) == ("/items/{id}", 201)
    assert (put.context.ip, put.context.user_agent) == ("198.51.100.4", "curl/8")
    assert put.context.duration_ms > 0
    assert put.outcome == event_pb2.OUTCOME_SUCCESS
    # A decoded `?` in the path is no query string: encoded again.
    assert stream.context.http_route == "/stream/a%20b%3F"
    assert stream.context.http_status_code == 200
    assert (failed.context.http_status_code, failed.outcome) == (500, event_pb2.OUTCOME_FAILURE)
    assert len(audit.query_page(build_filter(http_status_classes="5xx")).events) == 1


def test_wsgi_records_the_path_when_the_route_callable_raises(
    audit: AuditClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = WsgiAudit(
        _wsgi_app,
        client=audit,
        actor=lambda request: "u_1",
        route=lambda environ: environ["werkzeug.request"].url_rule.rule,  # no Flask here
    )
    with caplog.at_level(logging.ERROR, logger="sealtrail.middleware"):
        assert _wsgi_call(app, "POST", "/items/4")[:2] == (201, b"created")
    (event,) = audit.query()
    assert (event.context.http_route, event.context.http_status_code) == ("/items/4", 201)
    (logged,) = [r for r in caplog.records if r.name == "sealtrail.middleware"]
    assert logged.getMessage() == "the audit middleware's route callable failed"
    assert app.unrecorded == 0


def test_wsgi_callables_read_flasks_request_and_g_while_they_are_current(
    audit: AuditClient,
) -> None:
    flask_app = flask.Flask(__name__)

    @flask_app.before_request
    def authenticate() -> None:
        flask.g.user_id = flask.request.headers.get("x-user")

    @flask_app.post("/orders/<id>/cancel")
    def cancel(id: str) -> tuple[dict[str, str], int]:
        return {"cancelled": id}, 201

    def resource(request: AuditedRequest) -> tuple[str, str] | None:
        view_args = flask.request.view_args
        return ("order", view_args["id"]) if view_args else None

    app = WsgiAudit(
        flask_app.wsgi_app,
        client=audit,
        actor=lambda request: flask.g.get("user_id"),
        action=lambda request: f"order.{flask.request.endpoint or 'unmatched'}",
        resource=resource,
    )
    flask_app.wsgi_app = app  # type: ignore[method-assign]
    with flask_app.test_client() as http:
        answer = http.post("/orders/o_7/cancel", headers={"x-user": "u_42"})
        missing = http.post("/orders", headers={"x-user": "u_43"})
    assert (answer.status_code, missing.status_code) == (201, 404)
    assert app.unrecorded == 0
    cancelled, unmatched = audit.query(order="oldest")
    assert (cancelled.actor.id, cancelled.action) == ("u_42", "order.cancel")
    assert (cancelled.resource.type, cancelled.resource.id) == ("order", "o_7")
    assert (unmatched.actor.id, unmatched.action) == ("u_43", "order.unmatched")
    assert (unmatched.context.http_status_code, unmatched.resource.id) == (404, "")


def test_a_request_without_an_actor_is_recorded_as_anonymous_found_as_such(
    audit: AuditClient,
) -> None:
    actors: dict[str, Any] = {
        "/none": None,
        "/blank": "",  # an empty header: no one, not a refused record
        "/fields": {"ip": "192.0.2.8"},  # fields without an actor id
        "/named": "u_1",
    }
    app = WsgiAudit(_wsgi_app, client=audit, actor=lambda request: actors[request.path], route=None)
    for path in actors:
        assert _wsgi_call(app, "POST", path)[0] == 201
    assert app.unrecorded == 0
    anonymous = list(audit.query(build_filter(actor="anonymous"), order="oldest"))
    assert [event.context.http_route for event in anonymous] == ["/none", "/blank", "/fields"]
    # Stored as actor type user, the server's default for an unset type.
    assert {event.actor.type for event in anonymous} == {event_pb2.ACTOR_TYPE_USER}
    assert anonymous[2].context.ip == "192.0.2.8"


def test_wsgi_without_sealtrail_answers_and_counts_or_refuses_when_fail_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with AuditClient(_nothing_listening(), token="stk_unused", max_attempts=1) as audit:
        fail_open = WsgiAudit(_wsgi_app, client=audit, actor=lambda request: "u_1")
        with caplog.at_level(logging.ERROR, logger="sealtrail.middleware"):
            answered = _wsgi_call(fail_open, "POST", "/items/1")
        assert answered[:2] == (201, b"created")
        assert fail_open.unrecorded == 1
        assert any(r.name == "sealtrail.middleware" for r in caplog.records)

        fail_closed = WsgiAudit(_wsgi_app, client=audit, actor=lambda r: "u_1", fail_closed=True)
        refused, body, logged = _wsgi_call(fail_closed, "POST", "/items/2")
        assert refused == 500 and b"created" not in body
        assert "UnavailableError" in logged
        # Streamed: what went out before the end, without its last chunk.
        assert _wsgi_call(fail_closed, "POST", "/stream")[:2] == (200, b"part 0\npart 1\n")
        assert fail_closed.unrecorded == 2


class _SendfileHandler(ServerHandler):
    """wsgiref's handler with the sendfile fast path PEP 3333 leaves to servers
    (gunicorn's, for one): a response that is the server's own
    `wsgi.file_wrapper` is sent by os.sendfile, never iterated in Python."""

    def sendfile(self) -> bool:
        source = self.file_sent().fileno()
        self.send_headers()
        self._flush()
        target = self.request_handler.connection.fileno()
        offset, size = 0, os.fstat(source).st_size
        while offset < size:
            offset += os.sendfile(target, source, offset, size - offset)
        self.request_handler.server.sendfiled.append(size)  # type: ignore[attr-defined]
        return True

    def file_sent(self) -> Any:
        assert isinstance(self.result, FileWrapper)
        return self.result.filelike


class _FunctionWrapperHandler(_SendfileHandler):
    """As uWSGI's: `wsgi.file_wrapper` is a function (no class to test a body
    against), which returns the file it is given as it is, marked; a response
    that is that very object is sent by sendfile."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wrapped: Any = None
        self.wsgi_file_wrapper = self._wrap  # type: ignore[assignment]

    def _wrap(self, filelike: Any, block_size: int = 8192) -> Any:
        self.wrapped = filelike
        return filelike

    def result_is_file(self) -> bool:
        return self.wrapped is not None and self.result is self.wrapped

    def file_sent(self) -> Any:
        return self.result


class _SendfileRequestHandler(WSGIRequestHandler):
    def handle(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if not self.parse_request():
            return
        handler = self.server.handling(  # type: ignore[attr-defined]
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=False
        )
        handler.request_handler = self
        handler.run(self.server.get_app())  # type: ignore[attr-defined]


@contextlib.contextmanager
def _wsgi_server(
    app: Any, handling: type[_SendfileHandler] = _SendfileHandler
) -> Iterator[tuple[str, list[int]]]:
    """A wsgiref server of `app` on 127.0.0.1 port 0, sending file responses by
    sendfile (`handling` them): its URL, and the sizes it sent so."""
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_SendfileRequestHandler)
    sendfiled: list[int] = []
    server.sendfiled = sendfiled  # type: ignore[attr-defined]
    server.handling = handling  # type: ignore[attr-defined]
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", sendfiled
    finally:
        server.shutdown()
        serving.join()
        server.server_close()


def test_wsgi_records_a_file_response_and_leaves_it_to_the_servers_sendfile(
    audit: AuditClient, tmp_path: Path
) -> None:
    report = tmp_path / "report.csv"
    report.write_bytes(b"id,total\n" + b"7,42\n" * 50_000)

    def download(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        size = str(report.stat().st_size)
        start_response("200 OK", [("Content-Type", "text/csv"), ("Content-Length", size)])
        wrapped: Iterable[bytes] = environ["wsgi.file_wrapper"](report.open("rb"), 65536)
        return wrapped

    app = WsgiAudit(download, client=audit, actor=lambda request: "u_3")
    with _wsgi_server(app) as (url, sendfiled), httpx.Client(base_url=url) as http:
        answer = http.post("/v1/reports/r_1/export")
    assert answer.status_code == 200
    assert answer.content == report.read_bytes()
    # The server's file wrapper reached the server: the file went by sendfile.
    assert sendfiled == [report.stat().st_size]
    (event,) = audit.query()
    assert (event.actor.id, event.action) == ("u_3", "http.v1.reports.r_1.export.post")
    assert (event.context.http_status_code, event.outcome) == (200, event_pb2.OUTCOME_SUCCESS)
    assert event.context.ip == "127.0.0.1"

    # Fail-closed without Sealtrail: nothing of the file went out, the server's 500.
    with AuditClient(_nothing_listening(), token="stk_unused", max_attempts=1) as gone:
        closed = WsgiAudit(download, client=gone, actor=lambda request: "u_3", fail_closed=True)
        with _wsgi_server(closed) as (url, sendfiled), httpx.Client(base_url=url) as http:
            refused = http.post("/v1/reports/r_1/export")
    assert refused.status_code == 500
    assert sendfiled == []
    assert closed.unrecorded == 1


def test_wsgi_hands_back_a_file_of_a_function_file_wrapper_as_uwsgis(
    audit: AuditClient, tmp_path: Path
) -> None:
    report = tmp_path / "report.csv"
    report.write_bytes(b"id,total\n" + b"7,42\n" * 50_000)

    def download(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/csv")])
        wrapped: Iterable[bytes] = environ["wsgi.file_wrapper"](report.open("rb"), 65536)
        return wrapped

    def plain_file(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/csv")])
        return report.open("rb")  # a file, but not one the server's wrapper made

    app = WsgiAudit(download, client=audit, actor=lambda request: "u_3")
    plain = WsgiAudit(plain_file, client=audit, actor=lambda request: "u_4")
    served = _wsgi_server(app, _FunctionWrapperHandler)
    with served as (url, sendfiled), httpx.Client(base_url=url) as http:
        answer = http.post("/v1/reports/r_1/export")
    served = _wsgi_server(plain, _FunctionWrapperHandler)
    with served as (url, streamed), httpx.Client(base_url=url) as http:
        answered = http.post("/v1/reports/r_2/export")
    assert answer.content == answered.content == report.read_bytes()
    # The very object the server's function returned reached the server: sent
    # by sendfile. A file of the application's own went through Python.
    assert sendfiled == [report.stat().st_size]
    assert streamed == []
    assert [(event.actor.id, event.context.http_status_code) for event in audit.query()] == [
        ("u_4", 200),
        ("u_3", 200),
    ]
