"""`sealtrail alerts`: alert rules (admin). Registers its commands on the main
command of _cli.py, whose helpers it shares."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, cast

import click
from click.core import ParameterSource

from sealtrail._choices import SEVERITIES, kinds_named
from sealtrail._cli import (
    _client,
    _filter,
    given_as,
    main,
    terminal_safe,
    unchanged_since_read,
)
from sealtrail._cli_filter_options import _tail_filter_options, filter_given
from sealtrail._cli_spans import Seconds
from sealtrail._durations import span_text
from sealtrail._sink_names import sink_ids_of
from sealtrail._typed import given_words, typed

# What the commands work with (gRPC, protobuf, the client) each imports as it
# runs: --help imports none of it (tests/unit/test_cli_startup_imports.py).
if TYPE_CHECKING:
    from sealtrail.v1 import alerting_pb2, event_pb2


def _describe(rule: alerting_pb2.AlertRule) -> str:
    from sealtrail._convert import enum_label
    from sealtrail.v1 import alerting_pb2

    kind = rule.WhichOneof("condition") or ""
    if kind == "threshold":
        by = enum_label(alerting_pb2.AlertGroupBy, rule.threshold.group_by)
        grouped = f" by {by}" if by else ""  # "" ungrouped (enum_label of 0)
        if rule.threshold.exact_actor_ids:
            grouped += " (ids compared exactly)"
        window = span_text(rule.threshold.window_seconds)
        return f"threshold: {rule.threshold.count} in {window}{grouped}"
    if kind == "spike":
        spike = rule.spike
        by = enum_label(alerting_pb2.AlertGroupBy, spike.group_by)
        return (
            f"spike: {spike.factor:g}x the average of {spike.baseline_windows} windows of"
            f" {span_text(spike.window_seconds)}, at least {spike.min_count}"
            + (f" by {by}" if by else "")
            + (" (ids compared exactly)" if spike.exact_actor_ids else "")
        )
    if kind == "absence":
        return f"absence: none for {span_text(rule.absence.window_seconds)}"
    if kind == "off_hours":
        hours = rule.off_hours
        days = ",".join(map(str, hours.working_days))
        return f"off hours: {hours.start_hour}-{hours.end_hour} {hours.time_zone} days {days}"
    return kind


class _NoSuchRule(click.ClickException):
    """Exits 2, as the service's NOT_FOUND does."""

    exit_code = 2


@click.group(invoke_without_command=True)
@click.pass_context
def alerts(ctx: click.Context) -> None:
    """Admin: list (no subcommand, or `list`), show, create, update, disable,
    enable and delete alert rules."""
    if ctx.invoked_subcommand is not None:
        return
    _list_rules(ctx)


@alerts.command("list")
@click.pass_context
def alerts_list(ctx: click.Context) -> None:
    """List the alert rules: each one's condition, severity, how often it
    fired and when last (`show RULE_ID` for its filter and sinks)."""
    _list_rules(ctx)


def _list_rules(ctx: click.Context) -> None:
    """The tenant's alert rules as a table."""
    from sealtrail._convert import enum_label
    from sealtrail._tables import PlainTable, print_table
    from sealtrail.v1 import event_pb2

    with _client(ctx) as client:
        rules = client.list_alert_rules()
    table = PlainTable("id", "name", "condition", "severity", "fired", "last fired")
    for rule in rules:
        table.add_row(
            rule.id,
            rule.name + (" (disabled)" if rule.disabled else ""),
            _describe(rule),
            enum_label(event_pb2.Severity, rule.severity),
            f"{rule.fired:,}",
            rule.last_fired_time.ToJsonString() if rule.HasField("last_fired_time") else "",
        )
    print_table(table)
    for rule in rules:  # on stderr: the table stays what a script reads
        for warning in rule.warnings:
            click.echo(f"{terminal_safe(rule.id)}: {terminal_safe(warning)}", err=True)


def _warn(rule: alerting_pb2.AlertRule) -> None:
    """What the server says may keep the rule it saved from firing (its
    `warnings`), on stderr: stdout says the rule alone."""
    for warning in rule.warnings:
        click.echo(f"warning: {terminal_safe(warning)}", err=True)


def _read_rule(client: Any, rule_id: str) -> alerting_pb2.AlertRule:
    """The rule `rule_id` as listed (there is no call for one rule)."""
    from sealtrail.v1 import alerting_pb2

    found = next((rule for rule in client.list_alert_rules() if rule.id == rule_id), None)
    if found is None:
        raise _NoSuchRule(f"no alert rule {rule_id}")
    return cast(alerting_pb2.AlertRule, found)


@alerts.command("show")
@click.argument("rule_id")
@click.pass_context
def show(ctx: click.Context, rule_id: str) -> None:
    """A rule whole, as JSON: its condition and filter, sinks, severity,
    whether it is disabled, and its etag; the list shows none of its filter."""
    from google.protobuf import json_format

    with _client(ctx) as client:
        rule = _read_rule(client, rule_id)
    shown = json_format.MessageToDict(rule)
    shown.setdefault("disabled", False)  # left out as proto3 JSON's default, it says it fires
    click.echo(json.dumps(shown, indent=2))


def _hours(ctx: click.Context, value: str) -> tuple[int, int]:
    """--hours START-END, the working hours within a day (END 24: to midnight),
    refused in the option's terms: the server's said `must be after
    start_hour`, its field's name, and has no window across midnight."""
    start, sep, end = value.partition("-")
    option = given_words("--hours", value)
    if not sep or not start.isdigit() or not end.isdigit():
        raise click.BadParameter("not START-END, e.g. 9-18", ctx, param_hint=option)
    if not 0 <= int(start) <= 23:
        raise click.BadParameter("the start must be 0 to 23", ctx, param_hint=option)
    if not int(start) < int(end) <= 24:
        raise click.BadParameter(
            "the end must be after the start, at most 24 (working hours are within a day:"
            " none that run across midnight)",
            ctx,
            param_hint=option,
        )
    return int(start), int(end)


# --exact-actor-ids/--fold-actor-ids, of create and update alike (ADR 0110).
_EXACT_ACTOR_IDS = click.option(
    "--exact-actor-ids/--fold-actor-ids",
    "exact_actor_ids",
    default=None,
    help="threshold or spike by actor: compare actor ids exactly as recorded, or (the default)"
    " as they"
    " read, case folded and full-width forms and invisible characters made plain, so that"
    " Admin, ADMIN and admin are one actor. Exact where the case of an id matters (some base64"
    " ids). Either only with --group-by actor; update keeps it unless given, and drops"
    " exact ids with --group-by ip, credential or none.",
)


def _days(ctx: click.Context, value: str) -> list[int]:
    """--days: none is refused, not sent: the API takes no working days for
    the default, Monday to Friday."""
    try:
        days = [int(day) for day in value.split(",") if day]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not ISO weekdays such as 1,2,3,4,5", ctx, param_hint="--days"
        ) from None
    if not days:
        raise click.BadParameter(
            "at least one working day is required, 1 (Monday) to 7 (Sunday)",
            ctx,
            param_hint="--days",
        )
    return days


# The option of each rule setting the client refuses by name (`carried_by_rule`).
_OPTION_OF_SETTING: Final = {
    "count": "--count",
    "window_seconds": "--window",
    "baseline_windows": "--baseline-windows",
    "min_count": "--min-count",
    "start_hour": "--hours",
    "end_hour": "--hours",
    "working_days": "--days",
}


@contextmanager
def _settings_named(ctx: click.Context) -> Iterator[None]:
    """A rule setting the client refuses (one its field cannot carry: a
    negative count, a window past 2**32 - 1) refused as the option that gave
    it: protobuf's bare "Value out of range" ended the command in a traceback."""
    try:
        yield
    except ValueError as error:
        field, said, rest = str(error).partition(": ")
        option = _OPTION_OF_SETTING.get(re.sub(r"\[\d+\]$", "", field))
        if not said or option is None:
            raise
        raise click.BadParameter(rest, ctx, param_hint=option) from None


def _window_as_typed(ctx: click.Context) -> None:
    """A window the server refuses is named as typed (`--window 8d`), not by
    the seconds it was sent as."""
    if (value := typed(ctx, "window_seconds")) is not None:
        given_as(ctx, {"window_seconds": given_words("--window", value)})


_WINDOW_HELP = (
    "threshold, spike, absence: a duration, e.g. 10m, 1h, 1d (a number alone is seconds: 300);"
    " at most 7d for a threshold, 1m to 1d for a spike, 1m to 7d of silence for an absence."
)

# The options of create that set a setting of one kind of rule (build_alert_rule
# refuses another kind's; --hours and --days have defaults of their own).
_KIND_SETTINGS: Final = (
    ("threshold_count", "--count", "threshold"),
    ("window_seconds", "--window", "threshold, spike or absence"),
    ("group_by", "--group-by", "threshold or spike"),
    ("baseline_windows", "--baseline-windows", "spike"),
    ("factor", "--factor", "spike"),
    ("min_count", "--min-count", "spike"),
    ("time_zone", "--time-zone", "off_hours"),
    ("hours_text", "--hours", "off_hours"),
    ("days_text", "--days", "off_hours"),
)


@alerts.command("create")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(
        ["match", "threshold", "spike", "absence", "new_ip", "new_country", "off_hours"]
    ),
    required=True,
)
@click.option(
    "--count", "threshold_count", type=int, default=0, help="threshold: events that fire."
)
@click.option("--window", "window_seconds", type=Seconds(), default=0, help=_WINDOW_HELP)
@click.option(
    "--group-by",
    type=click.Choice(["actor", "ip", "credential"]),
    help="threshold, spike: count per actor, IP address or credential (an API key's kind and"
    " id: one leaked key's burst fires, another key's ordinary use does not); a spike compares"
    " each group with its own average.",
)
@_EXACT_ACTOR_IDS
@click.option(
    "--baseline-windows",
    type=int,
    default=0,
    help="spike: the windows before the current one whose average is the usual number.",
)
@click.option(
    "--factor", type=float, default=0.0, help="spike: how many times the average fires (e.g. 5)."
)
@click.option(
    "--min-count",
    type=int,
    default=0,
    help="spike: the fewest events that fire, whatever the average.",
)
@click.option("--time-zone", default="", help="off_hours: IANA zone, e.g. Europe/Paris.")
@click.option(
    "--hours", "hours_text", default="9-18", show_default=True, help="off_hours: START-END."
)
@click.option("--days", "days_text", default="1,2,3,4,5", show_default=True,
              help="off_hours: ISO working weekdays.")  # fmt: skip
@click.option(
    "--alert-severity",
    "alert_severity",
    type=click.Choice(SEVERITIES),
    default="warning",
    show_default=True,
    help="Of the security.alert events (--severity filters the events watched).",
)
@click.option(
    "--sink",
    "sink_ids",
    multiple=True,
    help="A sink the alerts go to, by its id or its name (where no other sink has it); repeatable.",
)
@_tail_filter_options
@click.pass_context
def create(
    ctx: click.Context,
    /,
    name: str,
    kind: str,
    threshold_count: int,
    window_seconds: int,
    group_by: str | None,
    exact_actor_ids: bool | None,
    baseline_windows: int,
    factor: float,
    min_count: int,
    time_zone: str,
    hours_text: str,
    days_text: str,
    alert_severity: str,
    sink_ids: tuple[str, ...],
    **criteria: Any,
) -> None:
    """Create an alert rule on the matching events; prints its id."""
    from sealtrail._convert import AlertKind, build_alert_rule

    if exact_actor_ids is not None and kind not in ("threshold", "spike"):
        raise click.BadParameter("only with --kind threshold or spike, --group-by actor", ctx,
                                 param_hint="--exact-actor-ids/--fold-actor-ids")  # fmt: skip
    if exact_actor_ids is not None and group_by != "actor":
        # Folded or exact, ids are compared only to group by actor: either
        # flag with another grouping did nothing.
        raise click.BadParameter(
            f"only with {_a(kind)} grouped by actor (--group-by actor), not with"
            + (f" --group-by {group_by}" if group_by else " no --group-by"),
            ctx,
            param_hint="--exact-actor-ids" if exact_actor_ids else "--fold-actor-ids",
        )
    for parameter, option, applies_to in _KIND_SETTINGS:
        given = ctx.get_parameter_source(parameter) is not ParameterSource.DEFAULT
        if given and kind not in kinds_named(applies_to):
            kinds = " or ".join(f"--kind {each}" for each in kinds_named(applies_to))
            raise click.BadParameter(f"only with {kinds}", ctx, param_hint=option)
    start, end = _hours(ctx, hours_text) if kind == "off_hours" else (0, 0)
    with _settings_named(ctx):
        rule = build_alert_rule(
            name,
            cast(AlertKind, kind),
            filter=_filter(criteria),
            count=threshold_count,
            window_seconds=window_seconds,
            group_by=cast(Any, group_by or ""),
            exact_actor_ids=bool(exact_actor_ids),
            baseline_windows=baseline_windows,
            factor=factor,
            min_count=min_count,
            time_zone=time_zone,
            start_hour=start,
            end_hour=end,
            working_days=_days(ctx, days_text) if kind == "off_hours" else [],
            severity=alert_severity,
            sink_ids=sink_ids,
        )
    _window_as_typed(ctx)
    with _client(ctx) as client:
        if sink_ids:
            del rule.sink_ids[:]
            rule.sink_ids.extend(sink_ids_of(client, sink_ids, param_hint="--sink"))
        created = client.create_alert_rule(rule).rule
    click.echo(terminal_safe(created.id))
    _warn(created)


# The condition settings update may change: their option, and the kind of
# rule they apply to (the filter: any kind). In the options' order.
_CONDITION_SETTINGS: Final = {
    "count": ("--count", "threshold"),
    "window_seconds": ("--window", "threshold, spike or absence"),
    "group_by": ("--group-by", "threshold or spike"),
    "exact_actor_ids": ("--exact-actor-ids", "threshold or spike"),
    "baseline_windows": ("--baseline-windows", "spike"),
    "factor": ("--factor", "spike"),
    "min_count": ("--min-count", "spike"),
    "time_zone": ("--time-zone", "off_hours"),
    "hours": ("--hours", "off_hours"),
    "working_days": ("--days", "off_hours"),
}


def _a(kind: str) -> str:
    """`an off_hours`, `a threshold`."""
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


@alerts.command("update")
@click.argument("rule_id")
@click.option("--name", help="A new name.")
@click.option("--count", "threshold_count", type=int, help="threshold: events that fire.")
@click.option("--window", "window_seconds", type=Seconds(), help=_WINDOW_HELP)
@click.option(
    "--group-by",
    type=click.Choice(["none", "actor", "ip", "credential"]),
    help="threshold, spike: per actor, IP address or credential; none: all together.",
)
@_EXACT_ACTOR_IDS
@click.option("--baseline-windows", type=int, help="spike: windows the average is over.")
@click.option("--factor", type=float, help="spike: times the average that fire.")
@click.option("--min-count", type=int, help="spike: the fewest events that fire.")
@click.option("--time-zone", help="off_hours: IANA zone, e.g. Europe/Paris.")
@click.option("--hours", "hours_text", help="off_hours: START-END.")
@click.option("--days", "days_text", help="off_hours: ISO working weekdays.")
@click.option(
    "--alert-severity",
    "alert_severity",
    type=click.Choice(SEVERITIES),
    help="Of the security.alert events (--severity filters the events watched).",
)
@click.option(
    "--sink",
    "sink_ids",
    multiple=True,
    help="The sinks the alerts go to (all of them), each by its id or its name (where no"
    " other sink has it).",
)
@click.option(
    "--etag",
    default="",
    help="Change the rule only if it is still as `sealtrail alerts show` showed it with this"
    " etag; if it changed since, nothing is changed and the command fails (ABORTED).",
)
@_tail_filter_options
@click.pass_context
def update(
    ctx: click.Context,
    /,
    rule_id: str,
    name: str | None,
    threshold_count: int | None,
    window_seconds: int | None,
    group_by: str | None,
    exact_actor_ids: bool | None,
    baseline_windows: int | None,
    factor: float | None,
    min_count: int | None,
    time_zone: str | None,
    hours_text: str | None,
    days_text: str | None,
    alert_severity: str | None,
    sink_ids: tuple[str, ...],
    etag: str,
    **criteria: Any,
) -> None:
    """Change an alert rule in place, keeping its id and count of alerts: only
    what is given changes. Filter options (--action, --actor, --category,
    --severity, --outcome, --search, ...) replace the whole filter: give every
    criterion it is to keep (`sealtrail alerts show RULE_ID` prints the
    current one). --sink replaces the rule's sinks likewise. Condition
    settings change those of the current condition, which applies from the
    next event."""
    from sealtrail._convert import carried_by_rule, enum_value
    from sealtrail.v1 import alerting_pb2, event_pb2

    rule = alerting_pb2.AlertRule(id=rule_id, etag=etag)
    fields = []
    if name is not None:
        rule.name = name
        fields.append("name")
    if alert_severity is not None:
        rule.severity = enum_value(event_pb2.Severity, alert_severity, field="alert severity")
        fields.append("severity")
    if sink_ids:
        fields.append("sink_ids")  # their ids set below: a name is read with ListSinks
    settings: dict[str, Any] = {
        key: value
        for key, value in {
            "count": threshold_count,
            "window_seconds": window_seconds,
            "group_by": group_by,
            "exact_actor_ids": exact_actor_ids,
            "baseline_windows": baseline_windows,
            "factor": factor,
            "min_count": min_count,
            "time_zone": time_zone,
            "hours": None if hours_text is None else _hours(ctx, hours_text),
            "working_days": None if days_text is None else _days(ctx, days_text),
        }.items()
        if value is not None
    }
    _window_as_typed(ctx)
    with _client(ctx) as client:
        rule.sink_ids.extend(sink_ids_of(client, sink_ids, param_hint="--sink"))
        if settings or filter_given(criteria):
            current = _read_rule(client, rule_id)
            kind = current.WhichOneof("condition")
            assert kind is not None  # every rule has one
            for setting in settings:  # named as typed, as create names them
                option, applies_to = _CONDITION_SETTINGS[setting]
                if kind not in kinds_named(applies_to):
                    if setting == "exact_actor_ids" and not settings[setting]:
                        option = "--fold-actor-ids"
                    raise click.BadParameter(
                        f"only with {_a(applies_to)} rule ({terminal_safe(rule_id)} is {_a(kind)}"
                        " rule)",
                        ctx,
                        param_hint=option,
                    )
            # As for sinks: changed only if it is still the rule just read (or
            # the one the given etag was read with): a change made meanwhile
            # is not overwritten with what this read held.
            with _settings_named(ctx):
                carried_by_rule(
                    kind,
                    count=settings.get("count", 0),
                    window_seconds=settings.get("window_seconds", 0),
                    days=settings.get("working_days", ()),
                    baseline_windows=settings.get("baseline_windows", 0),
                    min_count=settings.get("min_count", 0),
                )
            rule.etag = etag or current.etag
            condition = getattr(rule, kind)
            condition.CopyFrom(getattr(current, kind))
            _apply(condition, settings, _filter(criteria) if filter_given(criteria) else None)
            if kind in ("threshold", "spike"):
                _actor_ids_apply(ctx, kind, condition, settings)
            fields.append(kind)
        if not fields:
            raise click.UsageError(
                "nothing to change: give a name, severity, sink or condition", ctx
            )
        read_with = "sealtrail alerts show" if etag else None
        with unchanged_since_read(rule_id, read_with=read_with):
            updated = client.update_alert_rule(rule, fields=fields).rule
    click.echo(f"{rule_id} updated")
    _warn(updated)


def _actor_ids_apply(
    ctx: click.Context,
    kind: str,
    condition: alerting_pb2.ThresholdCondition | alerting_pb2.SpikeCondition,
    settings: dict[str, Any],
) -> None:
    """Exact actor ids apply only to a threshold or spike (`kind`) grouped by
    actor (the API refuses them otherwise), and folded ones likewise (with
    another grouping no ids are compared): either asked for with another
    grouping, refused;
    exact ids kept from the rule as read when the grouping changes to
    another, dropped."""
    from sealtrail._convert import enum_label
    from sealtrail.v1 import alerting_pb2

    grouped_by_actor = condition.group_by == alerting_pb2.ALERT_GROUP_BY_ACTOR
    given = settings.get("exact_actor_ids")
    if given is not None and not grouped_by_actor:
        by = enum_label(alerting_pb2.AlertGroupBy, condition.group_by) or "none"
        grouping = (
            f"not with --group-by {by}"
            if "group_by" in settings
            else f"the rule is grouped by {by}"
            if by != "none"
            else "the rule is not grouped"
        )
        raise click.BadParameter(
            f"only with {_a(kind)} grouped by actor (--group-by actor); {grouping}",
            ctx,
            param_hint="--exact-actor-ids" if given else "--fold-actor-ids",
        )
    if grouped_by_actor or not condition.exact_actor_ids:
        return
    condition.exact_actor_ids = False
    click.echo("exact actor ids dropped: they apply only to a rule grouped by actor", err=True)


def _apply(
    condition: Any, settings: dict[str, Any], new_filter: event_pb2.EventFilter | None
) -> None:
    """Sets the given settings (and filter) on a condition message."""
    from sealtrail._convert import enum_value
    from sealtrail.v1 import alerting_pb2

    if new_filter is not None:
        condition.filter.CopyFrom(new_filter)
    for key, value in settings.items():
        if key == "group_by":
            condition.group_by = (
                alerting_pb2.ALERT_GROUP_BY_UNSPECIFIED
                if value == "none"
                else enum_value(alerting_pb2.AlertGroupBy, value, field="group by")
            )
        elif key == "hours":
            condition.start_hour, condition.end_hour = value
        elif key == "working_days":
            condition.ClearField("working_days")
            condition.working_days.extend(value)
        else:
            setattr(condition, key, value)


@alerts.command("delete")
@click.argument("rule_id")
@click.option(
    "--etag",
    default="",
    help="Delete the rule only if it is still as `sealtrail alerts show` showed it with this"
    " etag; if it changed since, nothing is deleted and the command fails (ABORTED).",
)
@click.pass_context
def delete(ctx: click.Context, rule_id: str, etag: str) -> None:
    """Delete an alert rule."""
    with _client(ctx) as client, unchanged_since_read(rule_id, read_with="sealtrail alerts show"):
        client.delete_alert_rule(rule_id, etag=etag)
    click.echo(f"{rule_id} deleted")


def _set_disabled(ctx: click.Context, rule_id: str, disabled: bool) -> None:
    from sealtrail.v1 import alerting_pb2

    with _client(ctx) as client:
        rule = alerting_pb2.AlertRule(id=rule_id, disabled=disabled)
        client.update_alert_rule(rule, fields=["disabled"])
    click.echo(f"{rule_id} {'disabled' if disabled else 'enabled'}")


@alerts.command("disable")
@click.argument("rule_id")
@click.pass_context
def disable(ctx: click.Context, rule_id: str) -> None:
    """Stop an alert rule from firing, keeping it (and what it learned)."""
    _set_disabled(ctx, rule_id, True)


@alerts.command("enable")
@click.argument("rule_id")
@click.pass_context
def enable(ctx: click.Context, rule_id: str) -> None:
    """Let a disabled alert rule fire again, from the next event."""
    _set_disabled(ctx, rule_id, False)


# On the main command as this module loads, whether _cli imported it (as it
# imports each) or it was imported first (tests/unit/test_cli_modules_import_alone.py).
main.add_command(alerts)
