"""A call's peer as gRPC names it (`context.peer()`), in OpenTelemetry's
network attributes; and the server's listening address in its server.*."""

from __future__ import annotations

import pytest

from sealtrail_server.telemetry.peer import peer_attributes, server_attributes


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        (
            "ipv4:203.0.113.9:51234",
            {
                "network.transport": "tcp",
                "network.type": "ipv4",
                "network.peer.address": "203.0.113.9",
                "network.peer.port": 51234,
            },
        ),
        (  # gRPC percent-encodes the brackets, and a zone's `%`
            "ipv6:%5B2001:db8::1%5D:443",
            {
                "network.transport": "tcp",
                "network.type": "ipv6",
                "network.peer.address": "2001:db8::1",
                "network.peer.port": 443,
            },
        ),
        (
            "ipv6:%5Bfe80::1%25eth0%5D:50051",
            {
                "network.transport": "tcp",
                "network.type": "ipv6",
                "network.peer.address": "fe80::1%eth0",
                "network.peer.port": 50051,
            },
        ),
        ("ipv6:[::1]:7", {  # unencoded, as older gRPC wrote it
            "network.transport": "tcp",
            "network.type": "ipv6",
            "network.peer.address": "::1",
            "network.peer.port": 7,
        }),
        # A client's Unix socket is unnamed: the transport alone.
        ("unix:", {"network.transport": "unix"}),
        ("unix:/run/sealtrail.sock", {
            "network.transport": "unix",
            "network.peer.address": "/run/sealtrail.sock",
        }),
        # Forms not known, or malformed: nothing rather than a wrong value.
        ("", {}),
        ("unix-abstract:sealtrail", {}),
        ("ipv4:", {}),
        ("ipv4:203.0.113.9", {}),
        ("ipv4:203.0.113.9:http", {}),
        ("ipv4::50051", {}),
        ("ipv4:203.0.113.9:99999", {}),
        ("ipv6:%5B::1%5D", {}),
    ],
)  # fmt: skip
def test_a_peer_is_named_in_opentelemetrys_attributes(
    peer: str, expected: dict[str, str | int]
) -> None:
    assert peer_attributes(peer) == expected


@pytest.mark.parametrize(
    ("listen", "port", "expected"),
    [
        ("127.0.0.1:0", 50123, {"server.address": "127.0.0.1", "server.port": 50123}),
        ("audit.example:50051", 50051, {"server.address": "audit.example", "server.port": 50051}),
        ("[::1]:50051", 50051, {"server.address": "::1", "server.port": 50051}),
        # A wildcard is no address a client reaches: the port alone.
        ("0.0.0.0:50051", 50051, {"server.port": 50051}),
        ("[::]:50051", 50051, {"server.port": 50051}),
        (":50051", 50051, {"server.port": 50051}),
        ("unix:/run/sealtrail.sock", 1, {}),
    ],
)
def test_the_listening_address_is_named_in_opentelemetrys_attributes(
    listen: str, port: int, expected: dict[str, str | int]
) -> None:
    assert server_attributes(listen, port) == expected
