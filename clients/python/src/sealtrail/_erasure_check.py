"""Checking an erasure receipt offline, with no server and no database,
against verifier keys the auditor pinned (docs/integrity.md, "Erasure
receipts"): its signed note must be an erasure receipt, signed by one of those
keys, that says what the receipt's fields say. The final checkpoint in it, if
any, must be signed by them too, and state the same log, size and root.

A receipt's fields are the database's word: a superuser who deleted a
tenant's rows and wrote a `tenant_erasures` row, reusing the tenant's latest
genuine checkpoint as the final one, made a receipt that only its missing
signature tells from a real one (ADR 0073)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from sealtrail.tlog import (
    ErasureStatement,
    NewerStatementError,
    NoteError,
    Verifier,
    open_note,
    parse_checkpoint,
)
from sealtrail.v1 import retention_pb2

_DASH = "\u2014 "  # em dash and a space start every signature line of a note


class ErasureReceiptError(Exception):
    """An erasure receipt does not verify: nothing it says is proven."""


class UnsignedReceiptError(ErasureReceiptError):
    """The receipt bears no signed receipt: one kept before receipts were
    signed (migration 0045), or a database superuser's."""


class ReceiptKeyError(ErasureReceiptError):
    """No given key signed the receipt (a key not pinned, or none given)."""


class ReceiptSignatureError(ErasureReceiptError):
    """The receipt's signature, by a given key's name and id, does not verify
    (its text was changed), or it signs something else than an erasure
    receipt (a checkpoint's note presented as the receipt's)."""


class NewerReceiptError(ErasureReceiptError):
    """The receipt is signed by a given key in a version beyond this
    client's: a newer Sealtrail's, which a newer client reads. Neither
    forged nor verified: nothing it says is proven here."""


class ReceiptMismatchError(ErasureReceiptError):
    """The receipt's fields differ from what its signature covers: the receipt
    was edited (in the database, or in a copy). `fields`: which."""

    def __init__(self, message: str, fields: Sequence[str]) -> None:
        super().__init__(message)
        self.fields = list(fields)


@dataclass(frozen=True)
class ErasureReceiptCheck:
    """What a verified receipt proves, as signed: the erasure of `tenant_id`'s
    log `origin` at `final_tree_size` and `final_root_hash`, by `erased_by`
    (a token id, or `sealtrail-server:NAME`), at `erased_at`, and the rows
    removed. `signed_by`: the given keys (verifier text) that signed it."""

    tenant_id: str
    origin: str
    final_tree_size: int
    final_root_hash: bytes
    erased_by: str
    erased_at: datetime
    removed_rows: dict[str, int]
    signed_by: list[str]


def _verifiers(key: str | Sequence[str]) -> list[Verifier]:
    given = [key] if isinstance(key, str) else list(key)
    if not given:
        raise ReceiptKeyError("verifier key: none given")
    try:
        return [Verifier.parse(text) for text in given]
    except NoteError as error:
        raise ReceiptKeyError(f"verifier key: {error}") from None


def _message(
    receipt: retention_pb2.ErasureReceipt | str | bytes | Mapping[str, Any],
) -> retention_pb2.ErasureReceipt:
    """The receipt as a message: given as one, or as its JSON (text or
    parsed), as `sealtrail erase-tenant` and `sealtrail-server tenant erase`
    print it."""
    if isinstance(receipt, retention_pb2.ErasureReceipt):
        return receipt
    try:
        parsed = json.loads(receipt) if isinstance(receipt, str | bytes) else dict(receipt)
        return json_format.ParseDict(parsed, retention_pb2.ErasureReceipt())
    except (ValueError, TypeError, RecursionError, json_format.ParseError) as error:
        raise ErasureReceiptError(f"not an erasure receipt: {error}") from None


def _signers_named(note: str) -> list[tuple[str, bytes]]:
    """The (key name, key id) of each signature line of `note`, unchecked."""
    _, _, signatures = note.rpartition("\n\n")
    named = []
    for line in signatures.split("\n"):
        name, _, encoded = line.removeprefix(_DASH).rpartition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if line.startswith(_DASH) and len(raw) >= 4:
            named.append((name, raw[:4]))
    return named


def _opened(note: str, verifiers: list[Verifier], what: str) -> tuple[str, list[Verifier]]:
    """The text of `note` and the given keys that signed it; ReceiptKeyError
    when no given key's name and id signs it, ReceiptSignatureError when one
    does but its signature does not verify (or the note is malformed)."""
    try:
        return open_note(note, verifiers)
    except NoteError as error:
        named = _signers_named(note)
        pinned = {(key.name, key.key_id) for key in verifiers}
        if named and not any(signer in pinned for signer in named):
            keys = ", ".join(f"{name}+{key_id.hex()}" for name, key_id in named)
            raise ReceiptKeyError(
                f"{what} is signed by {keys}: no given key (an unknown key, or one not pinned)"
            ) from None
        if named:
            raise ReceiptSignatureError(
                f"{what}: the signature by a given key does not verify (the text it signs"
                " was changed)"
            ) from None
        raise ReceiptSignatureError(f"{what}: {error}") from None


def verify_erasure_receipt(
    receipt: retention_pb2.ErasureReceipt | str | bytes | Mapping[str, Any],
    *,
    key: str | Sequence[str],
) -> ErasureReceiptCheck:
    """Check an erasure receipt offline against pinned verifier keys: `key`,
    one verifier key's text or several (a deployment whose key was rotated).
    `receipt`: the ErasureReceipt EraseTenant answered, or its JSON as the
    commands print it. Returns what the signature proves; raises
    UnsignedReceiptError (a receipt kept before receipts were signed, or a
    superuser's), ReceiptKeyError (signed by no given key),
    NewerReceiptError (signed by a given key in a version beyond this
    client's: a newer Sealtrail's, to be checked by a newer client),
    ReceiptSignatureError (a signature that does not verify, or of something
    else than a receipt: a checkpoint's), ReceiptMismatchError (a field that
    differs from what is signed), each an ErasureReceiptError."""
    verifiers = _verifiers(key)
    message = _message(receipt)
    if not message.signed_receipt:
        raise UnsignedReceiptError(
            f"the receipt of tenant {message.tenant_id!r} is not signed (signed_receipt is"
            " empty): a receipt kept before receipts were signed, or one written into the"
            " database by hand; nothing proves who erased the tenant, when, or that it was"
            " erased at all"
        )
    text, signers = _opened(message.signed_receipt, verifiers, "the signed receipt")
    try:
        signed = ErasureStatement.parse(text)
    except NewerStatementError as error:  # signed by a given key: a newer server's
        raise NewerReceiptError(str(error)) from None
    except NoteError as error:
        raise ReceiptSignatureError(f"the signed receipt: {error}") from None
    stated = ErasureStatement(
        origin=signed.origin,
        tenant_id=message.tenant_id,
        final_tree_size=message.final_tree_size,
        final_root_hash=message.final_root_hash,
        erased_by=message.erased_by_token_id,
        erased_at=message.erase_time.ToDatetime(tzinfo=UTC),
        removed_rows=dict(message.removed_rows),
    )
    differ = stated.differences(signed)
    if message.HasField("final_checkpoint"):
        differ += _checkpoint_differences(message, signed, verifiers)
    if differ:
        raise ReceiptMismatchError(
            f"the receipt's {', '.join(differ)} differ from what its signature covers: it was"
            " edited after it was signed",
            differ,
        )
    return ErasureReceiptCheck(
        tenant_id=signed.tenant_id,
        origin=signed.origin,
        final_tree_size=signed.final_tree_size,
        final_root_hash=signed.final_root_hash,
        erased_by=signed.erased_by,
        erased_at=signed.erased_at,
        removed_rows=signed.removed_rows,
        signed_by=[signer.text() for signer in signers],
    )


def _checkpoint_differences(
    message: retention_pb2.ErasureReceipt, signed: ErasureStatement, verifiers: list[Verifier]
) -> list[str]:
    """Whether the final checkpoint in the receipt is one of the same log at
    the size and root the receipt signs (its fields too), signed by a given key."""
    final = message.final_checkpoint
    text, _ = _opened(final.note, verifiers, "the final checkpoint")
    try:
        checkpoint = parse_checkpoint(text)
    except NoteError as error:
        raise ReceiptSignatureError(f"the final checkpoint: {error}") from None
    if (checkpoint.origin.rpartition("/")[2], checkpoint.tree_size, checkpoint.root_hash) != (
        signed.tenant_id,
        signed.final_tree_size,
        signed.final_root_hash,
    ) or (final.tree_size, final.root_hash) != (checkpoint.tree_size, checkpoint.root_hash):
        return ["final_checkpoint"]
    return []
