"""A WSGI middleware that records each state-changing request as an audit event
(ADR 0139): `app.wsgi_app = AuditMiddleware(app.wsgi_app, client=audit, actor=...)`.

Works with any WSGI application (Flask, Django, Pyramid, Falcon) and imports
none of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol, TypeAlias

from sealtrail._client import AuditClient
from sealtrail._middleware import (
    STATE_CHANGING,
    Action,
    Actor,
    AuditedRequest,
    Recorder,
    Resource,
    Said,
    Skip,
    client_ip_of,
    derived_action,
    elapsed_ms,
    log,
    outcome_of,
    route_of_path,
)

__all__ = ["AuditMiddleware", "AuditedRequest", "derived_action", "outcome_of"]

Environ: TypeAlias = dict[str, Any]
ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None]


class StartResponse(Protocol):
    """PEP 3333's `start_response`."""

    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = ...,
        /,
    ) -> Callable[[bytes], object]: ...


WSGIApp: TypeAlias = Callable[[Environ, StartResponse], Iterable[bytes]]
Route: TypeAlias = Callable[[Mapping[str, Any]], "str | None"]


def _headers(environ: Environ) -> dict[str, str]:
    headers = {
        name[5:].replace("_", "-").lower(): str(value)
        for name, value in environ.items()
        if name.startswith("HTTP_")
    }
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(name):
            headers[name.replace("_", "-").lower()] = str(environ[name])
    return headers


class AuditMiddleware:
    """Records one event per HTTP request whose method is in `methods` (POST, PUT,
    PATCH, DELETE unless told), with `client` (an AuditClient, which threads may
    share). The event and the callables are those of `sealtrail.asgi.AuditMiddleware`.

    `route(environ)` gives the route template where the framework keeps one
    (Flask: `flask.request.url_rule.rule`, the client README's sample); without
    it, when it returns None or raises (logged), the route is SCRIPT_NAME and
    PATH_INFO (never the query string). It and the other callables are called
    when the application calls `start_response`, its framework's request still
    current (Flask's `request` and `g`), with the status it gave; if it raised
    before, when the event is made.

    The response's last chunk is passed on once the event is acknowledged (a
    body of one chunk, the common case, with its headers): a response a client
    received whole was recorded. A record that failed is logged and counted
    (`unrecorded`); with `fail_closed=True` its error is raised instead, so
    the server answers 500 or, streamed, cuts the response before its end.

    A response that is the server's own `wsgi.file_wrapper` (Flask's
    `send_file`; an instance of a class wrapper, or the very object a function
    wrapper such as uWSGI's returned) is handed back to the server as it is,
    for its sendfile path, once the event is recorded: before the file
    begins, its duration to the application's answer."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        client: AuditClient,
        actor: Actor,
        action: Action | None = None,
        resource: Resource | None = None,
        skip: Skip | None = None,
        route: Route | None = None,
        methods: Collection[str] = STATE_CHANGING,
        request_id_header: str | None = "x-request-id",
        fail_closed: bool = False,
    ) -> None:
        self.app = app
        self.client = client
        self.route = route
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

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self._recorder.audits(str(environ.get("REQUEST_METHOD", ""))):
            return self.app(environ, start_response)
        exchange = _Exchange(self, environ)

        def audited_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None, /
        ) -> Callable[[bytes], object]:
            exchange.answered(int(status.split(" ", 1)[0]))
            return start_response(status, headers, exc_info)

        files = _ServerFiles(environ)
        try:
            body = self.app(environ, audited_start_response)
        except Exception:
            exchange.record(cut=True, raising=False)
            raise
        finally:
            files.restore()
        if exchange.status is not None and files.made(body):
            # The server sends the file itself (sendfile), and no chunk can be
            # held back: recorded before it begins.
            try:
                exchange.record(cut=False, raising=True)
            except BaseException:
                _close(body)
                raise
            return body
        return _Body(body, exchange)

    def said(self, request: AuditedRequest) -> Said:
        """What the callables say of the request, asked now."""
        return self._recorder.said(request)

    def record(
        self,
        request: AuditedRequest,
        *,
        duration_ms: float,
        cut: bool,
        raising: bool,
        said: Said | None,
    ) -> None:
        """Records the request's event, as `Recorder.recording` says."""
        with self._recorder.recording(
            request, duration_ms=duration_ms, cut=cut, raising=raising, said=said
        ) as event:
            if event is not None:
                self.client.record(event)


class _Exchange:
    """One audited request: its status once the application gives it, and what
    the callables said of it then."""

    def __init__(self, middleware: AuditMiddleware, environ: Environ) -> None:
        self._middleware = middleware
        self._environ = environ
        self._started = time.perf_counter()
        self.status: int | None = None
        self.passed = False  # a chunk of the body was passed on to the server
        self.recorded = False
        self._route: str | None = None
        self._route_read = False
        self._said: Said | None = None

    def answered(self, status: int) -> None:
        """The application calls `start_response`: a framework's request is still
        current (Flask's request context, `flask.request` and `flask.g`, ends
        once its `wsgi_app` returns), so the route and the callables are read
        now, again if it calls it again (with `exc_info`, another status)."""
        self.status = status
        self._read_route()
        self._said = self._middleware.said(self._request(status))

    def _read_route(self) -> None:
        """The `route` callable's template, read once. One that raises is
        logged; the path stands."""
        if self._route_read or self._middleware.route is None:
            return
        self._route_read = True
        try:
            self._route = self._middleware.route(self._environ)
        except Exception as error:
            log.error("the audit middleware's route callable failed", exc_info=error)

    def _request(self, status: int) -> AuditedRequest:
        environ = self._environ
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        return AuditedRequest(
            method=str(environ.get("REQUEST_METHOD", "")).upper(),
            route=route_of_path(self._route or path),
            path=path,
            status_code=status,
            headers=_headers(environ),
            client_ip=client_ip_of(environ.get("REMOTE_ADDR")),
            scope=environ,
        )

    def record(self, *, cut: bool, raising: bool) -> None:
        if self.recorded:
            return
        self.recorded = True
        self._read_route()
        # Cut before a byte of its body went out, the server answers 500.
        sent = self.status is not None and (self.passed or not cut)
        status = self.status if sent and self.status is not None else 500
        # The callables said their word at start_response, with the status the
        # application gave; asked now only if it never called it (it raised).
        self._middleware.record(
            self._request(status),
            duration_ms=elapsed_ms(self._started),
            cut=cut,
            raising=raising,
            said=self._said,
        )


_NOTHING: Any = object()


class _ServerFiles:
    """Tells whether a body is what the server's `wsgi.file_wrapper` made, which
    the server may send by sendfile when it gets it back as it made it.

    A class (wsgiref's, gunicorn's): the body is one of its instances. A
    function (uWSGI's, which returns the file itself and recognises the very
    object it returned): while the application runs, `environ` holds a function
    of the middleware's that calls the server's and notes what it returned; the
    server's is put back before the body goes to the server, which may read it
    again. The body is such an object, by identity, not a file of the
    application's own."""

    def __init__(self, environ: Environ) -> None:
        self._environ = environ
        self._wrapper = environ.get("wsgi.file_wrapper")
        self._made: list[object] = []
        if callable(self._wrapper) and not isinstance(self._wrapper, type):
            environ["wsgi.file_wrapper"] = self._wrap

    def _wrap(self, *args: Any, **kwargs: Any) -> Any:
        assert self._wrapper is not None
        made = self._wrapper(*args, **kwargs)
        self._made.append(made)
        return made

    def restore(self) -> None:
        """The server's own `wsgi.file_wrapper` back in `environ`."""
        if self._environ.get("wsgi.file_wrapper") is self._wrap:
            self._environ["wsgi.file_wrapper"] = self._wrapper

    def made(self, body: Iterable[bytes]) -> bool:
        """Whether `body` is what the server's `wsgi.file_wrapper` made."""
        if isinstance(self._wrapper, type):
            return isinstance(body, self._wrapper)
        return any(body is made for made in self._made)


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


class _Body:
    """The application's body, each chunk passed on once the next is known, so
    the last is passed on only after the event is recorded; `close()` closes the
    application's body (PEP 3333), recording first if the server stopped early."""

    def __init__(self, body: Iterable[bytes], exchange: _Exchange) -> None:
        self._body = body
        self._chunks: Iterator[bytes] = iter(body)
        self._exchange = exchange
        self._held: bytes = _NOTHING

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._exchange.recorded:
            if self._held is _NOTHING:
                raise StopIteration
            last, self._held = self._held, _NOTHING
            self._exchange.passed = True
            return last
        try:
            if self._held is _NOTHING:
                self._held = next(self._chunks)
            following = next(self._chunks)
        except StopIteration:
            self._exchange.record(cut=False, raising=True)
            return self.__next__()
        except Exception:
            self._exchange.record(cut=True, raising=False)
            raise
        chunk, self._held = self._held, following
        self._exchange.passed = True
        return chunk

    def close(self) -> None:
        try:
            # The server stopped reading (its client went away): the action was
            # taken all the same.
            self._exchange.record(cut=False, raising=False)
        finally:
            _close(self._body)
