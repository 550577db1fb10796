"""An independent RFC 6962 §2.1 Merkle tree hash, written from the RFC text,
to check the server's incremental computation against."""

from __future__ import annotations

import hashlib


def mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over already-hashed leaves."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:  # the largest power of two smaller than n
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def leaf(record: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + record).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(m: int, n: int, leaf_hash: bytes, proof: list[bytes]) -> bytes:
    """The root that an RFC 6962 §2.1.1 PATH(m, D[n]) leads to, undoing the
    recursive definition (the last element is the sibling at the top split)."""
    path = list(proof)

    def walk(m: int, n: int) -> bytes:
        if n == 1:
            return leaf_hash
        k = _split(n)
        sibling = path.pop()
        if m < k:
            return _node(walk(m, k), sibling)
        return _node(sibling, walk(m - k, n - k))

    root = walk(m, n)
    if path:
        raise ValueError("proof longer than the path")
    return root


def roots_from_consistency(
    m: int, n: int, old_root: bytes, proof: list[bytes]
) -> tuple[bytes, bytes]:
    """(old root, new root) that an RFC 6962 §2.1.2 PROOF(m, D[n]) leads to,
    undoing SUBPROOF recursively."""
    path = list(proof)

    def sub(m: int, n: int, complete: bool) -> tuple[bytes, bytes]:
        if m == n:
            if complete:
                return old_root, old_root
            subtree = path.pop()
            return subtree, subtree
        k = _split(n)
        sibling = path.pop()
        if m <= k:
            old, new = sub(m, k, complete)
            return old, _node(new, sibling)
        old, new = sub(m - k, n - k, False)
        return _node(sibling, old), _node(sibling, new)

    result = sub(m, n, True)
    if path:
        raise ValueError("proof longer than the path")
    return result
