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
