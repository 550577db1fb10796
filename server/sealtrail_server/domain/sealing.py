"""Secrets kept at rest, sealed: the credentials sinks deliver with (webhook
signing secrets, Splunk HEC tokens, Datadog and Elasticsearch API keys) are
stored encrypted with AES-256-GCM under the deployment's secrets key, so a
database dump, a replica or a backup does not hand them out.

A sealed value is bound to its place (tenant, sink, kind, field and the
destination's URL) as associated data: copied to another row, or left in a row
whose URL was changed behind the service's back, it does not open. Several
keys may be configured while rotating: the first seals, and each sealed value
names the key that sealed it (the first 4 bytes of the key's SHA-256), so any
configured key opens its own.

    sealed:v1:<base64url(key id, 12-byte nonce, ciphertext and tag)>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_PREFIX: Final = "sealed:v1:"
KEY_BYTES: Final = 32
_KEY_ID_BYTES: Final = 4
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16


class SealError(Exception):
    """A sealed value that the configured keys cannot open."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:_KEY_ID_BYTES]


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)


class SecretBox:
    """Seals with the first key, opens with whichever key sealed."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(len(key) != KEY_BYTES for key in keys):
            raise ValueError(f"secrets keys are {KEY_BYTES} bytes, and at least one is needed")
        self._sealing_id = key_id(keys[0])
        self._ciphers = {key_id(key): AESGCM(key) for key in keys}

    def seal(self, secret: str, *, place: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self._sealing_id].encrypt(nonce, secret.encode(), place.encode())
        packed = base64.urlsafe_b64encode(self._sealing_id + nonce + sealed).decode()
        return SEALED_PREFIX + packed

    def open(self, value: str, *, place: str) -> str:
        """The secret sealed in `value` for `place`. A value in the clear is
        refused: once a start has sealed what older versions stored, one can
        only have been put there behind the service's back."""
        if not is_sealed(value):
            raise SealError("stored in the clear, not sealed")
        packed = _unpack(value)
        sealed_by = packed[:_KEY_ID_BYTES]
        cipher = self._ciphers.get(sealed_by)
        if cipher is None:
            raise SealError(
                f"sealed under key {sealed_by.hex()}, which is not among the configured"
                " secrets keys (SEALTRAIL_SECRETS_KEY)"
            )
        nonce = packed[_KEY_ID_BYTES : _KEY_ID_BYTES + _NONCE_BYTES]
        try:
            secret = cipher.decrypt(nonce, packed[_KEY_ID_BYTES + _NONCE_BYTES :], place.encode())
        except InvalidTag:
            raise SealError("the sealed value was changed, or belongs elsewhere") from None
        return secret.decode()

    def is_current(self, value: str) -> bool:
        """Whether `value` is sealed under the sealing key (else it should be
        sealed again: stored in the clear, or under a key being retired)."""
        if not is_sealed(value):
            return False
        try:
            return _unpack(value)[:_KEY_ID_BYTES] == self._sealing_id
        except SealError:
            return False


def _unpack(value: str) -> bytes:
    try:
        packed = base64.b64decode(value.removeprefix(SEALED_PREFIX), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise SealError("the sealed value is not base64") from None
    if len(packed) < _KEY_ID_BYTES + _NONCE_BYTES + _TAG_BYTES:
        raise SealError("the sealed value is too short")
    return packed
