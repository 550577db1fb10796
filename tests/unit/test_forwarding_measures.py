"""What forwarding reports of the sinks held here (forward/measures.py),
read through the SDK's in-memory reader."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sealtrail_server.domain.sinks import KINDS
from sealtrail_server.forward.measures import ForwardingMeasures
from sealtrail_server.store.sinks import Parking


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def forwarding(reader: InMemoryMetricReader, clock: Clock) -> ForwardingMeasures:
    provider = MeterProvider(metric_readers=[reader])
    return ForwardingMeasures(provider.get_meter("test"), kept_for=30, clock=clock)


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[Any, ...], float]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[tuple[Any, ...], float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[tuple(sorted(point.attributes.items()))] = point.value  # type: ignore[union-attr]
    return found


def test_the_worst_lag_of_each_kind_and_the_sinks_behind(
    forwarding: ForwardingMeasures, reader: InMemoryMetricReader
) -> None:
    forwarding.lag("a", "webhook", 5)
    forwarding.lag("b", "webhook", 40)
    forwarding.lag("c", "webhook", 0)
    forwarding.lag("d", "splunk_hec", -3)  # a cursor past a head read before it: none
    assert points(reader, "sealtrail.forward.lag") == {
        (("sealtrail.sink.kind", "webhook"),): 40,
        (("sealtrail.sink.kind", "splunk_hec"),): 0,
        (("sealtrail.sink.kind", "datadog_logs"),): 0,
        (("sealtrail.sink.kind", "elasticsearch"),): 0,
        (("sealtrail.sink.kind", "chat"),): 0,
        (("sealtrail.sink.kind", "pagerduty"),): 0,
        (("sealtrail.sink.kind", "email"),): 0,
    }
    sinks = points(reader, "sealtrail.forward.sinks")
    webhook = ("sealtrail.sink.kind", "webhook")
    assert sinks[(webhook, ("sealtrail.sink.state", "behind"))] == 2
    assert sinks[(webhook, ("sealtrail.sink.state", "current"))] == 1
    assert sinks[(("sealtrail.sink.kind", "splunk_hec"), ("sealtrail.sink.state", "current"))] == 1


def test_sinks_no_longer_held_or_not_seen_lately_are_left_out(
    forwarding: ForwardingMeasures, reader: InMemoryMetricReader, clock: Clock
) -> None:
    forwarding.lag("a", "webhook", 5)
    forwarding.lag("b", "webhook", 7)
    forwarding.keep_only({"a"})
    lag = (("sealtrail.sink.kind", "webhook"),)
    assert points(reader, "sealtrail.forward.lag")[lag] == 5
    clock.now += 31
    assert points(reader, "sealtrail.forward.lag")[lag] == 0
    forwarding.lag("a", "webhook", 9)  # seen again
    assert points(reader, "sealtrail.forward.lag")[lag] == 9


def test_events_are_counted_by_outcome(
    forwarding: ForwardingMeasures, reader: InMemoryMetricReader
) -> None:
    letters = (Parking(3, 4, 2, 400, "bad"), Parking(9, 9, 1, 413, "too large"))
    forwarding.sent("webhook", 7, letters)
    forwarding.sent("webhook", 0, ())
    kind = ("sealtrail.sink.kind", "webhook")
    parked = ("sealtrail.forward.outcome", "dead_lettered")
    # Each kind's dead letters are counted from 0 (docs/metrics.md's alert sees the first).
    others = {(parked, ("sealtrail.sink.kind", other)): 0 for other in KINDS if other != "webhook"}
    assert points(reader, "sealtrail.forward.events") == {
        (("sealtrail.forward.outcome", "delivered"), kind): 7,
        (parked, kind): 3,
        **others,
    }
