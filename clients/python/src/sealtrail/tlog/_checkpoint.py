"""C2SP tlog checkpoints (https://c2sp.org/tlog-checkpoint): the body of a
signed note that commits to a log's size and root.

    <origin>
    <tree size, decimal>
    <root hash, base64>
    [extension lines]
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from sealtrail.tlog._note import NoteError, refuse_controls

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes


def format_checkpoint(checkpoint: Checkpoint) -> str:
    root = base64.b64encode(checkpoint.root_hash).decode()
    return f"{checkpoint.origin}\n{checkpoint.tree_size}\n{root}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint in a note's text (as returned by `open_note`)."""
    refuse_controls(text, "the checkpoint")
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has an origin, a size and a root hash, each on a line")
    origin, size, root = lines[:3]
    if not origin:
        raise NoteError("the checkpoint has no origin")
    return Checkpoint(origin, *parse_size_and_root(size, root, of="the checkpoint"))


def parse_size_and_root(size: str, root: str, *, of: str) -> tuple[int, bytes]:
    """A tree size (decimal) and root hash (base64 of 32 bytes) as a note's
    lines give them; NoteError naming them `of` ("the checkpoint") if not."""
    if not _SIZE.fullmatch(size):
        raise NoteError(f"{of} size {size!r} is not a decimal number")
    try:
        root_hash = base64.b64decode(root, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{of} root is not base64") from None
    if len(root_hash) != 32:
        raise NoteError(f"{of} root is not a SHA-256 hash")
    return int(size), root_hash
