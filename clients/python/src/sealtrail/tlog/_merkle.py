"""RFC 9162 §2.1 Merkle tree hashing and proof verification (§2.1.3.2, §2.1.4.2),
written from the RFC's text."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from sealtrail._words import counted

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

    @classmethod
    def resumed(cls, size: int, frontier: Sequence[bytes]) -> TreeBuilder:
        """A builder of a tree of `size` leaves, which it does not hold, from
        the roots of its perfect subtrees (largest first); ProofError if they
        are not one for each bit set in `size`."""
        if size < 0 or len(frontier) != size.bit_count():
            raise ProofError(
                f"a tree of {counted(size, 'leaf', 'leaves')} has"
                f" {counted(max(size, 0).bit_count(), 'perfect subtree')}"
            )
        builder = cls()
        builder.size, builder._frontier = size, list(frontier)
        return builder

    @property
    def frontier(self) -> list[bytes]:
        """The roots of the tree's perfect subtrees, largest first."""
        return list(self._frontier)

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


def _siblings_by_level(leaf_index: int, tree_size: int, proof: Sequence[bytes]) -> dict[int, bytes]:
    """The hashes of an inclusion proof by the level of the tree they sit at
    (0: leaves), as `LeafTree` lays a tree out: at level k the node of index
    j covers leaves j * 2^k up to (j + 1) * 2^k, cut at the tree's end, and a
    proof holds the sibling (j ^ 1) of the path's node wherever it exists.
    Raises ProofError if the proof has not one hash for each of those."""
    found: dict[int, bytes] = {}
    hashes = iter(proof)
    level, count, index = 0, tree_size, leaf_index
    while count > 1:
        if index ^ 1 < count:
            node = next(hashes, None)
            if node is None:
                raise ProofError("the inclusion proof is shorter than the tree is deep")
            found[level] = node
        level, count, index = level + 1, (count + 1) // 2, index >> 1
    if next(hashes, None) is not None:
        raise ProofError("the inclusion proof is longer than the tree is deep")
    return found


class RangeTree:
    """A contiguous range of a tree's leaves held in memory with the hashes
    around it, to write the inclusion proof of each of its leaves in the whole
    tree, as `LeafTree` does for all of them (64 bytes a leaf of the range).

    What lies outside the range is the siblings on the paths of its first and
    last leaves: at each level at most one node just before the range's nodes
    and one just after (RFC 9162 §2.1.3: every other node a proof of a leaf in
    the range needs is built from the range's leaves and those). So the
    inclusion proofs of the range's first and last leaves, from the log, are
    all it takes; `root()` then says whether the range leads to the signed
    root."""

    def __init__(
        self,
        leaves: bytes | bytearray,
        *,
        first: int,
        tree_size: int,
        first_proof: Sequence[bytes],
        last_proof: Sequence[bytes],
    ) -> None:
        """`leaves`: the leaf hashes of indexes `first` on, concatenated (kept
        as the lowest level: do not change it afterwards); the proofs, those of
        the range's first and last leaves in the tree of `tree_size`. Raises
        ProofError if a proof does not fit its leaf's place in that tree."""
        if len(leaves) % 32 or not leaves:
            raise ValueError("leaves must be one or more 32-byte hashes, concatenated")
        last = first + len(leaves) // 32 - 1
        if not 0 <= first <= last < tree_size:
            raise ValueError(f"leaves {first}..{last} are not within a tree of size {tree_size}")
        self.size, self.first, self.last = tree_size, first, last
        self._before = _siblings_by_level(first, tree_size, first_proof)
        self._after = _siblings_by_level(last, tree_size, last_proof)
        # Per level: the index of its first node in the range, and the nodes.
        self._levels: list[tuple[int, bytes | bytearray]] = [(first, leaves)]
        sha256, prefix = hashlib.sha256, b"\x01"
        start, level, count, depth = first, leaves, tree_size, 0
        while count > 1:
            end = start + len(level) // 32 - 1
            before = self._before[depth] if start & 1 else b""
            after = self._after[depth] if not end & 1 and end + 1 < count else b""
            if len(before) != 32 * (start & 1) or (after and end + 1 >= count):
                raise ProofError("the inclusion proofs do not fit the range")
            row = before + level + after if before or after else level
            pairs = len(row) // 64 * 64
            upper = bytearray()
            for at in range(0, pairs, 64):
                upper += sha256(prefix + row[at : at + 64]).digest()
            upper += row[pairs:]  # the level's odd last node, carried up
            start, level, count, depth = start >> 1, upper, (count + 1) // 2, depth + 1
            self._levels.append((start, level))

    def root(self) -> bytes:
        return bytes(self._levels[-1][1])

    def leaf(self, index: int) -> bytes:
        start, level = self._levels[0]
        return bytes(level[32 * (index - start) : 32 * (index - start) + 32])

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The RFC 9162 §2.1.3.1 inclusion proof of leaf `index` of the range
        in the whole tree, leaf side first."""
        if not self.first <= index <= self.last:
            raise IndexError(f"leaf index {index} is outside the range {self.first}..{self.last}")
        proof, count = [], self.size
        for depth, (start, level) in enumerate(self._levels[:-1]):
            sibling = index ^ 1
            if sibling < count:
                at = 32 * (sibling - start)
                if sibling < start:
                    proof.append(self._before[depth])
                elif at >= len(level):
                    proof.append(self._after[depth])
                else:
                    proof.append(bytes(level[at : at + 32]))
            index, count = index >> 1, (count + 1) // 2
        return proof


class RangeRoot:
    """Recomputes a tree's root from a contiguous range of its leaves, given
    one by one in order with their inclusion proofs, in O(log n) memory: the
    hashes before the range are those the first leaf's proof holds on its
    left (the perfect subtrees before it, RFC 9162 §2.1.3), from which the
    range's leaves build the hashes on the last leaf's left; with the hashes
    on its right from its own proof they must lead to the root. A leaf of the
    range changed, left out, added or moved changes them, however each leaf's
    own proof checks."""

    def __init__(self, *, tree_size: int, root: bytes) -> None:
        self.size, self.root = tree_size, root
        self._builder: TreeBuilder | None = None
        self._last: tuple[int, bytes, Sequence[bytes]] | None = None

    def append(self, leaf_index: int, leaf: bytes, proof: Sequence[bytes]) -> None:
        if self._last is None:
            self._builder = TreeBuilder.resumed(
                leaf_index, _left_hashes(leaf_index, self.size, proof)
            )
        else:
            assert self._builder is not None
            if leaf_index != self._last[0] + 1:
                raise ProofError(f"leaf {self._last[0] + 1} is missing from the range")
            self._builder.append(self._last[1])
        self._last = (leaf_index, leaf, proof)

    def check(self) -> None:
        """Raise ProofError unless the range's leaves lead to the root."""
        if self._last is None or self._builder is None:
            raise ProofError("the range holds no leaf")
        index, leaf, proof = self._last
        left = iter(reversed(self._builder.frontier))  # smallest (lowest) first
        rebuilt = [
            next(left, b"") if on_left else p for p, on_left in _sides(index, self.size, proof)
        ]
        if next(left, None) is not None or b"" in rebuilt:
            raise ProofError("the range's leaves do not fill the tree before its last leaf")
        verify_inclusion(
            leaf_index=index, tree_size=self.size, leaf=leaf, proof=rebuilt, root=self.root
        )


def _sides(leaf_index: int, tree_size: int, proof: Sequence[bytes]) -> list[tuple[bytes, bool]]:
    """Each hash of an inclusion proof, and whether it lies left of the leaf's
    path (RFC 9162 §2.1.3.2's walk)."""
    if not 0 <= leaf_index < tree_size:
        raise ProofError(f"leaf index {leaf_index} is outside a tree of size {tree_size}")
    sides = []
    fn, sn = leaf_index, tree_size - 1
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        on_left = bool(fn & 1 or fn == sn)
        if on_left and not fn & 1:
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        sides.append((p, on_left))
        fn, sn = fn >> 1, sn >> 1
    return sides


def _left_hashes(leaf_index: int, tree_size: int, proof: Sequence[bytes]) -> list[bytes]:
    """The hashes of the perfect subtrees before leaf `leaf_index`, largest
    first: those its inclusion proof holds on its left."""
    return [p for p, on_left in reversed(_sides(leaf_index, tree_size, proof)) if on_left]
