"""The GetReceivedRange RPC: the seqs of the events received in a period, the
range an Export of first_seq..last_seq then proves complete ("every event
received in November", ADR 0068). Time is only how the range is chosen, as
StreamEvents' `since` chooses where to start: what a bundle proves is the
range of seqs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc

from sealtrail.v1 import audit_service_pb2 as pb

from ..auth.tokens import rfc3339
from ..domain.errors import InvalidArgument
from ..domain.event import checked_bound
from ..store.changes import refuse_if_erased_now
from ..store.database import Database
from ..store.events import received_range, time_once_appended
from .guard import current_principal

Context = grpc.aio.ServicerContext[Any, Any]

# How long the call waits for the tenant's append in flight to commit before
# it answers UNAVAILABLE (retry): an append commits in milliseconds, or at
# most a large batch's second or two.
HEAD_WAIT_SECONDS = 5.0


class ReceivedRangeRpcs:
    _db: Database
    _clock: Callable[[], datetime]

    async def GetReceivedRange(
        self, request: pb.GetReceivedRangeRequest, context: Context
    ) -> pb.GetReceivedRangeResponse:
        tenant_id = current_principal().tenant_id
        if not request.HasField("since"):
            raise InvalidArgument.field("since", "must be set: the period's start")
        since = checked_bound(request.since.seconds, request.since.nanos, field="since")
        # The time once every event stamped before it is committed, so that
        # the range read after holds each one received before `until`.
        now = await time_once_appended(
            self._db, tenant_id=tenant_id, clock=self._clock, seconds=HEAD_WAIT_SECONDS
        )
        until: datetime | None = None
        if request.HasField("until"):
            until = checked_bound(request.until.seconds, request.until.nanos, field="until")
            if until > now:
                # Events received in the rest of the period would be left out
                # of a range that says it is the period's.
                raise InvalidArgument.field(
                    "until",
                    "has not ended: leave it unset for the period so far (server time"
                    f" {rfc3339(now)})",
                )
            if until < since:
                raise InvalidArgument.field("until", "must not be before since")
        elif since > now:
            raise InvalidArgument.field("since", f"is after the server's time ({rfc3339(now)})")
        # Unset, the period so far: every event the log holds now (one received
        # in this very millisecond too, which a bound of `now` would leave out).
        found = await received_range(self._db, tenant_id=tenant_id, since=since, until=until)
        if found.size == 0:
            await refuse_if_erased_now(self._db, tenant_id)  # a log gone, not an empty one
        response = pb.GetReceivedRangeResponse(
            first_seq=found.first, last_seq=found.last, tree_size=found.size
        )
        response.since.FromDatetime(since)
        response.until.FromDatetime(now if until is None else until)
        return response
