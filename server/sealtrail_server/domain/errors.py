"""The server's exception tree. Every failure a caller can see is one of these;
`sealtrail_server.api.errors` maps each to exactly one gRPC status.

    SealtrailError
     ├── InvalidArgument      a field of the request is wrong (with field violations)
     ├── NotFound             nothing of that id in the caller's tenant
     ├── AlreadyExists        an idempotency key reused with a different event
     ├── Unauthenticated      no token, or one that is unknown or revoked
     ├── PermissionDenied     the token's role may not call this
     ├── FailedPrecondition   the log is not in a state that allows the call
     ├── Aborted              a conditional change lost a race: read again, then retry
     ├── IntegrityFailure     stored data contradicts itself or a signed checkpoint
     ├── ResourceExhausted    over a limit; retry after `retry_after` seconds
     └── Unavailable          the database cannot be reached; retry after `retry_after`
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# Where a failure's details are when its text is kept from the caller (it may
# name the database's host and role, or quote stored rows): the server's log.
SEE_THE_LOG: Final = "the server's log has the details under this call's request id"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: its path in the request and why it was rejected."""

    field: str
    description: str


class SealtrailError(Exception):
    """Base of every error the service reports to a caller; `metadata`, what a
    program needs of it beside its reason (ErrorInfo's metadata, AIP-193)."""

    reason = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})
        if reason is not None:
            self.reason = reason


# What one error reports of its violations, in UTF-8 bytes: the message and the
# status details (the message again and every violation, base64) travel in the
# trailers, which gRPC clients may refuse past 8 KiB and do past 16 KiB (then
# reporting RESOURCE_EXHAUSTED instead of naming a field); the message is also
# percent-encoded, up to three bytes a byte. At most about 7 KiB. A description
# the server writes itself fits MAX_DESCRIPTION_BYTES whole, its values at their
# widest (tests/unit/test_error_descriptions.py): what a cut loses is the end,
# where it says what to do; the cut is for the text it quotes (a library's).
MAX_VIOLATIONS = 20
MAX_FIELD_BYTES = 80
MAX_DESCRIPTION_BYTES = 100
MAX_SUMMARY_BYTES = 500


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` bytes of UTF-8: its end cut, marked `…`."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"


def unexpected_failure() -> SealtrailError:
    """What a caller is told of a bug (INTERNAL): not its text, which may
    quote stored rows, only where it is."""
    return SealtrailError(f"the server failed unexpectedly; {SEE_THE_LOG}", reason="INTERNAL")


class InvalidArgument(SealtrailError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], *, reason: str | None = None) -> None:
        # Each field named once, for the first fault found in it: a check of
        # its form after one of its length or characters failed says less.
        first = {v.field: v for v in reversed(violations)}
        violations = [v for v in violations if first[v.field] is v]
        kept = [
            FieldViolation(cut(v.field, MAX_FIELD_BYTES), cut(v.description, MAX_DESCRIPTION_BYTES))
            for v in violations[:MAX_VIOLATIONS]
        ]
        summary, told = "", 0
        for v in kept:
            part = f"{'; ' if told else ''}{v.field}: {v.description}"
            if told and len(summary.encode()) + len(part.encode()) > MAX_SUMMARY_BYTES:
                break
            summary, told = summary + part, told + 1
        if told < len(violations):
            summary += f"; and {len(violations) - told} more"
        super().__init__(f"invalid request: {summary}", reason=reason)
        self.violations = kept

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(SealtrailError):
    reason = "NOT_FOUND"


class AlreadyExists(SealtrailError):
    reason = "ALREADY_EXISTS"


class Unauthenticated(SealtrailError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(SealtrailError):
    reason = "PERMISSION_DENIED"


class FailedPrecondition(SealtrailError):
    reason = "FAILED_PRECONDITION"


class Aborted(SealtrailError):
    """A change made on condition (an etag, AIP-154) found the resource changed
    since the caller read it; nothing was changed."""

    reason = "ABORTED"


class IntegrityFailure(SealtrailError):
    """Stored hashes or records contradict each other or a signed checkpoint:
    the database was changed behind the service's back."""

    reason = "INTEGRITY_FAILURE"


class _Retryable(SealtrailError):
    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after


class ResourceExhausted(_Retryable):
    reason = "RESOURCE_EXHAUSTED"


class TenantLimitReached(ResourceExhausted):
    """A tenant's call refused for a limit of the tenant's own: at most `limit`
    at once, or per `window_seconds` for a rate. Answered as any
    ResourceExhausted; recorded in the tenant's log too (api/denials.py),
    which a refusal for the server's limits, no doing of the tenant's, is not."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        reason: str,
        limit: int,
        window_seconds: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, reason=reason)
        self.limit = limit
        self.window_seconds = window_seconds


class Unavailable(_Retryable):
    reason = "UNAVAILABLE"
