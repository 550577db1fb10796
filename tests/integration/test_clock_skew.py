"""A server process whose clock is off from the database's by more than
SEALTRAIL_MAX_CLOCK_SKEW refuses to serve, saying why (ADR 0138): it would
stamp its events out of order with their seqs, expire tokens early or late,
and age events for retention by its own wrong time. Within the bound, it
serves; with the bound 0, it serves whatever its clock says."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest

from sealtrail import AuditClient, UnavailableError
from tests.clock import OffsetClock
from tests.conftest import ServerThread, errors_logged
from tests.integration.test_database_outage import NOT_SERVING, SERVING, health, wait_for_health

# The bound these tests set, and how far off a clock is put to be past it,
# and within it: each far from the bound, whatever a busy machine's probe
# adds to its doubt about the reading.
_BOUND = 2.0
_PAST = 30.0
_WITHIN = 0.5


@pytest.fixture
def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture
def skewed(migrated_database_url: str, clock: OffsetClock) -> Iterator[ServerThread]:
    server = ServerThread(
        migrated_database_url,
        clock=clock,
        max_clock_skew=_BOUND,
        database_probe_interval=0.2,
    )
    try:
        yield server
    finally:
        server.close()


def _records(server: ServerThread) -> bool:
    """Whether the server takes an event (one attempt, no retry)."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    with AuditClient(server.target, token=server.token(tenant), max_attempts=1) as client:
        try:
            client.record(action="clock.checked", actor_id="a")
        except UnavailableError:
            return False
    return True


def _clock_refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [line for line in errors_logged(caplog, by="sealtrail") if "clock" in line]


@pytest.mark.parametrize("off_by", [_PAST, -_PAST], ids=["ahead", "behind"])
def test_a_process_whose_clock_is_off_past_the_bound_refuses_to_serve_saying_why(
    skewed: ServerThread, clock: OffsetClock, caplog: pytest.LogCaptureFixture, off_by: float
) -> None:
    assert health(skewed.target) == SERVING
    assert _records(skewed)
    with caplog.at_level(logging.INFO, logger="sealtrail_server"):
        clock.off_by(off_by)
        wait_for_health(skewed.target, NOT_SERVING)
        assert not _records(skewed)
        lines = _clock_refusals(caplog)
        how = "ahead of" if off_by > 0 else "behind"
        assert any(
            line.startswith(
                f"not serving (health NOT_SERVING): this process's clock is {abs(off_by):.0f}"
            )
            and how in line
            and "SEALTRAIL_MAX_CLOCK_SKEW (2 s)" in line
            for line in lines
        ), lines
        assert not [line for line in lines if "database is not served" in line], lines
        # Put right (within the bound): served again.
        clock.off_by(_WITHIN if off_by > 0 else -_WITHIN)
        wait_for_health(skewed.target, SERVING)
    assert _records(skewed)


def test_a_process_started_with_its_clock_off_starts_not_serving(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The start reads both clocks before it serves: no call is taken by a
    process whose clock is off, not even until its first probe."""
    clock = OffsetClock(-_PAST)
    with caplog.at_level(logging.INFO, logger="sealtrail_server"):
        server = ServerThread(
            migrated_database_url,
            clock=clock,
            max_clock_skew=_BOUND,
            # No probe within the test: what it sees is the start's doing.
            database_probe_interval=3600,
        )
        try:
            assert health(server.target) == NOT_SERVING
            assert not _records(server)
            lines = _clock_refusals(caplog)
            assert any(
                line.startswith("not serving (health NOT_SERVING): this process's clock is")
                and "behind" in line
                for line in lines
            ), lines
        finally:
            server.close()


def test_within_the_bound_or_with_the_bound_off_a_process_serves(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a second off, under a bound of two, is served; so is half a day
    off with the bound 0 (measured and logged, never refused)."""
    within = ServerThread(
        migrated_database_url,
        clock=OffsetClock(_WITHIN),
        max_clock_skew=_BOUND,
        database_probe_interval=3600,
    )
    try:
        assert health(within.target) == SERVING
        assert _records(within)
    finally:
        within.close()
    with caplog.at_level(logging.INFO, logger="sealtrail_server"):
        off = ServerThread(
            migrated_database_url,
            clock=OffsetClock(43200),
            max_clock_skew=0,
            database_probe_interval=3600,
        )
        try:
            assert health(off.target) == SERVING
            assert _records(off)
        finally:
            off.close()
    assert _clock_refusals(caplog) == []
