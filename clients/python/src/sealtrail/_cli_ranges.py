"""What `sealtrail bundle` and `sealtrail verify` take and say of a range
bundle (ADR 0068): a seq range, FIRST-LAST; a period by receipt time, a UTC
year, month or day (`received_options`, which `sealtrail export` takes too);
and the lines that tell an auditor which range a bundle proves complete and
how it was chosen."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sealtrail._bundle_format import BundleSummary
from sealtrail._choices import MAX_SEQ
from sealtrail._cli_filter_options import _Time
from sealtrail._typed import given_words, remember_typed, typed
from sealtrail._words import counted, noun

# The client and what it answers, each imported as a command runs: --help
# imports none of it (tests/unit/test_cli_startup_imports.py).
if TYPE_CHECKING:
    from sealtrail._bundle import SeqRange
    from sealtrail._client import AuditClient

_Command = TypeVar("_Command", bound=Callable[..., Any])

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
        remember_typed(ctx, param, value)  # a range beyond the log is said as typed
        match = _SEQS.fullmatch(value.strip())
        if match is None:
            self.fail(f"{value!r} is not FIRST-LAST, two seqs such as 1200-3400", param, ctx)
        first, last = int(match[1]), int(match[2])
        if first < 1:
            self.fail("the first seq is 1 or more", param, ctx)
        if first > last:
            self.fail(f"the first seq {first} is after the last {last}", param, ctx)
        if last > MAX_SEQ:
            # No log reaches it; past 2**63 no request carries it either, and
            # `sinks replay` said protobuf's bare "Value out of range", `export`
            # and `bundle` a traceback.
            self.fail(f"the last seq {last} is past the largest ({MAX_SEQ})", param, ctx)
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


def received_options(every: str, how: str) -> Callable[[_Command], _Command]:
    """`--received PERIOD` and `--received-since TIME [--received-until TIME]`:
    the events received in a period, as the seq range the server finds for it
    (`received_seqs`), in the same words on every command that takes them.
    `every` names the events the command takes of it, `how` what it does with
    the range."""
    options = [
        click.option(
            "--received",
            type=PeriodParam(),
            help=f"{every} received in this UTC year, month or day (2026-11), as the seq range"
            f" the server finds for it{how}. Refused while the period has not ended.",
        ),
        click.option(
            "--received-since",
            type=_Time(),
            help="As --received, for the events received from this time (same forms as --since)...",
        ),
        click.option(
            "--received-until",
            type=_Time(),
            help="...to this one, excluded; without it, up to now.",
        ),
    ]

    def add(command: _Command) -> _Command:
        for option in reversed(options):
            command = option(command)
        return command

    return add


def range_options_given(
    seqs: tuple[int, int] | None,
    received: tuple[datetime, datetime] | None,
    since: datetime | None,
    until: datetime | None,
) -> list[str]:
    """The options given of those that each choose a range: --seq, --received
    and --received-since (with or without --received-until)."""
    return [
        name
        for name, given in (
            ("--seq", seqs),
            ("--received", received),
            ("--received-since", since or until),
        )
        if given is not None
    ]


def received_period(
    ctx: click.Context,
    seqs: tuple[int, int] | None,
    received: tuple[datetime, datetime] | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[datetime, datetime | None] | None:
    """The period by receipt time asked for, if one is (its end None: up to
    now); a range asked for two ways, or an end with no start, is refused."""
    ways = range_options_given(seqs, received, since, until)
    if len(ways) > 1:
        raise click.UsageError(f"{' and '.join(ways)} each choose the range: give one", ctx)
    if until is not None and since is None:
        raise click.UsageError("--received-until needs --received-since", ctx)
    if received is not None:
        return received
    return None if since is None else (since, until)


def received_seqs(
    ctx: click.Context,
    client: AuditClient,
    period: tuple[datetime, datetime | None],
    *,
    whole: bool,
    verb: str,
) -> SeqRange:
    """The seqs received in `period` (BundleError if none was). A period not
    yet ended (`whole`: given as --received) is refused in the API's words
    (leave `until` unset), which name no option of the command: these name
    the --received-since that takes it so far, which the command `verb`s."""
    from sealtrail._bundle import received_range
    from sealtrail._errors import InvalidArgumentError

    try:
        return received_range(client, since=period[0], until=period[1])
    except InvalidArgumentError as error:
        if not whole or not any(field == "until" for field, _ in error.field_violations):
            raise
        raise click.UsageError(
            f"--received: the period has not ended; --received-since {period[0]:%Y-%m-%d}"
            f" {verb} it so far",
            ctx,
        ) from None


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


def beyond_the_log(ctx: click.Context, seqs: tuple[int, int], tree_size: int) -> str:
    """A --seq range past the log's end in the option's terms, as typed:
    `--seq 5-500: the log ends at seq 35`, not the API's `last_seq 500 is
    beyond the log's size 35`, which names no option of the command."""
    value = typed(ctx, "seqs") or f"{seqs[0]}-{seqs[1]}"
    # Its size, which counts the events retention removed: its last seq, not what it holds.
    return f"{given_words('--seq', value)}: the log ends at seq {tree_size}"


def held_seqs(summary: BundleSummary) -> str:
    """The seqs a bundle holds, records and leaves, after what it holds: none
    for an empty bundle (there is no seq 0)."""
    if not summary.first_seq:
        return ""
    return f" (seq {summary.first_seq}..{summary.last_seq})"


def range_line(summary: BundleSummary) -> str:
    """What a range bundle proves, after the records it holds."""
    assert summary.seq_range is not None
    first, last = summary.seq_range
    line = f"the range seq {first}..{last} is complete"
    if summary.received_since is not None and summary.received_until is not None:
        period = (
            f"the events received from {moment(summary.received_since)}"
            f" to {moment(summary.received_until)}"
        )
        if summary.unchecked_edges:
            ends = " and ".join(summary.unchecked_edges)
            line += f" (found for {period}; its {ends} not proven the period's)"
        else:
            line += f", chosen by receipt time: {period}"
    return line


# `sealtrail verify` (and `bundle`) when a period's range is proven complete
# but an end of it not proven to be the period's: a script's check for 0
# fails, and it can tell this from a failure (1) or own keys only (3).
PERIOD_UNPROVEN = 4


def unproven_ends(summary: BundleSummary) -> list[str]:
    """Why each end of a period's range is not proven, for stderr."""
    assert summary.seq_range is not None
    (first, last), reasons = summary.seq_range, []
    for end in summary.unchecked_edges:
        if end == "end" and last >= summary.tree_size:
            reasons.append(
                f"unproven: the range's end: no event follows seq {last} in the log at the"
                f" checkpoint's size {summary.tree_size}, so nothing shows the period had ended"
                " there; write the bundle again once the log holds an event received after"
                " the period (an exporter's bundle always does: its export is one)"
            )
            continue
        seq, where = (first - 1, "before") if end == "start" else (last + 1, "after")
        reasons.append(
            f"unproven: the range's {end}: seq {seq}, just {where} it, is shown as removed by"
            " retention: its kept leaf proves its place, not its time, and whoever wrote the"
            " bundle can show any event so; nothing shows the range's"
            f" {end} is the period's"
        )
    return reasons


def range_warnings(summary: BundleSummary) -> list[str]:
    """What a range bundle does not show, for stderr."""
    warnings = []
    if summary.purged:
        warnings.append(
            f"note: {counted(summary.purged, 'event')} of the range"
            f" {noun(summary.purged, 'was', 'were')} removed by retention: their kept leaves"
            " prove them in place, not that retention removed them (a complete bundle or"
            " `sealtrail verify-log` checks that)"
        )
    warnings += unproven_ends(summary)
    if summary.received_since is not None:
        warnings.append(
            "note: the range is of seqs; with several server processes, a clock behind the"
            " others can put an event received just inside the period outside it"
            " (docs/streaming-and-export.md)"
        )
    return warnings
