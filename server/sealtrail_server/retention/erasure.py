"""Tenant erasure: every row of a tenant removed, in one transaction as the
tables' owner, leaving a receipt with the log's final signed checkpoint
(ADR 0014). The tenant id is retired: the appender and token creation refuse
it from then on, so no second log can ever contradict the final checkpoint."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg import sql

from sealtrail._erased_by import erased_by_said
from sealtrail._words import counted
from sealtrail.tlog import (
    ErasureStatement,
    NewerStatementError,
    NoteError,
    Verifier,
    newer_sealtrails,
    open_note,
    sign_note,
)

from ..domain.errors import (
    MAX_DESCRIPTION_BYTES,
    SEE_THE_LOG,
    FailedPrecondition,
    IntegrityFailure,
    Unauthenticated,
    Unavailable,
    cut,
)
from ..domain.merkle import EMPTY_ROOT
from ..integrity.checkpointer import Checkpointer
from ..store.changes import (
    ERASURE_SUBJECT,
    RETENTION_SUBJECT,
    end_when_idle,
    lock_subject,
    waited_too_long,
    waiting_at_most,
)
from ..store.checkpoints import StoredCheckpoint
from ..store.database import is_unavailable
from ..store.db_errors import named

log = logging.getLogger(__name__)

# How long an erasure waits for a change of the tenant in progress, and for
# any other lock another session holds (its head, a row it removes).
_LOCK_WAIT_SECONDS: Final = 10.0

# Every table with a tenant_id column but the receipts: found in the catalog at
# each erasure, so a table added by a later migration is never left behind; and
# whether its owner may act as the log's owner (who owns `events`): that owner,
# or a role that has its privileges (the owner URL's role changed to a member of
# the first, which later migrations then ran as; helper-87). Only those are
# erased: a table another role created in the schema could carry a trigger that
# would run as the log's owner, mid-erasure, with privileges its author lacks.
# While there is such a table the erasure is refused: it would leave that
# table's rows of the tenant behind a receipt that says nothing of them
# (helper-85).
_TABLES_WITH_TENANTS: Final = (
    "SELECT c.relname, pg_has_role(c.relowner, (SELECT relowner FROM pg_catalog.pg_class"
    " WHERE oid = 'events'::regclass), 'MEMBER') FROM pg_catalog.pg_attribute AS a"
    " JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid"
    " WHERE a.attname = 'tenant_id' AND NOT a.attisdropped AND c.relkind IN ('r', 'p')"
    " AND NOT c.relispartition AND c.relnamespace = current_schema()::regnamespace"
    " AND c.relname <> 'tenant_erasures' ORDER BY c.relname"
)


# The tenant tables other tables reference (sinks, alert rules): their rows
# are locked before any row is deleted. A worker that holds one (learning an
# origin holds its rule FOR SHARE; a child's insert holds its parent FOR KEY
# SHARE) may go on to wait for a child row this erasure deleted; had the
# erasure deleted the children first, it would then wait for that parent
# while the worker waits for it, a deadlock PostgreSQL breaks by failing one.
_PARENT_TABLES: Final = (
    "SELECT DISTINCT c.relname FROM pg_catalog.pg_constraint AS f"
    " JOIN pg_catalog.pg_class AS c ON c.oid = f.confrelid"
    " JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid"
    " WHERE f.contype = 'f' AND f.connamespace = current_schema()::regnamespace"
    " AND c.relowner = (SELECT relowner FROM pg_catalog.pg_class WHERE oid = 'events'::regclass)"
    " AND a.attname = 'tenant_id' AND NOT a.attisdropped ORDER BY c.relname"
)


@dataclass(frozen=True, slots=True)
class Receipt:
    tenant_id: str
    erased_by: str
    erased_at: datetime
    final_tree_size: int
    final_root_hash: bytes
    final_checkpoint: StoredCheckpoint | None
    removed_rows: dict[str, int]
    # The receipt signed by the deployment's key (ADR 0073); "" in one kept
    # before receipts were signed (migration 0045), which nothing proves.
    signed_receipt: str = ""
    # True when the call that answers it erased nothing: the tenant was erased
    # before (by another call, or by this one's retry), and this is its
    # receipt as kept. Not a part of the receipt (neither signed nor answered).
    kept: bool = dataclasses.field(default=False, compare=False)

    def statement(self, origin: str) -> ErasureStatement:
        """What the receipt's signature states, of the log `origin`."""
        return ErasureStatement(
            origin=origin,
            tenant_id=self.tenant_id,
            final_tree_size=self.final_tree_size,
            final_root_hash=self.final_root_hash,
            erased_by=self.erased_by,
            erased_at=self.erased_at,
            removed_rows=self.removed_rows,
        )


class Eraser:
    def __init__(
        self,
        owner_url: str,
        checkpointer: Checkpointer,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._owner_url = owner_url
        self._checkpointer = checkpointer
        self._clock = clock

    async def erase(self, tenant_id: str, *, erased_by: str, by_operator: bool = False) -> Receipt:
        """Erase the tenant in one transaction; the receipt. `erased_by`: the
        caller's token id, checked live; or, `by_operator`, who ran
        `sealtrail-server tenant erase`, which no token stands for. Unavailable when
        the database fails it (unreachable, or a deadlock it broke): rolled
        back, unless the connection was lost at the commit; a retry then tells
        which (the erasure again, or the receipt kept if it did land; or
        UNAUTHENTICATED once the caller's token is forgotten)."""
        try:
            return await self._erase(tenant_id, erased_by=erased_by, by_operator=by_operator)
        except psycopg.errors.LockNotAvailable as error:
            raise waited_too_long(error, _LOCK_WAIT_SECONDS, what="erasure") from error
        except psycopg.Error as error:
            if not is_unavailable(error, None):  # a read-only database too (helper-202)
                raise
            # Its text may name the database's host, port and owner role (helper-119).
            log.warning("erasure: %s failed: %s", tenant_id, named(error))
            raise Unavailable(
                f"the erasure failed, retry it; {SEE_THE_LOG}", retry_after=1.0
            ) from error

    async def _erase(self, tenant_id: str, *, erased_by: str, by_operator: bool) -> Receipt:
        async with (
            await psycopg.AsyncConnection.connect(
                self._owner_url, autocommit=True, application_name="sealtrail-erasure"
            ) as conn,
            conn.transaction(),
        ):
            await conn.execute("SET LOCAL sealtrail.removal = 'erasure'")
            # Its locks hold every change and append of the tenant off: a
            # process frozen mid-erasure (SIGSTOP, `docker pause`, a debugger)
            # held them for as long as it stayed frozen. Its session now ends
            # once idle in the transaction as long as a change's would, rolling
            # the erasure back; between its statements it only signs (ms).
            # Every lock wait of it is bounded: its head, held by a process
            # frozen in the middle of an append's COPY (until woken or killed),
            # or a table locked whole, held it with no limit, and its caller
            # got nothing until its deadline (an hour).
            await end_when_idle(conn, lock_wait=_LOCK_WAIT_SECONDS)
            # No legal hold placed meanwhile (a hold change holds the retention
            # subject from its read to its commit), no change of the tenant in
            # flight (each shares the erasure's lock after its subject's), and
            # no head created or moved for the tenant (the appender only tries
            # the erasure's lock, and answers UNAVAILABLE if it would have to
            # wait: ADR 0034). Retention first, as a change takes its subject first. Each
            # wait is bounded: a change of the tenant in progress is answered
            # UNAVAILABLE.
            busy = "another change of the tenant is in progress; retry the erasure"
            async with waiting_at_most(conn, _LOCK_WAIT_SECONDS, busy=busy):
                await lock_subject(conn, tenant_id, RETENTION_SUBJECT)
                await lock_subject(conn, tenant_id, ERASURE_SUBJECT)
            if earlier := await _kept_receipt(conn, tenant_id):  # by a call before this one
                if not by_operator:  # `tenant erase` says it in its own sentence, on stderr
                    log.info("tenant %s was erased already; answering its receipt", tenant_id)
                checked = await self._checked(earlier)
                # Kept as released, should the call that signed it have failed to.
                await self._keep_released(checked)
                return dataclasses.replace(checked, kept=True)
            if not by_operator:
                await _require_live_token(conn, tenant_id, erased_by)
            cursor = await conn.execute(
                "SELECT legal_hold FROM retention_policies WHERE tenant_id = %s", [tenant_id]
            )
            if (await cursor.fetchone() or (False,))[0]:
                raise FailedPrecondition(
                    "a legal hold is on: release it before erasing the tenant",
                    reason="LEGAL_HOLD",
                )
            # No append of the tenant moves the head until the end (appenders
            # try the erasure's lock first, and skip the tenant); once this
            # commits, the appender finds the id retired.
            cursor = await conn.execute(_TABLES_WITH_TENANTS)
            tables = await cursor.fetchall()
            if foreign := [str(table) for table, owned in tables if not owned]:
                raise FailedPrecondition(
                    f"tables {', '.join(foreign)} have a tenant_id but another owner than the"
                    " log's tables: the erasure would leave their rows behind. Give the log's"
                    " owner those tables, or drop them, then erase",
                    reason="FOREIGN_TENANT_TABLES",
                )
            cursor = await conn.execute(
                "SELECT tree_size, root_hash FROM chain_heads WHERE tenant_id = %s FOR UPDATE",
                [tenant_id],
            )
            head = await cursor.fetchone()
            size, root = (int(head[0]), bytes(head[1])) if head else (0, EMPTY_ROOT)
            # The receipt states the log's final size and root: never one that
            # contradicts a checkpoint the key signed (a log restored shorter;
            # the final checkpoint's issue checks its own size too).
            await self._checkpointer.check_may_state(tenant_id, head=(size, root))
            final = await self._checkpointer.issue(tenant_id) if size else None
            if final is not None:
                await self._check_states_head(final, size, root)
            cursor = await conn.execute(_PARENT_TABLES)
            for (table,) in await cursor.fetchall():
                await conn.execute(
                    sql.SQL("SELECT FROM {} WHERE tenant_id = %s FOR UPDATE").format(
                        sql.Identifier(table)
                    ),
                    [tenant_id],
                )
            removed = {}
            for table, _ in tables:
                cursor = await conn.execute(
                    sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(sql.Identifier(table)),
                    [tenant_id],
                )
                removed[table] = cursor.rowcount
            # To the microsecond, as the column keeps it and the receipt signs it.
            unsigned = Receipt(
                tenant_id=tenant_id,
                erased_by=erased_by,
                erased_at=self._clock().astimezone(UTC),
                final_tree_size=size,
                final_root_hash=root,
                final_checkpoint=final,
                removed_rows=removed,
            )
            # Kept before it is signed: a restore that brings the tenant back
            # gets nothing more signed of it (ADR 0083).
            await self._checkpointer.keep_erasure(tenant_id, size, root, released=False)
            # Signed as a whole, not only its final checkpoint: who, when, and
            # which log at which size and root (ADR 0073).
            signer = self._checkpointer.signer
            note = sign_note(
                unsigned.statement(self._checkpointer.origin(tenant_id)).text(), signer
            )
            receipt = dataclasses.replace(unsigned, signed_receipt=note)
            await conn.execute(
                "INSERT INTO tenant_erasures (tenant_id, erased_at, erased_by, final_tree_size,"
                " final_root_hash, final_checkpoint, final_checkpoint_issued_at, removed_rows,"
                " signed_receipt) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    tenant_id,
                    receipt.erased_at,
                    erased_by,
                    size,
                    root,
                    final.note if final else "",
                    final.issued_at if final else None,
                    json.dumps(removed),
                    note,
                ],
            )
        log.warning("erased tenant %s (%s) for %s", tenant_id, counted(size, "event"), erased_by)
        await self._keep_released(receipt)
        return receipt

    async def _keep_released(self, receipt: Receipt) -> None:
        """The receipt is out (signed, or served again), the service's word
        that the log ended: kept so outside the database, as checkpoints
        served are (ADR 0083); a failure said, not raised."""
        try:
            await self._checkpointer.keep_erasure(
                receipt.tenant_id,
                receipt.final_tree_size,
                receipt.final_root_hash,
                released=True,
            )
        except Unavailable as error:
            log.error(
                "erasure: %s; should a restore bring tenant %s back, this key could sign"
                " more of its log",
                error.message,
                receipt.tenant_id,
            )

    async def _checked(self, kept: Receipt) -> Receipt:
        """`kept`, as `tenant_erasures` holds it, once its signature is found
        to state its fields; IntegrityFailure if it does not (a row edited
        behind the service's back), FailedPrecondition if a newer Sealtrail
        signed it (a version this release cannot read). One kept before
        receipts were signed has no signature: answered as it is, with a
        warning, as nothing proves it."""
        if not kept.signed_receipt:
            log.warning(
                "the receipt of tenant %s is not signed (kept before receipts were signed,"
                " migration 0045, or written by hand): nothing proves it",
                kept.tenant_id,
            )
            return kept
        try:
            problem = check_receipt(kept, await self._checkpointer.verifiers())
        except NewerStatementError as newer:
            raise FailedPrecondition(
                newer_sealtrails(
                    "the tenant's erasure receipt", newer.version, upgrade="this server"
                )
            ) from None
        if problem is not None:
            raise IntegrityFailure(
                f"the receipt kept of tenant {kept.tenant_id!r} {problem}: it was changed"
                " behind the service's back"
            )
        return kept

    async def _check_states_head(self, final: StoredCheckpoint, size: int, root: bytes) -> None:
        """IntegrityFailure unless the final checkpoint's signed note states the
        head's size and root: the receipt pairs the two, and the erasure is
        about to remove all that could show otherwise. A log that has not grown
        since its latest checkpoint gets that one, as stored; its size and root
        columns are not what is signed (helper-85)."""
        tenant_id = final.tenant_id
        signed = await self._checkpointer.signed(final)
        # Not its origin: one signed before SEALTRAIL_LOG_ORIGIN changed still
        # states this head, and no other log has its root (helper-87).
        if (signed.tree_size, signed.root_hash) != (size, root):
            other_root = ", with another root" if signed.tree_size == size else ""
            raise IntegrityFailure(
                f"the final checkpoint of {tenant_id!r} does not state its head (size {size}):"
                f" it signs size {signed.tree_size}{other_root}; nothing was erased"
            )


def check_receipt(receipt: Receipt, verifiers: list[Verifier]) -> str | None:
    """What is wrong with a kept receipt's signature, or None when a known
    key signed a receipt stating its fields: "is not signed", "bears no
    signature by a known key: ...", or "does not match its signature in
    FIELDS"; NewerStatementError if a known key signed a receipt of a
    version beyond this release's (a newer Sealtrail's)."""
    if not receipt.signed_receipt:
        return "is not signed"
    try:
        text, _ = open_note(receipt.signed_receipt, verifiers)
        signed = ErasureStatement.parse(text)
    except NewerStatementError:
        raise
    except NoteError as error:
        return f"bears no signed receipt by a known key: {error}"
    differ = receipt.statement(signed.origin).differences(signed)
    if differ:
        return f"does not match its signature in {', '.join(differ)}"
    return None


async def _require_live_token(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, token_id: str
) -> None:
    """The caller's token, as it stands now (the guard's may be cached): a
    token revoked on another process must not erase meanwhile."""
    cursor = await conn.execute(
        "SELECT FROM api_tokens WHERE tenant_id = %s AND token_id = %s"
        " AND revoked_at IS NULL FOR SHARE",
        [tenant_id, token_id],
    )
    if await cursor.fetchone() is None:
        raise Unauthenticated("unknown or revoked token")


# Where the refusal of an erasure kept unsigned sends its reader.
_SEE_THE_RECEIPT: Final = "; see tenant_erasures"


def _erased_unsigned(erased_at: datetime, erased_by: str) -> str:
    """The refusal of a repeat of an erasure kept before its checkpoint's time
    was: when, and by whom as receipts name them (`token ID`, `operator
    NAME`: erased_by_said), within MAX_DESCRIPTION_BYTES, an operator's long
    name cut (the row holds it whole). The tenant goes unsaid: the caller
    named it, and its 63 characters left no room."""
    said = f"erased {erased_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} by "
    room = MAX_DESCRIPTION_BYTES - len(said.encode()) - len(_SEE_THE_RECEIPT)
    return said + cut(erased_by_said(erased_by), room) + _SEE_THE_RECEIPT


async def _kept_receipt(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> Receipt | None:
    """The receipt of the tenant's erasure, as kept; None if it was not
    erased. A repeat of the erasure answers it: the first call's answer may
    have been lost with its connection, and nothing else returns it. One kept
    before the checkpoint's time was (migration 0024) cannot be made whole:
    the repeat is refused, saying when and by whom (_erased_unsigned)."""
    cursor = await conn.execute(
        "SELECT erased_at, erased_by, final_tree_size, final_root_hash, final_checkpoint,"
        " final_checkpoint_issued_at, removed_rows, signed_receipt FROM tenant_erasures"
        " WHERE tenant_id = %s",
        [tenant_id],
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    erased_at, erased_by, size, root, note, issued_at, removed, signed = row
    if note and issued_at is None:
        raise FailedPrecondition(_erased_unsigned(erased_at, erased_by), reason="TENANT_ERASED")
    final = StoredCheckpoint(tenant_id, size, bytes(root), note, issued_at) if note else None
    return Receipt(
        tenant_id=tenant_id,
        erased_by=erased_by,
        erased_at=erased_at,
        final_tree_size=size,
        final_root_hash=bytes(root),
        final_checkpoint=final,
        removed_rows=dict(removed),
        signed_receipt=signed or "",
    )
