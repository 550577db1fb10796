"""Page tokens (AIP-158): opaque to callers, bound to the query, the tenant
and the caller they were issued to, and signed so that only this service
issues them (ADR 0042).

A query is recorded once, on its first page (ADR 0012): the later pages are
read on the strength of that record. Unsigned, a token could be written by
hand for any filter, or handed to another token, and the whole log paged
through with no record at all (helper-67). Signed with a key every process of
the deployment derives from its redaction secret, a token comes only from a
first page this caller's query read and the log recorded.

    base64url(JSON {"v": 2, "f": <fingerprint>, "s": <last seq>}) "." base64url(HMAC[:16])

The HMAC-SHA256 covers the JSON and the caller's token id. A listing ordered
by more than one column (a sink's dead letters: when parked, seq, id) holds
the last row's key instead of a seq: {"v": 2, "f": ..., "k": [<int or str>, ...]}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any, Final

from .errors import InvalidArgument

_VERSION: Final = 2
_MAC_BYTES: Final = 16
_MAX_TOKEN_LENGTH: Final = 512  # real tokens are about 150 characters
_LABEL: Final = b"sealtrail page tokens v2\x00"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)


class PageTokens:
    """Issues and reads the page tokens of one deployment."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, _LABEL, hashlib.sha256).digest()

    def _mac(self, payload: bytes, caller: str) -> bytes:
        message = payload + b"\x00" + caller.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def signed(self, payload: bytes, *, caller: str) -> str:
        """`payload` as a token issued to `caller` (encode's framing)."""
        return f"{_b64(payload)}.{_b64(self._mac(payload, caller))}"

    def encode(self, *, fingerprint: str, last_seq: int, caller: str) -> str:
        """The token of the page after `last_seq` of the query `fingerprint`
        names, for `caller` (a token id) alone."""
        payload = json.dumps({"v": _VERSION, "f": fingerprint, "s": last_seq}).encode()
        return self.signed(payload, caller=caller)

    def encode_key(self, *, fingerprint: str, key: Sequence[int | str], caller: str) -> str:
        """The token of the page after the row whose key (in the listing's
        order) is `key`, of the listing `fingerprint` names, for `caller` alone."""
        payload = json.dumps({"v": _VERSION, "f": fingerprint, "k": list(key)}).encode()
        return self.signed(payload, caller=caller)

    def decode(self, token: str, *, fingerprint: str, caller: str) -> int:
        """The last seq of the previous page, if `token` was issued to
        `caller` for this query; InvalidArgument on `page_token` if not."""
        seq: int = self._read(token, "s", _is_seq, fingerprint=fingerprint, caller=caller)
        return seq

    def decode_key(
        self, token: str, *, fingerprint: str, caller: str, kinds: Sequence[type[int | str]]
    ) -> list[Any]:
        """The key of the last row of the previous page (one value of each of
        `kinds`), if `token` was issued to `caller` for this listing;
        InvalidArgument on `page_token` if not."""

        def is_key(key: object) -> bool:
            return (
                isinstance(key, list)
                and len(key) == len(kinds)
                and all(
                    type(value) is kind and (kind is not int or _is_seq(value))
                    for value, kind in zip(key, kinds, strict=True)
                )
            )

        key: list[Any] = self._read(token, "k", is_key, fingerprint=fingerprint, caller=caller)
        return key

    def _read(
        self,
        token: str,
        field: str,
        valid: Callable[[Any], bool],
        *,
        fingerprint: str,
        caller: str,
    ) -> Any:
        try:
            if len(token) > _MAX_TOKEN_LENGTH:
                raise ValueError
            payload_text, dot, mac_text = token.partition(".")
            if not dot:
                raise ValueError
            payload, mac = _unb64(payload_text), _unb64(mac_text)
            if not hmac.compare_digest(mac, self._mac(payload, caller)):
                raise ValueError
            fields = json.loads(payload)
            if type(fields["v"]) is not int or fields["v"] != _VERSION:
                raise ValueError
            position, bound_to = fields[field], fields["f"]
            if not valid(position):
                raise ValueError
        except (ValueError, TypeError, KeyError, UnicodeError, binascii.Error):
            raise InvalidArgument.field(
                "page_token",
                "is not one issued to this caller (or was issued before an upgrade):"
                " start the query again",
            ) from None
        if bound_to != fingerprint:
            raise InvalidArgument.field(
                "page_token",
                "belongs to another listing (a sink's, a tenant's) or query"
                " (another filter, order or tenant)",
            )
        return position


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
