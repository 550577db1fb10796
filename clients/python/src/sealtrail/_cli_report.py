"""`sealtrail report`: a summary of a tenant's activity over a period
(totals, counts by category, outcome and severity, the top actors, actions,
resource types, resources and credentials, the security alerts fired, the first and
last event),
read against a signed checkpoint, printed for a terminal, in Markdown or as
JSON (docs/reports.md). Registers its commands on the main command of _cli.py,
whose helpers it shares."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

import click

from sealtrail._choices import COUNT_TIMEOUT, MAX_TOP
from sealtrail._cli import _client, _filter, main, terminal_safe
from sealtrail._cli_filter_options import _filter_options
from sealtrail._cli_spans import COUNT_WAIT, WAIT_FORMS
from sealtrail._durations import span_text
from sealtrail._words import counted

# What the commands work with (gRPC, protobuf, the client) each imports as it
# runs: --help imports none of it (tests/unit/test_cli_startup_imports.py).
if TYPE_CHECKING:
    from sealtrail._convert import EventCount
    from sealtrail._report import (
        ActivityReport,
    )
    from sealtrail._tables import PlainTable

# The exit status of a report that lists security alerts, with --fail-on-alerts.
ALERTS_STATUS: Final = 3


@click.command()
@_filter_options
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
    help="text: tables for a terminal; markdown: to paste in a ticket or a mail; json: one"
    " object, its keys as docs/reports.md lists them.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1, max=MAX_TOP),
    default=10,
    show_default=True,
    help="Actors, actions, resource types, resources and credentials to list, the largest first.",
)
@click.option(
    "--fail-on-alerts",
    is_flag=True,
    help=f"Exit with {ALERTS_STATUS} once the report is printed if security alerts fired in"
    " the period (a scheduled CI job then fails, and someone looks).",
)
@click.option(
    "--timeout",
    type=COUNT_WAIT,
    default=span_text(int(COUNT_TIMEOUT)),
    show_default=True,
    help=f"How long to wait for each count, as `stats --timeout`: {WAIT_FORMS}.",
)
@click.pass_context
def report(
    ctx: click.Context,
    /,
    output: str,
    top: int,
    fail_on_alerts: bool,
    timeout: float,
    **criteria: Any,
) -> None:
    """Summarize the activity of matching events over a period: `sealtrail
    report --since 7d`. Totals; counts by category, outcome (failures called
    out) and severity; the top actors, actions, resource types, resources
    (type and id) and credentials (kind, id and hint: which API keys were used
    most); the security alerts fired; the first and last event; and the
    signed checkpoint (tree size and root) of the log it read. The period
    ends at that checkpoint's time, or at --until if earlier. At most 13 calls,
    whatever the size of the log."""
    from sealtrail._report import INCONSISTENT, UNAVAILABLE

    with _client(ctx) as client:
        found = client.activity_report(_filter(criteria), top=top, timeout=timeout)
    if output == "json":
        click.echo(json.dumps(found.to_dict()))
    elif output == "markdown":
        click.echo(found.to_markdown(), nl=False)
    else:
        _print_text(found)
    if not found.consistent:
        click.echo(f"warning: {INCONSISTENT}", err=True)
    if found.unavailable and found.total:
        # Still exit 0: the report printed is right in all it shows.
        left_out = ", ".join(name.replace("_", " ") for name in found.unavailable)
        click.echo(f"warning: counts by {left_out} {UNAVAILABLE}", err=True)
    if fail_on_alerts and found.alerts_total:
        ctx.exit(ALERTS_STATUS)


def _print_text(found: ActivityReport) -> None:
    from sealtrail._report import NO_EVENTS, UNAVAILABLE, event_line, share, table_time
    from sealtrail._tables import PlainTable, print_table

    click.echo("Sealtrail activity report")
    click.echo(f"period: {found.period()}")
    click.echo(terminal_safe(f"log: {found.log_state()}"))
    if not found.total:  # not a table of nothing for each count
        click.echo(NO_EVENTS)
        return
    click.echo(f"total: {counted(found.total, 'event', grouped=True)}")
    click.echo(
        f"failures: {found.failures:,} ({share(found.failures, found.total)}),"
        f" denied: {found.denied:,} ({share(found.denied, found.total)})"
    )
    for title, groups in found.breakdowns():
        if found.lacks(title.lower()):
            click.echo(f"{title}: {UNAVAILABLE}")
            continue
        print_table(_table(title, title.lower(), groups, found.total))
    for title, header, top in found.tops():
        if found.lacks(header):
            click.echo(f"Top {title}: {UNAVAILABLE}")
            continue
        heading = f"Top {len(top.groups)} {title} of {top.distinct:,}"
        print_table(_table(heading, header, top.groups, found.total))
    click.echo(f"security alerts: {found.alerts_total:,}")
    if found.alerts:
        alerts = PlainTable(
            title=None
            if len(found.alerts) == found.alerts_total
            else f"the latest {len(found.alerts)}"
        )
        for header in ("time (UTC)", "seq", "severity", "alert"):
            alerts.add_column(header, overflow="fold")
        for alert in found.alerts:
            alerts.add_row(
                table_time(alert.occurred_at),
                str(alert.seq),
                alert.severity,
                alert.description or alert.action,
            )
        print_table(alerts)
    for name, event in (("first", found.first_event), ("last", found.last_event)):
        if event is not None:
            click.echo(terminal_safe(f"{name} event: {event_line(event)}"))


def _table(title: str, header: str, groups: tuple[EventCount, ...], total: int) -> PlainTable:
    from sealtrail._report import cells, columns, share
    from sealtrail._tables import PlainTable

    table = PlainTable(title=title, title_justify="left")
    for column in columns(header):
        table.add_column(column, overflow="fold")
    table.add_column("events", justify="right")
    table.add_column("share", justify="right")
    for group in groups:
        table.add_row(*cells(header, group), f"{group.count:,}", share(group.count, total))
    return table


# On the main command as this module loads, whether _cli imported it (as it
# imports each) or it was imported first (tests/unit/test_cli_modules_import_alone.py).
main.add_command(report)
