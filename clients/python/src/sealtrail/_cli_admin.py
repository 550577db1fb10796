"""`sealtrail tokens`, `settings`, `hash-secret` and `get`: a tenant's admin
work from a shell, with no access to the server's database (which
`sealtrail-server token` needs). Registers its commands on the main command of
_cli.py, whose helpers it shares."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast, get_args

import click

from sealtrail._choices import IpRecording, RedactionMode, TokenRole
from sealtrail._cli import (
    _client,
    event_json,
    given_as,
    main,
    table_time,
    terminal_safe,
    unchanged_since_read,
)
from sealtrail._cli_filter_options import _Time
from sealtrail._cli_spans import Span
from sealtrail._typed import given_words, typed

# What the commands work with (gRPC, protobuf, the client) each imports as it
# runs: --help imports none of it (tests/unit/test_cli_startup_imports.py).
if TYPE_CHECKING:
    from sealtrail.v1 import access_pb2


def _live(token: access_pb2.ApiToken, now: datetime) -> bool:
    expired = token.HasField("expire_time") and token.expire_time.ToDatetime(UTC) <= now
    return not token.HasField("revoke_time") and not expired


def _unused_since(token: access_pb2.ApiToken) -> datetime:
    """Its last use, or (never used) its creation."""
    stamp = token.last_use_time if token.HasField("last_use_time") else token.create_time
    return stamp.ToDatetime(UTC)


def stale_tokens(
    found: Iterable[access_pb2.ApiToken], *, unused_for: timedelta, now: datetime
) -> list[access_pb2.ApiToken]:
    """The live tokens (neither revoked nor expired) that no call used for
    `unused_for`: neither since their last use nor, never used, since their
    creation. Live ones only: a revoked or expired token is no risk left."""
    return [t for t in found if _live(t, now) and _unused_since(t) <= now - unused_for]


def _list_tokens(ctx: click.Context, unused_for: timedelta | None) -> None:
    from sealtrail._convert import enum_label
    from sealtrail._tables import PlainTable, print_table
    from sealtrail.v1 import access_pb2

    with _client(ctx) as client:
        found = client.list_tokens()
    if unused_for is not None:
        found = stale_tokens(found, unused_for=unused_for, now=datetime.now(UTC))
    table = PlainTable(
        "id", "role", "name", "created (UTC)", "expires (UTC)", "last used (UTC)", "revoked (UTC)"
    )
    for token in found:
        table.add_row(
            token.token_id,
            enum_label(access_pb2.Role, token.role),
            token.name,
            table_time(token.create_time),
            table_time(token.expire_time) or "never",
            table_time(token.last_use_time) or "never",
            table_time(token.revoke_time),
        )
    print_table(table)


_UNUSED_FOR_HELP = (
    "Only live tokens no call used for this long (e.g. 30d): stale ones to revoke."
    " Each server process writes a token's last use at most once per"
    " SEALTRAIL_TOKEN_LAST_USE_INTERVAL, the server's setting (60 s unless set, up to a"
    " day; 0: every 10 s), so last use is that coarse: a shorter span may list tokens"
    " still in use."
)


@click.group(invoke_without_command=True)
@click.option("--unused-for", type=Span(), help=_UNUSED_FOR_HELP)
@click.pass_context
def tokens(ctx: click.Context, unused_for: timedelta | None) -> None:
    """Admin: list (no subcommand, or `list`), create and revoke your tenant's
    API tokens."""
    if ctx.invoked_subcommand is not None:
        return
    _list_tokens(ctx, unused_for)


@tokens.command("list")
@click.option("--unused-for", type=Span(), help=_UNUSED_FOR_HELP)
@click.pass_context
def tokens_list(ctx: click.Context, unused_for: timedelta | None) -> None:
    """List the tokens with their expiry and last use (never their secrets).
    Recorded in the log."""
    _list_tokens(ctx, unused_for)


@tokens.command("create")
@click.option("--role", required=True, type=click.Choice(get_args(TokenRole)))
@click.option("--name", default="", help="What it is for, e.g. billing-service.")
@click.option(
    "--expires-in", type=Span(), help="Stop working this long from now (90d, 12h; at most 2y)."
)
@click.option(
    "--expires-at",
    type=_Time(ahead=True),
    help="Stop working at this time (RFC 3339 or YYYY-MM-DD).",
)
@click.pass_context
def tokens_create(
    ctx: click.Context,
    role: str,
    name: str,
    expires_in: timedelta | None,
    expires_at: datetime | None,
) -> None:
    """Create a token; its secret is printed alone on stdout, this once
    (TOKEN=$(sealtrail tokens create --role recorder)). Without --expires-in
    or --expires-at it never expires. Recorded in the log."""
    if expires_in is not None and expires_at is not None:
        raise click.UsageError("give --expires-in or --expires-at, not both")
    if expires_in is not None:
        try:
            expires_at = datetime.now(UTC) + expires_in
        except OverflowError:
            raise click.BadParameter("lies past the year 9999", param_hint="--expires-in") from None
    # A refused expiry named as typed, not as the API's `expire_time` (helper-334).
    for option, param in (("--expires-in", "expires_in"), ("--expires-at", "expires_at")):
        if (value := typed(ctx, param)) is not None:
            given_as(ctx, {"expire_time": given_words(option, value)})
    with _client(ctx) as client:
        created = client.create_token(cast(TokenRole, role), name=name, expire_time=expires_at)
    until = (
        f", expiring at {table_time(created.token.expire_time)} UTC"
        if created.token.HasField("expire_time")
        else ""
    )
    click.echo(f"token {terminal_safe(created.token.token_id)} with role {role}{until}:", err=True)
    click.echo(created.secret)


@tokens.command("revoke")
@click.argument("token_id")
@click.pass_context
def tokens_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke a token: calls with it fail at once on the server that revoked
    it, and within its token cache interval on the others. Recorded in the log."""
    with _client(ctx) as client:
        revoked = client.revoke_token(token_id)
    token = revoked.token
    click.echo(
        f"token {terminal_safe(token.token_id)} revoked at {table_time(token.revoke_time)} UTC"
    )


@click.group(invoke_without_command=True)
@click.option(
    "--strict-actions",
    type=click.Choice(["on", "off"]),
    help="On: Record refuses an event whose action the action catalogue does not describe,"
    " or whose category is not the one it declares (`sealtrail actions describe`).",
)
@click.option(
    "--personal-data-fields",
    metavar="NAME,...",
    help="Field names whose values your events must not keep (`ssn,date_of_birth,phone`;"
    " '' clears them), compared with keys as the server's SEALTRAIL_REDACT_FIELDS are:"
    " their values are stored as [REDACTED:personal_data] (an HMAC in HMAC mode)."
    " Events already stored are not rewritten (they are hashed).",
)
@click.option(
    "--ip-recording",
    type=click.Choice(get_args(IpRecording)),
    help="How much of a client's address (context.ip) new events keep: full, truncated (an"
    " IPv4 address's /24, an IPv6 address's /48) or none; the country is located from the"
    " whole address first. Events already stored are not rewritten (they are hashed).",
)
@click.option(
    "--etag",
    default="",
    help="With a change: change only the settings `sealtrail settings` showed with"
    " this etag (if they changed since, nothing is changed: ABORTED).",
)
@click.pass_context
def settings(
    ctx: click.Context,
    strict_actions: str | None,
    personal_data_fields: str | None,
    ip_recording: str | None,
    etag: str,
) -> None:
    """Admin: show (no subcommand) or change your tenant's settings
    (`--strict-actions on|off`, `--personal-data-fields NAME,...`,
    `--ip-recording full|truncated|none`, any of them in one update, all
    made or none; recorded in the log, applies within
    SEALTRAIL_SETTINGS_CACHE_SECONDS, 10 s, on every server process; never
    to events already stored)."""
    given = (strict_actions, personal_data_fields, ip_recording)
    changes = [change for change in given if change is not None]
    if ctx.invoked_subcommand is not None:
        if changes or etag:
            raise click.UsageError(
                "--strict-actions, --personal-data-fields, --ip-recording and --etag go"
                " without a subcommand",
                ctx,
            )
        return
    from sealtrail._convert import enum_label
    from sealtrail.v1 import settings_pb2

    if etag and not changes:
        raise click.UsageError("--etag goes with a change (--strict-actions, ...)", ctx)
    with _client(ctx) as client:
        if changes:
            names = None
            if personal_data_fields is not None:
                names = [n.strip() for n in personal_data_fields.split(",") if n.strip()]
                _name_each(ctx, names)
            with unchanged_since_read("the settings", read_with="sealtrail settings"):
                answer = client.update_tenant_settings(
                    strict_actions=None if strict_actions is None else strict_actions == "on",
                    personal_data_fields=names,
                    ip_recording=cast(IpRecording | None, ip_recording),
                    etag=etag,
                )
            click.echo(
                "settings updated"
                if answer.event_id
                else "settings already as asked; nothing recorded"
            )
            current = answer.settings
        else:
            current = client.get_tenant_settings()
    mode = enum_label(settings_pb2.RedactionMode, current.redaction_mode)
    click.echo(f"redaction mode: {mode}")
    click.echo(f"strict actions: {'on' if current.strict_actions else 'off'}")
    fields = ", ".join(terminal_safe(name) for name in current.personal_data_fields)
    click.echo(f"personal data fields: {fields or 'none'}")
    recording = enum_label(settings_pb2.IpRecording, current.ip_recording) or "full"
    click.echo(f"ip recording: {recording}")
    click.echo(f"updated: {table_time(current.update_time) or 'never'}")
    click.echo(f"etag: {terminal_safe(current.etag)}")


def _name_each(ctx: click.Context, names: list[str]) -> None:
    """Names each of the --personal-data-fields sent by its index and value,
    as the server's refusal names it (`settings.personal_data_fields[1]`):
    the option alone left the user to find which of the names it was."""
    given_as(
        ctx,
        {
            f"settings.personal_data_fields[{index}]": f"--personal-data-fields[{index}] {name!r}"
            for index, name in enumerate(names)
        },
    )


@settings.command("redaction-mode")
@click.argument("mode", type=click.Choice(get_args(RedactionMode)))
@click.option(
    "--etag",
    default="",
    help="Change only the settings `sealtrail settings` showed with this etag; if they"
    " changed since, nothing is changed and the command fails (ABORTED).",
)
@click.pass_context
def settings_redaction_mode(ctx: click.Context, mode: str, etag: str) -> None:
    """How secrets found in new events are written: `replace` ([REDACTED:<rule>])
    or `hmac` (their HMAC under the tenant's key, which `sealtrail hash-secret`
    computes to search for a secret you hold). Recorded in the log."""
    with (
        _client(ctx) as client,
        unchanged_since_read("the settings", read_with="sealtrail settings"),
    ):
        answer = client.set_redaction_mode(cast(RedactionMode, mode), etag=etag)
    click.echo(
        "settings updated" if answer.event_id else "settings already as asked; nothing recorded"
    )


@click.command("hash-secret")
@click.pass_context
def hash_secret(ctx: click.Context) -> None:
    """Admin: what redaction in `hmac` mode writes for a secret, to search the
    log for it (sealtrail query --search ...). The secret is read from stdin
    (UTF-8, one line ending and a byte-order mark removed: a file saved on
    Windows hashes as on Linux), or asked for without echo: never an
    argument, which shell history and other users' `ps` would show."""
    with _client(ctx) as client:
        value = _secret_from_stdin(ctx)
        click.echo(client.hash_secret(value))


def _secret_from_stdin(ctx: click.Context) -> str:
    if sys.stdin.isatty():
        return str(click.prompt("Secret", hide_input=True, err=True))
    try:
        text = sys.stdin.buffer.read().decode("utf-8-sig")  # a BOM (Notepad) is no part of it
    except UnicodeDecodeError as error:
        raise click.UsageError(f"the secret on stdin is not UTF-8 ({error})", ctx) from None
    value = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
    if not value:
        raise click.UsageError("no secret given on stdin", ctx)
    return value


@click.command("get")
@click.argument("event_id")
@click.pass_context
def get_event(ctx: click.Context, event_id: str) -> None:
    """Print one event of your tenant by id, as one JSON line."""
    with _client(ctx) as client:
        event = client.get_event(event_id)
    click.echo(event_json(event))


# On the main command as this module loads, whether _cli imported it (as it
# imports each) or it was imported first (tests/unit/test_cli_modules_import_alone.py).
main.add_command(tokens)
main.add_command(settings)
main.add_command(hash_secret)
main.add_command(get_event)
