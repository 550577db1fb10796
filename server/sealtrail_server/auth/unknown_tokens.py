"""How many tokens that do not exist each caller may still present: each
costs the database a lookup, and a caller with no token at all can make up
a new one for every call (a cache of unknown tokens never sees one twice).

Each caller, by its address (an IPv6 one by its /64: a host given one has as
many addresses as it likes), has a budget of `per_minute` unknown tokens,
refilled at that rate. A caller past it is refused before a lookup, for its
tokens this process has not seen (authenticator); the others, and its own
tokens in use, are not affected. A caller whose budget is full again is at
the state of one never seen, and forgotten: at most `max_callers` are kept.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Final

MAX_CALLERS: Final = 10_000


def caller_key(ip: str) -> str:
    """The budget `ip` spends: its own, or its /64's for IPv6; "" (no
    address: a Unix socket) is one caller."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return ip


class UnknownTokenBudgets:
    """Per caller, the unknown tokens it may present before it is refused
    unlooked; `per_minute` 0: no limit."""

    def __init__(
        self,
        *,
        per_minute: int,
        clock: Callable[[], datetime],
        max_callers: int = MAX_CALLERS,
    ) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._max_callers = max_callers
        # Caller -> (unknown tokens it may still present, as of when), the
        # caller that spent last at the end.
        self._left: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._left)

    def _now(self) -> float:
        return self._clock().timestamp()

    def _remaining(self, caller: str, now: float) -> float:
        kept = self._left.get(caller)
        if kept is None:
            return float(self._per_minute)
        left, at = kept
        # A clock set back refills nothing, and takes nothing either.
        return min(float(self._per_minute), left + max(0.0, now - at) * self._per_minute / 60)

    def wait(self, caller: str) -> float:
        """0 if `caller` may present an unknown token now, else the seconds
        until it may."""
        if self._per_minute <= 0:
            return 0.0
        left = self._remaining(caller, self._now())
        return 0.0 if left >= 1 else (1 - left) * 60 / self._per_minute

    def spent(self, caller: str) -> None:
        """`caller` presented an unknown token."""
        if self._per_minute <= 0:
            return
        now = self._now()
        self._left[caller] = (max(0.0, self._remaining(caller, now) - 1), now)
        self._left.move_to_end(caller)
        self._prune(now)

    def _prune(self, now: float) -> None:
        """Forgets the callers that spent longest ago while their budget is
        full again (as if never seen: each is deleted once, as it was added),
        then, if still too many, the one that spent longest ago."""
        while self._left:
            oldest = next(iter(self._left))
            if self._remaining(oldest, now) < self._per_minute:
                break
            del self._left[oldest]
        while len(self._left) > self._max_callers:
            self._left.popitem(last=False)
