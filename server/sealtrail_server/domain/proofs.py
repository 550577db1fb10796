"""Which stored hashes an RFC 9162 proof needs, and how to combine them.

Every hash a proof holds is MTH of a range of leaves. Each such range splits
into perfect subtrees aligned to their size (`perfect_nodes`), whose roots are
stored: level 0 is a leaf hash, level l >= 1 an interior node. So a proof is
planned as ranges, its O(log n) nodes are fetched in one read, and the range
hashes are folded from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .merkle import EMPTY_ROOT, node_hash

Node = tuple[int, int]  # (level, index): the root of leaves [index << level, (index + 1) << level)
Range = tuple[int, int]  # leaves [start, end)


def _split(size: int) -> int:
    """The largest power of two smaller than `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_nodes(start: int, end: int) -> list[Node]:
    """The aligned perfect subtrees covering [start, end), left to right."""
    width = end - start
    if width > 0 and width & (width - 1) == 0 and start & (width - 1) == 0:
        return [(width.bit_length() - 1, start // width)]  # the common case: one node
    nodes = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while (1 << level) > end - start:
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]) as the ranges it hashes."""
    path: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start += k
    return path[::-1]


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]) as the ranges it hashes."""
    if not 0 < old_size < new_size:
        return []
    proof: list[Range] = []
    start, end, m, complete = 0, new_size, old_size, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append((start + k, end))
            end = start + k
        else:
            proof.append((start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        proof.append((start, end))
    return proof[::-1]


def nodes_of(ranges: Iterable[Range]) -> set[Node]:
    return {node for start, end in ranges for node in perfect_nodes(start, end)}


def range_hash(start: int, end: int, hashes: Mapping[Node, bytes]) -> bytes:
    """MTH of leaves [start, end) from the hashes of its perfect subtrees."""
    nodes = perfect_nodes(start, end)
    if not nodes:
        return EMPTY_ROOT
    result = hashes[nodes[-1]]
    for node in reversed(nodes[:-1]):
        result = node_hash(hashes[node], result)
    return result
