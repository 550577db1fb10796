"""What `sealtrail bundle` and `sealtrail verify` take and say of a range
bundle (ADR 0068): a seq range, FIRST-LAST; a period by receipt time, a UTC
year, month or day; and the lines that tell an auditor which range a bundle
proves complete and how it was chosen."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import click

from sealtrail._bundle import BundleSummary

_SEQS = re.compile(r"(\d+)(?:-|\.\.)(\d+)")
_PERIOD = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


class SeqRangeParam(click.ParamType[tuple[int, int]]):
    """FIRST-LAST (or FIRST..LAST): two seqs, both included."""

    name = "FIRST-LAST"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        match = _SEQS.fullmatch(value.strip())
        if match is None:
            self.fail(f"{value!r} is not FIRST-LAST, two seqs such as 1200-3400", param, ctx)
        first, last = int(match[1]), int(match[2])
        if first < 1:
            self.fail("the first seq is 1 or more", param, ctx)
        if first > last:
            self.fail(f"the first seq {first} is after the last {last}", param, ctx)
        return first, last


class PeriodParam(click.ParamType[tuple[datetime, datetime]]):
    """A UTC year (2026), month (2026-11) or day (2026-11-05): its start, and
    the start of the next."""

    name = "PERIOD"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[datetime, datetime]:
        if isinstance(value, tuple):
            return value
        match = _PERIOD.fullmatch(value.strip())
        try:
            if match is None:
                raise ValueError
            month, day = (None if part is None else int(part) for part in match.groups()[1:])
            return period(int(match[1]), month=month, day=day)
        except (ValueError, OverflowError):
            self.fail(
                f"{value!r} is not a UTC year, month or day: 2026, 2026-11 or 2026-11-05",
                param,
                ctx,
            )


def period(
    year: int, month: int | None = None, day: int | None = None
) -> tuple[datetime, datetime]:
    """(start, start of the next) of a UTC year, month or day."""
    if month is None:
        return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    start = datetime(year, month, day or 1, tzinfo=UTC)
    if day is None:
        following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    else:
        following = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
    return start, following


def moment(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def range_line(summary: BundleSummary) -> str:
    """What a range bundle proves, after the records it holds."""
    assert summary.seq_range is not None
    first, last = summary.seq_range
    line = f"the range seq {first}..{last} is complete"
    if summary.received_since is not None and summary.received_until is not None:
        line += (
            f", chosen by receipt time: the events received from"
            f" {moment(summary.received_since)} to {moment(summary.received_until)}"
        )
    return line


def range_warnings(summary: BundleSummary) -> list[str]:
    """What a range bundle does not show, for stderr."""
    warnings = []
    if summary.purged:
        warnings.append(
            f"note: {summary.purged} events of the range were removed by retention: their kept"
            " leaves prove them in place, not that retention removed them (a complete bundle"
            " or `sealtrail verify-log` checks that)"
        )
    for end in summary.unchecked_edges:
        where = "before" if end == "start" else "after"
        warnings.append(
            f"warning: the event just {where} the range is removed by retention or not in the"
            f" log, so the time of the range's {end} rests on the server's word"
        )
    if summary.received_since is not None:
        warnings.append(
            "note: the range is of seqs; with several server processes, a clock behind the"
            " others can put an event received just inside the period outside it"
            " (docs/streaming-and-export.md)"
        )
    return warnings
