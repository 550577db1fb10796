"""Lengths of time as the command line shows them, read back by the options
that take them (`alerts --window`, `stats --timeout`); no server involved."""

from __future__ import annotations

import click
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sealtrail._cli_spans import Seconds, Span, Wait
from sealtrail._durations import age_text, span_parts, span_text

# The parser's units in seconds, written out (a year is 365 days): the oracle.
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (90, "90s"),
        (600, "10m"),
        (3600, "1h"),
        (5400, "90m"),
        (7200, "2h"),
        (86400, "1d"),
        (90000, "25h"),
        (172800, "2d"),
        (604800, "1w"),
        (691200, "8d"),
        (31536000, "1y"),
        (2**32 - 1, "4294967295s"),
    ],
)
def test_a_length_is_shown_in_the_largest_unit_it_fills_whole(seconds: int, shown: str) -> None:
    assert span_text(seconds) == shown


def test_a_length_below_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="-1"):
        span_text(-1)


@given(st.integers(min_value=0, max_value=2**32 - 1))
@example(0)
@example(86400 * 365 * 3)
@example(2**32 - 1)
def test_what_is_shown_is_read_back_as_the_same_length(seconds: int) -> None:
    """An alert rule's window (a uint32 of seconds) shown as `sealtrail
    alerts` lists it reads back, through `--window`, as the same window, in
    the largest of the parser's units that holds it whole."""
    shown = span_text(seconds)
    assert Seconds().convert(shown, None, None) == seconds
    count, unit = shown[:-1], shown[-1]
    assert count.isdigit() and int(count) * UNITS[unit] == seconds
    larger = [size for size in UNITS.values() if size > UNITS[unit]]
    assert seconds == 0 or all(seconds % size for size in larger), shown


@given(st.integers(min_value=1, max_value=86400))
@example(60)  # the CLI's default wait for a count: --help shows it as 1m
def test_a_wait_shown_reads_back_as_the_same_wait(seconds: int) -> None:
    assert Wait(longest=86400).convert(span_text(seconds), None, None) == seconds


@pytest.mark.parametrize(
    ("typed", "seconds"),
    [
        ("30", 30.0),
        ("0.5", 0.5),
        ("2.", 2.0),
        ("45s", 45.0),
        ("10m", 600.0),
        ("1d", 86400.0),
        # Seconds with an exponent, as the option took them as a float
        # before it took durations (docs/reports.md).
        ("1e3", 1000.0),
        ("1E3", 1000.0),
        ("2.5e2", 250.0),
        (".5e1", 5.0),
        ("8.64e4", 86400.0),
        ("5e-1", 0.5),
    ],
)
def test_a_wait_is_a_duration_or_seconds_alone(typed: str, seconds: float) -> None:
    assert Wait(longest=86400).convert(typed, None, None) == seconds


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("nan", "'nan' is not a duration like 30s, 5m or 1h (or seconds alone: 0.5)"),
        ("1e308", "'1e308' is longer than 1d"),
        ("1e5", "'1e5' is longer than 1d"),
        ("1e", "'1e' is not a duration like"),
        ("e3", "'e3' is not a duration like"),
        ("inf", "'inf' is not a duration like"),
        ("1.5m", "'1.5m' is not a duration like"),
        ("-1", "'-1' is not a duration like"),
        # Arabic-Indic digits, which int() reads as 30.
        ("\u0663\u0660", "'\u0663\u0660' is not a duration like 30s, 5m or 1h (or seconds"),
        ("\u0663\u0660s", "(or seconds alone: 0.5): its digits must be 0-9"),
        ("0", "'0' is not above 0"),
        ("0s", "'0s' is not above 0"),
        ("86401", "'86401' is longer than 1d"),
        ("2d", "'2d' is longer than 1d"),
        ("9" * 400 + "y", "is longer than 1d"),
    ],
)
def test_a_wait_refused_is_quoted_as_typed(typed: str, said: str) -> None:
    with pytest.raises(click.BadParameter) as refused:
        Wait(longest=86400).convert(typed, None, None)
    assert said in refused.value.message


@pytest.mark.parametrize("typed", ["\u0663\u0660d", "\uff13\uff10m", "1\u0660s", "\u0967w"])
def test_a_duration_is_written_in_ascii_digits_alone(typed: str) -> None:
    """`\\d` took any script's digits: `\u0663\u0660d` (Arabic-Indic) was 30
    days, `\uff13\uff10m` (full-width) 30 minutes. Refused, saying why."""
    assert span_parts(typed) is None
    for option in (Span(), Seconds(), Wait(longest=10**9)):
        with pytest.raises(click.BadParameter) as refused:
            option.convert(typed, None, None)
        assert f"{typed!r} is not a duration like " in refused.value.message
        assert refused.value.message.endswith(": its digits must be 0-9"), refused.value.message


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s ago"),
        (0.9, "0s ago"),
        (8.4, "8s ago"),
        (119, "119s ago"),
        (120, "2m ago"),
        (7199, "119m ago"),
        (7200, "2h ago"),
        (172_799, "47h ago"),
        (172_800, "2d ago"),
        (-0.5, "0s ago"),  # within a second: the clocks' rounding
        (-3, "3s ahead of this host's clock"),
        (-300, "5m ahead of this host's clock"),
    ],
)
def test_an_age_is_said_in_whole_units_and_a_time_ahead_as_such(seconds: float, shown: str) -> None:
    """How long ago a checkpoint was signed (`checkpoint --check`), by this
    host's clock: whole units, each up to twice the next; a time this host
    has not reached is said so, not as a negative age."""
    assert age_text(seconds) == shown
