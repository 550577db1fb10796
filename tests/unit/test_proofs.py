"""Proofs planned from stored nodes (domain.proofs) verify under two
independent readings of RFC 9162: the recursive definitions undone in
tests/rfc6962.py, and the iterative algorithms of sealtrail.tlog."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.tlog import LeafTree, ProofError, verify_consistency, verify_inclusion
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
