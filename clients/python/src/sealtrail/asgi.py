"""An ASGI middleware that records each state-changing request as an audit event
(ADR 0139): `app = AuditMiddleware(app, client=audit, actor=...)`.

Works with any ASGI 3 application (Starlette, FastAPI, Quart, Django's ASGI
handler) and imports none of them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any, TypeAlias

from sealtrail._async_client import AsyncAuditClient
from sealtrail._middleware import (
    STATE_CHANGING,
    Action,
    Actor,
    AuditedRequest,
    Recorder,
    Resource,
    Skip,
    client_ip_of,
    derived_action,
    elapsed_ms,
    log,
    outcome_of,
    route_of_path,
)

__all__ = ["AuditMiddleware", "AuditedRequest", "derived_action", "outcome_of"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

# The messages after which no more of the response's body follows.
_LAST_BODY = ("http.response.body", "http.response.pathsend")
# The status of a request cancelled before its response started: the client's
# closed request, as nginx names it (ADR 0139).
CANCELLED_STATUS = 499


def _route(scope: Scope, root_path: str) -> str:
    """The route template the framework matched (Starlette and FastAPI put the
    route in `scope["route"]`), under the mounts it went through; else the path."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(template, str) and template.startswith("/"):
        mounted = str(scope.get("root_path", ""))
        prefix = mounted[len(root_path) :] if mounted.startswith(root_path) else ""
        return route_of_path(prefix + template)
    return route_of_path(str(scope.get("path", "")))


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = bytes(name).decode("latin-1").lower()
        text = bytes(value).decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


class AuditMiddleware:
    """Records one event per HTTP request whose method is in `methods` (POST, PUT,
    PATCH, DELETE unless told), with `client` (an AsyncAuditClient of the loop
    the application runs in).

    The event: `actor(request)` (required: an actor id, EventFields such as
    `{"actor_id": ..., "actor_type": "api_key", "credential_hint": ...}`; None, ""
    or fields without an actor id record actor `anonymous`, of the stored default
    type user), `action(request)` (default `derived_action`),
    `resource(request)` (a `(type, id)` pair or EventFields, optional); the
    method, the route template (else the path, never the query string), the
    status, the duration in ms, the peer's IP and user agent, the request id of
    the `request_id_header` header, and the request's trace context. Outcome:
    2xx/3xx success, 401/403 denied, else failure. `skip(request)` true: not
    recorded. Each callable gets the AuditedRequest once the status is known.

    The response's last body message is passed on once the event is
    acknowledged (for a response of one body message, its start too): a
    response a client received whole was recorded. A record that failed is
    logged (logger `sealtrail.middleware`) and counted (`unrecorded`, and the
    OpenTelemetry counter `sealtrail.middleware.unrecorded`); with
    `fail_closed=True` its error is raised instead, so the response is not
    sent (the server answers 500) or, streamed, is cut before its end.

    A request cancelled before its response ended (the server cancelling its
    task, its client gone; the application raising CancelledError) is recorded
    as a failure with the status that went out, else 499, and its cancellation
    goes on once the record is acknowledged or `cancel_grace` seconds passed,
    whichever is first; a record still running then carries on in the
    background, bounded by the client's timeouts (`drain()` awaits it). A
    request whose client left before its response's end went out, as the
    middleware sees it (the server's receive() said `http.disconnect`, as
    uvicorn's and hypercorn's do, cancelling nothing; or its send() raised an
    OSError, as ASGI 2.4 says), is recorded so too, with no wait: a failure,
    the status that went out, else 499; never raised when fail-closed.

    The server's `lifespan.shutdown` reaches the application once those
    records are done, or `drain_timeout` seconds passed (None: no bound; those
    still running then are logged), so an application that closes its client
    in its own shutdown loses none of them. An application that takes no
    lifespan (returns or raises before receiving its startup, as Django's
    handler does) has it answered by the middleware, which drains the same way."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: AsyncAuditClient,
        actor: Actor,
        action: Action | None = None,
        resource: Resource | None = None,
        skip: Skip | None = None,
        methods: Collection[str] = STATE_CHANGING,
        request_id_header: str | None = "x-request-id",
        fail_closed: bool = False,
        cancel_grace: float = 1.0,
        drain_timeout: float | None = 10.0,
    ) -> None:
        if not cancel_grace >= 0:
            raise ValueError("cancel_grace: seconds, 0 or more")
        if drain_timeout is not None and not drain_timeout >= 0:
            raise ValueError("drain_timeout: seconds, 0 or more, or None")
        self.app = app
        self.client = client
        self.cancel_grace = cancel_grace
        self.drain_timeout = drain_timeout
        self._pending: set[asyncio.Task[None]] = set()
        self._recorder = Recorder(
            actor=actor,
            action=action,
            resource=resource,
            skip=skip,
            methods=methods,
            request_id_header=request_id_header,
            fail_closed=fail_closed,
        )

    @property
    def unrecorded(self) -> int:
        """How many requests this middleware failed to record (fail-open or not)."""
        return self._recorder.unrecorded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope.get("type") != "http" or not self._recorder.audits(str(scope.get("method"))):
            await self.app(scope, receive, send)
            return
        await _Exchange(self, scope, send).run(receive)

    async def drain(self, timeout: float | None = None) -> int:
        """Waits for the records of cancelled requests still running (those
        that outlasted `cancel_grace`), at most `timeout` seconds (None: until
        they end); how many still run then. The lifespan's shutdown calls it
        (`drain_timeout`); an application run without a lifespan calls it on
        shutdown, before closing the client, so none is lost."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._pending:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                break
            await asyncio.wait(set(self._pending), timeout=left)
        return len(self._pending)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The server's lifespan, passed on to the application, its shutdown
        once `_drained`; answered here for an application that takes none."""
        took_startup = False

        async def draining_receive() -> Message:
            nonlocal took_startup
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                took_startup = True
            elif kind == "lifespan.shutdown":
                await self._drained()
            return message

        try:
            await self.app(scope, draining_receive, send)
        except Exception as error:
            if took_startup:  # its startup or shutdown failed: the server's to say
                raise
            log.info(
                "the application takes no ASGI lifespan (%s): the audit middleware answers it",
                type(error).__name__,
            )
        else:
            if took_startup:
                return
        # The application returned or raised before its startup (ASGI: it
        # supports no lifespan); the server's messages are all still to come.
        while True:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message.get("type") == "lifespan.shutdown":
                await self._drained()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _drained(self) -> None:
        """`drain()` for `drain_timeout` at shutdown, what it left logged."""
        left = await self.drain(self.drain_timeout)
        if left:
            log.warning(
                "%d audit record(s) of cancelled requests still running at shutdown after"
                " drain_timeout (%g s): lost if the client closes first",
                left,
                self.drain_timeout,
            )

    async def record_cancelled(self, record: Awaitable[None]) -> None:
        """Runs `record` (a cancelled request's) in a task of its own, which a
        second cancellation does not reach, awaited up to `cancel_grace`."""
        task = asyncio.ensure_future(record)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        # Cancelled again: the first cancellation goes on, and the record too.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task}, timeout=self.cancel_grace)

    async def record(
        self, request: AuditedRequest, *, duration_ms: float, cut: bool, raising: bool
    ) -> None:
        """Records the request's event, as `Recorder.recording` says."""
        with self._recorder.recording(
            request, duration_ms=duration_ms, cut=cut, raising=raising
        ) as event:
            if event is not None:
                await self.client.record(event)


class _Exchange:
    """One audited request: the response's start and last body message held
    until its event is recorded."""

    def __init__(self, middleware: AuditMiddleware, scope: Scope, send: Send) -> None:
        self._middleware = middleware
        self._scope = scope
        self._send = send
        self._root_path = str(scope.get("root_path", ""))
        self._started = time.perf_counter()
        self._status: int | None = None
        self._held_start: Message | None = None
        self._start_sent = False
        self._recorded = False
        # The client left before the response's end went out: the server's
        # receive() said `http.disconnect`, or its send() raised an OSError.
        self._client_left = False

    async def run(self, receive: Receive) -> None:
        async def audited_receive() -> Message:
            message = await receive()
            if message.get("type") == "http.disconnect" and not self._recorded:
                self._client_left = True  # before the response's end went out
            return message

        try:
            await self._middleware.app(self._scope, audited_receive, self._audited_send)
        except Exception:
            if not self._recorded:
                # The server answers 500 unless the response had started.
                await self._record(self._cut_status(), cut=True, raising=False)
            raise
        except asyncio.CancelledError:
            if not self._recorded:
                await self._middleware.record_cancelled(
                    self._record(self._cut_status(CANCELLED_STATUS), cut=True, raising=False)
                )
            raise
        if self._recorded:
            return
        if self._client_left:
            await self._record(self._cut_status(), cut=True, raising=False)
        else:  # the application returned without ending its response
            await self._record(self._status or 500, cut=self._status is None, raising=True)
        if self._held_start is not None:
            await self._pass_start()

    def _cut_status(self, otherwise: int = 500) -> int:
        """The status of a response cut short: the one that went out if it had
        started, else 499 if its client had left (or the request was
        cancelled), else `otherwise` (500: what the server answers)."""
        if self._start_sent and self._status:
            return self._status
        return CANCELLED_STATUS if self._client_left else otherwise

    async def _audited_send(self, message: Message) -> None:
        kind = message.get("type")
        if self._recorded:
            await self._server_send(message)
        elif kind == "http.response.start":
            self._status = int(message["status"])
            self._held_start = message
        elif kind in _LAST_BODY and not message.get("more_body", False):
            if self._client_left:  # no client to receive it whole: cut
                await self._record(self._cut_status(), cut=True, raising=False)
            else:
                await self._record(self._status or 500, cut=False, raising=True)
            await self._pass_start()
            await self._server_send(message)
        else:
            await self._pass_start()
            await self._server_send(message)

    async def _server_send(self, message: Message) -> None:
        """The server's send; one that raises an OSError (ASGI 2.4: its client
        is gone) marks the response as cut, whatever the application does next."""
        try:
            await self._send(message)
        except OSError:
            self._client_left = True
            raise

    async def _pass_start(self) -> None:
        if self._held_start is not None:
            start, self._held_start = self._held_start, None
            await self._server_send(start)
            self._start_sent = True  # not if it raised: nothing went out

    async def _record(self, status: int, *, cut: bool, raising: bool) -> None:
        self._recorded = True
        headers = _headers(self._scope)
        client = self._scope.get("client")
        request = AuditedRequest(
            method=str(self._scope.get("method", "")).upper(),
            route=_route(self._scope, self._root_path),
            path=str(self._scope.get("path", "")),
            status_code=status,
            headers=headers,
            client_ip=client_ip_of(client[0] if client else None),
            scope=self._scope,
        )
        await self._middleware.record(
            request, duration_ms=elapsed_ms(self._started), cut=cut, raising=raising
        )
