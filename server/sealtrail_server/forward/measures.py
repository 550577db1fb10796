"""What forwarding measures of itself (docs/metrics.md): events delivered and
parked, requests and their answers, failures, and how far behind the sinks
held here are, by kind.

A lag is noted at each look at a sink (every few seconds, backing off or
not) and left out once not noted for `kept_for` seconds: a lease lost in an
outage, before a claim could say so. No series names a sink: a process may
hold a thousand, and the SDK keeps every attribute set an asynchronous
instrument ever reported (ADR 0056)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ..domain.sinks import KINDS
from ..measures import SECONDS_BUCKETS, no_meter
from ..store.sinks import Parking

_KIND: Final = "sealtrail.sink.kind"


class ForwardingMeasures:
    def __init__(
        self,
        meter: Meter | None,
        *,
        kept_for: float,
        sinks_waiting: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`sinks_waiting()`: sinks waiting for a process with room, as the
        last claim at the limit saw (read on a reader's thread)."""
        self._clock = clock
        meter = meter or no_meter()
        self._events = meter.create_counter(
            "sealtrail.forward.events",
            unit="{event}",
            description="Events a sink's destination took (delivered) or refused (dead_lettered).",
        )
        self._requests = meter.create_histogram(
            "sealtrail.forward.request.duration",
            unit="s",
            description="Requests to destinations, by the HTTP status answered or why none was.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._failures = meter.create_counter(
            "sealtrail.forward.failures",
            unit="{failure}",
            description="Failed attempts recorded on sinks (each followed by a backoff).",
        )
        # Each series docs/metrics.md's alerts watch is there before its first
        # count: one that first appears at 1 has increased by nothing.
        self._failures.add(0)
        for kind in KINDS:
            self._events.add(0, {_KIND: kind, "sealtrail.forward.outcome": "dead_lettered"})
        # sink -> (kind, seqs of its log not yet passed over, when noted: monotonic)
        self._lags: dict[str, tuple[str, int, float]] = {}
        self._kept_for = kept_for
        meter.create_observable_gauge(
            "sealtrail.forward.lag",
            callbacks=[self._observe_lags],
            unit="{event}",
            description="The most events of its log a sink of the kind held here has to pass over.",
        )
        meter.create_observable_up_down_counter(
            "sealtrail.forward.sinks",
            callbacks=[self._observe_sinks],
            unit="{sink}",
            description="Sinks held here: current, or behind.",
        )
        meter.create_observable_up_down_counter(
            "sealtrail.forward.sinks.waiting",
            callbacks=[lambda _options: [Observation(sinks_waiting())]],
            unit="{sink}",
            description="Sinks no process had room for, as this one's last claim at its limit saw.",
        )

    def sent(self, kind: str, delivered: int, letters: tuple[Parking, ...]) -> None:
        """A cursor's move committed over `delivered` events taken and `letters` parked."""
        if delivered:
            self._events.add(delivered, {_KIND: kind, "sealtrail.forward.outcome": "delivered"})
        if parked := sum(letter.event_count for letter in letters):
            self._events.add(parked, {_KIND: kind, "sealtrail.forward.outcome": "dead_lettered"})

    def request(self, kind: str, started: float, outcome: dict[str, str | int]) -> None:
        """A request begun at `started` (perf_counter) ended: its HTTP status,
        or the error.type of why it has none."""
        self._requests.record(time.perf_counter() - started, {_KIND: kind, **outcome})

    def failure(self) -> None:
        self._failures.add(1)

    def lag(self, sink_id: str, kind: str, lag: int) -> None:
        self._lags[sink_id] = (kind, max(0, lag), self._clock())

    def forget(self, sink_id: str) -> None:
        self._lags.pop(sink_id, None)

    def keep_only(self, held: set[str]) -> None:
        for sink_id in [sink_id for sink_id in self._lags if sink_id not in held]:
            del self._lags[sink_id]

    def clear(self) -> None:
        self._lags.clear()

    def _noted(self) -> dict[str, list[int]]:
        """The recent lags by kind (every kind: a series no longer observed is
        gone, not 0). On a reader's thread: the dict is copied first, as the
        loop may change it meanwhile."""
        recent = self._clock() - self._kept_for
        by_kind: dict[str, list[int]] = {kind: [] for kind in KINDS}
        for kind, lag, noted in list(self._lags.values()):
            if noted >= recent:
                by_kind[kind].append(lag)
        return by_kind

    def _observe_lags(self, _options: CallbackOptions) -> list[Observation]:
        return [
            Observation(max(lags, default=0), {_KIND: kind}) for kind, lags in self._noted().items()
        ]

    def _observe_sinks(self, _options: CallbackOptions) -> list[Observation]:
        observed = []
        for kind, lags in self._noted().items():
            behind = sum(1 for lag in lags if lag > 0)
            for state, count in (("current", len(lags) - behind), ("behind", behind)):
                observed.append(Observation(count, {_KIND: kind, "sealtrail.sink.state": state}))
        return observed
