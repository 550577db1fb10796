"""The memory a process's Record and RecordBatch calls hold, bounded: each is
counted from its request's size as received, before it is parsed, and a call
that would take the count past the process's limit is refused at once
(RESOURCE_EXHAUSTED, OVERLOADED, with a retry delay), having cost nothing but
its request's bytes: gRPC receives the whole message (up to 64 MiB) before a
call is counted, and many arriving at once hold that much whatever the count
(docs/reliability.md).

Eight RecordBatch calls of 52 MB each, within every limit, took one server to
7 GiB: each was parsed, validated and redacted whatever the others held, and
the appender's bound on what waits to be written counts only the views it is
handed, after all that (helper-138)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from ..domain.errors import ResourceExhausted

# Bytes a call holds at its peak (its request parsed, its events validated,
# redacted and viewed, its records built) per byte of its request, at the most
# measured: a RecordBatch of 1,000 events of 3,000 small details each (51.8 MB)
# held 889 MiB, 18 times its size. Events of long strings hold 3 to 4 times.
EXPANSION: Final = 18
RETRY_SECONDS: Final = 1.0


class InFlight:
    """What the calls being handled hold, against `limit` bytes, and of that
    at most half by one tenant's calls."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.held = 0
        self._held_by: Counter[str] = Counter()

    @contextmanager
    def holding(self, received: int, tenant_id: str) -> Iterator[None]:
        """Counts a call of `tenant_id` whose request is `received` bytes while
        the block runs. A call is taken, however large, when no other is held:
        a batch at the request size limit is never refused by the budget
        alone. A tenant's calls hold at most half of it, but for its first
        (one call of any size, as the budget has room): one recorder keeping
        calls in flight until its next was refused held it all, and every
        other tenant's writes were refused meanwhile."""
        size = received * EXPANSION
        own = self._held_by[tenant_id]
        if self.held and (
            self.held + size > self._limit or (own and own + size > self._limit // 2)
        ):
            whose = "of this tenant " if self.held + size <= self._limit else ""
            raise ResourceExhausted(
                f"the writes {whose}being handled on this server hold about"
                f" {(own if whose else self.held) >> 20} MiB; retry shortly",
                retry_after=RETRY_SECONDS,
                reason="OVERLOADED",
            )
        self.held += size
        self._held_by[tenant_id] += size
        try:
            yield
        finally:
            self.held -= size
            self._held_by[tenant_id] -= size
            if not self._held_by[tenant_id]:
                del self._held_by[tenant_id]
