"""Idempotency keys (AIP-155): the events stored under a tenant's keys, and the
answer to a key sent again: the event recorded before, if the request is the
same one, else ALREADY_EXISTS."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import psycopg

from ..domain.canonical import canonical_json
from ..domain.errors import AlreadyExists
from ..domain.event import ValidEvent, asserted_part, caller_part
from ..domain.ip_recording import as_recorded, recording_of, sent_address
from ..domain.personal_data_retry import alike_but_personal_data
from .appended import Appended, AppendOutcome
from .arrays import TextArray
from .database import Database


def key_probe(columns: str) -> str:
    """The events stored under arrays of (tenant, idempotency key), each with
    `columns` (besides tenant_id and idempotency_key) as `e`, `k` the pair.
    LATERAL: one index probe per key, never a join plan over the table; a row
    comparison in key order (events.KEY_PROBE; the appender works as the
    system role, under no policy) so only the idempotency-key index serves it."""
    return (
        " FROM unnest(%s::text[], %s::text[]) AS k(tenant_id, idempotency_key)"
        f" CROSS JOIN LATERAL (SELECT tenant_id, idempotency_key{columns} FROM events"
        "  WHERE (tenant_id, idempotency_key) >= (k.tenant_id, k.idempotency_key)"
        "  AND idempotency_key IS NOT NULL ORDER BY tenant_id, idempotency_key LIMIT 1) AS e"
        " WHERE e.tenant_id = k.tenant_id AND e.idempotency_key = k.idempotency_key"
    )


_FIND_KEYS = "SELECT k.tenant_id, k.idempotency_key, e.seq, e.record, e.leaf_hash" + key_probe(
    ", seq, record, leaf_hash"
)


async def stored_under_key(db: Database, tenant_id: str, key: str) -> Appended | None:
    """The event stored under an idempotency key, if any, whatever its
    content: for the server's own records, which a repeat must not refuse
    for a wording that changed since (a rule renamed between two runs)."""
    async with db.system_connection(generic_plans=True) as conn:
        found = await stored_under(conn, TextArray([tenant_id]), TextArray([key]))
    return found.get((tenant_id, key))


async def stored_under(
    conn: psycopg.AsyncConnection[Any], tenants: TextArray, keys: TextArray
) -> dict[tuple[str, str], Appended]:
    """The events stored under these (tenant, idempotency key) pairs."""
    cursor = await conn.execute(_FIND_KEYS, [tenants, keys])
    return {
        (tenant, key): Appended(seq, record, bytes(leaf), deduplicated=True)
        for tenant, key, seq, record, leaf in await cursor.fetchall()
    }


# The least integer RFC 8785 refuses to write (beyond it, doubles skip integers).
_FIRST_INEXACT_INTEGER: Final = 2**53


def _as_sent(digits: str) -> int | float:
    """A whole number of a stored record as its caller sent it. Every number
    of an event arrives as a double, and RFC 8785 writes one of 2**53 or
    more (1e20) as its digits, which read back as an int it refuses to write
    again: read as the double it was, it is written as stored (helper-120)."""
    number = int(digits)
    return number if abs(number) < _FIRST_INEXACT_INTEGER else float(number)


def repeated_key_outcome(earlier: Appended, event: ValidEvent) -> AppendOutcome:
    """The answer to a repeated idempotency key: the earlier event, if the
    request is the same one (AIP-155), else ALREADY_EXISTS."""
    parsed = json.loads(earlier.record, parse_int=_as_sent)
    stored = asserted_part(caller_part(parsed))
    if not event.explicit_time:
        # The server chose occurred_at for this request, so it cannot match.
        stored.pop("occurred_at", None)
    stored_json = canonical_json(stored, plain=False)

    def same(body: dict[str, Any]) -> bool:
        sent = asserted_part(body)
        if not event.explicit_time:
            sent = {k: v for k, v in sent.items() if k != "occurred_at"}
        # Compared as canonical JSON, as they are hashed: Python's == holds
        # True == 1, so `{"admin": true}` passed for a retry of `{"admin": 1}`.
        return canonical_json(sent, plain=False) == stored_json

    # Redacted as the tenant's mode says now, or, if it changed since the
    # first attempt, as it said then; or as sent, if the first attempt was
    # stored so (a rule added since finds a secret in it). A body stored as
    # `[REDACTED:…]` matches whatever the secret, in either mode now, so that
    # resending an event with guesses under its key tells nothing of it
    # (helper-80, helper-81); one stored in HMAC mode tells secrets apart, as
    # HMAC mode always does.
    def alike(body: dict[str, Any]) -> bool:
        sent = asserted_part(body)
        if not event.explicit_time:
            sent = {k: v for k, v in sent.items() if k != "occurred_at"}
        return alike_but_personal_data(stored, sent)

    candidates = (event.body, *event.stored_otherwise)
    if (
        not any(same(body) for body in candidates)
        and not _same_but_its_address(event, recording_of(parsed), candidates, same)
        # The tenant's personal-data names changed since (ADR 0154).
        and not any(alike(body) for body in candidates)
    ):
        return AlreadyExists(
            f"idempotency key {event.idempotency_key!r} was used for a different event"
            f" (seq {earlier.seq})",
            reason="IDEMPOTENCY_KEY_REUSED",
        )
    return Appended(earlier.seq, earlier.record, earlier.leaf_hash, deduplicated=True)


def _same_but_its_address(
    event: ValidEvent,
    stored_recording: str,
    candidates: tuple[dict[str, Any], ...],
    same: Callable[[dict[str, Any]], bool],
) -> bool:
    """Whether the request is the same one but for how much of its address
    the tenant's IP recording keeps, if that changed since the first attempt
    (ADR 0154): its address kept as the stored record's mark says it was
    (`stored_recording`), and only so: a record stored with no address, or
    with a whole one ending `.0`, unmarked, is no retry of another address.
    Looked at only when nothing else matched, a retry being rare."""
    sent_ip = sent_address(event)
    if sent_ip is None:
        return False
    return any(same(as_recorded(body, sent_ip, stored_recording)) for body in candidates)
