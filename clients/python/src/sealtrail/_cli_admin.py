"""`sealtrail tokens`, `settings`, `hash-secret` and `get`: a tenant's admin
work from a shell, with no access to the server's database (which
`sealtrail-server token` needs). Registered on the main command by _cli.py,
whose helpers it shares."""

from __future__ import annotations

import sys
from typing import cast, get_args

import click

from sealtrail._cli import (
    PlainTable,
    _client,
    event_json,
    print_table,
    table_time,
    unchanged_since_read,
)
from sealtrail._convert import RedactionMode, TokenRole, enum_label
from sealtrail.v1 import access_pb2, settings_pb2


@click.group(invoke_without_command=True)
@click.pass_context
def tokens(ctx: click.Context) -> None:
    """Admin: list (no subcommand), create and revoke your tenant's API tokens."""
    if ctx.invoked_subcommand is not None:
        return
    with _client(ctx) as client:
        found = client.list_tokens()
    table = PlainTable("id", "role", "name", "created (UTC)", "revoked (UTC)")
    for token in found:
        table.add_row(
            token.token_id,
            enum_label(access_pb2.Role, token.role),
            token.name,
            table_time(token.create_time),
            table_time(token.revoke_time),
        )
    print_table(table)


@tokens.command("create")
@click.option("--role", required=True, type=click.Choice(get_args(TokenRole)))
@click.option("--name", default="", help="What it is for, e.g. billing-service.")
@click.pass_context
def tokens_create(ctx: click.Context, role: str, name: str) -> None:
    """Create a token; its secret is printed alone on stdout, this once
    (TOKEN=$(sealtrail tokens create --role recorder)). Recorded in the log."""
    with _client(ctx) as client:
        created = client.create_token(cast(TokenRole, role), name=name)
    click.echo(f"token {created.token.token_id} with role {role}:", err=True)
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
    click.echo(f"token {token.token_id} revoked at {table_time(token.revoke_time)} UTC")


@click.group(invoke_without_command=True)
@click.pass_context
def settings(ctx: click.Context) -> None:
    """Admin: show (no subcommand) or change your tenant's settings."""
    if ctx.invoked_subcommand is not None:
        return
    with _client(ctx) as client:
        current = client.get_tenant_settings()
    mode = enum_label(settings_pb2.RedactionMode, current.redaction_mode)
    click.echo(f"redaction mode: {mode}")
    click.echo(f"updated: {table_time(current.update_time) or 'never'}")
    click.echo(f"etag: {current.etag}")


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
