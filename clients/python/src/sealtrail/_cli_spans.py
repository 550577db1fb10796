"""Lengths of time as the command line writes them (90d, 12h, 10m, 45s): the
options that take one (`tokens --unused-for`, `tokens create --expires-in`,
`alerts create|update --window`, `stats --timeout`, `report --timeout`; a
time's `--since` a duration ago, `_cli_filter_options.parse_time`) read them alike, and what
shows one shows it so (`_durations.span_text`). Used by the _cli_* command
modules; it imports none of them (nor _cli), so that any imports first."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Final

import click

from sealtrail._durations import not_a_span, span_parts, span_text
from sealtrail._typed import remember_typed

_SECONDS = re.compile(r"[0-9]+")
# Seconds alone, as a wait was given before it took durations, when click read
# it as a float: a fraction (0.5, 30, 2.) and an exponent (1e3, 2.5E2, 5e-1);
# ASCII digits alone, and no nan or inf.
_FRACTIONAL_SECONDS = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Span(click.ParamType[timedelta]):
    """A length of time as the command line writes durations: 90d, 12h, 2w, 1y
    (365 days), 30m (minutes), 45s."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        remember_typed(ctx, param, value)
        parts = span_parts(value)
        if parts is None:
            self.fail(not_a_span(value, "a duration like 90d, 12h, 2w or 1y"), param, ctx)
        count, unit = parts
        try:
            return count * unit
        except OverflowError:
            self.fail(f"{value!r} is longer than any date can express", param, ctx)


class Seconds(click.ParamType[int]):
    """A duration as Span reads it, in whole seconds, for an API field of
    seconds (an alert rule's window): 10m, 1h, 7d; a number alone is seconds
    (300), as such an option took before it took durations."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        remember_typed(ctx, param, value)
        if _SECONDS.fullmatch(value):
            return int(value)
        if span_parts(value) is None:
            self.fail(
                not_a_span(value, "a duration like 10m, 1h or 7d (or seconds alone: 300)"),
                param,
                ctx,
            )
        return int(Span().convert(value, param, ctx).total_seconds())


class Wait(click.ParamType[float]):
    """How long to wait for an answer: a duration as Seconds reads it (30s,
    5m, 1h), or seconds alone, fractions and an exponent kept (0.5, 1e3), as
    such an option took them (a float) before it took durations; above 0 and
    at most `longest` seconds. A refusal quotes the value as typed."""

    name = "DURATION"

    def __init__(self, *, longest: int) -> None:
        self.longest: int = longest

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        remember_typed(ctx, param, value)
        seconds: float
        if _FRACTIONAL_SECONDS.fullmatch(value):
            seconds = float(value)  # inf past a float's reach, refused below
        elif parts := span_parts(value):
            count, unit = parts
            seconds = count * int(unit.total_seconds())  # an int: no overflow
        else:
            self.fail(
                not_a_span(value, "a duration like 30s, 5m or 1h (or seconds alone: 0.5)"),
                param,
                ctx,
            )
        if seconds <= 0:
            self.fail(f"{value!r} is not above 0", param, ctx)
        if seconds > self.longest:
            self.fail(f"{value!r} is longer than {span_text(self.longest)}", param, ctx)
        return float(seconds)


# The longest wait: a day, the longest count a server allows (SEALTRAIL_COUNT_TIMEOUT).
# A wait is refused past it, and below 0 or as `nan` (which passed click's
# range, then held no deadline: the count ended at once in DEADLINE_EXCEEDED).
COUNT_WAIT: Final = Wait(longest=86400)
# The forms --timeout takes, as its help says them (`report --timeout`'s too).
WAIT_FORMS: Final = (
    f"a duration (30s, 5m, 1h; at most {span_text(COUNT_WAIT.longest)}),"
    " or seconds alone (90, 0.5, 1e3)"
)
