"""The address a truncated IP recording keeps (ADR 0154): an IPv4 address's
/24, an IPv6 address's /48, in the `ip` filter's form."""

from __future__ import annotations

import pytest

from sealtrail_server.domain.ip_recording import truncated


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("81.2.69.7", "81.2.69.0"),
        ("81.2.69.0", "81.2.69.0"),
        ("2a02:8100:1:2::7", "2a02:8100:1::"),
        ("2A02:8100:ABCD:FFFF::1", "2a02:8100:abcd::"),
        ("::ffff:81.2.69.9", "81.2.69.0"),  # IPv4 written as IPv6: as the IPv4 one
        ("fe80::1:2:3%eth0", "fe80::"),  # no zone id
    ],
)
def test_truncated_keeps_the_network(sent: str, kept: str) -> None:
    assert truncated(sent) == kept
