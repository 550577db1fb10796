"""What every part that measures itself shares: the meter it is handed (one
that measures nothing when metrics are off) and the buckets of its histograms.

Each part names its own instruments where it measures (docs/metrics.md lists
them all). Instruments are called whether or not metrics are on: with metrics
off they are OpenTelemetry's no-op instruments, a method call that does nothing."""

from __future__ import annotations

from typing import Final

from opentelemetry.metrics import Meter, MeterProvider, NoOpMeterProvider

METER_NAME: Final = "sealtrail_server"

# Durations in seconds, from a lone append's half millisecond to a slow
# destination's timeout. The SDK's default buckets are for milliseconds.
SECONDS_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# A call's duration, from its metadata to its last message: those of seconds,
# then on to a day. A StreamEvents stream lives for minutes to hours (an
# export or a verification of a large log for minutes too): with buckets
# ending at 60 s every stream fell in +Inf, and no quantile of them was read.
CALL_SECONDS_BUCKETS: Final = (
    *SECONDS_BUCKETS,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
    24 * 3600.0,
)
# Events a batch held: a lone call's 1 to a RecordBatch's 1,000 or a commit's 5,000.
EVENTS_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 5000)


def meter_of(provider: MeterProvider | None, version: str = "") -> Meter:
    """The service's meter from `provider`; None: one that measures nothing."""
    return (provider or NoOpMeterProvider()).get_meter(METER_NAME, version)


def no_meter() -> Meter:
    """A meter that measures nothing, for parts made without one (tests, tools)."""
    return meter_of(None)
