"""Outbound requests that cannot be turned against the network Sealtrail runs
in. A sink's URL is chosen by a tenant admin, so without a guard it is a
server-side request forgery waiting to happen (cloud metadata at
169.254.169.254, the database, internal admin ports).

- https only, unless the operator allows plain http (tests, a local relay);
- the host is resolved at connect time and every address it resolves to must
  be public (`is_global`) and not denied, or inside an allowed network; the
  connection goes to the checked address itself, so a DNS answer that changes
  between check and connect (rebinding) gains nothing;
- no redirects are followed (the HTTP client is httpcore, which never does);
- connect, read, write and pool timeouts on every request, and answers are
  read only up to a bound."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import httpcore

from sealtrail._words import detailed

from ..domain.networks import IpNetwork, parse_networks

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_ANSWER_BYTES: Final = 64 * 1024  # what is kept of an answer: enough for any error
# A whole exchange's deadline, in step timeouts: connect, send, wait, read (an
# email sink's SMTP exchange, of many more steps, has it too: forward/mail.py).
DEADLINE_TIMEOUTS: Final = 4


# The well-known NAT64 prefix (RFC 6052): the IPv4 address is the last 32 bits.
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
# Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on the
# translator's prefix length, so it is refused unless allowed by name.
_LOCAL_NAT64: Final = ipaddress.IPv6Network("64:ff9b:1::/48")
# Forms that reach an IPv4 host, or a site's own network, on hosts set up for
# them, and that Python counts as global: IPv4-compatible (::a.b.c.d, RFC 4291,
# deprecated), IPv4-translated (::ffff:0:a.b.c.d, SIIT, RFC 2765) and site-local
# (fec0::/10, deprecated). Refused unless allowed by name.
_REACH_UNSEEN: Final = (
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("fec0::/10"),
)

# IANA's special-purpose ranges that are not globally reachable, and that
# Python's `is_global` counts as global on older releases (3.11.7 among them:
# the whole of 192.0.0.0/24 but a /29 and a /31, where a cloud's metadata
# service answers at 192.0.0.192) or on every release so far (3fff::/20,
# documentation, RFC 9637; 5f00::/16, SRv6, RFC 9602). Whether they were
# reached depended on the Python the server ran on (helper-307). Refused
# unless allowed, but for the two anycast addresses IANA lists as global.
_NOT_GLOBAL: Final = (
    ipaddress.IPv4Network("192.0.0.0/24"),
    ipaddress.IPv6Network("3fff::/20"),
    ipaddress.IPv6Network("5f00::/16"),
)
_GLOBAL_ANYCAST: Final = (ipaddress.IPv4Address("192.0.0.9"), ipaddress.IPv4Address("192.0.0.10"))


def _globally_reachable(address: IpAddress) -> bool:
    """Whether `address` is public, as IANA's registry has it."""
    if address in _GLOBAL_ANYCAST:
        return True
    # is_global lets 224/4 through.
    special = any(address in network for network in _NOT_GLOBAL)
    return address.is_global and not address.is_multicast and not special


def _tunnelled_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 host an IPv6 address reaches through a translator or a tunnel
    (NAT64, 6to4, Teredo), if any."""
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


class EgressDenied(Exception):
    """The destination is not one Sealtrail may send to."""


class Unresolvable(EgressDenied):
    """The destination's host name does not resolve (now)."""


# Sink hosts are resolved on threads of their own (getaddrinfo blocks). On the
# loop's default executor, a tenant's hosts whose name servers never answer
# held its few threads, each until the resolver gave up, and with them every
# other sink's lookups and psycopg's lookups of the database's own host
# (helper-59). At most this many at once: past that a lookup fails at once,
# and its delivery is retried as any failed one, rather than queue behind. And
# at most TENANT_LOOKUPS of them for one tenant, so that one tenant's silent
# name servers cannot take them all from the others (helper-62).
RESOLVER_THREADS: Final = 8
TENANT_LOOKUPS: Final = 2
_resolver = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="sealtrail-sink-dns")
_slots_lock = threading.Lock()  # lookups end on the resolver's threads
_in_flight: dict[str | None, int] = {}  # by tenant; None: on no tenant's behalf

# The tenant on whose behalf connections are made in this context: set by
# OutboundClient.post for a delivery.
lookups_for: ContextVar[str | None] = ContextVar("sealtrail_lookups_for", default=None)


def _take_slot(host: str, tenant_id: str | None) -> None:
    with _slots_lock:
        if sum(_in_flight.values()) >= RESOLVER_THREADS:
            raise Unresolvable(f"cannot resolve {host} now: {RESOLVER_THREADS} lookups in flight")
        if tenant_id is not None and _in_flight.get(tenant_id, 0) >= TENANT_LOOKUPS:
            raise Unresolvable(
                f"cannot resolve {host} now: {TENANT_LOOKUPS} lookups of this tenant in flight"
            )
        _in_flight[tenant_id] = _in_flight.get(tenant_id, 0) + 1


def _give_slot(tenant_id: str | None) -> None:
    with _slots_lock:
        left = _in_flight[tenant_id] - 1
        if left:
            _in_flight[tenant_id] = left
        else:
            del _in_flight[tenant_id]


async def _getaddrinfo(host: str, port: int, tenant_id: str | None) -> list[str]:
    """The addresses `host` resolves to, on the sinks' own resolver threads."""
    _take_slot(host, tenant_id)

    def lookup() -> list[str]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        finally:
            _give_slot(tenant_id)  # here: a lookup gone on holds its thread
        return [str(info[4][0]) for info in infos]

    def given_back_if_cancelled(done: Future[list[str]]) -> None:
        if done.cancelled():  # before it ran: it never gave its slot back itself
            _give_slot(tenant_id)

    submitted = _resolver.submit(lookup)
    submitted.add_done_callback(given_back_if_cancelled)
    try:
        return await asyncio.wrap_future(submitted)
    except (OSError, UnicodeError, ValueError) as error:  # UnicodeError: a label too long
        raise Unresolvable(detailed(f"cannot resolve {host}", error)) from None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allow_http: bool = False
    # Networks allowed even though not public (an internal SIEM); they win over denied.
    allowed: tuple[IpNetwork, ...] = ()
    # Public networks refused as well.
    denied: tuple[IpNetwork, ...] = field(default=())

    @classmethod
    def parse(cls, *, allow_http: bool, allowed: str, denied: str) -> EgressPolicy:
        """From comma-separated CIDR lists (settings); ValueError names a bad one."""
        return cls(
            allow_http=allow_http, allowed=parse_networks(allowed), denied=parse_networks(denied)
        )

    @classmethod
    def of(cls, settings: Settings) -> EgressPolicy:
        """This deployment's policy; SystemExit naming a network setting that
        names no network (Settings.load refuses one too, but a server may be
        given settings made otherwise)."""
        networks: dict[str, tuple[IpNetwork, ...]] = {}
        for name in ("forward_allow_networks", "forward_deny_networks"):
            try:
                networks[name] = parse_networks(getattr(settings, name))
            except ValueError as error:
                raise SystemExit(f"SEALTRAIL_{name.upper()}: {error}") from None
        return cls(
            allow_http=settings.forward_allow_http,
            allowed=networks["forward_allow_networks"],
            denied=networks["forward_deny_networks"],
        )

    def permits(self, address: IpAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return self.permits(address.ipv4_mapped)
            embedded = _tunnelled_ipv4(address)
            if embedded is not None and not self.permits(embedded):
                return False  # it reaches that IPv4 host: refused, it is refused
            unseen = address in _LOCAL_NAT64 or any(address in n for n in _REACH_UNSEEN)
            if unseen and not any(address in n for n in self.allowed):
                return False
        if any(address in network for network in self.allowed):
            return True
        denied = any(address in network for network in self.denied)
        return _globally_reachable(address) and not denied

    def check_scheme(self, url: str) -> None:
        scheme = urlsplit(url).scheme
        if scheme != "https" and not (scheme == "http" and self.allow_http):
            allowing = " (or SEALTRAIL_FORWARD_ALLOW_HTTP=true)" if scheme == "http" else ""
            raise EgressDenied(f"{scheme}:// is not allowed: destinations must use https{allowing}")

    async def resolve(self, host: str, port: int, *, tenant_id: str | None = None) -> list[str]:
        """The host's addresses, each permitted; EgressDenied if any is not,
        saying so without the host, which whoever reports it names (a sink's
        URL field, a delivery's error): the setting that allows it must fit
        in the 100 bytes a field violation keeps, whatever the host's length.
        `tenant_id`: on whose behalf (its lookups in flight are limited)."""
        try:
            literal: IpAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            found = await _getaddrinfo(host, port, tenant_id)
            addresses = list(dict.fromkeys(ipaddress.ip_address(text) for text in found))
        refused = [str(a) for a in addresses if not self.permits(a)]
        if refused and literal is not None:
            raise EgressDenied(
                "an internal or denied address (allow it with SEALTRAIL_FORWARD_ALLOW_NETWORKS)"
            )
        if refused:
            # The addresses are for the operator only: told to the tenant's
            # admin (an API answer, a sink's last error), they would map the
            # internal network's names for whoever asks.
            log.warning("egress: %s resolves to %s, refused", host, ", ".join(refused))
            raise EgressDenied(
                "resolves to an internal or denied address, logged"
                " (allow it with SEALTRAIL_FORWARD_ALLOW_NETWORKS)"
            )
        return [str(a) for a in addresses]


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy permits, by address."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self._policy.resolve(host, port, tenant_id=lookups_for.get()):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressDenied("unix sockets are not a destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _ReclaimingPool(httpcore.AsyncConnectionPool):
    """httpcore's pool, which also closes the connections no request holds
    that are neither idle nor closed: a request cancelled after its
    connection was assigned and before it went out on it (a delivery's
    deadline, a lease fenced off, a stop's cancels) left its connection so,
    and httpcore's pool kept it for good (encode/httpcore#1093). Once every
    slot was held so, every delivery of every tenant failed with
    PoolTimeout until the process restarted."""

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        # Each connection serves one request at a time (HTTP/1.1 only): one
        # that no request holds is idle, closed, or orphaned.
        held = {id(request.connection) for request in self._requests}
        orphans = [
            connection
            for connection in self._connections
            if id(connection) not in held
            and not connection.is_idle()
            and not connection.is_closed()
        ]
        for connection in orphans:
            self._connections.remove(connection)
        return [*orphans, *super()._assign_requests_to_connections()]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # at most MAX_ANSWER_BYTES
    headers: dict[str, str]


# What an answer's body may fail with once its status is in: a body that
# stalls, or ends before its length. Of an answer whose body its reader does
# not need, the status is the answer all the same.
_BODY_CUT: Final = (httpcore.ReadTimeout, httpcore.ReadError, httpcore.RemoteProtocolError)


@dataclass(slots=True)
class _Reading:
    """What an exchange has read of its answer so far."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    kept: bytearray = field(default_factory=bytearray)
    # An answer whose body its reader does not need: its status is the answer.
    complete_without_body: bool = False

    def answer(self) -> Answer:
        assert self.status is not None
        return Answer(status=self.status, body=bytes(self.kept), headers=self.headers)


class OutboundClient:
    """POSTs to destinations under the policy; one connection pool per process."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        timeout: float = 10.0,
        ca_file: Path | None = None,
        max_connections: int = 50,
    ) -> None:
        """`ca_file`: CAs trusted besides the system's. Certificates are always
        verified. `max_connections`: shared by every request."""
        self.policy = policy
        self._timeout = timeout
        self.timeout = timeout  # each step's, an email sink's too (forward/mail.py)
        trust = ssl.create_default_context()
        if ca_file is not None:
            trust.load_verify_locations(cafile=ca_file)
        self.trust = trust  # what TLS is verified by, an email sink's too
        self.max_connections = max_connections
        # Exchanges under way, abandoned ones among them (`post`).
        self._exchanges: set[asyncio.Future[Answer]] = set()
        self._pool = _ReclaimingPool(
            ssl_context=trust,
            max_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=_GuardedBackend(policy),
        )

    async def post(
        self,
        url: str,
        *,
        headers: list[tuple[str, str]],
        body: bytes,
        keep: int = MAX_ANSWER_BYTES,
        needs_body: Callable[[int], bool] = lambda status: True,
        tenant_id: str | None = None,
    ) -> Answer:
        """The destination's answer, its first `keep` bytes. EgressDenied for a
        refused destination; httpcore's errors for a failed connection, a
        timeout or a broken answer. Besides each step's timeout, the whole
        exchange has a deadline: a destination that trickles its answer a byte
        at a time cannot hold a connection of the shared pool for long.
        `needs_body(status)`: False when the caller reads an answer of that
        status by its status and headers (a delivery's 2xx, a 503's
        Retry-After), its body only as words to show. Such a body is read (so
        that the connection can serve another request) for one timeout at
        most, and a body that stalls, trickles or breaks off leaves the answer
        with what was read of it: a receiver that said 200 and then dribbled
        its body for ever had its requests count as failed, and sent again,
        for good; one that said 503 with a Retry-After, waited for as if it
        had not."""
        self.policy.check_scheme(url)
        reading = _Reading()
        # In a task of its own, which is cancelled once at most, and then
        # cleans up in its own time: httpcore's pool, cancelled again while a
        # request gave its connection back (a stop cancels each second, a
        # deadline lands as a lease is fenced off), kept that connection in
        # use for good.
        exchange = asyncio.ensure_future(
            self._exchange(
                url,
                headers=headers,
                body=body,
                keep=keep,
                needs_body=needs_body,
                tenant_id=tenant_id,
                reading=reading,
            )
        )
        self._exchanges.add(exchange)
        exchange.add_done_callback(self._exchanges.discard)
        exchange.add_done_callback(_retrieved)
        try:
            async with asyncio.timeout(DEADLINE_TIMEOUTS * self._timeout):
                return await asyncio.shield(exchange)
        except TimeoutError:
            if reading.complete_without_body:  # its status in: its body is not waited for
                return reading.answer()
            raise httpcore.ReadTimeout(
                f"no complete answer within {DEADLINE_TIMEOUTS * self._timeout:g} s"
            ) from None
        finally:
            exchange.cancel()  # done, or abandoned: this once

    async def _exchange(
        self,
        url: str,
        *,
        headers: list[tuple[str, str]],
        body: bytes,
        keep: int,
        needs_body: Callable[[int], bool],
        tenant_id: str | None,
        reading: _Reading,
    ) -> Answer:
        lookups_for.set(tenant_id)  # httpcore connects in this task (its context a copy)
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), self._timeout)
        async with self._pool.stream(
            "POST",
            url,
            headers=[*headers, ("Content-Length", str(len(body))), ("User-Agent", "Sealtrail")],
            content=body,
            extensions={"timeout": timeouts},
        ) as response:
            reading.headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers
            }
            reading.status = response.status
            if needs_body(response.status):
                await _read_body(response, reading.kept, keep)
                return reading.answer()
            reading.complete_without_body = True
            try:
                async with asyncio.timeout(self._timeout):
                    await _read_body(response, reading.kept, keep)
            except (TimeoutError, *_BODY_CUT):
                pass  # the status is the answer; the connection is closed, not kept
            return reading.answer()

    async def close(self) -> None:
        await asyncio.gather(*self._exchanges, return_exceptions=True)
        await self._pool.aclose()


async def _read_body(response: httpcore.Response, kept: bytearray, keep: int) -> None:
    """Up to `keep` bytes of `response`'s body, into `kept`."""
    async for chunk in response.aiter_stream():
        kept += chunk[: keep - len(kept)]
        if len(kept) >= keep:
            break


def _retrieved(exchange: asyncio.Future[Answer]) -> None:
    """An abandoned exchange's failure, looked at: not logged as never retrieved."""
    if not exchange.cancelled():
        exchange.exception()
