"""The names the console answers under (ADR 0102).

A page of another site cannot read the console's token (it lives in the
console's own origin), but a name the attacker controls, pointed at the
console's address (DNS rebinding), lets such a page send requests to a console
that listens on loopback only, through the operator's browser: whoever holds a
stolen token then reaches the API past the gRPC port's client certificates,
recorded under the browser's address. The browser sends the name it used in
`Host`; the console serves only its own:

- a loopback name (`localhost`, 127.0.0.0/8, `[::1]`) with the console's port,
  on a connection that came to a loopback address;
- the address the connection came to, with the console's port;
- the name the console was told to listen on (SEALTRAIL_CONSOLE_LISTEN's
  host, when a name), with the console's port;
- a name the operator lists (SEALTRAIL_CONSOLE_ALLOWED_HOSTS): a proxy's
  public name, a port published under another number. A name listed without
  a port is its at any port; with one, at that port only.

Names are compared in any case, without the trailing dot of their absolute
form (`localhost.`); addresses as addresses (`[0:0::1]` is `[::1]`). A `Host`
without a port means 80, HTTP's.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import Final

# A name's label: letters, digits, hyphens (and underscores, which some
# internal names hold); no percent-encoding, no user info, nothing else.
_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PORT: Final = re.compile(r"[0-9]{1,5}")
HTTP_PORT: Final = 80
LOCALHOST: Final = "localhost"

# (host, port): the host lower-case, without a trailing dot, an IP address in
# its canonical text (`::1`, no brackets); the port None where none is given.
Host = tuple[str, int | None]


def parse_host(text: str) -> Host:
    """`text` (a `Host` header's value, or a listed name) as (host, port);
    ValueError if it is no host[:port]."""
    if not text.isascii() or not text.isprintable():
        raise ValueError("not a host name")
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or "%" in inside:  # a zone: no browser sends one
            raise ValueError("not an IPv6 address in brackets")
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ipaddress.AddressValueError:
            raise ValueError("not an IPv6 address in brackets") from None
        return host, _port(rest)
    name, colon, port = text.partition(":")
    name = name.lower()
    name = name.removesuffix(".")  # the absolute form: the same name
    try:
        return str(ipaddress.IPv4Address(name)), _port(colon + port)
    except ipaddress.AddressValueError:
        pass
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("not a host name")
    return name, _port(colon + port)


def _port(text: str) -> int | None:
    """ ":8080" as 8080, "" as None."""
    if not text:
        return None
    if not (text.startswith(":") and _PORT.fullmatch(text[1:])) or int(text[1:]) > 65535:
        raise ValueError("not a port")
    return int(text[1:])


def parse_allowed_hosts(text: str) -> tuple[Host, ...]:
    """SEALTRAIL_CONSOLE_ALLOWED_HOSTS: comma-separated host[:port] names;
    ValueError naming the first that is none."""
    listed = []
    for part in text.split(","):
        if part := part.strip():
            try:
                listed.append(parse_host(part))
            except ValueError as error:
                raise ValueError(f"{part!r} is {error} (host or host:port)") from None
    return tuple(listed)


def listen_name(host: str) -> str:
    """The name of a host to listen on, as compared ("" for an address, or
    for no name a browser could send)."""
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        pass
    else:
        return ""
    try:
        name, _ = parse_host(host)
    except ValueError:
        return ""
    return name


def is_allowed(
    host: Host, *, came_to: str, port: int, listed: tuple[Host, ...], listens_on: str = ""
) -> bool:
    """Whether the console serves a request for `host` on a connection that
    came to the address `came_to` (the socket's own) and `port`; `listens_on`
    the name it was told to listen on (listen_name's), if one."""
    name, said = host
    sent_to = HTTP_PORT if said is None else said
    if any(name == other and other_port in (None, sent_to) for other, other_port in listed):
        return True
    if sent_to != port:
        return False
    if listens_on and name == listens_on:
        return True
    local = _address(came_to)
    try:
        address = _address(name)
    except ValueError:
        return name == LOCALHOST and local.is_loopback
    return address == local or (address.is_loopback and local.is_loopback)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as compared: without a zone, an IPv4 one mapped in IPv6 as IPv4."""
    address = ipaddress.ip_address(text.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def url_host(url: str) -> Host:
    """The `Host` a browser sends for `url` (its default port left out, as
    browsers leave it); ValueError if it has none."""
    parts = urllib.parse.urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    host = parts.netloc.rpartition("@")[2]
    if parts.port is not None and parts.port == default:
        host = host.rpartition(":")[0]
    return parse_host(host)


def served_at_start(host: Host, *, listen: str, listed: tuple[Host, ...]) -> bool:
    """Whether a console told to listen on `listen` (HOST:PORT) serves
    requests for `host` (is_allowed's answer), as far as is known before a
    request comes: an address it may be reached at, when it listens on all
    of them, is taken."""
    name, said = host
    if any(
        name == other and other_port in (None, said or HTTP_PORT) for other, other_port in listed
    ):
        return True
    bound, _, port = listen.rpartition(":")
    bound = bound.removeprefix("[").removesuffix("]")
    if not port.isdigit() or (said or HTTP_PORT) != int(port):
        return False
    if (told := listen_name(bound)) and name == told:
        return True
    try:
        local = _address(bound)
    except ValueError:
        return name == LOCALHOST and told == LOCALHOST
    if local.is_unspecified:  # every address of the machine
        return name == LOCALHOST or _is_address(name)
    return is_allowed(host, came_to=str(local), port=int(port), listed=listed)


def _is_address(name: str) -> bool:
    try:
        _address(name)
    except ValueError:
        return False
    return True
