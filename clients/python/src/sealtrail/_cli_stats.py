"""`sealtrail stats`: how many events match a filter, in all and grouped (by
actor, action, outcome, day...), without exporting them: "failed logins per
actor this week", "which actions does my log hold". Registers its commands on
the main command of _cli.py, whose helpers it shares."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Final

import click

from sealtrail._choices import COUNT_GROUP_BYS, COUNT_MEASURES, COUNT_TIMEOUT
from sealtrail._cli import _client, _filter, main
from sealtrail._cli_filter_options import _filter_options
from sealtrail._cli_spans import COUNT_WAIT, WAIT_FORMS
from sealtrail._durations import span_text
from sealtrail._words import counted

# What the commands work with (gRPC, protobuf, the client) each imports as it
# runs: --help imports none of it (tests/unit/test_cli_startup_imports.py).
if TYPE_CHECKING:
    from sealtrail._convert import EventCounts, GroupBy, Measure
    from sealtrail._tables import PlainTable

# The groupings as the command line spells them (`resource-type`, as its
# option is spelt), the API's spelling accepted too.
_GROUPINGS: Final = {name.replace("_", "-"): name for name in COUNT_GROUP_BYS} | {
    name: name for name in COUNT_GROUP_BYS
}
# The measures as the command line spells them (`p95`, `max`: of the
# durations), the API's spelling (`duration_p95`, `detail_sum`) accepted too;
# a detail's (`sum:tokens`) are `_KEYED`'s.
_MEASURES: Final = {
    name.removeprefix("duration_"): name for name in COUNT_MEASURES if name.startswith("duration_")
} | {name: name for name in COUNT_MEASURES}
# What takes a top-level details key after a colon, by option: each
# spelling's API name (`detail:model`, `sum:tokens`, `detail_sum:tokens`).
_KEYED: Final[dict[str, dict[str, str]]] = {
    "--by": {"detail": "detail"},
    "--measure": {
        spelled: str(name)
        for name in COUNT_MEASURES
        if name.startswith("detail_")
        for spelled in (name, name.removeprefix("detail_"))
    },
}


class _Spelled(click.Choice[str]):
    """A choice of `spellings`' values, each of which `--help` and a refusal
    show once, in the command line's spelling (`resource-type`, `p95`); a
    key of `spellings` (the API's `resource_type`, `duration_p95`), in any
    case, is taken as the value it maps to. Listing both spellings showed
    every choice twice."""

    def __init__(self, spellings: Mapping[str, str]) -> None:
        self._spellings = {taken.casefold(): shown for taken, shown in spellings.items()}
        super().__init__(dict.fromkeys(spellings.values()), case_sensitive=False)

    def normalize_choice(self, choice: object, ctx: click.Context | None) -> str:
        normalized = super().normalize_choice(choice, ctx)
        return self._spellings.get(normalized, normalized)


class _SpelledKeyed(_Spelled):
    """A `_Spelled` choice beside which `_KEYED[option]`'s names take a
    top-level details key after a colon, and only they: `detail:model` is
    taken as `detail:model` (the API's name, then the key as given, case
    and all); such a name alone (`detail`, `sum`; `avg` and `max` alone are
    the durations'), or a key after another (`p95:x`), is refused, saying
    so."""

    def __init__(self, spellings: Mapping[str, str], option: str) -> None:
        keyed = _KEYED[option]
        shown = {name: f"{name.removeprefix('detail_')}:KEY" for name in keyed.values()}
        super().__init__({**spellings, **shown})
        self._option = option
        self._keyed = keyed
        self._plain = {taken.casefold() for taken in spellings}  # `avg`, `max`: durations

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return super().convert(value, param, ctx)
        named, colon, key = value.partition(":")
        name = self._keyed.get(named.casefold())
        if not colon and named.casefold() in self._plain:
            return super().convert(value, param, ctx)
        if name is not None and not key:
            spelled = name.removeprefix("detail_")
            self.fail(f"{self._option} {spelled}:KEY needs a key of details ({spelled}:tokens)")
        if name is not None:
            return f"{name}:{key}"
        if colon:
            keyed = ", ".join(
                sorted({f"{n.removeprefix('detail_')}:KEY" for n in self._keyed.values()})
            )
            self.fail(f"{named} takes no key (only {keyed} do)")
        return super().convert(value, param, ctx)


# How the table shows a time bucket's start, from its RFC 3339 key: the date,
# or the date and the hour (and in a time zone, its offset, which tells apart
# the two hours of the night the clocks go back).
_BUCKET_SHOWN: Final = {"day": 10, "hour": 16}
# The columns a grouping whose key holds several parts shows them in.
_COLUMNS: Final = {
    "resource": ["resource type", "resource id"],
    "credential": ["credential kind", "credential id", "hint"],
}


@click.command()
@_filter_options
@click.option(
    "--by",
    "group_by",
    type=_SpelledKeyed(
        {taken: name.replace("_", "-") for taken, name in _GROUPINGS.items() if name != "detail"},
        "--by",
    ),
    help="Count per action, actor (id), category, outcome, severity, resource type,"
    " day or hour of occurred_at (UTC's, or --time-zone's), the API token that recorded the events"
    " (recorded-by), the client's IP address (ip) or country (country), resource (its type"
    " and id: which resources were touched most), actor type (actor-type: user, api_key,"
    " service, system), or the API request's route (http-route: which endpoints) or status"
    " code (http-status: 503), or the credential the actor acted with (credential: its"
    " kind, id and hint; which API key was used most), or the value of a top-level key of"
    " details (detail:KEY, detail:model: calls per model); without it, the total alone."
    " The API's spelling (resource_type) is taken too.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=1000),
    default=50,
    show_default=True,
    help="Groups to show at most: the largest (days and hours: the earliest).",
)
@click.option(
    "--time-zone",
    default="",
    metavar="ZONE",
    help="The IANA time zone (Europe/Berlin, Asia/Kolkata) whose days and hours"
    " --by day and --by hour count: local days (23 or 25 hours when the clocks"
    " change) and hours. Default: UTC.",
)
@click.option(
    "--measure",
    type=_SpelledKeyed(
        {
            taken: name.removeprefix("duration_")
            for taken, name in _MEASURES.items()
            if name.startswith("duration_")
        },
        "--measure",
    ),
    help="With --by, also measure each group's request durations (context.duration_ms):"
    " their mean (avg), median (p50), 95th or 99th percentile (p95, p99, interpolated)"
    " or the longest (max), in ms, over the events that have one (`measured`: how many);"
    " `-` for a group none of whose events has a duration. Or the sum, mean or greatest of"
    " the numbers under a top-level key of details (sum:KEY, avg:KEY, max:KEY: sum:tokens),"
    " values that are no number passed over.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@click.option(
    "--timeout",
    type=COUNT_WAIT,
    default=span_text(int(COUNT_TIMEOUT)),
    show_default=True,
    help=f"How long to wait for the count: {WAIT_FORMS}; longer than the server's"
    " SEALTRAIL_COUNT_TIMEOUT is of use where that was raised.",
)
@click.pass_context
def stats(
    ctx: click.Context,
    /,
    group_by: str | None,
    limit: int,
    time_zone: str,
    measure: str | None,
    as_json: bool,
    timeout: float,
    **criteria: Any,
) -> None:
    """Count matching events, in all and per group: `sealtrail stats --by actor
    --action user.login --outcome failure --since 7d`. `--by action` lists the
    actions the log holds. Counts cover the events retention has kept."""
    by, _, group_by_detail = (group_by or "").partition(":")
    measured_as, _, measure_detail = (measure or "").partition(":")
    grouping: GroupBy = _GROUPINGS[by.lower()] if by else ""
    measured: Measure = _MEASURES[measured_as.lower()] if measured_as else ""
    if measured and not grouping:
        raise click.UsageError("--measure measures groups: give --by too (--by day, --by action)")
    with _client(ctx) as client:
        counts = client.count_events(
            _filter(criteria),
            group_by=grouping,
            limit=limit,
            time_zone=time_zone,
            measure=measured,
            group_by_detail=group_by_detail,
            measure_detail=measure_detail,
            timeout=timeout,
        )
    if as_json:
        said = dataclasses.asdict(counts)
        for group in said["groups"]:
            label = group.pop("label")
            if not measured:  # each group's key and count alone, as before measures
                del group["value"], group["measured"]
            if grouping == "actor":  # who the actor is, beside its id
                group["name"] = label
        click.echo(json.dumps(said))
        return
    if grouping:
        from sealtrail._tables import print_table

        print_table(_table(counts, grouping, time_zone, measured, group_by_detail, measure_detail))
    click.echo(f"total: {counted(counts.total, 'event')}")
    if counts.truncated:
        click.echo(
            f"{counted(counts.total_groups, 'group')}: showing the first {len(counts.groups)};"
            " raise --limit or narrow the filter",
            err=True,
        )


def _table(
    counts: EventCounts,
    grouping: str,
    time_zone: str,
    measure: str = "",
    group_by_detail: str = "",
    measure_detail: str = "",
) -> PlainTable:
    from sealtrail._convert import credential_of_key, resource_of_key
    from sealtrail._tables import PlainTable

    header = group_by_detail or grouping.replace("_", " ")
    if grouping in _BUCKET_SHOWN:
        header = f"{header} ({time_zone or 'UTC'})"
    table = PlainTable()
    # A resource in two columns, its type and its id, as the key's JSON array
    # holds them (one of them "" where the events have none).
    # A credential in three, its kind, id and hint (`...a1b2`, as events show it).
    headers = _COLUMNS.get(grouping, [header])
    if grouping == "actor":  # an actor's id, and who it is beside it (`label`)
        headers = [*headers, "name"]
    for shown_header in headers:
        table.add_column(shown_header, overflow="fold")
    table.add_column("events", justify="right")
    table.add_column("share", justify="right")
    unit = " ms"
    if measure_detail:
        # `sum of tokens`, in the detail's own unit, and how many had a number.
        table.add_column(f"{measure.removeprefix('detail_')} of {measure_detail}", justify="right")
        table.add_column("measured", justify="right")
        unit = ""
    elif measure:
        # `p95 duration`, its value in ms, and how many events had a duration.
        table.add_column(f"{measure.removeprefix('duration_')} duration", justify="right")
        table.add_column("measured", justify="right")
    for group in counts.groups:
        key = group.key or "(none)"
        if grouping in _BUCKET_SHOWN:
            shown = key[: _BUCKET_SHOWN[grouping]].replace("T", " ")
            key = f"{shown} {key[19:]}" if time_zone and grouping == "hour" else shown
        cells = [key]
        if grouping == "resource":
            cells = ["(none)", ""] if not group.key else list(resource_of_key(group.key))
        if grouping == "credential":
            kind, credential_id, hint = credential_of_key(group.key)
            cells = [kind or "(none)", credential_id, f"...{hint}" if hint else ""]
        if grouping == "actor":
            cells = [*cells, group.label]
        share = f"{tenths(100 * group.count / counts.total)}%" if counts.total else ""
        if measure:
            shown = f"{tenths(group.value)}{unit}" if group.measured else "-"
            cells = [*cells, str(group.count), share, shown, str(group.measured)]
            table.add_row(*cells)
            continue
        table.add_row(*cells, str(group.count), share)
    return table


def tenths(value: float) -> str:
    """`value` to a tenth, thousands separated (`1,234.5`): its shortest text
    (`repr`, JavaScript's too) rounded half away from zero, 7.25 and 0.15
    (a float a hair under 0.15) up to 7.3 and 0.2, as the console's
    Breakdown panel rounds (Intl.NumberFormat's halfExpand, docs/console.md).
    Python's format rounds the float's exact value to the even tenth (7.2,
    0.1): the two said two figures of one count. A sum past a double's
    range is `inf`."""
    if not math.isfinite(value):
        return f"{value}"
    return f"{Decimal(repr(value)).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP):,.1f}"


# On the main command as this module loads, whether _cli imported it (as it
# imports each) or it was imported first (tests/unit/test_cli_modules_import_alone.py).
main.add_command(stats)
