"""What a name people give may hold: a sink's, a deployment sink's, an alert
rule's, an API token's. One rule for all of them, each site adding only its
length: no character that shows nothing or moves the text around it.

Refused: control characters (Cc); format characters (Cf: zero-width space,
joiners, word joiner, byte-order mark, soft hyphen, the bidirectional marks,
embeddings, overrides and isolates, tag characters); the line and paragraph
separators (Zl, Zp); and the Hangul fillers, letters that draw nothing. A name
holding one could look like another (two sinks "alike" but for a zero-width
space), could not be typed back where a deletion asks for it, and reordered
the text it was shown in. Spaces and the letters of every script stay allowed.

A name stored before the rule (helper-263) is still the resource's: an update
that keeps it is not refused for it (`kept`), and listing or deleting never
checks it."""

from __future__ import annotations

import unicodedata
from typing import Final

from .event import CONTROL_CHARACTERS

_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Letters (Lo) that draw nothing: the Hangul choseong and jungseong fillers,
# the compatibility filler and its halfwidth form.
_BLANK_LETTERS: Final = frozenset("\u115f\u1160\u3164\uffa0")


def hidden_character(text: str) -> str | None:
    """The first character of `text` that shows nothing or reorders what is
    around it, or None."""
    for char in text:
        if char in _BLANK_LETTERS or unicodedata.category(char) in _HIDDEN_CATEGORIES:
            return char
    return None


def name_problem(name: str, *, limit: int, required: bool, kept: str | None = None) -> str | None:
    """Why `name` cannot name a resource, or None: blank (where `required`),
    longer than `limit`, or holding a hidden character (`hidden_character`),
    which the description names by code point. `kept`: the resource's stored
    name; the same again is not refused for a character it may hold from
    before the rule (only a control character, refused since the first
    release, still is)."""
    if (required and not name.strip()) or len(name) > limit or CONTROL_CHARACTERS.search(name):
        if required:
            return f"must be 1 to {limit} characters, not blank, none of them control characters"
        return f"must be at most {limit} characters, none of them control characters"
    if kept is not None and name == kept:
        return None
    if (char := hidden_character(name)) is not None:
        at = name.index(char) + 1
        # Short: a description past 100 characters is cut (errors.py).
        return f"holds U+{ord(char):04X} (character {at}), an invisible or bidi character"
    return None
