"""The CountEvents RPC: how many of the caller's events match a filter, in all
and grouped, counted by the database (store/counts.py). It reads the log as
Query does, so it is recorded as Query is (ADR 0012): `audit_log.queried`,
its details naming the RPC, the filter (redacted as the tenant's events are),
the grouping, the limit, the time zone of its days and hours if it names
one (ADR 0103), the measure of its groups' durations if it asks one, and
the details key it groups by or measures, if it names one (ADR 0161).
The record is written first and the count is of the log before it: a count
never counts itself, and an investigator's counts are as visible as their
queries (ADR 0063)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import grpc

from sealtrail.v1 import audit_service_pb2 as pb

from ..domain.counts import DETAIL_MEASURES, GroupBy, Measure, detail_key_refusal, group_limit
from ..domain.errors import InvalidArgument
from ..domain.zones import is_time_zone, not_a_time_zone
from ..store.appender import Appender
from ..store.counts import count_events
from ..store.database import Database
from ..store.long_reads import LongReads
from .audited import FilterDetails, record_access
from .callers import from_this_console
from .convert import request_filter
from .guard import current_principal
from .views import VIEW_HEADER, CountShape, Views

Context = grpc.aio.ServicerContext[Any, Any]

# CountGroupBy -> the domain's grouping (None: the total alone).
_GROUPINGS: Final[dict[int, GroupBy | None]] = {
    pb.COUNT_GROUP_BY_UNSPECIFIED: None,
    pb.COUNT_GROUP_BY_ACTION: "action",
    pb.COUNT_GROUP_BY_ACTOR: "actor",
    pb.COUNT_GROUP_BY_CATEGORY: "category",
    pb.COUNT_GROUP_BY_OUTCOME: "outcome",
    pb.COUNT_GROUP_BY_SEVERITY: "severity",
    pb.COUNT_GROUP_BY_RESOURCE_TYPE: "resource_type",
    pb.COUNT_GROUP_BY_DAY: "day",
    pb.COUNT_GROUP_BY_HOUR: "hour",
    pb.COUNT_GROUP_BY_RECORDED_BY: "recorded_by",
    pb.COUNT_GROUP_BY_IP: "ip",
    pb.COUNT_GROUP_BY_COUNTRY: "country",
    pb.COUNT_GROUP_BY_RESOURCE: "resource",
    pb.COUNT_GROUP_BY_ACTOR_TYPE: "actor_type",
    pb.COUNT_GROUP_BY_HTTP_ROUTE: "http_route",
    pb.COUNT_GROUP_BY_HTTP_STATUS: "http_status",
    pb.COUNT_GROUP_BY_CREDENTIAL: "credential",
    pb.COUNT_GROUP_BY_DETAIL: "detail",
}
# CountMeasure -> the domain's measure (None: the count alone).
_MEASURES: Final[dict[int, Measure | None]] = {
    pb.COUNT_MEASURE_UNSPECIFIED: None,
    pb.COUNT_MEASURE_DURATION_AVG: "duration_avg",
    pb.COUNT_MEASURE_DURATION_P50: "duration_p50",
    pb.COUNT_MEASURE_DURATION_P95: "duration_p95",
    pb.COUNT_MEASURE_DURATION_P99: "duration_p99",
    pb.COUNT_MEASURE_DURATION_MAX: "duration_max",
    pb.COUNT_MEASURE_DETAIL_SUM: "detail_sum",
    pb.COUNT_MEASURE_DETAIL_AVG: "detail_avg",
    pb.COUNT_MEASURE_DETAIL_MAX: "detail_max",
}


class CountRpcs:
    _db: Database
    _appender: Appender
    _clock: Callable[[], datetime]
    _filter_details: FilterDetails
    _count_timeout: float
    _long_reads: LongReads

    _views: Views

    async def CountEvents(
        self, request: pb.CountEventsRequest, context: Context
    ) -> pb.CountEventsResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        event_filter = request_filter(request)
        shape = count_shape(request)
        group_by, limit, time_zone = _GROUPINGS[shape[0]], shape[1], shape[2]
        measure = _MEASURES[shape[3]]
        group_by_detail, measure_detail = shape[4], shape[5]
        # A count of a console search its first page's record says already (ADR 0137).
        named = from_this_console(VIEW_HEADER)
        covered = (
            self._views.covering(
                named[0] if isinstance(named[0], str) else named[0].decode("latin-1"),
                tenant_id=tenant_id,
                token_id=principal.token_id,
                event_filter=request.filter,
                count=shape,
            )
            if len(named) == 1
            else None
        )
        with self._long_reads.admitted(tenant_id, "count"):  # refused ones are not recorded
            # The log before the record: its own, or its search's (which its
            # page read so, as the chart and the panel now do).
            before_seq = covered
            if before_seq is None:
                details: dict[str, Any] = {
                    "rpc": "CountEvents",
                    "filter": await self._filter_details(tenant_id, request.filter),
                    **count_details(shape),
                }
                recorded = await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="audit_log.queried",
                    description="Counted audit events",
                    details=details,
                )
                before_seq = recorded.seq
            counts = await count_events(
                self._db,
                tenant_id=tenant_id,
                event_filter=event_filter,
                group_by=group_by,
                limit=limit,
                before_seq=before_seq,
                timeout=self._count_timeout,
                time_zone=time_zone,
                measure=measure,
                group_by_detail=group_by_detail,
                measure_detail=measure_detail,
            )
        return pb.CountEventsResponse(
            total=counts.total,
            groups=[
                pb.EventCount(
                    key=group.key,
                    count=group.count,
                    value=group.value,
                    measured=group.measured,
                    label=group.label,
                )
                for group in counts.groups
            ],
            truncated=counts.truncated,
            total_groups=counts.total_groups,
            tree_size=before_seq - 1,  # the log before the record, as counted
        )


def count_shape(request: pb.CountEventsRequest) -> CountShape:
    """A count's grouping, limit (lowered as the API lowers it), time zone,
    measure, and the details keys it groups by and measures ("" for none);
    InvalidArgument naming the field of one the API refuses."""
    if request.group_by not in _GROUPINGS:
        raise InvalidArgument.field("group_by", f"unknown enum value {request.group_by}")
    limit = group_limit(request.limit)
    if request.time_zone and not is_time_zone(request.time_zone):
        raise InvalidArgument.field("time_zone", not_a_time_zone(request.time_zone))
    if request.measure not in _MEASURES:
        raise InvalidArgument.field("measure", f"unknown enum value {request.measure}")
    if request.measure and not request.group_by:
        raise InvalidArgument.field(
            "measure", "measures groups: set group_by (day for one figure a day)"
        )
    group_by_detail = _detail_key(
        "group_by_detail",
        request.group_by_detail,
        wanted=request.group_by == pb.COUNT_GROUP_BY_DETAIL,
        by="group_by detail",
    )
    measure_detail = _detail_key(
        "measure_detail",
        request.measure_detail,
        wanted=_MEASURES[request.measure] in DETAIL_MEASURES,
        by="a detail measure",
    )
    return (
        request.group_by,
        limit,
        request.time_zone,
        request.measure,
        group_by_detail,
        measure_detail,
    )


def _detail_key(field: str, key: str, *, wanted: bool, by: str) -> str:
    """The details key of `field`: required where the request's grouping or
    measure (`by`) wants one, refused elsewhere (it would be ignored,
    and the count would not be the one asked), bounded as a key of
    `details_equals`."""
    if not wanted:
        if key:
            raise InvalidArgument.field(field, f"is only for {by}; leave it empty")
        return ""
    refusal = detail_key_refusal(key)
    if refusal is not None:
        raise InvalidArgument.field(field, refusal)
    return key


def count_details(shape: CountShape) -> dict[str, Any]:
    """A count as the details of the record that says it: its limit, its
    grouping (none: the total alone), its time zone if it names one, its
    measure if it asks one (`duration_p95`), and the details keys it groups
    by and measures if it names them (`model`, `tokens`)."""
    group_by_value, limit, time_zone, measure_value, group_by_detail, measure_detail = shape
    details: dict[str, Any] = {"limit": limit}
    group_by = _GROUPINGS[group_by_value]
    if group_by is not None:
        details["group_by"] = group_by
    if time_zone:
        details["time_zone"] = time_zone
    measure = _MEASURES[measure_value]
    if measure is not None:
        details["measure"] = measure
    if group_by_detail:
        details["group_by_detail"] = group_by_detail
    if measure_detail:
        details["measure_detail"] = measure_detail
    return details
