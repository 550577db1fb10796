"""What the RPCs say is removed by retention is retention's: each that says
so of a removed seq (an export's signed count, a proof's PURGED, a stream's
cursor refused as PURGED, a replay's record) first holds the seqs to
retention's records (store/removals_accounted.py, ADR 0158), and refuses,
DATA_LOSS, where they do not account for them."""

from __future__ import annotations

from ..domain.errors import IntegrityFailure
from ..domain.purge_summaries import SummarySeal
from ..integrity.checkpointer import Checkpointer
from ..store.database import Connection
from ..store.removals_accounted import unaccounted_removals


async def refuse_unaccounted_removals(
    conn: Connection,
    checkpointer: Checkpointer,
    seal: SummarySeal,
    tenant_id: str,
    *,
    after_seq: int,
    upto_seq: int,
    refusing: str = "",
) -> None:
    """IntegrityFailure unless retention's records account for every seq of
    (after_seq, upto_seq] removed with its leaf kept; `refusing` leads what
    it says (what is refused, as "refusing to sign the export: ")."""
    why = await unaccounted_removals(
        conn,
        tenant_id,
        after_seq=after_seq,
        upto_seq=upto_seq,
        origin=checkpointer.origin(tenant_id),
        verifiers=await checkpointer.verifiers(),
        seal=seal,
    )
    if why is not None:
        raise IntegrityFailure(refusing + why)
