"""The options a sink's destination is given by on the command line (`--url`,
`--secret`, `--generate-secret`, `--token`, `--smtp-host`, ...), credentials
read from a file or stdin (`read_credential`), and the settings they make:
shared by `sealtrail sinks create|update` and `sealtrail-server sink
create|update`. It imports none of the _cli_* command modules (nor _cli), so
that the server's `sink --help` shows these options without importing the
client's whole command line (helper-539)."""

from __future__ import annotations

import base64
import secrets
import sys
from collections.abc import Callable
from typing import Any

import click

# The destination settings the options give, by the API's names (the secrets
# `_destination_settings` adds): what else a command was given is its filter.
_SETTING_NAMES = frozenset(
    {
        *("url", "token", "api_key", "index", "source", "sourcetype", "service", "tags"),
        *("routing_key", "host", "port", "security", "username", "password"),
        *("from_address", "to_addresses"),
    }
)


def read_credential(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A credential option's value, or with `@PATH` the file's first line, or
    with `-` stdin's: a value on the command line is in every user's process
    list and in the shell's history. A byte-order mark (a file Notepad saved)
    is no part of it, as for `hash-secret`."""

    def one(text: str) -> str:
        if text == "-":
            return sys.stdin.readline().removeprefix("\ufeff").strip()
        if text.startswith("@"):
            try:
                with open(text[1:], encoding="utf-8-sig") as source:
                    return source.readline().strip()
            except OSError as error:
                raise click.BadParameter(f"cannot read {text[1:]}: {error.strerror}") from None
        return text

    if value is None:
        return None
    return tuple(one(text) for text in value) if isinstance(value, tuple) else one(value)


_FROM_FILE = " @PATH reads it from a file, - from stdin."


def _destination_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The destination settings, shared by create and update."""
    options = [
        click.option(
            "--url",
            callback=read_credential,
            help="The destination (Datadog: the site's intake, by default US1; PagerDuty: the"
            " Events API, by default https://events.pagerduty.com; chat: the incoming"
            " webhook's URL, itself a credential)." + _FROM_FILE,
        ),
        click.option(
            "--secret",
            "secrets_",
            multiple=True,
            callback=read_credential,
            help="Webhook signing secret whsec_... (twice while rotating)." + _FROM_FILE,
        ),
        click.option(
            "--generate-secret", is_flag=True, help="Webhook: make a secret and print it once."
        ),
        click.option("--token", callback=read_credential, help="Splunk HEC token." + _FROM_FILE),
        click.option(
            "--api-key",
            callback=read_credential,
            help="Datadog API key, or Elasticsearch API key." + _FROM_FILE,
        ),
        click.option(
            "--routing-key",
            callback=read_credential,
            help="PagerDuty: the integration key of an Events API v2 integration." + _FROM_FILE,
        ),
        click.option("--index", help="Splunk or Elasticsearch index."),
        click.option("--source", help="Splunk source, or PagerDuty's payload.source."),
        click.option("--sourcetype", help="Splunk sourcetype."),
        click.option("--service", help="Datadog service."),
        click.option("--tags", help="Datadog ddtags, e.g. env:prod,team:security."),
        click.option("--smtp-host", "host", help="Email: the SMTP server's host name."),
        click.option(
            "--smtp-port",
            "port",
            type=click.IntRange(0, 65535),
            help="Email: the SMTP server's port (default: 587, 465 for implicit_tls).",
        ),
        click.option(
            "--smtp-security",
            "security",
            type=click.Choice(["starttls", "implicit_tls", "none"]),
            help="Email: starttls (the default), implicit_tls, or none (localhost only).",
        ),
        click.option("--smtp-username", "username", help="Email: the SMTP login's username."),
        click.option(
            "--smtp-password",
            "password",
            callback=read_credential,
            help="Email: the SMTP login's password." + _FROM_FILE,
        ),
        click.option(
            "--mail-from", "from_address", help="Email: the sender, e.g. alerts@example.com."
        ),
        click.option(
            "--mail-to",
            "to_addresses",
            multiple=True,
            help="Email: a recipient (1 to 20; on update, the whole list).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _destination_settings(
    options: dict[str, Any], secrets_: tuple[str, ...], generate_secret: bool
) -> tuple[dict[str, Any], str | None]:
    """The destination settings given, a generated webhook secret included,
    and that secret, for `_show_secret` once the server has taken it."""
    settings = {key: value for key, value in options.items() if key in _SETTING_NAMES and value}
    if "to_addresses" in settings:
        settings["to_addresses"] = list(settings["to_addresses"])
    chosen = list(secrets_)
    made = None
    if generate_secret:
        made = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        chosen.append(made)
    if chosen:
        settings["secrets"] = chosen
    return settings, made


def _show_secret(made: str | None) -> None:
    """Prints a generated secret once, to stderr, after the call that set it
    succeeded: shown before, a refused sink left a receiver set up with a
    secret nothing signs with (helper-165)."""
    if made is not None:
        click.echo(f"signing secret (shown once): {made}", err=True)
