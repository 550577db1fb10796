"""A call's ends in OpenTelemetry's attributes, which tracing backends group
server spans by: the peer of its connection as gRPC names it
(`context.peer()`) in `network.*`, and the address the server listens on in
`server.*` (the stable semantic conventions' names).

`client.address` is not set: behind a proxy the connection's peer is the
proxy, and which forwarded address to believe is the guard's to decide
(`SEALTRAIL_TRUSTED_PROXIES`), after this runs."""

from __future__ import annotations

from functools import lru_cache
from typing import Final
from urllib.parse import unquote

Attributes = dict[str, str | int]

# Hosts that listen on every address: none a client reaches the server by.
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::", "*"})


@lru_cache(maxsize=1024)
def peer_attributes(peer: str) -> Attributes:
    """`network.transport`, `network.type` and `network.peer.address` and
    `.port` of a peer as gRPC names it: `ipv4:203.0.113.9:51234`,
    `ipv6:%5B2001:db8::1%5D:51234` (brackets, and a zone's `%`,
    percent-encoded), `unix:` (a client's socket is unnamed) or `unix:PATH`.
    Nothing for a form not known or malformed, rather than a wrong value.
    Cached: a connection's calls name one peer (the answer is shared; read it,
    never change it)."""
    kind, _, rest = peer.partition(":")
    if kind == "unix":
        return {"network.transport": "unix", **({"network.peer.address": rest} if rest else {})}
    if kind not in ("ipv4", "ipv6"):
        return {}
    host, _, port = (unquote(rest) if "%" in rest else rest).rpartition(":")
    if kind == "ipv6":
        if not (host.startswith("[") and host.endswith("]")):
            return {}
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return {}
    return {
        "network.transport": "tcp",
        "network.type": kind,
        "network.peer.address": host,
        "network.peer.port": int(port),
    }


def server_attributes(listen: str, port: int) -> Attributes:
    """`server.address` and `server.port` of the address the server listens
    on (`SEALTRAIL_LISTEN`, HOST:PORT, and the port it bound: `:0` picks
    one): the host as configured, none for a wildcard (`0.0.0.0`, `[::]`),
    which no client reaches it by. Nothing for a Unix socket."""
    if listen.startswith("unix"):
        return {}
    host = listen.rpartition(":")[0]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (
        {"server.port": port}
        if host in _WILDCARDS
        else {"server.address": host, "server.port": port}
    )
