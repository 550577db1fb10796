"""RFC 6962 Merkle tree hashing and the compact frontier, against the
certificate-transparency known answers and an independent implementation of
the RFC's recursive definition written here."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail_server.domain import merkle
from tests.rfc6962 import mth

# The leaves of the certificate-transparency test suites (RFC 6962 test data),
# and MTH(D[n]) of their first n for n = 0..8.
CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def reference_mth(entries: list[bytes]) -> bytes:
    """MTH(D[n]) over raw entries, written from RFC 6962 §2.1 without the
    module under test: the empty hash, SHA-256(0x00 || d) for one entry, and
    SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) with k the largest power of
    two smaller than n."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256().digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(
        b"\x01" + reference_mth(entries[:k]) + reference_mth(entries[k:])
    ).digest()


def entries(count: int) -> list[bytes]:
    """Distinct raw entries of varying length."""
    return [i.to_bytes(4, "big") * (i % 3 + 1) for i in range(count)]


def perfect_subtree_sizes(size: int) -> list[int]:
    """The sizes of the perfect subtrees a tree of `size` leaves splits into,
    largest first: one per set bit."""
    return [1 << bit for bit in reversed(range(size.bit_length())) if size >> bit & 1]


def test_empty_root_is_sha256_of_nothing() -> None:
    expected = bytes.fromhex(CT_ROOTS[0])
    assert hashlib.sha256(b"").digest() == expected
    assert merkle.EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert mth([]) == expected
    assert merkle.frontier_root([]) == expected


def test_leaf_and_node_hashes_use_the_rfc_domain_prefixes() -> None:
    assert merkle.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = b"L" * 32, b"R" * 32
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert merkle.node_hash(left, right) != merkle.node_hash(right, left)
    # A leaf and a node over the same bytes must not collide (second preimages).
    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)


def test_reference_implementation_reproduces_the_ct_known_answers() -> None:
    for size, expected in enumerate(CT_ROOTS):
        assert reference_mth(CT_LEAVES[:size]).hex() == expected, size


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_reference_mth_matches_ct_known_answers(size: int) -> None:
    leaves = [merkle.leaf_hash(entry) for entry in CT_LEAVES[:size]]
    assert mth(leaves).hex() == CT_ROOTS[size]


def test_frontier_matches_ct_known_answers_after_every_append() -> None:
    frontier: list[bytes] = []
    assert merkle.frontier_root(frontier).hex() == CT_ROOTS[0]
    for size, entry in enumerate(CT_LEAVES):
        merkle.append_leaf(frontier, size, merkle.leaf_hash(entry))
        assert merkle.frontier_root(frontier).hex() == CT_ROOTS[size + 1], size + 1


def test_frontier_agrees_with_both_definitions_for_every_size_up_to_300() -> None:
    data = entries(300)
    leaves = [merkle.leaf_hash(entry) for entry in data]
    frontier: list[bytes] = []
    for size in range(301):
        root = merkle.frontier_root(frontier)
        assert root == mth(leaves[:size]), size
        assert root == reference_mth(data[:size]), size
        assert len(frontier) == size.bit_count(), size
        if size < 300:
            merkle.append_leaf(frontier, size, leaves[size])


def test_frontier_holds_the_perfect_subtree_roots_largest_first() -> None:
    data = entries(45)  # 0b101101: subtrees of 32, 8, 4 and 1 leaves
    frontier: list[bytes] = []
    for size, entry in enumerate(data):
        merkle.append_leaf(frontier, size, merkle.leaf_hash(entry))
    start, expected = 0, []
    for width in perfect_subtree_sizes(45):
        expected.append(reference_mth(data[start : start + width]))
        start += width
    assert perfect_subtree_sizes(45) == [32, 8, 4, 1]
    assert frontier == expected


def test_append_leaf_depends_on_order() -> None:
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    ab: list[bytes] = []
    merkle.append_leaf(ab, 0, a)
    merkle.append_leaf(ab, 1, b)
    ba: list[bytes] = []
    merkle.append_leaf(ba, 0, b)
    merkle.append_leaf(ba, 1, a)
    assert merkle.frontier_root(ab) != merkle.frontier_root(ba)
    assert merkle.frontier_root(ab) == reference_mth([b"a", b"b"])


@settings(max_examples=25, deadline=None)
@given(size=st.integers(min_value=0, max_value=5000), salt=st.binary(max_size=8))
def test_frontier_agrees_with_the_rfc_definition_for_random_sizes(size: int, salt: bytes) -> None:
    data = [salt + i.to_bytes(3, "big") for i in range(size)]
    leaves = [merkle.leaf_hash(entry) for entry in data]
    frontier: list[bytes] = []
    for index, leaf in enumerate(leaves):
        merkle.append_leaf(frontier, index, leaf)
    assert len(frontier) == size.bit_count()
    expected = reference_mth(data)
    assert merkle.frontier_root(frontier) == expected
    assert mth(leaves) == expected
