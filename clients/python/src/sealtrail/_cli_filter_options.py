"""The options an EventFilter is given by on the command line (`--action`,
`--actor`, `--role`, `--since`, ...) and the times they read (`parse_time`):
shared by the client's commands (query, export, tail, sinks, stats, report)
and `sealtrail-server sink create|update`. It imports none of the _cli_*
command modules (nor _cli), so that the server's `sink --help` shows these
options without importing the client's whole command line (helper-539);
`_cli._filter` makes the EventFilter of what they were given."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

import click

from sealtrail._choices import ACTOR_TYPES, CATEGORIES, OUTCOMES, SEVERITIES
from sealtrail._durations import not_a_span, span_parts
from sealtrail._typed import remember_typed

# An RFC 3339 time's fraction of a second (or ISO 8601's, after a decimal
# comma), whose digits past the sixth a datetime drops.
_RFC3339_FRACTION = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}[.,]([0-9]+)"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# Digits past a microsecond's, in any form fromisoformat reads (and cuts them in).
_PAST_MICROSECOND = re.compile(r"[.,][0-9]{7,}")
# A UTC offset to a fraction of a second (ISO 8601's), which Python 3.11's
# fromisoformat reads as none when it has no whole second, minute or hour.
_FRACTIONAL_OFFSET = re.compile(r"[+-][0-9]{2}:?[0-9]{2}:?[0-9]{2}[.,][0-9]+")


def parse_time(value: str, *, now: datetime | None = None) -> datetime:
    """Parses an RFC 3339 timestamp, a date (UTC midnight), a duration ago as
    every duration option reads one (`45s`, `15m`, `24h`, `7d`, `2w`, `1y`:
    `_durations.span_parts`), or `now` into a timezone-aware datetime."""
    from sealtrail._convert import NanosecondTime

    if value == "now":
        return now or datetime.now(UTC)
    if parts := span_parts(value):
        count, unit = parts
        try:
            return (now or datetime.now(UTC)) - count * unit
        except OverflowError:
            raise ValueError(f"{value!r} reaches back before the year 1") from None
    try:
        return datetime.combine(date.fromisoformat(value), time(), UTC)
    except ValueError:
        pass
    try:
        # RFC 3339's z, which fromisoformat reads only as Z (its t it reads).
        parsed = datetime.fromisoformat(value[:-1] + "Z" if value.endswith("z") else value)
    except ValueError:
        raise ValueError(
            not_a_span(value, "an RFC 3339 time, a YYYY-MM-DD date, a duration like 24h or now")
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset; add Z or e.g. +02:00")
    if _FRACTIONAL_OFFSET.search(value):  # +00:00:00.5 was +00:00, without a word
        raise ValueError(f"{value!r} has a UTC offset to a fraction of a second: give +HH:MM")
    try:
        parsed.astimezone(UTC)  # what a Timestamp is made of
    except OverflowError:
        raise ValueError(f"{value!r} lies before the year 1 or after 9999 in UTC") from None
    nanosecond = _nanosecond(value)
    if not nanosecond:
        return parsed
    return NanosecondTime.of(parsed, nanosecond)


def _nanosecond(value: str) -> int:
    """The nanoseconds past the microsecond of the RFC 3339 time `value` (0 in
    other forms). Cut to the microsecond, a bound between two took the earlier,
    where the API takes the later (helper-204). Past the ninth digit, which no
    Timestamp holds, a ValueError rather than another cut; so too for digits
    past the microsecond in another ISO 8601 form (+0200, basic, week date),
    which fromisoformat reads and cut without a word (helper-215)."""
    match = _RFC3339_FRACTION.fullmatch(value)
    if match is None:
        if _PAST_MICROSECOND.search(value):
            raise ValueError(
                f"{value!r} has digits past the microsecond: give such a time in RFC 3339's"
                " form, e.g. 2026-01-01T00:00:00.123456789Z or +02:00"
            )
        return 0
    digits = match.group(1)
    if len(digits) > 9:
        raise ValueError(f"{value!r} has more than 9 digits after the second (a nanosecond's)")
    return int(digits[6:9].ljust(3, "0"))


class _Detail(click.ParamType[tuple[str, str]]):
    """A `--detail KEY=VALUE`: the key up to the first `=`, the value all
    after it (`note=a=b` is key `note`, value `a=b`), as the filter's
    `details_equals` takes them."""

    name = "KEY=VALUE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, equals, text = str(value).partition("=")
        if not equals or not key:
            self.fail(f"{value!r} is no KEY=VALUE: environment=prod", param, ctx)
        return key, text


class _Time(click.ParamType[datetime]):
    """A time as `parse_time` reads it. `ahead`: a time to come (an expiry),
    which a duration or `now`, read as a moment past, cannot name: `--expires-at
    90d` was 90 days ago, and the server's refusal said only "in the future"."""

    name = "TIME"

    def __init__(self, *, ahead: bool = False) -> None:
        self._ahead = ahead

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        remember_typed(ctx, param, value)
        if self._ahead and (value == "now" or span_parts(value)):
            self.fail(
                f"{value!r} is no time ahead (RFC 3339 or YYYY-MM-DD); for a time from now"
                " use --expires-in (90d)",
                param,
                ctx,
            )
        try:
            return parse_time(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def filter_given(criteria: dict[str, Any]) -> bool:
    """Whether any filter option was given: a flag given as false is one
    (`--no-http-route`), which `any(criteria.values())` took for none."""
    return any(value not in (None, ()) for value in criteria.values())


def _choice(names: tuple[str, ...]) -> click.Choice[str]:
    """A proto enum's shorthand names (_choices' fixed copies), in any case."""
    return click.Choice(names, case_sensitive=False)


def _filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The EventFilter options shared by query, bundle, export and tail."""
    return _add_filter_options(command, time_range=True)


def _tail_filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The EventFilter options of tail: its --since is where the tail starts."""
    return _add_filter_options(command, time_range=False)


def _add_filter_options(command: Callable[..., Any], *, time_range: bool) -> Callable[..., Any]:
    options = [
        click.option(
            "--action",
            "actions",
            multiple=True,
            help="Exact action, prefix.* or *.verb (repeatable).",
        ),
        click.option(
            "--exclude-action",
            "exclude_actions",
            multiple=True,
            help="Action left out, same forms (repeatable): audit_log.* hides the log's reads.",
        ),
        click.option("--actor", help="Actor id (exact) or email (any case)."),
        click.option(
            "--actor-prefix",
            metavar="START",
            help="Start of the actor id (exact case) or email (any case): ali finds alice.",
        ),
        click.option(
            "--actor-domain",
            "actor_email_domain",
            metavar="DOMAIN",
            help="Actor email domain, any case: example.com; *.example.com with subdomains.",
        ),
        click.option(
            "--resource-type",
            "resource_types",
            multiple=True,
            metavar="TYPE",
            help="Resource type (repeatable: any of them). One is sent as resource_type,"
            " which older servers know; several as resource_types.",
        ),
        click.option("--resource-id"),
        click.option("--category", "categories", multiple=True, type=_choice(CATEGORIES)),
        click.option("--severity", "min_severity", type=_choice(SEVERITIES), help="Minimum."),
        click.option(
            "--exact-severity",
            "severities",
            multiple=True,
            type=_choice(SEVERITIES),
            help="Exact level (repeatable): warning alone, or info and critical.",
        ),
        click.option("--outcome", "outcomes", multiple=True, type=_choice(OUTCOMES)),
        click.option(
            "--actor-type",
            "actor_types",
            multiple=True,
            type=_choice(ACTOR_TYPES),
            help="Actor type (repeatable): api_key for what keys, not people, did.",
        ),
        click.option("--request-id"),
        click.option("--trace-id"),
        click.option("--search", "text", help="Full-text search over description and details."),
        click.option(
            "--recorded-by",
            metavar="TOKEN_ID",
            help="Id of the API token that recorded the events (see `tokens list`).",
        ),
        click.option(
            "--ip",
            metavar="ADDRESS|CIDR",
            help="Client IP address, or a network: 203.0.113.0/24, 2001:db8::/32.",
        ),
        click.option(
            "--country",
            "countries",
            multiple=True,
            metavar="CODE",
            help="Client country (context.country): ISO 3166-1 alpha-2 code, e.g. KP"
            " (repeatable: any of them). One is sent as country, which older servers know;"
            " several as countries.",
        ),
        click.option(
            "--user-agent",
            metavar="TEXT",
            help="Text the client's user agent contains, A-Z in any case: curl, Terraform.",
        ),
        click.option(
            "--credential-id",
            metavar="ID",
            help="Id of the credential the actor used (actor.credential.id), exactly.",
        ),
        click.option(
            "--credential-kind",
            metavar="KIND",
            help="Kind of the credential the actor used (actor.credential.kind), exactly:"
            " api_key, session. With --credential-id, that one credential.",
        ),
        click.option(
            "--http-status",
            "http_status_classes",
            multiple=True,
            metavar="CLASS|CODE",
            help="HTTP status the request was answered with (repeatable: any of them):"
            " a class, 5xx, or a code, 404.",
        ),
        click.option(
            "--http-route",
            "http_routes",
            multiple=True,
            metavar="ROUTE",
            help="HTTP route the request was served by, exactly as recorded (repeatable:"
            " any of them): /v1/templates/{id}.",
        ),
        click.option(
            "--has-http-route/--no-http-route",
            "has_http_route",
            default=None,
            help="Events of API requests alone (those with an HTTP route), or those of none.",
        ),
        click.option(
            "--min-duration-ms",
            type=float,
            metavar="MS",
            help="Requests that took at least this many milliseconds (context.duration_ms):"
            " 1000 for a second or longer.",
        ),
        click.option(
            "--changed-field",
            "changed_fields",
            multiple=True,
            metavar="FIELD",
            help="Name of a field the event changed (changes[].field), exactly as recorded"
            " (repeatable: any of them): rate_limit, limits.rpm.",
        ),
        click.option(
            "--detail",
            "details_equals",
            multiple=True,
            type=_Detail(),
            help="KEY=VALUE: a top-level key of details holding that value, a string exactly,"
            " a number or boolean as JSON writes it: environment=prod, attempt=3, dry_run=true"
            " (repeatable: all of them).",
        ),
        click.option(
            "--role",
            "actor_roles",
            multiple=True,
            metavar="ROLE",
            help="A role the actor held when acting (actor.roles), exactly as recorded"
            " (repeatable: any of them): admin.",
        ),
    ]
    if time_range:
        options += [
            click.option(
                "--since",
                type=_Time(),
                help="RFC 3339 time, date or duration ago (45s, 15m, 24h, 7d, 2w, 1y).",
            ),
            click.option(
                "--until", type=_Time(), help="Exclusive upper bound, same forms as --since."
            ),
        ]
    for option in reversed(options):
        command = option(command)
    return command
