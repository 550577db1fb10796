"""RFC 6962 (RFC 9162 §2.1) Merkle tree hashing and the compact frontier that
extends a tree one leaf at a time in O(log n).

The frontier of a tree of size n holds the roots of the perfect subtrees that
make it up, one per set bit of n, largest (leftmost) first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(record: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + record).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def append_leaf(frontier: list[bytes], size: int, leaf: bytes) -> list[tuple[int, int, bytes]]:
    """Extend `frontier` (of a tree of `size` leaves) in place by one leaf.

    Returns the interior nodes the leaf completes, as (level, index, hash):
    node (level, index) is the root of leaves [index << level, (index + 1) << level).
    """
    completed = []
    node, bits, level = leaf, size, 0
    while bits & 1:
        node = node_hash(frontier.pop(), node)
        bits >>= 1
        level += 1
        completed.append((level, size >> level, node))
    frontier.append(node)
    return completed


def split_frontier(packed: bytes) -> list[bytes]:
    """A frontier stored as its hashes concatenated, back as a list."""
    return [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of the tree whose frontier this is."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1]
    for subtree in reversed(frontier[:-1]):
        root = node_hash(subtree, root)
    return root
