"""`sealtrail actions`: the tenant's action catalogue, every action its log
holds with how often and when last, and what its admins say each means; and
`describe`, an admin's setting or clearing of one description. Registered on
the main command by _cli.py, whose helpers it shares."""

from __future__ import annotations

import click

from sealtrail._cli import _client, table_time


@click.group()
def actions() -> None:
    """The action catalogue: `list` the actions the log holds and what each
    means; `describe` one (admin)."""


@actions.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Actions to show at most, by name; 0: every action.",
)
@click.pass_context
def list_actions(ctx: click.Context, limit: int) -> None:
    """Every action the log holds, by name, with its number of events, when
    the latest occurred (UTC) and its description; then the actions described
    that no event has yet (0 events). Read page after page, every page
    counting the same log; recorded once, as a query is."""
    from sealtrail._tables import PlainTable, print_table

    table = PlainTable("action", "events", "last seen", "description")
    more = False
    with _client(ctx) as client:
        if limit == 0:
            entries = client.action_catalog_entries(page_size=1000)
        else:
            # One more than shown tells whether --limit cut the answer short.
            entries = client.action_catalog_entries(page_size=min(limit + 1, 1000), limit=limit + 1)
        for shown, entry in enumerate(entries, 1):
            if shown > limit > 0:
                more = True
                break
            table.add_row(
                entry.action,
                f"{entry.count:,}",
                table_time(entry.last_occurred_time)
                if entry.HasField("last_occurred_time")
                else "",
                entry.description,
            )
    print_table(table)
    if more:
        click.echo(
            f"more actions: showing the first {limit}; raise --limit (0: every action)", err=True
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
