"""`sealtrail actions`: the tenant's action catalogue, every action its log
holds with how often and when last, and what its admins say each means; and
`describe`, an admin's setting or clearing of one description. Registers its
commands on the main command of _cli.py, whose helpers it shares."""

from __future__ import annotations

import click

from sealtrail._choices import CATEGORIES
from sealtrail._cli import _client, main, table_time


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
    that no event has yet (0 events). `category`: the one the
    catalogue declares for the action's events, if any. Read page after page, every page
    counting the same log; recorded once, as a query is."""
    from sealtrail._convert import enum_label
    from sealtrail._tables import PlainTable, print_table
    from sealtrail.v1 import event_pb2

    table = PlainTable("action", "events", "last seen", "description", "category")
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
                enum_label(event_pb2.Category, entry.category),
            )
    print_table(table)
    if more:
        click.echo(
            f"more actions: showing the first {limit}; raise --limit (0: every action)", err=True
        )


@actions.command("describe")
@click.argument("action")
@click.argument("description", required=False)
@click.option(
    "--category",
    type=click.Choice(CATEGORIES),
    help="The category every event of ACTION must have while the tenant's strict actions"
    " are on (`sealtrail settings --strict-actions on`).",
)
@click.option(
    "--no-category", is_flag=True, help="Remove the category declared for ACTION (any goes)."
)
@click.option(
    "--clear", is_flag=True, help="Remove ACTION's description (a declared category stays)."
)
@click.pass_context
def describe(
    ctx: click.Context,
    action: str,
    description: str | None,
    category: str | None,
    no_category: bool,
    clear: bool,
) -> None:
    """Admin: say what ACTION means (`sealtrail actions describe
    api_key.create "An API key was created"`: 1 to 500 characters, stored as
    redaction leaves it) or remove its description (--clear), and declare the
    category its events must have (--category security) or remove it
    (--no-category). Only what is given changes: a description fixed keeps
    the declared category, a category keeps the description. An action left
    with neither leaves the catalogue. Each change is recorded in the log
    with the values it replaced."""
    from sealtrail._convert import KEEP, Keep

    if description is not None and clear:
        raise click.UsageError("give a DESCRIPTION or --clear, not both", ctx)
    if category is not None and no_category:
        raise click.UsageError("give --category or --no-category, not both", ctx)
    if description is None and not clear and category is None and not no_category:
        raise click.UsageError(
            "give a DESCRIPTION (or --clear), --category (or --no-category), or both", ctx
        )
    if description is not None and not description.strip():
        raise click.UsageError("DESCRIPTION is blank; to remove one, use --clear", ctx)
    described: str | Keep | None = None if clear else KEEP if description is None else description
    declared: str | Keep | None = None if no_category else KEEP if category is None else category
    with _client(ctx) as client:
        answer = client.set_action_description(action, described, category=declared)
    from sealtrail._convert import enum_label
    from sealtrail.v1 import event_pb2

    entry = answer.entry
    said = enum_label(event_pb2.Category, entry.category)
    if not answer.event_id:
        click.echo(f"{action}: already as asked; nothing recorded")
    elif entry.description:
        click.echo(f"{action}: {entry.description}" + (f" [category {said}]" if said else ""))
    elif said:  # the description cleared, or never given
        kept = f"; its category {said} stays" if clear else f" [category {said}]"
        click.echo(f"{action}: description cleared{kept}" if clear else f"{action}:{kept}")
    else:
        click.echo(f"{action}: {'description' if clear else 'category'} cleared")


# On the main command as this module loads, whether _cli imported it (as it
# imports each) or it was imported first (tests/unit/test_cli_modules_import_alone.py).
main.add_command(actions)
