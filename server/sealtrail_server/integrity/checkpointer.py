"""Issues signed checkpoints: on demand, and every `interval` seconds for each
tenant whose log has grown.

Before signing size n, the issuer recomputes the root at n from the stored
hashes, checks it against the tenant's head, and checks a consistency proof
from the latest signed checkpoint (its root read from the signed note, not the
row). So it never signs two inconsistent checkpoints for one origin, even if
rows were rewritten behind its back: it refuses with IntegrityFailure instead.

The checkpoint rows are a superuser's to delete, though: with them gone, a log
cut back or rewritten would have been signed again. So each process also
remembers the latest checkpoint it signed or served of each tenant, outside
the database, and signs or serves only what extends it (helper-123). What a
process that never signed for the tenant, or one restarted since, cannot
know, a checkpoint held outside the service can (docs/integrity.md).

Nor does a database restored from an older backup, or a replica promoted that
lagged, know the checkpoints signed after it: its next events take the lost
events' seqs, and the key signed, at sizes it had signed, other roots. So the
largest size the key signed (or served) of each tenant, and its root, are kept
in files outside the database too (`SignedSizes`, ADR 0080), written before a
signature is released: the key signs only what extends them, whichever process
asks after whatever restart.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from opentelemetry.metrics import Meter

from sealtrail._words import counted
from sealtrail.tlog import (
    Checkpoint,
    NoteError,
    ProofError,
    PurgeStatement,
    Signer,
    Verifier,
    format_checkpoint,
    open_note,
    parse_checkpoint,
    sign_note,
    verify_consistency,
    verify_inclusion,
)

from ..domain.errors import IntegrityFailure, SealtrailError, Unavailable
from ..measures import no_meter
from ..stopping import end_tasks
from ..store.changes import refuse_if_erased
from ..store.checkpoints import (
    StoredCheckpoint,
    checkpoints_beyond,
    insert_checkpoint,
    known_keys,
    latest_checkpoints,
    refuse_checkpoint,
    register_key,
    tenants_grown_since_checkpoint,
)
from ..store.database import Database
from ..store.tree import consistency_proof, root_at
from .signed_sizes import SignedSizes, SignedSizesError

log = logging.getLogger(__name__)

# Tenants whose latest checkpoint a process remembers (the least recently
# signed or served forgotten first): about 200 bytes each, 20 MB at most.
REMEMBERED_TENANTS = 100_000
# Seconds what the key signed of a log, read from outside the database, is
# taken as read (`remembered`): another process's signature, or a log changed
# under this one, is seen that much later on the read paths (signing reads
# afresh).
KEPT_READ_SECONDS = 1.0
# How long an issuer may sit idle in its transaction, holding the tenant's
# issuer lock, before PostgreSQL ends its session: a process frozen there
# (SIGSTOP, `docker pause`) held the lock for as long as its host's TCP
# answered for it, for ever if only the process stopped, and every other
# process's checkpoint of the tenant (a fresh one, an export's, an erasure's
# final one, the checkpointer's) failed meanwhile. As the appender's writes
# (store/appender.py, IDLE_IN_WRITE_SECONDS): its statements follow one
# another, with a signature's milliseconds between.
IDLE_IN_ISSUE_SECONDS = 30.0
# Seconds a call refused for want of SEALTRAIL_SIGNED_CHECKPOINTS_DIR (a full
# or failed disk) is told to wait before it tries again.
SIGNED_SIZES_RETRY_SECONDS = 5.0
# Tenants whose kept checkpoint (ADR 0080) a start checks against the database
# before it serves, and then a query at a time: the rest are checked after
# (a year's directory, 100,000 tenants, took 11 s of a start, read a file at
# a time), and a tenant a call asks about before then on its own.
RESTORED_SCAN_BATCH = 1000
# Stored checkpoints found to hold what their rows say, kept so that a proof
# served often does not check its checkpoint's signature each time; the least
# recently served dropped first (all of them were, at once, once full).
CHECKED_CHECKPOINTS = 10_000
# Stored checkpoints the signer reads at a time, after the largest, looking
# for the latest whose note signs what its row says: the rows above it are a
# superuser's, each set aside once (ADR 0159).
ROWS_CHECKED_A_READ = 64


class Checkpointer:
    def __init__(
        self,
        db: Database,
        signer: Signer,
        *,
        origin_prefix: str,
        interval: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        meter: Meter | None = None,
        signed_sizes: SignedSizes | None = None,
    ) -> None:
        """`meter`: checkpoints signed, and integrity failures met (docs/metrics.md).
        `signed_sizes`: what the key signed, kept outside the database (ADR 0080);
        without it, only this process's memory knows."""
        self._db = db
        self._signed_sizes = signed_sizes
        self.signer = signer
        self._origin_prefix = origin_prefix
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        # {tenant: (size, root)} of the latest checkpoint signed or served here.
        self._remembered: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        # Stored checkpoints found to hold what their rows say, the least
        # recently served first.
        self._checked: OrderedDict[StoredCheckpoint, None] = OrderedDict()
        # Of those, the ones found to agree with what the key signed of their
        # log (`answered`), the least recently served first.
        self._agreed: OrderedDict[StoredCheckpoint, None] = OrderedDict()
        # Consistency proofs' answers found to be of the log the key signed
        # (tenant, old size, new size, old root, new root: `proven_consistency`),
        # the least recently answered first.
        self._consistent: OrderedDict[tuple[str, int, int, bytes, bytes], None] = OrderedDict()
        # {tenant: (what the key signed of its log, as kept outside the
        # database, or None; until when taken as read)} (`remembered`).
        self._kept_lately: OrderedDict[str, tuple[tuple[int, bytes] | None, float]] = OrderedDict()
        # While the kept checkpoints of a start are checked after it: the
        # first tenant (in order) left to check, those checked meanwhile on
        # their own, and those whose erasure the key signed (checked at start).
        self._scan: asyncio.Task[None] | None = None
        self._unchecked_from: str | None = None
        self._checked_alone: set[str] = set()
        self._erased_at_start: frozenset[str] = frozenset()
        # The tenants whose erasure's file the start could not read, until it
        # reads (`_erasure_read_again`): their checkpoints are refused meanwhile.
        self._erasures_unread: set[str] = set()
        meter = meter or no_meter()
        self._signed = meter.create_counter(
            "sealtrail.checkpoints.signed",
            unit="{checkpoint}",
            description="Checkpoints this process signed.",
        )
        self._integrity_failures = meter.create_counter(
            "sealtrail.integrity.failures",
            unit="{failure}",
            description=(
                "Logs found changed behind the service's back as checkpoints were signed"
                " or exports written."
            ),
        )
        self._integrity_failures.add(0)  # there before the first: docs/metrics.md's alert

    def integrity_failure_met(self) -> None:
        """Counts, in `sealtrail.integrity.failures`, a log found changed
        behind the service's back elsewhere than here: a record an export was
        to show beside a leaf it does not hash to (api/export.py)."""
        self._integrity_failures.add(1)

    def origin(self, tenant_id: str) -> str:
        return f"{self._origin_prefix}/{tenant_id}"

    async def remembered(self, tenant_id: str) -> tuple[int, bytes] | None:
        """The size and root of the tenant's latest checkpoint this process
        signed or served, as it remembers them (not read from the database);
        or, of a log restored behind the key, what the key signed of it; or
        the largest the key signed of it, as kept outside the database (ADR
        0080), if larger. A tenant the start has yet to check is checked
        first. Unavailable if the kept file cannot be read, or the tenant's
        erasure's file could not be at start and still cannot be."""
        if tenant_id in self._erasures_unread:
            await self._erasure_read_again(tenant_id)
        unchecked_from = self._unchecked_from
        if (
            unchecked_from is not None
            and tenant_id >= unchecked_from
            and tenant_id not in self._checked_alone
            and tenant_id not in self._erased_at_start
        ):
            await self._check_kept([tenant_id], {})
            if self._unchecked_from is not None:
                self._checked_alone.add(tenant_id)
        remembered = self._remembered.get(tenant_id)
        if self._signed_sizes is None:
            return remembered
        # What another process of the data dir signed, or this one before a
        # restart, of a log changed since under this one (restored, removed):
        # it answered and proved from what the database said instead.
        kept = await self._signed_size_lately(tenant_id)
        if kept is not None and (remembered is None or kept[0] > remembered[0]):
            return kept
        return remembered

    async def _signed_size_lately(self, tenant_id: str) -> tuple[int, bytes] | None:
        """`_read_signed_size`, read at most once each KEPT_READ_SECONDS per
        tenant: the proof path asks `remembered` on every call, and a file read
        in a thread took some 80 us of CPU each (a tenth of a proof's)."""
        now = time.monotonic()
        lately = self._kept_lately.get(tenant_id)
        if lately is not None and lately[1] > now:
            return lately[0]
        kept = await self._read_signed_size(tenant_id)
        self._note_kept(tenant_id, kept, now)
        return kept

    def _note_kept(self, tenant_id: str, kept: tuple[int, bytes] | None, now: float) -> None:
        self._kept_lately[tenant_id] = (kept, now + KEPT_READ_SECONDS)
        self._kept_lately.move_to_end(tenant_id)
        if len(self._kept_lately) > REMEMBERED_TENANTS:
            self._kept_lately.popitem(last=False)

    async def _erasure_read_again(self, tenant_id: str) -> None:
        """The tenant's erasure's file, which the start could not read, read
        again: Unavailable while it cannot be (said once, at start); once it
        can, the erasure it holds (if released) checked as the start checks
        each (`_check_kept`), and the tenant served as any other.

        Decided: refused, not served as if the key had signed no erasure of
        it. The file is all that says the key signed a receipt that the log
        ended: a log a restore brought back would be served (its stored
        checkpoints, proofs from them) as live, and a client would take it so.
        Signing it is refused already, its file read before each signature
        (`_check_signed_sizes`), and so is its erasure (`check_may_state`): its
        reads are refused alike until the file is mended, and every other
        tenant is served."""
        assert self._signed_sizes is not None
        try:
            kept = await self._signed_sizes.read_erasure_async(tenant_id)
        except SignedSizesError as error:
            raise Unavailable(
                f"refusing {self.origin(tenant_id)}: whether this signing key signed its erasure"
                f" cannot be read ({error})",
                retry_after=SIGNED_SIZES_RETRY_SECONDS,
            ) from error
        self._say_mended()
        if kept is not None and kept[2]:
            await self._check_kept([], {tenant_id: kept[:2]})
            if self._unchecked_from is not None:  # its kept checkpoint not to check after
                self._checked_alone.add(tenant_id)
        self._erasures_unread.discard(tenant_id)

    async def restored_logs_checked(self) -> None:
        """Once the kept checkpoint of every tenant is checked (at start, and
        after it: ADR 0080)."""
        if self._scan is not None:
            await asyncio.shield(self._scan)

    async def start(self) -> None:
        async with self._db.system_connection() as conn:
            await register_key(conn, self.signer.verifier)
        await self._find_restored_logs()
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="sealtrail-checkpointer")

    async def stop(self) -> None:
        await end_tasks([self._task, self._scan])
        self._task = self._scan = None

    async def signed(
        self, checkpoint: StoredCheckpoint, verifiers: list[Verifier] | None = None
    ) -> Checkpoint:
        """What `checkpoint`'s note signs (its stored size and root are not
        signed); IntegrityFailure if no known key (of `verifiers`, if given)
        signed it."""
        try:
            if verifiers is None:
                verifiers = await self.verifiers()
            text, _ = open_note(checkpoint.note, verifiers)
            return parse_checkpoint(text)
        except NoteError as error:
            raise IntegrityFailure(
                f"the checkpoint of {checkpoint.tenant_id!r} at size {checkpoint.tree_size}"
                f" does not verify: {error}"
            ) from error

    async def served(
        self, checkpoint: StoredCheckpoint, verifiers: list[Verifier] | None = None
    ) -> StoredCheckpoint:
        """`checkpoint`, once its note is found to sign what its row says: a
        known key's signature over the row's tenant's log (whatever the
        origin's prefix then: SEALTRAIL_LOG_ORIGIN may change), its size and
        its root; else IntegrityFailure naming what differs. A row is a
        database superuser's to write: one at size 60 holding the genuine note
        of size 40, or another tenant's (one key signs every tenant's), was
        served as is, with the row's size and root beside it (helper-221)."""
        if checkpoint in self._checked:
            self._checked.move_to_end(checkpoint)
            return checkpoint
        signed = await self.signed(checkpoint, verifiers)
        tenant_id, size = checkpoint.tenant_id, checkpoint.tree_size
        stored = f"the checkpoint stored at size {size} of {tenant_id!r}"
        prefix, separator, tenant = signed.origin.rpartition("/")
        if not separator or not prefix or tenant != tenant_id:
            raise IntegrityFailure(
                f"{stored} signs the log {signed.origin!r}: it is another log's checkpoint"
            )
        if signed.tree_size != size:
            raise IntegrityFailure(f"{stored} signs size {signed.tree_size}, not the row's")
        if signed.root_hash != checkpoint.root_hash:
            raise IntegrityFailure(f"{stored} signs another root than the row's")
        self._checked[checkpoint] = None
        while len(self._checked) > CHECKED_CHECKPOINTS:
            self._checked.popitem(last=False)
        return checkpoint

    async def answered(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        """`answered_against` what `remembered` says the key signed."""
        if checkpoint in self._agreed:
            self._agreed.move_to_end(checkpoint)
            return checkpoint
        return await self.answered_against(checkpoint, await self.remembered(checkpoint.tenant_id))

    async def answered_against(
        self, checkpoint: StoredCheckpoint, signed: tuple[int, bytes] | None
    ) -> StoredCheckpoint:
        """`served(checkpoint)`, once found to agree with the largest the key
        signed of the tenant's log (`signed`: its size and root, as
        `remembered` says; None if none): the same root at its size, or a
        consistency proof between the two from the stored hashes; else
        IntegrityFailure. A stored checkpoint's signature may be any known
        key's: a superuser's row of the old key, at a size the active key
        signed of another log since (the way on after a restore, ADR 0080),
        was served by size, as the latest and with proofs (helper-241)."""
        checkpoint = await self.served(checkpoint)
        if checkpoint in self._agreed:
            self._agreed.move_to_end(checkpoint)
            return checkpoint
        if signed is None:
            return checkpoint
        if why := await self._disagreement(
            checkpoint.tenant_id, checkpoint.tree_size, checkpoint.root_hash, signed
        ):
            self._integrity_failures.add(1)
            raise IntegrityFailure(
                f"the checkpoint stored at size {checkpoint.tree_size} of"
                f" {checkpoint.tenant_id!r} is not of the log this server's key signed at size"
                f" {signed[0]}: {why}"
            )
        # Proven once, for good: what the key signs later extends what it signed.
        self._agreed[checkpoint] = None
        while len(self._agreed) > CHECKED_CHECKPOINTS:
            self._agreed.popitem(last=False)
        return checkpoint

    async def _disagreement(
        self, tenant_id: str, size: int, root: bytes, signed: tuple[int, bytes]
    ) -> str | None:
        """Why the tenant's log at `size`, of root `root`, is not the log the
        key signed at `signed`; None if it is."""
        signed_size, signed_root = signed
        if size == signed_size:
            return None if root == signed_root else "another root at that size"
        old, new = sorted([(size, root), (signed_size, signed_root)])
        try:
            async with self._db.system_connection(generic_plans=True) as conn:
                proof = await consistency_proof(conn, tenant_id, old_size=old[0], new_size=new[0])
            verify_consistency(
                old_size=old[0], new_size=new[0], old_root=old[1], new_root=new[1], proof=proof
            )
        except (IntegrityFailure, ProofError) as error:
            return f"no consistency proof between them ({error})"
        return None

    async def proven_consistency(
        self,
        tenant_id: str,
        *,
        old_size: int,
        new_size: int,
        old_root: bytes,
        new_root: bytes,
        proof: list[bytes],
        covering: StoredCheckpoint | None = None,
    ) -> None:
        """IntegrityFailure unless the roots of the tenant's log at `old_size`
        and `new_size`, as the database gives them, are of the log the key
        signed: `proof` (the stored hashes between them) leads from the old to
        the new, and the new is the root at its size of the log `covering` (a
        checkpoint answered at `new_size`) or `remembered` says the key signed,
        or a consistency proof from the stored hashes ties them. A superuser
        who rewrote the log (or a hash of it) had GetConsistencyProof answer
        roots, and a proof, of a history the key never signed (helper-242).
        The proof is checked on every answer (some 2 log n hashes); the roots
        tied to what the key signed, once: a hash of the proof alone rewritten
        after the roots were proven had the proof answered unchecked."""
        fact = (tenant_id, old_size, new_size, old_root, new_root)
        try:
            verify_consistency(
                old_size=old_size,
                new_size=new_size,
                old_root=old_root,
                new_root=new_root,
                proof=proof,
            )
        except ProofError as error:
            self._integrity_failures.add(1)
            raise IntegrityFailure(
                f"the stored hashes of the log of {tenant_id!r} do not prove its size {old_size}"
                f" a prefix of its size {new_size} ({error}): they were changed behind the"
                " service's back"
            ) from error
        if fact in self._consistent:
            self._consistent.move_to_end(fact)
            return
        if covering is not None and covering.tree_size == new_size:
            signed: tuple[int, bytes] | None = (covering.tree_size, covering.root_hash)
            why = None if new_root == covering.root_hash else "another root at that size"
        else:
            signed = await self.remembered(tenant_id)
            why = (
                None
                if signed is None
                else await self._disagreement(tenant_id, new_size, new_root, signed)
            )
        if signed is not None and why:
            self._integrity_failures.add(1)
            raise IntegrityFailure(
                f"the log of {tenant_id!r} at size {new_size}, as the database holds it, is not"
                f" of the log this server's key signed at size {signed[0]}: {why}"
            )
        if signed is not None and new_size <= signed[0]:  # of what the key signed, for good
            self._consistent[fact] = None
            while len(self._consistent) > CHECKED_CHECKPOINTS:
                self._consistent.popitem(last=False)

    async def still_held(self, checkpoint: StoredCheckpoint) -> None:
        """IntegrityFailure unless the tenant's stored hashes give, at
        `checkpoint`'s size, the root it signs: answered as the latest, it
        says the log is that log today. Rewritten under it, head and hashes to
        match, the log is refused by the signer every pass, so the latest stays
        the checkpoint an auditor saved, and `checkpoint --check` of it found
        them equal, no proof asked, and said CONSISTENT (helper-555). One query
        of some log n hashes a call."""
        tenant_id, size = checkpoint.tenant_id, checkpoint.tree_size
        try:
            async with self._db.system_connection(generic_plans=True) as conn:
                root: bytes | None = await root_at(conn, tenant_id, size)
        except IntegrityFailure:  # hashes missing: cut back under it
            root = None
        if root != checkpoint.root_hash:
            self._integrity_failures.add(1)
            log.error(
                "checkpointer: the stored hashes of %s do not give, at size %d, the root its"
                " latest checkpoint signs: the log was rewritten or cut back behind the"
                " service's back",
                self.origin(tenant_id),
                size,
            )
            # Its size named: a bundle shows the tampering against it, asked by size.
            raise IntegrityFailure(
                f"the log no longer holds its latest checkpoint's root at size {size}",
                metadata={"tree_size": str(size)},
            )

    def proven_inclusion(
        self, checkpoint: StoredCheckpoint, *, seq: int, leaf: bytes, proof: list[bytes]
    ) -> None:
        """IntegrityFailure unless `proof` (from the stored hashes) leads the
        leaf of `seq` to the root `checkpoint` (answered beside it, so found
        to be what the key signed) signs. A record rewritten with its leaf,
        the nodes above it and the head to match hashes to its leaf and names
        its seq: it was served beside the genuine checkpoint, its path leading
        to another root, and a client that did not check the proof took the
        forged record as the log's (helper-298). Some log n hashes a proof."""
        try:
            verify_inclusion(
                leaf_index=seq - 1,
                tree_size=checkpoint.tree_size,
                leaf=leaf,
                proof=proof,
                root=checkpoint.root_hash,
            )
        except ProofError as error:
            self._integrity_failures.add(1)
            raise IntegrityFailure(
                f"the stored hashes of the log of {checkpoint.tenant_id!r} do not lead seq {seq}"
                f" to the root its checkpoint at size {checkpoint.tree_size} signs ({error}):"
                " they were changed behind the service's back"
            ) from error

    async def verifiers(self) -> list[Verifier]:
        """Every key known to have signed checkpoints, the active one first."""
        # In issue()'s plan mode: no switch between the two.
        async with self._db.system_connection(generic_plans=True) as conn:
            stored = [Verifier.parse(key.verifier) for key in await known_keys(conn)]
        active = self.signer.verifier
        return [active, *(key for key in stored if key != active)]

    async def issue(self, tenant_id: str) -> StoredCheckpoint | None:
        """A checkpoint covering every committed event of the tenant: the latest
        one if the log has not grown since, else a newly signed one.
        TENANT_ERASED if the tenant was erased as this read its log: an
        erasure that commits between the reads of the head and of the latest
        checkpoint leaves a head to sign with none of its hashes, which is
        not tampering. A head still there is: a receipt does not excuse it
        (a restore that brought back part of an erased tenant)."""
        try:
            return await self._issue(tenant_id)
        except IntegrityFailure:
            await self._refuse_if_erased_meanwhile(tenant_id)
            self._integrity_failures.add(1)
            raise

    async def _refuse_if_erased_meanwhile(self, tenant_id: str) -> None:
        """TENANT_ERASED if the tenant's head is gone and its erasure's
        receipt is there: what failed was read as the erasure committed."""
        async with self._db.system_connection() as conn:
            cursor = await conn.execute("SELECT FROM chain_heads WHERE tenant_id = %s", [tenant_id])
            if await cursor.fetchone() is None:
                await refuse_if_erased(conn, tenant_id)

    async def check_may_state(
        self, tenant_id: str, *, head: tuple[int, bytes] | None = None
    ) -> None:
        """IntegrityFailure unless the tenant's log, at `head` (its size and
        root) or as it stands, is or extends the largest checkpoint of it the
        key signed or served, as kept outside the database. What else the key
        signs of a log (a purge's statement, an erasure's receipt) must not
        contradict what it signed of it, as a checkpoint must not: after a
        restore, a receipt that the log ended at size 0, under the key that
        signed it at size 5 (ADR 0083). TENANT_ERASED, as `issue` says, if
        the tenant was erased as this read its log: a purge recorded just
        after its tenant's erasure is no log changed behind the service's
        back (it counted an integrity failure naming a restore)."""
        try:
            async with (
                self._db.system_connection(generic_plans=True) as conn,
                conn.transaction(),
            ):
                if head is None:
                    cursor = await conn.execute(
                        "SELECT tree_size, root_hash FROM chain_heads WHERE tenant_id = %s",
                        [tenant_id],
                    )
                    row = await cursor.fetchone()
                    head = (int(row[0]), bytes(row[1])) if row else (0, b"")
                await self._check_signed_sizes(conn, tenant_id, *head)
        except IntegrityFailure:
            await self._refuse_if_erased_meanwhile(tenant_id)
            self._integrity_failures.add(1)
            raise

    async def keep_purge_statement(self, tenant_id: str, statement: PurgeStatement) -> None:
        """`statement` noted outside the database as what the key states of
        its purge, before it is signed; IntegrityFailure if the key stated
        that purge of the log otherwise. A purge's summary a backup kept from
        between two of its batches, restored, would be stated again with
        fewer leaves, of a log that extends all the key signed of it if no
        checkpoint was signed after the first statement (ADR 0083)."""
        if self._signed_sizes is None:
            return
        removed = statement.removed
        stated = f"{removed.count} {hashlib.sha256(str(removed.digest).encode()).hexdigest()}"
        try:
            before = await self._signed_sizes.keep_purge_async(
                tenant_id, statement.purge_id, stated
            )
        except SignedSizesError as error:
            if not error.repeated:  # a file refused, said once
                log.error("checkpointer: %s", error)
            raise Unavailable(
                f"refusing to sign a statement of purge {statement.purge_id} of"
                f" {self.origin(tenant_id)}: it cannot be noted outside the database first"
                f" ({error})",
                retry_after=SIGNED_SIZES_RETRY_SECONDS,
            ) from error
        if before is not None:
            self._integrity_failures.add(1)
            raise IntegrityFailure(
                f"refusing to sign a statement of purge {statement.purge_id} of"
                f" {self.origin(tenant_id)}: this signing key stated that it removed"
                f" {before.split()[0]} events, and its summary now says {removed.count}, with"
                " other leaves: the database no longer holds what the purge removed when the"
                " key stated it. It was restored from an older backup, or a replica that"
                " lagged was promoted. Signing it would give auditors two statements of one"
                " purge that disagree, under one key. Restore the lost transactions if they"
                " are anywhere; else record it with a new key (docs/operations.md, Restoring"
                " an older backup)"
            )

    async def _issue(self, tenant_id: str) -> StoredCheckpoint | None:
        verifiers = await self.verifiers()
        # Nothing is written before the signature but the rows set aside as
        # forged (`_latest_signed`): a refusal commits them set aside, so that
        # each costs one check, not one a pass.
        refusal: IntegrityFailure | None = None
        # Every read and write by key: a generic plan serves every tenant and
        # size (ADR 0032).
        async with (
            self._db.system_connection(generic_plans=True) as conn,
            conn.transaction(),
        ):
            try:
                # One issuer per tenant at a time, across processes.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7)),"
                    " set_config('idle_in_transaction_session_timeout', %s, true)",
                    [tenant_id, f"{max(1, round(IDLE_IN_ISSUE_SECONDS * 1000))}ms"],
                )
                cursor = await conn.execute(
                    "SELECT tree_size, root_hash FROM chain_heads WHERE tenant_id = %s", [tenant_id]
                )
                head = await cursor.fetchone()
                size, head_root = (int(head[0]), bytes(head[1])) if head else (0, b"")
                if head is None:
                    cursor = await conn.execute(
                        "SELECT FROM tenant_erasures WHERE tenant_id = %s", [tenant_id]
                    )
                    if await cursor.fetchone() is not None:  # erased: nothing to sign
                        self._remembered.pop(tenant_id, None)
                        latest = await self._latest_signed(conn, tenant_id, None, verifiers)
                        return None if latest is None else await self.served(latest, verifiers)
                # No head and no erasure: never written, or its log removed behind
                # the key's back (its head, events and checkpoints deleted), which
                # is a log of size 0 that must extend what the key signed of it as
                # any other. It was forgotten here, and answered "the log is empty".
                # A log cut back under what the key signed is found by what the
                # key signed (`_check_signed_sizes`, `_check_remembered`), never by
                # a row beyond the log: any key in `signing_keys` signs one.
                latest = await self._latest_signed(conn, tenant_id, size, verifiers)
                if latest is not None and latest.tree_size == size:
                    if head_root != latest.root_hash:  # rewritten under it, head and all
                        raise IntegrityFailure(
                            f"the head of the log of {tenant_id!r} at size {size} holds another"
                            " root than its checkpoint at that size signs: the log was rewritten"
                        )
                    await self._check_signed_sizes(conn, tenant_id, size, latest.root_hash)
                    await self._check_remembered(conn, tenant_id, size, latest.root_hash)
                    await self._keep_signed_size(tenant_id, size, latest.root_hash)
                    return latest
                if size == 0:
                    await self._check_signed_sizes(conn, tenant_id, 0, b"")
                    await self._check_remembered(conn, tenant_id, 0, b"")
                    return latest
                root = await root_at(conn, tenant_id, size)
                if root != head_root:
                    raise IntegrityFailure(
                        f"the stored tree of {tenant_id!r} does not match its head at size {size}"
                    )
                proven = None
                if latest is not None:
                    proven = await self._check_extends(
                        conn, tenant_id, latest, size, root, verifiers
                    )
                await self._check_signed_sizes(conn, tenant_id, size, root, proven=proven)
                await self._check_remembered(conn, tenant_id, size, root, proven=proven)
                note = sign_note(
                    format_checkpoint(Checkpoint(self.origin(tenant_id), size, root)), self.signer
                )
                # Kept before the signature leaves: in the database, or to the caller.
                await self._keep_signed_size(tenant_id, size, root)
                checkpoint = StoredCheckpoint(tenant_id, size, root, note, self._clock())
                await insert_checkpoint(conn, checkpoint, key=self.signer.verifier)
            except IntegrityFailure as error:
                refusal = error
        if refusal is not None:
            raise refusal
        self._signed.add(1)
        log.debug("signed checkpoint %s at size %d", self.origin(tenant_id), size)
        return checkpoint

    async def _latest_signed(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant_id: str,
        size: int | None,
        verifiers: list[Verifier],
    ) -> StoredCheckpoint | None:
        """The tenant's largest stored checkpoint within its log (of a size up
        to `size`, the log's; any, if None: an erased log's) whose note signs
        what its row says (`served`). A row above it that does not is a
        superuser's: set aside (`_set_aside`), once, its slot free for the
        genuine signature. Rows beyond the log are passed over unchecked,
        whatever their number (`_pass_over_beyond`). The starting point was the
        largest row, signed or not: one with a note changed stopped the
        signer, one at size 10^12 had the log said cut back, and the events
        recorded meanwhile, never signed, were the superuser's to rewrite
        before the row was mended (helper-555). Passed over but left in place,
        rows planted at each coming size refused each signature (their slots
        taken) and more than 64 the tenant, each pass (ADR 0156). What the key
        itself signed (`_check_signed_sizes`, `_check_remembered`) is checked
        after."""
        if size is not None:
            await self._pass_over_beyond(conn, tenant_id, size)
        fetched, at_most = 1, size
        while True:
            rows = await latest_checkpoints(conn, tenant_id, limit=fetched, at_most=at_most)
            for row in rows:
                try:
                    return await self.served(row, verifiers)
                except IntegrityFailure as error:
                    await self._set_aside(conn, row, error.message)
            if len(rows) < fetched:
                return None  # every stored row set aside
            # Below the rows read: one changed as it was set aside stays for the next pass.
            fetched, at_most = ROWS_CHECKED_A_READ, rows[-1].tree_size - 1

    async def _set_aside(
        self, conn: psycopg.AsyncConnection[Any], row: StoredCheckpoint, why: str
    ) -> None:
        """`row`, whose note does not sign what it says (`why`), moved to
        `checkpoints_refused` (ADR 0159): logged and counted once, as the move
        commits with the issue (or its refusal); VerifyLog reports it there."""
        if await refuse_checkpoint(conn, row, why=why):
            self._integrity_failures.add(1)
            log.error("checkpointer: %s: not the key's, set aside in checkpoints_refused", why)

    async def _pass_over_beyond(
        self, conn: psycopg.AsyncConnection[Any], tenant_id: str, size: int
    ) -> None:
        """The tenant's stored checkpoints beyond its log's `size`: logged,
        counted as failures and passed over, whoever signed them. Any key in
        `signing_keys`, which the service's role may write, is one `served`
        trusts, and checking each row would cost a signature a row. A log cut
        back under what the active key signed is found by what it signed, as
        this process remembers it or the kept file holds it, not by a row."""
        count, largest = await checkpoints_beyond(conn, tenant_id, size)
        if not count:
            return
        self._integrity_failures.add(count)
        log.error(
            "checkpointer: %s of %r beyond its log's size %d, the largest at size %d: passed over",
            counted(count, "stored checkpoint"),
            tenant_id,
            size,
            largest,
        )

    async def _check_remembered(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant_id: str,
        size: int,
        root: bytes,
        *,
        proven: tuple[int, bytes] | None = None,
    ) -> None:
        """Remember (`size`, `root`) as the tenant's latest checkpoint, if it
        extends the one remembered (as `proven`, the size and root it was just
        proven to extend, may say already); else IntegrityFailure: the log, or
        its checkpoints, changed behind the service's back since this process
        signed or served that one."""
        remembered = self._remembered.get(tenant_id)
        if remembered is not None and remembered not in ((size, root), proven):
            known_size = remembered[0]
            where = f"{self.origin(tenant_id)} at size {size}"
            if size <= known_size:
                raise IntegrityFailure(
                    f"refusing {where}: this server signed or served size {known_size}"
                    f" ({'a different root' if size == known_size else 'a longer log'});"
                    " the log or its checkpoints were changed behind its back"
                )
            if why := await self._not_extending(conn, tenant_id, remembered, size, root):
                raise IntegrityFailure(
                    f"refusing {where}: it does not extend the checkpoint at size"
                    f" {known_size} this server signed or served ({why})"
                )
        if size:
            self._remembered[tenant_id] = (size, root)
            self._remembered.move_to_end(tenant_id)
            if len(self._remembered) > REMEMBERED_TENANTS:
                self._remembered.popitem(last=False)

    async def _not_extending(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant_id: str,
        known: tuple[int, bytes],
        size: int,
        root: bytes,
    ) -> str | None:
        """Why the log at (`size`, `root`), `size` beyond `known`'s, does not
        extend `known`; None if it does."""
        known_size, known_root = known
        try:
            verify_consistency(
                old_size=known_size,
                new_size=size,
                old_root=known_root,
                new_root=root,
                proof=await consistency_proof(conn, tenant_id, old_size=known_size, new_size=size),
            )
        except ProofError as error:
            return str(error)
        return None

    async def _check_signed_sizes(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant_id: str,
        size: int,
        root: bytes,
        *,
        proven: tuple[int, bytes] | None = None,
    ) -> None:
        """IntegrityFailure unless (`size`, `root`) is, or extends, the largest
        checkpoint of the tenant's log the key signed or served, as kept
        outside the database (`proven`: what it was just proven to extend).
        The database forgot it: restored from an older backup, a lagging
        replica promoted, or its rows deleted. Signing on would give two
        checkpoints of one log that disagree, under one key (ADR 0080)."""
        if self._signed_sizes is None:
            return
        erased = await self._read_erasure(tenant_id)
        if erased is not None and erased[2]:
            self._integrity_failures.add(1)
            raise IntegrityFailure(
                erased_message(self.origin(tenant_id), erased[0], erased[1], size)
            )
        kept = await self._read_signed_size(tenant_id)
        if kept is None or kept in ((size, root), proven):
            return
        kept_size, kept_root = kept
        if size > kept_size:
            why = await self._not_extending(conn, tenant_id, kept, size, root)
            if why is None:
                return
            what = f"the log at size {size} does not extend it ({why})"
        elif size == kept_size:
            what = "the log holds another root at that size"
        else:
            what = f"the log holds {size} events"
        # Remembered as signed here: its stored checkpoints are refused too,
        # and VerifyLog checks the log against it.
        self._remembered[tenant_id] = kept
        self._remembered.move_to_end(tenant_id)
        origin = self.origin(tenant_id)
        if size < kept_size:
            raise IntegrityFailure(restored_message(origin, kept_size, kept_root, what))
        # As long as what the key signed, or longer: nothing lost, the log
        # rewritten, which a new key (the way on after a restore) would sign.
        log.error("checkpointer: %s", rewritten_message(origin, kept_size, kept_root, what))
        raise IntegrityFailure(
            f"refusing to sign: this signing key signed it at size {kept_size}, and the log was"
            " rewritten"
        )

    def _say_mended(self) -> None:
        """Says, once, each file of what the key signed that was refused
        (said once for each state it was in: SignedSizesError.repeated) and
        reads again."""
        assert self._signed_sizes is not None
        for path in self._signed_sizes.mended():
            log.info("checkpointer: %s reads again", path)

    async def _read_signed_size(self, tenant_id: str) -> tuple[int, bytes] | None:
        assert self._signed_sizes is not None
        try:
            kept = await self._signed_sizes.read_async(tenant_id)
        except SignedSizesError as error:  # the disk's fault, not the log's
            if not error.repeated:  # a file refused, said once
                log.error("checkpointer: %s", error)
            raise Unavailable(
                f"refusing to sign {self.origin(tenant_id)}: what the key signed of it cannot"
                f" be read ({error})",
                retry_after=SIGNED_SIZES_RETRY_SECONDS,
            ) from error
        self._say_mended()
        return kept

    async def _read_erasure(self, tenant_id: str) -> tuple[int, bytes, bool] | None:
        assert self._signed_sizes is not None
        try:
            kept = await self._signed_sizes.read_erasure_async(tenant_id)
        except SignedSizesError as error:  # the disk's fault, not the log's
            if not error.repeated:  # a file refused, said once for each state it is in
                log.error("checkpointer: %s", error)
            raise Unavailable(
                f"refusing to sign {self.origin(tenant_id)}: what the key signed of it cannot"
                f" be read ({error})",
                retry_after=SIGNED_SIZES_RETRY_SECONDS,
            ) from error
        self._say_mended()
        return kept

    async def keep_erasure(self, tenant_id: str, size: int, root: bytes, *, released: bool) -> None:
        """The tenant's erasure at (`size`, `root`) kept outside the database:
        before its receipt is signed (Unavailable if it cannot be), and, once
        the erasure committed, as `released`: from then on the key signs
        nothing more of the log, should a restore bring it back. One never
        released (the erasure died before its commit) refuses nothing: nobody
        holds that receipt (ADR 0083)."""
        if self._signed_sizes is None:
            return
        try:
            await self._signed_sizes.write_erasure_async(tenant_id, size, root, released=released)
        except SignedSizesError as error:
            if not error.repeated:  # a file refused, said once
                log.error("checkpointer: %s", error)
            raise Unavailable(
                f"refusing to sign the erasure of {self.origin(tenant_id)}: it cannot be"
                f" noted outside the database ({error})",
                retry_after=SIGNED_SIZES_RETRY_SECONDS,
            ) from error

    async def _keep_signed_size(self, tenant_id: str, size: int, root: bytes) -> None:
        """(`size`, `root`) kept outside the database as the largest the key
        signed or served of the tenant's log; a signature not kept is not
        released (IntegrityFailure)."""
        if self._signed_sizes is None or not size:
            return
        try:
            await self._signed_sizes.write_async(tenant_id, size, root)
            self._note_kept(tenant_id, (size, root), time.monotonic())
        except SignedSizesError as error:
            if not error.repeated:  # a file refused, said once
                log.error("checkpointer: %s", error)
            raise Unavailable(
                f"refusing to sign {self.origin(tenant_id)} at size {size}: it cannot be noted"
                f" outside the database first ({error})",
                retry_after=SIGNED_SIZES_RETRY_SECONDS,
            ) from error

    async def _find_restored_logs(self) -> None:
        """At start: each tenant whose largest checkpoint kept outside the
        database is not in it (no stored checkpoint at that size with that
        root, nor the root at that size of its log: a checkpoint's row lost
        alone is no loss), named in an error and remembered as signed, so that
        this process refuses to serve or prove what the database holds of it
        as it refuses to sign it. A tenant erased since is left alone. The
        first RESTORED_SCAN_BATCH tenants (in order) before the start goes on,
        the rest after it, a batch at a time; until a tenant's turn comes,
        `remembered` checks it on its own. A tenant whose erasure's file
        cannot be read is named in an error, and refused until it can be
        (`_erasure_read_again`); every other tenant's erasure is checked.
        SystemExit if either directory cannot be listed: which tenants were
        erased, or signed, is not known of any."""
        if self._signed_sizes is None:
            return
        signed_sizes = self._signed_sizes
        try:
            tenants = sorted(await asyncio.to_thread(signed_sizes.tenants))
        except SignedSizesError as error:
            raise SystemExit(f"SEALTRAIL_SIGNED_CHECKPOINTS_DIR: {error}") from None
        try:
            kept_erasures = await asyncio.to_thread(signed_sizes.erasures)
        except SignedSizesError as error:
            raise SystemExit(f"SEALTRAIL_SIGNED_CHECKPOINTS_DIR: {error}") from None
        erased = kept_erasures.erased
        for tenant_id, why in sorted(kept_erasures.unreadable.items()):
            log.error("%s", unread_erasure_message(self.origin(tenant_id), why))
        self._erasures_unread = set(kept_erasures.unreadable)
        await self._check_kept(tenants[:RESTORED_SCAN_BATCH], erased)
        rest = [tenant_id for tenant_id in tenants[RESTORED_SCAN_BATCH:] if tenant_id not in erased]
        if rest:
            self._erased_at_start = frozenset(erased)
            self._unchecked_from = rest[0]
            self._scan = asyncio.create_task(
                self._check_rest(rest), name="sealtrail-checkpointer-restored-logs"
            )

    async def _check_rest(self, tenants: list[str]) -> None:
        """`_check_kept` of `tenants` (in order), a batch at a time, once the
        start served; a batch the database failed, again after a while."""
        for start in range(0, len(tenants), RESTORED_SCAN_BATCH):
            batch = tenants[start : start + RESTORED_SCAN_BATCH]
            batch = [t for t in batch if t not in self._checked_alone]
            while True:
                try:
                    await self._check_kept(batch, {})
                    break
                except SealtrailError as error:
                    log.error(
                        "checkpointer: checking what the key signed of each log: %s;"
                        " again in %.0f s",
                        error.message,
                        SIGNED_SIZES_RETRY_SECONDS,
                    )
                    await asyncio.sleep(SIGNED_SIZES_RETRY_SECONDS)
            following = start + RESTORED_SCAN_BATCH
            if following >= len(tenants):
                break
            self._unchecked_from = tenants[following]
            self._checked_alone = {t for t in self._checked_alone if t >= tenants[following]}
        self._unchecked_from = None
        self._checked_alone = set()
        self._erased_at_start = frozenset()

    async def _check_kept(self, tenants: list[str], erased: dict[str, tuple[int, bytes]]) -> None:
        """Each of `tenants` whose kept checkpoint the database does not hold
        (and each of `erased` it holds no erasure of: `restored_logs`), named
        in an error and remembered as signed. Their files read in one thread."""
        assert self._signed_sizes is not None
        kept = await asyncio.to_thread(_read_kept, self._signed_sizes, tenants)
        if not kept and not erased:
            return
        async with self._db.system_connection() as conn:
            found = await restored_logs(conn, self.signer.verifier, kept, erased)
        for restored in found:
            origin = self.origin(restored.tenant_id)
            size, root = restored.signed_size, restored.signed_root
            log.error(
                "%s",
                erased_message(origin, size, root, restored.log_size)
                if restored.erased
                else rewritten_message(origin, size, root, restored.what)
                if restored.rewritten
                else restored_message(origin, size, root, restored.what),
            )
            self._remembered[restored.tenant_id] = (size, root)
            self._remembered.move_to_end(restored.tenant_id)

    async def _check_extends(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant_id: str,
        latest: StoredCheckpoint,
        size: int,
        root: bytes,
        verifiers: list[Verifier],
    ) -> tuple[int, bytes]:
        """The size and root `latest`'s note signs, which (`size`, `root`) extends;
        else IntegrityFailure."""
        try:
            text, _ = open_note(latest.note, verifiers)
            signed = parse_checkpoint(text)
            proof = await consistency_proof(
                conn, tenant_id, old_size=signed.tree_size, new_size=size
            )
            verify_consistency(
                old_size=signed.tree_size,
                new_size=size,
                old_root=signed.root_hash,
                new_root=root,
                proof=proof,
            )
        except (NoteError, ProofError) as error:
            raise IntegrityFailure(
                f"refusing to sign {self.origin(tenant_id)} at size {size}: it does not extend"
                f" the checkpoint at size {latest.tree_size} ({error})"
            ) from error
        return signed.tree_size, signed.root_hash

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                # In issue()'s plan mode, which comes next: no switch between.
                async with self._db.system_connection(generic_plans=True) as conn:
                    tenants = await tenants_grown_since_checkpoint(conn)
            except SealtrailError as error:
                log.error("checkpointer: %s", error.message)
                continue
            for tenant_id in tenants:
                try:
                    await self.issue(tenant_id)
                except SealtrailError as error:  # one tenant's trouble must not stop the others
                    if error.reason == "TENANT_ERASED":  # since the tenants were listed
                        log.debug("checkpointer: %s", error.message)
                        continue
                    log.error("checkpointer: %s", error.message)
                except Exception:
                    log.exception("checkpointer: unexpected failure for %r", tenant_id)


def _read_kept(signed_sizes: SignedSizes, tenants: list[str]) -> dict[str, tuple[int, bytes]]:
    """The size and root kept of each of `tenants` that has one; a file that
    cannot be read is logged, and its tenant's checkpoints refused as each
    is asked for, not the start."""
    kept = {}
    for tenant_id in tenants:
        try:
            size_and_root = signed_sizes.read(tenant_id)
        except SignedSizesError as error:
            if not error.repeated:
                log.error("checkpointer: %s; its checkpoints are refused", error)
            continue
        if size_and_root is not None:
            kept[tenant_id] = size_and_root
    return kept


@dataclass(frozen=True, slots=True)
class RestoredLog:
    """A tenant's log that does not extend the largest checkpoint of it the
    key signed (ADR 0080): the database forgot what the key signed."""

    tenant_id: str
    signed_size: int  # the largest size the key signed (or served) of the log
    signed_root: bytes  # and the root it signed at that size
    log_size: int  # the log's size now
    # The first size at which the key's checkpoints are not this log's: one
    # past the largest checkpoint by the key the database still holds and the
    # log still has (1 if none). From there to `signed_size`, what auditors
    # hold of the key's is of the lost log.
    lost_from: int
    what: str  # what the log holds instead, for messages
    # The key signed the log's erasure at `signed_size` (none of its sizes was
    # lost: it is past them that the key signs nothing); `lost_from` is 0.
    erased: bool = False
    # The log holds `signed_size` events or more, not the ones the key signed:
    # rewritten, not cut back (nothing lost; `lost_from` is where the key's
    # checkpoints stop being of this log).
    rewritten: bool = False


async def restored_logs(
    conn: psycopg.AsyncConnection[Any],
    key: Verifier,
    kept: dict[str, tuple[int, bytes]],
    erased: dict[str, tuple[int, bytes]] | None = None,
) -> list[RestoredLog]:
    """Of `kept` (tenant: the size and root `key` signed of its log, as kept
    outside the database), the logs that do not hold them: no stored
    checkpoint at that size with that root, and not the root at that size of
    the log (a checkpoint's row lost alone is no loss). Erased tenants are left
    alone. And of `erased` (tenant: the final size and root of its erasure the
    key signed), those the database holds no erasure of. A thousand tenants a
    query; `conn` a system connection."""
    erased = erased or {}
    found: list[RestoredLog] = []
    back = list(erased)
    for start in range(0, len(back), 1000):
        cursor = await conn.execute(
            "SELECT t.id, coalesce(h.tree_size, 0) FROM unnest(%s::text[]) AS t(id)"
            " LEFT JOIN chain_heads h ON h.tenant_id = t.id"
            " WHERE NOT EXISTS (SELECT FROM tenant_erasures e WHERE e.tenant_id = t.id)",
            [back[start : start + 1000]],
        )
        for tenant_id, head_size in await cursor.fetchall():
            size, root = erased[tenant_id]
            what = "the key signed its erasure at that size"
            found.append(RestoredLog(tenant_id, size, root, int(head_size), 0, what, True))
    tenants = [tenant_id for tenant_id in kept if tenant_id not in erased]
    for start in range(0, len(tenants), 1000):
        some = tenants[start : start + 1000]
        cursor = await conn.execute(
            "SELECT t.id, coalesce(h.tree_size, 0)"
            " FROM unnest(%s::text[], %s::bigint[], %s::bytea[]) AS t(id, size, root)"
            " LEFT JOIN chain_heads h ON h.tenant_id = t.id"
            " WHERE NOT EXISTS (SELECT FROM checkpoints c WHERE c.tenant_id = t.id"
            "   AND c.tree_size = t.size AND c.root_hash = t.root)"
            " AND NOT EXISTS (SELECT FROM tenant_erasures e WHERE e.tenant_id = t.id)"
            " ORDER BY t.id",
            [some, [kept[t][0] for t in some], [kept[t][1] for t in some]],
        )
        for tenant_id, head_size in await cursor.fetchall():
            kept_size, kept_root = kept[tenant_id]
            if head_size < kept_size:
                what = f"the log holds {head_size} events"
            elif await root_at(conn, tenant_id, kept_size) != kept_root:
                what = "the log holds another root at that size"
            else:
                continue  # its checkpoint's row lost, not its log
            rewritten = head_size >= kept_size
            cursor = await conn.execute(
                "SELECT tree_size, root_hash FROM checkpoints WHERE tenant_id = %s"
                " AND key_id = %s AND tree_size < %s AND tree_size <= %s"
                " ORDER BY tree_size DESC LIMIT 1",
                [tenant_id, key.key_id, kept_size, head_size],
            )
            held = await cursor.fetchone()
            lost_from = 1
            if held is not None and await root_at(conn, tenant_id, int(held[0])) == bytes(held[1]):
                lost_from = int(held[0]) + 1
            found.append(
                RestoredLog(
                    tenant_id,
                    kept_size,
                    kept_root,
                    int(head_size),
                    lost_from,
                    what,
                    rewritten=rewritten,
                )
            )
    return sorted(found, key=lambda restored: restored.tenant_id)


def erased_message(origin: str, size: int, root: bytes, log_size: int) -> str:
    """Why a log is refused whose erasure the key signed, the database holding
    `log_size` events of it and no record of that erasure. With none, the
    database holds nothing of the log either: it said "the database holds it
    still" of a tenant restored from before its first event (helper-242)."""
    if log_size:
        held = (
            f" the database holds {counted(log_size, 'event')} of it still. It was restored from"
            " a backup taken before the erasure, or a replica that lagged was promoted."
        )
    else:
        held = (
            " the database holds no event of it and no record of that erasure. It was"
            " restored from a backup taken before the tenant's first event, a replica that"
            " lagged was promoted, or the tenant's rows (its erasure's with them) were"
            " removed behind the service's back."
        )
    return (
        f"refusing to sign {origin}: this signing key signed the erasure of it, at size"
        f" {size} (root {base64.b64encode(root).decode()}): the log ended there, and"
        f"{held} Signing it on would give auditors"
        " a receipt that the log ended and another statement of it, under one key, so"
        " nothing more is signed of it with this key. Erase the tenant again with a new"
        " key (docs/operations.md, Restoring an older backup)"
    )


def unread_erasure_message(origin: str, error: SignedSizesError) -> str:
    """Why a tenant is refused whose erasure's file a start could not read."""
    return (
        f"checkpointer: {error}: whether this signing key signed the erasure of {origin}"
        " cannot be told, so its checkpoints and proofs are refused (UNAVAILABLE) until the"
        ' file reads as "<size> <root> erased" (or "erasing"): put back the file from a copy'
        " of the directory, or mend its owner or mode if that is what is wrong; remove it"
        " only if the tenant was never erased (docs/operations.md, Restoring an older backup)"
    )


def rewritten_message(origin: str, kept_size: int, kept_root: bytes, what: str) -> str:
    """Why a log is refused that holds as many events as the key signed of it,
    or more, but not the ones it signed. Said "restored from an older backup
    ... sign the restored log with a new key", as a log cut back is, though
    nothing was lost: a new key is exactly what would sign the rewrite
    (helper-555)."""
    return (
        f"refusing to sign {origin}: this signing key signed it at size {kept_size}"
        f" (root {base64.b64encode(kept_root).decode()}), and {what}: the log was REWRITTEN"
        " behind the service's back. It holds as many events as the key signed, or more,"
        " but not the ones it signed (or it was restored from an older backup and has grown"
        " past that size since). Signing it on would give auditors two checkpoints of one"
        " log that disagree, under one key, so nothing more is signed of it with this key;"
        " and a new key would sign the rewritten history as the log's. Find what was"
        " rewritten (sealtrail verify-log) and put the log the key signed back from a backup"
        " or the archived WAL; change the key only once the log is the one it signed, or"
        " known to be a restore (docs/operations.md, A log rewritten behind the service)"
    )


def restored_message(origin: str, kept_size: int, kept_root: bytes, what: str) -> str:
    """Why a log is refused that does not extend what the key signed of it."""
    return (
        f"refusing to sign {origin}: this signing key signed it at size {kept_size}"
        f" (root {base64.b64encode(kept_root).decode()}), and {what}: the database no longer"
        " holds the log the key signed. It was restored from an older backup, a replica that"
        " lagged was promoted, or the log was cut back or rewritten. Signing it on would give"
        " auditors two checkpoints of one log that disagree, under one key, so nothing more"
        " is signed of it with this key. Restore the lost transactions if they are anywhere"
        " (the archived WAL, the old primary); else sign the restored log with a new key and"
        " tell the auditors which sizes were lost (docs/operations.md, Restoring an older"
        " backup)"
    )
