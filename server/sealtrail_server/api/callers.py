"""Where a call came from, for Sealtrail's own records of it: the caller's IP
address (the gRPC peer's) and user agent, kept in a contextvar by the guard as
the correlation is by the telemetry interceptor, so that records of reads and
changes carry them as a service's events do without every RPC passing them on.

The console calls this server over a private Unix socket, whose peer has no
address: it passes the browser's address and user agent on in metadata of its
own, trusted only with the key this process gave its console (CONSOLE_KEY_HEADER).
Anyone else sending those headers is ignored: a client must not be able to
record another address than its own.

Behind a proxy (an ingress, a mesh's sidecar) every peer is the proxy. The
proxies the operator names (SEALTRAIL_TRUSTED_PROXIES) are believed about
whom they forward for: X-Forwarded-For, read from the nearest hop to the first
that is no trusted proxy (`behind_proxies`).

With a GeoIP database (SEALTRAIL_GEOIP_DB, ADR 0134) the caller's address is
located as a service's event's is, so that the records carry its country,
marked as the server's (`geoip`): a new-country rule sees an admin reading the
log from a country it never did before.

A service that reads the log for people of its own (a SaaS backend's audit-log
page) may say on whose behalf it calls (ON_BEHALF_OF_HEADER, ADR 0146): the
guard checks the value as an actor id is checked (`claimed_person`) and keeps
it here (`claim`), and the records of the call carry it in their details as
the calling service's word, never as an identity Sealtrail verified."""

from __future__ import annotations

import contextvars
import hmac
import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from ..domain.errors import InvalidArgument
from ..domain.event import CONTROL_CHARACTERS, MAX_ID, MAX_USER_AGENT
from ..domain.networks import IpNetwork, within

CONSOLE_KEY_HEADER: Final = "x-sealtrail-console-key"
CLIENT_IP_HEADER: Final = "x-sealtrail-client-ip"
CLIENT_USER_AGENT_HEADER: Final = "x-sealtrail-client-user-agent"
# Sent back to the console only, in a unary call's initial metadata: the role
# of the token it called with, so that its page shows an admin area to an admin
# and no one else without a refused call (recorded, ADR 0060) to find out.
ROLE_HEADER: Final = "x-sealtrail-role"
# The person (an id, as an event's actor.id) a service says it calls on behalf
# of; its records carry it as `details.on_behalf_of` (ADR 0146).
ON_BEHALF_OF_HEADER: Final = "x-sealtrail-on-behalf-of"
_USER_AGENT: Final = "user-agent"
FORWARDED_FOR: Final = "x-forwarded-for"
# A hop of X-Forwarded-For with the port its proxy saw, as some write it
# (`203.0.113.7:51234`, `[2001:db8::1]:443`), or an IPv6 address in brackets.
_HOP_WITH_PORT: Final = re.compile(r"\[([^\]]+)\](?::\d{1,5})?|([^:\[\]]+):\d{1,5}")


@dataclass(frozen=True, slots=True)
class Caller:
    """A call's origin: an IP address and a user agent, "" where not known;
    the country the server located the address in (GeoIP), "" where it
    has no database or the address has no country; and the person the
    calling service says it calls on behalf of, "" for none (its claim,
    checked as an actor id and redacted, never verified)."""

    ip: str = ""
    user_agent: str = ""
    country: str = ""
    on_behalf_of: str = ""


NO_CALLER: Final = Caller()


@dataclass(slots=True)
class _Origin:
    """What a call's origin is read from, read only if a record asks: most
    calls (every Record) record nothing of their own, and need not parse it."""

    peer: str
    metadata: Iterable[tuple[str, str | bytes]]
    console_key: str
    trusted_proxies: tuple[IpNetwork, ...]
    locate: Callable[[str], str | None] | None
    caller: Caller | None = None
    person: str = ""


_origin: contextvars.ContextVar[_Origin | None] = contextvars.ContextVar(
    "sealtrail_caller", default=None
)


def current_caller() -> Caller:
    """The origin of the call being served (nothing known outside one)."""
    origin = _origin.get()
    if origin is None:
        return NO_CALLER
    if origin.caller is None:
        caller = caller_of(
            origin.peer,
            origin.metadata,
            origin.console_key,
            trusted_proxies=origin.trusted_proxies,
        )
        if origin.locate is not None and caller.ip:
            caller = replace(caller, country=origin.locate(caller.ip) or "")
        if origin.person:
            caller = replace(caller, on_behalf_of=origin.person)
        origin.caller = caller
    return origin.caller


def claim(person: str) -> None:
    """Keeps `person` (checked by `claimed_person`, redacted) as the one the
    call being served is made on behalf of, for its records."""
    origin = _origin.get()
    if origin is None:
        return
    origin.person = person
    if origin.caller is not None:
        origin.caller = replace(origin.caller, on_behalf_of=person)


def claimed_person(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The person a call says it is made on behalf of (ON_BEHALF_OF_HEADER,
    percent-decoded), "" if it says none. InvalidArgument, naming the header, for a value an
    event's actor id could not be (empty, too long, control characters) or a
    header given twice: a claim the records could not hold must not pass
    for a call made on no one's behalf."""
    values = [value for key, value in metadata if key == ON_BEHALF_OF_HEADER]
    if not values:
        return ""
    if len(values) > 1:
        raise InvalidArgument.field(ON_BEHALF_OF_HEADER, "is given more than once; name one person")
    value = values[0]
    if isinstance(value, bytes):  # gRPC hands on text; bytes only from a `-bin` key
        value = value.decode("latin-1")
    # Percent-encoded UTF-8 (as gRPC's own grpc-message is): a header carries
    # ASCII alone, and an id may be any text. A `%` not before two hex digits
    # is itself.
    try:
        value = urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise InvalidArgument.field(
            ON_BEHALF_OF_HEADER, "is not UTF-8 once percent-decoded"
        ) from None
    if not value:
        raise InvalidArgument.field(ON_BEHALF_OF_HEADER, "is empty; leave it out for no one")
    if len(value) > MAX_ID:
        raise InvalidArgument.field(
            ON_BEHALF_OF_HEADER, f"is {len(value)} characters long; the limit is {MAX_ID}"
        )
    if CONTROL_CHARACTERS.search(value):
        raise InvalidArgument.field(ON_BEHALF_OF_HEADER, "must not contain control characters")
    return value


def set_origin(
    peer: str,
    metadata: Iterable[tuple[str, str | bytes]],
    console_key: str,
    *,
    trusted_proxies: tuple[IpNetwork, ...] = (),
    locate: Callable[[str], str | None] | None = None,
) -> None:
    """For the call being served (`caller_of`'s arguments, read when first
    asked); each gRPC call runs in a task (and context) of its own. `locate`
    gives an address's country (CountryLocator.country), None: no database."""
    _origin.set(_Origin(peer, metadata, console_key, trusted_proxies, locate))


def from_this_console(name: str) -> list[str | bytes]:
    """The values of metadata `name` in the call being served if it carries
    the key this process gave its console (CONSOLE_KEY_HEADER), else none:
    what the console alone may tell the server (api/views.py)."""
    origin = _origin.get()
    if origin is None or not origin.console_key:
        return []
    if not from_console(origin.metadata, origin.console_key):
        return []
    return [value for key, value in origin.metadata if key == name]


def address(text: str) -> str:
    """`text` as a record's `context.ip` holds it, or "" if it is no IP
    address (a record that failed validation would fail the call). An IPv4
    address mapped into IPv6 (a dual-stack listener's) is written as IPv4."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return text.lower()


def peer_address(peer: str) -> str:
    """The IP address of a gRPC peer (`ipv4:127.0.0.1:5000`,
    `ipv6:%5B::1%5D:5000`); "" for a Unix socket or anything else."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    host = urllib.parse.unquote(rest).rpartition(":")[0]
    return address(host.removeprefix("[").removesuffix("]"))


def hop_address(hop: str) -> str:
    """The address an X-Forwarded-For hop names, as `address` writes it,
    without the port some proxies add; "" if it names none."""
    written = _HOP_WITH_PORT.fullmatch(hop)
    return address(hop if written is None else written[1] or written[2])


def behind_proxies(peer: str, forwarded_for: Sequence[str], trusted: tuple[IpNetwork, ...]) -> str:
    """The client's address when `peer` is a trusted proxy: the hops of
    X-Forwarded-For (its values in order, each a comma-separated list) read
    from the nearest, each proxy naming the next, to the first that is no
    trusted proxy. Hops beyond it are the client's own writing and never
    read; a hop that is no address ends the walk at the proxy that passed it.
    `peer` itself when it is no trusted proxy or names no one. Addresses are
    compared and returned as `address` writes them: a dual-stack listener's
    `::ffff:10.0.0.5` is the proxy `10.0.0.0/8` names."""
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    current = address(peer)
    while hops and within(current, trusted):
        named = hop_address(hops.pop())
        if not named:
            break
        current = named
    return current


def user_agent(text: str) -> str:
    """`text` as a record's `context.user_agent` can hold it: cut to its
    limit, "" if it holds control characters."""
    return "" if CONTROL_CHARACTERS.search(text) else text[:MAX_USER_AGENT]


def _is_key(presented: str | bytes, console_key: str) -> bool:
    """Whether `presented` is `console_key`, in constant time. Compared as
    bytes: hmac.compare_digest refuses a str that is not ASCII (TypeError),
    and any HTTP/2 peer may send a header in any bytes, which gRPC hands on
    decoded (UTF-8, else Latin-1): every such call failed INTERNAL."""
    if isinstance(presented, str):
        presented = presented.encode("utf-8", "surrogatepass")
    return bool(console_key) and hmac.compare_digest(presented, console_key.encode())


def from_console(metadata: Iterable[tuple[str, str | bytes]], console_key: str) -> bool:
    """Whether the call carries the key this process gave its console."""
    for key, value in metadata:
        if key == CONSOLE_KEY_HEADER:
            return _is_key(value, console_key)
    return False


def caller_of(
    peer: str,
    metadata: Iterable[tuple[str, str | bytes]],
    console_key: str,
    *,
    trusted_proxies: tuple[IpNetwork, ...] = (),
) -> Caller:
    """The call's origin: its peer (or the client a trusted proxy forwards
    for) and user agent, or, for a call carrying the console's key, the
    browser's the console passed on."""
    agent = ""
    forwarded: dict[str, str] = {}
    forwarded_for: list[str] = []
    for key, value in metadata:
        if key == _USER_AGENT or key in (
            CONSOLE_KEY_HEADER,
            CLIENT_IP_HEADER,
            CLIENT_USER_AGENT_HEADER,
            FORWARDED_FOR,
        ):
            text = value if isinstance(value, str) else value.decode("latin-1")
            if key == _USER_AGENT:
                agent = text
            elif key == FORWARDED_FOR:
                forwarded_for.append(text)
            else:
                forwarded.setdefault(key, text)
    presented = forwarded.get(CONSOLE_KEY_HEADER)
    if presented is not None and _is_key(presented, console_key):
        return Caller(
            ip=address(forwarded.get(CLIENT_IP_HEADER, "")),
            user_agent=user_agent(forwarded.get(CLIENT_USER_AGENT_HEADER, "")),
        )
    ip = behind_proxies(peer_address(peer), forwarded_for, trusted_proxies)
    return Caller(ip=ip, user_agent=user_agent(agent))
