"""The `retention.purged` record of a tenant's purge: its counts and ranges,
and a statement of exactly which leaves it removed, signed by the log's key
(docs/retention.md). Recorded under the purge's idempotency key, so a pass
that records a purge again (its summary outlived a crash) finds it there."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sealtrail._words import counted
from sealtrail.tlog import (
    RETENTION_ACTION,
    RETENTION_ACTOR,
    NoteError,
    PurgeStatement,
    Signer,
    open_note,
    purge_key,
    sign_note,
)
from sealtrail.v1 import event_pb2

from ..api.audited import record_event
from ..domain.errors import AlreadyExists, IntegrityFailure
from ..integrity.checkpointer import Checkpointer
from ..store.appender import Appender
from ..store.database import Database
from ..store.idempotency import stored_under_key
from .tenant_pass import TenantPurge


def purge_recorder(
    db: Database,
    appender: Appender,
    checkpointer: Checkpointer,
    signer: Signer,
    clock: Callable[[], datetime],
) -> Callable[[TenantPurge], Awaitable[None]]:
    """What records a purge in its tenant's log (the Purger's `record`)."""

    async def record(purged: TenantPurge) -> None:
        # Never of a log that does not extend what the key signed of it (a
        # restored one: its summary left as an earlier batch wrote it would
        # be stated again, of the same purge, with other leaves): ADR 0083.
        await checkpointer.check_may_state(purged.tenant_id)
        statement = purged.statement(checkpointer.origin(purged.tenant_id))
        key = purge_key(purged.purge_id)
        # Kept before it is signed: never stated otherwise after a restore.
        try:
            await checkpointer.keep_purge_statement(purged.tenant_id, statement)
        except IntegrityFailure:
            # The log records the purge already (a summary copied back after
            # its record): the log's refusal below names what differs, and
            # the statement signed for it never leaves.
            if await stored_under_key(db, purged.tenant_id, key) is None:
                raise
        details = {
            **purged.details(),
            # What the verifiers trust: which leaves, signed by the log's key.
            "statement": sign_note(statement.text(), signer),
        }
        try:
            await record_event(
                appender,
                purged.tenant_id,
                actor_type=event_pb2.ACTOR_TYPE_SYSTEM,
                actor_id=RETENTION_ACTOR["id"],  # what the verifiers count (tlog._removals)
                now=clock(),
                action=RETENTION_ACTION,
                description=f"Retention removed {counted(purged.count, 'event')}",
                category=event_pb2.CATEGORY_SYSTEM,
                resource_type="audit_log",
                resource_id=purged.tenant_id,
                details=details,
                idempotency_key=key,
            )
        except AlreadyExists:
            stored = await stored_under_key(db, purged.tenant_id, key)
            kept = json.loads(stored.record) if stored is not None else {}
            if not await _states_alike(kept.get("details"), details, statement, checkpointer):
                raise

    return record


async def _states_alike(
    kept: Any, details: dict[str, Any], statement: PurgeStatement, checkpointer: Checkpointer
) -> bool:
    """Whether a purge's record in the log (its `kept` details) is the one
    this pass would write but for its statement's signature: a record again
    after the signing key was rotated (Ed25519 signs alike, so only another
    key makes the two differ) is recorded already, not refused for good."""
    if not isinstance(kept, dict):
        return False
    unsigned = {name: value for name, value in details.items() if name != "statement"}
    if {name: value for name, value in kept.items() if name != "statement"} != unsigned:
        return False
    try:
        text, _ = open_note(str(kept.get("statement")), await checkpointer.verifiers())
        stated = PurgeStatement.parse(text)
    except (NoteError, ValueError):
        return False
    return (stated.purge_id, stated.removed) == (statement.purge_id, statement.removed)
