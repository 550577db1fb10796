"""A Python regular expression rewritten for RE2 with the same meaning, where
the two engines read the same text differently.

Operators write redaction patterns as Python regexes (docs/redaction.md); they
run on RE2, whose time does not explode with the pattern (ADR 0044). RE2
takes most of Python's syntax but reads some of it otherwise, and a pattern
that quietly matched less on RE2 would keep the secrets it was written for:

- `\\d`, `\\w`, `\\s` (and `\\D`, `\\W`, `\\S`) are Unicode classes in Python, ASCII
  ones in RE2: rewritten as the Unicode classes Python means;
- `\\Z` is RE2's `\\z`; `\\uXXXX` and `\\UXXXXXXXX` are RE2's `\\x{...}`;
- `{,n}` and `{,}` are `{0,n}` and `{0,}` in Python, literal text in RE2.

What cannot be said in RE2 with the same meaning makes `translate` answer
None, and the pattern runs on Python's engine: `$` (Python's also matches
before a final newline), `\\b` and `\\B` (RE2's word characters are ASCII:
a boundary beside a Cyrillic letter is none there), `\\W` or `\\S` inside a class, `[:` inside a
class (RE2 reads `[[:alpha:]]` as a POSIX class), `\\1` to `\\9` (a
backreference in Python, which RE2 may read as octal). RE2 refuses on its own
what it lacks (look-around, the `a`, `L`, `u`, `x` flags). Left as RE2 reads
it: `(?i)`, whose case folding differs from Python's for a few letters (the
dotted capital I).
"""

from __future__ import annotations

import re
from typing import Final

# Python's classes of a str pattern, in RE2's Unicode properties: `\w` is what
# str.isalnum() takes (letters and numbers) and `_`; `\s` what str.isspace()
# takes (separators, and the ASCII and C1 controls Unicode counts as space).
_DIGIT: Final = r"\p{Nd}"
_WORD: Final = r"\p{L}\p{N}_"
_SPACE: Final = r"\t\n\x{0b}\f\r\x{1c}-\x{1f} \x{85}\p{Z}"
_OUTSIDE: Final = {
    "d": _DIGIT,
    "D": r"\P{Nd}",
    "w": f"[{_WORD}]",
    "W": f"[^{_WORD}]",
    "s": f"[{_SPACE}]",
    "S": f"[^{_SPACE}]",
    "Z": r"\z",
}
_INSIDE: Final = {"d": _DIGIT, "D": r"\P{Nd}", "w": _WORD, "s": _SPACE}
_OMITTED_MIN: Final = re.compile(r"\{,(\d*)\}")


def translate(pattern: str) -> str | None:
    """`pattern` for RE2, meaning what Python means by it; None if it cannot."""
    out: list[str] = []
    in_class = False
    first = 0  # where the open class's characters start: a `]` there is one of them
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            width = {"u": 4, "U": 8}.get(escaped)
            if width is not None:
                digits = pattern[i + 2 : i + 2 + width]
                out.append(f"\\x{{{digits}}}")
                i += 2 + width
                continue
            table = _INSIDE if in_class else _OUTSIDE
            if escaped in table:
                out.append(table[escaped])
            elif (in_class and escaped in "WS") or (not in_class and escaped in "bB"):
                return None  # no RE2 spelling of "not a word character" inside a class
            elif escaped in "123456789":
                return None  # a backreference
            else:
                out.append(char + escaped)
            i += 2
            continue
        if in_class:
            if char == "]" and i != first:
                in_class = False
            elif char == "[" and pattern.startswith(":", i + 1):
                return None  # `[:alpha:]`: a POSIX class to RE2, characters to Python
            out.append(char)
        elif char == "[":
            in_class = True
            first = i + 2 if pattern.startswith("^", i + 1) else i + 1
            out.append(char)
        elif char == "$":
            return None
        elif char == "{" and (omitted := _OMITTED_MIN.match(pattern, i)):
            out.append(f"{{0,{omitted.group(1)}}}")
            i = omitted.end()
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)
