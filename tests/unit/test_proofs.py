"""Proofs planned from stored nodes (domain.proofs) verify under two
independent readings of RFC 9162: the recursive definitions undone in
tests/rfc6962.py, and the iterative algorithms of sealtrail.tlog."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.tlog import (
    LeafTree,
    ProofError,
    RangeRoot,
    RangeTree,
    verify_consistency,
    verify_inclusion,
)
from sealtrail_server.domain.merkle import append_leaf, frontier_root
from sealtrail_server.domain.proofs import consistency_ranges, inclusion_ranges, range_hash
from tests.rfc6962 import leaf, mth, root_from_inclusion, roots_from_consistency

MAX_SIZE = 2000


def _build() -> tuple[dict[tuple[int, int], bytes], list[bytes], list[bytes]]:
    """Stored hashes (as the appender writes them), leaves and roots by size."""
    hashes: dict[tuple[int, int], bytes] = {}
    leaves, roots, frontier = [], [b""], []
    for i in range(MAX_SIZE):
        leaf_hash = leaf(f"record {i}".encode())
        leaves.append(leaf_hash)
        hashes[(0, i)] = leaf_hash
        for level, index, node in append_leaf(frontier, i, leaf_hash):
            hashes[(level, index)] = node
        roots.append(frontier_root(frontier))
    return hashes, leaves, roots


HASHES, LEAVES, ROOTS = _build()


def inclusion(m: int, n: int) -> list[bytes]:
    return [range_hash(a, b, HASHES) for a, b in inclusion_ranges(m, n)]


def consistency(m: int, n: int) -> list[bytes]:
    return [range_hash(a, b, HASHES) for a, b in consistency_ranges(m, n)]


def test_incremental_roots_match_the_recursive_definition() -> None:
    for n in (1, 2, 3, 7, 8, 9, 100, 1023, 1024, 1025, MAX_SIZE):
        assert ROOTS[n] == mth(LEAVES[:n])


@pytest.mark.parametrize("n", range(1, 70))
def test_every_inclusion_proof_of_small_trees(n: int) -> None:
    for m in range(n):
        proof = inclusion(m, n)
        assert root_from_inclusion(m, n, LEAVES[m], proof) == ROOTS[n]
        verify_inclusion(leaf_index=m, tree_size=n, leaf=LEAVES[m], proof=proof, root=ROOTS[n])


@pytest.mark.parametrize("n", range(1, 40))
def test_every_consistency_proof_of_small_trees(n: int) -> None:
    for m in range(1, n + 1):
        proof = consistency(m, n)
        if m < n:
            assert roots_from_consistency(m, n, ROOTS[m], proof) == (ROOTS[m], ROOTS[n])
        verify_consistency(
            old_size=m, new_size=n, old_root=ROOTS[m], new_root=ROOTS[n], proof=proof
        )


@settings(max_examples=400, deadline=None)
@given(st.integers(1, MAX_SIZE).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_inclusion_proofs_of_any_size(pair: tuple[int, int]) -> None:
    m, n = pair
    proof = inclusion(m, n)
    assert len(proof) <= (n - 1).bit_length()
    assert root_from_inclusion(m, n, LEAVES[m], proof) == ROOTS[n]
    verify_inclusion(leaf_index=m, tree_size=n, leaf=LEAVES[m], proof=proof, root=ROOTS[n])


@settings(max_examples=400, deadline=None)
@given(st.integers(2, MAX_SIZE).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))))
def test_consistency_proofs_of_any_sizes(pair: tuple[int, int]) -> None:
    m, n = pair
    proof = consistency(m, n)
    assert roots_from_consistency(m, n, ROOTS[m], proof) == (ROOTS[m], ROOTS[n])
    verify_consistency(old_size=m, new_size=n, old_root=ROOTS[m], new_root=ROOTS[n], proof=proof)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, MAX_SIZE).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))),
    st.data(),
)
def test_a_changed_proof_or_leaf_is_refused(pair: tuple[int, int], data: st.DataObject) -> None:
    m, n = pair
    proof = inclusion(m, n)
    other = hashlib.sha256(b"forged").digest()
    with pytest.raises(ProofError):
        verify_inclusion(leaf_index=m, tree_size=n, leaf=other, proof=proof, root=ROOTS[n])
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        forged = [*proof[:position], other, *proof[position + 1 :]]
        with pytest.raises(ProofError):
            verify_inclusion(leaf_index=m, tree_size=n, leaf=LEAVES[m], proof=forged, root=ROOTS[n])
    old = data.draw(st.integers(1, n - 1))
    with pytest.raises(ProofError):
        verify_consistency(
            old_size=old, new_size=n, old_root=other, new_root=ROOTS[n], proof=consistency(old, n)
        )


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 8, 13, 64, 100, 257])
def test_a_whole_tree_proves_each_leaf_as_the_rfc_defines(size: int) -> None:
    """sealtrail.tlog.LeafTree, which writes a complete bundle's proofs on the
    auditor's side, against the recursive definitions and the verifier."""
    leaves = [leaf(f"record {i}".encode()) for i in range(size)]
    tree = LeafTree(b"".join(leaves))
    assert (tree.size, tree.root()) == (size, mth(leaves))
    for index, hashed in enumerate(leaves):
        proof = tree.inclusion_proof(index)
        assert tree.leaf(index) == hashed
        assert root_from_inclusion(index, size, hashed, proof) == tree.root()
        verify_inclusion(
            leaf_index=index, tree_size=size, leaf=hashed, proof=proof, root=tree.root()
        )
    with pytest.raises(IndexError):
        tree.inclusion_proof(size)


def test_a_whole_tree_takes_whole_hashes_only() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        LeafTree(b"\x00" * 33)


def _ranges(size: int) -> Iterator[tuple[int, int]]:
    for first in range(size):
        for last in range(first, size):
            yield first, last


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 33])
def test_a_range_of_a_tree_proves_each_of_its_leaves_as_the_whole_tree_does(size: int) -> None:
    """sealtrail.tlog.RangeTree, which writes a range bundle's proofs from the
    range's leaves and the proofs of its first and last leaves alone: the
    same proofs, leaf by leaf, as the whole tree gives, for every range."""
    leaves = [leaf(f"record {i}".encode()) for i in range(size)]
    whole = LeafTree(b"".join(leaves))
    for first, last in _ranges(size):
        tree = RangeTree(
            b"".join(leaves[first : last + 1]),
            first=first,
            tree_size=size,
            first_proof=whole.inclusion_proof(first),
            last_proof=whole.inclusion_proof(last),
        )
        assert tree.root() == whole.root(), (first, last)
        for index in range(first, last + 1):
            assert tree.inclusion_proof(index) == whole.inclusion_proof(index), (first, last)
            assert tree.leaf(index) == leaves[index]
        with pytest.raises(IndexError):
            tree.inclusion_proof(last + 1)


def test_a_range_tree_over_other_leaves_leads_to_another_root() -> None:
    leaves = [leaf(f"record {i}".encode()) for i in range(100)]
    whole = LeafTree(b"".join(leaves))
    changed = leaves[30:61]
    changed[7] = leaf(b"another record")
    tree = RangeTree(
        b"".join(changed),
        first=30,
        tree_size=100,
        first_proof=whole.inclusion_proof(30),
        last_proof=whole.inclusion_proof(60),
    )
    assert tree.root() != whole.root()
    with pytest.raises(ProofError):  # the last leaf's proof given for another place
        RangeTree(
            b"".join(leaves[30:61]),
            first=30,
            tree_size=100,
            first_proof=whole.inclusion_proof(30),
            last_proof=whole.inclusion_proof(63)[:-1],
        )


def _range_root(leaves: list[bytes], whole: LeafTree, indexes: list[int], size: int) -> RangeRoot:
    check = RangeRoot(tree_size=size, root=whole.root())
    for index in indexes:
        check.append(index, leaves[index], whole.inclusion_proof(index))
    return check


@pytest.mark.parametrize("size", [1, 2, 3, 6, 8, 11, 16, 21])
def test_a_range_leads_to_the_root_from_its_leaves_and_its_ends_proofs(size: int) -> None:
    """sealtrail.tlog.RangeRoot, the verifier's rebuilding of a range bundle's
    root: every range of the tree leads to it."""
    leaves = [leaf(f"record {i}".encode()) for i in range(size)]
    whole = LeafTree(b"".join(leaves))
    for first, last in _ranges(size):
        _range_root(leaves, whole, list(range(first, last + 1)), size).check()


def test_a_range_with_a_leaf_changed_or_missing_does_not_lead_to_the_root() -> None:
    size = 21
    leaves = [leaf(f"record {i}".encode()) for i in range(size)]
    whole = LeafTree(b"".join(leaves))
    changed = list(leaves)
    changed[9] = leaf(b"another record")
    check = RangeRoot(tree_size=size, root=whole.root())
    for index in range(4, 15):  # each with its true proof: only the rebuilt root tells
        check.append(index, changed[index], whole.inclusion_proof(index))
    with pytest.raises(ProofError, match="another root"):
        check.check()
    with pytest.raises(ProofError, match="leaf 9 is missing"):
        _range_root(leaves, whole, [*range(4, 9), *range(10, 15)], size)
    with pytest.raises(ProofError, match="no leaf"):
        RangeRoot(tree_size=size, root=whole.root()).check()
