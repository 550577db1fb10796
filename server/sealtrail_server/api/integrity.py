"""The integrity RPCs of AuditLogService: checkpoints, proofs, verifier keys
and VerifyLog. A mixin of the servicer, kept apart so each file has one job."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from functools import lru_cache, partial
from typing import Any

import grpc

from sealtrail._words import counted
from sealtrail.v1 import event_pb2
from sealtrail.v1 import integrity_pb2 as pb

from ..domain.errors import FailedPrecondition, IntegrityFailure, InvalidArgument, NotFound
from ..domain.event import MAX_SEQ, named_in_record, parse_uuid
from ..domain.filters import page_size
from ..domain.page_tokens import PageTokens
from ..domain.purge_summaries import SummarySeal
from ..fair_share import FairShare
from ..integrity.checkpointer import Checkpointer
from ..store.appender import Appender
from ..store.changes import refuse_if_erased, refuse_if_erased_now
from ..store.checkpoints import (
    StoredCheckpoint,
    checkpoint_at,
    known_keys,
    latest_checkpoint,
)
from ..store.database import Database
from ..store.events import get_event, refuse_if_another_event
from ..store.long_reads import LongReads
from ..store.node_reader import NodeReader
from ..store.tree import (
    inclusion_proof,
    inclusion_read,
    purged_leaves,
    read_consistency,
    tree_size,
)
from ..store.verify import verify_log
from .audited import record_access
from .convert import view_matches
from .guard import current_principal
from .key_reads import KeyReads
from .removals_said import RemovalsSaid

Context = grpc.aio.ServicerContext[Any, Any]
_CACHED_CHECKPOINTS = 10_000


@lru_cache(maxsize=1024)  # signed checkpoints never change; proofs repeat the same few
def checkpoint_message(stored: StoredCheckpoint) -> pb.SignedCheckpoint:
    """The message of `stored`; shared, so copy it into an answer, never change it."""
    checkpoint = pb.SignedCheckpoint(
        origin=stored.note.split("\n", 1)[0],
        tree_size=stored.tree_size,
        root_hash=stored.root_hash,
        note=stored.note,
    )
    checkpoint.issued_at.FromDatetime(stored.issued_at)
    return checkpoint


def _non_negative(name: str, value: int) -> int:
    if value < 0:
        raise InvalidArgument.field(name, "must not be negative")
    return value


class IntegrityRpcs:
    _db: Database
    _appender: Appender
    _clock: Callable[[], datetime]
    _page_tokens: PageTokens
    _checkpointer: Checkpointer
    _node_reader: NodeReader
    _signed_checkpoints: dict[tuple[str, int], StoredCheckpoint]
    _sizes_seen: dict[str, int]
    _key_reads: KeyReads
    _summary_seal: SummarySeal
    _removals_said: RemovalsSaid
    _verifications: FairShare
    _long_reads: LongReads

    async def _latest(self, tenant_id: str) -> StoredCheckpoint | None:
        """The tenant's latest checkpoint. If this process signed or served a
        later one than the database holds, the checkpointer's instead: one that
        extends the one remembered, or IntegrityFailure for a log or checkpoints
        cut back behind the service's back (a row whose commit failed is signed
        again)."""
        async with self._db.connection(tenant_id) as conn:
            latest = await latest_checkpoint(conn, tenant_id)
        remembered = await self._checkpointer.remembered(tenant_id)
        if remembered is not None and (latest is None or latest.tree_size < remembered[0]):
            return await self._checkpointer.issue(tenant_id)
        if latest is None:
            return None
        return await self._checkpointer.answered_against(latest, remembered)

    async def _covering(self, tenant_id: str, seq: int) -> StoredCheckpoint:
        """The latest checkpoint if it covers `seq`, else a freshly signed one."""
        latest = await self._latest(tenant_id)
        if latest is None or latest.tree_size < seq:
            latest = await self._checkpointer.issue(tenant_id)
        if latest is None:
            raise await self._not_found(tenant_id, "the log is empty: there is no checkpoint yet")
        return latest

    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: Context
    ) -> pb.GetCheckpointResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        size = _non_negative("tree_size", request.tree_size)
        if size:
            async with self._db.connection(tenant_id) as conn:
                found = await checkpoint_at(conn, tenant_id, size)
            if found is None:
                raise await self._not_found(tenant_id, f"no checkpoint was signed at size {size}")
            found = await self._checkpointer.answered(found)
        elif request.fresh:
            found = await self._checkpointer.issue(tenant_id)
        else:
            found = await self._latest(tenant_id)
            if found is not None:  # answered as the log today: the log must hold it
                async with self._erasure_explains(tenant_id):
                    await self._checkpointer.still_held(found)
        if found is None:
            raise await self._not_found(tenant_id, await self._none_yet(tenant_id))
        return pb.GetCheckpointResponse(checkpoint=checkpoint_message(found))

    async def _none_yet(self, tenant_id: str) -> str:
        """Why the tenant has no checkpoint: its log is empty, or its first
        events are not signed yet (the checkpointer signs a grown log within
        its interval)."""
        async with self._db.connection(tenant_id) as conn:
            if await tree_size(conn, tenant_id) == 0:
                return "the log is empty: there is no checkpoint yet"
        return "no checkpoint has been signed yet; ask with fresh to sign one"

    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: Context
    ) -> pb.GetInclusionProofResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        seq = await self._seq_of(tenant_id, request)
        size = _non_negative("tree_size", request.tree_size)
        checkpoint: StoredCheckpoint | None
        if size == 0:
            checkpoint = await self._covering(tenant_id, seq)
            size = checkpoint.tree_size
        elif size < seq:
            raise InvalidArgument.field("tree_size", f"must be at least the event's seq {seq}")
        else:
            checkpoint = await self._checkpoint_at(tenant_id, size)
        # The answer carries the record: a read, recorded as Query's are.
        leaf = request.WhichOneof("leaf")
        key = {"seq": seq} if leaf == "seq" else {"event_id": request.event_id}
        await self._key_reads.recorded(principal, rpc="GetInclusionProof", key=key)
        if seq > size:  # beyond the log (the checkpoint covering it is the latest)
            raise await self._not_found(tenant_id, "no such event")
        if request.tree_size:
            await self._within_log(tenant_id, size, "tree_size")
        # Within the log: an event missing from it now is lost data (DATA_LOSS).
        read = inclusion_read(tenant_id, seq=seq, tree_size=size)
        async with self._erasure_explains(tenant_id):
            found = inclusion_proof(read, await self._node_reader.read(read), tree_size=size)
            if checkpoint is not None:  # answered beside it: its proof leads to its root
                self._checkpointer.proven_inclusion(
                    checkpoint, seq=seq, leaf=found.leaf_hash, proof=found.proof
                )
        if found.record is not None and leaf == "event_id":
            refuse_if_another_event(
                request.event_id.lower(), seq, named_in_record(found.record, "id")
            )
        if found.record is None and not request.include_purged:
            # Said removed by retention only if it was (ADR 0158). With
            # include_purged the leaf is proven, not who removed it: that is
            # the ledger's to count, over every statement (a bundle's does).
            await self._refuse_if_removed_outside_retention(tenant_id, seq)
            raise NotFound(
                f"event {seq} was removed by retention; set include_purged for its leaf's proof",
                reason="PURGED",
            )
        response = pb.GetInclusionProofResponse(
            seq=seq,
            record=found.record.encode() if found.record is not None else b"",
            leaf_hash=found.leaf_hash,
            tree_size=size,
            proof=found.proof,
            purged=found.record is None,
        )
        if checkpoint is not None:
            response.checkpoint.CopyFrom(checkpoint_message(checkpoint))
        return response

    async def _refuse_if_removed_outside_retention(self, tenant_id: str, seq: int) -> None:
        """IntegrityFailure unless retention's records account for the removed
        event `seq`: refused as PURGED, it is called retention's, and a
        superuser's DELETE with its leaf kept was (helper-555)."""
        async with self._db.connection(tenant_id) as conn:
            await self._removals_said.refuse_unaccounted(
                conn,
                tenant_id,
                after_seq=seq - 1,
                upto_seq=seq,
            )

    async def _seq_of(self, tenant_id: str, request: pb.GetInclusionProofRequest) -> int:
        which = request.WhichOneof("leaf")
        if which == "seq":
            if not 1 <= request.seq <= MAX_SEQ:
                raise InvalidArgument.field("seq", f"must be 1 to {MAX_SEQ}")
            return request.seq
        if which != "event_id":
            raise InvalidArgument.field("leaf", "set event_id or seq")
        event_id = parse_uuid(request.event_id)
        if event_id is None:
            raise InvalidArgument.field("event_id", "must be a UUID")
        found = await get_event(self._db, tenant_id=tenant_id, event_id=event_id)
        if found is None:
            raise await self._not_found(tenant_id, "no such event")
        return found.seq

    async def _not_found(self, tenant_id: str, message: str) -> NotFound:
        """NotFound, unless the tenant was erased since this process began to
        trust the caller's token (for up to its cache time): then
        TENANT_ERASED. The log is gone, not empty, and the event was there."""
        await refuse_if_erased_now(self._db, tenant_id)
        return NotFound(message)

    async def _checkpoint_at(self, tenant_id: str, size: int) -> StoredCheckpoint | None:
        """The checkpoint signed at `size`, if any, once its note is found to
        sign what its row says (IntegrityFailure if not); signed ones never
        change, so they are kept in memory once read."""
        key = (tenant_id, size)
        cached = self._signed_checkpoints.get(key)
        if cached is None:
            async with self._db.connection(tenant_id) as conn:
                cached = await checkpoint_at(conn, tenant_id, size)
            if cached is not None:
                cached = await self._checkpointer.answered(cached)
                if len(self._signed_checkpoints) >= _CACHED_CHECKPOINTS:
                    self._signed_checkpoints.clear()
                self._signed_checkpoints[key] = cached
        return cached

    @contextlib.asynccontextmanager
    async def _erasure_explains(self, tenant_id: str) -> AsyncIterator[None]:
        """Hashes found missing where the tenant was erased meanwhile (after a
        size this process saw, by a token it still trusts) are TENANT_ERASED:
        the log is gone, not tampered with."""
        try:
            yield
        except IntegrityFailure:
            await refuse_if_erased_now(self._db, tenant_id)
            raise

    async def _within_log(self, tenant_id: str, size: int, field: str) -> None:
        if size <= self._sizes_seen.get(tenant_id, 0):
            return  # logs only grow: a size once reached stays within the log
        current = await self._log_size(tenant_id)
        if size <= current:
            return
        # What the key signed, as this process remembers it or the kept file
        # holds it: a row beyond the log is no witness, as any key in
        # `signing_keys` signs one and the service's role may add a key there
        # (helper-572; a row never signed, helper-570).
        remembered = await self._checkpointer.remembered(tenant_id)
        signed_size = 0 if remembered is None else remembered[0]
        # The size again, after what was signed: a checkpoint signed since the
        # first read (as the log grew) is within it, not a log cut back under it.
        current = await self._log_size(tenant_id)
        if size <= current:
            return
        # A log gone (erased) is neither cut back nor has a size to be beyond.
        await refuse_if_erased_now(self._db, tenant_id)
        if signed_size > current:
            raise IntegrityFailure(
                f"the log holds {counted(current, 'event')} but a checkpoint was signed at size"
                f" {signed_size}: events were removed behind the service's back"
            )
        raise FailedPrecondition(
            f"{field} {size} is beyond the log's size {current}",
            reason="BEYOND_LOG_SIZE",
            metadata={"tree_size": str(current)},
        )

    async def _log_size(self, tenant_id: str) -> int:
        """The tenant's log's size, now, noted as seen."""
        async with self._db.connection(tenant_id) as conn:
            current = await tree_size(conn, tenant_id)
        self._sizes_seen[tenant_id] = current
        return current

    async def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: Context
    ) -> pb.GetConsistencyProofResponse:
        tenant_id = current_principal().tenant_id
        old = _non_negative("old_size", request.old_size)
        new = _non_negative("new_size", request.new_size)
        if old < 1:
            raise InvalidArgument.field("old_size", "must be 1 or more")
        covering = None
        if new == 0:  # the latest checkpoint: old_size must be within the log
            await self._within_log(tenant_id, old, "old_size")
            covering = await self._covering(tenant_id, old)
            new = covering.tree_size
        if new < old:
            raise InvalidArgument.field("new_size", "must not be smaller than old_size")
        await self._within_log(tenant_id, new, "new_size")
        async with self._erasure_explains(tenant_id):
            found = await read_consistency(self._db, tenant_id, old_size=old, new_size=new)
            # Answered as the log's: of the log the key signed, not the database's word.
            await self._checkpointer.proven_consistency(
                tenant_id,
                old_size=old,
                new_size=new,
                old_root=found.old_root,
                new_root=found.new_root,
                proof=found.proof,
                covering=covering,
            )
        return pb.GetConsistencyProofResponse(
            old_size=old,
            new_size=new,
            proof=found.proof,
            old_root=found.old_root,
            new_root=found.new_root,
        )

    async def ListPurgedLeaves(
        self, request: pb.ListPurgedLeavesRequest, context: Context
    ) -> pb.ListPurgedLeavesResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        size = _non_negative("tree_size", request.tree_size)
        from_seq = _non_negative("after_seq", request.after_seq)
        limit = page_size(request.page_size)
        if size == 0:
            async with self._db.connection(tenant_id) as conn:
                size = await tree_size(conn, tenant_id)
                if size == 0:
                    await refuse_if_erased(conn, tenant_id)  # not an empty log
        else:
            await self._within_log(tenant_id, size, "tree_size")
        # A page token goes on the listing of one tree size, of one tenant.
        fingerprint = f"purged-leaves:{tenant_id}:{size}"
        after = max(
            from_seq,
            self._page_tokens.decode(
                request.page_token, fingerprint=fingerprint, caller=principal.token_id
            )
            if request.page_token
            else 0,
        )
        async with self._db.connection(tenant_id) as conn:
            found = await purged_leaves(
                conn, tenant_id, after_seq=after, upto_seq=size, limit=limit + 1
            )
        page = found[:limit]
        return pb.ListPurgedLeavesResponse(
            tree_size=size,
            leaves=[pb.PurgedLeaf(seq=seq, leaf_hash=leaf) for seq, leaf in page],
            next_page_token=(
                self._page_tokens.encode(
                    fingerprint=fingerprint, last_seq=page[-1][0], caller=principal.token_id
                )
                if len(found) > limit
                else ""
            ),
        )

    async def GetVerifierKeys(
        self, request: pb.GetVerifierKeysRequest, context: Context
    ) -> pb.GetVerifierKeysResponse:
        active = self._checkpointer.signer.verifier
        async with self._db.connection(current_principal().tenant_id) as conn:
            stored = await known_keys(conn)
        keys = []
        for key in stored:
            name, key_id, _ = key.verifier.split("+", 2)
            entry = pb.VerifierKey(
                text=key.verifier, name=name, key_id=key_id, active=key.verifier == active.text()
            )
            entry.first_used_at.FromDatetime(key.first_used_at)
            keys.append(entry)
        keys.sort(key=lambda k: not k.active)
        return pb.GetVerifierKeysResponse(keys=keys)

    async def VerifyLog(
        self, request: pb.VerifyLogRequest, context: Context
    ) -> pb.VerifyLogResponse:
        principal = current_principal()
        # Its turn taken holding no connection: a tenant's verifications, each
        # minutes of a large log, took every pooled connection, and every other
        # tenant's writes failed meanwhile. Then one of the long reads' (with
        # counts and previews, the bulk share but one: pages find the last).
        async with (
            self._verifications.slot(principal.tenant_id),
            self._long_reads.turn(principal.tenant_id),
        ):
            result = await verify_log(
                self._db,
                tenant_id=principal.tenant_id,
                origin=self._checkpointer.origin(principal.tenant_id),
                verifiers=await self._checkpointer.verifiers(),
                remembered=await self._checkpointer.remembered(principal.tenant_id),
                seal=self._summary_seal,
                view_matches=(
                    partial(view_matches, tenant_id=principal.tenant_id)
                    if request.check_views
                    else None
                ),
            )
        outcome: dict[str, Any] = {
            "ok": result.failure is None,
            "verified_size": result.verified_size,
        }
        if request.check_views:
            outcome["views_verified"] = result.views_verified
        if result.failure is not None:
            outcome["failure"] = {"seq": result.failure.seq, "reason": result.failure.reason}
        await record_access(
            self._appender,
            principal,
            now=self._clock(),
            action="audit_log.verified",
            category=event_pb2.CATEGORY_SECURITY,
            description="Verified the audit log"
            + ("" if result.failure is None else f": {result.failure.reason}"),
            details=outcome,
        )
        response = pb.VerifyLogResponse(
            ok=result.failure is None,
            verified_size=result.verified_size,
            checkpoints_verified=result.checkpoints_verified,
            views_verified=result.views_verified,
        )
        if result.failure is not None:
            response.failure.CopyFrom(
                pb.VerifyLogFailure(
                    seq=result.failure.seq,
                    reason=result.failure.reason,
                    message=result.failure.message,
                )
            )
        return response
