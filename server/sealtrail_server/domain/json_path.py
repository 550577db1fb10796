"""Where a value sits in a JSON tree (`details.a.b[2]`), written out only
when it is shown.

Readers that walk a caller's tree pass a child's path down for every value,
and show it only for the rare one that is bad or secret. Written out at each
step, a path costs its length per value: one key of 256 KiB over a list of
64,000 items copied 16 GiB of text (helper-63). A `JsonPath` is the root's
text, or its parent and the key or index under it.
"""

from __future__ import annotations

from typing import TypeAlias

JsonPath: TypeAlias = "str | tuple[JsonPath, str | int]"


def path_text(path: JsonPath) -> str:
    """`path` written out: keys after `.`, list indexes in brackets."""
    steps: list[str] = []
    while isinstance(path, tuple):
        path, step = path
        steps.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return path + "".join(reversed(steps))
