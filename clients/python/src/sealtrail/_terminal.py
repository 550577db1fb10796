"""What the command lines print of text they did not write (the log's, a
server's, a file's, an admin's): one function that escapes what a terminal
would read as codes. The server's operator commands use it too."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

# What may be shown as it is: any character but those outside printable
# ASCII, each of which `_shown` decides on.
_NOT_PLAIN: Final = re.compile("[^\x20-\x7e]")
# The Unicode categories of characters that draw nothing or move the text
# around them: controls (C0, C1, DEL), format characters (the bidirectional
# marks, embeddings, overrides and isolates, the Arabic letter mark, zero-width
# space and joiners, the word joiner and invisible operators, the byte-order
# mark, the Mongolian vowel separator, tag characters), the line and paragraph
# separators; as the console marks them (console/static/admin.js, HIDDEN) and
# as names may not hold them (server: domain/names.py).
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Letters (Lo) that draw nothing: the Hangul fillers.
_BLANK_LETTERS: Final = frozenset("\u115f\u1160\u3164\uffa0")


def _shown(found: re.Match[str]) -> str:
    char = found.group()
    if char in _BLANK_LETTERS or unicodedata.category(char) in _HIDDEN_CATEGORIES:
        return char.encode("unicode_escape").decode("ascii")
    return char


def terminal_safe(text: str) -> str:
    """`text` (from the log, or an admin) to print to a terminal: what would
    move the cursor, clear the screen, retitle the window, reorder what
    follows or show nothing is shown escaped, `\\x1b`, `\\u202e`, `\\u200b`
    (helper-146). Decided by category, not by a list: a list of bidi
    controls let the zero-width space, the Arabic letter mark and the tag
    characters through, with which a recorded actor hid text (helper-320)."""
    return _NOT_PLAIN.sub(_shown, text)
