"""Proofs at the edge sizes of a tree (0, 1, 2, 3, 2^k - 1, 2^k, 2^k + 1 up
to 1100) and requests at the edges of the log, through the real API, each
answer checked by a verifier written here from RFC 9162 §2.1.3.2 and
§2.1.4.2 (not the project's code), and checkpoints checked byte by byte
against C2SP's signed-note and tlog-checkpoint grammars with `cryptography`'s
Ed25519 alone."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import grpc
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sealtrail import (
    AuditClient,
    CheckpointError,
    InvalidArgumentError,
    NotFoundError,
    RpcFailedError,
    build_event,
)
from sealtrail._errors import from_rpc_error
from sealtrail.tlog import NoteError, Signer, open_note
from sealtrail.v1 import integrity_pb2
from tests.conftest import SIGNING_KEY

VERIFIER = Signer.parse(SIGNING_KEY).verifier

SIZES = sorted(
    {1, 2, 3, 1100} | {n for k in range(2, 11) for n in (2**k - 1, 2**k, 2**k + 1)}
)  # 1, 2, 3, 4, 5, 7, 8, 9, ..., 1023, 1024, 1025, 1100


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return _sha(b"\x01" + left + right)


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf hashes."""
    if not leaves:
        return _sha(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _node(_mth(leaves[:k]), _mth(leaves[k:]))


def _verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = _node(p, r)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def _verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, proof: list[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step."""
    if first == second:
        return not proof and first_hash == second_hash
    if first == 0 or first > second or not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_hash and sr == second_hash


def _record(client: AuditClient, count: int) -> None:
    while count:
        batch = min(count, 1000)
        client.record_batch(
            [build_event(action="edges.test", actor_id="u", description="e")] * batch
        )
        count -= batch


def _leaves(sql: psycopg.Connection[Any], tenant: str) -> list[bytes]:
    rows = sql.execute(
        "SELECT leaf_hash FROM events WHERE tenant_id = %s ORDER BY seq", [tenant]
    ).fetchall()
    return [bytes(row[0]) for row in rows]


def test_verifiers_here_accept_what_the_rfc_builds_and_refuse_a_changed_hash() -> None:
    """The verifiers of this file can fail: a proof built from the RFC's
    recursive definitions verifies, and with one hash changed does not."""
    leaves = [_sha(bytes([i])) for i in range(13)]

    def path(m: int, d: list[bytes]) -> list[bytes]:
        if len(d) == 1:
            return []
        k = 1 << ((len(d) - 1).bit_length() - 1)
        if m < k:
            return [*path(m, d[:k]), _mth(d[k:])]
        return [*path(m - k, d[k:]), _mth(d[:k])]

    def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
        if m == len(d):
            return [] if b else [_mth(d)]
        k = 1 << ((len(d) - 1).bit_length() - 1)
        if m <= k:
            return [*subproof(m, d[:k], b), _mth(d[k:])]
        return [*subproof(m - k, d[k:], False), _mth(d[:k])]

    for n in range(1, 14):
        for m in range(n):
            proof = path(m, leaves[:n])
            assert _verify_inclusion(m, n, leaves[m], proof, _mth(leaves[:n]))
            if proof:
                proof[-1] = _sha(proof[-1])
                assert not _verify_inclusion(m, n, leaves[m], proof, _mth(leaves[:n]))
        for m in range(1, n):
            proof = subproof(m, leaves[:n], True)
            assert _verify_consistency(m, n, _mth(leaves[:m]), _mth(leaves[:n]), proof)
            proof[0] = _sha(proof[0])
            assert not _verify_consistency(m, n, _mth(leaves[:m]), _mth(leaves[:n]), proof)


def _check_note(note: str, *, origin: str, size: int, root: bytes) -> None:
    """The note, byte for byte, as C2SP's tlog-checkpoint and signed-note
    say, its signature checked with `cryptography` alone against the key the
    test server signs with."""
    # PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>
    _, _, name, hex_id, encoded = SIGNING_KEY.split("+", 4)
    raw = base64.b64decode(encoded)
    assert raw[0] == 1 and len(raw) == 33
    public = (
        Ed25519PrivateKey.from_private_bytes(raw[1:])
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    key_id = _sha(name.encode() + b"\n" + b"\x01" + public)[:4]
    assert key_id.hex() == hex_id
    body = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
    assert note.startswith(body + "\n\u2014 ")
    lines = note[len(body) + 1 :].split("\n")
    assert lines[-1] == "" and len(lines) == 2, note
    match = re.fullmatch("\u2014 (\\S+) ([A-Za-z0-9+/]+={0,2})", lines[0])
    assert match is not None, lines[0]
    assert match.group(1) == name
    signature = base64.b64decode(match.group(2), validate=True)
    assert signature[:4] == key_id and len(signature) == 4 + 64
    Ed25519PrivateKey.from_private_bytes(raw[1:]).public_key().verify(signature[4:], body.encode())


def test_an_empty_log_has_no_checkpoint_and_no_proof(client: AuditClient) -> None:
    with pytest.raises(NotFoundError):
        client.get_checkpoint()
    with pytest.raises(NotFoundError):
        client.get_checkpoint(fresh=True)
    with pytest.raises(NotFoundError):
        client.get_inclusion_proof(seq=1)
    with pytest.raises(RpcFailedError) as beyond:
        client.get_consistency_proof(old_size=1)
    assert beyond.value.reason == "BEYOND_LOG_SIZE"


def test_proofs_at_every_edge_size_verify_independently(
    client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    origin = f"sealtrail.test/log/{tenant}"
    _record(client, 1)
    one = client.get_checkpoint(fresh=True)
    [first_leaf] = _leaves(sql, tenant)
    assert (one.tree_size, one.root_hash) == (1, first_leaf)
    _check_note(one.note, origin=origin, size=1, root=first_leaf)
    only = client.get_inclusion_proof(seq=1, tree_size=1)
    assert list(only.proof) == [] and only.leaf_hash == first_leaf
    assert only.checkpoint.note == one.note

    _record(client, SIZES[-1] - 1)
    leaves = _leaves(sql, tenant)[: SIZES[-1]]
    assert len(leaves) == SIZES[-1]
    roots = {size: _mth(leaves[:size]) for size in SIZES}
    signed = client.get_checkpoint(fresh=True)
    _check_note(signed.note, origin=origin, size=signed.tree_size, root=signed.root_hash)
    if signed.tree_size == SIZES[-1]:
        assert signed.root_hash == roots[SIZES[-1]]

    for size in SIZES:
        for index in sorted({0, 1, size // 2, size - 2, size - 1} & set(range(size))):
            answer = client.get_inclusion_proof(seq=index + 1, tree_size=size)
            assert answer.tree_size == size and answer.seq == index + 1
            assert answer.leaf_hash == leaves[index] == _sha(b"\x00" + answer.record)
            assert _verify_inclusion(
                index, size, answer.leaf_hash, list(answer.proof), roots[size]
            ), (index, size)
        # The leaf index equal to the size (seq size + 1) is not in it: refused
        # at the call (the server's refusal: test_sizes_no_log_has_are_refused...).
        with pytest.raises(ValueError, match=r"^tree_size: must be at least the event's seq"):
            client.get_inclusion_proof(seq=size + 1, tree_size=size)

    for old in SIZES:
        for new in SIZES:
            if new < old:  # refused at the call, as the server refuses it
                with pytest.raises(ValueError, match=r"^new_size: must not be smaller"):
                    client.get_consistency_proof(old_size=old, new_size=new)
                continue
            answer = client.get_consistency_proof(old_size=old, new_size=new)
            assert (answer.old_size, answer.new_size) == (old, new)
            assert (answer.old_root, answer.new_root) == (roots[old], roots[new])
            assert _verify_consistency(old, new, roots[old], roots[new], list(answer.proof)), (
                old,
                new,
            )


def test_requests_at_the_edges_of_the_log(client: AuditClient, tenant: str) -> None:
    _record(client, 10)
    signed = client.get_checkpoint(fresh=True)
    assert signed.tree_size == 10
    # From the empty tree: not asked that way (refused at the call, as the server does).
    with pytest.raises(ValueError, match=r"^old_size: must be 1 or more, not 0$"):
        client.get_consistency_proof(old_size=0, new_size=5)
    same = client.get_consistency_proof(old_size=7, new_size=7)
    assert list(same.proof) == [] and same.old_root == same.new_root
    # A size never signed: no checkpoint at it, but proofs at it all the same.
    with pytest.raises(NotFoundError):
        client.get_checkpoint(tree_size=7)
    at_seven = client.get_inclusion_proof(seq=3, tree_size=7)
    assert not at_seven.HasField("checkpoint") and at_seven.tree_size == 7
    assert _verify_inclusion(2, 7, at_seven.leaf_hash, list(at_seven.proof), same.old_root)
    # Beyond the log.
    size = client.get_checkpoint(fresh=True).tree_size
    with pytest.raises(RpcFailedError) as beyond:
        client.get_consistency_proof(old_size=1, new_size=size + 1)
    assert beyond.value.reason == "BEYOND_LOG_SIZE"
    with pytest.raises(RpcFailedError) as beyond:
        client.get_inclusion_proof(seq=1, tree_size=size + 1)
    assert beyond.value.reason == "BEYOND_LOG_SIZE"
    with pytest.raises(NotFoundError):
        client.get_checkpoint(tree_size=size + 1)


# Requests no log can answer, as sent by another client: the server refuses
# each, INVALID_ARGUMENT on the field named, whatever the log holds. Both
# clients refuse them first, at the call (tests/unit/test_client_stream.py).
_NO_LOG_HAS: list[tuple[str, Any, str]] = [
    ("GetCheckpoint", integrity_pb2.GetCheckpointRequest(tree_size=-1), "tree_size"),
    ("GetInclusionProof", integrity_pb2.GetInclusionProofRequest(seq=-3), "seq"),
    ("GetInclusionProof", integrity_pb2.GetInclusionProofRequest(seq=2**53), "seq"),
    ("GetInclusionProof", integrity_pb2.GetInclusionProofRequest(seq=2**63 - 1), "seq"),
    (
        "GetInclusionProof",
        integrity_pb2.GetInclusionProofRequest(seq=1, tree_size=-1),
        "tree_size",
    ),
    (
        "GetInclusionProof",
        integrity_pb2.GetInclusionProofRequest(seq=10, tree_size=5),
        "tree_size",
    ),
    ("GetConsistencyProof", integrity_pb2.GetConsistencyProofRequest(old_size=0), "old_size"),
    (
        "GetConsistencyProof",
        integrity_pb2.GetConsistencyProofRequest(old_size=-2, new_size=5),
        "old_size",
    ),
    (
        "GetConsistencyProof",
        integrity_pb2.GetConsistencyProofRequest(old_size=3, new_size=-1),
        "new_size",
    ),
    (
        "GetConsistencyProof",
        integrity_pb2.GetConsistencyProofRequest(old_size=7, new_size=5),
        "new_size",
    ),
]


@pytest.mark.parametrize(("rpc", "request_message", "field"), _NO_LOG_HAS)
def test_sizes_no_log_has_are_refused_by_the_server_naming_the_field(
    client: AuditClient, rpc: str, request_message: Any, field: str
) -> None:
    _record(client, 10)
    with pytest.raises(grpc.RpcError) as refused:
        getattr(client._stub, rpc)(request_message, metadata=client._metadata, timeout=30)
    error = from_rpc_error(refused.value)
    assert isinstance(error, InvalidArgumentError), error
    assert [named for named, _ in error.field_violations] == [field]


def test_a_checkpoint_carrying_a_bad_signature_by_a_trusted_key_is_refused(
    client: AuditClient,
) -> None:
    """C2SP signed notes (and Go's note.Open, the reference): a signature
    line by a known key (its name and key id) that does not verify refuses
    the whole note, and repeated signatures by one key count once. A
    checkpoint with a forged line by the trusted key beside the genuine one
    was accepted here as signed by that key (and a repeated genuine line
    named it twice), where every other C2SP verifier refuses it."""
    _record(client, 3)
    note = client.get_checkpoint(fresh=True).note
    key = VERIFIER.text()
    text, _, line = note.rpartition("\n\n")
    genuine = base64.b64decode(line.split(" ")[-1])
    forged_signature = genuine[:4] + bytes(64)  # the key's id, a signature of zeros
    forged_line = f"\u2014 {VERIFIER.name} {base64.b64encode(forged_signature).decode()}\n"
    forged = f"{text}\n\n{forged_line}{line}"  # the forged line first
    with pytest.raises(NoteError, match="does not verify"):
        open_note(forged, [VERIFIER])
    with pytest.raises(CheckpointError, match="does not verify"):
        client.check_checkpoint(forged, key=key)
    # After the key's first signature its others are skipped, forged or not.
    assert open_note(note + forged_line, [VERIFIER])[1] == [VERIFIER]
    doubled = note + line  # the genuine line twice
    assert open_note(doubled, [VERIFIER])[1] == [VERIFIER]
    assert client.check_checkpoint(doubled, key=key).signed_by == [key]
