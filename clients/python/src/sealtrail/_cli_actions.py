"""`sealtrail actions`: the tenant's action catalogue, every action its log
holds with how often and when last, and what its admins say each means; and
`describe`, an admin's setting or clearing of one description. Registered on
the main command by _cli.py, whose helpers it shares."""

from __future__ import annotations

import click

from sealtrail._cli import PlainTable, _client, print_table, table_time
from sealtrail._words import counted


@click.group()
def actions() -> None:
    """The action catalogue: `list` the actions the log holds and what each
    means; `describe` one (admin)."""


@actions.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=1000),
    default=1000,
    show_default=True,
    help="Actions to show at most, by name.",
)
@click.pass_context
def list_actions(ctx: click.Context, limit: int) -> None:
    """Every action the log holds, by name, with its number of events, when
    the latest occurred (UTC) and its description; then the actions described
    that no event has yet (0 events). Recorded as a query is."""
    with _client(ctx) as client:
        catalog = client.action_catalog(limit=limit)
    table = PlainTable("action", "events", "last seen", "description")
    for entry in catalog.entries:
        table.add_row(
            entry.action,
            f"{entry.count:,}",
            table_time(entry.last_occurred_time) if entry.HasField("last_occurred_time") else "",
            entry.description,
        )
    print_table(table)
    if catalog.truncated:
        click.echo(
            f"{counted(catalog.total_entries, 'action')}: showing the first"
            f" {len(catalog.entries)}; raise --limit",
            err=True,
        )


@actions.command("describe")
@click.argument("action")
@click.argument("description", required=False)
@click.option("--clear", is_flag=True, help="Remove the action's description.")
@click.pass_context
def describe(ctx: click.Context, action: str, description: str | None, clear: bool) -> None:
    """Admin: say what ACTION means (`sealtrail actions describe
    doc.share_external "A document was shared outside the organisation"`: 1
    to 500 characters, stored as redaction leaves it), or remove what it
    says (--clear). Each change is recorded in the log with the description
    it replaced."""
    if clear == (description is not None):
        raise click.UsageError("give a DESCRIPTION or --clear, not both nor neither", ctx)
    if description is not None and not description.strip():
        raise click.UsageError("DESCRIPTION is blank; to remove one, use --clear", ctx)
    with _client(ctx) as client:
        answer = client.set_action_description(action, description or "")
    if not answer.event_id:
        click.echo(f"{action}: already as asked; nothing recorded")
    elif clear:
        click.echo(f"{action}: description cleared")
    else:
        click.echo(f"{action}: {answer.entry.description}")
