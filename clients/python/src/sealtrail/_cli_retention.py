"""`sealtrail retention`, `legal-hold`, `erase-tenant` and `verify-erasure`: a tenant admin's
powers over how long its log is kept. Registers its commands on the main
command of _cli.py, whose helpers it shares."""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, TextIO, TypeVar

import click

from sealtrail._cli import _client, _count, given_as, main, terminal_safe, unchanged_since_read
from sealtrail._typed import given_words
from sealtrail._words import counted

# What the commands work with (gRPC, protobuf, the client) each imports as it
# runs: --help imports none of it (tests/unit/test_cli_startup_imports.py).
if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from sealtrail.v1 import retention_pb2


def _days(value: int) -> str:
    return "forever" if value == 0 else counted(value, "day")


def _rule_option(value: str) -> tuple[str, str]:
    name, sep, days = value.partition("=")
    if not sep or not name or not days:
        raise click.BadParameter(f"{value!r} is not NAME=DAYS")
    return name, days


def _days_value(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _checked_days(days: str, shown: str) -> None:
    """Refuses days the client would refuse in the call, named `shown` (as
    typed), not by the call's argument (`categories['security']`)."""
    from sealtrail._convert import retention_days

    try:
        retention_days(_days_value(days), field=shown)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _rules(
    ctx: click.Context, option: str, values: tuple[str, ...]
) -> dict[str, tuple[str, int | str]]:
    """The rules `option` gave, NAME=DAYS each, checked: by name (the last
    of a name given), each with its words as typed and its days."""
    from sealtrail._convert import enum_value
    from sealtrail.v1 import event_pb2

    rules: dict[str, tuple[str, int | str]] = {}
    for value in values:
        name, days = _rule_option(value)
        shown = given_words(option, value)
        if option == "--category":
            try:
                enum_value(event_pb2.Category, name, field=shown)
            except ValueError as error:
                raise click.BadParameter(str(error), ctx) from None
        _checked_days(days, shown)
        rules[name] = (shown, _days_value(days))
    return rules


_ETAG_HELP = (
    "Change only the {what} `sealtrail retention` showed with this etag; if it changed"
    " since, nothing is changed and the command fails (ABORTED)."
)


@click.group(invoke_without_command=True)
@click.pass_context
def retention(ctx: click.Context) -> None:
    """Admin: show (no subcommand) or set the tenant's retention policy."""
    if ctx.invoked_subcommand is not None:
        return

    with _client(ctx) as client:
        answer = client.get_retention_policy()
    policy, hold = answer.policy, answer.legal_hold
    _echo_rules(policy)
    click.echo(f"etag: {terminal_safe(policy.etag)}")
    if answer.HasField("pending_change"):
        pending = answer.pending_change
        click.echo(f"pending change, effective {_utc(pending.effective_time)}:")
        _echo_rules(pending.policy, indent="  ")
        click.echo("  (`sealtrail retention cancel` cancels it)")
    click.echo(f"limits: {_limits_text(answer.limits)}")
    click.echo(f"legal hold: {'on (' + terminal_safe(hold.reason) + ')' if hold.on else 'off'}")
    click.echo(f"legal hold etag: {terminal_safe(hold.etag)}")


def _echo_rules(policy: retention_pb2.RetentionPolicy, *, indent: str = "") -> None:
    from sealtrail._convert import enum_label
    from sealtrail.v1 import event_pb2

    click.echo(f"{indent}default: {_days(policy.default_days)}")
    for rule in policy.rules:
        which = rule.WhichOneof("selector")
        if which == "category":
            name = f"category {enum_label(event_pb2.Category, rule.category)}"
        else:
            name = f"actions {terminal_safe(rule.action_prefix)}"
        click.echo(f"{indent}{name}: {_days(rule.days)}")


def _utc(moment: Timestamp) -> str:
    return moment.ToDatetime(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _limits_text(limits: retention_pb2.RetentionLimits) -> str:
    """What the operator allows the policy: the deployment's floor, the
    tenant's plan's ceiling (a server that predates them sends neither)."""
    floor = f"at least {counted(limits.min_days, 'day')}" if limits.min_days else "no minimum"
    ceiling = f"at most {counted(limits.max_days, 'day')}" if limits.max_days else "no maximum"
    return f"{floor}, {ceiling} (the operator's)"


_Answer = TypeVar("_Answer")


@retention.command("set")
@click.argument("default")
@click.option(
    "--category",
    "categories",
    multiple=True,
    metavar="NAME=DAYS",
    help="Override for a category, e.g. authentication=1y (repeatable).",
)
@click.option(
    "--action",
    "actions",
    multiple=True,
    metavar="PREFIX=DAYS",
    help="Override for an action prefix, e.g. rag.*=90 (repeatable).",
)
@click.option("--etag", default="", help=_ETAG_HELP.format(what="policy"))
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only show what the policy would remove if it applied now; change nothing.",
)
@click.option(
    "--yes",
    is_flag=True,
    help="Set it without asking, even if it removes events now or keeps any less long.",
)
@click.pass_context
def retention_set(
    ctx: click.Context,
    default: str,
    categories: tuple[str, ...],
    actions: tuple[str, ...],
    etag: str,
    dry_run: bool,
    yes: bool,
) -> None:
    """Replace the policy: DEFAULT and every override are days (90 or 90d),
    weeks (2w), years of 365 days (1y) or forever. Recorded in the log; with --dry-run, only
    shows what it would remove. A policy that would remove events now, or
    keep any less long than now, shows them and asks first, from a terminal;
    elsewhere (a script) it is refused unless --yes."""
    by_category = _rules(ctx, "--category", categories)
    by_action = _rules(ctx, "--action", actions)
    shown_default = given_words("DEFAULT", default)
    _checked_days(default, shown_default)
    # The policy's rules in the order the client sends them (categories
    # first, one per name, the last given), each named as typed when the
    # server refuses it: not `policy.rules[1].action_prefix` (helper-334).
    given = [*by_category.values(), *by_action.values()]
    given_as(
        ctx,
        {"policy.default_days": shown_default}
        | {f"policy.rules[{at}]": shown for at, (shown, _) in enumerate(given)},
    )

    def with_policy(call: Callable[..., _Answer], etag: str) -> _Answer:
        return call(
            _days_value(default),
            categories={name: days for name, (_, days) in by_category.items()},
            action_prefixes={prefix: days for prefix, (_, days) in by_action.items()},
            etag=etag,
        )

    read_with: str | None = "sealtrail retention"  # where the given etag was read
    with _client(ctx) as client:
        if not (dry_run or yes or etag):
            # What was shown is what is set, or nothing: both on one etag, read
            # here (a change made while the question waits aborts the set).
            read_with = None
            etag = client.get_retention_policy().policy.etag
        with unchanged_since_read("the retention policy", read_with=read_with):
            if dry_run or not yes:
                preview = with_policy(client.preview_retention_policy, etag)
                if dry_run:
                    _echo_preview(preview, err=False)
                    return
                # As the console does: asked before a policy that removes
                # events now, or keeps any less long though it removes none yet.
                if preview.events or preview.at_least:
                    _echo_preview(preview, err=True)
                    _confirm_removal(ctx, legal_hold=preview.legal_hold)
                elif preview.shortened:
                    _echo_preview(preview, err=True)
                    _confirm_shortening(ctx)
            answer = with_policy(client.set_retention_policy, etag)
    # A retried call whose first try set it answers that try's change (helper-197).
    if answer.HasField("pending_change"):
        # It keeps some events less long: it waits (the server's
        # SEALTRAIL_RETENTION_SHORTENING_DELAY), and can be cancelled meanwhile.
        when = _utc(answer.pending_change.effective_time)
        said = "policy change scheduled" if answer.event_id else "policy change already scheduled"
        click.echo(f"{said}: it takes effect {when} (`sealtrail retention cancel` cancels it)")
        return
    click.echo("policy updated" if answer.event_id else "policy already as asked; nothing recorded")


@retention.command("cancel")
@click.pass_context
def retention_cancel(ctx: click.Context) -> None:
    """Cancel the pending policy change, keeping the policy in force: sets
    the policy in force again, on its etag. Recorded in the log."""
    from sealtrail._convert import enum_label
    from sealtrail.v1 import event_pb2

    with _client(ctx) as client:
        answer = client.get_retention_policy()
        if not answer.HasField("pending_change"):
            click.echo("no pending policy change; nothing recorded")
            return
        policy = answer.policy
        categories: dict[str, int | str] = {}
        prefixes: dict[str, int | str] = {}
        for rule in policy.rules:
            if rule.WhichOneof("selector") == "category":
                categories[enum_label(event_pb2.Category, rule.category)] = rule.days
            else:
                prefixes[rule.action_prefix] = rule.days
        with unchanged_since_read("the retention policy", read_with=None):
            client.set_retention_policy(
                policy.default_days,
                categories=categories,
                action_prefixes=prefixes,
                etag=policy.etag,
            )
    click.echo("pending policy change cancelled")


def _confirm_removal(ctx: click.Context, *, legal_hold: bool) -> None:
    """Asked at a terminal; refused elsewhere: events removed for good must
    not hang on a question no one sees, nor take a line of a script's input
    as its answer."""
    when = "once the legal hold is released" if legal_hold else "at the next purge"
    if not _at_a_terminal():
        raise click.UsageError(
            f"this policy removes events for good {when}; pass --yes to set it", ctx
        )
    click.confirm(f"Remove them for good {when}? (--yes answers yes)", abort=True, err=True)


def _confirm_shortening(ctx: click.Context) -> None:
    """Asked at a terminal; refused elsewhere, as a removal is: a shorter
    retention removes events for good once they age past it."""
    if not _at_a_terminal():
        raise click.UsageError(
            "this policy keeps events less long than now; pass --yes to set it", ctx
        )
    click.confirm("Keep them less long than now? (--yes answers yes)", abort=True, err=True)


def _at_a_terminal() -> bool:
    """Whether someone can see the question (on stderr) and answer it (on stdin)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _echo_preview(preview: retention_pb2.PreviewRetentionPolicyResponse, *, err: bool) -> None:
    def events(count: int, at_least: bool) -> str:
        return f"{'at least ' if at_least else ''}{_count(count, 'event')}"

    click.echo(f"would remove {events(preview.events, preview.at_least)} now", err=err)
    for rule in preview.rules:
        horizon = rule.received_before.ToDatetime(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(
            f"  {terminal_safe(rule.rule)}: {events(rule.events, rule.at_least)}"
            f" ({counted(rule.days, 'day')}: received before {horizon})",
            err=err,
        )
    if preview.shortened:
        click.echo("keeps events less long than now:", err=err)
    for cut in preview.shortened:
        click.echo(
            f"  {terminal_safe(cut.events)}: {_days(cut.before_days)} -> {_days(cut.after_days)}",
            err=err,
        )
    if preview.legal_hold:
        click.echo("legal hold on: nothing is removed until it is released", err=err)


@click.command("legal-hold")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--reason", default="", help="Why (a case or matter); required for `on`.")
@click.option("--etag", default="", help=_ETAG_HELP.format(what="hold"))
@click.pass_context
def legal_hold(ctx: click.Context, state: str, reason: str, etag: str) -> None:
    """Admin: place or release the tenant's legal hold; nothing is purged while it is on.
    Placing the hold that is on (same reason) or releasing none changes and
    records nothing, and says so (exit 0); another reason replaces the hold's."""
    with (
        _client(ctx) as client,
        unchanged_since_read("the legal hold", read_with="sealtrail retention"),
    ):
        answer = client.set_legal_hold(state == "on", reason=reason, etag=etag)
    hold = answer.legal_hold
    # No event id: the hold was already as asked, and nothing was recorded (a
    # retried call whose first try changed it answers that try's, helper-197).
    if answer.event_id:
        click.echo(f"legal hold {'on' if hold.on else 'off'}")
    elif hold.on:
        click.echo(f"legal hold already on ({terminal_safe(hold.reason)}); nothing recorded")
    else:
        click.echo("no legal hold was set; nothing recorded")


@click.command("erase-tenant")
@click.option("--confirm", required=True, metavar="TENANT", help="Your tenant id, typed back.")
@click.pass_context
def erase_tenant(ctx: click.Context, confirm: str) -> None:
    """Admin: irreversibly remove every event, token and setting of your tenant.
    Prints the receipt (keep it: it holds the log's final signed checkpoint)."""
    from google.protobuf import json_format

    with _client(ctx) as client:
        receipt = client.erase_tenant(confirm)
    click.echo(json_format.MessageToJson(receipt, indent=2))


@click.command("verify-erasure")
@click.argument("receipt", type=click.File("r"))
@click.option(
    "--key",
    "keys",
    metavar="VKEY",
    multiple=True,
    required=True,
    help="The deployment's verifier key (name+id+key) you pinned, never one taken from the"
    " server; repeat it after a key rotation.",
)
def verify_erasure(receipt: TextIO, keys: tuple[str, ...]) -> None:
    """Check an erasure receipt offline (RECEIPT: the JSON `erase-tenant` or
    `sealtrail-server tenant erase` printed, or - for stdin): its signature by
    --key, and that its fields are what is signed. Exits 0 when verified, 1
    when not (unsigned, signed by no given key, a signature that does not
    verify, or fields edited since it was signed)."""
    from sealtrail._erased_by import erased_by_said
    from sealtrail._erasure_check import ErasureReceiptError, verify_erasure_receipt
    from sealtrail.tlog import receipt_time

    try:
        text = receipt.read()
    except UnicodeDecodeError as error:  # was a traceback
        click.echo(
            f"FAILED: {terminal_safe(receipt.name)}: not a receipt (not UTF-8 text:"
            f" byte {error.start})",
            err=True,
        )
        sys.exit(1)
    try:
        check = verify_erasure_receipt(text, key=keys)
    except ErasureReceiptError as error:  # which may quote the receipt's text, a forger's
        click.echo(f"FAILED: {terminal_safe(str(error))}", err=True)
        sys.exit(1)
    root = base64.b64encode(check.final_root_hash).decode()
    click.echo(
        terminal_safe(
            f"OK: tenant {check.tenant_id} was erased at {receipt_time(check.erased_at)} by"
            # Labelled as `sealtrail-server tenant erasures` says it: `token ID`,
            # or `operator NAME` for the `sealtrail-server:NAME` of its erasure.
            f" {erased_by_said(check.erased_by)} ({counted(check.final_tree_size, 'event')},"
            f" root {root})"
            f" from the log {check.origin}; receipt signed by {', '.join(check.signed_by)}"
        )
    )


# On the main command as this module loads, whether _cli imported it (as it
# imports each) or it was imported first (tests/unit/test_cli_modules_import_alone.py).
main.add_command(retention)
main.add_command(legal_hold)
main.add_command(erase_tenant)
main.add_command(verify_erasure)
