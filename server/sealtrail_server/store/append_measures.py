"""What the appender measures of itself (docs/metrics.md): the batches it
takes, what their callers were answered, and what waits to be taken."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from opentelemetry.metrics import Meter, Observation

from ..measures import EVENTS_BUCKETS, SECONDS_BUCKETS, no_meter


class AppendMeasures:
    def __init__(self, meter: Meter | None, *, waiting: Callable[[], tuple[int, int]]) -> None:
        """`waiting()`: the events handed in and not yet taken, and their size
        in bytes; called on a reader's thread, it reads ints as they stand."""
        meter = meter or no_meter()
        self._sizes = meter.create_histogram(
            "sealtrail.append.batch.size",
            unit="{event}",
            description="Events the appender took together, whatever became of them.",
            explicit_bucket_boundaries_advisory=EVENTS_BUCKETS,
        )
        self._durations = meter.create_histogram(
            "sealtrail.append.batch.duration",
            unit="s",
            description="How long a batch took, from taken to its callers' answers.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._answers = meter.create_counter(
            "sealtrail.append.events",
            unit="{event}",
            description="Events of batches by their callers' answers: written, failed, abandoned.",
        )
        # There before the first failure: docs/metrics.md's alert watches it.
        self._answers.add(0, {"sealtrail.append.outcome": "failed"})
        meter.create_observable_gauge(
            "sealtrail.append.pending",
            callbacks=[lambda _options: [Observation(waiting()[0])]],
            unit="{event}",
            description="Events handed in and not yet taken into a batch.",
        )
        meter.create_observable_gauge(
            "sealtrail.append.pending.size",
            callbacks=[lambda _options: [Observation(waiting()[1])]],
            unit="By",
            description="The views of the events handed in and not yet taken, in bytes.",
        )

    def batch(self, events: int, seconds: float) -> None:
        self._sizes.record(events)
        self._durations.record(seconds)

    def answered(self, outcomes: Mapping[str, int]) -> None:
        """Events by what their callers were answered: `written`, `failed`, `abandoned`."""
        for outcome, events in outcomes.items():
            if events:
                self._answers.add(events, {"sealtrail.append.outcome": outcome})
