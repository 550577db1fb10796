"""What the RPCs say is removed by retention is retention's: each that says
so of a removed seq (an export's signed count, a proof's PURGED, a stream's
cursor refused as PURGED or its range announced, a replay's record) first
holds the seqs to retention's records (store/removals_accounted.py, ADR
0158), and refuses, DATA_LOSS, where they do not account for them. A proof
with include_purged does not: it proves a leaf, not who removed it."""

from __future__ import annotations

from ..domain.errors import IntegrityFailure
from ..domain.purge_summaries import SummarySeal
from ..integrity.checkpointer import Checkpointer
from ..store.database import Connection
from ..store.removals_accounted import RecordedPurges, unaccounted_removals


class RemovalsSaid:
    """Holds what a call says retention removed to retention's records, the
    records' statements verified once a tenant's set of them."""

    def __init__(self, checkpointer: Checkpointer, seal: SummarySeal) -> None:
        self._checkpointer = checkpointer
        self._seal = seal
        self._recorded = RecordedPurges()

    async def refuse_unaccounted(
        self,
        conn: Connection,
        tenant_id: str,
        *,
        after_seq: int,
        upto_seq: int,
        refusing: str = "",
    ) -> None:
        """IntegrityFailure unless retention's records account for every seq
        of (after_seq, upto_seq] removed with its leaf kept; `refusing` leads
        what it says (what is refused, as "refusing to sign the export: ")."""
        why = await unaccounted_removals(
            conn,
            tenant_id,
            after_seq=after_seq,
            upto_seq=upto_seq,
            origin=self._checkpointer.origin(tenant_id),
            verifiers=await self._checkpointer.verifiers(),
            seal=self._seal,
            recorded=self._recorded,
        )
        if why is not None:
            raise IntegrityFailure(refusing + why)
