"""Lists of IP networks an operator writes in a setting, comma-separated
addresses or CIDRs: the destinations the forwarder may reach or must not,
the proxies trusted to say whom they forward for."""

from __future__ import annotations

import ipaddress

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """`text`'s networks (an address is a network of one); ValueError naming
    the first part that is neither, or a CIDR with host bits set (a typo for
    another network more often than not)."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def within(address: str, networks: tuple[IpNetwork, ...]) -> bool:
    """Whether `address` (an IP address's text) lies in one of `networks`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
