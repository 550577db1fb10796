"""When to retry a failed call, how long to wait first, and for how long to wait on the
slowest call; shared by both clients."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc

from sealtrail._choices import COUNT_TIMEOUT as COUNT_TIMEOUT
from sealtrail._errors import SealtrailError, UnauthenticatedError

# Every RPC the clients retry is safe to repeat: reads are, and each recorded event carries an
# idempotency key fixed before the first attempt.
RETRYABLE = frozenset(
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


# What a RecordBatch entry refused alone is sent again after (in a RecordBatch of
# such entries, under the keys they were first sent with): refused for a passing
# reason (a month being created, the database refusing its batch and then it),
# it was not written.
ENTRY_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


# Seconds an erasure is waited for: a large tenant's takes minutes, and a call
# cut off at its deadline is cancelled, its erasure rolled back.
ERASURE_TIMEOUT = 3600.0
# What an erasure is retried after: only a server that could not take it. Cut off at
# its deadline it was rolled back, and another attempt would take as long again; a
# call cancelled or reset may have completed, and a repeat then finds the tenant's
# tokens gone.
ERASURE_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


def erased_meanwhile(error: UnauthenticatedError) -> UnauthenticatedError:
    """What a retried erasure's UNAUTHENTICATED most likely means."""
    said = UnauthenticatedError(
        f"{error.message}, on a retry: the erasure probably completed on an earlier attempt"
        " whose answer was lost (an erased tenant's tokens are gone); the erasure receipt is"
        " kept in the log's database",
        code=error.code,
        reason=error.reason,
        metadata=error.metadata,
        request_id=error.request_id,
    )
    said.retried = True
    return said


# An export is retried as a call is, but only before its first message (under
# way, it would begin anew: what was received would come again), and never
# after a refusal for the tenant's export rate, whose delay runs to its
# window's end (a minute by default, up to a day): the caller decides, and a
# bundle proves its records one by one instead. A refusal for the exports open
# at once (TOO_MANY_EXPORTS) comes before the export is recorded; a retry after
# a server failed past its record records it again, as a retried Query does.
EXPORT_NOT_RETRIED = frozenset({"EXPORT_RATE_LIMITED"})


# Seconds a call that reads a tenant's whole log (VerifyLog; a retention
# preview, up to a million events) is waited for: minutes for a large log,
# where the client's default deadline cut it off, and each retry began anew.
WHOLE_LOG_TIMEOUT = 3600.0
# What a retention preview, a read that records nothing, is retried after: as any
# read, except a deadline, which cut it off after its hour; another would take as long.
PREVIEW_RETRYABLE = RETRYABLE - {grpc.StatusCode.DEADLINE_EXCEEDED}

# Seconds of an attempt past which it has no deadline: grpc takes one beyond
# about 235 years (7.4e9 s), float("inf") too, for a deadline long past, and
# the attempt failed at once in DEADLINE_EXCEEDED.
_UNBOUNDED = 1e9


def positive_seconds(seconds: float, setting: str) -> float:
    """`seconds`, if more than 0; else ValueError naming `setting`: 0 or less,
    or NaN, no attempt could meet (each failed at once in DEADLINE_EXCEEDED),
    and a NaN total_timeout bounded nothing."""
    if not seconds > 0:
        raise ValueError(f"{setting} must be more than 0 seconds")
    return seconds


def grpc_timeout(seconds: float) -> float | None:
    """What grpc is given for an attempt of `seconds`: none past its reach."""
    return None if seconds >= _UNBOUNDED else seconds


# Doublings of the initial backoff past which it is the maximum anyway.
_DOUBLINGS = 60


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, added to the server's RetryInfo delay."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError("backoffs must satisfy 0 < initial_backoff <= max_backoff")

    def backoff(
        self,
        attempt: int,
        error: SealtrailError,
        *,
        bounded: bool = True,
        codes: frozenset[grpc.StatusCode] = RETRYABLE,
    ) -> float | None:
        """Seconds to wait before the attempt after `attempt` (counted from 1) failed with
        `error`, or None when the error is final (its code not among `codes`). A call
        gives up after max_attempts; a stream's reconnects are not `bounded`: it runs
        until its caller stops it, so it outlasts a server's restart, waiting at most
        max_backoff between attempts (besides the server's own delay)."""
        if (bounded and attempt >= self.max_attempts) or error.code not in codes:
            return None
        # Without RetryInfo, an exhausted quota is not expected to recover within our backoff.
        if error.code is grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after is None:
            return None
        # The exponent capped: an unbounded attempt count must not overflow a float.
        growth = 2 ** min(attempt - 1, _DOUBLINGS)
        ceiling = min(self.max_backoff, self.initial_backoff * growth)
        # Jitter on top of the server's delay, not under it: every client told
        # "1 s" by an overloaded server came back together, and never later.
        return (error.retry_after or 0.0) + self.rng.uniform(0, ceiling)
