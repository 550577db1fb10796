"""Where a value sits in a JSON tree (`details.a.b[2]`), written out only
when it is shown.

Readers that walk a caller's tree pass a child's path down for every value,
and show it only for the rare one that is bad or secret. Written out at each
step, a path costs its length per value: one key of 256 KiB over a list of
64,000 items copied 16 GiB of text (helper-63). A `JsonPath` is the root's
text, or its parent and the key or index under it.
"""

from __future__ import annotations

from typing import Final, TypeAlias

JsonPath: TypeAlias = "str | tuple[JsonPath, str | int]"


# What a key written after a `.` cannot hold and still read as one key.
_NOT_PLAIN: Final = frozenset(".[]`")


def path_text(path: JsonPath) -> str:
    """`path` written out: keys after `.`, list indexes in brackets. A key
    that is empty or holds `.`, `[`, `]` or a backtick is written in
    backticks, a backtick in it doubled (AIP-161's map keys): written as it
    was, the key `a.b` read as `a` then `b`."""
    steps: list[str] = []
    while isinstance(path, tuple):
        path, step = path
        steps.append(f"[{step}]" if isinstance(step, int) else f".{_key_text(step)}")
    return path + "".join(reversed(steps))


def _key_text(key: str) -> str:
    if key and _NOT_PLAIN.isdisjoint(key):
        return key
    return "`" + key.replace("`", "``") + "`"
