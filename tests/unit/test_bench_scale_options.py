"""The scale figures' --scale-events: a log too small for the pages they read
is refused before anything runs, not found out by an assertion mid-run."""

from __future__ import annotations

import pytest

from bench.__main__ import parse_args


@pytest.mark.parametrize(
    ("figures", "events"),
    [
        (["sql-latest", "query-latest"], 20_000),  # 40 user.login a tenant, not 100
        (["query-next"], 60_000),  # 120 a tenant: no second page of 100
    ],
)
def test_too_few_scale_events_for_a_page_is_refused_up_front(
    figures: list[str], events: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """--scale-events 20000 loaded the log, then every latest-100 figure
    failed its page's assertion: a traceback, and the figures measured before
    it (the purge's, say) lost with the report never written."""
    with pytest.raises(SystemExit):
        parse_args(["--only", *figures, "--scale-events", str(events)])
    assert "--scale-events" in capsys.readouterr().err


def test_enough_scale_events_for_the_pages_read_is_taken() -> None:
    assert parse_args(["--only", "query-latest", "--scale-events", "50000"]).scale_events == 50_000
    assert parse_args(["--only", "query-next", "--scale-events", "100000"])
    assert parse_args(["--only", "copy", "--scale-events", "1"])  # no scale figure: unused
