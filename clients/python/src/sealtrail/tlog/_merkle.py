"""RFC 9162 §2.1 Merkle tree hashing and proof verification (§2.1.3.2, §2.1.4.2),
written from the RFC's text."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof does not show what it was supposed to."""


def leaf_hash(record: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + record).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class TreeBuilder:
    """Builds a tree leaf by leaf in O(log n) memory."""

    def __init__(self) -> None:
        self.size = 0
        self._frontier: list[bytes] = []  # roots of the perfect subtrees, largest first

    def append(self, leaf: bytes) -> None:
        node, bits = leaf, self.size
        while bits & 1:
            node = node_hash(self._frontier.pop(), node)
            bits >>= 1
        self._frontier.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self._frontier:
            return EMPTY_ROOT
        root = self._frontier[-1]
        for subtree in reversed(self._frontier[:-1]):
            root = node_hash(subtree, root)
        return root


def root_from_leaves(leaves: Iterable[bytes]) -> tuple[int, bytes]:
    """(tree size, root) of the tree over `leaves` (leaf hashes, in order)."""
    builder = TreeBuilder()
    for leaf in leaves:
        builder.append(leaf)
    return builder.size, builder.root()


class LeafTree:
    """A whole tree held in memory, built once over its leaves, to write the
    inclusion proof of every leaf: 64 bytes a leaf, and each proof without a
    hash computed. Each level is one buffer of 32-byte nodes; a level's odd
    last node moves up unchanged, which gives RFC 9162's tree (split at the
    largest power of two below n) and its proofs."""

    def __init__(self, leaves: bytes | bytearray) -> None:
        """`leaves`: the leaf hashes in order, concatenated. The tree keeps
        the buffer itself as its lowest level: do not change it afterwards."""
        if len(leaves) % 32:
            raise ValueError("leaves must be 32-byte hashes, concatenated")
        self.size = len(leaves) // 32
        self._levels: list[bytes | bytearray] = [leaves]
        sha256, prefix = hashlib.sha256, b"\x01"
        level = self._levels[0]
        while len(level) > 32:
            pairs = len(level) // 64 * 64
            upper = bytearray()
            for start in range(0, pairs, 64):
                upper += sha256(prefix + level[start : start + 64]).digest()
            upper += level[pairs:]  # an odd last node, carried up
            level = upper
            self._levels.append(level)

    def root(self) -> bytes:
        return bytes(self._levels[-1]) if self.size else EMPTY_ROOT

    def leaf(self, index: int) -> bytes:
        return bytes(self._levels[0][32 * index : 32 * index + 32])

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The RFC 9162 §2.1.3.1 inclusion proof of leaf `index`, leaf side first."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} is outside a tree of size {self.size}")
        proof = []
        for level in self._levels[:-1]:
            sibling = 32 * (index ^ 1)
            if sibling < len(level):
                proof.append(bytes(level[sibling : sibling + 32]))
            index >>= 1
        return proof


def verify_inclusion(
    *, leaf_index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `proof` shows leaf `leaf_index` of the tree of
    `tree_size` leaves with root `root` is `leaf` (RFC 9162 §2.1.3.2)."""
    if not 0 <= leaf_index < tree_size:
        raise ProofError(f"leaf index {leaf_index} is outside a tree of size {tree_size}")
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofError("the inclusion proof leads to another root")


def verify_consistency(
    *,
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Raise ProofError unless `proof` shows the tree of `old_size` with
    `old_root` is a prefix of the tree of `new_size` with `new_root`
    (RFC 9162 §2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"sizes {old_size} and {new_size} are not in order")
    if old_size == new_size:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("two different roots for one tree size")
        return
    if old_size == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the tree is deep")
    if fr != old_root:
        raise ProofError("the consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("the consistency proof does not lead to the new root")
