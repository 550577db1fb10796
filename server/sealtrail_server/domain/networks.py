"""Lists of IP networks an operator writes in a setting, comma-separated
addresses or CIDRs: the destinations the forwarder may reach or must not,
the proxies trusted to say whom they forward for."""

from __future__ import annotations

import ipaddress

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """`text`'s networks (an address is a network of one); ValueError naming
    the first part that is neither, or a CIDR with host bits set (a typo for
    another network more often than not). An IPv4 network mapped into IPv6
    (`::ffff:10.0.0.0/104`) is read as the IPv4 one: addresses are compared
    as IPv4, mapped or not, so the mapped network would hold none of them."""
    return tuple(
        _unmapped(ipaddress.ip_network(part.strip())) for part in text.split(",") if part.strip()
    )


def _unmapped(network: IpNetwork) -> IpNetwork:
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def within(address: str, networks: tuple[IpNetwork, ...]) -> bool:
    """Whether `address` (an IP address's text) lies in one of `networks`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
