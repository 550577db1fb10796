"""A console search's view covers its announced counts for a short window
only, once each, for its own token, tenant and filter (api/views.py, ADR 0137)."""

from __future__ import annotations

from sealtrail import build_filter
from sealtrail.v1 import audit_service_pb2 as pb
from sealtrail_server.api.views import VIEW_SECONDS, Views, announced_counts


def test_a_view_covers_its_counts_once_each_within_its_window_only() -> None:
    now = [100.0]
    views = Views(clock=lambda: now[0])
    search = build_filter(actions="look.*")
    count = (pb.COUNT_GROUP_BY_DAY, 1000, "", pb.COUNT_MEASURE_UNSPECIFIED, "", "")
    opened = {"tenant_id": "t", "token_id": "k", "event_filter": search, "record_seq": 7}
    view = views.open(
        **opened,
        counts=[
            count,
            (pb.COUNT_GROUP_BY_ACTION, 10, "", pb.COUNT_MEASURE_DURATION_P95, "", ""),
            (pb.COUNT_GROUP_BY_DETAIL, 10, "", pb.COUNT_MEASURE_DETAIL_SUM, "model", "tokens"),
        ],
    )
    asked = {"tenant_id": "t", "token_id": "k", "event_filter": search, "count": count}
    assert views.covering(view, **{**asked, "token_id": "other"}) is None
    assert views.covering(view, **{**asked, "tenant_id": "u"}) is None
    assert views.covering(view, **{**asked, "event_filter": build_filter(actions="x")}) is None
    assert views.covering("no-such-view", **asked) is None
    # A count by another details key, or measuring another, is another count.
    by_model = (pb.COUNT_GROUP_BY_DETAIL, 10, "", pb.COUNT_MEASURE_DETAIL_SUM, "model", "tokens")
    for other in [(*by_model[:4], "user", "tokens"), (*by_model[:4], "model", "cost")]:
        assert views.covering(view, **{**asked, "count": other}) is None
    assert views.covering(view, **{**asked, "count": by_model}) == 7
    assert views.covering(view, **asked) == 7
    assert views.covering(view, **asked) is None  # once
    late = views.open(**opened, counts=[count])
    now[0] += VIEW_SECONDS + 0.001
    assert views.covering(late, **asked) is None


def test_an_announcement_that_is_no_count_or_names_a_filter_is_none() -> None:
    with_filter = pb.CountEventsRequest(filter=build_filter(actions="x"))
    kept = pb.CountEventsRequest(group_by=pb.COUNT_GROUP_BY_HOUR)
    announced = [b"\xff\xff", "text", with_filter.SerializeToString(), kept.SerializeToString()]
    assert announced_counts(announced) == [kept]
