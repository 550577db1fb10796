"""Counts and details in messages, as people read them, the one wording the
client, its CLI and the server share: "made in 1 tenant" (a count before a
plural noun said "1 tenants"), and "HTTP 500 from hooks.example.com" where
the destination said nothing (an empty detail left "...: " hanging)."""

from __future__ import annotations


def noun(number: int, singular: str, plural: str = "") -> str:
    """`singular` for one, else `plural` (`singular` + "s" by default)."""
    return singular if number == 1 else plural or f"{singular}s"


def counted(number: int, singular: str, plural: str = "", *, grouped: bool = False) -> str:
    """`number` and the noun it needs: "1 event", "2 events", with `grouped`
    "12,345 events"."""
    shown = f"{number:,}" if grouped else str(number)
    return f"{shown} {noun(number, singular, plural)}"


def detailed(head: str, detail: object, *, separator: str = ": ") -> str:
    """`head`, then `separator` and `detail` when it says anything: an empty
    answer's text, or an exception without words (TimeoutError()), adds
    nothing."""
    said = "" if detail is None else str(detail).strip()
    return f"{head}{separator}{said}" if said else head
