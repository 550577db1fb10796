"""Where a call came from behind proxies the operator trusts: the address the
nearest untrusted hop of X-Forwarded-For names, never one a client wrote
beyond it, and the peer's own when it is no trusted proxy. And the person a
call says it is made on behalf of, as its header is read (ADR 0146)."""

from __future__ import annotations

import pytest

from sealtrail._correlation import on_behalf_of_metadata
from sealtrail_server.api.callers import (
    ON_BEHALF_OF_HEADER,
    behind_proxies,
    caller_of,
    claimed_person,
)
from sealtrail_server.domain.errors import InvalidArgument
from sealtrail_server.domain.networks import parse_networks

PROXIES = parse_networks("10.0.0.0/8, 2001:db8::/32")


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("10.0.0.5", ["198.51.100.7"], "198.51.100.7"),
        # a client's own header reaches the proxy, which appends what it saw
        ("10.0.0.5", ["203.0.113.9, 198.51.100.7"], "198.51.100.7"),
        # two proxies, each appending its peer; several header lines are one list
        ("10.0.0.5", ["198.51.100.7, 10.0.0.6"], "198.51.100.7"),
        ("10.0.0.5", ["198.51.100.7", "10.0.0.6"], "198.51.100.7"),
        ("2001:db8::1", ["2001:DB8::2, [::ffff:198.51.100.7]"], "198.51.100.7"),
        # no header, or only proxies: the farthest proxy is all that is known
        ("10.0.0.5", [], "10.0.0.5"),
        ("10.0.0.5", ["10.0.0.7, 10.0.0.6"], "10.0.0.7"),
        # a hop with the port its proxy saw is its address (helper-195)
        ("10.0.0.5", ["203.0.113.7:51234"], "203.0.113.7"),
        ("10.0.0.5", ["198.51.100.7:4711, [2001:db8::2]:443"], "198.51.100.7"),
        ("10.0.0.5", ["[::FFFF:198.51.100.7]:4711"], "198.51.100.7"),
        ("10.0.0.5", ["10.0.0.6:8080"], "10.0.0.6"),
        # a hop that is no address ends the walk at the proxy that passed it
        ("10.0.0.5", ["198.51.100.7, unknown"], "10.0.0.5"),
        ("10.0.0.5", ["unknown:4711"], "10.0.0.5"),
        ("10.0.0.5", ["198.51.100.7:http"], "10.0.0.5"),
        ("10.0.0.5", ["[2001:db8::2"], "10.0.0.5"),
        # a peer that is no trusted proxy: its header is the client's own writing
        ("198.51.100.8", ["203.0.113.9"], "198.51.100.8"),
    ],
)
def test_the_client_is_the_nearest_hop_that_is_no_trusted_proxy(
    peer: str, forwarded_for: list[str], client: str
) -> None:
    assert behind_proxies(peer, forwarded_for, PROXIES) == client


def test_with_no_trusted_proxy_the_header_is_never_read() -> None:
    assert behind_proxies("10.0.0.5", ["198.51.100.7"], ()) == "10.0.0.5"


def test_a_grpc_call_from_a_trusted_proxy_is_the_client_it_names() -> None:
    metadata = [("x-forwarded-for", "203.0.113.9, 198.51.100.7"), ("user-agent", "job/1")]
    caller = caller_of("ipv4:10.0.0.5:41000", metadata, "", trusted_proxies=PROXIES)
    assert (caller.ip, caller.user_agent) == ("198.51.100.7", "job/1")
    untrusted = caller_of("ipv4:192.0.2.1:41000", metadata, "", trusted_proxies=PROXIES)
    assert untrusted.ip == "192.0.2.1"


def test_a_trusted_ipv4_proxy_seen_as_ipv4_mapped_ipv6_is_trusted() -> None:
    """A dual-stack listener sees an IPv4 peer as `::ffff:10.0.0.5`: still the
    proxy `10.0.0.0/8` names, and a peer recorded as IPv4 (helper-195)."""
    assert behind_proxies("::ffff:10.0.0.5", ["198.51.100.7"], PROXIES) == "198.51.100.7"
    assert behind_proxies("::ffff:192.0.2.1", ["198.51.100.7"], PROXIES) == "192.0.2.1"
    grpc_peer = caller_of(
        "ipv6:%5B::ffff:10.0.0.5%5D:41000",
        [("x-forwarded-for", "198.51.100.7")],
        "",
        trusted_proxies=PROXIES,
    )
    assert grpc_peer.ip == "198.51.100.7"


def test_a_trusted_proxy_written_as_an_ipv4_mapped_network_is_trusted() -> None:
    """`::ffff:10.0.0.0/104` names the IPv4 proxies `10.0.0.0/8` does: peers
    are compared as IPv4, which a mapped network never held."""
    mapped = parse_networks("::ffff:10.0.0.0/104, ::ffff:192.0.2.9")
    assert behind_proxies("10.0.0.5", ["198.51.100.7"], mapped) == "198.51.100.7"
    assert behind_proxies("::ffff:192.0.2.9", ["198.51.100.7"], mapped) == "198.51.100.7"


@pytest.mark.parametrize(
    "person",
    [
        "u_42",
        "alice@example.com",
        "100%",
        "%41 is not A",
        "josé",
        "李雷",
        "a" * 256,
        "é\u202e",
        " Ann Lee ",
    ],
)
def test_a_person_reaches_the_server_as_the_client_said_it(person: str) -> None:
    """Percent-encoded UTF-8 both ways: a header carries ASCII alone, and a
    `%` of the id itself is encoded, so none is read as an escape."""
    [(key, value)] = on_behalf_of_metadata(person)
    assert key == ON_BEHALF_OF_HEADER and value.isascii()
    assert claimed_person([(key, value)]) == person


def test_a_percent_that_escapes_nothing_is_itself_and_a_bin_header_is_not_read() -> None:
    assert claimed_person([(ON_BEHALF_OF_HEADER, "100%zz")]) == "100%zz"
    assert claimed_person([(ON_BEHALF_OF_HEADER + "-bin", b"\xff")]) == ""
    assert claimed_person([("authorization", "Bearer x")]) == ""


@pytest.mark.parametrize("value", ["", "%00", "a%C2%85b", "%E2%80", "x" * 257])
def test_a_value_no_actor_id_could_be_is_refused_naming_the_header(value: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        claimed_person([(ON_BEHALF_OF_HEADER, value)])
    assert [v.field for v in refused.value.violations] == [ON_BEHALF_OF_HEADER]
