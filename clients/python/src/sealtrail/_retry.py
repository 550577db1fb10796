"""When to retry a failed call, how long to wait first, and for how long to wait on the
slowest call; shared by both clients."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc

from sealtrail._errors import SealtrailError

# Every RPC the clients retry is safe to repeat: reads are, and each recorded event carries an
# idempotency key fixed before the first attempt.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        # Not asked for by the caller (a caller's own cancellation is
        # asyncio.CancelledError, and a closed client retries nothing): a server
        # stopping with the call in flight, or a proxy resetting the stream.
        grpc.StatusCode.CANCELLED,
    }
)


# Seconds an erasure is waited for: a large tenant's takes minutes, and a call
# cut off at its deadline is cancelled, its erasure rolled back.
ERASURE_TIMEOUT = 3600.0
# Seconds a call that reads a tenant's whole log (VerifyLog; a retention
# preview, up to a million events) is waited for: minutes for a large log,
# where the client's default deadline cut it off, and each retry began anew.
WHOLE_LOG_TIMEOUT = 3600.0

# Doublings of the initial backoff past which it is the maximum anyway.
_DOUBLINGS = 60


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, never shorter than the server's RetryInfo."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError("backoffs must satisfy 0 < initial_backoff <= max_backoff")

    def backoff(self, attempt: int, error: SealtrailError, *, bounded: bool = True) -> float | None:
        """Seconds to wait before the attempt after `attempt` (counted from 1) failed with
        `error`, or None when the error is final. A call gives up after max_attempts;
        a stream's reconnects are not `bounded`: it runs until its caller stops it, so it
        outlasts a server's restart, waiting at most max_backoff between attempts."""
        if (bounded and attempt >= self.max_attempts) or error.code not in _RETRYABLE:
            return None
        # Without RetryInfo, an exhausted quota is not expected to recover within our backoff.
        if error.code is grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after is None:
            return None
        # The exponent capped: an unbounded attempt count must not overflow a float.
        growth = 2 ** min(attempt - 1, _DOUBLINGS)
        ceiling = min(self.max_backoff, self.initial_backoff * growth)
        return max(self.rng.uniform(0, ceiling), error.retry_after or 0.0)
