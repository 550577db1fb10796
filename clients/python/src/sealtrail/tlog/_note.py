"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys.

A note is UTF-8 text ending in a newline, a blank line, then one line per
signature: `— <key name> <base64(key id || signature)>`. The key id is the
first 4 bytes of SHA-256(key name || 0x0A || 0x01 || public key), 0x01 being
the Ed25519 signature type. Keys are written as text:

    verifier:  <name>+<hex key id>+<base64(0x01 || public key)>
    signer:    PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || private seed)>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_ED25519 = b"\x01"
_DASH = "\u2014 "  # em dash and a space start every signature line


class NoteError(ValueError):
    """A note, key or signature is malformed or does not verify."""


class NewerStatementError(NoteError):
    """A signed statement (an export's, an erasure receipt, a retention
    statement) of a version beyond this client's: signed by a newer
    Sealtrail, to be read by a newer client; not one forged, nor garbage.
    `what` and `version` as `newer_sealtrails` says them."""

    def __init__(self, what: str, version: int) -> None:
        super().__init__(newer_sealtrails(what, version))
        self.what = what
        self.version = version


def newer_sealtrails(what: str, version: int, *, upgrade: str = "the client") -> str:
    """The one wording of a document of a version beyond what this release
    reads (`what`: "the export's statement", "the bundle"): `... is a v3,
    made by a newer Sealtrail: upgrade the client` (`upgrade`: who is to be)."""
    return f"{what} is a v{version}, made by a newer Sealtrail: upgrade {upgrade}"


def refuse_newer(text: str, header: str, *, what: str) -> None:
    """NewerStatementError if `text` begins with the line `header` (`sealtrail
    erasure receipt v1`, of the newest version this client reads) of a later
    version, a decimal number without a leading zero as headers write it."""
    stem, _, newest = header.rpartition(" v")
    found = re.match(re.escape(stem) + r" v([1-9][0-9]{0,8})\n", text)
    if found is not None and int(found[1]) > int(newest):
        raise NewerStatementError(what, int(found[1]))


# C0 controls but the newline, DEL, and C1 controls (U+009B starts an escape
# sequence to some terminals): C2SP's signed notes hold none. What a note says
# reaches a terminal, and a forger's text must not move its cursor or colour it.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def refuse_controls(text: str, what: str) -> None:
    """NoteError if `text` holds a control character other than a newline."""
    found = _CONTROL.search(text)
    if found is not None:
        raise NoteError(f"{what} holds the control character U+{ord(found.group()):04X}")


def statement_lines(text: str, header: str, count: int, *, what: str) -> list[str]:
    """The `count` lines after `header` of a statement's note text (as
    `open_note` returns it; `what`: "erasure receipt", "export statement");
    NoteError if it holds a control character or is no such statement."""
    refuse_controls(text, f"the {what}")
    lines = text.split("\n")
    if lines[0] != header:
        raise NoteError(f"not an {what}: its text does not begin with {header!r}")
    if len(lines) != count + 2 or lines[-1] != "":
        raise NoteError(f"an {what} has {count + 1} lines")
    return lines[1 : count + 1]


def _key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public_key).digest()[:4]


def _check_name(name: str) -> None:
    refuse_controls(name, "a key name")
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")


def _decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class Verifier:
    """Checks signatures by one named Ed25519 key."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)  # base64 may hold '+' too
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, encoded = parts
        _check_name(name)
        raw = _decode(encoded, "the verifier key")
        if len(raw) != 33 or raw[:1] != _ED25519:
            raise NoteError("the verifier key is not an Ed25519 key")
        verifier = cls(name, _key_id(name, raw[1:]), raw[1:])
        if hex_id.lower() != verifier.key_id.hex():
            raise NoteError("the verifier key's id does not match its name and key")
        return verifier

    def text(self) -> str:
        encoded = base64.b64encode(_ED25519 + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """Signs notes with one named Ed25519 key."""

    name: str
    seed: bytes

    @classmethod
    def parse(cls, text: str) -> Signer:
        parts = text.strip().split("+", 4)  # base64 may hold '+' too
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key is PRIVATE+KEY+<name>+<hex key id>+<base64 key>")
        name, hex_id, encoded = parts[2:]
        _check_name(name)
        raw = _decode(encoded, "the signer key")
        if len(raw) != 33 or raw[:1] != _ED25519:
            raise NoteError("the signer key is not an Ed25519 key")
        signer = cls(name, raw[1:])
        if hex_id.lower() != signer.verifier.key_id.hex():
            raise NoteError("the signer key's id does not match its name and key")
        return signer

    @property
    def verifier(self) -> Verifier:
        public = (
            Ed25519PrivateKey.from_private_bytes(self.seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return Verifier(self.name, _key_id(self.name, public), public)

    def text(self) -> str:
        encoded = base64.b64encode(_ED25519 + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id.hex()}+{encoded}"

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def generate_signer_key(name: str) -> Signer:
    _check_name(name)
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    return Signer(name, seed)


def sign_note(text: str, signer: Signer) -> str:
    """`text` (ending in a newline) with a signature line by `signer`."""
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("note text must end in a newline and hold no blank line")
    refuse_controls(text, "note text")
    key_id = signer.verifier.key_id
    signature = base64.b64encode(key_id + signer.sign(text.encode())).decode()
    return f"{text}\n{_DASH}{signer.name} {signature}\n"


def open_note(note: str, verifiers: list[Verifier]) -> tuple[str, list[Verifier]]:
    """The text of `note` and the verifiers whose signature on it is valid,
    each once. Raises NoteError if the note is malformed, if a signature by a
    known key (its name and key id) does not verify, or if no known key
    signed it. Signatures by other keys are ignored, and a known key's
    repeated ones after its first, as C2SP and Go's note.Open say: a note
    with a forged line by a trusted key before its genuine one was accepted
    here, and refused by every other verifier of signed notes."""
    refuse_controls(note, "the note")
    text, separator, signatures = note.rpartition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise NoteError("a signed note is text, a blank line, then signature lines")
    text += "\n"
    message = text.encode()
    valid: list[Verifier] = []
    seen: set[tuple[str, bytes]] = set()
    for line in signatures[:-1].split("\n"):
        if not line.startswith(_DASH):
            raise NoteError(f"malformed signature line {line!r}")
        name, _, encoded = line.removeprefix(_DASH).rpartition(" ")
        raw = _decode(encoded, "a signature")
        if len(raw) < 5:
            raise NoteError("a signature is too short")
        known = [v for v in verifiers if v.name == name and v.key_id == raw[:4]]
        if not known or (name, raw[:4]) in seen:
            continue  # another key's, or the key's signature again
        seen.add((name, raw[:4]))
        signer = next((v for v in known if v.verify(message, raw[4:])), None)
        if signer is None:
            raise NoteError(
                f"the signature by the known key {name}+{raw[:4].hex()} does not verify"
            )
        valid.append(signer)
    if not valid:
        raise NoteError("no signature by a known key verifies this note")
    return text, valid
