"""When a server calls its database down: after two probes in a row found it
so, not one. One probe runs out its second whenever the server's own loop
stalls that long (a large batch hashed, a stop's work on a loaded machine),
and the server then refused every call as if the database were gone, health
NOT_SERVING, though the database had answered (helper-217 saw an export
ended so at a stop). A database back is served after one probe that answers."""

from __future__ import annotations

from typing import Final

# Failed probes in a row after which the database is taken for down.
FAILED_PROBES_FOR_DOWN: Final = 2


class ProbeVerdicts:
    """Each probe's answer turned into whether the database is served."""

    def __init__(self, failures_for_down: int = FAILED_PROBES_FOR_DOWN) -> None:
        self._failures_for_down = failures_for_down
        self._failures = 0

    def after(self, answered: bool) -> bool:
        """Whether the database is served, after a probe that `answered` (and
        took writes) or not."""
        self._failures = 0 if answered else self._failures + 1
        return self._failures < self._failures_for_down
