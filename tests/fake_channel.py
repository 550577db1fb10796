"""The sync client the unit tests drive over grpcio-testing's fake channel
(tests/unit/conftest.py's `channel`), retrying as a caller's would."""

from __future__ import annotations

import random

import grpc_testing

from sealtrail import AuditClient


def retrying_client(channel: grpc_testing.Channel, sleeps: list[float]) -> AuditClient:
    """A client over `channel` making up to 3 attempts a call, its waits
    appended to `sleeps` instead of slept, its jitter drawn from a fixed seed."""
    return AuditClient(
        "unused",
        token="s3cret",
        max_attempts=3,
        channel=channel,
        sleep=sleeps.append,
        rng=random.Random(0),
    )
