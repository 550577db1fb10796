"""The interceptor every AuditLogService call passes through: it resolves the
caller's token to a principal (kept in a contextvar for the servicer), afresh
for a change of configuration and again before each message of a stream (a
stream outlives a revocation otherwise), checks the principal's role may
call the method (a refusal of a known tenant's token, for its role, its
revocation or its expiry, is recorded in that tenant's log: api/denials.py), keeps where the
call came from, and on whose behalf the caller says it calls, for Sealtrail's own records
(api/callers.py), turns a request that cannot
be decoded into INVALID_ARGUMENT (gRPC itself would answer INTERNAL), and turns
the domain's errors into rich gRPC statuses (a refusal for a limit of the
tenant's own recorded in its log first: api/denials.py), and anything else (a bug) into
INTERNAL without its text (which may quote stored rows), logged here, inside
the call's span and with its request id. Other services (health,
reflection) pass untouched."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from ..auth.roles import CHANGES, may_call, roles_that_may_call
from ..auth.tokens import Authenticator, ExpiredToken, RevokedToken, rfc3339
from ..domain.access import Principal
from ..domain.errors import (
    InvalidArgument,
    PermissionDenied,
    SealtrailError,
    TenantLimitReached,
    Unauthenticated,
    unexpected_failure,
)
from ..domain.networks import IpNetwork
from ..service_interceptor import SERVICE_PREFIX, Behavior, Handler, ServiceInterceptor
from ..store.changes import tenant_erased
from ..telemetry.context import response_metadata
from .audited import FilterDetails
from .callers import (
    ROLE_HEADER,
    claim,
    claimed_person,
    current_caller,
    from_console,
    set_origin,
)
from .denials import Denials, Reason
from .errors import grpc_status
from .undecodable import refusal

log = logging.getLogger(__name__)


_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("sealtrail_principal")


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    return _principal.get()


def _authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


async def abort_call(context: grpc.aio.ServicerContext[Any, Any], error: SealtrailError) -> None:
    """End the call with `error`'s rich status. An abort replaces the trailing
    metadata set before it, so the request id is sent along again."""
    status = grpc_status(error)
    trailing = (*status.trailing_metadata, *response_metadata())
    await context.abort(status.code, status.details, trailing)


# The aborts of calls ended as they waited to write whose status is not sent yet.
_ENDING: set[asyncio.Task[None]] = set()


def end_waiting_call(
    context: grpc.aio.ServicerContext[Any, Any],
    call: asyncio.Task[Any] | None,
    error: SealtrailError,
) -> None:
    """End a call whose handler may be waiting in gRPC's write for a client
    that takes nothing, which neither its own end nor an abort reaches (ADR
    0072): its code set to `error`'s (as its span and metrics say), an abort
    with `error` begun in a task of its own, and the call's task `call`
    cancelled, which ends its handler now. The abort's status waits behind the
    data the client has not taken: a client that reads on gets what it had
    been sent, then the status. Call it in the call's context (its request id
    is sent with the status)."""
    context.set_code(grpc_status(error).code)
    ending = asyncio.get_running_loop().create_task(abort_call(context, error))
    _ENDING.add(ending)
    ending.add_done_callback(_the_end_sent)
    if call is not None:
        call.cancel()


def _the_end_sent(ending: asyncio.Task[None]) -> None:
    """An abort ends in an exception however it goes (AbortError once sent; a
    failed batch once the connection is gone): nothing is left to tell."""
    _ENDING.discard(ending)
    if not ending.cancelled():
        ending.exception()


async def _fail(context: grpc.aio.ServicerContext[Any, Any], method: str, error: Exception) -> None:
    """End the call with `error`'s status; anything but the domain's errors (a
    bug) as INTERNAL, logged here, its text kept out of the answer."""
    if not isinstance(error, SealtrailError):
        log.exception("%s failed unexpectedly", method, exc_info=error)
        error = unexpected_failure()
    await abort_call(context, error)


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, refusal: InvalidArgument) -> None:
        self.refusal = refusal


def _tolerant(decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if decode is None:
        return None
    # The request's message type (`decode` is its FromString), for the field at fault.
    kind = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)

    def tolerant_decode(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError as error:
            return _Undecodable(refusal(kind, data, error, field="request"))

    return tolerant_decode


def _check_decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise request.refusal


def _caller_ip() -> str:
    """The address of the call's caller (asked only of a token unseen)."""
    return current_caller().ip


async def _knows_no_erasures(tenant_id: str) -> None:
    pass


class GuardInterceptor(ServiceInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        *,
        refuse_if_erased: Callable[[str], Awaitable[None]] = _knows_no_erasures,
        console_key: str = "",
        trusted_proxies: tuple[IpNetwork, ...] = (),
        denials: Denials | None = None,
        locate: Callable[[str], str | None] | None = None,
        names: FilterDetails | None = None,
    ) -> None:
        """`refuse_if_erased(tenant_id)` raises TENANT_ERASED if the tenant was
        erased, by whichever process (`store.changes.refuse_if_erased_now`).
        `console_key`: the key this process's console sends along with the
        browser's address and user agent ("": no console, none trusted).
        `trusted_proxies`: peers believed about whom they forward for.
        `denials` records refusals of known tokens (None: none recorded).
        `locate` gives a caller's address's country for Sealtrail's own
        records of its calls (CountryLocator.country; None: no GeoIP database).
        `names` redacts the person a call says it is made on behalf of as the
        tenant's events are (None: kept as sent)."""
        super().__init__()
        self._authenticator = authenticator
        self._refuse_if_erased = refuse_if_erased
        self._console_key = console_key
        self._trusted_proxies = trusted_proxies
        self._denials = denials
        self._locate = locate
        self._names = names
        # Calls of AuditLogService begun and not ended: a stopping server ends
        # its streams early once nothing else is left (app.Service.stop).
        self.calls = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        """Counts a call from its headers, ended where its behaviour ends: a
        call whose request was still arriving (a large batch from a slow
        client) was not counted, and a stop that found stuck streams all that
        was left cut it (helper-147). Uncounted as the call's task ends,
        however it ends: a call cancelled before its behaviour ran (its
        client gone while its request arrived) stayed counted for good, and a
        stop never again found stuck streams all that was left."""
        handler = await super().intercept_service(continuation, details)
        if handler is not None and details.method.startswith(SERVICE_PREFIX):
            call = asyncio.current_task()  # gRPC's task of the call, its behaviour's too
            assert call is not None
            self.calls += 1
            call.add_done_callback(self._ended)
        return handler

    def _ended(self, _call: asyncio.Task[Any]) -> None:
        self.calls -= 1

    async def _admit(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        metadata = context.invocation_metadata() or ()
        set_origin(
            context.peer(),
            metadata,
            self._console_key,
            trusted_proxies=self._trusted_proxies,
            locate=self._locate,
        )
        # Refused only once the token may call: a bad value must not keep a
        # refusal of the token out of the log (it is left out of the record).
        bad: InvalidArgument | None = None
        try:
            person = claimed_person(metadata)
        except InvalidArgument as refused:
            person, bad = "", refused
        try:
            principal = await self._authenticator.authenticate(
                _authorization(context), fresh=method in CHANGES, caller=_caller_ip
            )
        except Unauthenticated as refused:
            await self._refused_token(refused, method, person)
            raise
        if not may_call(principal.role, method):
            await self._refused(principal, method, "role", person=person)
            # Which roles may, in ErrorInfo's metadata: the caller's client
            # says what token it needs, the description kept short.
            allowed = ",".join(roles_that_may_call(method))
            raise PermissionDenied(
                f"role {principal.role.value!r} may not call {method}", metadata={"roles": allowed}
            )
        if bad is not None:
            raise bad
        if person:
            claim(await self._redacted(principal, person))
        _principal.set(principal)

    async def _redacted(self, principal: Principal, person: str) -> str:
        """`person` as the token's tenant's records may hold it: redacted as
        its events are (a session token pasted for a user id, helper-129)."""
        return (
            person if self._names is None else await self._names.text(principal.tenant_id, person)
        )

    async def _role_to_console(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Tells this process's console the role of the token it called with
        (ROLE_HEADER), before the answer: a token's holder may know what it
        may do, and the console need not try an admin call to find out."""
        # No console, no scan of every call's metadata (Record's among them).
        if self._console_key and from_console(
            context.invocation_metadata() or (), self._console_key
        ):
            role = current_principal().role.value
            await context.send_initial_metadata(((ROLE_HEADER, role),))

    async def _refused_token(self, refused: Unauthenticated, method: str, person: str) -> None:
        """A revoked or expired token's refusal, recorded in its tenant's log
        (an unknown token's has no tenant to record it in)."""
        if isinstance(refused, RevokedToken):
            await self._refused(refused.principal, method, "revoked", person=person)
        elif isinstance(refused, ExpiredToken):
            await self._refused(
                refused.principal,
                method,
                "expired",
                person=person,
                expired_at=rfc3339(refused.expires_at),
            )

    async def _refused(
        self,
        principal: Principal,
        method: str,
        reason: Reason,
        *,
        person: str,
        expired_at: str | None = None,
    ) -> None:
        """A known token's refusal, recorded in its tenant's log (at most once
        a window) with the person the call says it was made on behalf of
        (`person`, "": none, or kept already); the refusal is answered as
        before whatever its record does."""
        if self._denials is None:
            return
        if person:
            try:
                claim(await self._redacted(principal, person))
            except SealtrailError as error:  # the tenant's redaction settings unread
                log.warning("a refused call's person went unrecorded: %s", error.reason)
        await self._denials.refused(principal, rpc=method, reason=reason, expired_at=expired_at)

    async def _limited(self, method: str, refused: TenantLimitReached) -> None:
        """A call refused for a limit of its tenant's own, recorded in its
        tenant's log (at most once a window); answered as before whatever its
        record does. Raised only past admission: the caller is known."""
        if self._denials is not None:  # never raises: a failed record is logged there
            await self._denials.limited(current_principal(), rpc=method, refused=refused)

    async def _still_trusted(self, authorization: str | None, method: str) -> None:
        """Before each message of a stream: a dict read while the token is
        cached; once it is not, one lookup. A revoked token's stream ends
        within the cache's time (at once where it was revoked), an expired
        one's at its expiry (TOKEN_EXPIRED), an idle one at its next
        heartbeat, each recorded as a refusal is; an erased tenant's says so."""
        try:
            await self._authenticator.authenticate(authorization, caller=_caller_ip)
        except Unauthenticated as refused:
            tenant_id = current_principal().tenant_id
            if self._authenticator.erased_here(tenant_id):
                raise tenant_erased(tenant_id) from None
            # Erased by another process, its tokens went with it: the stream
            # ends TENANT_ERASED there too, not as if its token were revoked.
            await self._refuse_if_erased(tenant_id)
            await self._refused_token(refused, method, "")  # its person kept at its start
            raise

    def _wrap_unary(self, handler: Handler, method_path: str) -> Handler:
        method = method_path.removeprefix(SERVICE_PREFIX)
        inner = cast(Behavior, handler.unary_unary)

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                await self._admit(context, method)
                await self._role_to_console(context)
                _check_decoded(request)
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except TenantLimitReached as limited:
                await self._limited(method, limited)
                await _fail(context, method, limited)
            except Exception as error:
                await _fail(context, method, error)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _wrap_stream(self, handler: Handler, method_path: str) -> Handler:
        method = method_path.removeprefix(SERVICE_PREFIX)
        inner = cast(Behavior, handler.unary_stream)

        async def guarded(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                await self._admit(context, method)
                _check_decoded(request)
                authorization = _authorization(context)
                responses = inner(request, context)
                async with aclosing(responses):  # a cancelled call closes the handler now
                    async for response in responses:
                        await self._still_trusted(authorization, method)
                        yield response
            except grpc.aio.AbortError:
                raise
            except TenantLimitReached as limited:
                await self._limited(method, limited)
                await _fail(context, method, limited)
            except Exception as error:
                await _fail(context, method, error)

        return grpc.unary_stream_rpc_method_handler(
            guarded,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
